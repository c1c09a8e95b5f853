"""Backend exceptions (OSError, botocore, aiohttp, gcsfs) as medmask errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import (
    BucketNotFoundError,
    MaskFileNotFoundError,
    MedmaskError,
    StorageCredentialsError,
    StorageError,
    StoragePermissionError,
)
from ._refusals import Problem, describe, problem_of

__all__ = ["is_range_error", "storage_error", "translated"]

#: The class of each object-store problem (:func:`medmask.io._refusals.problem_of`).
_CLASSES: dict[Problem, type[MedmaskError]] = {
    "bucket": BucketNotFoundError,
    "object": MaskFileNotFoundError,
    "no-credentials": StorageCredentialsError,
    "bad-credentials": StorageCredentialsError,
    "denied": StoragePermissionError,
    "forbidden": StoragePermissionError,
}


def is_range_error(exc: BaseException) -> bool:
    """A read starting at or past the end of an object (HTTP 416), as backends report it."""
    if isinstance(exc, FileNotFoundError | PermissionError):
        return False
    text = str(exc).lower()
    return getattr(exc, "code", None) == 416 or "range is not satisfiable" in text


def _is_permission_error(exc: BaseException) -> bool:
    """Access denied by any other backend (a local file, a class named like botocore's)."""
    if isinstance(exc, PermissionError):
        return True
    return any("AccessDenied" in type(e).__name__ for e in (exc, exc.__cause__) if e is not None)


def storage_error(
    exc: BaseException, name: str, doing: str, *, fs: Any = None, path: str | None = None
) -> MedmaskError:
    """The medmask error for a backend exception ``exc`` raised while ``doing`` on ``name``.

    Object stores' refusals get their own class and message: a missing bucket
    (:class:`BucketNotFoundError`), a missing object (:class:`MaskFileNotFoundError`), no or
    refused credentials (:class:`StorageCredentialsError`), denied access
    (:class:`StoragePermissionError`). ``fs`` and ``path`` (the filesystem and the path in
    it), when given, tell a missing bucket from a missing object where the backend does not
    (one more request, on this error path only). Raise the result ``from exc`` so the
    backend's own exception stays chained as the cause.
    """
    if isinstance(exc, MedmaskError):
        return exc
    if isinstance(exc, IsADirectoryError):
        return MaskFileNotFoundError(f"{name}: is a directory, not a file.")
    problem = problem_of(exc, fs, path)
    if problem is not None:
        return _CLASSES[problem](describe(problem, exc, name, doing, fs, path or ""))
    if isinstance(exc, FileNotFoundError):
        return MaskFileNotFoundError(f"{name}: no such file or object.")
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if _is_permission_error(exc):
        return StoragePermissionError(f"{name}: access denied while {doing} ({detail}).")
    return StorageError(f"{name}: {doing} failed ({detail}).")


@contextlib.contextmanager
def translated(name: str, doing: str, *, fs: Any = None, path: str | None = None) -> Iterator[None]:
    """Raise any non-medmask exception of the block as :func:`storage_error` (chained)."""
    try:
        yield
    except MedmaskError:
        raise
    except Exception as exc:
        raise storage_error(exc, name, doing, fs=fs, path=path) from exc
