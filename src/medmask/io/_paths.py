"""What a target is (path, URL, file object, fsspec ``OpenFile``), its name and suffix, and
how a URL becomes an fsspec filesystem; listing, globbing and sizes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from ..config import get as get_config
from ..errors import InvalidTypeError, InvalidValueError, MaskFileNotFoundError
from ._errors import storage_error

__all__ = [
    "OpenFileLike",
    "Target",
    "as_file_object",
    "as_open_file",
    "expand_glob",
    "is_file_object",
    "is_local_fs",
    "is_open_file",
    "is_remote_fs",
    "list_folder",
    "local_path",
    "name_suffix",
    "source_name",
    "stored_size",
    "target_fs",
    "url_to_fs",
]


class OpenFileLike(Protocol):
    """An fsspec ``OpenFile`` as medmask uses it: a filesystem and a path in it.

    A protocol rather than ``fsspec.core.OpenFile`` itself because fsspec ships no type
    information: to mypy that class is ``Any``, which would make :data:`Target` accept anything.
    """

    @property
    def fs(self) -> Any:  # an fsspec AbstractFileSystem
        """The filesystem."""
        ...

    @property
    def path(self) -> str:
        """The path in ``fs``."""
        ...


#: Where bytes are read from or written to: a local path, a URL (``s3://``, ``gs://``,
#: ``memory://``, chained ``simplecache::s3://``...), a binary file object, or an fsspec
#: ``OpenFile``.
Target = str | os.PathLike[str] | BinaryIO | OpenFileLike


# as_* return the object or None rather than narrowing with a TypeGuard: mutmut's trampolines
# (nox -s mutation) hide TypeGuard narrowing from mypy, which then fails every mutant.
def as_open_file(target: object) -> OpenFileLike | None:
    """``target`` if it is an fsspec ``OpenFile`` (anything with a filesystem and a path)."""
    if getattr(target, "fs", None) is not None and hasattr(target, "path"):
        return cast(OpenFileLike, target)
    return None


def as_file_object(target: object) -> BinaryIO | None:
    """``target`` if it is a seekable file object (anything with ``read`` and ``seek``)."""
    if hasattr(target, "read") and hasattr(target, "seek"):
        return cast(BinaryIO, target)
    return None


def is_open_file(target: object) -> bool:
    """Whether ``target`` is an fsspec ``OpenFile`` (anything with a filesystem and a path)."""
    return as_open_file(target) is not None


def is_file_object(target: object) -> bool:
    """Whether ``target`` is a seekable file object (anything with ``read`` and ``seek``)."""
    return as_file_object(target) is not None


def source_name(target: Target) -> str:
    """A human-readable name of a path, URL, OpenFile or file object for messages."""
    if isinstance(target, str | os.PathLike):
        return os.fspath(target)
    path = getattr(target, "full_name", None) or getattr(target, "path", None)
    if isinstance(path, str):
        return path
    name = getattr(target, "name", None)
    return name if isinstance(name, str) else repr(target)


def name_suffix(target: Target) -> str:
    """Lower-case file suffix of a path or URL (``.nii.gz`` counts as one), or ``""``."""
    if not isinstance(target, str | os.PathLike):
        return ""
    base = os.fspath(target).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()
    for double in (".nii.gz", ".tar.gz"):
        if base.endswith(double):
            return double
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


def _with_pool(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options``, with an S3 connection pool of :data:`MAX_CONCURRENCY` unless the
    caller chose one: s3fs's default (botocore's 10) would cap the requests a batch has in
    flight."""
    options = dict(storage_options or {})
    if url.split("://", 1)[0] in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("max_pool_connections", get_config().max_concurrency)
        options["config_kwargs"] = config
    return options


