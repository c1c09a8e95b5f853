"""DICOM interop: the geometry of a CT/MR series, and DICOM SEG <-> SegmentationMask.

Needs the ``dicom`` extra (pydicom, highdicom). Never imported by ``import medmask``.

Axis conventions
----------------
The array of a series is indexed ``(k, i, j)`` = (slice in sorted order, row, column):

- slices are sorted along the slice normal ``n = r x c`` (``r`` = row direction cosines
  ``ImageOrientationPatient[0:3]``, the direction in which the column index ``j`` grows;
  ``c`` = column direction cosines ``ImageOrientationPatient[3:6]``, the direction in which
  the row index ``i`` grows) by the projection of ``ImagePositionPatient`` on ``n``;
- the :class:`~spacetransformer.Space` has shape ``(n_slices, Rows, Columns)``, origin the
  ``ImagePositionPatient`` of the first sorted slice, spacing ``(slice spacing,
  PixelSpacing[0], PixelSpacing[1])`` and axis directions ``(n, c, r)`` (``x_orientation``,
  ``y_orientation``, ``z_orientation`` are the directions of array axes 0, 1, 2), so the LPS
  position of voxel ``(k, i, j)`` is ``IPP_k + i * PixelSpacing[0] * c + j * PixelSpacing[1] *
  r``. For an axial head-first-supine series this is ``(z, y, x)`` with ``z`` growing towards
  the head (the first slice is the most inferior one).

Segment numbering
-----------------
DICOM segment numbers run 1..N without gaps. :func:`to_dicom_seg` gives the mask's non-zero
label values, in ascending order, segment numbers 1..N (values that already are 1..N keep
their value); :func:`from_dicom_seg` returns label value = segment number.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from .._deprecate import renamed_keywords
from .._stack import user_stacklevel
from .._version import __version__
from ..config import max_bytes_limit
from ..errors import (
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    LabelNotFoundError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    MedmaskError,
    SpaceMismatchError,
    TruncatedFileError,
)
from ..format.encoding import check_size_limits
from ..geometry import corner_indices, spaces_match, voxel_to_world
from ..io import Target, local_path, read_whole, source_name, storage_error, write_atomic
from ..mapping import LabelMapping, mapping_items
from ..mask import SegmentationMask
from .segment_codes import (
    CodedTerm,
    SegmentCode,
    find_segment_code,
    read_segment_codes,
    segment_code,
    standard_segment_codes,
)

__all__ = [
    "DIRECTION_ATOL",
    "ORIENTATION_ATOL",
    "PIXEL_SPACING_ATOL_MM",
    "POSITION_ATOL_MM",
    "SPACING_TOLERANCE",
    "MissingUIDWarning",
    "SegmentCodes",
    "SeriesSource",
    "default_segment_codes",
    "from_dicom_seg",
    "sorted_series",
    "space_from_dicom_series",
    "to_dicom_seg",
]

SeriesSource = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
"""A folder of one series (non-recursive), one file, or an iterable of file paths."""

SegmentCodes = Mapping[str, Any] | str | os.PathLike[str]
"""``{name: (category, type[, modifier])}`` codes, or the path or URL of a code table."""

ORIENTATION_ATOL = 1e-4
"""Largest difference of any ImageOrientationPatient component between slices of a series."""
PIXEL_SPACING_ATOL_MM = 1e-4
"""Largest PixelSpacing difference (mm) between slices of a series."""
SPACING_TOLERANCE = 0.01
"""Default slice-spacing tolerance, a fraction of the slice spacing (see
:func:`sorted_series`)."""
POSITION_ATOL_MM = 1e-3
"""A mask's space must match the series' within this (mm; origin and every corner voxel)."""
DIRECTION_ATOL = 1e-5
"""... and its axis directions within this (per component of the unit vectors)."""

_LO_MAX = 64  # DICOM LO (Segment Label) value length


class MissingUIDWarning(UserWarning):
    """The source series lacks a UID (anonymized?) that a SEG must reference; one was derived."""


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("DICOM support needs pydicom: pip install 'medmask[dicom]'") from exc
    return pydicom


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "DICOM SEG support needs highdicom: pip install 'medmask[dicom]'"
        ) from exc
    return highdicom


def _codes() -> Any:
    """pydicom's ``codes`` dictionary of DICOM/SNOMED codes."""
    _pydicom()
    return importlib.import_module("pydicom.sr.codedict").codes


# --- series geometry --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    paths: list[Path]  # sorted along the slice normal
    datasets: list[Any]  # headers (no pixel data), same order
    space: Space


def _list_files(source: SeriesSource) -> list[Path]:
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        if root.is_dir():
            files = sorted(
                p
                for p in root.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
            )
            if not files:
                raise MaskFileNotFoundError(f"{root}: no DICOM files in this folder.")
            return files
        if root.is_file():
            return [root]
        raise MaskFileNotFoundError(f"{root}: no such file or folder.")
    given: object = source  # bytes are iterable but no list of paths
    if isinstance(given, bytes) or not isinstance(given, Iterable):
        raise InvalidTypeError(
            f"Expected a folder, a file or an iterable of file paths. Got {type(source).__name__}."
        )
    files = []
    for item in source:
        if not isinstance(item, str | os.PathLike):
            raise InvalidTypeError(f"Expected file paths. Got {type(item).__name__}: {item!r}.")
        path = Path(item)
        if not path.is_file():
            raise MaskFileNotFoundError(f"{path}: no such file.")
        files.append(path)
    if not files:
        raise InvalidValueError("Expected at least one DICOM file. Got none.")
    return files


