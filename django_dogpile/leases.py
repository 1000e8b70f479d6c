"""The leases a :class:`~django_dogpile.locks.KeyMutex` takes in a shared store.

One class per store kind (chosen by :mod:`django_dogpile.stores`), one
interface (:class:`Lease`): ``acquire`` (a blocking call may return
:data:`LANDED`: the record arrived instead of the lock), ``release``,
``hold`` (release, leaving a ``RETRY_AFTER`` hold only the stale path
reads), ``store`` (the fenced write) and ``snapshot`` (the record read with
the lock, if the lease reads it).

* :class:`RedisLease` -- django-redis: Lua scripts; owner-checked, pub/sub
  wake-up; token check + ``SET`` + release in one script.
* :class:`CacheLease` -- ``cache.add()`` (memcached, any store whose
  ``add()`` is atomic), polled with back-off.
* :class:`FileLease` -- Django's file cache: a lease file under ``flock``.
* :class:`DatabaseLease` -- Django's database cache: a lease row taken by
  primary key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pickle
import time
import uuid
from typing import Any, Callable, Iterator, Protocol

from .state import MISSING

__all__ = [
    "LANDED",
    "CacheLease",
    "DatabaseLease",
    "FileLease",
    "Lease",
    "LeaseUnavailable",
    "RedisLease",
    "RedisScripts",
]

log = logging.getLogger(__name__)


class LeaseUnavailable(Exception):
    """The lease's store is down and the store is set to ignore errors."""


#: What a blocking ``Lease.acquire`` returns when, instead of the lock, it
#: found the record that the holder just stored (see :class:`KeyMutex`).
LANDED = object()


class Lease(Protocol):
    def acquire(self, wait: bool, deadline: float, landed_ok: bool = True) -> Any: ...

    def release(self) -> None: ...

    def hold(self, seconds: float) -> None: ...

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None: ...

    def snapshot(self) -> Any: ...


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
