"""Coded terms of DICOM SEG segments: what a PACS shows instead of "Organ".

A segment is described by a segmented property *category* and *type* (SNOMED CT codes such as
``("123037004", "SCT", "Anatomical Structure")`` and ``("10200004", "SCT", "Liver")``), an
optional *modifier* of the type (laterality: ``("7771000", "SCT", "Left")``), and an optional
anatomic *region* with its own modifier (a cyst in the left kidney).

- :func:`standard_segment_codes`: the table shipped with medmask (``data/segment_codes.csv``:
  TotalSegmentator's names and more, from TotalSegmentator's SNOMED mapping);
- :func:`read_segment_codes`: a user table (CSV, TSV or JSON; columns and keys in
  ``docs/interop.md``);
- :func:`segment_code`: a :class:`SegmentCode` from plain tuples or pydicom / highdicom codes.

This module needs neither pydicom nor highdicom; :mod:`medmask.interop.dicom` turns the terms
into highdicom's coded concepts.
"""

from __future__ import annotations

import csv
import functools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, NamedTuple

from .._json import loads_limited
from ..errors import InvalidTypeError, InvalidValueError
from ..io import Target, open_source, source_name

__all__ = [
    "MAX_CODE_TABLE_BYTES",
    "PARTS",
    "CodedTerm",
    "SegmentCode",
    "coded_term",
    "find_segment_code",
    "parse_segment_codes",
    "read_segment_codes",
    "segment_code",
    "standard_segment_codes",
]

#: Largest segment code table read.
MAX_CODE_TABLE_BYTES = 16 << 20
#: The parts of a :class:`SegmentCode`, in table column order (``category`` and ``type``
#: required).
PARTS = ("category", "type", "modifier", "region", "region_modifier")
_FIELDS = ("value", "scheme", "meaning")
_MEANING_MAX = 64  # DICOM LO (Code Meaning)
_BAD_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")


class CodedTerm(NamedTuple):
    """One coded term: ``(value, scheme, meaning)``, e.g. ``("10200004", "SCT", "Liver")``."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class SegmentCode:
    """The coded description of one segment.

    Attributes
    ----------
    category, type
        Segmented property category and type (DICOM CID 7150 / 7151).
    modifier
        Modifier of the type, e.g. laterality (SCT 7771000 Left, SCT 24028007 Right).
    region, region_modifier
        Anatomic region the segment lies in, and its modifier (e.g. a cyst of the left kidney).
    """

    category: CodedTerm
    type: CodedTerm
    modifier: CodedTerm | None = None
    region: CodedTerm | None = None
    region_modifier: CodedTerm | None = None


def _segment_of(terms: Mapping[str, CodedTerm | None], what: str, region: str) -> SegmentCode:
    """A SegmentCode of checked terms; ``region`` names where the region is given."""
    category, kind = terms.get("category"), terms.get("type")
    if category is None or kind is None:
        missing = "category" if category is None else "type"
        raise InvalidValueError(f"{what}: expected a {missing!r} code. Got none.")
    region_term, region_modifier = terms.get("region"), terms.get("region_modifier")
    if region_modifier is not None and region_term is None:
        raise InvalidValueError(
            f"{what}, {region}: empty, but a region modifier is given (it modifies the region)."
        )
    return SegmentCode(category, kind, terms.get("modifier"), region_term, region_modifier)


# --- coercion ---------------------------------------------------------------------------------


def _term_text(text: object, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidValueError(f"{what}: expected a non-empty text. Got {text!r:.80}.")
    if _BAD_CHARS.search(text):
        raise InvalidValueError(
            f"{what}: expected no backslash or control character. Got {text!r:.80}."
        )
    return text.strip()


def _checked_term(parts: Sequence[object], whats: Sequence[str]) -> CodedTerm:
    value, scheme, meaning = (_term_text(p, w) for p, w in zip(parts, whats, strict=True))
    if len(meaning) > _MEANING_MAX:
        raise InvalidValueError(
            f"{whats[2]}: expected at most {_MEANING_MAX} characters (DICOM Code Meaning). "
            f"Got {len(meaning)}."
        )
    return CodedTerm(value, scheme, meaning)


def coded_term(code: object, what: str = "code") -> CodedTerm:
    """A :class:`CodedTerm` from a ``(value, scheme, meaning)`` sequence, a pydicom ``Code``
    or a highdicom ``CodedConcept``; ``what`` names it in errors."""
    if isinstance(code, CodedTerm):
        return code
    if all(hasattr(code, a) for a in ("value", "scheme_designator", "meaning")):
        parts: Sequence[object] = (
            getattr(code, "value"),  # noqa: B009 - duck-typed pydicom/highdicom code
            getattr(code, "scheme_designator"),  # noqa: B009
            getattr(code, "meaning"),  # noqa: B009
        )
    elif isinstance(code, list | tuple) and len(code) == 3:
        parts = code
    else:
        raise InvalidValueError(
            f"{what}: expected a code (value, scheme, meaning) such as ('10200004', 'SCT', "
            f"'Liver'), or a pydicom Code. Got {code!r:.80}."
        )
    return _checked_term(parts, [f"{what} {f}" for f in _FIELDS])


def segment_code(value: object, what: str = "segment code") -> SegmentCode:
    """A :class:`SegmentCode` from ``(category, type)``, ``(category, type, modifier)``, a
    mapping ``{"category": ..., "type": ..., "modifier": ..., "region": ...,
    "region_modifier": ...}`` or a SegmentCode; each code as :func:`coded_term` takes it."""
    if isinstance(value, SegmentCode):
        return value
    if isinstance(value, Mapping):
        unknown = [str(k) for k in value if k not in PARTS]
        if unknown:
            raise InvalidValueError(
                f"{what}: unknown key {unknown[0]!r:.40}. Expected keys {', '.join(PARTS)}."
            )
        missing = [p for p in PARTS[:2] if value.get(p) is None]
        if missing:
            raise InvalidValueError(f"{what}: expected a {missing[0]!r} code. Got none.")
        given = {p: value.get(p) for p in PARTS}
    elif isinstance(value, list | tuple) and len(value) in (2, 3):
        given = dict(zip(PARTS, value, strict=False))
    else:
        raise InvalidValueError(
            f"{what}: expected (category, type) or (category, type, modifier) codes. "
            f"Got {value!r:.80}."
        )
    terms = {
        part: None if code is None else coded_term(code, f"{what} {part}")
        for part, code in given.items()
    }
    return _segment_of(terms, what, "key 'region'")


# --- names ------------------------------------------------------------------------------------


def _normal(name: str) -> str:
    """``"Kidney Left"``, ``"kidney-left"`` -> ``"kidney_left"``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def find_segment_code(table: Mapping[str, SegmentCode], name: str) -> SegmentCode | None:
    """The entry of ``name`` in ``table``: by exact name, else ignoring case and treating runs
    of spaces, hyphens and other punctuation as one ``_``; None when neither matches."""
    found = table.get(name)
    if found is not None:
        return found
    wanted = _normal(name)
    for key, code in table.items():
        if _normal(key) == wanted:
            return code
    return None


