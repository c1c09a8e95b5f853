"""Voxel grids: affines <-> (z, y, x) LPS spaces, and aligning one grid onto another.

A :class:`~spacetransformer.Space` puts voxel ``(i, j, k)`` (array axes 0, 1, 2) at
``origin + i * spacing[0] * x_orientation + j * spacing[1] * y_orientation +
k * spacing[2] * z_orientation`` in LPS millimetres (docs/format.md, section 2).
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from .errors import InvalidValueError, SpaceMismatchError

__all__ = [
    "ALIGN_TOLERANCE_MM",
    "SPACE_ATOL_MM",
    "SPACE_RTOL",
    "Alignment",
    "Convention",
    "affine_from_space",
    "alignment",
    "corner_indices",
    "parse_convention",
    "space_from_affine",
    "spaces_match",
    "voxel_to_world",
]

Convention = Literal["RAS", "LPS"]
#: Default largest distance (mm) between corresponding voxel centres of aligned grids.
ALIGN_TOLERANCE_MM = 1e-3
_FLIP_XY = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS
#: Tolerances of :func:`spaces_match`: absolute for origins (mm; spacings use a hundredth of
#: it, directions 1e-5), relative for all.
SPACE_ATOL_MM = 1e-3
SPACE_RTOL = 1e-5


def parse_convention(value: object) -> Convention:
    """Return ``"RAS"`` or ``"LPS"`` (case-insensitive)."""
    if isinstance(value, str) and value.upper() in ("RAS", "LPS"):
        return "RAS" if value.upper() == "RAS" else "LPS"
    raise InvalidValueError(f"Expected convention 'RAS' (NIfTI) or 'LPS' (DICOM). Got {value!r}.")


def _axes(space: Space) -> npt.NDArray[np.float64]:
    """3x3 matrix whose column ``a`` is the unit direction of array axis ``a``."""
    columns = [space.x_orientation, space.y_orientation, space.z_orientation]
    return np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)


def voxel_to_world(space: Space, indices: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """LPS positions (mm) of voxel indices ``(..., 3)`` in the space's (z, y, x) axis order."""
    steps = _axes(space) * np.asarray(space.spacing, dtype=np.float64)
    ijk = np.asarray(indices, dtype=np.float64)
    return np.asarray(space.origin, dtype=np.float64) + ijk @ steps.T


