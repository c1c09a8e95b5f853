"""The three ways a change reaches storage, and the reuse of free directory regions.

- local ``"a"``: pending members are appended in place under the writer's lock, crash-safely
  (``docs/format.md`` section 5): payload, directory, fsync, the other header slot, fsync;
- local full rewrite (mode ``"w"``, :meth:`MaskArchive.compact`): a new file replaces the old
  one atomically;
- remote: the object is replaced with one PUT, conditional on the version read in mode ``"a"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from spacetransformer import Space

from ..errors import ConcurrentModificationError, MaskFileExistsError, MaskFileNotFoundError
from ..format.container import HEADER_SIZE, INDEX_DTYPE, Header
from ..format.mska import SLOTS_SIZE, ArchiveDirectory, directory_bytes, slot_header
from ..io import LocalLock, ObjectVersion, Target, write_atomic, write_local_atomic
from ._layout import PendingMember, full_file_pieces, layout

__all__ = [
    "Committed",
    "append_in_place",
    "check_unchanged",
    "lock_or_create",
    "put_remote",
    "rewrite_local",
    "usable_regions",
]


@dataclass(frozen=True)
class Committed:
    """The state a commit leaves: directory, header and slot written, and both slots' bytes."""

    directory: ArchiveDirectory
    header: Header
    slot: int
    slots: bytes


def usable_regions(directory: ArchiveDirectory, file_end: int) -> tuple[tuple[int, int], ...]:
    """The writer's ``directory_regions`` that are safe to reuse for a new directory.

    ``directory_regions`` is only bookkeeping (readers ignore it) and its CRC says nothing
    about its truth: a region is kept only if it lies after the slots, inside the file and
    overlaps neither a live member's chunks nor another kept region.
    """
    entries = np.concatenate(
        [np.zeros(0, dtype=INDEX_DTYPE), *(m.index for m in directory.members)]
    )
    entries = entries[entries["length"] > 0]
    starts = entries["offset"].astype(np.uint64)
    ends = starts + entries["length"].astype(np.uint64)
    kept: list[tuple[int, int]] = []
    for start, capacity in directory.regions:
        stop = start + capacity
        if start < SLOTS_SIZE or capacity <= 0 or stop > file_end:
            continue
        if np.any((starts < np.uint64(stop)) & (ends > np.uint64(start))):
            continue
        if any(start < b + c and b < stop for b, c in kept):
            continue
        kept.append((start, capacity))
    return tuple(kept)


def lock_or_create(path: str, space: Space | None, lock_timeout: float) -> LocalLock:
    """Lock an existing local archive, or create (and lock) an empty one."""
    lock = LocalLock.acquire(path, lock_timeout)
    if lock is not None:
        return lock
    empty = full_file_pieces([], ArchiveDirectory(space=space), generation=1)[0]
    try:
        created = write_local_atomic(path, empty, exclusive=True, keep_lock=True)
        assert created is not None
        return created
    except MaskFileExistsError:  # another writer created it first: use theirs
        lock = LocalLock.acquire(path, lock_timeout)
        if lock is None:
            raise MaskFileNotFoundError(f"{path}: was deleted while opening.") from None
        return lock


def check_unchanged(lock: LocalLock, slot_bytes: bytes, name: str) -> None:
    """Compare-before-commit: the slots and the file must be as the handle last saw them."""
    if not lock.is_current() or lock.file.pread(0, SLOTS_SIZE) != slot_bytes:
        raise ConcurrentModificationError(
            f"{name}: was changed by another writer since it was opened; nothing "
            "was written. Open it again and retry."
        )


def append_in_place(
    lock: LocalLock,
    pending: Sequence[PendingMember],
    *,
    current: ArchiveDirectory,
    current_header: Header,
    current_slot: int,
    max_generation: int,
    slot_bytes: bytes,
    name: str,
) -> Committed:
    """Append ``pending`` to a local archive in place, crash-safely (format.md 5).

    ``current``, ``current_header``, ``current_slot`` and ``slot_bytes`` (both slots) are the
    state the handle holds; ``max_generation`` is the highest generation of any valid slot.
    """
    check_unchanged(lock, slot_bytes, name)
    file = lock.file  # its errors name the file and what failed (reading, writing, flushing)
    end = file.size()
    placed, payload = layout(pending, end)
    file.pwrite(b"".join(payload), end)
    new_end = end + sum(len(p) for p in payload)
    regions = usable_regions(current, end)
    directory = replace(current, members=(*current.members, *placed), regions=regions)
    meta, flags, index, _ = directory_bytes(directory)
    size = len(meta) + len(index)
    active = (
        current_header.metadata_offset,
        current_header.index_offset + current_header.index_length,
    )
    target = next(
        (
            start
            for start, cap in regions
            if size <= cap and (start + cap <= active[0] or start >= active[1])
        ),
        new_end,
    )
    file.pwrite(meta + index, target)
    file.fsync()
    slot = 1 - current_slot
    generation = max(max_generation, current_header.generation) + 1
    header = slot_header(generation, target, meta, flags, target + len(meta), index)
    file.pwrite(header.pack(), slot * HEADER_SIZE)
    file.fsync()
    slots = file.pread(0, SLOTS_SIZE)
    return Committed(directory, header, slot, slots)


def rewrite_local(
    path: str,
    pieces: Sequence[bytes],
    *,
    lock: LocalLock | None,
    slot_bytes: bytes,
    name: str,
    overwrite: bool,
    lock_timeout: float,
) -> LocalLock | None:
    """Replace a local archive with ``pieces``, atomically.

    With the writer's ``lock`` (mode ``"a"``) the file must be as the handle last saw it
    (``slot_bytes``); the new file is locked and its lock returned. Without (mode ``"w"``),
    wait for an appender of the file being replaced to finish; ``overwrite=False`` refuses an
    existing file. Returns None then.
    """
    if lock is not None:
        check_unchanged(lock, slot_bytes, name)
        new_lock = write_local_atomic(path, pieces, keep_lock=True)
        lock.release()  # waiters on the replaced file move on to the new one
        return new_lock
    old = LocalLock.acquire(path, lock_timeout)
    try:
        write_local_atomic(path, pieces, exclusive=not overwrite)
    finally:
        if old is not None:
            old.release()
    return None


def put_remote(
    target: Target,
    pieces: Sequence[bytes],
    storage_options: dict[str, Any] | None,
    *,
    overwrite: bool,
    expect: ObjectVersion | None,
) -> ObjectVersion | None:
    """Replace a remote archive with one PUT, conditional on ``expect`` when given (mode
    ``"a"``); returns the version written, which the next conditional PUT expects."""
    return write_atomic(target, pieces, storage_options, overwrite=overwrite, expect=expect)
