"""memcached (pymemcache, pylibmc): a per-thread client, whole-second
timeouts, and the ``add()`` lease (:class:`~django_dogpile.stores.base.AddLease`)."""

from __future__ import annotations

import math
import pickle
import threading
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from django_dogpile.exceptions import UncacheableValue

__all__ = ["MemcachedStore"]


def _whole_seconds(timeout: Any) -> Any:
    """A positive timeout as memcached needs it to last at least that long;
    others unchanged.

    memcached's clock ticks once a second and an item set with ``n`` expires
    at the ``n``-th tick from now, the first of which may come a moment
    later: it lives between ``n - 1`` and ``n`` seconds.  So: rounded up,
    plus one.
    """
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return math.ceil(timeout) + 1
    return timeout


class MemcachedStore:
    """A memcached store as DogpileCache uses it (Django's own instance is
    left untouched for everyone else).

    * Each call goes to a client of **this thread's** own: Django's
      memcached clients (pymemcache without pooling, pylibmc) are not
      thread-safe; sharing one between threads interleaved the protocol
      (seen: ``MemcacheUnknownError: b'STORED'``, values read under the
      wrong key).  Not ``caches[alias]``: under ASGI that instance is shared
      by the threads ``sync_to_async`` runs one request's calls in (seen:
      ``Bad file descriptor`` with concurrent async requests).
    * Timeouts are rounded **up** to whole seconds, plus one.  memcached
      counts whole seconds of its own clock and Django truncates, so a 0.5 s
      lease became "expired at once" (every caller took it), and a 1 s lease
      could end a moment after it was taken (at the server's next tick).
    * A value over memcached's item size limit raises
      :class:`~django_dogpile.exceptions.UncacheableValue` (the server's
      "object too large" error, which pymemcache raises from ``set``), which
      the backend reports with the key: not a miss on every request.
    """

    def __init__(self, store: Any, alias: str | None) -> None:
        from django.core.cache import caches

        if alias is None:  # not from CACHES: one instance is all there is
            self._here: Callable[[], Any] = lambda: store
            return
        local = threading.local()

        def here() -> Any:
            found = getattr(local, "store", None)
            if found is None:
                found = local.store = caches.create_connection(alias)
            return found

        self._here = here

    def __getattr__(self, name: str) -> Any:
        return getattr(self._here(), name)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._here().get(key, default, version)

    def get_many(self, keys: Any, version: int | None = None) -> dict[Any, Any]:
        return self._here().get_many(keys, version)

    def _too_large(self, exc: Exception, values: Any) -> UncacheableValue:
        size = sum(len(pickle.dumps(v, pickle.HIGHEST_PROTOCOL)) for v in values)
        return UncacheableValue(
            f"{size} bytes pickled is over memcached's item size limit (memcached -I, 1 MB by default): {exc}"
        )

    @staticmethod
    def _is_too_large(exc: Exception) -> bool:
        text = str(exc).lower()
        return "too large" in text or "too big" in text or type(exc).__name__ == "TooBig"

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        try:
            self._here().set(key, value, _whole_seconds(timeout), version)
        except Exception as exc:
            if self._is_too_large(exc):
                raise self._too_large(exc, [value]) from exc
            raise

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        try:
            return bool(self._here().add(key, value, _whole_seconds(timeout), version))
        except Exception as exc:
            if self._is_too_large(exc):
                raise self._too_large(exc, [value]) from exc
            raise

    def set_many(
        self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        try:
            return list(self._here().set_many(data, _whole_seconds(timeout), version) or [])
        except Exception as exc:
            if self._is_too_large(exc):
                raise self._too_large(exc, data.values()) from exc
            raise

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(self._here().touch(key, _whole_seconds(timeout), version))