def space_from_affine(
    affine: npt.ArrayLike, shape: tuple[int, int, int], convention: Convention = "RAS"
) -> Space:
    """The (z, y, x) LPS space of ``array.transpose(2, 1, 0)``, for an ``array`` of ``shape``
    indexed the way ``affine`` (4x4, world = ``affine @ (i, j, k, 1)``) maps it: NIfTI and
    nibabel arrays are indexed (x, y, z) with a RAS affine."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise InvalidValueError(f"Expected a finite 4x4 affine. Got {a.tolist()}.")
    to_lps = _FLIP_XY if parse_convention(convention) == "RAS" else np.eye(3)
    linear = to_lps @ a[:3, :3]
    origin = to_lps @ a[:3, 3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise InvalidValueError(f"Affine has a zero-length axis: {a.tolist()}.")
    directions = linear / spacing
    if abs(float(np.linalg.det(directions))) < 1e-6:
        raise InvalidValueError(f"Affine axes are not independent: {a.tolist()}.")
    i, j, k = (tuple(float(v) for v in directions[:, n]) for n in range(3))
    ni, nj, nk = (int(s) for s in shape)
    return Space(
        shape=(nk, nj, ni),
        origin=tuple(float(v) for v in origin),
        spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
        x_orientation=k,
        y_orientation=j,
        z_orientation=i,
    )


def affine_from_space(space: Space, convention: Convention = "RAS") -> npt.NDArray[np.float64]:
    """The 4x4 affine of ``data.transpose(2, 1, 0)`` (the (x, y, z) array) of a (z, y, x) mask;
    the inverse of :func:`space_from_affine`."""
    steps = _axes(space) * np.asarray(space.spacing, dtype=np.float64)
    from_lps = _FLIP_XY if parse_convention(convention) == "RAS" else np.eye(3)
    affine = np.eye(4)
    affine[:3, :3] = from_lps @ steps[:, ::-1]
    affine[:3, 3] = from_lps @ np.asarray(space.origin, dtype=np.float64)
    return affine


Alignment = tuple[tuple[int, int, int], tuple[bool, bool, bool]]


def corner_indices(shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """The voxel indices of the 8 corners of a grid of ``shape``."""
    return np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=np.float64)


def alignment(source: Space, target: Space, tolerance_mm: float = ALIGN_TOLERANCE_MM) -> Alignment:
    """How to lay an array on ``source`` onto ``target`` without interpolation.

    Returns ``(axes, flips)``: ``np.flip(array.transpose(axes), [a for a in range(3) if
    flips[a]])`` is on ``target``. Raises :class:`SpaceMismatchError` unless the two grids hold
    the same voxel centres (within ``tolerance_mm``) up to axis permutations and flips.
    """
    src_dirs, dst_dirs = _axes(source), _axes(target)
    dots = dst_dirs.T @ src_dirs  # [target axis, source axis]
    axes = tuple(int(a) for a in np.argmax(np.abs(dots), axis=1))
    if sorted(axes) != [0, 1, 2] or np.any(np.abs(dots[range(3), axes]) < 0.5):
        raise SpaceMismatchError(
            "Expected a target grid whose axes are the mask's up to order and sign. Got axis "
            f"directions {np.round(dst_dirs.T, 6).tolist()} for the mask's "
            f"{np.round(src_dirs.T, 6).tolist()} (resampling is not alignment)."
        )
    flips = tuple(bool(dots[a, axes[a]] < 0) for a in range(3))
    src_shape = tuple(int(s) for s in source.shape)
    dst_shape = tuple(int(s) for s in target.shape)
    wanted = tuple(src_shape[axes[a]] for a in range(3))
    if wanted != dst_shape:
        raise SpaceMismatchError(
            f"Expected a target grid of shape {wanted} (the mask's {src_shape}, axes {axes}). "
            f"Got {dst_shape}."
        )
    corners = corner_indices(dst_shape)
    src_index = np.empty_like(corners)
    for a in range(3):
        n = dst_shape[a] - 1
        src_index[:, axes[a]] = n - corners[:, a] if flips[a] else corners[:, a]
    distance = np.linalg.norm(
        voxel_to_world(target, corners) - voxel_to_world(source, src_index), axis=1
    )
    worst = int(np.argmax(distance))
    if float(distance[worst]) > tolerance_mm:
        corner = tuple(int(v) for v in corners[worst])
        raise SpaceMismatchError(
            f"Expected grids whose voxel centres coincide within {tolerance_mm:g} mm. Got "
            f"{float(distance[worst]):.6g} mm between target voxel {corner} and the mask's "
            "corresponding voxel (origin or spacing differ; resampling is not alignment)."
        )
    a0, a1, a2 = axes
    f0, f1, f2 = flips
    return (a0, a1, a2), (f0, f1, f2)


def spaces_match(a: Space, b: Space) -> str | None:
    """Return None when ``a`` and ``b`` agree within tolerance, else what differs."""
    if tuple(int(s) for s in a.shape) != tuple(int(s) for s in b.shape):
        return f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    checks = [
        ("origin", a.origin, b.origin, SPACE_ATOL_MM),
        ("spacing", a.spacing, b.spacing, SPACE_ATOL_MM * 1e-2),
        ("x_orientation", a.x_orientation, b.x_orientation, 1e-5),
        ("y_orientation", a.y_orientation, b.y_orientation, 1e-5),
        ("z_orientation", a.z_orientation, b.z_orientation, 1e-5),
    ]
    for what, va, vb, atol in checks:
        if not np.allclose(
            np.asarray(va, float), np.asarray(vb, float), atol=atol, rtol=SPACE_RTOL
        ):
            return f"{what} {tuple(float(v) for v in va)} != {tuple(float(v) for v in vb)}"
    return None


def orientation_letters(space: Space) -> tuple[str, str, str]:
    """The letters of the LPS directions the array axes (z, y, x) run towards, each axis taking
    the world axis its direction is closest to: ``("S", "A", "R")`` for a NIfTI stored RAS+
    (nibabel's ``aff2axcodes`` says ``("R", "A", "S")`` of the same file, in (i, j, k) order).
    """
    lps = (("R", "L"), ("A", "P"), ("I", "S"))  # (towards -, towards +) of world x, y, z
    letters = []
    for direction in (space.x_orientation, space.y_orientation, space.z_orientation):
        d = np.asarray(direction, dtype=np.float64)
        axis = int(np.argmax(np.abs(d)))
        letters.append(lps[axis][int(d[axis] > 0)])
    first, second, third = letters
    return first, second, third
