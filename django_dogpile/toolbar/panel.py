"""The django-debug-toolbar panel (``django_dogpile.toolbar.DogpilePanel``).

One row per DogpileCache call the request made: its method, alias, key,
status word, time, the store calls it made (folded under it), and how long
it waited for another caller's value or made the value itself.  The
toolbar's own Cache panel lists the same request differently: it sees the
DogpileCache alias *and* the store alias it wraps as two caches, so one
``get_or_set`` there is two or more calls from two backends; here it is one
row, its store calls inside it.
"""

from __future__ import annotations

from typing import Any

from debug_toolbar.panels import Panel
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from django_dogpile.toolbar import recorder

__all__ = ["DogpilePanel"]


class DogpilePanel(Panel):
    """Each DogpileCache call of the request, with its status word."""

    title = _("Dogpile cache")
    template = "django_dogpile/toolbar_panel.html"
    is_async = True  # the recording follows the request's context under ASGI too

    @classmethod
    def ready(cls) -> None:
        recorder.install()

    def enable_instrumentation(self) -> None:
        self._recording = recorder.Recording()
        self._token = recorder.start(self._recording)

    def disable_instrumentation(self) -> None:
        recorder.stop(getattr(self, "_token", None))

    @property
    def nav_subtitle(self) -> str:
        stats = self.get_stats()
        calls = stats.get("calls", [])
        n = len(calls)
        text = ngettext("%(n)d call", "%(n)d calls", n) % {"n": n}
        words = stats.get("words", [])
        if words:
            text += " · " + ", ".join(f"{count} {word}" for word, count in words)
        return text

    def generate_stats(self, request: Any, response: Any) -> None:
        found = getattr(self, "_recording", None)
        # copies (a call still open in another thread may add to its own)
        calls = [
            {**call, "store": list(call["store"]), "statuses": dict(call["statuses"])}
            for call in (list(found.calls) if found is not None else [])
        ]
        words: dict[str, int] = {}
        for call in calls:
            call.pop("cache", None)
            call.pop("closed", None)
            call.pop("keys", None)
            call["store_calls"] = len(call["store"])
            call["indent"] = call["depth"] * 1.5
            word = call["status"]
            call["word"] = word if word in recorder.WORDS else ""  # a batch's is a count of each
            if word in recorder.WORDS:
                words[word] = words.get(word, 0) + 1
        self.record_stats(
            {
                "calls": calls,
                "total_ms": sum(c["ms"] for c in calls if c["depth"] == 0),
                "store_calls": sum(c["store_calls"] for c in calls),
                "words": [(word, words[word]) for word in recorder.WORDS if word in words],
            }
        )
