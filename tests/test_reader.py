"""medmask.reader: the sans-I/O directory reader, driven by hand, by a blocking source and by
an async source, with the same answer (and the same refusals) from each."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from spacetransformer import Space

from medmask import MaskArchive, SegmentationMask, reader, save_mask
from medmask.errors import ChecksumError, FormatError, TruncatedFileError, UnsupportedVersionError
from medmask.format.container import HEADER_SIZE
from medmask.format.mska import ArchiveDirectory, valid_slots
from medmask.io import HEAD_GUESS, HeadCache, open_source, open_source_async
from medmask.reader import (
    Directory,
    RecoveryWarning,
    directory_steps,
    read_directory,
    read_directory_async,
)

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
    directory, requests = _requests_of(directory_steps("by-hand", **options), data)  # type: ignore[arg-type]
    return directory, requests


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


# --- exact behaviour where mutation testing found gaps ------------------------------------------


def _requests_of(steps: Any, data: bytes) -> tuple[Any, list[list[tuple[int, int]]]]:
    """Drive any reader generator with ``data``; its result and every request it made."""
    requests = []
    try:
        request = next(steps)
        while True:
            requests.append(request)
            request = steps.send([data[a:b] for a, b in request])
    except StopIteration as done:
        return done.value, requests


def test_directory_member_finds_a_member_by_name(mska: bytes) -> None:
    directory, _ = _by_hand(mska)
    two = directory.member("two")
    assert two is not None
    assert two is directory.members[1]
    assert directory.member("three") is None


def _two_generations(tmp_path: Path) -> bytes:
    """An archive at generation 2 (slot 1) over generation 1 (slot 0)."""
    path = tmp_path / "g.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_segmask(_mask(3), "one")
    with MaskArchive(path, "a") as archive:
        archive.add_segmask(_mask(5), "two")
    data = path.read_bytes()
    assert [(s, h.generation) for s, h in valid_slots(data, name="g")] == [(1, 2), (0, 1)]
    return data


def _reseal(slot: bytes, *, major: int) -> bytes:
    """``slot`` with another major version and a valid CRC: intact, but unreadable."""
    out = bytearray(slot)
    out[8:10] = struct.pack("<H", major)
    out[HEADER_SIZE - 4 :] = struct.pack("<I", zlib.crc32(bytes(out[: HEADER_SIZE - 4])))
    return bytes(out)


def test_an_intact_slot_that_is_refused_is_never_hidden_behind_a_repairable_one(
    tmp_path: Path,
) -> None:
    """The newest slot is intact but from a newer format version; the older one is one bit
    away from valid. The reader refuses with the version error alone: offering to restore
    the older generation would hide a newer writer's data."""
    data = bytearray(_two_generations(tmp_path))
    data[HEADER_SIZE : 2 * HEADER_SIZE] = _reseal(data[HEADER_SIZE : 2 * HEADER_SIZE], major=2)
    data[21] ^= 0x04  # slot 0 (generation 1): one flipped bit
    with pytest.raises(UnsupportedVersionError) as caught:
        _by_hand(bytes(data))
    assert str(caught.value) == (
        "by-hand: format version 2.0 is not supported; this reader knows version 1.x. "
        "Upgrade medmask."
    )


def _slot_0_repairable_slot_1_torn(tmp_path: Path) -> bytearray:
    data = bytearray(_two_generations(tmp_path))
    data[21] ^= 0x04  # slot 0 (generation 1): bit 2 of byte 21 flipped
    data[HEADER_SIZE + 20 : HEADER_SIZE + 28] = b"\xff" * 8  # slot 1: torn
    return data


REPAIRABLE = (
    "by-hand: no valid header slot (by-hand: header checksum mismatch; the file is "
    "corrupted.). header slot 0 is damaged (bit 2 of its byte 21 is flipped; its CRC locates "
    "the bit): it holds generation 1: open it with recover=True to restore that generation if "
    "its directory and chunks verify."
)


def test_only_the_two_slots_count_when_looking_for_an_intact_one(tmp_path: Path) -> None:
    """Bytes after the slots that happen to form an intact header (here a copy of slot 0
    over the start of the first directory) are not a third slot: the damaged slot 0 is still
    offered for repair."""
    data = _slot_0_repairable_slot_1_torn(tmp_path)
    with pytest.raises(ChecksumError) as plain:
        _by_hand(bytes(data))
    assert str(plain.value) == REPAIRABLE
    intact = bytearray(data[:HEADER_SIZE])
    intact[21] ^= 0x04
    data[2 * HEADER_SIZE : 3 * HEADER_SIZE] = intact
    with pytest.raises(ChecksumError) as copied:
        _by_hand(bytes(data))
    assert str(copied.value) == REPAIRABLE


