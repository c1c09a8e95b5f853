"""Byte-range planning: merging nearby ranges into few requests, splitting the answers, and
serving ranges from a file's first read (its head)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from ..config import Config
from ..config import get as get_config

__all__ = [
    "HEAD_GUESS",
    "MAX_CONCURRENCY",
    "MERGE_GAP",
    "MERGE_GAP_REMOTE",
    "MERGE_MAX",
    "merge_gap",
    "merge_ranges",
    "split_by_head",
    "split_merged",
]

#: First read of a file: header, metadata and index usually fit.
HEAD_GUESS = 64 << 10
#: Defaults of :mod:`medmask.config`'s ``range_gap`` (ranges closer than this are fetched as
#: one request, on local files and memory), ``range_gap_remote`` (the same on object stores),
#: ``range_block`` (larger merged reads are split, so that they go out concurrently) and
#: ``max_concurrency`` (requests in flight for batched reads).
MERGE_GAP: Final = Config.range_gap
MERGE_GAP_REMOTE: Final = Config.range_gap_remote
MERGE_MAX: Final = Config.range_block
MAX_CONCURRENCY: Final = Config.max_concurrency


def merge_gap(remote: bool) -> int:
    """The merge gap in force: :mod:`medmask.config`'s ``range_gap_remote`` for object stores
    and HTTP (``remote``), ``range_gap`` for local files and memory."""
    settings = get_config()
    return settings.range_gap_remote if remote else settings.range_gap


def merge_ranges(
    ranges: Iterable[tuple[int, int]], gap: int | None = None, max_size: int | None = None
) -> list[tuple[int, int]]:
    """Sort ranges and merge those that overlap or lie within ``gap`` bytes of each other, as
    long as the merged range stays within ``max_size`` bytes (a range alone may exceed it).
    Both default to :mod:`medmask.config`'s ``range_gap`` (the local one: byte sources pass
    :func:`merge_gap` of their store) and ``range_block``."""
    settings = get_config()
    gap = settings.range_gap if gap is None else gap
    max_size = settings.range_block if max_size is None else max_size
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        near = bool(merged) and start <= merged[-1][1] + gap
        if near and (
            start < merged[-1][1] or max(merged[-1][1], end) - merged[-1][0] <= max_size
        ):  # overlapping ranges always merge: each range must lie in one merged range
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            continue
        merged.append((start, end))
    return merged


def split_merged(
    ranges: Sequence[tuple[int, int]], merged: Sequence[tuple[int, int]], blobs: Sequence[bytes]
) -> list[bytes]:
    """The bytes of each of ``ranges``, cut from the ``blobs`` read for the ``merged`` ranges."""
    out = []
    for start, end in ranges:
        for (m_start, m_end), blob in zip(merged, blobs, strict=True):
            if m_start <= start and end <= m_end:
                out.append(blob[start - m_start : end - m_start])
                break
    return out


def split_by_head(
    head: bytes, ranges: Sequence[tuple[int, int]]
) -> tuple[list[bytes | None], list[tuple[int, int]]]:
    """Slices of ``head`` (a file's first read) for the ranges it covers, None for the others,
    and those other ranges. A head shorter than :data:`HEAD_GUESS` is the whole file, so it
    covers every range."""
    whole_file = len(head) < HEAD_GUESS
    found: list[bytes | None] = []
    missing: list[tuple[int, int]] = []
    for start, end in ranges:
        if end <= len(head) or whole_file:
            found.append(head[start:end])
        else:
            found.append(None)
            missing.append((start, end))
    return found, missing
