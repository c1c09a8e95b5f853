"""Pieces of ``.msk`` and ``.mska`` files written field by field as docs/format.md describes
them (``struct`` and ``zlib`` only, nothing from medmask's writers), for the spec tests."""

from __future__ import annotations

import struct
import zlib


def header(
    magic: bytes, meta_at: int, meta: bytes, index_at: int, index: bytes, gen: int, flags: int = 0
) -> bytes:
    """The 64-byte header of format.md section 1 (``flags``: the required flags)."""
    body = magic + struct.pack(
        "<HHIIQQIIQII",
        1,  # major
        0,  # minor
        flags,  # required flags (0: metadata stored raw)
        0,  # optional flags
        gen,
        meta_at,
        len(meta),
        zlib.crc32(meta),
        index_at,
        len(index) // 24,
        zlib.crc32(index),
    )
    return body + struct.pack("<I", zlib.crc32(body))
