"""Backend-agnostic contract every :class:`~tracking.store.base.DataStore` must meet.

Use it by subclassing and providing a ``store`` fixture that yields a fresh,
empty store (and cleans it up)::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self) -> Iterator[DataStore]:
            s = MyStore(...)
            yield s
            s.flush()
            s.close()

Only the public interface is used, and nothing here depends on how a
backend orders ``group_ids`` or represents records internally.
"""

from __future__ import annotations

import math

from tracking.store.base import DataStore, TrackerRecord

NOW = 1_700_000_000.0


def rec(
    group_id: str,
    name: str,
    *,
    seq: int = 0,
    state: dict[str, object] | None = None,
    spec: dict[str, object] | None = None,
    expire_at: float | None = None,
    extra: dict[str, object] | None = None,
) -> TrackerRecord:
    """A record with simple defaults, for brevity."""
    return TrackerRecord(
        group_id=group_id,
        name=name,
        spec=spec if spec is not None else {"type": "count", "target": 3},
        state=state if state is not None else {"progress": 0},
        expire_at=expire_at,
        seq=seq,
        extra=extra if extra is not None else {},
    )


class StoreContract:
    """Test methods shared by every store backend; needs a ``store`` fixture."""

    def test_empty_store(self, store: DataStore) -> None:
        assert store.load_group("nope", now=NOW) == []
        assert store.group_ids() == []
        assert store.remove("nope") == 0

    def test_save_load_roundtrip(self, store: DataStore) -> None:
        record = rec("g1", "t1", seq=3, state={"progress": 2}, extra={"owner": "u1"})
        store.save([record])
        assert store.load_group("g1", now=NOW) == [record]
        assert store.load_group("other", now=NOW) == []

    def test_upsert_replaces_and_keeps_position(self, store: DataStore) -> None:
        store.save([rec("g", "a"), rec("g", "b")])
        store.save([rec("g", "a", seq=1, state={"progress": 5})])
        loaded = store.load_group("g", now=NOW)
        assert [r.name for r in loaded] == ["a", "b"]
        assert loaded[0].state == {"progress": 5} and loaded[0].seq == 1

    def test_insertion_order(self, store: DataStore) -> None:
        names = ["zeta", "alpha", "mid", "beta", "omega", "a0"]
        for name in names:  # one save each
            store.save([rec("g", name)])
        store.save([rec("h", n) for n in reversed(names)])  # one bulk save
        assert [r.name for r in store.load_group("g", now=NOW)] == names
        assert [r.name for r in store.load_group("h", now=NOW)] == list(reversed(names))

    def test_seq_rule_lower_seq_never_replaces(self, store: DataStore) -> None:
        store.save([rec("g", "t", seq=5, state={"progress": 5})])
        store.save([rec("g", "t", seq=4, state={"progress": 4})])
        assert store.load_group("g", now=NOW)[0].state == {"progress": 5}
        store.save([rec("g", "t", seq=5, state={"progress": 6})])  # equal seq: replaces
        assert store.load_group("g", now=NOW)[0].state == {"progress": 6}
        store.save([rec("g", "t", seq=9, state={"progress": 9})])
        assert store.load_group("g", now=NOW)[0].seq == 9

    def test_seq_rule_within_one_bulk_save(self, store: DataStore) -> None:
        store.save([rec("g", "t", seq=2, state={"v": 2}), rec("g", "t", seq=1, state={"v": 1})])
        assert store.load_group("g", now=NOW)[0].state == {"v": 2}

    def test_saving_again_is_idempotent(self, store: DataStore) -> None:
        batch = [rec("g", f"t{i}", seq=i) for i in range(5)]
        store.save(batch)
        store.save(batch)
        assert store.load_group("g", now=NOW) == batch

    def test_remove_by_names(self, store: DataStore) -> None:
        store.save([rec("g", "a"), rec("g", "b"), rec("g", "c"), rec("other", "a")])
        assert store.remove("g", ["a", "c", "missing"]) == 2
        assert [r.name for r in store.load_group("g", now=NOW)] == ["b"]
        assert [r.name for r in store.load_group("other", now=NOW)] == ["a"]
        assert store.remove("g", []) == 0

    def test_remove_all_of_group(self, store: DataStore) -> None:
        store.save([rec("g", "a"), rec("g", "b"), rec("other", "a")])
        assert store.remove("g") == 2
        assert store.load_group("g", now=NOW) == []
        assert "g" not in store.group_ids()
        assert store.remove("g") == 0
        assert len(store.load_group("other", now=NOW)) == 1

    def test_group_disappears_when_last_name_removed(self, store: DataStore) -> None:
        store.save([rec("g", "a")])
        assert store.remove("g", ["a"]) == 1
        assert store.group_ids() == []

    def test_group_ids(self, store: DataStore) -> None:
        store.save([rec("g1", "a"), rec("g2", "a"), rec("g2", "b"), rec("g3", "x")])
        assert sorted(store.group_ids()) == ["g1", "g2", "g3"]

    def test_flush(self, store: DataStore) -> None:
        store.save([rec(f"g{i}", "t") for i in range(5)])
        store.flush()
        assert store.group_ids() == []
        assert all(store.load_group(f"g{i}", now=NOW) == [] for i in range(5))
        store.save([rec("g0", "again")])  # usable after a flush
        assert [r.name for r in store.load_group("g0", now=NOW)] == ["again"]

    def test_expiry_filtering(self, store: DataStore) -> None:
        store.save(
            [
                rec("g", "forever"),
                rec("g", "past", expire_at=NOW - 1),
                rec("g", "exactly_now", expire_at=NOW),
                rec("g", "future", expire_at=NOW + 60),
            ]
        )
        assert [r.name for r in store.load_group("g", now=NOW)] == ["forever", "future"]
        later = store.load_group("g", now=NOW + 120)
        assert [r.name for r in later] == ["forever"]
        earlier = store.load_group("g", now=NOW - 10)
        assert [r.name for r in earlier] == ["forever", "past", "exactly_now", "future"]

    def test_expire_at_roundtrip(self, store: DataStore) -> None:
        store.save([rec("g", "t", expire_at=NOW + 0.25)])
        assert store.load_group("g", now=NOW)[0].expire_at == NOW + 0.25

    def test_default_now_is_current_time(self, store: DataStore) -> None:
        store.save([rec("g", "old", expire_at=1.0), rec("g", "new", expire_at=4_000_000_000.0)])
        assert [r.name for r in store.load_group("g")] == ["new"]

    def test_bulk_save_many(self, store: DataStore) -> None:
        records = [
            rec(f"g{i % 7}", f"t{i}", seq=i, state={"progress": i, "log": [i] * 3})
            for i in range(700)
        ]
        store.save(records)
        assert sorted(store.group_ids()) == [f"g{i}" for i in range(7)]
        for g in range(7):
            expected = [r for r in records if r.group_id == f"g{g}"]
            assert store.load_group(f"g{g}", now=NOW) == expected

    def test_json_fidelity(self, store: DataStore) -> None:
        spec: dict[str, object] = {
            "type": "all",
            "children": [
                {"type": "count", "target": 10, "filters": {"kind": ["a", "b"]}},
                {"type": "sum", "field": "amount", "target": 12.5, "weights": [0.1, 1e-7]},
                {"type": "none", "empty": {}, "nothing": None, "flags": [True, False]},
            ],
        }
        state: dict[str, object] = {
            "total": 0.1 + 0.2,
            "tiny": 5e-324,
            "big": 1.7976931348623157e308,
            "neg": -123456789012345,
            "pi": math.pi,
            "text": "héllo wörld ✓ 日本語 🚀",
            "escapes": 'quote " backslash \\ tab \t newline \n',
            "ünïcödé-key": ["ß", {"ключ": "значение"}],
        }
        record = rec("grüppe ✓", "trácker 🚀", spec=spec, state=state, extra={"note": "ok"})
        store.save([record])
        (loaded,) = store.load_group("grüppe ✓", now=NOW)
        assert loaded == record
        assert loaded.spec == spec and loaded.state == state
        assert isinstance(loaded.state["total"], float) and loaded.state["total"] == 0.1 + 0.2
        assert isinstance(loaded.state["neg"], int)
        assert "grüppe ✓" in store.group_ids()

    def test_records_are_independent_per_group_and_name(self, store: DataStore) -> None:
        store.save([rec("g", "t", state={"v": "g"}), rec("h", "t", state={"v": "h"})])
        assert store.load_group("g", now=NOW)[0].state == {"v": "g"}
        assert store.load_group("h", now=NOW)[0].state == {"v": "h"}
        store.remove("g")
        assert store.load_group("h", now=NOW)[0].state == {"v": "h"}
