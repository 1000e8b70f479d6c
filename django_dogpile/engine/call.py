"""What one dogpile-protected ``get_or_set`` saw and did, as the dogpile
path (:mod:`django_dogpile.engine.path`) carries it from read to write."""

from __future__ import annotations

from typing import Any

from django_dogpile.records import CREATED, MISSING, STAMP, is_record

__all__ = ["Call", "stamp_of"]


class Call:
    """What happened inside one dogpile-protected ``get_or_set``."""

    __slots__ = (
        "reads",
        "stale",
        "outcome",
        "first",
        "seen_created",
        "tags",
        "stamp",
        "soft",
        "kept",
        "handed",
        "inherited",
    )

    def __init__(self, first: Any, tags: tuple[str, ...]) -> None:
        self.first = first
        #: creation time of the record this call started from (None: none)
        self.seen_created: float | None = first[CREATED] if is_record(first) else None
        self.reads = 0
        self.stale: Any = MISSING
        self.outcome = "UPDATING"
        #: the tags the caller gave (stamped when a regeneration starts)
        self.tags = tags
        #: the stamp of the value served (it bubbles up to a value being made)
        self.stamp: tuple[Any, ...] = ()
        #: SOFT_TIMEOUT: (the pool thread's "done", [what it made], the stale stamp)
        self.soft: tuple[Any, list[Any], Any] | None = None
        #: False when the value served was made and not stored (its creator said so)
        self.kept = True
        #: the stamp of the stale value served when the regeneration went to a
        #: pool thread (which then writes ``stamp`` and ``kept`` of the new one)
        self.handed: tuple[Any, ...] | None = None
        #: ``first`` is the record of the key before a deploy (PREVIOUS_VERSION,
        #: PREVIOUS_KEY_PREFIX): served stale, never a fence for this key
        self.inherited = False

    def inherit(self, record: Any) -> None:
        """Start from ``record``, the key's record before a deploy: stale,
        while this key still has no record of its own."""
        self.first = record
        self.inherited = True


def stamp_of(record: Any) -> tuple[Any, ...]:
    """The stamp of a record (``()``: untagged)."""
    return record[STAMP] if len(record) == 5 else ()
