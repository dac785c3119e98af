"""The `sluice` command: serve the gateway, or check a config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from sluice import __version__
from sluice.app import serve
from sluice.config import ConfigError, GatewayConfig, load_config, load_default_config
from sluice.redaction import RedactingFormatter


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description="Streaming gRPC gateway for LLMs")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the gateway")
    serve_cmd.add_argument("--config", help="config file (default: the embedded mock config)")
    serve_cmd.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (default 50051)")

    check_cmd = commands.add_parser("check", help="validate a config and list its routes")
    check_cmd.add_argument("--config", required=True, help="config file")

    args = parser.parse_args(argv)
    _configure_logging()
    try:
        config = load_config(args.config) if args.config else load_default_config()
    except ConfigError as error:
        print(f"sluice: invalid config\n{error}", file=sys.stderr)
        return 1
    if args.command == "check":
        _print_routes(config)
        return 0
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    try:
        asyncio.run(serve(config, host, port))
    except OSError as error:
        print(f"sluice: {error}", file=sys.stderr)
        return 1
    return 0


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # httpx logs every request at INFO: a per-call cost and noise on a gateway.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _print_routes(config: GatewayConfig) -> None:
    print(f"config is valid: {len(config.routes)} route(s)")
    for route in config.routes:
        print(
            f"  {route.name:<32} {route.route_type:<20} {route.model.provider}/{route.model.name}"
        )


if __name__ == "__main__":
    sys.exit(main())
