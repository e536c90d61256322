"""store_from_url: choosing a store backend by URL scheme (no server needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracking.errors import MissingDependencyError, TrackingTypeError, TrackingValueError
from tracking.store import registry
from tracking.store.base import DataStore, TrackerRecord
from tracking.store.memory import MemoryDataStore
from tracking.store.registry import (
    known_schemes,
    register_store,
    store_from_url,
    unregister_store,
)


class RecordingStore(MemoryDataStore):
    """A memory store that remembers how it was built."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        super().__init__(url)
        self.url = url
        self.options = options


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees (and may change) a private copy of the registry."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    yield


def test_builtin_schemes() -> None:
    assert {"memory", "file", "mongodb", "mongodb+srv"} <= set(known_schemes())


def test_memory_url() -> None:
    store = store_from_url("memory://")
    assert isinstance(store, MemoryDataStore)
    record = TrackerRecord("g", "t", {}, {"x": 1})
    store.save([record])
    assert store.load_group("g") == [record]


def test_mongodb_url_builds_a_mongo_store_without_connecting() -> None:
    from tracking.store.mongo import MongoDBDataStore

    store = store_from_url("mongodb://127.0.0.1:1/mydb", collection="mine", write_concern=1)
    try:
        assert isinstance(store, MongoDBDataStore)
        assert store.collection.full_name == "mydb.mine"
        assert store.collection.write_concern.document["w"] == 1
    finally:
        store.close()


