"""MLflow AI Gateway configs, translated into Sluice's own form before validation.

MLflow's gateway (`mlflow deployments start-server`, `mlflow gateway start`)
lists `endpoints:`, each with an `endpoint_type`, a `model` whose provider keys
sit under `model.config` (`openai_api_key`, `aws_config`...), and an optional
`limit: {calls, renewal_period}`; top-level `routes:` split traffic between
endpoints (`task_type`, `destinations: [{name, traffic_percentage}]`). Before
MLflow 2.9 the endpoints were themselves `routes:`, typed by `route_type` (in
MLflow 2.5's first configs, `type`, and the file could be the bare list of
routes). Sampling defaults (`temperature`, `max_tokens`, `top_p`) may sit in
`model.config`; they become the route's `config:`.

Each endpoint becomes a Sluice route and each traffic route a weighted route
over its destinations' models. MLflow's own rules are checked here, on
MLflow's keys; the rest (value types, patterns, what a provider answers) is
left to Sluice's schema. Every key made here remembers the MLflow key it came
from (`Translation.origin`), so a schema error still names the MLflow file's
key and line.

API keys follow MLflow's rules: `$NAME` is environment variable NAME, the path
of an existing file is that file's content, anything else is the key itself.
Each key is registered for redaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeGuard

from sluice.config.keypaths import KeyPath
from sluice.providers.registry import PROVIDERS
from sluice.redaction import register_secret

Problem = tuple[KeyPath, str]


@dataclass(frozen=True, slots=True)
class Translation:
    """A Sluice config made from an MLflow one."""

    config: dict[str, Any]
    # Sluice key path -> the MLflow key path it was made from.
    origins: Mapping[KeyPath, KeyPath]
    # (MLflow key path, message): what could not be translated.
    problems: list[Problem]

    def origin(self, path: KeyPath) -> KeyPath:
        """The MLflow key a Sluice key path stands for. Steps below the deepest
        key made here (a key the schema found missing, a section passed
        through) are kept as they are."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.origins:
                return (*self.origins[path[:n]], *path[n:])
        return path


def is_mlflow_config(data: object) -> bool:
    """MLflow's form has top-level `endpoints:`, or (before MLflow 2.9)
    `routes:` whose models hold a `config:` mapping, which a Sluice model
    never has; the earliest form is that list of routes alone."""
    if isinstance(data, list):
        return _has_model_config(data)
    if not isinstance(data, dict):
        return False
    routes = data.get("routes")
    return "endpoints" in data or (isinstance(routes, list) and _has_model_config(routes))


def _has_model_config(routes: list[Any]) -> bool:
    return any(
        isinstance(route, dict)
        and isinstance(route.get("model"), dict)
        and "config" in route["model"]
        for route in routes
    )


def translate(data: Mapping[str, Any] | list[Any], environ: Mapping[str, str]) -> Translation:
    translator = _Translator(environ)
    config = translator.config(data)
    return Translation(config, translator.origins, translator.problems)


@dataclass(frozen=True, slots=True)
class _Key:
    """How a key of an MLflow `model.config` becomes a key of Sluice's `model:`."""

    field: str | None  # None: read by the provider's own rule, or accepted and unused
    secret: bool = False
    required: bool = False
    refused: str | None = None  # why Sluice cannot honour it


@dataclass(frozen=True, slots=True)
class _Model:
    """A Sluice `model:` being made from an MLflow `model.config` at `at`."""

    settings: dict[str, Any]
    config: Mapping[str, Any]
    at: KeyPath
    out: KeyPath


@dataclass(frozen=True, slots=True)
class _Rules:
    """How an MLflow provider's `model.config` is translated."""

    keys: Mapping[str, _Key]
    # Route types Sluice's provider answers differently from MLflow's, and why.
    refused: Mapping[str, str] = field(default_factory=dict)
    # The provider's own rules, run once the keys are copied.
    finish: Callable[[_Translator, _Model], None] | None = None


@dataclass(frozen=True, slots=True)
class _Provider:
    sluice: str
    rules: _Rules


