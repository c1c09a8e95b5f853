"""Exact behaviour of DICOM helpers: segment numbering (types, values past 0xFFFF), the
single-slice spacing fallback, UIDs filled into anonymized source headers, and the message
naming overlapping segments."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from spacetransformer import Space

import medmask
from bounded import traced_peak
from medmask import SegmentationMask
from medmask.errors import (
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    LabelNotFoundError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    SpaceMismatchError,
)
from medmask.geometry import spaces_match
from medmask.interop import dicom
from medmask.interop.dicom import MissingUIDWarning, to_dicom_seg

SPACE = Space(shape=(2, 3, 4))

# --- _segment_numbers -------------------------------------------------------------------------


def test_segment_numbers_follow_the_sorted_values() -> None:
    data = np.array([[0, 3, 9], [9, 0, 3]], np.uint16)
    out = dicom._segment_numbers(data, [3, 9])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 1, 2], [2, 0, 1]])
    one = dicom._segment_numbers(np.array([0, 7, 7], np.uint8), [7])
    assert one.dtype == np.uint8
    np.testing.assert_array_equal(one, [0, 1, 1])


def test_segment_numbers_of_a_boolean_mask() -> None:
    out = dicom._segment_numbers(np.array([True, False, True]), [1])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [1, 0, 1])


def test_segment_numbers_of_values_past_0xffff() -> None:
    data = np.array([0, 3, 70000, 100000, 0, 3, 100000], np.uint32)
    out = dicom._segment_numbers(data, [3, 70000, 100000])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 1, 2, 3, 0, 1, 3])


@pytest.mark.parametrize(("count", "dtype"), [(255, np.uint8), (256, np.uint16)])
def test_segment_numbers_type_fits_the_number_of_segments(count: int, dtype: Any) -> None:
    values = list(range(1, count + 1))
    data = np.array([0, *values], np.uint16)
    out = dicom._segment_numbers(data, values)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.arange(count + 1))


# --- _single_slice_spacing --------------------------------------------------------------------


def _header(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_single_slice_spacing_prefers_spacing_between_slices() -> None:
    assert (
        dicom._single_slice_spacing(_header(SpacingBetweenSlices="2.5", SliceThickness="5")) == 2.5
    )
    assert dicom._single_slice_spacing(_header(SpacingBetweenSlices="0.5")) == 0.5
    assert dicom._single_slice_spacing(_header(SliceThickness="3")) == 3.0
    assert dicom._single_slice_spacing(_header()) == 1.0


def test_single_slice_spacing_skips_zero_and_unusable_values() -> None:
    assert dicom._single_slice_spacing(_header(SpacingBetweenSlices="0", SliceThickness="3")) == 3.0
    two = _header(SpacingBetweenSlices=["1", "2"], SliceThickness="4")  # TypeError in float()
    assert dicom._single_slice_spacing(two) == 4.0
    # headers are Any: a value float() refuses (ValueError) is skipped too
    assert (
        dicom._single_slice_spacing({"SpacingBetweenSlices": "abc", "SliceThickness": "6"}) == 6.0
    )
    assert dicom._single_slice_spacing(_header(SpacingBetweenSlices="0", SliceThickness="0")) == 1.0


# --- _fill_uids -------------------------------------------------------------------------------

_STUDY, _SERIES_UID, _FOR = "1.2.3.1", "1.2.3.2", "1.2.3.3"
_CT = "1.2.840.10008.5.1.4.1.1.2"


def _source(instance: str, meta: dict[str, str] | None = None, **values: str) -> Dataset:
    ds = _header(
        SOPClassUID=_CT,
        SOPInstanceUID=instance,
        StudyInstanceUID=_STUDY,
        SeriesInstanceUID=_SERIES_UID,
        FrameOfReferenceUID=_FOR,
    )
    for keyword, value in values.items():
        if value:
            setattr(ds, keyword, value)
        else:
            delattr(ds, keyword)
    if meta is not None:
        ds.file_meta = FileMetaDataset()
        for keyword, value in meta.items():
            setattr(ds.file_meta, keyword, value)
    return ds


def _series(*datasets: Dataset) -> Any:
    paths = [Path(f"/case/s{n:02d}.dcm") for n in range(len(datasets))]
    return dicom._Series(paths=paths, datasets=list(datasets), space=SPACE)


def test_fill_uids_keeps_uids_the_headers_have() -> None:
    ds = _source("1.2.3.10", meta={"MediaStorageSOPInstanceUID": "9.9.9"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dicom._fill_uids(_series(ds))
    assert (ds.SOPClassUID, ds.SOPInstanceUID) == (_CT, "1.2.3.10")
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) == (
        _STUDY,
        _SERIES_UID,
        _FOR,
    )


def test_fill_uids_takes_sop_uids_from_the_file_meta() -> None:
    meta = {"MediaStorageSOPClassUID": _CT, "MediaStorageSOPInstanceUID": "1.2.3.11"}
    ds = _source("", meta=meta, SOPClassUID="")
    dicom._fill_uids(_series(ds))
    assert (ds.SOPClassUID, ds.SOPInstanceUID) == (_CT, "1.2.3.11")


@pytest.mark.parametrize("meta", [None, {"MediaStorageSOPClassUID": _CT}])
def test_fill_uids_without_a_sop_instance_uid_anywhere_is_a_format_error(
    meta: dict[str, str] | None,
) -> None:
    ds = _source("", meta=meta)
    with pytest.raises(
        FormatError,
        match=r"^/case/s00\.dcm: no SOPInstanceUID \(nor MediaStorageSOPInstanceUID\)\.$",
    ):
        dicom._fill_uids(_series(ds))


def test_fill_uids_derives_missing_series_uids_from_the_instances() -> None:
    first = [
        _source("1.2.3.21", FrameOfReferenceUID=""),
        _source("1.2.3.22", FrameOfReferenceUID=""),
    ]
    with pytest.warns(MissingUIDWarning) as record:
        dicom._fill_uids(_series(*first))
    assert [str(w.message) for w in record] == [
        f"{Path('/case/s00.dcm')}: the source series has no FrameOfReferenceUID (anonymized?); "
        f"the SEG references the derived UID {first[0].FrameOfReferenceUID}, which the source "
        "files do not carry."
    ]
    derived = first[0].FrameOfReferenceUID
    assert first[1].FrameOfReferenceUID == derived
    assert derived not in (_STUDY, _SERIES_UID, _FOR)
    assert first[0].StudyInstanceUID == _STUDY  # present: kept
    # the same instances (in any order) derive the same UID; other instances another one
    again = [
        _source("1.2.3.22", FrameOfReferenceUID=""),
        _source("1.2.3.21", FrameOfReferenceUID=""),
    ]
    with pytest.warns(MissingUIDWarning):
        dicom._fill_uids(_series(*again))
    assert again[0].FrameOfReferenceUID == derived
    other = [
        _source("1.2.3.31", FrameOfReferenceUID=""),
        _source("1.2.3.32", FrameOfReferenceUID=""),
    ]
    with pytest.warns(MissingUIDWarning):
        dicom._fill_uids(_series(*other))
    assert other[0].FrameOfReferenceUID != derived


def test_missing_uid_warning_points_at_the_caller(shared_data: Path, tmp_path: Path) -> None:
    """The shared series is anonymized: the warnings name this file (the caller of
    to_dicom_seg) and the first file of the sorted series."""
    series_dir = shared_data / "totalseg" / "ct_dicom"
    space = dicom.space_from_dicom_series(series_dir)
    data = np.zeros(tuple(int(s) for s in space.shape), np.uint8)
    data[2, 100:110, 200:210] = 1
    first = dicom.sorted_series(series_dir)[0]
    with pytest.warns(MissingUIDWarning) as record:
        to_dicom_seg(SegmentationMask(data, {"liver": 1}, space), series_dir, tmp_path / "a.dcm")
    assert len(record) == 2
    for w in record:
        assert w.filename == __file__
        assert str(w.message).startswith(f"{first}: the source series has no ")


# --- _overlap_error ---------------------------------------------------------------------------


class _Volume:
    def __init__(self, array: Any) -> None:
        self.array = array


class _Seg:
    """Segments 1..n all set at voxel 0; segment 1 also at voxel 1 (no overlap there)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def get_volume(self, *, segment_numbers: list[int], combine_segments: bool) -> _Volume:
        (n,) = segment_numbers
        array = np.zeros((1, 2, 3), np.uint8)
        array[0, 0, 0] = n
        if n == 1:
            array[0, 0, 1] = 1
        return _Volume(array)


