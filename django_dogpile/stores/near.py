"""The near cache (``OPTIONS["NEAR_CACHE"]``): hot fresh records kept in the
process, in front of a shared store, kept coherent with it.

* :class:`NearCache` -- an LRU of *pickled* records, bounded by entries and
  bytes; an entry lives while its record is fresh and never longer than
  ``MAX_AGE`` (the bound when an invalidation cannot arrive).  Each hit
  unpickles its own copy, so callers never share a mutable value.
* :class:`NearStore` -- the store as DogpileCache sees it: ``get`` asks the
  near cache first and fills it from the store's fresh records; every write
  made through it, and each write the backend reports (:meth:`wrote`),
  evicts the key here and **broadcasts** the key to every other process.
* On Redis (any client the native lease knows) the broadcast is one pub/sub
  channel per store, listened to by one daemon thread per process.  While
  the listener is not subscribed -- at start, after an outage, after a fork
  -- the near cache is bypassed; when it subscribes again it starts empty,
  since it cannot know what it missed.  Other stores have no broadcast:
  there ``MAX_AGE`` alone bounds how old a value another process sees.

A read that began before an invalidation never fills the near cache after
it: each eviction moves an *epoch*, and a fill made under an older epoch is
dropped.  Writes made to the store behind DogpileCache's back are not
broadcast: they show within ``MAX_AGE``.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from django_dogpile import records
from django_dogpile.records import EXPIRES, MISSING
from django_dogpile.stores.base import store_ident
from django_dogpile.stores.near_bus import _CLEAR, PING_INTERVAL, PONG_WITHIN, Bus

__all__ = ["PING_INTERVAL", "PONG_WITHIN", "NearCache", "EvictingStore", "NearStore", "near_store", "reset"]

log = logging.getLogger(__name__)


class NearCache:
    """A bounded LRU of pickled records (see the module docstring)."""

    def __init__(self, max_entries: int, max_bytes: int, max_age: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.epoch = 0
        #: False while invalidations may be missed (no listener subscribed)
        self.ready = True

    def __len__(self) -> int:
        return len(self._data)

    def lookup(self, key: str) -> bytes | None:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                return None
            if records.now() >= found[1]:
                self._pop(key)
                return None
            self._data.move_to_end(key)
            return found[0]

    def offer(self, key: str, record: Any, epoch: int) -> None:
        """Keep ``record`` (fresh, read under ``epoch``) if nothing changed since."""
        expires = record[EXPIRES]
        now = records.now()
        if expires is not None and now >= expires:
            return
        until = now + self.max_age if expires is None else min(expires, now + self.max_age)
        try:
            blob = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        except Exception:  # the store pickled it; a store of its own kind may not
            return
        if len(blob) > self.max_bytes:
            return
        with self._lock:
            if epoch != self.epoch or not self.ready:
                return  # an invalidation arrived while we read: the read may be old
            self._pop(key)
            self._data[key] = (blob, until)
            self._bytes += len(blob)
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                self._pop(next(iter(self._data)))

    def _pop(self, key: str) -> None:
        gone = self._data.pop(key, None)
        if gone is not None:
            self._bytes -= len(gone[0])

    def evict(self, key: str) -> None:
        with self._lock:
            self.epoch += 1
            self._pop(key)

    def drop_all(self) -> None:
        with self._lock:
            self.epoch += 1
            self._data.clear()
            self._bytes = 0


class _Evicting:
    """A store whose every write calls ``self.wrote(key)`` (and ``clear``,
    ``self._cleared()``); everything else is the store's own."""

    _store: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def wrote(self, key: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _cleared(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # writes through the store itself (touch, incr, add over a stale value...)

    def set(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._store.set(key, *args, **kwargs)
        finally:
            self.wrote(key)

    def add(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        added = self._store.add(key, *args, **kwargs)
        if added:
            self.wrote(key)
        return added

    def touch(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._store.touch(key, *args, **kwargs)
        finally:
            self.wrote(key)

    def delete(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._store.delete(key, *args, **kwargs)
        finally:
            self.wrote(key)

    def set_many(self, data: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return self._store.set_many(data, *args, **kwargs)
        finally:
            for key in data:
                self.wrote(key)

    def delete_many(self, keys: Any, *args: Any, **kwargs: Any) -> Any:
        keys = list(keys)
        try:
            return self._store.delete_many(keys, *args, **kwargs)
        finally:
            for key in keys:
                self.wrote(key)

    def clear(self) -> Any:
        try:
            return self._store.clear()
        finally:
            self._cleared()


class NearStore(_Evicting):
    """The store behind a near cache; everything else is the store's own."""

    def __init__(
        self,
        store: Any,
        near: NearCache,
        bus: Bus | None,
        read: Callable[[Any, Any, Any], Any] | None = None,
        location: str = "",
        plain: bool | None = None,
    ) -> None:
        self._store = store
        self._near = near
        self._bus = bus
        self._location = location
        #: the server(s) behind the alias: aliases over one store are siblings
        self._family = family(location)
        #: the key an entry is kept under: the store's own (see store_ident)
        self._ident = store_ident(store, plain)
        self._pid = os.getpid()
        #: how a near miss reads the store: on Redis, the record's primary,
        #: where the invalidations come from (a replica may not have the
        #: write yet when its eviction arrives, and the near copy would keep
        #: that old value for MAX_AGE)
        self._read = store.get if read is None else read

    def peek(self, key: Any) -> Any:
        """The record of ``key`` if this process holds it fresh, else
        :data:`MISSING`: a dict lookup and an unpickle, never I/O (an event
        loop may call it)."""
        near = self._near
        if self._pid != os.getpid() or not near.ready:
            return MISSING
        blob = near.lookup(self._ident(key))
        return MISSING if blob is None else pickle.loads(blob)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        near = self._near
        if self._pid != os.getpid():
            self._forked()
        if not near.ready:
            return self._store.get(key, default, version)
        ident = self._ident(key) if version is None else str(self._store.make_key(key, version))
        blob = near.lookup(ident)
        if blob is not None:
            return pickle.loads(blob)  # each caller its own copy
        epoch = near.epoch
        raw = self._read(key, default, version)
        if type(raw) is tuple and 4 <= len(raw) <= 5:
            near.offer(ident, raw, epoch)
        return raw

    def _forked(self) -> None:
        # a child of a preloading server: the parent's listener thread did
        # not come along, and what the parent cached is no one's to trust
        self._pid = os.getpid()
        self._near.drop_all()
        if self._bus is not None:
            self._bus.start()

    def wrote(self, key: str) -> None:
        """``key`` changed in the store: evict it here and everywhere."""
        if self._pid != os.getpid():
            self._forked()  # else it is published under the parent's sender id,
            # which the parent's listener skips as its own
        ident = self._ident(key)
        evict_here(self._family, ident)  # every near cache of the store
        if self._bus is not None:
            self._bus.publish(ident)

    def _cleared(self) -> None:
        if self._pid != os.getpid():
            self._forked()
        forget_family(self._family)
        if self._bus is not None:
            self._bus.publish(_CLEAR)


class EvictingStore(_Evicting):
    """The store of an alias with no near cache of its own: its writes still
    evict the near caches other aliases of this process keep of the store
    (at once, as theirs do), and reads go straight to the store."""

    def __init__(self, store: Any, location: str, plain: bool | None = None) -> None:
        self._store = store
        self._location = location
        self._family = family(location)
        self._ident = store_ident(store, plain)
        self.get = store.get  # the hot path: no wrapper in the way
        self.get_many = store.get_many

    def wrote(self, key: str) -> None:
        if _registry:
            evict_here(self._family, self._ident(key))

    def _cleared(self) -> None:
        forget_family(self._family)


#: one near cache and bus per process, store and store settings
#: (``cache.clear()`` empties it; a change of ``CACHES`` ends it)
_registry: dict[tuple[str, str, tuple[int, int, float]], NearStore] = {}
_registry_lock = threading.Lock()


def _fingerprint(location: str) -> str:
    from django.conf import settings

    return repr(settings.CACHES.get(location))


def family(location: str) -> str:
    """The server(s) behind the alias ``location``: its BACKEND and LOCATION
    (two aliases set over the same Redis URL, or the same locmem name, hold
    the same records whatever else they set)."""
    from django.conf import settings

    conf = settings.CACHES.get(location) or {}
    return repr((conf.get("BACKEND"), conf.get("LOCATION")))


def near_store(
    location: str,
    store: Any,
    settings: tuple[int, int, float],
    adapter: Any,
    plain: bool | None = None,
) -> NearStore:
    """This process's near store for ``location`` (made once, then shared)."""
    ident = (location, _fingerprint(location), settings)
    with _registry_lock:
        found = _registry.get(ident)
        if found is not None:
            return found
        near = NearCache(*settings)
        bus = None
        access = getattr(adapter, "access", None)
        if access is not None:  # a Redis we script: a channel on its first server
            client = access.clients()[0]
            # by Django's key function: another (a tenant's) would give each
            # tenant's first request its own channel, and broadcasts a
            # process subscribed under another tenant never hears
            from django.core.cache.backends.base import default_key_func

            channel = default_key_func("dogpile-near", store.key_prefix, store.version)
            bus = Bus(client, channel, near, access.errors)
        built = _registry[ident] = NearStore(
            store,
            near,
            bus,
            None if access is None else _primary_read(store, access),
            location,
            plain,
        )
        if bus is not None:
            bus.start()
        return built


def evict_here(store_family: str, ident: str) -> None:
    """Evict ``ident`` from every near cache of this process over the
    store(s) ``store_family`` (:func:`family`): aliases over one store each
    keep their own."""
    for found in list(_registry.values()):
        if found._family == store_family:
            found._near.evict(ident)


def forget_family(store_family: str) -> None:
    """Empty every near cache of this process over ``store_family``."""
    for found in list(_registry.values()):
        if found._family == store_family:
            found._near.drop_all()


def reset() -> None:
    """End every near cache of this process (``CACHES`` changed: the next
    use builds new ones over the new stores)."""
    with _registry_lock:
        found = list(_registry.values())
        _registry.clear()
    for near_store_ in found:
        near_store_._near.drop_all()
        if near_store_._bus is not None:
            near_store_._bus.stop()


def _primary_read(store: Any, access: Any) -> Callable[[Any, Any, Any], Any]:
    """``store.get``, from the record's primary (not a read replica)."""

    def read(key: Any, default: Any = None, version: Any = None) -> Any:
        raw = store.make_key(key, version=version)
        try:
            found = access.client_for(str(raw)).get(raw)
        except access.errors:
            if access.ignore:
                return default
            raise
        return default if found is None else access.decode(found)

    return read


def forget(location: str) -> None:
    """Empty every near cache of ``location`` in this process."""
    for (where, _, _), found in list(_registry.items()):
        if where == location:
            found._near.drop_all()


Callback = Callable[[str], None]
