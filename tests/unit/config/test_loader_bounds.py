"""What a config file can cost is bounded before anything is built: its
bytes, the values its aliases expand to, its nesting; and a file that
PyYAML cannot construct is a ConfigError at its line, never another
exception (which would end the reload loop)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sluice.config import ConfigError, load_config
from sluice.config.loader import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, parse_config

ROUTE = """\
routes:
  - name: chat
    route_type: llm/v1/chat
    model: {provider: mock, name: m}
"""


def alias_bomb(levels: int = 9, fanout: int = 9) -> str:
    """`fanout ** levels` values from about 1.5 KB: each level lists the one
    before `fanout` times."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * fanout) + "]")
    return "\n".join(lines) + f"\nroutes: *a{levels - 1}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml", {})
    return str(caught.value).splitlines()


def test_an_alias_bomb_is_refused_at_once_naming_the_line() -> None:
    bomb = alias_bomb()
    assert len(bomb) < 2048
    started = time.perf_counter()
    refused = problems(bomb)
    assert time.perf_counter() - started < 0.5
    # The first anchor whose expansion crosses the bound: level 7 holds 9**7 values.
    assert refused == [f"gw.yaml:7: more than {MAX_CONFIG_NODES:,} values once aliases expand"]


def test_aliases_within_the_bound_still_work() -> None:
    text = ROUTE.replace("model: {", "model: &m {") + ROUTE.split("\n", 1)[1].replace(
        "name: chat", "name: again"
    ).replace("{provider: mock, name: m}", "*m")
    assert [route.name for route in parse_config(text, "gw.yaml", {}).routes] == ["chat", "again"]


def test_an_alias_to_its_own_container_is_refused() -> None:
    assert problems("routes: &r [*r]\n") == [
        "gw.yaml:1: an alias refers to a value that contains it"
    ]


def test_nesting_too_deep_to_compose_is_refused() -> None:
    assert problems("routes: " + "[" * 3_000 + "]" * 3_000 + "\n") == ["gw.yaml: nested too deeply"]


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(ROUTE + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: the file is larger than {MAX_CONFIG_BYTES:,} bytes"


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(ROUTE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:5: not UTF-8 text"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ROUTE + "? [a, b]\n: x\n", "gw.yaml:5: a key must be a string"),
        (ROUTE + "? {a: {[x]: 1}}\n: x\n", "gw.yaml:5: a key must be a string"),
        (ROUTE + "other: !custom x\n", "gw.yaml:5: other: could not determine a constructor"),
        (ROUTE + "other: !!int abc\n", "gw.yaml:5: other: cannot read tag:yaml.org,2002:int"),
    ],
    ids=["list-key", "unhashable-key", "unknown-tag", "bad-int"],
)
def test_what_pyyaml_cannot_construct_is_a_problem_at_its_line(text: str, expected: str) -> None:
    assert problems(text)[0].startswith(expected)
