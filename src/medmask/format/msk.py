"""The ``.msk`` layout: ``[header][metadata][chunk index][chunk streams]`` (bytes only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from .container import (
    HEADER_SIZE,
    INDEX_ENTRY_SIZE,
    MAGIC_MSK,
    Header,
    crc32,
    decode_metadata,
    encode_metadata,
    pack_index,
    parse_index,
)
from .descriptor import MaskDescriptor
from .encoding import EncodedMask

__all__ = ["MskDirectory", "build_msk", "parse_msk_directory"]


def build_msk(encoded: EncodedMask) -> list[bytes]:
    """Return the pieces of a ``.msk`` file, to be written in order."""
    metadata = encoded.descriptor.to_json()
    metadata = {"format": "medmask.msk", **metadata}
    meta_bytes, flags = encode_metadata(metadata)
    index_offset = HEADER_SIZE + len(meta_bytes)
    payload_offset = index_offset + len(encoded.streams) * INDEX_ENTRY_SIZE
    index_bytes = pack_index(encoded.index(payload_offset))
    header = Header(
        magic=MAGIC_MSK,
        metadata_offset=HEADER_SIZE,
        metadata_length=len(meta_bytes),
        metadata_crc=crc32(meta_bytes),
        index_offset=index_offset,
        index_count=len(encoded.streams),
        index_crc=crc32(index_bytes),
        required_flags=flags,
    )
    return [header.pack(), meta_bytes, index_bytes, *(s for s in encoded.streams if s)]


@dataclass(frozen=True)
class MskDirectory:
    """A `.msk`'s directory: what a reader knows after the header, metadata and index
    (the `.mska` counterpart is :class:`~medmask.format.mska.ArchiveDirectory`)."""

    header: Header
    descriptor: MaskDescriptor
    index: npt.NDArray[Any]
    metadata: dict[str, Any]

    @property
    def payload_start(self) -> int:
        """First byte after header, metadata and index."""
        h = self.header
        return max(h.metadata_offset + h.metadata_length, h.index_offset + h.index_length)


def parse_msk_directory(
    header: Header,
    metadata_bytes: bytes | memoryview,
    index_bytes: bytes | memoryview,
    *,
    name: str,
) -> MskDirectory:
    """Validate metadata and index of a ``.msk`` whose header is already parsed."""
    metadata = decode_metadata(metadata_bytes, header, name=name)
    descriptor = MaskDescriptor.from_json(metadata, name=name)
    index = parse_index(index_bytes, header, name=name)
    return MskDirectory(header, descriptor, index, metadata)
