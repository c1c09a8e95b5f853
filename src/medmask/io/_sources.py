"""Byte sources: random-access reads from a local file, an fsspec object or a file object,
blocking or from coroutines.

Remote reads are exact byte ranges (``cat_file(path, start=, end=)``); adjacent ranges are
merged and several ranges go out concurrently (``cat_ranges``). Nothing here reads through an
fsspec file object, whose default read-ahead block would fetch 50 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol

from ..config import get as get_config
from ..errors import AllocationLimitError, InvalidTypeError, MaskFileNotFoundError, MedmaskError
from ._cache import HeadCache, Key, cache_key, or_default
from ._errors import is_range_error, storage_error, translated
from ._paths import (
    Target,
    as_file_object,
    as_open_file,
    is_local_fs,
    is_remote_fs,
    local_path,
    source_name,
    url_to_fs,
)
from ._ranges import merge_gap, merge_ranges, split_by_head, split_merged
from ._versions import ObjectChangedError, read_versioned, supports_versions

__all__ = [
    "AsyncByteSource",
    "AsyncFsspecSource",
    "ByteSource",
    "FileObjectSource",
    "FsspecSource",
    "LocalSource",
    "ThreadedSource",
    "open_source",
    "open_source_async",
    "read_all",
    "read_ranges_after_head",
    "read_whole",
]


class ByteSource(Protocol):
    """Random-access reads from one file or object."""

    name: str
    #: File size in bytes when known without an extra request, else None.
    size: int | None

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; fewer at the end of the file."""
        ...

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Bytes of each ``[start, end)`` range (merged into fewer requests where adjacent)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


