"""``pack_folder`` / ``unpack`` keep every voxel and every value (issue 17, item 6): 0/1 files
are layered, other files are kept whole; files on another grid are named, or left out on
request; unpack gives the same voxels back."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medmask
from medmask import MaskArchive
from medmask.interop.folders import FILE_ATTRIBUTE, PackReport, pack_folder, unpack

ORGANS = ("totalseg", "organs")


def _voxels(path: Path) -> npt.NDArray[Any]:
    return np.asarray(nib.load(path).dataobj)


def _save(array: npt.NDArray[Any], affine: npt.NDArray[Any], path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_data_dtype(array.dtype)
    nib.save(image, path)


def _folder(folder: Path, affine: npt.NDArray[Any], files: Mapping[str, npt.NDArray[Any]]) -> Path:
    """``folder``, made, with each array of ``files`` saved as the file of its name."""
    folder.mkdir()
    for file_name, array in files.items():
        _save(array, affine, folder / file_name)
    return folder


def assert_same_files(originals: list[Path], folder: Path) -> None:
    """Every original file is in ``folder`` under its stem, every voxel (0s included) equal,
    on the same affine; integer files keep their type."""
    written = sorted(p.name for p in folder.iterdir())
    stems = sorted(p.name.removesuffix(".gz").removesuffix(".nii") + ".nii.gz" for p in originals)
    assert written == stems
    for original in originals:
        back = folder / (original.name.removesuffix(".gz").removesuffix(".nii") + ".nii.gz")
        a, b = _voxels(original), _voxels(back)
        assert a.shape == b.shape, original.name
        assert np.array_equal(a, b), original.name  # every voxel, every value
        if a.dtype.kind in "iu" and np.unique(a).tolist() not in ([0], [0, 1]):
            assert b.dtype == a.dtype, original.name
        np.testing.assert_allclose(
            nib.load(back).affine, nib.load(original).affine, atol=1e-5, err_msg=original.name
        )


# --- the 117 organ files of the shared data ---------------------------------------------------


@pytest.mark.parametrize("with_table", [False, True], ids=["no-table", "labels_total"])
def test_organs_folder_round_trips_voxel_for_voxel(
    shared_data: Path, tmp_path: Path, with_table: bool
) -> None:
    folder = shared_data.joinpath(*ORGANS)
    originals = sorted(folder.glob("*.nii.gz"))
    assert len(originals) == 117
    table = shared_data / "totalseg" / "labels_total.json" if with_table else None
    report = pack_folder(folder, tmp_path / "organs.mska", mapping=table)
    assert isinstance(report, PackReport)
    assert report.whole == {}  # every organ file holds 0s and 1s only
    assert report.left_out == {}
    assert sum(len(v) for v in report.layers.values()) == 117
    unpack(tmp_path / "organs.mska", tmp_path / "out")
    assert_same_files(originals, tmp_path / "out")


# --- multi-valued files built from multilabel_42 ----------------------------------------------


@pytest.fixture(scope="module")
def multilabel(shared_data: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[Any]]:
    image = nib.load(shared_data / "totalseg" / "multilabel_42.nii.gz")
    data = np.asarray(image.dataobj)
    assert data.dtype == np.uint8
    return data, image.affine


@pytest.fixture(scope="module")
def table(shared_data: Path) -> dict[str, int]:
    values: dict[str, int] = json.loads(
        (shared_data / "totalseg" / "labels_total.json").read_text()
    )
    return values


def _mixed_folder(
    folder: Path, multilabel: tuple[npt.NDArray[np.uint8], npt.NDArray[Any]], t: dict[str, int]
) -> list[Path]:
    """0/1 files, an empty file, vertebrae with TotalSegmentator's values (30-33 here), a
    kidney file with 1, 2 and 4, a 0/255 file, an int16 file above 255, a float file and an
    uncompressed .nii: what real folders hold."""
    data, affine = multilabel
    vertebrae = np.where((data >= t["vertebrae_S1"]) & (data <= t["vertebrae_C1"]), data, 0)
    assert sorted(np.unique(vertebrae).tolist()) == [0, 30, 31, 32, 33]
    kidney = np.zeros_like(data)
    kidney[data == t["kidney_right"]] = 1
    kidney[data == t["kidney_left"]] = 2
    kidney[data == t["gallbladder"]] = 4
    assert sorted(np.unique(kidney).tolist()) == [0, 1, 2, 4]
    big = np.zeros(data.shape, np.int16)
    big[data == t["stomach"]] = 1000
    big[data == t["pancreas"]] = 300
    files = {
        "liver.nii.gz": (data == t["liver"]).astype(np.uint8),
        "spleen.nii.gz": (data == t["spleen"]).astype(np.uint8),
        "brain.nii.gz": np.zeros_like(data),
        "vertebrae.nii.gz": vertebrae.astype(np.uint8),
        "kidney.nii.gz": kidney,
        "bladder255.nii.gz": np.where(data == t["colon"], 255, 0).astype(np.uint8),
        "big.nii.gz": big,
        "aorta.nii": (data == t["aorta"]).astype(np.uint8),
        "floaty.nii.gz": np.where(data == t["duodenum"], 3.0, 0.0).astype(np.float32)
        + (data == t["small_bowel"]).astype(np.float32) * 7,
    }
    return sorted(_folder(folder, affine, files).iterdir())


def test_multi_valued_files_keep_their_values(
    multilabel: Any, table: dict[str, int], tmp_path: Path
) -> None:
    originals = _mixed_folder(tmp_path / "case", multilabel, table)
    report = pack_folder(tmp_path / "case", tmp_path / "case.mska")
    assert sorted(report.whole) == ["big", "bladder255", "floaty", "kidney", "vertebrae"]
    assert report.whole["kidney"] == ["kidney_1", "kidney_2", "kidney_4"]
    assert report.whole["vertebrae"] == [f"vertebrae_{v}" for v in (30, 31, 32, 33)]
    assert report.whole["bladder255"] == ["bladder255"]  # one value: the file's name
    assert sorted(n for names in report.layers.values() for n in names) == [
        "aorta",
        "brain",
        "liver",
        "spleen",
    ]
    with MaskArchive(tmp_path / "case.mska") as archive:
        assert archive.locate("kidney_4") == ("kidney", 4)
        assert archive.locate("bladder255") == ("bladder255", 255)
        assert archive.locate("big_1000") == ("big", 1000)
        np.testing.assert_array_equal(
            archive.load_segmask("vertebrae").data,
            _voxels(tmp_path / "case" / "vertebrae.nii.gz").transpose(2, 1, 0),
        )
        assert archive["kidney"].descriptor.attributes == {FILE_ATTRIBUTE: {"dtype": "uint8"}}
        assert archive["big"].descriptor.attributes == {FILE_ATTRIBUTE: {"dtype": "int16"}}
        assert archive.verify() == []
    written = unpack(tmp_path / "case.mska", tmp_path / "out")
    assert len(written) == len(originals)
    assert_same_files(originals, tmp_path / "out")


def test_a_label_table_names_the_values_no_other_file_uses(
    multilabel: Any, table: dict[str, int], tmp_path: Path
) -> None:
    originals = _mixed_folder(tmp_path / "case", multilabel, table)
    report = pack_folder(tmp_path / "case", tmp_path / "case.mska", mapping=table)
    # 30-33 are named by the table; kidney's 1 is 'spleen', a file of its own: <stem>_<value>
    assert report.whole["vertebrae"] == [
        "vertebrae_L2",
        "vertebrae_L1",
        "vertebrae_T12",
        "vertebrae_T11",
    ]
    assert report.whole["kidney"] == ["kidney_1", "kidney_2", "kidney_4"]
    assert report.whole["bladder255"] == ["bladder255"]
    with MaskArchive(tmp_path / "case.mska") as archive:
        assert archive.locate("vertebrae_T12") == ("vertebrae", table["vertebrae_T12"])
        assert archive.locate("liver") == (archive.locate("liver")[0], table["liver"])
        assert archive.locate("spleen")[1] == table["spleen"]
    unpack(tmp_path / "case.mska", tmp_path / "out")
    assert_same_files(originals, tmp_path / "out")


def test_whole_labelmap_among_binary_files(
    multilabel: Any, table: dict[str, int], tmp_path: Path
) -> None:
    data, affine = multilabel
    liver = (data == table["liver"]).astype(np.uint8)
    folder = _folder(tmp_path / "case", affine, {"total.nii.gz": data, "liver.nii.gz": liver})
    report = pack_folder(folder, tmp_path / "a.mska", mapping=table)
    values = sorted(set(np.unique(data).tolist()) - {0})
    assert len(values) == 41
    # 'liver' is a file of its own, so the table cannot name total's values
    assert report.whole["total"] == [f"total_{v}" for v in values]
    unpack(tmp_path / "a.mska", tmp_path / "out")
    assert_same_files(sorted(folder.iterdir()), tmp_path / "out")
    (folder / "liver.nii.gz").unlink()
    report = pack_folder(folder, tmp_path / "b.mska", mapping=table)
    by_value = {v: n for n, v in table.items()}
    assert report.whole["total"] == [by_value[v] for v in values]


def test_names_from_two_files_collide(multilabel: Any, tmp_path: Path) -> None:
    data, affine = multilabel
    kidney = np.where(data == 2, 1, np.where(data == 3, 2, 0)).astype(np.uint8)
    kidney_1 = (data == 2).astype(np.uint8)
    folder = _folder(
        tmp_path / "case", affine, {"kidney.nii.gz": kidney, "kidney_1.nii.gz": kidney_1}
    )
    with pytest.raises(medmask.InvalidValueError, match=r"\['kidney_1'\] come from two files"):
        pack_folder(folder, tmp_path / "x.mska")
    assert not (tmp_path / "x.mska").exists()
    pack_folder(folder, tmp_path / "x.mska", exclude="kidney_1.*")


def test_negative_or_huge_values_are_refused_with_the_file_name(tmp_path: Path) -> None:
    a = np.zeros((4, 5, 6), np.int16)
    a[1, 2, 3] = -1
    a[2, 2, 2] = 5
    folder = _folder(tmp_path / "case", np.eye(4), {"signed.nii.gz": a})
    with pytest.raises(medmask.FormatError, match=r"signed\.nii\.gz: Expected label values in"):
        pack_folder(folder, tmp_path / "x.mska")
    (folder / "signed.nii.gz").unlink()
    b = np.zeros((4, 5, 6), np.int64)
    b[0, 0, 0] = 2**32
    b[0, 0, 1] = 2
    image = nib.Nifti1Image(b, np.eye(4), dtype=np.int64)
    nib.save(image, folder / "huge.nii.gz")
    with pytest.raises(medmask.FormatError, match=r"huge\.nii\.gz: .*Got 4294967296"):
        pack_folder(folder, tmp_path / "x.mska")
    assert not (tmp_path / "x.mska").exists()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["uint8", "int16", "uint16", "int32", "float32"]),
            st.lists(st.integers(0, 70000), min_size=1, max_size=4),
            st.integers(0, 2**31 - 1),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_folder_round_trips(tmp_path_factory: pytest.TempPathFactory, files: Any) -> None:
    """Whatever the values and types, unpack(pack_folder(folder)) gives every voxel back."""
    root = tmp_path_factory.mktemp("prop")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for i, (dtype, values, seed) in enumerate(files):
        kind = np.dtype(dtype)
        top = np.iinfo(kind).max if kind.kind in "iu" else 2**24
        picked = [v % (top + 1) for v in values]
        rng = np.random.default_rng(seed)
        arrays[f"s{i}.nii.gz"] = rng.choice(np.array([0, *picked]), size=(7, 5, 3)).astype(kind)
    folder = _folder(root / "case", np.diag([2.0, 1.5, 3.0, 1.0]), arrays)
    pack_folder(folder, root / "a.mska")
    unpack(root / "a.mska", root / "out")
    assert_same_files(sorted(folder.iterdir()), root / "out")


# --- grids, exclude, skip_mismatched ----------------------------------------------------------


def _grid_folder(tmp_path: Path, multilabel: Any) -> Path:
    """Three files on the CT's grid; 'aaa_pulmonary' (sorted first) on a finer grid and
    'zz_shifted' with another origin, as TotalSegmentator's pulmonary_models/ has."""
    data, affine = multilabel
    organs = {5: "liver", 1: "spleen", 6: "stomach"}
    on_grid = {f"{name}.nii.gz": (data == v).astype(np.uint8) for v, name in organs.items()}
    folder = _folder(tmp_path / "case", affine, on_grid)
    fine = affine.copy()
    fine[:3, :3] /= 2
    _save(np.zeros((244, 202, 60), np.uint8), fine, folder / "aaa_pulmonary.nii.gz")
    shifted = affine.copy()
    shifted[0, 3] += 30.0
    _save((data == 5).astype(np.uint8), shifted, folder / "zz_shifted.nii.gz")
    return folder


