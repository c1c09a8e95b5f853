"""NIfTI interop: RAS affines <-> LPS (z, y, x) spaces, reading and writing label images."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
from spacetransformer import Space

import medmask
from bounded import MB, assert_one_line_error, run_limited, traced_peak
from medmask import FormatError, SegmentationMask
from medmask.geometry import spaces_match
from medmask.interop.nifti import (
    affine_from_space,
    from_nifti,
    read_nifti,
    space_from_affine,
    to_nifti,
    write_nifti,
)
from rotations import rotation

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _lps_of_voxel(space: Space, zyx: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """LPS position of voxel (i, j, k) by the formula of docs/format.md section 2."""
    i, j, k = (float(v) for v in np.asarray(zyx))
    return (
        np.asarray(space.origin, float)
        + i * space.spacing[0] * np.asarray(space.x_orientation, float)
        + j * space.spacing[1] * np.asarray(space.y_orientation, float)
        + k * space.spacing[2] * np.asarray(space.z_orientation, float)
    )


def _lps_from_affine(
    affine: npt.NDArray[np.float64], zyx: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    i, j, k = (float(v) for v in np.asarray(zyx))
    ras = affine @ np.array([k, j, i, 1.0])  # NIfTI array index order is (x, y, z)
    return RAS_TO_LPS @ ras[:3]


def _oblique_affine() -> npt.NDArray[np.float64]:
    affine = np.eye(4)
    affine[:3, :3] = rotation(0.3, -0.2, 0.7) @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = [12.5, -40.25, 301.0]
    return affine


def _check_geometry(affine: npt.NDArray[np.float64], space: Space, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    shape = np.asarray(space.shape)
    for zyx in [(0, 0, 0), tuple(shape - 1), *rng.integers(0, shape, size=(20, 3))]:
        np.testing.assert_allclose(
            _lps_of_voxel(space, zyx), _lps_from_affine(affine, zyx), atol=1e-6
        )


# --- affine <-> space -------------------------------------------------------------------------


def test_oblique_affine_round_trip() -> None:
    affine = _oblique_affine()
    space = space_from_affine(affine, (14, 12, 10))
    assert tuple(space.shape) == (10, 12, 14)  # (z, y, x)
    np.testing.assert_allclose(space.spacing, (2.5, 0.8, 0.7))
    axes = np.array([space.x_orientation, space.y_orientation, space.z_orientation])
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)  # orthonormal
    assert not np.allclose(np.abs(axes), np.round(np.abs(axes)))  # really oblique
    np.testing.assert_allclose(affine_from_space(space), affine, atol=1e-9)
    _check_geometry(affine, space)


@pytest.mark.parametrize(
    "diagonal",
    [(1.0, 1.0, 1.0), (-0.9765625, 0.9765625, 2.0), (-1.5, -1.5, 3.0), (2.0, -0.5, -1.25)],
    ids=["RAS", "LAS", "LPS", "RPI"],
)
def test_axis_aligned_affines_round_trip(diagonal: tuple[float, float, float]) -> None:
    affine = np.diag([*diagonal, 1.0])
    affine[:3, 3] = [100.0, -20.0, 7.5]
    space = space_from_affine(affine, (5, 6, 7))
    np.testing.assert_allclose(space.spacing, np.abs(diagonal)[::-1])
    np.testing.assert_allclose(space.origin, (-100.0, 20.0, 7.5))
    np.testing.assert_allclose(affine_from_space(space), affine)
    _check_geometry(affine, space)


def test_zero_length_axis_is_refused() -> None:
    affine = np.diag([1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="zero-length axis"):
        space_from_affine(affine, (2, 2, 2))


def test_las_ct_seg_lands_on_lps(shared_data: Path) -> None:
    img = nib.load(shared_data / "totalseg" / "ct_dicom_seg.nii.gz")
    affine = np.asarray(img.affine, dtype=np.float64)
    assert nib.aff2axcodes(affine) == ("L", "A", "S")
    array, space = read_nifti(shared_data / "totalseg" / "ct_dicom_seg.nii.gz")
    assert array.shape == (20, 512, 512)
    assert tuple(space.shape) == (20, 512, 512)
    np.testing.assert_allclose(space.origin, (-affine[0, 3], -affine[1, 3], affine[2, 3]))
    np.testing.assert_allclose(_lps_of_voxel(space, (0, 0, 0)), space.origin)
    np.testing.assert_allclose(space.spacing, (2.0, 0.9765625, 0.9765625))
    # LAS: x grows to patient left (+L in LPS), y to anterior (-P), z to superior (+S)
    np.testing.assert_allclose(space.z_orientation, (1.0, 0.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(space.y_orientation, (0.0, -1.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(space.x_orientation, (0.0, 0.0, 1.0), atol=1e-12)
    np.testing.assert_allclose(affine_from_space(space), affine, atol=1e-9)
    _check_geometry(affine, space)
    np.testing.assert_array_equal(array, np.asarray(img.dataobj).transpose(2, 1, 0))


# --- reading ----------------------------------------------------------------------------------


def test_read_nifti_is_the_transposed_array(shared_data: Path) -> None:
    path = shared_data / "totalseg" / "multilabel_42.nii.gz"
    img = nib.load(path)
    array, space = read_nifti(path)
    expected = np.asarray(img.dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(array, expected)
    assert array.dtype == expected.dtype
    assert array.flags.c_contiguous
    assert array.shape == (30, 101, 122)
    assert tuple(space.shape) == array.shape
    np.testing.assert_allclose(space.spacing, (3.0, 3.0, 3.0))
    _check_geometry(np.asarray(img.affine, float), space)


def test_organ_files_share_the_labelmap_space(shared_data: Path) -> None:
    _, labelmap_space = read_nifti(shared_data / "totalseg" / "multilabel_41_fast.nii.gz")
    for name in ["liver", "aorta", "spleen"]:
        _, space = read_nifti(shared_data / "totalseg" / "organs" / f"{name}.nii.gz")
        assert space == labelmap_space


def test_read_nifti_rejects_other_files(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.nii.gz"
    bogus.write_bytes(b"not a nifti file at all")
    with pytest.raises(FormatError, match=r"bogus\.nii\.gz: cannot read as NIfTI"):
        read_nifti(bogus)
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.uint8), np.eye(4)), flat)
    with pytest.raises(FormatError, match="expected a 3-D image"):
        read_nifti(flat)


def test_read_nifti_accepts_a_trailing_unit_dimension_and_integral_floats(tmp_path: Path) -> None:
    data = np.zeros((4, 5, 6, 1), np.float32)
    data[1, 2, 3, 0] = 7.0
    path = tmp_path / "f.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    array, _ = read_nifti(path)
    assert array.shape == (6, 5, 4)
    assert array[3, 2, 1] == 7
    assert array.dtype.kind in "iu"
    data[0, 0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(FormatError, match="non-integer"):
        read_nifti(path)


# --- writing ----------------------------------------------------------------------------------


def test_write_nifti_round_trip_with_oblique_space(tmp_path: Path) -> None:
    affine = _oblique_affine()
    space = space_from_affine(affine, (14, 12, 10))
    rng = np.random.default_rng(3)
    array = rng.integers(0, 5, (10, 12, 14)).astype(np.uint8)
    path = tmp_path / "oblique.nii.gz"
    write_nifti(array, space, path)
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert int(img.header["qform_code"]) == 1
    assert int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), array.transpose(2, 1, 0))
    back, back_space = read_nifti(path)
    np.testing.assert_array_equal(back, array)
    assert spaces_match(back_space, space) is None


def test_write_nifti_bool_and_dtype(tmp_path: Path) -> None:
    space = Space(shape=(3, 4, 5), origin=(1.0, 2.0, 3.0), spacing=(2.0, 1.0, 0.5))
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 2, 3] = True
    write_nifti(mask, space, tmp_path / "b.nii.gz")
    img = nib.load(tmp_path / "b.nii.gz")
    assert img.get_data_dtype() == np.uint8
    assert np.asarray(img.dataobj)[3, 2, 1] == 1
    write_nifti(mask.astype(np.int64) * 300, space, tmp_path / "w.nii.gz", dtype=np.uint16)
    assert nib.load(tmp_path / "w.nii.gz").get_data_dtype() == np.uint16
    back, back_space = read_nifti(tmp_path / "w.nii.gz")
    assert back[1, 2, 3] == 300
    assert spaces_match(back_space, space) is None


def test_to_and_from_nifti(tmp_path: Path) -> None:
    space = space_from_affine(_oblique_affine(), (14, 12, 10))
    data = np.zeros((10, 12, 14), np.uint8)
    data[2:5, 3:7, 4:9] = 3
    data[6:8, 1:2, 0:14] = 9
    mask = SegmentationMask(data, {"kidney": 3, "vessel": 9}, space)
    path = tmp_path / "mask.nii.gz"
    to_nifti(mask, path, label_table=tmp_path / "labels.json")
    plain = from_nifti(path)
    assert plain.mapping.to_dict() == {"label_3": 3, "label_9": 9}
    np.testing.assert_array_equal(plain.data, data)
    assert spaces_match(plain.space, space) is None
    named = from_nifti(path, {"kidney": 3, "vessel": 9})
    assert named.mapping == mask.mapping
    np.testing.assert_array_equal(named.get_binary_mask_by_names("vessel"), data == 9)
    from_table = from_nifti(path, tmp_path / "labels.json")
    assert from_table.mapping == mask.mapping


# --- acceptance: every voxel, and NIfTI -> .msk -> NIfTI exactly ------------------------------


def _every_voxel_lps(space: Space) -> npt.NDArray[np.float64]:
    from medmask.geometry import voxel_to_world

    grid = np.indices(tuple(int(s) for s in space.shape)).reshape(3, -1).T
    return voxel_to_world(space, grid)


@pytest.mark.parametrize(
    "name", ["ct_dicom_seg.nii.gz", "multilabel_42.nii.gz", "organs/liver.nii.gz"]
)
def test_every_voxel_of_the_shared_files_is_at_its_affine_position(
    shared_data: Path, name: str
) -> None:
    path = shared_data / "totalseg" / name
    img = nib.load(path)
    mask = from_nifti(path)
    nx, ny, nz = img.shape[:3]
    kji = np.indices((nz, ny, nx)).reshape(3, -1).T  # (z, y, x) order, as medmask indexes
    ras = np.c_[kji[:, ::-1], np.ones(len(kji))] @ np.asarray(img.affine, float).T
    lps = ras[:, :3] * np.array([-1.0, -1.0, 1.0])
    assert float(np.abs(_every_voxel_lps(mask.space) - lps).max()) < 1e-3


@pytest.mark.parametrize(
    "affine",
    [
        _oblique_affine(),
        np.array([[-0.7, 0, 0, 90.0], [0, 0, 2.5, -30.0], [0, -0.9, 0, 12.0], [0, 0, 0, 1]]),
    ],
    ids=["oblique", "permuted_flipped_anisotropic"],
)
def test_nifti_msk_nifti_round_trip_is_exact(
    affine: npt.NDArray[np.float64], tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    xyz = rng.integers(0, 4, (14, 12, 10)).astype(np.uint8)
    source = nib.Nifti1Image(xyz, affine)
    source.set_qform(affine, code=1)
    source.set_sform(affine, code=1)
    nib.save(source, tmp_path / "in.nii.gz")
    original = nib.load(tmp_path / "in.nii.gz")
    mask = from_nifti(tmp_path / "in.nii.gz")
    _check_geometry(np.asarray(original.affine, float), mask.space)
    medmask.save_mask(mask, tmp_path / "m.msk")
    to_nifti(medmask.load_mask(tmp_path / "m.msk"), tmp_path / "out.nii.gz")
    back = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), xyz)
    np.testing.assert_array_equal(back.affine, original.affine)  # bit for bit (float32 sform)
    assert back.header.get_data_dtype() == np.uint8


# --- hostile headers and voxel types (issue 17, item 5) ---------------------------------------


def header_only(shape: tuple[int, ...], dtype: Any, *, extra: bytes = b"") -> bytes:
    """A single-file NIfTI-1 that declares ``shape`` voxels of ``dtype`` and holds ``extra``
    bytes of them (the 348-byte header, the extension flag, then ``extra``)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    header["magic"] = b"n+1"
    return bytes(header.binaryblock) + b"\0" * 4 + extra