class AsyncByteSource(Protocol):
    """Random-access reads from one file or object, without blocking an event loop."""

    name: str
    size: int | None

    async def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; fewer at the end of the file."""
        ...

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Bytes of each ``[start, end)`` range (adjacent ones merged into one request)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


class _RangeReader:
    name: str
    size: int | None = None
    #: whether a request costs a round trip (it picks the merge gap: :func:`merge_gap`)
    remote = False

    def read(self, start: int, end: int) -> bytes:
        raise NotImplementedError

    def _read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.read(s, e) for s, e in ranges]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        merged = merge_ranges(ranges, merge_gap(self.remote))
        return split_merged(ranges, merged, self._read_many(merged))

    def close(self) -> None:
        pass


class LocalSource(_RangeReader):
    """A local file read with ``os.pread``."""

    def __init__(self, path: str) -> None:
        self.name = path
        self._fd = -1
        with translated(path, "opening"):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        if os.path.isdir(path):
            os.close(fd)
            raise MaskFileNotFoundError(f"{path}: is a directory, not a file.")
        self._fd = fd
        self.size = os.fstat(fd).st_size

    def read(self, start: int, end: int) -> bytes:
        with translated(self.name, "reading"):
            size = self.size or 0
            if end > size:  # re-check: the file may have grown since it was opened
                size = self.size = os.fstat(self._fd).st_size
            # clamp to the file: a hostile index may ask for 2**63 offsets or terabyte lengths
            end = min(end, size)
            if end <= start:
                return b""
            return os.pread(self._fd, end - start, start)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __reduce__(self) -> tuple[Any, ...]:
        return (LocalSource, (self.name,))  # a copy opens its own descriptor

    def __del__(self) -> None:
        self.close()


class FsspecSource(_RangeReader):
    """An object on any fsspec filesystem, read with exact ranged requests.

    Ranges are served from and kept in ``cache`` (None: the process's ``head_cache``), which
    :func:`medmask.reader.read_directory` also uses for the object's head.

    ``pinned`` (S3 only, else ignored): every read also learns the object's version (its
    ETag); the first one read is :attr:`version`. After :meth:`expect_version` (a head kept
    from an earlier read), a read that finds another version raises
    :class:`ObjectChangedError` rather than return bytes of another object; otherwise the
    chunks' checksums tell (as for every source).
    """

    def __init__(
        self,
        fs: Any,
        path: str,
        name: str,
        *,
        cache: HeadCache | None = None,
        pinned: bool = False,
    ) -> None:
        self.fs, self.path, self.name = fs, path, name
        self.size = None  # unknown without an extra request
        self.remote = is_remote_fs(fs)
        self.cache_key: Key | None = None if is_local_fs(fs) else cache_key(fs, path)
        self._cache = cache  # None, not the default instance itself: sources pickle
        self.pinned = pinned and supports_versions(fs)
        #: the object's version (S3 ETag) its reads found, or the one they must find
        self.version: str | None = None
        #: whether a read checked :attr:`version` against the store
        self.confirmed = False
        self._expected = False

    @property
    def cache(self) -> HeadCache:
        """The :class:`HeadCache` this source reads through."""
        return or_default(self._cache)

    def read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if self.pinned:
            return self._read_versioned([(start, end)])[0]
        try:
            data = self.fs.cat_file(self.path, start=start, end=end)
        except Exception as exc:
            if is_range_error(exc):  # start at or beyond the end: nothing there
                return b""
            raise storage_error(exc, self.name, "reading", fs=self.fs, path=self.path) from exc
        return bytes(data)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        cache = self.cache
        kept, missing = cache.kept_ranges(self.cache_key, ranges)
        fetched = super().read_ranges(missing) if missing else []
        return cache.keep_fetched(self.cache_key, ranges, kept, missing, fetched)

    def _read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if len(ranges) == 1:
            return [self.read(*ranges[0])]
        if self.pinned:
            return self._read_versioned(ranges)
        with translated(self.name, "reading", fs=self.fs, path=self.path):
            blobs = self.fs.cat_ranges(
                [self.path] * len(ranges),
                [s for s, _ in ranges],
                [e for _, e in ranges],
                **_batch_option(self.fs),
            )
        return _blobs_or_raise(blobs, self.name, self.fs, self.path)

    def _read_versioned(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        batch = get_config().max_concurrency
        out = []
        for answer in read_versioned(self.fs, self.path, ranges, batch=batch):
            if isinstance(answer, BaseException):
                if is_range_error(answer):  # start at or beyond the end: nothing there
                    out.append(b"")
                    continue
                raise storage_error(
                    answer, self.name, "reading", fs=self.fs, path=self.path
                ) from answer
            data, version = answer
            self._check_version(version)
            out.append(data)
        return out

    def expect_version(self, version: str) -> None:
        """Reads must find the object at ``version`` (the ETag of a head read earlier)."""
        self.version, self._expected, self.confirmed = version, True, False

    def _check_version(self, version: str) -> None:
        if not version:
            return
        if self.version is None:
            self.version = version
        elif version != self.version:
            if self._expected:
                raise ObjectChangedError(
                    f"{self.name}: the object was replaced since its head was read (ETag "
                    f"{self.version}, now {version}); open it again."
                )
            return  # read at open: the checksums of the directory refuse other bytes
        self.confirmed = True

    def confirm(self) -> None:
        """Check with a one-byte read that the object is still at :attr:`version`
        (:class:`ObjectChangedError` if not)."""
        self._read_versioned([(0, 1)])


class FileObjectSource(_RangeReader):
    """A seekable binary file object (not closed by us)."""

    def __init__(self, fileobj: BinaryIO, name: str) -> None:
        self.fileobj, self.name = fileobj, name
        self._lock = threading.Lock()
        self.size = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.size = int(fileobj.seek(0, os.SEEK_END))

    def read(self, start: int, end: int) -> bytes:
        if self.size is not None:
            end = min(end, self.size)  # never ask a file object for a hostile length
        if end <= start:
            return b""
        with self._lock, translated(self.name, "reading"):
            self.fileobj.seek(start)
            data = self.fileobj.read(end - start)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidTypeError(
                f"{self.name}: expected a binary file object. Got {type(data).__name__} reads."
            )
        return bytes(data)


class ThreadedSource:
    """An :class:`AsyncByteSource` over a blocking source: each read runs in a worker thread."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.name = source.name
        self.size = source.size

    async def read(self, start: int, end: int) -> bytes:
        return await asyncio.to_thread(self.source.read, start, end)

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return await asyncio.to_thread(self.source.read_ranges, ranges)

    def close(self) -> None:
        self.source.close()


