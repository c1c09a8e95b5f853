"""Crash safety of ``.mska`` appends: SIGKILL a writer at random moments, tear slots by hand."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spacetransformer import Space

from archive_writer import (
    BIG_ENV,
    FIRST_VISIBLE_STEP,
    KILL_ENV,
    KILL_STEPS,
    make_member,
    member_name,
)
from medmask import ChecksumError, FormatError, ReadOnlyError
from medmask.archive import MaskArchive, RecoveryReport, RecoveryWarning
from medmask.format.container import HEADER_SIZE, INDEX_DTYPE, Header
from medmask.format.mska import valid_slots

WRITER = Path(__file__).with_name("archive_writer.py")
SPACE = Space(shape=(16, 40, 48), origin=(12.0, -30.5, 100.0), spacing=(2.0, 0.9, 0.9))
BASE = ["base_0", "base_1", "base_2"]
N_WRITES = 40
TRIALS = 20
LINE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def base_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "base.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        for name in BASE:
            archive.add_segmask(make_member(name, SPACE), name)
    return path


def _expected(name: str, big: bool) -> np.ndarray:
    return make_member(name, SPACE, big=big and name not in BASE).data


def _used_end(path: Path) -> tuple[int, int]:
    """(end of the live data of the newest valid slot, file size)."""
    data = path.read_bytes()
    _, header = valid_slots(data, name=str(path))[0]
    end = header.index_offset + header.index_length
    index = np.frombuffer(data[header.index_offset : end], dtype=INDEX_DTYPE)
    if len(index):
        end = max(end, int(np.max(index["offset"] + index["length"])))
    return end, len(data)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_during_appends_never_corrupts(
    base_archive: Path, tmp_path: Path, trial: int
) -> None:
    """The writer kills itself at a point of the update protocol inside a commit, so every
    trial crashes in the middle of a write (payload, directory, fsync, slot: ``KILL_STEPS``)."""
    rng = np.random.default_rng(20_000 + trial)
    big = trial % 2 == 1
    step = KILL_STEPS[trial % len(KILL_STEPS)]
    killed_member = int(rng.integers(0, 4))
    path = tmp_path / "archive.mska"
    shutil.copyfile(base_archive, path)
    env = {**os.environ, BIG_ENV: "1" if big else "0", KILL_ENV: f"{killed_member}:{step}"}
    proc = subprocess.run(
        [sys.executable, str(WRITER), str(path), "0", str(N_WRITES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=LINE_TIMEOUT,
    )
    assert proc.returncode == -signal.SIGKILL, f"not killed mid-write: {proc.stderr}"
    lines = proc.stdout.split()
    printed = [lines[i + 1] for i, word in enumerate(lines) if word == "added"]
    assert printed == [member_name(i) for i in range(killed_member)]

    committed = killed_member + (KILL_STEPS.index(step) >= FIRST_VISIBLE_STEP)
    with MaskArchive(path) as archive:
        names = archive.all_names()
        # every acknowledged member is there, plus the killed one once its slot is written
        assert names == BASE + [member_name(i) for i in range(committed)]
        for name in names:
            loaded = archive.load_segmask(name)
            assert loaded.space == SPACE
            np.testing.assert_array_equal(loaded.data, _expected(name, big), err_msg=name)
        assert archive.verify() == []
    used, size = _used_end(path)
    print(
        f"\ntrial {trial:2d} big={big!s:5} killed in member {killed_member} at {step:18}: "
        f"committed {committed}, uncommitted tail {size - used} B"
    )

    # the archive stays appendable after the crash
    extra = make_member("after_crash", SPACE)
    with MaskArchive(path, "a") as archive:
        archive.add_segmask(extra, "after_crash")
    with MaskArchive(path) as archive:
        assert archive.all_names() == [*names, "after_crash"]
        np.testing.assert_array_equal(archive.load_segmask("after_crash").data, extra.data)
        np.testing.assert_array_equal(
            archive.load_segmask(names[-1]).data, _expected(names[-1], big)
        )


def test_every_kill_step_is_reached() -> None:
    """The trials cover each step of the protocol (both slot outcomes included)."""
    steps = {KILL_STEPS[t % len(KILL_STEPS)] for t in range(TRIALS)}
    assert steps == set(KILL_STEPS)


# --- byte-level surgery on header slots and directories -----------------------------------------


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _slots(path: Path) -> dict[int, Header]:
    return dict(valid_slots(path.read_bytes(), name=str(path)))


@pytest.fixture
def two_generations(base_archive: Path, tmp_path: Path) -> Path:
    """The base archive plus one appended member: generation 1 in slot 0, 2 in slot 1."""
    path = tmp_path / "gen.mska"
    shutil.copyfile(base_archive, path)
    assert {s: h.generation for s, h in _slots(path).items()} == {0: 1}
    with MaskArchive(path, "a") as archive:
        archive.add_segmask(make_member("newest", SPACE), "newest")
    assert {s: h.generation for s, h in _slots(path).items()} == {0: 1, 1: 2}
    return path


def _assert_previous_generation(path: Path, recover: bool = False) -> None:
    with MaskArchive(path, recover=recover) as archive:
        assert archive.all_names() == BASE
        for name in BASE:
            np.testing.assert_array_equal(
                archive.load_segmask(name).data, make_member(name, SPACE).data
            )


def test_corrupt_newest_header_slot_falls_back_to_previous_generation(
    two_generations: Path,
) -> None:
    _flip(two_generations, HEADER_SIZE + 24)  # inside slot 1's generation/offset fields
    assert set(_slots(two_generations)) == {0}
    _assert_previous_generation(two_generations)


def test_torn_newest_header_slot_falls_back(two_generations: Path) -> None:
    with two_generations.open("r+b") as f:  # only the first half of the slot got written
        f.seek(HEADER_SIZE + 32)
        f.write(bytes(32))
    _assert_previous_generation(two_generations)


@pytest.mark.parametrize("part", ["metadata", "index"])
def test_corrupt_newest_directory_is_reported_and_recovery_is_explicit(
    two_generations: Path, part: str
) -> None:
    newest = _slots(two_generations)[1]
    offset = newest.metadata_offset + 7 if part == "metadata" else newest.index_offset + 9
    _flip(two_generations, offset)
    assert set(_slots(two_generations)) == {0, 1}  # both headers are intact
    # a valid slot whose directory fails its CRC is corruption, not a torn write
    for mode in ("r", "a"):
        with pytest.raises(ChecksumError, match=r"gen\.mska.*generation 2.*recover=True"):
            MaskArchive(two_generations, mode)  # type: ignore[arg-type]
    with pytest.warns(RecoveryWarning, match="opened generation 1"):
        archive = MaskArchive(two_generations, recover=True)
    with archive:
        assert archive.recovered == RecoveryReport(1, 2, archive.recovered.problem)
        assert "checksum mismatch" in archive.recovered.problem
        assert archive.generation == 1
    with pytest.warns(RecoveryWarning):
        _assert_previous_generation(two_generations, recover=True)
    # appends never start from the rolled-back state unless asked for
    with (
        pytest.warns(RecoveryWarning),
        MaskArchive(two_generations, "a", recover=True) as archive,
        pytest.raises(ReadOnlyError, match="allow_rollback=True"),
    ):
        archive.add_segmask(make_member("again", SPACE), "again")
    assert {s: h.generation for s, h in _slots(two_generations).items()} == {0: 1, 1: 2}
    with (
        pytest.warns(RecoveryWarning),
        MaskArchive(two_generations, "a", recover=True, allow_rollback=True) as archive,
    ):
        archive.add_segmask(make_member("again", SPACE), "again")
    # the new generation supersedes the damaged one
    assert {s: h.generation for s, h in _slots(two_generations).items()} == {0: 1, 1: 3}
    with MaskArchive(two_generations) as archive:
        assert archive.recovered is None
        assert archive.all_names() == [*BASE, "again"]
        np.testing.assert_array_equal(
            archive.load_segmask("again").data, make_member("again", SPACE).data
        )


def test_both_slots_unusable_is_a_clear_error(two_generations: Path) -> None:
    slots = _slots(two_generations)
    _flip(two_generations, slots[1].metadata_offset + 3)
    _flip(two_generations, slots[0].metadata_offset + 3)
    with pytest.raises(ChecksumError, match=r"gen\.mska"):
        MaskArchive(two_generations)
    _flip(two_generations, 10)
    _flip(two_generations, HEADER_SIZE + 10)
    with pytest.raises(FormatError, match=r"gen\.mska"):
        MaskArchive(two_generations)


def test_garbage_after_the_last_commit_is_ignored(two_generations: Path) -> None:
    with two_generations.open("ab") as f:  # an interrupted append: payload without a header
        f.write(os.urandom(5000))
    with MaskArchive(two_generations) as archive:
        assert archive.all_names() == [*BASE, "newest"]
    with MaskArchive(two_generations, "a") as archive:
        archive.add_segmask(make_member("more", SPACE), "more")
    with MaskArchive(two_generations) as archive:
        assert archive.all_names() == [*BASE, "newest", "more"]
        np.testing.assert_array_equal(
            archive.load_segmask("newest").data, make_member("newest", SPACE).data
        )
        np.testing.assert_array_equal(
            archive.load_segmask("more").data, make_member("more", SPACE).data
        )
