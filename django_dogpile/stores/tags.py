"""The per-process table of tag versions, and the broadcast that keeps it.

A tag's version lives in the store (:mod:`django_dogpile.engine.tags`); a
tagged hit compares the versions its record was stamped with against this
table, so it costs no extra round trip while the table knows them.

* On Redis (any store we script) an invalidation is broadcast on one
  pub/sub channel per server (:data:`CHANNEL`, whatever the aliases'
  ``KEY_PREFIX``; the message is the store's own key of the tag), heard by
  the near cache's listener (:class:`~django_dogpile.stores.near_bus.Bus`):
  each process evicts the tag from its table.
  While the listener is not subscribed the table is bypassed (every tagged
  read asks the store), and it starts empty when it subscribes again; a
  version is trusted at most :data:`BROADCAST_MAX_AGE` seconds even so (a
  broadcast whose ``PUBLISH`` failed).
* On a store in this process (locmem) invalidations are made here: the
  table is exact.
* Elsewhere (memcached, database, file) there is no broadcast: a version is
  trusted for ``TAGS_MAX_AGE`` seconds after it was read.

A read that began before an eviction never fills the table after it (an
*epoch*, as in the near cache).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from django_dogpile.records import MISSING
from django_dogpile.stores.near_bus import Bus

__all__ = ["BROADCAST_MAX_AGE", "CHANNEL", "TagTable", "forget", "reset", "table_for"]

#: seconds a version is trusted on a store with a broadcast
BROADCAST_MAX_AGE = 60.0
_MAX_ENTRIES = 10_000
#: the pub/sub channel of tag invalidations on a Redis server
CHANNEL = "dogpile-tags"


class TagTable:
    """Tag versions by the store's own key of the tag (see the module docstring)."""

    def __init__(self, exact: bool) -> None:
        #: None: exact (invalidations are made in this process); else the
        #: bound with a broadcast, and the alias's ``TAGS_MAX_AGE`` without
        self.max_age: float | None = None if exact else 0.0
        self._data: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self.epoch = 0
        #: False while invalidations may be missed (no listener subscribed)
        self.ready = True
        self.bus: Bus | None = None
        #: True in a child process until :meth:`forked` ran (set at fork)
        self.child = False

    def get(self, key: str, max_age: float) -> Any:
        """The version of ``key`` if known and trusted, else :data:`MISSING`."""
        found = self._data.get(key)
        if found is None or not self.ready:
            return MISSING
        limit = self.max_age
        if limit is not None:
            if self.bus is None:
                limit = max_age
            if time.monotonic() - found[1] >= limit:
                return MISSING
        return found[0]

    def put(self, key: str, version: Any, epoch: int) -> None:
        """Keep ``version`` (read under ``epoch``) if nothing changed since."""
        with self._lock:
            if epoch != self.epoch or not self.ready:
                return
            if len(self._data) >= _MAX_ENTRIES:
                del self._data[next(iter(self._data))]
            self._data[key] = (version, time.monotonic())

    def evict(self, key: str) -> None:
        with self._lock:
            self.epoch += 1
            self._data.pop(key, None)

    def drop_all(self) -> None:
        with self._lock:
            self.epoch += 1
            self._data.clear()

    def forked(self) -> bool:
        """True (and the table emptied, its listener restarted) in a child
        process: the parent's listener did not come along."""
        if not self.child:
            return False
        self.child = False
        self.drop_all()
        if self.bus is not None:
            self.bus.start()
        return True

    def published(self, key: str) -> None:
        """``key`` changed in the store: tell every other process."""
        self.forked()
        if self.bus is not None:
            self.bus.publish(key)


_tables: dict[str, TagTable] = {}
_tables_lock = threading.Lock()


def _in_child() -> None:
    # no thread is started here: the next use of each table does it
    global _tables_lock
    _tables_lock = threading.Lock()
    for table in _tables.values():
        table.child = True
        table._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)


def table_for(family: str, adapter: Any, store: Any) -> TagTable:
    """This process's table for the store(s) ``family`` (made once)."""
    found = _tables.get(family)
    if found is not None:
        return found
    with _tables_lock:
        found = _tables.get(family)
        if found is not None:
            return found
        access = getattr(adapter, "access", None)
        table = TagTable(exact=adapter.in_process)
        if access is not None:
            # one channel per server, whatever the aliases' KEY_PREFIX: the
            # table is per server too, and its keys are the store's own
            table.max_age = BROADCAST_MAX_AGE
            table.bus = Bus(access.clients()[0], CHANNEL, table, access.errors, what="tag table")
            table.bus.start()
        _tables[family] = table
        return table


def forget(family: str) -> None:
    """Empty the table of ``family`` (``cache.clear()``)."""
    found = _tables.get(family)
    if found is not None:
        found.drop_all()


def reset() -> None:
    """End every table (``CACHES`` changed)."""
    with _tables_lock:
        found = list(_tables.values())
        _tables.clear()
    for table in found:
        table.drop_all()
        if table.bus is not None:
            table.bus.stop()
