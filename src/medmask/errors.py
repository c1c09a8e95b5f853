"""Exceptions raised by medmask.

Every error a user can trigger with bad input is a :class:`MedmaskError` and also a subclass of
the matching builtin (``ValueError``, ``KeyError``, ``FileNotFoundError``), so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "AllocationLimitError",
    "ChecksumError",
    "CodecError",
    "FormatError",
    "LabelNotFoundError",
    "MaskFileNotFoundError",
    "MedmaskError",
    "MemberNotFoundError",
    "ReadOnlyError",
    "SpaceMismatchError",
    "TruncatedFileError",
    "UnsupportedVersionError",
]


class MedmaskError(Exception):
    """Base class of all medmask errors."""


class _PlainKeyError(KeyError):
    # KeyError.__str__ repr()-quotes its message; show it as written.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FormatError(MedmaskError, ValueError):
    """A file is not a valid medmask file (bad magic, malformed header, inconsistent index)."""


class TruncatedFileError(FormatError):
    """A file ends before the data its header declares."""


class ChecksumError(FormatError):
    """Stored and computed checksums differ: the file is corrupted."""


class UnsupportedVersionError(FormatError):
    """The file uses a format version or required feature this reader does not know."""


class AllocationLimitError(FormatError):
    """A file declares more decoded data than allowed; refused before allocating."""


class CodecError(MedmaskError, ValueError):
    """A codec cannot encode the input or its encoded stream is malformed."""


class SpaceMismatchError(MedmaskError, ValueError):
    """Two spaces that must agree (within tolerance) differ."""


class ReadOnlyError(MedmaskError, PermissionError):
    """A write was attempted on something opened read-only."""


class LabelNotFoundError(MedmaskError, _PlainKeyError):
    """A label name or value is not in a mapping."""


class MemberNotFoundError(MedmaskError, _PlainKeyError):
    """An archive has no member of that name."""


class MaskFileNotFoundError(MedmaskError, FileNotFoundError):
    """The file or object to read does not exist."""
