"""Label tables kept beside images: JSON (TotalSegmentator, nnU-Net), TSV/CSV, ITK-SNAP, Slicer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medmask import FormatError, InvalidTypeError, LabelMapping, MaskFileNotFoundError
from medmask.interop.labels import parse_label_table, read_label_table, to_label_mapping

ITKSNAP = """\
################################################
# ITK-SnAP Label Description File
################################################
    0     0    0    0        0  0  0    "Clear Label"
    1   255    0    0        1  1  1    "liver"
    2     0  255    0        1  1  1    "left kidney"
"""

SLICER_CTBL = """\
# Color table file /tmp/GenericAnatomyColors.ctbl
# 3 values
0 Background 0 0 0 0
1 liver 221 130 101 255
17 spleen 157 108 162 255
"""


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("total.json", '{"spleen": 1, "liver": 5}', {"spleen": 1, "liver": 5}),
        ("inverse.json", '{"1": "spleen", "5": "liver"}', {"spleen": 1, "liver": 5}),
        (
            "dataset.json",
            '{"name": "Task", "labels": {"background": 0, "liver": 1}}',
            {"background": 0, "liver": 1},
        ),
        ("t.tsv", "value\tname\n1\tspleen\n5\tliver\n", {"spleen": 1, "liver": 5}),
        ("t.csv", '1,spleen,extra\n5,"liver"\n', {"spleen": 1, "liver": 5}),
        ("snap.txt", ITKSNAP, {"Clear Label": 0, "liver": 1, "left kidney": 2}),
        ("colors.ctbl", SLICER_CTBL, {"Background": 0, "liver": 1, "spleen": 17}),
    ],
)
def test_formats(name: str, text: str, expected: dict[str, int]) -> None:
    assert parse_label_table(text, name).to_dict() == expected
    assert parse_label_table(text.encode(), name).to_dict() == expected


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("a.json", "[1, 2]", "expected a JSON object"),
        ("a.json", "{}", "expected a JSON object"),
        ("a.json", '{"lung": [10, 11]}', "several values"),
        ("a.json", '{"lung": 1.5}', "cannot read entry"),
        ("a.json", '{"a": 1, "b": 1}', "not a label table"),
        ("a.json", "{nope", "invalid JSON"),
        ("a.tsv", "value\tname\n", "no labels found"),
        ("a.tsv", "1\tspleen\nx\tliver\n", "line 2: expected a label value first"),
        ("a.tsv", "1\t\n", "line 1: expected a name"),
        ("s.txt", '1 2 3 "short"', "line 1: expected IDX R G B A VIS MSH"),
        ("s.txt", '1 2 3 4 5 6 7 "unterminated', "line 1"),
    ],
)
def test_bad_tables_name_the_file_and_line(name: str, text: str, problem: str) -> None:
    with pytest.raises(FormatError, match=rf"^{name.replace('.', '[.]')}: .*{problem}"):
        parse_label_table(text, name)


def test_read_from_paths_and_urls(tmp_path: Path, memory_fs: Any) -> None:
    (tmp_path / "labels.ctbl").write_text(SLICER_CTBL)
    assert read_label_table(tmp_path / "labels.ctbl")["spleen"] == 17
    memory_fs.pipe("/t/labels.json", b'{"liver": 5}')
    assert read_label_table("memory://t/labels.json").to_dict() == {"liver": 5}
    with pytest.raises(MaskFileNotFoundError, match=r"missing\.json"):
        read_label_table(tmp_path / "missing.json")


def test_to_label_mapping() -> None:
    mapping = LabelMapping({"a": 1})
    assert to_label_mapping(mapping) is mapping
    assert to_label_mapping({"b": 2}).to_dict() == {"b": 2}
    with pytest.raises(InvalidTypeError, match="label table path"):
        to_label_mapping(42)  # type: ignore[arg-type]
