"""A skewed wall clock for one test subprocess (never the machine's clock).

Put this directory first on ``PYTHONPATH`` and set
``TRACKING_TEST_CLOCK_SKEW_SECONDS``: at interpreter start-up, before any
other import, ``time.time``/``time.time_ns`` and ``datetime.now``/
``utcnow``/``today`` of that process are shifted by the skew. Monotonic
clocks are left alone (they have no epoch). Without the variable this
module does nothing.
"""

from __future__ import annotations

import os

_SKEW = float(os.environ.get("TRACKING_TEST_CLOCK_SKEW_SECONDS", "0") or 0)

if _SKEW:
    import copyreg
    import datetime as _datetime
    import time as _time

    _real_time, _real_time_ns = _time.time, _time.time_ns

    def _time_skewed() -> float:
        return _real_time() + _SKEW

    def _time_ns_skewed() -> int:
        return _real_time_ns() + int(_SKEW * 1e9)

    _time.time = _time_skewed
    _time.time_ns = _time_ns_skewed

    _Real = _datetime.datetime

    class _SkewedDatetime(_Real):
        # Built from the skewed time.time by the class itself, so that a
        # tzinfo's fromutc() (dateutil checks isinstance against
        # datetime.datetime, which is this class now) accepts the value.
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return cls.fromtimestamp(_time_skewed(), tz)

        @classmethod
        def utcnow(cls):  # type: ignore[no-untyped-def,override]
            return cls.utcfromtimestamp(_time_skewed())

        @classmethod
        def today(cls):  # type: ignore[no-untyped-def,override]
            return cls.fromtimestamp(_time_skewed())

    # Pickle (beat's schedule file, the prefork pool's messages) finds a class
    # by its module and name: give the stand-in the real one's, and pickle
    # real instances through it, so both round-trip in any process.
    _SkewedDatetime.__name__ = _SkewedDatetime.__qualname__ = "datetime"
    _SkewedDatetime.__module__ = "datetime"
    copyreg.pickle(_Real, lambda value: (_SkewedDatetime, value.__reduce__()[1]))
    _datetime.datetime = _SkewedDatetime  # type: ignore[misc]
