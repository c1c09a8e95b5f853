"""Progress bars (tqdm, on stderr) for loops over files; plain iteration when disabled."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
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


@contextlib.contextmanager
def counter(
    *, enabled: bool, desc: str, total: int, unit: str = "file"
) -> Iterator[Callable[[int], None]]:
    """A function ``advance(n)`` moving a progress bar on stderr when ``enabled``."""
    if not enabled:
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(desc=desc, total=total, unit=unit, file=sys.stderr, leave=False) as bar:
        yield bar.update
