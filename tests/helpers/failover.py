"""What the failover tests (Sentinel, Redis Cluster) measure from their answers."""

from __future__ import annotations


def window(answers: list[tuple]) -> tuple[float, float] | None:
    """(first bad answer started, first good answer after the last bad one ended)."""
    bad = [a for a in answers if a[3] is not None]
    if not bad:
        return None
    last = max(a[1] for a in bad)
    after = [a[1] for a in answers if a[3] is None and a[0] >= last]
    assert after, "no good answer after the last error"
    return min(a[0] for a in bad), min(after)


def per_period(times: list[float], start: float, end: float, period: float) -> list[int]:
    """Creator calls in each ``period``-long stretch from ``start`` to ``end``."""
    n = int((end - start) // period)
    counts = [0] * n
    for t in times:
        i = int((t - start) // period)
        if 0 <= i < n:
            counts[i] += 1
    return counts
