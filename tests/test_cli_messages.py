"""The command line's messages (issue 19): Python keyword hints said as flags on every command
that can show one, unknown ``--structures`` names as a did-you-mean error, storage problems
told apart, and no raw file content. Run in-process (``medmask.cli.main``) to stay cheap."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

import medmask
from medmask import MaskArchive, SegmentationMask
from medmask.cli import _CLI_WORDS, _cli_words, main
from servers import BucketFixture

SRC = Path(medmask.__file__).parent
#: Python spellings that must never reach a CLI user.
PYTHON_WORDS = re.compile(r"(?<![\w.-])(overwrite|exclude|skip_mismatched|mapping|structures|"
                          r"storage_options|max_bytes|max_voxels)=")  # fmt: skip


def _mask() -> SegmentationMask:
    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 1:4, 1:5] = 1
    data[0, 0, 0] = 2
    return SegmentationMask(data, {"liver": 1, "spleen": 2})


def _archive(path: Path) -> Path:
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(_mask(), "organs")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"medmask {command}: error: "), lines[0]
    assert not PYTHON_WORDS.search(lines[0]), lines[0]
    return lines[0]


# --- the table ------------------------------------------------------------------------------


def test_every_python_phrase_of_the_table_is_in_a_message() -> None:
    """A phrase no message uses any more is a stale table entry."""
    text = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p.name != "cli.py")
    text = re.sub(r'"\s*\n\s*f?"', "", text)  # implicitly joined string literals
    missing = [python for python, _ in _CLI_WORDS if python not in text]
    assert missing == []


def test_cli_words() -> None:
    assert _cli_words("x: pass overwrite=True to replace them.") == (
        "x: pass --overwrite to replace them."
    )
    assert _cli_words("label_mapping= and mapping=") == "label_mapping= and --labels"
    assert _cli_words("pass credentials with storage_options={'key': KEY, 'secret': SECRET}") == (
        "pass credentials with -S key=KEY -S secret=SECRET"
    )
    assert _cli_words("(raise it with max_bytes= or MEDMASK_MAX_BYTES if ...)") == (
        "(raise it with the environment variable MEDMASK_MAX_BYTES if ...)"
    )


# --- stats: unknown structures --------------------------------------------------------------


def test_stats_unknown_structure_is_an_error_with_the_nearest_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _archive(tmp_path / "case.mska")
    code, out, err = cli(capsys, "stats", path, "--structures", "livr", "--workers", "1")
    assert code == 1
    assert out == ""
    assert one_error_line(err, "stats") == (
        "medmask stats: error: No case has a structure named 'livr'. Did you mean 'liver'? "
        f"(asked for in --structures; {path} has liver, spleen)."
    )
    code, out, err = cli(capsys, "stats", path, "--structures", "liver", "--workers", "1")
    assert (code, err) == (0, "")
    assert "liver" in out


# --- keyword hints as flags, on every command that shows one ---------------------------------


def test_unpack_says_overwrite_once_as_a_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _archive(tmp_path / "case.mska")
    assert cli(capsys, "unpack", path, tmp_path / "out")[0] == 0
    code, _, err = cli(capsys, "unpack", path, tmp_path / "out")
    assert code == 1
    line = one_error_line(err, "unpack")
    assert "pass --overwrite to replace them" in line
    assert line.count("--overwrite") == 1  # not also "Pass --overwrite" appended
    with pytest.raises(medmask.MaskFileExistsError, match=r"pass overwrite=True to replace"):
        medmask.unpack(path, tmp_path / "out")  # Python keeps its keyword


def test_convert_appends_the_overwrite_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    medmask.save_mask(_mask(), tmp_path / "in.msk")
    medmask.save_mask(_mask(), tmp_path / "out.msk")
    code, _, err = cli(capsys, "convert", tmp_path / "in.msk", tmp_path / "out.msk")
    assert code == 1
    line = one_error_line(err, "convert")
    assert line.endswith("Pass --overwrite to replace it.")
    assert line.count("--overwrite") == 1


def _nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_pack_names_its_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    a = np.zeros((6, 5, 4), np.uint8)
    a[1:3, 1:3, 1:3] = 1
    for name in ("liver", "spleen"):
        _nifti(a, np.eye(4), folder / f"{name}.nii.gz")
    _nifti(np.zeros((12, 10, 8), np.uint8), np.diag([0.5, 0.5, 0.5, 1]), folder / "lung.nii.gz")
    code, _, err = cli(capsys, "pack", folder, tmp_path / "x.mska")
    assert code == 1
    assert "Leave them out (--exclude GLOB, --skip-mismatched); nothing was written." in (
        one_error_line(err, "pack")
    )
    with pytest.raises(medmask.errors.SpaceMismatchError) as info:
        medmask.pack_folder(folder, tmp_path / "x.mska")
    assert "Leave them out (exclude=, skip_mismatched=True); nothing was written." in str(
        info.value
    )
    assert "--" not in str(info.value)


def test_demo_says_overwrite_as_a_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medmask.demo import run_demo

    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "mine.txt").write_text("x")
    code, _, err = cli(capsys, "demo", folder)
    assert code == 1
    assert one_error_line(err, "demo") == (
        f"medmask demo: error: {folder}: not empty; choose another folder or pass --overwrite."
    )
    with pytest.raises(medmask.MaskFileExistsError, match=r"or pass overwrite=True\.$"):
        run_demo(folder)


# --- storage problems on the command line ---------------------------------------------------


def test_storage_problems_on_the_command_line(
    s3: BucketFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = ("-S", f"endpoint_url={s3.endpoint_url}")
    medmask.save_mask(_mask(), s3.url("case.msk"), storage_options=s3.storage_options)
    code, _, err = cli(capsys, "info", "s3://no-such-bucket/case.msk", *endpoint)
    assert code == 1
    assert one_error_line(err, "info").endswith(
        "s3://no-such-bucket/case.msk: bucket 'no-such-bucket' does not exist (reading failed)."
    )
    code, out, _ = cli(capsys, "verify", s3.url("gone.msk"), *endpoint)
    assert code == 1
    assert out.splitlines() == [
        f"FAILED {s3.url('gone.msk')}",
        f"  {s3.url('gone.msk')}: no such object in bucket '{s3.bucket}'.",
    ]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    code, _, err = cli(
        capsys, "ls", s3.url("case.msk"), *endpoint, "-S", "skip_instance_cache=true"
    )
    assert code == 1
    assert one_error_line(err, "ls").endswith(
        "reading failed: no credentials were found (NoCredentialsError: Unable to locate "
        "credentials); pass credentials with -S key=KEY -S secret=SECRET (and -S token=TOKEN "
        "for temporary ones) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)."
    )


# --- file content is never echoed raw ------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".tsv", ".json", ".ctbl", ".bin"])
def test_labels_pointing_at_a_binary_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    medmask.save_mask(_mask(), tmp_path / "in.nii.gz")
    table = tmp_path / f"labels{suffix}"
    table.write_bytes(bytes(range(256)) * 2)
    for args in (
        ("convert", tmp_path / "in.nii.gz", tmp_path / "out.msk", "--labels", table),
        ("info", tmp_path / "in.nii.gz", "--labels", table),
    ):
        code, _, err = cli(capsys, *args)
        assert code == 1
        assert one_error_line(err, str(args[0])) == (
            f"medmask {args[0]}: error: {table}: not a label table: binary content; expected a "
            "text file (JSON, TSV/CSV, ITK-SNAP label descriptions or a Slicer color table)"
        )


def test_label_table_messages_quote_a_short_printable_excerpt(tmp_path: Path) -> None:
    from medmask.interop.labels import parse_label_table

    line = "x" + "\u00e9\u009f" * 200  # text (no NUL, few controls), but no value first
    with pytest.raises(medmask.FormatError) as info:
        parse_label_table(line.encode("latin-1"), "t.ctbl")
    excerpt = "'x" + "\u00e9?" * 11 + "\u00e9...'"
    assert str(info.value) == (
        f"t.ctbl: not a label table: line 1: expected a label value first, got {excerpt}"
    )
    with pytest.raises(medmask.FormatError) as info:
        parse_label_table('{"' + "k" * 500 + '": {"a": 1}}', "t.json")
    assert str(info.value) == (
        f"t.json: not a label table: cannot read entry '{'k' * 24}...': \"{{'a': 1}}\""
    )
