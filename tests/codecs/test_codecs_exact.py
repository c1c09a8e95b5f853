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
import zstandard as zstd
from codec_helpers import numpy_paths

from medmask.codecs import (
    BinaryCodec,
    EdgesCodec,
    LabelCodec,
    choose_codec,
    decode,
    get_codec,
)
from medmask.codecs import _binary as binary
from medmask.codecs import _edges as edges
from medmask.codecs._labels import distinct_values
from medmask.codecs._stream import coded_shape
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


def test_xor_run_values_count_the_whole_first_slice() -> None:
    """(2, 4, 16) with the XOR transform: the values are those of the first slice (all 64 of
    its voxels: the value 0 appears only after the first 32) and of the changed runs."""
    a = np.zeros((2, 4, 16), np.uint8)
    a[:, :2] = 5
    a[1, 0, :8] = 7
    stream = LabelCodec().encode(a)
    assert stream[8 + 4 * 3] == 1  # the XOR transform
    out, values = LabelCodec().decode_with_values(stream)
    np.testing.assert_array_equal(out, a)
    assert values is not None
    assert values.dtype == np.uint64
    assert values.tolist() == [0, 5, 7]


@pytest.mark.parametrize("dtype", ["bool", "uint8"])
def test_edges_values_of_a_binary_mask_are_uint64(dtype: str) -> None:
    a = np.zeros((3, 20, 30), dtype)
    a[:, 4:16, 5:25] = 1
    a[1:, 8:12, 10:14] = 0
    stream = EdgesCodec().encode(a)
    assert stream[7] == 1  # edges, not plain values
    out, values = EdgesCodec().decode_with_values(stream)
    np.testing.assert_array_equal(out, a)
    assert values is not None
    assert values.dtype == np.uint64
    assert values.tolist() == [0, 1]


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


# --- BinaryCodec: names in refusals, memory refusal ------------------------------------------


def test_binary_refusals_name_the_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        CodecError, match=r"^Expected a level in 1\.\.22 for codec 'medmask\.binary'"
    ):
        BinaryCodec(level=0)
    with pytest.raises(CodecError, match=r"^Expected dtype .* for codec 'medmask\.binary'\. Got"):
        BinaryCodec().encode(np.zeros(3, np.float32))
    stream = BinaryCodec().encode(np.ones((2, 3, 4), np.uint16))

    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(binary, "decode_body", no_memory)
    with pytest.raises(
        CodecError,
        match=r"^Expected memory to decode a medmask\.binary stream of shape \(2, 3, 4\) "
        r"\(48 bytes and at most 3x that in sections\)\. Got out of memory\.$",
    ):
        BinaryCodec().decode(stream)


# --- the shapes chunks are coded as ------------------------------------------------------------


def test_coded_shape_merges_leading_axes_and_gives_0_d_one_element() -> None:
    assert coded_shape((2, 3, 4, 5, 6)) == (24, 5, 6)
    assert coded_shape((2, 3, 4, 5)) == (6, 4, 5)
    assert coded_shape((2, 3, 4)) == (2, 3, 4)
    assert coded_shape((7,)) == (7,)
    assert coded_shape(()) == (1,)


def test_numcodecs_5_d_and_0_d_arrays_round_trip() -> None:
    from medmask.codecs.numcodecs import LabelMapCodec

    codec = LabelMapCodec()
    five = (np.arange(2 * 3 * 2 * 4 * 5) % 7).astype(np.uint8).reshape(2, 3, 2, 4, 5)
    out = np.empty(five.shape, np.uint8)
    codec.decode(codec.encode(five), out=out)
    np.testing.assert_array_equal(out, five)
    scalar = np.array(9, np.uint16)
    np.testing.assert_array_equal(codec.decode(codec.encode(scalar)), [9])


# --- choose_codec and decode() ------------------------------------------------------------------


def test_choose_codec_refusal_names_auto() -> None:
    with pytest.raises(CodecError, match=r"^Expected dtype .* for codec 'auto'\. Got float32\.$"):
        choose_codec(np.zeros(3, np.float32))


def test_decode_dispatch_refusals_and_checks() -> None:
    with pytest.raises(CodecError, match=r"^Expected a codec stream of at least 5 bytes\. Got 4 "):
        decode(b"MMC\x01")
    with pytest.raises(CodecError, match=r"^Expected a medmask\.labels stream of at least 8 bytes"):
        decode(b"MMC\x01\x02")  # 5 bytes: the kind byte is there, the codec refuses
    with pytest.raises(
        CodecError,
        match=r"^Expected codec kind 1 \(binary\), 2 \(labels\) or 3 \(edges\)\. Got 200\.$",
    ):
        decode(b"MMC\x01\xc8\x02\x01\x00")
    a = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    for codec in (LabelCodec(), EdgesCodec()):
        stream = codec.encode(a)
        np.testing.assert_array_equal(decode(stream, shape=(2, 3, 4), dtype="uint16"), a)
        with pytest.raises(CodecError, match=r"^Expected shape \(4, 6\)\. Got \(2, 3, 4\)"):
            decode(stream, shape=(4, 6))
        with pytest.raises(CodecError, match=r"^Expected dtype int16\. Got uint16"):
            decode(stream, dtype="int16")