SIXTY_FOUR_MIB = ((256, 256, 256), np.uint32)  # safe to allocate if a reader did
FOUR_GIB = ((1024, 1024, 1024), np.int32)  # only ever read in a child process


def nifti_files(tmp_path: Path, data: bytes, stem: str) -> list[Path]:
    """``data`` as ``stem.nii``, gzipped as ``stem.nii.gz`` and as a file without a suffix."""
    paths = [tmp_path / f"{stem}.nii", tmp_path / f"{stem}.nii.gz", tmp_path / stem]
    paths[0].write_bytes(data)
    paths[1].write_bytes(gzip.compress(data))
    paths[2].write_bytes(data)
    return paths


def test_a_header_declaring_more_than_the_file_holds_allocates_nothing(
    tmp_path: Path, memory_fs: Any
) -> None:
    data = header_only(*SIXTY_FOUR_MIB, extra=b"\1" * 8)
    assert len(data) == 360
    memory_fs.pipe("/nifti/remote.nii.gz", gzip.compress(data))
    for source in [*nifti_files(tmp_path, data, "short"), "memory://nifti/remote.nii.gz"]:
        exc, peak = traced_peak(lambda source=source: read_nifti(source))
        assert isinstance(exc, medmask.TruncatedFileError), (source, exc)
        assert str(exc).startswith(f"{source}: "), exc
        assert "67,108,864 bytes" in str(exc)
        assert peak < MB, (source, peak)


