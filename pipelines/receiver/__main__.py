"""``python -m pipelines.receiver``: the reference receiver without the ``footprint`` CLI.

Same options as ``footprint receiver serve`` (see its --help); used by
``pipelines.local.receiver.LocalReceiver`` because it starts faster.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.receiver.faults import FaultSettings, FaultSettingsError
from pipelines.receiver.server import (
    DEFAULT_DB,
    DEFAULT_ENTITY,
    DEFAULT_PORT,
    Credentials,
    ReceiverConfig,
    serve,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.receiver",
        description="The reference receiver (the authority's API of pipelines/receiver/API.md) "
                    "on 127.0.0.1. Credentials: --username/--password/--token or "
                    "FOOTPRINT_RECEIVER_USERNAME/PASSWORD/TOKEN.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1 (0: any)")
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help="the SQLite file of its state")
    p.add_argument("--entity", default=DEFAULT_ENTITY)
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--token")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--rate-limit-rate", type=float, default=0.0)
    p.add_argument("--retry-after", type=int, default=1)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--drop-rate", type=float, default=0.0)
    p.add_argument("--reject-rate", type=float, default=0.0)
    p.add_argument("--ignore-field", action="append", default=[], dest="ignore_fields")
    p.add_argument("--no-gzip", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--verbose", action="store_true", help="one stderr line per request")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        faults = FaultSettings().updated({
            "error_rate": a.error_rate, "rate_limit_rate": a.rate_limit_rate,
            "retry_after": a.retry_after, "latency_ms": a.latency_ms, "drop_rate": a.drop_rate,
            "reject_rate": a.reject_rate, "ignore_fields": a.ignore_fields,
            "accept_gzip": not a.no_gzip, "seed": a.seed})
    except FaultSettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = ReceiverConfig(
        db=a.db, port=a.port, entity=a.entity, faults=faults, verbose=a.verbose,
        credentials=Credentials.from_env(a.username, a.password, a.token))
    try:
        serve(config)
    except FaultSettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot listen on 127.0.0.1:{a.port} or open {a.db}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
