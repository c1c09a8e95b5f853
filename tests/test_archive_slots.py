"""A damaged newest header slot (format.md section 5): readers fall back, ``verify()`` and
``medmask verify`` report the newer directory, ``recover=True`` restores it when it verifies."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

from medmask import (
    ChecksumError,
    FormatError,
    ReadOnlyError,
    SegmentationMask,
    UnsupportedVersionError,
    reader,
)
from medmask.archive import MaskArchive, RecoveryWarning
from medmask.format.container import HEADER_SIZE
from medmask.format.mska import SLOTS_SIZE, valid_slots
from medmask.io import HEAD_GUESS, LocalSource, ThreadedSource, head_cache
from medmask.reader import Directory

SPACE = Space(shape=(12, 20, 24), origin=(1.0, -2.0, 3.0), spacing=(2.0, 0.8, 0.8))
NAMES = ["m1", "m2", "m3"]

# (byte, bit) inside the newest slot, one per field class
BIT_CLASSES = {
    "magic": (3, 1),
    "generation low": (20, 0),
    "generation high": (27, 7),
    "metadata offset": (28, 6),
    "metadata length": (37, 2),
    "metadata crc": (41, 4),
    "index offset": (45, 0),
    "index count": (52, 3),
    "index crc": (58, 7),
    "header crc": (62, 5),
}


def _member(i: int) -> SegmentationMask:
    data = np.zeros(SPACE.shape, np.uint8)
    data[i : i + 4, 2 + i : 11, 3 : 9 + i] = i
    data[8:11, 12:18, i : i + 5] = i + 10
    return SegmentationMask(data, {f"a{i}": i, f"b{i}": i + 10}, space=SPACE)


def _flip(path: Path, byte: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[byte] ^= 1 << bit
    path.write_bytes(bytes(data))


def _generations(path: Path) -> dict[int, int]:
    return {s: h.generation for s, h in valid_slots(path.read_bytes(), name=str(path))}


@pytest.fixture(scope="module")
def three_generations_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generation 1 (m1) in slot 0, 2 (m2) in slot 1, 3 (m3) in slot 0."""
    path = tmp_path_factory.mktemp("slots") / "three.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_segmask(_member(1), "m1")
    for i in (2, 3):
        with MaskArchive(path, "a") as archive:
            archive.add_segmask(_member(i), f"m{i}")
    assert _generations(path) == {0: 3, 1: 2}
    return path


@pytest.fixture
def archive_path(three_generations_file: Path, tmp_path: Path) -> Path:
    path = tmp_path / "three.mska"
    shutil.copyfile(three_generations_file, path)
    return path


def _assert_members(archive: MaskArchive, names: list[str]) -> None:
    assert archive.all_names() == names
    for name in names:
        expected = _member(int(name[1:]))
        loaded = archive.load_segmask(name)
        assert loaded.data.dtype == expected.data.dtype
        np.testing.assert_array_equal(loaded.data, expected.data)
        assert loaded.mapping == expected.mapping


def _verify_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medmask", "verify", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )


