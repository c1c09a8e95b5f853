"""format.encoding: label statistics computed once per chunk, by the codec or from the block."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import medmask
from medmask.codecs import kernel_available
from medmask.format import encoding
from medmask.values import label_stats


def _mask(dtype: Any) -> medmask.SegmentationMask:
    data = np.zeros((40, 30, 20), dtype)
    data[2:9, 3:12, 4:15] = 3
    data[20:35, 10:29, 1:5] = 7
    data[5:25, 0:2, 10:11] = 70_000 if np.dtype(dtype).itemsize >= 4 else 200
    data[39, 29, 19] = 1
    values = sorted(set(np.unique(data).tolist()) - {0})
    return medmask.SegmentationMask(data, {f"v{v}": v for v in values})


def _stored(encoded: encoding.EncodedMask) -> dict[int, tuple[int, Any]]:
    return {e.value: (e.count, e.bbox) for e in encoded.descriptor.labels}


@pytest.mark.parametrize(
    ("dtype", "codec"),
    [(np.uint8, "medmask.edges"), (np.uint32, "medmask.edges"), (np.uint16, "medmask.labels")],
)
def test_stats_are_the_voxels_and_never_a_second_pass(
    dtype: Any, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mask = _mask(dtype)
    expected = label_stats(mask.data)
    chunks = (8, 30, 20)
    shapes: list[tuple[int, ...]] = []

    def counted(array: Any) -> Any:
        shapes.append(array.shape)
        return label_stats(array)

    monkeypatch.setattr(encoding, "label_stats", counted)
    encoded = encoding.encode_mask(mask, chunks=chunks, codec=codec)
    assert _stored(encoded) == {
        v: (s.count, tuple(tuple(p) for p in s.bbox)) for v, s in expected.items()
    }
    # each chunk at most once, never the whole array again
    assert all(shape == chunks for shape in shapes)
    assert len(shapes) <= encoded.descriptor.n_chunks
    if codec == "medmask.edges" and np.dtype(dtype).itemsize <= 2 and kernel_available():
        assert shapes == []  # the kernel counted while it encoded
    loaded = encoding.decode_region(
        encoded.descriptor,
        encoded.index(0),
        tuple(slice(0, n) for n in mask.shape),
        dict(enumerate(encoded.streams)),
        name="m",
    )
    np.testing.assert_array_equal(loaded, mask.data)
