"""Warnings of bad times, aggregated: one line at once, then summaries.

During an outage every call that goes on degraded -- locking within its
process because the lease's store is down, a write the store would not
take -- has the same thing to say, and used to say it: 620-690 warnings
per Sentinel failover buried the one line that explained it.  Now a
warning of one *episode* (the same logger, alias and cause) is logged:

* the first time, at once, at ``WARNING``, with its detail (the error);
* then counted, each repeat logged at ``DEBUG`` only; every
  :data:`INTERVAL` seconds the episode goes on, one ``WARNING`` line says
  how many more times it happened (an interval with none ends the episode
  quietly: the next occurrence is logged at once again);
* when the cause is over (the store answered again), one line says so,
  with how long it lasted and how many calls it counted: ``WARNING`` when
  there were repeats, ``INFO`` when there were none.

Each line names the alias and the cause; the records carry
``dogpile_alias`` and ``dogpile_cause`` (for a handler or a filter).  Pure
Python: no Django.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["INTERVAL", "active", "recovered", "warn"]

#: seconds between the summaries of an episode that goes on
INTERVAL = 10.0

_lock = threading.Lock()


class _Episode:
    __slots__ = ("logger", "alias", "cause", "started", "pending", "total", "timer")

    def __init__(self, logger: logging.Logger, alias: str, cause: str) -> None:
        self.logger, self.alias, self.cause = logger, alias, cause
        self.started = time.monotonic()
        self.pending = 0  # repeats since the last line
        self.total = 0  # repeats since the first line
        self.timer: threading.Timer | None = None


_episodes: dict[tuple[str, str, str], _Episode] = {}
#: True while any episode is open: the hot path's check (read without the lock)
active = False


def warn(logger: logging.Logger, alias: str, cause: str, msg: str, *args: Any) -> None:
    """Log ``msg % args`` as one occurrence of ``cause`` on ``alias``
    (see the module docstring); ``msg`` should name the alias and the cause."""
    global active
    key = (logger.name, alias, cause)
    extra = {"dogpile_alias": alias, "dogpile_cause": cause}
    with _lock:
        episode = _episodes.get(key)
        first = episode is None
        if episode is None:
            episode = _episodes[key] = _Episode(logger, alias, cause)
            episode.timer = _arm(key)
        else:
            episode.pending += 1
            episode.total += 1
        active = True
    if first:
        logger.warning(msg + " [repeats summarised every %.0fs]", *args, INTERVAL, extra=extra)
    else:
        logger.debug(msg, *args, extra=extra)


def recovered(logger: logging.Logger, alias: str, cause: str) -> None:
    """``cause`` on ``alias`` is over: end its episode with one line."""
    global active
    if not active:
        return
    with _lock:
        episode = _episodes.pop((logger.name, alias, cause), None)
        active = bool(_episodes)
    if episode is None:
        return
    if episode.timer is not None:
        episode.timer.cancel()
    took = time.monotonic() - episode.started
    level = logging.WARNING if episode.total else logging.INFO
    logger.log(
        level,
        "%s: %s is over after %.1fs (%d more times after the first)",
        alias,
        cause,
        took,
        episode.total,
        extra={"dogpile_alias": alias, "dogpile_cause": cause},
    )


def _arm(key: tuple[str, str, str]) -> threading.Timer:
    timer = threading.Timer(INTERVAL, _summarise, args=(key,))
    timer.daemon = True
    timer.start()
    return timer


def _summarise(key: tuple[str, str, str]) -> None:
    global active
    with _lock:
        episode = _episodes.get(key)
        if episode is None:
            return
        pending, episode.pending = episode.pending, 0
        if pending:
            episode.timer = _arm(key)
        else:  # a quiet interval: the episode ends without a word
            del _episodes[key]
            active = bool(_episodes)
    if pending:
        episode.logger.warning(
            "%s: %s goes on: %d more times in the last %.0fs",
            episode.alias,
            episode.cause,
            pending,
            INTERVAL,
            extra={"dogpile_alias": episode.alias, "dogpile_cause": episode.cause},
        )
