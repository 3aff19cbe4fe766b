"""kill -9 inside the verification stage's publish path, then a re-run: the end state is the
clean run's.

The scenario (a generated university, an xapi-file source, real Parquet zones and a real SQLite
state database) is ingested in two backfill windows A and B, then the roster is fixed and the
quarantine replayed. It has a void of an earlier run's record, a void that arrives before its
target, a void in the same batch as its target, an exact duplicate, three conflicting bodies
(stored two days later, the same day, and in window B for a record of window A) and learners
missing from the roster (released by the replay).

Each crash point (``FOOTPRINT_CRASH_AT``, :mod:`pipelines.faults`: the process SIGKILLs itself)
is hit in a child process while verifying window B or replaying; the run is then repeated and
the rest of the scenario played. The verified rows (by statement id and content), the quarantine
(ids, bodies, reasons, window), the voids and the void log must equal the clean run's, and every
statement read must be in exactly one place.

The children are forked from the test process (which has imported Great Expectations already, a
13-second import), so that the matrix stays cheap; one case runs the real CLI in a fresh
interpreter, as ``tests/integration/test_crash.py`` does for ingestion.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines import config
from pipelines.generate import TroubleShares, run_generate
from pipelines.ingest import ingest_source
from pipelines.store.footprint import FootprintZones
from pipelines.store.state import StateStore
from pipelines.verify.stage import replay_quarantine
from tests.conftest import write_config
from tests.test_verify_stage import drop_student, setup, statements, stored_of, void_of

pytestmark = [
    pytest.mark.slow,
    # the forked child runs one step and is killed; it never touches the parent's threads
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

START, END = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)

# crash points while verifying window B (the richest step: voids of every kind, a conflict)
WINDOW_POINTS = [
    "before-verify",
    "verify-voids-recorded",
    "verify-partition:1",
    "verify-partition:3",
    "verify-verified-written",
    "verify-quarantine-file",
    "verify-quarantine-written",
    "verify-before-finished",
]
# crash points while replaying the quarantine after the roster fix
REPLAY_POINTS = [
    "verify-voids-recorded",
    "verify-partition:1",
    "verify-verified-written",
    "verify-quarantine-file:1",
    "verify-quarantine-written",
    "verify-before-finished",
]


def other_body(x: dict[str, Any], stored: datetime) -> dict[str, Any]:
    """Same id, another body."""
    y = copy.deepcopy(x)
    y["result"] = {"completion": True, "duration": "PT7M"}
    y["stored"] = stored.isoformat().replace("+00:00", "Z")
    return y


@dataclass(frozen=True)
class Scenario:
    university: Path
    lines: list[dict[str, Any]]
    mid: datetime
    short_roster: Path
    voids: int  # voiding statements in the input
    duplicates: int  # exact copies in the input (the normalised zone keeps one)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    univ = tmp_path_factory.mktemp("univ")
    run_generate(univ, seed=11, students=60, disciplines=4, statements=600,
                 trouble=TroubleShares.none(), start=START, end=END)
    base = statements(univ)
    mid = stored_of(base[300])
    # which statements verify with the full roster (targets of the voids must)
    probe = tmp_path_factory.mktemp("probe")
    r = ingest_source(setup(probe, univ, base), "dump")
    assert r.verification and r.verification["status"] == "succeeded"
    ok = set(FootprintZones(probe / "data").read_verified("dump")["statement_id"].to_pylist())
    good = [i for i, x in enumerate(base) if x["id"] in ok]
    in_a = [i for i in good if i < 290]
    in_b = [i for i in good if 310 < i < 560]
    after, before, same, conflicted, copied = (
        base[in_a[20]], base[in_b[-10]], base[in_b[-30]], base[in_b[20]], base[in_b[40]])
    extra = [
        void_of(after, mid + timedelta(minutes=1)),  # B voids a record of A (earlier run)
        void_of(before, stored_of(base[10]) + timedelta(milliseconds=1)),  # A voids one of B
        void_of(same, stored_of(same) + timedelta(minutes=1)),  # B voids one of B
        copy.deepcopy(copied),  # an exact copy: same id, same bytes
    ]
    same_day = next(base[i] for i in in_b[60:]
                    if (stored_of(base[i]) + timedelta(seconds=1)).date()
                    == stored_of(base[i]).date())
    extra += [
        other_body(conflicted, stored_of(conflicted) + timedelta(days=2)),
        other_body(same_day, stored_of(same_day) + timedelta(seconds=1)),  # same date partition
        other_body(base[in_a[40]], mid + timedelta(days=1)),  # window B, for a record of A
    ]
    lines = base + extra
    short, n_missing = drop_student(univ, lines, univ / "roster-short.csv")
    assert 0 < n_missing <= 12
    return Scenario(univ, lines, mid, short, voids=3, duplicates=1)


def make(folder: Path, sc: Scenario) -> config.Settings:
    """A run folder: the dump, a roster (the short one until the fix) and the config, every path
    relative to the folder (a copy of the folder is a copy of the run)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "roster.csv").write_bytes(sc.short_roster.read_bytes())
    (folder / "catalogue.csv").write_bytes((sc.university / "catalogue.csv").read_bytes())
    (folder / "dump.ndjson").write_bytes(b"\n".join(orjson.dumps(x) for x in sc.lines) + b"\n")
    write_config(folder, '[storage]\nworkers = 1\n'
                         '[reference]\nroster = "roster.csv"\ncatalogue = "catalogue.csv"\n'
                         '[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "dump.ndjson"\n')
    return config.load(folder / "footprint.toml")


