"""medmask 0.1 files (``MSK1`` / ``MSKA``) read through ``medmask.format.legacy``.

The fixtures in ``tests/fixtures/legacy_0_1`` were written by the released medmask 0.1.3
(``tests/fixtures/make_legacy_fixtures.py``, run by hand in a separate virtualenv) together with
what 0.1.3 itself loads from them; the reader must give the same arrays, mappings and spaces.
The hostile files below are built here with ``struct`` and ``zstandard`` from the layout in
``legacy.py``'s docstring: every problem must raise a ``MedmaskError`` (and ``ValueError``)
whose message starts with the file name, never a builtin, numpy or zstd exception.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from spacetransformer import Space

import medmask
from bounded import MB, assert_one_line_error, rle_zstd_frame, run_limited, traced_peak
from medmask.errors import (
    AllocationLimitError,
    FormatError,
    MedmaskError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from medmask.format.legacy import (
    LEGACY_MSK_MAGIC,
    LEGACY_MSKA_MAGIC,
    LegacyMask,
    legacy_kind,
    read_legacy_member,
    read_legacy_msk,
    read_legacy_mska,
    read_legacy_mska_directory,
)

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_0_1"
MSK_NAMES = [
    "binary_bool",
    "labels_uint8",
    "labels_uint16",
    "labels_uint32",
    "labels_int64",
    "labels_float64",
    "labels_big_endian_uint16",
]
MSKA_NAMES = ["archive_mixed", "archive_relocated"]
BROKEN_MSKA = ["archive_index_overflow"]  # corrupted by 0.1.3's own writer
ALL_FILES = [f"{n}.msk" for n in MSK_NAMES] + [f"{n}.mska" for n in MSKA_NAMES + BROKEN_MSKA]
MSK_HEADER = struct.Struct("<4sBBB6Q7x")
MSKA_HEADER = struct.Struct("<4sBBB7Q27x")
SPACE_KEYS = ("shape", "origin", "spacing", "x_orientation", "y_orientation", "z_orientation")
STORAGE = {np.dtype(np.bool_), np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32)}


# --- helpers ---------------------------------------------------------------------------------


def fixture(file: str) -> bytes:
    return (LEGACY / file).read_bytes()


def meta(stem: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((LEGACY / f"{stem}.json").read_text(encoding="utf-8"))
    return result


def read_any(data: bytes, name: str, **limits: Any) -> dict[str, LegacyMask]:
    """Read a ``.msk`` (as one member named ``""``) or a ``.mska`` by the file extension."""
    if name.endswith(".msk"):
        return {"": read_legacy_msk(data, name=name, **limits)}
    return read_legacy_mska(data, name=name, **limits)


def assert_valid(masks: dict[str, LegacyMask]) -> None:
    for mask in masks.values():
        assert isinstance(mask.array, np.ndarray)
        assert mask.array.dtype in STORAGE
        assert mask.array.dtype.isnative
        assert mask.array.flags.c_contiguous
        assert isinstance(mask.space, Space)
        assert tuple(int(s) for s in mask.space.shape) == mask.array.shape
        assert all(isinstance(k, str) and type(v) is int for k, v in mask.mapping.items())


def expect_error(
    data: bytes, name: str, kind: type[Exception] = MedmaskError, **limits: Any
) -> Exception:
    with pytest.raises(kind) as info:
        read_any(data, name, **limits)
    exc = info.value
    assert isinstance(exc, MedmaskError)
    assert isinstance(exc, ValueError)
    assert str(exc).startswith(f"{name}: "), str(exc)
    return exc


def outcome(data: bytes, name: str) -> str:
    """``"error"`` for a MedmaskError naming the file, else ``"valid"`` after checking it."""
    try:
        masks = read_any(data, name)
    except MedmaskError as exc:
        error: Exception = exc
    else:
        assert_valid(masks)
        return "valid"
    assert isinstance(error, ValueError)
    assert str(error).startswith(f"{name}: "), str(error)
    return "error"


def same(a: dict[str, LegacyMask], b: dict[str, LegacyMask]) -> bool:
    return list(a) == list(b) and all(
        a[k].array.dtype == b[k].array.dtype
        and np.array_equal(a[k].array, b[k].array)
        and list(a[k].mapping.items()) == list(b[k].mapping.items())
        and a[k].space == b[k].space
        for k in a
    )


def stored_space(shape_zyx: tuple[int, int, int], **fields: Any) -> dict[str, Any]:
    """A space JSON object as 0.1 stored it: (x, y, z) order (default: identity in zyx)."""
    obj: dict[str, Any] = {
        "shape": list(shape_zyx[::-1]),
        "origin": [1.0, -2.0, 3.5],
        "spacing": [0.75, 0.75, 2.0],
        "x_orientation": [0, 0, 1],
        "y_orientation": [0, 1, 0],
        "z_orientation": [1, 0, 0],
    }
    obj.update(fields)
    return obj


def frame_of(raw: bytes, *, content_size: bool = True) -> bytes:
    out: bytes = zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(raw)
    return out


def raw_frame(declared: int, content: bytes) -> bytes:
    """A hand-made zstd frame: 8-byte declared content size, one raw block of ``content``."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", declared)
    block = struct.pack("<I", (len(content) << 3) | 1)[:3]  # last block, raw
    return header + block + content


def blob(
    array: np.ndarray | None = None,
    *,
    flag: int | None = None,
    dtype: str | None = None,
    shape: tuple[int, ...] | None = None,
    frame: bytes | None = None,
    shape_format: str = "<q",
) -> bytes:
    """A 0.1 data blob; by default the one 0.1.3 writes for ``array``."""
    if array is not None:
        is_bool = array.dtype == np.bool_
        flag = int(is_bool) if flag is None else flag
        dtype = str(array.dtype) if dtype is None else dtype
        shape = array.shape if shape is None else shape
        if frame is None:
            raw = np.packbits(array).tobytes() if is_bool else array.tobytes()
            frame = frame_of(raw)
    assert flag is not None
    assert dtype is not None
    assert shape is not None
    assert frame is not None
    d = dtype.encode()
    dims = b"".join(struct.pack(shape_format, s) for s in shape)
    return bytes([flag, len(d)]) + d + bytes([len(shape)]) + dims + frame


