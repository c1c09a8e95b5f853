"""Zarr v3 codecs: one array -> bytes serializer per codec of :data:`medmask.codecs.CODECS`,
made by :func:`_serializer` (``medmask.edges``: :class:`EdgesCodec`, ``medmask.labels``:
:class:`LabelsCodec`, ``medmask.binary``: :class:`BinaryCodec`; :func:`adapter_for` finds
one by codec id), and ``medmask.select_label`` (array -> array: one label of a label map as a
bool array).

Registered under the ``zarr.codecs`` entry point group, so a fresh process can open arrays
that use them without any registration call::

    zarr.create_array(store, shape=..., dtype="uint8", serializer=LabelsCodec(), ...)

A chunk stream whose shape is smaller than the chunk zarr asks for (``.msk`` files store the
edge chunks of an array trimmed) decodes padded with the fill value; zarr trims the padding.
A stream of another dtype than the array's (byte order aside), of more dimensions, or larger
than the chunk along an axis is refused with :class:`CodecError` before it is decoded: values
are never cast. Needs the ``zarr`` extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.common import parse_named_configuration
from zarr.core.dtype import get_data_type_from_native_dtype

from medmask.codecs import CODECS, CodecBase, peek_stream
from medmask.codecs._stream import check_level, coded_shape, is_supported_dtype, value_max
from medmask.errors import CodecError, CodecTypeError

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

__all__ = ["BinaryCodec", "EdgesCodec", "LabelsCodec", "SelectLabelCodec", "adapter_for"]


def _check_dtype(dtype: np.dtype[Any], name: str) -> None:
    if not is_supported_dtype(dtype):
        raise CodecTypeError(
            f"Expected a bool or integer data type (1, 2, 4 or 8 bytes) for codec {name!r}. "
            f"Got {dtype}."
        )


def _fits(stored: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether a stream of shape ``stored`` can be the chunk ``shape``: the same, its coded
    shape, or an edge chunk stored trimmed (within it, as many axes)."""
    return stored in (shape, coded_shape(shape)) or (
        len(stored) == len(shape) and all(a <= s for a, s in zip(stored, shape, strict=True))
    )


def check_stream(data: memoryview, spec: ArraySpec, name: str) -> tuple[tuple[int, ...], Any]:
    """The stream's shape and dtype, after checking its header against zarr's chunk spec
    (never cast, never larger than the chunk); :class:`CodecError` otherwise."""
    prefix = peek_stream(data)
    want = np.dtype(spec.dtype.to_native_dtype())
    if not np.can_cast(prefix.dtype, want, casting="equiv"):
        raise CodecError(
            f"Expected a {name} chunk of dtype {want} (the array's). Got dtype {prefix.dtype} "
            "in the stream header (values are never cast)."
        )
    if not _fits(prefix.shape, tuple(spec.shape)):
        raise CodecError(
            f"Expected a {name} chunk of shape {tuple(spec.shape)} (or an edge chunk within "
            f"it). Got shape {prefix.shape} in the stream header."
        )
    return prefix.shape, prefix.dtype


def fit_chunk(array: np.ndarray, shape: tuple[int, ...], fill_value: Any, name: str) -> np.ndarray:
    """A decoded chunk in the shape zarr expects: reshaped from the coded shape, or padded with
    ``fill_value`` when it is an edge chunk stored trimmed."""
    if array.shape == shape:
        return array
    if array.shape == coded_shape(shape):
        return array.reshape(shape)
    if not _fits(array.shape, shape):
        raise CodecError(
            f"Expected a {name} chunk of shape {shape} (or an edge chunk within it). "
            f"Got {array.shape}."
        )
    out = np.full(shape, fill_value, dtype=array.dtype)
    out[tuple(slice(0, a) for a in array.shape)] = array
    return out


@dataclass(frozen=True)
class _ArrayBytes(ArrayBytesCodec):
    """Shared body of the medmask array -> bytes codecs: ``core`` at ``level``."""

    is_fixed_size = False
    core: ClassVar[type[CodecBase]]
    codec_name: ClassVar[str]
    level: int = 9

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", check_level(self.level, self.codec_name))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _, configuration = parse_named_configuration(
            data, cls.codec_name, require_configuration=False
        )
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.codec_name, "configuration": {"level": self.level}}

    def _core(self) -> CodecBase:
        return self.core(level=self.level)

    def validate(
        self,
        *,
        shape: tuple[int, ...],
        dtype: ZDType[TBaseDType, TBaseScalar],
        chunk_grid: ChunkGrid,
    ) -> None:
        _check_dtype(np.dtype(dtype.to_native_dtype()), self.codec_name)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        data = chunk_bytes.as_numpy_array().view(np.uint8).reshape(-1)
        shape, dtype = check_stream(data.data, chunk_spec, self.codec_name)
        array = self._core().decode(data.data, shape=shape, dtype=dtype)
        want = np.dtype(chunk_spec.dtype.to_native_dtype())
        if array.dtype != want:
            array = array.astype(want)
        fill = chunk_spec.fill_value
        array = fit_chunk(array, chunk_spec.shape, fill, self.codec_name)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(array)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        array = np.ascontiguousarray(chunk_array.as_numpy_array())
        array = array.reshape(coded_shape(array.shape))
        return chunk_spec.prototype.buffer.from_bytes(self._core().encode(array))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError(f"{self.codec_name} streams have a variable size")


