"""The delivery ledger: what was sent to the authority, what it answered, what it holds.

Three tables in the state database (:mod:`pipelines.store.state`):

- ``footprint_delivery_runs``: one row per ``footprint deliver`` (running, succeeded, partial,
  failed, interrupted) with its counts or error;
- ``footprint_delivery_batches``: one row per request that changes the authority (a save of up to
  ``batch_size`` records, a one-record retry, a chunk of deletes), **written before it is sent**
  (``pending``) and closed with its fate (``acknowledged``, ``partial``, ``failed``); a row still
  ``pending`` when the next run starts belonged to a run that died mid-request and becomes
  ``interrupted`` — the next run re-sends current content for its records, never the old payload;
- ``footprint_delivery_records``: per record id, the content hash the footprint last built (with
  when it first did: the record's ``updated_at``), the hash last read back from the authority
  (``acked_hash``), the last batch that touched it, and a status: ``new`` (built, never sent),
  ``sending`` / ``deleting`` (in a request whose outcome is not confirmed yet: set in the same
  transaction as the batch row, before the request leaves), ``delivered`` (read back equal, or
  its batch's sample was), ``failed`` (with the authority's reason), ``deleted``, or ``drift``
  (reconcile found the authority's copy missing, different or unexpected). Which
  records a request carried is in its batch row (``record_ids``).

A record is *unchanged* only when it is ``delivered`` and its acknowledged hash equals the
content the footprint gives now; a record *gone* from the footprint is deleted unless it is
``deleted``. Anything in flight when a run dies is therefore re-sent with the current content
(the save is an idempotent full replace) or deleted again, whatever the footprint became in
between.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from pipelines.store.state import (
    StateStore,
    _utc,
    delivery_batches,
    delivery_records,
    delivery_runs,
)

_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    record_id: str
    built_hash: str | None
    acked_hash: str | None
    status: str
    reason: str | None


class Ledger:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.engine = state.engine
        # what SQLAlchemy does to a timestamp for this driver (SQLite: text in its own format;
        # psycopg: nothing), for the executemany fast paths that bypass it
        dialect = self.engine.dialect
        typ = delivery_records.c.updated_at.type
        self._dt_proc = typ.dialect_impl(dialect).bind_processor(dialect)
        self._dt_cache: dict[datetime, Any] = {}

    # -- runs -------------------------------------------------------------------------------------
    def run_started(self, run_id: str, dry_run: bool, now: datetime) -> None:
        with self.engine.begin() as c:
            c.execute(sa.insert(delivery_runs).values(
                run_id=run_id, started_at=now, status="running", dry_run=dry_run,
                host=socket.gethostname(), pid=os.getpid()))

    def run_finished(self, run_id: str, status: str, counts: dict[str, Any] | None = None,
                     error: str | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(sa.update(delivery_runs).where(delivery_runs.c.run_id == run_id).values(
                finished_at=datetime.now(UTC), status=status, counts=counts, error=error))

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        q = sa.select(delivery_runs).order_by(delivery_runs.c.started_at.desc()).limit(limit)
        with self.engine.connect() as c:
            rows = [dict(r) for r in c.execute(q).mappings()]
        for r in rows:
            r["started_at"], r["finished_at"] = _utc(r["started_at"]), _utc(r["finished_at"])
        return rows

    def interrupt_stale(self, run_id: str) -> int:
        """Close what a dead run left open (the caller holds the delivery lock); returns batches."""
        now = datetime.now(UTC)
        with self.engine.begin() as c:
            c.execute(sa.update(delivery_runs).where(delivery_runs.c.status == "running")
                      .where(delivery_runs.c.run_id != run_id)
                      .values(status="interrupted", finished_at=now,
                              error="the process ended before the run finished"))
            res = c.execute(sa.update(delivery_batches)
                            .where(delivery_batches.c.status == "pending")
                            .where(delivery_batches.c.run_id != run_id)
                            .values(status="interrupted", updated_at=now,
                                    answer="no answer recorded: the run died during or before "
                                           "this request; its records are re-sent with current "
                                           "content by the next run"))
            return int(res.rowcount or 0)

    # -- batches ----------------------------------------------------------------------------------
    def batch_pending(self, batch_id: str, run_id: str, seq: int, kind: str,
                      record_ids: Sequence[str], payload_sha256: str | None,
                      built: Sequence[tuple[str, str, datetime]] = (),
                      known: dict[str, LedgerRecord] | None = None) -> None:
        """Write the batch row before its request leaves, and in the same transaction put its
        records in flight: ``sending`` (a save) or ``deleting`` (a delete), with no
        acknowledged hash, so that until the authority's copy is confirmed again no run can
        take them for unchanged (or for deleted), whatever happens in between.

        ``built``: (record id, content hash, first built at) of the records whose content the
        ledger has not seen yet, stamped in the same transaction (what :meth:`mark_built`
        does on its own); ids absent from ``known`` are inserted. One commit per batch: rows
        go through the driver's ``executemany``, not one SQLAlchemy statement per record.
        """
        now = datetime.now(UTC)
        flight = "deleting" if kind == "delete" else "sending"
        known = known or {}
        dt, p, name = self._dt, self._ph, delivery_records.name
        stamp_now = dt(now)
        with self.engine.begin() as c:
            c.execute(sa.insert(delivery_batches).values(
                batch_id=batch_id, run_id=run_id, seq=seq, kind=kind, records=len(record_ids),
                record_ids=list(record_ids), payload_sha256=payload_sha256, attempts=0,
                status="pending", created_at=now, updated_at=now))
            inserts = [(rid, h, dt(at), flight, batch_id, stamp_now)
                       for rid, h, at in built if rid not in known]
            updates = [(h, dt(at), rid) for rid, h, at in built if rid in known]
            if inserts:
                c.exec_driver_sql(
                    f"INSERT INTO {name} (record_id, built_hash, built_at, status, "
                    f"last_batch_id, updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p})", inserts)
            if updates:
                c.exec_driver_sql(f"UPDATE {name} SET built_hash = {p}, built_at = {p} "
                                  f"WHERE record_id = {p}", updates)
            fresh = {row[0] for row in inserts}
            rest = [(flight, batch_id, stamp_now, rid) for rid in record_ids if rid not in fresh]
            if rest:
                c.exec_driver_sql(
                    f"UPDATE {name} SET status = {p}, acked_hash = NULL, last_batch_id = {p}, "
                    f"updated_at = {p} WHERE record_id = {p}", rest)

    @property
    def _ph(self) -> str:
        """The driver's positional placeholder (sqlite3: ``?``; psycopg: ``%s``)."""
        return "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

    def _dt(self, value: datetime) -> Any:
        """A timestamp as the driver takes it for a DateTime(timezone=True) column."""
        if self._dt_proc is None:
            return value
        got = self._dt_cache.get(value)
        if got is None:
            if len(self._dt_cache) > 1024:
                self._dt_cache.clear()
            got = self._dt_cache[value] = self._dt_proc(value)
        return got

    def batch_done(self, batch_id: str, status: str, attempts: int, answer: Any,
                   delivered: Sequence[str] = (), whole_batch: bool = False) -> None:
        """Close a batch row with its fate; ``delivered``: records of it confirmed at once (read
        back equal to their built content), marked in the same transaction. ``whole_batch``:
        they are every record the batch carried, so one statement on the batch's index entries
        marks them instead of one per record."""
        text = answer if isinstance(answer, str) else orjson.dumps(answer).decode()
        now = datetime.now(UTC)
        with self._lazy_commit() as c:
            c.execute(sa.update(delivery_batches)
                      .where(delivery_batches.c.batch_id == batch_id)
                      .values(status=status, attempts=attempts, answer=text[:4000],
                              updated_at=now))
            if delivered and whole_batch:
                p, stamp = self._ph, self._dt(now)
                c.exec_driver_sql(
                    f"UPDATE {delivery_records.name} SET acked_hash = built_hash, "
                    f"acked_at = {p}, status = 'delivered', reason = NULL, updated_at = {p} "
                    f"WHERE last_batch_id = {p} AND status = 'sending'",
                    (stamp, stamp, batch_id))
            else:
                self._delivered_as_built(c, delivered, now)

    @contextmanager
    def _lazy_commit(self) -> Iterator[sa.Connection]:
        """A transaction whose commit does not wait for the disk: it is safe against a crash of
        this process (the database has it), and after a crash of the machine it may be lost,
        which costs only a re-send: a batch closed this way that goes missing stays
        ``pending``, becomes ``interrupted`` and its records are sent again. It is durable at the
        next ordinary commit (SQLite's WAL is written in order; so is PostgreSQL's). Only
        answers go this way: a batch row and its records put in flight, which must be on disk
        before the request leaves, never do."""
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.connect() as c:
            if sqlite:  # a connection setting, outside the transaction (pysqlite sends no BEGIN)
                c.exec_driver_sql("PRAGMA synchronous=NORMAL")
                c.commit()
            try:
                with c.begin():
                    if not sqlite:
                        c.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    yield c
            finally:
                if sqlite:
                    c.exec_driver_sql("PRAGMA synchronous=FULL")
                    c.commit()

    def _delivered_as_built(self, c: sa.Connection, record_ids: Sequence[str],
                            now: datetime) -> None:
        if not record_ids:
            return
        p, stamp = self._ph, self._dt(now)
        c.exec_driver_sql(
            f"UPDATE {delivery_records.name} SET acked_hash = built_hash, acked_at = {p}, "
            f"status = 'delivered', reason = NULL, updated_at = {p} WHERE record_id = {p}",
            [(stamp, stamp, rid) for rid in record_ids])

    def batches(self, limit: int = 20, run_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(delivery_batches).order_by(delivery_batches.c.created_at.desc(),
                                                 delivery_batches.c.seq.desc()).limit(limit)
        if run_id:
            q = q.where(delivery_batches.c.run_id == run_id)
        with self.engine.connect() as c:
            rows = [dict(r) for r in c.execute(q).mappings()]
        for r in rows:
            r["created_at"], r["updated_at"] = _utc(r["created_at"]), _utc(r["updated_at"])
        return rows

    # -- records ----------------------------------------------------------------------------------
    def records(self) -> dict[str, LedgerRecord]:
        t = delivery_records
        q = sa.select(t.c.record_id, t.c.built_hash, t.c.acked_hash, t.c.status, t.c.reason)
        with self.engine.connect() as c:
            return {r[0]: LedgerRecord(*r) for r in c.execute(q)}

    def built_at(self, record_ids: Sequence[str]) -> dict[str, datetime]:
        """When the current content of these records was first built (their ``updated_at``)."""
        t = delivery_records
        q = sa.select(t.c.record_id, t.c.built_at).where(
            t.c.record_id.in_(sa.bindparam("ids", expanding=True)))
        out: dict[str, datetime] = {}
        with self.engine.connect() as c:
            for i in range(0, len(record_ids), 500):
                for rid, at in c.execute(q, {"ids": list(record_ids[i:i + 500])}):
                    if at is not None:
                        out[rid] = _utc(at)  # type: ignore[assignment]
        return out

    def status_counts(self) -> dict[str, int]:
        t = delivery_records
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status)).all()
        return {r[0]: int(r[1]) for r in rows}

    def failed(self, limit: int = 50) -> list[tuple[str, str | None]]:
        t = delivery_records
        q = (sa.select(t.c.record_id, t.c.reason).where(t.c.status == "failed")
             .order_by(t.c.record_id).limit(limit))
        with self.engine.connect() as c:
            return [(r[0], r[1]) for r in c.execute(q)]

    def mark_built(self, items: Iterable[tuple[str, str, datetime]],
                   known: dict[str, LedgerRecord]) -> None:
        """Record the content the footprint now gives (hash, first built at)."""
        now = datetime.now(UTC)
        t = delivery_records
        inserts, updates = [], []
        for rid, h, at in items:
            if rid in known:
                updates.append({"rid": rid, "h": h, "at": at, "now": now})
            else:
                inserts.append({"record_id": rid, "built_hash": h, "built_at": at,
                                "status": "new", "updated_at": now})
        with self.engine.begin() as c:
            for chunk in _chunks(inserts):
                c.execute(sa.insert(t), chunk)
            stmt = (sa.update(t).where(t.c.record_id == sa.bindparam("rid"))
                    .values(built_hash=sa.bindparam("h"), built_at=sa.bindparam("at"),
                            updated_at=sa.bindparam("now")))
            for chunk in _chunks(updates):
                c.execute(stmt, chunk)

    def mark(self, status: str, items: Iterable[tuple[str, str | None]],
             batch_id: str | None = None, reason: str | None = None) -> None:
        """Set the status of records; ``items`` are (record id, hash or per-record reason).

        ``delivered``: hash is the content read back; ``failed``: the second item is the
        reason; ``deleted``: the second item is ignored.
        """
        now = datetime.now(UTC)
        t = delivery_records
        rid: Any = sa.bindparam("rid")
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if batch_id is not None:
            values["last_batch_id"] = batch_id
        if status == "delivered":
            values.update(acked_hash=sa.bindparam("v"), acked_at=now, reason=None)
        elif status == "failed":
            values.update(reason=sa.bindparam("v"))
        elif status == "deleted":
            # a record that comes back is new content, built (and stamped) afresh
            values.update(acked_hash=None, acked_at=now, built_hash=None, built_at=None,
                          reason=reason or "no verified evidence left: deleted logically")
        else:
            raise ValueError(f"unknown delivery record status {status!r}")
        params = [{"rid": r, "v": v} for r, v in items]
        if not params:
            return
        stmt = sa.update(t).where(t.c.record_id == rid).values(**values)
        with self.engine.begin() as c:
            for chunk in _chunks(params):
                c.execute(stmt, chunk)

    def mark_delivered_as_built(self, record_ids: Sequence[str]) -> None:
        """Mark records delivered with their built content (read back equal to it)."""
        with self.engine.begin() as c:
            self._delivered_as_built(c, record_ids, datetime.now(UTC))

    def mark_drift(self, record_ids: Sequence[str], reason: str) -> int:
        """Records reconcile found missing, different or unexpected at the authority: the next
        delivery re-sends (or deletes) them whatever the ledger believed. Returns how many."""
        now = datetime.now(UTC)
        t = delivery_records
        ids = list(record_ids)
        if not ids:
            return 0
        with self.engine.begin() as c:
            known: set[str] = set()
            q = sa.select(t.c.record_id).where(
                t.c.record_id.in_(sa.bindparam("ids", expanding=True)))
            for i in range(0, len(ids), 500):
                known.update(r[0] for r in c.execute(q, {"ids": ids[i:i + 500]}))
            upd = (sa.update(t).where(t.c.record_id.in_(sa.bindparam("ids", expanding=True)))
                   .values(status="drift", acked_hash=None, reason=reason, updated_at=now))
            old = [r for r in ids if r in known]
            for i in range(0, len(old), 500):
                c.execute(upd, {"ids": old[i:i + 500]})
            new = [{"record_id": r, "status": "drift", "reason": reason, "updated_at": now}
                   for r in ids if r not in known]
            for chunk in _chunks(new):
                c.execute(sa.insert(t), chunk)
        return len(ids)


def _chunks(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(rows), _CHUNK):
        yield rows[i:i + _CHUNK]
