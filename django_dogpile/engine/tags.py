"""Tags: invalidate every entry that shows a thing, by its name, in O(1).

A tag is a *version* in the store, not a list of keys.  Its key is
``dogpile.tag.<tag>`` (made as any key of the alias: ``KEY_PREFIX``,
``VERSION``, the key function); its value ``(version, hard)``: a number
that each invalidation moves up (nanoseconds of the clock, and always past
the version it replaces), and the version the last hard invalidation gave
(no clock is compared: hosts whose clocks differ agree).

* **Stamping**: a regeneration reads the versions of its tags *before* its
  creator runs and stores them in the record (``records.STAMP``); so an
  invalidation that lands while the creator reads old data leaves the new
  record behind the tag, never fresh.  A tag used for the first time gets a
  version (``add``): invalidating a tag nothing ever used writes nothing.
* **Bubbling**: while a creator runs, every tagged value served to code it
  calls (a fragment in the page's template, a ``cached()`` function)
  adds its stamp to the creator's (:func:`collecting`): the page is
  invalidated by the tags of what it shows.  A tag met with two versions
  gets a version no tag ever has: the record is stale at once.
* **The check**: a tagged record whose stamp is behind the current version
  of any of its tags is stale but servable (``invalidate``); if its stamp
  is behind the version a ``hard`` invalidation gave (its regeneration
  started before it), it is a miss.  Current versions come from this process's table
  (:mod:`django_dogpile.stores.tags`), else from the store, in one read; a
  stamp *ahead* of the table (another process invalidated, and this one
  has not heard yet) is checked against the store before anything is
  decided, so no value is regenerated twice for one invalidation.  A tag
  the store lost (evicted) makes the values carrying it stale.
* **Invalidating** writes one version per tag and broadcasts it: no scan.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django_dogpile import signals
from django_dogpile.records import COST, EXPIRES, INVALIDATED, MISSING
from django_dogpile.stores import tags as tables
from django_dogpile.stores.near import family

if TYPE_CHECKING:
    from django_dogpile.engine.binding import Binding

__all__ = ["Collector", "Tags", "bubble", "collecting", "current", "tag_names"]

#: the version of a tag the store does not hold
ABSENT: tuple[int, int] = (0, 0)
#: the version given to a tag met with two versions while a value was made:
#: behind every version
CONFLICT = -1
log = logging.getLogger("django_dogpile.cache")
_OWN_MEMO_SIZE = 4096

_current: ContextVar[Collector | None] = ContextVar("django_dogpile_tags", default=None)


def tag_names(tags: Any, where: str) -> tuple[str, ...]:
    """``tags`` (a string, or an iterable of strings) as a tuple, each once.

    Raises :class:`TypeError` starting with ``where`` for anything else.
    """
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = (tags,)
    try:
        names = tuple(tags)
    except TypeError:
        raise TypeError(f"{where}: tags must be a string or a list of strings, not {tags!r}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{where}: each tag must be a non-empty string, not {name!r}")
    return tuple(dict.fromkeys(names))


class Collector:
    """The stamp of a value being made: its own tags, and those bubbled up;
    and what its creator decided of its fate (:mod:`~django_dogpile.engine.results`)."""

    __slots__ = ("pairs", "timeout", "store")

    def __init__(self, stamp: Iterable[tuple[str, Any]] = ()) -> None:
        self.pairs: dict[str, Any] = dict(stamp)
        #: the creator's own timeout (MISSING: the call's)
        self.timeout: Any = MISSING
        #: False: serve the value, store nothing
        self.store = True

    def decide(self, timeout: float | None) -> None:
        """The creator's timeout: the shortest it gave (None, inf: forever)."""
        if timeout is not None and timeout == float("inf"):
            timeout = None
        known = self.timeout
        if known is MISSING or known is None or (timeout is not None and timeout < known):
            self.timeout = timeout

    def add(self, stamp: Iterable[tuple[str, Any]]) -> None:
        pairs = self.pairs
        for tag, version in stamp:
            known = pairs.get(tag, MISSING)
            if known is MISSING:
                pairs[tag] = version
            elif known != version:
                pairs[tag] = CONFLICT

    @property
    def stamp(self) -> tuple[tuple[str, Any], ...]:
        return tuple(self.pairs.items())

    @property
    def tags(self) -> list[str]:
        """The tag names so far (a CDN's ``Surrogate-Key``)."""
        return list(self.pairs)