def as_json(obj: Any) -> bytes:
    return obj if isinstance(obj, bytes) else json.dumps(obj).encode()


def build_msk(
    space: Any, mapping: Any, data: bytes, *, version: tuple[int, int] = (1, 0), codec: int = 0
) -> bytes:
    """A 0.1 ``.msk``: 62-byte header, space JSON, mapping JSON, data blob."""
    s, m = as_json(space), as_json(mapping)
    off = MSK_HEADER.size
    sections = (off, len(s), off + len(s), len(m), off + len(s) + len(m), len(data))
    header = MSK_HEADER.pack(b"MSK1", *version, codec, *sections)
    return header + s + m + data


def build_mska(
    space: Any,
    members: list[tuple[str, Any, bytes]],
    *,
    capacity: int = 4000,
    edit: Callable[[list[dict[str, Any]]], Any] | None = None,
    no_space: bool = False,
) -> bytes:
    """A 0.1 ``.mska``; ``edit`` may replace the index entries (offsets already filled in)."""
    s = b"" if no_space else as_json(space)
    index_off = MSKA_HEADER.size + len(s)
    data_off = index_off + capacity
    entries, blobs, pos = [], [], data_off
    for member, mapping, data in members:
        entries.append({"name": member, "offset": pos, "length": len(data), "mapping": mapping})
        blobs.append(data)
        pos += len(data)
    index = as_json(edit(entries) if edit else entries)
    index = index + b"\0" * (capacity - len(index))
    space_off = 0 if no_space else MSKA_HEADER.size
    fields = (space_off, len(s), index_off, capacity, data_off, pos - data_off, len(members))
    header = MSKA_HEADER.pack(b"MSKA", 1, 0, 0, *fields)
    return header + s + index + b"".join(blobs)


SHAPE = (3, 4, 5)
LABELS = (np.arange(60).reshape(SHAPE) % 4).astype(np.uint8)


def small_msk(**overrides: Any) -> bytes:
    """A valid crafted ``.msk`` of ``LABELS``; keyword arguments replace its parts."""
    parts: dict[str, Any] = {
        "space": stored_space(SHAPE),
        "mapping": {"a": 1, "b": 2, "c": 3},
        "data": blob(LABELS),
    }
    parts.update(overrides)
    return build_msk(parts["space"], parts["mapping"], parts["data"])


def small_mska(**kwargs: Any) -> bytes:
    members = [
        ("labels", {"a": 1, "b": 2, "c": 3}, blob(LABELS)),
        ("binary", {"fg": 1}, blob(LABELS > 1)),
    ]
    return build_mska(stored_space(SHAPE), members, **kwargs)


# --- the fixtures written by 0.1.3 ---------------------------------------------------------


def test_fixture_set_is_complete() -> None:
    assert {p.stem for p in LEGACY.glob("*.msk")} == set(MSK_NAMES)
    assert {p.stem for p in LEGACY.glob("*.mska")} == set(MSKA_NAMES + BROKEN_MSKA)
    for stem in MSK_NAMES:
        assert (LEGACY / f"{stem}.npy").is_file()
    for stem in MSKA_NAMES:
        assert (LEGACY / f"{stem}.npz").is_file()
    for stem in MSK_NAMES + MSKA_NAMES + BROKEN_MSKA:
        assert meta(stem)["writer"] == "medmask 0.1.3"
    total = sum(p.stat().st_size for p in LEGACY.iterdir())
    assert total < 100_000


def assert_matches(mask: LegacyMask, expected: np.ndarray, info: dict[str, Any]) -> None:
    """``mask`` holds what 0.1.3 loaded: ``expected`` (in 0.1.3's dtype) and ``info``."""
    assert str(expected.dtype) == info["loaded_dtype"]
    assert mask.array.dtype == np.dtype(info["dtype"])
    assert mask.array.dtype in STORAGE
    assert mask.array.dtype.isnative
    assert mask.array.shape == expected.shape == tuple(info["shape"])
    assert mask.array.flags.c_contiguous
    np.testing.assert_array_equal(mask.array, expected, strict=False)
    assert np.array_equal(mask.array.astype(np.float64), expected.astype(np.float64))
    assert list(mask.mapping.items()) == [tuple(pair) for pair in info["mapping"]]


def assert_space(space: Space, expected: dict[str, Any]) -> None:
    for key in SPACE_KEYS:
        assert tuple(getattr(space, key)) == tuple(expected[key]), key


@pytest.mark.parametrize("stem", MSK_NAMES)
def test_msk_fixture_reads_as_0_1_3_loaded_it(stem: str) -> None:
    info = meta(stem)
    mask = read_legacy_msk(fixture(f"{stem}.msk"), name=f"{stem}.msk")
    assert_matches(mask, np.load(LEGACY / f"{stem}.npy", allow_pickle=False), info)
    assert_space(mask.space, info["space"])
    assert tuple(mask.space.shape) == mask.array.shape


@pytest.mark.parametrize("stem", MSKA_NAMES)
def test_mska_fixture_reads_as_0_1_3_loaded_it(stem: str) -> None:
    info = meta(stem)
    masks = read_legacy_mska(fixture(f"{stem}.mska"), name=f"{stem}.mska")
    assert list(masks) == info["order"]
    with np.load(LEGACY / f"{stem}.npz", allow_pickle=False) as arrays:
        assert sorted(arrays.files) == sorted(info["order"])
        for member, mask in masks.items():
            assert_matches(mask, arrays[member], info["members"][member])
            assert_space(mask.space, info["space"])


def test_archive_mixed_members_differ() -> None:
    masks = read_legacy_mska(fixture("archive_mixed.mska"), name="archive_mixed.mska")
    dtypes = {m: mask.array.dtype.name for m, mask in masks.items()}
    assert dtypes == {"lungs": "uint8", "lesion": "bool", "vessels": "uint16", "empty": "bool"}
    assert not masks["empty"].array.any()
    assert masks["vessels"].mapping == {"artery": 1, "vein": 2, "portal_vein": 1000}


