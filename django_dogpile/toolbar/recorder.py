"""What the debug-toolbar panel sees: each DogpileCache call of a request.

:func:`install` (the panel's ``ready()``) wraps DogpileCache's methods once;
from then on each call reads one context variable and, when no recording is
on in its context (every request the toolbar does not show, every thread of
its own), runs as before.  :func:`recording` turns one on for the current
context: the toolbar's ``enable_instrumentation``, or a test.

A recorded call holds its method, alias, key, status word (``HIT``,
``UPDATING``, ``STALE``, ``EXPIRED``, ``MISS``; from ``get_or_set_status``
and the backend's signals), time, whether it waited or made the value, and
the store calls it made: the wrapped Django cache's methods and, under a
Redis store, each command or pipeline redis-py sends (each one round trip).
A store call made inside another (django-redis's ``get`` sends a ``GET``)
is that call, counted once.  A call the backend makes on itself (``add``
asks ``has_key``) is folded into the call that made it; a call a creator
makes -- a fragment inside a cached page -- is a row of its own, one level
deeper.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from django_dogpile import signals
from django_dogpile.cache import DogpileCache
from django_dogpile.engine import binding
from django_dogpile.faces import fragments
from django_dogpile.toolbar.store_calls import _open, _pooled, _shown, connect_store, wrap_redis

__all__ = ["Recording", "install", "installed", "recording", "start", "stop"]

#: DogpileCache's methods recorded as calls (BaseCache's ``a*`` methods not
#: listed run the sync one in a thread: recorded by its name)
METHODS = (
    "get_or_set",
    "get_or_set_status",
    "get_or_set_many",
    "get",
    "get_many",
    "add",
    "set",
    "set_many",
    "touch",
    "delete",
    "delete_many",
    "invalidate",
    "invalidate_tags",
    "has_key",
    "incr",
    "decr",
    "incr_version",
    "decr_version",
    "clear",
)
ASYNC_METHODS = ("aget_or_set", "aget_or_set_status", "aget_or_set_many", "aget", "aget_many", "ahas_key")
#: the status words, in the order a batch's tally shows them
WORDS = ("HIT", "UPDATING", "STALE", "EXPIRED", "MISS")
#: the calls that run creators: a call inside one is the creator's
MAKERS = frozenset(
    ("get_or_set", "get_or_set_status", "get_or_set_many", "prefetched")
    + ("aget_or_set", "aget_or_set_status", "aget_or_set_many")
)
BATCHES = frozenset(("get_or_set_many", "aget_or_set_many"))

#: the recording on in this context, if any
_recording: ContextVar[Recording | None] = ContextVar("django_dogpile_toolbar", default=None)

_install_lock = threading.Lock()
_installed = False


class Recording:
    """The calls made in one context while it was on, in the order they began."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def begin(self, cache: Any, method: str, key: Any, parent: dict[str, Any] | None) -> dict[str, Any]:
        """A new call of ``cache``, under ``parent`` (a creator's call) if given."""
        call: dict[str, Any] = {
            "method": method,
            "alias": cache.alias,
            "key": _shown(key),
            "status": "",
            "statuses": {},
            "ms": 0.0,
            "store": [],
            "waited_ms": None,
            "made_ms": None,
            "error": "",
            "closed": False,  # returned: what comes later (a pool thread's work) is not its
            "depth": 0 if parent is None else parent["depth"] + 1,
            "cache": id(cache),
        }
        with self._lock:
            self.calls.append(call)
        return call


@contextmanager
def recording() -> Iterator[Recording]:
    """Record the DogpileCache calls of this context (and of the threads and
    tasks it starts) until the block ends; :func:`install` must have run."""
    found = Recording()
    token = start(found)
    try:
        yield found
    finally:
        stop(token)


def start(found: Recording) -> Token[Recording | None]:
    """Record into ``found`` in this context from now on."""
    return _recording.set(found)


def stop(token: Token[Recording | None] | None) -> None:
    """Stop what :func:`start` began (in another context: stop recording there)."""
    try:
        if token is not None:
            _recording.reset(token)
            return
    except ValueError:  # made in another context
        pass
    _recording.set(None)


def installed() -> bool:
    """True once :func:`install` ran in this process."""
    return _installed


def install() -> None:
    """Wrap DogpileCache's methods, redis-py's sends and connect the signal
    receivers, once per process."""
    global _installed
    with _install_lock:
        if _installed:
            return
        originals = {name: getattr(DogpileCache, name) for name in METHODS + ASYNC_METHODS}
        for name in METHODS:
            setattr(DogpileCache, name, _wrapped(name, originals[name], originals["get_or_set_status"]))
        for name in ASYNC_METHODS:
            setattr(DogpileCache, name, _awrapped(name, originals[name], originals["aget_or_set_status"]))
        # a fragment a {% dogpile_prefetch %} read: its own row, not its page's
        fragments.serve = _wrapped("prefetched", fragments.serve, fragments.serve)
        fragments.prefetch = _wrapped("prefetch", fragments.prefetch, fragments.prefetch)  # its one read
        wrap_redis()
        signals.value_regenerated.connect(_made, weak=False, dispatch_uid="django_dogpile.toolbar")
        signals.caller_waited.connect(_waited, weak=False, dispatch_uid="django_dogpile.toolbar")
        signals.stale_served.connect(_stale, weak=False, dispatch_uid="django_dogpile.toolbar")
        signals.regeneration_failed.connect(_failed, weak=False, dispatch_uid="django_dogpile.toolbar")
        binding.counted = _counted
        _installed = True


