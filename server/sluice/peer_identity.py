"""Callers known by certificate: `auth.identities`, matched against the
client certificate of a mutual-TLS connection, or against the certificate a
trusted mesh sidecar forwards (forwarded.py).

An identity names a SPIFFE ID (the certificate's one URI SAN, as gRPC
reports it in `peer_spiffe_id`) or a subject: the RFC 4514 string of the
certificate's subject, most specific attribute first, as OpenSSL prints it
(`CN=svc-a,O=acme,C=DE`). Subjects are compared with attribute types in
upper case and blanks around `,` and `=` ignored; values compare exactly.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from sluice.config.schema import AuthConfig
from sluice.forwarded import CertificateIdentity, TrustedPeers, parse_xfcc
from sluice.identity import Caller, caller_of

# A `,` not escaped by a backslash: where RFC 4514 attributes part.
_ATTRIBUTE_SEPARATOR = re.compile(r"(?<!\\),")


class Transport(Protocol):
    """What a call knows of its connection (a grpc.aio.ServicerContext)."""

    def peer(self) -> str: ...

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...


@functools.lru_cache(maxsize=1024)
def normalized_subject(subject: str) -> str:
    """`subject` in the form identities are compared in."""
    attributes = []
    for attribute in _ATTRIBUTE_SEPARATOR.split(subject):
        kind, _, value = attribute.partition("=")
        attributes.append(f"{kind.strip().upper()}={value.strip()}")
    return ",".join(attributes)


class IdentityBook:
    """The configured identities, and where a call's identity may come from."""

    def __init__(self, config: AuthConfig) -> None:
        self._by_spiffe_id: dict[str, Caller] = {}
        self._by_subject: dict[str, Caller] = {}
        for identity in config.identities:
            if identity.spiffe_id is not None:
                self._by_spiffe_id[identity.spiffe_id] = caller_of(identity)
            elif identity.subject is not None:
                self._by_subject[normalized_subject(identity.subject)] = caller_of(identity)
        forwarded = config.forwarded_identity
        self._header = forwarded.header if forwarded is not None else None
        self._trusted = TrustedPeers(forwarded.trusted_peers if forwarded is not None else ())

    @property
    def callers(self) -> Iterable[Caller]:
        return (*self._by_spiffe_id.values(), *self._by_subject.values())

    def identify(self, headers: Mapping[str, str], transport: Transport) -> Caller | None:
        """The identity a trusted sidecar forwards, when the call comes from a
        trusted peer with the header; else the connection's own client
        certificate's. None when it names no configured identity."""
        header = self._header
        if header is not None and header in headers and self._trusted.trust(transport.peer()):
            forwarded = parse_xfcc(headers[header])
            return self._match(forwarded) if forwarded is not None else None
        return self._match(_certificate(transport.auth_context()))

    def _match(self, certificate: CertificateIdentity) -> Caller | None:
        if certificate.spiffe_id is not None:
            caller = self._by_spiffe_id.get(certificate.spiffe_id)
            if caller is not None:
                return caller
        if certificate.subject is not None:
            return self._by_subject.get(normalized_subject(certificate.subject))
        return None


def _certificate(auth_context: Mapping[str, Iterable[bytes]]) -> CertificateIdentity:
    """The client certificate gRPC verified; empty without mutual TLS."""
    return CertificateIdentity(
        spiffe_id=_one(auth_context.get("peer_spiffe_id")),
        subject=_one(auth_context.get("x509_subject")),
    )


def _one(values: Iterable[bytes] | None) -> str | None:
    for value in values or ():
        return value.decode(errors="replace")
    return None
