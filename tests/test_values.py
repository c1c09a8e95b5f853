"""values: match_allowed_values == np.isin, label_counts and label_stats vs numpy references."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from medmask import LabelStats, label_counts, label_stats, match_allowed_values, values
from medmask.values import copy_counting, present_values, value_bounds

DTYPES = [np.bool_, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64]

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _range_of(dtype: Any) -> tuple[int, int]:
    if np.dtype(dtype) == np.bool_:
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


@st.composite
def label_arrays(draw: st.DrawFn, dtypes: list[Any] = DTYPES, max_side: int = 6) -> np.ndarray:
    """Small arrays whose values cluster (so runs and repeats occur) but may span the dtype."""
    dtype = draw(st.sampled_from(dtypes))
    lo, hi = _range_of(dtype)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=max_side))
    if dtype is np.bool_:
        elements: st.SearchStrategy[Any] = st.booleans()
    else:
        base = draw(st.integers(lo, hi))
        near = st.integers(max(lo, base - 4), min(hi, base + 4))
        elements = st.one_of(near, st.integers(lo, hi), st.sampled_from([lo, hi, max(lo, 0)]))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def allowed_values(draw: st.DrawFn, arr: np.ndarray) -> list[int]:
    """Runs of consecutive values, lone values, values present in ``arr`` and out-of-range ones."""
    lo, hi = _range_of(arr.dtype)
    wide = st.integers(min(lo, -(2**40)), max(hi, 2**40))
    values: list[int] = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.one_of(st.integers(lo - 3, hi), wide))
        values.extend(range(start, start + draw(st.integers(1, 12))))
    values += draw(st.lists(wide, max_size=4))
    if arr.size:
        flat = arr.ravel()
        values += [int(flat[i]) for i in draw(st.lists(st.integers(0, flat.size - 1), max_size=3))]
    values += draw(st.lists(st.sampled_from([lo - 1, hi + 1, -1, 0, 1, 2**32, -(2**31) - 1])))
    # Beyond int64, numpy itself turns a list of ints into float64 (see test_..._beyond_int64).
    return draw(st.permutations([v for v in values if -(2**63) <= v < 2**63]))


def _fits_int64(values: list[int]) -> bool:
    return all(-(2**63) <= v < 2**63 for v in values)


def _membership(arr: np.ndarray, allowed: list[int]) -> np.ndarray:
    """Plain-Python reference: is each element's integer value in ``allowed``?"""
    wanted = set(allowed)
    return np.array([int(v) in wanted for v in arr.ravel().tolist()], bool).reshape(arr.shape)


# --- match_allowed_values -----------------------------------------------------------------------


@FAST
@given(data=st.data())
def test_match_allowed_values_equals_isin(data: st.DataObject) -> None:
    arr = data.draw(label_arrays())
    allowed = data.draw(allowed_values(arr))
    got = match_allowed_values(arr, allowed)
    assert got.dtype == np.bool_
    assert got.shape == arr.shape
    np.testing.assert_array_equal(got, np.isin(arr, np.array(allowed, dtype=np.int64)))
    np.testing.assert_array_equal(got, _membership(arr, allowed))


@FAST
@given(arr=label_arrays())
def test_match_allowed_values_with_nothing_allowed(arr: np.ndarray) -> None:
    for empty in ([], (), np.array([], dtype=np.int64), set()):
        got = match_allowed_values(arr, empty)
        assert got.shape == arr.shape
        assert got.dtype == np.bool_
        assert not got.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_match_allowed_values_runs_and_edges(dtype: Any) -> None:
    lo, hi = _range_of(dtype)
    values = sorted(v for v in {lo, lo + 1, max(lo, hi - 2), hi - 1, hi, 0, 1} if lo <= v <= hi)
    arr = np.array(values * 2, dtype=dtype).reshape(2, 1, -1)
    cases = [
        [lo],
        [hi],
        [lo - 1, hi + 1],  # both just outside the dtype
        list(range(lo - 5, lo + 2)),  # run starting below the dtype
        list(range(hi - 1, hi + 6)),  # run ending above the dtype
        [-(2**63), 2**63 - 1],
        [0],
        list(range(-3, 4)),
    ]
    for allowed in cases:
        got = match_allowed_values(arr, allowed)
        np.testing.assert_array_equal(got, np.isin(arr, allowed))
        if _fits_int64(allowed) or arr.dtype.itemsize < 8:
            np.testing.assert_array_equal(got, _membership(arr, allowed))


