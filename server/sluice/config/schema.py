"""The config file's schema. Unknown keys are errors (StrictModel)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sluice.config.periods import Rate, parse_period
from sluice.config.secrets import SecretsConfig
from sluice.domain import GenerationParams, Operation
from sluice.listeners import check_address
from sluice.providers.bounds import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    MAX_CONFIGURABLE_BYTES,
)
from sluice.providers.features import Feature
from sluice.providers.registry import ModelSettings
from sluice.providers.settings import StrictModel

ROUTE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
FEEDBACK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class GenerationDefaults(StrictModel):
    """A route's `config:`: default generation parameters a request may override."""

    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, gt=0)
    stop: list[str] = Field(default_factory=list)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    reasoning_budget_tokens: int | None = Field(default=None, gt=0)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def params(self) -> GenerationParams:
        return GenerationParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(self.stop),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            reasoning_budget_tokens=self.reasoning_budget_tokens,
        )


FailurePolicy = Literal["fail_open", "fail_closed"]


def _rate(value: object) -> object:
    return Rate.parse(value) if isinstance(value, str) else value


def _period(value: object) -> object:
    return parse_period(value) if isinstance(value, str) else value


def _workers(value: object) -> object:
    """One message for a bad count, whichever way it is wrong."""
    if value == "auto" or (type(value) is int and value >= 1):
        return value
    raise ValueError("a number of at least 1, or auto")


# `sluice serve --workers` takes the same.
WorkerCount = Annotated[int | Literal["auto"], BeforeValidator(_workers)]
# `100/minute`, `5000/10 seconds`...
RateText = Annotated[Rate, BeforeValidator(_rate)]
# `minute`, `10 seconds`, `day`... as seconds
PeriodText = Annotated[float, BeforeValidator(_period)]


class LimitsConfig(StrictModel):
    """Limits of a route, or of an API key across its routes."""

    requests: RateText | None = None
    # Input + output tokens, charged from real usage when a stream ends.
    tokens: RateText | None = None
    # Streams in flight at once.
    concurrent: int | None = Field(default=None, gt=0)
    # When the shared state cannot answer: let calls through, or refuse them.
    failure_policy: FailurePolicy = "fail_open"


class CacheNamespace(StrictModel):
    """Cache entries kept apart per value of a request metadata key."""

    metadata: str = Field(min_length=1)


class SemanticCacheConfig(StrictModel):
    """A route's semantic cache (pipeline/semantic_cache.py): on an exact
    miss, the nearest stored answer to a similar question."""

    # An llm/v1/embeddings route of this config, called as the caller.
    embeddings_route: str = Field(pattern=ROUTE_NAME_PATTERN)
    # The least cosine similarity that is a hit.
    threshold: float = Field(ge=0, le=1)
    # What is embedded: the last user message (the earlier ones must match
    # exactly), or the whole conversation's text.
    scope: Literal["last_user_message", "conversation"] = "last_user_message"
    # Entries in one replica's index; unset: the cache's `max_entries`.
    max_entries: int | None = Field(default=None, gt=0)


class CacheConfig(StrictModel):
    """A route's response cache."""

    ttl: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=1000, gt=0)
    # Cache answers sampled with temperature > 0 (by default they are not).
    allow_temperature: bool = False
    # Concurrent identical misses share one upstream call.
    single_flight: bool = False
    # Keep entries apart per API key (`key`) or per a metadata value.
    namespace: Literal["key"] | CacheNamespace | None = None
    # When the shared state cannot answer: call upstream uncached, or refuse.
    failure_policy: FailurePolicy = "fail_open"
    semantic: SemanticCacheConfig | None = None


class TimeoutsConfig(StrictModel):
    """Seconds; unset means no bound beyond the caller's own deadline, which
    always wins."""

    connect: float | None = Field(default=None, gt=0)
    # From sending the request to the first content chunk.
    first_token: float | None = Field(default=None, gt=0)
    # Between two chunks of a stream.
    idle: float | None = Field(default=None, gt=0)
    # The whole attempt.
    total: float | None = Field(default=None, gt=0)


