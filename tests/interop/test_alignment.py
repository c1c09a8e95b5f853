"""Acceptance: TotalSegmentator's NIfTI of the shared CT (its y axis runs opposite to the
DICOM rows) aligned onto ``space_from_dicom_series`` is the DICOM grid, voxel for voxel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
import pytest

from medmask import SegmentationMask, from_nifti, load_mask, save_mask
from medmask.geometry import voxel_to_world
from medmask.interop.dicom import (
    from_dicom_seg,
    sorted_series,
    space_from_dicom_series,
    to_dicom_seg,
)


@pytest.fixture(scope="module")
def series(shared_data: Path) -> Path:
    return shared_data / "totalseg" / "ct_dicom"


@pytest.fixture(scope="module")
def aligned(shared_data: Path, series: Path) -> SegmentationMask:
    mask = from_nifti(shared_data / "totalseg" / "ct_dicom_seg.nii.gz")
    return mask.align_to(space_from_dicom_series(series))


def _voxels(shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    corners = [
        [a, b, c] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1) for c in (0, shape[2] - 1)
    ]
    rng = np.random.default_rng(10)
    return np.concatenate([np.array(corners), rng.integers(0, shape, size=(100, 3))])


def _dicom_position(ds: Any, i: int, j: int) -> npt.NDArray[np.float64]:
    """ImagePositionPatient + j * PixelSpacing[1] * row cosines + i * PixelSpacing[0] * column
    cosines: the LPS centre of row i, column j of one slice (PS3.3 C.7.6.2.1.1)."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return ipp + j * dc * iop[:3] + i * dr * iop[3:]


def test_voxel_kij_is_slice_k_row_i_column_j(aligned: SegmentationMask, series: Path) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted_series(series)]
    assert aligned.shape == (len(headers), int(headers[0].Rows), int(headers[0].Columns))
    # slices in the order of their position along the normal, as space_from_dicom_series sorts
    positions = [float(np.dot(np.array(h.ImagePositionPatient, float), [0, 0, 1])) for h in headers]
    assert positions == sorted(positions)
    kij = _voxels(aligned.shape)
    ours = voxel_to_world(aligned.space, kij)
    dicom = np.stack([_dicom_position(headers[k], i, j) for k, i, j in kij])
    assert float(np.abs(ours - dicom).max()) < 1e-3


def test_labels_land_on_the_same_world_points(aligned: SegmentationMask, shared_data: Path) -> None:
    img = nib.load(shared_data / "totalseg" / "ct_dicom_seg.nii.gz")
    xyz = np.asarray(img.dataobj)
    inverse = np.linalg.inv(img.affine)
    kij = _voxels(aligned.shape)
    lps = voxel_to_world(aligned.space, kij)
    ras = np.c_[-lps[:, 0], -lps[:, 1], lps[:, 2], np.ones(len(lps))]
    ijk = np.rint((inverse @ ras.T).T[:, :3]).astype(int)
    assert np.abs((inverse @ ras.T).T[:, :3] - ijk).max() < 1e-6  # exactly on NIfTI voxels
    np.testing.assert_array_equal(aligned.data[tuple(kij.T)], xyz[tuple(ijk.T)])
    np.testing.assert_array_equal(  # the whole volume: a flip of rows, nothing else
        aligned.data, np.asarray(xyz).transpose(2, 1, 0)[:, ::-1, :]
    )
    assert (
        aligned.label_counts()
        == from_nifti(shared_data / "totalseg" / "ct_dicom_seg.nii.gz").label_counts()
    )


def test_aligned_mask_goes_to_dicom_seg_and_back(
    aligned: SegmentationMask, series: Path, tmp_path: Path
) -> None:
    some = {name: aligned.mapping[name] for name in ("label_1", "label_5", "label_52")}
    values = sorted(some.values())
    data = np.where(np.isin(aligned.data, values), aligned.data, 0)
    mask = SegmentationMask(data, some, aligned.space)
    with pytest.warns(UserWarning, match="anonymized"):
        to_dicom_seg(mask, series, tmp_path / "seg.dcm")
    back = from_dicom_seg(tmp_path / "seg.dcm")
    np.testing.assert_array_equal(
        back.get_binary_mask_by_names("label_52"), data == some["label_52"]
    )
    assert back.align_to(aligned.space).data.shape == aligned.shape
    # and through .msk: the aligned mask is stored and read back exactly
    save_mask(mask, tmp_path / "seg.msk")
    assert load_mask(tmp_path / "seg.msk") == mask
