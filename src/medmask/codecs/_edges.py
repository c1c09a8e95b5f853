"""``medmask.edges``: the edges of every row (where the value changes along the last axis),
each predicted from the reference row, the same row of the previous slice.

Segmentations are smooth surfaces: a row's edges sit within a few voxels of the previous
slice's, so most edges cost one 4-bit "moved by d" code, grouped by how the edge moved last
time (its velocity), and zstd codes each group with its own statistics. Layout:
``docs/codecs.md``, section 6. A compiled kernel (``_edges_kernel``, built at install) encodes
and decodes without the GIL; without it, numpy decodes every stream (slower) and a Python
encoder writes the same bytes.
"""

from __future__ import annotations

import importlib
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import zstandard as zstd

from medmask.codecs._base import CodecBase
from medmask.codecs._stream import (
    HEADER_PREFIX,
    MAGIC,
    VERSION,
    byte_width,
    check_declared,
    dtype_code,
    dtype_from_code,
    frame_size,
    memory_refusal,
    normalize_input,
    restore_dtype,
    storage_dtype,
    value_max,
    zstd_compressor,
    zstd_decompressor,
)
from medmask.errors import CodecError

#: ``MEDMASK_KERNEL=0`` (read at import) forces the numpy decoder and the Python encoder.
KERNEL_ENV: Final = "MEDMASK_KERNEL"

_kernel: Any = None
if os.environ.get(KERNEL_ENV, "1").strip() != "0":
    try:  # the optional compiled kernel (setup.py); numpy paths read every stream without it
        _kernel = importlib.import_module("medmask.codecs._edges_kernel")
    except ImportError:  # pragma: no cover - exercised by the tests that disable the kernel
        _kernel = None

__all__ = ["DEFAULT_SHIFT", "STATS_DTYPE", "EdgesCodec", "kernel_available"]

KIND: Final = 3
MODE_CONSTANT: Final = 0
MODE_EDGES: Final = 1
MODE_PLAIN: Final = 2
DEFAULT_SHIFT: Final = 6  # K: edges moving by up to K voxels are coded as moves
MAX_SHIFT: Final = 7  # fate codes 0..2K+1 fit a nibble
_CRC: Final = struct.Struct("<I")
#: Written since stream version 1 turned out to end in its own CRC-32 (a constant CRC-32 for
#: the whole stream); version 1 streams of kind 3 still read.
STREAM_VERSION: Final = 2
_ESCAPE: Final = 255
#: Mode 1: the raw sections together hold at most _RAW_FACTOR * N * b + _RAW_SLACK bytes.
_RAW_FACTOR: Final = 2
_RAW_SLACK: Final = 64
_MAX_VARINT_BYTES: Final = 10

Edges = tuple[bytes, tuple[bytes, ...], np.ndarray, np.ndarray, int, int, np.ndarray | None]

#: Per-value statistics from the kernel: value, voxel count, inclusive z, y, x bounds.
STATS_DTYPE: Final = np.dtype([("value", "<u8"), ("count", "<u8"), ("bounds", "<u4", (6,))])


def kernel_available() -> bool:
    """Whether the compiled kernel is importable (else numpy decodes, Python encodes)."""
    return _kernel is not None


def _use_kernel() -> bool:
    return _kernel is not None and not _FORCE_NUMPY[0]


_FORCE_NUMPY = [False]  # tests flip this to run the numpy paths where the kernel is built


