"""DICOM interop on a real CT series: series geometry, NIfTI alignment, DICOM SEG write/read."""

from __future__ import annotations

import copy
import errno
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.sr.codedict import codes
from spacetransformer import Space

import medmask
from bounded import MB, assert_one_line_error, run_limited, traced_peak
from medmask import SegmentationMask
from medmask.errors import (
    AllocationLimitError,
    FormatError,
    InvalidValueError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    SpaceMismatchError,
)
from medmask.interop.dicom import (
    MissingUIDWarning,
    from_dicom_seg,
    sorted_series,
    space_from_dicom_series,
    to_dicom_seg,
)
from medmask.interop.nifti import read_nifti
from medmask.interop.segment_codes import standard_segment_codes
from rotations import rotation

TOL_MM = 1e-3
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
LABELMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"  # Label Map Segmentation Storage
BINARY_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage


# --- helpers ----------------------------------------------------------------------------------


def _lps(space: Space, kij: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """LPS positions of (N, 3) voxel indices by the formula of docs/format.md ("Space")."""
    steps = np.stack(
        [
            np.asarray(d, float) * float(s)
            for d, s in zip(
                (space.x_orientation, space.y_orientation, space.z_orientation),
                space.spacing,
                strict=True,
            )
        ]
    )
    return np.asarray(space.origin, float) + np.asarray(kij, float) @ steps


def _test_voxels(shape: tuple[int, ...], n_random: int = 100) -> npt.NDArray[np.int64]:
    """The 8 corner voxels and ``n_random`` seeded random voxels of ``shape``, as (N, 3)."""
    corners = [
        [a, b, c] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1) for c in (0, shape[2] - 1)
    ]
    rng = np.random.default_rng(20240611)
    random = rng.integers(0, shape, size=(n_random, 3))
    return np.concatenate([np.asarray(corners, dtype=np.int64), random])