def _read_header(path: Path) -> Any:
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError as exc:
        raise FormatError(f"{path}: not a DICOM file ({exc}).") from None
    except OSError:
        raise
    except Exception as exc:  # pydicom raises many types on malformed files
        raise FormatError(f"{path}: cannot read the DICOM header: {exc}") from None


def _floats(ds: Any, path: Path, keyword: str, count: int) -> npt.NDArray[np.float64]:
    value = ds.get(keyword)
    try:
        values = [float(v) for v in value] if value is not None else []
    except (TypeError, ValueError):
        values = []
    if len(values) != count or not np.all(np.isfinite(values)):
        raise FormatError(
            f"{path}: expected {keyword} with {count} numbers (an image of a CT/MR series). "
            f"Got {value!r}."
        )
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class _Slice:
    path: Path
    ds: Any
    position: npt.NDArray[np.float64]
    orientation: npt.NDArray[np.float64]
    pixel_spacing: npt.NDArray[np.float64]
    size: tuple[int, int]
    series_uid: str
    frame_of_reference_uid: str


def _slice(path: Path) -> _Slice:
    ds = _read_header(path)
    frames = ds.get("NumberOfFrames")
    if frames is not None and str(frames).strip() and int(frames) > 1:
        raise FormatError(
            f"{path}: multi-frame image ({int(frames)} frames). Expected single-frame slices."
        )
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not isinstance(rows, int) or not isinstance(columns, int) or rows < 1 or columns < 1:
        raise FormatError(f"{path}: expected positive Rows and Columns. Got {rows!r}, {columns!r}.")
    spacing = _floats(ds, path, "PixelSpacing", 2)
    if np.any(spacing <= 0):
        raise FormatError(f"{path}: expected a positive PixelSpacing. Got {spacing.tolist()}.")
    return _Slice(
        path=path,
        ds=ds,
        position=_floats(ds, path, "ImagePositionPatient", 3),
        orientation=_floats(ds, path, "ImageOrientationPatient", 6),
        pixel_spacing=spacing,
        size=(rows, columns),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
    )


def _check_same(first: _Slice, other: _Slice) -> None:
    where = f"{other.path}: "
    of_first = f"of {first.path}"
    if other.series_uid != first.series_uid:
        raise FormatError(
            f"{where}SeriesInstanceUID {other.series_uid!r} differs from {first.series_uid!r} "
            f"{of_first}. Expected the files of one series."
        )
    if other.frame_of_reference_uid != first.frame_of_reference_uid:
        raise FormatError(
            f"{where}FrameOfReferenceUID {other.frame_of_reference_uid!r} differs from "
            f"{first.frame_of_reference_uid!r} {of_first}. Expected one frame of reference."
        )
    if other.size != first.size:
        raise FormatError(
            f"{where}Rows x Columns {other.size[0]} x {other.size[1]} differs from "
            f"{first.size[0]} x {first.size[1]} {of_first}."
        )
    if np.max(np.abs(other.orientation - first.orientation)) > ORIENTATION_ATOL:
        raise FormatError(
            f"{where}ImageOrientationPatient {other.orientation.tolist()} differs from "
            f"{first.orientation.tolist()} {of_first} (tolerance {ORIENTATION_ATOL:g})."
        )
    if np.max(np.abs(other.pixel_spacing - first.pixel_spacing)) > PIXEL_SPACING_ATOL_MM:
        raise FormatError(
            f"{where}PixelSpacing {other.pixel_spacing.tolist()} differs from "
            f"{first.pixel_spacing.tolist()} {of_first}."
        )


def _directions(first: _Slice) -> tuple[npt.NDArray[np.float64], ...]:
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    norms = (float(np.linalg.norm(row_dir)), float(np.linalg.norm(col_dir)))
    if abs(norms[0] - 1) > 1e-3 or abs(norms[1] - 1) > 1e-3:
        raise FormatError(
            f"{first.path}: expected unit direction cosines in ImageOrientationPatient. "
            f"Got lengths {norms[0]:.6g} and {norms[1]:.6g}."
        )
    row_dir, col_dir = row_dir / norms[0], col_dir / norms[1]
    if abs(float(row_dir @ col_dir)) > 1e-3:
        raise FormatError(
            f"{first.path}: expected orthogonal row and column directions in "
            f"ImageOrientationPatient. Got {first.orientation.tolist()}."
        )
    normal = np.cross(row_dir, col_dir)
    return row_dir, col_dir, normal / np.linalg.norm(normal)


def _single_slice_spacing(ds: Any) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        with contextlib.suppress(TypeError, ValueError):
            if value is not None and float(value) > 0:
                return float(value)
    return 1.0


def _slice_spacing(slices: list[_Slice], proj: npt.NDArray[np.float64], tolerance: float) -> float:
    """Check that sorted slices are regularly stacked along the normal; return the spacing."""
    gaps = np.diff(proj)
    for k, gap in enumerate(gaps, start=1):
        if gap < POSITION_ATOL_MM:
            raise FormatError(
                f"{slices[k].path}: same position as {slices[k - 1].path} "
                f"(ImagePositionPatient {slices[k].position.tolist()}). Duplicate slice?"
            )
    median = float(np.median(gaps))
    for k, gap in enumerate(gaps, start=1):
        if abs(gap - median) > tolerance * median:
            raise FormatError(
                f"{slices[k].path}: {gap:.6g} mm from the previous slice {slices[k - 1].path}. "
                f"Expected {median:.6g} mm (the median slice spacing, tolerance "
                f"{tolerance:.3g} of it): missing, extra or irregular slices."
            )
    spacing = float(proj[-1] - proj[0]) / (len(proj) - 1)
    drift = proj - (proj[0] + spacing * np.arange(len(proj)))
    worst = int(np.argmax(np.abs(drift)))
    if abs(drift[worst]) > tolerance * spacing:
        raise FormatError(
            f"{slices[worst].path}: {drift[worst]:.6g} mm off the regular slice grid "
            f"(spacing {spacing:.6g} mm, tolerance {tolerance:.3g} of it)."
        )
    return spacing


