"""Header, metadata block and chunk index (docs/format.md sections 1-3): bytes in, bytes out."""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib

import numpy as np
import pytest

import medmask
from medmask.format.container import (
    FLAG_METADATA_ZSTD,
    HEADER_SIZE,
    INDEX_DTYPE,
    INDEX_ENTRY_SIZE,
    MAGIC_MSK,
    MAGIC_MSKA,
    Header,
    check_stored_ranges,
    crc32,
    decode_metadata,
    encode_metadata,
    pack_index,
    parse_index,
)

HEADER = Header(
    magic=MAGIC_MSK,
    metadata_offset=64,
    metadata_length=100,
    metadata_crc=0xDEADBEEF,
    index_offset=164,
    index_count=3,
    index_crc=0x12345678,
    required_flags=FLAG_METADATA_ZSTD,
    optional_flags=0,
    generation=0,
)


def test_constants_match_the_spec() -> None:
    assert bytes.fromhex("894D534B0D0A1A0A") == MAGIC_MSK
    assert bytes.fromhex("894D53410D0A1A0A") == MAGIC_MSKA
    assert HEADER_SIZE == 64
    assert INDEX_ENTRY_SIZE == 24
    assert crc32(b"123456789") == 0xCBF43926  # CRC-32/ISO-HDLC check value


def test_header_layout_is_little_endian_as_documented() -> None:
    raw = HEADER.pack()
    assert len(raw) == 64
    fields = struct.unpack("<8sHHIIQQIIQIII", raw)
    assert fields == (
        MAGIC_MSK,
        1,
        0,
        1,
        0,
        0,
        64,
        100,
        0xDEADBEEF,
        164,
        3,
        0x12345678,
        zlib.crc32(raw[:60]),
    )
    assert Header.parse(raw, magic=MAGIC_MSK, name="h") == HEADER
    assert HEADER.index_length == 72


def test_header_parse_accepts_longer_input_and_memoryview() -> None:
    raw = HEADER.pack() + b"trailing"
    assert Header.parse(memoryview(raw), magic=MAGIC_MSK, name="h") == HEADER


def test_mska_magic_is_distinct() -> None:
    # a .mska slot points after both slots (byte 128 or later)
    raw = dataclasses.replace(
        HEADER, magic=MAGIC_MSKA, generation=7, metadata_offset=128, index_offset=228
    ).pack()
    assert Header.parse(raw, magic=MAGIC_MSKA, name="a").generation == 7
    with pytest.raises(medmask.FormatError, match=r"a: not a \.msk file: starts with a \.mska"):
        Header.parse(raw, magic=MAGIC_MSK, name="a")
    with pytest.raises(medmask.FormatError, match=r"not a \.mska archive: starts with a \.msk"):
        Header.parse(HEADER.pack(), magic=MAGIC_MSKA, name="m")


@pytest.mark.parametrize("position", range(64))
def test_every_header_byte_is_checked(position: int) -> None:
    raw = bytearray(HEADER.pack())
    raw[position] ^= 0xFF
    with pytest.raises(medmask.FormatError, match="h: "):
        Header.parse(bytes(raw), magic=MAGIC_MSK, name="h")


def test_small_metadata_is_plain_json() -> None:
    obj = {"shape": [1, 2, 3], "name": "ü"}
    stored, flags = encode_metadata(obj)
    assert flags == 0
    assert json.loads(stored) == obj
    header = dataclasses.replace(
        HEADER, metadata_length=len(stored), metadata_crc=crc32(stored), required_flags=flags
    )
    assert decode_metadata(stored, header, name="m") == obj
    with pytest.raises(medmask.ChecksumError, match="m: metadata checksum mismatch"):
        decode_metadata(stored.upper(), header, name="m")


def test_large_metadata_is_zstd_with_flag() -> None:
    obj = {"labels": [{"name": f"structure number {i}", "value": i} for i in range(200)]}
    stored, flags = encode_metadata(obj)
    assert flags == FLAG_METADATA_ZSTD
    assert stored[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert len(stored) < len(json.dumps(obj))
    header = dataclasses.replace(
        HEADER, metadata_length=len(stored), metadata_crc=crc32(stored), required_flags=flags
    )
    assert decode_metadata(stored, header, name="m") == obj
    with pytest.raises(medmask.TruncatedFileError, match="m: file ends inside the metadata"):
        decode_metadata(stored[:-1], header, name="m")


def test_metadata_refuses_nan() -> None:
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        encode_metadata({"x": float("nan")})


def test_index_roundtrip() -> None:
    entries = np.zeros(3, dtype=INDEX_DTYPE)
    entries["offset"] = [300, 0, 400]
    entries["length"] = [100, 0, 2**40]
    entries["crc"] = [1, 0, 0xFFFFFFFF]
    raw = pack_index(entries)
    assert len(raw) == 72
    assert struct.unpack_from("<QQII", raw, 48) == (400, 2**40, 0xFFFFFFFF, 0)
    header = dataclasses.replace(HEADER, index_count=3, index_crc=crc32(raw))
    parsed = parse_index(raw, header, name="i")
    assert parsed.tolist() == entries.tolist()
    with pytest.raises(medmask.ChecksumError, match="i: chunk index checksum"):
        parse_index(raw[:-1] + b"\x01", header, name="i")
    with pytest.raises(medmask.TruncatedFileError, match="i: file ends inside the chunk index"):
        parse_index(raw[:48], header, name="i")


def _entries(*spans: tuple[int, int]) -> np.ndarray:
    entries = np.zeros(len(spans), INDEX_DTYPE)
    entries["offset"] = [o for o, _ in spans]
    entries["length"] = [n for _, n in spans]
    return entries


def test_stored_ranges_in_separate_bytes_pass() -> None:
    # empty entries (length 0) share offset 0 with anything; touching streams do not overlap
    check_stored_ranges(_entries((200, 10), (0, 0), (210, 5), (0, 0)), [(0, 128)], name="x")


@pytest.mark.parametrize(
    ("spans", "blocks", "match"),
    [
        (((200, 10), (2**64 - 5, 100)), [], "points past the end of the file"),  # end wraps
        (((200, 10), (209, 5)), [], r"Got two that overlap: bytes 200-210 and 209-214"),
        (((200, 10), (120, 9)), [(0, 128)], "Got one that overlaps bytes 0-128"),
    ],
    ids=["wrapping-end", "overlapping-streams", "stream-in-block"],
)
def test_stored_ranges_that_wrap_or_overlap_are_refused(
    spans: tuple[tuple[int, int], ...], blocks: list[tuple[int, int]], match: str
) -> None:
    with pytest.raises(medmask.FormatError, match=rf"^x: .*{match}"):
        check_stored_ranges(_entries(*spans), blocks, name="x")