def fix_roster(folder: Path, sc: Scenario) -> None:
    (folder / "roster.csv").write_bytes((sc.university / "roster.csv").read_bytes())


def step(settings: config.Settings, sc: Scenario, name: str) -> dict[str, Any]:
    """One step of the scenario, in this process; its verification report."""
    if name == "A":
        r = ingest_source(settings, "dump", since=START, until=sc.mid)
    elif name == "B":
        r = ingest_source(settings, "dump", since=sc.mid, until=END)
    else:
        return replay_quarantine(settings, "dump", "replay-" + uuid.uuid4().hex[:8]).as_dict()
    assert r.verification is not None
    return r.verification


def _child(folder: str, sc: Scenario, name: str, crash: str) -> None:
    os.environ["FOOTPRINT_CRASH_AT"] = crash
    try:
        step(config.load(Path(folder) / "footprint.toml"), sc, name)
    finally:
        os._exit(3)  # the crash point was not reached


def crash_in_child(folder: Path, sc: Scenario, name: str, crash: str) -> int | None:
    proc = multiprocessing.get_context("fork").Process(
        target=_child, args=(str(folder), sc, name, crash))
    proc.start()
    proc.join(300)
    return proc.exitcode


def end_state(folder: Path) -> dict[str, Any]:
    fz = FootprintZones(folder / "data")
    verified = fz.read_verified("dump").drop_columns(["run_id", "verified_at"]).to_pylist()
    q = fz.read_quarantine("dump").drop_columns(["first_quarantined_at", "run_id"]).to_pylist()
    state = StateStore(config.load(folder / "footprint.toml").state_url)
    try:
        voids = sorted((x.voiding_statement_id, x.target_id, x.status)
                       for x in state.voids("dump"))
        log = sorted((x["statement_id"], x["voiding_statement_id"], x["kind"], x["record_id"])
                     for x in state.void_log("dump"))
    finally:
        state.close()
    return {
        "verified": sorted(verified, key=lambda r: r["statement_id"]),
        "quarantine": sorted(q, key=lambda r: (r["statement_id"], r["raw_sha256"])),
        "voids": voids,
        "void_log": log,
    }


def assert_balanced(report: dict[str, Any]) -> None:
    assert report["status"] == "succeeded", report
    assert report["read"] == (report["verified"] + report["quarantined"] + report["duplicates"]
                              + report["voiding"])


