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
from bounded import assert_one_line_error
from medmask import MaskArchive, SegmentationMask
from medmask.geometry import spaces_match
from medmask.interop.nifti import to_nifti

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1"
COMMANDS = ["info", "ls", "convert", "pack", "unpack", "verify", "stats", "ingest", "demo"]


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
        (["ingest", "a", "out", "--workers", "0"], "--workers must be at least 1"),
        (["ingest", "a"], "required: DEST"),
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
    assert_one_line_error(run("info", bad), "bad.msk")
    assert_one_line_error(run("info", tmp_path / "missing.msk"), "missing.msk")
    junk = tmp_path / "junk.mska"
    junk.write_bytes(b"\x89MSA\r\n\x1a\n" + bytes(100))
    assert_one_line_error(run("ls", junk), "junk.mska")
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
    assert_one_line_error(
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
    # the series has no Study/Series UIDs: one line per warning, no source line, no path of ours
    warned = result.stderr.strip().splitlines()
    assert warned, result.stderr
    for line in warned:
        assert line.startswith("medmask: warning: "), result.stderr
        assert "Warning" not in line, result.stderr
        assert ".py:" not in line, result.stderr
    back = medmask.load_mask(out)
    nifti = medmask.from_nifti(totalseg / "ct_dicom_seg.nii.gz")
    assert back.shape == nifti.shape
    assert int(back.to_binary().sum()) == int(nifti.to_binary().sum())
    assert_usage_error(run("convert", totalseg / "ct_dicom_seg.nii.gz", out), "--series")


def test_convert_corrupt_input(msk: Path, tmp_path: Path) -> None:
    assert_one_line_error(run("convert", corrupt(msk, tmp_path), tmp_path / "o.msk"), "corrupt.msk")
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
    assert_one_line_error(run("pack", folder, tmp_path / "case.mska"), "exists")
    for wrong, said in (
        ("case.msk", "'.msk'"),
        ("case", "no suffix"),
        ("case.nii.gz", "'.nii.gz'"),
    ):
        assert_one_line_error(
            run("pack", folder, tmp_path / wrong),
            f"{tmp_path / wrong}: an archive's name must end in .mska. Got {said}; nothing was "
            "written.",
        )
        assert not (tmp_path / wrong).exists()
    unpacked = run("unpack", tmp_path / "case.mska", tmp_path / "out")
    assert unpacked.returncode == 0, unpacked.stderr
    for name in ("liver", "spleen"):
        a = nib.load(folder / f"{name}.nii.gz")
        b = nib.load(tmp_path / "out" / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    assert_one_line_error(run("unpack", tmp_path / "case.mska", tmp_path / "out"), "exist")


def test_pack_and_unpack_corrupt_input(tmp_path: Path, mska: Path) -> None:
    folder = tmp_path / "organs"
    folder.mkdir()
    (folder / "liver.nii.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    assert_one_line_error(run("pack", folder, tmp_path / "x.mska"), "liver.nii.gz")
    assert not (tmp_path / "x.mska").exists()
    assert_one_line_error(run("unpack", corrupt(mska, tmp_path), tmp_path / "o"), "corrupt.mska")
    assert not (tmp_path / "o").exists()


def _save_nifti(array: Any, affine: Any, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_data_dtype(array.dtype)
    nib.save(image, path)


def test_pack_keeps_multi_valued_files_and_unpack_gives_them_back(
    shared_data: Path, tmp_path: Path
) -> None:
    image = nib.load(shared_data / "totalseg" / "multilabel_42.nii.gz")
    data, affine = np.asarray(image.dataobj), image.affine
    folder = tmp_path / "case"
    folder.mkdir()
    kidney = np.select([data == 2, data == 3, data == 4], [1, 2, 4], 0).astype(np.uint8)
    files = {
        "vertebrae": np.where((data >= 26) & (data <= 50), data, 0).astype(np.uint8),
        "kidney": kidney,
        "liver": (data == 5).astype(np.uint8),
        "colon255": np.where(data == 20, 255, 0).astype(np.uint8),
        "total": data,
    }
    for name, array in files.items():
        _save_nifti(array, affine, folder / f"{name}.nii.gz")
    out = tmp_path / "case.mska"
    packed = run("pack", folder, out, "--labels", shared_data / "totalseg" / "labels_total.json")
    assert packed.returncode == 0, packed.stderr
    assert "1 layer(s) and 4 file(s) kept whole" in packed.stdout
    verified = run("verify", out)
    assert verified.returncode == 0, verified.stdout
    unpacked = run("unpack", out, tmp_path / "out")
    assert unpacked.returncode == 0, unpacked.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{n}.nii.gz" for n in files
    )
    for name, array in files.items():
        back = nib.load(tmp_path / "out" / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(back.dataobj), array, err_msg=name)
        np.testing.assert_allclose(back.affine, affine, atol=1e-5)


def test_pack_names_files_on_another_grid_and_can_leave_them_out(tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    a = np.zeros((6, 5, 4), np.uint8)
    a[1:3, 1:3, 1:3] = 1
    for name in ("liver", "spleen", "stomach"):
        _save_nifti(a, np.eye(4), folder / f"{name}.nii.gz")
    _save_nifti(
        np.zeros((12, 10, 8), np.uint8), np.diag([0.5, 0.5, 0.5, 1]), folder / "lung.nii.gz"
    )
    out = tmp_path / "x.mska"
    assert_one_line_error(run("pack", folder, out), "lung.nii.gz: shape (8, 10, 12) != (4, 5, 6)")
    assert not out.exists()
    skipped = run("pack", folder, out, "--skip-mismatched", "--exclude", "stom*")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stderr.splitlines() == [
        "medmask pack: left out stomach.nii.gz: matches the exclude pattern 'stom*'",
        "medmask pack: left out lung.nii.gz: not on the grid of liver.nii.gz: shape (8, 10, 12) "
        "!= (4, 5, 6)",
    ]
    assert "2 structures in 2 layer(s)" in skipped.stdout  # the same voxels: they overlap
    with MaskArchive(out) as archive:
        assert sorted(archive.structures()) == ["liver", "spleen"]
    excluded = run("pack", folder, out, "--overwrite", "--exclude", "lung*", "--exclude", "liv*")
    assert excluded.returncode == 0, excluded.stderr
    assert excluded.stderr.count("left out") == 2
    with MaskArchive(out) as archive:
        assert sorted(archive.structures()) == ["spleen", "stomach"]


def test_unpack_overwrite_refuses_a_folder_in_the_way(mska: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "liver.nii.gz").mkdir(parents=True)
    (out / "liver.nii.gz" / "precious.txt").write_text("mine")
    result = run("unpack", mska, out, "--overwrite")
    assert_one_line_error(
        result, "liver.nii.gz exist but are not regular files", "Nothing was written"
    )
    assert "Pass --overwrite" not in result.stderr
    assert (out / "liver.nii.gz" / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["liver.nii.gz"]


# --- every command: errors and warnings are one line -----------------------------------------


def test_every_command_reports_a_data_error_in_one_line(
    msk: Path, mska: Path, tmp_path: Path
) -> None:
    bad_msk, bad_mska = corrupt(msk, tmp_path), corrupt(mska, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    truncated = tmp_path / "truncated.mska"
    truncated.write_bytes(mska.read_bytes()[:40])
    cases = {
        "info": (["info", tmp_path / "missing.msk"], "missing.msk"),
        "ls": (["ls", truncated], "truncated.mska"),
        "convert": (["convert", bad_msk, tmp_path / "o.msk"], "corrupt.msk"),
        "pack": (["pack", empty, tmp_path / "o.mska"], "no .nii or .nii.gz files"),
        "unpack": (["unpack", bad_mska, tmp_path / "o"], "corrupt.mska"),
        "stats": (["stats", tmp_path / "nothing*.msk"], "no files match"),
        "ingest": (["ingest", tmp_path / "nothing*", tmp_path / "o"], "no sources match"),
        "demo": (["demo", a_file], "not a folder"),
    }
    assert set(cases) | {"verify"} == set(COMMANDS)
    for args, fragment in cases.values():
        assert_one_line_error(run(*args), fragment)
    verified = run("verify", bad_msk)  # verify reports per file on stdout, sums up on stderr
    assert verified.returncode == 1
    assert "FAILED" in verified.stdout
    assert len(verified.stderr.strip().splitlines()) == 1
    assert "Traceback" not in verified.stderr + verified.stdout


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "error", [RuntimeError("boom\n  in two lines"), MemoryError(), TypeError("x")]
)
def test_unexpected_errors_are_one_line_and_the_traceback_needs_debug(
    command: str,
    error: Exception,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from medmask import cli

    def broken(args: Any) -> int:
        raise error

    monkeypatch.setattr(cli, f"cmd_{command}", broken)
    argv = {
        "info": ["info", "x.msk"],
        "ls": ["ls", "x.mska"],
        "convert": ["convert", "a.msk", "b.msk"],
        "pack": ["pack", "folder", "o.mska"],
        "unpack": ["unpack", "a.mska", "out"],
        "verify": ["verify", "a.msk"],
        "stats": ["stats", "a.msk"],
        "ingest": ["ingest", "a", "out"],
        "demo": ["demo", "d"],
    }[command]
    assert cli.main(argv) == 3
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"medmask {command}: internal error: {type(error).__name__}")
    assert "Traceback" not in captured.err
    assert "--debug" in lines[0]
    with pytest.raises(type(error)):
        cli.main(["--debug", *argv])


# A command that warns. The CLI's warning hook and stderr belong to the whole process: in the
# pytest process, threads and sockets left by earlier tests (server connections, sockets that
# the garbage collector closes late) may warn or write to stderr while main runs, so the lines
# the CLI writes are checked in a process of its own.
_WARNS = """
import warnings

from medmask.archive import RecoveryWarning


def warns(args):
    warnings.warn("case.mska: opened generation 3;\\n the newest is damaged", RecoveryWarning)
    warnings.warn("second", UserWarning)
    return 0
"""


def test_warnings_are_one_line_unless_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from medmask import cli
    from medmask.archive import RecoveryWarning

    def ls(*options: str) -> subprocess.CompletedProcess[str]:
        script = f"{_WARNS}\nimport sys\nfrom medmask import cli\ncli.cmd_ls = warns\n"
        script += "sys.exit(cli.main(sys.argv[1:]))\n"
        return subprocess.run(
            [sys.executable, "-c", script, "ls", "x.mska", *options],
            capture_output=True,
            text=True,
            timeout=300,
        )

    result = ls()
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "medmask: warning: case.mska: opened generation 3; the newest is damaged",
        "medmask: warning: second",
    ]
    debug = ls("--debug")  # Python's own format: the category, the message as it is
    assert debug.returncode == 0, debug.stderr
    assert "RecoveryWarning: case.mska: opened generation 3;\n the newest is damaged\n" in (
        debug.stderr
    )
    assert "medmask: warning" not in debug.stderr
    # in this process: main puts Python's hook back, and --debug leaves warnings to Python
    command: dict[str, Any] = {}
    exec(_WARNS, command)
    monkeypatch.setattr(cli, "cmd_ls", command["warns"])
    assert cli.main(["ls", "x.mska"]) == 0
    assert warnings.showwarning is not cli._show_warning  # restored after main
    with pytest.warns(UserWarning, match="newest is damaged|second") as shown:
        assert cli.main(["ls", "x.mska", "--debug"]) == 0
    assert [(w.category, " ".join(str(w.message).split())) for w in shown] == [
        (RecoveryWarning, "case.mska: opened generation 3; the newest is damaged"),
        (UserWarning, "second"),
    ]
    assert warnings.showwarning is not cli._show_warning


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


# --- ingest -----------------------------------------------------------------------------------


def test_ingest(shared_data: Path, tmp_path: Path) -> None:
    import pandas as pd

    source = tmp_path / "in"
    (source / "case1").mkdir(parents=True)
    organs = shared_data / "totalseg" / "organs"
    for name in ("liver.nii.gz", "spleen.nii.gz", "kidney_left.nii.gz"):
        (source / "case1" / name).write_bytes((organs / name).read_bytes())
    (source / "case2.nii.gz").write_bytes(
        (shared_data / "totalseg" / "multilabel_42.nii.gz").read_bytes()
    )
    (source / "broken.nii.gz").write_bytes(b"not a nifti file")
    out, report = tmp_path / "out", tmp_path / "report.csv"
    table = shared_data / "totalseg" / "labels_total.json"
    result = run("ingest", source / "*", out, "--labels", table, "--report", report, "--workers", 2)
    assert result.returncode == 1, result.stderr  # one case failed
    assert "3 case(s): 2 done, 0 skipped, 1 failed" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("medmask ingest: error: broken: FormatError")
    rows = pd.read_csv(report)
    assert list(rows.columns) == [
        "case", "source", "output", "input_bytes", "output_bytes", "seconds", "structures",
        "status", "error",
    ]  # fmt: skip
    assert dict(zip(rows["case"], rows["status"], strict=True)) == {
        "broken": "error", "case1": "done", "case2": "done"
    }  # fmt: skip
    assert MaskArchive(out / "case1.mska").structures()["liver"] == ("layer_0", 2)  # 1, 2, 3
    assert medmask.load_mask(out / "case2.msk").mapping["liver"] == 5
    (source / "broken.nii.gz").unlink()
    again = run("ingest", source / "*", out, "--labels", table)
    assert again.returncode == 0, again.stderr
    assert "2 case(s): 0 done, 2 skipped, 0 failed" in again.stdout
    redo = run("ingest", source / "case1", out, "--overwrite")
    assert redo.returncode == 0, redo.stderr
    assert redo.stdout.startswith("done ")


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
    assert_one_line_error(run("demo", other, "--shape", "48", "80", "80"), "not empty")
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(run("demo", a_file), "not a folder")
