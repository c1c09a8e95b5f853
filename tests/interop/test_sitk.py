"""SimpleITK <-> SegmentationMask in memory, and SimpleITK as an independent reader of our
NIfTI files (it converts NIfTI's RAS to LPS itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from spacetransformer import Space

from medmask import FormatError, InvalidTypeError, InvalidValueError, SegmentationMask
from medmask.geometry import voxel_to_world
from medmask.interop.nifti import from_nifti, to_nifti
from medmask.interop.sitk import LABELS_METADATA_KEY, from_sitk, space_from_sitk, to_sitk


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _spaces() -> dict[str, Space]:
    rot = _rotation(0.3, -0.2, 0.7)
    flipped = np.diag([-1.0, 1.0, -1.0])
    return {
        "oblique": Space(
            shape=(6, 9, 11),
            origin=(12.5, -40.25, 301.0),
            spacing=(2.5, 0.8, 0.7),
            x_orientation=tuple(float(v) for v in rot[:, 0]),
            y_orientation=tuple(float(v) for v in rot[:, 1]),
            z_orientation=tuple(float(v) for v in rot[:, 2]),
        ),
        "flipped_anisotropic": Space(
            shape=(4, 10, 7),
            origin=(-3.0, 7.0, -100.0),
            spacing=(5.0, 0.5, 1.25),
            x_orientation=tuple(float(v) for v in flipped[:, 2]),
            y_orientation=tuple(float(v) for v in flipped[:, 1]),
            z_orientation=tuple(float(v) for v in flipped[:, 0]),
        ),
    }


def _mask(space: Space, dtype: type = np.uint16) -> SegmentationMask:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 3, tuple(int(s) for s in space.shape)).astype(dtype) * 300
    return SegmentationMask(data, {"liver": 300, "spleen": 600}, space)


def _index_voxels(shape: tuple[int, ...]) -> np.ndarray:
    corners = [
        [a, b, c] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1) for c in (0, shape[2] - 1)
    ]
    rng = np.random.default_rng(3)
    return np.concatenate([np.array(corners), rng.integers(0, shape, size=(100, 3))])


@pytest.mark.parametrize("which", ["oblique", "flipped_anisotropic"])
def test_round_trip_in_memory(which: str) -> None:
    mask = _mask(_spaces()[which])
    image = to_sitk(mask)
    assert image.GetSize() == mask.shape[::-1]
    assert image.GetPixelID() == sitk.sitkUInt16
    assert from_sitk(image) == mask  # names from the metadata
    for kij in _index_voxels(mask.shape):
        itk = image.TransformIndexToPhysicalPoint([int(v) for v in kij[::-1]])
        np.testing.assert_allclose(itk, voxel_to_world(mask.space, kij), atol=1e-9)


@pytest.mark.parametrize("which", ["oblique", "flipped_anisotropic"])
def test_simpleitk_reads_our_nifti_on_the_same_points(which: str, tmp_path: Path) -> None:
    mask = _mask(_spaces()[which])
    path = tmp_path / "m.nii.gz"
    to_nifti(mask, path)
    image = sitk.ReadImage(str(path))
    for kij in _index_voxels(mask.shape):
        itk = image.TransformIndexToPhysicalPoint([int(v) for v in kij[::-1]])
        np.testing.assert_allclose(itk, voxel_to_world(mask.space, kij), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), mask.data)
    back = from_sitk(image, {"liver": 300, "spleen": 600})
    assert back.mapping == mask.mapping
    np.testing.assert_array_equal(back.data, mask.data)
    ours = from_nifti(path, {"liver": 300, "spleen": 600})
    for key in ("origin", "spacing", "x_orientation", "y_orientation", "z_orientation"):
        np.testing.assert_allclose(
            getattr(space_from_sitk(image), key), getattr(ours.space, key), atol=1e-5
        )


def test_shared_nifti_through_simpleitk_and_medmask(shared_data: Path) -> None:
    path = shared_data / "totalseg" / "ct_dicom_seg.nii.gz"
    image = sitk.ReadImage(str(path))
    ours = from_nifti(path)
    via_sitk = from_sitk(image)
    np.testing.assert_array_equal(via_sitk.data, ours.data)
    for kij in _index_voxels(ours.shape):
        itk = image.TransformIndexToPhysicalPoint([int(v) for v in kij[::-1]])
        np.testing.assert_allclose(itk, voxel_to_world(ours.space, kij), atol=1e-3)


def test_bool_masks_and_unnamed_images() -> None:
    space = _spaces()["oblique"]
    data = np.zeros(tuple(int(s) for s in space.shape), bool)
    data[1, 2, 3] = True
    image = to_sitk(SegmentationMask(data, {"lesion": 1}, space))
    assert image.GetPixelID() == sitk.sitkUInt8
    assert from_sitk(image).mapping.to_dict() == {"lesion": 1}
    plain = sitk.GetImageFromArray(data.astype(np.int16) * 5)
    assert not plain.HasMetaDataKey(LABELS_METADATA_KEY)
    assert from_sitk(plain).mapping.to_dict() == {"label_5": 5}


def test_refusals() -> None:
    with pytest.raises(InvalidTypeError, match=r"SimpleITK\.Image"):
        from_sitk(np.zeros((2, 2, 2)))
    with pytest.raises(InvalidValueError, match="3-D"):
        from_sitk(sitk.Image(4, 4, sitk.sitkUInt8))
    with pytest.raises(InvalidValueError, match="scalar"):
        from_sitk(sitk.Image([4, 4, 4], sitk.sitkVectorUInt8, 3))
    fractional = sitk.GetImageFromArray(np.full((2, 2, 2), 0.5, np.float32))
    with pytest.raises(InvalidValueError, match="non-integer"):
        from_sitk(fractional)
    with pytest.raises(InvalidTypeError, match="SegmentationMask"):
        to_sitk(np.zeros((2, 2, 2)))  # type: ignore[arg-type]
    broken = sitk.GetImageFromArray(np.ones((2, 2, 2), np.uint8))
    broken.SetMetaData(LABELS_METADATA_KEY, "{not json")
    with pytest.raises(FormatError, match="medmask:labels"):
        from_sitk(broken)
