"""Exact behaviour of the storage layer (``medmask.io``) where mutation testing found gaps:
error texts naming the file and what failed, descriptor 0, defaults, version tokens, the
conditional PUT's request, duck-typed targets and filesystems."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import re
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

import medmask
import medmask.config
import medmask.io
from medmask.io import _conditional, _errors, _local, _paths
from servers import BucketFixture

DATA = bytes(range(256)) * 64  # 16 KiB
FAR = 8 + medmask.io.MERGE_GAP + 1  # not merged with a range ending at 8


@pytest.fixture
def exact_gap() -> Iterator[None]:
    """Remote reads merged over the local gap only, as local ones: tests of exact ranges
    ``FAR`` apart (the remote default, 256 KiB, would merge them; tested on its own)."""
    with medmask.config.set(range_gap_remote=medmask.io.MERGE_GAP):
        yield


def _oserror(*args: Any, **kwargs: Any) -> Any:
    raise OSError("boom")


class _Object:
    """An fsspec OpenFile's face: a filesystem and a path."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path


# --- LocalFile / LocalLock ---------------------------------------------------------------------


def _locked(tmp_path: Path) -> tuple[Path, medmask.io.LocalLock]:
    path = tmp_path / "a.mska"
    path.write_bytes(b"0123456789")
    lock = medmask.io.LocalLock.acquire(str(path), 1.0)
    assert lock is not None
    return path, lock


@pytest.mark.parametrize(
    ("func", "call", "doing"),
    [
        ("fstat", lambda f: f.size(), "reading the size of"),
        ("pread", lambda f: f.pread(0, 1), "reading"),
        ("pwrite", lambda f: f.pwrite(b"x", 0), "writing"),
        ("fsync", lambda f: f.fsync(), "flushing to disk"),
    ],
)
def test_local_file_os_errors_name_the_file_and_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, func: str, call: Any, doing: str
) -> None:
    path, lock = _locked(tmp_path)
    monkeypatch.setattr(os, func, _oserror)
    with pytest.raises(medmask.StorageError) as info:
        call(lock.file)
    monkeypatch.undo()
    assert type(info.value) is medmask.StorageError
    assert str(info.value) == f"{path}: {doing} failed (OSError: boom)."
    assert isinstance(info.value.__cause__, OSError)
    lock.release()


def test_local_file_on_descriptor_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """Descriptor 0 is a descriptor (a process started with stdin closed gets it)."""
    lock = types.SimpleNamespace(path="p.mska", fd=0)
    file = medmask.io.LocalFile(lock)  # type: ignore[arg-type]
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        os,
        "fstat",
        lambda fd: calls.append(("fstat", fd)) or os.stat_result((0,) * 6 + (7,) + (0,) * 3),
    )
    monkeypatch.setattr(
        os, "pread", lambda fd, n, off: calls.append(("pread", fd, n, off)) or b"ab"
    )
    monkeypatch.setattr(
        os, "pwrite", lambda fd, d, off: calls.append(("pwrite", fd, bytes(d), off)) or len(d)
    )
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", fd)))
    assert file.size() == 7
    assert file.pread(3, 2) == b"ab"
    file.pwrite(b"xyz", 4)
    file.fsync()
    monkeypatch.undo()
    assert calls == [("fstat", 0), ("pread", 0, 2, 3), ("pwrite", 0, b"xyz", 4), ("fsync", 0)]
    lock.fd = -1
    with pytest.raises(medmask.StorageError) as info:
        file.pread(0, 1)
    assert str(info.value) == "p.mska: reading failed (its lock was released)."


def _lock_on(fd: int) -> medmask.io.LocalLock:
    lock = object.__new__(medmask.io.LocalLock)  # as __init__ leaves it, without flock
    lock.path, lock.fd = "p.mska", fd
    return lock


def test_local_lock_releases_descriptor_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[int] = []
    monkeypatch.setattr(os, "close", closed.append)
    lock = _lock_on(0)
    lock.release()
    assert (closed, lock.fd) == ([0], -1)
    lock.release()  # once only
    lock = _lock_on(0)
    lock.__del__()
    assert (closed, lock.fd) == ([0, 0], -1)
    lock = _lock_on(-1)
    lock.__del__()
    half = object.__new__(medmask.io.LocalLock)  # __init__ raised before setting fd
    half.__del__()
    monkeypatch.undo()
    assert closed == [0, 0]


def test_a_dropped_lock_is_released(tmp_path: Path) -> None:
    path, lock = _locked(tmp_path)
    del lock
    gc.collect()  # __del__ closes the descriptor, which releases the lock
    again = medmask.io.LocalLock.acquire(str(path), 0.0)
    assert again is not None
    again.release()


def test_lock_timeout_reached_exactly_is_not_waited_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, held = _locked(tmp_path)

    def no_sleep(seconds: float) -> None:
        raise AssertionError("slept although the deadline was reached")

    frozen = types.SimpleNamespace(monotonic=lambda: 100.0, sleep=no_sleep)
    monkeypatch.setattr(_local, "time", frozen)  # the clock stands still: now == deadline
    with pytest.raises(medmask.LockTimeoutError) as info:
        medmask.io.LocalLock.acquire(str(path), 0.0)
    assert str(info.value).startswith(f"{path}: another writer has held the archive open")
    held.release()


# --- range errors ------------------------------------------------------------------------------


class _CodedError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__("server said no")
        self.code = code