def test_a_gzip_stream_shorter_than_declared_is_refused(tmp_path: Path) -> None:
    full = nib.Nifti1Image(np.ones((64, 64, 64), np.uint16), np.eye(4)).to_bytes()
    for path in nifti_files(tmp_path, full[:-1], "one_short"):  # one byte is enough
        with pytest.raises(medmask.TruncatedFileError, match=r"holds 524,639 bytes"):
            read_nifti(path)
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(gzip.compress(full[: len(full) - 1000]))
    with pytest.raises(medmask.TruncatedFileError, match=r"cut\.nii\.gz: .* holds 523,640 bytes"):
        read_nifti(path)
    path.write_bytes(gzip.compress(full)[:-20])  # the stream itself is cut
    with pytest.raises(FormatError, match=r"cut\.nii\.gz: "):
        read_nifti(path)
    path.write_bytes(gzip.compress(full + b"\0" * 2 * MB))  # more than the header declares
    with pytest.raises(FormatError, match=r"cut\.nii\.gz: the gzip stream holds more"):
        read_nifti(path)
    path.write_bytes(gzip.compress(full + b"\0" * 100))  # a little more is fine
    assert read_nifti(path)[0].shape == (64, 64, 64)


def test_a_header_problem_nibabel_fixes_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = bytearray(nib.Nifti1Image(np.ones((3, 4, 5), np.uint8), np.eye(4)).to_bytes())
    raw[252:254] = (53).to_bytes(2, "little")  # qform_code 53: nibabel sets it to 0, and says so
    path = tmp_path / "odd_qform.nii"
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.INFO):
        assert read_nifti(path)[0].shape == (5, 4, 3)
    assert caplog.text.count("qform_code 53 not valid") == 1, caplog.text  # not per check


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path) -> None:
    array = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(6, 5, 4)
    full = nib.Nifti1Image(array, np.eye(4)).to_bytes()
    path = tmp_path / "members.nii.gz"
    for cut in (100, 348, 400, len(full) - 10):  # inside the header, after it, in the voxels
        path.write_bytes(gzip.compress(full[:cut]) + gzip.compress(full[cut:]))
        assert gzip.decompress(path.read_bytes()) == full
        np.testing.assert_array_equal(read_nifti(path)[0], array.transpose(2, 1, 0), str(cut))


