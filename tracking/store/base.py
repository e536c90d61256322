"""The store interface: the durable record behind the cache.

A store keeps one record per (group id, tracker name): the tracker's JSON
definition spec, its JSON state, an optional absolute expiry and the
group sequence number the state was taken at. Stores hold plain JSON only;
they never see Python objects, so nothing read back can execute code.

Backends implement a few atomic primitives; policy (when to flush, what to
load) lives in the manager and the write-behind flusher above them, as in
dramatiq and limits.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class TrackerRecord:
    """What the store keeps for one tracker of one group.

    ``seq`` orders writes of the same tracker: a store never replaces a
    record with one of a lower ``seq``, so a slow flusher cannot overwrite
    newer state written by a faster one.
    """

    group_id: str
    name: str
    spec: JSONDict
    state: JSONDict
    expire_at: float | None = None
    seq: int = 0
    extra: JSONDict = field(default_factory=dict)

    def to_json(self) -> JSONDict:
        """Plain-JSON form, the same in every backend."""
        return {
            "group_id": self.group_id,
            "name": self.name,
            "spec": self.spec,
            "state": self.state,
            "expire_at": self.expire_at,
            "seq": self.seq,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: JSONDict) -> TrackerRecord:
        """Inverse of :meth:`to_json`."""
        return cls(
            group_id=str(data["group_id"]),
            name=str(data["name"]),
            spec=dict(data["spec"]),
            state=dict(data["state"]),
            expire_at=None if data.get("expire_at") is None else float(data["expire_at"]),
            seq=int(data.get("seq", 0)),
            extra=dict(data.get("extra") or {}),
        )


class DataStore(abc.ABC):
    """Durable record of trackers. Every method is atomic per record."""

    #: URL schemes this backend serves, for :func:`tracking.store.store_from_url`.
    schemes: tuple[str, ...] = ()

    @abc.abstractmethod
    def load_group(self, group_id: str, now: float | None = None) -> list[TrackerRecord]:
        """All unexpired records of a group, in insertion order, in one read."""

    @abc.abstractmethod
    def save(self, records: Sequence[TrackerRecord]) -> None:
        """Upsert records in bulk.

        A record whose stored ``seq`` is higher than the given one is left
        alone (the newer write wins). Raises :class:`~tracking.errors.StoreError`
        if the write was not acknowledged; a partial failure raises too, and
        saving the same records again is always safe.
        """

    @abc.abstractmethod
    def remove(self, group_id: str, names: Sequence[str] | None = None) -> int:
        """Delete records of a group (all when ``names`` is None); return how many."""

    @abc.abstractmethod
    def group_ids(self) -> list[str]:
        """Every group id that has at least one record (for admin and sweeps)."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Delete every record of this product, and nothing else."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends need nothing
        """Release connections or file handles."""
