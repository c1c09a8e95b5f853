"""medmask: self-describing, compact, cloud-readable medical segmentation masks."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import config as config
from . import errors as errors
from .errors import (
    AllocationLimitError,
    ChecksumError,
    CodecError,
    ConcurrentModificationError,
    FormatError,
    InvalidTypeError,
    InvalidValueError,
    LabelNotFoundError,
    LegacyFormatError,
    LockTimeoutError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    MedmaskError,
    MemberNotFoundError,
    ReadOnlyError,
    SpaceMismatchError,
    StorageError,
    StoragePermissionError,
    TruncatedFileError,
    UnsafeNameError,
    UnsupportedVersionError,
)
from .mapping import LabelMapping
from .mask import SegmentationMask
from .values import LabelStats, label_counts, label_stats, match_allowed_values

if TYPE_CHECKING:
    from .api import MaskFile, MaskInfo, read_info, read_infos
    from .archive import MaskArchive
    from .files import load_mask, save_mask
    from .interop.folders import pack_folder, unpack
    from .interop.nifti import from_nifti, to_nifti
    from .interop.sitk import from_sitk, to_sitk
    from .zarr_store import ArchiveStore, from_zarr, open_zarr, to_zarr

from ._version import __version__ as __version__

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
    "from_sitk": "interop.sitk",
    "to_sitk": "interop.sitk",
    "ArchiveStore": "zarr_store",
    "open_zarr": "zarr_store",
    "to_zarr": "zarr_store",
    "from_zarr": "zarr_store",
}

__all__ = [
    "AllocationLimitError",
    "ArchiveStore",
    "ChecksumError",
    "CodecError",
    "ConcurrentModificationError",
    "FormatError",
    "InvalidTypeError",
    "InvalidValueError",
    "LabelMapping",
    "LabelNotFoundError",
    "LabelStats",
    "LegacyFormatError",
    "LockTimeoutError",
    "MaskArchive",
    "MaskFile",
    "MaskFileExistsError",
    "MaskFileNotFoundError",
    "MaskInfo",
    "MedmaskError",
    "MemberNotFoundError",
    "ReadOnlyError",
    "SegmentationMask",
    "SpaceMismatchError",
    "StorageError",
    "StoragePermissionError",
    "TruncatedFileError",
    "UnsafeNameError",
    "UnsupportedVersionError",
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
    "to_nifti",
    "to_sitk",
    "to_zarr",
    "unpack",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medmask' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
