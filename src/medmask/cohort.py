"""Per-case statistics and prediction/reference comparisons, the work of one cohort task.

Everything here answers from the stored label statistics (counts, bounding boxes) where it
can, and decodes only the chunks inside bounding boxes where it must: ``case_stats`` reads a
file's directory (one request when it fits the first 64 KiB) and nothing else unless a
decoded measure is asked for; ``case_compare`` decodes only where the two masks' bounding
boxes of a structure intersect. No scheduling: :mod:`medmask.dask` runs these per case.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine import OpenedFile
from .errors import InvalidValueError, LabelNotFoundError, SpaceMismatchError
from .format.descriptor import LabelEntry, Roi, label_holders
from .format.mska import Member
from .geometry import spaces_match, voxel_to_world
from .io import Target, open_source, source_name
from .reader import Directory, read_directory
from .values import STATS_COLUMNS, stats_row, voxel_volume_ml

__all__ = [
    "CENTROID_COLUMNS",
    "COMPARE_COLUMNS",
    "STATS_COLUMNS",
    "Case",
    "case_compare",
    "case_stats",
    "open_case",
    "structure_names",
]

CENTROID_COLUMNS = ("centroid_l_mm", "centroid_p_mm", "centroid_s_mm")
COMPARE_COLUMNS = (
    "case",
    "prediction",
    "reference",
    "structure",
    "dice",
    "volume_pred_ml",
    "volume_ref_ml",
    "volume_diff_ml",
    "intersection_voxels",
)
MEASURES = ("centroid_mm",)


@dataclass(frozen=True)
class Located:
    """Where a structure is stored: its member and label entry (statistics included)."""

    member: Member
    label: LabelEntry


@dataclass
class Case:
    """An opened ``.msk`` or ``.mska``: its directory, and the read engine over its chunks
    (with the decode limits)."""

    name: str
    directory: Directory
    engine: OpenedFile

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        space = self.directory.space
        assert space is not None
        return voxel_volume_ml(space.spacing)

    def structures(self) -> dict[str, Located | None]:
        """``{name: where}`` for every non-background label; None for a name that several
        members use (ambiguous)."""
        members = ((m, m.descriptor) for m in self.directory.members)
        return {
            name: Located(*where[0]) if len(where) == 1 else None
            for name, where in label_holders(members, background=False).items()
        }


@contextmanager
def open_case(
    source: Target,
    storage_options: dict[str, Any] | None = None,
    head: bytes | None = None,
    *,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> Iterator[Case]:
    """Open a ``.msk`` or ``.mska`` (its directory only) for the functions below; ``head``:
    the file's first read, when already fetched (no request then); ``max_voxels`` /
    ``max_bytes`` bound each decoded member as for :func:`medmask.load_mask`."""
    byte_source = open_source(source, storage_options)
    try:
        directory = read_directory(byte_source, head=head)
        engine = OpenedFile.open(byte_source, directory, max_voxels=max_voxels, max_bytes=max_bytes)
        yield Case(source_name(source), directory, engine)
    finally:
        byte_source.close()


def structure_names(source: Target, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every structure name of a ``.msk`` or ``.mska``, sorted (its directory only)."""
    with open_case(source, storage_options) as case:
        return sorted(case.structures())


def _check_measures(measures: Sequence[str]) -> None:
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise InvalidValueError(f"Expected measures among {list(MEASURES)}. Got {unknown}.")


