"""The ``.mska`` layout (docs/format.md section 5): two header slots, directories, payload."""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from ..errors import ChecksumError, FormatError, TruncatedFileError
from .container import (
    HEADER_SIZE,
    INDEX_DTYPE,
    MAGIC_MSKA,
    Header,
    check_stored_ranges,
    crc32,
    decode_metadata,
    encode_metadata,
    pack_index,
    parse_index,
)
from .descriptor import MaskDescriptor, space_from_json, space_to_json

__all__ = [
    "SLOTS_SIZE",
    "ArchiveDirectory",
    "DamagedSlot",
    "Member",
    "damaged_slots",
    "directory_bytes",
    "member_name",
    "parse_directory",
    "repair_slot",
    "slot_header",
    "slot_is_intact",
    "valid_slots",
]

SLOTS_SIZE = 2 * HEADER_SIZE


@dataclass(frozen=True)
class Member:
    """One archive member: its descriptor and its chunk index entries (absolute offsets)."""

    name: str
    descriptor: MaskDescriptor
    index: npt.NDArray[Any]
    layer: bool = False

    @property
    def compressed_bytes(self) -> int:
        """Stored bytes of the member's chunks."""
        return int(self.index["length"].sum())


def member_name(file: str, member: Member | str) -> str:
    """How messages name a member: ``"file [member]"``, or the file for a ``.msk``."""
    name = member if isinstance(member, str) else member.name
    return f"{file} [{name}]" if name else file


@dataclass(frozen=True)
class ArchiveDirectory:
    """The archive's state: shared space and members, plus where the writer keeps directories."""

    space: Space | None
    members: tuple[Member, ...] = ()
    regions: tuple[tuple[int, int], ...] = ()
    created_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def member(self, name: str) -> Member | None:
        """The member called ``name``, or None."""
        for m in self.members:
            if m.name == name:
                return m
        return None


def directory_bytes(directory: ArchiveDirectory) -> tuple[bytes, int, bytes, int]:
    """Return (metadata bytes, required flags, index bytes, index entry count)."""
    members_json = []
    first = 0
    for m in directory.members:
        members_json.append(
            {
                "name": m.name,
                "mask": m.descriptor.to_json(include_space=False),
                "index": [first, len(m.index)],
                "layer": m.layer,
            }
        )
        first += len(m.index)
    obj: dict[str, Any] = {"format": "medmask.mska"}
    if directory.space is not None:
        obj["space"] = space_to_json(directory.space)
    obj["members"] = members_json
    obj["directory_regions"] = [list(r) for r in directory.regions]
    if directory.created_by:
        obj["created_by"] = directory.created_by
    meta, flags = encode_metadata(obj)
    entries = (
        np.concatenate([m.index for m in directory.members])
        if directory.members
        else np.zeros(0, dtype=INDEX_DTYPE)
    )
    return meta, flags, pack_index(entries), len(entries)


def slot_header(
    generation: int, meta_offset: int, meta: bytes, flags: int, index_offset: int, index: bytes
) -> Header:
    """Header slot for a directory written at the given offsets."""
    return Header(
        magic=MAGIC_MSKA,
        metadata_offset=meta_offset,
        metadata_length=len(meta),
        metadata_crc=crc32(meta),
        index_offset=index_offset,
        index_count=len(index) // INDEX_DTYPE.itemsize,
        index_crc=crc32(index),
        required_flags=flags,
        generation=generation,
    )


def slot_is_intact(chunk: bytes | memoryview) -> bool:
    """Magic right and header CRC valid: the slot was completely written (not torn)."""
    return (
        len(chunk) == HEADER_SIZE
        and bytes(chunk[: len(MAGIC_MSKA)]) == MAGIC_MSKA
        and crc32(chunk[: HEADER_SIZE - 4]) == struct.unpack_from("<I", chunk, HEADER_SIZE - 4)[0]
    )


_BODY_BITS = (HEADER_SIZE - 4) * 8


