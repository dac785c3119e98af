"""Request bytes that do not parse become a MalformedRequest, never an exception
in grpc's deserializer (which answers UNKNOWN and logs a traceback)."""

from __future__ import annotations

import logging

import pytest

from sluice.api import decoding
from sluice.api.decoding import MalformedRequest, lenient
from sluice.errors import Status
from sluice_client.v1 import gateway_pb2 as pb


def test_a_valid_message_parses() -> None:
    request = pb.ChatRequest(route="chat")
    assert lenient(pb.ChatRequest)(request.SerializeToString()) == request


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", "Wire format was corrupt"),
        (b"\x0a\x02\xff\xfe", "String field had bad UTF-8"),
    ],
    ids=["corrupt", "bad-utf8"],
)
def test_malformed_bytes_are_refused_as_invalid_argument(
    data: bytes, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "sluice.api.decoding"):
        parsed = lenient(pb.ChatRequest)(data)
    assert parsed == MalformedRequest(cause)
    assert isinstance(parsed, MalformedRequest)
    refusal = parsed.refusal()
    assert refusal.status is Status.INVALID_ARGUMENT
    assert refusal.message == f"the request is not a valid message: {cause}"
    assert all(record.exc_info is None for record in caplog.records)


def test_every_method_of_the_service_is_served_with_a_lenient_deserializer() -> None:
    service = pb.DESCRIPTOR.services_by_name["GatewayService"]
    assert set(decoding._METHODS) == {method.name for method in service.methods}
