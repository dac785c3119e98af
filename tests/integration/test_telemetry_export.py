"""Telemetry leaves the process: OTLP over gRPC and HTTP to real receivers,
and a Prometheus endpoint scraped over HTTP."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from sluice.config.schema import TelemetryConfig
from sluice.telemetry.setup import build_telemetry
from tests.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan


def telemetry_config(**keys: Any) -> TelemetryConfig:
    return TelemetryConfig.model_validate(keys)


async def send_span(config: TelemetryConfig, environ: dict[str, str] | None = None) -> None:
    """One span named `probe`, flushed by closing the telemetry."""
    telemetry = build_telemetry(config, environ or {})
    with telemetry.tracer.start_as_current_span("probe", attributes={"sluice.route": "chat"}):
        pass
    await telemetry.aclose()


def names(spans: list[ReceivedSpan]) -> list[str]:
    return [span.name for span in spans]


@pytest.fixture
def no_otlp_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The OTLP exporters read os.environ themselves: start from none."""
    for variable in ("ENDPOINT", "TRACES_ENDPOINT", "HEADERS", "TRACES_HEADERS"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{variable}", raising=False)
    return monkeypatch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- traces -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("receiver_type", "protocol"),
    [(OtlpGrpcReceiver, "grpc"), (OtlpHttpReceiver, "http/protobuf")],
)
async def test_spans_are_exported_over_otlp(
    receiver_type: type[OtlpGrpcReceiver | OtlpHttpReceiver], protocol: str
) -> None:
    async with receiver_type() as receiver:
        config = telemetry_config(
            service_name="gateway-a",
            traces_exporter="otlp",
            otlp={"endpoint": receiver.endpoint, "protocol": protocol},
        )
        await send_span(config)
        [span] = await receiver.wait_for_spans()
    assert span.name == "probe"
    assert span.kind == "INTERNAL"
    assert span.parent_span_id == ""
    assert span.attributes == {"sluice.route": "chat"}
    assert span.resource["service.name"] == "gateway-a"
    assert span.resource["service.version"] == "0.1.0"


async def test_spans_reach_a_grpc_receiver_that_was_down_at_the_first_export() -> None:
    """The SDK reconnects after UNAVAILABLE; the new channel must still send
    Sluice's encoded requests whole."""
    port = free_port()
    config = telemetry_config(traces_exporter="otlp", otlp={"endpoint": f"http://127.0.0.1:{port}"})
    telemetry = build_telemetry(config, {})
    with telemetry.tracer.start_as_current_span("probe", attributes={"sluice.attempt": 2}):
        pass
    # Closing flushes: the first export is refused, the retry (after ~1 s) lands.
    closing = asyncio.create_task(telemetry.aclose())
    await asyncio.sleep(0.3)
    async with OtlpGrpcReceiver(port) as receiver:
        [span] = await receiver.wait_for_spans()
        await closing
    assert span.name == "probe"
    assert span.attributes == {"sluice.attempt": 2}