@pytest.mark.parametrize("count", [20, 21])
def test_overlap_error_names_at_most_20_segments(count: int) -> None:
    error = dicom._overlap_error(_Seg(count), "x.dcm", list(range(1, count + 1)))
    assert isinstance(error, InvalidValueError)
    numbers = ", ".join(str(n) for n in range(1, 21)) + (" ..." if count > 20 else "")
    assert str(error) == (
        f"x.dcm: segments {numbers} overlap in 1 voxels. Expected non-overlapping segments: "
        "one label map cannot hold overlapping segments (read them one by one with highdicom: "
        "get_volume(segment_numbers=[n]))."
    )


def test_overlap_error_leaves_out_segments_that_do_not_overlap() -> None:
    class Two(_Seg):
        def get_volume(self, *, segment_numbers: list[int], combine_segments: bool) -> _Volume:
            (n,) = segment_numbers
            array = np.zeros((1, 2, 3), np.uint8)
            array[0, 0, {1: 0, 2: 0, 3: 2}[n]] = n
            return _Volume(array)

    assert str(dicom._overlap_error(Two(3), "y.dcm", [1, 2, 3])).startswith(
        "y.dcm: segments 1, 2 overlap in 1 voxels."
    )


# --- _space_difference: stricter than spaces_match on directions ------------------------------


