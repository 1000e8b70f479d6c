"""The mutex a DogpileCache hands to the core ``Lock``: in-process, then a lease.

A :class:`KeyMutex` for one store key is two locks taken in order:

1. a per-key ``threading.Lock`` shared by every backend instance of the
   process (Django gives each thread its own backend instance, so the state
   lives in a module-level :class:`~django_dogpile.core.NameRegistry`);
   threads of one process contend here and never reach the store;
2. a *lease* in the shared store, when there is one: on django-redis
   Lua scripts with pub/sub wake-up (:mod:`django_dogpile.stores.redis_lease`);
   elsewhere a lease file under ``flock`` on the file cache, a lease row on
   the database cache, ``cache.add()`` on the others
   (:mod:`django_dogpile.stores.base`); none on locmem, where the in-process lock
   is enough.

A lease always runs out after ``LOCK_TIMEOUT``, so a holder killed with
SIGKILL blocks nobody for longer than that, and a holder whose lease ran out
cannot delete its successor's lock nor write over its successor's value
(:meth:`KeyMutex.store`, the fenced write).

Waiting for a key with no value (``get_or_set``'s cold path) ends as soon
as the value exists, without taking the lock in turn: the Redis script,
called that way, returns the record instead when there is one, and the
other leases' polling reads it; threads of the holder's process get the
record it just stored from its :class:`KeyLock`.  A read-modify-write
(``incr``, ``touch``...) makes an *exclusive* mutex, which always takes the
lock.  A holder whose regeneration failed may leave a ``RETRY_AFTER`` hold
that only the stale path's non-blocking ``acquire`` respects
(:meth:`KeyMutex.hold_on_release`).  Values computed while the lease's store
is unreachable are kept per process in
:data:`~django_dogpile.engine.memory.fallbacks`.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from django_dogpile import degraded
from django_dogpile.core import NameRegistry
from django_dogpile.engine.memory import retry_after
from django_dogpile.exceptions import WaitTimeout
from django_dogpile.records import MISSING
from django_dogpile.stores.base import LANDED, Lease, LeaseUnavailable

__all__ = ["KeyLock", "KeyMutex", "key_lock"]

log = logging.getLogger(__name__)

#: the causes of degraded-mode warnings (:mod:`django_dogpile.degraded`)
LOCK_STORE_DOWN = "lock store unavailable"
RELEASE_FAILED = "could not release the lease"
NOT_TAKEN = "the store did not take a regenerated value"


class KeyLock:
    """The in-process lock of one store key, shared across backend instances.

    ``landed`` is the last record this process created or was handed by the
    lease (pickled, so each caller unpickles its own copy, as from a
    store), numbered by ``seq``: a thread that waited for the lock while it
    changed serves it without another round trip to the store.
    """

    __slots__ = ("ident", "lock", "seq", "landed", "__weakref__")

    def __init__(self, identifier: Any) -> None:
        self.ident = identifier
        self.lock = threading.Lock()
        self.seq = 0
        self.landed: bytes | None = None

    def publish(self, record: Any) -> None:
        """Hand ``record`` (just stored) to the threads waiting here."""
        try:
            self.landed = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        except Exception:  # the store took it; we need not
            self.landed = None
        self.seq += 1


_registry: NameRegistry[KeyLock] = NameRegistry(KeyLock)


def key_lock(identifier: Any) -> KeyLock:
    """Return the process-wide :class:`KeyLock` for ``identifier``."""
    return _registry.get(identifier)


class KeyMutex:
    """``acquire(wait=True)``/``release()`` over a :class:`KeyLock` and a lease.

    A blocking ``acquire`` waits at most ``wait_timeout`` seconds in all and
    then raises :class:`~django_dogpile.exceptions.WaitTimeout`.  If the
    lease's store is down and set to ignore errors, the mutex goes on with
    the in-process lock alone (``degraded``).

    A blocking ``acquire`` is only made for a key with no value.  When the
    lease finds that a record has landed meanwhile, the waiter does not take
    the lock at all: ``acquire`` returns True holding nothing, and
    ``landed`` is the record, which the caller serves.  So once the value
    exists, every waiter in every process returns after one round trip,
    instead of taking the lease one after another.

    A non-blocking ``acquire`` (a stale value is there to serve) also fails
    while a ``RETRY_AFTER`` hold is on the key; nothing else looks at that
    hold.
    """

    __slots__ = (
        "key_lock",
        "lease",
        "wait_timeout",
        "usable",
        "may_land",
        "waited",
        "degraded",
        "landed",
        "keep_for",
        "released",
        "acquired_at",
    )

    def __init__(
        self,
        key_lock: KeyLock,
        lease: Lease | None,
        wait_timeout: float,
        usable: Callable[[Any], bool] | None = None,
    ) -> None:
        """``usable(record)`` says whether a landed record may be served.

        Without ``usable`` a blocking ``acquire`` always takes the lock:
        what a read-modify-write (``incr``, ``touch``...) needs.
        """
        self.key_lock = key_lock
        self.usable = usable
        self.may_land = usable is not None
        self.lease = lease
        self.wait_timeout = wait_timeout
        self.waited = False
        self.degraded = False
        #: The record found instead of the lock (see the class docstring).
        self.landed: Any = MISSING
        #: Set by :meth:`hold_on_release`: seconds to hold regenerations off.
        self.keep_for = 0.0
        #: The lease went with the fenced write (:meth:`store`).
        self.released = False
        self.acquired_at = 0.0

    def acquire(self, wait: bool = True) -> bool:
        lock = self.key_lock.lock
        if not wait:
            if (self.lease is None or self.degraded) and retry_after.holding(self.key_lock.ident):
                # a regeneration just failed: serve stale a while (with a
                # shared lease the hold lives in the store, which set() and
                # delete() in any process end)
                return False
            if not lock.acquire(False):
                return False
            if self._lease(False, 0.0):
                self.acquired_at = time.monotonic()
                return True
            lock.release()
            return False
        deadline = time.monotonic() + self.wait_timeout
        if not lock.acquire(False):
            self.waited = True
            here = self.key_lock
            seen = here.seq
            if not lock.acquire(timeout=self.wait_timeout):
                raise WaitTimeout(f"in-process lock busy for {self.wait_timeout}s")
            if self.may_land and here.seq != seen and here.landed is not None:
                # the thread we waited for made (or was handed) the value
                record = pickle.loads(here.landed)
                if self.usable(record):  # type: ignore[misc]
                    lock.release()
                    self.landed = record
                    return True
        got = self._lease(True, deadline)
        if getattr(self.lease, "waited", False):  # for another process's holder
            self.waited = True
        if got is LANDED:
            self.landed = self.lease.snapshot()  # type: ignore[union-attr]
            self.key_lock.publish(self.landed)
            lock.release()
            return True
        if not got:
            lock.release()
            raise WaitTimeout(f"lease busy for {self.wait_timeout}s")
        self.acquired_at = time.monotonic()
        return True

    def _lease(self, wait: bool, deadline: float) -> Any:
        if self.lease is None:
            return True
        try:
            got = self.lease.acquire(wait, deadline, self.may_land)
            if got is LANDED and not self.usable(self.lease.snapshot()):  # type: ignore[misc]
                # not a servable record: take the lock the ordinary way
                got = self.lease.acquire(wait, deadline, landed_ok=False)
            if degraded.active:
                degraded.recovered(log, self.key_lock.ident[0], LOCK_STORE_DOWN)
            return got
        except LeaseUnavailable as exc:
            alias = self.key_lock.ident[0]
            degraded.warn(
                log,
                alias,
                LOCK_STORE_DOWN,
                "%s: %s (%s); locking within this process only",
                alias,
                LOCK_STORE_DOWN,
                exc,
            )
            self.degraded = True
            return True
        except BaseException:
            self.key_lock.lock.release()
            raise

    def snapshot(self) -> Any:
        """The record read atomically with the lease, or :data:`MISSING`."""
        if self.lease is None or self.degraded:
            return MISSING
        return self.lease.snapshot()

    @property
    def leased(self) -> bool:
        """True when a lease in the shared store guards this mutex."""
        return self.lease is not None and not self.degraded

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        """Write ``record`` unless another caller's lease or write came first.

        ``unchanged()`` tells whether the record in the store is still the
        one the regeneration started from.  The write is made while the
        lease is ours; or when the lease ran out and nobody took it, if
        ``unchanged()`` (a slow creator still gets its value stored).
        Returns True when written, None when dropped (a newer holder or an
        explicit write or delete won), False when the store would not take
        it.  A lease that fences atomically (Redis) releases itself with the
        write.
        """
        lease = self.lease
        age = time.monotonic() - self.acquired_at
        try:
            written = lease.store(record, timeout, unchanged)  # type: ignore[union-attr]
        except LeaseUnavailable:
            written = False
        if written is None:
            log.warning(
                "%s: the regenerated value is dropped %.1fs after the lease was "
                "taken: another holder (LOCK_TIMEOUT %ss ran out) or an explicit "
                "set/delete came first",
                getattr(lease, "lock_key", "?"),
                age,
                getattr(lease, "timeout", "?"),
            )
        elif written is False:
            alias = self.key_lock.ident[0]
            what = getattr(lease, "lock_key", "?")
            degraded.warn(log, alias, NOT_TAKEN, "%s: %s (%s)", alias, NOT_TAKEN, what)
        if getattr(lease, "released_by_store", False) and written:
            self.released = True
        return written

    def hold_on_release(self, seconds: float) -> None:
        """Make :meth:`release` hold regenerations off for ``seconds``.

        For a regeneration that failed while a stale value is there to be
        served: the lock itself is released (writers and cold callers go
        on), and a hold is left that only the stale path's non-blocking
        ``acquire`` respects, in this process and, through the lease's
        store, in the others; so the failing work is retried once per
        ``seconds`` instead of by every request.
        """
        self.keep_for = seconds

    def release(self) -> None:
        if self.landed is not MISSING:
            return  # acquire() took nothing
        try:
            if self.keep_for > 0:
                if self.leased:
                    self.lease.hold(self.keep_for)  # type: ignore[union-attr]
                else:
                    retry_after.hold(self.key_lock.ident, self.keep_for)
            elif self.leased and not self.released:
                self.lease.release()  # type: ignore[union-attr]
        except Exception as exc:  # the lease runs out by itself; never leak the local lock
            alias = self.key_lock.ident[0]
            degraded.warn(
                log, alias, RELEASE_FAILED, "%s: %s (%r); it will expire", alias, RELEASE_FAILED, exc
            )
        finally:
            self.key_lock.lock.release()
