"""What a medmask codec is: the :class:`Codec` protocol, the optional capabilities the format
layer looks for (:class:`DecodesInto`, :class:`EncodesWithStats`), and :class:`CodecBase`, the
part every codec class shares (``level``, its check, the config and the two decode calls)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from medmask.codecs._stream import check_level

__all__ = ["Codec", "CodecBase", "DecodesInto", "EncodesWithStats"]

Data = bytes | bytearray | memoryview
DTypeLike = np.dtype[Any] | type | str | None


@runtime_checkable
class Codec(Protocol):
    """What the format layer and the adapters call; ``kind`` is the stream's header byte 4."""

    codec_id: ClassVar[str]
    kind: ClassVar[int]

    def encode(self, array: np.ndarray) -> bytes:
        """Encode a C-contiguous 1..3-D array of a supported dtype."""
        ...

    def decode(
        self, data: Data, *, shape: tuple[int, ...] | None = None, dtype: DTypeLike = None
    ) -> np.ndarray:
        """Decode a stream to an array of its original shape and dtype."""
        ...

    def decode_with_values(
        self, data: Data, *, shape: tuple[int, ...] | None = None, dtype: DTypeLike = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode, and give the distinct values when the stream tells them cheaply."""
        ...

    def get_config(self) -> dict[str, Any]:
        """JSON-able configuration, including ``"id"``."""
        ...


@runtime_checkable
class DecodesInto(Protocol):
    """A codec that decodes into a given array (``medmask.edges``: without the GIL), so the
    format layer writes chunks straight into the output, in parallel threads."""

    def decode_into(
        self, data: Data, out: np.ndarray, *, present: list[np.ndarray | None] | None = None
    ) -> None:
        """Decode into ``out`` (the stream's shape and dtype); with ``present``, also append
        the distinct values (as ``decode_with_values``)."""
        ...


@runtime_checkable
class EncodesWithStats(Protocol):
    """A codec that counts voxels and bounds per value while it encodes, so a writer needs
    no second pass over the array."""

    def encode_with_stats(self, array: np.ndarray) -> tuple[bytes, np.ndarray | None]:
        """The stream and per-value records (``medmask.codecs.STATS_DTYPE``), or None when
        this array's records were not computed."""
        ...


@dataclass(frozen=True)
class CodecBase:
    """A codec with one zstd ``level`` (1..22, default 9): the config, the level check and
    both decode calls; a subclass sets ``codec_id`` and ``kind`` and writes :meth:`encode`
    and :meth:`_decode`."""

    codec_id: ClassVar[str]
    kind: ClassVar[int]
    level: int = 9

    def __post_init__(self) -> None:
        check_level(self.level, self.codec_id)

    def get_config(self) -> dict[str, Any]:
        """JSON-able configuration, including ``"id"``."""
        return {"id": self.codec_id, "level": self.level}

    def encode(self, array: np.ndarray) -> bytes:
        """Encode a C-contiguous 1..3-D array of a supported dtype."""
        raise NotImplementedError

    def decode(
        self, data: Data, *, shape: tuple[int, ...] | None = None, dtype: DTypeLike = None
    ) -> np.ndarray:
        """Decode a stream; ``shape``/``dtype`` are checked against its header first."""
        return self._decode(memoryview(data).cast("B"), shape, dtype, None)

    def decode_with_values(
        self, data: Data, *, shape: tuple[int, ...] | None = None, dtype: DTypeLike = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode, and give the array's distinct values when the stream tells them cheaply
        (else None: the caller scans the array)."""
        present: list[np.ndarray | None] = []
        out = self._decode(memoryview(data).cast("B"), shape, dtype, present)
        return out, present[0]

    def _decode(
        self,
        buf: memoryview,
        shape: tuple[int, ...] | None,
        dtype: DTypeLike,
        present: list[np.ndarray | None] | None,
    ) -> np.ndarray:
        """Decode ``buf`` (checked against ``shape``/``dtype`` when given); with ``present``,
        append the distinct values or None."""
        raise NotImplementedError
