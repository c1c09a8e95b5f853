"""NIfTI (RAS+) <-> medmask (LPS+, (z, y, x) arrays), at any path or fsspec URL.

NIfTI images index voxels (i, j, k) = (x, y, z) with an affine to RAS+ world coordinates
(the sform, else the qform, as nibabel resolves them). medmask arrays are (z, y, x) with an
LPS+ :class:`Space` in the same axis order: reading transposes the array and negates the
affine's x and y rows; writing does the reverse, so a round trip keeps data and affine.
Oblique, flipped and anisotropic grids are exact. Needs the ``nifti`` extra (nibabel).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from ..config import max_bytes_limit
from ..errors import (
    AllocationLimitError,
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    MaskFileExistsError,
    MedmaskError,
    TruncatedFileError,
)
from ..format.encoding import check_size_limits
from ..format.sniff import NIFTI_SUFFIXES, is_gzip
from ..geometry import affine_from_space, space_from_affine
from ..io import (
    Target,
    local_path,
    name_suffix,
    object_version,
    read_whole,
    source_name,
    storage_error,
    write_atomic,
)
from ..mapping import MAX_LABEL, LabelMapping, mapping_items
from ..mask import SegmentationMask
from .labels import default_label_names, integer_labels, to_label_mapping

__all__ = [
    "NIFTI_ATTRIBUTE",
    "NIFTI_SUFFIXES",
    "affine_from_space",
    "from_nibabel",
    "from_nifti",
    "header_codes",
    "read_nifti",
    "space_from_affine",
    "to_nibabel",
    "to_nifti",
    "write_nifti",
]

_NIFTI_INTENT_LABEL = 1002
NIFTI_ATTRIBUTE = "nifti"  # the key of SegmentationMask.attributes that holds header codes


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("NIfTI support needs nibabel: pip install 'medmask[nifti]'") from exc
    return nibabel


_HEADER_SIZES = {348: "Nifti1", 540: "Nifti2"}  # sizeof_hdr -> nibabel class prefix
_HEAD = 544  # a NIfTI-2 header and its 4-byte extension flag
_PIECE = 1 << 20  # gzip output is produced in pieces of at most this size
_GZIP_SLACK = 1 << 20  # bytes a gzip stream may hold past the voxel data (then its CRC is read)
_UNHEARD = logging.Logger("medmask.interop.nifti.header_check")  # not in logging's tree
_UNHEARD.disabled = True


def _header(head: bytes, name: str) -> Any:
    """The NIfTI-1 or NIfTI-2 header at the start of ``head`` (either byte order)."""
    nib = _nibabel()
    kind = None
    for order in ("little", "big"):
        kind = _HEADER_SIZES.get(int.from_bytes(head[:4], order)) if len(head) >= 4 else None
        if kind is not None:
            break
    if kind is None:
        raise FormatError(
            f"{name}: cannot read as NIfTI: expected sizeof_hdr 348 (NIfTI-1) or 540 "
            f"(NIfTI-2). Got the bytes {head[:4]!r}."
        )
    size = 348 if kind == "Nifti1" else 540
    if len(head) < size:
        raise TruncatedFileError(
            f"{name}: the file ends inside the {size}-byte NIfTI header ({len(head)} bytes)."
        )
    try:
        header = getattr(nib, f"{kind}Header")(head[:size], check=False)
        header.check_fix(logger=_UNHEARD)  # nibabel logs what it fixes when it loads the image
        return header
    except Exception as exc:  # nibabel's HeaderDataError and friends
        raise FormatError(f"{name}: cannot read as NIfTI: invalid header ({exc}).") from None


def _check_declared(header: Any, name: str, max_bytes: int, available: int | None) -> int:
    """Check what a header declares before anything is allocated; returns the bytes the file
    must hold (voxel offset plus voxel data).

    The voxels must be integer or float labels, 3-D (a trailing axis of 1 is dropped), within
    the limits (``max_bytes``; voxels: ``MEDMASK_MAX_VOXELS`` or the default) in the dtype
    they are read as, and, when ``available`` (the file's or stream's size) is given, in the
    file.
    """
    dtype = np.dtype(header.get_data_dtype())
    if dtype.fields is not None or dtype.kind not in "uif":
        what = "RGB/RGBA" if dtype.fields is not None else str(dtype)
        raise FormatError(
            f"{name}: expected integer label voxels (or floats holding whole numbers). Got "
            f"{what} voxels (NIfTI datatype {int(header['datatype'])}); medmask stores labels."
        )
    shape = tuple(int(s) for s in header.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise FormatError(f"{name}: expected a 3-D image, got shape {shape}.")
    slope, inter = header.get_slope_inter()
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)  # read as float64
    # scaled voxels are read as float64; a larger stored dtype is held as it is
    held = np.dtype(np.float64) if scaled and dtype.itemsize < 8 else dtype
    check_size_limits(shape, held, name=name, max_bytes=max_bytes)
    offset = int(header.get_data_offset())
    need: int = offset + math.prod(shape) * dtype.itemsize
    if available is not None and need > available:
        raise TruncatedFileError(
            f"{name}: the header declares {shape} {dtype} voxels ({need - offset:,} bytes) at "
            f"offset {offset:,}, but the file holds {available:,} bytes; it is truncated or "
            "corrupted."
        )
    return need


def _gunzip(data: bytes, name: str, want: int, *, check_crc: bool) -> bytes:
    """The first ``want`` bytes of gzip ``data`` (fewer if it holds fewer), decompressed in
    pieces of at most :data:`_PIECE` bytes; concatenated gzip members are one stream.

    ``check_crc``: once ``want`` bytes are out, the rest of that gzip member is decompressed
    and dropped (at most :data:`_GZIP_SLACK` bytes) so that its CRC is checked.
    """
    out = bytearray()
    rest = data
    try:
        while rest and len(out) < want:
            engine = zlib.decompressobj(16 + zlib.MAX_WBITS)
            feed = rest
            while len(out) < want and not engine.eof:
                piece = engine.decompress(feed, min(_PIECE, want - len(out)))
                feed = engine.unconsumed_tail
                out += piece
                if not piece and not feed:  # the data ends inside the stream
                    return bytes(out)
            extra = 0
            while check_crc and not engine.eof and extra <= _GZIP_SLACK:
                piece = engine.decompress(feed, min(_PIECE, _GZIP_SLACK + 1 - extra))
                feed = engine.unconsumed_tail
                extra += len(piece)
                if not piece and not feed:
                    break
            if extra > _GZIP_SLACK:
                raise FormatError(
                    f"{name}: the gzip stream holds more than {_GZIP_SLACK:,} bytes past the "
                    f"{want:,} the NIfTI header declares."
                )
            rest = engine.unused_data  # the next member, once this one ended
    except zlib.error as exc:
        raise FormatError(f"{name}: cannot read as NIfTI: broken gzip data ({exc}).") from None
    return bytes(out)


def _image_from_bytes(data: bytes, name: str, max_bytes: int) -> Any:
    """A NIfTI image from a file's bytes (gzip or not), its header checked before the voxel
    data is decompressed or read."""
    nib = _nibabel()
    gz = is_gzip(data)
    head = _gunzip(data, name, _HEAD, check_crc=False) if gz else data[:_HEAD]
    header = _header(head, name)
    if gz:
        need = _check_declared(header, name, max_bytes, None)
        if need > max_bytes:  # the decompressed file is held in memory
            raise AllocationLimitError(
                f"{name}: the voxel data ends at byte {need:,} (vox_offset "
                f"{int(header.get_data_offset()):,}), above the {max_bytes:,}-byte limit "
                "(max_bytes=)."
            )
        data = _gunzip(data, name, need, check_crc=True)
    need = _check_declared(header, name, max_bytes, len(data))
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    return image_class.from_bytes(data[:need] if gz else data)


def _load_image(
    source: Target,
    storage_options: dict[str, Any] | None,
    max_bytes: int,
    content: bytes | None = None,
) -> Any:
    nib = _nibabel()
    name = source_name(source)
    path = local_path(source, storage_options) if content is None else None
    try:
        if path is not None and name_suffix(path) == ".nii":
            with open(path, "rb") as f:
                head = f.read(_HEAD)
                size = os.fstat(f.fileno()).st_size
            if not is_gzip(head):  # memory-mapped once the header is checked
                _check_declared(_header(head, name), name, max_bytes, size)
                return nib.load(path)
        data = read_whole(source, storage_options, max_bytes) if content is None else content
        return _image_from_bytes(data, name, max_bytes)
    except MedmaskError:
        raise
    except OSError as exc:  # opening or reading the local file (a missing file, a folder...)
        raise storage_error(exc, name, "reading") from exc
    except Exception as exc:  # nibabel raises many types for a bad file
        raise FormatError(f"{name}: cannot read as NIfTI: {exc}") from None


def read_nifti(
    source: Target,
    *,
    storage_options: dict[str, Any] | None = None,
    max_bytes: int | None = None,
    content: bytes | None = None,
) -> tuple[npt.NDArray[Any], Space]:
    """Read a 3-D NIfTI label image as a (z, y, x) C-ordered array and its LPS space
    (``content``: the file's bytes when already fetched; ``source`` then only names it).

    The header is checked before any voxel is read: integer or float voxels only (complex,
    RGB and RGBA raise :class:`FormatError`), the declared size within ``max_bytes`` and the
    voxel limit (:class:`AllocationLimitError`), and present in the file, or in what its gzip
    stream actually holds (:class:`TruncatedFileError`).
    """
    name = source_name(source)
    limit = max_bytes_limit(max_bytes)
    img = _load_image(source, storage_options, limit, content)
    return _labels_of_image(img, name)


def _labels_of_image(img: Any, name: str) -> tuple[npt.NDArray[Any], Space]:
    """The (z, y, x) label array and LPS space of a nibabel image, every check of
    :func:`read_nifti` made on its voxels."""
    shape3 = tuple(int(s) for s in img.shape)
    if len(shape3) not in (3, 4) or (len(shape3) == 4 and shape3[3] != 1):
        raise FormatError(f"{name}: Expected a 3-D image (or 4-D with one volume). Got {shape3}.")
    x, y, z = shape3[:3]
    shape = (x, y, z)
    try:
        data = np.asarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise FormatError(f"{name}: cannot read the NIfTI voxels: {exc}") from None
    if data.dtype.kind not in "biuf":
        raise FormatError(f"{name}: Expected integer or float voxels. Got {data.dtype}.")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise FormatError(f"{name}: label image has NaN or infinite values.")
    if data.size and (data.dtype.kind in "fi" or data.dtype.itemsize > 4):
        low, high = data.min().item(), data.max().item()
        if low < 0 or high > MAX_LABEL:
            raise FormatError(
                f"{name}: Expected label values in [0, {MAX_LABEL}]. "
                f"Got {low if low < 0 else high}."
            )
    labels = integer_labels(data)
    if labels is None:
        raise FormatError(f"{name}: label image has non-integer values.")
    try:
        space = space_from_affine(img.affine, shape)
    except Exception as exc:  # a degenerate affine (spacetransformer has its own errors)
        raise FormatError(f"{name}: cannot use the NIfTI affine: {exc}") from None
    return np.ascontiguousarray(labels.transpose(2, 1, 0)), space


def _text(value: Any) -> str:
    """A NIfTI string field (``bytes``, NUL-padded) as text, undecodable bytes replaced."""
    raw = bytes(np.asarray(value).item()) if not isinstance(value, bytes) else value
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def header_codes(img: Any) -> dict[str, Any]:
    """The NIfTI header fields a conversion keeps (``from_nifti`` stores them in
    ``mask.attributes["nifti"]``; ``to_nifti`` writes them back): ``sform_code``,
    ``qform_code``, ``intent_code``, ``intent_name``, ``descrip``, ``aux_file`` and
    ``xyzt_units``. Geometry and voxels are carried by the mask itself."""
    header = img.header
    codes: dict[str, Any] = {}
    for key in ("sform_code", "qform_code", "intent_code", "xyzt_units"):
        try:
            codes[key] = int(np.asarray(header[key]).item())
        except (KeyError, TypeError, ValueError):  # not a NIfTI header (an Analyze one, say)
            continue
    for key in ("intent_name", "descrip", "aux_file"):
        try:
            codes[key] = _text(header[key])
        except (KeyError, TypeError, ValueError):
            continue
    return codes


def _int_code(codes: Mapping[str, Any], key: str, default: int, allowed: range) -> int:
    value = codes.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        return default
    return value


def _apply_codes(img: Any, affine: npt.NDArray[np.float64], codes: Mapping[str, Any]) -> None:
    """Set ``img``'s header codes from ``codes`` (as :func:`header_codes` gives them), never
    at the cost of the geometry: when the kept sform/qform codes would make nibabel resolve
    another affine (both 0, say), both are written as 1 (scanner)."""
    sform = _int_code(codes, "sform_code", 1, range(5))
    qform = _int_code(codes, "qform_code", 1, range(5))
    img.set_sform(affine, code=sform)
    img.set_qform(affine if qform else None, code=qform)
    if not np.allclose(img.header.get_best_affine(), affine, atol=1e-4):
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
    intent_name = codes.get("intent_name", "")
    intent = _int_code(codes, "intent_code", _NIFTI_INTENT_LABEL, range(1 << 15))
    try:
        img.header.set_intent(intent, name=str(intent_name)[:16], allow_unknown=True)
    except Exception:  # an intent code that needs parameters nibabel cannot default
        img.header.set_intent(_NIFTI_INTENT_LABEL)
    for key, size in (("descrip", 80), ("aux_file", 24)):
        text = codes.get(key)
        if isinstance(text, str):
            img.header[key] = text.encode("utf-8")[:size]
    units = _int_code(codes, "xyzt_units", -1, range(256))
    if units >= 0:
        img.header["xyzt_units"] = units


def _image_of(
    array: npt.NDArray[Any],
    space: Space,
    dtype: Any = None,
    codes: Mapping[str, Any] | None = None,
) -> Any:
    """A nibabel ``Nifti1Image`` of a (z, y, x) array on its LPS space (RAS affine); header
    codes from ``codes`` (see :func:`header_codes`), else qform = sform = 1 and label intent."""
    nib = _nibabel()
    data = np.asarray(array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if dtype is not None:
        data = data.astype(dtype)
    affine = affine_from_space(space)
    img = nib.Nifti1Image(data.transpose(2, 1, 0), affine)
    _apply_codes(img, affine, codes or {})
    return img


def _kept_codes(mask: SegmentationMask) -> Mapping[str, Any]:
    codes = mask.attributes.get(NIFTI_ATTRIBUTE)
    return codes if isinstance(codes, Mapping) else {}


def _image_bytes(
    array: npt.NDArray[Any],
    space: Space,
    dtype: Any,
    gz: bool,
    codes: Mapping[str, Any] | None = None,
) -> bytes:
    raw: bytes = _image_of(array, space, dtype, codes).to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw


def write_nifti(
    array: npt.NDArray[Any],
    space: Space,
    target: Target,
    *,
    dtype: Any = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = True,
    header: Mapping[str, Any] | None = None,
) -> int:
    """Write a (z, y, x) array with its LPS space as NIfTI (RAS affine; header codes from
    ``header`` as :func:`header_codes` gives them, else qform = sform = 1 and label intent);
    gzip-compressed when the name ends in ``.gz``. Atomic, to any path or URL
    (``overwrite=False``: :class:`MaskFileExistsError` if it exists). Returns the bytes written."""
    gz = name_suffix(target).endswith(".gz")
    data = _image_bytes(array, space, dtype, gz, header)
    write_atomic(target, [data], storage_options, overwrite=overwrite)
    return len(data)


Names = LabelMapping | Mapping[str, int] | Target


def _names_given(mapping: Names | None, labels: Names | None) -> Names | None:
    """The label names passed as ``mapping=`` or as ``labels=`` (the same thing, under the
    name of the CLI's ``--labels``), never both."""
    if mapping is not None and labels is not None:
        raise InvalidValueError(
            "Expected the label names once: mapping= or labels= (the same thing). Got both."
        )
    return labels if mapping is None else mapping


def from_nifti(
    source: Target,
    mapping: Names | None = None,
    *,
    labels: Names | None = None,
    storage_options: dict[str, Any] | None = None,
    max_bytes: int | None = None,
) -> SegmentationMask:
    """Read a NIfTI label image as a :class:`SegmentationMask` (LPS, (z, y, x)).

    ``source``: a path, URL or file object, or a nibabel image already in memory (then the
    same as :func:`from_nibabel`). ``mapping``: label names as a mapping, or a label table's
    path or URL (JSON, TSV/CSV, ITK-SNAP ``.txt``, 3D Slicer ``.ctbl``; see
    :mod:`medmask.interop.labels`); ``labels=`` is another name for it. Without it the values
    present are named ``label_<value>``.
    """
    names = _names_given(mapping, labels)
    if _is_image(source):
        return from_nibabel(source, names, storage_options=storage_options)
    img = _load_image(source, storage_options, max_bytes_limit(max_bytes))
    return _mask_of_image(img, source_name(source), names, storage_options)


def _mask_of_image(
    img: Any,
    name: str,
    mapping: LabelMapping | Mapping[str, int] | Target | None,
    storage_options: dict[str, Any] | None,
) -> SegmentationMask:
    """The mask of a nibabel image, with names from ``mapping`` (else ``label_<value>``) and
    the header codes in ``attributes["nifti"]``."""
    array, space = _labels_of_image(img, name)
    attributes = {NIFTI_ATTRIBUTE: header_codes(img)}
    try:
        if mapping is None:  # names from the values present, counted once for both
            return SegmentationMask._named_by_values(
                array, _default_names, space, attributes=attributes
            )
        names = to_label_mapping(mapping, storage_options)
        return SegmentationMask(array, names, space, attributes=attributes)
    except InvalidValueError as exc:  # the values against the mapping: say which file
        raise InvalidValueError(f"{name}: {exc}") from None


def _default_names(values: list[int]) -> LabelMapping:
    """``label_<value>`` for each value, as :func:`default_label_names` names an array's."""
    return default_label_names(np.asarray(values, dtype=np.int64))


def to_nifti(
    mask: SegmentationMask,
    target: Target,
    *,
    storage_options: dict[str, Any] | None = None,
    label_table: Target | None = None,
    overwrite: bool = True,
) -> int:
    """Write a mask as NIfTI (the names, which NIfTI cannot hold, optionally to a JSON label
    table ``{name: value}`` at ``label_table``). Returns the bytes of the image written.

    ``overwrite=False`` applies to both files: if either exists, nothing is written
    (:class:`MaskFileExistsError`)."""
    if (
        label_table is not None
        and not overwrite
        and object_version(label_table, storage_options).exists
    ):
        where = source_name(label_table)
        raise MaskFileExistsError(f"{where}: already exists; nothing was written.")
    size = write_nifti(
        mask.data,
        mask.space,
        target,
        storage_options=storage_options,
        overwrite=overwrite,
        header=_kept_codes(mask),
    )
    if label_table is not None:
        table = dict(mapping_items(mask.mapping))  # not .to_dict(): a label may be so named
        text = json.dumps(table, ensure_ascii=False, indent=1) + "\n"
        write_atomic(label_table, [text.encode()], storage_options, overwrite=overwrite)
    return size


def _is_image(source: object) -> bool:
    """Whether ``source`` is an in-memory nibabel-style image (voxels and an affine)."""
    return hasattr(source, "dataobj") and hasattr(source, "affine")


def to_nibabel(mask: SegmentationMask) -> Any:
    """The mask as an in-memory nibabel ``Nifti1Image``: ``img.affine`` is
    :attr:`SegmentationMask.affine` (RAS+) and ``img.dataobj`` is ``mask.data.transpose(2, 1,
    0)``, exactly what :func:`to_nifti` writes (header codes from ``mask.attributes["nifti"]``,
    else qform = sform = 1 and label intent). Label names do not fit in NIfTI; keep
    ``mask.mapping``."""
    if not isinstance(mask, SegmentationMask):
        raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
    return _image_of(mask.data, mask.space, codes=_kept_codes(mask))


def from_nibabel(
    img: Any,
    mapping: Names | None = None,
    *,
    labels: Names | None = None,
    storage_options: dict[str, Any] | None = None,
) -> SegmentationMask:
    """A :class:`SegmentationMask` from an in-memory nibabel image (``Nifti1Image``,
    ``Nifti2Image`` or anything with ``dataobj``, ``affine`` and ``shape``), with the checks of
    :func:`from_nifti`: integer or whole-number voxels in range, a usable affine. ``mapping``
    (or ``labels``) as for :func:`from_nifti` (``storage_options`` for a table given by URL)."""
    names = _names_given(mapping, labels)
    if not _is_image(img):
        raise InvalidTypeError(
            f"Expected a nibabel image (with dataobj and affine). Got {type(img).__name__}; "
            "for a file name use from_nifti."
        )
    name = getattr(img, "get_filename", lambda: None)() or f"<{type(img).__name__}>"
    return _mask_of_image(img, str(name), names, storage_options)
