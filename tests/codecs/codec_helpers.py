"""Array generators and stream builders shared by the codec tests (imported by name; test dirs
have no __init__)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from medmask.codecs import _edges as edges

DTYPES = [np.bool_, np.uint8, np.uint16, np.uint32]


def label_volume(shape: tuple[int, ...], dtype: type, seed: int = 0, n: int = 6) -> np.ndarray:
    """Random boxes and spheres of labels, like a segmentation."""
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, dtype=dtype)
    vmax = 1 if dtype is np.bool_ else int(np.iinfo(dtype).max)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(n):
        value = int(rng.integers(1, vmax + 1)) if vmax > 1 else 1
        center = [rng.uniform(0, s) for s in shape]
        radius = rng.uniform(1, max(shape) / 2)
        if rng.random() < 0.5:
            sel = sum((g - c) ** 2 for g, c in zip(grids, center, strict=True)) <= radius**2
        else:
            sel = np.ones(shape, dtype=bool)
            for g, c in zip(grids, center, strict=True):
                sel = sel & (np.abs(g - c) <= radius)
        a[sel] = value
    return a


def varint(value: int) -> bytes:
    """``value`` as a LEB128 varint (docs/codecs.md section 6.1)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def edges_stream(shape: tuple[int, ...], mode: int, rest: bytes, *, dtype_code: int = 2) -> bytes:
    """A kind-3 stream of version 2 (section 6.1): prefix, shape, CRC-32 of the rest, rest."""
    head = b"MMC" + bytes([2, 3, dtype_code, len(shape), mode])
    head += struct.pack(f"<{len(shape)}I", *shape)
    return head + struct.pack("<I", zlib.crc32(rest, zlib.crc32(head))) + rest


@contextmanager
def numpy_paths(on: bool = True) -> Iterator[None]:
    """Within: the numpy edges decoder and the Python encoder (when ``on``), even where the
    compiled kernel is built."""
    edges._FORCE_NUMPY[0] = on
    try:
        yield
    finally:
        edges._FORCE_NUMPY[0] = False


def both_decoders(data: bytes) -> np.ndarray:
    """``data`` decoded by the default path and by the numpy decoder, which must agree
    (dtype and every value); the array."""
    from medmask.codecs import EdgesCodec

    fast = EdgesCodec().decode(data)
    with numpy_paths():
        slow = EdgesCodec().decode(data)
    assert fast.dtype == slow.dtype
    np.testing.assert_array_equal(fast, slow)
    return fast
