"""Label tables kept beside images: name <-> value in JSON, TSV/CSV, ITK-SNAP and 3D Slicer files.

- JSON: ``{"liver": 5, ...}`` (TotalSegmentator), ``{"5": "liver", ...}``, or either form under
  a ``"labels"`` key (nnU-Net's ``dataset.json``).
- TSV/CSV (``.tsv``, ``.csv``): ``value<sep>name`` per line (a header line is skipped; further
  columns are ignored).
- ITK-SNAP label descriptions (``.txt``): ``IDX R G B A VIS MSH "LABEL"`` per line.
- 3D Slicer color tables (``.ctbl``) and FreeSurfer-style LUTs: ``value name R G B A``.

Lines starting with ``#`` are comments everywhere. Value 0 named ``background``/``Clear
Label`` etc. is kept as written; medmask treats 0 as background either way.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .._json import loads_limited
from ..errors import FormatError, InvalidTypeError
from ..io import Target, open_source, source_name
from ..mapping import LabelMapping
from ..values import label_counts

__all__ = [
    "MAX_TABLE_BYTES",
    "default_label_names",
    "integer_labels",
    "parse_label_table",
    "read_label_table",
    "to_label_mapping",
]

#: Largest label table read (a few thousand labels fit in a few hundred KiB).
MAX_TABLE_BYTES = 16 << 20
#: Most characters of a file's content a message quotes.
_QUOTED_CHARS = 24
#: Most characters of a message that may carry content (a name from the file...).
_MESSAGE_CHARS = 200
_SPLIT = re.compile(r"[\t,;]")
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def _fail(name: str, problem: str) -> FormatError:
    return FormatError(f"{name}: not a label table: {problem}")


def _quoted(text: str, limit: int = _QUOTED_CHARS) -> str:
    """At most ``limit`` characters of file content, quoted, every unprintable one shown as
    ``?`` (a binary file must not fill a terminal with escapes)."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return repr(shown + ("..." if len(text) > limit else ""))


def _printable(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """A message that may carry file content, cut to ``limit`` printable characters."""
    shown = "".join(c if c.isprintable() else "?" for c in " ".join(text.split())[:limit])
    return shown + ("..." if len(text) > limit else "")


def _is_binary(raw: bytes) -> bool:
    """Whether ``raw`` is no text file: a NUL byte, or many control characters."""
    head = raw[:4096]
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and chr(b) not in _TEXT_CONTROLS)
    return controls * 20 > len(head)  # more than 5%


def _pairs_to_mapping(pairs: list[tuple[str, int]], name: str) -> LabelMapping:
    try:
        return LabelMapping(pairs)
    except ValueError as exc:
        raise _fail(name, _printable(str(exc))) from None


def _from_json(text: str, name: str) -> LabelMapping:
    obj: Any = loads_limited(text, FormatError, f"{name}: invalid JSON: ", f"{name}: refused: ")
    if isinstance(obj, dict) and isinstance(obj.get("labels"), dict):
        obj = obj["labels"]
    if not isinstance(obj, dict) or not obj:
        raise _fail(name, "expected a JSON object of name -> value (or value -> name)")
    pairs = []
    for key, value in obj.items():
        if isinstance(value, int) and not isinstance(value, bool):
            pairs.append((str(key), value))
        elif isinstance(value, str) and key.strip().lstrip("-").isdigit():
            pairs.append((value, int(key)))
        elif isinstance(value, list | tuple) and value and all(isinstance(v, int) for v in value):
            raise _fail(name, f"{_quoted(key)} maps to several values (region-based labels)")
        else:
            raise _fail(name, f"cannot read entry {_quoted(key)}: {_quoted(str(value))}")
    return _pairs_to_mapping(pairs, name)


def _from_lines(text: str, name: str, kind: str) -> LabelMapping:
    pairs: list[tuple[str, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if kind == "itksnap":
            try:
                fields = shlex.split(line)
            except ValueError as exc:
                raise _fail(name, f"line {number}: {exc}") from None
            if len(fields) < 8 or not fields[0].lstrip("-").isdigit():
                raise _fail(name, f'line {number}: expected IDX R G B A VIS MSH "LABEL"')
            pairs.append((fields[7], int(fields[0])))
            continue
        fields = _SPLIT.split(line) if kind == "table" else line.split()
        fields = [f.strip().strip('"') for f in fields]
        if not fields[0].lstrip("-").isdigit():
            if not pairs and kind == "table":
                continue  # a header line
            raise _fail(
                name, f"line {number}: expected a label value first, got {_quoted(fields[0])}"
            )
        if len(fields) < 2 or not fields[1]:
            raise _fail(name, f"line {number}: expected a name after the value")
        pairs.append((fields[1], int(fields[0])))
    if not pairs:
        raise _fail(name, "no labels found")
    return _pairs_to_mapping(pairs, name)


def parse_label_table(text: str | bytes, name: str, kind: str | None = None) -> LabelMapping:
    """Parse a label table's text; ``kind`` is ``"json"``, ``"table"`` (TSV/CSV),
    ``"itksnap"`` or ``"ctbl"`` (default: from ``name``'s extension)."""
    if isinstance(text, bytes):
        raw = text
        if _is_binary(raw):
            raise _fail(
                name,
                "binary content; expected a text file (JSON, TSV/CSV, ITK-SNAP label "
                "descriptions or a Slicer color table)",
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    lower = name.lower()
    if kind is None:
        kind = (
            "json"
            if lower.endswith(".json")
            else "table"
            if lower.endswith((".tsv", ".csv"))
            else "ctbl"
            if lower.endswith((".ctbl", ".lut"))
            else "itksnap"
            if lower.endswith(".txt") and '"' in text
            else "ctbl"
        )
    if kind == "json":
        return _from_json(text, name)
    return _from_lines(text, name, kind)


def read_label_table(source: Target, storage_options: dict[str, Any] | None = None) -> LabelMapping:
    """Read a label table file from any path or URL (format from the extension)."""
    byte_source = open_source(source, storage_options)
    try:
        data = byte_source.read(0, MAX_TABLE_BYTES + 1)
    finally:
        byte_source.close()
    name = source_name(source)
    if len(data) > MAX_TABLE_BYTES:
        raise _fail(name, f"larger than {MAX_TABLE_BYTES:,} bytes")
    return parse_label_table(data, name)


def to_label_mapping(
    labels: LabelMapping | Mapping[str, int] | Target, storage_options: dict[str, Any] | None = None
) -> LabelMapping:
    """A :class:`LabelMapping` from a mapping or from a label table file's path or URL."""
    if isinstance(labels, LabelMapping):
        return labels
    if isinstance(labels, Mapping):
        return LabelMapping(labels)
    if isinstance(labels, str | os.PathLike):
        return read_label_table(labels, storage_options)
    raise InvalidTypeError(
        f"Expected a mapping, a LabelMapping or a label table path. Got {type(labels).__name__}."
    )


def integer_labels(array: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
    """A label image as integers: float images rounded to int64, None if a value is not a
    whole number; other images as they are."""
    if array.dtype.kind != "f":
        return array
    rounded = np.rint(array)
    return rounded.astype(np.int64) if np.array_equal(rounded, array) else None


def default_label_names(array: npt.NDArray[Any]) -> LabelMapping:
    """``label_<value>`` for every non-zero value present in ``array``."""
    return LabelMapping({f"label_{v}": v for v in label_counts(array) if v})
