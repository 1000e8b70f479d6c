"""Background regeneration: a bounded pool of worker threads per process."""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.utils import timezone, translation

__all__ = ["submit"]

_lock = threading.Lock()
#: the names of the pool's threads begin with it (the toolbar panel leaves them out)
THREAD_NAME = "django_dogpile"

_pools: dict[int, tuple[int, ThreadPoolExecutor]] = {}


#: Jobs queued or running per worker before ``submit`` refuses more.
QUEUE_PER_WORKER = 4
_slots: dict[int, tuple[int, threading.BoundedSemaphore]] = {}


def submit(workers: int, fn: Callable[..., Any], *args: Any) -> bool:
    """Run ``fn(*args)`` in this process's pool of ``workers`` threads.

    Return False, running nothing, when ``workers * QUEUE_PER_WORKER`` jobs
    are already queued or running: the queue is bounded, and each job holds
    a lease and its closure until it runs.

    Pools are keyed by size and re-created after a fork (a pool inherited
    from the parent has no threads in the child).

    ``fn`` runs as the caller would have: in a copy of its context
    variables, with its active language and time zone (Django keeps those
    per thread, so a pool thread would otherwise render a page regenerated
    for a French request in the default language).
    """
    pid = os.getpid()
    with _lock:
        entry = _pools.get(workers)
        if entry is None or entry[0] != pid:
            entry = (
                pid,
                ThreadPoolExecutor(workers, thread_name_prefix=THREAD_NAME),
            )
            _pools[workers] = entry
            _slots[workers] = (pid, threading.BoundedSemaphore(workers * QUEUE_PER_WORKER))
        slots = _slots[workers][1]
    if not slots.acquire(blocking=False):
        return False
    state = (translation.get_language(), timezone.get_current_timezone())
    try:
        entry[1].submit(contextvars.copy_context().run, _as_caller, slots, state, fn, *args)
    except BaseException:
        slots.release()
        raise
    return True


def _as_caller(
    slots: threading.BoundedSemaphore, state: tuple[str | None, Any], fn: Callable[..., Any], *args: Any
) -> Any:
    language, zone = state
    try:
        with translation.override(language), timezone.override(zone):
            return fn(*args)
    finally:
        slots.release()
