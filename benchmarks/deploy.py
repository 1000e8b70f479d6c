"""A deploy that bumps ``VERSION`` under load: ours with ``PREVIOUS_VERSION``
against Django's own ``get_or_set``, side by side in one run.

``--keys`` keys are written under VERSION 1 on Redis; then ``--procs``
processes of 2 threads each call them in turn for ``--seconds`` under
VERSION 2, with a ``--creator`` s creator (the query a cold key costs).
Columns: creator calls during the bump, calls, their time (median, p99,
max), the slowest call that did not run a creator itself, and the status
words (``MADE``: Django's caller ran the creator).  Ours
serves each key's VERSION 1 record stale while one caller makes it
(``EXPIRED``: made once per key); Django's face makes a value for every
caller that finds none, and every one of them waits for its creator.
``tests/engine/test_deploys.py`` runs a short version.

Run:  .venv/bin/python benchmarks/deploy.py      (starts its own redis-server; ~15 s)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.helpers.procs import deploy_load  # noqa: E402
from tests.helpers.redis_server import RedisServer  # noqa: E402


def bump(face: str, keys: list[str], procs: int, seconds: float, creator: float) -> dict:
    from django.core.cache import caches

    from django_dogpile.cache import DogpileCache

    prefix = f"deploy-{face}-{time.time()}"
    if face == "django":
        options = None
        for k in keys:
            caches["redis"].set(f"{prefix}:{k}", "old", version=1)
    else:
        options = {"PREVIOUS_VERSION": True}
        old = DogpileCache("redis", {"TIMEOUT": 60, "KEY_PREFIX": prefix, "VERSION": 1})
        old.set_many({k: "old" for k in keys})
    spawn = multiprocessing.get_context("spawn")
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
        log = f.name
    results = spawn.Queue()
    start_at = time.time() + 3
    args = ("redis", prefix, keys, 2, options, start_at, start_at + seconds, creator, log, results)
    workers = [spawn.Process(target=deploy_load, args=args) for _ in range(procs)]
    for w in workers:
        w.start()
    outs = [results.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(10)
    with open(log) as f:
        made = Counter(f.read().split())
    os.unlink(log)
    took = [pair for out in outs for pair in out["took"]]
    return {
        "made": sum(made.values()),
        "most of one key": max(made.values()) if made else 0,
        "statuses": dict(sum((Counter(out["statuses"]) for out in outs), Counter())),
        "all": sorted(t for _, t in took),
        "served": sorted(t for status, t in took if status not in ("EXPIRED", "MISS", "MADE")),
        "errors": [e for out in outs for e in out["errors"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--creator", type=float, default=0.4)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    os.environ["DOGPILE_TEST_REDIS_URL"] = server.url
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    try:
        import django

        django.setup()
        keys = [f"k{i}" for i in range(args.keys)]
        print(
            f"{args.keys} keys, {args.procs} processes x 2 threads, {args.seconds} s, "
            f"{args.creator} s creator; VERSION 1 -> 2 on Redis {server.url}"
        )
        print(
            f"{'face':<28} {'creator calls':>13} {'calls':>6} {'median ms':>10} {'p99 ms':>8} "
            f"{'max ms':>8} {'max ms, not making':>19}  statuses"
        )
        for face, name in (("dogpile", "ours, PREVIOUS_VERSION=True"), ("django", "Django's get_or_set")):
            got = bump(face, keys, args.procs, args.seconds, args.creator)
            calls = got["all"] or [0.0]
            p99 = calls[min(len(calls) - 1, int(len(calls) * 0.99))]
            served = got["served"][-1] * 1000 if got["served"] else float("nan")
            print(
                f"{name:<28} {got['made']:>13} {len(got['all']):>6} {statistics.median(calls) * 1000:>10.2f} "
                f"{p99 * 1000:>8.2f} {calls[-1] * 1000:>8.2f} {served:>19.2f}  {got['statuses']}"
                + (f"  errors: {got['errors'][:3]}" if got["errors"] else "")
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
