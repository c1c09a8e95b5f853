"""Exact behaviour of reading a DICOM SEG: the header checks made before highdicom allocates
(frame counts, pixel data length, slices spanned by the frames' plane positions), segment
labels, the canonical space of highdicom's volume, and the messages of every refusal."""

from __future__ import annotations

import errno
import sqlite3
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fsspec
import highdicom as hd
import numpy as np
import pydicom
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag

import medmask
from bounded import MB, traced_peak
from medmask.errors import AllocationLimitError, FormatError, TruncatedFileError
from medmask.interop import dicom
from medmask.interop.dicom import from_dicom_seg
from rotations import rotation

_AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]

# --- _plane_normal / _slices_spanned ----------------------------------------------------------


def _item(**sequences: Dataset) -> Dataset:
    """A functional group item holding one-item sequences ``{keyword: item}``."""
    ds = Dataset()
    for keyword, value in sequences.items():
        setattr(ds, keyword, Sequence([value]))
    return ds


def _orientation(cosines: list[float]) -> Dataset:
    ds = Dataset()
    ds.ImageOrientationPatient = cosines
    return ds


def _frame(z: float, cosines: list[float] | None = None, position: Any = None) -> Dataset:
    """A per-frame functional group item at (0, 0, z) (or ``position``), with its own plane
    orientation if ``cosines`` are given."""
    plane = Dataset()
    plane.ImagePositionPatient = [0.0, 0.0, z] if position is None else position
    if cosines is None:
        return _item(PlanePositionSequence=plane)
    return _item(PlanePositionSequence=plane, PlaneOrientationSequence=_orientation(cosines))


def _shared(cosines: list[float] = _AXIAL) -> Dataset:
    """A SEG header whose shared functional groups state the plane orientation."""
    ds = Dataset()
    ds.SharedFunctionalGroupsSequence = Sequence(
        [_item(PlaneOrientationSequence=_orientation(cosines))]
    )
    return ds


def test_plane_normal_of_per_frame_orientation_without_shared_groups() -> None:
    normal = dicom._plane_normal(Dataset(), _frame(0.0, _AXIAL))
    assert normal is not None
    np.testing.assert_array_equal(normal, [0.0, 0.0, 1.0])
    frames = [_frame(z, _AXIAL) for z in (0.0, 2.0, 6.0)]
    assert dicom._slices_spanned(Dataset(), frames) == 4
    assert dicom._slices_spanned(Dataset(), frames[:1]) == 1


