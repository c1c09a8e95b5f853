"""The test servers are real HTTP servers, and the request facts medmask relies on hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import pytest

from servers import BucketFixture, RecordedRequest, RequestLog

DATA = bytes(range(256)) * 4  # 1 KiB, every byte position distinguishable mod 256

S3_OPTION_STYLES: dict[str, Any] = {
    "endpoint_url": lambda url: {"endpoint_url": url},
    "client_kwargs": lambda url: {"client_kwargs": {"endpoint_url": url}},
}


def _put(store: BucketFixture, key: str, data: bytes = DATA) -> str:
    path = store.path(key)
    store.fs.pipe_file(path, data)
    store.log.clear()
    return path


# --- RequestLog -------------------------------------------------------------------------------


def test_request_log_helpers() -> None:
    log = RequestLog()
    log.add(RecordedRequest("GET", "/b/a.msk", range="bytes=0-9", status=206, bytes_sent=10))
    log.add(RecordedRequest("GET", "/b/c.msk", status=200, bytes_sent=5))
    log.add(RecordedRequest("HEAD", "/b/a.msk", status=200, bytes_sent=0))
    assert [r.path for r in log.gets()] == ["/b/a.msk", "/b/c.msk"]
    assert [r.path for r in log.gets("a.msk")] == ["/b/a.msk"]
    assert log.count("GET") == 2
    assert log.count("head", "a.msk") == 1
    assert log.count() == 3
    assert log.bytes_sent() == 15
    assert log.bytes_sent("GET", "c.msk") == 5
    assert "GET /b/a.msk Range: bytes=0-9 -> 206 (10 B)" in log.summary()
    log.clear()
    assert log.requests == []
    assert log.summary() == "(no requests)"


# --- S3 (moto) --------------------------------------------------------------------------------


def test_s3_server_binds_loopback(s3: BucketFixture) -> None:
    assert s3.endpoint_url.startswith("http://127.0.0.1:")
    assert s3.protocol == "s3"
    assert s3.url("a/b.msk") == f"s3://{s3.bucket}/a/b.msk"


def test_s3_bucket_is_fresh_and_log_is_cleared(s3: BucketFixture) -> None:
    assert s3.log.requests == []
    assert s3.fs.ls(s3.bucket, detail=False) == []
    assert s3.log.count("GET", f"/{s3.bucket}") == 1  # a ListObjectsV2


def test_s3_log_records_write(s3: BucketFixture) -> None:
    s3.fs.pipe_file(s3.path("w.bin"), DATA)
    puts = s3.log.filter("PUT", f"/{s3.bucket}/w.bin")
    assert len(puts) == 1, s3.log.summary()
    assert puts[0].status == 200


def test_s3_ranged_cat_file_is_one_ranged_get(s3: BucketFixture) -> None:
    path = _put(s3, "obj.bin")
    assert s3.fs.cat_file(path, start=10, end=20) == DATA[10:20]
    requests = s3.log.requests
    assert len(requests) == 1, s3.log.summary()
    (get,) = requests
    assert get.method == "GET"
    assert get.path == f"/{s3.bucket}/obj.bin"
    assert get.range == "bytes=10-19"
    assert get.status == 206
    assert get.bytes_sent == 10
    assert s3.log.bytes_sent() == 10


def test_s3_whole_cat_file_sends_head_then_get(s3: BucketFixture) -> None:
    # s3fs (max_concurrency > 1 by default) asks for the size first, then GETs the object.
    path = _put(s3, "obj.bin")
    assert s3.fs.cat_file(path) == DATA
    assert [r.method for r in s3.log.requests] == ["HEAD", "GET"], s3.log.summary()
    assert s3.log.gets()[0].range is None
    assert s3.log.bytes_sent("GET") == len(DATA)
    assert s3.log.bytes_sent("HEAD") == 0


def test_s3_cat_ranges_is_one_get_per_range(s3: BucketFixture) -> None:
    path = _put(s3, "obj.bin")
    starts, ends = [0, 100, 110], [10, 110, 300]  # adjacent ranges are NOT merged
    expected = [DATA[s:e] for s, e in zip(starts, ends, strict=True)]
    assert s3.fs.cat_ranges([path] * 3, starts, ends) == expected
    gets = s3.log.gets("obj.bin")
    assert len(s3.log.requests) == len(gets) == 3, s3.log.summary()
    assert sorted(r.range or "" for r in gets) == sorted(
        f"bytes={s}-{e - 1}" for s, e in zip(starts, ends, strict=True)
    )
    assert s3.log.bytes_sent() == 10 + 10 + 190


@pytest.mark.parametrize("style", list(S3_OPTION_STYLES))
def test_s3_storage_options_reach_the_server(s3: BucketFixture, style: str) -> None:
    path = _put(s3, "via-url.bin")
    options = {"key": "testing", "secret": "testing", **S3_OPTION_STYLES[style](s3.endpoint_url)}
    fs, fs_path = fsspec.core.url_to_fs(s3.url("via-url.bin"), **options)
    assert fs_path == path
    assert fs.cat_file(fs_path, start=1, end=4) == DATA[1:4]
    assert [(r.method, r.range) for r in s3.log.requests] == [("GET", "bytes=1-3")]


def test_s3_fixture_storage_options(s3: BucketFixture) -> None:
    path = _put(s3, "via-url.bin")
    fs, fs_path = fsspec.core.url_to_fs(s3.url("via-url.bin"), **s3.storage_options)
    assert fs_path == path
    assert s3.log.requests == []  # building the filesystem sends nothing
    with fsspec.open(s3.url("via-url.bin"), "rb", **s3.storage_options) as f:
        assert f.read() == DATA
    assert fs.exists(fs_path)
    assert s3.log.count("HEAD", "via-url.bin") >= 1
    assert s3.log.bytes_sent("GET", "via-url.bin") == len(DATA)


def test_s3_missing_object_is_file_not_found(s3: BucketFixture) -> None:
    with pytest.raises(FileNotFoundError):
        s3.fs.cat_file(s3.path("nope.bin"), start=0, end=4)
    assert s3.log.count("GET", "nope.bin") == 1
    assert s3.log.gets("nope.bin")[0].status == 404


# --- GCS (fake-gcs-server) --------------------------------------------------------------------


def test_gcs_server_binds_loopback(gcs: BucketFixture) -> None:
    assert gcs.endpoint_url.startswith("http://127.0.0.1:")
    assert gcs.url("a/b.msk") == f"gs://{gcs.bucket}/a/b.msk"
    assert type(gcs.fs).__module__ == "gcsfs.core"  # not the gRPC-probing extended class


def test_gcs_bucket_is_fresh_and_log_is_cleared(gcs: BucketFixture) -> None:
    assert gcs.log.requests == []
    assert gcs.fs.ls(gcs.bucket, detail=False) == []
    assert gcs.log.count("GET", f"/b/{gcs.bucket}/o") >= 1


def test_gcs_ranged_cat_file_is_one_get(gcs: BucketFixture) -> None:
    path = _put(gcs, "dir/obj.bin")
    assert gcs.fs.cat_file(path, start=10, end=20) == DATA[10:20]
    requests = gcs.log.requests
    assert len(requests) == 1, gcs.log.summary()
    (get,) = requests
    assert get.method == "GET"
    assert get.path == f"/download/storage/v1/b/{gcs.bucket}/o/dir/obj.bin"
    assert "alt=media" in get.query
    assert get.status == 206  # the server honoured a Range header (it does not log its value)


def test_gcs_cat_ranges_is_one_get_per_range(gcs: BucketFixture) -> None:
    path = _put(gcs, "obj.bin")
    starts, ends = [0, 100, 500], [10, 110, 1024]
    expected = [DATA[s:e] for s, e in zip(starts, ends, strict=True)]
    assert gcs.fs.cat_ranges([path] * 3, starts, ends) == expected
    assert [(r.method, r.status) for r in gcs.log.requests] == [("GET", 206)] * 3


def test_gcs_whole_cat_file_is_one_get(gcs: BucketFixture) -> None:
    path = _put(gcs, "obj.bin")
    assert gcs.fs.cat_file(path) == DATA
    assert [(r.method, r.status) for r in gcs.log.requests] == [("GET", 200)], gcs.log.summary()


def test_gcs_storage_options_reach_the_server(gcs: BucketFixture) -> None:
    path = _put(gcs, "via-url.bin")
    fs, fs_path = fsspec.core.url_to_fs(gcs.url("via-url.bin"), **gcs.storage_options)
    assert fs_path == path
    assert fs.cat_file(fs_path, start=1, end=4) == DATA[1:4]
    assert gcs.log.count("GET", "via-url.bin") == 1, gcs.log.summary()


def test_gcs_missing_object_is_file_not_found(gcs: BucketFixture) -> None:
    with pytest.raises(FileNotFoundError):
        gcs.fs.cat_file(gcs.path("nope.bin"), start=0, end=4)
    assert [r.status for r in gcs.log.gets("nope.bin")] == [404]


# --- local ------------------------------------------------------------------------------------


@pytest.mark.parametrize("round_", [1, 2])
def test_memory_fs_is_clean(memory_fs: Any, round_: int) -> None:
    assert memory_fs.ls("/", detail=False) == []
    with fsspec.open(f"memory://t/{round_}.bin", "wb") as f:
        f.write(DATA)
    assert memory_fs.cat_file(f"/t/{round_}.bin") == DATA


def test_shared_data(shared_data: Path) -> None:
    assert (shared_data / "totalseg" / "multilabel_42.nii.gz").is_file()
