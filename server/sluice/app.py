"""The gRPC server: GatewayService, health (grpc.health.v1) and reflection,
with graceful shutdown on SIGTERM/SIGINT and config reload on SIGHUP and on
change of the config file."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluice.api.decoding import SERVICE, add_gateway_service
from sluice.api.servicer import GatewayServicer
from sluice.config import GatewayConfig
from sluice.config.schema import ServerConfig
from sluice.gateway import Gateway
from sluice.health import SERVING, HealthService
from sluice.reflection import enable_reflection
from sluice.reload import POLL_INTERVAL, ConfigReloader, GatewayHolder
from sluice.telemetry import Telemetry
from sluice.telemetry.setup import build_telemetry
from sluice.tls import bind, server_credentials, warn_if_keys_in_clear
from sluice.workers import WorkerLink, workers_problem

logger = logging.getLogger(__name__)

GATEWAY_SERVICE = SERVICE
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),  # inline images
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # gRPC core cancels a call still waiting for a handler after 30 s: under a
    # burst of long streams that turned queued calls into CANCELLED. A call
    # with a deadline ends DEADLINE_EXCEEDED first; one without waits its turn.
    ("grpc.server_max_unrequested_time_in_server", 300),
]
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
    (clients queue them, or see REFUSED_STREAM, UNAVAILABLE: never run).
    """
    backlog = max(server.max_concurrent_calls, MIN_CALL_BACKLOG)
    return [
        *SERVER_OPTIONS,
        ("grpc.so_reuseport", int(workers > 1)),
        ("grpc.max_send_message_length", server.max_send_message_bytes),
        ("grpc.server.max_pending_requests", backlog),
        ("grpc.server.max_pending_requests_hard_limit", backlog),
        ("grpc.max_concurrent_streams", backlog),
    ]


class GatewayServer:
    """One Sluice server, alone or one of `workers` on its port. `start`
    binds and serves; `stop` drains. With a `config_path` (the file `config`
    was loaded from), the file is watched and reloaded when it changes, every
    `poll_interval` seconds."""

    def __init__(
        self,
        config: GatewayConfig,
        host: str,
        port: int,
        *,
        config_path: Path | None = None,
        poll_interval: float = POLL_INTERVAL,
        telemetry: Telemetry | None = None,
        workers: int = 1,
    ) -> None:
        self.address = f"{host}:{port}"
        self.telemetry = telemetry if telemetry is not None else build_telemetry(config.telemetry)
        self.gateways = GatewayHolder(Gateway(config, telemetry=self.telemetry))
        self.reloader = (
            ConfigReloader(
                config_path,
                self.gateways,
                interval=poll_interval,
                # A reload must not bring the workers limits they would count apart.
                check=lambda new: workers_problem(new, workers, port),
            )
            if config_path is not None
            else None
        )
        self.health = HealthService()
        self._server = grpc.aio.server(options=server_options(config.server, workers=workers))
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
        self.port = 0

    @property
    def gateway(self) -> Gateway:
        """The gateway new calls use."""
        return self.gateways.current

    @property
    def config(self) -> GatewayConfig:
        return self.gateways.current.config

    async def start(self) -> int:
        """Bind and serve; return the bound port (useful with port 0)."""
        try:
            self.port = bind(self._server, self.address, server_credentials(self.config.server.tls))
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.address}: {exc}") from None
        warn_if_keys_in_clear(self.address, self.config)
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

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, give in-flight streams
        `grace` seconds to finish, then cancel the rest."""
        if self.reloader is not None:
            await self.reloader.stop()
        await self.health.drain()
        await self._server.stop(grace)
        await self.gateways.aclose()
        await self.telemetry.aclose()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def serve(
    config: GatewayConfig,
    host: str,
    port: int,
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
        host,
        port,
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
    bound = await server.start()
    routes = ", ".join(route.name for route in config.routes)
    who = "sluice" if worker is None else f"sluice worker {worker.index}"
    logger.info("%s serving on %s:%d (routes: %s)", who, host, bound, routes)
    if worker is not None:
        worker.ready()
        orphaned = asyncio.create_task(worker.supervisor_gone())
        orphaned.add_done_callback(lambda _: stopping.set())
    await stopping.wait()
    grace = server.config.server.shutdown_grace
    logger.info("draining: in-flight calls have %.0fs to finish", grace)
    await server.stop(grace)
    logger.info("stopped")
