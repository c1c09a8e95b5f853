"""``unpack`` treats structure names as hostile (issue 7, item 3) and ``pack_folder`` keeps
every input (item 7): nothing outside the target folder, nothing at all on failure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask import MaskArchive, MaskFileExistsError, SegmentationMask, UnsafeNameError
from medmask.interop import folders
from medmask.interop.folders import check_file_names, pack_folder, unpack
from medmask.interop.nifti import write_nifti

SPACE = Space(shape=(3, 4, 5), spacing=(2.0, 1.0, 1.0))


def _archive(path: Path, names: list[str]) -> Path:
    data = np.zeros((3, 4, 5), np.uint8)
    for value, _ in enumerate(names, start=1):
        data.reshape(-1)[value * 2] = value
    mapping = {name: value for value, name in enumerate(names, start=1)}
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(SegmentationMask(data, mapping, SPACE), "m")
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


HOSTILE = [
    "../../escaped",
    "../sibling",
    "/abs/path",
    "q/../liver",
    "sub/dir",
    "back\\slash",
    "nul\x00byte",
    "new\nline",
    "x" * 300,
    "..",
    ".",
    "CON",
    "lpt1",
    "aux.backup",
    "trailing.",
    "trailing ",
    "pipe|name",
    "star*",
]


@pytest.mark.parametrize("bad", HOSTILE, ids=[repr(n)[:20] for n in HOSTILE])
def test_hostile_name_writes_nothing_anywhere(tmp_path: Path, bad: str) -> None:
    arc = _archive(tmp_path / "in.mska", ["liver", bad, "spleen"])
    root = tmp_path / "sandbox"
    out = root / "a" / "b" / "out"
    root.mkdir()
    before = _tree(tmp_path)
    with pytest.raises(UnsafeNameError, match="nothing was written") as info:
        unpack(arc, out)
    assert repr(bad)[:10] in str(info.value) or "..." in str(info.value)
    assert isinstance(info.value, ValueError)
    assert _tree(tmp_path) == before  # not even the target folder was created


def test_every_bad_name_is_listed_at_once(tmp_path: Path) -> None:
    arc = _archive(tmp_path / "in.mska", ["ok", "../a", "b/c", "d\x00"])
    with pytest.raises(UnsafeNameError) as info:
        unpack(arc, tmp_path / "out")
    for name in ("../a", "b/c", "d\\x00"):
        assert name in str(info.value)
    assert "'ok'" not in str(info.value)


def test_names_equal_but_for_case_collide(tmp_path: Path) -> None:
    arc = _archive(tmp_path / "in.mska", ["Liver", "liver"])
    with pytest.raises(UnsafeNameError, match="only by case"):
        unpack(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_check_file_names_accepts_totalsegmentator_names(tmp_path: Path) -> None:
    check_file_names(
        ["liver", "lung_upper_lobe_left", "vertebrae_C1", "rib_left_10"], tmp_path, ".nii.gz"
    )
    with pytest.raises(UnsafeNameError, match="file system allows"):
        check_file_names(["é" * 125], tmp_path, ".nii.gz")  # 250 bytes of UTF-8 + suffix


def test_existing_files_are_kept_unless_overwrite(tmp_path: Path) -> None:
    arc = _archive(tmp_path / "in.mska", ["liver", "spleen"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "liver.nii.gz").write_bytes(b"precious")
    (out / "notes.txt").write_text("keep")
    with pytest.raises(MaskFileExistsError, match=r"liver\.nii\.gz.*overwrite=True"):
        unpack(arc, out)
    assert sorted(p.name for p in out.iterdir()) == ["liver.nii.gz", "notes.txt"]
    assert (out / "liver.nii.gz").read_bytes() == b"precious"
    written = unpack(arc, out, overwrite=True)
    assert sorted(p.name for p in written) == ["liver.nii.gz", "spleen.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == ["liver.nii.gz", "notes.txt", "spleen.nii.gz"]
    assert (out / "liver.nii.gz").read_bytes() != b"precious"


def _fail_on_third(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        write_nifti(*args, **kwargs)

    monkeypatch.setattr(folders, "write_nifti", flaky)


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_failure_midway_leaves_no_partial_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    arc = _archive(tmp_path / "in.mska", ["a", "b", "c", "d"])
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "a.nii.gz").write_bytes(b"old a")
    before = _tree(tmp_path)
    _fail_on_third(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        unpack(arc, out, overwrite=True)
    assert _tree(tmp_path) == before
    if existing:
        assert (out / "a.nii.gz").read_bytes() == b"old a"


def test_failure_while_moving_restores_replaced_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arc = _archive(tmp_path / "in.mska", ["a", "b", "c"])
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a", "b", "c"):
        (out / f"{name}.nii.gz").write_bytes(f"old {name}".encode())
    real_link = os.link
    calls = {"n": 0}

    def flaky_link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # another process created c.nii.gz in the meantime
            raise FileExistsError(17, "File exists")
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(folders.os, "link", flaky_link)
    with pytest.raises(MaskFileExistsError, match=r"c\.nii\.gz: was created by someone else"):
        unpack(arc, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    for name in ("a", "b", "c"):
        assert (out / f"{name}.nii.gz").read_bytes() == f"old {name}".encode()


def test_structure_in_two_members_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "two.mska"
    data = np.zeros((3, 4, 5), np.uint8)
    data[0, 0, 0] = 1
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(SegmentationMask(data, {"liver": 1}, SPACE), "m1")
        archive.add_segmask(SegmentationMask(data, {"liver": 1}, SPACE), "m2")
    with pytest.raises(medmask.InvalidValueError, match="'liver' occurs in members 'm1' and 'm2'"):
        unpack(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pack_folder_refuses_two_files_for_one_structure(tmp_path: Path) -> None:
    folder = tmp_path / "organs"
    folder.mkdir()
    a = np.zeros((3, 4, 5), bool)
    a[1, 1, 1] = True
    write_nifti(a, SPACE, folder / "liver.nii.gz")
    write_nifti(~a, SPACE, folder / "liver.nii")
    with pytest.raises(medmask.InvalidValueError, match="'liver' is in two files"):
        pack_folder(folder, tmp_path / "out.mska")
    assert not (tmp_path / "out.mska").exists()


def test_pack_folder_missing_folder_is_a_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(medmask.MaskFileNotFoundError, match="no such folder"):
        pack_folder(tmp_path / "nope", tmp_path / "out.mska")
