"""kill -9 during ingestion, at every stage and at random moments, then a re-run: no gap and no
duplicate in the normalised zone, and the watermark never ahead of what was written."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipelines.generate import TroubleShares, build_university, generate_statements
from pipelines.generate.writers import post_to_lrs
from pipelines.local.lrs import LocalLRS
from pipelines.store.state import StateStore
from pipelines.store.zones import Zones
from tests.integration.conftest import env_with, lrs_ids, lrs_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "pipelines.cli", "ingest", "--json"]
POINTS = ["page:3", "flush:2", "staged", "commit-partition:1", "page:1",
          "before-watermark", "after-watermark"]


def run(cwd: Path, creds: dict[str, str], crash: str | None = None) -> int:
    env = env_with(creds)
    env.pop("FOOTPRINT_CRASH_AT", None)
    if crash:
        env["FOOTPRINT_CRASH_AT"] = crash
    return subprocess.run(CLI, cwd=cwd, env=env, capture_output=True, check=False).returncode


def assert_exactly_once(tmp: Path, endpoint: str) -> None:
    ids = Zones(tmp / "data").read_normalised("main-lrs")["statement_id"].to_pylist()
    assert len(ids) == len(set(ids)), "duplicate statements after a crash"
    assert sorted(ids) == sorted(lrs_ids(endpoint)), "statements missing after a crash"


def test_kill_9_at_each_stage_then_rerun(lrs: LocalLRS, creds: dict[str, str],
                                         tmp_path: Path) -> None:
    univ = build_university(5, students=40, disciplines=6)
    gen = generate_statements(univ, 6_000, 5, TroubleShares.none(),
                              datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    lines = list(gen)
    s = lrs_settings(tmp_path, lrs.endpoint, batch=300, page_size=250)
    chunks = [lines[i::len(POINTS)] for i in range(len(POINTS))]
    for point, chunk in zip(POINTS, chunks, strict=True):
        post_to_lrs(chunk, lrs.endpoint, ("a", "b"))
        before = StateStore(s.state_url).get("main-lrs").watermark
        assert run(tmp_path, creds, crash=point) == -signal.SIGKILL, point
        after = StateStore(s.state_url).get("main-lrs").watermark
        if point != "after-watermark":
            assert after == before, f"watermark moved although {point} crashed before it"
        assert run(tmp_path, creds) == 0, point
        assert_exactly_once(tmp_path, lrs.endpoint)
    runs = StateStore(s.state_url).runs("main-lrs", limit=100)
    assert sum(r["status"] == "running" for r in runs) == len(POINTS)  # the killed ones
    assert not list((tmp_path / "data").rglob(".tmp-*"))


def test_kill_9_at_random_moments_then_rerun(lrs: LocalLRS, creds: dict[str, str],
                                             tmp_path: Path) -> None:
    rng = random.Random(187)
    univ = build_university(9, students=40, disciplines=6)
    post_to_lrs(generate_statements(univ, 8_000, 9, TroubleShares.none(),
                                    datetime(2026, 9, 1, tzinfo=UTC),
                                    datetime(2026, 12, 1, tzinfo=UTC)),
                lrs.endpoint, ("a", "b"))
    lrs_settings(tmp_path, lrs.endpoint, page_size=200)
    env = env_with(creds)
    for _ in range(4):
        p = subprocess.Popen(CLI, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 3.0))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert run(tmp_path, creds) == 0
    assert_exactly_once(tmp_path, lrs.endpoint)
