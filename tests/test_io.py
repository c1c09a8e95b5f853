"""Where ``.msk`` bytes come from and go to: paths, URLs, file objects, S3, GCS; atomic writes."""

from __future__ import annotations

import asyncio
import io
import os
import re
import stat
import time
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
from medmask.io import (
    HEAD_GUESS,
    MERGE_GAP,
    MERGE_GAP_REMOTE,
    merge_ranges,
    open_source,
    read_heads,
    source_name,
)
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


def test_merge_ranges_boundaries() -> None:
    at_gap = [(0, 10), (10 + MERGE_GAP, 20 + MERGE_GAP)]
    assert merge_ranges(at_gap) == [(0, 20 + MERGE_GAP)]  # exactly MERGE_GAP apart: merged
    past_gap = [(0, 10), (11 + MERGE_GAP, 20 + MERGE_GAP)]
    assert merge_ranges(past_gap) == past_gap
    assert merge_ranges([(0, 10), (15, 20)], gap=5) == [(0, 20)]
    assert merge_ranges([(0, 10), (16, 20)], gap=5) == [(0, 10), (16, 20)]
    assert merge_ranges([(0, 10), (10, 20)], gap=0) == [(0, 20)]  # touching
    assert merge_ranges([(0, 10), (12, 20)], max_size=20) == [(0, 20)]  # exactly max_size
    assert merge_ranges([(0, 10), (12, 21)], max_size=20) == [(0, 10), (12, 21)]
    assert merge_ranges([(0, 30), (5, 40)], max_size=20) == [(0, 40)]  # overlapping: always
    assert merge_ranges([(0, 30), (30, 40)], max_size=20) == [(0, 30), (30, 40)]
    assert merge_ranges([(0, 50)], max_size=20) == [(0, 50)]  # one range may exceed it
    assert merge_ranges(iter([(5, 6), (0, 1)])) == [(0, 6)]  # any iterable, sorted


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
    # the remote gap (256 KiB) would merge over the skipped chunks: at the local one, only the
    # chunks asked for travel
    with medmask.config.set(range_gap_remote=MERGE_GAP):
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


def test_s3_reads_merge_over_the_remote_gap(
    s3: BucketFixture, big: tuple[SegmentationMask, bytes]
) -> None:
    m, data = big
    s3.fs.pipe_file(s3.path("big.msk"), data)
    roi = (slice(7, 9), slice(130, 140), slice(None))  # chunks 15 and 17: two runs
    with MaskFile(io.BytesIO(data)) as f:
        first, last = f.chunk_byte_range(15), f.chunk_byte_range(17)
    assert first is not None
    assert last is not None
    assert MERGE_GAP < last[0] - first[1] <= MERGE_GAP_REMOTE
    s3.log.clear()
    part = load_mask(s3.url("big.msk"), roi=roi, storage_options=s3.storage_options)
    assert np.array_equal(part.data, m.data[roi])
    ranges = [_range(r) for r in s3.log.gets()]
    assert ranges == [(0, HEAD_GUESS), (first[0], last[1])]  # one GET over the skipped chunk
    medmask.io.head_cache.clear()  # (the head, kept with its ETag, would be re-used)
    s3.log.clear()
    with medmask.config.set(range_gap_remote=0):
        load_mask(s3.url("big.msk"), roi=roi, storage_options=s3.storage_options)
    assert len(s3.log.gets()) == 3  # the setting is honoured


def test_local_reads_keep_the_small_gap(big: tuple[SegmentationMask, bytes]) -> None:
    _, data = big
    local = medmask.io.FileObjectSource(io.BytesIO(data), "big.msk")
    asked: list[tuple[int, int]] = []
    read = local.read
    local.read = lambda s, e: asked.append((s, e)) or read(s, e)  # type: ignore[method-assign]
    local.read_ranges([(0, 10), (10 + MERGE_GAP + 1, 20 + MERGE_GAP)])
    assert asked == [(0, 10), (11 + MERGE_GAP, 20 + MERGE_GAP)]  # not merged over 4 KiB


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
    monkeypatch.setattr(medmask.io._write.os, func, _boom)
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


# --- backend errors as medmask errors ----------------------------------------------------------


class NoCredentialsError(Exception):
    """Named like botocore's (which is no OSError)."""


class AccessDeniedException(Exception):
    """Named like the access errors botocore builds from an error code."""


