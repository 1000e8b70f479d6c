"""OpenTelemetry traces and metrics (``pip install django-dogpile[otel]``).

On with ``DOGPILE = {"OPENTELEMETRY": True}`` (or ``{"KEYS": True}`` to put
the keys themselves on the spans) and ``"django_dogpile"`` in
``INSTALLED_APPS``; the site configures its own tracer and meter providers
and exporters, as for any library.  Nothing runs on a fresh hit: the spans
and the timings come from the backend's signals, sent only when a caller
regenerates, waits, is served stale or sees its creator fail, so a hit costs
what it costs without OpenTelemetry.

Spans (children of the span current where the call was made, the request's
under an instrumented Django; timed from the signal's duration):

* ``dogpile.regenerate`` -- a caller made a value: it held the key's lease.
* ``dogpile.wait`` -- a caller waited for the value another caller made
  (its status ``ERROR`` when ``WAIT_TIMEOUT`` ran out).
* ``dogpile.regenerate`` with status ``ERROR`` and the exception recorded --
  a creator raised (its span covers no time: the failure is the event).

Their attributes: ``dogpile.alias``, ``dogpile.store`` (the store's kind:
``redis``, ``memcached``, ``local``...), ``dogpile.status`` (the status word),
``dogpile.lease_held`` (True for the caller that made the value),
``dogpile.creator.duration`` / ``dogpile.wait.duration`` (seconds),
``dogpile.background``, and ``dogpile.key.hash`` (the first 16 hex digits
of the key's SHA-256; ``dogpile.key`` instead with ``KEYS``).  A stale
value served adds the event ``dogpile.stale_served`` (``dogpile.reason``:
``UPDATING`` or ``STALE``) to the current span.

Metrics (meter ``django_dogpile``): the counters of every alias as
observable counters read when the reader collects -- ``dogpile.calls``
(attribute ``dogpile.status``: ``HIT``, ``UPDATING``, ``STALE``,
``EXPIRED``, ``MISS``), ``dogpile.regenerations``, ``dogpile.waits``,
``dogpile.wait_timeouts``, ``dogpile.errors`` -- and the histograms
``dogpile.regeneration.duration`` and ``dogpile.wait.duration`` (``s``).
OpenTelemetry has no semantic conventions for caches yet: the names follow
its general rules (dotted, lower case, units in ``unit``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django.core.checks import Error, Tags, register
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["apply", "available", "check_installed", "disable", "enable", "enabled"]

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:  # the extra is not installed
    metrics = trace = None  # type: ignore[assignment]

_COUNTERS = {
    "dogpile.regenerations": "REGENERATIONS",
    "dogpile.waits": "WAITS",
    "dogpile.wait_timeouts": "WAIT_TIMEOUTS",
    "dogpile.errors": "ERRORS",
}
_STATUSES = ("HIT", "UPDATING", "STALE", "EXPIRED", "MISS")


class _State:
    keys = False
    on = False
    tracer: Any = None
    instruments: dict[str, Any] | None = None


_state = _State()


def available() -> bool:
    """True when ``opentelemetry-api`` is installed."""
    return trace is not None


def enabled() -> bool:
    return _state.on


def enable(keys: bool = False) -> None:
    """Connect the receivers (idempotent); ``keys``: the keys on the spans."""
    if trace is None:
        raise ImportError("OpenTelemetry is not installed: pip install 'django-dogpile[otel]'")
    from django_dogpile import signals

    _state.keys = keys
    if _state.on:
        return
    _state.tracer = trace.get_tracer("django_dogpile")
    if _state.instruments is None:
        _state.instruments = _instruments()
    signals.value_regenerated.connect(_regenerated, dispatch_uid="django_dogpile.otel")
    signals.caller_waited.connect(_waited, dispatch_uid="django_dogpile.otel")
    signals.regeneration_failed.connect(_failed, dispatch_uid="django_dogpile.otel")
    signals.stale_served.connect(_stale, dispatch_uid="django_dogpile.otel")
    _state.on = True


def disable() -> None:
    """Disconnect the receivers (the observable counters report nothing)."""
    from django_dogpile import signals

    for signal in (signals.value_regenerated, signals.caller_waited, signals.regeneration_failed):
        signal.disconnect(dispatch_uid="django_dogpile.otel")
    signals.stale_served.disconnect(dispatch_uid="django_dogpile.otel")
    _state.on = False


def apply() -> None:
    """Enable or disable as ``DOGPILE["OPENTELEMETRY"]`` says (the app's
    ``ready()``, and again whenever the setting changes)."""
    from django_dogpile.conf import get_config

    try:
        wanted = get_config()["OPENTELEMETRY"]
    except Exception:  # a bad DOGPILE setting: the checks report it
        return
    if wanted is None or trace is None:  # not installed: check E014 says so
        disable()
    else:
        enable(keys=wanted["KEYS"])


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "DOGPILE":
        apply()


@register(Tags.caches)
def check_installed(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E014: ``OPENTELEMETRY`` is on but the package is not installed."""
    from django_dogpile.conf import get_config

    try:
        wanted = get_config()["OPENTELEMETRY"]
    except Exception:
        return []  # E010-E012 report a bad DOGPILE setting
    if wanted is not None and trace is None:
        return [
            Error(
                "DOGPILE['OPENTELEMETRY'] is on, but OpenTelemetry is not installed.",
                hint="pip install 'django-dogpile[otel]' (opentelemetry-api), or turn it off.",
                id="django_dogpile.E014",
            )
        ]
    return []


