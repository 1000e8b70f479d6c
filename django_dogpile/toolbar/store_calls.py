"""The store calls of a recorded DogpileCache call
(:mod:`~django_dogpile.toolbar.recorder`).

The wrapped Django cache's methods are wrapped on the store object itself,
once (:func:`connect_store`); redis-py's sends on its client classes, once
(:func:`wrap_redis`).  Each counts only while a recorded call is open in its
context, and a store call made inside another is that one call.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django_dogpile.engine.pool import THREAD_NAME

__all__ = ["connect_store", "wrap_redis"]

#: the call open in this context: its store calls and signals go to it
_open: ContextVar[dict[str, Any] | None] = ContextVar("django_dogpile_toolbar_call", default=None)
#: a store call is open in this context: what it sends is part of it
_in_store: ContextVar[bool] = ContextVar("django_dogpile_toolbar_store", default=False)

#: the wrapped Django cache's methods counted as store calls
STORE_METHODS = (
    "get",
    "get_many",
    "set",
    "set_many",
    "add",
    "delete",
    "delete_many",
    "touch",
    "has_key",
    "incr",
    "decr",
    "clear",
)


def _shown(key: Any) -> str:
    if isinstance(key, str):
        return key
    try:
        if isinstance(key, (list, set, frozenset, dict)):  # a batch's keys
            return ", ".join(_shown(k) for k in key)
        return repr(key)
    except Exception:  # the panel must not make a call fail
        return f"<{type(key).__name__}>"


def _pooled() -> bool:
    """This thread is one of the BACKGROUND pool's (engine/pool.py): its work
    is not the caller's, though it runs in a copy of the caller's context."""
    return threading.current_thread().name.startswith(THREAD_NAME)


def _note(label: str, args: tuple[Any, ...], fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    """Run one store call, noted on the open call unless inside another."""
    call = _open.get()
    if call is None or _in_store.get() or call["closed"] or _pooled():
        return fn(*a, **kw)
    token = _in_store.set(True)
    started = time.perf_counter()
    try:
        return fn(*a, **kw)
    finally:
        _in_store.reset(token)
        call["store"].append({"op": label, "key": _shown(args[0]) if args else "", "ms": _since(started)})


async def _anote(label: str, args: tuple[Any, ...], fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    call = _open.get()
    if call is None or _in_store.get() or call["closed"] or _pooled():
        return await fn(*a, **kw)
    token = _in_store.set(True)
    started = time.perf_counter()
    try:
        return await fn(*a, **kw)
    finally:
        _in_store.reset(token)
        call["store"].append({"op": label, "key": _shown(args[0]) if args else "", "ms": _since(started)})


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def connect_store(cache: Any) -> None:
    """Count the calls on the Django cache a DogpileCache wraps (once per
    store object: ``caches`` makes one per thread)."""
    binding = cache.binding
    if binding.connected is None:
        try:
            binding.store  # noqa: B018 - connect (an error is the call's own)
        except Exception:
            return
    store = binding.adapter.backing
    wrapped: dict[str, Any] | None = getattr(store, "_dogpile_toolbar", None)
    if wrapped is None:
        wrapped = {}  # name -> the method as it was (the toolbar's Cache panel may wrap it too)
        for name in STORE_METHODS:
            if name in vars(store):  # an instance's own (the Cache panel's wrapper)
                method = vars(store)[name]
                wrapped[name] = method
                setattr(store, name, _store_method(name, functools.partial(_same, method)))
            elif hasattr(type(store), name):
                method = getattr(store, name)
                wrapped[name] = method
                setattr(store, name, _store_method(name, functools.partial(_same, method)))
            elif hasattr(store, name):
                # looked up on each call: a store's __getattr__ may answer with
                # the calling thread's client (memcached's per-thread clients)
                wrapped[name] = getattr(store, name)
                setattr(store, name, _store_method(name, functools.partial(_lookup, store, name)))
        store._dogpile_toolbar = wrapped
    # what stands in front of it may hold its methods (the hit path's get)
    front = binding.connected
    for name, held in list(vars(front).items()) if hasattr(front, "__dict__") else ():
        if name in wrapped and (held is wrapped[name] or getattr(held, "__self__", None) is store):
            setattr(front, name, getattr(store, name))


def _lookup(store: Any, name: str) -> Any:
    """``store.name`` from the store's ``__getattr__``, for the calling thread."""
    return type(store).__getattr__(store, name)


def _same(method: Any) -> Any:
    return method


def _store_method(name: str, resolve: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        method = resolve()
        if _open.get() is None:
            return method(*args, **kwargs)
        return _note(name, args, method, *args, **kwargs)

    counted.__name__ = name
    return counted


def wrap_redis() -> None:
    """Each command or pipeline redis-py (or valkey-py) sends: sync,
    asyncio, cluster."""
    targets: list[tuple[str, str, bool, bool]] = [
        ("redis.client", "Redis", False, False),
        ("redis.client", "Pipeline", True, False),
        ("redis.cluster", "RedisCluster", False, False),
        ("redis.cluster", "ClusterPipeline", True, False),
        ("redis.asyncio.client", "Redis", False, True),
        ("redis.asyncio.client", "Pipeline", True, True),
        ("redis.asyncio.cluster", "RedisCluster", False, True),
        ("redis.asyncio.cluster", "ClusterPipeline", True, True),
        ("valkey.client", "Valkey", False, False),
        ("valkey.client", "Pipeline", True, False),
        ("valkey.cluster", "ValkeyCluster", False, False),
        ("valkey.cluster", "ClusterPipeline", True, False),
        ("valkey.asyncio.client", "Valkey", False, True),
        ("valkey.asyncio.client", "Pipeline", True, True),
        ("valkey.asyncio.cluster", "ValkeyCluster", False, True),
        ("valkey.asyncio.cluster", "ClusterPipeline", True, True),
    ]
    for module_name, class_name, pipeline, is_async in targets:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        name = "execute" if pipeline else "execute_command"
        original = cls.__dict__.get(name)
        if original is None:
            continue
        setattr(cls, name, _redis_method(original, pipeline, is_async))


def _redis_method(original: Callable[..., Any], pipeline: bool, is_async: bool) -> Callable[..., Any]:
    def label(self: Any, args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        if pipeline:
            return f"pipeline ({len(getattr(self, 'command_stack', ()))} commands)", ()
        command = str(args[0]) if args else "?"
        if command.upper() in ("EVALSHA", "EVAL", "FCALL") and len(args) > 3:
            return command, args[3:4]  # the script's first key, not its SHA
        return command, args[1:2]

    if is_async:

        @functools.wraps(original)
        async def asent(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _open.get() is None:
                return await original(self, *args, **kwargs)
            op, shown = label(self, args)
            return await _anote(op, shown, original, self, *args, **kwargs)

        return asent

    @functools.wraps(original)
    def sent(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _open.get() is None:
            return original(self, *args, **kwargs)
        op, shown = label(self, args)
        return _note(op, shown, original, self, *args, **kwargs)

    return sent
