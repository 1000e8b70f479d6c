"""Django's own cache tests, for the installed Django version.

They ship in Django's sdist (not in its wheel): fetched once from the
package index with pip into ``.django-tests/`` at the project root
(git-ignored), and only ``tests/cache`` is unpacked.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parents[3] / ".django-tests"


def django_tests_dir() -> Path:
    """Return the directory holding Django's ``cache`` test app."""
    version = django.get_version()
    target = ROOT / f"django-{version}"
    if (target / "tests" / "cache" / "tests.py").exists():
        return target / "tests"
    ROOT.mkdir(exist_ok=True)
    sdist = next(ROOT.glob(f"[dD]jango-{version}.tar.gz"), None)
    if sdist is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-q", "-d", str(ROOT), f"django=={version}"],
            check=True,
        )
        sdist = next(ROOT.glob(f"[dD]jango-{version}.tar.gz"))
    prefix = f"{sdist.name[: -len('.tar.gz')]}/tests/cache/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(ROOT, members=members, filter="data") if sys.version_info >= (3, 12) else tar.extractall(ROOT, members=members)  # noqa: E501
        extracted = ROOT / sdist.name[: -len(".tar.gz")]
    if extracted != target:
        extracted.rename(target)
    return target / "tests"


if __name__ == "__main__":
    print(django_tests_dir())
