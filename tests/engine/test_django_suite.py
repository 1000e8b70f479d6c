"""Django's own cache tests, unchanged, against our backend and page face.

``BaseCacheTests`` (every ``BaseCache`` behaviour Django tests its own
backends with) runs against DogpileCache over locmem and over django-redis,
through the sync methods and through the ``a*`` methods, and over Django's
RedisCache and memcached; Django's
``cache_page`` decorator tests run with ``dogpile_cache_page`` in its place.
The tests come from the sdist of the installed Django version
(``tests/engine/djangosuite/fetch.py``) and run with Django's own test runner in a
child process (they need their own settings).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.djangosuite.fetch import django_tests_dir

HERE = Path(__file__).resolve().parent / "djangosuite"

_RUN = """
import sys, django
django.setup()
from django.test.runner import DiscoverRunner
sys.exit(bool(DiscoverRunner(verbosity=1).run_tests(sys.argv[1:])))
"""


def run_django_tests(*labels: str, verbosity: int = 1) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(django_tests_dir()), str(HERE)])
    env["DJANGO_SETTINGS_MODULE"] = "dogpile_conformance_settings"
    return subprocess.run(
        [sys.executable, "-c", _RUN.replace("verbosity=1", f"verbosity={verbosity}"), *labels],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(HERE),
    )


def _failures(done: subprocess.CompletedProcess[str]) -> tuple[int, set[str]]:
    """How many tests ran, and the names of those that failed or erred."""
    ran = re.search(r"^Ran (\d+) test", done.stderr, re.M)
    failed = set(re.findall(r"^(?:FAIL|ERROR): (test_\w+)", done.stderr, re.M))
    return (int(ran.group(1)) if ran else 0), failed


@pytest.mark.slow
@pytest.mark.cluster
def test_djangos_own_cache_tests_pass_over_the_cluster_wherever_the_cluster_store_passes():
    """BaseCacheTests over DogpileCache on the cluster, and over the cluster
    store itself: every test the plain store passes, ours passes too."""
    ran, ours = _failures(run_django_tests("dogpile_conformance.DogpileOverClusterTests"))
    ran_plain, plain = _failures(run_django_tests("dogpile_conformance.PlainClusterTests"))
    print(
        f"\ncluster: {ran} of Django's tests; DogpileCache fails {sorted(ours)}, "
        f"the plain cluster store fails {sorted(plain)}"
    )
    assert ran == ran_plain >= 50
    assert sorted(ours - plain) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "label",
    [
        "DogpileOverLocMemTests",
        "DogpileOverLocMemAsyncTests",
        pytest.param("DogpileOverRedisTests", marks=pytest.mark.redis),
        pytest.param("DogpileOverRedisAsyncTests", marks=pytest.mark.redis),
        pytest.param("DogpileOverDjangoRedisTests", marks=pytest.mark.redis),
        pytest.param("DogpileOverMemcachedTests", marks=pytest.mark.memcached),
        "DogpileCachePageTests",
    ],
)
def test_djangos_own_cache_tests_pass(label):
    done = run_django_tests(f"dogpile_conformance.{label}")
    summary = [line for line in done.stderr.splitlines() if line.startswith(("Ran ", "OK", "FAILED"))]
    assert done.returncode == 0, done.stderr[-6000:]
    assert summary and summary[-1].startswith("OK"), summary
    ran = int(summary[0].split()[1])
    # Django 4.2 has 3 of the cache_page tests we run, 5.2 has 9
    assert ran >= (3 if label == "DogpileCachePageTests" else 50), summary
