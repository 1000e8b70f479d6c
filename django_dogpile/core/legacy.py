"""The pre-0.4 dogpile.core API: ``Dogpile`` and ``SyncReaderDogpile``.

Kept for programs written against dogpile.core's original usage; new code
should use :class:`~django_dogpile.core.Lock` directly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .dogpile import Lock, Mutex
from .readwrite_lock import ReadWriteMutex

__all__ = ["Dogpile", "SyncReaderDogpile"]


class Dogpile:
    """A dogpile lock that remembers the creation time itself.

    .. deprecated:: 0.4.0 (in dogpile.core)
        Use :class:`~django_dogpile.core.Lock`.

    :param expiretime: seconds a value stays fresh; ``None`` for never.
    :param init: if true, the value counts as created now.
    :param lock: the mutex (``acquire()``/``release()``); a
     :class:`threading.Lock` by default.
    """

    createdtime: float = -1
    """Epoch of the last creation; ``-1`` means "create on next acquire"."""

    def __init__(self, expiretime: float | None, init: bool = False, lock: Mutex | None = None) -> None:
        self.dogpilelock = lock if lock else threading.Lock()
        self.expiretime = expiretime
        if init:
            self.createdtime = time.time()

    def acquire(
        self,
        creator: Callable[[], Any],
        value_fn: Callable[[], Any] | None = None,
        value_and_created_fn: Callable[[], Any] | None = None,
    ) -> Lock:
        """Return a context manager yielding the value, creating it if due.

        :param creator: makes the value; with ``value_and_created_fn`` it
         must return ``(value, createdtime)``, otherwise just the value.
        :param value_fn: returns the current value when no regeneration is
         needed; without it the ``with`` block receives ``None``.
        :param value_and_created_fn: returns ``(value, createdtime)`` from
         wherever it is kept, replacing this object's ``createdtime``.
        """
        if value_and_created_fn is None:
            if value_fn is None:

                def value_and_created_fn() -> Any:
                    return None, self.createdtime

            else:

                def value_and_created_fn() -> Any:
                    return value_fn(), self.createdtime

            def creator_wrapper() -> Any:
                value = creator()
                self.createdtime = time.time()
                return value, self.createdtime

        else:

            def creator_wrapper() -> Any:
                value = creator()
                self.createdtime = time.time()
                return value

        return Lock(self.dogpilelock, creator_wrapper, value_and_created_fn, self.expiretime)

    @property
    def is_expired(self) -> bool:
        """True if the value must be created: none yet, or too old."""
        return not self.has_value or (
            self.expiretime is not None and time.time() - self.createdtime > self.expiretime
        )

    @property
    def has_value(self) -> bool:
        """True once the creator has run at least once."""
        return self.createdtime > 0


class SyncReaderDogpile(Dogpile):
    """A :class:`Dogpile` whose readers are shut out while a writer works.

    .. deprecated:: 0.4.0 (in dogpile.core)
        Use :class:`~django_dogpile.core.ReadWriteMutex` directly.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.readwritelock = ReadWriteMutex()

    @contextlib.contextmanager
    def acquire_write_lock(self) -> Iterator[None]:
        """Return a context manager excluding all readers and writers."""
        self.readwritelock.acquire_write_lock()
        try:
            yield
        finally:
            self.readwritelock.release_write_lock()

    @contextlib.contextmanager
    def acquire(self, *arg: Any, **kw: Any) -> Iterator[Any]:  # type: ignore[override]
        """As :meth:`Dogpile.acquire`, holding a read lock inside the block."""
        with super().acquire(*arg, **kw) as value:
            self.readwritelock.acquire_read_lock()
            try:
                yield value
            finally:
                self.readwritelock.release_read_lock()
