"""``medmask.edges`` decodes every stream, or refuses it with a CodecError, at a peak of at most
4x its declared chunk (N * itemsize, output included) plus a small constant, on the kernel and
on the numpy path (docs/codecs.md 6.4). Each case runs in a child process that reports its peak
resident memory above what it held before decoding; no timing is asserted."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard as zstd
from codec_helpers import edges_stream, varint

from medmask.codecs import EdgesCodec
from medmask.codecs import _edges as edges

SLACK = 24 << 20  # interpreter, allocator and vectorised-block temporaries

CHILD = textwrap.dedent(
    """
    import json, sys
    from medmask.codecs import EdgesCodec, kernel_available
    from medmask.errors import CodecError

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    data = open(sys.argv[1], "rb").read()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = status("VmRSS")
    try:
        out = EdgesCodec().decode(data)
        result = {"ok": True, "sum": int(out.sum()), "shape": list(out.shape)}
        del out
    except CodecError as exc:
        result = {"ok": False, "error": str(exc)}
    result["peak"] = status("VmHWM") - before
    result["kernel"] = kernel_available()
    print(json.dumps(result))
    """
)


def peak_of(path: Path, kernel: bool) -> dict[str, object]:
    env = {**os.environ, "MEDMASK_KERNEL": "1" if kernel else "0"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, object] = json.loads(proc.stdout)
    if not kernel:
        assert result["kernel"] is False
    return result


def hostile(shape: tuple[int, int, int], sizes: list[int], k: int = 6, w: int = 1, p: int = 1,
            fill: int = 0) -> bytes:  # fmt: skip
    """A uint8 mode-1 stream declaring raw sections of ``sizes`` (each ``fill`` bytes, stored
    as one small zstd frame): a few KB that ask for megabytes."""
    cctx = zstd.ZstdCompressor(level=1, write_content_size=True)
    stored = [cctx.compress(bytes([fill]) * n) if n else b"" for n in sizes]
    stored = [s if len(s) < n else bytes([fill]) * n for s, n in zip(stored, sizes, strict=True)]
    rest = bytes([k, w, p]) + b"".join(
        varint(len(s)) + varint(n) for s, n in zip(stored, sizes, strict=True)
    ) + b"".join(stored)  # fmt: skip
    return edges_stream(shape, 1, rest)


SHAPE = (1, 2048, 2048)  # one 4 MiB uint8 chunk
N = SHAPE[0] * SHAPE[1] * SHAPE[2]
LIMIT = 2 * N + 64  # docs/codecs.md 6.4: the raw sections of a mode-1 stream together


def test_the_size_rule_is_the_documented_one() -> None:
    assert edges.max_raw(N) == LIMIT


def hostile_cases() -> dict[str, bytes]:
    fates = N // 2
    two_k = 2 * edges.DEFAULT_SHIFT + 2
    return {
        "all-gaps": hostile(SHAPE, [LIMIT, 0, 0] + [0] * two_k),
        "gaps-and-fates": hostile(SHAPE, [LIMIT - fates, 0, 0, fates] + [0] * (two_k - 1)),
        "positions-and-values": hostile(SHAPE, [LIMIT - 2 * N, N, N] + [0] * two_k, fill=1),
        "wide-positions": hostile(SHAPE, [LIMIT - 2 * N, 2 * N, 0] + [0] * two_k, w=0, p=2),
        "one-byte-over": hostile(SHAPE, [LIMIT + 1, 0, 0] + [0] * two_k),
        "ones-everywhere": hostile(SHAPE, [N // 2, N // 2, N // 2] + [N // 32] * two_k, fill=1),
        "one-row-asks-for-every-insertion": escape_in_slice_1(),
        "escapes-everywhere": escapes_in_a_column(),
    }


def escapes_in_a_column() -> bytes:
    """(2, 2**21, 1): slice 0 empty, then gap bytes that are all 255 (escapes) to the limit."""
    rows = N // 2
    gaps = bytes(rows) + b"\xff" * (LIMIT - rows)
    cctx = zstd.ZstdCompressor(level=1, write_content_size=True)
    stored = [cctx.compress(gaps)] + [b""] * 16
    sizes = [len(gaps)] + [0] * 16
    head = b"MMC" + bytes([2, 3, 2, 3, 1]) + struct.pack("<3I", 2, rows, 1)
    rest = bytes([6, 0, 1]) + b"".join(
        varint(len(s)) + varint(n) for s, n in zip(stored, sizes, strict=True)
    ) + b"".join(stored)  # fmt: skip
    return head + struct.pack("<I", zlib.crc32(rest, zlib.crc32(head))) + rest


def escape_in_slice_1() -> bytes:
    """Two slices of 1024 x 2048: row 0 of slice 1 asks for N - 2000 insertions with one
    escaped gap count (the numpy path once widened them all at once: 8 bytes each)."""
    shape = (2, 1024, 2048)
    npos = N - 2000
    gaps = bytes(1024) + bytes([255]) + npos.to_bytes(4, "little") + bytes(1023)
    cctx = zstd.ZstdCompressor(level=1, write_content_size=True)
    stored = [cctx.compress(gaps), cctx.compress(b"\x01" * npos)] + [b""] * 15
    sizes = [len(gaps), npos] + [0] * 15
    head = b"MMC" + bytes([2, 3, 2, 3, 1]) + struct.pack("<3I", *shape)
    rest = bytes([6, 0, 1]) + b"".join(
        varint(len(s)) + varint(n) for s, n in zip(stored, sizes, strict=True)
    ) + b"".join(stored)  # fmt: skip
    return head + struct.pack("<I", zlib.crc32(rest, zlib.crc32(head))) + rest


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("edges-memory")
    out = {}
    for name, data in hostile_cases().items():
        assert len(data) < 64 << 10, name
        out[name] = folder / f"{name}.mmc"
        out[name].write_bytes(data)
    dense = np.zeros((4, 1024, 1024), np.uint8)  # 4 MiB too
    dense[..., ::2] = 1  # an edge at every voxel
    data = EdgesCodec().encode(dense)
    assert data[7] == edges.MODE_EDGES
    out["valid-dense"] = folder / "dense.mmc"
    out["valid-dense"].write_bytes(data)
    column = (np.arange(1 << 20) % 7 < 3).astype(np.uint8).reshape(1, 1 << 20, 1)
    data = EdgesCodec().encode(column)
    assert data[7] == edges.MODE_EDGES
    out["valid-column"] = folder / "column.mmc"
    out["valid-column"].write_bytes(data)
    return out


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "numpy"])
@pytest.mark.parametrize("name", [*hostile_cases(), "valid-dense"])
def test_peak_memory_is_at_most_4x_the_chunk(
    streams: dict[str, Path], name: str, kernel: bool
) -> None:
    result = peak_of(streams[name], kernel)
    assert result["ok"] is name.startswith("valid"), result
    if name == "one-byte-over":
        assert "bytes of sections" in str(result["error"])
    assert isinstance(result["peak"], int)
    assert result["peak"] <= 4 * N + SLACK, (name, result["peak"] / 2**20)


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "numpy"])
def test_a_column_decodes_without_objects_per_row(streams: dict[str, Path], kernel: bool) -> None:
    """(1, 2**20, 1): a million rows of at most one edge. The numpy path once kept Python
    objects for every row of the first slice (+2.6 GB for 2**22 rows)."""
    result = peak_of(streams["valid-column"], kernel)
    assert result["ok"] is True, result
    want = (np.arange(1 << 20) % 7 < 3).sum()
    assert result["sum"] == int(want)
    assert isinstance(result["peak"], int)
    assert result["peak"] <= 4 * (1 << 20) + SLACK, result["peak"] / 2**20
