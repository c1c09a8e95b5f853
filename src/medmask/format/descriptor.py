"""The mask descriptor (docs/format.md section 2) and the chunk grid it defines."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from spacetransformer import Space

from ..dtypes import BIT_DEPTHS, DTYPE_NAMES, bit_depth_of_name, dtype_for_bit_depth, max_label
from ..errors import FormatError, InvalidTypeError, InvalidValueError
from ..mapping import LabelMapping

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "LabelEntry",
    "MaskDescriptor",
    "Roi",
    "default_chunks",
    "index_to_roi",
    "label_holders",
    "parse_chunks",
    "parse_roi",
    "space_from_json",
    "space_to_json",
]

DEFAULT_CHUNK_BYTES = 4 << 20
Roi = tuple[slice, slice, slice]
_M = TypeVar("_M")  # whatever identifies a member to the caller


def _fail(name: str, message: str) -> FormatError:
    return FormatError(f"{name}: invalid metadata: {message}")


def _int_list(value: object, length: int, what: str, name: str, minimum: int = 0) -> list[int]:
    if (
        not isinstance(value, list)
        or len(value) != length
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or min(value) < minimum
    ):
        raise _fail(name, f"expected {what} as {length} integers >= {minimum}, got {value!r:.100}")
    return value


def _float_list(value: object, what: str, name: str) -> tuple[float, float, float]:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) for v in value)
    ):
        raise _fail(name, f"expected {what} as 3 finite numbers, got {value!r:.100}")
    return (float(value[0]), float(value[1]), float(value[2]))


def space_to_json(space: Space) -> dict[str, Any]:
    """Return the JSON object of a space (axes in the mask's (z, y, x) order, LPS)."""
    return {
        "coordinate_system": "LPS",
        "shape": [int(s) for s in space.shape],
        "origin": [float(v) for v in space.origin],
        "spacing": [float(v) for v in space.spacing],
        "x_orientation": [float(v) for v in space.x_orientation],
        "y_orientation": [float(v) for v in space.y_orientation],
        "z_orientation": [float(v) for v in space.z_orientation],
    }


def space_from_json(obj: object, *, name: str) -> Space:
    """Parse and validate a space JSON object."""
    if not isinstance(obj, dict):
        raise _fail(name, f"expected the space as an object, got {type(obj).__name__}")
    if obj.get("coordinate_system", "LPS") != "LPS":
        raise _fail(name, f"expected coordinate_system 'LPS', got {obj.get('coordinate_system')!r}")
    shape = _int_list(obj.get("shape"), 3, "space shape", name, minimum=1)
    values = {
        key: _float_list(obj.get(key), key, name)
        for key in ("origin", "spacing", "x_orientation", "y_orientation", "z_orientation")
    }
    if min(values["spacing"]) <= 0:
        raise _fail(name, f"expected positive spacing, got {values['spacing']}")
    try:
        return Space(shape=tuple(shape), **values)
    except Exception as exc:  # spacetransformer raises its own ValidationError types
        raise _fail(name, f"invalid space: {exc}") from None


@dataclass(frozen=True, slots=True)
class LabelEntry:
    """One label of a mask with its write-time statistics."""

    name: str
    value: int
    count: int
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None

    def to_json(self) -> dict[str, Any]:
        """JSON object of the entry."""
        bbox = None if self.bbox is None else [list(r) for r in self.bbox]
        return {"name": self.name, "value": self.value, "count": self.count, "bbox": bbox}


def parse_chunks(chunks: object, shape: Sequence[int], itemsize: int) -> tuple[int, int, int]:
    """Validate a user chunk spec: None (default), an int (z slices) or 3 ints."""
    if chunks is None:
        return default_chunks(shape, itemsize)
    if isinstance(chunks, int | np.integer) and not isinstance(chunks, bool):
        chunks = (int(chunks), shape[1], shape[2])
    if (
        not isinstance(chunks, Sequence)
        or len(chunks) != 3
        or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in chunks)
        or min(int(c) for c in chunks) < 1
    ):
        raise InvalidValueError(
            f"Expected chunks as None, an int or 3 positive ints. Got {chunks!r}."
        )
    z, y, x = (min(int(c), int(s)) for c, s in zip(chunks, shape, strict=True))
    return (z, y, x)


