"""``.mska`` archives with one damaged chunk, for the rewrite (no laundering) tests, and
:func:`commit_directory`, a new generation whose directory lies (with valid CRCs).

Each builder returns the bytes of an archive of members ``m1`` and ``m2`` in which ``m1``'s
first chunk is damaged in one way; every checksum a reader checks before the chunks holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from spacetransformer import Space

from medmask import SegmentationMask
from medmask.archive import MaskArchive, _Pending
from medmask.codecs import LabelCodec
from medmask.format.container import HEADER_SIZE
from medmask.format.encoding import EncodedMask, encode_mask
from medmask.format.mska import (
    ArchiveDirectory,
    directory_bytes,
    parse_directory,
    slot_header,
    valid_slots,
)

SPACE = Space(shape=(6, 20, 24), origin=(4.0, -1.0, 2.5), spacing=(1.5, 0.7, 0.7))
CHUNKS = (6, 10, 24)  # two chunks a member


def member(i: int) -> SegmentationMask:
    """Labels ``i`` and ``10 + i``; m1 and m2 share their geometry, so their chunk streams
    have the same lengths."""
    data = np.zeros(SPACE.shape, np.uint8)
    g = 1 if i <= 2 else i
    data[1:5, 2 + g : 17, 3 : 9 + 3 * g] = i
    data[2:4, 5:15, 15:22] = 10 + i
    return SegmentationMask(data, {f"a{i}": i, f"b{i}": 10 + i}, space=SPACE)


def _write(path: Path, m1: EncodedMask | None = None) -> bytes:
    with MaskArchive(path, "w", space=SPACE) as archive:
        if m1 is None:
            archive.add_segmask(member(1), "m1", chunks=CHUNKS)
        else:
            archive._pending.append(_Pending("m1", m1, False))
        archive.add_segmask(member(2), "m2", chunks=CHUNKS)
    return path.read_bytes()


def sound(path: Path) -> bytes:
    return _write(path)


def chunk_span(path: Path, name: str) -> tuple[int, int]:
    """(offset, length) of member ``name``'s first stored chunk."""
    with MaskArchive(path) as archive:
        index = archive._directory.member(name).index  # type: ignore[union-attr]
    stored = index[index["length"] > 0]
    return int(stored["offset"][0]), int(stored["length"][0])


def crc_mismatch(path: Path) -> bytes:
    """One byte of ``m1``'s first chunk changed: its CRC no longer matches."""
    data = bytearray(_write(path))
    offset, length = chunk_span(path, "m1")
    data[offset + length // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return bytes(data)


def overwritten(path: Path) -> bytes:
    """``m1``'s first chunk holds ``m2``'s first chunk (same length; the CRC in the index is
    still ``m1``'s). A laundering rewrite makes ``m1`` read as ``m2``'s voxels."""
    data = bytearray(_write(path))
    m1_offset, m1_length = chunk_span(path, "m1")
    m2_offset, m2_length = chunk_span(path, "m2")
    assert m1_length == m2_length
    data[m1_offset : m1_offset + m1_length] = data[m2_offset : m2_offset + m2_length]
    path.write_bytes(bytes(data))
    return bytes(data)


def wrong_stream(path: Path, what: str) -> bytes:
    """``m1``'s first chunk is a valid stream with a valid CRC, but of the wrong dtype
    (uint16 in a uint8 member) or the wrong shape (half the chunk box)."""
    encoded = encode_mask(member(1), chunks=CHUNKS, include_space=False, codec="medmask.labels")
    descriptor = encoded.descriptor
    box = descriptor.chunk_box(0)
    block = member(1).data[box]
    if what == "dtype":
        stream = LabelCodec().encode(np.ascontiguousarray(block.astype(np.uint16)))
    else:
        stream = LabelCodec().encode(np.ascontiguousarray(block[: block.shape[0] // 2]))
    streams = [stream, *encoded.streams[1:]]
    return _write(path, EncodedMask(descriptor, streams))


def commit_directory(path: Path, change: Callable[[ArchiveDirectory], ArchiveDirectory]) -> None:
    """Write a new generation whose directory is ``change(directory)``, with valid CRCs: the
    directory appended, its header in the slot the newest generation is not in."""
    data = path.read_bytes()
    slot, header = valid_slots(data, name="x")[0]
    meta = data[header.metadata_offset : header.metadata_offset + header.metadata_length]
    index = data[header.index_offset : header.index_offset + header.index_length]
    directory = change(parse_directory(header, meta, index, name="x"))
    meta, flags, index, _ = directory_bytes(directory)
    at = len(data)
    new = slot_header(header.generation + 1, at, meta, flags, at + len(meta), index)
    with path.open("r+b") as f:
        f.seek(at)
        f.write(meta + index)
        f.seek((1 - slot) * HEADER_SIZE)
        f.write(new.pack())
