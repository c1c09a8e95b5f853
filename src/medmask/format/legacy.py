"""Read files written by medmask 0.1 (``.msk`` and ``.mska``, last release 0.1.3); bytes only.

medmask 0.1 files have no checksums; medmask reads them here and never writes them.

Layout of a 0.1 ``.msk`` (all header integers little-endian)::

    0   4s  magic b"MSK1"
    4   B   major version (1)       5   B   minor version (0)
    6   B   codec id (0 = zstd, the only codec 0.1 had)
    7   Q   space_offset            15  Q   space_length
    23  Q   mapping_offset          31  Q   mapping_length
    39  Q   data_offset             47  Q   data_length
    55  7x  reserved                62      end of header (0.1.3's comment says 64: wrong)

followed by the space JSON, the mapping JSON (``{name: value}``) and the data blob, each at
its offset. A 0.1 ``.mska`` has a 90-byte header (0.1.3's comment says 100: wrong)::

    0   4s  magic b"MSKA"           4   B   major (1)   5   B   minor (0)   6   B   codec (0)
    7   Q   space_offset            15  Q   space_length
    23  Q   index_offset            31  Q   index_length (a capacity: 4000, doubled as needed)
    39  Q   data_offset             47  Q   data_length
    55  Q   mask_count              63  27x reserved

then one archive-wide space JSON, the index (JSON list of ``{"name", "offset", "length",
"mapping"}``, absolute offsets, padded with NUL bytes to ``index_length``) and one data blob
per member. 0.1.3 reads neither ``data_offset``/``data_length`` nor ``mask_count``; nor does
this reader. Its writer checks the index capacity against the existing entries plus 200 bytes,
so a larger new entry (a mapping of a hundred labels) runs past the capacity over the first
blob; 0.1.3 cannot read such an archive, and this reader refuses it saying so. A data blob
(both formats) is::

    B flag (1 = bool array bit-packed with np.packbits, 0 = raw values)
    B n, then n bytes: str(array.dtype) ("bool", "uint8", "int64", "float64", ">u2", ...)
    B ndim (3), then ndim int64: the array shape
    one zstd frame (level 3, content size, no checksum): the packed bits or the raw C-order
    values; 0.1.3 ignores bytes after the frame, and so does this reader.

Axes: 0.1.3 kept the array in (z, y, x) order with a ``spacetransformer.Space`` in the same
axis order (``space.shape == array.shape``), and stored the space reversed to (x, y, z) order
(``Space.reverse_axis_order()``: shape and spacing reversed, ``x_orientation`` and
``z_orientation`` swapped, origin unchanged); its reader reversed it back. This is the current
medmask convention too, so the reader returns exactly the array 0.1.3 loads (same shape and
values) with the Space 0.1.3 loads. An archive with ``space_offset`` 0 (0.1.3 never wrote
one) gives each member 0.1.3's default ``Space(shape=array.shape)``.

Byte order: 0.1 wrote the shape and the values of dtypes named without a byte order ("uint16",
"int64"...) in the writer's native order and did not record it. This reader assumes a
little-endian writer (x86 and ARM); a dtype string with an explicit order (">u2") is honoured.
A shape that only matches the space when byte-swapped is reported as a big-endian file.

Dtypes: bool, uint8, uint16 and uint32 arrays are returned as stored (in native byte order).
0.1 never checked the dtype, so it also wrote uint64, int8-int64 and float16-float64 arrays
(a float array from ``nibabel.get_fdata()``, say): these are converted to the smallest of
uint8, uint16, uint32 that holds the largest value of the array and of the mapping, provided
every value is a whole number in [0, 2**32 - 1]; otherwise the file is refused with a
:class:`~medmask.errors.FormatError`. The returned array is always C-contiguous; like 0.1.3's, a
bool/uint8/uint16/uint32 array stored in native order is a read-only view of the decompressed
bytes (copy it to modify it).

Mappings are returned as 0.1.3 loads them (JSON order; a duplicated key keeps its last value)
but must be valid today: unique non-empty names, unique int values in [0, 2**32 - 1]. Like
0.1.3, the reader does not check that the array's values are in the mapping.

Hostile input: every problem raises :class:`~medmask.errors.TruncatedFileError`,
:class:`~medmask.errors.FormatError`, :class:`~medmask.errors.UnsupportedVersionError` or
:class:`~medmask.errors.AllocationLimitError` (all ``ValueError``) with a message starting with
``name``. Each mask is checked against ``max_voxels``/``max_bytes`` (see
:func:`medmask.config.max_voxels_limit`) and each zstd frame's declared size against
the shape and against what its bytes can hold (zstd emits at most 128 KiB per 4-byte block)
before anything is decompressed; JSON goes through :func:`medmask._json.loads_limited`.
Archive blobs may not overlap each other or the header, space and index.

Archives are read in two steps, so that opening one decodes nothing:
:func:`read_legacy_mska_directory` checks the header, space, index and every member's data
header (dtype, shape, limits, zstd frame header); :func:`read_legacy_member` then decodes one
member. :func:`read_legacy_mska` does both for every member.
"""