def _header_position(ds: Any, i: npt.ArrayLike, j: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """DICOM: p = IPP + j * column spacing * row cosines + i * row spacing * column cosines."""
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    i_arr = np.asarray(i, float)[..., None]
    j_arr = np.asarray(j, float)[..., None]
    return ipp + j_arr * col_spacing * iop[:3] + i_arr * row_spacing * iop[3:]


def _series_positions(headers: list[Any], kij: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    return np.stack([_header_position(headers[k], i, j) for k, i, j in kij])


def _labels_by_value(shared_data: Path) -> dict[int, str]:
    names = json.loads((shared_data / "totalseg" / "labels_total.json").read_text())
    return {int(v): str(n) for n, v in names.items()}


def _relabelled(data: npt.NDArray[Any], values: list[int]) -> npt.NDArray[np.int64]:
    """Expected SEG read-back: value ``values[n]`` becomes segment number ``n + 1``."""
    out = np.zeros(data.shape, dtype=np.int64)
    for number, value in enumerate(sorted(values), start=1):
        out[data == value] = number
    return out


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def series_dir(shared_data: Path) -> Path:
    return shared_data / "totalseg" / "ct_dicom"


@pytest.fixture(scope="module")
def headers(series_dir: Path) -> list[Any]:
    """Headers in :func:`sorted_series` order."""
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted_series(series_dir)]


@pytest.fixture(scope="module")
def aligned(shared_data: Path) -> tuple[npt.NDArray[Any], Space]:
    """TotalSegmentator's labelmap (LAS NIfTI) flipped along axis 1 onto the DICOM grid."""
    array, space = read_nifti(shared_data / "totalseg" / "ct_dicom_seg.nii.gz")
    flipped = np.ascontiguousarray(array[:, ::-1, :])
    y_dir = np.asarray(space.y_orientation, float)
    origin = np.asarray(space.origin, float) + (array.shape[1] - 1) * space.spacing[1] * y_dir
    flipped_space = Space(
        shape=flipped.shape,
        origin=tuple(float(v) for v in origin),
        spacing=space.spacing,
        x_orientation=space.x_orientation,
        y_orientation=tuple(float(v) for v in -y_dir),
        z_orientation=space.z_orientation,
    )
    return flipped, flipped_space


@pytest.fixture(scope="module")
def ct_mask(aligned: tuple[npt.NDArray[Any], Space], shared_data: Path) -> SegmentationMask:
    """All labels of the aligned labelmap, named as in labels_total.json."""
    array, space = aligned
    names = _labels_by_value(shared_data)
    values = [int(v) for v in np.unique(array) if v]
    return SegmentationMask(array, {names[v]: v for v in values}, space)


def _craft(
    series_dir: Path,
    folder: Path,
    edit: Callable[[int, Any], None] | None = None,
    *,
    take: range = range(5),
) -> list[Path]:
    """Copy sorted slices ``take`` of the shared series into ``folder``, edited by ``edit``.

    Returns the copies in sorted order (file names keep the sorted order: ``s00``, ``s01``...).
    """
    folder.mkdir(parents=True, exist_ok=True)
    source = sorted_series(series_dir)
    out = []
    for n, k in enumerate(take):
        ds = pydicom.dcmread(source[k])
        if edit is not None:
            edit(n, ds)
        path = folder / f"s{n:02d}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


# --- space_from_dicom_series ------------------------------------------------------------------


def test_series_space_matches_every_slice_header(series_dir: Path, headers: list[Any]) -> None:
    space = space_from_dicom_series(series_dir)
    assert tuple(space.shape) == (20, 512, 512)
    kij = _test_voxels(tuple(space.shape))
    error = np.linalg.norm(_lps(space, kij) - _series_positions(headers, kij), axis=1)
    assert error.max() < TOL_MM, error.max()
    # slice k is the k-th slice along the normal (row x column cosines = +z here, feet -> head)
    z = [float(ds.ImagePositionPatient[2]) for ds in headers]
    assert z == sorted(z)
    assert np.allclose(space.x_orientation, (0, 0, 1))
    assert np.allclose(space.y_orientation, (0, 1, 0))  # rows: IOP[3:6]
    assert np.allclose(space.z_orientation, (1, 0, 0))  # columns: IOP[0:3]
    assert np.allclose(space.spacing, (2.0, 0.9765625, 0.9765625))


def test_series_space_ignores_file_order(series_dir: Path) -> None:
    files = sorted(series_dir.iterdir())
    expected = sorted_series(series_dir)
    rng = np.random.default_rng(7)
    for _ in range(3):
        shuffled = [files[int(n)] for n in rng.permutation(len(files))]
        assert sorted_series(shuffled) == expected
        assert space_from_dicom_series(shuffled) == space_from_dicom_series(series_dir)


def test_single_slice_series_uses_slice_thickness(series_dir: Path) -> None:
    one = sorted_series(series_dir)[3]
    space = space_from_dicom_series([one])
    assert tuple(space.shape) == (1, 512, 512)
    assert space.spacing[0] == pytest.approx(3.0)  # SliceThickness; no SpacingBetweenSlices


def test_missing_slice_is_named(series_dir: Path, tmp_path: Path) -> None:
    files = _craft(series_dir, tmp_path / "s", take=range(5))
    files[2].unlink()  # a gap of 4 mm between s01 and s03
    with pytest.raises(FormatError, match=re.escape(str(files[3])) + r".*4 mm.*missing"):
        space_from_dicom_series(tmp_path / "s")


def _set_orientation(n: int, ds: Any) -> None:
    if n == 3:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.995037, 0.0995037]


def _set_pixel_spacing(n: int, ds: Any) -> None:
    if n == 2:
        ds.PixelSpacing = [0.8, 0.8]


def _set_series_uid(n: int, ds: Any) -> None:
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1" if n < 3 else "1.2.826.0.1.3680043.8.498.2"


def _set_duplicate_position(n: int, ds: Any) -> None:
    if n == 4:
        ds.ImagePositionPatient = [-249.51171875, -437.51171875, -802.5]  # that of s01


def _shift_in_plane(n: int, ds: Any) -> None:
    if n == 2:  # gantry-tilt-like shear: this slice moved 5 mm posterior
        ds.ImagePositionPatient = [
            float(ds.ImagePositionPatient[0]),
            float(ds.ImagePositionPatient[1]) + 5.0,
            float(ds.ImagePositionPatient[2]),
        ]


