"""The head cache: first reads and chunk ranges of remote objects, kept for re-opening.

A :class:`HeadCache` is an object that readers and writers take (``cache=``); ``None`` there
means :data:`head_cache`, the process's default instance (off until enabled).

Apart from the entries trusted for a time, it keeps heads read from S3 with the object's
ETag (:meth:`HeadCache.put_versioned`, on even when the cache is off): those are re-used by
``load_mask(url, roi=)`` only with a check of the ETag by the next read (docs/remote.md).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..config import get as get_config
from ..errors import InvalidValueError
from ._ranges import HEAD_GUESS

__all__ = ["HeadCache", "Key", "cache_key", "head_cache", "or_default"]

Key = tuple[str, str]  # (filesystem token, path)


def cache_key(fs: Any, path: str) -> Key:
    """Identity of an object in a :class:`HeadCache`: the filesystem's token (protocol and
    options) and the path."""
    # ``_fs_token`` is fsspec's own (AbstractFileSystem, every backend): the key of its
    # instance cache, the one identity that includes the options (credentials, endpoint)
    return (str(getattr(fs, "_fs_token", id(fs))), path)


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
        # heads read with their version (S3 ETag), kept even when the cache is off: a reader
        # that re-uses one checks the version with its next request (``load_mask(url, roi=)``)
        self._versioned: collections.OrderedDict[Key, tuple[bytes, str]] = collections.OrderedDict()
        self._versioned_bytes = 0
        #: whether versioned heads are kept (on by default; they are never trusted unchecked)
        self.keep_versioned = True

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
        """Drop every entry (versioned heads too) and reset the hit counts."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._versioned.clear()
            self._versioned_bytes = 0
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
            gone = self._versioned.pop(key, None)
            if gone is not None:
                self._versioned_bytes -= len(gone[0])

    def put_versioned(self, key: Key | None, head: bytes, version: str) -> None:
        """Keep ``head`` as read at ``version`` (the object's ETag), whether or not the cache
        is on: a reader re-using it must check the version with its next read (up to
        :mod:`medmask.config`'s ``head_cache_entries`` and ``head_cache_bytes``)."""
        if key is None or not version or not self.keep_versioned or len(head) > HEAD_GUESS:
            return
        settings = get_config()
        with self._lock:
            gone = self._versioned.pop(key, None)
            if gone is not None:
                self._versioned_bytes -= len(gone[0])
            self._versioned[key] = (bytes(head), version)
            self._versioned_bytes += len(head)
            while self._versioned and (
                len(self._versioned) > settings.head_cache_entries
                or self._versioned_bytes > settings.head_cache_bytes
            ):
                _, (old, _) = self._versioned.popitem(last=False)
                self._versioned_bytes -= len(old)

    def get_versioned(self, key: Key | None) -> tuple[bytes, str] | None:
        """The head of object ``key`` and the version it was read at, if kept: to be checked
        against the store by the next read (:attr:`FsspecSource.version`)."""
        if key is None or not self.keep_versioned:
            return None
        with self._lock:
            kept = self._versioned.get(key)
            if kept is not None:
                self._versioned.move_to_end(key)
            return kept

    def _trim(self) -> None:
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            self._remove(next(iter(self._entries)))


#: The process's cache of object heads (off by default: ``head_cache.enable()``); what every
#: ``cache=None`` means.
head_cache = HeadCache()


def or_default(cache: HeadCache | None) -> HeadCache:
    """``cache``, or the process's :data:`head_cache` when None."""
    return head_cache if cache is None else cache