def test_match_allowed_values_accepts_any_iterable() -> None:
    arr = np.array([[[0, 1, 2, 3, 4, 5]]], dtype=np.uint8)
    expected = np.isin(arr, [1, 2, 5])
    for allowed in (
        [1, 2, 5],
        (5, 2, 1),
        {1, 2, 5},
        frozenset({1, 2, 5}),
        {1: "a", 2: "b", 5: "c"}.keys(),
        (v for v in [1, 2, 5]),
        np.array([5, 1, 2], dtype=np.uint64),
        np.array([[1, 2], [5, 5]]),
        [np.int64(1), np.uint8(2), 5],
        [1, 1, 2, 2, 5],
    ):
        np.testing.assert_array_equal(match_allowed_values(arr, allowed), expected)
    np.testing.assert_array_equal(match_allowed_values(arr, range(1, 3)), np.isin(arr, [1, 2]))
    np.testing.assert_array_equal(match_allowed_values(arr, 3), arr == 3)


def test_match_allowed_values_accepts_bool_and_list_arrays() -> None:
    arr = np.array([[[True, False, True]]])
    np.testing.assert_array_equal(match_allowed_values(arr, [1]), arr)
    np.testing.assert_array_equal(match_allowed_values(arr, [True]), arr)
    np.testing.assert_array_equal(match_allowed_values(arr, [0]), ~arr)
    np.testing.assert_array_equal(match_allowed_values(arr, [2, -1]), np.zeros_like(arr))
    np.testing.assert_array_equal(match_allowed_values([[1, 2], [3, 4]], [2, 3]), [[0, 1], [1, 0]])


def test_match_allowed_values_uint64_beyond_int64() -> None:
    big = 2**63 + 5
    arr = np.array([big, big + 1, 1, 2**64 - 1], dtype=np.uint64)
    for allowed in ([big], [big, big + 1], [2**64 - 1, 1], np.array([big], dtype=np.uint64)):
        np.testing.assert_array_equal(
            match_allowed_values(arr, allowed), np.isin(arr, np.asarray(allowed, dtype=np.uint64))
        )


def test_match_allowed_values_beyond_int64_follows_isin() -> None:
    # A list mixing int64 and larger ints becomes float64 in numpy, in np.isin as here: values
    # within 2**63 of each other then compare equal. Documented, not relied on by masks.
    top = 2**63 - 1
    arr = np.array([top - 2, top - 1, top], dtype=np.int64)
    allowed = list(range(top - 1, top + 6))
    np.testing.assert_array_equal(match_allowed_values(arr, allowed), np.isin(arr, allowed))
    small = np.array([0, 5, 255], dtype=np.uint8)
    for allowed in ([2**64, 5], [-(2**63) - 1, 255], [2**63, -1, 0]):
        np.testing.assert_array_equal(match_allowed_values(small, allowed), np.isin(small, allowed))
        np.testing.assert_array_equal(
            match_allowed_values(small, allowed), _membership(small, allowed)
        )


def test_match_allowed_values_non_integer_allowed_falls_back_to_isin() -> None:
    arr = np.array([[[0, 1, 2, 3]]], dtype=np.int32)
    np.testing.assert_array_equal(match_allowed_values(arr, [1.0, 2.5]), np.isin(arr, [1.0, 2.5]))
    np.testing.assert_array_equal(match_allowed_values(arr, [2**70, 3]), arr == 3)


def test_match_allowed_values_on_empty_array() -> None:
    arr = np.zeros((0, 3, 2), dtype=np.uint16)
    got = match_allowed_values(arr, [0, 1])
    assert got.shape == (0, 3, 2)
    assert got.dtype == np.bool_


# --- label_counts -------------------------------------------------------------------------------


def _counts_reference(arr: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(arr, return_counts=True)
    return {int(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)}


@FAST
@given(arr=label_arrays(dtypes=[*DTYPES, np.int8, np.uint64], max_side=8))
def test_label_counts_equals_unique(arr: np.ndarray) -> None:
    got = label_counts(arr)
    assert got == _counts_reference(arr)
    assert all(type(k) is int and type(v) is int for k, v in got.items())
    assert present_values(arr) == sorted(got)


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.zeros((0, 4), np.uint8), {}),
        (np.zeros((2, 2, 2), bool), {0: 8}),
        (np.ones((2, 2, 2), bool), {1: 8}),
        (np.array([-5, 0, -5, 7], np.int16), {-5: 2, 0: 1, 7: 1}),
        (np.array([2**32 - 1, 0, 2**32 - 1], np.uint32), {0: 1, 2**32 - 1: 2}),  # sparse values
        (np.array([(1 << 20) - 1, 3], np.uint32), {3: 1, (1 << 20) - 1: 1}),  # largest bincount
        (np.array([[[3]]], np.uint8), {3: 1}),
        (np.arange(6, dtype=np.uint8).reshape(2, 3)[:, ::2], {0: 1, 2: 1, 3: 1, 5: 1}),  # view
    ],
    ids=["empty", "all-false", "all-true", "negative", "sparse", "bincount-edge", "single", "view"],
)
def test_label_counts_cases(arr: np.ndarray, expected: dict[int, int]) -> None:
    assert label_counts(arr) == expected


