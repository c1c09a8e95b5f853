"""Encode a mask into checksummed chunk streams and decode them back (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .._version import __version__
from ..codecs import (
    CODEC_KINDS,
    Codec,
    DecodesInto,
    EncodesWithStats,
    choose_codec,
    get_codec,
    peek_stream,
)
from ..codecs._edges import STATS_DTYPE  # the records of EncodesWithStats
from ..config import max_bytes_limit, max_voxels_limit
from ..errors import (
    AllocationLimitError,
    ChecksumError,
    CodecError,
    FormatError,
    InvalidValueError,
    TruncatedFileError,
)
from ..mapping import mapping_items
from ..mask import SegmentationMask
from ..values import LabelStats, label_stats
from .container import INDEX_DTYPE, check_stored_ranges, crc32
from .descriptor import MaskDescriptor, Roi, label_entries, parse_chunks

__all__ = [
    "MAX_VOXELS_PER_BYTE",
    "EncodedMask",
    "assemble",
    "check_index",
    "check_limits",
    "check_size_limits",
    "check_stored_chunk",
    "decode_chunk",
    "decode_region",
    "encode_mask",
    "verify_chunk",
]

#: A stored chunk may not claim more voxels than this per compressed byte.
MAX_VOXELS_PER_BYTE = 1 << 20
_T = TypeVar("_T")
_R = TypeVar("_R")


def check_limits(
    descriptor: MaskDescriptor,
    *,
    name: str,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> None:
    """Refuse a mask whose decoded size exceeds the voxel or byte limit."""
    check_size_limits(
        descriptor.shape, descriptor.dtype, name=name, max_voxels=max_voxels, max_bytes=max_bytes
    )


def check_size_limits(
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    *,
    name: str,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> None:
    """Refuse an array of ``shape`` and ``dtype`` above the voxel or byte limit."""
    voxels = math.prod(shape)
    limit = max_voxels_limit(max_voxels)
    if voxels > limit:
        raise AllocationLimitError(
            f"{name}: declares {shape} = {voxels:,} voxels, above the limit of "
            f"{limit:,} (raise it with max_voxels= or MEDMASK_MAX_VOXELS if this is intended)."
        )
    nbytes = voxels * dtype.itemsize
    limit = max_bytes_limit(max_bytes)
    if nbytes > limit:
        raise AllocationLimitError(
            f"{name}: declares {shape} {dtype} = {nbytes:,} bytes, above the limit of {limit:,} "
            "bytes (raise it with max_bytes= or MEDMASK_MAX_BYTES if this is intended)."
        )


#: Below this many bytes of output, chunks are decoded or encoded one after another even when
#: an executor is given: spreading them over threads would cost more than it saves.
PARALLEL_MIN_BYTES = 2 << 20


def _map_chunks(
    func: Callable[[_T], _R], items: Sequence[_T], nbytes: int, executor: Executor | None
) -> list[_R]:
    """``func`` over ``items``, on ``executor`` when there is one and the work is worth it."""
    if executor is None or len(items) <= 1 or nbytes < PARALLEL_MIN_BYTES:
        return [func(item) for item in items]
    return list(executor.map(func, items))


@dataclass(frozen=True)
class EncodedMask:
    """A mask as its descriptor plus one stream per chunk (``b""`` for an all-zero chunk)."""

    descriptor: MaskDescriptor
    streams: list[bytes]

    @property
    def payload_size(self) -> int:
        """Sum of the stream lengths."""
        return sum(len(s) for s in self.streams)

    def index(self, first_offset: int) -> npt.NDArray[Any]:
        """Chunk index entries when the streams are stored back to back from ``first_offset``."""
        entries = np.zeros(len(self.streams), dtype=INDEX_DTYPE)
        lengths = np.array([len(s) for s in self.streams], dtype=np.uint64)
        offsets = first_offset + np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.uint64)
        entries["offset"] = np.where(lengths > 0, offsets, 0)
        entries["length"] = lengths
        entries["crc"] = [crc32(s) if s else 0 for s in self.streams]
        return entries


def encode_mask(
    mask: SegmentationMask,
    *,
    level: int | None = None,
    chunks: object = None,
    attributes: Mapping[str, Any] | None = None,
    include_space: bool = True,
    codec: str | Mapping[str, Any] | None = None,
    executor: Executor | None = None,
) -> EncodedMask:
    """Pick a codec, encode every chunk and compute label statistics on the way (on
    ``executor``'s threads when given and the mask is large enough to gain from it).

    Statistics are computed once per chunk, while it is in cache: by the codec when it
    can (``encode_with_stats``: ``medmask.edges`` on 1- and 2-byte arrays), else from the block.

    ``codec``: a codec id (``"medmask.labels"``) or config (``{"id": ..., "level": ...}``);
    default :func:`medmask.codecs.choose_codec` (``medmask.edges``). The older codecs write
    files that medmask versions before ``medmask.edges`` also read.
    """
    data = mask.data
    chunk_shape = parse_chunks(chunks, data.shape, data.dtype.itemsize)
    coder = _pick_codec(data, codec, level)
    descriptor = MaskDescriptor(
        shape=mask.shape,
        bit_depth=mask.bit_depth,
        labels=(),
        codec=coder.get_config(),
        chunks=chunk_shape,
        space=mask.space if include_space else None,
        attributes={**mask.attributes, **(attributes or {})},
        created_by=f"medmask {__version__}",
    )
    boxes = [descriptor.chunk_box(i) for i in range(descriptor.n_chunks)]

    def encode_one(box: Roi) -> tuple[bytes, npt.NDArray[Any]]:
        view = data[box]
        if not view.any():
            return b"", np.zeros(0, STATS_DTYPE)
        block = np.ascontiguousarray(view)
        if isinstance(coder, EncodesWithStats):
            stream, records = coder.encode_with_stats(block)
        else:
            stream, records = coder.encode(block), None
        if records is None:  # the codec could not tell: counted here, while the block is in cache
            records = _records(label_stats(block))
        return stream, records

    encoded = _map_chunks(encode_one, boxes, data.nbytes, executor)
    streams = [stream for stream, _ in encoded]
    _check_streams_readable(descriptor, streams)
    stats = _merge_chunk_stats(boxes, [records for _, records in encoded])
    entries = label_entries(mapping_items(mask.mapping), stats, math.prod(mask.shape))
    return EncodedMask(replace(descriptor, labels=entries), streams)


def _records(stats: Mapping[int, LabelStats]) -> npt.NDArray[Any]:
    """:data:`medmask.codecs.STATS_DTYPE` records of :func:`medmask.values.label_stats` output."""
    records = np.zeros(len(stats), STATS_DTYPE)
    for i, (value, found) in enumerate(stats.items()):
        records[i] = (value, found.count, [b for pair in found.bbox for b in pair])
    return records


def _merge_chunk_stats(
    boxes: Sequence[Roi], per_chunk: Sequence[npt.NDArray[Any]]
) -> dict[int, LabelStats]:
    """Per-value count and bbox of the whole array from each chunk's records (bounds in chunk
    coordinates), grouped in one vectorised step."""
    kept = [(box, records) for box, records in zip(boxes, per_chunk, strict=True) if len(records)]
    if not kept:
        return {}
    records = np.concatenate([r for _, r in kept])
    origins = np.repeat(
        np.array([[s.start for s in box for _ in (0, 1)] for box, _ in kept], dtype=np.int64),
        [len(r) for _, r in kept],
        axis=0,
    )
    bounds = records["bounds"].astype(np.int64) + origins
    values, inverse = np.unique(records["value"], return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.zeros(values.size, dtype=np.int64)
    np.add.at(counts, inverse, records["count"].astype(np.int64))
    low = np.full((values.size, 3), np.iinfo(np.int64).max, dtype=np.int64)
    high = np.full((values.size, 3), -1, dtype=np.int64)
    np.minimum.at(low, inverse, bounds[:, 0::2])
    np.maximum.at(high, inverse, bounds[:, 1::2])
    return {
        int(value): LabelStats(
            int(counts[i]), tuple((int(low[i, a]), int(high[i, a])) for a in range(3))
        )
        for i, value in enumerate(values.tolist())
    }


def _pick_codec(
    data: npt.NDArray[Any], codec: str | Mapping[str, Any] | None, level: int | None
) -> Codec:
    if codec is None:
        return choose_codec(data, level=level)
    config: dict[str, Any] = {"id": codec} if isinstance(codec, str) else dict(codec)
    if level is not None:
        config["level"] = level
    try:
        return get_codec(config, strict=True)
    except CodecError as exc:
        raise InvalidValueError(str(exc)) from None


def _check_streams_readable(descriptor: MaskDescriptor, streams: Sequence[bytes]) -> None:
    """The writer's side of the reader limits: never write what :func:`check_index` refuses."""
    check_limits(descriptor, name="mask to write")
    for chunk_id, stream in enumerate(streams):
        box = descriptor.chunk_box(chunk_id)
        voxels = math.prod(s.stop - s.start for s in box)
        if stream and voxels > len(stream) * MAX_VOXELS_PER_BYTE:
            raise InvalidValueError(
                f"Expected chunks readers accept: chunk {chunk_id} holds {voxels:,} voxels in "
                f"{len(stream)} bytes, above {MAX_VOXELS_PER_BYTE:,} voxels per stored byte. "
                f"Use smaller chunks than {descriptor.chunks}."
            )