def test_archive_corrupted_by_0_1_3_is_refused() -> None:
    assert "JSONDecodeError" in meta("archive_index_overflow")["legacy_error"]
    exc = expect_error(
        fixture("archive_index_overflow.mska"), "archive_index_overflow.mska", FormatError
    )
    assert "0.1.3" in str(exc)
    assert "4000-byte capacity" in str(exc)


def test_fixtures_exercise_the_documented_layout() -> None:
    # .msk: 62-byte header, sections back to back, space stored in (x, y, z) order
    data = fixture("binary_bool.msk")
    magic, major, minor, codec, *f = MSK_HEADER.unpack_from(data)
    assert (magic, major, minor, codec) == (b"MSK1", 1, 0, 0)
    assert f[0] == 62
    assert f[2] == f[0] + f[1]
    assert f[4] == f[2] + f[3]
    assert f[4] + f[5] == len(data)
    assert json.loads(data[f[0] : f[0] + f[1]])["shape"] == [11, 9, 7]
    payload = data[f[4] :]
    assert payload[:7] == b"\x01\x04bool\x03"  # bit-packed flag, dtype, ndim
    assert struct.unpack_from("<3q", payload, 7) == (7, 9, 11)
    assert math.prod((7, 9, 11)) % 8 != 0  # the last packed byte is padded
    params = zstandard.get_frame_parameters(payload[31:])
    assert params.content_size == -(-693 // 8)
    assert not params.has_checksum
    dtypes = {}
    for stem in MSK_NAMES:
        data = fixture(f"{stem}.msk")
        off = MSK_HEADER.unpack_from(data)[8]
        dtypes[stem] = data[off + 2 : off + 2 + data[off + 1]].decode()
    assert dtypes["labels_big_endian_uint16"] == ">u2"
    assert dtypes["labels_int64"] == "int64"
    assert dtypes["labels_float64"] == "float64"
    # .mska: 90-byte header; the relocated archive's index grew from 4000 to 8000 bytes
    for stem, capacity, count in (("archive_mixed", 4000, 4), ("archive_relocated", 8000, 24)):
        data = fixture(f"{stem}.mska")
        magic, major, minor, codec, *f = MSKA_HEADER.unpack_from(data)
        assert (magic, major, minor, codec, f[0]) == (b"MSKA", 1, 0, 0, 90)
        assert (f[3], f[6]) == (capacity, count)
        index = json.loads(data[f[2] : f[2] + f[3]].rstrip(b"\0"))
        assert len(index) == count
        assert min(e["offset"] for e in index) == f[4] == f[2] + capacity
        assert f[4] + f[5] == len(data)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"MSK1\x01\x00\x00", "msk"),
        (b"MSKA\x01\x00\x00", "mska"),
        (b"MSK1", "msk"),
        (b"MSKA", "mska"),
        (b"\x89MSK\r\n\x1a\n", None),
        (b"\x89MSA\r\n\x1a\n", None),
        (b"MSK", None),
        (b"", None),
        (b"msk1", None),
        (b"\x1f\x8b\x08\x00", None),
    ],
)
def test_legacy_kind(head: bytes, kind: str | None) -> None:
    assert legacy_kind(head) == kind


def test_legacy_kind_of_every_fixture() -> None:
    assert (LEGACY_MSK_MAGIC, LEGACY_MSKA_MAGIC) == (b"MSK1", b"MSKA")
    for file in ALL_FILES:
        assert legacy_kind(fixture(file)[:16]) == file.rsplit(".", 1)[1]
    current = io.BytesIO()
    medmask.save_mask(medmask.SegmentationMask(LABELS, {"a": 1, "b": 2, "c": 3}), current)
    assert legacy_kind(current.getvalue()) is None


def test_accepts_bytearray_and_memoryview() -> None:
    data = fixture("labels_uint8.msk")
    a = read_legacy_msk(bytearray(data), name="x.msk")
    b = read_legacy_msk(memoryview(data), name="x.msk")
    assert same({"": a}, {"": b})
    data = fixture("archive_mixed.mska")
    assert same(
        read_legacy_mska(memoryview(data), name="x.mska"), read_legacy_mska(data, name="x.mska")
    )


# --- wrong files, truncation and header damage -----------------------------------------------


def test_wrong_kind_of_file() -> None:
    current = io.BytesIO()
    medmask.save_mask(medmask.SegmentationMask(LABELS, {"a": 1, "b": 2, "c": 3}), current)
    exc = expect_error(current.getvalue(), "new.msk", FormatError)
    assert "current format" in str(exc)
    expect_error(fixture("binary_bool.msk"), "swapped.mska", FormatError)
    expect_error(fixture("archive_mixed.mska"), "swapped.msk", FormatError)
    expect_error(b"PK\x03\x04" + b"\0" * 100, "zip.msk", FormatError)
    for name in ("empty.msk", "empty.mska"):
        expect_error(b"", name, TruncatedFileError)
    expect_error(b"MSK", "short.msk", TruncatedFileError)
    expect_error(b"MSK1\x01\x00\x00", "short.msk", TruncatedFileError)
    expect_error(b"MSKA" + b"\0" * 80, "short.mska", TruncatedFileError)


@pytest.mark.parametrize("file", ALL_FILES)
def test_every_truncation_raises(file: str) -> None:
    data = fixture(file)
    n = len(data)
    cuts = set(range(min(n, 400))) | set(range(400, n, 7)) | set(range(max(0, n - 64), n))
    for cut in sorted(cuts):
        expect_error(data[:cut], file)