def test_range_error_by_status_code() -> None:
    assert _errors.is_range_error(_CodedError(416)) is True
    assert _errors.is_range_error(_CodedError(417)) is False
    assert _errors.is_range_error(_CodedError(404)) is False
    assert _errors.is_range_error(OSError("Range Is Not Satisfiable")) is True
    assert _errors.is_range_error(FileNotFoundError("range is not satisfiable")) is False


class _RangeRefusingFs:
    """A duck filesystem whose every read is refused as beyond the end (HTTP 416)."""

    protocol = "memory"
    async_impl = False

    def cat_file(self, path: str, start: int, end: int) -> bytes:
        raise _CodedError(416)


def test_read_past_the_end_by_status_code() -> None:
    source = medmask.io.open_source(_Object(_RangeRefusingFs(), "b/k"))
    assert source.read(10, 20) == b""


# --- file objects ------------------------------------------------------------------------------


class _EndRefused(io.BytesIO):
    """Seeks to the end fail with ``error``."""

    def __init__(self, data: bytes, error: type[Exception]) -> None:
        super().__init__(data)
        self.error = error

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == os.SEEK_END:
            raise self.error("no end")
        return super().seek(offset, whence)


@pytest.mark.parametrize("error", [OSError, ValueError, AttributeError])
def test_file_object_of_unknown_size(error: type[Exception]) -> None:
    source = medmask.io.open_source(_EndRefused(DATA[:100], error))
    assert isinstance(source, medmask.io.FileObjectSource)
    assert source.size is None
    assert source.read(90, 200) == DATA[90:100]


