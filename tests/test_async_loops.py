"""Async byte sources in more than one event loop: fsspec caches async filesystem instances
per thread, bound to the loop that created them; a source opened in a later loop (a second
``asyncio.run``) must get its own."""

from __future__ import annotations

import asyncio

import medmask.io
from servers import BucketFixture


def test_open_source_async_in_a_second_event_loop(s3: BucketFixture) -> None:
    s3.fs.pipe_file(s3.path("d.bin"), b"0123456789")
    url = s3.url("d.bin")

    async def read() -> bytes:
        source = medmask.io.open_source_async(url, s3.storage_options)
        return await source.read(2, 6)

    assert asyncio.run(read()) == b"2345"
    assert asyncio.run(read()) == b"2345"  # the first loop is closed by now


def test_one_filesystem_per_event_loop(s3: BucketFixture) -> None:
    url = s3.url("d.bin")

    async def filesystems() -> tuple[object, object]:
        first = medmask.io.open_source_async(url, s3.storage_options)
        second = medmask.io.open_source_async(url, s3.storage_options)
        return getattr(first, "fs", None), getattr(second, "fs", None)

    a, b = asyncio.run(filesystems())
    assert a is not None
    assert a is b  # reused within a loop
    c, _ = asyncio.run(filesystems())
    assert c is not a  # a new loop, a new instance