@pytest.mark.parametrize("file", [f"{n}.msk" for n in MSK_NAMES])
def test_msk_header_field_flips_raise(file: str) -> None:
    data = fixture(file)
    for pos in range(55):  # magic, version, codec and the six offsets/lengths
        for xor in (0x01, 0x10, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= xor
            expect_error(bytes(bad), file)


@pytest.mark.parametrize("file", [f"{n}.mska" for n in MSKA_NAMES])
def test_mska_header_flips_raise_or_read_the_same(file: str) -> None:
    data = fixture(file)
    good = read_any(data, file)
    for pos in range(MSKA_HEADER.size):
        for xor in (0x01, 0x10, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= xor
            if pos < 23:  # magic, version, codec, space offset and length
                expect_error(bytes(bad), file)
            # a smaller index capacity that still holds the JSON is harmless, as in 0.1.3
            elif outcome(bytes(bad), file) == "valid":
                assert same(read_any(bytes(bad), file), good)


def test_ignored_header_bytes() -> None:
    """0.1.3 never reads the reserved bytes, nor the archive's data offset/length and count."""
    data = fixture("labels_uint16.msk")
    good = read_any(data, "x.msk")
    for pos in range(55, 62):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        assert same(read_any(bytes(bad), "x.msk"), good)
    data = fixture("archive_mixed.mska")
    good = read_any(data, "x.mska")
    for pos in range(39, 90):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        assert same(read_any(bytes(bad), "x.mska"), good)


def test_version_and_codec_are_checked() -> None:
    for version in ((1, 1), (2, 0), (0, 1)):
        data = build_msk(stored_space(SHAPE), {"a": 1}, blob(LABELS), version=version)
        expect_error(data, "v.msk", UnsupportedVersionError)
    data = build_msk(stored_space(SHAPE), {"a": 1}, blob(LABELS), codec=1)
    exc = expect_error(data, "c.msk", UnsupportedVersionError)
    assert "codec" in str(exc)


def test_sections_must_lie_after_the_header_and_in_the_file() -> None:
    data = bytearray(small_msk())
    struct.pack_into("<Q", data, 7, 10)  # space offset inside the header
    expect_error(bytes(data), "h.msk", FormatError)
    data = bytearray(small_msk())
    struct.pack_into("<Q", data, 47, 2**64 - 1)  # data length
    expect_error(bytes(data), "t.msk", TruncatedFileError)
    data = bytearray(small_msk())
    struct.pack_into("<Q", data, 15, 2**40)  # space length beyond the JSON limit
    expect_error(bytes(data), "j.msk", FormatError)


def test_crafted_files_read() -> None:
    mask = read_legacy_msk(small_msk(), name="ok.msk")
    assert mask.array.dtype == np.uint8
    assert np.array_equal(mask.array, LABELS)
    assert mask.space.shape == SHAPE
    assert mask.space.origin == (1.0, -2.0, 3.5)
    assert mask.space.spacing == (2.0, 0.75, 0.75)
    masks = read_legacy_mska(small_mska(), name="ok.mska")
    assert list(masks) == ["labels", "binary"]
    assert np.array_equal(masks["binary"].array, LABELS > 1)
    # trailing bytes after the frame are ignored, as 0.1.3's zstd call ignores them
    mask = read_legacy_msk(small_msk(data=blob(LABELS) + b"junk"), name="ok.msk")
    assert np.array_equal(mask.array, LABELS)


# --- zstd frames and limits ------------------------------------------------------------------


def test_frame_claiming_a_huge_content_size() -> None:
    data = small_msk(data=blob(LABELS, frame=raw_frame(2**40, b"\0" * 16)))
    exc = expect_error(data, "huge.msk", FormatError)
    assert "declares" in str(exc)
    # the claim is consistent with a huge shape: refused by the limits before decompressing
    big = (2**20, 2**20, 2**20)
    huge = blob(shape=big, flag=0, dtype="uint8", frame=raw_frame(math.prod(big), b"\0"))
    data = small_msk(space=stored_space(big), data=huge)
    expect_error(data, "huge.msk", AllocationLimitError)
    # within raised limits, the voxels-per-compressed-byte bound still refuses it
    shape = (2**10, 2**10, 2**10)
    huge = blob(shape=shape, flag=0, dtype="uint8", frame=raw_frame(2**30, b"\0"))
    data = small_msk(space=stored_space(shape), data=huge)
    expect_error(data, "huge.msk", AllocationLimitError, max_voxels=2**40, max_bytes=2**40)


@pytest.mark.parametrize(
    "frame",
    [
        frame_of(LABELS.tobytes(), content_size=False),  # 0.1 always declared the size
        raw_frame(60, b"\1" * 59),  # holds less than declared
        raw_frame(60, b"\1" * 61),  # holds more than declared
        frame_of(LABELS.tobytes())[:-3],  # cut
        b"\x28\xb5\x2f\xfd",  # a bare magic
        b"not a zstd frame at all",
        b"\x50\x2a\x4d\x18\x00\x00\x00\x00",  # a skippable frame
    ],
)
def test_bad_frames(frame: bytes) -> None:
    expect_error(small_msk(data=blob(LABELS, frame=frame)), "frame.msk", FormatError)


def test_frame_of_declared_size_with_garbage_blocks() -> None:
    good = frame_of(LABELS.tobytes())
    for pos in range(6, len(good)):
        bad = bytearray(good)
        bad[pos] ^= 0x5A
        result = outcome(small_msk(data=blob(LABELS, frame=bytes(bad))), "g.msk")
        assert result in ("error", "valid")


def test_limits() -> None:
    data = fixture("labels_uint16.msk")  # 10 x 12 x 14 uint16 = 1680 voxels, 3360 bytes
    read_legacy_msk(data, name="l.msk", max_voxels=1680, max_bytes=3360)
    exc = expect_error(data, "l.msk", AllocationLimitError, max_voxels=1679)
    assert "max_voxels" in str(exc)
    exc = expect_error(data, "l.msk", AllocationLimitError, max_bytes=3359)
    assert "max_bytes" in str(exc)
    expect_error(fixture("archive_mixed.mska"), "a.mska", AllocationLimitError, max_voxels=100)


def test_limits_from_the_settings() -> None:
    with medmask.config.set(max_voxels=1000):
        expect_error(fixture("labels_uint16.msk"), "env.msk", AllocationLimitError)
    with medmask.config.set(max_bytes=1000):
        expect_error(fixture("archive_mixed.mska"), "env.mska", AllocationLimitError)


def test_oversized_shape_without_space() -> None:
    shape = (2**21, 2**21, 2**21)
    huge = blob(shape=shape, flag=1, dtype="bool", frame=raw_frame(2**60, b"\0"))
    data = build_mska(None, [("m", {"a": 1}, huge)], no_space=True)
    expect_error(data, "big.mska", AllocationLimitError)


# --- JSON sections ---------------------------------------------------------------------------

GARBAGE_JSON = [
    b"",
    b"{not json",
    b"\xff\xfe{}",
    b"[]",
    b"null",
    b'"a string"',
    b"{} trailing",
    b'{"shape": [5, 4, 3]',
    b"[" * 100_000 + b"]" * 100_000,  # deeply nested
    b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}",
    b'{"a": ' + b"1" * 5000 + b"}",  # a 5000-digit number
    b'{"a": NaN}',
]


@pytest.mark.parametrize("text", GARBAGE_JSON, ids=range(len(GARBAGE_JSON)))
def test_garbage_space_json(text: bytes) -> None:
    expect_error(small_msk(space=text), "space.msk", FormatError)
    expect_error(build_mska(text, [("m", {"a": 1}, blob(LABELS))]), "space.mska", FormatError)


@pytest.mark.parametrize("text", GARBAGE_JSON, ids=range(len(GARBAGE_JSON)))
def test_garbage_mapping_json(text: bytes) -> None:
    expect_error(small_msk(mapping=text), "mapping.msk", FormatError)


@pytest.mark.parametrize("text", [t for t in GARBAGE_JSON if t and t != b"[]"])
def test_garbage_index_json(text: bytes) -> None:
    data = small_mska(edit=lambda _: text, capacity=max(4000, len(text)))
    expect_error(data, "index.mska", FormatError)


@pytest.mark.parametrize(
    "mapping",
    [
        {"a": -1},
        {"a": 1.5},
        {"a": 1.0},
        {"a": True},
        {"a": "1"},
        {"a": None},
        {"a": [1]},
        {"": 1},
        {"  ": 1},
        {"a": 1, "b": 1},
        {"a": 2**32},
        {"a": 2**70},
    ],
)
def test_invalid_mappings(mapping: dict[str, Any]) -> None:
    expect_error(small_msk(mapping=mapping), "mapping.msk", FormatError)
    expect_error(build_mska(stored_space(SHAPE), [("m", mapping, blob(LABELS))]), "m.mska")


def test_mapping_keeps_file_order_and_last_duplicate_key() -> None:
    mask = read_legacy_msk(small_msk(mapping=b'{"z": 3, "a": 1, "z": 2}'), name="d.msk")
    assert list(mask.mapping.items()) == [("z", 2), ("a", 1)]  # as json.loads in 0.1.3
    mask = read_legacy_msk(small_msk(mapping={"background": 0}), name="d.msk")
    assert mask.mapping == {"background": 0}


@pytest.mark.parametrize(
    "fields",
    [
        {"shape": [5, 4]},
        {"shape": [5, 4, 0]},
        {"shape": [5, 4, -3]},
        {"shape": [5.0, 4, 3]},
        {"shape": "5,4,3"},
        {"spacing": [0.0, 1.0, 1.0]},
        {"spacing": [-1.0, 1.0, 1.0]},
        {"origin": [1.0, 2.0]},
        {"origin": [1e400, 0, 0]},
        {"origin": ["a", 0, 0]},
        {"x_orientation": [1, 1, 0]},
        {"x_orientation": [0, 1, 0]},  # not orthogonal to y
        {"z_orientation": [0, 0, 0]},
        {"x_orientation": [1e308, 1e308, 0]},  # overflows in spacetransformer's checks
        {"coordinate_system": "LPS"},  # 0.1's Space had no such field
        {"unknown": 1},
    ],
)
@pytest.mark.filterwarnings("error")
def test_invalid_spaces(fields: dict[str, Any]) -> None:
    space = stored_space(SHAPE, **fields)
    expect_error(small_msk(space=space), "space.msk", FormatError)


def test_space_without_optional_fields_uses_0_1_defaults() -> None:
    mask = read_legacy_msk(small_msk(space={"shape": [5, 4, 3]}), name="s.msk")
    assert mask.space == Space(shape=(5, 4, 3)).reverse_axis_order()
    expect_error(small_msk(space={"origin": [0, 0, 0]}), "s.msk", FormatError)


def test_space_axis_order() -> None:
    """The stored (x, y, z) space is reversed: shape/spacing reversed, x and z swapped."""
    space = stored_space(
        SHAPE,
        spacing=[0.5, 0.6, 2.5],
        x_orientation=[0.6, 0.8, 0.0],
        y_orientation=[-0.8, 0.6, 0.0],
        z_orientation=[0.0, 0.0, 1.0],
    )
    mask = read_legacy_msk(small_msk(space=space), name="axes.msk")
    assert mask.space.shape == SHAPE == mask.array.shape
    assert mask.space.spacing == (2.5, 0.6, 0.5)
    assert mask.space.x_orientation == (0.0, 0.0, 1.0)
    assert mask.space.y_orientation == (-0.8, 0.6, 0.0)
    assert mask.space.z_orientation == (0.6, 0.8, 0.0)
    assert mask.space.origin == (1.0, -2.0, 3.5)


# --- data blobs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x05uint",
        b"\x00\x05uint8",
        b"\x00\x05uint8\x03" + b"\x03" + b"\0" * 7,
        blob(LABELS)[:20],
        blob(LABELS, dtype="object"),
        blob(LABELS, dtype="complex128"),
        blob(LABELS, dtype="<U4"),
        blob(LABELS, dtype="float128"),
        blob(LABELS, dtype="V8"),
        blob(LABELS, dtype="\xff\xfe"),
        blob(LABELS, dtype=""),
        blob(LABELS, flag=2),
        blob(LABELS, flag=1),  # bit-packed uint8
        blob(LABELS > 0, flag=0),  # raw bool
        blob(LABELS, shape=(3, 20)),
        blob(LABELS, shape=(3, 4, 5, 1)),
        blob(LABELS, shape=(5, 4, 3)),
        blob(LABELS, shape=(3, 4, -5)),
        blob(LABELS, frame=frame_of(LABELS.astype(np.uint16).tobytes())),  # frame too big
        blob(LABELS.astype(np.uint16), dtype="uint8"),
    ],
    ids=range(22),
)
def test_invalid_blobs(data: bytes) -> None:
    expect_error(small_msk(data=data), "blob.msk")
    expect_error(build_mska(stored_space(SHAPE), [("m", {"a": 1}, data)]), "blob.mska")


