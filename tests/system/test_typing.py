"""``@cached`` keeps the function's signature and return type under
``mypy --strict`` (tests/system/typing/cached_signatures.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_cached_keeps_signatures_under_mypy_strict():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--warn-unused-ignores",
            "--ignore-missing-imports",
            "--follow-imports=silent",
            "--no-incremental",
            str(HERE / "typing" / "cached_signatures.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(HERE.parent),
    )
    assert done.returncode == 0, done.stdout + done.stderr
