"""Results that decide their own fate: a creator says how long its value
is fresh, which tags it carries, or that it is served but not stored.

Two ways, for every face (``get_or_set``, ``@cached``, ``{% dogpile_cache
%}``, ``dogpile_cache_page``, sync and async):

* return a :class:`CacheResult` wrapping the value (a function's creator);
* call :func:`expires_in` or :func:`dont_store` while making it (a view
  under ``dogpile_cache_page``, code inside a cached fragment): they apply
  to the value the innermost creator around the call is making, and do
  nothing outside one.

The creator's word replaces the call's ``timeout`` (the shortest, when it
speaks twice); a timeout of 0 or less is "serve but don't store", as
Django's ``timeout=0`` is.  A value not stored is made again by the next
caller that asks, each caller its own (nothing is handed to waiters), and
``BACKGROUND`` leaves the stale value in place.  Tags a result names are
stamped with their versions when the making ends.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from django_dogpile.engine.tags import Collector, bubble, collecting, current
from django_dogpile.rules import timeout_argument

__all__ = ["CacheResult", "decided", "dont_store", "expires_in", "made_unstored"]

T = TypeVar("T")


class CacheResult(Generic[T]):
    """A creator's value with its own fate: ``timeout`` (seconds, ``None``
    forever; unset: the call's), ``tags`` (added to the call's), ``store``
    (False: serve it to this caller, store nothing).  The caller gets
    ``value``; the wrapper is never stored."""

    __slots__ = ("value", "timeout", "tags", "store")

    def __init__(
        self, value: T, *, timeout: Any = DEFAULT_TIMEOUT, tags: Any = None, store: bool = True
    ) -> None:
        if timeout is not DEFAULT_TIMEOUT:
            timeout = timeout_argument(timeout, "CacheResult")
        if not isinstance(store, bool):
            raise TypeError(f"CacheResult: store must be True or False, not {store!r}.")
        self.value, self.timeout, self.tags, self.store = value, timeout, tags, store

    def __repr__(self) -> str:
        return (
            f"CacheResult({self.value!r}, timeout={self.timeout!r}, tags={self.tags!r}, store={self.store})"
        )


def expires_in(timeout: float | None) -> bool:
    """The value being made is fresh for ``timeout`` seconds (``None``:
    forever; 0 or less: not stored).  False outside any creator."""
    timeout = timeout_argument(timeout, "expires_in()")
    collector = current()
    if collector is None:
        return False
    collector.decide(timeout)
    return True


def dont_store() -> bool:
    """The value being made is served to its caller and not stored.  False
    outside any creator."""
    collector = current()
    if collector is None:
        return False
    collector.store = False
    return True


def decided(value: Any, collector: Collector) -> tuple[Any, Any, Any, bool]:
    """What the creator decided of the value it made (``collector``: the
    one its making ran in): ``(value, timeout, tags, store)``, the timeout
    :data:`MISSING` when it said none (the call's then holds)."""
    tags = None
    if isinstance(value, CacheResult):
        if value.timeout is not DEFAULT_TIMEOUT:
            collector.decide(value.timeout)
        if not value.store:
            collector.store = False
        value, tags = value.value, value.tags
    return value, collector.timeout, tags, collector.store


def made_unstored(default: Any) -> Any:
    """``default`` made (called if callable) for a caller that stores
    nothing anyway (``timeout=0``, a wait that timed out): unwrapped, in a
    collector of its own -- its creator's words are about this value, not
    about a value being made around it -- whose tags still bubble up."""
    with collecting() as collector:
        value = default() if callable(default) else default
    bubble(collector.stamp)
    return value.value if isinstance(value, CacheResult) else value
