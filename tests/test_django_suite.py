"""Django's own cache tests, unchanged, against our backend and page face.

``BaseCacheTests`` (every ``BaseCache`` behaviour Django tests its own
backends with) runs against DogpileCache over locmem and over django-redis,
through the sync methods and through the ``a*`` methods, and over Django's
RedisCache and memcached; Django's
``cache_page`` decorator tests run with ``dogpile_cache_page`` in its place.
The tests come from the sdist of the installed Django version
(``tests/djangosuite/fetch.py``) and run with Django's own test runner in a
child process (they need their own settings).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.djangosuite.fetch import django_tests_dir

HERE = Path(__file__).resolve().parent / "djangosuite"

_RUN = """
import sys, django
django.setup()
from django.test.runner import DiscoverRunner
sys.exit(bool(DiscoverRunner(verbosity=1).run_tests(sys.argv[1:])))
"""


def run_django_tests(*labels: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(django_tests_dir()), str(HERE)])
    env["DJANGO_SETTINGS_MODULE"] = "dogpile_conformance_settings"
    return subprocess.run(
        [sys.executable, "-c", _RUN, *labels],
        env=env, capture_output=True, text=True, timeout=600, cwd=str(HERE),
    )


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