class StreamConfig(StrictModel):
    """How a target's stream is written to the caller (coalesce.py)."""

    # Deltas ready together leave in one message; false: one message per
    # upstream delta, whatever it costs.
    coalesce: bool = True
    # Wait up to this long after a delta for more to join it (latency for
    # CPU); 0: never wait.
    max_delay_ms: int = Field(default=0, ge=0, le=50)


# The most of a unary upstream body (embeddings) held, and of one stream event.
ResponseBytes = Annotated[int, Field(ge=1024, le=MAX_CONFIGURABLE_BYTES)]
EventBytes = Annotated[int, Field(ge=1024, le=MAX_CONFIGURABLE_BYTES)]


class PromptConfig(StrictModel):
    """A variant's system prompt (variants.py): put before the caller's
    system messages (`prepend`) or instead of them (`replace`). It may hold
    `{{ variables.NAME }}` placeholders, filled from the request's variables."""

    system: str = Field(min_length=1, max_length=256 * 1024)
    mode: Literal["prepend", "replace"] = "prepend"


class TargetConfig(StrictModel):
    """One provider model a route can call: one variant of the route."""

    model: ModelSettings
    # The variant's name (Start.variant, telemetry); "provider/model" when unset.
    name: str | None = Field(default=None, pattern=ROUTE_NAME_PATTERN)
    # The variant's own system prompt (chat routes only).
    prompt: PromptConfig | None = None
    # The variant's own generation defaults, over the route's `config:`.
    config: GenerationDefaults | None = None
    # Share of calls under the weighted strategy (0: never picked by weight).
    weight: int = Field(default=1, ge=0)
    timeouts: TimeoutsConfig | None = None
    stream: StreamConfig | None = None
    # This target's own bounds on what is held of an answer (the route's when unset).
    max_response_bytes: ResponseBytes | None = None
    max_event_bytes: EventBytes | None = None


class StickyMetadata(StrictModel):
    metadata: str = Field(min_length=1)


class RuleCondition(StrictModel):
    """All given conditions must hold."""

    # Request metadata values (gRPC metadata, keys lower case).
    metadata: dict[str, str] | None = None
    # The caller's API key name.
    key: str | None = None
    # A regular expression searched in the text of the messages (or prompt).
    matches: str | None = None
    # Any of these words or phrases in the text (case-insensitive).
    keywords: list[str] | None = None
    # Estimated prompt length in tokens (characters / 4).
    min_prompt_tokens: int | None = Field(default=None, ge=0)
    max_prompt_tokens: int | None = Field(default=None, ge=0)

    @field_validator("matches")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return pattern


class RuleConfig(StrictModel):
    """When `when` holds, send the call to `target` (an index into the
    route's targets) or to another `route`."""

    when: RuleCondition
    target: int | None = Field(default=None, ge=0)
    route: str | None = None

    @model_validator(mode="after")
    def _one_destination(self) -> RuleConfig:
        if (self.target is None) == (self.route is None):
            raise ValueError("a rule sends to exactly one of target or route")
        return self


class ShadowConfig(StrictModel):
    """Mirror a sampled share of calls to another target; its answer is
    recorded and discarded, never seen by the caller."""

    target: TargetConfig
    sample: float = Field(ge=0.0, le=1.0)


class BackoffConfig(StrictModel):
    initial: float = Field(default=0.2, gt=0)
    max: float = Field(default=5.0, gt=0)


class RetriesConfig(StrictModel):
    # Attempts per target, the first included.
    max_attempts: int = Field(default=1, ge=1, le=10)
    backoff: BackoffConfig = BackoffConfig()
    # Retries may add at most this share of the route's calls.
    budget: float = Field(default=0.2, ge=0.0, le=1.0)