# --- every refusal of a run-coded stream, header and body, word for word -----------------------


def _frame(section: bytes) -> bytes:
    return zstd.ZstdCompressor(write_checksum=True, write_content_size=True).compress(section)


def _runs_stream(
    shape: tuple[int, ...],
    mode: int,
    fields: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0),
    sections: tuple[bytes, bytes, bytes] = (b"", b"", b""),
    *,
    code: int = 2,
    kind: int = 2,
    raw: bool = False,
) -> bytes:
    """A kind-2 stream (docs/codecs.md section 1); ``sections`` are zstd-framed unless ``raw``."""
    frames = list(sections) if raw else [_frame(s) if s else b"" for s in sections]
    head = b"MMC" + bytes([1, kind, code, len(shape), mode])
    head += struct.pack(f"<{len(shape)}I", *shape)
    head += struct.pack("<BBIQQ", *fields)
    head += struct.pack("<3Q", *(len(f) for f in frames))
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(frames)


_GOOD = _runs_stream((8,), 1, (0, 1, 0, 2, 0), (b"\x01\x02", b"\x04\x04", b""))
_LONG = struct.pack("<I", 100)

_TWO = _frame(b"\x01\x02") + _frame(b"")
_NOSUM = zstd.ZstdCompressor(write_checksum=False, write_content_size=True).compress(b"\x01\x02")

_LABEL_REFUSALS = [
    (_runs_stream((8,), 0, (1, 0, 0, 0, 0)), r"zero fields and sections for a constant array\. "
     r"Got some\."),
    (_runs_stream((8,), 0, (0, 0, 256, 0, 0)), r"a constant value <= 255 for uint8\. Got 256\."),
    (_runs_stream((0, 4), 1, (0, 1, 0, 1, 0)), r"mode 0 \(constant\) for a zero-size array\. "
     r"Got mode 1\."),
    (_runs_stream((8,), 2, (1, 1, 0, 0, 0), (bytes(8), b"", b"")), r"plain-mode fields "
     r"\(0, itemsize, 0, 0, 0\)\. Got others\."),
    (_runs_stream((8,), 3), r"mode 0, 1 or 2\. Got 3\."),
    (_runs_stream((8,), 1, (2, 1, 0, 2, 0)), r"transform 0 or 1\. Got 2\."),
    (_runs_stream((8,), 1, (0, 2, 0, 2, 0)), r"a value width in 1\.\.1\. Got 2\."),
    (_runs_stream((8,), 1, (0, 1, 0, 0, 0)), r"1\.\.4 runs and at most as many long runs\. "
     r"Got 0 runs, 0 long\."),
    (_runs_stream((8,), 1, (0, 1, 0, 5, 0)), r"1\.\.4 runs and at most as many long runs\. "
     r"Got 5 runs, 0 long\."),
    (_runs_stream((8,), 1, (0, 1, 0, 1, 2)), r"1\.\.4 runs and at most as many long runs\. "
     r"Got 1 runs, 2 long\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (b"\x01\x02", b"\x04\x04", _LONG)),
     r"an empty long-run section\. Got \d+ bytes\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (b"\x01\x02", b"\x00\x08", b"")),
     r"run length codes >= 1\. Got a 0 code\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (b"\x01\x02", b"\xff\x01", b"")),
     r"0 escaped run lengths\. Got 1\."),
    (_runs_stream((600,), 1, (0, 1, 0, 2, 1), (b"\x01\x02", b"\xff\x01", _LONG)),
     r"long run lengths >= 255\. Got 100\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (b"\x01\x02", b"\x03\x04", b"")),
     r"positive run lengths summing to 8 elements\. Got a sum of 7\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (b"\x00\x02", b"\x04\x04", b""), code=1),
     r"values 0 or 1 for a bool array\. Got larger values\."),
    (_runs_stream((32,), 1, (0, 1, 0, 2, 0), (b"\x00\x02", b"\x10\x10", b""), code=1),
     r"values 0 or 1 for a bool array\. Got larger values\."),  # few runs: expanded at once
    (_runs_stream((4,), 2, (0, 1, 0, 0, 0), (b"\x00\x01\x02\x01", b"", b""), code=1),
     r"values 0 or 1 for a bool array\. Got larger values\."),  # plain values
    (_GOOD[:5], r"a medmask\.labels stream of at least 8 bytes\. Got 5 bytes \(truncated\)\."),
    (b"XYZ" + _GOOD[3:], r"stream magic b'MMC'\. Got b'XYZ'\."),
    (_GOOD[:3] + b"\x02" + _GOOD[4:], r"codec stream version 1\. Got 2\."),
    (_runs_stream((8,), 0, kind=1), r"a medmask\.labels stream \(kind 2\)\. Got kind 1\."),
    (_GOOD[:6] + b"\x04" + _GOOD[7:], r"ndim 1\.\.3 in the stream header\. Got 4\."),
    (_GOOD[:20], r"a medmask\.labels header of 62 bytes\. Got 20 bytes \(truncated\)\."),
    (_GOOD[:8] + b"\x09" + _GOOD[9:], r"a valid medmask\.labels header checksum\. Got a mismatch "
     r"\(corrupt\)\."),
    (_runs_stream((8,), 0, code=10), r"a dtype code in 1\.\.9 \(\+128 for big-endian multi-byte "
     r"types\)\. Got 10\."),
    (_runs_stream((8,), 0, code=0x82), r"a dtype code in 1\.\.9 \(\+128 for big-endian "
     r"multi-byte types\)\. Got 130\."),
    (_GOOD + b"\x00", rf"a medmask\.labels stream of {len(_GOOD)} bytes\. Got {len(_GOOD) + 1} "
     r"bytes \(trailing data\)\."),
    (_GOOD[:-1], rf"a medmask\.labels stream of {len(_GOOD)} bytes\. Got {len(_GOOD) - 1} "
     r"bytes \(truncated\)\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (b"\x28\xb5\x2f\xfd", b"", b""), raw=True),
     r"a valid zstd frame in the run values section\. Got: .+\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (_frame(b"\x01\x02")[:8], b"", b""), raw=True),
     r"a complete zstd block header\. Got end of section\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (_frame(b"\x01\x02")[:6] + b"\x07\x00\x00", b"", b""),
                  raw=True), r"a zstd block type 0\.\.2\. Got reserved type 3\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (_TWO, _frame(b"\x04\x04"), b""), raw=True),
     rf"the run values section to be exactly one zstd frame of {len(_TWO)} bytes\. Got a frame "
     r"of another size\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (_frame(b"\x01\x02\x03"), b"", b""), raw=True),
     r"the run values section to decode to 2 bytes\. Got a frame declaring 3\."),
    (_runs_stream((8,), 1, (0, 1, 0, 2, 0), (_NOSUM, b"", b""), raw=True),
     r"a checksummed zstd frame in the run values section\. Got none\."),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), _LABEL_REFUSALS)
