"""The delivery ledger (pipelines/deliver/ledger.py) on SQLite and on PostgreSQL: same code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipelines.deliver.ledger import Ledger
from pipelines.store.state import StateStore

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def test_ledger_record_lifecycle(state_url: str) -> None:
    state = StateStore(state_url)
    try:
        book = Ledger(state)
        book.mark_built([("a", "h1", T0), ("b", "h2", T0), ("c", "h3", T0)], {})
        known = book.records()
        assert {r: (x.built_hash, x.acked_hash, x.status) for r, x in known.items()} == {
            "a": ("h1", None, "new"), "b": ("h2", None, "new"), "c": ("h3", None, "new")}
        assert book.built_at(["a", "c", "zz"]) == {"a": T0, "c": T0}

        book.mark_delivered_as_built(["a", "b"])
        book.mark("failed", [("c", "rejected: bad programme code")], batch_id="b1")
        known = book.records()
        assert (known["a"].acked_hash, known["a"].status) == ("h1", "delivered")
        assert (known["c"].status, known["c"].reason) == ("failed",
                                                          "rejected: bad programme code")
        assert book.failed() == [("c", "rejected: bad programme code")]

        later = T0 + timedelta(hours=1)
        book.mark_built([("a", "h1b", later)], known)  # content changed: new stamp
        assert book.built_at(["a"]) == {"a": later}
        assert book.records()["a"].acked_hash == "h1"  # still what the authority holds

        book.mark("deleted", [("b", None)])
        assert book.records()["b"].status == "deleted" and book.records()["b"].acked_hash is None

        assert book.mark_drift(["a", "unknown-at-ledger"], "reconcile found drift") == 2
        known = book.records()
        assert (known["a"].status, known["a"].acked_hash) == ("drift", None)
        assert known["unknown-at-ledger"].status == "drift"
        assert book.status_counts() == {"drift": 2, "deleted": 1, "failed": 1}
    finally:
        state.close()


def test_ledger_batches_and_interrupted_runs(state_url: str) -> None:
    state = StateStore(state_url)
    try:
        book = Ledger(state)
        book.run_started("run-1", False, T0)
        book.batch_pending("b1", "run-1", 1, "save", ["a", "b"], "f" * 64)
        book.batch_pending("b2", "run-1", 2, "save", ["c"], "e" * 64)
        book.batch_done("b1", "acknowledged", 2, {"savedRecords": 2, "failedRecords": []})
        # run-1 dies here; run-2 starts and closes what it left open
        book.run_started("run-2", False, T0 + timedelta(minutes=5))
        assert book.interrupt_stale("run-2") == 1
        runs = {r["run_id"]: r for r in book.runs()}
        assert runs["run-1"]["status"] == "interrupted" and runs["run-2"]["status"] == "running"
        batches = {b["batch_id"]: b for b in book.batches()}
        assert batches["b1"]["status"] == "acknowledged" and batches["b1"]["attempts"] == 2
        assert batches["b1"]["record_ids"] == ["a", "b"]
        assert batches["b2"]["status"] == "interrupted" and "re-sent" in batches["b2"]["answer"]
        book.run_finished("run-2", "succeeded", {"new": 3})
        assert book.runs(1)[0]["counts"] == {"new": 3}
    finally:
        state.close()


def test_batch_rows_and_new_content_in_one_transaction(state_url: str) -> None:
    """batch_pending stamps content the ledger has not seen (inserting unknown ids) and puts
    every record of the batch in flight; batch_done closes it and confirms the records it
    names: the driver-level executemany paths give what the SQLAlchemy ones give."""
    state = StateStore(state_url)
    try:
        book = Ledger(state)
        book.mark_built([("a", "h1", T0)], {})
        book.mark_delivered_as_built(["a"])
        known = book.records()
        later = T0 + timedelta(hours=2)
        book.batch_pending("b1", "run-1", 1, "save", ["a", "b", "c"], "f" * 64,
                           [("a", "h1b", later), ("b", "h2", later)], known)
        recs = book.records()
        assert {r: (x.built_hash, x.acked_hash, x.status) for r, x in recs.items()} == {
            "a": ("h1b", None, "sending"), "b": ("h2", None, "sending")}  # c: never built
        assert book.built_at(["a", "b"]) == {"a": later, "b": later}
        assert book.records()["a"].acked_hash is None
        book.batch_done("b1", "acknowledged", 1, {"savedRecords": 2}, delivered=["a"])
        recs = book.records()
        assert (recs["a"].status, recs["a"].acked_hash) == ("delivered", "h1b")
        assert (recs["b"].status, recs["b"].acked_hash) == ("sending", None)
        assert book.batches(5)[0]["status"] == "acknowledged"
        # a batch confirmed whole: its records by the batch id, one statement
        book.batch_pending("b2", "run-1", 2, "save", ["b", "d"], "e" * 64, [("d", "h4", later)],
                           book.records())
        book.batch_done("b2", "acknowledged", 1, {"savedRecords": 2}, delivered=["b", "d"],
                        whole_batch=True)
        recs = book.records()
        assert {r: (recs[r].status, recs[r].acked_hash) for r in "abd"} == {
            "a": ("delivered", "h1b"), "b": ("delivered", "h2"), "d": ("delivered", "h4")}
    finally:
        state.close()


def test_answers_commit_lazily_and_leave_the_connection_as_it_was(state_url: str) -> None:
    """batch_done's commit does not wait for the disk; the pooled connection goes back with
    the durable setting for the next transaction (a pending row must be on disk)."""
    state = StateStore(state_url)
    try:
        book = Ledger(state)
        book.batch_pending("b1", "run-1", 1, "save", ["a"], "f" * 64, [("a", "h1", T0)], {})
        book.batch_done("b1", "acknowledged", 1, {"savedRecords": 1}, delivered=["a"],
                        whole_batch=True)
        assert book.records()["a"].status == "delivered"
        with state.engine.connect() as c:
            if state.engine.dialect.name == "sqlite":
                assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            else:
                assert c.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        state.close()
