"""The upstream: nginx serving the fixed OpenAI responses from static files.

One worker process, keep-alive, on 127.0.0.1, in the foreground, with every
file (config, bodies, logs, pid, temp dirs) in a scratch directory. nginx
answers POST to a static file with 405; `error_page 405 =200 $uri` turns
that into an internal GET of the same file, served with status 200 and a
Content-Length. The access log records nginx's connection serial number per
request, which is how the harness counts the connections a client opened.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import procfs, workload
from bench.procs import Process, pinned

_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    log_format bench '$connection $connection_requests $status $body_bytes_sent $uri';
    access_log {dir}/access.log bench buffer=256k flush=1s;
{temp_paths}
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 10000000;

    server {{
        listen 127.0.0.1:{port} backlog=4096;

        location = /v1/chat/completions {{
            default_type text/event-stream;
            alias {dir}/chat.sse;
            error_page 405 =200 $uri;
        }}
        location = /unary/v1/chat/completions {{
            default_type application/json;
            alias {dir}/chat.json;
            error_page 405 =200 $uri;
        }}
        location = /v1/embeddings {{
            default_type application/json;
            alias {dir}/embeddings.json;
            error_page 405 =200 $uri;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""

_TEMP_MODULES = {
    "client_body": None,
    "proxy": "http_proxy_module",
    "fastcgi": "http_fastcgi_module",
    "uwsgi": "http_uwsgi_module",
    "scgi": "http_scgi_module",
}


def version(binary: str) -> str:
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().removeprefix("nginx version: ")


def _compiled_without(binary: str) -> set[str]:
    done = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    return {
        flag.removeprefix("--without-")
        for flag in done.stderr.split()
        if flag.startswith("--without-")
    }


@dataclass(frozen=True)
class AccessLog:
    requests: int
    connections: int
    non_200: int
    # Of the requests, those for the embeddings JSON (the semantic row's lookups).
    embeddings: int = 0


class Nginx:
    def __init__(self, binary: str, directory: Path, port: int, cpu: int | None) -> None:
        self.port = port
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # workers may run as another user
        (directory / "chat.sse").write_bytes(workload.sse_body())
        (directory / "embeddings.json").write_bytes(workload.embeddings_body())
        (directory / "chat.json").write_bytes(workload.chat_completion_body())
        without = _compiled_without(binary)
        temp_paths = "\n".join(
            f"    {name}_temp_path {directory}/tmp_{name};"
            for name, module in _TEMP_MODULES.items()
            if module is None or module not in without
        )
        config = _CONFIG.format(
            dir=directory,
            port=port,
            user="user root;" if os.geteuid() == 0 else "",
            temp_paths=temp_paths,
        )
        (directory / "nginx.conf").write_text(config)
        argv = [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")]
        argv += ["-e", str(directory / "error.log")]
        self.process = Process(
            "nginx", pinned(cpu, argv), directory / "nginx.out", stop_signal=signal.SIGQUIT
        )

    def wait_ready(self) -> None:
        self.process.wait_for_port(self.port)

    def pids(self) -> list[int]:
        return [self.process.pid, *procfs.children(self.process.pid)]

    def access_log(self) -> AccessLog:
        """Read after the process stopped (the log is buffered until then)."""
        connections: set[str] = set()
        requests = non_200 = embeddings = 0
        path = self.directory / "access.log"
        if not path.exists():
            return AccessLog(0, 0, 0)
        with open(path, encoding="ascii", errors="replace") as log:
            for line in log:
                fields = line.split()
                if len(fields) < 3:
                    continue
                requests += 1
                connections.add(fields[0])
                non_200 += fields[2] != "200"
                embeddings += fields[-1].endswith("/embeddings")
        return AccessLog(requests, len(connections), non_200, embeddings)
