"""The state database: watermarks, run history and locks (SQLAlchemy Core; SQLite or PostgreSQL).

Data lives in the zones (files); this database only says how far each source has been read, what
each run did, and who is running now. It is small and written in short transactions:

- ``source_state``: per source, the watermark (every statement stored at or before it has been
  durably written) and the Consistent-Through the LRS last promised;
- ``ingest_runs``: one row per run, from start to its end (succeeded or failed, with the counts
  or the error);
- ``locks``: one holder per source at a time; a lock whose holder died (same host, process gone)
  or whose lease ran out is taken over;
- ``voids``: every valid voiding statement seen, per source, with its target and whether it is
  still ``pending`` (target not verified yet), ``applied`` or ``ignored`` (a void of a void);
- ``void_log``: every verified record a void took out of the footprint (statement id, voiding
  statement id, when, run), once per pair, so that delivery can send the correction;
- ``verify_runs``: one row per verification (a window after ingestion, or a quarantine replay)
  with its counts and quality verdict;
- ``delivery_runs``, ``delivery_batches``, ``delivery_records``: the delivery ledger (paragraph
  29): every run, every request sent to the authority (records, payload hash, attempts, status,
  answer) and, per delivered record, the content last built and last acknowledged (read back);
  see :mod:`pipelines.deliver.ledger`. The ledger keys records by ``record_id`` (a uuid5) and
  holds no IIN.

The same code runs on SQLite (the embedded default) and PostgreSQL (production), through any
SQLAlchemy URL; timestamps are stored timezone-aware and always returned in UTC.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

source_state = sa.Table(
    "footprint_source_state", metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("watermark", sa.DateTime(timezone=True)),
    sa.Column("consistent_through", sa.DateTime(timezone=True)),
    sa.Column("last_run_id", sa.String(64)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

ingest_runs = sa.Table(
    "footprint_ingest_runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False, index=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("since", sa.DateTime(timezone=True)),
    sa.Column("until", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("counts", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
)

locks = sa.Table(
    "footprint_locks", metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


voids = sa.Table(
    "footprint_voids", metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("voiding_statement_id", sa.String(64), primary_key=True),
    sa.Column("target_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

void_log = sa.Table(
    "footprint_void_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("statement_id", sa.String(64), nullable=False),
    sa.Column("voiding_statement_id", sa.String(64), nullable=False),
    sa.Column("record_id", sa.String(64)),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("voided_at", sa.DateTime(timezone=True)),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("source", "statement_id", "voiding_statement_id",
                        name="uq_footprint_void_log_pair"),
)

verify_runs = sa.Table(
    "footprint_verify_runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "window" or "replay"
    sa.Column("window", sa.String(128)),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("counts", sa.JSON),
    sa.Column("error", sa.Text),
)

delivery_runs = sa.Table(
    "footprint_delivery_runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), nullable=False),  # running, succeeded, failed, partial
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("counts", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
)

delivery_batches = sa.Table(
    "footprint_delivery_batches", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # save, retry, delete, readback
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("record_ids", sa.JSON, nullable=False),
    sa.Column("payload_sha256", sa.String(64)),
    sa.Column("attempts", sa.Integer, nullable=False),
    # pending (written before sending), acknowledged, partial, failed, interrupted
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("answer", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

delivery_records = sa.Table(
    "footprint_delivery_records", metadata,
    sa.Column("record_id", sa.String(64), primary_key=True),
    sa.Column("built_hash", sa.String(64)),  # content the footprint last gave
    sa.Column("built_at", sa.DateTime(timezone=True)),  # when that content was first built
    sa.Column("acked_hash", sa.String(64)),  # content read back from the authority
    sa.Column("acked_at", sa.DateTime(timezone=True)),
    # new (built, not confirmed), delivered (read back equal), failed, deleted
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("last_batch_id", sa.String(64)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # a batch's records, confirmed together when its read-back sample holds
    sa.Index("ix_footprint_delivery_records_batch", "last_batch_id"),
)


@dataclass(frozen=True)
class StoredVoid:
    source: str
    voiding_statement_id: str
    target_id: str
    at: datetime | None
    status: str
    run_id: str


class LockHeld(Exception):
    """Another live process holds the lock."""


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class SourceState:
    source: str
    watermark: datetime | None
    consistent_through: datetime | None
    last_run_id: str | None
    updated_at: datetime | None


class StateStore:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _wal(dbapi_conn: Any, _rec: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                # the delivery ledger holds a row per record: keep its pages in memory (64 MiB)
                cur.execute("PRAGMA cache_size=-65536")
                cur.close()
        metadata.create_all(self.engine)
        for index in delivery_records.indexes:  # a ledger made before the index existed
            index.create(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- watermarks ---------------------------------------------------------------------------
    def get(self, source: str) -> SourceState:
        with self.engine.connect() as c:
            row = c.execute(sa.select(source_state).where(source_state.c.source == source)).first()
        if row is None:
            return SourceState(source, None, None, None, None)
        return SourceState(
            source, _utc(row.watermark), _utc(row.consistent_through), row.last_run_id,
            _utc(row.updated_at),
        )

    def all(self) -> list[SourceState]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(source_state).order_by(source_state.c.source)).all()
        return [
            SourceState(r.source, _utc(r.watermark), _utc(r.consistent_through), r.last_run_id,
                        _utc(r.updated_at))
            for r in rows
        ]

    def advance(
        self, source: str, watermark: datetime | None, consistent_through: datetime | None,
        run_id: str,
    ) -> None:
        """Set the watermark (never backwards) once the run's output is durably written."""
        now = datetime.now(UTC)
        with self.engine.begin() as c:
            row = c.execute(sa.select(source_state).where(source_state.c.source == source)
                            .with_for_update()).first()
            if row is None:
                c.execute(sa.insert(source_state).values(
                    source=source, watermark=watermark, consistent_through=consistent_through,
                    last_run_id=run_id, updated_at=now))
                return
            old = _utc(row.watermark)
            new = watermark if old is None or (watermark is not None and watermark > old) else old
            c.execute(sa.update(source_state).where(source_state.c.source == source).values(
                watermark=new, consistent_through=consistent_through or row.consistent_through,
                last_run_id=run_id, updated_at=now))

    # -- runs ---------------------------------------------------------------------------------
    def run_started(self, run_id: str, source: str, mode: str, since: datetime | None,
                    until: datetime | None) -> None:
        with self.engine.begin() as c:
            c.execute(sa.insert(ingest_runs).values(
                run_id=run_id, source=source, mode=mode, since=since, until=until,
                started_at=datetime.now(UTC), status="running", host=socket.gethostname(),
                pid=os.getpid()))

    def run_finished(self, run_id: str, status: str, counts: dict[str, Any] | None = None,
                     error: str | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(sa.update(ingest_runs).where(ingest_runs.c.run_id == run_id).values(
                finished_at=datetime.now(UTC), status=status, counts=counts, error=error))

    def runs(self, source: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        q = sa.select(ingest_runs).order_by(ingest_runs.c.started_at.desc()).limit(limit)
        if source:
            q = q.where(ingest_runs.c.source == source)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("since", "until", "started_at", "finished_at"):
                d[k] = _utc(d[k])
            out.append(d)
        return out

    # -- voids ----------------------------------------------------------------------------------
    def voids(self, source: str, status: str | None = None) -> list[StoredVoid]:
        """The voiding statements seen for a source (all, or those with ``status``)."""
        q = sa.select(voids).where(voids.c.source == source)
        if status:
            q = q.where(voids.c.status == status)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(voids.c.at, voids.c.voiding_statement_id)).all()
        return [StoredVoid(r.source, r.voiding_statement_id, r.target_id, _utc(r.at), r.status,
                           r.run_id) for r in rows]

    def record_voids(
        self, source: str, run_id: str, seen: list[tuple[str, str, datetime | None]],
        changes: list[tuple[str, str, str | None, str, datetime | None]],
        ignored: list[str],
    ) -> int:
        """In one transaction: new voids ``(voiding id, target id, at)`` (kept as ``pending``),
        the ``changes`` ``(statement id, voiding id, record id, kind, voided at)`` into the void
        log (once per pair; their voids become ``applied``), and the ``ignored`` voiding ids.
        Returns how many log rows were new."""
        now = datetime.now(UTC)
        new = 0
        with self.engine.begin() as c:
            known = {r[0] for r in c.execute(
                sa.select(voids.c.voiding_statement_id).where(voids.c.source == source))}
            for vid, target, at in seen:
                if vid not in known:
                    c.execute(sa.insert(voids).values(
                        source=source, voiding_statement_id=vid, target_id=target, at=at,
                        status="pending", run_id=run_id, recorded_at=now))
                    known.add(vid)
            logged = {(r[0], r[1]) for r in c.execute(
                sa.select(void_log.c.statement_id, void_log.c.voiding_statement_id)
                .where(void_log.c.source == source))}
            for sid, vid, rec, kind, at in changes:
                if (sid, vid) not in logged:
                    c.execute(sa.insert(void_log).values(
                        source=source, statement_id=sid, voiding_statement_id=vid,
                        record_id=rec, kind=kind, voided_at=at, run_id=run_id, logged_at=now))
                    logged.add((sid, vid))
                    new += 1
                c.execute(sa.update(voids).where(voids.c.source == source)
                          .where(voids.c.voiding_statement_id == vid).values(status="applied"))
            for vid in ignored:
                c.execute(sa.update(voids).where(voids.c.source == source)
                          .where(voids.c.voiding_statement_id == vid).values(status="ignored"))
        return new

    def void_log(self, source: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(void_log).order_by(void_log.c.id)
        if source:
            q = q.where(void_log.c.source == source)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            d["voided_at"], d["logged_at"] = _utc(d["voided_at"]), _utc(d["logged_at"])
            out.append(d)
        return out

    # -- verification runs --------------------------------------------------------------------
    def verify_finished(self, run_id: str, source: str, kind: str, window: str | None,
                        status: str, counts: dict[str, Any], error: str | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(sa.delete(verify_runs).where(verify_runs.c.run_id == run_id))
            c.execute(sa.insert(verify_runs).values(
                run_id=run_id, source=source, kind=kind, window=window,
                finished_at=datetime.now(UTC), status=status, counts=counts, error=error))

    def published_counts(self, source: str, limit: int = 30) -> list[int]:
        """Rows published by the last succeeded window verifications of a source, oldest first."""
        q = (sa.select(verify_runs.c.counts).where(verify_runs.c.source == source)
             .where(verify_runs.c.kind == "window").where(verify_runs.c.status == "succeeded")
             .order_by(verify_runs.c.finished_at.desc()).limit(limit))
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        return [int((r[0] or {}).get("published", 0)) for r in reversed(rows)]

    # -- locks --------------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, ttl: timedelta = timedelta(hours=1)) -> Iterator[LockLease]:
        lease = LockLease(self, name, ttl)
        lease.acquire()
        try:
            yield lease
        finally:
            lease.release()


class LockLease:
    def __init__(self, store: StateStore, name: str, ttl: timedelta) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{os.urandom(4).hex()}"

    def acquire(self) -> None:
        now = datetime.now(UTC)
        values = dict(owner=self.owner, host=self.host, pid=self.pid, acquired_at=now,
                      expires_at=now + self.ttl)
        with self.store.engine.begin() as c:
            row = c.execute(sa.select(locks).where(locks.c.name == self.name)).first()
            if row is None:
                try:
                    with c.begin_nested():
                        c.execute(sa.insert(locks).values(name=self.name, **values))
                    return
                except sa.exc.IntegrityError:
                    row = c.execute(sa.select(locks).where(locks.c.name == self.name)).first()
                    assert row is not None
            expired = _utc(row.expires_at) < now  # type: ignore[operator]
            dead = row.host == self.host and not pid_alive(row.pid)
            if not (expired or dead):
                raise LockHeld(
                    f"{self.name} is held by process {row.pid} on {row.host} since "
                    f"{_utc(row.acquired_at):%Y-%m-%d %H:%M:%S} UTC; wait for it to finish"
                )
            res = c.execute(sa.update(locks).where(locks.c.name == self.name)
                            .where(locks.c.owner == row.owner).values(**values))
            if res.rowcount != 1:
                raise LockHeld(f"{self.name} was taken by another process just now")

    def refresh(self) -> None:
        with self.store.engine.begin() as c:
            c.execute(sa.update(locks).where(locks.c.name == self.name)
                      .where(locks.c.owner == self.owner)
                      .values(expires_at=datetime.now(UTC) + self.ttl))

    def release(self) -> None:
        with self.store.engine.begin() as c:
            c.execute(sa.delete(locks).where(locks.c.name == self.name)
                      .where(locks.c.owner == self.owner))
