"""Store adapters: what kind of cache holds the data, and its lease.

Chosen once, in :func:`adapter_for`, when a ``DogpileCache`` first touches
its store:

=================  ===============================  =========================
store              lease                            fenced write
=================  ===============================  =========================
django-redis       ``SET NX PX`` script, pub/sub    token check + ``SET`` in
                   wake-up (:class:`RedisLease`)    one script
file cache         lock file under ``flock``        lease check, then the
                   (:class:`FileLease`)             record's creation time
database cache     lease row: delete-expired, then  lease check, then the
                   primary-key ``INSERT``           record's creation time;
                   (:class:`DatabaseLease`)         writes retried when busy
other shared       ``cache.add()``                  lease check, then the
(memcached)        (:class:`CacheLease`)            record's creation time
locmem, dummy      none: the in-process lock        the record's creation
                                                    time
=================  ===============================  =========================

"Fenced": a regeneration's value reaches the store only while its lease is
still held and only over the record it started from.  On Redis, an explicit
``set``/``add`` also revokes a running regeneration's lease, so the
explicit write wins; elsewhere the regeneration reads the record just
before writing and gives up if its creation time changed (the window left is
the time between that read and the write, one store round trip).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .leases import CacheLease, DatabaseLease, FileLease
from .redis_lease import RedisLease, RedisScripts

__all__ = ["StoreAdapter", "adapter_for", "class_path", "is_django_redis", "is_in_process"]

log = logging.getLogger(__name__)

_IN_PROCESS_STORES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)
_FILE_STORE = "django.core.cache.backends.filebased.FileBasedCache"
_DB_STORE = "django.core.cache.backends.db.DatabaseCache"


def class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _inherits(store: Any, paths: tuple[str, ...]) -> bool:
    return any(f"{c.__module__}.{c.__qualname__}" in paths for c in type(store).__mro__)


def is_in_process(store: Any) -> bool:
    """True for a store that lives in this process (locmem, dummy)."""
    return _inherits(store, _IN_PROCESS_STORES)


def is_file(store: Any) -> bool:
    return _inherits(store, (_FILE_STORE,))


def is_django_redis(store: Any) -> bool:
    """True for django-redis's ``RedisCache`` with a client we can script."""
    client = getattr(store, "client", None) if any(
        c.__module__.startswith("django_redis") for c in type(store).__mro__
    ) else None
    return client is not None and hasattr(client, "get_client") and hasattr(client, "decode")