def test_files_on_another_grid_are_all_named(multilabel: Any, tmp_path: Path) -> None:
    folder = _grid_folder(tmp_path, multilabel)
    with pytest.raises(medmask.SpaceMismatchError) as info:
        pack_folder(folder, tmp_path / "x.mska")
    text = str(info.value)
    assert "2 of 5 files are not on the grid of liver.nii.gz" in text
    assert "aaa_pulmonary.nii.gz: shape (60, 202, 244) != (30, 101, 122)" in text
    assert "zz_shifted.nii.gz: origin" in text
    assert "spleen.nii.gz:" not in text
    assert "stomach.nii.gz:" not in text
    assert "skip_mismatched" in text
    assert "nothing was written" in text
    assert not (tmp_path / "x.mska").exists()
    with pytest.raises(medmask.SpaceMismatchError, match="1 of 4 files") as info:
        pack_folder(folder, tmp_path / "x.mska", exclude=["aaa_*"])
    assert "zz_shifted.nii.gz: origin" in str(info.value)
    assert "aaa_pulmonary" not in str(info.value)


def test_skip_mismatched_and_exclude_report_what_was_left_out(
    multilabel: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _grid_folder(tmp_path, multilabel)
    with caplog.at_level(logging.INFO, logger="medmask.interop.folders"):
        report = pack_folder(
            folder, tmp_path / "a.mska", exclude=["stom*", "nothing*"], skip_mismatched=True
        )
    assert sorted(report.left_out) == [
        "aaa_pulmonary.nii.gz",
        "stomach.nii.gz",
        "zz_shifted.nii.gz",
    ]
    assert report.left_out["stomach.nii.gz"] == "matches the exclude pattern 'stom*'"
    assert report.left_out["aaa_pulmonary.nii.gz"].startswith(
        "not on the grid of liver.nii.gz: shape"
    )
    assert "origin" in report.left_out["zz_shifted.nii.gz"]
    for name in report.left_out:
        assert name in caplog.text
    with MaskArchive(tmp_path / "a.mska") as archive:
        assert sorted(archive.structures()) == ["liver", "spleen"]
        np.testing.assert_array_equal(
            archive.get_binary_mask_by_names("liver"),
            (multilabel[0] == 5).transpose(2, 1, 0),
        )
    with pytest.raises(medmask.MaskFileNotFoundError, match=r"every \.nii/\.nii\.gz file matches"):
        pack_folder(folder, tmp_path / "b.mska", exclude=["*.nii.gz"])
    assert not (tmp_path / "b.mska").exists()


def test_exclude_resolves_two_files_for_one_structure(multilabel: Any, tmp_path: Path) -> None:
    data, affine = multilabel
    gz, plain = (data == 5).astype(np.uint8), (data == 6).astype(np.uint8)
    folder = _folder(tmp_path / "case", affine, {"liver.nii.gz": gz, "liver.nii": plain})
    with pytest.raises(medmask.InvalidValueError, match="'liver' is in two files"):
        pack_folder(folder, tmp_path / "x.mska")
    report = pack_folder(folder, tmp_path / "x.mska", exclude="*.nii")
    assert report.left_out == {"liver.nii": "matches the exclude pattern '*.nii'"}
    with MaskArchive(tmp_path / "x.mska") as archive:
        assert archive.get_binary_mask_by_names("liver").sum() == (data == 5).sum()


# --- names that unpack could not write back ---------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "why"),
    [
        ("pipe|name.nii.gz", "invalid on Windows"),
        (" leading.nii.gz", "starts with a space"),
        ("CON.nii.gz", "reserved device name"),
        ("tab\tname.nii.gz", "control character"),
    ],
)
def test_pack_refuses_names_unpack_could_not_write(
    tmp_path: Path, file_name: str, why: str
) -> None:
    a = np.zeros((3, 4, 5), np.uint8)
    a[1, 1, 1] = 1
    folder = _folder(tmp_path / "case", np.eye(4), {"ok.nii.gz": a, file_name: a})
    with pytest.raises(medmask.UnsafeNameError, match=why) as info:
        pack_folder(folder, tmp_path / "x.mska")
    assert "nothing was written" in str(info.value)
    assert "'ok'" not in str(info.value)
    assert not (tmp_path / "x.mska").exists()
    report = pack_folder(folder, tmp_path / "x.mska", exclude=[file_name])
    assert list(report.left_out) == [file_name]


def test_pack_refuses_names_equal_but_for_case(tmp_path: Path) -> None:
    a = np.ones((3, 4, 5), np.uint8)
    folder = _folder(tmp_path / "case", np.eye(4), {"Liver.nii.gz": a, "liver.nii.gz": a})
    with pytest.raises(medmask.UnsafeNameError, match="only by case"):
        pack_folder(folder, tmp_path / "x.mska")
    assert not (tmp_path / "x.mska").exists()


def test_a_table_that_names_only_some_values_names_none(
    multilabel: Any, table: dict[str, int], tmp_path: Path
) -> None:
    data, affine = multilabel
    spine = np.where((data >= 30) & (data <= 33), data, 0).astype(np.uint8)
    spine[data == 5] = 200  # a value TotalSegmentator's table does not name
    folder = _folder(tmp_path / "case", affine, {"spine.nii.gz": spine})
    report = pack_folder(folder, tmp_path / "a.mska", mapping=table)
    assert report.whole == {"spine": [f"spine_{v}" for v in (30, 31, 32, 33, 200)]}
    unpack(tmp_path / "a.mska", tmp_path / "out")
    assert_same_files([folder / "spine.nii.gz"], tmp_path / "out")
