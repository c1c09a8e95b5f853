"""Pieces shared by ``.msk`` and ``.mska``: the 64-byte header, metadata block, chunk index.

Bytes in, bytes out; see ``docs/format.md`` sections 1-3.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard

from .._json import loads_limited
from ..errors import (
    AllocationLimitError,
    ChecksumError,
    FormatError,
    InvalidValueError,
    LegacyFormatError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from .sniff import MAGIC_MSK, MAGIC_MSKA, describe_magic, legacy_kind

__all__ = [
    "FLAG_METADATA_ZSTD",
    "HEADER_SIZE",
    "INDEX_DTYPE",
    "INDEX_ENTRY_SIZE",
    "MAGIC_MSK",
    "MAGIC_MSKA",
    "MAJOR_VERSION",
    "MAX_METADATA_SIZE",
    "MINOR_VERSION",
    "Header",
    "check_stored_ranges",
    "crc32",
    "decode_metadata",
    "encode_metadata",
    "pack_index",
    "parse_index",
]

MAJOR_VERSION = 1
MINOR_VERSION = 0
HEADER_SIZE = 64
FLAG_METADATA_ZSTD = 1 << 0
KNOWN_REQUIRED_FLAGS = FLAG_METADATA_ZSTD
MAX_METADATA_SIZE = 64 << 20

_HEADER = struct.Struct("<8sHHIIQQIIQII")  # without the trailing header CRC
# Header fields in on-disk order (docs/format.md section 1).
_HEADER_FIELDS = (
    "magic",
    "major",
    "minor",
    "required_flags",
    "optional_flags",
    "generation",
    "metadata_offset",
    "metadata_length",
    "metadata_crc",
    "index_offset",
    "index_count",
    "index_crc",
)

INDEX_DTYPE = np.dtype([("offset", "<u8"), ("length", "<u8"), ("crc", "<u4"), ("reserved", "<u4")])
INDEX_ENTRY_SIZE = INDEX_DTYPE.itemsize


def crc32(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 (zlib) of ``data``."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed 64-byte header (docs/format.md section 1)."""

    magic: bytes
    metadata_offset: int
    metadata_length: int
    metadata_crc: int
    index_offset: int
    index_count: int
    index_crc: int
    required_flags: int = 0
    optional_flags: int = 0
    generation: int = 0
    major: int = MAJOR_VERSION
    minor: int = MINOR_VERSION

    def pack(self) -> bytes:
        """Return the 64 header bytes, CRC included."""
        body = _HEADER.pack(*(getattr(self, field) for field in _HEADER_FIELDS))
        return body + struct.pack("<I", crc32(body))

    @property
    def index_length(self) -> int:
        """Byte length of the chunk index."""
        return self.index_count * INDEX_ENTRY_SIZE

    @classmethod
    def parse(cls, data: bytes | memoryview, *, magic: bytes, name: str) -> Header:
        """Parse and validate a header; ``name`` is used in error messages."""
        kind = ".msk file" if magic == MAGIC_MSK else ".mska archive"
        if len(data) < len(magic) or bytes(data[: len(magic)]) != magic:
            found = bytes(data[: len(magic)])
            if len(data) < len(magic) and magic.startswith(found):
                raise TruncatedFileError(
                    f"{name}: file is {len(data)} bytes, too short for a {kind} header."
                )
            legacy = legacy_kind(found)
            if legacy is not None:
                reader = "medmask.load_mask" if legacy == "msk" else "MaskArchive(path, 'r')"
                error = LegacyFormatError(
                    f"{name}: a medmask 0.1 .{legacy} file, not a {kind} of the current format; "
                    f"{reader} reads it (read-only), `medmask convert OLD NEW` upgrades it."
                )
                error.kind = legacy
                raise error
            raise FormatError(f"{name}: not a {kind}: starts with {describe_magic(found)}.")
        if len(data) < HEADER_SIZE:
            raise TruncatedFileError(
                f"{name}: file ends inside the {HEADER_SIZE}-byte header ({len(data)} bytes)."
            )
        body = bytes(data[: HEADER_SIZE - 4])
        (stored_crc,) = struct.unpack_from("<I", data, HEADER_SIZE - 4)
        if crc32(body) != stored_crc:
            raise ChecksumError(f"{name}: header checksum mismatch; the file is corrupted.")
        header = cls(**dict(zip(_HEADER_FIELDS, _HEADER.unpack(body), strict=True)))
        if header.major != MAJOR_VERSION:
            raise UnsupportedVersionError(
                f"{name}: format version {header.major}.{header.minor} is not supported; "
                f"this reader knows version {MAJOR_VERSION}.x. Upgrade medmask."
            )
        unknown = header.required_flags & ~KNOWN_REQUIRED_FLAGS
        if unknown:
            raise UnsupportedVersionError(
                f"{name}: requires features this reader does not know (flags {unknown:#x}). "
                "Upgrade medmask."
            )
        first = HEADER_SIZE if magic == MAGIC_MSK else 2 * HEADER_SIZE  # .mska: two slots
        if header.metadata_offset < first or header.index_offset < first:
            raise FormatError(
                f"{name}: header points into itself (corrupted offsets): expected metadata "
                f"and index at byte {first} or later. "
                f"Got {header.metadata_offset} and {header.index_offset}."
            )
        if header.metadata_length > MAX_METADATA_SIZE:
            raise FormatError(
                f"{name}: metadata length {header.metadata_length} exceeds the "
                f"{MAX_METADATA_SIZE}-byte limit."
            )
        meta_end = header.metadata_offset + header.metadata_length
        index_end = header.index_offset + header.index_length
        overlap = header.metadata_offset < index_end and header.index_offset < meta_end
        if header.index_length and overlap:
            raise FormatError(
                f"{name}: header fields are impossible: expected metadata and chunk index in "
                f"separate bytes. Got metadata at {header.metadata_offset}-{meta_end} and "
                f"the index at {header.index_offset}-{index_end}."
            )
        return header


