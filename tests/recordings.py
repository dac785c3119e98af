"""Recorded provider wire bytes (tests/fixtures/providers, see its SOURCES.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

PROVIDERS_DIR = Path(__file__).parent / "fixtures" / "providers"
HEADER_END = b"# ---\n"


def recording(name: str) -> bytes:
    """The wire body of a recorded sample: text samples lose their
    commentary header (every line up to the first `# ---` line)."""
    raw = (PROVIDERS_DIR / name).read_bytes()
    if name.endswith(".bin"):
        return raw
    marker = raw.find(HEADER_END)
    return raw if marker == -1 else raw[marker + len(HEADER_END) :]


def splits(body: bytes) -> Iterator[list[bytes]]:
    """The body whole, then split in two at every byte boundary."""
    yield [body]
    for i in range(1, len(body)):
        yield [body[:i], body[i:]]
