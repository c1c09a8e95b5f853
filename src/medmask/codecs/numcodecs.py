"""numcodecs adapters for the medmask codecs: one class per codec of
:data:`medmask.codecs.CODECS`, made by :func:`_adapter` (``medmask.edges``: :class:`EdgeMapCodec`,
``medmask.labels``: :class:`LabelMapCodec`, ``medmask.binary``: :class:`BinaryMaskCodec`).

Registered through the ``numcodecs.codecs`` entry points, so
``numcodecs.get_codec({"id": "medmask.edges"})`` works once medmask is installed.

numcodecs codecs are byte-exact: ``decode(encode(buf))`` gives back the bytes of ``buf`` in its
memory order (as a flat array of ``buf``'s dtype), and ``decode(..., out=)`` writes those bytes
into ``out``'s memory. That is what
zarr v2 relies on for ``order="F"`` arrays and big-endian dtypes. An F-ordered array is encoded
as its C-ordered transpose (the same memory), a bytes-like object as a 1-D uint8 array, and
the stream records the dtype (byte order included), so nothing is reinterpreted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numcodecs.abc import Codec as _NumcodecsCodec
from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray_like, ndarray_copy

from medmask.codecs import CODECS, CodecBase
from medmask.codecs._stream import coded_shape
from medmask.errors import CodecError, CodecTypeError

__all__ = ["BinaryMaskCodec", "EdgeMapCodec", "LabelMapCodec", "adapter_for"]


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
    """A medmask codec (``core``) as a numcodecs codec."""

    codec_id: ClassVar[str]
    core: ClassVar[type[CodecBase]]
    _impl: CodecBase

    def __init__(self, level: int = 9) -> None:
        self._impl = self.core(level=level)
        self.level = self._impl.level

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


def _adapter(core: type[CodecBase], name: str) -> type[_Adapter]:
    """The numcodecs class ``name`` of the codec ``core`` (pickled by its name in this module)."""
    doc = f"numcodecs codec ``{core.codec_id}`` (see :class:`medmask.codecs.{core.__name__}`)."
    attrs = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": doc,
        "codec_id": core.codec_id,
        "core": core,
    }
    return type(name, (_Adapter,), attrs)


#: The names the adapters were published under (numcodecs entry points and configs keep
#: them); a codec not listed is named after its core class.
_NAMES: Mapping[str, str] = {
    "medmask.binary": "BinaryMaskCodec",
    "medmask.labels": "LabelMapCodec",
    "medmask.edges": "EdgeMapCodec",
}

#: codec_id -> numcodecs class, one per codec of :data:`medmask.codecs.CODECS`.
_ADAPTERS: Mapping[str, type[_Adapter]] = {
    codec_id: _adapter(core, _NAMES.get(codec_id, core.__name__))
    for codec_id, core in CODECS.items()
}

BinaryMaskCodec = _ADAPTERS["medmask.binary"]
LabelMapCodec = _ADAPTERS["medmask.labels"]
EdgeMapCodec = _ADAPTERS["medmask.edges"]


def adapter_for(codec_id: str) -> type[_Adapter]:
    """The numcodecs class of the medmask codec ``codec_id``; :class:`CodecError` if none."""
    cls = _ADAPTERS.get(codec_id)
    if cls is None:
        raise CodecError(f"Expected a codec id in {sorted(_ADAPTERS)}. Got {codec_id!r}.")
    return cls
