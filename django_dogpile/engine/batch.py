"""``get_or_set_many``: many keys in one store read, and one creator call.

The steps of :meth:`Batch.run`, for the keys of one call:

1. **one read** -- every key's record in one ``get_many`` (an ``MGET`` on
   Redis, one ``get_multi`` on memcached); the fresh ones are served.
2. **claims** -- each other key's lock is tried without waiting, one by
   one: a key whose lock another caller holds is served stale when it has a
   stale value (``UPDATING``), else waited for in step 5; the keys whose
   lock this caller won are read again together (one more read, and none
   on Redis for a stale key: the lease fetched it) and one that another
   caller finished meanwhile is served (``HIT``).
3. **one creator call** -- ``creator(keys)`` with the keys left, a list in
   the order given; it returns a dict.  A key it leaves out is not stored
   and not in the answer (as ``get_many`` leaves out a miss); keys it was
   not asked for are ignored.
4. **the writes** -- each value is stored fenced under its own lease, as a
   single ``get_or_set`` stores it (its own ``CacheResult``, or the
   ``expires_in()``/``dont_store()`` the creator called for all of them),
   and every lock is released before anything is waited for: two batches
   that share keys never wait on each other while holding one.  Each value
   is stamped with the call's tags, or (none given) those of the value it
   replaces, with what the making read bubbling up to all of them.
5. **the waits** -- a key without a value whose lock was taken elsewhere is
   waited for as a single ``get_or_set`` waits (at most ``WAIT_TIMEOUT``),
   and made by ``creator([key])`` only if its holder gave up.

So per key, single flight holds across threads, processes and hosts, and
a caller that must make 50 keys calls its creator once.  A creator that
raises leaves no key stored: the stale values are served with
``SERVE_STALE_ON_ERROR`` when every key it was asked for has one, else the
error reaches the caller (a creator that returns no dict is a bug: always
raised).  Keys must be hashable.  ``BACKGROUND`` and ``SOFT_TIMEOUT`` do
not apply here: the caller makes the keys itself.  The async twin is
:mod:`~django_dogpile.engine.abatch`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from django_dogpile import records, signals
from django_dogpile.engine.call import Call, stamp_of
from django_dogpile.engine.locks import KeyMutex
from django_dogpile.engine.memory import fallbacks
from django_dogpile.engine.path import Regeneration
from django_dogpile.engine.results import CacheResult, made_unstored
from django_dogpile.engine.tags import Collector, bubble, collecting
from django_dogpile.records import CREATED, MISSING, VALUE, is_fresh, is_record

__all__ = ["ABSENT", "Batch", "One", "checked", "get_or_set_many"]

log = logging.getLogger(__name__)

#: what a one-key creator returns for a key its creator left out
ABSENT = object()


class _Claim:
    """One key this caller holds the lock of."""

    __slots__ = ("key", "users", "skey", "call", "mutex")

    def __init__(self, key: Any, users: list[Any], skey: str, call: Call, mutex: KeyMutex) -> None:
        self.key, self.users, self.skey, self.call, self.mutex = key, users, skey, call, mutex


class One:
    """``creator([key])``'s value for ``key``, for a key made on its own."""

    def __init__(self, creator: Callable[[list[Any]], Any], key: Any, where: str) -> None:
        self.creator, self.key, self.where = creator, key, where

    def __call__(self) -> Any:
        made = checked(self.creator([self.key]), self.where)
        if self.key not in made:
            return CacheResult(ABSENT, store=False)
        return made[self.key]


def checked(made: Any, where: str) -> Mapping[Any, Any]:
    if not isinstance(made, Mapping):
        raise TypeError(
            f"{where}: the creator must return a dict of the keys it was given, not {type(made).__name__}."
        )
    return made


