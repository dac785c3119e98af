"""TLS on the gRPC listener (`server.tls`), with certificates re-read from
disk when they change.

cert-manager and SPIFFE agents rotate certificate files in place. gRPC asks
`CertificateFiles.fetch` for the certificate configuration at every new
handshake: it answers None (unchanged) while the files' stat is the same, so
a handshake costs a few stat calls, and a new configuration once they
change. Established connections keep the certificate they were made with;
new handshakes use the new one; nothing is dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc

from sluice.config.schema import GatewayConfig, TlsConfig
from sluice.listeners import is_local_address

logger = logging.getLogger(__name__)

# What identifies a file's version cheaply: inode, size, mtime (ns).
_Stamp = tuple[int, int, int]


class CertificateFiles:
    """The PEM files of `server.tls`, read again when their stat changes."""

    def __init__(self, tls: TlsConfig) -> None:
        self._paths = {"cert_file": tls.cert_file, "key_file": tls.key_file}
        if tls.client_ca_file is not None:
            self._paths["client_ca_file"] = tls.client_ca_file
        self._lock = threading.Lock()  # gRPC core calls `fetch` from its threads
        self._stamps = self._stat()
        contents = self._read()
        self._digest = _digest(contents)
        self.initial = _configuration(contents)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The configuration for a new handshake: None while the files are
        unchanged. Files caught mid-rotation (one unreadable, or a key not
        yet matching its certificate) leave gRPC on the certificate it has,
        until the next change."""
        with self._lock:
            stamps = self._stat()
            if stamps == self._stamps:
                return None
            contents = self._read()
            self._stamps = stamps
            digest = _digest(contents)
            if digest == self._digest:  # touched, not changed
                return None
            self._digest = digest
        logger.info("TLS certificate files changed: new handshakes use them")
        return _configuration(contents)

    def _stat(self) -> dict[str, _Stamp]:
        stamps = {}
        for key, path in self._paths.items():
            try:
                stat = os.stat(path)
            except OSError as exc:
                raise OSError(f"server.tls.{key}: cannot read {path}: {exc.strerror}") from None
            stamps[key] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        return stamps

    def _read(self) -> dict[str, bytes]:
        contents = {}
        for key, path in self._paths.items():
            try:
                contents[key] = Path(path).read_bytes()
            except OSError as exc:
                raise OSError(f"server.tls.{key}: cannot read {path}: {exc.strerror}") from None
        return contents


def _digest(contents: dict[str, bytes]) -> bytes:
    digest = hashlib.sha256()
    for key in sorted(contents):
        digest.update(hashlib.sha256(contents[key]).digest())
    return digest.digest()


def _configuration(contents: dict[str, bytes]) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(contents["key_file"], contents["cert_file"])],
        root_certificates=contents.get("client_ca_file"),
    )


def server_credentials(tls: TlsConfig | None) -> grpc.ServerCredentials | None:
    """The listener's credentials; None for plaintext. Raises OSError naming
    the `server.tls` key of a file that cannot be read."""
    if tls is None:
        return None
    files = CertificateFiles(tls)
    # grpc takes None from the fetcher as "unchanged"; its stubs omit it.
    fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", files.fetch)
    return grpc.dynamic_ssl_server_credentials(
        files.initial,
        fetch,
        require_client_authentication=tls.client_auth == "require",
    )


def warn_if_keys_in_clear(address: str, config: GatewayConfig) -> None:
    """Log a warning when callers' keys would cross a network in clear:
    auth on, no TLS, and `address` reachable from beyond this host."""
    if config.auth is None or not config.auth.keys or config.server.tls is not None:
        return
    if not is_local_address(address):
        logger.warning(
            "API keys are accepted over plaintext on %s: they cross the network in clear. "
            "Set server.tls, or listen on loopback behind a TLS-terminating proxy or sidecar",
            address,
        )
