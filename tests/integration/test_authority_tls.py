"""The authority client verifies TLS: an untrusted certificate stops at once, with what to do;
the same server trusted through SSL_CERT_FILE (a private CA) works."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.config import AuthoritySettings, Credentials
from pipelines.deliver.authority import AuthorityClient, FatalAuthorityError

pytestmark = pytest.mark.integration


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"record_id": "r1"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate can be made for this test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}/isvuz/api/", cert
    finally:
        srv.shutdown()
        srv.server_close()


def test_untrusted_certificate_is_fatal_at_once(tls_server: tuple[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    client = AuthorityClient(AuthoritySettings(endpoint=url, max_attempts=5),
                             Credentials("u", "p"), sleep=lambda _s: None)
    with pytest.raises(FatalAuthorityError, match=r"not trusted.*SSL_CERT_FILE"):
        client.find_by_id("r1")
    assert client.stats.requests == 1 and client.stats.retries == 0  # no retry of a bad cert


def test_private_ca_through_ssl_cert_file(tls_server: tuple[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with AuthorityClient(AuthoritySettings(endpoint=url), Credentials("u", "p")) as client:
        assert client.find_by_id("r1") == {"record_id": "r1"}
