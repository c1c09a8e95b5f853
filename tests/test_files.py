"""medmask.save_mask / load_mask choose the format by name; the optional libraries load only
when a name needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

import medmask
from medmask import InvalidValueError, SegmentationMask
from medmask.format.container import MAGIC_MSK


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".NII.GZ"])
def test_nifti_names_write_nifti(mask: SegmentationMask, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    size = medmask.save_mask(mask, path)
    assert size == path.stat().st_size
    assert not path.read_bytes().startswith(MAGIC_MSK)
    img = nib.load(path)
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask.data.transpose(2, 1, 0))
    back = medmask.load_mask(path, mapping={"kidney": 2, "cyst": 7})
    assert back == mask
    assert medmask.load_mask(path).mapping.to_dict() == {"label_2": 2, "label_7": 7}
    mask.save(tmp_path / f"again{suffix}")
    assert SegmentationMask.load(tmp_path / f"again{suffix}", mapping=mask.mapping) == mask


def test_other_names_write_msk(mask: SegmentationMask, tmp_path: Path, memory_fs: Any) -> None:
    medmask.save_mask(mask, tmp_path / "m.msk")
    assert (tmp_path / "m.msk").read_bytes().startswith(MAGIC_MSK)
    assert medmask.load_mask(tmp_path / "m.msk") == mask
    medmask.save_mask(mask, "memory://x/m.nii.gz")
    assert memory_fs.cat("/x/m.nii.gz")[:2] == b"\x1f\x8b"
    assert medmask.load_mask("memory://x/m.nii.gz", mapping=mask.mapping) == mask


def test_options_that_do_not_apply_are_refused(mask: SegmentationMask, tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match=r"m\.nii\.gz: chunks, level apply to \.msk"):
        medmask.save_mask(mask, tmp_path / "m.nii.gz", level=3, chunks=2)
    medmask.save_mask(mask, tmp_path / "m.nii.gz", overwrite=False)
    with pytest.raises(medmask.MaskFileExistsError, match=r"m\.nii\.gz"):
        medmask.save_mask(mask, tmp_path / "m.nii.gz", overwrite=False)
    (tmp_path / "m.nii.gz").unlink()
    with pytest.raises(InvalidValueError, match="to_dicom_seg"):
        medmask.save_mask(mask, tmp_path / "m.dcm")
    medmask.save_mask(mask, tmp_path / "m.msk")
    with pytest.raises(InvalidValueError, match="mapping= names the labels of NIfTI files only"):
        medmask.load_mask(tmp_path / "m.msk", mapping={"a": 1})
    assert list(tmp_path.iterdir()) == [tmp_path / "m.msk"]


def test_api_save_msk_never_writes_msk_bytes_under_a_nifti_name(
    mask: SegmentationMask, tmp_path: Path
) -> None:
    from medmask.api import save_msk

    for name in ("x.nii.gz", "x.nii", "x.mska"):
        with pytest.raises(InvalidValueError, match=r"medmask\.save_mask \(by extension\)"):
            save_msk(mask, tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_the_msk_only_pair_keeps_its_old_names_for_one_release(
    mask: SegmentationMask, tmp_path: Path
) -> None:
    from medmask import api

    with pytest.warns(
        DeprecationWarning,
        match=r"medmask\.api\.save_mask is deprecated: use "
        r"medmask\.save_mask \(any format, by name\) or save_msk",
    ) as caught:
        api.save_mask(mask, tmp_path / "m.msk")
    assert caught[0].filename == __file__  # points at the caller's line
    with pytest.warns(DeprecationWarning, match=r"medmask\.api\.load_mask is deprecated"):
        assert api.load_mask(tmp_path / "m.msk") == mask
    assert api.save_mask.__name__ == "save_mask"
    assert medmask.load_mask is medmask.files.load_mask


def test_nifti_read_as_msk_says_what_it_is(tmp_path: Path, mask: SegmentationMask) -> None:
    medmask.save_mask(mask, tmp_path / "m.nii.gz")
    (tmp_path / "m.msk").write_bytes((tmp_path / "m.nii.gz").read_bytes())
    with pytest.raises(medmask.FormatError, match=r"m\.msk: not a \.msk file: .*\.nii\.gz\?"):
        medmask.load_mask(tmp_path / "m.msk")


def test_import_medmask_stays_light(tmp_path: Path, mask: SegmentationMask) -> None:
    medmask.save_mask(mask, tmp_path / "m.msk")
    heavy = ["zarr", "dask", "nibabel", "pydicom", "highdicom", "SimpleITK", "pandas", "tqdm"]
    code = (
        "import sys, medmask\n"
        f"m = medmask.load_mask({str(tmp_path / 'm.msk')!r})\n"
        f"print(*[name in sys.modules for name in {heavy!r}])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * len(heavy)


def test_save_mask_to_an_archive_name_points_to_mask_archive(
    mask: SegmentationMask, tmp_path: Path
) -> None:
    target = tmp_path / "case.mska"
    with pytest.raises(InvalidValueError) as info:
        medmask.save_mask(mask, target)
    assert str(info.value) == (
        f"{target}: save_mask writes one mask (.msk or NIfTI); a .mska archive holds several: "
        "use `with MaskArchive(target, 'w') as archive: archive.add_segmask(mask, name)`, or "
        "pack_folder for a folder of NIfTI files."
    )
    assert not target.exists()
    # the way the message gives works
    with medmask.MaskArchive(target, "w") as archive:
        archive.add_segmask(mask, "kidneys")
    with medmask.MaskArchive(target) as archive:
        np.testing.assert_array_equal(archive.load_segmask("kidneys").data, mask.data)


def test_attributes_survive_msk_files_rois_and_archive_members(tmp_path: Path) -> None:
    data = np.zeros((2, 3, 4), np.uint8)
    data[1, 2, 3] = 1
    mask = SegmentationMask(data, {"liver": 1}, attributes={"study": "A", "n": [1, 2]})
    medmask.save_mask(mask, tmp_path / "m.msk", attributes={"n": 5, "extra": True})
    loaded = medmask.load_mask(tmp_path / "m.msk")
    assert loaded.attributes == {"study": "A", "n": 5, "extra": True}  # keyword wins per key
    assert medmask.load_mask(tmp_path / "m.msk", roi=np.s_[1:, :, :]).attributes == (
        loaded.attributes
    )
    assert loaded == mask  # == compares voxels, names and space, not attributes
    with medmask.MaskArchive(tmp_path / "a.mska", "w") as archive:
        archive.add_segmask(mask, "organs")
    with medmask.MaskArchive(tmp_path / "a.mska") as archive:
        assert archive.load_segmask("organs").attributes == mask.attributes
    unjson = SegmentationMask(data, {"liver": 1}, attributes={"bad": object()})
    with pytest.raises(medmask.InvalidValueError, match="JSON types"):
        medmask.save_mask(unjson, tmp_path / "bad.msk")
    assert not (tmp_path / "bad.msk").exists()