def test_label_stream_refusals_word_for_word(data: bytes, message: str) -> None:
    np.testing.assert_array_equal(LabelCodec().decode(_GOOD), [1, 1, 1, 1, 2, 2, 2, 2])
    with pytest.raises(CodecError, match=rf"^Expected {message}$"):
        LabelCodec().decode(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"MMC", r"a codec stream of at least 8 bytes\. Got 3\."),
        (b"XYZ" + _GOOD[3:], r"stream magic b'MMC'\. Got b'XYZ'\."),
        (_GOOD[:6] + b"\x00" + _GOOD[7:], r"ndim 1\.\.3 in the stream header\. Got 0\."),
        (_GOOD[:10], r"a stream header of at least 12 bytes\. Got 10 \(truncated\)\."),
        (_runs_stream((8,), 0, code=10), r"a known dtype code in the stream header\. Got 10\."),
    ],
)
def test_peek_stream_refusals_word_for_word(data: bytes, message: str) -> None:
    from medmask.codecs import peek_stream

    assert peek_stream(_GOOD).shape == (8,)
    with pytest.raises(CodecError, match=rf"^Expected {message}$"):
        peek_stream(data)


def test_input_refusals_word_for_word() -> None:
    codec = LabelCodec()
    with pytest.raises(CodecError, match=r"^Expected a numpy array for codec 'medmask\.labels'\. "):
        codec.encode([1, 2])  # type: ignore[arg-type]
    with pytest.raises(
        CodecError, match=r"^Expected a 1-D, 2-D or 3-D array for codec 'medmask\.labels'\. Got 4-D"
    ):
        codec.encode(np.zeros((1, 1, 1, 1), np.uint8))
    with pytest.raises(CodecError, match=r"^Expected every dimension < 2\*\*32\. Got shape \(0, "):
        codec.encode(np.zeros((0, 2**32), np.uint8))
    assert codec.decode(codec.encode(np.zeros((0, 2**32 - 1), np.uint8))).shape == (0, 2**32 - 1)
    with pytest.raises(
        CodecError,
        match=r"^Expected non-negative values \(labels\) for codec 'medmask\.labels'\. Got a "
        r"minimum of -3 in a int16 array\.$",
    ):
        codec.encode(np.array([0, -3, 2], np.int16))
    with pytest.raises(
        CodecError, match=r"^Expected an int level for codec 'medmask\.labels'\. Got str: '3'\.$"
    ):
        LabelCodec(level="3")  # type: ignore[arg-type]