class _Recording(io.BytesIO):
    """Remembers the calls it gets."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls: list[tuple[str, int]] = []

    def read(self, size: int | None = -1) -> bytes:
        self.calls.append(("read", -1 if size is None else size))
        return super().read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.calls.append(("seek", offset))
        return super().seek(offset, whence)


def test_empty_range_of_a_file_object_asks_nothing() -> None:
    unsized = _EndRefused(DATA[:100], OSError)
    recording = _Recording(DATA[:100])
    source = medmask.io.FileObjectSource(recording, "r")
    recording.calls.clear()
    assert source.read(7, 7) == source.read(9, 3) == b""
    assert recording.calls == []
    assert medmask.io.open_source(unsized).read(7, 7) == b""


def test_read_many_asks_one_byte_past_the_limit() -> None:
    recording = _Recording(DATA[:200])
    out = medmask.io.read_many([recording], max_bytes=100)
    assert isinstance(out[0], medmask.AllocationLimitError)
    assert ("read", 101) in recording.calls
    assert [c for c in recording.calls if c[0] == "read"] == [("read", 101)]


# --- target kinds ------------------------------------------------------------------------------


class _FileWithPath(io.BytesIO):
    """A file object that also has a ``path`` (but no filesystem)."""

    path = "somewhere.msk"


class _ReadOnly:
    def read(self, size: int = -1) -> bytes:
        return b""


class _SeekOnly:
    def seek(self, offset: int, whence: int = 0) -> int:
        return 0


def test_target_kind_predicates(tmp_path: Path) -> None:
    opened = fsspec.open(str(tmp_path / "x"))
    buffer = io.BytesIO(b"abc")
    assert _paths.as_open_file(opened) is opened
    assert _paths.is_open_file(opened) is True
    assert _paths.as_file_object(buffer) is buffer
    assert _paths.is_file_object(buffer) is True
    for not_open in ["x.msk", buffer, _FileWithPath(b""), _Object(None, "p")]:
        assert _paths.as_open_file(not_open) is None
        assert _paths.is_open_file(not_open) is False
    for not_file in ["x.msk", opened, _ReadOnly(), _SeekOnly()]:
        assert _paths.as_file_object(not_file) is None
        assert _paths.is_file_object(not_file) is False


def test_file_object_with_a_path_is_a_file_object() -> None:
    source = medmask.io.open_source(_FileWithPath(b"abc"))
    assert isinstance(source, medmask.io.FileObjectSource)
    assert (source.name, source.read(0, 3)) == ("somewhere.msk", b"abc")


@pytest.mark.parametrize("target", [_ReadOnly(), _SeekOnly()], ids=["read-only", "seek-only"])
def test_unseekable_or_unreadable_is_no_file_object(target: Any) -> None:
    with pytest.raises(medmask.InvalidTypeError) as info:
        medmask.io.open_source(target)
    assert str(info.value) == (
        "Expected a path, URL, fsspec OpenFile or seekable binary file object. "
        f"Got {type(target).__name__}."
    )


# --- whole reads -------------------------------------------------------------------------------


def test_read_whole_names_the_target_as_given(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"x" * 20)
    url = path.as_uri()
    with pytest.raises(medmask.AllocationLimitError) as info:
        medmask.io.read_whole(url, None, 10)
    assert str(info.value) == f"{url}: larger than the 10-byte limit (max_bytes=)."


def test_read_whole_uses_the_storage_options(memory_fs: Any) -> None:
    memory_fs.pipe_file("/root/sub/d.bin", b"through dir")
    options = {"path": "/root", "target_protocol": "memory"}
    assert medmask.io.read_whole("dir://sub/d.bin", options, 100) == b"through dir"


# --- batch size of ranged reads ----------------------------------------------------------------


def _spy_cat_ranges(monkeypatch: pytest.MonkeyPatch, fs: Any) -> list[dict[str, Any]]:
    real, seen = fs.cat_ranges, []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, "cat_ranges", spy)
    return seen


@pytest.mark.usefixtures("exact_gap")
def test_batch_size_only_on_async_filesystems(
    memory_fs: Any, s3: BucketFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges = [(0, 4), (FAR, FAR + 4)]
    memory_fs.pipe_file("/b/d.bin", DATA)
    s3.fs.pipe_file(s3.path("d.bin"), DATA)
    sync_seen = _spy_cat_ranges(monkeypatch, memory_fs)
    async_seen = _spy_cat_ranges(monkeypatch, s3.fs)
    with medmask.config.set(max_concurrency=3):
        source = medmask.io.open_source(_Object(memory_fs, "/b/d.bin"))
        assert source.read_ranges(ranges) == [DATA[s:e] for s, e in ranges]
        source = medmask.io.open_source(_Object(s3.fs, s3.path("d.bin")))
        assert source.read_ranges(ranges) == [DATA[s:e] for s, e in ranges]
    assert sync_seen == [{}]
    assert async_seen == [{"batch_size": 3}]


class _PlainFs:
    """A duck filesystem without ``async_impl`` whose ``cat_ranges`` takes no options."""

    protocol = "plain"

    def cat_file(self, path: str, start: int, end: int) -> bytes:
        return DATA[start:end]

    def cat_ranges(self, paths: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
        return [DATA[s:e] for s, e in zip(starts, ends, strict=True)]


def test_duck_filesystem_without_async_impl() -> None:
    source = medmask.io.open_source(_Object(_PlainFs(), "b/k"))
    ranges = [(0, 4), (FAR, FAR + 4)]
    assert source.read_ranges(ranges) == [DATA[s:e] for s, e in ranges]


def test_async_source_reversed_range_is_empty(memory_fs: Any) -> None:
    class _NoReads:
        async def _cat_file(self, *args: Any, **kwargs: Any) -> bytes:
            raise AssertionError("an empty range was fetched")

    source = medmask.io.AsyncFsspecSource(_NoReads(), "/b/d.bin", "n", sync_fs=memory_fs)

    async def reads() -> list[bytes]:
        return [await source.read(5, 3), await source.read(5, 5)]

    assert asyncio.run(reads()) == [b"", b""]


# --- versions ----------------------------------------------------------------------------------


class _InfoFs:
    """A duck filesystem answering ``info`` (and ``cat_file``) as told."""

    def __init__(self, protocol: Any, info: Any = None, cat: Any = None) -> None:
        self.protocol, self._info, self._cat = protocol, info, cat
        self.cat_calls: list[tuple[str, int, int]] = []

    def invalidate_cache(self, path: str | None = None) -> None:
        pass

    def info(self, path: str) -> dict[str, Any]:
        if isinstance(self._info, BaseException):
            raise self._info
        return dict(self._info)

    def cat_file(self, path: str, start: int, end: int) -> bytes:
        self.cat_calls.append((path, start, end))
        if isinstance(self._cat, BaseException):
            raise self._cat
        return bytes(self._cat)


@pytest.mark.parametrize("protocol", ["s3", ("s3",), ["gs", "x"]])
def test_backend_by_protocol_string_or_sequence(protocol: Any) -> None:
    fs = _InfoFs(protocol, {"size": 3, "ETag": '"e"', "generation": "17"})
    seen = medmask.io.object_version(_Object(fs, "b/k"))
    if "s3" in protocol:
        assert seen == medmask.io.ObjectVersion(True, "etag", '"e"', 3)
    else:
        assert seen == medmask.io.ObjectVersion(True, "generation", "17", 3)
    assert fs.cat_calls == []


def test_version_check_failures_name_the_step() -> None:
    fs = _InfoFs("s3", OSError("boom"))
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.object_version(_Object(fs, "b/k"))
    assert str(info.value) == "b/k: checking the object's version failed (OSError: boom)."
    fs = _InfoFs("memory", {"size": 10}, OSError("boom"))
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.object_version(_Object(fs, "b/k"))
    assert str(info.value) == "b/k: reading failed (OSError: boom)."
    assert fs.cat_calls == [("b/k", 0, 10)]


def test_empty_object_version_reads_nothing() -> None:
    fs = _InfoFs("memory", {"size": 0}, AssertionError("read"))
    seen = medmask.io.object_version(_Object(fs, "b/k"))
    assert seen == medmask.io.ObjectVersion(True, "content", "", 0, b"")
    assert fs.cat_calls == []
    fs = _InfoFs("memory", {"size": 10 * medmask.io.COMPARED_PREFIX}, b"h")
    medmask.io.object_version(_Object(fs, "b/k"))
    assert fs.cat_calls == [("b/k", 0, medmask.io.COMPARED_PREFIX)]


def test_local_version_read_failure(tmp_path: Path) -> None:
    path = str(tmp_path / ("x" * 300))  # a name too long for the filesystem
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.object_version(path)
    assert type(info.value) is medmask.StorageError
    assert str(info.value) == (
        f"{path}: reading failed (OSError: [Errno 36] File name too long: {path!r})."
    )


def test_version_check_keeps_other_listings(s3: BucketFixture) -> None:
    """Checking a version forgets that object's cached listings only."""
    options = s3.storage_options
    s3.fs.pipe_file(s3.path("other/a.bin"), b"a")
    s3.fs.pipe_file(s3.path("v.bin"), b"v")
    folder = f"s3://{s3.bucket}/other"
    assert medmask.io.list_folder(folder, options) == [s3.url("other/a.bin")]
    assert medmask.io.object_version(s3.url("v.bin"), options).size == 1
    s3.log.clear()
    assert medmask.io.list_folder(folder, options) == [s3.url("other/a.bin")]
    assert s3.log.requests == []  # still cached


