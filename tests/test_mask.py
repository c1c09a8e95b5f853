"""SegmentationMask: validation, storage dtype, queries, add_label, protocol, copies, pickle."""

from __future__ import annotations

import copy
import pickle
import re
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

from medmask import LabelMapping, LabelNotFoundError, LabelStats, SegmentationMask
from medmask.errors import InvalidTypeError, InvalidValueError

ORGANS = {"liver": 1, "spleen": 2, "kidney": 3}


def _organ_array() -> np.ndarray:
    arr = np.zeros((3, 4, 5), dtype=np.uint8)
    arr[0, :2, :2] = 1  # 4 voxels
    arr[1, 1:4, 1:4] = 2  # 9 voxels
    arr[2, 3, :] = 3  # 5 voxels
    return arr


@pytest.fixture
def organs() -> SegmentationMask:
    return SegmentationMask(_organ_array(), LabelMapping(ORGANS))


def _snapshot(mask: SegmentationMask) -> tuple[np.ndarray, LabelMapping, Space, int]:
    return mask.data.copy(), mask.mapping, mask.space, mask.bit_depth


def _unchanged(
    mask: SegmentationMask, snapshot: tuple[np.ndarray, LabelMapping, Space, int]
) -> bool:
    data, mapping, space, depth = snapshot
    return (
        np.array_equal(mask.data, data)
        and mask.data.dtype == data.dtype
        and mask.mapping == mapping
        and mask.space == space
        and mask.bit_depth == depth
        and not mask.data.flags.writeable
    )


# --- construction and storage -------------------------------------------------------------------


def test_basic_properties(organs: SegmentationMask) -> None:
    assert organs.shape == (3, 4, 5)
    assert organs.bit_depth == 8
    assert organs.dtype == np.uint8
    assert organs.mapping == LabelMapping(ORGANS)
    np.testing.assert_array_equal(organs.data, _organ_array())


def test_mapping_may_be_a_dict(organs: SegmentationMask) -> None:
    assert SegmentationMask(_organ_array(), ORGANS) == organs
    assert isinstance(SegmentationMask(_organ_array(), ORGANS).mapping, LabelMapping)


def test_nested_lists_are_accepted() -> None:
    mask = SegmentationMask([[[0, 1], [1, 0]]], {"a": 1})
    assert mask.shape == (1, 2, 2)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask.data, [[[0, 1], [1, 0]]])


@pytest.mark.parametrize(
    ("dtype", "top", "mapping", "bit_depth", "expected_depth", "expected_dtype"),
    [
        (np.bool_, 1, {"a": 1}, None, 1, np.bool_),
        (np.bool_, 0, {}, None, 1, np.bool_),
        (np.uint8, 5, {"a": 5}, None, 8, np.uint8),
        (np.int8, 5, {"a": 5}, None, 8, np.uint8),
        (np.uint16, 3, {"a": 3}, None, 8, np.uint8),
        (np.int32, 255, {"a": 255}, None, 8, np.uint8),
        (np.int64, 256, {"a": 256}, None, 16, np.uint16),
        (np.int64, 300, {"a": 300}, None, 16, np.uint16),
        (np.uint32, 65535, {"a": 65535}, None, 16, np.uint16),
        (np.int64, 65536, {"a": 65536}, None, 32, np.uint32),
        (np.uint64, 2**32 - 1, {"a": 2**32 - 1}, None, 32, np.uint32),
        (np.uint8, 0, {"a": 300}, None, 16, np.uint16),  # the mapping needs 16 bits
        (np.uint8, 1, {"a": 1}, 1, 1, np.bool_),
        (np.bool_, 1, {"a": 1}, 8, 8, np.uint8),
        (np.uint8, 5, {"a": 5}, 16, 16, np.uint16),
        (np.uint8, 5, {"a": 5}, np.int64(32), 32, np.uint32),
    ],
)
def test_stores_smallest_dtype_of_the_bit_depth(
    dtype: Any,
    top: int,
    mapping: dict[str, int],
    bit_depth: int | None,
    expected_depth: int,
    expected_dtype: Any,
) -> None:
    arr = np.zeros((2, 3, 4), dtype=dtype)
    arr[1, 2, 3] = top
    arr[0, 0, 0] = top
    mask = SegmentationMask(arr, mapping, bit_depth=bit_depth)
    assert mask.bit_depth == expected_depth
    assert type(mask.bit_depth) is int
    assert mask.dtype == expected_dtype
    assert mask.data.dtype == expected_dtype
    np.testing.assert_array_equal(mask.data.astype(np.int64), arr.astype(np.int64))
    assert mask.data.flags.c_contiguous


def test_default_space_is_unit_identity_with_the_array_shape(organs: SegmentationMask) -> None:
    space = organs.space
    assert isinstance(space, Space)
    assert tuple(space.shape) == (3, 4, 5)
    assert tuple(space.spacing) == (1, 1, 1)
    assert tuple(space.origin) == (0, 0, 0)
    assert tuple(space.x_orientation) == (1, 0, 0)
    assert tuple(space.y_orientation) == (0, 1, 0)
    assert tuple(space.z_orientation) == (0, 0, 1)
    assert space == Space(shape=(3, 4, 5))


