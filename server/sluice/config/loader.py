"""Load a config file strictly: every error names the file, line and key path.

YAML is composed into nodes first so each value keeps its line; secrets
(`{{ secrets.NAME }}`, read from the environment) are resolved during that
walk, where the line and key are still known. Resolved secrets are registered
for redaction. A missing secret is reported by name, never by value.

A config in MLflow AI Gateway's form is translated first (mlflow.py); errors
in the translated config are reported at the MLflow keys they came from.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sluice.config.keypaths import KeyPath, format_path
from sluice.config.mlflow import is_mlflow_config, translate
from sluice.config.schema import GatewayConfig
from sluice.redaction import register_secret

_SECRET = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
DEFAULT_CONFIG = "default.yaml"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    line: int | None
    path: KeyPath
    message: str

    def describe(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        key = format_path(self.path)
        return f"{where}: {key}: {self.message}" if key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; `str()` lists every problem, one a line."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.describe(source) for p in problems))


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem(None, (), exc.strerror or str(exc))]) from None
    return parse_config(text, str(path), os.environ if environ is None else environ)


def load_default_config() -> GatewayConfig:
    """The embedded config: mock routes, so Sluice runs offline out of the box."""
    text = resources.files("sluice.config").joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")
    return parse_config(text, f"<embedded {DEFAULT_CONFIG}>", os.environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> GatewayConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigProblem(line, (), f"invalid YAML: {problem}")]) from None
    if root is None:
        raise ConfigError(source, [ConfigProblem(None, (), "the file is empty")])
    reader = _NodeReader(environ)
    data = reader.read(root, ())
    if reader.problems:
        raise ConfigError(source, reader.problems)
    origin: Callable[[KeyPath], KeyPath] = _same_path
    if is_mlflow_config(data):
        translation = translate(data, environ)
        if translation.problems:
            raise ConfigError(
                source,
                [
                    ConfigProblem(_line(reader.lines, path), path, message)
                    for path, message in translation.problems
                ],
            )
        data, origin = translation.config, translation.origin
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc, data, reader.lines, origin)) from None


class _NodeReader:
    """Turns YAML nodes into plain data, recording each key path's line."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._constructor = yaml.SafeLoader("")
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[ConfigProblem] = []

    def read(self, node: yaml.Node, path: KeyPath) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if not isinstance(key, str):
                    self.problems.append(ConfigProblem(line, path, f"key {key!r} is not a string"))
                    continue
                if key in result:
                    self.problems.append(ConfigProblem(line, (*path, key), "key given twice"))
                    continue
                self.lines[(*path, key)] = line
                result[key] = self.read(value_node, (*path, key))
                self.lines[(*path, key)] = line  # the key's line, not its value's
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self._constructor.construct_object(node, deep=True)
        if isinstance(value, str) and "{{" in value:
            return self._resolve_secrets(value, path, node.start_mark.line + 1)
        return value

    def _resolve_secrets(self, value: str, path: KeyPath, line: int) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            secret = self._environ.get(name)
            if not secret:
                self.problems.append(
                    ConfigProblem(line, path, f"secret {name} is not set in the environment")
                )
                return ""
            register_secret(secret)
            return secret

        return _SECRET.sub(substitute, value)


def _problems(
    exc: ValidationError,
    data: Any,
    lines: Mapping[KeyPath, int],
    origin: Callable[[KeyPath], KeyPath],
) -> list[ConfigProblem]:
    """Each validation error of `data`, at the file's key (`origin` of the
    data's key path) and line."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        kind = error["type"]
        path = _data_path(error["loc"], data, keep_absent_key=kind == "missing")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            path = (*path, "provider")
        path = origin(path)
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "union_tag_invalid":
            message = _unknown_provider(error.get("ctx", {}))
        elif kind == "union_tag_not_found":
            message = "Field required"
        else:
            message = error["msg"].removeprefix("Value error, ")
        problems.append(ConfigProblem(_line(lines, path), path, message))
    # A translated config can hold one file key twice (an MLflow endpoint's
    # model is also its traffic routes' target): one problem, said once.
    return list(dict.fromkeys(problems))


def _same_path(path: KeyPath) -> KeyPath:
    return path


def _line(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of `path`, or of its deepest ancestor in the file."""
    return next((lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in lines), None)


def _unknown_provider(context: Mapping[str, Any]) -> str:
    tag = str(context.get("tag", ""))
    known = sorted(name.strip("'") for name in str(context.get("expected_tags", "")).split(", "))
    guess = difflib.get_close_matches(tag, known, n=1)
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    return f"unknown provider {tag!r}{hint} (known: {', '.join(known)})"


def _data_path(loc: tuple[int | str, ...], data: Any, *, keep_absent_key: bool) -> KeyPath:
    """Pydantic's error location as a path in the YAML data: steps that are
    not in the data (a union's tag) are dropped, except a missing key."""
    path: list[str | int] = []
    node = data
    for i, step in enumerate(loc):
        if _has_step(node, step):
            node = node[step]
        elif not (keep_absent_key and i == len(loc) - 1):
            continue
        path.append(step)
    return tuple(path)


def _has_step(node: Any, step: int | str) -> bool:
    if isinstance(node, dict):
        return step in node
    return isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
