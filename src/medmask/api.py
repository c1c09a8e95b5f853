"""Reading and writing ``.msk`` files: ``save_mask``, ``load_mask``, ``read_info``, ``MaskFile``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from ._deprecate import deprecated_alias
from ._workers import chunk_executor
from .config import max_bytes_limit
from .engine import (
    MaskInfo,
    OpenedFile,
    StoredArray,
    check_decoded_values,
    info_from,
    known_size,
    labels_have_gaps,
    mask_from_region,
    verify_decoded,
)
from .errors import (
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    LegacyFormatError,
    MedmaskError,
)
from .format.descriptor import MaskDescriptor, Roi, parse_roi
from .format.encoding import encode_mask
from .format.legacy import read_legacy_msk
from .format.msk import build_msk
from .format.sniff import SNIFF_BYTES, sniff
from .io import (
    ByteSource,
    FsspecSource,
    ObjectChangedError,
    Target,
    name_suffix,
    open_source,
    read_heads,
    read_whole,
    source_name,
    write_atomic,
)
from .mapping import LabelMapping
from .mask import SegmentationMask
from .reader import Directory, read_directory

__all__ = [
    "MaskFile",
    "MaskInfo",
    "check_decoded_values",
    "known_size",
    "labels_have_gaps",
    "load_legacy_mask",
    "load_msk",
    "open_msk",
    "read_info",
    "read_infos",
    "save_msk",
    "verify_decoded",
]


#: The call that reads each kind of file :class:`MaskFile` and :func:`read_info` do not (they
#: read one ``.msk``), for their error; :func:`load_mask` picks the reader by the file's name.
_READ_BY = {
    "mska": "medmask.MaskArchive(path) reads it (.info() gives each member's metadata, "
    ".load_segmask(name) a member)",
    "nifti": "medmask.load_mask(path, mapping=...) reads NIfTI files named .nii or .nii.gz "
    "(mapping names their label values)",
    "dicom": "medmask.load_mask(path) reads a DICOM SEG named .dcm",
}


def _msk_directory(source: ByteSource, head: bytes | None = None) -> Directory:
    """A ``.msk`` file's directory; for a file of another kind that medmask reads, the
    :class:`FormatError` also names the call that reads it."""
    try:
        return read_directory(source, kind="msk", head=head)
    except LegacyFormatError:
        raise  # names its reader already
    except FormatError as exc:
        first = head[:SNIFF_BYTES] if head else source.read(0, SNIFF_BYTES)
        reader = _READ_BY.get(str(sniff(first)))
        if reader is None:
            raise
        raise FormatError(f"{str(exc).rstrip('.')}; {reader}.") from exc


class MaskFile(StoredArray):
    """Lower-level access to one ``.msk`` file: metadata, ROI reads, chunk byte ranges.

    The header, metadata and chunk index are read once, on opening (one request when they fit
    in the first 64 KiB). Use as a context manager or call :meth:`close`.

    The file is pinned to the directory it read: chunks of an object replaced while it is
    open fail their checksums (or are found truncated). On S3 the head is kept with the
    object's ETag for :func:`load_msk` to re-use (docs/remote.md).
    """

    def __init__(
        self,
        source: Target,
        *,
        storage_options: dict[str, Any] | None = None,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        byte_source = open_source(source, storage_options, pinned=True)
        self._attach(byte_source, None, max_voxels, max_bytes)

    @classmethod
    def _from_head(
        cls,
        byte_source: ByteSource,
        head: bytes,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> MaskFile:
        """A file opened from a head already read (the source's reads check its version)."""
        opened = cls.__new__(cls)
        opened._attach(byte_source, head, max_voxels, max_bytes)
        return opened

    def _attach(
        self,
        byte_source: ByteSource,
        head: bytes | None,
        max_voxels: int | None,
        max_bytes: int | None,
    ) -> None:
        self._source = byte_source
        try:
            self._directory: Directory = _msk_directory(self._source, head)
        except BaseException:
            self._source.close()
            raise
        if head is None and isinstance(byte_source, FsspecSource) and byte_source.version:
            # read by this source, at that version: safe to re-use once checked again
            byte_source.cache.put_versioned(
                byte_source.cache_key, self._directory.head, byte_source.version
            )
        self._member = self._directory.members[0]
        self._engine = OpenedFile.open(
            self._source, self._directory, max_voxels=max_voxels, max_bytes=max_bytes
        )

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
        return self._engine.read_region(self._member, region, present=present)

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


def save_msk(
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

    :func:`medmask.save_mask` calls this for every name that is not NIfTI or DICOM.

    ``target`` is a local path, ``pathlib.Path``, fsspec URL (``s3://``, ``gs://``,
    ``memory://``, ``file://``), fsspec ``OpenFile`` or binary file object. Local writes are
    atomic: the old file stays untouched if anything fails. ``chunks`` is None (whole slices,
    about 4 MiB each), a number of z slices, or a (z, y, x) chunk shape; ``level`` trades
    encoding time for size (see ``docs/codecs.md``). ``overwrite=False`` refuses to replace an
    existing file or object (:class:`MaskFileExistsError`), atomically on local files, S3 and
    GCS, so two writers of the same name cannot silently replace each other's result.
    ``codec`` overrides the codec (default ``medmask.edges``; ``"medmask.labels"`` or
    ``"medmask.binary"`` for readers older than it). ``attributes`` (JSON values) are stored
    with ``mask.attributes``, overriding them key by key; :func:`load_msk` restores them.
    """
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    if name_suffix(target) in (".nii", ".nii.gz", ".mska"):
        raise InvalidValueError(
            f"{source_name(target)}: medmask.api.save_msk writes .msk bytes, not "
            f"{name_suffix(target)}; use medmask.save_mask (by extension), medmask.to_nifti "
            "or MaskArchive."
        )
    encoded = encode_mask(
        mask,
        level=level,
        chunks=chunks,
        attributes=attributes,
        codec=codec,
        executor=chunk_executor(),
    )
    pieces = build_msk(encoded)
    write_atomic(target, pieces, storage_options, overwrite=overwrite)
    return sum(len(p) for p in pieces)


def load_msk(
    source: Target,
    *,
    roi: object = None,
    storage_options: dict[str, Any] | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    """Read a ``.msk`` file (or only ``roi``: three slices in (z, y, x)); medmask 0.1 ``.msk``
    files too. :func:`medmask.load_mask` calls this for every name that is not NIfTI or DICOM.

    ``max_voxels``/``max_bytes`` bound the decoded size (defaults in ``docs/format.md``).
    """
    options = {"max_voxels": max_voxels, "max_bytes": max_bytes}
    reused = _load_from_kept_head(source, roi, storage_options, max_voxels, max_bytes)
    if reused is not None:
        return reused
    opened = open_msk(source, storage_options=storage_options, **options)
    if opened is None:
        return load_legacy_mask(source, roi=roi, storage_options=storage_options, **options)
    with opened as f:
        return f.read(roi)


def _load_from_kept_head(
    source: Target,
    roi: object,
    storage_options: dict[str, Any] | None,
    max_voxels: int | None,
    max_bytes: int | None,
) -> SegmentationMask | None:
    """:func:`load_msk` from the head an earlier open of the same S3 object kept with its
    ETag (:meth:`~medmask.io.HeadCache.get_versioned`): the chunk read checks the ETag (a
    read the head covers entirely costs a one-byte read for it). None when no head is kept
    or the object was replaced (its kept head is then dropped)."""
    if not isinstance(source, str):
        return None
    byte_source = open_source(source, storage_options, pinned=True)
    if not isinstance(byte_source, FsspecSource) or not byte_source.pinned:
        byte_source.close()
        return None
    kept = byte_source.cache.get_versioned(byte_source.cache_key)
    if kept is None:
        byte_source.close()
        return None
    head, version = kept
    byte_source.expect_version(version)
    try:
        with MaskFile._from_head(byte_source, head, max_voxels, max_bytes) as opened:
            mask = opened.read(roi)
            if not byte_source.confirmed:
                byte_source.confirm()
            return mask
    except ObjectChangedError:
        byte_source.cache.drop(byte_source.cache_key)
        return None


def open_msk(
    source: Target,
    *,
    storage_options: dict[str, Any] | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> MaskFile | None:
    """Open a ``.msk`` file as a :class:`MaskFile`, or return None when it is a medmask 0.1
    ``.msk``, which only :func:`load_legacy_mask` reads (whole, read-only)."""
    try:
        return MaskFile(
            source, storage_options=storage_options, max_voxels=max_voxels, max_bytes=max_bytes
        )
    except LegacyFormatError as exc:
        if exc.kind != "msk":
            raise
    return None


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
    return SegmentationMask._trusted(data_roi, mask.mapping, space, mask.bit_depth, mask.attributes)


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
    max_concurrency: int | None = None,
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
            directory = _msk_directory(byte_source, head)
        finally:
            byte_source.close()
        member = directory.members[0]
        out.append(info_from(member.descriptor, member.index, byte_source.name))
    return out


# medmask.api.save_mask/load_mask (.msk only) before 0.2: one save_mask/load_mask now, by name
save_mask = deprecated_alias(
    save_msk, "medmask.api.save_mask", "use medmask.save_mask (any format, by name) or save_msk"
)
load_mask = deprecated_alias(
    load_msk, "medmask.api.load_mask", "use medmask.load_mask (any format, by name) or load_msk"
)
