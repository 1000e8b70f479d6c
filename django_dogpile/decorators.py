"""The view and function faces: ``dogpile_cache_page`` and ``cached``.

``dogpile_cache_page(timeout)`` is Django's ``cache_page`` with the dogpile
cure; its rules (what is never stored, and why) are in
:mod:`django_dogpile.faces.page`.

``cached(timeout)`` memoises any function through the same ``get_or_set``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar, cast

from asgiref.sync import async_to_sync, sync_to_async

from django_dogpile.conf import get_config
from django_dogpile.engine.results import decided
from django_dogpile.engine.tags import collecting, tag_names
from django_dogpile.faces.common import check_timeout, declare, face_cache, safe_key
from django_dogpile.faces.function_keys import bound, hashed, signature_of
from django_dogpile.faces.functions_many import cached_many, fates
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
            return hashed("cached", name, named, "the arguments", "key=lambda *args, **kw: ...")

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

                k = key_for(*args, **kwargs)
                if getattr(c, "dogpile_backend", False):
                    return await c.aget_or_set(k, create, **tagged(c, kw, args, kwargs))
                found = await c.aget(k, MISSING_TIMEOUT)  # a plain cache (see the sync wrapper)
                if found is not MISSING_TIMEOUT:
                    return found
                with collecting() as made:
                    value = await create()
                served, kept = fates(made, {k: value}, kw)
                if k in kept:
                    await c.aset(k, kept[k][0], **kept[k][1])
                return served[k]

            wrapper = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                c, kw = resolve()
                k = key_for(*args, **kwargs)
                if getattr(c, "dogpile_backend", False):
                    return c.get_or_set(k, lambda: fn(*args, **kwargs), **tagged(c, kw, args, kwargs))
                found = c.get(k, MISSING_TIMEOUT)  # a plain cache: get, make, set (its creator's word kept)
                if found is not MISSING_TIMEOUT:
                    return found
                with collecting() as made:
                    value = fn(*args, **kwargs)
                served, kept = fates(made, {k: value}, kw)
                if k in kept:
                    c.set(k, kept[k][0], **kept[k][1])
                return served[k]

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
