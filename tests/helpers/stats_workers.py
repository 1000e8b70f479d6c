"""Worker processes for the shared-counters tests (started with 'spawn').

Each adds the test's alias to its ``CACHES`` and publishes its counters
every 0.2 s, for the whole life of the process (as a deployment's settings
are: the ``atexit`` fold runs with them).
"""

from __future__ import annotations

import os
import queue

INTERVAL = 0.2


def _setup(alias, config):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test import override_settings

    override_settings(
        CACHES={**settings.CACHES, alias: config}, DOGPILE={"STATS_INTERVAL": INTERVAL}
    ).enable()  # never disabled: the process's settings


def serve(alias, config, hits, pace, commands, results):
    """``hits`` get_or_set calls, report ``("ready", pid, counters)``; then one
    call every ``pace`` seconds (0: none) until ``commands`` says ``"exit"``;
    report ``("exit", pid, counters)`` and return: the interpreter exits as a
    worker that ends cleanly does (spawn: ``sys.exit``, atexit runs)."""
    _setup(alias, config)
    from django.core.cache import caches

    from django_dogpile.stats import get_stats

    cache = caches[alias]
    for _ in range(hits):
        cache.get_or_set("page", "v", 60)
    results.put(("ready", os.getpid(), get_stats(alias)))
    while True:
        try:
            if commands.get(timeout=pace or 0.5) == "exit":
                break
        except queue.Empty:
            if pace:
                cache.get_or_set("page", "v", 60)
    results.put(("exit", os.getpid(), get_stats(alias)))


def read_stats(alias, config, results, at=0.0):
    """A process that only reads: ``dogpile stats --json`` and the Prometheus
    view, from time ``at``; report ``(pid, the command's JSON, the metrics
    text)``."""
    _setup(alias, config)
    import io
    import json
    import time

    from django.core.management import call_command
    from django.test import RequestFactory

    from django_dogpile.prometheus import metrics_view

    out = io.StringIO()
    time.sleep(max(0.0, at - time.time()))
    call_command("dogpile", "stats", "--alias", alias, "--json", stdout=out)
    text = metrics_view(RequestFactory().get("/metrics")).content.decode()
    results.put((os.getpid(), json.loads(out.getvalue()), text))


def churn(alias, config, rounds, at, results):
    """From time ``at``, ``rounds`` times: a few calls, publish, then
    ``reset_stats`` (the next publish folds the record and starts another):
    every round changes the chain, as every other process does at once.
    Report the calls' counters summed over the rounds, then exit cleanly."""
    _setup(alias, config)
    import time

    from django.core.cache import caches

    from django_dogpile.engine.shared_stats import publish_now
    from django_dogpile.stats import COUNTERS, get_stats, reset_stats

    cache = caches[alias]
    counted = dict.fromkeys(COUNTERS, 0)
    time.sleep(max(0.0, at - time.time()))
    for i in range(rounds):
        for _ in range(1 + i % 3):
            cache.get_or_set("page", "v", 60)
        publish_now()
        counted = {k: counted[k] + n for k, n in get_stats(alias).items()}
        reset_stats(alias)
    publish_now()  # the last record: folded at exit
    results.put(counted)
