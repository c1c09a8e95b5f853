"""Segment code tables: the shipped SNOMED CT table, user tables (CSV, TSV, JSON, and
TotalSegmentator's own CSV), codes from tuples or pydicom/highdicom objects, and the messages
of every bad table (file, row, column; never the bytes of a binary file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
from pydicom.sr.codedict import codes

from medmask.errors import InvalidTypeError, InvalidValueError, MaskFileNotFoundError
from medmask.interop.segment_codes import (
    PARTS,
    CodedTerm,
    SegmentCode,
    coded_term,
    find_segment_code,
    parse_segment_codes,
    read_segment_codes,
    segment_code,
    standard_segment_codes,
)

ANATOMY = CodedTerm("123037004", "SCT", "Anatomical Structure")
LEFT = CodedTerm("7771000", "SCT", "Left")
RIGHT = CodedTerm("24028007", "SCT", "Right")
HEADER = (
    "name,category_value,category_scheme,category_meaning,type_value,type_scheme,type_meaning,"
    "modifier_value,modifier_scheme,modifier_meaning"
)

# --- the shipped table ------------------------------------------------------------------------


def test_shipped_table_codes_every_totalsegmentator_total_structure(shared_data: Path) -> None:
    names = json.loads((shared_data / "totalseg" / "labels_total.json").read_text())
    table = standard_segment_codes()
    assert len(names) == 117
    assert [n for n in names if n not in table] == []
    for name in names:
        code = table[name]
        assert code.category.scheme == "SCT"
        assert code.type.scheme == "SCT"
        assert code.type.value.isdigit()
        # a _left/_right name carries its side: as the type's modifier, the region's, or in
        # the type itself ("Middle lobe of right lung", "Left atrium")
        side = code.modifier or code.region_modifier
        for word, term in (("left", LEFT), ("right", RIGHT)):
            if f"_{word}" in name:
                assert side == term or word in code.type.meaning.lower(), name


def test_shipped_table_gives_the_standard_codes_of_common_organs() -> None:
    table = standard_segment_codes()
    assert table["liver"] == SegmentCode(ANATOMY, CodedTerm("10200004", "SCT", "Liver"))
    assert table["spleen"] == SegmentCode(ANATOMY, CodedTerm("78961009", "SCT", "Spleen"))
    kidney = CodedTerm("64033007", "SCT", "Kidney")
    assert table["kidney_left"] == SegmentCode(ANATOMY, kidney, LEFT)
    assert table["kidney_right"] == SegmentCode(ANATOMY, kidney, RIGHT)
    assert table["kidney"] == SegmentCode(ANATOMY, kidney)
    cyst = table["kidney_cyst_left"]
    assert (cyst.category.value, cyst.type.meaning) == ("49755003", "Cyst")
    assert (cyst.modifier, cyst.region, cyst.region_modifier) == (None, kidney, LEFT)
    # corrected from the source: 29700009 is the *right* subclavian artery
    subclavian = CodedTerm("36765005", "SCT", "Subclavian artery")
    assert table["subclavian_artery_left"] == SegmentCode(ANATOMY, subclavian, LEFT)


def test_shipped_type_codes_are_known_to_pydicom_where_it_has_them() -> None:
    # pydicom's SNOMED CT subset (DICOM PS3.16) cross-checks a sample of the table
    for name, keyword in [
        ("liver", "Liver"),
        ("spleen", "Spleen"),
        ("kidney_left", "Kidney"),
        ("aorta", "Aorta"),
        ("pancreas", "Pancreas"),
        ("subclavian_artery_right", "SubclavianArtery"),
        ("common_carotid_artery_left", "CommonCarotidArtery"),
    ]:
        assert standard_segment_codes()[name].type.value == getattr(codes.SCT, keyword).value
    assert LEFT.value == codes.SCT.Left.value
    assert RIGHT.value == codes.SCT.Right.value


def test_shipped_table_is_read_only_and_read_once() -> None:
    table = standard_segment_codes()
    assert standard_segment_codes() is table
    with pytest.raises(TypeError):
        table["liver"] = table["spleen"]  # type: ignore[index]


# --- names ------------------------------------------------------------------------------------


def test_names_match_exactly_else_ignoring_case_and_punctuation() -> None:
    table = standard_segment_codes()
    assert find_segment_code(table, "Kidney Left") == table["kidney_left"]
    assert find_segment_code(table, "kidney-left") == table["kidney_left"]
    assert find_segment_code(table, "LIVER") == table["liver"]
    assert find_segment_code(table, "tumour") is None
    own = {"Liver": SegmentCode(ANATOMY, CodedTerm("1", "X", "mine")), "liver": table["liver"]}
    assert find_segment_code(own, "liver") == table["liver"]  # the exact name first


# --- codes from Python values -----------------------------------------------------------------


def test_codes_from_tuples_pydicom_and_highdicom_objects() -> None:
    liver = ("10200004", "SCT", "Liver")
    assert coded_term(liver) == CodedTerm(*liver)
    assert coded_term(codes.SCT.Liver) == CodedTerm(*liver)
    concept = hd.sr.CodedConcept("10200004", "SCT", "Liver")
    assert coded_term(concept) == CodedTerm(*liver)
    anatomy = ("123037004", "SCT", "Anatomical Structure")
    assert segment_code((anatomy, liver)) == SegmentCode(ANATOMY, CodedTerm(*liver))
    assert segment_code([anatomy, codes.SCT.Kidney, codes.SCT.Left]).modifier == LEFT
    mapping = {"category": anatomy, "type": liver, "region": liver, "region_modifier": LEFT}
    assert segment_code(mapping) == SegmentCode(
        ANATOMY, CodedTerm(*liver), None, CodedTerm(*liver), LEFT
    )
    same = SegmentCode(ANATOMY, CodedTerm(*liver))
    assert segment_code(same) is same


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (("10200004", "SCT"), "x category: expected a code (value, scheme, meaning) such as"),
        (("a", "b", "c", "d"), "x: expected (category, type) or (category, type, modifier)"),
        ((("1", "SCT"), ("2", "SCT", "b")), "x category: expected a code (value, scheme, meaning)"),
        ((("1", "SCT", ""), ("2", "SCT", "b")), "x category meaning: expected a non-empty text"),
        ((("1", "S\\CT", "a"), ("2", "SCT", "b")), "x category scheme: expected no backslash"),
        ((("1", "SCT", "a"), ("2", "SCT", "b" * 65)), "x type meaning: expected at most 64"),
        ({"category": ("1", "SCT", "a")}, "x: expected a 'type' code. Got none."),
        ({"category": 1, "type": 2, "colour": 3}, "x: unknown key 'colour'"),
        (
            {"category": ("1", "SCT", "a"), "type": ("2", "SCT", "b"), "region_modifier": LEFT},
            "x, key 'region': empty, but a region modifier is given",
        ),
        ("liver", "x: expected (category, type)"),
    ],
)
def test_bad_python_codes_name_what_is_wrong(value: Any, message: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        segment_code(value, "x")
    assert str(info.value).startswith(message), str(info.value)


# --- user tables ------------------------------------------------------------------------------


def test_csv_table_with_comments_optional_columns_and_quoted_cells(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text(
        "# my codes\n"
        f"{HEADER}\n"
        "liver,123037004,SCT,Anatomical Structure,10200004,SCT,Liver,,,\n"
        "\n"
        '"lesion, left",49755003,SCT,"Morphologically Altered Structure",108369006,SCT,'
        "Neoplasm,7771000,SCT,Left\n",
        encoding="utf-8",
    )
    table = read_segment_codes(path)
    assert table == {
        "liver": SegmentCode(ANATOMY, CodedTerm("10200004", "SCT", "Liver")),
        "lesion, left": SegmentCode(
            CodedTerm("49755003", "SCT", "Morphologically Altered Structure"),
            CodedTerm("108369006", "SCT", "Neoplasm"),
            LEFT,
        ),
    }
    minimal = tmp_path / "minimal.tsv"
    columns = HEADER.split(",")[:7]
    minimal.write_text(
        "\t".join(columns) + "\nspleen\t123037004\tSCT\tAnatomical Structure\t78961009\tSCT\t"
        "Spleen\n"
    )
    assert read_segment_codes(minimal) == {"spleen": standard_segment_codes()["spleen"]}


def test_json_table(tmp_path: Path) -> None:
    path = tmp_path / "codes.json"
    anatomy = list(ANATOMY)
    path.write_text(
        json.dumps(
            {
                "liver": {"category": anatomy, "type": ["10200004", "SCT", "Liver"]},
                "kidney_l": [anatomy, ["64033007", "SCT", "Kidney"], list(LEFT)],
            }
        )
    )
    kidney = SegmentCode(ANATOMY, CodedTerm("64033007", "SCT", "Kidney"), LEFT)
    assert read_segment_codes(path) == {
        "liver": SegmentCode(ANATOMY, CodedTerm("10200004", "SCT", "Liver")),
        "kidney_l": kidney,
    }


def test_totalsegmentators_own_mapping_file_is_read_as_it_is(tmp_path: Path) -> None:
    # the header of TotalSegmentator's resources/totalsegmentator_snomed_mapping.csv
    fields = [
        f"{seq}.{f}"
        for seq in (
            "SegmentedPropertyCategoryCodeSequence",
            "SegmentedPropertyTypeCodeSequence",
            "SegmentedPropertyTypeModifierCodeSequence",
            "AnatomicRegionSequence",
            "AnatomicRegionModifierSequence",
        )
        for f in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")
    ]
    path = tmp_path / "totalsegmentator_snomed_mapping.csv"
    path.write_text(
        ",".join(["Structure", *fields, "DicomRGBColor"]) + "\n"
        "kidney_left,SCT,123037004,Anatomical Structure,SCT,64033007,Kidney,SCT,7771000,Left,"
        ',,,,,,"46,138,184"\n'
    )
    assert read_segment_codes(path) == {"kidney_left": standard_segment_codes()["kidney_left"]}


def _csv(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header row (expected columns name, category_value,"),
        ("# only a comment\n", "no header row"),
        ("name,type_value\n", "row 1: no column 'category_value' (expected columns name,"),
        (HEADER + ",colour\n", "row 1, column 'colour': unknown column. Expected name,"),
        (
            HEADER + "\nliver,123037004,SCT,Anatomical Structure,,SCT,Liver\n",
            "row 2, column 'type_value': empty, but the row gives other parts of its type code",
        ),
        (
            HEADER + "\nliver,123037004,SCT,Anatomical Structure\n",
            "row 2, column 'type_value': expected a type code.",
        ),
        (
            HEADER + "\n,123037004,SCT,Anatomical Structure,10200004,SCT,Liver\n",
            "row 2, column 'name': empty.",
        ),
        (
            HEADER + "\n# c\nliver,123037004,SCT,A,10200004,SCT,Liver\n"
            "liver,123037004,SCT,A,10200004,SCT,Liver\n",
            "row 4, column 'name': 'liver' is also in row 3.",
        ),
        (
            HEADER + "\nliver,123037004,SCT,A,10200004,SCT,Liver,7771000,SCT\n",
            "row 2, column 'modifier_meaning': empty, but the row gives other parts",
        ),
        (
            HEADER + "\nliver,123037004,SCT,A,10200004,SCT," + "L" * 65 + "\n",
            "row 2, column 'type_meaning': expected at most 64 characters",
        ),
        (
            HEADER + "\nliver,1,SCT,A,2,SCT,Liver,3,SCT,Left,extra\n",
            "row 2: 11 cells, but the header has 10 columns.",
        ),
        (
            "name,category_value,category_scheme,category_meaning,type_value,type_scheme,"
            "type_meaning,region_modifier_value,region_modifier_scheme,region_modifier_meaning\n"
            "cyst,1,SCT,A,2,SCT,Cyst,7771000,SCT,Left\n",
            "row 2, column 'region_value': empty, but a region modifier is given",
        ),
    ],
)
def test_bad_csv_tables_name_file_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(InvalidValueError) as info:
        read_segment_codes(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", 'expected a JSON object {name: {"category": [value, scheme, meaning]'),
        ("{", "invalid JSON: "),
        ('{"liver": 5}', "entry 'liver': expected (category, type) or (category, type, modifier)"),
        ('{"liver": {"category": ["1", "SCT", "a"]}}', "entry 'liver': expected a 'type' code"),
        ('{" ": [["1","S","a"],["2","S","b"]]}', "an entry with an empty name."),
    ],
)
def test_bad_json_tables_name_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = _csv(tmp_path, text, "bad.json")
    with pytest.raises(InvalidValueError) as info:
        read_segment_codes(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_binary_files_are_refused_without_echoing_their_bytes(tmp_path: Path) -> None:
    for name, data in [
        ("x.csv", b"name\x00\xff\xfe\x89PNG" * 40),
        ("x.json", bytes(range(128, 256)) * 3),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidValueError) as info:
            read_segment_codes(path)
        text = str(info.value)
        assert text.startswith(f"{path}: not "), text
        assert "table of segment codes" in text
        assert "\\x" not in text
        assert "PNG" not in text
        assert len(text) < 200


def test_table_names_and_sources_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError) as info:
        parse_segment_codes(b"x", "codes.txt")
    assert str(info.value) == "codes.txt: expected a .csv, .tsv or .json table of segment codes."
    with pytest.raises(MaskFileNotFoundError):
        read_segment_codes(tmp_path / "missing.csv")
    with pytest.raises(InvalidTypeError):
        read_segment_codes(b"name,category_value")  # type: ignore[arg-type]


def test_parts_are_the_fields_of_a_segment_code() -> None:
    assert tuple(SegmentCode.__dataclass_fields__) == PARTS
