"""The reference receiver: the authority's API of ``API.md`` over HTTP, standard library only.

A ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) bound to 127.0.0.1 and nothing else, state in
one SQLite file (``store.py``), records checked against ``schemas/delivered-record.v1.json``
(``contract.py``), faults injected on demand (``faults.py``). It keeps the authority's traps: a
save is a full replace, unknown fields vanish silently with 200, per-record failures come back as
200 with ``failedRecords``, deletes are logical.

    config = ReceiverConfig(db=Path("data/receiver/receiver.db"), port=8300)
    serve(config)            # until SIGTERM or Ctrl-C; prints "... listening on URL (pid N)"

Requests under ``/isvuz/api/`` are the API: they need a credential and are subject to faults.
``GET /health`` and ``/_admin/*`` (stats, faults) need neither and are never faulted.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import math
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from pipelines.receiver.contract import REJECTED_REASON, SCHEMA_PATH, load_contract
from pipelines.receiver.dictionaries import DICTIONARIES
from pipelines.receiver.faults import Decision, Faults, FaultSettings, FaultSettingsError
from pipelines.receiver.store import RecordStore, utc_now

HOST = "127.0.0.1"
BASE_PATH = "/isvuz/api/"
DEFAULT_PORT = 8300
DEFAULT_ENTITY = "ONLINE_LEARNING"
DEFAULT_DB = Path("data/receiver/receiver.db")
USERNAME_ENV = "FOOTPRINT_RECEIVER_USERNAME"
PASSWORD_ENV = "FOOTPRINT_RECEIVER_PASSWORD"
TOKEN_ENV = "FOOTPRINT_RECEIVER_TOKEN"
PARENT_PID_ENV = "FOOTPRINT_RECEIVER_PARENT_PID"
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_INFLATED_BYTES = 256 * 1024 * 1024
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 20
IDLE_TIMEOUT_S = 120.0
READY_TEXT = "footprint receiver listening on"


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What the API accepts. With nothing configured, any Basic or Bearer credential passes (but
    a request without ``Authorization`` is still 401)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls, username: str | None = None, password: str | None = None,
                 token: str | None = None, env: Mapping[str, str] | None = None) -> Credentials:
        """The given values, else ``FOOTPRINT_RECEIVER_USERNAME/PASSWORD/TOKEN``."""
        e = os.environ if env is None else env
        return cls(username if username is not None else e.get(USERNAME_ENV) or None,
                   password if password is not None else e.get(PASSWORD_ENV) or None,
                   token if token is not None else e.get(TOKEN_ENV) or None)

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.username, self.password, self.token))

    @property
    def description(self) -> str:
        if not self.configured:
            return "any Basic or Bearer credential"
        parts = []
        if self.username is not None or self.password is not None:
            parts.append("Basic")
        if self.token is not None:
            parts.append("Bearer")
        return " or ".join(parts) + " (configured)"

    def accepts(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "basic":
            try:
                user, sep, pw = base64.b64decode(value, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            if not sep:
                return False
            if not self.configured:
                return True
            if self.username is None and self.password is None:
                return False  # only a token is configured
            return _same(user, self.username) and _same(pw, self.password)
        if scheme == "bearer":
            if not value:
                return False
            if not self.configured:
                return True
            return self.token is not None and _same(value, self.token)
        return False


def _same(given: str, wanted: str | None) -> bool:
    return wanted is None or hmac.compare_digest(given.encode(), wanted.encode())


@dataclass(frozen=True)
class ReceiverConfig:
    db: Path = DEFAULT_DB
    port: int = DEFAULT_PORT  # 0: the OS picks a free one (the ready line says which)
    entity: str = DEFAULT_ENTITY
    credentials: Credentials = field(default_factory=Credentials)
    faults: FaultSettings = field(default_factory=FaultSettings)
    schema: Path = SCHEMA_PATH
    verbose: bool = False  # one stderr line per request


# -- the application (no sockets) ---------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, doc: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, orjson.dumps(doc), headers)


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return _json(status, {"error": message}, headers)


class _BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


_ROUTES: dict[str, tuple[str, str]] = {
    # relative path -> (endpoint name, method)
    "org-data/list/save": ("save", "POST"),
    "org-data/find-all-pageable": ("find-all-pageable", "GET"),
    "org-data/find-by-id": ("find-by-id", "GET"),
    "common-dictionary/find-all": ("dictionary", "GET"),
}
_DICTIONARY_BODIES = {name: orjson.dumps(items) for name, items in DICTIONARIES.items()}


def route(rel: str) -> tuple[str, str]:
    """(endpoint name, its method) for a path relative to the base, or ("unknown", "")."""
    hit = _ROUTES.get(rel)
    if hit is not None:
        return hit
    if rel.startswith("org-data/") and rel.endswith("/delete") and rel.count("/") == 2:
        return "delete", "POST"
    return "unknown", ""


class Receiver:
    """The receiver's behaviour, independent of the HTTP plumbing; thread-safe."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.contract = load_contract(config.schema)
        settings = config.faults.updated({"ignore_fields": list(config.faults.ignore_fields)},
                                         self.contract.fields)  # checks the names
        self.faults = Faults(settings)
        self.store = RecordStore(config.db, self.contract.key_fields)
        self.started_at = utc_now()
        self._stats_lock = threading.Lock()
        self._requests: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int))
        self._fault_counts: defaultdict[str, int] = defaultdict(int)

    # -- stats ----------------------------------------------------------------------------

    def count(self, endpoint: str, status: int | str) -> None:
        with self._stats_lock:
            self._requests[endpoint][str(status)] += 1

    def count_fault(self, name: str, n: int = 1) -> None:
        if n:
            with self._stats_lock:
                self._fault_counts[name] += n

    def stats(self) -> dict[str, Any]:
        """``requests``: {endpoint: {status or "dropped": count}}; ``records``: stored (all rows),
        active, deleted; ``injected``: faults injected so far (errors, rateLimited, droppedBefore,
        droppedAfter, rejectedRecords); ``settings``: the fault settings now."""
        with self._stats_lock:
            requests = {ep: dict(sorted(c.items())) for ep, c in sorted(self._requests.items())}
            faults = dict(sorted(self._fault_counts.items()))
        return {"entity": self.config.entity, "startedAt": self.started_at,
                "requests": requests, "records": self.store.counts(), "injected": faults,
                "settings": self.faults.settings.as_json()}

    # -- reference-receiver endpoints ---------------------------------------------------------

    def handle_local(self, method: str, path: str, body: bytes) -> Response:
        """``/health`` and ``/_admin/*``: no credential, no faults."""
        if path == "/health":
            return (_json(200, {"status": "ok"}) if method in ("GET", "HEAD")
                    else _error(405, "use GET", (("Allow", "GET"),)))
        if path == "/_admin/stats":
            return (_json(200, self.stats()) if method == "GET"
                    else _error(405, "use GET", (("Allow", "GET"),)))
        if path == "/_admin/faults":
            if method == "GET":
                return _json(200, self.faults.settings.as_json())
            if method != "POST":
                return _error(405, "use GET or POST", (("Allow", "GET, POST"),))
            try:
                changes = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError as exc:
                return _error(400, f"malformed JSON: {exc}")
            if not isinstance(changes, dict):
                return _error(400, "the body must be a JSON object of fault settings")
            try:
                new = self.faults.update(changes, self.contract.fields)
            except FaultSettingsError as exc:
                return _error(400, str(exc))
            return _json(200, new.as_json())
        return _error(404, "not found")

    # -- the API ------------------------------------------------------------------------------

    def handle_api(self, method: str, endpoint: str, rel: str, query: str,
                   headers: Mapping[str, str] | Message[str, str], body: bytes) -> Response:
        if not self.config.credentials.accepts(headers.get("Authorization")):
            return _error(401, "unauthorized", (("WWW-Authenticate", 'Basic realm="isvuz"'),))
        if endpoint == "unknown":
            return _error(404, "not found")
        want = "POST" if endpoint in ("save", "delete") else "GET"
        if method != want:
            return _error(405, f"use {want}", (("Allow", want),))
        params = parse_qs(query, keep_blank_values=True)
        try:
            if endpoint == "save":
                return self._save(self._entity(params), headers, body)
            if endpoint == "find-all-pageable":
                return self._page(self._entity(params), params)
            if endpoint == "find-by-id":
                return self._find(self._entity(params), params)
            if endpoint == "delete":
                record_id = unquote(rel.split("/")[1])
                return self._delete(self._entity(params), record_id)
            return self._dictionary(params)
        except _BadRequest as exc:
            return exc.response

    @staticmethod
    def _param(params: Mapping[str, list[str]], name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    def _entity(self, params: Mapping[str, list[str]]) -> str:
        entity = self._param(params, "entity")
        if not entity:
            raise _BadRequest(_error(400, "the entity parameter is required"))
        if entity != self.config.entity:
            raise _BadRequest(_error(404, f"unknown entity {entity!r}"))
        return entity

    def _int_param(self, params: Mapping[str, list[str]], name: str, default: int, low: int,
                   high: int | None) -> int:
        raw = self._param(params, name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise _BadRequest(_error(400, f"{name} must be an integer {span}, got {raw!r}"))
        return value

    def _decode(self, headers: Mapping[str, str] | Message[str, str], body: bytes) -> bytes:
        encoding = (headers.get("Content-Encoding") or "").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "x-gzip"):
            raise _BadRequest(_error(415, f"Content-Encoding {encoding!r} is not supported; "
                                          "send plain JSON"))
        if not self.faults.settings.accept_gzip:
            raise _BadRequest(_error(415, "Content-Encoding gzip is not accepted here; send "
                                          "plain JSON"))
        inflater = zlib.decompressobj(wbits=31)
        try:
            out = inflater.decompress(body, MAX_INFLATED_BYTES)
        except zlib.error as exc:
            raise _BadRequest(_error(400, f"the gzip body cannot be read: {exc}")) from None
        if inflater.unconsumed_tail:
            raise _BadRequest(_error(413, f"the body inflates to more than "
                                          f"{MAX_INFLATED_BYTES} bytes"))
        if not inflater.eof:
            raise _BadRequest(_error(400, "the gzip body is truncated"))
        return out

    def _save(self, entity: str, headers: Mapping[str, str] | Message[str, str], body: bytes
              ) -> Response:
        data = self._decode(headers, body)
        try:
            records = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"malformed JSON: {exc}")
        if type(records) is not list:
            return _error(400, "the body must be a JSON array of records")
        draws = self.faults.reject_draws(len(records))
        reject: Callable[[], bool] | None = iter(draws).__next__ if draws else None
        prepared = self.contract.prepare(records, self.faults.settings.ignore_fields, reject)
        conflicts = self.store.save(entity, prepared.rows, utc_now())
        failed = sorted([*prepared.failed, *conflicts], key=lambda f: f[0])
        if reject is not None:
            rejected = sum(1 for f in prepared.failed if f[2] == REJECTED_REASON)
            self.count_fault("rejectedRecords", rejected)
        return _json(200, {
            "savedRecords": len(prepared.rows) - len(conflicts),
            "failedRecords": [{"index": i, "recordId": rid, "reason": reason}
                              for i, rid, reason in failed],
        })

    def _page(self, entity: str, params: Mapping[str, list[str]]) -> Response:
        page = self._int_param(params, "page", 0, 0, None)
        size = self._int_param(params, "size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        result = self.store.page(entity, page, size)
        pages = math.ceil(result.total / size)
        tail = orjson.dumps({"page": page, "size": size, "totalElements": result.total,
                             "totalPages": pages, "last": page + 1 >= pages})
        body = b'{"content":[' + ",".join(result.items).encode() + b"]," + tail[1:]
        return Response(200, body)

    def _find(self, entity: str, params: Mapping[str, list[str]]) -> Response:
        record_id = self._param(params, "id")
        if not record_id:
            return _error(400, "the id parameter is required")
        found = self.store.get(entity, record_id)
        return _error(404, "not found") if found is None else Response(200, found.encode())

    def _delete(self, entity: str, record_id: str) -> Response:
        if not record_id or not self.store.delete(entity, record_id, utc_now()):
            return _error(404, "not found")
        return _json(200, {"id": record_id, "deleted": True})

    def _dictionary(self, params: Mapping[str, list[str]]) -> Response:
        kind = self._param(params, "type")
        if not kind:
            return _error(400, f"the type parameter is required ({', '.join(DICTIONARIES)})")
        body = _DICTIONARY_BODIES.get(kind)
        if body is None:
            return _error(404, f"unknown dictionary type {kind!r}; known: "
                               f"{', '.join(DICTIONARIES)}")
        return Response(200, body)

    def close(self) -> None:
        self.store.close()


# -- HTTP plumbing ------------------------------------------------------------------------------


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "footprint-receiver/1"
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_S
    server: ReceiverHTTPServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.config.verbose:
            sys.stderr.write(f"{self.log_date_time_string()} {format % args}\n")

    # -- request --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise _BodyError(400, f"bad Content-Length {length!r}") from None
        if n < 0:
            raise _BodyError(400, f"bad Content-Length {length!r}")
        if n > MAX_BODY_BYTES:
            raise _BodyError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        body = self.rfile.read(n)
        if len(body) < n:
            raise _BodyError(400, "the body is shorter than its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(400, "bad chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1026) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _BodyError(400, "the chunked body is truncated")
            parts.append(chunk)
            self.rfile.readline(3)  # the CRLF after each chunk

    # -- response -------------------------------------------------------------------------

    def _send(self, response: Response, method: str) -> None:
        status = response.status
        lines = [f"{self.protocol_version} {status} {HTTPStatus(status).phrase}",
                 f"Server: {self.server_version}", f"Date: {self.date_time_string()}",
                 "Content-Type: application/json; charset=utf-8",
                 f"Content-Length: {len(response.body)}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # Head and body in one write (with TCP_NODELAY: no Nagle / delayed-ACK stall).
        self.wfile.write(head if method == "HEAD" else head + response.body)
        self.log_request(status, len(response.body))

    def _drop(self) -> None:
        """Closes the connection without a byte of answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _handle(self, method: str) -> None:
        app = self.server.app
        path = urlsplit(self.path)
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            self._send(_error(exc.status, exc.message), method)
            return
        try:
            if path.path == "/health" or path.path.startswith("/_admin/"):
                self._send(app.handle_local(method, path.path, body), method)
                return
            if not path.path.startswith(BASE_PATH):
                app.count("unknown", 404)
                self._send(_error(404, f"not found; the API is under {BASE_PATH}"), method)
                return
            rel = path.path[len(BASE_PATH):]
            endpoint, _ = route(rel)
            decision = app.faults.decide()
            if self._inject(app, endpoint, decision, method):
                return
            response = app.handle_api(method, endpoint, rel, path.query, self.headers, body)
            if decision.drop == "after":
                app.count(endpoint, "dropped")
                app.count_fault("droppedAfter")
                self._drop()
                return
            app.count(endpoint, response.status)
            self._send(response, method)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._send(_error(500, "internal error in the receiver (see its log)"), method)

    def _inject(self, app: Receiver, endpoint: str, decision: Decision, method: str) -> bool:
        """Applies the faults that come before the request; True when the request ends here."""
        if decision.latency_s:
            time.sleep(decision.latency_s)
        if decision.status == 429:
            app.count(endpoint, 429)
            app.count_fault("rateLimited")
            self._send(_error(429, "too many requests",
                              (("Retry-After", str(decision.retry_after)),)), method)
            return True
        if decision.status is not None:
            app.count(endpoint, decision.status)
            app.count_fault("errors")
            message = HTTPStatus(decision.status).phrase.lower()
            self._send(_error(decision.status, f"{message} (fault injection)"), method)
            return True
        if decision.drop == "before":
            app.count(endpoint, "dropped")
            app.count_fault("droppedBefore")
            self._drop()
            return True
        return False


class ReceiverHTTPServer(ThreadingHTTPServer):
    """Listens on 127.0.0.1 only; one thread per connection (keep-alive)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app: Receiver, port: int) -> None:
        self.app = app
        super().__init__((HOST, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (getfqdn): slow and not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name = HOST
        self.server_port = self.server_address[1]

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}{BASE_PATH}"


class ReceiverServer:
    """The receiver in this process: ``start()`` serves in a thread, ``stop()`` ends it."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.app = Receiver(config)
        try:
            self.http = ReceiverHTTPServer(self.app, config.port)
        except BaseException:
            self.app.close()
            raise
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return self.http.endpoint

    @property
    def port(self) -> int:
        return self.http.port

    def start(self) -> None:
        self._thread = threading.Thread(target=self.http.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="receiver-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.http.shutdown()
            self._thread.join()
            self._thread = None
        self.http.server_close()
        self.app.close()  # waits for a save in progress, then closes SQLite

    def __enter__(self) -> ReceiverServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _watch_parent(pid: int, stop: threading.Event) -> None:
    """Sets ``stop`` once process ``pid`` is gone (or, being our parent, has left us to init:
    a parent killed with SIGKILL can linger as a zombie that still answers kill(pid, 0))."""
    was_parent = os.getppid() == pid
    while not stop.wait(0.5):
        if was_parent and os.getppid() != pid:
            stop.set()
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stop.set()
        except PermissionError:
            pass


def serve(config: ReceiverConfig, out: Any = None) -> None:
    """Runs the receiver until SIGTERM, SIGINT (Ctrl-C) or, when ``FOOTPRINT_RECEIVER_PARENT_PID``
    is set, until that process is gone. Prints one line with the URL when ready."""
    stream = sys.stdout if out is None else out
    server = ReceiverServer(config)
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and parent.isdigit():
        threading.Thread(target=_watch_parent, args=(int(parent), stop), daemon=True).start()
    server.start()
    try:
        print(f"{READY_TEXT} {server.endpoint} (pid {os.getpid()}; db {config.db}; "
              f"auth: {config.credentials.description}); Ctrl-C stops it",
              file=stream, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
