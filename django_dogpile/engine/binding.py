"""What a :class:`~django_dogpile.cache.DogpileCache` is bound to.

A :class:`Binding` is the backend's store (the ``LOCATION`` alias, connected
on first use, with the adapter :mod:`django_dogpile.stores.kinds` picks for
it), how a key becomes a *store key* (the key this backend hands the store),
how a timeout becomes a freshness, the key's lock (in-process, then the
store's lease) and the counters of the alias.  The backend holds one; the
dogpile path (:mod:`~django_dogpile.engine.path`) and the writes
(:mod:`~django_dogpile.engine.writes`) work through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import pickle
import random
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, memcache_key_warnings
from django.core.exceptions import ImproperlyConfigured

from django_dogpile import records
from django_dogpile.conf import (
    BackendOptions,
    ConfigError,
    aliases_set_as,
    find_alias,
    improperly_configured,
    timeout_argument,
)
from django_dogpile.engine import connections
from django_dogpile.engine.budget import budget_for
from django_dogpile.engine.locks import KeyMutex, key_lock
from django_dogpile.engine.shared_stats import start_publishing
from django_dogpile.engine.tags import Tags, bubble
from django_dogpile.exceptions import UncacheableValue, WaitTimeout
from django_dogpile.records import EXPIRES, INVALIDATED, MISSING, STAMP, is_record
from django_dogpile.stats import KeyStats, Stats, key_stats_for, stats_for
from django_dogpile.stores import StoreAdapter, adapter_for, near
from django_dogpile.stores.base import plain_keys
from django_dogpile.stores.pubsub import hash_tagged
from django_dogpile.stores.redis_async import NativeRedis, native_for

__all__ = ["LOCK_SUFFIX", "Binding"]

#: the lock of a store key is the key + this (its retry hold: + ":retry")
LOCK_SUFFIX = ":dogpile-lock"
_KEY_MEMO_SIZE = 4096  # store keys remembered per backend instance
#: the longest suffix the wrapper adds to a store key (a lock's retry hold)
_LONGEST_SUFFIX = LOCK_SUFFIX + ":retry"
#: memcached's limit on a key, in bytes (Django warns at 250 characters)
_MAX_KEY_BYTES = 250
#: called with (alias, counter, key) for each count of a key (the toolbar panel's)
counted: Callable[[str, str, Any], None] | None = None


class Binding:
    """One backend's store, keys, lock and counters (see the module docstring).

    :param backend: the backend: its own ``make_key`` (``KEY_PREFIX``,
     ``VERSION``, ``KEY_FUNCTION``) and ``validate_key`` make the store keys.
    """

    def __init__(
        self,
        location: str,
        params: dict[str, Any],
        options: BackendOptions,
        default_timeout: float | None,
        backend: BaseCache,
        config_error: ConfigError | None = None,
    ) -> None:
        self.location = location
        #: the settings as Django passed them (they tell which alias this is)
        self.params = params
        self.options = options
        self.default_timeout = default_timeout
        self.make_key = backend.make_key
        self.validate_key = backend.validate_key
        self._key_parts = (backend.key_func, backend.key_prefix, backend.version)
        self._plain_backend, self._backend_class = plain_keys(backend), type(backend)
        #: a bad setting, raised on first use naming the alias (``manage.py
        #: check`` reports it as its id)
        self.config_error = config_error
        #: the store as this backend uses it (a near cache in front, ...);
        #: None until the first use connects
        self.connected: BaseCache | None = None
        self.adapter: StoreAdapter = None  # type: ignore[assignment]  # set by connect()
        #: user key (or ``(key, version)``) -> store key, for str keys
        self.memo: dict[Any, str] = {}
        #: both aliases make keys as Django does (then memos by store key are sound)
        self.plain_keys = False
        #: the store's native asyncio reads (``ASYNC_POOL``), or None: the
        #: ``a*`` methods hop to a thread (:mod:`~django_dogpile.engine.bridge`)
        self.native: NativeRedis | None = None
        self.early_refresh = options.early_refresh
        #: the tag versions (:mod:`~django_dogpile.engine.tags`)
        self.tags = Tags(self)
        #: ``REGENERATION_BUDGET`` (:mod:`~django_dogpile.engine.budget`)
        self.budget = budget_for(self, options.regeneration_budget)
        self.alias = ""
        self.rename(find_alias(location, params))

    # --- the alias and its counters -----------------------------------------

    def rename(self, alias: str) -> None:
        """Count, signal and publish as ``alias``."""
        self.alias = alias
        self.stats: Stats = stats_for(alias)
        self.hit = self.stats.hit
        self.keys: KeyStats | None = (
            key_stats_for(alias, self.options.key_stats) if self.options.key_stats else None
        )

    def count(self, name: str, key: Any) -> None:
        self.stats.incr(name)
        if self.keys is not None:
            self.keys.incr(key, name)
        if counted is not None:
            counted(self.alias, name, key)

    def settle_alias(self) -> None:
        """Two aliases set alike: take the one ``caches`` holds this backend as."""
        found = aliases_set_as(self.location, self.params)
        if len(found) < 2:
            return
        connections = getattr(caches, "_connections", None)
        for alias in found:
            backend = getattr(connections, alias, None)
            if getattr(backend, "binding", None) is self:
                if alias != self.alias:
                    self.rename(alias)
                return

    # --- the store ----------------------------------------------------------

    @property
    def store(self) -> BaseCache:
        """The wrapped cache (``caches[LOCATION]``, as this backend uses it)."""
        store = self.connected
        if store is None:
            store = self.connect()
        return store

    def connect(self) -> BaseCache:
        self.settle_alias()  # every error names the alias
        if self.config_error is not None:
            raise improperly_configured(self.config_error, f"DogpileCache {self.alias!r}")
        if self.location not in settings.CACHES:
            raise ImproperlyConfigured(
                f"DogpileCache {self.alias!r}: LOCATION {self.location!r} is not a "
                f"cache alias; configured aliases: {', '.join(settings.CACHES)}. "
                "[django_dogpile.E001]"
            )
        key = connections.key_of(self.location, self.params, self._backend_class)
        made = connections.find(key) or connections.keep(key, self._build())
        self.plain_keys = self._plain_backend and made.plain_keys  # our own key function's say
        self.native, self.memo = (made.native, made.memo) if self.plain_keys else (None, self.memo)
        self.tags.connect(made.adapter, made.raw)
        self.adapter = made.adapter
        self.connected = made.adapter.store  # its view: memcached's whole seconds, a near cache
        start_publishing(self.alias)
        return self.connected

    def _build(self) -> connections.Connected:
        """A new connection to the store (see :mod:`~django_dogpile.engine.connections`)."""
        store = caches[self.location]
        if isinstance(getattr(store, "binding", None), Binding):
            raise ImproperlyConfigured(
                f"DogpileCache {self.alias!r}: LOCATION {self.location!r} is a "
                "DogpileCache itself; point it at the alias that holds the data. "
                "[django_dogpile.E002]"
            )
        try:
            adapter = adapter_for(
                store,
                self.options.lock,
                self.options.lock_timeout,
                self.location,
                retry_holds=bool(self.options.retry_after),
            )
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"DogpileCache {self.alias!r}: {exc} ({self.location!r}). [django_dogpile.E009]"
            ) from None
        # Memos of store keys are sound only while a key is the same string
        # for every request: a KEY_FUNCTION may read the request (a tenant).
        plain = self._plain_backend and plain_keys(store)
        native = None
        if plain and self.options.near_cache is None:  # a near miss fills it in a thread
            native = native_for(adapter, adapter.store, self.location, self.options.async_pool)
        front: Any
        if self.options.near_cache is not None:
            front = near.near_store(
                self.location,
                adapter.store,
                self.options.near_cache,
                adapter,
                plain,
            )
        else:
            # no near cache of our own: still evict this process's others
            front = near.EvictingStore(adapter.store, self.location, plain)
        raw = adapter.store
        adapter.store = front
        adapter.wrote = front.wrote
        return connections.Connected(raw, adapter, plain, native)

    def ident(self, skey: str) -> tuple[str, str]:
        """What identifies the record ``skey`` in this process's memory.

        The store's own key (its ``KEY_FUNCTION`` may put a tenant in it),
        with the store alias: every per-process memo -- the in-process
        lock and what it hands over, outage fallbacks, retry holds, the
        async in-flight table, the page memos -- is keyed by it, so no
        memo made for one tenant is ever found for another.
        """
        store = self.connected or self.store
        return (self.location, skey if self.plain_keys else str(store.make_key(skey)))

    # --- keys and timeouts --------------------------------------------------

    def store_key(self, key: Any, version: int | None = None) -> str:
        """The store key of ``key``: made and validated as Django's backends do.

        ``CacheKeyWarning`` as from Django's own backends.  The store sees
        that key unless its own prefixing would make it (or its lock key)
        one the store warns about or rejects: then a fixed-length digest of
        it.  So a key Django accepts never fails in a memcached store
        because of the wrapper, and no call warns twice.
        """
        memo_key: Any = None
        if type(key) is str:
            memo_key = key if version is None else (key, version)
            found = self.memo.get(memo_key)
            if found is not None:
                return found
        made = self.make_key(key, version=version)
        self.validate_key(made)
        clean = not any(memcache_key_warnings(made))
        skey = self._for_store(made, clean)
        # Remember keys that passed cleanly (a bad key warns on every call,
        # as with Django's backends); str keys only, (key, version) when a
        # version is given; and only while both key functions are Django's
        # (another may read the request: a tenant's key is not another's).
        if clean and memo_key is not None and self.plain_keys:
            memo = self.memo
            if len(memo) >= _KEY_MEMO_SIZE:
                memo.clear()
            memo[memo_key] = skey
        return skey

    def _for_store(self, made: str, clean: bool) -> str:
        store = self.store  # connected before the first key: the adapter says "cluster"
        skey = made
        if not clean or _too_long(store.make_key(made + _LONGEST_SUFFIX)):
            skey = "dogpile.h." + hashlib.sha256(made.encode()).hexdigest()
        if self.adapter.cluster:
            skey = hash_tagged(skey)  # record, lock and retry hold: one slot
        return skey

    def previous_key(self, key: Any, version: int | None = None) -> str | None:
        """The store key ``key`` had before a deploy (``PREVIOUS_VERSION``,
        ``PREVIOUS_KEY_PREFIX``); None when they are off or name this one."""
        options = self.options
        if not options.previous:
            return None
        func, prefix, default_version = self._key_parts
        now = default_version if version is None else version
        then = options.previous_version
        then = now if then is None else (now - 1 if then is True else then)
        old_prefix = prefix if options.previous_key_prefix is None else options.previous_key_prefix
        if (then, old_prefix) == (now, prefix):
            return None
        made = func(key, old_prefix, then)
        return self._for_store(made, not any(memcache_key_warnings(made)))

    def freshness(self, timeout: Any) -> float | None:
        """Seconds a value set now stays fresh (``None``: forever).

        Raises :class:`TypeError` naming the alias for anything but None or
        a number (:func:`~django_dogpile.rules.timeout_argument`; Django's
        backends fail on one with a bare arithmetic error, or silently
        treat it as forever).
        """
        if timeout is DEFAULT_TIMEOUT:
            return self.default_timeout
        if type(timeout) not in (int, float) or timeout != timeout:  # the rare case: the rule
            timeout = timeout_argument(timeout, f"DogpileCache {self.alias!r}")
        if timeout == math.inf:
            return None
        return timeout

    # --- records ------------------------------------------------------------

    def seen(self, raw: Any) -> Any:
        """``raw`` as read from the store, as its tags make it: a tagged
        record behind a tag is stale, or missing after a hard invalidation
        (:meth:`~django_dogpile.engine.tags.Tags.view`)."""
        if type(raw) is tuple and len(raw) == 5:
            return self.tags.view(raw)
        return raw

    def live(self, raw: Any, now: float) -> bool:
        """True if ``raw`` is a record still servable (fresh or stale)."""
        if not is_record(raw):
            return False
        if len(raw) == 5:
            raw = self.tags.view(raw)
            if raw is MISSING:
                return False
        expires = raw[EXPIRES]
        return expires is None or expires == INVALIDATED or now < expires + self.options.grace

    def fresh_hit(self, key: Any, raw: Any, seen: Any = MISSING) -> bool:
        """True (and counted) if ``raw`` is a record to serve as a hit now;
        ``seen``: ``raw`` as its tags make it, when already known.

        ``DogpileCache.get_or_set`` has the same test inline: the hot path.
        """
        if not is_record(raw):
            return False
        if len(raw) == 5 and (self.tags.view(raw) if seen is MISSING else seen) is not raw:
            return False  # behind a tag
        now = records.now()
        expires = raw[EXPIRES]
        if expires is None or (now < expires and not (self.early_refresh and self.early(raw, now))):
            self.hit()
            if self.keys is not None:
                self.keys.incr(key, "HIT")
            if len(raw) == 5:
                bubble(raw[STAMP])
            return True
        return False

    def early(self, raw: Any, now: float) -> bool:
        """The XFetch rule: refresh before expiry, likelier as it nears."""
        beta = self.options.early_refresh
        if not beta or raw[EXPIRES] is None:
            return False
        cost = raw[records.COST] or 0.0
        return now - cost * beta * math.log(random.random() or 1e-12) >= raw[EXPIRES]

    @contextlib.contextmanager
    def pickling(self, what: str) -> Iterator[None]:
        """Turn the store's pickling errors into :class:`UncacheableValue`."""
        try:
            yield
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise UncacheableValue(f"DogpileCache {self.alias!r}: {what} cannot be stored: {exc}") from exc

    # --- the key's lock -----------------------------------------------------

    def mutex(self, skey: str, *, exclusive: bool = False) -> KeyMutex:
        """The key's lock: for ``get_or_set``, or ``exclusive`` for a
        read-modify-write, which must hold it even when a value exists."""
        self.store  # noqa: B018 - connect: the adapter is chosen there
        factory = self.adapter.lease
        lease = factory(skey + LOCK_SUFFIX, skey) if factory else None
        return KeyMutex(
            key_lock(self.ident(skey)),
            lease,
            self.options.wait_timeout,
            None if exclusive else (lambda record: self.live(record, records.now())),
        )

    @contextlib.contextmanager
    def exclusive(self, key: Any, skey: str) -> Iterator[None]:
        """Hold the key's lock (in-process and lease) for a read-modify-write.

        ``get_or_set`` holds the same lock while it regenerates, so an
        ``incr``, ``touch``, ``invalidate`` or ``add`` over a stale value
        never interleaves with a regeneration, in any process.  A
        ``RETRY_AFTER`` retry hold does not stop it.  Raises
        :class:`WaitTimeout` if the lock stays taken past ``WAIT_TIMEOUT``.
        """
        mutex = self.mutex(skey, exclusive=True)
        try:
            mutex.acquire()
        except WaitTimeout:
            raise WaitTimeout(
                f"DogpileCache {self.alias!r}: key {key!r} stayed locked by a "
                f"regeneration for {self.options.wait_timeout}s (WAIT_TIMEOUT)"
            ) from None
        try:
            yield
        finally:
            mutex.release()


def _too_long(store_key: Any) -> bool:
    """True if memcached would refuse ``store_key`` (or Django warn about it):
    memcached counts bytes, Django's warning characters."""
    key = str(store_key)
    return any(memcache_key_warnings(key)) or len(key.encode()) > _MAX_KEY_BYTES
