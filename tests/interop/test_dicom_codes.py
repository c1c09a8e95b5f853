"""What a PACS shows of our DICOM SEG: AUTOMATIC segments with the algorithm's name, SNOMED CT
codes from the shipped table (laterality as the type's modifier), user tables and tuples
overriding it, and masks on a flip or permutation of the series grid aligned for us."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.sr.codedict import codes
from spacetransformer import Space

import medmask
from medmask import SegmentationMask
from medmask.errors import InvalidValueError, SpaceMismatchError
from medmask.interop.dicom import from_dicom_seg, space_from_dicom_series, to_dicom_seg

ANATOMY = ("123037004", "SCT", "Anatomical Structure")


@pytest.fixture(scope="module")
def totalseg(shared_data: Path) -> Path:
    return shared_data / "totalseg"


@pytest.fixture(scope="module")
def nifti_mask(totalseg: Path) -> SegmentationMask:
    """TotalSegmentator's labelmap as read from NIfTI: rows flipped against the series."""
    return medmask.from_nifti(totalseg / "ct_dicom_seg.nii.gz", totalseg / "labels_total.json")


def _write(mask: SegmentationMask, totalseg: Path, out: Path, **options: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the anonymized series lacks Study/Series UIDs
        to_dicom_seg(mask, totalseg / "ct_dicom", out, **options)
    return hd.seg.segread(out)


def _description(seg: Any, label: str) -> Any:
    numbers = [n for n in seg.segment_numbers if seg.get_segment_description(n).segment_label]
    by_label = {seg.get_segment_description(n).segment_label: n for n in numbers}
    return seg.get_segment_description(by_label[label])


def _codes_of(description: Any) -> tuple[str, str, str | None]:
    """(category value, type value, type modifier meaning or None)."""
    kind = description.SegmentedPropertyTypeCodeSequence[0]
    modifier = kind.get("SegmentedPropertyTypeModifierCodeSequence")
    return (
        description.segmented_property_category.value,
        description.segmented_property_type.value,
        modifier[0].CodeMeaning if modifier else None,
    )


# --- algorithm and shipped codes, read by highdicom -------------------------------------------


def test_totalsegmentator_seg_is_automatic_with_snomed_codes(
    nifti_mask: SegmentationMask, totalseg: Path, tmp_path: Path
) -> None:
    seg = _write(
        nifti_mask,
        totalseg,
        tmp_path / "ts.dcm",
        algorithm_name="TotalSegmentator",
        algorithm_version="2.4.0",
    )
    labels = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    assert labels == [name for name, _ in sorted(nifti_mask.mapping.items(), key=lambda x: x[1])]
    for n in seg.segment_numbers:
        description = seg.get_segment_description(n)
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = description.algorithm_identification[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (
            "TotalSegmentator",
            "2.4.0",
        )
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
        assert description.segmented_property_type.value != "91772007"  # never "Organ"
    assert _codes_of(_description(seg, "liver")) == ("123037004", "10200004", None)
    assert _codes_of(_description(seg, "spleen")) == ("123037004", "78961009", None)
    assert _codes_of(_description(seg, "kidney_left")) == ("123037004", "64033007", "Left")
    assert _codes_of(_description(seg, "kidney_right")) == ("123037004", "64033007", "Right")
    left = _description(seg, "kidney_left").SegmentedPropertyTypeCodeSequence[0]
    modifier = left.SegmentedPropertyTypeModifierCodeSequence[0]
    assert (modifier.CodeValue, modifier.CodingSchemeDesignator) == ("7771000", "SCT")
    assert _description(seg, "kidney_left").segmented_property_type.meaning == "Kidney"
    cyst = _description(seg, "kidney_cyst_left")
    assert cyst.segmented_property_category.meaning == "Morphologically Altered Structure"
    region = cyst.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodeMeaning) == ("64033007", "Kidney")
    assert region.AnatomicRegionModifierSequence[0].CodeValue == "7771000"


def test_without_an_algorithm_segments_are_manual_and_unknown_names_are_organs(
    totalseg: Path, tmp_path: Path
) -> None:
    space = space_from_dicom_series(totalseg / "ct_dicom")
    data = np.zeros(tuple(int(s) for s in space.shape), np.uint8)
    data[3, 10:20, 10:20], data[4, 30:40, 30:40] = 1, 2
    mask = SegmentationMask(data, {"Liver": 1, "blob": 2}, space)
    seg = _write(mask, totalseg, tmp_path / "manual.dcm")
    for label in ("Liver", "blob"):
        description = _description(seg, label)
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.MANUAL
        assert "SegmentationAlgorithmIdentificationSequence" not in description
    assert _codes_of(_description(seg, "Liver")) == ("123037004", "10200004", None)  # any case
    assert _codes_of(_description(seg, "blob")) == ("91723000", "91772007", None)
    with pytest.raises(InvalidValueError) as info:
        to_dicom_seg(mask, totalseg / "ct_dicom", tmp_path / "x.dcm", algorithm_name=" ")
    assert str(info.value) == (
        "Expected algorithm_name as a text of 1 to 64 characters (DICOM LO). Got ' '."
    )
    assert not (tmp_path / "x.dcm").exists()


# --- codes given by the caller ----------------------------------------------------------------


def _small_mask(totalseg: Path) -> SegmentationMask:
    space = space_from_dicom_series(totalseg / "ct_dicom")
    data = np.zeros(tuple(int(s) for s in space.shape), np.uint8)
    for value in (1, 2, 3, 4):
        data[value, 10 * value : 10 * value + 5, 40:50] = value
    return SegmentationMask(data, {"liver": 1, "spleen": 2, "kidney_left": 3, "mass": 4}, space)


def test_tuple_and_pydicom_codes_override_the_shipped_table(totalseg: Path, tmp_path: Path) -> None:
    given = {
        "liver": (ANATOMY, ("10200004", "SCT", "Liver"), ("24028007", "SCT", "Right")),
        "mass": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Mass),
    }
    seg = _write(_small_mask(totalseg), totalseg, tmp_path / "t.dcm", segment_codes=given)
    assert _codes_of(_description(seg, "liver")) == ("123037004", "10200004", "Right")
    assert _codes_of(_description(seg, "mass")) == ("49755003", codes.SCT.Mass.value, None)
    assert _codes_of(_description(seg, "spleen")) == ("123037004", "78961009", None)  # shipped
    assert _codes_of(_description(seg, "kidney_left")) == ("123037004", "64033007", "Left")


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_a_user_table_overrides_the_shipped_one(totalseg: Path, tmp_path: Path, kind: str) -> None:
    tumour = ("49755003", "SCT", "Morphologically Altered Structure")
    neoplasm = ("108369006", "SCT", "Neoplasm")
    spleen = ("78961009", "SCT", "Spleen")
    accessory = ("255549009", "SCT", "Accessory")
    if kind == "csv":
        table = tmp_path / "codes.csv"
        table.write_text(
            "name,category_value,category_scheme,category_meaning,type_value,type_scheme,"
            "type_meaning,modifier_value,modifier_scheme,modifier_meaning\n"
            f"mass,{','.join(tumour)},{','.join(neoplasm)},,,\n"
            f"spleen,{','.join(ANATOMY)},{','.join(spleen)},{','.join(accessory)}\n"
            f"lung,{','.join(ANATOMY)},39607008,SCT,Lung,,,\n"  # not in the mask: ignored
        )
    else:
        table = tmp_path / "codes.json"
        table.write_text(
            json.dumps(
                {
                    "mass": {"category": tumour, "type": neoplasm},
                    "spleen": {"category": ANATOMY, "type": spleen, "modifier": accessory},
                    "lung": [ANATOMY, ["39607008", "SCT", "Lung"]],
                }
            )
        )
    seg = _write(_small_mask(totalseg), totalseg, tmp_path / "u.dcm", segment_codes=table)
    assert _codes_of(_description(seg, "mass")) == ("49755003", "108369006", None)
    assert _codes_of(_description(seg, "spleen")) == ("123037004", "78961009", "Accessory")
    assert _codes_of(_description(seg, "liver")) == ("123037004", "10200004", None)
    assert _codes_of(_description(seg, "kidney_left")) == ("123037004", "64033007", "Left")
    # the same table by its name as a string
    again = _write(_small_mask(totalseg), totalseg, tmp_path / "v.dcm", segment_codes=str(table))
    assert _codes_of(_description(again, "mass")) == ("49755003", "108369006", None)


