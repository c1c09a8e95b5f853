"""The one place that turns paths, URLs and file objects into byte reads and writes.

Remote reads are exact byte ranges (``cat_file(path, start=, end=)``); adjacent ranges are
merged and several ranges go out concurrently (``cat_ranges``). Nothing here reads through an
fsspec file object, whose default read-ahead block would fetch 50 MiB.

One concern per private module, everything public re-exported here:

- ``_sources``: :class:`ByteSource` / :class:`AsyncByteSource` and the five sources,
  :func:`open_source`, :func:`open_source_async`, whole reads;
- ``_ranges``: merging and splitting byte ranges (pure planning);
- ``_cache``: :class:`HeadCache` and the process's default instance :data:`head_cache`;
- ``_batch``: :func:`read_heads` and :func:`read_many` over many files;
- ``_paths``: :data:`Target`, names, suffixes, local paths, URLs to filesystems, listing;
- ``_write``: :func:`write_atomic` and the local temp-file + rename path;
- ``_conditional``: :class:`ObjectVersion` and conditional PUTs, one entry per backend;
- ``_gcs``: the gcsfs internals a conditional GCS write needs (and nothing else);
- ``_local``: :class:`LocalLock` and :class:`LocalFile` for in-place writes;
- ``_versions``: ranged reads that also give the object's version (S3 ETag);
- ``_errors``: backend exceptions as medmask errors.

Importing this package imports no fsspec: filesystems are created on first use.
"""

from __future__ import annotations

from typing import Any

from .._deprecate import warn_renamed
from ._batch import read_heads, read_many
from ._cache import HeadCache, head_cache
from ._conditional import COMPARED_PREFIX, ObjectVersion, object_version
from ._errors import storage_error
from ._local import LocalFile, LocalLock
from ._paths import (
    OpenFileLike,
    Target,
    expand_glob,
    list_folder,
    local_path,
    name_suffix,
    source_name,
    stored_size,
)
from ._ranges import (
    HEAD_GUESS,
    MAX_CONCURRENCY,
    MERGE_GAP,
    MERGE_GAP_REMOTE,
    MERGE_MAX,
    merge_gap,
    merge_ranges,
    split_by_head,
)
from ._sources import (
    AsyncByteSource,
    AsyncFsspecSource,
    ByteSource,
    FileObjectSource,
    FsspecSource,
    LocalSource,
    ThreadedSource,
    open_source,
    open_source_async,
    read_all,
    read_ranges_after_head,
    read_whole,
)
from ._versions import ObjectChangedError
from ._write import write_atomic, write_local_atomic

__all__ = [
    "COMPARED_PREFIX",
    "HEAD_GUESS",
    "MAX_CONCURRENCY",
    "MERGE_GAP",
    "MERGE_GAP_REMOTE",
    "MERGE_MAX",
    "AsyncByteSource",
    "AsyncFsspecSource",
    "ByteSource",
    "FileObjectSource",
    "FsspecSource",
    "HeadCache",
    "LocalFile",
    "LocalLock",
    "LocalSource",
    "ObjectChangedError",
    "ObjectVersion",
    "OpenFileLike",
    "Target",
    "ThreadedSource",
    "expand_glob",
    "head_cache",
    "list_folder",
    "local_path",
    "merge_gap",
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
    "write_local_atomic",
]


def __getattr__(name: str) -> Any:
    if name == "VERSION_HEAD":  # renamed in 0.3: "head" meant four things
        warn_renamed("medmask.io.VERSION_HEAD", "medmask.io.COMPARED_PREFIX")
        return COMPARED_PREFIX
    raise AttributeError(f"module 'medmask.io' has no attribute {name!r}")
