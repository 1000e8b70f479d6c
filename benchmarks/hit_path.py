"""Fresh-hit cost: DogpileCache.get_or_set against a raw get on the same store.

Run: .venv/bin/python benchmarks/hit_path.py   (starts its own redis-server)
Both are measured side by side, interleaved, in one run; the ratio is what
to read (the machines are shared and noisy).
"""

from __future__ import annotations

import os
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.redis_server import RedisServer  # noqa: E402


def main() -> None:
    server = RedisServer()
    server.start()
    os.environ["DOGPILE_TEST_REDIS_URL"] = server.url
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.core.cache import caches

    print(f"{'store':8} {'raw get µs':>11} {'dogpile hit µs':>15} {'ratio':>6}")
    try:
        for store, dp in (("locmem", "dp_locmem"), ("redis", "dp_redis")):
            raw, cache = caches[store], caches[dp]
            raw.set("raw-key", "x" * 100)
            cache.set("dp-key", "x" * 100)
            n = 20000 if store == "locmem" else 3000
            best_raw, best_dp = float("inf"), float("inf")
            for _ in range(5):  # interleave the two so noise hits both
                best_raw = min(best_raw, timeit.timeit(lambda: raw.get("raw-key"), number=n) / n)
                best_dp = min(
                    best_dp, timeit.timeit(lambda: cache.get_or_set("dp-key", "y"), number=n) / n
                )
            print(f"{store:8} {best_raw * 1e6:11.2f} {best_dp * 1e6:15.2f} {best_dp / best_raw:6.2f}")
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