class CircuitBreakerConfig(StrictModel):
    # Open when failures / calls in the window reach this ratio...
    failure_ratio: float = Field(default=0.5, gt=0.0, le=1.0)
    # ...over the last `window` seconds...
    window: float = Field(default=30.0, gt=0)
    # ...with at least this many calls in it.
    min_calls: int = Field(default=10, ge=1)
    # Seconds a target stays skipped before one probe call.
    cooldown: float = Field(default=30.0, gt=0)


Strategy = Literal["weighted", "fallback", "least_latency", "lowest_cost", "rules", "experiment"]
EndUserSource = Literal["from_request", "from_key", "off"]


class ExperimentConfig(StrictModel):
    """`strategy: experiment`: weighted until `min_samples` feedback values of
    `metric` per variant, then shifted towards the variant doing best."""

    metric: str = Field(pattern=FEEDBACK_NAME_PATTERN)
    goal: Literal["maximize", "minimize"] = "maximize"
    policy: Literal["thompson", "epsilon_greedy"] = "thompson"
    min_samples: int = Field(default=30, ge=1)
    max_share: float = Field(default=0.8, gt=0, le=1)


class ExperimentsConfig(StrictModel):
    # How long call ids take feedback and results are kept.
    retention: PeriodText = Field(default=7 * 86400.0, ge=60, le=90 * 86400)
    # Distinct feedback names a route keeps results for.
    max_feedback_names: int = Field(default=32, ge=1, le=256)


class RouteConfig(StrictModel):
    name: str = Field(pattern=ROUTE_NAME_PATTERN)
    route_type: Literal["llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"]
    # One target (`model`), or several (`targets`) picked by `strategy`.
    model: ModelSettings | None = None
    targets: list[TargetConfig] | None = Field(default=None, min_length=1)
    strategy: Strategy = "fallback"
    experiment: ExperimentConfig | None = None
    # Keep one caller on one weighted target: per API key, or per metadata value.
    sticky: Literal["key"] | StickyMetadata | None = None
    rules: list[RuleConfig] | None = None
    shadow: ShadowConfig | None = None
    retries: RetriesConfig | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    # Default timeouts of the route's targets.
    timeouts: TimeoutsConfig | None = None
    # Default stream writing of the route's targets, and of its cache replays.
    stream: StreamConfig | None = None
    # Default bounds of the route's targets on what is held of an answer: a
    # larger one is UNAVAILABLE (UPSTREAM_RESPONSE_TOO_LARGE, _EVENT_TOO_LARGE).
    max_response_bytes: ResponseBytes = DEFAULT_MAX_RESPONSE_BYTES
    max_event_bytes: EventBytes = DEFAULT_MAX_EVENT_BYTES
    config: GenerationDefaults = GenerationDefaults()
    cache: CacheConfig | None = None
    limits: LimitsConfig | None = None
    # Whether a chat may carry provider_options merged into the upstream body.
    allow_provider_options: bool = False
    # The end-user id sent to providers that take one: the request's
    # `end_user`, the caller's key name, or none.
    end_user: EndUserSource = "off"

    @property
    def operation(self) -> Operation:
        return Operation(self.route_type)

    @property
    def target_configs(self) -> list[TargetConfig]:
        """The route's targets; a single `model` is one target."""
        if self.targets is not None:
            return self.targets
        assert self.model is not None  # checked by _one_way_to_name_targets
        return [TargetConfig(model=self.model, timeouts=self.timeouts)]

    @model_validator(mode="after")
    def _one_way_to_name_targets(self) -> RouteConfig:
        if (self.model is None) == (self.targets is None):
            raise ValueError("a route names its targets with exactly one of model or targets")
        return self

    @model_validator(mode="after")
    def _targets_answer_route_type(self) -> RouteConfig:
        shadow = [self.shadow.target] if self.shadow else []
        for target in [*self.target_configs, *shadow]:
            model = target.model
            if self.operation not in model.operations:
                answers = ", ".join(sorted(op.value for op in model.operations))
                hint = model.operations_hint()
                raise ValueError(
                    f"provider {model.provider!r} does not answer {self.route_type} "
                    f"(it answers {answers}{' ' + hint if hint else ''})"
                )
        return self

    @model_validator(mode="after")
    def _targets_take_an_end_user(self) -> RouteConfig:
        if self.end_user == "off":
            return self
        for target in self.target_configs:
            if Feature.END_USER not in target.model.features:
                raise ValueError(
                    f"end_user {self.end_user}: provider {target.model.provider!r} takes no "
                    "end-user id (set end_user: off, or route to a provider that takes one)"
                )
        return self

    @model_validator(mode="after")
    def _variants_are_told_apart(self) -> RouteConfig:
        names = [t.name for t in self.target_configs if t.name is not None]
        if len(set(names)) < len(names):
            raise ValueError("two targets of the route have the same name")
        shadow = [self.shadow.target] if self.shadow else []
        prompted = any(t.prompt is not None for t in [*self.target_configs, *shadow])
        if prompted and self.operation is not Operation.CHAT:
            raise ValueError("a target prompt needs a chat route (llm/v1/chat)")
        return self

    @model_validator(mode="after")
    def _strategy_has_what_it_needs(self) -> RouteConfig:
        count = len(self.target_configs)
        if self.strategy == "rules" and not self.rules:
            raise ValueError("strategy rules needs rules")
        for rule in self.rules or ():
            if rule.target is not None and rule.target >= count:
                raise ValueError(f"rule target {rule.target} is not one of the {count} targets")
        if self.strategy in ("weighted", "experiment") and not any(
            t.weight for t in self.target_configs
        ):
            raise ValueError(f"strategy {self.strategy} needs a target with a weight above 0")
        if (self.strategy == "experiment") != (self.experiment is not None):
            raise ValueError("strategy experiment and an experiment: section go together")
        return self

    @model_validator(mode="after")
    def _variant_names_are_unique(self) -> RouteConfig:
        if not self.is_experiment:
            return self
        names = [t.name or f"{t.model.provider}/{t.model.name}" for t in self.target_configs]
        if len(set(names)) < len(names):
            raise ValueError("two targets are the same variant: give them distinct names")
        return self

    @property
    def is_experiment(self) -> bool:
        """Whether GetExperiment answers for the route: it names a target,
        or adapts its traffic."""
        return self.strategy == "experiment" or any(t.name for t in self.target_configs)


