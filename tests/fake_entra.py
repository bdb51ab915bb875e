"""A local Entra ID (Azure AD) authority over TLS, and a Logs Ingestion endpoint beside it: the far
side of the wire for azure-identity's ClientSecretCredential and azure-monitor-ingestion.

azure-core refuses bearer tokens over plain http, so both serve HTTPS with a self-signed
certificate made here with `cryptography`; clients trust it through REQUESTS_CA_BUNDLE (`ca_file`).
The authority answers MSAL's OpenID discovery and the client-credentials token request
(`/<tenant>/oauth2/v2.0/token`), checking the client id and secret it was given.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1 / localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365 * 30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class EntraAuthority(_Server):
    """Issues tokens to one client (tenant, client id, secret); records each token request."""

    def __init__(self, cert: Path, key: Path, tenant: str, client_id: str, secret: str) -> None:
        super().__init__(_EntraHandler, cert, key)
        self.tenant, self.client_id, self.secret = tenant, client_id, secret
        self.token_requests: list[dict[str, list[str]]] = []
        self.issued: list[str] = []


class _EntraHandler(BaseHTTPRequestHandler):
    server: EntraAuthority

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        s = self.server
        if "/.well-known/openid-configuration" in self.path:
            base = f"{s.url}/{s.tenant}"
            self._json(200, {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            })  # fmt: skip
            return
        self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        s = self.server
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        s.token_requests.append(form)
        if not self.path.startswith(f"/{s.tenant}/oauth2/v2.0/token"):
            self._json(404, {"error": "not_found"})
            return
        if form.get("client_id") != [s.client_id] or form.get("client_secret") != [s.secret]:
            self._json(401, {"error": "invalid_client", "error_description": "AADSTS7000215"})
            return
        token = f"token-{len(s.issued) + 1}"
        s.issued.append(token)
        self._json(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": token})

    def log_message(self, *args: Any) -> None:
        pass


class LogsIngestion(_Server):
    """The Logs Ingestion API's upload: records the bearer token and rows of each request."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(_IngestionHandler, cert, key)
        self.requests: list[dict[str, Any]] = []


class _IngestionHandler(BaseHTTPRequestHandler):
    server: LogsIngestion

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
        auth = self.headers.get("Authorization")
        self.server.requests.append({"path": self.path, "auth": auth, "rows": json.loads(body)})
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(server: _Server) -> Iterator[_Server]:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
