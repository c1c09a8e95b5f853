"""Shared stream header and zstd helpers of the medmask codecs (pure: numpy + zstandard)."""

from __future__ import annotations

import math
import struct
import sys
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import zstandard as zstd

from medmask.errors import CodecError, CodecTypeError

from ..dtypes import value_max

__all__ = [
    "BIG_ENDIAN",
    "DTYPE_CODES",
    "HEADER_PREFIX",
    "MAGIC",
    "MAX_DECODED_NBYTES",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "VERSION",
    "StreamHeader",
    "check_level",
    "coded_shape",
    "compress",
    "decompress",
    "dtype_code",
    "dtype_from_code",
    "frame_size",
    "memory_refusal",
    "normalize_input",
    "pack_header",
    "parse_header",
    "restore_dtype",
    "storage_dtype",
    "value_max",
]

MAGIC: Final = b"MMC"
VERSION: Final = 1
MIN_LEVEL: Final = 1
MAX_LEVEL: Final = 22

#: Largest decoded array (bytes) accepted when the caller does not pass ``shape=``.
MAX_DECODED_NBYTES: Final = 1 << 32

#: dtype code (stream byte 5, without :data:`BIG_ENDIAN`) -> dtype of the decoded array.
#: Codes 1-4 are the original set; 5-9 (64-bit and signed integers) were added in medmask 0.2.
DTYPE_CODES: Final[dict[int, np.dtype[np.generic]]] = {
    1: np.dtype(np.bool_),
    2: np.dtype("<u1"),
    3: np.dtype("<u2"),
    4: np.dtype("<u4"),
    5: np.dtype("<u8"),
    6: np.dtype("<i1"),
    7: np.dtype("<i2"),
    8: np.dtype("<i4"),
    9: np.dtype("<i8"),
}
#: Flag on the dtype code: the decoded array is big-endian (values are stored the same way).
BIG_ENDIAN: Final = 0x80
_CODE_OF_KIND: Final = {(dt.kind, dt.itemsize): code for code, dt in DTYPE_CODES.items()}
_SUPPORTED = "bool, uint8-uint64 or int8-int64"

# magic(3) version(1) kind(1) dtype(1) ndim(1) mode(1)
HEADER_PREFIX: Final = struct.Struct("<3sBBBBB")
_CRC: Final = struct.Struct("<I")
MAX_NDIM: Final = 3  # streams hold 1-, 2- or 3-D arrays


def byte_width(vmax: int) -> int:
    """The fewest bytes (1, 2, 4 or 8) that hold every value up to ``vmax``."""
    return 1 if vmax < 1 << 8 else 2 if vmax < 1 << 16 else 4 if vmax < 1 << 32 else 8


