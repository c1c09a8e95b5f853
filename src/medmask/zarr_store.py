"""A read-only zarr v3 view of ``.msk`` and ``.mska`` files, and native zarr arrays of masks.

:class:`ArchiveStore` synthesizes zarr metadata from a file's directory and maps every chunk
key to the byte range of that chunk in the file (checked against its CRC on each read); it
copies nothing. :func:`open_zarr` opens it as a ``zarr.Group``; :func:`to_zarr` and
:func:`from_zarr` convert between :class:`SegmentationMask` and plain zarr arrays. The key
layout and attributes are specified in ``docs/zarr.md``. Needs the ``zarr`` extra.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from spacetransformer import Space
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .codecs import choose_codec
from .codecs.zarr3 import BinaryCodec, EdgesCodec, LabelsCodec
from .dtypes import DTYPE_NAMES, bit_depth_of_name
from .engine import check_chunk, check_label_count, check_member, count_in_bbox, member_name
from .errors import (
    ConcurrentModificationError,
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    MedmaskError,
    ReadOnlyError,
)
from .format.descriptor import LabelEntry, MaskDescriptor, Roi, parse_chunks
from .format.mska import Member
from .io import AsyncByteSource, Target, local_path, open_source_async, split_by_head
from .mapping import LabelMapping, mapping_items
from .mask import SegmentationMask
from .reader import Directory, read_directory_async
from .values import label_stats

if TYPE_CHECKING:
    from zarr.core.buffer import Buffer, BufferPrototype

__all__ = [
    "FORMAT_VERSION",
    "ArchiveStore",
    "Layout",
    "from_zarr",
    "node_name",
    "open_zarr",
    "space_attributes",
    "space_from_attributes",
    "to_zarr",
]

#: Version of the synthesized layout (docs/zarr.md).
FORMAT_VERSION = "1.0"
STRUCTURES = "structures"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_CHUNK_INDEX = re.compile(r"0|[1-9][0-9]*")  # as zarr writes it: ASCII, no leading zero


def node_name(name: str, reserved: Iterable[str] = ()) -> str:
    """A legal zarr node name for ``name``: characters outside ``[A-Za-z0-9._-]`` become
    ``%XX`` (UTF-8 bytes); so does the first character of ``.``, ``..``, a name starting with
    ``__`` and a name in ``reserved``."""
    out = "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in name)
    if out in (".", "..") or out.startswith("__") or out in set(reserved) or not out:
        first = out[:1]
        out = f"%{ord(first):02X}" + out[1:] if first else "%00"
    return out


def space_attributes(space: Space) -> dict[str, Any]:
    """The ``space`` attribute: LPS geometry of a (z, y, x) array (docs/zarr.md)."""
    directions = [
        [float(v) for v in space.x_orientation],
        [float(v) for v in space.y_orientation],
        [float(v) for v in space.z_orientation],
    ]
    spacing = [float(v) for v in space.spacing]
    origin = [float(v) for v in space.origin]
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(directions).T * spacing
    affine[:3, 3] = origin
    return {
        "coordinate_system": "LPS",
        "axes": "zyx",
        "shape": [int(s) for s in space.shape],
        "origin": origin,
        "spacing": spacing,
        "directions": directions,
        "affine": affine.tolist(),
    }


def space_from_attributes(obj: object, shape: tuple[int, ...]) -> Space:
    """The :class:`Space` of a ``space`` attribute written by :func:`space_attributes`."""
    if not isinstance(obj, dict) or obj.get("coordinate_system", "LPS") != "LPS":
        raise FormatError(f"Expected an LPS 'space' attribute. Got {obj!r:.200}.")
    if obj.get("axes", "zyx") != "zyx":
        raise FormatError(f"Expected space axes 'zyx'. Got {obj.get('axes')!r}.")
    try:
        directions = [tuple(float(v) for v in d) for d in obj["directions"]]
        return Space(
            shape=shape,
            origin=tuple(float(v) for v in obj["origin"]),
            spacing=tuple(float(v) for v in obj["spacing"]),
            x_orientation=directions[0],
            y_orientation=directions[1],
            z_orientation=directions[2],
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FormatError(f"Invalid 'space' attribute {obj!r:.200}: {exc}") from None


# --- the synthesized layout ----------------------------------------------------------------------


@dataclass(frozen=True)
class _ChunkRef:
    member: Member
    chunk_id: int
    start: int
    end: int
    structure: str | None = None  # path of the structure array the key belongs to


def _codec_json(config: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in config.items() if k != "id"}
    return {"name": config["id"], "configuration": rest}


def _array_json(
    descriptor: MaskDescriptor,
    codecs: list[dict[str, Any]],
    attributes: dict[str, Any],
    dtype: str,
) -> dict[str, Any]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(descriptor.shape),
        "data_type": dtype,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": list(descriptor.chunks)},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": False if dtype == "bool" else 0,
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": ["z", "y", "x"],
        "storage_transformers": [],
    }


def _stats(count: int, bbox: Iterable[Iterable[int]] | None) -> dict[str, Any]:
    return {"count": count, "bbox": None if bbox is None else [list(b) for b in bbox]}


def _label_attributes(descriptor: MaskDescriptor) -> dict[str, Any]:
    return {
        "labels": {e.name: e.value for e in descriptor.labels},
        "label_stats": {e.name: _stats(e.count, e.bbox) for e in descriptor.labels},
    }


@dataclass(frozen=True)
class _ArrayNode:
    """An array of the layout: a member, or one structure of it (``label``: chunks within
    ``bbox``, its stored bbox)."""

    member: Member
    bbox: tuple[tuple[int, int], ...] | None = None
    label: LabelEntry | None = None


class Layout:
    """The store's keys, derived from a directory: metadata documents (JSON on first request)
    and chunk keys resolved to byte ranges by arithmetic, so opening costs no per-chunk work.
    """

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.documents: dict[str, dict[str, Any]] = {}  # node path ("" = root) -> metadata
        self.arrays: dict[str, _ArrayNode] = {}
        self._encoded: dict[str, bytes] = {}
        self._keys: list[str] | None = None
        self._build()

    def _build(self) -> None:
        directory = self.directory
        space_attr = space_attributes(directory.space) if directory.space is not None else None
        counts: dict[str, int] = {}
        for member in directory.members:
            for label in member.descriptor.labels:
                counts[label.name] = counts.get(label.name, 0) + 1
        nodes: dict[str, str] = {}
        structures: dict[str, dict[str, Any]] = {}
        structure_nodes: dict[str, str] = {}
        for member in directory.members:
            original = member.name or "mask"
            node = node_name(original, reserved=(STRUCTURES, *nodes.values()))
            nodes[original] = node
            d = member.descriptor
            dtype = DTYPE_NAMES[d.bit_depth]
            attrs = {
                **_label_attributes(d),
                "space": space_attr,
                "medmask": {"member": member.name, "layer": member.layer, "codec": dict(d.codec)},
            }
            self.documents[node] = _array_json(d, [_codec_json(d.codec)], attrs, dtype)
            self.arrays[node] = _ArrayNode(member)
            for label in d.labels:
                if label.value == 0 or counts[label.name] > 1:
                    continue  # background, or a name that is ambiguous across members
                snode = node_name(label.name, reserved=structure_nodes.values())
                structure_nodes[label.name] = snode
                structures[label.name] = {"node": snode, "member": node, "value": label.value}
                select = {
                    "name": "medmask.select_label",
                    "configuration": {"value": label.value, "source": dtype},
                }
                path = f"{STRUCTURES}/{snode}"
                self.documents[path] = _array_json(
                    d,
                    [select, _codec_json(d.codec)],
                    {
                        "labels": {label.name: 1},
                        "label_stats": {label.name: _stats(label.count, label.bbox)},
                        "space": space_attr,
                        "medmask": {
                            "structure": label.name,
                            "member": member.name,
                            "value": label.value,
                        },
                    },
                    "bool",
                )
                # an empty structure has no chunk keys at all (all false)
                self.arrays[path] = _ArrayNode(member, label.bbox or (), label)
        self.documents[STRUCTURES] = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {
                "structures": structures,
                "names": {v: k for k, v in structure_nodes.items()},
            },
        }
        self.documents[""] = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {
                "medmask": {
                    "layout_version": FORMAT_VERSION,
                    "container": directory.kind,
                    "format_version": f"{directory.header.major}.{directory.header.minor}",
                    "generation": directory.generation,
                    "members": {node: original for original, node in nodes.items()},
                    "created_by": directory.archive.created_by,
                },
                "space": space_attr,
            },
            "consolidated_metadata": {
                "kind": "inline",
                "must_understand": False,
                "metadata": {k: v for k, v in self.documents.items() if k},
            },
        }

    def document(self, key: str) -> bytes | None:
        """The metadata document at ``key`` (``zarr.json`` or ``<path>/zarr.json``), or None."""
        if key == "zarr.json":
            path = ""
        elif key.endswith("/zarr.json") and key != "/zarr.json":
            path = key.removesuffix("/zarr.json")  # "a//zarr.json" is no key: "a/" no node
        else:
            return None
        doc = self.documents.get(path)
        if doc is None:
            return None
        data = self._encoded.get(path)
        if data is None:
            data = self._encoded[path] = _json(doc)
        return data

    def chunk(self, key: str) -> _ChunkRef | None:
        """The stored chunk at chunk key ``key``, or None (not a chunk key, or all zero)."""
        path, sep, coords = key.rpartition("/c/")
        node = self.arrays.get(path) if sep else None
        if node is None:
            return None
        parts = coords.split("/")
        d = node.member.descriptor
        if len(parts) != 3 or not all(_CHUNK_INDEX.fullmatch(p) for p in parts):
            return None
        cz, cy, cx = (int(p) for p in parts)
        gz, gy, gx = d.grid
        if not (cz < gz and cy < gy and cx < gx):
            return None
        if node.bbox is not None:  # a structure: only chunks that meet its bounding box
            if not node.bbox:
                return None
            for c, size, (lo, hi) in zip((cz, cy, cx), d.chunks, node.bbox, strict=True):
                if c * size > hi or (c + 1) * size <= lo:
                    return None
        chunk_id = (cz * gy + cy) * gx + cx
        span = self.directory.chunk_range(node.member, chunk_id)
        if span is None:
            return None
        return _ChunkRef(node.member, chunk_id, *span, path if node.label is not None else None)

    def keys(self) -> list[str]:
        """Every key, sorted (computed on the first listing)."""
        if self._keys is None:
            keys = [f"{p}/zarr.json" if p else "zarr.json" for p in self.documents]
            for path, node in self.arrays.items():
                gz, gy, gx = node.member.descriptor.grid
                for cz in range(gz):
                    for cy in range(gy):
                        for cx in range(gx):
                            key = f"{path}/c/{cz}/{cy}/{cx}"
                            if self.chunk(key) is not None:
                                keys.append(key)
            self._keys = sorted(keys)
        return self._keys


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _slice_bytes(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    raise TypeError(f"Unexpected byte_range, got {byte_range!r}.")


# --- the store -----------------------------------------------------------------------------------


class ArchiveStore(Store):
    """Read-only zarr v3 store over a ``.msk`` or ``.mska`` at any path or fsspec URL.

    The file's directory is read on first use (one request when it fits in the first 64 KiB);
    chunk keys map to the exact byte ranges of the file. Every member is checked when the
    store opens, as :func:`medmask.load_mask` checks it (chunk index, and ``max_voxels`` /
    ``max_bytes``: a member above them makes opening fail with
    :class:`AllocationLimitError`); every chunk is checked before it is returned (length,
    CRC, and a stream header of the member's codec, dtype and chunk shape). The store is
    pinned to what it opened: a local file that changes afterwards raises
    :class:`ConcurrentModificationError`, a replaced remote object fails its chunk checksums.
    It pickles (dask ships it to workers) with its directory.
    """

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        storage_options: dict[str, Any] | None = None,
        read_only: bool = True,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if not read_only:
            raise ReadOnlyError(f"{os.fspath(source)}: ArchiveStore is read-only.")
        if not isinstance(source, str | os.PathLike):
            raise InvalidTypeError(f"Expected a path or URL. Got {type(source).__name__}.")
        super().__init__(read_only=True)
        self.source = os.fspath(source)
        self.storage_options = dict(storage_options or {})
        self._directory: Directory | None = None
        self._layout: Layout | None = None
        self._reader: AsyncByteSource | None = None
        self._local = local_path(self.source, self.storage_options)
        self._identity: tuple[int, ...] | None = None
        self._reader_loop = 0
        self.max_voxels, self.max_bytes = max_voxels, max_bytes
        self._verified: set[str] = set()  # structure arrays whose stored count was checked
        self._verify_locks: dict[int, asyncio.Lock] = {}  # per event loop
        # chunks fetched to check a structure, kept until zarr asks for them once
        self._fetched: dict[tuple[str, int], bytes] = {}

    # -- opening -----------------------------------------------------------------------------
    async def _open(self) -> None:
        await super()._open()
        await self._load()

    async def _load(self) -> None:
        if self._directory is not None:
            return
        reader = self._source_reader()
        directory = await read_directory_async(reader)
        for member in directory.members:
            check_member(
                member,
                name=member_name(self.source, member),
                payload_start=directory.payload_start,
                file_size=reader.size,
                max_voxels=self.max_voxels,
                max_bytes=self.max_bytes,
            )
        self._layout = Layout(directory)
        self._identity = self._stat()
        self._directory = directory  # two racing loads read the same file: either one wins

    @property
    def layout(self) -> Layout:
        """The keys of the store (the directory is read on first use)."""
        if self._layout is None:
            sync(self._load())
        assert self._layout is not None
        return self._layout

    def _source_reader(self) -> AsyncByteSource:
        """The byte reader of the running event loop (async filesystems are loop-bound)."""
        loop = id(asyncio.get_running_loop())
        if self._reader is None or self._reader_loop != loop:
            self._reader = open_source_async(self.source, self.storage_options)
            self._reader_loop = loop
        return self._reader

    def _stat(self) -> tuple[int, ...] | None:
        if self._local is None:
            return None
        st = os.stat(self._local)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def directory(self) -> Directory:
        """The directory the store is pinned to (read on first use)."""
        if self._directory is None:
            sync(self._load())
        assert self._directory is not None
        return self._directory

    # -- reading -----------------------------------------------------------------------------
    async def _read(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Bytes of ``ranges``: from the first read where it covers them, the rest fetched."""
        found, missing = split_by_head(self.directory.head, ranges)
        fetched = iter(await self._source_reader().read_ranges(missing) if missing else [])
        return [next(fetched) if block is None else block for block in found]

    async def _verify_structure(self, path: str) -> None:
        """Check once that a structure's stored bbox holds exactly its stored voxel count: its
        array has chunk keys only inside that bbox, so a bbox that lies would hide voxels.
        Decodes the bbox chunk by chunk (as ``MaskArchive.load_structure`` checks it)."""
        if path in self._verified:
            return
        lock = self._verify_locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:
            if path in self._verified:
                return
            node = self.layout.arrays[path]
            member, entry = node.member, node.label
            assert entry is not None
            assert entry.bbox is not None  # an empty structure has no chunk keys
            d, name = member.descriptor, member_name(self.source, member)
            z, y, x = (slice(lo, hi + 1) for lo, hi in entry.bbox)
            bbox: Roi = (z, y, x)
            spans = [(c, self.directory.chunk_range(member, c)) for c in d.chunks_in(bbox)]
            stored = [(c, span) for c, span in spans if span is not None]
            blobs = await self._read([span for _, span in stored])
            found = 0
            for (chunk_id, _), stream in zip(stored, blobs, strict=True):
                found += await asyncio.to_thread(
                    count_in_bbox, member, entry, chunk_id, stream, name=name
                )
                self._fetched[member.name, chunk_id] = stream
            check_label_count(entry, found, name=name)
            self._verified.add(path)

    async def _chunk(self, ref: _ChunkRef) -> bytes:
        if ref.structure is not None:
            await self._verify_structure(ref.structure)
        stream = self._fetched.pop((ref.member.name, ref.chunk_id), None)
        if stream is None:
            (stream,) = await self._read([(ref.start, ref.end)])
        if self._local is not None and self._stat() != self._identity:
            raise ConcurrentModificationError(
                f"{self.source}: the file changed since the store opened it (generation "
                f"{self.directory.generation}); open it again to see the new state."
            )
        name = member_name(self.source, ref.member)
        return bytes(check_chunk(ref.member, ref.chunk_id, stream, name=name))

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if byte_range is not None and not isinstance(
            byte_range, RangeByteRequest | OffsetByteRequest | SuffixByteRequest
        ):
            raise TypeError(f"Unexpected byte_range, got {byte_range!r}.")
        await self._load()
        data = self.layout.document(key)
        if data is None:
            ref = self.layout.chunk(key)
            if ref is None:
                return None
            data = await self._chunk(ref)
        return prototype.buffer.from_bytes(_slice_bytes(data, byte_range))

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Blocking :meth:`get` (not from inside zarr's event loop)."""
        return sync(self.get(key, prototype or default_buffer_prototype(), byte_range))

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def getsize(self, key: str) -> int:
        await self._load()
        data = self.layout.document(key)
        if data is not None:
            return len(data)
        ref = self.layout.chunk(key)
        if ref is None:
            raise FileNotFoundError(key)
        return ref.end - ref.start

    async def exists(self, key: str) -> bool:
        await self._load()
        return self.layout.document(key) is not None or self.layout.chunk(key) is not None

    # -- listing -----------------------------------------------------------------------------
    async def _keys(self) -> list[str]:
        await self._load()
        return self.layout.keys()

    async def list(self) -> AsyncIterator[str]:
        for key in await self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        base = prefix.rstrip("/")
        base = f"{base}/" if base else ""
        seen: set[str] = set()
        for key in await self._keys():
            if key.startswith(base):
                child = key[len(base) :].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child

    # -- writing (refused) ---------------------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    async def set_partial_values(
        self, key_start_values: Iterable[tuple[str, int, bytes | bytearray | memoryview]]
    ) -> None:  # abstract in zarr < 3.1.3
        self._check_writable()

    # -- protocol ----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ArchiveStore)
            and self.source == other.source
            and self.storage_options == other.storage_options
        )

    def __hash__(self) -> int:
        return hash((type(self), self.source))

    def __repr__(self) -> str:
        return f"ArchiveStore({self.source!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # bound to this process's event loop
        state["_verify_locks"], state["_fetched"] = {}, {}
        return state


