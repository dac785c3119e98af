"""The gRPC server: GatewayService, health (grpc.health.v1) and reflection,
with graceful shutdown on SIGTERM/SIGINT and config reload on SIGHUP and on
change of the config file."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluice.api.decoding import SERVICE, add_gateway_service
from sluice.api.servicer import GatewayServicer
from sluice.config import GatewayConfig
from sluice.config.schema import ServerConfig
from sluice.gateway import Gateway
from sluice.health import SERVING, HealthService
from sluice.listeners import bind, bound_address
from sluice.reflection import enable_reflection
from sluice.reload import POLL_INTERVAL, ConfigReloader, GatewayHolder
from sluice.telemetry import Telemetry
from sluice.telemetry.setup import build_telemetry
from sluice.tls import server_credentials, warn_if_keys_in_clear
from sluice.workers import WorkerLink, workers_problem

logger = logging.getLogger(__name__)

GATEWAY_SERVICE = SERVICE
SERVER_OPTIONS = [
    # gRPC core cancels a call still waiting for a handler after 30 s: under a
    # burst of long streams that turned queued calls into CANCELLED. A call
    # with a deadline ends DEADLINE_EXCEEDED first; one without waits its turn.
    ("grpc.server_max_unrequested_time_in_server", 300),
]
COMPRESSION = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip}
# The least room for calls that have arrived and wait for grpc.aio to take
# them (see `server_options`).
MIN_CALL_BACKLOG = 10_000


def server_options(server: ServerConfig, *, workers: int) -> list[tuple[str, int]]:
    """grpc's server options. Several `workers` share the port; one server
    alone does not, so a second server on a taken port fails.

    A call that has arrived waits in gRPC core's queue until grpc.aio takes
    it, one at a time, to a handler. Past `grpc.server.max_pending_requests`
    (default 1,000) core drops waiting calls at random, and past the hard
    limit (3,000) all of them: the client sees CANCELLED before any handler
    runs, ~8% of a 2,000-call burst. Admission (`max_concurrent_calls`)
    refuses the overflow with a retry hint instead, but only once a handler
    sees it: so the queue holds a burst as large as a worker may run, and
    HTTP/2 stops one connection from opening more streams than that
    (clients queue them, or see REFUSED_STREAM, UNAVAILABLE: never run),
    or than `max_streams_per_connection` when it is set.
    """
    backlog = max(server.max_concurrent_calls, MIN_CALL_BACKLOG)
    streams = server.max_streams_per_connection or backlog
    return [
        *SERVER_OPTIONS,
        ("grpc.so_reuseport", int(workers > 1)),
        ("grpc.max_send_message_length", server.max_send_message_bytes),
        ("grpc.max_receive_message_length", server.max_receive_message_bytes),
        ("grpc.server.max_pending_requests", backlog),
        ("grpc.server.max_pending_requests_hard_limit", backlog),
        ("grpc.max_concurrent_streams", streams),
        *_connection_options(server),
    ]


def _connection_options(server: ServerConfig) -> list[tuple[str, int]]:
    """Keepalive and connection age, in gRPC core's milliseconds."""
    keepalive = server.keepalive
    options = [
        ("grpc.keepalive_time_ms", _ms(keepalive.time)),
        ("grpc.keepalive_timeout_ms", _ms(keepalive.timeout)),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(keepalive.min_client_ping_interval)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
    ]
    if server.max_connection_age is not None:
        options.append(("grpc.max_connection_age_ms", _ms(server.max_connection_age)))
    if server.max_connection_age_grace is not None:
        options.append(("grpc.max_connection_age_grace_ms", _ms(server.max_connection_age_grace)))
    return options


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class GatewayServer:
    """One Sluice server, alone or one of `workers` on its port. `start`
    binds and serves; `stop` drains. With a `config_path` (the file `config`
    was loaded from), the file is watched and reloaded when it changes, every
    `poll_interval` seconds."""

    def __init__(
        self,
        config: GatewayConfig,
        addresses: Sequence[str],
        *,
        config_path: Path | None = None,
        poll_interval: float = POLL_INTERVAL,
        telemetry: Telemetry | None = None,
        workers: int = 1,
    ) -> None:
        self.addresses = list(addresses)
        self.telemetry = telemetry if telemetry is not None else build_telemetry(config.telemetry)
        self.gateways = GatewayHolder(Gateway(config, telemetry=self.telemetry))
        self.reloader = (
            ConfigReloader(
                config_path,
                self.gateways,
                interval=poll_interval,
                # A reload must not bring the workers limits they would count apart.
                check=lambda new: workers_problem(new, workers, self.addresses),
            )
            if config_path is not None
            else None
        )
        self.health = HealthService()
        self._server = grpc.aio.server(
            options=server_options(config.server, workers=workers),
            compression=COMPRESSION[config.server.compression],
        )
        servicer = GatewayServicer(
            self.gateways,
            self.telemetry,
            max_calls=config.server.max_concurrent_calls,
            max_send_bytes=config.server.max_send_message_bytes,
        )
        add_gateway_service(servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        enable_reflection(
            self._server,
            [GATEWAY_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
        )
        # The bound port of each address (1 for a Unix socket), and the first's.
        self.ports: list[int] = []
        self.port = 0

    @property
    def gateway(self) -> Gateway:
        """The gateway new calls use."""
        return self.gateways.current

    @property
    def config(self) -> GatewayConfig:
        return self.gateways.current.config

    async def start(self) -> int:
        """Bind every address and serve; return the first's bound port
        (useful with port 0)."""
        credentials = server_credentials(self.config.server.tls)
        self.ports = [bind(self._server, address, credentials) for address in self.addresses]
        self.port = self.ports[0]
        for address in self.addresses:
            warn_if_keys_in_clear(address, self.config)
        await self._server.start()
        for service in ("", GATEWAY_SERVICE):
            await self.health.set(service, SERVING)
        if self.reloader is not None:
            self.reloader.start()
        return self.port

    async def reload(self, cause: str) -> bool:
        """Reload the config file; False if there is none or it was refused.
        Health stays SERVING throughout."""
        if self.reloader is None:
            logger.warning("config reload (%s) ignored: serving the embedded config", cause)
            return False
        return await self.reloader.reload(cause)

    def reload_soon(self, cause: str) -> None:
        """`reload()` in the background (SIGHUP)."""
        if self.reloader is None:
            logger.warning("config reload (%s) ignored: serving the embedded config", cause)
            return
        self.reloader.reload_soon(cause)

    async def stop(self, grace: float, drain_delay: float = 0.0) -> None:
        """Report NOT_SERVING, and go on serving for `drain_delay` seconds
        while load balancers notice; then refuse new calls (UNAVAILABLE),
        give in-flight streams `grace` seconds to finish, and cancel the rest."""
        if self.reloader is not None:
            await self.reloader.stop()
        await self.health.drain()
        await asyncio.sleep(drain_delay)
        await self._server.stop(grace)
        await self.gateways.aclose()
        await self.telemetry.aclose()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def serve(
    config: GatewayConfig,
    addresses: Sequence[str],
    config_path: Path | None = None,
    *,
    worker: WorkerLink | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the configured grace;
    reload `config_path` on SIGHUP and when it changes. As a `worker` of a
    supervisor: share the port, say when ready, and drain when the
    supervisor is gone."""
    index = worker.index if worker is not None else None
    server = GatewayServer(
        config,
        addresses,
        config_path=config_path,
        telemetry=build_telemetry(config.telemetry, worker=index),
        workers=worker.count if worker is not None else 1,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before serving: SIGHUP's default action would end the process.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_soon, "SIGHUP")
    await server.start()
    routes = ", ".join(route.name for route in config.routes)
    who = "sluice" if worker is None else f"sluice worker {worker.index}"
    logger.info("%s serving on %s (routes: %s)", who, _bound(server), routes)
    if worker is not None:
        worker.ready()
        orphaned = asyncio.create_task(worker.supervisor_gone())
        orphaned.add_done_callback(lambda _: stopping.set())
    await stopping.wait()
    settings = server.config.server
    logger.info(
        "draining: NOT_SERVING, new calls served for %.0fs more, then in-flight calls have "
        "%.0fs to finish",
        settings.drain_delay,
        settings.shutdown_grace,
    )
    await server.stop(settings.shutdown_grace, settings.drain_delay)
    logger.info("stopped")


def _bound(server: GatewayServer) -> str:
    """The addresses served, with the port each got (port 0 picks one)."""
    return ", ".join(map(bound_address, server.addresses, server.ports))
