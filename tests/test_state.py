"""The state database, on SQLite and on the local PostgreSQL, through the same code."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.store.state import LockHeld, StateStore

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def test_state_watermark_round_trips_in_utc_and_never_goes_back(state_url: str) -> None:
    st = StateStore(state_url)
    assert st.get("lrs").watermark is None
    st.advance("lrs", T0, T0 + timedelta(seconds=5), "r1")
    got = st.get("lrs")
    assert got.watermark == T0 and got.watermark.tzinfo is not None
    assert got.consistent_through == T0 + timedelta(seconds=5)
    st.advance("lrs", T0 - timedelta(hours=1), None, "r2")
    assert st.get("lrs").watermark == T0
    assert st.get("lrs").last_run_id == "r2"
    st.advance("lrs", T0 + timedelta(hours=1), None, "r3")
    assert st.get("lrs").watermark == T0 + timedelta(hours=1)
    assert [s.source for s in st.all()] == ["lrs"]
    st.close()


def test_state_runs_record_start_and_end(state_url: str) -> None:
    st = StateStore(state_url)
    st.run_started("r1", "lrs", "incremental", None, T0)
    st.run_finished("r1", "succeeded", {"read": 3, "written": 3})
    st.run_started("r2", "lrs", "backfill", T0 - timedelta(days=1), T0)
    st.run_finished("r2", "failed", {"read": 0}, "source 'lrs': boom")
    runs = st.runs("lrs")
    assert [r["run_id"] for r in runs] == ["r2", "r1"]
    assert runs[0]["error"] == "source 'lrs': boom" and runs[1]["counts"]["written"] == 3
    assert runs[1]["until"] == T0
    st.close()


def test_state_lock_excludes_a_second_holder_until_released(state_url: str) -> None:
    a, b = StateStore(state_url), StateStore(state_url)
    with (a.lock("ingest:lrs"), pytest.raises(LockHeld, match=f"held by process {os.getpid()}"),
          b.lock("ingest:lrs")):
        pass
    with b.lock("ingest:lrs"):
        pass
    a.close()
    b.close()


def test_state_lock_of_a_killed_process_is_taken_over(state_url: str) -> None:
    code = (
        "import os, signal, sys\n"
        "from pipelines.store.state import StateStore\n"
        "st = StateStore(sys.argv[1]); lease = st.lock('ingest:lrs').__enter__()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, state_url], check=False)
    assert proc.returncode == -9
    st = StateStore(state_url)
    with st.lock("ingest:lrs"):
        pass
    st.close()


def test_state_expired_lock_is_taken_over(state_url: str) -> None:
    a, b = StateStore(state_url), StateStore(state_url)
    lease = a.lock("x", ttl=timedelta(seconds=-1))
    lease.__enter__()
    with b.lock("x"):
        pass
    a.close()
    b.close()
