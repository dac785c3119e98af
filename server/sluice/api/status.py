"""GatewayError -> gRPC status with google.rpc details.

Every error carries ErrorInfo (reason, domain, metadata); INVALID_ARGUMENT
adds BadRequest naming the field; a known retry delay adds RetryInfo.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sluice.errors import DOMAIN, GatewayError


def to_grpc_status(error: GatewayError) -> grpc.Status:
    code: grpc.StatusCode = getattr(grpc.StatusCode, error.status.value)
    details = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    ]
    if error.field:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=error.message
                    )
                ]
            )
        )
    if error.quota_subject:
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.quota_subject, description=error.message
                    )
                ]
            )
        )
    if error.retry_after is not None:
        # FromNanoseconds carries a rounded-up fraction into the seconds: a
        # Duration's nanos must stay under one second.
        retry_delay = duration_pb2.Duration()
        retry_delay.FromNanoseconds(round(error.retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=retry_delay))
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name), message=error.message, details=packed
    )
    grpc_status: grpc.Status = rpc_status.to_status(status)
    return grpc_status
