"""Where new bytes go: the chunk layout of pending members and of a fresh archive file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .._version import __version__
from ..format.container import HEADER_SIZE, Header
from ..format.encoding import EncodedMask
from ..format.mska import SLOTS_SIZE, ArchiveDirectory, Member, directory_bytes, slot_header

__all__ = ["PendingMember", "full_file_pieces", "layout"]

_REGION_SLACK = 64  # bytes of room (and rounding) in a fresh archive's directory region


def _round_up(value: int, step: int = 4096) -> int:
    return -(-value // step) * step


@dataclass(frozen=True)
class PendingMember:
    """A member added in this session and not yet written."""

    name: str
    encoded: EncodedMask
    layer: bool


def layout(members: Sequence[PendingMember], payload_at: int) -> tuple[list[Member], list[bytes]]:
    """``members`` placed one after another from ``payload_at``: their directory entries and
    the chunk streams to write there, in order."""
    placed: list[Member] = []
    pieces: list[bytes] = []
    offset = payload_at
    for p in members:
        placed.append(Member(p.name, p.encoded.descriptor, p.encoded.index(offset), p.layer))
        pieces.extend(s for s in p.encoded.streams if s)
        offset += p.encoded.payload_size
    return placed, pieces


def full_file_pieces(
    members: Sequence[PendingMember], base: ArchiveDirectory, generation: int
) -> tuple[list[bytes], ArchiveDirectory, Header]:
    """A fresh archive: slots, one directory region sized to fit, payload.

    Small archives are common (one case, a few structures), so no space is reserved for
    later directories: an append writes its directory at the end of the file (and reuses
    this region once it is free and large enough).
    """
    probe, _ = layout(members, 0)
    meta, _, index, _ = directory_bytes(replace(base, members=tuple(probe)))
    region = _round_up(len(meta) + len(index) + _REGION_SLACK, _REGION_SLACK)
    while True:  # offsets change the directory's size a little: grow until it fits
        placed, payload = layout(members, SLOTS_SIZE + region)
        directory = ArchiveDirectory(
            space=base.space,
            members=tuple(placed),
            regions=((SLOTS_SIZE, region),),
            created_by=f"medmask {__version__}",
        )
        meta, flags, index, _ = directory_bytes(directory)
        if len(meta) + len(index) <= region:
            break
        region = _round_up(len(meta) + len(index) + _REGION_SLACK, _REGION_SLACK)
    header = slot_header(generation, SLOTS_SIZE, meta, flags, SLOTS_SIZE + len(meta), index)
    area = (meta + index).ljust(region, b"\0")
    return [header.pack(), bytes(HEADER_SIZE), area, *payload], directory, header
