"""Read a config file in a child process, within a time bound: how a running
server reloads, so that no file can stall its calls or grow its memory.

Parsing YAML is CPU-bound pure Python; in a thread it would still hold the
GIL the event loop needs, and its garbage would stay in the server's heap.
The child (`python -m sluice.config.isolated PATH`) reads the file with the
loader's bounds and writes back, pickled, the LoadedConfig or the
ConfigError's problems; the parent registers the secrets it resolved. A
child that outlives its time bound is killed, and one that fails otherwise is
reported by its exit, never by its output (which could quote a secret).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
from pathlib import Path

from sluice.config.loader import ConfigError, ConfigProblem, LoadedConfig, read_config

# A config at the loader's bounds reads in about 10 s on a busy core.
RELOAD_TIMEOUT = 30.0


class LoadFailedError(Exception):
    """The child could not say whether the config is valid: it crashed or
    was killed."""


class LoadTimedOutError(LoadFailedError):
    """The child took longer than its time bound, and was killed."""


async def read_config_isolated(path: Path, within: float = RELOAD_TIMEOUT) -> LoadedConfig:
    """The config at `path`, read in a child process; ConfigError if it
    cannot be used, LoadFailedError if the child gave no answer within
    `within` seconds."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        # The parent's import path, which may be set up in-process (tests, zipapps).
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))},
    )
    try:
        async with asyncio.timeout(within):
            output, _ = await child.communicate()
    except TimeoutError:
        raise LoadTimedOutError(f"reading the file took more than {within:g} s") from None
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise LoadFailedError(f"the config reader exited with {child.returncode}")
    answer = pickle.loads(output)  # from the child started above, nobody else
    if isinstance(answer, LoadedConfig):
        return answer
    source, problems = answer
    raise ConfigError(source, problems)


def _main(path: str) -> None:
    # Background work beside a serving process: the gateway gets the CPU first.
    os.nice(10)
    answer: LoadedConfig | tuple[str, list[ConfigProblem]]
    try:
        answer = read_config(path)
    except ConfigError as error:
        answer = (error.source, error.problems)
    sys.stdout.buffer.write(pickle.dumps(answer))


if __name__ == "__main__":
    _main(sys.argv[1])
