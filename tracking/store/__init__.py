"""Durable stores behind the cache."""

from tracking.store.base import DataStore, TrackerRecord
from tracking.store.memory import MemoryDataStore

__all__ = ["DataStore", "MemoryDataStore", "TrackerRecord"]