def current() -> Collector | None:
    """The stamp being collected in this context, if a value is being made."""
    return _current.get()


def bubble(stamp: Iterable[tuple[str, Any]]) -> None:
    """A tagged value was served: its tags go to the value being made, if any."""
    collector = _current.get()
    if collector is not None:
        collector.add(stamp)


@contextlib.contextmanager
def collecting(stamp: Iterable[tuple[str, Any]] = ()) -> Iterator[Collector]:
    """Collect the stamp of a value made inside (its maker bubbles it up
    once the value is served: :func:`bubble`)."""
    collector = Collector(stamp)
    token = _current.set(collector)
    try:
        yield collector
    finally:
        _current.reset(token)


def _tag_key(tag: str) -> str:
    if len(tag) <= 150 and tag.isprintable() and " " not in tag:
        return "dogpile.tag." + tag
    return "dogpile.tag.h." + hashlib.sha256(tag.encode()).hexdigest()


def _is_version(value: Any) -> bool:
    return type(value) is tuple and len(value) == 2


def new_version(old: tuple[int, int] = ABSENT, hard: bool = False) -> tuple[int, int]:
    """A version past ``old`` (the one it replaces); a ``hard`` one is also
    the floor below which stamps are misses."""
    version = max(time.time_ns(), old[0] + 1)
    return version, version if hard else old[1]