def test_given_space_is_kept() -> None:
    space = Space(shape=(3, 4, 5), spacing=(2.5, 0.7, 0.7), origin=(-10.0, 5.0, 3.0))
    mask = SegmentationMask(_organ_array(), ORGANS, space)
    assert mask.space == space
    assert tuple(mask.space.spacing) == (2.5, 0.7, 0.7)


def test_data_is_read_only(organs: SegmentationMask) -> None:
    assert not organs.data.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        organs.data[0, 0, 0] = 3
    with pytest.raises(ValueError, match="read-only"):
        organs.data[...] = 0
    with pytest.raises(ValueError, match="read-only"):
        organs.data.fill(0)
    with pytest.raises(AttributeError):
        organs.data = np.zeros((3, 4, 5), dtype=np.uint8)  # type: ignore[misc]
    np.testing.assert_array_equal(organs.data, _organ_array())


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_, np.uint32])
def test_data_is_a_copy_of_the_callers_array(dtype: Any) -> None:
    arr = (_organ_array() > 0) if dtype is np.bool_ else _organ_array().astype(dtype)
    mapping = {"x": 1} if dtype is np.bool_ else ORGANS
    before = arr.copy()
    mask = SegmentationMask(arr, mapping)
    assert not np.shares_memory(mask.data, arr)
    arr[...] = 0
    arr[0, 0, 0] = 1
    np.testing.assert_array_equal(mask.data, before)
    assert arr.flags.writeable  # the caller's array is left writeable


def test_caller_array_that_is_a_non_contiguous_view() -> None:
    base = np.zeros((6, 4, 10), dtype=np.uint8)
    base[::2, :, ::2] = _organ_array()
    view = base[::2, :, ::2]
    mask = SegmentationMask(view, ORGANS)
    assert mask.data.flags.c_contiguous
    assert not np.shares_memory(mask.data, base)
    base[...] = 0
    np.testing.assert_array_equal(mask.data, _organ_array())


def test_mapping_may_name_absent_labels_and_background() -> None:
    mask = SegmentationMask(np.zeros((1, 2, 2), np.uint8), {"background": 0, "liver": 1})
    assert mask.label_counts() == {"background": 4, "liver": 0}


# --- validation: one failing input per rule -----------------------------------------------------

BAD_ARRAYS: list[tuple[str, Any, Any, type[Exception], str]] = [
    # (id, array, mapping, error, message)
    (
        "2-d",
        np.zeros((3, 4), np.uint8),
        {},
        ValueError,
        "with 3 dimensions (z, y, x). Got 2 with shape (3, 4)",
    ),
    ("4-d", np.zeros((1, 2, 3, 4), np.uint8), {}, ValueError, "with 3 dimensions (z, y, x). Got 4"),
    ("0-d", np.uint8(1), {"a": 1}, ValueError, "with 3 dimensions (z, y, x). Got 0 with shape ()"),
    (
        "empty-axis",
        np.zeros((0, 3, 4), np.uint8),
        {},
        ValueError,
        "every axis of size >= 1. Got shape (0, 3, 4)",
    ),
    (
        "float",
        np.zeros((2, 2, 2), np.float32),
        {},
        TypeError,
        "of integer or bool dtype. Got dtype float32",
    ),
    (
        "float64",
        np.ones((2, 2, 2)),
        {"a": 1},
        TypeError,
        "of integer or bool dtype. Got dtype float64",
    ),
    ("complex", np.zeros((2, 2, 2), np.complex64), {}, TypeError, "Got dtype complex64"),
    ("object", np.zeros((2, 2, 2), object), {}, TypeError, "Got dtype object"),
    ("string", np.full((2, 2, 2), "a"), {}, TypeError, "Got dtype <U1"),
    ("float-list", [[[0.5]]], {}, TypeError, "Got dtype float64"),
    (
        "negative",
        np.full((2, 2, 2), -1, np.int8),
        {},
        ValueError,
        "Expected non-negative label values. Got [-1]",
    ),
    (
        "negative-mapped",
        np.array([[[0, -5, 3]]]),
        {"a": 3},
        ValueError,
        "Expected non-negative label values. Got [-5]",
    ),
    (
        "2**32",
        np.full((1, 1, 2), 2**32, np.int64),
        {},
        ValueError,
        "Expected label values below 2**32. Got 4294967296",
    ),
    (
        "2**64-1",
        np.full((1, 1, 1), 2**64 - 1, np.uint64),
        {},
        ValueError,
        "Expected label values below 2**32",
    ),
    (
        "unmapped",
        np.array([[[0, 1, 2, 7]]], np.uint8),
        {"a": 1},
        ValueError,
        "missing from the mapping: 2, 7. Add a name",
    ),
    ("unmapped-bool", np.ones((1, 1, 1), bool), {}, ValueError, "missing from the mapping: 1."),
    (
        "unmapped-many",
        np.arange(1, 31, dtype=np.uint8).reshape(1, 5, 6),
        {},
        ValueError,
        "mapping: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20 ...",
    ),
    (
        "mapping-over-1-bit",
        np.ones((1, 1, 1), bool),
        {"a": 1, "b": 2},
        ValueError,
        "Expected label values <= 1 for bit depth 1. Got 2",
    ),
]


