"""The dogpile.core 0.4.1 API, framework-free.

``from dogpile.core import Lock`` becomes ``from django_dogpile.core import
Lock`` (or ``from django_dogpile import Lock``) with no other change.  Nothing
here imports Django.
"""

from .dogpile import Lock, NeedRegenerationException
from .legacy import Dogpile, SyncReaderDogpile
from .nameregistry import NameRegistry
from .readwrite_lock import LockError, ReadWriteMutex

__all__ = [
    "Dogpile",
    "Lock",
    "LockError",
    "NameRegistry",
    "NeedRegenerationException",
    "ReadWriteMutex",
    "SyncReaderDogpile",
]

__version__ = "0.4.1"
