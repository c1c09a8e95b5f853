"""medmask._workers: which threads decode and encode chunks (the policy the readers and
writers hand to format/, which only decides whether a call is large enough to spread)."""

from __future__ import annotations

import os
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


def test_main_thread_gets_one_shared_pool_sized_by_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
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
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # a pool even on one CPU
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
