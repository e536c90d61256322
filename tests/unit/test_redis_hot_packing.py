"""The hot path's own command encoding equals what redis-py would send.

``RedisDataCache.apply`` encodes its script call and work index write itself
(constant parts once per group and definition); these tests hold the bytes
to redis-py's packer for the same commands, so the server sees the same
arguments whichever way they were encoded. No server is needed.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tracking import AccumulationTracker, CountTracker, KeyValueEQ
from tracking.cache.base import TrackStep
from tracking.cache.redis import RedisDataCache
from tracking.cache.redis import hot as cache_module


def _redis_py_bytes(cache: RedisDataCache, commands: list[Any]) -> bytes:
    conn = redis.Connection()
    return b"".join(conn.pack_commands(commands))


@pytest.mark.parametrize("functions", [True, False])
@pytest.mark.parametrize(
    "deltas",
    [[1, 1], [2, 1], [1.5, -3], [0.1, 10**15], [True]],
    ids=["ones", "int", "float", "repr", "bool"],
)
def test_packed_apply_matches_redis_py(
    monkeypatch: pytest.MonkeyPatch, functions: bool, deltas: list[Any]
) -> None:
    cache = RedisDataCache("redis://127.0.0.1:1/0", key_prefix="pk", dedupe_window=60.5)
    cache._functions = functions
    monkeypatch.setattr(cache_module.time, "time", lambda: 1700000000.25)
    definitions = [
        CountTracker("visits é", [KeyValueEQ("a", 1)], 3).definition,
        AccumulationTracker("spent", [], [5, 10.5], key="amount").definition,
    ]
    steps = [TrackStep(definitions[i % 2], d) for i, d in enumerate(deltas)]
    periods = {"spent": (1700000000, 1700086400)}
    for source, bounds in ((None, None), ("src", periods)):
        packed = cache._packed_apply("grp ü", 7, steps, "ev1", source, bounds)
        keys = cache._script_keys("grp ü")
        args = cache._apply_args("grp ü", 7, steps, "ev1", source, bounds)
        expected = _redis_py_bytes(
            cache,
            [cache._invocation("apply", keys, args), cache._work_command("grp ü")],
        )
        assert packed == expected
        # encoded twice: the cached parts give the same bytes
        assert cache._packed_apply("grp ü", 7, steps, "ev1", source, bounds) == packed
        # the cluster's form: the script command alone
        alone = cache._packed_apply("grp ü", 7, steps, "ev1", source, bounds, index=False)
        assert alone == _redis_py_bytes(cache, [cache._invocation("apply", keys, args)])
