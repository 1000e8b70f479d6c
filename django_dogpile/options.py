"""The OPTIONS of a ``DogpileCache`` alias: defaults, parsing, validation.

Parsed once, by the same functions for the backend's ``__init__`` (which
keeps the error and raises it, clearly, on first use) and for the system
checks (which report the same message as ``django_dogpile.E00x``), so
``manage.py check`` catches what the first request would otherwise hit.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BACKEND_OPTION_DEFAULTS",
    "BASECACHE_OPTIONS",
    "LOCK_KINDS",
    "NEAR_CACHE_DEFAULTS",
    "BackendOptions",
    "ConfigError",
    "backend_option_errors",
    "parse_backend_options",
    "parse_timeout",
]

#: OPTIONS of a ``DogpileCache`` alias, with their defaults.
BACKEND_OPTION_DEFAULTS: dict[str, Any] = {
    "GRACE": 600,
    "LOCK_TIMEOUT": 30,
    "WAIT_TIMEOUT": None,  # None: the same as LOCK_TIMEOUT
    "BACKGROUND": False,
    "BACKGROUND_WORKERS": 4,
    "SERVE_STALE_ON_ERROR": False,
    "EARLY_REFRESH": False,
    "LOCK": "auto",
    "KEY_STATS": 0,  # per-key counters for up to this many keys; 0 is off
    "RETRY_AFTER": 0,  # seconds to serve stale before retrying a failed regeneration
    "NEAR_CACHE": False,  # a per-process copy of hot fresh records (see near.py)
}

#: NEAR_CACHE: True, or a dict overriding these
NEAR_CACHE_DEFAULTS: dict[str, Any] = {
    "MAX_ENTRIES": 1000,
    "MAX_BYTES": 16 * 1024 * 1024,
    "MAX_AGE": 5.0,  # seconds; the bound when an invalidation cannot arrive
}

LOCK_KINDS = ("auto", "redis", "file", "cache", "local")


class ConfigError(ValueError):
    """One bad setting; ``id`` is the system check id that reports it."""

    def __init__(self, id: str, msg: str, hint: str) -> None:
        super().__init__(msg)
        self.id, self.msg, self.hint = id, msg, hint


@dataclass(frozen=True)
class BackendOptions:
    grace: float
    lock_timeout: float
    wait_timeout: float
    background: bool
    background_workers: int
    serve_stale_on_error: bool
    early_refresh: float  # beta of the XFetch rule; 0 is off
    lock: str
    key_stats: int = 0
    retry_after: float = 0.0
    #: (MAX_ENTRIES, MAX_BYTES, MAX_AGE), or None when off
    near_cache: tuple[int, int, float] | None = None


def _number(name: str, value: Any, *, id: str, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            id,
            f"OPTIONS[{name!r}] must be a number of seconds, not {value!r}.",
            f"Set {name} to a non-negative int or float, e.g. 30.",
        )
    if not math.isfinite(value):
        raise ConfigError(
            id,
            f"OPTIONS[{name!r}] must be a finite number of seconds, not {value!r}.",
            f"Set {name} to a non-negative int or float, e.g. 30.",
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            id,
            f"OPTIONS[{name!r}] must be {'>= 0' if allow_zero else '> 0'}, not {value!r}.",
            "A lease must be finite and positive, e.g. 30."
            if not allow_zero
            else "Use a non-negative number of seconds, e.g. 30.",
        )
    return float(value)


def parse_timeout(value: Any) -> float | None:
    """Validate a cache's ``TIMEOUT`` (``None`` or seconds >= 0).

    A numeric string (as read from an environment variable) is taken as
    Django's ``BaseCache`` takes it, with ``int()`` -- or ``float()``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(
                    "django_dogpile.E003",
                    f"TIMEOUT must be None or a number of seconds, not {value!r}.",
                    "Django's BaseCache would silently use 300 here; set e.g. 300.",
                ) from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            "django_dogpile.E003",
            f"TIMEOUT must be None or a number of seconds, not {value!r}.",
            "Django's BaseCache would silently use 300 here; set e.g. 300.",
        )
    if math.isnan(value):
        raise ConfigError(
            "django_dogpile.E003",
            "TIMEOUT must be a number of seconds, not NaN.",
            "Use None to never expire, or seconds, e.g. 300.",
        )
    if value < 0:
        raise ConfigError(
            "django_dogpile.E003",
            f"TIMEOUT must not be negative ({value!r}).",
            "Use 0 to cache nothing, None to never expire, or seconds.",
        )
    if value == math.inf:
        return None  # forever, as None
    return value  # type: ignore[return-value]  # an int stays an int (max-age)