from __future__ import annotations

import itertools
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard
from spacetransformer import Space

from .._json import loads_limited
from .._stack import user_stacklevel
from ..dtypes import bit_depth_of_name, dtype_for_bit_depth, smallest_bit_depth
from ..errors import (
    AllocationLimitError,
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from ..mapping import MAX_LABEL, LabelMapping
from ..mask import SegmentationMask
from ..values import label_counts
from .container import MAX_METADATA_SIZE
from .descriptor import space_from_json
from .encoding import MAX_VOXELS_PER_BYTE, check_size_limits
from .sniff import (
    LEGACY_MSK_MAGIC,
    LEGACY_MSKA_MAGIC,
    MAGIC_MSK,
    MAGIC_MSKA,
    describe_magic,
    legacy_kind,
)

__all__ = [
    "LEGACY_MSKA_MAGIC",
    "LEGACY_MSK_MAGIC",
    "LegacyArchive",
    "LegacyMask",
    "LegacyMember",
    "LegacyWarning",
    "legacy_kind",
    "read_legacy_member",
    "read_legacy_msk",
    "read_legacy_mska",
    "read_legacy_mska_directory",
]

_MSK_HEADER = struct.Struct("<4sBBB6Q7x")  # 62 bytes
_MSKA_HEADER = struct.Struct("<4sBBB7Q27x")  # 90 bytes
_VERSION = (1, 0)
_CODEC_ZSTD = 0
_SHAPE = struct.Struct("<3q")
_SPACE_KEYS = ("shape", "origin", "spacing", "x_orientation", "y_orientation", "z_orientation")
_SPACE_DEFAULTS: dict[str, list[float]] = {
    "origin": [0.0, 0.0, 0.0],
    "spacing": [1.0, 1.0, 1.0],
    "x_orientation": [1.0, 0.0, 0.0],
    "y_orientation": [0.0, 1.0, 0.0],
    "z_orientation": [0.0, 0.0, 1.0],
}
_STORAGE_KINDS = {("b", 1), ("u", 1), ("u", 2), ("u", 4)}
# A zstd block takes at least 4 bytes (3-byte header, 1 RLE byte) and yields at most 128 KiB.
_ZSTD_BLOCK_MIN = 4
_ZSTD_BLOCK_MAX = 128 << 10


def _dtype_table() -> dict[str, np.dtype[Any]]:
    """``str(dtype)`` as 0.1 wrote it (little-endian writer assumed) -> dtype."""
    table: dict[str, np.dtype[Any]] = {
        "bool": np.dtype("|b1"),
        "|b1": np.dtype("|b1"),
    }
    for code in ("u1", "i1"):
        table[np.dtype(code).name] = table["|" + code] = np.dtype("|" + code)
    for code in ("u2", "u4", "u8", "i2", "i4", "i8", "f2", "f4", "f8"):
        table[np.dtype(code).name] = table["<" + code] = np.dtype("<" + code)
        table[">" + code] = np.dtype(">" + code)
    return table


_DTYPES = _dtype_table()


@dataclass(frozen=True)
class LegacyMask:
    """One mask read from a medmask 0.1 file.

    Attributes
    ----------
    array
        C-contiguous (z, y, x) array: bool, uint8, uint16 or uint32.
    mapping
        ``{name: value}`` in file order.
    space
        Space in the array's (z, y, x) axis order; ``space.shape == array.shape``.
    """

    array: npt.NDArray[Any]
    mapping: dict[str, int]
    space: Space

    def to_mask(self, name: str) -> SegmentationMask:
        """The :class:`SegmentationMask`, in the bit depth of the array's dtype (or the one
        the mapping's largest value needs, when larger: 0.1 allowed a bool array named
        ``{"x": 7}``, and no label value is dropped).

        0.1 never checked that the array's values have names: unnamed values (reported with
        a :class:`LegacyWarning`) get ``label_<value>``, so no voxel is lost.
        """
        mapping = dict(self.mapping)
        present = label_counts(self.array)
        named = set(mapping.values())
        unnamed = sorted(v for v in present if v and v not in named)
        if unnamed:
            shown = ", ".join(str(v) for v in unnamed[:10]) + (" ..." if len(unnamed) > 10 else "")
            warnings.warn(
                f"{name}: values {shown} have no name in this medmask 0.1 file; "
                "named label_<value>.",
                LegacyWarning,
                stacklevel=user_stacklevel(),
            )
            taken = set(mapping)
            for value in unnamed:
                label = f"label_{value}"
                while label in taken:
                    label += "_"
                mapping[label] = value
                taken.add(label)
        top = max(mapping.values(), default=0)
        stored = bit_depth_of_name(self.array.dtype.name) or 1  # always one of the four
        depth = max(stored, smallest_bit_depth(top) if top > 1 else 1)
        array = self.array.astype(dtype_for_bit_depth(depth), copy=False)
        try:
            return SegmentationMask(array, LabelMapping(mapping), self.space, bit_depth=depth)
        except (InvalidTypeError, InvalidValueError) as exc:
            raise FormatError(f"{name}: {exc}") from None


class LegacyWarning(UserWarning):
    """Something in a medmask 0.1 file that 0.1.3 accepted and medmask repairs on read."""


def read_legacy_msk(
    data: bytes | bytearray | memoryview,
    *,
    name: str,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> LegacyMask:
    """Parse a medmask 0.1 ``.msk`` file.

    Parameters
    ----------
    data
        The whole file.
    name
        File name for error messages.
    max_voxels, max_bytes
        Limits on the decoded mask (default: ``MEDMASK_MAX_VOXELS`` / ``MEDMASK_MAX_BYTES``,
        else the library defaults).

    Returns
    -------
    LegacyMask
        The array, mapping and space medmask 0.1.3 loads (array dtype: see the module notes).
    """
    view = memoryview(data).cast("B")
    fields = _parse_header(view, _MSK_HEADER, LEGACY_MSK_MAGIC, name)
    space_off, space_len, map_off, map_len, data_off, data_len = fields
    header = _MSK_HEADER.size
    space_raw = _section(view, space_off, space_len, "space JSON", name, header, is_json=True)
    map_raw = _section(view, map_off, map_len, "mapping JSON", name, header, is_json=True)
    blob = _section(view, data_off, data_len, "mask data", name, header)
    space = _parse_space(space_raw, name)
    mapping = _parse_mapping(_load_json(map_raw, "mapping", name), name, "")
    array = _decode_blob(
        blob,
        name=name,
        where="",
        expected_shape=tuple(int(s) for s in space.shape),
        mapping=mapping,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
    )
    return LegacyMask(array, mapping, space)


@dataclass(frozen=True)
class LegacyMember:
    """One member of a medmask 0.1 archive as its index entry and data header declare it.

    Attributes
    ----------
    name
        Member name.
    offset, length
        The member's data blob in the file.
    mapping
        ``{name: value}`` in file order.
    shape, dtype
        The stored array's (z, y, x) shape and dtype (before conversion to a storage dtype).
    """

    name: str
    offset: int
    length: int
    mapping: dict[str, int]
    shape: tuple[int, int, int]
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class LegacyArchive:
    """The directory of a medmask 0.1 archive: its space and members, nothing decoded.

    Attributes
    ----------
    space
        The archive's space in (z, y, x) order, or None when the file stores none (each
        member then gets 0.1.3's default ``Space(shape=array.shape)``).
    members
        Member name -> :class:`LegacyMember`, in index order.
    """

    space: Space | None
    members: dict[str, LegacyMember]

    def member_space(self, member: str) -> Space:
        """The space member ``member`` is loaded with (as 0.1.3 loads it)."""
        if self.space is not None:
            return self.space
        return Space(shape=self.members[member].shape)

    def shared_space(self, name: str) -> Space | None:
        """The one space of all members, as a current archive holds them (None without
        members); :class:`FormatError` naming ``name`` when the file stores no space and the
        members differ in shape."""
        if self.space is not None or not self.members:
            return self.space
        shapes = sorted({m.shape for m in self.members.values()})
        if len(shapes) > 1:
            raise FormatError(
                f"{name}: the archive stores no space and its members differ in shape "
                f"({shapes[0]}, {shapes[1]}); expected members that share one space."
            )
        return Space(shape=shapes[0])


def read_legacy_mska_directory(
    data: bytes | bytearray | memoryview,
    *,
    name: str,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> LegacyArchive:
    """Parse a medmask 0.1 ``.mska`` archive's header, space, index and member data headers.

    Nothing is decompressed: each member's declared shape and dtype are checked against the
    space, the limits and its zstd frame header, so a member that opens here decodes within
    the limits (or its frame is found damaged) in :func:`read_legacy_member`.

    Parameters
    ----------
    data
        The whole file.
    name
        File name for error messages.
    max_voxels, max_bytes
        Limits on each decoded member (see :func:`read_legacy_msk`).

    Returns
    -------
    LegacyArchive
        The space and the members, in the archive's index order.
    """
    view = memoryview(data).cast("B")
    fields = _parse_header(view, _MSKA_HEADER, LEGACY_MSKA_MAGIC, name)
    space_off, space_len, index_off, index_len = fields[:4]
    header = _MSKA_HEADER.size
    payload_start = header
    space: Space | None = None
    if space_off:  # 0.1.3 leaves the space undefined for 0 (its writer never does that)
        raw = _section(view, space_off, space_len, "space JSON", name, header, is_json=True)
        space = _parse_space(raw, name)
        payload_start = max(payload_start, space_off + space_len)
    entries: list[Any] = []
    if index_len:
        raw = _section(view, index_off, index_len, "index", name, header, is_json=True)
        payload_start = max(payload_start, index_off + index_len)
        text = bytes(raw).rstrip(b"\0")
        try:
            entries = _load_json(text, "index", name) if text else []
        except FormatError as exc:
            if len(text) < index_len:
                raise
            raise FormatError(
                f"{exc}. The index fills its whole {index_len}-byte capacity: medmask 0.1.3 "
                "wrote past it (an entry larger than the room it reserved) and overwrote mask "
                "data; 0.1.3 cannot read this archive either."
            ) from None
        if not isinstance(entries, list):
            raise FormatError(
                f"{name}: the index must be a JSON list, got {type(entries).__name__}."
            )
    members: dict[str, LegacyMember] = {}
    expected_shape = None if space is None else tuple(int(s) for s in space.shape)
    for member, (offset, length, mapping) in _parse_entries(
        entries, name, payload_start, len(view)
    ).items():
        blob = _parse_blob(
            view[offset : offset + length],
            name=name,
            where=f"member {member!r}: ",
            expected_shape=expected_shape,
            max_voxels=max_voxels,
            max_bytes=max_bytes,
        )
        members[member] = LegacyMember(member, offset, length, mapping, blob.shape, blob.dtype)
    return LegacyArchive(space, members)


def read_legacy_member(
    data: bytes | bytearray | memoryview,
    archive: LegacyArchive,
    member: str,
    *,
    name: str,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> LegacyMask:
    """Decode one member of a medmask 0.1 archive read by :func:`read_legacy_mska_directory`.

    Parameters
    ----------
    data
        The whole file (the same bytes the directory was read from).
    archive
        The archive's directory.
    member
        Member name (a key of ``archive.members``).
    name
        File name for error messages.
    max_voxels, max_bytes
        Limits on the decoded member, checked again before decompressing.

    Returns
    -------
    LegacyMask
        The array, mapping and space medmask 0.1.3 loads for the member.
    """
    entry = archive.members[member]
    view = memoryview(data).cast("B")
    array = _decode_blob(
        view[entry.offset : entry.offset + entry.length],
        name=name,
        where=f"member {member!r}: ",
        expected_shape=entry.shape,
        mapping=entry.mapping,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
    )
    return LegacyMask(array, entry.mapping, archive.member_space(member))


def read_legacy_mska(
    data: bytes | bytearray | memoryview,
    *,
    name: str,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> dict[str, LegacyMask]:
    """Parse a medmask 0.1 ``.mska`` archive and decode every member.

    Parameters
    ----------
    data
        The whole file.
    name
        File name for error messages.
    max_voxels, max_bytes
        Limits on each decoded member (see :func:`read_legacy_msk`).

    Returns
    -------
    dict of str to LegacyMask
        Member name -> mask, in the archive's index order (all members share one space).
    """
    archive = read_legacy_mska_directory(
        data, name=name, max_voxels=max_voxels, max_bytes=max_bytes
    )
    return {
        member: read_legacy_member(
            data, archive, member, name=name, max_voxels=max_voxels, max_bytes=max_bytes
        )
        for member in archive.members
    }


# --- header and sections ---------------------------------------------------------------------


def _parse_header(
    view: memoryview, layout: struct.Struct, magic: bytes, name: str
) -> tuple[int, ...]:
    """Check magic, size, version and codec; return the header's integer fields."""
    kind = "medmask 0.1 .msk file" if magic == LEGACY_MSK_MAGIC else "medmask 0.1 .mska archive"
    found = bytes(view[:8])
    if found[:4] != magic:
        if len(found) < 4 and magic.startswith(found):
            raise TruncatedFileError(f"{name}: file is {len(view)} bytes, too short for a {kind}.")
        other = legacy_kind(found)
        what = f"a medmask 0.1 .{other} file" if other is not None else describe_magic(found)
        if found in (MAGIC_MSK, MAGIC_MSKA):
            what += " (the current format)"
        raise FormatError(f"{name}: not a {kind}: starts with {what}.")
    if len(view) < layout.size:
        raise TruncatedFileError(
            f"{name}: file ends inside the {layout.size}-byte {kind} header ({len(view)} bytes)."
        )
    _, major, minor, codec, *fields = layout.unpack_from(view, 0)
    if (major, minor) != _VERSION:
        raise UnsupportedVersionError(
            f"{name}: {kind} header version {major}.{minor} is not supported; expected 1.0."
        )
    if codec != _CODEC_ZSTD:
        raise UnsupportedVersionError(
            f"{name}: codec id {codec} is not supported; medmask 0.1 wrote only zstd (id 0)."
        )
    return tuple(int(f) for f in fields)


def _section(
    view: memoryview,
    offset: int,
    length: int,
    what: str,
    name: str,
    header: int,
    *,
    is_json: bool = False,
) -> memoryview:
    """The bytes of a section after checking it lies in the file, past the header."""
    if offset < header:
        raise FormatError(
            f"{name}: the {what} offset {offset} points into the {header}-byte header."
        )
    if is_json and length > MAX_METADATA_SIZE:
        raise FormatError(
            f"{name}: the {what} declares {length:,} bytes, above the "
            f"{MAX_METADATA_SIZE:,}-byte limit; the file is corrupted or hostile."
        )
    if offset + length > len(view):
        raise TruncatedFileError(
            f"{name}: file ends inside the {what} (expected {length} bytes at offset {offset}, "
            f"the file has {len(view)})."
        )
    return view[offset : offset + length]


def _load_json(raw: bytes | memoryview, what: str, name: str) -> Any:
    return loads_limited(
        raw,
        FormatError,
        f"{name}: the {what} is not valid UTF-8 JSON: ",
        f"{name}: the {what} JSON is refused (corrupted or hostile): it has ",
    )


def _parse_space(raw: memoryview, name: str) -> Space:
    """The stored (x, y, z) space JSON as a Space in (z, y, x) order, as 0.1.3 loads it."""
    obj = _load_json(raw, "space", name)
    if not isinstance(obj, dict):
        raise FormatError(f"{name}: the space must be a JSON object, got {type(obj).__name__}.")
    unknown = sorted(set(obj) - set(_SPACE_KEYS))
    if unknown:
        raise FormatError(f"{name}: the space has unknown keys {unknown!r:.100}.")
    if "shape" not in obj:
        raise FormatError(f"{name}: the space has no 'shape'.")
    with np.errstate(all="ignore"):  # huge vectors overflow in spacetransformer's checks
        stored = space_from_json({**_SPACE_DEFAULTS, **obj}, name=name)
        try:
            space: Space = stored.reverse_axis_order()
        except Exception as exc:  # spacetransformer raises its own ValidationError types
            raise FormatError(f"{name}: invalid space: {exc}") from None
    return space


def _parse_mapping(obj: object, name: str, where: str) -> dict[str, int]:
    """A ``{name: value}`` object, valid as a current :class:`LabelMapping`."""
    if not isinstance(obj, dict):
        raise FormatError(
            f"{name}: {where}the label mapping must be a JSON object, got {type(obj).__name__}."
        )
    try:
        LabelMapping(obj)
    except (InvalidTypeError, InvalidValueError) as exc:
        raise FormatError(f"{name}: {where}invalid label mapping: {exc}") from None
    return {str(k): int(v) for k, v in obj.items()}


def _parse_entries(
    entries: list[Any], name: str, payload_start: int, size: int
) -> dict[str, tuple[int, int, dict[str, int]]]:
    """Validate index entries: member name -> (offset, length, mapping), in index order."""
    out: dict[str, tuple[int, int, dict[str, int]]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise FormatError(f"{name}: index entry {i} must be an object, got {entry!r:.80}.")
        member = entry.get("name")
        if not isinstance(member, str):
            raise FormatError(f"{name}: index entry {i} has no string 'name', got {member!r:.80}.")
        if member in out:
            raise FormatError(f"{name}: the index lists member {member!r} twice.")
        where = f"member {member!r}: "
        offset = _index_int(entry.get("offset"), "offset", name, where)
        length = _index_int(entry.get("length"), "length", name, where)
        if offset < payload_start:
            raise FormatError(
                f"{name}: {where}data at offset {offset} overlaps the header, space or index "
                f"(which end at {payload_start})."
            )
        if offset + length > size:
            raise TruncatedFileError(
                f"{name}: {where}file ends inside the mask data (expected {length} bytes at "
                f"offset {offset}, the file has {size})."
            )
        out[member] = (offset, length, _parse_mapping(entry.get("mapping"), name, where))
    ranges = sorted((offset, offset + length) for offset, length, _ in out.values())
    for (_, end), (start, _) in itertools.pairwise(ranges):
        if start < end:
            raise FormatError(f"{name}: two members' data overlap (at offset {start}).")
    return out


def _index_int(value: object, key: str, name: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"{name}: {where}expected '{key}' as an int >= 0, got {value!r:.80}.")
    return value


# --- data blobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    """A data blob's header, checked: how to decompress and view its frame."""

    packed: bool
    dtype: np.dtype[Any]
    shape: tuple[int, int, int]
    frame: memoryview
    expected: int  # bytes the frame must hold


def _parse_blob(
    blob: memoryview,
    *,
    name: str,
    where: str,
    expected_shape: tuple[int, ...] | None,
    max_voxels: int | None,
    max_bytes: int | None,
) -> _Blob:
    """Parse a 0.1 data blob's header and check it against the space, the limits and its zstd
    frame header; nothing is decompressed."""
    n = len(blob)
    if n < 2 or n < 3 + blob[1]:
        raise TruncatedFileError(f"{name}: {where}the mask data ends inside its dtype ({n} bytes).")
    flag, dtype_len = blob[0], blob[1]
    dtype_text = bytes(blob[2 : 2 + dtype_len]).decode("ascii", errors="replace")
    ndim = blob[2 + dtype_len]
    pos = 3 + dtype_len
    if ndim != 3:
        raise FormatError(f"{name}: {where}expected a 3-D mask, the data declares {ndim} dims.")
    if n < pos + _SHAPE.size:
        raise TruncatedFileError(f"{name}: {where}the mask data ends inside its shape ({n} bytes).")
    z, y, x = (int(s) for s in _SHAPE.unpack_from(blob, pos))
    shape = (z, y, x)
    pos += _SHAPE.size
    dtype = _DTYPES.get(dtype_text)
    if dtype is None:
        raise FormatError(
            f"{name}: {where}unsupported dtype {dtype_text!r:.40}; expected a bool, integer "
            "or float dtype name."
        )
    if flag not in (0, 1) or (flag == 1) != (dtype.kind == "b"):
        raise FormatError(
            f"{name}: {where}packing flag {flag} does not match dtype {dtype_text!r} (0.1 "
            "bit-packed exactly the bool arrays)."
        )
    if expected_shape is not None and shape != expected_shape:
        swapped = tuple(int(s) for s in struct.unpack_from(">3q", blob, pos - _SHAPE.size))
        hint = (
            "; the file was written on a big-endian machine, which this reader does not support"
            if swapped == expected_shape
            else ""
        )
        raise FormatError(
            f"{name}: {where}the data shape {shape} differs from the space shape "
            f"{expected_shape}{hint}."
        )
    if min(shape) < 1:
        raise FormatError(f"{name}: {where}invalid shape {shape}: every axis must be >= 1.")
    check_size_limits(
        shape,
        dtype,
        name=f"{name}: {where[:-2]}" if where else name,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
    )
    voxels = math.prod(shape)
    frame = blob[pos:]
    if voxels > len(frame) * MAX_VOXELS_PER_BYTE:
        raise AllocationLimitError(
            f"{name}: {where}{len(frame)} compressed bytes claim {voxels:,} voxels; the file is "
            "corrupted or hostile."
        )
    packed = flag == 1
    expected = -(-voxels // 8) if packed else voxels * dtype.itemsize
    _check_frame(frame, expected, name, where)
    return _Blob(packed, dtype, shape, frame, expected)


def _decode_blob(
    blob: memoryview,
    *,
    name: str,
    where: str,
    expected_shape: tuple[int, ...] | None,
    mapping: dict[str, int],
    max_voxels: int | None,
    max_bytes: int | None,
) -> npt.NDArray[Any]:
    """Parse a 0.1 data blob, check it against the space and limits, decompress, convert."""
    parsed = _parse_blob(
        blob,
        name=name,
        where=where,
        expected_shape=expected_shape,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
    )
    raw = _decompress(parsed.frame, parsed.expected, name, where)
    shape = parsed.shape
    if parsed.packed:
        bits = np.unpackbits(raw, count=math.prod(shape)).view(np.bool_).reshape(shape)
        return np.ascontiguousarray(bits)
    return _to_storage(raw.view(parsed.dtype).reshape(shape), mapping, name, where)


def _check_frame(frame: memoryview, expected: int, name: str, where: str) -> None:
    """Check a zstd frame's header: it must declare exactly ``expected`` bytes, and its own
    length must be able to hold them (bytes after the frame are ignored, as 0.1.3 ignores
    them, so the bound uses the whole rest of the blob)."""
    if not len(frame):
        raise TruncatedFileError(f"{name}: {where}the mask data has no compressed frame.")
    try:
        declared = zstandard.get_frame_parameters(frame).content_size
    except zstandard.ZstdError as exc:
        raise FormatError(f"{name}: {where}the mask data is not a zstd frame: {exc}") from None
    if declared == zstandard.CONTENTSIZE_UNKNOWN:
        raise FormatError(
            f"{name}: {where}the zstd frame does not declare its size (0.1 always did)."
        )
    if declared != expected:
        raise FormatError(
            f"{name}: {where}the zstd frame declares {declared:,} bytes but the shape needs "
            f"{expected:,}."
        )
    most = len(frame) // _ZSTD_BLOCK_MIN * _ZSTD_BLOCK_MAX
    if expected > most:
        raise FormatError(
            f"{name}: {where}a {len(frame):,}-byte zstd frame cannot hold the {expected:,} "
            f"bytes it declares (at most {most:,}); the file is corrupted or hostile."
        )


def _decompress(frame: memoryview, expected: int, name: str, where: str) -> npt.NDArray[Any]:
    """Decompress one zstd frame, checked by :func:`_check_frame`, that must hold exactly
    ``expected`` bytes (read-only uint8); bytes after the frame are ignored, as 0.1.3's
    ``ZstdDecompressor().decompress`` ignores them."""
    try:
        raw: bytes = zstandard.ZstdDecompressor().decompress(frame, max_output_size=expected)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{name}: {where}the zstd frame cannot be decompressed: {exc}") from None
    if len(raw) != expected:
        raise FormatError(
            f"{name}: {where}the zstd frame holds {len(raw):,} bytes, not the {expected:,} it "
            "declares."
        )
    return np.frombuffer(raw, dtype=np.uint8)


def _to_storage(
    array: npt.NDArray[Any], mapping: dict[str, int], name: str, where: str
) -> npt.NDArray[Any]:
    """``array`` in a storage dtype (native bool/uint8/uint16/uint32), values unchanged."""
    dt = array.dtype
    if (dt.kind, dt.itemsize) in _STORAGE_KINDS:
        if dt.isnative:
            return np.ascontiguousarray(array)
        return array.astype(dt.newbyteorder("="))
    if dt.kind == "f" and not np.array_equal(array, np.trunc(array)):  # NaN, inf, fractions
        raise FormatError(
            f"{name}: {where}the {dt} mask holds values that are not whole numbers; medmask "
            "stores integer labels."
        )
    low, high = array.min().item(), array.max().item()
    if low < 0 or high > MAX_LABEL:
        raise FormatError(
            f"{name}: {where}the {dt} mask holds values in [{low}, {high}]; medmask stores "
            f"labels in [0, {MAX_LABEL}]."
        )
    top = max([int(high), *mapping.values()])
    return array.astype(dtype_for_bit_depth(smallest_bit_depth(top)))