class RequestLimits(StrictModel):
    """What one request may carry (`server.request_limits`), checked before
    any work: a request over a bound is INVALID_ARGUMENT naming the field
    and the bound. A reload applies them to the calls that follow."""

    # Messages of a chat request, and parts of one message.
    max_messages: int = Field(default=2048, ge=1)
    max_parts: int = Field(default=256, ge=1)
    # Characters of all the text of a request: message texts, tool calls and
    # results, prompt and suffix, embedding inputs, stop sequences.
    max_text_chars: int = Field(default=8 * 1024 * 1024, ge=1)
    # Bytes of one image: its inline data, or its URL.
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    # Tools of a chat request, and bytes of one tool (name, description, schema).
    max_tools: int = Field(default=256, ge=0)
    max_tool_bytes: int = Field(default=64 * 1024, ge=1)
    # Bytes of a chat's response_format (its JSON Schema), and of its
    # provider_options.
    max_response_format_bytes: int = Field(default=64 * 1024, ge=1)
    max_provider_options_bytes: int = Field(default=64 * 1024, ge=1)
    max_stop_sequences: int = Field(default=16, ge=0)
    # Inputs of an Embed call, and values of all the vectors it asks for
    # (inputs x dimensions, when it names dimensions): 1 Mi float32 values
    # fill the default max_send_message_bytes.
    max_inputs: int = Field(default=2048, ge=1)
    max_embedding_values: int = Field(default=1024 * 1024, ge=1)
    # Caller labels of a request, and characters of one label's key or value.
    max_labels: int = Field(default=32, ge=0)
    max_label_chars: int = Field(default=128, ge=1)
    # Variables of a chat request (their values count as text).
    max_variables: int = Field(default=64, ge=0)


