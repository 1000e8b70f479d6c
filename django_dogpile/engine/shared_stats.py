"""Counters summed over every process that shares a store, that never go
down when a process exits.

Each process counts for itself (:mod:`django_dogpile.stats`, lock-free, no
round trip on the hit path).  A daemon thread per process publishes those
counters every ``DOGPILE["STATS_INTERVAL"]`` seconds (default 5) into the
store of each DogpileCache alias it used, as one record per process
(:mod:`~django_dogpile.engine.stats_chain` has the keys and the chain).
:func:`shared_stats` reads them back and sums them; ``manage.py dogpile
stats`` and the Prometheus export print them.

* A process publishes a record once it has counted something: a process
  that only reads the counters (the management command, a scrape in a
  process that served nothing) is no process of the sum.
* A record not published for 6 intervals (the *keep* period) is *folded*:
  its counts go into the alias's total of exited processes, exactly once,
  by whichever publisher or reader comes first; a process that exits
  cleanly folds its own at exit (``atexit``).  So the totals never go down
  when a process exits, killed (``SIGKILL``) or not.
* A process whose record was folded while it was alive (stopped for the
  whole keep period) notices at its next publish and goes on under a new
  record with what was folded subtracted; so does one after
  :func:`~django_dogpile.stats.reset_stats` (its old record is folded: the
  shared totals keep what it counted before).

A process appears within one interval of its first counted event.  A process
forked from one that used the cache (gunicorn ``--preload`` with a warm-up)
starts its own counters at zero and its own publisher thread: the parent's
thread does not come along, and its counts are the parent's.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django_dogpile.engine.stats_chain import (
    Names,
    add_counts,
    advance,
    read_head,
    snapshot,
    totals,
    zero,
)
from django_dogpile.stats import COUNTERS, stats_for

__all__ = ["publish_now", "shared_stats", "start_publishing"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_aliases: set[str] = set()
_thread: tuple[int, threading.Thread] | None = None
_KEEP = 6  # intervals without a publish after which a record is folded


@dataclass
class _Own:
    """This process's record of one alias."""

    store: Any
    key: str | None = None
    #: counted by this process's records that were folded while it lived
    baseline: dict[str, int] = field(default_factory=zero)
    #: what the current record holds
    last: dict[str, int] = field(default_factory=zero)
    #: the ``reset_stats`` epoch the record counts from
    epoch: int = 0
    #: older records of this process still to fold (after a reset)
    retire: set[str] = field(default_factory=set)
    #: the latest generation seen, and whether the record was in it
    seen: int = 0
    registered: bool = False
    #: folded at exit: publish no more
    closed: bool = False


_own: dict[str, _Own] = {}
_hint: dict[str, int] = {}
_publishing = threading.Lock()  # one publish at a time (the thread, a caller, atexit)


def _interval() -> float:
    from django_dogpile.conf import get_config

    return float(get_config()["STATS_INTERVAL"])


def _quiet() -> float:
    """Seconds without a publish after which a record is folded."""
    interval = _interval()
    return max(_KEEP * (interval if interval > 0 else 5.0), 1.0)


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
    global _thread, _lock, _publishing
    from django_dogpile.stats import forked

    _lock = threading.Lock()  # another thread may have held it at the fork
    _publishing = threading.Lock()
    forked()
    _own.clear()  # the parent's records are the parent's
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


def _store_of(alias: str) -> Any:
    """The store the counters of ``alias`` live in (no near cache in front)."""
    from django.core.cache import caches

    cache = caches[alias]
    binding = getattr(cache, "binding", None)
    if binding is None:
        return getattr(cache, "store", None)
    binding.store  # noqa: B018 - connect
    return binding.adapter.backing


def _adder(store: Any) -> Any:
    """``add()`` atomic across processes on ``store``."""
    from django_dogpile.stores.file import guarded_add
    from django_dogpile.stores.kinds import kind_of

    if kind_of(store).name == "file":  # its add() is has_key() then set()
        return lambda key, value, timeout: guarded_add(store, key, value, timeout)
    return lambda key, value, timeout: store.add(key, value, timeout=timeout)


def _write(store: Any, key: str, row: dict[str, Any]) -> None:
    """Write this process's record, or raise (nothing else is done then)."""
    from django_dogpile.stores.database import stored
    from django_dogpile.stores.kinds import kind_of

    if kind_of(store).name == "database":  # its set() fails silently when busy
        done = stored(store, key, row, None)
    else:
        done = store.set(key, row, timeout=None) is not False
    if not done:
        raise RuntimeError(f"could not write {key}")