def open_zarr(
    source: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> zarr.Group:
    """Open a ``.msk`` or ``.mska`` at any path or URL as a read-only ``zarr.Group``.

    ``group["<member>"]`` is a member's label array, ``group["structures/<name>"]`` one
    structure as a bool array (docs/zarr.md). ``max_voxels`` / ``max_bytes``: the limits on
    one member, as for :func:`medmask.load_mask`.
    """
    store = ArchiveStore(
        source, storage_options=storage_options, max_voxels=max_voxels, max_bytes=max_bytes
    )
    return zarr.open_group(store=store, mode="r", zarr_format=3)


# --- masks as native zarr arrays -----------------------------------------------------------------


def _mask_attributes(mask: SegmentationMask) -> dict[str, Any]:
    stats = label_stats(mask.data)
    labels = mapping_items(mask.mapping)
    return {
        "labels": dict(labels),
        "label_stats": {
            name: {
                "count": stats[value].count if value in stats else 0,
                "bbox": None if value not in stats else [list(b) for b in stats[value].bbox],
            }
            for name, value in labels
            if value != 0
        },
        "space": space_attributes(mask.space),
        "medmask": {"layout_version": FORMAT_VERSION},
    }


def to_zarr(
    mask: SegmentationMask,
    store_or_url: Store | Target,
    *,
    chunks: object = None,
    shards: tuple[int, int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
    level: int | None = None,
) -> zarr.Array[Any]:
    """Write ``mask`` as a native zarr v3 array (medmask codec, label and space attributes).

    ``chunks``: as for :func:`medmask.save_mask`; ``shards``: an optional shard shape, a
    multiple of the chunk shape. Returns the array, readable by :func:`from_zarr`.
    """
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    chunk_shape = parse_chunks(chunks, mask.shape, mask.dtype.itemsize)
    core = choose_codec(mask.data, level=level)
    serializers = {c.codec_name: c for c in (BinaryCodec, LabelsCodec, EdgesCodec)}
    serializer = serializers[core.codec_id](level=core.get_config()["level"])
    if isinstance(store_or_url, str | os.PathLike):
        store: Any = (
            zarr.storage.FsspecStore.from_url(
                os.fspath(store_or_url), storage_options=storage_options
            )
            if local_path(store_or_url) is None
            else zarr.storage.LocalStore(os.fspath(store_or_url))
        )
    else:
        store = store_or_url
    array = zarr.create_array(
        store,
        shape=mask.shape,
        chunks=chunk_shape,
        shards=shards,
        dtype=mask.dtype,
        serializer=serializer,
        compressors=None,
        fill_value=0,
        dimension_names=["z", "y", "x"],
        attributes=_mask_attributes(mask),
        overwrite=True,
    )
    array[...] = mask.data
    return array


def from_zarr(
    array_or_url: zarr.Array[Any] | str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
) -> SegmentationMask:
    """A :class:`SegmentationMask` from a zarr array written by :func:`to_zarr` or shown by
    :func:`open_zarr` (its ``labels`` and ``space`` attributes)."""
    array = array_or_url
    if isinstance(array_or_url, str | os.PathLike):
        array = zarr.open_array(os.fspath(array_or_url), mode="r", storage_options=storage_options)
    if not isinstance(array, zarr.Array):
        raise InvalidTypeError(f"Expected a zarr array or URL. Got {type(array).__name__}.")
    attrs: dict[str, Any] = dict(array.attrs)
    if not isinstance(attrs.get("labels"), dict) or "space" not in attrs:
        raise InvalidValueError(
            f"{array.name}: expected 'labels' and 'space' attributes (written by to_zarr or "
            "shown by open_zarr). Got " + ", ".join(sorted(attrs)) + "."
        )
    if len(array.shape) != 3:
        raise InvalidValueError(f"{array.name}: expected a 3-D (z, y, x) array. Got {array.shape}.")
    shape = (int(array.shape[0]), int(array.shape[1]), int(array.shape[2]))
    try:
        mapping = LabelMapping({str(k): v for k, v in attrs["labels"].items()})
    except MedmaskError as exc:
        raise type(exc)(
            f"{array.name}: the 'labels' attribute is not a label table: {exc}"
        ) from exc
    space = space_from_attributes(attrs["space"], shape)
    data = np.asarray(array[...])
    return SegmentationMask(data, mapping, space, bit_depth=bit_depth_of_name(data.dtype.name))
