"""The one table of store kinds: which backend is which kind, its lease,
how far the lease reaches, and what it does natively.

:data:`KINDS` is read by the adapter factory (:func:`adapter_for`, once,
when a ``DogpileCache`` first touches its store), by the deploy checks
(W001, W004: how far a lease reaches) and by ``manage.py dogpile inspect``.
A new store kind is one row here plus its module in this package.

In words:

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
(memcached)        (:class:`AddLease`)              record's creation time
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

from dataclasses import dataclass
from typing import Any

from django_dogpile.stores.base import AddLease, StoreAdapter, class_path
from django_dogpile.stores.database import DatabaseLease
from django_dogpile.stores.file import FileLease
from django_dogpile.stores.memcached import MemcachedStore
from django_dogpile.stores.redis import OmittingStore, RedisAdapter, redis_access

__all__ = ["EVERY_HOST", "KINDS", "ONE_HOST", "ONE_PROCESS", "OTHER", "StoreKind", "adapter_for", "kind_of"]

#: How far a kind's lease reaches.
ONE_PROCESS, ONE_HOST, EVERY_HOST = "one process", "one host", "every host"


@dataclass(frozen=True)
class StoreKind:
    """One row of the table."""

    #: the kind's name (what ``inspect`` prints)
    name: str
    #: the backend classes of this kind (matched against a store's MRO)
    backends: tuple[str, ...]
    #: or every class of these top-level packages
    packages: tuple[str, ...]
    #: the ``LOCK`` that ``"auto"`` picks for it
    lock: str
    #: how far its lease reaches: :data:`ONE_PROCESS`, :data:`ONE_HOST`, :data:`EVERY_HOST`
    reach: str
    #: what the lease is, natively
    native: str


KINDS: tuple[StoreKind, ...] = (
    StoreKind(
        "redis",
        ("django.core.cache.backends.redis.RedisCache",),
        ("django_redis", "django_valkey"),
        "redis",
        EVERY_HOST,
        "Lua scripts (SET NX PX, fenced SET), pub/sub wake-up",
    ),
    StoreKind(
        "memcached",
        ("django.core.cache.backends.memcached.BaseMemcachedCache",),
        (),
        "cache",
        EVERY_HOST,
        "add(), polled",
    ),
    StoreKind(
        "database",
        ("django.core.cache.backends.db.DatabaseCache",),
        (),
        "cache",
        EVERY_HOST,
        "a lease row taken by primary key",
    ),
    StoreKind(
        "file",
        ("django.core.cache.backends.filebased.FileBasedCache",),
        (),
        "file",
        ONE_HOST,
        "a file under flock",
    ),
    StoreKind(
        "in-process",
        ("django.core.cache.backends.locmem.LocMemCache", "django.core.cache.backends.dummy.DummyCache"),
        (),
        "local",
        ONE_PROCESS,
        "none: the in-process lock",
    ),
)

#: any other backend: its ``add()`` is the lease, a lock only if atomic
OTHER = StoreKind("other", (), (), "cache", "unknown", "add(), if atomic")


def kind_of(backend: Any) -> StoreKind:
    """The kind of a store: a cache instance, its class, or a ``BACKEND``
    path (imported to read its MRO; one that does not import is
    :data:`OTHER`)."""
    cls = backend
    if isinstance(backend, str):
        from django.utils.module_loading import import_string

        try:
            cls = import_string(backend)
        except ImportError:
            return OTHER
    if not isinstance(cls, type):
        cls = type(cls)
    paths = [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]
    for kind in KINDS:
        if any(p in kind.backends for p in paths) or any(
            c.__module__.split(".")[0] in kind.packages for c in cls.__mro__
        ):
            return kind
    return OTHER


def adapter_for(
    store: Any,
    lock: str,
    lock_timeout: float,
    alias: str | None = None,
    retry_holds: bool = True,
) -> StoreAdapter:
    """Return the adapter for ``store`` (``caches[alias]``) under the ``LOCK`` option ``lock``.

    ``retry_holds``: the alias sets ``RETRY_AFTER``, so a lease may find a
    retry hold (every worker shares the alias's OPTIONS; without it none is
    ever left).

    Raises :class:`ValueError` when ``lock`` asks for what the store cannot do.
    """
    kind = kind_of(store)
    access = redis_access(store)
    if lock == "auto":
        # a Redis store whose client we cannot script leases with add()
        lock = "redis" if access is not None else ("cache" if kind.lock == "redis" else kind.lock)
    if lock == "redis":
        if access is None:
            raise ValueError(
                "LOCK 'redis' needs a Redis store (django-redis, django-valkey or "
                f"Django's RedisCache), not {class_path(store)}"
            )
        if access.cluster and access.ignore:
            store = OmittingStore(store)  # the option the cluster store does not apply
        return RedisAdapter(store, access, lock_timeout, alias or "?")
    if lock == "cache" and kind.name == "file":
        lock = "file"  # the file cache's add() is has_key() then set(): not a lock
    lease: Any = None
    if lock == "file":
        lease = FileLease
    elif lock == "cache":
        lease = DatabaseLease if kind.name == "database" else AddLease
    if kind.name == "memcached":
        store = MemcachedStore(store, alias)
    return StoreAdapter(
        store,
        lock,
        lock_timeout,
        lease,
        in_process=kind.reach == ONE_PROCESS,
        retry_holds=retry_holds,
    )