def test_zero_or_negative_shape_without_space() -> None:
    for shape in ((3, 0, 5), (3, -4, 5), (-(2**63), 1, 1)):
        data = build_mska(None, [("m", {}, blob(LABELS, shape=shape))], no_space=True)
        expect_error(data, "zero.mska", FormatError)


def test_big_endian_writer_is_reported() -> None:
    data = small_msk(data=blob(LABELS, shape_format=">q"))
    exc = expect_error(data, "be.msk", FormatError)
    assert "big-endian" in str(exc)


@pytest.mark.parametrize(
    ("array", "mapping", "dtype"),
    [
        (LABELS.astype(np.int64), {"a": 1}, np.uint8),
        (LABELS.astype(">i4"), {"a": 1}, np.uint8),
        (LABELS.astype(np.int16), {"a": 1, "big": 300}, np.uint16),  # the mapping counts
        (LABELS.astype(np.int32) * 70000, {}, np.uint32),
        (LABELS.astype(np.uint64) * 1000, {}, np.uint16),
        (LABELS.astype(np.int8), {}, np.uint8),
        (LABELS.astype(np.float16) * 500, {}, np.uint16),
        (LABELS.astype(np.float32), {"a": 3}, np.uint8),
        (LABELS.astype(">f8"), {"a": 3}, np.uint8),
        (LABELS.astype(">u4"), {}, np.uint32),  # storage dtype: only the byte order changes
        (LABELS.astype(">u2"), {}, np.uint16),
        (np.zeros(SHAPE, np.int64), {}, np.uint8),
    ],
)
def test_other_dtypes_are_converted(array: np.ndarray, mapping: dict[str, int], dtype: Any) -> None:
    mask = read_legacy_msk(small_msk(data=blob(array), mapping=mapping), name="c.msk")
    assert mask.array.dtype == np.dtype(dtype)
    assert mask.array.flags.c_contiguous
    assert mask.array.flags.writeable
    assert np.array_equal(mask.array.astype(np.float64), array.astype(np.float64))


