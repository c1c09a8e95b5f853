"""Malformed, truncated, corrupted and hostile streams only ever raise CodecError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import zstandard as zstd
from codec_helpers import label_volume

from medmask.codecs import BinaryCodec, LabelCodec, decode
from medmask.errors import CodecError


def small_streams() -> list[tuple[str, BinaryCodec | LabelCodec, np.ndarray]]:
    vol = label_volume((3, 6, 11), np.uint16, seed=7, n=4)
    runs = np.zeros((2, 3, 300), np.uint8)
    runs[1, :, 10:] = 5  # escaped long runs
    return [
        ("labels-runs-u16", LabelCodec(), vol),
        ("labels-long-runs", LabelCodec(), runs),
        ("labels-plain", LabelCodec(), np.arange(40, dtype=np.uint32).reshape(5, 8)),
        ("labels-constant", LabelCodec(), np.full((2, 3), 9, np.uint8)),
        ("binary", BinaryCodec(), vol > 0),
        ("binary-u8-odd", BinaryCodec(), (vol[:, :, :9] > 0).astype(np.uint8)),
        ("binary-zeros", BinaryCodec(), np.zeros((2, 5), bool)),
    ]


def decode_or_error(codec: BinaryCodec | LabelCodec, data: bytes) -> np.ndarray | None:
    try:
        return codec.decode(data)
    except CodecError:
        return None


@pytest.mark.parametrize(("name", "codec", "array"), small_streams(), ids=lambda x: str(x)[:20])
def test_every_single_byte_corruption(name: str, codec: LabelCodec, array: np.ndarray) -> None:
    data = codec.encode(array)
    assert len(data) < 400, name
    silent = 0
    for pos in range(len(data)):
        for new in {data[pos] ^ 0x01, data[pos] ^ 0x80, data[pos] ^ 0xFF, 0x00, 0xFF}:
            if new == data[pos]:
                continue
            bad = data[:pos] + bytes([new]) + data[pos + 1 :]
            got = decode_or_error(codec, bad)
            if got is not None:
                silent += 1
                assert got.dtype == array.dtype
                assert got.shape == array.shape
                np.testing.assert_array_equal(got, array)
    # Header CRC + zstd checksums leave only don't-care bits (e.g. zstd window descriptor).
    assert silent <= len(data) // 20


@pytest.mark.parametrize(("name", "codec", "array"), small_streams(), ids=lambda x: str(x)[:20])
def test_every_truncation(name: str, codec: LabelCodec, array: np.ndarray) -> None:
    data = codec.encode(array)
    for n in range(len(data)):
        with pytest.raises(CodecError):
            codec.decode(data[:n])
    with pytest.raises(CodecError, match="trailing data"):
        codec.decode(data + b"\x00")


@pytest.mark.parametrize("junk", [b"", b"MMC", b"\x00" * 64, b"MMC\x02" + b"\x00" * 60, b"x" * 9])
def test_junk(junk: bytes) -> None:
    for codec in (BinaryCodec(), LabelCodec()):
        with pytest.raises(CodecError):
            codec.decode(junk)
    with pytest.raises(CodecError):
        decode(junk)


def _reheader(data: bytes, ndim: int, n_sections: int, fields_size: int, **patch: int) -> bytes:
    """Rewrite the shape / fields of a stream and fix the header CRC (a forged stream)."""
    head_len = 8 + 4 * ndim + fields_size + 8 * n_sections
    head = bytearray(data[:head_len])
    if "shape" in patch:
        struct.pack_into(f"<{ndim}I", head, 8, *([patch["shape"]] * ndim))
    if "mode" in patch:
        head[7] = patch["mode"]
    if "n_runs" in patch:
        struct.pack_into("<Q", head, 8 + 4 * ndim + 6, patch["n_runs"])
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + data[head_len + 4 :]


@pytest.mark.parametrize("codec", [BinaryCodec(), LabelCodec()], ids=["binary", "labels"])
def test_huge_declared_shape_is_refused_before_allocating(codec: LabelCodec) -> None:
    a = np.zeros((2, 2, 2), np.uint8)
    data = _reheader(codec.encode(a), 3, 3, 22, shape=100_000)  # 10**15 elements
    with pytest.raises(CodecError, match="Expected at most"):
        codec.decode(data)
    with pytest.raises(CodecError, match="Expected shape"):
        codec.decode(data, shape=(2, 2, 2))
    huge = _reheader(data, 3, 3, 22, shape=0xFFFFFFFF)
    with pytest.raises(CodecError, match="Expected a shape numpy can allocate"):
        codec.decode(huge, shape=(0xFFFFFFFF,) * 3)


def test_forged_run_count_and_lengths_are_refused() -> None:
    a = label_volume((3, 6, 11), np.uint8, seed=8)
    data = LabelCodec().encode(a)
    with pytest.raises(CodecError):
        LabelCodec().decode(_reheader(data, 3, 3, 22, n_runs=10**12))
    # a frame that lies about its content size
    head_len = 8 + 12 + 22 + 24 + 4
    sizes = struct.unpack_from("<3Q", data, 8 + 12 + 22)
    frames = data[head_len:]
    big = zstd.ZstdCompressor(write_checksum=True).compress(b"\x00" * 10_000_000)
    forged_sizes = (len(big), sizes[1], sizes[2])
    head = bytearray(data[: head_len - 4])
    struct.pack_into("<3Q", head, 8 + 12 + 22, *forged_sizes)
    forged = bytes(head) + struct.pack("<I", zlib.crc32(head)) + big + frames[sizes[0] :]
    with pytest.raises(CodecError, match="Expected the run values section to decode to"):
        LabelCodec().decode(forged)


def test_forged_frame_without_checksum_is_refused() -> None:
    a = np.random.default_rng(0).permutation(16).astype(np.uint8).reshape(4, 4)
    data = LabelCodec().encode(a)
    assert data[7] == 2  # plain mode: one frame
    head_len = 8 + 8 + 22 + 24 + 4
    frame = zstd.ZstdCompressor(write_checksum=False).compress(a.tobytes())
    head = bytearray(data[: head_len - 4])
    struct.pack_into("<3Q", head, 8 + 8 + 22, len(frame), 0, 0)
    forged = bytes(head) + struct.pack("<I", zlib.crc32(head)) + frame
    with pytest.raises(CodecError, match="checksummed"):
        LabelCodec().decode(forged)


def test_errors_are_value_errors() -> None:
    assert issubclass(CodecError, ValueError)
