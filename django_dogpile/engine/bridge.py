"""The async bridge of :class:`~django_dogpile.cache.DogpileCache`.

What runs where:

* **on the event loop**: a fresh hit on an in-process store (locmem); a hit
  of an untagged record in this process's ``NEAR_CACHE``; and, on the Redis
  stores with a native asyncio client (``ASYNC_POOL``:
  :mod:`~django_dogpile.stores.redis_async`), the reads of ``aget``,
  ``ahas_key``, ``aget_many``, and ``aget_or_set``'s fresh hit, its stale
  hit while another caller holds the key's lease (one ``GET``, then one
  ``EXISTS`` of the lease), and its cold wait while another caller holds
  the lease (``PTTL`` polled until it goes, then one ``GET``) -- each only
  when both aliases make keys as Django does (a ``KEY_FUNCTION`` may read
  state the loop does not have), and a tagged record only when this
  process knows its tags' versions;
* **in the request's thread-sensitive thread** (``sync_to_async``, as
  Django's ``BaseCache`` runs its ``a*`` methods): every write (values are
  pickled where Django pickles them: a deferred queryset may touch the
  database), every regeneration (taking the lease included), a wait for a
  lease the loop cannot watch (another store), and every read the loop
  cannot make (another store, a near-cache miss, which fills the near
  cache, a native read that failed: the thread path applies
  ``IGNORE_EXCEPTIONS`` and the outage fallbacks); nothing that can wait on
  a lock ever runs on the loop -- locmem included;
* **the dogpile path** of ``aget_or_set``: coroutines of one loop asking
  for the same key share one regeneration (the others await it and each
  unpickle their own copy of its value); the leader waits for the key's lock
  in the request's thread-sensitive thread, where a synchronous creator
  runs too (it may use the database); an ``async def`` creator is awaited on
  the caller's loop, and what it hands to ``sync_to_async`` runs back in
  that same thread, with the request's database connection.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import time
import weakref
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from django_dogpile import records, signals
from django_dogpile.engine.binding import LOCK_SUFFIX
from django_dogpile.engine.tags import bubble
from django_dogpile.records import EXPIRES, INVALIDATED, MISSING, STAMP, VALUE, is_record

__all__ = ["aget", "aget_many", "aget_or_set_status", "hop", "near_hit", "run"]


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a sync cache method as Django's ``BaseCache`` runs its ``a*`` twins."""
    return await sync_to_async(fn)(*args, **kwargs)


def hop(name: str) -> Callable[..., Any]:
    """The async twin of the backend's method ``name``: the sync method in
    the request's thread-sensitive thread (:func:`run`)."""

    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await sync_to_async(getattr(self, name))(*args, **kwargs)

    method.__name__ = method.__qualname__ = "a" + name
    method.__doc__ = f"Async :meth:`{name}`, in the request's thread-sensitive thread."
    return method


_Inflight = dict[Any, tuple["asyncio.Future[Any]", list[int]]]
_loops: weakref.WeakKeyDictionary[Any, _Inflight] = weakref.WeakKeyDictionary()


def _inflight() -> _Inflight:
    loop = asyncio.get_running_loop()
    pending = _loops.get(loop)
    if pending is None:
        pending = _loops[loop] = {}
    return pending


def is_async(default: Any) -> bool:
    return inspect.iscoroutinefunction(default) or inspect.iscoroutinefunction(
        getattr(type(default), "__call__", None)  # noqa: B004 - the class's own
    )


def syncify(default: Any) -> Any:
    """Make ``default`` callable from a worker thread, awaiting it if async."""
    if not callable(default):
        return default
    if is_async(default):
        call: Any = async_to_sync(default)
    else:

        def call() -> Any:
            result = default()
            if inspect.isawaitable(result):

                async def wait() -> Any:
                    return await result

                return async_to_sync(wait)()
            return result

    detach = getattr(default, "detach", MISSING)
    if detach is not MISSING:
        call.detach = detach
    return call


def _copy_of(value: Any) -> bytes | None:
    """``value`` pickled for the callers that waited on one regeneration."""
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None


def near_hit(cache: Any, skey: str) -> Any:
    """The untagged record of ``skey`` from the near cache, on the loop, or
    :data:`MISSING` (a thread reads it: see the module docstring)."""
    peek = getattr(cache.store, "peek", None)
    if peek is None or not cache.binding.plain_keys:
        return MISSING
    raw = peek(skey)
    # a tagged record's check may read the store: not here
    return raw if type(raw) is tuple and len(raw) == 4 else MISSING


