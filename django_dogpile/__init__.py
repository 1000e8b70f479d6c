"""django-dogpile: stampede-proof caching for Django.

Importing this package needs no Django settings: it re-exports the
framework-free dogpile core.  The Django faces live in
:mod:`django_dogpile.cache`, :mod:`django_dogpile.decorators` and the
``dogpile`` template library.
"""

from django_dogpile.core import (
    Dogpile,
    Lock,
    LockError,
    NameRegistry,
    NeedRegenerationException,
    ReadWriteMutex,
    SyncReaderDogpile,
)

__all__ = [
    "Dogpile",
    "Lock",
    "LockError",
    "NameRegistry",
    "NeedRegenerationException",
    "ReadWriteMutex",
    "SyncReaderDogpile",
]

__version__ = "0.1.0"