@functools.cache
def _syndromes() -> dict[int, int]:
    """``{CRC change: body bit}`` for each single-bit change of a slot's first 60 bytes.

    CRC-32 is affine, so flipping body bit ``i`` changes the CRC by a constant that does not
    depend on the other bits. Over 60 bytes the 480 constants are distinct and none has one
    bit set (CRC-32 has Hamming distance 4 at this length), so one bit flipped anywhere in a
    slot, its CRC included, is located without ambiguity (tested).
    """
    zero = crc32(bytes(HEADER_SIZE - 4))
    table = {}
    for bit in range(_BODY_BITS):
        body = bytearray(HEADER_SIZE - 4)
        body[bit // 8] ^= 1 << (bit % 8)
        table[crc32(body) ^ zero] = bit
    return table


def repair_slot(chunk: bytes | memoryview) -> tuple[bytes, int] | None:
    """The slot with one flipped bit flipped back, and that bit's position (0-511).

    None when ``chunk`` is intact, or is not one bit away from a slot whose CRC holds: a torn
    or overwritten slot, or damage in several bits.
    """
    if len(chunk) != HEADER_SIZE:
        return None
    body = bytearray(chunk[: HEADER_SIZE - 4])
    (stored,) = struct.unpack_from("<I", chunk, HEADER_SIZE - 4)
    syndrome = crc32(body) ^ stored
    if syndrome == 0:
        return None
    if syndrome & (syndrome - 1) == 0:  # one bit of the stored CRC itself
        bit = _BODY_BITS + syndrome.bit_length() - 1
        return bytes(body) + struct.pack("<I", crc32(body)), bit
    found = _syndromes().get(syndrome)
    if found is None:
        return None
    body[found // 8] ^= 1 << (found % 8)
    return bytes(body) + struct.pack("<I", stored), found


@dataclass(frozen=True)
class DamagedSlot:
    """A header slot that fails its checks but whose fields still parse.

    ``bit`` is the position of the one flipped bit that :func:`repair_slot` undid: the
    fields are then confirmed by the header CRC. None: the fields as written, which only
    the directory's own CRCs can confirm (the generation stays unconfirmed).
    """

    slot: int
    header: Header
    bit: int | None

    def describe(self) -> str:
        """What is wrong with the slot, for messages."""
        if self.bit is None:
            return (
                f"header slot {self.slot} fails its checksum in more than one bit (a torn "
                f"write or wider damage); as written it names generation "
                f"{self.header.generation}"
            )
        return (
            f"header slot {self.slot} is damaged (bit {self.bit % 8} of its byte "
            f"{self.bit // 8} is flipped; its CRC locates the bit): it holds generation "
            f"{self.header.generation}"
        )


def damaged_slots(data: bytes | memoryview, *, name: str) -> list[DamagedSlot]:
    """The slots that fail their checks (magic or CRC) but parse once repaired or as written.

    A slot one bit away from a valid slot is repaired (:func:`repair_slot`); otherwise its
    fields are taken as written when its magic is right. Nothing here is trusted beyond
    parsing (offsets inside the limits): the directory a slot points to must still verify.
    Newest first.
    """
    found = []
    for slot in range(2):
        chunk = bytes(data[slot * HEADER_SIZE : (slot + 1) * HEADER_SIZE])
        if len(chunk) != HEADER_SIZE or slot_is_intact(chunk):
            continue
        repaired = repair_slot(chunk)
        if repaired is not None:
            candidate, bit = repaired[0], repaired[1]
        else:
            body = chunk[: HEADER_SIZE - 4]
            candidate, bit = body + struct.pack("<I", crc32(body)), None
        try:
            header = Header.parse(candidate, magic=MAGIC_MSKA, name=name)
        except FormatError:
            continue
        found.append(DamagedSlot(slot, header, bit))
    return sorted(found, key=lambda d: d.header.generation, reverse=True)


def valid_slots(data: bytes | memoryview, *, name: str) -> list[tuple[int, Header]]:
    """Parse both header slots; return ``(slot, header)`` of the valid ones, newest first.

    A slot whose magic or CRC is wrong was torn by a crash (or never written) and is skipped.
    An intact slot the reader cannot use (unknown major version or required flag, impossible
    fields) is refused with its error when it is the newest: falling back to an older
    generation would hide a newer writer's data. Equal generations: slot 0 first.
    """
    if len(data) < HEADER_SIZE:
        # Let the single-header parser produce the precise error (magic, truncation).
        Header.parse(data, magic=MAGIC_MSKA, name=name)
    headers: list[tuple[int, Header]] = []
    refused: list[tuple[int, FormatError]] = []  # (generation, error) of intact, unusable slots
    errors: list[Exception] = []
    for slot in range(2):
        chunk = data[slot * HEADER_SIZE : (slot + 1) * HEADER_SIZE]
        try:
            headers.append((slot, Header.parse(chunk, magic=MAGIC_MSKA, name=name)))
        except FormatError as exc:
            errors.append(exc)
            if slot_is_intact(chunk):
                refused.append((struct.unpack_from("<Q", chunk, 20)[0], exc))
    headers.sort(key=lambda sh: sh[1].generation, reverse=True)
    if refused:
        generation, error = max(refused, key=lambda r: r[0])
        if not headers or generation >= headers[0][1].generation:
            raise error
    if not headers:
        first = errors[0]
        if isinstance(first, ChecksumError | TruncatedFileError):
            raise type(first)(f"{name}: no valid header slot ({first}).")
        raise first
    return headers


def parse_directory(
    header: Header, meta: bytes | memoryview, index: bytes | memoryview, *, name: str
) -> ArchiveDirectory:
    """Validate and parse the directory a header slot points to."""
    obj = decode_metadata(meta, header, name=name)
    entries = parse_index(index, header, name=name)
    space = space_from_json(obj["space"], name=name) if "space" in obj else None
    raw_members = obj.get("members")
    if not isinstance(raw_members, list):
        raise FormatError(f"{name}: invalid archive directory: 'members' must be a list.")
    members: list[Member] = []
    seen: set[str] = set()
    used = 0  # index entries covered by the members so far
    for item in raw_members:
        if not isinstance(item, dict):
            raise FormatError(f"{name}: invalid archive directory: member is not an object.")
        member_name = item.get("name")
        if not isinstance(member_name, str) or not member_name or member_name in seen:
            raise FormatError(
                f"{name}: invalid archive directory: member names must be unique non-empty "
                f"strings, got {member_name!r}."
            )
        seen.add(member_name)
        where = f"{name} [{member_name}]"
        mask = item.get("mask")
        if isinstance(mask, dict) and "space" in mask:  # members share the archive's space
            raise FormatError(f"{where}: expected a member mask without 'space'. Got one.")
        descriptor = MaskDescriptor.from_json(mask, name=where, space=space)
        span = item.get("index")
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in span)
            or span[0] + span[1] > len(entries)
        ):
            raise FormatError(f"{where}: invalid chunk index span {span!r}.")
        if span[0] != used:  # docs/format.md section 5: the spans tile the index in order
            raise FormatError(
                f"{where}: expected the chunk index span to start at entry {used}, where the "
                f"previous member's ends. Got {span!r}."
            )
        used += span[1]
        layer = item.get("layer", False)
        if not isinstance(layer, bool):
            raise FormatError(f"{where}: expected 'layer' true or false. Got {layer!r:.40}.")
        members.append(Member(member_name, descriptor, entries[span[0] : used], layer=layer))
    if used != len(entries):
        raise FormatError(
            f"{name}: invalid archive directory: expected the members' spans to cover the "
            f"{len(entries)} chunk index entries. Got {len(entries) - used} unused."
        )
    h = header
    check_stored_ranges(
        entries,
        [
            (0, SLOTS_SIZE),
            (h.metadata_offset, h.metadata_offset + h.metadata_length),
            (h.index_offset, h.index_offset + h.index_length),
        ],
        name=name,
    )
    listed = obj.get("directory_regions", [])
    regions = tuple(
        (int(r[0]), int(r[1]))
        for r in (listed if isinstance(listed, list) else [])
        if isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) for v in r)
    )
    created_by = obj.get("created_by", "")
    return ArchiveDirectory(
        space=space,
        members=tuple(members),
        regions=regions,
        created_by=created_by if isinstance(created_by, str) else "",
    )
