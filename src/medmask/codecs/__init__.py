"""Pure encode/decode of mask chunks (numpy + zstandard only).

Three codecs, each a small frozen dataclass (a :class:`CodecBase`) with a zstd ``level`` knob,
registered in :data:`CODECS` by their ``codec_id`` and ``kind`` (the stream's kind byte):

- :class:`EdgesCodec` (``"medmask.edges"``): every row's edges, predicted from the previous
  slice; the default for label maps and binary masks alike (medmask 0.2).
- :class:`BinaryCodec` (``"medmask.binary"``): bit-packed binary masks.
- :class:`LabelCodec` (``"medmask.labels"``): run-length coded label maps.

Every encoded stream is self-describing (magic, version, dtype, shape, CRC-32 header) and
every zstd frame carries a checksum; see ``docs/codecs.md`` for the byte layout.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from medmask.codecs._base import Codec, CodecBase, DecodesInto, EncodesWithStats
from medmask.codecs._binary import BinaryCodec
from medmask.codecs._edges import EdgesCodec, kernel_available
from medmask.codecs._labels import LabelCodec
from medmask.codecs._stream import (
    HEADER_PREFIX,
    MAGIC,
    MAX_DECODED_NBYTES,
    MAX_LEVEL,
    MAX_NDIM,
    MIN_LEVEL,
    dtype_from_code,
    normalize_input,
)
from medmask.errors import CodecError

__all__ = [
    "CODECS",
    "CODECS_BY_KIND",
    "CODEC_KINDS",
    "MAX_DECODED_NBYTES",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "BinaryCodec",
    "Codec",
    "CodecBase",
    "DecodesInto",
    "EdgesCodec",
    "EncodesWithStats",
    "LabelCodec",
    "StreamPrefix",
    "choose_codec",
    "decode",
    "get_codec",
    "kernel_available",
    "peek_stream",
]

#: The codec classes: the one list every table below (and the adapters) is built from.
_CLASSES: tuple[type[CodecBase], ...] = (BinaryCodec, LabelCodec, EdgesCodec)

CodecClass = type[CodecBase]

#: codec_id -> codec class.
CODECS: Mapping[str, CodecClass] = {cls.codec_id: cls for cls in _CLASSES}

#: codec_id -> the stream kind (header byte 4) its streams carry.
CODEC_KINDS: Mapping[str, int] = {cls.codec_id: cls.kind for cls in _CLASSES}

#: stream kind -> codec class (what :func:`decode` dispatches on).
CODECS_BY_KIND: Mapping[int, CodecClass] = {
    cls.kind: cls for cls in sorted(_CLASSES, key=lambda cls: cls.kind)
}


class StreamPrefix(NamedTuple):
    """The fields every codec stream starts with (docs/codecs.md, sections 1 and 6.1)."""

    kind: int
    version: int
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]


def peek_stream(data: bytes | bytearray | memoryview) -> StreamPrefix:
    """Read a stream's common prefix (magic, version, kind, dtype, ndim, shape: the first
    ``8 + 4 * ndim`` bytes, laid out the same for every kind) without decoding or checking
    the rest; a malformed prefix raises :class:`CodecError`."""
    buf = memoryview(data).cast("B")
    if len(buf) < HEADER_PREFIX.size:
        raise CodecError(
            f"Expected a codec stream of at least {HEADER_PREFIX.size} bytes. Got {len(buf)}."
        )
    magic, version, kind, code, ndim, _ = HEADER_PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CodecError(f"Expected stream magic {MAGIC!r}. Got {bytes(magic)!r}.")
    if not 1 <= ndim <= MAX_NDIM:
        raise CodecError(f"Expected ndim 1..{MAX_NDIM} in the stream header. Got {ndim}.")
    end = HEADER_PREFIX.size + 4 * ndim
    if len(buf) < end:
        raise CodecError(
            f"Expected a stream header of at least {end} bytes. Got {len(buf)} (truncated)."
        )
    dtype = dtype_from_code(code)
    if dtype is None:
        raise CodecError(f"Expected a known dtype code in the stream header. Got {code}.")
    shape = tuple(int(s) for s in struct.unpack_from(f"<{ndim}I", buf, HEADER_PREFIX.size))
    return StreamPrefix(kind, version, dtype, shape)


def get_codec(config: Mapping[str, Any], *, strict: bool = False) -> Codec:
    """Build a codec from ``get_config()`` output, e.g. ``{"id": "medmask.labels", "level": 9}``.

    Keys other than ``id`` and ``level`` are ignored (a stream carries everything its decoder
    needs, so a key added by a newer minor version only records how it was written;
    docs/format.md section 1), or refused with ``strict`` (a codec asked for by a writer).
    """
    if not isinstance(config, Mapping):
        raise CodecError(f"Expected a codec config mapping. Got {type(config).__name__}.")
    codec_id = config.get("id")
    cls = CODECS.get(codec_id) if isinstance(codec_id, str) else None
    if cls is None:
        raise CodecError(f"Expected a codec id in {sorted(CODECS)}. Got {codec_id!r}.")
    extra = set(config) - {"id", "level"}
    if extra and strict:
        raise CodecError(f"Expected config keys 'id' and 'level'. Got also {sorted(extra)}.")
    if "level" not in config:
        return cls()
    return cls(level=config["level"])


def choose_codec(array: np.ndarray, *, level: int | None = None) -> Codec:
    """The codec medmask writes with: :class:`EdgesCodec` for every mask (binary or labels).

    The array is only validated; the argument lets a future policy look at it.
    """
    normalize_input(array, "auto")
    return EdgesCodec() if level is None else EdgesCodec(level=level)


def decode(
    data: bytes | bytearray | memoryview,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: np.dtype[Any] | type | str | None = None,
) -> np.ndarray:
    """Decode a stream of any medmask codec, dispatching on its header's kind byte."""
    buf = memoryview(data).cast("B")
    if len(buf) < 5:
        raise CodecError(f"Expected a codec stream of at least 5 bytes. Got {len(buf)} bytes.")
    cls = CODECS_BY_KIND.get(buf[4])
    if cls is None:
        known = [f"{k} ({c.codec_id.rpartition('.')[2]})" for k, c in CODECS_BY_KIND.items()]
        raise CodecError(
            f"Expected codec kind {', '.join(known[:-1])} or {known[-1]}. Got {buf[4]}."
        )
    return cls().decode(buf, shape=shape, dtype=dtype)
