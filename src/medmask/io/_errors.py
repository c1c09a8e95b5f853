"""Backend exceptions (OSError, botocore, aiohttp, gcsfs) as medmask errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import MaskFileNotFoundError, MedmaskError, StorageError, StoragePermissionError

__all__ = ["is_range_error", "storage_error", "translated"]


def is_range_error(exc: BaseException) -> bool:
    """A read starting at or past the end of an object (HTTP 416), as backends report it."""
    if isinstance(exc, FileNotFoundError | PermissionError):
        return False
    text = str(exc).lower()
    return getattr(exc, "code", None) == 416 or "range is not satisfiable" in text


def _is_permission_error(exc: BaseException) -> bool:
    """Access denied or missing credentials (botocore's NoCredentialsError is no OSError)."""
    if isinstance(exc, PermissionError) or getattr(exc, "code", None) in (401, 403):
        return True
    return any(
        "Credential" in type(e).__name__ or "AccessDenied" in type(e).__name__
        for e in (exc, exc.__cause__)
        if e is not None
    )


def storage_error(exc: BaseException, name: str, doing: str) -> MedmaskError:
    """The medmask error for a backend exception ``exc`` raised while ``doing`` on ``name``.

    Raise it ``from exc`` so the backend's own exception stays chained as the cause.
    """
    if isinstance(exc, MedmaskError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return MaskFileNotFoundError(f"{name}: no such file or object.")
    if isinstance(exc, IsADirectoryError):
        return MaskFileNotFoundError(f"{name}: is a directory, not a file.")
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if _is_permission_error(exc):
        return StoragePermissionError(f"{name}: access denied while {doing} ({detail}).")
    return StorageError(f"{name}: {doing} failed ({detail}).")


@contextlib.contextmanager
def translated(name: str, doing: str) -> Iterator[None]:
    """Raise any non-medmask exception of the block as :func:`storage_error` (chained)."""
    try:
        yield
    except MedmaskError:
        raise
    except Exception as exc:
        raise storage_error(exc, name, doing) from exc
