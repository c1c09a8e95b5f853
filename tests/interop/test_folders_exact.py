"""Exact behaviour of ``pack_folder`` / ``unpack`` details: value names when a file's own
name is also a table name, the file type kept at its type's maximum, where staging happens,
and what a race while moving files into place leaves behind."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import fsspec
import nibabel
import numpy as np
import numpy.typing as npt
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from medmask import (
    InvalidValueError,
    MaskArchive,
    MaskFileExistsError,
    MaskFileNotFoundError,
    SpaceMismatchError,
    UnsafeNameError,
)
from medmask.interop import folders
from medmask.interop.folders import pack_folder, unpack
from medmask.interop.nifti import read_nifti, write_nifti

nib: Any = nibabel  # untyped: keep mypy's strict checks for the rest


def _save(array: npt.NDArray[Any], path: Path) -> None:
    image = nib.Nifti1Image(array, np.eye(4))
    image.set_data_dtype(array.dtype)
    nib.save(image, path)


def _folder(folder: Path, files: dict[str, npt.NDArray[Any]]) -> Path:
    folder.mkdir()
    for file_name, array in files.items():
        _save(array, folder / file_name)
    return folder


def _voxels(path: Path) -> npt.NDArray[Any]:
    return np.asarray(nib.load(path).dataobj)


def test_file_name_is_the_last_part_of_posix_or_windows_paths() -> None:
    assert folders._file_name("liver.nii.gz") == "liver.nii.gz"
    assert folders._file_name("s3://bucket/case/liver.nii.gz") == "liver.nii.gz"
    assert folders._file_name("C:\\data\\case\\liver.nii.gz") == "liver.nii.gz"
    assert folders._file_name("C:\\data/case\\spleen.nii") == "spleen.nii"


def test_is_file_of_a_missing_path_is_false(tmp_path: Path) -> None:
    assert folders._is_file(tmp_path / "missing.nii.gz") is False
    (tmp_path / "there.nii.gz").write_bytes(b"x")
    assert folders._is_file(tmp_path / "there.nii.gz") is True
    assert folders._is_file(tmp_path) is False


@pytest.mark.parametrize("second", [6, 7])
def test_single_value_file_keeps_its_name_when_a_table_name_collides(
    tmp_path: Path, second: int
) -> None:
    """'liver' holds only 5 (kept whole, named 'liver'); 'total' holds two values that the
    table names 'liver' and 'spleen': 'liver' is taken, so total's values are total_<value>
    while the one-value file keeps its own name."""
    liver = np.zeros((3, 4, 5), np.uint8)
    liver[0, 0, 0] = 5
    total = np.zeros((3, 4, 5), np.uint8)
    total[1, 1, 1] = 5
    total[2, 2, 2] = second
    folder = _folder(tmp_path / "case", {"liver.nii.gz": liver, "total.nii.gz": total})
    table = {"liver": 5, "spleen": second}
    report = pack_folder(folder, tmp_path / "a.mska", mapping=table)
    assert report.whole == {"liver": ["liver"], "total": ["total_5", f"total_{second}"]}
    assert report.layers == {}
    assert report.left_out == {}
    with MaskArchive(tmp_path / "a.mska") as archive:
        assert archive.locate("liver") == ("liver", 5)
        assert archive.locate(f"total_{second}") == ("total", second)


def test_a_file_at_its_types_maximum_keeps_its_type(tmp_path: Path) -> None:
    """int8 values up to 127 (the type's maximum) come back as int8, not the member's type."""
    a = np.zeros((3, 4, 5), np.int8)
    a[0, 0, 0] = 127
    a[1, 1, 1] = 3
    folder = _folder(tmp_path / "case", {"small.nii.gz": a})
    report = pack_folder(folder, tmp_path / "a.mska")
    assert report.whole == {"small": ["small_3", "small_127"]}
    with MaskArchive(tmp_path / "a.mska") as archive:
        assert archive["small"].descriptor.attributes == {folders.FILE_ATTRIBUTE: {"dtype": "int8"}}
        member_dtype = archive.load_segmask("small").data.dtype
    assert member_dtype != np.int8  # so the recorded type is what decides
    unpack(tmp_path / "a.mska", tmp_path / "out")
    back = _voxels(tmp_path / "out" / "small.nii.gz")
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, a)


def _archive_with(path: Path, names: tuple[str, ...]) -> Path:
    folder = path.parent / (path.stem + "_src")
    files = {}
    for i, name in enumerate(names):
        a = np.zeros((3, 4, 5), np.uint8)
        a.reshape(-1)[i] = 1
        files[f"{name}.nii.gz"] = a
    pack_folder(_folder(folder, files), path)
    return path


@pytest.mark.parametrize("exists", [False, True], ids=["new-folder", "into-folder"])
def test_files_are_staged_in_a_hidden_folder_next_to_or_inside_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    arc = _archive_with(tmp_path / "in.mska", ("liver",))
    out = tmp_path / "out"
    if exists:
        out.mkdir()
    staged: list[Path] = []

    def recording(array: Any, space: Any, target: Path, **kwargs: Any) -> None:
        staged.append(target)
        write_nifti(array, space, target, **kwargs)

    monkeypatch.setattr(folders, "write_nifti", recording)
    assert unpack(arc, out) == [out / "liver.nii.gz"]
    assert [p.name for p in staged] == ["liver.nii.gz"]
    staging = staged[0].parent
    assert staging.parent == (out if exists else tmp_path)
    assert staging.name.startswith(".medmask-unpack-")
    assert not staging.exists()
    assert sorted(p.name for p in out.iterdir()) == ["liver.nii.gz"]


def test_a_file_created_by_someone_else_while_moving_is_kept_and_ours_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arc = _archive_with(tmp_path / "in.mska", ("a", "b"))
    out = tmp_path / "out"
    out.mkdir()

    def racing(array: Any, space: Any, target: Path, **kwargs: Any) -> None:
        write_nifti(array, space, target, **kwargs)
        if target.name == "b.nii.gz":
            (out / "b.nii.gz").write_bytes(b"theirs")  # after the existence check

    monkeypatch.setattr(folders, "write_nifti", racing)
    with pytest.raises(MaskFileExistsError, match=r"b\.nii\.gz: was created by someone else"):
        unpack(arc, out)
    assert sorted(p.name for p in out.iterdir()) == ["b.nii.gz"]  # our a.nii.gz is undone
    assert (out / "b.nii.gz").read_bytes() == b"theirs"  # theirs is never removed


def test_a_folder_appearing_while_moving_is_refused_with_the_whole_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arc = _archive_with(tmp_path / "in.mska", ("a",))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"old a")

    def racing(array: Any, space: Any, target: Path, **kwargs: Any) -> None:
        write_nifti(array, space, target, **kwargs)
        (out / "a.nii.gz").unlink()
        (out / "a.nii.gz").mkdir()

    monkeypatch.setattr(folders, "write_nifti", racing)
    with pytest.raises(MaskFileExistsError) as info:
        unpack(arc, out, overwrite=True)
    assert str(info.value) == (
        f"{out / 'a.nii.gz'}: is not a regular file (a folder, a symlink, ...); "
        "overwrite replaces regular files only. Nothing was written."
    )
    assert (out / "a.nii.gz").is_dir()


# --- pack_folder's messages, overwrite and progress -------------------------------------------


def _one_voxel() -> npt.NDArray[np.uint8]:
    a = np.zeros((3, 4, 5), np.uint8)
    a[1, 1, 1] = 1
    return a


def test_pack_folder_overwrites_by_default_and_refuses_when_asked(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "case", {"liver.nii.gz": _one_voxel()})
    out = tmp_path / "a.mska"
    pack_folder(folder, out)
    pack_folder(folder, out)  # overwrite=True is the default
    pack_folder(folder, out, overwrite=True)
    before = out.read_bytes()
    with pytest.raises(MaskFileExistsError) as info:
        pack_folder(folder, out, overwrite=False)
    assert str(info.value) == f"{out}: exists; nothing was written."
    assert out.read_bytes() == before
    pack_folder(folder, tmp_path / "new.mska", overwrite=False)  # a new file is fine
    with MaskArchive(tmp_path / "new.mska") as archive:
        assert archive.structures() == {"liver": ("layer_0", 1)}


def test_pack_folder_shows_no_progress_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path / "case", {"liver.nii.gz": _one_voxel()})
    pack_folder(folder, tmp_path / "a.mska")
    assert capsys.readouterr().err == ""
    pack_folder(folder, tmp_path / "b.mska", progress=True)
    err = capsys.readouterr().err
    assert "reading" in err
    assert "fetching" not in err  # local files are read in place, not fetched


def test_pack_folder_messages_name_the_folder_and_the_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(MaskFileNotFoundError) as info:
        pack_folder(empty, tmp_path / "x.mska")
    assert str(info.value) == f"{empty}: no .nii or .nii.gz files."

    folder = _folder(tmp_path / "case", {"liver.nii.gz": _one_voxel(), "liver.nii": _one_voxel()})
    with pytest.raises(InvalidValueError) as info2:
        pack_folder(folder, tmp_path / "x.mska")
    assert str(info2.value) == (
        f"{folder}: structure 'liver' is in two files (liver.nii and liver.nii.gz); keep one."
    )
    with pytest.raises(MaskFileNotFoundError) as info3:
        pack_folder(folder, tmp_path / "x.mska", exclude=["*.nii", "*.gz"])
    assert str(info3.value) == (
        f"{folder}: every .nii/.nii.gz file matches an exclude pattern ('*.nii', '*.gz'); "
        "nothing was written."
    )
    (folder / "liver.nii").rename(folder / "CON.nii")
    with pytest.raises(UnsafeNameError) as info4:
        pack_folder(folder, tmp_path / "x.mska")
    assert str(info4.value) == (
        f"{folder}: these file names cannot be structure names that unpack writes back: "
        "'CON' is a reserved device name on Windows. Rename the files or leave them out "
        "(exclude=); nothing was written."
    )
    assert not (tmp_path / "x.mska").exists()


# --- storage_options reach every storage call -------------------------------------------------


class _KeyedMemory(MemoryFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """fsspec's memory filesystem that refuses to open without ``key="k"``, like an object
    store without its credentials."""

    protocol = "keyedmem"

    def __init__(self, *args: Any, key: str | None = None, **kwargs: Any) -> None:
        if key != "k":
            raise PermissionError("keyedmem: no key")
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str) and path.startswith("keyedmem://"):
            path = path[len("keyedmem://") :]
        return super()._strip_protocol(path)


@pytest.fixture
def keyed(memory_fs: Any) -> dict[str, Any]:
    fsspec.register_implementation("keyedmem", _KeyedMemory, clobber=True)
    return {"key": "k", "skip_instance_cache": True}


def test_pack_folder_from_a_url_passes_storage_options_everywhere(
    tmp_path: Path, keyed: dict[str, Any]
) -> None:
    local = _folder(
        tmp_path / "case", {"liver.nii.gz": _one_voxel(), "spleen.nii": _one_voxel() * 2}
    )
    fs = _KeyedMemory(**keyed)
    for path in local.iterdir():
        fs.pipe(f"/case/{path.name}", path.read_bytes())
    fs.pipe("/labels.json", b'{"liver": 7}')
    out = "keyedmem://out/case.mska"
    report = pack_folder(
        "keyedmem://case",
        out,
        mapping="keyedmem://labels.json",
        storage_options=keyed,
        overwrite=False,
    )
    assert report.whole == {"spleen": ["spleen"]}
    assert report.layers == {"layer_0": ["liver"]}
    assert report.left_out == {}
    with MaskArchive(out, storage_options=keyed) as archive:
        assert archive.locate("liver") == ("layer_0", 7)
        assert archive.locate("spleen") == ("spleen", 2)
    with pytest.raises(MaskFileExistsError, match=r"^keyedmem://out/case\.mska: exists"):
        pack_folder("keyedmem://case", out, storage_options=keyed, overwrite=False)


def test_remote_files_are_fetched_together_then_parsed_from_the_bytes(
    tmp_path: Path,
    keyed: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local = _folder(tmp_path / "case", {"a.nii.gz": _one_voxel(), "b.nii.gz": _one_voxel()})
    fs = _KeyedMemory(**keyed)
    for path in local.iterdir():
        fs.pipe(f"/case/{path.name}", path.read_bytes())
    parsed: list[tuple[str, bool]] = []

    def recording(path: str, **kwargs: Any) -> Any:
        parsed.append((path, kwargs["content"] is not None))
        return read_nifti(path, **kwargs)

    monkeypatch.setattr(folders, "read_nifti", recording)
    capsys.readouterr()
    pack_folder("keyedmem://case", tmp_path / "a.mska", storage_options=keyed, progress=True)
    assert parsed == [("keyedmem:///case/a.nii.gz", True), ("keyedmem:///case/b.nii.gz", True)]
    err = capsys.readouterr().err
    assert re.search(r"fetching: +\d+%.*\| \d/2 ", err), err  # one bar over both files
    assert re.search(r"reading: +\d+%.*\| \d/2 ", err), err


# --- file-name checks: exact messages and limits ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty, '.' or '..'"),
        (".", "is empty, '.' or '..'"),
        ("..", "is empty, '.' or '..'"),
        ("PRN", "is a reserved device name on Windows"),
        ("CLOCK$", "is a reserved device name on Windows"),
        ("conin$", "is a reserved device name on Windows"),
        ("CONOUT$.x", "is a reserved device name on Windows"),
        ("Com1", "is a reserved device name on Windows"),
        ("LPT9", "is a reserved device name on Windows"),
        ("lpt²", "is a reserved device name on Windows"),
        ("a/b", "contains a path separator"),
        ("a\\b", "contains a path separator"),
        ("a\x7fb", "contains a control character (NUL, newline, ...)"),
        ("a<b", 'contains one of "*:<>?| (invalid on Windows)'),
        ("end.", "starts with a space or ends with a dot or space"),
        ("end ", "starts with a space or ends with a dot or space"),
        (" start", "starts with a space or ends with a dot or space"),
        ("nul.tar", "is a reserved device name on Windows"),
        ("COM9", "is a reserved device name on Windows"),
    ],
)
def test_check_file_names_message_is_exact(tmp_path: Path, name: str, problem: str) -> None:
    with pytest.raises(UnsafeNameError) as info:
        folders.check_file_names(["liver", name], tmp_path, ".nii.gz")
    assert str(info.value) == (
        f"{tmp_path}: cannot use these structure names as file names: {name!r} {problem}. "
        "Rename them in the archive first; nothing was written."
    )


def test_check_file_names_accepts_names_near_the_rules() -> None:
    folders.check_file_names(
        [
            "COM0",
            "COMX",
            "LPTX",
            "CONSOLE",
            "con_tissue",
            "a.b",
            "Xray",
            "dot.middle",
            "ünïcode",
            "LPT",
        ],
        "anywhere",
        ".nii.gz",
    )


@pytest.mark.parametrize(("count", "tail"), [(10, ""), (11, "; and 1 more"), (13, "; and 3 more")])
def test_check_file_names_shows_ten_problems_then_a_count(
    tmp_path: Path, count: int, tail: str
) -> None:
    bad = [f"b{i:02d}/x" for i in range(count)]
    with pytest.raises(UnsafeNameError) as info:
        folders.check_file_names(bad, tmp_path, ".nii.gz")
    shown = "; ".join(f"{n!r} contains a path separator" for n in bad[:10])
    assert str(info.value) == (
        f"{tmp_path}: cannot use these structure names as file names: {shown}{tail}. "
        "Rename them in the archive first; nothing was written."
    )


def test_case_duplicates_name_the_first_spelling(tmp_path: Path) -> None:
    with pytest.raises(UnsafeNameError) as info:
        folders.check_file_names(["Liver", "spleen", "LIVER", "liver"], tmp_path, ".nii.gz")
    assert str(info.value).split(": ", 1)[1] == (
        "cannot use these structure names as file names: "
        "'LIVER' differs from 'Liver' only by case or Unicode form; "
        "'liver' differs from 'Liver' only by case or Unicode form. "
        "Rename them in the archive first; nothing was written."
    )


def test_duplicates_fold_case_fully_and_problems_come_first(tmp_path: Path) -> None:
    with pytest.raises(UnsafeNameError, match=r"'STRASSE' differs from 'straße' only by case"):
        folders.check_file_names(["straße", "STRASSE"], tmp_path, ".nii.gz")
    with pytest.raises(UnsafeNameError) as info:
        folders.check_file_names(["CON", "con"], tmp_path, ".nii.gz")
    assert "'CON' is a reserved device name on Windows; 'con' is a reserved device name" in str(
        info.value
    )


def test_name_max_of_a_missing_folder_is_its_nearest_ancestors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = folders._name_max(tmp_path)
    assert folders._name_max(tmp_path / "a" / "b" / "c") == limit
    asked: list[str] = []

    def pathconf(path: Any, name: str) -> int:
        if name != "PC_NAME_MAX":
            raise ValueError(f"unknown configuration name {name!r}")
        asked.append(str(path))
        return 40

    monkeypatch.setattr(os, "pathconf", pathconf)
    assert folders._name_max(tmp_path / "a" / "b") == 40
    assert asked == [str(tmp_path)]
    # the limit applies to the name with its suffix: 33 + 7 bytes fit, 34 + 7 do not
    folders.check_file_names(["x" * 33], tmp_path / "a", ".nii.gz")
    with pytest.raises(UnsafeNameError, match=r"'x{34}' makes a file name of 41 bytes; the file"):
        folders.check_file_names(["x" * 34], tmp_path / "a", ".nii.gz")
    # UTF-8 bytes are counted (and lone surrogates, as on POSIX file names, 3 bytes each)
    folders.check_file_names(["é" * 16 + "x", "y" * 30 + "\udcff"], tmp_path / "a", ".nii.gz")
    with pytest.raises(UnsafeNameError, match="makes a file name of 41 bytes"):
        folders.check_file_names(["y" * 31 + "\udcff"], tmp_path / "a", ".nii.gz")


@pytest.mark.parametrize("error", [OSError, ValueError, AttributeError])
def test_name_max_falls_back_to_255(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    def pathconf(path: Any, name: str) -> int:
        raise error("no pathconf")

    monkeypatch.setattr(os, "pathconf", pathconf)
    assert folders._name_max(tmp_path) == 255


# --- grids: the reference is the grid most files share, the first one on a tie ----------------


def _grid_files(tmp_path: Path, shifted: tuple[str, ...], names: tuple[str, ...]) -> Path:
    folder = tmp_path / "case"
    folder.mkdir()
    for name in names:
        affine = np.eye(4)
        if name in shifted:
            affine[0, 3] = 10.0
        image = nib.Nifti1Image(_one_voxel(), affine)
        nib.save(image, folder / f"{name}.nii.gz")
    return folder


def test_the_grid_most_files_share_is_the_reference(tmp_path: Path) -> None:
    folder = _grid_files(tmp_path, ("b", "c"), ("a", "b", "c"))
    with pytest.raises(SpaceMismatchError) as info:
        pack_folder(folder, tmp_path / "x.mska")
    text = str(info.value)
    assert text.startswith(f"{folder}: 1 of 3 files are not on the grid of b.nii.gz and the ")
    assert "other files (a.nii.gz: origin" in text
    report = pack_folder(folder, tmp_path / "x.mska", skip_mismatched=True)
    assert list(report.left_out) == ["a.nii.gz"]
    assert report.left_out["a.nii.gz"].startswith("not on the grid of b.nii.gz: origin")
    assert report.layers == {"layer_0": ["b"], "layer_1": ["c"]}  # same voxel: two layers


def test_on_a_tie_the_first_file_is_the_reference(tmp_path: Path) -> None:
    folder = _grid_files(tmp_path, ("a", "c"), ("a", "b", "c", "d"))
    with pytest.raises(SpaceMismatchError) as info:
        pack_folder(folder, tmp_path / "x.mska")
    text = str(info.value)
    assert text.startswith(f"{folder}: 2 of 4 files are not on the grid of a.nii.gz and the ")
    assert "(b.nii.gz: origin" in text
    assert "; d.nii.gz: origin" in text
    assert "c.nii.gz:" not in text


def test_grid_message_ends_with_what_to_do(tmp_path: Path) -> None:
    folder = _grid_files(tmp_path, ("a",), ("a", "b", "c"))
    with pytest.raises(SpaceMismatchError) as info:
        pack_folder(folder, tmp_path / "x.mska")
    assert str(info.value).endswith(
        "). Leave them out (exclude=, skip_mismatched=True); nothing was written."
    )


def test_skip_mismatched_leaves_out_a_file_kept_whole(tmp_path: Path) -> None:
    folder = _grid_files(tmp_path, (), ("a", "b"))
    shifted = np.eye(4)
    shifted[1, 3] = 5.0
    multi = _one_voxel() * 3
    multi[0, 0, 0] = 4
    nib.save(nib.Nifti1Image(multi, shifted), folder / "multi.nii.gz")
    report = pack_folder(folder, tmp_path / "a.mska", skip_mismatched=True)
    assert list(report.left_out) == ["multi.nii.gz"]
    assert report.left_out["multi.nii.gz"].startswith("not on the grid of a.nii.gz: origin")
    assert report.whole == {}
    with MaskArchive(tmp_path / "a.mska") as archive:
        assert sorted(archive.structures()) == ["a", "b"]


# --- unpack: what it writes, in which order, and its refusals ---------------------------------


def test_unpack_writes_members_kept_whole_first_then_structures(tmp_path: Path) -> None:
    multi = _one_voxel() * 3
    multi[0, 0, 0] = 4
    folder = _folder(
        tmp_path / "case",
        {"b.nii.gz": _one_voxel(), "multi.nii.gz": multi, "a.nii": np.roll(_one_voxel(), 1)},
    )
    pack_folder(folder, tmp_path / "a.mska")
    out = tmp_path / "out"
    written = unpack(tmp_path / "a.mska", out)
    assert written == [out / "multi.nii.gz", out / "a.nii.gz", out / "b.nii.gz"]
    back = _voxels(out / "multi.nii.gz")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, multi)
    np.testing.assert_array_equal(_voxels(out / "a.nii.gz"), np.roll(_one_voxel(), 1))


@pytest.mark.parametrize(("count", "more"), [(5, ""), (6, " ...")])
def test_unpack_names_existing_files_up_to_five(tmp_path: Path, count: int, more: str) -> None:
    names = tuple("abcdef"[:count])
    arc = _archive_with(tmp_path / "in.mska", names)
    out = tmp_path / "out"
    out.mkdir()
    for name in names:
        (out / f"{name}.nii.gz").write_bytes(b"old")
    with pytest.raises(MaskFileExistsError) as info:
        unpack(arc, out)
    shown = ", ".join(f"{n}.nii.gz" for n in names[:5])
    assert str(info.value) == (
        f"{out}: {count} file(s) exist already ({shown}{more}); pass overwrite=True to replace "
        "them. Nothing was written."
    )
    assert all((out / f"{n}.nii.gz").read_bytes() == b"old" for n in names)


@pytest.mark.parametrize(("count", "more"), [(5, ""), (6, " ...")])
def test_unpack_names_folders_in_the_way_up_to_five(tmp_path: Path, count: int, more: str) -> None:
    names = tuple("abcdef"[:count])
    arc = _archive_with(tmp_path / "in.mska", names)
    out = tmp_path / "out"
    out.mkdir()
    for name in names:
        (out / f"{name}.nii.gz").mkdir()
    with pytest.raises(MaskFileExistsError) as info:
        unpack(arc, out, overwrite=True)
    shown = ", ".join(f"{n}.nii.gz" for n in names[:5])
    assert str(info.value) == (
        f"{out}: {shown}{more} exist but are not regular files (a folder, a symlink, ...); "
        "overwrite replaces regular files only. Nothing was written."
    )


def test_unpack_into_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    arc = _archive_with(tmp_path / "in.mska", ("a",))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(MaskFileExistsError) as info:
        unpack(arc, tmp_path / "file" / "out")
    assert (
        str(info.value) == f"{tmp_path / 'file'}: exists and is not a folder; nothing was written."
    )


@pytest.mark.parametrize(("count", "more"), [(5, ""), (6, " ...")])
def test_a_table_missing_binary_files_names_up_to_five(
    tmp_path: Path, count: int, more: str
) -> None:
    names = "abcdef"[:count]
    files = {f"{n}.nii.gz": np.roll(_one_voxel(), i) for i, n in enumerate(names)}
    files["named.nii.gz"] = np.roll(_one_voxel(), 9)
    folder = _folder(tmp_path / "case", files)
    with pytest.raises(InvalidValueError) as info:
        pack_folder(folder, tmp_path / "x.mska", mapping={"named": 3})
    assert str(info.value) == f"mapping has no value for {list(names[:5])}{more}."
    assert not (tmp_path / "x.mska").exists()


def test_exclude_reports_the_first_matching_pattern_and_is_case_sensitive(
    tmp_path: Path,
) -> None:
    folder = _folder(
        tmp_path / "case",
        {
            "liver.nii.gz": _one_voxel(),
            "lung.nii": np.roll(_one_voxel(), 1),
            "spleen.nii.gz": np.roll(_one_voxel(), 2),
        },
    )
    (folder / "notes.txt").write_text("not a NIfTI file")
    report = pack_folder(folder, tmp_path / "a.mska", exclude=["SPLEEN*", "l*", "*.nii"])
    assert report.left_out == {
        "liver.nii.gz": "matches the exclude pattern 'l*'",
        "lung.nii": "matches the exclude pattern 'l*'",
    }
    assert list(report.left_out) == ["liver.nii.gz", "lung.nii"]  # in file order
    assert report.layers == {"layer_0": ["spleen"]}
    assert report.whole == {}
    report = pack_folder(folder, tmp_path / "b.mska", exclude="*.nii")
    assert report.left_out == {"lung.nii": "matches the exclude pattern '*.nii'"}
    assert report.layers == {"layer_0": ["liver", "spleen"]}


def test_names_from_two_files_are_listed_up_to_five(tmp_path: Path) -> None:
    multi = np.zeros((3, 4, 5), np.uint8)
    multi.reshape(-1)[:6] = np.arange(1, 7)
    files = {"k.nii.gz": multi}
    for v in range(1, 7):
        one = np.zeros((3, 4, 5), np.uint8)
        one.reshape(-1)[v + 10] = 1
        files[f"k_{v}.nii.gz"] = one
    folder = _folder(tmp_path / "case", files)
    with pytest.raises(InvalidValueError) as info:
        pack_folder(folder, tmp_path / "x.mska")
    assert str(info.value) == (
        f"{folder}: structure name(s) ['k_1', 'k_2', 'k_3', 'k_4', 'k_5'] come from two files "
        "(a file's name and <stem>_<value> of a file with several values); rename or leave out "
        "one of them. Nothing was written."
    )
    assert not (tmp_path / "x.mska").exists()


def test_each_file_left_out_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _folder(
        tmp_path / "case", {"liver.nii.gz": _one_voxel(), "xtra.nii": np.roll(_one_voxel(), 1)}
    )
    with caplog.at_level(logging.INFO, logger="medmask.interop.folders"):
        pack_folder(folder, tmp_path / "a.mska", exclude="x*")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", f"pack_folder {folder}: left out xtra.nii: matches the exclude pattern 'x*'")
    ]


def test_level_reaches_every_member_and_float_files_record_no_type(tmp_path: Path) -> None:
    multi = _one_voxel() * 3
    multi[0, 0, 0] = 4
    floaty = (_one_voxel() * 2.0).astype(np.float32)
    floaty[0, 1, 0] = 5.0
    folder = _folder(
        tmp_path / "case",
        {"a.nii.gz": np.roll(_one_voxel(), 2), "multi.nii.gz": multi, "floaty.nii": floaty},
    )
    report = pack_folder(folder, tmp_path / "a.mska", level=1)
    assert report.whole == {"floaty": ["floaty_2", "floaty_5"], "multi": ["multi_3", "multi_4"]}
    assert report.layers == {"layer_0": ["a"]}
    with MaskArchive(tmp_path / "a.mska") as archive:
        assert sorted(archive) == ["floaty", "layer_0", "multi"]
        for member in archive:
            assert archive[member].descriptor.codec["level"] == 1, member
        assert archive["floaty"].descriptor.attributes == {folders.FILE_ATTRIBUTE: {"dtype": None}}
        assert archive["multi"].descriptor.attributes == {
            folders.FILE_ATTRIBUTE: {"dtype": "uint8"}
        }


def test_overwrite_false_still_refuses_an_archive_that_appears_while_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "case", {"liver.nii.gz": _one_voxel()})
    out = tmp_path / "a.mska"

    def racing(path: str, **kwargs: Any) -> Any:
        out.write_bytes(b"someone else's archive")  # after the early existence check
        return read_nifti(path, **kwargs)

    monkeypatch.setattr(folders, "read_nifti", racing)
    with pytest.raises(MaskFileExistsError):
        pack_folder(folder, out, overwrite=False)
    assert out.read_bytes() == b"someone else's archive"


def test_unpack_leaves_an_open_archive_open_and_writes_binary_files_as_uint8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arc = _archive_with(tmp_path / "in.mska", ("a", "b"))
    capsys.readouterr()
    with MaskArchive(arc) as archive:
        written = unpack(archive, tmp_path / "out")
        assert archive.load_structure("a").sum() == 1  # still open, still readable
    assert capsys.readouterr().err == ""  # no progress bars unless asked
    assert written == [tmp_path / "out" / "a.nii.gz", tmp_path / "out" / "b.nii.gz"]
    for path in written:
        back = _voxels(path)
        assert back.dtype == np.uint8
        assert sorted(np.unique(back).tolist()) == [0, 1]
    unpack(arc, tmp_path / "out2", progress=True)
    assert re.search(r"writing: +\d+%.*\| \d/2 ", capsys.readouterr().err)


@pytest.mark.parametrize(("name", "said"), [("x.msk", "'.msk'"), ("x", "no suffix")])
def test_pack_folder_refuses_a_target_not_named_mska(tmp_path: Path, name: str, said: str) -> None:
    # refused before the folder is read: readers tell .msk and .mska apart by name
    with pytest.raises(InvalidValueError) as info:
        pack_folder(tmp_path / "not-read", tmp_path / name)
    assert str(info.value) == (
        f"{tmp_path / name}: an archive's name must end in .mska. Got {said}; nothing was written."
    )
    assert not (tmp_path / name).exists()
