"""The path a pip user takes: build the wheel, install it in a fresh
virtualenv, ``django-admin startproject``, configure from the README's quick
start, serve a cached page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def quick_start() -> tuple[str, str]:
    """The README's quick-start block: (settings part, views part)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Install and quick start (pip users)", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    settings, views = block.split("# views.py", 1)
    return settings.replace("# settings.py", ""), views


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DOGPILE_", "PYTHON"))}
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, f"{cmd}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_a_pip_user_gets_a_cached_page(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT)
    (wheel,) = dist.glob("django_dogpile-*.whl")
    run(sys.executable, "-m", "twine", "check", wheel)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)
    site = tmp_path / "mysite"
    site.mkdir()
    run(venv / "bin" / "django-admin", "startproject", "mysite", site)
    settings, views = quick_start()
    with open(site / "mysite" / "settings.py", "a") as f:
        f.write("\n" + settings)
    (site / "mysite" / "views.py").write_text(views)
    with open(site / "mysite" / "urls.py", "a") as f:
        f.write("\nfrom .views import report\nurlpatterns.append(path('report/', report))\n")
    assert "System check identified no issues" in run(python, "manage.py", "check", cwd=site)
    out = run(
        python,
        "manage.py",
        "shell",
        "-c",
        "from django.test.utils import setup_test_environment; setup_test_environment()\n"
        "from django.test import Client\n"
        "c = Client()\n"
        "for _ in range(2):\n"
        "    r = c.get('/report/')\n"
        "    print(r.status_code, r['X-Dogpile-Cache'], r.content.decode())\n",
        cwd=site,
    )
    # (Django 5.2's shell first says what it imported)
    assert [line for line in out.splitlines() if line.startswith("200")] == [
        "200 MISS an expensive report",
        "200 HIT an expensive report",
    ]
