"""File-store specifics: URLs, reopening, durability, locking across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.contract.store_contract import NOW, rec
from tracking.errors import StoreError, TrackingTypeError, TrackingValueError
from tracking.store.file import FileDataStore, parse_file_url

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_schemes() -> None:
    assert FileDataStore.schemes == ("file",)


@pytest.mark.parametrize(
    ("url", "path", "options"),
    [
        ("file:///var/lib/tracking", "/var/lib/tracking", {}),
        ("file://relative/dir", "relative/dir", {}),
        ("file://data", "data", {}),
        ("plain/dir", "plain/dir", {}),
        ("/abs/plain", "/abs/plain", {}),
        ("file:///a%20b/c?file_size=5&gzipped=1", "/a b/c", {"file_size": "5", "gzipped": "1"}),
    ],
)
def test_parse_file_url(url: str, path: str, options: dict[str, str]) -> None:
    assert parse_file_url(url) == (Path(path), options)


def test_bad_urls() -> None:
    with pytest.raises(TrackingValueError):
        parse_file_url("file://")
    with pytest.raises(TrackingValueError):
        FileDataStore("file://never-created?gzipped=maybe")


def test_url_forms_open_the_same_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    FileDataStore("file://rel/store").save([rec("g", "a")])
    assert [r.name for r in FileDataStore(f"file://{tmp_path}/rel/store").load_group("g", NOW)] == [
        "a"
    ]
    assert len(FileDataStore("rel/store").load_group("g", NOW)) == 1


def test_url_options_set_layout(tmp_path: Path) -> None:
    store = FileDataStore(f"file://{tmp_path}/s?file_size=2&gzipped=true")
    store.save([rec("g", f"t{i}") for i in range(5)])
    names = sorted(os.listdir(tmp_path / "s" / "records"))
    assert names == ["0.json.gz", "1.json.gz", "2.json.gz", "_pod_meta.json"]


def test_reopen_keeps_records_order_and_expiry(tmp_path: Path) -> None:
    store = FileDataStore(str(tmp_path / "s"))
    store.save([rec("g", "b", seq=2, expire_at=NOW + 10), rec("g", "a"), rec("h", "x")])
    store.close()
    again = FileDataStore(str(tmp_path / "s"))
    assert [r.name for r in again.load_group("g", NOW)] == ["b", "a"]
    assert again.load_group("g", NOW)[0].seq == 2
    assert [r.name for r in again.load_group("g", NOW + 11)] == ["a"]
    assert sorted(again.group_ids()) == ["g", "h"]


def test_seq_rule_survives_reopen(tmp_path: Path) -> None:
    FileDataStore(str(tmp_path / "s")).save([rec("g", "t", seq=7, state={"v": 7})])
    again = FileDataStore(str(tmp_path / "s"))
    again.save([rec("g", "t", seq=6, state={"v": 6})])
    assert FileDataStore(str(tmp_path / "s")).load_group("g", NOW)[0].state == {"v": 7}


def test_save_is_durable_when_it_returns(tmp_path: Path) -> None:
    # A returned save is on disk: a child that saves and dies with os._exit
    # (no atexit, no finalizers) loses nothing.
    code = """
        import os, sys
        from tests.contract.store_contract import rec
        from tracking.store.file import FileDataStore
        store = FileDataStore(sys.argv[1])
        store.save([rec("g", "a", seq=1)])
        store.remove("g", ["missing"])
        store.save([rec("g", "b", seq=2)])
        os._exit(0)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(tmp_path / "s")],
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [r.name for r in FileDataStore(str(tmp_path / "s")).load_group("g", NOW)] == ["a", "b"]


def test_flush_leaves_other_files_alone(tmp_path: Path) -> None:
    store = FileDataStore(str(tmp_path / "s"))
    (tmp_path / "s" / "notes.txt").write_text("keep me")
    store.save([rec("g", "a"), rec("h", "b")])
    store.flush()
    assert (tmp_path / "s" / "notes.txt").read_text() == "keep me"
    assert FileDataStore(str(tmp_path / "s")).group_ids() == []


def test_non_json_record_is_rejected_and_nothing_half_applied(tmp_path: Path) -> None:
    store = FileDataStore(str(tmp_path / "s"))
    store.save([rec("g", "ok", state={"v": 1})])
    with pytest.raises(TrackingTypeError):
        store.save([rec("g", "ok", seq=1, state={"v": 2}), rec("g", "bad", state={"v": {1, 2}})])
    assert [r.state for r in store.load_group("g", NOW)] == [{"v": 1}]
    assert [r.state for r in FileDataStore(str(tmp_path / "s")).load_group("g", NOW)] == [{"v": 1}]


def test_second_store_object_sees_writes_of_the_first(tmp_path: Path) -> None:
    first = FileDataStore(str(tmp_path / "s"))
    second = FileDataStore(str(tmp_path / "s"))
    first.save([rec("g", "a")])
    second.save([rec("g", "b")])  # reloads first, so "a" is not lost
    first.remove("g", ["a"])
    assert [r.name for r in second.load_group("g", NOW)] == ["b"]
    assert [r.name for r in FileDataStore(str(tmp_path / "s")).load_group("g", NOW)] == ["b"]


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = FileDataStore(str(tmp_path / "s"))
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError):
        store.load_group("g")


WRITER = textwrap.dedent(
    """
    import sys
    from tests.contract.store_contract import rec
    from tracking.store.file import FileDataStore
    path, group, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = FileDataStore(path, file_size=5)
    for i in range(count):
        store.save([rec(group, f"{prefix}{i}", seq=i, state={"i": i})])
        if i % 10 == 0:
            store.load_group(group)
        if i % 7 == 0:
            store.save([rec(group, f"{prefix}{i}", seq=i + 1, state={"i": i, "again": True})])
    store.close()
    """
)


@pytest.mark.parametrize("same_group", [False, True], ids=["different-groups", "same-group"])
def test_two_processes_writing_concurrently_lose_nothing(tmp_path: Path, same_group: bool) -> None:
    path = str(tmp_path / "s")
    FileDataStore(path, file_size=5).close()
    count = 60
    groups = ["shared", "shared"] if same_group else ["left", "right"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, path, group, prefix, str(count)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for group, prefix in zip(groups, ["p", "q"], strict=True)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
    store = FileDataStore(path)
    if same_group:
        names = {r.name for r in store.load_group("shared", NOW)}
        assert names == {f"{p}{i}" for p in "pq" for i in range(count)}
    else:
        for group, prefix in [("left", "p"), ("right", "q")]:
            records = store.load_group(group, NOW)
            assert [r.name for r in records] == [f"{prefix}{i}" for i in range(count)]
            for i, record in enumerate(records):
                assert record.state == ({"i": i, "again": True} if i % 7 == 0 else {"i": i})