class _HttpError(Exception):
    """An HTTP client's error carrying the status as ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _caused_by(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    "exc",
    [PermissionError("not yours"), AccessDeniedException("denied")],
    ids=["PermissionError", "access-denied"],
)
def test_storage_error_access_denied(exc: BaseException) -> None:
    err = medmask.io.storage_error(exc, "s3://b/k.msk", "reading")
    assert type(err) is medmask.StoragePermissionError
    detail = f"{type(exc).__name__}: {exc}"
    assert str(err) == f"s3://b/k.msk: access denied while reading ({detail})."


def test_storage_error_forbidden_without_a_reason() -> None:
    err = medmask.io.storage_error(_HttpError(403, "forbidden"), "s3://b/k.msk", "reading")
    assert type(err) is medmask.StoragePermissionError
    assert str(err) == (
        "s3://b/k.msk: access denied while reading (HTTP 403: forbidden); the store gave no "
        "reason: the credentials may lack permission, or be invalid."
    )


_S3_HINT = (
    "pass credentials with storage_options={'key': KEY, 'secret': SECRET} (and 'token' for "
    "temporary ones) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)."
)


@pytest.mark.parametrize(
    ("exc", "what"),
    [
        (_HttpError(401, "unauthorized"), "the store refused the credentials (HTTP 401: "
         "unauthorized): they are unknown, wrong or expired"),
        (NoCredentialsError("Unable to locate credentials"), "no credentials were found "
         "(NoCredentialsError: Unable to locate credentials)"),
        (_caused_by(OSError("signing failed"), NoCredentialsError("no keys")),
         "no credentials were found (OSError: signing failed)"),
    ],
    ids=["401", "no-credentials", "cause"],
)  # fmt: skip
def test_storage_error_credentials(exc: BaseException, what: str) -> None:
    """Missing or refused credentials are not "access denied": they say how to pass them."""
    err = medmask.io.storage_error(exc, "s3://b/k.msk", "reading")
    assert type(err) is medmask.errors.StorageCredentialsError
    assert str(err) == f"s3://b/k.msk: reading failed: {what}; {_S3_HINT}"


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (OSError("disk on fire"), "OSError: disk on fire"),
        (_HttpError(404, "gone"), "_HttpError: gone"),
        (_HttpError(500, "oops"), "_HttpError: oops"),
        (_caused_by(OSError("boom"), ValueError("bad")), "OSError: boom"),
        (TimeoutError(), "TimeoutError"),
    ],
    ids=["OSError", "404", "500", "other-cause", "no-message"],
)
def test_storage_error_other_failures(exc: BaseException, detail: str) -> None:
    err = medmask.io.storage_error(exc, "gs://b/k.msk", "listing")
    assert type(err) is medmask.StorageError
    assert str(err) == f"gs://b/k.msk: listing failed ({detail})."


def test_storage_error_missing_files() -> None:
    own = medmask.ChecksumError("bad chunk")
    assert medmask.io.storage_error(own, "x", "reading") is own  # medmask's own pass through
    err = medmask.io.storage_error(FileNotFoundError("k"), "s3://b/k", "reading")
    assert type(err) is medmask.MaskFileNotFoundError
    assert str(err) == "s3://b/k: no such file or object."
    err = medmask.io.storage_error(IsADirectoryError("d"), "/tmp/d", "opening")
    assert type(err) is medmask.MaskFileNotFoundError
    assert str(err) == "/tmp/d: is a directory, not a file."


def test_s3_without_credentials_is_a_credentials_error(
    s3: BucketFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.fs.pipe_file(s3.path("k.msk"), b"0123456789")
    s3.log.clear()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    url = s3.url("k.msk")
    options = {"endpoint_url": s3.endpoint_url, "skip_instance_cache": True}
    refused = medmask.errors.StorageCredentialsError
    found = ": no credentials were found (NoCredentialsError: Unable to locate credentials); "
    none = f"^{re.escape(url)}: reading failed{re.escape(found + _S3_HINT)}$"
    size = none.replace("reading failed", "reading the size of failed")
    with pytest.raises(refused, match=size):
        medmask.io.stored_size(url, options)
    source = open_source(url, options)
    with pytest.raises(refused, match=none):
        source.read(0, 4)

    async def read_async() -> None:
        reader = medmask.io.open_source_async(url, options)
        with pytest.raises(refused, match=none):
            await reader.read(0, 4)
        with pytest.raises(refused, match=none):
            await reader.read_ranges([(0, 2), (2 + MERGE_GAP + 1, 2 + MERGE_GAP + 5)])
        await _close(reader)

    asyncio.run(read_async())
    assert s3.log.requests == []  # refused before anything went out


# --- conditional writes to object stores -------------------------------------------------------


def _changed(url: str) -> str:
    return (
        f"^{re.escape(url)}: was changed by another writer since it was read; nothing was "
        r"written\. Open it again and retry\.$"
    )


def _created(url: str) -> str:
    return (
        f"^{re.escape(url)}: was created by another writer since it was read; nothing was "
        r"written\. Open it again and retry\.$"
    )


def _check_conditional_writes(fs: Any, fs_path: str, url: str, options: Any, kind: str) -> None:
    """Create-only and version-checked writes lose to another writer, leaving its bytes."""
    write_atomic, object_version = medmask.io.write_atomic, medmask.io.object_version

    def stored() -> bytes:
        fs.invalidate_cache()
        return bytes(fs.cat_file(fs_path))

    absent = object_version(url, options)
    assert absent == medmask.io.ObjectVersion(False, kind)  # type: ignore[arg-type]
    fs.pipe_file(fs_path, b"theirs")  # created meanwhile
    with pytest.raises(medmask.ConcurrentModificationError, match=_created(url)):
        write_atomic(url, [b"mine"], options, expect=absent)
    assert stored() == b"theirs"
    with pytest.raises(medmask.MaskFileExistsError) as exists:
        write_atomic(url, [b"mine"], options, overwrite=False)
    assert str(exists.value) == f"{url}: already exists; nothing was written."
    assert stored() == b"theirs"
    seen = object_version(url, options)
    assert (seen.exists, seen.check, seen.size) == (True, kind, 6)
    fs.pipe_file(fs_path, b"theirs, again")  # changed meanwhile
    with pytest.raises(medmask.ConcurrentModificationError, match=_changed(url)):
        write_atomic(url, [b"mine"], options, expect=seen)
    assert stored() == b"theirs, again"
    seen = object_version(url, options)
    fs.rm(fs_path)  # deleted meanwhile
    with pytest.raises(medmask.ConcurrentModificationError, match=_changed(url)):
        write_atomic(url, [b"mine"], options, expect=seen)
    fs.pipe_file(fs_path, b"theirs")
    new = write_atomic(url, [b"mi", b"ne"], options, expect=object_version(url, options))
    assert stored() == b"mine"  # the version seen is still current: written
    assert new is not None
    assert (new.exists, new.check, new.size) == (True, kind, 4)
    assert new == object_version(url, options)


def test_conditional_writes_s3(s3: BucketFixture) -> None:
    url = s3.url("v.msk")
    _check_conditional_writes(s3.fs, s3.path("v.msk"), url, s3.storage_options, "etag")


def test_conditional_writes_gcs(gcs: BucketFixture) -> None:
    url = gcs.url("v.msk")
    _check_conditional_writes(gcs.fs, gcs.path("v.msk"), url, gcs.storage_options, "generation")


def test_conditional_writes_other_filesystems(memory_fs: Any) -> None:
    url = "memory://b/v.msk"
    _check_conditional_writes(memory_fs, "/b/v.msk", url, None, "content")


class _LosingStore:
    """An S3-protocol filesystem whose conditional PUT loses a race, failing as ``error``."""

    protocol = ("s3", "s3a")

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def pipe_file(self, path: str, data: bytes, **kwargs: Any) -> None:
        raise self.error


class _Object:
    """An fsspec OpenFile's face: a filesystem and a path."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path


def _s3_client_error(code: str) -> BaseException:
    """What s3fs raises for an S3 error answer with this code."""
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]
    from s3fs.errors import translate_boto_error

    error = ClientError({"Error": {"Code": code, "Message": "lost"}}, "PutObject")
    try:
        raise translate_boto_error(error) from error
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    "error",
    [
        _HttpError(412, "Precondition Failed"),
        _s3_client_error("PreconditionFailed"),
        _s3_client_error("ConditionalRequestConflict"),  # 409: a concurrent conditional write
    ],
    ids=["412", "PreconditionFailed", "ConditionalRequestConflict"],
)
def test_lost_conditional_put_is_a_conflict(error: BaseException) -> None:
    target = _Object(_LosingStore(error), "b/k.msk")
    seen = medmask.io.ObjectVersion(True, "etag", '"abc"', 4)
    with pytest.raises(medmask.ConcurrentModificationError, match=_changed("b/k.msk")) as info:
        medmask.io.write_atomic(target, [b"mine"], expect=seen)
    assert info.value.__cause__ is error
    with pytest.raises(medmask.MaskFileExistsError, match=r"^b/k\.msk: already exists; nothing"):
        medmask.io.write_atomic(target, [b"mine"], overwrite=False)


@pytest.mark.parametrize(
    "error",
    [
        _HttpError(409, "Conflict"),
        _s3_client_error("InternalError"),
        OSError("reset"),
        _caused_by(OSError("reset"), ConnectionResetError(104, "peer")),  # no response
    ],
    ids=["409", "InternalError", "OSError", "cause-without-response"],
)
def test_failed_conditional_put_is_a_storage_error(error: BaseException) -> None:
    target = _Object(_LosingStore(error), "b/k.msk")
    seen = medmask.io.ObjectVersion(True, "etag", '"abc"', 4)
    with pytest.raises(medmask.StorageError, match=r"^b/k.msk: writing failed \(") as info:
        medmask.io.write_atomic(target, [b"mine"], expect=seen)
    assert type(info.value) is medmask.StorageError


# --- reads from coroutines ---------------------------------------------------------------------

DATA = bytes(range(256)) * 64  # 16 KiB
FAR = 8 + MERGE_GAP + 1  # more than MERGE_GAP past (4, 8): not merged with it


