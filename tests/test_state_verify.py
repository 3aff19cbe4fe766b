"""The verification stage's state tables (voids, void log, verify runs) on SQLite and PostgreSQL.

Exercised only through ``StateStore``'s public methods, with the ``state_url`` fixture (a fresh
SQLite file, or a fresh schema on the local PostgreSQL; skipped with the reason when absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.store.state import StateStore, StoredVoid

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
V1, V2, V3 = "v-0001", "v-0002", "v-0003"  # voiding statement ids
S1, S2, S3 = "s-0001", "s-0002", "s-0003"  # their targets
# a void log change: (statement id, voiding statement id, record id, kind, voided at)
Change = tuple[str, str, str | None, str, datetime | None]


@pytest.fixture
def st(state_url: str) -> Iterator[StateStore]:
    store = StateStore(state_url)
    yield store
    store.close()


def _seen() -> list[tuple[str, str, datetime | None]]:
    # out of time order on purpose, and one void with no time
    return [(V2, S2, T0 + timedelta(minutes=5)), (V1, S1, T0), (V3, S3, None)]


def test_new_voids_are_recorded_pending_in_utc(st: StateStore) -> None:
    assert st.voids("lrs") == []
    new = st.record_voids("lrs", "run-1", seen=_seen(), changes=[], ignored=[])
    assert new == 0  # nothing logged: no target was removed
    got = st.voids("lrs")
    assert {v.voiding_statement_id for v in got} == {V1, V2, V3}
    assert all(isinstance(v, StoredVoid) for v in got)
    assert all(v.status == "pending" and v.run_id == "run-1" for v in got)
    by_id = {v.voiding_statement_id: v for v in got}
    at = by_id[V1].at
    assert by_id[V1].target_id == S1 and at == T0
    assert at is not None and at.utcoffset() == timedelta(0)
    assert by_id[V3].at is None
    # the ones with a time come in time order (the stage relies on "earliest void wins")
    timed = [v.voiding_statement_id for v in got if v.at is not None]
    assert timed == [V1, V2]
    assert [v.voiding_statement_id for v in st.voids("lrs", status="pending")] == \
        [v.voiding_statement_id for v in got]
    assert st.voids("lrs", status="applied") == []
    assert st.voids("other") == []
    assert st.void_log() == []


def test_seen_again_keeps_the_first_record(st: StateStore) -> None:
    st.record_voids("lrs", "run-1", seen=_seen(), changes=[], ignored=[])
    # the same voiding statement seen by a later run (re-read window): not duplicated, and its
    # target/time/run stay what the first run recorded
    st.record_voids("lrs", "run-2", seen=[(V1, "s-other", T0 + timedelta(days=1))],
                    changes=[], ignored=[])
    got = {v.voiding_statement_id: v for v in st.voids("lrs")}
    assert len(got) == 3
    assert (got[V1].target_id, got[V1].at, got[V1].run_id) == (S1, T0, "run-1")


def test_applying_a_pending_void_logs_it_once_and_marks_it_applied(st: StateStore) -> None:
    st.record_voids("lrs", "run-1", seen=_seen(), changes=[], ignored=[])
    # run 2: the target of V1 arrives and is voided; V3 turns out to void a voiding statement
    change = (S1, V1, "rec-1", "pending-resolved", T0)
    new = st.record_voids("lrs", "run-2", seen=[], changes=[change], ignored=[V3])
    assert new == 1
    status = {v.voiding_statement_id: v.status for v in st.voids("lrs")}
    assert status == {V1: "applied", V2: "pending", V3: "ignored"}
    assert [v.voiding_statement_id for v in st.voids("lrs", status="pending")] == [V2]
    assert [v.voiding_statement_id for v in st.voids("lrs", status="ignored")] == [V3]
    log = st.void_log("lrs")
    assert len(log) == 1
    row = log[0]
    assert (row["source"], row["statement_id"], row["voiding_statement_id"]) == ("lrs", S1, V1)
    assert (row["record_id"], row["kind"], row["run_id"]) == ("rec-1", "pending-resolved", "run-2")
    assert row["voided_at"] == T0
    assert row["logged_at"] is not None and row["logged_at"].utcoffset() == timedelta(0)


def test_void_log_is_idempotent_on_rerun(st: StateStore) -> None:
    st.record_voids("lrs", "run-1", seen=_seen(), changes=[], ignored=[])
    changes: list[Change] = [(S1, V1, "rec-1", "pending-resolved", T0),
               (S2, V2, None, "voided", T0 + timedelta(minutes=5))]
    assert st.record_voids("lrs", "run-2", seen=_seen(), changes=changes, ignored=[]) == 2
    first = st.void_log("lrs")
    # the same window verified again (a crash after the state was written, or a re-run):
    # nothing new in the log, the original rows (and their run) untouched
    assert st.record_voids("lrs", "run-3", seen=_seen(), changes=changes, ignored=[]) == 0
    assert st.void_log("lrs") == first
    assert [(r["statement_id"], r["run_id"]) for r in first] == [(S1, "run-2"), (S2, "run-2")]
    assert first[1]["record_id"] is None
    # a duplicate pair inside one call is logged once too
    dup = (S3, V3, "rec-3", "voided", None)
    assert st.record_voids("lrs", "run-4", seen=[], changes=[dup, dup], ignored=[]) == 1
    assert len(st.void_log("lrs")) == 3
    assert {v.status for v in st.voids("lrs")} == {"applied"}


def test_voids_and_log_are_kept_per_source(st: StateStore) -> None:
    st.record_voids("lrs", "run-1", seen=[(V1, S1, T0)],
                    changes=[(S1, V1, "rec-1", "voided", T0)], ignored=[])
    # the same ids from another source are a different void and a different log row
    st.record_voids("dump", "run-2", seen=[(V1, S1, T0)], changes=[], ignored=[])
    assert [v.status for v in st.voids("lrs")] == ["applied"]
    assert [v.status for v in st.voids("dump")] == ["pending"]
    assert st.record_voids("dump", "run-3", seen=[],
                           changes=[(S1, V1, "rec-9", "voided", T0)], ignored=[]) == 1
    assert [r["source"] for r in st.void_log()] == ["lrs", "dump"]  # in logging order
    assert [r["record_id"] for r in st.void_log("dump")] == ["rec-9"]
    assert len(st.void_log("lrs")) == 1


def test_void_state_survives_a_new_store_on_the_same_database(state_url: str) -> None:
    a = StateStore(state_url)
    a.record_voids("lrs", "run-1", seen=[(V1, S1, T0)], changes=[], ignored=[])
    a.close()
    b = StateStore(state_url)  # create_all again: the tables and rows are kept
    assert [(v.voiding_statement_id, v.status) for v in b.voids("lrs")] == [(V1, "pending")]
    assert b.record_voids("lrs", "run-2", seen=[], changes=[(S1, V1, None, "pending-resolved",
                                                             T0)], ignored=[]) == 1
    b.close()


def _counts(published: int) -> dict[str, object]:
    return {"read": published + 2, "verified": published, "quarantined": 2,
            "published": published, "quarantined_by_reason": {"unknown-learner": 2}}


def test_published_counts_are_the_succeeded_window_runs_oldest_first(st: StateStore) -> None:
    assert st.published_counts("lrs") == []
    for i, n in enumerate([100, 120, 90]):
        st.verify_finished(f"w{i}", "lrs", "window", f"A{i}--B{i}", "succeeded", _counts(n))
    # none of these count towards the volume check
    st.verify_finished("f1", "lrs", "window", "A--B", "failed", _counts(5), "quality failed")
    st.verify_finished("r1", "lrs", "replay", None, "succeeded", _counts(7))
    st.verify_finished("o1", "dump", "window", "A--B", "succeeded", _counts(999))
    st.verify_finished("w3", "lrs", "window", "A3--B3", "succeeded", {"read": 0})  # no rows
    assert st.published_counts("lrs") == [100, 120, 90, 0]
    assert st.published_counts("dump") == [999]
    # the limit keeps the most recent ones, still oldest first
    assert st.published_counts("lrs", limit=2) == [90, 0]


def test_verify_run_recorded_again_replaces_its_row(st: StateStore) -> None:
    st.verify_finished("w1", "lrs", "window", "A--B", "failed", _counts(0), "boom")
    assert st.published_counts("lrs") == []
    # the same run id finishing again (a retried verification) replaces, never adds
    st.verify_finished("w1", "lrs", "window", "A--B", "succeeded", _counts(50))
    st.verify_finished("w1", "lrs", "window", "A--B", "succeeded", _counts(60))
    assert st.published_counts("lrs") == [60]
