"""The read engine: every path that returns voxels of a stored mask goes through here.

:class:`OpenedFile` holds what a read needs (a range reader, where the payload starts, the
file size when known, the decode limits) and owns every check made before voxels are
returned: the chunk index against the descriptor, the limits and the file size
(:func:`check_member`), each chunk's length, CRC and stream header against the descriptor
(:func:`check_chunk`, never cast or padded), and, for reads of structures decoded inside
their stored bounding boxes, the stored voxel counts (:func:`check_label_counts`).
``MaskFile``, ``MaskArchive``, the cohort functions and the zarr store use it; the checks are
pure functions, so the async zarr store calls the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from ._workers import chunk_executor
from .errors import FormatError
from .format.descriptor import LabelEntry, MaskDescriptor, Roi, index_to_roi
from .format.encoding import (
    check_index,
    check_limits,
    check_stored_chunk,
    chunk_ranges,
    decode_region,
)
from .format.mska import Member, member_name
from .io import HEAD_GUESS, ByteSource, read_ranges_after_head
from .mapping import LabelMapping
from .mask import SegmentationMask
from .reader import Directory
from .values import label_stats, match_allowed_values

__all__ = [
    "MaskInfo",
    "OpenedFile",
    "StoredArray",
    "check_chunk",
    "check_decoded_values",
    "check_label_count",
    "check_label_counts",
    "check_member",
    "count_in_bbox",
    "info_from",
    "known_size",
    "labels_have_gaps",
    "mask_from_region",
    "member_name",
    "structure_roi",
    "verify_decoded",
]

#: Reads byte ranges ``[(start, end), ...]``; returns their bytes in order.
RangeReader = Callable[[Sequence[tuple[int, int]]], Sequence[bytes | memoryview]]
Present = list[npt.NDArray[Any] | None]


@dataclass(frozen=True)
class MaskInfo:
    """Metadata of a stored mask, answered without decoding voxels."""

    name: str
    shape: tuple[int, int, int]
    dtype: np.dtype[Any]
    bit_depth: int
    space: Space | None
    labels: tuple[LabelEntry, ...]
    codec: dict[str, Any]
    chunks: tuple[int, int, int]
    compressed_bytes: int
    raw_bytes: int

    @property
    def mapping(self) -> LabelMapping:
        """Label names."""
        return LabelMapping([(e.name, e.value) for e in self.labels])

    def voxel_counts(self) -> dict[str, int]:
        """``{name: voxel count}`` from the write-time statistics."""
        return {e.name: e.count for e in self.labels}

    def volumes_mm3(self) -> dict[str, float]:
        """``{name: volume in mm^3}`` (voxel count times voxel volume)."""
        voxel = math.prod(float(s) for s in self.space.spacing) if self.space is not None else 1.0
        return {e.name: e.count * voxel for e in self.labels}

    def bboxes(self) -> dict[str, tuple[tuple[int, int], ...] | None]:
        """``{name: inclusive ((z0, z1), (y0, y1), (x0, x1))}``; None for an absent label."""
        return {e.name: e.bbox for e in self.labels}

    @property
    def ratio(self) -> float:
        """Raw bytes over compressed bytes."""
        return self.raw_bytes / max(1, self.compressed_bytes)


def info_from(descriptor: MaskDescriptor, index: npt.NDArray[Any], name: str) -> MaskInfo:
    """Build a :class:`MaskInfo` from a parsed descriptor and its chunk index."""
    return MaskInfo(
        name=name,
        shape=descriptor.shape,
        dtype=descriptor.dtype,
        bit_depth=descriptor.bit_depth,
        space=descriptor.space,
        labels=descriptor.labels,
        codec=dict(descriptor.codec),
        chunks=descriptor.chunks,
        compressed_bytes=int(index["length"].sum()),
        raw_bytes=descriptor.nbytes,
    )


def known_size(source: Any, head: bytes) -> int | None:
    """The size of ``source`` (sync or async) if known: from the source, or a first read
    shorter than asked."""
    size: int | None = source.size
    if size is not None:
        return size
    return len(head) if len(head) < HEAD_GUESS else None


# --- the checks (pure: the sync engine and the async zarr store call them) ----------------------


def check_member(
    member: Member,
    *,
    name: str,
    payload_start: int,
    file_size: int | None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> None:
    """Refuse a member before anything of it is read or allocated: its decoded size against
    the limits, its chunk index against the descriptor and the file (``name``: the member as
    messages name it)."""
    check_index(
        member.index,
        member.descriptor,
        name=name,
        payload_start=payload_start,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
        file_size=file_size,
    )


def check_chunk(
    member: Member, chunk_id: int, stream: bytes | memoryview | None, *, name: str
) -> bytes | memoryview:
    """A stored chunk's length, CRC and stream header (kind, dtype, ndim, shape) against the
    member (:func:`medmask.format.encoding.check_stored_chunk`); the stream."""
    return check_stored_chunk(member.descriptor, member.index, chunk_id, stream, name=name)


def structure_roi(descriptor: MaskDescriptor, values: Collection[int]) -> Roi | None:
    """The smallest region holding the stored bounding boxes of the labels ``values``; None
    when none of them has voxels."""
    boxes = [e.bbox for e in descriptor.labels if e.value in values and e.bbox is not None]
    if not boxes:
        return None
    z, y, x = (
        slice(min(b[a][0] for b in boxes), max(b[a][1] for b in boxes) + 1) for a in range(3)
    )
    return (z, y, x)


def check_label_counts(
    descriptor: MaskDescriptor,
    values: Collection[int],
    roi: Roi,
    block: npt.NDArray[Any],
    *,
    name: str,
) -> None:
    """Refuse a structure read whose labels' stored bounding boxes do not hold exactly their
    stored voxel counts (``block``: the decoded ``roi``, which covers those boxes): reads
    decoded inside a stored bbox would otherwise return a wrong structure silently."""
    for entry in descriptor.labels:
        if entry.value not in values or entry.value == 0:
            continue
        found = 0
        if entry.bbox is not None:
            inner = tuple(
                slice(lo - r.start, hi + 1 - r.start)
                for (lo, hi), r in zip(entry.bbox, roi, strict=True)
            )
            found = int(np.count_nonzero(block[inner] == entry.value))
        check_label_count(entry, found, name=name)


def count_in_bbox(
    member: Member,
    entry: LabelEntry,
    chunk_id: int,
    stream: bytes | memoryview | None,
    *,
    name: str,
) -> int:
    """Voxels of ``entry`` in one stored chunk of ``member``, inside the entry's stored bbox
    (the chunk checked and decoded there only): summed over the chunks of the bbox, what
    :func:`check_label_count` compares with the stored count."""
    assert entry.bbox is not None
    box = member.descriptor.chunk_box(chunk_id)
    z, y, x = (
        slice(max(b.start, lo), min(b.stop, hi + 1))
        for b, (lo, hi) in zip(box, entry.bbox, strict=True)
    )
    streams = {} if stream is None else {chunk_id: stream}
    block = decode_region(member.descriptor, member.index, (z, y, x), streams, name=name)
    return int(np.count_nonzero(block == entry.value))


def check_label_count(entry: LabelEntry, found: int, *, name: str) -> None:
    """Refuse ``found`` voxels of ``entry`` inside its stored bbox unless it is its count."""
    if found != entry.count:
        raise FormatError(
            f"{name}: label {entry.name!r} (value {entry.value}): expected the "
            f"{entry.count:,} voxels its metadata lists inside its stored bbox "
            f"{entry.bbox}. Got {found:,}; the label statistics are wrong (the file is "
            "corrupted or was written by a faulty writer)."
        )


def labels_have_gaps(descriptor: MaskDescriptor) -> bool:
    """Whether some value between 1 and the largest label is no label: then checking decoded
    voxels needs their distinct values (:func:`check_decoded_values`), not only their maximum."""
    values = {e.value for e in descriptor.labels} - {0}
    return len(values) != max(values, default=0)


def check_decoded_values(
    data: npt.NDArray[Any],
    descriptor: MaskDescriptor,
    *,
    name: str,
    present: Present | None = None,
) -> None:
    """Raise :class:`FormatError` if decoded voxels hold a value no label lists (0 is always
    allowed): what a :class:`SegmentationMask` could not hold.

    ``present``: the decoded chunks' distinct values (collect them when
    :func:`labels_have_gaps`); without them, or where a codec could not give them, the voxels
    are scanned.
    """
    if data.size == 0:
        return
    allowed = np.array(sorted({0, *(e.value for e in descriptor.labels)}), dtype=np.uint64)
    top = int(allowed[-1])
    if not labels_have_gaps(descriptor):  # labels 1..top: the maximum says it all
        largest = int(data.max())
        bad = [largest] if largest > top else []
    elif present is not None and all(p is not None for p in present):
        found = np.unique(np.concatenate([np.zeros(0, np.uint64), *present]))
        bad = found[~np.isin(found, allowed)][:10].tolist()
    else:
        ok = match_allowed_values(data, allowed)
        bad = [] if ok.all() else np.unique(data[~ok])[:10].tolist()
    if bad:
        raise FormatError(
            f"{name}: decoded voxels hold values {bad} that no label lists; the file is "
            "corrupted or was written by a faulty writer (MaskFile.read_array() returns the "
            "raw voxels)."
        )


def verify_decoded(data: npt.NDArray[Any], descriptor: MaskDescriptor, *, name: str) -> list[str]:
    """Compare decoded voxels with the stored per-label counts and bounding boxes."""
    stats = label_stats(data)
    listed = {e.value for e in descriptor.labels}
    problems = []
    for entry in descriptor.labels:
        if entry.value == 0:
            count = int(data.size) - sum(s.count for s in stats.values())
            bbox = None
        else:
            stat = stats.get(entry.value)
            count, bbox = (0, None) if stat is None else (stat.count, stat.bbox)
        if count != entry.count:
            problems.append(
                f"{name}: label {entry.name!r} (value {entry.value}) has {count:,} voxels; "
                f"the metadata says {entry.count:,}."
            )
        if entry.value != 0 and bbox != entry.bbox:
            problems.append(
                f"{name}: label {entry.name!r} (value {entry.value}) has bbox {bbox}; "
                f"the metadata says {entry.bbox}."
            )
    unlisted = sorted(v for v in stats if v not in listed)
    if unlisted:
        problems.append(f"{name}: voxels hold values {unlisted[:10]} that no label lists.")
    return problems


def mask_from_region(
    descriptor: MaskDescriptor, space: Space, data: npt.NDArray[Any], roi: Roi
) -> SegmentationMask:
    """Wrap decoded voxels of ``roi`` in a SegmentationMask with the cropped space."""
    full = all(r.start == 0 and r.stop == s for r, s in zip(roi, descriptor.shape, strict=True))
    if not full:
        space = space.apply_bbox(np.array([[r.start, r.stop] for r in roi]))
    return SegmentationMask._trusted(
        data, descriptor.mapping, space, descriptor.bit_depth, descriptor.attributes
    )


def decode_unstored(
    descriptor: MaskDescriptor,
    index: npt.NDArray[Any],
    streams: dict[int, bytes],
    roi: Roi,
    *,
    name: str,
    present: Present | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> npt.NDArray[Any]:
    """Decode ``roi`` of a mask held in memory (an archive member not yet written), with the
    limits and chunk checks of a stored one."""
    check_limits(descriptor, name=name, max_voxels=max_voxels, max_bytes=max_bytes)
    return decode_region(
        descriptor, index, roi, streams, name=name, present=present, executor=chunk_executor()
    )


# --- the engine -----------------------------------------------------------------------------


@dataclass
class OpenedFile:
    """A stored ``.msk`` or ``.mska`` opened for reading voxels.

    ``read`` fetches byte ranges (merged, served from the first read where it covers them);
    ``payload_start`` and ``file_size`` bound where chunk streams may lie; ``max_voxels`` /
    ``max_bytes`` bound one decoded member (``docs/format.md``, section 6).
    """

    name: str
    read: RangeReader
    payload_start: int
    file_size: int | None = None
    max_voxels: int | None = None
    max_bytes: int | None = None
    _checked: set[int] = field(default_factory=set, repr=False)

    @classmethod
    def open(
        cls,
        source: ByteSource,
        directory: Directory,
        *,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> OpenedFile:
        """The engine over ``source``, whose directory (and first read) is ``directory``."""
        head = directory.head

        def read(ranges: Sequence[tuple[int, int]]) -> list[bytes]:
            return read_ranges_after_head(source, head, ranges)

        return cls(source.name, read, directory.payload_start, source.size, max_voxels, max_bytes)

    def where(self, member: Member) -> str:
        """The member as messages name it."""
        return member_name(self.name, member)

    def check(self, member: Member) -> None:
        """:func:`check_member` with this file's limits and size (once per member)."""
        if id(member) in self._checked:
            return
        check_member(
            member,
            name=self.where(member),
            payload_start=self.payload_start,
            file_size=self.file_size,
            max_voxels=self.max_voxels,
            max_bytes=self.max_bytes,
        )
        self._checked.add(id(member))

    def iter_regions(
        self,
        reads: Sequence[tuple[Member, Roi]],
        present: Sequence[Present | None] | None = None,
    ) -> Iterator[npt.NDArray[Any]]:
        """Decode each ``(member, roi)`` in turn (lazily: one decoded region alive at a time
        if the caller drops it); every member is checked and every chunk fetched first, in
        one merged read. ``present[i]`` collects read ``i``'s chunks' distinct values."""
        for member, _ in reads:
            self.check(member)
        wanted: dict[int, dict[int, None]] = {}
        for member, roi in reads:
            ids = wanted.setdefault(id(member), {})
            ids.update(dict.fromkeys(member.descriptor.chunks_in(roi)))
        members = {id(member): member for member, _ in reads}
        plan = [(key, chunk_ranges(members[key].index, sorted(ids))) for key, ids in wanted.items()]
        spans = [(start, end) for _, ranges in plan for _, start, end in ranges]
        blobs = iter(self.read(spans) if spans else ())
        streams: dict[int, dict[int, bytes | memoryview]] = {
            key: {chunk_id: next(blobs) for chunk_id, _, _ in ranges} for key, ranges in plan
        }
        for i, (member, roi) in enumerate(reads):
            yield decode_region(
                member.descriptor,
                member.index,
                roi,
                streams[id(member)],
                name=self.where(member),
                present=None if present is None else present[i],
                executor=chunk_executor(),
            )

    def read_region(
        self, member: Member, roi: Roi, *, present: Present | None = None
    ) -> npt.NDArray[Any]:
        """Decode ``roi`` of ``member`` (raw voxels)."""
        return next(self.iter_regions([(member, roi)], None if present is None else [present]))

    def iter_labels(
        self, reads: Sequence[tuple[Member, Collection[int]]]
    ) -> Iterator[tuple[Roi, npt.NDArray[Any]] | None]:
        """Per ``(member, label values)``: the region around those labels' stored bounding
        boxes and its decoded voxels, after checking that each box holds exactly its label's
        stored count (:func:`check_label_counts`); None when none of the labels has voxels."""
        rois = [structure_roi(member.descriptor, values) for member, values in reads]
        todo = [(read, roi) for read, roi in zip(reads, rois, strict=True) if roi is not None]
        blocks = self.iter_regions([(member, roi) for (member, _), roi in todo])
        for (member, values), roi in zip(reads, rois, strict=True):
            if roi is None:
                yield None
                continue
            block = next(blocks)
            check_label_counts(member.descriptor, values, roi, block, name=self.where(member))
            yield roi, block


class StoredArray:
    """The array protocol (``dask.array.from_array``, ``np.asarray``) of a stored mask:
    ``shape``/``dtype``/``chunks`` from its descriptor; indexing decodes only the chunks it
    touches."""

    @property
    def descriptor(self) -> MaskDescriptor:
        raise NotImplementedError

    def _read_roi(self, roi: Roi | None) -> npt.NDArray[Any]:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x)."""
        return self.descriptor.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Storage dtype."""
        return self.descriptor.dtype

    @property
    def ndim(self) -> int:
        """3."""
        return 3

    @property
    def chunks(self) -> tuple[int, int, int]:
        """The chunk shape (z, y, x)."""
        return self.descriptor.chunks

    def __getitem__(self, key: object) -> npt.NDArray[Any]:
        """Basic indexing (ints, slices, ``...``)."""
        roi, post = index_to_roi(key, self.shape)
        return self._read_roi(roi)[post]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        data = self._read_roi(None)
        return data if dtype is None else data.astype(dtype)
