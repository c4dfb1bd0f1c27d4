"""One small connection protocol over SQLite (sqlite3) and PostgreSQL (psycopg 3).

SQL is written once with `?` placeholders; the PostgreSQL driver gets `%s`.  Every write
happens inside `transaction()`: all of it or nothing.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from xenpvh.errors import BlockedError, BrokenError
from xenpvh.util.fs import cache_root

log = logging.getLogger(__name__)


def default_db_path() -> Path:
    return cache_root() / "history.sqlite"


class Database(Protocol):
    dialect: str  # "sqlite" | "postgresql"
    where: str  # for messages (a password is never shown)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def close(self) -> None: ...


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE takes the write
            # lock at once, so two plan runs writing at the same time queue, not deadlock).
            self._conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
        except sqlite3.Error as e:
            raise BlockedError(f"history database {path}: {e}") from e
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._depth = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql, tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, tuple(params)).fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")
        finally:
            self._depth = 0

    def close(self) -> None:
        self._conn.close()


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        try:
            # Loaded only for a PostgreSQL history: an SQLite one (the default) needs no driver.
            import psycopg
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise BlockedError("a PostgreSQL history needs psycopg (pip install psycopg)") from e
        self.where = _redact(url)
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=30)
        except psycopg.Error as e:
            raise BrokenError(f"history database {self.where}: {e}") from e
        self._depth = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(sql.replace("?", "%s"), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql.replace("?", "%s"), tuple(params)).fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._depth = 1
        try:
            with self._conn.transaction():
                yield
        finally:
            self._depth = 0

    def close(self) -> None:
        self._conn.close()


def _redact(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db"""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    cred, _, tail = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in cred else ''}@{tail}"


def open_db(target: str | Path | None = None) -> Database:
    """`postgresql://…` / `postgres://…` (psycopg), else an SQLite file (default under the
    cache: no setup needed)."""
    if target is None or str(target) == "":
        return SQLiteDatabase(default_db_path())
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(text)
    if "://" in text:
        raise BlockedError(
            f"history database {_redact(text)}: expected postgresql://… or an SQLite file path"
        )
    return SQLiteDatabase(Path(text).expanduser())


__all__ = ["Database", "PostgresDatabase", "SQLiteDatabase", "default_db_path", "open_db"]
