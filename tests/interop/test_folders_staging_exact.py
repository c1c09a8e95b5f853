"""Exact behaviour of ``unpack``'s staging: the error a failed write is reported as even when
the staging folder is gone, where a replaced file waits while the new files are moved in, and
the file type of a member kept whole when its array is empty."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pytest

from medmask.errors import StorageError
from medmask.interop import folders
from medmask.interop.folders import pack_folder, unpack

nib: Any = nibabel  # untyped: keep mypy's strict checks for the rest


def _archive_with(path: Path, names: tuple[str, ...]) -> Path:
    folder = path.parent / (path.stem + "_src")
    folder.mkdir()
    for i, name in enumerate(names):
        a = np.zeros((3, 4, 5), np.uint8)
        a.reshape(-1)[i] = 1
        image = nib.Nifti1Image(a, np.eye(4))
        image.set_data_dtype(np.uint8)
        nib.save(image, folder / f"{name}.nii.gz")
    pack_folder(folder, path)
    return path


@pytest.mark.parametrize("exists", [False, True], ids=["new-folder", "into-folder"])
def test_a_write_failure_is_reported_as_itself_when_the_staging_folder_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool
) -> None:
    """The disk fills up while someone removes the hidden staging folder: the user is told
    about the full disk (naming the folder), not about a cleanup that found nothing to remove,
    and the folder is left as it was."""
    arc = _archive_with(tmp_path / "in.mska", ("liver",))
    out = tmp_path / "out"
    if exists:
        out.mkdir()

    def failing(array: Any, space: Any, target: Path, **kwargs: Any) -> None:
        shutil.rmtree(target.parent)  # the staging folder vanishes ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... and the disk is full

    monkeypatch.setattr(folders, "write_nifti", failing)
    with pytest.raises(StorageError) as info:
        unpack(arc, out)
    assert str(info.value) == (
        f"{out}: writing into it failed (OSError: [Errno 28] No space left on device)."
    )
    cause = info.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.errno == errno.ENOSPC
    assert out.exists() is exists
    if exists:
        assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.mska", "in_src", *(["out"] if exists else [])]
    )


def test_a_replaced_file_waits_in_the_staging_folder_until_the_new_one_is_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With overwrite=True the old file is moved to ``<staging>/.replaced/`` (hidden, inside
    the target folder) before the new one is linked into place: never anywhere else, never
    under another name, so it can be found there if the process dies mid-move."""
    arc = _archive_with(tmp_path / "in.mska", ("a",))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"old a")
    parked: list[Path] = []
    link = os.link

    def placing(source: Any, target: Any) -> None:
        staging = Path(source).parent
        assert staging.parent == out
        assert staging.name.startswith(".medmask-unpack-")
        assert not os.path.lexists(target)  # the old file has been moved away ...
        parked.extend(
            p.relative_to(staging)
            for p in out.rglob("*")
            if p.is_file() and p.read_bytes() == b"old a"
        )  # ... into the staging folder's .replaced
        link(source, target)

    monkeypatch.setattr(os, "link", placing)
    assert unpack(arc, out, overwrite=True) == [out / "a.nii.gz"]
    assert parked == [Path(".replaced", "a.nii.gz")]
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz"]  # the staging folder is gone
    back = np.asarray(nib.load(out / "a.nii.gz").dataobj)
    assert back.dtype == np.uint8
    assert int(back.sum()) == 1


@pytest.mark.parametrize("empty", [np.uint32, np.int64])
def test_the_recorded_type_of_an_empty_array_is_kept(empty: type[np.integer[Any]]) -> None:
    """An empty array holds no value too large for the recorded type: the type is kept
    (Space refuses zero-size grids, so only a direct call can pass one)."""
    data = np.zeros((0, 4, 5), empty)
    assert folders._file_dtype({"dtype": "int16"}, data) == np.dtype(np.int16)
    assert folders._file_dtype({"dtype": "uint8"}, data) == np.dtype(np.uint8)
    assert folders._file_dtype({"dtype": "float32"}, data) == np.dtype(empty)
    assert folders._file_dtype(None, data) == np.dtype(empty)
