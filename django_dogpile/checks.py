"""System checks for DogpileCache aliases and the DOGPILE setting.

Each problem has a stable id and a hint; the docs (operations) list them all.  Every
bad option of an alias is reported, each message naming the alias.

* ``django_dogpile.E001`` LOCATION missing or not a cache alias.
* ``django_dogpile.E002`` LOCATION is this alias or another DogpileCache.
* ``django_dogpile.E003`` TIMEOUT is not None or seconds >= 0.
* ``django_dogpile.E004`` OPTIONS is not a dict, or has unknown keys.
* ``django_dogpile.E005`` GRACE is not seconds >= 0.
* ``django_dogpile.E006`` LOCK_TIMEOUT is not seconds > 0.
* ``django_dogpile.E007`` WAIT_TIMEOUT is not seconds >= 0.
* ``django_dogpile.E008`` BACKGROUND, BACKGROUND_WORKERS, SERVE_STALE_ON_ERROR,
  EARLY_REFRESH or LOCK has a wrong type or value.
* ``django_dogpile.E009`` LOCK is 'redis' but the store is not a Redis we script.
* ``django_dogpile.E010`` DOGPILE is not a dict, or has unknown keys.
* ``django_dogpile.E011`` DOGPILE['CACHE_ALIAS'] is not in CACHES.
* ``django_dogpile.E012`` another DOGPILE value has a wrong type.
* ``django_dogpile.W002`` OPTIONS sets MAX_ENTRIES/CULL_FREQUENCY, which act
  on the store alias, not on the wrapper.
* ``django_dogpile.W003`` a face (``dogpile_cache_page``, ``cached``, the
  per-site cache, ``DOGPILE["CACHE_ALIAS"]``) uses an alias that is not a
  DogpileCache.
* ``django_dogpile.W006`` Django's own per-site cache middleware or
  ``cache_page`` is used over a DogpileCache alias: no protection.
* ``django_dogpile.W001`` (deploy) the store is per-process (locmem,
  dummy) or LOCK is 'local': the lock does not reach across worker processes.
* ``django_dogpile.W004`` (deploy) the lease reaches one host only (the file
  cache), or the store is unknown and its lease is a plain ``add()``.
* ``django_dogpile.E013`` (deploy) the store is a Redis Cluster with a primary
  older than 7.0 (the lease and the near cache need sharded pub/sub).
* ``django_dogpile.W005`` (deploy) the store is a Redis Cluster that could not
  be reached to check it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from django_dogpile.cache import DogpileCache
from django_dogpile.conf import (
    BASECACHE_OPTIONS,
    ConfigError,
    backend_option_errors,
    parse_dogpile_setting,
    parse_timeout,
)
from django_dogpile.stores.kinds import EVERY_HOST, ONE_HOST, ONE_PROCESS, kind_of

__all__ = ["check_caches", "check_dogpile_setting", "check_faces_use_dogpile", "check_store_is_shared"]


def _is_dogpile(backend: Any) -> bool:
    try:
        cls = import_string(backend)
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, DogpileCache)


def _dogpile_aliases() -> list[tuple[str, dict[str, Any]]]:
    return [(alias, conf) for alias, conf in settings.CACHES.items() if _is_dogpile(conf.get("BACKEND", ""))]


def _error(exc: ConfigError, alias: str) -> Error:
    return Error(f"CACHES[{alias!r}]: {exc.msg}", hint=exc.hint, id=exc.id, obj=alias)


@register(Tags.caches)
def check_caches(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Validate every DogpileCache alias in CACHES."""
    errors: list[Any] = []
    for alias, conf in _dogpile_aliases():
        location = conf.get("LOCATION")
        if not location or not isinstance(location, str) or location not in settings.CACHES:
            errors.append(
                Error(
                    f"CACHES[{alias!r}]['LOCATION'] must name the alias that stores "
                    f"the data; {location!r} is not one.",
                    hint=f"Configured aliases: {', '.join(settings.CACHES)}.",
                    id="django_dogpile.E001",
                    obj=alias,
                )
            )
        elif location == alias or _is_dogpile(settings.CACHES[location].get("BACKEND", "")):
            errors.append(
                Error(
                    f"CACHES[{alias!r}]['LOCATION'] is {location!r}, "
                    + ("this alias itself." if location == alias else "another DogpileCache."),
                    hint="Point LOCATION at a real store (locmem, django-redis, memcached, database, file).",
                    id="django_dogpile.E002",
                    obj=alias,
                )
            )
        try:
            parse_timeout(conf.get("TIMEOUT", 300))
        except ConfigError as exc:
            errors.append(_error(exc, alias))
        options, problems = backend_option_errors(conf.get("OPTIONS"))
        errors.extend(_error(exc, alias) for exc in problems)
        if options is None:
            continue
        ignored = [o for o in BASECACHE_OPTIONS if o in (conf.get("OPTIONS") or {})]
        if ignored:
            errors.append(
                Warning(
                    f"CACHES[{alias!r}]['OPTIONS'] sets {', '.join(ignored)}, which "
                    f"limit the store, not the wrapper: they do nothing here.",
                    hint=f"Set them in the OPTIONS of the store alias {location!r}.",
                    id="django_dogpile.W002",
                    obj=alias,
                )
            )
        store = settings.CACHES.get(location, {}) if isinstance(location, str) else {}
        backend = store.get("BACKEND", "")
        if options.lock == "redis" and not (
            backend.startswith(("django_redis.", "django_valkey."))
            or backend == "django.core.cache.backends.redis.RedisCache"
        ):
            errors.append(
                Error(
                    f"CACHES[{alias!r}]: LOCK is 'redis' but the store "
                    f"{location!r} is {store.get('BACKEND')!r}.",
                    hint="Use LOCK 'auto', or a django-redis, django-valkey or Django RedisCache store.",
                    id="django_dogpile.E009",
                    obj=alias,
                )
            )
    return errors


