"""``check_stored_chunk``: a stored chunk's length, CRC and stream header against its index
entry and the member descriptor (format.md section 3), and ``codecs.peek_stream``."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
from spacetransformer import Space

from medmask import ChecksumError, FormatError, SegmentationMask, TruncatedFileError
from medmask.codecs import (
    CODEC_KINDS,
    BinaryCodec,
    CodecError,
    EdgesCodec,
    LabelCodec,
    StreamPrefix,
    peek_stream,
)
from medmask.format.encoding import EncodedMask, check_stored_chunk, encode_mask

SHAPE = (4, 10, 10)


def _encoded(codec: str = "medmask.edges", depth: int = 8) -> EncodedMask:
    data = np.zeros(SHAPE, np.uint8 if depth == 8 else np.uint16)
    data[1:3, 2:7, 3:8] = 2 if depth > 1 else 1
    data[0, 0, 0] = 1
    mapping = {"a": 1, "b": 2} if depth > 1 else {"a": 1}
    if depth == 1:
        data = data.astype(bool)
    mask = SegmentationMask(data, mapping, Space(shape=SHAPE), bit_depth=depth)
    return encode_mask(mask, chunks=(2, 10, 10), codec=codec)


def _with_stream(encoded: EncodedMask, chunk_id: int, stream: bytes) -> np.ndarray:
    index = encoded.index(1000)
    index["length"][chunk_id] = len(stream)
    index["crc"][chunk_id] = zlib.crc32(stream)
    return index


@pytest.mark.parametrize(
    ("codec", "array"),
    [
        (EdgesCodec(), np.arange(24, dtype=">u2").reshape(2, 3, 4)),
        (LabelCodec(), np.arange(6, dtype=np.uint32).reshape(6)),
        (BinaryCodec(), np.ones((3, 5), bool)),
    ],
)
def test_peek_stream_reads_the_common_prefix_of_every_kind(
    codec: EdgesCodec | LabelCodec | BinaryCodec, array: np.ndarray
) -> None:
    stream = codec.encode(array)
    got = peek_stream(stream)
    assert got == StreamPrefix(CODEC_KINDS[codec.codec_id], stream[3], array.dtype, array.shape)
    assert got.dtype == array.dtype  # byte order included


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        (b"MMC\x02\x03\x02\x03", "at least 8 bytes"),
        (b"XYZ\x02\x03\x02\x03\x00" + bytes(12), "magic"),
        (b"MMC\x02\x03\x02\x04\x00" + bytes(16), "ndim"),
        (b"MMC\x02\x03\x02\x00\x00", "ndim"),
        (b"MMC\x02\x03\x02\x03\x00" + bytes(11), "truncated"),
        (b"MMC\x02\x03\x0a\x03\x00" + bytes(12), "dtype code"),
        (b"MMC\x02\x03\x82\x03\x00" + bytes(12), "dtype code"),  # big-endian flag on 1 byte
    ],
)
def test_peek_stream_refuses_a_malformed_prefix(stream: bytes, problem: str) -> None:
    with pytest.raises(CodecError, match=problem):
        peek_stream(stream)


@pytest.mark.parametrize("codec", sorted(CODEC_KINDS))
def test_every_stored_chunk_of_a_written_mask_passes(codec: str) -> None:
    encoded = _encoded(codec, depth=1 if codec == "medmask.binary" else 8)
    index = encoded.index(1000)
    for chunk_id, stream in enumerate(encoded.streams):
        if stream:
            assert check_stored_chunk(encoded.descriptor, index, chunk_id, stream, name="f") is (
                stream
            )


def test_length_and_crc_are_checked_first() -> None:
    encoded = _encoded()
    index = encoded.index(1000)
    stream = encoded.streams[0]
    with pytest.raises(TruncatedFileError, match=r"f\.msk: chunk 0 is truncated"):
        check_stored_chunk(encoded.descriptor, index, 0, stream[:-1], name="f.msk")
    with pytest.raises(TruncatedFileError, match="got nothing"):
        check_stored_chunk(encoded.descriptor, index, 0, None, name="f.msk")
    flipped = bytes([stream[0] ^ 1]) + stream[1:]
    with pytest.raises(ChecksumError, match=r"f\.msk: chunk 0 checksum mismatch"):
        check_stored_chunk(encoded.descriptor, index, 0, flipped, name="f.msk")


def test_a_stream_of_another_dtype_is_refused_not_cast() -> None:
    encoded = _encoded()  # uint8 member
    wide = EdgesCodec().encode(np.full((2, 10, 10), 258, np.uint16))
    index = _with_stream(encoded, 0, wide)
    with pytest.raises(FormatError, match=r"f\.msk: chunk 0 .*dtype uint8 .*Got .*dtype uint16"):
        check_stored_chunk(encoded.descriptor, index, 0, wide, name="f.msk")
    swapped = EdgesCodec().encode(np.ones((2, 10, 10), ">u2"))
    wide_member = _encoded(depth=16)
    index = _with_stream(wide_member, 0, swapped)
    with pytest.raises(FormatError, match=r"dtype >u2"):
        check_stored_chunk(wide_member.descriptor, index, 0, swapped, name="f.msk")


@pytest.mark.parametrize("shape", [(1, 10, 10), (2, 5, 5), (2, 10, 11), (2, 100), (200,)], ids=str)
def test_a_stream_of_another_shape_or_ndim_is_refused_not_padded(
    shape: tuple[int, ...],
) -> None:
    encoded = _encoded()
    stream = EdgesCodec().encode(np.ones(shape, np.uint8))
    index = _with_stream(encoded, 1, stream)
    with pytest.raises(FormatError, match=rf"chunk 1 .*shape \(2, 10, 10\)\. Got .*{shape}"):
        check_stored_chunk(encoded.descriptor, index, 1, stream, name="f.msk")


def test_a_stream_of_another_kind_is_refused() -> None:
    encoded = _encoded("medmask.labels")
    stream = EdgesCodec().encode(np.ones((2, 10, 10), np.uint8))
    index = _with_stream(encoded, 0, stream)
    with pytest.raises(FormatError, match=r"medmask\.labels stream \(kind 2\).*Got kind 3"):
        check_stored_chunk(encoded.descriptor, index, 0, stream, name="f.msk")


def test_garbage_with_a_valid_crc_and_an_unknown_codec_are_format_errors() -> None:
    encoded = _encoded()
    junk = b"\x00" * 40
    index = _with_stream(encoded, 0, junk)
    with pytest.raises(FormatError, match="chunk 0 cannot be decoded: Expected stream magic"):
        check_stored_chunk(encoded.descriptor, index, 0, junk, name="f.msk")
    other = dataclasses.replace(encoded.descriptor, codec={"id": "lz4"})
    stream = encoded.streams[0]
    with pytest.raises(FormatError, match="cannot decode: expected a codec id"):
        check_stored_chunk(other, encoded.index(1000), 0, stream, name="f.msk")
