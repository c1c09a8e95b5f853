"""Atomic whole-file writes: a temporary file renamed (or linked) over a local target, one PUT
(conditional where asked) for an object, plain writes to a file object."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import (
    ConcurrentModificationError,
    InvalidTypeError,
    InvalidValueError,
    MaskFileExistsError,
    MaskFileNotFoundError,
)
from ._cache import HeadCache, cache_key, or_default
from ._conditional import ObjectVersion, conditional_check, put_conditional
from ._errors import translated
from ._local import LocalLock
from ._paths import Target, local_path, source_name, target_fs

__all__ = ["write_atomic", "write_local_atomic"]


def write_atomic(
    target: Target,
    pieces: Sequence[bytes],
    storage_options: dict[str, Any] | None = None,
    *,
    overwrite: bool = True,
    expect: ObjectVersion | None = None,
    cache: HeadCache | None = None,
) -> ObjectVersion | None:
    """Write ``pieces`` as the whole content of ``target``, replacing it only on success.

    Local files go to a temporary file in the same directory, are flushed to disk and renamed
    over the target. Object stores replace an object atomically with one PUT.
    ``overwrite=False`` writes only if the target does not exist (else
    :class:`MaskFileExistsError`); ``expect`` writes only if the object is still the version
    read earlier (else :class:`ConcurrentModificationError`). Both are atomic on local files,
    S3 and GCS (conditional requests); other filesystems re-check right before the write.
    What ``cache`` (None: the process's ``head_cache``) holds of a replaced object is dropped.
    Returns the new version of remote objects when the backend reports it.
    """
    create_only = not overwrite and expect is None
    path = local_path(target, storage_options)
    if path is not None:
        exclusive = create_only or (expect is not None and not expect.exists)
        try:
            write_local_atomic(path, pieces, exclusive=exclusive)
        except MaskFileExistsError:
            if create_only:
                raise
            raise ConcurrentModificationError(
                f"{path}: was created by another writer since it was read; nothing was written."
            ) from None
        return None
    if isinstance(target, str) or getattr(target, "fs", None) is not None:
        fs, fs_path, name = target_fs(target, storage_options)
        key, kept = cache_key(fs, fs_path), or_default(cache)
        kept.drop(key)
        try:
            return _write_remote(fs, fs_path, name, b"".join(pieces), create_only, expect)
        finally:
            kept.drop(key)  # a head read while the object was being replaced
    if hasattr(target, "write"):
        with translated(source_name(target), "writing"):
            for piece in pieces:
                target.write(piece)
        return None
    raise InvalidTypeError(
        "Expected a path, URL, fsspec OpenFile or writable binary file object. "
        f"Got {type(target).__name__}."
    )


def _write_remote(
    fs: Any,
    fs_path: str,
    name: str,
    data: bytes,
    create_only: bool,
    expect: ObjectVersion | None,
) -> ObjectVersion | None:
    if create_only:
        expect = ObjectVersion(False, conditional_check(fs))
    if expect is not None:
        if expect.exists and expect.check != conditional_check(fs):
            raise InvalidValueError(f"{name}: version {expect.check!r} does not fit this store.")
        return put_conditional(fs, fs_path, data, name, expect, create_only)
    with translated(name, "writing", fs=fs, path=fs_path):
        fs.pipe_file(fs_path, data)
    return None


def write_local_atomic(
    path: str, pieces: Iterable[bytes], *, exclusive: bool = False, keep_lock: bool = False
) -> LocalLock | None:
    """Write ``pieces`` as the whole content of local file ``path``: a temporary file in the
    same directory, flushed to disk, then renamed over ``path`` (with ``exclusive``: linked to
    it, :class:`MaskFileExistsError` if it exists). With ``keep_lock`` the new file is locked
    before it is visible under its name, and that :class:`LocalLock` is returned."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise MaskFileNotFoundError(f"{path}: directory {directory} does not exist.")
    if exclusive and os.path.lexists(path):
        raise MaskFileExistsError(f"{path}: already exists; nothing was written.")
    with translated(path, "creating a temporary file"):
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=directory)
    lock: LocalLock | None = None
    try:
        with translated(path, "writing"):
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.chmod(tmp, 0o666 & ~_umask())
            if keep_lock:
                lock = LocalLock(path, fd)  # locked before it is visible under its name
            if exclusive:
                _link_exclusive(tmp, path)
            else:
                os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if lock is None:
            os.close(fd)
        else:
            lock.release()
        raise
    if lock is None:
        os.close(fd)
    _fsync_directory(directory)
    return lock


def _link_exclusive(tmp: str, path: str) -> None:
    """Give ``tmp`` the name ``path`` only if ``path`` does not exist (atomically)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise MaskFileExistsError(f"{path}: already exists; nothing was written.") from None
    except OSError:  # no hard links on this filesystem: check, then rename (racy)
        if os.path.lexists(path):
            raise MaskFileExistsError(f"{path}: already exists; nothing was written.") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@functools.cache
def _umask() -> int:
    mask = os.umask(0)  # read once: umask has no getter
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
