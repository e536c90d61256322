""" "A returned save is fsynced": proven by recording the fsync calls on the save path.

A test that saves and exits with ``os._exit`` passes without any fsync (the
page cache survives a process exit), so it cannot show durability against
a power cut. Here every ``os.fsync`` and ``os.replace`` made during
``save``/``remove`` is recorded, and for every file put in place the test
checks the order a crash needs: the new content fsynced before the rename,
and the directory fsynced after it, all before the call returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.store_contract import NOW, rec
from tracking.store.file import FileDataStore

Call = tuple[str, str, str]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Call]]:
    """Record ``("fsync", path, "")`` and ``("replace", src, dst)`` in call order."""
    recorded: list[Call] = []
    real_fsync: Callable[[int], None] = os.fsync
    real_replace: Callable[..., None] = os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        recorded.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}"), ""))

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        real_replace(src, dst, **kwargs)
        recorded.append(("replace", os.path.realpath(src), os.path.realpath(dst)))

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the fsynced file descriptors")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    yield recorded


def _check_durable_replaces(calls: list[Call]) -> list[str]:
    """Every rename's source fsynced before it and its directory fsynced after it."""
    targets = []
    for index, (kind, src, dst) in enumerate(calls):
        if kind != "replace":
            continue
        before = {path for k, path, _ in calls[:index] if k == "fsync"}
        after = {path for k, path, _ in calls[index + 1 :] if k == "fsync"}
        # The temp file's descriptor is fsynced while it still has its temp name.
        assert src in before, f"{dst} renamed into place without an fsync of its content"
        assert os.path.dirname(dst) in after, f"the rename of {dst} was not made durable"
        targets.append(dst)
    return targets


def test_save_fsyncs_every_file_it_replaces_and_their_directories(
    tmp_path: Path, calls: list[Call]
) -> None:
    store = FileDataStore(str(tmp_path / "s"), file_size=2)
    calls.clear()  # only the save path from here
    store.save([rec("g", "a", seq=1), rec("g", "b", seq=1), rec("h", "c", seq=1)])
    written = _check_durable_replaces(calls)
    root = os.path.realpath(tmp_path / "s")
    assert os.path.join(root, "generation") in written
    records = [p for p in written if p.startswith(os.path.join(root, "records") + os.sep)]
    assert len(records) >= 2  # three records over files of two entries each
    assert [r.name for r in store.load_group("g", NOW)] == ["a", "b"]


def test_remove_fsyncs_too(tmp_path: Path, calls: list[Call]) -> None:
    store = FileDataStore(str(tmp_path / "s"))
    store.save([rec("g", "a", seq=1), rec("g", "b", seq=1)])
    calls.clear()
    assert store.remove("g", ["a"]) == 1
    written = _check_durable_replaces(calls)
    assert any(p.endswith("generation") for p in written)
    assert any(os.sep + "records" + os.sep in p for p in written)


def test_a_save_without_changes_writes_nothing(tmp_path: Path, calls: list[Call]) -> None:
    store = FileDataStore(str(tmp_path / "s"))
    store.save([rec("g", "a", seq=5)])
    calls.clear()
    store.save([rec("g", "a", seq=4)])  # older: ignored, nothing to make durable
    assert calls == []