@pytest.mark.parametrize(
    ("array", "mapping", "error", "message"),
    [case[1:] for case in BAD_ARRAYS],
    ids=[case[0] for case in BAD_ARRAYS],
)
def test_rejects_bad_array(array: Any, mapping: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        SegmentationMask(array, mapping)


@pytest.mark.parametrize("bit_depth", [0, 2, 4, 7, 64, -8, True, 8.0, "8", np.float64(8)], ids=repr)
def test_rejects_bad_bit_depth(bit_depth: Any) -> None:
    with pytest.raises(ValueError, match=r"^Expected a bit depth in \(1, 8, 16, 32\)\. Got "):
        SegmentationMask(_organ_array(), ORGANS, bit_depth=bit_depth)


@pytest.mark.parametrize(
    ("top", "mapping", "bit_depth", "message"),
    [
        (2, {"a": 2}, 1, "Expected label values <= 1 for bit depth 1. Got 2."),
        (256, {"a": 256}, 8, "Expected label values <= 255 for bit depth 8. Got 256."),
        (65536, {"a": 65536}, 16, "Expected label values <= 65535 for bit depth 16. Got 65536."),
        (0, {"a": 300}, 8, "Expected label values <= 255 for bit depth 8. Got 300."),  # mapping
        (0, {"a": 2}, 1, "Expected label values <= 1 for bit depth 1. Got 2."),  # mapping
    ],
    ids=["data-1", "data-8", "data-16", "mapping-8", "mapping-1"],
)
def test_rejects_bit_depth_too_small(
    top: int, mapping: dict[str, int], bit_depth: int, message: str
) -> None:
    arr = np.zeros((1, 2, 2), dtype=np.int64)
    arr[0, 1, 1] = top
    with pytest.raises(ValueError, match=re.escape(message)):
        SegmentationMask(arr, mapping, bit_depth=bit_depth)


def test_rejects_space_with_other_shape() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Expected a space whose shape equals the array shape (3, 4, 5) (both in (z, y, x) "
            "order). Got space shape (5, 4, 3)."
        ),
    ):
        SegmentationMask(_organ_array(), ORGANS, Space(shape=(5, 4, 3)))


@pytest.mark.parametrize(
    "space",
    ["space", (3, 4, 5), {"shape": (3, 4, 5)}, np.eye(4)],
    ids=["str", "tuple", "dict", "matrix"],
)
def test_rejects_space_that_is_not_a_space(space: Any) -> None:
    with pytest.raises(TypeError, match=r"^Expected a spacetransformer\.Space or None\. Got "):
        SegmentationMask(_organ_array(), ORGANS, space)


