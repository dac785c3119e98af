"""Fail on an import cycle or a forbidden import inside one Python package.

    python scripts/check_imports.py server/sluice

Every import statement counts, those under `if TYPE_CHECKING:` and inside
functions too: an import that typing or a late import keeps from running at
load time still ties the two modules together, and the next refactor that
moves it up turns the cycle into an ImportError. `from X import Y` is an
import of module X.Y when there is one, else of X. Imports from outside the
package matter only where a layering rule (LAYERS) names them.

Exits 1 when it finds either, naming each cycle with one concrete path and
each forbidden import with its file and line.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from collections import deque
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layer:
    """Modules within any of `importers` may import nothing within `forbidden`
    (a name covers its module or package and everything under it)."""

    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    why: str


LAYERS = (
    Layer(
        importers=("sluice.pipeline", "sluice.providers"),
        forbidden=("sluice.telemetry.semconv", "sluice.telemetry.instruments", "opentelemetry"),
        why="stages and adapters report through the telemetry object's methods",
    ),
)


@dataclass(frozen=True)
class Import:
    """One imported name of one import statement."""

    importer: str
    imported: str  # a module of the package, or the name as written outside it
    path: Path
    line: int


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fail on an import cycle or a forbidden import.")
    parser.add_argument("package", type=Path, help="the package's directory, e.g. server/sluice")
    root: Path = parser.parse_args(argv).package
    modules = package_modules(root)
    found = [each for name, path in modules.items() for each in imports(name, path, modules)]
    graph = import_graph(found, modules)
    cycles = [component for component in strongly_connected(graph) if len(component) > 1]
    forbidden = forbidden_imports(found, LAYERS)
    for problem in [*(describe_cycle(cycle, graph) for cycle in cycles), *forbidden]:
        print(problem)
    print(
        f"{len(modules)} modules in {root}: {len(cycles)} import cycle(s),"
        f" {len(forbidden)} forbidden import(s)"
    )
    return 1 if cycles or forbidden else 0


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package at `root`, by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports(name: str, path: Path, modules: Collection[str]) -> Iterator[Import]:
    """Every name imported anywhere in module `name`, resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, _module(alias.name, modules), path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _module(_absolute(node, package, path), modules)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                imported = submodule if submodule in modules else base
                yield Import(name, imported, path, node.lineno)


def _absolute(node: ast.ImportFrom, package: str, path: Path) -> str:
    """The module `from ... import` names, with its dots resolved from `package`."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    if node.level > len(parts):
        raise SystemExit(f"{path}:{node.lineno}: relative import beyond the top-level package")
    anchor = ".".join(parts[: len(parts) - node.level + 1])
    return f"{anchor}.{node.module}" if node.module else anchor


def _module(name: str, modules: Collection[str]) -> str:
    """The longest prefix of `name` that is a module of the package, or
    `name` itself when it is none of the package's."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return name


def import_graph(found: Sequence[Import], modules: Collection[str]) -> dict[str, dict[str, Import]]:
    """Importer -> imported module -> the first statement importing it, for the
    package's own modules only."""
    graph: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for each in found:
        if each.imported in modules and each.imported != each.importer:
            graph[each.importer].setdefault(each.imported, each)
    return graph


def strongly_connected(graph: Mapping[str, Collection[str]]) -> list[list[str]]:
    """Tarjan's algorithm; each component sorted, components in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                on_stack.discard(member)
                component.append(member)
            on_stack.discard(node)
            components.append(sorted([*component, node]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def shortest_cycle(start: str, graph: Mapping[str, Collection[str]]) -> list[str]:
    """The shortest path from `start` back to itself (breadth first), as
    [start, ..., start]; [] when there is none."""
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph.get(node, ())):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if successor not in parents:
                parents[successor] = node
                queue.append(successor)
    return []


def describe_cycle(component: Sequence[str], graph: Mapping[str, Mapping[str, Import]]) -> str:
    members = set(component)
    within = {
        name: [imported for imported in graph[name] if imported in members] for name in component
    }
    path = shortest_cycle(component[0], within)
    hops = [graph[importer][imported] for importer, imported in itertools.pairwise(path)]
    return "\n".join(
        [
            f"import cycle among {len(component)} modules: {', '.join(component)}",
            f"  for one: {' -> '.join(path)}",
            *(f"    {hop.path}:{hop.line}: {hop.importer} imports {hop.imported}" for hop in hops),
        ]
    )


def forbidden_imports(found: Sequence[Import], layers: Sequence[Layer]) -> list[str]:
    problems = []
    for each in sorted(found, key=lambda each: (each.path, each.line)):
        for layer in layers:
            if _within(each.importer, layer.importers) and _within(each.imported, layer.forbidden):
                problems.append(
                    f"{each.path}:{each.line}: {each.importer} imports {each.imported}"
                    f" (forbidden: {layer.why})"
                )
    return list(dict.fromkeys(problems))  # one line per statement and name


def _within(name: str, prefixes: Collection[str]) -> bool:
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in prefixes)


if __name__ == "__main__":
    sys.exit(main())
