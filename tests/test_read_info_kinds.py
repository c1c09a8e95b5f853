"""``read_info`` and ``MaskFile`` read one ``.msk`` file; given any other kind that
``load_mask`` reads, their error says what the file is and names the call that reads it
(issue 19).

The choice: ``read_info`` returns a :class:`medmask.MaskInfo`, whose codec, chunks and stored
sizes exist only for a stored ``.msk``; giving one for a NIfTI file would invent them. So the
error points to ``MaskArchive(path)`` for an archive and ``load_mask(path, ...)`` for NIfTI
and DICOM SEG; medmask 0.1 files already name ``load_mask`` / ``MaskArchive``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medmask
from medmask import MaskArchive, SegmentationMask
from medmask.errors import FormatError, LegacyFormatError

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1"


def _mask() -> SegmentationMask:
    data = np.zeros((3, 4, 5), np.uint8)
    data[1, 1:3, 1:4] = 1
    return SegmentationMask(data, {"liver": 1})


def _calls() -> list[Callable[[Path], Any]]:
    return [
        medmask.read_info,
        lambda p: medmask.MaskFile(p).close(),
        lambda p: medmask.read_infos([p]),
    ]


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {"mska": tmp_path / "a.mska", "nii.gz": tmp_path / "a.nii.gz"}
    with MaskArchive(files["mska"], "w") as archive:
        archive.add_segmask(_mask(), "organs")
    medmask.save_mask(_mask(), files["nii.gz"])
    files["nii"] = tmp_path / "a.nii"
    medmask.save_mask(_mask(), files["nii"])
    files["dcm"] = tmp_path / "seg.dcm"
    files["dcm"].write_bytes(bytes(128) + b"DICM" + bytes(300))  # a DICOM preamble and magic
    return files


NIFTI = (
    "medmask.load_mask(path, mapping=...) reads NIfTI files named .nii or .nii.gz (mapping "
    "names their label values)."
)
#: What the .msk reader finds ("{bytes}": the file's first 8), and the call that reads it.
READERS = {
    "mska": "starts with a .mska archive; medmask.MaskArchive(path) reads it (.info() gives "
    "each member's metadata, .load_segmask(name) a member).",
    "nii.gz": f"starts with a gzip file (a .nii.gz?); {NIFTI}",
    "nii": f"starts with unknown bytes {{bytes}}; {NIFTI}",
    "dcm": "starts with unknown bytes {bytes}; medmask.load_mask(path) reads a DICOM SEG "
    "named .dcm.",
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_other_kinds_name_their_reader(tmp_path: Path, kind: str) -> None:
    path = _files(tmp_path)[kind]
    for call in _calls():
        with pytest.raises(FormatError) as info:
            call(path)
        assert type(info.value) is FormatError
        found = READERS[kind].replace("{bytes}", repr(path.read_bytes()[:8]))
        assert str(info.value) == f"{path}: not a .msk file: {found}"
        assert info.value.__cause__ is not None  # the reader's own finding stays chained


def test_the_named_readers_read_them(tmp_path: Path) -> None:
    files = _files(tmp_path)
    with MaskArchive(files["mska"]) as archive:
        assert [i.name for i in archive.info()] == ["organs"]
    for kind in ("nii.gz", "nii"):
        mask = medmask.load_mask(files[kind], mapping={"liver": 1})
        assert mask.mapping["liver"] == 1
    medmask.save_mask(_mask(), tmp_path / "b.msk")
    assert [e.name for e in medmask.read_info(tmp_path / "b.msk").labels if e.value] == ["liver"]


def test_legacy_files_keep_naming_their_reader() -> None:
    for path, reader in [
        (LEGACY / "binary_bool.msk", "medmask.load_mask reads it"),
        (LEGACY / "archive_mixed.mska", "MaskArchive(path, 'r') reads it"),
    ]:
        with pytest.raises(LegacyFormatError, match=re.escape(reader)):
            medmask.read_info(path)


def test_a_file_of_no_known_kind_keeps_its_message(tmp_path: Path) -> None:
    path = tmp_path / "notes.msk"
    path.write_bytes(b"just some text, not a mask")
    with pytest.raises(FormatError) as info:
        medmask.read_info(path)
    assert str(info.value) == f"{path}: not a .msk file: starts with unknown bytes b'just som'."