class Batch:
    """``get_or_set_many`` of one backend (see the module docstring)."""

    def __init__(self, regeneration: Regeneration) -> None:
        self.regeneration = regeneration
        self.binding = regeneration.binding

    def run(
        self,
        keys: Iterable[Any],
        creator: Callable[[list[Any]], Any],
        timeout: Any,
        version: int | None,
        tags: tuple[str, ...] = (),
        raws: Mapping[str, Any] | None = None,
    ) -> dict[Any, Any]:
        """The values of ``keys`` (``raws``: their records, already read)."""
        found, waits = self.claim_and_make(keys, creator, timeout, version, tags, raws)
        where = self.where()
        for skey, users, raw in waits:
            value, _ = self.regeneration.run(
                users[0], skey, raw, One(creator, users[0], where), timeout, tags, version=version
            )
            if value is not ABSENT:
                for key in users:
                    found[key] = value
        return found

    def where(self) -> str:
        return f"DogpileCache {self.binding.alias!r}: get_or_set_many()"

    def check(self, creator: Any) -> None:
        if not callable(creator):
            raise TypeError(f"{self.where()}: creator must be a callable taking a list of keys.")

    def group(self, keys: Iterable[Any], version: int | None) -> dict[str, list[Any]]:
        """Store key -> the keys making it (``1`` and ``"1"``), in order."""
        b = self.binding
        skeys: dict[str, list[Any]] = {}
        for key in keys:
            try:
                hash(key)
            except TypeError:
                raise TypeError(
                    f"{self.where()}: the keys must be hashable (the creator returns a dict "
                    f"of them), not {key!r}."
                ) from None
            skeys.setdefault(b.store_key(key, version), []).append(key)
        return skeys

    def claim_and_make(
        self,
        keys: Iterable[Any],
        creator: Callable[[list[Any]], Any],
        timeout: Any,
        version: int | None,
        tags: tuple[str, ...] = (),
        raws: Mapping[str, Any] | None = None,
    ) -> tuple[dict[Any, Any], list[Any]]:
        """Steps 1 to 4: the values found or made, and the keys to wait for
        (step 5: ``(store key, user keys, record read)``), every lock released."""
        b = self.binding
        where = self.where()
        self.check(creator)
        fresh_for = b.freshness(timeout)  # a bad timeout raises before any work
        skeys = self.group(keys, version)
        if raws is None:
            raws = b.store.get_many(list(skeys)) if skeys else {}
        found: dict[Any, Any] = {}
        todo = []
        for skey, users in skeys.items():
            raw = raws.get(skey, MISSING)
            if b.fresh_hit(users[0], raw):
                for key in users:
                    found[key] = raw[VALUE]
            else:
                todo.append((skey, users, raw))
        if not todo:
            return found, []
        if fresh_for is not None and fresh_for <= 0:  # made for this caller, stored for nobody
            made = checked(made_unstored(lambda: creator([users[0] for _, users, _ in todo])), where)
            for _, users, _ in todo:
                b.count("MISS", users[0])
                if users[0] in made:
                    value = made[users[0]]
                    for key in users:
                        found[key] = value.value if isinstance(value, CacheResult) else value
            return found, []
        inherited = self._before_deploy(todo, version)
        waits: list[Any] = []
        claims = self._claim(todo, tags, found, waits, inherited)
        try:
            if claims:
                self._make(claims, creator, fresh_for, tags, found, where)
        finally:
            for claim in claims:
                claim.mutex.release()
        return found, waits

    def _before_deploy(self, todo: list[Any], version: int | None) -> dict[str, Any]:
        """The records of before a deploy (``PREVIOUS_VERSION``...) of the
        keys with no record, in one more read: store key -> record."""
        b = self.binding
        if not b.options.previous:
            return {}
        old_keys = {}
        for skey, users, raw in todo:
            if not is_record(b.seen(raw)) and (old := b.previous_key(users[0], version)) is not None:
                old_keys[old] = skey
        if not old_keys:
            return {}
        now = records.now()
        found = {}
        for old, record in b.store.get_many(list(old_keys)).items():
            # untagged only: a tagged record's tags were versioned under the old keys
            if is_record(record) and len(record) == 4 and b.live(record, now):
                found[old_keys[old]] = record
        return found

    def _claim(
        self,
        todo: list[Any],
        tags: tuple[str, ...],
        found: dict[Any, Any],
        waits: list[Any],
        inherited: dict[str, Any],
    ) -> list[_Claim]:
        """Steps 2: the locks this caller wins (serving what it need not make)."""
        b = self.binding
        now = records.now()
        claims: list[_Claim] = []
        mine, done = [], []
        try:
            for skey, users, raw in todo:
                call = Call(b.seen(raw), tags)
                if skey in inherited:
                    call.inherit(inherited[skey])  # stale, fencing nothing
                if b.live(call.first, now):
                    call.stale = call.first[VALUE]
                mutex = b.mutex(skey)
                if mutex.acquire(False):
                    claims.append(_Claim(users[0], users, skey, call, mutex))
                elif call.stale is not MISSING:
                    self._serve(users, call.first, "UPDATING", found)
                else:
                    waits.append((skey, users, raw))
            again = [c.skey for c in claims if c.mutex.snapshot() is MISSING]
            reread = b.store.get_many(again) if again else {}
            for claim in claims:
                snapshot = claim.mutex.snapshot()
                record = b.seen(reread.get(claim.skey, MISSING) if snapshot is MISSING else snapshot)
                if is_fresh(record, records.now()) and record[CREATED] != claim.call.seen_created:
                    log.debug("%r was made elsewhere meanwhile", claim.key)
                    b.count("HIT", claim.key)
                    self._serve(claim.users, record, None, found)
                    done.append(claim)
                elif (
                    claim.mutex.degraded and (kept := fallbacks.get(b.ident(claim.skey), now)) is not MISSING
                ):
                    log.debug("%r served from this process's outage fallback", claim.key)
                    # counted as the single path counts it
                    b.count("HIT" if claim.call.stale is not MISSING else "MISS", claim.key)
                    for key in claim.users:
                        found[key] = kept
                    done.append(claim)
                else:
                    mine.append(claim)
        except BaseException:
            for claim in claims:
                claim.mutex.release()
            raise
        for claim in done:
            claim.mutex.release()
        return mine

    def _serve(self, users: list[Any], record: Any, outcome: str | None, found: dict[Any, Any]) -> None:
        b = self.binding
        if outcome is not None:
            b.count(outcome, users[0])
            signals.stale_served.send(self.regeneration.sender, alias=b.alias, key=users[0], reason=outcome)
        bubble(stamp_of(record))
        for key in users:
            found[key] = record[VALUE]

    def _make(
        self,
        claims: list[_Claim],
        creator: Callable[[list[Any]], Any],
        fresh_for: float | None,
        tags: tuple[str, ...],
        found: dict[Any, Any],
        where: str,
    ) -> None:
        """Steps 3 and 4: one creator call for ``claims``, each value stored."""
        b = self.binding
        slot = b.budget.take(wait=any(c.call.stale is MISSING for c in claims))
        if slot is None:  # over budget: every key has a stale value to serve
            log.debug("%d keys stay stale: REGENERATION_BUDGET is spent", len(claims))
            for claim in claims:
                self._serve(claim.users, claim.call.first, "UPDATING", found)
            return
        try:
            # the tags' versions before the creator reads anything: the
            # call's, or (none given) each key those of the value it replaces
            own_tags = {
                c.skey: tags
                or (tuple(t for t, _ in stamp_of(c.call.first)) if c.call.stale is not MISSING else ())
                for c in claims
            }
            names = tuple(dict.fromkeys(t for n in own_tags.values() for t in n))
            versions = dict(b.tags.stamp(names)) if names else {}
            asked = [claim.key for claim in claims]
            for key in asked:
                b.count("REGENERATIONS", key)
            log.debug("regenerating %d keys in one call", len(asked))
            started = time.monotonic()
            try:
                with collecting() as collector:
                    made = creator(asked)
            except Exception as exc:
                self._failed(claims, exc, found)
                return
        finally:
            b.budget.give(slot)
        cost = time.monotonic() - started
        made = checked(made, where)  # a creator's bug, not its failure: raised
        for claim in claims:
            if claim.key not in made:
                b.count("MISS", claim.key)  # left out: not stored, not served
                continue
            # this key's tags, what the making bubbled up, what the creator said of them all
            own = Collector((t, versions[t]) for t in own_tags[claim.skey] if t in versions)
            own.add(collector.stamp)
            own.timeout, own.store = collector.timeout, collector.store
            call = claim.call
            value, _ = self.regeneration.settle(
                claim.key, claim.skey, made[claim.key], own, fresh_for, cost, claim.mutex, call
            )
            if call.stamp:
                bubble(call.stamp)
            b.count("EXPIRED" if call.stale is not MISSING else "MISS", claim.key)
            for key in claim.users:
                found[key] = value

    def _failed(self, claims: list[_Claim], exc: Exception, found: dict[Any, Any]) -> None:
        """The creator raised: stale values served, or the error raised."""
        b = self.binding
        for claim in claims:
            b.count("ERRORS", claim.key)
            signals.regeneration_failed.send(
                self.regeneration.sender, alias=b.alias, key=claim.key, exception=exc
            )
            if b.options.retry_after and claim.call.stale is not MISSING:
                claim.mutex.hold_on_release(b.options.retry_after)
        if b.options.serve_stale_on_error and all(c.call.stale is not MISSING for c in claims):
            log.error("regenerating %d keys failed; serving their stale values", len(claims), exc_info=True)
            for claim in claims:
                self._serve(claim.users, claim.call.first, "STALE", found)
            return
        log.debug("regenerating %d keys failed", len(claims), exc_info=True)
        raise exc


# --- DogpileCache's methods (the backend's class attributes) -------------------


def get_or_set_many(
    self: Any,
    keys: Iterable[Any],
    creator: Callable[[list[Any]], dict[Any, Any]],
    timeout: Any = DEFAULT_TIMEOUT,
    version: int | None = None,
    *,
    tags: Any = None,
) -> dict[Any, Any]:
    """:meth:`get_or_set` for many keys: one store read, and one call of
    ``creator(keys)`` with the keys this caller must make, returning a
    dict of them; a key it leaves out is not stored nor returned.  Each
    key is made by one caller at a time (:mod:`django_dogpile.engine.batch`).
    """
    return self.batch.run(keys, creator, timeout, version, self.binding.tags.names(tags))