@dataclass(slots=True)
class _Endpoint:
    route: dict[str, Any]  # the Sluice route made from it
    route_type: object
    out: KeyPath  # where that route is in the Sluice config
    # The sampling defaults of its model.config, and where they are in the MLflow file.
    sampling: Mapping[str, Any] = field(default_factory=dict)
    sampling_at: KeyPath = ()


# How an endpoint names its type: since MLflow 2.9, before, and in MLflow 2.5's first configs.
_TYPE_KEYS = ("endpoint_type", "route_type", "type")
_ENDPOINT_KEYS = ("name", *_TYPE_KEYS, "model", "limit")
# `config_model` names a plugin provider's config class.
_MODEL_KEYS = ("provider", "name", "config", "config_model")
# Sampling defaults MLflow documents in `model.config`: Sluice's route `config:` keys.
_SAMPLING_KEYS = ("temperature", "max_tokens", "top_p")
# `key` names a limit in MLflow's limits API; its server applies a config's
# limit without it.
_LIMIT_KEYS = ("calls", "renewal_period", "key")
_TRAFFIC_ROUTE_KEYS = ("name", "task_type", "destinations", "routing_strategy")
_DESTINATION_KEYS = ("name", "traffic_percentage")

# MLflow's renewal periods, as its `limits` library parses `<calls>/<period>`.
_PERIOD = re.compile(r"^\s*(\d+)?\s*(second|minute|hour|day|month|year)s?\s*$", re.IGNORECASE)
# The `limits` library counts a month as 30 days and a year as 12 months.
_DAYS = {"month": 30, "year": 360}