def check_index(
    index: npt.NDArray[Any],
    descriptor: MaskDescriptor,
    *,
    name: str,
    payload_start: int,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
    file_size: int | None = None,
) -> None:
    """Validate a mask's chunk index against its descriptor before anything is allocated."""
    check_limits(descriptor, name=name, max_voxels=max_voxels, max_bytes=max_bytes)
    if len(index) != descriptor.n_chunks:
        raise FormatError(
            f"{name}: chunk index has {len(index)} entries but the chunk grid "
            f"{descriptor.grid} needs {descriptor.n_chunks}."
        )
    offsets = index["offset"].astype(np.uint64)
    lengths = index["length"].astype(np.uint64)
    stored = lengths > 0
    if np.any(offsets[stored] < payload_start):
        raise FormatError(f"{name}: a chunk index entry points into the header or metadata.")
    ends = offsets + lengths
    if np.any(ends < offsets) or (file_size is not None and np.any(ends[stored] > file_size)):
        raise FormatError(f"{name}: a chunk index entry points past the end of the file.")
    check_stored_ranges(index, (), name=name)  # no two streams share bytes
    for chunk_id in np.flatnonzero(stored):
        box = descriptor.chunk_box(int(chunk_id))
        chunk_voxels = math.prod(s.stop - s.start for s in box)
        if chunk_voxels > int(lengths[chunk_id]) * MAX_VOXELS_PER_BYTE:
            raise AllocationLimitError(
                f"{name}: chunk {chunk_id} claims {chunk_voxels:,} voxels from "
                f"{int(lengths[chunk_id])} bytes; the file is corrupted or hostile."
            )


