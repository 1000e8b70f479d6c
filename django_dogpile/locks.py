"""The mutex a DogpileCache hands to the core ``Lock``: in-process, then a lease.

A :class:`KeyMutex` for one store key is two locks taken in order:

1. a per-key ``threading.Lock`` shared by every backend instance of the
   process (Django gives each thread its own backend instance, so the state
   lives in a module-level :class:`~django_dogpile.core.NameRegistry`);
   threads of one process contend here and never reach the store;
2. a *lease* in the shared store, when there is one:

   * django-redis: ``SET lock token NX PX`` in a Lua script that, on
     success, also returns the record (so the winner re-checks freshness
     with no extra round trip), and on failure the lease's remaining
     ``PTTL``; release is an owner-checked ``DEL`` that ``PUBLISH``-es on
     the lock key, so waiting processes wake at once;
   * other shared stores (memcached, database, file): ``cache.add(lock,
     token, LOCK_TIMEOUT)``, released only by its owner, waited for by
     polling with exponential back-off (5 ms to 100 ms);
   * locmem: none -- the store lives in this process, the in-process lock
     is enough.

A lease always runs out after ``LOCK_TIMEOUT``, so a holder killed with
SIGKILL blocks nobody for longer than that, and a holder whose lease ran out
cannot delete its successor's lock.

Waiting for a key with no value (``get_or_set``'s cold path) ends as soon
as the value exists, without taking the lock in turn: the Redis script,
called that way, returns the record instead when there is one, and the
``add()`` lease's polling reads it; threads of the holder's process get the
record it just stored from its :class:`KeyLock`.  A read-modify-write
(``incr``, ``touch``...) makes an *exclusive* mutex, which always takes the
lock.  A holder whose regeneration failed may keep its lease for
``RETRY_AFTER`` seconds instead of releasing it (:meth:`KeyMutex.hold_on_release`).
Values computed while the lease's store is unreachable are kept per process
in :data:`fallbacks`.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from typing import Any, Callable, Protocol

from .core import NameRegistry
from .exceptions import WaitTimeout
from .state import MISSING, Deadlines, Fallbacks, fallbacks, retry_after  # noqa: F401 (re-exported)

__all__ = [
    "CacheLease",
    "KeyLock",
    "KeyMutex",
    "LeaseUnavailable",
    "MISSING",
    "RedisLease",
    "key_lock",
]

log = logging.getLogger(__name__)



class LeaseUnavailable(Exception):
    """The lease's store is down and the store is set to ignore errors."""


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


#: What a blocking ``Lease.acquire`` returns when, instead of the lock, it
#: found the record that the holder just stored (see :class:`KeyMutex`).
LANDED = object()