def test_label_streams_at_their_limits_decode() -> None:
    codec = LabelCodec()
    np.testing.assert_array_equal(codec.decode(_runs_stream((8,), 0, (0, 0, 255, 0, 0))), [255] * 8)
    np.testing.assert_array_equal(
        codec.decode(_runs_stream((3,), 0, (0, 0, 1, 0, 0), code=1)), [1] * 3
    )
    with pytest.raises(CodecError, match=r"^Expected a constant value <= 1 for bool\. Got 2\.$"):
        codec.decode(_runs_stream((3,), 0, (0, 0, 2, 0, 0), code=1))
    packed = _runs_stream((8,), 1, (0, 1, 0, 4, 0), (b"\x01\x02\x03\x04", b"\x02" * 4, b""))
    np.testing.assert_array_equal(codec.decode(packed), [1, 1, 2, 2, 3, 3, 4, 4])  # 4 runs: 8 B
    lengths = struct.pack("<2I", 255, 255)
    escaped = _runs_stream((600,), 1, (0, 1, 0, 3, 2), (b"\x01\x02\x03", b"\xff\xff\x5a", lengths))
    np.testing.assert_array_equal(codec.decode(escaped), [1] * 255 + [2] * 255 + [3] * 90)
    every = _runs_stream((510,), 1, (0, 1, 0, 2, 2), (b"\x01\x02", b"\xff\xff", lengths))
    np.testing.assert_array_equal(codec.decode(every), [1] * 255 + [2] * 255)  # all runs long


# --- every refusal of an edges stream header, word for word -------------------------------------


def _edges_header_refusals() -> list[tuple[bytes, str]]:
    from codec_helpers import edges_stream, varint

    good = edges_stream((8,), 0, varint(3))
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1
    fields = bytes([1, 1, 1])
    sizes = varint(0) * (2 * (2 * 1 + 5))
    return [
        (good[:5], r"a medmask\.edges stream of at least 12 bytes\. Got 5 bytes\."),
        (b"XYZ" + good[3:], r"stream magic b'MMC'\. Got b'XYZ'\."),
        (good[:4] + b"\x02" + good[5:], r"a medmask\.edges stream \(kind 3\)\. Got kind 2\."),
        (good[:3] + b"\x03" + good[4:], r"medmask\.edges stream version 1 or 2\. Got 3\."),
        (good[:6] + b"\x04" + good[7:], r"ndim 1\.\.3 in the stream header\. Got 4\."),
        (good[:13], r"a medmask\.edges header of 16 bytes\. Got 13 bytes\."),
        (bytes(bad_crc), r"a valid medmask\.edges stream checksum\. Got a mismatch \(corrupt\)\."),
        (edges_stream((8,), 0, varint(3), dtype_code=10), r"a known dtype code\. Got 10\."),
        (edges_stream((8,), 0, varint(256)), r"a constant value <= 255\. Got 256\."),
        (edges_stream((8,), 0, varint(3) + b"\x00"), r"1 fewer bytes after the constant\. "
         r"Got them\."),
        (edges_stream((8,), 0, b""), r"a complete constant value\. Got the end of the header\."),
        (edges_stream((8,), 0, b"\x80" * 10 + b"\x00"), r"a constant value of at most 10 bytes\. "
         r"Got more\."),
        (edges_stream((8,), 0, b"\x80" * 9 + b"\x02"), r"a constant value below 2\*\*64\. Got "
         r"18446744073709551616\."),
        (edges_stream((0,), 2, varint(0) + varint(0)), r"mode 0 \(constant\) for a zero-size "
         r"array\. Got mode 2 for \(0,\)\."),
        (edges_stream((8,), 2, varint(3) + varint(7) + b"abc"), r"one plain section of 8 bytes "
         r"filling the stream\. Got 7 bytes in 3\."),
        (edges_stream((8,), 3, b""), r"mode 0 \(constant\), 1 \(edges\) or 2 \(plain\)\. Got 3\."),
        (edges_stream((8,), 1, b"\x01\x01"), r"the medmask\.edges edge fields\. Got the end of the "
         r"stream\."),
        (edges_stream((8,), 1, bytes([8, 1, 1]) + sizes), r"a shift range K in 1\.\.7\. Got 8\."),
        (edges_stream((8,), 1, bytes([1, 2, 1]) + sizes), r"a value width 0, 1, 2, 4 or 8 <= the "
         r"item size\. Got 2\."),
        (edges_stream((8,), 1, bytes([1, 1, 3]) + sizes), r"a position width 1, 2 or 4\. Got 3\."),
        (edges_stream((8,), 1, fields + sizes + b"\x00"), rf"a medmask\.edges stream of "
         rf"{12 + 4 + 3 + len(sizes) + 4} bytes\. Got {12 + 4 + 3 + len(sizes) + 1} bytes\."),
    ]  # fmt: skip


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
def test_edges_header_refusals_word_for_word(path: str) -> None:
    from codec_helpers import edges_stream, varint

    np.testing.assert_array_equal(
        EdgesCodec().decode(edges_stream((8,), 0, varint(255))), [255] * 8
    )
    for data, message in _edges_header_refusals():
        with pytest.raises(CodecError, match=rf"^Expected {message}$"):
            EdgesCodec().decode(data)


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
@pytest.mark.parametrize("k", [1, 7])
def test_edges_streams_of_every_shift_range_decode(
    path: str, k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K = 1..7 (docs/codecs.md): the encoder's K is a setting, the decoder takes them all."""
    monkeypatch.setattr(edges, "DEFAULT_SHIFT", k)
    a = np.zeros((6, 12, 40), np.uint8)
    for z in range(6):
        a[z, 2:10, 5 + z : 20 + 2 * z] = 3  # edges moving by 1 and 2 voxels a slice
        a[z, 4:6, 30 - z : 34] = 9
    stream = EdgesCodec().encode(a)
    assert stream[7] == 1
    assert stream[8 + 12 + 4] == k
    np.testing.assert_array_equal(EdgesCodec().decode(stream), a)


# --- shared stream rules: value widths, dtype codes, declared sizes ------------------------------


@pytest.mark.parametrize(
    ("value", "width"),
    [(255, 1), (256, 2), (65535, 2), (65536, 4), (2**32 - 1, 4), (2**32, 8), (2**64 - 1, 8)],
)
def test_run_values_take_the_fewest_bytes(value: int, width: int) -> None:
    a = np.zeros((4, 64), np.uint64)
    a[1, 5:40] = value
    a[3, :9] = 1
    stream = LabelCodec().encode(a)
    assert stream[7] == 1  # runs
    assert stream[8 + 8 + 1] == width  # the value width field
    out = LabelCodec().decode(stream)
    assert out.dtype == np.uint64
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize(
    ("dtype", "code"),
    [("|b1", 1), ("u1", 2), (">u2", 3 | 0x80), ("<u4", 4), (">u8", 5 | 0x80), ("i1", 6),
     ("<i2", 7), (">i4", 8 | 0x80), ("<i8", 9)],
)  # fmt: skip
def test_stream_dtype_codes(dtype: str, code: int) -> None:
    a = np.zeros((2, 3), dtype)
    for codec in (LabelCodec(), EdgesCodec()):
        stream = codec.encode(a)
        assert stream[5] == code
        out = codec.decode(stream)
        assert out.dtype == np.dtype(dtype)


def test_declared_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from medmask.codecs import _stream

    huge = _runs_stream((2**31, 2**31), 0)  # 2**62 bytes: refused before the no-shape= limit
    with pytest.raises(
        CodecError,
        match=r"^Expected a shape numpy can allocate\. Got \(2147483648, 2147483648\)\.$",
    ):
        LabelCodec().decode(huge)
    monkeypatch.setattr(_stream, "MAX_DECODED_NBYTES", 240)
    fits = _runs_stream((2, 3, 40), 0, (0, 0, 7, 0, 0))
    np.testing.assert_array_equal(LabelCodec().decode(fits), np.full((2, 3, 40), 7, np.uint8))
    over = _runs_stream((241,), 0, (0, 0, 7, 0, 0))
    with pytest.raises(
        CodecError,
        match=r"^Expected at most 240 decoded bytes without an explicit shape=\. Got a stream "
        r"declaring \(241,\) \(241 bytes\)\.$",
    ):
        LabelCodec().decode(over)
    np.testing.assert_array_equal(LabelCodec().decode(over, shape=(241,)), [7] * 241)


# --- many runs: expanded block by block ----------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_many_runs_with_long_ones_across_run_blocks(dtype: str) -> None:
    """More runs than one expansion block (65536), with escaped runs shorter and longer than
    the in-place fill threshold (1024) on both sides of each block boundary."""
    n_runs = 140_000
    lengths = np.full(n_runs, 2, np.int64)
    for at, length in (
        (0, 1024), (10, 300), (65534, 1023), (65535, 2000), (65536, 255), (65537, 1024),
        (131071, 5000), (131072, 256), (139_999, 3000),
    ):  # fmt: skip
        lengths[at] = length
    values = (np.arange(n_runs) % 3 + 1) * (257 if dtype == "uint16" else 1)
    a = np.repeat(values, lengths).astype(dtype)
    stream = LabelCodec().encode(a)
    assert stream[7] == 1  # runs
    out = LabelCodec().decode(stream)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, a)
    out, present = LabelCodec().decode_with_values(stream)
    np.testing.assert_array_equal(out, a)
    if present is not None:
        assert present.tolist() == sorted({int(v) for v in values[:3]})


