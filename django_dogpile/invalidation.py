"""Invalidate by meaning: by tag, by a page's URL, when a model changes.

::

    from django_dogpile.invalidation import invalidate_on_change, invalidate_tags

    invalidate_on_change(Product, tags=lambda p: [f"product:{p.pk}", f"category:{p.category_id}"])
    invalidate_tags("category:shoes")           # every alias; stale but servable
    invalidate_tags("category:shoes", hard=True)  # misses instead

Each entry point makes what carries the tag *stale but servable*: the next
caller of each value gets the old one at hit speed while one caller
regenerates it (:mod:`django_dogpile.engine.tags`).  ``invalidate_page``
does the same for every stored variant of a URL
(:mod:`django_dogpile.faces.page_index`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.db import models, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from django_dogpile.conf import dogpile_aliases
from django_dogpile.engine.tags import tag_names
from django_dogpile.faces.page_index import invalidate_page

__all__ = ["ainvalidate_tags", "invalidate_on_change", "invalidate_page", "invalidate_tags"]

log = logging.getLogger("django_dogpile.invalidation")


def invalidate_tags(*tags: str, hard: bool = False, using: Iterable[str] | str | None = None) -> int:
    """Invalidate ``tags`` on every DogpileCache alias (or those of ``using``).

    Return how many (alias, tag) pairs were in use; a tag nothing carries
    costs one read per alias and writes nothing.  Aliases over one store
    with one ``KEY_PREFIX`` share their tags: each invalidates them once
    more, which costs a write and changes nothing.
    """
    names = tag_names(tags, "invalidate_tags()")
    aliases = dogpile_aliases() if using is None else [using] if isinstance(using, str) else list(using)
    moved = 0
    for alias in aliases:
        cache = caches[alias]
        if not hasattr(cache, "invalidate_tags"):
            raise TypeError(f"invalidate_tags(): {alias!r} is not a DogpileCache")
        moved += cache.invalidate_tags(*names, hard=hard)
    return moved


async def ainvalidate_tags(*tags: str, hard: bool = False, using: Iterable[str] | str | None = None) -> int:
    """Async :func:`invalidate_tags` (the store's I/O in a thread, as Django's ``a*``)."""
    return await sync_to_async(invalidate_tags)(*tags, hard=hard, using=using)


def invalidate_on_change(
    model: type[models.Model],
    tags: Callable[[Any], Iterable[str] | str],
    *,
    hard: bool = False,
    using: Iterable[str] | str | None = None,
) -> None:
    """Invalidate ``tags(instance)`` whenever an instance of ``model`` is
    saved, deleted, or one of its many-to-many relations changes (either
    side) -- **after the transaction commits** (``transaction.on_commit``
    on the database the change was made on).

    So a request that regenerates a page while the change is not committed
    yet (it reads the old rows) stores a value the commit then invalidates;
    and no request can regenerate between the invalidation and the commit.
    Outside a transaction the invalidation runs at once.  A failure to
    reach the store is logged (``django_dogpile.invalidation``), never
    raised into the code that saved.  Call it once per model, e.g. in an
    ``AppConfig.ready()``; calling it again for the same ``tags`` function
    connects nothing more.
    """
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise TypeError(f"invalidate_on_change(): {model!r} is not a model class")
    if not callable(tags):
        raise TypeError("invalidate_on_change(): tags must be a callable of the instance")
    where = f"invalidate_on_change({model.__name__})"

    def schedule(instances: Iterable[Any], db: str) -> None:
        names: list[str] = []
        for instance in instances:
            names.extend(tag_names(tags(instance), where))
        if not names:
            return

        def run() -> None:
            try:
                invalidate_tags(*names, hard=hard, using=using)
            except Exception:
                log.exception("%s: could not invalidate %s", where, ", ".join(names))

        transaction.on_commit(run, using=db)

    def saved_or_deleted(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
        schedule([instance], using)

    def related(
        sender: Any, instance: Any, action: str, model: Any, pk_set: Any, using: str, **kwargs: Any
    ) -> None:
        if isinstance(instance, own):
            if action in ("post_add", "post_remove", "post_clear"):
                schedule([instance], using)
            return
        # the other side changed: the instances of `model` it touched
        if action == "pre_clear":
            pk_set = _related_pks(sender, instance, own, using)
        elif action not in ("post_add", "post_remove") or not pk_set:
            return
        schedule(own._default_manager.using(using).filter(pk__in=pk_set), using)

    own = model
    uid = f"django_dogpile:{model._meta.label}:{id(tags)}"
    post_save.connect(saved_or_deleted, sender=model, weak=False, dispatch_uid=uid + ":save")
    post_delete.connect(saved_or_deleted, sender=model, weak=False, dispatch_uid=uid + ":delete")
    for through in _throughs(model):
        m2m_changed.connect(
            related, sender=through, weak=False, dispatch_uid=f"{uid}:m2m:{through._meta.label}"
        )


def _throughs(model: type[models.Model]) -> list[Any]:
    """The through models of every many-to-many relation of ``model``, both sides."""
    found = []
    for field in model._meta.get_fields(include_hidden=True):
        if field.many_to_many:
            remote = field.remote_field
            through = getattr(remote, "through", None) or getattr(field, "through", None)
            if through is not None and through not in found:
                found.append(through)
    return found


def _related_pks(through: Any, instance: Any, own: type[models.Model], using: str) -> list[Any]:
    """Before a ``clear()`` from the other side: the pks of ``own`` it relates to."""
    source = target = None
    for field in through._meta.get_fields():
        if getattr(field, "many_to_one", False):
            if field.related_model is own and target is None:
                target = field.name
            elif isinstance(instance, field.related_model):
                source = field.name
    if source is None or target is None:
        return []
    rows = through._default_manager.using(using).filter(**{source: instance.pk})
    return list(rows.values_list(f"{target}__pk", flat=True))
