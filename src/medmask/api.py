"""Reading and writing ``.msk`` files: ``save_mask``, ``load_mask``, ``read_info``, ``MaskFile``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from .errors import (
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    LegacyFormatError,
    MedmaskError,
)
from .format.descriptor import LabelEntry, MaskDescriptor, Roi, index_to_roi, parse_roi
from .format.encoding import (
    check_index,
    chunk_ranges,
    decode_region,
    encode_mask,
    max_bytes_limit,
)
from .format.legacy import read_legacy_msk
from .format.msk import build_msk
from .io import (
    HEAD_GUESS,
    MAX_CONCURRENCY,
    ByteSource,
    Target,
    name_suffix,
    open_source,
    read_heads,
    read_ranges_after_head,
    read_whole,
    source_name,
    write_atomic,
)
from .mapping import LabelMapping
from .mask import SegmentationMask
from .reader import Directory, read_directory
from .values import label_stats, match_allowed_values

__all__ = [
    "MaskFile",
    "MaskInfo",
    "check_decoded_values",
    "known_size",
    "labels_have_gaps",
    "load_legacy_mask",
    "load_mask",
    "read_info",
    "read_infos",
    "save_mask",
    "verify_decoded",
]


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


def read_chunks(
    source: ByteSource,
    descriptor: MaskDescriptor,
    index: npt.NDArray[Any],
    roi: Roi,
    *,
    payload_start: int,
    max_voxels: int | None,
    max_bytes: int | None = None,
    head: bytes = b"",
    present: list[npt.NDArray[Any] | None] | None = None,
) -> npt.NDArray[Any]:
    """Fetch and decode the chunks of ``roi`` (one merged read per run of adjacent chunks;
    none for chunks inside ``head``, the file's first read)."""
    check_index(
        index,
        descriptor,
        name=source.name,
        payload_start=payload_start,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
        file_size=source.size,
    )
    ranges = chunk_ranges(index, descriptor.chunks_in(roi))
    wanted = [(s, e) for _, s, e in ranges]
    blobs = read_ranges_after_head(source, head, wanted) if head else source.read_ranges(wanted)
    streams = {chunk_id: blob for (chunk_id, _, _), blob in zip(ranges, blobs, strict=True)}
    return decode_region(descriptor, index, roi, streams, name=source.name, present=present)


def mask_from_region(
    descriptor: MaskDescriptor, space: Space, data: npt.NDArray[Any], roi: Roi
) -> SegmentationMask:
    """Wrap decoded voxels of ``roi`` in a SegmentationMask with the cropped space."""
    full = all(r.start == 0 and r.stop == s for r, s in zip(roi, descriptor.shape, strict=True))
    if not full:
        space = space.apply_bbox(np.array([[r.start, r.stop] for r in roi]))
    return SegmentationMask._trusted(data, descriptor.mapping, space, descriptor.bit_depth)


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
    present: list[npt.NDArray[Any] | None] | None = None,
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


def known_size(source: ByteSource, head: bytes) -> int | None:
    """The size of ``source`` if known: from the source, or a first read shorter than asked."""
    if source.size is not None:
        return source.size
    return len(head) if len(head) < HEAD_GUESS else None


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


class MaskFile(StoredArray):
    """Lower-level access to one ``.msk`` file: metadata, ROI reads, chunk byte ranges.

    The header, metadata and chunk index are read once, on opening (one request when they fit
    in the first 64 KiB). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        source: Target,
        *,
        storage_options: dict[str, Any] | None = None,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._source = open_source(source, storage_options)
        self._max_voxels = max_voxels
        self._max_bytes = max_bytes
        try:
            self._directory: Directory = read_directory(self._source, kind="msk")
        except BaseException:
            self._source.close()
            raise
        self._member = self._directory.members[0]

    @property
    def name(self) -> str:
        """Path or URL of the file."""
        return self._source.name

    @property
    def file_size(self) -> int | None:
        """File size in bytes, when known without another request (None: a remote file
        larger than the first read)."""
        return known_size(self._source, self._directory.head)

    @property
    def descriptor(self) -> MaskDescriptor:
        """Parsed metadata."""
        return self._member.descriptor

    @property
    def index(self) -> npt.NDArray[Any]:
        """Chunk index (offset, length, crc per chunk)."""
        return self._member.index

    @property
    def metadata(self) -> dict[str, Any]:
        """Raw metadata JSON object."""
        return self._directory.metadata

    @property
    def space(self) -> Space:
        """Geometry, (z, y, x), LPS."""
        assert self.descriptor.space is not None  # required by .msk parsing
        return self.descriptor.space

    @property
    def mapping(self) -> LabelMapping:
        """Label names."""
        return self.descriptor.mapping

    def info(self) -> MaskInfo:
        """Metadata and sizes without decoding."""
        return info_from(self.descriptor, self.index, self.name)

    def read_array(self, roi: object = None) -> npt.NDArray[Any]:
        """Decode the array, or only ``roi`` (3 slices, z/y/x), reading only its chunks.

        The raw voxels: unlike :meth:`read`, values are not checked against the labels.
        """
        return self._read_region(parse_roi(roi, self.descriptor.shape))

    def _read_region(
        self, region: Roi, present: list[npt.NDArray[Any] | None] | None = None
    ) -> npt.NDArray[Any]:
        return read_chunks(
            self._source,
            self.descriptor,
            self.index,
            region,
            payload_start=self._directory.payload_start,
            max_voxels=self._max_voxels,
            max_bytes=self._max_bytes,
            head=self._directory.head,
            present=present,
        )

    def read(self, roi: object = None) -> SegmentationMask:
        """Decode into a :class:`SegmentationMask` (cropped, with cropped space, for ``roi``)."""
        region = parse_roi(roi, self.descriptor.shape)
        present: list[npt.NDArray[Any] | None] | None = (
            [] if labels_have_gaps(self.descriptor) else None
        )
        data = self._read_region(region, present)
        check_decoded_values(data, self.descriptor, name=self.name, present=present)
        return mask_from_region(self.descriptor, self.space, data, region)

    def verify(self) -> list[str]:
        """Decode everything and compare it with the stored label counts and bounding boxes.

        Returns the problems found (empty when the file is sound); checksum and format errors
        are reported in the list too.
        """
        try:
            data = self.read_array()
        except MedmaskError as exc:
            return [str(exc)]
        return verify_decoded(data, self.descriptor, name=self.name)

    def _read_roi(self, roi: Roi | None) -> npt.NDArray[Any]:
        return self.read_array(roi)

    def chunk_byte_range(self, chunk_id: int) -> tuple[int, int] | None:
        """``(start, end)`` of a chunk's stream in the file, or None for an all-zero chunk."""
        entry = self.index[chunk_id]
        length = int(entry["length"])
        return None if length == 0 else (int(entry["offset"]), int(entry["offset"]) + length)

    def close(self) -> None:
        """Release the file."""
        self._source.close()

    def __enter__(self) -> MaskFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        d = self.descriptor
        return f"MaskFile({self.name!r}, shape={d.shape}, labels={len(d.labels)})"


def save_mask(
    mask: SegmentationMask,
    target: Target,
    *,
    level: int | None = None,
    chunks: object = None,
    attributes: Mapping[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = True,
    codec: str | Mapping[str, Any] | None = None,
) -> int:
    """Write ``mask`` as a ``.msk`` file; return the number of bytes written.

    ``target`` is a local path, ``pathlib.Path``, fsspec URL (``s3://``, ``gs://``,
    ``memory://``, ``file://``), fsspec ``OpenFile`` or binary file object. Local writes are
    atomic: the old file stays untouched if anything fails. ``chunks`` is None (whole slices,
    about 4 MiB each), a number of z slices, or a (z, y, x) chunk shape; ``level`` trades
    encoding time for size (see ``docs/codecs.md``). ``overwrite=False`` refuses to replace an
    existing file or object (:class:`MaskFileExistsError`), atomically on local files, S3 and
    GCS, so two writers of the same name cannot silently replace each other's result.
    ``codec`` overrides the codec (default ``medmask.edges``; ``"medmask.labels"`` or
    ``"medmask.binary"`` for readers older than it).
    """
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    if name_suffix(target) in (".nii", ".nii.gz", ".mska"):
        raise InvalidValueError(
            f"{source_name(target)}: medmask.api.save_mask writes .msk bytes, not "
            f"{name_suffix(target)}; use medmask.save_mask (by extension), medmask.to_nifti "
            "or MaskArchive."
        )
    encoded = encode_mask(mask, level=level, chunks=chunks, attributes=attributes, codec=codec)
    pieces = build_msk(encoded)
    write_atomic(target, pieces, storage_options, overwrite=overwrite)
    return sum(len(p) for p in pieces)


def load_mask(
    source: Target,
    *,
    roi: object = None,
    storage_options: dict[str, Any] | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    """Read a ``.msk`` file (or only ``roi``: three slices in (z, y, x)).

    ``max_voxels``/``max_bytes`` bound the decoded size (defaults in ``docs/format.md``).
    """
    options = {"max_voxels": max_voxels, "max_bytes": max_bytes}
    try:
        with MaskFile(source, storage_options=storage_options, **options) as f:
            return f.read(roi)
    except LegacyFormatError as exc:
        if exc.kind != "msk":
            raise
    return load_legacy_mask(source, roi=roi, storage_options=storage_options, **options)


def load_legacy_mask(
    source: Target,
    *,
    roi: object = None,
    storage_options: dict[str, Any] | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    """Read a medmask 0.1 ``.msk`` file (whole: 0.1 had no chunks), optionally only ``roi``."""
    name = source_name(source)
    data = read_whole(source, storage_options, max_bytes_limit(max_bytes))
    legacy = read_legacy_msk(data, name=name, max_voxels=max_voxels, max_bytes=max_bytes)
    mask = legacy.to_mask(name)
    region = parse_roi(roi, mask.shape)
    if all(r.start == 0 and r.stop == s for r, s in zip(region, mask.shape, strict=True)):
        return mask
    space = mask.space.apply_bbox(np.array([[r.start, r.stop] for r in region]))
    data_roi = np.ascontiguousarray(mask.data[region])
    return SegmentationMask._trusted(data_roi, mask.mapping, space, mask.bit_depth)


def read_info(
    source: Target,
    *,
    storage_options: dict[str, Any] | None = None,
) -> MaskInfo:
    """Read only the metadata of a ``.msk`` file (one small read): labels, counts, bboxes."""
    with MaskFile(source, storage_options=storage_options) as f:
        return f.info()


def read_infos(
    sources: Sequence[Target],
    *,
    storage_options: dict[str, Any] | None = None,
    max_concurrency: int = MAX_CONCURRENCY,
) -> list[MaskInfo]:
    """:func:`read_info` of many ``.msk`` files: their first reads go out together (at most
    ``max_concurrency`` in flight), so a batch pays one round trip to the store, not one per
    file. The first file that cannot be read raises its error."""
    heads = read_heads(sources, storage_options, max_concurrency=max_concurrency)
    out = []
    for source, head in zip(sources, heads, strict=True):
        if isinstance(head, MedmaskError):
            raise head
        byte_source = open_source(source, storage_options)
        try:
            directory = read_directory(byte_source, kind="msk", head=head)
        finally:
            byte_source.close()
        member = directory.members[0]
        out.append(info_from(member.descriptor, member.index, byte_source.name))
    return out
