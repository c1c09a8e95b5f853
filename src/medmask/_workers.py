"""Which threads decode and encode chunks: policy, kept out of ``format/`` (bytes in, bytes out).

The readers and writers ask :func:`chunk_executor` for an executor and hand it to
:func:`medmask.format.encoding.decode_region` / ``encode_mask``, which only decide whether a
call is large enough to be worth spreading over it.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Executor, ThreadPoolExecutor

from .config import get as get_config

__all__ = ["chunk_executor", "chunk_threads"]

# one pool per thread count, started on first use; a forked child has none of the threads
_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pools.clear)


def chunk_threads() -> int:
    """Threads for one call's chunks: ``config.decode_threads``, at most one per CPU."""
    return min(os.cpu_count() or 1, get_config().decode_threads)


def chunk_executor() -> Executor | None:
    """The shared pool for chunk work when called from the main thread, else None (one chunk
    after another: inside Dask or zarr worker threads, calls already run in parallel, and a
    pool per worker would oversubscribe the CPUs). None as well when one thread is all there is.
    zstd, numpy and the edges kernel release the GIL, so threads decode in parallel."""
    if threading.current_thread() is not threading.main_thread():
        return None
    threads = chunk_threads()
    if threads <= 1:
        return None
    with _lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="medmask")
    return pool