def test_a_bad_table_is_refused_before_anything_is_written(totalseg: Path, tmp_path: Path) -> None:
    table = tmp_path / "codes.csv"
    table.write_text("name,category_value\nliver,1\n")
    out = tmp_path / "never.dcm"
    with pytest.raises(InvalidValueError) as info:
        to_dicom_seg(_small_mask(totalseg), totalseg / "ct_dicom", out, segment_codes=table)
    assert str(info.value).startswith(f"{table}: row 1: no column 'category_scheme'")
    binary = tmp_path / "codes.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 30)
    with pytest.raises(InvalidValueError) as info2:
        to_dicom_seg(_small_mask(totalseg), totalseg / "ct_dicom", out, segment_codes=binary)
    assert str(info2.value) == (
        f"{binary}: not a text file (expected a CSV, TSV or JSON table of segment codes)."
    )
    with pytest.raises(InvalidValueError, match=r"segment_codes\['liver'\] type: expected a code"):
        to_dicom_seg(
            _small_mask(totalseg), totalseg / "ct_dicom", out, segment_codes={"liver": (ANATOMY, 5)}
        )
    assert not out.exists()


# --- alignment --------------------------------------------------------------------------------


def _index_map(source: SegmentationMask, target: Space) -> npt.NDArray[np.int64]:
    """For every voxel of ``target`` (C order), the flat index of the ``source`` voxel at the
    same LPS point (the grids must share voxel centres)."""
    shape = tuple(int(s) for s in target.shape)
    kij = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    steps = np.stack(
        [
            np.asarray(getattr(target, f"{a}_orientation"), float) * float(target.spacing[n])
            for n, a in enumerate("xyz")
        ],
        axis=1,
    )
    world = kij @ steps.T + np.asarray(target.origin, float)
    src = source.space
    src_steps = np.stack(
        [
            np.asarray(getattr(src, f"{a}_orientation"), float) * float(src.spacing[n])
            for n, a in enumerate("xyz")
        ],
        axis=1,
    )
    index = np.linalg.solve(src_steps, (world - np.asarray(src.origin, float)).T).T
    rounded = np.rint(index)
    assert np.abs(index - rounded).max() < 1e-3  # the same voxel centres
    flat: npt.NDArray[np.int64] = np.ravel_multi_index(
        tuple(rounded.astype(np.int64).T), source.shape
    )
    return flat


