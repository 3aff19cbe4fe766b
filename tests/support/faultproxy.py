"""A fault-injecting HTTP proxy in front of a real server (the LRS), for faults we cannot make
the real server produce: 500s, 429 with Retry-After, garbled or truncated bodies, dropped
connections, and `more` links that lead to another host. Everything else is forwarded as is.

Each fault is consumed once, in order, by the first request it matches; `requests` records what
the proxy saw (path and headers) so tests can assert what was, and was not, sent.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Fault:
    action: str  # "status", "retry-after", "garble", "truncate", "drop", "more-elsewhere", "delay"
    match: Callable[[str], bool] = lambda path: True
    status: int = 500
    retry_after: str = "1"
    elsewhere: str = "http://127.0.0.2:9/"
    seconds: float = 0.0
    times: int = 1


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        up = urlsplit(self.upstream)
        self._up_host, self._up_port = up.hostname or "127.0.0.1", up.port or 80
        proxy = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        up = urlsplit(self.upstream)
        return f"http://127.0.0.1:{self.port}{up.path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.times > 0 and f.match(path):
                    f.times -= 1
                    return f
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append(Seen(h.command, h.path, dict(h.headers.items())))
        length = int(h.headers.get("Content-Length") or 0)
        body_in = h.rfile.read(length) if length else None
        fault = self._take_fault(h.path)
        if fault and fault.action == "drop":
            h.close_connection = True
            h.connection.shutdown(2)
            return
        if fault and fault.action == "status":
            self._send(h, fault.status, b'{"error":"injected"}', {})
            return
        if fault and fault.action == "retry-after":
            self._send(h, 429, b'{"error":"slow down"}', {"Retry-After": fault.retry_after})
            return
        if fault and fault.action == "delay":
            import time

            time.sleep(fault.seconds)
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=60)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(h.command, h.path, body=body_in, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        out_headers = {k: v for k, v in resp.getheaders()
                       if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                            "content-encoding")}
        conn.close()
        if fault and fault.action == "garble":
            body = body[: len(body) // 2] + b"}}]]{{not json"
        if fault and fault.action == "more-elsewhere":
            import json

            doc = json.loads(body)
            if doc.get("more"):
                doc["more"] = fault.elsewhere.rstrip("/") + doc["more"]
            body = json.dumps(doc).encode()
        if fault and fault.action == "truncate":
            h.send_response(resp.status)
            for k, v in out_headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(body[: len(body) // 3])
            h.wfile.flush()
            h.close_connection = True
            return
        self._send(h, resp.status, body, out_headers)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
