"""Small files that ask for a lot of memory (issue 7, item 5), measured in a subprocess.

Each case writes a crafted file, then a fresh Python process opens it and reports its own
peak RSS (``VmHWM``, reset just before the call) before and after. A bomb must end in
medmask's own error with the process below 300 MB (metadata bombs) or, for a valid file that
decodes to a large array, with the decode costing less than 3x its output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import crafted
import numpy as np
import pytest

from medmask.format.container import MAX_METADATA_SIZE

MB = 1 << 20
METADATA_BOMB_RSS = 300 * MB

_PROBE = textwrap.dedent(
    """
    import json, sys
    import medmask
    from medmask.format import container  # noqa: F401  (imports settle before the baseline)

    def peak_rss():
        # VmHWM belongs to this address space; ru_maxrss would include the parent's peak,
        # which Linux carries across fork and exec.
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS
    path, call = sys.argv[1], sys.argv[2]
    before = peak_rss()
    result = {"error": None, "message": "", "nbytes": 0}
    try:
        if call == "read_info":
            medmask.read_info(path)
        elif call == "load_mask":
            result["nbytes"] = int(medmask.load_mask(path).data.nbytes)
        elif call == "archive":
            medmask.MaskArchive(path).read_all_masks()
    except BaseException as exc:
        result["error"] = [c.__name__ for c in type(exc).__mro__]
        result["message"] = str(exc)[:300]
    result["before"], result["after"] = before, peak_rss()
    print(json.dumps(result))
    """
)


def probe(path: Path, call: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), call],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def assert_own_error(result: dict[str, Any], error: str, path: Path, match: str) -> None:
    assert result["error"] is not None, "expected an error"
    assert error in result["error"], result
    assert "MedmaskError" in result["error"], result
    assert str(path) in result["message"], result["message"]
    assert match in result["message"], result["message"]


# --- metadata bombs ----------------------------------------------------------------------------


def _metadata_bomb(tmp_path: Path, frame: bytes) -> Path:
    path = tmp_path / "bomb.msk"
    path.write_bytes(crafted.msk(frame, zstd_metadata=True, entries=crafted.index([(0, 0, 0)])))
    return path


def test_frame_claiming_one_tebibyte(tmp_path: Path) -> None:
    frame = crafted.zstd_frame_claiming(b" " * 400, declared=1 << 40)
    path = _metadata_bomb(tmp_path, frame)
    assert path.stat().st_size < 1000
    result = probe(path, "read_info")
    assert_own_error(result, "AllocationLimitError", path, "declares 1,099,511,627,776 bytes")
    assert result["after"] < METADATA_BOMB_RSS, result


def test_frame_holding_one_gibibyte_of_json_whitespace(tmp_path: Path) -> None:
    """The issue's 83 KB file that made read_info take 6.2 GB: a true content size."""
    frame = crafted.zstd_frame_of_repeats(b" ", 1 << 30)
    path = _metadata_bomb(tmp_path, frame)
    assert path.stat().st_size < 200_000
    result = probe(path, "read_info")
    assert_own_error(result, "AllocationLimitError", path, "above the")
    assert result["after"] < METADATA_BOMB_RSS, result


def test_frame_without_content_size_is_capped_while_streaming(tmp_path: Path) -> None:
    cctx = crafted.zstandard.ZstdCompressor(level=1, write_content_size=False)
    obj = cctx.compressobj()
    frame = b"".join(obj.compress(b" " * MB) for _ in range(256)) + obj.flush()
    path = _metadata_bomb(tmp_path, frame)
    result = probe(path, "read_info")
    assert_own_error(result, "AllocationLimitError", path, f"{MAX_METADATA_SIZE:,}-byte limit")
    assert result["after"] < METADATA_BOMB_RSS, result


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested deeper than 64"),
        (b'{"n": ' + b"7" * 5000 + b"}", "JSON number of 5000 characters"),
        (b'{"a": [' + b"{}," * (3 << 20) + b"{}]}", "JSON arrays/objects"),
        (b'{"a": [' + b"0," * (5 << 20) + b"0]}", "JSON values"),
        (b'{"a": NaN}', "constant NaN"),
    ],
    ids=["deep-nesting", "long-number", "many-objects", "many-values", "nan"],
)
def test_json_bombs_within_the_size_limit(tmp_path: Path, payload: bytes, match: str) -> None:
    assert len(payload) <= MAX_METADATA_SIZE
    path = _metadata_bomb(tmp_path, crafted.zstd_frame(payload))
    result = probe(path, "read_info")
    assert_own_error(result, "FormatError", path, match)
    assert result["after"] < METADATA_BOMB_RSS, result


def test_most_objects_the_limit_allows_stay_below_300_mb(tmp_path: Path) -> None:
    from medmask._json import MAX_JSON_CONTAINERS

    payload = b'{"a": [' + b"{}," * (MAX_JSON_CONTAINERS - 10) + b"{}]}"
    path = _metadata_bomb(tmp_path, crafted.zstd_frame(payload))
    result = probe(path, "read_info")
    assert_own_error(result, "FormatError", path, "invalid metadata")  # parsed, then refused
    assert result["after"] < METADATA_BOMB_RSS, result


# --- allocation bombs --------------------------------------------------------------------------


def test_empty_chunks_declaring_32_gib(tmp_path: Path) -> None:
    """The issue's 588-byte file: 2048^3 uint32 voxels, every chunk empty."""
    meta = crafted.descriptor((2048, 2048, 2048), dtype="uint32", chunks=(2048, 2048, 2048))
    path = tmp_path / "empty.msk"
    path.write_bytes(crafted.msk(meta, [b""]))
    assert path.stat().st_size < 1000
    result = probe(path, "load_mask")
    assert_own_error(result, "AllocationLimitError", path, "34,359,738,368 bytes")
    assert result["after"] < METADATA_BOMB_RSS, result


@pytest.mark.parametrize("dtype", ["uint8", "uint32", "bool"])
def test_two_voxel_runs_decode_in_less_than_3x_output(tmp_path: Path, dtype: str) -> None:
    """A 2.6 KB stream of 2-voxel runs expanding to 30 MiB: valid, and cheap to decode."""
    row = 1 << 20
    shape = (1, 30 * MB // row // np.dtype(dtype).itemsize, row)
    pattern = np.array([0, 0, 1, 1] if dtype != "bool" else [0] * 16 + [1] * 16, dtype=np.uint8)
    array = np.resize(pattern, shape).astype(dtype)
    stream = crafted.labels_stream(array) if dtype != "bool" else crafted.binary_stream(array)
    assert len(stream) < 8000
    count = int(np.count_nonzero(array))
    xs = np.flatnonzero(array[0, 0])  # every row is the same
    bbox = [[0, 0], [0, shape[1] - 1], [int(xs[0]), int(xs[-1])]]
    labels = [{"name": "a", "value": 1, "count": count, "bbox": bbox}]
    codec = "medmask.labels" if dtype != "bool" else "medmask.binary"
    meta = crafted.descriptor(shape, dtype=dtype, labels=labels, codec=codec)
    path = tmp_path / "runs.msk"
    path.write_bytes(crafted.msk(meta, [stream]))
    result = probe(path, "load_mask")
    assert result["error"] is None, result
    assert result["nbytes"] == array.nbytes
    assert result["after"] - result["before"] < 3 * array.nbytes, result
