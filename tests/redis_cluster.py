"""A real Redis Cluster on loopback: three masters, a replica each, built by
`redis-cli --cluster create`, for tests of the `redis_cluster` backend.

One cluster serves the whole test session (it takes a few seconds to form);
tests keep apart by their own `key_prefix`. `kill_master_of(key)` crashes the
master of a key's slot (SIGKILL); with `cluster-node-timeout` at 1 s its
replica takes over within a few seconds. `kill(node)` crashes any node.
The `redis_cluster` fixture waits until the cluster is whole (every slot
served, every master replicated) before a test and, after one that killed a
node, restarts it (it rejoins as a replica) and waits again, so a failover
never leaks into the next test.

Use it by importing both fixtures into a conftest.py:
`from tests.redis_cluster import redis_cluster, redis_cluster_session  # noqa: F401`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from tests.redis_server import RedisServer, free_port

_MASTERS = 3
_FORM_SECONDS = 20.0
NODE_TIMEOUT_MS = 1000


class RedisClusterNodes:
    def __init__(self, directory: Path) -> None:
        self.nodes = []
        for i in range(2 * _MASTERS):
            node_directory = directory / f"node-{i}"
            node_directory.mkdir()
            options = {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": str(NODE_TIMEOUT_MS),
                # The bus port on its own free port: by default it is the
                # client port + 10000, which may be taken or out of range.
                "cluster-port": str(free_port()),
                # A replica syncs at once, not after the default 5 s wait
                # for others to share the transfer.
                "repl-diskless-sync-delay": "0",
            }
            self.nodes.append(RedisServer(node_directory, options))
        self._killed: list[RedisServer] = []

    @property
    def url(self) -> str:
        """The seed node's URL: any node would do."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        executable = shutil.which("redis-cli")
        if executable is None:
            pytest.fail("redis-cli is not on PATH; `make test` installs redis-server, which has it")
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"]
        created = subprocess.run(
            [executable, *create],
            check=False,
            capture_output=True,
            timeout=_FORM_SECONDS,
        )
        if created.returncode != 0:
            self.stop()
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout.decode()[-2000:]}")
        self.wait_until_whole()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def master_of(self, key: str) -> RedisServer:
        """The master that serves `key`'s slot, as a live node tells."""
        slot = key_slot(key.encode())
        node = next(node for node in self.nodes if node not in self._killed)
        for start, end, master, *_ in _command(node, "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"slot {slot} is not served")

    def kill_master_of(self, key: str) -> RedisServer:
        """Crash the master that serves `key`'s slot; the node killed."""
        return self.kill(self.master_of(key))

    def kill(self, node: RedisServer) -> RedisServer:
        """Crash `node` (SIGKILL), master or replica; the node killed."""
        node.kill()
        self._killed.append(node)
        return node

    def subscribers(self, channel: str) -> dict[RedisServer, int]:
        """The live nodes with subscribers on `channel`, and how many (a
        classic subscription is its node's alone, though every node relays
        a PUBLISH)."""
        live = [node for node in self.nodes if node not in self._killed]
        counts = {node: int(_command(node, "PUBSUB", "NUMSUB", channel)[1]) for node in live}
        return {node: count for node, count in counts.items() if count}

    def heal(self) -> None:
        """Restart every killed node and wait until the cluster is whole."""
        killed, self._killed = self._killed, []
        for node in killed:
            node.start()
        if killed:
            self.wait_until_whole()

    def is_serving(self) -> bool:
        """Whether every live node says every slot is served."""
        live = [node for node in self.nodes if node not in self._killed]
        try:
            return all(b"cluster_state:ok" in _command(node, "CLUSTER", "INFO") for node in live)
        except RedisError:
            return False

    def wait_until_whole(self) -> None:
        deadline = time.monotonic() + _FORM_SECONDS
        while not (self.is_serving() and self._replicated()):
            if time.monotonic() > deadline:
                pytest.fail("the Redis Cluster did not become whole")
            time.sleep(0.05)

    def _replicated(self) -> bool:
        """Whether every node tells the same slot map (a restarted one may
        lag), and there are three masters, each with a replica whose link to
        it is up (so it can take over)."""
        try:
            roles = [_command(node, "ROLE") for node in self.nodes]
            maps = {
                tuple((start, end, master[1]) for start, end, master, *_ in sorted(slots))
                for slots in (_command(node, "CLUSTER", "SLOTS") for node in self.nodes)
            }
        except RedisError:
            return False
        masters = [role for role in roles if role[0] == b"master"]
        replicas = [role for role in roles if role[0] == b"slave"]
        return (
            len(maps) == 1
            and len(masters) == _MASTERS
            and all(len(role[2]) == 1 for role in masters)
            and all(role[3] == b"connected" for role in replicas)
        )


def _command(node: RedisServer, *args: str) -> Any:
    with Redis(port=node.port, socket_timeout=1, socket_connect_timeout=1) as client:
        return client.execute_command(*args)


@pytest.fixture(scope="session")
def redis_cluster_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisClusterNodes) -> Iterator[RedisClusterNodes]:
    """The session's cluster, whole; healed after the test."""
    redis_cluster_session.wait_until_whole()
    try:
        yield redis_cluster_session
    finally:
        redis_cluster_session.heal()
