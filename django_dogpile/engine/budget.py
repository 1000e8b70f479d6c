"""``REGENERATION_BUDGET``: at most K regenerations at once over a store.

A mass invalidation (a tag on 2,000 pages) would otherwise send every
page's regeneration to the database at the same moment.  With a budget of
K, a regeneration first takes one of K *slots*:

* a caller with a stale value to serve tries once, without waiting; with no
  slot free it serves the stale value (``UPDATING``) and leaves the
  regeneration to a later request;
* a caller with no value waits for a slot (polling, at most
  ``WAIT_TIMEOUT``; then it goes on without one, and says so in the log).

The slots are leases of the store's own kind (``dogpile.budget.<i>``:
Redis scripts, ``add()``, a lease file or row), named by the store alone
(its own ``KEY_PREFIX``, never the DogpileCache alias's ``KEY_PREFIX`` or
``KEY_FUNCTION``: tenants share one budget, as they share one database),
so the bound holds across every process and host sharing the store, and a
slot held by a process killed mid-regeneration frees itself after
``LOCK_TIMEOUT``.  On locmem
(one process) they are a semaphore of the process.  A process that found
every slot taken does not ask the store again for :data:`FULL_FOR` seconds:
over budget, a stale hit costs no extra round trip.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from django_dogpile.stores.base import LeaseUnavailable
from django_dogpile.stores.near import family

if TYPE_CHECKING:
    from django_dogpile.engine.binding import Binding

__all__ = ["FULL_FOR", "Budget", "Unbounded", "budget_for"]

log = logging.getLogger(__name__)

#: seconds a process trusts that every slot is taken
FULL_FOR = 0.02
_POLL = 0.01

_local: dict[tuple[str, int], threading.Semaphore] = {}
_full_until: dict[str, float] = {}
_lock = threading.Lock()


class _LocalSlot:
    __slots__ = ("semaphore",)

    def __init__(self, semaphore: threading.Semaphore) -> None:
        self.semaphore = semaphore

    def release(self) -> None:
        self.semaphore.release()


class Budget:
    """The regeneration budget of one backend (see the module docstring)."""

    def __init__(self, binding: Binding, size: int) -> None:
        self.binding = binding
        self.size = size

    def _family(self) -> str:
        return family(self.binding.location)

    def _try(self) -> Any:
        b = self.binding
        where = self._family()
        if _full_until.get(where, 0.0) > time.monotonic():
            return None
        factory = b.adapter.lease
        if factory is None:  # one process: a semaphore
            with _lock:
                semaphore = _local.setdefault((where, self.size), threading.Semaphore(self.size))
            return _LocalSlot(semaphore) if semaphore.acquire(blocking=False) else self._full(where)
        first = random.randrange(self.size)
        for i in range(self.size):
            # the store's key, not the alias's: one budget per store, whatever
            # the aliases' KEY_PREFIX or (tenant) KEY_FUNCTION
            skey = f"dogpile.budget.{(first + i) % self.size}"
            lease = factory(skey, skey + ".none")  # (no RETRY_AFTER hold is ever left on a slot)
            try:
                if lease.acquire(False, 0.0, landed_ok=False):
                    return lease
            except LeaseUnavailable:
                return _NoSlot  # the store is down: no budget to keep
        return self._full(where)

    def _full(self, where: str) -> None:
        _full_until[where] = time.monotonic() + FULL_FOR
        return None

    def take(self, wait: bool) -> Any:
        """A slot, or None (none free, and ``wait`` is False)."""
        slot = self._try()
        if slot is not None or not wait:
            return slot
        deadline = time.monotonic() + self.binding.options.wait_timeout
        while time.monotonic() < deadline:
            time.sleep(_POLL * (0.5 + random.random()))
            slot = self._try()
            if slot is not None:
                return slot
        log.warning(
            "DogpileCache %r: no REGENERATION_BUDGET slot free for %.1fs (WAIT_TIMEOUT); "
            "regenerating without one",
            self.binding.alias,
            self.binding.options.wait_timeout,
        )
        return _NoSlot

    def give(self, slot: Any) -> None:
        """Free ``slot`` (taken by :meth:`take`)."""
        if slot is None:
            return
        _full_until.pop(self._family(), None)
        try:
            slot.release()
        except Exception:  # a lease runs out by itself
            log.warning("could not free a regeneration budget slot; it will expire", exc_info=True)


class _NoSlotType:
    """Regenerate without a slot (the store is down, or the wait ran out)."""

    def release(self) -> None:
        pass


_NoSlot = _NoSlotType()


class Unbounded:
    """No ``REGENERATION_BUDGET``: every regeneration runs at once."""

    def take(self, wait: bool) -> Any:
        return _NoSlot

    def give(self, slot: Any) -> None:
        pass


_UNBOUNDED = Unbounded()


def budget_for(binding: Binding, size: int | None) -> Budget | Unbounded:
    """The budget of ``binding`` (``size`` slots; None: unbounded)."""
    return Budget(binding, size) if size else _UNBOUNDED
