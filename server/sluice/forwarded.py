"""An identity a mesh sidecar forwards: Envoy's `x-forwarded-client-cert`
(XFCC), trusted only on connections from the peers config names.

XFCC is a comma-separated list of elements, one per proxy that handled the
request; each is `Key=value` pairs separated by semicolons (`By=...;
Hash=...;Subject="CN=a,O=b";URI=spiffe://...`), a value double-quoted when
it holds `,` `;` or `=`, with `\\"` for a quote inside. The last element is
the one the closest proxy added, the sidecar in front of Sluice: it alone is
read. An element with more than one SPIFFE URI names no one.

gRPC does not tell a handler which local listener took a call, so the trust
is in the connection's origin (`context.peer()`): an IP address or network,
or `unix` for any Unix-socket connection. A sidecar-only listener (loopback,
or a Unix socket) receives only the sidecar's connections.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote

# XFCC past this is not read: an identity needs far less, and the value is
# the caller's (through the proxy) to make as large as metadata allows.
MAX_HEADER_CHARS = 16 * 1024


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """The names of a client certificate an identity may be matched by."""

    spiffe_id: str | None
    subject: str | None


def parse_xfcc(value: str) -> CertificateIdentity | None:
    """The identity in the last element of an XFCC header; None when the
    header is oversized or the element names no one."""
    if len(value) > MAX_HEADER_CHARS:
        return None
    elements = list(_split(value, ","))
    if not elements:
        return None
    spiffe_ids: list[str] = []
    subject: str | None = None
    for pair in _split(elements[-1], ";"):
        key, found, raw = pair.partition("=")
        if not found:
            continue
        key, text = key.strip().lower(), _unquote(raw.strip())
        if key == "uri" and text.startswith("spiffe://"):
            spiffe_ids.append(text)
        elif key == "subject":
            subject = text
    if len(spiffe_ids) > 1:
        return None  # SPIFFE allows one ID per certificate
    spiffe_id = spiffe_ids[0] if spiffe_ids else None
    if spiffe_id is None and subject is None:
        return None
    return CertificateIdentity(spiffe_id, subject)


def _split(text: str, separator: str) -> Iterator[str]:
    """`text` split at each `separator` outside double quotes, parts that are
    only blanks left out."""
    start, quoted, escaped = 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = quoted
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            if part := text[start:index].strip():
                yield part
            start = index + 1
    if part := text[start:].strip():
        yield part


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


class TrustedPeers:
    """The connection origins whose forwarded identity is believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = list(entries)
        self._unix = "unix" in entries
        self._networks = tuple(ipaddress.ip_network(e) for e in entries if e != "unix")

    def trust(self, peer: str) -> bool:
        """Whether a call from `peer` (grpc's `context.peer()`: `ipv4:a.b.c.d:port`,
        `ipv6:[::1]:port`, `unix:...`) may forward an identity."""
        kind, _, rest = peer.partition(":")
        if kind == "unix":
            return self._unix
        if kind not in ("ipv4", "ipv6"):
            return False
        host = unquote(rest).rsplit(":", 1)[0].strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 client of a dual-stack listener
        return any(address in network for network in self._networks)