@pytest.mark.parametrize(
    ("cosines", "expected"),
    [
        ([2.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0]),  # scaled cosines: still a unit normal
        ([1.0, 0.0, 0.0, 0.0, 1.0], None),  # five numbers
        ([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], None),  # parallel cosines: no plane
        ([1.0, 0.0, 0.0, 1.0, 1e-6, 0.0], None),  # a normal of length 1e-6 exactly: no plane
    ],
)
def test_plane_normal_is_a_unit_vector_or_none(
    cosines: list[float], expected: list[float] | None
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normal = dicom._plane_normal(_shared(cosines), None)
    if expected is None:
        assert normal is None
    else:
        assert normal is not None
        np.testing.assert_array_equal(normal, expected)


def test_slices_spanned_is_one_without_a_usable_geometry() -> None:
    assert dicom._slices_spanned(_shared(), None) == 1
    assert dicom._slices_spanned(_shared(), Sequence([])) == 1
    assert dicom._slices_spanned(Dataset(), [_frame(0.0), _frame(8.0)]) == 1  # no orientation
    assert dicom._slices_spanned(_shared(), [_frame(0.0), _item()]) == 1  # a frame without plane
    two_numbers = [_frame(0.0), _frame(0.0, position=[0.0, 8.0])]
    assert dicom._slices_spanned(_shared(), two_numbers) == 1
    assert dicom._slices_spanned(_shared(), [_frame(4.0), _frame(4.0)]) == 1  # one plane
    assert dicom._slices_spanned(_shared(), [_frame(0.0), _frame(0.01)]) == 1  # 0.01 mm: one


def test_slices_spanned_counts_the_grid_between_the_outer_frames() -> None:
    assert dicom._slices_spanned(_shared(), [_frame(0.0), _frame(2.0)]) == 2
    assert dicom._slices_spanned(_shared(), [_frame(6.0), _frame(0.0), _frame(2.0)]) == 4


@pytest.mark.parametrize("span", [2.0**62, 2.0**63, 1e300])
def test_slices_spanned_saturates_at_2_to_the_62(span: float) -> None:
    frames = [_frame(0.0), _frame(1.0), _frame(span)]
    assert dicom._slices_spanned(_shared(), frames) == 2**62


# --- _pixel_data_length -----------------------------------------------------------------------


def _with_syntax(ds: Dataset, syntax: str = pydicom.uid.ExplicitVRLittleEndian) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _deferred_pixel_data(length: int) -> Dataset:
    """A header as read with ``defer_size``: the pixel data's length, not its value."""
    ds = _with_syntax(Dataset())
    tag = Tag(0x7FE00010)
    ds[tag] = RawDataElement(tag, "OB", length, None, 0, False, True)
    return ds


def test_pixel_data_length_without_a_transfer_syntax_is_unknown() -> None:
    assert dicom._pixel_data_length(Dataset()) is None  # no file meta at all
    no_syntax = Dataset()
    no_syntax.file_meta = FileMetaDataset()
    assert dicom._pixel_data_length(no_syntax) is None
    assert dicom._pixel_data_length(_with_syntax(Dataset(), pydicom.uid.RLELossless)) is None


def test_pixel_data_length_of_absent_and_deferred_pixel_data() -> None:
    assert dicom._pixel_data_length(_with_syntax(Dataset())) == 0
    present = _with_syntax(Dataset())
    present.PixelData = bytes(10)
    assert dicom._pixel_data_length(present) == 10
    # deferred values are measured, never read (these have no file to read them from)
    assert dicom._pixel_data_length(_deferred_pixel_data(1234)) == 1234
    assert dicom._pixel_data_length(_deferred_pixel_data(0xFFFFFFFF)) is None  # undefined


# --- _check_seg_header ------------------------------------------------------------------------


def _seg_header(
    *,
    frames: int | None = 1,
    bits: int = 8,
    segments: int = 1,
    pixel_bytes: int | None = None,
    per_frame: list[Dataset] | None = None,
) -> Dataset:
    """A SEG header of ``frames`` frames of 2 x 3 (pixel data just large enough by default)."""
    ds = _shared()
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns, ds.BitsAllocated = 2, 3, bits
    ds.SegmentSequence = Sequence([Dataset() for _ in range(segments)])
    if per_frame is not None:
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    need = -(-(frames or 1) * 6 * bits // 8)
    _with_syntax(ds).PixelData = bytes(need if pixel_bytes is None else pixel_bytes)
    return ds


def test_a_seg_without_number_of_frames_has_one_frame() -> None:
    dicom._check_seg_header(_seg_header(frames=None), "x.dcm", 1000)


def test_the_label_volume_type_follows_the_number_of_segments() -> None:
    # one slice of 2 x 3: 6 bytes as uint8, 12 as uint16
    dicom._check_seg_header(_seg_header(segments=255), "x.dcm", 6)
    with pytest.raises(AllocationLimitError) as info:
        dicom._check_seg_header(_seg_header(segments=256), "x.dcm", 6)
    assert str(info.value) == (
        "x.dcm: declares (1, 2, 3) uint16 = 12 bytes, above the limit of 6 bytes (raise it with "
        "max_bytes= or MEDMASK_MAX_BYTES if this is intended)."
    )


def test_sixteen_bit_frames_count_two_bytes_a_pixel() -> None:
    with pytest.raises(AllocationLimitError) as info:
        dicom._check_seg_header(_seg_header(bits=16), "x.dcm", 6)
    assert str(info.value).startswith("x.dcm: declares (1, 2, 3) uint16 = 12 bytes, above the ")


def test_the_frames_are_checked_against_max_bytes() -> None:
    # four frames on one slice: the frames (24 bytes) exceed the limit, the label map (6) not
    with pytest.raises(AllocationLimitError) as info:
        dicom._check_seg_header(_seg_header(frames=4), "x.dcm", 12)
    assert str(info.value).startswith("x.dcm: declares (4, 2, 3) uint8 = 24 bytes, above the ")


def test_the_slices_the_frames_span_are_checked_against_max_bytes() -> None:
    # three frames (18 bytes) at 0, 1 and 10 mm span 11 slices: a 66-byte label map
    per_frame = [_frame(0.0), _frame(1.0), _frame(10.0)]
    dicom._check_seg_header(_seg_header(frames=3, per_frame=per_frame), "x.dcm", 66)
    with pytest.raises(AllocationLimitError) as info:
        dicom._check_seg_header(_seg_header(frames=3, per_frame=per_frame), "x.dcm", 30)
    assert str(info.value).startswith("x.dcm: declares (11, 2, 3) uint8 = 66 bytes, above the ")


def test_an_absent_pixel_data_holds_zero_bytes() -> None:
    header = _seg_header()
    del header.PixelData
    with pytest.raises(TruncatedFileError) as info:
        dicom._check_seg_header(header, "x.dcm", 1000)
    assert str(info.value) == (
        "x.dcm: declares 1 frames of 2 x 3 x 8 bits (6 bytes of pixel data), but its pixel data "
        "holds 0 bytes."
    )


def test_a_malformed_header_value_is_a_format_error_naming_the_file() -> None:
    header = _seg_header(per_frame=[_frame(0.0)])
    plane = header.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    tag = Tag(0x00200032)  # ImagePositionPatient, as read from a file: "a\\b\\c"
    plane[tag] = RawDataElement(tag, "DS", 5, b"a\\b\\c", 0, False, True)
    with pytest.raises(FormatError) as info:
        dicom._check_seg_header(header, "x.dcm", 1000)
    assert (
        str(info.value)
        == "x.dcm: cannot read as a DICOM SEG: could not convert string to float: 'a'"
    )


# --- _seg_mapping -----------------------------------------------------------------------------


def _fake_seg(labels: list[str | None], kind: str = "BINARY") -> Any:
    descriptions = {n: SimpleNamespace(segment_label=s) for n, s in enumerate(labels, start=1)}
    return SimpleNamespace(
        segmentation_type=SimpleNamespace(value=kind),
        segment_numbers=list(descriptions),
        get_segment_description=descriptions.__getitem__,
    )


def test_seg_mapping_names_unlabelled_segments_by_number() -> None:
    assert dicom._seg_mapping(_fake_seg(["liver", None, "  "]), "x.dcm") == {
        "liver": 1,
        "segment_2": 2,
        "segment_3": 3,
    }


def test_seg_mapping_refusals() -> None:
    with pytest.raises(FormatError) as info:
        dicom._seg_mapping(_fake_seg(["a"], "FRACTIONAL"), "x.dcm")
    assert str(info.value) == "x.dcm: expected a BINARY or LABELMAP segmentation. Got FRACTIONAL."
    with pytest.raises(FormatError) as info:
        dicom._seg_mapping(_fake_seg([]), "x.dcm")
    assert str(info.value) == "x.dcm: the SEG has no segments."
    with pytest.raises(FormatError) as info:
        dicom._seg_mapping(_fake_seg(["liver", "liver"]), "x.dcm")
    assert str(info.value) == (
        "x.dcm: segments 1 and 2 have the same label 'liver'. Expected unique segment labels "
        "(they become label names)."
    )


# --- _canonical_space -------------------------------------------------------------------------


def test_canonical_space_keeps_each_axis_spacing() -> None:
    affine = np.diag([-2.0, 0.5, 0.75, 1.0])  # axis 0 along r x c = -x; the origin at 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space, flip = dicom._canonical_space(affine, (3, 2, 4))
    assert not flip
    assert space.spacing == (2.0, 0.5, 0.75)
    assert space.origin == (0.0, 0.0, 0.0)


def test_canonical_space_does_not_flip_an_oblique_axis_along_the_normal() -> None:
    r = rotation(0.1 * 7, -0.05 * 7, 0.03 * 7)
    affine = np.eye(4)
    affine[:3, 0] = np.cross(r[:, 2], r[:, 1]) * 2.0  # slices along row x column cosines
    affine[:3, 1], affine[:3, 2], affine[:3, 3] = r[:, 1] * 0.5, r[:, 2] * 0.75, (1.0, 2.0, 3.0)
    steps = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    assert float(steps[:, 0] @ np.cross(steps[:, 2], steps[:, 1])) < 1.0  # rounding: not 1.0
    space, flip = dicom._canonical_space(affine, (3, 2, 4))
    assert not flip
    assert space.origin == (1.0, 2.0, 3.0)


# --- from_dicom_seg ---------------------------------------------------------------------------

_SOURCE_UIDS = {
    "StudyInstanceUID": "1.2.3.1",
    "SeriesInstanceUID": "1.2.3.2",
    "FrameOfReferenceUID": "1.2.3.3",
}


def _source(k: int, rows: int = 2, columns: int = 4) -> Dataset:
    """Slice ``k`` of a ``rows`` x ``columns`` CT series 2 mm apart along z."""
    ds = Dataset()
    uid = f"1.2.3.9.{k}"
    _with_syntax(ds).file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.CTImageStorage, uid
    for keyword, value in _SOURCE_UIDS.items():
        setattr(ds, keyword, value)
    ds.Modality, ds.PatientID, ds.PatientName = "CT", "p", "p^q"
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"):
        setattr(ds, keyword, "")
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", ""
    ds.Rows, ds.Columns, ds.SliceThickness = rows, columns, 2.0
    ds.PixelSpacing, ds.ImageOrientationPatient = [0.5, 0.75], _AXIAL
    ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = bytes(2 * rows * columns)
    return ds


def _tiny_seg(path: Path) -> Path:
    """A BINARY SEG of two segments ("a", "b") on three 2 x 4 slices, saved at ``path``."""
    stacked = np.zeros((3, 2, 4, 2), np.uint8)
    stacked[0, 0, 0, 0] = stacked[2, 1, 2, 1] = 1
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=label,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type="MANUAL",
        )
        for n, label in ((1, "a"), (2, "b"))
    ]
    hd.seg.Segmentation(
        source_images=[_source(k) for k in range(3)],
        pixel_array=stacked,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid="1.2.3.20",
        series_number=1,
        sop_instance_uid="1.2.3.21",
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=False,
    ).save_as(path)
    return path


