"""``unpack`` treats structure names as hostile (issue 7, item 3) and ``pack_folder`` keeps
every input (item 7): nothing outside the target folder, nothing at all on failure."""

from __future__ import annotations

import errno
import os
import re
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


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_a_folder_that_cannot_be_written_is_a_storage_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    arc = _archive(tmp_path / "in.mska", ["liver"])
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    before = _tree(tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> str:
        # as a read-only folder would (the tests run as root: chmod cannot refuse)
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(folders.tempfile, "mkdtemp", refuse)
    with pytest.raises(medmask.StoragePermissionError, match=re.escape(f"{out}: access denied")):
        unpack(arc, out)
    assert _tree(tmp_path) == before


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


# --- overwrite replaces regular files only (issue 17, item 6) ---------------------------------


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (not following symlinks): file bytes, link targets, dirs."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[key] = "dir"
        elif not p.is_file():  # a FIFO: never read (it would block)
            out[key] = "special"
        else:
            out[key] = p.read_bytes()
    return out


def _in_the_way(out: Path, kind: str, elsewhere: Path) -> None:
    target = out / "liver.nii.gz"
    if kind == "directory":
        target.mkdir()
        (target / "precious.txt").write_text("mine")
        (target / "sub").mkdir()
        (target / "sub" / "deep.txt").write_text("also mine")
    elif kind == "symlink-to-directory":
        elsewhere.mkdir()
        (elsewhere / "precious.txt").write_text("mine")
        target.symlink_to(elsewhere, target_is_directory=True)
    elif kind == "symlink-to-file":
        elsewhere.write_bytes(b"precious")
        target.symlink_to(elsewhere)
    elif kind == "dangling-symlink":
        target.symlink_to(elsewhere)
    elif kind == "fifo":
        os.mkfifo(target)


@pytest.mark.parametrize(
    "kind",
    ["directory", "symlink-to-directory", "symlink-to-file", "dangling-symlink", "fifo"],
)
def test_overwrite_refuses_anything_but_a_regular_file(tmp_path: Path, kind: str) -> None:
    arc = _archive(tmp_path / "in.mska", ["liver", "spleen"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "spleen.nii.gz").write_bytes(b"old spleen")
    _in_the_way(out, kind, tmp_path / "elsewhere")
    before = _snapshot(tmp_path)
    with pytest.raises(MaskFileExistsError, match=r"liver\.nii\.gz exist but are not regular"):
        unpack(arc, out, overwrite=True)
    assert _snapshot(tmp_path) == before  # nothing changed, the folder's files included
    assert (out / "spleen.nii.gz").read_bytes() == b"old spleen"


def test_a_directory_that_appears_while_writing_is_not_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arc = _archive(tmp_path / "in.mska", ["a", "b"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"old a")

    def racing(array: Any, space: Any, target: Path, **kwargs: Any) -> None:
        write_nifti(array, space, target, **kwargs)
        if target.name == "b.nii.gz" and not (out / "b.nii.gz").exists():
            (out / "b.nii.gz").mkdir()  # someone else's folder, created after the check
            (out / "b.nii.gz" / "keep.txt").write_text("theirs")

    monkeypatch.setattr(folders, "write_nifti", racing)
    with pytest.raises(MaskFileExistsError, match=r"b\.nii\.gz: is not a regular file"):
        unpack(arc, out, overwrite=True)
    assert (out / "b.nii.gz" / "keep.txt").read_text() == "theirs"
    assert (out / "a.nii.gz").read_bytes() == b"old a"  # the replaced file is restored
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_overwrite_still_replaces_regular_files(tmp_path: Path) -> None:
    arc = _archive(tmp_path / "in.mska", ["liver"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "liver.nii.gz").write_bytes(b"old")
    unpack(arc, out, overwrite=True)
    assert (out / "liver.nii.gz").is_file()
    assert (out / "liver.nii.gz").read_bytes()[:2] == b"\x1f\x8b"


# --- members kept whole by pack_folder --------------------------------------------------------


def _whole_archive(path: Path, attributes: dict[str, Any], values: tuple[int, ...]) -> Path:
    data = np.zeros((3, 4, 5), np.uint16)
    for i, v in enumerate(values):
        data.reshape(-1)[i * 3] = v
    mask = SegmentationMask(data, {f"v{v}": v for v in values}, SPACE)
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(mask, "kidney", attributes=attributes)
    return path


@pytest.mark.parametrize(
    ("attribute", "dtype"),
    [
        ({"dtype": "int16"}, np.int16),
        ({"dtype": "uint8"}, np.uint16),  # cannot hold 300: the member's own type
        ({"dtype": "object"}, np.uint16),  # hostile: never an arbitrary numpy type
        ({"dtype": "float64"}, np.uint16),
        ({"dtype": None}, np.uint16),
        ({"dtype": ["int16"]}, np.uint16),
        ("int16", np.uint16),
    ],
)
def test_member_kept_whole_is_one_file_with_its_values(
    tmp_path: Path, attribute: Any, dtype: Any
) -> None:
    arc = _whole_archive(tmp_path / "a.mska", {folders.FILE_ATTRIBUTE: attribute}, (2, 300, 7))
    written = unpack(arc, tmp_path / "out")
    assert [p.name for p in written] == ["kidney.nii.gz"]
    import nibabel as nib

    data = np.asarray(nib.load(tmp_path / "out" / "kidney.nii.gz").dataobj)
    assert data.dtype == dtype
    with MaskArchive(arc) as archive:
        np.testing.assert_array_equal(data.transpose(2, 1, 0), archive.load_segmask("kidney").data)
    assert sorted(np.unique(data).tolist()) == [0, 2, 7, 300]


def test_member_kept_whole_and_a_structure_of_the_same_name(tmp_path: Path) -> None:
    path = _whole_archive(tmp_path / "a.mska", {folders.FILE_ATTRIBUTE: {}}, (1, 2))
    extra = np.zeros((3, 4, 5), bool)
    extra[2, 2, 2] = True
    with MaskArchive(path, "a") as archive:
        archive.add_structures({"kidney": extra})
    with pytest.raises(medmask.InvalidValueError, match="'kidney' occurs in members"):
        unpack(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- every branch of the file-name check ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (" leading", "starts with a space"),
        ("COM¹", "reserved device name"),
        ("LPT³.txt", "reserved device name"),
        ("tab\there", "control character"),
        ('quote"d', "invalid on Windows"),
        ("a:b", "invalid on Windows"),
    ],
)
def test_each_name_problem_is_named(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(UnsafeNameError, match=why):
        check_file_names(["fine", name], tmp_path, ".nii.gz")


def test_name_length_limit_is_exact(tmp_path: Path) -> None:
    limit = folders._name_max(tmp_path)
    fits = "x" * (limit - len(".nii.gz"))
    check_file_names([fits], tmp_path, ".nii.gz")
    with pytest.raises(UnsafeNameError, match=f"{limit + 1} bytes; the file system allows {limit}"):
        check_file_names([fits + "y"], tmp_path, ".nii.gz")


def test_names_equal_but_for_unicode_form_collide(tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    with pytest.raises(UnsafeNameError, match="only by case or Unicode form") as info:
        check_file_names([composed, decomposed, "other"], tmp_path, ".nii.gz")
    assert repr(decomposed) in str(info.value)
    assert repr(composed) not in str(info.value).split("differs")[0]
    check_file_names([composed, "Cafe"], tmp_path, ".nii.gz")  # different names are fine


@pytest.mark.parametrize("where", ["file", "under-a-file", "dangling-symlink"])
def test_output_folder_that_cannot_be_a_folder(tmp_path: Path, where: str) -> None:
    arc = _archive(tmp_path / "in.mska", ["liver"])
    blocker = tmp_path / "blocker"
    if where == "dangling-symlink":
        blocker.symlink_to(tmp_path / "nowhere")
    else:
        blocker.write_text("a file")
    out = blocker / "sub" if where == "under-a-file" else blocker
    before = _snapshot(tmp_path)
    with pytest.raises(MaskFileExistsError, match=r"blocker: exists and is not a folder"):
        unpack(arc, out)
    assert _snapshot(tmp_path) == before