# --- conditional PUTs --------------------------------------------------------------------------


class _PutFs:
    """An S3-protocol duck filesystem recording its PUTs and answering ``answer``."""

    protocol = ("s3", "s3a")

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.puts: list[tuple[str, int, dict[str, Any]]] = []

    def pipe_file(self, path: str, data: Any, **kwargs: Any) -> Any:
        self.puts.append((path, len(data), kwargs))
        return self.answer


@pytest.mark.parametrize(
    ("answer", "etag"),
    [({"ETag": '"e1"'}, '"e1"'), ({}, ""), (None, ""), ("not a dict", "")],
    ids=["etag", "no-etag", "none", "other"],
)
def test_s3_put_request_and_answer(answer: Any, etag: str) -> None:
    fs = _PutFs(answer)
    new = medmask.io.write_atomic(_Object(fs, "b/k"), [b"mi", b"ne"], overwrite=False)
    assert new == medmask.io.ObjectVersion(True, "etag", etag, 4)
    seen = medmask.io.ObjectVersion(True, "etag", '"e0"', 4)
    medmask.io.write_atomic(_Object(fs, "b/k"), [b"mine!"], expect=seen)
    assert fs.puts == [
        ("b/k", 4, {"chunksize": 5 << 30, "IfNoneMatch": "*"}),  # one PUT, never multipart
        ("b/k", 5, {"chunksize": 5 << 30, "IfMatch": '"e0"'}),
    ]


