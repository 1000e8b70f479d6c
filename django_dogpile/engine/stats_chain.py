"""The shared counters of one alias in its store: live records and a chain
of generations, changed with ``add()`` alone.

Keys (``A`` the alias)::

    dogpile.stats.A.proc.<host>.<pid>.<run>   one serving process's counters
    dogpile.stats.A.gen.<n>                   generation n (never overwritten)
    dogpile.stats.A.head                      n of the latest generation (a hint)

A generation holds ``total`` (the counts of every process folded so far),
``live`` (the records to add to it) and ``folded`` (records already in
``total``, with the counts that went in).  Generation ``n + 1`` is made from
generation ``n`` and written with ``add()``: of two processes changing the
chain at once, exactly one adds ``n + 1``; the other reads the chain again.
So a record is folded into ``total`` once, whoever folds it and however
many fold at the same time.  It needs an ``add()`` that is atomic across
processes: Redis (``SET NX``), memcached, the database cache (a primary-key
``INSERT``), locmem (one process); the file cache's is not, so there it is
taken under the lease's ``flock`` guard (one host, as the file cache is).

The sum of an alias is ``total`` of a generation plus the records live in
it, read after it; when the next generation turns up after the records
were read, the read is made again.  A record leaves ``live`` only in a
generation that folds it, and is deleted only after that generation is
written: a reader counts it from its record or from ``total``, never both
and never neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django_dogpile.stats import COUNTERS

__all__ = ["Generation", "Names", "add_counts", "advance", "read_head", "snapshot", "totals"]

Counts = dict[str, int]
Rows = dict[str, dict[str, Any]]
Add = Callable[[str, Any, "float | None"], Any]

#: generations read per round trip while looking for the latest
_WINDOW = 3
#: tries to add the next generation before leaving it to the next caller
_ATTEMPTS = 6
#: how long a generation the chain has moved past is kept (a reader that
#: read the head before it moved may still look for it)
_OLD_GENERATION = 3600.0


def zero() -> Counts:
    return dict.fromkeys(COUNTERS, 0)


def counts_of(row: Any) -> Counts:
    if not isinstance(row, dict):
        return zero()
    return {name: int(row.get(name, 0) or 0) for name in COUNTERS}


def add_counts(a: Counts, b: Counts) -> Counts:
    return {name: a.get(name, 0) + b.get(name, 0) for name in COUNTERS}


@dataclass(frozen=True)
class Names:
    """The store keys of one alias's counters."""

    alias: str

    @property
    def head(self) -> str:
        return f"dogpile.stats.{self.alias}.head"

    def gen(self, n: int) -> str:
        return f"dogpile.stats.{self.alias}.gen.{n}"

    def record(self, proc: str) -> str:
        return f"dogpile.stats.{self.alias}.proc.{proc}"


@dataclass
class Generation:
    """One generation of the chain (``n == 0``: none yet, empty)."""

    n: int = 0
    total: Counts = field(default_factory=zero)
    #: record key -> when it was registered
    live: dict[str, float] = field(default_factory=dict)
    #: record key -> {"at": when folded, "counts": what went into total}
    folded: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, n: int, value: dict[str, Any]) -> Generation:
        return cls(
            n,
            counts_of(value.get("total")),
            dict(value.get("live") or {}),
            dict(value.get("folded") or {}),
        )

    def dump(self) -> dict[str, Any]:
        return {"total": self.total, "live": self.live, "folded": self.folded}


def read_head(store: Any, names: Names, hint: int = 0) -> Generation:
    """The latest generation, looked for from ``hint`` (a generation this
    process saw) and from the head pointer, ``_WINDOW`` keys a round trip."""
    start = max(hint, 0)
    for _ in range(12):
        first = max(start, 1)
        window = range(first, first + _WINDOW)
        found = store.get_many([names.head, *(names.gen(i) for i in window)])
        pointer = found.get(names.head)
        pointer = pointer if isinstance(pointer, int) and not isinstance(pointer, bool) else 0
        present = [i for i in window if isinstance(found.get(names.gen(i)), dict)]
        if pointer > window[-1]:
            start = pointer  # the chain is further on
            continue
        if present:
            if present[-1] == window[-1]:
                start = window[-1]  # it may go on past the window
                continue
            return Generation.load(present[-1], found[names.gen(present[-1])])
        if pointer and pointer != start:
            start = pointer  # a hint from before a clear(), or too far back
            continue
        # nothing yet (or the store lost it: cleared, evicted)
        return Generation(pointer)
    raise RuntimeError(f"the counters of {names.alias!r}: the chain kept moving")


