"""Markdown tables and the JSON record of a run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from bench.scenarios import MIN_HIT_RATIO, SIGNALS, Outcome
from bench.stats import Distribution
from bench.workload import LIMITS_ROUTE, MAX_DELAY_MS


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


METRIC = dict(METRICS)


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
            state = "SKIPPED" if o.skipped else "FAILED"
            rows.append([name, o.scenario.description, str(o.concurrency), state, *[""] * 9])
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


def _named(outcomes: Sequence[Outcome], name: str, concurrency: int) -> Outcome | None:
    for outcome in outcomes:
        if outcome.scenario.name == name and outcome.concurrency == concurrency and outcome.ok:
            return outcome
    return None


def _difference(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "-"
    return f"{value - base:+.3f}"


def state_table(outcomes: Sequence[Outcome]) -> tuple[str, list[str]]:
    """The shared-state rows against `sluice` (the same call, uncached and
    unlimited) and `sluice-mock` (the gateway with no HTTP), with what the
    cache and Redis did; and a note line per limits row."""
    header = [
        "scenario",
        "CPU ms/req",
        "sluice CPU ms/req",
        "Δ CPU ms/req",
        "CPU/req /sluice",
        "CPU/req /sluice-mock",
        "req/s /sluice",
        "p50 /sluice",
        "TTFC p50 /sluice",
        "cache hits / misses (hit %)",
        "upstream calls (run)",
        "Redis CPU ms/req",
        "Redis cmds/call (scripts)",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for o in outcomes:
        if not o.scenario.state or not o.ok or o.load is None:
            continue
        base = _named(outcomes, "sluice", o.concurrency)
        mock = _named(outcomes, "sluice-mock", o.concurrency)
        cpu = o.cpu_ms_per_request()
        base_cpu = base.cpu_ms_per_request() if base else None

        def versus(metric: Metric, other: Outcome | None, row: Outcome = o) -> str:
            return _ratio(metric(row), metric(other) if other else None)

        hits = "-"
        if o.scenario.cached:
            ratio = o.hit_ratio
            hits = f"{o.load['cache_hits']} / {o.load['cache_misses']}" + (
                f" ({ratio * 100:.1f}%)" if ratio is not None else ""
            )
        calls = "-"
        if o.scenario.cached and o.upstream_log is not None:
            log = o.upstream_log
            calls = str(log.requests - log.embeddings)
            if log.embeddings:
                calls += f" (+{log.embeddings} embeddings)"
        commands = o.redis_commands_per_call()
        scripts = o.redis_commands_per_call(scripts_only=True)
        redis_calls = "-"
        if commands is not None and scripts is not None:
            redis_calls = f"{commands:.1f} ({scripts:.1f})"
        rows.append(
            [
                f"{o.scenario.name} c={o.concurrency}",
                _num(cpu, 3),
                _num(base_cpu, 3),
                _difference(cpu, base_cpu),
                versus(METRIC["CPU/req"], base),
                versus(METRIC["CPU/req"], mock),
                versus(METRIC["req/s"], base),
                versus(METRIC["p50"], base),
                versus(METRIC["TTFC p50"], base),
                hits,
                calls,
                _num(o.cpu_ms_per_request("redis"), 3),
                redis_calls,
            ]
        )
        if o.scenario.route == LIMITS_ROUTE and cpu is not None and base_cpu:
            notes.append(
                f"- {o.scenario.name} (c={o.concurrency}): the limiter costs "
                f"{cpu - base_cpu:+.3f} ms of gateway CPU per call "
                f"({(cpu / base_cpu - 1) * 100:+.0f}% over `sluice`, {cpu / base_cpu:.2f}x)"
                + (
                    f", and {commands:.1f} Redis commands ({scripts:.1f} scripts)"
                    if commands is not None and scripts is not None
                    else ""
                )
                + "."
            )
    return _table(header, rows), notes


# Issue 15's target: a semantic hit costs less than this share of the gateway
# CPU of the upstream call it saves.
SEMANTIC_TARGET = 0.5
SEMANTIC_PACED_ROW = "sluice-paced-200"


def semantic_hits(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Each semantic row's gateway CPU per call (a hit, its embeddings call
    included) over that of the upstream call it saves: the answer streamed
    at once by nginx (`sluice` at the same concurrency) and the answer
    streamed as a model streams it, a token each 20 ms (SEMANTIC_PACED_ROW,
    at its own concurrency: a stream's CPU hardly depends on it below
    saturation); beside them the embeddings call alone (`sluice-embed`) and
    an exact hit (`sluice-cache`), where they ran."""
    entries: list[dict[str, Any]] = []
    for o in outcomes:
        if not o.scenario.semantic or not o.ok:
            continue

        def cpu(name: str, row: Outcome = o) -> float | None:
            other = _named(outcomes, name, row.concurrency)
            return other.cpu_ms_per_request() if other else None

        hit, upstream = o.cpu_ms_per_request(), cpu("sluice")
        paced = next((p for p in outcomes if p.scenario.name == SEMANTIC_PACED_ROW and p.ok), None)
        paced_cpu = paced.cpu_ms_per_request() if paced else None
        entries.append(
            {
                "scenario": o.scenario.name,
                "concurrency": o.concurrency,
                "cpu_ms_per_request": hit,
                "upstream_cpu_ms_per_request": upstream,
                "ratio": _divide(hit, upstream),
                "paced_cpu_ms_per_request": paced_cpu,
                "paced_ratio": _divide(hit, paced_cpu),
                "target": SEMANTIC_TARGET,
                "embed_cpu_ms_per_request": cpu("sluice-embed"),
                "exact_hit_cpu_ms_per_request": cpu("sluice-cache"),
                "hit_ratio": o.hit_ratio,
            }
        )
    return entries