@pytest.mark.parametrize("url", ["mongodb+srv://cluster.example.net/db", "MONGODB://h/db"])
def test_mongo_schemes_reach_the_mongo_class(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The factory path is resolved at call time, so replacing the class in its
    # module shows which backend a scheme reaches without any DNS or network.
    import tracking.store.mongo as mongo_module

    monkeypatch.setattr(mongo_module, "MongoDBDataStore", RecordingStore)
    store = store_from_url(url, database="x")
    assert isinstance(store, RecordingStore)
    assert store.url == url
    assert store.options == {"database": "x"}


def test_file_scheme_is_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("tracking.store.file")
    fake.FileDataStore = RecordingStore  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tracking.store.file", fake)
    store = store_from_url("file:///var/lib/tracking", fsync=True)
    assert isinstance(store, RecordingStore)
    assert store.url == "file:///var/lib/tracking"
    assert store.options == {"fsync": True}


def test_file_url_builds_the_file_store(tmp_path: Path) -> None:
    from tracking.store.file import FileDataStore

    store = store_from_url(f"file://{tmp_path / 'store'}")
    try:
        assert isinstance(store, FileDataStore)
        record = TrackerRecord("g", "t", {"type": "x"}, {"n": 1})
        store.save([record])
        assert store.load_group("g") == [record]
    finally:
        store.close()


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(TrackingValueError) as caught:
        store_from_url("postgres://localhost/db")
    message = str(caught.value)
    assert "postgres" in message
    for scheme in ("memory://", "file://", "mongodb://", "mongodb+srv://"):
        assert scheme in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("url", ["", "localhost:27017", "memory", "/var/lib/x", "://x"])
def test_url_without_scheme(url: str) -> None:
    with pytest.raises(TrackingValueError, match="no scheme"):
        store_from_url(url)


def test_url_must_be_a_string() -> None:
    with pytest.raises(TrackingTypeError):
        store_from_url(b"memory://")  # type: ignore[arg-type]


def test_register_a_callable_factory() -> None:
    register_store("Custom", RecordingStore)
    store = store_from_url("custom://anything?x=1", flag=True)
    assert isinstance(store, RecordingStore)
    assert (store.url, store.options) == ("custom://anything?x=1", {"flag": True})
    assert "custom" in known_schemes()
    unregister_store("custom")
    assert "custom" not in known_schemes()
    with pytest.raises(TrackingValueError):
        store_from_url("custom://anything")


def test_register_replaces_an_earlier_factory() -> None:
    register_store("memory", RecordingStore)
    assert isinstance(store_from_url("memory://"), RecordingStore)


def test_register_a_dotted_path() -> None:
    register_store("mem2", "tracking.store.memory:MemoryDataStore")
    assert isinstance(store_from_url("mem2://"), MemoryDataStore)


@pytest.mark.parametrize("path", ["tracking.store.memory", ":Name", "module:", ""])
def test_bad_dotted_paths_are_refused(path: str) -> None:
    with pytest.raises(TrackingValueError):
        register_store("bad", path)


def test_bad_registrations_are_refused() -> None:
    with pytest.raises(TrackingTypeError):
        register_store("x", 42)  # type: ignore[arg-type]
    with pytest.raises(TrackingValueError):
        register_store("not a scheme", RecordingStore)
    with pytest.raises(TrackingTypeError):
        register_store(None, RecordingStore)  # type: ignore[arg-type]


def test_missing_third_party_package_is_a_missing_dependency() -> None:
    register_store("needs", "tracking_test_absent_package_xyz.backend:Store")
    with pytest.raises(MissingDependencyError) as caught:
        store_from_url("needs://x")
    assert "tracking_test_absent_package_xyz" in str(caught.value)
    assert isinstance(caught.value, ImportError)


def test_missing_pymongo_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes "import pymongo" fail, as if it were absent.
    for name in list(sys.modules):
        if name == "pymongo" or name.startswith("pymongo."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "pymongo", None)
    monkeypatch.delitem(sys.modules, "tracking.store.mongo", raising=False)
    with pytest.raises(MissingDependencyError, match="pymongo"):
        store_from_url("mongodb://localhost/db")


def test_missing_module_of_our_own_is_not_hidden() -> None:
    register_store("ours", "tracking.store.no_such_backend:Store")
    with pytest.raises(ImportError) as caught:
        store_from_url("ours://x")
    assert not isinstance(caught.value, MissingDependencyError)


def test_attribute_that_is_not_a_factory() -> None:
    register_store("weird", "tracking.store.memory:__doc__")
    with pytest.raises(TrackingValueError, match="not callable"):
        store_from_url("weird://")


def test_factory_must_return_a_data_store() -> None:
    def not_a_store(url: str, **options: Any) -> Any:
        return object()

    register_store("odd", not_a_store)
    with pytest.raises(TrackingTypeError, match="not a DataStore"):
        store_from_url("odd://")


def test_each_builtin_class_serves_exactly_its_table_entries() -> None:
    # The scheme table exists once (registry.BUILTIN_STORES); the classes'
    # ``schemes`` are read from it, so the two can never disagree.
    from tracking.store.file import FileDataStore
    from tracking.store.mongo import MongoDBDataStore

    classes = {
        "tracking.store.memory:MemoryDataStore": MemoryDataStore,
        "tracking.store.file:FileDataStore": FileDataStore,
        "tracking.store.mongo:MongoDBDataStore": MongoDBDataStore,
    }
    assert set(registry.BUILTIN_STORES.values()) == set(classes)
    for path, cls in classes.items():
        assert issubclass(cls, DataStore)
        expected = tuple(s for s, p in registry.BUILTIN_STORES.items() if p == path)
        assert cls.schemes == expected
        for scheme in cls.schemes:
            assert scheme in known_schemes()
    assert MongoDBDataStore.schemes == ("mongodb", "mongodb+srv")


def test_builtin_schemes_of_an_unknown_target() -> None:
    with pytest.raises(TrackingValueError, match="not a built-in store"):
        registry.builtin_schemes("tracking.store.nope:Store")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_importing_tracking_does_not_import_the_mongo_store() -> None:
    result = _run(
        """
        import sys
        import tracking, tracking.store
        assert "tracking.store.mongo" not in sys.modules, "mongo store imported eagerly"
        assert "pymongo" not in sys.modules, "pymongo imported eagerly"
        from tracking import MongoDBDataStore
        from tracking.store import MongoDBDataStore as again
        from tracking.store.mongo import MongoDBDataStore as defined
        assert MongoDBDataStore is again is defined
        assert "MongoDBDataStore" in tracking.__all__
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_lazy_mongo_store_without_pymongo_says_what_to_install() -> None:
    result = _run(
        """
        import sys
        sys.modules["pymongo"] = None  # "import pymongo" now fails as if absent
        import tracking
        from tracking.errors import MissingDependencyError
        try:
            from tracking import MongoDBDataStore
        except MissingDependencyError as exc:
            print(exc)
        else:
            raise SystemExit("no error")
        try:
            tracking.NoSuchName
        except AttributeError as exc:
            print("attr:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "pip install pymongo" in lines[0]
    assert lines[1] == "attr: module 'tracking' has no attribute 'NoSuchName'"
