"""Regenerations handed to a pool thread: ``BACKGROUND`` and ``SOFT_TIMEOUT``.

With a stale value to serve, the caller that won the key's lock hands the
lock (the lease with it) to a pool thread that regenerates, stores with
the fence and releases.  Under ``BACKGROUND`` the caller serves the stale
value at once (``UPDATING``).  Under ``SOFT_TIMEOUT`` it waits up to that
many seconds for the pool thread: the new value if it came in time
(``EXPIRED``, as a regeneration in the caller), else the stale one
(``UPDATING``) while the regeneration finishes, lease kept and fenced as
ever.  Without a stale value a caller regenerates in its own thread, as
always.  The creator runs in the pool thread as under ``BACKGROUND``: in a
copy of the caller's context, language and time zone, with its own
database connection.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections

from django_dogpile import records
from django_dogpile.engine.call import Call, stamp_of
from django_dogpile.engine.memory import fallbacks
from django_dogpile.engine.pool import submit
from django_dogpile.records import CREATED, MISSING, VALUE, is_fresh

if TYPE_CHECKING:
    from django_dogpile.engine.path import Regeneration

__all__ = ["AS_IS", "finished_in_time", "hand_off"]

log = logging.getLogger("django_dogpile.engine.path")

#: a creator with no ``detach``: the pool thread runs it as it is
AS_IS: Any = object()


def hand_off(
    regeneration: Regeneration,
    key: Any,
    skey: str,
    default: Any,
    detach: Any,
    fresh_for: float | None,
    call: Call,
) -> Any:
    """The dogpile ``Lock``'s ``async_creator``: called, holding the key's
    lock, when a stale value is there to serve."""
    b = regeneration.binding

    def start(m: Any) -> None:
        if m.degraded and fallbacks.get(b.ident(skey), records.now()) is not MISSING:
            # the store is unreachable (a readable replica served the
            # stale record) and a pool thread of this process already
            # computed the value: no new job on every call
            m.release()
            return
        slot = b.budget.take(wait=False)
        if slot is None:  # over budget: stays stale, a later request tries
            m.release()
            return
        # SOFT_TIMEOUT: the pool thread's "done", what it made, the stale value's stamp
        soft: tuple[threading.Event, list[Any], Any] | None = (
            None if b.options.background else (threading.Event(), [], call.stamp)
        )
        call.handed = call.stamp  # the stale value's, before the pool thread writes its own
        try:
            # in the caller's thread: a creator that reads request state
            # hands the pool a copy of it (the template tag's context)
            job = default if detach is AS_IS else detach()
            queued = submit(
                b.options.background_workers,
                _run,
                regeneration,
                key,
                skey,
                job,
                fresh_for,
                m,
                call,
                b.ident(skey),
                slot,
                soft,
            )
        except BaseException:
            b.budget.give(slot)  # nothing was handed off: the Lock releases the mutex
            raise
        if not queued:
            log.warning("background queue full; %r stays stale until a worker is free", key)
            b.budget.give(slot)
            m.release()
        else:
            call.soft = soft
            log.debug("regeneration of %r handed to a pool thread", key)

    return start


def finished_in_time(
    call: Call, stale: Any, timeout: float, serve_stale_on_error: bool
) -> tuple[Any, tuple[Any, ...], bool]:
    """``SOFT_TIMEOUT``: wait up to ``timeout`` seconds for the pool thread.
    ``(value, its stamp, whether it is the store's)``: the pool thread's
    value if it came (the call is then an ``EXPIRED`` regeneration, or a
    ``HIT`` when another caller's value had landed meanwhile); its
    creator's error as the caller's own regeneration would meet it (raised,
    or the stale value as ``STALE`` under ``SERVE_STALE_ON_ERROR``); else
    ``stale`` (``UPDATING``), the regeneration going on -- with the stale
    record's stamp, whatever the pool thread writes to ``call`` meanwhile."""
    assert call.soft is not None
    done, made, stale_stamp = call.soft
    if not done.wait(timeout) or not made:
        return stale, stale_stamp, True  # still running
    kind, found, stamp, kept = made[0]
    if kind in ("value", "landed"):
        call.outcome = "EXPIRED" if kind == "value" else "HIT"
        return found, stamp, kept
    if serve_stale_on_error:
        call.outcome = "STALE"
        return stale, stale_stamp, True
    raise found


def _run(
    regeneration: Regeneration,
    key: Any,
    skey: str,
    default: Any,
    fresh_for: float | None,
    mutex: Any,
    call: Call,
    ident: tuple[str, str],
    slot: Any,
    soft: tuple[threading.Event, list[Any], Any] | None,
) -> None:
    # A pool thread is outside any request: Django's request signals do
    # not close its database connections, so do what they do.
    b = regeneration.binding
    close_old_connections()
    try:
        if b.ident(skey) != ident:
            # The key function read state that did not follow into this
            # thread (a thread-local tenant; context variables do
            # follow): the write would land under another key.
            log.error(
                "background regeneration of %r skipped: the store key skey in "
                "a pool thread differs from the caller's (a KEY_FUNCTION that "
                "reads thread-local state); turn BACKGROUND off for this alias",
                key,
            )
            return
        # Read again: the job may have queued while another host
        # regenerated (an early refresh has the same creation time).
        record = b.seen(b.store.get(skey, MISSING))
        if is_fresh(record, records.now()) and record[CREATED] != call.seen_created:
            log.debug("%r was regenerated elsewhere before its job ran", key)
            if soft is not None:  # the waiting caller serves it, as a hit
                soft[1].append(("landed", record[VALUE], stamp_of(record), True))
            return
        value, _ = regeneration._create(key, skey, default, fresh_for, mutex, call, background=True)
        if soft is not None:
            soft[1].append(("value", value, call.stamp, call.kept))
    except BaseException as exc:
        if soft is not None:
            # the waiting caller's to raise (a fragment's "served, never
            # stored" too: a BaseException), or to serve stale for
            soft[1].append(("error", exc, (), True))
        if isinstance(exc, Exception):
            log.exception("background regeneration of %r failed", key)
        elif soft is None:
            raise
    finally:
        b.budget.give(slot)
        mutex.release()
        close_old_connections()
        if soft is not None:
            soft[0].set()
