"""A TCP proxy on loopback that can go silent like a middlebox.

A NAT, load balancer or firewall that drops an idle flow sends no reset: the
client's socket stays open and every read just never returns.
:meth:`Proxy.freeze_subscribers` does that to every flow that has sent a
``SUBSCRIBE`` (the idle pub/sub connection): from then on nothing is
forwarded either way and nothing is closed.  New flows (a listener
reconnecting, ordinary commands) are forwarded as usual.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from tests.helpers.redis_server import free_port


class _Flow:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.subscriber = False
        self.frozen = threading.Event()


class Proxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target``; :meth:`close` ends it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.flows: list[_Flow] = []
        #: every chunk a client sent, in order (to count commands)
        self.sent: list[bytes] = []
        self._lock = threading.Lock()
        self._closed = False
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True, name="test-proxy").start()

    def lines(self, *verbs: bytes) -> list[bytes]:
        """The text-protocol command lines clients sent that start with one
        of ``verbs`` (memcached: ``b"get"``, ``b"set"``...)."""
        return [line for line in b"".join(self.sent).split(b"\r\n") if line.split(b" ", 1)[0] in verbs]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            flow = _Flow(client, upstream)
            with self._lock:
                self.flows.append(flow)
            for src, dst, watch in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(flow, src, dst, watch), daemon=True).start()

    def _pump(self, flow: _Flow, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        src.settimeout(0.05)
        while not self._closed:
            if flow.frozen.is_set():
                time.sleep(0.05)  # silent: read nothing, forward nothing, close nothing
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if watch:
                self.sent.append(data)
                if b"SUBSCRIBE" in data.upper():
                    flow.subscriber = True
            if flow.frozen.is_set():
                continue  # went silent while this was in flight: it is lost
            try:
                dst.sendall(data)
            except OSError:
                break
        if not flow.frozen.is_set():
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def freeze_subscribers(self) -> int:
        """Make every pub/sub flow silent; return how many there were."""
        with self._lock:
            frozen = [f for f in self.flows if f.subscriber and not f.frozen.is_set()]
        for flow in frozen:
            flow.frozen.set()
        return len(frozen)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        with self._lock:
            flows = list(self.flows)
        for flow in flows:
            for sock in (flow.client, flow.upstream):
                try:
                    sock.close()
                except OSError:
                    pass


#: what a memcached client sends (the text protocol's verbs, and the meta ones)
MEMCACHED_VERBS = (b"get", b"gets", b"set", b"add", b"delete", b"touch", b"mg", b"ms", b"md")


@contextlib.contextmanager
def counted_memcached(port: int) -> Iterator[Proxy]:
    """``CACHES`` with ``mc_counted`` (memcached on ``port`` through a
    :class:`Proxy`) and ``dp_mc_counted`` (a DogpileCache over it), for
    counting the commands an operation sends (:meth:`Proxy.lines`)."""
    from django.conf import settings
    from django.test import override_settings

    proxy = Proxy(port)
    extra = {
        "mc_counted": {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": f"127.0.0.1:{proxy.port}",
        },
        "dp_mc_counted": {"BACKEND": "django_dogpile.cache.DogpileCache", "LOCATION": "mc_counted"},
    }
    try:
        with override_settings(CACHES={**settings.CACHES, **extra}):
            yield proxy
    finally:
        proxy.close()


def one_multi_get(proxy: Proxy, keys: int) -> bool:
    """True if the client sent exactly one command: a ``get`` of ``keys`` keys."""
    sent = proxy.lines(*MEMCACHED_VERBS)
    return len(sent) == 1 and sent[0].startswith(b"get ") and sent[0].count(b" ") == keys
