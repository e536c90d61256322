"""``tracking flower`` never exposes Flower's API without authentication by default."""

from __future__ import annotations

import pytest
import typer

from cli.main import flower_args


def test_default_is_loopback_with_the_api_closed_even_if_the_env_opened_it() -> None:
    env = {"FLOWER_UNAUTHENTICATED_API": "true"}
    args = flower_args(5555, "127.0.0.1", False, [], env)
    assert args == ["flower", "--port=5555", "--address=127.0.0.1"]
    assert "FLOWER_UNAUTHENTICATED_API" not in env


def test_unauthenticated_api_only_on_request_and_only_on_loopback() -> None:
    env: dict[str, str] = {}
    flower_args(5555, "127.0.0.1", True, [], env)
    assert env == {"FLOWER_UNAUTHENTICATED_API": "true"}
    with pytest.raises(typer.BadParameter, match="loopback"):
        flower_args(5555, "0.0.0.0", True, ["--basic-auth=a:b"], {})


@pytest.mark.parametrize("address", ["0.0.0.0", "10.1.2.3", "::"])
def test_other_addresses_need_basic_auth_or_oauth(address: str) -> None:
    with pytest.raises(typer.BadParameter, match="without authentication"):
        flower_args(5555, address, False, [], {})
    assert flower_args(5555, address, False, ["--basic-auth=ops:secret"], {})[-1] == (
        "--basic-auth=ops:secret"
    )
    flower_args(5555, address, False, ["--auth=.*@example\\.com"], {})
    flower_args(5555, address, False, [], {"FLOWER_BASIC_AUTH": "ops:secret"})


def test_address_and_port_cannot_be_overridden_behind_the_checks() -> None:
    with pytest.raises(typer.BadParameter):
        flower_args(5555, "127.0.0.1", False, ["--address=0.0.0.0"], {})
