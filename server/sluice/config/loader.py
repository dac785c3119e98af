"""Load a config file strictly: every error names the file, line and key path.

YAML is composed into nodes first so each value keeps its line; secrets
(`{{ secrets.NAME }}`, from the sources `secrets:` declares, read first:
secrets.py) are resolved during that walk, where the line and key are still
known. Resolved secrets are registered for redaction. A missing secret is
reported by name, source and key, never by value, and stands in as a
placeholder so that validation still reports every other problem at once.

A config in MLflow AI Gateway's form is translated first (mlflow.py); errors
in the translated config are reported at the MLflow keys they came from.

What a file can cost is bounded before anything is built: at most
MAX_CONFIG_BYTES are read, and the composed nodes are counted as they would
be built, every alias expanded (one pass over the distinct nodes, so an
alias bomb is refused in linear time), against MAX_CONFIG_NODES. Composing
itself is linear in the file's size, but slow in pure Python (seconds for
megabytes), which is why a running server reloads in a subprocess
(isolated.py).
"""

from __future__ import annotations

import difflib
import hashlib
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
from sluice.config.secrets import SecretLookup, SecretNotResolvedError, SecretsConfig
from sluice.redaction import register_secret

_SECRET = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
DEFAULT_CONFIG = "default.yaml"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# Values (mappings, lists and scalars, keys included) once every alias is
# expanded: a 4 MiB file of routes holds about 400,000.
MAX_CONFIG_NODES = 1_000_000


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


@dataclass(frozen=True, slots=True)
class SecretReference:
    """A `{{ secrets.NAME }}` in the file, resolved or not."""

    name: str
    line: int
    path: KeyPath

    def describe(self, source: str) -> str:
        return f"{self.name:<24} {source}:{self.line}: {format_path(self.path)}"


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A config as read, before its secrets are registered for redaction
    (in the process that will use it)."""

    config: GatewayConfig
    secrets: tuple[str, ...]
    digest: str  # SHA-256 of the file's bytes, hex
    references: tuple[SecretReference, ...] = ()

    def register_secrets(self) -> GatewayConfig:
        for secret in self.secrets:
            register_secret(secret)
        return self.config


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    return read_config(path, environ).register_secrets()


def read_config(
    path: str | Path, environ: Mapping[str, str] | None = None, *, resolve_secrets: bool = True
) -> LoadedConfig:
    """The config in the file at `path`, read with bounds; ConfigError if
    it cannot be used. Without `resolve_secrets`, every secret is a
    placeholder: the structure, types and references are still checked."""
    source = str(path)
    data = read_bounded(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(source, [ConfigProblem(line, (), "not UTF-8 text")]) from None
    environ = os.environ if environ is None else environ
    digest = hashlib.sha256(data).hexdigest()
    return _read(text, source, environ, digest, resolve_secrets=resolve_secrets)


def read_bounded(path: str | Path) -> bytes:
    """The file's bytes, at most MAX_CONFIG_BYTES of them; ConfigError if
    it is larger or cannot be read."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem(None, (), exc.strerror or str(exc))]) from None
    if len(data) > MAX_CONFIG_BYTES:
        problem = f"the file is larger than {MAX_CONFIG_BYTES:,} bytes"
        raise ConfigError(str(path), [ConfigProblem(None, (), problem)])
    return data


