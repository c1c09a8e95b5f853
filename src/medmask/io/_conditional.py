"""Conditional writes to object stores: what a writer saw of an object (:class:`ObjectVersion`)
and a PUT that succeeds only if the object is still that version (or still absent).

Each backend is one entry of :data:`_BACKENDS`, looked up by the filesystem's protocol: S3
sends ``If-Match`` / ``If-None-Match``, GCS ``ifGenerationMatch``; any other filesystem gets
:data:`_COMPARE`, which re-reads the object right before an unconditional write. Adding a
backend with conditional requests (say ``az://``) means adding one :class:`_Backend` here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._deprecate import renamed_attribute
from ..errors import (
    ConcurrentModificationError,
    InvalidValueError,
    MaskFileExistsError,
    MedmaskError,
)
from ._errors import storage_error, translated
from ._gcs import gcs_put
from ._paths import Target, local_path, target_fs

__all__ = [
    "COMPARED_PREFIX",
    "ObjectVersion",
    "conditional_check",
    "object_version",
    "put_conditional",
]

#: Bytes compared by the "content" check on filesystems without conditional writes.
COMPARED_PREFIX = 4 << 10
#: Largest object written with one PUT (S3's limit); conditional writes need a single request.
_SINGLE_PUT = 5 << 30

VersionCheck = Literal["etag", "generation", "content"]


@dataclass(frozen=True)
class ObjectVersion:
    """What a writer saw of an object, to make its later replacement conditional on it.

    ``check`` says how the check is made: ``"etag"`` (S3 ``If-Match``), ``"generation"``
    (GCS ``ifGenerationMatch``) or ``"content"`` (other filesystems: ``size`` and ``prefix``,
    the first :data:`COMPARED_PREFIX` bytes, re-read right before the write). ``exists`` False
    means "only if still absent".
    """

    exists: bool
    check: VersionCheck
    token: str = ""
    size: int = -1
    prefix: bytes = b""

    kind = renamed_attribute("ObjectVersion", "kind", "check")
    head = renamed_attribute("ObjectVersion", "head", "prefix")


def _is_precondition_failure(exc: BaseException) -> bool:
    """A conditional request refused because the object is not (or no longer) as expected."""
    if isinstance(exc, FileExistsError) or getattr(exc, "code", None) == 412:
        return True
    cause = exc.__cause__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause else None
    return code in ("PreconditionFailed", "ConditionalRequestConflict")


#: ``put(fs, path, data, name, expect, create_only)``: the new version, or raises.
_Put = Callable[[Any, str, bytes, str, ObjectVersion, bool], ObjectVersion]


@dataclass(frozen=True)
class _Backend:
    """How one kind of object store makes a write conditional."""

    check: VersionCheck
    #: The version token in ``fs.info()``'s answer; None: compare content instead.
    token: Callable[[Mapping[str, Any]], str] | None
    put: _Put
    #: Whether a failed PUT lost the race (a conflict) rather than failed.
    lost_race: Callable[[BaseException], bool] = _is_precondition_failure


def _s3_put(
    fs: Any, path: str, data: bytes, name: str, expect: ObjectVersion, create_only: bool
) -> ObjectVersion:
    condition = {"IfMatch": expect.token} if expect.exists else {"IfNoneMatch": "*"}
    out = fs.pipe_file(path, data, chunksize=_SINGLE_PUT, **condition)
    etag = str(out.get("ETag", "")) if isinstance(out, dict) else ""
    return ObjectVersion(True, "etag", etag, len(data))


def _gcs_put(
    fs: Any, path: str, data: bytes, name: str, expect: ObjectVersion, create_only: bool
) -> ObjectVersion:
    reply = gcs_put(fs, path, data, expect.token if expect.exists else "0")
    return ObjectVersion(True, "generation", str(reply.get("generation", "")), len(data))


def _compare_then_put(
    fs: Any, path: str, data: bytes, name: str, expect: ObjectVersion, create_only: bool
) -> ObjectVersion:
    # no conditional writes here: compare right before the write (a small race remains)
    if _fs_version(fs, path, name) != expect:
        raise _conflict(name, expect, create_only)
    fs.pipe_file(path, data)
    return _fs_version(fs, path, name)


_S3 = _Backend("etag", lambda info: str(info.get("ETag") or info.get("etag") or ""), _s3_put)
_GCS = _Backend("generation", lambda info: str(info.get("generation") or ""), _gcs_put)
#: Every filesystem without an entry in :data:`_BACKENDS`.
_COMPARE = _Backend("content", None, _compare_then_put)
#: fsspec protocol -> how its writes are made conditional.
_BACKENDS: Mapping[str, _Backend] = {"s3": _S3, "s3a": _S3, "gs": _GCS, "gcs": _GCS}


def _backend(fs: Any) -> _Backend:
    protocol = fs.protocol
    protocols = tuple(protocol) if isinstance(protocol, tuple | list) else (str(protocol),)
    return next((_BACKENDS[p] for p in protocols if p in _BACKENDS), _COMPARE)


def conditional_check(fs: Any) -> VersionCheck:
    """The :attr:`ObjectVersion.check` of objects on ``fs``."""
    return _backend(fs).check


def _fs_version(fs: Any, path: str, name: str) -> ObjectVersion:
    backend = _backend(fs)
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return ObjectVersion(False, backend.check)
    except Exception as exc:
        raise storage_error(exc, name, "checking the object's version", fs=fs, path=path) from exc
    size = int(info.get("size") or 0)
    if backend.token is not None:
        return ObjectVersion(True, backend.check, backend.token(info), size)
    with translated(name, "reading", fs=fs, path=path):
        prefix = bytes(fs.cat_file(path, start=0, end=min(size, COMPARED_PREFIX))) if size else b""
    return ObjectVersion(True, backend.check, "", size, prefix)


def _local_version(path: str) -> ObjectVersion:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return ObjectVersion(True, "content", "", size, handle.read(COMPARED_PREFIX))
    except FileNotFoundError:
        return ObjectVersion(False, "content")
    except OSError as exc:
        raise storage_error(exc, path, "reading") from exc


def object_version(target: Target, storage_options: dict[str, Any] | None = None) -> ObjectVersion:
    """The current :class:`ObjectVersion` of a path or URL (one HEAD request on object stores)."""
    path = local_path(target, storage_options)
    if path is not None:
        return _local_version(path)
    fs, fs_path, name = target_fs(target, storage_options)
    return _fs_version(fs, fs_path, name)


def _conflict(name: str, expect: ObjectVersion, create_only: bool) -> MedmaskError:
    if create_only:
        return MaskFileExistsError(f"{name}: already exists; nothing was written.")
    return ConcurrentModificationError(
        f"{name}: was {'changed' if expect.exists else 'created'} by another writer since it "
        "was read; nothing was written. Open it again and retry."
    )


def put_conditional(
    fs: Any, path: str, data: bytes, name: str, expect: ObjectVersion, create_only: bool
) -> ObjectVersion:
    """Write ``data`` to ``path`` only if the object is still ``expect``; the new version.

    A lost race is :class:`ConcurrentModificationError` (:class:`MaskFileExistsError` when
    ``create_only``); nothing is written then.
    """
    backend = _backend(fs)
    if len(data) > _SINGLE_PUT:
        raise InvalidValueError(f"{name}: {len(data):,} bytes exceed one conditional PUT.")
    try:
        return backend.put(fs, path, data, name, expect, create_only)
    except MedmaskError:
        raise
    except Exception as exc:
        if backend.lost_race(exc) or (expect.exists and isinstance(exc, FileNotFoundError)):
            raise _conflict(name, expect, create_only) from exc
        raise storage_error(exc, name, "writing", fs=fs, path=path) from exc
