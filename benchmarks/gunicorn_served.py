"""gunicorn config for benchmarks/pages.py: each worker counts what it served.

``gunicorn -c benchmarks/gunicorn_served.py ...`` with ``PAGES_SERVED_DIR``
set: after every request (gunicorn's ``post_request`` hook, which runs once
the response is written, and also when the client has gone away), the
worker counts the request, and whether its status was not 2xx, in a 16-byte
file of its own mapped into memory (no system call per request).
``benchmarks.pages.served`` sums the files.

Why not wrk's count: wrk counts the responses it read, and the requests in
flight when it stops are served (and pay their Redis reads) but not counted
by it.  Redis commands per request are divided by these counts, so they are
exact.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

_FORMAT = "<QQ"  # served, not 2xx
_state: list[Any] = []  # [mmap, served, not_2xx], in each worker


def post_worker_init(worker: Any) -> None:
    path = os.path.join(os.environ["PAGES_SERVED_DIR"], str(os.getpid()))
    with open(path, "wb+") as f:
        f.write(bytes(struct.calcsize(_FORMAT)))
        f.flush()
        _state[:] = [mmap.mmap(f.fileno(), 0), 0, 0]


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    state = _state
    state[1] += 1
    code = getattr(resp, "status_code", None)
    if code is None or not 200 <= code < 300:
        state[2] += 1
    struct.pack_into(_FORMAT, state[0], 0, state[1], state[2])