def publish_now() -> None:
    """Publish this process's counters of every alias it used (and fold the
    records gone quiet)."""
    from django.conf import settings

    for alias in sorted(_aliases):
        if alias not in settings.CACHES:
            continue  # a DogpileCache made by hand, not through CACHES
        try:
            store = _store_of(alias)
            with _publishing:
                _publish(alias, store)
        except Exception:
            log.debug("could not publish the counters of %r", alias, exc_info=True)


def _publish(alias: str, store: Any, final: bool = False) -> None:
    names, add, quiet = Names(alias), _adder(store), _quiet()
    stats = stats_for(alias)
    counts = stats.snapshot()
    own = _own.get(alias)
    if own is None and any(counts.values()):
        own = _own[alias] = _Own(store)
    if own is None or own.closed:
        # a process that counted nothing is no process of the sum: it folds
        if not final:
            head, _ = advance(store, names, add, quiet, head=read_head(store, names, _hint.get(alias, 0)))
            _hint[alias] = head.n
        return
    own.store = store
    head = read_head(store, names, max(own.seen, _hint.get(alias, 0)))
    if own.key is not None and own.registered and own.key not in head.live:
        folded = head.folded.get(own.key)
        if folded is not None:  # folded while this process lived: it was quiet too long
            own.baseline = add_counts(own.baseline, folded.get("counts") or {})
            own.key = None
        elif head.n >= own.seen:  # folded and forgotten since: all it published went in
            own.baseline = add_counts(own.baseline, own.last)
            own.key = None
        # else: the store was cleared; the record starts again as it is
    if own.key is not None and stats.epoch != own.epoch:  # reset_stats(): fold the old record
        own.retire.add(own.key)
        own.key = None
    if stats.epoch != own.epoch:
        own.epoch, own.baseline = stats.epoch, zero()
    if own.key is None:
        own.key = names.record(f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}")
        own.last, own.registered = zero(), False
    value = {name: counts[name] - own.baseline.get(name, 0) for name in COUNTERS}
    row = {**value, "at": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    _write(store, own.key, row)
    own.last = value
    retire = own.retire | ({own.key} if final else set())
    for _ in range(3 if final else 1):  # at exit, no next publish to try again
        head, rows = advance(
            store, names, add, quiet, register=None if final else own.key, retire=retire, head=head
        )
        if rows is not None:
            break
    # an older record stays to fold until a generation has it (or it is gone)
    own.retire = {
        k for k in own.retire if k not in head.folded and (rows is None or k in head.live or k in rows)
    }
    own.seen = _hint[alias] = head.n
    if own.key in head.live:
        own.registered = True
    if final:
        own.closed = own.key in head.folded


def _at_exit() -> None:
    """Fold this process's records into the totals as it exits (unless
    ``STATS_INTERVAL`` is 0: then nothing publishes by itself)."""
    try:
        if not _own or _interval() <= 0:
            return
    except Exception:  # settings gone
        return
    if not _publishing.acquire(timeout=5):
        return
    try:
        for alias, own in list(_own.items()):
            try:
                _publish(alias, own.store, final=True)
            except Exception:
                log.debug("could not fold the counters of %r at exit", alias, exc_info=True)
    finally:
        _publishing.release()


atexit.register(_at_exit)


def shared_stats(alias: str = "default") -> dict[str, Any]:
    """Return the counters of ``alias`` summed over every process::

        {"total": {counter: n},      # never goes down as processes exit
         "retired": {counter: n},    # of which from processes folded
         "processes": {proc: {counter: n, "at": t, ...}}}

    ``processes`` are the serving processes whose record is live, named
    ``host.pid``; folding the ones gone quiet first."""
    store = _store_of(alias)
    names = Names(alias)
    head, rows = advance(
        store, names, _adder(store), _quiet(), head=read_head(store, names, _hint.get(alias, 0))
    )
    head, rows = snapshot(store, names, head, rows)
    _hint[alias] = head.n
    return {
        "total": totals(head, rows),
        "retired": dict(head.total),
        "processes": _named(rows),
    }


def _named(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    named: dict[str, dict[str, Any]] = {}
    for key, row in sorted(rows.items(), key=lambda item: item[1].get("at", 0)):
        name = f"{row.get('host', '?')}.{row.get('pid', '?')}"
        if name in named:  # the same pid again (a reused pid, or a reset)
            name = f"{name}.{key.rsplit('.', 1)[-1]}"
        named[name] = {k: v for k, v in row.items() if k not in ("host", "pid")}
    return dict(sorted(named.items()))
