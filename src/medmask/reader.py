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
from typing import Any, TypeVar

import numpy as np
from spacetransformer import Space

from ._stack import user_stacklevel
from .errors import FormatError, TruncatedFileError
from .format.container import HEADER_SIZE, Header
from .format.encoding import check_index, check_stored_chunk
from .format.msk import parse_msk_directory
from .format.mska import (
    SLOTS_SIZE,
    ArchiveDirectory,
    DamagedSlot,
    Member,
    damaged_slots,
    member_name,
    parse_directory,
    slot_is_intact,
    valid_slots,
)
from .format.sniff import MAGIC_MSK, ContainerKind, container_kind
from .io import HEAD_GUESS, AsyncByteSource, ByteSource, HeadCache, head_cache, split_by_head

__all__ = [
    "Directory",
    "NewerDirectory",
    "RecoveryReport",
    "RecoveryWarning",
    "directory_steps",
    "newer_directories",
    "read_directory",
    "read_directory_async",
]

Kind = ContainerKind
_OPEN_ATTEMPTS = 3  # re-reads when a writer commits while the directory is read
_CHECK_BATCH = 64 << 20  # bytes of chunk streams read at once when a directory is checked
_CHECK_CHUNKS = 1 << 16  # and chunks
Ranges = list[tuple[int, int]]
_T = TypeVar("_T")


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover=True`` did when an archive's newest state was damaged."""

    generation: int  # the generation opened
    #: the newest generation in the file: ``generation`` itself when that was restored from
    #: a damaged slot and is the newest, else a newer one that failed verification
    damaged_generation: int
    problem: str  # why it was refused
    #: True when the generation opened was restored from a damaged header slot (a reader
    #: without ``recover`` uses an older one or cannot open the file); False: an older
    #: generation from an intact slot.
    restored: bool = False


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
    #: header slots that fail their checks but name a newer generation than the one in use
    damaged: tuple[DamagedSlot, ...] = ()

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
    found = container_kind(head)
    if kind == "msk" or (kind is None and found != "mska"):
        header = Header.parse(head, magic=MAGIC_MSK, name=name)
        meta, index = yield from _blocks(head, _header_ranges(header))
        msk = parse_msk_directory(header, meta, index, name=name)
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
        try:
            slots = valid_slots(head, name=name)
        except FormatError as exc:
            repairable = _repairable_slots(head, name)
            if not repairable:
                raise
            if not recover:
                raise type(exc)(
                    f"{exc} {repairable[0].describe()}: open it with recover=True to restore "
                    "that generation if its directory and chunks verify."
                ) from exc
            damage, slots = exc, []
            break
        slot, header = slots[0]
        try:
            archive = yield from _archive_directory(head, header, name)
        except FormatError as exc:
            damage = exc
            now = (yield [(0, SLOTS_SIZE)])[0]
            if now != head[:SLOTS_SIZE]:
                continue
            break
        directory = _mska(name, head, slots, slot, header, archive)
        if recover and any(d.bit is not None for d in directory.damaged):
            restored = yield from _recover(name, head, slots, [], directory.damaged, None)
            if restored is not None:
                return restored
        return directory
    assert damage is not None
    repaired = [d for d in damaged_slots(head, name=name) if d.bit is not None]
    if not recover:
        newest = slots[0][1].generation
        newer = [d.describe() for d in repaired if d.header.generation > newest]
        raise type(damage)(
            f"{damage} This is the archive's newest intact state (generation {newest}): the "
            "file is corrupted. "
            + "".join(f"Also, {text}. " for text in newer)
            + "Open it with recover=True to read the newest generation that verifies "
            "(read-only)."
        ) from damage
    restored = yield from _recover(name, head, slots, slots[1:], repaired, damage)
    if restored is not None:
        return restored
    raise type(damage)(f"{damage} No older intact generation exists.") from damage


def _repairable_slots(head: bytes, name: str) -> list[DamagedSlot]:
    """Damaged slots that one flipped bit explains, when no slot is intact."""
    if any(slot_is_intact(head[s * HEADER_SIZE : (s + 1) * HEADER_SIZE]) for s in range(2)):
        return []  # valid_slots refused an intact slot: never hide it behind a repaired one
    return [d for d in damaged_slots(head, name=name) if d.bit is not None]


