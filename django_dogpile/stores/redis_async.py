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

import importlib
import logging
import threading
from typing import Any

from django_dogpile.stores.native_client import CLIENT_NAME, NativeRedis, PoolTimeout
from django_dogpile.stores.pubsub import is_cluster

__all__ = ["CLIENT_NAME", "NativeRedis", "PoolTimeout", "native_for"]

log = logging.getLogger(__name__)

#: the sync pool classes whose settings an asyncio pool can take as they are
_PLAIN_POOLS = {"ConnectionPool", "BlockingConnectionPool"}

#: pool keyword arguments that name a class of the sync library (the asyncio
#: pool picks its own)
_SYNC_CLASSES = ("parser_class", "connection_class")


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