class _AsyncRecording:
    """An async byte source over ``data`` that records every request."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.size = data, name, len(data)
        self.cache_key = ("recording", name)
        self.requests: list[list[tuple[int, int]]] = []

    async def read(self, start: int, end: int) -> bytes:
        return (await self.read_ranges([(start, end)]))[0]

    async def read_ranges(self, ranges: Any) -> list[bytes]:
        self.requests.append(list(ranges))
        return [self.data[a:b] for a, b in ranges]

    def close(self) -> None:
        pass


def test_async_reads_key_the_head_cache_by_the_source(msk: bytes) -> None:
    cache = HeadCache()
    cache.enable(max_entries=4)
    source = _AsyncRecording(msk, "k.msk")
    first = asyncio.run(read_directory_async(source, cache=cache))  # type: ignore[arg-type]
    again = asyncio.run(read_directory_async(source, cache=cache))  # type: ignore[arg-type]
    assert source.requests == [[(0, HEAD_GUESS)]]  # the second open costs no request
    assert (cache.hits, cache.misses) == (1, 1)
    assert again.archive == first.archive
    other = _AsyncRecording(msk, "other.msk")  # another key: read afresh
    asyncio.run(read_directory_async(other, cache=cache))  # type: ignore[arg-type]
    assert other.requests == [[(0, HEAD_GUESS)]]


def test_async_reads_require_the_kind_asked_for(msk: bytes) -> None:
    source = _AsyncRecording(msk, "k.msk")
    with pytest.raises(FormatError, match=r"^k\.msk: not a \.mska archive: starts with a \.msk"):
        asyncio.run(read_directory_async(source, kind="mska"))  # type: ignore[arg-type]
    assert asyncio.run(read_directory_async(source, kind="msk")).kind == "msk"  # type: ignore[arg-type]


def test_async_reads_recover_only_when_asked(tmp_path: Path) -> None:
    data = bytes(_slot_0_repairable_slot_1_torn(tmp_path))
    source = _AsyncRecording(data, "by-hand")
    with pytest.raises(ChecksumError) as caught:
        asyncio.run(read_directory_async(source))  # type: ignore[arg-type]
    assert str(caught.value) == REPAIRABLE
    with pytest.warns(RecoveryWarning, match="by-hand: restored generation 1"):
        restored = asyncio.run(read_directory_async(source, recover=True))  # type: ignore[arg-type]
    assert restored.recovered is not None
    assert restored.recovered.generation == 1
    assert [m.name for m in restored.members] == ["one"]


def _past_the_first_read(tmp_path: Path) -> tuple[bytes, ArchiveDirectory]:
    """An archive whose members ``m1`` and ``m2`` (four chunks each, all eight streams of
    the same length) lie past the first read: a removed filler member's bytes come first."""
    space = Space(shape=(8, 128, 128))
    filler = np.random.default_rng(0).integers(0, 32, space.shape, dtype=np.uint8)
    slab = np.zeros((2, 128, 128), np.uint8)
    slab[:, 10:50, 20:90] = 1
    slab[1, 60:70, 5:9] = 2
    data = np.concatenate([slab] * 4)
    path = tmp_path / "big.mska"
    with MaskArchive(path, "w", space=space) as archive:
        archive.add_segmask(
            SegmentationMask(filler, {f"f{v}": v for v in range(1, 32)}, space), "f"
        )
        for name in ("m1", "m2"):
            archive.add_segmask(
                SegmentationMask(data, {"a": 1, "b": 2}, space), name, chunks=(2, 128, 128)
            )
    with MaskArchive(path, "a") as archive:
        archive.remove("f")
    raw = path.read_bytes()
    directory = read_directory(open_source(io.BytesIO(raw)))
    return raw, directory.archive


def _chunk_spans(archive: ArchiveDirectory) -> list[tuple[int, int]]:
    spans = [
        (int(e["offset"]), int(e["offset"] + e["length"])) for m in archive.members for e in m.index
    ]
    assert spans[0][0] >= HEAD_GUESS
    assert len(spans) == 8
    assert len({b - a for a, b in spans}) == 1  # all the same length
    return spans


def test_checking_chunks_reads_them_in_batches_of_at_most_the_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restored generation's chunks are checked a batch of bytes at a time (across
    members); a batch may reach the limit exactly but never pass it."""
    data, archive = _past_the_first_read(tmp_path)
    spans = _chunk_spans(archive)
    length = spans[0][1] - spans[0][0]
    monkeypatch.setattr(reader, "_CHECK_BATCH", 2 * length)
    result, requests = _requests_of(reader._check_chunks(data[:HEAD_GUESS], archive, "f"), data)
    assert result is None
    assert requests == [spans[0:2], spans[2:4], spans[4:6], spans[6:8]]
    monkeypatch.setattr(reader, "_CHECK_BATCH", 3 * length - 1)  # two fit, three do not
    _, requests = _requests_of(reader._check_chunks(data[:HEAD_GUESS], archive, "f"), data)
    assert requests == [spans[0:2], spans[2:4], spans[4:6], spans[6:8]]
    monkeypatch.setattr(reader, "_CHECK_BATCH", 3 * length)
    _, requests = _requests_of(reader._check_chunks(data[:HEAD_GUESS], archive, "f"), data)
    assert requests == [spans[0:3], spans[3:6], spans[6:8]]


def test_checking_chunks_reads_at_most_the_chunk_limit_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, archive = _past_the_first_read(tmp_path)
    spans = _chunk_spans(archive)
    monkeypatch.setattr(reader, "_CHECK_CHUNKS", 3)
    _, requests = _requests_of(reader._check_chunks(data[:HEAD_GUESS], archive, "f"), data)
    assert requests == [spans[0:3], spans[3:6], spans[6:8]]
    monkeypatch.setattr(reader, "_CHECK_CHUNKS", 8)
    _, requests = _requests_of(reader._check_chunks(data[:HEAD_GUESS], archive, "f"), data)
    assert requests == [spans]


def test_checking_chunks_refuses_a_damaged_one_naming_its_member(tmp_path: Path) -> None:
    data, archive = _past_the_first_read(tmp_path)
    spans = _chunk_spans(archive)
    damaged = bytearray(data)
    damaged[spans[5][0] + 10] ^= 0x01  # m2's second chunk
    with pytest.raises(ChecksumError) as caught:
        _requests_of(reader._check_chunks(data[:HEAD_GUESS], archive, "f"), bytes(damaged))
    assert str(caught.value) == (
        "f [m2]: chunk 1 checksum mismatch; the file is corrupted (or was replaced since it "
        "was opened)."
    )
