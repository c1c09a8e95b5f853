"""Local files held for writing in place: an advisory lock (:class:`LocalLock`) and the
positioned reads and writes made under it (:class:`LocalFile`)."""

from __future__ import annotations

import os
import time

from ..errors import LockTimeoutError, MaskFileNotFoundError, StorageError
from ._errors import storage_error, translated

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, compare-before-commit only
    fcntl = None  # type: ignore[assignment]

__all__ = ["LocalFile", "LocalLock"]

#: How often a waiting writer retries a held lock.
_LOCK_POLL = 0.02


class LocalLock:
    """An exclusive advisory lock (``flock``) on a local file, held through an open descriptor.

    ``flock`` locks belong to an open file description, so two handles in one process exclude
    each other like two processes do. The descriptor is opened read-write and may be used for
    in-place writes while the lock is held (:attr:`file`). Without ``fcntl`` (Windows) the lock
    is a no-op.
    """

    def __init__(self, path: str, fd: int) -> None:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises before we own ``fd``
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, path: str, timeout: float) -> LocalLock | None:
        """Lock ``path`` (waiting up to ``timeout`` s); None if the file does not exist.

        When the file is replaced (renamed over) while waiting, the new file is locked instead.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                with translated(path, "opening for writing"):
                    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
            except MaskFileNotFoundError:
                return None
            try:
                lock = cls._wait(path, fd, deadline, timeout)
            except BaseException:
                os.close(fd)
                raise
            if lock.is_current():
                return lock
            lock.release()  # replaced while we waited: lock the new file

    @classmethod
    def _wait(cls, path: str, fd: int, deadline: float, timeout: float) -> LocalLock:
        while True:
            try:
                return cls(path, fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"{path}: another writer has held the archive open for appending for "
                        f"more than {timeout:g} s; close it or pass a longer lock_timeout."
                    ) from None
                time.sleep(_LOCK_POLL)

    @property
    def file(self) -> LocalFile:
        """The locked file, for positioned reads and writes while the lock is held."""
        return LocalFile(self)

    def is_current(self) -> bool:
        """Whether ``path`` still names the locked file (not replaced or deleted)."""
        try:
            on_disk, held = os.stat(self.path), os.fstat(self.fd)
        except OSError:
            return False
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        """Unlock and close (closing releases the lock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            self.release()


class LocalFile:
    """Positioned reads and writes on a locked local file, through its lock's descriptor (so
    they fail, rather than reach another file, once the lock is released). An ``OSError``
    becomes medmask's storage error naming the file.
    """

    def __init__(self, lock: LocalLock) -> None:
        self._lock = lock

    @property
    def path(self) -> str:
        """The file's path."""
        return self._lock.path

    @property
    def fd(self) -> int:
        """The lock's descriptor (-1 once released)."""
        return self._lock.fd

    def _held(self, doing: str) -> int:
        if self._lock.fd < 0:
            raise StorageError(f"{self.path}: {doing} failed (its lock was released).")
        return self._lock.fd

    def size(self) -> int:
        """The file's current size in bytes."""
        try:
            return os.fstat(self._held("reading the size of")).st_size
        except OSError as exc:
            raise storage_error(exc, self.path, "reading the size of") from exc

    def pread(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (fewer at the end of the file)."""
        try:
            return os.pread(self._held("reading"), n, offset)
        except OSError as exc:
            raise storage_error(exc, self.path, "reading") from exc

    def pwrite(self, data: bytes, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less per call)."""
        fd, view, position = self._held("writing"), memoryview(data), offset
        try:
            while view:
                written = os.pwrite(fd, view, position)
                view, position = view[written:], position + written
        except OSError as exc:
            raise storage_error(exc, self.path, "writing") from exc

    def fsync(self) -> None:
        """Flush the file's data to disk."""
        try:
            os.fsync(self._held("flushing to disk"))
        except OSError as exc:
            raise storage_error(exc, self.path, "flushing to disk") from exc
