"""The lease on django-redis: Lua scripts on the primary.

``SET lock token NX PX`` in a script that, on success, also returns the
record (the winner re-checks freshness with no extra round trip) and on
failure the lease's remaining ``PTTL``; release is an owner-checked ``DEL``
that ``PUBLISH``-es on the lock key, so waiting processes wake at once.  The
fenced write is token check, ``SET`` and release in one script; explicit
``set``/``add``/``delete`` revoke a running regeneration's lease.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from django_dogpile.records import MISSING
from django_dogpile.stores.base import LANDED, LeaseUnavailable, is_outage
from django_dogpile.stores.pubsub import Subscription, is_cluster

__all__ = ["RedisLease", "RedisScripts"]

log = logging.getLogger(__name__)


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

# The fenced write.  KEYS: lock, record.  ARGV: token, value, px (0: none),
# fence: the SHA-1 of the record as the lease found it ('-': there was none).
# 1 written under our lease; 2 written with no lease at all (ours ran out and
# nobody took it) over the very record we started from; 0 another holder's
# lease; -1 no lease, and the record changed (an explicit write won).
_STORE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
if not holder then
  local current = redis.call('GET', KEYS[2])
  if ARGV[4] == '-' then
    if current then
      return -1
    end
  elseif not current or redis.sha1hex(current) ~= ARGV[4] then
    return -1
  end
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[2], ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
if holder then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1], 'released')
  return 1
end
return 2
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
    """The Lua scripts, registered once per redis client.

    On a cluster the wake-up is ``SPUBLISH`` on the lock key: a sharded
    channel in the lock's (and the record's) slot, so each script touches
    one slot only (:mod:`django_dogpile.stores.pubsub`).
    """

    def __init__(self, client: Any) -> None:
        self.sharded = is_cluster(client)

        def register(text: str) -> Any:
            if self.sharded:
                text = text.replace("'PUBLISH'", "'SPUBLISH'")
            return client.register_script(text)

        self.acquire = register(_ACQUIRE)
        self.release = register(_RELEASE)
        self.store = register(_STORE)
        self.hold = register(_HOLD)
        self.set = register(_SET)
        self.add = register(_ADD)
        self.delete = register(_DELETE)


def _px(seconds: float | None) -> int:
    return 0 if seconds is None else max(int(seconds * 1000), 1)


class RedisLease:
    """An owner-checked ``SET NX PX`` lease; see the module docstring."""

    __slots__ = (
        "client",
        "scripts",
        "lock_key",
        "record_key",
        "timeout",
        "px",
        "encode",
        "decode",
        "ignore_errors",
        "errors",
        "token",
        "_snapshot",
        "_fence",
        "waited",
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
        errors: tuple[type[BaseException], ...] | None = None,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.lock_key = lock_key
        self.record_key = record_key
        self.timeout = lock_timeout
        self.px = max(int(lock_timeout * 1000), 1)
        #: a blocking acquire found another holder and waited (a ``WAITS``)
        self.waited = False
        self.encode = encode
        self.decode = decode
        self.ignore_errors = ignore_errors
        if errors is None:
            from redis.exceptions import ConnectionError, ResponseError, TimeoutError

            errors = (ConnectionError, TimeoutError, ResponseError)
        self.errors = errors
        self.token = uuid.uuid4().hex
        self._snapshot: Any = MISSING
        #: the SHA-1 of the record as the lease found it ("-": none)
        self._fence = "-"

    def _try(self, landed_ok: bool, respect_hold: bool) -> tuple[Any, Any]:
        """One round trip: ``(True | False | LANDED, pttl)``."""
        try:
            ok, extra = self.scripts.acquire(
                keys=[self.lock_key, self.record_key, self.lock_key + ":retry"],
                args=[self.token, self.px, "1" if landed_ok else "0", "1" if respect_hold else "0"],
                client=self.client,
            )
        except self.errors as exc:
            if self.ignore_errors and is_outage(exc):
                raise LeaseUnavailable(str(exc)) from exc
            raise
        if ok:
            if extra is None:
                self._snapshot, self._fence = None, "-"
            else:
                self._snapshot = self.decode(extra)
                raw = extra if isinstance(extra, bytes) else str(extra).encode()
                self._fence = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
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
        subscription = None
        self.waited = True
        try:
            # the holder's release publishes on the lock key (sharded on a
            # cluster: on the node that serves the lock's slot)
            subscription = Subscription(self.client, self.lock_key)
            return self._wait(subscription, landed_ok, deadline)
        except self.errors as exc:
            # Redis went away while we waited on the channel.
            if self.ignore_errors and is_outage(exc):
                raise LeaseUnavailable(str(exc)) from exc
            raise
        finally:
            if subscription is not None:
                subscription.close()

    def _wait(self, pubsub: Subscription, landed_ok: bool, deadline: float) -> Any:
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

        With no lease at all (ours ran out and nobody took it) the script
        writes only over the very record the lease found (its SHA-1), in the
        same atomic step: an explicit write landing at any moment wins.
        ``unchanged`` is not needed here (other leases check it).
        """
        try:
            ok = self.scripts.store(
                keys=[self.lock_key, self.record_key],
                args=[self.token, self.encode(record), _px(timeout), self._fence],
                client=self.client,
            )
        except self.errors as exc:
            if self.ignore_errors and is_outage(exc):
                return False
            raise
        return True if ok in (1, 2) else None

    def hold(self, seconds: float) -> None:
        """Release, leaving a retry hold of ``seconds`` (if still ours)."""
        self.scripts.hold(
            keys=[self.lock_key, self.lock_key + ":retry"],
            args=[self.token, _px(seconds)],
            client=self.client,
        )

    def release(self) -> None:
        if not self.scripts.release(keys=[self.lock_key], args=[self.token], client=self.client):
            log.warning(
                "lease %s was gone at release (LOCK_TIMEOUT %ss, or an explicit set revoked it)",
                self.lock_key,
                self.timeout,
            )
