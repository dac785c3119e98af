"""A secret from each source (environment, directory, AWS Secrets Manager on
moto's local server) reaches its upstream and nothing else: an upstream that
quotes its key back leaves no trace of it in logs, errors or spans."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from tests.gateway import route, running_gateway
from tests.integration.test_auth import all_logs, chat, everything_seen, upstream_echoing_its_key
from tests.secrets_manager import SecretsManager
from tests.telemetry import Recorded
from tests.upstream import FakeUpstream

KEYS = {
    "env": "sk-redact-from-env-5e1a",
    "dir": "sk-redact-from-dir-7c2b",
    "aws": "sk-redact-from-aws-9d3c",
}


async def test_a_secret_from_each_source_is_redacted_from_logs_errors_and_spans(
    secrets_manager: SecretsManager,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "DIR_KEY").write_text(KEYS["dir"] + "\n")
    secrets_manager.put("AWS_KEY", KEYS["aws"])
    recorded = Recorded()
    caplog.set_level(logging.DEBUG)
    async with FakeUpstream(upstream_echoing_its_key) as upstream:
        routes = [
            route(source, provider="openai", name="m", api_base=upstream.base_url, api_key=key)
            for source, key in [
                ("env", "{{ secrets.ENV_KEY }}"),
                ("dir", "{{ secrets.DIR_KEY }}"),
                ("aws", "{{ secrets.AWS_KEY }}"),
            ]
        ]
        sources = [
            "env",
            {"dir": str(tmp_path)},
            {"aws_secrets_manager": {"region": "eu-west-1", "prefix": secrets_manager.prefix}},
        ]
        config = {"secrets": {"sources": sources}, "routes": routes}
        with all_logs() as logs:
            async with running_gateway(config, {"ENV_KEY": KEYS["env"]}, recorded.telemetry) as gw:
                outcomes = [
                    await everything_seen(gw.stub.Chat(chat(source, "400"), timeout=10))
                    for source in KEYS
                ]
    # Each upstream was sent its own key, and quoted it back.
    sent = [request.headers["authorization"] for request in upstream.requests]
    assert sent == [f"Bearer {key}" for key in KEYS.values()]
    assert [code for code, _ in outcomes] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert all("bad credentials: Bearer [REDACTED]" in seen for _, seen in outcomes)

    spans = recorded.finished()
    assert spans, "the calls were traced"
    span_text = repr(
        [(s.name, dict(s.attributes or {}), s.status.description, s.events) for s in spans]
        + [dict(event.attributes or {}) for s in spans for event in s.events]
    )
    captured = capfd.readouterr()
    texts = [
        logs.getvalue(),
        caplog.text,
        captured.out,
        captured.err,
        recorded.log.getvalue(),
        span_text,
        *(seen for _, seen in outcomes),
    ]
    assert "[REDACTED]" in span_text, "the spans quoted the upstream's answer"
    # The scan saw the load's own logs, at DEBUG: where botocore would quote a response body.
    assert "secretsmanager" in logs.getvalue()
    for key in KEYS.values():
        for text in texts:
            assert key not in text