def test_a_declared_size_above_the_limits_is_refused_before_decompressing(
    tmp_path: Path,
) -> None:
    full = nib.Nifti1Image(np.ones((128, 128, 64), np.uint8), np.eye(4)).to_bytes()
    for path in nifti_files(tmp_path, full, "big"):
        exc, peak = traced_peak(lambda path=path: read_nifti(path, max_bytes=MB - 1))
        assert isinstance(exc, medmask.AllocationLimitError), (path, exc)
        assert str(exc).startswith(f"{path}: "), exc
        assert not path.suffix or "declares (128, 128, 64) uint8" in str(exc), exc
        # without a NIfTI suffix the file is read whole first (at most max_bytes)
        assert peak < (MB // 2 if path.suffix else MB + MB // 4), (path, peak)
        assert read_nifti(path, max_bytes=MB + 352)[0].shape == (64, 128, 128)
        if path.suffix == ".gz":  # the voxels fit, the decompressed file does not
            with pytest.raises(medmask.AllocationLimitError, match="the voxel data ends at"):
                read_nifti(path, max_bytes=MB + 351)
    far = nib.Nifti1Header()  # a small image behind a 32 MiB gap of gzipped zeros
    far.set_data_shape((4, 4, 4))
    far.set_data_dtype(np.uint8)
    far["vox_offset"], far["magic"] = 32 * MB, b"n+1"
    path = tmp_path / "far.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes(far.binaryblock) + bytes(32 * MB - 348 + 64))
    exc, peak = traced_peak(lambda: read_nifti(path, max_bytes=MB))
    assert isinstance(exc, medmask.AllocationLimitError), exc
    assert str(exc).startswith(f"{path}: the voxel data ends at byte 33,554,496"), exc
    assert peak < MB // 2, peak
    scaled = nib.Nifti1Image(np.ones((64, 64, 64), np.uint8), np.eye(4))
    scaled.header.set_slope_inter(2.0, 0.0)  # read as float64: 8 bytes a voxel
    path = tmp_path / "scaled.nii"
    nib.save(scaled, path)
    with pytest.raises(medmask.AllocationLimitError, match=r"scaled\.nii: .*float64"):
        read_nifti(path, max_bytes=64**3 * 4)
    assert int(read_nifti(path)[0].max()) == 2
    unscaled = nib.Nifti1Image(np.ones((64, 64, 64), np.uint8), np.eye(4))
    unscaled.header.set_slope_inter(1.0, 0.0)  # as ITK writes it: read as uint8, not float64
    path = tmp_path / "unscaled.nii"
    nib.save(unscaled, path)
    assert read_nifti(path, max_bytes=64**3)[0].dtype == np.uint8


RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
RGBA = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, RGB, RGBA])
def test_complex_and_rgb_images_are_refused(tmp_path: Path, dtype: Any) -> None:
    path = tmp_path / "odd.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), dtype), np.eye(4)), path)
    with pytest.raises(FormatError, match=r"odd\.nii\.gz: expected integer label voxels"):
        from_nifti(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e30, -2.0])
