"""NIfTI (RAS+) <-> medmask (LPS+, (z, y, x) arrays), at any path or fsspec URL.

NIfTI images index voxels (i, j, k) = (x, y, z) with an affine to RAS+ world coordinates
(the sform, else the qform, as nibabel resolves them). medmask arrays are (z, y, x) with an
LPS+ :class:`Space` in the same axis order: reading transposes the array and negates the
affine's x and y rows; writing does the reverse, so a round trip keeps data and affine.
Oblique, flipped and anisotropic grids are exact. Needs the ``nifti`` extra (nibabel).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from ..errors import AllocationLimitError, FormatError, StorageError
from ..files import NIFTI_SUFFIXES
from ..format.encoding import max_bytes_limit
from ..geometry import affine_from_space, space_from_affine
from ..io import Target, local_path, name_suffix, read_whole, source_name, write_atomic
from ..mapping import LabelMapping
from ..mask import SegmentationMask
from .labels import default_label_names, integer_labels, to_label_mapping

__all__ = [
    "NIFTI_SUFFIXES",
    "affine_from_space",
    "from_nifti",
    "read_nifti",
    "space_from_affine",
    "to_nifti",
    "write_nifti",
]

_NIFTI_INTENT_LABEL = 1002


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("NIfTI support needs nibabel: pip install 'medmask[nifti]'") from exc
    return nibabel


def _gunzip(data: bytes, name: str, limit: int) -> bytes:
    """Decompress every gzip member, never producing more than ``limit`` bytes."""
    out = []
    size = 0
    while data:
        engine = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = engine.decompress(data, limit + 1 - size)
        except zlib.error as exc:
            raise FormatError(f"{name}: cannot read as NIfTI: broken gzip data ({exc}).") from None
        out.append(chunk)
        size += len(chunk)
        if size > limit or engine.unconsumed_tail:
            raise AllocationLimitError(
                f"{name}: decompresses to more than the {limit:,}-byte limit (max_bytes=)."
            )
        data = engine.unused_data
    return b"".join(out)


def _load_image(
    source: Target,
    storage_options: dict[str, Any] | None,
    max_bytes: int,
    content: bytes | None = None,
) -> Any:
    nib = _nibabel()
    name = source_name(source)
    path = local_path(source, storage_options) if content is None else None
    try:
        if path is not None and name_suffix(path) in NIFTI_SUFFIXES:
            return nib.load(path)  # memory-mapped; other names are read as bytes below
        data = read_whole(source, storage_options, max_bytes) if content is None else content
        if data[:2] == b"\x1f\x8b":
            data = _gunzip(data, name, max_bytes)
        if len(data) >= 4 and int.from_bytes(data[:4], "little") == 540:
            return nib.Nifti2Image.from_bytes(data)
        return nib.Nifti1Image.from_bytes(data)
    except (FileNotFoundError, StorageError, AllocationLimitError, FormatError):
        raise
    except Exception as exc:  # nibabel raises many types for a bad file
        raise FormatError(f"{name}: cannot read as NIfTI: {exc}") from None


def read_nifti(
    source: Target,
    *,
    storage_options: dict[str, Any] | None = None,
    max_bytes: int | None = None,
    content: bytes | None = None,
) -> tuple[npt.NDArray[Any], Space]:
    """Read a 3-D NIfTI label image as a (z, y, x) C-ordered array and its LPS space
    (``content``: the file's bytes when already fetched; ``source`` then only names it)."""
    name = source_name(source)
    limit = max_bytes_limit(max_bytes)
    img = _load_image(source, storage_options, limit, content)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise FormatError(f"{name}: expected a 3-D image, got shape {img.shape}.")
    itemsize = max(1, np.dtype(img.get_data_dtype()).itemsize)
    if int(np.prod(shape)) * itemsize > limit:
        raise AllocationLimitError(
            f"{name}: {shape} voxels of {img.get_data_dtype()} exceed the {limit:,}-byte limit."
        )
    try:
        data = np.asarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise FormatError(f"{name}: cannot read the NIfTI voxels: {exc}") from None
    labels = integer_labels(data)
    if labels is None:
        raise FormatError(f"{name}: label image has non-integer values.")
    array = np.ascontiguousarray(labels.transpose(2, 1, 0))
    return array, space_from_affine(img.affine, shape)


def _image_bytes(array: npt.NDArray[Any], space: Space, dtype: Any, gz: bool) -> bytes:
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
    img.header.set_intent(_NIFTI_INTENT_LABEL)
    raw: bytes = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw


def write_nifti(
    array: npt.NDArray[Any],
    space: Space,
    target: Target,
    *,
    dtype: Any = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> int:
    """Write a (z, y, x) array with its LPS space as NIfTI (RAS affine, qform = sform, label
    intent); gzip-compressed when the name ends in ``.gz``. Atomic, to any path or URL
    (``overwrite=False``: :class:`MaskFileExistsError` if it exists). Returns the bytes written."""
    data = _image_bytes(array, space, dtype, name_suffix(target).endswith(".gz"))
    write_atomic(target, [data], storage_options, overwrite=overwrite)
    return len(data)


def from_nifti(
    source: Target,
    mapping: LabelMapping | Mapping[str, int] | Target | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    """Read a NIfTI label image as a :class:`SegmentationMask` (LPS, (z, y, x)).

    ``mapping``: label names as a mapping, or a label table's path or URL (JSON, TSV/CSV,
    ITK-SNAP ``.txt``, 3D Slicer ``.ctbl``; see :mod:`medmask.interop.labels`). Without it the
    values present are named ``label_<value>``.
    """
    array, space = read_nifti(source, storage_options=storage_options, max_bytes=max_bytes)
    if mapping is None:
        names = default_label_names(array)
    else:
        names = to_label_mapping(mapping, storage_options)
    return SegmentationMask(array, names, space)


def to_nifti(
    mask: SegmentationMask,
    target: Target,
    *,
    storage_options: dict[str, Any] | None = None,
    label_table: Target | None = None,
    overwrite: bool = True,
) -> int:
    """Write a mask as NIfTI (the names, which NIfTI cannot hold, optionally to a JSON label
    table ``{name: value}`` at ``label_table``). Returns the bytes of the image written."""
    size = write_nifti(
        mask.data, mask.space, target, storage_options=storage_options, overwrite=overwrite
    )
    if label_table is not None:
        text = json.dumps(mask.mapping.to_dict(), ensure_ascii=False, indent=1) + "\n"
        write_atomic(label_table, [text.encode()], storage_options)
    return size
