"""What kind of file this is, from its name or its first bytes: the one home of the magic
numbers and file-name suffixes of every kind of file medmask reads (bytes only, no I/O).
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "KINDS",
    "LEGACY_MSKA_MAGIC",
    "LEGACY_MSK_MAGIC",
    "MAGIC_MSK",
    "MAGIC_MSKA",
    "NIFTI_SUFFIXES",
    "SNIFF_BYTES",
    "SUFFIXES",
    "ContainerKind",
    "Kind",
    "container_kind",
    "describe_magic",
    "is_gzip",
    "kind_of_suffix",
    "legacy_kind",
    "sniff",
]

#: Kinds of file: medmask's two containers, NIfTI-1/2 (plain or gzip) and DICOM.
Kind = Literal["msk", "mska", "nifti", "dicom"]
ContainerKind = Literal["msk", "mska"]
KINDS: Final[tuple[Kind, ...]] = ("msk", "mska", "nifti", "dicom")

MAGIC_MSK: Final = b"\x89MSK\r\n\x1a\n"  # docs/format.md section 1
MAGIC_MSKA: Final = b"\x89MSA\r\n\x1a\n"
LEGACY_MSK_MAGIC: Final = b"MSK1"  # medmask 0.1 (docs/format.md, appendix)
LEGACY_MSKA_MAGIC: Final = b"MSKA"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_NIFTI1_MAGICS: Final = (b"n+1\0", b"ni1\0")  # at byte 344 of a NIfTI-1 header
_NIFTI2_MAGICS: Final = (b"n+2\0", b"ni2\0")  # at byte 4 of a NIfTI-2 header
_DICOM_MAGIC: Final = b"DICM"  # at byte 128, after the preamble

#: File-name suffixes of each kind (lower case, as :func:`medmask.io.name_suffix` gives them).
SUFFIXES: Final[dict[Kind, tuple[str, ...]]] = {
    "msk": (".msk",),
    "mska": (".mska",),
    "nifti": (".nii", ".nii.gz"),
    "dicom": (".dcm",),
}
NIFTI_SUFFIXES: Final = SUFFIXES["nifti"]
#: Bytes :func:`sniff` needs: up to the magic of an uncompressed NIfTI-1 header.
SNIFF_BYTES: Final = 348


def kind_of_suffix(suffix: str) -> Kind | None:
    """The kind a file-name suffix (``".nii.gz"``) names, or None."""
    return next((kind for kind, names in SUFFIXES.items() if suffix in names), None)


def container_kind(head: bytes | memoryview) -> ContainerKind | None:
    """``"msk"`` or ``"mska"`` if ``head`` (a file's first bytes) starts with a current magic."""
    magic = bytes(head[:8])
    return "msk" if magic == MAGIC_MSK else "mska" if magic == MAGIC_MSKA else None


def legacy_kind(head: bytes | memoryview) -> ContainerKind | None:
    """``"msk"`` or ``"mska"`` if ``head`` starts like a medmask 0.1 file (its 4-byte magic
    only); None for anything else (current files included)."""
    magic = bytes(head[:4])
    return "msk" if magic == LEGACY_MSK_MAGIC else "mska" if magic == LEGACY_MSKA_MAGIC else None


def is_gzip(head: bytes | memoryview) -> bool:
    """Whether ``head`` starts with the gzip magic."""
    return bytes(head[:2]) == _GZIP_MAGIC


def sniff(head: bytes | memoryview) -> Kind | None:
    """The kind of a file from its first :data:`SNIFF_BYTES` bytes (current and 0.1 containers
    alike), or None. Any gzip stream counts as NIfTI (``.nii.gz``): nothing else medmask
    reads is gzip."""
    found = container_kind(head) or legacy_kind(head)
    if found is not None:
        return found
    if (
        is_gzip(head)
        or bytes(head[344:348]) in _NIFTI1_MAGICS
        or bytes(head[4:8]) in _NIFTI2_MAGICS
    ):
        return "nifti"
    if bytes(head[128:132]) == _DICOM_MAGIC:
        return "dicom"
    return None


def describe_magic(found: bytes) -> str:
    """Words for a file's first bytes, for an error that says what the file is instead."""
    if found in (MAGIC_MSK, MAGIC_MSKA):
        return "a .msk file" if found == MAGIC_MSK else "a .mska archive"
    if found.startswith(_GZIP_MAGIC):
        return "a gzip file (a .nii.gz?)"
    if found.startswith(b"PK"):
        return "a zip file (an .npz?)"
    return f"unknown bytes {found!r}"
