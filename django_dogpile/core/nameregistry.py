"""One object per name, shared while anybody holds it (pure Python)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["NameRegistry"]

T = TypeVar("T")


class NameRegistry(Generic[T]):
    """Hand out one object per identifier for as long as it is referenced.

    ``registry.get("k")`` called from any number of threads returns the
    *same* object; ``creator("k", *args, **kw)`` runs once even when the
    calls race.  The registry holds only weak references, so the object is
    dropped when the last caller lets go of it, and a later ``get`` creates
    a new one.  The objects must therefore support weak references (plain
    class instances do; ``threading.Lock`` itself does not, wrap it).

    :param creator: called as ``creator(identifier, *args, **kw)`` to make
     the object for an identifier that has none.
    """

    def __init__(self, creator: Callable[..., T]) -> None:
        self._values: weakref.WeakValueDictionary[Hashable, T] = weakref.WeakValueDictionary()
        self._mutex = threading.RLock()
        self.creator = creator

    def get(self, identifier: Hashable, *args: Any, **kw: Any) -> T:
        """Return the object for ``identifier``, creating it if needed.

        :param identifier: the name; also passed to ``creator``.
        :param args, kw: further arguments for ``creator``.
        """
        # Lock-free fast path: a WeakValueDictionary lookup is atomic enough,
        # and a miss (or an entry collected meanwhile) falls to the slow path.
        value = self._values.get(identifier)
        if value is not None:
            return value
        return self._sync_get(identifier, *args, **kw)

    def _sync_get(self, identifier: Hashable, *args: Any, **kw: Any) -> T:
        with self._mutex:
            value = self._values.get(identifier)
            if value is None:
                value = self.creator(identifier, *args, **kw)
                self._values[identifier] = value
            return value