@pytest.mark.parametrize(
    ("edit", "culprit", "problem"),
    [
        (_set_orientation, 3, "ImageOrientationPatient"),
        (_set_pixel_spacing, 2, "PixelSpacing"),
        (_set_series_uid, 3, "SeriesInstanceUID"),
        (_set_duplicate_position, 4, "same position as"),
        (_shift_in_plane, 2, "within the slice plane"),
    ],
    ids=["orientation", "pixel_spacing", "two_series", "duplicate", "sheared"],
)
def test_inconsistent_series_names_file_and_problem(
    series_dir: Path,
    tmp_path: Path,
    edit: Callable[[int, Any], None],
    culprit: int,
    problem: str,
) -> None:
    # take the 5 most inferior slices: s00 is at z = -804.5, s04 at -796.5
    files = _craft(series_dir, tmp_path / "s", edit, take=range(5))
    with pytest.raises(FormatError, match=re.escape(problem)) as info:
        space_from_dicom_series(tmp_path / "s")
    assert str(info.value).startswith(f"{files[culprit]}: ")
    assert isinstance(info.value, ValueError)


def test_empty_folder_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MaskFileNotFoundError, match="no DICOM files"):
        space_from_dicom_series(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file"):
        space_from_dicom_series(tmp_path / "nowhere")
    with pytest.raises(MaskFileNotFoundError, match=r"nowhere\.dcm"):
        sorted_series([tmp_path / "nowhere.dcm"])
    with pytest.raises(InvalidValueError, match="at least one"):
        sorted_series([])


def test_non_dicom_file_is_named(series_dir: Path, tmp_path: Path) -> None:
    _craft(series_dir, tmp_path / "s", take=range(3))
    notes = tmp_path / "s" / "notes.txt"
    notes.write_text("not an image\n")
    with pytest.raises(FormatError, match=re.escape(f"{notes}: not a DICOM file")):
        space_from_dicom_series(tmp_path / "s")


def test_dicom_without_geometry_is_named(tmp_path: Path) -> None:
    ds = pydicom.Dataset()
    ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.Rows, ds.Columns = 4, 4
    path = tmp_path / "sc.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=True)
    with pytest.raises(FormatError, match=re.escape(f"{path}: expected PixelSpacing")):
        space_from_dicom_series([path])


def _make_oblique(n: int, ds: Any) -> None:
    """Oblique slices 2.5 mm apart, file order running against the normal r x c."""
    rot = rotation(0.3, -0.2, 0.7)
    ds.ImageOrientationPatient = [round(float(v), 7) for v in (*rot[:, 0], *rot[:, 1])]
    position = np.array([10.25, -120.5, 33.0]) - n * 2.5 * rot[:, 2]
    ds.ImagePositionPatient = [round(float(v), 4) for v in position]


def test_oblique_series_and_seg_round_trip(series_dir: Path, tmp_path: Path) -> None:
    files = _craft(series_dir, tmp_path / "s", _make_oblique, take=range(4))
    assert sorted_series(files) == files[::-1]  # sorted along r x c
    space = space_from_dicom_series(files)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files[::-1]]
    kij = _test_voxels(tuple(space.shape))
    error = np.linalg.norm(_lps(space, kij) - _series_positions(headers, kij), axis=1)
    assert error.max() < TOL_MM, error.max()
    data = np.zeros(space.shape, dtype=np.uint8)
    data[0, 10:40, 300:350] = 3
    data[1:4, 200:260, 50:90] = 9
    mask = SegmentationMask(data, {"lesion": 3, "kidney": 9}, space)
    out = tmp_path / "oblique.seg.dcm"
    with pytest.warns(MissingUIDWarning):
        to_dicom_seg(mask, files, out)
    back = from_dicom_seg(out)
    assert np.array_equal(back.data, _relabelled(data, [3, 9]))
    assert back.mapping.to_dict() == {"lesion": 1, "kidney": 2}
    _assert_space_close(back.space, space)


# --- the shared NIfTI labelmap on the DICOM grid ----------------------------------------------