# --- tables -----------------------------------------------------------------------------------

#: Column name prefixes and suffixes of TotalSegmentator's own mapping file, also accepted.
_TS_PARTS = {
    "Category": "category",
    "SegmentedPropertyCategoryCodeSequence": "category",
    "Type": "type",
    "SegmentedPropertyTypeCodeSequence": "type",
    "TypeModifier": "modifier",
    "SegmentedPropertyTypeModifierCodeSequence": "modifier",
    "AnatomicRegion": "region",
    "AnatomicRegionSequence": "region",
    "AnatomicRegionModifier": "region_modifier",
    "AnatomicRegionModifierSequence": "region_modifier",
}
_TS_FIELDS = {"CodeValue": "value", "CodingSchemeDesignator": "scheme", "CodeMeaning": "meaning"}
_IGNORED_COLUMNS = re.compile(r"(DicomRGBColor|recommendedDisplayRGBValue(\.[RGB])?)$")
_COLUMNS = ("name", *(f"{p}_{f}" for p in PARTS for f in _FIELDS))


def _column_key(column: str) -> str | None:
    """The medmask column a header cell names (``"type_value"``), None for an ignored one."""
    if column in _COLUMNS:
        return column
    if column in ("Name", "Structure"):
        return "name"
    prefix, _, field = column.rpartition(".")
    if prefix in _TS_PARTS and field in _TS_FIELDS:
        return f"{_TS_PARTS[prefix]}_{_TS_FIELDS[field]}"
    return None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line


def _row_term(cells: Mapping[str, str], part: str, where: str, required: bool) -> CodedTerm | None:
    given = {f: cells.get(f"{part}_{f}", "").strip() for f in _FIELDS}
    if not any(given.values()):
        if required:
            raise InvalidValueError(f"{where}, column '{part}_value': expected a {part} code.")
        return None
    for f in _FIELDS:
        if not given[f]:
            raise InvalidValueError(
                f"{where}, column '{part}_{f}': empty, but the row gives other parts of its "
                f"{part} code (a code needs value, scheme and meaning)."
            )
    return _checked_term(
        [given[f] for f in _FIELDS], [f"{where}, column '{part}_{f}'" for f in _FIELDS]
    )