@pytest.mark.parametrize(
    ("mapping", "error", "message"),
    [
        ({"": 1}, ValueError, "Expected a non-empty label name"),
        ({"a": -1}, ValueError, "Expected a label value in [0, 4294967295]. Got -1."),
        ({"a": 1.0}, TypeError, "Expected a label value of type int. Got float"),
        ({"a": 1, "b": 1}, ValueError, "Duplicate label value 1"),
    ],
    ids=["empty-name", "negative", "float", "duplicate"],
)
def test_rejects_bad_mapping_dict(mapping: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        SegmentationMask(np.zeros((1, 1, 1), np.uint8), mapping)


# --- queries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_binary_masks_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.array([0, 1, 2, 3, 7, 300, 301, 65535])
    arr = values[rng.integers(0, values.size, size=(4, 5, 6))]
    mapping = {f"s{v}": int(v) for v in values[1:]}
    mask = SegmentationMask(arr, mapping)
    assert mask.bit_depth == 16
    for subset in ([1], [2, 3], [7, 300, 301], [65535, 1], list(values[1:])):
        expected = np.isin(arr, subset)
        by_labels = mask.get_binary_mask_by_labels(subset)
        by_names = mask.get_binary_mask_by_names([f"s{v}" for v in subset])
        for got in (by_labels, by_names):
            assert got.dtype == np.bool_
            assert got.shape == arr.shape
            np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(mask.get_binary_mask_by_names("s7"), arr == 7)
    np.testing.assert_array_equal(mask.get_binary_mask_by_labels(300), arr == 300)
    np.testing.assert_array_equal(mask.get_binary_mask_by_labels(np.uint16(301)), arr == 301)
    np.testing.assert_array_equal(
        mask.get_binary_mask_by_labels([np.int64(2), 3]), (arr == 2) | (arr == 3)
    )
    np.testing.assert_array_equal(mask.to_binary(), arr != 0)


def test_binary_mask_queries_on_a_1_bit_mask() -> None:
    arr = np.zeros((2, 2, 2), bool)
    arr[1, 0, 1] = True
    mask = SegmentationMask(arr, {"lesion": 1})
    np.testing.assert_array_equal(mask.get_binary_mask_by_names("lesion"), arr)
    np.testing.assert_array_equal(mask.get_binary_mask_by_labels(1), arr)
    np.testing.assert_array_equal(mask.to_binary(), arr)
    assert mask.label_counts() == {"lesion": 1}


def test_binary_mask_accepts_tuples_and_generators(organs: SegmentationMask) -> None:
    arr = _organ_array()
    expected = (arr == 1) | (arr == 3)
    np.testing.assert_array_equal(organs.get_binary_mask_by_names(("liver", "kidney")), expected)
    np.testing.assert_array_equal(
        organs.get_binary_mask_by_names(n for n in ["liver", "kidney"]), expected
    )
    np.testing.assert_array_equal(organs.get_binary_mask_by_labels((1, 3)), expected)
    assert not organs.get_binary_mask_by_names([]).any()
    assert not organs.get_binary_mask_by_labels([]).any()


def test_binary_mask_of_a_label_named_like_a_method() -> None:
    arr = np.array([[[0, 1, 2]]], np.uint8)
    mask = SegmentationMask(arr, {"items": 1, "inverse": 2})
    np.testing.assert_array_equal(mask.get_binary_mask_by_names("items"), arr == 1)
    assert mask.label_counts() == {"items": 1, "inverse": 1}


def test_results_are_writable_copies(organs: SegmentationMask) -> None:
    for result in (
        organs.get_binary_mask_by_names("liver"),
        organs.get_binary_mask_by_labels(2),
        organs.to_binary(),
    ):
        assert result.flags.writeable
        assert not np.shares_memory(result, organs.data)
        result[...] = True
    np.testing.assert_array_equal(organs.data, _organ_array())


def test_unknown_name_raises_key_error_listing_close_matches(organs: SegmentationMask) -> None:
    with pytest.raises(
        LabelNotFoundError, match=r"^No label named 'livr' in this mask\. Did you mean 'liver'\?$"
    ):
        organs.get_binary_mask_by_names("livr")
    with pytest.raises(KeyError, match="Did you mean 'spleen'"):
        organs.get_binary_mask_by_names(["liver", "splen"])
    with pytest.raises(KeyError, match=r"^No label named 'pancreas' in this mask\.$"):
        organs.get_binary_mask_by_names("pancreas")


@pytest.mark.parametrize("label", [0, 4, 255, np.uint8(9), [1, 5]], ids=repr)
def test_unknown_label_raises_key_error(organs: SegmentationMask, label: Any) -> None:
    with pytest.raises(LabelNotFoundError, match=r"in this mask\. Known: \[1, 2, 3\]\.$"):
        organs.get_binary_mask_by_labels(label)


@pytest.mark.parametrize(
    ("label", "error", "message"),
    [
        (True, TypeError, "Expected a label value of type int. Got bool"),
        (1.0, TypeError, "Expected a label value of type int. Got float"),
        ("liver", TypeError, "Expected a label value of type int. Got str: 'liver'."),
        (None, TypeError, "Expected a label value of type int. Got NoneType: None."),
        (-1, ValueError, "Expected a label value in [0, 4294967295]. Got -1."),
    ],
    ids=["bool", "float", "name", "none", "negative"],
)
def test_rejects_bad_label_query(
    organs: SegmentationMask, label: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        organs.get_binary_mask_by_labels(label)


def test_label_counts(organs: SegmentationMask) -> None:
    assert organs.label_counts() == {"liver": 4, "spleen": 9, "kidney": 5}
    assert list(organs.label_counts()) == ["liver", "spleen", "kidney"]


def test_label_stats(organs: SegmentationMask) -> None:
    assert organs.label_stats() == {
        1: LabelStats(count=4, bbox=((0, 0), (0, 1), (0, 1))),
        2: LabelStats(count=9, bbox=((1, 1), (1, 3), (1, 3))),
        3: LabelStats(count=5, bbox=((2, 2), (3, 3), (0, 4))),
    }


# --- lazy_init ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bit_depth", "dtype"), [(1, np.bool_), (8, np.uint8), (16, np.uint16), (32, np.uint32)]
)
def test_lazy_init_with_shape(bit_depth: int, dtype: Any) -> None:
    mask = SegmentationMask.lazy_init(bit_depth, shape=(2, 3, 4))
    assert mask.shape == (2, 3, 4)
    assert mask.bit_depth == bit_depth
    assert mask.dtype == dtype
    assert not mask.data.any()
    assert len(mask.mapping) == 0
    assert mask.space == Space(shape=(2, 3, 4))
    assert not mask.data.flags.writeable


def test_lazy_init_with_space_and_with_both() -> None:
    space = Space(shape=(2, 3, 4), spacing=(3.0, 0.5, 0.5))
    from_space = SegmentationMask.lazy_init(16, space=space)
    assert from_space.shape == (2, 3, 4)
    assert from_space.space == space
    both = SegmentationMask.lazy_init(16, space=space, shape=(2, 3, 4))
    assert both == from_space
    assert SegmentationMask.lazy_init(8, shape=np.array([2, 3, 4])).shape == (2, 3, 4)
    assert SegmentationMask.lazy_init(8, shape=[np.int64(2), 3, 4]).shape == (2, 3, 4)


def test_lazy_init_needs_space_or_shape() -> None:
    with pytest.raises(
        ValueError, match=r"^Expected a space or a shape for lazy_init\. Got neither"
    ):
        SegmentationMask.lazy_init(8)


@pytest.mark.parametrize(
    "shape",
    [
        (2, 3),
        (2, 3, 4, 5),
        (),
        (0, 3, 4),
        (2, -1, 4),
        (2.5, 3, 4),
        (2, 3.0, 4),
        ("2", 3, 4),
        (True, 3, 4),
        (2, 3, None),
    ],
    ids=repr,
)
def test_lazy_init_rejects_bad_shape(shape: Any) -> None:
    with pytest.raises(ValueError, match=r"^Expected a 3-D shape of positive integer sizes\. Got "):
        SegmentationMask.lazy_init(8, shape=shape)


def test_lazy_init_rejects_space_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"array shape \(2, 3, 5\) .*Got space shape \(2, 3, 4\)"):
        SegmentationMask.lazy_init(8, space=Space(shape=(2, 3, 4)), shape=(2, 3, 5))