def test_nifti_labelmap_lands_on_dicom_grid_after_y_flip(
    shared_data: Path,
    series_dir: Path,
    headers: list[Any],
    aligned: tuple[npt.NDArray[Any], Space],
) -> None:
    img = nib.load(shared_data / "totalseg" / "ct_dicom_seg.nii.gz")
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")  # NIfTI y runs P -> A: DICOM rows A -> P
    array, space = aligned
    series_space = space_from_dicom_series(series_dir)
    assert array.shape == tuple(series_space.shape)  # no permutation needed, only the flip
    kij = _test_voxels(array.shape)
    dicom = _series_positions(headers, kij)
    # aligned voxel (k, i, j) is NIfTI voxel (x, y, z) = (j, ny - 1 - i, k), by nibabel's affine
    ny = array.shape[1]
    xyz1 = np.stack([kij[:, 2], ny - 1 - kij[:, 1], kij[:, 0], np.ones(len(kij))], axis=1)
    from_nifti_affine = (RAS_TO_LPS @ (img.affine @ xyz1.T)[:3]).T
    error_affine = np.linalg.norm(from_nifti_affine - dicom, axis=1).max()
    error_space = np.linalg.norm(_lps(space, kij) - dicom, axis=1).max()
    assert error_affine < TOL_MM, error_affine
    assert error_space < TOL_MM, error_space
    # and the labels moved with the grid: aligned[k, i, j] == nifti[j, ny - 1 - i, k]
    nifti = np.asarray(img.dataobj)
    x, y, z = (xyz1[:, n].astype(int) for n in range(3))
    assert np.array_equal(array[kij[:, 0], kij[:, 1], kij[:, 2]], nifti[x, y, z])
    assert np.array_equal(array, nifti.transpose(2, 1, 0)[:, ::-1, :])
    # anatomy agrees with rows = anterior -> posterior and columns = patient right -> left
    names = {n: v for v, n in _labels_by_value(shared_data).items()}

    def centroid(name: str) -> npt.NDArray[np.float64]:
        return np.argwhere(array == names[name]).mean(axis=0)

    assert centroid("aorta")[1] < centroid("autochthon_left")[1]  # aorta anterior to back muscles
    assert centroid("liver")[2] < centroid("spleen")[2]  # liver on the patient's right


# --- to_dicom_seg / from_dicom_seg ------------------------------------------------------------


def _check_highdicom_reads(
    out: Path, mask: SegmentationMask, headers: list[Any], sop_class: str
) -> None:
    """highdicom's own reading: labels, geometry per slice, pixels, source references."""
    values = sorted(v for _, v in mask.mapping.items())
    names = {v: n for n, v in mask.mapping.items()}
    expected = _relabelled(mask.data, values)
    seg = hd.seg.segread(out)
    assert seg.SOPClassUID == sop_class
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == [
        names[v] for v in values
    ]
    volume = seg.get_volume(combine_segments=True, relabel=False)
    hd_array = np.asarray(volume.array)
    assert hd_array.shape == expected.shape
    # match highdicom's slices to ours by position (it stacks them in the opposite direction)
    index = np.zeros((len(hd_array), 4))
    index[:, 0], index[:, 3] = np.arange(len(hd_array)), 1
    slice_origins = (volume.affine @ index.T)[:3].T
    for hk, origin in enumerate(slice_origins):
        k = int(np.argmin([np.linalg.norm(_header_position(ds, 0, 0) - origin) for ds in headers]))
        assert np.linalg.norm(_header_position(headers[k], 0, 0) - origin) < TOL_MM
        assert np.array_equal(hd_array[hk], expected[k]), (hk, k)
    # frames reference their source slices
    for k in (0, 7, 19):
        uid = headers[k].file_meta.MediaStorageSOPInstanceUID
        by_source = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid], combine_segments=True
        )
        assert np.array_equal(by_source[0], expected[k])


def test_labelmap_seg_round_trip(
    ct_mask: SegmentationMask, series_dir: Path, headers: list[Any], tmp_path: Path
) -> None:
    out = tmp_path / "ct.seg.dcm"
    with pytest.warns(MissingUIDWarning) as record:  # the shared series is anonymized
        assert to_dicom_seg(ct_mask, series_dir, out) == out.stat().st_size
    missing = sorted(str(w.message).split(" has no ")[1].split(" ")[0] for w in record)
    assert missing == ["SeriesInstanceUID", "StudyInstanceUID"]
    back = from_dicom_seg(out)
    values = sorted(v for _, v in ct_mask.mapping.items())
    assert len(values) == 31
    assert np.array_equal(back.data, _relabelled(ct_mask.data, values))
    names = {v: n for n, v in ct_mask.mapping.items()}
    assert back.mapping.to_dict() == {names[v]: n for n, v in enumerate(values, start=1)}
    _assert_space_close(back.space, space_from_dicom_series(series_dir))
    _check_highdicom_reads(out, ct_mask, headers, LABELMAP_SOP_CLASS)
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert ds.SegmentationType == "LABELMAP"
    assert ds.SeriesDescription == "medmask"
    assert int(ds.NumberOfFrames) == 20
    # every name is TotalSegmentator's: each segment has the shipped table's SNOMED CT codes
    shipped = standard_segment_codes()
    items = [it for it in ds.SegmentSequence if it.SegmentNumber != 0]  # 0: LABELMAP background
    assert len(items) == 31
    for item in items:
        code = shipped[item.SegmentLabel]
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == code.category.value
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == code.type.value
        assert item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert item.SegmentAlgorithmType == "MANUAL"  # no algorithm_name


