"""Round trips on the shared TotalSegmentator masks (skipped only if ../shared/data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medmask.codecs import BinaryCodec, EdgesCodec, LabelCodec, choose_codec

nib = pytest.importorskip("nibabel", reason="nibabel is needed to read the shared NIfTI files")


@pytest.fixture
def totalseg(shared_data: Path) -> Path:
    return shared_data / "totalseg"


def load(path: Path) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(nib.load(path).dataobj).transpose(2, 1, 0))


def test_multilabel_roundtrip_and_size(totalseg: Path) -> None:
    a = load(totalseg / "multilabel_42.nii.gz")
    data = LabelCodec().encode(a)
    np.testing.assert_array_equal(LabelCodec().decode(data, shape=a.shape, dtype=a.dtype), a)
    assert choose_codec(a) == EdgesCodec()
    edges = EdgesCodec().encode(a)
    np.testing.assert_array_equal(EdgesCodec().decode(edges, shape=a.shape, dtype=a.dtype), a)
    assert len(edges) < len(data) < (totalseg / "multilabel_42.nii.gz").stat().st_size


def test_organ_masks_roundtrip(totalseg: Path) -> None:
    labels = json.loads((totalseg / "labels_total.json").read_text())
    ref = load(totalseg / "multilabel_41_fast.nii.gz")
    for name in ["liver", "spleen", "kidney_left", "lung_upper_lobe_left", "brain"]:
        mask = load(totalseg / "organs" / f"{name}.nii.gz")
        np.testing.assert_array_equal(mask, ref == labels[name])
        assert choose_codec(mask) == EdgesCodec()
        for codec in (BinaryCodec(level=1), BinaryCodec(), EdgesCodec(level=1), EdgesCodec()):
            np.testing.assert_array_equal(codec.decode(codec.encode(mask)), mask)
            chunks = [codec.encode(np.ascontiguousarray(mask[z : z + 8])) for z in range(0, 30, 8)]
            got = np.concatenate([codec.decode(c) for c in chunks])
            np.testing.assert_array_equal(got, mask)