class _Sized:
    """Stands for that many bytes (no allocation)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_largest_conditional_put() -> None:
    fs, limit = _PutFs({"ETag": '"e"'}), 5 << 30
    absent = medmask.io.ObjectVersion(False, "etag")
    put = _conditional.put_conditional
    new = put(fs, "b/k", _Sized(limit), "n", absent, False)  # type: ignore[arg-type]
    assert new == medmask.io.ObjectVersion(True, "etag", '"e"', limit)
    with pytest.raises(medmask.InvalidValueError) as info:
        put(fs, "b/k", _Sized(limit + 1), "n", absent, False)  # type: ignore[arg-type]
    assert str(info.value) == "n: 5,368,709,121 bytes exceed one conditional PUT."
    assert len(fs.puts) == 1


@pytest.mark.parametrize(("reply", "token"), [({"generation": "42"}, "42"), ({}, "")])
def test_gcs_put_generation(
    monkeypatch: pytest.MonkeyPatch, reply: dict[str, str], token: str
) -> None:
    calls: list[tuple[str, bytes, str]] = []

    def fake_put(fs: Any, path: str, data: bytes, generation: str) -> dict[str, str]:
        calls.append((path, data, generation))
        return reply

    monkeypatch.setattr(_conditional, "gcs_put", fake_put)
    fs = _InfoFs(("gs", "gcs"))
    new = medmask.io.write_atomic(_Object(fs, "b/k"), [b"mine"], overwrite=False)
    assert new == medmask.io.ObjectVersion(True, "generation", token, 4)
    seen = medmask.io.ObjectVersion(True, "generation", "7", 4)
    medmask.io.write_atomic(_Object(fs, "b/k"), [b"mine"], expect=seen)
    assert calls == [("b/k", b"mine", "0"), ("b/k", b"mine", "7")]


def _parts(body: bytes) -> list[tuple[str, bytes]]:
    """(content type, payload) of each part of a ``==0==`` multipart body."""
    assert body.endswith(b"\n--==0==--")
    out = []
    for part in (b"\n" + body[: -len(b"\n--==0==--")]).split(b"\n--==0==\n")[1:]:
        header, payload = part.split(b"\n\n", 1)
        name, value = header.decode().split(":", 1)
        assert name.lower() == "content-type"
        out.append((value.strip().lower(), payload))
    return out


def test_gcs_conditional_put_request(gcs: BucketFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = gcs.fs._call, []

    async def recording(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method.upper(), path, kwargs))
        return await real(method, path, *args, **kwargs)

    monkeypatch.setattr(gcs.fs, "_call", recording)
    target = _Object(gcs.fs, gcs.path("dir/k.bin"))
    new = medmask.io.write_atomic(target, [b"mi", b"ne"], overwrite=False)
    monkeypatch.undo()
    assert new is not None
    assert calls[0][:2] == ("POST", f"{gcs.fs._location}/upload/storage/v1/b/{gcs.bucket}/o")
    kwargs = calls[0][2]
    assert kwargs["uploadType"] == "multipart"
    assert kwargs["ifGenerationMatch"] == "0"
    assert _parts(kwargs["data"]) == [
        ("application/json; charset=utf-8", json.dumps({"name": "dir/k.bin"}).encode()),
        ("application/octet-stream", b"mine"),
    ]
    assert len(calls) == 1
    assert bytes(gcs.fs.cat_file(gcs.path("dir/k.bin"))) == b"mine"


def test_gcs_conditional_put_keeps_other_listings(gcs: BucketFixture) -> None:
    options = gcs.storage_options
    gcs.fs.pipe_file(gcs.path("other/a.bin"), b"a")
    folder = f"gs://{gcs.bucket}/other"
    assert medmask.io.list_folder(folder, options) == [gcs.url("other/a.bin")]
    medmask.io.write_atomic(gcs.url("v.bin"), [b"v"], options, overwrite=False)
    gcs.log.clear()
    assert medmask.io.list_folder(folder, options) == [gcs.url("other/a.bin")]
    assert gcs.log.requests == []  # still cached


# --- writes ------------------------------------------------------------------------------------


def test_write_local_atomic_defaults(tmp_path: Path) -> None:
    path = tmp_path / "m.msk"
    path.write_bytes(b"old")
    assert medmask.io.write_local_atomic(str(path), [b"ne", b"w"]) is None  # replaces, no lock
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.msk"]


def test_write_local_atomic_failures_name_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "m.msk")

    def pieces() -> Any:
        yield b"half"
        raise OSError("boom")

    with pytest.raises(medmask.StorageError) as info:
        medmask.io.write_local_atomic(path, pieces())
    assert str(info.value) == f"{path}: writing failed (OSError: boom)."
    monkeypatch.setattr(tempfile, "mkstemp", _oserror)
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.write_local_atomic(path, [b"x"])
    assert str(info.value) == f"{path}: creating a temporary file failed (OSError: boom)."
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_unconditional_remote_write_failure(
    memory_fs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_fs, "pipe_file", _oserror)
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.write_atomic("memory://b/x.msk", [b"x"])
    assert str(info.value) == "memory://b/x.msk: writing failed (OSError: boom)."


# --- listing and globbing ----------------------------------------------------------------------


def test_listing_failures_name_the_step(memory_fs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_fs, "ls", _oserror)
    monkeypatch.setattr(memory_fs, "glob", _oserror)
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.list_folder("memory://f")
    assert str(info.value) == "memory://f: listing failed (OSError: boom)."
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.expand_glob("memory://f/*.msk")
    assert str(info.value) == "memory://f/*.msk: listing failed (OSError: boom)."


def test_listing_entries_without_a_type_are_files(
    memory_fs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        {"name": "/f/b"},
        {"name": "/f/a", "type": "file"},
        {"name": "/f/d", "type": "directory"},
    ]
    monkeypatch.setattr(memory_fs, "ls", lambda path, detail: entries)
    assert medmask.io.list_folder("memory://f") == ["memory:///f/a", "memory:///f/b"]


def test_chained_glob_without_a_scheme_gives_urls(tmp_path: Path) -> None:
    (tmp_path / "a.msk").write_bytes(b"x")
    pattern = f"simplecache::{tmp_path}/*.msk"
    assert medmask.io.expand_glob(pattern) == [(tmp_path / "a.msk").as_uri()]
    assert medmask.io.expand_glob(f"{tmp_path}/*.msk") == [str(tmp_path / "a.msk")]


# --- reads served from a file's first read -----------------------------------------------------


class _RangeLog:
    """A byte source over ``data`` that records every ``read_ranges`` call."""

    name = "logged.msk"

    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)
        self.calls: list[list[tuple[int, int]]] = []

    def read(self, start: int, end: int) -> bytes:
        raise AssertionError("read_ranges_after_head reads ranges only")

    def read_ranges(self, ranges: Any) -> list[bytes]:
        self.calls.append(list(ranges))
        return [self.data[start:end] for start, end in ranges]

    def close(self) -> None:
        pass


def test_ranges_after_a_short_head_need_no_request() -> None:
    data = bytes(range(256)) * 4
    source = _RangeLog(data)
    got = medmask.io.read_ranges_after_head(source, data[:100], [(90, 110), (5, 7), (500, 1000)])
    # a first read shorter than HEAD_GUESS is the whole file: every range is cut from it
    assert got == [data[90:100], data[5:7], data[100:100]]
    assert source.calls == []


def test_ranges_past_a_full_head_are_fetched_once_in_order() -> None:
    size = medmask.io.HEAD_GUESS + 5000
    data = bytes(i % 251 for i in range(size))
    head = data[: medmask.io.HEAD_GUESS]
    source = _RangeLog(data)
    ranges = [(size - 10, size), (3, 9), (medmask.io.HEAD_GUESS - 4, medmask.io.HEAD_GUESS + 4)]
    got = medmask.io.read_ranges_after_head(source, head, ranges)
    assert got == [data[start:end] for start, end in ranges]
    assert source.calls == [[ranges[0], ranges[2]]]  # only the ranges the head lacks
    assert medmask.io.read_ranges_after_head(source, head, [(0, 4)]) == [data[:4]]
    assert len(source.calls) == 1


@pytest.mark.parametrize(
    ("protocol", "check"),
    [
        ("s3", "etag"),
        (("s3a", "s3"), "etag"),
        ("gs", "generation"),
        ("gcs", "generation"),
        ("memory", "content"),
        ("file", "content"),
        (("abfs", "az"), "content"),
    ],
)
def test_conditional_check_by_protocol(protocol: Any, check: str) -> None:
    assert _conditional.conditional_check(_InfoFs(protocol)) == check


# --- batched prefix reads: the requests each filesystem gets -----------------------------------

HEAD = medmask.io.HEAD_GUESS


class _DuckFs:
    """A duck filesystem over ``files`` that records every request (``cat_file`` needs its
    ``start`` and ``end``); a value that is an exception is that file's error. ``async_impl``
    None: no such attribute. No ``_fs_token`` unless given."""

    protocol = "duck"

    def __init__(
        self, files: dict[str, Any], *, async_impl: bool | None = False, fail: Any = None
    ) -> None:
        self.files, self.fail, self.calls = files, fail, []
        if async_impl is not None:
            self.async_impl = async_impl

    def _blob(self, path: str, start: int, end: int) -> Any:
        data = self.files.get(path, FileNotFoundError(path))
        return data if isinstance(data, BaseException) else data[start:end]

    def cat_file(self, path: str, start: int, end: int) -> bytes:
        self.calls.append(("cat_file", path, start, end))
        blob = self._blob(path, start, end)
        if isinstance(blob, BaseException):
            raise blob
        return blob

    def cat_ranges(self, paths: Any, starts: Any, ends: Any, **kwargs: Any) -> list[Any]:
        self.calls.append(("cat_ranges", paths, starts, ends, kwargs))
        if self.fail is not None:
            raise self.fail
        return [self._blob(p, s, e) for p, s, e in zip(paths, starts, ends, strict=True)]


def _serve(monkeypatch: pytest.MonkeyPatch, **filesystems: Any) -> list[tuple[str, Any]]:
    """URLs ``name://path`` open the duck filesystem ``name``; the calls, with their options."""
    import fsspec.core

    opened: list[tuple[str, Any]] = []

    def url_to_fs(url: str, **options: Any) -> tuple[Any, str]:
        opened.append((url, options))
        protocol, path = url.split("://", 1)
        return filesystems[protocol], path

    monkeypatch.setattr(fsspec.core, "url_to_fs", url_to_fs)
    return opened


