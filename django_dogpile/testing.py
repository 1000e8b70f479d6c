"""Helpers for your own test-suite.

:class:`Clock` moves the freshness clock of every DogpileCache forward
without sleeping::

    from django_dogpile.testing import Clock

    with Clock() as clock:
        cache.set("k", 1, timeout=60)
        clock.advance(61)
        assert cache.get("k") is None          # stale: a miss for get()

:func:`assert_single_regeneration` runs N concurrent callers of
``get_or_set`` on one key and checks that the creator ran exactly once::

    assert_single_regeneration(cache, "report", build_report, callers=16)

Only freshness and grace follow the clock; lock leases and the store's own
expiry run in real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from django_dogpile import records

__all__ = ["Clock", "assert_single_regeneration", "run_concurrently"]


class Clock:
    """Replace :func:`django_dogpile.records.now` by real time + an offset."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._saved: Callable[[], float] | None = None

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.offset += seconds

    def __enter__(self) -> Clock:
        self._saved = records.now
        records.now = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._saved is not None:
            records.now = self._saved
            self._saved = None


def run_concurrently(n: int, fn: Callable[[int], Any], timeout: float = 60) -> list[Any]:
    """Call ``fn(i)`` for i in 0..n-1 in n threads released together.

    Return the results in order; re-raise the first exception a thread met.
    """
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if any(t.is_alive() for t in threads):
        raise AssertionError(f"a caller was still running after {timeout}s")
    if errors:
        raise errors[0]
    return results


def assert_single_regeneration(
    cache: Any,
    key: str,
    creator: Callable[[], Any],
    callers: int = 16,
    timeout: Any = None,
    **get_or_set_kwargs: Any,
) -> list[Any]:
    """Run ``callers`` concurrent ``get_or_set`` calls; assert one creator call.

    :param cache: a DogpileCache (``caches["default"]``); each thread uses it
     as Django would.
    :param creator: the callable handed to ``get_or_set``.
    :return: what each caller got.
    """
    calls = []
    lock = threading.Lock()

    def counted() -> Any:
        with lock:
            calls.append(1)
        return creator()

    kwargs = dict(get_or_set_kwargs)
    if timeout is not None:
        kwargs["timeout"] = timeout
    results = run_concurrently(callers, lambda i: cache.get_or_set(key, counted, **kwargs))
    if len(calls) != 1:
        raise AssertionError(
            f"{len(calls)} regenerations of {key!r} by {callers} concurrent callers; expected exactly 1"
        )
    return results