def url_to_fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it (fsspec imported here, on first
    use, so that ``import medmask`` stays light)."""
    import fsspec.core

    try:
        fs, path = fsspec.core.url_to_fs(url, **_with_pool(url, storage_options))
    except ValueError as exc:
        raise InvalidValueError(f"{url}: cannot open this URL: {exc}") from exc
    except Exception as exc:  # a missing backend package, bad credentials options...
        raise storage_error(exc, url, "opening the filesystem") from exc
    return fs, str(path)


def target_fs(target: Target, storage_options: dict[str, Any] | None) -> tuple[Any, str, str]:
    """The filesystem, path and name of a URL or fsspec ``OpenFile``."""
    if isinstance(target, str):
        fs, fs_path = url_to_fs(target, storage_options)
        return fs, fs_path, target
    opened = as_open_file(target)
    if opened is not None:
        return opened.fs, str(opened.path), source_name(opened)
    raise InvalidTypeError(f"Expected a path, URL or fsspec OpenFile. Got {type(target).__name__}.")


def is_local_fs(fs: Any) -> bool:
    """Whether ``fs`` is fsspec's local filesystem."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


#: Filesystems whose reads cost no round trip (everything else is an object store or HTTP).
_NEAR_PROTOCOLS = frozenset({"file", "local", "memory"})


def is_remote_fs(fs: Any) -> bool:
    """Whether a request to ``fs`` costs a network round trip (object stores, HTTP...): not
    the local filesystem nor ``memory://``."""
    protocol = getattr(fs, "protocol", ())
    protocols = protocol if isinstance(protocol, tuple | list) else (protocol,)
    return not _NEAR_PROTOCOLS.intersection(protocols)


def local_path(target: Target, storage_options: dict[str, Any] | None = None) -> str | None:
    """The local filesystem path of ``target`` if it is one (path, ``file://`` URL), else None."""
    if isinstance(target, os.PathLike):
        return os.fspath(target)
    if isinstance(target, str):
        if "://" not in target and "::" not in target:
            return target
        if target.startswith("file://"):
            _, path = url_to_fs(target, storage_options)
            return str(path)
        return None
    opened = as_open_file(target)
    if opened is not None and is_local_fs(opened.fs):
        return str(opened.path)
    return None


def stored_size(target: Target, storage_options: dict[str, Any] | None = None) -> int:
    """Size in bytes of a stored file or object (one metadata request when remote)."""
    path = local_path(target, storage_options)
    name = source_name(target)
    if path is not None:
        try:
            return os.path.getsize(path)
        except FileNotFoundError:
            raise MaskFileNotFoundError(f"{name}: no such file.") from None
    fs, fs_path, name = target_fs(target, storage_options)
    try:
        return int(fs.size(fs_path))
    except Exception as exc:
        raise storage_error(exc, name, "reading the size of", fs=fs, path=fs_path) from exc


def list_folder(folder: Target, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths (local) or URLs (remote) of the files directly in ``folder``, sorted."""
    name = source_name(folder)
    path = local_path(folder, storage_options)
    if path is not None:
        if not os.path.isdir(path):
            raise MaskFileNotFoundError(f"{name}: no such folder.")
        return sorted(str(p) for p in Path(path).iterdir() if p.is_file())
    fs, fs_path, _ = target_fs(folder, storage_options)
    try:
        entries = fs.ls(fs_path, detail=True)
    except FileNotFoundError:
        raise MaskFileNotFoundError(f"{name}: no such folder.") from None
    except Exception as exc:
        raise storage_error(exc, name, "listing") from exc
    files = [e["name"] for e in entries if e.get("type", "file") == "file"]
    return sorted(fs.unstrip_protocol(f) for f in files)


def expand_glob(pattern: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Files matching a glob (``s3://bucket/cases/*.mska``, ``cases/**/*.msk``), sorted;
    local patterns give paths, remote ones URLs."""
    local = "://" not in pattern and "::" not in pattern
    fs, fs_path = url_to_fs(pattern, storage_options)
    try:
        matches = sorted(fs.glob(fs_path))
    except Exception as exc:
        raise storage_error(exc, pattern, "listing") from exc
    return [str(m) for m in matches] if local else [fs.unstrip_protocol(m) for m in matches]