def test_tiny_seg_reads_back(tmp_path: Path) -> None:
    mask = from_dicom_seg(_tiny_seg(tmp_path / "tiny.dcm"))
    expected = np.zeros((3, 2, 4), np.uint8)
    expected[0, 0, 0], expected[2, 1, 2] = 1, 2
    np.testing.assert_array_equal(mask.data, expected)
    assert mask.mapping.to_dict() == {"a": 1, "b": 2}
    assert mask.space.spacing == (2.0, 0.5, 0.75)


def test_frames_off_a_regular_grid_are_named(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_tiny_seg(tmp_path / "tiny.dcm"))
    for item in ds.PerFrameFunctionalGroupsSequence:
        plane = item.PlanePositionSequence[0]
        if float(plane.ImagePositionPatient[2]) == 4.0:
            plane.ImagePositionPatient = [0.0, 0.0, 5.3]
    path = tmp_path / "irregular.dcm"
    ds.save_as(path)
    with pytest.raises(FormatError) as info:
        from_dicom_seg(path)
    assert str(info.value) == (
        f"{path}: frames do not form a 3-D volume: Frame positions do not form a "
        "regularly-spaced volume."
    )


def test_a_seg_cut_inside_a_sequence_is_a_format_error(tmp_path: Path) -> None:
    data = _tiny_seg(tmp_path / "tiny.dcm").read_bytes()
    segment_sequence = data.find(b"\x62\x00\x02\x00SQ")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: segment_sequence + 12 + 2])  # inside its first item's tag
    with pytest.raises(FormatError) as info:
        from_dicom_seg(cut)
    assert str(info.value).startswith(
        f"{cut}: cannot read as a DICOM SEG: No tag to read at file position "
    )


