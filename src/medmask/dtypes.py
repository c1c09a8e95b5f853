"""Bit depths, their storage dtypes and JSON names, and the largest label a dtype holds.

The one home of these facts (docs/format.md section 2: ``bit_depth`` and ``dtype``); numpy only.
"""

from __future__ import annotations

import numbers
from typing import Any, Final, Literal

import numpy as np

from .errors import InvalidValueError

__all__ = [
    "BIT_DEPTHS",
    "DTYPE_NAMES",
    "BitDepth",
    "bit_depth_of_name",
    "dtype_for_bit_depth",
    "max_label",
    "parse_bit_depth",
    "smallest_bit_depth",
    "value_max",
]

BitDepth = Literal[1, 8, 16, 32]
BIT_DEPTHS: Final[tuple[BitDepth, ...]] = (1, 8, 16, 32)
#: JSON ``dtype`` name of each bit depth's storage dtype.
DTYPE_NAMES: Final[dict[int, str]] = {1: "bool", 8: "uint8", 16: "uint16", 32: "uint32"}
_DTYPES: Final[dict[int, np.dtype[Any]]] = {depth: np.dtype(n) for depth, n in DTYPE_NAMES.items()}
_DEPTH_OF_NAME: Final[dict[str, BitDepth]] = {
    name: depth for depth, name in zip(BIT_DEPTHS, DTYPE_NAMES.values(), strict=True)
}


def parse_bit_depth(value: object) -> BitDepth:
    """Return ``value`` if it is a supported bit depth (1, 8, 16 or 32)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in _DTYPES:
        raise InvalidValueError(f"Expected a bit depth in {BIT_DEPTHS}. Got {value!r}.")
    depth: BitDepth = int(value)  # type: ignore[assignment]
    return depth


def dtype_for_bit_depth(bit_depth: int) -> np.dtype[Any]:
    """Return the storage dtype of a bit depth: bool, uint8, uint16 or uint32."""
    return _DTYPES[parse_bit_depth(bit_depth)]


def bit_depth_of_name(name: object) -> BitDepth | None:
    """The bit depth whose storage dtype is called ``name`` (``"uint16"`` -> 16), else None."""
    return _DEPTH_OF_NAME.get(name) if isinstance(name, str) else None


def max_label(bit_depth: int) -> int:
    """The largest label value a bit depth holds (1 for bit depth 1)."""
    return 1 if bit_depth == 1 else (1 << bit_depth) - 1


def smallest_bit_depth(max_value: int) -> BitDepth:
    """The smallest integer bit depth (8, 16 or 32) that holds ``max_value``."""
    for depth in BIT_DEPTHS[1:]:
        if max_value <= max_label(depth):
            return depth
    raise InvalidValueError(f"Expected label values below 2**32. Got {max_value}.")


def value_max(dtype: np.dtype[Any]) -> int:
    """The largest label an array of ``dtype`` may hold: 1 for bool, the signed maximum for
    signed integers (labels are never negative), else the unsigned maximum."""
    if dtype.kind == "b":
        return 1
    bits = 8 * dtype.itemsize
    return (1 << (bits - 1)) - 1 if dtype.kind == "i" else (1 << bits) - 1
