"""The local Learning Record Store: Learning Locker's ``xapi-statements``, run as a child process.

The LRS is an npm package (GPL-3.0) installed in the repository's ``lrs/`` folder by
``scripts/bootstrap.sh`` and started by ``lrs/start.js``; footprint only talks to it over HTTP and
never links it. It listens on 127.0.0.1 only, accepts any credentials, speaks xAPI 1.0.3 and keeps
its statements in memory: everything is lost when it stops.

    with LocalLRS(tmp_path) as lrs:
        httpx.get(lrs.endpoint + "about")

The ``lrs/`` folder is found next to the ``pipelines`` package; ``FOOTPRINT_LRS_DIR`` overrides it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from pipelines.local.process import ServerProcess

LRS_DIR_ENV = "FOOTPRINT_LRS_DIR"
HOST = "127.0.0.1"
XAPI_VERSION = "1.0.3"
LOG_NAME = "lrs.log"
_POLL_SECONDS = 0.1
_PORT_ATTEMPTS = 3


class LocalLRSError(RuntimeError):
    """The local LRS cannot be started or used; the message says why, with its last log lines."""


def lrs_dir() -> Path:
    """The folder holding ``start.js``, ``package.json`` and ``node_modules`` of the local LRS."""
    override = os.environ.get(LRS_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "lrs"


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on at ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalLRS(ServerProcess):
    """Starts and stops one local LRS process; a context manager (``with LocalLRS(dir) as lrs``).

    ``data_dir`` receives ``lrs.log`` (the process' stdout and stderr), ``storage/`` (attachments)
    and ``accessLogs/`` (one line per request). Statements themselves live in the process' memory.
    """

    def __init__(self, data_dir: Path, port: int | None = None, node: str = "node") -> None:
        super().__init__(data_dir, port)
        self._node = node

    # -- properties ---------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self._data_dir / LOG_NAME

    @property
    def port(self) -> int:
        """The port the LRS listens on (chosen by :meth:`start` when none was given)."""
        if self._port is None:
            raise LocalLRSError("the local LRS has no port yet: call start() first")
        return self._port

    @property
    def endpoint(self) -> str:
        """The xAPI base URL, with a trailing slash: ``http://127.0.0.1:PORT/xAPI/``."""
        return f"http://{HOST}:{self.port}/xAPI/"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Starts the LRS and returns once ``GET /xAPI/about`` answers 200.

        Raises :class:`LocalLRSError` if it is not installed, if the process exits early or if it
        does not answer within ``timeout`` seconds (the process is stopped then).
        """
        if self.running:
            return
        folder = lrs_dir()
        script = folder / "start.js"
        if not (folder / "node_modules" / "xapi-statements").is_dir():
            raise LocalLRSError(
                f"the local LRS is not installed: {folder / 'node_modules'} is missing; "
                "run scripts/bootstrap.sh (it runs `npm ci` in lrs/)"
            )
        if not script.is_file():
            raise LocalLRSError(f"the local LRS start script is missing: {script}")
        node = shutil.which(self._node)
        if node is None:
            raise LocalLRSError(f"Node.js not found: {self._node!r} is not an executable on PATH")
        self._data_dir.mkdir(parents=True, exist_ok=True)

        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else free_port()
            try:
                self._spawn(node, script, folder, port)
                self._wait_ready(timeout)
                return
            except LocalLRSError as exc:
                in_use = "EADDRINUSE" in str(exc)
                self._terminate()
                if not (in_use and attempt < attempts):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"LocalLRS(port={self._port}, {state}, data_dir={str(self._data_dir)!r})"

    # -- internals ----------------------------------------------------------------------------

    def _environment(self, port: int) -> Mapping[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "EXPRESS_PORT": str(port),
                "AUTH_REPO": "test",
                "EVENTS_REPO": "test",
                "MODELS_REPO": "memory",
                "STORAGE_REPO": "local",
                "FS_LOCAL_STORAGE_DIR": str(self._data_dir / "storage"),
                "EXPRESS_MORGAN_DIRECTORY": str(self._data_dir / "accessLogs"),
                "SERVICE_AWAIT_UPDATES": "true",
                "WINSTON_CONSOLE_LEVEL": "warn",
                "AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE": "1",
                # start.js exits when this process is gone (no LRS left behind by a killed run).
                "FOOTPRINT_LRS_PARENT_PID": str(os.getpid()),
            }
        )
        return env

    def _spawn(self, node: str, script: Path, folder: Path, port: int) -> None:
        self._port = port
        log = self.log_path.open("ab")
        self._log_file = log
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"--- {stamp} footprint: starting the local LRS on {HOST}:{port}\n".encode())
        log.flush()
        self._log_offset = log.tell()
        self._process = subprocess.Popen(
            [node, str(script)],
            cwd=folder,
            env=self._environment(port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_ready(self, timeout: float) -> None:
        process = self._process
        assert process is not None
        ready_line = f"listening on {self.endpoint} (pid {process.pid})"
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                code = process.poll()
                if code is not None:
                    raise LocalLRSError(
                        f"the local LRS exited with code {code} while starting; "
                        f"last lines of {self.log_path}:\n{self._log_tail()}"
                    )
                # The log line proves that *this* process owns the port, not some other server.
                if ready_line in self._log_text():
                    try:
                        response = client.get(
                            self.endpoint + "about",
                            headers={"X-Experience-API-Version": XAPI_VERSION},
                        )
                    except httpx.TransportError:
                        pass
                    else:
                        if response.status_code == 200:
                            return
                if time.monotonic() >= deadline:
                    raise LocalLRSError(
                        f"the local LRS did not answer GET {self.endpoint}about within "
                        f"{timeout:g} s; last lines of {self.log_path}:\n{self._log_tail()}"
                    )
                time.sleep(_POLL_SECONDS)
