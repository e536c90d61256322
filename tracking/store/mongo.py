"""MongoDB store: one document per (group id, tracker name), via pymongo.

Layout (database from the URL or ``"tracking"``, collection ``"trackers"``)::

    {group_id, name, spec, state, seq, extra,
     expire_at: BSON datetime | null,   # drives the TTL index
     expire_ts: float | null,           # exact expiry, used for reads
     created_at: datetime, order: int}  # set once, on insert

* A unique compound index on ``(group_id, name)`` makes the document the
  record's identity; a TTL index on ``expire_at`` (``expireAfterSeconds=0``)
  lets the server delete expired records by itself. Reads filter on
  ``expire_ts`` too, because the TTL monitor runs only every minute.
  The server deletes by its wall clock, whatever ``now`` a caller passes
  to :meth:`~MongoDBDataStore.load_group`: a record expired in real time
  is gone for good, even for a read "as of" an earlier instant.
* :meth:`MongoDBDataStore.save` is one unordered ``bulk_write`` of
  conditional upserts that never replace a higher ``seq`` (see there).
* Indexes are created idempotently on first use, so the constructor does
  no network I/O (except the DNS SRV lookup pymongo does for
  ``mongodb+srv://`` URLs).
* Only JSON-compatible data is written; nothing is ever pickled.

Production wants a real MongoDB replica set: retryable writes and the
default ``w="majority"`` write concern only mean something there. The test
suite runs against a Mongo wire-compatible test server that reports a
standalone topology.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from tracking.errors import (
    MissingDependencyError,
    StoreError,
    TrackingTypeError,
    TrackingValueError,
)
from tracking.store.base import DataStore, JSONDict, TrackerRecord
from tracking.store.registry import builtin_schemes

try:
    import pymongo
    import pymongo.errors
    from pymongo import ASCENDING, MongoClient, UpdateOne
    from pymongo.collection import Collection
    from pymongo.write_concern import WriteConcern
except ImportError as exc:  # pragma: no cover - pymongo is a declared dependency
    raise MissingDependencyError("pymongo", "the MongoDB store (mongodb:// URLs)") from exc

Document = dict[str, Any]

#: Server error codes meaning "duplicate key" (11000; 11001 and 12582 from old servers/mongos).
DUPLICATE_KEY_CODES = frozenset({11000, 11001, 12582})

UNIQUE_INDEX_NAME = "tracking_group_id_name_unique"
TTL_INDEX_NAME = "tracking_expire_at_ttl"

# How many times a save retries upserts that lost an insert race before it
# checks which document won (see MongoDBDataStore.save).
_RACE_RETRIES = 3


@contextmanager
def _wrap_errors(operation: str) -> Iterator[None]:
    """Turn pymongo errors into :class:`StoreError`, keeping the cause chained."""
    try:
        yield
    except pymongo.errors.PyMongoError as exc:
        raise StoreError(f"MongoDB store: {operation} failed: {exc}") from exc


def _to_datetime(timestamp: float | None) -> datetime | None:
    """UTC datetime for the TTL index (BSON dates have millisecond precision)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC)


def _record_from_document(doc: Mapping[str, Any]) -> TrackerRecord:
    """Rebuild a record from its document, using the exact float expiry."""
    return TrackerRecord.from_json(
        {
            "group_id": doc["group_id"],
            "name": doc["name"],
            "spec": doc.get("spec") or {},
            "state": doc.get("state") or {},
            "expire_at": doc.get("expire_ts"),
            "seq": doc.get("seq", 0),
            "extra": doc.get("extra") or {},
        }
    )


def _last_writes(records: Sequence[TrackerRecord]) -> list[TrackerRecord]:
    """Collapse duplicates of one (group, name) in a batch to the one that wins.

    Applying the batch in order under the seq rule leaves the last record
    among those with the highest seq; keeping only that one makes the
    outcome independent of the order an unordered bulk is executed in.
    """
    winners: dict[tuple[str, str], TrackerRecord] = {}
    for record in records:
        key = (record.group_id, record.name)
        current = winners.get(key)
        if current is None or record.seq >= current.seq:
            winners[key] = record  # an existing key keeps its first-seen position
    return list(winners.values())


