"""What a process remembers between requests, in one place.

Everything here is per process, bounded, and tied to one *store* (the
``LOCATION`` alias of a :class:`~django_dogpile.cache.DogpileCache`):
``DogpileCache.clear()`` calls :func:`forget` with its store, so a test
suite (or an operator) that clears a cache also clears every decision this
process made about it.

* :data:`fallbacks` -- values computed while the store was unreachable;
* :data:`retry_after` -- keys whose regeneration just failed;
* :func:`pages` -- the page decorator's memos for one store: the ``Vary``
  header names learnt per URL, and the pages that refused to be cached
  ("hit-for-miss").

Keys of :data:`fallbacks` and :data:`retry_after` are ``(store, key)``
pairs; the page memos live in one :class:`PageMemos` per store.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections import OrderedDict
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from django_dogpile.records import MISSING
from django_dogpile.stores import near, tags

__all__ = [
    "Deadlines",
    "Fallbacks",
    "PageMemos",
    "fallbacks",
    "forget",
    "pages",
    "retry_after",
]


class Fallbacks:
    """Values computed while the shared store was down, per process.

    With ``IGNORE_EXCEPTIONS`` an outage must not become a stampede: the
    value one caller computed is kept here (pickled, bounded, until its
    freshness ends) and served to the callers of this process, one
    computation per key per freshness period, until the store is back.
    A :class:`~django_dogpile.engine.locks.KeyLock` cannot hold it: it lives only
    while callers use it.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._values: OrderedDict[Any, tuple[bytes, float]] = OrderedDict()

    def put(self, ident: Any, value: Any, expires: float) -> None:
        try:
            blob = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception:  # unpicklable: the caller already has it
            return
        with self._lock:
            self._values[ident] = (blob, expires)
            self._values.move_to_end(ident)
            while len(self._values) > self.size:
                self._values.popitem(last=False)

    def get(self, ident: Any, now: float) -> Any:
        """The value kept for ``ident`` if still fresh at ``now``, else MISSING."""
        with self._lock:
            item = self._values.get(ident)
            if item is None:
                return MISSING
            if now >= item[1]:
                del self._values[ident]
                return MISSING
        return pickle.loads(item[0])

    def discard(self, ident: Any) -> None:
        if self._values:  # the usual case costs no lock
            with self._lock:
                self._values.pop(ident, None)

    def forget(self, store: str) -> None:
        with self._lock:
            for ident in [i for i in self._values if i[0] == store]:
                del self._values[ident]

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def snapshot(self) -> list[tuple[Any, tuple[bytes, float]]]:
        """What is kept now (:func:`django_dogpile.testing.another_process`)."""
        with self._lock:
            return list(self._values.items())

    def restore(self, items: list[tuple[Any, tuple[bytes, float]]]) -> None:
        with self._lock:
            self._values.clear()
            self._values.update(items)


class Deadlines:
    """Keys held until a deadline (monotonic), per process; bounded.

    Two uses: :data:`retry_after` (keys whose regeneration just failed: not
    retried until then -- other processes are held off by the lease, which
    the failed holder keeps for the same time), and the page decorator's
    hit-for-miss memo.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._until: dict[Any, float] = {}

    def hold(self, key: Any, seconds: float) -> None:
        until = self._until
        if len(until) >= self.size:
            now = time.monotonic()
            for old in [k for k, t in list(until.items()) if t <= now]:
                until.pop(old, None)
            if len(until) >= self.size:
                until.clear()
        until[key] = time.monotonic() + seconds

    def holding(self, key: Any) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        self._until.pop(key, None)
        return False

    def forget(self, key: Any) -> None:
        self._until.pop(key, None)

    def forget_store(self, store: str) -> None:
        for key in [k for k in list(self._until) if type(k) is tuple and k[0] == store]:
            self._until.pop(key, None)

    def clear(self) -> None:
        self._until.clear()


class PageMemos:
    """The page decorator's memory of the pages of one store."""

    def __init__(self, size: int = 10000) -> None:
        self.size = size
        self._lock = threading.Lock()
        #: URL key -> the ``Vary`` header names learnt for it.
        self.vary: dict[str, tuple[str, ...]] = {}
        #: page key -> refused until (hit-for-miss, and the queue release).
        self.passes = Deadlines(size)
        #: page key -> when (monotonic) its last regeneration was refused.
        self.refused: dict[str, float] = {}

    def learnt(self, url_key: str, vary: tuple[str, ...]) -> None:
        with self._lock:
            if len(self.vary) >= self.size:
                self.vary.clear()
            self.vary[url_key] = vary

    def refuse(self, key: str) -> None:
        """Note that ``key``'s regeneration was just refused."""
        with self._lock:
            if len(self.refused) >= self.size:
                self.refused.clear()
            self.refused[key] = time.monotonic()

    def refused_since(self, key: str, since: float) -> bool:
        """True if ``key`` was refused after ``since``: a caller that started
        then was queued behind that refusal and may run the view itself."""
        when = self.refused.get(key)
        return when is not None and when > since

    def clear(self) -> None:
        with self._lock:
            self.vary.clear()
            self.refused.clear()
        self.passes.clear()


fallbacks = Fallbacks()
retry_after = Deadlines()
_pages: dict[str, PageMemos] = {}
_pages_lock = threading.Lock()


def pages(store: str) -> PageMemos:
    """Return the page memos of ``store`` (created on first use)."""
    memos = _pages.get(store)
    if memos is None:
        with _pages_lock:
            memos = _pages.setdefault(store, PageMemos())
    return memos


def forget_all() -> None:
    """Forget everything this process remembers about every store."""
    fallbacks.clear()
    retry_after.clear()
    for memos in list(_pages.values()):
        memos.clear()


def forget(store: str) -> None:
    """Forget everything this process remembers about ``store``."""
    fallbacks.forget(store)
    retry_after.forget_store(store)
    tags.forget(near.family(store))
    memos = _pages.get(store)
    if memos is not None:
        memos.clear()


@receiver(setting_changed)
def _caches_changed(*, setting: str, **kwargs: Any) -> None:
    """What this process remembers of the old stores is not about the new
    ones, even under the same alias names."""
    if setting == "CACHES":
        near.reset()
        tags.reset()
        forget_all()