def encode_metadata(obj: dict[str, Any]) -> tuple[bytes, int]:
    """Return (stored bytes, required flags) for a metadata object; compress when it pays.

    The writer applies the reader's limits (size, JSON nesting and counts) first, so it never
    writes a file that :func:`decode_metadata` would refuse.
    """
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(
            f"Expected metadata (attributes) of JSON types with finite numbers. Got: {exc}."
        ) from None
    try:
        raw = text.encode()
    except UnicodeEncodeError as exc:  # lone surrogates in attribute strings
        raise InvalidValueError(f"Expected metadata text encodable as UTF-8. Got: {exc}.") from None
    if len(raw) > MAX_METADATA_SIZE:
        raise AllocationLimitError(
            f"Expected metadata of at most {MAX_METADATA_SIZE:,} bytes, the readers' limit. "
            f"Got {len(raw):,} bytes (are the attributes too large?)."
        )
    loads_limited(
        text,
        InvalidValueError,
        "Expected metadata (with attributes) that is valid JSON: ",
        "Expected metadata (with attributes) that readers accept; it has ",
    )
    if len(raw) > 2048:
        packed = zstandard.ZstdCompressor(level=9, write_content_size=True).compress(raw)
        if len(packed) < len(raw):
            return packed, FLAG_METADATA_ZSTD
    return raw, 0


def _verify_block(
    data: bytes | memoryview, length: int, offset: int, crc: int, what: str, name: str
) -> None:
    """Check a block read from ``offset`` has its declared length and CRC."""
    if len(data) != length:
        raise TruncatedFileError(
            f"{name}: file ends inside the {what} (expected {length} bytes at "
            f"offset {offset}, got {len(data)})."
        )
    if crc32(data) != crc:
        raise ChecksumError(f"{name}: {what} checksum mismatch; the file is corrupted.")


def _decompress_metadata(data: bytes, name: str) -> bytes:
    """Decompress the metadata frame without ever producing more than the size limit."""
    try:
        declared = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as exc:
        raise FormatError(
            f"{name}: compressed metadata cannot be decompressed (no zstd frame): {exc}"
        ) from None
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > MAX_METADATA_SIZE:
        raise AllocationLimitError(
            f"{name}: compressed metadata declares {declared:,} bytes, above the "
            f"{MAX_METADATA_SIZE:,}-byte limit; the file is corrupted or hostile."
        )
    dctx = zstandard.ZstdDecompressor()
    try:
        if declared != zstandard.CONTENTSIZE_UNKNOWN:
            # allow_extra_data=False: the block is exactly one frame (docs/format.md section 2)
            raw: bytes = dctx.decompress(data, max_output_size=declared, allow_extra_data=False)
        else:  # no declared size: stream in pieces and stop at the cap
            pieces, size = [], 0
            with dctx.stream_reader(data) as reader:
                while size <= MAX_METADATA_SIZE and (piece := reader.read(1 << 20)):
                    pieces.append(piece)
                    size += len(piece)
            raw = b"".join(pieces)
            if len(raw) <= MAX_METADATA_SIZE:  # the reader went on across frames: one only
                one = dctx.decompressobj(read_across_frames=False)
                one.decompress(data)  # at most len(raw) bytes: the first frame
                if not one.eof or one.unused_data:
                    raise FormatError(
                        f"{name}: expected compressed metadata of exactly one zstd frame. "
                        f"Got {'a truncated frame' if not one.eof else 'bytes after it'}."
                    )
    except zstandard.ZstdError as exc:
        raise FormatError(
            f"{name}: compressed metadata cannot be decompressed (expected exactly one zstd "
            f"frame): {exc}"
        ) from None
    if len(raw) > MAX_METADATA_SIZE:
        raise AllocationLimitError(
            f"{name}: compressed metadata holds more than the {MAX_METADATA_SIZE:,}-byte limit."
        )
    if declared != zstandard.CONTENTSIZE_UNKNOWN and len(raw) != declared:
        raise FormatError(
            f"{name}: compressed metadata declares {declared} bytes but holds {len(raw)}."
        )
    return raw


