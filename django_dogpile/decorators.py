"""The view and function faces: ``dogpile_cache_page`` and ``cached``.

``dogpile_cache_page(timeout)`` is Django's ``cache_page`` with the dogpile
cure; its rules (what is never stored, and why) are in
:mod:`django_dogpile.faces.page`.

``cached(timeout)`` memoises any function through the same ``get_or_set``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import pickle
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from asgiref.sync import async_to_sync, sync_to_async

from django_dogpile.conf import get_config
from django_dogpile.engine.results import CacheResult, decided
from django_dogpile.engine.tags import Collector, collecting, tag_names
from django_dogpile.faces.common import check_timeout, declare, face_cache, safe_key
from django_dogpile.faces.function_keys import bound, canonical, signature_of
from django_dogpile.faces.page_decorator import dogpile_cache_page
from django_dogpile.faces.visitors import uncacheable
from django_dogpile.records import MISSING as MISSING_TIMEOUT

__all__ = ["CachedFunction", "cached", "cached_many", "dogpile_cache_page", "uncacheable"]


P = ParamSpec("P")
R = TypeVar("R", covariant=True)


class CachedFunction(Protocol[P, R]):
    """What :func:`cached` returns: the function, plus ways to manage its results.

    For an ``async def`` function, ``R`` is its coroutine: await the call,
    ``ainvalidate`` and ``arefresh``.
    """

    __name__: str
    __doc__: str | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...

    async def arefresh(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...


def cached(
    timeout: float | None = None,
    *,
    cache: str | None = None,
    key: Callable[..., str] | None = None,
    tags: Callable[..., Any] | list[str] | tuple[str, ...] | str | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]:
    """Memoise a function in a cache; one caller recomputes a stale value.

    :param timeout: seconds a result stays fresh; ``None`` uses
     ``DOGPILE["TIMEOUT"]``, then the cache's default.  Anything else (a
     string, a bool, NaN) is a ``TypeError`` naming the function when it
     is decorated.
    :param cache: the cache alias.
    :param key: optional ``key(*args, **kwargs) -> str`` naming a result;
     by default the function's qualified name and a hash of its pickled
     arguments, bound to its signature first: ``f(2026)``,
     ``f(year=2026)`` and ``f(2026, "all")`` with ``"all"`` the default
     are one call and one key; arguments left at (or equal to) their
     default are not part of it, and sets and dicts are hashed in a
     stable order, the same in every process (arguments that cannot be
     pickled are a ``TypeError`` asking for ``key=``; arguments the
     signature does not take are the ``TypeError`` the call would raise).
    :param tags: the result's tags (``invalidate_tags``): a list, or a
     callable of the function's arguments returning one (on a cache that is
     not a DogpileCache they are ignored).

    The decorated function keeps its signature and return type (for type
    checkers too) and gains ``.invalidate(*args, **kw)`` (soft: the next
    call regenerates while others get the old value), ``.refresh(*args,
    **kw)`` (recompute and store now), their async twins ``.ainvalidate``
    and ``.arefresh`` (which run the cache's work off the event loop, as
    Django's ``a*`` methods do), and ``.key_for(*args, **kw)``.  On an
    ``async def`` function ``refresh`` awaits it (outside an event loop;
    inside one, ``await f.arefresh(...)``).
    """

    declare("cached()", cache)

    def decorator(fn: Callable[P, R]) -> CachedFunction[P, R]:
        name = f"{fn.__module__}.{fn.__qualname__}"
        check_timeout("cached", timeout, fn)  # not on every call
        is_async = inspect.iscoroutinefunction(fn)

        signature = signature_of(fn)

        def key_for(*args: Any, **kwargs: Any) -> str:
            if key is not None:
                return safe_key("dogpile.fn", name, str(key(*args, **kwargs)))
            named = bound(signature, name, args, kwargs)
            try:
                blob = pickle.dumps(named, protocol=4)
            except Exception as exc:
                raise TypeError(
                    f"cached({name}): the arguments cannot be pickled into a key "
                    f"({exc}); pass key=lambda *args, **kw: ... to name results"
                ) from exc
            return safe_key("dogpile.fn", name, hashlib.sha256(blob).hexdigest())

        def resolve() -> tuple[Any, dict[str, Any]]:
            c = face_cache(cache, face="cached()")
            t = timeout if timeout is not None else get_config()["TIMEOUT"]
            return c, ({} if t is None else {"timeout": t})

        static = () if callable(tags) else tag_names(tags, f"cached({name})")

        def tagged(c: Any, kw: dict[str, Any], args: Any, kwargs: Any) -> dict[str, Any]:
            if tags is None or not getattr(c, "dogpile_backend", False):
                return kw
            names = tag_names(tags(*args, **kwargs), f"cached({name})") if callable(tags) else static
            return {**kw, "tags": names}

        wrapper: Any
        if is_async:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                c, kw = resolve()

                async def create() -> Any:  # awaited on the caller's loop
                    return await fn(*args, **kwargs)  # type: ignore[misc]

                return await c.aget_or_set(key_for(*args, **kwargs), create, **tagged(c, kw, args, kwargs))

            wrapper = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                c, kw = resolve()
                return c.get_or_set(
                    key_for(*args, **kwargs), lambda: fn(*args, **kwargs), **tagged(c, kw, args, kwargs)
                )

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            c, _ = resolve()
            k = key_for(*args, **kwargs)
            soft = getattr(c, "invalidate", None)
            return bool(soft(k) if soft is not None else c.delete(k))

        async def ainvalidate(*args: Any, **kwargs: Any) -> bool:
            c, _ = resolve()
            k = key_for(*args, **kwargs)
            soft = getattr(c, "ainvalidate", None)
            return bool(await soft(k) if soft is not None else await c.adelete(k))

        def settled(c: Any, made: Any, value: Any, kw: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
            """A refresh's value as its creator decided (a CacheResult,
            expires_in, dont_store): the value, and set()'s keywords (None: keep nothing)."""
            value, own, extra, keep = decided(value, made)
            if own is not MISSING_TIMEOUT:
                kw = {**kw, "timeout": own}
            if extra and getattr(c, "dogpile_backend", False):
                kw = {**kw, "tags": (*kw.get("tags", ()), *tag_names(extra, f"cached({name})"))}
            timeout = kw.get("timeout", 1)
            return value, kw if keep and (timeout is None or timeout > 0) else None

        async def arefresh(*args: Any, **kwargs: Any) -> Any:
            c, kw = resolve()
            with collecting() as made:
                if is_async:
                    value = await fn(*args, **kwargs)  # type: ignore[misc]
                else:  # a sync function may use the database: never on the loop
                    value = await sync_to_async(fn)(*args, **kwargs)
            value, keep = settled(c, made, value, tagged(c, kw, args, kwargs))
            if keep is not None:
                await c.aset(key_for(*args, **kwargs), value, **keep)
            return value

        def refresh(*args: Any, **kwargs: Any) -> Any:
            if is_async:
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    return async_to_sync(arefresh)(*args, **kwargs)
                raise TypeError(
                    f"cached({name}) wraps an async function: inside an event loop, "
                    f"use 'await {fn.__name__}.arefresh(...)'"
                )
            c, kw = resolve()
            with collecting() as made:
                value = fn(*args, **kwargs)
            value, keep = settled(c, made, value, tagged(c, kw, args, kwargs))
            if keep is not None:
                c.set(key_for(*args, **kwargs), value, **keep)
            return value

        wrapper.invalidate = invalidate
        wrapper.ainvalidate = ainvalidate
        wrapper.refresh = refresh
        wrapper.arefresh = arefresh
        wrapper.key_for = key_for
        return cast("CachedFunction[P, R]", wrapper)

    return decorator