def _off() -> medmask.io.HeadCache:
    return medmask.io.HeadCache()


@pytest.mark.parametrize("async_impl", [False, None], ids=["sync", "no-async_impl"])
def test_heads_from_a_synchronous_fs_are_one_ranged_get_each(
    monkeypatch: pytest.MonkeyPatch, async_impl: bool | None
) -> None:
    """A filesystem without concurrency (or without ``async_impl``) gets plain ranged reads."""
    fs = _DuckFs({"x": DATA, "y": DATA[:10]}, async_impl=async_impl)
    _serve(monkeypatch, a=fs)
    heads = medmask.io.read_heads(["a://x", "a://y"], cache=_off())
    assert heads == [DATA, DATA[:10]]
    assert fs.calls == [("cat_file", "x", 0, HEAD), ("cat_file", "y", 0, HEAD)]


def test_heads_from_an_async_fs_go_out_in_one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"x": DATA, "y": DATA[:10], "z": DATA[:3]}
    fs = _DuckFs(files, async_impl=True)
    _serve(monkeypatch, a=fs)
    assert medmask.io.read_heads(["a://x"], cache=_off()) == [DATA]
    assert fs.calls == [("cat_file", "x", 0, HEAD)]  # one object: no batch machinery
    fs.calls.clear()
    urls = ["a://x", "a://y", "a://z"]
    heads = medmask.io.read_heads(urls, max_concurrency=2, cache=_off())
    assert heads == [DATA, DATA[:10], DATA[:3]]
    # one call keeps 2 requests in flight; errors come back as values
    options = {"on_error": "return", "batch_size": 2}
    assert fs.calls == [("cat_ranges", ["x", "y", "z"], [0] * 3, [HEAD] * 3, options)]
    fs.calls.clear()
    done: list[int] = []
    whole = medmask.io.read_many(urls, max_bytes=100, max_concurrency=2, on_done=done.append)
    assert whole[1:] == [DATA[:10], DATA[:3]]
    assert isinstance(whole[0], medmask.AllocationLimitError)
    assert fs.calls == [  # with progress reports: groups of max_concurrency
        ("cat_ranges", ["x", "y"], [0, 0], [101, 101], options),
        ("cat_file", "z", 0, 101),
    ]
    assert done == [2, 1]