def test_float_images_must_hold_labels(tmp_path: Path, value: float) -> None:
    data = np.zeros((4, 5, 6), np.float32)
    data[1, 2, 3] = value
    path = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(medmask.MedmaskError, match=r"float\.nii\.gz: "):
        from_nifti(path)


def test_cli_refuses_hostile_nifti_in_one_line(tmp_path: Path) -> None:
    four_gib = nifti_files(tmp_path, header_only(*FOUR_GIB, extra=b"\1" * 8), "huge")
    complex_path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.complex64), np.eye(4)), complex_path)
    rgb_path = tmp_path / "rgb.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), RGB), np.eye(4)), rgb_path)
    cases = [
        (four_gib[0], "the file holds 360 bytes"),  # refused, not an allocation that failed
        (four_gib[1], "the file holds 360 bytes"),
        (complex_path, "Got complex64 voxels"),
        (rgb_path, "Got RGB/RGBA voxels"),
    ]
    for path, why in cases:
        for command in (["info", path], ["convert", path, tmp_path / "out.msk"], ["ls", path]):
            result = run_limited(*command)
            assert_one_line_error(result, str(path), why)
    assert not (tmp_path / "out.msk").exists()


def test_a_degenerate_affine_names_the_file(tmp_path: Path) -> None:
    affine = np.eye(4)
    affine[:3, 1] = affine[:3, 0]  # two voxel axes along x
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), affine), path)
    with pytest.raises(FormatError, match=r"flat\.nii\.gz: cannot use the NIfTI affine"):
        read_nifti(path)


