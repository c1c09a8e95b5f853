"""Subprocess used by ``test_archive_crash.py`` and the concurrency tests: appends members.

    python archive_writer.py ARCHIVE FIRST COUNT

Opens ARCHIVE in mode "a", prints ``ready``, then adds members ``w<FIRST>`` ...
``w<FIRST+COUNT-1>`` one by one, printing ``added <name>`` (flushed) after each add returns,
i.e. after the member is committed. Members are generated deterministically from their name
and the archive's space by :func:`make_member`, so the test can check them bit for bit. With
``MEDMASK_WRITER_BIG=1`` members are dense noise (large payload).

``MEDMASK_KILL_AT=I:STEP`` makes the writer SIGKILL itself inside the commit of its I-th member
(0-based), at one of the :data:`KILL_STEPS` of the update protocol, so every crash trial is a
crash in the middle of a write.
"""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np
from spacetransformer import Space

from medmask import SegmentationMask

BIG_ENV = "MEDMASK_WRITER_BIG"
KILL_ENV = "MEDMASK_KILL_AT"
#: Points of one local append commit (payload, directory, fsync, slot, fsync), in order.
KILL_STEPS = (
    "mid-payload",
    "after-payload",
    "mid-directory",
    "after-directory",
    "after-first-fsync",
    "mid-slot",
    "after-slot",
    "after-second-fsync",
)
#: The first step after which the commit is visible to readers (the slot is written).
FIRST_VISIBLE_STEP = KILL_STEPS.index("after-slot")


def install_kill_point(step: str) -> None:
    """Make the next commit SIGKILL this process at ``step`` (see :data:`KILL_STEPS`)."""
    import signal

    from medmask.io import LocalFile

    writes = {"n": 0}
    fsyncs = {"n": 0}
    real_pwrite = LocalFile.pwrite
    real_fsync = os.fsync

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def pwrite(self: LocalFile, data: bytes, offset: int) -> None:
        kind = ("payload", "directory", "slot")[writes["n"]]
        writes["n"] += 1
        if step == f"mid-{kind}":
            real_pwrite(self, data[: max(1, len(data) // 3)], offset)
            die()
        real_pwrite(self, data, offset)
        if step == f"after-{kind}":
            die()

    def fsync(fd: int) -> None:
        real_fsync(fd)
        fsyncs["n"] += 1
        if step == ("after-first-fsync", "after-second-fsync")[fsyncs["n"] - 1]:
            die()

    LocalFile.pwrite = pwrite  # type: ignore[method-assign]
    os.fsync = fsync


def member_name(i: int) -> str:
    return f"w{i:03d}"


def make_member(name: str, space: Space, big: bool = False) -> SegmentationMask:
    """A mask that depends only on ``name``, ``space`` and ``big``."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    shape = tuple(int(s) for s in space.shape)
    if big:
        data = rng.integers(0, 64, shape, dtype=np.uint8)
        mapping = {f"{name}_v{v}": v for v in range(1, 64)}
        return SegmentationMask(data, mapping, space)
    data = np.zeros(shape, dtype=np.uint8)
    for value in (1, 2, 3):
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, shape, strict=True)]
        data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    data[rng.random(shape) < 0.02] = 4
    return SegmentationMask(data, {f"{name}_{v}": v for v in (1, 2, 3, 4)}, space)


def main(argv: list[str]) -> int:
    from medmask.archive import MaskArchive

    path, first, count = argv[0], int(argv[1]), int(argv[2])
    big = os.environ.get(BIG_ENV) == "1"
    kill_at = os.environ.get(KILL_ENV)
    kill_member, kill_step = (-1, "") if not kill_at else kill_at.split(":")
    with MaskArchive(path, "a") as archive:
        space = archive.space
        assert space is not None
        print("ready", flush=True)
        for i in range(first, first + count):
            name = member_name(i)
            member = make_member(name, space, big)
            if i - first == int(kill_member):
                install_kill_point(kill_step)
            archive.add_segmask(member, name)
            print(f"added {name}", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