def _recover(
    name: str,
    head: bytes,
    slots: list[tuple[int, Header]],
    older: list[tuple[int, Header]],
    damaged: Sequence[DamagedSlot],
    damage: FormatError | None,
) -> Generator[Ranges, list[bytes], Directory | None]:
    """``recover=True``: open the newest generation whose directory verifies, among ``older``
    valid slots and ``damaged`` slots that one flipped bit explains (whose chunks must verify
    too: the slot was damaged, so nothing it points to is taken on trust).

    ``damage`` is why the newest valid slot was refused (None: it is fine, and only a newer
    generation behind a damaged slot is worth opening). None when nothing verifies.
    """
    valid_newest = slots[0][1].generation if slots else 0
    candidates = [(h.generation, s, h, None) for s, h in older] + [
        (d.header.generation, d.slot, d.header, d)
        for d in damaged
        if d.bit is not None and (damage is not None or d.header.generation > valid_newest)
    ]
    candidates.sort(key=lambda c: c[0], reverse=True)
    for generation, slot, header, repaired in candidates:
        try:
            archive = yield from _archive_directory(head, header, name, probe=True)
            if repaired is not None:
                yield from _check_chunks(head, archive, name)
        except FormatError:
            continue
        newest = max([valid_newest, *(d.header.generation for d in damaged)])
        if generation > valid_newest:
            why = repaired.describe() if repaired is not None else str(damage)
            report = RecoveryReport(generation, newest, why, restored=True)
            newer = (
                f"; the newest generation {newest} does not verify" if newest > generation else ""
            )
            others = f"use generation {valid_newest}" if damage is None else "cannot open the file"
            message = (
                f"{name}: restored generation {generation} from damaged header slot {slot} "
                f"(its directory and chunks verify){newer}; readers without recover=True "
                f"{others}"
            )
        else:
            why = str(damage) if damage is not None else "damaged header slot"
            report = RecoveryReport(generation, newest, why)
            message = (
                f"{name}: opened generation {generation}; the newest generation {newest} "
                f"is damaged ({why})"
            )
        warnings.warn(message, RecoveryWarning, stacklevel=user_stacklevel())
        return _mska(name, head, slots, slot, header, archive, report)
    return None


def _header_ranges(header: Header) -> Ranges:
    return [
        (header.metadata_offset, header.metadata_offset + header.metadata_length),
        (header.index_offset, header.index_offset + header.index_length),
    ]


def _archive_directory(
    head: bytes, header: Header, name: str, *, probe: bool = False
) -> Generator[Ranges, list[bytes], ArchiveDirectory]:
    """The directory ``header`` points to, verified. ``probe`` (a header not taken on trust):
    first check with one byte that it ends inside the file, so a damaged length never makes
    the reader fetch more than the file holds."""
    if probe:
        end = max(r[1] for r in _header_ranges(header))
        (last,) = yield from _blocks(head, [(end - 1, end)])
        if not last:
            raise TruncatedFileError(
                f"{name}: the directory ends at byte {end:,}, past the end of the file."
            )
    meta, index = yield from _blocks(head, _header_ranges(header))
    archive = parse_directory(header, meta, index, name=name)
    for member in archive.members:
        check_index(
            member.index,
            member.descriptor,
            name=member_name(name, member),
            payload_start=SLOTS_SIZE,
            max_voxels=1 << 62,  # limits apply when a member is decoded
            max_bytes=1 << 62,
        )
    return archive


def _check_chunks(
    head: bytes, archive: ArchiveDirectory, name: str
) -> Generator[Ranges, list[bytes], None]:
    """Check every stored chunk of ``archive`` (length, CRC, stream header), reading at most
    about :data:`_CHECK_BATCH` bytes (and :data:`_CHECK_CHUNKS` chunks) at a time."""
    batch: list[tuple[Member, int, int, int]] = []
    size = 0
    for member in archive.members:
        lengths, offsets = member.index["length"], member.index["offset"]
        for chunk_id in np.flatnonzero(lengths):
            length = int(lengths[chunk_id])
            if batch and (size + length > _CHECK_BATCH or len(batch) == _CHECK_CHUNKS):
                yield from _check_batch(head, batch, name)
                batch, size = [], 0
            batch.append((member, int(chunk_id), int(offsets[chunk_id]), length))
            size += length
    if batch:
        yield from _check_batch(head, batch, name)


def _check_batch(
    head: bytes, batch: list[tuple[Member, int, int, int]], name: str
) -> Generator[Ranges, list[bytes], None]:
    blobs = yield from _blocks(head, [(start, start + n) for _, _, start, n in batch])
    for (member, chunk_id, _, _), blob in zip(batch, blobs, strict=True):
        where = member_name(name, member)
        check_stored_chunk(member.descriptor, member.index, chunk_id, blob, name=where)


def _mska(
    name: str,
    head: bytes,
    slots: list[tuple[int, Header]],
    slot: int,
    header: Header,
    archive: ArchiveDirectory,
    recovered: RecoveryReport | None = None,
) -> Directory:
    damaged = damaged_slots(head, name=name)
    # a commit must supersede every generation a slot names that one flipped bit explains
    known = [h.generation for _, h in slots]
    known += [d.header.generation for d in damaged if d.bit is not None]
    return Directory(
        name,
        "mska",
        header,
        archive,
        SLOTS_SIZE,
        head,
        slot=slot,
        max_generation=max([header.generation, *known]),
        recovered=recovered,
        damaged=tuple(
            d for d in damaged if d.header.generation > header.generation and d.slot != slot
        ),
    )


