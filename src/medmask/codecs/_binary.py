"""``medmask.binary``: binary masks, bit-packed along the last axis, then run-length coded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np

from medmask.codecs._base import CodecBase
from medmask.codecs._labels import decode_body, encode_stream, read_header
from medmask.codecs._stream import memory_refusal, normalize_input, restore_dtype
from medmask.errors import CodecError

__all__ = ["BinaryCodec"]

KIND: Final = 1


@dataclass(frozen=True)
class BinaryCodec(CodecBase):
    """Lossless codec for binary masks (values 0/1 of dtype bool, uint8, uint16 or uint32).

    Each row along the last axis is bit-packed (MSB first, padded to whole bytes); the packed
    uint8 array is then coded exactly like :class:`~medmask.codecs.LabelCodec` does (runs of
    packed bytes, optionally XORed with the previous slice, or plain), with zstd at ``level``
    (1..22, default 9). ``decode_with_values`` gives the distinct non-zero values (1, or none).
    """

    codec_id: ClassVar[str] = "medmask.binary"
    kind: ClassVar[int] = KIND

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

    def _decode(
        self,
        buf: memoryview,
        shape: tuple[int, ...] | None,
        dtype: np.dtype[Any] | type | str | None,
        present: list[np.ndarray | None] | None,
    ) -> np.ndarray:
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
            if present is not None:
                present.append(np.array([1] if bits.any() else [], dtype=np.uint64))
            if h.dtype == np.bool_:
                return bits.view(np.bool_)
            if h.dtype.itemsize == 1:
                return restore_dtype(bits, h.dtype)
            return bits.astype(h.dtype)  # the widest allocation of all