async def aget(cache: Any, key: Any, default: Any, version: int | None) -> Any:
    """The body of ``DogpileCache.aget``: Django's ``get`` (stale is a miss),
    on the loop where it can be (see the module docstring)."""
    cache.store  # noqa: B018 - connect
    b = cache.binding
    if b.adapter.in_process:  # a dict lookup: no lock, no I/O
        return cache.get(key, default, version)
    skey = b.store_key(key, version)
    if b.native is None or not b.native.usable:
        raw = near_hit(cache, skey)
        if raw is not MISSING and (raw[EXPIRES] is None or records.now() < raw[EXPIRES]):
            return raw[VALUE]
        return await sync_to_async(cache.get)(key, default, version)
    seen = await _seen(b, await _read(cache, skey))
    if is_record(seen) and (seen[EXPIRES] is None or records.now() < seen[EXPIRES]):
        if len(seen) == 5:
            bubble(seen[STAMP])  # to the value being made, if any
        return seen[VALUE]
    return default


async def aget_many(cache: Any, keys: list[Any], version: int | None) -> dict[Any, Any]:
    """The body of ``DogpileCache.aget_many``: one ``MGET`` on the loop
    where it can be, else ``get_many`` in the thread."""
    cache.store  # noqa: B018 - connect
    b = cache.binding
    native = b.native
    if b.adapter.in_process:
        return cache.get_many(keys, version)
    if native is None or not native.usable or not keys:
        return await sync_to_async(cache.get_many)(keys, version)
    skeys: dict[str, list[Any]] = {}
    for key in keys:
        skeys.setdefault(b.store_key(key, version), []).append(key)
    try:
        got = await native.get_many(list(skeys))
    except native.errors as exc:
        native.failed(exc)
        return await sync_to_async(cache.get_many)(keys, version)
    found = {}
    now = records.now()
    for skey, raw in got.items():
        seen = await _seen(b, raw)
        if is_record(seen) and (seen[EXPIRES] is None or now < seen[EXPIRES]):
            if len(seen) == 5:
                bubble(seen[STAMP])
            for key in skeys[skey]:
                found[key] = seen[VALUE]
    return found


async def _read(cache: Any, skey: str) -> Any:
    """The record of ``skey``: on the loop where it can be, else in the thread."""
    b = cache.binding
    native = b.native  # set only where there is no near cache
    if native is not None and native.usable:
        try:
            return await native.get(skey, MISSING)
        except native.errors as exc:
            native.failed(exc)
    store = cache.store
    if b.adapter.in_process:
        return store.get(skey, MISSING)
    raw = near_hit(cache, skey)
    if raw is not MISSING:
        return raw
    return await sync_to_async(store.get)(skey, MISSING)


async def _seen(b: Any, raw: Any) -> Any:
    """``raw`` as its tags make it (``Binding.seen``): on the loop when this
    process knows the tags' versions, else in the thread (a store read)."""
    if type(raw) is not tuple or len(raw) != 5:
        return raw
    seen = b.tags.view(raw, offline=True)
    if seen is None:
        seen = await sync_to_async(b.tags.view)(raw)
    return seen


def _servable(b: Any, seen: Any) -> bool:
    """``Binding.live`` of a record already seen through its tags."""
    if not is_record(seen):
        return False
    expires = seen[EXPIRES]
    return expires is None or expires == INVALIDATED or records.now() < expires + b.options.grace


async def _leased_elsewhere(b: Any, skey: str) -> bool:
    """True if another caller holds ``skey``'s lease (one ``EXISTS``, on the
    loop); False when not, or when the loop cannot tell (the thread path
    then tries the lease itself)."""
    native = b.native
    if native is None or not native.usable:
        return False
    try:
        return await native.exists(skey + LOCK_SUFFIX)
    except native.errors as exc:
        native.failed(exc)
        return False


#: the cold waiter's polls of a lease held elsewhere: the first step, the longest
_POLL_FIRST, _POLL_MAX = 0.002, 0.025


