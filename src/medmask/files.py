"""``save_mask`` / ``load_mask`` by file name: ``.nii``/``.nii.gz`` through NIfTI, ``.dcm``
(DICOM SEG) through highdicom, everything else as ``.msk``.

A top layer over :mod:`medmask.interop.registry`, which holds the kinds, their suffixes and
their readers and writers; the NIfTI and DICOM modules (and their optional dependencies) load
only when such a name is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidTypeError, InvalidValueError
from .format.sniff import NIFTI_SUFFIXES
from .interop.registry import (
    CONVERTERS,
    Converter,
    from_nibabel,
    kind_of_name,
    titles_taking,
    to_nibabel,
)
from .io import Target, source_name
from .mask import SegmentationMask

__all__ = ["NIFTI_SUFFIXES", "from_nibabel", "load_mask", "save_mask", "to_nibabel"]


def _converter(target: Target, *, writes: bool) -> Converter:
    """The converter ``target``'s name asks for; ``.msk`` for any other name, and for a kind
    that holds many masks (an archive), whose ``.msk`` reader and writer then refuse it."""
    kind = kind_of_name(target)
    converter = CONVERTERS["msk"] if kind is None else CONVERTERS[kind]
    if (converter.write if writes else converter.read) is None:
        return CONVERTERS["msk"]
    return converter


def _given(accepted: frozenset[str], target: Target, title: str, **options: Any) -> dict[str, Any]:
    """The options given (not None); refuses those ``title``'s converter does not take."""
    given = {k: v for k, v in options.items() if v is not None}
    refused = sorted(k for k in given if k not in accepted)
    if refused:
        raise InvalidValueError(
            f"{source_name(target)}: {', '.join(refused)} apply to .msk files only, not {title}."
        )
    return given


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
    (see :func:`medmask.api.save_msk` for every option).
    """
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    if kind_of_name(target) == "mska":
        raise InvalidValueError(
            f"{source_name(target)}: save_mask writes one mask (.msk or NIfTI); a .mska "
            "archive holds several: use `with MaskArchive(target, 'w') as archive: "
            "archive.add_segmask(mask, name)`, or pack_folder for a folder of NIfTI files."
        )
    converter = _converter(target, writes=True)
    options = _given(
        converter.write_options,
        target,
        converter.title,
        level=level,
        chunks=chunks,
        attributes=attributes,
        codec=codec,
    )
    assert converter.write is not None  # _converter(writes=True)
    return converter.write(
        mask, target, storage_options=storage_options, overwrite=overwrite, **options
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
    converter = _converter(source, writes=False)
    if mapping is not None and "mapping" not in converter.read_options:
        raise InvalidValueError(
            f"{source_name(source)}: mapping= names the labels of {titles_taking('mapping')} "
            "files only; .msk files carry their names."
        )
    options = _given(
        converter.read_options,
        source,
        converter.title,
        roi=roi,
        mapping=mapping,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
    )
    assert converter.read is not None  # _converter(writes=False)
    return converter.read(source, storage_options=storage_options, **options)
