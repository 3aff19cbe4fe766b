"""The receiver's state: one SQLite file (WAL), one row per entity x composite key.

Table ``records``::

    entity, <one column per key field>    -- primary key (the upsert key)
    record_id                             -- unique per entity (find-by-id and delete take it)
    body                                  -- the stored contract fields as JSON text
    deleted, deleted_at                   -- logical delete
    created_at, updated_at, version       -- the server's own fields (version +1 per save)

A save is one transaction (``executemany`` of an upsert). When a record's id is already held by
another key, the batch is replayed record by record so that only that record fails. Writes go
through one connection behind a lock; reads use a small pool of their own connections (WAL lets
them run beside a write).

Durability: WAL with ``synchronous=NORMAL`` (a commit is not fsynced; a power cut may lose the
last saves, a killed process loses nothing committed). SQLite's automatic checkpoint, which
fsyncs, would run inside whichever save crosses 1000 pages; here a background thread checkpoints
instead (``PASSIVE``, every second), so saves never wait for it.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

TABLE = "records"
CHECKPOINT_SECONDS = 1.0
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def utc_now() -> str:
    """Now in UTC as ISO 8601 with milliseconds and a Z: ``2026-11-01T08:00:00.000Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Page:
    items: list[str]  # each record as JSON text
    total: int


