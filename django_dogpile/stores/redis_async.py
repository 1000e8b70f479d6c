"""Native asyncio reads on the Redis stores we script: no thread per call.

:func:`native_for` builds, from the store's own settings, what
:mod:`~django_dogpile.engine.bridge` reads with on the event loop: a
``redis.asyncio`` (``valkey.asyncio``) client per running loop, on a pool of
at most ``ASYNC_POOL["MAX_CONNECTIONS"]`` connections that a coroutine waits
for (up to ``ASYNC_POOL["TIMEOUT"]`` s; a semaphore before the pool: 8%
cheaper per call than ``BlockingConnectionPool``), records decoded by the
store's own decoder, so the loop reads exactly what the store's ``get`` returns.

One pool per event loop (its connections belong to the loop that opened
them), closed when its loop shuts down (``asyncio.run``, ``async_to_sync``,
uvicorn: ``shutdown_asyncgens`` ends the async generator that owns it).  A loop closed
without that leaves its connections to the garbage collector; the next pool
made drops every pool of a closed loop first.

Which stores: django-redis and django-valkey's default client (one server,
or a primary and replicas: everything is read from the primary, as the
scripts write there), Django's ``RedisCache`` (its first ``LOCATION``), and
django-valkey's cluster store (a ``valkey.asyncio`` cluster client per loop,
at most ``MAX_CONNECTIONS`` per node).  Sentinel, shard and herd clients, a
custom pool or connection class, and settings we cannot read get ``None``:
their ``a*`` calls hop to a thread, as before.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from django_dogpile.stores.base import is_outage
from django_dogpile.stores.pubsub import is_cluster

__all__ = ["CLIENT_NAME", "NativeRedis", "PoolTimeout", "native_for"]

log = logging.getLogger(__name__)

#: seconds the loop leaves the store to the thread path after an outage
#: error (so a down server costs one connect timeout per second, not two per call)
_BACK_OFF = 1.0

#: the name the native connections give themselves (``CLIENT SETNAME``),
#: unless the store's settings name them
CLIENT_NAME = "django_dogpile.async"

#: store keys memoized per reader (the native path runs only on plain keys)
_RAW_KEYS = 10_000


class PoolTimeout(Exception):
    """No connection of ``ASYNC_POOL`` came free within its ``TIMEOUT``
    (the call then takes the thread path)."""


#: the sync pool classes whose settings an asyncio pool can take as they are
_PLAIN_POOLS = {"ConnectionPool", "BlockingConnectionPool"}

#: pool keyword arguments that name a class of the sync library (the asyncio
#: pool picks its own)
_SYNC_CLASSES = ("parser_class", "connection_class")


class NativeRedis:
    """One store's asyncio client, one per running event loop."""

    def __init__(
        self,
        name: str,
        make_pool: Callable[[], Any],
        make_client: Callable[[Any], Any],
        raw_key: Callable[[str], str],
        decode: Callable[[Any], Any],
        errors: tuple[type[BaseException], ...],
        size: int = 50,
        wait: float = 5.0,
        cluster: bool = False,
    ) -> None:
        self.name = name
        #: a Redis Cluster client (it routes each key to its slot's primary)
        self.cluster = cluster
        self._make_pool = make_pool
        self._make_client = make_client
        self._raw_key = raw_key
        self._raw_keys: dict[str, str] = {}
        self.decode = decode
        self.errors = errors + (PoolTimeout,)
        self.size, self.wait = size, wait
        #: loop -> (client, its owner, the semaphore of its connections)
        self._clients: dict[Any, tuple[Any, Any, Any]] = {}
        self._mutex = threading.Lock()
        self._down_until = 0.0
        _every.add(self)

    # --- per loop -----------------------------------------------------------

    @property
    def usable(self) -> bool:
        """False for a second after an outage error (the thread path serves)."""
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        """An error reading natively: an outage backs off (the caller then
        takes the thread path, which applies ``IGNORE_EXCEPTIONS``)."""
        if is_outage(exc):
            self._down_until = time.monotonic() + _BACK_OFF
            log.debug("%s: async read failed (%s); thread path for %ss", self.name, exc, _BACK_OFF)

    def raw_key(self, skey: str) -> str:
        """The store's own key of ``skey`` (memoized: the keys are plain)."""
        found = self._raw_keys.get(skey)
        if found is None:
            if len(self._raw_keys) >= _RAW_KEYS:
                self._raw_keys.clear()
            found = self._raw_keys[skey] = self._raw_key(skey)
        return found

    async def _made(self, loop: Any) -> tuple[Any, Any, Any]:
        """The running loop's client, made with its pool on first use."""
        with self._mutex:
            for other in [other for other in self._clients if other.is_closed()]:
                _abandon(self._clients.pop(other)[0])  # closed without shutdown_asyncgens
            client = self._make_client(self._make_pool())
            owner = self._own(loop, client)
            found = self._clients[loop] = (client, owner, asyncio.Semaphore(self.size))
        await owner.__anext__()  # runs to its yield: the loop now tracks it
        return found

    async def _call(self, name: str, *args: Any) -> Any:
        """``client.<name>(*args)`` on the running loop's pool, waiting (up
        to ``TIMEOUT``) while all its connections are in use."""
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop) or await self._made(loop)
        client, _, free = found
        if free.locked():
            try:
                await asyncio.wait_for(free.acquire(), self.wait)
            except asyncio.TimeoutError:
                raise PoolTimeout(
                    f"{self.name}: no connection free within {self.wait}s (ASYNC_POOL)"
                ) from None
        else:
            await free.acquire()
        try:
            return await getattr(client, name)(*args)
        finally:
            free.release()

    async def _own(self, loop: Any, client: Any) -> AsyncIterator[None]:
        """Holds ``client`` for ``loop``; ended by the loop's ``shutdown_asyncgens``."""
        try:
            yield
        finally:
            with self._mutex:
                if self._clients.get(loop, (None,))[0] is client:
                    del self._clients[loop]
            if self.cluster:
                await client.aclose()
            else:
                await client.aclose(close_connection_pool=True)

    @property
    def loops(self) -> int:
        """How many loops hold a pool now (the tests count them)."""
        return len(self._clients)

    # --- reads --------------------------------------------------------------

    async def get(self, skey: str, missing: Any) -> Any:
        """The record of ``skey`` as the store's ``get`` returns it, or ``missing``."""
        value = await self._call("get", self.raw_key(skey))
        return missing if value is None else self.decode(value)

    async def get_many(self, skeys: list[str]) -> dict[str, Any]:
        """``skeys`` that exist -> their records: one ``MGET``."""
        # a cluster's records lie in many slots: one MGET per node it holds
        values = await self._call(
            "mget_nonatomic" if self.cluster else "mget", [self.raw_key(s) for s in skeys]
        )
        return {s: self.decode(v) for s, v in zip(skeys, values) if v is not None}

    async def exists(self, skey: str) -> bool:
        """True if the store holds the key ``skey`` (a lease's lock)."""
        return bool(await self._call("exists", self.raw_key(skey)))

    async def pttl(self, skey: str) -> int:
        """Milliseconds ``skey`` has left: -2 gone, -1 no expiry (a lease's lock)."""
        return int(await self._call("pttl", self.raw_key(skey)))