def _load_series(source: SeriesSource, spacing_tolerance: float) -> _Series:
    if not 0 <= spacing_tolerance < 0.5:
        raise InvalidValueError(
            f"Expected spacing_tolerance in [0, 0.5). Got {spacing_tolerance!r}."
        )
    slices = [_slice(path) for path in _list_files(source)]
    first = slices[0]
    for other in slices[1:]:
        _check_same(first, other)
    row_dir, col_dir, normal = _directions(first)
    proj_all = np.asarray([s.position @ normal for s in slices])
    order = np.argsort(proj_all, kind="stable")
    slices = [slices[int(n)] for n in order]
    proj = proj_all[order]
    if len(slices) == 1:
        slice_spacing = _single_slice_spacing(slices[0].ds)
    else:
        slice_spacing = _slice_spacing(slices, proj, spacing_tolerance)
    origin = slices[0].position
    for s in slices[1:]:  # every slice on the line origin + t * normal (no gantry tilt, no shift)
        offset = s.position - origin
        in_plane = offset - (offset @ normal) * normal
        if np.linalg.norm(in_plane) > max(spacing_tolerance * slice_spacing, POSITION_ATOL_MM):
            raise FormatError(
                f"{s.path}: ImagePositionPatient is shifted by {np.linalg.norm(in_plane):.6g} mm "
                f"within the slice plane relative to {slices[0].path}. Expected slices stacked "
                "along the slice normal (a gantry-tilted or sheared series has no regular grid)."
            )
    space = Space(
        shape=(len(slices), first.size[0], first.size[1]),
        origin=_vec(origin),
        spacing=(slice_spacing, float(first.pixel_spacing[0]), float(first.pixel_spacing[1])),
        x_orientation=_vec(normal),
        y_orientation=_vec(col_dir),
        z_orientation=_vec(row_dir),
    )
    return _Series([s.path for s in slices], [s.ds for s in slices], space)


def _vec(v: npt.ArrayLike) -> tuple[float, float, float]:
    a, b, c = (float(x) for x in np.asarray(v, dtype=np.float64))
    return (a, b, c)


def sorted_series(
    files_or_folder: SeriesSource, *, spacing_tolerance: float = SPACING_TOLERANCE
) -> list[Path]:
    """Return the files of one single-frame CT/MR series sorted along the slice normal.

    Parameters
    ----------
    files_or_folder
        A folder (every non-hidden regular file in it except ``DICOMDIR``, not recursive), one
        file, or an iterable of file paths. Only headers are read.
    spacing_tolerance
        Each gap between consecutive slices must be within this fraction of the median gap,
        and each slice within this fraction of the spacing from the regular grid (and from the
        line along the slice normal through the first slice). Default 0.01.

    Raises
    ------
    MaskFileNotFoundError
        A missing file or folder, or a folder without files.
    FormatError
        ``<file>: <problem>`` for a non-DICOM file, missing geometry tags, a multi-frame image,
        another SeriesInstanceUID / FrameOfReferenceUID, another orientation (beyond
        :data:`ORIENTATION_ATOL`), PixelSpacing or image size, a duplicate position or
        irregular slice spacing.
    """
    return _load_series(files_or_folder, spacing_tolerance).paths


def space_from_dicom_series(
    files_or_folder: SeriesSource, *, spacing_tolerance: float = SPACING_TOLERANCE
) -> Space:
    """Return the LPS :class:`~spacetransformer.Space` of a series' ``(k, i, j)`` voxel array.

    ``k`` is the slice in :func:`sorted_series` order, ``i`` the row, ``j`` the column: shape
    ``(n_slices, Rows, Columns)``, origin the first sorted slice's ImagePositionPatient,
    spacing ``(slice spacing, PixelSpacing[0], PixelSpacing[1])``, directions (slice normal
    ``r x c`` pointing to increasing ``k``, column cosines ``c``, row cosines ``r``). The slice
    spacing of a one-slice series is SpacingBetweenSlices, else SliceThickness, else 1.
    Checks and errors as :func:`sorted_series`.
    """
    return _load_series(files_or_folder, spacing_tolerance).space


# --- writing a SEG ----------------------------------------------------------------------------


def default_segment_codes() -> tuple[Any, Any]:
    """Segmented property (category, type) of a segment whose name neither ``segment_codes``
    nor :func:`~medmask.interop.segment_codes.standard_segment_codes` knows.

    SCT 91723000 "Anatomical Structure" (CID 7150) and SCT 91772007 "Organ" (CID 7151).
    """
    codes = _codes()
    return codes.SCT.AnatomicalStructure, codes.SCT.Organ


def _corners(space: Space) -> npt.NDArray[np.float64]:
    return voxel_to_world(space, corner_indices(tuple(int(s) for s in space.shape)))


def _space_difference(mask_space: Space, series_space: Space) -> str | None:
    diff = spaces_match(mask_space, series_space)
    if diff is not None:
        return diff
    for name in ("x_orientation", "y_orientation", "z_orientation"):
        a = np.asarray(getattr(mask_space, name), dtype=np.float64)
        b = np.asarray(getattr(series_space, name), dtype=np.float64)
        if np.max(np.abs(a - b)) > DIRECTION_ATOL:
            return f"{name} {_vec(a)} != {_vec(b)}"
    corner_error = np.linalg.norm(_corners(mask_space) - _corners(series_space), axis=1)
    if np.max(corner_error) > POSITION_ATOL_MM:
        return f"corner voxels differ by up to {np.max(corner_error):.6g} mm"
    return None


