"""The key rules of ``cached()``: one call's arguments as the function
sees them, in a canonical order, ready to pickle and hash."""

from __future__ import annotations

import hashlib
import inspect
import pickle
from collections.abc import Callable
from typing import Any

from django_dogpile.faces.common import safe_key

__all__ = ["bound", "canonical", "hashed", "signature_of"]


def hashed(face: str, name: str, value: Any, what: str, hint: str) -> str:
    """The key of one call of the function ``name``: its name and a SHA-256
    of ``value`` pickled; a ``TypeError`` naming ``what`` cannot be pickled
    and the ``key=`` that would name it (``hint``) otherwise."""
    try:
        blob = pickle.dumps(value, protocol=4)
    except Exception as exc:
        raise TypeError(
            f"{face}({name}): {what} cannot be pickled into a key ({exc}); pass {hint} to name results"
        ) from exc
    return safe_key("dogpile.fn", name, hashlib.sha256(blob).hexdigest())


def signature_of(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without one: as called
        return None


def bound(
    signature: inspect.Signature | None, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The arguments of one call as the function sees them, ready to hash.

    Each parameter by name; one left at its default, or passed a value equal
    to it, is left out (so ``f(2026)`` and ``f(2026, "all")`` are one key,
    and a default that cannot be pickled -- a lambda -- never has to be);
    sets and dicts in a canonical order (a frozenset's pickle follows the
    process's string hashing, which differs between workers).
    """
    if signature is None:
        return canonical((args, kwargs))
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}(): {exc}") from None
    named = []
    for param, value in bound.arguments.items():
        default = signature.parameters[param].default
        if default is not inspect.Parameter.empty and _same(value, default):
            continue
        named.append((param, canonical(value)))
    return named


def _same(value: Any, default: Any) -> bool:
    if value is default:
        return True
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:  # an == that raises or is ambiguous (arrays)
        return False


def canonical(value: Any) -> Any:
    """``value`` with every set and dict in a stable order."""
    if isinstance(value, (set, frozenset)):
        items = [canonical(v) for v in value]
        return (type(value).__name__, sorted(items, key=repr))
    if isinstance(value, dict):
        return ("dict", sorted(((canonical(k), canonical(v)) for k, v in value.items()), key=repr))
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(canonical(v) for v in value)
    return value