@pytest.fixture
def exact_gap() -> Iterator[None]:
    """Remote reads merged over the local gap only, as local ones: tests of exact ranges
    ``FAR`` apart (the remote default, 256 KiB, would merge them; tested on its own)."""
    with medmask.config.set(range_gap_remote=medmask.io.MERGE_GAP):
        yield


async def _close(source: Any) -> None:
    """Close the S3 client of an async source on its own event loop."""
    client = getattr(getattr(source, "fs", None), "_s3", None)
    if client is not None:
        await client.close()


def _fresh(options: dict[str, Any]) -> dict[str, Any]:
    """Options for a filesystem of this event loop (fsspec caches async instances per thread,
    bound to the loop that created them, closed with it)."""
    return {**options, "skip_instance_cache": True}


@pytest.mark.usefixtures("exact_gap")
def test_async_s3_reads_exact_ranges(s3: BucketFixture) -> None:
    s3.fs.pipe_file(s3.path("d.bin"), DATA)
    url, n = s3.url("d.bin"), len(DATA)

    async def reads() -> None:
        source = medmask.io.open_source_async(url, _fresh(s3.storage_options))
        assert isinstance(source, medmask.io.AsyncFsspecSource)  # s3fs's own coroutines
        assert (source.name, source.size) == (url, None)
        s3.log.clear()
        assert await source.read(5, 5) == b""
        assert await source.read(9, 3) == b""
        assert await source.read_ranges([]) == []
        assert s3.log.requests == []  # empty ranges ask nothing
        assert await source.read(10, 20) == DATA[10:20]
        assert await source.read(n - 3, n + 100) == DATA[-3:]
        assert await source.read(n + 10, n + 20) == b""  # past the end: nothing there
        asked = [_range(r) for r in s3.log.requests]
        assert asked == [(10, 20), (n - 3, n + 100), (n + 10, n + 20)]
        s3.log.clear()
        ranges = [(4, 8), (FAR, FAR + 10), (0, 4), (5, 6)]
        assert await source.read_ranges(ranges) == [DATA[s:e] for s, e in ranges]
        assert sorted(_range(r) for r in s3.log.requests) == [(0, 8), (FAR, FAR + 10)]
        source.close()
        await _close(source)

    asyncio.run(reads())


def test_async_gcs_reads_exact_ranges(gcs: BucketFixture) -> None:
    gcs.fs.pipe_file(gcs.path("d.bin"), DATA)
    url = gcs.url("d.bin")

    async def reads() -> None:
        source = medmask.io.open_source_async(url, _fresh(gcs.storage_options))
        assert isinstance(source, medmask.io.AsyncFsspecSource)
        try:
            assert await source.read(10, 20) == DATA[10:20]
            ranges = [(4, 8), (FAR, FAR + 10), (0, 4)]
            assert await source.read_ranges(ranges) == [DATA[s:e] for s, e in ranges]
        finally:
            await source.fs.session.close()

    asyncio.run(reads())


def test_async_s3_missing_object(s3: BucketFixture) -> None:
    url = s3.url("nope.bin")

    async def reads() -> None:
        source = medmask.io.open_source_async(url, _fresh(s3.storage_options))
        missing = f"^{re.escape(url)}: no such object in bucket '{s3.bucket}'.$"
        with pytest.raises(medmask.MaskFileNotFoundError, match=missing):
            await source.read(0, 10)
        with pytest.raises(medmask.MaskFileNotFoundError, match=missing):
            await source.read_ranges([(0, 4), (FAR, FAR + 4)])
        await _close(source)

    asyncio.run(reads())


@pytest.mark.usefixtures("exact_gap")
def test_async_s3_reads_through_the_head_cache(s3: BucketFixture) -> None:
    s3.fs.pipe_file(s3.path("d.bin"), DATA)
    medmask.io.head_cache.enable()

    async def reads() -> None:
        for _ in range(2):
            source = medmask.io.open_source_async(s3.url("d.bin"), _fresh(s3.storage_options))
            assert await source.read_ranges([(100, 200), (FAR + 200, FAR + 209)]) == [
                DATA[100:200],
                DATA[FAR + 200 : FAR + 209],
            ]
            await _close(source)

    s3.log.clear()
    asyncio.run(reads())
    assert sorted(_range(r) for r in s3.log.requests) == [(100, 200), (FAR + 200, FAR + 209)]


def test_async_reads_share_the_head_cache_with_sync_reads(s3: BucketFixture) -> None:
    s3.fs.pipe_file(s3.path("d.bin"), DATA)
    url, options = s3.url("d.bin"), _fresh(s3.storage_options)
    medmask.io.head_cache.enable()
    s3.log.clear()
    assert read_heads([url], options) == [DATA]

    async def reads() -> bytes:
        source = medmask.io.open_source_async(url, options)
        try:
            return await source.read(0, HEAD_GUESS)
        finally:
            await _close(source)

    assert asyncio.run(reads()) == DATA
    assert len(s3.log.requests) == 1  # the head read by read_heads, kept for the coroutine


def test_threaded_source_gets_the_storage_options(memory_fs: Any, tmp_path: Path) -> None:
    memory_fs.pipe_file("/b/d.bin", DATA)
    url = "simplecache::memory://b/d.bin"  # a filesystem without coroutines, with options
    options = {"simplecache": {"cache_storage": str(tmp_path)}}
    source = medmask.io.open_source_async(url, options)
    assert asyncio.run(source.read_ranges([(3, 9), (FAR, FAR + 2)])) == [
        DATA[3:9],
        DATA[FAR : FAR + 2],
    ]
    assert len(list(tmp_path.iterdir())) == 1  # cached where the options say
    source.close()


@pytest.mark.usefixtures("exact_gap")
def test_async_s3_ranges_go_out_at_most_32_at_once(s3: BucketFixture) -> None:
    s3.fs.pipe_file(s3.path("d.bin"), DATA * 13)
    options = {**s3.storage_options, "config_kwargs": {"max_pool_connections": 64}}
    data = DATA * 13
    ranges = [(i * 4200, i * 4200 + 10) for i in range(48)]
    assert len(merge_ranges(ranges)) == 48  # every range its own request

    async def reads() -> list[bytes]:
        source = medmask.io.open_source_async(s3.url("d.bin"), _fresh(options))
        try:
            return await source.read_ranges(ranges)
        finally:
            await _close(source)

    s3.server.latency = 0.05
    s3.log.clear()
    assert asyncio.run(reads()) == [data[s:e] for s, e in ranges]
    assert len(s3.log.requests) == 48
    assert 8 <= s3.log.max_in_flight <= medmask.io.MAX_CONCURRENCY


def test_blocking_sources_read_from_coroutines_in_threads(tmp_path: Path, memory_fs: Any) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(DATA)
    memory_fs.pipe_file("/b/d.bin", DATA)
    ranges = [(4, 8), (FAR, FAR + 10), (0, 4), (5, 6), (len(DATA) - 2, len(DATA) + 50)]
    buffer = io.BytesIO(DATA)

    async def reads(target: Any, name: str, size: int | None) -> None:
        source = medmask.io.open_source_async(target)
        assert isinstance(source, medmask.io.ThreadedSource)
        assert (source.name, source.size) == (name, size)
        assert await source.read(10, 20) == DATA[10:20]
        assert await source.read(len(DATA) - 3, len(DATA) + 9) == DATA[-3:]
        assert await source.read_ranges(ranges) == [DATA[s:e] for s, e in ranges]
        source.close()

    n = len(DATA)
    for target, name, size in [
        (str(path), str(path), n),
        (path, str(path), n),
        (path.as_uri(), str(path), n),
        ("memory://b/d.bin", "memory://b/d.bin", None),  # a filesystem without coroutines
        (buffer, repr(buffer), n),
    ]:
        asyncio.run(reads(target, name, size))
    assert not buffer.closed  # file objects are not closed by medmask
    local = medmask.io.open_source_async(str(path))
    asyncio.run(local.read(0, 1))
    local.close()
    with pytest.raises(medmask.StorageError, match="reading"):
        asyncio.run(local.read(0, 1))  # closed: its descriptor is gone


