"""SegmentationMask: a 3-D label array in (z, y, x) order with names and LPS geometry."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from .dtypes import (
    BIT_DEPTHS,
    BitDepth,
    dtype_for_bit_depth,
    max_label,
    parse_bit_depth,
    smallest_bit_depth,
)
from .errors import InvalidTypeError, InvalidValueError, LabelNotFoundError
from .geometry import (
    ALIGN_TOLERANCE_MM,
    affine_from_space,
    alignment,
    parse_convention,
    space_from_affine,
)
from .mapping import (
    LabelMapping,
    close_matches_hint,
    mapping_items,
    name_of,
    parse_label_name,
    parse_label_value,
)
from .values import (
    STATS_COLUMNS,
    LabelStats,
    copy_counting,
    label_counts,
    label_stats,
    match_allowed_values,
    stats_row,
    value_bounds,
    voxel_volume_ml,
)

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
    "BIT_DEPTHS",
    "BitDepth",
    "SegmentationMask",
    "dtype_for_bit_depth",
    "parse_attributes",
    "parse_bit_depth",
    "parse_space",
    "smallest_bit_depth",
]


def parse_attributes(attributes: object) -> dict[str, Any]:
    """A new dict of ``attributes`` (None: empty), which must map strings to values; whether
    the values are JSON is checked when the mask is saved."""
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise InvalidTypeError(
            f"Expected attributes as a mapping (dict) or None. Got {type(attributes).__name__}."
        )
    keys = [k for k in attributes if not isinstance(k, str)]
    if keys:
        raise InvalidTypeError(f"Expected attributes with string keys. Got the key {keys[0]!r}.")
    return dict(attributes)


def _is_affine(value: object) -> bool:
    try:
        return np.asarray(value).shape == (4, 4)
    except (ValueError, TypeError):
        return False


def parse_space(space: object, shape: tuple[int, ...]) -> Space:
    """Return ``space`` (or a unit-spacing identity space) after checking it matches ``shape``."""
    if space is None:
        return Space(shape=shape)
    if not isinstance(space, Space):
        if _is_affine(space):
            raise InvalidTypeError(
                "Expected a spacetransformer.Space or None. Got a 4x4 affine: use "
                "SegmentationMask.from_array(array, mapping, affine=affine, convention='RAS') "
                "(NIfTI/nibabel arrays and affines) or convention='LPS'."
            )
        raise InvalidTypeError(
            f"Expected a spacetransformer.Space or None. Got {type(space).__name__}."
        )
    space_shape = tuple(int(s) for s in space.shape)
    if space_shape != tuple(shape):
        hint = ""
        if space_shape == tuple(shape)[::-1]:
            hint = (
                " It looks like an (x, y, z) space (Space.from_nifti / Space.from_sitk): pass "
                "space.reverse_axis_order(), or read the file with medmask.from_nifti / from_sitk."
            )
        raise InvalidValueError(
            f"Expected a space whose shape equals the array shape {tuple(shape)} (both in "
            f"(z, y, x) order). Got space shape {space_shape}.{hint}"
        )
    return space


def _as_label_array(array: object, what: str) -> npt.NDArray[Any]:
    try:
        arr = np.asarray(array)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise InvalidValueError(f"Expected {what} convertible to an array. Got: {exc}") from None
    if arr.dtype != np.bool_ and arr.dtype.kind not in "iu":
        raise InvalidTypeError(f"Expected {what} of integer or bool dtype. Got dtype {arr.dtype}.")
    if arr.ndim != 3:
        raise InvalidValueError(
            f"Expected {what} with 3 dimensions (z, y, x). Got {arr.ndim} with shape {arr.shape}."
        )
    if arr.size == 0:
        raise InvalidValueError(
            f"Expected {what} with every axis of size >= 1. Got shape {arr.shape}."
        )
    return arr


def _one_thread() -> Executor | None:
    return None


# The threads of the construction's copy and count: a function giving an executor, or None for
# one thread, asked at each construction. ``import medmask`` plugs in the package's thread
# policy (medmask._workers.chunk_executor): mask sits below that policy, as format/ (which
# imports mask) must.
_construction_executor: list[Callable[[], Executor | None]] = [_one_thread]


def use_construction_executor(get: Callable[[], Executor | None]) -> None:
    """Take the construction's threads from ``get`` (an executor, or None: one thread)."""
    _construction_executor[0] = get


def _covers(mapped: Mapping[int, str], high: int) -> bool:
    """Whether every value 1..``high`` has a name (then no value can lack one)."""
    return sum(1 for v in mapped if 1 <= v <= high) == high


