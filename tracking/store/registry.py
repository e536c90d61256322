"""Choose a store backend from a URL scheme, as the ``limits`` library does for storages.

``store_from_url("mongodb://db.example/tracking")`` builds a
:class:`~tracking.store.mongo.MongoDBDataStore`; ``memory://`` and
``file://`` work the same way. Backends are registered by scheme, either
as a factory callable or as a ``"module:attribute"`` path imported only
when a URL of that scheme is used, so an optional dependency (pymongo) is
needed only by those who use its backend, and a backend module can be
registered before it is imported.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

from tracking.errors import MissingDependencyError, TrackingTypeError, TrackingValueError
from tracking.store.base import DataStore

#: Builds a store from its URL and keyword options (a DataStore class fits).
StoreFactory = Callable[..., DataStore]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

#: The built-in backends: URL scheme -> ``"module:Class"``. The one place
#: their schemes are written down: each class's ``schemes`` is read from
#: here (:func:`builtin_schemes`), and nothing is imported until used.
BUILTIN_STORES: Mapping[str, str] = MappingProxyType(
    {
        "memory": "tracking.store.memory:MemoryDataStore",
        "file": "tracking.store.file:FileDataStore",
        "mongodb": "tracking.store.mongo:MongoDBDataStore",
        "mongodb+srv": "tracking.store.mongo:MongoDBDataStore",
    }
)

_lock = threading.Lock()
_registry: dict[str, StoreFactory | str] = dict(BUILTIN_STORES)


def builtin_schemes(target: str) -> tuple[str, ...]:
    """The schemes :data:`BUILTIN_STORES` maps to ``target`` (``"module:Class"``), in order.

    Built-in classes set ``schemes = builtin_schemes(...)`` so that the
    class attribute and the registry cannot disagree.
    """
    schemes = tuple(scheme for scheme, path in BUILTIN_STORES.items() if path == target)
    if not schemes:
        raise TrackingValueError(f"{target!r} is not a built-in store")
    return schemes


def _normalise_scheme(scheme: str) -> str:
    if not isinstance(scheme, str):
        raise TrackingTypeError(f"a store scheme must be a str, not {type(scheme).__name__}")
    lowered = scheme.lower()
    if not _SCHEME.match(lowered + "://"):
        raise TrackingValueError(f"invalid URL scheme {scheme!r}")
    return lowered


def register_store(scheme: str, factory: StoreFactory | str) -> None:
    """Serve URLs of ``scheme`` with ``factory``; a later registration replaces an earlier one.

    ``factory`` is called as ``factory(url, **options)``. It may be given
    as ``"package.module:Name"`` to defer the import until first use.
    """
    key = _normalise_scheme(scheme)
    if isinstance(factory, str):
        module, sep, attr = factory.partition(":")
        if not sep or not module or not attr:
            raise TrackingValueError(
                f"a store factory path must look like 'package.module:Name', not {factory!r}"
            )
    elif not callable(factory):
        raise TrackingTypeError(f"a store factory must be callable, not {factory!r}")
    with _lock:
        _registry[key] = factory


def unregister_store(scheme: str) -> None:
    """Forget ``scheme`` (no error if it was not registered)."""
    with _lock:
        _registry.pop(_normalise_scheme(scheme), None)


def known_schemes() -> list[str]:
    """Registered URL schemes, sorted."""
    with _lock:
        return sorted(_registry)


def _resolve(scheme: str, path: str) -> StoreFactory:
    """Import a ``module:Name`` factory, reporting a missing third-party package clearly."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except MissingDependencyError:
        raise
    except ImportError as exc:
        missing = exc.name or ""
        # Our own backend module missing is a packaging bug, not an optional dependency.
        if missing and missing != "tracking" and not missing.startswith("tracking."):
            top = missing.split(".")[0]
            raise MissingDependencyError(top, f"the {scheme}:// store") from exc
        raise
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TrackingValueError(f"store factory {path!r} for {scheme}:// is not callable")
    return cast(StoreFactory, factory)


def store_from_url(url: str, **options: Any) -> DataStore:
    """Build the store a URL names, passing ``options`` to its backend.

    Raises :class:`~tracking.errors.TrackingValueError` for a URL without a
    scheme or with an unknown one (the message lists the known schemes),
    and :class:`~tracking.errors.MissingDependencyError` when the backend
    needs a package that is not installed.
    """
    if not isinstance(url, str):
        raise TrackingTypeError(f"a store URL must be a str, not {type(url).__name__}")
    match = _SCHEME.match(url)
    if match is None:
        raise TrackingValueError(
            f"store URL {url!r} has no scheme; use one of: "
            + ", ".join(f"{s}://" for s in known_schemes())
        )
    scheme = match.group(1).lower()
    with _lock:
        entry = _registry.get(scheme)
    if entry is None:
        raise TrackingValueError(
            f"unknown store URL scheme {scheme!r} in {url!r}; known schemes: "
            + ", ".join(f"{s}://" for s in known_schemes())
        )
    factory = _resolve(scheme, entry) if isinstance(entry, str) else entry
    store = factory(url, **options)
    if not isinstance(store, DataStore):
        raise TrackingTypeError(
            f"the {scheme}:// factory returned {type(store).__name__}, not a DataStore"
        )
    return store
