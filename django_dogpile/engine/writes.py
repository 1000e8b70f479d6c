"""The writes of :class:`~django_dogpile.cache.DogpileCache`: Django's
``BaseCache`` semantics over records.

Every write makes a record (:mod:`django_dogpile.records`) the store keeps
for its freshness plus ``GRACE``; an explicit write or delete wins over a
regeneration running meanwhile (on Redis the adapter's script revokes the
regeneration's lease; elsewhere the regeneration's fence sees the new
record), ends a ``RETRY_AFTER`` retry hold and this process's outage
fallback for the key.  A read-modify-write (``add`` over a stale record,
``touch``, ``incr``, ``invalidate``, ``incr_version``) holds the key's lock
(:meth:`~django_dogpile.engine.binding.Binding.exclusive`), so it never
interleaves with a regeneration, in any process.  Each key of the
``*_many`` methods counts a stale record as Django counts an expired one:
a miss.
"""

from __future__ import annotations

from typing import Any

from django_dogpile import records
from django_dogpile.engine.binding import LOCK_SUFFIX, Binding
from django_dogpile.engine.memory import fallbacks, retry_after
from django_dogpile.engine.tags import bubble
from django_dogpile.records import (
    CREATED,
    EXPIRES,
    INVALIDATED,
    MISSING,
    STAMP,
    VALUE,
    Record,
    is_fresh,
    is_record,
    store_timeout,
)

__all__ = ["Writes"]