class Tags:
    """The tags of one backend (see the module docstring)."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self._table: tables.TagTable | None = None
        self._store: tuple[Any, Any] | None = None
        #: tag -> (its store key, the store's own key: the table's), for
        #: plain keys only (a key function may read the request: a tenant)
        self.own: dict[str, tuple[str, str]] = {}

    def connect(self, adapter: Any, store: Any) -> None:
        self._store = (adapter, store)
        self._table = None
        self.own.clear()

    @property
    def table(self) -> tables.TagTable:
        """This process's table of the store, made (and its listener
        started) when tags are first used: a site without tags pays nothing."""
        table = self._table
        if table is None:
            if self._store is None:
                self.binding.store  # noqa: B018 - connect
            assert self._store is not None
            table = self._table = tables.table_for(family(self.binding.location), *self._store)
        return table

    def names(self, tags: Any, where: str = "") -> tuple[str, ...]:
        """``tags`` as a method of the backend takes them (:func:`tag_names`)."""
        if not tags:
            return ()
        return tag_names(tags, f"DogpileCache {self.binding.alias!r}{': ' + where if where else ''}")

    def stamp_for(self, tags: Any) -> tuple[tuple[str, Any], ...]:
        """The stamp of a ``set(tags=...)``: a :class:`Collector`'s (its versions
        read when the value's making began), else the versions now."""
        if isinstance(tags, Collector):
            return tags.stamp
        return self.stamp(self.names(tags)) if tags else ()

    def keys(self, tag: str) -> tuple[str, str]:
        found = self.own.get(tag)
        if found is not None:
            return found
        b = self.binding
        skey = b.store_key(_tag_key(tag))
        found = (skey, b.ident(skey)[1])
        if b.plain_keys:
            if len(self.own) >= _OWN_MEMO_SIZE:
                self.own.clear()
            self.own[tag] = found
        return found

    # --- reading ------------------------------------------------------------

    def view(self, raw: Any, offline: bool = False) -> Any:
        """A tagged record as its tags make it: itself, stale (its expiry the
        epoch), or :data:`MISSING` (a hard invalidation since it was made,
        or a five-item tuple that is not ours: no stamp of pairs).

        ``offline``: None where the answer needs a store read (the event
        loop then asks a thread)."""
        table = self._table or self.table
        if table.child:
            table.forked()
        behind = False
        unknown: list[tuple[str, Any]] | None = None
        own = self.own
        # the hit path: an exact table (locmem) is a dict lookup per tag
        data = table._data if table.max_age is None and table.ready else None
        try:
            for tag, version in raw[4]:  # STAMP
                keys = own.get(tag) or self.keys(tag)
                if data is not None:
                    entry = data.get(keys[1])
                    now = MISSING if entry is None else entry[0]
                else:
                    now = table.get(keys[1], self.binding.options.tags_max_age)
                if now is MISSING or version > now[0]:  # unknown, or the table is behind
                    if unknown is None:
                        unknown = []
                    unknown.append((tag, version))
                elif version < now[0]:
                    if version < now[1]:
                        return MISSING
                    behind = True
            if unknown:
                if offline:
                    return None
                found = self.read([tag for tag, _ in unknown])
                for tag, version in unknown:
                    now = found[tag]
                    if version != now[0]:  # behind it, or a version the store lost
                        if version < now[1]:
                            return MISSING
                        behind = True
        except (TypeError, ValueError):  # not a stamp of (tag, version) pairs
            return MISSING
        if behind:
            return raw[:EXPIRES] + (INVALIDATED,) + raw[COST:]
        return raw

    def read(self, tags: list[str]) -> dict[str, tuple[Any, int]]:
        """The current versions of ``tags``, from the store (one read); the
        table learns them."""
        b = self.binding
        store = b.store
        table = self.table
        epoch = table.epoch
        keys = {tag: self.keys(tag) for tag in tags}
        skeys = [skey for skey, _ in keys.values()]
        if b.adapter.cluster:  # tags hash to many slots: no multi-key read
            got = {skey: store.get(skey) for skey in skeys}
        else:
            got = store.get_many(skeys)
        found = {}
        for tag, (skey, own) in keys.items():
            value: Any = got.get(skey)
            version: tuple[Any, int] = value if _is_version(value) else ABSENT
            table.put(own, version, epoch)
            found[tag] = version
        return found

    def stamp(self, tags: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
        """The versions of ``tags`` now, read from the store, before a
        regeneration's creator runs; a tag never used gets its first."""
        if not tags:
            return ()
        found = self.read(list(tags))
        store = self.binding.store
        for tag in tags:
            if not found[tag][0]:
                skey, own = self.keys(tag)
                version = new_version()
                epoch = self.table.epoch
                if store.add(skey, version, timeout=None):
                    self.table.put(own, version, epoch)
                else:  # another process gave it its first version
                    version = self.read([tag])[tag]
                found[tag] = version
        return tuple((tag, found[tag][0]) for tag in tags)

    # --- invalidating -------------------------------------------------------

    def invalidate_named(self, tags: Any, hard: bool, sender: type) -> int:
        """``DogpileCache.invalidate_tags``: check the names, invalidate,
        log, and send :data:`~django_dogpile.signals.tags_invalidated`."""
        names = self.names(tags, "invalidate_tags()")
        moved = self.invalidate(names, hard)
        alias = self.binding.alias
        log.info("invalidated tags %s (%s) on %r", ", ".join(names), "hard" if hard else "soft", alias)
        signals.tags_invalidated.send(sender, alias=alias, tags=names, hard=hard)
        return moved

    def invalidate(self, tags: tuple[str, ...], hard: bool = False) -> int:
        """Move every tag of ``tags`` to a new version; return how many were
        in use (a tag never used costs one read and writes nothing)."""
        if not tags:
            return 0
        found = self.read(list(tags))
        table = self.table
        store = self.binding.store
        moved = 0
        for tag in tags:
            old = found[tag]
            if not old[0]:
                continue
            skey, own = self.keys(tag)
            version = new_version(old, hard)
            store.set(skey, version, timeout=None)
            table.evict(own)
            table.put(own, version, table.epoch)
            table.published(own)
            moved += 1
        return moved