class Lease(Protocol):
    def acquire(self, wait: bool, deadline: float, landed_ok: bool = True) -> Any: ...

    def release(self) -> None: ...

    def keep(self, seconds: float) -> None: ...

    def snapshot(self) -> Any: ...


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
    """

    __slots__ = (
        "local", "lease", "wait_timeout", "usable", "may_land", "waited", "degraded",
        "landed", "keep_for",
    )

    def __init__(
        self,
        local: KeyLock,
        lease: Lease | None,
        wait_timeout: float,
        usable: Callable[[Any], bool] | None = None,
    ) -> None:
        """``usable(record)`` says whether a landed record may be served.

        Without ``usable`` a blocking ``acquire`` always takes the lock:
        what a read-modify-write (``incr``, ``touch``...) needs.
        """
        self.local = local
        self.usable = usable
        self.may_land = usable is not None
        self.lease = lease
        self.wait_timeout = wait_timeout
        self.waited = False
        self.degraded = False
        #: The record found instead of the lock (see the class docstring).
        self.landed: Any = MISSING
        #: Set by :meth:`hold_on_release`: seconds to keep the lock after release.
        self.keep_for = 0.0

    def acquire(self, wait: bool = True) -> bool:
        lock = self.local.lock
        if not wait:
            if retry_after.holding(self.local.ident):
                return False  # a regeneration just failed: serve stale a while
            if not lock.acquire(False):
                return False
            if self._lease(False, 0.0):
                return True
            lock.release()
            return False
        deadline = time.monotonic() + self.wait_timeout
        if not lock.acquire(False):
            self.waited = True
            local = self.local
            seen = local.seq
            if not lock.acquire(timeout=self.wait_timeout):
                raise WaitTimeout(f"in-process lock busy for {self.wait_timeout}s")
            if self.may_land and local.seq != seen and local.landed is not None:
                # the thread we waited for made (or was handed) the value
                record = pickle.loads(local.landed)
                if self.usable(record):  # type: ignore[misc]
                    lock.release()
                    self.landed = record
                    return True
        got = self._lease(True, deadline)
        if got is LANDED:
            self.landed = self.lease.snapshot()  # type: ignore[union-attr]
            self.local.publish(self.landed)
            lock.release()
            return True
        if not got:
            lock.release()
            raise WaitTimeout(f"lease busy for {self.wait_timeout}s")
        return True

    def _lease(self, wait: bool, deadline: float) -> Any:
        if self.lease is None:
            return True
        try:
            got = self.lease.acquire(wait, deadline, self.may_land)
            if got is LANDED and not self.usable(self.lease.snapshot()):  # type: ignore[misc]
                # not a servable record: take the lock the ordinary way
                got = self.lease.acquire(wait, deadline, landed_ok=False)
            return got
        except LeaseUnavailable:
            log.warning("lock store unavailable; locking within this process only")
            self.degraded = True
            return True
        except BaseException:
            self.local.lock.release()
            raise

    def snapshot(self) -> Any:
        """The record read atomically with the lease, or :data:`MISSING`."""
        if self.lease is None or self.degraded:
            return MISSING
        return self.lease.snapshot()

    def mark_waited(self) -> None:
        self.waited = True

    def hold_on_release(self, seconds: float) -> None:
        """Make :meth:`release` keep other callers off for ``seconds``.

        For a regeneration that failed while a stale value is there to be
        served: the lease is kept (shortened to ``seconds``) instead of being
        deleted, and this process remembers the key, so that the failing
        work is retried once per ``seconds`` instead of by every request.
        """
        self.keep_for = seconds

    def release(self) -> None:
        if self.landed is not MISSING:
            return  # acquire() took nothing
        try:
            if self.keep_for > 0:
                retry_after.hold(self.local.ident, self.keep_for)
                if self.lease is not None and not self.degraded:
                    self.lease.keep(self.keep_for)
            elif self.lease is not None and not self.degraded:
                self.lease.release()
        except Exception:  # the lease runs out by itself; never leak the local lock
            log.warning("could not release the lease; it will expire", exc_info=True)
        finally:
            self.local.lock.release()


# --- Redis ----------------------------------------------------------------

_ACQUIRE = """
if ARGV[3] == '1' then
  local record = redis.call('GET', KEYS[2])
  if record then
    return {2, record}
  end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('GET', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1], 'released')
  return 1
