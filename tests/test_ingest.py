"""``medmask.dask.ingest`` on the real TotalSegmentator data: a folder of 117 organ files, a
label map with its label table and a DICOM SEG, locally and S3 to S3 (moto), on threads and on
a 2-process ``LocalCluster``: outputs unpack to the inputs, reruns skip and write nothing,
failures are rows (issue 20)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import medmask
from medmask.dask import ingest
from medmask.ingest import INGEST_ATTRIBUTE, REPORT_COLUMNS, case_name
from medmask.interop.dicom import MissingUIDWarning, from_dicom_seg, to_dicom_seg
from medmask.interop.folders import unpack
from medmask.interop.nifti import read_nifti
from servers import BucketFixture


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``folder1/`` (the 117 organ files), ``map1.nii.gz`` with ``map1.json`` beside it, and
    ``seg1.dcm`` (the CT's labelmap as a DICOM SEG made by medmask)."""
    root = tmp_path_factory.mktemp("inputs")
    totalseg = shared_data / "totalseg"
    shutil.copytree(totalseg / "organs", root / "folder1")
    shutil.copy(totalseg / "multilabel_42.nii.gz", root / "map1.nii.gz")
    shutil.copy(totalseg / "labels_total.json", root / "map1.json")
    array, space = read_nifti(totalseg / "ct_dicom_seg.nii.gz")
    names = {v: n for n, v in json.loads((totalseg / "labels_total.json").read_text()).items()}
    present = [int(v) for v in np.unique(array) if v]
    mask = medmask.SegmentationMask(array, {names[v]: v for v in present}, space)
    with pytest.warns(MissingUIDWarning):  # the shared CT is anonymized
        to_dicom_seg(mask, totalseg / "ct_dicom", root / "seg1.dcm")
    return root


def _affine(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).affine)


def _check_outputs(inputs: Path, out: Path) -> None:
    """Every output holds its input's voxels, values, names and affine."""
    unpacked = out.parent / f"{out.name}-unpacked"
    unpack(out / "folder1.mska", unpacked)
    for source in sorted((inputs / "folder1").iterdir()):
        restored = unpacked / source.name
        assert np.array_equal(
            np.asarray(nib.load(restored).dataobj), np.asarray(nib.load(source).dataobj)
        ), source.name
        assert np.allclose(_affine(restored), _affine(source), atol=1e-5), source.name
    shutil.rmtree(unpacked)
    table = json.loads((inputs / "map1.json").read_text())
    label_map = medmask.load_mask(out / "map1.msk")
    array, _ = read_nifti(inputs / "map1.nii.gz")
    assert np.array_equal(label_map.data, array)
    assert dict(label_map.mapping.items()) == table
    assert np.allclose(label_map.affine, _affine(inputs / "map1.nii.gz"), atol=1e-5)
    seg = medmask.load_mask(out / "seg1.msk")
    expected = from_dicom_seg(inputs / "seg1.dcm")
    assert np.array_equal(seg.data, expected.data)
    assert dict(seg.mapping.items()) == dict(expected.mapping.items())
    assert np.allclose(seg.affine, expected.affine)


def _rows(report: pd.DataFrame) -> dict[str, dict[str, Any]]:
    assert list(report.columns) == list(REPORT_COLUMNS)
    return {row["case"]: row for row in report.to_dict("records")}


def test_case_names_drop_the_input_suffixes() -> None:
    assert case_name("s3://b/cases/p001/") == "p001"
    assert case_name("/data/p002.nii.gz") == "p002"
    assert case_name("p003.NII") == "p003"
    assert case_name("s3://b/seg/p004.dcm") == "p004"
    assert case_name("p005.v2.nii.gz") == "p005.v2"


