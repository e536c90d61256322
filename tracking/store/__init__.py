"""Durable stores behind the cache, chosen by URL scheme (``store_from_url``)."""

from tracking.store.base import DataStore, TrackerRecord
from tracking.store.file import FileDataStore
from tracking.store.memory import MemoryDataStore
from tracking.store.mongo import MongoDBDataStore
from tracking.store.registry import register_store, store_from_url

__all__ = [
    "DataStore",
    "FileDataStore",
    "MemoryDataStore",
    "MongoDBDataStore",
    "TrackerRecord",
    "register_store",
    "store_from_url",
]
