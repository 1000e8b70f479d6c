"""The demo project: its pages answer, and the stampede command shows the cure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def manage(*args, timeout=120):
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="testproject.settings")
    env.pop("DOGPILE_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_passes_checks():
    out = manage("check")
    assert out.returncode == 0, out.stderr
    assert "no issues" in out.stdout


@pytest.mark.slow
def test_stampede_command_shows_one_run_per_expiry():
    out = manage("stampede", "--duration", "3", "--clients", "12", "--timeout", "1", "--creator-time", "0.2")
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        m = re.match(r"(Django cache_page|dogpile_cache_page)\s+(\d+)\s+(\d+)\s+([\d.]+)", line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    assert set(rows) == {"Django cache_page", "dogpile_cache_page"}, out.stdout
    django_runs, dogpile_runs = rows["Django cache_page"][1], rows["dogpile_cache_page"][1]
    assert dogpile_runs <= 3 + 1  # one per expiry period (+1 at a boundary)
    assert django_runs > 2 * dogpile_runs