async def test_the_protocol_comes_from_the_environment_when_the_config_has_none() -> None:
    async with OtlpHttpReceiver() as receiver:
        config = telemetry_config(traces_exporter="otlp", otlp={"endpoint": receiver.endpoint})
        await send_span(config, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
        assert names(await receiver.wait_for_spans()) == ["probe"]


async def test_the_per_signal_protocol_wins_over_the_general_one() -> None:
    async with OtlpGrpcReceiver() as receiver:
        config = telemetry_config(traces_exporter="otlp", otlp={"endpoint": receiver.endpoint})
        environ = {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        }
        await send_span(config, environ)
        assert names(await receiver.wait_for_spans()) == ["probe"]


async def test_the_config_protocol_wins_over_the_environment() -> None:
    async with OtlpGrpcReceiver() as receiver:
        config = telemetry_config(
            traces_exporter="otlp", otlp={"endpoint": receiver.endpoint, "protocol": "grpc"}
        )
        await send_span(config, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
        assert names(await receiver.wait_for_spans()) == ["probe"]


@pytest.mark.parametrize(
    ("receiver_type", "protocol"),
    [(OtlpGrpcReceiver, "grpc"), (OtlpHttpReceiver, "http/protobuf")],
)
async def test_the_exporters_read_the_endpoint_and_headers_from_the_environment(
    no_otlp_environment: pytest.MonkeyPatch,
    receiver_type: type[OtlpGrpcReceiver | OtlpHttpReceiver],
    protocol: str,
) -> None:
    async with receiver_type() as receiver:
        # A bare endpoint: the HTTP exporter appends /v1/traces itself.
        no_otlp_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        no_otlp_environment.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=search")
        await send_span(
            telemetry_config(),
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol},
        )
        assert names(await receiver.wait_for_spans()) == ["probe"]
    assert receiver.headers[0]["x-team"] == "search"


async def test_the_config_endpoint_and_headers_win_over_the_environment(
    no_otlp_environment: pytest.MonkeyPatch,
) -> None:
    async with OtlpGrpcReceiver() as configured, OtlpGrpcReceiver() as from_environment:
        no_otlp_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", from_environment.endpoint)
        no_otlp_environment.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=search")
        config = telemetry_config(
            traces_exporter="otlp",
            otlp={"endpoint": configured.endpoint, "headers": {"x-team": "ads", "x-key": "k1"}},
        )
        await send_span(config)
        assert names(await configured.wait_for_spans()) == ["probe"]
    assert from_environment.traces == []
    assert configured.headers[0]["x-team"] == "ads"
    assert configured.headers[0]["x-key"] == "k1"


async def test_spans_go_to_every_listed_exporter(capsys: pytest.CaptureFixture[str]) -> None:
    async with OtlpGrpcReceiver() as receiver:
        config = telemetry_config(otlp={"endpoint": receiver.endpoint})
        await send_span(config, {"OTEL_TRACES_EXPORTER": "otlp,console"})
        assert names(await receiver.wait_for_spans()) == ["probe"]
    assert '"name": "probe"' in capsys.readouterr().err


# --- metrics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("receiver_type", "protocol"),
    [(OtlpGrpcReceiver, "grpc"), (OtlpHttpReceiver, "http/protobuf")],
)
async def test_metrics_are_exported_over_otlp(
    receiver_type: type[OtlpGrpcReceiver | OtlpHttpReceiver], protocol: str
) -> None:
    async with receiver_type() as receiver:
        config = telemetry_config(
            metrics_exporter="otlp", otlp={"endpoint": receiver.endpoint, "protocol": protocol}
        )
        telemetry = build_telemetry(config, {})
        telemetry.instruments.requests.add(1, {"sluice.route": "chat"})
        telemetry.instruments.requests.add(1, {"sluice.route": "chat"})
        telemetry.instruments.token_usage.record(40, {"gen_ai.token.type": "input"})
        await telemetry.aclose()
        points = await receiver.wait_for_points()
    by_name = {point.name: point for point in points}
    requests = by_name["sluice.requests"]
    assert (requests.value, requests.unit, requests.attributes) == (
        2,
        "{request}",
        {"sluice.route": "chat"},
    )
    usage = by_name["gen_ai.client.token.usage"]
    assert (usage.value, usage.count, usage.attributes) == (40, 1, {"gen_ai.token.type": "input"})
    assert usage.resource["service.name"] == "sluice"


async def test_prometheus_serves_the_metrics_until_closed() -> None:
    port = free_port()
    config = telemetry_config(
        metrics_exporter="prometheus", prometheus={"host": "127.0.0.1", "port": port}
    )
    telemetry = build_telemetry(config, {})
    telemetry.instruments.requests.add(3, {"sluice.route": "chat", "rpc.grpc.status_code": 0})
    telemetry.instruments.token_usage.record(40, {"gen_ai.token.type": "input"})
    telemetry.instruments.operation_duration.record(0.3, {"gen_ai.operation.name": "chat"})
    async with httpx.AsyncClient() as client:
        scrape = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert scrape.status_code == 200
        lines = scrape.text.splitlines()
        await telemetry.aclose()
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/metrics")

    [requests] = [line for line in lines if line.startswith("sluice_requests_total{")]
    assert 'sluice_route="chat"' in requests
    assert 'rpc_grpc_status_code="0"' in requests
    assert requests.endswith(" 3.0")
    [usage_count] = [line for line in lines if line.startswith("gen_ai_client_token_usage_count{")]
    assert usage_count.endswith(" 1.0")
    [usage_sum] = [line for line in lines if line.startswith("gen_ai_client_token_usage_sum{")]
    assert usage_sum.endswith(" 40.0")
    # Seconds get the unit suffix; buckets are the instrument's advisory ones.
    assert any(
        line.startswith("gen_ai_client_operation_duration_seconds_bucket{")
        and 'le="0.32"' in line
        and line.endswith(" 1.0")
        for line in lines
    )
    [target_info] = [line for line in lines if line.startswith("target_info{")]
    assert 'service_name="sluice"' in target_info


