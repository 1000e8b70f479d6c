"""The async bridge of :class:`~django_dogpile.cache.DogpileCache`.

What runs where:

* **on the event loop**: a fresh hit on an in-process store (locmem), and
  a hit of an untagged record in this process's ``NEAR_CACHE`` (when both
  aliases make keys as Django does: a ``KEY_FUNCTION`` may read state the
  loop does not have): a dict lookup and an unpickle, no I/O;
* **in the request's thread-sensitive thread** (``sync_to_async``, as
  Django's ``BaseCache`` runs its ``a*`` methods): every other store
  operation, so values are pickled where Django pickles them (a deferred
  queryset may touch the database) and nothing that can wait on a lock ever
  runs on the loop -- locmem included;
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
import weakref
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from django_dogpile import records
from django_dogpile.records import EXPIRES, MISSING, VALUE

__all__ = ["aget", "aget_or_set_status", "hop", "near_hit", "run"]


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


def _is_async(default: Any) -> bool:
    return inspect.iscoroutinefunction(default) or inspect.iscoroutinefunction(
        getattr(type(default), "__call__", None)  # noqa: B004 - the class's own
    )


def _syncify(default: Any) -> Any:
    """Make ``default`` callable from a worker thread, awaiting it if async."""
    if not callable(default):
        return default
    if _is_async(default):
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
    """The body of ``DogpileCache.aget``: on the loop for locmem and a near
    hit, else ``get`` in the request's thread-sensitive thread."""
    cache.store  # noqa: B018 - connect
    if cache.binding.adapter.in_process:  # a dict lookup: no lock, no I/O
        return cache.get(key, default, version)
    raw = near_hit(cache, cache.binding.store_key(key, version))
    if raw is not MISSING and (raw[EXPIRES] is None or records.now() < raw[EXPIRES]):
        return raw[VALUE]
    return await sync_to_async(cache.get)(key, default, version)


async def _read(cache: Any, skey: str) -> Any:
    store = cache.store
    if cache.binding.adapter.in_process:
        return store.get(skey, MISSING)
    raw = near_hit(cache, skey)
    if raw is not MISSING:
        return raw
    return await sync_to_async(store.get)(skey, MISSING)


async def aget_or_set_status(
    cache: Any, key: Any, skey: str, default: Any, timeout: Any, tags: tuple[str, ...] = ()
) -> tuple[Any, str]:
    """The body of ``DogpileCache.aget_or_set_status`` (see the module docstring)."""
    raw = await _read(cache, skey)
    if cache.binding.fresh_hit(key, raw):
        return raw[VALUE], "HIT"
    ident = cache.binding.ident(skey)
    inflight = _inflight()
    while (pending := inflight.get(ident)) is not None:
        if cache.binding.live(raw, records.now()):
            cache.binding.count("UPDATING", key)
            return raw[VALUE], "UPDATING"
        future, waiting = pending
        waiting.append(1)
        try:
            blob = await asyncio.shield(future)
        except BaseException:
            if not future.done():
                raise  # this caller itself was cancelled
            blob = None  # the leader failed: take our own turn
        if blob is not None:
            # each caller its own object, as if read from the store
            cache.binding.count("MISS", key)
            return pickle.loads(blob), "MISS"
        raw = await _read(cache, skey)
        if cache.binding.fresh_hit(key, raw):
            return raw[VALUE], "HIT"
    future = asyncio.get_running_loop().create_future()
    followers: list[int] = []
    inflight[ident] = (future, followers)
    try:
        result = await sync_to_async(cache.regeneration.run)(key, skey, raw, _syncify(default), timeout, tags)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: followers may be none
        raise
    else:
        future.set_result(_copy_of(result[0]) if followers else None)
        return result
    finally:
        inflight.pop(ident, None)
