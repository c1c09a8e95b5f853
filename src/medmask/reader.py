"""Read-only view of a stored ``.msk`` or ``.mska``: the header in use, every member's
descriptor and chunk index, and where each chunk's bytes are. No decoding, no writing.

``MaskFile``, ``MaskArchive`` and the zarr store all open files through :func:`read_directory`
(or :func:`read_directory_async`). The logic is written once, as a generator that asks for
byte ranges and receives them (:func:`directory_steps`), and driven by a sync or an async
byte source.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from spacetransformer import Space

from .errors import FormatError
from .format.container import HEADER_SIZE, MAGIC_MSK, MAGIC_MSKA, Header
from .format.encoding import check_index
from .format.msk import parse_msk_head
from .format.mska import SLOTS_SIZE, ArchiveDirectory, Member, parse_directory, valid_slots
from .io import HEAD_GUESS, AsyncByteSource, ByteSource, head_cache, split_by_head

__all__ = [
    "Directory",
    "RecoveryReport",
    "RecoveryWarning",
    "detect_kind",
    "directory_steps",
    "read_directory",
    "read_directory_async",
]

Kind = Literal["msk", "mska"]
_OPEN_ATTEMPTS = 3  # re-reads when a writer commits while the directory is read
Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover=True`` did when an archive's newest state was damaged."""

    generation: int  # the generation opened
    damaged_generation: int  # the newest one, which failed verification
    problem: str  # why it was refused


class RecoveryWarning(UserWarning):
    """An archive was opened at an older generation because the newest one is damaged."""


@dataclass(frozen=True)
class Directory:
    """Everything a reader knows about a file before decoding any voxel."""

    name: str
    kind: Kind
    header: Header  # the header (``.mska``: the slot) in use
    archive: ArchiveDirectory  # space and members (a ``.msk`` is one member named "")
    payload_start: int  # stored chunk streams lie at or after this offset
    head: bytes = field(repr=False)  # the file's first read
    slot: int = 0
    max_generation: int = 0  # highest generation of any usable slot
    recovered: RecoveryReport | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)  # ``.msk`` JSON

    @property
    def members(self) -> tuple[Member, ...]:
        """Members in insertion order (one, named "", for a ``.msk``)."""
        return self.archive.members

    @property
    def space(self) -> Space | None:
        """The shared space."""
        return self.archive.space

    @property
    def generation(self) -> int:
        """Generation of the header in use (0 for a ``.msk``)."""
        return self.header.generation if self.kind == "mska" else 0

    @property
    def slot_bytes(self) -> bytes:
        """The bytes a writer must find unchanged before it commits (both ``.mska`` slots)."""
        return self.head[: SLOTS_SIZE if self.kind == "mska" else HEADER_SIZE]

    def member(self, name: str) -> Member | None:
        """The member called ``name``, or None."""
        return self.archive.member(name)

    def chunk_range(self, member: Member, chunk_id: int) -> tuple[int, int] | None:
        """``(start, end)`` of a chunk's stream, or None for an all-zero chunk."""
        length = int(member.index["length"][chunk_id])
        if length == 0:
            return None
        start = int(member.index["offset"][chunk_id])
        return start, start + length


def detect_kind(head: bytes | memoryview) -> Kind | None:
    """``"msk"`` or ``"mska"`` from a file's first bytes, or None."""
    magic = bytes(head[:8])
    return "msk" if magic == MAGIC_MSK else "mska" if magic == MAGIC_MSKA else None


def _blocks(
    head: bytes, ranges: Sequence[tuple[int, int]]
) -> Generator[Ranges, list[bytes], list[bytes]]:
    """The bytes of ``ranges``: from ``head`` where it covers them, else one request."""
    found, missing = split_by_head(head, ranges)
    fetched = iter((yield missing) if missing else [])
    return [next(fetched) if block is None else block for block in found]