def _permuted(mask: SegmentationMask, axes: tuple[int, int, int], flip: int) -> SegmentationMask:
    """The same voxels on a grid whose axes are ``mask``'s in order ``axes``, axis ``flip``
    of the new grid reversed."""
    space = mask.space
    dirs = [np.asarray(getattr(space, f"{a}_orientation"), float) for a in "xyz"]
    spacing = [float(s) for s in space.spacing]
    shape = [int(s) for s in space.shape]
    new_dirs = [dirs[a] for a in axes]
    new_spacing = [spacing[a] for a in axes]
    new_shape = [shape[a] for a in axes]
    origin = np.asarray(space.origin, float)
    origin = origin + (new_shape[flip] - 1) * new_spacing[flip] * new_dirs[flip]
    new_dirs[flip] = -new_dirs[flip]
    data = np.flip(mask.data.transpose(axes), flip)
    new_space = Space(
        shape=tuple(new_shape),
        origin=tuple(float(v) for v in origin),
        spacing=tuple(new_spacing),
        x_orientation=tuple(float(v) for v in new_dirs[0]),
        y_orientation=tuple(float(v) for v in new_dirs[1]),
        z_orientation=tuple(float(v) for v in new_dirs[2]),
    )
    return SegmentationMask(np.ascontiguousarray(data), mask.mapping, new_space)


@pytest.mark.parametrize(("axes", "flip"), [((0, 1, 2), 2), ((2, 1, 0), 0), ((1, 0, 2), 1)])
def test_a_flipped_or_permuted_mask_is_aligned_for_you(
    nifti_mask: SegmentationMask,
    totalseg: Path,
    tmp_path: Path,
    axes: tuple[int, int, int],
    flip: int,
) -> None:
    series_space = space_from_dicom_series(totalseg / "ct_dicom")
    # the NIfTI grid itself already differs from the series' (rows flipped)
    assert nifti_mask.space.y_orientation[1] == pytest.approx(-series_space.y_orientation[1])
    mask = _permuted(nifti_mask, axes, flip)
    out = tmp_path / "aligned.dcm"
    _write(mask, totalseg, out)
    back = from_dicom_seg(out)
    assert tuple(back.shape) == tuple(int(s) for s in series_space.shape)
    # every voxel of the SEG holds the segment of the mask's voxel at the same LPS point
    names = {v: n for n, v in mask.mapping.items()}
    number_of = {name: number for name, number in back.mapping.items()}
    lut = np.zeros(max(names) + 1, np.int64)
    for value, name in names.items():
        lut[value] = number_of[name]
    expected = lut[mask.data.reshape(-1)[_index_map(mask, back.space)]]
    differing = int(np.count_nonzero(back.data.reshape(-1) != expected))
    assert differing == 0
    assert int(np.count_nonzero(expected)) > 100_000  # the test compares real anatomy


def test_a_grid_no_flip_fixes_is_refused_naming_align_to_and_what_differs(
    nifti_mask: SegmentationMask, totalseg: Path, tmp_path: Path
) -> None:
    space = nifti_mask.space
    out = tmp_path / "never.dcm"
    half = Space(
        shape=(10, *space.shape[1:]),
        origin=space.origin,
        spacing=(space.spacing[0] * 2, *space.spacing[1:]),
        x_orientation=space.x_orientation,
        y_orientation=space.y_orientation,
        z_orientation=space.z_orientation,
    )
    with pytest.raises(SpaceMismatchError) as info:
        to_dicom_seg(
            SegmentationMask(nifti_mask.data[::2], nifti_mask.mapping, half),
            totalseg / "ct_dicom",
            out,
        )
    text = str(info.value)
    assert "mask.align_to(medmask.interop.dicom.space_from_dicom_series(series))" in text
    assert "shape (10, 512, 512) (the series' (20, 512, 512))" in text
    assert "spacing (4, 0.976562, 0.976562) mm (the series' (2, 0.976562, 0.976562) mm)" in text
    assert "direction of axis 1 (0, -1, 0) (the series' (0, 1, 0))" in text
    assert "origin (" in text
    assert text.endswith("Resample the mask onto the series grid first.")
    assert not out.exists()