def test_missing_nifti_and_a_folder_are_medmask_errors(tmp_path: Path) -> None:
    (tmp_path / "folder.nii").mkdir()
    for name in ("missing.nii", "missing.nii.gz", "missing", "folder.nii"):
        with pytest.raises(medmask.MaskFileNotFoundError, match=rf"{name}: "):
            read_nifti(tmp_path / name)


# --- in memory: to_nibabel / from_nibabel ---------------------------------------------------


def _oblique_mask() -> SegmentationMask:
    rot = rotation(0.3, -0.2, 0.7)
    space = Space(
        shape=(4, 5, 6),
        origin=(12.5, -30.0, 7.25),
        spacing=(2.0, 0.9, 0.7),
        x_orientation=tuple(float(v) for v in rot[:, 0]),
        y_orientation=tuple(float(v) for v in rot[:, 1]),
        z_orientation=tuple(float(v) for v in rot[:, 2]),
    )
    data = np.random.default_rng(9).integers(0, 4, (4, 5, 6)).astype(np.uint8)
    return SegmentationMask(data, {"liver": 1, "spleen": 2, "kidney_left": 3}, space)


def test_to_nibabel_is_what_to_nifti_writes(tmp_path: Path) -> None:
    mask = _oblique_mask()
    img = medmask.to_nibabel(mask)
    medmask.to_nifti(mask, tmp_path / "m.nii.gz")
    written = nib.load(tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask.data.transpose(2, 1, 0))
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(written.dataobj))
    np.testing.assert_allclose(img.affine, mask.affine)
    np.testing.assert_allclose(written.affine, mask.affine, atol=1e-5)
    assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 1
    assert int(img.header["intent_code"]) == 1002


def test_a_mask_survives_nibabel_in_memory_voxel_for_voxel() -> None:
    mask = _oblique_mask()
    back = medmask.from_nibabel(medmask.to_nibabel(mask), mask.mapping)
    np.testing.assert_array_equal(back.data, mask.data)
    assert back.mapping.to_dict() == mask.mapping.to_dict()
    assert spaces_match(back.space, mask.space) is None
    # from_nifti takes the image object too, and names values without a mapping
    unnamed = medmask.from_nifti(medmask.to_nibabel(mask))
    np.testing.assert_array_equal(unnamed.data, mask.data)
    assert unnamed.mapping.to_dict() == {"label_1": 1, "label_2": 2, "label_3": 3}


