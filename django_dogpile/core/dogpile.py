"""The dogpile lock: elect one creator while everyone else serves the old value.

This module is the heart of the package and imports nothing from Django.  It
re-implements the public API of ``dogpile.core`` 0.4.1 (``Lock`` and
``NeedRegenerationException``) with one refinement that ``dogpile.cache`` made
later: a caller holding an *expired* value reads the store once, never a second
time after winning the non-blocking acquire.

The rules, for one ``with Lock(...) as value:``:

* a fresh value is returned and the mutex is never touched;
* an expired value whose mutex is busy is returned at once (no waiting);
* an expired value whose mutex is free: this caller regenerates, or hands the
  mutex to ``async_creator`` and returns the expired value at once;
* no value at all: block on the mutex, then ask ``value_and_created_fn`` again,
  because a concurrent caller may have created it meanwhile;
* the mutex is released whatever ``creator`` does, unless it was handed to
  ``async_creator``, which then owns the release.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Lock", "NeedRegenerationException"]

log = logging.getLogger(__name__)

ValueAndCreated = tuple[Any, float]


class NeedRegenerationException(Exception):
    """Raised by ``value_and_created_fn`` when there is no value to serve.

    Raising it inside the ``with`` block of a :class:`Lock` is how a value
    function says "nothing here": the lock then treats the value as absent
    and elects a creator.
    """


class Mutex(Protocol):
    """Anything with ``acquire(wait=True)`` and ``release()``."""

    def acquire(self, wait: bool = True) -> Any:  # pragma: no cover - protocol
        ...

    def release(self) -> Any:  # pragma: no cover - protocol
        ...


_NOT_REGENERATED = object()


class Lock:
    """Dogpile lock: one caller creates a new value, the others keep the old.

    :param mutex: an object with ``acquire(wait=True)`` and ``release()``;
     it is called exactly as ``acquire(False)`` and ``acquire()``, so a
     :class:`threading.Lock` fits, and so does a cross-process lease.
    :param creator: callable returning ``(new_value, creation_time)``, the
     creation time being comparable with :func:`time.time`.
    :param value_and_created_fn: callable returning ``(value,
     creation_time)`` for the value currently stored, or raising
     :class:`NeedRegenerationException` when there is none.  A creation
     time of ``0`` or less also means "no value".
    :param expiretime: seconds after its creation time at which a value is
     expired; ``None`` for never.
    :param async_creator: optional callable taking the acquired mutex.  When
     there is an expired value to serve, it is called instead of
     ``creator`` and becomes responsible for releasing the mutex once it
     has (typically in another thread) regenerated the value.  The expired
     value is returned at once.
    """

    def __init__(
        self,
        mutex: Mutex,
        creator: Callable[[], ValueAndCreated],
        value_and_created_fn: Callable[[], ValueAndCreated],
        expiretime: float | None,
        async_creator: Callable[[Mutex], Any] | None = None,
    ) -> None:
        self.mutex = mutex
        self.creator = creator
        self.value_and_created_fn = value_and_created_fn
        self.expiretime = expiretime
        self.async_creator = async_creator

    def _has_value(self, createdtime: float) -> bool:
        return createdtime > 0

    def _is_expired(self, createdtime: float) -> bool:
        return not self._has_value(createdtime) or (
            self.expiretime is not None and time.time() - createdtime > self.expiretime
        )

    def _enter(self) -> Any:
        value_fn = self.value_and_created_fn
        try:
            value, createdtime = value_fn()
        except NeedRegenerationException:
            log.debug("NeedRegenerationException")
            value, createdtime = _NOT_REGENERATED, -1

        generated = self._enter_create(value, createdtime)
        if generated is not _NOT_REGENERATED:
            return generated[0]
        if value is _NOT_REGENERATED:
            # Only reachable when the value is absent and yet not expired,
            # which a well-behaved value function cannot produce; read again
            # as dogpile.core does.
            try:
                return value_fn()[0]
            except NeedRegenerationException:
                raise Exception(
                    "Generation function should have just been called by a concurrent thread."
                ) from None
        return value

    def _enter_create(self, value: Any, createdtime: float) -> Any:
        if not self._is_expired(createdtime):
            return _NOT_REGENERATED

        has_value = self._has_value(createdtime)
        if has_value:
            if not self.mutex.acquire(False):
                log.debug("creation function in progress elsewhere, returning")
                return _NOT_REGENERATED
        else:
            log.debug("no value, waiting for create lock")
            self.mutex.acquire()

        handed_off = False
        try:
            log.debug("value creation lock %r acquired", self.mutex)
            if not has_value:
                # We waited: somebody else may have created the value while we
                # were blocked on the mutex.
                try:
                    value, createdtime = self.value_and_created_fn()
                except NeedRegenerationException:
                    pass
                else:
                    has_value = self._has_value(createdtime)
                    if has_value and not self._is_expired(createdtime):
                        log.debug("concurrent caller created the value")
                        return value, createdtime

            if has_value and self.async_creator is not None:
                log.debug("passing creation lock to async runner")
                self.async_creator(self.mutex)
                handed_off = True
                return value, createdtime

            log.debug(
                "calling creation function for %s value",
                "a previously expired" if has_value else "a not yet present",
            )
            return self.creator()
        finally:
            if not handed_off:
                self.mutex.release()
                log.debug("released creation lock")

    def __enter__(self) -> Any:
        return self._enter()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None
