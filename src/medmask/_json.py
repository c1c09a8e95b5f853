"""JSON parsing with limits, for metadata and label tables that may come from hostile files.

``json.loads`` alone lets a small document cost a lot: deep nesting raises ``RecursionError``,
a 5,000-digit number raises a plain ``ValueError`` (or takes quadratic time), and a few MiB of
``[{},{},...]`` become hundreds of MB of Python objects. :func:`loads_limited` refuses such
documents with one exception type chosen by the caller.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "MAX_JSON_CONTAINERS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_NUMBER_CHARS",
    "MAX_JSON_VALUES",
    "json_depth",
    "loads_limited",
]

#: Deepest nesting of arrays/objects accepted.
MAX_JSON_DEPTH = 64
#: Longest number literal accepted (a float repr needs at most 24 characters).
MAX_JSON_NUMBER_CHARS = 40
#: Most arrays plus objects in one document (each costs ~64 bytes of Python objects).
MAX_JSON_CONTAINERS = 1 << 20
#: Most values in one document (counted as separators, an upper bound).
MAX_JSON_VALUES = 1 << 22


class _Refused(Exception):
    pass


def _number(text: str) -> str:
    if len(text) > MAX_JSON_NUMBER_CHARS:
        raise _Refused(f"a JSON number of {len(text)} characters (limit {MAX_JSON_NUMBER_CHARS})")
    return text


def _int(text: str) -> int:
    return int(_number(text))


def _float(text: str) -> float:
    return float(_number(text))


def _constant(text: str) -> Any:
    raise _Refused(f"the non-standard JSON constant {text}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {key!r} twice in one JSON object")
            seen.add(key)
    return obj


def json_depth(obj: object) -> int:
    """Nesting depth of arrays and objects in ``obj`` (0 for a scalar); iterative."""
    deepest = 0
    stack: list[tuple[object, int]] = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def loads_limited(
    data: bytes | bytearray | memoryview | str,
    error: type[Exception],
    invalid: str,
    refused: str,
    *,
    object_pairs_hook: Any = None,
    allow_constants: bool = False,
    unique_keys: bool = False,
) -> Any:
    """Parse JSON within the module limits.

    Raises ``error(invalid + <decoder message>)`` for text that is not UTF-8 JSON and
    ``error(refused + <limit>)`` for a document beyond the limits. Exceptions raised by
    ``object_pairs_hook`` propagate unchanged. ``allow_constants`` admits ``NaN`` and
    ``Infinity`` (Python's extension), refused otherwise. ``unique_keys`` (without an
    ``object_pairs_hook``) refuses an object with a key twice, ``error(refused + ...)``: JSON
    parsers disagree on which one wins.

    The nesting depth counts the top-level array or object as 1: ``MAX_JSON_DEPTH`` levels are
    accepted, one more is refused.
    """
    if unique_keys and object_pairs_hook is None:
        object_pairs_hook = _unique_keys
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{invalid}{exc}") from None
    else:
        text = data
    containers = text.count("[") + text.count("{")
    if containers > MAX_JSON_CONTAINERS:
        raise error(
            f"{refused}up to {containers:,} JSON arrays/objects, above the limit of "
            f"{MAX_JSON_CONTAINERS:,}."
        )
    values = text.count(",") + containers
    if values > MAX_JSON_VALUES:
        raise error(
            f"{refused}up to {values:,} JSON values, above the limit of {MAX_JSON_VALUES:,}."
        )
    try:
        obj = json.loads(
            text,
            parse_int=_int,
            parse_float=_float,
            parse_constant=None if allow_constants else _constant,
            object_pairs_hook=object_pairs_hook,
        )
    except _Refused as exc:
        raise error(f"{refused}{exc}.") from None
    except RecursionError:
        raise error(f"{refused}JSON nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except json.JSONDecodeError as exc:
        raise error(f"{invalid}{exc}") from None
    if containers > MAX_JSON_DEPTH and json_depth(obj) > MAX_JSON_DEPTH:
        raise error(f"{refused}JSON nested deeper than {MAX_JSON_DEPTH} levels.")
    return obj