class TlsConfig(StrictModel):
    """`server.tls`: the listener's certificate, and whether callers must
    present one of theirs (mutual TLS)."""

    # PEM certificate chain and private key.
    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)
    # PEM CA certificates client certificates must chain to.
    client_ca_file: str | None = Field(default=None, min_length=1)
    # none: no client certificate asked; require: every connection presents
    # one the client CA signed. `request` (verify one if presented) is named
    # for other tools but refused: grpcio's server can only require or not ask.
    client_auth: Literal["none", "request", "require"] = "none"

    @model_validator(mode="after")
    def _client_auth_needs_a_ca(self) -> TlsConfig:
        if self.client_auth != "none" and self.client_ca_file is None:
            raise ValueError(
                f"client_auth {self.client_auth} needs server.tls.client_ca_file "
                "(the CA client certificates are verified against)"
            )
        if self.client_auth == "request":
            raise ValueError(
                "client_auth request is not available: grpcio's server can only require a "
                "client certificate or not ask for one; use require, or none with a sidecar "
                "forwarding the identity (auth.forwarded_identity)"
            )
        return self


class KeepaliveConfig(StrictModel):
    """HTTP/2 pings (`server.keepalive`), in seconds: the server's own, which
    find a dead client (and cancel its streams) and keep idle connections
    open through proxies, and the clients' it accepts."""

    # The server pings a connection after this long without reading from it...
    time: float = Field(default=60.0, gt=0)
    # ...and closes it when the answer has not come this long after.
    timeout: float = Field(default=20.0, gt=0)
    # A client pinging more often is sent GOAWAY (ENHANCE_YOUR_CALM).
    min_client_ping_interval: float = Field(default=10.0, ge=0)
    # Clients may ping a connection that has no call in flight.
    permit_without_calls: bool = True


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    # Addresses to bind instead of host and port: host:port, [ipv6]:port, unix:/path.
    listen: list[Annotated[str, AfterValidator(check_address)]] | None = Field(
        default=None, min_length=1
    )
    # Seconds health says NOT_SERVING after SIGTERM while calls are still
    # served, so load balancers stop sending before the listener closes.
    drain_delay: float = Field(default=0.0, ge=0.0)
    keepalive: KeepaliveConfig = KeepaliveConfig()
    # Seconds before a connection is asked to go away (GOAWAY; clients
    # reconnect, to another replica), and then before its calls are cut; unset: never.
    max_connection_age: float | None = Field(default=None, gt=0)
    max_connection_age_grace: float | None = Field(default=None, ge=0)
    # Streams one connection may have open; unset: as many as a worker may run.
    max_streams_per_connection: int | None = Field(default=None, ge=1)
    # The largest request message accepted; a larger one is RESOURCE_EXHAUSTED.
    max_receive_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Responses compressed with gzip for clients that accept it.
    compression: Literal["none", "gzip"] = "none"
    # Seconds in-flight streams get to finish after SIGTERM/SIGINT.
    shutdown_grace: float = Field(default=30.0, ge=0.0)
    # Processes serving the port (`auto`: one per core this process may use);
    # `sluice serve --workers` overrides.
    workers: WorkerCount = 1
    # Calls one worker runs at once; the next is refused (GATEWAY_OVERLOADED).
    max_concurrent_calls: int = Field(default=10_000, ge=1)
    # The asyncio event loop a worker runs on: uvloop (libuv; less CPU per
    # call, bench/README.md) or Python's own. Applies at a restart.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # The largest message the gateway sends, as a gRPC client by default
    # receives (4 MiB): a larger reply is refused (RESPONSE_TOO_LARGE) and
    # recorded so, not sent to be refused unseen by the caller. Applies at a restart.
    max_send_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    request_limits: RequestLimits = RequestLimits()
    # TLS on the listener; plaintext when unset. Applies at a restart; the
    # files' contents are re-read when they change (tls.py).
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _listen_replaces_host_and_port(self) -> ServerConfig:
        given = sorted({"host", "port"} & self.model_fields_set)
        if self.listen is not None and given:
            keys = " and ".join(f"server.{key}" for key in given)
            raise ValueError(f"server.listen replaces {keys}: list every address in server.listen")
        if self.listen is not None and len(set(self.listen)) < len(self.listen):
            raise ValueError("server.listen names an address twice")
        return self