# --- the command line -------------------------------------------------------------------------


def run(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medmask", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def assert_usage_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr, result.stderr


def test_cli_algorithm_and_codes_flags(totalseg: Path, tmp_path: Path) -> None:
    table = tmp_path / "codes.csv"
    table.write_text(
        "name,category_value,category_scheme,category_meaning,type_value,type_scheme,"
        "type_meaning\n"
        "liver,49755003,SCT,Morphologically Altered Structure,108369006,SCT,Neoplasm\n"
    )
    nifti = totalseg / "ct_dicom_seg.nii.gz"
    series = totalseg / "ct_dicom"
    out = tmp_path / "seg.dcm"
    labels = totalseg / "labels_total.json"
    result = run(
        "convert", nifti, out, "--series", series, "--labels", labels,
        "--algorithm", "TotalSegmentator:2.4.0", "--codes", table,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    items = {item.SegmentLabel: item for item in ds.SegmentSequence}
    for item in (items["liver"], items["spleen"]):
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "TotalSegmentator"
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "2.4.0"
    assert items["liver"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert items["spleen"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"
    kidney = items["kidney_left"].SegmentedPropertyTypeCodeSequence[0]
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    # a name without a version: "unknown"
    assert (
        run(
            "convert", nifti, out, "--series", series, "--algorithm", "nnU-Net", "--overwrite"
        ).returncode
        == 0
    )
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    identification = ds.SegmentSequence[1].SegmentationAlgorithmIdentificationSequence[0]
    assert (identification.AlgorithmName, identification.AlgorithmVersion) == ("nnU-Net", "unknown")

    # usage errors speak in flags
    assert_usage_error(
        run("convert", nifti, tmp_path / "x.msk", "--algorithm", "TotalSegmentator"),
        "--algorithm apply to a DICOM SEG output (.dcm) only",
    )
    assert_usage_error(
        run("convert", nifti, tmp_path / "x.msk", "--codes", table),
        "--codes apply to a DICOM SEG output (.dcm) only",
    )
    assert_usage_error(
        run("convert", nifti, out, "--series", series, "--algorithm", ":2"),
        "argument --algorithm: expected NAME or NAME:VERSION, got ':2'",
    )


def test_cli_bad_codes_and_grid_mismatch_are_one_line_in_flags(
    totalseg: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "codes.csv"
    bad.write_text("name,category_value\n")
    out = tmp_path / "seg.dcm"
    missing_input = tmp_path / "missing.nii.gz"  # the table fails before the input is read
    result = run("convert", missing_input, out, "--series", totalseg / "ct_dicom", "--codes", bad)
    assert result.returncode == 1
    assert result.stderr == (
        f"medmask convert: error: {bad}: row 1: no column 'category_scheme' (expected columns "
        "name, category_value, category_scheme, category_meaning, type_value, type_scheme, "
        "type_meaning, modifier_value, modifier_scheme, modifier_meaning, region_value, "
        "region_scheme, region_meaning, region_modifier_value, region_modifier_scheme, "
        "region_modifier_meaning, the last nine optional).\n"
    )
    # a mask on half the slices of the series
    space = space_from_dicom_series(totalseg / "ct_dicom")
    half = Space(
        shape=(10, *space.shape[1:]),
        origin=space.origin,
        spacing=space.spacing,
        x_orientation=space.x_orientation,
        y_orientation=space.y_orientation,
        z_orientation=space.z_orientation,
    )
    data = np.zeros((10, 512, 512), np.uint8)
    data[2, 5:9, 5:9] = 1
    small = tmp_path / "small.msk"
    medmask.save_mask(SegmentationMask(data, {"liver": 1}, half), small)
    result = run("convert", small, out, "--series", totalseg / "ct_dicom")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"medmask convert: error: {small}: not on the grid of --series {totalseg / 'ct_dicom'}, "
        "nor on a flip or axis permutation of it (those are aligned for you): it differs in "
        "shape (10, 512, 512) (the series' (20, 512, 512))"
    ), result.stderr
    assert lines[0].endswith("Resample it onto the series grid first.")
    assert "align_to" not in lines[0]
    assert "to_dicom_seg" not in lines[0]
    assert not out.exists()