def test_label_counts_across_blocks() -> None:
    from medmask import values

    n = 2 * values._BLOCK + 3  # more than two of the blocks bincount works in
    arr = np.zeros(n, dtype=np.uint16)
    arr[:7] = 9
    arr[values._BLOCK - 1 : values._BLOCK + 1] = 4
    arr[-1] = 65535
    assert label_counts(arr.reshape(1, 1, -1)) == {0: n - 10, 9: 7, 4: 2, 65535: 1}


# --- label_stats --------------------------------------------------------------------------------


def _stats_reference(arr: np.ndarray) -> dict[int, LabelStats]:
    out = {}
    for value in np.unique(arr).tolist():
        if value == 0:
            continue
        where = np.nonzero(arr == value)
        out[int(value)] = LabelStats(
            count=int(where[0].size),
            bbox=tuple((int(axis.min()), int(axis.max())) for axis in where),
        )
    return out


@st.composite
def volumes(draw: st.DrawFn) -> np.ndarray:
    """Small 3-D label volumes: few labels, blocky or scattered, any side possibly 1."""
    dtype = draw(st.sampled_from([np.bool_, np.uint8, np.uint16, np.int32, np.uint32, np.int64]))
    shape = draw(st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 7)))
    lo, hi = _range_of(dtype)
    labels = draw(st.lists(st.integers(max(lo, -3), hi), min_size=1, max_size=4, unique=True))
    arr = np.zeros(shape, dtype=dtype)
    for _ in range(draw(st.integers(0, 5))):
        starts = [draw(st.integers(0, s - 1)) for s in shape]
        stops = [draw(st.integers(a + 1, s)) for a, s in zip(starts, shape, strict=True)]
        box = tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))
        arr[box] = draw(st.sampled_from(labels))
    if draw(st.booleans()):  # scattered voxels on top
        noise = draw(hnp.arrays(dtype, shape, elements=st.sampled_from([0, *labels])))
        arr = np.where(noise != 0, noise, arr).astype(dtype)
    return arr


@settings(max_examples=150, deadline=None)
@given(arr=volumes())
@example(arr=np.zeros((3, 4, 5), np.uint8))  # all zero
@example(arr=np.zeros((1, 1, 1), np.int64))
@example(arr=np.pad(np.ones((1, 1, 1), np.uint16) * 7, ((2, 0), (0, 3), (1, 1))))  # single voxel
@example(arr=np.ones((2, 3, 4), bool))  # label touching every edge
@example(arr=np.eye(4, dtype=bool)[None])  # bool, 1-length axis
@example(arr=np.eye(4, dtype=np.uint32)[:, None, :] * (2**32 - 1))  # 1-length middle axis
@example(arr=np.arange(1, 8, dtype=np.int32).reshape(7, 1, 1))  # every voxel its own label
@example(arr=np.array([[[0, 5, 5, 0, 5]]], np.uint8))  # two runs of one label in a row
def test_label_stats_matches_reference(arr: np.ndarray) -> None:
    got = label_stats(arr)
    assert got == _stats_reference(arr)
    assert {v: s.count for v, s in got.items()} == {
        v: c for v, c in label_counts(arr).items() if v != 0
    }


def test_label_stats_edges_explicitly() -> None:
    arr = np.zeros((4, 5, 6), np.uint8)
    arr[0, 0, 0] = 1
    arr[3, 4, 5] = 1
    arr[1:3, :, 5] = 2
    assert label_stats(arr) == {
        1: LabelStats(count=2, bbox=((0, 3), (0, 4), (0, 5))),
        2: LabelStats(count=10, bbox=((1, 2), (0, 4), (5, 5))),
    }
    assert label_stats(np.zeros((4, 5, 6), np.uint8)) == {}


def test_label_stats_on_non_contiguous_view() -> None:
    base = np.zeros((4, 6, 8), np.uint8)
    base[1, 2, 4] = 3
    base[3, 4, 6] = 3
    view = base[::-2, ::2, ::2]  # reversed z, strided y and x
    assert label_stats(view) == _stats_reference(view)


