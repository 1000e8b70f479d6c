"""Background regeneration: a bounded pool of worker threads per process."""

from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from django.utils import timezone, translation

__all__ = ["submit"]

_lock = threading.Lock()
_pools: dict[int, tuple[int, ThreadPoolExecutor]] = {}


def submit(workers: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in this process's pool of ``workers`` threads.

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
                ThreadPoolExecutor(workers, thread_name_prefix="django_dogpile"),
            )
            _pools[workers] = entry
    state = (translation.get_language(), timezone.get_current_timezone())
    entry[1].submit(contextvars.copy_context().run, _as_caller, state, fn, *args)


def _as_caller(state: tuple[str | None, Any], fn: Callable[..., Any], *args: Any) -> Any:
    language, zone = state
    with translation.override(language), timezone.override(zone):
        return fn(*args)
