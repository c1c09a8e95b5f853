"""medmask._workers: which threads decode and encode chunks (the policy the readers and
writers hand to format/, which only decides whether a call is large enough to spread)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medmask
from medmask import _workers, config, engine
from medmask.format import encoding


def _cpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Pretend this process may run on ``n`` CPUs (its affinity mask, and the count without)."""
    monkeypatch.setattr(os, "cpu_count", lambda: n)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)


def test_main_thread_gets_one_shared_pool_sized_by_config(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpus(monkeypatch, 4)
    with config.set(decode_threads=2):
        pool = _workers.chunk_executor()
        assert isinstance(pool, ThreadPoolExecutor)
        assert pool is _workers.chunk_executor()
        assert pool._max_workers == 2
    with config.set(decode_threads=16):  # at most one thread per CPU
        assert _workers.chunk_threads() == 4
        bigger = _workers.chunk_executor()
        assert isinstance(bigger, ThreadPoolExecutor)
        assert bigger._max_workers == 4


def test_one_thread_means_no_pool() -> None:
    with config.set(decode_threads=1):
        assert _workers.chunk_threads() == 1
        assert _workers.chunk_executor() is None


def test_worker_threads_get_no_pool() -> None:
    # inside Dask or zarr worker threads calls already run in parallel: no nested pool
    seen: list[object] = []
    worker = threading.Thread(target=lambda: seen.append(_workers.chunk_executor()))
    worker.start()
    worker.join()
    assert seen == [None]


class _Recording(Executor):
    """Runs ``map`` inline and remembers how many items it was given."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **_: Any) -> Iterator[Any]:
        items = list(iterables[0])
        self.calls.append(len(items))
        return iter([fn(item) for item in items])


def _big_mask() -> medmask.SegmentationMask:
    data = np.zeros((64, 128, 128), np.uint8)  # 1 MiB per 64-slice chunk at chunks=(16,128,128)
    data[::3, 10:100, 20:90] = 1
    data[1::3, 30:60, 40:120] = 2
    return medmask.SegmentationMask(data, {"a": 1, "b": 2})


def test_encode_and_decode_spread_large_calls_over_the_executor() -> None:
    mask = _big_mask()
    serial = encoding.encode_mask(mask, chunks=(16, 128, 128))
    recorder = _Recording()
    spread = encoding.encode_mask(mask, chunks=(16, 128, 128), executor=recorder)
    # below PARALLEL_MIN_BYTES (1 MiB here): one after another, and the same bytes either way
    assert recorder.calls == []
    assert spread.streams == serial.streams

    with_more = medmask.SegmentationMask(np.tile(mask.data, (4, 1, 1)), mask.mapping)
    assert with_more.data.nbytes >= encoding.PARALLEL_MIN_BYTES
    serial = encoding.encode_mask(with_more, chunks=(16, 128, 128))
    spread = encoding.encode_mask(with_more, chunks=(16, 128, 128), executor=recorder)
    assert recorder.calls == [16]
    assert spread.streams == serial.streams
    assert spread.descriptor == serial.descriptor

    descriptor, index = spread.descriptor, spread.index(0)
    streams = dict(enumerate(spread.streams))
    z, y, x = descriptor.shape
    roi = (slice(0, z), slice(0, y), slice(0, x))
    plain = encoding.decode_region(descriptor, index, roi, streams, name="m")
    threaded = encoding.decode_region(descriptor, index, roi, streams, name="m", executor=recorder)
    assert recorder.calls == [16, 16]
    np.testing.assert_array_equal(plain, with_more.data)
    np.testing.assert_array_equal(threaded, with_more.data)


def test_load_from_the_main_thread_decodes_on_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cpus(monkeypatch, 2)  # a pool even on one CPU
    mask = medmask.SegmentationMask(np.tile(_big_mask().data, (4, 1, 1)), {"a": 1, "b": 2})
    medmask.save_mask(mask, tmp_path / "m.msk", chunks=(16, 128, 128))
    names: list[str] = []
    shared = _workers.chunk_executor()
    assert shared is not None
    real: Executor = shared

    class Spy(Executor):
        def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **_: Any) -> Iterator[Any]:
            def named(item: Any) -> Any:
                names.append(threading.current_thread().name)
                return fn(item)

            return real.map(named, *iterables)

    monkeypatch.setattr(engine, "chunk_executor", Spy)
    loaded = medmask.load_mask(tmp_path / "m.msk")
    np.testing.assert_array_equal(loaded.data, mask.data)
    assert len(names) == 16
    assert all(name.startswith("medmask") for name in names)


# --- the thread knob: affinity, config.threads / MEDMASK_THREADS, Dask tasks ---------------------


def test_threads_follow_the_cpu_affinity_not_the_cpu_count() -> None:
    # as under `taskset -c 0`: one CPU allowed, whatever os.cpu_count() says
    script = (
        "import os, medmask\n"
        "from medmask import _workers\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "print(_workers.available_cpus(), _workers.chunk_threads(), _workers.chunk_executor())\n"
    )
    env = {**os.environ, "MEDMASK_DECODE_THREADS": "8"}
    env.pop("MEDMASK_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["1", "1", "None"]


def test_the_threads_setting_and_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _cpus(monkeypatch, 4)
    assert config.from_environ({"MEDMASK_THREADS": "3"}).threads == 3
    assert config.Config().threads == 0  # automatic
    with config.set(threads=3):
        assert _workers.chunk_threads() == 3
    with config.set(threads=16):  # at most one per available CPU
        assert _workers.chunk_threads() == 4
    with config.set(decode_threads=2):  # the older name still caps the automatic choice
        assert _workers.chunk_threads() == 2
    with config.set(threads=1):
        assert _workers.chunk_executor() is None


def test_worker_threads_get_a_pool_only_when_the_setting_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _cpus(monkeypatch, 2)
    seen: list[object] = []

    def look() -> None:
        seen.append(_workers.chunk_executor())
        with config.set(threads=2):
            pool = _workers.chunk_executor()
            seen.append(pool)
            # a thread of the pool never gets the pool (no task waits on its own pool)
            seen.append(pool.submit(_workers.chunk_executor).result() if pool else "no pool")

    worker = threading.Thread(target=look)
    worker.start()
    worker.join()
    assert seen[0] is None
    assert isinstance(seen[1], ThreadPoolExecutor)
    assert seen[2] is None


def _policy_in_task(threads: int) -> tuple[bool, int, bool]:
    with config.set(threads=threads):
        return (
            _workers.in_dask_task(),
            _workers.chunk_threads(),
            threading.current_thread().name == "MainThread",
        )


def test_one_thread_inside_a_dask_task_unless_asked() -> None:
    import dask
    from distributed import Client, LocalCluster

    assert not _workers.in_dask_task()  # a client's main thread is not a task
    # Dask's processes scheduler runs tasks on the main thread of its child processes
    in_task, threads, main = dask.compute(
        dask.delayed(_policy_in_task)(0), scheduler="processes", num_workers=1
    )[0]
    assert (in_task, threads, main) == (True, 1, True)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as lc,
        Client(lc) as client,
    ):
        assert client.submit(_policy_in_task, 0, pure=False).result()[:2] == (True, 1)
        asked = client.submit(_policy_in_task, 2, pure=False).result()
        assert asked[:2] == (True, min(2, _workers.available_cpus()))
