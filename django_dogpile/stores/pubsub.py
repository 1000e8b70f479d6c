"""One subscription to one channel, on one Redis server or on a Redis Cluster.

On one server a channel is classic pub/sub (``SUBSCRIBE``/``PUBLISH``).  On
a cluster classic pub/sub floods every node, so a channel is *sharded*
(``SSUBSCRIBE``/``SPUBLISH``, Redis >= 7.0): it lives in the slot of its
name, the subscription is on the primary that serves that slot, and a
channel named by a lock key lives with the lock and its record.
:class:`Subscription` hides the difference: message types come back as
``subscribe``, ``message``, ``pong`` and ``unsubscribe`` either way.

A sharded subscription ends when its slot moves (a reshard) or its node
fails over: the server sends ``sunsubscribe``, or the connection breaks.
Either is reported (an ``unsubscribe`` message, an error) and the caller
subscribes again, on whichever node serves the slot then
(:meth:`Subscription.__init__` refreshes the slot map when asked to).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Subscription", "is_cluster", "hash_tagged", "publish"]

_TYPES = {"ssubscribe": "subscribe", "smessage": "message", "sunsubscribe": "unsubscribe"}


def is_cluster(client: Any) -> bool:
    """True if ``client`` is a redis-py ``RedisCluster`` or valkey-py ``ValkeyCluster``."""
    return any(cls.__name__ in ("RedisCluster", "ValkeyCluster") for cls in type(client).__mro__)


def hash_tagged(skey: str) -> str:
    """``skey`` as a cluster key whose derived keys share its slot.

    The record is ``{skey}``; its lock, the lock's retry hold and its
    wake-up channel append to that, so all hash to the slot of ``skey``.  A
    key that itself holds ``{`` or ``}`` would move the tag: it is tagged by
    a digest instead, ``{h:<sha1>}`` followed by the key.
    """
    if "{" not in skey and "}" not in skey:
        return "{" + skey + "}"
    import hashlib

    return "{h:" + hashlib.sha1(skey.encode(), usedforsecurity=False).hexdigest() + "}" + skey


def _node_client(cluster: Any, channel: str, refresh: bool) -> Any:
    if refresh:
        cluster.nodes_manager.initialize()
    node = cluster.get_node_from_key(channel)
    client = getattr(node, "redis_connection", None) or getattr(node, "valkey_connection", None)
    if client is None:  # a node the slot map names but has no client for yet
        cluster.nodes_manager.initialize()
        node = cluster.get_node_from_key(channel)
        client = getattr(node, "redis_connection", None) or getattr(node, "valkey_connection", None)
    return client


def publish(client: Any, channel: str, message: str) -> Any:
    """``PUBLISH`` on one server, ``SPUBLISH`` on a cluster."""
    if is_cluster(client):
        return client.spublish(channel, message)
    return client.publish(channel, message)


class Subscription:
    """A subscription to ``channel`` through ``client`` (see the module docstring)."""

    def __init__(self, client: Any, channel: str, refresh: bool = False) -> None:
        self.sharded = is_cluster(client)
        if self.sharded:
            self.pubsub = _node_client(client, channel, refresh).pubsub()
            self.pubsub.ssubscribe(channel)
        else:
            self.pubsub = client.pubsub()
            self.pubsub.subscribe(channel)

    def get_message(self, timeout: float) -> dict[str, Any] | None:
        message = self.pubsub.get_message(timeout=timeout)
        if message is not None and self.sharded:
            kind = message.get("type")
            message = {**message, "type": _TYPES.get(kind, kind)}
        return message

    def ping(self, data: str) -> None:
        self.pubsub.ping(data)

    def close(self) -> None:
        try:
            self.pubsub.close()
        except Exception:  # pragma: no cover - closing a dead connection
            pass