def test_local_ingest_converts_verifies_and_a_rerun_skips(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = ingest(str(inputs / "*"), out, progress=False)
    rows = _rows(report)
    assert sorted(rows) == ["folder1", "map1", "seg1"]  # map1.json is map1's table, no case
    assert {r["status"] for r in rows.values()} == {"done"}, report["error"].tolist()
    assert rows["folder1"]["output"] == str(out / "folder1.mska")
    assert rows["map1"]["output"] == str(out / "map1.msk")
    assert rows["folder1"]["structures"] == 117
    assert rows["folder1"]["input_bytes"] == sum(
        p.stat().st_size for p in (inputs / "folder1").iterdir()
    )
    for row in rows.values():
        assert row["output_bytes"] == Path(row["output"]).stat().st_size
        assert row["seconds"] >= 0
    _check_outputs(inputs, out)
    with medmask.MaskArchive(out / "folder1.mska") as archive:
        record = archive["layer_0"].descriptor.attributes[INGEST_ATTRIBUTE]
    assert record["source"] == str(inputs / "folder1")
    assert record["counts"]["liver"] == int(
        np.count_nonzero(nib.load(inputs / "folder1" / "liver.nii.gz").dataobj)
    )

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = ingest(str(inputs / "*"), out, progress=False)
    assert set(again["status"]) == {"skipped"}
    assert again["structures"].tolist() == report["structures"].tolist()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_overwrite_redoes_and_a_changed_input_is_not_skipped(inputs: Path, tmp_path: Path) -> None:
    source = tmp_path / "in"
    shutil.copytree(inputs / "folder1", source / "case")
    out = tmp_path / "out"
    assert ingest(str(source / "*"), out, progress=False)["status"].tolist() == ["done"]
    assert ingest(str(source / "*"), out, progress=False)["status"].tolist() == ["skipped"]
    assert ingest([source / "case"], out, overwrite=True, progress=False)["status"].tolist() == [
        "done"
    ]
    (source / "case" / "liver.nii.gz").unlink()  # the input changed since
    changed = ingest([source / "case"], out, progress=False)
    assert changed["status"].tolist() == ["error"]
    assert "was ingested from another input" in changed["error"][0]
    assert "pass overwrite=True to redo it" in changed["error"][0]
    redone = ingest([source / "case"], out, overwrite=True, progress=False)
    assert redone["status"].tolist() == ["done"]
    assert redone["structures"].tolist() == [116]


def test_failures_are_rows_and_the_rest_succeed(inputs: Path, tmp_path: Path) -> None:
    source = tmp_path / "in"
    shutil.copytree(inputs / "folder1", source / "good")
    (source / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    off = source / "offgrid"
    off.mkdir()
    for name in ("liver.nii.gz", "spleen.nii.gz", "aorta.nii.gz"):
        shutil.copy(inputs / "folder1" / name, off / name)
    img = nib.load(off / "aorta.nii.gz")
    moved = img.affine.copy()
    moved[0, 3] += 12.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), moved), off / "aorta.nii.gz")
    shutil.copytree(inputs / "folder1", source / "twice")
    shutil.copy(inputs / "map1.nii.gz", source / "twice.nii.gz")
    (source / "notes.txt").write_text("not a mask")
    out = tmp_path / "out"
    report = ingest(str(source / "*"), out, progress=False)
    assert len(report) == 6
    rows = _rows(report)
    assert rows["good"]["status"] == "done"
    assert (out / "good.mska").is_file()
    assert rows["corrupt"]["status"] == "error"
    assert "corrupt.nii.gz" in rows["corrupt"]["error"]
    assert rows["offgrid"]["status"] == "error"
    assert rows["offgrid"]["error"].startswith("SpaceMismatchError: ")
    assert "aorta.nii.gz" in rows["offgrid"]["error"]
    assert rows["notes.txt"]["status"] == "error"
    twice = report[report["case"] == "twice"]
    assert twice["status"].tolist() == ["error", "error"]
    assert all("comes from 2 sources" in e for e in twice["error"])
    assert sorted(p.name for p in out.iterdir()) == ["good.mska"]  # no partial outputs
    rerun = _rows(ingest(str(source / "*"), out, progress=False))
    assert rerun["good"]["status"] == "skipped"
    assert rerun["corrupt"]["status"] == "error"


def test_an_output_not_made_by_ingest_is_kept(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "map1.msk").write_bytes(b"someone else's file")
    report = ingest([inputs / "map1.nii.gz"], out, progress=False)
    assert report["status"].tolist() == ["error"]
    assert "exists and is not a verified output" in report["error"][0]
    assert (out / "map1.msk").read_bytes() == b"someone else's file"


