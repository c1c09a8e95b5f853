"""Helpers for hostile-input tests that must not take the machine down (issue 17, item 5).

Two ways to show a reader refuses (or reads) within bounded memory:

- :func:`traced_peak`: Python-level allocation peak of a call (tracemalloc sees numpy arrays,
  ``bytes`` from zstandard and zlib, and nibabel/pydicom buffers);
- :func:`run_limited`: a ``medmask`` CLI command in a child process whose address space is
  capped with ``RLIMIT_AS``, so an unbounded allocation fails there instead of here.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

MB = 1 << 20
#: Address-space cap of a child process: imports take ~0.5 GB of address space, so anything
#: that allocates a gibibyte or more fails.
CHILD_LIMIT = 1536 * MB


def traced_peak(call: Callable[[], Any]) -> tuple[Any, int | BaseException]:
    """``(result or raised exception, peak bytes traced during the call)``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            result: Any = call()
        except Exception as exc:  # returned for the test to check
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


_LIMITED_MAIN = (
    "import resource, runpy, sys; "
    "limit = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
    "sys.argv[0] = 'medmask'; "
    "runpy.run_module('medmask', run_name='__main__', alter_sys=True)"
)


def run_limited(*args: Any, limit: int = CHILD_LIMIT) -> subprocess.CompletedProcess[str]:
    """Run ``medmask *args`` in a child process capped at ``limit`` bytes of address space
    (set by the child itself: no ``preexec_fn`` in a process that may run threads)."""
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", _LIMITED_MAIN, str(limit), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """The CLI failed with exit status 1 and one line naming the problem (``medmask ...``
    with every one of ``fragments``), no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("medmask "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def rle_zstd_frame(size: int, byte: int = 0) -> bytes:
    """A zstd frame holding ``size`` copies of ``byte`` as RLE blocks (4 bytes per 128 KiB),
    built without ever holding ``size`` bytes."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", size)  # single segment
    blocks = []
    left = size
    while True:
        n = min(left, 128 << 10)
        left -= n
        blocks.append(struct.pack("<I", (n << 3) | (1 << 1) | int(left == 0))[:3] + bytes([byte]))
        if not left:
            break
    return header + b"".join(blocks)
