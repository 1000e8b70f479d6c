"""The view and function faces: ``dogpile_cache_page`` and ``cached``.

``dogpile_cache_page(timeout)`` is Django's ``cache_page`` with the dogpile
cure; its rules (what is never stored, and why) are in
:mod:`django_dogpile.pages`.

``cached(timeout)`` memoises any function through the same ``get_or_set``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import pickle
from typing import Any, Callable

from .conf import get_config
from .faces import declare, face_cache, safe_key
from .pages import dogpile_cache_page, uncacheable

__all__ = ["cached", "dogpile_cache_page", "uncacheable"]


def cached(
    timeout: float | None = None,
    *,
    cache: str | None = None,
    key: Callable[..., str] | None = None,
) -> Callable[[Callable[..., Any]], Any]:
    """Memoise a function in a cache; one caller recomputes a stale value.

    :param timeout: seconds a result stays fresh; ``None`` uses
     ``DOGPILE["TIMEOUT"]``, then the cache's default.
    :param cache: the cache alias.
    :param key: optional ``key(*args, **kwargs) -> str`` naming a result;
     by default the function's qualified name and a hash of its pickled
     arguments (arguments that cannot be pickled are a ``TypeError``
     asking for ``key=``).

    The decorated function gains ``.invalidate(*args, **kw)`` (soft: the
    next call regenerates while others get the old value), ``.refresh(*args,
    **kw)`` (recompute and store now) and ``.key_for(*args, **kw)``.
    """

    declare("cached()", cache)

    def decorator(fn: Callable[..., Any]) -> Any:
        name = f"{fn.__module__}.{fn.__qualname__}"

        def key_for(*args: Any, **kwargs: Any) -> str:
            if key is not None:
                return safe_key("dogpile.fn", name, str(key(*args, **kwargs)))
            try:
                blob = pickle.dumps((args, sorted(kwargs.items())), protocol=4)
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

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                c, kw = resolve()

                async def create() -> Any:  # awaited on the caller's loop
                    return await fn(*args, **kwargs)

                return await c.aget_or_set(key_for(*args, **kwargs), create, **kw)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                c, kw = resolve()
                return c.get_or_set(key_for(*args, **kwargs), lambda: fn(*args, **kwargs), **kw)

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            c, _ = resolve()
            k = key_for(*args, **kwargs)
            soft = getattr(c, "invalidate", None)
            return bool(soft(k) if soft is not None else c.delete(k))

        def refresh(*args: Any, **kwargs: Any) -> Any:
            c, kw = resolve()
            value = fn(*args, **kwargs)
            c.set(key_for(*args, **kwargs), value, **kw)
            return value

        wrapper.invalidate = invalidate
        wrapper.refresh = refresh
        wrapper.key_for = key_for
        return wrapper

    return decorator