end
return 0
"""


_KEEP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class RedisScripts:
    """The Lua scripts, registered once per redis client."""

    def __init__(self, client: Any) -> None:
        self.acquire = client.register_script(_ACQUIRE)
        self.release = client.register_script(_RELEASE)
        self.keep = client.register_script(_KEEP)


class RedisLease:
    """An owner-checked ``SET NX PX`` lease; see the module docstring."""

    __slots__ = (
        "client", "scripts", "lock_key", "record_key", "px", "decode",
        "ignore_errors", "token", "_snapshot",
    )

    def __init__(
        self,
        client: Any,
        scripts: RedisScripts,
        lock_key: str,
        record_key: str,
        lock_timeout: float,
        decode: Any,
        ignore_errors: bool,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.lock_key = lock_key
        self.record_key = record_key
        self.px = max(int(lock_timeout * 1000), 1)
        self.decode = decode
        self.ignore_errors = ignore_errors
        self.token = uuid.uuid4().hex
        self._snapshot: Any = MISSING

    def _try(self, landed_ok: bool) -> tuple[Any, Any]:
        """One round trip: ``(True | False | LANDED, pttl)``."""
        from redis.exceptions import ConnectionError, TimeoutError

        try:
            ok, extra = self.scripts.acquire(
                keys=[self.lock_key, self.record_key],
                args=[self.token, self.px, "1" if landed_ok else "0"],
                client=self.client,
            )
        except (ConnectionError, TimeoutError) as exc:
            if self.ignore_errors:
                raise LeaseUnavailable(str(exc)) from exc
            raise
        if ok:
            self._snapshot = None if extra is None else self.decode(extra)
            return (True if ok == 1 else LANDED), None
        return False, extra

    def acquire(self, wait: bool, deadline: float, landed_ok: bool = True) -> Any:
        """Take the lease; a blocking call may return :data:`LANDED` instead."""
        landed_ok = wait and landed_ok
        ok, pttl = self._try(landed_ok)
        if ok or not wait:
            return ok
        from redis.exceptions import ConnectionError, TimeoutError

        pubsub = self.client.pubsub()
        try:
            try:
                return self._wait(pubsub, landed_ok, deadline)
            except (ConnectionError, TimeoutError) as exc:
                # Redis went away while we waited on the channel.
                if self.ignore_errors:
                    raise LeaseUnavailable(str(exc)) from exc
                raise
        finally:
            try:
                pubsub.close()
            except Exception:  # pragma: no cover - closing a dead connection
                pass

    def _wait(self, pubsub: Any, landed_ok: bool, deadline: float) -> Any:
        pubsub.subscribe(self.lock_key)
        while True:
            # Re-try after subscribing, so a release in between is not missed.
            ok, pttl = self._try(landed_ok)
            if ok:
                return ok
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Wake on the holder's PUBLISH, or when its lease runs out
            # (the confirmation of SUBSCRIBE itself is no reason to wake).
            ttl = (pttl if pttl and pttl > 0 else 1) / 1000 + 0.002
            until = time.monotonic() + min(remaining, ttl)
            while (left := until - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message is not None and message.get("type") == "message":
                    break

    def snapshot(self) -> Any:
        return self._snapshot

    def keep(self, seconds: float) -> None:
        """Keep the lease (if still ours) for ``seconds`` more, then let it lapse."""
        self.scripts.keep(
            keys=[self.lock_key], args=[self.token, max(int(seconds * 1000), 1)],
            client=self.client,
        )

    def release(self) -> None:
        if not self.scripts.release(
            keys=[self.lock_key], args=[self.token], client=self.client
        ):
            log.warning(
                "lease %s ran out before its holder released it; "
                "raise LOCK_TIMEOUT above the longest regeneration",
                self.lock_key,
            )


# --- any other shared Django cache ------------------------------------------


class CacheLease:
    """A lease made with ``cache.add()``; see the module docstring."""

    __slots__ = ("store", "lock_key", "record_key", "timeout", "token", "_snapshot")

    def __init__(self, store: Any, lock_key: str, record_key: str, lock_timeout: float) -> None:
        self.store = store
        self.lock_key = lock_key
        self.record_key = record_key
        self.timeout = lock_timeout
        self.token = uuid.uuid4().hex
        self._snapshot: Any = MISSING

    def acquire(self, wait: bool, deadline: float, landed_ok: bool = True) -> Any:
        """Take the lease; a blocking call may return :data:`LANDED` instead."""
        delay = 0.005
        while True:
            if self.store.add(self.lock_key, self.token, timeout=self.timeout):
                return True
            remaining = deadline - time.monotonic()
            if not wait or remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
            if landed_ok:
                record = self.store.get(self.record_key, MISSING)
                if record is not MISSING:
                    self._snapshot = record
                    return LANDED

    def snapshot(self) -> Any:
        return self._snapshot

    def keep(self, seconds: float) -> None:
        if self.store.get(self.lock_key) == self.token:
            self.store.touch(self.lock_key, seconds)

    def release(self) -> None:
        # Not atomic on stores without compare-and-delete: the window is the
        # time between these two calls, and only matters if the lease ran out
        # just then.
        if self.store.get(self.lock_key) == self.token:
            self.store.delete(self.lock_key)
        else:
            log.warning("lease %s ran out before its holder released it", self.lock_key)
