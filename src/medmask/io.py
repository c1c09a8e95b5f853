"""The one place that turns paths, URLs and file objects into byte reads and writes.

Remote reads are exact byte ranges (``cat_file(path, start=, end=)``); adjacent ranges are
merged and several ranges go out concurrently (``cat_ranges``). Nothing here reads through an
fsspec file object, whose default read-ahead block would fetch 50 MiB.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from .errors import MaskFileNotFoundError, MedmaskError

__all__ = [
    "HEAD_GUESS",
    "ByteSource",
    "Target",
    "is_local",
    "local_path",
    "merge_ranges",
    "open_source",
    "read_ranges_after_head",
    "source_name",
    "write_atomic",
]

#: First read of a file: header, metadata and index usually fit.
HEAD_GUESS = 64 << 10
#: Ranges closer than this are fetched as one request.
MERGE_GAP = 4 << 10

Target = str | os.PathLike[str] | BinaryIO | Any


class ByteSource(Protocol):
    """Random-access reads from one file or object."""

    name: str
    #: File size in bytes when known without an extra request, else None.
    size: int | None

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; fewer at the end of the file."""
        ...

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Bytes of each ``[start, end)`` range (merged into fewer requests where adjacent)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


def merge_ranges(
    ranges: Iterable[tuple[int, int]], gap: int = MERGE_GAP
) -> list[tuple[int, int]]:
    """Sort ranges and merge those that overlap or lie within ``gap`` bytes of each other."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _split(
    ranges: Sequence[tuple[int, int]], merged: Sequence[tuple[int, int]], blobs: Sequence[bytes]
) -> list[bytes]:
    out = []
    for start, end in ranges:
        for (m_start, m_end), blob in zip(merged, blobs, strict=True):
            if m_start <= start and end <= m_end:
                out.append(blob[start - m_start : end - m_start])
                break
    return out


class _RangeReader:
    name: str
    size: int | None = None

    def read(self, start: int, end: int) -> bytes:
        raise NotImplementedError

    def _read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.read(s, e) for s, e in ranges]

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        merged = merge_ranges(ranges)
        return _split(ranges, merged, self._read_many(merged))

    def close(self) -> None:
        pass


class LocalSource(_RangeReader):
    """A local file read with ``os.pread``."""

    def __init__(self, path: str) -> None:
        self.name = path
        self._fd = -1
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise MaskFileNotFoundError(f"{path}: no such file.") from None
        except IsADirectoryError:
            raise MaskFileNotFoundError(f"{path}: is a directory, not a file.") from None
        if os.path.isdir(path):
            os.close(fd)
            raise MaskFileNotFoundError(f"{path}: is a directory, not a file.")
        self._fd = fd
        self.size = os.fstat(fd).st_size

    def read(self, start: int, end: int) -> bytes:
        size = self.size or 0
        if end > size:  # re-check: the file may have grown since it was opened
            size = self.size = os.fstat(self._fd).st_size
        # clamp to the file: a hostile index may ask for 2**63 offsets or terabyte lengths
        end = min(end, size)
        if end <= start:
            return b""
        return os.pread(self._fd, end - start, start)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


class FsspecSource(_RangeReader):
    """An object on any fsspec filesystem, read with exact ranged requests."""

    def __init__(self, fs: Any, path: str, name: str) -> None:
        self.fs, self.path, self.name = fs, path, name
        self.size = None  # unknown without an extra request

    def _translate(self, exc: Exception) -> Exception:
        if isinstance(exc, FileNotFoundError):
            return MaskFileNotFoundError(f"{self.name}: no such file or object.")
        return exc

    def read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            data = self.fs.cat_file(self.path, start=start, end=end)
        except FileNotFoundError as exc:
            raise self._translate(exc) from None
        except OSError as exc:
            if "Range" in str(exc) or "416" in str(exc):  # start at or beyond the end
                return b""
            raise
        return bytes(data)

    def _read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if len(ranges) == 1:
            return [self.read(*ranges[0])]
        try:
            blobs = self.fs.cat_ranges(
                [self.path] * len(ranges), [s for s, _ in ranges], [e for _, e in ranges]
            )
        except FileNotFoundError as exc:
            raise self._translate(exc) from None
        for blob in blobs:
            if isinstance(blob, Exception):
                raise self._translate(blob)
        return [bytes(b) for b in blobs]


class FileObjectSource(_RangeReader):
    """A seekable binary file object (not closed by us)."""

    def __init__(self, fileobj: BinaryIO, name: str) -> None:
        self.fileobj, self.name = fileobj, name
        self._lock = threading.Lock()
        self.size = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.size = int(fileobj.seek(0, os.SEEK_END))

    def read(self, start: int, end: int) -> bytes:
        if self.size is not None:
            end = min(end, self.size)  # never ask a file object for a hostile length
        if end <= start:
            return b""
        with self._lock:
            self.fileobj.seek(start)
            return self.fileobj.read(end - start)


def read_ranges_after_head(
    source: ByteSource, head: bytes, ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """Bytes of ``ranges``, served from ``head`` (the file's first read) where it covers them.

    A head shorter than :data:`HEAD_GUESS` is the whole file, so it covers every range; the
    other ranges are fetched merged.
    """
    whole_file = len(head) < HEAD_GUESS
    missing = [(s, e) for s, e in ranges if not (e <= len(head) or whole_file)]
    fetched = dict(zip(missing, source.read_ranges(missing), strict=True))
    return [fetched[(s, e)] if (s, e) in fetched else head[s:e] for s, e in ranges]


def source_name(target: Target) -> str:
    """A human-readable name of a path, URL, OpenFile or file object for messages."""
    if isinstance(target, str | os.PathLike):
        return os.fspath(target)
    path = getattr(target, "full_name", None) or getattr(target, "path", None)
    if isinstance(path, str):
        return path
    name = getattr(target, "name", None)
    return name if isinstance(name, str) else repr(target)


def _url_to_fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec.core

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise MedmaskError(f"{url}: cannot open this URL: {exc}") from exc
    return fs, str(path)


def _is_local_fs(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def local_path(target: Target, storage_options: dict[str, Any] | None = None) -> str | None:
    """The local filesystem path of ``target`` if it is one (path, ``file://`` URL), else None."""
    if isinstance(target, os.PathLike):
        return os.fspath(target)
    if isinstance(target, str):
        if "://" not in target and "::" not in target:
            return target
        if target.startswith("file://"):
            fs, path = _url_to_fs(target, storage_options)
            return str(path)
        return None
    fs = getattr(target, "fs", None)
    if fs is not None and _is_local_fs(fs) and hasattr(target, "path"):
        return str(target.path)
    return None


def is_local(target: Target, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``target`` names a local file."""
    return local_path(target, storage_options) is not None


def open_source(source: Target, storage_options: dict[str, Any] | None = None) -> ByteSource:
    """Open a path, URL, fsspec ``OpenFile`` or binary file object for ranged reads."""
    path = local_path(source, storage_options)
    if path is not None:
        return LocalSource(path)
    if isinstance(source, str):
        fs, fs_path = _url_to_fs(source, storage_options)
        return FsspecSource(fs, fs_path, source)
    fs = getattr(source, "fs", None)
    if fs is not None and hasattr(source, "path"):  # fsspec OpenFile
        return FsspecSource(fs, source.path, source_name(source))
    if hasattr(source, "read") and hasattr(source, "seek"):
        return FileObjectSource(source, source_name(source))  # type: ignore[arg-type]
    raise TypeError(
        "Expected a path, URL, fsspec OpenFile or seekable binary file object. "
        f"Got {type(source).__name__}."
    )


def write_atomic(
    target: Target, pieces: Sequence[bytes], storage_options: dict[str, Any] | None = None
) -> None:
    """Write ``pieces`` as the whole content of ``target``, replacing it only on success.

    Local files go to a temporary file in the same directory, are flushed to disk and renamed
    over the target. Object stores replace an object atomically with one PUT.
    """
    path = local_path(target, storage_options)
    if path is not None:
        _write_local_atomic(path, pieces)
        return
    if isinstance(target, str):
        fs, fs_path = _url_to_fs(target, storage_options)
        fs.pipe_file(fs_path, b"".join(pieces))
        return
    fs = getattr(target, "fs", None)
    if fs is not None and hasattr(target, "path"):
        fs.pipe_file(target.path, b"".join(pieces))
        return
    if hasattr(target, "write"):
        for piece in pieces:
            target.write(piece)
        return
    raise TypeError(
        "Expected a path, URL, fsspec OpenFile or writable binary file object. "
        f"Got {type(target).__name__}."
    )


def _write_local_atomic(path: str, pieces: Sequence[bytes]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise MaskFileNotFoundError(f"{path}: directory {directory} does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


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
