"""Renamed keywords and functions: the old name works for one release, warns at the caller's
line, and never silently competes with the new name."""

from __future__ import annotations

import inspect
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmask import MaskArchive
from medmask._deprecate import REMOVED_IN, deprecated_alias, renamed_keywords
from medmask.errors import InvalidTypeError
from medmask.interop.dicom import to_dicom_seg
from medmask.interop.folders import pack_folder


@renamed_keywords(out="target", labels="mapping")
def write(source: str, target: str = "", mapping: object = None) -> tuple[str, str, object]:
    return source, target, mapping


def test_old_keywords_still_work_with_a_warning_at_the_callers_line() -> None:
    with pytest.warns(DeprecationWarning, match="is deprecated") as caught:
        assert write("a", out="b", labels={"x": 1}) == ("a", "b", {"x": 1})
    assert [str(w.message) for w in caught] == [
        f"write(out=...) is deprecated: use target=... (out= will be removed in medmask "
        f"{REMOVED_IN}).",
        f"write(labels=...) is deprecated: use mapping=... (labels= will be removed in medmask "
        f"{REMOVED_IN}).",
    ]
    assert {w.filename for w in caught} == {__file__}


def test_new_keywords_do_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    assert write("a", target="b") == ("a", "b", None)
    assert write("a", "b", {"y": 2}) == ("a", "b", {"y": 2})
    assert not recwarn.list


def test_old_and_new_name_together_are_refused() -> None:
    with pytest.raises(InvalidTypeError, match=r"write\(\) got out= and target=; pass only"):
        write("a", out="b", target="c")


def test_alias_keeps_the_old_name_and_warns() -> None:
    old = deprecated_alias(write, "pkg.old_write", "use pkg.write")
    assert old.__name__ == "old_write"
    with pytest.warns(DeprecationWarning, match=r"pkg\.old_write is deprecated: use pkg\.write"):
        assert old("a", "b") == ("a", "b", None)


def test_renamed_public_parameters() -> None:
    from medmask import MaskArchive, from_zarr, to_zarr

    assert list(inspect.signature(pack_folder).parameters)[:3] == ["folder", "target", "mapping"]
    assert list(inspect.signature(to_zarr).parameters)[:2] == ["mask", "target"]
    assert list(inspect.signature(from_zarr).parameters)[:1] == ["source"]
    assert "mapping" in inspect.signature(MaskArchive.add_structures).parameters
    assert list(inspect.signature(to_dicom_seg).parameters)[:3] == [
        "mask",
        "source_series",
        "target",
    ]


def test_pack_folder_old_keywords(tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    data = np.zeros((4, 5, 6), np.uint8)
    data[1, 2, 3] = 1
    nib.save(nib.Nifti1Image(data, np.eye(4)), folder / "liver.nii.gz")
    with pytest.warns(DeprecationWarning, match="is deprecated") as caught:
        pack_folder(folder, out=tmp_path / "a.mska", labels={"liver": 7})
    assert sorted(str(w.message).split("(")[1] for w in caught) == [
        "labels=...) is deprecated: use mapping=... ",
        "out=...) is deprecated: use target=... ",
    ]
    with MaskArchive(tmp_path / "a.mska") as archive:
        assert archive.locate("liver")[1] == 7


def test_add_structures_and_zarr_old_keywords(tmp_path: Path) -> None:
    from spacetransformer import Space

    from medmask import from_zarr, to_zarr

    space = Space(shape=(2, 3, 4))
    liver = np.zeros((2, 3, 4), bool)
    liver[1, 1, 1] = True
    with MaskArchive(tmp_path / "b.mska", "w", space=space) as archive:
        with pytest.warns(DeprecationWarning, match=r"add_structures\(labels=\.\.\.\)"):
            archive.add_structures({"liver": liver}, labels={"liver": 4})
        mask = archive.load_segmask(archive.locate("liver")[0])
    assert archive.locate("liver")[1] == 4
    with pytest.warns(DeprecationWarning, match=r"to_zarr\(store_or_url=\.\.\.\)"):
        to_zarr(mask, store_or_url=str(tmp_path / "m.zarr"))
    with pytest.warns(DeprecationWarning, match=r"from_zarr\(array_or_url=\.\.\.\)"):
        assert from_zarr(array_or_url=str(tmp_path / "m.zarr")) == mask


def test_renamed_io_names_still_read_with_a_warning() -> None:
    import medmask.io

    version = medmask.io.ObjectVersion(True, "content", "", 3, b"abc")
    expected = "ObjectVersion.kind is now ObjectVersion.check; the old name goes in medmask 0.4"
    with pytest.warns(DeprecationWarning, match=expected) as caught:
        assert version.kind == version.check == "content"
    assert caught[0].filename == __file__
    with pytest.warns(DeprecationWarning, match="ObjectVersion.head is now ObjectVersion.prefix"):
        assert version.head == version.prefix == b"abc"
    with pytest.warns(
        DeprecationWarning, match="VERSION_HEAD is now medmask.io.COMPARED_PREFIX"
    ) as caught:
        assert medmask.io.VERSION_HEAD == medmask.io.COMPARED_PREFIX == 4096
    assert caught[0].filename == __file__
    with pytest.raises(AttributeError, match="has no attribute 'VERSION_TAIL'"):
        medmask.io.VERSION_TAIL  # noqa: B018
