"""Markdown tables and the JSON record of a run."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from bench.scenarios import Outcome
from bench.stats import Distribution


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "-"
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or math.isnan(value) or math.isnan(base) or base == 0:
        return "-"
    return f"{value / base:.2f}x"


def _pick(dist: Distribution | None, key: str) -> float | None:
    if dist is None:
        return None
    value: float = dist[key]  # type: ignore[literal-required]
    return value


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


Metric = Callable[[Outcome], float | None]

METRICS: list[tuple[str, Metric]] = [
    ("req/s", lambda o: o.rps),
    ("p50", lambda o: _pick(o.load["latency_ms"], "p50") if o.load else None),
    ("p99", lambda o: _pick(o.load["latency_ms"], "p99") if o.load else None),
    ("TTFC p50", lambda o: _pick(o.load["ttfc_ms"], "p50") if o.load else None),
    ("TTFC p99", lambda o: _pick(o.load["ttfc_ms"], "p99") if o.load else None),
    ("CPU/req", lambda o: o.cpu_ms_per_request()),
]


def _baseline(outcomes: Sequence[Outcome], row: Outcome, role: str) -> Outcome | None:
    for outcome in outcomes:
        s = outcome.scenario
        if (
            s.role == role
            and s.native_load == row.scenario.native_load
            and s.family == row.scenario.family
            and outcome.concurrency == row.concurrency
            and outcome.ok
        ):
            return outcome
    return None


def results_table(outcomes: Sequence[Outcome]) -> str:
    header = [
        "scenario",
        "what",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "TTFC p50 ms",
        "TTFC p99 ms",
        "CPU ms/req",
        "server CPU %",
        "client CPU %",
        "req/s per core (est.)",
        "errors",
    ]
    rows: list[list[str]] = []
    for o in outcomes:
        name = f"{o.scenario.name} ({o.scenario.role})"
        if not o.ok or o.load is None:
            rows.append([name, o.scenario.description, str(o.concurrency), "FAILED", *[""] * 9])
            continue
        load = o.load
        cpu = o.cpu_ms_per_request()
        rows.append(
            [
                name,
                o.scenario.description,
                str(o.concurrency),
                _num(o.rps, 0),
                _num(_pick(load["latency_ms"], "p50")),
                _num(_pick(load["latency_ms"], "p99")),
                _num(_pick(load["ttfc_ms"], "p50")),
                _num(_pick(load["ttfc_ms"], "p99")),
                _num(cpu, 3),
                _num(o.utilization(load["cpu_seconds"].get("server")), 0),
                _num(o.utilization(load["client_cpu_seconds"]), 0),
                _num(1000 / cpu if cpu else None, 0),
                str(load["errors"]),
            ]
        )
    return _table(header, rows, text_columns=2)


def ratios_table(outcomes: Sequence[Outcome]) -> str:
    header = ["scenario"]
    for label, _ in METRICS:
        header += [f"{label} /(a)", f"{label} /(c)"]
    rows: list[list[str]] = []
    for o in outcomes:
        if not o.ok:
            continue
        base_a = _baseline(outcomes, o, "a")
        base_c = _baseline(outcomes, o, "c")
        row = [f"{o.scenario.name} ({o.scenario.role}) c={o.concurrency}"]
        for _, metric in METRICS:
            value = metric(o)
            row.append(_ratio(value, metric(base_a) if base_a else None))
            row.append(_ratio(value, metric(base_c) if base_c else None))
        rows.append(row)
    return _table(header, rows)


def connections_table(outcomes: Sequence[Outcome]) -> str:
    header = [
        "scenario",
        "requests measured",
        "client conns",
        "requests at nginx",
        "conns at nginx",
        "requests/conn",
        "nginx CPU ms/req",
    ]
    rows: list[list[str]] = []
    for o in outcomes:
        log = o.upstream_log or o.server_log
        if not o.ok or o.load is None or log is None:
            continue
        group = "upstream" if o.upstream_log else "server"
        per_conn = log.requests / log.connections if log.connections else None
        rows.append(
            [
                f"{o.scenario.name} c={o.concurrency}",
                str(o.load["requests"]),
                str(o.load["client_connections"]),
                str(log.requests) + (f" ({log.non_200} non-200)" if log.non_200 else ""),
                str(log.connections),
                _num(per_conn, 0),
                _num(o.cpu_ms_per_request(group), 3),
            ]
        )
    return _table(header, rows)


def failures(outcomes: Sequence[Outcome]) -> str:
    lines = []
    for o in outcomes:
        if o.failure:
            lines.append(f"- **{o.scenario.name}** failed: {o.failure}")
        elif o.load and o.load["errors"]:
            lines.append(
                f"- **{o.scenario.name}**: {o.load['errors']} failed requests, "
                f"e.g. {o.load['error_sample']}"
            )
    return "\n".join(lines)


def markdown(outcomes: Sequence[Outcome], meta: dict[str, Any]) -> str:
    parts = [
        "## Sluice benchmark",
        "",
        ", ".join(f"{key}: {value}" for key, value in meta.items()),
        "",
        "### Results",
        "",
        results_table(outcomes),
        "",
        "Latency: request sent → stream ended. TTFC: request sent → first content "
        "chunk. CPU ms/req: CPU time (user+sys, all threads) of the server under test "
        "in the window / requests. req/s per core (est.) = 1000 / CPU ms/req.",
        "",
        "### Ratios (row / baseline: same family, same kind of load generator, same concurrency)",
        "",
        ratios_table(outcomes),
        "",
        "(a) = echo, echo-h2load or echo-embed; (c) = upstream, upstream-wrk or "
        "upstream-embed. req/s below 1x is slower; latency, TTFC and CPU/req above 1x "
        "cost more.",
        "",
        "### Connections (whole run, warmup included)",
        "",
        connections_table(outcomes),
    ]
    failed = failures(outcomes)
    if failed:
        parts += ["", "### Problems", "", failed]
    return "\n".join(parts) + "\n"


def record(outcomes: Sequence[Outcome], meta: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for o in outcomes:
        rows.append(
            {
                "scenario": o.scenario.name,
                "role": o.scenario.role,
                "family": o.scenario.family,
                "description": o.scenario.description,
                "concurrency": o.concurrency,
                "failure": o.failure,
                "rps": o.rps,
                "cpu_ms_per_request": o.cpu_ms_per_request(),
                "load": o.load,
                "upstream_log": vars(o.upstream_log) if o.upstream_log else None,
                "server_log": vars(o.server_log) if o.server_log else None,
            }
        )
    return {"meta": meta, "results": rows}