# --- encode_with_stats ---------------------------------------------------------------------------


def _brute_stats(a: np.ndarray) -> list[tuple[int, int, list[int]]]:
    v3 = a.reshape((1,) * (3 - a.ndim) + a.shape)
    rows = []
    for value in np.unique(v3):
        if value == 0:
            continue
        where = np.nonzero(v3 == value)
        bounds = [b for axis in where for b in (int(axis.min()), int(axis.max()))]
        rows.append((int(value), int(where[0].size), bounds))
    return rows


@pytest.mark.parametrize("dtype", ["bool", "uint8", "uint16", "int16"])
def test_encode_with_stats_gives_each_value_count_and_bounds(dtype: str) -> None:
    """The kernel counts on the way; without it (MEDMASK_KERNEL=0) there are no stats, but the
    same stream, except for an empty array (no values: an empty table either way)."""
    kernel = edges.kernel_available()
    a = np.zeros((3, 5, 7), np.uint16)
    a[0, 1, 2] = 5
    a[1:, 2:4, 0:2] = 5
    a[2, 0, 6] = 300 if dtype in ("uint16", "int16") else 2
    a = (a > 0).astype(dtype) if dtype == "bool" else a.astype(dtype)
    for array in (a, a[1], a[2, 0]):
        stream, stats = EdgesCodec().encode_with_stats(array)
        np.testing.assert_array_equal(EdgesCodec().decode(stream), array)
        assert stream == EdgesCodec().encode(array)
        if not kernel:
            assert stats is None
            continue
        assert stats is not None
        assert stats.dtype == edges.STATS_DTYPE
        got = [(int(r["value"]), int(r["count"]), r["bounds"].tolist()) for r in stats]
        assert got == _brute_stats(array)
    _, stats = EdgesCodec().encode_with_stats(
        np.full((2, 3), 4, dtype if dtype != "bool" else "u1")
    )
    if kernel:
        assert stats is not None
        assert [(int(r["value"]), int(r["count"])) for r in stats] == [(4, 6)]  # constant path
    else:
        assert stats is None
    _, stats = EdgesCodec().encode_with_stats(np.zeros((0, 3), dtype))
    assert stats is not None
    assert stats.dtype == edges.STATS_DTYPE
    assert stats.size == 0
    with numpy_paths():
        assert EdgesCodec().encode_with_stats(a)[1] is None  # not computed on this path
    assert EdgesCodec().encode_with_stats(a.astype(np.uint32))[1] is None
    noise = np.random.default_rng(1).integers(0, 200, (2, 4, 64)).astype(np.uint8)
    stream, stats = EdgesCodec().encode_with_stats(noise)
    assert stream[7] == 2  # more section bytes than a mode-1 stream may declare: plain
    if not kernel:
        assert stats is None
        return
    assert stats is not None
    assert [(int(r["value"]), int(r["count"])) for r in stats] == [
        (v, c) for v, c, _ in _brute_stats(noise)
    ]