def _turned(t: float) -> Space:
    c, s = np.cos(0.9273 + t), np.sin(0.9273 + t)
    return Space(
        shape=(2, 3, 4),
        x_orientation=(c, s, 0.0),
        y_orientation=(-s, c, 0.0),
        z_orientation=(0.0, 0.0, 1.0),
    )


def test_space_difference_names_a_direction_off_by_more_than_its_tolerance() -> None:
    mask, series = _turned(0.0), _turned(1.9e-5)  # within spaces_match's relative tolerance
    assert spaces_match(mask, series) is None
    difference = dicom._space_difference(mask, series)
    assert difference == (
        f"x_orientation {dicom._vec(mask.x_orientation)} != {dicom._vec(series.x_orientation)}"
    )
    assert dicom._space_difference(mask, _turned(0.0)) is None
    assert dicom._space_difference(mask, _turned(5e-6)) is None  # 4e-6 apart: within 1e-5


def test_space_difference_measures_each_corner_voxel() -> None:
    mask = Space(shape=(200, 3, 4), spacing=(1.0, 1.0, 1.0))
    far = Space(shape=(200, 3, 4), spacing=(1.0 + 9e-6, 1.0, 1.0))  # spaces_match: same
    assert spaces_match(mask, far) is None
    assert dicom._space_difference(mask, far) == "corner voxels differ by up to 0.001791 mm"
    # four far corners 0.000597 mm off each: every one within 0.001 mm (not their sum)
    near = Space(shape=(200, 3, 4), spacing=(1.0 + 3e-6, 1.0, 1.0))
    assert dicom._space_difference(mask, near) is None


def test_space_difference_tolerances_are_inclusive() -> None:
    """A direction component exactly DIRECTION_ATOL off, a corner exactly POSITION_ATOL_MM off:
    still the series' grid."""
    s = 1e-5
    c = float(np.sqrt(1 - s * s))
    turned = Space(
        shape=(2, 3, 4), x_orientation=(c, s, 0.0), y_orientation=(-s, c, 0.0)
    )  # z_orientation (0, 0, 1)
    assert float(turned.x_orientation[1]) == dicom.DIRECTION_ATOL
    assert dicom._space_difference(SPACE, turned) is None
    moved = Space(shape=(2, 3, 4), origin=(0.001, 0.0, 0.0))  # corner 0 exactly 0.001 mm off
    assert dicom._space_difference(SPACE, moved) is None


# --- _check_segment_label ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x" * 64, "a b", "tab!", "ünïcode", "a/b"])
def test_segment_labels_within_lo_pass(name: str) -> None:
    dicom._check_segment_label(name)


