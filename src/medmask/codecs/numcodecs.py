"""numcodecs adapters for the medmask codecs (``medmask.binary`` and ``medmask.labels``).

Registered through the ``numcodecs.codecs`` entry points, so
``numcodecs.get_codec({"id": "medmask.labels"})`` works once medmask is installed.

numcodecs codecs are byte-exact: ``decode(encode(buf))`` gives back the bytes of ``buf`` in its
memory order (as a flat array of ``buf``'s dtype), and ``decode(..., out=)`` writes those bytes
into ``out``'s memory. That is what
zarr v2 relies on for ``order="F"`` arrays and big-endian dtypes. An F-ordered array is encoded
as its C-ordered transpose (the same memory), a bytes-like object as a 1-D uint8 array, and
the stream records the dtype (byte order included), so nothing is reinterpreted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numcodecs.abc import Codec as _NumcodecsCodec
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray_like, ndarray_copy

from medmask.codecs._binary import BinaryCodec
from medmask.codecs._edges import EdgesCodec
from medmask.codecs._labels import LabelCodec
from medmask.codecs._stream import coded_shape
from medmask.errors import CodecError, CodecTypeError

__all__ = ["BinaryMaskCodec", "LabelMapCodec"]


def _memory_order_array(buf: Any, codec_id: str) -> np.ndarray:
    """``buf`` as a C-contiguous array of at most 3 dimensions with ``buf``'s memory bytes."""
    if isinstance(buf, np.ndarray):
        arr = buf
    else:
        try:  # bytes, bytearray, array.array, memoryview: raw bytes
            arr = np.frombuffer(memoryview(buf).cast("B"), dtype=np.uint8)
        except TypeError:
            arr = ensure_ndarray_like(buf)
    if arr.dtype == object:
        raise CodecTypeError(
            f"Expected a numeric array for codec {codec_id!r}. Got an object array."
        )
    if arr.flags.f_contiguous and not arr.flags.c_contiguous:
        arr = arr.T  # the same memory, read in C order
    arr = np.ascontiguousarray(arr)
    return arr.reshape(coded_shape(arr.shape))


def _check_typed_out(target: np.ndarray, arr: np.ndarray, codec_id: str) -> None:
    """Refuse to reinterpret a chunk: a stream of a multi-dimensional array (a chunk, as zarr
    v2 writes it) decodes only into an ``out=`` of its dtype (either byte order), flat or of
    a shape coded as the stream's (its shape, reversed for F order; a chunk of more than
    3 axes whose merged shape it is). Streams of flat arrays or bytes, and flat
    uint8 ``out=`` buffers, follow numcodecs' byte-buffer convention: any buffer of the same
    size."""
    if arr.ndim <= 1 or (target.ndim <= 1 and target.dtype == np.uint8):
        return
    same_dtype = target.dtype.newbyteorder("=") == arr.dtype.newbyteorder("=")
    coded = (coded_shape(target.shape), coded_shape(target.shape[::-1]))
    same_shape = target.ndim <= 1 or arr.shape in coded
    if not (same_dtype and same_shape):
        raise CodecError(
            f"Expected an out= chunk of the stream's {arr.shape} {arr.dtype} for codec "
            f"{codec_id!r}. Got {target.shape} {target.dtype}; refusing to reinterpret."
        )


class _Adapter(_NumcodecsCodec):  # type: ignore[misc]
    _impl: BinaryCodec | LabelCodec | EdgesCodec

    def __init__(self, level: int = 9) -> None:
        self._impl = self._make(level)
        self.level = self._impl.level

    @staticmethod
    def _make(level: int) -> BinaryCodec | LabelCodec | EdgesCodec:
        raise NotImplementedError

    def encode(self, buf: Any) -> bytes:
        """Encode an array (a chunk) or bytes-like object; shape and dtype go into the stream."""
        return self._impl.encode(_memory_order_array(buf, self.codec_id))

    def decode(self, buf: Any, out: Any = None) -> Any:
        """Decode a stream; write its bytes into ``out`` (same number of bytes) when given."""
        data = ensure_contiguous_ndarray(buf).view(np.uint8).reshape(-1)
        if out is None:  # a flat array in memory order, like numcodecs' other codecs
            return self._impl.decode(memoryview(data)).reshape(-1)
        target = ensure_ndarray_like(out)
        if target.dtype == object:
            raise CodecTypeError(
                f"Expected a numeric out= buffer for codec {self.codec_id!r}. Got an object array."
            )
        if not (target.flags.c_contiguous or target.flags.f_contiguous):
            raise CodecError(
                f"Expected a contiguous out= buffer for codec {self.codec_id!r}. Got strides "
                f"{target.strides}."
            )
        arr = self._impl.decode(memoryview(data))
        if target.nbytes != arr.nbytes:
            raise CodecError(
                f"Expected an out= buffer of {arr.nbytes} bytes for {arr.shape} {arr.dtype}. "
                f"Got {target.nbytes} bytes."
            )
        _check_typed_out(target, arr, self.codec_id)
        return ndarray_copy(arr, target)

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


class EdgeMapCodec(_Adapter):
    """numcodecs codec ``medmask.edges`` (see :class:`medmask.codecs.EdgesCodec`)."""

    codec_id = EdgesCodec.codec_id

    @staticmethod
    def _make(level: int) -> EdgesCodec:
        return EdgesCodec(level=level)
