"""The Host protocol of a nested host: every call goes to the dom0 over ssh, and a long
command is watched for the machine hanging under it (`hang`): a hung machine does not come
back, so later calls fail at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pexpect.spawnbase import SpawnBase

from xenpvh.check.hosthang import HostHang
from xenpvh.host.base import ByteStream, CommandResult
from xenpvh.host.nested import hang
from xenpvh.host.nested.record import NestedRecord
from xenpvh.host.ssh import SSHHost


class DelegatedToDom0:
    """Mixin of NestedHost: the Host calls, delegated to `ssh` (the ready dom0)."""

    _record: NestedRecord | None
    _ssh: SSHHost | None
    # Set when a command found the machine hung; cleared by a boot.
    _hung: HostHang | None

    @property
    def ssh(self) -> SSHHost:
        raise NotImplementedError

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        input: bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        self._raise_if_hung()
        ssh = self.ssh
        record = self._record
        if record is None or timeout <= hang.PROBE_AFTER:
            return ssh.run(argv, timeout=timeout, input=input, check=check)
        # A long command on a host a guest froze would wait out its timeout: sample the
        # vCPUs meanwhile, and name the hang (xenpvh.host.nested.hang).
        monitor = Path(record.monitor)
        try:
            return hang.watched_call(
                lambda: ssh.run(argv, timeout=timeout, input=input, check=check),
                lambda: hang.sample_vcpus(monitor),
                what=f" while `{' '.join(argv[:2])}` ran",
                on_hang=ssh.close,
            )
        except hang.HostHung as e:
            # A hung machine does not come back: later commands fail at once.
            self._hung = e.finding
            raise

    def _raise_if_hung(self) -> None:
        if self._hung is not None:
            raise hang.HostHung(self._hung, " (found earlier in this run)")

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> bool:
        self._raise_if_hung()
        return self.ssh.put(local, remote, mode=mode)

    def put_bytes(self, data: bytes, remote: str, *, mode: int = 0o644) -> None:
        self.ssh.put_bytes(data, remote, mode=mode)

    def get(self, remote: str, local: Path) -> None:
        self._raise_if_hung()
        self.ssh.get(remote, local)

    def spawn(self, argv: Sequence[str], *, timeout: float = 30.0) -> SpawnBase:
        return self.ssh.spawn(argv, timeout=timeout)

    def open_stream(self, argv: Sequence[str]) -> ByteStream:
        return self.ssh.open_stream(argv)

    def close(self) -> None:
        """Drop the ssh connection (the next call reconnects).  Stopping the machine is
        `down()`'s job: a toolstack closing its Host must not pull the plug on the host."""
        if self._ssh is not None:
            self._ssh.close()


__all__ = ["DelegatedToDom0"]