@pytest.mark.parametrize("space", ["space", (2, 3, 4)], ids=["str", "tuple"])
def test_lazy_init_rejects_non_space(space: Any) -> None:
    with pytest.raises(TypeError, match=r"^Expected a spacetransformer\.Space or None\. Got "):
        SegmentationMask.lazy_init(8, space=space)
    with pytest.raises(TypeError, match=r"^Expected a spacetransformer\.Space or None\. Got "):
        SegmentationMask.lazy_init(8, space=space, shape=(2, 3, 4))


@pytest.mark.parametrize("bit_depth", [0, 3, 12, 64, True, None, "8"], ids=repr)
def test_lazy_init_rejects_bad_bit_depth(bit_depth: Any) -> None:
    with pytest.raises(ValueError, match=r"^Expected a bit depth in \(1, 8, 16, 32\)\. Got "):
        SegmentationMask.lazy_init(bit_depth, shape=(2, 3, 4))


# --- add_label ----------------------------------------------------------------------------------


def test_add_label_later_labels_overwrite() -> None:
    mask = SegmentationMask.lazy_init(8, shape=(1, 3, 4))
    liver = np.zeros((1, 3, 4), bool)
    liver[0, 0, :] = True
    spleen = np.zeros((1, 3, 4), bool)
    spleen[0, 0, 3] = True
    spleen[0, 1, 1:] = True
    mask.add_label(liver, 1, "liver")
    mask.add_label(spleen, 2, "spleen")
    expected = np.zeros((1, 3, 4), np.uint8)
    expected[liver] = 1
    expected[spleen] = 2
    np.testing.assert_array_equal(mask.data, expected)
    assert mask.mapping == LabelMapping({"liver": 1, "spleen": 2})
    assert mask.mapping.items() == [("liver", 1), ("spleen", 2)]
    assert mask.label_counts() == {"liver": 3, "spleen": 4}
    assert not mask.data.flags.writeable
    assert mask.dtype == np.uint8


def test_add_label_fully_overwritten_label_stays_mapped() -> None:
    mask = SegmentationMask.lazy_init(8, shape=(1, 2, 2))
    everything = np.ones((1, 2, 2), bool)
    mask.add_label(np.eye(2, dtype=bool)[None], 1, "a")
    mask.add_label(everything, 2, "b")
    assert mask.label_counts() == {"a": 0, "b": 4}


def test_add_label_accepts_integer_masks_nonzero_is_true() -> None:
    mask = SegmentationMask.lazy_init(16, shape=(1, 2, 3))
    selection = np.array([[[0, 3, 0], [-1, 0, 255]]], dtype=np.int16)
    mask.add_label(selection, 300, "vessel")
    np.testing.assert_array_equal(mask.data, np.where(selection != 0, 300, 0))
    mask.add_label([[[1, 0, 0], [0, 0, 0]]], 301, "from_list")
    assert mask.data[0, 0, 0] == 301


def test_add_label_on_1_bit_mask() -> None:
    mask = SegmentationMask.lazy_init(1, shape=(1, 2, 2))
    mask.add_label(np.array([[[True, False], [False, True]]]), 1, "lesion")
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask.data, [[[True, False], [False, True]]])
    with pytest.raises(ValueError, match=r"Expected a label value <= 1 for bit depth 1\. Got 2\."):
        mask.add_label(np.ones((1, 2, 2), bool), 2, "other")


def test_add_label_to_a_constructed_mask_and_numpy_label(organs: SegmentationMask) -> None:
    region = np.zeros((3, 4, 5), bool)
    region[:, 0, 4] = True
    organs.add_label(region, np.uint8(9), "heart")
    assert organs.mapping["heart"] == 9
    assert type(organs.mapping["heart"]) is int
    assert organs.label_counts()["heart"] == 3


def test_add_label_keeps_read_only_view_of_data_consistent(organs: SegmentationMask) -> None:
    data = organs.data
    organs.add_label(np.ones((3, 4, 5), bool), 4, "all")
    assert (organs.data == 4).all()
    assert not data.flags.writeable
    assert not organs.data.flags.writeable