@dataclass(frozen=True)
class NewerDirectory:
    """What a damaged header slot naming a newer generation than the one in use points to."""

    damaged: DamagedSlot
    archive: ArchiveDirectory | None  # None when its directory or a chunk fails to verify
    problem: str = ""  # why it does not verify


def newer_directory_steps(
    name: str, head: bytes, damaged: Sequence[DamagedSlot]
) -> Generator[Ranges, list[bytes], list[NewerDirectory]]:
    """Check the directory (and chunks) each of ``damaged`` (:attr:`Directory.damaged`)
    points to; as :func:`directory_steps`, yields byte ranges and receives their bytes."""
    found = []
    for slot in damaged:
        try:
            archive = yield from _archive_directory(head, slot.header, name, probe=True)
            yield from _check_chunks(head, archive, name)
        except FormatError as exc:
            found.append(NewerDirectory(slot, None, str(exc)))
        else:
            found.append(NewerDirectory(slot, archive))
    return found


def newer_directories(source: ByteSource, directory: Directory) -> list[NewerDirectory]:
    """:func:`newer_directory_steps` for ``directory`` with blocking reads of ``source``."""
    return _drive(source, newer_directory_steps(directory.name, directory.head, directory.damaged))


def _drive(source: ByteSource, steps: Generator[Ranges, list[bytes], _T]) -> _T:
    """Run a generator of byte-range requests with blocking reads of ``source``."""
    try:
        request = next(steps)
        while True:
            request = steps.send(source.read_ranges(request))
    except StopIteration as done:
        result: _T = done.value
        return result


def _head_cache(
    source: ByteSource | AsyncByteSource, cache: HeadCache | bool | None
) -> HeadCache | None:
    """The cache of ``source``'s head: ``cache`` itself, none for ``False``, else the one the
    source reads through (``open_source(..., cache=)``), else the process's ``head_cache``."""
    if isinstance(cache, HeadCache):
        return cache
    if cache is False:
        return None
    own = getattr(source, "cache", None)
    return own if isinstance(own, HeadCache) else head_cache


def _cached_directory_steps(
    name: str,
    key: Any,
    kind: Kind | None,
    recover: bool,
    head: bytes | None,
    cache: HeadCache | None,
) -> Generator[Ranges, list[bytes], Directory]:
    """:func:`directory_steps` from ``head`` or the head of ``key`` kept in ``cache`` (None:
    no cache); one that turns out stale is dropped and the file read afresh. The head read is
    kept."""
    first = head if head is not None or cache is None else cache.get(key)
    try:
        directory = yield from directory_steps(name, kind=kind, recover=recover, head=first)
    except FormatError:
        if first is None:
            raise
        if cache is not None:
            cache.drop(key)
        directory = yield from directory_steps(name, kind=kind, recover=recover)
    if cache is not None:
        cache.put(key, directory.head)
    return directory


def read_directory(
    source: ByteSource,
    *,
    kind: Kind | None = None,
    recover: bool = False,
    head: bytes | None = None,
    cache: HeadCache | bool | None = None,
) -> Directory:
    """Read a file's directory with blocking reads (usually one request; none when ``head``,
    the file's first :data:`HEAD_GUESS` bytes, is given or the head cache holds them).

    ``cache`` is the :class:`~medmask.io.HeadCache` to use; None (or True) means the one the
    source reads through, which is :data:`~medmask.io.head_cache` unless the source was
    opened with another. A given or cached head that turns out stale is dropped and the file
    read afresh; ``cache=False`` (writers) neither uses nor fills a cache.
    """
    kept = _head_cache(source, cache)
    key = getattr(source, "cache_key", None)
    steps = _cached_directory_steps(source.name, key, kind, recover, head, kept)
    return _drive(source, steps)


async def read_directory_async(
    source: AsyncByteSource,
    *,
    kind: Kind | None = None,
    recover: bool = False,
    cache: HeadCache | None = None,
) -> Directory:
    """Read a file's directory with an async byte source (never blocks the event loop);
    ``cache`` as for :func:`read_directory`."""
    key = getattr(source, "cache_key", None)
    steps = _cached_directory_steps(
        source.name, key, kind, recover, None, _head_cache(source, cache)
    )
    try:
        request = next(steps)
        while True:
            request = steps.send(await source.read_ranges(request))
    except StopIteration as done:
        directory: Directory = done.value
        return directory
