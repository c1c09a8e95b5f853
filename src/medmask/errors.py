"""Exceptions raised by medmask.

Every error a user can trigger through the public API (bad input files, bad arguments, storage
failures) is a :class:`MedmaskError` and also a subclass of the matching builtin
(``ValueError``, ``TypeError``, ``KeyError``, ``FileNotFoundError``, ``FileExistsError``,
``PermissionError``, ``OSError``), so existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "AllocationLimitError",
    "BucketNotFoundError",
    "ChecksumError",
    "CodecError",
    "CodecTypeError",
    "ConcurrentModificationError",
    "FormatError",
    "InvalidTypeError",
    "InvalidValueError",
    "LabelNotFoundError",
    "LegacyFormatError",
    "LockTimeoutError",
    "MaskFileExistsError",
    "MaskFileNotFoundError",
    "MedmaskError",
    "MemberNotFoundError",
    "ReadOnlyError",
    "SpaceMismatchError",
    "StorageCredentialsError",
    "StorageError",
    "StoragePermissionError",
    "TruncatedFileError",
    "UnsafeNameError",
    "UnsupportedVersionError",
]


class MedmaskError(Exception):
    """Base class of all medmask errors."""


class _PlainKeyError(KeyError):
    # KeyError.__str__ repr()-quotes its message; show it as written.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidValueError(MedmaskError, ValueError):
    """An argument has an acceptable type but an invalid value (shape, range, duplicate...)."""


class InvalidTypeError(MedmaskError, TypeError):
    """An argument has the wrong type (a float array, a list instead of a mask...)."""


class FormatError(MedmaskError, ValueError):
    """A file is not a valid medmask file (bad magic, malformed header, inconsistent index)."""


class TruncatedFileError(FormatError):
    """A file ends before the data its header declares."""


class ChecksumError(FormatError):
    """Stored and computed checksums differ: the file is corrupted."""


class UnsupportedVersionError(FormatError):
    """The file uses a format version or required feature this reader does not know."""


class LegacyFormatError(UnsupportedVersionError):
    """A medmask 0.1 file where the current format is required.

    ``kind`` is ``"msk"`` or ``"mska"``. :func:`medmask.load_mask` and
    :class:`medmask.MaskArchive` read such files (read-only); ``medmask convert`` upgrades them.
    """

    kind: str = "msk"


class AllocationLimitError(FormatError):
    """A file (or a write) declares more data than the reader's limits allow; refused before
    allocating."""


class CodecError(MedmaskError, ValueError):
    """A codec cannot encode the input or its encoded stream is malformed."""


class CodecTypeError(CodecError, TypeError):
    """A codec was given data of a type it does not encode (floats, objects...)."""


class SpaceMismatchError(MedmaskError, ValueError):
    """Two spaces that must agree (within tolerance) differ."""


class UnsafeNameError(InvalidValueError):
    """A structure or member name cannot be used as a file name (separators, ``..``, NUL...)."""


class ReadOnlyError(MedmaskError, PermissionError):
    """A write was attempted on something opened read-only."""


class LabelNotFoundError(MedmaskError, _PlainKeyError):
    """A label name or value is not in a mapping."""


class MemberNotFoundError(MedmaskError, _PlainKeyError):
    """An archive has no member of that name."""


class MaskFileNotFoundError(MedmaskError, FileNotFoundError):
    """The file or object to read does not exist."""


class MaskFileExistsError(MedmaskError, FileExistsError):
    """A write would replace an existing file or object and overwriting was not asked for."""


class StorageError(MedmaskError, OSError):
    """A storage backend (local disk, S3, GCS, ...) failed; the cause is chained."""


class StoragePermissionError(StorageError, PermissionError):
    """The storage backend refused access: the credentials in use may not read or write there
    (and the base of :class:`StorageCredentialsError`)."""


class StorageCredentialsError(StoragePermissionError):
    """An object store was given no credentials, or refused the ones given (unknown key, wrong
    secret, expired token); the message says how to pass them."""


class BucketNotFoundError(MaskFileNotFoundError, StorageError):
    """The bucket of an ``s3://`` or ``gs://`` URL does not exist (for reads and writes)."""


class ConcurrentModificationError(MedmaskError, RuntimeError):
    """Another writer changed the file since it was opened; nothing was written."""


class LockTimeoutError(ConcurrentModificationError, TimeoutError):
    """Another writer held the archive's lock for longer than the allowed wait."""
