"""What the local servers (the LRS, the reference receiver) share: a child process in its own
process group, with its output in a log file, stopped by its own process group id."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import IO

STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 25


class ServerProcess:
    """Mixin: ``_terminate`` (SIGTERM to the group, SIGKILL after the grace period) and the
    log helpers. The class sets ``_process``, ``_log_file``, ``_log_offset`` and ``log_path``."""

    _process: subprocess.Popen[bytes] | None
    _log_file: IO[bytes] | None
    _log_offset: int

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

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
