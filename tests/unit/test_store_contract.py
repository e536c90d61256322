"""Run the shared store contract against the in-process and the file store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.store_contract import StoreContract
from tracking.store.base import DataStore, TrackerRecord
from tracking.store.file import FileDataStore
from tracking.store.memory import MemoryDataStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[DataStore]:
        store = MemoryDataStore()
        yield store
        store.close()


class TestFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[DataStore]:
        store = FileDataStore(str(tmp_path / "store"), file_size=50)
        yield store
        store.close()


class TestFileStoreReopened(StoreContract):
    """The contract again, but every read goes through a second store object.

    It sees the first one's writes only through the disk, as another process
    would, so this checks the on-disk form and the reload logic too.
    """

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[DataStore]:
        store = _ReadThroughOther(str(tmp_path / "store"))
        yield store
        store.close()


class _ReadThroughOther(FileDataStore):
    """Writes through itself, reads through a second FileDataStore on the same dir."""

    def __init__(self, path: str) -> None:
        super().__init__(path, file_size=7, gzipped=True)
        self._reader = FileDataStore(path)

    def load_group(self, group_id: str, now: float | None = None) -> list[TrackerRecord]:
        return self._reader.load_group(group_id, now)

    def group_ids(self) -> list[str]:
        return self._reader.group_ids()

    def close(self) -> None:
        self._reader.close()
        super().close()
