"""``save_mask`` / ``load_mask`` by file name: ``.nii``/``.nii.gz`` through NIfTI, ``.dcm``
(DICOM SEG) through highdicom, everything else as ``.msk``.

A top layer over :mod:`medmask.api` and :mod:`medmask.interop`; the NIfTI and DICOM modules
(and their optional dependencies) load only when such a name is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import api
from .errors import InvalidTypeError, InvalidValueError
from .format.sniff import NIFTI_SUFFIXES, kind_of_suffix
from .io import Target, name_suffix, source_name
from .mask import SegmentationMask

__all__ = ["NIFTI_SUFFIXES", "load_mask", "save_mask"]


def _refuse_msk_options(target: Target, what: str, **options: object) -> None:
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        raise InvalidValueError(
            f"{source_name(target)}: {', '.join(given)} apply to .msk files only, not {what}."
        )


def save_mask(
    mask: SegmentationMask,
    target: Target,
    *,
    level: int | None = None,
    chunks: object = None,
    attributes: Mapping[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = True,
    codec: str | Mapping[str, Any] | None = None,
) -> int:
    """Write ``mask`` in the format its name asks for; return the bytes written.

    ``.nii``/``.nii.gz``: NIfTI (see :func:`medmask.to_nifti`; label names are not stored,
    pass ``label_table=`` there to keep them). Any other name: ``.msk``
    (see :func:`medmask.api.save_mask` for every option).
    """
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    kind = kind_of_suffix(name_suffix(target))
    if kind == "nifti":
        _refuse_msk_options(
            target, "NIfTI", level=level, chunks=chunks, attributes=attributes, codec=codec
        )
        from .interop.nifti import to_nifti

        return to_nifti(mask, target, storage_options=storage_options, overwrite=overwrite)
    if kind == "dicom":
        raise InvalidValueError(
            f"{source_name(target)}: a DICOM SEG needs its source series; use "
            "medmask.interop.dicom.to_dicom_seg(mask, series, out)."
        )
    return api.save_mask(
        mask,
        target,
        level=level,
        chunks=chunks,
        attributes=attributes,
        storage_options=storage_options,
        overwrite=overwrite,
        codec=codec,
    )


def load_mask(
    source: Target,
    *,
    roi: object = None,
    mapping: Any = None,
    storage_options: dict[str, Any] | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    """Read a mask from ``.msk`` (also medmask 0.1), ``.nii``/``.nii.gz`` or a DICOM SEG ``.dcm``.

    ``roi`` (three slices in (z, y, x)) reads part of a ``.msk``; ``mapping`` names the labels
    of a NIfTI file (a mapping or a label table's path, see :func:`medmask.from_nifti`).
    """
    kind = kind_of_suffix(name_suffix(source))
    if kind == "nifti":
        _refuse_msk_options(source, "NIfTI", roi=roi, max_voxels=max_voxels)
        from .interop.nifti import from_nifti

        return from_nifti(source, mapping, storage_options=storage_options, max_bytes=max_bytes)
    if mapping is not None:
        raise InvalidValueError(
            f"{source_name(source)}: mapping= names the labels of NIfTI files only; "
            ".msk files carry their names."
        )
    if kind == "dicom":
        _refuse_msk_options(source, "DICOM SEG", roi=roi, max_voxels=max_voxels)
        from .interop.dicom import from_dicom_seg

        return from_dicom_seg(source, storage_options=storage_options)
    return api.load_mask(
        source,
        roi=roi,
        storage_options=storage_options,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
    )