@pytest.mark.parametrize(
    "arr",
    [np.zeros((2, 3), np.uint8), np.zeros((1, 1, 1, 1), np.uint8), np.zeros(4, np.uint8)],
    ids=["2-d", "4-d", "1-d"],
)
def test_label_stats_rejects_non_3d(arr: np.ndarray) -> None:
    with pytest.raises(ValueError, match=rf"^Expected a 3-D array\. Got {arr.ndim} dimensions\.$"):
        label_stats(arr)


def test_label_stats_of_empty_volume() -> None:
    assert label_stats(np.zeros((0, 2, 2), np.uint8)) == {}
    assert label_stats(np.zeros((2, 2, 0), np.uint8)) == {}


# --- counting at memory speed: blocks, runs, the fused copy --------------------------------------


def _reference_counts(arr: np.ndarray) -> dict[int, int]:
    values, n = np.unique(arr, return_counts=True)
    return dict(zip(values.tolist(), n.tolist(), strict=True))


class _InlineExecutor(Executor):
    """Runs ``map`` inline and remembers how many tasks it was given."""

    def __init__(self) -> None:
        self.tasks: list[int] = []

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **_: Any) -> Iterator[Any]:
        items = list(iterables[0])
        self.tasks.append(len(items))
        return iter([fn(item) for item in items])


@FAST
@given(label_arrays(max_side=9))
def test_copy_counting_is_a_copy_and_its_counts(arr: np.ndarray) -> None:
    if arr.size == 0:
        return
    low, high = value_bounds(arr)
    assert (low, high) == (int(arr.min()) if arr.dtype.kind == "i" else 0, int(arr.max()))
    dtype = arr.dtype if low < 0 else np.min_scalar_type(high)
    out, counts = copy_counting(arr, dtype)
    assert counts == _reference_counts(arr)
    assert out.dtype == dtype
    assert out.flags.c_contiguous
    assert out.flags.owndata
    np.testing.assert_array_equal(out, arr)
    assert not np.shares_memory(out, arr)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int8, np.uint16, np.int32, np.uint64])
def test_counting_across_blocks_of_runs_and_of_noise(dtype: Any) -> None:
    # blocks of long runs (counted by run) next to blocks of noise (counted voxel by voxel)
    rng = np.random.default_rng(7)
    top = 1 if dtype is np.bool_ else min(120, int(np.iinfo(dtype).max))
    slices = values.BLOCK_BYTES // (64 * 64 * np.dtype(dtype).itemsize)
    arr = np.zeros((3 * slices + 1, 64, 64), dtype=dtype)
    arr[: slices // 2, 10:40] = top
    arr[slices : 2 * slices] = rng.integers(0, top + 1, arr[slices : 2 * slices].shape)
    arr[-1, -1, -1] = top
    expected = _reference_counts(arr)
    executor = _InlineExecutor()
    assert label_counts(arr) == expected
    assert label_counts(arr, executor=executor) == expected
    assert label_counts(arr.transpose(2, 1, 0)) == expected  # a view, counted slab by slab
    out, counts = copy_counting(arr.transpose(2, 1, 0), dtype, executor=executor)
    assert counts == expected
    np.testing.assert_array_equal(out, arr.transpose(2, 1, 0))
    assert executor.tasks  # spread over tasks
    assert all(n > 1 for n in executor.tasks)


def test_wide_values_are_counted_without_bins() -> None:
    arr = np.zeros((4, 300, 300), np.uint32)
    arr[1] = 2**32 - 1
    arr[2, :5] = 2**31
    arr[3] = np.arange(300 * 300, dtype=np.uint32).reshape(300, 300) * 40_000  # noise-like
    assert label_counts(arr) == _reference_counts(arr)
    out, counts = copy_counting(arr, np.uint32)
    assert counts == _reference_counts(arr)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int8, np.uint16, np.int16])
def test_small_values_are_counted_without_sorting(
    dtype: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8- and 16-bit values go in bins: np.unique (a sort of the whole array) is never needed
    rng = np.random.default_rng(3)
    info = (0, 1) if dtype is np.bool_ else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    arr = rng.integers(info[0], info[1] + 1, (8, 200, 200)).astype(dtype)
    arr[:4] = arr[0, 0, 0]  # runs too
    expected = _reference_counts(arr)

    def no_sort(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("np.unique called")

    monkeypatch.setattr(np, "unique", no_sort)
    assert label_counts(arr) == expected
    assert copy_counting(arr, dtype)[1] == expected
