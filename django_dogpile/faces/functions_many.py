"""``cached_many``: ``cached()`` for a function of many items, each item's
result cached on its own and the missing ones made in one call (re-exported
by :mod:`django_dogpile.decorators`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from django_dogpile.conf import get_config
from django_dogpile.engine.results import CacheResult, decided
from django_dogpile.engine.tags import Collector, collecting, tag_names
from django_dogpile.faces.common import check_timeout, declare, face_cache, safe_key
from django_dogpile.faces.function_keys import canonical, hashed
from django_dogpile.records import MISSING as MISSING_TIMEOUT

__all__ = ["cached_many", "fates"]


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
            return hashed("cached_many", name, canonical(item), f"the item {item!r}", "key=lambda item: ...")

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
                    with collecting() as made:
                        values = await create(missing)
                    served, kept = fates(made, values, kw)
                    for k, (value, set_kw) in kept.items():
                        await c.aset(k, value, **set_kw)
                    found.update(served)
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
                    with collecting() as made:
                        values = create(missing)
                    served, kept = fates(made, values, kw)
                    for k, (value, set_kw) in kept.items():
                        c.set(k, value, **set_kw)
                    found.update(served)
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


def fates(
    made: Collector, values: dict[str, Any], kw: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, tuple[Any, dict[str, Any]]]]:
    """What a creator decided of ``values`` (made in ``made``), for a cache
    that is not a DogpileCache (which would apply it itself): the values to
    serve, and those to set with their keywords (no tags: a plain cache has none)."""
    served, kept = {}, {}
    for key, value in values.items():
        own = Collector()
        own.timeout, own.store = made.timeout, made.store
        value, timeout, _, keep = decided(value, own)
        served[key] = value
        set_kw = {k: v for k, v in kw.items() if k != "tags"}
        if timeout is not MISSING_TIMEOUT:
            set_kw["timeout"] = timeout
        t = set_kw.get("timeout", 1)
        if keep and (t is None or t > 0):
            kept[key] = (value, set_kw)
    return served, kept