class Writes:
    """The writes of one backend (see the module docstring); keys are store keys."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding

    def record(
        self, value: Any, fresh_for: float | None, stamp: tuple[Any, ...] = ()
    ) -> tuple[tuple[Any, ...], float | None]:
        """A new record for ``value`` (tagged with ``stamp``) and the store
        timeout that keeps it."""
        now = records.now()
        expires = records.expires_at(now, fresh_for, self.binding.options.jitter)
        record = tuple(Record(value, now, expires, 0.0)) + ((stamp,) if stamp else ())
        return record, store_timeout(expires, self.binding.options.grace, now)

    def forget(self, skey: str) -> None:
        """An explicit write or delete ends this process's memory of the key."""
        ident = self.binding.ident(skey)
        fallbacks.discard(ident)
        retry_after.forget(ident)

    def _end_retry_hold(self, skey: str) -> None:
        b = self.binding
        if b.options.retry_after and b.adapter.kind != "redis":
            # (Redis ends it in the same script; without RETRY_AFTER in this
            # alias's OPTIONS -- the same in every worker -- no retry hold is
            # ever left, and no round trip is spent looking)
            b.adapter.end_hold(skey + LOCK_SUFFIX)

    # --- one key --------------------------------------------------------------

    def set(
        self, key: Any, skey: str, value: Any, fresh_for: float | None, stamp: tuple[Any, ...] = ()
    ) -> None:
        b = self.binding
        record, ttl = self.record(value, fresh_for, stamp)
        b.store  # noqa: B018 - connect
        with b.pickling(f"the value for key {key!r}"):
            b.adapter.set(skey, record, ttl, skey + LOCK_SUFFIX)
        self.forget(skey)
        self._end_retry_hold(skey)

    def add(self, key: Any, skey: str, value: Any, fresh_for: float | None) -> bool:
        b = self.binding
        record, ttl = self.record(value, fresh_for)
        b.store  # noqa: B018 - connect
        with b.pickling(f"the value for key {key!r}"):
            added = b.adapter.add(skey, record, ttl, skey + LOCK_SUFFIX)
        if added:
            self.forget(skey)
            return True
        with b.exclusive(key, skey):
            raw = b.seen(b.adapter.backing.get(skey, MISSING))  # not a near copy
            if is_fresh(raw, records.now()):
                return False
            record, ttl = self.record(value, fresh_for)
            with b.pickling(f"the value for key {key!r}"):
                b.store.set(skey, record, timeout=ttl)
            self.forget(skey)
            return True

    def delete(self, key: Any, version: int | None) -> bool:
        """``delete``: the key's record of before a deploy
        (``PREVIOUS_VERSION``...) too, or the next ``get_or_set`` would serve it."""
        b = self.binding
        skey, previous = b.store_key(key, version), b.previous_key(key, version)
        self.forget(skey)
        b.store  # noqa: B018 - connect
        deleted = b.adapter.delete(skey, skey + LOCK_SUFFIX)
        if previous is not None:
            b.store.delete(previous)
        self._end_retry_hold(skey)
        return deleted

    def touch(self, key: Any, skey: str, fresh_for: float | None) -> bool:
        b = self.binding
        with b.exclusive(key, skey):
            raw = b.seen(b.adapter.backing.get(skey, MISSING))  # not a near copy
            now = records.now()
            if not is_fresh(raw, now):
                return False
            if fresh_for is not None and fresh_for <= 0:
                b.store.delete(skey)
                return True
            expires = records.expires_at(now, fresh_for, b.options.jitter)
            b.store.set(
                skey,
                (raw[VALUE], raw[CREATED], expires, raw[records.COST], *raw[STAMP:]),
                timeout=store_timeout(expires, b.options.grace, now),
            )
            return True

    def invalidate(self, key: Any, skey: str) -> bool:
        b = self.binding
        with b.exclusive(key, skey):
            raw = b.seen(b.adapter.backing.get(skey, MISSING))  # not a near copy
            now = records.now()
            if not b.live(raw, now):
                return False
            if raw[EXPIRES] is not None and raw[EXPIRES] <= now:
                return True  # already stale; keep its grace period
            b.store.set(
                skey,
                (raw[VALUE], raw[CREATED], INVALIDATED, raw[records.COST], *raw[STAMP:]),
                timeout=b.options.grace,
            )
            return True

    def incr(self, key: Any, skey: str, delta: int) -> Any:
        b = self.binding
        with b.exclusive(key, skey):
            raw = b.seen(b.adapter.backing.get(skey, MISSING))  # not a near copy
            now = records.now()
            if not is_fresh(raw, now):
                raise ValueError(f"Key '{key}' not found")
            value = raw[VALUE] + delta
            b.store.set(
                skey,
                (value, raw[CREATED], raw[EXPIRES], raw[records.COST], *raw[STAMP:]),
                timeout=store_timeout(raw[EXPIRES], b.options.grace, now),
            )
            return value

    def move(self, key: Any, old: str, new: str, version: int) -> None:
        """``incr_version``: the fresh record of ``old`` (``key`` at
        ``version``) moves to ``new``; none is left for ``old`` to inherit."""
        b = self.binding
        b.store  # noqa: B018 - connect
        raw = b.seen(b.adapter.backing.get(old, MISSING))  # not a near copy
        now = records.now()
        if not is_fresh(raw, now):
            raise ValueError(f"Key '{key}' not found")
        b.store.set(new, raw, timeout=store_timeout(raw[EXPIRES], b.options.grace, now))
        b.store.delete(old)
        if (previous := b.previous_key(key, version)) is not None:
            b.store.delete(previous)

    def get(self, skey: str, default: Any) -> Any:
        """``get``: the fresh value of ``skey``, else ``default``."""
        b = self.binding
        raw = b.store.get(skey, MISSING)
        if raw is not MISSING and is_record(raw):
            if len(raw) == 5 and b.seen(raw) is not raw:
                return default  # behind one of its tags
            expires = raw[EXPIRES]
            if expires is None or records.now() < expires:
                if len(raw) == 5:
                    bubble(raw[STAMP])  # to the value being made, if any
                return raw[VALUE]
        return default

    # --- several keys ---------------------------------------------------------

    def get_many(self, skeys: dict[str, list[Any]]) -> dict[Any, Any]:
        """The fresh values of ``skeys`` (store key -> the user keys making it)."""
        if not skeys:
            return {}
        now = records.now()
        found = {}
        b = self.binding
        for skey, raw in b.store.get_many(list(skeys)).items():
            raw = b.seen(raw)
            if is_fresh(raw, now):
                if len(raw) == 5:
                    bubble(raw[STAMP])  # to the value being made, if any
                for key in skeys[skey]:
                    found[key] = raw[VALUE]
        return found

    def set_many(self, data: dict[Any, Any], skeys: dict[str, Any], fresh_for: float | None) -> list[Any]:
        """Set ``data`` (user key -> value; ``skeys``: store key -> user key);
        return the user keys that failed to be stored."""
        b = self.binding
        b.store  # noqa: B018 - connect
        failed = []
        if b.adapter.kind == "redis":
            # one script per key: each revokes a regeneration in flight
            with b.pickling(f"a value among keys {list(data)!r}"):
                for skey, key in skeys.items():
                    record, ttl = self.record(data[key], fresh_for)
                    if not b.adapter.set(skey, record, ttl, skey + LOCK_SUFFIX):
                        failed.append(key)
        else:
            ttl = None
            made = {}
            for skey, key in skeys.items():
                made[skey], ttl = self.record(data[key], fresh_for)
            with b.pickling(f"a value among keys {list(data)!r}"):
                failed = [skeys.get(s, s) for s in b.store.set_many(made, timeout=ttl) or []]
        for skey in skeys:
            self.forget(skey)
        return failed

    def delete_many(self, keys: list[Any], version: int | None) -> None:
        """``delete_many`` (the records of before a deploy too, as :meth:`delete`)."""
        b = self.binding
        skeys = [b.store_key(key, version) for key in keys]
        for skey in skeys:
            self.forget(skey)
        if skeys:
            b.store  # noqa: B018 - connect
            b.adapter.delete_many(skeys, [s + LOCK_SUFFIX for s in skeys])
            previous = [p for key in keys if (p := b.previous_key(key, version)) is not None]
            if previous:
                b.store.delete_many(previous)
