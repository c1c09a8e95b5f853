"""Fast value tests and per-label statistics on large label arrays (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidValueError

__all__ = [
    "BLOCK_BYTES",
    "STATS_COLUMNS",
    "LabelStats",
    "copy_counting",
    "label_counts",
    "label_stats",
    "match_allowed_values",
    "present_values",
    "stats_row",
    "value_bounds",
    "voxel_volume_ml",
]

#: Columns of a per-structure statistics table (:meth:`SegmentationMask.volumes`, cohort stats):
#: bbox bounds are inclusive voxel indices, None for an absent structure.
STATS_COLUMNS = (
    "source",
    "member",
    "structure",
    "value",
    "voxels",
    "volume_ml",
    "z0",
    "z1",
    "y0",
    "y1",
    "x0",
    "x1",
)


def voxel_volume_ml(spacing: Iterable[float]) -> float:
    """Volume of one voxel in millilitres, from its spacing in mm."""
    return float(np.prod(np.asarray(list(spacing), dtype=np.float64))) / 1000.0


def stats_row(
    source: str,
    member: str,
    structure: str,
    value: int | None,
    count: int,
    bbox: Sequence[Sequence[int]] | None,
    voxel_ml: float,
) -> dict[str, Any]:
    """One row of a :data:`STATS_COLUMNS` table."""
    row: dict[str, Any] = {
        "source": source,
        "member": member,
        "structure": structure,
        "value": value,
        "voxels": count,
        "volume_ml": count * voxel_ml,
    }
    for axis, axis_name in enumerate("zyx"):
        lo, hi = (None, None) if bbox is None else bbox[axis]
        row[f"{axis_name}0"], row[f"{axis_name}1"] = lo, hi
    return row


# Values below this (non-negative) are counted into an array of bins; wider values by their runs.
_BINCOUNT_LIMIT = 1 << 20
#: Bytes of one block of counting (and of the fused copy): small enough to stay in L2 cache.
BLOCK_BYTES = 1 << 20
_BLOCK = BLOCK_BYTES  # elements per block of a 1-byte array (a block boundary for any dtype)
# A block with more runs than 1 in this many elements is counted voxel by voxel (noise-like).
_DENSE_RUNS = 8


def _value_runs(values: Iterable[int]) -> list[tuple[int, int]]:
    """Group sorted unique values into inclusive ``(first, last)`` runs of consecutive ints."""
    runs: list[tuple[int, int]] = []
    for v in sorted({int(v) for v in values}):
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def match_allowed_values(
    array: npt.ArrayLike, allowed: Iterable[int] | npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    """Return ``np.isin(array, allowed)``, faster when ``allowed`` has runs of consecutive values.

    Small-range integer arrays use a lookup table; otherwise each run ``a..b`` of consecutive
    allowed values costs one range comparison instead of one comparison per value.
    """
    arr = np.asarray(array)
    if isinstance(allowed, Iterable) and not isinstance(allowed, np.ndarray | Sequence):
        # np.asarray would turn a set or generator into a single object element
        values = np.unique(np.asarray(list(allowed)).ravel())
    else:
        values = np.unique(np.asarray(allowed).ravel())
    if values.size == 0 or arr.size == 0:
        return np.zeros(arr.shape, dtype=bool)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if arr.dtype.kind not in "iu" or values.dtype.kind not in "iub":
        return np.asarray(np.isin(arr, values), dtype=bool)
    info = np.iinfo(arr.dtype)
    # no cast to int64 here: uint64 values above 2**63 would wrap around
    values = values[(values >= info.min) & (values <= info.max)]
    if values.size == 0:
        return np.zeros(arr.shape, dtype=bool)
    if arr.dtype.itemsize <= 2 and info.min >= 0:
        table = np.zeros(int(info.max) + 1, dtype=bool)
        table[values.astype(np.intp)] = True
        looked_up: npt.NDArray[np.bool_] = table[arr]
        return looked_up
    out = np.zeros(arr.shape, dtype=bool)
    for first, last in _value_runs(values.tolist()):
        if first == last:
            out |= arr == first
        else:
            out |= (arr >= first) & (arr <= last)
    return out


def value_bounds(array: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> tuple[int, int]:
    """``(low, high)`` of a non-empty integer or bool array: ``high`` its largest value, ``low``
    its smallest if it is signed, else 0 (one fast pass, two for signed arrays)."""
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    low = 0 if arr.dtype.kind == "u" else int(arr.min())
    return low, int(arr.max())


class _Tally:
    """Per-value counts of blocks of one array (thread-safe to fill: one tally per task).

    Values of 1- and 2-byte arrays go in 256 or 65,536 bins (signed ones by their unsigned
    bits), non-negative values below ``_BINCOUNT_LIMIT`` in ``top + 1`` bins; wider values are
    kept as (values, counts) of runs and grouped once at the end, a sort over runs only.
    """

    def __init__(self, dtype: np.dtype[Any], low: int, high: int) -> None:
        self.dtype = np.dtype(dtype)
        self.view: np.dtype[Any] | None = None
        if self.dtype == np.bool_:
            self.view, self.bins = np.dtype(np.uint8), 2
        elif self.dtype.itemsize <= 2:
            self.view = np.dtype(f"u{self.dtype.itemsize}")
            self.bins = high + 1 if low >= 0 else 1 << (8 * self.dtype.itemsize)
        elif low >= 0 and high < _BINCOUNT_LIMIT:
            self.bins = high + 1
            if self.dtype.kind == "u":  # np.bincount refuses uint64; the values fit int64 here
                self.view = np.dtype(f"i{self.dtype.itemsize}")
        else:
            self.bins = 0
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.wide: list[tuple[npt.NDArray[Any], npt.NDArray[np.int64]]] = []

    def add(self, block: npt.NDArray[Any]) -> None:
        """Count a 1-D contiguous block of the tally's dtype."""
        if block.size == 0:
            return
        if self.view is not None:
            block = block.view(self.view)
        runs = _runs(block)
        if self.bins:
            if runs is None:
                self.counts += np.bincount(block, minlength=self.bins)
            else:
                values, lengths = runs
                self.counts += np.bincount(values, weights=lengths, minlength=self.bins).astype(
                    np.int64
                )
        elif runs is None:
            values, n = np.unique(block, return_counts=True)
            self.wide.append((values, n.astype(np.int64)))
        else:
            self.wide.append((runs[0], runs[1]))

    def merge(self, other: _Tally) -> None:
        """Add another tally of the same array's blocks."""
        self.counts += other.counts
        self.wide.extend(other.wide)

    def result(self) -> dict[int, int]:
        """``{value: count}`` of every value counted."""
        if self.bins:
            present = np.flatnonzero(self.counts)
            values = present
            if self.view is not None and self.dtype.kind == "i":
                values = present.astype(np.int64)
                half = 1 << (8 * self.dtype.itemsize - 1)
                values[values >= half] -= 2 * half
            return dict(zip(values.tolist(), self.counts[present].tolist(), strict=True))
        if not self.wide:
            return {}
        all_values = np.concatenate([v for v, _ in self.wide])
        all_counts = np.concatenate([n for _, n in self.wide])
        distinct, inverse = np.unique(all_values, return_inverse=True)
        totals = np.zeros(distinct.size, dtype=np.int64)
        np.add.at(totals, inverse.reshape(-1), all_counts)
        return dict(zip(distinct.tolist(), totals.tolist(), strict=True))


