"""The ``medmask`` command line, run as a user runs it (a subprocess): every command with a
good run, a bad argument (exit 2) and a corrupt input (exit 1, one line, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask import MaskArchive, SegmentationMask
from medmask.archive import spaces_match
from medmask.interop.nifti import to_nifti

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1"
COMMANDS = ["info", "ls", "convert", "pack", "unpack", "verify", "stats", "demo"]


def run(*args: Any, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "medmask", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def assert_data_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("medmask ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_usage_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr, result.stderr


@pytest.fixture
def space() -> Space:
    return Space(
        shape=(12, 20, 24),
        origin=(-50.0, 20.0, 100.0),
        spacing=(2.5, 0.8, 0.8),
        x_orientation=(0.0, 0.0, 1.0),
        y_orientation=(0.0, -1.0, 0.0),
        z_orientation=(1.0, 0.0, 0.0),
    )


@pytest.fixture
def mask(space: Space) -> SegmentationMask:
    data = np.zeros((12, 20, 24), np.uint8)
    data[2:8, 3:12, 4:15] = 1
    data[5:11, 12:18, 10:20] = 2
    return SegmentationMask(data, {"liver": 1, "spleen": 2}, space)


@pytest.fixture
def msk(mask: SegmentationMask, tmp_path: Path) -> Path:
    path = tmp_path / "case.msk"
    medmask.save_mask(mask, path)
    return path


@pytest.fixture
def mska(mask: SegmentationMask, tmp_path: Path) -> Path:
    path = tmp_path / "case.mska"
    lesion = np.zeros(mask.shape, bool)
    lesion[4:7, 8:14, 8:12] = True
    with MaskArchive(path, "w", space=mask.space) as archive:
        archive.add_segmask(mask, "organs")
        archive.add_structures({"lesion": lesion})
    return path


def corrupt(path: Path, tmp_path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last chunk
    out = tmp_path / f"corrupt{''.join(path.suffixes)}"
    out.write_bytes(bytes(data))
    return out


# --- every command: help, bad arguments -------------------------------------------------------


def test_help_of_every_command() -> None:
    top = run("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        result = run(command, "--help")
        assert result.returncode == 0, result.stderr
        assert f"usage: medmask {command}" in result.stdout


def test_console_script_and_version() -> None:
    script = Path(sys.executable).with_name("medmask")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"medmask {medmask.__version__}"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "usage: medmask"),
        (["frobnicate"], "invalid choice"),
        (["info"], "the following arguments are required: source"),
        (["ls"], "the following arguments are required: source"),
        (["convert", "a.msk"], "required: output"),
        (["pack", "folder"], "required: output"),
        (["unpack", "a.mska"], "required: folder"),
        (["verify"], "required: sources"),
        (["stats", "a.msk", "--workers", "0"], "--workers must be at least 1"),
        (["stats", "a.msk", "--workers", "many"], "invalid int value"),
        (["demo", "--shape", "10", "20"], "expected 3 arguments"),
        (["info", "x.msk", "-S", "novalue"], "expected KEY=VALUE"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], fragment: str) -> None:
    assert_usage_error(run(*args), fragment)


# --- info and ls ------------------------------------------------------------------------------


def test_info_msk(msk: Path) -> None:
    result = run("info", msk)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "medmask .msk" in out
    assert "12 x 20 x 24 (z, y, x)" in out
    assert "S A L" in out  # axis directions as LPS letters
    assert "liver" in out
    assert "594" in out  # liver voxels: 6 * 9 * 11
    as_json = json.loads(run("info", msk, "--json").stdout)
    labels = {r["structure"]: r for r in as_json["members"][0]["labels"]}
    assert labels["liver"]["voxels"] == 594
    assert labels["liver"]["volume_ml"] == pytest.approx(594 * 2.5 * 0.8 * 0.8 / 1000, abs=1e-3)
    assert labels["spleen"]["bbox"] == [[5, 10], [12, 17], [10, 19]]
    assert as_json["space"]["spacing"] == [2.5, 0.8, 0.8]


def test_info_archive_nifti_and_legacy(mska: Path, mask: SegmentationMask, tmp_path: Path) -> None:
    out = run("info", mska).stdout
    assert "member 'organs'" in out
    assert "lesion" in out
    to_nifti(mask, tmp_path / "m.nii.gz")
    nifti = run("info", tmp_path / "m.nii.gz")
    assert nifti.returncode == 0, nifti.stderr
    assert "NIfTI" in nifti.stdout
    assert "label_2" in nifti.stdout
    to_nifti(mask, tmp_path / "m.nii")
    for name in ("m.nii", "m.nii.gz"):  # without a suffix: told apart by their first bytes
        unnamed = tmp_path / name.replace(".", "_")
        unnamed.write_bytes((tmp_path / name).read_bytes())
        plain = run("info", unnamed)
        assert plain.returncode == 0, plain.stderr
        assert "NIfTI" in plain.stdout
    legacy = run("info", LEGACY / "archive_mixed.mska")
    assert "medmask 0.1 .mska (read-only)" in legacy.stdout
    assert "portal_vein" in legacy.stdout


def test_info_on_s3_reads_only_the_head(s3: Any, msk: Path) -> None:
    s3.fs.put_file(str(msk), s3.path("case.msk"))
    s3.log.clear()
    options = [f"-S{k}={v}" for k, v in s3.storage_options.items()]
    result = run("info", s3.url("case.msk"), *options)
    assert result.returncode == 0, result.stderr
    assert "liver" in result.stdout
    assert "594" in result.stdout
    gets = s3.log.gets("case.msk")
    assert len(gets) == 1, s3.log.summary()


def test_info_and_ls_of_corrupt_or_missing_input(tmp_path: Path, msk: Path) -> None:
    bad = tmp_path / "bad.msk"
    bad.write_bytes(msk.read_bytes()[:30])
    assert_data_error(run("info", bad), "bad.msk")
    assert_data_error(run("info", tmp_path / "missing.msk"), "missing.msk")
    junk = tmp_path / "junk.mska"
    junk.write_bytes(b"\x89MSA\r\n\x1a\n" + bytes(100))
    assert_data_error(run("ls", junk), "junk.mska")
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    assert_usage_error(run("info", unknown), "cannot tell the format")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    for args in (["--debug", "info", "missing.msk"], ["info", "missing.msk", "--debug"]):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 1
        assert "Traceback" in result.stderr


def test_ls(mska: Path, msk: Path) -> None:
    result = run("ls", mska)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].startswith("organs\t2 labels")
    long = run("ls", "-l", mska).stdout
    assert "layer_0\t1 label\t" in long
    assert "  lesion\t1\t72 voxels" in long
    assert run("ls", msk).stdout.split() == ["liver", "spleen"]


# --- convert ----------------------------------------------------------------------------------


def test_convert_nifti_msk_nifti_exact(mask: SegmentationMask, tmp_path: Path) -> None:
    to_nifti(mask, tmp_path / "in.nii.gz")
    table = tmp_path / "labels.json"
    table.write_text(json.dumps({"liver": 1, "spleen": 2}))
    result = run("convert", tmp_path / "in.nii.gz", tmp_path / "m.msk", "--labels", table)
    assert result.returncode == 0, result.stderr
    stored = medmask.load_mask(tmp_path / "m.msk")
    np.testing.assert_array_equal(stored.data, mask.data)
    assert stored.mapping == mask.mapping
    assert spaces_match(stored.space, mask.space) is None  # NIfTI affines are float32
    assert run("convert", tmp_path / "m.msk", tmp_path / "out.nii.gz").returncode == 0
    a, b = nib.load(tmp_path / "in.nii.gz"), nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_array_equal(a.affine, b.affine)
    assert_data_error(
        run("convert", tmp_path / "m.msk", tmp_path / "out.nii.gz"), "exists", "--overwrite"
    )
    assert (
        run("convert", tmp_path / "m.msk", tmp_path / "out.nii.gz", "--overwrite").returncode == 0
    )


def test_convert_archives(mska: Path, tmp_path: Path) -> None:
    several = run("convert", mska, tmp_path / "x.nii.gz")
    assert_usage_error(several, "--member NAME")
    assert not (tmp_path / "x.nii.gz").exists()
    one = run("convert", mska, tmp_path / "organs.msk", "--member", "organs")
    assert one.returncode == 0, one.stderr
    with MaskArchive(mska) as archive:
        assert medmask.load_mask(tmp_path / "organs.msk") == archive.load_segmask("organs")
    copy = run("convert", mska, "memory://out/copy.mska")
    assert copy.returncode == 0, copy.stderr  # (another process: its memory fs is its own)
    assert_usage_error(run("convert", mska, tmp_path / "x.tiff"), "name the output")


def test_convert_upgrades_medmask_0_1_files(tmp_path: Path) -> None:
    result = run("convert", LEGACY / "labels_uint16.msk", tmp_path / "new.msk")
    assert result.returncode == 0, result.stderr
    assert medmask.load_mask(tmp_path / "new.msk") == medmask.load_mask(
        LEGACY / "labels_uint16.msk"
    )
    result = run("convert", LEGACY / "archive_relocated.mska", tmp_path / "new.mska")
    assert result.returncode == 0, result.stderr
    with (
        MaskArchive(tmp_path / "new.mska") as new,
        MaskArchive(LEGACY / "archive_relocated.mska") as old,
    ):
        assert not new.is_legacy
        assert new.all_names() == old.all_names()
        for name in old.all_names():
            assert new.load_segmask(name) == old.load_segmask(name)


def test_convert_nifti_to_dicom_seg_aligns_to_the_series(shared_data: Path, tmp_path: Path) -> None:
    totalseg = shared_data / "totalseg"
    out = tmp_path / "seg.dcm"
    result = run(
        "convert", totalseg / "ct_dicom_seg.nii.gz", out, "--series", totalseg / "ct_dicom"
    )
    assert result.returncode == 0, result.stderr
    back = medmask.load_mask(out)
    nifti = medmask.from_nifti(totalseg / "ct_dicom_seg.nii.gz")
    assert back.shape == nifti.shape
    assert int(back.to_binary().sum()) == int(nifti.to_binary().sum())
    assert_usage_error(run("convert", totalseg / "ct_dicom_seg.nii.gz", out), "--series")


def test_convert_corrupt_input(msk: Path, tmp_path: Path) -> None:
    assert_data_error(run("convert", corrupt(msk, tmp_path), tmp_path / "o.msk"), "corrupt.msk")
    assert not (tmp_path / "o.msk").exists()


# --- pack, unpack -----------------------------------------------------------------------------


def test_pack_and_unpack(mask: SegmentationMask, tmp_path: Path) -> None:
    folder = tmp_path / "organs"
    folder.mkdir()
    for name in ("liver", "spleen"):
        binary = SegmentationMask(mask.get_binary_mask_by_names(name), {name: 1}, mask.space)
        to_nifti(binary, folder / f"{name}.nii.gz")
    table = tmp_path / "labels.json"
    table.write_text(json.dumps({"liver": 5, "spleen": 1}))
    packed = run("pack", folder, tmp_path / "case.mska", "--labels", table)
    assert packed.returncode == 0, packed.stderr
    assert "2 structures in 1 layer(s)" in packed.stdout
    with MaskArchive(tmp_path / "case.mska") as archive:
        assert archive.structures() == {"liver": ("layer_0", 5), "spleen": ("layer_0", 1)}
    assert_data_error(run("pack", folder, tmp_path / "case.mska"), "exists")
    unpacked = run("unpack", tmp_path / "case.mska", tmp_path / "out")
    assert unpacked.returncode == 0, unpacked.stderr
    for name in ("liver", "spleen"):
        a = nib.load(folder / f"{name}.nii.gz")
        b = nib.load(tmp_path / "out" / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert_data_error(run("unpack", tmp_path / "case.mska", tmp_path / "out"), "exist")


def test_pack_and_unpack_corrupt_input(tmp_path: Path, mska: Path) -> None:
    folder = tmp_path / "organs"
    folder.mkdir()
    (folder / "liver.nii.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    assert_data_error(run("pack", folder, tmp_path / "x.mska"), "liver.nii.gz")
    assert not (tmp_path / "x.mska").exists()
    assert_data_error(run("unpack", corrupt(mska, tmp_path), tmp_path / "o"), "corrupt.mska")
    assert not (tmp_path / "o").exists()


# --- verify, stats ----------------------------------------------------------------------------


def test_verify(msk: Path, mska: Path, tmp_path: Path) -> None:
    good = run("verify", msk, mska, LEGACY / "binary_bool.msk")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count("ok") == 3
    bad = run("verify", msk, corrupt(mska, tmp_path))
    assert bad.returncode == 1
    assert "FAILED" in bad.stdout
    assert "checksum" in bad.stdout
    assert "1 of 2 file(s) failed" in bad.stderr
    assert_usage_error(run("verify", LEGACY.parent / "README.md"), "cannot tell the format")


def test_stats(msk: Path, mska: Path, tmp_path: Path) -> None:
    result = run("stats", msk, mska, "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "liver" in result.stdout
    assert "lesion" in result.stdout
    csv = tmp_path / "stats.csv"
    assert run("stats", str(tmp_path / "*.msk*"), "--csv", csv).returncode == 0
    import pandas as pd

    table = pd.read_csv(csv)
    assert set(table["structure"]) == {"liver", "spleen", "lesion"}
    assert table.loc[table["structure"] == "lesion", "voxels"].item() == 72
    assert list(table.columns[:6]) == [
        "source",
        "member",
        "structure",
        "value",
        "voxels",
        "volume_ml",
    ]


def test_stats_of_corrupt_input(tmp_path: Path, msk: Path) -> None:
    bad = tmp_path / "bad.msk"
    bad.write_bytes(msk.read_bytes()[:40])
    result = run("stats", msk, bad)
    assert result.returncode == 1
    assert "liver" in result.stdout  # the good case is still reported
    assert "bad.msk" in result.stderr
    assert "Traceback" not in result.stderr


# --- demo -------------------------------------------------------------------------------------


def test_demo_small(tmp_path: Path) -> None:
    result = run("demo", tmp_path / "demo", "--shape", "48", "80", "80")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "per-structure .nii.gz" in out
    assert "medmask .mska" in out
    assert "identical" in out
    assert "medmask info" in out
    with MaskArchive(tmp_path / "demo" / "phantom.mska") as archive:
        structures = archive.structures()
    assert "liver" in structures
    assert "lesion" in structures
    assert len(list((tmp_path / "demo" / "nifti").glob("*.nii.gz"))) == len(structures)
    again = run("demo", tmp_path / "demo", "--shape", "48", "80", "80")  # its own folder: reused
    assert again.returncode == 0, again.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert_data_error(run("demo", other, "--shape", "48", "80", "80"), "not empty")
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_data_error(run("demo", a_file), "not a folder")