@pytest.mark.parametrize("name", ["x" * 65, "back\\slash", "new\nline", "nul\x00", "esc\x1f"])
def test_segment_labels_outside_lo_are_refused(name: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        dicom._check_segment_label(name)
    assert str(info.value) == (
        "Expected label names of at most 64 characters without backslashes or control "
        f"characters (DICOM Segment Label, VR LO). Got {name!r}."
    )


# --- _parse_segmentation_type: follows what the installed highdicom supports ------------------


def _highdicom_with(*values: str) -> Any:
    members = [SimpleNamespace(value=v) for v in values]
    return SimpleNamespace(seg=SimpleNamespace(SegmentationTypeValues=members), __version__="0.x")


def test_segmentation_type_defaults_to_labelmap_only_where_supported() -> None:
    assert dicom._parse_segmentation_type(_highdicom_with("BINARY", "LABELMAP"), None) == "LABELMAP"
    assert dicom._parse_segmentation_type(_highdicom_with("BINARY", "FRACTIONAL"), None) == "BINARY"
    assert dicom._parse_segmentation_type(_highdicom_with("BINARY"), "binary") == "BINARY"
    with pytest.raises(InvalidValueError) as info:
        dicom._parse_segmentation_type(_highdicom_with("BINARY", "FRACTIONAL"), "LABELMAP")
    assert str(info.value) == (
        "Expected segmentation_type None or one of ['BINARY'] (this highdicom 0.x). Got 'LABELMAP'."
    )


# --- to_dicom_seg: defaults and argument errors -----------------------------------------------


def test_to_dicom_seg_defaults_and_refusals(shared_data: Path, tmp_path: Path) -> None:
    series_dir = shared_data / "totalseg" / "ct_dicom"
    space = dicom.space_from_dicom_series(series_dir)
    data = np.zeros(tuple(int(s) for s in space.shape), np.uint8)
    data[2, 100:110, 200:210] = 1
    mask = SegmentationMask(data, {"liver": 1}, space)
    out = tmp_path / "a.dcm"
    with pytest.warns(MissingUIDWarning):
        to_dicom_seg(mask, series_dir, out, algorithm_name="net")
    assert out.read_bytes()[128:132] == b"DICM"  # a DICOM file: preamble and file meta
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert (int(ds.SeriesNumber), int(ds.InstanceNumber)) == (1, 1)
    assert int(ds.NumberOfFrames) == int(space.shape[0])  # empty frames are kept
    assert ds.SegmentSequence[0].SegmentAlgorithmName == "net"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless  # LABELMAP
    assert (ds.Manufacturer, ds.ManufacturerModelName) == ("medmask", "medmask")
    assert (ds.SoftwareVersions, ds.DeviceSerialNumber) == (medmask.__version__, "0")
    binary = tmp_path / "binary.dcm"
    with pytest.warns(MissingUIDWarning):
        to_dicom_seg(mask, series_dir, binary, segmentation_type="BINARY", algorithm_name="net")
    written = pydicom.dcmread(binary)
    assert written.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    algorithm = written.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("net", "unknown")
    shifted = Space(
        shape=space.shape,
        origin=(space.origin[0] + 1.0, space.origin[1], space.origin[2]),
        spacing=space.spacing,
        x_orientation=space.x_orientation,
        y_orientation=space.y_orientation,
        z_orientation=space.z_orientation,
    )
    with pytest.raises(SpaceMismatchError) as mismatch:
        to_dicom_seg(SegmentationMask(data, {"liver": 1}, shifted), series_dir, tmp_path / "x.dcm")
    x0, y0, z0 = (float(v) for v in space.origin)
    assert str(mismatch.value) == (
        f"Expected a mask on the voxel grid of the DICOM series {series_dir}, or on a flip or "
        "axis permutation of it, which to_dicom_seg aligns for you with "
        "mask.align_to(medmask.interop.dicom.space_from_dicom_series(series)) (voxel centres "
        f"within 0.001 mm). Got a grid that differs in origin ({x0 + 1:.6g}, {y0:.6g}, "
        f"{z0:.6g}) (the series' ({x0:.6g}, {y0:.6g}, {z0:.6g}), 1 mm apart); align_to cannot "
        "fix it: Expected grids whose voxel centres coincide within 0.001 mm. Got 1 mm between "
        "target voxel (0, 0, 0) and the mask's corresponding voxel (origin or spacing differ; "
        "resampling is not alignment). Resample the mask onto the series grid first."
    )
    with pytest.warns(MissingUIDWarning):
        to_dicom_seg(mask, series_dir, out)  # overwrite=True is the default
    before = out.read_bytes()
    with pytest.raises(MaskFileExistsError) as info:
        to_dicom_seg(mask, series_dir, out, overwrite=False)
    assert str(info.value) == f"{out}: exists and overwrite=False."
    assert out.read_bytes() == before
    new = tmp_path / "new.dcm"
    with pytest.raises(InvalidTypeError) as info2:
        to_dicom_seg(data, series_dir, new)  # type: ignore[arg-type]
    assert str(info2.value) == "Expected a SegmentationMask. Got ndarray."
    with pytest.raises(InvalidValueError) as info3:
        to_dicom_seg(SegmentationMask(data * 0, {}, space), series_dir, new)
    assert str(info3.value) == "Expected a mask with at least one non-zero label. Got none."
    with pytest.raises(LabelNotFoundError) as info4:
        to_dicom_seg(mask, series_dir, new, segment_codes={"lung": (None, None)})
    assert str(info4.value) == "segment_codes: no label named 'lung' in the mask."
    assert not new.exists()


def test_to_dicom_seg_takes_at_most_65535_segments(tmp_path: Path) -> None:
    space = Space(shape=(1, 256, 257))
    data = np.arange(256 * 257, dtype=np.uint32).reshape(1, 256, 257)
    data[data > 0xFFFF] = 0
    at_limit = SegmentationMask(data, {f"s{v}": v for v in range(1, 0x10000)}, space)
    missing = tmp_path / "no-series"
    with pytest.raises(MaskFileNotFoundError):  # the count passes; the series is missing
        to_dicom_seg(at_limit, missing, tmp_path / "a.dcm")
    data[0, 255, 256] = 0x10000
    over = SegmentationMask(data, {f"s{v}": v for v in range(1, 0x10001)}, space)
    with pytest.raises(InvalidValueError) as info:
        to_dicom_seg(over, missing, tmp_path / "a.dcm")
    assert str(info.value) == "Expected at most 65535 labels (segments). Got 65536."


# --- series geometry: tiny synthetic slices ---------------------------------------------------

_SLICE_UIDS = {"SeriesInstanceUID": "1.2.3.5", "FrameOfReferenceUID": "1.2.3.6"}


def _slice_file(path: Path, z: float = 0.0, **values: Any) -> Path:
    """A 2 x 3 axial CT slice at (0, 0, z), PixelSpacing 0.5 x 0.75, saved at ``path``;
    ``values`` set tags (None removes one)."""
    ds = Dataset()
    ds.SOPClassUID = _CT
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(path)])
    for keyword, value in _SLICE_UIDS.items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = 2, 3
    ds.PixelSpacing = [0.5, 0.75]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, z]
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


