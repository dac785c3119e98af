"""The `sluice` command: serve the gateway, check a config, or make API keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import secrets
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import uvloop

from sluice import __version__
from sluice.app import serve
from sluice.auth import hash_key
from sluice.config import ConfigError, GatewayConfig, load_config, load_default_config
from sluice.config.loader import LoadedConfig, read_config
from sluice.config.schema import ROUTE_NAME_PATTERN
from sluice.experiments_cli import add_experiments_command, run_experiments_command
from sluice.health_probe import add_health_command, run_health_command
from sluice.listeners import listen_addresses
from sluice.redaction import RedactingFormatter
from sluice.workers import Supervisor, WorkerLink, worker_count, workers_problem

# Recognisable in leaked-secret scanners and in a config review.
NEW_KEY_PREFIX = "sk-sluice-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description="Streaming gRPC gateway for LLMs")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the gateway")
    serve_cmd.add_argument(
        "--config",
        help="config file, reloaded on change and on SIGHUP (default: the embedded mock config)",
    )
    serve_cmd.add_argument(
        "--host", help="address to listen on, replacing server.listen (default 127.0.0.1)"
    )
    serve_cmd.add_argument(
        "--port", type=int, help="port to listen on, replacing server.listen (default 50051)"
    )
    serve_cmd.add_argument(
        "--workers",
        type=_workers,
        help="processes serving the port: a number, or auto for one per core (default 1)",
    )
    # Set by the supervisor on the commands of its workers.
    serve_cmd.add_argument("--worker", type=WorkerLink.parse, help=argparse.SUPPRESS)
    serve_cmd.add_argument("--listen", action="append", help=argparse.SUPPRESS)

    check_cmd = commands.add_parser(
        "check", help="validate a config and list its routes, or every problem it has"
    )
    check_cmd.add_argument("--config", required=True, help="config file")
    check_cmd.add_argument(
        "--no-secrets",
        action="store_true",
        help="check all but the secrets' values (for CI), and list the secrets it needs",
    )
    check_cmd.add_argument(
        "--workers", type=_workers, help="also check it can be served by this many workers"
    )

    keys_cmd = commands.add_parser("keys", help="make API keys and their config digests")
    keys_commands = keys_cmd.add_subparsers(dest="keys_command", required=True)
    hash_cmd = keys_commands.add_parser("hash", help="print a key's SHA-256 digest for config")
    hash_cmd.add_argument("key", help="the key, or - to read it from stdin (out of shell history)")
    new_cmd = keys_commands.add_parser("new", help="generate a key and its config entry")
    new_cmd.add_argument("--name", type=_key_name, help="the key's name in config")

    add_health_command(commands)
    add_experiments_command(commands)

    args = parser.parse_args(argv)
    if args.command == "keys":
        return _keys(args)
    if args.command == "health":
        return run_health_command(args)
    if args.command == "experiments":
        return run_experiments_command(args)
    _configure_logging()
    try:
        if args.command == "check":
            return _check(read_config(args.config, resolve_secrets=not args.no_secrets), args)
        config = load_config(args.config) if args.config else load_default_config()
    except ConfigError as error:
        print(f"sluice: invalid config\n{error}", file=sys.stderr)
        return 1
    return _serve(config, args)


def _check(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    config = loaded.register_secrets()
    server = config.server
    addresses = listen_addresses(server.listen, server.host, server.port)
    if _refused(config, worker_count(args.workers or server.workers), addresses):
        return 1
    _print_routes(config)
    if args.no_secrets:
        _print_secrets_needed(loaded, args.config)
    return 0


def _serve(config: GatewayConfig, args: argparse.Namespace) -> int:
    addresses = args.listen or _addresses(config, args)
    if args.worker is None:  # the supervisor checked for its workers
        workers = worker_count(args.workers or config.server.workers)
        if _refused(config, workers, addresses):
            return 1
        if workers > 1:
            command = partial(_worker_command, args.config, addresses)
            grace = config.server.drain_delay + config.server.shutdown_grace
            supervisor = Supervisor(command, workers, grace=grace)
            return asyncio.run(supervisor.run())
    try:
        # The embedded default has no file to watch.
        config_path = Path(args.config) if args.config else None
        loop_factory = uvloop.new_event_loop if config.server.event_loop == "uvloop" else None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config, addresses, config_path, worker=args.worker))
    except ConfigError as error:  # an OTEL_* variable the telemetry cannot use
        print(f"sluice: invalid telemetry settings\n{error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"sluice: {error}", file=sys.stderr)
        return 1
    return 0


def _addresses(config: GatewayConfig, args: argparse.Namespace) -> list[str]:
    """server.listen, or the one address --host and --port replace it with."""
    server = config.server
    return listen_addresses(
        server.listen,
        args.host or server.host,
        server.port if args.port is None else args.port,
        overridden=args.host is not None or args.port is not None,
    )


def _refused(config: GatewayConfig, workers: int, addresses: Sequence[str]) -> bool:
    """Say why `workers` processes cannot serve `config`, if they cannot."""
    problem = workers_problem(config, workers, addresses)
    if problem:
        print(f"sluice: {problem}", file=sys.stderr)
    return bool(problem)


def _worker_command(config: str | None, addresses: Sequence[str], worker: str) -> list[str]:
    """A worker's command line; `worker` is its `--worker` argument. The
    addresses go as resolved, so a restarted worker binds what the others do."""
    config_args = ["--config", config] if config else []
    listen_args = [arg for address in addresses for arg in ("--listen", address)]
    return [
        sys.executable,
        *("-m", "sluice.cli", "serve", *config_args, *listen_args),
        *("--worker", worker),
    ]


def _keys(args: argparse.Namespace) -> int:
    if args.keys_command == "new":
        key = NEW_KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)
        name = args.name or f"key-{digest[:8]}"
        print(f"API key (shown only now, store it safely):\n{key}\n")
        print("Config entry (or add the list item to auth.keys):")
        print(f"auth:\n  keys:\n    - name: {name}\n      sha256: {digest}")
        return 0
    key = sys.stdin.read().rstrip("\r\n") if args.key == "-" else args.key
    if not key:
        print("sluice: the key is empty", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def _workers(value: str) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if not value.isdecimal() or int(value) < 1:
        raise argparse.ArgumentTypeError("use a number of at least 1, or auto")
    return int(value)


def _key_name(value: str) -> str:
    if not re.fullmatch(ROUTE_NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(
            "use letters, digits, '.', '_' and '-' (starting with a letter or digit)"
        )
    return value


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _print_routes(config: GatewayConfig) -> None:
    print(f"config is valid: {len(config.routes)} route(s)")
    for route in config.routes:
        targets = ", ".join(f"{t.model.provider}/{t.model.name}" for t in route.target_configs)
        print(f"  {route.name:<32} {route.route_type:<20} {targets}")


def _print_secrets_needed(loaded: LoadedConfig, source: str) -> None:
    names = sorted({reference.name for reference in loaded.references})
    print(f"secrets not resolved (--no-secrets); the config needs {len(names)}:")
    for reference in loaded.references:
        print(f"  {reference.describe(source)}")


if __name__ == "__main__":
    sys.exit(main())
