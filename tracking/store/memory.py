"""In-process store: the record kept in a dict, for tests and single-process use."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from tracking.store.base import DataStore, TrackerRecord
from tracking.store.registry import builtin_schemes


class MemoryDataStore(DataStore):
    """A store that lives in this process only (nothing survives a restart)."""

    schemes = builtin_schemes("tracking.store.memory:MemoryDataStore")

    def __init__(self, url: str | None = None) -> None:
        # A plain mutex around dict updates; stores are never on the hot path.
        self._lock = threading.Lock()
        self._groups: dict[str, dict[str, TrackerRecord]] = {}

    def load_group(self, group_id: str, now: float | None = None) -> list[TrackerRecord]:
        now = time.time() if now is None else now
        with self._lock:
            records = list(self._groups.get(group_id, {}).values())
        return [r for r in records if r.expire_at is None or r.expire_at > now]

    def save(self, records: Sequence[TrackerRecord]) -> None:
        with self._lock:
            for record in records:
                group = self._groups.setdefault(record.group_id, {})
                current = group.get(record.name)
                if current is not None and current.seq > record.seq:
                    continue
                group[record.name] = record

    def remove(self, group_id: str, names: Sequence[str] | None = None) -> int:
        with self._lock:
            group = self._groups.get(group_id)
            if not group:
                return 0
            if names is None:
                count = len(group)
                del self._groups[group_id]
                return count
            count = 0
            for name in names:
                if group.pop(name, None) is not None:
                    count += 1
            if not group:
                del self._groups[group_id]
            return count

    def group_ids(self) -> list[str]:
        with self._lock:
            return list(self._groups)

    def flush(self) -> None:
        with self._lock:
            self._groups.clear()
