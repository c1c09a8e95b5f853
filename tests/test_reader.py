"""medmask.reader: the sans-I/O directory reader, driven by hand, by a blocking source and by
an async source, with the same answer (and the same refusals) from each."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import fsspec
import numpy as np
import pytest
from spacetransformer import Space

from medmask import MaskArchive, SegmentationMask, save_mask
from medmask.errors import FormatError, TruncatedFileError
from medmask.io import HEAD_GUESS, HeadCache, open_source, open_source_async
from medmask.reader import Directory, directory_steps, read_directory, read_directory_async

SPACE = Space(shape=(4, 5, 6), spacing=(2.0, 1.0, 0.5))


def _mask(value: int = 3) -> SegmentationMask:
    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 2:4, 1:5] = value
    return SegmentationMask(data, {"liver": value}, SPACE)


@pytest.fixture
def msk(tmp_path: Path) -> bytes:
    save_mask(_mask(), tmp_path / "a.msk")
    return (tmp_path / "a.msk").read_bytes()


@pytest.fixture
def mska(tmp_path: Path) -> bytes:
    with MaskArchive(tmp_path / "a.mska", "w", space=SPACE) as archive:
        archive.add_segmask(_mask(3), "one")
        archive.add_segmask(_mask(5), "two")
    return (tmp_path / "a.mska").read_bytes()


def _by_hand(data: bytes, **options: object) -> tuple[Directory, list[list[tuple[int, int]]]]:
    """Drive directory_steps with bytes, recording every request."""
    steps = directory_steps("by-hand", **options)  # type: ignore[arg-type]
    requests = []
    try:
        request = next(steps)
        while True:
            requests.append(request)
            request = steps.send([data[a:b] for a, b in request])
    except StopIteration as done:
        return done.value, requests


def test_a_small_msk_is_one_request(msk: bytes) -> None:
    directory, requests = _by_hand(msk)
    assert requests == [[(0, HEAD_GUESS)]]
    assert directory.kind == "msk"
    assert [m.name for m in directory.members] == [""]
    assert directory.members[0].descriptor.shape == (4, 5, 6)
    assert directory.head == msk[:HEAD_GUESS]


def test_a_known_head_saves_the_request(msk: bytes) -> None:
    directory, requests = _by_hand(msk, head=msk[:HEAD_GUESS])
    assert requests == []
    assert directory == _by_hand(msk)[0]


def test_an_archive_lists_its_members(mska: bytes) -> None:
    directory, requests = _by_hand(mska)
    assert directory.kind == "mska"
    assert [m.name for m in directory.members] == ["one", "two"]
    assert directory.space is not None
    assert tuple(directory.space.shape) == (4, 5, 6)
    assert requests[0] == [(0, HEAD_GUESS)]


def test_kind_is_required_when_given(msk: bytes, mska: bytes) -> None:
    with pytest.raises(FormatError, match=r"by-hand: not a \.mska archive: starts with a \.msk"):
        _by_hand(msk, kind="mska")
    with pytest.raises(FormatError, match=r"by-hand: not a \.msk file: starts with a \.mska"):
        _by_hand(mska, kind="msk")


@pytest.mark.parametrize("cut", [0, 7, 40, 63, 64, 100])
def test_truncated_files_are_refused_the_same_way_by_every_driver(msk: bytes, cut: int) -> None:
    data = msk[:cut]
    with pytest.raises((FormatError, TruncatedFileError)) as by_hand:
        _by_hand(data)
    with pytest.raises(type(by_hand.value)) as blocking:
        read_directory(open_source(io.BytesIO(data)))
    assert str(blocking.value).split(": ", 1)[1] == str(by_hand.value).split(": ", 1)[1]


def test_blocking_and_async_drivers_agree(tmp_path: Path, mska: bytes) -> None:
    path = tmp_path / "b.mska"
    path.write_bytes(mska)
    blocking = read_directory(open_source(path))

    async def read() -> Directory:
        source = open_source_async(f"file://{path}")
        try:
            return await read_directory_async(source)
        finally:
            source.close()

    assert asyncio.run(read()).archive == blocking.archive


def test_a_cache_passed_in_is_used_and_filled(msk: bytes) -> None:
    url = "memory://reader-test/c.msk"
    with fsspec.open(url, "wb") as f:
        f.write(msk)
    cache = HeadCache()
    cache.enable(max_entries=4)
    for use in (cache, cache, False):  # False: neither used nor filled
        source = open_source(url)
        try:
            assert read_directory(source, cache=use).head == msk[:HEAD_GUESS]
        finally:
            source.close()
    assert (cache.hits, cache.misses) == (1, 1)