async def _landed_elsewhere(cache: Any, key: Any, skey: str, default: Any) -> tuple[Any, str] | None:
    """A caller with no value to serve while another caller holds the lease:
    wait on the loop (``PTTL`` polled, 2 ms doubling to 25 ms, never past
    the lease's own end) for the record that caller stores, and serve it as
    the thread path serves a landed record (``MISS``, counted as a wait).
    None: nobody holds the lease, or it went with no value (the thread path
    then takes it), or the loop cannot tell.  Past ``WAIT_TIMEOUT`` the
    creator runs here without storing, as in the thread path."""
    b = cache.binding
    native = b.native
    if native is None or not native.usable:
        return None
    lock = skey + LOCK_SUFFIX
    started = time.monotonic()
    deadline = started + b.options.wait_timeout
    step = _POLL_FIRST
    try:
        left = await native.pttl(lock)
        if left == -2:
            return None  # nobody holds it: this caller takes it (in the thread)
        while left != -2:
            now = time.monotonic()
            if now >= deadline:
                value = await sync_to_async(cache.regeneration._wait_timed_out)(
                    key, syncify(default), started
                )
                return value, "MISS"
            await asyncio.sleep(min(step, deadline - now, left / 1000 if left > 0 else step))
            step = min(step * 2, _POLL_MAX)
            left = await native.pttl(lock)
        seen = await _seen(b, await native.get(skey, MISSING))
    except native.errors as exc:
        native.failed(exc)
        return None
    if not _servable(b, seen):
        return None  # the holder failed, or a hold: the thread path decides
    b.count("MISS", key)
    b.count("WAITS", key)
    signals.caller_waited.send(
        type(cache), alias=b.alias, key=key, duration=time.monotonic() - started, timed_out=False
    )
    if len(seen) == 5:
        bubble(seen[STAMP])
    return seen[VALUE], "MISS"


def _updating(cache: Any, key: Any, seen: Any) -> tuple[Any, str]:
    """A stale value served as ``UPDATING``, counted and signalled as
    ``Regeneration`` does."""
    b = cache.binding
    b.count("UPDATING", key)
    if len(seen) == 5:
        bubble(seen[STAMP])
    signals.stale_served.send(type(cache), alias=b.alias, key=key, reason="UPDATING")
    return seen[VALUE], "UPDATING"


async def aget_or_set_status(
    cache: Any,
    key: Any,
    skey: str,
    default: Any,
    timeout: Any,
    tags: tuple[str, ...] = (),
    version: int | None = None,
) -> tuple[Any, str]:
    """The body of ``DogpileCache.aget_or_set_status`` (see the module docstring)."""
    b = cache.binding
    raw = await _read(cache, skey)
    seen = await _seen(b, raw) if type(raw) is tuple and len(raw) == 5 else raw
    if b.fresh_hit(key, raw, seen):
        return raw[VALUE], "HIT"
    if not is_record(seen) and b.options.previous and (old_key := b.previous_key(key, version)):
        # no record: the key's record of before the deploy, if any, is its stale value
        # (the regenerating caller's thread reads it again)
        old = await _read(cache, old_key)
        # untagged only: a tagged record's tags were versioned under the old keys
        seen = old if is_record(old) and len(old) == 4 else MISSING
    fresh_for = b.freshness(timeout)  # a bad timeout raises, as the sync call's does
    if fresh_for is not None and fresh_for <= 0:  # computed, not stored: no value to share
        return await sync_to_async(cache.regeneration.run)(
            key, skey, raw, syncify(default), timeout, tags, None, version
        )
    ident = b.ident(skey)
    inflight = _inflight()
    if ident not in inflight and _servable(b, seen) and await _leased_elsewhere(b, skey):
        # another thread, process or host regenerates it: served stale, as
        # the thread path would serve it, with no thread
        return _updating(cache, key, seen)
    while (pending := inflight.get(ident)) is not None:
        if _servable(b, seen):
            return _updating(cache, key, seen)
        future, waiting = pending
        waiting.append(1)
        since = time.monotonic()
        try:
            blob = await asyncio.shield(future)
        except BaseException:
            if not future.done():
                raise  # this caller itself was cancelled
            blob = None  # the leader failed: take our own turn
        if blob is not None:
            # each caller its own object, as if read from the store; counted
            # as a thread that waited on the in-process lock is
            b.count("MISS", key)
            b.count("WAITS", key)
            signals.caller_waited.send(
                type(cache), alias=b.alias, key=key, duration=time.monotonic() - since, timed_out=False
            )
            return pickle.loads(blob), "MISS"
        raw = await _read(cache, skey)
        seen = await _seen(b, raw)
        if b.fresh_hit(key, raw, seen):
            return raw[VALUE], "HIT"
    future = asyncio.get_running_loop().create_future()
    followers: list[int] = []
    inflight[ident] = (future, followers)
    try:
        result = None
        kept: list[bool] = []  # False: made and not stored (its creator said so)
        if not _servable(b, seen):  # a cold caller: is another regenerating it?
            result = await _landed_elsewhere(cache, key, skey, default)
        if result is None:
            result = await sync_to_async(cache.regeneration.run)(
                key, skey, raw, syncify(default), timeout, tags, kept, version
            )
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: followers may be none
        raise
    else:
        # a value not stored is this caller's alone: the others take their turn
        future.set_result(_copy_of(result[0]) if followers and all(kept) else None)
        return result
    finally:
        inflight.pop(ident, None)