# --- sizes and versions of local files ---------------------------------------------------------


def test_stored_size(tmp_path: Path, memory_fs: Any, s3: BucketFixture) -> None:
    stored_size = medmask.io.stored_size
    path = tmp_path / "d.bin"
    path.write_bytes(DATA)
    memory_fs.pipe_file("/b/d.bin", DATA[:100])
    s3.fs.pipe_file(s3.path("d.bin"), DATA[:7])
    assert stored_size(str(path)) == stored_size(path) == stored_size(path.as_uri()) == len(DATA)
    assert stored_size(fsspec.open(str(path))) == len(DATA)
    assert stored_size("memory://b/d.bin") == 100
    assert stored_size(fsspec.open("memory://b/d.bin")) == 100
    assert stored_size(s3.url("d.bin"), s3.storage_options) == 7
    (tmp_path / "empty.bin").touch()
    assert stored_size(tmp_path / "empty.bin") == 0
    for target in [str(tmp_path / "no.bin"), (tmp_path / "no.bin").as_uri()]:
        with pytest.raises(medmask.MaskFileNotFoundError) as info:
            stored_size(target)
        assert str(info.value) == f"{target}: no such file."
    with pytest.raises(medmask.MaskFileNotFoundError) as info:
        stored_size("memory://b/no.bin")
    assert str(info.value) == "memory://b/no.bin: no such file or object."
    with pytest.raises(medmask.MaskFileNotFoundError) as info:
        stored_size(s3.url("no.bin"), s3.storage_options)
    assert str(info.value) == f"{s3.url('no.bin')}: no such object in bucket '{s3.bucket}'."


def test_local_object_version(tmp_path: Path) -> None:
    object_version, version = medmask.io.object_version, medmask.io.ObjectVersion
    path = tmp_path / "d.bin"
    assert object_version(path) == version(False, "content")
    head = medmask.io.COMPARED_PREFIX
    path.write_bytes(DATA)
    seen = object_version(str(path))
    assert seen == version(True, "content", "", len(DATA), DATA[:head])
    assert object_version(path.as_uri()) == seen
    path.write_bytes(DATA[:-1])  # shorter
    assert object_version(path) == version(True, "content", "", len(DATA) - 1, DATA[:head])
    path.write_bytes(b"x" + DATA[1:])  # the same size, another first byte
    assert object_version(path) == version(True, "content", "", len(DATA), b"x" + DATA[1:head])
    path.write_bytes(b"")
    assert object_version(path) == version(True, "content", "", 0, b"")
    with pytest.raises(medmask.MaskFileNotFoundError) as info:
        object_version(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a file."


# --- create-only local writes ------------------------------------------------------------------


class _AppearsMeanwhile(list[bytes]):
    """Pieces while writing which another writer creates ``path`` (after the up-front check)."""

    def __init__(self, pieces: list[bytes], path: Path, theirs: bytes) -> None:
        super().__init__(pieces)
        self.path, self.theirs = path, theirs

    def __iter__(self) -> Iterator[bytes]:
        self.path.write_bytes(self.theirs)
        yield from super().__iter__()


def _no_hard_links(*args: Any, **kwargs: Any) -> None:
    raise PermissionError(1, "Operation not permitted")  # what FAT or SMB mounts answer


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_create_only_local_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool
) -> None:
    if not links:
        monkeypatch.setattr(os, "link", _no_hard_links)
    write_atomic = medmask.io.write_atomic
    path = tmp_path / "m.msk"
    assert write_atomic(str(path), [b"mi", b"ne"], overwrite=False) is None
    assert path.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.msk"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    exists = f"{path}: already exists; nothing was written."
    with pytest.raises(medmask.MaskFileExistsError) as info:
        write_atomic(str(path), [b"again"], overwrite=False)  # there before the write
    assert str(info.value) == exists
    path.unlink()
    with pytest.raises(medmask.MaskFileExistsError) as info:  # created while writing
        write_atomic(str(path), _AppearsMeanwhile([b"mine"], path, b"theirs"), overwrite=False)
    assert str(info.value) == exists
    _assert_untouched(path, b"theirs")
    path.unlink()
    absent = medmask.io.object_version(path)
    with pytest.raises(medmask.ConcurrentModificationError) as conflict:
        write_atomic(path, _AppearsMeanwhile([b"mine"], path, b"theirs"), expect=absent)
    assert str(conflict.value) == (
        f"{path}: was created by another writer since it was read; nothing was written."
    )
    _assert_untouched(path, b"theirs")


# --- the head cache ----------------------------------------------------------------------------


def test_head_cache_limits_and_refusals() -> None:
    cache = medmask.io.HeadCache()
    assert not cache.enabled
    cache.put(("t", "a"), b"x")  # off: nothing kept
    assert cache.get(("t", "a")) is None
    refusals = [
        ({"max_entries": -1}, "-1, 268435456, 60.0"),
        ({"max_bytes": -1}, "1024, -1, 60.0"),
        ({"ttl": -0.5}, "1024, 268435456, -0.5"),
    ]
    for limits, shown in refusals:
        with pytest.raises(medmask.InvalidValueError) as info:
            cache.enable(**limits)  # type: ignore[arg-type]
        assert str(info.value) == f"Expected non-negative limits. Got {shown}."

    def on() -> bool:
        return cache.enabled

    assert not on()
    cache.enable(0)
    assert not on()
    cache.enable(2, max_bytes=10)
    assert on()
    cache.put(None, b"x")
    cache.put(("t", "a"), b"12345")
    cache.put(("t", "b"), b"12345")  # 10 bytes in all: both kept
    assert (cache.get(("t", "a")), cache.get(("t", "b"))) == (b"12345", b"12345")
    cache.put(("t", "c"), b"1")  # a third entry pushes out the least recently used
    assert cache.get(("t", "a")) is None
    assert (cache.get(("t", "b")), cache.get(("t", "c"))) == (b"12345", b"1")
    cache.put(("t", "c"), b"123456")  # replaced: 11 bytes would be too many
    assert cache.get(("t", "b")) is None
    assert cache.get(("t", "c")) == b"123456"
    assert (cache.hits, cache.misses) == (5, 2)
    cache.clear()
    assert cache.get(("t", "c")) is None
    assert (cache.hits, cache.misses) == (0, 1)
    cache.enable(4, max_bytes=1 << 30)
    cache.put(("t", "h"), bytes(HEAD_GUESS))
    cache.put(("t", "i"), bytes(HEAD_GUESS + 1))  # longer than a head: not one
    assert cache.get(("t", "h")) == bytes(HEAD_GUESS)
    assert cache.get(("t", "i")) is None
    assert cache.get(None) is None
    cache.disable()
    assert not cache.enabled
    assert cache.get(("t", "h")) is None  # dropped


