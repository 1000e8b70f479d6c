"""What ``get_or_set`` calls to make a page (the view, in *this* request),
and the outcomes of a page face's request that are not a page to store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpResponseBase

from django_dogpile.faces.visitors import own_csrf_flag

__all__ = ["Bypass", "FailedPage", "Regenerate", "ARegenerate", "Refused", "Relearn"]


class Refused(BaseException):
    """A response that is not stored under the key being regenerated.

    A BaseException, so that no ``except Exception`` on the way
    (``SERVE_STALE_ON_ERROR``) mistakes it for a failure.
    """

    def __init__(self, response: HttpResponseBase, reason: str | None) -> None:
        self.response = response
        self.reason = reason


class Relearn(BaseException):
    """Another request learnt more ``Vary`` names while this one waited."""


class Bypass(BaseException):
    """The request this one queued behind was refused: run the view unlocked."""


class FailedPage(Exception):
    """A non-200 from the view: a failed regeneration, as a raising creator."""

    def __init__(self, response: HttpResponseBase) -> None:
        super().__init__(f"the view answered {response.status_code}; not stored")
        self.response = response


class Regenerate:
    """The creator ``get_or_set`` calls: run the view in *this* request."""

    #: ``BACKGROUND`` asks a creator for a copy it can run in a pool thread;
    #: a page has none (its view would run on a request this thread uses).
    detach = None

    def __init__(self, page: Any, key: str, run: Callable[[], Any]) -> None:
        self.page, self.key, self.run = page, key, run

    def check(self) -> None:
        page = self.page
        if page.memos.refused_since(page.memo_key(self.key), page.started):
            raise Bypass()
        learnt = page.memos.vary.get(page.url_memo)
        if learnt is not None and not set(name for name in learnt if name) <= set(page.vary):
            raise Relearn()

    def __call__(self) -> Any:
        self.check()
        with own_csrf_flag(self.page.request):
            return self.page.finish(self.key, self.run())


class ARegenerate(Regenerate):
    async def __call__(self) -> Any:
        self.check()
        with own_csrf_flag(self.page.request):
            response = await self.run()
            # where Django's handler renders a response: a thread-sensitive thread
            return await sync_to_async(self.page.finish)(self.key, response)