class MongoDBDataStore(DataStore):
    """Tracker records in a MongoDB collection (dictrack's class name).

    ``url`` is a ``mongodb://`` or ``mongodb+srv://`` URL, or an existing
    :class:`pymongo.MongoClient` (which this store then does not close).
    ``database`` defaults to the URL's database, else ``"tracking"``.
    ``write_concern`` is the ``w`` of every write: by default the URL's or
    client's ``w`` if it sets one, else ``"majority"``; ``w=0`` is refused
    because a store must know that its writes were acknowledged.
    ``timeout_ms`` bounds server selection, connecting, socket reads and
    the write concern wait, unless the URL sets them itself.
    Further keyword arguments go to :class:`pymongo.MongoClient`.
    """

    schemes = builtin_schemes("tracking.store.mongo:MongoDBDataStore")

    def __init__(
        self,
        url: str | MongoClient[Document] = "mongodb://localhost:27017",
        *,
        database: str | None = None,
        collection: str = "trackers",
        write_concern: str | int | None = None,
        timeout_ms: int = 10_000,
        **client_options: Any,
    ) -> None:
        if timeout_ms <= 0:
            raise TrackingValueError(f"timeout_ms must be positive, not {timeout_ms!r}")
        if not collection:
            raise TrackingValueError("collection name must not be empty")
        self._owns_client = not isinstance(url, MongoClient)
        if isinstance(url, MongoClient):
            if client_options:
                raise TrackingValueError(
                    "client options cannot be applied to an existing MongoClient: "
                    f"{sorted(client_options)}"
                )
            client: MongoClient[Document] = url
        else:
            client = self._make_client(url, timeout_ms, client_options)
        self._client = client
        with _wrap_errors("choosing the database"):
            db = client.get_default_database(default=database or "tracking")
            if database:
                db = client[database]
        w = self._choose_w(client, write_concern)
        concern = dict(client.write_concern.document)
        concern["w"] = w
        concern.setdefault("wtimeout", timeout_ms)
        self._collection: Collection[Document] = db.get_collection(
            collection, write_concern=WriteConcern(**concern)
        )
        self._indexes_ready = False
        self._lock = threading.Lock()
        self._last_order = 0

    # -- construction helpers ------------------------------------------------

    @staticmethod
    def _make_client(url: str, timeout_ms: int, options: dict[str, Any]) -> MongoClient[Document]:
        """Build a lazily connecting client with retryable writes and bounded timeouts."""
        scheme = url.partition("://")[0].lower()
        if scheme not in MongoDBDataStore.schemes:
            raise TrackingValueError(
                f"MongoDBDataStore needs a mongodb:// or mongodb+srv:// URL, not {url!r}"
            )
        query = url.partition("?")[2].lower()
        given = {part.partition("=")[0] for part in query.split("&") if part}
        defaults = {
            "serverselectiontimeoutms": ("serverSelectionTimeoutMS", timeout_ms),
            "connecttimeoutms": ("connectTimeoutMS", timeout_ms),
            "sockettimeoutms": ("socketTimeoutMS", timeout_ms),
        }
        for lowered, (option, value) in defaults.items():
            if lowered not in given and option not in options:
                options[option] = value
        options.setdefault("retryWrites", True)
        options.setdefault("connect", False)  # no network I/O until first use
        try:
            return MongoClient(url, **options)
        except pymongo.errors.ConfigurationError as exc:
            if "dnspython" in str(exc):
                raise MissingDependencyError("dnspython", "mongodb+srv:// URLs") from exc
            raise TrackingValueError(f"invalid MongoDB URL or option: {exc}") from exc
        except ValueError as exc:  # pymongo's URI parser raises plain ValueError too
            raise TrackingValueError(f"invalid MongoDB URL or option: {exc}") from exc
        except TypeError as exc:
            raise TrackingTypeError(f"invalid MongoDB client option: {exc}") from exc
        except pymongo.errors.PyMongoError as exc:  # e.g. SRV lookup failure
            raise StoreError(f"MongoDB store: creating the client failed: {exc}") from exc

    @staticmethod
    def _choose_w(client: MongoClient[Document], write_concern: str | int | None) -> str | int:
        """The ``w`` to write with: explicit, else the client's/URL's, else majority."""
        if write_concern is None:
            write_concern = client.write_concern.document.get("w", "majority")
        if isinstance(write_concern, bool) or not isinstance(write_concern, str | int):
            raise TrackingValueError(f"write_concern must be a str or int, not {write_concern!r}")
        if write_concern == 0:
            raise TrackingValueError(
                "write_concern 0 (unacknowledged) is not allowed: the store must know "
                "that a write happened"
            )
        if isinstance(write_concern, int) and write_concern < 0:
            raise TrackingValueError(f"write_concern must be >= 1, not {write_concern!r}")
        return write_concern

    # -- properties ---------------------------------------------------------

    @property
    def collection(self) -> Collection[Document]:
        """The collection this store owns (for admin tools and tests)."""
        return self._collection

    @property
    def client(self) -> MongoClient[Document]:
        """The pymongo client in use."""
        return self._client

    # -- internals ----------------------------------------------------------

    def ensure_indexes(self) -> None:
        """Create the unique and TTL indexes once per store (idempotent on the server).

        Called before the first operation; safe to call again. If an index
        of the same name exists with other options, this raises
        :class:`StoreError` instead of silently running without it.
        """
        if self._indexes_ready:
            return
        with self._lock:
            if self._indexes_ready:
                return
            with _wrap_errors("creating indexes"):
                self._collection.create_index(
                    [("group_id", ASCENDING), ("name", ASCENDING)],
                    name=UNIQUE_INDEX_NAME,
                    unique=True,
                )
                self._collection.create_index(
                    [("expire_at", ASCENDING)], name=TTL_INDEX_NAME, expireAfterSeconds=0
                )
            self._indexes_ready = True

    def _next_orders(self, count: int) -> int:
        """First of ``count`` increasing insertion-order numbers.

        Nanosecond wall clock, made strictly increasing within this
        process, so records keep their insertion order across processes
        as well as clocks allow.
        """
        with self._lock:
            first = max(time.time_ns(), self._last_order + 1)
            self._last_order = first + count - 1
        return first

    def _upserts(self, records: Sequence[TrackerRecord], first_order: int) -> list[UpdateOne]:
        """One conditional upsert per record: only replaces a stored seq <= the record's."""
        now = datetime.now(tz=UTC)
        ops = []
        for offset, record in enumerate(records):
            ops.append(
                UpdateOne(
                    {
                        "group_id": record.group_id,
                        "name": record.name,
                        "seq": {"$lte": record.seq},
                    },
                    {
                        "$set": {
                            "spec": record.spec,
                            "state": record.state,
                            "seq": record.seq,
                            "extra": record.extra,
                            "expire_at": _to_datetime(record.expire_at),
                            "expire_ts": record.expire_at,
                        },
                        "$setOnInsert": {"created_at": now, "order": first_order + offset},
                    },
                    upsert=True,
                )
            )
        return ops

    def _bulk_upsert(self, records: Sequence[TrackerRecord]) -> list[TrackerRecord]:
        """Run one unordered bulk; return the records whose insert hit a duplicate key.

        Any other write error, or a write concern error, raises
        :class:`StoreError` (the other writes of the bulk may have been
        applied; saving again is safe).
        """
        ops = self._upserts(records, self._next_orders(len(records)))
        # StoreError raised inside is not a PyMongoError, so _wrap_errors lets it through.
        with _wrap_errors("save"):
            try:
                result = self._collection.bulk_write(ops, ordered=False)
            except pymongo.errors.BulkWriteError as exc:
                details: Mapping[str, Any] = exc.details or {}
                errors = list(details.get("writeErrors") or [])
                others = [e for e in errors if e.get("code") not in DUPLICATE_KEY_CODES]
                concern_errors = list(details.get("writeConcernErrors") or [])
                if others or concern_errors:
                    first = (others or concern_errors)[0]
                    raise StoreError(
                        f"MongoDB store: save failed for {len(others)} record(s) and "
                        f"{len(concern_errors)} write concern error(s); first: "
                        f"{first.get('code')} {first.get('errmsg')}"
                    ) from exc
                return [records[int(e["index"])] for e in errors]
        if not result.acknowledged:  # pragma: no cover - w=0 is refused in __init__
            raise StoreError("MongoDB store: save was not acknowledged")
        return []

    def _stored_seqs(self, records: Sequence[TrackerRecord]) -> dict[tuple[str, str], int]:
        """Current seq of the stored documents for these records, in one query."""
        keys = [{"group_id": r.group_id, "name": r.name} for r in records]
        with _wrap_errors("save (checking conflicts)"):
            docs = self._collection.find(
                {"$or": keys}, projection={"_id": 0, "group_id": 1, "name": 1, "seq": 1}
            )
            return {(d["group_id"], d["name"]): int(d.get("seq", 0)) for d in docs}

    # -- DataStore ----------------------------------------------------------

    def save(self, records: Sequence[TrackerRecord]) -> None:
        """Upsert records in one unordered ``bulk_write``, honouring the seq rule.

        Each record is an ``UpdateOne`` filtered on ``{group_id, name,
        seq <= record.seq}`` with ``upsert=True``. If a stored document has
        a higher seq the filter does not match, the upsert tries to insert
        and the unique index refuses it with a duplicate key error (11000):
        that record is skipped, the newer state stays.

        A duplicate key error can also mean that another client inserted
        the same new record at the same moment (both upserts found nothing,
        both inserted), and the loser may hold the higher seq. So for the
        records that got 11000, one ``find`` reads the stored seqs: a higher
        one means skip; the others are upserted again (the document now
        exists, so the filter decides). After a few such rounds a record
        still in conflict raises :class:`StoreError` (saving again is safe).
        Without conflicts a save is exactly one ``update`` command.
        """
        if not records:
            return
        self.ensure_indexes()
        pending = self._bulk_upsert(_last_writes(records))
        for _ in range(_RACE_RETRIES):
            if not pending:
                return
            stored = self._stored_seqs(pending)
            pending = [
                r
                for r in pending
                if stored.get((r.group_id, r.name), r.seq) <= r.seq  # not superseded
            ]
            if not pending:
                return
            pending = self._bulk_upsert(pending)
        if pending:
            where = ", ".join(f"{r.group_id}/{r.name}" for r in pending[:5])
            raise StoreError(
                f"MongoDB store: save kept conflicting with concurrent writers for {where}; "
                "saving again is safe"
            )

    def load_group(self, group_id: str, now: float | None = None) -> list[TrackerRecord]:
        """Unexpired records of a group in insertion order, with one ``find``."""
        now = time.time() if now is None else now
        self.ensure_indexes()
        with _wrap_errors("load_group"):
            cursor = self._collection.find(
                {
                    "group_id": group_id,
                    "$or": [{"expire_ts": None}, {"expire_ts": {"$gt": now}}],
                },
                projection={"_id": 0},
                sort=[("order", ASCENDING), ("name", ASCENDING)],
            )
            return [_record_from_document(doc) for doc in cursor]

    def remove(self, group_id: str, names: Sequence[str] | None = None) -> int:
        """Delete a group's records (all, or those named); return how many went."""
        self.ensure_indexes()
        query: JSONDict = {"group_id": group_id}
        if names is not None:
            if not names:
                return 0
            query["name"] = {"$in": list(names)}
        with _wrap_errors("remove"):
            return int(self._collection.delete_many(query).deleted_count)

    def group_ids(self) -> list[str]:
        """Distinct group ids in this store's collection (expired ones included)."""
        self.ensure_indexes()
        with _wrap_errors("group_ids"):
            return [str(g) for g in self._collection.distinct("group_id")]

    def flush(self) -> None:
        """Delete every document of this store's collection; no other collection or database."""
        self.ensure_indexes()
        with _wrap_errors("flush"):
            self._collection.delete_many({})

    def close(self) -> None:
        """Close the client if this store created it (a client passed in stays open)."""
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._collection.database.name}.{self._collection.name}>"