@pytest.mark.parametrize("frames", ["1", ""])
def test_a_slice_of_one_frame_or_no_frame_count_is_single_frame(
    tmp_path: Path, frames: str
) -> None:
    path = _slice_file(tmp_path / "a.dcm", NumberOfFrames=frames)
    assert tuple(dicom.space_from_dicom_series(path).shape) == (1, 2, 3)


def test_a_multi_frame_image_is_refused_with_its_frame_count(tmp_path: Path) -> None:
    path = _slice_file(tmp_path / "a.dcm", NumberOfFrames="2")
    with pytest.raises(FormatError) as info:
        dicom.sorted_series(path)
    assert str(info.value) == f"{path}: multi-frame image (2 frames). Expected single-frame slices."


def test_a_one_pixel_slice_is_an_image(tmp_path: Path) -> None:
    path = _slice_file(tmp_path / "a.dcm", Rows=1, Columns=1)
    assert tuple(dicom.space_from_dicom_series(path).shape) == (1, 1, 1)


@pytest.mark.parametrize(
    ("rows", "columns", "shown"), [(0, 3, "0, 3"), (2, 0, "2, 0"), (None, 3, "None, 3")]
)
def test_rows_and_columns_must_be_positive(
    tmp_path: Path, rows: int | None, columns: int, shown: str
) -> None:
    path = _slice_file(tmp_path / "a.dcm", Rows=rows, Columns=columns)
    with pytest.raises(FormatError) as info:
        dicom.sorted_series(path)
    assert str(info.value) == f"{path}: expected positive Rows and Columns. Got {shown}."


