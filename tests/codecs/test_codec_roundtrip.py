"""Exact round trips of the medmask codecs."""

from __future__ import annotations

import numpy as np
import pytest
from codec_helpers import DTYPES, label_volume
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medmask.codecs import BinaryCodec, LabelCodec, choose_codec, decode
from medmask.errors import CodecError

SHAPES = [(1,), (7,), (1, 1), (3, 5), (1, 1, 1), (1, 9, 13), (4, 1, 17), (5, 7, 9), (3, 8, 16)]


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def roundtrip(codec: BinaryCodec | LabelCodec, a: np.ndarray) -> np.ndarray:
    data = codec.encode(a)
    got = codec.decode(data, shape=a.shape, dtype=a.dtype)
    assert_same(got, a)
    assert_same(decode(data), a)
    assert_same(codec.decode(memoryview(data)), a)
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fill", ["zeros", "ones", "single", "random01"])
def test_binary_values_roundtrip_in_both_codecs(
    codec_cls: type, dtype: type, shape: tuple[int, ...], fill: str
) -> None:
    rng = np.random.default_rng(1)
    a = np.zeros(shape, dtype=dtype)
    if fill == "ones":
        a[...] = 1
    elif fill == "single":
        a[tuple(s // 2 for s in shape)] = 1
    elif fill == "random01":
        a = rng.integers(0, 2, size=shape).astype(dtype)
    roundtrip(codec_cls(), a)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("shape", SHAPES)
def test_labels_roundtrip_full_range(dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(2)
    info = np.iinfo(dtype)
    a = rng.integers(0, int(info.max) + 1, size=shape, dtype=dtype)
    a.reshape(-1)[0] = info.max
    roundtrip(LabelCodec(), a)
    roundtrip(LabelCodec(), np.full(shape, info.max, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("level", [1, 3, 9, 19])
def test_structured_volumes_roundtrip(dtype: type, level: int) -> None:
    a = label_volume((12, 33, 41), dtype, seed=level)
    codec = choose_codec(a, level=level)
    roundtrip(codec, a)
    roundtrip(LabelCodec(level=level), a)
    assert len(codec.encode(a)) < a.nbytes


def test_structured_volume_is_small() -> None:
    a = label_volume((40, 96, 96), np.uint8, seed=3, n=12)
    data = LabelCodec().encode(a)
    roundtrip(LabelCodec(), a)
    assert len(data) * 20 < a.nbytes


def test_zero_size_arrays(codec_cls: type) -> None:
    for shape in [(0,), (0, 5), (3, 0, 2), (2, 3, 0)]:
        roundtrip(codec_cls(), np.zeros(shape, dtype=np.uint8))


def test_non_contiguous_and_big_endian_input(codec_cls: type) -> None:
    base = label_volume((10, 20, 30), np.uint8, seed=4) > 0
    for view in [base[::2], base[:, ::-1], base.transpose(2, 1, 0), base[..., 3:17]]:
        assert not view.flags.c_contiguous
        roundtrip(codec_cls(), view)
    big = np.ascontiguousarray(base.astype(">u2"))
    got = codec_cls().decode(codec_cls().encode(big))
    assert got.dtype == np.dtype(">u2")  # the dtype is given back exactly, byte order included
    np.testing.assert_array_equal(got, big)
    assert got.tobytes() == big.tobytes()


@pytest.mark.parametrize(
    "dtype", ["i1", "<i2", ">i2", "<i4", ">i4", "<i8", ">i8", "<u8", ">u8", ">u4", "|b1"]
)
def test_every_integer_dtype_round_trips_exactly(codec_cls: type, dtype: str) -> None:
    base = label_volume((6, 9, 13), np.uint8, seed=9) % 100  # fits int8 too
    values = base > 0 if codec_cls is BinaryCodec or dtype == "|b1" else base
    array = values.astype(dtype)
    if codec_cls is LabelCodec and np.dtype(dtype).itemsize == 8:
        array[2, 3, 4] = 2**40 + 7  # needs more than 4 value bytes
    data = codec_cls().encode(array)
    got = codec_cls().decode(data)
    assert got.dtype == np.dtype(dtype)
    assert got.tobytes() == array.tobytes()
    assert codec_cls().decode(data, dtype=dtype).shape == array.shape


def test_constant_above_32_bits_uses_runs() -> None:
    a = np.full((3, 4), 2**33, np.uint64)
    got = LabelCodec().decode(LabelCodec().encode(a))
    np.testing.assert_array_equal(got, a)


def test_negative_labels_are_refused(codec_cls: type) -> None:
    with pytest.raises(CodecError, match=r"non-negative values.*minimum of -1"):
        codec_cls().encode(np.array([0, -1, 1], np.int16))


def test_labels_escape_and_long_runs() -> None:
    a = np.zeros(300_000, dtype=np.uint16)
    a[254:509] = 7  # run of exactly 255: escaped
    a[1000:1254] = 9  # run of 254: not escaped
    a[100_000:] = 65535
    roundtrip(LabelCodec(), a)
    roundtrip(LabelCodec(), a.reshape(3, 100_000))


def test_xor_transform_used_for_repeated_slices() -> None:
    rng = np.random.default_rng(5)
    slab = rng.integers(0, 40, size=(1, 64, 64), dtype=np.uint8)
    a = np.repeat(slab, 16, axis=0)
    a[8:, :10, :10] = 3
    data = LabelCodec().encode(a)
    roundtrip(LabelCodec(), a)
    assert data[4] == 2  # labels kind
    assert data[7] == 1  # runs mode
    assert len(data) < 16 * 64 * 64 // 8


def test_tiny_rows_use_accumulate_path() -> None:
    a = np.zeros((500, 2, 3), dtype=np.uint32)
    a[::7, 1, 2] = 70000
    a[100:300] = 5
    roundtrip(LabelCodec(), a)


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype(d) for d in DTYPES]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=12),
    ),
    st.integers(1, 22),
)
def test_hypothesis_arrays(a: np.ndarray, level: int) -> None:
    roundtrip(LabelCodec(level=level), a)
    if a.dtype == np.bool_ or a.size == 0 or int(a.max()) <= 1:
        roundtrip(BinaryCodec(level=level), a)
    roundtrip(choose_codec(a), a)


@st.composite
def label_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 24), min_size=ndim, max_size=ndim)))
    a = np.zeros(shape, dtype=dtype)
    vmax = 1 if dtype is np.bool_ else int(np.iinfo(dtype).max)
    for _ in range(draw(st.integers(0, 6))):
        lo = [draw(st.integers(0, s - 1)) for s in shape]
        hi = [draw(st.integers(low + 1, s)) for low, s in zip(lo, shape, strict=True)]
        value = draw(st.integers(0, vmax))
        box = tuple(slice(low, high) for low, high in zip(lo, hi, strict=True))
        if draw(st.booleans()):
            a[box] = value
        else:  # a ball inscribed in the box
            grids = np.ogrid[box]
            centre = [(low + high - 1) / 2 for low, high in zip(lo, hi, strict=True)]
            radius = min(high - low for low, high in zip(lo, hi, strict=True)) / 2
            ball = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2
            a[box][ball] = value
    return a


@settings(max_examples=200, deadline=None)
@given(label_arrays(), st.sampled_from([1, 3, 9]))
def test_hypothesis_label_structured(a: np.ndarray, level: int) -> None:
    roundtrip(LabelCodec(level=level), a)
    roundtrip(BinaryCodec(level=level), a != 0)
    roundtrip(choose_codec(a, level=level), a)
