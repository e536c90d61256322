"""MongoDBDataStore against the Mongo wire-compatible test server (mongoeco).

The shared store contract (``tests/contract/store_contract.py``), more of
it (insertion order, the seq rule inside one bulk, flush isolation), plus
what is specific to MongoDB: the indexes, one ``find`` per
``load_group``, one ``update`` per ``save``, duplicate-key races between
clients, and errors surfacing as ``StoreError``.

Every test uses its own database (``mongo_db_name``), dropped afterwards.
Set ``$TRACKING_TEST_MONGO_URL`` to run them against a real MongoDB.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pymongo
import pymongo.errors
import pytest
from pymongo import monitoring

from tests.contract import store_contract
from tests.contract.store_contract import StoreContract
from tests.support.mongo_env import MongoTestServer
from tracking.errors import StoreError, TrackingValueError
from tracking.store.base import TrackerRecord
from tracking.store.mongo import (
    TTL_INDEX_NAME,
    UNIQUE_INDEX_NAME,
    MongoDBDataStore,
)

Document = dict[str, Any]


def rec(
    name: str,
    seq: int = 0,
    *,
    group: str = "g1",
    expire_at: float | None = None,
    state: dict[str, Any] | None = None,
) -> TrackerRecord:
    """A small record whose state says which write it came from."""
    return TrackerRecord(
        group_id=group,
        name=name,
        spec={"type": "count", "target": 3, "conditions": [{"key": "k", "op": "eq", "v": 1}]},
        state=state if state is not None else {"seq": seq},
        expire_at=expire_at,
        seq=seq,
        extra={"note": name},
    )


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends, by name (pymongo command monitoring)."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.commands.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def count(self, name: str) -> int:
        with self._lock:
            return self.commands.count(name)

    def reset(self) -> None:
        with self._lock:
            self.commands.clear()


@pytest.fixture
def store(mongo_url: str, mongo_db_name: str) -> Iterator[MongoDBDataStore]:
    # Generous timeout: the test server's unique index makes each upsert scan
    # the collection, so the contract's 700-record bulk takes seconds there.
    s = MongoDBDataStore(mongo_url, database=mongo_db_name, timeout_ms=120_000)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def raw(mongo_url: str) -> Iterator[pymongo.MongoClient[Document]]:
    """A plain client for looking behind the store's back."""
    client: pymongo.MongoClient[Document] = pymongo.MongoClient(mongo_url)
    try:
        yield client
    finally:
        client.close()


def names(records: list[TrackerRecord]) -> list[str]:
    return [r.name for r in records]


# -- the store contract ------------------------------------------------------