# --- plain edges streams ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64"])
def test_plain_edges_stream_into_a_strided_view(path: str, dtype: str) -> None:
    rng = np.random.default_rng(2)
    noise = rng.integers(0, np.iinfo(dtype).max, (3, 4, 16), dtype=dtype, endpoint=True)
    stream = EdgesCodec().encode(noise)
    assert stream[7] == 2  # plain
    np.testing.assert_array_equal(EdgesCodec().decode(stream), noise)
    big = np.zeros((3, 8, 16), dtype)
    view = big[:, ::2]  # rows contiguous, not C-contiguous
    EdgesCodec().decode_into(stream, view)
    np.testing.assert_array_equal(view, noise)
    assert not big[:, 1::2].any()


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
def test_plain_signed_edges_stream_refuses_exactly_the_sign_bit(path: str) -> None:
    from codec_helpers import edges_stream

    def plain(low: list[int], high: list[int]) -> bytes:
        raw = bytes(low + high)  # byte planes: low bytes, then high bytes
        return edges_stream((2,), 2, bytes([len(raw), len(raw)]) + raw, dtype_code=7)  # int16

    np.testing.assert_array_equal(EdgesCodec().decode(plain([0xFF, 5], [0x7F, 0])), [32767, 5])
    with pytest.raises(
        CodecError,
        match=r"^Expected plain values <= 32767 for int16 \(labels are never negative\)\. "
        r"Got a larger one\.$",
    ):
        EdgesCodec().decode(plain([0, 5], [0x80, 0]))


def test_plain_bool_edges_padding_refusal_word_for_word() -> None:
    from codec_helpers import edges_stream

    data = edges_stream((10,), 2, bytes([2, 2, 0xB1, 0x81]), dtype_code=1)
    with pytest.raises(
        CodecError, match=r"^Expected padding bits 0 after the last plain bool value\. Got 1s\.$"
    ):
        EdgesCodec().decode(data)
    full = edges_stream((8,), 2, bytes([1, 1, 0xB1]), dtype_code=1)  # no padding at all
    np.testing.assert_array_equal(EdgesCodec().decode(full), [1, 0, 1, 1, 0, 0, 0, 1])


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
def test_edges_section_frame_refusals_word_for_word(path: str) -> None:
    from codec_helpers import edges_stream, varint

    values = bytes(range(1, 9))
    cctx = zstd.ZstdCompressor(write_checksum=False, write_content_size=True)
    one = cctx.compress(values)

    def plain(stored: bytes) -> bytes:
        return edges_stream((8,), 2, varint(len(stored)) + varint(8) + stored)

    np.testing.assert_array_equal(EdgesCodec().decode(plain(one)), list(values))
    np.testing.assert_array_equal(EdgesCodec().decode(plain(values)), list(values))  # raw
    cases = [
        (cctx.compress(values[:7]), r"the plain values section to decode to 8 bytes\. Got a "
         r"frame declaring 7\."),
        (one + cctx.compress(b""), rf"the plain values section to be exactly one zstd frame of "
         rf"{len(one) + len(cctx.compress(b''))} bytes\. Got a frame of another size \(or more "
         r"than one frame\)\."),
        (b"\x00" * 5, r"a valid zstd frame in the plain values section\. Got: .+\."),
    ]  # fmt: skip
    for stored, message in cases:
        with pytest.raises(CodecError, match=rf"^Expected {message}$"):
            EdgesCodec().decode(plain(stored))