ADD_LABEL_FAILURES: list[tuple[str, Any, Any, Any, type[Exception], str]] = [
    # (id, mask, label, name, error, message) for an 8-bit (3, 4, 5) mask with liver/spleen/kidney
    (
        "shape-mismatch",
        np.ones((3, 4, 4), bool),
        9,
        "heart",
        ValueError,
        "Expected a binary mask of shape (3, 4, 5). Got (3, 4, 4).",
    ),
    (
        "transposed",
        np.ones((5, 4, 3), bool),
        9,
        "heart",
        ValueError,
        "Expected a binary mask of shape (3, 4, 5). Got (5, 4, 3).",
    ),
    (
        "2-d-mask",
        np.ones((4, 5), bool),
        9,
        "heart",
        ValueError,
        "Expected a binary mask with 3 dimensions (z, y, x). Got 2",
    ),
    (
        "float-mask",
        np.ones((3, 4, 5), np.float64),
        9,
        "heart",
        TypeError,
        "Expected a binary mask of integer or bool dtype. Got dtype float64.",
    ),
    ("object-mask", np.ones((3, 4, 5), object), 9, "heart", TypeError, "Got dtype object."),
    (
        "duplicate-label",
        np.ones((3, 4, 5), bool),
        2,
        "heart",
        ValueError,
        "Label value 2 already exists (name 'spleen').",
    ),
    (
        "duplicate-name",
        np.ones((3, 4, 5), bool),
        9,
        "liver",
        ValueError,
        "Label name 'liver' already exists (value 1).",
    ),
    (
        "label-0",
        np.ones((3, 4, 5), bool),
        0,
        "background",
        ValueError,
        "Expected a label value >= 1 (0 is background). Got 0.",
    ),
    (
        "label-256",
        np.ones((3, 4, 5), bool),
        256,
        "heart",
        ValueError,
        "Expected a label value <= 255 for bit depth 8. Got 256.",
    ),
    (
        "label-negative",
        np.ones((3, 4, 5), bool),
        -1,
        "heart",
        ValueError,
        "Expected a label value in [0, 4294967295]. Got -1.",
    ),
    (
        "label-float",
        np.ones((3, 4, 5), bool),
        9.0,
        "heart",
        TypeError,
        "Expected a label value of type int. Got float: 9.0.",
    ),
    (
        "label-bool",
        np.ones((3, 4, 5), bool),
        True,
        "heart",
        TypeError,
        "Expected a label value of type int. Got bool: True.",
    ),
    (
        "label-str",
        np.ones((3, 4, 5), bool),
        "9",
        "heart",
        TypeError,
        "Expected a label value of type int. Got str: '9'.",
    ),
    (
        "name-empty",
        np.ones((3, 4, 5), bool),
        9,
        "",
        ValueError,
        "Expected a non-empty label name. Got ''.",
    ),
    (
        "name-blank",
        np.ones((3, 4, 5), bool),
        9,
        "   ",
        ValueError,
        "Expected a non-empty label name. Got '   '.",
    ),
    (
        "name-int",
        np.ones((3, 4, 5), bool),
        9,
        9,
        TypeError,
        "Expected a label name of type str. Got int: 9.",
    ),
]


@pytest.mark.parametrize(
    ("selection", "label", "name", "error", "message"),
    [case[1:] for case in ADD_LABEL_FAILURES],
    ids=[case[0] for case in ADD_LABEL_FAILURES],
)
def test_rejects_bad_add_label_and_changes_nothing(
    organs: SegmentationMask,
    selection: Any,
    label: Any,
    name: Any,
    error: type[Exception],
    message: str,
) -> None:
    before = _snapshot(organs)
    with pytest.raises(error, match=re.escape(message)):
        organs.add_label(selection, label, name)
    assert _unchanged(organs, before)
    # the mask still works after the failure
    organs.add_label(np.ones((3, 4, 5), bool), 10, "everything")
    assert (organs.data == 10).all()


def test_add_label_beyond_16_bits() -> None:
    mask = SegmentationMask.lazy_init(16, shape=(1, 1, 2))
    before = _snapshot(mask)
    with pytest.raises(ValueError, match=r"<= 65535 for bit depth 16\. Got 65536\."):
        mask.add_label(np.ones((1, 1, 2), bool), 65536, "x")
    assert _unchanged(mask, before)
    wide = SegmentationMask.lazy_init(32, shape=(1, 1, 2))
    wide.add_label(np.array([[[True, False]]]), 2**32 - 1, "top")
    assert wide.data[0, 0, 0] == 2**32 - 1


# --- protocol -----------------------------------------------------------------------------------


def test_equality(organs: SegmentationMask) -> None:
    same = SegmentationMask(_organ_array(), LabelMapping(dict(reversed(ORGANS.items()))))
    assert same == organs
    assert organs != "mask"
    with pytest.raises(TypeError, match="unhashable"):
        hash(organs)