def _checked_copy(
    arr: npt.NDArray[Any], mapping: LabelMapping | None, bit_depth: int | None
) -> tuple[npt.NDArray[Any], int, dict[int, int] | None]:
    """The protective copy of a label array in its storage dtype, its bit depth and its
    ``{value: count}`` (None when the check did not need them), after checking the values
    against ``mapping`` (None: no names yet; the values are counted).

    At most two passes: the bounds (the minimum only for signed arrays), then the copy, which
    counts each block while it is in cache unless ``mapping`` names every value up to the
    maximum.
    """
    low, high = value_bounds(arr)
    if low < 0:
        negative = [v for v in sorted(label_counts(arr)) if v < 0]
        raise InvalidValueError(f"Expected non-negative label values. Got {negative[:10]}.")
    mapped = {} if mapping is None else dict((v, n) for n, v in mapping_items(mapping))
    max_value = max(high, max(mapped, default=0))
    if bit_depth is None:
        depth = 1 if arr.dtype == np.bool_ else smallest_bit_depth(max_value)
    else:
        depth = parse_bit_depth(bit_depth)
    if max_value > max_label(depth):
        raise InvalidValueError(
            f"Expected label values <= {max_label(depth)} for bit depth {depth}. Got {max_value}."
        )
    dtype = dtype_for_bit_depth(depth)
    if mapping is not None and _covers(mapped, high):
        return arr.astype(dtype, copy=True, order="C"), depth, None
    data, counts = copy_counting(
        arr, dtype, bounds=(low, high), executor=_construction_executor[0]()
    )
    unmapped = [] if mapping is None else sorted(v for v in counts if v != 0 and v not in mapped)
    if unmapped:
        shown = ", ".join(str(v) for v in unmapped[:20]) + (" ..." if len(unmapped) > 20 else "")
        raise InvalidValueError(
            f"Values present in the array are missing from the mapping: {shown}. "
            "Add a name for each (or zero those voxels)."
        )
    return data, depth, counts


