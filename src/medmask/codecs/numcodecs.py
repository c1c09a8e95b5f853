"""numcodecs adapters for the medmask codecs (``medmask.binary`` and ``medmask.labels``).

Registered through the ``numcodecs.codecs`` entry points, so
``numcodecs.get_codec({"id": "medmask.labels"})`` works once medmask is installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numcodecs.abc import Codec as _NumcodecsCodec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from medmask.codecs._binary import BinaryCodec
from medmask.codecs._labels import LabelCodec
from medmask.errors import CodecError

__all__ = ["BinaryMaskCodec", "LabelMapCodec"]


class _Adapter(_NumcodecsCodec):  # type: ignore[misc]
    _impl: BinaryCodec | LabelCodec

    def __init__(self, level: int = 9) -> None:
        self._impl = self._make(level)
        self.level = self._impl.level

    @staticmethod
    def _make(level: int) -> BinaryCodec | LabelCodec:
        raise NotImplementedError

    def encode(self, buf: Any) -> bytes:
        """Encode an array (a chunk); its shape and dtype are stored in the stream."""
        if not isinstance(buf, np.ndarray):
            raise CodecError(
                f"Expected a numpy array for codec {self.codec_id!r}. Got {type(buf).__name__}."
            )
        return self._impl.encode(buf)

    def decode(self, buf: Any, out: Any = None) -> Any:
        """Decode a stream; copy into ``out`` (same number of bytes) when given."""
        data = ensure_contiguous_ndarray(buf).view(np.uint8).reshape(-1)
        arr = self._impl.decode(memoryview(data))
        if out is None:
            return arr
        try:
            return ndarray_copy(arr, out)
        except ValueError as exc:
            raise CodecError(
                f"Expected an out= buffer of {arr.nbytes} bytes for {arr.shape} {arr.dtype}. "
                f"Got {exc}."
            ) from exc

    def get_config(self) -> dict[str, Any]:
        """``{"id": ..., "level": ...}``."""
        return self._impl.get_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _Adapter:
        """Build from ``get_config()`` output (with or without ``"id"``)."""
        conf = dict(config)
        codec_id = conf.pop("id", cls.codec_id)
        if codec_id != cls.codec_id or set(conf) - {"level"}:
            raise CodecError(
                f"Expected a config {{'id': {cls.codec_id!r}, 'level': int}}. Got {config!r}."
            )
        return cls(**conf)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(level={self.level})"


class BinaryMaskCodec(_Adapter):
    """numcodecs codec ``medmask.binary`` (see :class:`medmask.codecs.BinaryCodec`)."""

    codec_id = BinaryCodec.codec_id

    @staticmethod
    def _make(level: int) -> BinaryCodec:
        return BinaryCodec(level=level)


class LabelMapCodec(_Adapter):
    """numcodecs codec ``medmask.labels`` (see :class:`medmask.codecs.LabelCodec`)."""

    codec_id = LabelCodec.codec_id

    @staticmethod
    def _make(level: int) -> LabelCodec:
        return LabelCodec(level=level)
