"""Build ``.msk`` and ``.mska`` files from parts, with valid CRCs and lying contents.

The writer never produces these files; a hostile or buggy one could. Every builder computes
every checksum, so what is tested is the reader's judgement of the contents, not its CRCs.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import zstandard

from medmask.codecs import BinaryCodec, LabelCodec
from medmask.format.container import (
    FLAG_METADATA_ZSTD,
    HEADER_SIZE,
    INDEX_DTYPE,
    MAGIC_MSK,
    Header,
)

SPACE_JSON = {
    "coordinate_system": "LPS",
    "origin": [0.0, 0.0, 0.0],
    "spacing": [1.0, 1.0, 1.0],
    "x_orientation": [1.0, 0.0, 0.0],
    "y_orientation": [0.0, 1.0, 0.0],
    "z_orientation": [0.0, 0.0, 1.0],
}


def crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def descriptor(
    shape: Sequence[int],
    *,
    dtype: str = "uint8",
    labels: list[dict[str, Any]] | None = None,
    chunks: Sequence[int] | None = None,
    codec: str = "medmask.labels",
    space: bool = True,
) -> dict[str, Any]:
    """A mask descriptor (``.msk`` metadata when ``space``) for the given shape."""
    bit_depth = {"bool": 1, "uint8": 8, "uint16": 16, "uint32": 32}[dtype]
    obj: dict[str, Any] = {
        "shape": list(shape),
        "axes": "zyx",
        "dtype": dtype,
        "bit_depth": bit_depth,
    }
    if space:
        obj = {"format": "medmask.msk", **obj, "space": {**SPACE_JSON, "shape": list(shape)}}
    obj["labels"] = (
        labels if labels is not None else [{"name": "a", "value": 1, "count": 0, "bbox": None}]
    )
    obj["codec"] = {"id": codec}
    obj["chunks"] = list(chunks or shape)
    return obj


def zstd_frame(raw: bytes, *, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(raw)


def zstd_frame_of_repeats(byte: bytes, size: int) -> bytes:
    """A frame holding ``size`` copies of ``byte``, built in pieces (never ``size`` in memory)."""
    obj = zstandard.ZstdCompressor(level=1, write_content_size=True).compressobj(size=size)
    block = byte * (1 << 20)
    out = []
    left = size
    while left:
        piece = block[: min(left, len(block))]
        out.append(obj.compress(piece))
        left -= len(piece)
    out.append(obj.flush())
    return b"".join(out)


def zstd_frame_claiming(content: bytes, declared: int) -> bytes:
    """A hand-made frame (one raw block) whose header claims ``declared`` content bytes."""
    assert len(content) < 1 << 17
    descriptor = 0b1100_0000  # 8-byte Frame_Content_Size, no single segment, no checksum
    window = 0x58  # 2^(10 + 11) = 2 MiB window
    block_header = (len(content) << 3 | 1).to_bytes(3, "little")  # last block, raw
    return (
        (0xFD2FB528).to_bytes(4, "little")
        + bytes([descriptor, window])
        + declared.to_bytes(8, "little")
        + block_header
        + content
    )


def index(entries: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Chunk index from (offset, length, crc) triples."""
    arr = np.zeros(len(entries), dtype=INDEX_DTYPE)
    for i, (offset, length, checksum) in enumerate(entries):
        arr[i] = (offset, length, checksum, 0)
    return arr


def msk(
    metadata: dict[str, Any] | bytes,
    streams: Sequence[bytes] = (),
    *,
    zstd_metadata: bool = False,
    entries: np.ndarray | None = None,
    generation: int = 0,
) -> bytes:
    """A ``.msk``: header, metadata, index, streams back to back (index built unless given)."""
    meta = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
    flags = 0
    if zstd_metadata:
        flags = FLAG_METADATA_ZSTD
        if not isinstance(metadata, bytes):
            meta = zstd_frame(meta)
    n = len(streams) if entries is None else len(entries)
    index_offset = HEADER_SIZE + len(meta)
    payload = index_offset + n * INDEX_DTYPE.itemsize
    if entries is None:
        triples = []
        for s in streams:
            triples.append((payload if s else 0, len(s), crc(s) if s else 0))
            payload += len(s)
        entries = index(triples)
    index_bytes = entries.tobytes()
    header = Header(
        magic=MAGIC_MSK,
        metadata_offset=HEADER_SIZE,
        metadata_length=len(meta),
        metadata_crc=crc(meta),
        index_offset=index_offset,
        index_count=len(entries),
        index_crc=crc(index_bytes),
        required_flags=flags,
        generation=generation,
    )
    return header.pack() + meta + index_bytes + b"".join(streams)


def labels_stream(array: np.ndarray) -> bytes:
    return LabelCodec().encode(np.ascontiguousarray(array))


def binary_stream(array: np.ndarray) -> bytes:
    return BinaryCodec().encode(np.ascontiguousarray(array))
