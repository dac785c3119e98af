"""grpc.health.v1: Check, List and Watch, and a drain that ends every watch.

grpc_health's own aio servicer keeps Watch streams open through shutdown,
so every load balancer watching would hold `server.stop` for its whole grace
period; here a drain sends NOT_SERVING to each watcher and then ends its
stream, so only real calls are waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService:
    """The grpc.health.v1.Health servicer (add_HealthServicer_to_server)."""

    def __init__(self) -> None:
        self._status: dict[str, health_pb2.HealthCheckResponse.ServingStatus] = {}
        self._changed = asyncio.Condition()
        self._draining = False

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        async with self._changed:
            if not self._draining:
                self._status[service] = status
                self._changed.notify_all()

    async def drain(self) -> None:
        """Every service NOT_SERVING, for good; watchers are told, then released."""
        async with self._changed:
            self._draining = True
            self._status = dict.fromkeys(self._status, NOT_SERVING)
            self._changed.notify_all()

    async def Check(  # noqa: N802 (gRPC method name)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(  # noqa: N802
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._status.items()
            }
        )

    async def Watch(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        sent: health_pb2.HealthCheckResponse.ServingStatus | None = None
        while True:
            async with self._changed:
                while (status := self._status.get(request.service, SERVICE_UNKNOWN)) == sent:
                    await self._changed.wait()
                draining = self._draining
            yield health_pb2.HealthCheckResponse(status=status)
            sent = status
            if draining:
                return