class StateConfig(StrictModel):
    backend: Literal["memory", "redis", "redis_cluster"] = "memory"
    # redis://[:password@]host:port/db; may hold a secret. For redis_cluster,
    # any seed node of the cluster.
    url: SecretStr | None = None
    # Seconds a call waits on the backend before its failure policy applies.
    timeout: float = Field(default=0.25, gt=0)
    # Prefix of every key Sluice writes, so gateways can share a Redis.
    key_prefix: str = "sluice:"
    # The consent to limits and budgets counted by each worker on its own
    # (memory backend, more than one worker).
    per_worker: bool = False

    @model_validator(mode="after")
    def _redis_needs_a_url(self) -> StateConfig:
        if self.backend != "memory" and self.url is None:
            raise ValueError(f"backend {self.backend} needs a url (redis://host:port)")
        return self

    @model_validator(mode="after")
    def _per_worker_is_for_memory(self) -> StateConfig:
        if self.per_worker and self.backend != "memory":
            raise ValueError("per_worker applies to backend memory; redis is shared by workers")
        return self

    @model_validator(mode="after")
    def _cluster_prefix_has_no_hash_tag(self) -> StateConfig:
        # A brace in the prefix would move the hash tag that keeps each
        # scope's keys in one slot.
        if self.backend == "redis_cluster" and ("{" in self.key_prefix or "}" in self.key_prefix):
            raise ValueError("key_prefix of backend redis_cluster must not contain '{' or '}'")
        return self


class BudgetConfig(StrictModel):
    """Spend allowed per period, priced from real usage."""

    usd: float = Field(gt=0)
    period: PeriodText


MAX_KEY_NAMESPACES = 1000
# What gRPC metadata can carry (printable ASCII), without spaces at its ends,
# which transports may trim: a value no call could send is a config mistake.
_METADATA_VALUE = re.compile(r"[!-~]([ -~]*[!-~])?")


def _metadata_value(value: str) -> str:
    if not _METADATA_VALUE.fullmatch(value):
        raise ValueError(
            "a namespace is a metadata value: printable ASCII, not empty, no space at either end"
        )
    return value


NamespaceValue = Annotated[str, Field(max_length=256), AfterValidator(_metadata_value)]


class CallerConfig(StrictModel):
    """What a caller, known by key or by certificate, may do."""

    name: str = Field(pattern=ROUTE_NAME_PATTERN)
    # Routes this caller may call; all routes when omitted.
    routes: list[str] | None = None
    # Values this caller may send in the metadata a route's `cache.namespace`
    # names; any other value, or any value at all when omitted, is refused.
    namespaces: list[NamespaceValue] | None = Field(default=None, max_length=MAX_KEY_NAMESPACES)
    limits: LimitsConfig | None = None
    budget: BudgetConfig | None = None


class KeyConfig(CallerConfig):
    # SHA-256 hex digest of the key (`sluice keys hash <key>`); the key itself
    # is never in config.
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class IdentityConfig(CallerConfig):
    """A caller known by its client certificate (peer_identity.py): the
    SPIFFE ID in its URI SAN, or its subject as an RFC 4514 string, most
    specific attribute first (`CN=svc-a,O=acme`)."""

    spiffe_id: str | None = Field(default=None, pattern=r"^spiffe://[^/\s]+(/\S*)?$")
    subject: str | None = Field(default=None, min_length=3, max_length=1024)

    @model_validator(mode="after")
    def _one_name(self) -> IdentityConfig:
        if (self.spiffe_id is None) == (self.subject is None):
            raise ValueError(f"identity {self.name!r} gives exactly one of spiffe_id or subject")
        return self


