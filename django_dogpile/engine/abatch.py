"""``aget_or_set_many``: the async twin of :mod:`~django_dogpile.engine.batch`.

The one read runs on the event loop where it can (one ``MGET`` on the Redis
stores' native client), and a batch whose keys are all fresh and untagged
is answered there.  Otherwise the claims, the one creator call and the
writes (steps 2 to 4) run in the request's thread-sensitive thread, as
every regeneration does, and the keys another caller makes (step 5) are
waited for as ``aget_or_set`` waits, on the loop and together.  An ``async
def`` creator is awaited on the caller's loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT

from django_dogpile.engine import bridge
from django_dogpile.engine.batch import ABSENT, One, checked
from django_dogpile.engine.results import CacheResult
from django_dogpile.records import VALUE

__all__ = ["aget_or_set_many", "sync_creator"]


class _AOne(One):
    """:class:`_One` of an async creator (awaited on the caller's loop)."""

    async def __call__(self) -> Any:
        made = checked(await self.creator([self.key]), self.where)
        if self.key not in made:
            return CacheResult(ABSENT, store=False)
        return made[self.key]


def sync_creator(creator: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    """``creator`` callable from a worker thread, awaited when async."""

    def call(keys: list[Any]) -> Any:
        return bridge.syncify(functools.partial(creator, keys))()

    return call


async def _aget_or_set_many(
    cache: Any, keys: list[Any], creator: Any, timeout: Any, version: int | None, tags: tuple[str, ...]
) -> dict[Any, Any]:
    """The body of ``DogpileCache.aget_or_set_many``: the one read on the
    loop where it can be (an ``MGET``); the claims and the creator, if any
    key is not fresh, in the request's thread-sensitive thread; the waits
    for keys another caller makes as ``aget_or_set``'s, on the loop."""
    cache.store  # noqa: B018 - connect
    b = cache.binding
    batch = cache.batch
    batch.check(creator)
    skeys = batch.group(keys, version)
    native = b.native
    raws = None
    if skeys and not b.adapter.in_process and native is not None and native.usable:
        try:
            raws = await native.get_many(list(skeys))
        except native.errors as exc:
            native.failed(exc)
    found: dict[Any, Any] = {}
    rest = []
    for skey, users in skeys.items():
        raw = raws.get(skey) if raws is not None else None
        if type(raw) is tuple and len(raw) == 4 and b.fresh_hit(users[0], raw):  # no I/O when untagged
            for key in users:
                found[key] = raw[VALUE]
        else:
            rest.extend(users)
    if not rest:
        return found
    got, waits = await sync_to_async(batch.claim_and_make)(
        rest, sync_creator(creator), timeout, version, tags, raws
    )
    found.update(got)
    if waits:
        where, one = batch.where(), (_AOne if bridge.is_async(creator) else One)
        made = await asyncio.gather(
            *(
                bridge.aget_or_set_status(
                    cache, users[0], skey, one(creator, users[0], where), timeout, tags, version
                )
                for skey, users, _ in waits
            )
        )
        for (_, users, _), (value, _) in zip(waits, made):
            if value is not ABSENT:
                for key in users:
                    found[key] = value
    return found


async def aget_or_set_many(
    self: Any,
    keys: Iterable[Any],
    creator: Callable[[list[Any]], Any],
    timeout: Any = DEFAULT_TIMEOUT,
    version: int | None = None,
    *,
    tags: Any = None,
) -> dict[Any, Any]:
    """Async :meth:`get_or_set_many`; ``creator`` may be an async callable."""
    names = self.binding.tags.names(tags)
    return await _aget_or_set_many(self, list(keys), creator, timeout, version, names)
