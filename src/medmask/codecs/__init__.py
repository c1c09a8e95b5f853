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

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from medmask.codecs._binary import BinaryCodec
from medmask.codecs._edges import EdgesCodec, kernel_available
from medmask.codecs._labels import LabelCodec
from medmask.codecs._stream import MAX_DECODED_NBYTES, MAX_LEVEL, MIN_LEVEL, normalize_input
from medmask.errors import CodecError

__all__ = [
    "CODECS",
    "MAX_DECODED_NBYTES",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "BinaryCodec",
    "Codec",
    "EdgesCodec",
    "LabelCodec",
    "choose_codec",
    "decode",
    "get_codec",
    "kernel_available",
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


def get_codec(config: Mapping[str, Any]) -> Codec:
    """Build a codec from ``get_config()`` output, e.g. ``{"id": "medmask.labels", "level": 9}``."""
    if not isinstance(config, Mapping):
        raise CodecError(f"Expected a codec config mapping. Got {type(config).__name__}.")
    codec_id = config.get("id")
    cls = CODECS.get(codec_id) if isinstance(codec_id, str) else None
    if cls is None:
        raise CodecError(f"Expected a codec id in {sorted(CODECS)}. Got {codec_id!r}.")
    extra = set(config) - {"id", "level"}
    if extra:
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