class AsyncFsspecSource:
    """An object on an async fsspec filesystem (s3fs, gcsfs, http), read with its coroutines.

    The filesystem instance must be an ``asynchronous=True`` one created in the thread of the
    event loop that awaits these reads (fsspec caches such instances per thread). Ranges go
    through ``cache`` as for :class:`FsspecSource`.
    """

    def __init__(
        self,
        fs: Any,
        path: str,
        name: str,
        sync_fs: Any = None,
        *,
        cache: HeadCache | None = None,
    ) -> None:
        self.fs, self.path, self.name = fs, path, name
        self.size: int | None = None
        self.cache_key: Key | None = cache_key(sync_fs if sync_fs is not None else fs, path)
        self._cache = cache
        self.remote = is_remote_fs(sync_fs if sync_fs is not None else fs)
        # a blocking twin of fs, to tell a missing bucket from a missing object on errors
        self._sync_fs = sync_fs

    @property
    def cache(self) -> HeadCache:
        """The :class:`HeadCache` this source reads through."""
        return or_default(self._cache)

    async def read(self, start: int, end: int) -> bytes:
        return (await self.read_ranges([(start, end)]))[0]

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        cache = self.cache
        kept, missing = cache.kept_ranges(self.cache_key, ranges)
        fetched = await self._fetch_ranges(missing)
        return cache.keep_fetched(self.cache_key, ranges, kept, missing, fetched)

    async def _fetch(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            data = await self.fs._cat_file(self.path, start=start, end=end)
        except Exception as exc:
            if is_range_error(exc):
                return b""
            raise self._error(exc) from exc
        return bytes(data)

    async def _fetch_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        merged = merge_ranges(ranges, merge_gap(self.remote))
        if len(merged) == 1:
            return split_merged(ranges, merged, [await self._fetch(*merged[0])])
        try:
            blobs = await self.fs._cat_ranges(
                [self.path] * len(merged),
                [s for s, _ in merged],
                [e for _, e in merged],
                batch_size=get_config().max_concurrency,
            )
        except Exception as exc:
            raise self._error(exc) from exc
        return split_merged(
            ranges, merged, _blobs_or_raise(blobs, self.name, self._sync_fs, self.path)
        )

    def _error(self, exc: BaseException) -> MedmaskError:
        return storage_error(exc, self.name, "reading", fs=self._sync_fs, path=self.path)

    def close(self) -> None:
        pass


def open_source(
    source: Target,
    storage_options: dict[str, Any] | None = None,
    *,
    cache: HeadCache | None = None,
    pinned: bool = False,
) -> ByteSource:
    """Open a path, URL, fsspec ``OpenFile`` or binary file object for ranged reads; remote
    ones read through ``cache`` (None: the process's ``head_cache``); ``pinned``: see
    :class:`FsspecSource`."""
    path = local_path(source, storage_options)
    if path is not None:
        return LocalSource(path)
    if isinstance(source, str):
        fs, fs_path = url_to_fs(source, storage_options)
        return FsspecSource(fs, fs_path, source, cache=cache, pinned=pinned)
    opened = as_open_file(source)
    if opened is not None:
        name = source_name(opened)
        return FsspecSource(opened.fs, opened.path, name, cache=cache, pinned=pinned)
    file = as_file_object(source)
    if file is not None:
        return FileObjectSource(file, source_name(file))
    raise InvalidTypeError(
        "Expected a path, URL, fsspec OpenFile or seekable binary file object. "
        f"Got {type(source).__name__}."
    )


def open_source_async(
    source: Target,
    storage_options: dict[str, Any] | None = None,
    *,
    cache: HeadCache | None = None,
) -> AsyncByteSource:
    """Open a path or URL for reads from a coroutine: the filesystem's own coroutines where it
    is async, a worker thread otherwise. Call it in the thread of the event loop that will
    await the reads. Remote ones read through ``cache`` (None: the process's ``head_cache``)."""
    if isinstance(source, str) and local_path(source, storage_options) is None:
        fs, path = url_to_fs(source, storage_options)
        if getattr(fs, "async_impl", False):
            async_fs = _async_twin(fs, source, storage_options)
            return AsyncFsspecSource(async_fs, path, source, sync_fs=fs, cache=cache)
    return ThreadedSource(open_source(source, storage_options, cache=cache))


#: Async filesystems per event loop and filesystem token: fsspec's own instance cache is per
#: thread, so a second ``asyncio.run`` in a thread would get an instance bound to the first,
#: closed loop ("Event loop is closed").
_ASYNC_FS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
_ASYNC_FS_LOCK = threading.Lock()


def _async_twin(fs: Any, source: str, storage_options: dict[str, Any] | None) -> Any:
    """An ``asynchronous=True`` instance of ``fs``'s filesystem for the running event loop
    (one per loop and options), or fsspec's cached one outside a running loop."""
    options = {**(storage_options or {}), "asynchronous": True}
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return url_to_fs(source, options)[0]
    token = str(getattr(fs, "_fs_token", id(fs)))
    with _ASYNC_FS_LOCK:
        known = _ASYNC_FS.setdefault(loop, {})
        if token not in known:
            known[token] = url_to_fs(source, {**options, "skip_instance_cache": True})[0]
        return known[token]


def read_whole(source: Target, storage_options: dict[str, Any] | None, limit: int) -> bytes:
    """The whole content of ``source``; :class:`AllocationLimitError` if above ``limit`` bytes."""
    byte_source = open_source(source, storage_options)
    try:
        return read_all(byte_source, limit, name=source_name(source))
    finally:
        byte_source.close()


def read_all(byte_source: ByteSource, limit: int, *, name: str | None = None) -> bytes:
    """The whole content of an open source; :class:`AllocationLimitError` (naming ``name``,
    default the source's) if above ``limit`` bytes."""
    data = byte_source.read(0, limit + 1)
    if len(data) > limit:
        raise AllocationLimitError(
            f"{name or byte_source.name}: larger than the {limit:,}-byte limit (max_bytes=)."
        )
    return data


def _blobs_or_raise(blobs: Sequence[Any], name: str, fs: Any, path: str) -> list[bytes]:
    """The bytes of a ``cat_ranges(on_error="return")`` answer: a range beyond the end is
    empty, any other error raised as a :class:`StorageError`."""
    out = []
    for blob in blobs:
        if isinstance(blob, Exception):
            if not is_range_error(blob):
                raise storage_error(blob, name, "reading", fs=fs, path=path) from blob
            blob = b""
        out.append(bytes(blob))
    return out


def _batch_option(fs: Any) -> dict[str, int]:
    """At most :data:`MAX_CONCURRENCY` requests in flight (async filesystems; a synchronous
    ``cat_ranges`` would hand the option on to ``open``)."""
    return {"batch_size": get_config().max_concurrency} if getattr(fs, "async_impl", False) else {}


def read_ranges_after_head(
    source: ByteSource, head: bytes, ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """Bytes of ``ranges``, served from ``head`` (the file's first read) where it covers them,
    the others fetched merged."""
    found, missing = split_by_head(head, ranges)
    fetched = iter(source.read_ranges(missing) if missing else [])
    return [next(fetched) if block is None else block for block in found]
