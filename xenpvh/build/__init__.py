"""The build room: source trees, patch series, build recipes (xen, freebsd, linux), the
content-addressed artifact cache, and the guest kit (kernel + busybox initramfs) that Linux
profiles boot with."""