def _runs(block: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]] | None:
    """``(values, lengths)`` of the runs of equal values of a 1-D block, or None when the block
    has too many runs for that to pay (noise)."""
    change = np.not_equal(block[1:], block[:-1])
    n_changes = int(np.count_nonzero(change))
    if n_changes * _DENSE_RUNS > block.size:
        return None
    last = np.empty(n_changes + 1, dtype=np.intp)  # the last index of every run
    last[:n_changes] = np.flatnonzero(change)
    last[n_changes] = block.size - 1
    lengths = np.diff(last, prepend=-1).astype(np.int64)
    return block[last], lengths


def _blocks(n: int, per_block: int) -> list[slice]:
    return [slice(start, min(start + per_block, n)) for start in range(0, n, max(per_block, 1))]


def _map(
    func: Callable[[slice], _Tally], items: Sequence[slice], executor: Executor | None
) -> list[_Tally]:
    if executor is None or len(items) < 4:
        return [func(item) for item in items]
    # a few tasks per thread, each with its own tally: nothing is shared between threads
    groups = min(len(items), 4 * getattr(executor, "_max_workers", 2))
    spans = [items[i::groups] for i in range(groups)]

    def one_span(span: Sequence[slice]) -> _Tally:
        tallies = [func(item) for item in span]
        for other in tallies[1:]:
            tallies[0].merge(other)
        return tallies[0]

    return list(executor.map(one_span, spans))


def _merged(tallies: Sequence[_Tally]) -> dict[int, int]:
    first = tallies[0]
    for other in tallies[1:]:
        first.merge(other)
    return first.result()


