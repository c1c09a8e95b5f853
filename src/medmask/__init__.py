"""medmask: self-describing, compact, cloud-readable medical segmentation masks."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import config as config
from . import errors as errors
from ._workers import chunk_executor as _chunk_executor

# MedmaskError and the errors users catch most are in __all__; every other exception lives in
# medmask.errors (still importable from here, as before 0.2, but not part of the API listing).
from .errors import (
    AllocationLimitError,
    FormatError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    MedmaskError,
)
from .mapping import LabelMapping
from .mask import SegmentationMask
from .mask import use_construction_executor as _use_construction_executor
from .values import LabelStats, label_counts, label_stats, match_allowed_values

if TYPE_CHECKING:
    from .api import MaskFile, MaskInfo, read_info, read_infos
    from .archive import LayeringReport, MaskArchive, MemberArray
    from .files import load_mask, save_mask
    from .interop.dicom import from_dicom_seg, to_dicom_seg
    from .interop.folders import pack_folder, unpack
    from .interop.nifti import from_nibabel, from_nifti, to_nibabel, to_nifti
    from .interop.sitk import from_sitk, to_sitk
    from .reader import RecoveryWarning
    from .zarr_store import ArchiveStore, from_zarr, open_zarr, to_zarr

from ._version import __version__ as __version__

_use_construction_executor(_chunk_executor)  # masks are built on the package's threads

# I/O entry points load on first use so that `import medmask` stays light (no fsspec).
_LAZY = {
    "MaskFile": "api",
    "MaskInfo": "api",
    "load_mask": "files",
    "read_info": "api",
    "read_infos": "api",
    "save_mask": "files",
    "MaskArchive": "archive",
    "pack_folder": "interop.folders",
    "unpack": "interop.folders",
    "from_nifti": "interop.nifti",
    "to_nifti": "interop.nifti",
    "from_nibabel": "interop.nifti",
    "to_nibabel": "interop.nifti",
    "from_sitk": "interop.sitk",
    "to_sitk": "interop.sitk",
    "ArchiveStore": "zarr_store",
    "open_zarr": "zarr_store",
    "to_zarr": "zarr_store",
    "from_zarr": "zarr_store",
    "LayeringReport": "archive",
    "MemberArray": "archive",
    "RecoveryWarning": "reader",
    "from_dicom_seg": "interop.dicom",
    "to_dicom_seg": "interop.dicom",
}

__all__ = [
    "AllocationLimitError",
    "ArchiveStore",
    "FormatError",
    "LabelMapping",
    "LabelStats",
    "LayeringReport",
    "MaskArchive",
    "MaskFile",
    "MaskFileExistsError",
    "MaskFileNotFoundError",
    "MaskInfo",
    "MedmaskError",
    "MemberArray",
    "RecoveryWarning",
    "SegmentationMask",
    "from_dicom_seg",
    "from_nibabel",
    "from_nifti",
    "from_sitk",
    "from_zarr",
    "label_counts",
    "label_stats",
    "load_mask",
    "match_allowed_values",
    "open_zarr",
    "pack_folder",
    "read_info",
    "read_infos",
    "save_mask",
    "to_dicom_seg",
    "to_nibabel",
    "to_nifti",
    "to_sitk",
    "to_zarr",
    "unpack",
]


def __getattr__(name: str) -> Any:
    if name in errors.__all__:  # every other exception, importable from here as before 0.2
        return getattr(errors, name)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medmask' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
