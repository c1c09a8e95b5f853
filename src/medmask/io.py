"""The one place that turns paths, URLs and file objects into byte reads and writes.

Remote reads are exact byte ranges (``cat_file(path, start=, end=)``); adjacent ranges are
merged and several ranges go out concurrently (``cat_ranges``). Nothing here reads through an
fsspec file object, whose default read-ahead block would fetch 50 MiB.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal, Protocol

from .config import Config
from .config import get as get_config
from .errors import (
    AllocationLimitError,
    ConcurrentModificationError,
    InvalidTypeError,
    InvalidValueError,
    LockTimeoutError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    MedmaskError,
    StorageError,
    StoragePermissionError,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, compare-before-commit only
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "HEAD_GUESS",
    "MAX_CONCURRENCY",
    "AsyncByteSource",
    "ByteSource",
    "HeadCache",
    "LocalLock",
    "ObjectVersion",
    "Target",
    "expand_glob",
    "head_cache",
    "list_folder",
    "local_path",
    "merge_ranges",
    "name_suffix",
    "object_version",
    "open_source",
    "open_source_async",
    "read_all",
    "read_heads",
    "read_many",
    "read_ranges_after_head",
    "read_whole",
    "source_name",
    "split_by_head",
    "storage_error",
    "stored_size",
    "write_atomic",
]

#: First read of a file: header, metadata and index usually fit.
HEAD_GUESS = 64 << 10
#: Defaults of :mod:`medmask.config`'s ``range_gap`` (ranges closer than this are fetched as
#: one request), ``range_block`` (larger merged reads are split, so that they go out
#: concurrently) and ``max_concurrency`` (requests in flight for batched reads).
MERGE_GAP: Final = Config.range_gap
MERGE_MAX: Final = Config.range_block
MAX_CONCURRENCY: Final = Config.max_concurrency

Target = str | os.PathLike[str] | BinaryIO | Any


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


def merge_ranges(
    ranges: Iterable[tuple[int, int]], gap: int | None = None, max_size: int | None = None
) -> list[tuple[int, int]]:
    """Sort ranges and merge those that overlap or lie within ``gap`` bytes of each other, as
    long as the merged range stays within ``max_size`` bytes (a range alone may exceed it).
    Both default to :mod:`medmask.config`'s ``range_gap`` and ``range_block``."""
    settings = get_config()
    gap = settings.range_gap if gap is None else gap
    max_size = settings.range_block if max_size is None else max_size
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        near = bool(merged) and start <= merged[-1][1] + gap
        if near and (
            start < merged[-1][1] or max(merged[-1][1], end) - merged[-1][0] <= max_size
        ):  # overlapping ranges always merge: each range must lie in one merged range
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            continue
        merged.append((start, end))
    return merged


def _split(
    ranges: Sequence[tuple[int, int]], merged: Sequence[tuple[int, int]], blobs: Sequence[bytes]
) -> list[bytes]:
    out = []
    for start, end in ranges:
        for (m_start, m_end), blob in zip(merged, blobs, strict=True):
            if m_start <= start and end <= m_end:
                out.append(blob[start - m_start : end - m_start])
                break
    return out


class _RangeReader:
    name: str
    size: int | None = None

    def read(self, start: int, end: int) -> bytes:
        raise NotImplementedError

    def _read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.read(s, e) for s, e in ranges]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        merged = merge_ranges(ranges)
        return _split(ranges, merged, self._read_many(merged))

    def close(self) -> None:
        pass


def _is_range_error(exc: BaseException) -> bool:
    """A read starting at or past the end of an object (HTTP 416), as backends report it."""
    if isinstance(exc, FileNotFoundError | PermissionError):
        return False
    text = str(exc).lower()
    return getattr(exc, "code", None) == 416 or "range is not satisfiable" in text


def _is_permission_error(exc: BaseException) -> bool:
    """Access denied or missing credentials (botocore's NoCredentialsError is no OSError)."""
    if isinstance(exc, PermissionError) or getattr(exc, "code", None) in (401, 403):
        return True
    return any(
        "Credential" in type(e).__name__ or "AccessDenied" in type(e).__name__
        for e in (exc, exc.__cause__)
        if e is not None
    )