def directory_steps(
    name: str, *, kind: Kind | None = None, recover: bool = False, head: bytes | None = None
) -> Generator[Ranges, list[bytes], Directory]:
    """Read a file's directory: yields the byte ranges it needs, receives their bytes.

    ``kind`` requires a ``.msk`` or ``.mska`` (the header parser's error names the file
    otherwise); ``recover`` opens an archive's newest intact generation when the newest one
    is damaged (see docs/format.md, section 5); ``head``, the file's first
    :data:`HEAD_GUESS` bytes if already known, saves the first read (retries read afresh).
    """
    if head is None:
        head = (yield [(0, HEAD_GUESS)])[0]
    found = detect_kind(head)
    if kind == "msk" or (kind is None and found != "mska"):
        header = Header.parse(head, magic=MAGIC_MSK, name=name)
        meta, index = yield from _blocks(head, _header_ranges(header))
        msk = parse_msk_head(header, meta, index, name=name)
        member = Member("", msk.descriptor, msk.index)
        archive = ArchiveDirectory(space=msk.descriptor.space, members=(member,))
        return Directory(
            name, "msk", header, archive, msk.payload_start, head, metadata=msk.metadata
        )
    damage: FormatError | None = None
    slots: list[tuple[int, Header]] = []
    for attempt in range(_OPEN_ATTEMPTS):
        if attempt:  # a writer committed meanwhile: start again from a fresh first read
            head = (yield [(0, HEAD_GUESS)])[0]
        slots = valid_slots(head, name=name)
        slot, header = slots[0]
        try:
            archive = yield from _archive_directory(head, header, name)
        except FormatError as exc:
            damage = exc
            now = (yield [(0, SLOTS_SIZE)])[0]
            if now != head[:SLOTS_SIZE]:
                continue
            break
        return _mska(name, head, slots, slot, header, archive)
    assert damage is not None
    newest = slots[0][1].generation
    if not recover:
        raise type(damage)(
            f"{damage} This is the archive's newest state (generation {newest}): the file "
            "is corrupted. Open it with recover=True to read the newest intact "
            "generation (read-only)."
        ) from damage
    for slot, header in slots[1:]:
        try:
            archive = yield from _archive_directory(head, header, name)
        except FormatError:
            continue
        report = RecoveryReport(header.generation, newest, str(damage))
        warnings.warn(
            f"{name}: opened generation {header.generation}; the newest generation "
            f"{newest} is damaged ({damage})",
            RecoveryWarning,
            stacklevel=4,
        )
        return _mska(name, head, slots, slot, header, archive, report)
    raise type(damage)(f"{damage} No older intact generation exists.") from damage


def _header_ranges(header: Header) -> Ranges:
    return [
        (header.metadata_offset, header.metadata_offset + header.metadata_length),
        (header.index_offset, header.index_offset + header.index_length),
    ]


def _archive_directory(
    head: bytes, header: Header, name: str
) -> Generator[Ranges, list[bytes], ArchiveDirectory]:
    meta, index = yield from _blocks(head, _header_ranges(header))
    archive = parse_directory(header, meta, index, name=name)
    for member in archive.members:
        check_index(
            member.index,
            member.descriptor,
            name=f"{name} [{member.name}]",
            payload_start=SLOTS_SIZE,
            max_voxels=1 << 62,  # limits apply when a member is decoded
            max_bytes=1 << 62,
        )
    return archive


def _mska(
    name: str,
    head: bytes,
    slots: list[tuple[int, Header]],
    slot: int,
    header: Header,
    archive: ArchiveDirectory,
    recovered: RecoveryReport | None = None,
) -> Directory:
    return Directory(
        name,
        "mska",
        header,
        archive,
        SLOTS_SIZE,
        head,
        slot=slot,
        max_generation=max(h.generation for _, h in slots),
        recovered=recovered,
    )


def _cached_directory_steps(
    name: str, key: Any, kind: Kind | None, recover: bool, head: bytes | None
) -> Generator[Ranges, list[bytes], Directory]:
    """:func:`directory_steps` from ``head`` or the cached head of ``key``; one that turns out
    stale is dropped and the file read afresh. The head read is cached."""
    first = head if head is not None else head_cache.get(key)
    try:
        directory = yield from directory_steps(name, kind=kind, recover=recover, head=first)
    except FormatError:
        if first is None:
            raise
        head_cache.drop(key)
        directory = yield from directory_steps(name, kind=kind, recover=recover)
    head_cache.put(key, directory.head)
    return directory


def read_directory(
    source: ByteSource,
    *,
    kind: Kind | None = None,
    recover: bool = False,
    head: bytes | None = None,
    cache: bool = True,
) -> Directory:
    """Read a file's directory with blocking reads (usually one request; none when ``head``,
    the file's first :data:`HEAD_GUESS` bytes, is given or :data:`head_cache` holds them).

    A given or cached head that turns out stale is dropped and the file read afresh;
    ``cache=False`` (writers) neither uses nor fills the cache.
    """
    key = getattr(source, "cache_key", None) if cache else None
    steps = _cached_directory_steps(source.name, key, kind, recover, head)
    try:
        request = next(steps)
        while True:
            request = steps.send(source.read_ranges(request))
    except StopIteration as done:
        directory: Directory = done.value
        return directory


async def read_directory_async(
    source: AsyncByteSource, *, kind: Kind | None = None, recover: bool = False
) -> Directory:
    """Read a file's directory with an async byte source (never blocks the event loop);
    :data:`head_cache` as for :func:`read_directory`."""
    key = getattr(source, "cache_key", None)
    steps = _cached_directory_steps(source.name, key, kind, recover, None)
    try:
        request = next(steps)
        while True:
            request = steps.send(await source.read_ranges(request))
    except StopIteration as done:
        directory: Directory = done.value
        return directory