def test_from_nibabel_checks_the_voxels_like_a_file() -> None:
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    fractions = nib.Nifti1Image(np.full((2, 2, 2), 1.5, np.float32), affine)
    with pytest.raises(FormatError) as info:
        medmask.from_nibabel(fractions)
    assert str(info.value) == "<Nifti1Image>: label image has non-integer values."
    negative = nib.Nifti1Image(np.full((2, 2, 2), -1, np.int16), affine)
    with pytest.raises(FormatError) as info:
        medmask.from_nibabel(negative)
    assert "Expected label values in [0, " in str(info.value)
    volumes = nib.Nifti1Image(np.zeros((2, 2, 2, 2), np.uint8), affine)
    with pytest.raises(FormatError) as info:
        medmask.from_nibabel(volumes)
    assert str(info.value) == (
        "<Nifti1Image>: Expected a 3-D image (or 4-D with one volume). Got (2, 2, 2, 2)."
    )
    with pytest.raises(medmask.errors.InvalidTypeError) as caught:
        medmask.from_nibabel("m.nii.gz")
    assert str(caught.value) == (
        "Expected a nibabel image (with dataobj and affine). Got str; for a file name use "
        "from_nifti."
    )


# --- header codes survive .nii.gz -> .msk -> .nii.gz (issue 19) --------------------------------

HEADER_CASES = [
    # (sform_code, qform_code, intent_code, intent_name, descrip)
    (2, 0, 0, "", ""),  # TotalSegmentator's files
    (1, 1, 1002, "label", "medmask test"),
    (4, 2, 0, "", "MNI template space"),
    (0, 1, 0, "", "qform only"),
    (3, 3, 1007, "", "vector intent kept"),
]


@pytest.mark.parametrize(("sform", "qform", "intent", "intent_name", "descrip"), HEADER_CASES)
def test_header_codes_survive_a_msk_round_trip(
    tmp_path: Path, sform: int, qform: int, intent: int, intent_name: str, descrip: str
) -> None:
    affine = _oblique_affine()
    xyz = np.random.default_rng(3).integers(0, 3, (9, 8, 7)).astype(np.uint8)
    source = nib.Nifti1Image(xyz, affine)
    source.set_sform(affine if sform else None, code=sform)
    source.set_qform(affine if qform else None, code=qform)
    source.header.set_intent(intent, name=intent_name, allow_unknown=True)
    source.header["descrip"] = descrip.encode()
    source.header.set_xyzt_units("mm", "sec")
    nib.save(source, tmp_path / "in.nii.gz")
    original = nib.load(tmp_path / "in.nii.gz")

    mask = from_nifti(tmp_path / "in.nii.gz", {"a": 1, "b": 2})
    assert mask.attributes["nifti"] == {
        "sform_code": sform,
        "qform_code": qform,
        "intent_code": intent,
        "xyzt_units": int(original.header["xyzt_units"]),
        "intent_name": intent_name,
        "descrip": descrip,
        "aux_file": "",
    }
    medmask.save_mask(mask, tmp_path / "m.msk")
    loaded = medmask.load_mask(tmp_path / "m.msk")
    assert loaded.attributes == mask.attributes
    medmask.save_mask(loaded, tmp_path / "out.nii.gz")
    back = nib.load(tmp_path / "out.nii.gz")
    for key in ("sform_code", "qform_code", "intent_code", "xyzt_units", "descrip", "intent_name"):
        assert back.header[key] == original.header[key], key
    np.testing.assert_allclose(back.affine, original.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(back.dataobj), xyz)
    # the in-memory image carries them too
    img = medmask.to_nibabel(loaded)
    assert int(img.header["sform_code"]) == sform
    assert int(img.header["qform_code"]) == qform


