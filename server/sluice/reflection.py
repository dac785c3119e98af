"""gRPC server reflection under both protocol versions, both listed.

grpcio-reflection serves only `grpc.reflection.v1alpha`; `grpc.reflection.v1`
is the same messages under a new package name, byte for byte on the wire, so
one servicer answers both. Clients that speak only v1 then work too, and
buf curl and grpcurl need no fallback. So that v1 can be listed (a client
that describes every listed service must find its schema), its file is put
in the descriptor pool: v1alpha's, renamed as upstream's v1 file names it.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    _add_v1_schema()
    servicer = reflection.aio.ReflectionServicer(
        [*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME]
    )
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


def _add_v1_schema() -> None:
    """grpc/reflection/v1/reflection.proto in the default pool, once."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    pool.AddSerializedFile(_v1_file().SerializeToString())


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", f".{V1_PACKAGE}."
    file.name, file.package = V1_FILE, V1_PACKAGE
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for method in (method for service in file.service for method in service.method):
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    file.options.ClearField("deprecated")
    return file
