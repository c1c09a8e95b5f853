"""The container rules docs/format.md settles for an independent reader, on hand-built files.

Every file here is assembled field by field with ``struct`` as the spec describes it (chunk
streams are constant-mode ``medmask.labels`` streams, codecs.md sections 1 and 3), then read
through the public API. Each rule has a file that follows it (it reads) and one that breaks
it (a ``FormatError`` naming the file).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
import zstandard

import medmask
from medmask.format.container import (
    FLAG_METADATA_ZSTD,
    MAGIC_MSK,
    Header,
    decode_metadata,
)
from spec_files import header

MSK = b"\x89MSK\r\n\x1a\n"
MSKA = b"\x89MSA\r\n\x1a\n"
SHAPE = [1, 1, 10]
SPACE = {
    "coordinate_system": "LPS",
    "shape": SHAPE,
    "origin": [0.0, 0.0, 0.0],
    "spacing": [1.0, 1.0, 1.0],
    "x_orientation": [1.0, 0.0, 0.0],
    "y_orientation": [0.0, 1.0, 0.0],
    "z_orientation": [0.0, 0.0, 1.0],
}
# two chunks of (1, 1, 5), both all 7
DESCRIPTOR = {
    "shape": SHAPE,
    "axes": "zyx",
    "dtype": "uint8",
    "bit_depth": 8,
    "labels": [{"name": "seven", "value": 7, "count": 10, "bbox": [[0, 0], [0, 0], [0, 9]]}],
    "codec": {"id": "medmask.labels"},
    "chunks": [1, 1, 5],
}
ALL_SEVEN = np.full(SHAPE, 7, np.uint8)


def constant_stream(value: int = 7, shape: tuple[int, ...] = (1, 1, 5)) -> bytes:
    """A ``medmask.labels`` uint8 stream in constant mode (codecs.md sections 1 and 3)."""
    head = b"MMC" + bytes([1, 2, 2, len(shape), 0]) + struct.pack(f"<{len(shape)}I", *shape)
    head += struct.pack("<BBIQQ", 0, 0, value, 0, 0) + struct.pack("<QQQ", 0, 0, 0)
    return head + struct.pack("<I", zlib.crc32(head))


def entry(offset: int, length: int, crc: int, reserved: int = 0) -> bytes:
    return struct.pack("<QQII", offset, length, crc, reserved)


def msk_metadata() -> bytes:
    return json.dumps({"format": "medmask.msk", **DESCRIPTOR, "space": SPACE}).encode()


def standard_msk(**patch: Any) -> bytes:
    """[header][metadata][index][chunk 0][chunk 1], the writer's layout; ``patch`` replaces
    index fields of entry 1 (``offset``, ``length``, ``crc``, ``reserved``)."""
    meta = msk_metadata()
    chunk = constant_stream()
    index_at = 64 + len(meta)
    first = index_at + 48
    fields = {"offset": first + len(chunk), "length": len(chunk), "crc": zlib.crc32(chunk)}
    fields.update(patch)
    index = entry(first, len(chunk), zlib.crc32(chunk)) + entry(**fields)
    return header(MSK, 64, meta, index_at, index, 0) + meta + index + chunk + chunk


def read(data: bytes) -> np.ndarray:
    return medmask.MaskFile(io.BytesIO(data)).read_array()


def test_the_standard_layout_reads() -> None:
    np.testing.assert_array_equal(read(standard_msk()), ALL_SEVEN)


# --- section 3: reserved fields and empty entries --------------------------------------------


@pytest.mark.parametrize(
    "patch",
    [
        {"reserved": 1},
        {"offset": 0, "length": 0, "crc": 0, "reserved": 1 << 31},
        {"offset": 200, "length": 0, "crc": 0},  # an empty entry with an offset
        {"offset": 0, "length": 0, "crc": 0x1234},  # an empty entry with a CRC
    ],
    ids=["reserved", "empty-reserved", "empty-offset", "empty-crc"],
)
def test_non_zero_reserved_fields_and_empty_entries_are_refused(patch: dict[str, int]) -> None:
    with pytest.raises(medmask.FormatError, match=r"chunk index entry 1 is invalid"):
        read(standard_msk(**patch))


def test_an_all_zero_empty_entry_is_an_all_zero_chunk() -> None:
    out = read(standard_msk(offset=0, length=0, crc=0))
    np.testing.assert_array_equal(out[0, 0], [7] * 5 + [0] * 5)


# --- sections 4 and 6: where a .msk puts its pieces -----------------------------------------


def test_msk_readers_follow_the_offsets_in_any_order() -> None:
    """[header][gap][index][metadata][chunks]: metadata and index anywhere after the header,
    chunk streams after both."""
    meta = msk_metadata()
    chunk = constant_stream()
    index_at = 64 + 16
    meta_at = index_at + 48
    first = meta_at + len(meta)
    index = entry(first, len(chunk), zlib.crc32(chunk)) + entry(
        first + len(chunk), len(chunk), zlib.crc32(chunk)
    )
    data = header(MSK, meta_at, meta, index_at, index, 0) + bytes(16) + index + meta
    np.testing.assert_array_equal(read(data + chunk + chunk), ALL_SEVEN)


def test_msk_streams_before_the_end_of_metadata_and_index_are_refused() -> None:
    """[header][chunks][metadata][index]: a stream must not start before both end."""
    meta = msk_metadata()
    chunk = constant_stream()
    meta_at = 64 + 2 * len(chunk)
    index_at = meta_at + len(meta)
    index = entry(64, len(chunk), zlib.crc32(chunk)) + entry(
        64 + len(chunk), len(chunk), zlib.crc32(chunk)
    )
    data = header(MSK, meta_at, meta, index_at, index, 0) + chunk + chunk + meta + index
    with pytest.raises(medmask.FormatError, match="points into the header or metadata"):
        read(data)


def test_msk_streams_may_not_share_bytes() -> None:
    meta = msk_metadata()
    chunk = constant_stream()
    index_at = 64 + len(meta)
    first = index_at + 48
    same = entry(first, len(chunk), zlib.crc32(chunk))  # both chunks are the same bytes
    data = header(MSK, 64, meta, index_at, same + same, 0) + meta + same + same + chunk
    with pytest.raises(medmask.FormatError, match="overlap"):
        read(data)


# --- sections 1 and 2: the metadata block --------------------------------------------------


def test_unknown_codec_config_keys_are_ignored_when_reading() -> None:
    """Section 1: unknown JSON keys are ignored, in ``codec`` too: a file of a newer minor
    version that records a new codec option still decodes (the stream is self-describing)."""
    meta = json.loads(msk_metadata())
    meta["codec"] = {"id": "medmask.labels", "level": 9, "added_later": 1}
    meta["unknown_top_level_key"] = {"ignored": True}
    stored = json.dumps(meta).encode()
    chunk = constant_stream()
    index_at = 64 + len(stored)
    index = entry(index_at + 48, len(chunk), zlib.crc32(chunk)) + entry(
        index_at + 48 + len(chunk), len(chunk), zlib.crc32(chunk)
    )
    data = header(MSK, 64, stored, index_at, index, 0) + stored + index + chunk + chunk
    info = medmask.read_info(io.BytesIO(data))
    assert info.codec["added_later"] == 1
    np.testing.assert_array_equal(read(data), ALL_SEVEN)


def zstd_metadata_msk(stored: bytes) -> bytes:
    """``standard_msk`` with its metadata stored as ``stored`` (METADATA_ZSTD set)."""
    chunk = constant_stream()
    index_at = 64 + len(stored)
    first = index_at + 48
    index = entry(first, len(chunk), zlib.crc32(chunk)) + entry(
        first + len(chunk), len(chunk), zlib.crc32(chunk)
    )
    head = header(MSK, 64, stored, index_at, index, 0, flags=FLAG_METADATA_ZSTD)
    return head + stored + index + chunk + chunk


def frame(raw: bytes, *, size: bool = True, checksum: bool = False) -> bytes:
    cctx = zstandard.ZstdCompressor(write_content_size=size, write_checksum=checksum)
    return cctx.compress(raw)


SKIPPABLE = struct.pack("<II", 0x184D2A50, 4) + b"abcd"


@pytest.mark.parametrize(
    "make",
    [
        lambda raw: frame(raw),
        lambda raw: frame(raw, checksum=True),
        lambda raw: frame(raw, size=False),
    ],
    ids=["content-size", "with-checksum", "without-content-size"],
)
def test_metadata_is_one_zstd_frame(make: Any) -> None:
    np.testing.assert_array_equal(read(zstd_metadata_msk(make(msk_metadata()))), ALL_SEVEN)


@pytest.mark.parametrize(
    "make",
    [
        lambda raw: frame(raw) + frame(b" "),  # a second frame (JSON whitespace)
        lambda raw: frame(raw) + SKIPPABLE,
        lambda raw: frame(raw) + b"\0",
        lambda raw: SKIPPABLE + frame(raw),
        lambda raw: frame(raw, size=False) + frame(b" ", size=False),
        lambda raw: frame(raw, size=False) + SKIPPABLE,
        lambda raw: frame(raw, size=False)[:-2],  # truncated
    ],
    ids=[
        "two-frames",
        "then-skippable",
        "then-a-byte",
        "skippable-first",
        "two-frames-no-size",
        "no-size-then-skippable",
        "no-size-truncated",
    ],
)
def test_metadata_of_more_or_less_than_one_frame_is_refused(make: Any) -> None:
    with pytest.raises(medmask.FormatError, match=r"one zstd frame|cannot be decompressed"):
        read(zstd_metadata_msk(make(msk_metadata())))


@pytest.mark.parametrize(
    "duplicate",
    [
        b'{"labels": [], ',  # a second "labels" key at the top level (JSON parsers disagree)
        b'{"x": {"a": 1, "a": 2}, ',  # or in any nested object
    ],
    ids=["top-level", "nested"],
)
def test_metadata_with_a_key_twice_in_one_object_is_refused(duplicate: bytes) -> None:
    meta = duplicate + msk_metadata()[1:]
    chunk = constant_stream()
    index_at = 64 + len(meta)
    index = entry(index_at + 48, len(chunk), zlib.crc32(chunk)) + entry(
        index_at + 48 + len(chunk), len(chunk), zlib.crc32(chunk)
    )
    data = header(MSK, 64, meta, index_at, index, 0) + meta + index + chunk + chunk
    with pytest.raises(medmask.FormatError, match="twice in one JSON object"):
        medmask.read_info(io.BytesIO(data))


@pytest.mark.parametrize(("depth", "ok"), [(64, True), (65, False)])
def test_json_depth_counts_the_top_level_object(depth: int, ok: bool) -> None:
    """Section 6: at most 64 levels of arrays and objects, the top-level object being level 1."""
    text = b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)
    head = Header.parse(header(MSK, 64, text, 64 + len(text), b"", 0), magic=MAGIC_MSK, name="deep")
    if ok:
        assert decode_metadata(text, head, name="deep")["a"]
    else:
        with pytest.raises(medmask.FormatError, match=r"deep: .*nested deeper than 64 levels"):
            decode_metadata(text, head, name="deep")


# --- section 5: archives --------------------------------------------------------------------


def member(name: str, first: int, count: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "mask": DESCRIPTOR, "index": [first, count], "layer": False, **extra}


def archive(
    members: list[dict[str, Any]],
    entries: list[tuple[int, int]] | None = None,
    *,
    meta_at: int = 128,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """[slot 0][slot 1: zeros][metadata][index][chunk streams]; ``entries`` lists (chunk
    number, reserved) per index entry, default one chunk each, two per member."""
    chunk = constant_stream()
    n_entries = sum(m["index"][1] for m in members) if entries is None else len(entries)
    obj = {"format": "medmask.mska", "space": SPACE, "members": members, **(extra or {})}
    meta = json.dumps(obj).encode()
    index_at = meta_at + len(meta)
    first = index_at + 24 * n_entries
    which = list(range(n_entries)) if entries is None else [e[0] for e in entries]
    index = b"".join(entry(first + k * len(chunk), len(chunk), zlib.crc32(chunk)) for k in which)
    streams = chunk * (max(which) + 1 if which else 0)
    slot0 = header(MSKA, meta_at, meta, index_at, index, 1)
    pad = bytes(meta_at - 128)
    return slot0 + bytes(64) + pad + meta + index + streams


def open_archive(data: bytes) -> list[str]:
    with medmask.MaskArchive(io.BytesIO(data)) as a:
        for name in a.all_names():
            np.testing.assert_array_equal(a.load_segmask(name).data, ALL_SEVEN)
        return a.all_names()


def test_members_whose_spans_tile_the_index_read() -> None:
    data = archive([member("a", 0, 2), member("b", 2, 2)])
    with medmask.MaskArchive(io.BytesIO(data)) as a:
        assert a.all_names() == ["a", "b"]
        np.testing.assert_array_equal(a.load_segmask("b").data, ALL_SEVEN)


@pytest.mark.parametrize(
    ("members", "n_entries", "match"),
    [
        ([member("a", 0, 2), member("b", 0, 2)], 2, "start at entry 2"),  # shared entries
        ([member("a", 0, 2), member("b", 1, 2)], 3, "start at entry 2"),  # overlapping
        ([member("a", 2, 2), member("b", 0, 2)], 4, "start at entry 0"),  # out of order
        ([member("a", 0, 2), member("b", 3, 2)], 5, "start at entry 2"),  # a gap
        ([member("a", 0, 2)], 3, "1 unused"),  # an entry no member uses
    ],
    ids=["shared", "overlapping", "out-of-order", "gap", "unused"],
)
def test_member_spans_that_do_not_tile_the_index_are_refused(
    members: list[dict[str, Any]], n_entries: int, match: str
) -> None:
    data = archive(members, [(k, 0) for k in range(n_entries)])
    with pytest.raises(medmask.FormatError, match=match):
        open_archive(data)


def test_two_members_sharing_chunk_bytes_are_refused() -> None:
    # spans tile the index, but entries 2 and 3 point at the bytes of entries 0 and 1
    data = archive([member("a", 0, 2), member("b", 2, 2)], [(0, 0), (1, 0), (0, 0), (1, 0)])
    with pytest.raises(medmask.FormatError, match="overlap"):
        open_archive(data)


def test_a_stream_inside_the_directory_is_refused() -> None:
    data = bytearray(archive([member("a", 0, 2)]))
    meta_at, meta_len = struct.unpack_from("<QI", data, 28)
    (index_at,) = struct.unpack_from("<Q", data, 44)
    stream = bytes(data[meta_at : meta_at + 66])  # 66 metadata bytes as a "stream"
    index = entry(meta_at, 66, zlib.crc32(stream)) + bytes(data[index_at + 24 : index_at + 48])
    data[index_at : index_at + 48] = index
    data[:64] = header(MSKA, meta_at, bytes(data[meta_at : meta_at + meta_len]), index_at, index, 1)
    with pytest.raises(medmask.FormatError, match="outside the header slots, metadata"):
        open_archive(bytes(data))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("meta_at", 64, r"points into itself.*byte 128 or later"),
        ("meta_at", 100, r"points into itself.*byte 128 or later"),
        ("index_at", 127, r"points into itself.*byte 128 or later"),
        ("index_at", 140, r"impossible: expected metadata and chunk index in separate bytes"),
    ],
)
def test_a_newest_slot_with_impossible_fields_is_refused(
    field: str, value: int, match: str
) -> None:
    """Rule 2: an intact newest slot (magic and CRC right) whose fields cannot be true is
    refused with an error, not skipped like a torn slot; here slot 1 is older and valid."""
    data = archive([member("a", 0, 2)], meta_at=128)
    meta_len = struct.unpack_from("<I", data, 36)[0]
    meta = data[128 : 128 + meta_len]
    index_at = struct.unpack_from("<Q", data, 44)[0]
    index = data[index_at : index_at + 48]
    where = {"meta_at": 128, "index_at": index_at, field: value}
    newest = header(MSKA, where["meta_at"], meta, where["index_at"], index, 2)
    assert open_archive(data[:64] + data[:64] + data[128:]) == ["a"]  # both slots fine
    with pytest.raises(medmask.FormatError, match=match):
        open_archive(newest + data[:64] + data[128:])


def test_msk_metadata_and_index_may_not_overlap() -> None:
    data = standard_msk()
    meta = msk_metadata()
    index = data[64 + len(meta) : 64 + len(meta) + 48]
    overlapping = header(MSK, 64, meta, 64 + len(meta) - 8, index, 0)
    with pytest.raises(medmask.FormatError, match="separate bytes"):
        read(overlapping + data[64:])


def test_a_member_mask_may_not_carry_its_own_space() -> None:
    other = dict(SPACE, spacing=[2.0, 2.0, 2.0])
    data = archive([{**member("a", 0, 2), "mask": {**DESCRIPTOR, "space": other}}])
    with pytest.raises(medmask.FormatError, match=r"\[a\]: expected a member mask without"):
        open_archive(data)


def test_a_member_layer_must_be_a_boolean() -> None:
    with pytest.raises(medmask.FormatError, match="'layer' true or false"):
        open_archive(archive([member("a", 0, 2, layer="no")]))


@pytest.mark.parametrize("regions", [5, {"a": 1}, [[1, 2, 3]], "x"])
def test_directory_regions_of_any_shape_are_ignored_by_readers(regions: object) -> None:
    data = archive([member("a", 0, 2)], extra={"directory_regions": regions})
    assert open_archive(data) == ["a"]
