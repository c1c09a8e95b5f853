"""The one table of the kinds of file medmask reads and writes by name: for each kind its
suffixes, a reader and a writer, and :func:`kind_of` (by name, else by the first bytes).

:func:`medmask.load_mask` / :func:`medmask.save_mask` (:mod:`medmask.files`) and the command
line dispatch through :data:`CONVERTERS`; nothing else keeps a table of kinds. Suffixes and
magic numbers live in :mod:`medmask.format.sniff`. The readers and writers below are thin
adapters to one calling convention that import their module on call, so the NIfTI and DICOM
modules and their optional dependencies load only when a file of their kind is read or written.

Adding a converter (say NRRD) takes four edits:

1. ``interop/nrrd.py`` with ``from_nrrd`` and ``to_nrrd``, importing its optional library
   (``pynrrd``) inside the functions;
2. one :class:`Converter` in :data:`CONVERTERS`, with its two adapters beside the others
   (``_read_nrrd`` / ``_write_nrrd``: import ``.nrrd`` inside, call ``from_nrrd`` /
   ``to_nrrd``; their keyword options listed in ``read_options`` / ``write_options``);
3. in ``format/sniff.py``: ``"nrrd"`` in ``Kind`` and ``KINDS``, its suffixes in ``SUFFIXES``
   and, if it has one, its magic in ``sniff``;
4. an ``nrrd`` extra in ``pyproject.toml``.

``medmask.load_mask``/``save_mask`` and ``medmask convert``/``info``/``ls`` then take it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from ..errors import InvalidValueError
from ..format.sniff import SNIFF_BYTES, SUFFIXES, Kind, kind_of_suffix, sniff
from ..io import Target, name_suffix, open_source, source_name, stored_size

if TYPE_CHECKING:
    from ..mapping import LabelMapping
    from ..mask import SegmentationMask
    from .dicom import SegmentCodes, SeriesSource

__all__ = [
    "CONVERTERS",
    "Converter",
    "describe_suffixes",
    "from_nibabel",
    "kind_of",
    "kind_of_name",
    "member_name",
    "titles_taking",
    "to_nibabel",
]

StorageOptions = dict[str, Any] | None
#: ``read(source, *, storage_options, **options) -> SegmentationMask``
ReadMask = Callable[..., "SegmentationMask"]
#: ``read_all(source, *, storage_options, **options) -> {member name: SegmentationMask}``
ReadMasks = Callable[..., "dict[str, SegmentationMask]"]
#: ``write(mask, target, *, storage_options, overwrite, **options) -> bytes written``
WriteMask = Callable[..., int]
#: ``write_all({member name: mask}, target, *, storage_options, overwrite, **options) -> bytes``
WriteMasks = Callable[..., int]


@dataclass(frozen=True)
class Converter:
    """How medmask reads and writes one kind of file.

    A kind that holds one mask has ``read`` and ``write``; a kind that holds many (an archive)
    has ``read_all`` and ``write_all`` instead.

    Attributes
    ----------
    kind
        The kind, one of :data:`medmask.format.sniff.KINDS`.
    title
        How messages and ``medmask info`` name it (``"NIfTI"``).
    read_options, write_options
        The keyword options its reader and its writer take besides ``storage_options`` (and
        the writer's ``overwrite``).
    """

    kind: Kind
    title: str
    read: ReadMask | None = None
    write: WriteMask | None = None
    read_all: ReadMasks | None = None
    write_all: WriteMasks | None = None
    read_options: frozenset[str] = frozenset()
    write_options: frozenset[str] = frozenset()

    @property
    def suffixes(self) -> tuple[str, ...]:
        """File-name suffixes of the kind (lower case, ``.nii.gz`` as one)."""
        return SUFFIXES[self.kind]

    def read_masks(
        self, source: Target, *, storage_options: StorageOptions = None, **options: Any
    ) -> dict[str, SegmentationMask]:
        """Every mask of ``source`` by member name; a one-mask file's is :func:`member_name`."""
        if self.read_all is not None:
            return self.read_all(source, storage_options=storage_options, **options)
        assert self.read is not None  # each entry has read or read_all
        mask = self.read(source, storage_options=storage_options, **options)
        return {member_name(source): mask}


def member_name(source: Target) -> str:
    """The name a one-mask file gives its mask in an archive: its file name without suffix
    (and without a URL's query, as :func:`medmask.io.name_suffix` reads it)."""
    path = source_name(source).split("?", 1)[0]
    stem = path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    suffix = name_suffix(source)
    return stem[: -len(suffix)] if suffix else stem


# --- adapters: one calling convention, each module imported on call ---------------------------


def _read_msk(
    source: Target,
    *,
    storage_options: StorageOptions = None,
    roi: object = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    from ..api import load_msk as load_mask

    return load_mask(
        source,
        roi=roi,
        storage_options=storage_options,
        max_voxels=max_voxels,
        max_bytes=max_bytes,
    )


def _write_msk(
    mask: SegmentationMask,
    target: Target,
    *,
    storage_options: StorageOptions = None,
    overwrite: bool = True,
    level: int | None = None,
    chunks: object = None,
    attributes: Mapping[str, Any] | None = None,
    codec: str | Mapping[str, Any] | None = None,
) -> int:
    from ..api import save_msk as save_mask

    return save_mask(
        mask,
        target,
        level=level,
        chunks=chunks,
        attributes=attributes,
        storage_options=storage_options,
        overwrite=overwrite,
        codec=codec,
    )


def _read_mska(
    source: Target, *, storage_options: StorageOptions = None
) -> dict[str, SegmentationMask]:
    from ..archive import MaskArchive

    with MaskArchive(source, storage_options=storage_options) as archive:
        return archive.read_all_masks()


def _write_mska(
    masks: Mapping[str, SegmentationMask],
    target: Target,
    *,
    storage_options: StorageOptions = None,
    overwrite: bool = True,
    level: int | None = None,
) -> int:
    from ..archive import MaskArchive

    if not masks:
        raise InvalidValueError(f"{source_name(target)}: no masks to write.")
    space = next(iter(masks.values())).space
    with MaskArchive(
        target, "w", space=space, storage_options=storage_options, overwrite=overwrite
    ) as archive:
        for name, mask in masks.items():
            archive.add_segmask(mask, name, level=level)
    return stored_size(target, storage_options)


def _read_nifti(
    source: Target,
    *,
    storage_options: StorageOptions = None,
    mapping: LabelMapping | Mapping[str, int] | Target | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    from .nifti import from_nifti

    return from_nifti(source, mapping, storage_options=storage_options, max_bytes=max_bytes)


def _write_nifti(
    mask: SegmentationMask,
    target: Target,
    *,
    storage_options: StorageOptions = None,
    overwrite: bool = True,
) -> int:
    from .nifti import to_nifti

    return to_nifti(mask, target, storage_options=storage_options, overwrite=overwrite)


def to_nibabel(mask: SegmentationMask) -> Any:
    """:func:`medmask.interop.nifti.to_nibabel`, its module (and nibabel) loaded on use."""
    from .nifti import to_nibabel as image_of

    return image_of(mask)


def from_nibabel(img: Any, mapping: Any = None, *, labels: Any = None) -> SegmentationMask:
    """:func:`medmask.interop.nifti.from_nibabel`, its module loaded on use."""
    from .nifti import from_nibabel as mask_of

    return mask_of(img, mapping, labels=labels)


def _read_dicom(
    source: Target, *, storage_options: StorageOptions = None, max_bytes: int | None = None
) -> SegmentationMask:
    from .dicom import from_dicom_seg

    return from_dicom_seg(source, storage_options=storage_options, max_bytes=max_bytes)


def _write_dicom(
    mask: SegmentationMask,
    target: Target,
    *,
    storage_options: StorageOptions = None,
    overwrite: bool = True,
    series: SeriesSource | None = None,
    algorithm_name: str | None = None,
    algorithm_version: str = "unknown",
    segment_codes: SegmentCodes | None = None,
) -> int:
    """A DICOM SEG refers to its source series: ``to_dicom_seg`` aligns the mask onto the
    series' grid (e.g. a NIfTI's flipped rows) and codes the segments."""
    if series is None:
        raise InvalidValueError(
            f"{source_name(target)}: a DICOM SEG needs its source series; use "
            "medmask.interop.dicom.to_dicom_seg(mask, series, target)."
        )
    from .dicom import to_dicom_seg

    return to_dicom_seg(
        mask,
        series,
        target,
        overwrite=overwrite,
        storage_options=storage_options,
        segment_codes=segment_codes,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
    )


# --- the registry -----------------------------------------------------------------------------

#: The converter of each kind, in the order of :data:`medmask.format.sniff.KINDS`.
CONVERTERS: Final[Mapping[Kind, Converter]] = MappingProxyType(
    {
        "msk": Converter(
            "msk",
            "medmask .msk",
            read=_read_msk,
            write=_write_msk,
            read_options=frozenset({"roi", "max_voxels", "max_bytes"}),
            write_options=frozenset({"level", "chunks", "attributes", "codec"}),
        ),
        "mska": Converter(
            "mska",
            "medmask .mska",
            read_all=_read_mska,
            write_all=_write_mska,
            write_options=frozenset({"level"}),
        ),
        "nifti": Converter(
            "nifti",
            "NIfTI",
            read=_read_nifti,
            write=_write_nifti,
            read_options=frozenset({"mapping", "max_bytes"}),
        ),
        "dicom": Converter(
            "dicom",
            "DICOM SEG",
            read=_read_dicom,
            write=_write_dicom,
            read_options=frozenset({"max_bytes"}),
            write_options=frozenset(
                {"series", "algorithm_name", "algorithm_version", "segment_codes"}
            ),
        ),
    }
)


def kind_of_name(target: Target) -> Kind | None:
    """The kind ``target``'s name says (its suffix), or None."""
    return kind_of_suffix(name_suffix(target))


def kind_of(target: Target, storage_options: StorageOptions = None) -> Kind | None:
    """The kind of a file: by its name, else by its first :data:`SNIFF_BYTES` bytes (one
    small read); None when neither tells."""
    kind = kind_of_name(target)
    if kind is not None:
        return kind
    byte_source = open_source(target, storage_options)
    try:
        head = byte_source.read(0, SNIFF_BYTES)
    finally:
        byte_source.close()
    return sniff(head)


def describe_suffixes() -> str:
    """Every suffix medmask knows, for messages: ``".msk, .mska, .nii, .nii.gz or .dcm"``."""
    names = [suffix for converter in CONVERTERS.values() for suffix in converter.suffixes]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def titles_taking(option: str) -> str:
    """The titles of the kinds whose reader takes ``option``, for messages (``"NIfTI"``)."""
    return " or ".join(c.title for c in CONVERTERS.values() if option in c.read_options)
