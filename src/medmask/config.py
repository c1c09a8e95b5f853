"""Process-wide settings: decode limits, range planning, concurrency, decode threads and the
defaults of the head cache. The one place that reads ``MEDMASK_*`` environment variables.

The environment is read once, when medmask is imported (or on :func:`refresh`); after that
:func:`get` returns the settings and :func:`set` changes them for a block, as
``zarr.config.set`` does::

    with medmask.config.set(max_voxels=10**9):
        mask = medmask.load_mask("big.msk")

An explicit argument (``load_mask(..., max_voxels=...)``) always wins over the settings.

Two byte ranges closer than a gap are read with one request; the gap depends on the store.
``range_gap`` applies to local files, ``memory://`` and file objects, where a read costs
microseconds and skipped bytes are wasted work; ``range_gap_remote`` to object stores and HTTP
(``s3://``, ``gs://``, ``az://``, ``https://``...), where a request costs a round trip (tens of
milliseconds) and a few hundred KiB more cost less than one (docs/remote.md).

| setting | default | environment variable |
|---|---|---|
| ``max_voxels`` | 2**33 | ``MEDMASK_MAX_VOXELS`` |
| ``max_bytes`` | 8 GiB | ``MEDMASK_MAX_BYTES`` |
| ``range_gap`` | 4 KiB | ``MEDMASK_RANGE_GAP`` |
| ``range_gap_remote`` | 256 KiB | ``MEDMASK_RANGE_GAP_REMOTE`` |
| ``range_block`` | 16 MiB | ``MEDMASK_RANGE_BLOCK`` |
| ``max_concurrency`` | 32 | ``MEDMASK_MAX_CONCURRENCY`` |
| ``decode_threads`` | 8 | ``MEDMASK_DECODE_THREADS`` |
| ``threads`` | 0 (automatic) | ``MEDMASK_THREADS`` |
| ``head_cache_entries`` | 1024 | ``MEDMASK_HEAD_CACHE_ENTRIES`` |
| ``head_cache_bytes`` | 256 MiB | ``MEDMASK_HEAD_CACHE_BYTES`` |
| ``head_cache_ttl`` | 60.0 s | ``MEDMASK_HEAD_CACHE_TTL`` |
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import InvalidValueError

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "Config",
    "from_environ",
    "get",
    "max_bytes_limit",
    "max_voxels_limit",
    "refresh",
    "set",
]


@dataclass(frozen=True)
class Config:
    """medmask's settings (see the module docstring for each one's meaning and default)."""

    #: voxels of one decoded mask (docs/format.md section 6)
    max_voxels: int = 1 << 33
    #: decoded bytes of one mask
    max_bytes: int = 8 << 30
    #: two byte ranges at most this far apart are read with one request (local files,
    #: ``memory://``, file objects)
    range_gap: int = 4 << 10
    #: the same on object stores and HTTP, where a request costs a round trip
    range_gap_remote: int = 256 << 10
    #: a merged request reads at most this many bytes
    range_block: int = 16 << 20
    #: requests in flight at once when reading many objects
    max_concurrency: int = 32
    #: threads that decode the chunks of one mask (at most; the older name of ``threads``,
    #: still the cap of its automatic choice)
    decode_threads: int = 8
    #: threads that encode, decode and build one mask: 0 for one per available CPU (at most
    #: ``decode_threads``) and one inside a Dask task; N for N (at most one per available CPU)
    #: everywhere (medmask._workers)
    threads: int = 0
    #: :meth:`medmask.io.HeadCache.enable`'s defaults
    head_cache_entries: int = 1024
    head_cache_bytes: int = 256 << 20
    head_cache_ttl: float = 60.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            number = (int, float) if field.type == "float" else (int,)
            if isinstance(value, bool) or not isinstance(value, number) or value < 0:
                raise InvalidValueError(
                    f"medmask.config: expected {field.name} as a non-negative "
                    f"{field.type}. Got {value!r}."
                )
        if self.decode_threads < 1 or self.max_concurrency < 1:
            raise InvalidValueError(
                "medmask.config: decode_threads and max_concurrency must be at least 1."
            )


#: The environment variable of each setting.
ENVIRONMENT_VARIABLES: Mapping[str, str] = {
    f.name: f"MEDMASK_{f.name.upper()}" for f in dataclasses.fields(Config)
}


def from_environ(environ: Mapping[str, str] | None = None) -> Config:
    """The defaults, overridden by the ``MEDMASK_*`` variables set in ``environ``
    (default: ``os.environ``)."""
    environ = os.environ if environ is None else environ
    changes: dict[str, int | float] = {}
    for field in dataclasses.fields(Config):
        variable = ENVIRONMENT_VARIABLES[field.name]
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            changes[field.name] = float(text) if field.type == "float" else int(text)
        except ValueError:
            raise InvalidValueError(f"{variable}: expected a number. Got {text!r}.") from None
    return Config(**changes)  # type: ignore[arg-type]


_lock = threading.Lock()
_current = [from_environ()]


def get() -> Config:
    """The settings in force."""
    return _current[0]


def refresh() -> Config:
    """Read the ``MEDMASK_*`` environment variables again (replacing every setting)."""
    with _lock:
        _current[0] = from_environ()
        return _current[0]


@contextmanager
def set(**changes: int | float) -> Iterator[Config]:
    """Change settings for the ``with`` block (process-wide, as ``zarr.config.set``)."""
    unknown = sorted(changes.keys() - ENVIRONMENT_VARIABLES.keys())
    if unknown:
        raise InvalidValueError(
            f"medmask.config: unknown settings {unknown}; known: {sorted(ENVIRONMENT_VARIABLES)}."
        )
    with _lock:
        before = _current[0]
        _current[0] = dataclasses.replace(before, **changes)  # type: ignore[arg-type]
    try:
        yield _current[0]
    finally:
        with _lock:
            _current[0] = before


def max_voxels_limit(max_voxels: int | None = None) -> int:
    """The voxel limit in force: ``max_voxels`` if given, else :attr:`Config.max_voxels`."""
    return int(max_voxels) if max_voxels is not None else get().max_voxels


def max_bytes_limit(max_bytes: int | None = None) -> int:
    """The decoded-bytes limit in force: ``max_bytes`` if given, else :attr:`Config.max_bytes`."""
    return int(max_bytes) if max_bytes is not None else get().max_bytes
