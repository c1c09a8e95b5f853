"""The interop registry: one converter per kind of file, kinds told by name or first bytes,
converters loaded on use, and the one dispatch files.py and the command line go through."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import medmask
from medmask import InvalidValueError, SegmentationMask
from medmask.format.sniff import KINDS, SUFFIXES
from medmask.interop.registry import (
    CONVERTERS,
    describe_suffixes,
    kind_of,
    kind_of_name,
    member_name,
    titles_taking,
)

SRC = Path(medmask.__file__).parent
LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_0_1"


def test_one_converter_per_kind_with_the_suffixes_of_format_sniff() -> None:
    assert tuple(CONVERTERS) == KINDS
    for kind, converter in CONVERTERS.items():
        assert converter.kind == kind
        assert converter.suffixes == SUFFIXES[kind]
        one = converter.read is not None and converter.write is not None
        many = converter.read_all is not None and converter.write_all is not None
        assert one != many, f"{kind}: read and write, or read_all and write_all"
        assert (converter.read is None) == (converter.write is None)


def _keywords(function: Any, *fixed: str) -> frozenset[str]:
    parameters = inspect.signature(function).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return frozenset(keywords - set(fixed))


@pytest.mark.parametrize("kind", KINDS)
def test_declared_options_are_the_adapters_keywords(kind: str) -> None:
    converter = CONVERTERS[kind]  # type: ignore[index]
    read = converter.read or converter.read_all
    write = converter.write or converter.write_all
    assert _keywords(read, "storage_options") == converter.read_options
    assert _keywords(write, "storage_options", "overwrite") == converter.write_options


def test_messages_list_every_kind() -> None:
    assert describe_suffixes() == ".msk, .mska, .nii, .nii.gz or .dcm"
    assert titles_taking("mapping") == "NIfTI"
    assert [c.title for c in CONVERTERS.values()] == [
        "medmask .msk",
        "medmask .mska",
        "NIfTI",
        "DICOM SEG",
    ]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.msk", "msk"),
        ("s3://bucket/case/a.MSKA", "mska"),
        ("a.nii", "nifti"),
        ("memory://x/a.nii.gz?version=3", "nifti"),
        ("a.dcm", "dicom"),
        ("a.tiff", None),
        ("a", None),
    ],
)
def test_kind_of_name(name: str, kind: str | None) -> None:
    assert kind_of_name(name) == kind


def test_kind_of_sniffs_a_name_without_suffix(tmp_path: Path, mask: SegmentationMask) -> None:
    medmask.save_mask(mask, tmp_path / "m.msk")
    medmask.save_mask(mask, tmp_path / "m.nii")
    medmask.save_mask(mask, tmp_path / "m.nii.gz")
    with medmask.MaskArchive(tmp_path / "m.mska", "w", space=mask.space) as archive:
        archive.add_segmask(mask, "kidney")
    contents = {
        "msk": (tmp_path / "m.msk").read_bytes(),
        "mska": (tmp_path / "m.mska").read_bytes(),
        "nifti": (tmp_path / "m.nii").read_bytes(),
        "nifti-gz": (tmp_path / "m.nii.gz").read_bytes(),
        "dicom": bytes(128) + b"DICM" + bytes(300),
        "legacy-msk": (LEGACY / "labels_uint8.msk").read_bytes(),
        "legacy-mska": (LEGACY / "archive_mixed.mska").read_bytes(),
        "text": b"hello, world\n" * 40,
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    found = {name: kind_of(tmp_path / name) for name in contents}
    assert found == {
        "msk": "msk",
        "mska": "mska",
        "nifti": "nifti",
        "nifti-gz": "nifti",
        "dicom": "dicom",
        "legacy-msk": "msk",
        "legacy-mska": "mska",
        "text": None,
    }
    # the name wins: nothing is read when the suffix tells
    assert kind_of(tmp_path / "missing.nii.gz") == "nifti"
    with pytest.raises(medmask.MaskFileNotFoundError):
        kind_of(tmp_path / "missing")


def test_kind_of_sniffs_remote_objects(memory_fs: Any, mask: SegmentationMask) -> None:
    medmask.save_mask(mask, "memory://x/m.nii.gz")
    memory_fs.pipe("/x/case", memory_fs.cat("/x/m.nii.gz"))
    assert kind_of("memory://x/case") == "nifti"


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("s3://bucket/cases/case01.nii.gz", "case01"),
        ("dir/liver.msk", "liver"),
        ("C:\\data\\spleen.nii", "spleen"),
        ("dir/no_suffix", "no_suffix"),
        ("memory://x/a.msk?version=2", "a"),
    ],
)
def test_member_name_is_the_file_name_without_suffix(source: str, name: str) -> None:
    assert member_name(source) == name


def test_read_masks_of_every_kind(tmp_path: Path, mask: SegmentationMask) -> None:
    medmask.save_mask(mask, tmp_path / "case.msk")
    medmask.save_mask(mask, tmp_path / "case.nii.gz")
    assert CONVERTERS["msk"].read_masks(tmp_path / "case.msk") == {"case": mask}
    nifti = CONVERTERS["nifti"].read_masks(tmp_path / "case.nii.gz", mapping=mask.mapping)
    assert nifti == {"case": mask}
    size = CONVERTERS["mska"].write_all({"a": mask, "b": mask}, tmp_path / "two.mska")  # type: ignore[misc]
    assert size == (tmp_path / "two.mska").stat().st_size
    assert CONVERTERS["mska"].read_masks(tmp_path / "two.mska") == {"a": mask, "b": mask}
    legacy = CONVERTERS["msk"].read_masks(LEGACY / "labels_uint8.msk")
    assert list(legacy) == ["labels_uint8"]


def test_archive_writer_refuses_nothing_to_write(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match=r"e\.mska: no masks to write"):
        CONVERTERS["mska"].write_all({}, tmp_path / "e.mska")  # type: ignore[misc]
    assert not list(tmp_path.iterdir())


def test_dicom_writer_needs_the_series(tmp_path: Path, mask: SegmentationMask) -> None:
    with pytest.raises(InvalidValueError, match=r"m\.dcm: a DICOM SEG needs its source series"):
        CONVERTERS["dicom"].write(mask, tmp_path / "m.dcm")  # type: ignore[misc]
    assert not list(tmp_path.iterdir())


def test_load_mask_passes_max_bytes_to_the_dicom_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    dicom = pytest.importorskip("medmask.interop.dicom")
    seen: dict[str, Any] = {}

    def fake(source: Any, **options: Any) -> str:
        seen.update(options, source=source)
        return "read"

    monkeypatch.setattr(dicom, "from_dicom_seg", fake)
    assert medmask.load_mask("memory://x/s.dcm", max_bytes=5) == "read"
    assert seen == {"source": "memory://x/s.dcm", "storage_options": None, "max_bytes": 5}


def test_converters_load_only_when_used(tmp_path: Path, mask: SegmentationMask) -> None:
    medmask.save_mask(mask, tmp_path / "m.msk")
    heavy = [
        "nibabel",
        "pydicom",
        "highdicom",
        "medmask.interop.nifti",
        "medmask.interop.dicom",
        "medmask.archive",
    ]
    code = (
        "import sys, medmask.files, medmask.interop.registry as r\n"
        f"r.kind_of({str(tmp_path / 'm.msk')!r})\n"
        f"medmask.files.load_mask({str(tmp_path / 'm.msk')!r})\n"
        f"print(*[name in sys.modules for name in {heavy!r}])\n"
        f"medmask.files.save_mask(medmask.files.load_mask({str(tmp_path / 'm.msk')!r}), "
        f"{str(tmp_path / 'm.nii.gz')!r})\n"
        "print('medmask.interop.nifti' in sys.modules, 'medmask.interop.dicom' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["False"] * len(heavy)
    assert lines[1].split() == ["True", "False"]


@pytest.mark.parametrize("module", ["files.py", "cli.py"])
def test_no_second_dispatch(module: str) -> None:
    """files.py and cli.py reach the converters through the registry only."""
    tree = ast.parse((SRC / module).read_text(encoding="utf-8"))
    imported = {
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
    }
    assert imported.isdisjoint({"interop.nifti", "interop.dicom", "interop.sitk"})
    assert "format.sniff" not in imported or module == "files.py"  # NIFTI_SUFFIXES, re-exported
