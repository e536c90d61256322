"""The dashboard's describer: conditions, periods and policies in words."""

from __future__ import annotations

from dashboard.auth import Credentials, is_loopback
from dashboard.describe import (
    describe_condition,
    describe_conditions,
    describe_period,
    describe_policy,
    duration_text,
    time_text,
)
from tracking.conditions import (
    AllOf,
    AnyOf,
    KeyExists,
    KeyValueContained,
    KeyValueEQ,
    KeyValueGE,
    KeyValueInList,
    KeyValueListHasItem,
    KeyValueListNotIntersectList,
    Not,
)


def test_conditions_in_words() -> None:
    assert describe_condition(KeyValueEQ("status", "paid").to_spec()) == 'status is "paid"'
    assert (
        describe_condition(KeyValueGE("order.total", 50).to_spec()) == "order.total is at least 50"
    )
    assert describe_condition(KeyExists("coupon").to_spec()) == "coupon is present"
    assert (
        describe_condition(KeyValueContained("note", "VIP", case_sensitive=False).to_spec())
        == 'note contains "VIP" (ignoring case)'
    )
    assert describe_condition(KeyValueInList("tier", ["a", "b"]).to_spec()) == (
        'tier is one of ["a", "b"]'
    )
    assert describe_condition(KeyValueListHasItem("tags", "x").to_spec()) == (
        'the list tags holds "x"'
    )
    assert describe_condition(KeyValueListNotIntersectList("tags", [1]).to_spec()) == (
        "the list tags shares no item with [1]"
    )
    nested = AllOf([KeyValueEQ("a", 1), AnyOf([KeyValueEQ("b", 2), Not(KeyExists("c"))])])
    assert describe_condition(nested.to_spec()) == "(a is 1 and (b is 2 or not c is present))"
    assert describe_conditions([]) == "every event"
    assert describe_conditions([KeyValueEQ("a", 1).to_spec(), KeyExists("b").to_spec()]) == (
        "a is 1 and b is present"
    )


def test_unknown_condition_type_is_shown_not_crashed() -> None:
    assert describe_condition({"type": "Custom", "x": 1}) == 'Custom: {"x": 1}'


def test_periods_policies_durations_times() -> None:
    assert describe_period({"every": "day", "at": "06:30", "timezone": "Europe/Berlin"}) == (
        "every day at 06:30 (Europe/Berlin)"
    )
    assert describe_period({"every": "week", "weekday": 2}) == "every Wednesday at 00:00 (UTC)"
    assert describe_period({"every": "month", "day": 5}) == "every month on day 5 at 00:00 (UTC)"
    assert describe_policy(3) == "progress and limiters"
    assert describe_policy(0) == "nothing"
    assert duration_text(90061) == "1 d 1 h 1 min 1 s"
    assert duration_text(0) == "0 s"
    assert time_text(0) == "1970-01-01 00:00:00 UTC"
    assert time_text(None) == "-"


def test_credentials_and_loopback() -> None:
    import base64

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    token = Credentials(token="s3cret")
    assert token.configured
    assert token.accepts("Bearer s3cret")
    assert token.accepts(basic("anyone", "s3cret"))
    assert not token.accepts("Bearer wrong")
    assert not token.accepts("")
    assert not token.accepts("Basic !!!")
    userpass = Credentials(user="ops", password="pw")
    assert userpass.accepts(basic("ops", "pw"))
    assert not userpass.accepts(basic("ops", "nope"))
    assert not userpass.accepts("Bearer pw")
    assert not Credentials(user="ops").configured
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.3.4.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert not is_loopback("example.org")