def storage_error(exc: BaseException, name: str, doing: str) -> MedmaskError:
    """The medmask error for a backend exception ``exc`` raised while ``doing`` on ``name``.

    Raise it ``from exc`` so the backend's own exception stays chained as the cause.
    """
    if isinstance(exc, MedmaskError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return MaskFileNotFoundError(f"{name}: no such file or object.")
    if isinstance(exc, IsADirectoryError):
        return MaskFileNotFoundError(f"{name}: is a directory, not a file.")
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if _is_permission_error(exc):
        return StoragePermissionError(f"{name}: access denied while {doing} ({detail}).")
    return StorageError(f"{name}: {doing} failed ({detail}).")


@contextlib.contextmanager
def _translated(name: str, doing: str) -> Iterator[None]:
    try:
        yield
    except MedmaskError:
        raise
    except Exception as exc:
        raise storage_error(exc, name, doing) from exc


class LocalSource(_RangeReader):
    """A local file read with ``os.pread``."""

    def __init__(self, path: str) -> None:
        self.name = path
        self._fd = -1
        with _translated(path, "opening"):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        if os.path.isdir(path):
            os.close(fd)
            raise MaskFileNotFoundError(f"{path}: is a directory, not a file.")
        self._fd = fd
        self.size = os.fstat(fd).st_size

    def read(self, start: int, end: int) -> bytes:
        with _translated(self.name, "reading"):
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


def _cache_key(fs: Any, path: str) -> tuple[str, str]:
    """Identity of an object for :data:`head_cache`: the filesystem's token (protocol and
    options) and the path."""
    return (str(getattr(fs, "_fs_token", id(fs))), path)


class FsspecSource(_RangeReader):
    """An object on any fsspec filesystem, read with exact ranged requests."""

    def __init__(self, fs: Any, path: str, name: str) -> None:
        self.fs, self.path, self.name = fs, path, name
        self.size = None  # unknown without an extra request
        self.cache_key = None if _is_local_fs(fs) else _cache_key(fs, path)

    def read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            data = self.fs.cat_file(self.path, start=start, end=end)
        except Exception as exc:
            if _is_range_error(exc):  # start at or beyond the end: nothing there
                return b""
            raise storage_error(exc, self.name, "reading") from exc
        return bytes(data)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        kept, missing = head_cache.kept_ranges(self.cache_key, ranges)
        fetched = super().read_ranges(missing) if missing else []
        return head_cache.keep_fetched(self.cache_key, ranges, kept, missing, fetched)

    def _read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if len(ranges) == 1:
            return [self.read(*ranges[0])]
        with _translated(self.name, "reading"):
            blobs = self.fs.cat_ranges(
                [self.path] * len(ranges),
                [s for s, _ in ranges],
                [e for _, e in ranges],
                **_batch_option(self.fs),
            )
        return _blobs_or_raise(blobs, self.name)


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
        with self._lock, _translated(self.name, "reading"):
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
    event loop that awaits these reads (fsspec caches such instances per thread).
    """

    def __init__(self, fs: Any, path: str, name: str, sync_fs: Any = None) -> None:
        self.fs, self.path, self.name = fs, path, name
        self.size: int | None = None
        self.cache_key = _cache_key(sync_fs if sync_fs is not None else fs, path)

    async def read(self, start: int, end: int) -> bytes:
        return (await self.read_ranges([(start, end)]))[0]

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        kept, missing = head_cache.kept_ranges(self.cache_key, ranges)
        fetched = await self._fetch_ranges(missing)
        return head_cache.keep_fetched(self.cache_key, ranges, kept, missing, fetched)

    async def _fetch(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            data = await self.fs._cat_file(self.path, start=start, end=end)
        except Exception as exc:
            if _is_range_error(exc):
                return b""
            raise storage_error(exc, self.name, "reading") from exc
        return bytes(data)

    async def _fetch_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        merged = merge_ranges(ranges)
        if len(merged) == 1:
            return _split(ranges, merged, [await self._fetch(*merged[0])])
        try:
            blobs = await self.fs._cat_ranges(
                [self.path] * len(merged),
                [s for s, _ in merged],
                [e for _, e in merged],
                batch_size=get_config().max_concurrency,
            )
        except Exception as exc:
            raise storage_error(exc, self.name, "reading") from exc
        return _split(ranges, merged, _blobs_or_raise(blobs, self.name))

    def close(self) -> None:
        pass


def open_source_async(
    source: Target, storage_options: dict[str, Any] | None = None
) -> AsyncByteSource:
    """Open a path or URL for reads from a coroutine: the filesystem's own coroutines where it
    is async, a worker thread otherwise. Call it in the thread of the event loop that will
    await the reads."""
    if isinstance(source, str) and local_path(source, storage_options) is None:
        fs, path = _url_to_fs(source, storage_options)
        if getattr(fs, "async_impl", False):
            async_fs, _ = _url_to_fs(source, {**(storage_options or {}), "asynchronous": True})
            return AsyncFsspecSource(async_fs, path, source, sync_fs=fs)
    return ThreadedSource(open_source(source, storage_options))


def split_by_head(
    head: bytes, ranges: Sequence[tuple[int, int]]
) -> tuple[list[bytes | None], list[tuple[int, int]]]:
    """Slices of ``head`` (a file's first read) for the ranges it covers, None for the others,
    and those other ranges. A head shorter than :data:`HEAD_GUESS` is the whole file, so it
    covers every range."""
    whole_file = len(head) < HEAD_GUESS
    found: list[bytes | None] = []
    missing: list[tuple[int, int]] = []
    for start, end in ranges:
        if end <= len(head) or whole_file:
            found.append(head[start:end])
        else:
            found.append(None)
            missing.append((start, end))
    return found, missing


def read_ranges_after_head(
    source: ByteSource, head: bytes, ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """Bytes of ``ranges``, served from ``head`` (the file's first read) where it covers them,
    the others fetched merged."""
    found, missing = split_by_head(head, ranges)
    fetched = iter(source.read_ranges(missing) if missing else [])
    return [next(fetched) if block is None else block for block in found]


Key = tuple[str, str]  # (filesystem token, path)


class HeadCache:
    """First reads (:data:`HEAD_GUESS` bytes: header, metadata, chunk index) of remote objects,
    and the chunk ranges read after them, kept so that opening and reading the same object
    again costs no request. Off until :meth:`enable`.

    An entry is trusted for ``ttl`` seconds: within that time a re-opened object shows the
    directory it had when first read (chunks are still checked against the checksums of that
    directory, so a replaced object is an error, never wrong voxels). medmask's own writes
    drop what they replace. Keyed by filesystem (protocol and options) and path, LRU.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[tuple[Any, ...], tuple[float, bytes]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self.max_entries = 0
        self.max_bytes = 0
        self.ttl = 0.0
        self.ranges = False
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        """Whether heads are kept."""
        return self.max_entries > 0

    def enable(
        self,
        max_entries: int | None = None,
        *,
        max_bytes: int | None = None,
        ttl: float | None = None,
        ranges: bool = True,
    ) -> None:
        """Keep up to ``max_entries`` heads and (with ``ranges``) chunk ranges, ``max_bytes``
        in all, for ``ttl`` seconds each (defaults: :mod:`medmask.config`'s
        ``head_cache_entries``, ``head_cache_bytes`` and ``head_cache_ttl``)."""
        settings = get_config()
        max_entries = settings.head_cache_entries if max_entries is None else max_entries
        max_bytes = settings.head_cache_bytes if max_bytes is None else max_bytes
        ttl = settings.head_cache_ttl if ttl is None else ttl
        if max_entries < 0 or max_bytes < 0 or ttl < 0:
            raise InvalidValueError(
                f"Expected non-negative limits. Got {max_entries}, {max_bytes}, {ttl}."
            )
        with self._lock:
            self.max_entries, self.max_bytes, self.ttl = max_entries, max_bytes, ttl
            self.ranges = ranges
            self._trim()

    def disable(self) -> None:
        """Keep nothing (and drop what is kept)."""
        self.enable(0, max_bytes=0, ttl=0.0, ranges=False)

    def clear(self) -> None:
        """Drop every entry and reset the hit counts."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def _get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry[0] > self.ttl:
                if entry is not None:
                    self._remove(key)
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def _put(self, key: tuple[Any, ...], data: bytes) -> None:
        with self._lock:
            if key in self._entries:
                self._remove(key)
            self._entries[key] = (time.monotonic(), bytes(data))
            self._bytes += len(data)
            self._trim()

    def _remove(self, key: tuple[Any, ...]) -> None:
        _, data = self._entries.pop(key)
        self._bytes -= len(data)

    # a head is kept as the range it was read as, (0, HEAD_GUESS): one entry for both
    def get(self, key: Key | None) -> bytes | None:
        """The head of object ``key`` if kept and fresh."""
        return None if key is None or not self.enabled else self._get((*key, 0, HEAD_GUESS))

    def put(self, key: Key | None, head: bytes) -> None:
        """Keep ``head`` (the first ``HEAD_GUESS`` bytes of the object, or all of it)."""
        if key is not None and self.enabled and len(head) <= HEAD_GUESS:
            self._put((*key, 0, HEAD_GUESS), head)

    def get_range(self, key: Key | None, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` of object ``key`` if that exact range is kept and fresh."""
        if key is None or not (self.enabled and self.ranges):
            return None
        return self._get((*key, start, end))

    def put_range(self, key: Key | None, start: int, end: int, data: bytes) -> None:
        """Keep a range read from object ``key`` (ranges above an eighth of the budget are
        not kept)."""
        if key is not None and self.enabled and self.ranges and len(data) <= self.max_bytes // 8:
            self._put((*key, start, end), data)

    def kept_ranges(
        self, key: Key | None, ranges: Sequence[tuple[int, int]]
    ) -> tuple[dict[tuple[int, int], bytes | None], list[tuple[int, int]]]:
        """The kept bytes of each range (None where not kept), and the ranges to fetch."""
        kept = {r: self.get_range(key, *r) for r in ranges}
        return kept, [r for r, data in kept.items() if data is None]

    def keep_fetched(
        self,
        key: Key | None,
        ranges: Sequence[tuple[int, int]],
        kept: dict[tuple[int, int], bytes | None],
        missing: Sequence[tuple[int, int]],
        fetched: Sequence[bytes],
    ) -> list[bytes]:
        """Keep the ``fetched`` bytes of the ``missing`` ranges; the bytes of ``ranges``."""
        for r, data in zip(missing, fetched, strict=True):
            self.put_range(key, *r, data)
            kept[r] = data
        return [kept[r] or b"" for r in ranges]

    def drop(self, key: Key | None) -> None:
        """Forget object ``key``: its head and ranges (it was written or found changed)."""
        if key is None:
            return
        with self._lock:
            for entry in [k for k in self._entries if k[:2] == key]:
                self._remove(entry)

    def _trim(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            self._remove(next(iter(self._entries)))


#: The process's cache of object heads (off by default: ``head_cache.enable()``).
head_cache = HeadCache()


def read_heads(
    sources: Sequence[Target],
    storage_options: dict[str, Any] | None = None,
    *,
    max_concurrency: int | None = None,
) -> list[bytes | MedmaskError]:
    """The first :data:`HEAD_GUESS` bytes of every source, fetched concurrently: one ranged
    GET each, at most ``max_concurrency`` in flight per filesystem; served from
    :data:`head_cache` where it holds them. A source that cannot be read gives its error."""
    return _read_prefixes(sources, storage_options, HEAD_GUESS, max_concurrency, cache=True)


def read_many(
    sources: Sequence[Target],
    storage_options: dict[str, Any] | None = None,
    *,
    max_bytes: int,
    max_concurrency: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[bytes | MedmaskError]:
    """The whole content of every source, fetched concurrently (one GET each, at most
    ``max_concurrency`` in flight); a source larger than ``max_bytes`` or unreadable gives
    its error. ``on_done(n)`` is called as each group of ``n`` sources arrives (a progress
    bar); with it, remote sources go out in groups of ``max_concurrency``."""
    blobs = _read_prefixes(
        sources, storage_options, max_bytes + 1, max_concurrency, cache=False, on_done=on_done
    )
    out: list[bytes | MedmaskError] = []
    for source, blob in zip(sources, blobs, strict=True):
        if isinstance(blob, bytes) and len(blob) > max_bytes:
            blob = AllocationLimitError(
                f"{source_name(source)}: larger than the {max_bytes:,}-byte limit (max_bytes=)."
            )
        out.append(blob)
    return out


def _read_prefixes(
    sources: Sequence[Target],
    storage_options: dict[str, Any] | None,
    length: int,
    max_concurrency: int | None,
    *,
    cache: bool,
    on_done: Callable[[int], None] | None = None,
) -> list[bytes | MedmaskError]:
    """The first ``length`` bytes of every source; remote ones grouped by filesystem and
    fetched with ``cat_ranges`` (concurrent on async filesystems)."""
    report = on_done or (lambda n: None)
    out: list[bytes | MedmaskError | None] = [None] * len(sources)
    groups: dict[int, tuple[Any, list[tuple[int, str, Key]]]] = {}
    for i, source in enumerate(sources):
        try:
            if not isinstance(source, str) or local_path(source, storage_options) is not None:
                byte_source = open_source(source, storage_options)
                try:
                    out[i] = byte_source.read(0, length)
                finally:
                    byte_source.close()
                report(1)
                continue
            fs, path = _url_to_fs(source, storage_options)
            key = _cache_key(fs, path)
            cached = head_cache.get(key) if cache else None
            if cached is not None:
                out[i] = cached
                report(1)
                continue
            groups.setdefault(id(fs), (fs, []))[1].append((i, path, key))
        except MedmaskError as exc:
            out[i] = exc
            report(1)
    batch = max(1, get_config().max_concurrency if max_concurrency is None else max_concurrency)
    for fs, all_items in groups.values():
        # one cat_ranges call keeps `batch` requests in flight (a sliding window); a progress
        # report needs the calls cut into groups, which costs at most a straggler per group
        step = batch if on_done is not None else len(all_items)
        for first in range(0, len(all_items), step):
            items = all_items[first : first + step]
            _fetch_prefixes(fs, items, sources, length, batch, out, cache=cache)
            report(len(items))
    return [b"" if item is None else item for item in out]


def _fetch_prefixes(
    fs: Any,
    items: list[tuple[int, str, Key]],
    sources: Sequence[Target],
    length: int,
    batch: int,
    out: list[bytes | MedmaskError | None],
    *,
    cache: bool,
) -> None:
    """Fetch one group of one filesystem's prefixes into ``out`` (errors as values)."""
    paths = [path for _, path, _ in items]
    try:
        if getattr(fs, "async_impl", False) and len(items) > 1:
            blobs = fs.cat_ranges(
                paths, [0] * len(paths), [length] * len(paths), on_error="return", batch_size=batch
            )
        else:
            blobs = [_cat_or_error(fs, path, length) for path in paths]
    except Exception as exc:
        raise storage_error(exc, source_name(sources[items[0][0]]), "reading") from exc
    for (i, _, key), blob in zip(items, blobs, strict=True):
        if isinstance(blob, BaseException):
            out[i] = (
                b""
                if _is_range_error(blob)
                else storage_error(blob, source_name(sources[i]), "reading")
            )
            continue
        data = out[i] = bytes(blob)
        if cache:
            head_cache.put(key, data)


def _blobs_or_raise(blobs: Sequence[Any], name: str) -> list[bytes]:
    """The bytes of a ``cat_ranges(on_error="return")`` answer: a range beyond the end is
    empty, any other error raised as a :class:`StorageError`."""
    out = []
    for blob in blobs:
        if isinstance(blob, Exception):
            if not _is_range_error(blob):
                raise storage_error(blob, name, "reading") from blob
            blob = b""
        out.append(bytes(blob))
    return out


def _batch_option(fs: Any) -> dict[str, int]:
    """At most :data:`MAX_CONCURRENCY` requests in flight (async filesystems; a synchronous
    ``cat_ranges`` would hand the option on to ``open``)."""
    return {"batch_size": get_config().max_concurrency} if getattr(fs, "async_impl", False) else {}


def _cat_or_error(fs: Any, path: str, length: int) -> bytes | BaseException:
    try:
        return bytes(fs.cat_file(path, start=0, end=length))
    except Exception as exc:
        return exc


def source_name(target: Target) -> str:
    """A human-readable name of a path, URL, OpenFile or file object for messages."""
    if isinstance(target, str | os.PathLike):
        return os.fspath(target)
    path = getattr(target, "full_name", None) or getattr(target, "path", None)
    if isinstance(path, str):
        return path
    name = getattr(target, "name", None)
    return name if isinstance(name, str) else repr(target)


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


def stored_size(target: Target, storage_options: dict[str, Any] | None = None) -> int:
    """Size in bytes of a stored file or object (one metadata request when remote)."""
    path = local_path(target, storage_options)
    name = source_name(target)
    if path is not None:
        try:
            return os.path.getsize(path)
        except FileNotFoundError:
            raise MaskFileNotFoundError(f"{name}: no such file.") from None
    fs, fs_path, name = _target_fs(target, storage_options)
    try:
        return int(fs.size(fs_path))
    except FileNotFoundError:
        raise MaskFileNotFoundError(f"{name}: no such file or object.") from None
    except Exception as exc:
        raise storage_error(exc, name, "reading the size of") from exc


def name_suffix(target: Target) -> str:
    """Lower-case file suffix of a path or URL (``.nii.gz`` counts as one), or ``""``."""
    if not isinstance(target, str | os.PathLike):
        return ""
    base = os.fspath(target).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()
    for double in (".nii.gz", ".tar.gz"):
        if base.endswith(double):
            return double
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


def _with_pool(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options``, with an S3 connection pool of :data:`MAX_CONCURRENCY` unless the
    caller chose one: s3fs's default (botocore's 10) would cap the requests a batch has in
    flight."""
    options = dict(storage_options or {})
    if url.split("://", 1)[0] in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("max_pool_connections", get_config().max_concurrency)
        options["config_kwargs"] = config
    return options


def _url_to_fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec.core

    try:
        fs, path = fsspec.core.url_to_fs(url, **_with_pool(url, storage_options))
    except ValueError as exc:
        raise InvalidValueError(f"{url}: cannot open this URL: {exc}") from exc
    except Exception as exc:  # a missing backend package, bad credentials options...
        raise storage_error(exc, url, "opening the filesystem") from exc
    return fs, str(path)


def list_folder(folder: Target, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths (local) or URLs (remote) of the files directly in ``folder``, sorted."""
    name = source_name(folder)
    path = local_path(folder, storage_options)
    if path is not None:
        if not os.path.isdir(path):
            raise MaskFileNotFoundError(f"{name}: no such folder.")
        return sorted(str(p) for p in Path(path).iterdir() if p.is_file())
    fs, fs_path, _ = _target_fs(folder, storage_options)
    try:
        entries = fs.ls(fs_path, detail=True)
    except FileNotFoundError:
        raise MaskFileNotFoundError(f"{name}: no such folder.") from None
    except Exception as exc:
        raise storage_error(exc, name, "listing") from exc
    files = [e["name"] for e in entries if e.get("type", "file") == "file"]
    return sorted(fs.unstrip_protocol(f) for f in files)


def expand_glob(pattern: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Files matching a glob (``s3://bucket/cases/*.mska``, ``cases/**/*.msk``), sorted;
    local patterns give paths, remote ones URLs."""
    local = "://" not in pattern and "::" not in pattern
    fs, fs_path = _url_to_fs(pattern, storage_options)
    try:
        matches = sorted(fs.glob(fs_path))
    except Exception as exc:
        raise storage_error(exc, pattern, "listing") from exc
    return [str(m) for m in matches] if local else [fs.unstrip_protocol(m) for m in matches]


def _is_local_fs(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def local_path(target: Target, storage_options: dict[str, Any] | None = None) -> str | None:
    """The local filesystem path of ``target`` if it is one (path, ``file://`` URL), else None."""
    if isinstance(target, os.PathLike):
        return os.fspath(target)
    if isinstance(target, str):
        if "://" not in target and "::" not in target:
            return target
        if target.startswith("file://"):
            fs, path = _url_to_fs(target, storage_options)
            return str(path)
        return None
    fs = getattr(target, "fs", None)
    if fs is not None and _is_local_fs(fs) and hasattr(target, "path"):
        return str(target.path)
    return None


def open_source(source: Target, storage_options: dict[str, Any] | None = None) -> ByteSource:
    """Open a path, URL, fsspec ``OpenFile`` or binary file object for ranged reads."""
    path = local_path(source, storage_options)
    if path is not None:
        return LocalSource(path)
    if isinstance(source, str):
        fs, fs_path = _url_to_fs(source, storage_options)
        return FsspecSource(fs, fs_path, source)
    fs = getattr(source, "fs", None)
    if fs is not None and hasattr(source, "path"):  # fsspec OpenFile
        return FsspecSource(fs, source.path, source_name(source))
    if hasattr(source, "read") and hasattr(source, "seek"):
        return FileObjectSource(source, source_name(source))  # type: ignore[arg-type]
    raise InvalidTypeError(
        "Expected a path, URL, fsspec OpenFile or seekable binary file object. "
        f"Got {type(source).__name__}."
    )


# --- conditional writes -------------------------------------------------------------------------

#: Bytes compared by the "content" check on filesystems without conditional writes.
VERSION_HEAD = 4 << 10
#: Largest object written with one PUT (S3's limit); conditional writes need a single request.
_SINGLE_PUT = 5 << 30


@dataclass(frozen=True)
class ObjectVersion:
    """What a writer saw of an object, to make its later replacement conditional on it.

    ``kind`` says how the check is made: ``"etag"`` (S3 ``If-Match``), ``"generation"``
    (GCS ``ifGenerationMatch``) or ``"content"`` (other filesystems: size and first bytes
    re-read right before the write). ``exists`` False means "only if still absent".
    """

    exists: bool
    kind: Literal["etag", "generation", "content"]
    token: str = ""
    size: int = -1
    head: bytes = b""


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, tuple | list) else (str(protocol),)


def _conditional_kind(fs: Any) -> Literal["etag", "generation", "content"]:
    protocols = _protocols(fs)
    if "s3" in protocols or "s3a" in protocols:
        return "etag"
    if "gs" in protocols or "gcs" in protocols:
        return "generation"
    return "content"


def _fs_version(fs: Any, path: str, name: str) -> ObjectVersion:
    kind = _conditional_kind(fs)
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return ObjectVersion(False, kind)
    except Exception as exc:
        raise storage_error(exc, name, "checking the object's version") from exc
    size = int(info.get("size") or 0)
    if kind == "etag":
        return ObjectVersion(True, kind, str(info.get("ETag") or info.get("etag") or ""), size)
    if kind == "generation":
        return ObjectVersion(True, kind, str(info.get("generation") or ""), size)
    with _translated(name, "reading"):
        head = bytes(fs.cat_file(path, start=0, end=min(size, VERSION_HEAD))) if size else b""
    return ObjectVersion(True, kind, "", size, head)


def _local_version(path: str) -> ObjectVersion:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return ObjectVersion(True, "content", "", size, handle.read(VERSION_HEAD))
    except FileNotFoundError:
        return ObjectVersion(False, "content")
    except OSError as exc:
        raise storage_error(exc, path, "reading") from exc


def object_version(target: Target, storage_options: dict[str, Any] | None = None) -> ObjectVersion:
    """The current :class:`ObjectVersion` of a path or URL (one HEAD request on object stores)."""
    path = local_path(target, storage_options)
    if path is not None:
        return _local_version(path)
    fs, fs_path, name = _target_fs(target, storage_options)
    return _fs_version(fs, fs_path, name)


def _target_fs(target: Target, storage_options: dict[str, Any] | None) -> tuple[Any, str, str]:
    if isinstance(target, str):
        fs, fs_path = _url_to_fs(target, storage_options)
        return fs, fs_path, target
    fs = getattr(target, "fs", None)
    if fs is not None and hasattr(target, "path"):
        return fs, str(target.path), source_name(target)
    raise InvalidTypeError(f"Expected a path, URL or fsspec OpenFile. Got {type(target).__name__}.")


def _conflict(name: str, expect: ObjectVersion, create_only: bool) -> MedmaskError:
    if create_only:
        return MaskFileExistsError(f"{name}: already exists; nothing was written.")
    return ConcurrentModificationError(
        f"{name}: was {'changed' if expect.exists else 'created'} by another writer since it "
        "was read; nothing was written. Open it again and retry."
    )


def _is_precondition_failure(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError) or getattr(exc, "code", None) == 412:
        return True
    cause = exc.__cause__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause else None
    return code in ("PreconditionFailed", "ConditionalRequestConflict")


def _gcs_put(fs: Any, path: str, data: bytes, generation: str) -> dict[str, Any]:
    """One multipart upload with ``ifGenerationMatch`` (gcsfs only exposes ``0``)."""
    from urllib.parse import quote

    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)
    url = f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o"
    body = b"".join(
        (
            b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n",
            json.dumps({"name": key}).encode(),
            b"\n--==0==\nContent-Type: application/octet-stream\n\n",
            data,
            b"\n--==0==--",
        )
    )
    out: dict[str, Any] = sync(
        fs.loop,
        fs._call,
        "POST",
        url,
        uploadType="multipart",
        headers={"Content-Type": 'multipart/related; boundary="==0=="'},
        data=body,
        json_out=True,
        ifGenerationMatch=generation,
    )
    fs.invalidate_cache(path)
    return out


def _put_conditional(
    fs: Any, path: str, data: bytes, name: str, expect: ObjectVersion, create_only: bool
) -> ObjectVersion:
    kind = _conditional_kind(fs)
    if len(data) > _SINGLE_PUT:
        raise InvalidValueError(f"{name}: {len(data):,} bytes exceed one conditional PUT.")
    try:
        if kind == "etag":
            condition = {"IfMatch": expect.token} if expect.exists else {"IfNoneMatch": "*"}
            out = fs.pipe_file(path, data, chunksize=_SINGLE_PUT, **condition)
            etag = str(out.get("ETag", "")) if isinstance(out, dict) else ""
            return ObjectVersion(True, kind, etag, len(data))
        if kind == "generation":
            reply = _gcs_put(fs, path, data, expect.token if expect.exists else "0")
            return ObjectVersion(True, kind, str(reply.get("generation", "")), len(data))
        # no conditional writes here: compare right before the write (a small race remains)
        if _fs_version(fs, path, name) != expect:
            raise _conflict(name, expect, create_only)
        fs.pipe_file(path, data)
        return _fs_version(fs, path, name)
    except MedmaskError:
        raise
    except Exception as exc:
        if _is_precondition_failure(exc) or (expect.exists and isinstance(exc, FileNotFoundError)):
            raise _conflict(name, expect, create_only) from exc
        raise storage_error(exc, name, "writing") from exc


def write_atomic(
    target: Target,
    pieces: Sequence[bytes],
    storage_options: dict[str, Any] | None = None,
    *,
    overwrite: bool = True,
    expect: ObjectVersion | None = None,
) -> ObjectVersion | None:
    """Write ``pieces`` as the whole content of ``target``, replacing it only on success.

    Local files go to a temporary file in the same directory, are flushed to disk and renamed
    over the target. Object stores replace an object atomically with one PUT.
    ``overwrite=False`` writes only if the target does not exist (else
    :class:`MaskFileExistsError`); ``expect`` writes only if the object is still the version
    read earlier (else :class:`ConcurrentModificationError`). Both are atomic on local files,
    S3 and GCS (conditional requests); other filesystems re-check right before the write.
    Returns the new version of remote objects when the backend reports it.
    """
    create_only = not overwrite and expect is None
    path = local_path(target, storage_options)
    if path is not None:
        exclusive = create_only or (expect is not None and not expect.exists)
        try:
            _write_local_atomic(path, pieces, exclusive=exclusive)
        except MaskFileExistsError:
            if create_only:
                raise
            raise ConcurrentModificationError(
                f"{path}: was created by another writer since it was read; nothing was written."
            ) from None
        return None
    if isinstance(target, str) or (getattr(target, "fs", None) is not None):
        fs, fs_path, name = _target_fs(target, storage_options)
        key = _cache_key(fs, fs_path)
        head_cache.drop(key)
        try:
            return _write_remote(fs, fs_path, name, b"".join(pieces), create_only, expect)
        finally:
            head_cache.drop(key)  # a head read while the object was being replaced
    if hasattr(target, "write"):
        with _translated(source_name(target), "writing"):
            for piece in pieces:
                target.write(piece)
        return None
    raise InvalidTypeError(
        "Expected a path, URL, fsspec OpenFile or writable binary file object. "
        f"Got {type(target).__name__}."
    )


def _write_remote(
    fs: Any,
    fs_path: str,
    name: str,
    data: bytes,
    create_only: bool,
    expect: ObjectVersion | None,
) -> ObjectVersion | None:
    if create_only:
        expect = ObjectVersion(False, _conditional_kind(fs))
    if expect is not None:
        if expect.exists and expect.kind != _conditional_kind(fs):
            raise InvalidValueError(f"{name}: version {expect.kind!r} does not fit this store.")
        return _put_conditional(fs, fs_path, data, name, expect, create_only)
    with _translated(name, "writing"):
        fs.pipe_file(fs_path, data)
    return None


def _write_local_atomic(
    path: str, pieces: Iterable[bytes], *, exclusive: bool = False, keep_lock: bool = False
) -> LocalLock | None:
    """Temp file, fsync, rename (or link, when ``exclusive``); optionally keep it locked."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise MaskFileNotFoundError(f"{path}: directory {directory} does not exist.")
    if exclusive and os.path.lexists(path):
        raise MaskFileExistsError(f"{path}: already exists; nothing was written.")
    with _translated(path, "creating a temporary file"):
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=directory)
    lock: LocalLock | None = None
    try:
        with _translated(path, "writing"):
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.chmod(tmp, 0o666 & ~_umask())
            if keep_lock:
                lock = LocalLock(path, fd)  # locked before it is visible under its name
            if exclusive:
                _link_exclusive(tmp, path)
            else:
                os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if lock is None:
            os.close(fd)
        else:
            lock.release()
        raise
    if lock is None:
        os.close(fd)
    _fsync_directory(directory)
    return lock


def _link_exclusive(tmp: str, path: str) -> None:
    """Give ``tmp`` the name ``path`` only if ``path`` does not exist (atomically)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise MaskFileExistsError(f"{path}: already exists; nothing was written.") from None
    except OSError:  # no hard links on this filesystem: check, then rename (racy)
        if os.path.lexists(path):
            raise MaskFileExistsError(f"{path}: already exists; nothing was written.") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@functools.cache
def _umask() -> int:
    mask = os.umask(0)  # read once: umask has no getter
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- local advisory locks --------------------------------------------------------------------

#: How often a waiting writer retries a held lock.
_LOCK_POLL = 0.02


class LocalLock:
    """An exclusive advisory lock (``flock``) on a local file, held through an open descriptor.

    ``flock`` locks belong to an open file description, so two handles in one process exclude
    each other like two processes do. The descriptor is opened read-write and may be used for
    in-place writes while the lock is held. Without ``fcntl`` (Windows) the lock is a no-op.
    """

    def __init__(self, path: str, fd: int) -> None:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises before we own ``fd``
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, path: str, timeout: float) -> LocalLock | None:
        """Lock ``path`` (waiting up to ``timeout`` s); None if the file does not exist.

        When the file is replaced (renamed over) while waiting, the new file is locked instead.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                with _translated(path, "opening for writing"):
                    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
            except MaskFileNotFoundError:
                return None
            try:
                lock = cls._wait(path, fd, deadline, timeout)
            except BaseException:
                os.close(fd)
                raise
            if lock.is_current():
                return lock
            lock.release()  # replaced while we waited: lock the new file

    @classmethod
    def _wait(cls, path: str, fd: int, deadline: float, timeout: float) -> LocalLock:
        while True:
            try:
                return cls(path, fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"{path}: another writer has held the archive open for appending for "
                        f"more than {timeout:g} s; close it or pass a longer lock_timeout."
                    ) from None
                time.sleep(_LOCK_POLL)

    def is_current(self) -> bool:
        """Whether ``path`` still names the locked file (not replaced or deleted)."""
        try:
            on_disk, held = os.stat(self.path), os.fstat(self.fd)
        except OSError:
            return False
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        """Unlock and close (closing releases the lock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            self.release()
