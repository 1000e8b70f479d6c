"""The demo under gunicorn, sharing a real Redis, under load and under faults.

Run:  benchmarks/soak                      (sync and threaded workers, ~3 min)
      benchmarks/soak --duration 20 --workers 2 --worker-class sync

What one run does:

1. starts ``redis-server`` on a free loopback port, and the demo project
   (``testproject``) under gunicorn with ``--workers`` processes, with
   DogpileCache over django-redis (``IGNORE_EXCEPTIONS`` on), a short cache
   timeout and a slow view;
2. drives a bounded load from a separate process: ``--clients`` threads,
   each requesting the cached pages one after another for ``--duration`` s;
3. injects three faults, one after another:

   * ``kill``: SIGKILL to the gunicorn worker that is regenerating the first
     page (found from the demo's event log) -- its lease must run out and
     another worker regenerate;
   * ``redis``: redis-server stopped for ``--outage`` s and started again;
   * ``raise``: the slow view raises for ``--outage`` s;

4. reads the demo's event log (one line per slow-view start/end/error,
   written by every worker: the regenerations are counted exactly) and the
   load generator's records, and reports per run: requests, error
   responses outside and inside the fault windows, regenerations per page
   and per expiry period, latency p50/p99/max, and what each fault did.

The same run is repeated with Django's own faces on the same store as the
baseline (``cache_page``, ``{% cache %}``, ``cache.get_or_set``: the demo's
``/report/plain/``, ``/fragment/plain/``, ``/function/plain/``), and the
results are printed side by side.
``tests/system/test_soak.py`` runs a short version (2 workers, a few seconds).
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.helpers.redis_server import RedisServer, free_port  # noqa: E402

#: The pages each kind loads: role -> (path, the demo's name for its slow work).
PAGES = {
    "dogpile": {
        "page": ("/report/", "page (dogpile_cache_page)"),
        "fragment": ("/fragment/", "fragment ({% dogpile_cache %})"),
        "function": ("/function/", "function (cached())"),
    },
    "plain": {
        "page": ("/report/plain/", "page (Django cache_page)"),
        "fragment": ("/fragment/plain/", "fragment (Django {% cache %})"),
        "function": ("/function/plain/", "function (Django get_or_set)"),
    },
}
FAULTS = ("kill", "redis", "raise")


@dataclass
class Config:
    workers: int = 4
    worker_class: str = "sync"  # or "gthread"
    threads: int = 4  # per gthread worker
    duration: float = 30.0
    clients: int = 16
    think: float = 0.01
    timeout: int = 1  # freshness of the cached pages (the demo's DEMO_TIMEOUT)
    creator: float = 0.2  # the slow view's time (DEMO_SLOW)
    lock_timeout: float = 2.0
    outage: float = 2.0  # seconds Redis is down, and the view raises
    faults: tuple[str, ...] = FAULTS


@dataclass
class Window:
    fault: str
    start: float
    end: float  # the fault ended (Redis back, the view healthy again)
    settle: float  # + the time a cache needs to be whole again
    detail: dict[str, Any] = field(default_factory=dict)

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.settle


# --- the server -------------------------------------------------------------


class Server:
    """gunicorn serving testproject, with its event log and fail switch."""

    def __init__(
        self,
        config: Config,
        redis_url: str,
        workdir: str,
        gunicorn_args: tuple[str, ...] = (),
        app: str = "testproject.wsgi:application",
    ) -> None:
        self.config = config
        self.gunicorn_args = gunicorn_args  # benchmarks/pages: its counting hooks
        self.app = app  # benchmarks/pages --asgi: benchmarks.asgi_served
        self.port = free_port()
        self.runs_log = os.path.join(workdir, "runs.log")
        self.fail_file = os.path.join(workdir, "fail")
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "testproject.settings",
            "DOGPILE_REDIS_URL": redis_url,
            "DEMO_DB": os.path.join(workdir, "db.sqlite3"),
            "DEMO_DEBUG": "0",
            "DEMO_SLOW": str(config.creator),
            "DEMO_TIMEOUT": str(config.timeout),
            "DEMO_LOCK_TIMEOUT": str(config.lock_timeout),
            "DEMO_RUNS_LOG": self.runs_log,
            "DEMO_FAIL_FILE": self.fail_file,
        }
        self.log = open(os.path.join(workdir, "gunicorn.log"), "wb")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
            timeout=120,
        )
        c = self.config
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            self.app,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(c.workers),
            "--worker-class",
            c.worker_class,
            "--timeout",
            "60",
            "--graceful-timeout",
            "2",
            "--log-level",
            "warning",
        ]
        if c.worker_class == "gthread":
            cmd += ["--threads", str(c.threads)]
        cmd += self.gunicorn_args
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + self.output())
            try:
                if get(self.port, "/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer:\n" + self.output())

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def events(self) -> list[tuple[float, int, str, str]]:
        """The demo's event log: (time, pid, start|end|error, face)."""
        out = []
        try:
            with open(self.runs_log) as f:
                for line in f:
                    t, pid, what, face = line.rstrip("\n").split(" ", 3)
                    out.append((float(t), int(pid), what, face))
        except FileNotFoundError:
            pass
        return out


