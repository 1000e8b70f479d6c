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

import contextlib
import fcntl
import hashlib
import logging
import os
import pickle
import threading
import time
import uuid
from typing import Any, Callable, Iterator, Protocol

from .core import NameRegistry
from .exceptions import WaitTimeout
from .state import MISSING, Deadlines, Fallbacks, fallbacks, retry_after  # noqa: F401 (re-exported)

__all__ = [
    "CacheLease",
    "FileLease",
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

    def hold(self, seconds: float) -> None: ...

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None: ...

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

    A non-blocking ``acquire`` (a stale value is there to serve) also fails
    while a ``RETRY_AFTER`` hold is on the key; nothing else looks at that
    hold.
    """

    __slots__ = (
        "local", "lease", "wait_timeout", "usable", "may_land", "waited", "degraded",
        "landed", "keep_for", "released", "acquired_at",
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
        #: Set by :meth:`hold_on_release`: seconds to hold regenerations off.
        self.keep_for = 0.0
        #: The lease went with the fenced write (:meth:`store`).
        self.released = False
        self.acquired_at = 0.0

    def acquire(self, wait: bool = True) -> bool:
        lock = self.local.lock
        if not wait:
            if (self.lease is None or self.degraded) and retry_after.holding(self.local.ident):
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
                getattr(lease, "lock_key", "?"), age, getattr(lease, "timeout", "?"),
            )
        elif written is False:
            log.warning(
                "%s: the store did not take the regenerated value", getattr(lease, "lock_key", "?")
            )
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
                    retry_after.hold(self.local.ident, self.keep_for)
            elif self.leased and not self.released:
                self.lease.release()  # type: ignore[union-attr]
        except Exception:  # the lease runs out by itself; never leak the local lock
            log.warning("could not release the lease; it will expire", exc_info=True)
        finally:
            self.local.lock.release()


# --- Redis ----------------------------------------------------------------

# KEYS: lock, record, retry hold.  ARGV: token, px, landed_ok, respect_hold.
_ACQUIRE = """
if ARGV[3] == '1' then
  local record = redis.call('GET', KEYS[2])
  if record then
    return {2, record}
  end
end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, redis.call('PTTL', KEYS[3])}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('GET', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lock.  ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1], 'released')
  return 1
end
return 0
"""

# The fenced write.  KEYS: lock, record.  ARGV: token, value, px (0: none).
# 1 written; 0 another holder's lease; -1 no lease (ours ran out, unused).
_STORE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  return -1
end
if holder ~= ARGV[1] then
  return 0
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[2], ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[1], 'released')
return 1
"""

# A failed regeneration: release, leaving a retry hold.  KEYS: lock, retry.
# ARGV: token, px.
_HOLD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1], 'released')
  return 1
end
return 0
"""

# An explicit set(): write, end a retry hold, revoke a regeneration's lease
# (its fenced write then fails: the explicit write wins).
# KEYS: record, lock, retry.  ARGV: value, px (0: none).
_SET = """
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('DEL', KEYS[3])
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PUBLISH', KEYS[2], 'released')
end
return 1
"""

# An explicit delete(): remove, end a retry hold, revoke a regeneration's
# lease.  KEYS: record, lock, retry.
_DELETE = """
local deleted = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[3])
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PUBLISH', KEYS[2], 'released')
end
return deleted
"""

# An explicit add(): as _SET, only if the record is absent.
_ADD = """
local ok
if ARGV[2] == '0' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
if not ok then
  return 0
