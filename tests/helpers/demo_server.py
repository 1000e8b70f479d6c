"""Run the demo project as a real server on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.helpers.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class DemoServer:
    """``manage.py runserver`` of testproject, with its own SQLite file."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dogpile-demo-")
        base = {k: v for k, v in os.environ.items() if k != "DOGPILE_REDIS_URL"}  # locmem
        self.env = {
            **base,
            "DJANGO_SETTINGS_MODULE": "testproject.settings",
            "DEMO_DB": os.path.join(self.dir, "db.sqlite3"),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(os.path.join(self.dir, "server.log"), "wb")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run(
            [*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env, check=True, timeout=120
        )
        self.proc = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{self.port}"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo server exited: {self.output()}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the demo server did not answer: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
        self.log.close()