def semantic_lines(entries: Sequence[dict[str, Any]]) -> list[str]:
    """One line per semantic row: the ratio of issue 15's target, and what
    it is made of."""
    lines: list[str] = []
    for entry in entries:
        ratio, paced = entry["ratio"], entry["paced_ratio"]
        hits = entry["hit_ratio"]
        lines.append(
            f"- {entry['scenario']} (c={entry['concurrency']}): semantic hit CPU / upstream "
            f"call CPU = {_num(ratio)} ({_num(entry['cpu_ms_per_request'], 3)} / "
            f"{_num(entry['upstream_cpu_ms_per_request'], 3)} ms of gateway CPU a call; "
            f"target below {SEMANTIC_TARGET}: {_verdict(ratio, '`sluice`')}) against the answer "
            f"streamed at once by nginx; {_num(paced)} ({_num(entry['cpu_ms_per_request'], 3)} "
            f"/ {_num(entry['paced_cpu_ms_per_request'], 3)} ms; "
            f"{_verdict(paced, f'`{SEMANTIC_PACED_ROW}`')}) against the answer streamed a "
            f"token each 20 ms, as a model streams it. The embeddings call alone "
            f"(`sluice-embed`): {_num(entry['embed_cpu_ms_per_request'], 3)} ms, an exact hit "
            f"(`sluice-cache`): {_num(entry['exact_hit_cpu_ms_per_request'], 3)} ms; semantic "
            f"hits in the window: {'-' if hits is None else f'{hits * 100:.1f}%'}."
        )
    return lines


def _verdict(ratio: float | None, row: str) -> str:
    if ratio is None:
        return f"no {row} row in this run"
    return "met" if ratio < SEMANTIC_TARGET else "not met"


# The row the telemetry rows are compared with: the same call, nothing exported.
TELEMETRY_BASELINE = "sluice"


