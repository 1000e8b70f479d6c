"""The dogpile path of :class:`~django_dogpile.cache.DogpileCache`.

What ``get_or_set`` does once its one store read found no fresh value.  The
states, in the order a caller meets them (one debug line on
``django_dogpile.regeneration`` per transition):

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
   (:data:`~django_dogpile.state.fallbacks`) and served only while the
   store stays unreachable.
5. **the creator raised** -- the error reaches this caller (or, with
   ``SERVE_STALE_ON_ERROR`` and a stale value, that value: ``STALE``); with
   ``RETRY_AFTER`` the next attempt waits that long.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import random
import time
from typing import Any, Iterator

from django.db import close_old_connections

from . import entries, signals
from .core import Lock, NeedRegenerationException
from .entries import INVALIDATED, Entry, is_entry, is_fresh, store_timeout
from .exceptions import UncacheableValue, WaitTimeout
from .locks import MISSING, KeyMutex, fallbacks, key_lock
from .runners import submit

__all__ = ["LOCK_SUFFIX", "Regeneration"]

log = logging.getLogger(__name__)

_FRESH = math.inf  # the "creation time" the core sees for a fresh value
_STALE = 1.0  # ... and for a stale one (> 0: there is a value; long expired)
LOCK_SUFFIX = ":dogpile-lock"  # the lock of a key is the key + this

#: ``default.detach`` when ``default`` has none: run it as it is.
_AS_IS: Any = object()


class _Call:
    """What happened inside one dogpile-protected ``get_or_set``."""

    __slots__ = ("reads", "stale", "outcome", "first", "seen_created")

    def __init__(self, first: Any) -> None:
        self.first = first
        #: creation time of the record this call started from (None: none)
        self.seen_created: float | None = first[1] if is_entry(first) else None
        self.reads = 0
        self.stale: Any = MISSING
        self.outcome = "UPDATING"


class Regeneration:
    """The dogpile path, mixed into ``DogpileCache`` (see the module docstring)."""

    # provided by DogpileCache
    store: Any
    alias: str
    location: str
    options: Any
    _keys: Any
    _stats: Any
    _hit: Any
    _early_refresh: float

    # --- records ----------------------------------------------------------

    def _live(self, raw: Any, now: float) -> bool:
        """True if ``raw`` is a record still servable (fresh or stale)."""
        if not is_entry(raw):
            return False
        expires = raw[2]
        return expires is None or expires == INVALIDATED or now < expires + self.options.grace

    def _fresh_hit(self, key: Any, raw: Any) -> bool:
        """True (and counted) if ``raw`` is a record to serve as a hit now.

        ``get_or_set`` has the same test inline: it is the hot path.
        """
        if not is_entry(raw):
            return False
        now = entries.now()
        if raw[2] is None or (
            now < raw[2] and not (self._early_refresh and self._early(raw, now))
        ):
            self._hit()
            if self._keys is not None:
                self._keys.incr(key, "HIT")
            return True
        return False

    def _early(self, raw: Any, now: float) -> bool:
        """The XFetch rule: refresh before expiry, likelier as it nears."""
        beta = self.options.early_refresh
        if not beta or raw[2] is None:
            return False
        cost = raw[3] or 0.0
        return now - cost * beta * math.log(random.random() or 1e-12) >= raw[2]

    def _count(self, name: str, key: Any) -> None:
        self._stats.incr(name)
        if self._keys is not None:
            self._keys.incr(key, name)

    @contextlib.contextmanager
    def _pickling(self, what: str) -> Iterator[None]:
        """Turn the store's pickling errors into :class:`UncacheableValue`."""
        try:
            yield
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise UncacheableValue(
                f"DogpileCache {self.alias!r}: {what} cannot be stored: {exc}"
            ) from exc

    # --- the lock -----------------------------------------------------------

    def _mutex(self, made: str, *, exclusive: bool = False) -> KeyMutex:
        """The key's lock: for ``get_or_set``, or ``exclusive`` for a
        read-modify-write, which must hold it even when a value exists."""
        factory = self._adapter.lease  # type: ignore[attr-defined]
        lease = factory(made + LOCK_SUFFIX, made) if factory else None
        return KeyMutex(
            key_lock(self.ident(made)),
            lease,
            self.options.wait_timeout,
            None if exclusive else (lambda record: self._live(record, entries.now())),
        )

    @contextlib.contextmanager
    def _exclusive(self, key: Any, made: str) -> Iterator[None]:
        """Hold the key's lock (in-process and lease) for a read-modify-write.

        ``get_or_set`` holds the same lock while it regenerates, so an
        ``incr``, ``touch``, ``invalidate`` or ``add`` over a stale value
        never interleaves with a regeneration, in any process.  A
        ``RETRY_AFTER`` hold does not stop it.  Raises :class:`WaitTimeout`
        if the lock stays taken past ``WAIT_TIMEOUT``.
        """
        self.store  # noqa: B018 - connect: the adapter is chosen there
        mutex = self._mutex(made, exclusive=True)
        try:
            mutex.acquire()
        except WaitTimeout:
            raise WaitTimeout(
                f"DogpileCache {self.alias!r}: key {key!r} stayed locked by a "
                f"regeneration for {self.options.wait_timeout}s (WAIT_TIMEOUT)"
            ) from None
        try:
            yield
        finally:
            mutex.release()

    # --- the path -----------------------------------------------------------

    def _dogpile(self, key: Any, made: str, raw: Any, default: Any, timeout: Any) -> Any:
        fresh_for = self._freshness(timeout)  # type: ignore[attr-defined]
        if fresh_for is not None and fresh_for <= 0:
            self._count("MISS", key)
            return (default() if callable(default) else default), "MISS"
        self.store  # noqa: B018 - connect: the adapter is chosen there
        mutex = self._mutex(made)
        call = _Call(raw)

        def value_and_created() -> tuple[Any, float]:
            call.reads += 1
            if call.reads == 1:
                record = call.first
                call.first = None
            elif mutex.landed is not MISSING:
                # Waited, and the lease found the value instead of the lock:
                # serve it (this caller holds no lock, so never regenerate).
                log.debug("%r landed while waiting", key)
                return mutex.landed[0], _FRESH
            else:
                # After a wait: the Redis lease read the record atomically
                # with taking the lock, so only other stores are read again.
                record = mutex.snapshot()
                if record is MISSING:
                    record = self.store.get(made, MISSING)  # type: ignore[attr-defined]
            now = entries.now()
            if not self._live(record, now):
                if mutex.degraded:  # the store is unreachable
                    kept = fallbacks.get(self.ident(made), now)
                    if kept is not MISSING:
                        log.debug("%r served from this process's outage fallback", key)
                        return kept, _FRESH
                raise NeedRegenerationException()
            if call.reads > 1 and (record[2] is None or now < record[2]):
                return record[0], _FRESH  # another caller created it meanwhile
            call.stale = record[0]
            call.seen_created = record[1]
            return record[0], _STALE

        def creator() -> tuple[Any, float]:
            if call.reads == 1 and call.stale is not MISSING:
                # The core read once; somebody may have finished between that
                # read and our lock (a record with another creation time).
                # The Redis lease fetched the record with the lock, so this
                # costs no round trip there.
                record = mutex.snapshot()
                if record is MISSING:
                    record = self.store.get(made, MISSING)  # type: ignore[attr-defined]
                if is_fresh(record, entries.now()) and record[1] != call.seen_created:
                    log.debug("%r was regenerated elsewhere meanwhile", key)
                    call.outcome = "HIT"
                    return record[0], _FRESH
            if mutex.degraded and call.stale is not MISSING:
                # The lease's store is unreachable, yet a stale record was
                # read (a replica whose primary is down still answers): serve
                # what this process computed meanwhile, as when the whole
                # store is down, rather than regenerate on every call.
                kept = fallbacks.get(self.ident(made), entries.now())
                if kept is not MISSING:
                    log.debug("%r served from this process's outage fallback", key)
                    call.outcome = "HIT"
                    return kept, _FRESH
            call.outcome = "EXPIRED" if call.stale is not MISSING else "MISS"
            log.debug("regenerating %r (%s)", key, call.outcome)
            return self._create(key, made, default, fresh_for, mutex, call)

        async_creator: Any = None
        detach = getattr(default, "detach", _AS_IS)
        if self.options.background and detach is not None:

            def hand_off(m: Any) -> None:
                if m.degraded and fallbacks.get(self.ident(made), entries.now()) is not MISSING:
                    # the store is unreachable (a readable replica served the
                    # stale record) and a pool thread of this process already
                    # computed the value: no new job on every call
                    m.release()
                    return
                # in the caller's thread: a creator that reads request state
                # hands the pool a copy of it (the template tag's context)
                job = default if detach is _AS_IS else detach()
                if not submit(
                    self.options.background_workers,
                    self._background,
                    key, made, job, fresh_for, m, call, self.ident(made),
                ):
                    log.warning(
                        "background queue full; %r stays stale until a worker is free", key
                    )
                    m.release()
                else:
                    log.debug("regeneration of %r handed to a pool thread", key)

            async_creator = hand_off

        started = time.monotonic()
        try:
            with Lock(mutex, creator, value_and_created, 0, async_creator) as value:
                pass
        except WaitTimeout:
            return self._wait_timed_out(key, default, started), "MISS"
        return value, self._account(key, call, mutex, started)

    def _create(
        self, key: Any, made: str, default: Any, fresh_for: float | None,
        mutex: KeyMutex, call: _Call, background: bool = False,
    ) -> tuple[Any, float]:
        started = time.monotonic()
        self._count("REGENERATIONS", key)
        try:
            value = default() if callable(default) else default
        except Exception as exc:
            self._count("ERRORS", key)
            signals.regeneration_failed.send(
                type(self), alias=self.alias, key=key, exception=exc
            )
            if self.options.retry_after and call.stale is not MISSING:
                # a stale value is there: serve it, and retry only later
                mutex.hold_on_release(self.options.retry_after)
            if call.stale is not MISSING and self.options.serve_stale_on_error and not background:
                log.error(
                    "regenerating %r failed; serving the stale value", key, exc_info=True
                )
                call.outcome = "STALE"
                return call.stale, _STALE
            log.debug("regenerating %r failed", key, exc_info=True)
            raise
        cost = time.monotonic() - started
        stored = self._store_regenerated(key, made, value, fresh_for, cost, mutex, call)
        if stored is False or (stored and mutex.degraded):
            # Serve it to this process while the store is unreachable: for
            # its freshness, and never more than a minute without one.
            expires = entries.now() + (60.0 if fresh_for is None else fresh_for)
            fallbacks.put(self.ident(made), value, expires)
        else:
            fallbacks.discard(self.ident(made))
        self._stats.last_regeneration = when = time.time()
        if self._keys is not None:
            self._keys.regenerated(key, when)
        log.debug("regenerated %r in %.3fs", key, cost)
        signals.value_regenerated.send(
            type(self), alias=self.alias, key=key, duration=cost, background=background,
        )
        return value, _FRESH

    def _store_regenerated(
        self, key: Any, made: str, value: Any, fresh_for: float | None,
        cost: float, mutex: KeyMutex, call: _Call,
    ) -> bool | None:
        """The fenced write: True stored, None dropped, False store down."""
        now = entries.now()
        expires = None if fresh_for is None else now + fresh_for
        record = tuple(Entry(value, now, expires, cost))
        ttl = store_timeout(expires, self.options.grace, now)
        store = self.store  # type: ignore[attr-defined]
        adapter = self._adapter  # type: ignore[attr-defined]

        def unchanged() -> bool:
            # the record's creation time is the fence: still the record this
            # regeneration started from (None: still no record)?
            current = adapter.backing.get(made, MISSING)  # not a near copy
            return (current[1] if is_entry(current) else None) == call.seen_created

        with self._pickling(f"the value for key {key!r}"):
            if mutex.leased:
                stored = mutex.store(record, ttl, unchanged)
            elif not unchanged():
                log.debug("%r was written or deleted while it regenerated; that wins", key)
                return None
            else:
                result: Any = store.set(made, record, timeout=ttl)  # type: ignore[func-returns-value]
                stored = bool(result) if adapter.set_reports else result is not False
        if stored:
            adapter.wrote(made)
            mutex.local.publish(record)
        return stored

    def _background(
        self, key: Any, made: str, default: Any, fresh_for: float | None,
        mutex: KeyMutex, call: _Call, ident: tuple[str, str],
    ) -> None:
        # A pool thread is outside any request: Django's request signals do
        # not close its database connections, so do what they do.
        close_old_connections()
        try:
            if self.ident(made) != ident:
                # The key function read state that did not follow into this
                # thread (a thread-local tenant; context variables do
                # follow): the write would land under another key.
                log.error(
                    "background regeneration of %r skipped: the store key made in "
                    "a pool thread differs from the caller's (a KEY_FUNCTION that "
                    "reads thread-local state); turn BACKGROUND off for this alias",
                    key,
                )
                return
            # Read again: the job may have queued while another host
            # regenerated (an early refresh has the same creation time).
            record = self.store.get(made, MISSING)  # type: ignore[attr-defined]
            if is_fresh(record, entries.now()) and record[1] != call.seen_created:
                log.debug("%r was regenerated elsewhere before its job ran", key)
                return
            self._create(key, made, default, fresh_for, mutex, call, background=True)
        except Exception:
            log.exception("background regeneration of %r failed", key)
        finally:
            mutex.release()
            close_old_connections()

    def _account(self, key: Any, call: _Call, mutex: KeyMutex, started: float) -> str:
        outcome = call.outcome
        if outcome == "UPDATING" and call.reads > 1:
            outcome = "MISS"  # waited and then read what another caller made
        self._count(outcome, key)
        if mutex.waited:
            self._count("WAITS", key)
            signals.caller_waited.send(
                type(self), alias=self.alias, key=key,
                duration=time.monotonic() - started, timed_out=False,
            )
        if outcome in ("UPDATING", "STALE"):
            log.debug("served stale %r (%s)", key, outcome)
            signals.stale_served.send(
                type(self), alias=self.alias, key=key, reason=outcome
            )
        return outcome

    def _wait_timed_out(self, key: Any, default: Any, started: float) -> Any:
        waited = time.monotonic() - started
        self._count("WAIT_TIMEOUTS", key)
        self._count("MISS", key)
        log.warning(
            "waited %.1fs for %r to be created elsewhere; computing it here "
            "without storing it (WAIT_TIMEOUT)", waited, key,
        )
        signals.caller_waited.send(
            type(self), alias=self.alias, key=key, duration=waited, timed_out=True
        )
        return default() if callable(default) else default