end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PUBLISH', KEYS[2], 'released')
end
return 1
"""


class RedisScripts:
    """The Lua scripts, registered once per redis client."""

    def __init__(self, client: Any) -> None:
        self.acquire = client.register_script(_ACQUIRE)
        self.release = client.register_script(_RELEASE)
        self.store = client.register_script(_STORE)
        self.hold = client.register_script(_HOLD)
        self.set = client.register_script(_SET)
        self.add = client.register_script(_ADD)
        self.delete = client.register_script(_DELETE)


def _px(seconds: float | None) -> int:
    return 0 if seconds is None else max(int(seconds * 1000), 1)


class RedisLease:
    """An owner-checked ``SET NX PX`` lease; see the module docstring."""

    __slots__ = (
        "client", "scripts", "lock_key", "record_key", "timeout", "px", "encode",
        "decode", "ignore_errors", "token", "_snapshot",
    )

    released_by_store = True

    def __init__(
        self,
        client: Any,
        scripts: RedisScripts,
        lock_key: str,
        record_key: str,
        lock_timeout: float,
        encode: Any,
        decode: Any,
        ignore_errors: bool,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.lock_key = lock_key
        self.record_key = record_key
        self.timeout = lock_timeout
        self.px = max(int(lock_timeout * 1000), 1)
        self.encode = encode
        self.decode = decode
        self.ignore_errors = ignore_errors
        self.token = uuid.uuid4().hex
        self._snapshot: Any = MISSING

    def _try(self, landed_ok: bool, respect_hold: bool) -> tuple[Any, Any]:
        """One round trip: ``(True | False | LANDED, pttl)``."""
        from redis.exceptions import ConnectionError, TimeoutError

        try:
            ok, extra = self.scripts.acquire(
                keys=[self.lock_key, self.record_key, self.lock_key + ":retry"],
                args=[self.token, self.px, "1" if landed_ok else "0", "1" if respect_hold else "0"],
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
        """Take the lease; a blocking call may return :data:`LANDED` instead.

        A non-blocking call (the stale path) fails while a retry hold is on.
        """
        landed_ok = wait and landed_ok
        ok, pttl = self._try(landed_ok, not wait)
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
            ok, pttl = self._try(landed_ok, False)
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

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        """The fenced write: token check, ``SET`` and release, one script.

        With no lease at all (ours ran out and nobody took it), the record's
        creation time decides: two round trips apart.
        """
        from redis.exceptions import ConnectionError, TimeoutError

        try:
            value = self.encode(record)
            ok = self.scripts.store(
                keys=[self.lock_key, self.record_key],
                args=[self.token, value, _px(timeout)],
                client=self.client,
            )
            if ok == -1:
                if not unchanged():
                    return None
                if timeout is None:
                    self.client.set(self.record_key, value)
                else:
                    self.client.set(self.record_key, value, px=_px(timeout))
                return True
        except (ConnectionError, TimeoutError):
            if self.ignore_errors:
                return False
            raise
        return True if ok else None

    def hold(self, seconds: float) -> None:
        """Release, leaving a retry hold of ``seconds`` (if still ours)."""
        self.scripts.hold(
            keys=[self.lock_key, self.lock_key + ":retry"], args=[self.token, _px(seconds)],
            client=self.client,
        )

    def release(self) -> None:
        if not self.scripts.release(
            keys=[self.lock_key], args=[self.token], client=self.client
        ):
            log.warning(
                "lease %s was gone at release (LOCK_TIMEOUT %ss, or an explicit "
                "set revoked it)", self.lock_key, self.timeout,
            )


# --- any other shared Django cache ------------------------------------------


class CacheLease:
    """A lease made with ``cache.add()``; see the module docstring.

    ``add()`` must be atomic in the store (memcached, the database cache on
    a database that serialises the insert of one primary key).
    """

    __slots__ = ("cache", "lock_key", "record_key", "timeout", "token", "_snapshot")

    released_by_store = False

    def __init__(self, store: Any, lock_key: str, record_key: str, lock_timeout: float) -> None:
        self.cache = store
        self.lock_key = lock_key
        self.record_key = record_key
        self.timeout = lock_timeout
        self.token = uuid.uuid4().hex
        self._snapshot: Any = MISSING

    def _take(self) -> bool:
        return bool(self.cache.add(self.lock_key, self.token, timeout=self.timeout))

    def holds(self) -> bool:
        return self.cache.get(self.lock_key) == self.token

    def acquire(self, wait: bool, deadline: float, landed_ok: bool = True) -> Any:
        """Take the lease; a blocking call may return :data:`LANDED` instead.

        A non-blocking call (the stale path) fails while a retry hold is on.
        """
        if not wait and self.cache.get(self.lock_key + ":retry") is not None:
            return False
        self._snapshot = MISSING  # an unusable record seen before is no answer now
        delay = 0.005
        while True:
            if self._take():
                return True
            remaining = deadline - time.monotonic()
            if not wait or remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
            if landed_ok:
                record = self.cache.get(self.record_key, MISSING)
                if record is not MISSING:
                    self._snapshot = record
                    return LANDED

    def snapshot(self) -> Any:
        return self._snapshot

    def _holder(self) -> Any:
        return self.cache.get(self.lock_key)

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        """Write ``record`` if the record is the one the regeneration started
        from and no other caller holds the lease (ours, or none left).

        Not atomic: the window is one round trip, between the checks and
        the write.
        """
        if not unchanged():
            return None
        holder = self._holder()
        if holder is not None and holder != self.token:
            return None
        return self._write(record, timeout)

    def _write(self, record: Any, timeout: float | None) -> bool:
        result: Any = self.cache.set(self.record_key, record, timeout=timeout)  # type: ignore[func-returns-value]
        return result is not False

    def hold(self, seconds: float) -> None:
        self.cache.set(self.lock_key + ":retry", 1, timeout=seconds)
        self.release()

    def _drop(self) -> bool:
        if self.holds():
            self.cache.delete(self.lock_key)
            return True
        return False

    def release(self) -> None:
        # Not atomic on stores without compare-and-delete: the window is the
        # time between these two calls, and only matters if the lease ran out
        # just then.
        if not self._drop():
            log.warning(
                "lease %s was gone at release (LOCK_TIMEOUT %ss, or an explicit "
                "set revoked it)", self.lock_key, self.timeout,
            )


# --- Django's file cache ----------------------------------------------------


class FileLease(CacheLease):
    """A lease file beside the file cache's own files, changed under ``flock``.

    ``FileBasedCache.add()`` is ``has_key()`` then ``set()``: two processes
    both "add" the same lock.  Here each check-and-write of a lease file
    happens under an exclusive ``flock`` of one guard file per cache
    directory, held for microseconds and dropped by the kernel if the
    process dies; the lease file holds the owner's token and the wall-clock
    time its lease runs out.  One host only, as the file cache is.
    """

    __slots__ = ("path", "guard")

    def __init__(self, store: Any, lock_key: str, record_key: str, lock_timeout: float) -> None:
        super().__init__(store, lock_key, record_key, lock_timeout)
        directory = store._dir
        name = hashlib.md5(store.make_key(lock_key).encode(), usedforsecurity=False).hexdigest()
        self.path = os.path.join(directory, name + ".dogpile-lease")
        self.guard = os.path.join(directory, ".dogpile-guard")

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.guard), exist_ok=True)
        fd = os.open(self.guard, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _read(self) -> tuple[str, float] | None:
        try:
            with open(self.path) as f:
                token, until = f.read().split()
            return token, float(until)
        except (OSError, ValueError):
            return None

    def _take(self) -> bool:
        with self._guarded():
            current = self._read()
            if current is not None and current[1] > time.time():
                return False
            with open(self.path, "w") as f:
                f.write(f"{self.token} {time.time() + self.timeout!r}")
            return True

    def holds(self) -> bool:
        with self._guarded():
            current = self._read()
        return current is not None and current[0] == self.token and current[1] > time.time()

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        with self._guarded():  # no other lease change while we check and write
            current = self._read()
            if current is not None and current[0] != self.token:
                return None  # another holder's lease, running or run out
            if not unchanged():
                return None
            self.cache.set(self.record_key, record, timeout=timeout)
            return True

    def _drop(self) -> bool:
        with self._guarded():
            current = self._read()
            if current is not None and current[0] == self.token:
                os.unlink(self.path)
                return current[1] > time.time()
        return False


# --- Django's database cache --------------------------------------------------


class DatabaseLease(CacheLease):
    """A lease row in the database cache's table, taken by primary key.

    ``DatabaseCache.add()`` over an *expired* row is SELECT then UPDATE: on a
    database that lets two transactions read the expired row (PostgreSQL's
    READ COMMITTED), both "add" it.  Here an expired lease row is deleted by
    a ``DELETE ... WHERE expires < now`` and the lease taken by a plain
    ``INSERT``, which the primary key lets exactly one caller win; expiry is
    kept to the microsecond (the cache itself truncates to seconds).  The
    store's own writes fail silently on a busy database (SQLite's "database
    is locked"): a fenced write is retried a few times and reported when it
    could not be made.
    """

    __slots__ = ()

    def _sql(self, statement: str, params: list[Any]) -> int:
        from django.db import connections, router

        store = self.cache
        db = router.db_for_write(store.cache_model_class)
        connection = connections[db]
        table = connection.ops.quote_name(store._table)
        with connection.cursor() as cursor:
            cursor.execute(statement.format(table=table), params)
            return cursor.rowcount

    def _take(self) -> bool:
        import base64

        from django.db import DatabaseError, connections, router, transaction
        from django.utils import timezone

        store = self.cache
        key = store.make_key(self.lock_key)
        now = timezone.now()
        expires = now + _timedelta(self.timeout)
        db = router.db_for_write(store.cache_model_class)
        ops = connections[db].ops
        value = base64.b64encode(pickle.dumps(self.token)).decode("latin1")
        try:
            with transaction.atomic(using=db):
                self._sql(
                    "DELETE FROM {table} WHERE cache_key = %s AND expires < %s",
                    [key, ops.adapt_datetimefield_value(now)],
                )
                self._sql(
                    "INSERT INTO {table} (cache_key, value, expires) VALUES (%s, %s, %s)",
                    [key, value, ops.adapt_datetimefield_value(expires)],
                )
        except DatabaseError:  # the key is taken (or the database busy)
            return False
        return True

    def _write(self, record: Any, timeout: float | None) -> bool:
        store = self.cache
        key = store.make_key(self.record_key)
        for attempt in range(20):
            if store._base_set("set", key, record, timeout):
                return True
            time.sleep(0.005 * (attempt + 1))
        return False

    def _holder(self) -> Any:
        from django.db import DatabaseError

        for attempt in range(20):
            try:
                return self.cache.get(self.lock_key)
            except DatabaseError:  # busy: try again
                time.sleep(0.005 * (attempt + 1))
        raise LeaseUnavailable(f"{self.lock_key}: the database stayed busy")

    def holds(self) -> bool:
        return self._holder() == self.token

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        from django.db import DatabaseError

        try:
            return super().store(record, timeout, unchanged)
        except DatabaseError:  # the database stayed busy
            return False

    def _drop(self) -> bool:
        from django.db import DatabaseError

        if not self.holds():
            return False
        key = self.cache.make_key(self.lock_key)
        for attempt in range(20):
            try:
                self._sql("DELETE FROM {table} WHERE cache_key = %s", [key])
                return True
            except DatabaseError:  # busy: the row would block the key for LOCK_TIMEOUT
                time.sleep(0.005 * (attempt + 1))
        log.warning("%s: could not delete the lease row (database busy); it expires", self.lock_key)
        return True


def _timedelta(seconds: float) -> Any:
    import datetime

    return datetime.timedelta(seconds=seconds)
