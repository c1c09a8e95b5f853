"""medmask 0.1 files through the public API: ``load_mask`` and ``MaskArchive`` read them
(read-only) exactly as medmask 0.1.3 loaded them (fixtures written by 0.1.3 itself)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask import LegacyFormatError, MaskArchive, SegmentationMask, load_mask
from medmask.format.legacy import LegacyMask, LegacyWarning

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1"
MSK = sorted(p.stem for p in LEGACY.glob("*.msk"))
MSKA = ["archive_mixed", "archive_relocated"]
SPACE_KEYS = ("shape", "origin", "spacing", "x_orientation", "y_orientation", "z_orientation")


def meta(stem: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((LEGACY / f"{stem}.json").read_text())
    return info


def assert_loaded_as_0_1_3(
    mask: SegmentationMask, expected: np.ndarray, info: dict[str, Any], space: dict[str, Any]
) -> None:
    assert mask.dtype == np.dtype(info["dtype"])
    np.testing.assert_array_equal(mask.data, expected, strict=False)
    assert list(mask.mapping.items()) == [tuple(pair) for pair in info["mapping"]]
    for key in SPACE_KEYS:
        assert tuple(getattr(mask.space, key)) == tuple(space[key]), key


def test_every_fixture_is_covered() -> None:
    assert len(MSK) == 7
    assert {p.stem for p in LEGACY.glob("*.mska")} == {*MSKA, "archive_index_overflow"}


@pytest.mark.parametrize("stem", MSK)
def test_load_mask_reads_0_1_msk(stem: str) -> None:
    info = meta(stem)
    mask = load_mask(LEGACY / f"{stem}.msk")
    assert_loaded_as_0_1_3(mask, np.load(LEGACY / f"{stem}.npy"), info, info["space"])
    assert SegmentationMask.load(LEGACY / f"{stem}.msk") == mask


def test_load_mask_roi_of_a_0_1_file() -> None:
    whole = load_mask(LEGACY / "labels_uint8.msk")
    part = load_mask(LEGACY / "labels_uint8.msk", roi=(slice(2, 5), slice(None), slice(3, 9)))
    np.testing.assert_array_equal(part.data, whole.data[2:5, :, 3:9])
    np.testing.assert_allclose(
        part.space.origin, whole.space.apply_bbox(np.array([[2, 5], [0, 16], [3, 9]])).origin
    )


@pytest.mark.parametrize("stem", MSKA)
def test_mask_archive_reads_0_1_mska(stem: str) -> None:
    info = meta(stem)
    with np.load(LEGACY / f"{stem}.npz") as arrays, MaskArchive(LEGACY / f"{stem}.mska") as a:
        assert a.all_names() == info["order"]
        assert a.is_legacy
        for name in info["order"]:
            mask = a.load_segmask(name)
            assert_loaded_as_0_1_3(mask, arrays[name], info["members"][name], info["space"])
            np.testing.assert_array_equal(a[name][1:3, :, ::2], arrays[name][1:3, :, ::2])
        assert a.verify() == []


def test_0_1_files_are_read_only() -> None:
    with pytest.raises(LegacyFormatError, match=r"archive_mixed\.mska: a medmask 0\.1 \.mska"):
        MaskArchive(LEGACY / "archive_mixed.mska", "a")
    with MaskArchive(LEGACY / "archive_mixed.mska") as a, pytest.raises(medmask.ReadOnlyError):
        a.add_segmask(a.load_segmask("lesion"), "again")
    with pytest.raises(LegacyFormatError, match=r"MaskArchive\(path, 'r'\) reads it"):
        load_mask(LEGACY / "archive_mixed.mska")
    with pytest.raises(LegacyFormatError, match="medmask convert"):
        MaskArchive(LEGACY / "binary_bool.msk")
    with pytest.raises(LegacyFormatError, match=r"binary_bool\.msk"):
        medmask.MaskFile(LEGACY / "binary_bool.msk")


def test_the_archive_0_1_3_corrupted_is_refused_with_the_reason() -> None:
    with pytest.raises(medmask.FormatError, match=r"0\.1\.3 wrote past it"):
        MaskArchive(LEGACY / "archive_index_overflow.mska")


def test_0_1_files_at_a_url(memory_fs: Any) -> None:
    memory_fs.pipe("/old/a.msk", (LEGACY / "labels_uint16.msk").read_bytes())
    memory_fs.pipe("/old/b.mska", (LEGACY / "archive_mixed.mska").read_bytes())
    assert load_mask("memory://old/a.msk") == load_mask(LEGACY / "labels_uint16.msk")
    with MaskArchive("memory://old/b.mska") as a:
        assert a.all_names() == meta("archive_mixed")["order"]


def test_0_1_files_get_the_same_limits() -> None:
    with pytest.raises(medmask.AllocationLimitError, match=r"labels_uint8\.msk"):
        load_mask(LEGACY / "labels_uint8.msk", max_voxels=100)
    with pytest.raises(medmask.AllocationLimitError, match=r"archive_mixed\.mska"):
        MaskArchive(LEGACY / "archive_mixed.mska", max_voxels=100)
    with pytest.raises(medmask.AllocationLimitError, match=r"labels_uint8\.msk"):
        load_mask(LEGACY / "labels_uint8.msk", max_bytes=64)


def test_unnamed_values_get_names_and_a_warning() -> None:
    array = np.zeros((2, 3, 4), np.uint8)
    array[0, 0, 0], array[1, 2, 3] = 1, 7
    legacy = LegacyMask(array, {"one": 1, "label_7": 9}, Space(shape=(2, 3, 4)))
    with pytest.warns(LegacyWarning, match=r"old\.msk: values 7 have no name"):
        mask = legacy.to_mask("old.msk")
    assert mask.mapping.to_dict() == {"one": 1, "label_7": 9, "label_7_": 7}
    np.testing.assert_array_equal(mask.data, array)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LegacyMask(array, {"one": 1, "seven": 7}, Space(shape=(2, 3, 4))).to_mask("ok.msk")


def test_listing_agrees_with_info(tmp_path: Path) -> None:
    """listing() reads the directory only; for current archives it says what info() says."""
    data = np.zeros((4, 5, 6), np.uint8)
    data[1, 2, 3], data[2, 3, 4] = 1, 2
    mask = SegmentationMask(data, {"a": 1, "b": 2}, Space(shape=(4, 5, 6)))
    path = tmp_path / "new.mska"
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(mask, "first")
        pending = archive.listing()  # members not written yet
    with MaskArchive(path, "a") as archive:
        archive.add_segmask(SegmentationMask(data > 0, {"fg": 1}, mask.space), "second")
        rows = archive.listing()
        infos = archive.info()
    assert [(n, m.to_dict()) for n, m, _ in pending] == [("first", {"a": 1, "b": 2})]
    assert [(n, m.to_dict(), size) for n, m, size in rows] == [
        (i.name, i.mapping.to_dict(), i.compressed_bytes) for i in infos
    ]
    with MaskArchive(LEGACY / "archive_mixed.mska") as old:
        listed = old.listing()
        assert [n for n, _, _ in listed] == meta("archive_mixed")["order"]
        assert [m.to_dict() for _, m, _ in listed] == [
            dict(meta("archive_mixed")["members"][n]["mapping"]) for n, _, _ in listed
        ]