def label_counts(
    array: npt.NDArray[np.integer] | npt.NDArray[np.bool_],
    *,
    executor: Executor | None = None,
) -> dict[int, int]:
    """Return ``{value: voxel count}`` for every value present (including 0).

    Counts block by block (blocks of :data:`BLOCK_BYTES`, in cache), by the runs of equal
    values where there are few, else value by value; no sort of the whole array. With
    ``executor``, blocks are counted on its threads.
    """
    arr = np.asarray(array)
    if arr.size == 0:
        return {}
    low, high = value_bounds(arr)
    if arr.ndim == 0 or arr.flags.c_contiguous:
        flat = arr.reshape(-1)

        def count_flat(part: slice) -> _Tally:
            tally = _Tally(arr.dtype, low, high)
            tally.add(flat[part])
            return tally

        per_block = BLOCK_BYTES // arr.dtype.itemsize
        return _merged(_map(count_flat, _blocks(flat.size, per_block), executor))

    def count_slab(part: slice) -> _Tally:
        tally = _Tally(arr.dtype, low, high)
        tally.add(np.ascontiguousarray(arr[part]).reshape(-1))
        return tally

    per_slab = BLOCK_BYTES // max(1, arr[0].nbytes)
    return _merged(_map(count_slab, _blocks(arr.shape[0], per_slab), executor))


def copy_counting(
    array: npt.NDArray[np.integer] | npt.NDArray[np.bool_],
    dtype: npt.DTypeLike,
    *,
    bounds: tuple[int, int] | None = None,
    executor: Executor | None = None,
) -> tuple[npt.NDArray[Any], dict[int, int]]:
    """A new C-ordered copy of a non-empty array in ``dtype``, and its ``{value: count}``.

    A C-ordered array takes one pass: each block (along the first axis) is copied into the
    output, then counted while it is in cache. Any other layout is copied whole first (numpy
    picks the order that reads it best), then counted. The values must fit ``dtype`` (cast
    unchecked: check ``bounds``, :func:`value_bounds` of the array, first; computed when not
    given). With ``executor``, blocks are done on its threads.
    """
    arr = np.asarray(array)
    out = np.empty(arr.shape, dtype=dtype)
    if arr.ndim == 0 or not arr.flags.c_contiguous:
        np.copyto(out, arr, casting="unsafe")
        return out, label_counts(out, executor=executor)
    low, high = (0, 1) if out.dtype == np.bool_ else bounds or value_bounds(arr)
    flat, source = out.reshape(-1), arr.reshape(-1)
    per_slice = max(1, math.prod(arr.shape[1:]))

    def copy_count(part: slice) -> _Tally:
        span = slice(part.start * per_slice, part.stop * per_slice)
        np.copyto(flat[span], source[span], casting="unsafe")
        tally = _Tally(out.dtype, low, high)
        tally.add(flat[span])
        return tally

    per_slab = BLOCK_BYTES // max(1, out[0].nbytes)
    return out, _merged(_map(copy_count, _blocks(arr.shape[0], per_slab), executor))


def present_values(array: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> list[int]:
    """Return the sorted distinct values of ``array``."""
    return sorted(label_counts(array))


@dataclass(frozen=True, slots=True)
class LabelStats:
    """Voxel count and inclusive bounding box ``((z0, z1), (y0, y1), (x0, x1))`` of a label."""

    count: int
    bbox: tuple[tuple[int, int], ...]


def label_stats(array: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> dict[int, LabelStats]:
    """Return :class:`LabelStats` for every non-zero value of a 3-D array.

    Works on runs of equal values along the last axis, so its cost after two linear passes is
    proportional to the number of runs, which is small for real segmentations.
    """
    arr = np.ascontiguousarray(array)
    if arr.ndim != 3:
        raise InvalidValueError(f"Expected a 3-D array. Got {arr.ndim} dimensions.")
    if arr.size == 0:
        return {}
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    _, ny, nx = arr.shape
    rows = arr.reshape(-1, nx)
    change = np.empty(rows.shape, dtype=bool)
    change[:, 0] = True  # every row starts a run, so a run ends where the next one starts
    np.not_equal(rows[:, 1:], rows[:, :-1], out=change[:, 1:])
    starts = np.flatnonzero(change)
    del change
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = arr.size
    values = arr.reshape(-1)[starts]
    keep = values != 0
    if not keep.any():
        return {}
    starts, ends, values = starts[keep], ends[keep], values[keep]
    row = starts // nx
    x0 = starts - row * nx
    run_end = x0 + (ends - starts) - 1
    z = row // ny
    y = row - z * ny
    labels, inverse = np.unique(values, return_inverse=True)
    n = labels.size
    counts = np.bincount(inverse, weights=(run_end - x0 + 1), minlength=n).astype(np.int64)
    lo = np.full((3, n), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full((3, n), -1, dtype=np.int64)
    for axis, first, last in ((0, z, z), (1, y, y), (2, x0, run_end)):
        np.minimum.at(lo[axis], inverse, first)
        np.maximum.at(hi[axis], inverse, last)
    return {
        int(labels[i]): LabelStats(
            count=int(counts[i]),
            bbox=tuple((int(lo[a, i]), int(hi[a, i])) for a in range(3)),
        )
        for i in range(n)
    }