class SegmentationMask:
    """A 3-D label volume with its label names and spatial geometry.

    Parameters
    ----------
    mask_array
        Integer or bool array in (z, y, x) order. It is copied into the smallest unsigned dtype
        of the bit depth (bool for 1 bit).
    mapping
        :class:`LabelMapping` or ``{name: value}``. Every non-zero value in the array must be in
        it.
    space
        ``spacetransformer.Space`` with axes in the same (z, y, x) order, LPS world coordinates.
        Default: unit spacing, identity orientation, origin 0.
    bit_depth
        1, 8, 16 or 32. Default: 1 for bool arrays, else the smallest depth that holds the
        largest value of the array and the mapping.
    attributes
        Free attributes (string keys, JSON values), kept in the file by :func:`medmask.save_mask`
        and restored by :func:`medmask.load_mask`. Default: none.
    """

    __slots__ = ("_attributes", "_bit_depth", "_counts", "_data", "_mapping", "_space")

    def __init__(
        self,
        mask_array: npt.ArrayLike,
        mapping: LabelMapping | Mapping[str, int],
        space: Space | None = None,
        *,
        bit_depth: int | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        arr = _as_label_array(mask_array, "a mask array")
        mapping = mapping if isinstance(mapping, LabelMapping) else LabelMapping(mapping)
        data, depth, counts = _checked_copy(arr, mapping, bit_depth)
        self._init(data, mapping, parse_space(space, data.shape), depth, attributes, counts)

    @classmethod
    def _named_by_values(
        cls,
        array: npt.ArrayLike,
        name_values: Callable[[list[int]], LabelMapping],
        space: Space | None = None,
        *,
        attributes: Mapping[str, Any] | None = None,
    ) -> SegmentationMask:
        """A mask named ``name_values(non-zero values present)``: the values are counted once,
        for the names and the mask (``from_nifti`` without a mapping)."""
        arr = _as_label_array(array, "a mask array")
        data, depth, counts = _checked_copy(arr, None, None)
        assert counts is not None  # counted when there is no mapping to check against
        mapping = name_values(sorted(v for v in counts if v != 0))
        space = parse_space(space, data.shape)
        return cls._trusted(data, mapping, space, depth, attributes, counts)

    def _init(
        self,
        data: npt.NDArray[Any],
        mapping: LabelMapping,
        space: Space,
        depth: int,
        attributes: Mapping[str, Any] | None = None,
        counts: dict[int, int] | None = None,
    ) -> None:
        data.flags.writeable = False
        self._data = data
        self._mapping = mapping
        self._space = space
        self._bit_depth: BitDepth = parse_bit_depth(depth)
        self._attributes = parse_attributes(attributes)
        self._counts = counts  # {value: voxels} of data, once known

    @classmethod
    def _trusted(
        cls,
        data: npt.NDArray[Any],
        mapping: LabelMapping,
        space: Space,
        bit_depth: int,
        attributes: Mapping[str, Any] | None = None,
        counts: dict[int, int] | None = None,
    ) -> SegmentationMask:
        """Build without validation; ``data`` must already be the storage dtype and owned
        (``counts``: its ``{value: count}``, when known)."""
        obj = cls.__new__(cls)
        obj._init(data, mapping, space, bit_depth, attributes, counts)
        return obj

    @classmethod
    def lazy_init(
        cls,
        bit_depth: int,
        *,
        space: Space | None = None,
        shape: tuple[int, int, int] | None = None,
    ) -> SegmentationMask:
        """Return an empty (all-zero) mask to fill with :meth:`add_label`."""
        depth = parse_bit_depth(bit_depth)
        if space is not None and not isinstance(space, Space):
            raise InvalidTypeError(
                f"Expected a spacetransformer.Space or None. Got {type(space).__name__}."
            )
        if shape is not None:
            given: tuple[object, ...] = tuple(shape)
            sizes = [
                int(s) for s in given if isinstance(s, int | np.integer) and not isinstance(s, bool)
            ]
            if len(given) != 3 or len(sizes) != 3 or min(sizes) < 1:
                raise InvalidValueError(
                    f"Expected a 3-D shape of positive integer sizes. Got {shape!r}."
                )
            target_shape = tuple(sizes)
        elif space is not None:
            target_shape = tuple(int(s) for s in space.shape)
        else:
            raise InvalidValueError("Expected a space or a shape for lazy_init. Got neither.")
        data = np.zeros(target_shape, dtype=dtype_for_bit_depth(depth))
        return cls._trusted(data, LabelMapping(), parse_space(space, data.shape), depth)

    # -- properties ----------------------------------------------------------------------------
    @property
    def data(self) -> npt.NDArray[Any]:
        """The label array, read-only, (z, y, x)."""
        return self._data

    @property
    def mapping(self) -> LabelMapping:
        """Names of the labels."""
        return self._mapping

    @property
    def space(self) -> Space:
        """Geometry in (z, y, x) axis order, LPS world coordinates.

        Careful: ``space.to_nifti_affine()`` (spacetransformer's own method) treats the axes
        as (x, y, z), so on a medmask space it gives a wrong affine. Use :attr:`affine` (what
        nibabel calls ``img.affine``) or :attr:`affine_lps`.
        """
        return self._space

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        """The 4x4 RAS+ affine of ``data.transpose(2, 1, 0)``, the (x, y, z) array: what
        nibabel's ``img.affine`` is for this mask written as NIfTI. Voxel ``data[k, j, i]`` is
        at ``affine @ (i, j, k, 1)`` in RAS+ millimetres. A new array on every call."""
        return affine_from_space(self._space, "RAS")

    @property
    def affine_lps(self) -> npt.NDArray[np.float64]:
        """As :attr:`affine`, in LPS+ (DICOM) world coordinates."""
        return affine_from_space(self._space, "LPS")

    @property
    def attributes(self) -> dict[str, Any]:
        """Free attributes (string keys, JSON values), editable in place. Saved with the mask
        (``.msk`` and archive members) and restored on load; :func:`medmask.from_nifti` keeps
        the NIfTI header codes under ``"nifti"`` so that :func:`medmask.to_nifti` writes them
        back. Not part of ``==``, which compares voxels, names, space and bit depth."""
        return self._attributes

    @property
    def bit_depth(self) -> BitDepth:
        """1, 8, 16 or 32."""
        return self._bit_depth

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x)."""
        z, y, x = self._data.shape
        return (z, y, x)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Storage dtype."""
        return self._data.dtype

    # -- queries -------------------------------------------------------------------------------
    def _labels_for_names(self, names: str | Iterable[str]) -> list[int]:
        if isinstance(names, str):
            names = [names]
        labels = []
        for name in names:
            if name not in self._mapping:
                raise LabelNotFoundError(
                    f"No label named {name!r} in this mask."
                    + close_matches_hint(str(name), [n for n, _ in mapping_items(self._mapping)])
                )
            labels.append(self._mapping[name])
        return labels

    def get_binary_mask_by_names(self, names: str | Iterable[str]) -> npt.NDArray[np.bool_]:
        """Return a bool array, True where the voxel has any of the named labels."""
        return match_allowed_values(self._data, self._labels_for_names(names))

    def get_binary_mask_by_labels(
        self, labels: int | np.integer[Any] | Iterable[int | np.integer[Any]]
    ) -> npt.NDArray[np.bool_]:
        """Return a bool array, True where the voxel has any of the given label values."""
        # a lone non-iterable (or a str) is one value, so it gets a clear error if it is no int
        values: list[object] = [labels]
        if isinstance(labels, Iterable) and not isinstance(labels, str | bytes):
            values = list(labels)
        checked = []
        for value in values:
            label = parse_label_value(value)
            if name_of(self._mapping, label) is None:
                known = [v for _, v in mapping_items(self._mapping)]
                raise LabelNotFoundError(
                    f"No label with value {label} in this mask. Known: {known}."
                )
            checked.append(label)
        return match_allowed_values(self._data, checked)

    def to_binary(self) -> npt.NDArray[np.bool_]:
        """Return a bool array, True for every labelled (non-zero) voxel."""
        return np.asarray(self._data != 0)

    def _value_counts(self) -> dict[int, int]:
        """``{value: voxel count}`` of every value present, 0 included: known from the
        construction's check (else counted once and kept; :meth:`add_label` resets it)."""
        if self._counts is None:
            self._counts = label_counts(self._data, executor=_construction_executor[0]())
        return dict(self._counts)

    def label_counts(self) -> dict[str, int]:
        """Return ``{name: voxel count}`` for every mapped label."""
        counts = self._value_counts()
        return {name: counts.get(label, 0) for name, label in mapping_items(self._mapping)}

    def label_stats(self) -> dict[int, LabelStats]:
        """Return voxel count and bounding box of every non-zero label value present."""
        return label_stats(self._data)

    # -- building ------------------------------------------------------------------------------
    def add_label(self, mask: npt.ArrayLike, label: int, name: str) -> None:
        """Set ``label`` (named ``name``) where ``mask`` is true; later labels overwrite."""
        label = parse_label_value(label)
        name = parse_label_name(name)
        if label == 0:
            raise InvalidValueError("Expected a label value >= 1 (0 is background). Got 0.")
        if label > max_label(self._bit_depth):
            raise InvalidValueError(
                f"Expected a label value <= {max_label(self._bit_depth)} for bit depth "
                f"{self._bit_depth}. Got {label}."
            )
        if name in self._mapping:
            raise InvalidValueError(
                f"Label name {name!r} already exists (value {self._mapping[name]})."
            )
        if name_of(self._mapping, label) is not None:
            raise InvalidValueError(
                f"Label value {label} already exists (name {name_of(self._mapping, label)!r})."
            )
        binary = _as_label_array(mask, "a binary mask")
        if binary.shape != self._data.shape:
            raise InvalidValueError(
                f"Expected a binary mask of shape {self._data.shape}. Got {binary.shape}."
            )
        selected = binary if binary.dtype == np.bool_ else binary != 0
        new_mapping = LabelMapping([*mapping_items(self._mapping), (name, label)])
        self._data.flags.writeable = True
        try:
            self._data[selected] = label
        finally:
            self._data.flags.writeable = False
        self._mapping = new_mapping
        self._counts = None  # counted again when asked

    def volumes(self) -> Any:
        """A ``pandas.DataFrame``, one row per named non-zero label: the columns of the cohort
        table (:data:`medmask.values.STATS_COLUMNS`; ``source`` and ``member`` empty), bbox
        bounds inclusive, ``volume_ml`` from the space's spacing."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas is in the dask/test extras
            raise ImportError("volumes() needs pandas: pip install pandas") from exc
        stats = label_stats(self._data)
        voxel_ml = voxel_volume_ml(self._space.spacing)
        rows = []
        for name, value in mapping_items(self._mapping):
            if value == 0:
                continue
            found = stats.get(value)
            count, bbox = (0, None) if found is None else (found.count, found.bbox)
            rows.append(stats_row("", "", name, value, count, bbox, voxel_ml))
        return pd.DataFrame(rows, columns=list(STATS_COLUMNS))

    # -- geometry ------------------------------------------------------------------------------
    @classmethod
    def from_array(
        cls,
        array: npt.ArrayLike,
        mapping: LabelMapping | Mapping[str, int],
        *,
        affine: npt.ArrayLike,
        convention: Literal["RAS", "LPS"] = "RAS",
        bit_depth: int | None = None,
    ) -> SegmentationMask:
        """A mask from an array indexed the way a 4x4 ``affine`` maps it, as nibabel gives
        them: ``array[i, j, k]`` is at world ``affine @ (i, j, k, 1)``, in RAS (NIfTI) or LPS
        (DICOM/ITK) millimetres. The array is transposed to (z, y, x) and the space is LPS.
        """
        arr = _as_label_array(array, "an array")
        space = space_from_affine(affine, arr.shape, parse_convention(convention))
        return cls(arr.transpose(2, 1, 0), mapping, space, bit_depth=bit_depth)

    def align_to(
        self, space: Space, *, tolerance_mm: float = ALIGN_TOLERANCE_MM
    ) -> SegmentationMask:
        """The same mask on ``space``, a grid holding the same voxel centres up to axis
        permutations and flips (a NIfTI mask of a DICOM series, say), without interpolation.

        Raises :class:`SpaceMismatchError` when the grids do not coincide within
        ``tolerance_mm`` (resample instead, e.g. with spacetransformer).
        """
        target = parse_space(space, tuple(int(s) for s in getattr(space, "shape", ())))
        axes, flips = alignment(self._space, target, tolerance_mm)
        data = self._data.transpose(axes)
        data = np.flip(data, tuple(a for a in range(3) if flips[a]))
        aligned = np.ascontiguousarray(data)
        return SegmentationMask._trusted(
            aligned, self._mapping, target, self._bit_depth, self._attributes
        )

    # -- persistence and nibabel (implemented in medmask.files) ----------------------------------
    def save(self, target: str | PathLike[str] | Any, **kwargs: Any) -> None:
        """Write to ``.msk`` (or NIfTI, by name); see :func:`medmask.save_mask`."""
        from .files import save_mask  # the I/O layers sit above mask; imported on use only

        save_mask(self, target, **kwargs)

    @classmethod
    def load(cls, source: str | PathLike[str] | Any, **kwargs: Any) -> SegmentationMask:
        """Read a ``.msk`` (or NIfTI, DICOM SEG) file; see :func:`medmask.load_mask`."""
        from .files import load_mask

        return load_mask(source, **kwargs)

    def to_nibabel(self) -> Any:
        """The mask as an in-memory nibabel ``Nifti1Image`` (``img.affine`` is :attr:`affine`);
        see :func:`medmask.to_nibabel`."""
        from .files import to_nibabel

        return to_nibabel(self)

    @classmethod
    def from_nibabel(cls, img: Any, mapping: Any = None, *, labels: Any = None) -> SegmentationMask:
        """A mask from an in-memory nibabel image, names from ``mapping`` or ``labels`` (the
        same thing); see :func:`medmask.from_nibabel`."""
        from .files import from_nibabel

        return from_nibabel(img, mapping, labels=labels)

    # -- protocol ------------------------------------------------------------------------------
    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        """``np.asarray(mask)`` is the label array (read-only unless copied)."""
        if dtype is not None and np.dtype(dtype) != self._data.dtype:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SegmentationMask):
            return NotImplemented
        return (
            self._bit_depth == other._bit_depth
            and self._mapping == other._mapping
            and self._space == other._space
            and np.array_equal(self._data, other._data)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        labels = dict(mapping_items(self._mapping)[:8])
        more = f" +{len(self._mapping) - 8} more" if len(self._mapping) > 8 else ""
        spacing = tuple(round(float(s), 4) for s in self._space.spacing)
        return (
            f"SegmentationMask(shape={self.shape}, bit_depth={self._bit_depth}, "
            f"labels={labels}{more}, spacing={spacing})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        state = (self._data, self._mapping, self._space, self._bit_depth, self._attributes)
        return (_restore_mask, state)

    def __copy__(self) -> SegmentationMask:
        # the array is private and mutated only by add_label, so a copy must own its own
        return SegmentationMask._trusted(
            self._data.copy(),
            self._mapping,
            self._space.copy(),
            self._bit_depth,
            copy.deepcopy(self._attributes),
            None if self._counts is None else dict(self._counts),
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> SegmentationMask:
        return self.__copy__()


def _restore_mask(
    data: npt.NDArray[Any],
    mapping: LabelMapping,
    space: Space,
    bit_depth: int,
    attributes: Mapping[str, Any] | None = None,  # absent from pickles of medmask < 0.2
) -> SegmentationMask:
    owned = data if data.flags.owndata and data.flags.c_contiguous else data.copy()
    return SegmentationMask._trusted(owned, mapping, space, bit_depth, attributes)