def test_a_local_seg_denied_by_the_file_system_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "denied.dcm"
    path.write_bytes(b"DICM")

    def deny(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(pydicom, "dcmread", deny)
    with pytest.raises(medmask.StoragePermissionError) as info:
        from_dicom_seg(path)
    assert str(info.value) == (
        f"{path}: access denied while reading (PermissionError: [Errno 13] Permission denied)."
    )


def _volume_error(exc: Exception) -> Any:
    def get_volume(self: Any, **kwargs: Any) -> Any:
        raise exc

    return get_volume


def test_a_volume_highdicom_cannot_build_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _tiny_seg(tmp_path / "tiny.dcm")
    locked = sqlite3.OperationalError("database table is locked")
    monkeypatch.setattr(hd.seg.Segmentation, "get_volume", _volume_error(locked))
    with pytest.raises(FormatError) as info:
        from_dicom_seg(path)
    assert str(info.value) == f"{path}: cannot build a 3-D volume: database table is locked"


def test_overlapping_segments_that_cannot_be_read_one_by_one_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _tiny_seg(tmp_path / "tiny.dcm")

    def get_volume(self: Any, **kwargs: Any) -> Any:
        if kwargs.get("segment_numbers") is None:
            raise RuntimeError("Segments overlap")
        raise ValueError("no segment 1")

    monkeypatch.setattr(hd.seg.Segmentation, "get_volume", get_volume)
    with pytest.raises(FormatError) as info:
        from_dicom_seg(path)
    assert str(info.value) == f"{path}: cannot build a 3-D volume: no segment 1"


@pytest.mark.parametrize(
    ("array", "affine", "problem"),
    [
        (np.zeros((2, 3), np.uint8), np.eye(4), "expected a 3-D label volume. Got shape (2, 3)."),
        (
            np.zeros((1, 2, 3), np.uint8),
            np.array([[1.0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]),
            "cannot use the frames' geometry: ",
        ),
    ],
    ids=["2d", "degenerate"],
)
def test_a_volume_medmask_cannot_use_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, array: Any, affine: Any, problem: str
) -> None:
    path = _tiny_seg(tmp_path / "tiny.dcm")
    volume = SimpleNamespace(array=array, affine=affine)
    monkeypatch.setattr(hd.seg.Segmentation, "get_volume", lambda self, **kwargs: volume)
    with pytest.raises(FormatError) as info:
        from_dicom_seg(path)
    assert str(info.value).startswith(f"{path}: {problem}")
    assert len(str(info.value)) > len(f"{path}: {problem}") or problem.endswith(".")


def _inconsistent_seg(path: Path, pixel_bytes: int) -> Path:
    """A SEG header declaring 5 frames for one per-frame item, with ``pixel_bytes`` of pixels."""
    ds = _seg_header(frames=5, per_frame=[_frame(0.0)], pixel_bytes=pixel_bytes)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.SOPInstanceUID = "1.2.3.30"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_the_header_check_does_not_read_the_pixel_data(tmp_path: Path, memory_fs: Any) -> None:
    path = _inconsistent_seg(tmp_path / "big.dcm", 8 * MB)
    memory_fs.pipe("/segs/big.dcm", path.read_bytes())
    why = "NumberOfFrames is 5 but the per-frame functional groups describe 1 frames."
    for source, bound in ((path, 2 * MB), ("memory://segs/big.dcm", 8 * MB + 2 * MB)):
        exc, peak = traced_peak(lambda source=source: from_dicom_seg(source))
        assert isinstance(exc, FormatError)
        assert str(exc) == f"{source}: {why}"
        assert isinstance(peak, int)
        assert peak < bound, (source, peak)


class _KeyedMemory(MemoryFileSystem):  # type: ignore[misc]
    """fsspec's memory filesystem that refuses to open without ``key="k"``."""

    protocol = "keyedseg"

    def __init__(self, *args: Any, key: str | None = None, **kwargs: Any) -> None:
        if key != "k":
            raise PermissionError("keyedseg: no key")
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str) and path.startswith("keyedseg://"):
            path = path[len("keyedseg://") :]
        return super()._strip_protocol(path)


