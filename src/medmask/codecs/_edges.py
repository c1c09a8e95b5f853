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
import struct
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import zstandard as zstd

from medmask.codecs._stream import (
    HEADER_PREFIX,
    MAGIC,
    VERSION,
    byte_width,
    check_declared,
    check_level,
    dtype_code,
    dtype_from_code,
    normalize_input,
    restore_dtype,
    storage_dtype,
    zstd_compressor,
    zstd_decompressor,
)
from medmask.errors import CodecError

_kernel: Any
try:  # the optional compiled kernel (setup.py); numpy paths below read every stream without it
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


def _from_value_planes(raw: bytes, count: int, dtype: np.dtype[Any]) -> np.ndarray:
    """Plain-mode values: bit-packed for bool (values 0/1), else byte planes."""
    if dtype == np.bool_:
        return np.unpackbits(np.frombuffer(raw, np.uint8), count=count).view(np.bool_)
    size = dtype.itemsize
    if size == 1:
        return np.frombuffer(raw, dtype=np.uint8)
    return _from_planes(raw, size, f"<u{size}").astype(f"=u{size}")


def _from_planes(raw: bytes, width: int, dtype: str) -> np.ndarray:
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(width, -1)
    size = np.dtype(dtype).itemsize
    le = np.zeros((planes.shape[1], size), dtype=np.uint8)
    le[:, :width] = planes.T
    return le.view(dtype).reshape(-1)


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


