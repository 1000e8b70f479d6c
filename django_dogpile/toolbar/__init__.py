"""A django-debug-toolbar panel: each DogpileCache call of a request.

Add ``"django_dogpile.toolbar.DogpilePanel"`` to ``DEBUG_TOOLBAR_PANELS``
(``pip install django-dogpile[toolbar]``).  The panel is
:mod:`~django_dogpile.toolbar.panel`; what it records,
:mod:`~django_dogpile.toolbar.recorder` (no toolbar needed to import it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DogpilePanel"]


def __getattr__(name: str) -> Any:
    if name == "DogpilePanel":  # imports debug_toolbar: only when asked for
        from django_dogpile.toolbar.panel import DogpilePanel

        return DogpilePanel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
