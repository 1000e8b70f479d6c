"""Many keys written together: their regenerations bunch up at one expiry,
unless ``JITTER`` spreads them.

Run:  .venv/bin/python benchmarks/jitter.py              (about 30 s)
      .venv/bin/python benchmarks/jitter.py --keys 500 --jitter 0.2

``--keys`` keys are written together with ``set_many`` (a warm-up, a
deploy), then ``--threads`` callers loop over them with ``get_or_set``
(``benchmarks/stampede.py``'s callers, a ``--creator`` s creator) for
``--periods`` timeouts, once with ``JITTER`` 0 and once with ``--jitter``,
side by side on locmem (in-process: the regenerations are what is
measured, not the store).  Columns: creator calls, the most creators
running at one instant, the most that *started* within any 100 ms, the
most calls of one key's creator at once (single flight: 1), and the
slowest call.  Without jitter every caller that meets a key at the
shared expiry regenerates one (single flight per key: up to ``--threads``
creators at once); with it the expiries, and so the creators, spread over
``jitter x timeout``, at the cost of more creator calls in all (each
freshness is shorter: ``1 / (1 - jitter / 2)`` as many on average).
``tests/ops/test_stampede.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import stampede  # noqa: E402


def peak_starts(creators: list[tuple[float, float, bool]], window: float = 0.1) -> int:
    """The most creator calls that started within any ``window`` seconds."""
    starts = sorted(start for start, _, _ in creators)
    best, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] > window:
            first += 1
        best = max(best, last - first + 1)
    return best


def one(
    jitter: float, keys: int, threads: int, periods: float, timeout: float, creator: float
) -> dict[str, Any]:
    """One run: the keys written together, then the callers."""
    from django_dogpile.cache import DogpileCache

    names = [f"jitter:{jitter}:{time.time_ns()}:{i}" for i in range(keys)]
    warm = DogpileCache("locmem", {"TIMEOUT": timeout, "OPTIONS": {"GRACE": 600, "JITTER": jitter}})
    warm.set_many({name: "warm" for name in names})
    # the callers' caches read it (stampede.make_cache); never left behind
    # for a later run in this process (the suite's stampede tests)
    before = os.environ.get("DOGPILE_BENCH_JITTER")
    os.environ["DOGPILE_BENCH_JITTER"] = str(jitter)
    try:
        result = stampede.run(
            "dogpile",
            "locmem",
            threads=threads,
            duration=periods * timeout,
            timeout=timeout,
            creator_time=creator,
            think=0.001,
            keys=names,
        )
    finally:
        if before is None:
            os.environ.pop("DOGPILE_BENCH_JITTER", None)
        else:
            os.environ["DOGPILE_BENCH_JITTER"] = before
    per_key = result.per_key_summary()
    summary = result.summary(creator)
    return {
        "jitter": jitter,
        "creator calls": summary["creator calls"],
        "max at once": summary["max at once"],
        "most started in 100 ms": peak_starts(result.creators),
        "max at once per key": per_key["max at once per key"],
        "max ms": summary["max ms"],
        "errors": summary["errors"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    for row in rows:
        lines.append(
            "| " + " | ".join(f"{row[c]:.0f}" if c == "max ms" else str(row[c]) for c in cols) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--periods", type=float, default=3.0, help="timeouts the callers run for")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--creator", type=float, default=0.02, help="creator time, s")
    parser.add_argument("--jitter", type=float, default=0.5)
    opts = parser.parse_args()
    stampede.setup_django(None)
    rows = [
        one(j, opts.keys, opts.threads, opts.periods, opts.timeout, opts.creator) for j in (0.0, opts.jitter)
    ]
    print(markdown(rows))
    print(
        f"\n{opts.keys} keys written together (set_many), {opts.threads} threads looping over them "
        f"for {opts.periods:g} timeouts of {opts.timeout:g} s, creator {opts.creator * 1000:.0f} ms, locmem."
    )


if __name__ == "__main__":
    main()
