"""Concurrent writers lose nothing silently (issue 7, item 1).

Local archives: a lock held from opening for append to close, plus a compare-before-commit of
the slots, so a writer either waits for the other or gets ``ConcurrentModificationError``.
Object stores: conditional PUTs (S3 ``If-Match``/``If-None-Match``, GCS ``ifGenerationMatch``),
or a re-read right before the PUT where the store has no conditions (``memory://``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

import medmask
from archive_writer import make_member, member_name
from medmask import (
    ConcurrentModificationError,
    LockTimeoutError,
    MaskArchive,
    MaskFileExistsError,
    SegmentationMask,
)

SPACE = Space(shape=(6, 20, 24), origin=(1.0, 2.0, 3.0), spacing=(2.0, 0.8, 0.8))
WRITER = Path(__file__).parents[1] / "archive_writer.py"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "shared.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_segmask(make_member("base", SPACE), "base")
    return path


def _assert_members(path: Path, names: list[str]) -> None:
    with MaskArchive(path) as archive:
        assert sorted(archive.all_names()) == sorted(names)
        for name in names:
            np.testing.assert_array_equal(
                archive.load_segmask(name).data, make_member(name, SPACE).data, err_msg=name
            )


# --- local: threads and processes ---------------------------------------------------------------


def test_two_handles_in_threads_each_add_20(base: Path) -> None:
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            with MaskArchive(base, "a") as archive:
                for i in range(first, first + 20):
                    archive.add_segmask(make_member(member_name(i), SPACE), member_name(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(first,)) for first in (0, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    expected = ["base"] + [member_name(i) for first in (0, 100) for i in range(first, first + 20)]
    _assert_members(base, expected)


def test_threads_opening_per_member_interleave_without_loss(base: Path) -> None:
    def writer(first: int) -> None:
        for i in range(first, first + 10):
            with MaskArchive(base, "a") as archive:
                archive.add_segmask(make_member(member_name(i), SPACE), member_name(i))

    threads = [threading.Thread(target=writer, args=(f,)) for f in (0, 100, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    expected = ["base"] + [member_name(i) for f in (0, 100, 200) for i in range(f, f + 10)]
    _assert_members(base, expected)


def test_two_processes_append_40_each(base: Path) -> None:
    """The issue's acceptance race: 80 new members present, none lost."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), str(base), str(first), "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (0, 100)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.splitlines()[-1] == "done"
    expected = ["base"] + [member_name(i) for f in (0, 100) for i in range(f, f + 40)]
    _assert_members(base, expected)


def test_creating_one_archive_from_two_threads(tmp_path: Path) -> None:
    """Mode "a" on a missing file creates it exclusively; the other writer appends to it."""
    path = tmp_path / "new.mska"
    barrier = threading.Barrier(2)

    def writer(name: str) -> None:
        barrier.wait()
        with MaskArchive(path, "a", space=SPACE) as archive:
            archive.add_segmask(make_member(name, SPACE), name)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    _assert_members(path, ["one", "two"])