def test_head_cache_ranges() -> None:
    cache = medmask.io.HeadCache()
    cache.enable(8, max_bytes=80, ranges=False)
    cache.put_range(("t", "a"), 0, 4, b"abcd")
    assert cache.get_range(("t", "a"), 0, 4) is None  # ranges off
    cache.enable(8, max_bytes=80)
    cache.put_range(("t", "a"), 0, 10, b"0123456789")  # an eighth of the budget: kept
    cache.put_range(("t", "a"), 20, 31, b"x" * 11)  # more: not kept
    cache.put_range(None, 0, 1, b"z")
    assert cache.get_range(("t", "a"), 0, 10) == b"0123456789"
    assert cache.get_range(("t", "a"), 20, 31) is None
    assert cache.get_range(("t", "a"), 0, 9) is None  # exact ranges only
    assert cache.get_range(None, 0, 10) is None
    cache.put(("t", "a"), b"head")
    cache.put(("t", "b"), b"other")
    assert cache.get_range(("t", "a"), 0, HEAD_GUESS) == b"head"  # the head is a range too
    kept, missing = cache.kept_ranges(("t", "a"), [(0, 10), (10, 12)])
    assert (kept, missing) == ({(0, 10): b"0123456789", (10, 12): None}, [(10, 12)])
    ranges = [(10, 12), (0, 10), (10, 12)]
    assert cache.keep_fetched(("t", "a"), ranges, kept, missing, [b"ab"]) == [
        b"ab",
        b"0123456789",
        b"ab",
    ]
    assert cache.get_range(("t", "a"), 10, 12) == b"ab"
    cache.drop(("t", "a"))  # head and ranges of that object only
    cache.drop(None)
    assert cache.get(("t", "a")) is None
    assert cache.get_range(("t", "a"), 0, 10) is None
    assert cache.get(("t", "b")) == b"other"


def test_head_cache_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("medmask.io._cache.time.monotonic", lambda: now[0])
    cache = medmask.io.HeadCache()
    cache.enable(4, ttl=5.0)
    cache.put(("t", "a"), b"x")
    now[0] = 105.0
    assert cache.get(("t", "a")) == b"x"  # exactly ttl old: still fresh
    now[0] = 105.5
    assert cache.get(("t", "a")) is None
    assert (cache.hits, cache.misses) == (1, 1)
    cache.enable(2, ttl=5.0)
    now[0] = 200.0
    cache.put(("t", "a"), b"a")
    now[0] = 201.0
    cache.put(("t", "b"), b"b")
    assert cache.get(("t", "a")) == b"a"  # now the most recently used
    now[0] = 205.5
    assert cache.get(("t", "a")) is None  # stale: removed, it no longer takes a place
    cache.put(("t", "c"), b"c")
    assert (cache.get(("t", "b")), cache.get(("t", "c"))) == (b"b", b"c")


def _untouched(cache: medmask.io.HeadCache) -> bool:
    """No entry kept and never asked (:meth:`HeadCache.get` would count a miss)."""
    return (cache.hits, cache.misses) == (0, 0) and not cache._entries


def test_a_head_cache_passed_in_is_the_one_used(
    memory_fs: Any, mask: SegmentationMask, s3: BucketFixture
) -> None:
    """Every reader and writer that consults the head cache takes ``cache=``: a private
    HeadCache given there gets the heads and ranges, the process's head_cache none of them."""
    from medmask.reader import read_directory, read_directory_async

    medmask.io.head_cache.enable()  # on: any use of it would show
    mine = medmask.io.HeadCache()
    mine.enable()
    url, other = "memory://c/m.msk", "memory://c/n.msk"
    save_mask(mask, url)
    save_mask(mask, other)

    source = open_source(url, cache=mine)
    key = source.cache_key  # type: ignore[attr-defined]
    assert source.cache is mine  # type: ignore[attr-defined]
    directory = read_directory(source)  # the source's own cache
    assert mine.get(key) == directory.head
    assert source.read_ranges([(0, 8), (HEAD_GUESS, HEAD_GUESS + 8)]) == [
        directory.head[:8],
        b"",
    ]
    assert mine.get_range(key, 0, 8) == directory.head[:8]
    hits = mine.hits
    default_source = open_source(url)  # reads through head_cache, but is given mine
    assert read_directory(default_source, cache=mine).head == directory.head
    assert mine.hits == hits + 1  # the head came from mine, no read

    assert read_heads([url, other], cache=mine) == [directory.head, bytes(directory.head)]
    other_key = open_source(other).cache_key  # type: ignore[attr-defined]
    assert mine.get(other_key) == directory.head  # fetched by read_heads, kept in mine

    async def read_async() -> bytes:
        reader = medmask.io.open_source_async(url, cache=mine)
        assert (await read_directory_async(reader, cache=mine)).head == directory.head
        return await reader.read(0, 8)

    assert asyncio.run(read_async()) == directory.head[:8]
    assert _untouched(medmask.io.head_cache)

    medmask.io.write_atomic(url, [b"new"], cache=mine)  # drops what mine kept of it
    assert mine.get(key) is None
    assert mine.get_range(key, 0, 8) is None
    assert mine.get(other_key) == directory.head
    assert _untouched(medmask.io.head_cache)

    # an async filesystem (AsyncFsspecSource) reads through the cache it was opened with
    s3.fs.pipe_file(s3.path("d.bin"), DATA)

    async def read_s3() -> list[bytes]:
        reader = medmask.io.open_source_async(
            s3.url("d.bin"), _fresh(s3.storage_options), cache=mine
        )
        assert isinstance(reader, medmask.io.AsyncFsspecSource)
        try:
            return [await reader.read(10, 20) for _ in range(2)]
        finally:
            await _close(reader)

    s3.log.clear()
    assert asyncio.run(read_s3()) == [DATA[10:20]] * 2
    assert len(s3.log.requests) == 1  # the second read came from mine
    assert _untouched(medmask.io.head_cache)


def test_the_default_head_cache_is_used_without_cache(
    memory_fs: Any, mask: SegmentationMask
) -> None:
    """``cache=None`` (the default) everywhere means the process's head_cache."""
    from medmask.reader import read_directory

    medmask.io.head_cache.enable()
    url = "memory://c/m.msk"
    save_mask(mask, url)
    source = open_source(url)
    assert source.cache is medmask.io.head_cache  # type: ignore[attr-defined]
    directory = read_directory(source)
    key = source.cache_key  # type: ignore[attr-defined]
    assert medmask.io.head_cache.get(key) == directory.head
    assert read_heads([url]) == [directory.head]
    medmask.io.write_atomic(url, [b"new"])
    assert medmask.io.head_cache.get(key) is None


# --- names, suffixes, whole reads --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "suffix"),
    [
        ("a/b/Mask.MSK", ".msk"),
        ("s3://b/ct.nii.gz?versionId=3", ".nii.gz"),
        ("cases.TAR.GZ", ".tar.gz"),
        ("x.gz", ".gz"),
        ("dir.d/", ".d"),
        ("dir.d/file", ""),
        (".hidden", ""),
        ("noext", ""),
        (Path("p/q.mska"), ".mska"),
        (io.BytesIO(), ""),
    ],
)
def test_name_suffix(target: Any, suffix: str) -> None:
    assert medmask.io.name_suffix(target) == suffix


