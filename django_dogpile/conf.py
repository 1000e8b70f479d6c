"""Settings: the project-wide ``DOGPILE`` dict, the DogpileCache aliases of
``CACHES``, and the app's presence.  A DogpileCache alias's own OPTIONS are
parsed in :mod:`django_dogpile.options` (re-exported here).

Everything is parsed and validated once; the system checks report the same
messages as the first request would raise.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from django_dogpile import options as _options
from django_dogpile.options import (
    BACKEND_OPTION_DEFAULTS,
    BASECACHE_OPTIONS,
    LOCK_KINDS,
    NEAR_CACHE_DEFAULTS,
    BackendOptions,
    ConfigError,
    _with_defaults,
    backend_option_errors,
    number,
    parse_backend_options,
    parse_timeout,
    timeout_argument,
)

__all__ = [
    "BACKEND_OPTION_DEFAULTS",
    "BASECACHE_OPTIONS",
    "DOGPILE_DEFAULTS",
    "LOCK_KINDS",
    "NEAR_CACHE_DEFAULTS",
    "BackendOptions",
    "ConfigError",
    "alias_settings",
    "aliases_set_as",
    "backend_option_errors",
    "dogpile_aliases",
    "find_alias",
    "get_config",
    "improperly_configured",
    "number",
    "parse_backend_options",
    "parse_dogpile_setting",
    "parse_timeout",
    "timeout_argument",
    "warn_if_not_installed",
]

log = logging.getLogger(__name__)

#: The ``DOGPILE`` setting: defaults for the template tag and decorators.
DOGPILE_DEFAULTS: dict[str, Any] = {
    "CACHE_ALIAS": None,  # None: as Django's faces choose (see the README)
    "TIMEOUT": None,  # None: the cache's own default timeout
    "KEY_PREFIX": "",
    "STATUS_HEADER": "X-Dogpile-Cache",  # None or "" to send no header
    "STATS_INTERVAL": 5,  # seconds between publishing a process's counters; 0: never
    "CDN_HEADERS": False,  # pages: stale-while-revalidate, stale-if-error, Surrogate-Key
    "OPENTELEMETRY": False,  # spans and metrics (django_dogpile.otel): True, or {"KEYS": True}
}


def parse_dogpile_setting(value: Any) -> dict[str, Any]:
    """Validate the ``DOGPILE`` setting; raise :class:`ConfigError`."""
    merged = _with_defaults(
        value,
        DOGPILE_DEFAULTS,
        id="django_dogpile.E010",
        what="DOGPILE",
        hint="e.g. DOGPILE = {'CACHE_ALIAS': 'default', 'TIMEOUT': 300}",
        unknown_hint=f"DOGPILE takes {', '.join(DOGPILE_DEFAULTS)}.",
    )
    alias = merged["CACHE_ALIAS"]
    if alias is not None and alias not in settings.CACHES:
        raise ConfigError(
            "django_dogpile.E011",
            f"DOGPILE['CACHE_ALIAS'] names {alias!r}, which is not in CACHES.",
            f"Use one of: {', '.join(settings.CACHES)}.",
        )
    merged["TIMEOUT"] = parse_timeout(merged["TIMEOUT"], "DOGPILE['TIMEOUT']", "django_dogpile.E012")
    if not isinstance(merged["KEY_PREFIX"], str):
        raise ConfigError(
            "django_dogpile.E012",
            f"DOGPILE['KEY_PREFIX'] must be a str, not {merged['KEY_PREFIX']!r}.",
            "e.g. 'site'.",
        )
    merged["STATS_INTERVAL"] = number(
        merged["STATS_INTERVAL"],
        "DOGPILE['STATS_INTERVAL']",
        id="django_dogpile.E012",
        hint="e.g. 5; 0 never publishes the counters for `manage.py dogpile stats`.",
    )
    header = merged["STATUS_HEADER"]
    if header is not None and not isinstance(header, str):
        raise ConfigError(
            "django_dogpile.E012",
            f"DOGPILE['STATUS_HEADER'] must be a header name or None, not {header!r}.",
            "e.g. 'X-Dogpile-Cache'.",
        )
    if not isinstance(merged["CDN_HEADERS"], bool):
        raise ConfigError(
            "django_dogpile.E012",
            f"DOGPILE['CDN_HEADERS'] must be True or False, not {merged['CDN_HEADERS']!r}.",
            "True sends the headers a CDN needs to serve stale and purge by tag.",
        )
    telemetry = merged["OPENTELEMETRY"]
    if (
        isinstance(telemetry, dict)
        and set(telemetry) <= {"KEYS"}
        and telemetry.get("KEYS", False) in (True, False)
    ):
        merged["OPENTELEMETRY"] = {"KEYS": bool(telemetry.get("KEYS", False))}
    elif isinstance(telemetry, bool):
        merged["OPENTELEMETRY"] = {"KEYS": False} if telemetry else None
    else:
        raise ConfigError(
            "django_dogpile.E012",
            f"DOGPILE['OPENTELEMETRY'] must be True, False or {{'KEYS': bool}}, not {telemetry!r}.",
            "True emits spans and metrics (keys hashed); {'KEYS': True} puts the keys on the spans.",
        )
    return merged


@functools.cache
def get_config() -> dict[str, Any]:
    """Return the merged ``DOGPILE`` setting (memoised; cleared on change)."""
    try:
        return parse_dogpile_setting(getattr(settings, "DOGPILE", None))
    except ConfigError as exc:
        raise ImproperlyConfigured(f"{exc.msg} {exc.hint}") from None


@receiver(setting_changed)
def _clear_config(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DOGPILE", "CACHES"):
        get_config.cache_clear()
        _read.clear()


_Read = tuple[str, "float | None", BackendOptions, "ConfigError | None"]
_read: dict[tuple[str, str], _Read] = {}


def alias_settings(location: Any, params: dict[str, Any]) -> _Read:
    """:func:`django_dogpile.options.alias_settings`, memoized by the
    settings' ``repr``: under ASGI every request builds its own backend
    (Django's ``caches`` is per context), and reads the same settings."""
    memo = (repr(location), repr(params))
    found = _read.get(memo)
    if found is None:
        if len(_read) >= 256:
            _read.clear()
        found = _read[memo] = _options.alias_settings(location, params)
    return found


def dogpile_aliases() -> list[str]:
    """The aliases of ``CACHES`` whose ``BACKEND`` is DogpileCache or a subclass
    (a class with ``dogpile_backend = True``)."""
    from django.utils.module_loading import import_string

    found = []
    for alias, conf in getattr(settings, "CACHES", {}).items():
        backend = conf.get("BACKEND", "") if isinstance(conf, dict) else ""
        try:
            cls = import_string(backend) if isinstance(backend, str) and backend else None
        except ImportError:
            cls = None
        if isinstance(cls, type) and getattr(cls, "dogpile_backend", False) is True:
            found.append(alias)
    return found


def aliases_set_as(location: str, params: dict[str, Any]) -> list[str]:
    """The DogpileCache aliases of ``CACHES`` set exactly as ``location`` + ``params``."""
    found = []
    for alias in dogpile_aliases():
        conf = dict(settings.CACHES[alias])
        conf.pop("BACKEND", None)
        if conf.pop("LOCATION", "") == location and conf == params:
            found.append(alias)
    return found


def find_alias(location: str, params: dict[str, Any]) -> str:
    """The ``CACHES`` alias these settings came from (Django does not say).

    Django builds a backend from ``CACHES[alias]`` less ``BACKEND`` and
    ``LOCATION``: the alias is the one whose settings are exactly these.
    Two aliases set alike are told apart on first use
    (:meth:`~django_dogpile.engine.binding.Binding.settle_alias`); a backend made by hand is
    ``dogpile:<LOCATION>``.
    """
    found = aliases_set_as(location, params)
    return found[0] if found else f"dogpile:{location}"


def improperly_configured(exc: ConfigError, where: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{where}: {exc.msg} (hint: {exc.hint}) [{exc.id}]")


_warned = False


def warn_if_not_installed() -> None:
    """Log a warning, once per process, when the app is not installed.

    Without the app, ``{% load dogpile %}`` fails with Django's bare "'dogpile'
    is not a registered tag library" and ``manage.py check`` runs none of our
    checks.  DogpileCache calls this when it is built: CACHES names it whether
    or not the app is installed, and Django's own cache checks build every
    alias (``caches.W003``), so ``manage.py check`` and ``runserver`` print
    this at once.  It is not a system check: one registered when
    ``django_dogpile.cache`` is imported would not run, because that import
    happens inside the check run, after Django has listed the checks to run.
    Nor does it patch Django's template error: no public hook exists.  A
    warning, not an error: the backend works without the app.
    """
    global _warned
    if _warned or not apps.apps_ready or apps.is_installed("django_dogpile"):
        return
    _warned = True
    log.warning(
        'DogpileCache is used but "django_dogpile" is not in INSTALLED_APPS: '
        "{% load dogpile %} fails (\"'dogpile' is not a registered tag library\") "
        "and manage.py check skips the django_dogpile checks. "
        'Add "django_dogpile" to INSTALLED_APPS.'
    )
