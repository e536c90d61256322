"""Changing a tracker's definition in place, as ``docs/deploy.md`` ("Upgrades") describes.

``update_tracker`` replaces definition and state: the spec from
``tracking show GROUP --json`` (``to_spec(include_state=True)``) with an
edited definition keeps the progress; a spec without ``state`` starts
afresh; a state that does not fit the new definition is refused before
anything changes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tracking import (
    CountTracker,
    InvalidSpecError,
    KeyValueEQ,
    MemoryDataCache,
    MemoryDataStore,
    TrackingManager,
    tracker_from_spec,
)

GROUP = "user-1"


def _manager_with_progress(events: int) -> TrackingManager:
    manager = TrackingManager(MemoryDataCache(), MemoryDataStore())
    manager.add_tracker(
        GROUP, CountTracker("paid", [KeyValueEQ("status", "paid")], target=[10, 50])
    )
    for n in range(events):
        manager.track(GROUP, {"status": "paid"}, event_id=f"e{n}")
    return manager


def _shown_spec(manager: TrackingManager) -> dict[str, Any]:
    """What ``tracking show GROUP --json`` prints for the tracker, through JSON."""
    (tracker,) = manager.get_trackers(GROUP, "paid")
    spec: dict[str, Any] = json.loads(json.dumps(tracker.to_spec(include_state=True)))
    return spec


def test_an_edited_spec_with_its_state_keeps_the_progress() -> None:
    manager = _manager_with_progress(3)
    spec = _shown_spec(manager)
    spec["target"] = [5, 20]
    manager.update_tracker(GROUP, tracker_from_spec(spec))
    (tracker,) = manager.get_trackers(GROUP, "paid")
    assert tracker.progress == 3
    assert list(tracker.targets) == [5, 20]
    manager.track(GROUP, {"status": "paid"}, event_id="after-1")
    manager.track(GROUP, {"status": "paid"}, event_id="after-2")
    (tracker,) = manager.get_trackers(GROUP, "paid")
    assert tracker.progress == 5 and tracker.target == 20  # the new first stage completed


def test_a_spec_without_state_starts_the_tracker_afresh() -> None:
    manager = _manager_with_progress(3)
    spec = _shown_spec(manager)
    del spec["state"]
    manager.update_tracker(GROUP, tracker_from_spec(spec))
    (tracker,) = manager.get_trackers(GROUP, "paid")
    assert tracker.progress == 0


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda spec: spec.update(limiters=[{"type": "CountLimiter", "count": 5}]),
            id="new-limiter-without-its-state",
        ),
        pytest.param(
            lambda spec: spec.update(target=[10], state={**spec["state"], "stage": 1}),
            id="stage-beyond-the-new-targets",
        ),
    ],
)
def test_a_state_that_does_not_fit_the_new_definition_is_refused(edit: Any) -> None:
    manager = _manager_with_progress(3)
    spec = _shown_spec(manager)
    edit(spec)
    with pytest.raises(InvalidSpecError):
        manager.update_tracker(GROUP, tracker_from_spec(spec))
    (tracker,) = manager.get_trackers(GROUP, "paid")
    assert tracker.progress == 3 and list(tracker.targets) == [10, 50]
