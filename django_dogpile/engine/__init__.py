"""The dogpile path and what it keeps per process.

The backend (:mod:`django_dogpile.cache`) holds a
:class:`~django_dogpile.engine.binding.Binding` (its store, keys, the key's
lock, its counters), a :class:`~django_dogpile.engine.path.Regeneration`
(the algorithm, top to bottom) and :class:`~django_dogpile.engine.writes.Writes`
(Django's writes over records).  :mod:`~django_dogpile.engine.locks` is the
in-process mutex and lease, :mod:`~django_dogpile.engine.memory` every
per-process memo behind one reset, :mod:`~django_dogpile.engine.bridge` the
async bridge, :mod:`~django_dogpile.engine.pool` the background pool.
"""
