"""The OPTIONS of a ``DogpileCache`` alias: defaults, parsing, validation.

Parsed once, by the same functions for the backend's ``__init__`` (which
keeps the error and raises it, clearly, on first use) and for the system
checks (which report the same message as ``django_dogpile.E00x``), so
``manage.py check`` catches what the first request would otherwise hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django_dogpile.rules import ConfigError, number, parse_timeout, timeout_argument

__all__ = [
    "ASYNC_POOL_DEFAULTS",
    "BACKEND_OPTION_DEFAULTS",
    "BASECACHE_OPTIONS",
    "LOCK_KINDS",
    "NEAR_CACHE_DEFAULTS",
    "BackendOptions",
    "ConfigError",
    "alias_settings",
    "backend_option_errors",
    "number",
    "parse_backend_options",
    "parse_timeout",
    "timeout_argument",
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
    "REGENERATION_BUDGET": None,  # at most this many regenerations at once, store-wide
    "TAGS_MAX_AGE": 1.0,  # seconds a tag version is trusted where no broadcast reaches
    "ASYNC_POOL": True,  # native asyncio reads on Redis: True, False or a dict (ASYNC_POOL_DEFAULTS)
    "JITTER": 0.0,  # each stored freshness shortened at random by up to this fraction
    "SOFT_TIMEOUT": None,  # seconds a regenerating caller with a stale value waits, then serves it
    # a deploy without a cold start: the record a key had under these is served stale
    "PREVIOUS_VERSION": None,  # None (off), True (the key's version - 1) or a version
    "PREVIOUS_KEY_PREFIX": None,  # None (KEY_PREFIX's) or the key prefix before the deploy
}

#: ASYNC_POOL: True, or a dict overriding these (per process and event loop)
ASYNC_POOL_DEFAULTS: dict[str, Any] = {
    "MAX_CONNECTIONS": 50,
    "TIMEOUT": 5.0,  # seconds a coroutine waits for a free connection
}

#: NEAR_CACHE: True, or a dict overriding these
NEAR_CACHE_DEFAULTS: dict[str, Any] = {
    "MAX_ENTRIES": 1000,
    "MAX_BYTES": 16 * 1024 * 1024,
    "MAX_AGE": 5.0,  # seconds; the bound when an invalidation cannot arrive
}

LOCK_KINDS = ("auto", "redis", "file", "cache", "local")

E008 = "django_dogpile.E008"
#: every numeric option but EARLY_REFRESH and NEAR_CACHE's: its check id,
#: its rule for :func:`number`, its hint
NUMERIC_OPTIONS: dict[str, tuple[str, dict[str, Any], str]] = {
    "GRACE": ("django_dogpile.E005", {}, "Seconds a stale value is still served, e.g. 600."),
    "LOCK_TIMEOUT": (
        "django_dogpile.E006",
        {"strict": True},
        "A lease must be finite and positive, e.g. 30.",
    ),
    "WAIT_TIMEOUT": ("django_dogpile.E007", {"none": True}, "None (LOCK_TIMEOUT) or seconds, e.g. 10."),
    "BACKGROUND_WORKERS": (
        E008,
        {"integer": True, "minimum": 1},
        "The pool of regeneration threads per process, e.g. 4.",
    ),
    "KEY_STATS": (E008, {"integer": True}, "How many keys to keep per-key counters for (0: off), e.g. 200."),
    "RETRY_AFTER": (E008, {}, "Seconds to serve stale before retrying a failed regeneration; 0 is off."),
    "REGENERATION_BUDGET": (
        E008,
        {"integer": True, "minimum": 1, "none": True},
        "None (no bound) or how many regenerations may run at once across every "
        "process sharing the store, e.g. 8.",
    ),
    "SOFT_TIMEOUT": (
        E008,
        {"strict": True, "none": True},
        "None (off) or the seconds a regenerating caller with a stale value waits for "
        "the new one before serving the stale (the regeneration goes on), e.g. 0.2.",
    ),
    "TAGS_MAX_AGE": (
        E008,
        {},
        "Seconds a process trusts a tag version it read, on stores with no broadcast "
        "(memcached, database, file), e.g. 1.",
    ),
}


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
    #: at most this many regenerations at once over the store (None: no bound)
    regeneration_budget: int | None = None
    #: seconds a tag version read from a store without broadcast is trusted
    tags_max_age: float = 1.0
    #: ASYNC_POOL's (MAX_CONNECTIONS, TIMEOUT), or None when off
    async_pool: tuple[int, float] | None = (50, 5.0)
    #: the fraction of a record's freshness taken off at random (0 is off)
    jitter: float = 0.0
    #: seconds a regenerating caller with a stale value waits for it (None: off)
    soft_timeout: float | None = None
    #: PREVIOUS_VERSION: None (off), True (the key's version - 1) or a version
    previous_version: int | bool | None = None
    #: PREVIOUS_KEY_PREFIX: None (the alias's KEY_PREFIX) or the prefix before
    previous_key_prefix: str | None = None

    @property
    def previous(self) -> bool:
        """True when a missing record is looked for under the previous version or prefix."""
        return self.previous_version is not None or self.previous_key_prefix is not None


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

    def early(value: Any) -> float:
        if value is True:
            return 1.0
        if value is False or value is None:
            return 0.0
        hint = "The XFetch beta: True (1.0), False (off) or a number >= 0, e.g. 1."
        return float(number(value, "OPTIONS['EARLY_REFRESH']", id=E008, hint=hint))

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

    def table(value: Any, name: str, defaults: dict[str, Any], hint: str) -> dict[str, Any] | None:
        """A dict option: False (None), True (the defaults) or a dict of them."""
        if value is False or value is None:
            return None
        if value is True:
            value = {}
        if not isinstance(value, dict) or set(value) - set(defaults):
            raise ConfigError(E008, f"OPTIONS[{name!r}] is {value!r}.", hint)
        return {**defaults, **value}

    def near_cache(value: Any) -> tuple[int, int, float] | None:
        hint = (
            "NEAR_CACHE is False (off), True, or a dict with any of MAX_ENTRIES "
            "(int > 0), MAX_BYTES (int > 0) and MAX_AGE (seconds > 0)."
        )
        near = table(value, "NEAR_CACHE", NEAR_CACHE_DEFAULTS, hint)
        if near is None:
            return None
        entries, size = (
            number(
                near[name], f"OPTIONS['NEAR_CACHE'][{name!r}]", id=E008, hint=hint, integer=True, strict=True
            )
            for name in ("MAX_ENTRIES", "MAX_BYTES")
        )
        age = number(near["MAX_AGE"], "OPTIONS['NEAR_CACHE']['MAX_AGE']", id=E008, hint=hint, strict=True)
        return int(entries), int(size), float(age)

    def async_pool(value: Any) -> tuple[int, float] | None:
        hint = (
            "ASYNC_POOL is True (a pool of 50 connections per event loop), False "
            "(every a* method in a thread), or a dict with MAX_CONNECTIONS (int > 0) "
            "and TIMEOUT (seconds > 0 a coroutine waits for a connection)."
        )
        pool = table(value, "ASYNC_POOL", ASYNC_POOL_DEFAULTS, hint)
        if pool is None:
            return None
        what = "OPTIONS['ASYNC_POOL']"
        size = number(
            pool["MAX_CONNECTIONS"],
            f"{what}['MAX_CONNECTIONS']",
            id=E008,
            hint=hint,
            integer=True,
            strict=True,
        )
        wait = number(pool["TIMEOUT"], f"{what}['TIMEOUT']", id=E008, hint=hint, strict=True)
        return int(size), float(wait)

    def jitter(value: Any) -> float:
        hint = "A fraction below 1 of each stored freshness to take off at random (0: off), e.g. 0.1."
        found = float(number(value, "OPTIONS['JITTER']", id=E008, hint=hint))
        if found >= 1:
            raise ConfigError(E008, f"OPTIONS['JITTER'] must be below 1, not {value!r}.", hint)
        return found

    def previous_version(value: Any) -> int | bool | None:
        if value is None or value is True:
            return value
        hint = (
            "None (off), True (each key's version - 1) or the VERSION the keys had before a "
            "deploy bumped it: a missing record is then served stale from there while one "
            "caller makes it anew."
        )
        return int(number(value, "OPTIONS['PREVIOUS_VERSION']", id=E008, hint=hint, integer=True))

    def previous_prefix(value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise ConfigError(
            E008,
            f"OPTIONS['PREVIOUS_KEY_PREFIX'] must be None or a str, not {value!r}.",
            "The KEY_PREFIX of this alias before a deploy changed it.",
        )

    for name, (id, rule, hint) in NUMERIC_OPTIONS.items():
        try:
            value = number(merged[name], f"OPTIONS[{name!r}]", id=id, hint=hint, **rule)
        except ConfigError as exc:
            errors.append(exc)
            continue
        values[name] = value if value is None or "integer" in rule else float(value)
    for name in ("BACKGROUND", "SERVE_STALE_ON_ERROR"):
        try:
            values[name] = flag(merged[name])
        except ConfigError as exc:
            errors.append(ConfigError(exc.id, exc.msg.replace("[...]", f"[{name!r}]"), exc.hint))
    parse("EARLY_REFRESH", early)
    parse("LOCK", lock)
    parse("NEAR_CACHE", near_cache)
    parse("ASYNC_POOL", async_pool)
    parse("JITTER", jitter)
    parse("PREVIOUS_VERSION", previous_version)
    parse("PREVIOUS_KEY_PREFIX", previous_prefix)
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
        regeneration_budget=values["REGENERATION_BUDGET"],
        tags_max_age=values["TAGS_MAX_AGE"],
        async_pool=values["ASYNC_POOL"],
        jitter=values["JITTER"],
        soft_timeout=values["SOFT_TIMEOUT"],
        previous_version=values["PREVIOUS_VERSION"],
        previous_key_prefix=values["PREVIOUS_KEY_PREFIX"],
    ), []


def parse_backend_options(options: Any) -> BackendOptions:
    """Validate a DogpileCache OPTIONS dict; raise the first :class:`ConfigError`."""
    parsed, errors = backend_option_errors(options)
    if errors:
        raise errors[0]
    assert parsed is not None
    return parsed


def alias_settings(
    location: Any, params: dict[str, Any]
) -> tuple[str, float | None, BackendOptions, ConfigError | None]:
    """A DogpileCache alias's ``LOCATION``, ``TIMEOUT`` and ``OPTIONS``, read:
    ``(location, timeout, options, error)``; with a bad setting, the
    defaults and the error (which the backend raises on first use)."""
    error: ConfigError | None = None
    timeout: float | None = 300
    options = parse_backend_options({})
    try:
        timeout = parse_timeout(params.get("TIMEOUT", params.get("timeout", 300)))
        options = parse_backend_options(params.get("OPTIONS"))
    except ConfigError as exc:
        error = exc
    if not location or not isinstance(location, str):
        error = ConfigError(
            "django_dogpile.E001",
            f"LOCATION must name the cache alias that stores the data, not {location!r}.",
            "e.g. 'store', an alias of CACHES that is not a DogpileCache.",
        )
        location = ""
    return location, timeout, options, error
