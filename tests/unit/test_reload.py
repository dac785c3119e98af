"""Hot reload, in-process: the file poll sees each way a file is replaced
(Kubernetes' `..data` swap too) once it settles; a reload hands long-lived
parts over and closes the rest when the old gateway's calls end; an invalid
config is refused with its file and line logged."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.config import load_config
from sluice.config.isolated import LoadFailedError, LoadTimedOutError, read_config_isolated
from sluice.config.loader import LoadedConfig
from sluice.gateway import Gateway
from sluice.providers.http import HttpClientPool
from sluice.providers.mock import MockSettings
from sluice.reload import ConfigReloader, FileWatch, GatewayHolder
from sluice.state.memory import MemoryState

SETTLE = 0.5


def write(path: Path, text: str) -> None:
    path.write_text(text)


def replace_by_rename(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def kubernetes_mount(directory: Path, text: str) -> Path:
    """A ConfigMap volume: gw.yaml -> ..data/gw.yaml, ..data -> ..<version>."""
    (directory / "..v1").mkdir()
    (directory / "..v1" / "gw.yaml").write_text(text)
    (directory / "..data").symlink_to("..v1")
    (directory / "gw.yaml").symlink_to("..data/gw.yaml")
    return directory / "gw.yaml"


def kubernetes_update(path: Path, text: str) -> None:
    """What the kubelet does: a new version directory, then an atomic swap of
    `..data`, then the old directory removed."""
    directory = path.parent
    old = os.readlink(directory / "..data")
    version = f"..v{int(old.removeprefix('..v')) + 1}"
    (directory / version).mkdir()
    (directory / version / "gw.yaml").write_text(text)
    (directory / "..data_tmp").symlink_to(version)
    os.replace(directory / "..data_tmp", directory / "..data")
    (directory / old / "gw.yaml").unlink()
    (directory / old).rmdir()


def plain_file(directory: Path, text: str) -> Path:
    path = directory / "gw.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "change", "text"),
    [
        (plain_file, write, "a: 22\n"),
        # Same bytes: only the inode (and perhaps mtime) tells.
        (plain_file, replace_by_rename, "a: 1\n"),
        (kubernetes_mount, kubernetes_update, "a: 1\n"),
    ],
    ids=["write", "rename", "kubernetes"],
)
def test_a_change_is_reported_once_it_has_settled(
    tmp_path: Path,
    make: Callable[[Path, str], Path],
    change: Callable[[Path, str], None],
    text: str,
) -> None:
    path = make(tmp_path, "a: 1\n")
    watch = FileWatch(path, SETTLE)
    assert not watch.changed(0.0)
    change(path, text)
    assert [watch.changed(t) for t in (1.0, 1.4, 1.5, 1.6, 5.0)] == [
        False,  # seen
        False,  # not settled yet
        True,
        False,  # reported once
        False,
    ]
    assert path.read_text() == text


def test_writes_in_a_burst_are_reported_once_after_the_last(tmp_path: Path) -> None:
    path = plain_file(tmp_path, "a: 1\n")
    watch = FileWatch(path, SETTLE)
    path.write_text("")  # an editor truncates...
    assert not watch.changed(1.0)
    path.write_text("a: 2\n")  # ...then writes
    assert not watch.changed(1.3)
    path.write_text("a: 333\n")  # and saves again
    assert [watch.changed(t) for t in (1.6, 2.0, 2.1, 2.2)] == [False, False, True, False]


# --- reloading ---------------------------------------------------------------


def config(reply: str = "old", **sections: Any) -> str:
    route = {
        "name": "chat",
        "route_type": "llm/v1/chat",
        "model": {"provider": "mock", "reply": reply},
    }
    return yaml.safe_dump({**sections, "routes": [route]}, sort_keys=False)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "gw.yaml"
    write(path, config())
    return path


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The long-lived parts closed, in order."""
    parts: list[object] = []

    async def record(part: object) -> None:
        parts.append(part)

    monkeypatch.setattr(MemoryState, "aclose", record)
    monkeypatch.setattr(HttpClientPool, "aclose", record)
    return parts


@pytest.fixture
def holder(path: Path) -> GatewayHolder:
    return GatewayHolder(Gateway(load_config(path)))


def reply(gateway: Gateway) -> str:
    model = gateway.config.routes[0].target_configs[0].model
    assert isinstance(model, MockSettings)
    return model.reply