#: every native reader of this process, so a forked child forgets the
#: parent's pools (their sockets are the parent's; the child makes its own)
_every: weakref.WeakSet[NativeRedis] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for native in list(_every):
        native._clients = {}
        native._mutex = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _abandon(client: Any) -> None:
    """Close the sockets of a pool whose loop closed without shutting it
    down: no coroutine can run there any more, so the sockets are closed
    where they lie (else each would wait for the garbage collector)."""
    if hasattr(client, "nodes_manager"):  # a cluster: each node holds its own connections
        nodes = [*client.nodes_manager.nodes_cache.values(), *client.nodes_manager.startup_nodes.values()]
        conns = [conn for node in nodes for conn in getattr(node, "_connections", ())]
    else:
        pool = client.connection_pool
        conns = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
    for conn in conns:
        transport: Any = getattr(getattr(conn, "_writer", None), "transport", None)
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            sock.close()
            transport._sock, transport._closing = None, True
        conn._writer = conn._reader = None


def _pool_settings(store: Any, package: str) -> tuple[str, dict[str, Any]] | None:
    """``(url, pool kwargs)`` of the store's primary, as its sync pool is
    made, or None when the client is not one we can mirror."""
    client = store.client if hasattr(store, "client") else None
    names = {c.__name__ for c in type(client).__mro__} if client is not None else set()
    if client is not None and hasattr(client, "connection_factory"):  # django-redis / valkey
        if names & {"ShardClient", "HerdClient", "SentinelClient"} or is_cluster(
            client.get_client(write=True)
        ):
            return None
        factory = client.connection_factory
        if type(factory).__name__ != "ConnectionFactory" or factory.pool_cls.__name__ not in _PLAIN_POOLS:
            return None  # Sentinel, or a pool of the site's own
        params = factory.make_connection_params(client._server[0])
        params.update(factory.pool_cls_kwargs)
        return params.pop("url"), params
    inner = getattr(store, "_cache", None)
    if inner is not None and hasattr(inner, "_pool_options") and package == "redis":  # Django's
        if inner._pool_class.__name__ not in _PLAIN_POOLS:
            return None
        return inner._servers[0], dict(inner._pool_options)
    return None