def test_heads_come_from_their_own_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same path on two filesystems (no ``_fs_token``): two objects, in requests and cache."""
    one, two = _DuckFs({"k": b"one"}, async_impl=True), _DuckFs({"k": b"two"}, async_impl=True)
    _serve(monkeypatch, a=one, b=two)
    cache = medmask.io.HeadCache()
    cache.enable(10)
    assert medmask.io.read_heads(["a://k", "b://k"], cache=cache) == [b"one", b"two"]
    assert one.calls == [("cat_file", "k", 0, HEAD)]
    assert two.calls == [("cat_file", "k", 0, HEAD)]
    assert medmask.io.read_heads(["b://k"], cache=cache) == [b"two"]
    assert medmask.io.read_heads(["a://k"], cache=cache) == [b"one"]
    assert (len(one.calls), len(two.calls), cache.hits) == (1, 1, 2)


def test_batch_read_failures_name_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"x": DATA, "y": OSError("boom")}
    _serve(monkeypatch, a=_DuckFs(files, async_impl=True), s=_DuckFs(files))
    for scheme in ("a", "s"):  # per-object errors from cat_ranges and from cat_file
        heads = medmask.io.read_heads([f"{scheme}://x", f"{scheme}://y"], cache=_off())
        assert heads[0] == DATA
        assert type(heads[1]) is medmask.StorageError
        assert str(heads[1]) == f"{scheme}://y: reading failed (OSError: boom)."
    broken = _DuckFs(files, async_impl=True, fail=OSError("down"))
    _serve(monkeypatch, a=broken)
    with pytest.raises(medmask.StorageError) as info:  # the whole batch failed
        medmask.io.read_heads(["a://x", "a://y"], cache=_off())
    assert str(info.value) == "a://x: reading failed (OSError: down)."


def test_read_many_reports_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, a=_DuckFs({"x": b"remote"}))
    (tmp_path / "here.msk").write_bytes(b"local")
    done: list[int] = []
    sources = [str(tmp_path / "here.msk"), str(tmp_path / "gone.msk"), "a://x"]
    out = medmask.io.read_many(sources, max_bytes=100, on_done=done.append)
    assert out[0::2] == [b"local", b"remote"]
    assert isinstance(out[1], medmask.MaskFileNotFoundError)
    assert done == [1, 1, 1]


# --- head cache accounting ---------------------------------------------------------------------


def test_cleared_cache_has_its_whole_budget() -> None:
    cache, key = medmask.io.HeadCache(), ("t", "k")
    cache.enable(10, max_bytes=100)
    cache.put(key, b"x" * 10)
    cache.clear()
    cache.put(key, b"y" * 100)  # exactly the budget
    assert cache.get(key) == b"y" * 100


def test_ranges_off_serves_no_range_not_even_the_head() -> None:
    cache, key = medmask.io.HeadCache(), ("t", "k")
    cache.enable(10, ranges=False)
    cache.put(key, b"head")
    assert cache.get_range(key, 0, HEAD) is None  # the head's own range
    cache.put_range(key, 0, 4, b"head")
    assert cache.get_range(key, 0, 4) is None
    assert (cache.hits, cache.misses) == (0, 0)  # not looked up at all
    cache.enable(0)  # off, with ranges
    assert cache.get_range(key, 0, 4) is None
    assert (cache.hits, cache.misses) == (0, 0)


def test_disable_sets_every_limit_to_zero() -> None:
    cache = medmask.io.HeadCache()
    cache.enable(10, max_bytes=1000, ttl=5.0, ranges=True)
    cache.disable()
    limits = (cache.max_entries, cache.max_bytes, cache.ttl, cache.ranges)
    assert (cache.enabled, limits) == (False, (0, 0, 0.0, False))


def test_open_source_of_an_open_file_reads_through_the_given_cache() -> None:
    fs = _DuckFs({"k": DATA})
    cache = medmask.io.HeadCache()
    cache.enable(10)
    source = medmask.io.open_source(_Object(fs, "k"), cache=cache)
    assert source.cache is cache
    assert source.read_ranges([(0, 4)]) == source.read_ranges([(0, 4)]) == [DATA[:4]]
    assert (fs.calls, cache.hits) == ([("cat_file", "k", 0, 4)], 1)


def test_remote_write_drops_the_head_before_and_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While an object is replaced the cache serves no head of it, and a head read meanwhile
    (by another thread) is dropped once the write is done."""
    cache, fs = medmask.io.HeadCache(), _InfoFs("memory")
    cache.enable(10)
    key = medmask.io._cache.cache_key(fs, "b/k")
    cache.put(key, b"old head")
    during: list[Any] = []

    def pipe_file(path: str, data: bytes) -> None:
        during.append(cache.get(key))
        cache.put(key, b"read meanwhile")

    fs.pipe_file = pipe_file  # type: ignore[attr-defined]
    medmask.io.write_atomic(_Object(fs, "b/k"), [b"new"], cache=cache)
    assert during == [None]
    assert cache.get(key) is None


# --- sources -----------------------------------------------------------------------------------