def _from_csv(text: str, name: str, delimiter: str) -> dict[str, SegmentCode]:
    rows = _lines(text)
    header_line = next(rows, None)
    if header_line is None:
        raise InvalidValueError(f"{name}: no header row (expected columns {', '.join(_COLUMNS)}).")
    header_number, header_text = header_line
    header = [cell.strip() for cell in next(csv.reader([header_text], delimiter=delimiter))]
    keys: list[str | None] = []
    for column in header:
        key = _column_key(column)
        if key is None and not _IGNORED_COLUMNS.match(column):
            raise InvalidValueError(
                f"{name}: row {header_number}, column {column!r:.60}: unknown column. Expected "
                f"{', '.join(_COLUMNS)} (the last nine optional)."
            )
        keys.append(key)
    for required in _COLUMNS[:7]:
        if required not in keys:
            raise InvalidValueError(
                f"{name}: row {header_number}: no column {required!r} (expected columns "
                f"{', '.join(_COLUMNS)}, the last nine optional)."
            )
    table: dict[str, SegmentCode] = {}
    first_row: dict[str, int] = {}
    for number, line in rows:
        values = next(csv.reader([line], delimiter=delimiter))
        if len(values) > len(keys):
            raise InvalidValueError(
                f"{name}: row {number}: {len(values)} cells, but the header has {len(keys)} "
                "columns."
            )
        cells = {k: v for k, v in zip(keys, values, strict=False) if k is not None}
        where = f"{name}: row {number}"
        segment = cells.get("name", "").strip()
        if not segment:
            raise InvalidValueError(f"{where}, column 'name': empty.")
        if segment in first_row:
            raise InvalidValueError(
                f"{where}, column 'name': {segment!r:.60} is also in row {first_row[segment]}."
            )
        first_row[segment] = number
        terms = {p: _row_term(cells, p, where, p in PARTS[:2]) for p in PARTS}
        table[segment] = _segment_of(terms, where, "column 'region_value'")
    return table


def _from_json(text: str, name: str) -> dict[str, SegmentCode]:
    obj: Any = loads_limited(
        text, InvalidValueError, f"{name}: invalid JSON: ", f"{name}: refused: "
    )
    if not isinstance(obj, dict):
        raise InvalidValueError(
            f'{name}: expected a JSON object {{name: {{"category": [value, scheme, meaning], '
            f'"type": [...], ...}}}}. Got a JSON {type(obj).__name__}.'
        )
    table = {}
    for segment, entry in obj.items():
        if not segment.strip():
            raise InvalidValueError(f"{name}: an entry with an empty name.")
        table[segment] = segment_code(entry, f"{name}: entry {segment!r:.60}")
    return table


def _decode(data: bytes, name: str) -> str:
    if b"\x00" in data:
        raise InvalidValueError(
            f"{name}: not a text file (expected a CSV, TSV or JSON table of segment codes)."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidValueError(
            f"{name}: not UTF-8 text (byte {exc.start:,}); expected a CSV, TSV or JSON table "
            "of segment codes."
        ) from None


def parse_segment_codes(data: bytes | str, name: str) -> dict[str, SegmentCode]:
    """Parse a segment code table's content; the format follows ``name``'s suffix (``.csv``,
    ``.tsv`` or ``.json``)."""
    suffix = os.path.splitext(name.split("?", 1)[0])[1].lower()
    if suffix not in (".csv", ".tsv", ".json"):
        raise InvalidValueError(f"{name}: expected a .csv, .tsv or .json table of segment codes.")
    text = data if isinstance(data, str) else _decode(data, name)
    if suffix == ".json":
        return _from_json(text, name)
    return _from_csv(text, name, "\t" if suffix == ".tsv" else ",")


def read_segment_codes(
    source: Target, storage_options: dict[str, Any] | None = None
) -> dict[str, SegmentCode]:
    """Read a table of segment codes (``{name: SegmentCode}``) from a path or URL.

    The format follows the suffix: ``.csv`` / ``.tsv`` (a header row of the columns in
    ``docs/interop.md``; TotalSegmentator's own ``totalsegmentator_snomed_mapping.csv`` too) or
    ``.json`` (``{name: {"category": [value, scheme, meaning], "type": [...], "modifier":
    [...]}}``). Lines starting with ``#`` are comments. Raises :class:`InvalidValueError`
    naming the file, the row and the column (or the entry and the key) of any problem.
    """
    name = source_name(source)
    if not isinstance(source, str | os.PathLike):
        raise InvalidTypeError(
            f"Expected the path or URL of a segment code table. Got {type(source).__name__}."
        )
    byte_source = open_source(source, storage_options)
    try:
        data = byte_source.read(0, MAX_CODE_TABLE_BYTES + 1)
    finally:
        byte_source.close()
    if len(data) > MAX_CODE_TABLE_BYTES:
        raise InvalidValueError(f"{name}: larger than {MAX_CODE_TABLE_BYTES:,} bytes.")
    return parse_segment_codes(data, name)


@functools.cache
def standard_segment_codes() -> Mapping[str, SegmentCode]:
    """The table shipped with medmask (read-only): SNOMED CT codes for TotalSegmentator's
    structure names (all 117 of its ``total`` task and its other tasks') and generic ones
    (``kidney``, ``ribs``, ``vertebrae``...). Source and licence in the file's header."""
    text = resources.files(__package__).joinpath("data", "segment_codes.csv").read_text("utf-8")
    return MappingProxyType(_from_csv(text, "medmask/interop/data/segment_codes.csv", ","))
