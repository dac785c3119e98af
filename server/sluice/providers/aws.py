"""AWS credentials and SigV4 signing, shared by the providers that call AWS
APIs (Bedrock, SageMaker).

`AwsCredentials` is the settings mixin: a region and, optionally, static
keys; without keys the standard AWS chain applies (environment, AWS_PROFILE
and shared files, container or instance role). `SigV4Signer` signs the exact
body bytes sent, with botocore.
"""

from __future__ import annotations

import json
from typing import Any, Self

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError
from pydantic import BaseModel, Field, SecretStr, model_validator

from sluice import errors
from sluice.errors import GatewayError, Reason
from sluice.providers.http import UpstreamRequest
from sluice.providers.wire import JSON


class AwsCredentials(BaseModel):
    """The `model:` keys of an AWS target's region and credentials."""

    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None

    @property
    def has_aws_keys(self) -> bool:
        return self.aws_access_key_id is not None or self.aws_secret_access_key is not None

    @model_validator(mode="after")
    def _check_aws_keys(self) -> Self:
        if self.has_aws_keys and (
            self.aws_access_key_id is None or self.aws_secret_access_key is None
        ):
            raise ValueError("give aws_access_key_id and aws_secret_access_key together")
        if self.aws_session_token and not self.has_aws_keys:
            raise ValueError("aws_session_token needs aws_access_key_id and aws_secret_access_key")
        return self


class SigV4Signer:
    """Signs the requests of one provider to one AWS service in one region."""

    def __init__(
        self, provider: str, signing_name: str, region: str, settings: AwsCredentials
    ) -> None:
        self._provider = provider
        self._signing_name = signing_name  # the service model's signingName
        self._region = region
        # botocore credentials, static or refreshable.
        self._credentials: Any
        if settings.aws_access_key_id is not None and settings.aws_secret_access_key:
            token = settings.aws_session_token
            self._credentials = Credentials(
                settings.aws_access_key_id,
                settings.aws_secret_access_key.get_secret_value(),
                token.get_secret_value() if token else None,
            )
        else:
            # Resolved once, here: the chain reads files and may ask the instance
            # metadata service. Refreshable credentials renew themselves later.
            self._credentials = botocore.session.Session().get_credentials()

    def signed(self, url: str, content: bytes, headers: dict[str, str]) -> dict[str, str]:
        """`headers` with the SigV4 headers of a POST of `content` to `url`
        (lowercased names)."""
        if self._credentials is None:
            raise GatewayError(
                Reason.UPSTREAM_AUTH_FAILED,
                f"{self._provider}: no AWS credentials found (settings, environment, shared "
                "files, container or instance role)",
                metadata={"provider": self._provider},
            )
        try:
            # Renews refreshable credentials when they near expiry.
            credentials = self._credentials.get_frozen_credentials()
        except BotoCoreError as exc:
            raise errors.upstream_unreachable(
                self._provider, f"AWS credentials could not be refreshed ({type(exc).__name__})"
            ) from None
        request = AWSRequest(method="POST", url=url, data=content, headers=headers)
        SigV4Auth(credentials, self._signing_name, self._region).add_auth(request)
        return {name.lower(): value for name, value in request.headers.items()}


def aws_json_request(
    url: str, body: JSON, headers: dict[str, str], signer: SigV4Signer | None
) -> UpstreamRequest:
    """A POST of `body` to `url`, serialized once, compactly: a signature
    (if `signer` is given) covers the exact bytes sent."""
    content = json.dumps(body, separators=(",", ":")).encode()
    if signer is not None:
        headers = signer.signed(url, content, headers)
    return UpstreamRequest(url, body, headers, content=content)