def case_stats(
    source: Target,
    *,
    structures: Sequence[str] | None = None,
    measures: Sequence[str] = (),
    storage_options: dict[str, Any] | None = None,
    head: bytes | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """One row per (member, structure) of one case (columns :data:`STATS_COLUMNS`).

    From the stored statistics alone: one read of the file's directory, no decoding. A name in
    ``structures`` that the case lacks is a row with 0 voxels. ``measures=("centroid_mm",)``
    adds the LPS centroid (:data:`CENTROID_COLUMNS`), decoding only the chunks inside each
    structure's bounding box. ``head``: the file's first read if already fetched
    (:func:`medmask.io.read_heads` fetches many concurrently). ``max_voxels`` /
    ``max_bytes`` bound each decoded member (as for :func:`medmask.load_mask`).
    """
    _check_measures(measures)
    limits = {"max_voxels": max_voxels, "max_bytes": max_bytes}
    with open_case(source, storage_options, head, **limits) as case:
        rows = []
        wanted = None if structures is None else list(dict.fromkeys(structures))
        seen: set[str] = set()
        for member in case.directory.members:
            for entry in member.descriptor.labels:
                if entry.value == 0 or (wanted is not None and entry.name not in wanted):
                    continue
                seen.add(entry.name)
                rows.append(_stats_row(case.name, member.name, entry, case.voxel_ml))
                if measures:
                    rows[-1]["_locate"] = (member, entry)
        for name in wanted or ():
            if name not in seen:
                missing = LabelEntry(name, 0, 0, None)
                rows.append({**_stats_row(case.name, "", missing, case.voxel_ml), "value": None})
        if "centroid_mm" in measures:
            _add_centroids(case, rows)
        for row in rows:
            row.pop("_locate", None)
        return rows


def _stats_row(source: str, member: str, entry: LabelEntry, voxel_ml: float) -> dict[str, Any]:
    return stats_row(source, member, entry.name, entry.value, entry.count, entry.bbox, voxel_ml)


def _add_centroids(case: Case, rows: list[dict[str, Any]]) -> None:
    space = case.directory.space
    assert space is not None
    for row in rows:
        for column in CENTROID_COLUMNS:
            row[column] = None
    located = [row for row in rows if row.get("_locate") and row["_locate"][1].bbox is not None]
    reads = [(member, {entry.value}) for member, entry in (row["_locate"] for row in located)]
    # the engine fetches every member's chunks in one merged read, decodes a region at a time
    for row, found in zip(located, case.engine.iter_labels(reads), strict=True):
        assert found is not None  # rows with a bbox only
        roi, block = found
        where = np.nonzero(block == row["_locate"][1].value)
        index = np.array([w.mean() + r.start for w, r in zip(where, roi, strict=True)])
        lps = voxel_to_world(space, index)
        for column, value in zip(CENTROID_COLUMNS, lps, strict=True):
            row[column] = float(value)


def case_compare(
    prediction: Target,
    reference: Target,
    *,
    case: str | None = None,
    structures: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """One row per structure comparing a prediction with its reference
    (columns :data:`COMPARE_COLUMNS`).

    Volumes come from the stored counts; the intersection is counted by decoding only the
    chunks where the two bounding boxes of a structure intersect. A structure on one side
    only has Dice 0; on neither side (or empty on both) Dice is NaN. The spaces must match
    (:class:`SpaceMismatchError` naming the case). ``max_voxels`` / ``max_bytes`` bound
    each decoded member (as for :func:`medmask.load_mask`).
    """
    pred_name, ref_name = source_name(prediction), source_name(reference)
    name = case or pred_name.rsplit("/", 1)[-1]
    limits = {"max_voxels": max_voxels, "max_bytes": max_bytes}
    with (
        open_case(prediction, storage_options, None, **limits) as pred,
        open_case(reference, storage_options, None, **limits) as ref,
    ):
        assert pred.directory.space is not None
        assert ref.directory.space is not None
        problem = spaces_match(pred.directory.space, ref.directory.space)
        if problem:
            raise SpaceMismatchError(
                f"case {name!r}: prediction {pred_name} and reference {ref_name} are in "
                f"different spaces: {problem}."
            )
        found_pred, found_ref = pred.structures(), ref.structures()
        names = list(structures) if structures is not None else sorted({*found_pred, *found_ref})
        for side, found in (("prediction", found_pred), ("reference", found_ref)):
            ambiguous = [n for n in names if n in found and found[n] is None]
            if ambiguous:
                raise LabelNotFoundError(
                    f"case {name!r}: structures {ambiguous} are in several members of the "
                    f"{side}; compare needs one label per structure."
                )
        intersections = _intersections(
            pred, ref, {n: (found_pred.get(n), found_ref.get(n)) for n in names}
        )
        rows = []
        for structure in names:
            p, r = found_pred.get(structure), found_ref.get(structure)
            n_pred = p.label.count if p else 0
            n_ref = r.label.count if r else 0
            both = intersections.get(structure, 0)
            total = n_pred + n_ref
            rows.append(
                {
                    "case": name,
                    "prediction": pred_name,
                    "reference": ref_name,
                    "structure": structure,
                    "dice": 2.0 * both / total if total else float("nan"),
                    "volume_pred_ml": n_pred * pred.voxel_ml,
                    "volume_ref_ml": n_ref * ref.voxel_ml,
                    "volume_diff_ml": n_pred * pred.voxel_ml - n_ref * ref.voxel_ml,
                    "intersection_voxels": both,
                }
            )
        return rows


def _box_intersection(a: Any, b: Any) -> Roi | None:
    pairs = [(max(x[0], y[0]), min(x[1], y[1])) for x, y in zip(a, b, strict=True)]
    if any(lo > hi for lo, hi in pairs):
        return None
    z, y, x = (slice(lo, hi + 1) for lo, hi in pairs)
    return (z, y, x)


def _intersections(
    pred: Case, ref: Case, located: dict[str, tuple[Located | None, Located | None]]
) -> dict[str, int]:
    """Voxels in both masks per structure where the two bounding boxes intersect. Each side
    decodes its structure's stored bbox, so the engine can check the stored count there (a
    bbox that lies would otherwise hide voxels from the intersection)."""
    items = []
    for structure, (p, r) in located.items():
        if not p or not r or p.label.bbox is None or r.label.bbox is None:
            continue
        roi = _box_intersection(p.label.bbox, r.label.bbox)
        if roi is not None:
            items.append((structure, roi, p, r))
    pred_blocks = pred.engine.iter_labels([(p.member, {p.label.value}) for *_, p, _ in items])
    ref_blocks = ref.engine.iter_labels([(r.member, {r.label.value}) for *_, r in items])
    out: dict[str, int] = {}
    for (structure, roi, p, r), a, b in zip(items, pred_blocks, ref_blocks, strict=True):
        assert a is not None  # both labels have a bbox
        assert b is not None
        in_a = a[1][_within(roi, a[0])] == p.label.value
        in_b = b[1][_within(roi, b[0])] == r.label.value
        out[structure] = int(np.count_nonzero(in_a & in_b))
    return out


def _within(roi: Roi, outer: Roi) -> Roi:
    """``roi`` in the coordinates of an array of the region ``outer`` (which holds it)."""
    z, y, x = (slice(r.start - o.start, r.stop - o.start) for r, o in zip(roi, outer, strict=True))
    return (z, y, x)