def load_default_config() -> GatewayConfig:
    """The embedded config: mock routes, so Sluice runs offline out of the box."""
    text = resources.files("sluice.config").joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")
    return parse_config(text, f"<embedded {DEFAULT_CONFIG}>", os.environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> GatewayConfig:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return _read(text, source, environ, digest).register_secrets()


def _read(
    text: str, source: str, environ: Mapping[str, str], digest: str, *, resolve_secrets: bool = True
) -> LoadedConfig:
    root = _compose(text, source)
    reader = _NodeReader(_secret_lookup(root, environ) if resolve_secrets else None)
    data = reader.read(root, ())
    try:
        config = _validate(data, source, environ, reader)
    except ConfigError as error:
        # A value the walk could not read fails validation too: said once.
        unread = {problem.path for problem in reader.problems}
        more = [problem for problem in error.problems if problem.path not in unread]
        raise ConfigError(source, reader.problems + more) from None
    if reader.problems:
        raise ConfigError(source, reader.problems)
    return LoadedConfig(config, tuple(reader.secrets), digest, tuple(reader.references))


def _secret_lookup(root: yaml.Node, environ: Mapping[str, str]) -> SecretLookup | None:
    """The sources `secrets:` declares, read before the values that use
    them; None when they are invalid (validation then says why, and every
    secret stays a placeholder)."""
    section = None
    if isinstance(root, yaml.MappingNode):
        section = next((v for k, v in root.value if k.value == "secrets"), None)
    if section is None:
        return SecretLookup.of(SecretsConfig(), environ)
    reader = _NodeReader(None)
    data = reader.read(section, ())
    if reader.problems or reader.references:
        return None
    try:
        return SecretLookup.of(SecretsConfig.model_validate(data), environ)
    except ValidationError:
        return None


def _compose(text: str, source: str) -> yaml.Node:
    """The file's YAML nodes, refused when their expansion would exceed
    MAX_CONFIG_NODES."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _refuse_expansion(root, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigProblem(line, (), f"invalid YAML: {problem}")]) from None
    except RecursionError:
        raise ConfigError(source, [ConfigProblem(None, (), "nested too deeply")]) from None
    if root is None:
        raise ConfigError(source, [ConfigProblem(None, (), "the file is empty")])
    return root


def _refuse_expansion(root: yaml.Node, source: str) -> None:
    """Count the values `root` expands to, each distinct node once (its
    count remembered), so an alias bomb costs its size, not its expansion."""
    counts: dict[int, int] = {}

    def refused(node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(source, [ConfigProblem(node.start_mark.line + 1, (), message)])

    def count(node: yaml.Node) -> int:
        known = counts.get(id(node))
        if known is not None:
            if known < 0:
                raise refused(node, "an alias refers to a value that contains it")
            return known
        counts[id(node)] = -1  # being counted: met again only through a cycle
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(count(key) + count(value) for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(count(item) for item in node.value)
        if total > MAX_CONFIG_NODES:
            raise refused(node, f"more than {MAX_CONFIG_NODES:,} values once aliases expand")
        counts[id(node)] = total
        return total

    count(root)


def _validate(
    data: Any, source: str, environ: Mapping[str, str], reader: _NodeReader
) -> GatewayConfig:
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

    def __init__(self, lookup: SecretLookup | None) -> None:
        """Without a `lookup`, every secret is a placeholder."""
        self._lookup = lookup
        self._constructor = yaml.SafeLoader("")
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[ConfigProblem] = []
        self.secrets: list[str] = []
        self.references: list[SecretReference] = []

    def read(self, node: yaml.Node, path: KeyPath) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self._scalar(node, path)
        if isinstance(value, str) and "{{" in value:
            return self._resolve_secrets(value, path, node.start_mark.line + 1)
        return value

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            # A mapping or list as a key is refused unbuilt: it names nothing.
            key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.problems.append(ConfigProblem(line, path, "a key must be a string"))
                continue
            if key in result:
                self.problems.append(ConfigProblem(line, (*path, key), "key given twice"))
                continue
            self.lines[(*path, key)] = line
            result[key] = self.read(value_node, (*path, key))
            self.lines[(*path, key)] = line  # the key's line, not its value's
        return result

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        """The scalar's value; None, with a problem, when its tag cannot be
        read (an unknown tag, `!!int abc`)."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            problem = getattr(exc, "problem", None) or f"cannot read {node.tag}"
            self.problems.append(ConfigProblem(node.start_mark.line + 1, path, problem))
            return None

    def _resolve_secrets(self, value: str, path: KeyPath, line: int) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if path[:1] == ("secrets",):
                problem = "the secret sources cannot themselves come from a secret"
                self.problems.append(ConfigProblem(line, path, problem))
                return _placeholder(name)
            self.references.append(SecretReference(name, line, path))
            if self._lookup is None:
                return _placeholder(name)
            try:
                secret = self._lookup.resolve(name)
            except SecretNotResolvedError as exc:
                self.problems.append(ConfigProblem(line, path, str(exc)))
                return _placeholder(name)
            self.secrets.append(secret)
            return secret

        return _SECRET.sub(substitute, value)


def _placeholder(name: str) -> str:
    """What an unresolved secret reads as: a plain word, valid wherever a
    key, token or URL password is."""
    return f"unresolved-secret-{name}"


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