def test_inequality_on_each_component(organs: SegmentationMask) -> None:
    other_data = _organ_array()
    other_data[2, 0, 0] = 3
    assert SegmentationMask(other_data, ORGANS) != organs
    assert SegmentationMask(_organ_array(), {**ORGANS, "heart": 4}) != organs
    assert SegmentationMask(_organ_array(), {"liver": 1, "spleen": 2, "kidney_r": 3}) != organs
    moved = Space(shape=(3, 4, 5), origin=(0.0, 0.0, 1.0))
    assert SegmentationMask(_organ_array(), ORGANS, moved) != organs
    spaced = Space(shape=(3, 4, 5), spacing=(1.0, 1.0, 2.0))
    assert SegmentationMask(_organ_array(), ORGANS, spaced) != organs
    assert SegmentationMask(_organ_array(), ORGANS, bit_depth=16) != organs
    binary = _organ_array() > 0
    assert SegmentationMask(binary, {"a": 1}) != SegmentationMask(binary, {"a": 1}, bit_depth=8)


def test_repr(organs: SegmentationMask) -> None:
    space = Space(shape=(3, 4, 5), spacing=(2.5, 0.123456, 0.7))
    mask = SegmentationMask(_organ_array(), ORGANS, space)
    assert repr(mask) == (
        "SegmentationMask(shape=(3, 4, 5), bit_depth=8, labels={'liver': 1, 'spleen': 2, "
        "'kidney': 3}, spacing=(2.5, 0.1235, 0.7))"
    )


def test_repr_abbreviates_many_labels() -> None:
    mapping = {f"l{i}": i for i in range(1, 12)}
    text = repr(SegmentationMask(np.zeros((1, 1, 1), np.uint8), mapping))
    assert "'l8': 8}" in text
    assert "l9" not in text
    assert "+3 more" in text


@pytest.mark.parametrize("how", ["copy", "deepcopy"])
def test_copies_are_independent(organs: SegmentationMask, how: str) -> None:
    duplicate = copy.copy(organs) if how == "copy" else copy.deepcopy(organs)
    assert duplicate == organs
    assert duplicate is not organs
    assert not np.shares_memory(duplicate.data, organs.data)
    assert not duplicate.data.flags.writeable
    duplicate.add_label(np.ones((3, 4, 5), bool), 4, "heart")
    assert "heart" not in organs.mapping
    np.testing.assert_array_equal(organs.data, _organ_array())
    assert duplicate != organs
    organs.add_label(np.ones((3, 4, 5), bool), 5, "lung")
    assert "lung" not in duplicate.mapping
    assert (duplicate.data == 4).all()


def test_deepcopy_inside_a_container(organs: SegmentationMask) -> None:
    holder = copy.deepcopy({"mask": organs, "again": organs})
    assert holder["mask"] == organs
    assert holder["mask"] is holder["again"]  # the memo is honoured


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(organs: SegmentationMask, protocol: int) -> None:
    space = Space(shape=(3, 4, 5), spacing=(2.0, 0.5, 0.5), origin=(1.0, 2.0, 3.0))
    mask = SegmentationMask(_organ_array(), ORGANS, space)
    restored = pickle.loads(pickle.dumps(mask, protocol=protocol))
    assert restored == mask
    assert restored.space == space
    assert restored.dtype == np.uint8
    assert not restored.data.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        restored.data[0, 0, 0] = 0
    restored.add_label(np.ones((3, 4, 5), bool), 7, "all")  # owns its data
    assert (restored.data == 7).all()
    np.testing.assert_array_equal(mask.data, _organ_array())


@pytest.mark.parametrize("bit_depth", [1, 16, 32])
def test_pickle_round_trip_other_bit_depths(bit_depth: int) -> None:
    arr = np.zeros((2, 3, 4), np.uint32)
    arr[1, 1:, 2:] = 1
    mask = SegmentationMask(arr, {"a": 1}, bit_depth=bit_depth)
    restored = pickle.loads(pickle.dumps(mask))
    assert restored == mask
    assert restored.bit_depth == bit_depth
    assert restored.dtype == mask.dtype


def test_pickle_round_trip_of_a_512x512x300_mask() -> None:
    arr = np.zeros((300, 512, 512), dtype=np.uint8)
    arr[10:120, 100:300, 50:250] = 1
    arr[100:200, 250:400, 200:450] = 2  # overlaps label 1
    arr[250:300, 0:512, 500:512] = 3  # touches three array edges
    arr[299, 511, 0] = 4
    mask = SegmentationMask(arr, {"liver": 1, "spleen": 2, "kidney": 3, "dot": 4})
    arr[...] = 0  # the caller mutates its array after construction
    assert mask.data.any()
    assert mask.label_counts() == {
        "liver": 110 * 200 * 200 - 20 * 50 * 50,
        "spleen": 100 * 150 * 250,
        "kidney": 50 * 512 * 12,
        "dot": 1,
    }
    restored = pickle.loads(pickle.dumps(mask))
    assert restored == mask
    assert restored.shape == (300, 512, 512)
    assert not restored.data.flags.writeable
    assert not np.shares_memory(restored.data, mask.data)


# --- attributes (issue 19) ---------------------------------------------------------------------


