"""Committed format-v1 fixtures must read forever (docs/format.md; DEVELOPERS.md rule 5).

The files in ``tests/fixtures/v1`` are written by ``tests/fixtures/make_fixtures.py``; this test
only reads them and never regenerates them: the committed bytes are the contract. A format
change that breaks one of these tests must bump the format version and add new fixtures.

Besides reading each fixture, the tests parse the stored codec streams by the byte layout of
``docs/codecs.md`` (with ``struct``, not with medmask) to prove the fixtures exercise what
they claim: every mode of both codecs, the escape code, 1-D and 2-D streams, both transforms.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medmask import MaskArchive, MaskFile, load_mask, read_info
from medmask.codecs import decode as decode_stream

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
NAMES = [
    "binary_bool",
    "labels_uint8",
    "labels_uint16",
    "labels_uint32",
    "chunked",
    "odd_shape",
    "many_labels",
    # the second set (issue 13)
    "constant_chunk",
    "binary_constant_chunk",
    "plain_uint8",
    "plain_uint16",
    "plain_uint32",
    "long_runs_uint16",
    "long_runs_binary",
    "binary_uint8",
    "binary_uint16",
    "labels_codec_bool",
    "generation_5",
    # medmask.edges (issue 11): stream layout 1, then 2 (what medmask writes)
    *(
        f"{prefix}_{name}"
        for prefix in ("edges", "edges2")
        for name in ("uint8", "bool", "uint32", "plain", "constant_chunk")
    ),
]
ARCHIVES = [
    "archive_fresh",
    "archive_appended",
    "archive_removed",
    "archive_layered",
    "archive_overlapping",
    "archive_torn_newest_slot",
    "archive_edges",
    "archive_edges2",
]
STREAMS = sorted(p.stem for p in (V1 / "streams").glob("*.mmc"))


def load_array(stem: Path) -> np.ndarray:
    """``stem.npy``, or ``stem.npz`` with key ``array`` (larger fixtures)."""
    npy = stem.with_name(stem.name + ".npy")
    if npy.is_file():
        return np.load(npy, allow_pickle=False)
    with np.load(stem.with_name(stem.name + ".npz"), allow_pickle=False) as z:
        return z["array"]


def expected(name: str) -> tuple[np.ndarray, dict[str, Any]]:
    array = load_array(V1 / name)
    meta = json.loads((V1 / f"{name}.json").read_text(encoding="utf-8"))
    return array, meta


def test_fixture_set_is_complete() -> None:
    assert {p.stem for p in V1.glob("*.msk")} == set(NAMES)
    assert {p.stem for p in V1.glob("*.mska")} == set(ARCHIVES)
    for name in NAMES:
        assert (V1 / f"{name}.npy").is_file() or (V1 / f"{name}.npz").is_file()
        assert (V1 / f"{name}.json").is_file()
    for name in ARCHIVES:
        assert (V1 / f"{name}.npz").is_file()
        assert (V1 / f"{name}.json").is_file()
    assert len(STREAMS) >= 20
    for name in STREAMS:
        assert (V1 / "streams" / f"{name}.npy").is_file() or (
            V1 / "streams" / f"{name}.npz"
        ).is_file()
    total = sum(p.stat().st_size for p in V1.rglob("*") if p.is_file())
    assert total < 300_000


def stream_array(name: str) -> np.ndarray:
    return load_array(V1 / "streams" / name)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reads(name: str) -> None:
    array, meta = expected(name)
    path = V1 / f"{name}.msk"
    raw = path.read_bytes()
    assert raw[:8] == b"\x89MSK\r\n\x1a\n"
    assert struct.unpack_from("<HH", raw, 8) == (1, 0)  # written as format 1.0
    assert load_mask(io.BytesIO(raw)) == load_mask(path)  # the same through a file object
    mask = load_mask(path)
    assert mask.dtype == np.dtype(meta["dtype"]) == array.dtype
    assert mask.bit_depth == meta["bit_depth"]
    assert mask.shape == tuple(meta["shape"]) == array.shape
    assert np.array_equal(mask.data, array)
    assert [[n, v] for n, v in mask.mapping.items()] == meta["mapping"]
    space = meta["space"]
    assert [int(s) for s in mask.space.shape] == space["shape"]
    for key in ("origin", "spacing", "x_orientation", "y_orientation", "z_orientation"):
        assert [float(v) for v in getattr(mask.space, key)] == space[key], key
    if meta["chunks"] is not None:
        assert MaskFile(path).descriptor.chunks == tuple(meta["chunks"])


@pytest.mark.parametrize("name", NAMES)
def test_fixture_info_and_roi(name: str) -> None:
    array, meta = expected(name)
    path = V1 / f"{name}.msk"
    info = read_info(path)
    voxel = math.prod(meta["space"]["spacing"])
    for label_name, value in meta["mapping"]:
        where = np.nonzero(array == value)
        count = int(where[0].size)
        assert info.voxel_counts()[label_name] == count
        bbox = None if count == 0 else tuple((int(w.min()), int(w.max())) for w in where)
        assert info.bboxes()[label_name] == bbox
        assert info.volumes_mm3()[label_name] == count * voxel
    roi = tuple(slice(s // 3, max(s // 3 + 1, s - 1)) for s in array.shape)
    assert np.array_equal(load_mask(path, roi=roi).data, array[roi])


def test_chunked_fixture_layout() -> None:
    with MaskFile(V1 / "chunked.msk") as f:
        assert f.descriptor.grid == (3, 3, 1)
        assert f.chunk_byte_range(0) is None  # the all-zero chunk
        assert all(f.chunk_byte_range(i) is not None for i in range(1, 9))


def test_many_labels_fixture_has_compressed_metadata() -> None:
    raw = (V1 / "many_labels.msk").read_bytes()
    (required_flags,) = struct.unpack_from("<I", raw, 12)
    assert required_flags == 1  # METADATA_ZSTD
    assert len(read_info(V1 / "many_labels.msk").labels) == 60


# --- what the fixtures contain, read by the spec (docs/format.md, docs/codecs.md) ----------------


def msk_streams(raw: bytes) -> Iterator[bytes]:
    """The stored chunk streams of a ``.msk``, found by the header and index layout."""
    index_offset, count = struct.unpack_from("<QI", raw, 44)
    for i in range(count):
        offset, length, crc, _ = struct.unpack_from("<QQII", raw, index_offset + 24 * i)
        if length:
            stream = raw[offset : offset + length]
            assert zlib.crc32(stream) == crc
            yield stream


def varint(data: bytes, off: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[off]
        value |= (byte & 0x7F) << shift
        off += 1
        shift += 7
        if not byte & 0x80:
            return value, off


def edges_fields(stream: bytes) -> dict[str, Any]:
    """Header fields of a ``medmask.edges`` stream (docs/codecs.md section 6): version 1 ends
    in the CRC-32 of all bytes before it; version 2 holds the CRC-32 of all other bytes right
    after the shape."""
    _, version, kind, dtype_code, ndim, mode = struct.unpack_from("<3sBBBBB", stream, 0)
    shape = struct.unpack_from(f"<{ndim}I", stream, 8)
    off = 8 + 4 * ndim
    if version == 1:
        (crc,) = struct.unpack_from("<I", stream, len(stream) - 4)
        assert zlib.crc32(stream[:-4]) == crc
        trailer = 4
    else:
        assert version == 2
        (crc,) = struct.unpack_from("<I", stream, off)
        assert zlib.crc32(stream[:off] + stream[off + 4 :]) == crc
        off, trailer = off + 4, 0
    out: dict[str, Any] = {"kind": kind, "dtype": dtype_code, "ndim": ndim, "shape": shape}
    out["version"] = version
    out |= {"mode": mode, "value": None, "k": None, "w": None, "p": None, "sections": []}
    if mode == 0:
        out["value"], off = varint(stream, off)
    elif mode == 2:
        stored, off = varint(stream, off)
        raw, off = varint(stream, off)
        out["sections"] = [(stored, raw)]
    else:
        out["k"], out["w"], out["p"] = stream[off], stream[off + 1], stream[off + 2]
        off += 3
        for _ in range(2 * out["k"] + 5):
            stored, off = varint(stream, off)
            raw, off = varint(stream, off)
            out["sections"].append((stored, raw))
    assert off + sum(s for s, _ in out["sections"]) + trailer == len(stream)
    out["body"] = off
    return out


def stream_fields(stream: bytes) -> dict[str, Any]:
    """Header fields of a codec stream (docs/codecs.md section 1, or 6 for kind 3)."""
    magic, version, kind, dtype_code, ndim, mode = struct.unpack_from("<3sBBBBB", stream, 0)
    if kind == 3:
        return edges_fields(stream)
    assert (magic, version) == (b"MMC", 1)
    shape = struct.unpack_from(f"<{ndim}I", stream, 8)
    h0 = 8 + 4 * ndim
    transform, width, value, runs, long_runs, s0, s1, s2 = struct.unpack_from(
        "<BBIQQQQQ", stream, h0
    )
    (crc,) = struct.unpack_from("<I", stream, h0 + 46)
    assert zlib.crc32(stream[: h0 + 46]) == crc
    assert len(stream) == h0 + 50 + s0 + s1 + s2
    return {
        "kind": kind,
        "dtype": dtype_code,
        "ndim": ndim,
        "shape": shape,
        "mode": mode,
        "transform": transform,
        "width": width,
        "value": value,
        "runs": runs,
        "long_runs": long_runs,
    }


def fields_of(name: str) -> list[dict[str, Any]]:
    return [stream_fields(s) for s in msk_streams((V1 / f"{name}.msk").read_bytes())]


def test_every_codec_mode_is_in_committed_bytes() -> None:
    seen = {(f["kind"], f["mode"], f["ndim"]) for name in NAMES for f in fields_of(name)} | {
        (f["kind"], f["mode"], f["ndim"])
        for f in (stream_fields((V1 / "streams" / f"{n}.mmc").read_bytes()) for n in STREAMS)
    }
    for kind in (1, 2, 3):  # binary, labels, edges
        for mode in (0, 1, 2):  # constant, runs, plain
            assert any(k == kind and m == mode for k, m, _ in seen), (kind, mode)
        for ndim in (1, 2, 3):
            assert any(k == kind and d == ndim for k, _, d in seen), (kind, ndim)


@pytest.mark.parametrize(
    ("name", "claim"),
    [
        ("constant_chunk", lambda f: f["kind"] == 2 and f["mode"] == 0 and f["value"] == 7),
        (
            "binary_constant_chunk",
            lambda f: f["kind"] == 1 and f["mode"] == 0 and f["value"] == 255,
        ),
        ("plain_uint8", lambda f: f["mode"] == 2 and f["width"] == 1),
        ("plain_uint16", lambda f: f["mode"] == 2 and f["width"] == 2),
        ("plain_uint32", lambda f: f["mode"] == 2 and f["width"] == 4),
        ("long_runs_uint16", lambda f: f["mode"] == 1 and f["long_runs"] > 0 and f["width"] == 2),
        ("long_runs_binary", lambda f: f["kind"] == 1 and f["mode"] == 1 and f["long_runs"] > 0),
        ("labels_uint8", lambda f: f["mode"] == 1 and f["transform"] == 1),
        ("chunked", lambda f: f["mode"] == 1 and f["transform"] == 0),
        ("binary_uint8", lambda f: f["kind"] == 1 and f["dtype"] == 2),
        ("binary_uint16", lambda f: f["kind"] == 1 and f["dtype"] == 3),
        ("labels_codec_bool", lambda f: f["kind"] == 2 and f["dtype"] == 1),
    ],
)
def test_fixture_holds_the_stream_it_is_named_for(name: str, claim: Any) -> None:
    assert any(claim(f) for f in fields_of(name)), fields_of(name)


def test_generation_5_fixture_has_a_non_zero_generation() -> None:
    raw = (V1 / "generation_5.msk").read_bytes()
    assert struct.unpack_from("<Q", raw, 20) == (5,)
    assert load_mask(V1 / "generation_5.msk") == load_mask(V1 / "labels_uint8.msk")


@pytest.mark.parametrize("name", STREAMS)
def test_stream_fixture_decodes(name: str) -> None:
    stream = (V1 / "streams" / f"{name}.mmc").read_bytes()
    array = stream_array(name)
    out = decode_stream(stream)
    assert out.dtype == array.dtype
    assert out.shape == array.shape
    assert np.array_equal(out, array)
    fields = stream_fields(stream)
    assert fields["ndim"] == array.ndim
    assert fields["shape"] == array.shape


def test_stream_fixtures_cover_escapes_and_both_transforms() -> None:
    fields = {n: stream_fields((V1 / "streams" / f"{n}.mmc").read_bytes()) for n in STREAMS}
    assert fields["labels_1d_runs_long"]["long_runs"] > 0
    assert fields["labels_1d_runs_long"]["transform"] == 0
    assert fields["labels_2d_xor"]["transform"] == 1
    assert fields["labels_zero_size"]["mode"] == 0
    assert fields["binary_2d_noise_plain"]["mode"] == 2


# --- archives ------------------------------------------------------------------------------------


def archive_expected(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(V1 / f"{name}.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((V1 / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ARCHIVES)
def test_archive_fixture_reads(name: str) -> None:
    arrays, meta = archive_expected(name)
    path = V1 / f"{name}.mska"
    raw = path.read_bytes()
    assert raw[:8] == b"\x89MSA\r\n\x1a\n"
    with MaskArchive(path) as archive:
        assert archive.all_names() == meta["order"] == list(arrays)
        assert archive.generation == meta["generation"]
        space = meta["space"]
        for key in ("origin", "spacing", "x_orientation", "y_orientation", "z_orientation"):
            assert [float(v) for v in getattr(archive.space, key)] == space[key], key
        masks = archive.read_all_masks()
        for member, expected in meta["members"].items():
            mask = masks[member]
            assert np.array_equal(mask.data, arrays[member]), member
            assert mask.dtype == np.dtype(expected["dtype"]) == arrays[member].dtype
            assert mask.bit_depth == expected["bit_depth"]
            assert [[n, v] for n, v in mask.mapping.items()] == expected["mapping"]
            assert archive._directory.member(member).layer == expected["layer"]  # type: ignore[union-attr]
            roi = (slice(2, 7), slice(3, 11), slice(1, 10))
            assert np.array_equal(archive.load_segmask(member, roi=roi).data, arrays[member][roi])
        assert archive.verify() == []


def test_archive_generations_and_dead_bytes() -> None:
    def gen(name: str) -> int:
        return int(archive_expected(name)[1]["generation"])

    assert gen("archive_fresh") == 1
    assert gen("archive_appended") == 3
    assert gen("archive_removed") == 4
    removed = (V1 / "archive_removed.mska").read_bytes()
    appended = (V1 / "archive_appended.mska").read_bytes()
    assert "labels16" in archive_expected("archive_appended")[0]
    assert "labels16" not in archive_expected("archive_removed")[0]
    assert len(removed) == len(appended)  # the removed member's bytes are still there


def test_torn_slot_fixture_reads_the_older_generation() -> None:
    raw = (V1 / "archive_torn_newest_slot.mska").read_bytes()
    crcs_ok = [
        zlib.crc32(raw[s * 64 : s * 64 + 60]) == struct.unpack_from("<I", raw, s * 64 + 60)[0]
        for s in (0, 1)
    ]
    assert sorted(crcs_ok) == [False, True]  # one slot torn
    arrays, meta = archive_expected("archive_torn_newest_slot")
    assert meta["generation"] == 2
    appended, _ = archive_expected("archive_appended")
    assert list(arrays) == [n for n in appended if n != "late5"]


def test_layered_and_overlapping_fixtures() -> None:
    arrays, meta = archive_expected("archive_layered")
    assert all(m["layer"] for m in meta["members"].values())
    assert len(arrays) == 3  # lesion, lung and a lobe overlap pairwise
    with MaskArchive(V1 / "archive_layered.mska") as archive:
        lung = archive.load_structure("lung")
        lesion = archive.load_structure("lesion")
        left = archive.load_structure("lobe_left")
        right = archive.load_structure("lobe_right")
    assert np.array_equal(lung, left | right)
    assert (lesion & left).any()
    assert (lesion & right).any()
    arrays, _ = archive_expected("archive_overlapping")
    assert (arrays["organ"] & arrays["tumour"]).any()


# --- medmask.edges (docs/codecs.md section 6) ----------------------------------------------------


def all_edges_fields() -> list[dict[str, Any]]:
    out = [f for name in NAMES for f in fields_of(name) if f["kind"] == 3]
    for name in STREAMS:
        f = stream_fields((V1 / "streams" / f"{name}.mmc").read_bytes())
        if f["kind"] == 3:
            out.append(f | {"name": name})
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_edges_fixtures_cover_every_width(version: int) -> None:
    fields = [f for f in all_edges_fields() if f["version"] == version]
    edges = [f for f in fields if f["mode"] == 1]
    assert {f["w"] for f in edges} == {0, 1, 2, 4, 8}  # toggled, 1-, 2-, 4-, 8-byte values
    assert {f["p"] for f in edges} == {1, 2, 4}  # position widths
    assert {f["k"] for f in edges} == {6}
    assert {f["ndim"] for f in edges} == {1, 2, 3}
    assert {f["mode"] for f in fields} == {0, 1, 2}
    assert any(stored not in (0, raw) for f in edges for stored, raw in f["sections"])  # zstd
    assert any(stored == raw > 0 for f in edges for stored, raw in f["sections"])  # raw bytes
    assert {f["dtype"] for f in fields} >= {1, 2, 3, 4, 5, 7, 0x83}


@pytest.mark.parametrize("name", ["edges_2d_gap_escape", "edges2_2d_gap_escape"])
def test_edges_gap_escape_is_in_committed_bytes(name: str) -> None:
    import zstandard

    stream = (V1 / "streams" / f"{name}.mmc").read_bytes()
    f = edges_fields(stream)
    stored, raw = f["sections"][0]  # the gaps
    body = stream[f["body"] : f["body"] + stored]
    gaps = body if stored == raw else zstandard.ZstdDecompressor().decompress(body)
    at = gaps.index(255)
    assert int.from_bytes(gaps[at + 1 : at + 5], "little") == 600  # every voxel of row 1