# --- spans ------------------------------------------------------------------


def _attributes(alias: str, key: Any, status: str, held: bool) -> dict[str, Any]:
    from django.core.cache import caches

    try:
        binding = getattr(caches[alias], "binding")  # noqa: B009 - a DogpileCache's
        kind = binding.adapter.kind if binding.adapter is not None else "?"
    except Exception:  # a backend made by hand: its alias is not in CACHES
        kind = "?"
    found: dict[str, Any] = {
        "dogpile.alias": alias,
        "dogpile.store": kind,
        "dogpile.status": status,
        "dogpile.lease_held": held,
    }
    if _state.keys:
        found["dogpile.key"] = str(key)
    else:
        found["dogpile.key.hash"] = hashlib.sha256(str(key).encode()).hexdigest()[:16]
    return found


def _span(name: str, duration: float, attributes: dict[str, Any], error: BaseException | None = None) -> None:
    end = time.time_ns()
    span = _state.tracer.start_span(name, start_time=end - int(duration * 1e9), attributes=attributes)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end(end_time=end)


def _regenerated(sender: Any, alias: str, key: Any, duration: float, background: bool, **kw: Any) -> None:
    attributes = _attributes(alias, key, kw.get("status", "MISS"), True)
    attributes["dogpile.creator.duration"] = duration
    attributes["dogpile.background"] = background
    _span("dogpile.regenerate", duration, attributes)
    if _state.instruments is not None:
        _state.instruments["regeneration"].record(duration, {"dogpile.alias": alias})


def _waited(sender: Any, alias: str, key: Any, duration: float, timed_out: bool, **kw: Any) -> None:
    attributes = _attributes(alias, key, "MISS", False)
    attributes["dogpile.wait.duration"] = duration
    attributes["dogpile.wait.timed_out"] = timed_out
    error = TimeoutError(f"WAIT_TIMEOUT ran out after {duration:.1f}s") if timed_out else None
    _span("dogpile.wait", duration, attributes, error)
    if _state.instruments is not None:
        _state.instruments["wait"].record(duration, {"dogpile.alias": alias})


def _failed(sender: Any, alias: str, key: Any, exception: BaseException, **kw: Any) -> None:
    _span("dogpile.regenerate", 0.0, _attributes(alias, key, "ERROR", True), exception)


def _stale(sender: Any, alias: str, key: Any, reason: str, **kw: Any) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event("dogpile.stale_served", {"dogpile.alias": alias, "dogpile.reason": reason})


# --- metrics ------------------------------------------------------------------


def _instruments() -> dict[str, Any]:
    meter = metrics.get_meter("django_dogpile")

    def counts(names: dict[str, str] | None = None, statuses: bool = False) -> Any:
        def callback(options: Any) -> list[Any]:
            if not _state.on:
                return []
            from django_dogpile.conf import dogpile_aliases
            from django_dogpile.stats import stats_for

            out = []
            for alias in dogpile_aliases():
                snapshot = stats_for(alias).snapshot()
                if statuses:
                    for status in _STATUSES:
                        out.append(
                            metrics.Observation(
                                snapshot.get(status, 0), {"dogpile.alias": alias, "dogpile.status": status}
                            )
                        )
                else:
                    for stat in (names or {}).values():
                        out.append(metrics.Observation(snapshot.get(stat, 0), {"dogpile.alias": alias}))
            return out

        return callback

    meter.create_observable_counter("dogpile.calls", [counts(statuses=True)], unit="{call}")
    for name, stat in _COUNTERS.items():
        meter.create_observable_counter(name, [counts({name: stat})], unit="{call}")
    return {
        "regeneration": meter.create_histogram("dogpile.regeneration.duration", unit="s"),
        "wait": meter.create_histogram("dogpile.wait.duration", unit="s"),
    }