def get(port: int, path: str, timeout: float = 30) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("X-Dogpile-Cache")
    finally:
        conn.close()


# --- the load ---------------------------------------------------------------


def load(
    port: int, paths: list[str], clients: int, start_at: float, duration: float, think: float, queue: Any
) -> None:
    """Run in a separate process: ``clients`` threads, one request at a time each.

    Puts a list of (start, seconds, path, status, X-Dogpile-Cache) on ``queue``;
    status 0 is a connection error.
    """
    records: list[tuple[float, float, str, int, str | None]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        mine = []
        n = i
        time.sleep(max(0.0, start_at - time.time()))
        while (t0 := time.time()) < start_at + duration:
            path = paths[n % len(paths)]
            n += 1
            try:
                status, header = get(port, path)
            except (OSError, http.client.HTTPException):
                status, header = 0, None
            mine.append((t0, time.time() - t0, path, status, header))
            time.sleep(think)
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(records)


# --- the faults -------------------------------------------------------------


def kill_regenerating_worker(server: Server, face: str, wait: float) -> Window | None:
    """SIGKILL the worker that is running the slow view for ``face``."""
    deadline = time.time() + wait
    while time.time() < deadline:
        open_starts: dict[int, float] = {}
        for t, pid, what, f in server.events():
            if f != face:
                continue
            if what == "start":
                open_starts[pid] = t
            else:
                open_starts.pop(pid, None)
        if open_starts:
            pid = max(open_starts, key=open_starts.__getitem__)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            now = time.time()
            c = server.config
            # settled once the lease ran out and a new value is fresh again
            settle = now + c.lock_timeout + c.creator + c.timeout + 0.5
            return Window("kill", now, now, settle, {"pid": pid})
        time.sleep(0.005)
    return None


def inject(server: Server, redis: RedisServer, kind: str, start_at: float, windows: list[Window]) -> None:
    """The fault schedule, in the main process, while the load runs."""
    c = server.config
    face = PAGES[kind]["page"][1]
    settle = c.timeout + c.creator + 0.5  # one more regeneration, and margin
    at = {"kill": 0.1, "redis": 0.4, "raise": 0.7}  # of the duration
    for fault in c.faults:
        time.sleep(max(0.0, start_at + at[fault] * c.duration - time.time()))
        if fault == "kill":
            window = kill_regenerating_worker(server, face, wait=c.duration * 0.2)
            if window is not None:
                windows.append(window)
        elif fault == "redis":
            t0 = time.time()
            redis.stop()
            time.sleep(c.outage)
            redis.start()
            t1 = time.time()
            windows.append(Window("redis", t0, t1, t1 + settle))
        elif fault == "raise":
            t0 = time.time()
            open(server.fail_file, "w").close()
            time.sleep(c.outage)
            os.unlink(server.fail_file)
            t1 = time.time()
            windows.append(Window("raise", t0, t1, t1 + settle))


# --- one run ----------------------------------------------------------------


def run(kind: str, config: Config) -> dict[str, Any]:
    """One soak run of ``kind`` ("dogpile" or "plain"); returns its report."""
    workdir = tempfile.mkdtemp(prefix="dogpile-soak-")
    redis = RedisServer()
    redis.start()
    server = Server(config, redis.url, workdir)
    try:
        server.start()
        paths = [path for path, _ in PAGES[kind].values()]
        for path in paths:  # the first value of each page, before the clock starts
            get(server.port, path)
        start_at = time.time() + 1.0
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        loader = ctx.Process(
            target=load,
            args=(server.port, paths, config.clients, start_at, config.duration, config.think, queue),
        )
        loader.start()
        windows: list[Window] = []
        inject(server, redis, kind, start_at, windows)
        records = None
        while records is None:
            try:
                records = queue.get(timeout=1)
            except Exception:  # queue.Empty: is the load generator still there?
                if not loader.is_alive():
                    raise RuntimeError(f"the load generator died ({loader.exitcode})") from None
        loader.join(30)
        return analyse(kind, config, records, server.events(), windows, start_at)
    finally:
        server.stop()
        redis.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def max_in_window(times: list[float], width: float) -> int:
    """The most events in any window ``width`` seconds long."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def analyse(
    kind: str,
    c: Config,
    records: list[tuple[float, float, str, int, str | None]],
    events: list[tuple[float, int, str, str]],
    windows: list[Window],
    start_at: float,
) -> dict[str, Any]:
    def in_fault(t: float) -> bool:
        return any(t in w for w in windows)

    # a request counts toward a fault if it was in flight during its window
    def overlaps(rec: tuple[float, float, str, int, str | None]) -> bool:
        return in_fault(rec[0]) or in_fault(rec[0] + rec[1])

    bad = [r for r in records if r[3] == 0 or r[3] >= 500]
    latencies = sorted(r[1] for r in records)
    calm = [r for r in records if not overlaps(r)]
    report: dict[str, Any] = {
        "requests": len(records),
        "errors outside faults": sum(1 for r in bad if not overlaps(r)),
        "errors in faults": sum(1 for r in bad if overlaps(r)),
        "p50 ms": percentile(latencies, 0.5) * 1000,
        "p99 ms": percentile(latencies, 0.99) * 1000,
        "max ms": (latencies[-1] if latencies else 0) * 1000,
        "max ms outside faults": max((r[1] for r in calm), default=0) * 1000,
    }
    end_at = start_at + c.duration
    periods = c.duration / (c.timeout + c.creator)
    for role, (_, face) in PAGES[kind].items():
        done = [t for t, _, what, f in events if f == face and what == "end" and start_at <= t < end_at]
        failed = [t for t, _, what, f in events if f == face and what == "error" and start_at <= t < end_at]
        calm_done = [t for t in done if not in_fault(t)]
        report[f"{role}: regenerations"] = len(done)
        report[f"{role}: per expiry period"] = len(done) / periods
        report[f"{role}: max per period, calm"] = max_in_window(calm_done, c.timeout)
        report[f"{role}: max per period, faults"] = max_in_window([t for t in done if in_fault(t)], c.timeout)
        report[f"{role}: failed attempts"] = len(failed)
    faces = {face for _, face in PAGES[kind].values()}
    first_face = PAGES[kind]["page"][1]
    for w in windows:
        during = [r for r in records if w.start <= r[0] < w.settle or w.start <= r[0] + r[1] < w.settle]
        prefix = f"fault {w.fault}"
        report[f"{prefix}: requests"] = len(during)
        report[f"{prefix}: errors"] = sum(1 for r in during if r[3] == 0 or r[3] >= 500)
        report[f"{prefix}: stale served"] = sum(1 for r in during if r[4] in ("UPDATING", "STALE"))
        report[f"{prefix}: max ms"] = max((r[1] for r in during), default=0) * 1000
        regenerated = [t for t, _, what, f in events if what == "end" and t in w and f in faces]
        report[f"{prefix}: regenerations"] = len(regenerated)
        report[f"{prefix}: max per page per period"] = max(
            (
                max_in_window(
                    [t for t, _, what, f in events if what == "end" and t in w and f == face], c.timeout
                )
                for face in faces
            ),
            default=0,
        )
        if w.fault == "kill":
            after = [
                t
                for t, pid, what, f in events
                if f == first_face and what == "end" and t > w.start and pid != w.detail["pid"]
            ]
            report[f"{prefix}: next regeneration after s"] = (min(after) - w.start) if after else None
    report["faults injected"] = ",".join(w.fault for w in windows)
    return report


# --- the table --------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"
    return str(value)


def print_side_by_side(columns: dict[str, dict[str, Any]]) -> None:
    names: list[str] = []
    for report in columns.values():
        for name in report:
            if name not in names:
                names.append(name)
    width = max(len(n) for n in names) + 2
    print(f"{'':{width}}" + "".join(f"{label:>20}" for label in columns))
    for name in names:
        print(f"{name:{width}}" + "".join(f"{fmt(r.get(name, '')):>20}" for r in columns.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-class", choices=["sync", "gthread", "both"], default="both")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--timeout", type=int, default=1)
    parser.add_argument("--creator", type=float, default=0.2)
    parser.add_argument("--lock-timeout", type=float, default=2.0)
    parser.add_argument("--outage", type=float, default=2.0)
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated; '' for none")
    opts = parser.parse_args()
    classes = ["sync", "gthread"] if opts.worker_class == "both" else [opts.worker_class]
    faults = tuple(f for f in opts.faults.split(",") if f)
    print(
        f"gunicorn {opts.workers} workers, {opts.clients} clients, {opts.duration:g} s per run, "
        f"cache timeout {opts.timeout} s, slow view {opts.creator * 1000:g} ms, "
        f"LOCK_TIMEOUT {opts.lock_timeout:g} s, faults: {', '.join(faults) or 'none'} "
        f"({opts.outage:g} s outages); python {sys.version.split()[0]}, {os.cpu_count()} cpus",
        flush=True,
    )
    columns: dict[str, dict[str, Any]] = {}
    for worker_class in classes:
        for kind in ("plain", "dogpile"):
            config = Config(
                workers=opts.workers,
                worker_class=worker_class,
                duration=opts.duration,
                clients=opts.clients,
                timeout=opts.timeout,
                creator=opts.creator,
                lock_timeout=opts.lock_timeout,
                outage=opts.outage,
                faults=faults,
            )
            label = f"{'cache_page' if kind == 'plain' else 'dogpile'} {worker_class}"
            print(f"running {label}...", file=sys.stderr, flush=True)
            columns[label] = run(kind, config)
    print()
    print_side_by_side(columns)


if __name__ == "__main__":
    main()