class RecordStore:
    """The SQLite state of one receiver; thread-safe."""

    def __init__(self, path: Path, key_fields: Sequence[str]) -> None:
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._writer = self._connect()
        self._writer.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        self._writer.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        keys = ", ".join(_quote(k) for k in self.key_fields)
        key_defs = ", ".join(f"{_quote(k)} TEXT NOT NULL" for k in self.key_fields)
        self._writer.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS {TABLE} (
                entity TEXT NOT NULL,
                {key_defs},
                record_id TEXT NOT NULL,
                body TEXT NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                deleted_at TEXT,
                version INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (entity, {keys}),
                UNIQUE (entity, record_id)
            );
            """
        )
        cols = ", ".join(_quote(k) for k in self.key_fields)
        marks = ", ".join("?" for _ in self.key_fields)
        # The upsert leaves record_id alone (rewriting its random-UUID index entry on every
        # update would double the cost of a re-save): a key that comes with another id than
        # the one stored changes no row here, and _rekey does that rare case.
        self._upsert = (
            f"INSERT INTO {TABLE} (entity, {cols}, record_id, body, deleted, created_at, "
            f"updated_at, deleted_at, version) VALUES (?, {marks}, ?, ?, 0, ?, ?, NULL, 1) "
            f"ON CONFLICT (entity, {cols}) DO UPDATE SET body = excluded.body, deleted = 0, "
            f"deleted_at = NULL, updated_at = excluded.updated_at, "
            f"version = {TABLE}.version + 1 WHERE {TABLE}.record_id = excluded.record_id"
        )
        where_key = " AND ".join(f"{_quote(k)} = ?" for k in self.key_fields)
        self._rekey = (
            f"UPDATE {TABLE} SET record_id = ?, body = ?, deleted = 0, deleted_at = NULL, "
            f"updated_at = ?, version = version + 1 WHERE entity = ? AND {where_key}"
        )

        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="receiver-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conn = self._connect()
        while not self._stop.wait(CHECKPOINT_SECONDS):
            with contextlib.suppress(sqlite3.Error):  # e.g. busy: the next round does it
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        with self._all_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise sqlite3.ProgrammingError("the store is closed")
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._readers.put(conn)

    # -- writes -------------------------------------------------------------------------------

    def save(self, entity: str, rows: Sequence[tuple[int, str, tuple[str, ...], dict[str, Any]]],
             now: str) -> list[tuple[int, str, str]]:
        """Upserts ``rows`` (index, record_id, key values, fields) in one transaction.

        Returns (index, record_id, reason) of the rows that could not be stored (their record_id
        belongs to another key); the others are stored.
        """
        if not rows:
            return []
        params = [(entity, *key, rid, orjson.dumps(fields).decode(), now, now)
                  for _, rid, key, fields in rows]
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                changed = conn.executemany(self._upsert, params).rowcount
            except sqlite3.IntegrityError:
                changed = -1
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if changed == len(params):
                conn.execute("COMMIT")
                return []
            # Slow path (an id held by another key, or a key that comes with a new id): one
            # statement per record, so only the offending ones fail.
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            try:
                failed = [(index, rid, f"record_id {rid} already belongs to a record with "
                                       "another composite key")
                          for (index, rid, _, _), p in zip(rows, params, strict=True)
                          if not self._save_one(conn, p)]
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return failed

    def _save_one(self, conn: sqlite3.Connection, p: tuple[Any, ...]) -> bool:
        n = len(self.key_fields)
        try:
            if conn.execute(self._upsert, p).rowcount == 0:
                # p = (entity, *key, record_id, body, created, updated)
                conn.execute(self._rekey, (p[n + 1], p[n + 2], p[n + 4], *p[: n + 1]))
        except sqlite3.IntegrityError:
            return False
        return True

    def delete(self, entity: str, record_id: str, now: str) -> bool:
        """Marks the record deleted (a deleted one keeps its deletedAt); False if unknown."""
        with self._write_lock:
            cur = self._writer.execute(
                f"UPDATE {TABLE} SET deleted = 1, deleted_at = coalesce(deleted_at, ?) "
                "WHERE entity = ? AND record_id = ?", (now, entity, record_id))
            return cur.rowcount > 0

    # -- reads --------------------------------------------------------------------------------

    _COLS = "body, deleted, deleted_at, created_at, updated_at, version"

    @staticmethod
    def _render(row: tuple[str, int, str | None, str, str, int]) -> str:
        body, deleted, deleted_at, created, updated, version = row
        # The server's fields are ours (booleans, ISO timestamps, ints): no escaping needed.
        when = "null" if deleted_at is None else f'"{deleted_at}"'
        flag = "true" if deleted else "false"
        extra = (f'"deleted":{flag},"deletedAt":{when},"createdAt":"{created}",'
                 f'"updatedAt":"{updated}","version":{version}}}')
        inner = body.rstrip()[:-1].rstrip()
        return inner + ("," if inner != "{" else "") + extra

    def page(self, entity: str, page: int, size: int) -> Page:
        with self._reader() as conn:
            conn.execute("BEGIN")
            try:
                total = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE entity = ?",
                                     (entity,)).fetchone()[0]
                rows = conn.execute(
                    f"SELECT {self._COLS} FROM {TABLE} WHERE entity = ? ORDER BY record_id "
                    "LIMIT ? OFFSET ?", (entity, size, page * size)).fetchall()
            finally:
                conn.execute("COMMIT")
        return Page([self._render(r) for r in rows], total)

    def get(self, entity: str, record_id: str) -> str | None:
        with self._reader() as conn:
            row = conn.execute(f"SELECT {self._COLS} FROM {TABLE} WHERE entity = ? AND "
                               "record_id = ?", (entity, record_id)).fetchone()
        return None if row is None else self._render(row)

    def counts(self) -> dict[str, int]:
        with self._reader() as conn:
            total, deleted = conn.execute(
                f"SELECT count(*), coalesce(sum(deleted), 0) FROM {TABLE}").fetchone()
        return {"stored": total, "active": total - deleted, "deleted": deleted}

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Waits for a running write, checkpoints, then closes every connection (idempotent)."""
        self._stop.set()
        self._checkpointer.join()
        with self._write_lock:
            if not self._closed:
                with contextlib.suppress(sqlite3.Error):  # readers still busy: the WAL stays
                    self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._closed = True
            with self._all_lock:
                conns, self._all = self._all, []
            for conn in conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
