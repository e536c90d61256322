"""The registry of follow-up event handlers.

Users say what should happen when a tracker fires an event::

    from celery_app import on_event
    from tracking import EVENT_TRACKER_ALL_COMPLETED

    @on_event(EVENT_TRACKER_ALL_COMPLETED)      # or @on_event("ALL_COMPLETED")
    def grant_reward(event: dict) -> None:
        ...

and make the worker import the module: ``TRACKING_EVENT_HANDLERS`` is a JSON
list of import paths, each a module (its decorators register) or
``module:function`` (registered for every event code unless decorated).

A handler receives the event as a JSON dict (``event_id``, ``code``,
``event``, ``event_ts``, ``group_id``, ``name``, ``stage`` (0-based),
``progress``, ``limiter``; built by :func:`tracking.firing.event_payload`
or :func:`tracking.firing.record_payload`, the same on every path; the
README's "Follow-up event payload" defines each field). It runs as its own
Celery task (``tasks.events.dispatch_event`` on the ``events`` queue), so it
may raise to be retried, and may chain tasks of its own.

Messages name handlers by their registered name (``module:qualname``); the
worker only calls handlers in this registry, never an import path read
from a message (nothing read from a message can execute code).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from tracking.errors import TrackingValueError
from tracking.events import EVENT_ALL, EVENT_CODES, EVENT_NAMES

Handler = Callable[[dict[str, Any]], Any]
H = TypeVar("H", bound=Handler)

_lock = threading.RLock()
_handlers: dict[str, tuple[Handler, frozenset[int]]] = {}
_loaded: set[str] = set()
_CODES_ATTR = "__tracking_event_codes__"


class UnknownHandlerError(TrackingValueError):
    """A message names a handler that is not registered in this worker."""


def event_code(code: int | str) -> int:
    """An event code from ``1003``, ``"ALL_COMPLETED"`` or ``"EVENT_TRACKER_ALL_COMPLETED"``."""
    if isinstance(code, bool):
        raise TrackingValueError(f"unknown event code {code!r}")
    if isinstance(code, int):
        if code in EVENT_NAMES:
            return code
    elif isinstance(code, str):
        name = code.strip().upper().removeprefix("EVENT_TRACKER_")
        if name in EVENT_CODES:
            return EVENT_CODES[name]
    raise TrackingValueError(
        f"unknown event code {code!r}; expected one of {sorted(EVENT_CODES)} or {EVENT_ALL}"
    )


def handler_name(handler: Callable[..., Any]) -> str:
    """The registered name of a handler: ``module:qualname``."""
    return f"{handler.__module__}:{handler.__qualname__}"


def register_handler(
    handler: Handler, codes: Iterable[int | str] | None = None, name: str | None = None
) -> str:
    """Register ``handler`` for ``codes`` (all codes when None); return its name.

    Registering the same function again widens its codes; it still runs
    once per event.
    """
    if not callable(handler):
        raise TrackingValueError(f"{handler!r} is not callable")
    wanted = frozenset(EVENT_ALL if codes is None else (event_code(c) for c in codes))
    if not wanted:
        raise TrackingValueError("give at least one event code (or none for all)")
    key = name or handler_name(handler)
    with _lock:
        previous = _handlers.get(key)
        if (
            previous is not None
            and previous[0] is not handler
            and handler_name(previous[0]) != handler_name(handler)
        ):
            raise TrackingValueError(f"another handler is already registered as {key!r}")
        merged = wanted | (previous[1] if previous is not None else frozenset())
        _handlers[key] = (handler, merged)
    return key


def on_event(*codes: int | str) -> Callable[[H], H]:
    """Decorator: run the function as a follow-up task for these event codes.

    ``@on_event()`` with no codes means every event.
    """
    resolved = [event_code(c) for c in codes] or None

    def decorate(func: H) -> H:
        register_handler(func, resolved)
        setattr(func, _CODES_ATTR, resolved)
        return func

    return decorate


def load_handlers(paths: Iterable[str]) -> None:
    """Import the handler modules/functions named in ``TRACKING_EVENT_HANDLERS``.

    Idempotent. A bad path raises ``TrackingValueError`` naming it, so a
    misconfigured worker fails at start rather than dropping events.
    """
    for path in paths:
        with _lock:
            if path in _loaded:
                continue
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TrackingValueError(f"event handler module {module_name!r}: {exc}") from exc
        if attr:
            target: Any = module
            for part in attr.split("."):
                target = getattr(target, part, None)
                if target is None:
                    raise TrackingValueError(f"event handler {path!r}: no {part!r} there")
            if not callable(target):
                raise TrackingValueError(f"event handler {path!r} is not callable")
            register_handler(target, getattr(target, _CODES_ATTR, None))
        with _lock:
            _loaded.add(path)


def handlers_for(code: int) -> list[str]:
    """Names of the handlers registered for ``code``, in registration order."""
    with _lock:
        return [name for name, (_, codes) in _handlers.items() if code in codes]


def get_handler(name: str) -> Handler:
    """The handler registered as ``name`` (``UnknownHandlerError`` otherwise)."""
    with _lock:
        entry = _handlers.get(name)
    if entry is None:
        raise UnknownHandlerError(f"no event handler {name!r} is registered in this worker")
    return entry[0]


def registered() -> dict[str, list[str]]:
    """Handler name -> event names it runs for (for ``tracking`` CLI and logs)."""
    with _lock:
        return {
            name: [EVENT_NAMES[c] for c in sorted(codes)] for name, (_, codes) in _handlers.items()
        }


def unregister_all() -> None:
    """Forget every handler (tests)."""
    with _lock:
        _handlers.clear()
        _loaded.clear()