# --- the backend's calls ------------------------------------------------------------


def _enter(cache: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The call to record for this one, or None (nothing records, or it is
    part of the open call)."""
    found = _recording.get()
    if found is None or not getattr(cache, "dogpile_backend", False):
        return None  # (fragments.serve also serves a plain cache's prefetched values)
    parent = _open.get()
    if parent is not None and (parent["closed"] or _pooled()):
        return None  # a pool thread's work for a call (BACKGROUND)
    if parent is not None and parent["cache"] == id(cache) and parent["method"] not in MAKERS:
        return None  # the backend asking itself (add -> has_key): part of the call
    key = kwargs.get("key", kwargs.get("keys", args[0] if args else ""))
    if method in ("invalidate_tags", "clear"):
        key = ", ".join(map(str, args))
    call = found.begin(cache, method, key, parent)
    if method in BATCHES:  # the keys its signals and counts may be about (None: any)
        call["keys"] = [_shown(k) for k in key] if isinstance(key, (list, tuple, set, frozenset)) else None
    elif method in MAKERS:
        call["keys"] = [_shown(key)]
    connect_store(cache)
    return call


@contextmanager
def _opened(call: dict[str, Any]) -> Iterator[None]:
    """``call`` is the open one in this context while the block runs."""
    token = _open.set(call)
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        call["error"] = call["error"] or type(exc).__name__
        raise
    finally:
        call["ms"] = (time.perf_counter() - started) * 1000
        call["closed"] = True
        _open.reset(token)


def _wrapped(name: str, fn: Callable[..., Any], status_fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _recording.get() is None:
            return fn(self, *args, **kwargs)
        call = _enter(self, name, args, kwargs)
        if call is None:
            return fn(self, *args, **kwargs)
        with _opened(call):
            if name == "get_or_set":  # the same path, returning its word
                value, call["status"] = status_fn(self, *args, **kwargs)
                return value
            result = fn(self, *args, **kwargs)
            _settle(call, name, args, kwargs, result)
            return result

    return wrapper


def _awrapped(name: str, fn: Callable[..., Any], status_fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _enter(self, name, args, kwargs) if _recording.get() is not None else None
        if call is None:
            return await fn(self, *args, **kwargs)
        with _opened(call):
            if name == "aget_or_set":
                value, call["status"] = await status_fn(self, *args, **kwargs)
                return value
            result = await fn(self, *args, **kwargs)
            _settle(call, name.removeprefix("a"), args, kwargs, result)
            return result

    return wrapper


def _settle(
    call: dict[str, Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
) -> None:
    """The status word of a call that returned ``result``."""
    if name in ("get_or_set_status", "prefetched"):
        call["status"] = result[1]
    elif name == "get_or_set_many":
        keys = kwargs.get("keys", args[0] if args else ())
        statuses = call["statuses"]
        for key in keys:
            if _shown(key) not in statuses and key in result:
                statuses[_shown(key)] = "HIT"
        call["status"] = " ".join(f"{word} {n}" for word, n in _tally(statuses.values()))
    elif name == "prefetch":
        call["status"] = f"{len(result)} of {len(args[0])} found"
    elif name == "get":
        default = kwargs.get("default", args[1] if len(args) > 1 else None)
        call["status"] = "MISS" if result is default else "HIT"
    elif name == "get_many":
        keys = list(kwargs.get("keys", args[0] if args else ()))
        call["status"] = f"HIT {len(result)} MISS {len(keys) - len(result)}" if keys else ""


def _tally(words: Any) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda item: WORDS.index(item[0]) if item[0] in WORDS else 9)


# --- the signals: waited, made, served stale, failed -----------------------------------


def _mine(key: Any) -> dict[str, Any] | None:
    """The call the signal is about: the one open where it was sent."""
    call = _open.get()
    if call is None or call["closed"] or _recording.get() is None or _pooled():
        return None
    keys = call.get("keys")
    if keys is not None and _shown(key) not in keys:
        return None  # another key's, made inside this call (a prefetched fragment's)
    return call


def _made(sender: Any, key: Any = None, duration: float = 0.0, background: bool = False, **kw: Any) -> None:
    call = _mine(key)
    if call is not None and not background:  # (a pool thread's is not the caller's time)
        call["made_ms"] = (call["made_ms"] or 0.0) + duration * 1000


def _counted(alias: str, name: str, key: Any) -> None:
    """A key's status word as the backend counted it (a batch's, per key)."""
    call = _mine(key)
    if call is not None and name in WORDS and call["alias"] == alias:
        call["statuses"][_shown(key)] = name


def _waited(sender: Any, key: Any = None, duration: float = 0.0, **kw: Any) -> None:
    call = _mine(key)
    if call is not None:
        call["waited_ms"] = (call["waited_ms"] or 0.0) + duration * 1000
        call["statuses"].setdefault(_shown(key), "MISS")  # waited, then read what another made


def _stale(sender: Any, key: Any = None, reason: str = "", **kw: Any) -> None:
    call = _mine(key)
    if call is not None:
        call["statuses"][_shown(key)] = reason


def _failed(sender: Any, key: Any = None, exception: BaseException | None = None, **kw: Any) -> None:
    call = _mine(key)
    if call is not None:
        call["error"] = f"{type(exception).__name__}: {exception}" if exception is not None else "error"
