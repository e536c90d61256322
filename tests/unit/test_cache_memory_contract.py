"""The cache contract on :class:`MemoryDataCache`, the reference backend."""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.cache_contract import CacheContract, CacheFactory
from tracking.cache.base import DataCache
from tracking.cache.memory import MemoryDataCache


class MemoryFactory(CacheFactory):
    """Fresh in-process caches; a peer is the same object (one process shares it)."""

    def new(self, **options: Any) -> DataCache:
        return MemoryDataCache(**options)

    def peer(self, cache: DataCache) -> DataCache:
        return cache


class TestMemoryCacheContract(CacheContract):
    @pytest.fixture
    def cache_factory(self) -> CacheFactory:
        return MemoryFactory()