def test_source_name_fallbacks() -> None:
    class Named:
        full_name = "gs://b/full"
        path = "b/path"
        name = "name"

    class PathOnly:
        path = "b/path"
        name = 3

    class NameOnly:
        path = None
        name = "just a name"

    class Nameless:
        name = None

    nameless = Nameless()
    assert source_name(Named()) == "gs://b/full"
    assert source_name(PathOnly()) == "b/path"
    assert source_name(NameOnly()) == "just a name"
    assert source_name(nameless) == repr(nameless)


def test_read_whole_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"x" * 1000)
    assert medmask.io.read_whole(str(path), None, 1000) == b"x" * 1000  # exactly the limit
    with pytest.raises(medmask.AllocationLimitError) as info:
        medmask.io.read_whole(path, None, 999)
    assert str(info.value) == f"{path}: larger than the 999-byte limit (max_bytes=)."
    with pytest.raises(medmask.AllocationLimitError) as info:
        medmask.io.read_whole(io.BytesIO(b"y" * 2000), None, 1500)
    assert str(info.value).endswith(": larger than the 1,500-byte limit (max_bytes=).")
    source = open_source(path)
    with pytest.raises(medmask.AllocationLimitError, match=rf"^{re.escape(str(path))}: larger"):
        medmask.io.read_all(source, 10)
    with pytest.raises(medmask.AllocationLimitError, match=r"^other: larger than the 10-byte"):
        medmask.io.read_all(source, 10, name="other")
    source.close()


def test_read_many_limit(tmp_path: Path) -> None:
    for name, size in [("a", 100), ("b", 101)]:
        (tmp_path / name).write_bytes(b"x" * size)
    done: list[int] = []
    out = medmask.io.read_many([tmp_path / "a", tmp_path / "b"], max_bytes=100, on_done=done.append)
    assert out[0] == b"x" * 100
    assert isinstance(out[1], medmask.AllocationLimitError)
    assert str(out[1]) == f"{tmp_path / 'b'}: larger than the 100-byte limit (max_bytes=)."
    assert done == [1, 1]