def coded_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape an adapter codes a C-ordered array (a chunk) of ``shape`` as: at most
    :data:`MAX_NDIM` axes (leading axes merged), at least 1 (0-D as ``(1,)``)."""
    if len(shape) > MAX_NDIM:
        return (math.prod(shape[: len(shape) - MAX_NDIM + 1]), *shape[-(MAX_NDIM - 1) :])
    return shape or (1,)


def is_supported_dtype(dtype: np.dtype[Any]) -> bool:
    """Whether the codecs take arrays of ``dtype`` (bool, 1-8 byte integers, any byte order)."""
    return (dtype.kind, dtype.itemsize) in _CODE_OF_KIND


@dataclass(frozen=True)
class StreamHeader:
    """Decoded common header of a codec stream."""

    kind: int
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]
    mode: int
    fields: tuple[int, ...]
    section_sizes: tuple[int, ...]
    end: int

    @property
    def size(self) -> int:
        """Number of elements of the decoded array."""
        n = 1
        for s in self.shape:
            n *= s
        return n


def check_level(level: object, codec_id: str) -> int:
    """Validate a zstd level (an int in ``MIN_LEVEL..MAX_LEVEL``)."""
    if isinstance(level, bool) or not isinstance(level, int | np.integer):
        raise CodecError(
            f"Expected an int level for codec {codec_id!r}. Got {type(level).__name__}: {level!r}."
        )
    if not MIN_LEVEL <= int(level) <= MAX_LEVEL:
        raise CodecError(
            f"Expected a level in {MIN_LEVEL}..{MAX_LEVEL} for codec {codec_id!r}. Got {level}."
        )
    return int(level)


def normalize_input(array: object, codec_id: str) -> tuple[np.ndarray, np.dtype[np.generic]]:
    """Return ``(values, dtype)``: the array as a C-contiguous 1..3-D array of native unsigned
    integers (or bool) of the same item size, and the dtype a decoder must give back.

    Signed arrays must hold non-negative values (labels); big-endian arrays are byte-swapped
    and flagged in the stream, so the decoded array has the input's dtype exactly.
    """
    if not isinstance(array, np.ndarray):
        raise CodecError(
            f"Expected a numpy array for codec {codec_id!r}. Got {type(array).__name__}."
        )
    dt = array.dtype
    if not is_supported_dtype(dt):
        raise CodecTypeError(f"Expected dtype {_SUPPORTED} for codec {codec_id!r}. Got {dt}.")
    if not 1 <= array.ndim <= MAX_NDIM:
        raise CodecError(
            f"Expected a 1-D, 2-D or 3-D array for codec {codec_id!r}. Got {array.ndim}-D."
        )
    if any(s > 0xFFFFFFFF for s in array.shape):
        raise CodecError(f"Expected every dimension < 2**32. Got shape {array.shape}.")
    values = array if dt.isnative else array.astype(dt.newbyteorder("="))
    if dt.kind == "i":
        if values.size and int(values.min()) < 0:
            raise CodecError(
                f"Expected non-negative values (labels) for codec {codec_id!r}. "
                f"Got a minimum of {int(values.min())} in a {dt} array."
            )
        values = values.view(f"u{dt.itemsize}")
    return np.ascontiguousarray(values), dt


def dtype_code(dtype: np.dtype[np.generic]) -> int:
    """Stream dtype code of a supported dtype (with :data:`BIG_ENDIAN` if it is big-endian)."""
    code = _CODE_OF_KIND[(dtype.kind, dtype.itemsize)]
    big = dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big")
    return code | BIG_ENDIAN if big and dtype.itemsize > 1 else code


def dtype_from_code(code: int) -> np.dtype[np.generic] | None:
    """The decoded dtype of a stream dtype code, or None for an unknown code."""
    base = DTYPE_CODES.get(code & ~BIG_ENDIAN)
    if base is None or (code & BIG_ENDIAN and base.itemsize == 1):
        return None
    return base.newbyteorder(">") if code & BIG_ENDIAN else base


def storage_dtype(dtype: np.dtype[np.generic]) -> np.dtype[np.generic]:
    """The native unsigned dtype (or bool) the codec works in for arrays of ``dtype``."""
    return dtype if dtype.kind == "b" else np.dtype(f"u{dtype.itemsize}")


def restore_dtype(values: np.ndarray, dtype: np.dtype[np.generic]) -> np.ndarray:
    """Decoded native unsigned ``values`` as the recorded ``dtype`` (signed view, byte order)."""
    if values.dtype == dtype:
        return values
    if dtype.kind == "i":
        values = values.view(dtype.newbyteorder("="))
    return values if values.dtype == dtype else values.astype(dtype)


def pack_header(
    kind: int,
    dtype: np.dtype[np.generic],
    shape: tuple[int, ...],
    mode: int,
    fields: struct.Struct,
    field_values: tuple[int, ...],
    section_sizes: tuple[int, ...],
) -> bytes:
    """Build a header: prefix, shape, codec fields, section sizes, CRC-32 of all of it."""
    head = b"".join(
        (
            HEADER_PREFIX.pack(MAGIC, VERSION, kind, dtype_code(dtype), len(shape), mode),
            struct.pack(f"<{len(shape)}I", *shape),
            fields.pack(*field_values),
            struct.pack(f"<{len(section_sizes)}Q", *section_sizes),
        )
    )
    return head + _CRC.pack(zlib.crc32(head))


def parse_header(
    data: memoryview,
    kind: int,
    codec_id: str,
    fields: struct.Struct,
    n_sections: int,
    shape: tuple[int, ...] | None,
    dtype: np.dtype[np.generic] | None,
) -> StreamHeader:
    """Parse and validate a header; check it against the expected ``shape``/``dtype``."""
    n = len(data)
    if n < HEADER_PREFIX.size:
        raise CodecError(
            f"Expected a {codec_id} stream of at least {HEADER_PREFIX.size} bytes. "
            f"Got {n} bytes (truncated)."
        )
    magic, version, got_kind, code, ndim, mode = HEADER_PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise CodecError(f"Expected stream magic {MAGIC!r}. Got {bytes(magic)!r}.")
    if version != VERSION:
        raise CodecError(f"Expected codec stream version {VERSION}. Got {version}.")
    if got_kind != kind:
        raise CodecError(f"Expected a {codec_id} stream (kind {kind}). Got kind {got_kind}.")
    if not 1 <= ndim <= MAX_NDIM:
        raise CodecError(f"Expected ndim 1..{MAX_NDIM} in the stream header. Got {ndim}.")
    header_size = HEADER_PREFIX.size + 4 * ndim + fields.size + 8 * n_sections + _CRC.size
    if n < header_size:
        raise CodecError(
            f"Expected a {codec_id} header of {header_size} bytes. Got {n} bytes (truncated)."
        )
    (crc,) = _CRC.unpack_from(data, header_size - _CRC.size)
    if zlib.crc32(data[: header_size - _CRC.size]) != crc:
        raise CodecError(f"Expected a valid {codec_id} header checksum. Got a mismatch (corrupt).")
    got_dtype = dtype_from_code(code)
    if got_dtype is None:
        raise CodecError(
            f"Expected a dtype code in 1..{max(DTYPE_CODES)} (+{BIG_ENDIAN} for big-endian "
            f"multi-byte types). Got {code}."
        )
    off = HEADER_PREFIX.size
    got_shape = tuple(int(s) for s in struct.unpack_from(f"<{ndim}I", data, off))
    off += 4 * ndim
    values = tuple(int(v) for v in fields.unpack_from(data, off))
    off += fields.size
    sizes = tuple(int(s) for s in struct.unpack_from(f"<{n_sections}Q", data, off))
    check_declared(got_shape, got_dtype, shape, dtype)
    header = StreamHeader(kind, got_dtype, got_shape, mode, values, sizes, header_size)
    if header_size + sum(sizes) != n:
        raise CodecError(
            f"Expected a {codec_id} stream of {header_size + sum(sizes)} bytes. "
            f"Got {n} bytes ({'truncated' if n < header_size + sum(sizes) else 'trailing data'})."
        )
    return header


def check_declared(
    got_shape: tuple[int, ...],
    got_dtype: np.dtype[Any],
    shape: Sequence[int] | None,
    dtype: np.dtype[Any] | type | str | None,
) -> int:
    """Check a stream header's shape and dtype against the caller's (when given) and the
    decoded size against what can be allocated; the decoded size in bytes."""
    if shape is not None and tuple(int(s) for s in shape) != got_shape:
        raise CodecError(f"Expected shape {tuple(shape)}. Got {got_shape} in the stream header.")
    if dtype is not None and np.dtype(dtype) != got_dtype:
        raise CodecError(f"Expected dtype {np.dtype(dtype)}. Got {got_dtype} in the stream header.")
    nbytes = math.prod(got_shape) * got_dtype.itemsize
    if nbytes >= 1 << 62:
        raise CodecError(f"Expected a shape numpy can allocate. Got {got_shape}.")
    if shape is None and nbytes > MAX_DECODED_NBYTES:
        raise CodecError(
            f"Expected at most {MAX_DECODED_NBYTES} decoded bytes without an explicit shape=. "
            f"Got a stream declaring {got_shape} ({nbytes} bytes)."
        )
    return nbytes


@contextmanager
def memory_refusal(shape: tuple[int, ...], dtype: np.dtype[Any], codec_id: str) -> Iterator[None]:
    """Turn running out of memory while decoding into a CodecError (a MedmaskError)."""
    try:
        yield
    except MemoryError:
        nbytes = math.prod(shape) * dtype.itemsize
        raise CodecError(
            f"Expected memory to decode a {codec_id} stream of shape {shape} ({nbytes} bytes "
            "and at most 3x that in sections). Got out of memory."
        ) from None


_local = threading.local()  # zstd contexts are not thread-safe: one set per thread


def zstd_compressor(level: int, *, checksum: bool = True) -> zstd.ZstdCompressor:
    """This thread's zstd compressor for ``level`` (frames with content size; a frame
    checksum unless ``checksum=False``)."""
    cache: dict[tuple[int, bool], zstd.ZstdCompressor] | None = getattr(_local, "cctx", None)
    if cache is None:
        cache = _local.cctx = {}
    cctx = cache.get((level, checksum))
    if cctx is None:
        cctx = cache[level, checksum] = zstd.ZstdCompressor(
            level=level, write_checksum=checksum, write_content_size=True
        )
    return cctx


def zstd_decompressor() -> zstd.ZstdDecompressor:
    """This thread's zstd decompressor."""
    dctx: zstd.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstd.ZstdDecompressor()
    return dctx