def test_label_decode_turns_out_of_memory_into_a_codec_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from medmask.codecs import _labels

    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(_labels, "decode_body", no_memory)
    with pytest.raises(
        CodecError,
        match=r"^Expected memory to decode a medmask\.labels stream of shape \(8,\) \(8 bytes "
        r"and at most 3x that in sections\)\. Got out of memory\.$",
    ):
        LabelCodec().decode(_GOOD)


# --- corrupted edges sections, on every decoder path ----------------------------------------------


def _edges_arrays() -> dict[str, np.ndarray]:
    one = np.zeros((1, 60, 200), np.int16)  # the first slice only: row by row
    one[0, 10:50, 30:120] = 4
    one[0, 20:40, 60:90] = 7
    three = np.zeros((3, 60, 200), np.int16)  # later slices: blocks of rows
    three[:, 10:50, 30:120] = 4
    three[1:, 20:40, 60:90] = 7
    three[2, 0, 1] = 2
    wide = np.zeros((2, 2, edges._BLOCK + 10), np.int16)  # rows wider than a block
    wide[:, :, 5:300] = 4
    wide[1, :, 100:200] = 7
    wide[1, 1, -3:] = 9
    return {"one": one, "three": three, "wide": wide}


def _corrupted(kind: str) -> Any:
    original = edges._encode_edges

    def encode(v3: np.ndarray, k: int) -> Any:
        gaps, fates, pos, val, max_delta, max_value, stats = original(v3, k)
        gaps, sections = bytes(gaps), [bytes(f) for f in fates]
        longest = max(range(len(sections)), key=lambda i: len(sections[i]))
        if kind == "fate 15":
            sections[longest] = b"\xff" * len(sections[longest])
        elif kind == "fates short":
            sections[longest] = sections[longest][:-1]
        elif kind == "gaps long":
            gaps += b"\x00"
        elif kind == "gaps short":
            gaps = gaps[:-1]
        elif kind == "gap escape cut":
            gaps = gaps[:-1] + b"\xff\x01"
        elif kind == "positions long":
            pos, val = np.append(pos, pos[-1:]), np.append(val, val[-1:])
        elif kind == "positions short":
            pos, val = pos[:-1], val[:-1]
        elif kind == "value unchanged":
            val = val.copy()
            val[-2] = 0  # slice 2, row 0: the edge to 2 at x = 1 becomes an edge to 0 from 0
        elif kind == "value too big":
            val = val.copy()
            val[-1] = max_value = 40000  # above int16's 32767, in 2 bytes
        return gaps, sections, pos, val, max_delta, max_value, stats

    return encode


