"""gRPC server reflection under both protocol versions.

grpcio-reflection serves only `grpc.reflection.v1alpha`; `grpc.reflection.v1`
is the same messages under a new package name, byte for byte on the wire, so
one servicer answers both. Clients that speak only v1 then work too, and
buf curl and grpcurl need no fallback. Only v1alpha is listed among the
services: v1's descriptor is not in the pool, and listing a service whose
schema cannot be fetched breaks clients that describe every service.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    servicer = reflection.aio.ReflectionServicer([*service_names, reflection.SERVICE_NAME])
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(name, handlers)
            for name in (reflection.SERVICE_NAME, V1_SERVICE_NAME)
        ]
    )
