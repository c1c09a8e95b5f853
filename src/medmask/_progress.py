"""Progress bars (tqdm, on stderr) for loops over files; plain iteration when disabled."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], *, enabled: bool, desc: str, total: int | None = None, unit: str = "file"
) -> Iterable[T]:
    """``items``, shown as a progress bar on stderr when ``enabled``."""
    if not enabled:
        return items
    from tqdm import tqdm

    bar: Iterable[T] = tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False)
    return bar
