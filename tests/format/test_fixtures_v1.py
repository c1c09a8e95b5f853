"""Committed format-v1 fixtures must read forever (docs/format.md; DEVELOPERS.md rule 5).

The files in ``tests/fixtures/v1`` are written by ``tests/fixtures/make_fixtures.py``; this test
only reads them and never regenerates them.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medmask import MaskFile, load_mask, read_info

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
NAMES = [
    "binary_bool",
    "labels_uint8",
    "labels_uint16",
    "labels_uint32",
    "chunked",
    "odd_shape",
    "many_labels",
]


def expected(name: str) -> tuple[np.ndarray, dict[str, Any]]:
    array = np.load(V1 / f"{name}.npy", allow_pickle=False)
    meta = json.loads((V1 / f"{name}.json").read_text(encoding="utf-8"))
    return array, meta


def test_fixture_set_is_complete() -> None:
    present = {p.stem for p in V1.glob("*.msk")}
    assert present == set(NAMES)
    for name in NAMES:
        assert (V1 / f"{name}.npy").is_file()
        assert (V1 / f"{name}.json").is_file()
    total = sum(p.stat().st_size for p in V1.iterdir())
    assert total < 200_000


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reads(name: str) -> None:
    array, meta = expected(name)
    path = V1 / f"{name}.msk"
    raw = path.read_bytes()
    assert raw[:8] == b"\x89MSK\r\n\x1a\n"
    assert struct.unpack_from("<HH", raw, 8) == (1, 0)  # written as format 1.0
    mask = load_mask(path)
    assert mask.dtype == np.dtype(meta["dtype"]) == array.dtype
    assert mask.bit_depth == meta["bit_depth"]
    assert mask.shape == tuple(meta["shape"]) == array.shape
    assert np.array_equal(mask.data, array)
    assert [[n, v] for n, v in mask.mapping.items()] == meta["mapping"]
    space = meta["space"]
    assert [int(s) for s in mask.space.shape] == space["shape"]
    for key in ("origin", "spacing", "x_orientation", "y_orientation", "z_orientation"):
        assert [float(v) for v in getattr(mask.space, key)] == space[key], key
    if meta["chunks"] is not None:
        assert MaskFile(path).descriptor.chunks == tuple(meta["chunks"])


@pytest.mark.parametrize("name", NAMES)
def test_fixture_info_and_roi(name: str) -> None:
    array, meta = expected(name)
    path = V1 / f"{name}.msk"
    info = read_info(path)
    voxel = math.prod(meta["space"]["spacing"])
    for label_name, value in meta["mapping"]:
        where = np.nonzero(array == value)
        count = int(where[0].size)
        assert info.voxel_counts()[label_name] == count
        bbox = None if count == 0 else tuple((int(w.min()), int(w.max())) for w in where)
        assert info.bboxes()[label_name] == bbox
        assert info.volumes_mm3()[label_name] == count * voxel
    roi = tuple(slice(s // 3, max(s // 3 + 1, s - 1)) for s in array.shape)
    assert np.array_equal(load_mask(path, roi=roi).data, array[roi])


def test_chunked_fixture_layout() -> None:
    with MaskFile(V1 / "chunked.msk") as f:
        assert f.descriptor.grid == (3, 3, 1)
        assert f.chunk_byte_range(0) is None  # the all-zero chunk
        assert all(f.chunk_byte_range(i) is not None for i in range(1, 9))


def test_many_labels_fixture_has_compressed_metadata() -> None:
    raw = (V1 / "many_labels.msk").read_bytes()
    (required_flags,) = struct.unpack_from("<I", raw, 12)
    assert required_flags == 1  # METADATA_ZSTD
    assert len(read_info(V1 / "many_labels.msk").labels) == 60