def _assert_space_close(a: Space, b: Space) -> None:
    assert tuple(a.shape) == tuple(b.shape)
    kij = _test_voxels(tuple(a.shape))
    assert np.linalg.norm(_lps(a, kij) - _lps(b, kij), axis=1).max() < TOL_MM
    for name in ("x_orientation", "y_orientation", "z_orientation"):
        assert np.allclose(getattr(a, name), getattr(b, name), atol=1e-5)


def test_binary_seg_round_trip_keeps_contiguous_values(
    ct_mask: SegmentationMask, series_dir: Path, headers: list[Any], tmp_path: Path
) -> None:
    # four organs renumbered 1..4, so the values survive the round trip unchanged
    keep = ["liver", "spleen", "stomach", "aorta"]
    data = np.zeros(ct_mask.shape, dtype=np.uint8)
    for number, name in enumerate(keep, start=1):
        data[ct_mask.data == ct_mask.mapping[name]] = number
    mask = SegmentationMask(data, {n: v for v, n in enumerate(keep, start=1)}, ct_mask.space)
    out = tmp_path / "binary.seg.dcm"
    liver = (codes.SCT.Organ, codes.SCT.Liver)
    with pytest.warns(MissingUIDWarning):
        to_dicom_seg(
            mask,
            sorted_series(series_dir)[::-1],
            out,
            segmentation_type="binary",
            segment_codes={"liver": liver},
            algorithm_name="TotalSegmentator",
            algorithm_version="2",
        )
    back = from_dicom_seg(out)
    assert np.array_equal(back.data, mask.data)
    assert back.mapping == mask.mapping
    _assert_space_close(back.space, mask.space)
    _check_highdicom_reads(out, mask, headers, BINARY_SOP_CLASS)
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert ds.SegmentationType == "BINARY"
    liver_item = ds.SegmentSequence[keep.index("liver")]
    assert liver_item.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Liver.value
    assert liver_item.SegmentAlgorithmType == "AUTOMATIC"
    assert liver_item.SegmentAlgorithmName == "TotalSegmentator"


def test_omitted_empty_frames_read_back_on_their_span(
    ct_mask: SegmentationMask, series_dir: Path, tmp_path: Path
) -> None:
    data = np.zeros(ct_mask.shape, dtype=np.uint8)
    data[5:9, 100:110, 200:220] = 1
    data[7, 300, 300] = 2
    mask = SegmentationMask(data, {"a": 1, "b": 2}, ct_mask.space)
    out = tmp_path / "omit.seg.dcm"
    with pytest.warns(MissingUIDWarning):
        to_dicom_seg(mask, series_dir, out, omit_empty_frames=True)
    back = from_dicom_seg(out)
    assert np.array_equal(back.data, data[5:9])
    _assert_space_close(
        back.space,
        Space(
            shape=(4, 512, 512),
            origin=tuple(float(v) for v in _lps(mask.space, [[5, 0, 0]])[0]),
            spacing=mask.space.spacing,
            x_orientation=mask.space.x_orientation,
            y_orientation=mask.space.y_orientation,
            z_orientation=mask.space.z_orientation,
        ),
    )