class _AsyncDuckFs:
    async_impl = True

    async def _cat_ranges(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("boom")


@pytest.mark.usefixtures("exact_gap")
def test_range_batch_failures_name_the_step() -> None:
    ranges = [(0, 4), (FAR, FAR + 4)]
    source = medmask.io.open_source(_Object(_DuckFs({}, fail=OSError("boom")), "b/k"))
    with pytest.raises(medmask.StorageError) as info:
        source.read_ranges(ranges)
    assert str(info.value) == "b/k: reading failed (OSError: boom)."
    reader = medmask.io.AsyncFsspecSource(_AsyncDuckFs(), "b/k", "n", cache=_off())
    with pytest.raises(medmask.StorageError) as info:
        asyncio.run(reader.read_ranges(ranges))
    assert str(info.value) == "n: reading failed (OSError: boom)."


def test_open_source_async_by_async_impl(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, fast = _DuckFs({"k": DATA}, async_impl=None), _DuckFs({"k": DATA}, async_impl=True)
    opened = _serve(monkeypatch, p=plain, f=fast)
    source = medmask.io.open_source_async("p://k")
    assert isinstance(source, medmask.io.ThreadedSource)  # no async_impl: a worker thread
    assert asyncio.run(source.read(0, 4)) == DATA[:4]
    opened.clear()
    source = medmask.io.open_source_async("f://k")
    assert isinstance(source, medmask.io.AsyncFsspecSource)
    # the coroutines come from an asynchronous instance of the filesystem
    assert opened == [("f://k", {}), ("f://k", {"asynchronous": True})]


def test_read_all_asks_one_byte_past_the_limit() -> None:
    recording = _Recording(DATA[:200])
    with pytest.raises(medmask.AllocationLimitError):
        medmask.io.read_whole(recording, None, 100)
    assert [c for c in recording.calls if c[0] == "read"] == [("read", 101)]


def _too_long(tmp_path: Path) -> tuple[str, str]:
    path = str(tmp_path / ("x" * 300))  # a name too long for the filesystem
    return path, f"OSError: [Errno 36] File name too long: {path!r}"


def test_open_failures_name_the_step(tmp_path: Path) -> None:
    path, detail = _too_long(tmp_path)
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.LocalSource(path)
    assert str(info.value) == f"{path}: opening failed ({detail})."
    with pytest.raises(medmask.StorageError) as info:
        medmask.io.LocalLock.acquire(path, 0.0)
    assert str(info.value) == f"{path}: opening for writing failed ({detail})."


def test_local_source_descriptors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source that failed to open closes nothing; descriptor 0 is closed, once."""
    closed: list[int] = []
    monkeypatch.setattr(os, "close", closed.append)
    half = object.__new__(medmask.io.LocalSource)
    with pytest.raises(medmask.MaskFileNotFoundError):
        half.__init__(str(tmp_path / "gone.msk"))  # type: ignore[misc]
    half.close()
    assert closed == []
    zero = object.__new__(medmask.io.LocalSource)
    zero._fd = 0
    zero.close()
    zero.close()
    monkeypatch.undo()
    assert closed == [0]


def test_local_reads_make_only_the_system_calls_they_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.msk"
    path.write_bytes(b"")
    source = medmask.io.LocalSource(str(path))
    path.write_bytes(b"0123456789")  # grown since it was opened at 0 bytes
    assert source.read(0, 1) == b"0"
    assert source.size == 10  # re-checked
    calls: list[str] = []
    real_fstat, real_pread = os.fstat, os.pread
    monkeypatch.setattr(os, "fstat", lambda fd: calls.append("fstat") or real_fstat(fd))
    monkeypatch.setattr(os, "pread", lambda *a: calls.append("pread") or real_pread(*a))
    assert source.read(0, 10) == b"0123456789"
    assert calls == ["pread"]  # within the known size: no re-check
    assert source.read(4, 4) == source.read(10, 10) == source.read(12, 20) == b""
    assert calls == ["pread", "fstat"]  # empty ranges read nothing (past the end: re-checked)
    monkeypatch.undo()
    source.close()


# --- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "local"),
    [
        ("file", True),
        ("local", True),
        (("file", "local"), True),
        (["local"], True),
        ("memory", False),
        ("filecache", False),  # a string holding "file" is not "file"
        (("s3", "s3a"), False),
    ],
)
def test_open_file_on_a_local_fs_is_a_local_path(protocol: Any, local: bool) -> None:
    opened = _Object(_InfoFs(protocol), "/d/m.msk")
    assert medmask.io.local_path(opened) == ("/d/m.msk" if local else None)


def test_fsspec_open_local_file_reads_with_pread(tmp_path: Path) -> None:
    (tmp_path / "m.msk").write_bytes(b"abc")
    source = medmask.io.open_source(fsspec.open(str(tmp_path / "m.msk")))
    assert isinstance(source, medmask.io.LocalSource)
    assert source.read(0, 3) == b"abc"
    source.close()


def test_chained_url_is_not_a_local_path(tmp_path: Path) -> None:
    assert medmask.io.local_path(f"simplecache::{tmp_path}/m.msk") is None


@pytest.mark.parametrize(
    ("url", "options"),
    [("s3a://b/k", {}), ("s3://b/dir/x://y.msk", {}), ("memory://b/s3://k", None)],
)
def test_s3_urls_get_the_connection_pool(
    monkeypatch: pytest.MonkeyPatch, url: str, options: Any
) -> None:
    opened = _serve(monkeypatch, s3a=None, s3=None, memory=None)
    _paths.url_to_fs(url, None)
    pool = {"config_kwargs": {"max_pool_connections": medmask.config.get().max_concurrency}}
    assert opened == [(url, pool if options is not None else {})]


def test_filesystem_failures_name_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec.core

    monkeypatch.setattr(fsspec.core, "url_to_fs", _oserror)
    with pytest.raises(medmask.StorageError) as info:
        _paths.url_to_fs("x://y", None)
    assert str(info.value) == "x://y: opening the filesystem failed (OSError: boom)."


@pytest.mark.parametrize(
    ("target", "suffix"),
    [
        ("https://h/a.msk?sig=x?y", ".msk"),
        ("s3://b/data.BOX", ".box"),
        ("root/cases.v2/scan", ""),
        ("case.001.msk", ".msk"),
    ],
)
def test_name_suffix_of_the_last_component(target: str, suffix: str) -> None:
    assert medmask.io.name_suffix(target) == suffix


def test_renamed_version_head_message() -> None:
    message = (
        "medmask.io.VERSION_HEAD is now medmask.io.COMPARED_PREFIX; the old name goes in "
        "medmask 0.4."
    )
    with pytest.warns(DeprecationWarning, match=f"^{re.escape(message)}$"):
        assert medmask.io.VERSION_HEAD == 4096


def test_file_object_write_failure_names_the_step() -> None:
    class _Unwritable:
        name = "out.msk"

        def write(self, data: bytes) -> int:
            raise OSError("boom")

    with pytest.raises(medmask.StorageError) as info:
        medmask.io.write_atomic(_Unwritable(), [b"x"])  # type: ignore[arg-type]
    assert str(info.value) == "out.msk: writing failed (OSError: boom)."