def native_for(adapter: Any, store: Any, alias: str, pool: tuple[int, float] | None) -> NativeRedis | None:
    """The native reader of ``store`` (``caches[alias]``) for its adapter (a
    :class:`~django_dogpile.stores.redis.RedisAdapter`; any other: None), or
    None (see the module docstring).  ``pool``: ``ASYNC_POOL``'s
    ``(MAX_CONNECTIONS, TIMEOUT)``, or None when the option is off.

    One reader per store alias and settings in the process: Django's
    ``caches`` is per context, so each ASGI request builds its own backend,
    and a reader (with its pools) per backend would cost a connection per
    request.  The alias is in the key because two aliases on one server may
    decode differently (a compressor, a serializer)."""
    access = getattr(adapter, "access", None)
    if pool is None or access is None:
        return None
    package = "valkey" if "valkey" in access.name else "redis"
    if access.cluster:
        return _cluster_reader(access, adapter, store, alias, package, pool)
    try:
        found = _pool_settings(store, package)
    except Exception as exc:  # a client we do not know: stay on the thread path
        log.debug("%s: no native async client (%s)", access.name, exc)
        return None
    if found is None:
        return None
    url, params = found
    lib = importlib.import_module(f"{package}.asyncio")
    for name in _SYNC_CLASSES:
        sync_class = params.pop(name, None)
        if name == "connection_class" and sync_class is not None:
            # the asyncio twin of the store's class (TLS, a unix socket), or none we know
            twin = getattr(lib, getattr(sync_class, "__name__", ""), None)
            if twin is None:
                return None
            params[name] = twin
    url = _without_pool_arguments(url)
    params.setdefault("client_name", CLIENT_NAME)  # CLIENT LIST tells these from the rest
    size, wait = pool
    params["max_connections"] = size  # never reached: the semaphore waits first
    params.pop("timeout", None)
    client_class = lib.Valkey if package == "valkey" else lib.Redis

    def make_pool() -> Any:
        return lib.ConnectionPool.from_url(url, **params)

    try:  # a connection made with the store's settings (no I/O): they must fit
        make_pool().make_connection()
    except Exception as exc:
        log.debug("%s: no native async client (%s)", access.name, exc)
        return None
    from django.conf import settings

    # the alias's settings too: its serializer and compressor decode the records
    shared = (
        alias,
        repr(settings.CACHES.get(alias)),
        package,
        url,
        repr(sorted(params.items(), key=str)),
        adapter.raw_key("k"),
        pool,
    )
    with _shared_mutex:
        reader = _shared.get(shared)
        if reader is None:
            reader = _shared[shared] = _reader(access, adapter, make_pool, client_class, size, wait)
    return reader


def _without_pool_arguments(url: str) -> str:
    """``url`` without the pool's own query arguments (``timeout``,
    ``max_connections``): ``ASYNC_POOL`` sets those, and a connection given
    ``timeout`` refuses it."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _POOL_ARGUMENTS]
    return urlunsplit(parts._replace(query=urlencode(kept)))


_POOL_ARGUMENTS = {"timeout", "max_connections"}

_shared: dict[Any, NativeRedis] = {}
_shared_mutex = threading.Lock()


def _cluster_settings(store: Any, package: str) -> tuple[str, dict[str, Any]] | None:
    """``(url, client kwargs)`` of django-valkey's cluster store, or None:
    its sync client is made from the URL and ``BASE_CLIENT_KWARGS``; the
    socket timeouts and password of its OPTIONS are taken too (the sync
    cluster client leaves them out, an outage should not wait longer here)."""
    client: Any = getattr(store, "client", None)
    factory = getattr(client, "connection_factory", None)
    if factory is None or type(factory).__name__ != "ClusterConnectionFactory" or package != "valkey":
        return None
    params = factory.make_connection_params(client._server[0])
    params.pop("parser_class", None)
    params.update(factory.base_client_cls_kwargs)
    return params.pop("url"), params


def _cluster_reader(
    access: Any, adapter: Any, store: Any, alias: str, package: str, pool: tuple[int, float]
) -> NativeRedis | None:
    """The native reader of a Redis Cluster store: a ``valkey.asyncio``
    cluster client per loop, at most ``MAX_CONNECTIONS`` per node."""
    try:
        found = _cluster_settings(store, package)
    except Exception as exc:
        log.debug("%s: no native async client (%s)", access.name, exc)
        return None
    if found is None:
        return None
    url, params = found
    params.setdefault("client_name", CLIENT_NAME)
    size, wait = pool
    lib = importlib.import_module(f"{package}.asyncio.cluster")
    cluster_class = lib.ValkeyCluster
    try:  # the settings must fit the asyncio client (made with no I/O)
        cluster_class.from_url(url, max_connections=size, **params)
    except Exception as exc:
        log.debug("%s: no native async client (%s)", access.name, exc)
        return None
    from django.conf import settings

    shared = (alias, repr(settings.CACHES.get(alias)), "cluster", url, repr(params), pool)
    with _shared_mutex:
        reader = _shared.get(shared)
        if reader is None:
            reader = _shared[shared] = NativeRedis(
                access.name,
                lambda: None,
                lambda _: cluster_class.from_url(url, max_connections=size, **params),
                adapter.raw_key,
                access.decode,
                access.errors,
                size,
                wait,
                cluster=True,
            )
    return reader


def _reader(
    access: Any, adapter: Any, make_pool: Any, client_class: Any, size: int, wait: float
) -> NativeRedis:
    return NativeRedis(
        access.name,
        make_pool,
        lambda made: client_class(connection_pool=made),
        adapter.raw_key,
        access.decode,
        access.errors,
        size,
        wait,
    )
