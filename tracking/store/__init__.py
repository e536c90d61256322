"""Durable stores behind the cache, chosen by URL scheme (``store_from_url``).

:class:`MongoDBDataStore` is loaded on first access (module ``__getattr__``),
so importing :mod:`tracking` or :mod:`tracking.store` never imports pymongo;
accessing it without pymongo installed raises
:class:`~tracking.errors.MissingDependencyError` saying what to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tracking.store.base import DataStore, TrackerRecord
from tracking.store.file import FileDataStore
from tracking.store.memory import MemoryDataStore
from tracking.store.registry import register_store, store_from_url

if TYPE_CHECKING:
    from tracking.store.mongo import MongoDBDataStore

__all__ = [
    "DataStore",
    "FileDataStore",
    "MemoryDataStore",
    "MongoDBDataStore",
    "TrackerRecord",
    "register_store",
    "store_from_url",
]

#: Names served lazily: name -> module that defines it.
_LAZY = {"MongoDBDataStore": "tracking.store.mongo"}


def __getattr__(name: str) -> Any:
    """Import an optional backend on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
