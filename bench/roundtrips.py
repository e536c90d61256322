"""Client-side round-trip counting for redis-py, shared by both sides of the engine benchmark.

``engine_bench.py`` (this product) and ``dictrack_worker.py`` (run in
dictrack's own virtualenv) import it from this folder, so both engines are
counted by the same code. Stdlib and redis-py only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class RoundTripCounter:
    """Counts redis-py requests (round trips) and the commands they carry.

    Every request redis-py sends goes through ``send_packed_command`` once (a
    pipeline or transaction is one request); command names are taken where
    commands are packed. ``reset`` starts a measurement window.
    """

    def __init__(self) -> None:
        self.round_trips = 0
        self.commands: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget what was counted so far."""
        self.round_trips = 0
        self.commands = Counter()

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain JSON."""
        return {"round_trips": self.round_trips, "commands": dict(self.commands)}

    def install(self) -> None:
        """Wrap the connection methods every request of redis-py goes through."""
        from redis.connection import AbstractConnection

        counter = self
        send_packed: Any = AbstractConnection.send_packed_command
        send_command: Any = AbstractConnection.send_command
        pack_commands: Any = AbstractConnection.pack_commands

        def _name(raw: Any) -> str:
            return (raw.decode() if isinstance(raw, bytes) else str(raw)).upper()

        def counted_send_packed(self: Any, command: Any, check_health: bool = True) -> Any:
            counter.round_trips += 1
            return send_packed(self, command, check_health)

        def counted_send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            counter.commands[_name(args[0])] += 1
            return send_command(self, *args, **kwargs)

        def counted_pack_commands(self: Any, commands: Any) -> Any:
            for command in commands:
                counter.commands[_name(command[0])] += 1
            return pack_commands(self, commands)

        AbstractConnection.send_packed_command = counted_send_packed  # type: ignore[method-assign]
        AbstractConnection.send_command = counted_send_command  # type: ignore[method-assign]
        AbstractConnection.pack_commands = counted_pack_commands  # type: ignore[method-assign]
