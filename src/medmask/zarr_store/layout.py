"""The zarr v3 layout of a ``.msk`` / ``.mska`` file (docs/zarr.md), computed from its directory.

Keys, node names, the synthesized metadata documents and their attributes, and chunk key ->
byte range arithmetic. Pure: no zarr, no I/O; :class:`~medmask.zarr_store.ArchiveStore`
serves what :class:`Layout` computes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from spacetransformer import Space

from ..dtypes import DTYPE_NAMES
from ..errors import FormatError
from ..format.descriptor import label_holders

if TYPE_CHECKING:
    from ..format.descriptor import LabelEntry, MaskDescriptor
    from ..format.mska import Member
    from ..reader import Directory

__all__ = [
    "FORMAT_VERSION",
    "LAYOUT_VERSION",
    "STRUCTURES",
    "ChunkRef",
    "Layout",
    "node_name",
    "space_attributes",
    "space_from_attributes",
]

#: Version of the synthesized layout (docs/zarr.md); not the ``.msk`` format version.
LAYOUT_VERSION = "1.0"
#: Former name of :data:`LAYOUT_VERSION`, kept for compatibility.
FORMAT_VERSION = LAYOUT_VERSION
#: The group of one bool array per structure.
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


# --- space <-> attributes ------------------------------------------------------------------------


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


# --- documents -----------------------------------------------------------------------------------


def _codec_json(config: dict[str, Any]) -> dict[str, Any]:
    """A codec configuration as stored in a ``.msk`` (``{"id", ...}``) in zarr's spelling."""
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


def _encode(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as the documents are served."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


# --- the layout ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkRef:
    """A chunk key resolved: the member's chunk ``chunk_id`` at bytes ``[start, end)``."""

    member: Member
    chunk_id: int
    start: int
    end: int
    structure: str | None = None  # path of the structure array the key belongs to


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

    ``select_codec``: the name of the array -> array codec that turns a member's label map
    into one structure's bool array (``medmask.select_label``; the caller passes it so that
    the layout needs no zarr).
    """

    def __init__(self, directory: Directory, *, select_codec: str) -> None:
        self.directory = directory
        self.select_codec = select_codec
        self.documents: dict[str, dict[str, Any]] = {}  # node path ("" = root) -> metadata
        self.arrays: dict[str, _ArrayNode] = {}
        self._encoded: dict[str, bytes] = {}
        self._keys: list[str] | None = None
        self._build()

    def _build(self) -> None:
        directory = self.directory
        space_attr = space_attributes(directory.space) if directory.space is not None else None
        holders = label_holders((m, m.descriptor) for m in directory.members)
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
                if label.value == 0 or len(holders[label.name]) > 1:
                    continue  # background, or a name that is ambiguous across members
                snode = node_name(label.name, reserved=structure_nodes.values())
                structure_nodes[label.name] = snode
                structures[label.name] = {"node": snode, "member": node, "value": label.value}
                select = {
                    "name": self.select_codec,
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
                    "layout_version": LAYOUT_VERSION,
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
            data = self._encoded[path] = _encode(doc)
        return data

    def chunk(self, key: str) -> ChunkRef | None:
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
        return ChunkRef(node.member, chunk_id, *span, path if node.label is not None else None)

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
