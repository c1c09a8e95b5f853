"""On-disk layout of ``.msk`` and ``.mska`` (bytes in, bytes out; no I/O). See docs/format.md."""