class _Translator:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.origins: dict[KeyPath, KeyPath] = {}
        self.problems: list[Problem] = []

    def config(self, data: Mapping[str, Any] | list[Any]) -> dict[str, Any]:
        config: dict[str, Any] = {}
        routes: list[dict[str, Any]] = []
        prefix: KeyPath
        if isinstance(data, list):  # MLflow 2.5's first form: the list of routes itself
            endpoints_key, items, prefix = "routes", data, ()
            self.put(config, (), "routes", routes, ())
        else:
            endpoints_key = "endpoints" if "endpoints" in data else "routes"
            for key, value in data.items():
                if key not in ("endpoints", "routes"):
                    # Sluice's own sections (server, state, auth, prices) may sit beside MLflow's.
                    self.put(config, (), key, value, (key,))
            self.put(config, (), "routes", routes, (endpoints_key,))
            items = self._list(data, (), endpoints_key, required=True)
            prefix = (endpoints_key,)
        names: set[str] = set()
        endpoints: dict[str, _Endpoint] = {}
        for i, item in enumerate(items):
            at: KeyPath = (*prefix, i)
            endpoint = self._endpoint(item, at, ("routes", len(routes)))
            routes.append(endpoint.route)
            if (name := self._unique_name(item, at, names)) is not None:
                endpoints[name] = endpoint
        if endpoints_key == "endpoints" and isinstance(data, dict):
            for r, item in enumerate(self._list(data, (), "routes", required=False)):
                at = ("routes", r)
                routes.append(self._traffic_route(item, at, ("routes", len(routes)), endpoints))
                self._unique_name(item, at, names)
        return config

    def put(
        self, target: dict[str, Any], out: KeyPath, key: str, value: Any, origin: KeyPath
    ) -> None:
        """Set a Sluice key, remembering the MLflow key it came from."""
        target[key] = value
        self.origins[(*out, key)] = origin

    def problem(self, at: KeyPath, message: str) -> None:
        self.problems.append((at, message))

    def section(
        self, parent: Mapping[str, Any], at: KeyPath, key: str, allowed: Collection[str] | None
    ) -> dict[str, Any] | None:
        """`parent[key]`, required to be a mapping of `allowed` keys (any keys
        when None)."""
        value = parent.get(key)
        if value is None:
            self.problem((*at, key), "Field required")
            return None
        return value if self._mapping(value, (*at, key), allowed) else None

    def copy_keys(
        self, m: _Model, values: Mapping[str, Any], at: KeyPath, keys: Mapping[str, _Key]
    ) -> None:
        """Copy the keys of `values` (at `at`) into the Sluice model as `keys` say."""
        for key, value in values.items():
            spec, path = keys.get(key), (*at, key)
            if spec is None:
                self.problem(path, "unknown key")
            elif spec.refused is not None:
                self.problem(path, spec.refused)
            elif value is not None and spec.field is not None:
                resolved = self.secret(value, path) if spec.secret else value
                if resolved is not None:
                    self.put(m.settings, m.out, spec.field, resolved, path)
        for key, spec in keys.items():
            if spec.required and values.get(key) is None:
                self.problem((*at, key), "Field required")

    def _mapping(
        self, value: object, at: KeyPath, allowed: Collection[str] | None
    ) -> TypeGuard[dict[str, Any]]:
        if not isinstance(value, dict):
            self.problem(at, "Input should be a valid dictionary")
            return False
        for key in value:
            if allowed is not None and key not in allowed:
                self.problem((*at, key), "unknown key")
        return True

    def _list(
        self, parent: Mapping[str, Any], at: KeyPath, key: str, *, required: bool
    ) -> list[Any]:
        value = parent.get(key)
        if value is None:
            if required:
                self.problem((*at, key), "Field required")
            return []
        if not isinstance(value, list):
            self.problem((*at, key), "Input should be a valid list")
            return []
        return value

    def _unique_name(self, item: object, at: KeyPath, names: set[str]) -> str | None:
        """An endpoint's or traffic route's name: each names one route, across both lists."""
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            return None
        if name in names:
            self.problem((*at, "name"), f"name {name!r} is used twice")
        names.add(name)
        return name

    def _endpoint(self, item: object, at: KeyPath, out: KeyPath) -> _Endpoint:
        route: dict[str, Any] = {}
        endpoint = _Endpoint(route, None, out)
        if not self._mapping(item, at, _ENDPOINT_KEYS):
            return endpoint
        self.origins[out] = at
        if "name" in item:
            self.put(route, out, "name", item["name"], (*at, "name"))
        # Some MLflow versions took more than one name; one endpoint gives one.
        given = [key for key in _TYPE_KEYS if key in item]
        if len(given) > 1:
            self.problem((*at, given[-1]), f"give {' or '.join(given)}, not both")
        elif not given:
            self.problem((*at, "endpoint_type"), "Field required")
        else:
            endpoint.route_type = item[given[0]]
            self.put(route, out, "route_type", endpoint.route_type, (*at, given[0]))
        model = self.section(item, at, "model", _MODEL_KEYS)
        if model is not None:
            settings, rules = self._model(model, (*at, "model"), (*out, "model"))
            self.put(route, out, "model", settings, (*at, "model"))
            self._sampling(endpoint, model, (*at, "model", "config"))
            route_type = endpoint.route_type
            if rules is not None and isinstance(route_type, str) and route_type in rules.refused:
                self.problem((*at, given[0]), rules.refused[route_type])
        if item.get("limit") is not None:
            requests = self._limit(item["limit"], (*at, "limit"))
            if requests is not None:
                self.put(route, out, "limits", {"requests": requests}, (*at, "limit"))
                self.origins[(*out, "limits", "requests")] = (*at, "limit")
        return endpoint

    def _model(
        self, model: Mapping[str, Any], at: KeyPath, out: KeyPath
    ) -> tuple[dict[str, Any], _Rules | None]:
        settings: dict[str, Any] = {}
        spec = self._provider(model, at)
        if spec is None:
            return settings, None
        self.put(settings, out, "provider", spec.sluice, (*at, "provider"))
        if "name" in model:
            self.put(settings, out, "name", model["name"], (*at, "name"))
        if "config_model" in model:
            self.problem((*at, "config_model"), "only a plugin provider has a config_model")
        config = self.section(model, at, "config", None)
        if config is not None:
            m = _Model(settings, config, (*at, "config"), out)
            provider_keys = {k: v for k, v in config.items() if k not in _SAMPLING_KEYS}
            self.copy_keys(m, provider_keys, m.at, spec.rules.keys)
            if spec.rules.finish is not None:
                spec.rules.finish(self, m)
        return settings, spec.rules

    def _provider(self, model: Mapping[str, Any], at: KeyPath) -> _Provider | None:
        name = model.get("provider")
        if not isinstance(name, str):
            self.problem(
                (*at, "provider"),
                "Field required" if name is None else "Input should be a valid string",
            )
            return None
        # MLflow matches provider names ignoring case, and `-` and `_` alike.
        known = name.lower().replace("_", "-")
        spec = _PROVIDERS.get(known)
        if spec is None:
            if known.startswith("plugin:"):
                known = "plugin:"
            reason = _NO_EQUIVALENT.get(known, f"supported: {', '.join(sorted(_PROVIDERS))}")
            self.problem(
                (*at, "provider"), f"provider {name!r} has no Sluice equivalent ({reason})"
            )
        return spec

    def _sampling(self, endpoint: _Endpoint, model: Mapping[str, Any], at: KeyPath) -> None:
        """The sampling defaults of `model.config` (at `at`): the route's `config:`."""
        config = model.get("config")
        if not isinstance(config, dict):
            return
        sampling = {key: config[key] for key in _SAMPLING_KEYS if config.get(key) is not None}
        if sampling:
            self._put_sampling(endpoint.route, endpoint.out, sampling, at)
            endpoint.sampling, endpoint.sampling_at = sampling, at

    def _put_sampling(
        self, route: dict[str, Any], out: KeyPath, sampling: Mapping[str, Any], at: KeyPath
    ) -> None:
        self.put(route, out, "config", dict(sampling), at)
        for key in sampling:
            self.origins[(*out, "config", key)] = (*at, key)

    def _shared_sampling(
        self, route: dict[str, Any], out: KeyPath, at: KeyPath, used: list[_Endpoint]
    ) -> None:
        """A traffic route samples as its destinations' endpoints do. Sluice's
        sampling defaults are the route's, so those endpoints must agree."""
        if not used:
            return
        first = used[0]
        if any(endpoint.sampling != first.sampling for endpoint in used[1:]):
            self.problem(
                (*at, "destinations"),
                "their endpoints set different temperature, max_tokens or top_p; "
                "a Sluice route has one set of defaults",
            )
        elif first.sampling:
            self._put_sampling(route, out, first.sampling, first.sampling_at)

    def _limit(self, limit: object, at: KeyPath) -> str | None:
        """MLflow's `limit` as a Sluice rate. MLflow counts calls per client
        address; a Sluice route limit counts every caller's calls (per-caller
        limits are `auth.keys[].limits`)."""
        if not self._mapping(limit, at, _LIMIT_KEYS):
            return None
        calls, period = limit.get("calls"), limit.get("renewal_period")
        calls_valid = isinstance(calls, int) and not isinstance(calls, bool) and calls > 0
        match = _PERIOD.match(period) if isinstance(period, str) else None
        if calls is None:
            self.problem((*at, "calls"), "Field required")
        elif not calls_valid:
            self.problem((*at, "calls"), "Input should be a whole number above 0")
        if period is None:
            self.problem((*at, "renewal_period"), "Field required")
        elif match is None:
            self.problem(
                (*at, "renewal_period"),
                "Input should be like 'minute', '10 seconds', 'hour', 'day', 'month' or 'year'",
            )
        if not calls_valid or match is None:
            return None
        count, unit = int(match.group(1) or 1), match.group(2).lower()
        if unit in _DAYS:
            count, unit = count * _DAYS[unit], "day"
        return f"{calls}/{unit}" if count == 1 else f"{calls}/{count} {unit}s"

    def _traffic_route(
        self, item: object, at: KeyPath, out: KeyPath, endpoints: Mapping[str, _Endpoint]
    ) -> dict[str, Any]:
        """A traffic route: a weighted route over its destinations' models."""
        route: dict[str, Any] = {}
        if not self._mapping(item, at, _TRAFFIC_ROUTE_KEYS):
            return route
        self.origins[out] = at
        if "name" in item:
            self.put(route, out, "name", item["name"], (*at, "name"))
        task_type = item.get("task_type")
        if task_type is None:
            self.problem((*at, "task_type"), "Field required")
        self.put(route, out, "route_type", task_type, (*at, "task_type"))
        if item.get("routing_strategy", "TRAFFIC_SPLIT") != "TRAFFIC_SPLIT":
            self.problem((*at, "routing_strategy"), "Input should be 'TRAFFIC_SPLIT'")
        self.put(route, out, "strategy", "weighted", at)
        targets: list[dict[str, Any]] = []
        self.put(route, out, "targets", targets, (*at, "destinations"))
        destinations = self._list(item, at, "destinations", required=True)
        used: list[_Endpoint] = []
        for d, destination in enumerate(destinations):
            destination_at = (*at, "destinations", d)
            found = self._destination(destination, destination_at, task_type, endpoints)
            if found is None:
                continue
            endpoint, weight = found
            used.append(endpoint)
            target_out = (*out, "targets", len(targets))
            targets.append({"model": endpoint.route.get("model", {}), "weight": weight})
            self.origins[target_out] = destination_at
            self.origins[(*target_out, "weight")] = (*destination_at, "traffic_percentage")
            self._copy_origins((*endpoint.out, "model"), (*target_out, "model"))
        total = sum(target["weight"] for target in targets)
        if destinations and len(targets) == len(destinations) and total != 100:
            self.problem((*at, "destinations"), f"traffic percentages add up to {total}, not 100")
        self._shared_sampling(route, out, at, used)
        return route

    def _destination(
        self, item: object, at: KeyPath, task_type: object, endpoints: Mapping[str, _Endpoint]
    ) -> tuple[_Endpoint, int] | None:
        if not self._mapping(item, at, _DESTINATION_KEYS):
            return None
        name, weight = item.get("name"), item.get("traffic_percentage")
        endpoint = endpoints.get(name) if isinstance(name, str) else None
        if name is None:
            self.problem((*at, "name"), "Field required")
        elif endpoint is None:
            self.problem((*at, "name"), f"{name!r} is not the name of an endpoint")
        elif endpoint.route_type not in (None, task_type):  # None: reported with the endpoint
            self.problem(
                (*at, "name"),
                f"endpoint {name!r} is {endpoint.route_type}, not the route's {task_type}",
            )
        if weight is None:
            self.problem((*at, "traffic_percentage"), "Field required")
        elif isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            self.problem(
                (*at, "traffic_percentage"), "Input should be a whole number from 0 to 100"
            )
            return None
        return (endpoint, weight) if endpoint is not None and isinstance(weight, int) else None

    def _copy_origins(self, source: KeyPath, target: KeyPath) -> None:
        """A destination's model is its endpoint's, and so are its keys' origins."""
        for path, origin in list(self.origins.items()):
            if path[: len(source)] == source:
                self.origins[(*target, *path[len(source) :])] = origin

    def secret(self, value: object, at: KeyPath) -> str | None:
        """An API key as MLflow reads one: `$NAME`, a key file, or the key."""
        if not isinstance(value, str):
            self.problem(at, "Input should be a valid string: the key, $ENV_VAR or a key file")
            return None
        if value.startswith("$"):
            secret = self.environ.get(value[1:], "")
            if not secret:
                self.problem(at, f"environment variable {value[1:]} is not set")
                return None
        elif _is_file(value):
            try:
                # Stripped: a newline ending the file is no part of the key.
                secret = Path(value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problem(at, f"the key file cannot be read: {exc.strerror or 'error'}")
                return None
            except UnicodeDecodeError:
                self.problem(at, "the key file cannot be read: it is not UTF-8 text")
                return None
            if not secret:
                self.problem(at, "the key file is empty")
                return None
        else:
            secret = value
        register_secret(secret)
        return secret


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # a name too long for the OS, a NUL byte
        return False


# MLflow's openai_api_type: the Azure flavours and how each sends the key.
_AZURE_AUTH = {"azure": "api-key", "azuread": "bearer"}
_AZURE_REQUIRED = ("openai_api_base", "openai_deployment_name", "openai_api_version")


def _openai(t: _Translator, m: _Model) -> None:
    """OpenAI itself, or Azure OpenAI when openai_api_type says so; MLflow's
    rules for which keys each takes."""
    type_at = (*m.at, "openai_api_type")
    api_type = m.config.get("openai_api_type") or "openai"
    if not isinstance(api_type, str) or api_type.lower() not in ("openai", *_AZURE_AUTH):
        t.problem(type_at, "Input should be 'openai', 'azure' or 'azuread'")
        return
    api_type = api_type.lower()
    if api_type != "openai":
        _azure_openai(t, m, api_type, type_at)
        return
    if m.config.get("openai_deployment_name") is not None:
        t.problem((*m.at, "openai_deployment_name"), "only with openai_api_type azure or azuread")
    # MLflow sends OpenAI itself no API version.
    m.settings.pop("api_version", None)


def _azure_openai(t: _Translator, m: _Model, api_type: str, type_at: KeyPath) -> None:
    """Azure OpenAI, the `api_type` flavour, as `type_at` says."""
    if m.config.get("openai_organization") is not None:
        t.problem((*m.at, "openai_organization"), "only with openai_api_type openai")
    for key in _AZURE_REQUIRED:
        if m.config.get(key) is None:
            t.problem((*m.at, key), f"Field required with openai_api_type {api_type}")
    t.put(m.settings, m.out, "provider", "azure_openai", type_at)
    t.put(m.settings, m.out, "auth", _AZURE_AUTH[api_type], type_at)


def _azure_provider(api_type: str) -> Callable[[_Translator, _Model], None]:
    """`provider: azure` or `azuread`: Azure OpenAI with MLflow's openai_* keys,
    the flavour named by the provider."""

    def finish(t: _Translator, m: _Model) -> None:
        type_at = (*m.at, "openai_api_type")
        given = m.config.get("openai_api_type")
        if given is not None and str(given).lower() != api_type:
            t.problem(type_at, f"provider {api_type} is openai_api_type {api_type}")
            return
        _azure_openai(t, m, api_type, (*m.at[:-1], "provider"))

    return finish


def _anthropic(t: _Translator, m: _Model) -> None:
    """MLflow before 2.8 took a base ending in /v1 (its example's); Sluice's
    base is the host, to which /v1/messages is appended."""
    base = m.settings.get("api_base")
    if isinstance(base, str):
        m.settings["api_base"] = base.rstrip("/").removesuffix("/v1")


def _cohere(t: _Translator, m: _Model) -> None:
    """Cohere's key was `api_key` before MLflow named it `cohere_api_key`."""
    given = [key for key in ("cohere_api_key", "api_key") if m.config.get(key) is not None]
    if not given:
        t.problem((*m.at, "cohere_api_key"), "Field required")
    elif len(given) > 1:
        t.problem((*m.at, "api_key"), "give cohere_api_key or api_key, not both")


def _ollama(t: _Translator, m: _Model) -> None:
    """MLflow calls Ollama's OpenAI-compatible /v1 and sends no key when it is
    `ollama` (its default, which is no secret to redact); Sluice's ollama
    speaks the native API at the server root."""
    base = m.settings.get("api_base")
    if isinstance(base, str):
        m.settings["api_base"] = base.rstrip("/").removesuffix("/v1")
    at = (*m.at, "api_key")
    value = m.config.get("api_key")
    if value is not None and value != "ollama":
        key = t.secret(value, at)
        if key is not None:
            t.put(m.settings, m.out, "api_key", key, at)


def _vertex_ai(t: _Translator, m: _Model) -> None:
    if m.config.get("api_key") is None and m.config.get("vertex_credentials") is None:
        t.problem((*m.at, "api_key"), _VERTEX_TOKEN)


# Sluice does not mint Google tokens (from a service account or the
# environment's Application Default Credentials, as MLflow does).
_VERTEX_TOKEN = (
    "Sluice does not fetch Google credentials: give api_key, an OAuth access token "
    "($ENV_VAR, e.g. from gcloud auth print-access-token)"
)

_AWS_KEYS: Mapping[str, _Key] = MappingProxyType(
    {
        "aws_region": _Key("region"),
        # MLflow reads these as given; its docs write them as $ENV_VAR, so they
        # are resolved like API keys.
        "aws_access_key_id": _Key("aws_access_key_id", secret=True),
        "aws_secret_access_key": _Key("aws_secret_access_key", secret=True),
        "aws_session_token": _Key("aws_session_token", secret=True),
        "aws_role_arn": _Key(
            None,
            refused="Sluice does not assume roles: give aws_access_key_id and "
            "aws_secret_access_key, or neither for the standard AWS chain "
            "(environment, profile, container or instance role)",
        ),
        "session_length_seconds": _Key(None),  # MLflow's role session: no role, no session
    }
)


def _bedrock(t: _Translator, m: _Model) -> None:
    at = (*m.at, "aws_config")
    aws = t.section(m.config, m.at, "aws_config", None)
    if aws is None:
        return
    t.copy_keys(m, aws, at, _AWS_KEYS)
    if "region" not in m.settings:
        # Where boto3, which MLflow signs with, finds a region not given.
        region = t.environ.get("AWS_REGION") or t.environ.get("AWS_DEFAULT_REGION")
        if region:
            t.put(m.settings, m.out, "region", region, at)
        else:
            t.problem((*at, "aws_region"), "Field required (or set AWS_REGION)")


_API_KEY = _Key("api_key", secret=True, required=True)


def _databricks(t: _Translator, m: _Model) -> None:
    """MLflow's Databricks provider: the workspace `host` (or DATABRICKS_HOST,
    as the Databricks SDK reads it) and a `token` (or DATABRICKS_TOKEN)."""
    host = m.settings.get("api_base") or t.environ.get("DATABRICKS_HOST")
    if not host:
        t.problem((*m.at, "host"), "Field required (or set DATABRICKS_HOST)")
        return
    base = str(host).rstrip("/")
    if not base.endswith("/serving-endpoints"):
        base += "/serving-endpoints"
    t.put(m.settings, m.out, "api_base", base, (*m.at, "host"))
    if "api_key" not in m.settings and (token := t.environ.get("DATABRICKS_TOKEN")):
        register_secret(token)
        t.put(m.settings, m.out, "api_key", token, (*m.at, "token"))


_DATABRICKS = _Rules(
    {
        "host": _Key("api_base"),
        "token": _Key("api_key", secret=True),
        "client_id": _Key(None, refused="Sluice does not sign in with OAuth: give a token"),
        "client_secret": _Key(None, refused="Sluice does not sign in with OAuth: give a token"),
    },
    finish=_databricks,
)
_BEDROCK = _Rules({"aws_config": _Key(None)}, finish=_bedrock)
_OPENAI_KEYS: Mapping[str, _Key] = MappingProxyType(
    {
        "openai_api_key": _API_KEY,
        "openai_api_type": _Key(None),
        "openai_api_base": _Key("api_base"),
        "openai_api_version": _Key("api_version"),
        "openai_deployment_name": _Key("deployment"),
        "openai_organization": _Key("organization"),
    }
)
# MLflow 3's OpenAI-compatible providers (groq, deepseek, xai, openrouter):
# `api_key`, and `api_base` over the provider's default.
_OPENAI_COMPATIBLE = _Rules({"api_key": _API_KEY, "api_base": _Key("api_base")})

# How the `model.config` of each MLflow provider becomes Sluice keys, where
# that is more than its `<name>_api_key` (the rule of the others).
_RULES: Mapping[str, _Rules] = MappingProxyType(
    {
        "openai": _Rules(_OPENAI_KEYS, finish=_openai),
        "anthropic": _Rules(
            {
                "anthropic_api_key": _API_KEY,
                "anthropic_version": _Key("version"),
                "anthropic_api_base": _Key("api_base"),  # MLflow before 2.8
            },
            finish=_anthropic,
        ),
        "cohere": _Rules(
            {
                "cohere_api_key": _Key("api_key", secret=True),
                "api_key": _Key("api_key", secret=True),  # MLflow 2.5
            },
            finish=_cohere,
        ),
        "mistral": _Rules(
            {"mistral_api_key": _API_KEY},
            refused={
                "llm/v1/completions": "MLflow sends Mistral completions to its chat API, "
                "Sluice's mistral completions are fill-in-the-middle (codestral): "
                "use endpoint_type llm/v1/chat"
            },
        ),
        "huggingface-text-generation-inference": _Rules(
            {"hf_server_url": _Key("api_base", required=True)}
        ),
        "bedrock": _BEDROCK,
        "amazon-bedrock": _BEDROCK,
        "mlflow-model-serving": _Rules({"model_server_url": _Key("api_base", required=True)}),
        "databricks": _DATABRICKS,
        "databricks-model-serving": _DATABRICKS,
    }
)

# MLflow providers whose Sluice provider carries no MLflow name of its own:
# MLflow 3 added them with keys of another scheme, or Sluice's provider of
# that name speaks another API of the service.
_MORE_PROVIDERS: Mapping[str, _Provider] = MappingProxyType(
    {
        "azure": _Provider("azure_openai", _Rules(_OPENAI_KEYS, finish=_azure_provider("azure"))),
        "azuread": _Provider(
            "azure_openai", _Rules(_OPENAI_KEYS, finish=_azure_provider("azuread"))
        ),
        "groq": _Provider("groq", _OPENAI_COMPATIBLE),
        "deepseek": _Provider("deepseek", _OPENAI_COMPATIBLE),
        "xai": _Provider("xai", _OPENAI_COMPATIBLE),
        "openrouter": _Provider("openrouter", _OPENAI_COMPATIBLE),
        "ollama": _Provider(
            "ollama",
            _Rules(
                {"api_key": _Key(None), "api_base": _Key("api_base")},
                finish=_ollama,
            ),
        ),
        "vertex-ai": _Provider(
            "vertex_ai",
            _Rules(
                {
                    "vertex_project": _Key("project", required=True),
                    "vertex_location": _Key("location"),
                    "vertex_credentials": _Key(None, refused=_VERTEX_TOKEN),
                    # Sluice's own: Vertex AI's access token.
                    "api_key": _Key("api_key", secret=True),
                },
                finish=_vertex_ai,
            ),
        ),
    }
)

# MLflow provider -> the Sluice provider standing in for it (as the provider
# settings classes name themselves) and its rules.
_PROVIDERS: Mapping[str, _Provider] = MappingProxyType(
    {
        **{
            mlflow: _Provider(sluice, _RULES.get(mlflow) or _Rules({f"{mlflow}_api_key": _API_KEY}))
            for sluice, settings in PROVIDERS.items()
            for mlflow in settings.mlflow_aliases(sluice)
        },
        **_MORE_PROVIDERS,
    }
)

# What to use instead of a gateway in front of other providers.
_GATEWAY = (
    "a gateway in front of other providers: configure those providers in Sluice, "
    "or call {what} with provider openai and openai_api_base"
)
# An OpenAI-compatible service.
_COMPATIBLE = "an OpenAI-compatible service: use provider openai with openai_api_base"

# MLflow providers Sluice cannot stand in for, and what to do instead.
_NO_EQUIVALENT = {
    "palm": "Google retired the PaLM API, use provider gemini",
    "ai21labs": "AI21 retired the Jurassic-2 API MLflow calls; its Jamba models are on "
    "Amazon Bedrock (provider bedrock) or " + _COMPATIBLE,
    "mosaicml": "MosaicML's API became Databricks Foundation Model APIs, "
    "an OpenAI-compatible service: use provider openai with openai_api_base "
    "https://<workspace>/serving-endpoints",
    "mosaicai": "Databricks Foundation Model APIs are "
    "an OpenAI-compatible service: use provider openai with openai_api_base "
    "https://<workspace>/serving-endpoints",
    "litellm": _GATEWAY.format(what="the LiteLLM proxy"),
    "portkey": _GATEWAY.format(what="Portkey's https://api.portkey.ai/v1"),
    "sap-ai-core": "Sluice does not speak SAP AI Core's deployments and token flow; "
    "configure the model's own provider (openai, anthropic, gemini, vertex_ai, bedrock)",
    "typesafe": "MLflow only passes TypeSafe System One's own API through; Sluice serves "
    "chat, completions and embeddings: call TypeSafe directly",
    "clarifai": "Clarifai's models are "
    + _COMPATIBLE
    + " https://api.clarifai.com/v2/ext/openai/v1",
    "anyscale": "Anyscale Endpoints closed; for the open models it served, "
    "an OpenAI-compatible service (vLLM, Together...): use provider openai with "
    "openai_api_base",
    "plugin:": "Sluice runs no MLflow plugins; for " + _COMPATIBLE,
}
