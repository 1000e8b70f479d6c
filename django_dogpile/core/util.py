"""Compatibility alias: dogpile.core 0.4.1 exposed ``threading`` here."""

import threading

__all__ = ["threading"]
