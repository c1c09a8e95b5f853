"""NIfTI (RAS+) <-> medmask (LPS+, (z, y, x) arrays). Needs the ``nifti`` extra (nibabel)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from ..errors import FormatError, InvalidValueError
from ..mapping import LabelMapping
from ..mask import SegmentationMask
from ..values import label_counts

__all__ = [
    "affine_from_space",
    "load_nifti_mask",
    "read_nifti",
    "save_nifti_mask",
    "space_from_affine",
    "write_nifti",
]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("NIfTI support needs nibabel: pip install 'medmask[nifti]'") from exc
    return nibabel


def space_from_affine(affine: npt.ArrayLike, shape_xyz: tuple[int, int, int]) -> Space:
    """LPS space in (z, y, x) axis order for a NIfTI RAS affine of an (x, y, z) array."""
    a = np.asarray(affine, dtype=np.float64)
    linear = _RAS_TO_LPS @ a[:3, :3]  # flip world rows (x, y); array axes are unchanged
    origin = _RAS_TO_LPS @ a[:3, 3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise InvalidValueError(f"NIfTI affine has a zero-length axis: {a.tolist()}.")
    directions = linear / spacing
    i, j, k = (tuple(float(v) for v in directions[:, n]) for n in range(3))
    nx, ny, nz = (int(s) for s in shape_xyz)
    return Space(
        shape=(nz, ny, nx),
        origin=tuple(float(v) for v in origin),
        spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
        x_orientation=k,
        y_orientation=j,
        z_orientation=i,
    )


def affine_from_space(space: Space) -> npt.NDArray[np.float64]:
    """NIfTI RAS affine of the (x, y, z) array that is ``data.transpose(2, 1, 0)``."""
    columns = [
        np.asarray(space.z_orientation, dtype=np.float64) * float(space.spacing[2]),
        np.asarray(space.y_orientation, dtype=np.float64) * float(space.spacing[1]),
        np.asarray(space.x_orientation, dtype=np.float64) * float(space.spacing[0]),
    ]
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ np.stack(columns, axis=1)
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(space.origin, dtype=np.float64)
    return affine


def read_nifti(path: str | os.PathLike[str]) -> tuple[npt.NDArray[Any], Space]:
    """Read a 3-D NIfTI label image as a (z, y, x) C-ordered array and its LPS space."""
    nib = _nibabel()
    try:
        img = nib.load(os.fspath(path))
    except Exception as exc:
        raise FormatError(f"{os.fspath(path)}: cannot read as NIfTI: {exc}") from None
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise FormatError(f"{os.fspath(path)}: expected a 3-D image, got shape {img.shape}.")
    data = np.asarray(img.dataobj).reshape(shape)
    if data.dtype.kind == "f":
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise FormatError(f"{os.fspath(path)}: label image has non-integer values.")
        data = rounded.astype(np.int64)
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    return array, space_from_affine(img.affine, shape)


def write_nifti(
    array: npt.NDArray[Any], space: Space, path: str | os.PathLike[str], *, dtype: Any = None
) -> None:
    """Write a (z, y, x) array with its LPS space as a NIfTI file (RAS affine, qform = sform)."""
    nib = _nibabel()
    data = np.asarray(array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if dtype is not None:
        data = data.astype(dtype)
    affine = affine_from_space(space)
    img = nib.Nifti1Image(data.transpose(2, 1, 0), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, os.fspath(path))


def load_nifti_mask(
    path: str | os.PathLike[str], mapping: LabelMapping | dict[str, int] | None = None
) -> SegmentationMask:
    """Read a NIfTI label image as a SegmentationMask (names default to ``label_<value>``)."""
    array, space = read_nifti(path)
    if mapping is None:
        values = label_counts(array)
        mapping = {f"label_{v}": v for v in values if v}
    return SegmentationMask(array, mapping, space)


def save_nifti_mask(mask: SegmentationMask, path: str | os.PathLike[str]) -> None:
    """Write a SegmentationMask's array and geometry as NIfTI (names are not kept by NIfTI)."""
    write_nifti(mask.data, mask.space, path)
