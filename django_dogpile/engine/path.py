"""The dogpile path of :class:`~django_dogpile.cache.DogpileCache`.

What ``get_or_set`` does once its one store read found no fresh value.  The
states, in the order a caller meets them (one debug line on
``django_dogpile.engine.path`` per transition):

1. **stale, lock taken elsewhere** -- the stale value is served at once
   (``UPDATING``); so is a value held by a ``RETRY_AFTER`` hold.
2. **stale, lock won** -- the record is read again (on Redis it came with
   the lease, no extra round trip): if another caller finished meanwhile
   (a fresh record with another creation time) it is served (``HIT``);
   else this caller regenerates (``EXPIRED``) -- or, with ``BACKGROUND``,
   hands the regeneration to a pool thread and serves the stale value.
3. **missing** -- the caller waits for the lock, at most ``WAIT_TIMEOUT``;
   a value that lands meanwhile is served (``MISS``) without taking the
   lock; a caller whose wait runs out computes the value itself and does
   not store it.
4. **regenerating** -- the creator runs; its result is written *fenced*:
   only while this caller's lease is still held and only over the record
   it started from (:mod:`django_dogpile.stores`).  A write that lost the
   fence is dropped (the caller still gets its value).  Computed while the
   store is unreachable, the value is kept per process
   (:data:`~django_dogpile.engine.memory.fallbacks`) and served only while the
   store stays unreachable.
5. **the creator raised** -- the error reaches this caller (or, with
   ``SERVE_STALE_ON_ERROR`` and a stale value, that value: ``STALE``); with
   ``RETRY_AFTER`` the next attempt waits that long.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from django_dogpile import records, signals
from django_dogpile.core import Lock, NeedRegenerationException
from django_dogpile.engine import results
from django_dogpile.engine.background import AS_IS, finished_in_time, hand_off
from django_dogpile.engine.binding import Binding
from django_dogpile.engine.call import Call, stamp_of
from django_dogpile.engine.locks import KeyMutex
from django_dogpile.engine.memory import fallbacks
from django_dogpile.engine.tags import bubble, collecting
from django_dogpile.exceptions import WaitTimeout
from django_dogpile.records import (
    CREATED,
    EXPIRES,
    MISSING,
    VALUE,
    Record,
    is_fresh,
    is_record,
    store_timeout,
)

__all__ = ["Regeneration"]

log = logging.getLogger(__name__)

_FRESH = math.inf  # the "creation time" the core sees for a fresh value
_STALE = 1.0  # ... and for a stale one (> 0: there is a value; long expired)

#: ``default.detach`` when ``default`` has none: run it as it is.


class Regeneration:
    """The dogpile path of one backend (see the module docstring).

    :param binding: the backend's :class:`~django_dogpile.engine.binding.Binding`.
    :param sender: the backend's class, which sends the signals.
    """

    def __init__(self, binding: Binding, sender: type) -> None:
        self.binding = binding
        self.sender = sender

    # --- the path -----------------------------------------------------------

    def run(
        self,
        key: Any,
        skey: str,
        raw: Any,
        default: Any,
        timeout: Any,
        tags: tuple[str, ...] = (),
        shared: list[bool] | None = None,
        version: int | None = None,
    ) -> tuple[Any, str]:
        """``get_or_set`` past its one store read: ``(value, status)``;
        ``shared`` is told whether the value served is the store's (False: made
        and not stored, so not for other callers).  With no record, and
        ``PREVIOUS_VERSION`` or ``PREVIOUS_KEY_PREFIX`` set, the key's record
        of before the deploy is read (one more round trip) and served stale."""
        b = self.binding
        fresh_for = b.freshness(timeout)
        if fresh_for is not None and fresh_for <= 0:
            b.count("MISS", key)
            if shared is not None:
                shared.append(False)
            return results.made_unstored(default), "MISS"
        b.store  # noqa: B018 - connect: the adapter is chosen there
        mutex = b.mutex(skey)
        call = Call(b.seen(raw), tags)
        if call.seen_created is None and b.options.previous:
            self.inherit(key, version, call)

        def value_and_created() -> tuple[Any, float]:
            call.reads += 1
            if call.reads == 1:
                record = call.first
                call.first = None
            elif mutex.landed is not MISSING:
                # Waited, and the lease found the value instead of the lock:
                # serve it (this caller holds no lock, so never regenerate).
                log.debug("%r landed while waiting", key)
                call.stamp = stamp_of(mutex.landed)
                return mutex.landed[VALUE], _FRESH
            else:
                # After a wait: the Redis lease read the record atomically
                # with taking the lock, so only other stores are read again.
                record = mutex.snapshot()
                if record is MISSING:
                    record = b.store.get(skey, MISSING)
                record = b.seen(record)
            now = records.now()
            if not b.live(record, now):
                if mutex.degraded:  # the store is unreachable
                    kept = fallbacks.get(b.ident(skey), now)
                    if kept is not MISSING:
                        log.debug("%r served from this process's outage fallback", key)
                        return kept, _FRESH
                raise NeedRegenerationException()
            call.stamp = stamp_of(record)
            if call.reads > 1 and (record[EXPIRES] is None or now < record[EXPIRES]):
                return record[VALUE], _FRESH  # another caller created it meanwhile
            call.stale = record[VALUE]
            if not (call.inherited and call.reads == 1):  # (a deploy's record fences nothing)
                call.seen_created = record[CREATED]
            return record[VALUE], _STALE

        def creator() -> tuple[Any, float]:
            if call.reads == 1 and call.stale is not MISSING:
                # The core read once; somebody may have finished between that
                # read and our lock (a record with another creation time).
                # The Redis lease fetched the record with the lock, so this
                # costs no round trip there.
                record = mutex.snapshot()
                if record is MISSING:
                    record = b.store.get(skey, MISSING)
                record = b.seen(record)
                if is_fresh(record, records.now()) and record[CREATED] != call.seen_created:
                    log.debug("%r was regenerated elsewhere meanwhile", key)
                    call.outcome = "HIT"
                    call.stamp = stamp_of(record)
                    return record[VALUE], _FRESH
            if mutex.degraded and call.stale is not MISSING:
                # The lease's store is unreachable, yet a stale record was
                # read (a replica whose primary is down still answers): serve
                # what this process computed meanwhile, as when the whole
                # store is down, rather than regenerate on every call.
                kept = fallbacks.get(b.ident(skey), records.now())
                if kept is not MISSING:
                    log.debug("%r served from this process's outage fallback", key)
                    call.outcome = "HIT"
                    call.stamp = ()
                    return kept, _FRESH
            slot = b.budget.take(wait=call.stale is MISSING)
            if slot is None:  # over budget: serve stale, regenerate later
                log.debug("%r stays stale: REGENERATION_BUDGET is spent", key)
                return call.stale, _STALE
            call.outcome = "EXPIRED" if call.stale is not MISSING else "MISS"
            log.debug("regenerating %r (%s)", key, call.outcome)
            try:
                return self._create(key, skey, default, fresh_for, mutex, call)
            finally:
                b.budget.give(slot)

        async_creator: Any = None
        detach = getattr(default, "detach", AS_IS)
        if (b.options.background or b.options.soft_timeout) and detach is not None:
            # with a stale value to serve: a pool thread regenerates
            async_creator = hand_off(self, key, skey, default, detach, fresh_for, call)

        started = time.monotonic()
        try:
            with Lock(mutex, creator, value_and_created, 0, async_creator) as value:
                pass
        except WaitTimeout:
            if shared is not None:
                shared.append(False)
            return self._wait_timed_out(key, default, started), "MISS"
        # handed to a pool thread: the stale value served is the store's
        stamp, kept = (call.stamp, call.kept) if call.handed is None else (call.handed, True)
        if call.soft is not None:  # SOFT_TIMEOUT: the pool thread's value, if in time
            # (what it made is read once: it may still be writing to ``call``)
            value, stamp, kept = finished_in_time(
                call, value, b.options.soft_timeout or 0.0, b.options.serve_stale_on_error
            )
        if shared is not None:
            shared.append(kept)
        if stamp:
            bubble(stamp)  # to the value being made around this call, if any
        return value, self._account(key, call, mutex, started)

    def inherit(self, key: Any, version: int | None, call: Call) -> None:
        """Start ``call`` from the key's record before the deploy, if live."""
        b = self.binding
        old_key = b.previous_key(key, version)
        if old_key is None:
            return
        old = b.store.get(old_key, MISSING)
        # untagged only: a tagged record's tags were versioned under the old keys
        if is_record(old) and len(old) == 4 and b.live(old, records.now()):
            log.debug("%r is served from its record of before the deploy", key)
            call.inherit(old)

    def _create(
        self,
        key: Any,
        skey: str,
        default: Any,
        fresh_for: float | None,
        mutex: KeyMutex,
        call: Call,
        background: bool = False,
    ) -> tuple[Any, float]:
        b = self.binding
        # the versions of its tags before the creator reads anything: an
        # invalidation landing meanwhile leaves this value behind it
        # (a caller that names no tags keeps those of the value it replaces)
        tags = call.tags or tuple(tag for tag, _ in call.stamp)
        stamp = b.tags.stamp(tags) if tags else ()
        started = time.monotonic()
        b.count("REGENERATIONS", key)
        try:
            with collecting(stamp) as collector:
                value = default() if callable(default) else default
        except Exception as exc:
            b.count("ERRORS", key)
            signals.regeneration_failed.send(self.sender, alias=b.alias, key=key, exception=exc)
            if b.options.retry_after and call.stale is not MISSING:
                # a stale value is there: serve it, and retry only later
                mutex.hold_on_release(b.options.retry_after)
            if call.stale is not MISSING and b.options.serve_stale_on_error and not background:
                log.error("regenerating %r failed; serving the stale value", key, exc_info=True)
                call.outcome = "STALE"
                return call.stale, _STALE
            log.debug("regenerating %r failed", key, exc_info=True)
            raise
        return self.settle(
            key, skey, value, collector, fresh_for, time.monotonic() - started, mutex, call, background
        )

    def settle(
        self,
        key: Any,
        skey: str,
        value: Any,
        collector: Any,
        fresh_for: float | None,
        cost: float,
        mutex: KeyMutex,
        call: Call,
        background: bool = False,
    ) -> tuple[Any, float]:
        """A value just made for ``key`` (in ``collector``): stored as its
        creator decided, fenced, counted and signalled; ``(value, _FRESH)``."""
        b = self.binding
        value, own, tags, keep = results.decided(value, collector)
        if tags:
            collector.add(b.tags.stamp(b.tags.names(tags, f"the CacheResult of {key!r}")))
        if own is not MISSING:  # the creator's word
            fresh_for = own
        call.stamp = collector.stamp
        if not keep or (fresh_for is not None and fresh_for <= 0):
            log.debug("%r made and served, not stored (its creator said so)", key)
            call.kept = False
        elif (stored := self._store_regenerated(key, skey, value, fresh_for, cost, mutex, call)) is False or (
            stored and mutex.degraded
        ):
            # Serve it to this process while the store is unreachable: for
            # its freshness, and never more than a minute without one.
            expires = records.now() + (60.0 if fresh_for is None else fresh_for)
            fallbacks.put(b.ident(skey), value, expires)
        else:
            fallbacks.discard(b.ident(skey))
        b.stats.last_regeneration = when = time.time()
        if b.keys is not None:
            b.keys.regenerated(key, when)
        log.debug("regenerated %r in %.3fs", key, cost)
        signals.value_regenerated.send(
            self.sender,
            alias=b.alias,
            key=key,
            duration=cost,
            background=background,
            status="EXPIRED" if call.stale is not MISSING else "MISS",
        )
        return value, _FRESH

    def _store_regenerated(
        self,
        key: Any,
        skey: str,
        value: Any,
        fresh_for: float | None,
        cost: float,
        mutex: KeyMutex,
        call: Call,
    ) -> bool | None:
        """The fenced write: True stored, None dropped, False store down."""
        b = self.binding
        now = records.now()
        expires = records.expires_at(now, fresh_for, b.options.jitter)
        record = tuple(Record(value, now, expires, cost)) + ((call.stamp,) if call.stamp else ())
        ttl = store_timeout(expires, b.options.grace, now)
        store = b.store
        adapter = b.adapter

        def unchanged() -> bool:
            # the record's creation time is the fence: still the record this
            # regeneration started from (None: still no record)?
            current = b.seen(adapter.backing.get(skey, MISSING))  # not a near copy
            return (current[CREATED] if is_record(current) else None) == call.seen_created

        with b.pickling(f"the value for key {key!r}"):
            if mutex.leased:
                stored = mutex.store(record, ttl, unchanged)
            elif not unchanged():
                log.debug("%r was written or deleted while it regenerated; that wins", key)
                return None
            else:
                result: Any = store.set(skey, record, timeout=ttl)  # type: ignore[func-returns-value]
                stored = bool(result) if adapter.set_reports else result is not False
        if stored:
            adapter.wrote(skey)
            mutex.key_lock.publish(record)
        return stored

    def _account(self, key: Any, call: Call, mutex: KeyMutex, started: float) -> str:
        b = self.binding
        outcome = call.outcome
        if outcome == "UPDATING" and call.reads > 1:
            outcome = "MISS"  # waited and then read what another caller skey
        b.count(outcome, key)
        if mutex.waited:
            b.count("WAITS", key)
            signals.caller_waited.send(
                self.sender,
                alias=b.alias,
                key=key,
                duration=time.monotonic() - started,
                timed_out=False,
            )
        if outcome in ("UPDATING", "STALE"):
            log.debug("served stale %r (%s)", key, outcome)
            signals.stale_served.send(self.sender, alias=b.alias, key=key, reason=outcome)
        return outcome

    def _wait_timed_out(self, key: Any, default: Any, started: float) -> Any:
        b = self.binding
        waited = time.monotonic() - started
        b.count("WAIT_TIMEOUTS", key)
        b.count("MISS", key)
        log.warning(
            "waited %.1fs for %r to be created elsewhere; computing it here "
            "without storing it (WAIT_TIMEOUT)",
            waited,
            key,
        )
        signals.caller_waited.send(self.sender, alias=b.alias, key=key, duration=waited, timed_out=True)
        return results.made_unstored(default)
