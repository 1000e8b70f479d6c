"""Errors raised by django-dogpile's Django layers."""

from __future__ import annotations

__all__ = ["UncacheableValue", "WaitTimeout"]


class UncacheableValue(TypeError):
    """A value could not be stored (it cannot be pickled).

    Subclasses :class:`TypeError`, which is what Django's own backends let
    escape for such a value, and names the key in its message.
    """


class WaitTimeout(Exception):
    """Waiting for another caller's regeneration took longer than allowed."""