@pytest.mark.parametrize(
    "array",
    [
        LABELS.astype(np.int64) - 1,
        LABELS.astype(np.float64) + 0.5,
        np.where(LABELS > 2, np.nan, LABELS).astype(np.float32),
        np.where(LABELS > 2, np.inf, LABELS),
        np.where(LABELS > 2, -np.inf, LABELS),
        LABELS.astype(np.uint64) * 2**40,
        LABELS.astype(np.int64) * 2**33,
        LABELS.astype(np.float64) * 1e300,
    ],
    ids=range(8),
)
def test_values_outside_label_range_are_refused(array: np.ndarray) -> None:
    exc = expect_error(small_msk(data=blob(array), mapping={}), "v.msk", FormatError)
    assert str(array.dtype) in str(exc)


# --- archive index ---------------------------------------------------------------------------


def _set(key: str, value: Any, at: int = 0) -> Callable[[list[dict[str, Any]]], Any]:
    def edit(entries: list[dict[str, Any]]) -> Any:
        entries[at][key] = value
        return entries

    return edit


@pytest.mark.parametrize(
    ("edit", "kind"),
    [
        (lambda e: {"entries": e}, FormatError),
        (lambda e: [*e, 5], FormatError),
        (lambda e: [*e, e[0]], FormatError),  # duplicate name
        (lambda e: [{k: v for k, v in e[0].items() if k != "name"}, e[1]], FormatError),
        (lambda e: [{k: v for k, v in e[0].items() if k != "mapping"}, e[1]], FormatError),
        (_set("name", 7), FormatError),
        (_set("offset", -1), FormatError),
        (_set("offset", True), FormatError),
        (_set("offset", 4200.0), FormatError),
        (_set("offset", "4200"), FormatError),
        (_set("length", None), FormatError),
        (_set("offset", 2**64), TruncatedFileError),
        (_set("length", 10**6), TruncatedFileError),
        (_set("offset", 0), FormatError),  # the header
        (_set("offset", 100), FormatError),  # the space
        (_set("offset", 1000), FormatError),  # the index
        (_set("length", 60, at=0), FormatError),  # overlaps the next member
        (lambda e: [e[0], {**e[1], "offset": e[0]["offset"]}], FormatError),  # shared data
        (_set("mapping", [["a", 1]]), FormatError),
        (_set("mapping", {"a": -1}), FormatError),
    ],
    ids=range(20),
)
def test_invalid_index_entries(
    edit: Callable[[list[dict[str, Any]]], Any], kind: type[Exception]
) -> None:
    expect_error(small_mska(edit=edit), "index.mska", kind)


def test_index_edge_cases() -> None:
    assert read_legacy_mska(small_mska(edit=lambda _: []), name="e.mska") == {}
    assert read_legacy_mska(small_mska(edit=lambda _: b""), name="e.mska") == {}
    data = bytearray(small_mska())
    struct.pack_into("<Q", data, 31, 0)  # index length 0: no members, as in 0.1.3
    assert read_legacy_mska(bytes(data), name="e.mska") == {}
    extra = _set("extra", {"ignored": True})  # 0.1.3 reads only the four keys
    masks = read_legacy_mska(small_mska(edit=extra), name="x.mska")
    assert list(masks) == ["labels", "binary"]


def test_archive_without_space_gets_0_1_default_spaces() -> None:
    masks = read_legacy_mska(small_mska(no_space=True), name="nospace.mska")
    for mask in masks.values():
        assert mask.space == Space(shape=SHAPE)


def test_member_errors_name_the_member() -> None:
    members = [("good", {"a": 1}, blob(LABELS)), ("bad one", {"a": 1}, blob(LABELS)[:-4])]
    exc = expect_error(build_mska(stored_space(SHAPE), members), "m.mska", FormatError)
    assert "member 'bad one'" in str(exc)


# --- seeded random mutations -----------------------------------------------------------------

