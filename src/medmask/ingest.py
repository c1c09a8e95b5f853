"""Converting one case for :func:`medmask.dask.ingest`: a folder of per-structure NIfTI files
into ``<case>.mska``, a NIfTI label map or a DICOM SEG into ``<case>.msk``, skipped when an
output of the same input already exists and verifies, and checked by reading it back.

What makes a rerun safe: every output carries, in each member's attributes
(:data:`INGEST_ATTRIBUTE`), where it came from (``source``, ``input_bytes``,
``input_files``) and the input's voxel count of each of its structures (``counts``). An
existing output is skipped when that record names the same input (same source, same
total size and number of files) and its stored statistics equal the recorded counts: a rerun
reads only the output's head and lists the input, never the input's voxels. Writes are atomic,
so an interrupted run leaves no partial output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .api import MaskFile, save_msk
from .archive import MaskArchive
from .errors import FormatError, MaskFileExistsError, MedmaskError
from .format.descriptor import MaskDescriptor
from .format.sniff import NIFTI_SUFFIXES
from .interop.folders import INGEST_ATTRIBUTE, pack_folder
from .interop.registry import kind_of
from .io import Target, local_path, object_version, source_name, stored_size
from .io._paths import url_to_fs

__all__ = [
    "INGEST_ATTRIBUTE",
    "REPORT_COLUMNS",
    "CaseInput",
    "case_name",
    "ingest_case",
    "output_name",
]

#: Columns of the ingest report, one row per case.
REPORT_COLUMNS = (
    "case",
    "source",
    "output",
    "input_bytes",
    "output_bytes",
    "seconds",
    "structures",
    "status",
    "error",
)
Status = Literal["done", "skipped", "error"]
DICOM_SUFFIXES = (".dcm", ".dicom")
_CASE_SUFFIXES = (*NIFTI_SUFFIXES, *DICOM_SUFFIXES)


def case_name(source: Target) -> str:
    """The case a source becomes: a folder's name, or a file's name without ``.nii.gz``,
    ``.nii``, ``.dcm`` or ``.dicom`` (case-insensitive)."""
    name = source_name(source).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    lower = name.lower()
    for suffix in _CASE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def output_name(dest: str, case: str, kind: str) -> str:
    """``<dest>/<case>.mska`` for a folder, ``<dest>/<case>.msk`` for one file."""
    suffix = ".mska" if kind == "folder" else ".msk"
    return f"{dest.rstrip('/')}/{case}{suffix}"


@dataclass(frozen=True)
class CaseInput:
    """What one case reads: its source, its kind (``folder``, ``nifti``, ``dicom``), total
    size and number of files."""

    source: str
    kind: str
    input_bytes: int
    input_files: int

    def record(self) -> dict[str, Any]:
        """The output's :data:`INGEST_ATTRIBUTE` without its counts."""
        return {
            "source": self.source,
            "input_bytes": self.input_bytes,
            "input_files": self.input_files,
        }


