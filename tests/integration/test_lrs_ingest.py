"""Incremental ingestion from the real LRS: many pages, late arrivals, voids and duplicates."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipelines.generate import TroubleShares, build_university, generate_statements
from pipelines.generate.writers import post_to_lrs
from pipelines.ingest import ingest_source
from pipelines.local.lrs import LocalLRS
from pipelines.store.state import StateStore
from pipelines.store.zones import Zones
from tests.integration.conftest import lrs_ids, lrs_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TROUBLE = TroubleShares(malformed_json=0.0, invalid=0.0, unknown_learner=0.02,
                        exact_duplicate=0.01, conflicting_duplicate=0.005, voiding=0.01,
                        late_arrival=0.02)


def test_lrs_two_incremental_runs_and_old_window_rerun_store_each_statement_once(
    lrs: LocalLRS, creds: dict[str, str], tmp_path: Path,
) -> None:
    univ = build_university(7, students=120, disciplines=10)
    lines = list(generate_statements(univ, 22_000, 7, TROUBLE,
                                     datetime(2026, 9, 1, tzinfo=UTC),
                                     datetime(2026, 11, 1, tzinfo=UTC)))
    kinds = Counter(gl.kind for gl in lines)
    assert kinds["late_arrival"] > 100 and kinds["voiding"] > 100
    assert kinds["exact_duplicate"] > 100 and kinds["conflicting_duplicate"] > 50
    auth = ("footprint", "not-a-secret")
    first = post_to_lrs(lines[:12_000], lrs.endpoint, auth)
    assert first.accepted > 11_000

    s = lrs_settings(tmp_path, lrs.endpoint, page_size=500)
    r1 = ingest_source(s, "main-lrs")
    assert r1.mode == "incremental" and r1.window["since"] is None
    assert r1.pages >= 20 and r1.read == r1.written + r1.rejected + r1.duplicates
    assert r1.consistent_through is not None and r1.watermark_after is not None
    wm1 = StateStore(s.state_url).get("main-lrs").watermark
    assert wm1 is not None

    second = post_to_lrs(lines[12_000:], lrs.endpoint, auth)
    assert second.accepted > 9_000
    r2 = ingest_source(s, "main-lrs")
    assert r2.window["since"] is not None  # from the watermark minus the lookback
    assert datetime.fromisoformat(r2.window["since"]) == wm1 - timedelta(minutes=15)
    assert r2.read >= second.accepted  # plus what the lookback reads again

    # Re-run an old window (a stateless backfill) over the first half of run 1's statements.
    zones = Zones(s.storage_root)
    before = zones.read_normalised("main-lrs")
    stored = pc.sort_indices(before["stored"])
    mid = before["stored"][stored[len(stored) // 2].as_py()].as_py()
    r3 = ingest_source(s, "main-lrs", since=datetime(2000, 1, 1, tzinfo=UTC), until=mid)
    assert r3.mode == "backfill" and r3.written > 5_000
    assert StateStore(s.state_url).get("main-lrs").watermark == datetime.fromisoformat(
        r2.watermark_after)  # a backfill leaves the watermark alone

    table = zones.read_normalised("main-lrs")
    ids = table["statement_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a statement is stored twice"
    visible = set(lrs_ids(lrs.endpoint))
    voided = {gl_target for gl_target in table["voided_statement_id"].to_pylist() if gl_target}
    assert visible <= set(ids), f"{len(visible - set(ids))} LRS statements missing"
    # What we hold beyond the LRS's list can only be statements voided after we read them.
    assert set(ids) - visible <= voided
    late = {gl.statement_id for gl in lines if gl.kind == "late_arrival"}
    assert late & visible <= set(ids)
    # Every raw window file is complete.
    raw = zones.read_raw("main-lrs")
    assert raw.num_rows == r1.read + r2.read + r3.read


def test_lrs_status_and_cli_json(lrs: LocalLRS, creds: dict[str, str], tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    univ = build_university(3, students=20, disciplines=3)
    post_to_lrs(itertools.islice(generate_statements(
        univ, 1_500, 3, TroubleShares.none(), datetime(2026, 9, 1, tzinfo=UTC),
        datetime(2026, 10, 1, tzinfo=UTC)), 1_500), lrs.endpoint, ("a", "b"))
    lrs_settings(tmp_path, lrs.endpoint, page_size=200)
    cli = [sys.executable, "-m", "pipelines.cli"]
    out = subprocess.run([*cli, "ingest", "--json"], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["status"] == "succeeded"
    assert {k: doc[k] for k in ("read", "written", "rejected", "duplicates")} == {
        "read": 1500, "written": 1500, "rejected": 0, "duplicates": 0}
    assert doc["window"]["since"] is None and doc["window"]["until"]
    st = json.loads(subprocess.run([*cli, "status", "--json"], cwd=tmp_path,
                                   capture_output=True, text=True, check=True).stdout)
    src = st["sources"][0]
    assert src["normalised_rows"] == 1500 and src["watermark"] and src["consistent_through"]
    assert src["last_run"]["counts"]["pages"] == 8
