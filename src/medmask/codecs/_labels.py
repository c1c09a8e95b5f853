"""``medmask.labels``: run-length coded label maps (optional XOR with the previous slice)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np

from medmask.codecs._base import CodecBase
from medmask.codecs._stream import (
    StreamHeader,
    byte_width,
    compress,
    decompress,
    memory_refusal,
    normalize_input,
    pack_header,
    parse_header,
    restore_dtype,
    storage_dtype,
    value_max,
)
from medmask.errors import CodecError

__all__ = ["LabelCodec", "decode_body", "distinct_values", "encode_stream", "read_header"]

KIND: Final = 2
MODE_CONSTANT: Final = 0
MODE_RUNS: Final = 1
MODE_PLAIN: Final = 2
TRANSFORM_NONE: Final = 0
TRANSFORM_XOR0: Final = 1
ESCAPE: Final = 255
MAX_RUN: Final = 0xFFFFFFFF
MAX_CONSTANT: Final = 0xFFFFFFFF  # the header's constant field is 32 bits
# transform u8, value width u8, constant value u32, run count u64, long-run count u64
_FIELDS: Final = struct.Struct("<BBIQQ")
_N_SECTIONS: Final = 3
_ACCUMULATE_BELOW: Final = 256  # rows shorter than this are un-XORed with ufunc.accumulate
_RUN_BLOCK: Final = 1 << 16  # runs expanded per np.repeat call
_FILL_FROM: Final = 1 << 10  # runs at least this long are written with a slice fill
_ONE_SHOT_RATIO: Final = 16  # one np.repeat over all runs when runs <= output bytes / this


def _xor_axis0(a: np.ndarray) -> np.ndarray:
    d = np.empty_like(a)
    d[0] = a[0]
    np.bitwise_xor(a[1:], a[:-1], out=d[1:])
    return d


def _unxor_axis0(d: np.ndarray) -> None:
    r = d.reshape(d.shape[0], -1)
    if r.shape[1] < _ACCUMULATE_BELOW:
        np.bitwise_xor.accumulate(r, axis=0, out=r)
        return
    for i in range(1, r.shape[0]):
        np.bitwise_xor(r[i], r[i - 1], out=r[i])


def encode_stream(
    kind: int, dtype: np.dtype[Any], shape: tuple[int, ...], body: np.ndarray, level: int
) -> bytes:
    """Stream header for an array of ``dtype``/``shape``, then the run-coded ``body``."""
    mode, fields, frames = encode_body(body, level)
    sizes = tuple(len(f) for f in frames)
    return b"".join((pack_header(kind, dtype, shape, mode, _FIELDS, fields, sizes), *frames))


def read_header(
    buf: memoryview,
    kind: int,
    codec_id: str,
    shape: tuple[int, ...] | None,
    dtype: np.dtype[Any] | type | str | None,
) -> StreamHeader:
    """Parse and check a stream header (``shape``/``dtype``: expected values, or None)."""
    want = None if dtype is None else np.dtype(dtype)
    return parse_header(buf, kind, codec_id, _FIELDS, _N_SECTIONS, shape, want)


def encode_body(a: np.ndarray, level: int) -> tuple[int, tuple[int, ...], list[bytes]]:
    """Encode a C-contiguous array: (mode, header field values, section frames)."""
    n = a.size
    flat = a.reshape(-1)
    empty: list[bytes] = [b"", b"", b""]
    if n == 0:
        return MODE_CONSTANT, (0, 0, 0, 0, 0), empty
    # Pick the transform with fewer runs.
    ne = flat[1:] != flat[:-1]
    n_changes = int(np.count_nonzero(ne))
    if n_changes == 0 and int(flat[0]) <= MAX_CONSTANT:
        return MODE_CONSTANT, (0, 0, int(flat[0]), 0, 0), empty
    transform = TRANSFORM_NONE
    src = flat
    if a.ndim >= 2 and a.shape[0] > 1:
        dflat = _xor_axis0(a).reshape(-1)
        ne_x = dflat[1:] != dflat[:-1]
        n_x = int(np.count_nonzero(ne_x))
        if n_x < n_changes:
            transform, src, ne, n_changes = TRANSFORM_XOR0, dflat, ne_x, n_x
    n_runs = n_changes + 1
    itemsize = a.dtype.itemsize
    if n_runs * 2 > a.nbytes:  # runs cannot pay off: plain byte planes
        return _encode_plain(a, level)
    starts = np.empty(n_runs + 1, dtype=np.intp)
    starts[0] = 0
    starts[1:-1] = np.flatnonzero(ne)
    starts[1:-1] += 1
    starts[-1] = n
    lengths = np.diff(starts)
    values = src[starts[:-1]]
    if lengths.max() > MAX_RUN:  # only for arrays of more than 2**32 elements
        pieces = (lengths + MAX_RUN - 1) // MAX_RUN
        values = np.repeat(values, pieces)
        ends = np.cumsum(pieces)
        lengths = np.full(int(ends[-1]), MAX_RUN, dtype=np.intp)
        lengths[ends - 1] = np.diff(starts) - (pieces - 1) * MAX_RUN
        n_runs = lengths.size
    width = min(byte_width(int(values.max())), itemsize)
    if n_runs * (width + 1) > a.nbytes:
        return _encode_plain(a, level)
    if itemsize == 1:
        vbytes = values.view(np.uint8)
    else:
        planes = values.astype(f"<u{itemsize}").view(np.uint8).reshape(n_runs, itemsize)
        vbytes = np.ascontiguousarray(planes[:, :width].T)
    short = np.minimum(lengths, ESCAPE).astype(np.uint8)
    long = lengths[lengths >= ESCAPE].astype("<u4")
    frames = [
        compress(vbytes, level),
        compress(short, level),
        compress(long, level) if long.size else b"",
    ]
    return MODE_RUNS, (transform, width, 0, n_runs, int(long.size)), frames


def _encode_plain(a: np.ndarray, level: int) -> tuple[int, tuple[int, ...], list[bytes]]:
    itemsize = a.dtype.itemsize
    if itemsize == 1:
        raw = a.reshape(-1).view(np.uint8)
    else:
        le = a.reshape(-1).astype(f"<u{itemsize}").view(np.uint8).reshape(-1, itemsize)
        raw = np.ascontiguousarray(le.T)
    return MODE_PLAIN, (0, itemsize, 0, 0, 0), [compress(raw, level), b"", b""]


def decode_body(
    buf: memoryview,
    off: int,
    mode: int,
    fields: tuple[int, ...],
    sizes: tuple[int, ...],
    shape: tuple[int, ...],
    dt: np.dtype[Any],
    present: list[np.ndarray | None] | None = None,
    *,
    signed: bool = False,
) -> np.ndarray:
    """Decode the sections starting at ``buf[off]`` to an array of ``shape`` and ``dt``
    (``signed``: the stream's dtype is signed, so values above its maximum are refused).

    With ``present``, also append the distinct values of the array when the run structure
    gives them cheaply (None when it does not: the caller must scan the array).
    """
    transform, width, value, n_runs, n_long = fields
    s_values, s_short, s_long = sizes
    itemsize = dt.itemsize
    n = 1
    for s in shape:
        n *= s
    nbytes = n * itemsize
    vmax = value_max(np.dtype(f"i{itemsize}") if signed else dt)
    if n == 0 and mode != MODE_CONSTANT:
        raise CodecError(f"Expected mode 0 (constant) for a zero-size array. Got mode {mode}.")
    if mode == MODE_CONSTANT:
        if transform or width or n_runs or n_long or s_values or s_short or s_long:
            raise CodecError("Expected zero fields and sections for a constant array. Got some.")
        if value > vmax:
            raise CodecError(f"Expected a constant value <= {vmax} for {dt}. Got {value}.")
        if present is not None:
            present.append(np.array([value], dtype=np.uint64))
        if value == 0:
            return np.zeros(shape, dtype=dt)
        return np.full(shape, value, dtype=dt)
    if mode == MODE_PLAIN:
        if transform or width != itemsize or value or n_runs or n_long or s_short or s_long:
            raise CodecError("Expected plain-mode fields (0, itemsize, 0, 0, 0). Got others.")
        raw = decompress(buf[off:], nbytes, "plain values")
        if signed and _top_bit_set(raw, n, itemsize, itemsize):
            raise CodecError(f"Expected values <= {vmax} (labels are never negative). Got more.")
        if present is not None:
            present.append(None)  # noise-like data: nothing cheaper than a scan
        return _from_planes(raw, n, itemsize, dt, validate=True).reshape(shape)
    if mode != MODE_RUNS:
        raise CodecError(f"Expected mode 0, 1 or 2. Got {mode}.")
    if transform not in (TRANSFORM_NONE, TRANSFORM_XOR0):
        raise CodecError(f"Expected transform 0 or 1. Got {transform}.")
    if not 1 <= width <= itemsize or value:
        raise CodecError(f"Expected a value width in 1..{itemsize}. Got {width}.")
    if n_runs < 1 or n_runs * (width + 1) > nbytes or n_long > n_runs:
        raise CodecError(
            f"Expected 1..{nbytes // (width + 1)} runs and at most as many long runs. "
            f"Got {n_runs} runs, {n_long} long."
        )
    raw_v = decompress(buf[off : off + s_values], n_runs * width, "run values")
    off += s_values
    # XOR of values below 2**(8b-1) stays below it: only then is the output checked
    check_sign = signed and width == itemsize and _top_bit_set(raw_v, n_runs, width, itemsize)
    raw_s = decompress(buf[off : off + s_short], n_runs, "run lengths")
    off += s_short
    raw_l = b""
    if n_long:
        raw_l = decompress(buf[off : off + s_long], 4 * n_long, "long run lengths")
    elif s_long:
        raise CodecError(f"Expected an empty long-run section. Got {s_long} bytes.")
    short = np.frombuffer(raw_s, dtype=np.uint8)
    if not short.all():
        raise CodecError("Expected run length codes >= 1. Got a 0 code.")
    esc = np.flatnonzero(short == ESCAPE)
    if esc.size != n_long:
        raise CodecError(f"Expected {n_long} escaped run lengths. Got {esc.size}.")
    long = np.frombuffer(raw_l, dtype="<u4")
    if n_long and int(long.min()) < ESCAPE:
        raise CodecError(f"Expected long run lengths >= {ESCAPE}. Got {int(long.min())}.")
    # the sum in 64 bits without an 8-byte-per-run array: short codes (escapes count 255 each)
    total = int(np.add.reduce(short, dtype=np.uint64)) + int(long.sum(dtype=np.uint64))
    total -= ESCAPE * n_long
    if total != n:
        raise CodecError(
            f"Expected positive run lengths summing to {n} elements. Got a sum of {total}."
        )
    runs: tuple[np.ndarray, np.ndarray] | None = None  # (values, lengths) when expanded at once
    if n_runs * _ONE_SHOT_RATIO <= nbytes:  # few runs: 8-byte lengths cost at most 1/2 output
        lengths = short.astype(np.intp)
        lengths[esc] = long
        values = _from_planes(raw_v, n_runs, width, dt, validate=True)
        out = np.repeat(values, lengths).reshape(shape)
        runs = values, lengths
    else:
        out = np.empty(n, dtype=dt)
        _expand_runs(raw_v, n_runs, width, dt, short, esc, long, out)
        out = out.reshape(shape)
    if transform == TRANSFORM_XOR0:
        _unxor_axis0(out)
    if check_sign and int(out.max()) > vmax:
        raise CodecError(f"Expected values <= {vmax} (labels are never negative). Got more.")
    if present is not None:
        present.append(None if runs is None else _present_values(out, *runs, transform))
    return out


def _top_bit_set(raw: bytes, n: int, width: int, itemsize: int) -> bool:
    """Whether a value of ``width`` byte planes (``n`` values each) reaches ``2**(8 itemsize - 1)``
    (only possible when ``width == itemsize``)."""
    if width < itemsize or n == 0:
        return False
    top = np.frombuffer(raw, dtype=np.uint8)[(width - 1) * n : width * n]
    return bool(int(top.max()) > 0x7F)


def distinct_values(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``a`` (bincount for 1- and 2-byte types, else a sort)."""
    flat = a.reshape(-1)
    if flat.dtype.itemsize <= 2:
        view = flat.view(np.uint8 if flat.dtype.itemsize == 1 else np.uint16)
        return np.flatnonzero(np.bincount(view)).astype(np.uint64)
    return np.unique(flat).astype(np.uint64)


def _present_values(
    out: np.ndarray, values: np.ndarray, lengths: np.ndarray, transform: int
) -> np.ndarray | None:
    """Distinct values of ``out`` from its runs, or None when that costs about a scan.

    Without a transform they are the run values. With the XOR transform a voxel equals the one
    a slice before unless its run value is non-zero, so the values are those of the first
    slice plus those at non-zero runs: typically a few percent of the voxels.
    """
    if transform == TRANSFORM_NONE:
        return distinct_values(values)
    flat = out.reshape(-1)
    first = flat.size // out.shape[0]
    ends = np.cumsum(lengths)
    starts = np.maximum(ends - lengths, first)
    keep = (values != 0) & (ends > starts)
    starts, ends = starts[keep], ends[keep]
    sizes = ends - starts
    total = int(sizes.sum())
    if total > flat.size // 8:
        return None
    # positions of every voxel of the kept runs: one arange shifted per run
    shift = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
    changed = flat[np.arange(total, dtype=np.intp) + shift]
    return np.union1d(distinct_values(flat[:first]), distinct_values(changed))


def _expand_runs(
    raw_v: bytes,
    n_runs: int,
    width: int,
    dt: np.dtype[Any],
    short: np.ndarray,
    esc: np.ndarray,
    long: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write the runs into ``out`` block by block.

    ``np.repeat`` wants 8-byte run lengths and returns a new array; done on all runs at once
    that costs up to 8x the output (2-voxel runs). Blocks of :data:`_RUN_BLOCK` runs keep the
    temporaries small, and runs of :data:`_FILL_FROM` or more elements are filled in place.
    """
    planes = np.frombuffer(raw_v, dtype=np.uint8).reshape(width, n_runs)
    pos = 0
    esc_at = 0
    for first in range(0, n_runs, _RUN_BLOCK):
        last = min(first + _RUN_BLOCK, n_runs)
        lengths = short[first:last].astype(np.intp)
        esc_end = int(np.searchsorted(esc, last))
        big: Any = ()
        if esc_end > esc_at:  # only escaped (long) runs can reach _FILL_FROM
            lengths[esc[esc_at:esc_end] - first] = long[esc_at:esc_end]
            esc_at = esc_end
            big = np.flatnonzero(lengths >= _FILL_FROM)
        values = _from_planes(planes[:, first:last], last - first, width, dt, validate=True)
        start = 0
        for i in (*big, last - first):
            if i > start:  # runs shorter than _FILL_FROM: at most _RUN_BLOCK * _FILL_FROM items
                piece = np.repeat(values[start:i], lengths[start:i])
                out[pos : pos + piece.size] = piece
                pos += piece.size
            if i < last - first:
                run = int(lengths[i])
                out[pos : pos + run] = values[i]
                pos += run
                start = i + 1


def _from_planes(
    raw: bytes | np.ndarray, n: int, width: int, dt: np.dtype[Any], *, validate: bool
) -> np.ndarray:
    """Values from ``width`` little-endian byte planes of ``n`` bytes each."""
    planes = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes) else raw
    if dt.itemsize == 1:
        u8 = planes.reshape(n)
        if dt == np.bool_:
            if validate and n and int(u8.max()) > 1:
                raise CodecError("Expected values 0 or 1 for a bool array. Got larger values.")
            return u8.view(np.bool_)
        return u8
    planes = planes.reshape(width, n)
    le = np.zeros((n, dt.itemsize), dtype=np.uint8)
    le[:, :width] = planes.T
    return le.view(f"<u{dt.itemsize}").reshape(n).astype(dt, copy=False)


@dataclass(frozen=True)
class LabelCodec(CodecBase):
    """Lossless codec for label maps (bool, uint8, uint16 or uint32).

    The flattened (C-order) array, optionally XORed with its predecessor along axis 0, is cut
    into runs; run values (byte planes), short run lengths (uint8, 255 = escape) and long run
    lengths (uint32) are three zstd frames at ``level`` (1..22, default 9).
    ``decode_with_values`` gives the distinct values when the runs tell them cheaply.
    """

    codec_id: ClassVar[str] = "medmask.labels"
    kind: ClassVar[int] = KIND

    def encode(self, array: np.ndarray) -> bytes:
        """Encode a label array (any integer dtype with non-negative values, or bool)."""
        a, dtype = normalize_input(array, self.codec_id)
        return encode_stream(KIND, dtype, a.shape, a, self.level)

    def _decode(
        self,
        buf: memoryview,
        shape: tuple[int, ...] | None,
        dtype: np.dtype[Any] | type | str | None,
        present: list[np.ndarray | None] | None,
    ) -> np.ndarray:
        h = read_header(buf, KIND, self.codec_id, shape, dtype)
        with memory_refusal(h.shape, h.dtype, self.codec_id):
            out = decode_body(
                buf,
                h.end,
                h.mode,
                h.fields,
                h.section_sizes,
                h.shape,
                storage_dtype(h.dtype),
                present,
                signed=h.dtype.kind == "i",
            )
            return restore_dtype(out, h.dtype)  # a copy for big-endian dtypes