class ForwardedIdentityConfig(StrictModel):
    """Trust an identity a mesh sidecar forwards in a header (Envoy's
    x-forwarded-client-cert), but only on connections from `trusted_peers`:
    IP addresses or networks (`127.0.0.1`, `::1`, `10.0.0.0/8`) and `unix`
    for any Unix-socket connection (forwarded.py)."""

    header: str = Field(default="x-forwarded-client-cert", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    trusted_peers: list[str] = Field(min_length=1, max_length=256)

    @field_validator("trusted_peers")
    @classmethod
    def _peers_parse(cls, peers: list[str]) -> list[str]:
        for peer in peers:
            if peer != "unix":
                try:
                    ipaddress.ip_network(peer)
                except ValueError:
                    raise ValueError(
                        f"trusted peer {peer!r} is not an IP address, a network or `unix`"
                    ) from None
        return peers


class AuthConfig(StrictModel):
    """Auth is on when keys or identities are given."""

    keys: list[KeyConfig] = Field(default_factory=list)
    identities: list[IdentityConfig] = Field(default_factory=list)
    forwarded_identity: ForwardedIdentityConfig | None = None

    @model_validator(mode="after")
    def _someone_may_call(self) -> AuthConfig:
        if not self.keys and not self.identities:
            raise ValueError("auth needs keys or identities (leave auth out to turn it off)")
        if self.forwarded_identity is not None and not self.identities:
            raise ValueError("forwarded_identity needs identities to map the forwarded ones to")
        return self


class Price(StrictModel):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)  # input's price when unset
    # Input written to the prompt cache (Usage.cache_write_input_tokens); input's when unset.
    cache_write: float | None = Field(default=None, ge=0)


