"""The proxy's CA certificate: where mitmproxy keeps it, and how a person recognises it.

Clients must trust this certificate for the Chime connections the proxy decrypts; a helpdesk or
a device-management admin compares its SHA-256 fingerprint with what a client has installed.
Read with `cryptography` (mitmproxy's own dependency), never with mitmproxy itself, so both the
command line (`chime-egress ca`) and the proxy's check page (`/ca.pem`) use this one reader.
Only the public certificate is ever read here; `mitmproxy-ca.pem` holds the private key and is
checked for its permissions only.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

DEFAULT_CONFDIR = "~/.mitmproxy"
CERT_NAME = "mitmproxy-ca-cert.pem"  # the public certificate, to distribute
OTHER_FORMATS = ("mitmproxy-ca-cert.cer", "mitmproxy-ca-cert.p12")  # the same, for other clients
KEY_NAME = "mitmproxy-ca.pem"  # certificate and private key: stays on the proxy


@dataclass(frozen=True)
class CaCertificate:
    path: Path
    pem: bytes
    sha256: str  # AA:BB:..., as browsers and `openssl x509 -fingerprint -sha256` show it
    subject: str
    not_before: datetime
    not_after: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "subject": self.subject,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
        }


def read_ca_certificate(confdir: Path) -> CaCertificate:
    """The CA certificate in mitmproxy's confdir; OSError if absent, ValueError if not PEM."""
    path = confdir / CERT_NAME
    pem = path.read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    return CaCertificate(
        path=path,
        pem=pem,
        sha256=certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def key_exposure(confdir: Path) -> str | None:
    """Why the CA's private key file is readable by more than its owner, or None."""
    try:
        mode = (confdir / KEY_NAME).stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{confdir / KEY_NAME} (the CA's private key) is readable by others "
            f"(mode {stat.S_IMODE(mode):o}): chmod 600 it"
        )
    return None