# --- varints ----------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: memoryview, off: int, end: int, what: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if off + i >= end:
            raise CodecError(f"Expected a complete {what}. Got the end of the header.")
        byte = buf[off + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if value >= 1 << 64:
                raise CodecError(f"Expected a {what} below 2**64. Got {value}.")
            return value, off + i + 1
    raise CodecError(f"Expected a {what} of at most {_MAX_VARINT_BYTES} bytes. Got more.")


# --- byte planes ------------------------------------------------------------------------------


def _to_planes(values: np.ndarray, width: int) -> bytes:
    """``width`` little-endian byte planes (lowest byte of every value first)."""
    le = values.astype("<u8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(le[:, :width].T).tobytes()


def _planes(a: np.ndarray) -> bytes:
    """All ``itemsize`` byte planes of an unsigned array (plain mode)."""
    return _to_planes(a.reshape(-1), a.dtype.itemsize) if a.dtype.itemsize > 1 else a.tobytes()


# --- the reference encoder (Python; the kernel gives the same bytes) --------------------------


def _gap_code(gap: int) -> bytes:
    """A gap: one byte, or the escape byte and 4 little-endian bytes."""
    return bytes([gap]) if gap < _ESCAPE else bytes([_ESCAPE]) + gap.to_bytes(4, "little")


def _row_edges(row: np.ndarray) -> tuple[list[int], list[int]]:
    where = np.flatnonzero(row[1:] != row[:-1]) + 1
    xs = where.tolist()
    if row[0] != 0:
        xs.insert(0, 0)
    return xs, row[xs].tolist() if xs else []


def _encode_python(v3: np.ndarray, k: int) -> Edges:
    nz, ny, _ = v3.shape
    inserted = 2 * k + 1
    gaps = bytearray()
    fates: list[bytearray] = [bytearray() for _ in range(2 * k + 2)]
    nfates = [0] * (2 * k + 2)
    positions: list[int] = []
    values: list[int] = []
    prev: list[tuple[list[int], list[int], list[int]]] = []
    for z in range(nz):
        rows: list[tuple[list[int], list[int], list[int]]] = []
        for y in range(ny):
            xs, vs = _row_edges(v3[z, y])
            cls = [0] * len(xs)
            ref = prev[y] if z else (rows[y - 1] if y else ([], [], []))
            rx, rv, rc = ref
            i = j = gap = 0
            last = -1
            n, m = len(xs), len(rx)
            while i < n or j < m:
                if i < n and j < m and -k <= xs[i] - rx[j] <= k and vs[i] == rv[j]:
                    code, cls[i], last = xs[i] - rx[j] + k, xs[i] - rx[j] + k, xs[i]
                    i += 1
                elif j < m and (i >= n or rx[j] <= xs[i]):
                    code = inserted
                else:
                    positions.append(xs[i] - last)
                    values.append(vs[i])
                    cls[i], last = inserted, xs[i]
                    gap += 1
                    i += 1
                    continue
                gaps += _gap_code(gap)
                gap = 0
                q = rc[j]
                if nfates[q] % 2 == 0:
                    fates[q].append(code)
                else:
                    fates[q][-1] |= code << 4
                nfates[q] += 1
                j += 1
            gaps += _gap_code(gap)
            rows.append((xs, vs, cls))
        prev = rows
    pos = np.array(positions, dtype=np.uint32)
    val = np.array(values, dtype=np.uint64)
    max_delta = int(pos.max()) if pos.size else 0
    max_value = int(val.max()) if val.size else 0
    return bytes(gaps), tuple(bytes(f) for f in fates), pos, val, max_delta, max_value, None


def _encode_edges(v3: np.ndarray, k: int) -> Edges:
    if not _use_kernel():
        return _encode_python(v3, k)
    assert _kernel is not None
    gaps, fates, pos, val, max_delta, max_value, stats = _kernel.encode(
        v3, v3.shape, v3.dtype.itemsize, k
    )
    return (
        gaps,
        fates,
        np.frombuffer(pos, dtype=np.uint32),
        np.frombuffer(val, dtype=np.uint64),
        max_delta,
        max_value,
        None if stats is None else np.frombuffer(stats, dtype=STATS_DTYPE),
    )


# --- the numpy decoder ------------------------------------------------------------------------
#
# Memory: besides the output and the raw sections, only one class byte per edge of two slices
# and temporaries of at most _BLOCK voxels or edges; the edges themselves are never kept (the
# reference row is read back from the painted output). Time: vectorised blocks of rows for
# slices after the first; the first slice (each row refers to the row before it) and rows wider
# than a block go through a scalar loop over gaps, insertions and fates (O(edges + rows)).

_BLOCK: Final = 1 << 15  # edges per vectorised step, voxels per painting step
_ROWS_BLOCK: Final = 1 << 18  # voxels of a block of rows (halved while it has too many edges)
_ROW_LIST: Final = 4096  # first slice: a reference row of at most this many edges stays listed


class _Sections:
    """The raw sections of a mode-1 stream and how far each has been consumed (nothing is
    widened up front: positions and values are read from their byte planes as needed)."""

    def __init__(
        self, raws: list[bytes | memoryview], p: int, w: int, k: int, nx: int, vmax: int
    ) -> None:
        self.gaps = np.frombuffer(raws[0], dtype=np.uint8)
        self.gap_bytes = memoryview(raws[0]).cast("B")
        self.gap_at = 0
        self.npos = len(raws[1]) // p
        self.pos = np.frombuffer(raws[1], dtype=np.uint8).reshape(p, self.npos)
        self.pos_bytes = memoryview(raws[1]).cast("B")
        self.p = p
        self.val = np.frombuffer(raws[2], dtype=np.uint8).reshape(w, self.npos) if w else None
        self.val_bytes = memoryview(raws[2]).cast("B")
        self.w = w
        self.ins_at = 0
        self.fates = [np.frombuffer(r, dtype=np.uint8) for r in raws[3:]]
        self.fate_bytes = [memoryview(r).cast("B") for r in raws[3:]]
        self.code_at = [0] * len(self.fates)
        self.k, self.nx, self.vmax = k, nx, vmax

    # scalar reads (the loops of the first slice and of wide rows)

    def plane_value(self, planes: memoryview, width: int, i: int) -> int:
        n = self.npos
        v = planes[i]
        for byte in range(1, width):
            v |= planes[byte * n + i] << (8 * byte)
        return v

    # vectorised reads (blocks of rows after the first slice)

    def take_gaps(self, count: int) -> np.ndarray:
        """The next ``count`` gap counts (int64)."""
        b, at = self.gaps, self.gap_at
        window = b[at : at + 5 * count]
        esc = np.flatnonzero(window == _ESCAPE)
        if esc.size == 0:
            if window.size < count:
                raise CodecError("Expected a gap count per gap. Got the end of the gaps section.")
            self.gap_at = at + count
            return window[:count].astype(np.int64)
        keep = np.ones(window.size, dtype=bool)
        real: list[int] = []
        skip_to = 0
        for a in range(0, esc.size, 4096):  # in pieces: no list of every 255 byte
            for e in esc[a : a + 4096].tolist():  # a 255 inside an escape's 4 bytes is data
                if e < skip_to:
                    continue
                real.append(e)
                keep[e + 1 : e + 5] = False
                skip_to = e + 5
        starts = np.flatnonzero(keep)
        if starts.size < count:
            raise CodecError("Expected a gap count per gap. Got the end of the gaps section.")
        starts = starts[:count]
        out = window[starts].astype(np.int64)
        used = [e for e in real if e <= int(starts[-1])]
        if used:
            esc = np.array(used, dtype=np.int64)
            if int(esc[-1]) + 5 > window.size:
                raise CodecError("Expected 4 bytes after a 255 gap code. Got the end.")
            big = (
                window[esc + 1].astype(np.int64)
                | window[esc + 2].astype(np.int64) << 8
                | window[esc + 3].astype(np.int64) << 16
                | window[esc + 4].astype(np.int64) << 24
            )
            if int(big.min()) < _ESCAPE:
                raise CodecError("Expected an escaped gap count >= 255. Got a smaller one.")
            out[np.searchsorted(starts, esc)] = big
        last = int(starts[-1])
        self.gap_at = at + last + (5 if window[last] == _ESCAPE else 1)
        return out

    def take_codes(self, cls: int, count: int) -> np.ndarray:
        """The next ``count`` fate codes of class ``cls`` (int64)."""
        at, b = self.code_at[cls], self.fates[cls]
        if at + count > 2 * b.size:
            raise CodecError("Expected a fate code. Got the end of its section.")
        self.code_at[cls] = at + count
        raw = b[at // 2 : (at + count + 1) // 2]
        codes = np.empty(2 * raw.size, dtype=np.int64)
        codes[0::2] = raw & 15
        codes[1::2] = raw >> 4
        return codes[at % 2 : at % 2 + count]

    def take_inserts(self, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The next ``count`` insertions: deltas (int64) and values (uint64, None: toggled)."""
        at = self.ins_at
        if at + count > self.npos:
            raise CodecError("Expected as many insertions as positions. Got more.")
        self.ins_at = at + count
        deltas = np.zeros(count, dtype=np.int64)
        for byte in range(self.p):
            deltas |= self.pos[byte, at : at + count].astype(np.int64) << (8 * byte)
        if self.val is None:
            return deltas, None
        values = np.zeros(count, dtype=np.uint64)
        for byte in range(self.w):
            values |= self.val[byte, at : at + count].astype(np.uint64) << np.uint64(8 * byte)
        return deltas, values

    def check_consumed(self) -> None:
        if self.gap_at != self.gaps.size:
            raise CodecError("Expected the gaps section to end with the last row. Got more bytes.")
        if self.ins_at != self.npos:
            raise CodecError("Expected one inserted edge per position. Got unused positions.")
        for used, raw in zip(self.code_at, self.fate_bytes, strict=True):
            if (used + 1) // 2 != len(raw) or (used % 2 and raw[used // 2] >> 4):
                raise CodecError(
                    "Expected one fate code per reference edge. Got unused fate codes."
                )


class _Painter:
    """Fills a C-contiguous output from its edges, given in order as flat positions and values
    (each row starts at 0), in vectorised steps of at most :data:`_BLOCK` voxels: appended to
    ``pos``/``val`` and flushed (the scalar loop), or painted at once (:meth:`paint`)."""

    def __init__(self, out3: np.ndarray) -> None:
        self.flat = out3.reshape(-1)
        self.nx = out3.shape[2]
        self.pos: list[int] = []
        self.val: list[int] = []
        self.done = 0  # flat[:done] is painted
        self.carry = 0  # the value in force at ``done`` unless a row starts there

    def flush(self, upto: int) -> None:
        """Paint ``flat[done:upto]`` (every edge before ``upto`` has been added)."""
        cut = len(self.pos)
        while cut and self.pos[cut - 1] >= upto:
            cut -= 1
        ep = np.array(self.pos[:cut], dtype=np.int64)
        ev = np.array(self.val[:cut], dtype=np.uint64)
        del self.pos[:cut], self.val[:cut]
        self.paint(upto, ep, ev)

    def paint(self, upto: int, ep: np.ndarray, ev: np.ndarray) -> None:
        """Paint ``flat[done:upto]`` from the edges ``ep`` (sorted, in that range), ``ev``."""
        a, nx, carry = self.done, self.nx, self.carry
        while a < upto:
            e = min(upto, a + _BLOCK)
            i = int(np.searchsorted(ep, e))
            rows = np.arange(-(-a // nx) * nx, e, nx, dtype=np.int64)
            starts = np.concatenate((np.array([a], np.int64), rows, ep[:i]))
            values = np.concatenate(
                (np.array([carry], np.uint64), np.zeros(rows.size, np.uint64), ev[:i])
            )
            order = np.argsort(starts, kind="stable")  # carry, row start, edge: the last wins
            starts, values = starts[order], values[order]
            keep = np.ones(starts.size, dtype=bool)
            keep[:-1] = starts[1:] != starts[:-1]
            starts, values = starts[keep], values[keep]
            lengths = np.diff(np.append(starts, e))
            self.flat[a:e] = np.repeat(values.astype(self.flat.dtype), lengths)
            carry = int(values[-1])
            ep, ev = ep[i:], ev[i:]
            a = e
        self.done, self.carry = max(a, self.done), carry


class _Classes:
    """One class byte per edge of the previous and the current slice (running counters)."""

    def __init__(self, cap: int, two: bool) -> None:
        self.cap = cap
        self.cur = bytearray(cap)
        self.prev = bytearray(cap) if two else self.cur
        self.at = 0  # the next class written to ``cur``

    def swap(self) -> None:
        if self.prev is not self.cur:
            self.prev, self.cur = self.cur, self.prev


def _edges_of(row: np.ndarray) -> Iterator[tuple[list[int], list[int]]]:
    """The edges of a painted row as (positions, values) lists, :data:`_BLOCK` voxels at a
    time."""
    before = 0
    for a in range(0, row.size, _BLOCK):
        piece = row[a : a + _BLOCK]
        change = np.empty(piece.size, dtype=bool)
        change[0] = piece[0] != before
        np.not_equal(piece[1:], piece[:-1], out=change[1:])
        at = np.flatnonzero(change)
        yield (at + a).tolist(), piece[at].tolist()
        before = piece[-1]


def _decode_numpy(s: _Sections, out3: np.ndarray) -> None:
    """Decode into ``out3`` (C-contiguous, native unsigned or bool, 3-D)."""
    nz, ny, nx = out3.shape
    codes = sum(2 * f.size for f in s.fates)
    cls = _Classes(min(ny * nx, s.npos + codes), nz > 1)
    painter = _Painter(out3)
    for z in range(nz):
        if z == 0 or nx > _BLOCK:
            _scalar_rows(s, out3, painter, cls, z)
        else:
            at = 0
            step = max(1, min(_ROWS_BLOCK // nx, _BLOCK))  # voxels and gap counts bounded
            for y0 in range(0, ny, step):
                at = _vector_rows(s, out3, painter, cls, z, y0, min(ny, y0 + step), at)
        painter.flush((z + 1) * ny * nx)
        cls.swap()
        cls.at = 0
    s.check_consumed()


def _scalar_rows(s: _Sections, out3: np.ndarray, painter: _Painter, cls: _Classes, z: int) -> None:
    """Slice ``z`` row by row, item by item (section 6.4): the first slice, where row y refers
    to row y - 1, and slices of rows wider than a vectorised block. One loop, no objects per
    row; a reference row of at most :data:`_ROW_LIST` edges is kept in two lists, a longer one
    is read back from the painted output."""
    _, ny, nx = out3.shape
    k, vmax = s.k, s.vmax
    inserted = 2 * k + 1
    gaps, n_gaps = s.gap_bytes, len(s.gap_bytes)
    pos, val, p, w, npos = s.pos_bytes, s.val_bytes, s.p, s.w, s.npos
    fates, code_at = s.fate_bytes, s.code_at
    n_codes = [2 * len(f) for f in fates]
    cur, cap = cls.cur, cls.cap
    ref_cls = cls.cur if z == 0 else cls.prev
    ppos, pval = painter.pos, painter.val
    gap_at, ins_at, at = s.gap_at, s.ins_at, cls.at
    ref_at = 0  # the next reference class
    px: list[int] = []  # the previous row's edges (first slice, while listed)
    pv: list[int] = []
    cx: list[int] = []
    cv: list[int] = []
    listed = False  # whether px, pv hold the reference row
    outside = "Expected inserted edges inside the row, after the previous one. Got one outside."
    same = "Expected edges that change the value. Got an edge equal to the value before it."
    try:
        for y in range(ny):
            base = (z * ny + y) * nx
            row_first = at
            source: Iterator[tuple[list[int], list[int]]] | None = None
            if z == 0 and y == 0:
                rx_list: list[int] = []
                rv_list: list[int] = []
            elif z == 0 and listed:
                rx_list, rv_list = px, pv
            else:
                ref_row = out3[z - 1, y] if z else out3[0, y - 1]
                if not z:
                    painter.flush(base)
                source = _edges_of(ref_row)
                rx_list, rv_list = next(source)
            j, m = 0, len(rx_list)
            cx.clear()
            cv.clear()
            keep = z == 0
            last, value = -1, 0
            pending = -1  # insertions left before the next reference edge (-1: read a gap)
            while True:  # one edge of the row an iteration, inserted or matched
                if pending < 0:
                    if gap_at >= n_gaps:
                        raise CodecError("Expected a gap count. Got the end of the gaps section.")
                    pending = gaps[gap_at]
                    if pending < _ESCAPE:
                        gap_at += 1
                    else:
                        if gap_at + 5 > n_gaps:
                            raise CodecError("Expected 4 bytes after a 255 gap code. Got the end.")
                        pending = int.from_bytes(gaps[gap_at + 1 : gap_at + 5], "little")
                        if pending < _ESCAPE:
                            raise CodecError(
                                "Expected an escaped gap count >= 255. Got a smaller one."
                            )
                        gap_at += 5
                    if pending > npos - ins_at:
                        raise CodecError("Expected as many insertions as positions. Got more.")
                if pending:
                    pending -= 1
                    delta = pos[ins_at] if p == 1 else s.plane_value(pos, p, ins_at)
                    if w == 0:
                        v = value ^ 1
                    else:
                        v = val[ins_at] if w == 1 else s.plane_value(val, w, ins_at)
                    ins_at += 1
                    x = last + delta
                    if delta == 0 or x >= nx:
                        raise CodecError(outside)
                    if v > vmax:
                        raise CodecError(
                            "Expected edge values that fit the dtype. Got a larger one."
                        )
                    c = inserted
                else:
                    while j == m and source is not None:  # the next piece with an edge
                        nxt = next(source, None)
                        if nxt is None:
                            source = None
                        else:
                            rx_list, rv_list = nxt
                            j, m = 0, len(rx_list)
                    if j == m:
                        break
                    rx, v = rx_list[j], rv_list[j]
                    j += 1
                    pending = -1  # a gap follows every reference edge
                    if ref_at >= cap:
                        raise CodecError("Expected at most one edge per voxel. Got more.")
                    q = ref_cls[ref_at]
                    ref_at += 1
                    nth = code_at[q]
                    if nth >= n_codes[q]:
                        raise CodecError("Expected a fate code. Got the end of its section.")
                    code_at[q] = nth + 1
                    byte = fates[q][nth >> 1]
                    c = byte >> 4 if nth & 1 else byte & 15
                    if c == inserted:  # the reference edge was dropped
                        continue
                    if c > inserted:
                        raise CodecError("Expected fate codes 0..2K+1. Got a larger one.")
                    x = rx + c - k
                    if x <= last or x >= nx:
                        raise CodecError(
                            "Expected matched edges inside the row, after the previous one. "
                            "Got one outside."
                        )
                if v == value:
                    raise CodecError(same)
                if at >= cap:
                    raise CodecError("Expected at most one edge per voxel. Got more.")
                cur[at] = c
                at += 1
                ppos.append(base + x)
                pval.append(v)
                if len(ppos) >= _BLOCK:
                    painter.flush(base + x)
                if keep:
                    if len(cx) < _ROW_LIST:
                        cx.append(x)
                        cv.append(v)
                    else:  # too long to list: read back from the output instead
                        keep = False
                        cx.clear()
                        cv.clear()
                last, value = x, v
            if z == 0:
                listed = keep
                if listed:
                    px, cx = cx, px
                    pv, cv = cv, pv
                ref_at = row_first  # the next row refers to this one
    finally:
        s.gap_at, s.ins_at, cls.at = gap_at, ins_at, at


def _vector_rows(
    s: _Sections,
    out3: np.ndarray,
    painter: _Painter,
    cls: _Classes,
    z: int,
    y0: int,
    y1: int,
    ref_at: int,
) -> int:
    """Rows ``y0:y1`` of slice ``z > 0`` at once, against the painted rows of slice ``z - 1``
    (whose classes are ``cls.prev[ref_at:]``); the next reference class index."""
    k, nx = s.k, s.nx
    inserted = 2 * k + 1
    n_rows = y1 - y0
    ref = out3[z - 1, y0:y1]
    change = np.empty(ref.shape, dtype=bool)
    change[:, 0] = ref[:, 0] != 0
    np.not_equal(ref[:, 1:], ref[:, :-1], out=change[:, 1:])
    ref_row, ref_x = np.divmod(np.flatnonzero(change), nx)
    del change
    if ref_x.size > _BLOCK and n_rows > 1:  # temporaries per edge: fewer rows at a time
        mid = (y0 + y1) // 2
        ref_at = _vector_rows(s, out3, painter, cls, z, y0, mid, ref_at)
        return _vector_rows(s, out3, painter, cls, z, mid, y1, ref_at)
    gap_at = s.gap_at
    g = s.take_gaps(ref_x.size + n_rows)
    n_ins = int(g.sum())
    if n_ins > n_rows * nx:  # each insertion takes a voxel of its row
        raise CodecError("Expected at most one edge per voxel. Got more.")
    if n_ins + ref_x.size > 2 * _BLOCK and n_rows > 1:
        s.gap_at = gap_at  # not consumed: fewer rows at a time
        mid = (y0 + y1) // 2
        ref_at = _vector_rows(s, out3, painter, cls, z, y0, mid, ref_at)
        return _vector_rows(s, out3, painter, cls, z, mid, y1, ref_at)
    ref_v = ref[ref_row, ref_x].astype(np.uint64)
    ref_counts = np.bincount(ref_row, minlength=n_rows)
    if ref_at + ref_x.size > cls.cap:
        raise CodecError("Expected at most one edge per voxel. Got more.")
    ref_c = np.frombuffer(cls.prev, dtype=np.uint8)[ref_at : ref_at + ref_x.size]
    fate = np.empty(ref_x.size, dtype=np.int64)
    for q in range(2 * k + 2):
        sel = ref_c == q
        count = int(np.count_nonzero(sel))
        if count:
            fate[sel] = s.take_codes(q, count)
    if fate.size and int(fate.max()) > inserted:
        raise CodecError("Expected fate codes 0..2K+1. Got a larger one.")
    kept = fate <= 2 * k
    n_gaps = g.size
    gap_row = np.repeat(np.arange(n_rows), ref_counts + 1)
    row_last_gap = np.cumsum(ref_counts + 1) - 1
    ref_after = np.ones(n_gaps, dtype=bool)
    ref_after[row_last_gap] = False
    kept_after = np.zeros(n_gaps, dtype=bool)
    kept_after[ref_after] = kept
    deltas, ins_values = s.take_inserts(n_ins)
    per_gap = g + kept_after
    total = int(per_gap.sum())
    if cls.at + total > cls.cap:
        raise CodecError("Expected at most one edge per voxel. Got more.")
    item_gap = np.repeat(np.arange(n_gaps), per_gap)
    first_of_gap = np.cumsum(per_gap) - per_gap
    in_gap = np.arange(total) - first_of_gap[item_gap]
    is_ins = in_gap < g[item_gap]
    is_ref = ~is_ins
    ref_idx = (item_gap - gap_row[item_gap])[is_ref]
    row = gap_row[item_gap]
    x = np.empty(total, dtype=np.int64)
    x[is_ref] = ref_x[ref_idx] + fate[ref_idx] - k
    delta = np.zeros(total, dtype=np.int64)
    delta[is_ins] = deltas
    csum = np.cumsum(delta)
    first = np.ones(total, dtype=bool)
    first[1:] = row[1:] != row[:-1]
    pseudo = first & is_ins  # a row starting with insertions: anchored at x = -1, value 0
    anchor_x = np.where(is_ref, x, -1)
    anchor_c = np.where(is_ref, csum, csum - delta)
    anchors = np.where(is_ref | pseudo, np.arange(total), -1)
    idx = np.maximum.accumulate(anchors) if total else anchors
    x = np.where(is_ins, anchor_x[idx] + csum - anchor_c[idx], x)
    v = np.empty(total, dtype=np.uint64)
    v[is_ref] = ref_v[ref_idx]
    if ins_values is None:
        anchor_v = np.where(is_ref, v, 0).astype(np.int64)
        steps = np.arange(total) - idx + pseudo[idx]
        v[is_ins] = (anchor_v[idx] ^ (steps & 1))[is_ins].astype(np.uint64)
    else:
        v[is_ins] = ins_values
        if ins_values.size and int(ins_values.max()) > s.vmax:
            raise CodecError("Expected edge values that fit the dtype. Got a larger one.")
    if total:
        inside = (x >= 0) & (x < nx)
        rising = np.ones(total, dtype=bool)
        rising[1:] = first[1:] | (x[1:] > x[:-1])
        if not (inside.all() and rising.all()) or (is_ins & (delta == 0)).any():
            raise CodecError(
                "Expected edges inside the row, each after the previous one. Got one outside."
            )
        before = np.zeros(total, dtype=np.uint64)
        before[1:] = v[:-1]
        before[first] = 0
        if (v == before).any():
            raise CodecError(
                "Expected edges that change the value. Got an edge equal to the value before it."
            )
    c = np.full(total, inserted, dtype=np.uint8)
    c[is_ref] = fate[ref_idx]
    np.frombuffer(cls.cur, dtype=np.uint8)[cls.at : cls.at + total] = c
    cls.at += total
    base = (z * out3.shape[1] + y0) * nx
    painter.paint(base + n_rows * nx, base + row * nx + x, v)
    return ref_at + ref_x.size


# --- the stream -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    mode: int
    constant: int
    k: int
    value_width: int
    position_width: int
    sections: tuple[tuple[int, int], ...]  # (stored size, raw size)
    end: int


def _parse(buf: memoryview, shape: tuple[int, ...] | None, dtype: np.dtype[Any] | None) -> _Header:
    codec_id = EdgesCodec.codec_id
    n = len(buf)
    if n < HEADER_PREFIX.size + _CRC.size:
        raise CodecError(f"Expected a {codec_id} stream of at least 12 bytes. Got {n} bytes.")
    magic, version, kind, code, ndim, mode = HEADER_PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CodecError(f"Expected stream magic {MAGIC!r}. Got {bytes(magic)!r}.")
    if kind != KIND:
        raise CodecError(f"Expected a {codec_id} stream (kind {KIND}). Got kind {kind}.")
    if version not in (VERSION, STREAM_VERSION):
        raise CodecError(
            f"Expected {codec_id} stream version {VERSION} or {STREAM_VERSION}. Got {version}."
        )
    if not 1 <= ndim <= 3:
        raise CodecError(f"Expected ndim 1..3 in the stream header. Got {ndim}.")
    off = HEADER_PREFIX.size + 4 * ndim
    if version == VERSION:  # the first layout: the CRC-32 of everything before it, at the end
        (crc,) = _CRC.unpack_from(buf, n - _CRC.size)
        ok = zlib.crc32(buf[: n - _CRC.size]) == crc
        end = n - _CRC.size
    else:  # the CRC-32 of all other bytes, right after the shape
        if n < off + _CRC.size:
            raise CodecError(f"Expected a {codec_id} header of {off + 4} bytes. Got {n} bytes.")
        (crc,) = _CRC.unpack_from(buf, off)
        ok = zlib.crc32(buf[off + _CRC.size :], zlib.crc32(buf[:off])) == crc
        off, end = off + _CRC.size, n
    if not ok:
        raise CodecError(f"Expected a valid {codec_id} stream checksum. Got a mismatch (corrupt).")
    got_dtype = dtype_from_code(code)
    if got_dtype is None:
        raise CodecError(f"Expected a known dtype code. Got {code}.")
    if off > end:
        raise CodecError(f"Expected a {codec_id} header of at least {off} bytes. Got {end}.")
    got_shape = tuple(int(s) for s in struct.unpack_from(f"<{ndim}I", buf, HEADER_PREFIX.size))
    nbytes = check_declared(got_shape, got_dtype, shape, dtype)
    count = nbytes // got_dtype.itemsize
    vmax = value_max(got_dtype)
    if mode == MODE_CONSTANT:
        constant, off = _read_varint(buf, off, end, "constant value")
        if constant > vmax:
            raise CodecError(f"Expected a constant value <= {vmax}. Got {constant}.")
        if off != end:
            raise CodecError(f"Expected {end - off} fewer bytes after the constant. Got them.")
        return _Header(got_dtype, got_shape, mode, constant, 0, 0, 0, (), end)
    if mode in (MODE_PLAIN, MODE_EDGES) and count == 0:
        raise CodecError(
            f"Expected mode 0 (constant) for a zero-size array. Got mode {mode} for {got_shape}."
        )
    if mode == MODE_PLAIN:
        stored, off = _read_varint(buf, off, end, "section size")
        raw, off = _read_varint(buf, off, end, "section size")
        want = (count + 7) // 8 if got_dtype == np.bool_ else nbytes
        if raw != want or off + stored != end:
            raise CodecError(
                f"Expected one plain section of {want} bytes filling the stream. "
                f"Got {raw} bytes in {stored}."
            )
        return _Header(got_dtype, got_shape, mode, 0, 0, 0, 0, ((stored, raw),), off)
    if mode != MODE_EDGES:
        raise CodecError(f"Expected mode 0 (constant), 1 (edges) or 2 (plain). Got {mode}.")
    if off + 3 > end:
        raise CodecError(f"Expected the {codec_id} edge fields. Got the end of the stream.")
    k, w, p = buf[off], buf[off + 1], buf[off + 2]
    off += 3
    if not 1 <= k <= MAX_SHIFT:
        raise CodecError(f"Expected a shift range K in 1..{MAX_SHIFT}. Got {k}.")
    if w not in (0, 1, 2, 4, 8) or w > got_dtype.itemsize:
        raise CodecError(f"Expected a value width 0, 1, 2, 4 or 8 <= the item size. Got {w}.")
    if p not in (1, 2, 4):
        raise CodecError(f"Expected a position width 1, 2 or 4. Got {p}.")
    if w == 0 and vmax < 1:  # pragma: no cover - every dtype holds 0 and 1
        raise CodecError("Expected a dtype that holds 0 and 1 for toggled values.")
    sections = []
    for i in range(2 * k + 5):
        stored, off = _read_varint(buf, off, end, f"section {i} size")
        raw, off = _read_varint(buf, off, end, f"section {i} size")
        sections.append((stored, raw))
    if off + sum(s for s, _ in sections) != end:
        raise CodecError(
            f"Expected a {codec_id} stream of {off + sum(s for s, _ in sections) + 4} bytes. "
            f"Got {n} bytes."
        )
    rows = count // got_shape[-1]
    (_, g_raw), (_, p_raw), (_, v_raw) = sections[:3]
    limits = (
        ("gaps", g_raw, 5 * (count + rows)),
        ("positions", p_raw, p * count),
        ("values", v_raw, w * count),
        ("fates", sum(r for _, r in sections[3:]), count // 2 + 2 * k + 2),
        ("sections", sum(r for _, r in sections), max_raw(nbytes)),
    )
    for what, raw_size, limit in limits:
        if raw_size > limit:
            raise CodecError(
                f"Expected at most {limit} bytes of {what} for {count} elements. Got {raw_size}."
            )
    if p_raw % p or (w and v_raw != p_raw // p * w) or (not w and v_raw):
        raise CodecError("Expected one position and one value per inserted edge. Got others.")
    return _Header(got_dtype, got_shape, mode, 0, k, w, p, tuple(sections), off)


def max_raw(nbytes: int) -> int:
    """The most raw section bytes a mode-1 stream of ``nbytes`` decoded bytes may declare
    (docs/codecs.md 6.4): what bounds decoding to about 4x the output."""
    return _RAW_FACTOR * nbytes + _RAW_SLACK


def _store(raw: bytes, level: int) -> bytes:
    """A section as stored: one zstd frame when that is smaller, else the raw bytes."""
    if not raw:
        return b""
    frame: bytes = zstd_compressor(level, checksum=False).compress(raw)
    return frame if len(frame) < len(raw) else raw


def _load(stored: memoryview, raw_size: int, what: str) -> bytes | memoryview:
    """A section's raw bytes: the stored bytes themselves (not copied), or its one zstd frame
    decompressed."""
    if len(stored) == raw_size:
        return stored
    try:
        params = zstd.get_frame_parameters(stored)
        if params.content_size != raw_size:
            raise CodecError(
                f"Expected the {what} section to decode to {raw_size} bytes. "
                f"Got a frame declaring {params.content_size}."
            )
        if frame_size(stored, checksum=bool(params.has_checksum)) != len(stored):
            raise CodecError(
                f"Expected the {what} section to be exactly one zstd frame of {len(stored)} "
                "bytes. Got a frame of another size (or more than one frame)."
            )
        out: bytes = zstd_decompressor().decompress(stored, max_output_size=raw_size)
    except CodecError:
        raise
    except Exception as exc:  # zstd.ZstdError and friends
        raise CodecError(
            f"Expected a valid zstd frame in the {what} section. Got: {exc}."
        ) from None
    if len(out) != raw_size:
        raise CodecError(f"Expected {raw_size} bytes from the {what} section. Got {len(out)}.")
    return out


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    nz, ny, nx = (1,) * (3 - len(shape)) + tuple(shape)
    return nz, ny, nx


def _finish(a: np.ndarray, dtype: np.dtype[Any], mode: int, *rest: bytes) -> bytes:
    """The stream of ``a`` (recorded ``dtype``) in ``mode``: prefix and shape, the CRC-32 of
    every other byte, the rest.

    (Not at the end: a stream ending in its own CRC-32 has the same CRC-32 as every other
    such stream, which would blind the containers' chunk checksums.)"""
    prefix = HEADER_PREFIX.pack(MAGIC, STREAM_VERSION, KIND, dtype_code(dtype), a.ndim, mode)
    shape = struct.pack(f"<{a.ndim}I", *a.shape)
    body = b"".join(rest)
    crc = zlib.crc32(body, zlib.crc32(prefix + shape))
    return b"".join((prefix, shape, _CRC.pack(crc), body))


@dataclass(frozen=True)
class EdgesCodec(CodecBase):
    """Lossless codec for label maps and binary masks: row edges predicted slice to slice.

    ``level`` (1..22, default 9) is the zstd level of the sections. Streams decode with the
    compiled kernel when it is built (without the GIL), else with numpy.
    ``decode_with_values`` gives the distinct values: every inserted edge's value and 0 (each
    value of the array enters through an inserted edge).
    """

    codec_id: ClassVar[str] = "medmask.edges"
    kind: ClassVar[int] = KIND

    def encode(self, array: np.ndarray) -> bytes:
        """Encode a label array (any integer dtype with non-negative values, or bool)."""
        return self.encode_with_stats(array)[0]

    def encode_with_stats(self, array: np.ndarray) -> tuple[bytes, np.ndarray | None]:
        """Encode, and give every non-zero value's voxel count and inclusive bounds in the
        array's (z, y, x) order (:data:`STATS_DTYPE` records, ``bounds`` = z0, z1, y0, y1,
        x0, x1 of the 3-D view) when the kernel computed them on the way (1- and 2-byte
        arrays), else None."""
        a, dtype = normalize_input(array, self.codec_id)
        nz, ny, nx = _shape3(a.shape)
        if a.size == 0:
            return _finish(a, dtype, MODE_CONSTANT, _varint(0)), np.zeros(0, STATS_DTYPE)
        v3 = a.reshape(nz, ny, nx)
        if v3.dtype == np.bool_:
            v3 = v3.view(np.uint8)
        k = DEFAULT_SHIFT
        gaps, fates, pos, val, max_delta, max_value, stats = _encode_edges(v3, k)
        constant = _constant(v3, pos, val)
        if constant is not None:
            return _finish(a, dtype, MODE_CONSTANT, _varint(constant)), stats
        p = byte_width(max_delta)  # positions are uint32: at most 4
        w = 0 if max_value <= 1 else byte_width(max_value)
        raws = [gaps, _to_planes(pos, p), _to_planes(val, w) if w else b"", *fates]
        if sum(len(r) for r in raws) > max_raw(a.nbytes):  # not a valid mode-1 stream (6.4)
            return self._plain(a, dtype), stats
        stored = [_store(r, self.level) for r in raws]
        fields = bytes([k, w, p]) + b"".join(
            _varint(len(s)) + _varint(len(r)) for s, r in zip(stored, raws, strict=True)
        )
        stream = _finish(a, dtype, MODE_EDGES, fields, *stored)
        if len(stream) > a.nbytes // 8:  # noise-like: the raw values may compress better
            plain = self._plain(a, dtype)
            if len(plain) < len(stream):
                return plain, stats
        return stream, stats

    def _plain(self, a: np.ndarray, dtype: np.dtype[Any]) -> bytes:
        """The mode-2 stream of ``a`` (recorded ``dtype``)."""
        raw = np.packbits(a.reshape(-1)).tobytes() if a.dtype == np.bool_ else _planes(a)
        body = _store(raw, self.level)
        return _finish(a, dtype, MODE_PLAIN, _varint(len(body)) + _varint(len(raw)), body)

    def decode_into(
        self,
        data: bytes | bytearray | memoryview,
        out: np.ndarray,
        *,
        present: list[np.ndarray | None] | None = None,
    ) -> None:
        """Decode into ``out`` (the stream's shape and dtype; rows contiguous, any strides).

        With ``present``, also append the distinct values (as :meth:`decode_with_values`).
        """
        buf = memoryview(data).cast("B")
        h = _parse(buf, tuple(out.shape), out.dtype)
        if _use_kernel():  # rows contiguous, no two elements in one place
            direct = out.strides[-1] == out.dtype.itemsize and _no_self_overlap(out)
        else:
            direct = out.flags.c_contiguous
        with memory_refusal(h.shape, h.dtype, self.codec_id):
            if out.dtype.isnative and direct:  # signed: the same bits as unsigned
                self._fill(buf, h, out.view(storage_dtype(h.dtype)), present)
            else:
                out[...] = self._fill_new(buf, h, present)

    def _decode(
        self,
        buf: memoryview,
        shape: tuple[int, ...] | None,
        dtype: np.dtype[Any] | type | str | None,
        present: list[np.ndarray | None] | None,
    ) -> np.ndarray:
        h = _parse(buf, shape, None if dtype is None else np.dtype(dtype))
        with memory_refusal(h.shape, h.dtype, self.codec_id):
            return self._fill_new(buf, h, present)

    def _fill_new(
        self, buf: memoryview, h: _Header, present: list[np.ndarray | None] | None
    ) -> np.ndarray:
        """A new array of the stream's shape and dtype, decoded."""
        out = np.empty(h.shape, dtype=storage_dtype(h.dtype))
        self._fill(buf, h, out, present)
        return restore_dtype(out, h.dtype)

    def _fill(
        self,
        buf: memoryview,
        h: _Header,
        out: np.ndarray,
        present: list[np.ndarray | None] | None,
    ) -> None:
        """Decode into ``out`` (native storage dtype of the stream, the stream's shape)."""
        out3 = out[(np.newaxis,) * (3 - out.ndim)]
        if h.mode == MODE_CONSTANT:
            out3[...] = h.constant
            if present is not None:
                present.append(np.array([h.constant], dtype=np.uint64))
            return
        if h.mode == MODE_PLAIN:
            ((stored, raw_size),) = h.sections
            raw = _load(buf[h.end : h.end + stored], raw_size, "plain values")
            _plain_into(raw, h.dtype, out3)
            if present is not None:
                present.append(None)
            return
        off = h.end  # the first section
        raws = []
        names = ["gaps", "positions", "values", *(f"fates {c}" for c in range(2 * h.k + 2))]
        for (stored, raw_size), what in zip(h.sections, names, strict=True):
            raws.append(_load(buf[off : off + stored], raw_size, what))
            off += stored
        vmax = value_max(h.dtype)
        if _use_kernel():
            assert _kernel is not None
            try:
                _kernel.decode(
                    raws[0],
                    tuple(raws[3:]),
                    raws[1],
                    h.position_width,
                    raws[2] if h.value_width else None,
                    h.value_width,
                    out3.dtype.itemsize,
                    h.k,
                    vmax,
                    out3.view(np.uint8) if out3.dtype == np.bool_ else out3,
                )
            except ValueError as exc:
                raise CodecError(str(exc)) from None
        else:
            s = _Sections(raws, h.position_width, h.value_width, h.k, out3.shape[2], vmax)
            _decode_numpy(s, out3)
        if present is not None:
            present.append(_inserted_values(raws[2], h.value_width, out3.nbytes))


def _inserted_values(raw: bytes | memoryview, w: int, nbytes: int) -> np.ndarray | None:
    """0 and every inserted edge's value (each value of the array enters through one), from
    the value planes in bounded memory; None when that would cost more than a scan."""
    if w == 0:
        return np.array([0, 1], dtype=np.uint64)
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(w, -1)
    if w == 1:
        found = np.flatnonzero(np.bincount(planes[0], minlength=1))
    elif w == 2:
        found = np.flatnonzero(np.bincount(planes[0] | planes[1].astype(np.uint16) << 8))
    elif 16 * planes.shape[1] <= nbytes:
        values = np.zeros(planes.shape[1], dtype=np.uint64)
        for byte in range(w):
            values |= planes[byte].astype(np.uint64) << np.uint64(8 * byte)
        found = np.unique(values)
    else:
        return None
    return np.union1d(found.astype(np.uint64), np.zeros(1, np.uint64))


def _plain_into(raw: bytes | memoryview, dtype: np.dtype[Any], out3: np.ndarray) -> None:
    """Mode 2: the bit-packed (bool) or byte-plane values into ``out3``, checked: padding bits
    0, signed values at most the signed maximum."""
    count = out3.size
    b = np.frombuffer(raw, dtype=np.uint8)
    if dtype == np.bool_:
        if count % 8 and b[-1] & ((1 << (8 - count % 8)) - 1):
            raise CodecError("Expected padding bits 0 after the last plain bool value. Got 1s.")
        out3[...] = np.unpackbits(b, count=count).view(np.bool_).reshape(out3.shape)
        return
    size = dtype.itemsize
    planes = b.reshape(size, count)
    if dtype.kind == "i" and count and int(planes[size - 1].max()) > 0x7F:
        raise CodecError(
            f"Expected plain values <= {value_max(dtype)} for {dtype} (labels are never "
            "negative). Got a larger one."
        )
    if size == 1:
        out3[...] = planes[0].reshape(out3.shape)
    elif out3.flags.c_contiguous and np.little_endian:  # each plane straight into place
        columns = out3.reshape(-1).view(np.uint8).reshape(count, size)
        for byte in range(size):
            columns[:, byte] = planes[byte]
    else:
        for z in range(out3.shape[0]):  # one slice of temporaries at a time
            n = out3.shape[1] * out3.shape[2]
            values = np.zeros(n, dtype=out3.dtype)
            for byte in range(size):
                part = planes[byte, z * n : (z + 1) * n].astype(out3.dtype)
                values |= part << out3.dtype.type(8 * byte)
            out3[z] = values.reshape(out3.shape[1:])


def _no_self_overlap(a: np.ndarray) -> bool:
    """Whether no two elements of ``a`` share memory (a sufficient test on the strides)."""
    need = a.itemsize
    for stride, size in sorted((abs(s), n) for s, n in zip(a.strides, a.shape, strict=True)):
        if size > 1:
            if stride < need:
                return False
            need = stride * size
    return True


def _constant(v3: np.ndarray, pos: np.ndarray, val: np.ndarray) -> int | None:
    """The value of a constant array (None when it is not): only arrays with at most one
    inserted edge (at the start of the first row) can be constant."""
    if pos.size == 0:
        return 0
    if pos.size == 1 and int(pos[0]) == 1 and bool(np.all(v3 == v3.flat[0])):
        return int(val[0])
    return None