def test_a_glob_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(medmask.MaskFileNotFoundError, match=r"no sources match .*nothing\*"):
        ingest(str(tmp_path / "nothing*"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_labels_table_names_a_label_map(inputs: Path, shared_data: Path, tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(inputs / "map1.nii.gz", source / "case7.nii.gz")  # no table beside it
    plain = ingest([source / "case7.nii.gz"], tmp_path / "a", progress=False)
    assert plain["status"].tolist() == ["done"]
    assert "label_1" in dict(medmask.load_mask(tmp_path / "a" / "case7.msk").mapping.items())
    table = shared_data / "totalseg" / "labels_total.json"
    named = ingest([source / "case7.nii.gz"], tmp_path / "b", labels=table, progress=False)
    assert named["status"].tolist() == ["done"]
    assert medmask.load_mask(tmp_path / "b" / "case7.msk").mapping["liver"] == 5


def _upload(bucket: BucketFixture, inputs: Path) -> None:
    for path in sorted(inputs.rglob("*")):
        if path.is_file():
            bucket.fs.pipe_file(bucket.path(f"in/{path.relative_to(inputs)}"), path.read_bytes())
    bucket.fs.invalidate_cache()


def _download(bucket: BucketFixture, keys: list[str], folder: Path) -> None:
    folder.mkdir()
    for key in keys:
        (folder / key.rsplit("/", 1)[-1]).write_bytes(bucket.fs.cat_file(bucket.path(key)))


def test_s3_to_s3_ingest_and_a_rerun_sends_no_put(
    s3: BucketFixture, inputs: Path, tmp_path: Path
) -> None:
    _upload(s3, inputs)
    options = s3.storage_options
    report = ingest(s3.url("in/*"), s3.url("out"), storage_options=options, progress=False)
    rows = _rows(report)
    assert sorted(rows) == ["folder1", "map1", "seg1"]
    assert {r["status"] for r in rows.values()} == {"done"}, report["error"].tolist()
    assert rows["folder1"]["output"] == s3.url("out/folder1.mska")
    keys = ["out/folder1.mska", "out/map1.msk", "out/seg1.msk"]
    _download(s3, keys, tmp_path / "out")
    _check_outputs(inputs, tmp_path / "out")

    s3.fs.invalidate_cache()
    s3.log.clear()
    again = ingest(s3.url("in/*"), s3.url("out"), storage_options=options, progress=False)
    assert set(again["status"]) == {"skipped"}
    assert s3.log.count("PUT") == 0, s3.log.summary()
    assert s3.log.count("POST") == 0, s3.log.summary()
    assert s3.log.count("DELETE") == 0, s3.log.summary()


def test_s3_sources_to_another_bucket_options(
    s3: BucketFixture, inputs: Path, tmp_path: Path
) -> None:
    _upload(s3, inputs)
    report = ingest(
        [s3.url("in/folder1"), s3.url("in/map1.nii.gz")],
        tmp_path / "out",
        storage_options=s3.storage_options,
        dest_storage_options=None,
        progress=False,
    )
    assert report["status"].tolist() == ["done", "done"], report["error"].tolist()
    assert report["output"].tolist() == [
        str(tmp_path / "out" / "folder1.mska"),
        str(tmp_path / "out" / "map1.msk"),
    ]


def test_ingest_on_a_two_worker_local_cluster(
    cluster: Any, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in"
    for i in range(3):
        shutil.copytree(inputs / "folder1", source / f"p{i}")
        shutil.copy(inputs / "map1.nii.gz", source / f"m{i}.nii.gz")
    out = tmp_path / "out"
    report = ingest(str(source / "*"), out, client=cluster, max_in_flight=2, progress=True)
    assert sorted(report["case"]) == ["m0", "m1", "m2", "p0", "p1", "p2"]
    assert set(report["status"]) == {"done"}, report["error"].tolist()
    assert "dashboard" in capsys.readouterr().err
    for i in range(3):
        with medmask.MaskArchive(out / f"p{i}.mska") as archive:
            assert len(archive.structures()) == 117
    again = ingest(str(source / "*"), out, client=cluster, progress=False)
    assert set(again["status"]) == {"skipped"}
