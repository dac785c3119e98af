"""Who a caller is: its API key, from `authorization: Bearer <key>`
metadata, or else its certificate identity (peer_identity.py).

Keys are configured by their SHA-256 digest, so the gateway never holds a
key. A presented key is hashed and compared with every configured digest in
constant time; neither the key nor any part of the header ever goes into an
error or a log line (keys are not registered secrets, so redaction cannot
catch them: they must simply never be written).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from sluice.config.schema import AuthConfig
from sluice.errors import GatewayError, Reason
from sluice.identity import Caller, caller_of
from sluice.peer_identity import IdentityBook, Transport

_SCHEME = "bearer"


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a key, as config holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys. With no auth config, auth is off and every
    caller is anonymous (`identify` returns None)."""

    def __init__(self, config: AuthConfig | None) -> None:
        self._keys: tuple[tuple[bytes, Caller], ...] | None = (
            None
            if config is None
            else tuple((bytes.fromhex(key.sha256), caller_of(key)) for key in config.keys)
        )

    @property
    def enabled(self) -> bool:
        return self._keys is not None

    @property
    def limit_anything(self) -> bool:
        """Whether some key has limits or a budget (counted on every route)."""
        return any(
            caller.limits is not None or caller.budget is not None for _, caller in self._keys or ()
        )

    def identify(self, headers: Mapping[str, str]) -> Caller | None:
        """The caller whose key `headers` (lower-case gRPC metadata) carry;
        None when auth is off. Raises UNAUTHENTICATED without a known key."""
        if self._keys is None:
            return None
        digest = hashlib.sha256(_bearer_key(headers).encode()).digest()
        found: Caller | None = None
        # Compare with every digest, with no early exit, so the time taken
        # says nothing about which key matched, or whether one did.
        for configured, caller in self._keys:
            if hmac.compare_digest(configured, digest):
                found = caller
        if found is None:
            raise _unauthenticated(Reason.INVALID_API_KEY, "the API key is not valid")
        return found


class Authenticator:
    """Keys and identities. A call that sends a key is known by it alone (a
    bearer key wins over a certificate); one that sends none, by its
    certificate identity when identities are configured. With no auth
    config, every caller is anonymous (`identify` returns None)."""

    def __init__(self, config: AuthConfig | None) -> None:
        self._keys = KeyRing(config)
        self._identities = (
            IdentityBook(config) if config is not None and config.identities else None
        )

    @property
    def enabled(self) -> bool:
        return self._keys.enabled

    @property
    def limit_anything(self) -> bool:
        """Whether some caller has limits or a budget (counted on every route)."""
        identities = self._identities.callers if self._identities is not None else ()
        return self._keys.limit_anything or any(
            caller.limits is not None or caller.budget is not None for caller in identities
        )

    def identify(self, headers: Mapping[str, str], transport: Transport) -> Caller | None:
        """The caller of a call; None when auth is off. Raises UNAUTHENTICATED
        when neither a key nor an identity is known."""
        if self._identities is None or "authorization" in headers:
            return self._keys.identify(headers)
        caller = self._identities.identify(headers, transport)
        if caller is None:
            raise _unauthenticated(
                Reason.UNKNOWN_IDENTITY,
                "this gateway needs an API key (`authorization: Bearer <key>`) or a client "
                "certificate of a configured identity",
            )
        return caller


def _bearer_key(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization")
    if value is None:
        raise _unauthenticated(
            Reason.MISSING_API_KEY,
            "this gateway needs an API key: send `authorization: Bearer <key>`",
        )
    # Nothing of the header is quoted back: without the scheme, its first
    # word may be the key itself.
    scheme, _, key = value.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != _SCHEME or not key:
        raise _unauthenticated(
            Reason.MALFORMED_AUTHORIZATION, "the authorization metadata must be `Bearer <key>`"
        )
    return key


def _unauthenticated(reason: Reason, message: str) -> GatewayError:
    return GatewayError(reason, message)
