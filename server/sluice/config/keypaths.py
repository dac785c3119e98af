"""Where a value sits in a config document: the path of keys and list
indexes to it, as errors name it (`routes[2].model.name`)."""

from __future__ import annotations

KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