def test_pixel_spacing_must_be_positive(tmp_path: Path) -> None:
    path = _slice_file(tmp_path / "a.dcm", PixelSpacing=[0, 0.75])
    with pytest.raises(FormatError) as info:
        dicom.sorted_series(path)
    assert str(info.value) == f"{path}: expected a positive PixelSpacing. Got [0.0, 0.75]."


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"SeriesInstanceUID": None},
            "SeriesInstanceUID '' differs from '1.2.3.5' of {a}. Expected the files of one series.",
        ),
        (
            {"FrameOfReferenceUID": None},
            "FrameOfReferenceUID '' differs from '1.2.3.6' of {a}. Expected one frame of "
            "reference.",
        ),
        (
            {"FrameOfReferenceUID": "1.2.3.7"},
            "FrameOfReferenceUID '1.2.3.7' differs from '1.2.3.6' of {a}. Expected one frame of "
            "reference.",
        ),
        ({"Rows": 4, "Columns": 5}, "Rows x Columns 4 x 5 differs from 2 x 3 of {a}."),
        (
            {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0.00015]},
            "ImageOrientationPatient [1.0, 0.0, 0.0, 0.0, 1.0, 0.00015] differs from "
            "[1.0, 0.0, 0.0, 0.0, 1.0, 0.0] of {a} (tolerance 0.0001).",
        ),
    ],
    ids=["series", "no_frame_of_reference", "frame_of_reference", "size", "orientation"],
)
def test_a_slice_unlike_the_first_is_named_with_both_values(
    tmp_path: Path, values: dict[str, Any], problem: str
) -> None:
    a = _slice_file(tmp_path / "a.dcm", 0.0)
    b = _slice_file(tmp_path / "b.dcm", 2.0, **values)
    with pytest.raises(FormatError) as info:
        dicom.sorted_series([a, b])
    assert str(info.value) == f"{b}: " + problem.format(a=a)


def test_a_folder_lists_its_visible_files_but_dicomdir(tmp_path: Path) -> None:
    path = _slice_file(tmp_path / "a.dcm")
    for name in (".hidden", "dicomdir", "DICOMDIR"):
        (tmp_path / name).write_bytes(b"not an image")
    (tmp_path / "sub").mkdir()
    assert dicom.sorted_series(tmp_path) == [path]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"/case/a.dcm", "Expected a folder, a file or an iterable of file paths. Got bytes."),
        (5, "Expected a folder, a file or an iterable of file paths. Got int."),
        ([3], "Expected file paths. Got int: 3."),
    ],
)
def test_series_sources_of_another_type_are_refused(source: Any, message: str) -> None:
    with pytest.raises(InvalidTypeError) as info:
        dicom.sorted_series(source)
    assert str(info.value) == message


def test_an_empty_list_of_files_is_refused() -> None:
    with pytest.raises(InvalidValueError) as info:
        dicom.sorted_series([])
    assert str(info.value) == "Expected at least one DICOM file. Got none."


def test_spacing_tolerance_is_in_zero_to_one_half(tmp_path: Path) -> None:
    files = [_slice_file(tmp_path / f"s{n}.dcm", 2.0 * n) for n in range(3)]
    assert dicom.sorted_series(files[::-1], spacing_tolerance=0) == files  # regular: exact
    with pytest.raises(InvalidValueError) as info:
        dicom.sorted_series(files, spacing_tolerance=0.5)
    assert str(info.value) == "Expected spacing_tolerance in [0, 0.5). Got 0.5."


def _plain_slice(name: str, **values: Any) -> Any:
    defaults: dict[str, Any] = {
        "path": Path(f"/case/{name}.dcm"),
        "series_uid": "1.2.3.5",
        "frame_of_reference_uid": "1.2.3.6",
        "size": (2, 3),
        "orientation": np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        "pixel_spacing": np.array([0.0001, 0.0001]),
    }
    return SimpleNamespace(**{**defaults, **values})


def test_orientation_and_pixel_spacing_tolerances_are_inclusive() -> None:
    first = _plain_slice("a")
    turned = _plain_slice("b", orientation=np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1e-4]))
    wider = _plain_slice("c", pixel_spacing=np.array([0.0002, 0.0001]))  # 1e-4 apart exactly
    assert float(wider.pixel_spacing[0] - first.pixel_spacing[0]) == dicom.PIXEL_SPACING_ATOL_MM
    dicom._check_same(first, turned)
    dicom._check_same(first, wider)


@pytest.mark.parametrize(
    ("orientation", "lengths"),
    [([1, 0, 0, 0, 2, 0], "1 and 2"), ([2, 0, 0, 0, 1, 0], "2 and 1")],
)
def test_direction_cosines_must_be_unit_vectors(
    tmp_path: Path, orientation: list[int], lengths: str
) -> None:
    path = _slice_file(tmp_path / "a.dcm", ImageOrientationPatient=orientation)
    with pytest.raises(FormatError) as info:
        dicom.sorted_series(path)
    assert str(info.value) == (
        f"{path}: expected unit direction cosines in ImageOrientationPatient. Got lengths "
        f"{lengths}."
    )


