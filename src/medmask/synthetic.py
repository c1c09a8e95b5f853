"""Deterministic synthetic cases for demos, examples, tests and benchmarks (numpy only).

A case is a few anatomically placed structures on a small CT-like grid: ``liver`` and
``spleen`` (ellipsoids), ``kidney_left`` / ``kidney_right`` (spheres), ``lung`` (a box) and,
in some cases, a ``tumor`` inside the liver (so structures overlap). ``synthetic_prediction``
perturbs a case the way a segmentation model errs: shifts, a missed or an extra structure.
Everything depends only on the seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

__all__ = ["SYNTHETIC_SHAPE", "synthetic_case", "synthetic_prediction", "synthetic_space"]

SYNTHETIC_SHAPE = (24, 40, 40)
Structures = dict[str, npt.NDArray[np.bool_]]


def synthetic_space(shape: tuple[int, int, int] = SYNTHETIC_SHAPE, seed: int = 0) -> Space:
    """An LPS space in (z, y, x) order: a coarse abdomen grid (7.5 mm slices, 7 mm pixels, so
    organ volumes are about life size), with an origin per seed."""
    rng = np.random.default_rng(seed)
    origin = (float(rng.integers(-200, -100)), float(rng.integers(-150, -50)), 800.0)
    return Space(shape=shape, origin=origin, spacing=(7.5, 7.0, 7.0))


def _ellipsoid(
    shape: tuple[int, ...], center: npt.ArrayLike, radii: npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    c, r = np.asarray(center, float), np.asarray(radii, float)
    return np.asarray(sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r, strict=True)) <= 1)


def synthetic_case(seed: int, shape: tuple[int, int, int] = SYNTHETIC_SHAPE) -> Structures:
    """Named bool structures of case ``seed`` (``tumor`` only in every third case)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    jitter = rng.uniform(-1.5, 1.5, size=(6, 3))
    s = np.array(shape, float)
    out: Structures = {
        "liver": _ellipsoid(shape, s * (0.5, 0.55, 0.3) + jitter[0], s * (0.3, 0.2, 0.18)),
        "spleen": _ellipsoid(shape, s * (0.5, 0.45, 0.75) + jitter[1], s * (0.2, 0.1, 0.08)),
        "kidney_left": _ellipsoid(shape, s * (0.6, 0.75, 0.72) + jitter[2], s * (0.12, 0.07, 0.07)),
        "kidney_right": _ellipsoid(
            shape, s * (0.6, 0.75, 0.28) + jitter[3], s * (0.12, 0.07, 0.07)
        ),
    }
    lung = np.zeros(shape, bool)
    top = int(rng.integers(0, max(1, z // 6)))
    lung[top : z // 3, y // 6 : y // 2, x // 8 : x - x // 8] = True
    out["lung"] = lung
    if seed % 3 == 0:
        tumor = _ellipsoid(shape, s * (0.5, 0.55, 0.3) + jitter[4], (1.5, 2.5, 2.5))
        out["tumor"] = tumor & out["liver"] if tumor.any() else tumor
    return out


def synthetic_prediction(case: Mapping[str, npt.NDArray[np.bool_]], seed: int) -> Structures:
    """A model's output for ``case``: each structure shifted by up to one voxel per axis;
    ``kidney_right`` missed in every fifth case, an empty ``spleen`` in every seventh, an
    extra ``gallbladder`` in every fourth."""
    rng = np.random.default_rng(10_000 + seed)
    out: Structures = {}
    for name, mask in case.items():
        shift = tuple(int(v) for v in rng.integers(-1, 2, size=3))
        out[name] = np.roll(mask, shift, axis=(0, 1, 2))
    if seed % 5 == 0:
        out.pop("kidney_right", None)
    if seed % 7 == 0:
        out["spleen"] = np.zeros_like(out["spleen"])
    if seed % 4 == 0:
        shape = next(iter(case.values())).shape
        out["gallbladder"] = _ellipsoid(shape, np.array(shape) * (0.55, 0.6, 0.4), (2, 3, 3))
    return out