def _check_segment_label(name: str) -> None:
    if len(name) > _LO_MAX or "\\" in name or any(ord(ch) < 32 for ch in name):
        raise InvalidValueError(
            f"Expected label names of at most {_LO_MAX} characters without backslashes or "
            f"control characters (DICOM Segment Label, VR LO). Got {name!r}."
        )


def _segment_numbers(
    data: npt.NDArray[Any], values: list[int]
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """Map label value ``values[n]`` to segment number ``n + 1`` (0 stays 0)."""
    dtype = np.uint8 if len(values) <= 0xFF else np.uint16
    src = data.astype(np.uint8) if data.dtype == np.bool_ else data
    if values[-1] <= 0xFFFF:
        lut = np.zeros(values[-1] + 1, dtype=dtype)
        lut[values] = np.arange(1, len(values) + 1, dtype=dtype)
        mapped: npt.NDArray[np.unsignedinteger[Any]] = lut[src]
        return mapped
    sorted_values = np.asarray(values, dtype=np.int64)
    index = np.searchsorted(sorted_values, src) + 1
    relabelled: npt.NDArray[np.unsignedinteger[Any]] = np.where(src == 0, 0, index).astype(dtype)
    return relabelled


def _parse_segmentation_type(hd: Any, requested: str | None) -> str:
    supported = {v.value for v in hd.seg.SegmentationTypeValues} & {"LABELMAP", "BINARY"}
    if requested is None:
        return "LABELMAP" if "LABELMAP" in supported else "BINARY"
    if not isinstance(requested, str) or requested.upper() not in supported:
        raise InvalidValueError(
            f"Expected segmentation_type None or one of {sorted(supported)} (this highdicom "
            f"{hd.__version__}). Got {requested!r}."
        )
    return requested.upper()


def _fill_uids(series: _Series) -> None:
    """Give source headers the UIDs a SEG must reference (anonymized files may lack them)."""
    pydicom = _pydicom()
    for path, ds in zip(series.paths, series.datasets, strict=True):
        meta = getattr(ds, "file_meta", None)
        for keyword, meta_keyword in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if not str(ds.get(keyword, "") or ""):
                value = str(meta.get(meta_keyword, "") or "") if meta is not None else ""
                if not value:
                    raise FormatError(f"{path}: no {keyword} (nor {meta_keyword}).")
                setattr(ds, keyword, value)
    instance_uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if all(str(ds.get(keyword, "") or "") for ds in series.datasets):
            continue
        uid = pydicom.uid.generate_uid(entropy_srcs=[*sorted(instance_uids), f"medmask:{keyword}"])
        warnings.warn(
            f"{series.paths[0]}: the source series has no {keyword} (anonymized?); the SEG "
            f"references the derived UID {uid}, which the source files do not carry.",
            MissingUIDWarning,
            stacklevel=user_stacklevel(),
        )
        for ds in series.datasets:
            setattr(ds, keyword, uid)


def _grid_text(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _grid_differences(mask_space: Space, series_space: Space) -> list[str]:
    """What differs between the mask's grid and the series', with the numbers."""
    found = []
    mask_shape = tuple(int(s) for s in mask_space.shape)
    series_shape = tuple(int(s) for s in series_space.shape)
    if mask_shape != series_shape:
        found.append(f"shape {mask_shape} (the series' {series_shape})")
    spacing = np.asarray(mask_space.spacing, np.float64)
    series_spacing = np.asarray(series_space.spacing, np.float64)
    if np.max(np.abs(spacing - series_spacing)) > POSITION_ATOL_MM * 1e-2:
        found.append(
            f"spacing {_grid_text(spacing)} mm (the series' {_grid_text(series_spacing)} mm)"
        )
    origin = np.asarray(mask_space.origin, np.float64)
    series_origin = np.asarray(series_space.origin, np.float64)
    apart = float(np.linalg.norm(origin - series_origin))
    if apart > POSITION_ATOL_MM:
        found.append(
            f"origin {_grid_text(origin)} (the series' {_grid_text(series_origin)}, "
            f"{apart:.4g} mm apart)"
        )
    for axis, name in enumerate(("x_orientation", "y_orientation", "z_orientation")):
        a = np.asarray(getattr(mask_space, name), np.float64)
        b = np.asarray(getattr(series_space, name), np.float64)
        if np.max(np.abs(a - b)) > DIRECTION_ATOL:
            found.append(f"direction of axis {axis} {_grid_text(a)} (the series' {_grid_text(b)})")
    if not found:
        corner_error = np.linalg.norm(_corners(mask_space) - _corners(series_space), axis=1)
        found.append(f"corner voxels (up to {np.max(corner_error):.4g} mm apart)")
    return found


class _NotOnSeriesGrid(SpaceMismatchError):
    """The mask's grid is not the series' nor a flip or permutation of it; ``differences``
    and ``reason`` let the command line say it in its own words."""

    def __init__(self, message: str, folder: Path, differences: list[str], reason: str) -> None:
        super().__init__(message)
        self.folder = folder
        self.differences = differences
        self.reason = reason


def _on_series_grid(mask: SegmentationMask, series: _Series) -> SegmentationMask:
    """``mask`` on the series' grid: as it is, or aligned when its grid is a flip or axis
    permutation of the series' (a NIfTI of the series usually has its rows flipped)."""
    if _space_difference(mask.space, series.space) is None:
        return mask
    try:
        return mask.align_to(series.space, tolerance_mm=POSITION_ATOL_MM)
    except SpaceMismatchError as exc:
        reason = str(exc)
    folder = series.paths[0].parent
    differences = _grid_differences(mask.space, series.space)
    raise _NotOnSeriesGrid(
        f"Expected a mask on the voxel grid of the DICOM series {folder}, or on a flip or "
        "axis permutation of it, which to_dicom_seg aligns for you with "
        "mask.align_to(medmask.interop.dicom.space_from_dicom_series(series)) (voxel centres "
        f"within {POSITION_ATOL_MM:g} mm). Got a grid that differs in {'; '.join(differences)}; "
        f"align_to cannot fix it: {reason} Resample the mask onto the series grid first.",
        folder,
        differences,
        reason,
    )


def _codes_by_name(
    names: list[str],
    segment_codes: SegmentCodes | None,
    storage_options: dict[str, Any] | None,
) -> dict[str, SegmentCode | None]:
    """Each segment's codes: ``segment_codes`` first, then the shipped table, else None."""
    given: Mapping[str, SegmentCode]
    if segment_codes is None:
        given = {}
    elif isinstance(segment_codes, str | os.PathLike):
        given = read_segment_codes(segment_codes, storage_options)
    elif isinstance(segment_codes, Mapping):
        for name in segment_codes:
            if name not in names:
                raise LabelNotFoundError(f"segment_codes: no label named {name!r} in the mask.")
        given = {
            name: segment_code(value, f"segment_codes[{name!r}]")
            for name, value in segment_codes.items()
        }
    else:
        raise InvalidTypeError(
            "Expected segment_codes as {name: (category, type)} codes or the path of a CSV or "
            f"JSON table. Got {type(segment_codes).__name__}."
        )
    standard = standard_segment_codes()
    return {
        name: find_segment_code(given, name) or find_segment_code(standard, name) for name in names
    }


def _algorithm(hd: Any, name: str | None, version: str) -> tuple[Any, Any]:
    """(SegmentAlgorithmType, AlgorithmIdentificationSequence or None)."""
    if name is None:
        return hd.seg.SegmentAlgorithmTypeValues.MANUAL, None
    for keyword, value in (("algorithm_name", name), ("algorithm_version", version)):
        if not isinstance(value, str) or not value.strip() or len(value) > _LO_MAX:
            raise InvalidValueError(
                f"Expected {keyword} as a text of 1 to {_LO_MAX} characters (DICOM LO). "
                f"Got {value!r:.80}."
            )
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name, family=_codes().cid7162.ArtificialIntelligence, version=version
    )
    return hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm


def _concept(hd: Any, term: CodedTerm) -> Any:
    return hd.sr.CodedConcept(value=term.value, scheme_designator=term.scheme, meaning=term.meaning)


def _segment_description(
    hd: Any,
    number: int,
    name: str,
    code: SegmentCode | None,
    algorithm_type: Any,
    algorithm: Any,
) -> Any:
    """One item of the SegmentSequence; a type modifier (laterality) goes into the type's
    SegmentedPropertyTypeModifierCodeSequence, a region modifier into the region's
    AnatomicRegionModifierSequence (highdicom takes neither as an argument)."""
    try:
        if code is None:
            category, kind = default_segment_codes()
            regions = None
        else:
            category, kind = _concept(hd, code.category), _concept(hd, code.type)
            regions = None if code.region is None else [_concept(hd, code.region)]
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=algorithm_type,
            algorithm_identification=algorithm,
            anatomic_regions=regions,
        )
        if code is not None and code.modifier is not None:
            type_item = description.SegmentedPropertyTypeCodeSequence[0]
            type_item.SegmentedPropertyTypeModifierCodeSequence = [_concept(hd, code.modifier)]
        if code is not None and code.region_modifier is not None:
            region_item = description.AnatomicRegionSequence[0]
            region_item.AnatomicRegionModifierSequence = [_concept(hd, code.region_modifier)]
    except (ValueError, TypeError) as exc:
        raise InvalidValueError(f"segment {name!r}: highdicom refuses its codes: {exc}") from None
    return description