def _with_defaults(
    value: Any,
    defaults: dict[str, Any],
    *,
    id: str,
    what: str,
    hint: str,
    unknown_hint: str,
    ignored: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``defaults`` updated by ``value``, a dict (or None) of known keys only."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(id, f"{what} must be a dict, not {type(value).__name__}.", hint)
    unknown = sorted(set(value) - set(defaults) - set(ignored))
    if unknown:
        raise ConfigError(id, f"Unknown {what} keys: {', '.join(map(repr, unknown))}.", unknown_hint)
    return {**defaults, **{k: v for k, v in value.items() if k not in ignored}}


#: BaseCache's own OPTIONS: accepted (Django's tests set them on any alias),
#: but they act on the store alias, not on the wrapper (a check warns).
BASECACHE_OPTIONS = ("MAX_ENTRIES", "CULL_FREQUENCY")


def backend_option_errors(options: Any) -> tuple[BackendOptions | None, list[ConfigError]]:
    """Validate a DogpileCache OPTIONS dict: the options, and *every* error."""
    try:
        merged = _with_defaults(
            options,
            BACKEND_OPTION_DEFAULTS,
            id="django_dogpile.E004",
            what="OPTIONS",
            hint="See the README for the options DogpileCache takes.",
            unknown_hint=f"DogpileCache takes {', '.join(BACKEND_OPTION_DEFAULTS)}; "
            "options of the store belong to the store's alias.",
            ignored=BASECACHE_OPTIONS,
        )
    except ConfigError as exc:
        return None, [exc]
    errors: list[ConfigError] = []
    values: dict[str, Any] = {}

    def parse(name: str, fn: Any) -> None:
        try:
            values[name] = fn(merged[name])
        except ConfigError as exc:
            errors.append(exc)

    def flag(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(
                "django_dogpile.E008",
                f"OPTIONS[...] must be True or False, not {value!r}.",
                "Use a bool.",
            )
        return value

    def workers(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                "django_dogpile.E008",
                f"OPTIONS['BACKGROUND_WORKERS'] must be an int >= 1, not {value!r}.",
                "The pool of regeneration threads per process, e.g. 4.",
            )
        return value

    def early(value: Any) -> float:
        if value is True:
            return 1.0
        if value is False or value is None:
            return 0.0
        return _number("EARLY_REFRESH", value, id="django_dogpile.E008")

    def lock(value: Any) -> str:
        if value not in LOCK_KINDS:
            raise ConfigError(
                "django_dogpile.E008",
                f"OPTIONS['LOCK'] must be one of {LOCK_KINDS}, not {value!r}.",
                "'auto' picks a Redis lease on django-redis, django-valkey and "
                "Django's RedisCache, a lease file on the "
                "file cache, an add() lease on other shared stores and the "
                "in-process lock on locmem.",
            )
        return value

    def key_stats(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                "django_dogpile.E008",
                f"OPTIONS['KEY_STATS'] must be an int >= 0, not {value!r}.",
                "How many keys to keep per-key counters for (0: off), e.g. 200.",
            )
        return value

    def near_cache(value: Any) -> tuple[int, int, float] | None:
        hint = (
            "NEAR_CACHE is False (off), True, or a dict with any of MAX_ENTRIES "
            "(int > 0), MAX_BYTES (int > 0) and MAX_AGE (seconds > 0)."
        )
        if value is False or value is None:
            return None
        if value is True:
            value = {}
        if not isinstance(value, dict) or set(value) - set(NEAR_CACHE_DEFAULTS):
            raise ConfigError("django_dogpile.E008", f"OPTIONS['NEAR_CACHE'] is {value!r}.", hint)
        near = {**NEAR_CACHE_DEFAULTS, **value}
        for name in ("MAX_ENTRIES", "MAX_BYTES"):
            if isinstance(near[name], bool) or not isinstance(near[name], int) or near[name] <= 0:
                raise ConfigError(
                    "django_dogpile.E008", f"OPTIONS['NEAR_CACHE']['{name}'] is {near[name]!r}.", hint
                )
        age = _number("NEAR_CACHE MAX_AGE", near["MAX_AGE"], id="django_dogpile.E008", allow_zero=False)
        return near["MAX_ENTRIES"], near["MAX_BYTES"], age

    parse("GRACE", lambda v: _number("GRACE", v, id="django_dogpile.E005"))
    parse("LOCK_TIMEOUT", lambda v: _number("LOCK_TIMEOUT", v, id="django_dogpile.E006", allow_zero=False))
    parse(
        "WAIT_TIMEOUT", lambda v: None if v is None else _number("WAIT_TIMEOUT", v, id="django_dogpile.E007")
    )
    for name in ("BACKGROUND", "SERVE_STALE_ON_ERROR"):
        try:
            values[name] = flag(merged[name])
        except ConfigError as exc:
            errors.append(ConfigError(exc.id, exc.msg.replace("[...]", f"[{name!r}]"), exc.hint))
    parse("BACKGROUND_WORKERS", workers)
    parse("EARLY_REFRESH", early)
    parse("LOCK", lock)
    parse("KEY_STATS", key_stats)
    parse("RETRY_AFTER", lambda v: _number("RETRY_AFTER", v, id="django_dogpile.E008"))
    parse("NEAR_CACHE", near_cache)
    if errors:
        return None, errors
    lock_timeout = values["LOCK_TIMEOUT"]
    return BackendOptions(
        retry_after=values["RETRY_AFTER"],
        key_stats=values["KEY_STATS"],
        grace=values["GRACE"],
        lock_timeout=lock_timeout,
        wait_timeout=lock_timeout if values["WAIT_TIMEOUT"] is None else values["WAIT_TIMEOUT"],
        background=values["BACKGROUND"],
        background_workers=values["BACKGROUND_WORKERS"],
        serve_stale_on_error=values["SERVE_STALE_ON_ERROR"],
        early_refresh=values["EARLY_REFRESH"],
        lock=values["LOCK"],
        near_cache=values["NEAR_CACHE"],
    ), []


def parse_backend_options(options: Any) -> BackendOptions:
    """Validate a DogpileCache OPTIONS dict; raise the first :class:`ConfigError`."""
    parsed, errors = backend_option_errors(options)
    if errors:
        raise errors[0]
    assert parsed is not None
    return parsed