VALID_FILES = [f"{n}.msk" for n in MSK_NAMES] + [f"{n}.mska" for n in MSKA_NAMES]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip, overwrite, cut, insert or append bytes; mostly in the header and JSON."""
    buf = bytearray(data)
    hot = min(len(buf), 400)
    kind = int(rng.integers(6))
    pos = int(rng.integers(hot if rng.random() < 0.6 else len(buf)))
    if kind == 0:
        for _ in range(int(rng.integers(1, 5))):
            buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        n = int(rng.integers(1, 9))
        buf[pos : pos + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    elif kind == 2:
        buf[pos] = int(rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    elif kind == 3:
        del buf[pos : pos + int(rng.integers(1, 16))]
    elif kind == 4:
        buf[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    else:
        buf += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return bytes(buf)


def test_random_byte_mutations() -> None:
    rng = np.random.default_rng(20240601)
    originals = {file: fixture(file) for file in VALID_FILES}
    counts = {"error": 0, "valid": 0}
    for _ in range(600):
        file = VALID_FILES[int(rng.integers(len(VALID_FILES)))]
        counts[outcome(mutate(originals[file], rng), file)] += 1
    assert counts["error"] > 100, counts
    assert counts["valid"] > 10, counts


JSON_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    1,
    2**31,
    2**64,
    1.5,
    1e308,
    "",
    "x",
    [],
    {},
    [0, 0, 0],
    [1, 1, 1],
    [2**40, 1, 1],
    [1, 0, 0],
    {"a": 1},
]


def _mutate_json(obj: Any, rng: np.random.Generator) -> Any:
    """Replace one value somewhere in ``obj`` (or one element of a list) by a random one."""
    value = JSON_VALUES[int(rng.integers(len(JSON_VALUES)))]
    if isinstance(obj, dict) and obj and rng.random() < 0.8:
        key = list(obj)[int(rng.integers(len(obj)))]
        return {**obj, key: _mutate_json(obj[key], rng)}
    if isinstance(obj, list) and obj and rng.random() < 0.8:
        i = int(rng.integers(len(obj)))
        return [*obj[:i], _mutate_json(obj[i], rng), *obj[i + 1 :]]
    return value


def test_random_json_mutations() -> None:
    """Well-formed files whose space, mapping or index JSON holds random values."""
    rng = np.random.default_rng(7)
    counts = {"error": 0, "valid": 0}
    for i in range(300):
        if i % 2:
            file = f"{MSK_NAMES[int(rng.integers(len(MSK_NAMES)))]}.msk"
            data = fixture(file)
            f = MSK_HEADER.unpack_from(data)[4:]
            space = json.loads(data[f[0] : f[0] + f[1]])
            mapping = json.loads(data[f[2] : f[2] + f[3]])
            if rng.random() < 0.5:
                space = _mutate_json(space, rng)
            else:
                mapping = _mutate_json(mapping, rng)
            mutated = build_msk(space, mapping, data[f[4] : f[4] + f[5]])
        else:
            file = "archive_mixed.mska"
            data = fixture(file)
            f = MSKA_HEADER.unpack_from(data)[4:]
            space = json.loads(data[f[0] : f[0] + f[1]])
            index = json.loads(data[f[2] : f[2] + f[3]].rstrip(b"\0"))
            if rng.random() < 0.3:
                space = _mutate_json(space, rng)
            else:
                index = _mutate_json(index, rng)
            text = as_json(index)
            if len(as_json(space)) > f[1] or len(text) > f[3]:
                space = json.loads(data[f[0] : f[0] + f[1]])  # keep the offsets valid
            mutated = data[: f[0]] + as_json(space).ljust(f[1]) + text.ljust(f[3], b"\0")
            mutated += data[f[2] + f[3] :]
        counts[outcome(mutated, file)] += 1
    assert counts["error"] > 50, counts
    assert counts["valid"] > 10, counts


# --- bounded reading (issue 17, item 5) ------------------------------------------------------

BIG = (16, 512, 512)  # 4 MiB of uint8 per member, a 4-block RLE frame of 133 bytes


def many_members(count: int, shape: tuple[int, int, int] = BIG) -> bytes:
    """A 0.1 archive of ``count`` members that decompress to ``shape`` each (value i + 1)."""
    members = [
        (
            f"m{i}",
            {f"organ{i}": i + 1},
            blob(shape=shape, flag=0, dtype="uint8", frame=rle_zstd_frame(math.prod(shape), i + 1)),
        )
        for i in range(count)
    ]
    return build_mska(stored_space(shape), members)


def test_the_directory_decodes_nothing_and_members_decode_one_at_a_time() -> None:
    data = many_members(12)
    assert len(data) < 8000
    directory, peak = traced_peak(lambda: read_legacy_mska_directory(data, name="many.mska"))
    assert peak < MB, peak
    assert list(directory.members) == [f"m{i}" for i in range(12)]
    member = directory.members["m7"]
    assert (member.shape, member.dtype, member.mapping) == (BIG, np.dtype(np.uint8), {"organ7": 8})
    assert directory.member_space("m7").shape == BIG
    mask, peak = traced_peak(lambda: read_legacy_member(data, directory, "m7", name="many.mska"))
    assert isinstance(mask, LegacyMask)
    assert mask.array.shape == BIG
    assert int(mask.array.min()) == int(mask.array.max()) == 8
    assert peak < 2 * math.prod(BIG), peak  # this member only


def test_the_directory_checks_every_member_against_the_limits() -> None:
    data = many_members(3)
    exc = expect_error(data, "many.mska", AllocationLimitError, max_bytes=math.prod(BIG) - 1)
    assert str(exc).startswith("many.mska: member 'm0': "), exc  # the first member named
    with pytest.raises(AllocationLimitError, match=r"^many\.mska: "):
        read_legacy_mska_directory(data, name="many.mska", max_voxels=100)


def test_frame_too_short_for_its_declared_size_is_refused_before_decompressing() -> None:
    shape = (64, 512, 512)  # 16 MiB from a 33-byte frame: zstd cannot emit that much
    frame = raw_frame(math.prod(shape), b"\0" * 16)
    data = small_msk(
        space=stored_space(shape), data=blob(shape=shape, flag=0, dtype="uint8", frame=frame)
    )
    exc, peak = traced_peak(lambda: read_legacy_msk(data, name="short.msk"))
    assert isinstance(exc, FormatError), exc
    assert str(exc).startswith("short.msk: "), exc
    assert "cannot hold" in str(exc)
    assert peak < MB, peak
    archive = build_mska(
        stored_space(shape),
        [("m", {"a": 1}, blob(shape=shape, flag=0, dtype="uint8", frame=frame))],
    )
    exc, peak = traced_peak(lambda: read_legacy_mska_directory(archive, name="short.mska"))
    assert isinstance(exc, FormatError), exc
    assert "short.mska: member 'm'" in str(exc)
    assert peak < MB, peak


def test_what_a_frame_can_hold_is_exact() -> None:
    frame = raw_frame(0, b"\0" * 17)  # 33 bytes: 8 blocks of at most 128 KiB each
    assert len(frame) == 33
    for size, fits in ((8 << 17, True), ((8 << 17) + 1, False)):
        bad = frame[:5] + struct.pack("<Q", size) + frame[13:]
        data = small_msk(
            space=stored_space((1, 1, size)),
            data=blob(shape=(1, 1, size), flag=0, dtype="uint8", frame=bad),
        )
        exc = expect_error(data, "edge.msk", FormatError)
        assert ("cannot hold" in str(exc)) != fits, exc


def test_opening_a_0_1_archive_decodes_no_member(tmp_path: Path) -> None:
    path = tmp_path / "many.mska"
    path.write_bytes(many_members(12))

    def open_and_list() -> Any:
        with medmask.MaskArchive(path) as archive:
            return archive.is_legacy, len(archive), archive.all_names(), archive.listing()

    open_and_list()  # imports and caches settle first
    (legacy, count, names, listing), peak = traced_peak(open_and_list)
    assert peak < 2 * MB, peak  # 12 members would be 48 MiB decoded
    assert legacy
    assert count == 12
    assert names == [f"m{i}" for i in range(12)]
    assert [(n, m.to_dict(), size > 0) for n, m, size in listing] == [
        (f"m{i}", {f"organ{i}": i + 1}, True) for i in range(12)
    ]
    with medmask.MaskArchive(path) as archive:
        mask, one = traced_peak(lambda: archive.load_segmask("m3"))
        assert mask.data.shape == BIG
        assert int(mask.data.max()) == int(mask.data.min()) == 4
        assert mask.mapping.to_dict() == {"organ3": 4}
        infos, peak = traced_peak(archive.info)
        assert peak < 1.5 * one, (peak, one)  # one member at a time, not all twelve
        assert [i.labels[-1].count for i in infos] == [math.prod(BIG)] * 12
        assert archive.verify() == []
        structure = archive.load_structure("organ11")
        assert structure.all()
        assert structure.shape == BIG


def test_cli_lists_a_0_1_archive_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "many.mska"
    path.write_bytes(many_members(24, (64, 1024, 1024)))  # 24 x 64 MiB in a 56 KB file
    listed = run_limited("ls", path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = listed.stdout.strip().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[f"m{i}", "1 label"] for i in range(24)]
    small = tmp_path / "small.mska"
    small.write_bytes(many_members(12))
    info = run_limited("info", small)  # decodes one member at a time
    assert info.returncode == 0, info.stderr[-2000:]
    assert "organ11" in info.stdout


def test_cli_refuses_a_hostile_0_1_member_in_one_line(tmp_path: Path) -> None:
    shape = (64, 512, 512)  # 16 MiB from a 33-byte frame
    frame = raw_frame(math.prod(shape), b"\0" * 16)
    path = tmp_path / "short.mska"
    path.write_bytes(
        build_mska(
            stored_space(shape),
            [("m", {"a": 1}, blob(shape=shape, flag=0, dtype="uint8", frame=frame))],
        )
    )
    for command in (["ls", path], ["info", path], ["convert", path, tmp_path / "new.mska"]):
        assert_one_line_error(run_limited(*command), str(path), "cannot hold")
    assert not (tmp_path / "new.mska").exists()


def test_a_mapping_value_above_the_array_dtype_promotes_the_mask() -> None:
    bits = LABELS > 1
    legacy = LegacyMask(bits, {"fg": 1, "x": 7}, Space(shape=SHAPE))  # 0.1 allowed it
    mask = legacy.to_mask("old.msk")
    assert mask.dtype == np.uint8
    assert mask.mapping.to_dict() == {"fg": 1, "x": 7}
    np.testing.assert_array_equal(mask.data, bits.astype(np.uint8))
    assert LegacyMask(bits, {"fg": 1}, Space(shape=SHAPE)).to_mask("old.msk").dtype == np.bool_
    with pytest.raises(FormatError, match=r"^old\.msk: "):  # a space that does not fit
        LegacyMask(bits, {"fg": 1}, Space(shape=(9, 9, 9))).to_mask("old.msk")


def test_an_archive_without_space_needs_members_of_one_shape(tmp_path: Path) -> None:
    other = (np.arange(24).reshape(2, 3, 4) % 2).astype(np.uint8)
    members = [("a", {"x": 1, "y": 2, "w": 3}, blob(LABELS)), ("b", {"z": 1}, blob(other))]
    data = build_mska(None, members, no_space=True)
    masks = read_legacy_mska(data, name="ns.mska")  # as 0.1.3 loads them: a space each
    assert [tuple(m.space.shape) for m in masks.values()] == [SHAPE, (2, 3, 4)]
    path = tmp_path / "ns.mska"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=r"ns\.mska: the archive stores no space and its"):
        medmask.MaskArchive(path)
    path.write_bytes(build_mska(None, members[:1], no_space=True))
    with medmask.MaskArchive(path) as archive:
        assert tuple(archive.space.shape) == SHAPE
        assert archive.load_segmask("a").data.shape == SHAPE


def test_threads_reading_0_1_members_get_their_own_member(tmp_path: Path) -> None:
    path = tmp_path / "many.mska"
    path.write_bytes(many_members(12, (4, 64, 64)))
    with medmask.MaskArchive(path) as archive:

        def read(i: int) -> bool:
            data = archive.load_segmask(f"m{i % 12}").data
            return int(data.min()) == int(data.max()) == i % 12 + 1

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(read, range(600)))