def verify_chunk(
    index: npt.NDArray[Any], chunk_id: int, stream: bytes | memoryview | None, *, name: str
) -> bytes | memoryview:
    """Check a stored chunk's length and CRC against its index entry; return the stream."""
    expected = int(index["length"][chunk_id])
    if stream is None or len(stream) != expected:
        got = "nothing" if stream is None else f"{len(stream)} bytes"
        raise TruncatedFileError(
            f"{name}: chunk {chunk_id} is truncated (expected {expected} bytes, got {got})."
        )
    if crc32(stream) != int(index["crc"][chunk_id]):
        raise ChecksumError(
            f"{name}: chunk {chunk_id} checksum mismatch; the file is corrupted (or was "
            "replaced since it was opened)."
        )
    return stream


def check_stored_chunk(
    descriptor: MaskDescriptor,
    index: npt.NDArray[Any],
    chunk_id: int,
    stream: bytes | memoryview | None,
    *,
    name: str,
) -> bytes | memoryview:
    """Check a stored chunk before it is decoded; return the stream.

    Its length and CRC against the index entry (:func:`verify_chunk`), then its header: the
    descriptor's codec kind, its dtype exactly, ndim 3 and the chunk box's shape (format.md
    section 3; nothing is cast or padded). Raises :class:`TruncatedFileError`,
    :class:`ChecksumError` or :class:`FormatError`.
    """
    stream = verify_chunk(index, chunk_id, stream, name=name)
    codec_id = descriptor.codec.get("id")
    kind = CODEC_KINDS.get(codec_id) if isinstance(codec_id, str) else None
    if kind is None:
        raise FormatError(
            f"{name}: cannot decode: expected a codec id in {sorted(CODEC_KINDS)}. "
            f"Got {codec_id!r}."
        )
    try:
        prefix = peek_stream(stream)
    except CodecError as exc:
        raise FormatError(f"{name}: chunk {chunk_id} cannot be decoded: {exc}") from None
    box = descriptor.chunk_box(chunk_id)
    want = (kind, descriptor.dtype, tuple(s.stop - s.start for s in box))
    got = (prefix.kind, prefix.dtype, prefix.shape)
    if got != want:
        raise FormatError(
            f"{name}: chunk {chunk_id} cannot be decoded: expected a {codec_id} stream (kind "
            f"{want[0]}) of dtype {want[1]} and shape {want[2]}. Got kind {got[0]}, dtype "
            f"{got[1]}, shape {got[2]}."
        )
    return stream


