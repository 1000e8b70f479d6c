"""One connection to each wrapped Redis store per process, not per request.

Django's ``caches`` is per context: under ASGI every request is its own
context, so it builds a new ``DogpileCache`` -- and, on its first call, a
new connection to the wrapped store (the store's client, the adapter with
its scripts, the native reader, the store in front).  On django-redis that
cost 1.3 ms per request, measured under ``benchmarks/pages.py --asgi``:
more than the cached page saved.  So what :meth:`Binding.connect
<django_dogpile.engine.binding.Binding.connect>` builds over a Redis store
is made once per process for each alias and settings, and shared: the
Redis clients are thread-safe, their pools are the process's anyway, and
the near cache (:func:`~django_dogpile.stores.near.near_store`) already
shares its store this way.  Other stores (memcached's clients are not
thread-safe; a locmem or database store costs little to build) connect per
backend, as Django builds them.

The key holds the alias, its settings, the DogpileCache's settings and
its class (a subclass may make keys its own way: a tenant's); a change of
``CACHES`` (``override_settings``) forgets them all, and a forked child
keeps the parent's, as every Redis pool handles a fork itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import setting_changed

__all__ = ["Connected", "find", "key_of", "keep"]


@dataclass(frozen=True)
class Connected:
    """What one connect built: the wrapped store as ``caches`` gave it
    (``raw``), the adapter (whose ``store`` is what the backend uses), and
    what the binding learnt of the keys and of the native reads."""

    raw: Any
    adapter: Any
    plain_keys: bool
    native: Any
    #: user key -> store key (``Binding.store_key``'s memo), shared with the connection
    memo: dict[Any, str] = field(default_factory=dict)


_Key = tuple[str, str, str, str]
_made: dict[_Key, Connected] = {}
_lock = threading.Lock()


def key_of(location: str, params: dict[str, Any], backend: type) -> _Key:
    """The identity of a connection: the alias, its settings, ours, our class."""
    from django.conf import settings

    return (
        location,
        repr(settings.CACHES.get(location)),
        repr(sorted(params.items(), key=str)),
        f"{backend.__module__}.{backend.__qualname__}",
    )


def find(key: _Key) -> Connected | None:
    return _made.get(key)


def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        with _lock:
            _made.clear()


setting_changed.connect(_forget, dispatch_uid="django_dogpile.engine.connections")


def keep(key: _Key, made: Connected) -> Connected:
    """Share ``made`` (a Redis store's); the first one kept wins a race."""
    if getattr(made.adapter, "access", None) is None:
        return made  # not a Redis store we script: built per backend
    with _lock:
        return _made.setdefault(key, made)