def test_a_seg_at_a_url_is_read_with_the_storage_options(tmp_path: Path, memory_fs: Any) -> None:
    fsspec.register_implementation("keyedseg", _KeyedMemory, clobber=True)
    keyed = {"key": "k", "skip_instance_cache": True}
    _KeyedMemory(**keyed).pipe("/segs/tiny.dcm", _tiny_seg(tmp_path / "tiny.dcm").read_bytes())
    mask = from_dicom_seg("keyedseg://segs/tiny.dcm", storage_options=keyed)
    assert mask.mapping.to_dict() == {"a": 1, "b": 2}


# --- to_dicom_seg round trips on small frames ------------------------------------------------


def _series_files(folder: Path, rows: int, columns: int) -> list[Path]:
    paths = []
    for k in range(3):
        path = folder / f"ct{k}.dcm"
        pydicom.dcmwrite(path, _source(k, rows, columns), enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.mark.parametrize(("rows", "columns"), [(1, 8), (2, 4), (3, 3), (1, 9), (3, 5), (7, 9)])
@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_every_voxel_survives_a_seg_of_small_frames(
    tmp_path: Path, rows: int, columns: int, kind: str
) -> None:
    paths = _series_files(tmp_path, rows, columns)
    data = np.random.default_rng(rows * 16 + columns).integers(0, 4, (3, rows, columns))
    space = dicom.space_from_dicom_series(paths)
    mask = medmask.SegmentationMask(data.astype(np.uint8), {"a": 1, "b": 2, "c": 3}, space)
    back = from_dicom_seg(_written(mask, paths, tmp_path / "seg.dcm", kind))
    np.testing.assert_array_equal(back.data, mask.data)
    assert back.mapping.to_dict() == {"a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize(("rows", "columns"), [(1, 1), (1, 7), (2, 2), (2, 3)])
def test_binary_frames_of_fewer_than_8_pixels_are_refused(
    tmp_path: Path, rows: int, columns: int
) -> None:
    # highdicom 0.28 pads each such frame to a byte; readers unpack one bit stream, so the
    # SEG would read back with voxels moved between frames
    paths = _series_files(tmp_path, rows, columns)
    space = dicom.space_from_dicom_series(paths)
    mask = medmask.SegmentationMask(np.ones((3, rows, columns), np.uint8), {"a": 1}, space)
    target = tmp_path / "seg.dcm"
    with pytest.raises(medmask.errors.InvalidValueError) as caught:
        _written(mask, paths, target, "BINARY")
    assert str(caught.value) == (
        f"{target}: BINARY frames of {rows} x {columns} pixels (fewer than 8) are written "
        f"wrongly by highdicom {hd.__version__}; nothing was written. Use "
        "segmentation_type='LABELMAP'."
    )
    assert not target.exists()
    back = from_dicom_seg(_written(mask, paths, target, "LABELMAP"))
    np.testing.assert_array_equal(back.data, mask.data)


def _written(mask: medmask.SegmentationMask, paths: list[Path], target: Path, kind: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dicom.MissingUIDWarning)
        dicom.to_dicom_seg(mask, paths, target, segmentation_type=kind)
    return target
