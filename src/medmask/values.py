"""Fast value tests and per-label statistics on large label arrays (numpy only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidValueError

__all__ = [
    "STATS_COLUMNS",
    "LabelStats",
    "label_counts",
    "label_stats",
    "match_allowed_values",
    "present_values",
    "stats_row",
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


# Arrays with at most this many distinct possible values are counted with np.bincount.
_BINCOUNT_LIMIT = 1 << 20
_BLOCK = 1 << 22  # elements per block: bounds the intp temporaries of np.bincount


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


def label_counts(array: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> dict[int, int]:
    """Return ``{value: voxel count}`` for every value present (including 0)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.size == 0:
        return {}
    if flat.dtype == np.bool_:
        nonzero = int(np.count_nonzero(flat))
        counts = {0: flat.size - nonzero, 1: nonzero}
        return {k: v for k, v in counts.items() if v}
    top = int(flat.max())
    negative = flat.dtype.kind == "i" and int(flat.min()) < 0
    if not negative and top < _BINCOUNT_LIMIT:
        total = np.zeros(top + 1, dtype=np.int64)
        for start in range(0, flat.size, _BLOCK):
            total += np.bincount(flat[start : start + _BLOCK], minlength=top + 1)
        present = np.flatnonzero(total)
        return dict(zip(present.tolist(), total[present].tolist(), strict=True))
    values, n = np.unique(flat, return_counts=True)
    return dict(zip(values.tolist(), n.tolist(), strict=True))


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