def decode_chunk(
    codec: Codec,
    descriptor: MaskDescriptor,
    chunk_id: int,
    stream: bytes | memoryview,
    *,
    name: str,
    present: list[npt.NDArray[Any] | None] | None = None,
) -> npt.NDArray[Any]:
    """Decode one verified chunk stream to the chunk's own shape and the descriptor's dtype.

    With ``present``, append the chunk's distinct values (None where the codec could not tell
    them cheaply).
    """
    box = descriptor.chunk_box(chunk_id)
    shape = tuple(s.stop - s.start for s in box)
    try:
        if present is None:
            return codec.decode(stream, shape=shape, dtype=descriptor.dtype)
        block, values = codec.decode_with_values(stream, shape=shape, dtype=descriptor.dtype)
    except CodecError as exc:
        raise FormatError(f"{name}: chunk {chunk_id} cannot be decoded: {exc}") from None
    present.append(values)
    return block


def assemble(
    descriptor: MaskDescriptor,
    roi: Roi,
    blocks: Iterable[tuple[int, npt.NDArray[Any]]],
    stored: Iterable[int],
) -> npt.NDArray[Any]:
    """The ``roi`` of the array from decoded chunks, placed as they arrive (so a lazy iterable
    holds one chunk at a time); ``stored`` lists the chunks that will arrive, the others of
    ``roi`` are all zero."""
    touched = descriptor.chunks_in(roi)
    stored = set(stored)
    if len(touched) == 1 and touched[0] in stored and descriptor.chunk_box(touched[0]) == roi:
        return next(iter(blocks))[1]  # the block is the answer: no copy
    out = _region_array(descriptor, roi, touched, stored)
    for chunk_id, block in blocks:
        src, dst = _overlap(descriptor.chunk_box(chunk_id), roi)
        out[dst] = block[src]
        del block  # before the next chunk is decoded, so its memory is reused
    return out


def _region_array(
    descriptor: MaskDescriptor, roi: Roi, touched: Sequence[int], stored: Iterable[int]
) -> npt.NDArray[Any]:
    """The output array of ``roi``: zeros where chunks are empty; uninitialised when every
    touched chunk is stored (each byte is then written once)."""
    out_shape = tuple(r.stop - r.start for r in roi)
    every = set(stored).issuperset(touched)
    return (np.empty if every else np.zeros)(out_shape, descriptor.dtype)


