"""The record kept in the store: the value, when it was made, until when fresh.

One store key holds a tuple ``(value, created, expires, cost)``, or
``(value, created, expires, cost, stamp)`` for a value with tags:

* ``created`` -- :func:`now` when the value was computed (for ``Age``);
* ``expires`` -- when it stops being fresh; ``None`` for never;
* ``cost`` -- seconds the computation took (the XFetch rule uses it);
* ``stamp`` -- the value's tags, each with the version it had when the
  regeneration *started*: ``((tag, version), ...)``
  (:mod:`django_dogpile.engine.tags`).  A record whose stamp is behind the
  current versions is stale (or gone, after a hard invalidation).

So a fresh hit is exactly one store read.  The store keeps the record for
``freshness + GRACE`` seconds: past ``expires`` it is *stale* (a miss for
``get``, servable by ``get_or_set`` while one caller regenerates), past
``expires + GRACE`` it is gone.  ``invalidate()`` sets ``expires`` to
:data:`INVALIDATED`.

Clocks: ``expires`` is written by the host that stores the record and
compared with each reader's clock, so hosts whose clocks differ by *s*
seconds see a value go stale up to *s* seconds apart (and ``Age`` is off by
as much); keep hosts on NTP (skew well under a second) and freshness well
above the skew.  An invalidation does not depend on any clock.  A tuple pickles smaller and
faster than any class would.
"""

from __future__ import annotations

import random
import time
from typing import Any, NamedTuple

__all__ = [
    "COST",
    "CREATED",
    "EXPIRES",
    "INVALIDATED",
    "MISSING",
    "STAMP",
    "VALUE",
    "Record",
    "is_fresh",
    "is_record",
    "now",
    "store_timeout",
    "wall_clock",
]

#: "No value": absent from the store, not read, nothing kept.
MISSING: Any = object()

#: The record's fields by position (records are plain tuples in the store).
VALUE, CREATED, EXPIRES, COST, STAMP = 0, 1, 2, 3, 4

#: The clock for freshness decisions (``time.time``, bound once: it is on
#: the hot path).  ``django_dogpile.testing.Clock`` replaces it to move time
#: forward without sleeping; call it through the module (``records.now()``)
#: so the replacement is seen.
now = time.time
_REAL_NOW = now


def wall_clock() -> float:
    """The time for what a person reads (``Age``): :data:`now` when a test
    replaced it, else ``time.time()`` looked up at the call (so a test that
    patches ``time.time``, as Django's own do, moves it too)."""
    return now() if now is not _REAL_NOW else time.time()


#: The ``expires`` of an invalidated record: the epoch, in the past for every
#: host whatever its clock.  Such a record is stale everywhere and stays
#: servable for as long as the store keeps it (``GRACE``).
INVALIDATED = 0.0


class Record(NamedTuple):
    """A record's fields by name; stored as ``tuple(Record(...))``."""

    value: Any
    created: float
    expires: float | None
    cost: float = 0.0


def is_record(raw: Any) -> bool:
    """Return True if ``raw`` read from the store is one of our records."""
    return type(raw) is tuple and 4 <= len(raw) <= 5 or type(raw) is Record


def is_fresh(raw: Any, at: float) -> bool:
    """Return True if ``raw`` is one of our records and fresh at ``at``."""
    return is_record(raw) and (raw[EXPIRES] is None or at < raw[EXPIRES])


def expires_at(at: float, fresh_for: float | None, jitter: float = 0.0) -> float | None:
    """When a record made at ``at`` stops being fresh (None: never):
    ``fresh_for`` later, shortened at random by up to ``jitter`` of itself
    (``OPTIONS["JITTER"]``), so records written together do not all expire
    together."""
    if fresh_for is None:
        return None
    if jitter:
        fresh_for -= fresh_for * jitter * random.random()
    return at + fresh_for


def store_timeout(expires: float | None, grace: float, at: float) -> float | None:
    """Return the store timeout that keeps a record servable for ``grace``."""
    if expires is None:
        return None
    return max(expires - at, 0) + grace