class StoreAdapter:
    """The lease factory of one store, and its store-specific writes.

    ``kind`` is ``"redis"``, ``"file"``, ``"cache"`` or ``"local"``.
    """

    #: a write through the lease checks the token atomically
    fenced_by_lease = False

    def __init__(self, store: Any, kind: str, lock_timeout: float) -> None:
        self.store = store
        self.kind = kind
        self.lock_timeout = lock_timeout
        self.local = is_in_process(store)
        # django-redis's set() returns True, or None when IGNORE_EXCEPTIONS
        # swallowed an error; Django's own backends return None on success.
        self.set_reports = is_django_redis(store)
        self.lease: Callable[[str, str], Any] | None = None
        if kind == "cache":
            lease = DatabaseLease if _inherits(store, (_DB_STORE,)) else CacheLease
            self.lease = lambda lock_key, record_key: lease(
                store, lock_key, record_key, lock_timeout
            )
        elif kind == "file":
            self.lease = lambda lock_key, record_key: FileLease(
                store, lock_key, record_key, lock_timeout
            )

    def set(self, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        """Store ``record`` for an explicit ``set()``; True if stored."""
        result: Any = self.store.set(made, record, timeout=timeout)  # type: ignore[func-returns-value]
        return bool(result) if self.set_reports else result is not False

    def add(self, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        return bool(self.store.add(made, record, timeout=timeout))

    def delete(self, made: str, lock_key: str) -> bool:
        """Delete for an explicit ``delete()``; True if the key existed."""
        return bool(self.store.delete(made))

    def delete_many(self, made: list[str], lock_keys: list[str]) -> None:
        self.store.delete_many(made)

    def end_hold(self, lock_key: str) -> None:
        """End a ``RETRY_AFTER`` hold on the key (``set``/``delete`` do)."""
        if self.kind in ("cache", "file"):
            self.store.delete(lock_key + ":retry")


class RedisAdapter(StoreAdapter):
    """django-redis: scripts on the primary, values encoded as django-redis does."""

    fenced_by_lease = True

    def __init__(self, store: Any, lock_timeout: float) -> None:
        super().__init__(store, "redis", lock_timeout)
        wrapper = store.client
        self.client = wrapper.get_client(write=True)
        self.scripts = RedisScripts(self.client)
        self.encode = wrapper.encode
        self.decode = wrapper.decode
        self.ignore = bool(getattr(store, "_ignore_exceptions", False))
        self.lease = self._lease

    def _lease(self, lock_key: str, record_key: str) -> RedisLease:
        return RedisLease(
            self.client,
            self.scripts,
            str(self.store.make_key(lock_key)),
            str(self.store.make_key(record_key)),
            self.lock_timeout,
            self.encode,
            self.decode,
            self.ignore,
        )

    def _write(self, script: Any, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        from redis.exceptions import ConnectionError, TimeoutError

        px = 0 if timeout is None else max(int(timeout * 1000), 1)
        lock = str(self.store.make_key(lock_key))
        try:
            return bool(script(
                keys=[str(self.store.make_key(made)), lock, lock + ":retry"],
                args=[self.encode(record), px],
                client=self.client,
            ))
        except (ConnectionError, TimeoutError):
            if self.ignore:
                log.warning("store unavailable; %s not written", made)
                return False
            raise

    def set(self, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        """``SET`` that also revokes a running regeneration's lease."""
        return self._write(self.scripts.set, made, record, timeout, lock_key)

    def add(self, made: str, record: Any, timeout: float | None, lock_key: str) -> bool:
        return self._write(self.scripts.add, made, record, timeout, lock_key)

    def delete(self, made: str, lock_key: str) -> bool:
        """``DEL`` that also ends a hold and revokes a regeneration's lease."""
        from redis.exceptions import ConnectionError, TimeoutError

        lock = str(self.store.make_key(lock_key))
        try:
            return bool(self.scripts.delete(
                keys=[str(self.store.make_key(made)), lock, lock + ":retry"], client=self.client,
            ))
        except (ConnectionError, TimeoutError):
            if self.ignore:
                return False
            raise

    def delete_many(self, made: list[str], lock_keys: list[str]) -> None:
        from redis.exceptions import ConnectionError, TimeoutError

        keys = [str(self.store.make_key(k)) for k in made]
        locks = [str(self.store.make_key(k)) for k in lock_keys]
        try:
            self.client.delete(*keys, *locks, *(k + ":retry" for k in locks))
        except (ConnectionError, TimeoutError):
            if not self.ignore:
                raise


def adapter_for(store: Any, lock: str, lock_timeout: float) -> StoreAdapter:
    """Return the adapter for ``store`` under the ``LOCK`` option ``lock``.

    Raises :class:`ValueError` when ``lock`` asks for what the store cannot do.
    """
    if lock == "auto":
        if is_django_redis(store):
            lock = "redis"
        elif is_in_process(store):
            lock = "local"
        elif is_file(store):
            lock = "file"
        else:
            lock = "cache"
    if lock == "redis":
        if not is_django_redis(store):
            raise ValueError(f"LOCK 'redis' needs a django-redis store, not {class_path(store)}")
        return RedisAdapter(store, lock_timeout)
    if lock == "cache" and is_file(store):
        lock = "file"  # the file cache's add() is has_key() then set(): not a lock
    return StoreAdapter(store, lock, lock_timeout)
