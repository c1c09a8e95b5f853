"""Streams and files assembled by hand from docs/codecs.md and docs/format.md.

Nothing here comes from medmask's encoders: every field is written out with ``struct`` as the
spec describes it (zstd frames come from the zstandard library, an independent RFC 8878
implementation). If a decoder change breaks one of these, the code no longer reads what the
spec says, whatever the round-trip tests say.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
import zstandard
from codec_helpers import edges_stream

import medmask
from medmask.codecs import BinaryCodec, LabelCodec
from medmask.codecs import decode as decode_stream
from spec_files import header as _header


def frame(section: bytes) -> bytes:
    """One zstd frame with Frame_Content_Size and the content checksum (codecs.md section 1)."""
    return zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(section)


def stream(
    kind: int,
    dtype_code: int,
    shape: tuple[int, ...],
    mode: int,
    *,
    transform: int = 0,
    width: int = 0,
    value: int = 0,
    runs: int = 0,
    long_runs: int = 0,
    sections: tuple[bytes, bytes, bytes] = (b"", b"", b""),
) -> bytes:
    """docs/codecs.md section 1, field by field."""
    frames = [frame(s) if s else b"" for s in sections]
    head = b"MMC" + bytes([1, kind, dtype_code, len(shape), mode])
    head += struct.pack(f"<{len(shape)}I", *shape)
    head += struct.pack("<BBIQQ", transform, width, value, runs, long_runs)
    head += struct.pack("<QQQ", *(len(f) for f in frames))
    head += struct.pack("<I", zlib.crc32(head))
    assert len(head) == 8 + 4 * len(shape) + 50
    return head + b"".join(frames)


def test_labels_runs_uint16_two_byte_values() -> None:
    # A = [7, 7, 7, 300, 300, 0, 0, 0, 0, 0]: runs (7, 3), (300, 2), (0, 5); 300 = 0x012C
    data = stream(
        kind=2,
        dtype_code=3,  # uint16
        shape=(10,),
        mode=1,  # runs
        width=2,
        runs=3,
        sections=(bytes([7, 0x2C, 0, 0, 0x01, 0]), bytes([3, 2, 5]), b""),  # plane 0, plane 1
    )
    expected = np.array([7, 7, 7, 300, 300, 0, 0, 0, 0, 0], np.uint16)
    np.testing.assert_array_equal(LabelCodec().decode(data), expected)
    np.testing.assert_array_equal(decode_stream(data), expected)


def test_labels_escape_code_and_long_lengths() -> None:
    # runs (0, 300) and (4, 2): 300 >= 255 is code 255 in section 1 and a uint32 in section 2
    data = stream(
        kind=2,
        dtype_code=2,  # uint8
        shape=(302,),
        mode=1,
        width=1,
        runs=2,
        long_runs=1,
        sections=(bytes([0, 4]), bytes([255, 2]), struct.pack("<I", 300)),
    )
    expected = np.array([0] * 300 + [4, 4], np.uint8)
    np.testing.assert_array_equal(LabelCodec().decode(data), expected)


def test_labels_plain_byte_planes_least_significant_first() -> None:
    values = np.array([[0x0102_0304, 0x0A0B_0C0D], [0xFFFF_FFFF, 5]], np.uint32)
    planes = bytes(
        [0x04, 0x0D, 0xFF, 5, 0x03, 0x0C, 0xFF, 0, 0x02, 0x0B, 0xFF, 0, 0x01, 0x0A, 0xFF, 0]
    )
    data = stream(kind=2, dtype_code=4, shape=(2, 2), mode=2, width=4, sections=(planes, b"", b""))
    np.testing.assert_array_equal(LabelCodec().decode(data), values)


def test_labels_xor_with_previous_slice() -> None:
    # C rows [1 1 1 2 2 2], [1 1 1 2 2 2], [1 1 3 3 2 2]; T = C XOR the previous row:
    # [1 1 1 2 2 2], [0 0 0 0 0 0], [0 0 2 1 0 0]: runs (1,3) (2,3) (0,8) (2,1) (1,1) (0,2)
    def make(runs: int) -> bytes:
        return stream(
            kind=2,
            dtype_code=2,
            shape=(3, 6),
            mode=1,
            transform=1,
            width=1,
            runs=runs,
            sections=(bytes([1, 2, 0, 2, 1, 0]), bytes([3, 3, 8, 1, 1, 2]), b""),
        )

    expected = np.array([[1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2], [1, 1, 3, 3, 2, 2]], np.uint8)
    np.testing.assert_array_equal(LabelCodec().decode(make(6)), expected)
    with pytest.raises(medmask.CodecError):  # a run count that disagrees with the sections
        LabelCodec().decode(make(5))


def test_labels_runs_that_do_not_pay_are_invalid() -> None:
    # 5 runs of w = 1 need 10 bytes, more than the 9 bytes of a 3 x 3 uint8 array: R(w+1) > Nb
    data = stream(
        kind=2,
        dtype_code=2,
        shape=(3, 3),
        mode=1,
        width=1,
        runs=5,
        sections=(bytes([1, 2, 0, 2, 0]), bytes([2, 1, 4, 1, 1]), b""),
    )
    with pytest.raises(medmask.CodecError, match="runs"):
        LabelCodec().decode(data)


def test_labels_constant_bool() -> None:
    data = stream(kind=2, dtype_code=1, shape=(2, 3, 4), mode=0, value=1)
    np.testing.assert_array_equal(LabelCodec().decode(data), np.ones((2, 3, 4), bool))


def test_binary_runs_with_xor_of_packed_rows() -> None:
    # A rows 1111000000 (10 bits) twice: C = packed rows [[0xF0, 0x00], [0xF0, 0x00]];
    # T (XOR previous row) = [[0xF0, 0], [0, 0]]: runs (0xF0, 1), (0, 3)
    data = stream(
        kind=1,
        dtype_code=1,
        shape=(2, 10),
        mode=1,
        transform=1,
        width=1,
        runs=2,
        sections=(bytes([0xF0, 0]), bytes([1, 3]), b""),
    )
    row = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(BinaryCodec().decode(data), np.array([row, row], bool))


@pytest.mark.parametrize("packed", [0xF8, 0xFF], ids=["padding-zero", "padding-set"])
def test_binary_constant_packed_byte_padding_is_ignored(packed: int) -> None:
    # rows of 5 ones pack to 0xF8; the 3 padding bits are written as 0 and ignored on reading
    data = stream(kind=1, dtype_code=2, shape=(3, 5), mode=0, value=packed)
    out = BinaryCodec().decode(data)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.ones((3, 5), np.uint8))


# --- containers, by docs/format.md -----------------------------------------------------------


SPACE = {
    "coordinate_system": "LPS",
    "shape": [1, 1, 10],
    "origin": [1.0, 2.0, 3.0],
    "spacing": [2.0, 1.0, 0.5],
    "x_orientation": [1.0, 0.0, 0.0],
    "y_orientation": [0.0, 1.0, 0.0],
    "z_orientation": [0.0, 0.0, 1.0],
}
LABELS = [
    {"name": "seven", "value": 7, "count": 3, "bbox": [[0, 0], [0, 0], [0, 2]]},
    {"name": "v300", "value": 300, "count": 2, "bbox": [[0, 0], [0, 0], [3, 4]]},
]


def _chunk() -> bytes:
    return stream(
        kind=2,
        dtype_code=3,
        shape=(1, 1, 10),
        mode=1,
        width=2,
        runs=3,
        sections=(bytes([7, 0x2C, 0, 0, 0x01, 0]), bytes([3, 2, 5]), b""),
    )


def test_hand_made_msk() -> None:
    chunk = _chunk()
    meta = json.dumps(
        {
            "format": "medmask.msk",
            "shape": [1, 1, 10],
            "axes": "zyx",
            "dtype": "uint16",
            "bit_depth": 16,
            "space": SPACE,
            "labels": LABELS,
            "codec": {"id": "medmask.labels"},
            "chunks": [1, 1, 10],
        }
    ).encode()
    index_at = 64 + len(meta)
    chunk_at = index_at + 24
    index = struct.pack("<QQII", chunk_at, len(chunk), zlib.crc32(chunk), 0)
    data = _header(b"\x89MSK\r\n\x1a\n", 64, meta, index_at, index, 0) + meta + index + chunk
    mask = medmask.load_mask(io.BytesIO(data))
    np.testing.assert_array_equal(mask.data[0, 0], [7, 7, 7, 300, 300, 0, 0, 0, 0, 0])
    assert mask.mapping.to_dict() == {"seven": 7, "v300": 300}
    assert tuple(mask.space.origin) == (1.0, 2.0, 3.0)
    assert medmask.read_info(io.BytesIO(data)).volumes_mm3() == {"seven": 3.0, "v300": 2.0}


def test_hand_made_mska_fresh_archive_with_empty_second_slot() -> None:
    chunk = _chunk()
    descriptor = {
        "shape": [1, 1, 10],
        "axes": "zyx",
        "dtype": "uint16",
        "bit_depth": 16,
        "labels": LABELS,
        "codec": {"id": "medmask.labels"},
        "chunks": [1, 1, 10],
    }
    directory_at = 128
    meta = json.dumps(
        {
            "format": "medmask.mska",
            "space": SPACE,
            "members": [{"name": "m", "mask": descriptor, "index": [0, 1], "layer": False}],
        }
    ).encode()
    index_at = directory_at + len(meta)
    chunk_at = index_at + 24
    index = struct.pack("<QQII", chunk_at, len(chunk), zlib.crc32(chunk), 0)
    slot0 = _header(b"\x89MSA\r\n\x1a\n", directory_at, meta, index_at, index, 1)
    slot1 = bytes(64)  # never written: a reader skips it (wrong magic)
    data = slot0 + slot1 + meta + index + chunk
    with medmask.MaskArchive(io.BytesIO(data)) as archive:
        assert archive.all_names() == ["m"]
        assert archive.generation == 1
        assert archive.load_structure("v300").tolist() == [[[0, 0, 0, 1, 1, 0, 0, 0, 0, 0]]]


# --- stream versions, signedness, padding and the adapters (codecs.md sections 1, 2, 6, 8) ---


@pytest.mark.parametrize(("kind", "version"), [(1, 2), (2, 2), (1, 0), (2, 3)])
def test_kinds_1_and_2_have_stream_version_1_only(kind: int, version: int) -> None:
    data = bytearray(stream(kind=kind, dtype_code=2, shape=(4,), mode=0, value=1))
    data[3] = version
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    codec = BinaryCodec() if kind == 1 else LabelCodec()
    for decoder in (codec.decode, decode_stream):
        with pytest.raises(medmask.CodecError, match="version"):
            decoder(bytes(data))


@pytest.mark.parametrize("version", [0, 3, 255])
def test_kind_3_has_stream_versions_1_and_2_only(version: int) -> None:
    data = bytearray(edges_stream((4,), 0, b"\x01"))
    np.testing.assert_array_equal(decode_stream(bytes(data)), np.ones(4, np.uint8))
    data[3] = version
    with pytest.raises(medmask.CodecError, match="version"):
        decode_stream(bytes(data))


def test_a_signed_binary_stream_holds_packed_bytes_above_the_signed_maximum() -> None:
    # int8 rows of 8 ones pack to 0xFF (> 127): kind 1 decodes 0/1 values, which always fit
    data = stream(kind=1, dtype_code=6, shape=(2, 8), mode=0, value=0xFF)
    out = BinaryCodec().decode(data)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, np.ones((2, 8), np.int8))


def test_binary_padding_bits_are_ignored_in_every_mode() -> None:
    # rows of 3 bits, 1 0 1: packed 0xA0; with every padding bit set 0xBF
    expected = np.array([[1, 0, 1]] * 4, bool)
    plain = stream(
        kind=1,
        dtype_code=1,
        shape=(4, 3),
        mode=2,
        width=1,
        sections=(bytes([0xBF, 0xA0, 0xBF, 0xA1]), b"", b""),
    )
    runs = stream(
        kind=1,
        dtype_code=1,
        shape=(4, 3),
        mode=1,
        width=1,
        runs=2,
        sections=(bytes([0xBF, 0xA7]), bytes([2, 2]), b""),
    )
    for data in (plain, runs):
        np.testing.assert_array_equal(BinaryCodec().decode(data), expected)


def test_edges_plain_bool_padding_bits_are_refused() -> None:
    # 10 bools 1 0 1 1 0 0 0 1 1 0: packed 0xB1 0x80; the low 6 bits of byte 2 are padding
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 0], bool)
    for second, ok in ((0x80, True), (0x81, False), (0xBF, False)):
        raw = bytes([0xB1, second])
        data = edges_stream((10,), 2, bytes([2, 2]) + raw, dtype_code=1)
        if ok:
            np.testing.assert_array_equal(decode_stream(data), bits)
        else:
            with pytest.raises(medmask.CodecError):
                decode_stream(data)


def test_edges_varints_of_a_longer_form_read_as_their_value() -> None:
    # a constant stream whose value 5 is written in 3 bytes (85 80 00) instead of 1 (05)
    for body in (b"\x05", b"\x85\x80\x00"):
        np.testing.assert_array_equal(
            decode_stream(edges_stream((2, 3), 0, body)), np.full((2, 3), 5, np.uint8)
        )
    with pytest.raises(medmask.CodecError, match="at most 10 bytes"):
        decode_stream(edges_stream((2, 3), 0, b"\x85" + b"\x80" * 9 + b"\x00"))


def test_numcodecs_codes_an_f_ordered_array_as_its_transpose() -> None:
    """Section 8: the stream records the reversed shape; its C-order bytes are the array's
    F-order bytes."""
    from medmask.codecs.numcodecs import EdgeMapCodec, LabelMapCodec

    a = np.asfortranarray(np.arange(2 * 3 * 5, dtype=np.uint16).reshape(2, 3, 5) % 4)
    for codec in (EdgeMapCodec(), LabelMapCodec()):
        data = codec.encode(a)
        assert data[6] == 3  # ndim
        assert struct.unpack_from("<3I", data, 8) == (5, 3, 2)
        np.testing.assert_array_equal(decode_stream(data), a.T)
        np.testing.assert_array_equal(codec.decode(data), a.ravel(order="F"))
        out = np.empty_like(a)  # F-ordered too: the bytes land in its memory
        codec.decode(data, out=out)
        np.testing.assert_array_equal(out, a)
    four = np.zeros((2, 3, 4, 5), np.uint8)
    assert struct.unpack_from("<3I", LabelMapCodec().encode(four), 8) == (6, 4, 5)
    assert struct.unpack_from("<3I", LabelMapCodec().encode(np.asfortranarray(four)), 8) == (
        20,
        3,
        2,
    )
    assert struct.unpack_from("<1I", LabelMapCodec().encode(b"abc"), 8) == (3,)
