"""One store's native asyncio client: a ``redis.asyncio`` (``valkey.asyncio``)
client per running event loop, behind a semaphore of ``MAX_CONNECTIONS``
that a coroutine waits on (up to ``TIMEOUT``), closed with its loop, forgotten
by a forked child.  :mod:`~django_dogpile.stores.redis_async` builds it from
a store's settings; :mod:`~django_dogpile.engine.bridge` reads with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from django_dogpile.stores.base import is_outage

__all__ = ["CLIENT_NAME", "NativeRedis", "PoolTimeout"]

log = logging.getLogger("django_dogpile.stores.redis_async")

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
