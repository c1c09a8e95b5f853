"""Exact behaviour of the core codecs that the round-trip tests leave open: the dtype of the
values arrays, shape/dtype checks of ``decode_with_values``, the sign bit of signed streams,
the distinct values read off XOR runs at their cheap/scan boundary, ``get_codec``'s refusals,
``EdgesCodec.decode_into`` copies and memory refusals, edges of rows longer than a block."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pytest
from codec_helpers import numpy_paths

from medmask.codecs import BinaryCodec, EdgesCodec, LabelCodec, get_codec
from medmask.codecs import _edges as edges
from medmask.codecs._labels import distinct_values
from medmask.errors import CodecError

_LABEL_FIELDS = 22  # transform u8, width u8, constant u32, run count u64, long-run count u64


def _retyped(stream: bytes, code: int) -> bytes:
    """A labels/binary stream with header dtype code ``code`` (CRC-32 recomputed)."""
    ndim = stream[6]
    end = 8 + 4 * ndim + _LABEL_FIELDS + 8 * 3
    head = bytearray(stream[:end])
    head[5] = code
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + stream[end + 4 :]


# --- decode_with_values: dtype of the values, checks of shape= and dtype= ---------------------


@pytest.mark.parametrize("codec_cls", [BinaryCodec, LabelCodec, EdgesCodec])
@pytest.mark.parametrize("dtype", ["bool", "uint8", "uint16", "uint32"])
def test_values_are_uint64_and_shape_dtype_are_checked(codec_cls: Any, dtype: str) -> None:
    codec = codec_cls()
    data = np.zeros((3, 4, 5), dtype)
    data[1, 1:3, 2:4] = 1
    binary = codec_cls is BinaryCodec
    for array, expected in (
        (data, [1] if binary else [0, 1]),
        (np.zeros_like(data), [] if binary else [0]),
    ):
        stream = codec.encode(array)
        out, values = codec.decode_with_values(stream, shape=(3, 4, 5), dtype=dtype)
        np.testing.assert_array_equal(out, array)
        if values is not None or binary or not array.any():  # else: the caller scans
            assert values is not None
            assert values.dtype == np.uint64
            assert values.tolist() == expected
        with pytest.raises(CodecError, match=r"^Expected shape \(3, 20\)\. Got \(3, 4, 5\) in"):
            codec.decode_with_values(stream, shape=(3, 20))
        with pytest.raises(CodecError, match=r"^Expected dtype int64\. Got "):
            codec.decode_with_values(stream, dtype="int64")


def test_distinct_values_of_any_shape_are_sorted_uint64() -> None:
    for dtype in ("bool", "uint8", "uint16", "int16", "uint32", "uint64"):
        a = np.array([[3, 0, 1], [1, 3, 3]], dtype=dtype)
        got = distinct_values(a)
        assert got.dtype == np.uint64
        assert got.tolist() == ([0, 1] if dtype == "bool" else [0, 1, 3])


def test_xor_run_values_at_the_cheap_boundary_are_given() -> None:
    """(2, 4, 16): the second slice differs from the first in 16 voxels, an eighth of the
    array: exactly at the bound where the runs still give the values (above it: a scan). The
    value 0 appears in the first slice only after its first 32 voxels."""
    a = np.zeros((2, 4, 16), np.uint8)
    a[:, :2] = 5
    a[1, 0] = 7
    stream = LabelCodec().encode(a)
    assert stream[8 + 4 * 3] == 1  # the XOR transform
    out, values = LabelCodec().decode_with_values(stream)
    np.testing.assert_array_equal(out, a)
    assert values is not None
    assert values.tolist() == [0, 5, 7]
    a[1, 1, :1] = 9  # 17 voxels changed: more than an eighth, the caller scans
    out, values = LabelCodec().decode_with_values(LabelCodec().encode(a))
    np.testing.assert_array_equal(out, a)
    assert values is None


# --- signed streams: a value with the sign bit set is refused ---------------------------------


@pytest.mark.parametrize("noise", [False, True], ids=["runs", "plain"])
def test_a_signed_stream_refuses_exactly_the_sign_bit(noise: bool) -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 0x7FFF, (4, 64), dtype=np.uint16) if noise else np.zeros((4, 64), "u2")
    mode = 2 if noise else 1
    a[2, 3] = 0x7FFF
    fine = _retyped(LabelCodec().encode(a), 7)  # int16
    assert fine[7] == mode
    np.testing.assert_array_equal(LabelCodec().decode(fine), a.astype(np.int16))
    a[2, 3] = 0x8000  # -32768 as int16
    bad = _retyped(LabelCodec().encode(a), 7)
    assert bad[7] == mode
    with pytest.raises(CodecError, match=r"^Expected values <= 32767 \(labels are never negative"):
        LabelCodec().decode(bad)


# --- get_codec ---------------------------------------------------------------------------------


def test_get_codec_refusals_say_what_they_got() -> None:
    with pytest.raises(CodecError, match=r"^Expected a codec config mapping\. Got list\.$"):
        get_codec([("id", "medmask.labels")])  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"^Expected a codec id in \[.*\]\. Got \['medmask"):
        get_codec({"id": ["medmask.labels"]})  # not hashable: still a CodecError
    assert get_codec({"id": "medmask.labels", "level": 4}) == LabelCodec(level=4)


# --- EdgesCodec.decode_into --------------------------------------------------------------------


def _volume() -> np.ndarray:
    """A label map the edges codec codes as edges (mode 1), not as plain values."""
    a = np.zeros((3, 20, 30), np.uint16)
    a[:, 4:16, 5:25] = 300
    a[1:, 8:12, 10:14] = 7
    a[2, 0, 3:9] = 9
    assert EdgesCodec().encode(a)[7] == 1
    return a


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
def test_decode_into_a_copied_out_gives_the_values(path: str) -> None:
    a = _volume()
    swapped = np.empty(a.shape, ">u2")  # not native: decoded, then copied
    present: list[np.ndarray | None] = []
    stream = EdgesCodec().encode(a.astype(">u2"))
    EdgesCodec().decode_into(stream, swapped, present=present)
    np.testing.assert_array_equal(swapped, a)
    _, values = EdgesCodec().decode_with_values(stream)
    assert len(present) == 1  # as decode_with_values gives them (None: the caller scans)
    assert (present[0] is None) == (values is None)
    if values is not None:
        assert present[0] is not None
        assert present[0].tolist() == values.tolist() == [0, 7, 9, 300]
    constant: list[np.ndarray | None] = []
    EdgesCodec().decode_into(
        EdgesCodec().encode(np.full((2, 3), 4, ">u2")), np.empty((2, 3), ">u2"), present=constant
    )
    assert len(constant) == 1
    assert constant[0] is not None
    assert constant[0].tolist() == [4]
    plane = a[2]
    columns = np.empty(plane.shape, np.uint16, order="F")  # rows not contiguous
    EdgesCodec().decode_into(EdgesCodec().encode(plane), columns)
    np.testing.assert_array_equal(columns, plane)
    single = np.empty((1, 20, 30), np.uint16, order="F")
    EdgesCodec().decode_into(EdgesCodec().encode(a[:1]), single)
    np.testing.assert_array_equal(single, a[:1])


def test_decode_into_turns_out_of_memory_into_a_codec_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_memory(*args: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(EdgesCodec, "_fill", no_memory)
    monkeypatch.setattr(EdgesCodec, "_fill_new", no_memory)
    a = _volume()
    for out in (np.empty(a.shape, np.uint16), np.empty(a.shape, ">u2")):
        stream = EdgesCodec().encode(a.astype(out.dtype))
        with pytest.raises(
            CodecError,
            match=r"^Expected memory to decode a medmask\.edges stream of shape \(3, 20, 30\) "
            r"\(3600 bytes and at most 3x that in sections\)\. Got out of memory\.$",
        ):
            EdgesCodec().decode_into(stream, out)


@pytest.mark.parametrize("start", [0, 4])
def test_rows_longer_than_a_block_decode_on_the_numpy_path(start: int) -> None:
    """Rows of more than ``_BLOCK`` voxels: the previous row's edges are read block by block,
    with edges on both sides of every block boundary and rows starting at 0 or not."""
    nx = 3 * edges._BLOCK + 5
    a = np.zeros((2, 3, nx), np.uint8)
    a[:, :, 0] = start
    for b in range(1, 4):
        at = b * edges._BLOCK
        a[:, :, at - 2 : at] = b  # ends just before a boundary
        a[:, 1:, at : at + 3] = b + 4  # starts at a boundary
        a[:, 2, at - 1 : at + 1] = 9  # straddles it
    a[1, :, 100:200] = 6
    a[1, 1, nx - 1] = 3
    kernel_stream = EdgesCodec().encode(a)
    with numpy_paths():
        stream = EdgesCodec().encode(a)
        np.testing.assert_array_equal(EdgesCodec().decode(stream), a)
        np.testing.assert_array_equal(EdgesCodec().decode(kernel_stream), a)
