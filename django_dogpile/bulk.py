"""The several-keys half of the ``BaseCache`` contract (``get_many``,
``set_many``, ``delete_many`` and their async twins), mixed into
:class:`~django_dogpile.cache.DogpileCache`.  Each key counts a stale record
as Django counts an expired one: a miss."""

from __future__ import annotations

from typing import Any, Iterable

from django.core.cache.backends.base import DEFAULT_TIMEOUT

from . import bridge, entries
from .entries import is_fresh
from .regeneration import LOCK_SUFFIX

__all__ = ["BulkOperations"]


class BulkOperations:
    """Mixed into ``DogpileCache``; uses its single-key helpers."""

    # provided by DogpileCache
    store: Any
    _adapter: Any
    make_and_validate_key: Any
    _freshness: Any
    _record: Any
    _forget: Any
    _pickling: Any

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return a dict of the fresh values among ``keys``.

        Keys that make the same store key (``1`` and ``"1"``) each get the
        value, as with Django's backends.
        """
        made: dict[str, list[Any]] = {}
        for k in keys:
            made.setdefault(self.make_and_validate_key(k, version), []).append(k)
        if not made:
            return {}
        now = entries.now()
        found = {}
        for mk, raw in self.store.get_many(list(made)).items():
            if is_fresh(raw, now):
                for k in made[mk]:
                    found[k] = raw[0]
        return found

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        self.store  # noqa: B018 - connect
        if self._adapter.local:
            return self.get_many(keys, version)
        return await bridge.run(self.get_many, list(keys), version)

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        """Set several values; return the keys that failed to be stored."""
        fresh_for = self._freshness(timeout)
        made = {self.make_and_validate_key(k, version): k for k in data}
        if fresh_for is not None and fresh_for <= 0:
            self.delete_many(list(data), version)
            return []
        self.store  # noqa: B018 - connect
        failed = []
        if self._adapter.kind == "redis":
            # one script per key: each revokes a regeneration in flight
            with self._pickling(f"a value among keys {list(data)!r}"):
                for mk, k in made.items():
                    record, ttl = self._record(data[k], fresh_for)
                    if not self._adapter.set(mk, record, ttl, mk + LOCK_SUFFIX):
                        failed.append(k)
        else:
            record_ttl = None
            records = {}
            for mk, k in made.items():
                records[mk], record_ttl = self._record(data[k], fresh_for)
            with self._pickling(f"a value among keys {list(data)!r}"):
                failed = [
                    made.get(mk, mk) for mk in self.store.set_many(records, timeout=record_ttl) or []
                ]
        for mk in made:
            self._forget(mk)
        return failed

    async def aset_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        return await bridge.run(self.set_many, data, timeout, version)

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove several keys; each wins over a regeneration running meanwhile."""
        made = [self.make_and_validate_key(k, version) for k in keys]
        for one in made:
            self._forget(one)
        if made:
            self.store  # noqa: B018 - connect
            self._adapter.delete_many(made, [m + LOCK_SUFFIX for m in made])

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        return await bridge.run(self.delete_many, list(keys), version)

