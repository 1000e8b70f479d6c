"""The one rule of every numeric setting and timeout argument, and the
error a bad setting raises (re-exported by :mod:`django_dogpile.options`)."""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any

__all__ = ["ConfigError", "number", "parse_timeout", "timeout_argument"]


class ConfigError(ValueError):
    """One bad setting; ``id`` is the system check id that reports it."""

    def __init__(self, id: str, msg: str, hint: str) -> None:
        super().__init__(msg)
        self.id, self.msg, self.hint = id, msg, hint


def number(
    value: Any,
    what: str,
    *,
    id: str,
    hint: str,
    integer: bool = False,
    minimum: int | None = 0,
    strict: bool = False,
    none: bool = False,
    infinite: bool = False,
    strings: bool = True,
) -> Any:
    """``value`` read as the number ``what``: the one rule of every numeric
    setting (``TIMEOUT``, each numeric option, ``STATS_INTERVAL``), at check
    time and in the backend alike, and of timeout arguments
    (:func:`timeout_argument`, with ``strings=False``).

    As Django's ``BaseCache`` reads ``TIMEOUT``: a number, or a string
    ``int()`` reads (``"600"``, from an environment variable) -- and, for
    seconds, one ``float()`` reads (``"0.5"``, which Django would replace by
    300).  What Django would silently replace or misread is an error: a
    bool (``int(True)`` is 1), any other string or type, NaN, infinity
    (unless ``infinite``), a number below ``minimum`` (or equal to it when
    ``strict``); for an ``integer``, a fraction (``4.5``, ``"4.5"``).
    ``None`` only when ``none``.  An int stays an int.
    """
    if value is None and none:
        return None
    given = value
    if isinstance(value, str) and strings:
        try:
            value = int(value)
        except ValueError:
            if not integer:
                with contextlib.suppress(ValueError):
                    value = float(value)
    kind = "an integer" if integer else "a number of seconds"
    if minimum is not None:
        kind += f" {'>' if strict else '>='} {minimum}"
    expected = f"{'None or ' if none else ''}{kind}"
    ok = isinstance(value, numbers.Integral if integer else numbers.Real)
    if isinstance(value, bool) or not ok:
        raise ConfigError(id, f"{what} must be {expected}, not {given!r}.", hint)
    if math.isinf(value) and not infinite:
        raise ConfigError(id, f"{what} must be finite ({expected}), not {given!r}.", hint)
    if math.isnan(value) or (minimum is not None and (value < minimum or (strict and value == minimum))):
        raise ConfigError(id, f"{what} must be {expected}, not {given!r}.", hint)
    return int(value) if integer else value


def timeout_argument(value: Any, where: str, *, finite: bool = False) -> Any:
    """Validate a ``timeout`` argument (of a backend method or a decorator):
    ``None`` or a number of seconds, any sign, by :func:`number`, as
    Django's backends and ``cache_page`` take one.  Not a string: Django
    fails on ``"60"`` there (on every request, for ``cache_page``).
    ``finite``: not infinity either (a page's timeout is its ``max-age``).
    Raises :class:`TypeError` starting with ``where``."""
    hint = "Pass seconds (60, not '60') or None." if isinstance(value, str) else "Pass seconds or None."
    try:
        return number(
            value, "timeout", id="", hint=hint, minimum=None, none=True, infinite=not finite, strings=False
        )
    except ConfigError as exc:
        raise TypeError(f"{where}: {exc.msg} {exc.hint}") from None


def parse_timeout(value: Any, what: str = "TIMEOUT", id: str = "django_dogpile.E003") -> float | None:
    """Validate a ``TIMEOUT``: ``None``, or seconds >= 0 by :func:`number`
    (``math.inf`` or ``"inf"`` is ``None``: forever)."""
    hint = "None never expires, 0 caches nothing, else seconds, e.g. 300 or '300'"
    if what == "TIMEOUT":
        hint += " (Django's BaseCache would silently use 300 here)"
    value = number(value, what, id=id, hint=hint + ".", none=True, infinite=True)
    if value == math.inf:
        return None  # forever, as None
    return value  # an int stays an int (max-age)
