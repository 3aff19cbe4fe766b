"""The local reference receiver (``pipelines.receiver``), run as a child process.

It stands in for the authority's API (``pipelines/receiver/API.md``): it listens on 127.0.0.1
only, keeps its state in ``<data_dir>/receiver.db`` (SQLite, so it survives a restart) and can be
told to misbehave (errors, 429, drops, rejected records, ignored fields, no gzip).

    with LocalReceiver(tmp_path, drop_rate=0.1, seed=7) as rx:
        httpx.post(rx.endpoint + "org-data/list/save?entity=ONLINE_LEARNING", ...)
        rx.set_faults(drop_rate=0)
        rx.stats()["records"]

Without a port, the first start lets the OS pick one and later starts (after :meth:`stop`) ask
for the same one again, so a client keeps its endpoint across a restart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from pipelines.local.lrs import HOST, free_port
from pipelines.local.process import ServerProcess
from pipelines.receiver.faults import FaultSettings
from pipelines.receiver.server import (
    BASE_PATH,
    DEFAULT_ENTITY,
    PARENT_PID_ENV,
    PASSWORD_ENV,
    READY_TEXT,
    TOKEN_ENV,
    USERNAME_ENV,
)

__all__ = ["LocalReceiver", "LocalReceiverError", "free_port"]

LOG_NAME = "receiver.log"
DB_NAME = "receiver.db"
_POLL_SECONDS = 0.05
_REPO = Path(__file__).resolve().parents[2]
_READY = re.compile(re.escape(READY_TEXT) + r" (http://127\.0\.0\.1:(\d+)/\S*) \(pid (\d+);")


class LocalReceiverError(RuntimeError):
    """The local receiver cannot be started or used; the message says why, with its log tail."""


def _fault_args(settings: FaultSettings) -> list[str]:
    d = FaultSettings()
    args: list[str] = []
    for name in ("error_rate", "rate_limit_rate", "retry_after", "latency_ms", "drop_rate",
                 "reject_rate"):
        value = getattr(settings, name)
        if value != getattr(d, name):
            args += ["--" + name.replace("_", "-"), str(value)]
    for f in settings.ignore_fields:
        args += ["--ignore-field", f]
    if not settings.accept_gzip:
        args.append("--no-gzip")
    if settings.seed is not None:
        args += ["--seed", str(settings.seed)]
    return args


class LocalReceiver(ServerProcess):
    """Starts and stops one receiver process; a context manager (``with LocalReceiver(dir)``).

    ``data_dir`` receives ``receiver.db`` (the state) and ``receiver.log`` (its output).
    ``username``/``password``/``token`` are the credentials it accepts (none: any Basic or Bearer
    credential); ``faults`` are the fault settings it starts with (``error_rate``, ``drop_rate``,
    ``seed``... as in ``footprint receiver serve``), changed later with :meth:`set_faults`.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *,
                 entity: str = DEFAULT_ENTITY, username: str | None = None,
                 password: str | None = None, token: str | None = None,
                 python: str = sys.executable, **faults: Any) -> None:
        super().__init__(data_dir, port)
        self._entity = entity
        self._credentials = (username, password, token)
        self._python = python
        try:
            self._faults = FaultSettings().updated(faults)
        except ValueError as exc:
            raise LocalReceiverError(str(exc)) from None

    # -- properties ---------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self._data_dir / DB_NAME

    @property
    def log_path(self) -> Path:
        return self._data_dir / LOG_NAME

    @property
    def entity(self) -> str:
        return self._entity

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalReceiverError("the local receiver has no port yet: call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``/health`` and ``/_admin/*`` live here)."""
        return f"http://{HOST}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The API base URL with a trailing slash: ``http://127.0.0.1:PORT/isvuz/api/``."""
        return self.base_url + BASE_PATH

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Starts the receiver and returns once ``GET /health`` answers 200.

        Raises :class:`LocalReceiverError` if the process exits early or does not answer within
        ``timeout`` seconds (the process is stopped then).
        """
        if self.running:
            return
        self._data_dir.mkdir(parents=True, exist_ok=True)
        port = self._requested_port if self._requested_port is not None else (self._port or 0)
        try:
            self._spawn(port)
            self._wait_ready(timeout)
        except LocalReceiverError as exc:
            self._terminate()
            # The port remembered from an earlier start may be taken now: let the OS pick one.
            if self._requested_port is not None or port == 0 or "cannot listen" not in str(exc):
                raise
            self._spawn(0)
            try:
                self._wait_ready(timeout)
            except LocalReceiverError:
                self._terminate()
                raise

    def restart(self, timeout: float = 20.0) -> None:
        self.stop()
        self.start(timeout)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"LocalReceiver(port={self._port}, {state}, data_dir={str(self._data_dir)!r})"

    # -- admin --------------------------------------------------------------------------------

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Changes fault settings at run time (``POST /_admin/faults``); returns all of them."""
        response = self._admin("POST", "/_admin/faults", json=faults)
        if response.status_code != 200:
            raise LocalReceiverError(f"the receiver refused the fault settings {faults}: "
                                     f"{response.status_code} {response.text}")
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        """``GET /_admin/stats``: requests by endpoint and status, records, faults injected."""
        response = self._admin("GET", "/_admin/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def _admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if not self.running:
            raise LocalReceiverError("the local receiver is not running")
        with httpx.Client(trust_env=False, timeout=10.0) as client:
            return client.request(method, self.base_url + path, **kw)

    # -- internals ----------------------------------------------------------------------------

    def _command(self, port: int) -> list[str]:
        return [self._python, "-m", "pipelines.receiver", "--port", str(port),
                "--db", str(self.db_path.resolve()), "--entity", self._entity,
                *_fault_args(self._faults)]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in zip((USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV), self._credentials,
                               strict=True):
            env.pop(name, None)
            if value is not None:
                env[name] = value
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_REPO) + (os.pathsep + path if path else "")
        # The receiver exits when this process is gone (none left behind by a killed test run).
        env[PARENT_PID_ENV] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, port: int) -> None:
        log = self.log_path.open("ab")
        self._log_file = log
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"--- {stamp} footprint: starting the local receiver on {HOST}:{port or 'any'}"
                  "\n".encode())
        log.flush()
        self._log_offset = log.tell()
        self._process = subprocess.Popen(
            self._command(port), cwd=_REPO, env=self._environment(), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, timeout: float) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                code = process.poll()
                if code is not None:
                    raise LocalReceiverError(
                        f"the local receiver exited with code {code} while starting; "
                        f"last lines of {self.log_path}:\n{self._log_tail()}")
                # The ready line, with this pid, proves that *this* process owns the port.
                match = _READY.search(self._log_text())
                if match and int(match.group(3)) == process.pid:
                    self._port = int(match.group(2))
                    try:
                        response = client.get(self.base_url + "/health")
                    except httpx.TransportError:
                        pass
                    else:
                        if response.status_code == 200:
                            return
                if time.monotonic() >= deadline:
                    raise LocalReceiverError(
                        f"the local receiver did not answer GET /health within {timeout:g} s; "
                        f"last lines of {self.log_path}:\n{self._log_tail()}")
                time.sleep(_POLL_SECONDS)
