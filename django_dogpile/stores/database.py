"""Django's database cache: its lease is a row taken by primary key."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from typing import Any

from django_dogpile.stores.base import AddLease, LeaseUnavailable

__all__ = ["DatabaseLease", "stored"]

log = logging.getLogger(__name__)


class DatabaseLease(AddLease):
    """A lease row in the database cache's table, taken by primary key.

    ``DatabaseCache.add()`` over an *expired* row is SELECT then UPDATE: on a
    database that lets two transactions read the expired row (PostgreSQL's
    READ COMMITTED), both "add" it.  Here an expired lease row is deleted by
    a ``DELETE ... WHERE expires < now`` and the lease taken by a plain
    ``INSERT``, which the primary key lets exactly one caller win; expiry is
    kept to the microsecond (the cache itself truncates to seconds).  The
    store's own writes fail silently on a busy database (SQLite's "database
    is locked"): a fenced write is retried a few times and reported when it
    could not be made.
    """

    __slots__ = ()

    def _sql(self, statement: str, params: list[Any]) -> int:
        from django.db import connections, router

        store = self.cache
        db = router.db_for_write(store.cache_model_class)
        connection = connections[db]
        table = connection.ops.quote_name(store._table)
        with connection.cursor() as cursor:
            cursor.execute(statement.format(table=table), params)
            return cursor.rowcount

    def _take(self) -> bool:
        import base64

        from django.db import DatabaseError, connections, router, transaction
        from django.utils import timezone

        store = self.cache
        key = store.make_key(self.lock_key)
        now = timezone.now()
        expires = now + _timedelta(self.timeout)
        db = router.db_for_write(store.cache_model_class)
        ops = connections[db].ops
        value = base64.b64encode(pickle.dumps(self.token)).decode("latin1")
        try:
            with transaction.atomic(using=db):
                self._sql(
                    "DELETE FROM {table} WHERE cache_key = %s AND expires < %s",
                    [key, ops.adapt_datetimefield_value(now)],
                )
                self._sql(
                    "INSERT INTO {table} (cache_key, value, expires) VALUES (%s, %s, %s)",
                    [key, value, ops.adapt_datetimefield_value(expires)],
                )
        except DatabaseError:  # the key is taken (or the database busy)
            return False
        return True

    def _write(self, record: Any, timeout: float | None) -> bool:
        store = self.cache
        key = store.make_key(self.record_key)
        for attempt in range(20):
            if store._base_set("set", key, record, timeout):
                return True
            time.sleep(0.005 * (attempt + 1))
        return False

    def _holder(self) -> Any:
        from django.db import DatabaseError

        for attempt in range(20):
            try:
                return self.cache.get(self.lock_key)
            except DatabaseError:  # busy: try again
                time.sleep(0.005 * (attempt + 1))
        raise LeaseUnavailable(f"{self.lock_key}: the database stayed busy")

    def holds(self) -> bool:
        return self._holder() == self.token

    def store(self, record: Any, timeout: float | None, unchanged: Callable[[], bool]) -> bool | None:
        from django.db import DatabaseError

        try:
            return super().store(record, timeout, unchanged)
        except DatabaseError:  # the database stayed busy
            return False

    def _drop(self) -> bool:
        from django.db import DatabaseError

        if not self.holds():
            return False
        key = self.cache.make_key(self.lock_key)
        for attempt in range(20):
            try:
                self._sql("DELETE FROM {table} WHERE cache_key = %s", [key])
                return True
            except DatabaseError:  # busy: the row would block the key for LOCK_TIMEOUT
                time.sleep(0.005 * (attempt + 1))
        log.warning("%s: could not delete the lease row (database busy); it expires", self.lock_key)
        return True


def stored(store: Any, key: str, value: Any, timeout: float | None) -> bool:
    """``store.set()`` on the database cache, retried while the database is
    busy (its own ``set()`` fails silently then, and says nothing)."""
    made = store.make_key(key)
    for attempt in range(20):
        if store._base_set("set", made, value, timeout):
            return True
        time.sleep(0.005 * (attempt + 1))
    return False


def _timedelta(seconds: float) -> Any:
    import datetime

    return datetime.timedelta(seconds=seconds)