def pool_of(gateway: Gateway) -> HttpClientPool:
    [pool] = [part for part in gateway.long_lived() if isinstance(part, HttpClientPool)]
    return pool


async def a_moment() -> None:
    """Long enough for a retired gateway's closing task to run."""
    await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("state", "state_taken_over"),
    [({}, True), ({"state": {"key_prefix": "other:"}}, False)],
    ids=["same-state", "new-state"],
)
async def test_new_calls_get_the_new_config_and_the_old_closes_when_its_calls_end(
    path: Path,
    holder: GatewayHolder,
    closed: list[object],
    state: dict[str, Any],
    state_taken_over: bool,
) -> None:
    reloader = ConfigReloader(path, holder)
    old = holder.current
    with holder.lease() as in_flight:
        write(path, config("new", **state))
        assert await reloader.reload("test")
        new = holder.current
        assert (in_flight, reply(in_flight), reply(new)) == (old, "old", "new")
        assert pool_of(new) is pool_of(old), "the HTTP pool is taken over"
        assert (new.state is old.state) == state_taken_over
        await a_moment()
        assert closed == [], "nothing closes while a call is in flight"
    await a_moment()
    assert closed == ([] if state_taken_over else [old.state])
    await holder.aclose()
    assert closed[-2:] == [new.state, pool_of(new)]
    assert len(closed) == len({id(part) for part in closed}), "each part closed once"


async def test_a_part_stays_open_while_an_older_gateway_still_holds_it(
    path: Path, holder: GatewayHolder, closed: list[object]
) -> None:
    reloader = ConfigReloader(path, holder)
    first = holder.current
    with holder.lease():
        write(path, config("second"))
        assert await reloader.reload("test")
        second = holder.current
        write(path, config("third", state={"key_prefix": "other:"}))
        assert await reloader.reload("test")
        await a_moment()
        # The second gateway had no call: closed, but the state it shares
        # with the first stays open for the first one's call.
        assert second.state is first.state
        assert closed == []
    await a_moment()
    assert closed == [first.state]
    await holder.aclose()


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("routes:\n  - name: x\n    route_type: llm/v1/chat\n    modle: {}\n",
         "{path}:4: routes[0].modle: unknown key"),
        ("routes: [\n", "{path}:2: invalid YAML"),
        ("routes: []\n", "{path}:1: routes: List should have at least 1 item"),
        ("routes:\n  - name: gpt\n    route_type: llm/v1/chat\n"
         "    model: {provider: openai, name: m, api_key: '{{ secrets.SLUICE_UNSET_SECRET }}'}\n",
         "{path}:4: routes[0].model.api_key: secret SLUICE_UNSET_SECRET is not set in environment variable SLUICE_UNSET_SECRET"),
        ("", "{path}: the file is empty"),
    ],
    ids=["unknown-key", "bad-yaml", "no-routes", "missing-secret", "empty"],
)  # fmt: skip
async def test_an_invalid_config_is_refused_with_its_error_logged_and_the_old_stays(
    path: Path,
    holder: GatewayHolder,
    caplog: pytest.LogCaptureFixture,
    text: str,
    logged: str,
) -> None:
    running = holder.current
    write(path, text)
    with caplog.at_level(logging.INFO, logger="sluice.reload"):
        assert not await ConfigReloader(path, holder).reload("SIGHUP")
    assert holder.current is running
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith(
        "config reload (SIGHUP) refused, the running config stays:\n"
    )
    assert logged.format(path=path) in record.getMessage()


async def test_a_new_server_address_warns_that_it_needs_a_restart(
    path: Path, holder: GatewayHolder, caplog: pytest.LogCaptureFixture
) -> None:
    write(path, config("new", server={"port": 6000}))
    with caplog.at_level(logging.INFO, logger="sluice.reload"):
        assert await ConfigReloader(path, holder).reload("test")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "config reload (test): only a restart applies server.port",
        ),
        (logging.INFO, f"config reloaded (test) from {path} (routes: chat)"),
    ]
    assert holder.current.config.server.port == 6000
    await holder.aclose()


async def test_a_reload_the_check_refuses_keeps_the_running_gateway(
    path: Path, holder: GatewayHolder, caplog: pytest.LogCaptureFixture
) -> None:
    running = holder.current
    write(path, config("new"))
    reloader = ConfigReloader(path, holder, check=lambda new: f"no {new.routes[0].name}")
    with caplog.at_level(logging.INFO, logger="sluice.reload"):
        assert not await reloader.reload("SIGHUP")
    assert holder.current is running
    assert [r.getMessage() for r in caplog.records] == [
        "config reload (SIGHUP) refused, the running config stays: no chat"
    ]