def decode_metadata(data: bytes | memoryview, header: Header, *, name: str) -> dict[str, Any]:
    """Verify, decompress and parse a metadata block (within the reader limits)."""
    h = header
    _verify_block(data, h.metadata_length, h.metadata_offset, h.metadata_crc, "metadata", name)
    raw: bytes = bytes(data)
    if header.required_flags & FLAG_METADATA_ZSTD:
        raw = _decompress_metadata(raw, name)
    obj = loads_limited(
        raw,
        FormatError,
        f"{name}: metadata is not valid UTF-8 JSON: ",
        f"{name}: metadata refused (corrupted or hostile): it has ",
        unique_keys=True,  # docs/format.md section 2
    )
    if not isinstance(obj, dict):
        raise FormatError(f"{name}: metadata must be a JSON object, got {type(obj).__name__}.")
    return obj


def pack_index(entries: npt.NDArray[Any]) -> bytes:
    """Return the bytes of a chunk index array (dtype :data:`INDEX_DTYPE`)."""
    return np.ascontiguousarray(entries, dtype=INDEX_DTYPE).tobytes()


def parse_index(data: bytes | memoryview, header: Header, *, name: str) -> npt.NDArray[Any]:
    """Verify and parse a chunk index into an array of :data:`INDEX_DTYPE`."""
    h = header
    _verify_block(data, h.index_length, h.index_offset, h.index_crc, "chunk index", name)
    entries = np.frombuffer(bytes(data), dtype=INDEX_DTYPE)
    # docs/format.md section 3: reserved 0, an empty entry all zero (refused, not ignored)
    bad = (entries["reserved"] != 0) | (
        (entries["length"] == 0) & ((entries["offset"] != 0) | (entries["crc"] != 0))
    )
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        offset, length, crc, reserved = (int(v) for v in entries[at].tolist())
        raise FormatError(
            f"{name}: chunk index entry {at} is invalid: expected reserved 0, and offset 0 "
            f"and CRC 0 when the length is 0. Got offset {offset}, length {length}, CRC "
            f"{crc:#010x}, reserved {reserved:#x}."
        )
    return entries


def check_stored_ranges(
    entries: npt.NDArray[Any], blocks: Sequence[tuple[int, int]], *, name: str
) -> None:
    """Refuse stored streams (length > 0) that overlap one another or one of ``blocks``
    (``(start, end)`` byte ranges, such as the metadata and index): docs/format.md section 6."""
    stored = entries[entries["length"] > 0]
    starts = stored["offset"].astype(np.uint64)
    ends = starts + stored["length"].astype(np.uint64)
    if np.any(ends < starts):
        raise FormatError(f"{name}: a chunk index entry points past the end of the file.")
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    if starts.size > 1 and np.any(starts[1:] < ends[:-1]):
        i = int(np.flatnonzero(starts[1:] < ends[:-1])[0])
        raise FormatError(
            f"{name}: expected chunk streams in separate bytes. Got two that overlap: "
            f"bytes {int(starts[i])}-{int(ends[i])} and {int(starts[i + 1])}-{int(ends[i + 1])}."
        )
    for lo, hi in blocks:
        if hi > lo and np.any((starts < np.uint64(hi)) & (ends > np.uint64(lo))):
            raise FormatError(
                f"{name}: expected chunk streams outside the header slots, metadata and chunk "
                f"index. Got one that overlaps bytes {lo}-{hi}."
            )
