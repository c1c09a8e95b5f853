"""Batched prefix reads of many files: their heads (:func:`read_heads`) or whole contents
(:func:`read_many`), one request each, many in flight, errors returned as values."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..config import get as get_config
from ..errors import AllocationLimitError, MedmaskError
from ._cache import HeadCache, Key, cache_key, or_default
from ._errors import is_range_error, storage_error
from ._paths import Target, local_path, source_name, url_to_fs
from ._ranges import HEAD_GUESS
from ._sources import open_source

__all__ = ["read_heads", "read_many"]


def read_heads(
    sources: Sequence[Target],
    storage_options: dict[str, Any] | None = None,
    *,
    max_concurrency: int | None = None,
    cache: HeadCache | None = None,
) -> list[bytes | MedmaskError]:
    """The first :data:`HEAD_GUESS` bytes of every source, fetched concurrently: one ranged
    GET each, at most ``max_concurrency`` in flight per filesystem; served from and kept in
    ``cache`` (None: the process's :data:`head_cache`). A source that cannot be read gives its
    error."""
    return _read_prefixes(
        sources, storage_options, HEAD_GUESS, max_concurrency, cache=or_default(cache)
    )


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
    bar); with it, remote sources go out in groups of ``max_concurrency``. No head cache."""
    blobs = _read_prefixes(
        sources, storage_options, max_bytes + 1, max_concurrency, cache=None, on_done=on_done
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
    cache: HeadCache | None,
    on_done: Callable[[int], None] | None = None,
) -> list[bytes | MedmaskError]:
    """The first ``length`` bytes of every source; remote ones grouped by filesystem and
    fetched with ``cat_ranges`` (concurrent on async filesystems). ``cache`` None: none."""
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
            fs, path = url_to_fs(source, storage_options)
            key = cache_key(fs, path)
            cached = cache.get(key) if cache is not None else None
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
    cache: HeadCache | None,
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
    for (i, path, key), blob in zip(items, blobs, strict=True):
        if isinstance(blob, BaseException):
            out[i] = (
                b""
                if is_range_error(blob)
                else storage_error(blob, source_name(sources[i]), "reading", fs=fs, path=path)
            )
            continue
        data = out[i] = bytes(blob)
        if cache is not None:
            cache.put(key, data)


def _cat_or_error(fs: Any, path: str, length: int) -> bytes | BaseException:
    try:
        return bytes(fs.cat_file(path, start=0, end=length))
    except Exception as exc:
        return exc
