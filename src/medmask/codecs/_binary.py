"""``medmask.binary``: binary masks, bit-packed along the last axis, then run-length coded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np

from medmask.codecs._labels import decode_body, encode_stream, read_header
from medmask.codecs._stream import check_level, memory_refusal, normalize_input, restore_dtype
from medmask.errors import CodecError

__all__ = ["BinaryCodec"]

KIND: Final = 1


@dataclass(frozen=True)
class BinaryCodec:
    """Lossless codec for binary masks (values 0/1 of dtype bool, uint8, uint16 or uint32).

    Each row along the last axis is bit-packed (MSB first, padded to whole bytes); the packed
    uint8 array is then coded exactly like :class:`~medmask.codecs.LabelCodec` does (runs of
    packed bytes, optionally XORed with the previous slice, or plain), with zstd at ``level``
    (1..22, default 9).
    """

    codec_id: ClassVar[str] = "medmask.binary"
    level: int = 9

    def __post_init__(self) -> None:
        check_level(self.level, self.codec_id)

    def get_config(self) -> dict[str, Any]:
        """JSON-able configuration, including ``"id"``."""
        return {"id": self.codec_id, "level": self.level}

    def encode(self, array: np.ndarray) -> bytes:
        """Encode a binary array; raise :class:`CodecError` if it has values other than 0/1."""
        a, dtype = normalize_input(array, self.codec_id)
        if a.dtype != np.bool_ and a.size:
            vmax = int(a.max())
            if vmax > 1:
                raise CodecError(
                    f"Expected only values 0 and 1 for codec {self.codec_id!r}. "
                    f"Got a maximum of {vmax}; use 'medmask.labels'."
                )
        bits = a if a.dtype.itemsize == 1 else a.astype(np.bool_)
        packed = np.packbits(bits, axis=-1)
        return encode_stream(KIND, dtype, a.shape, packed, self.level)

    def decode(
        self,
        data: bytes | bytearray | memoryview,
        *,
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype[Any] | type | str | None = None,
    ) -> np.ndarray:
        """Decode a stream; ``shape``/``dtype`` are checked against its header first."""
        return self._decode(data, shape, dtype)[0]

    def decode_with_values(
        self,
        data: bytes | bytearray | memoryview,
        *,
        shape: tuple[int, ...] | None = None,
        dtype: np.dtype[Any] | type | str | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Decode, and give the array's distinct non-zero values (1, or none)."""
        out, bits = self._decode(data, shape, dtype)
        return out, np.array([1] if bits.any() else [], dtype=np.uint64)

    def _decode(
        self,
        data: bytes | bytearray | memoryview,
        shape: tuple[int, ...] | None,
        dtype: np.dtype[Any] | type | str | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The decoded array and its unpacked 0/1 bytes (the same array for 1-byte dtypes)."""
        buf = memoryview(data).cast("B")
        h = read_header(buf, KIND, self.codec_id, shape, dtype)
        nx = h.shape[-1]
        packed_shape = (*h.shape[:-1], (nx + 7) // 8)
        u8 = np.dtype(np.uint8)
        with memory_refusal(h.shape, h.dtype, self.codec_id):
            packed = decode_body(buf, h.end, h.mode, h.fields, h.section_sizes, packed_shape, u8)
            if nx % 8 == 0:
                bits = np.unpackbits(packed.reshape(-1)).reshape(h.shape)
            else:
                bits = np.unpackbits(packed, axis=-1, count=nx)
            if h.dtype == np.bool_:
                return bits.view(np.bool_), bits
            if h.dtype.itemsize == 1:
                return restore_dtype(bits, h.dtype), bits
            return bits.astype(h.dtype), bits  # the widest allocation of all
