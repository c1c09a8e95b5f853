"""Synthetic cohorts written as files, with their numpy ground truth (for the Dask tests)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from spacetransformer import Space

import medmask
from medmask import MaskArchive, SegmentationMask
from medmask.synthetic import synthetic_case, synthetic_prediction, synthetic_space

LABELS = {"liver": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 4, "lung": 5, "tumor": 6}


def is_msk(seed: int) -> bool:
    """Every fifth case (seed % 5 == 1) is a single labelmap ``.msk`` (no overlapping tumor)."""
    return seed % 5 == 1


def case_bytes(structures: dict[str, np.ndarray], space: Space, as_msk: bool) -> bytes:
    """A case as ``.msk`` bytes (a labelmap; overlaps are not representable) or ``.mska``."""
    buf = io.BytesIO()
    if as_msk:
        data = np.zeros(space.shape, np.uint8)
        mapping = {}
        for name, mask in structures.items():
            if name != "tumor":
                data[mask] = LABELS.get(name, 9)
                mapping[name] = LABELS.get(name, 9)
        medmask.save_mask(SegmentationMask(data, mapping, space), buf)
        return buf.getvalue()
    with MaskArchive(buf, "w", space=space) as archive:
        archive.add_structures(structures, mapping={n: LABELS.get(n, 9) for n in structures})
    return buf.getvalue()


def msk_case_bytes(seed: int) -> bytes:
    """Synthetic case ``seed`` as a ``.msk`` labelmap."""
    return case_bytes(synthetic_case(seed), synthetic_space(seed=seed), as_msk=True)


def stored(structures: dict[str, np.ndarray], as_msk: bool) -> dict[str, np.ndarray]:
    """What a file written by :func:`case_bytes` holds, per structure."""
    if not as_msk:
        return dict(structures)
    data = np.zeros(next(iter(structures.values())).shape, np.uint8)
    for name, mask in structures.items():
        if name != "tumor":
            data[mask] = LABELS.get(name, 9)
    return {n: data == LABELS.get(n, 9) for n in structures if n != "tumor"}


def reference(seed: int) -> tuple[dict[str, np.ndarray], Space, bytes]:
    structures = synthetic_case(seed)
    space = synthetic_space(seed=seed)
    return stored(structures, is_msk(seed)), space, case_bytes(structures, space, is_msk(seed))


def prediction(seed: int) -> tuple[dict[str, np.ndarray], Space, bytes]:
    structures = synthetic_prediction(synthetic_case(seed), seed)
    space = synthetic_space(seed=seed)
    return stored(structures, is_msk(seed)), space, case_bytes(structures, space, is_msk(seed))


def file_name(seed: int) -> str:
    return f"case{seed:04d}.{'msk' if is_msk(seed) else 'mska'}"


def truth_stats(source: str, structures: dict[str, np.ndarray], space: Space) -> dict[str, Any]:
    """``{structure: row}`` as cohort_stats must give it (member column not compared)."""
    voxel_ml = math.prod(float(s) for s in space.spacing) / 1000
    out = {}
    for name, mask in structures.items():
        where = np.nonzero(mask)
        count = int(where[0].size)
        bbox = [(int(w.min()), int(w.max())) for w in where] if count else [(None, None)] * 3
        out[name] = {
            "source": source,
            "structure": name,
            "voxels": count,
            "volume_ml": count * voxel_ml,
            "z0": bbox[0][0],
            "z1": bbox[0][1],
            "y0": bbox[1][0],
            "y1": bbox[1][1],
            "x0": bbox[2][0],
            "x1": bbox[2][1],
        }
    return out


def truth_compare(
    pred: dict[str, np.ndarray], ref: dict[str, np.ndarray], space: Space
) -> dict[str, dict[str, Any]]:
    voxel_ml = math.prod(float(s) for s in space.spacing) / 1000
    out = {}
    for name in sorted({*pred, *ref}):
        p = pred.get(name)
        r = ref.get(name)
        n_p = int(p.sum()) if p is not None else 0
        n_r = int(r.sum()) if r is not None else 0
        both = int((p & r).sum()) if p is not None and r is not None else 0
        out[name] = {
            "dice": 2 * both / (n_p + n_r) if n_p + n_r else float("nan"),
            "volume_pred_ml": n_p * voxel_ml,
            "volume_ref_ml": n_r * voxel_ml,
            "volume_diff_ml": n_p * voxel_ml - n_r * voxel_ml,
            "intersection_voxels": both,
        }
    return out
