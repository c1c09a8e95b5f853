"""Bidirectional mapping between structure names and label values."""

from __future__ import annotations

import difflib
import json
import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ._json import loads_limited
from .errors import InvalidTypeError, InvalidValueError, LabelNotFoundError

__all__ = [
    "MAX_LABEL",
    "LabelMapping",
    "label_of",
    "mapping_items",
    "name_of",
    "parse_label_name",
    "parse_label_value",
]

#: Largest label value any mask can hold (32-bit storage).
MAX_LABEL = 2**32 - 1


def parse_label_name(name: object) -> str:
    """Return ``name`` if it is a valid label name, else raise ``ValueError``/``TypeError``."""
    if not isinstance(name, str):
        raise InvalidTypeError(
            f"Expected a label name of type str. Got {type(name).__name__}: {name!r}."
        )
    if not name.strip():
        raise InvalidValueError(f"Expected a non-empty label name. Got {name!r}.")
    return name


def parse_label_value(value: object) -> int:
    """Return ``value`` as ``int`` if it is a valid label value (0 <= value < 2**32)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(
            f"Expected a label value of type int. Got {type(value).__name__}: {value!r}."
        )
    label = int(value)
    if not 0 <= label <= MAX_LABEL:
        raise InvalidValueError(f"Expected a label value in [0, {MAX_LABEL}]. Got {label}.")
    return label


def close_matches_hint(word: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'a', 'b'?"`` for near matches of ``word``, or ``""``."""
    matches = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    if not matches:
        return ""
    return " Did you mean " + ", ".join(repr(m) for m in matches) + "?"