_CORRUPTIONS = {
    "fate 15": r"fate codes 0\.\.2K\+1\. Got a larger one\.",
    "fates short": r"a fate code\. Got the end of its section\.",
    "gaps long": r"the gaps section to end with the last row\. Got more bytes\.",
    "gaps short": r"a gap count( per gap)?\. Got the end of the gaps section\.",
    "gap escape cut": r"4 bytes after a 255 gap code\. Got the end\.",
    "positions long": r"one inserted edge per position\. Got unused positions\.",
    "positions short": r"as many insertions as positions\. Got more\.",
    "value too big": r"edge values that fit the dtype\. Got a larger one\.",
}


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
@pytest.mark.parametrize("kind", sorted(_CORRUPTIONS))
def test_corrupted_edges_sections_are_refused_word_for_word(
    path: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, a in _edges_arrays().items():
        with monkeypatch.context() as patch:
            patch.setattr(edges, "_encode_edges", _corrupted(kind))
            stream = EdgesCodec().encode(a)
        assert stream[7] == 1, name  # still an edges stream
        with pytest.raises(CodecError, match=rf"^Expected {_CORRUPTIONS[kind]}$"):
            EdgesCodec().decode(stream)


# --- the section size limits of an edges stream (docs/codecs.md 6.4), at the limit and above -----


def _edges_mode1(sizes: list[int], *, k: int = 1, w: int = 1, p: int = 1) -> bytes:
    """A (2, 3, 8) uint8 mode-1 stream whose 2K+5 sections are stored raw, of ``sizes``."""
    from codec_helpers import edges_stream, varint

    table = b"".join(varint(n) + varint(n) for n in sizes)
    return edges_stream((2, 3, 8), 1, bytes([k, w, p]) + table + bytes(sum(sizes)))


@pytest.mark.parametrize(
    ("sizes", "what", "limit"),
    [
        ([270, 0, 0, 0, 0, 0, 0], "gaps", 270),  # 5 * (48 elements + 6 rows)
        ([0, 48, 48, 0, 0, 0, 0], "positions", 48),  # p * 48
        ([0, 48, 48, 28, 0, 0, 0], "fates", 28),  # 48 // 2 + 2K + 2
        ([100, 30, 30, 0, 0, 0, 0], "sections", 160),  # 2 * 48 + 64 raw bytes in all
    ],
)
def test_edges_section_size_limits(sizes: list[int], what: str, limit: int) -> None:
    index = {"gaps": 0, "positions": 1, "fates": 3, "sections": 0}[what]
    over = list(sizes)
    over[index] += 1
    if what == "positions":
        over[2] += 1  # one value per position
    message = rf"^Expected at most {limit} bytes of {what} for 48 elements\. Got {limit + 1}\.$"
    with pytest.raises(CodecError, match=message):
        EdgesCodec().decode(_edges_mode1(over))
    with pytest.raises(CodecError) as at_limit:  # refused later, for another reason
        EdgesCodec().decode(_edges_mode1(sizes))
    assert f"bytes of {what} for" not in str(at_limit.value)


def test_edges_values_section_limit_and_pairing() -> None:
    over = r"^Expected at most 48 bytes of values for 48 elements\. Got 49\.$"
    with pytest.raises(CodecError, match=over):
        EdgesCodec().decode(_edges_mode1([0, 48, 49, 0, 0, 0, 0]))
    others = r"^Expected one position and one value per inserted edge\. Got others\.$"
    for sizes, p in (([0, 3, 1, 0, 0, 0, 0], 2), ([0, 2, 1, 0, 0, 0, 0], 1)):
        with pytest.raises(CodecError, match=others):
            EdgesCodec().decode(_edges_mode1(sizes, p=p))


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
def test_an_unchanged_value_in_a_later_slice_is_refused_word_for_word(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(edges, "_encode_edges", _corrupted("value unchanged"))
        stream = EdgesCodec().encode(_edges_arrays()["three"])
    with pytest.raises(
        CodecError,
        match=r"^Expected edges that change the value\. Got an edge equal to the value before "
        r"it\.$",
    ):
        EdgesCodec().decode(stream)


@pytest.mark.parametrize("n_edges", [254, 255, 256])
def test_a_gap_of_255_insertions_is_escaped_by_both_encoders(n_edges: int) -> None:
    """The first row has only insertions: its gap count is its number of edges; 255 and up
    are written as the escape byte and 4 bytes (docs/codecs.md 6.3)."""
    a = np.zeros((1, 40, 400), np.uint8)
    a[0, 0, :n_edges] = np.arange(n_edges) % 2 + 1  # an edge at every x < n_edges
    a[0, 5:35, 10:300] = 3
    with numpy_paths():
        python = EdgesCodec().encode(a)
        np.testing.assert_array_equal(EdgesCodec().decode(python), a)
    assert python[7] == 1  # edges
    if edges.kernel_available():
        assert EdgesCodec().encode(a) == python  # the kernel writes the same bytes
    np.testing.assert_array_equal(EdgesCodec().decode(python), a)


# --- distinct values of XOR runs: exactly one eighth of the voxels is still cheap ---------------


@pytest.mark.parametrize(("changed", "cheap"), [(64, True), (65, False)])
def test_xor_run_values_up_to_one_eighth_of_the_voxels(changed: int, cheap: bool) -> None:
    """(2, 8, 32): slice 1 repeats slice 0's rows 1..8 except ``changed`` voxels set to 20.
    Their XOR runs hold ``changed`` of the 512 voxels: at 512 // 8 = 64 the values are read
    off the runs, one more and the caller scans (None)."""
    a = np.repeat(np.arange(1, 9, dtype=np.uint8)[:, None], 32, axis=1)[None].repeat(2, axis=0)
    a[1].reshape(-1)[:changed] = 20
    stream = LabelCodec().encode(a)
    assert stream[7] == 1  # runs
    assert stream[8 + 4 * 3] == 1  # the XOR transform
    out, values = LabelCodec().decode_with_values(stream)
    np.testing.assert_array_equal(out, a)
    if cheap:
        assert values is not None
        assert values.dtype == np.uint64
        assert values.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 20]
    else:
        assert values is None


# --- decode_into an out whose elements share memory ---------------------------------------------


@pytest.mark.parametrize("path", ["kernel", "numpy"], indirect=True)
def test_decode_into_an_out_that_overlaps_itself_is_assigned(path: str) -> None:
    """An ``out`` whose slice 1 starts at row 1 of slice 0 (rows contiguous, strides
    (128, 128, 1)): the kernel must not decode into it in place (it reads the previous slice's
    row back from ``out``, already overwritten); the result is that of assigning the decoded
    array."""
    a = np.zeros((2, 4, 128), np.uint8)
    a[0, :, 32:64] = np.arange(1, 5)[:, None]
    a[1, :, 16:67] = np.arange(9, 13)[:, None]
    stream = EdgesCodec().encode(a)
    assert stream[7] == 1  # edges: slice 1 is predicted from slice 0
    strides = (128, 128, 1)
    base = np.zeros(5 * 128, np.uint8)
    out = np.lib.stride_tricks.as_strided(base, a.shape, strides)
    expected_base = np.zeros_like(base)
    np.lib.stride_tricks.as_strided(expected_base, a.shape, strides)[...] = a
    EdgesCodec().decode_into(stream, out)
    np.testing.assert_array_equal(base, expected_base)
    np.testing.assert_array_equal(base.reshape(5, 128)[1:], a[1])  # the last writes win