def decode_region(
    descriptor: MaskDescriptor,
    index: npt.NDArray[Any],
    roi: Roi,
    streams: Mapping[int, bytes | memoryview],
    *,
    name: str,
    present: list[npt.NDArray[Any] | None] | None = None,
    executor: Executor | None = None,
) -> npt.NDArray[Any]:
    """Verify, decode and assemble the chunks of ``roi`` (``streams``: chunk id -> bytes).

    Codecs that decode into an array (``medmask.edges``: its kernel runs without the GIL)
    write every chunk straight into the output, on ``executor``'s threads when given and the
    output is large enough to gain from it. Other codecs decode chunk after chunk
    (``np.repeat`` holds the GIL).
    """
    try:
        codec: Codec = get_codec(descriptor.codec)
    except CodecError as exc:
        raise FormatError(f"{name}: cannot decode: {exc}") from None
    touched = descriptor.chunks_in(roi)
    stored = [c for c in touched if int(index["length"][c]) > 0]
    if isinstance(codec, DecodesInto):
        out = _region_array(descriptor, roi, touched, stored)
        return _decode_into_region(
            codec, descriptor, index, roi, streams, stored, name, present, out, executor
        )
    blocks = (
        (
            chunk_id,
            decode_chunk(
                codec,
                descriptor,
                chunk_id,
                check_stored_chunk(descriptor, index, chunk_id, streams.get(chunk_id), name=name),
                name=name,
                present=present,
            ),
        )
        for chunk_id in stored
    )
    return assemble(descriptor, roi, blocks, stored)


def _decode_into_region(
    codec: DecodesInto,
    descriptor: MaskDescriptor,
    index: npt.NDArray[Any],
    roi: Roi,
    streams: Mapping[int, bytes | memoryview],
    stored: list[int],
    name: str,
    present: list[npt.NDArray[Any] | None] | None,
    out: npt.NDArray[Any],
    executor: Executor | None,
) -> npt.NDArray[Any]:
    """Decode the ``stored`` chunks of ``roi`` straight into ``out``; ``out``."""
    found: dict[int, npt.NDArray[Any] | None] = {}

    def one(chunk_id: int) -> int:
        stream = check_stored_chunk(descriptor, index, chunk_id, streams.get(chunk_id), name=name)
        box = descriptor.chunk_box(chunk_id)
        src, dst = _overlap(box, roi)
        whole = all(
            s.start == 0 and s.stop == b.stop - b.start for s, b in zip(src, box, strict=True)
        )
        values: list[npt.NDArray[Any] | None] | None = [] if present is not None else None
        try:
            if whole:
                codec.decode_into(stream, out[dst], present=values)
            else:
                shape = tuple(b.stop - b.start for b in box)
                block = np.empty(shape, descriptor.dtype)
                codec.decode_into(stream, block, present=values)
                out[dst] = block[src]
        except CodecError as exc:
            raise FormatError(f"{name}: chunk {chunk_id} cannot be decoded: {exc}") from None
        if values is not None:
            found[chunk_id] = values[0]
        return chunk_id

    _map_chunks(one, stored, out.nbytes, executor)
    if present is not None:
        present.extend(found[c] for c in stored)
    return out


def _overlap(box: Roi, roi: Roi) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices into a chunk block and into the roi output for their intersection."""
    src, dst = [], []
    for b, r in zip(box, roi, strict=True):
        lo, hi = max(b.start, r.start), min(b.stop, r.stop)
        src.append(slice(lo - b.start, hi - b.start))
        dst.append(slice(lo - r.start, hi - r.start))
    return tuple(src), tuple(dst)


def chunk_ranges(index: npt.NDArray[Any], chunk_ids: Iterable[int]) -> list[tuple[int, int, int]]:
    """``(chunk_id, start, end)`` byte ranges of the stored chunks among ``chunk_ids``."""
    out = []
    for chunk_id in chunk_ids:
        length = int(index["length"][chunk_id])
        if length:
            start = int(index["offset"][chunk_id])
            out.append((chunk_id, start, start + length))
    return out