def cached_many(
    timeout: float | None = None,
    *,
    cache: str | None = None,
    key: Callable[[Any], str] | None = None,
    tags: Callable[[Any], Any] | list[str] | tuple[str, ...] | str | None = None,
) -> Callable[[Callable[[list[Any]], Any]], Any]:
    """Memoise a function of many items, each item's result cached on its own.

    The function takes a list of items and returns a dict of their results
    (``Model.objects.in_bulk`` is one); ``f([1, 2, 3])`` returns the dict
    for the items asked, making the ones not fresh in **one** call of the
    function, with one store read for all of them on a hit
    (``get_or_set_many``).  An item the function leaves out of its dict is
    left out of the answer and not cached.  Items must be hashable.

    :param timeout: as :func:`cached`'s.
    :param cache: the cache alias.
    :param key: optional ``key(item) -> str`` naming an item's result; by
     default the function's qualified name and a hash of the pickled item.
    :param tags: the results' tags: a list, or a callable of one item
     returning that item's tags.

    The decorated function gains ``.key_for(item)``, ``.invalidate(item)``
    and ``.ainvalidate(item)``.  On an ``async def`` function the call is
    awaited (``aget_or_set_many``).  On a cache that is not a DogpileCache
    it works through ``get_many``/``set_many``, without stampede protection.
    """

    declare("cached_many()", cache)

    def decorator(fn: Callable[[list[Any]], Any]) -> Any:
        name = f"{fn.__module__}.{fn.__qualname__}"
        check_timeout("cached_many", timeout, fn)
        is_async = inspect.iscoroutinefunction(fn)
        static = () if callable(tags) else tag_names(tags, f"cached_many({name})")

        def key_for(item: Any) -> str:
            if key is not None:
                return safe_key("dogpile.fn", name, str(key(item)))
            try:
                blob = pickle.dumps(canonical(item), protocol=4)
            except Exception as exc:
                raise TypeError(
                    f"cached_many({name}): the item {item!r} cannot be pickled into a key "
                    f"({exc}); pass key=lambda item: ... to name results"
                ) from exc
            return safe_key("dogpile.fn", name, hashlib.sha256(blob).hexdigest())

        def resolve(items: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
            c = face_cache(cache, face="cached_many()")
            t = timeout if timeout is not None else get_config()["TIMEOUT"]
            kw: dict[str, Any] = {} if t is None else {"timeout": t}
            if static and getattr(c, "dogpile_backend", False):
                kw["tags"] = static
            return c, kw, {key_for(item): item for item in items}

        def results(made: Any, keys: dict[str, Any]) -> dict[str, Any]:
            if not isinstance(made, dict):
                raise TypeError(
                    f"cached_many({name}) must return a dict of its items, not {type(made).__name__}"
                )
            out = {}
            for k in keys:
                item = keys[k]
                if item in made:
                    value = made[item]
                    if callable(tags):
                        own = tag_names(tags(item), f"cached_many({name})")
                        if isinstance(value, CacheResult):
                            extra = tag_names(value.tags, f"cached_many({name})")
                            value = CacheResult(
                                value.value, timeout=value.timeout, tags=(*own, *extra), store=value.store
                            )
                        else:
                            value = CacheResult(value, tags=own)
                    out[k] = value
            return out

        def answer(found: dict[str, Any], keys: dict[str, Any]) -> dict[Any, Any]:
            return {keys[k]: v for k, v in found.items()}

        wrapper: Any
        if is_async:

            @functools.wraps(fn)
            async def async_wrapper(items: Any) -> dict[Any, Any]:
                c, kw, keys = resolve(items)

                async def create(asked: list[str]) -> dict[str, Any]:
                    return results(await fn([keys[k] for k in asked]), keys)

                if getattr(c, "dogpile_backend", False):
                    return answer(await c.aget_or_set_many(list(keys), create, **kw), keys)
                found = await c.aget_many(list(keys))
                missing = [k for k in keys if k not in found]
                if missing:
                    made = {k: decided(v, Collector())[0] for k, v in (await create(missing)).items()}
                    await c.aset_many(made, **kw)
                    found.update(made)
                return answer(found, keys)

            wrapper = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(items: Any) -> dict[Any, Any]:
                c, kw, keys = resolve(items)

                def create(asked: list[str]) -> dict[str, Any]:
                    return results(fn([keys[k] for k in asked]), keys)

                if getattr(c, "dogpile_backend", False):
                    return answer(c.get_or_set_many(list(keys), create, **kw), keys)
                found = c.get_many(list(keys))
                missing = [k for k in keys if k not in found]
                if missing:
                    made = {k: decided(v, Collector())[0] for k, v in create(missing).items()}
                    c.set_many(made, **kw)
                    found.update(made)
                return answer(found, keys)

            wrapper = sync_wrapper

        def invalidate(item: Any) -> bool:
            c = face_cache(cache, face="cached_many()")
            soft = getattr(c, "invalidate", None)
            return bool(soft(key_for(item)) if soft is not None else c.delete(key_for(item)))

        async def ainvalidate(item: Any) -> bool:
            c = face_cache(cache, face="cached_many()")
            soft = getattr(c, "ainvalidate", None)
            return bool(await soft(key_for(item)) if soft is not None else await c.adelete(key_for(item)))

        wrapper.key_for = key_for
        wrapper.invalidate = invalidate
        wrapper.ainvalidate = ainvalidate
        return wrapper

    return decorator