async def test_new_worker_settings_warn_that_they_need_a_restart(
    path: Path, holder: GatewayHolder, caplog: pytest.LogCaptureFixture
) -> None:
    write(path, config("new", server={"workers": 2, "max_concurrent_calls": 5}))
    with caplog.at_level(logging.WARNING, logger="sluice.reload"):
        assert await ConfigReloader(path, holder).reload("test")
    assert [r.getMessage() for r in caplog.records] == [
        "config reload (test): only a restart applies server.workers and "
        "server.max_concurrent_calls"
    ]
    await holder.aclose()


async def test_an_unchanged_config_keeps_the_running_gateway(
    path: Path, holder: GatewayHolder, caplog: pytest.LogCaptureFixture
) -> None:
    running = holder.current
    write(path, config() + "# a comment\n")
    with caplog.at_level(logging.INFO, logger="sluice.reload"):
        assert await ConfigReloader(path, holder).reload("test")
    assert holder.current is running
    assert caplog.messages == [f"config reload (test): {path} is unchanged"]


async def test_a_stopped_reloader_reloads_nothing(path: Path, holder: GatewayHolder) -> None:
    running = holder.current
    reloader = ConfigReloader(path, holder)
    await reloader.stop()
    write(path, config("new"))
    assert not await reloader.reload("SIGHUP")
    assert holder.current is running


async def test_the_poll_reloads_a_changed_file(path: Path, holder: GatewayHolder) -> None:
    reloader = ConfigReloader(path, holder, interval=0.02, settle=0.05)
    reloader.start()
    try:
        write(path, config("new"))
        async with asyncio.timeout(2):
            while reply(holder.current) != "new":  # noqa: ASYNC110 (a reload signals nothing)
                await asyncio.sleep(0.01)
    finally:
        await reloader.stop()
        await holder.aclose()


async def test_the_telemetry_is_kept_and_a_changed_section_waits_for_a_restart(
    path: Path, holder: GatewayHolder, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = ConfigReloader(path, holder)
    telemetry = holder.current.telemetry
    write(path, config("same telemetry"))
    assert await reloader.reload("test")
    assert holder.current.telemetry is telemetry
    assert "telemetry" not in caplog.text

    write(path, config("new telemetry", telemetry={"capture_content": True}))
    assert await reloader.reload("test")
    assert holder.current.telemetry is telemetry
    assert "the telemetry section changed: it applies at the next restart" in caplog.text
    await holder.aclose()


class FailingReader:
    """The isolated reader, failing with `failures` (in order) before it reads
    the file for real: a child that crashed or ran out of time."""

    def __init__(self, *failures: LoadFailedError) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self, path: Path, within: float) -> LoadedConfig:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return await read_config_isolated(path, within)


async def test_a_reader_that_crashed_is_asked_once_more(
    path: Path,
    holder: GatewayHolder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = FailingReader(LoadFailedError("the config reader exited with -11"))
    monkeypatch.setattr("sluice.reload.read_config_isolated", reader)
    write(path, config("new"))
    with caplog.at_level(logging.WARNING, logger="sluice.reload"):
        assert await ConfigReloader(path, holder).reload("test")
    assert reader.calls == 2
    assert reply(holder.current) == "new"
    assert (
        f"the config reader failed (the config reader exited with -11); reading {path} again"
        in caplog.text
    )
    await holder.aclose()


async def test_a_reader_that_crashed_twice_leaves_the_running_config(
    path: Path, holder: GatewayHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = holder.current
    crash = LoadFailedError("the config reader exited with -11")
    reader = FailingReader(crash, crash)
    monkeypatch.setattr("sluice.reload.read_config_isolated", reader)
    write(path, config("new"))
    assert not await ConfigReloader(path, holder).reload("test")
    assert reader.calls == 2
    assert holder.current is running


async def test_a_reader_that_ran_out_of_time_is_not_asked_again(
    path: Path, holder: GatewayHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = holder.current
    reader = FailingReader(LoadTimedOutError("reading the file took more than 30 s"))
    monkeypatch.setattr("sluice.reload.read_config_isolated", reader)
    write(path, config("new"))
    assert not await ConfigReloader(path, holder).reload("test")
    assert reader.calls == 1
    assert holder.current is running
