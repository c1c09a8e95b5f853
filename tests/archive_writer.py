"""Subprocess used by ``test_archive_crash.py``: appends members to an archive until killed.

    python archive_writer.py ARCHIVE FIRST COUNT

Opens ARCHIVE in mode "a", prints ``ready``, then adds members ``w<FIRST>`` ...
``w<FIRST+COUNT-1>`` one by one, printing ``added <name>`` (flushed) after each add returns,
i.e. after the member is committed. Members are generated deterministically from their name
and the archive's space by :func:`make_member`, so the test can check them bit for bit. With
``MEDMASK_WRITER_BIG=1`` members are dense noise (large payload, slower encode and write), which
makes a kill between payload and header writes more likely.
"""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np
from spacetransformer import Space

from medmask import SegmentationMask

BIG_ENV = "MEDMASK_WRITER_BIG"


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
    with MaskArchive(path, "a") as archive:
        space = archive.space
        assert space is not None
        print("ready", flush=True)
        for i in range(first, first + count):
            name = member_name(i)
            archive.add_segmask(make_member(name, space, big), name)
            print(f"added {name}", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
