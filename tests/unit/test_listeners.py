"""Listener addresses (`server.listen`, --host/--port), the connection
settings they are served with, and what workers can share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.app import server_options
from sluice.cli import main
from sluice.config import ConfigError
from sluice.config.loader import parse_config
from sluice.config.schema import ServerConfig
from sluice.listeners import bound_address, check_address, listen_addresses, tcp_address
from sluice.workers import workers_problem

CHAT = {"name": "chat", "route_type": "llm/v1/chat", "model": {"provider": "mock"}}


def load(server: dict[str, Any]) -> Any:
    text = yaml.safe_dump({"server": server, "routes": [CHAT]})
    return parse_config(text, "gw.yaml", {})


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:50051", "0.0.0.0:0", "localhost:8080", "[::]:50051", "[::1]:1", "unix:/s.sock"],
)
def test_addresses_sluice_can_listen_on(address: str) -> None:
    assert check_address(address) == address


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("::1:50051", "write an IPv6 address in brackets, as [::1]:50051"),
        ("[::g]:50051", "[::g] is not an IPv6 address"),
        ("127.0.0.1", "write host:port, [ipv6]:port or unix:/path"),
        (":50051", "write host:port"),
        ("127.0.0.1:http", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:65536", "the port must be a number from 0 to 65535"),
        ("unix:", "give the socket's path"),
    ],
)
def test_a_bad_address_says_how_to_write_it(address: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"listen": [address]})
    assert "server.listen[0]" in str(caught.value)
    assert says in str(caught.value)


@pytest.mark.parametrize("beside", [{"host": "0.0.0.0"}, {"port": 1}, {"host": "::", "port": 1}])
def test_listen_beside_host_or_port_is_an_error_naming_the_keys(beside: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"listen": ["127.0.0.1:50051"], **beside})
    named = " and ".join(f"server.{key}" for key in sorted(beside))
    assert f"server.listen replaces {named}" in str(caught.value)


def test_listen_names_each_address_once() -> None:
    with pytest.raises(ConfigError, match=r"server\.listen names an address twice"):
        load({"listen": ["[::1]:1", "[::1]:1"]})
    with pytest.raises(ConfigError, match="at least 1 item"):
        load({"listen": []})


def test_ipv6_hosts_are_written_plainly_and_bracketed_for_grpc() -> None:
    assert tcp_address("::", 50051) == "[::]:50051"
    assert tcp_address("::1", 0) == "[::1]:0"
    assert tcp_address("[::1]", 7) == "[::1]:7"
    assert tcp_address("0.0.0.0", 7) == "0.0.0.0:7"
    assert bound_address("[::1]:0", 4242) == "[::1]:4242"
    assert bound_address("unix:/run/s.sock", 1) == "unix:/run/s.sock"


def test_the_command_line_replaces_the_list() -> None:
    listen = ["[::1]:50051", "unix:/run/s.sock"]
    assert listen_addresses(listen, "127.0.0.1", 50051) == listen
    assert listen_addresses(listen, "::", 6000, overridden=True) == ["[::]:6000"]
    assert listen_addresses(None, "::1", 50051) == ["[::1]:50051"]


def test_connection_settings_become_grpc_options_in_milliseconds() -> None:
    server = ServerConfig(
        keepalive={"time": 30, "timeout": 5, "min_client_ping_interval": 2.5},
        max_connection_age=600,
        max_connection_age_grace=30,
        max_streams_per_connection=100,
        max_receive_message_bytes=1 << 20,
    )
    options = dict(server_options(server, workers=1))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 5_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 2_500
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.max_connection_age_ms"] == 600_000
    assert options["grpc.max_connection_age_grace_ms"] == 30_000
    assert options["grpc.max_concurrent_streams"] == 100
    assert options["grpc.max_receive_message_length"] == 1 << 20


def test_connection_defaults_leave_connections_ageless_with_room_for_every_call() -> None:
    options = dict(server_options(ServerConfig(), workers=1))
    assert "grpc.max_connection_age_ms" not in options
    assert "grpc.max_connection_age_grace_ms" not in options
    assert options["grpc.max_concurrent_streams"] == options["grpc.server.max_pending_requests"]
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.max_receive_message_length"] == 32 * 1024 * 1024


def test_workers_cannot_share_a_unix_socket() -> None:
    config = load({"listen": ["127.0.0.1:50051", "unix:/run/s.sock"]})
    problem = workers_problem(config, 2, config.server.listen)
    assert problem is not None
    assert "a unix: socket cannot be shared by workers" in problem
    assert workers_problem(config, 1, config.server.listen) is None
    assert workers_problem(config, 2, ["127.0.0.1:50051", "[::1]:50051"]) is None


def test_check_refuses_a_unix_socket_with_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"server": {"listen": ["unix:/run/s.sock"]}, "routes": [CHAT]}))
    assert main(["check", "--config", str(path)]) == 0
    assert main(["check", "--config", str(path), "--workers", "2"]) == 1
    assert "a unix: socket cannot be shared by workers" in capsys.readouterr().err
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 1