def test_direction_cosines_within_tolerance_are_normalized(tmp_path: Path) -> None:
    path = _slice_file(tmp_path / "a.dcm", ImageOrientationPatient=[1.0005, 0, 0, 0, 0.9995, 0])
    space = dicom.space_from_dicom_series(path)
    assert (space.x_orientation, space.y_orientation, space.z_orientation) == (
        (0.0, 0.0, 1.0),
        (0.0, 1.0, 0.0),
        (1.0, 0.0, 0.0),
    )


def test_row_and_column_directions_must_be_orthogonal(tmp_path: Path) -> None:
    path = _slice_file(tmp_path / "a.dcm", ImageOrientationPatient=[1, 0, 0, 0.5, 0.866025, 0])
    with pytest.raises(FormatError) as info:
        dicom.sorted_series(path)
    assert str(info.value) == (
        f"{path}: expected orthogonal row and column directions in ImageOrientationPatient. "
        "Got [1.0, 0.0, 0.0, 0.5, 0.866025, 0.0]."
    )


def test_directions_accept_a_cosine_product_of_exactly_the_tolerance() -> None:
    column = np.array([0.001, 0.999999499999875, 0.0])  # a unit vector in floating point
    assert float(np.linalg.norm(column)) == 1.0
    first = _plain_slice("a", orientation=np.array([1.0, 0.0, 0.0, *column]))
    row, col, normal = dicom._directions(first)
    assert float(row @ col) == 1e-3
    np.testing.assert_array_equal(row, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(col, column)
    assert float(np.linalg.norm(normal)) == pytest.approx(1.0, abs=1e-15)


def test_the_slice_normal_is_a_unit_vector_for_nearly_orthogonal_cosines() -> None:
    tilt = 0.0009  # cosines 0.0009 from orthogonal: r x c is 4e-7 shorter than 1
    first = _plain_slice("a", orientation=np.array([1.0, 0.0, 0.0, tilt, np.sqrt(1 - tilt**2), 0]))
    normal = dicom._directions(first)[2]
    assert float(np.linalg.norm(normal)) == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(normal, [0.0, 0.0, 1.0], atol=1e-15)


# --- _slice_spacing ---------------------------------------------------------------------------


def _stack(*z: float) -> tuple[list[Any], Any]:
    slices = [
        SimpleNamespace(path=Path(f"/case/s{n}.dcm"), position=np.array([0.0, 0.0, v]))
        for n, v in enumerate(z)
    ]
    return slices, np.asarray(z, dtype=np.float64)


def test_slice_spacing_of_a_regular_stack() -> None:
    assert dicom._slice_spacing(*_stack(0.0, 2.0, 4.0, 6.0), 0.0) == 2.0  # tolerance 0: exact
    assert dicom._slice_spacing(*_stack(0.0, 0.001, 0.002), 0.01) == 0.001  # gaps of 1e-3 mm
    # gaps 1.99 .. 2.01 mm: 0.5% off the 2 mm median and the grid, within 1% of the spacing
    assert dicom._slice_spacing(*_stack(0.0, 2.0, 4.01, 6.0), 0.01) == 2.0


def test_slice_spacing_names_a_duplicate_and_the_slice_before_it() -> None:
    slices, proj = _stack(0.0, 2.0, 2.0, 4.0)
    with pytest.raises(FormatError) as info:
        dicom._slice_spacing(slices, proj, 0.01)
    assert str(info.value) == (
        f"{Path('/case/s2.dcm')}: same position as {Path('/case/s1.dcm')} "
        "(ImagePositionPatient [0.0, 0.0, 2.0]). Duplicate slice?"
    )


def test_slice_spacing_names_an_irregular_gap_and_the_slice_before_it() -> None:
    slices, proj = _stack(0.0, 2.0, 4.0, 7.0, 9.0)
    with pytest.raises(FormatError) as info:
        dicom._slice_spacing(slices, proj, 0.01)
    assert str(info.value) == (
        f"{Path('/case/s3.dcm')}: 3 mm from the previous slice {Path('/case/s2.dcm')}. "
        "Expected 2 mm (the median slice spacing, tolerance 0.01 of it): missing, extra or "
        "irregular slices."
    )


def test_slice_spacing_names_the_slice_farthest_off_the_grid() -> None:
    # every gap within 0.75% of the median, but slice 2 is 0.03 mm (1.5%) off the grid
    slices, proj = _stack(0.0, 1.985, 3.97, 5.985, 8.0)
    with pytest.raises(FormatError) as info:
        dicom._slice_spacing(slices, proj, 0.01)
    assert str(info.value) == (
        f"{Path('/case/s2.dcm')}: -0.03 mm off the regular slice grid (spacing 2 mm, "
        "tolerance 0.01 of it)."
    )


# --- _read_header -----------------------------------------------------------------------------


def test_a_header_pydicom_cannot_parse_is_a_format_error_naming_the_file(tmp_path: Path) -> None:
    """A deflated file whose data is no deflate stream: zlib's error, not an OSError."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _CT
    meta.MediaStorageSOPInstanceUID = "1.2.3.40"
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    buffer.write(bytes(128) + b"DICM")
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    path = tmp_path / "deflated.dcm"
    path.write_bytes(buffer.getvalue() + b"garbage-not-deflate" * 4)
    with pytest.raises(FormatError) as info:
        dicom.sorted_series(path)
    assert str(info.value) == (
        f"{path}: cannot read the DICOM header: Error -3 while decompressing data: invalid block "
        "type"
    )


def test_only_headers_of_the_series_are_read(tmp_path: Path) -> None:
    pixels = np.zeros((512, 512), np.uint16).tobytes()  # 512 kB per slice
    files = [
        _slice_file(
            tmp_path / f"s{n}.dcm",
            2.0 * n,
            Rows=512,
            Columns=512,
            BitsAllocated=16,
            PixelData=pixels,
        )
        for n in range(4)
    ]
    result, peak = traced_peak(lambda: dicom.sorted_series(tmp_path))
    assert result == files
    assert isinstance(peak, int)
    assert peak < 512 * 1024, peak  # not one slice's pixel data


def _three_slices(folder: Path, shift_of_slice_1: float = 0.0) -> list[Path]:
    """Three 2 x 3 slices 2 mm apart; slice 1 moved ``shift_of_slice_1`` mm along x."""
    return [
        _slice_file(folder / "s0.dcm", 0.0),
        _slice_file(folder / "s1.dcm", 2.0, ImagePositionPatient=[shift_of_slice_1, 0, 2.0]),
        _slice_file(folder / "s2.dcm", 4.0),
    ]


def test_the_series_space_keeps_row_and_column_spacing_apart(tmp_path: Path) -> None:
    space = dicom.space_from_dicom_series(_three_slices(tmp_path))
    assert space.shape == (3, 2, 3)
    assert space.spacing == (2.0, 0.5, 0.75)  # slice gap, PixelSpacing rows, columns
    assert space.origin == (0.0, 0.0, 0.0)


def test_the_second_slice_shifted_in_plane_is_named(tmp_path: Path) -> None:
    files = _three_slices(tmp_path, shift_of_slice_1=0.1)  # above 1% of 2 mm
    with pytest.raises(FormatError) as info:
        dicom.sorted_series(files)
    assert str(info.value) == (
        f"{files[1]}: ImagePositionPatient is shifted by 0.1 mm within the slice plane relative "
        f"to {files[0]}. Expected slices stacked along the slice normal (a gantry-tilted or "
        "sheared series has no regular grid)."
    )


def test_an_in_plane_shift_is_measured_against_the_tolerance_times_the_spacing(
    tmp_path: Path,
) -> None:
    files = _three_slices(tmp_path, shift_of_slice_1=0.1)
    # 10% of the 2 mm spacing allows 0.2 mm
    assert dicom.sorted_series(files, spacing_tolerance=0.1) == files
    # exactly at the bound (12.5% of 2 mm = 0.25 mm, all exact in binary) still passes
    (tmp_path / "exact").mkdir()
    exact = _three_slices(tmp_path / "exact", 0.25)
    assert dicom.sorted_series(exact, spacing_tolerance=0.125) == exact


@pytest.mark.parametrize(
    ("loader", "module", "message"),
    [
        ("_pydicom", "pydicom", "DICOM support needs pydicom: pip install 'medmask[dicom]'"),
        (
            "_highdicom",
            "highdicom",
            "DICOM SEG support needs highdicom: pip install 'medmask[dicom]'",
        ),
    ],
)
def test_a_missing_dicom_dependency_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, loader: str, module: str, message: str
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # "import module" raises ImportError
    with pytest.raises(ImportError) as info:
        getattr(dicom, loader)()
    assert str(info.value) == message
