"""A read-only zarr v3 view of ``.msk`` and ``.mska`` files, and native zarr arrays of masks.

:class:`ArchiveStore` (:mod:`.store`) synthesizes zarr metadata from a file's directory and
maps every chunk key to the byte range of that chunk in the file (checked against its CRC on
each read); it copies nothing. :func:`open_zarr` opens it as a ``zarr.Group``. The keys,
documents and attributes are computed by :class:`Layout` (:mod:`.layout`, no zarr, no I/O)
and specified in ``docs/zarr.md``. :func:`to_zarr` and :func:`from_zarr` (:mod:`.convert`)
convert between :class:`SegmentationMask` and plain zarr arrays. Needs the ``zarr`` extra.
"""

from .convert import from_zarr, to_zarr
from .layout import (
    FORMAT_VERSION,
    LAYOUT_VERSION,
    STRUCTURES,
    Layout,
    node_name,
    space_attributes,
    space_from_attributes,
)
from .store import ArchiveStore, open_zarr

__all__ = [
    "FORMAT_VERSION",
    "LAYOUT_VERSION",
    "STRUCTURES",
    "ArchiveStore",
    "Layout",
    "from_zarr",
    "node_name",
    "open_zarr",
    "space_attributes",
    "space_from_attributes",
    "to_zarr",
]