def _fs(source: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """The filesystem the reads of ``source`` use, its cached listings of ``source`` dropped
    (a rerun must see the input as it is now)."""
    fs, path = url_to_fs(source, storage_options)
    fs.invalidate_cache(path)
    return fs, path


def describe_input(source: str, storage_options: dict[str, Any] | None) -> CaseInput:
    """List ``source`` (one request when remote): a folder's NIfTI files, or one file."""
    local = local_path(source, storage_options)
    if local is not None and os.path.isdir(local):
        files = [e for e in os.scandir(local) if e.is_file() and e.name.endswith(NIFTI_SUFFIXES)]
        return CaseInput(source, "folder", sum(e.stat().st_size for e in files), len(files))
    if local is None:
        fs, path = _fs(source, storage_options)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            info = {"type": "missing"}
        except Exception as exc:
            from .io import storage_error

            raise storage_error(exc, source, "reading") from exc
        if info.get("type") == "directory":
            entries = fs.ls(path, detail=True)
            listed = [
                e
                for e in entries
                if e.get("type", "file") == "file" and str(e["name"]).endswith(NIFTI_SUFFIXES)
            ]
            return CaseInput(source, "folder", sum(int(e["size"]) for e in listed), len(listed))
    size = stored_size(source, storage_options)  # a missing file: MaskFileNotFoundError
    lower = source.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        kind = "nifti"
    elif lower.endswith(DICOM_SUFFIXES):
        kind = "dicom"
    else:
        sniffed = kind_of(source, storage_options)
        if sniffed not in ("nifti", "dicom"):
            raise FormatError(
                f"{source}: ingest converts folders of NIfTI files, NIfTI label maps and "
                f"DICOM SEG files. Got {'an unknown file' if sniffed is None else sniffed}."
            )
        kind = sniffed
    return CaseInput(source, kind, size, 1)


def _descriptors(output: str, storage_options: dict[str, Any] | None) -> list[MaskDescriptor]:
    """The stored descriptors of an output (its head only, no voxels)."""
    if output.endswith(".mska"):
        with MaskArchive(output, storage_options=storage_options) as archive:
            return [archive[name].descriptor for name in archive]
    with MaskFile(output, storage_options=storage_options) as opened:
        return [opened.descriptor]


def check_output(
    output: str,
    expected: CaseInput | None,
    counts: Mapping[str, int] | None,
    storage_options: dict[str, Any] | None,
) -> dict[str, int]:
    """Read an output's head back and return its ``{structure: voxels}``, after checking it.

    Every member must carry :data:`INGEST_ATTRIBUTE` naming ``expected`` (when given), and
    its stored statistics must equal the recorded counts, and ``counts`` (the input's, when
    given). Raises :class:`FormatError` saying what differs.
    """
    stored: dict[str, int] = {}
    for descriptor in _descriptors(output, storage_options):
        record = descriptor.attributes.get(INGEST_ATTRIBUTE)
        if not isinstance(record, dict):
            raise FormatError(f"{output}: was not written by ingest (no {INGEST_ATTRIBUTE!r}).")
        if expected is not None:
            was = {k: record.get(k) for k in expected.record()}
            if was != expected.record():
                raise FormatError(f"{output}: was ingested from another input ({was}).")
        member = {e.name: int(e.count) for e in descriptor.labels if e.value != 0}
        if record.get("counts") != member:
            raise FormatError(
                f"{output}: stored voxel counts differ from the input's recorded ones."
            )
        stored.update(member)
    if counts is not None and stored != dict(counts):
        differ = sorted(n for n in {*stored, *counts} if stored.get(n) != counts.get(n))
        raise FormatError(f"{output}: voxel counts differ from the input's for {differ[:5]}.")
    return stored


def _write(
    case: CaseInput,
    output: str,
    labels: Any,
    overwrite: bool,
    storage_options: dict[str, Any] | None,
    dest_storage_options: dict[str, Any] | None,
) -> dict[str, int]:
    """Convert one case; return the input's ``{structure: voxels}``."""
    if case.kind == "folder":
        target: Target = output
        if dest_storage_options != storage_options:  # pack_folder takes one set of options
            import fsspec

            target = fsspec.open(output, "wb", **(dest_storage_options or {}))
        report = pack_folder(
            case.source,
            target,
            storage_options=storage_options,
            overwrite=overwrite,
            record=case.record(),
        )
        return report.voxels
    from .values import label_counts

    if case.kind == "nifti":
        from .interop.nifti import from_nifti

        mask = from_nifti(case.source, labels, storage_options=storage_options)
    else:
        from .interop.dicom import from_dicom_seg

        mask = from_dicom_seg(case.source, storage_options=storage_options)
    found = label_counts(mask.data)
    counts = {name: int(found.get(value, 0)) for name, value in mask.mapping.items() if value}
    save_msk(
        mask,
        output,
        attributes={INGEST_ATTRIBUTE: {**case.record(), "counts": counts}},
        storage_options=dest_storage_options,
        overwrite=overwrite,
    )
    return counts


def ingest_case(
    case: str,
    source: str,
    dest: str,
    *,
    labels: Any = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    dest_storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ingest one case into ``dest``; return its report row (:data:`REPORT_COLUMNS`).

    A failure is a row with ``status="error"``, never an exception: any
    :class:`MedmaskError` or storage ``OSError`` is said as ``"<ErrorType>: message"``;
    anything else is an internal error (a medmask bug). ``MemoryError`` and
    ``KeyboardInterrupt`` are raised.
    """
    started = time.perf_counter()
    row: dict[str, Any] = dict.fromkeys(REPORT_COLUMNS)
    row.update(case=case, source=source)
    try:
        described = describe_input(source, storage_options)
        output = row["output"] = output_name(dest, case, described.kind)
        row["input_bytes"] = described.input_bytes
        exists = object_version(output, dest_storage_options).exists
        if exists and not overwrite:
            try:
                stored = check_output(output, described, None, dest_storage_options)
            except MedmaskError as exc:
                raise MaskFileExistsError(
                    f"{output}: exists and is not a verified output of {source} ({exc}); "
                    "pass overwrite=True to redo it."
                ) from None
            status: Status = "skipped"
        else:
            counts = _write(
                described, output, labels, overwrite, storage_options, dest_storage_options
            )
            stored = check_output(output, described, counts, dest_storage_options)
            status = "done"
        row.update(
            structures=len(stored),
            output_bytes=stored_size(output, dest_storage_options),
            status=status,
        )
    except (MedmaskError, OSError) as exc:
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
    except MemoryError:
        raise
    except Exception as exc:
        row.update(
            status="error",
            error=f"internal error (a medmask bug, please report it): {type(exc).__name__}: {exc}",
        )
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row
