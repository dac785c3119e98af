"""Where `{{ secrets.NAME }}` comes from: `secrets.sources`, tried in the
order the config declares (default `[env]`).

- `env`: the environment variable NAME.
- `{dir: PATH}`: the file PATH/NAME (Kubernetes and Docker secret volumes),
  one trailing newline removed. A Kubernetes volume's `..data` symlinks are
  followed like any path.
- `{aws_secrets_manager: {region, prefix}}`: the SecretString of SecretId
  prefix + NAME, with the standard AWS credential chain and endpoint
  variables (`AWS_ENDPOINT_URL_SECRETS_MANAGER`).

A source that does not hold a secret (or holds it empty) passes to the next;
a source that fails (a file it cannot read, AWS refusing or unreachable) is
a problem, not a pass, so a broken source never silently yields another
source's value. Messages name the source and where it looked, never a value
or a credential. Sources are built for one load, so a reload reads afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Discriminator, Field, Tag, field_validator

from sluice.providers.settings import StrictModel

if TYPE_CHECKING:
    from botocore.client import BaseClient

# A secret is a key or a password: AWS caps a SecretString at 64 KiB too.
MAX_SECRET_BYTES = 64 * 1024
# Bounds on one Secrets Manager call, so a load cannot hang on the network.
AWS_TIMEOUT_SECONDS = 5.0
AWS_ATTEMPTS = 2


class DirectorySourceConfig(StrictModel):
    dir: str = Field(min_length=1)


class AwsSecretsManagerSettings(StrictModel):
    region: str = Field(min_length=1)
    # Prepended to NAME to make the SecretId: `prod/sluice/` + `OPENAI_API_KEY`.
    prefix: str = ""


class AwsSecretsManagerSourceConfig(StrictModel):
    aws_secrets_manager: AwsSecretsManagerSettings


def _source_kind(value: Any) -> str | None:
    """Which source an item of `sources` is, None (and one clear error) for
    anything else. Tags are not keys, so error locations skip them."""
    if isinstance(value, str):
        return "environment" if value == "env" else None
    if isinstance(value, DirectorySourceConfig) or (isinstance(value, Mapping) and "dir" in value):
        return "directory"
    aws = isinstance(value, Mapping) and "aws_secrets_manager" in value
    return "aws" if aws or isinstance(value, AwsSecretsManagerSourceConfig) else None


SourceConfig = Annotated[
    Annotated[Literal["env"], Tag("environment")]
    | Annotated[DirectorySourceConfig, Tag("directory")]
    | Annotated[AwsSecretsManagerSourceConfig, Tag("aws")],
    Discriminator(
        _source_kind,
        custom_error_type="secret_source",
        custom_error_message=(
            "a secret source is env, {dir: PATH} or {aws_secrets_manager: {region, prefix}}"
        ),
    ),
]


class SecretsConfig(StrictModel):
    """`secrets:`, read before any other value, since they use it."""

    sources: tuple[SourceConfig, ...] = ("env",)

    @field_validator("sources")
    @classmethod
    def _some_source(cls, sources: tuple[SourceConfig, ...]) -> tuple[SourceConfig, ...]:
        if not sources:
            raise ValueError("name at least one source, e.g. [env]")
        return sources


class SecretSourceError(Exception):
    """A source that could not answer; the message names the source and
    where it looked, never a value or a credential."""


class SecretSource(Protocol):
    def where(self, name: str) -> str:
        """Where this source looks for secret `name`, for messages."""
        ...

    def get(self, name: str) -> str | None:
        """Secret `name`, or None when this source does not hold it;
        SecretSourceError when the source fails."""
        ...


class EnvSource:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def where(self, name: str) -> str:
        return f"environment variable {name}"

    def get(self, name: str) -> str | None:
        return self._environ.get(name)


class DirectorySource:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def where(self, name: str) -> str:
        return f"file {self._directory / name}"

    def get(self, name: str) -> str | None:
        path = self._directory / name  # NAME is an identifier: no separator, no `..`
        try:
            with open(path, "rb") as file:
                data = file.read(MAX_SECRET_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretSourceError(f"file {path} cannot be read: {exc.strerror}") from None
        if len(data) > MAX_SECRET_BYTES:
            raise SecretSourceError(f"file {path} is larger than {MAX_SECRET_BYTES:,} bytes")
        try:
            return data.decode("utf-8").removesuffix("\n")
        except UnicodeDecodeError:
            raise SecretSourceError(f"file {path} is not UTF-8 text") from None


class AwsSecretsManagerSource:
    """One client per load, made at the first lookup; once the service
    cannot be reached, later lookups fail at once rather than each waiting
    out its timeouts."""

    def __init__(self, settings: AwsSecretsManagerSettings) -> None:
        self._settings = settings
        self._client: BaseClient | None = None
        self._broken: str | None = None  # why the service cannot be reached

    def where(self, name: str) -> str:
        return (
            f"AWS Secrets Manager SecretId {self._settings.prefix}{name} in {self._settings.region}"
        )

    def get(self, name: str) -> str | None:
        if self._broken is not None:
            raise SecretSourceError(f"{self.where(name)} could not be read: {self._broken}")
        secret_id = self._settings.prefix + name
        try:
            with _no_debug_logs():
                answer = self._connect().get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "an error"))
            if code == "ResourceNotFoundException":
                return None
            # Only the code: the service's message is not ours to repeat.
            raise SecretSourceError(f"{self.where(name)} was refused: {code}") from None
        except BotoCoreError as exc:
            # botocore's own messages name endpoints and files, never keys.
            self._broken = f"{type(exc).__name__}: {exc}"
            raise SecretSourceError(
                f"{self.where(name)} could not be read: {self._broken}"
            ) from None
        value = answer.get("SecretString")
        if not isinstance(value, str):
            raise SecretSourceError(f"{self.where(name)} holds no SecretString (binary secret)")
        return value

    def _connect(self) -> BaseClient:
        if self._client is None:
            bounds = Config(
                connect_timeout=AWS_TIMEOUT_SECONDS,
                read_timeout=AWS_TIMEOUT_SECONDS,
                retries={"total_max_attempts": AWS_ATTEMPTS, "mode": "standard"},
            )
            session = botocore.session.Session()
            self._client = session.create_client(
                "secretsmanager", region_name=self._settings.region, config=bounds
            )
        return self._client


@contextmanager
def _no_debug_logs() -> Iterator[None]:
    """botocore logs each response body at DEBUG, the secret in it, before
    anyone could register it for redaction: no DEBUG record is made meanwhile."""
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.DEBUG))
    try:
        yield
    finally:
        logging.disable(disabled)


class SecretNotResolvedError(Exception):
    """No source gave the secret; the message says which were tried."""


class SecretLookup:
    """Resolves names through the sources in order, each name once a load."""

    def __init__(self, sources: Sequence[SecretSource]) -> None:
        self._sources = sources
        self._answers: dict[str, str | SecretNotResolvedError] = {}

    @classmethod
    def of(cls, config: SecretsConfig, environ: Mapping[str, str]) -> SecretLookup:
        return cls([_source(source, environ) for source in config.sources])

    def resolve(self, name: str) -> str:
        answer = self._answers.get(name)
        if answer is None:
            answer = self._answers[name] = self._first(name)
        if isinstance(answer, SecretNotResolvedError):
            raise answer
        return answer

    def _first(self, name: str) -> str | SecretNotResolvedError:
        for source in self._sources:
            try:
                value = source.get(name)
            except SecretSourceError as exc:
                return SecretNotResolvedError(f"secret {name}: {exc}")
            if value:
                return value
        tried = " or ".join(source.where(name) for source in self._sources)
        return SecretNotResolvedError(f"secret {name} is not set in {tried}")


def _source(config: SourceConfig, environ: Mapping[str, str]) -> SecretSource:
    if isinstance(config, DirectorySourceConfig):
        return DirectorySource(Path(config.dir))
    if isinstance(config, AwsSecretsManagerSourceConfig):
        return AwsSecretsManagerSource(config.aws_secrets_manager)
    return EnvSource(environ)