@dataclass
class _Reader:
    """Decoded sections and how far each has been consumed."""

    gaps: np.ndarray
    positions: np.ndarray
    values: np.ndarray | None  # None: values toggle 0/1
    codes: list[np.ndarray]
    k: int
    nx: int
    vmax: int
    gap_at: int = 0
    ins_at: int = 0

    def __post_init__(self) -> None:
        self.code_at = [0] * len(self.codes)

    def take_gaps(self, count: int) -> np.ndarray:
        if self.gap_at + count > self.gaps.size:
            raise CodecError("Expected a gap count per gap. Got the end of the gaps section.")
        out = self.gaps[self.gap_at : self.gap_at + count]
        self.gap_at += count
        return out

    def take_inserts(self, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.ins_at + count > self.positions.size:
            raise CodecError("Expected as many insertions as positions. Got more.")
        sl = slice(self.ins_at, self.ins_at + count)
        self.ins_at += count
        return self.positions[sl], None if self.values is None else self.values[sl]

    def take_codes(self, cls: int, count: int) -> np.ndarray:
        at = self.code_at[cls]
        if at + count > self.codes[cls].size:
            raise CodecError("Expected a fate code. Got the end of its section.")
        self.code_at[cls] = at + count
        return self.codes[cls][at : at + count]


def _parse_gaps(raw: bytes) -> np.ndarray:
    b = np.frombuffer(raw, dtype=np.uint8)
    esc = np.flatnonzero(b == _ESCAPE)
    if esc.size == 0:
        return b.astype(np.int64)
    out = b.astype(np.int64)
    keep = np.ones(b.size, dtype=bool)
    at = 0
    while True:
        i = int(np.searchsorted(esc, at))
        if i == esc.size:
            break
        e = int(esc[i])
        if e + 5 > b.size:
            raise CodecError("Expected 4 bytes after a 255 gap code. Got the end.")
        count = int.from_bytes(bytes(b[e + 1 : e + 5]), "little")
        if count < _ESCAPE:
            raise CodecError("Expected an escaped gap count >= 255. Got a smaller one.")
        out[e] = count
        keep[e + 1 : e + 5] = False
        at = e + 5
    return out[keep]


def _unpack_codes(raw: bytes) -> np.ndarray:
    b = np.frombuffer(raw, dtype=np.uint8)
    codes = np.empty(2 * b.size, dtype=np.int64)
    codes[0::2] = b & 15
    codes[1::2] = b >> 4
    return codes


def _decode_row_scalar(
    rd: _Reader, ref: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row from its reference edges, item by item (rows of a slice without a reference
    slice depend on each other)."""
    k, nx = rd.k, rd.nx
    inserted = 2 * k + 1
    rx, rv, rc = (r.tolist() for r in ref)
    xs: list[int] = []
    vs: list[int] = []
    cs: list[int] = []
    last, value = -1, 0
    for g in range(len(rx) + 1):
        (count,) = rd.take_gaps(1).tolist()
        deltas, vals = rd.take_inserts(int(count))
        for t, delta in enumerate(deltas.tolist()):
            x = last + delta
            v = value ^ 1 if vals is None else int(vals[t])
            if delta == 0 or x >= nx:
                raise CodecError(
                    "Expected inserted edges inside the row, after the previous one. "
                    "Got one outside."
                )
            if v > rd.vmax:
                raise CodecError("Expected edge values that fit the dtype. Got a larger one.")
            xs.append(x)
            vs.append(v)
            cs.append(inserted)
            last, value = x, v
        if g < len(rx):
            (code,) = rd.take_codes(rc[g], 1).tolist()
            if code <= 2 * k:
                x = rx[g] + code - k
                if x <= last or x >= nx:
                    raise CodecError(
                        "Expected matched edges inside the row, after the previous one. "
                        "Got one outside."
                    )
                xs.append(x)
                vs.append(rv[g])
                cs.append(code)
                last, value = x, rv[g]
            elif code != inserted:
                raise CodecError("Expected fate codes 0..2K+1. Got a larger one.")
    return (
        np.array(xs, dtype=np.int64),
        np.array(vs, dtype=np.uint64),
        np.array(cs, dtype=np.int64),
    )


def _decode_slice(
    rd: _Reader,
    ref_x: np.ndarray,
    ref_v: np.ndarray,
    ref_c: np.ndarray,
    ref_counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All rows of a slice at once from the previous slice's edges (grouped by row).

    Returns the row (within the slice), position, value and class of every edge, in order.
    """
    k, nx = rd.k, rd.nx
    inserted = 2 * k + 1
    n_rows = ref_counts.size
    g = rd.take_gaps(int(ref_counts.sum()) + n_rows)
    fate = np.empty(ref_x.size, dtype=np.int64)
    for q in range(2 * k + 2):
        sel = ref_c == q
        count = int(np.count_nonzero(sel))
        if count:
            fate[sel] = rd.take_codes(q, count)
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
    n_ins = int(g.sum())
    deltas, ins_values = rd.take_inserts(n_ins)
    per_gap = g + kept_after
    total = int(per_gap.sum())
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
    x_ins = anchor_x[idx] + csum - anchor_c[idx]
    x = np.where(is_ins, x_ins, x)
    v = np.empty(total, dtype=np.uint64)
    v[is_ref] = ref_v[ref_idx]
    if ins_values is None:
        anchor_v = np.where(is_ref, v, 0).astype(np.int64)
        steps = np.arange(total) - idx + pseudo[idx]
        v[is_ins] = (anchor_v[idx] ^ (steps & 1))[is_ins].astype(np.uint64)
    else:
        v[is_ins] = ins_values
        if ins_values.size and int(ins_values.max()) > rd.vmax:
            raise CodecError("Expected edge values that fit the dtype. Got a larger one.")
    if total:
        inside = (x >= 0) & (x < nx)
        rising = np.ones(total, dtype=bool)
        rising[1:] = first[1:] | (x[1:] > x[:-1])
        if not (inside.all() and rising.all()) or (is_ins & (delta == 0)).any():
            raise CodecError(
                "Expected edges inside the row, each after the previous one. Got one outside."
            )
    cls = np.full(total, inserted, dtype=np.int64)
    cls[is_ref] = fate[ref_idx]
    return row, x, v, cls


def _decode_numpy(rd: _Reader, nz: int, ny: int, nx: int, out: np.ndarray) -> None:
    rows_all: list[np.ndarray] = []
    xs_all: list[np.ndarray] = []
    vs_all: list[np.ndarray] = []
    empty = (np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.int64))
    prev: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    for z in range(nz):
        if prev is None:  # the first slice: row y refers to row y - 1
            pieces = []
            ref = empty
            for _ in range(ny):
                ref = _decode_row_scalar(rd, ref)
                pieces.append(ref)
            counts = np.array([p[0].size for p in pieces], dtype=np.int64)
            row = np.repeat(np.arange(ny), counts)
            x = np.concatenate([p[0] for p in pieces])
            v = np.concatenate([p[1] for p in pieces])
            c = np.concatenate([p[2] for p in pieces])
        else:
            px, pv, pc, pcounts = prev
            row, x, v, c = _decode_slice(rd, px, pv, pc, pcounts)
            counts = np.bincount(row, minlength=ny) if row.size else np.zeros(ny, np.int64)
        prev = (x, v, c, counts)
        rows_all.append(row + z * ny)
        xs_all.append(x)
        vs_all.append(v)
    _paint(
        np.concatenate(rows_all), np.concatenate(xs_all), np.concatenate(vs_all), nz * ny, nx, out
    )


def _paint(
    rows: np.ndarray, xs: np.ndarray, vs: np.ndarray, n_rows: int, nx: int, out: np.ndarray
) -> None:
    """Fill ``out`` (n_rows x nx values) from the edges: value 0 from each row's start."""
    n = rows.size
    starts = np.empty(n + n_rows, dtype=np.int64)
    values = np.zeros(n + n_rows, dtype=out.dtype)
    edge_at = np.arange(n) + rows + 1  # each row's start precedes its edges
    row_at = np.arange(n_rows) + np.searchsorted(rows, np.arange(n_rows), side="left")
    starts[edge_at] = rows * nx + xs
    values[edge_at] = vs.astype(out.dtype) if out.dtype != np.bool_ else vs.astype(bool)
    starts[row_at] = np.arange(n_rows, dtype=np.int64) * nx
    lengths = np.diff(np.append(starts, n_rows * nx))
    out[...] = np.repeat(values, lengths).reshape(out.shape)


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
    vmax = 1 if got_dtype == np.bool_ else (1 << (8 * got_dtype.itemsize)) - 1
    if mode == MODE_CONSTANT:
        constant, off = _read_varint(buf, off, end, "constant value")
        if constant > vmax:
            raise CodecError(f"Expected a constant value <= {vmax}. Got {constant}.")
        if off != end:
            raise CodecError(f"Expected {end - off} fewer bytes after the constant. Got them.")
        return _Header(got_dtype, got_shape, mode, constant, 0, 0, 0, (), end)
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
    rows = count // got_shape[-1] if got_shape[-1] else 0
    (_, g_raw), (_, p_raw), (_, v_raw) = sections[:3]
    limits = (
        ("gaps", g_raw, 5 * (count + rows)),
        ("positions", p_raw, p * count),
        ("values", v_raw, w * count),
        ("fates", sum(r for _, r in sections[3:]), count // 2 + 2 * k + 2),
    )
    for what, raw_size, limit in limits:
        if raw_size > limit:
            raise CodecError(
                f"Expected at most {limit} bytes of {what} for {count} elements. Got {raw_size}."
            )
    if p_raw % p or (w and v_raw != p_raw // p * w) or (not w and v_raw):
        raise CodecError("Expected one position and one value per inserted edge. Got others.")
    return _Header(got_dtype, got_shape, mode, 0, k, w, p, tuple(sections), off)


def _store(raw: bytes, level: int) -> bytes:
    """A section as stored: one zstd frame when that is smaller, else the raw bytes."""
    if not raw:
        return b""
    frame: bytes = zstd_compressor(level, checksum=False).compress(raw)
    return frame if len(frame) < len(raw) else raw


def _load(stored: memoryview, raw_size: int, what: str) -> bytes:
    if len(stored) == raw_size:
        return bytes(stored)
    try:
        params = zstd.get_frame_parameters(stored)
        if params.content_size != raw_size:
            raise CodecError(
                f"Expected the {what} section to decode to {raw_size} bytes. "
                f"Got a frame declaring {params.content_size}."
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
class EdgesCodec:
    """Lossless codec for label maps and binary masks: row edges predicted slice to slice.

    ``level`` (1..22, default 9) is the zstd level of the sections. Streams decode with the
    compiled kernel when it is built (without the GIL), else with numpy.
    """

    codec_id: ClassVar[str] = "medmask.edges"
    level: int = 9

    def __post_init__(self) -> None:
        check_level(self.level, self.codec_id)

    def get_config(self) -> dict[str, Any]:
        """JSON-able configuration, including ``"id"``."""
        return {"id": self.codec_id, "level": self.level}

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
        stored = [_store(r, self.level) for r in raws]
        fields = bytes([k, w, p]) + b"".join(
            _varint(len(s)) + _varint(len(r)) for s, r in zip(stored, raws, strict=True)
        )
        stream = _finish(a, dtype, MODE_EDGES, fields, *stored)
        if len(stream) > a.nbytes // 8:  # noise-like: the raw values may compress better
            raw = np.packbits(a.reshape(-1)).tobytes() if a.dtype == np.bool_ else _planes(a)
            body = _store(raw, self.level)
            plain = _finish(a, dtype, MODE_PLAIN, _varint(len(body)) + _varint(len(raw)), body)
            if len(plain) < len(stream):
                return plain, stats
        return stream, stats

    def decode(
        self,
        data: bytes | bytearray | memoryview,
        *,
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype[Any] | type | str | None = None,
    ) -> np.ndarray:
        """Decode a stream; ``shape``/``dtype`` are checked against its header first."""
        return self._decode(data, shape, dtype, None)

    def decode_with_values(
        self,
        data: bytes | bytearray | memoryview,
        *,
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype[Any] | type | str | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode, and give the array's distinct values (every inserted edge's value and 0:
        each value of the array enters through an inserted edge)."""
        present: list[np.ndarray | None] = []
        return self._decode(data, shape, dtype, present), present[0]

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
        rows_contiguous = out.ndim == 0 or out.strides[-1] == out.dtype.itemsize
        if out.dtype.isnative and rows_contiguous:  # signed: the same bits as unsigned
            self._fill(buf, h, out.view(storage_dtype(h.dtype)), present)
        else:
            out[...] = self._fill_new(buf, h, present)

    def _decode(
        self,
        data: bytes | bytearray | memoryview,
        shape: tuple[int, ...] | None,
        dtype: np.dtype[Any] | type | str | None,
        present: list[np.ndarray | None] | None,
    ) -> np.ndarray:
        buf = memoryview(data).cast("B")
        h = _parse(buf, shape, None if dtype is None else np.dtype(dtype))
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
            flat = _from_value_planes(raw, out3.size, h.dtype)
            out3[...] = flat.reshape(out3.shape)
            if present is not None:
                present.append(None)
            return
        off = h.end  # the first section
        raws = []
        names = ["gaps", "positions", "values", *(f"fates {c}" for c in range(2 * h.k + 2))]
        for (stored, raw_size), what in zip(h.sections, names, strict=True):
            raws.append(_load(buf[off : off + stored], raw_size, what))
            off += stored
        positions = _from_planes(raws[1], h.position_width, "<u4")
        values = _from_planes(raws[2], h.value_width, "<u8") if h.value_width else None
        nz, ny, nx = out3.shape
        vmax = 1 if h.dtype == np.bool_ else (1 << (8 * h.dtype.itemsize)) - 1
        if _use_kernel():
            assert _kernel is not None
            try:
                _kernel.decode(
                    raws[0],
                    tuple(raws[3:]),
                    positions.astype("=u4", copy=False),
                    None if values is None else values.astype("=u8", copy=False),
                    out3.dtype.itemsize,
                    h.k,
                    vmax,
                    out3.view(np.uint8) if out3.dtype == np.bool_ else out3,
                )
            except ValueError as exc:
                raise CodecError(str(exc)) from None
        else:
            rd = _Reader(
                _parse_gaps(raws[0]),
                positions.astype(np.int64),
                values,
                [_unpack_codes(r) for r in raws[3:]],
                h.k,
                nx,
                vmax,
            )
            _decode_numpy(rd, nz, ny, nx, out3)
            _check_consumed(rd, raws[3:])
        if present is not None:
            found = np.array([0, 1]) if values is None else np.union1d(np.unique(values), [0])
            present.append(found.astype(np.uint64))


def _check_consumed(rd: _Reader, fates: list[bytes]) -> None:
    if rd.gap_at != rd.gaps.size:
        raise CodecError("Expected the gaps section to end with the last row. Got more bytes.")
    if rd.ins_at != rd.positions.size:
        raise CodecError("Expected one inserted edge per position. Got unused positions.")
    for used, raw in zip(rd.code_at, fates, strict=True):
        if (used + 1) // 2 != len(raw) or (used % 2 and raw[used // 2] >> 4):
            raise CodecError("Expected one fate code per reference edge. Got unused fate codes.")


def _constant(v3: np.ndarray, pos: np.ndarray, val: np.ndarray) -> int | None:
    """The value of a constant array (None when it is not): only arrays with at most one
    inserted edge (at the start of the first row) can be constant."""
    if pos.size == 0:
        return 0
    if pos.size == 1 and int(pos[0]) == 1 and bool(np.all(v3 == v3.flat[0])):
        return int(val[0])
    return None