def test_lock_timeout_is_a_clear_error(base: Path) -> None:
    with MaskArchive(base, "a") as holder:
        holder.add_segmask(make_member("held", SPACE), "held")
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match=r"shared\.mska.*lock_timeout") as info:
            MaskArchive(base, "a", lock_timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert isinstance(info.value, ConcurrentModificationError | TimeoutError)
        # readers never wait
        with MaskArchive(base) as reader:
            assert reader.all_names() == ["base", "held"]
        # a "w" rewrite waits for the appender too, and keeps the file when it gives up
        before = base.read_bytes()
        writer = MaskArchive(base, "w", lock_timeout=0.2)
        writer.add_segmask(make_member("replacement", SPACE), "replacement")
        with pytest.raises(LockTimeoutError):
            writer.close()
        assert base.read_bytes() == before


def test_stale_handle_after_file_replaced_raises(base: Path, tmp_path: Path) -> None:
    """A writer that ignores the lock (an old medmask, a copy tool) replaces the file: the
    handle's next commit notices instead of appending to the unlinked old file."""
    other = tmp_path / "other.mska"
    with MaskArchive(other, "w", space=SPACE) as archive:
        archive.add_segmask(make_member("other", SPACE), "other")
    with MaskArchive(base, "a") as archive:
        os.replace(other, base)
        with pytest.raises(ConcurrentModificationError, match="another writer"):
            archive.add_segmask(make_member("lost", SPACE), "lost")
        with pytest.raises(ConcurrentModificationError):
            archive.remove("base")
    _assert_members(base, ["other"])


def test_stale_handle_after_slots_rewritten_in_place_raises(base: Path) -> None:
    with MaskArchive(base, "a") as archive:
        with base.open("r+b") as f:  # someone else's commit, behind our back
            f.seek(20)
            f.write((99).to_bytes(8, "little"))
        with pytest.raises(ConcurrentModificationError, match="nothing was written"):
            archive.add_segmask(make_member("late", SPACE), "late")
        with pytest.raises(ConcurrentModificationError):
            archive.compact()


def test_failed_append_leaves_the_handle_usable(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 7: a failed commit must not leave the member pending (every later add failing)."""
    calls = {"n": 0}
    real = os.pwrite

    def failing_pwrite(fd: int, data: Any, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real(fd, data, offset)

    with MaskArchive(base, "a") as archive:
        monkeypatch.setattr(os, "pwrite", failing_pwrite)  # the disk fills up (LocalFile.pwrite)
        with pytest.raises(medmask.StorageError, match="No space left"):
            archive.add_segmask(make_member("first", SPACE), "first")
        assert "first" not in archive
        archive.add_segmask(make_member("first", SPACE), "first")  # the retry works
        archive.add_segmask(make_member("second", SPACE), "second")
    _assert_members(base, ["base", "first", "second"])


# --- object stores -----------------------------------------------------------------------------


def _remote_race(url: str, options: dict[str, Any]) -> None:
    with MaskArchive(url, "w", space=SPACE, storage_options=options) as archive:
        archive.add_segmask(make_member("base", SPACE), "base")
    first = MaskArchive(url, "a", storage_options=options)
    second = MaskArchive(url, "a", storage_options=options)
    first.add_segmask(make_member("from_first", SPACE), "from_first")
    second.add_segmask(make_member("from_second", SPACE), "from_second")
    first.close()
    with pytest.raises(ConcurrentModificationError, match="another writer"):
        second.close()
    with MaskArchive(url, storage_options=options) as archive:
        assert archive.all_names() == ["base", "from_first"]
    # the winner's handle keeps working: its version follows its own writes
    with MaskArchive(url, "a", storage_options=options) as archive:
        archive.add_segmask(make_member("third", SPACE), "third")
        archive.flush()
        archive.add_segmask(make_member("fourth", SPACE), "fourth")
    with MaskArchive(url, storage_options=options) as archive:
        assert archive.all_names() == ["base", "from_first", "third", "fourth"]


def _remote_create_race(url: str, options: dict[str, Any]) -> None:
    first = MaskArchive(url, "a", space=SPACE, storage_options=options)
    second = MaskArchive(url, "a", space=SPACE, storage_options=options)
    first.add_segmask(make_member("one", SPACE), "one")
    second.add_segmask(make_member("two", SPACE), "two")
    first.close()
    with pytest.raises(ConcurrentModificationError, match="created by another writer"):
        second.close()
    with MaskArchive(url, storage_options=options) as archive:
        assert archive.all_names() == ["one"]


def _save_without_overwrite(url: str, options: dict[str, Any]) -> None:
    mask = make_member("x", SPACE)
    medmask.save_mask(mask, url, storage_options=options, overwrite=False)
    other = make_member("y", SPACE)
    with pytest.raises(MaskFileExistsError, match="already exists") as info:
        medmask.save_mask(other, url, storage_options=options, overwrite=False)
    assert isinstance(info.value, FileExistsError)
    assert medmask.load_mask(url, storage_options=options) == mask
    medmask.save_mask(other, url, storage_options=options)  # overwrite=True is the default
    assert medmask.load_mask(url, storage_options=options) == other


def test_s3_two_writers_the_loser_gets_an_error(s3: Any) -> None:
    _remote_race(s3.url("race.mska"), s3.storage_options)
    puts = s3.log.filter("PUT", "race.mska")
    assert len(puts) >= 5  # every write is one PUT; the conditional one was refused
    assert any(r.status == 412 for r in puts), s3.log.summary()


def test_s3_two_creators(s3: Any) -> None:
    _remote_create_race(s3.url("new.mska"), s3.storage_options)


def test_s3_save_mask_without_overwrite(s3: Any) -> None:
    _save_without_overwrite(s3.url("case.msk"), s3.storage_options)


def test_gcs_two_writers_the_loser_gets_an_error(gcs: Any) -> None:
    _remote_race(gcs.url("race.mska"), gcs.storage_options)


def test_gcs_two_creators(gcs: Any) -> None:
    _remote_create_race(gcs.url("new.mska"), gcs.storage_options)


def test_gcs_save_mask_without_overwrite(gcs: Any) -> None:
    _save_without_overwrite(gcs.url("case.msk"), gcs.storage_options)


def test_memory_two_writers_the_loser_gets_an_error(memory_fs: Any) -> None:
    _remote_race("memory://race/a.mska", {})
    _remote_create_race("memory://race/new.mska", {})
    _save_without_overwrite("memory://race/case.msk", {})


def test_local_save_mask_without_overwrite(tmp_path: Path) -> None:
    _save_without_overwrite(str(tmp_path / "case.msk"), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.msk"]  # no temp file left


def test_concurrent_creators_with_overwrite_false_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "one.msk"
    barrier = threading.Barrier(4)
    results: list[str] = []

    def writer(seed: int) -> None:
        mask = SegmentationMask(np.full((2, 3, 4), seed, np.uint8), {f"v{seed}": seed})
        barrier.wait()
        try:
            medmask.save_mask(mask, path, overwrite=False)
            results.append(f"won {seed}")
        except MaskFileExistsError:
            results.append("exists")

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1, results
    assert results.count("exists") == 3, results
    seed = int(winners[0].split()[1])
    assert int(medmask.load_mask(path).data[0, 0, 0]) == seed


def test_copy_of_archive_is_independent(base: Path, tmp_path: Path) -> None:
    """Locks belong to files: a copy can be appended while the original is held."""
    copy = tmp_path / "copy.mska"
    shutil.copyfile(base, copy)
    with MaskArchive(base, "a"), MaskArchive(copy, "a", lock_timeout=0.1) as archive:
        archive.add_segmask(make_member("c", SPACE), "c")
    _assert_members(copy, ["base", "c"])
