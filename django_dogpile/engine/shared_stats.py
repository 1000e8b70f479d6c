"""Counters summed over every process that shares a store.

Each process counts for itself (:mod:`django_dogpile.stats`, lock-free, no
round trip on the hit path).  A daemon thread per process publishes those
counters every ``DOGPILE["STATS_INTERVAL"]`` seconds (default 5) into the
store of each DogpileCache alias it used: one record per process
(``dogpile.stats.<alias>.<host>.<pid>``, kept for 6 intervals), and an index
of the processes seen.  :func:`shared_stats` reads them back and sums them;
``manage.py dogpile stats`` prints them.

A process appears within one interval of its first use of the cache, and
its record goes 6 intervals after it stops.  A process forked from one that
used the cache (gunicorn ``--preload`` with a warm-up) starts its own
counters at zero and its own publisher thread: the parent's thread does not
come along, and its counts are the parent's.  The index is read, changed
and written back (the cache API has no atomic set-add): two processes
writing it at once can drop one entry, which its process puts back at its
next publish.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from django_dogpile.stats import COUNTERS, stats_for

__all__ = ["publish_now", "shared_stats", "start_publishing"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_aliases: set[str] = set()
_thread: tuple[int, threading.Thread] | None = None
_KEEP = 6  # intervals a process's record outlives its last publish


def _interval() -> float:
    from django_dogpile.conf import get_config

    return float(get_config()["STATS_INTERVAL"])


def _proc() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def _keys(alias: str) -> tuple[str, str]:
    return f"dogpile.stats.{alias}.index", f"dogpile.stats.{alias}.{_proc()}"


def start_publishing(alias: str) -> None:
    """Publish ``alias``'s counters from this process from now on."""
    global _thread
    with _lock:
        _aliases.add(alias)
        pid = os.getpid()
        if _thread is not None and _thread[0] == pid and _thread[1].is_alive():
            return
        if _interval() <= 0:
            return
        thread = threading.Thread(target=_run, name="django_dogpile-stats", daemon=True)
        _thread = (pid, thread)
        thread.start()


def _after_fork_in_child() -> None:
    """A forked child: zero counters of its own, its own publisher."""
    global _thread, _lock
    from django_dogpile.stats import forked

    _lock = threading.Lock()  # another thread may have held it at the fork
    forked()
    _thread = None
    for alias in list(_aliases):
        start_publishing(alias)
        break  # one thread publishes every alias


os.register_at_fork(after_in_child=_after_fork_in_child)


def _run() -> None:
    while True:
        interval = _interval()
        time.sleep(interval if interval > 0 else 1.0)
        if interval <= 0:
            continue  # switched off since the thread started
        try:
            publish_now()
        except Exception:  # a store outage must not end the thread
            log.debug("could not publish the counters", exc_info=True)


def publish_now() -> None:
    """Publish this process's counters of every alias it used."""
    from django.conf import settings
    from django.core.cache import caches

    interval = max(_interval(), 1.0)
    for alias in sorted(_aliases):
        if alias not in settings.CACHES:
            continue  # a DogpileCache made by hand, not through CACHES
        try:
            _publish(getattr(caches[alias], "store", None), alias, interval)
        except Exception:
            log.debug("could not publish the counters of %r", alias, exc_info=True)


def _publish(store: Any, alias: str, interval: float) -> None:
    index_key, own_key = _keys(alias)
    row = {**stats_for(alias).snapshot(), "at": time.time()}
    store.set(own_key, row, timeout=interval * _KEEP)
    now = time.time()
    index = store.get(index_key) or {}
    index = {k: seen for k, seen in index.items() if now - seen < interval * _KEEP}
    index[own_key] = now
    store.set(index_key, index, timeout=None)


def shared_stats(alias: str = "default") -> dict[str, Any]:
    """Return ``{"total": {counter: n}, "processes": {proc: {counter: n, "at": t}}}``
    for ``alias``, summed over the processes that published recently."""
    from django.core.cache import caches

    store: Any = getattr(caches[alias], "store", None)
    index_key, _ = _keys(alias)
    index = store.get(index_key) or {}
    rows = store.get_many(list(index)) if index else {}
    total = dict.fromkeys(COUNTERS, 0)
    for row in rows.values():
        for name in COUNTERS:
            total[name] += int(row.get(name, 0))
    prefix = f"dogpile.stats.{alias}."
    return {"total": total, "processes": {k[len(prefix) :]: v for k, v in sorted(rows.items())}}