def compress(data: bytes | memoryview | np.ndarray, level: int) -> bytes:
    """One zstd frame with content size and checksum."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).data.cast("B")
    out: bytes = zstd_compressor(level).compress(data)
    return out


def frame_size(frame: memoryview, *, checksum: bool = True) -> int:
    """Compressed size of the zstd frame at the start of ``frame`` (walks block headers; the
    4-byte content checksum counts when ``checksum``)."""
    n = len(frame)
    off = int(zstd.frame_header_size(frame))
    while True:
        if off + 3 > n:
            raise CodecError("Expected a complete zstd block header. Got end of section.")
        bh = frame[off] | (frame[off + 1] << 8) | (frame[off + 2] << 16)
        off += 3
        last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
        if btype == 3:
            raise CodecError("Expected a zstd block type 0..2. Got reserved type 3.")
        off += 1 if btype == 1 else bsize
        if last:
            return off + 4 if checksum else off


def decompress(frame: memoryview, expected: int, what: str) -> bytes:
    """Decompress one checksummed zstd frame that must hold exactly ``expected`` bytes.

    The frame's declared content size is checked before any allocation, so a hostile frame
    cannot make us allocate more than ``expected`` bytes.
    """
    try:
        params = zstd.get_frame_parameters(frame)
        if params.content_size != expected:
            raise CodecError(
                f"Expected the {what} section to decode to {expected} bytes. "
                f"Got a frame declaring {params.content_size}."
            )
        if not params.has_checksum:
            raise CodecError(f"Expected a checksummed zstd frame in the {what} section. Got none.")
        if frame_size(frame) != len(frame):
            raise CodecError(
                f"Expected the {what} section to be exactly one zstd frame of {len(frame)} bytes. "
                "Got a frame of another size."
            )
        out: bytes = zstd_decompressor().decompress(frame, max_output_size=expected)
    except zstd.ZstdError as exc:
        raise CodecError(f"Expected a valid zstd frame in the {what} section. Got: {exc}.") from exc
    if len(out) != expected:
        raise CodecError(
            f"Expected {expected} bytes from the {what} section. Got {len(out)} bytes."
        )
    return out