def default_chunks(shape: Sequence[int], itemsize: int) -> tuple[int, int, int]:
    """Whole (y, x) slices, about 4 MiB of raw data per chunk, the chunks of equal depth (so
    that parallel decoding has equal pieces of work)."""
    slice_bytes = max(1, int(shape[1]) * int(shape[2]) * itemsize)
    nz = max(1, int(shape[0]))
    depth = max(1, min(nz, round(DEFAULT_CHUNK_BYTES / slice_bytes)))
    count = -(-nz // depth)
    return (-(-nz // count), int(shape[1]), int(shape[2]))


def parse_roi(roi: object, shape: Sequence[int]) -> Roi:
    """Normalise a region of interest to three step-1 slices within ``shape``."""
    if roi is None:
        return (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    if not isinstance(roi, tuple | list) or len(roi) != 3:
        raise InvalidValueError(f"Expected roi as 3 slices (z, y, x). Got {roi!r}.")
    out = []
    for axis, (item, size) in enumerate(zip(roi, shape, strict=True)):
        if isinstance(item, int | np.integer) and not isinstance(item, bool):
            item = slice(int(item), int(item) + 1 if int(item) != -1 else None)
        if not isinstance(item, slice):
            raise InvalidValueError(
                f"Expected roi as 3 slices (z, y, x). Got {item!r} on axis {axis}."
            )
        start, stop, step = item.indices(int(size))
        if step != 1 or stop <= start:
            raise InvalidValueError(
                f"Expected a non-empty step-1 slice on axis {axis} (size {size}). Got {item}."
            )
        out.append(slice(start, stop))
    return (out[0], out[1], out[2])


def index_to_roi(key: object, shape: Sequence[int]) -> tuple[Roi, tuple[slice | int, ...]]:
    """Numpy-style basic indexing (ints, slices with any step, ``...``) as a region of interest
    to decode and the index that gives the result from the decoded region."""
    items = key if isinstance(key, tuple) else (key,)
    if sum(item is Ellipsis for item in items) > 1:
        raise InvalidValueError(f"Expected at most one '...' in an index. Got {key!r}.")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = (*items[:at], *[slice(None)] * (len(shape) - len(items) + 1), *items[at + 1 :])
    if len(items) > len(shape):
        raise InvalidValueError(f"Expected at most {len(shape)} indices. Got {key!r}.")
    items = (*items, *[slice(None)] * (len(shape) - len(items)))
    roi: list[slice] = []
    post: list[slice | int] = []
    for axis, (item, size) in enumerate(zip(items, shape, strict=True)):
        if isinstance(item, int | np.integer) and not isinstance(item, bool):
            i = int(item) + (size if int(item) < 0 else 0)
            if not 0 <= i < size:
                raise InvalidValueError(f"Index {item} is out of bounds for axis {axis} of {size}.")
            roi.append(slice(i, i + 1))
            post.append(0)
            continue
        if not isinstance(item, slice):
            raise InvalidTypeError(
                f"Expected ints, slices or '...' (basic indexing). Got {item!r} on axis {axis}."
            )
        picked = range(*item.indices(int(size)))
        if not picked:
            roi.append(slice(0, 1))
            post.append(slice(0, 0))
            continue
        lo, hi = min(picked), max(picked) + 1
        roi.append(slice(lo, hi))
        first, last = picked[0] - lo, picked[-1] - lo
        stop = last + 1 if picked.step > 0 else (last - 1 if last > 0 else None)
        post.append(slice(first, stop, picked.step))
    return (roi[0], roi[1], roi[2]), tuple(post)


@dataclass(frozen=True)
class MaskDescriptor:
    """Everything about a stored mask except its voxels."""

    shape: tuple[int, int, int]
    bit_depth: int
    labels: tuple[LabelEntry, ...]
    codec: dict[str, Any]
    chunks: tuple[int, int, int]
    space: Space | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_by: str = ""

    @property
    def dtype(self) -> np.dtype[Any]:
        """Storage dtype."""
        return dtype_for_bit_depth(self.bit_depth)

    @property
    def nbytes(self) -> int:
        """Decoded size in bytes."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def mapping(self) -> LabelMapping:
        """Label names as a :class:`LabelMapping`."""
        return LabelMapping([(e.name, e.value) for e in self.labels])

    @property
    def grid(self) -> tuple[int, int, int]:
        """Number of chunks along each axis."""
        z, y, x = (-(-s // c) for s, c in zip(self.shape, self.chunks, strict=True))
        return (z, y, x)

    @property
    def n_chunks(self) -> int:
        """Total number of chunks."""
        return math.prod(self.grid)

    def chunk_box(self, chunk_id: int) -> Roi:
        """Array region covered by chunk ``chunk_id`` (C order over the grid)."""
        coords = np.unravel_index(chunk_id, self.grid)
        z, y, x = (
            slice(int(c) * size, min((int(c) + 1) * size, extent))
            for c, size, extent in zip(coords, self.chunks, self.shape, strict=True)
        )
        return (z, y, x)

    def chunks_in(self, roi: Roi) -> list[int]:
        """Ids of the chunks that intersect ``roi`` (ascending)."""
        ranges = [
            range(r.start // c, (r.stop - 1) // c + 1)
            for r, c in zip(roi, self.chunks, strict=True)
        ]
        grid = self.grid
        return [(cz * grid[1] + cy) * grid[2] + cx for cz, cy, cx in itertools.product(*ranges)]

    def to_json(self, *, include_space: bool = True) -> dict[str, Any]:
        """JSON object of the descriptor (``.msk`` metadata or archive member ``mask``)."""
        obj: dict[str, Any] = {
            "shape": list(self.shape),
            "axes": "zyx",
            "dtype": DTYPE_NAMES[self.bit_depth],
            "bit_depth": self.bit_depth,
        }
        if include_space and self.space is not None:
            obj["space"] = space_to_json(self.space)
        obj["labels"] = [e.to_json() for e in self.labels]
        obj["codec"] = dict(self.codec)
        obj["chunks"] = list(self.chunks)
        if self.attributes:
            obj["attributes"] = self.attributes
        if self.created_by:
            obj["created_by"] = self.created_by
        return obj

    @classmethod
    def from_json(
        cls, obj: object, *, name: str, space: Space | None = None, require_space: bool = True
    ) -> MaskDescriptor:
        """Parse and validate; ``space`` is used when ``obj`` has none (archive members)."""
        if not isinstance(obj, dict):
            raise _fail(name, f"expected a mask object, got {type(obj).__name__}")
        shape_list = _int_list(obj.get("shape"), 3, "shape", name, minimum=1)
        shape = (shape_list[0], shape_list[1], shape_list[2])
        if obj.get("axes", "zyx") != "zyx":
            raise _fail(name, f"expected axes 'zyx', got {obj.get('axes')!r}")
        bit_depth = obj.get("bit_depth")
        if bit_depth not in BIT_DEPTHS or isinstance(bit_depth, bool):
            raise _fail(name, f"expected bit_depth in {BIT_DEPTHS}, got {bit_depth!r}")
        if bit_depth_of_name(obj.get("dtype")) != bit_depth:
            raise _fail(name, f"dtype {obj.get('dtype')!r} does not match bit depth {bit_depth}")
        if "space" in obj:
            space = space_from_json(obj["space"], name=name)
        elif require_space and space is None:
            raise _fail(name, "missing 'space'")
        if space is not None and tuple(int(s) for s in space.shape) != shape:
            raise _fail(name, f"space shape {tuple(space.shape)} differs from shape {shape}")
        chunk_list = _int_list(obj.get("chunks"), 3, "chunks", name, minimum=1)
        chunks = (
            min(chunk_list[0], shape[0]),
            min(chunk_list[1], shape[1]),
            min(chunk_list[2], shape[2]),
        )
        codec = obj.get("codec")
        if not isinstance(codec, dict) or not isinstance(codec.get("id"), str):
            raise _fail(name, f"expected codec as an object with an 'id', got {codec!r:.100}")
        attributes = obj.get("attributes", {})
        if not isinstance(attributes, dict):
            raise _fail(name, "expected 'attributes' to be an object")
        created_by = obj.get("created_by", "")
        return cls(
            shape=shape,
            bit_depth=int(bit_depth),
            labels=_parse_labels(obj.get("labels"), shape, int(bit_depth), name),
            codec=codec,
            chunks=chunks,
            space=space,
            attributes=attributes,
            created_by=created_by if isinstance(created_by, str) else "",
        )


def _parse_labels(
    value: object, shape: tuple[int, int, int], bit_depth: int, name: str
) -> tuple[LabelEntry, ...]:
    if not isinstance(value, list):
        raise _fail(name, f"expected 'labels' as a list, got {type(value).__name__}")
    top = max_label(bit_depth)
    voxels = math.prod(shape)
    entries: list[LabelEntry] = []
    names: set[str] = set()
    values: set[int] = set()
    for item in value:
        if not isinstance(item, dict):
            raise _fail(name, f"expected each label as an object, got {item!r:.80}")
        label_name, label, count = item.get("name"), item.get("value"), item.get("count", 0)
        if not isinstance(label_name, str) or not label_name.strip() or label_name in names:
            raise _fail(name, f"label names must be unique non-empty strings, got {label_name!r}")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label <= top:
            raise _fail(name, f"label {label_name!r} has value {label!r}, outside [0, {top}]")
        if label in values:
            raise _fail(name, f"label value {label} is used twice")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= voxels:
            raise _fail(name, f"label {label_name!r} has an invalid voxel count {count!r}")
        bbox = _parse_bbox(item.get("bbox"), shape, label_name, name)
        _check_stats(label_name, label, count, bbox, name)
        names.add(label_name)
        values.add(label)
        entries.append(LabelEntry(label_name, label, count, bbox))
    return tuple(entries)


def _check_stats(
    label_name: str,
    label: int,
    count: int,
    bbox: tuple[tuple[int, int], ...] | None,
    name: str,
) -> None:
    """Statistics that cannot be true (section 2: a bbox exactly when the label has voxels;
    none for value 0): readers that decode only inside a stored bbox rely on them."""
    if label == 0:
        if bbox is not None:
            raise _fail(
                name, f"expected bbox null for background label {label_name!r}, got {list(bbox)}"
            )
        return
    if count > 0 and bbox is None:
        raise _fail(name, f"label {label_name!r}: expected a bbox for its {count} voxels, got null")
    if count == 0 and bbox is not None:
        raise _fail(
            name, f"label {label_name!r}: expected bbox null for 0 voxels, got {list(bbox)}"
        )
    if bbox is not None:
        room = math.prod(hi - lo + 1 for lo, hi in bbox)
        if count > room:
            raise _fail(
                name,
                f"label {label_name!r}: expected at most {room} voxels inside bbox {list(bbox)}, "
                f"got count {count}",
            )


def _parse_bbox(
    value: object, shape: tuple[int, int, int], label: str, name: str
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 3
    pairs: list[tuple[int, int]] = []
    if isinstance(value, list) and ok:
        for pair, size in zip(value, shape, strict=True):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
                or not 0 <= pair[0] <= pair[1] < size
            ):
                ok = False
                break
            pairs.append((pair[0], pair[1]))
    if not ok:
        raise _fail(name, f"label {label!r} has an invalid bbox {value!r:.100}")
    return (pairs[0], pairs[1], pairs[2])


def label_entries(
    mapping: Iterable[tuple[str, int]], stats: dict[int, Any], voxels: int
) -> tuple[LabelEntry, ...]:
    """Build label entries from ``(name, value)`` pairs and ``values.label_stats`` output.

    ``label_stats`` covers non-zero values only; a label named for 0 (background) gets the
    remaining voxel count and no bbox.
    """
    out = []
    for label_name, label in mapping:
        if label == 0:
            background = voxels - sum(s.count for s in stats.values())
            out.append(LabelEntry(label_name, 0, background, None))
            continue
        stat = stats.get(label)
        out.append(
            LabelEntry(
                label_name,
                label,
                0 if stat is None else stat.count,
                None if stat is None else stat.bbox,
            )
        )
    return tuple(out)


def label_holders(
    described: Iterable[tuple[_M, MaskDescriptor]], *, background: bool = True
) -> dict[str, list[tuple[_M, LabelEntry]]]:
    """Each label name with the members that hold it (and its entry there), in member order.

    The one rule for names across the members of an archive: a name exactly one member holds
    is a *structure*; a name several members hold is ambiguous, and readers ask for the
    member. ``background=False`` leaves out value 0, which holds no structure's voxels.
    """
    holders: dict[str, list[tuple[_M, LabelEntry]]] = {}
    for member, descriptor in described:
        for label in descriptor.labels:
            if background or label.value != 0:
                holders.setdefault(label.name, []).append((member, label))
    return holders