@renamed_keywords(out="target")
def to_dicom_seg(
    mask: SegmentationMask,
    source_series: SeriesSource,
    target: Target,
    *,
    series_description: str = "medmask",
    segmentation_type: str | None = None,
    series_number: int = 1,
    instance_number: int = 1,
    segment_codes: SegmentCodes | None = None,
    algorithm_name: str | None = None,
    algorithm_version: str = "unknown",
    transfer_syntax_uid: str | None = None,
    omit_empty_frames: bool = False,
    overwrite: bool = True,
    spacing_tolerance: float = SPACING_TOLERANCE,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Write ``mask`` as a DICOM SEG of the series it was drawn on; return the bytes written.

    Parameters
    ----------
    mask
        A mask on the series' grid (:func:`space_from_dicom_series`, within
        :data:`POSITION_ATOL_MM` and :data:`DIRECTION_ATOL`: ``mask.data[k, i, j]`` is slice
        ``k`` (sorted), row ``i``, column ``j``), or on a grid holding the same voxel centres
        in another axis order or direction (a NIfTI of the series, its rows flipped), which
        is aligned for you (``mask.align_to(space_from_dicom_series(series))``).
    source_series
        The series (folder or files, see :func:`sorted_series`). Headers only are read.
    target
        Output file: a path or fsspec URL (written atomically).
    series_description
        SeriesDescription of the SEG.
    segmentation_type
        ``"LABELMAP"`` (default when the installed highdicom supports it: one frame per slice
        holding segment numbers, Label Map Segmentation Storage) or ``"BINARY"`` (one bit-packed
        frame per slice and segment, Segmentation Storage, readable by older software).
    series_number, instance_number
        SeriesNumber and InstanceNumber of the SEG.
    segment_codes
        Codes of some segments, over the shipped table
        (:func:`~medmask.interop.segment_codes.standard_segment_codes`, SNOMED CT codes of
        TotalSegmentator's names such as ``liver`` or ``kidney_left``, used by default):
        ``{name: (category, type)}`` or ``{name: (category, type, modifier)}`` with each code
        a pydicom ``Code``, a highdicom ``CodedConcept`` or a plain ``(value, scheme,
        meaning)`` tuple (every name must be a label of the mask); or the path or URL of a
        CSV, TSV or JSON table (:func:`~medmask.interop.segment_codes.read_segment_codes`;
        names the mask lacks are ignored). Names match exactly, else ignoring case and
        punctuation (``"Kidney Left"`` is ``kidney_left``). A name found nowhere gets
        :func:`default_segment_codes` ("Anatomical Structure" / "Organ").
    algorithm_name, algorithm_version
        With a name (``"TotalSegmentator"``), segments are AUTOMATIC with that algorithm
        identification (family "Artificial Intelligence", the version default "unknown");
        without, MANUAL.
    transfer_syntax_uid
        Default: RLE Lossless for LABELMAP (decoded by plain pydicom; 165 kB instead of 5 MB
        for 20 slices of 512 x 512), Explicit VR Little Endian for BINARY (highdicom
        compresses BINARY only as JPEG 2000, which needs extra pydicom plugins).
    omit_empty_frames
        Leave out all-zero frames. Default False: every slice is written, so the SEG's frames
        span the whole series and :func:`from_dicom_seg` rebuilds the full grid.
    overwrite
        If False, refuse to replace an existing ``target`` (:class:`MaskFileExistsError`).
    spacing_tolerance
        Passed to :func:`sorted_series`.
    storage_options
        fsspec options for a URL ``target``.

    Notes
    -----
    Segments: one per non-zero label value of ``mask.mapping`` (also absent ones), label =
    the name, numbered 1..N in ascending value order. A name mapped to 0 is not written.
    Source files without SOPClassUID / SOPInstanceUID get them from their file meta; a series
    without StudyInstanceUID / SeriesInstanceUID / FrameOfReferenceUID gets a derived,
    deterministic UID and a :class:`MissingUIDWarning`.

    Raises
    ------
    SpaceMismatchError
        The mask is neither on the series' voxel grid nor on a flip or axis permutation of
        it; the message says what differs (shape, spacing, origin, directions).
    LabelNotFoundError
        A ``segment_codes`` mapping names a label the mask lacks.
    InvalidValueError
        A malformed code or code table (naming its file, row and column), an empty
        ``algorithm_name``, no non-zero label, a name that is no valid DICOM Segment Label
        (at most 64 characters), an unsupported ``segmentation_type``, BINARY frames of fewer
        than 8 pixels (highdicom would pack them wrongly), or highdicom refusing the input.
    """
    hd = _highdicom()
    pydicom = _pydicom()
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    seg_type = _parse_segmentation_type(hd, segmentation_type)
    out_name = source_name(target)
    out_local = local_path(target, storage_options)
    if not overwrite and out_local is not None and os.path.exists(out_local):
        raise MaskFileExistsError(f"{out_name}: exists and overwrite=False.")  # fail early
    items = sorted((value, name) for name, value in mapping_items(mask.mapping) if value != 0)
    if not items:
        raise InvalidValueError("Expected a mask with at least one non-zero label. Got none.")
    if len(items) > 0xFFFF:
        raise InvalidValueError(f"Expected at most 65535 labels (segments). Got {len(items)}.")
    for _, name in items:
        _check_segment_label(name)
    codes_by_name = _codes_by_name([name for _, name in items], segment_codes, storage_options)
    algorithm_type, algorithm = _algorithm(hd, algorithm_name, algorithm_version)

    series = _load_series(source_series, spacing_tolerance)
    mask = _on_series_grid(mask, series)
    _, rows, columns = mask.shape
    if seg_type == "BINARY" and rows * columns < 8:
        # highdicom packs a BINARY frame of fewer than 8 pixels on its own, padded to a byte,
        # while readers (pydicom, highdicom) unpack all frames as one bit stream: the SEG
        # would read back with voxels moved between frames (checked with highdicom 0.28.2)
        raise InvalidValueError(
            f"{out_name}: BINARY frames of {rows} x {columns} pixels (fewer than 8) are written "
            f"wrongly by highdicom {hd.__version__}; nothing was written. Use "
            "segmentation_type='LABELMAP'."
        )
    _fill_uids(series)
    descriptions = [
        _segment_description(hd, number, name, codes_by_name[name], algorithm_type, algorithm)
        for number, (_, name) in enumerate(items, start=1)
    ]
    pixels = _segment_numbers(mask.data, [value for value, _ in items])
    if transfer_syntax_uid is None:
        uid = pydicom.uid
        transfer_syntax_uid = (
            uid.RLELossless if seg_type == "LABELMAP" else uid.ExplicitVRLittleEndian
        )
    try:
        seg = hd.seg.Segmentation(
            source_images=series.datasets,
            pixel_array=pixels,
            segmentation_type=seg_type,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=instance_number,
            manufacturer="medmask",
            manufacturer_model_name="medmask",
            software_versions=__version__,
            device_serial_number="0",
            transfer_syntax_uid=transfer_syntax_uid,
            omit_empty_frames=omit_empty_frames,
            series_description=series_description,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidValueError(f"{out_name}: highdicom cannot build the SEG: {exc}") from None
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    write_atomic(target, [data], storage_options, overwrite=overwrite)
    return len(data)


# --- reading a SEG ----------------------------------------------------------------------------


def _canonical_space(affine: npt.ArrayLike, shape: tuple[int, int, int]) -> tuple[Space, bool]:
    """Space of a highdicom (slice, row, column) volume, axis 0 along ``r x c``.

    Returns the space and whether axis 0 must be reversed to get there.
    """
    a = np.asarray(affine, dtype=np.float64)
    steps = a[:3, :3]
    spacing = np.linalg.norm(steps, axis=0)
    directions = steps / spacing
    normal = np.cross(directions[:, 2], directions[:, 1])  # row cosines x column cosines
    flip = float(directions[:, 0] @ normal) < 0
    origin = a[:3, 3].copy()
    if flip:
        origin += (shape[0] - 1) * steps[:, 0]
        directions[:, 0] *= -1
    space = Space(
        shape=shape,
        origin=_vec(origin),
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        x_orientation=_vec(directions[:, 0]),
        y_orientation=_vec(directions[:, 1]),
        z_orientation=_vec(directions[:, 2]),
    )
    return space, flip


_SAME_PLANE_MM = 1e-2  # frame positions closer than this along the normal share a slice


def _seg_count(ds: Any, keyword: str, path: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 1:
        raise FormatError(f"{path}: expected {keyword} as an integer >= 1. Got {value!r:.40}.")
    return number


def _frame_item(items: Any, keyword: str) -> Any:
    """The one item of sequence ``keyword`` in a functional group item, or None."""
    sequence = items.get(keyword) if items is not None else None
    return sequence[0] if sequence else None


def _plane_normal(ds: Any, first: Any) -> npt.NDArray[np.float64] | None:
    """Unit normal of the frames' plane (row cosines x column cosines), when stated."""
    shared = _frame_item(ds, "SharedFunctionalGroupsSequence")
    orientation = _frame_item(shared, "PlaneOrientationSequence") or _frame_item(
        first, "PlaneOrientationSequence"
    )
    if orientation is None or "ImageOrientationPatient" not in orientation:
        return None
    cosines = np.asarray([float(v) for v in orientation.ImageOrientationPatient], np.float64)
    if cosines.shape != (6,) or not np.isfinite(cosines).all():
        return None  # highdicom reports it
    normal = np.cross(cosines[:3], cosines[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 1e-6 else None


def _slices_spanned(ds: Any, frames: Any) -> int:
    """Number of slices of the grid the frames' plane positions span (1 if not stated)."""
    if not frames:
        return 1
    normal = _plane_normal(ds, frames[0])
    if normal is None:
        return 1
    along = []
    for item in frames:
        plane = _frame_item(item, "PlanePositionSequence")
        if plane is None or "ImagePositionPatient" not in plane:
            return 1  # not a volume of planes: highdicom refuses it
        position = np.asarray([float(v) for v in plane.ImagePositionPatient], np.float64)
        if position.shape != (3,) or not np.isfinite(position).all():
            return 1
        along.append(float(position @ normal))
    planes = np.unique(np.asarray(along))
    if len(planes) < 2:
        return 1
    gaps = np.diff(planes)
    steps = gaps[gaps > _SAME_PLANE_MM]
    if not len(steps):
        return 1
    ratio = float(planes[-1] - planes[0]) / float(steps.min())
    return round(ratio) + 1 if ratio < 2.0**62 else 2**62  # inf when the span overflows


_DEFER_BYTES = 1 << 16  # elements larger than this (the pixel data) are not read by the check


def _pixel_data_length(ds: Any) -> int | None:
    """Bytes of uncompressed pixel data in a dataset read with deferred large values (0 when
    absent); None when encapsulated (compressed frames) or unknown."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_encapsulated:
        return None
    element = ds.get_item("PixelData", keep_deferred=True)
    if element is None:
        return 0
    if element.value is not None:
        return len(element.value)
    length = int(element.length)
    return None if length == 0xFFFFFFFF else length


def _check_seg_header(ds: Any, path: str, max_bytes: int) -> None:
    """Check what a SEG declares before highdicom allocates anything.

    The frames (NumberOfFrames x Rows x Columns, as highdicom holds them decoded), and the
    volume they are placed in (the slices their plane positions span x Rows x Columns), must
    be within the limits; uncompressed pixel data must hold every frame. ``ds`` is read with
    ``defer_size`` so that the pixel data's length is known without reading it.
    """
    try:
        frames = _seg_count(ds, "NumberOfFrames", path, default=1)
        rows = _seg_count(ds, "Rows", path)
        columns = _seg_count(ds, "Columns", path)
        bits = _seg_count(ds, "BitsAllocated", path)
        if bits not in (1, 8, 16):
            raise FormatError(f"{path}: expected BitsAllocated 1, 8 or 16. Got {bits}.")
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and len(per_frame) != frames:
            raise FormatError(
                f"{path}: NumberOfFrames is {frames:,} but the per-frame functional groups "
                f"describe {len(per_frame):,} frames."
            )
        segments = len(ds.get("SegmentSequence") or [])
        label_dtype = np.dtype(np.uint8 if segments <= 0xFF else np.uint16)
        frame_dtype = np.dtype(np.uint16 if bits == 16 else np.uint8)
        check_size_limits((frames, rows, columns), frame_dtype, name=path, max_bytes=max_bytes)
        held = _pixel_data_length(ds)
        need = -(-frames * rows * columns * bits // 8)
        if held is not None and need > held:
            raise TruncatedFileError(
                f"{path}: declares {frames:,} frames of {rows} x {columns} x {bits} bits "
                f"({need:,} bytes of pixel data), but its pixel data holds {held:,} bytes."
            )
        slices = _slices_spanned(ds, per_frame)
        check_size_limits((slices, rows, columns), label_dtype, name=path, max_bytes=max_bytes)
    except MedmaskError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read as a DICOM SEG: {exc}") from None


def _overlap_error(seg: Any, path: str, numbers: list[int]) -> InvalidValueError:
    count: npt.NDArray[np.uint16] | None = None
    for n in numbers:
        one = np.asarray(seg.get_volume(segment_numbers=[n], combine_segments=True).array) > 0
        count = one.astype(np.uint16) if count is None else count + one
    assert count is not None
    overlap = count > 1
    involved = [
        n
        for n in numbers
        if np.any(
            np.asarray(seg.get_volume(segment_numbers=[n], combine_segments=True).array)[overlap]
        )
    ]
    shown = ", ".join(str(n) for n in involved[:20]) + (" ..." if len(involved) > 20 else "")
    return InvalidValueError(
        f"{path}: segments {shown} overlap in {int(overlap.sum())} voxels. Expected "
        "non-overlapping segments: one label map cannot hold overlapping segments (read them "
        "one by one with highdicom: get_volume(segment_numbers=[n]))."
    )


def _seg_mapping(seg: Any, seg_path: str) -> dict[str, int]:
    """``{segment label: segment number}`` of a BINARY or LABELMAP SEG."""
    seg_type = seg.segmentation_type.value
    if seg_type not in ("BINARY", "LABELMAP"):
        raise FormatError(
            f"{seg_path}: expected a BINARY or LABELMAP segmentation. Got {seg_type}."
        )
    numbers = [int(n) for n in seg.segment_numbers]
    if not numbers:
        raise FormatError(f"{seg_path}: the SEG has no segments.")
    mapping: dict[str, int] = {}
    for number in numbers:
        label = str(seg.get_segment_description(number).segment_label or "").strip()
        name = label or f"segment_{number}"
        if name in mapping:
            raise FormatError(
                f"{seg_path}: segments {mapping[name]} and {number} have the same label "
                f"{name!r}. Expected unique segment labels (they become label names)."
            )
        mapping[name] = number
    return mapping


def from_dicom_seg(
    source: Target,
    *,
    storage_options: dict[str, Any] | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    """Read a BINARY or LABELMAP DICOM SEG as a SegmentationMask.

    The array is ``(k, i, j)`` on the grid of the SEG's own frames (their plane positions and
    orientation), slices ordered along ``r x c`` exactly as :func:`space_from_dicom_series`
    orders a series, so a SEG written by :func:`to_dicom_seg` reads back on the series' space.
    Names are the segment labels, label values the segment numbers. Positions without a frame
    inside the frames' span are zero; if empty frames were omitted at the ends, the grid only
    spans the frames present.

    ``source`` is a path or fsspec URL; remote files are read whole (at most ``max_bytes``).

    Raises
    ------
    MaskFileNotFoundError
        ``source`` does not exist.
    FormatError
        Not a DICOM SEG, a FRACTIONAL SEG, duplicate segment labels, or frames that do not
        form a regularly spaced volume.
    InvalidValueError
        BINARY segments overlap (they cannot form one label map).
    """
    hd = _highdicom()
    pydicom = _pydicom()
    seg_path = source_name(source)
    local = local_path(source, storage_options)
    if local is not None and not os.path.isfile(local):
        raise MaskFileNotFoundError(f"{seg_path}: no such file.")

    limit = max_bytes_limit(max_bytes)

    def read() -> Any:
        # the header alone first: highdicom allocates what the frames declare
        if local is not None:
            header = pydicom.dcmread(local, defer_size=_DEFER_BYTES)
            _check_seg_header(header, seg_path, limit)
            return hd.seg.segread(local)
        data = read_whole(source, storage_options, limit)
        header = pydicom.dcmread(io.BytesIO(data), defer_size=_DEFER_BYTES)
        _check_seg_header(header, seg_path, limit)
        return hd.seg.segread(io.BytesIO(data))

    try:
        seg = read()
        mapping = _seg_mapping(seg, seg_path)  # highdicom parses these attributes lazily
    except pydicom.errors.InvalidDicomError as exc:
        raise FormatError(f"{seg_path}: not a DICOM file ({exc}).") from None
    except MedmaskError:
        raise
    except OSError as exc:
        if exc.errno is not None:  # the storage failed, not the parser
            raise storage_error(exc, seg_path, "reading") from exc
        # pydicom reports a malformed file as a bare OSError ("No tag to read at ...")
        raise FormatError(f"{seg_path}: cannot read as a DICOM SEG: {exc}") from None
    except Exception as exc:  # highdicom raises ValueError/AttributeError/KeyError...
        raise FormatError(f"{seg_path}: cannot read as a DICOM SEG: {exc}") from None
    numbers = list(mapping.values())
    overlapping = False
    try:
        volume = seg.get_volume(combine_segments=True, relabel=False)
    except RuntimeError as exc:
        if "overlap" not in str(exc):
            raise FormatError(f"{seg_path}: frames do not form a 3-D volume: {exc}") from None
        overlapping = True
    except Exception as exc:  # also sqlite3 errors from highdicom's frame table
        raise FormatError(f"{seg_path}: cannot build a 3-D volume: {exc}") from None
    if overlapping:
        # a fresh reader: the failed call can leave highdicom's frame table locked
        try:
            error = _overlap_error(read(), seg_path, numbers)
        except MedmaskError:
            raise
        except Exception as exc:
            raise FormatError(f"{seg_path}: cannot build a 3-D volume: {exc}") from None
        raise error
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise FormatError(f"{seg_path}: expected a 3-D label volume. Got shape {array.shape}.")
    nk, ni, nj = (int(s) for s in array.shape)
    try:
        space, flip = _canonical_space(volume.affine, (nk, ni, nj))
    except Exception as exc:  # spacetransformer's own errors for a degenerate geometry
        raise FormatError(f"{seg_path}: cannot use the frames' geometry: {exc}") from None
    if flip:
        array = array[::-1]
    return SegmentationMask(np.ascontiguousarray(array), LabelMapping(mapping), space)
