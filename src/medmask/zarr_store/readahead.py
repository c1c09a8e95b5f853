"""Which chunks zarr will ask for next: read-ahead planning for :class:`ArchiveStore`.

zarr-python 3.1 fetches the chunks of one selection with at most ``async.concurrency``
(default 10) ``get`` calls in flight, so a selection of many chunks reaches the store in waves,
each released as the previous one is decoded. Coalescing a wave into one request still costs
one round trip per wave. zarr walks a selection's chunks in C order of their grid
coordinates, so a full wave tells where the selection goes: the wave's rows give its x and y
extents once it wraps, and the next chunks follow in the same order. Pure: no zarr, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Box", "ReadAhead", "box_after", "chunk_coords", "chunks_after"]

Grid = tuple[int, int, int]
Coords = tuple[int, int, int]


@dataclass(frozen=True)
class Box:
    """Inclusive chunk-coordinate ranges ``(lo, hi)`` per axis (z, y, x) of a selection as
    far as it can be told: an axis whose extent is unknown runs to the end of the grid."""

    z: tuple[int, int]
    y: tuple[int, int]
    x: tuple[int, int]

    def __contains__(self, coords: object) -> bool:
        if not isinstance(coords, tuple) or len(coords) != 3:
            return False
        ranges = (self.z, self.y, self.x)
        return all(lo <= c <= hi for c, (lo, hi) in zip(coords, ranges, strict=True))


def chunk_coords(chunk_id: int, grid: Grid) -> Coords:
    """The (z, y, x) grid coordinates of chunk ``chunk_id`` (C order)."""
    _, gy, gx = grid
    return chunk_id // (gy * gx), (chunk_id // gx) % gy, chunk_id % gx


def box_after(grid: Grid, wave: Sequence[int]) -> Box:
    """The selection box that a wave of chunk ids (the first chunks zarr asked for, in any
    order) suggests: x and y extents from the rows the wave covers once it wraps to a new row
    (or slab), else to the end of the grid; z always to the end of the grid."""
    coords = [chunk_coords(i, grid) for i in sorted(wave)]
    gz, gy, gx = grid
    rows = {(z, y) for z, y, _ in coords}
    slabs = {z for z, _, _ in coords}
    xs = [x for _, _, x in coords]
    ys = [y for _, y, _ in coords]
    x = (min(xs), max(xs)) if len(rows) > 1 else (min(xs), gx - 1)
    y = (min(ys), max(ys)) if len(slabs) > 1 else (min(ys), gy - 1)
    return Box((min(slabs), gz - 1), y, x)


def chunks_after(grid: Grid, box: Box, after: int) -> Iterator[int]:
    """Chunk ids of ``box`` in C order (zarr's), from the first one past chunk ``after``."""
    gz, gy, gx = grid
    z0, y0, _ = chunk_coords(after, grid)
    for z in range(max(box.z[0], z0), min(box.z[1], gz - 1) + 1):
        for y in range(box.y[0], min(box.y[1], gy - 1) + 1):
            if (z, y) < (z0, y0):
                continue
            for x in range(box.x[0], min(box.x[1], gx - 1) + 1):
                chunk_id = (z * gy + y) * gx + x
                if chunk_id > after:
                    yield chunk_id


class ReadAhead:
    """Read-ahead of one member array: what zarr asked for in the selection being read, the
    box it suggests, and the last chunk read ahead.

    :meth:`plan` is called with the chunks of a read about to go out. After a wave that fills
    zarr's concurrency (``limit`` chunks) it proposes ``first`` times as many chunks as the
    wave, within the wave's slab (a selection of one slab is never read past). After a wave
    that continues the selection past what was read ahead: the rest of a box of whole slabs
    (a full read, to the end of the grid), or of a patch as deep as it is wide (its depth is
    unknown until zarr stops asking), then to the end of the grid.
    """

    def __init__(self, grid: Grid, *, first: int = 2) -> None:
        self.grid = grid
        self.first = first
        self.box: Box | None = None
        self.asked: set[int] = set()
        self.last = -1
        #: whether the last :meth:`plan` started a new selection (earlier guesses are stale)
        self.restarted = False
        self.deepened = False  # the patch's depth was guessed once

    def ask(self, chunk_id: int) -> None:
        """zarr asked for ``chunk_id`` (served from memory or fetched)."""
        if self.box is not None:
            self.asked.add(chunk_id)

    def plan(self, ids: Sequence[int], limit: int | None) -> tuple[Iterator[int], int | None]:
        """Candidate chunk ids to read ahead with ``ids`` (sorted), in zarr's order, and how
        many of them at most (None: no count limit)."""
        box = self.box
        self.restarted = True
        inside = box is not None and all(chunk_coords(i, self.grid) in box for i in ids)
        if box is not None and inside and ids[0] > self.last:
            self.restarted = False
            self.asked.update(ids)
            box = self.box = box_after(self.grid, sorted(self.asked))
            return chunks_after(self.grid, self._guess(box), ids[-1]), None
        if limit is not None and len(ids) >= limit:
            box = self.box = box_after(self.grid, ids)
            self.deepened, self.asked, self.last = False, set(ids), ids[-1]
            slab = chunk_coords(ids[-1], self.grid)[0]  # zarr has not been seen to leave it
            this_slab = Box((slab, slab), box.y, box.x)
            return chunks_after(self.grid, this_slab, ids[-1]), self.first * len(ids)
        self.box, self.asked, self.last = None, set(), -1
        return iter(()), 0

    def _guess(self, box: Box) -> Box:
        """How far to read ahead in ``box``: whole slabs (a full read) to the end of the grid;
        a patch whose rows and slabs were seen wrapping as deep as it is wide, once (then to
        the end of the grid)."""
        gz, gy, gx = self.grid
        slabs = {chunk_coords(i, self.grid)[0] for i in self.asked}
        whole_slabs = box.y == (0, gy - 1) and box.x == (0, gx - 1)
        if whole_slabs or len(slabs) < 2 or self.deepened:
            return box
        self.deepened = True
        depth = max(box.y[1] - box.y[0], box.x[1] - box.x[0])
        return Box((box.z[0], min(gz - 1, box.z[0] + depth)), box.y, box.x)

    def read_to(self, chunk_id: int) -> None:
        """Chunks up to ``chunk_id`` were read (or asked for)."""
        self.last = max(self.last, chunk_id)
