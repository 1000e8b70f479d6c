"""The faces: the ways a site reaches a DogpileCache besides ``get_or_set``
-- ``@cached`` (:mod:`django_dogpile.decorators`), the page decorator
(:mod:`~django_dogpile.faces.page`) and ``{% dogpile_cache %}``
(:mod:`django_dogpile.templatetags.dogpile`) -- and what they share: which
cache, which key (:mod:`~django_dogpile.faces.common`), what may be stored
for others (:mod:`~django_dogpile.faces.visitors`)."""

from django_dogpile.faces.common import make_fragment_key

__all__ = ["make_fragment_key"]
