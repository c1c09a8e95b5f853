"""Which threads decode and encode chunks: policy, kept out of ``format/`` (bytes in, bytes out).

The readers and writers ask :func:`chunk_executor` for an executor and hand it to
:func:`medmask.format.encoding.decode_region` / ``encode_mask``, which only decide whether a
call is large enough to be worth spreading over it. ``import medmask`` hands it to
:class:`medmask.SegmentationMask` too, for the copy and count of a large array.

The policy (``config.threads``, ``MEDMASK_THREADS``):

- 0, the default: one thread per CPU this process may run on (``os.sched_getaffinity``, so
  ``taskset`` and container CPU sets count), at most ``config.decode_threads``; one thread
  inside a Dask task and in any thread but the main one, where calls already run in parallel
  and a pool per worker would oversubscribe the CPUs;
- N >= 1: N threads (at most one per available CPU) wherever the call is made, Dask tasks
  included.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from concurrent.futures import Executor, ThreadPoolExecutor

from .config import get as get_config

__all__ = ["available_cpus", "chunk_executor", "chunk_threads", "in_dask_task"]

# one pool per thread count, started on first use; a forked child has none of the threads
_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()
_pool_thread = threading.local()  # .active is True in the pools' own threads
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pools.clear)


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (Linux), else
    ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def in_dask_task() -> bool:
    """Whether this call runs inside a Dask task: on a ``dask.distributed`` worker
    (``distributed.get_worker()`` succeeds), or in a child process of ``multiprocessing`` once
    dask is imported, which is how Dask's ``processes`` scheduler runs its tasks. (Dask's
    ``threads`` scheduler runs tasks off the main thread, which counts as parallel already.)
    Imports neither dask nor distributed."""
    distributed = sys.modules.get("distributed")
    get_worker = getattr(distributed, "get_worker", None)
    if get_worker is not None:
        try:
            get_worker()
            return True
        except ValueError:  # "No worker found": not in a task
            pass
    return "dask" in sys.modules and multiprocessing.parent_process() is not None


def chunk_threads() -> int:
    """Threads for one call's chunks here and now, by the policy of the module docstring."""
    settings = get_config()
    cpus = available_cpus()
    if settings.threads:
        return min(settings.threads, cpus)
    if threading.current_thread() is not threading.main_thread() or in_dask_task():
        return 1
    return min(cpus, settings.decode_threads)


def chunk_executor() -> Executor | None:
    """The shared pool for chunk work (:func:`chunk_threads` threads), or None when one thread
    is all this call gets (never a pool to a thread of the pool itself). zstd, numpy and the
    edges kernel release the GIL, so threads decode in parallel."""
    if getattr(_pool_thread, "active", False):
        return None
    threads = chunk_threads()
    if threads <= 1:
        return None
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix="medmask", initializer=_mark_pool_thread
            )
    return pool


def _mark_pool_thread() -> None:
    _pool_thread.active = True
