"""The stores: one module per store kind (its adapter and its lease), the
table of kinds (:mod:`~django_dogpile.stores.kinds`), the near cache and
the pub/sub it and the Redis lease share.

Nothing here knows the dogpile path: the engine
(:mod:`django_dogpile.engine`) asks a store's adapter for a lease and for
its writes; the adapter speaks to the store.
"""

from django_dogpile.stores.base import AddLease, Lease, LeaseUnavailable, StoreAdapter, is_outage
from django_dogpile.stores.kinds import KINDS, StoreKind, adapter_for, kind_of
from django_dogpile.stores.memcached import MemcachedStore
from django_dogpile.stores.redis import RedisAccess, RedisAdapter, redis_access

__all__ = [
    "KINDS",
    "AddLease",
    "Lease",
    "LeaseUnavailable",
    "MemcachedStore",
    "RedisAccess",
    "RedisAdapter",
    "StoreAdapter",
    "StoreKind",
    "adapter_for",
    "is_outage",
    "kind_of",
    "redis_access",
]