def test_split_by_head_boundaries() -> None:
    head = bytes(range(256)) * (HEAD_GUESS // 256)  # a full first read: the file goes on
    found, missing = medmask.io.split_by_head(
        head, [(0, 4), (10, HEAD_GUESS), (10, HEAD_GUESS + 1)]
    )
    assert found == [head[:4], head[10:], None]
    assert missing == [(10, HEAD_GUESS + 1)]
    short = head[:-1]  # shorter than a first read: the whole file
    found, missing = medmask.io.split_by_head(
        short, [(10, HEAD_GUESS + 5), (HEAD_GUESS, HEAD_GUESS + 9)]
    )
    assert found == [short[10:], b""]
    assert missing == []


def test_read_ranges_after_head(tmp_path: Path) -> None:
    data = bytes(range(256)) * (HEAD_GUESS // 128)  # two first reads long
    path = tmp_path / "d.bin"
    path.write_bytes(data)
    source = open_source(path)
    head = data[:HEAD_GUESS]
    ranges = [(HEAD_GUESS + 5, HEAD_GUESS + 9), (0, 3), (HEAD_GUESS - 1, HEAD_GUESS + 1)]
    assert medmask.io.read_ranges_after_head(source, head, ranges) == [data[s:e] for s, e in ranges]
    assert medmask.io.read_ranges_after_head(source, head, [(1, 2)]) == [data[1:2]]
    source.close()


# --- sources -----------------------------------------------------------------------------------


def test_local_source_edges(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "d.bin"
    path.write_bytes(DATA[:100])
    with pytest.raises(medmask.MaskFileNotFoundError) as info:
        open_source(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a file."
    with pytest.raises(medmask.MaskFileNotFoundError) as info:
        open_source(tmp_path / "no.bin")
    assert str(info.value) == f"{tmp_path / 'no.bin'}: no such file or object."
    source = open_source(path)
    assert (source.name, source.size) == (str(path), 100)
    assert source.read(0, 0) == source.read(50, 40) == b""
    with open(path, "ab") as handle:
        handle.write(DATA[100:150])  # grew since it was opened
    assert source.read(95, 200) == DATA[95:150]
    assert source.size == 150
    copy = pickle.loads(pickle.dumps(source))  # opens its own descriptor
    assert copy.read(0, 150) == DATA[:150]
    source.close()
    source.close()  # twice is fine
    assert copy.read(140, 145) == DATA[140:145]
    copy.close()
    empty = tmp_path / "empty.bin"
    empty.touch()
    source = open_source(empty)
    assert (source.size, source.read(0, 10)) == (0, b"")
    source.close()


class _TextReads(io.BytesIO):
    def read(self, size: int | None = -1) -> Any:
        return super().read(size).decode("latin-1")


class _NoEnd(io.BytesIO):
    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == os.SEEK_END:
            raise OSError("cannot seek to the end")
        return super().seek(offset, whence)


class _Recording(io.BytesIO):
    """Remembers the lengths it was asked to read."""

    asked: list[int]

    def read(self, size: int | None = -1) -> bytes:
        self.asked = [*getattr(self, "asked", []), -1 if size is None else size]
        return super().read(size)


def test_file_object_source_edges() -> None:
    recording = _Recording(DATA[:100])
    source = open_source(recording)
    assert source.size == 100
    assert source.read(90, 1 << 62) == DATA[90:100]
    assert recording.asked == [10]  # clamped: a file object is never asked a hostile length
    assert source.read(100, 200) == source.read(7, 7) == b""
    assert source.read_ranges([(0, 2), (98, 120)]) == [DATA[:2], DATA[98:100]]
    unsized = open_source(_NoEnd(DATA[:100]))
    assert unsized.size is None
    assert unsized.read(95, 200) == DATA[95:100]
    assert unsized.read(5, 5) == b""
    text = open_source(_TextReads(b"abc"))
    with pytest.raises(medmask.InvalidTypeError) as info:
        text.read(0, 2)
    assert str(info.value).endswith(": expected a binary file object. Got str reads.")
    closed = io.BytesIO(b"abc")
    source = open_source(closed)
    closed.close()
    with pytest.raises(medmask.StorageError, match="reading failed"):
        source.read(0, 2)
    with pytest.raises(medmask.InvalidTypeError) as type_info:
        open_source(object())
    assert str(type_info.value) == (
        "Expected a path, URL, fsspec OpenFile or seekable binary file object. Got object."
    )


@pytest.mark.usefixtures("exact_gap")
def test_fsspec_source_reads(memory_fs: Any, s3: BucketFixture) -> None:
    memory_fs.pipe_file("/b/d.bin", DATA)
    s3.fs.pipe_file(s3.path("d.bin"), DATA)
    n = len(DATA)
    ranges = [(4, 8), (FAR, FAR + 10), (0, 4), (n - 2, n + 9)]
    for url, options in [("memory://b/d.bin", None), (s3.url("d.bin"), s3.storage_options)]:
        source = open_source(url, options)
        assert (source.name, source.size) == (url, None)
        s3.log.clear()
        assert source.read(5, 5) == source.read(9, 3) == b""
        assert source.read_ranges([]) == []
        assert s3.log.requests == []
        assert source.read(10, 20) == DATA[10:20]
        assert source.read(n + 10, n + 20) == b""  # past the end
        assert source.read_ranges(ranges) == [DATA[s:e] for s, e in ranges]
        assert source.read_ranges([(n + 5, n + 9), (n + 5 + FAR, n + 9 + FAR)]) == [b"", b""]
        source.close()
    s3.log.clear()
    source = open_source(s3.url("d.bin"), s3.storage_options)
    source.read_ranges(ranges)
    assert sorted(_range(r) for r in s3.log.requests) == [(0, 8), (FAR, FAR + 10), (n - 2, n + 9)]
    gone = open_source(s3.url("gone.bin"), s3.storage_options)
    missing = f"^{re.escape(s3.url('gone.bin'))}: no such object in bucket '{s3.bucket}'.$"
    with pytest.raises(medmask.MaskFileNotFoundError, match=missing):
        gone.read(0, 4)
    with pytest.raises(medmask.MaskFileNotFoundError, match=missing):
        gone.read_ranges([(0, 4), (FAR, FAR + 4)])
    opened = open_source(fsspec.open("memory://b/d.bin"))
    assert (opened.name, opened.read(1, 3)) == ("memory:///b/d.bin", DATA[1:3])


# --- local locks -------------------------------------------------------------------------------


def test_local_lock(tmp_path: Path) -> None:
    LocalLock = medmask.io.LocalLock
    path = tmp_path / "a.mska"
    assert LocalLock.acquire(str(path), 1.0) is None  # nothing to lock
    path.write_bytes(b"old")
    lock = LocalLock.acquire(str(path), 1.0)
    assert lock is not None
    assert lock.is_current()
    assert os.pread(lock.fd, 3, 0) == b"old"  # opened for reading and writing
    os.pwrite(lock.fd, b"n", 0)
    assert path.read_bytes() == b"nld"
    started = time.monotonic()
    with pytest.raises(medmask.LockTimeoutError) as info:
        LocalLock.acquire(str(path), 0.1)  # another handle: held
    assert time.monotonic() - started >= 0.1
    assert str(info.value) == (
        f"{path}: another writer has held the archive open for appending for more than 0.1 s; "
        "close it or pass a longer lock_timeout."
    )
    lock.release()
    lock.release()  # twice is fine
    assert lock.fd == -1
    again = LocalLock.acquire(str(path), 0.0)  # free again: no waiting needed
    assert again is not None
    path.unlink()
    assert not again.is_current()  # deleted
    path.write_bytes(b"new")
    assert not again.is_current()  # another file under that name
    again.release()


def test_local_file_under_its_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The locked file's positioned reads and writes: short ``os.pwrite`` calls are
    continued, and an OSError is a StorageError naming the file."""
    path = tmp_path / "a.mska"
    path.write_bytes(b"0123456789")
    lock = medmask.io.LocalLock.acquire(str(path), 1.0)
    assert lock is not None
    file = lock.file
    assert (file.path, file.fd) == (str(path), lock.fd)
    assert file.size() == 10
    assert file.pread(2, 3) == b"234"
    assert file.pread(8, 5) == b"89"  # fewer at the end
    real, calls = os.pwrite, []

    def short_pwrite(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        return real(fd, bytes(data[:2]), offset)  # two bytes per call

    monkeypatch.setattr(os, "pwrite", short_pwrite)
    file.pwrite(b"abcde", 8)
    monkeypatch.undo()
    assert calls == [8, 10, 12]
    file.fsync()
    assert path.read_bytes() == b"01234567abcde"
    assert file.size() == 13
    name = re.escape(str(path))
    monkeypatch.setattr(os, "fsync", _boom)
    with pytest.raises(medmask.StorageError, match=f"^{name}: flushing to disk failed \\(OSE"):
        file.fsync()
    monkeypatch.undo()
    lock.release()  # the file's descriptor is the lock's: every call fails now
    assert file.fd == -1
    failures = [
        (file.size, (), "reading the size of"),
        (file.pread, (0, 1), "reading"),
        (file.pwrite, (b"x", 0), "writing"),
        (file.fsync, (), "flushing to disk"),
    ]
    for call, args, doing in failures:
        with pytest.raises(medmask.StorageError) as info:
            call(*args)
        assert str(info.value) == f"{path}: {doing} failed (its lock was released)."


def test_local_lock_follows_a_replaced_file(tmp_path: Path) -> None:
    import threading

    LocalLock = medmask.io.LocalLock
    path = tmp_path / "a.mska"
    path.write_bytes(b"old")
    held = LocalLock.acquire(str(path), 1.0)
    assert held is not None

    def replace_then_release() -> None:
        time.sleep(0.1)
        medmask.io.write_atomic(str(path), [b"new"])  # renamed over the locked file
        held.release()

    writer = threading.Thread(target=replace_then_release)
    writer.start()
    lock = LocalLock.acquire(str(path), 5.0)
    writer.join()
    assert lock is not None
    assert lock.is_current()  # the new file is locked, not the one replaced
    assert os.pread(lock.fd, 3, 0) == b"new"
    lock.release()


# --- folders, globs, versions of remote objects ------------------------------------------------


def test_list_folder_and_expand_glob(tmp_path: Path, memory_fs: Any) -> None:
    for name in ["b.msk", "a.msk", "c.txt"]:
        (tmp_path / name).write_bytes(b"x")
        memory_fs.pipe_file(f"/f/{name}", b"x")
    (tmp_path / "sub").mkdir()
    memory_fs.pipe_file("/f/sub/d.msk", b"x")
    local = [str(tmp_path / n) for n in ["a.msk", "b.msk", "c.txt"]]
    assert medmask.io.list_folder(tmp_path) == local  # files only, sorted
    assert medmask.io.list_folder(str(tmp_path)) == local
    remote = [f"memory:///f/{n}" for n in ["a.msk", "b.msk", "c.txt"]]
    assert medmask.io.list_folder("memory://f") == remote
    for folder in [str(tmp_path / "none"), "memory://none"]:
        with pytest.raises(medmask.MaskFileNotFoundError) as info:
            medmask.io.list_folder(folder)
        assert str(info.value) == f"{folder}: no such folder."
    assert medmask.io.expand_glob(str(tmp_path / "*.msk")) == local[:2]
    assert medmask.io.expand_glob("memory://f/*.msk") == remote[:2]
    assert medmask.io.expand_glob("memory://f/**/*.msk") == [*remote[:2], "memory:///f/sub/d.msk"]
    assert medmask.io.expand_glob(str(tmp_path / "*.none")) == []


def test_remote_object_versions(s3: BucketFixture, gcs: BucketFixture, memory_fs: Any) -> None:
    s3.fs.pipe_file(s3.path("v.bin"), DATA)
    gcs.fs.pipe_file(gcs.path("v.bin"), DATA)
    memory_fs.pipe_file("/b/v.bin", DATA)
    memory_fs.pipe_file("/b/empty.bin", b"")
    version = medmask.io.ObjectVersion
    etag = str(s3.fs.info(s3.path("v.bin"))["ETag"])
    assert etag.startswith('"')
    assert medmask.io.object_version(s3.url("v.bin"), s3.storage_options) == version(
        True, "etag", etag, len(DATA)
    )
    generation = str(gcs.fs.info(gcs.path("v.bin"))["generation"])
    assert generation.isdigit()
    assert medmask.io.object_version(gcs.url("v.bin"), gcs.storage_options) == version(
        True, "generation", generation, len(DATA)
    )
    head = DATA[: medmask.io.COMPARED_PREFIX]
    assert medmask.io.object_version("memory://b/v.bin") == version(
        True, "content", "", len(DATA), head
    )
    assert medmask.io.object_version(fsspec.open("memory://b/v.bin")) == version(
        True, "content", "", len(DATA), head
    )
    assert medmask.io.object_version("memory://b/empty.bin") == version(True, "content", "", 0, b"")
    folder = f"s3://{s3.bucket}"
    assert medmask.io.list_folder(folder, s3.storage_options) == [s3.url("v.bin")]  # cached
    s3.fs.pipe_file(s3.path("v.bin"), b"changed")  # seen afresh, not from that listing
    assert medmask.io.object_version(s3.url("v.bin"), s3.storage_options).size == 7
    with pytest.raises(medmask.InvalidTypeError) as info:
        medmask.io.object_version(42)
    assert str(info.value) == "Expected a path, URL or fsspec OpenFile. Got int."


def test_version_of_another_store_is_refused(memory_fs: Any, s3: BucketFixture) -> None:
    memory_fs.pipe_file("/b/v.bin", b"theirs")
    etag = medmask.io.ObjectVersion(True, "etag", '"abc"', 6)
    with pytest.raises(medmask.InvalidValueError) as info:
        medmask.io.write_atomic("memory://b/v.bin", [b"mine"], expect=etag)
    assert str(info.value) == "memory://b/v.bin: version 'etag' does not fit this store."
    assert memory_fs.cat_file("/b/v.bin") == b"theirs"
    content = medmask.io.ObjectVersion(True, "content", "", 6, b"theirs")
    with pytest.raises(medmask.InvalidValueError, match="version 'content' does not fit"):
        medmask.io.write_atomic(s3.url("v.bin"), [b"mine"], s3.storage_options, expect=content)
    absent = medmask.io.ObjectVersion(False, "content")  # "only if still absent" fits any store
    medmask.io.write_atomic(s3.url("v.bin"), [b"mine"], s3.storage_options, expect=absent)
    assert s3.fs.cat_file(s3.path("v.bin")) == b"mine"
    with pytest.raises(medmask.InvalidTypeError) as type_info:
        medmask.io.write_atomic(object(), [b"x"])
    assert str(type_info.value) == (
        "Expected a path, URL, fsspec OpenFile or writable binary file object. Got object."
    )
    buffer = io.BytesIO()
    assert medmask.io.write_atomic(buffer, [b"a", b"b"]) is None
    assert buffer.getvalue() == b"ab"


# --- many first reads at once ------------------------------------------------------------------


def test_read_heads_of_every_kind(tmp_path: Path, memory_fs: Any) -> None:
    memory_fs.pipe_file("/b/a.bin", DATA * 5)
    memory_fs.pipe_file("/b/small.bin", b"small")
    (tmp_path / "l.bin").write_bytes(b"local")
    done: list[int] = []
    heads = medmask.io.read_heads(
        ["memory://b/a.bin", "memory://b/gone.bin", io.BytesIO(b"buffer"), 42,
         tmp_path / "l.bin", "memory://b/small.bin", str(tmp_path / "gone.bin")],
        max_concurrency=0,
    )  # fmt: skip
    assert heads[0] == (DATA * 5)[:HEAD_GUESS]
    assert isinstance(heads[1], medmask.MaskFileNotFoundError)
    assert str(heads[1]) == "memory://b/gone.bin: no such file or object."
    assert heads[2] == b"buffer"
    assert isinstance(heads[3], medmask.InvalidTypeError)
    assert heads[4:6] == [b"local", b"small"]
    assert isinstance(heads[6], medmask.MaskFileNotFoundError)
    assert str(heads[6]) == f"{tmp_path / 'gone.bin'}: no such file or object."
    many = medmask.io.read_many(
        ["memory://b/a.bin", "memory://b/small.bin", "memory://b/gone.bin", io.BytesIO(b"xy")],
        max_bytes=len(DATA) * 5,
        max_concurrency=1,
        on_done=done.append,
    )
    assert many[0:2] == [DATA * 5, b"small"]
    assert isinstance(many[2], medmask.MaskFileNotFoundError)
    assert many[3] == b"xy"
    assert sorted(done) == [1, 1, 1, 1]  # groups of max_concurrency=1


def test_read_heads_through_the_cache(s3: BucketFixture) -> None:
    for name in ["a", "b"]:
        s3.fs.pipe_file(s3.path(name), DATA * 5)
    urls = [s3.url("a"), s3.url("b")]
    medmask.io.head_cache.enable()
    s3.server.latency = 0.05
    s3.log.clear()
    assert read_heads(urls, s3.storage_options) == [(DATA * 5)[:HEAD_GUESS]] * 2
    assert sorted(_range(r) for r in s3.log.requests) == [(0, HEAD_GUESS)] * 2
    assert s3.log.max_in_flight == 2  # even two go out together
    s3.log.clear()
    assert read_heads(urls, s3.storage_options) == [(DATA * 5)[:HEAD_GUESS]] * 2
    assert s3.log.requests == []  # both kept
    whole = medmask.io.read_many(urls, s3.storage_options, max_bytes=len(DATA) * 5)
    assert whole == [DATA * 5] * 2
    assert len(s3.log.requests) == 2  # whole reads are not served from the heads
    assert medmask.io.read_many(urls[:1], s3.storage_options, max_bytes=10)[0].__class__ is (
        medmask.AllocationLimitError
    )


def test_s3_connection_pool_holds_a_batch(s3: BucketFixture) -> None:
    urls = []
    for i in range(40):
        s3.fs.pipe_file(s3.path(f"c{i}"), b"x" * 10)
        urls.append(s3.url(f"c{i}"))
    s3.server.latency = 0.05
    for options, most in [
        (s3.storage_options, medmask.io.MAX_CONCURRENCY),  # not botocore's 10
        ({**s3.storage_options, "config_kwargs": {"max_pool_connections": 4}}, 4),
    ]:
        s3.log.clear()
        assert read_heads(urls, options, max_concurrency=64) == [b"x" * 10] * 40
        # (the server may still count a request whose answer the client has already read)
        assert most // 2 < s3.log.max_in_flight <= most + 2


class _Watching(list[bytes]):
    """Pieces that look at the target's directory while they are being written."""

    seen: list[str]

    def __init__(self, pieces: list[bytes], directory: Path) -> None:
        super().__init__(pieces)
        self.directory, self.seen = directory, []

    def __iter__(self) -> Iterator[bytes]:
        self.seen = sorted(p.name for p in self.directory.iterdir())
        yield from super().__iter__()


@pytest.mark.parametrize("overwrite", [True, False])
def test_local_write_goes_through_a_hidden_temp_file(tmp_path: Path, overwrite: bool) -> None:
    pieces = _Watching([b"a", b"", b"bc"], tmp_path)
    medmask.io.write_atomic(tmp_path / "m.msk", pieces, overwrite=overwrite)
    assert len(pieces.seen) == 1
    assert re.fullmatch(r"\.m\.msk\.[^/]+\.tmp", pieces.seen[0]), pieces.seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.msk"]
    assert (tmp_path / "m.msk").read_bytes() == b"abc"
