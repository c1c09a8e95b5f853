"""Labels named like a LabelMapping method (``to_dict``, ``items``) survive every converter
that writes names, and ``to_nifti(overwrite=False)`` protects its label table too
(design review, section 8, bugs 3 and 5)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from spacetransformer import Space

from medmask import LabelMapping, MaskArchive, MaskFileExistsError, SegmentationMask
from medmask.interop.folders import pack_folder
from medmask.interop.nifti import from_nifti, to_nifti
from medmask.interop.sitk import from_sitk, to_sitk
from medmask.mapping import mapping_items

NAMES = {"to_dict": 1, "items": 2, "liver": 3}


@pytest.fixture
def mask() -> SegmentationMask:
    data = np.zeros((3, 4, 5), np.uint8)
    data[0, 1, 1], data[1, 2, 3], data[2, 3, 4] = 1, 2, 3
    return SegmentationMask(data, LabelMapping(NAMES), Space(shape=(3, 4, 5)))


def test_to_nifti_label_table(mask: SegmentationMask, tmp_path: Path) -> None:
    to_nifti(mask, tmp_path / "m.nii.gz", label_table=tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == NAMES
    back = from_nifti(tmp_path / "m.nii.gz", tmp_path / "m.json")
    assert back == mask


def test_to_sitk(mask: SegmentationMask) -> None:
    back = from_sitk(to_sitk(mask))
    assert dict(mapping_items(back.mapping)) == NAMES
    np.testing.assert_array_equal(back.data, mask.data)


def test_pack_folder_labels(mask: SegmentationMask, tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(mask.data.transpose(2, 1, 0).copy(), affine), folder / "all.nii.gz")
    report = pack_folder(folder, tmp_path / "case.mska", mapping=NAMES)
    assert sorted(report.whole["all"]) == sorted(NAMES)
    with MaskArchive(tmp_path / "case.mska") as archive:
        assert {name: archive.locate(name)[1] for name in NAMES} == NAMES


def test_to_nifti_overwrite_false_keeps_an_existing_label_table(
    mask: SegmentationMask, tmp_path: Path
) -> None:
    table = tmp_path / "m.json"
    table.write_text("{}")
    with pytest.raises(MaskFileExistsError, match=r"m\.json: already exists; nothing was written"):
        to_nifti(mask, tmp_path / "m.nii.gz", label_table=table, overwrite=False)
    assert table.read_text() == "{}"
    assert not (tmp_path / "m.nii.gz").exists()  # refused before the image was written
    to_nifti(mask, tmp_path / "m.nii.gz", label_table=table)  # overwrite=True (the default)
    assert json.loads(table.read_text()) == NAMES
    with pytest.raises(MaskFileExistsError, match=r"m\.nii\.gz: already exists"):
        to_nifti(mask, tmp_path / "m.nii.gz", label_table=tmp_path / "new.json", overwrite=False)
