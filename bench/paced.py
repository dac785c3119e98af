"""The paced upstream: `bench/paced_upstream.js` on Node.js, serving the same
OpenAI chat stream as nginx with its tokens spaced in time (nginx cannot
pace). Pinned, like nginx in the Sluice rows, to the load generator's core.
Its `/stats` says how many streams were open at once and whether it sent any
token late itself: the proof that it was not the bottleneck.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import TypedDict

from bench import workload
from bench.procs import REPO, BenchError, Process, pinned

# A stream of 50 tokens 20 ms apart lasts about one second.
SPACING_MS = 20.0
_SCRIPT = REPO / "bench" / "paced_upstream.js"


class PacedStats(TypedDict):
    active: int  # streams open now
    peak: int  # streams open at once, at most
    served: int  # streams sent to the end
    late: int  # tokens sent more than 5 ms after their due time
    max_late_ms: float


def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        raise BenchError("node (Node.js) is needed for the paced upstream: apt-get install nodejs")
    return binary


class PacedUpstream:
    def __init__(self, directory: Path, port: int, cpu: int | None, spacing_ms: float) -> None:
        self.port = port
        self.spacing_ms = spacing_ms
        directory.mkdir(parents=True, exist_ok=True)
        events = workload.sse_events()
        tokens = events[1 : 1 + workload.CHUNKS]
        body = {"head": events[0], "tokens": tokens, "tail": "".join(events[1 + len(tokens) :])}
        body_path = directory / "chat.json"
        body_path.write_text(json.dumps(body))
        argv = [node(), str(_SCRIPT), str(port), str(body_path), f"{spacing_ms:g}"]
        self.process = Process("paced-upstream", pinned(cpu, argv), directory / "node.log")

    def wait_ready(self) -> None:
        self.process.wait_for_port(self.port)

    def stats(self) -> PacedStats:
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            stats: PacedStats = json.load(response)
            return stats