def _exporters(value: object) -> object:
    """`otlp,console` (as in OTEL_TRACES_EXPORTER) or a YAML list."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


TraceExporter = Literal["otlp", "console", "none"]
MetricExporter = Literal["otlp", "prometheus", "console", "none"]
LogExporter = Literal["otlp", "console", "none"]
OtlpProtocol = Literal["grpc", "http/protobuf"]


class OtlpConfig(StrictModel):
    """Where OTLP exporters send; unset keys come from the standard
    OTEL_EXPORTER_OTLP_* environment variables."""

    # OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://collector:4317 (grpc) or
    # http://collector:4318 (http/protobuf: /v1/traces... are appended).
    endpoint: str | None = None
    # OTEL_EXPORTER_OTLP_PROTOCOL
    protocol: OtlpProtocol | None = None
    # OTEL_EXPORTER_OTLP_HEADERS; values may hold secrets (`{{ secrets.X }}`).
    headers: dict[str, SecretStr] = Field(default_factory=dict)


class PrometheusConfig(StrictModel):
    """The scrape endpoint of the `prometheus` metrics exporter."""

    host: str | None = None  # OTEL_EXPORTER_PROMETHEUS_HOST, default localhost
    port: int | None = Field(default=None, ge=0, le=65535)  # OTEL_EXPORTER_PROMETHEUS_PORT, 9464


class AccessLogConfig(StrictModel):
    """One JSON line per call."""

    enabled: bool = True
    # A file to append to (reopened when rotated away); stdout when unset.
    path: str | None = None


class TelemetryConfig(StrictModel):
    """Traces, metrics and logs. Each exporter key, when set, wins over its
    OTEL_* environment variable; when neither is set, nothing is exported."""

    # OTEL_SERVICE_NAME, default `sluice`.
    service_name: str | None = None
    # OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER
    traces_exporter: Annotated[list[TraceExporter], BeforeValidator(_exporters)] | None = None
    metrics_exporter: Annotated[list[MetricExporter], BeforeValidator(_exporters)] | None = None
    logs_exporter: Annotated[list[LogExporter], BeforeValidator(_exporters)] | None = None
    otlp: OtlpConfig = OtlpConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
    # Record prompts and answers on upstream spans (gen_ai.input.messages,
    # gen_ai.output.messages). Off: they may hold personal data.
    capture_content: bool = False
    access_log: AccessLogConfig = AccessLogConfig()


class GatewayConfig(StrictModel):
    server: ServerConfig = ServerConfig()
    state: StateConfig = StateConfig()
    # API keys and certificate identities; auth is on when present.
    auth: AuthConfig | None = None
    # "provider/model" -> price, over the shipped defaults.
    prices: dict[str, Price] = Field(default_factory=dict)
    telemetry: TelemetryConfig = TelemetryConfig()
    # Where `{{ secrets.NAME }}` comes from; the loader reads it first.
    secrets: SecretsConfig = SecretsConfig()
    experiments: ExperimentsConfig = ExperimentsConfig()
    routes: list[RouteConfig] = Field(min_length=1)

    @field_validator("routes")
    @classmethod
    def _route_names_are_unique(cls, routes: list[RouteConfig]) -> list[RouteConfig]:
        seen: set[str] = set()
        for route in routes:
            if route.name in seen:
                raise ValueError(f"route name {route.name!r} is used twice")
            seen.add(route.name)
        return routes

    @model_validator(mode="after")
    def _rules_name_real_routes(self) -> GatewayConfig:
        by_name = {route.name: route for route in self.routes}
        for route in self.routes:
            for rule in route.rules or ():
                if rule.route is None:
                    continue
                destination = by_name.get(rule.route)
                if destination is None:
                    raise ValueError(
                        f"route {route.name!r} has a rule to unknown route {rule.route!r}"
                    )
                if destination.route_type != route.route_type:
                    raise ValueError(
                        f"route {route.name!r} has a rule to route {rule.route!r}, which "
                        f"answers {destination.route_type}, not {route.route_type}"
                    )
        return self

    @model_validator(mode="after")
    def _semantic_caches_embed_on_embeddings_routes(self) -> GatewayConfig:
        by_name = {route.name: route for route in self.routes}
        for route in self.routes:
            semantic = route.cache.semantic if route.cache is not None else None
            if semantic is None:
                continue
            embeddings = by_name.get(semantic.embeddings_route)
            if embeddings is None or embeddings.route_type != "llm/v1/embeddings":
                raise ValueError(
                    f"route {route.name!r}: cache.semantic.embeddings_route "
                    f"{semantic.embeddings_route!r} must be an llm/v1/embeddings route "
                    "of this config"
                )
            if route.route_type == "llm/v1/embeddings":
                raise ValueError(
                    f"route {route.name!r}: cache.semantic is for chat and completion routes"
                )
        return self

    @model_validator(mode="after")
    def _experiments_have_a_store(self) -> GatewayConfig:
        # Feedback updates a call's record and its route's results in one
        # transaction; on a Redis Cluster they live in different slots.
        if self.state.backend == "redis_cluster":
            experiments = [route.name for route in self.routes if route.is_experiment]
            if experiments:
                raise ValueError(
                    f"routes {', '.join(experiments)} record experiments (named targets or "
                    "strategy experiment), which state.backend redis_cluster does not support "
                    "yet: use state.backend redis or memory"
                )
        return self

    @model_validator(mode="after")
    def _callers_name_real_routes(self) -> GatewayConfig:
        if self.auth is None:
            return self
        names = {route.name for route in self.routes}
        seen: set[str] = set()
        for key in self.auth.keys:
            if key.name in seen or key.sha256 in seen:
                raise ValueError(f"key {key.name!r} is given twice (by name or digest)")
            seen.update((key.name, key.sha256))
        for identity in self.auth.identities:
            # Limits and budgets count by name: a key and an identity must not share one.
            named_by = identity.spiffe_id or identity.subject or ""
            if identity.name in seen or named_by in seen:
                raise ValueError(
                    f"identity {identity.name!r} is given twice (by name or certificate)"
                )
            seen.update((identity.name, named_by))
        for caller in (*self.auth.keys, *self.auth.identities):
            unknown = sorted(set(caller.routes or ()) - names)
            if unknown:
                raise ValueError(f"{caller.name!r} names unknown routes: {', '.join(unknown)}")
        return self
