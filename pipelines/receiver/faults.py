"""Fault injection for the reference receiver: what a flaky authority does to a client.

Every API request (never ``/health`` nor ``/_admin/*``) first sleeps ``latency_ms``, then draws,
in this order and each with its own probability: answer **500 or 503** (``error_rate``), answer
**429** with ``Retry-After: <retry_after>`` (``rate_limit_rate``), or **drop** the connection
without any answer (``drop_rate``: half of the drops before the request is applied, half after
it, so a save can be stored while its client never hears so). In a save, ``reject_rate`` of the
valid records are answered in ``failedRecords`` ("temporarily rejected (fault injection)") and not
stored. ``ignore_fields`` are contract fields the server treats as unknown (dropped silently, as a
server on an older contract would), and ``accept_gzip = false`` answers gzip bodies with 415.

The draws come from one ``random.Random(seed)``, so a run with a seed and the same sequence of
requests sees the same faults.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

RATES = ("error_rate", "rate_limit_rate", "drop_rate", "reject_rate")


class FaultSettingsError(ValueError):
    """A fault setting has an unknown name or a bad value; the message says which."""


@dataclass(frozen=True)
class FaultSettings:
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    latency_ms: float = 0.0
    drop_rate: float = 0.0
    reject_rate: float = 0.0
    ignore_fields: tuple[str, ...] = field(default_factory=tuple)
    accept_gzip: bool = True
    seed: int | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ignore_fields"] = list(self.ignore_fields)
        return out

    def updated(self, changes: Mapping[str, Any], known_fields: Collection[str] | None = None
                ) -> FaultSettings:
        """A copy with ``changes`` applied, each checked; raises :class:`FaultSettingsError`."""
        names = set(FaultSettings.__dataclass_fields__)
        unknown = sorted(set(changes) - names)
        if unknown:
            raise FaultSettingsError(f"unknown fault setting(s) {', '.join(unknown)}; known: "
                                     f"{', '.join(sorted(names))}")
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name in RATES:
                if not _is_number(value) or not 0.0 <= value <= 1.0:
                    raise FaultSettingsError(f"{name} must be a number from 0 to 1, got {value!r}")
                clean[name] = float(value)
            elif name in ("retry_after", "latency_ms"):
                if not _is_number(value) or value < 0:
                    raise FaultSettingsError(f"{name} must be a number >= 0, got {value!r}")
                clean[name] = int(value) if name == "retry_after" else float(value)
            elif name == "ignore_fields":
                if isinstance(value, str) or not isinstance(value, list | tuple) or not all(
                        isinstance(v, str) for v in value):
                    raise FaultSettingsError(f"ignore_fields must be a list of field names, got "
                                             f"{value!r}")
                if known_fields is not None:
                    bad = [v for v in value if v not in known_fields]
                    if bad:
                        raise FaultSettingsError(
                            f"ignore_fields: {', '.join(bad)} is not a field of the contract")
                clean[name] = tuple(dict.fromkeys(value))
            elif name == "accept_gzip":
                if not isinstance(value, bool):
                    raise FaultSettingsError(f"accept_gzip must be true or false, got {value!r}")
                clean[name] = value
            elif name == "seed":
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    raise FaultSettingsError(f"seed must be an integer or null, got {value!r}")
                clean[name] = value
        return replace(self, **clean)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class Decision:
    """What the faults do to one API request."""

    latency_s: float = 0.0
    status: int | None = None  # 500, 503 or 429: answer this before doing anything
    retry_after: int = 0
    drop: str | None = None  # "before" or "after" (the request is applied, then dropped)


NO_FAULT = Decision()


class Faults:
    """The current settings and the seeded random source; thread-safe."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._settings = settings or FaultSettings()
        self._rng = random.Random(self._settings.seed)

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    def update(self, changes: Mapping[str, Any], known_fields: Collection[str] | None = None
               ) -> FaultSettings:
        """Applies run-time changes; a ``seed`` in them restarts the random source."""
        with self._lock:
            new = self._settings.updated(changes, known_fields)
            self._settings = new
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            return new

    def decide(self) -> Decision:
        s = self._settings
        if not (s.error_rate or s.rate_limit_rate or s.drop_rate or s.latency_ms):
            return NO_FAULT
        latency = s.latency_ms / 1000.0
        with self._lock:
            rng = self._rng
            if s.error_rate and rng.random() < s.error_rate:
                return Decision(latency, status=500 if rng.random() < 0.5 else 503)
            if s.rate_limit_rate and rng.random() < s.rate_limit_rate:
                return Decision(latency, status=429, retry_after=s.retry_after)
            if s.drop_rate and rng.random() < s.drop_rate:
                return Decision(latency, drop="before" if rng.random() < 0.5 else "after")
        return Decision(latency)

    def reject_draws(self, n: int) -> list[bool] | None:
        """For a save of ``n`` records: which valid ones to reject (None when reject_rate is 0)."""
        rate = self._settings.reject_rate
        if not rate or n <= 0:
            return None
        with self._lock:
            rng = self._rng
            return [rng.random() < rate for _ in range(n)]