def _counterpart(outcomes: Sequence[Outcome], name: str, row: Outcome) -> Outcome | None:
    """`name` at the row's concurrency, of the row's round when the list
    holds several rounds (the JSON's `rounds`), else whichever there is."""
    found = [
        o for o in outcomes if o.scenario.name == name and o.concurrency == row.concurrency and o.ok
    ]
    same_round = [o for o in found if o.round_no == row.round_no]
    if same_round:
        return same_round[0]
    return found[0] if found else None


def _divide(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or math.isnan(value) or math.isnan(base) or base == 0:
        return None
    return value / base


def _telemetry_pairs(outcomes: Sequence[Outcome]) -> list[tuple[Outcome, Outcome | None]]:
    return [
        (o, _counterpart(outcomes, TELEMETRY_BASELINE, o))
        for o in outcomes
        if o.scenario.telemetry and o.ok and o.load is not None
    ]


# What `by_round` keeps of each round's pairing, and `paired_median` the median of.
_PAIRED = (
    "cpu_ms_per_request_delta",
    "cpu_ms_per_request_ratio",
    "rps_ratio",
    "ttfc_p50_ms_ratio",
    "ttfc_p99_ms_ratio",
)


def telemetry_overhead(
    outcomes: Sequence[Outcome], every: Sequence[Outcome] = ()
) -> list[dict[str, Any]]:
    """Each telemetry row against `sluice` (same concurrency; same round in
    the rounds list): what exporting costs, and what reached the sink. With
    `every` (all rounds, when there are several), each entry also has
    `by_round`, each round's row paired with `sluice` of the same round, and
    `paired_median`, the median of those: steadier than comparing the median
    rounds, which are picked by req/s one scenario at a time and may come
    from different rounds."""
    rounds = telemetry_overhead(every) if len({o.round_no for o in every}) > 1 else []
    entries: list[dict[str, Any]] = []
    for o, base in _telemetry_pairs(outcomes):
        counts = o.telemetry
        entry: dict[str, Any] = {
            "scenario": o.scenario.name,
            "concurrency": o.concurrency,
            "round": o.round_no,
            "exported": list(SIGNALS[o.scenario.telemetry]),
            "baseline": base.scenario.name if base else None,
            "baseline_round": base.round_no if base else None,
        }
        for key, metric in (
            ("rps", METRIC["req/s"]),
            ("cpu_ms_per_request", METRIC["CPU/req"]),
            ("ttfc_p50_ms", METRIC["TTFC p50"]),
            ("ttfc_p99_ms", METRIC["TTFC p99"]),
        ):
            value, base_value = metric(o), metric(base) if base else None
            entry[key] = value
            entry[f"baseline_{key}"] = base_value
            entry[f"{key}_ratio"] = _divide(value, base_value)
        cpu, base_cpu = entry["cpu_ms_per_request"], entry["baseline_cpu_ms_per_request"]
        entry["cpu_ms_per_request_delta"] = (
            cpu - base_cpu if cpu is not None and base_cpu is not None else None
        )
        entry["calls"] = o.load["calls_total"] if o.load else None
        entry["sink"] = counts
        entry["spans_per_call"] = o.per_call(counts["spans"]) if counts else None
        entry["spans_per_call_by_name"] = (
            {name: o.per_call(count) for name, count in counts["span_names"].items()}
            if counts
            else None
        )
        entry["log_records_per_call"] = o.per_call(counts["logs"]) if counts else None
        entry["sink_cpu_ms_per_request"] = o.cpu_ms_per_request("otlp")
        by_round = [
            {"round": e["round"], **{key: e[key] for key in _PAIRED}}
            for e in rounds
            if e["scenario"] == o.scenario.name and e["concurrency"] == o.concurrency
        ]
        if by_round:
            entry["by_round"] = by_round
            entry["paired_median"] = {
                key: _median([r[key] for r in by_round if r[key] is not None]) for key in _PAIRED
            }
        entries.append(entry)
    return entries


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def telemetry_table(
    outcomes: Sequence[Outcome], every: Sequence[Outcome] = ()
) -> tuple[str, list[str]]:
    """`sluice` and the telemetry rows compared with it; a note line per row,
    with the round-by-round pairing when `every` holds several rounds."""
    header = [
        "scenario",
        "exported",
        "req/s",
        "req/s /sluice",
        "CPU ms/req",
        "Δ CPU ms/req",
        "CPU/req /sluice",
        "TTFC p50 ms",
        "TTFC p50 /sluice",
        "TTFC p99 ms",
        "TTFC p99 /sluice",
        "server CPU %",
        "spans/call",
        "log records/call",
        "metric points (run)",
        "sink CPU ms/req",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    shown: set[int] = set()
    for (o, base), entry in zip(
        _telemetry_pairs(outcomes), telemetry_overhead(outcomes, every), strict=True
    ):
        if base is not None and id(base) not in shown:
            shown.add(id(base))
            rows.append(
                [
                    f"{base.scenario.name} c={base.concurrency}",
                    "nothing (default)",
                    _num(base.rps, 0),
                    "1.00x",
                    _num(base.cpu_ms_per_request(), 3),
                    "-",
                    "1.00x",
                    _num(METRIC["TTFC p50"](base)),
                    "1.00x",
                    _num(METRIC["TTFC p99"](base)),
                    "1.00x",
                    _num(_server_utilization(base), 0),
                    *["-"] * 4,
                ]
            )
        counts, signals = o.telemetry, SIGNALS[o.scenario.telemetry]
        delta = entry["cpu_ms_per_request_delta"]
        rows.append(
            [
                f"{o.scenario.name} c={o.concurrency}",
                ", ".join(entry["exported"]),
                _num(o.rps, 0),
                _ratio(entry["rps"], entry["baseline_rps"]),
                _num(entry["cpu_ms_per_request"], 3),
                "-" if delta is None else f"{delta:+.3f}",
                _ratio(entry["cpu_ms_per_request"], entry["baseline_cpu_ms_per_request"]),
                _num(entry["ttfc_p50_ms"]),
                _ratio(entry["ttfc_p50_ms"], entry["baseline_ttfc_p50_ms"]),
                _num(entry["ttfc_p99_ms"]),
                _ratio(entry["ttfc_p99_ms"], entry["baseline_ttfc_p99_ms"]),
                _num(_server_utilization(o), 0),
                _num(entry["spans_per_call"], 1),
                _num(entry["log_records_per_call"], 1) if "logs" in signals else "-",
                str(counts["points"]) if counts and "metrics" in signals else "-",
                _num(entry["sink_cpu_ms_per_request"], 3),
            ]
        )
        ratio = entry["cpu_ms_per_request_ratio"]
        if delta is not None and ratio is not None:
            notes.append(
                f"- {o.scenario.name} (c={o.concurrency}): exporting "
                f"{' + '.join(entry['exported'])} costs {delta:+.3f} ms of gateway CPU per call "
                f"({(ratio - 1) * 100:+.0f}% vs `{TELEMETRY_BASELINE}`); req/s "
                f"{_ratio(entry['rps'], entry['baseline_rps'])}, TTFC p50 "
                f"{_ratio(entry['ttfc_p50_ms'], entry['baseline_ttfc_p50_ms'])}, p99 "
                f"{_ratio(entry['ttfc_p99_ms'], entry['baseline_ttfc_p99_ms'])}."
                + _by_round(entry.get("by_round"), entry.get("paired_median"))
                + _span_names(entry["spans_per_call_by_name"])
            )
    return _table(header, rows), notes


def _by_round(by_round: list[dict[str, Any]] | None, median: dict[str, Any] | None) -> str:
    if not by_round or not median:
        return ""

    def each(key: str, show: Callable[[float], str]) -> str:
        values = ", ".join("-" if r[key] is None else show(r[key]) for r in by_round)
        middle = median[key]
        return f"{values} (median {'-' if middle is None else show(middle)})"

    return (
        f" Round by round, each paired with `{TELEMETRY_BASELINE}` of its round: "
        f"Δ CPU ms/req {each('cpu_ms_per_request_delta', lambda v: f'{v:+.3f}')}, "
        f"CPU/req {each('cpu_ms_per_request_ratio', lambda v: f'{v:.2f}x')}, "
        f"TTFC p99 {each('ttfc_p99_ms_ratio', lambda v: f'{v:.2f}x')}."
    )


def _span_names(per_call: dict[str, float | None] | None) -> str:
    if not per_call:
        return ""
    shown = ", ".join(f"`{name}` {_num(count, 1)}" for name, count in per_call.items())
    return f" Spans a call: {shown}."


def _server_utilization(o: Outcome) -> float | None:
    return o.utilization(o.load["cpu_seconds"].get("server")) if o.load else None


class PeerRow(NamedTuple):
    """Sluice's row, MLflow's, and the rows that frame them: the raw grpc.aio
    echo and the upstream directly (same kind of load generator where there is
    one); "" where there is none."""

    label: str
    sluice: str
    mlflow: str
    echo: str = ""
    upstream: str = ""


PEER_ROWS = [
    PeerRow("50-chunk streams", "sluice-h2load", "mlflow-wrk", "echo-h2load", "upstream-wrk"),
    PeerRow(
        "unary embeddings",
        "sluice-embed-h2load",
        "mlflow-embed-wrk",
        "echo-embed-h2load",
        "upstream-embed-wrk",
    ),
    PeerRow(
        "unary embeddings (Sluice: Python client)",
        "sluice-embed",
        "mlflow-embed-wrk",
        "echo-embed",
        "upstream-embed",
    ),
    PeerRow("non-stream chat (MLflow, for scale)", "", "mlflow-chat-wrk"),
    *(
        PeerRow(
            f"paced streams{label}",
            f"sluice-paced{suffix}-{n}",
            f"mlflow-paced-{n}",
            upstream=f"upstream-paced-{n}",
        )
        for n in (200, 1000)
        for label, suffix in (("", ""), (f" (Sluice max_delay_ms {MAX_DELAY_MS})", "-delay"))
    ),
]


def _any(outcomes: Sequence[Outcome], name: str) -> Outcome | None:
    """`name`'s outcome, whatever its concurrency (rows of a fixed one)."""
    return next((o for o in outcomes if o.scenario.name == name and o.ok), None)


def _pair(outcomes: Sequence[Outcome], name: str, like: Outcome | None) -> Outcome | None:
    if not name:
        return None
    if like is not None:
        return _named(outcomes, name, like.concurrency)
    return _any(outcomes, name)


def peers_table(outcomes: Sequence[Outcome]) -> str:
    """Sluice beside MLflow, with the echo and the upstream of the same run."""
    header = [
        "comparison",
        "conc",
        "Sluice req/s",
        "Sluice CPU ms/req",
        "MLflow req/s",
        "MLflow CPU ms/req",
        "echo req/s (CPU ms/req)",
        "upstream req/s (CPU ms/req)",
        "req/s Sluice/MLflow",
        "per core Sluice/MLflow",
        "per core Sluice/echo",
    ]
    rows: list[list[str]] = []
    for label, sluice_name, mlflow_name, echo_name, upstream_name in PEER_ROWS:
        mlflow = _any(outcomes, mlflow_name)
        if mlflow is None:
            continue
        sluice = _pair(outcomes, sluice_name, mlflow)
        echo = _pair(outcomes, echo_name, mlflow)
        upstream = _pair(outcomes, upstream_name, mlflow)

        def cpu(o: Outcome | None) -> float | None:
            return o.cpu_ms_per_request() if o else None

        def per_core(o: Outcome | None) -> float | None:
            value = cpu(o)
            return 1000 / value if value else None

        def both(o: Outcome | None) -> str:
            return f"{_num(o.rps, 0)} ({_num(cpu(o), 3)})" if o else "-"

        rows.append(
            [
                label,
                str(mlflow.concurrency),
                _num(sluice.rps, 0) if sluice else "-",
                _num(cpu(sluice), 3),
                _num(mlflow.rps, 0),
                _num(cpu(mlflow), 3),
                both(echo),
                both(upstream),
                _ratio(sluice.rps if sluice else None, mlflow.rps),
                _ratio(per_core(sluice), per_core(mlflow)),
                _ratio(per_core(sluice), per_core(echo)),
            ]
        )
    return _table(header, rows)


def paced_table(outcomes: Sequence[Outcome]) -> str:
    header = [
        "scenario",
        "streams",
        "streams/s",
        "CPU ms/stream",
        "added gap p50 ms",
        "added gap p99 ms",
        "TTFC p50 ms",
        "TTFC p99 ms",
        "server CPU %",
        "client CPU %",
        "upstream peak open",
        "upstream late tokens",
    ]
    rows: list[list[str]] = []
    for o in outcomes:
        if o.scenario.family != "paced" or not o.ok or o.load is None:
            continue
        stats = o.upstream_stats
        rows.append(
            [
                o.scenario.name,
                str(o.concurrency),
                _num(o.rps, 0),
                _num(o.cpu_ms_per_request(), 3),
                _num(_pick(o.load["added_gap_ms"], "p50")),
                _num(_pick(o.load["added_gap_ms"], "p99")),
                _num(METRIC["TTFC p50"](o)),
                _num(METRIC["TTFC p99"](o)),
                _num(_server_utilization(o), 0),
                _num(o.utilization(o.load["client_cpu_seconds"]), 0),
                str(stats["peak"]) if stats else "-",
                f"{stats['late']} (max {stats['max_late_ms']:.1f} ms)" if stats else "-",
            ]
        )
    return _table(header, rows)


def ttfc_table(outcomes: Sequence[Outcome]) -> str:
    """Sluice's time to first chunk at c=1 over the upstream's own."""
    sluice, upstream = _any(outcomes, "sluice-ttfc"), _any(outcomes, "upstream-ttfc")
    if sluice is None or upstream is None:
        return ""
    header = ["", "TTFC p50 ms", "TTFC p99 ms", "latency p50 ms", "latency p99 ms"]
    rows = [
        [
            o.scenario.name,
            _num(METRIC["TTFC p50"](o), 3),
            _num(METRIC["TTFC p99"](o), 3),
            _num(METRIC["p50"](o), 3),
            _num(METRIC["p99"](o), 3),
        ]
        for o in (upstream, sluice)
    ]
    rows.append(
        ["Sluice over the upstream"]
        + [
            _difference(metric(sluice), metric(upstream))
            for metric in (METRIC["TTFC p50"], METRIC["TTFC p99"], METRIC["p50"], METRIC["p99"])
        ]
    )
    return _table(header, rows)


_STATUSES = ("OK", "CANCELLED", "RESOURCE_EXHAUSTED", "UNAVAILABLE")


def burst_table(outcomes: Sequence[Outcome]) -> str:
    header = [
        "scenario",
        "calls",
        *_STATUSES,
        "other",
        "refusals with RetryInfo",
        "peak open",
        "seconds",
        "CPU ms/OK call",
        "RSS idle / peak / +10 s MiB",
        "upstream peak open",
    ]
    rows: list[list[str]] = []
    for o in outcomes:
        if o.scenario.family != "burst" or not o.ok or o.load is None:
            continue
        statuses = o.load["statuses"]
        other = sum(count for status, count in statuses.items() if status not in _STATUSES)
        refusals = statuses.get("RESOURCE_EXHAUSTED", 0) + statuses.get("UNAVAILABLE", 0)
        memory = o.memory
        rows.append(
            [
                o.scenario.name,
                str(o.concurrency),
                *(str(statuses.get(status, 0)) for status in _STATUSES),
                str(other),
                f"{o.load['retry_hinted']} of {refusals}",
                str(o.load["peak_open"]),
                _num(o.load["seconds"], 1),
                _num(o.cpu_ms_per_request(), 3),
                " / ".join(_num(memory[key], 0) for key in ("idle", "peak", "settled"))
                if memory
                else "-",
                str(o.upstream_stats["peak"]) if o.upstream_stats else "-",
            ]
        )
    return _table(header, rows)


def failures(outcomes: Sequence[Outcome]) -> str:
    lines = []
    for o in outcomes:
        if o.skipped:
            lines.append(f"- **{o.scenario.name}** skipped: {o.skipped}")
        elif o.failure:
            lines.append(f"- **{o.scenario.name}** failed: {o.failure}")
        elif o.load and o.load["errors"]:
            lines.append(
                f"- **{o.scenario.name}**: {o.load['errors']} failed requests, "
                f"e.g. {o.load['error_sample']}"
            )
        elif o.scenario.cached and not o.clean:
            ratio = o.hit_ratio
            shown = "no checked stream" if ratio is None else f"{ratio * 100:.1f}%"
            lines.append(
                f"- **{o.scenario.name}**: cache hit ratio {shown}, "
                f"below {MIN_HIT_RATIO * 100:.0f}%"
            )
    return "\n".join(lines)


def markdown(
    outcomes: Sequence[Outcome], meta: dict[str, Any], every: Sequence[Outcome] = ()
) -> str:
    """The report of the median rounds `outcomes`; `every` is all the rounds'
    outcomes, for the telemetry rows' round-by-round pairing."""
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
    if any(o.scenario.state and o.ok for o in outcomes):
        table, notes = state_table(outcomes)
        parts += [
            "",
            "### Shared state: cache hits and limiter overhead (vs `sluice`, same run)",
            "",
            table,
            "",
            "`sluice` is the same call through nginx with no cache and no limits; "
            "`sluice-mock` the gateway with no HTTP at all. Δ CPU ms/req = row - `sluice`: "
            "for a limits row, the limiter's cost per call; for a cache row, negative = what "
            "a hit saves. Hits and misses are counted in the window; upstream calls are "
            "nginx's chat requests over the whole run (single flight: one; the semantic row: "
            "about one a worker, its embeddings calls in brackets). Redis cmds/call = "
            "commands redis-server ran in the run / calls in the run, those inside Lua "
            "scripts included; (scripts) counts the EVALSHAs alone. A call's round trips "
            "to Redis are its scripts plus its plain commands. Redis runs on the load "
            "core: its CPU is not in CPU ms/req.",
        ]
        if notes:
            parts += ["", *notes]
    if any(o.scenario.telemetry and o.ok for o in outcomes):
        table, notes = telemetry_table(outcomes, every)
        parts += [
            "",
            f"### Telemetry overhead: OTLP/gRPC export (vs `{TELEMETRY_BASELINE}`, same run)",
            "",
            table,
            "",
            f"`{TELEMETRY_BASELINE}` is the same call with Sluice's default telemetry: nothing "
            "exported (no spans, no-op metrics, the access log on stdout). The "
            "telemetry rows export to an OTLP/gRPC sink of the harness's own "
            "(`bench/otlp_sink.py`) on the load core: its CPU is not in CPU ms/req (sink CPU "
            "ms/req is), but it competes with the load generator, so read req/s with server "
            "CPU %. Δ CPU ms/req = row - `sluice`: exporting's cost per call, in the gateway "
            "(its exporter threads included). spans/call and log records/call = what the sink "
            "received over the run (Sluice's flush at shutdown included) / calls of the run; "
            "a row fails below 3 spans a call (or, exporting logs, below one record a call). "
            "Metrics are read every 60 s (the SDK default): in a short run they are exported "
            "once, at shutdown, so their recording is measured, their export hardly.",
        ]
        if notes:
            parts += ["", *notes]
    semantic = semantic_lines(semantic_hits(outcomes))
    if semantic:
        parts += [
            "",
            "### Semantic cache: a hit against the upstream call it saves (same run)",
            "",
            *semantic,
            "",
            "A semantic hit's CPU is the gateway's for the whole call: the exact lookup (a "
            "miss: every call's text is new), the embeddings call through Sluice's pipeline to "
            "nginx, the index lookup and the replay. The upstream call it saves is the same "
            "chat, uncached: `sluice`'s, its 50 tokens read at once from nginx (coalesced into "
            "a few messages: little more than a replay), and "
            f"`{SEMANTIC_PACED_ROW}`'s, the tokens 20 ms apart as a model streams them (a "
            "message each). The upstreams, on the load core, are in none.",
        ]
    parts += _issue_10_sections(outcomes)
    failed = failures(outcomes)
    if failed:
        parts += ["", "### Problems", "", failed]
    return "\n".join(parts) + "\n"


def _issue_10_sections(outcomes: Sequence[Outcome]) -> list[str]:
    parts: list[str] = []
    peers = peers_table(outcomes)
    if peers.count("\n") > 1:
        parts += [
            "",
            "### Sluice beside MLflow's gateway (same upstream, same run)",
            "",
            peers,
            "",
            "Each row pairs Sluice's and MLflow's rows at the same concurrency, with the raw "
            "grpc.aio echo and the upstream itself. per core = 1000 / CPU ms/req: what one "
            "fully busy core would serve. Native rows: Sluice and the echo by h2load, MLflow "
            "and nginx by wrk; paced rows: the Python clients (which see every chunk).",
        ]
    if any(o.scenario.family == "paced" and o.ok for o in outcomes):
        parts += [
            "",
            "### Paced streams (50 tokens 20 ms apart)",
            "",
            paced_table(outcomes),
            "",
            "added gap = the gap between two chunks at the client minus 20 ms times the tokens "
            "the later one brought (every gap of every stream in the window). upstream late "
            "tokens: sent more than 5 ms after their due time by the upstream itself (when "
            "not ~0, the upstream, not the gateway, spaced them). A client core near 100% "
            "adds its own delay: read the gaps with client CPU %.",
        ]
    ttfc = ttfc_table(outcomes)
    if ttfc:
        parts += ["", "### Time to first chunk at c=1, over the upstream directly", "", ttfc]
    if any(o.scenario.family == "burst" and o.ok for o in outcomes):
        parts += [
            "",
            "### Bursts and open streams (one channel)",
            "",
            burst_table(outcomes),
            "",
            "Every call ends OK, refused (RESOURCE_EXHAUSTED, UNAVAILABLE) with or without a "
            "google.rpc.RetryInfo, CANCELLED, or otherwise (other: another status, or a wrong "
            "stream). A row's errors are all but OK and the refusals with a retry hint. peak "
            "open: streams open at once at the client (first delta to end). RSS (the RSS row): "
            "the gateway's before the load, its peak (VmHWM), and 10 s after the streams ended.",
        ]
    return parts


def record(
    outcomes: Sequence[Outcome], meta: dict[str, Any], every: Sequence[Outcome] = ()
) -> dict[str, Any]:
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
                "redis_commands": o.redis_commands,
                "round": o.round_no,
                "telemetry": o.telemetry,
                "telemetry_exported": list(SIGNALS[o.scenario.telemetry]),
                "cache_hit_ratio": o.hit_ratio,
                "server_log": vars(o.server_log) if o.server_log else None,
                "upstream_stats": o.upstream_stats,
                "memory_mib": o.memory,
                "skipped": o.skipped,
            }
        )
    return {
        "meta": meta,
        "results": rows,
        "telemetry_overhead": telemetry_overhead(outcomes, every),
        "semantic_hits": semantic_hits(outcomes),
    }
