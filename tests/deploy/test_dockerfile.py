"""The Dockerfile's build runs outside Docker (there is no engine in CI):
its build stage's COPY and RUN steps, verbatim, under a temporary root; the
runtime stage's copies from it; then the image's ENTRYPOINT and CMD. The
venv so built has no pip, checks and serves the shipped config, answers
grpc.health.v1 SERVING, and exits 0 on the image's STOPSIGNAL."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluice.config.schema import ServerConfig

ROOT = Path(__file__).parents[2]
# A fresh venv and every dependency from the package index: tens of seconds.
pytestmark = pytest.mark.timeout(300)


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        (value,) = self.values(keyword)
        value = value.split(" CMD ", 1)[-1].strip()  # HEALTHCHECK [OPTIONS] CMD [...]
        assert value.startswith("["), f"{keyword} in exec form (JSON), so no shell: {value}"
        words: list[str] = json.loads(value)
        return words


def parse(dockerfile: Path) -> list[Stage]:
    """The stages and their instructions; continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages: list[Stage] = [Stage("(global)")]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, value = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append(Stage(value.split(" AS ")[-1] if " AS " in value else "runtime"))
        stages[-1].instructions.append((keyword.upper(), value.strip()))
    return stages


class Emulated:
    """A stage's filesystem under `root`: ARG paths, WORKDIR and COPY mapped there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.args: dict[str, str] = {}
        self.workdir = root

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/") if path.startswith("/") else self.workdir / path

    def expand(self, value: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m[1], m[0]), value)

    def arg(self, value: str) -> None:
        name, _, default = value.partition("=")
        # A path in the image is a path under the root here.
        self.args[name] = str(self.at(default)) if default.startswith("/") else default

    def copy(self, value: str, context: Path) -> None:
        *sources, dest = shlex.split(self.expand(value))
        if sources[0].startswith("--from="):
            assert sources[1] == dest, "the build stage's venv, copied in place"
            return
        target = self.at(dest)
        for source in sources:
            origin = context / source
            into = target / origin.name if dest.endswith("/") else target
            into.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(origin, into)

    def run(self, command: str) -> None:
        environ = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        # `python` is the image's Python: here, the one running the tests.
        environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ['PATH']}"
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.workdir,
            env={**environ, **self.args},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, f"RUN {command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def emulate(stage: Stage, filesystem: Emulated, *, run: bool) -> None:
    for keyword, value in stage.instructions:
        if keyword == "ARG":
            filesystem.arg(value)
        elif keyword == "WORKDIR":
            filesystem.workdir = filesystem.at(filesystem.expand(value))
            filesystem.workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            filesystem.copy(value, ROOT)
        elif keyword == "RUN" and run:
            filesystem.run(value)


@dataclass
class Image:
    runtime: Stage
    filesystem: Emulated

    @property
    def venv(self) -> Path:
        return Path(self.filesystem.args["VENV"])

    def command(self, *extra: str) -> list[str]:
        """ENTRYPOINT + CMD, paths in the image mapped under the root."""
        (program, *arguments) = self.runtime.exec_form("ENTRYPOINT") + self.runtime.exec_form("CMD")
        mapped = [str(self.filesystem.at(a)) if a.startswith("/") else a for a in arguments]
        return [str(self.venv / "bin" / program), *mapped, *extra]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    _global, build, runtime = parse(ROOT / "Dockerfile")
    assert (build.name, runtime.name) == ("build", "runtime")
    root = tmp_path_factory.mktemp("image")
    emulate(build, Emulated(root), run=True)
    filesystem = Emulated(root)
    # The runtime stage only removes pip and adds a user: not run here, where
    # it would change this machine's Python.
    for step in runtime.values("RUN"):
        assert "install" not in step.replace("uninstall", ""), f"an install in the runtime: {step}"
    emulate(runtime, filesystem, run=False)
    return Image(runtime, filesystem)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_venv_holds_no_build_tools(image: Image) -> None:
    done = subprocess.run(
        [image.venv / "bin" / "python", "-c", "import pip"], capture_output=True, check=False
    )
    assert done.returncode != 0, "pip is left in the image's venv"
    assert not (image.venv / "bin" / "pip").exists()


def test_the_shipped_config_checks(image: Image) -> None:
    serve_args = image.command()
    config = serve_args[serve_args.index("--config") + 1]
    assert Path(config) == image.filesystem.at("/app/config.yaml")
    done = subprocess.run(
        [serve_args[0], "check", "--config", config],
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "config is valid" in done.stdout


def test_the_image_serves_health_and_stops_on_its_stop_signal(image: Image) -> None:
    (exposed,) = image.runtime.values("EXPOSE")
    assert int(exposed) == ServerConfig().port
    assert image.runtime.exec_form("HEALTHCHECK") == [
        "sluice",
        "health",
        "--address",
        f"127.0.0.1:{exposed}",
    ]
    (user,) = image.runtime.values("USER")
    assert int(user.split(":")[0]) != 0
    (stop_signal,) = image.runtime.values("STOPSIGNAL")
    port = free_port()
    # The CMD listens on every interface; a test stays on loopback (the last --host wins).
    process = subprocess.Popen(
        image.command("--host", "127.0.0.1", "--port", str(port)),
        cwd=image.filesystem.workdir,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(getattr(signal, stop_signal))
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