def test_mask_in_another_space_is_refused(
    ct_mask: SegmentationMask,
    series_dir: Path,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "never.dcm"
    array, nifti_space = read_nifti(shared_data / "totalseg" / "ct_dicom_seg.nii.gz")
    # the NIfTI's grid (rows flipped, aligned for you) shifted by 0.5 mm: no flip fixes that
    origin = np.asarray(nifti_space.origin) + 0.5 * np.asarray(nifti_space.z_orientation)
    moved = Space(
        shape=nifti_space.shape,
        origin=tuple(float(v) for v in origin),
        spacing=nifti_space.spacing,
        x_orientation=nifti_space.x_orientation,
        y_orientation=nifti_space.y_orientation,
        z_orientation=nifti_space.z_orientation,
    )
    with pytest.raises(SpaceMismatchError, match=r"mask\.align_to\(") as info:
        to_dicom_seg(SegmentationMask(array, ct_mask.mapping, moved), series_dir, out)
    assert isinstance(info.value, ValueError)
    assert "direction of axis 1 (0, -1, 0) (the series' (0, 1, 0))" in str(info.value)
    space = ct_mask.space
    shifted = Space(
        shape=space.shape,
        origin=(space.origin[0], space.origin[1] + 0.01, space.origin[2]),
        spacing=space.spacing,
        x_orientation=space.x_orientation,
        y_orientation=space.y_orientation,
        z_orientation=space.z_orientation,
    )
    with pytest.raises(SpaceMismatchError, match="origin"):
        to_dicom_seg(SegmentationMask(ct_mask.data, ct_mask.mapping, shifted), series_dir, out)
    part = SegmentationMask(ct_mask.data[:10], ct_mask.mapping, _slab(space, 10))
    with pytest.raises(SpaceMismatchError, match="shape"):
        to_dicom_seg(part, series_dir, out)
    assert not out.exists()


def _slab(space: Space, n: int) -> Space:
    return Space(
        shape=(n, *space.shape[1:]),
        origin=space.origin,
        spacing=space.spacing,
        x_orientation=space.x_orientation,
        y_orientation=space.y_orientation,
        z_orientation=space.z_orientation,
    )


def test_to_dicom_seg_argument_errors(
    ct_mask: SegmentationMask, series_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x.dcm"
    long_name = SegmentationMask(ct_mask.data > 0, {"x" * 65: 1}, ct_mask.space)
    with pytest.raises(InvalidValueError, match="at most 64 characters"):
        to_dicom_seg(long_name, series_dir, out)
    with pytest.raises(InvalidValueError, match="segmentation_type"):
        to_dicom_seg(ct_mask, series_dir, out, segmentation_type="FRACTIONAL")
    empty = SegmentationMask(np.zeros(ct_mask.shape, np.uint8), {}, ct_mask.space)
    with pytest.raises(InvalidValueError, match="at least one non-zero label"):
        to_dicom_seg(empty, series_dir, out)
    out.write_bytes(b"keep me")
    with pytest.raises(MaskFileExistsError):
        to_dicom_seg(ct_mask, series_dir, out, overwrite=False)
    assert out.read_bytes() == b"keep me"


def _save_binary_seg(
    headers: list[Any], stacked: npt.NDArray[np.uint8], labels: Sequence[str], path: Path
) -> Path:
    """A BINARY SEG of ``stacked`` (slices, rows, columns, segments) on the first slices of
    the shared series, segment ``n`` labelled ``labels[n - 1]``, saved at ``path``."""
    sources = []
    for ds in headers[: stacked.shape[0]]:
        ds = copy.deepcopy(ds)  # keeps the module fixture intact
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.10"
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.11"
        sources.append(ds)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=label,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type="MANUAL",
        )
        for n, label in enumerate(labels, start=1)
    ]
    hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=False,
    ).save_as(path)
    return path


def test_overlapping_binary_segments_are_refused(
    series_dir: Path, headers: list[Any], tmp_path: Path
) -> None:
    stacked = np.zeros((4, 512, 512, 2), dtype=np.uint8)
    stacked[1:3, 100:150, 100:150, 0] = 1
    stacked[2:4, 140:200, 140:200, 1] = 1  # overlaps segment 1 on slice 2
    out = _save_binary_seg(
        headers, stacked, ("lung", "lung_upper_lobe_left"), tmp_path / "overlap.dcm"
    )
    with pytest.raises(InvalidValueError, match=r"segments 1, 2 overlap in 100 voxels") as info:
        from_dicom_seg(out)
    assert str(info.value).startswith(f"{out}: ")


