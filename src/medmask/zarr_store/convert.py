"""Masks as native zarr v3 arrays: :func:`to_zarr` and :func:`from_zarr` (docs/zarr.md)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.errors import ContainsArrayAndGroupError, ContainsArrayError, ContainsGroupError

from .._deprecate import renamed_keywords
from ..codecs import choose_codec
from ..codecs.zarr3 import SelectLabelCodec, adapter_for
from ..dtypes import bit_depth_of_name
from ..errors import InvalidTypeError, InvalidValueError, MaskFileExistsError, MedmaskError
from ..format.descriptor import parse_chunks
from ..io import Target, local_path
from ..mapping import LabelMapping, mapping_items
from ..mask import SegmentationMask
from ..values import label_stats
from .layout import LAYOUT_VERSION, space_attributes, space_from_attributes

__all__ = ["SELECT_LABEL", "from_zarr", "to_zarr"]

#: The array -> array codec that shows one label of a label map as a bool array.
SELECT_LABEL: str = SelectLabelCodec.codec_name


def _mask_attributes(mask: SegmentationMask) -> dict[str, Any]:
    stats = label_stats(mask.data)
    labels = mapping_items(mask.mapping)
    return {
        "labels": dict(labels),
        "label_stats": {
            name: {
                "count": stats[value].count if value in stats else 0,
                "bbox": None if value not in stats else [list(b) for b in stats[value].bbox],
            }
            for name, value in labels
            if value != 0
        },
        "space": space_attributes(mask.space),
        "medmask": {"layout_version": LAYOUT_VERSION},
    }


def _existing_v2_node(store: Any) -> str | None:
    """``"array"`` or ``"group"`` if a zarr v2 node lies at the root of ``store`` (a
    :class:`Store` or ``StorePath``), else None. zarr checks only for v3 nodes when it
    creates a v3 array, and would write one beside a v2 node."""
    if isinstance(store, Store):
        store, path = store, ""
    elif isinstance(getattr(store, "store", None), Store) and isinstance(store.path, str):
        store, path = store.store, store.path
    else:
        return None
    prefix = f"{path}/" if path else ""
    for key, kind in ((".zarray", "array"), (".zgroup", "group")):
        if sync(store.exists(prefix + key)):
            return kind
    return None


def _exists(where: str, kind: str) -> MaskFileExistsError:
    return MaskFileExistsError(
        f"{where}: a zarr {kind} exists there; pass overwrite=True to replace it. "
        "Nothing was written."
    )


@renamed_keywords(store_or_url="target")
def to_zarr(
    mask: SegmentationMask,
    target: Store | Target,
    *,
    chunks: object = None,
    shards: tuple[int, int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
    level: int | None = None,
    overwrite: bool = True,
) -> zarr.Array[Any]:
    """Write ``mask`` as a native zarr v3 array (medmask codec, label and space attributes).

    ``chunks``: as for :func:`medmask.save_mask`; ``shards``: an optional shard shape, a
    multiple of the chunk shape. ``overwrite=False``: an array or group already at the target
    raises :class:`MaskFileExistsError` and nothing is written. Returns the array, readable
    by :func:`from_zarr`.
    """
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    chunk_shape = parse_chunks(chunks, mask.shape, mask.dtype.itemsize)
    core = choose_codec(mask.data, level=level)
    serializer = adapter_for(core.codec_id)(level=core.get_config()["level"])
    if isinstance(target, str | os.PathLike):
        path = local_path(target, storage_options)  # a file:// URL too
        store: Any = (
            zarr.storage.FsspecStore.from_url(os.fspath(target), storage_options=storage_options)
            if path is None
            else zarr.storage.LocalStore(path)
        )
        where = os.fspath(target)
    else:
        store = target
        where = str(target)
    if not overwrite and (existing := _existing_v2_node(store)) is not None:
        raise _exists(where, existing)
    try:
        array = zarr.create_array(
            store,
            shape=mask.shape,
            chunks=chunk_shape,
            shards=shards,
            dtype=mask.dtype,
            serializer=serializer,
            compressors=None,
            fill_value=0,
            dimension_names=["z", "y", "x"],
            attributes=_mask_attributes(mask),
            overwrite=overwrite,
        )
    except ContainsArrayError:
        raise _exists(where, "array") from None
    except ContainsGroupError:
        raise _exists(where, "group") from None
    except ContainsArrayAndGroupError:
        raise _exists(where, "array and group") from None
    array[...] = mask.data
    return array


@renamed_keywords(array_or_url="source")
def from_zarr(
    source: zarr.Array[Any] | str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
) -> SegmentationMask:
    """A :class:`SegmentationMask` from a zarr array written by :func:`to_zarr` or shown by
    :func:`~medmask.zarr_store.open_zarr` (its ``labels`` and ``space`` attributes)."""
    array = source
    if isinstance(source, str | os.PathLike):
        array = zarr.open_array(os.fspath(source), mode="r", storage_options=storage_options)
    if not isinstance(array, zarr.Array):
        raise InvalidTypeError(f"Expected a zarr array or URL. Got {type(array).__name__}.")
    attrs: dict[str, Any] = dict(array.attrs)
    if not isinstance(attrs.get("labels"), dict) or "space" not in attrs:
        raise InvalidValueError(
            f"{array.name}: expected 'labels' and 'space' attributes (written by to_zarr or "
            "shown by open_zarr). Got " + ", ".join(sorted(attrs)) + "."
        )
    if len(array.shape) != 3:
        raise InvalidValueError(f"{array.name}: expected a 3-D (z, y, x) array. Got {array.shape}.")
    shape = (int(array.shape[0]), int(array.shape[1]), int(array.shape[2]))
    try:
        mapping = LabelMapping({str(k): v for k, v in attrs["labels"].items()})
    except MedmaskError as exc:
        raise type(exc)(
            f"{array.name}: the 'labels' attribute is not a label table: {exc}"
        ) from exc
    space = space_from_attributes(attrs["space"], shape)
    data = np.asarray(array[...])
    return SegmentationMask(data, mapping, space, bit_depth=bit_depth_of_name(data.dtype.name))