@pytest.mark.parametrize("field", list(BIT_CLASSES))
def test_flipped_bit_in_newest_slot_is_reported_and_restorable(
    archive_path: Path, field: str
) -> None:
    byte, bit = BIT_CLASSES[field]
    _flip(archive_path, byte, bit)  # slot 0 holds generation 3
    assert _generations(archive_path) == {1: 2}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reader without recover falls back without a word
        with MaskArchive(archive_path) as archive:
            assert archive.generation == 2
            _assert_members(archive, ["m1", "m2"])
            problems = archive.verify()
    assert len(problems) == 1
    assert f"header slot 0 is damaged (bit {bit} of its byte {byte}" in problems[0]
    assert "generation 3, newer than generation 2 in use" in problems[0]
    assert "not visible now: ['m3']" in problems[0]
    assert "recover=True) restores generation 3" in problems[0]

    result = _verify_cli(archive_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith(f"FAILED {archive_path}")
    assert "header slot 0 is damaged" in result.stdout
    assert "Traceback" not in result.stderr

    with pytest.warns(RecoveryWarning, match="restored generation 3 from damaged header slot 0"):
        archive = MaskArchive(archive_path, recover=True)
    with archive:
        assert archive.generation == 3
        assert archive.recovered is not None
        assert archive.recovered.restored
        assert (archive.recovered.generation, archive.recovered.damaged_generation) == (3, 3)
        _assert_members(archive, NAMES)
        assert archive.verify() == []


def test_restored_generation_becomes_current_only_when_asked(archive_path: Path) -> None:
    _flip(archive_path, 45, 0)
    before = archive_path.read_bytes()
    # appending without recover would overwrite the damaged slot and lose generation 3
    with MaskArchive(archive_path, "a") as archive:
        with pytest.raises(ReadOnlyError, match=r"slot 0 is damaged.*recover=True"):
            archive.add_segmask(_member(4), "m4")
        with pytest.raises(ReadOnlyError):
            archive.compact()
    with (
        pytest.warns(RecoveryWarning),
        MaskArchive(archive_path, "a", recover=True) as archive,
        pytest.raises(ReadOnlyError, match="allow_rollback=True"),
    ):
        archive.add_segmask(_member(4), "m4")
    assert archive_path.read_bytes() == before
    with (
        pytest.warns(RecoveryWarning),
        MaskArchive(archive_path, "a", recover=True, allow_rollback=True) as archive,
    ):
        archive.add_segmask(_member(4), "m4")
    assert _generations(archive_path) == {1: 4}  # above the damaged generation 3
    with MaskArchive(archive_path) as archive:
        assert archive.recovered is None
        _assert_members(archive, [*NAMES, "m4"])
        assert archive.verify() == []


@pytest.mark.parametrize("torn", ["zeros", "random", "second half zeroed"])
def test_torn_newest_slot_still_falls_back_silently(archive_path: Path, torn: str) -> None:
    data = bytearray(archive_path.read_bytes())
    if torn == "zeros":
        data[:HEADER_SIZE] = bytes(HEADER_SIZE)
    elif torn == "random":
        data[:HEADER_SIZE] = np.random.default_rng(7).bytes(HEADER_SIZE)
    else:
        data[32:HEADER_SIZE] = bytes(32)
    archive_path.write_bytes(bytes(data))
    with MaskArchive(archive_path) as archive:
        _assert_members(archive, ["m1", "m2"])
        assert archive.verify() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with MaskArchive(archive_path, recover=True) as archive:
            assert archive.recovered is None
            assert archive.generation == 2
    with MaskArchive(archive_path, "a") as archive:  # the interrupted commit is superseded
        archive.add_segmask(_member(4), "m4")
    with MaskArchive(archive_path) as archive:
        _assert_members(archive, ["m1", "m2", "m4"])


def test_slot_damaged_in_several_bits_is_reported_but_not_restored(archive_path: Path) -> None:
    """Fields as written still lead to a complete directory, but no checksum confirms the
    slot's generation: reported, never restored."""
    _flip(archive_path, 60, 0)
    _flip(archive_path, 62, 3)
    with MaskArchive(archive_path) as archive:
        problems = archive.verify()
    assert len(problems) == 1
    assert "fails its checksum in more than one bit" in problems[0]
    assert "cannot be confirmed" in problems[0]
    assert "not visible now: ['m3']" in problems[0]
    assert _verify_cli(archive_path).returncode == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with MaskArchive(archive_path, recover=True) as archive:
            assert archive.generation == 2
            assert archive.recovered is None


@pytest.mark.parametrize("where", ["directory", "chunk"])
def test_damaged_slot_pointing_at_damage_is_not_restored(archive_path: Path, where: str) -> None:
    with MaskArchive(archive_path) as archive:
        m3 = archive["m3"].descriptor, archive._directory.member("m3")
    assert m3[1] is not None
    slot = valid_slots(archive_path.read_bytes(), name="x")[0][1]
    assert slot.generation == 3
    if where == "directory":
        _flip(archive_path, slot.metadata_offset + 5, 2)
    else:  # a chunk only generation 3 holds
        stored = m3[1].index[m3[1].index["length"] > 0]
        _flip(archive_path, int(stored["offset"][0]) + int(stored["length"][0]) // 2, 1)
    _flip(archive_path, 20, 1)  # the newest slot
    with MaskArchive(archive_path) as archive:
        _assert_members(archive, ["m1", "m2"])
        problems = archive.verify()
    assert len(problems) == 1
    assert "header slot 0 is damaged" in problems[0]
    assert "does not verify" in problems[0]
    assert "checksum mismatch" in problems[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with MaskArchive(archive_path, recover=True) as archive:
            assert archive.recovered is None
            _assert_members(archive, ["m1", "m2"])


def test_single_generation_archive_with_a_flipped_slot_bit(tmp_path: Path) -> None:
    """No intact slot at all: the error says a repair exists; recover=True restores it."""
    path = tmp_path / "one.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_segmask(_member(1), "m1")
    _flip(path, 44, 4)
    with pytest.raises(ChecksumError, match=r"one\.mska.*slot 0 is damaged.*recover=True"):
        MaskArchive(path)
    with pytest.warns(RecoveryWarning, match="restored generation 1"):
        archive = MaskArchive(path, recover=True)
    with archive:
        _assert_members(archive, ["m1"])
        assert archive.verify() == []


@pytest.mark.parametrize(("batch_bytes", "batch_chunks"), [(1, 1 << 16), (1 << 30, 2)])
def test_restore_checks_every_chunk_in_bounded_batches(
    archive_path: Path, monkeypatch: pytest.MonkeyPatch, batch_bytes: int, batch_chunks: int
) -> None:
    """Chunks are read in batches; a damaged chunk in the last batch still stops a restore."""
    monkeypatch.setattr(reader, "_CHECK_BATCH", batch_bytes)
    monkeypatch.setattr(reader, "_CHECK_CHUNKS", batch_chunks)
    requests: list[int] = []
    blocks = reader._blocks

    def counting(head: bytes, ranges: list[tuple[int, int]]) -> object:
        requests.append(len(ranges))
        return (yield from blocks(head, ranges))

    monkeypatch.setattr(reader, "_blocks", counting)
    _flip(archive_path, 20, 0)
    with pytest.warns(RecoveryWarning):
        archive = MaskArchive(archive_path, recover=True)
    with archive:
        _assert_members(archive, NAMES)
        m3 = archive._directory.member("m3")
    assert m3 is not None
    assert max(requests) <= batch_chunks
    assert len(requests) > 3  # slots' directories, then several chunk batches
    stored = m3.index[m3.index["length"] > 0]
    last = int(stored["offset"][-1]) + int(stored["length"][-1]) - 2
    _flip(archive_path, last, 0)  # m3's last chunk
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with MaskArchive(archive_path, recover=True) as archive:
            assert archive.generation == 2


def test_damaged_slot_and_damaged_fallback_directory(archive_path: Path) -> None:
    """Slot 0 (generation 3) one bit off, and generation 2's directory corrupt: the default
    open refuses and names both; recover=True restores generation 3."""
    older = valid_slots(archive_path.read_bytes(), name="x")[1][1]
    assert older.generation == 2
    _flip(archive_path, older.index_offset + 3, 6)
    _flip(archive_path, 52, 0)
    with pytest.raises(ChecksumError, match=r"generation 2.*Also, header slot 0 is damaged.*"):
        MaskArchive(archive_path)
    assert _verify_cli(archive_path).returncode == 1
    with pytest.warns(RecoveryWarning, match="without recover=True cannot open the file"):
        archive = MaskArchive(archive_path, recover=True)
    with archive:
        assert archive.recovered is not None
        assert archive.recovered.restored
        _assert_members(archive, NAMES)


def test_s3_damaged_slot_reported_and_restored(s3: Any, archive_path: Path) -> None:
    good = archive_path.read_bytes()
    newest = valid_slots(good, name="x")[0][1]
    far = replace(newest, metadata_offset=newest.metadata_offset + 2**63).pack()
    for name in ("restorable", "past the end"):
        data = bytearray(good)
        if name == "past the end":  # a slot once valid, whose directory is not in the file
            data[:HEADER_SIZE] = far
        data[61] ^= 1 << 2  # one bit of the slot's CRC
        s3.fs.pipe_file(s3.path(f"{name}.mska"), bytes(data))
        url = s3.url(f"{name}.mska")
        with MaskArchive(url, storage_options=s3.storage_options) as archive:
            _assert_members(archive, ["m1", "m2"])
            problems = archive.verify()
        assert len(problems) == 1
        assert "header slot 0 is damaged" in problems[0]
        if name == "restorable":
            assert "not visible now: ['m3']" in problems[0]
            with pytest.warns(RecoveryWarning):
                archive = MaskArchive(url, storage_options=s3.storage_options, recover=True)
            with archive:
                _assert_members(archive, NAMES)
        else:
            assert "past the end of the file" in problems[0]
            with MaskArchive(url, storage_options=s3.storage_options, recover=True) as archive:
                assert archive.recovered is None
                assert archive.generation == 2


# --- exact outcomes of recover=True, on both drivers ----------------------------------------------


class _Recording(LocalSource):
    """A local source that records every request (and may carry a head-cache key)."""

    def __init__(self, path: Path, cache_key: tuple[str, str] | None = None) -> None:
        super().__init__(str(path))
        self.cache_key = cache_key
        self.requests: list[list[tuple[int, int]]] = []

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self.requests.append(list(ranges))
        return super().read_ranges(ranges)


def _open_both(path: Path, **kwargs: Any) -> tuple[Directory, Directory, list[str], list[str]]:
    """The directory read with the blocking and with the async driver, and the warnings each
    gave (every one must be attributed to this file, the caller's)."""
    found = []
    runs: list[Callable[[], Directory]] = [
        lambda: reader.read_directory(LocalSource(str(path)), **kwargs),
        lambda: asyncio.run(
            reader.read_directory_async(ThreadedSource(LocalSource(str(path))), **kwargs)
        ),
    ]
    for run in runs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            directory = run()
        for w in caught:
            assert w.category is RecoveryWarning
        found.append((directory, [str(w.message) for w in caught]))
    (sync, sync_warnings), (async_, async_warnings) = found
    assert sync_warnings == async_warnings
    for field in ("generation", "slot", "max_generation", "recovered", "damaged", "head"):
        assert getattr(sync, field) == getattr(async_, field), field
    assert [m.name for m in sync.members] == [m.name for m in async_.members]
    return sync, async_, sync_warnings, async_warnings


def _chunk_of(path: Path, name: str) -> int:
    """An offset inside member ``name``'s first stored chunk."""
    with MaskArchive(path) as archive:
        member = archive._directory.member(name)
    assert member is not None
    stored = member.index[member.index["length"] > 0]
    return int(stored["offset"][0]) + int(stored["length"][0]) // 2


def test_recover_restores_a_newer_slot_and_names_the_generation_others_use(
    archive_path: Path,
) -> None:
    _flip(archive_path, 20, 0)
    directory, _, messages, _ = _open_both(archive_path, recover=True)
    describe = (
        "header slot 0 is damaged (bit 0 of its byte 20 is flipped; its CRC locates the bit): "
        "it holds generation 3"
    )
    assert directory.recovered == reader.RecoveryReport(3, 3, describe, restored=True)
    assert (directory.generation, directory.slot, directory.max_generation) == (3, 0, 3)
    assert messages == [
        f"{archive_path}: restored generation 3 from damaged header slot 0 (its directory and "
        "chunks verify); readers without recover=True use generation 2"
    ]
    plain, _, quiet, _ = _open_both(archive_path)  # recover defaults to False on both drivers
    assert (plain.generation, plain.recovered, quiet) == (2, None, [])
    assert [d.slot for d in plain.damaged] == [0]
    assert directory.member("m3") is directory.members[2]
    assert plain.member("m3") is None


def test_recover_opens_the_older_slot_when_the_newest_directory_is_damaged(
    archive_path: Path,
) -> None:
    newest = valid_slots(archive_path.read_bytes(), name="x")[0][1]
    _flip(archive_path, newest.index_offset + 3, 6)
    problem = f"{archive_path}: chunk index checksum mismatch; the file is corrupted."
    with pytest.raises(ChecksumError) as caught:
        reader.read_directory(LocalSource(str(archive_path)))
    assert str(caught.value) == (
        f"{problem} This is the archive's newest intact state (generation 3): the file is "
        "corrupted. Open it with recover=True to read the newest generation that verifies "
        "(read-only)."
    )
    directory, _, messages, _ = _open_both(archive_path, recover=True)
    assert directory.recovered == reader.RecoveryReport(2, 3, problem, restored=False)
    assert (directory.generation, directory.slot) == (2, 1)
    assert [m.name for m in directory.members] == ["m1", "m2"]
    assert messages == [
        f"{archive_path}: opened generation 2; the newest generation 3 is damaged ({problem})"
    ]


def test_recover_repairs_the_older_slot_when_the_newest_directory_is_damaged(
    archive_path: Path,
) -> None:
    """Generation 3's directory is corrupt and generation 2's slot is one bit off: the repaired
    slot is a candidate although it is older than the newest valid one."""
    newest = valid_slots(archive_path.read_bytes(), name="x")[0][1]
    _flip(archive_path, newest.index_offset + 3, 6)
    _flip(archive_path, HEADER_SIZE + 20, 1)
    problem = f"{archive_path}: chunk index checksum mismatch; the file is corrupted."
    directory, _, messages, _ = _open_both(archive_path, recover=True)
    assert directory.recovered == reader.RecoveryReport(2, 3, problem, restored=False)
    assert (directory.generation, directory.slot) == (2, 1)
    assert [m.name for m in directory.members] == ["m1", "m2"]
    assert messages == [
        f"{archive_path}: opened generation 2; the newest generation 3 is damaged ({problem})"
    ]


@pytest.mark.parametrize("generation_3", ["verifies", "chunk damaged"])
def test_both_slots_one_bit_off_restore_the_newest_that_verifies(
    archive_path: Path, generation_3: str
) -> None:
    if generation_3 == "chunk damaged":
        _flip(archive_path, _chunk_of(archive_path, "m3"), 1)
    _flip(archive_path, 20, 0)  # generation 3
    _flip(archive_path, HEADER_SIZE + 20, 1)  # generation 2
    with pytest.raises(ChecksumError, match=r"slot 0 is damaged .*generation 3: open it with"):
        reader.read_directory(LocalSource(str(archive_path)))
    directory, _, messages, _ = _open_both(archive_path, recover=True)
    generation, slot = (3, 0) if generation_3 == "verifies" else (2, 1)
    assert (directory.generation, directory.slot, directory.max_generation) == (
        generation,
        slot,
        3,
    )
    assert [m.name for m in directory.members] == NAMES[:generation]
    assert directory.recovered is not None
    assert directory.recovered.generation == generation
    assert directory.recovered.damaged_generation == 3  # the newest, restored or failed
    assert directory.recovered.restored
    assert directory.recovered.problem.startswith(
        f"header slot {slot} is damaged (bit {slot} of its byte 20 is flipped"
    )
    newer = "" if generation == 3 else "; the newest generation 3 does not verify"
    assert messages == [
        f"{archive_path}: restored generation {generation} from damaged header slot {slot} "
        f"(its directory and chunks verify){newer}; readers without recover=True cannot open "
        "the file"
    ]


def test_equal_generations_in_two_damaged_slots_restore_slot_0(archive_path: Path) -> None:
    """As for valid slots (equal generations: slot 0 first)."""
    data = bytearray(archive_path.read_bytes())
    data[HEADER_SIZE:SLOTS_SIZE] = data[:HEADER_SIZE]  # generation 3 in both slots
    data[20] ^= 1
    data[HEADER_SIZE + 21] ^= 2
    archive_path.write_bytes(bytes(data))
    directory, _, messages, _ = _open_both(archive_path, recover=True)
    assert (directory.generation, directory.slot) == (3, 0)
    assert messages[0].endswith(
        "restored generation 3 from damaged header slot 0 (its "
        "directory and chunks verify); readers without recover=True "
        "cannot open the file"
    )


def test_an_intact_but_unusable_newest_slot_is_never_hidden_behind_a_repair(
    archive_path: Path,
) -> None:
    data = bytearray(archive_path.read_bytes())
    newest = valid_slots(bytes(data), name="x")[0][1]
    data[:HEADER_SIZE] = replace(newest, major=newest.major + 1).pack()
    data[HEADER_SIZE + 20] ^= 2  # generation 2's slot: one flipped bit, repairable
    archive_path.write_bytes(bytes(data))
    expected = (
        f"{archive_path}: format version 2.0 is not supported; this reader knows version 1.x. "
        "Upgrade medmask."
    )
    for recover in (False, True):
        with pytest.raises(UnsupportedVersionError) as caught:
            reader.read_directory(LocalSource(str(archive_path)), recover=recover)
        assert str(caught.value) == expected
        with pytest.raises(UnsupportedVersionError) as caught:
            asyncio.run(
                reader.read_directory_async(
                    ThreadedSource(LocalSource(str(archive_path))), recover=recover
                )
            )
        assert str(caught.value) == expected


def test_a_damaged_slot_pointing_past_the_end_is_probed_with_one_byte(tmp_path: Path) -> None:
    """Its directory is never fetched: only one byte at its end, past the end of the file."""
    path = tmp_path / "big.mska"
    rng = np.random.default_rng(3)
    noisy = SegmentationMask(
        rng.integers(0, 4, size=(48, 48, 48), dtype=np.uint8), {"a": 1, "b": 2, "c": 3}
    )
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(noisy, "noise")
    with MaskArchive(path, "a") as archive:
        archive.add_segmask(noisy, "again")
    data = bytearray(path.read_bytes())
    size = len(data)
    assert size > HEAD_GUESS  # the first read does not cover the end
    slot, newest = valid_slots(bytes(data), name="x")[0]
    far = replace(newest, metadata_offset=size + 1000, metadata_length=1 << 20)
    data[slot * HEADER_SIZE : (slot + 1) * HEADER_SIZE] = far.pack()
    data[slot * HEADER_SIZE + 61] ^= 4  # one bit of its CRC: repairable
    path.write_bytes(bytes(data))
    source = _Recording(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        directory = reader.read_directory(source, recover=True)
    assert (directory.generation, directory.recovered) == (1, None)
    past = [(s, e) for ranges in source.requests for s, e in ranges if e > size]
    assert past == [(size + 1000 + (1 << 20) - 1, size + 1000 + (1 << 20))]


def _batches(monkeypatch: pytest.MonkeyPatch, path: Path, chunks: int, nbytes: int) -> list[Any]:
    monkeypatch.setattr(reader, "_CHECK_BATCH", nbytes)
    monkeypatch.setattr(reader, "_CHECK_CHUNKS", chunks)
    seen: list[list[int]] = []
    check_batch = reader._check_batch

    def recording(head: bytes, batch: list[Any], name: str) -> Any:
        seen.append([n for *_, n in batch])
        return (yield from check_batch(head, batch, name))

    monkeypatch.setattr(reader, "_check_batch", recording)
    with pytest.warns(RecoveryWarning):
        directory = reader.read_directory(LocalSource(str(path)), recover=True)
    assert directory.generation == 3
    return seen


def test_restore_batches_chunks_greedily_up_to_both_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chunky.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_segmask(_member(1), "m1", chunks=(4, 10, 12))
    for i in (2, 3):
        with MaskArchive(path, "a") as archive:
            archive.add_segmask(_member(i), f"m{i}", chunks=(4, 10, 12))
    _flip(path, 20, 0)  # generation 3: its every chunk is checked before it is restored
    lengths = [n for batch in _batches(monkeypatch, path, 1 << 16, 1 << 30) for n in batch]
    assert len(lengths) >= 12
    assert _batches(monkeypatch, path, 1 << 16, sum(lengths)) == [lengths]  # one batch
    assert _batches(monkeypatch, path, 1 << 16, sum(lengths) - 1) == [lengths[:-1], lengths[-1:]]
    for count in (1, 2, 5):  # by count: exactly ``count`` chunks a batch
        assert _batches(monkeypatch, path, count, 1 << 30) == [
            lengths[i : i + count] for i in range(0, len(lengths), count)
        ]
    # by bytes: a batch takes chunks while their sum stays at or under the limit
    pair, next_pair = lengths[0] + lengths[1], lengths[2] + lengths[3]
    for limit in (pair, pair + 1, pair - 1, next_pair, next_pair - 1, max(lengths)):
        expected: list[list[int]] = []
        for n in lengths:
            if expected and sum(expected[-1]) + n <= limit:
                expected[-1].append(n)
            else:
                expected.append([n])
        assert _batches(monkeypatch, path, 1 << 16, limit) == expected, limit


def test_async_reader_uses_and_fills_the_head_cache_like_the_blocking_one(
    archive_path: Path,
) -> None:
    key = ("file", str(archive_path))
    head_cache.enable()
    first = _Recording(archive_path)
    threaded = ThreadedSource(first)
    threaded.cache_key = key  # type: ignore[attr-defined]
    directory = asyncio.run(reader.read_directory_async(threaded))
    assert first.requests == [[(0, HEAD_GUESS)]]  # the whole (small) archive in one read
    assert head_cache.get(key) == directory.head == archive_path.read_bytes()
    again = _Recording(archive_path)
    threaded = ThreadedSource(again)
    threaded.cache_key = key  # type: ignore[attr-defined]
    assert asyncio.run(reader.read_directory_async(threaded)).generation == 3
    blocking = _Recording(archive_path, cache_key=key)
    assert reader.read_directory(blocking).generation == 3
    assert again.requests == blocking.requests == []  # both served from the cache


@pytest.mark.parametrize("kind", ["msk", "mska"])
def test_async_reader_requires_the_kind_asked_for(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("m.mska" if kind == "msk" else "m.msk")
    if kind == "msk":
        with MaskArchive(path, "w", space=SPACE) as archive:
            archive.add_segmask(_member(1), "m1")
    else:
        _member(1).save(path)
    errors = []
    runs: list[Callable[[], Directory]] = [
        lambda: reader.read_directory(LocalSource(str(path)), kind=kind),  # type: ignore[arg-type]
        lambda: asyncio.run(
            reader.read_directory_async(ThreadedSource(LocalSource(str(path))), kind=kind)  # type: ignore[arg-type]
        ),
    ]
    for run in runs:
        with pytest.raises(FormatError) as caught:
            run()
        errors.append((type(caught.value), str(caught.value)))
    expected = {
        "msk": f"{path}: not a .msk file: starts with a .mska archive.",
        "mska": f"{path}: not a .mska archive: starts with a .msk file.",
    }
    assert errors == [(FormatError, expected[kind])] * 2


def test_recovery_warning_points_at_the_callers_line(archive_path: Path) -> None:
    """Not at a line inside medmask: a warning filter or report names the user's code."""
    _flip(archive_path, 20, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        MaskArchive(archive_path, recover=True).close()
        second = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        reader.read_directory(LocalSource(str(archive_path)), recover=True)
    assert [w.category for w in caught] == [RecoveryWarning] * 2
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, first), (__file__, second)]


def test_only_the_two_header_slots_count_as_slots(archive_path: Path) -> None:
    """Bytes right after the slots that hold an intact slot (here over generation 1's
    directory, which nothing uses any more) do not hide the repairable slots."""
    data = bytearray(archive_path.read_bytes())
    data[SLOTS_SIZE : SLOTS_SIZE + HEADER_SIZE] = data[:HEADER_SIZE]
    data[20] ^= 1
    data[HEADER_SIZE + 20] ^= 2
    archive_path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"slot 0 is damaged .*: open it with recover=True"):
        reader.read_directory(LocalSource(str(archive_path)))
    directory, _, messages, _ = _open_both(archive_path, recover=True)
    assert (directory.generation, directory.slot) == (3, 0)
    assert len(messages) == 1


def test_equal_generations_in_two_valid_slots_fall_back_to_slot_1(archive_path: Path) -> None:
    """Slot 1 names generation 3 too (over generation 2's directory): when slot 0's
    directory is damaged, recover=True opens slot 1 as an older state, not a restored one."""
    data = bytearray(archive_path.read_bytes())
    (_, newest), (_, older) = valid_slots(bytes(data), name="x")
    data[HEADER_SIZE:SLOTS_SIZE] = replace(older, generation=3).pack()
    data[newest.index_offset + 3] ^= 1 << 6
    archive_path.write_bytes(bytes(data))
    problem = f"{archive_path}: chunk index checksum mismatch; the file is corrupted."
    directory, _, messages, _ = _open_both(archive_path, recover=True)
    assert directory.recovered == reader.RecoveryReport(3, 3, problem, restored=False)
    assert (directory.generation, directory.slot) == (3, 1)
    assert [m.name for m in directory.members] == ["m1", "m2"]
    assert messages == [
        f"{archive_path}: opened generation 3; the newest generation 3 is damaged ({problem})"
    ]
