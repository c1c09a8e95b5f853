"""Where ``.msk`` bytes come from and go to: paths, URLs, file objects, S3, GCS; atomic writes."""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from spacetransformer import Space

import medmask
import medmask.api
import medmask.io
from medmask import MaskFile, SegmentationMask, load_mask, read_info, save_mask
from medmask.io import HEAD_GUESS, MERGE_GAP, merge_ranges, open_source, source_name
from servers import BucketFixture

# every s3 test here runs twice: against a server that answers at once and one 20 ms away
S3_LATENCIES = (0.0, 0.02)


def make_mask(shape: tuple[int, int, int] = (12, 20, 16), seed: int = 0) -> SegmentationMask:
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.uint8)
    for value in (1, 2, 3):
        lo = [int(rng.integers(0, s // 2)) for s in shape]
        data[lo[0] : lo[0] + shape[0] // 2, lo[1] : lo[1] + shape[1] // 2, lo[2] :] = value
    space = Space(shape=shape, origin=(1.0, -2.0, 3.5), spacing=(3.0, 0.7, 0.7))
    return SegmentationMask(data, {"a": 1, "b": 2, "c": 3}, space)


def msk_bytes(mask: SegmentationMask, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    save_mask(mask, buf, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def mask() -> SegmentationMask:
    return make_mask()


# --- local targets -----------------------------------------------------------------------------


def test_local_path_kinds(tmp_path: Path, mask: SegmentationMask) -> None:
    path = tmp_path / "a.msk"
    size = save_mask(mask, path)
    assert path.stat().st_size == size
    reference = path.read_bytes()
    assert load_mask(path) == mask
    assert load_mask(str(path)) == mask
    assert load_mask(path.as_uri()) == mask  # file:// URL
    assert load_mask(fsspec.open(str(path))) == mask  # fsspec OpenFile (local)
    assert read_info(path.as_uri()).shape == mask.shape
    # every target kind writes the same bytes
    for i, target in enumerate(
        [str(tmp_path / "b.msk"), (tmp_path / "c.msk").as_uri(), fsspec.open(tmp_path / "d.msk")]
    ):
        save_mask(mask, target)
        assert (tmp_path / "bcd"[i]).with_suffix(".msk").read_bytes() == reference


def test_file_objects(tmp_path: Path, mask: SegmentationMask) -> None:
    reference = msk_bytes(mask)
    buf = io.BytesIO(b"")
    save_mask(mask, buf)
    assert buf.getvalue() == reference
    buf.seek(5)  # the reader seeks itself
    assert load_mask(buf) == mask
    path = tmp_path / "f.msk"
    with open(path, "wb") as handle:
        save_mask(mask, handle)
    with open(path, "rb") as handle:
        assert load_mask(handle) == mask
        assert not handle.closed  # file objects are not closed by medmask
        with MaskFile(handle) as f:
            assert f.name == str(path)


def test_memory_urls_and_openfile(memory_fs: Any, mask: SegmentationMask) -> None:
    reference = msk_bytes(mask)
    save_mask(mask, "memory://bucket/dir/m.msk")
    assert memory_fs.cat_file("/bucket/dir/m.msk") == reference
    assert load_mask("memory://bucket/dir/m.msk") == mask
    assert read_info("memory://bucket/dir/m.msk").mapping == mask.mapping
    opened = fsspec.open("memory://bucket/dir/m.msk")
    assert load_mask(opened) == mask
    save_mask(mask, fsspec.open("memory://bucket/other.msk", "wb"))
    assert memory_fs.cat_file("/bucket/other.msk") == reference


def test_missing_sources(tmp_path: Path, memory_fs: Any) -> None:
    for source in ["memory://nope/x.msk", (tmp_path / "x.msk").as_uri(), str(tmp_path / "x")]:
        with pytest.raises(medmask.MaskFileNotFoundError, match=re.escape("x")) as info:
            load_mask(source)
        assert isinstance(info.value, FileNotFoundError)


def test_bad_targets(mask: SegmentationMask) -> None:
    with pytest.raises(TypeError, match="Expected a path, URL"):
        load_mask(42)
    with pytest.raises(TypeError, match="Expected a path, URL"):
        save_mask(mask, 42)
    with pytest.raises(medmask.MedmaskError, match="cannot open this URL"):
        load_mask("nosuchprotocol://a/b.msk")


def test_source_names(tmp_path: Path) -> None:
    assert source_name(tmp_path / "a.msk") == str(tmp_path / "a.msk")
    assert source_name("s3://b/k.msk") == "s3://b/k.msk"
    assert source_name(fsspec.open("memory://q/a.msk")) == "memory:///q/a.msk"
    with open(tmp_path / "n.bin", "wb") as handle:
        assert source_name(handle) == str(tmp_path / "n.bin")


def test_merge_ranges() -> None:
    assert merge_ranges([]) == []
    assert merge_ranges([(10, 20), (0, 5)]) == [(0, 20)]  # 5-byte gap < MERGE_GAP
    far = 20 + MERGE_GAP + 1
    assert merge_ranges([(0, 10), (10, 20), (far, far + 5)]) == [(0, 20), (far, far + 5)]
    assert merge_ranges([(0, 100), (10, 20)]) == [(0, 100)]
    assert merge_ranges([(0, 10), (30, 40)], gap=0) == [(0, 10), (30, 40)]


def test_local_source_reads_ranges(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    path = tmp_path / "blob"
    path.write_bytes(data)
    source = open_source(path)
    try:
        assert source.size == len(data)
        assert source.read(10, 20) == data[10:20]
        assert source.read(len(data) - 3, len(data) + 100) == data[-3:]
        assert source.read(1 << 63, (1 << 63) + 10) == b""  # hostile offsets read nothing
        ranges = [(0, 4), (4, 8), (20_000, 20_010), (5, 6)]
        assert source.read_ranges(ranges) == [data[s:e] for s, e in ranges]
    finally:
        source.close()


# --- S3 and GCS --------------------------------------------------------------------------------


def big_mask() -> SegmentationMask:
    """(10, 256, 128) noise labels: chunks (1, 128, 128) give a (10, 2, 1) grid of ~6 KiB chunks."""
    rng = np.random.default_rng(42)
    data = rng.integers(0, 8, size=(10, 256, 128), dtype=np.uint8)
    data[:, :, :40] = 5  # some structure as well
    return SegmentationMask(data, {f"l{v}": v for v in range(1, 8)})


@pytest.fixture(scope="module")
def big() -> tuple[SegmentationMask, bytes]:
    m = big_mask()
    return m, msk_bytes(m, chunks=(1, 128, 128))


def test_same_file_everywhere(
    tmp_path: Path, memory_fs: Any, s3: BucketFixture, gcs: BucketFixture, mask: SegmentationMask
) -> None:
    data = msk_bytes(mask, chunks=(5, 7, 16))
    (tmp_path / "m.msk").write_bytes(data)
    memory_fs.pipe_file("/m/m.msk", data)
    s3.fs.pipe_file(s3.path("dir/m.msk"), data)
    gcs.fs.pipe_file(gcs.path("dir/m.msk"), data)
    sources: list[tuple[str, dict[str, Any] | None]] = [
        (str(tmp_path / "m.msk"), None),
        ("memory://m/m.msk", None),
        (s3.url("dir/m.msk"), s3.storage_options),
        (gcs.url("dir/m.msk"), gcs.storage_options),
    ]
    for url, options in sources:
        assert load_mask(url, storage_options=options) == mask, url
        info = read_info(url, storage_options=options)
        assert info.name == url
        assert info.voxel_counts() == mask.label_counts()
        roi = (slice(3, 9), slice(2, 15), slice(None))
        part = load_mask(url, roi=roi, storage_options=options)
        assert np.array_equal(part.data, mask.data[roi])


def test_save_to_s3_and_gcs(s3: BucketFixture, gcs: BucketFixture, mask: SegmentationMask) -> None:
    reference = msk_bytes(mask)
    assert save_mask(mask, s3.url("out/m.msk"), storage_options=s3.storage_options) == len(
        reference
    )
    assert s3.fs.cat_file(s3.path("out/m.msk")) == reference
    assert s3.log.count("PUT", "out/m.msk") == 1, s3.log.summary()  # one atomic PUT
    save_mask(mask, gcs.url("out/m.msk"), storage_options=gcs.storage_options)
    gcs.fs.invalidate_cache()
    assert gcs.fs.cat_file(gcs.path("out/m.msk")) == reference
    assert load_mask(gcs.url("out/m.msk"), storage_options=gcs.storage_options) == mask
    # SegmentationMask.save/load pass storage_options through
    mask.save(s3.url("out/n.msk"), storage_options=s3.storage_options)
    assert SegmentationMask.load(s3.url("out/n.msk"), storage_options=s3.storage_options) == mask


def test_missing_objects(s3: BucketFixture, gcs: BucketFixture) -> None:
    for bucket in (s3, gcs):
        url = bucket.url("nope.msk")
        with pytest.raises(medmask.MaskFileNotFoundError, match=re.escape(url)) as info:
            load_mask(url, storage_options=bucket.storage_options)
        assert isinstance(info.value, FileNotFoundError)
        with pytest.raises(medmask.MaskFileNotFoundError):
            read_info(url, storage_options=bucket.storage_options)


def _range(request: Any) -> tuple[int, int]:
    match = re.fullmatch(r"bytes=(\d+)-(\d+)", request.range or "")
    assert match, f"not a closed byte range: {request}"
    return int(match[1]), int(match[2]) + 1


def test_s3_read_info_is_one_get(s3: BucketFixture, big: tuple[SegmentationMask, bytes]) -> None:
    m, data = big
    s3.fs.pipe_file(s3.path("big.msk"), data)
    s3.log.clear()
    info = read_info(s3.url("big.msk"), storage_options=s3.storage_options)
    assert info.shape == (10, 256, 128)
    assert info.voxel_counts() == m.label_counts()
    assert [r.method for r in s3.log.requests] == ["GET"], s3.log.summary()
    assert _range(s3.log.requests[0]) == (0, HEAD_GUESS)
    assert len(data) > HEAD_GUESS  # so the single GET really is a partial read


def test_s3_full_load_is_head_plus_merged_chunks(
    s3: BucketFixture, big: tuple[SegmentationMask, bytes]
) -> None:
    m, data = big
    s3.fs.pipe_file(s3.path("big.msk"), data)
    with MaskFile(io.BytesIO(data)) as f:
        ranges = [f.chunk_byte_range(i) for i in range(20)]
    assert all(r is not None for r in ranges)
    first, last = ranges[0], ranges[-1]
    assert first is not None
    assert last is not None
    s3.log.clear()
    assert load_mask(s3.url("big.msk"), storage_options=s3.storage_options) == m
    requests = s3.log.requests
    assert [r.method for r in requests] == ["GET", "GET"], s3.log.summary()
    assert _range(requests[0]) == (0, HEAD_GUESS)
    # chunks inside the first read are not fetched again; the rest come in one request
    beyond = [r for r in ranges if r is not None and r[1] > HEAD_GUESS]
    assert first[1] <= HEAD_GUESS < last[1]
    assert _range(requests[1]) == (beyond[0][0], last[1])
    assert last[1] == len(data)


@pytest.mark.parametrize(
    ("roi", "chunk_ids", "n_requests"),
    [
        ((slice(8, 9), slice(0, 100), slice(3, 50)), [16], 1),  # inside one chunk
        ((slice(7, 9), slice(130, 140), slice(None)), [15, 17], 2),  # two non-adjacent runs
        ((slice(0, 3), slice(120, 140), slice(None)), [0, 1, 2, 3, 4, 5], 0),  # in first read
        ((slice(9, 10), slice(255, 256), 0), [19], 1),  # last chunk, int index
    ],
    ids=["one-chunk", "two-runs", "one-run", "last"],
)
def test_s3_roi_fetches_only_its_chunks(
    s3: BucketFixture,
    big: tuple[SegmentationMask, bytes],
    roi: Any,
    chunk_ids: list[int],
    n_requests: int,
) -> None:
    m, data = big
    s3.fs.pipe_file(s3.path("big.msk"), data)
    with MaskFile(io.BytesIO(data)) as f:
        assert f.descriptor.grid == (10, 2, 1)
        assert f.descriptor.chunks_in(medmask.api.parse_roi(roi, m.shape)) == chunk_ids
        wanted = [f.chunk_byte_range(i) for i in chunk_ids]
        lengths = [int(v) for v in f.index["length"]]
    assert min(lengths) > MERGE_GAP  # a skipped chunk is a gap that is not merged over
    assert all(r is not None for r in wanted)
    # chunks already inside the first read are served from it
    expected = merge_ranges([r for r in wanted if r is not None and r[1] > HEAD_GUESS])
    assert len(expected) == n_requests
    s3.log.clear()
    part = load_mask(s3.url("big.msk"), roi=roi, storage_options=s3.storage_options)
    norm = medmask.api.parse_roi(roi, m.shape)
    assert np.array_equal(part.data, m.data[norm])
    requests = s3.log.requests
    assert all(r.method == "GET" for r in requests), s3.log.summary()
    assert all(r.range is not None for r in requests)  # never the whole object
    assert _range(requests[0]) == (0, HEAD_GUESS)
    assert sorted(_range(r) for r in requests[1:]) == expected, s3.log.summary()
    needed = sum(e - s for s, e in expected)
    assert s3.log.bytes_sent() == HEAD_GUESS + needed
    assert s3.log.bytes_sent() < len(data)


def test_s3_small_file_head_read_is_short(s3: BucketFixture, mask: SegmentationMask) -> None:
    data = msk_bytes(mask, chunks=4)
    s3.fs.pipe_file(s3.path("small.msk"), data)
    s3.log.clear()
    assert load_mask(s3.url("small.msk"), storage_options=s3.storage_options) == mask
    gets = s3.log.gets()
    assert len(s3.log.requests) == len(gets) == 1, s3.log.summary()  # the first read is all
    assert s3.log.bytes_sent() == len(data)


# --- atomic local writes -----------------------------------------------------------------------


@pytest.fixture
def existing(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "mask.msk"
    save_mask(make_mask(seed=1), path)
    return path, path.read_bytes()


def _assert_untouched(path: Path, old: bytes) -> None:
    assert path.read_bytes() == old
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left


def _boom(*args: Any, **kwargs: Any) -> None:
    raise OSError("disk on fire")


@pytest.mark.parametrize("func", ["replace", "fsync", "chmod"])
def test_failed_os_call_keeps_old_file(
    existing: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, func: str
) -> None:
    path, old = existing
    monkeypatch.setattr(medmask.io.os, func, _boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_mask(make_mask(seed=2), path)
    monkeypatch.undo()
    _assert_untouched(path, old)
    assert load_mask(path) == make_mask(seed=1)


class _FailingPieces(list[bytes]):
    """Pieces whose iteration fails after the first piece (a write that dies midway)."""

    def __init__(self, pieces: list[bytes], error: BaseException) -> None:
        super().__init__(pieces)
        self.error = error

    def __iter__(self) -> Iterator[bytes]:
        yield self[0]
        raise self.error


@pytest.mark.parametrize("error", [OSError("no space left"), KeyboardInterrupt()])
def test_write_dying_midway_keeps_old_file(
    existing: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    path, old = existing
    build = medmask.api.build_msk
    monkeypatch.setattr(
        medmask.api, "build_msk", lambda encoded: _FailingPieces(build(encoded), error)
    )
    with pytest.raises(type(error)):
        save_mask(make_mask(seed=2), path)
    _assert_untouched(path, old)
    with pytest.raises(type(error)):
        medmask.io.write_atomic(str(path), _FailingPieces([b"x", b"y"], error))
    _assert_untouched(path, old)


def test_failed_encoding_keeps_old_file(
    existing: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, old = existing

    def broken(*args: Any, **kwargs: Any) -> None:
        raise medmask.CodecError("cannot encode")

    monkeypatch.setattr(medmask.api, "encode_mask", broken)
    with pytest.raises(medmask.CodecError):
        save_mask(make_mask(seed=2), path)
    _assert_untouched(path, old)


def test_successful_save_replaces(existing: tuple[Path, bytes]) -> None:
    path, old = existing
    new = make_mask(seed=3)
    save_mask(new, path)
    assert path.read_bytes() != old
    assert load_mask(path) == new
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600


def test_target_in_missing_directory(tmp_path: Path, mask: SegmentationMask) -> None:
    target = tmp_path / "no" / "such" / "dir" / "m.msk"
    with pytest.raises(medmask.MaskFileNotFoundError, match=re.escape(str(target))) as info:
        save_mask(mask, target)
    assert isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / "no").exists()
