"""Parsing what identifies a caller beyond its key: XFCC elements, subject
strings, trusted peer addresses, and the plaintext-key warning."""

from __future__ import annotations

import logging

import pytest
import yaml

from sluice.config.loader import parse_config
from sluice.forwarded import MAX_HEADER_CHARS, CertificateIdentity, TrustedPeers, parse_xfcc
from sluice.listeners import is_local_address
from sluice.peer_identity import normalized_subject
from sluice.tls import warn_if_keys_in_clear

SPIFFE = "spiffe://acme.test/ns/prod/sa/svc-a"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"By=spiffe://acme.test/sluice;Hash=ab12;URI={SPIFFE}", CertificateIdentity(SPIFFE, None)),
        # Quoted values hold commas, semicolons and escaped quotes.
        (
            'Hash=ab;Subject="CN=svc-a,O=acme; \\"east\\"";URI=https://example.test',
            CertificateIdentity(None, 'CN=svc-a,O=acme; "east"'),
        ),
        # Several proxies: the last element, the closest one's, is read.
        (
            f'URI=spiffe://acme.test/edge;Subject="CN=edge", uri={SPIFFE}',
            CertificateIdentity(SPIFFE, None),
        ),
        # Two SPIFFE IDs in one element name no one.
        (f"URI={SPIFFE};URI=spiffe://acme.test/other", None),
        ("By=spiffe://acme.test/sluice;Hash=ab12", None),
        ("", None),
        (f"URI={SPIFFE};Cert=" + "x" * MAX_HEADER_CHARS, None),
    ],
)
def test_xfcc_names_the_closest_proxys_client(
    header: str, expected: CertificateIdentity | None
) -> None:
    assert parse_xfcc(header) == expected


def test_subjects_compare_with_types_in_upper_case_and_blanks_ignored() -> None:
    assert normalized_subject("cn=svc-a , o = acme") == "CN=svc-a,O=acme"
    assert normalized_subject(r"CN=a\,b,O=acme") == r"CN=a\,b,O=acme"
    assert normalized_subject("CN=svc-a,O=Acme") != normalized_subject("CN=svc-a,O=acme")


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:10.1.2.3:5000", True),
        ("ipv4:192.168.1.1:5000", False),
        ("ipv6:[::1]:5000", True),
        ("ipv6:%5B::1%5D:5000", True),
        ("ipv6:[::ffff:10.0.0.7]:5000", True),
        ("ipv6:[2001:db8::1]:5000", False),
        ("unix:", True),
        ("unix:/run/sluice.sock", True),
        ("unknown", False),
    ],
)
def test_trusted_peers_match_the_connections_origin(peer: str, trusted: bool) -> None:
    assert TrustedPeers(["127.0.0.1", "::1", "10.0.0.0/8", "unix"]).trust(peer) is trusted
    assert TrustedPeers(["192.0.2.1"]).trust(peer) is False


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/sluice.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("sluice.internal:50051", False),
    ],
)
def test_local_addresses(address: str, local: bool) -> None:
    assert is_local_address(address) is local


@pytest.mark.parametrize(
    ("address", "server", "warned"),
    [
        ("0.0.0.0:50051", {}, True),
        ("127.0.0.1:50051", {}, False),
        ("0.0.0.0:50051", {"tls": {"cert_file": "s.pem", "key_file": "s.key"}}, False),
    ],
)
def test_keys_over_plaintext_beyond_loopback_are_warned_about(
    address: str, server: dict[str, object], warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    config = {
        "server": server,
        "auth": {"keys": [{"name": "a", "sha256": "0" * 64}]},
        "routes": [{"name": "chat", "route_type": "llm/v1/chat", "model": {"provider": "mock"}}],
    }
    with caplog.at_level(logging.WARNING, "sluice.tls"):
        warn_if_keys_in_clear(address, parse_config(yaml.safe_dump(config), "<test>", {}))
    assert any("over plaintext" in r.message for r in caplog.records) is warned