@pytest.fixture(scope="module")
def clean(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The scenario without a crash: its end state, and templates after step A and step B."""
    root = tmp_path_factory.mktemp("clean")
    s = make(root / "run", scenario)
    assert_balanced(step(s, scenario, "A"))
    shutil.copytree(root / "run", root / "after-A")
    assert_balanced(step(s, scenario, "B"))
    shutil.copytree(root / "run", root / "after-B")
    fix_roster(root / "run", scenario)
    replay = step(s, scenario, "replay")
    assert_balanced(replay)
    assert replay["replayed"] > 0
    state = end_state(root / "run")
    # every statement read is in exactly one place, and each void took effect once
    n = len(scenario.lines) - scenario.duplicates
    assert len(state["void_log"]) == scenario.voids == len(state["voids"])
    assert all(status == "applied" for *_, status in state["voids"])
    ids = [r["statement_id"] for r in state["verified"]]
    assert len(ids) == len(set(ids))
    assert n == (len(state["verified"]) + len(state["quarantine"]) + scenario.voids
                 + len({x[0] for x in state["void_log"]}))
    assert [r["reasons"] for r in state["quarantine"]].count(["conflicting-duplicate"]) == 3
    return {"state": state, "after-A": root / "after-A", "after-B": root / "after-B"}


def assert_same_end(folder: Path, clean: dict[str, Any]) -> None:
    got, want = end_state(folder), clean["state"]
    assert [r["statement_id"] for r in got["verified"]] == \
        [r["statement_id"] for r in want["verified"]]
    assert got["verified"] == want["verified"]
    assert got["quarantine"] == want["quarantine"]
    assert got["voids"] == want["voids"]
    assert got["void_log"] == want["void_log"]
    assert not list((folder / "data").rglob(".tmp-*")), "a temporary file was left behind"


@pytest.mark.parametrize("point", WINDOW_POINTS)
def test_kill_9_while_verifying_a_window_then_rerun(
    point: str, scenario: Scenario, clean: dict[str, Any], tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(clean["after-A"], run)
    assert crash_in_child(run, scenario, "B", point) == -signal.SIGKILL, point
    s = config.load(run / "footprint.toml")
    assert_balanced(step(s, scenario, "B"))
    fix_roster(run, scenario)
    assert_balanced(step(s, scenario, "replay"))
    assert_same_end(run, clean)


@pytest.mark.parametrize("point", REPLAY_POINTS)
def test_kill_9_while_replaying_then_rerun(
    point: str, scenario: Scenario, clean: dict[str, Any], tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    shutil.copytree(clean["after-B"], run)
    fix_roster(run, scenario)
    assert crash_in_child(run, scenario, "replay", point) == -signal.SIGKILL, point
    s = config.load(run / "footprint.toml")
    again = step(s, scenario, "replay")
    assert_balanced(again)
    assert_same_end(run, clean)
    # a further replay finds nothing left to release
    assert step(s, scenario, "replay")["replayed"] == 0
    assert_same_end(run, clean)


def test_kill_9_then_rerun_over_a_later_window(
    scenario: Scenario, clean: dict[str, Any], tmp_path: Path,
) -> None:
    """An incremental run killed before its watermark moved is re-run over a window that ends
    later (a new label): its quarantine must not be kept twice, once per window file."""
    run = tmp_path / "run"
    shutil.copytree(clean["after-A"], run)
    last = max(stored_of(x) for x in scenario.lines)
    assert crash_in_child(run, scenario, "B", "verify-before-finished") == -signal.SIGKILL
    s = config.load(run / "footprint.toml")
    r = ingest_source(s, "dump", since=scenario.mid, until=last + timedelta(hours=1))
    assert r.verification is not None
    assert_balanced(r.verification)
    q = FootprintZones(run / "data").read_quarantine("dump")
    keys = list(zip(q["statement_id"].to_pylist(), q["raw_sha256"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "a record is quarantined twice"
    fix_roster(run, scenario)
    assert_balanced(step(s, scenario, "replay"))
    got, want = end_state(run), clean["state"]
    assert got["verified"] == want["verified"]
    strip = [{k: v for k, v in x.items() if k != "window"} for x in got["quarantine"]]
    assert strip == [{k: v for k, v in x.items() if k != "window"} for x in want["quarantine"]]
    assert got["voids"] == want["voids"] and got["void_log"] == want["void_log"]


def test_overlapping_windows_keep_one_quarantine_record_and_its_first_time(
    scenario: Scenario, tmp_path: Path,
) -> None:
    """Windows overlap (an LRS's lookback): a record judged by two windows is quarantined once,
    in the later window's file, and keeps the time it first entered quarantine."""
    s = make(tmp_path, scenario)
    late = stored_of(scenario.lines[400])
    first = ingest_source(s, "dump", since=START, until=late)
    assert first.verification and first.verification["quarantined"] > 0
    fz = FootprintZones(tmp_path / "data")
    q1 = fz.read_quarantine("dump")
    at = dict(zip(q1["statement_id"].to_pylist(), q1["first_quarantined_at"].to_pylist(),
                  strict=True))
    second = ingest_source(s, "dump", since=scenario.mid, until=END)
    assert second.verification and second.verification["quarantined"] > 0
    q2 = fz.read_quarantine("dump")
    ids = q2["statement_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a record is quarantined twice"
    assert len(set(q2["window"].to_pylist())) == 2
    both = [i for i in ids if i in at]
    assert both and any(w.startswith(scenario.mid.strftime("%Y%m%d"))
                        for w in q2["window"].to_pylist())
    for sid, t in zip(ids, q2["first_quarantined_at"].to_pylist(), strict=True):
        if sid in at:
            assert t == at[sid]
    # the roster fixed, a run over a third window (another label) covering both releases the
    # missing learner's records from both files
    fix_roster(tmp_path, scenario)
    third = ingest_source(s, "dump", since=START, until=END)
    assert third.verification and third.verification["status"] == "succeeded"
    q3, verified = fz.read_quarantine("dump"), fz.read_verified("dump")
    assert not any("unknown-learner" in r for r in q3["reasons"].to_pylist())
    assert q3.num_rows < q2.num_rows and set(q3["window"].to_pylist()) == {
        f"{START.strftime('%Y%m%dT%H%M%S')}.000Z--{END.strftime('%Y%m%dT%H%M%S')}.000Z"}
    assert not bodies(q3) & bodies(verified)


def bodies(t: Any) -> set[tuple[str, str]]:
    return set(zip(t["statement_id"].to_pylist(), t["raw_sha256"].to_pylist(), strict=True))


def test_kill_9_in_the_cli_then_rerun(
    scenario: Scenario, clean: dict[str, Any], tmp_path: Path,
) -> None:
    """The same, through ``footprint ingest`` in a fresh interpreter (as the ingestion crash
    tests run it)."""
    run = tmp_path / "run"
    shutil.copytree(clean["after-A"], run)
    cli = [sys.executable, "-m", "pipelines.cli", "ingest", "--json", "--since",
           scenario.mid.isoformat(), "--until", END.isoformat()]
    env = dict(os.environ, FOOTPRINT_CRASH_AT="verify-partition:2")
    p = subprocess.run(cli, cwd=run, env=env, capture_output=True, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    env.pop("FOOTPRINT_CRASH_AT")
    p = subprocess.run(cli, cwd=run, env=env, capture_output=True, check=False)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    out = orjson.loads(p.stdout)
    assert out["verification"] == "succeeded"
    v = out["sources"][0]["verification"]
    assert_balanced(v)
    fix_roster(run, scenario)
    assert_balanced(step(config.load(run / "footprint.toml"), scenario, "replay"))
    assert_same_end(run, clean)


def test_temporary_files_of_a_killed_writer_are_removed(
    scenario: Scenario, clean: dict[str, Any], tmp_path: Path,
) -> None:
    """A writer killed inside ``write_parquet_atomic`` leaves its ``.tmp-*`` file (readers skip
    it); the next verification of the source removes it."""
    run = tmp_path / "run"
    shutil.copytree(clean["after-B"], run)
    data = run / "data"
    day = next((data / "verified" / "source=dump").glob("date=*"))
    left = [day / ".tmp-killed-part-0.parquet",
            next((data / "quarantine" / "source=dump").glob("window=*")) / ".tmp-x-part-0.parquet"]
    for f in left:
        f.write_bytes(b"PAR1 half written")
    fix_roster(run, scenario)
    assert_balanced(step(config.load(run / "footprint.toml"), scenario, "replay"))
    assert not any(f.exists() for f in left)
    assert_same_end(run, clean)