def _serializer(core: type[CodecBase], name: str) -> type[_ArrayBytes]:
    """The zarr v3 serializer class ``name`` of the codec ``core`` (pickled by its name in this
    module)."""
    see = f":class:`medmask.codecs.{core.__name__}`"
    doc = f"``{core.codec_id}`` as a zarr v3 serializer (see {see})."
    attrs = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": doc,
        "core": core,
        "codec_name": core.codec_id,
    }
    return dataclass(frozen=True)(type(name, (_ArrayBytes,), attrs))


#: The names the serializers were published under (zarr entry points keep them); a codec not
#: listed is named after its core class.
_NAMES: Mapping[str, str] = {"medmask.labels": "LabelsCodec"}

#: codec_id -> zarr v3 serializer class, one per codec of :data:`medmask.codecs.CODECS`.
_SERIALIZERS: Mapping[str, type[_ArrayBytes]] = {
    codec_id: _serializer(core, _NAMES.get(codec_id, core.__name__))
    for codec_id, core in CODECS.items()
}

BinaryCodec = _SERIALIZERS["medmask.binary"]
LabelsCodec = _SERIALIZERS["medmask.labels"]
EdgesCodec = _SERIALIZERS["medmask.edges"]


def adapter_for(codec_id: str) -> type[_ArrayBytes]:
    """The zarr v3 serializer class of the medmask codec ``codec_id`` (e.g. for
    ``"medmask.labels"``, :class:`LabelsCodec`); :class:`CodecError` if there is none."""
    cls = _SERIALIZERS.get(codec_id)
    if cls is None:
        raise CodecError(f"Expected a codec id in {sorted(_SERIALIZERS)}. Got {codec_id!r}.")
    return cls


@dataclass(frozen=True)
class SelectLabelCodec(ArrayArrayCodec):
    """``medmask.select_label``: a bool array that is one label of a stored label map.

    Decoding turns the stored label map (``source`` dtype) into ``stored == value``; encoding
    writes ``value`` where the bool array is true. ``ArchiveStore`` uses it to show each
    structure of an archive as its own bool array over the member's chunk bytes.
    """

    is_fixed_size = True
    codec_name: ClassVar[str] = "medmask.select_label"
    value: int
    source: str

    def __init__(self, *, value: int, source: str) -> None:
        dtype = np.dtype(source)
        _check_dtype(dtype, self.codec_name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CodecError(f"Expected a non-negative int label value. Got {value!r}.")
        if value > value_max(dtype):  # bool holds 0/1, signed types their positive half
            raise CodecError(
                f"Expected a label value that fits {dtype} (0..{value_max(dtype)}). Got {value}."
            )
        object.__setattr__(self, "value", int(value))
        object.__setattr__(self, "source", dtype.name)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _, configuration = parse_named_configuration(data, cls.codec_name)
        return cls(**configuration)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.codec_name,
            "configuration": {"value": self.value, "source": self.source},
        }

    def validate(
        self,
        *,
        shape: tuple[int, ...],
        dtype: ZDType[TBaseDType, TBaseScalar],
        chunk_grid: ChunkGrid,
    ) -> None:
        if np.dtype(dtype.to_native_dtype()) != np.bool_:
            raise CodecTypeError(f"Expected a bool array for codec {self.codec_name!r}.")

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        return ArraySpec(
            shape=chunk_spec.shape,
            dtype=get_data_type_from_native_dtype(np.dtype(self.source)),
            fill_value=0,
            config=chunk_spec.config,
            prototype=chunk_spec.prototype,
        )

    def _decode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        labels = chunk_array.as_numpy_array()
        return chunk_spec.prototype.nd_buffer.from_numpy_array(labels == self.value)

    async def _decode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_array, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer | None:
        selected = chunk_array.as_numpy_array().astype(bool)
        labels = np.where(selected, self.value, 0).astype(self.source)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(labels)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        return input_byte_length * np.dtype(self.source).itemsize
