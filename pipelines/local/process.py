"""What the local servers (the LRS, the reference receiver) share: a child process in its own
process group, with its output in a log file, stopped by its own process group id."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO, Self

STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 25


class ServerProcess:
    """Base of the local servers: the process, its state, stop (SIGTERM to the group, SIGKILL
    after the grace period), the context manager and the log helpers. A subclass gives
    ``start`` and ``log_path``."""

    def __init__(self, data_dir: Path, port: int | None) -> None:
        self._data_dir = Path(data_dir)
        self._requested_port = port
        self._port: int | None = port
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The process id while it runs (it also leads its own process group), else None."""
        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 5 s; a no-op when it is not running."""
        self._terminate()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _terminate(self) -> None:
        process = self._process
        try:
            if process is not None and process.poll() is None:
                self._signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self._signal_group(process.pid, signal.SIGKILL)
                    process.wait()
        finally:
            self._process = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _log_text(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        lines = self._log_text().splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(the log is empty)"