class LabelMapping:
    """Immutable, bidirectional mapping ``name <-> label value``.

    Parameters
    ----------
    mapping
        ``{name: value}`` or an iterable of ``(name, value)`` pairs. It is copied. Names are
        unique non-empty strings; values unique integers in ``[0, 2**32 - 1]``.

    Notes
    -----
    Access a label as ``m["liver"]``, ``m("liver")`` or ``m.liver``. Attribute access rule: a
    public attribute of ``LabelMapping`` (``items``, ``inverse``, ...) is never shadowed and
    never silently returned for a label of the same name: if a label is called like a public
    attribute, ``m.<that name>`` raises ``AttributeError`` telling you to use ``m["<name>"]``
    (the method stays reachable as ``LabelMapping.<name>(m)``). Names that are not Python
    identifiers are only reachable with ``m[...]``.

    Examples
    --------
    >>> m = LabelMapping({"liver": 1, "spleen": 2})
    >>> m["liver"], m.spleen, m.inverse(1)
    (1, 2, 'liver')
    """

    __slots__ = ("_label_to_name", "_name_to_label")

    _name_to_label: dict[str, int]
    _label_to_name: dict[int, str]

    def __init__(self, mapping: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None):
        # a LabelMapping's .items() is unreachable when it has a label named "items"
        pairs: object = (
            mapping_items(mapping)
            if isinstance(mapping, LabelMapping)
            else mapping.items()
            if isinstance(mapping, Mapping)
            else (mapping or ())
        )
        if not isinstance(pairs, Iterable):
            raise InvalidTypeError(
                f"Expected a mapping or (name, value) pairs. Got {type(mapping).__name__}."
            )
        name_to_label: dict[str, int] = {}
        label_to_name: dict[int, str] = {}
        for pair in pairs:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise InvalidTypeError(f"Expected (name, value) pairs. Got {pair!r}.")
            name, label = parse_label_name(pair[0]), parse_label_value(pair[1])
            if name in name_to_label:
                raise InvalidValueError(f"Duplicate label name {name!r}.")
            if label in label_to_name:
                raise InvalidValueError(
                    f"Duplicate label value {label}: used by {label_to_name[label]!r} and {name!r}."
                )
            name_to_label[name] = label
            label_to_name[label] = name
        object.__setattr__(self, "_name_to_label", name_to_label)
        object.__setattr__(self, "_label_to_name", label_to_name)

    # -- lookups -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> int:
        try:
            return self._name_to_label[name]
        except (KeyError, TypeError):
            raise LabelNotFoundError(
                f"No label named {name!r}." + close_matches_hint(str(name), self._name_to_label)
            ) from None

    def __call__(self, name: str) -> int:
        return self[name]

    def __getattribute__(self, attr: str) -> Any:
        if attr in _PUBLIC_ATTRIBUTES and attr in object.__getattribute__(self, "_name_to_label"):
            raise AttributeError(attr)  # handled (with a clear message) by __getattr__
        return object.__getattribute__(self, attr)

    def __getattr__(self, attr: str) -> int:
        # Called when normal lookup fails: label names that are not attributes, and
        # public attribute names that are also label names (which never resolve silently).
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in _PUBLIC_ATTRIBUTES:
            raise AttributeError(
                f"{attr!r} is both a label name and a LabelMapping attribute; use "
                f"mapping[{attr!r}] for the label or LabelMapping.{attr}(mapping)."
            )
        try:
            return self._name_to_label[attr]
        except KeyError:
            raise AttributeError(
                f"LabelMapping has no attribute or label {attr!r}."
                + close_matches_hint(attr, self._name_to_label)
            ) from None

    def __setattr__(self, attr: str, value: object) -> None:
        raise AttributeError("LabelMapping is immutable; use with_label() to extend it.")

    def inverse(self, label: int) -> str:
        """Return the name of label value ``label``."""
        name = self._label_to_name.get(_as_lookup_value(label))  # type: ignore[arg-type]
        if name is None:
            raise LabelNotFoundError(
                f"No label with value {label!r}. Known values: {sorted(self._label_to_name)}."
            )
        return name

    def has_label(self, label: int) -> bool:
        """Return whether some name maps to label value ``label``."""
        return _as_lookup_value(label) in self._label_to_name

    def has_name(self, name: str) -> bool:
        """Return whether ``name`` is in the mapping."""
        return name in self._name_to_label

    def __contains__(self, name: object) -> bool:
        return name in self._name_to_label

    # -- views ---------------------------------------------------------------------------------
    def items(self) -> list[tuple[str, int]]:
        """Return ``(name, value)`` pairs in insertion order."""
        return list(self._name_to_label.items())

    def names(self) -> list[str]:
        """Return the names in insertion order."""
        return list(self._name_to_label)

    def labels(self) -> list[int]:
        """Return the label values in insertion order."""
        return list(self._name_to_label.values())

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._name_to_label))

    def __len__(self) -> int:
        return len(self._name_to_label)

    def max_label(self) -> int:
        """Return the largest label value, or 0 for an empty mapping."""
        return max(self._label_to_name, default=0)

    # -- building ------------------------------------------------------------------------------
    def with_label(self, name: str, label: int) -> LabelMapping:
        """Return a new mapping with ``name -> label`` added (duplicates raise ``ValueError``)."""
        return LabelMapping([*self._name_to_label.items(), (name, label)])

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, int]:
        """Return a new ``{name: value}`` dict."""
        return dict(self._name_to_label)

    def to_json(self) -> str:
        """Return the mapping as a JSON object ``{"name": value, ...}``."""
        return json.dumps(self._name_to_label, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> LabelMapping:
        """Parse a JSON object ``{"name": value, ...}`` (as written by :meth:`to_json`)."""
        if not isinstance(text, str | bytes | bytearray):
            raise InvalidTypeError(f"Expected JSON text (str or bytes). Got {type(text).__name__}.")
        obj = loads_limited(
            text,
            InvalidValueError,
            "Expected a JSON object of name -> label value. ",
            "Expected a JSON object of name -> label value within limits. It has ",
            object_pairs_hook=_reject_duplicate_keys,
            allow_constants=True,  # NaN is refused below as a label value, with a clear message
        )
        if not isinstance(obj, dict):
            raise InvalidValueError(
                f"Expected a JSON object of name -> label value. Got {obj!r:.80}."
            )
        try:
            return cls(obj)
        except TypeError as exc:  # bad content of valid JSON is a value error
            raise InvalidValueError(str(exc)) from None

    # -- protocol ------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelMapping):
            return NotImplemented
        return self._name_to_label == other._name_to_label

    def __hash__(self) -> int:
        return hash(frozenset(self._name_to_label.items()))

    def __repr__(self) -> str:
        return f"LabelMapping({self._name_to_label!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (LabelMapping, (self._name_to_label,))

    def __copy__(self) -> LabelMapping:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> LabelMapping:
        return self


def _as_lookup_value(label: object) -> int | None:
    # Only integers (not bool, float or str) name a label value.
    if isinstance(label, bool | np.bool_) or not isinstance(label, numbers.Integral):
        return None
    return int(label)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidValueError(f"Duplicate label name {key!r} in JSON.")
        out[key] = value
    return out


# Library code uses these instead of LabelMapping's public methods, which are unreachable by
# attribute on a mapping that has a label of the same name (e.g. "items").
def mapping_items(mapping: LabelMapping) -> list[tuple[str, int]]:
    """Return ``(name, value)`` pairs of ``mapping`` in insertion order."""
    return list(mapping._name_to_label.items())


def label_of(mapping: LabelMapping, name: str) -> int | None:
    """Return the value of ``name``, or None."""
    return mapping._name_to_label.get(name)


def name_of(mapping: LabelMapping, label: int) -> str | None:
    """Return the name of label value ``label``, or None."""
    return mapping._label_to_name.get(label)


_PUBLIC_ATTRIBUTES = frozenset(a for a in dir(LabelMapping) if not a.startswith("_"))