@register(Tags.caches)
def check_dogpile_setting(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Validate the DOGPILE setting."""
    try:
        parse_dogpile_setting(getattr(settings, "DOGPILE", None))
    except ConfigError as exc:
        return [Error(exc.msg, hint=exc.hint, id=exc.id, obj="DOGPILE")]
    return []


@register(Tags.caches)
def check_faces_use_dogpile(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Warn when a face is configured onto an alias that is not a DogpileCache.

    Reads ``DOGPILE["CACHE_ALIAS"]`` and every ``dogpile_cache_page`` and
    ``cached`` made so far (the URLconf is imported first, so the views'
    decorators have run).
    """
    from django_dogpile.faces.common import declared, resolve_alias

    try:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018 - imports the views
    except Exception:  # the URL checks report a broken URLconf
        pass
    try:
        configured = getattr(settings, "DOGPILE", None) or {}
        uses: set[tuple[str, str | None]] = set(declared)
        if isinstance(configured, dict) and configured.get("CACHE_ALIAS") is not None:
            uses.add(('DOGPILE["CACHE_ALIAS"]', None))
        if set(settings.MIDDLEWARE) & set(_OUR_CACHE_MIDDLEWARE):
            uses.add(("the per-site cache", getattr(settings, "CACHE_MIDDLEWARE_ALIAS", "default")))
        warnings = []
        seen = set()
        for face, alias in sorted(uses, key=str):
            name = resolve_alias(alias)
            conf = settings.CACHES.get(name)
            if conf is None or _is_dogpile(conf.get("BACKEND", "")) or (face, name) in seen:
                continue
            seen.add((face, name))
            warnings.append(
                Warning(
                    f"{face} uses the cache {name!r}, which is {conf.get('BACKEND')}, "
                    "not a DogpileCache: it works, with no stampede protection.",
                    hint=f'Give it cache="<a DogpileCache alias>", or make {name!r} a '
                    "DogpileCache over the store (LOCATION) it uses now.",
                    id="django_dogpile.W003",
                    obj=name,
                )
            )
        return warnings
    except Exception:  # a bad DOGPILE setting is E010-E012's to report
        return []


_DJANGOS_CACHE_MIDDLEWARE = tuple(
    f"django.middleware.cache.{name}"
    for name in ("UpdateCacheMiddleware", "FetchFromCacheMiddleware", "CacheMiddleware")
)
_OUR_CACHE_MIDDLEWARE = tuple(
    m.replace("django.middleware.cache", "django_dogpile.middleware") for m in _DJANGOS_CACHE_MIDDLEWARE
)


@register(Tags.caches)
def check_djangos_cache_faces(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Warn when Django's own per-site cache or ``cache_page`` runs over a
    DogpileCache alias: they read and write with ``get``/``set``, so every
    concurrent request runs the view at each expiry."""
    dogpile = {alias for alias, _ in _dogpile_aliases()}
    found = []
    used = [m for m in settings.MIDDLEWARE if m in _DJANGOS_CACHE_MIDDLEWARE]
    alias = getattr(settings, "CACHE_MIDDLEWARE_ALIAS", "default")
    if used and alias in dogpile:
        found.append(
            Warning(
                f"{', '.join(used)} runs over the DogpileCache alias {alias!r} (CACHE_MIDDLEWARE_ALIAS): "
                "Django's middleware uses get() and set(), so it gets no stampede protection.",
                hint="Use "
                + " and ".join(
                    m.replace("django.middleware.cache", "django_dogpile.middleware") for m in used
                )
                + " in the same places of MIDDLEWARE.",
                id="django_dogpile.W006",
                obj=alias,
            )
        )
    try:
        from django.urls import get_resolver

        views = list(_views(get_resolver().url_patterns))
    except Exception:  # the URL checks report a broken URLconf
        views = []
    for name, view in views:
        middleware = _cache_page_of(view)
        alias = getattr(middleware, "cache_alias", None)
        if alias in dogpile:
            found.append(
                Warning(
                    f"the view {name} is decorated with Django's cache_page over the DogpileCache "
                    f"alias {alias!r}: it gets no stampede protection.",
                    hint=f'Use django_dogpile.decorators.dogpile_cache_page(..., cache="{alias}") instead.',
                    id="django_dogpile.W006",
                    obj=name,
                )
            )
    return found


def _views(patterns: Any, prefix: str = "") -> Any:
    """``(route, view)`` of every URL pattern, included URLconfs too."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if hasattr(pattern, "url_patterns"):
            yield from _views(pattern.url_patterns, route)
        elif callable(getattr(pattern, "callback", None)):
            yield route, pattern.callback


def _cache_page_of(view: Any) -> Any:
    """The ``CacheMiddleware`` that Django's ``cache_page`` wrapped ``view``
    in, or None: it is in the closure of the wrapper or of the helpers the
    wrapper calls (Django 5), down the ``__wrapped__`` chain."""
    from django.middleware.cache import CacheMiddleware

    todo, seen = [view], 0
    while todo and seen < 50:
        fn = todo.pop()
        seen += 1
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(content, CacheMiddleware):
                return content
            if callable(content) and hasattr(content, "__closure__"):
                todo.append(content)
        if getattr(fn, "__wrapped__", None) is not None:
            todo.append(fn.__wrapped__)
    return None


def _lease_reach(backend: str, lock: str) -> tuple[str, str, str] | None:
    """``(id, problem, hint)`` when a store's lease does not reach every
    worker of a deployment, or cannot be trusted to; None when it does.
    How far a lease reaches is the store table's (:data:`~django_dogpile.stores.kinds.KINDS`)."""
    shared = "Use a shared store: Redis (django-redis, django-valkey, Django's RedisCache), memcached or the database cache."
    kind = kind_of(backend)
    if kind.reach == ONE_PROCESS or lock == "local":
        what = (
            f"{backend}, which each worker process has to itself"
            if kind.reach == ONE_PROCESS
            else (f"{backend} with LOCK 'local', a lock inside each process")
        )
        return (
            "django_dogpile.W001",
            f"stores its data in {what}: every process regenerates on its own.",
            shared,
        )
    if kind.reach == ONE_HOST:
        return (
            "django_dogpile.W004",
            f"stores its data in {backend}: the lease ({kind.native}) holds "
            "for the processes of one host; hosts sharing the directory over "
            "NFS or similar cannot rely on flock.",
            "Fine for one host.  " + shared,
        )
    if kind.reach == EVERY_HOST or lock == "redis":
        return None  # (E009 reports a LOCK 'redis' that cannot hold)
    return (
        "django_dogpile.W004",
        f"stores its data in {backend}, which django-dogpile does not know: its "
        "lease is the store's add(), a lock only if add() is atomic across processes.",
        "If add() is atomic (memcached-like), silence this with "
        "SILENCED_SYSTEM_CHECKS; otherwise " + shared[0].lower() + shared[1:],
    )


@register(Tags.caches, deploy=True)
def check_store_is_shared(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Warn when a DogpileCache's lease does not reach every worker, naming the store."""
    warnings = []
    for alias, conf in _dogpile_aliases():
        location = conf.get("LOCATION")
        if not isinstance(location, str) or location not in settings.CACHES:
            continue  # E001 (check_caches) reports it
        store = settings.CACHES[location]
        options = conf.get("OPTIONS")
        lock = options.get("LOCK", "auto") if isinstance(options, dict) else "auto"
        reach = _lease_reach(str(store.get("BACKEND", "")), lock)
        if reach is not None:
            id_, problem, hint = reach
            warnings.append(
                Warning(
                    f"CACHES[{alias!r}] (store {conf.get('LOCATION')!r}) {problem}",
                    hint=hint,
                    id=id_,
                    obj=alias,
                )
            )
    return warnings


@register(Tags.caches, deploy=True)
def check_cluster_stores(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Check that a Redis Cluster store can hold the lease: every primary
    must speak sharded pub/sub (Redis or Valkey >= 7.0).  It asks the
    cluster (this check is for deployments, where the cluster is there)."""
    from django.core.cache import caches

    from django_dogpile.stores.pubsub import is_cluster

    found: list[Any] = []
    for alias, conf in _dogpile_aliases():
        location = conf.get("LOCATION")
        if not isinstance(location, str) or location not in settings.CACHES:
            continue
        store = caches[location]
        client = getattr(store, "client", None)
        if client is None or not hasattr(client, "get_client"):
            continue
        backend = str(settings.CACHES[location].get("BACKEND", ""))
        if "cluster" not in backend.lower():
            continue  # a one-node client: nothing to ask
        try:
            raw = client.get_client(write=True)
            if not is_cluster(raw):
                continue
            versions = {
                node.name: str(raw.info("server", target_nodes=node).get("redis_version", "0"))
                for node in raw.get_primaries()
            }
        except Exception as exc:  # unreachable now: say so, do not fail the deploy
            found.append(
                Warning(
                    f"CACHES[{alias!r}] (store {location!r}) is a Redis Cluster that could not be "
                    f"reached to check it: {exc}",
                    hint="Run the check where the cluster is reachable.",
                    id="django_dogpile.W005",
                    obj=alias,
                )
            )
            continue
        old = {name: v for name, v in versions.items() if _major(v) < 7}
        if old:
            found.append(
                Error(
                    f"CACHES[{alias!r}] (store {location!r}): the Redis Cluster has primaries older "
                    f"than 7.0 ({', '.join(f'{n} {v}' for n, v in sorted(old.items()))}); the lease's "
                    "wake-up and the near cache use sharded pub/sub (SPUBLISH, SSUBSCRIBE).",
                    hint="Upgrade every node to Redis or Valkey 7.0 or later.",
                    id="django_dogpile.E013",
                    obj=alias,
                )
            )
    return found


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0
