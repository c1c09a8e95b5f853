"""Ranged reads that also tell the object's version (S3: its ETag), so that a head kept from
an earlier read can be re-used and checked by the next read of the same object, at no extra
request: a read whose answer names another version means the object changed, and the kept
head is dropped (:class:`ObjectChangedError`).

Only S3 (and S3-compatible stores through s3fs) for now: s3fs's ``_call_s3`` gives the
response headers that ``cat_file`` drops. Other filesystems read as before, unversioned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..errors import ConcurrentModificationError

__all__ = ["ObjectChangedError", "read_versioned", "supports_versions"]

_S3_PROTOCOLS = frozenset({"s3", "s3a"})


class ObjectChangedError(ConcurrentModificationError):
    """An object answered a read with another version than the one its head was read at."""


def supports_versions(fs: Any) -> bool:
    """Whether reads of ``fs`` can tell the object's version (s3fs)."""
    protocol = getattr(fs, "protocol", ())
    protocols = protocol if isinstance(protocol, tuple | list) else (protocol,)
    return bool(_S3_PROTOCOLS.intersection(protocols)) and hasattr(fs, "_call_s3")


async def _s3_range(fs: Any, path: str, start: int, end: int) -> tuple[bytes, str]:
    bucket, key, version_id = fs.split_path(path)
    pinned = {"VersionId": version_id} if version_id else {}
    response = await fs._call_s3(
        "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **pinned
    )
    body = response["Body"]
    try:
        data = await body.read()
    finally:
        body.close()
    return bytes(data), str(response.get("ETag") or "")


async def _ranges(
    fs: Any, path: str, ranges: Sequence[tuple[int, int]], batch: int
) -> list[tuple[bytes, str] | BaseException]:
    gate = asyncio.Semaphore(max(1, batch))

    async def one(start: int, end: int) -> tuple[bytes, str]:
        async with gate:
            return await _s3_range(fs, path, start, end)

    return await asyncio.gather(*(one(s, e) for s, e in ranges), return_exceptions=True)


def read_versioned(
    fs: Any, path: str, ranges: Sequence[tuple[int, int]], *, batch: int
) -> list[tuple[bytes, str] | BaseException]:
    """``(bytes, version)`` of each ``[start, end)`` range of ``path`` (at most ``batch``
    requests in flight), or the exception of a range that failed."""
    from fsspec.asyn import sync

    return list(sync(fs.loop, _ranges, fs, path, ranges, batch))
