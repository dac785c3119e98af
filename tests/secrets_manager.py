"""A local AWS Secrets Manager: moto's server mode on a free loopback port,
never the real service.

The server is started once a session and exits by itself when the tests'
process goes: it watches its stdin, a pipe only the parent holds. The
`secrets_manager` fixture points botocore's standard variables at it
(`AWS_ENDPOINT_URL_SECRETS_MANAGER`, test credentials, no shared files or
instance metadata), so the code under test finds it as it would find AWS.

Use the fixtures by importing them into a conftest.py or test module:
`from tests.secrets_manager import secrets_manager, secrets_manager_server  # noqa: F401`.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
from botocore.client import BaseClient

from tests.redis_server import free_port

REGION = "eu-west-1"
# Fake, but shaped like real ones: tests assert they never reach a message.
ACCESS_KEY_ID = "AKIASLUICETESTKEY042"
SECRET_ACCESS_KEY = "sluice-test-aws-secret-access-key-0042"
_START_SECONDS = 20.0
# Exits when stdin closes, i.e. when the process that started it is gone.
_SERVE = """\
import os, sys, threading
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"""


class SecretsManagerServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = botocore.session.Session().create_client(
            "secretsmanager",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        self._wait_until_answering()

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + _START_SECONDS
        while True:
            try:
                self.client.list_secrets()
                return
            except Exception:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"moto's server did not start on port {self.port}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)


class SecretsManager:
    """The server, with a prefix of its own for one test's secrets."""

    def __init__(self, server: SecretsManagerServer) -> None:
        self.server = server
        self.client: BaseClient = server.client
        self.prefix = f"sluice-test/{uuid.uuid4().hex[:8]}/"

    def put(self, name: str, value: str) -> None:
        self.client.create_secret(Name=self.prefix + name, SecretString=value)

    def put_binary(self, name: str, value: bytes) -> None:
        self.client.create_secret(Name=self.prefix + name, SecretBinary=value)

    def source(self) -> str:
        """The config's source entry for this test's secrets, as YAML."""
        return f"{{aws_secrets_manager: {{region: {REGION}, prefix: {self.prefix}}}}}"


@pytest.fixture(scope="session")
def secrets_manager_server() -> Iterator[SecretsManagerServer]:
    server = SecretsManagerServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def secrets_manager(
    secrets_manager_server: SecretsManagerServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> SecretsManager:
    """The emulator, found through the standard AWS variables; nothing of
    the machine's own AWS setup is read."""
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets_manager_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return SecretsManager(secrets_manager_server)
