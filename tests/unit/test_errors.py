"""The error vocabulary: one status per reason, and the README's table of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice.errors import (
    ECHO_LIMIT,
    METADATA_VALUE_LIMIT,
    STATUS_OF,
    GatewayError,
    Reason,
    Status,
    route_not_found,
    truncated,
    upstream_http_error,
)

README = Path(__file__).parents[2] / "README.md"


def readme_error_table() -> list[tuple[Status, list[str]]]:
    """(status, reasons) of each row of the README's table under `## Errors`."""
    section = README.read_text().split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            status = Status[cells[0].strip("`")]
            rows.append((status, re.findall(r"`([A-Z_]+)`", cells[1])))
    return rows


def test_every_reason_has_one_status() -> None:
    assert set(STATUS_OF) == set(Reason)


def test_readme_lists_every_reason_with_its_status() -> None:
    listed = {reason: status for status, reasons in readme_error_table() for reason in reasons}
    assert listed == {reason.value: status for reason, status in STATUS_OF.items()}


def test_readme_table_names_no_reason_twice() -> None:
    reasons = [reason for _, row in readme_error_table() for reason in row]
    assert len(reasons) == len(set(reasons))


def test_an_error_takes_its_status_from_its_reason() -> None:
    error = GatewayError(Reason.CIRCUIT_OPEN, "all open", metadata={"route": "chat", "empty": ""})
    assert (error.status, error.reason, error.message) == (
        Status.UNAVAILABLE,
        "CIRCUIT_OPEN",
        "all open",
    )
    assert error.metadata == {"route": "chat"}  # empty values are left out


@pytest.mark.parametrize(
    ("http_status", "reason", "retry_after"),
    [
        (400, Reason.UPSTREAM_BAD_REQUEST, None),
        (401, Reason.UPSTREAM_AUTH_FAILED, None),
        (402, Reason.UPSTREAM_PAYMENT_REQUIRED, None),
        (403, Reason.UPSTREAM_AUTH_FAILED, None),
        (404, Reason.UPSTREAM_NOT_FOUND, None),
        (408, Reason.UPSTREAM_HTTP_TIMEOUT, None),
        (413, Reason.UPSTREAM_BAD_REQUEST, None),
        (422, Reason.UPSTREAM_BAD_REQUEST, None),
        (429, Reason.UPSTREAM_RATE_LIMITED, 2.5),
        (500, Reason.UPSTREAM_UNAVAILABLE, 2.5),
        (503, Reason.UPSTREAM_UNAVAILABLE, 2.5),
        (504, Reason.UPSTREAM_HTTP_TIMEOUT, None),
        (529, Reason.UPSTREAM_UNAVAILABLE, 2.5),
    ],
)
def test_upstream_http_status_maps_to_one_reason(
    http_status: int, reason: Reason, retry_after: float | None
) -> None:
    error = upstream_http_error("openai", http_status, "boom", retry_after=2.5)
    assert (error.reason, error.status, error.retry_after) == (
        reason,
        STATUS_OF[reason],
        retry_after,
    )
    assert error.metadata["http_status"] == str(http_status)


def test_upstream_timeouts_are_told_apart() -> None:
    # An upstream's own 408/504 is the caller's deadline kind of failure;
    # Sluice's timeouts of a target are UNAVAILABLE, worth another target.
    assert STATUS_OF[Reason.UPSTREAM_HTTP_TIMEOUT] is Status.DEADLINE_EXCEEDED
    assert STATUS_OF[Reason.UPSTREAM_TIMEOUT] is Status.UNAVAILABLE


def test_credentials_rejected_say_nothing_of_the_upstream_message() -> None:
    error = upstream_http_error("openai", 401, "Incorrect API key provided: sk-abc***xyz")
    assert "sk-abc" not in error.message
    assert error.message == "openai rejected the gateway's credentials (HTTP 401)"


def test_an_unknown_route_is_quoted_cut_short_in_message_and_metadata() -> None:
    error = route_not_found("r" * 10_000)
    assert error.message == f"no route named {'r' * (ECHO_LIMIT - 1) + '…'!r}"
    assert error.metadata == {"route": "r" * (ECHO_LIMIT - 1) + "…"}


def test_a_short_text_is_not_cut() -> None:
    assert truncated("chat") == "chat"
    assert truncated("x" * ECHO_LIMIT) == "x" * ECHO_LIMIT


def test_every_metadata_value_stays_small() -> None:
    error = GatewayError(Reason.INTERNAL, "m", metadata={"k": "v" * 100_000})
    assert len(error.metadata["k"]) == METADATA_VALUE_LIMIT