@pytest.mark.mongo
class TestMongoStoreContract(StoreContract):
    """The backend-agnostic contract; ``store`` is this module's fixture (a fresh database).

    The contract's clock ``NOW`` is a fixed instant in 2023. Its "past" and
    "expires at NOW + 0.25" records are then past in real time too, and
    the TTL index lets the server delete them on its own (the test server
    within about a second, MongoDB within a minute), which is the point of
    the TTL index. So the contract runs here with ``NOW`` a year ahead of
    the wall clock: every assertion is unchanged, and nothing it saves
    expires in real time while the test runs.
    """

    @pytest.fixture(autouse=True)
    def _clock_ahead_of_ttl(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(store_contract, "NOW", time.time() + 365 * 86400)


@pytest.mark.mongo
class TestContractExtras:
    """More of the contract, from angles the shared suite does not take."""

    def test_roundtrip_keeps_every_field(self, store: MongoDBDataStore) -> None:
        expire = time.time() + 3600.123456
        original = TrackerRecord(
            group_id="g1",
            name="t",
            spec={"type": "count", "nested": {"list": [1, 2.5, "x", None, True]}},
            state={"progress": 2, "stages": [{"done": False}], "unicode": "é✓"},
            expire_at=expire,
            seq=7,
            extra={"owner": "u1"},
        )
        store.save([original])
        assert store.load_group("g1") == [original]

    def test_empty_group_and_empty_save(self, store: MongoDBDataStore) -> None:
        store.save([])
        assert store.load_group("nobody") == []
        assert store.group_ids() == []

    def test_groups_are_separate(self, store: MongoDBDataStore) -> None:
        store.save([rec("a", group="g1"), rec("a", group="g2"), rec("b", group="g2")])
        assert names(store.load_group("g1")) == ["a"]
        assert names(store.load_group("g2")) == ["a", "b"]

    def test_insertion_order(self, store: MongoDBDataStore) -> None:
        store.save([rec("c"), rec("a")])
        store.save([rec("b")])
        store.save([rec("z"), rec("y")])
        assert names(store.load_group("g1")) == ["c", "a", "b", "z", "y"]

    def test_update_keeps_position_and_reinsert_goes_last(self, store: MongoDBDataStore) -> None:
        store.save([rec("a"), rec("b"), rec("c")])
        store.save([rec("a", 1)])
        assert names(store.load_group("g1")) == ["a", "b", "c"]
        store.remove("g1", ["a"])
        store.save([rec("a", 2)])
        assert names(store.load_group("g1")) == ["b", "c", "a"]

    def test_higher_or_equal_seq_replaces(self, store: MongoDBDataStore) -> None:
        store.save([rec("a", 1)])
        store.save([rec("a", 2)])
        assert store.load_group("g1")[0].state == {"seq": 2}
        store.save([rec("a", 2, state={"again": True})])
        assert store.load_group("g1")[0].state == {"again": True}

    def test_lower_seq_never_replaces(self, store: MongoDBDataStore) -> None:
        store.save([rec("a", 5)])
        store.save([rec("a", 4)])
        store.save([rec("a", 0)])
        [loaded] = store.load_group("g1")
        assert (loaded.seq, loaded.state) == (5, {"seq": 5})

    def test_seq_rule_inside_one_bulk(self, store: MongoDBDataStore) -> None:
        # "old" exists with a higher seq: its upsert hits the unique index
        # (11000) inside an unordered bulk; the other writes still land.
        store.save([rec("old", 9), rec("upd", 1)])
        store.save([rec("new", 1), rec("old", 3), rec("upd", 2), rec("new2", 0)])
        got = {r.name: r.seq for r in store.load_group("g1")}
        assert got == {"old": 9, "upd": 2, "new": 1, "new2": 0}

    def test_duplicates_in_one_bulk_resolve_like_sequential_saves(
        self, store: MongoDBDataStore
    ) -> None:
        store.save([rec("a", 5), rec("a", 3)])  # the lower one comes later: ignored
        store.save([rec("b", 3), rec("b", 5)])  # the higher one comes later: wins
        store.save(
            [rec("c", 2, state={"first": 1}), rec("c", 2, state={"last": 1})]
        )  # equal seq: the later one wins, as with two saves in a row
        got = {r.name: (r.seq, r.state) for r in store.load_group("g1")}
        assert got == {"a": (5, {"seq": 5}), "b": (5, {"seq": 5}), "c": (2, {"last": 1})}
        assert names(store.load_group("g1")) == ["a", "b", "c"]

    def test_save_again_is_idempotent(self, store: MongoDBDataStore) -> None:
        batch = [rec("a", 1), rec("b", 2)]
        store.save(batch)
        store.save(batch)
        assert store.load_group("g1") == batch

    def test_remove_all_and_named(self, store: MongoDBDataStore) -> None:
        store.save([rec("a"), rec("b"), rec("c"), rec("a", group="other")])
        assert store.remove("g1", ["a", "missing"]) == 1
        assert names(store.load_group("g1")) == ["b", "c"]
        assert store.remove("g1", []) == 0
        assert store.remove("g1") == 2
        assert store.load_group("g1") == []
        assert store.remove("g1") == 0
        assert names(store.load_group("other")) == ["a"]

    def test_group_ids(self, store: MongoDBDataStore) -> None:
        store.save([rec("a", group="g1"), rec("b", group="g1"), rec("a", group="g2")])
        assert sorted(store.group_ids()) == ["g1", "g2"]
        store.remove("g1")
        assert store.group_ids() == ["g2"]

    def test_flush_deletes_only_its_own_collection(
        self,
        store: MongoDBDataStore,
        mongo_url: str,
        mongo_db_name: str,
        raw: pymongo.MongoClient[Document],
    ) -> None:
        neighbour = MongoDBDataStore(mongo_url, database=mongo_db_name, collection="others")
        try:
            raw[mongo_db_name]["unrelated"].insert_one({"keep": True})
            store.save([rec("a"), rec("b", group="g2")])
            neighbour.save([rec("n")])
            store.flush()
            assert store.group_ids() == []
            assert names(neighbour.load_group("g1")) == ["n"]
            assert raw[mongo_db_name]["unrelated"].count_documents({}) == 1
            # The indexes survive a flush (documents go, the collection stays).
            assert UNIQUE_INDEX_NAME in store.collection.index_information()
        finally:
            neighbour.close()

    def test_expired_records_are_not_loaded(self, store: MongoDBDataStore) -> None:
        now = time.time()
        store.save(
            [
                rec("forever"),
                rec("later", expire_at=now + 100),
                rec("soon", expire_at=now + 10),
            ]
        )
        assert names(store.load_group("g1", now=now)) == ["forever", "later", "soon"]
        assert names(store.load_group("g1", now=now + 10)) == ["forever", "later"]
        assert names(store.load_group("g1", now=now + 1000)) == ["forever"]

    def test_expiry_can_be_cleared_and_extended(self, store: MongoDBDataStore) -> None:
        now = time.time()
        store.save([rec("a", 1, expire_at=now + 5)])
        store.save([rec("a", 2, expire_at=None)])
        assert names(store.load_group("g1", now=now + 100)) == ["a"]


# -- MongoDB specifics ---------------------------------------------------------


@pytest.mark.mongo
class TestMongoSpecifics:
    def test_indexes_exist_unique_and_ttl(self, store: MongoDBDataStore) -> None:
        store.save([rec("a")])
        info = store.collection.index_information()
        unique = info[UNIQUE_INDEX_NAME]
        assert [tuple(k) for k in unique["key"]] == [("group_id", 1), ("name", 1)]
        assert unique["unique"] is True
        ttl = info[TTL_INDEX_NAME]
        assert [tuple(k) for k in ttl["key"]] == [("expire_at", 1)]
        assert ttl["expireAfterSeconds"] == 0

    def test_unique_index_refuses_a_second_document(self, store: MongoDBDataStore) -> None:
        store.save([rec("a")])
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            store.collection.insert_one({"group_id": "g1", "name": "a", "seq": 0})

    def test_indexes_are_created_idempotently(
        self, store: MongoDBDataStore, mongo_url: str, mongo_db_name: str
    ) -> None:
        store.save([rec("a")])
        again = MongoDBDataStore(mongo_url, database=mongo_db_name)
        try:
            again.ensure_indexes()
            again.ensure_indexes()
            assert names(again.load_group("g1")) == ["a"]
        finally:
            again.close()
        assert len(store.collection.index_information()) == 3  # _id, unique, TTL

    def test_conflicting_index_options_raise_store_error(
        self, mongo_url: str, mongo_db_name: str, raw: pymongo.MongoClient[Document]
    ) -> None:
        raw[mongo_db_name]["trackers"].create_index(
            [("expire_at", 1)], name=TTL_INDEX_NAME, expireAfterSeconds=3600
        )
        s = MongoDBDataStore(mongo_url, database=mongo_db_name)
        try:
            with pytest.raises(StoreError, match="creating indexes") as caught:
                s.load_group("g1")
            assert isinstance(caught.value.__cause__, pymongo.errors.PyMongoError)
        finally:
            s.close()

    def test_expiry_is_stored_as_a_bson_date_and_exact_float(self, store: MongoDBDataStore) -> None:
        expire = time.time() + 3600.5
        store.save([rec("a", expire_at=expire), rec("b")])
        docs = {d["name"]: d for d in store.collection.find({})}
        assert isinstance(docs["a"]["expire_at"], datetime)
        assert abs(docs["a"]["expire_at"].timestamp() - expire) < 0.002
        assert docs["a"]["expire_ts"] == expire
        assert docs["b"]["expire_at"] is None

    def test_ttl_index_removes_expired_documents(self, store: MongoDBDataStore) -> None:
        # The test server's TTL monitor runs about every second; real MongoDB's
        # every 60 s. Wait (bounded) for the server to delete the document.
        store.save([rec("gone", expire_at=time.time() - 1), rec("stays")])
        deadline = time.monotonic() + 90
        while store.collection.count_documents({"name": "gone"}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.collection.count_documents({"name": "gone"}) == 0
        assert names(store.load_group("g1")) == ["stays"]

    def test_load_group_is_one_find_and_save_one_update(
        self, mongo_url: str, mongo_db_name: str
    ) -> None:
        counter = CommandCounter()
        client: pymongo.MongoClient[Document] = pymongo.MongoClient(
            mongo_url, event_listeners=[counter]
        )
        s = MongoDBDataStore(client, database=mongo_db_name)
        try:
            s.ensure_indexes()
            counter.reset()
            s.save([rec(f"t{i}", 1) for i in range(20)])
            assert counter.count("update") == 1
            assert counter.count("find") == 0
            counter.reset()
            loaded = s.load_group("g1")
            assert len(loaded) == 20
            assert counter.count("find") == 1
            assert counter.count("getMore") == 0
            assert counter.commands == ["find"]
        finally:
            s.close()
            client.close()

    def test_passed_client_is_not_closed(self, mongo_url: str, mongo_db_name: str) -> None:
        client: pymongo.MongoClient[Document] = pymongo.MongoClient(mongo_url)
        try:
            s = MongoDBDataStore(client, database=mongo_db_name)
            s.save([rec("a")])
            s.close()
            assert client[mongo_db_name]["trackers"].count_documents({}) == 1
        finally:
            client.close()

    def test_database_from_url(self, mongo_url: str, mongo_db_name: str) -> None:
        base, _, query = mongo_url.partition("?")
        url = f"{base.rstrip('/')}/{mongo_db_name}?{query}"
        s = MongoDBDataStore(url, collection="from_url")
        try:
            s.save([rec("a")])
            assert s.collection.full_name == f"{mongo_db_name}.from_url"
        finally:
            s.close()

    def test_concurrent_clients_racing_on_new_records_lose_nothing(
        self, mongo_url: str, mongo_db_name: str
    ) -> None:
        # Two clients upsert the same brand-new records at the same moment,
        # with different seqs; whichever lands second gets duplicate key
        # errors or updates, and the higher seq must win either way. (The
        # test server applies each upsert atomically, so the case where
        # both upserts miss and both insert is replayed deterministically
        # in the next test; against real MongoDB this test can hit it too.)
        stores = [
            MongoDBDataStore(mongo_url, database=mongo_db_name),
            MongoDBDataStore(mongo_url, database=mongo_db_name),
        ]
        try:
            for s in stores:
                s.ensure_indexes()
            errors: list[BaseException] = []
            for round_no in range(8):
                group = f"race{round_no}"
                barrier = threading.Barrier(2)

                def worker(
                    s: MongoDBDataStore, seq: int, group: str, barrier: threading.Barrier
                ) -> None:
                    try:
                        barrier.wait(10)
                        s.save([rec(f"t{i}", seq, group=group) for i in range(10)])
                    except BaseException as exc:  # collected and re-raised below
                        errors.append(exc)

                threads = [
                    threading.Thread(
                        target=worker, args=(stores[0], 1 + round_no % 2, group, barrier)
                    ),
                    threading.Thread(
                        target=worker, args=(stores[1], 2 - round_no % 2, group, barrier)
                    ),
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                assert not errors, errors
                loaded = stores[0].load_group(group)
                assert len(loaded) == 10
                assert {r.seq for r in loaded} == {2}
                assert {r.state["seq"] for r in loaded} == {2}
        finally:
            for s in stores:
                s.close()

    def test_duplicate_key_from_a_racing_insert_is_retried(
        self,
        store: MongoDBDataStore,
        raw: pymongo.MongoClient[Document],
        mongo_db_name: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # Deterministic replay of the race: between our upsert's match and
        # its insert, another client inserts the record with a LOWER seq, so
        # the server answers 11000 although our record is the newer one.
        store.ensure_indexes()
        real_bulk_write = store.collection.bulk_write
        calls: list[int] = []

        def racing_bulk_write(ops: Any, ordered: bool = True) -> Any:
            calls.append(len(ops))
            if len(calls) == 1:
                raw[mongo_db_name]["trackers"].insert_one(
                    {
                        "group_id": "g1",
                        "name": "a",
                        "seq": 1,
                        "state": {"seq": 1},
                        "spec": {},
                        "extra": {},
                        "expire_ts": None,
                        "order": 0,
                    }
                )
                real_bulk_write(ops[1:], ordered=ordered)  # "b" is applied normally
                raise pymongo.errors.BulkWriteError(
                    {
                        "writeErrors": [
                            {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key"}
                        ],
                        "writeConcernErrors": [],
                        "nUpserted": 1,
                    }
                )
            return real_bulk_write(ops, ordered=ordered)

        monkeypatch.setattr(store.collection, "bulk_write", racing_bulk_write)
        store.save([rec("a", 5), rec("b", 5)])
        assert calls == [2, 1]  # the conflicting record alone was retried
        got = {r.name: r.seq for r in store.load_group("g1")}
        assert got == {"a": 5, "b": 5}

    def test_non_duplicate_write_errors_raise_store_error(
        self, store: MongoDBDataStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.ensure_indexes()

        def failing_bulk_write(ops: Any, ordered: bool = True) -> Any:
            raise pymongo.errors.BulkWriteError(
                {
                    "writeErrors": [
                        {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key"},
                        {"index": 1, "code": 121, "errmsg": "Document failed validation"},
                    ],
                    "writeConcernErrors": [],
                }
            )

        monkeypatch.setattr(store.collection, "bulk_write", failing_bulk_write)
        with pytest.raises(StoreError, match="121") as caught:
            store.save([rec("a", 1), rec("b", 1)])
        assert isinstance(caught.value.__cause__, pymongo.errors.BulkWriteError)

    def test_unsatisfiable_write_concern_raises_store_error(
        self, mongo_url: str, mongo_db_name: str
    ) -> None:
        # w=50 cannot be met by a standalone server nor any usual replica set.
        s = MongoDBDataStore(mongo_url, database=mongo_db_name, write_concern=50, timeout_ms=2000)
        try:
            with pytest.raises(StoreError) as caught:
                s.save([rec("a")])
            assert isinstance(caught.value.__cause__, pymongo.errors.PyMongoError)
        finally:
            s.close()

    def test_write_concern_reaches_the_collection(self, mongo_url: str) -> None:
        s = MongoDBDataStore(mongo_url, database="unused")
        assert s.collection.write_concern.document["w"] == "majority"
        sep = "&" if "?" in mongo_url else "?"
        from_url = MongoDBDataStore(mongo_url + sep + "w=1", database="unused")
        assert from_url.collection.write_concern.document["w"] == 1
        explicit = MongoDBDataStore(mongo_url + sep + "w=1", database="unused", write_concern=2)
        assert explicit.collection.write_concern.document["w"] == 2
        for each in (s, from_url, explicit):
            each.close()

    def test_store_error_when_the_server_stops(self, mongo_private_server: MongoTestServer) -> None:
        assert mongo_private_server.uri is not None
        s = MongoDBDataStore(mongo_private_server.uri, database="stopping", timeout_ms=500)
        try:
            s.save([rec("a")])
            assert names(s.load_group("g1")) == ["a"]
            mongo_private_server.stop()
            for operation in (
                lambda: s.save([rec("b")]),
                lambda: s.load_group("g1"),
                lambda: s.remove("g1"),
                s.group_ids,
                s.flush,
            ):
                with pytest.raises(StoreError) as caught:
                    operation()
                assert isinstance(caught.value.__cause__, pymongo.errors.PyMongoError)
        finally:
            s.close()


# -- construction (no server needed) -------------------------------------------


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"mongodb://127.0.0.1:{port}/?directConnection=true"


class TestConstruction:
    def test_constructor_does_no_network_io(self) -> None:
        # Nothing listens there: constructing works, the first use fails cleanly.
        s = MongoDBDataStore(_closed_port_url(), timeout_ms=300)
        try:
            with pytest.raises(StoreError) as caught:
                s.load_group("g1")
            assert isinstance(
                caught.value.__cause__,
                pymongo.errors.ServerSelectionTimeoutError | pymongo.errors.ConnectionFailure,
            )
        finally:
            s.close()

    def test_defaults(self) -> None:
        s = MongoDBDataStore("mongodb://127.0.0.1:1/")
        try:
            assert s.collection.full_name == "tracking.trackers"
            assert s.collection.write_concern.document["w"] == "majority"
            assert s.client.options.retry_writes is True
            assert MongoDBDataStore.schemes == ("mongodb", "mongodb+srv")
        finally:
            s.close()

    def test_names_from_arguments(self) -> None:
        name = f"db_{uuid.uuid4().hex[:8]}"
        s = MongoDBDataStore("mongodb://127.0.0.1:1/fromurl", database=name, collection="c")
        try:
            assert s.collection.full_name == f"{name}.c"
        finally:
            s.close()
        s = MongoDBDataStore("mongodb://127.0.0.1:1/fromurl")
        try:
            assert s.collection.full_name == "fromurl.trackers"
        finally:
            s.close()

    @pytest.mark.parametrize("bad", [0, -1, True, 1.5])
    def test_bad_write_concern_is_refused(self, bad: Any) -> None:
        with pytest.raises(TrackingValueError):
            MongoDBDataStore("mongodb://127.0.0.1:1/", write_concern=bad)

    def test_unacknowledged_url_is_refused(self) -> None:
        with pytest.raises(TrackingValueError, match="unacknowledged"):
            MongoDBDataStore("mongodb://127.0.0.1:1/?w=0")

    @pytest.mark.parametrize(
        "url", ["redis://localhost", "mongodb:/broken", "mongodb://h:notaport/"]
    )
    def test_bad_urls_are_refused(self, url: str) -> None:
        with pytest.raises(TrackingValueError):
            MongoDBDataStore(url)

    def test_options_with_a_client_are_refused(self) -> None:
        client: pymongo.MongoClient[Document] = pymongo.MongoClient(
            "mongodb://127.0.0.1:1/", connect=False
        )
        try:
            with pytest.raises(TrackingValueError):
                MongoDBDataStore(client, appname="x")
        finally:
            client.close()
