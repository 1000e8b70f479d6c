"""Background regeneration: a bounded pool of worker threads per process."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

__all__ = ["submit"]

_lock = threading.Lock()
_pools: dict[int, tuple[int, ThreadPoolExecutor]] = {}


def submit(workers: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in this process's pool of ``workers`` threads.

    Pools are keyed by size and re-created after a fork (a pool inherited
    from the parent has no threads in the child).
    """
    pid = os.getpid()
    with _lock:
        entry = _pools.get(workers)
        if entry is None or entry[0] != pid:
            entry = (
                pid,
                ThreadPoolExecutor(workers, thread_name_prefix="django_dogpile"),
            )
            _pools[workers] = entry
    entry[1].submit(fn, *args)
