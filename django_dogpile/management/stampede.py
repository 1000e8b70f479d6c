"""``manage.py dogpile stampede``: concurrent clients on a page you own.

How the view runs are counted, from the responses alone (any site, either
face): a cached page is replayed byte for byte with the headers it was made
with, so each run of the view makes a new *page* -- its body, ``Expires``
(set when Django's ``cache_page`` or ``dogpile_cache_page`` stores it),
``Last-Modified``, ``ETag`` and the ``--run-header`` if given.  ``runs`` is
the number of distinct pages among the responses.  Headers made per
request (``Date``, ``Age``, the status header, cookies) are left out.  It is
exact when each run's page differs (a counter or a fine timestamp in the
page, or a ``--run-header``); when every body is the same, runs are told
apart only by ``Expires``, to the second, so it is a lower bound (``>=N``);
with neither, nothing tells runs apart (``?``).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import CommandError

#: the headers a cached page keeps from the run that made it
PAGE_HEADERS = ("Expires", "Last-Modified", "ETag")
OWN_FLAG = "--i-own-this-host"


def check_target(url: str, own_host: bool) -> None:
    """Refuse ``url`` unless its host resolves to loopback addresses only,
    or the user said (``--i-own-this-host``) that the host is theirs."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(f"{url}: not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (ValueError, OSError) as exc:
        raise CommandError(f"{url}: cannot resolve {parts.hostname!r}: {exc}") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    outside = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if outside and not own_host:
        raise CommandError(
            f"{url}: {parts.hostname} resolves to {', '.join(outside)}, not a loopback address. "
            f"stampede loads only hosts you own: pass {OWN_FLAG} if this host is yours."
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed (it could leave the checked host): it
    comes back as an HTTPError and counts as a failed request."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener() -> urllib.request.OpenerDirector:
    # ProxyHandler({}): never through an http_proxy of the environment
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


@dataclass
class Result:
    """What one URL's stampede saw."""

    url: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    pages: set[tuple[str, ...]] = field(default_factory=set)
    bodies: set[str] = field(default_factory=set)
    run_header: str | None = None
    stamped: bool = False  # some response carried Expires, Last-Modified or ETag
    run_seen: bool = False  # some response carried the run header

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        return sum(self.failures.values())

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies) or [0.0]
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def runs(self) -> str:
        """The view runs seen (see the module's docstring)."""
        if not self.pages:
            return "-"
        if self.run_seen or len(self.bodies) > 1:
            return str(len(self.pages))
        return f">={len(self.pages)}" if self.stamped else "?"

    def notes(self, clients: int) -> list[str]:
        """What the reader of ``runs`` should know about this URL."""
        if not self.pages:
            return []
        out = []
        if self.run_header and not self.run_seen:
            out.append(f"{self.url}: no response carried {self.run_header}")
        runs = self.runs
        if runs == "?":
            out.append(
                f"{self.url}: every response was the same page, with no Expires, Last-Modified "
                "or ETag: nothing tells one run from another"
            )
        elif runs.startswith(">="):
            out.append(
                f"{self.url}: every body was the same: runs told apart by Expires, to the "
                "second (a lower bound); a --run-header set per run counts them exactly"
            )
        ok = self.requests - self.errors
        if len(self.pages) == ok and ok > 2 * clients:
            out.append(
                f"{self.url}: every response was a different page: it is not cached, "
                "or something outside the cache changes each response"
            )
        return out


def stampede(
    url: str,
    clients: int,
    duration: float,
    header: str,
    rate: float = 0.0,
    run_header: str | None = None,
    timeout: float = 30.0,
) -> Result:
    """``clients`` threads request ``url`` for ``duration`` seconds; with
    ``rate``, each at most ``rate`` requests per second, the clients spread
    evenly over one interval; without, each sends its next request as soon
    as it has the answer."""
    result = Result(url, run_header=run_header)
    lock = threading.Lock()
    opener = _opener()
    begin = time.monotonic()
    stop = begin + duration
    interval = 1 / rate if rate > 0 else 0.0

    def client(n: int) -> None:
        next_at = begin + interval * n / clients
        while True:
            now = time.monotonic()
            if next_at > now:
                time.sleep(max(0.0, min(next_at, stop) - now))
            started = time.monotonic()
            if started >= stop:
                return
            next_at = max(next_at, started) + interval  # a ceiling: no catching up
            page: tuple[str, ...] = ()
            status = failure = None
            try:
                with opener.open(url, timeout=timeout) as response:
                    body = hashlib.blake2b(response.read(), digest_size=16).hexdigest()
                    headers = response.headers
                    status = (headers.get(header) or "").split(";")[0].strip()
                    stamps = tuple(headers.get(name) or "" for name in PAGE_HEADERS)
                    run = (headers.get(run_header) or "") if run_header else ""
                    page = (body, run, *stamps)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                failure = _reason(exc)
            took = (time.monotonic() - started) * 1000
            with lock:
                result.latencies.append(took)
                if failure is not None:
                    result.failures[failure] += 1
                    continue
                result.pages.add(page)
                result.bodies.add(page[0])
                result.run_seen = result.run_seen or bool(page[1])
                result.stamped = result.stamped or any(page[2:])
                if status:
                    result.statuses[status] += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + timeout + 30)
    return result


def failure_summary(results: list[Result]) -> str | None:
    """The CommandError's text when any request failed, else None."""
    failed = [r for r in results if r.errors]
    if not failed:
        return None
    parts = []
    for r in failed:
        reasons = ", ".join(f"{why} x{n}" for why, n in r.failures.most_common(3))
        parts.append(f"{r.url}: {r.errors} of {r.requests} requests failed ({reasons})")
    return "; ".join(parts)