def test_attributes_are_kept_by_copies_pickles_and_alignment() -> None:
    data = np.zeros((2, 3, 4), np.uint8)
    data[1, 2, 3] = 1
    mask = SegmentationMask(data, {"liver": 1}, attributes={"study": "A", "n": [1, 2]})
    assert mask.attributes == {"study": "A", "n": [1, 2]}
    assert SegmentationMask(data, {"liver": 1}).attributes == {}
    for other in (copy.copy(mask), copy.deepcopy(mask), pickle.loads(pickle.dumps(mask))):
        assert other.attributes == mask.attributes
    deep = copy.deepcopy(mask)
    deep.attributes["n"].append(3)  # a copy owns its attributes
    assert mask.attributes["n"] == [1, 2]
    assert mask.align_to(mask.space).attributes == mask.attributes


def test_attributes_must_be_a_string_keyed_mapping() -> None:
    data = np.zeros((1, 1, 1), np.uint8)
    with pytest.raises(InvalidTypeError, match=r"Expected attributes as a mapping \(dict\)"):
        SegmentationMask(data, {}, attributes=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"with string keys\. Got the key 1"):
        SegmentationMask(data, {}, attributes={1: "a"})  # type: ignore[dict-item]


# --- construction: one counting pass, kept for later ----------------------------------------------


def test_counts_of_the_construction_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from medmask import mask as mask_module

    arr = _organ_array()
    arr[0, 3, 4] = 9  # a gap in the values: the check needs the counts
    mask = SegmentationMask(arr, {**ORGANS, "nine": 9})

    def no_recount(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("counted again")

    monkeypatch.setattr(mask_module, "label_counts", no_recount)
    assert mask.label_counts() == {"liver": 4, "spleen": 9, "kidney": 5, "nine": 1}
    assert copy.copy(mask).label_counts() == mask.label_counts()
    monkeypatch.undo()
    mask.add_label(arr == 0, 20, "rest")  # overwrites: counted again when asked
    assert mask.label_counts() == {"liver": 4, "spleen": 9, "kidney": 5, "nine": 1, "rest": 41}


def test_a_mapping_naming_every_value_needs_no_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from medmask import mask as mask_module

    calls: list[int] = []
    real = mask_module.copy_counting
    monkeypatch.setattr(
        mask_module, "copy_counting", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    arr = _organ_array()
    mask = SegmentationMask(arr, {**ORGANS, "unused": 200})  # 1..3 all named
    assert calls == []
    np.testing.assert_array_equal(mask.data, arr)
    assert not np.shares_memory(mask.data, arr)
    assert mask.label_counts() == {"liver": 4, "spleen": 9, "kidney": 5, "unused": 0}
    with pytest.raises(InvalidValueError, match="missing from the mapping: 3"):
        SegmentationMask(arr, {"liver": 1, "spleen": 2, "other": 4})  # 3 unnamed
    assert calls == [1]


def test_construction_runs_on_the_package_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import Executor

    from medmask import mask as mask_module

    tasks: list[int] = []

    class Inline(Executor):
        def map(self, fn: Any, *iterables: Any, **kwargs: Any) -> Any:
            items = list(iterables[0])
            tasks.append(len(items))
            return iter([fn(item) for item in items])

    monkeypatch.setattr(mask_module, "_construction_executor", [Inline])
    rng = np.random.default_rng(5)
    arr = rng.choice(np.array([0, 1, 3], np.uint8), (320, 128, 128))  # 5 blocks of 1 MiB
    arr[::2] = 0
    mask = SegmentationMask(arr, {"a": 1, "c": 3})  # 2 is unnamed: the values are counted
    assert tasks
    assert tasks[0] > 1
    np.testing.assert_array_equal(mask.data, arr)
    assert mask.label_counts() == {"a": int((arr == 1).sum()), "c": int((arr == 3).sum())}


def test_construction_errors_come_before_the_copy() -> None:
    arr = _organ_array().astype(np.int16)
    arr[0, 0, 0] = -3
    arr[1, 0, 0] = -1
    with pytest.raises(
        InvalidValueError, match=re.escape("non-negative label values. Got [-3, -1]")
    ):
        SegmentationMask(arr, ORGANS)
    with pytest.raises(InvalidValueError, match="Expected label values <= 255 for bit depth 8"):
        SegmentationMask(np.full((2, 2, 2), 300, np.uint16), {"a": 300}, bit_depth=8)


def test_named_by_values_counts_once() -> None:
    arr = _organ_array()
    arr[2, 0, 0] = 7
    seen: list[list[int]] = []

    def names(values: list[int]) -> LabelMapping:
        seen.append(values)
        return LabelMapping({f"v{v}": v for v in values})

    mask = SegmentationMask._named_by_values(arr, names, attributes={"k": 1})
    assert seen == [[1, 2, 3, 7]]
    assert mask.label_counts() == {"v1": 4, "v2": 9, "v3": 5, "v7": 1}
    assert mask.attributes == {"k": 1}
    assert mask.bit_depth == 8
    np.testing.assert_array_equal(mask.data, arr)