def test_from_dicom_seg_errors(series_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MaskFileNotFoundError, match="no such file"):
        from_dicom_seg(tmp_path / "missing.dcm")
    ct_slice = sorted_series(series_dir)[0]
    with pytest.raises(FormatError, match=re.escape(f"{ct_slice}: cannot read as a DICOM SEG")):
        from_dicom_seg(ct_slice)
    text = tmp_path / "text.dcm"
    text.write_text("hello")
    with pytest.raises(FormatError, match=re.escape(f"{text}: not a DICOM file")):
        from_dicom_seg(text)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), medmask.StoragePermissionError),
        (OSError(errno.EIO, "Input/output error"), medmask.StorageError),
    ],
)
def test_a_local_seg_that_cannot_be_read_is_a_storage_error_naming_it(
    error: OSError, expected: type[Exception], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "unreadable.dcm"
    path.write_bytes(b"DICM")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error  # as the file system would (the tests run as root: chmod cannot refuse)

    monkeypatch.setattr(pydicom, "dcmread", fail)
    with pytest.raises(expected, match=re.escape(f"{path}: ")) as info:
        from_dicom_seg(path)
    assert info.value.__cause__ is error


def test_seg_at_a_url(ct_mask: SegmentationMask, series_dir: Path, memory_fs: Any) -> None:
    url = "memory://segs/ct.seg.dcm"
    with pytest.warns(MissingUIDWarning):
        size = to_dicom_seg(ct_mask, series_dir, url)
    assert memory_fs.size("/segs/ct.seg.dcm") == size
    back = from_dicom_seg(url)
    values = sorted(v for _, v in ct_mask.mapping.items())
    np.testing.assert_array_equal(back.data, _relabelled(ct_mask.data, values))
    with pytest.raises(AllocationLimitError, match=r"ct\.seg\.dcm"):
        from_dicom_seg(url, max_bytes=1000)
    with pytest.raises(MaskFileNotFoundError, match="missing"):
        from_dicom_seg("memory://segs/missing.dcm")


# --- declared sizes checked before allocating (issue 17, item 5) ------------------------------


def _binary_seg(headers: list[Any], path: Path) -> Path:
    """A small BINARY SEG on the first two slices of the shared series (two segments)."""
    stacked = np.zeros((2, 512, 512, 2), dtype=np.uint8)
    stacked[0, 100:150, 100:150, 0] = 1
    stacked[1, 200:220, 200:230, 1] = 1
    return _save_binary_seg(headers, stacked, ("liver", "spleen"), path)


def _edited(source: Path, path: Path, edit: Callable[[Any], None]) -> Path:
    ds = pydicom.dcmread(source)
    edit(ds)
    ds.save_as(path)
    return path


def _frames_claimed(count: int) -> Callable[[Any], None]:
    def edit(ds: Any) -> None:
        ds.NumberOfFrames = count

    return edit


def _without_per_frame_groups(ds: Any) -> None:
    ds.NumberOfFrames = 10**9
    del ds.PerFrameFunctionalGroupsSequence


def _frame_far_away(ds: Any) -> None:
    """Move the last frame 2,000,000 slices along the plane normal (the slices run along
    -normal: the grid then spans the first slice - 1 ... + 2,000,000)."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    cosines = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    normal = np.cross(cosines[:3], cosines[3:])
    plane = ds.PerFrameFunctionalGroupsSequence[-1].PlanePositionSequence[0]
    first = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    step = abs(
        float((np.asarray(plane.ImagePositionPatient, float) - first.ImagePositionPatient) @ normal)
    )
    position = np.asarray(first.ImagePositionPatient, float) + 2_000_000 * step * normal
    plane.ImagePositionPatient = [f"{v:.6f}" for v in position]


def _short_pixel_data(ds: Any) -> None:
    """Pixel data for a fraction of a frame, in a file larger than all frames need."""
    ds.PixelData = ds.PixelData[:1000]
    ds.private_block(0x0009, "medmask test", create=True).add_new(0x10, "OB", bytes(200_000))


def _huge_frames(ds: Any) -> None:
    ds.Rows = ds.Columns = 30000  # 4 frames of 30000 x 30000 bits: 450 MB of pixel data


@pytest.mark.parametrize(
    ("edit", "error", "why"),
    [
        (_frames_claimed(10**9), FormatError, "NumberOfFrames is 1,000,000,000 but the"),
        (_frames_claimed(5), FormatError, "NumberOfFrames is 5 but the per-frame"),
        (_without_per_frame_groups, AllocationLimitError, "declares (1000000000, 512, 512)"),
        (_frame_far_away, AllocationLimitError, "declares (2000002, 512, 512)"),
        (_huge_frames, medmask.TruncatedFileError, "450,000,000 bytes of pixel data"),
        (_short_pixel_data, medmask.TruncatedFileError, "its pixel data holds 1,000 bytes"),
    ],
)
def test_declared_frames_and_extent_are_checked_before_allocating(
    headers: list[Any],
    tmp_path: Path,
    memory_fs: Any,
    edit: Callable[[Any], None],
    error: type[Exception],
    why: str,
) -> None:
    good = _binary_seg(headers, tmp_path / "good.dcm")
    assert from_dicom_seg(good).mapping.to_dict() == {"liver": 1, "spleen": 2}
    bad = _edited(good, tmp_path / "bad.dcm", edit)
    memory_fs.pipe("/segs/bad.dcm", bad.read_bytes())
    for source in (bad, "memory://segs/bad.dcm"):
        exc, peak = traced_peak(lambda source=source: from_dicom_seg(source))
        assert isinstance(exc, error), exc
        assert str(exc).startswith(f"{source}: "), exc
        assert why in str(exc), exc
        assert peak < 4 * MB + 2 * bad.stat().st_size, peak  # the file, not what it declares


def test_cli_refuses_a_hostile_seg_in_one_line(headers: list[Any], tmp_path: Path) -> None:
    good = _binary_seg(headers, tmp_path / "good.dcm")
    frames = _edited(good, tmp_path / "frames.dcm", _without_per_frame_groups)
    far = _edited(good, tmp_path / "far.dcm", _frame_far_away)
    rows = _edited(good, tmp_path / "rows.dcm", _huge_frames)
    cases = [(frames, "above the limit"), (far, "above the limit"), (rows, "pixel data")]
    for path, why in cases:
        for command in (["info", path], ["convert", path, tmp_path / "out.msk"], ["ls", path]):
            assert_one_line_error(run_limited(*command), str(path), why)
    assert not (tmp_path / "out.msk").exists()


def test_label_map_dtype_follows_the_number_of_segments(series_dir: Path, tmp_path: Path) -> None:
    space = space_from_dicom_series(series_dir)
    data = np.zeros(tuple(int(s) for s in space.shape), np.uint16)
    values = np.arange(1, 301)  # 300 segments: segment numbers past 255
    data[values % 20, values // 20 + 100, 200] = values
    mask = SegmentationMask(data, {f"s{v}": int(v) for v in values}, space)
    out = tmp_path / "many.dcm"
    with pytest.warns(MissingUIDWarning):
        to_dicom_seg(mask, series_dir, out)
    back = from_dicom_seg(out)
    np.testing.assert_array_equal(back.data, data, strict=False)
    assert back.mapping.to_dict() == {f"s{v}": int(v) for v in values}


def _segmentation_type(ds: Any) -> None:
    ds.SegmentationType = "BINA6Y"


def _rows_missing(ds: Any) -> None:
    del ds.Rows


def _bits(ds: Any) -> None:
    ds.BitsAllocated = 12


def _rows_zero(ds: Any) -> None:
    ds.Rows = 0


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_segmentation_type, "'BINA6Y' is not a valid"),
        (_rows_missing, "expected Rows as an integer >= 1"),
        (_bits, "expected BitsAllocated 1, 8 or 16"),
        (_rows_zero, "expected Rows as an integer >= 1"),
    ],
)
def test_malformed_seg_attributes_are_format_errors(
    headers: list[Any], tmp_path: Path, edit: Callable[[Any], None], why: str
) -> None:
    good = _binary_seg(headers, tmp_path / "good.dcm")
    bad = _edited(good, tmp_path / "bad.dcm", edit)
    with pytest.raises(FormatError, match=re.escape(f"{bad}: ") + ".*" + re.escape(why)):
        from_dicom_seg(bad)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(FormatError, match=re.escape(f"{cut}: ")):
        from_dicom_seg(cut)


def _position_noise(ds: Any) -> None:
    """Segment 2's second frame 0.1 micrometre off its slice (float noise in a real file)."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    cosines = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    normal = np.cross(cosines[:3], cosines[3:])
    plane = ds.PerFrameFunctionalGroupsSequence[-1].PlanePositionSequence[0]
    position = np.asarray(plane.ImagePositionPatient, float) + 1e-4 * normal
    plane.ImagePositionPatient = [f"{v:.6f}" for v in position]


def test_float_noise_in_frame_positions_does_not_widen_the_grid(
    headers: list[Any], tmp_path: Path
) -> None:
    good = _binary_seg(headers, tmp_path / "good.dcm")
    noisy = _edited(good, tmp_path / "noisy.dcm", _position_noise)
    mask = from_dicom_seg(noisy, max_bytes=4 * 512 * 512)  # the grid: 2 slices, not 20,001
    assert mask.shape == (2, 512, 512)
    np.testing.assert_array_equal(mask.data, from_dicom_seg(good).data)
