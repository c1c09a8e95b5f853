"""Pure encode/decode of mask chunks (numpy + zstandard only).

Three codecs, each a small frozen dataclass with a zstd ``level`` knob:

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
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np

from medmask.codecs._binary import KIND as _BINARY_KIND
from medmask.codecs._binary import BinaryCodec
from medmask.codecs._edges import KIND as _EDGES_KIND
from medmask.codecs._edges import EdgesCodec, kernel_available
from medmask.codecs._labels import KIND as _LABELS_KIND
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
    "CODEC_KINDS",
    "MAX_DECODED_NBYTES",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "BinaryCodec",
    "Codec",
    "EdgesCodec",
    "LabelCodec",
    "StreamPrefix",
    "choose_codec",
    "decode",
    "get_codec",
    "kernel_available",
    "peek_stream",
]


@runtime_checkable
class Codec(Protocol):
    """What the format layer and the adapters call."""

    codec_id: ClassVar[str]

    def encode(self, array: np.ndarray) -> bytes:
        """Encode a C-contiguous 1..3-D array of a supported dtype."""
        ...

    def decode(
        self,
        data: bytes | bytearray | memoryview,
        *,
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype[Any] | type | str | None = None,
    ) -> np.ndarray:
        """Decode a stream to an array of its original shape and dtype."""
        ...

    def decode_with_values(
        self,
        data: bytes | bytearray | memoryview,
        *,
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype[Any] | type | str | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode, and give the distinct values when the stream tells them cheaply."""
        ...

    def get_config(self) -> dict[str, Any]:
        """JSON-able configuration, including ``"id"``."""
        ...


#: codec_id -> codec class.
CodecClass = type[BinaryCodec] | type[LabelCodec] | type[EdgesCodec]
CODECS: Mapping[str, CodecClass] = {
    BinaryCodec.codec_id: BinaryCodec,
    LabelCodec.codec_id: LabelCodec,
    EdgesCodec.codec_id: EdgesCodec,
}

#: codec_id -> the stream kind (header byte 4) its streams carry.
CODEC_KINDS: Mapping[str, int] = {
    BinaryCodec.codec_id: _BINARY_KIND,
    LabelCodec.codec_id: _LABELS_KIND,
    EdgesCodec.codec_id: _EDGES_KIND,
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
    kind = buf[4]
    codec: Codec
    if kind == 1:
        codec = BinaryCodec()
    elif kind == 2:
        codec = LabelCodec()
    elif kind == 3:
        codec = EdgesCodec()
    else:
        raise CodecError(f"Expected codec kind 1 (binary), 2 (labels) or 3 (edges). Got {kind}.")
    return codec.decode(buf, shape=shape, dtype=dtype)
