"""SimpleITK images <-> :class:`SegmentationMask`, in memory (no files).

ITK and medmask both use LPS world coordinates. An ITK image is indexed (i, j, k) = (x, y, z)
and ``sitk.GetArrayFromImage`` returns the (z, y, x) array medmask uses, so array axis 0 is
ITK index axis k: the Space's spacing is ITK's reversed and its axis directions are the
columns of ITK's direction matrix, reversed. Label names travel in the image's metadata
(key ``medmask:labels``, JSON ``{name: value}``). Needs the ``sitk`` extra (SimpleITK).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from spacetransformer import Space

from ..errors import InvalidTypeError, InvalidValueError
from ..io import Target
from ..mapping import LabelMapping, mapping_items
from ..mask import SegmentationMask
from .labels import default_label_names, integer_labels, parse_label_table, to_label_mapping

__all__ = ["LABELS_METADATA_KEY", "from_sitk", "space_from_sitk", "to_sitk"]

LABELS_METADATA_KEY = "medmask:labels"


def _sitk() -> Any:
    try:
        import SimpleITK
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("SimpleITK support needs it: pip install 'medmask[sitk]'") from exc
    return SimpleITK


def _vector(values: Any) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return (x, y, z)


def space_from_sitk(image: Any) -> Space:
    """The LPS Space, in (z, y, x) axis order, of a 3-D SimpleITK image."""
    if image.GetDimension() != 3:
        raise InvalidValueError(f"Expected a 3-D image. Got {image.GetDimension()}-D.")
    size_x, size_y, size_z = (int(s) for s in image.GetSize())
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = _vector(image.GetSpacing())
    return Space(
        shape=(size_z, size_y, size_x),
        origin=_vector(image.GetOrigin()),
        spacing=(spacing[2], spacing[1], spacing[0]),
        x_orientation=_vector(direction[:, 2]),
        y_orientation=_vector(direction[:, 1]),
        z_orientation=_vector(direction[:, 0]),
    )


def _stored_labels(image: Any) -> LabelMapping | None:
    if not image.HasMetaDataKey(LABELS_METADATA_KEY):
        return None
    text = str(image.GetMetaData(LABELS_METADATA_KEY))
    return parse_label_table(text, f"image metadata {LABELS_METADATA_KEY!r}", "json")


def from_sitk(
    image: Any,
    mapping: LabelMapping | Mapping[str, int] | Target | None = None,
) -> SegmentationMask:
    """A :class:`SegmentationMask` of a 3-D integer SimpleITK label image.

    ``mapping`` names the labels (a mapping or a label table's path, as in
    :func:`medmask.from_nifti`); without it the names stored by :func:`to_sitk` are used, else
    the values present are named ``label_<value>``.
    """
    sitk = _sitk()
    if not isinstance(image, sitk.Image):
        raise InvalidTypeError(f"Expected a SimpleITK.Image. Got {type(image).__name__}.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidValueError(
            "Expected a scalar label image. "
            f"Got {image.GetNumberOfComponentsPerPixel()} components per pixel."
        )
    space = space_from_sitk(image)
    array = integer_labels(sitk.GetArrayFromImage(image))
    if array is None:
        raise InvalidValueError("Expected integer labels. Got non-integer pixel values.")
    if mapping is not None:
        names = to_label_mapping(mapping)
    else:
        stored = _stored_labels(image)
        names = stored or default_label_names(array)
    return SegmentationMask(array, names, space)


def to_sitk(mask: SegmentationMask) -> Any:
    """The mask as a SimpleITK image (pixel type of its storage dtype; bool as uint8) with the
    same LPS geometry and its label names in the metadata."""
    sitk = _sitk()
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    data = mask.data.astype(np.uint8) if mask.data.dtype == np.bool_ else mask.data
    image = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=False)
    space = mask.space
    image.SetOrigin(_vector(space.origin))
    image.SetSpacing((float(space.spacing[2]), float(space.spacing[1]), float(space.spacing[0])))
    columns = [space.z_orientation, space.y_orientation, space.x_orientation]
    direction = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    image.SetMetaData(LABELS_METADATA_KEY, json.dumps(dict(mapping_items(mask.mapping))))
    return image
