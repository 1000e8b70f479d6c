"""The demo's ASGI application for benchmarks/pages.py ``--asgi``: each
worker counts what it served.

gunicorn's ``post_request`` hook (``benchmarks/gunicorn_served.py``) runs in
its sync workers only; under ``uvicorn_worker.UvicornWorker`` this wrapper
counts instead: once a response is sent (or the client went away: wrk
stopping drops the requests in flight, and uvicorn cancels them), the
request, whether its status was not 2xx, and whether it was cancelled
before its answer started (its store reads may be none, some or all: the
tests bound the reads per request by these), in a 24-byte file per worker mapped into memory, whose first 16 bytes are
as ``benchmarks/gunicorn_served.py``'s: ``benchmarks.page_servers.served``
sums them, and ``cancelled`` the rest.  The file is made when a worker imports
this module (gunicorn imports the application in each worker), so every
worker is counted from its start.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

from testproject.asgi import application as django_application

_FORMAT = "<QQQ"  # served, not 2xx, cancelled before an answer (of the served)


def _open() -> mmap.mmap:
    path = os.path.join(os.environ["PAGES_SERVED_DIR"], str(os.getpid()))
    with open(path, "wb+") as f:
        f.write(bytes(struct.calcsize(_FORMAT)))
        f.flush()
        return mmap.mmap(f.fileno(), 0)


_counts = _open()
_state = [0, 0, 0]  # as _FORMAT (one event loop per worker: no lock)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await django_application(scope, receive, send)
        return
    status = 0

    async def counted(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await django_application(scope, receive, counted)
    finally:
        _state[0] += 1
        if not status:  # the client left before any answer
            _state[2] += 1
        elif not 200 <= status < 300:
            _state[1] += 1
        struct.pack_into(_FORMAT, _counts, 0, *_state)
