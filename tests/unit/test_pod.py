"""Behaviour of the tastypy-compatible POD and ProgressTracker (tracking.pod)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from tracking.errors import StoreError, TrackingError, TrackingTypeError, TrackingValueError
from tracking.pod import (
    META_NAME,
    POD,
    DuplicateKeyError,
    PersistentOrderedDict,
    ProgressTracker,
    Tracker,
    atomic_write_bytes,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_files(path: Path) -> list[str]:
    """Data file names in a POD directory, in numeric order."""
    names = [n for n in os.listdir(path) if n[0].isdigit()]
    return sorted(names, key=lambda n: int(n.split(".")[0]))


# ---------------------------------------------------------------- basics


def test_aliases() -> None:
    assert POD is PersistentOrderedDict
    assert Tracker is ProgressTracker


def test_set_get_len_contains_and_persistence(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod["foo"] = "bar"
    pod["n"] = {"a": [1, 2.5, None, True]}
    assert pod["foo"] == "bar"
    assert len(pod) == 2
    assert "foo" in pod and "nope" not in pod
    assert 3.5 not in pod  # type: ignore[comparison-overlap]  # other key types: absent
    pod.sync()
    again = POD(tmp_path / "p")
    assert dict(again.items()) == {"foo": "bar", "n": {"a": [1, 2.5, None, True]}}


def test_missing_key_raises_keyerror(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    with pytest.raises(KeyError):
        pod["missing"]
    with pytest.raises(KeyError):
        del pod["missing"]
    with pytest.raises(KeyError):
        pod.mark_dirty("missing")
    assert pod.get("missing", 7) == 7


def test_init_mapping_and_pairs(tmp_path: Path) -> None:
    pod = POD(tmp_path / "a", init={"x": 1, "y": 2})
    assert list(pod.items()) == [("x", 1), ("y", 2)]
    pod2 = POD(tmp_path / "b", init=[("k", "v")])
    assert pod2["k"] == "v"


def test_order_keys_values_items_iteritems(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", file_size=2)
    for key in ["c", "a", "b", "z", "y"]:
        pod[key] = key.upper()
    expected = ["c", "a", "b", "z", "y"]
    assert list(pod.keys()) == expected
    assert list(pod) == expected
    assert list(pod.values()) == [k.upper() for k in expected]
    assert list(pod.items()) == [(k, k.upper()) for k in expected]
    assert list(pod.iteritems()) == [(k, k.upper()) for k in expected]
    assert ("a", "A") in pod.items() and ("a", "B") not in pod.items()
    pod.sync()
    assert list(POD(tmp_path / "p").keys()) == expected


def test_reading_views_does_not_mark_dirty(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod["a"] = {"x": 1}
    pod.sync()
    list(pod.values())
    list(pod.items())
    list(pod.iteritems())
    assert pod.dirty() == set()


def test_int_keys_become_strings(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod[1] = "one"
    assert pod["1"] == "one" and pod[1] == "one"
    assert list(pod.keys()) == ["1"]
    pod["nested"] = {1: "bar"}
    pod["tuple"] = ("baz", 42)
    assert pod["tuple"] == ("baz", 42)  # kept as assigned until reloaded
    pod.sync()
    again = POD(tmp_path / "p")
    assert again["nested"] == {"1": "bar"}
    assert again["tuple"] == ["baz", 42]


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        object(),
        b"bytes",
        float("nan"),
        float("inf"),
        {"a": [float("-inf")]},
        {(1, 2): "tuple key"},
        {None: 1},
        {True: 1},
        {1.5: "float key"},
        [1, {"deep": {"set": {3}}}],
    ],
)
def test_non_json_values_rejected(tmp_path: Path, value: object) -> None:
    pod = POD(tmp_path / "p")
    with pytest.raises(TrackingTypeError):
        pod["k"] = value
    assert "k" not in pod


@pytest.mark.parametrize("key", [1.5, None, True, ("a",), b"x"])
def test_non_json_keys_rejected(tmp_path: Path, key: object) -> None:
    pod = POD(tmp_path / "p")
    with pytest.raises(TrackingTypeError) as info:
        pod[key] = 1
    assert isinstance(info.value, TypeError) and isinstance(info.value, TrackingError)


def test_in_place_mutation_to_non_json_fails_sync_without_writing(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", file_size=1)
    pod["good"] = 1
    pod["bad"] = {"x": 1}
    pod.sync()
    pod["good"] = 2
    pod["bad"]["x"] = {1, 2}  # through __getitem__: dirty, but not checkable
    with pytest.raises(TrackingTypeError, match="bad"):
        pod.sync()
    # nothing written: the good change is not on disk either
    assert dict(POD(tmp_path / "p").items()) == {"good": 1, "bad": {"x": 1}}


def test_delete_persists(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", file_size=2)
    for i in range(6):
        pod[f"k{i}"] = i
    pod.sync()
    del pod["k1"]
    del pod["k4"]
    del pod["k5"]
    pod.sync()
    again = POD(tmp_path / "p")
    assert list(again.items()) == [("k0", 0), ("k2", 2), ("k3", 3)]
    # a file whose keys were all deleted is removed
    assert data_files(tmp_path / "p") == ["0.json", "1.json"]


def test_delete_then_readd_moves_to_end(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", file_size=2)
    for key in "abc":
        pod[key] = key
    del pod["a"]
    pod["a"] = "again"
    assert list(pod.keys()) == ["b", "c", "a"]
    pod.sync()
    assert list(POD(tmp_path / "p").items()) == [("b", "b"), ("c", "c"), ("a", "again")]


def test_pop_setdefault_clear(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod.update({"a": 1, "b": 2})
    assert pod.pop("a") == 1
    assert pod.setdefault("c", 3) == 3
    pod.sync()
    assert dict(POD(tmp_path / "p").items()) == {"b": 2, "c": 3}
    pod.clear()
    pod.sync()
    assert len(POD(tmp_path / "p")) == 0


def test_equality_with_dict(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", init={"a": 1})
    assert pod == {"a": 1}


# ---------------------------------------------------------------- sync rules


def test_getitem_marks_dirty_so_nested_changes_persist(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod["key"] = {}
    pod.sync()
    pod["key"]["subkey1"] = 1
    pod["key"]["subkey2"] = []
    pod["key"]["subkey2"].append(1)
    assert pod.dirty() == {"key"}
    pod.sync()
    assert POD(tmp_path / "p")["key"] == {"subkey1": 1, "subkey2": [1]}


def test_mark_dirty_for_foreign_reference(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    value: dict[str, object] = {}
    pod["key"] = value
    pod.sync()
    value["seen"] = True  # the POD cannot know
    pod.sync()
    assert POD(tmp_path / "p")["key"] == {}
    pod.mark_dirty("key")
    pod.sync()
    assert POD(tmp_path / "p")["key"] == {"seen": True}


def test_update_key_writes_now_even_under_hold(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod.hold()
    value: list[int] = []
    pod["mutable"] = value
    value.append(4)
    pod.update("mutable")
    assert POD(tmp_path / "p")["mutable"] == [4]
    assert pod.dirty() == set()
    with pytest.raises(KeyError):
        pod.update("absent")


def test_update_with_mapping_and_kwargs_assigns(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod.update({"a": 1}, b=2)
    pod.update([("c", 3)])
    assert list(pod.items()) == [("a", 1), ("b", 2), ("c", 3)]


def test_sync_at_triggers_automatic_sync(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", sync_at=3, file_size=10)
    pod["a"] = 1
    pod["b"] = 2
    assert len(POD(tmp_path / "p")) == 0  # below sync_at: nothing on disk yet
    pod["c"] = 3
    assert dict(POD(tmp_path / "p").items()) == {"a": 1, "b": 2, "c": 3}
    assert pod.dirty() == set()


def test_deletes_count_towards_sync_at(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", sync_at=2)
    pod.update({"a": 1, "b": 2})  # two changes: synced
    del pod["a"]
    assert "a" in POD(tmp_path / "p")
    del pod["b"]
    assert len(POD(tmp_path / "p")) == 0


def test_getitem_presyncs_and_stays_dirty(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", sync_at=2)
    pod["a"] = {"n": 0}
    pod["b"] = {"n": 0}  # synced here
    pod["c"] = {"n": 0}  # 1 dirty
    pod["a"]["n"] = 1  # 1 + the access reaches sync_at: sync first, then a is dirty
    assert pod.dirty() == {"a"}
    assert POD(tmp_path / "p")["c"] == {"n": 0}
    pod.sync()
    assert POD(tmp_path / "p")["a"] == {"n": 1}


def test_hold_and_unhold(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", sync_at=2)
    pod.hold()
    for i in range(10):
        pod[i] = i
    assert len(POD(tmp_path / "p")) == 0
    pod.sync()  # explicit sync works under hold
    assert len(POD(tmp_path / "p")) == 10
    pod["x"] = "pending"
    pod.unhold()  # syncs the outstanding change even below sync_at
    assert POD(tmp_path / "p")["x"] == "pending"
    pod["y"] = 1
    pod["z"] = 1  # auto sync is back
    assert "z" in POD(tmp_path / "p")


def test_revert_discards_unsynced_changes(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod["a"] = {"v": 1}
    pod.sync()
    pod["a"]["v"] = 2
    pod["b"] = 1
    del pod["a"]
    pod.revert()
    assert dict(pod.items()) == {"a": {"v": 1}}
    assert pod.dirty() == set()
    pod.sync()
    assert dict(POD(tmp_path / "p").items()) == {"a": {"v": 1}}


def test_close_and_context_manager_sync(tmp_path: Path) -> None:
    with POD(tmp_path / "p") as pod:
        pod["a"] = 1
    assert POD(tmp_path / "p")["a"] == 1
    pod["b"] = 2
    pod.close()
    assert POD(tmp_path / "p")["b"] == 2


def test_garbage_collected_pod_syncs_and_is_not_kept_alive(tmp_path: Path) -> None:
    import weakref

    pod = POD(tmp_path / "p")
    pod["a"] = 1
    ref = weakref.ref(pod)
    del pod
    gc.collect()
    assert ref() is None  # the exit hook does not keep it alive
    assert POD(tmp_path / "p")["a"] == 1


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that can import ``tracking``."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_atexit_sync_in_child_process(tmp_path: Path) -> None:
    code = """
        import sys
        from tracking.pod import POD, Tracker
        pod = POD(sys.argv[1], sync_at=10_000)
        pod.hold()
        for i in range(50):
            pod[f"k{i}"] = {"i": i}
        pod["k0"]["changed"] = True
        tracker = Tracker(sys.argv[2])
        tracker.try_it("task")
        tracker.mark_done("task")
        # no sync(): normal interpreter exit must write everything
    """
    result = run_child(code, str(tmp_path / "p"), str(tmp_path / "t"))
    assert result.returncode == 0, result.stderr
    pod = POD(tmp_path / "p")
    assert len(pod) == 50
    assert pod["k0"] == {"i": 0, "changed": True}
    assert Tracker(tmp_path / "t").check("task")


def test_atexit_sync_after_uncaught_exception(tmp_path: Path) -> None:
    code = """
        import sys
        from tracking.pod import POD
        pod = POD(sys.argv[1])
        pod["a"] = 1
        raise SystemExit("boom")
    """
    result = run_child(code, str(tmp_path / "p"))
    assert result.returncode == 1
    assert POD(tmp_path / "p")["a"] == 1


# ---------------------------------------------------------------- files


def test_file_size_spreads_values_over_files(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", file_size=3)
    for i in range(10):
        pod[f"k{i}"] = i
    pod.sync()
    assert data_files(tmp_path / "p") == ["0.json", "1.json", "2.json", "3.json"]
    rows = json.loads((tmp_path / "p" / "1.json").read_text())
    assert rows == [[3, "k3", 3], [4, "k4", 4], [5, "k5", 5]]


def test_sync_rewrites_only_dirty_files(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", file_size=2)
    for i in range(6):
        pod[f"k{i}"] = i
    pod.sync()
    before = {name: os.stat(tmp_path / "p" / name).st_ino for name in data_files(tmp_path / "p")}
    pod["k3"] = "changed"
    pod.sync()
    after = {name: os.stat(tmp_path / "p" / name).st_ino for name in data_files(tmp_path / "p")}
    assert before["0.json"] == after["0.json"] and before["2.json"] == after["2.json"]
    assert before["1.json"] != after["1.json"]  # replaced by rename


def test_gzipped(tmp_path: Path) -> None:
    import gzip

    pod = POD(tmp_path / "p", gzipped=True, file_size=2)
    for i in range(5):
        pod[f"k{i}"] = {"ü": i}
    pod.sync()
    assert data_files(tmp_path / "p") == ["0.json.gz", "1.json.gz", "2.json.gz"]
    rows = json.loads(gzip.decompress((tmp_path / "p" / "0.json.gz").read_bytes()))
    assert rows[0] == [0, "k0", {"ü": 0}]
    again = POD(tmp_path / "p", gzipped=True, file_size=2)
    assert again["k4"] == {"ü": 4}


def test_stored_layout_wins_with_warning(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p", gzipped=True, file_size=2)
    pod.update({"a": 1, "b": 2, "c": 3})
    pod.sync()
    with pytest.warns(UserWarning, match="gzipped=True, file_size=2"):
        again = POD(tmp_path / "p", file_size=5)
    assert (again.gzipped, again.file_size) == (True, 2)
    assert list(again.items()) == [("a", 1), ("b", 2), ("c", 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        POD(tmp_path / "p", gzipped=True, file_size=2)  # matching values: no warning
        defaults = POD(tmp_path / "p")  # defaults mean "whatever is stored": no warning
    assert (defaults.gzipped, defaults.file_size) == (True, 2)
    meta = json.loads((tmp_path / "p" / META_NAME).read_text())
    assert meta["file_size"] == 2 and meta["gzipped"] is True


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TrackingValueError):
        POD(tmp_path / "p", file_size=0)
    with pytest.raises(TrackingValueError):
        POD(tmp_path / "p", sync_at=0)
    with pytest.raises(TrackingValueError):
        Tracker(tmp_path / "t", max_tries=-1)


def test_corrupt_or_foreign_directories_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "0.json").write_text("[]")
    with pytest.raises(StoreError, match=r"no _pod_meta\.json"):
        POD(foreign)

    pod = POD(tmp_path / "p")
    pod["a"] = 1
    pod.sync()
    (tmp_path / "p" / "0.json").write_text('[\n[0,"a",1')  # torn, as a non-atomic writer leaves
    with pytest.raises(StoreError, match="cannot be read"):
        POD(tmp_path / "p")

    (tmp_path / "p" / "0.json").write_text('[[0,"a",1]]')
    (tmp_path / "p" / "1.json").write_text('[[5,"b",1]]')  # slot 5 belongs in file 0
    with pytest.raises(StoreError, match="malformed"):
        POD(tmp_path / "p")
    (tmp_path / "p" / "1.json").unlink()

    (tmp_path / "p" / META_NAME).write_text('{"format": "other"}')
    with pytest.raises(StoreError, match="metadata"):
        POD(tmp_path / "p")


def test_stale_temp_files_are_ignored_and_cleaned(tmp_path: Path) -> None:
    pod = POD(tmp_path / "p")
    pod["a"] = 1
    pod.sync()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    debris = tmp_path / "p" / f".0.json.{dead_pid}.abc123.tmp"
    debris.write_text('[[0,"a",')
    live = tmp_path / "p" / f".0.json.{os.getpid()}.xyz789.tmp"
    live.write_text("in progress")
    assert POD(tmp_path / "p")["a"] == 1
    assert not debris.exists()
    assert live.exists()  # a live writer's temp file is left alone


def test_duplicate_key_after_interrupted_readd_keeps_newer(tmp_path: Path) -> None:
    # Simulate a crash between rewriting the new file and the old one:
    # key "a" deleted from file 0 and re-added in file 1, only file 1 written.
    path = tmp_path / "p"
    pod = POD(path, file_size=2)
    pod.update({"a": "old", "b": "b"})
    pod.sync()
    atomic_write_bytes(path / "1.json", b'[[2,"a","new"]]')
    again = POD(path)
    assert list(again.items()) == [("b", "b"), ("a", "new")]
    again.sync()  # the stale copy in file 0 is dropped
    assert json.loads((path / "0.json").read_text()) == [[1, "b", "b"]]
    assert list(POD(path).items()) == [("b", "b"), ("a", "new")]


def test_atomic_write_leaves_no_temp_and_keeps_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"1")
    atomic_write_bytes(target, b"2")
    assert target.read_bytes() == b"2"
    assert os.listdir(tmp_path) == ["f.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


# ---------------------------------------------------------------- copy


def test_copy_moves_syncing_to_new_location(tmp_path: Path) -> None:
    pod = POD(tmp_path / "old", file_size=2)
    pod.update({"a": 1, "b": 2, "c": 3})
    pod.sync()
    del pod["a"]
    pod["d"] = 4
    pod.hold()
    pod.copy(tmp_path / "new", 10, gzipped=True)  # not affected by hold
    assert pod.path == tmp_path / "new"
    assert (pod.file_size, pod.gzipped) == (10, True)
    assert data_files(tmp_path / "new") == ["0.json.gz"]
    assert list(POD(tmp_path / "new", gzipped=True, file_size=10).items()) == [
        ("b", 2),
        ("c", 3),
        ("d", 4),
    ]
    # the old location is left as it was at its last sync
    assert list(POD(tmp_path / "old", file_size=2).items()) == [("a", 1), ("b", 2), ("c", 3)]
    # later syncs go to the new place only
    pod["e"] = 5
    pod.sync()
    assert POD(tmp_path / "new", gzipped=True, file_size=10)["e"] == 5
    assert "e" not in POD(tmp_path / "old", file_size=2)


def test_copy_refuses_existing_pod_or_same_dir(tmp_path: Path) -> None:
    pod = POD(tmp_path / "a", init={"x": 1})
    POD(tmp_path / "b")
    with pytest.raises(TrackingValueError):
        pod.copy(tmp_path / "b", 10)
    with pytest.raises(TrackingValueError):
        pod.copy(tmp_path / "a", 10)
    with pytest.raises(TrackingValueError):
        pod.copy(tmp_path / "c", 0)


# ---------------------------------------------------------------- tracker


def test_tracker_add_and_check(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t")
    assert tracker.check("a") is False  # absent: not done
    tracker.add("a")
    assert tracker["a"] == {"_done": False, "_tries": 0}
    with pytest.raises(DuplicateKeyError) as info:
        tracker.add("a")
    assert isinstance(info.value, KeyError) and isinstance(info.value, TrackingValueError)
    tracker.add_if_absent("a")
    tracker.add_if_absent("b")
    assert list(tracker.keys()) == ["a", "b"]
    assert tracker.check_or_add("c") is False and "c" in tracker
    tracker.mark_done("c")
    assert tracker.check("c") is True
    assert tracker.check_or_add("c") is True
    tracker.mark_not_done("c")
    assert tracker.check("c") is False


def test_tracker_tries(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t")
    tracker.add("a")
    tracker.increment_tries("a")
    tracker.increment_tries("a")
    assert tracker.tries("a") == 2
    tracker.decrement_tries("a")
    assert tracker.tries("a") == 1
    tracker.reset_tries("a")
    assert tracker.tries("a") == 0
    with pytest.raises(TrackingValueError):
        tracker.decrement_tries("a")
    for method in (tracker.tries, tracker.increment_tries, tracker.mark_done):
        with pytest.raises(KeyError):
            method("absent")


def test_tracker_try_it(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t", max_tries=2)
    assert tracker.max_tries == 2
    assert tracker.try_it("a") is True  # added and tried
    assert tracker.try_it("a") is True
    assert tracker.try_it("a") is False  # tried max_tries times
    assert tracker.tries("a") == 2
    assert tracker.try_it("b") is True
    tracker.mark_done("b")
    assert tracker.try_it("b") is False  # done
    assert tracker.tries("b") == 1
    tracker.max_tries = 3
    assert tracker.try_it("a") is True
    unlimited = Tracker(tmp_path / "u")
    assert all(unlimited.try_it("x") for _ in range(50))


def test_tracker_counts_and_percentages(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t")
    assert tracker.num_done() == 0 and tracker.num_tried() == 0
    assert tracker.fraction_done() == 0.0 and tracker.fraction_tried() == 0.0
    assert tracker.percent_done() == "0.00 %"
    assert tracker.percent_not_done() == "0.00 %"
    assert tracker.percent_tried() == "0.00 %"
    assert tracker.percent_not_tried() == "0.00 %"
    for i in range(8):
        tracker.add(i)
    tracker.mark_done(0)
    tracker.mark_done(1)
    tracker.increment_tries(0)
    tracker.increment_tries(5)
    tracker.increment_tries(6)
    assert tracker.num_done() == 2 and tracker.num_tried() == 3
    assert tracker.fraction_done() == 0.25 and tracker.fraction_tried() == 0.375
    assert tracker.percent_done() == "25.00 %"
    assert tracker.percent_not_done() == "75.00 %"
    assert tracker.percent_tried(1) == "37.5 %"
    assert tracker.percent_not_tried(3) == "62.500 %"
    assert tracker.percent(0.347) == "34.70 %"
    assert tracker.percent(1 / 3, 0) == "33 %"
    # edits through tracker[key] are counted too
    tracker[7]["_done"] = True
    assert tracker.num_done() == 3


def test_tracker_extra_data_and_persistence(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t", max_tries=3, file_size=2)
    for name in ["a", "b", "c"]:
        tracker.try_it(name)
    tracker.mark_done("b")
    tracker["b"]["result"] = {"rows": 10}
    tracker.sync()
    again = Tracker(tmp_path / "t", max_tries=3, file_size=2)
    assert again["b"] == {"_done": True, "_tries": 1, "result": {"rows": 10}}
    assert again.num_done() == 1 and again.num_tried() == 3
    assert again.try_it("b") is False


def test_tracker_values_must_be_entries(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t")
    with pytest.raises(TrackingTypeError):
        tracker["x"] = "not a dict"
    with pytest.raises(TrackingTypeError):
        tracker["x"] = {"_done": "yes", "_tries": 0}
    pod = POD(tmp_path / "plain", init={"a": 1})
    pod.sync()
    with pytest.raises(TrackingTypeError):
        Tracker(tmp_path / "plain")


def test_tracker_revert(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "t")
    tracker.add("a")
    tracker.sync()
    tracker.mark_done("a")
    tracker.revert()
    assert tracker.check("a") is False
