"""Serving a medmask 0.1 archive: read whole, each member re-encoded in memory when read."""

from __future__ import annotations

import io
from typing import Any

import numpy.typing as npt

from .._workers import chunk_executor
from ..config import max_bytes_limit
from ..format.descriptor import MaskDescriptor
from ..format.encoding import EncodedMask, encode_mask
from ..format.legacy import LegacyArchive, read_legacy_member, read_legacy_mska_directory
from ..format.mska import ArchiveDirectory
from ..io import ByteSource, FileObjectSource, read_all
from ._layout import full_file_pieces

__all__ = ["LegacyMembers", "open_legacy"]


class LegacyMembers:
    """The members of a medmask 0.1 archive, decoded when first read.

    A member is decoded and re-encoded in memory on demand; its descriptor and chunk index
    are kept, its encoded streams only until the next member is decoded, so memory stays
    at about one member however many the archive holds.
    """

    def __init__(
        self,
        data: bytes,
        directory: LegacyArchive,
        name: str,
        max_voxels: int | None,
        max_bytes: int | None,
    ) -> None:
        self.directory = directory
        self._data, self._name = data, name
        self._max_voxels, self._max_bytes = max_voxels, max_bytes
        self._known: dict[str, tuple[MaskDescriptor, npt.NDArray[Any]]] = {}
        self._last: tuple[str, EncodedMask] | None = None

    def encoded(self, member: str) -> EncodedMask:
        """Member ``member`` re-encoded (decoded now unless it was the last one decoded)."""
        last = self._last  # read once: threads (dask) may swap it meanwhile
        if last is not None and last[0] == member:
            return last[1]
        self._last = last = None  # release the previous member before decoding this one
        legacy = read_legacy_member(
            self._data,
            self.directory,
            member,
            name=self._name,
            max_voxels=self._max_voxels,
            max_bytes=self._max_bytes,
        )
        encoded = encode_mask(
            legacy.to_mask(self._name), include_space=False, executor=chunk_executor()
        )
        self._known[member] = (encoded.descriptor, encoded.index(0))
        self._last = (member, encoded)
        return encoded

    def descriptor(self, member: str) -> MaskDescriptor:
        """The member's descriptor (decodes the member the first time)."""
        if member not in self._known:
            self.encoded(member)
        return self._known[member][0]

    def index(self, member: str) -> npt.NDArray[Any]:
        """The member's chunk index as re-encoded (decodes the member the first time)."""
        if member not in self._known:
            self.encoded(member)
        return self._known[member][1]


def open_legacy(
    source: ByteSource, name: str, max_voxels: int | None, max_bytes: int | None
) -> tuple[LegacyMembers, ByteSource, int]:
    """Read a medmask 0.1 archive whole from ``source`` (then closed).

    Returns its members (decoded when first read), an empty current archive in memory with
    the 0.1 archive's space (the directory is read from it) and the 0.1 file's size in bytes.
    """
    data = read_all(source, max_bytes_limit(max_bytes), name=name)
    legacy = read_legacy_mska_directory(data, name=name, max_voxels=max_voxels, max_bytes=max_bytes)
    members = LegacyMembers(data, legacy, name, max_voxels, max_bytes)
    space = legacy.shared_space(name)
    pieces = full_file_pieces([], ArchiveDirectory(space=space), generation=1)[0]
    source.close()
    return members, FileObjectSource(io.BytesIO(b"".join(pieces)), name), len(data)
