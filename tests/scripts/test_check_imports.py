"""scripts/check_imports.py on small packages written for each test."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scripts.check_imports import LAYERS, imports, main, package_modules, shortest_cycle

REPO = Path(__file__).parents[2]


def package(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (path under `root` -> source) and return the directory
    of the one top-level package among them."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    [top] = {Path(name).parts[0] for name in files}
    return root / top


def check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main([str(root)])
    return code, capsys.readouterr().out.splitlines()


def test_a_package_without_cycles_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\nfrom . import VERSION\n",
            "pkg/a.py": "import json\nfrom pkg import b\nA = b.B\n",
            "pkg/b.py": "from os import path\nB = 1\n",
        },
    )
    assert check(root, capsys) == (
        0,
        [f"3 modules in {root}: 0 import cycle(s), 0 forbidden import(s)"],
    )


def test_a_cycle_through_a_type_checking_import_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """\
                from __future__ import annotations

                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from pkg.b import B
                """,
            "pkg/b.py": "import pkg.a\n",
        },
    )
    assert check(root, capsys) == (
        1,
        [
            "import cycle among 2 modules: pkg.a, pkg.b",
            "  for one: pkg.a -> pkg.b -> pkg.a",
            f"    {root}/a.py:6: pkg.a imports pkg.b",
            f"    {root}/b.py:1: pkg.b imports pkg.a",
            f"3 modules in {root}: 1 import cycle(s), 0 forbidden import(s)",
        ],
    )


def test_a_cycle_through_a_function_level_import_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """\
                def late():
                    from pkg import b

                    return b
                """,
            "pkg/b.py": "from pkg.a import late\n",
        },
    )
    code, out = check(root, capsys)
    assert code == 1
    assert out[:4] == [
        "import cycle among 2 modules: pkg.a, pkg.b",
        "  for one: pkg.a -> pkg.b -> pkg.a",
        f"    {root}/a.py:2: pkg.a imports pkg.b",
        f"    {root}/b.py:1: pkg.b imports pkg.a",
    ]


def test_a_cycle_through_relative_imports_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from .c import C\n",
            "pkg/sub/c.py": "from ..d import D\nC = 1\n",
            "pkg/d.py": "from .sub import C as D\n",
        },
    )
    code, out = check(root, capsys)
    assert code == 1
    assert out[:5] == [
        "import cycle among 3 modules: pkg.d, pkg.sub, pkg.sub.c",
        "  for one: pkg.d -> pkg.sub -> pkg.sub.c -> pkg.d",
        f"    {root}/d.py:1: pkg.d imports pkg.sub",
        f"    {root}/sub/__init__.py:1: pkg.sub imports pkg.sub.c",
        f"    {root}/sub/c.py:1: pkg.sub.c imports pkg.d",
    ]


@pytest.mark.parametrize(
    ("module", "statement", "imported"),
    [
        ("pkg/a.py", "from . import b", "pkg.b"),
        ("pkg/a.py", "from .b import name", "pkg.b"),
        ("pkg/a.py", "from . import name", "pkg"),
        ("pkg/sub/c.py", "from .. import b", "pkg.b"),
        ("pkg/sub/c.py", "from ..sub import c", "pkg.sub.c"),
        ("pkg/sub/__init__.py", "from . import c", "pkg.sub.c"),
        ("pkg/sub/__init__.py", "from .. import b", "pkg.b"),
        ("pkg/a.py", "from pkg.sub import c", "pkg.sub.c"),
        ("pkg/a.py", "from pkg.sub import name", "pkg.sub"),
        ("pkg/a.py", "from pkg.b import *", "pkg.b"),
        ("pkg/a.py", "import pkg.sub.c", "pkg.sub.c"),
        ("pkg/a.py", "import pkg.b.name", "pkg.b"),
        ("pkg/a.py", "import json.decoder", "json.decoder"),
        ("pkg/a.py", "from opentelemetry import trace", "opentelemetry"),
        ("pkg/a.py", "from opentelemetry.trace import Span", "opentelemetry.trace"),
    ],
    ids=[
        "relative-module",
        "relative-name-from-a-module",
        "relative-name-from-the-package",
        "parent-relative-module",
        "parent-relative-subpackage-module",
        "package-init-relative-module",
        "package-init-parent-relative-module",
        "absolute-module",
        "absolute-name-from-a-package",
        "star",
        "plain-import",
        "plain-import-past-a-module",
        "outside-the-package-as-written",
        "outside-from-import-is-its-module",
        "outside-from-submodule-import",
    ],
)
def test_import_resolution(tmp_path: Path, module: str, statement: str, imported: str) -> None:
    files = dict.fromkeys(
        ["pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/sub/__init__.py", "pkg/sub/c.py"], ""
    )
    root = package(tmp_path, {**files, module: f"x = 1\n{statement}\n"})
    modules = package_modules(root)
    [name] = [name for name, path in modules.items() if path == tmp_path / module]
    [found] = imports(name, tmp_path / module, modules)
    assert (found.importer, found.imported, found.line) == (name, imported, 2)


def test_a_relative_import_beyond_the_package_is_an_error(tmp_path: Path) -> None:
    root = package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from .. import other\n"})
    with pytest.raises(SystemExit) as caught:
        main([str(root)])
    assert str(caught.value) == f"{root}/a.py:1: relative import beyond the top-level package"


def test_each_cycle_is_reported_with_its_shortest_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            # One component of four: a -> b -> c -> d -> a, with the shortcut c -> a.
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "from pkg import c\n",
            "pkg/c.py": "from pkg import d\nfrom pkg import a\n",
            "pkg/d.py": "from pkg import a\n",
            # And another: x <-> y.
            "pkg/x.py": "from pkg import y\n",
            "pkg/y.py": "from pkg import x\n",
        },
    )
    code, out = check(root, capsys)
    assert code == 1
    assert [line for line in out if not line.startswith("    ")] == [
        "import cycle among 4 modules: pkg.a, pkg.b, pkg.c, pkg.d",
        "  for one: pkg.a -> pkg.b -> pkg.c -> pkg.a",
        "import cycle among 2 modules: pkg.x, pkg.y",
        "  for one: pkg.x -> pkg.y -> pkg.x",
        f"7 modules in {root}: 2 import cycle(s), 0 forbidden import(s)",
    ]


@pytest.mark.parametrize(
    ("graph", "path"),
    [
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"a": ["b", "c"], "b": ["c"], "c": ["d", "a"], "d": ["a"]}, ["a", "c", "a"]),
        ({"a": ["b"], "b": ["c"], "c": []}, []),
    ],
    ids=["two", "shortest-of-several", "none"],
)
def test_shortest_cycle(graph: dict[str, list[str]], path: list[str]) -> None:
    assert shortest_cycle("a", graph) == path


def test_pipeline_and_providers_may_not_import_telemetry_names_or_opentelemetry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = package(
        tmp_path,
        {
            "sluice/__init__.py": "",
            "sluice/telemetry/__init__.py": "from sluice.telemetry.core import Telemetry\n",
            "sluice/telemetry/core.py": "from opentelemetry import trace\nfrom sluice.telemetry import semconv\nTelemetry = 1\n",
            "sluice/telemetry/semconv.py": "",
            "sluice/telemetry/instruments.py": "",
            "sluice/pipeline/__init__.py": "",
            "sluice/pipeline/stage.py": """\
                from sluice.telemetry import Telemetry
                from sluice.telemetry import semconv


                def record():
                    from sluice.telemetry.instruments import CALLS
                """,
            "sluice/providers/__init__.py": "",
            "sluice/providers/adapter.py": """\
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from opentelemetry.trace import Span
                import opentelemetry
                """,
        },
    )
    why = LAYERS[0].why
    assert check(root, capsys) == (
        1,
        [
            f"{root}/pipeline/stage.py:2: sluice.pipeline.stage imports sluice.telemetry.semconv (forbidden: {why})",
            f"{root}/pipeline/stage.py:6: sluice.pipeline.stage imports sluice.telemetry.instruments (forbidden: {why})",
            f"{root}/providers/adapter.py:4: sluice.providers.adapter imports opentelemetry.trace (forbidden: {why})",
            f"{root}/providers/adapter.py:5: sluice.providers.adapter imports opentelemetry (forbidden: {why})",
            f"9 modules in {root}: 0 import cycle(s), 4 forbidden import(s)",
        ],
    )


def test_make_lint_runs_it_as_a_script(tmp_path: Path) -> None:
    root = package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg import a\n"})
    result = subprocess.run(
        [sys.executable, "scripts/check_imports.py", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"2 modules in {root}: 0 import cycle(s), 0 forbidden import(s)\n",
        "",
    )