def _rows(store: Any, keys: Iterable[str]) -> Rows:
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    return {k: v for k, v in store.get_many(keys).items() if isinstance(v, dict)}


def _quiet(row: dict[str, Any] | None, since: float, now: float, quiet: float) -> bool:
    at = row.get("at", since) if row is not None else since
    return now - float(at) >= quiet


def advance(
    store: Any,
    names: Names,
    add: Add,
    quiet: float,
    *,
    register: str | None = None,
    retire: Iterable[str] = (),
    head: Generation | None = None,
) -> tuple[Generation, Rows | None]:
    """Fold the records of ``names`` quiet for ``quiet`` seconds, and those
    in ``retire`` (live or not yet registered), into the next generation;
    put ``register`` in its ``live``.  Returns the generation it ended on
    and the records read after it (the records it folded, deleted since,
    included: a caller only counts those in ``live``), or None for the
    records when other processes won every try (the next call tries again)."""
    retire = set(retire)
    hint = head.n if head is not None else 0
    for attempt in range(_ATTEMPTS):
        if head is None:
            head = read_head(store, names, hint)
        rows = _rows(store, [*head.live, *head.folded, *retire])
        now = time.time()
        fold = [k for k, since in head.live.items() if k in retire or _quiet(rows.get(k), since, now, quiet)]
        # retired before it was registered: its counts go straight to total
        fold += [k for k in retire if k in rows and k not in head.live and k not in head.folded]
        if fold:  # read again just before: one that published since is not quiet
            again = _rows(store, fold)
            fold = [k for k in fold if k in retire or again.get(k, {}).get("at") == rows.get(k, {}).get("at")]
            rows.update(again)
        leftover = [k for k in head.folded if k in rows]  # a folder that died before deleting
        prune = [k for k, f in head.folded.items() if k not in rows and now - f.get("at", 0) >= 2 * quiet]
        join = register is not None and register not in head.live and register not in head.folded
        if not (fold or prune or join):
            _delete(store, leftover)
            return head, rows
        new = Generation(head.n + 1, dict(head.total), dict(head.live), dict(head.folded))
        for k in fold:
            got = counts_of(rows.get(k))
            new.total = add_counts(new.total, got)
            new.live.pop(k, None)
            new.folded[k] = {"at": now, "counts": got}
        for k in prune:
            del new.folded[k]
        if join and register is not None:
            new.live[register] = now
        if add(names.gen(new.n), new.dump(), None):
            store.set(names.head, new.n, timeout=None)
            if head.n:
                store.set(names.gen(head.n), head.dump(), timeout=_OLD_GENERATION)
            _delete(store, [*leftover, *(k for k in fold if k in rows)])
            return new, rows
        hint, head = head.n + 1, None  # another process moved the chain on
        time.sleep(0.001 * attempt)
    return read_head(store, names, hint), None


def _delete(store: Any, keys: Iterable[str]) -> None:
    for key in keys:  # one by one: on a Redis Cluster they are in other slots
        store.delete(key)


def snapshot(store: Any, names: Names, head: Generation, rows: Rows | None) -> tuple[Generation, Rows]:
    """``head`` and records read after it that no later generation changed:
    read again while the next generation turns up."""
    rows = rows or {}
    for _ in range(_ATTEMPTS):
        missing = [k for k in head.live if k not in rows]
        if missing:
            rows = {**rows, **_rows(store, missing)}
        if store.get(names.gen(head.n + 1)) is None:
            break
        head = read_head(store, names, head.n + 1)
        rows = _rows(store, head.live)
    return head, {k: rows[k] for k in head.live if k in rows}


def totals(head: Generation, rows: Rows) -> Counts:
    """What ``head`` folded, plus its live records."""
    total = dict(head.total)
    for key, row in rows.items():
        if key in head.live:
            total = add_counts(total, counts_of(row))
    return total