def test_codes_that_would_move_the_image_fall_back_to_scanner(tmp_path: Path) -> None:
    """Both codes 0 make nibabel guess an affine from the zooms alone: the written file keeps
    the mask's geometry (codes 1) instead of the codes."""
    mask = _oblique_mask()
    mask.attributes["nifti"] = {"sform_code": 0, "qform_code": 0, "descrip": "kept"}
    medmask.to_nifti(mask, tmp_path / "m.nii.gz")
    back = nib.load(tmp_path / "m.nii.gz")
    assert int(back.header["sform_code"]) == int(back.header["qform_code"]) == 1
    np.testing.assert_allclose(back.affine, mask.affine, atol=1e-5)
    assert back.header["descrip"] == b"kept"
    # a malformed entry is ignored, never an error
    mask.attributes["nifti"] = {"sform_code": "two", "intent_code": True}
    img = medmask.to_nibabel(mask)
    assert int(img.header["sform_code"]) == 1
    assert int(img.header["intent_code"]) == 1002


def test_shared_totalsegmentator_file_keeps_its_codes(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "totalseg" / "multilabel_42.nii.gz"
    original = nib.load(path)
    mask = medmask.load_mask(path, mapping=shared_data / "totalseg" / "labels_total.json")
    medmask.save_mask(mask, tmp_path / "m.msk")
    medmask.save_mask(medmask.load_mask(tmp_path / "m.msk"), tmp_path / "out.nii.gz")
    back = nib.load(tmp_path / "out.nii.gz")
    assert (int(back.header["sform_code"]), int(back.header["qform_code"])) == (2, 0)
    assert int(back.header["intent_code"]) == 0
    np.testing.assert_array_equal(back.affine, original.affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(original.dataobj))


def test_a_mapping_missing_values_names_the_file(shared_data: Path) -> None:
    path = shared_data / "totalseg" / "multilabel_42.nii.gz"
    with pytest.raises(medmask.InvalidValueError) as info:
        medmask.load_mask(path, mapping={"spleen": 1})
    assert str(info.value).startswith(f"{path}: Values present in the array are missing from ")


def test_from_nifti_without_a_mapping_counts_the_voxels_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medmask import mask as mask_module
    from medmask.interop import labels

    arr = np.zeros((6, 7, 8), np.uint8)  # (x, y, z)
    arr[1:3, 2:5, :] = 4
    arr[4, 6, 7] = 9
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "m.nii.gz")
    counted: list[int] = []
    real_copy, real_counts = mask_module.copy_counting, labels.label_counts

    def copy_counting(array: Any, *args: Any, **kwargs: Any) -> Any:
        counted.append(array.size)
        return real_copy(array, *args, **kwargs)

    def label_counts(array: Any, *args: Any, **kwargs: Any) -> Any:
        counted.append(array.size)
        return real_counts(array, *args, **kwargs)

    monkeypatch.setattr(mask_module, "copy_counting", copy_counting)
    monkeypatch.setattr(labels, "label_counts", label_counts)
    mask = medmask.from_nifti(tmp_path / "m.nii.gz")
    assert [n for n in counted if n == arr.size] == [arr.size]  # one pass over the voxels
    assert mask.label_counts() == {"label_4": 48, "label_9": 1}
    np.testing.assert_array_equal(mask.data, arr.transpose(2, 1, 0))


def test_labels_is_another_name_for_mapping_and_the_mask_has_nibabel_methods() -> None:
    mask = _oblique_mask()
    img = mask.to_nibabel()
    np.testing.assert_allclose(img.affine, mask.affine)
    for back in (
        medmask.from_nibabel(img, labels=mask.mapping),
        SegmentationMask.from_nibabel(img, labels=mask.mapping),
        SegmentationMask.from_nibabel(img, mask.mapping),
        medmask.from_nifti(img, labels={"liver": 1, "spleen": 2, "kidney_left": 3}),
    ):
        np.testing.assert_array_equal(back.data, mask.data)
        assert back.mapping.to_dict() == mask.mapping.to_dict()
        assert spaces_match(back.space, mask.space) is None
    with pytest.raises(medmask.InvalidValueError) as info:
        medmask.from_nibabel(img, mask.mapping, labels=mask.mapping)
    assert str(info.value) == (
        "Expected the label names once: mapping= or labels= (the same thing). Got both."
    )
