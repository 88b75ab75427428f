"""What OpenSSL itself holds per TLS connection, without any proxy around it (issue 14).

N pairs of pyOpenSSL connections (a server and a client, as the proxy holds per intercepted
WebSocket: the client-facing one and the upstream one) are handshaken over memory BIOs, as
mitmproxy drives them, with SSL_MODE_RELEASE_BUFFERS as the proxy sets it, exchange 200 bytes
each way, and are kept. Printed: the RSS and the bytes glibc's malloc has in use per pair.

    python bench/bench_tls_memory.py                      # default key exchange groups
    python bench/bench_tls_memory.py --groups X25519:P-256  # without the post-quantum share
    python bench/bench_tls_memory.py --no-handshake       # the objects alone

It reads whichever OpenSSL the running Python's cryptography wheel ships (printed): run it with
each environment's Python to compare them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
from typing import Any

from cryptography import x509
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL._util import lib as _lib

HOST = "example.chime.aws"
openssl: Any = _lib  # cryptography's bindings: the SSL_* functions pyOpenSSL does not wrap


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def in_use() -> int:
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def contexts(groups: str | None) -> tuple[SSL.Context, SSL.Context]:
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    server, client = SSL.Context(SSL.TLS_METHOD), SSL.Context(SSL.TLS_METHOD)
    server.use_privatekey(key)
    server.use_certificate(cert)
    if groups is not None:
        for context in (server, client):
            assert openssl.SSL_CTX_set1_curves_list(context._context, groups.encode()) == 1
    return server, client


def pump(one: SSL.Connection, other: SSL.Connection) -> None:
    moved = True
    while moved:
        moved = False
        for source, sink in ((one, other), (other, one)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                sink.bio_write(data)
                moved = True


def pair(server_context: SSL.Context, client_context: SSL.Context, handshake: bool) -> object:
    server, client = SSL.Connection(server_context), SSL.Connection(client_context)
    server.set_accept_state()
    client.set_connect_state()
    client.set_tlsext_host_name(HOST.encode())
    for connection in (server, client):
        openssl.SSL_set_mode(connection._ssl, SSL.MODE_RELEASE_BUFFERS)
    if handshake:
        for _ in range(10):
            for connection in (client, server):
                with contextlib.suppress(SSL.WantReadError):
                    connection.do_handshake()
            pump(client, server)
        client.send(b"x" * 200)
        pump(client, server)
        server.recv(1000)
        server.send(b"y" * 200)
        pump(server, client)
        client.recv(1000)
    return server, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--groups", help="key exchange groups, OpenSSL syntax (X25519:P-256)")
    parser.add_argument("--no-handshake", action="store_true")
    args = parser.parse_args()
    if args.groups is not None and not hasattr(openssl, "SSL_CTX_set1_curves_list"):
        parser.error("--groups: this cryptography's bindings cannot set the groups")
    server, client = contexts(args.groups)
    kept = []
    rss_before, used_before = rss(), in_use()
    for _ in range(args.pairs):
        kept.append(pair(server, client, not args.no_handshake))
    gc.collect()
    per_rss = (rss() - rss_before) / args.pairs / 1024
    per_used = (in_use() - used_before) / args.pairs / 1024
    print(
        f"{backend.openssl_version_text()}, groups {args.groups or 'default'}, "
        f"{'no handshake' if args.no_handshake else 'handshaken'}: {args.pairs} pairs, "
        f"RSS {per_rss:.1f} KiB, malloc in use {per_used:.1f} KiB per pair"
    )


if __name__ == "__main__":
    main()
