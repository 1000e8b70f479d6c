"""Signals sent by :class:`~django_dogpile.cache.DogpileCache`.

Every signal is sent with ``sender`` = the backend class and the keyword
arguments ``alias`` (the cache alias) and ``key`` (the key the caller
passed, before ``make_key``).

* :data:`value_regenerated` -- a creator finished and its value was stored;
  extra ``duration`` (seconds), ``background`` (bool) and ``status``
  (``"EXPIRED"``: it replaced a stale value; ``"MISS"``: there was none).
* :data:`stale_served` -- a stale value was returned; extra ``reason``:
  ``"UPDATING"`` (another caller regenerates) or ``"STALE"`` (regeneration
  failed and ``SERVE_STALE_ON_ERROR`` is on).
* :data:`caller_waited` -- a caller waited for a first value; extra
  ``duration`` and ``timed_out`` (True when ``WAIT_TIMEOUT`` ran out).
* :data:`regeneration_failed` -- the creator raised; extra ``exception``.
* :data:`tags_invalidated` -- ``invalidate_tags()`` moved tags on; extra
  ``tags`` (a tuple) and ``hard`` (bool), and no ``key``.  The hook for a
  CDN's soft purge by tag (``Surrogate-Key``): connect a receiver.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = [
    "caller_waited",
    "regeneration_failed",
    "stale_served",
    "tags_invalidated",
    "value_regenerated",
]

value_regenerated = Signal()
stale_served = Signal()
caller_waited = Signal()
regeneration_failed = Signal()
tags_invalidated = Signal()
