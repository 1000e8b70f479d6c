"""The near cache's bus: one pub/sub channel per store, and its listener.

Every write, delete and clear through a DogpileCache over the store is
published on the channel (by the write's own script on Redis); the listener
thread of each process evicts what it hears from its near cache.  While it
is not subscribed -- or its PINGs go unanswered for longer than
:data:`PONG_WITHIN` -- the near cache is bypassed (not ready), and emptied
when the listener subscribes again: an invalidation is never missed
silently.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from django_dogpile.stores.pubsub import Subscription, publish

__all__ = ["PING_INTERVAL", "PONG_WITHIN", "Bus"]

log = logging.getLogger(__name__)

_CLEAR = "*"


class Bus:
    """One pub/sub channel on a Redis server: publish keys, listen for them.

    The listener is one daemon thread per process and channel; it marks the
    near cache not ready whenever it is not subscribed, and empties it each
    time it subscribes again.
    """

    def __init__(
        self,
        client: Any,
        channel: str,
        near: Any,
        errors: tuple[type[BaseException], ...],
        what: str = "near cache",
    ) -> None:
        #: what the listener keeps coherent, for the log
        self.what = what
        self.client = client
        self.channel = channel
        self.near = near
        self.errors = errors
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.subscribed = threading.Event()
        #: names this process's messages: its own writes were evicted here already
        self.sender = uuid.uuid4().hex[:12]
        self.stopped = False

    def stop(self) -> None:
        """End the listener (its near cache is no longer used)."""
        self.stopped = True
        self.near.ready = False

    def start(self) -> None:
        if self.stopped:
            return
        if self.thread is not None and self.thread.is_alive() and self.pid == os.getpid():
            return
        self.pid = os.getpid()
        self.sender = uuid.uuid4().hex[:12]
        self.near.ready = False
        self.subscribed.clear()
        self.thread = threading.Thread(target=self._listen, name=f"dogpile-near {self.channel}", daemon=True)
        self.thread.start()

    def publish(self, key: str) -> None:
        try:
            publish(self.client, self.channel, f"{self.sender} {key}")
        except self.errors as exc:
            # the listeners lose their connection too, and start over empty
            log.warning("%s: could not broadcast %r (%s)", self.what, key, exc)

    def _listen(self) -> None:
        delay = 0.05
        failed = False
        while not self.stopped:
            pubsub = None
            try:
                # after a failure, on a cluster: ask which node serves the
                # channel's slot now (a failover, a reshard)
                pubsub = Subscription(self.client, self.channel, refresh=failed)
                failed = False
                self._serve(pubsub)
                delay = 0.05
            except self.errors as exc:
                if self.near.ready:
                    log.warning("%s: lost %s (%s); bypassed until it is back", self.what, self.channel, exc)
            except _Silent:
                log.warning(
                    "%s: %s answered no PING for %.1fs; bypassed, reconnecting",
                    self.what,
                    self.channel,
                    PING_INTERVAL + PONG_WITHIN,
                )
            except _Moved:
                log.warning("%s: %s moved to another node; bypassed, resubscribing", self.what, self.channel)
            except Exception:  # pragma: no cover - never let the listener die silently
                log.exception("%s: listener on %s failed; restarting", self.what, self.channel)
            failed = True
            self.near.ready = False
            self.subscribed.clear()
            self.near.drop_all()
            if pubsub is not None:
                pubsub.close()
            if self.stopped:
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _serve(self, pubsub: Subscription) -> None:
        """Read the subscribed connection until it fails or goes silent.

        A connection a middlebox dropped without a reset (a NAT or load
        balancer's idle timeout) raises nothing: reads just never return.
        So the listener PINGs every ``PING_INTERVAL`` seconds on the
        subscribed connection itself; TCP keeps order, so a PONG proves that
        every message published before the PING has arrived.  While a PONG
        is over ``PONG_WITHIN`` late, the near cache is bypassed (it may be
        missing invalidations); a PONG that comes after all restores it with
        nothing lost; one still missing a further ``PING_INTERVAL`` later
        ends the connection (:class:`_Silent`), and the listener starts over.
        """
        near = self.near
        sent = 0.0  # when the PING in flight was sent (0: none in flight)
        last = time.monotonic()  # last time the connection proved alive
        while not self.stopped:
            message = pubsub.get_message(timeout=_POLL)
            now = time.monotonic()
            if message is None:
                if sent:
                    late = now - sent
                    if late > PONG_WITHIN and near.ready:
                        near.ready = False  # may miss invalidations: bypass
                    if late > PONG_WITHIN + PING_INTERVAL:
                        raise _Silent()
                elif now - last >= (PING_INTERVAL if self.subscribed.is_set() else _POLL * 4):
                    pubsub.ping(_PING)  # raises at once on a closed connection
                    sent = now
                continue
            kind = message.get("type")
            last = now
            if kind == "pong":
                if sent and self.subscribed.is_set() and not near.ready:
                    near.ready = True  # nothing was missed: TCP keeps order
                sent = 0.0
            elif kind == "subscribe":
                near.drop_all()
                near.ready = True
                self.subscribed.set()
            elif kind == "unsubscribe":
                raise _Moved()  # a sharded channel's slot moved (reshard, failover)
            elif kind == "message":
                data = message["data"]
                sender, _, key = (data.decode() if isinstance(data, bytes) else str(data)).partition(" ")
                if sender == self.sender:
                    continue
                if key == _CLEAR:
                    near.drop_all()
                else:
                    near.evict(key)


class _Silent(Exception):
    """The subscribed connection answered no PING in time."""


class _Moved(Exception):
    """The server ended a sharded subscription: its slot moved."""


#: seconds between the listener's PINGs on its subscribed connection
PING_INTERVAL = 0.5
#: seconds a PONG may take before the near cache is bypassed
PONG_WITHIN = 0.5
_POLL = 0.1
_PING = "dogpile-near"
