"""``MaskArchive``: many named, possibly overlapping masks sharing one space, in one ``.mska``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from ._version import __version__
from .api import MaskInfo, info_from, mask_from_region
from .errors import (
    FormatError,
    LabelNotFoundError,
    MemberNotFoundError,
    ReadOnlyError,
    SpaceMismatchError,
)
from .format.container import HEADER_SIZE, Header
from .format.descriptor import MaskDescriptor, Roi, parse_roi
from .format.encoding import EncodedMask, check_index, chunk_ranges, decode_region, encode_mask
from .format.mska import (
    SLOTS_SIZE,
    ArchiveDirectory,
    Member,
    directory_bytes,
    parse_directory,
    slot_header,
    valid_slots,
)
from .io import (
    HEAD_GUESS,
    ByteSource,
    Target,
    local_path,
    open_source,
    read_ranges_after_head,
    write_atomic,
)
from .mapping import LabelMapping, close_matches_hint, mapping_items, parse_label_name
from .mask import SegmentationMask, smallest_bit_depth
from .values import match_allowed_values

__all__ = ["LayeringReport", "MaskArchive", "pack_folder", "unpack"]

#: Tolerances when checking that a member's space equals the archive's.
SPACE_ATOL_MM = 1e-3
SPACE_RTOL = 1e-5
_MIN_REGION = 4 << 10


def spaces_match(a: Space, b: Space) -> str | None:
    """Return None when ``a`` and ``b`` agree within tolerance, else what differs."""
    if tuple(int(s) for s in a.shape) != tuple(int(s) for s in b.shape):
        return f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    checks = [
        ("origin", a.origin, b.origin, SPACE_ATOL_MM),
        ("spacing", a.spacing, b.spacing, SPACE_ATOL_MM * 1e-2),
        ("x_orientation", a.x_orientation, b.x_orientation, 1e-5),
        ("y_orientation", a.y_orientation, b.y_orientation, 1e-5),
        ("z_orientation", a.z_orientation, b.z_orientation, 1e-5),
    ]
    for what, va, vb, atol in checks:
        if not np.allclose(
            np.asarray(va, float), np.asarray(vb, float), atol=atol, rtol=SPACE_RTOL
        ):
            return f"{what} {tuple(float(v) for v in va)} != {tuple(float(v) for v in vb)}"
    return None


def _round_up(value: int, step: int = 4096) -> int:
    return -(-value // step) * step


@dataclass(frozen=True)
class LayeringReport:
    """How :meth:`MaskArchive.add_structures` split structures into exclusive layers."""

    layers: dict[str, list[str]]  # member name -> structure names

    @property
    def n_layers(self) -> int:
        """Number of layer members written."""
        return len(self.layers)


def assign_layers(masks: Mapping[str, npt.NDArray[np.bool_]]) -> list[list[str]]:
    """Greedy colouring of the overlap graph: each structure, largest first, goes to the first
    layer in which it overlaps nothing."""
    sizes = {name: int(np.count_nonzero(m)) for name, m in masks.items()}
    order = sorted(masks, key=lambda n: (-sizes[n], n))
    layers: list[list[str]] = []
    occupied: list[npt.NDArray[np.bool_]] = []
    for name in order:
        mask = masks[name]
        coords = np.nonzero(mask.any(axis=(1, 2)))[0] if sizes[name] else np.array([], int)
        for layer, occ in zip(layers, occupied, strict=True):
            if sizes[name] == 0 or not _overlaps(occ, mask, coords):
                layer.append(name)
                occ |= mask
                break
        else:
            layers.append([name])
            occupied.append(mask.copy())
    return layers


def _overlaps(
    occupied: npt.NDArray[np.bool_], mask: npt.NDArray[np.bool_], zs: npt.NDArray[np.intp]
) -> bool:
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    return bool(np.any(occupied[z0:z1] & mask[z0:z1]))


class MaskArchive:
    """Many named :class:`SegmentationMask` members sharing one space, in one ``.mska`` file.

    Parameters
    ----------
    source
        Path, ``pathlib.Path``, fsspec URL or ``OpenFile``.
    mode
        ``"r"`` read, ``"w"`` create/overwrite (written atomically when closed), ``"a"`` append
        (local files: every added member is committed at once, crash-safe; remote objects are
        rewritten with one PUT when closed).
    space
        The shared space; default: the first member's.
    """

    def __init__(
        self,
        source: Target,
        mode: Literal["r", "w", "a"] = "r",
        *,
        space: Space | None = None,
        storage_options: dict[str, Any] | None = None,
        max_voxels: int | None = None,
    ) -> None:
        if mode not in ("r", "w", "a"):
            raise ValueError(f"Expected mode 'r', 'w' or 'a'. Got {mode!r}.")
        self._target = source
        self._mode = mode
        self._options = storage_options
        self._max_voxels = max_voxels
        self._local = local_path(source, storage_options)
        self._source: ByteSource | None = None
        self._head = b""
        self._header: Header | None = None
        self._slot = 0
        self._pending: list[tuple[str, EncodedMask, bool]] = []  # members not yet on disk
        self._closed = False
        self._dirty = False
        self._name = self._local or str(source)
        self._directory = ArchiveDirectory(space=space)
        exists = mode != "w" and (os.path.exists(self._local) if self._local is not None else True)
        if mode == "r" or (mode == "a" and exists):
            try:
                self._open_existing()
            except FileNotFoundError:
                if mode == "r":
                    raise
                self._source = None
        if space is not None and self._directory.space is not None:
            problem = spaces_match(space, self._directory.space)
            if problem:
                raise SpaceMismatchError(
                    f"{self._name}: space differs from the archive's: {problem}."
                )

    # -- opening -------------------------------------------------------------------------------
    def _open_existing(self) -> None:
        source = self._ensure_source()
        self._name = source.name
        last_error: Exception | None = None
        for slot, header in valid_slots(self._head, name=source.name):
            try:
                self._directory = self._read_directory(header)
                self._header, self._slot = header, slot
                return
            except FormatError as exc:  # torn directory: fall back to the older slot
                last_error = exc
        assert last_error is not None
        raise last_error

    def _ensure_source(self) -> ByteSource:
        """Open the file (again, after a write) and take its first read."""
        if self._source is None:
            self._source = open_source(self._target, self._options)
            self._head = self._source.read(0, HEAD_GUESS)
        return self._source

    def _read_directory(self, header: Header) -> ArchiveDirectory:
        ranges = [
            (header.metadata_offset, header.metadata_offset + header.metadata_length),
            (header.index_offset, header.index_offset + header.index_length),
        ]
        blocks = self._read_ranges(ranges)
        directory = parse_directory(header, blocks[0], blocks[1], name=self._name)
        for member in directory.members:
            check_index(
                member.index,
                member.descriptor,
                name=f"{self._name} [{member.name}]",
                payload_start=SLOTS_SIZE,
                max_voxels=1 << 62,
            )
        return directory

    def _read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Serve ranges from the first read when it covers them; fetch the rest (merged)."""
        if not ranges:  # e.g. only unwritten members: there may be no file to open yet
            return []
        source = self._ensure_source()
        return read_ranges_after_head(source, self._head, ranges)

    # -- queries -------------------------------------------------------------------------------
    @property
    def space(self) -> Space | None:
        """The shared space (None for an empty archive created without one)."""
        return self._directory.space

    @property
    def mode(self) -> str:
        """``"r"``, ``"w"`` or ``"a"``."""
        return self._mode

    def _members(self) -> list[Member | tuple[str, EncodedMask, bool]]:
        return [*self._directory.members, *self._pending]

    def all_names(self) -> list[str]:
        """Member names in insertion order."""
        return [m.name if isinstance(m, Member) else m[0] for m in self._members()]

    def __contains__(self, name: object) -> bool:
        return name in self.all_names()

    def __len__(self) -> int:
        return len(self._directory.members) + len(self._pending)

    def __iter__(self) -> Iterator[str]:
        return iter(self.all_names())

    def _descriptor(self, name: str) -> MaskDescriptor:
        for m in self._members():
            if isinstance(m, Member) and m.name == name:
                return m.descriptor
            if isinstance(m, tuple) and m[0] == name:
                return replace(m[1].descriptor, space=self.space)
        raise MemberNotFoundError(
            f"{self._name}: no member named {name!r}." + close_matches_hint(name, self.all_names())
        )

    def info(self) -> list[MaskInfo]:
        """Per member: name, shape, dtype, labels (counts, bboxes), compressed and raw bytes."""
        out = []
        for m in self._members():
            if isinstance(m, Member):
                out.append(info_from(m.descriptor, m.index, m.name))
            else:
                name, encoded, _ = m
                desc = replace(encoded.descriptor, space=self.space)
                out.append(info_from(desc, encoded.index(0), name))
        return out

    def read_all_mapping(self) -> dict[str, LabelMapping]:
        """``{member name: LabelMapping}`` without decoding."""
        return {name: self._descriptor(name).mapping for name in self.all_names()}

    def structures(self) -> dict[str, tuple[str, int]]:
        """``{structure name: (member, label)}`` for names that occur in exactly one member."""
        found: dict[str, list[tuple[str, int]]] = {}
        for member in self.all_names():
            for label_name, value in mapping_items(self._descriptor(member).mapping):
                found.setdefault(label_name, []).append((member, value))
        return {name: where[0] for name, where in found.items() if len(where) == 1}

    def locate(self, structure: str) -> tuple[str, int]:
        """``(member, label)`` holding ``structure``; KeyError if absent or ambiguous."""
        holders = [
            (member, value)
            for member in self.all_names()
            for label_name, value in mapping_items(self._descriptor(member).mapping)
            if label_name == structure
        ]
        if len(holders) == 1:
            return holders[0]
        if holders:
            raise LabelNotFoundError(
                f"{self._name}: structure {structure!r} is in several members "
                f"{[m for m, _ in holders]}; load it with load_segmask(member)."
            )
        names = list(self.structures())
        raise LabelNotFoundError(
            f"{self._name}: no structure named {structure!r}."
            + close_matches_hint(structure, names)
        )

    # -- reading -------------------------------------------------------------------------------
    def _decode_members(
        self, names: Sequence[str], roi: object = None, rois: Mapping[str, Roi] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Decode several members (``roi`` for all, or per member ``rois``) with merged reads."""
        plans = []
        out = {}
        for name in names:
            member = self._directory.member(name)
            if member is None:
                descriptor = self._descriptor(name)  # MemberNotFoundError when absent
                encoded = next(p[1] for p in self._pending if p[0] == name)
                region = parse_roi(rois[name] if rois else roi, descriptor.shape)
                index = encoded.index(0)
                streams = {i: s for i, s in enumerate(encoded.streams) if s}
                out[name] = decode_region(descriptor, index, region, streams, name=self._name)
                continue
            region = parse_roi(rois[name] if rois else roi, member.descriptor.shape)
            where = f"{self._name} [{name}]"
            check_index(
                member.index,
                member.descriptor,
                name=where,
                payload_start=SLOTS_SIZE,
                max_voxels=self._max_voxels,
            )
            ranges = chunk_ranges(member.index, member.descriptor.chunks_in(region))
            plans.append((name, member, region, ranges, where))
        all_ranges = [(s, e) for *_, ranges, _ in plans for _, s, e in ranges]
        blobs = iter(self._read_ranges(all_ranges))
        for name, member, region, ranges, where in plans:
            streams = {chunk_id: next(blobs) for chunk_id, _, _ in ranges}
            out[name] = decode_region(member.descriptor, member.index, region, streams, name=where)
        return out

    def load_segmask(self, name: str, *, roi: object = None) -> SegmentationMask:
        """Decode member ``name`` (or only ``roi``)."""
        self._check_open()
        descriptor = self._descriptor(name)
        region = parse_roi(roi, descriptor.shape)
        data = self._decode_members([name], region)[name]
        return mask_from_region(descriptor, self._shared_space(), data, region)

    def read_all_masks(self) -> dict[str, SegmentationMask]:
        """Decode every member (one merged read for all of them)."""
        self._check_open()
        names = self.all_names()
        arrays = self._decode_members(names)
        out = {}
        for name in names:
            descriptor = self._descriptor(name)
            full = parse_roi(None, descriptor.shape)
            out[name] = mask_from_region(descriptor, self._shared_space(), arrays[name], full)
        return out

    def _shared_space(self) -> Space:
        if self.space is None:
            raise MemberNotFoundError(f"{self._name}: the archive is empty.")
        return self.space

    def get_binary_mask_by_names(self, names: str | Sequence[str]) -> npt.NDArray[np.bool_]:
        """Union of the named structures, wherever (whichever member) they are stored."""
        self._check_open()
        wanted = [names] if isinstance(names, str) else list(names)
        space = self._shared_space()
        located = [self.locate(n) for n in wanted]
        rois: dict[str, Roi] = {}
        for member in sorted({m for m, _ in located}, key=self.all_names().index):
            wanted_values = {v for m, v in located if m == member}
            labels = self._descriptor(member).labels
            boxes = [e.bbox for e in labels if e.value in wanted_values and e.bbox]
            if boxes:  # decode only the chunks around the structures (write-time bboxes)
                rois[member] = tuple(  # type: ignore[assignment]
                    slice(min(b[a][0] for b in boxes), max(b[a][1] for b in boxes) + 1)
                    for a in range(3)
                )
        arrays = self._decode_members(list(rois), rois=rois)
        out = np.zeros(tuple(int(s) for s in space.shape), dtype=bool)
        for member, region in rois.items():
            values = [v for m, v in located if m == member]
            out[region] |= match_allowed_values(arrays[member], values)
        return out

    def load_structure(self, name: str) -> npt.NDArray[np.bool_]:
        """The binary mask of one structure, by name, from whichever member holds it."""
        return self.get_binary_mask_by_names([name])

    # -- writing -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self._name}: archive is closed.")

    def _check_writable(self) -> None:
        self._check_open()
        if self._mode == "r":
            raise ReadOnlyError(f"{self._name}: archive is open read-only (mode='r').")

    def add_segmask(
        self,
        mask: SegmentationMask,
        name: str,
        *,
        level: int | None = None,
        chunks: object = None,
        _layer: bool = False,
    ) -> None:
        """Add ``mask`` as member ``name``; its space must match the archive's."""
        self._check_writable()
        if not isinstance(mask, SegmentationMask):
            raise TypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
        name = parse_label_name(name)
        if name in self:
            raise ValueError(f"{self._name}: a member named {name!r} already exists.")
        if self.space is None:
            self._directory = replace(self._directory, space=mask.space)
        else:
            problem = spaces_match(mask.space, self.space)
            if problem:
                raise SpaceMismatchError(
                    f"{self._name}: mask {name!r} does not share the archive's space: {problem}."
                )
        encoded = encode_mask(mask, level=level, chunks=chunks, include_space=False)
        self._pending.append((name, encoded, _layer))
        self._dirty = True
        if self._mode == "a" and self._local is not None and self._header is not None:
            self._commit_local_append()

    def add_structures(
        self,
        structures: Mapping[str, npt.ArrayLike],
        *,
        labels: Mapping[str, int] | None = None,
        prefix: str = "layer_",
        level: int | None = None,
    ) -> LayeringReport:
        """Add binary structures, packed losslessly into as few exclusive layers as possible.

        Each structure goes to the first layer in which it overlaps nothing (largest first);
        each layer is stored as one multi-label member. ``labels`` gives label values
        (default: 1, 2, ... within each layer in name order). Structure names must be new.
        """
        self._check_writable()
        masks: dict[str, npt.NDArray[np.bool_]] = {}
        existing = set(self.structures())
        for name, array in structures.items():
            parse_label_name(name)
            if name in existing:
                raise ValueError(f"{self._name}: structure {name!r} already exists.")
            arr = np.asarray(array)
            if arr.dtype != np.bool_ and arr.dtype.kind not in "iu":
                raise TypeError(f"Structure {name!r}: expected a bool or integer array.")
            masks[name] = arr if arr.dtype == np.bool_ else arr != 0
        report: dict[str, list[str]] = {}
        taken = set(self.all_names())
        counter = 0
        for layer in assign_layers(masks):
            while f"{prefix}{counter}" in taken:
                counter += 1
            member = f"{prefix}{counter}"
            taken.add(member)
            names = sorted(layer, key=lambda n: (labels[n] if labels else 0, n))
            values = {n: (labels[n] if labels else i + 1) for i, n in enumerate(names)}
            depth = smallest_bit_depth(max(values.values()))
            shape = next(iter(masks.values())).shape
            space = self.space if self.space is not None else Space(shape=shape)
            layer_mask = SegmentationMask.lazy_init(depth, space=space)
            for n in names:
                layer_mask.add_label(masks[n], values[n], n)
            self.add_segmask(layer_mask, member, level=level, _layer=True)
            report[member] = names
        return LayeringReport(report)

    def remove(self, name: str) -> None:
        """Drop member ``name`` (its bytes remain until :meth:`compact`)."""
        self._check_writable()
        self._descriptor(name)
        self._pending = [p for p in self._pending if p[0] != name]
        members = tuple(m for m in self._directory.members if m.name != name)
        self._directory = replace(self._directory, members=members)
        self._dirty = True
        if self._mode == "a" and self._local is not None and self._header is not None:
            self._commit_local_append()

    def compact(self) -> None:
        """Rewrite the archive with only its live members (atomically)."""
        self._check_writable()
        self._write_full()  # re-lays out live members (and pending ones) in a new file

    def _reload_encoded(self, member: Member) -> EncodedMask:
        ranges = [
            (int(e["offset"]), int(e["offset"] + e["length"])) for e in member.index if e["length"]
        ]
        blobs = iter(self._read_ranges(ranges))
        streams = [next(blobs) if int(e["length"]) else b"" for e in member.index]
        return EncodedMask(member.descriptor, streams)

    # -- committing ----------------------------------------------------------------------------
    def _layout(
        self, members: list[tuple[str, EncodedMask, bool]], payload_at: int
    ) -> tuple[list[Member], list[bytes]]:
        placed: list[Member] = []
        pieces: list[bytes] = []
        offset = payload_at
        for name, encoded, layer in members:
            index = encoded.index(offset)
            placed.append(Member(name, encoded.descriptor, index, layer))
            pieces.extend(s for s in encoded.streams if s)
            offset += encoded.payload_size
        return placed, pieces

    def _write_full(self) -> None:
        """Write a fresh archive: slots, two directory regions, payload; atomically."""
        if self._directory.members:  # already written (an earlier flush, or mode "a")
            self._pending = [
                (m.name, self._reload_encoded(m), m.layer) for m in self._directory.members
            ] + self._pending
            self._directory = replace(self._directory, members=())
        members = self._pending
        # size the directory regions from a first rendering, leaving room to grow
        probe, _ = self._layout(members, 0)
        meta, _, index, _ = directory_bytes(replace(self._directory, members=tuple(probe)))
        region = _round_up(max(_MIN_REGION, 2 * (len(meta) + len(index)) + 1024), 1024)
        regions = ((SLOTS_SIZE, region), (SLOTS_SIZE + region, region))
        payload_at = SLOTS_SIZE + 2 * region
        placed, payload = self._layout(members, payload_at)
        directory = ArchiveDirectory(
            space=self._directory.space,
            members=tuple(placed),
            regions=regions,
            created_by=f"medmask {__version__}",
        )
        meta, flags, index, _ = directory_bytes(directory)
        if len(meta) + len(index) > region:  # cannot happen: region sized from the same data
            raise AssertionError("directory larger than its region")
        header = slot_header(1, SLOTS_SIZE, meta, flags, SLOTS_SIZE + len(meta), index)
        area = (meta + index).ljust(2 * region, b"\0")
        pieces = [header.pack(), bytes(HEADER_SIZE), area, *payload]
        write_atomic(self._target, pieces, self._options)
        self._after_write(directory, header, slot=0)

    def _after_write(self, directory: ArchiveDirectory, header: Header, slot: int) -> None:
        self._directory, self._header, self._slot = directory, header, slot
        self._pending = []
        self._dirty = False
        if self._source is not None:  # reopened (and the first read re-taken) on next read
            self._source.close()
            self._source = None

    def _commit_local_append(self) -> None:
        """Append pending members to a local archive in place, crash-safely (format.md 5)."""
        assert self._local is not None
        assert self._header is not None
        with open(self._local, "r+b") as f:
            end = f.seek(0, os.SEEK_END)
            placed, payload = self._layout(self._pending, end)
            f.write(b"".join(payload))
            new_end = end + sum(len(p) for p in payload)
            directory = replace(self._directory, members=(*self._directory.members, *placed))
            meta, flags, index, _ = directory_bytes(directory)
            size = len(meta) + len(index)
            active = (
                self._header.metadata_offset,
                self._header.index_offset + self._header.index_length,
            )
            target = next(
                (
                    start
                    for start, cap in directory.regions
                    if size <= cap and (start + cap <= active[0] or start >= active[1])
                ),
                new_end,
            )
            f.seek(target)
            f.write(meta + index)
            f.flush()
            os.fsync(f.fileno())
            slot = 1 - self._slot
            header = slot_header(
                self._header.generation + 1, target, meta, flags, target + len(meta), index
            )
            f.seek(slot * HEADER_SIZE)
            f.write(header.pack())
            f.flush()
            os.fsync(f.fileno())
        self._after_write(directory, header, slot)

    def flush(self) -> None:
        """Write pending changes now (``w`` and remote ``a``: rewrites the whole file)."""
        if not self._dirty or self._mode == "r":
            return
        if self._mode == "a" and self._local is not None and self._header is not None:
            self._commit_local_append()
        else:
            self._write_full()

    def close(self) -> None:
        """Write pending changes and release the file."""
        if self._closed:
            return
        try:
            if self._mode == "w" or self._dirty:
                self.flush()
        finally:
            self._closed = True
            if self._source is not None:
                self._source.close()

    def __enter__(self) -> MaskArchive:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None and self._mode == "w":
            # a failed "w" session must not replace the previous file
            self._closed = True
            if self._source is not None:
                self._source.close()
            return
        self.close()

    def __repr__(self) -> str:
        return f"MaskArchive({self._name!r}, mode={self._mode!r}, members={len(self)})"


def pack_folder(
    folder: str | os.PathLike[str],
    out: Target,
    labels: Mapping[str, int] | str | os.PathLike[str] | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    level: int | None = None,
) -> LayeringReport:
    """Pack a folder of per-structure NIfTI masks (TotalSegmentator layout) into one archive.

    Structure names are the file names without ``.nii.gz``/``.nii``. ``labels``
    (``{name: value}`` or a JSON file of it, e.g. TotalSegmentator's label table) sets label
    values; structures are layered losslessly (:meth:`MaskArchive.add_structures`).
    """
    from .interop.nifti import read_nifti

    root = Path(folder)
    files = sorted(p for p in root.iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not files:
        raise FileNotFoundError(f"{root}: no .nii or .nii.gz files.")
    if isinstance(labels, str | os.PathLike):
        import json

        labels = json.loads(Path(labels).read_text())
    structures: dict[str, npt.NDArray[np.bool_]] = {}
    space: Space | None = None
    for path in files:
        name = path.name.removesuffix(".gz").removesuffix(".nii")
        array, file_space = read_nifti(path)
        if space is None:
            space = file_space
        else:
            problem = spaces_match(file_space, space)
            if problem:
                raise SpaceMismatchError(f"{path}: space differs from {files[0].name}: {problem}.")
        structures[name] = array != 0
    use_labels = None
    if labels is not None:
        assert isinstance(labels, Mapping)
        use_labels = {n: int(labels[n]) for n in structures if n in labels}
        if len(use_labels) != len(structures):
            missing = sorted(set(structures) - set(use_labels))
            raise ValueError(
                f"labels has no value for {missing[:5]}{' ...' if len(missing) > 5 else ''}."
            )
    with MaskArchive(out, "w", space=space, storage_options=storage_options) as archive:
        return archive.add_structures(structures, labels=use_labels, level=level)


def unpack(
    archive: Target | MaskArchive,
    folder: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
) -> list[Path]:
    """Write every structure of an archive as ``<folder>/<name>.nii.gz`` (binary uint8)."""
    from .interop.nifti import write_nifti

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    own = not isinstance(archive, MaskArchive)
    arc = MaskArchive(archive, "r", storage_options=storage_options) if own else archive
    assert isinstance(arc, MaskArchive)
    try:
        written = []
        masks = arc.read_all_masks()
        for member, mask in masks.items():
            for name, value in mapping_items(mask.mapping):
                target = out / f"{name}.nii.gz"
                if target.exists() and target in written:
                    raise ValueError(f"structure {name!r} occurs in several members ({member}).")
                write_nifti(mask.data == value, mask.space, target, dtype=np.uint8)
                written.append(target)
        return written
    finally:
        if own:
            arc.close()