async def test_the_prometheus_port_comes_from_the_environment_when_the_config_has_none() -> None:
    port = free_port()
    environ = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
    }
    telemetry = build_telemetry(telemetry_config(), environ)
    try:
        telemetry.instruments.requests.add(1)
        async with httpx.AsyncClient() as client:
            scrape = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert "sluice_requests_total" in scrape.text
    finally:
        await telemetry.aclose()


@pytest.mark.parametrize(("worker", "offset"), [(None, 0), (0, 0), (2, 2)])
async def test_each_worker_serves_prometheus_on_the_port_plus_its_index(
    worker: int | None, offset: int
) -> None:
    port = free_port()
    config = telemetry_config(
        metrics_exporter="prometheus", prometheus={"host": "127.0.0.1", "port": port - offset}
    )
    telemetry = build_telemetry(config, {}, worker=worker)
    try:
        telemetry.instruments.requests.add(1)
        async with httpx.AsyncClient() as client:
            scrape = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert "sluice_requests_total" in scrape.text
    finally:
        await telemetry.aclose()


def test_a_taken_prometheus_port_is_an_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = telemetry_config(
            metrics_exporter="prometheus", prometheus={"host": "127.0.0.1", "port": port}
        )
        with pytest.raises(
            OSError, match=rf"cannot serve Prometheus metrics on 127\.0\.0\.1:{port}:"
        ):
            build_telemetry(config, {})


# --- logs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("receiver_type", "protocol"),
    [(OtlpGrpcReceiver, "grpc"), (OtlpHttpReceiver, "http/protobuf")],
)
async def test_access_records_are_exported_as_log_records_in_their_trace(
    capsys: pytest.CaptureFixture[str],
    receiver_type: type[OtlpGrpcReceiver | OtlpHttpReceiver],
    protocol: str,
) -> None:
    async with receiver_type() as receiver:
        config = telemetry_config(
            logs_exporter="otlp",
            traces_exporter="otlp",
            otlp={"endpoint": receiver.endpoint, "protocol": protocol},
        )
        telemetry = build_telemetry(config, {})
        assert telemetry.access_log is not None
        with telemetry.tracer.start_as_current_span("call") as span:
            telemetry.access_log.write({"route": "chat", "status": "OK"})
        await telemetry.aclose()
        [record] = await receiver.wait_for_logs()
        [exported_span] = await receiver.wait_for_spans()
    assert record.body == '{"route":"chat","status":"OK"}'
    assert record.severity_text == "INFO"
    assert record.scope == "sluice.access"
    assert record.resource["service.name"] == "sluice"
    assert (record.trace_id, record.span_id) == (exported_span.trace_id, exported_span.span_id)
    assert span.get_span_context().span_id == int(record.span_id, 16)
    assert capsys.readouterr().out == '{"route":"chat","status":"OK"}\n', "stdout keeps the line"


async def test_every_signal_defaults_to_otlp_over_grpc() -> None:
    async with OtlpGrpcReceiver() as receiver:
        config = telemetry_config(
            traces_exporter="otlp",
            metrics_exporter="otlp",
            logs_exporter="otlp",
            otlp={"endpoint": receiver.endpoint},
        )
        telemetry = build_telemetry(config, {})
        with telemetry.tracer.start_as_current_span("call"):
            telemetry.instruments.requests.add(1)
            assert telemetry.access_log is not None
            telemetry.access_log.write({"n": 1})
        await telemetry.aclose()
        assert names(await receiver.wait_for_spans()) == ["call"]
        assert [point.name for point in await receiver.wait_for_points()] == ["sluice.requests"]
        assert [record.body for record in await receiver.wait_for_logs()] == ['{"n":1}']
