"""Conflicting duplicates (one statement id, two bodies) end to end, and what replay does with them.

The rule (pipelines/verify/rules.py, ``conflicting-duplicate``; pipelines/verify/stage.py,
``replay_quarantine``): the id belongs to the first body received (earliest ``stored`` within a
verification; across runs, the body an earlier run verified or quarantined for another reason),
as an LRS keeps the first and answers 409 to the rest. Every other body is quarantined as a
conflict and replay never releases it: it stays, counted among the quarantined, until a person
corrects the source. So at most one body of an id is ever in the verified footprint.

Real files throughout: a generated university, an NDJSON xapi-file source, the Parquet zones and
the SQLite state database.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from pipelines import config
from pipelines.cli import app
from pipelines.generate import TroubleShares, run_generate
from pipelines.ingest import IngestReport, ingest_source
from pipelines.store.footprint import FootprintZones
from pipelines.verify.stage import replay_quarantine
from tests.test_verify_stage import drop_student, setup, statements, stored_of

START, END = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
CONFLICT = "conflicting-duplicate"


@dataclass(frozen=True)
class World:
    university: Path
    lines: list[dict[str, Any]]
    ok: set[str]  # ids that verify with the full roster
    mid: datetime


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    univ = tmp_path_factory.mktemp("univ")
    run_generate(univ, seed=11, students=60, disciplines=4, statements=600,
                 trouble=TroubleShares.none(), start=START, end=END)
    lines = statements(univ)
    probe = tmp_path_factory.mktemp("probe")
    r = ingest_source(setup(probe, univ, lines), "dump")
    assert r.verification and r.verification["status"] == "succeeded"
    ok = set(FootprintZones(probe / "data").read_verified("dump")["statement_id"].to_pylist())
    return World(univ, lines, ok, stored_of(lines[300]))


def sha(x: dict[str, Any]) -> str:
    """The raw_sha256 of a line as the dump holds it."""
    return hashlib.sha256(orjson.dumps(x)).hexdigest()


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def other_body(x: dict[str, Any], stored: datetime) -> dict[str, Any]:
    """Same id, another (valid, plausible) body, stored at ``stored``."""
    y = copy.deepcopy(x)
    y["result"] = {"completion": True, "duration": "PT7M"}
    y["stored"] = iso(stored)
    return y


def assert_balanced(v: dict[str, Any] | None) -> dict[str, Any]:
    assert v is not None and v["status"] == "succeeded", v
    assert v["read"] == v["verified"] + v["quarantined"] + v["duplicates"] + v["voiding"]
    return v


def bodies(folder: Path) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, list[str]]]]]:
    """Verified bodies by id (a list, to see a second one) and quarantined (sha, reasons)."""
    fz = FootprintZones(folder / "data")
    v: dict[str, list[str]] = {}
    t = fz.read_verified("dump")
    for i, s in zip(t["statement_id"].to_pylist(), t["raw_sha256"].to_pylist(), strict=True):
        v.setdefault(i, []).append(s)
    q: dict[str, list[tuple[str, list[str]]]] = {}
    t = fz.read_quarantine("dump")
    for i, s, r in zip(t["statement_id"].to_pylist(), t["raw_sha256"].to_pylist(),
                       t["reasons"].to_pylist(), strict=True):
        q.setdefault(i, []).append((s, r))
    return v, q


def snapshot(folder: Path) -> dict[str, Any]:
    fz = FootprintZones(folder / "data")
    ver = fz.read_verified("dump").drop_columns(["run_id", "verified_at"]).to_pylist()
    q = fz.read_quarantine("dump").drop_columns(["run_id"]).to_pylist()
    return {"verified": sorted(ver, key=lambda r: r["statement_id"]),
            "quarantine": sorted(q, key=lambda r: (r["statement_id"], r["raw_sha256"]))}


def test_same_day_conflict_is_quarantined_and_the_earliest_stored_body_wins(
    world: World, tmp_path: Path,
) -> None:
    """Two bodies stored the same day: the normalised zone keeps one row per id and day (the
    first read) and counts the other as a duplicate; verification takes the other body back
    from the raw zone, and the earliest stored one is the statement even though it was read
    second."""
    lines = world.lines
    x = next(x for x in lines[100:] if x["id"] in world.ok
             and (stored_of(x) - timedelta(minutes=1)).date() == stored_of(x).date())
    earlier = other_body(x, stored_of(x) - timedelta(minutes=1))  # last in the file
    s = setup(tmp_path, world.university, [*lines, earlier])
    r = ingest_source(s, "dump")
    assert r.written == len(lines) and r.duplicates == 1  # the normalised zone dropped one body
    v = assert_balanced(r.verification)
    assert v["recovered"] == 1 and v["read"] == r.written + 1
    assert v["quarantined_by_reason"][CONFLICT] == 1
    verified, quarantined = bodies(tmp_path)
    assert verified[x["id"]] == [sha(earlier)]  # earliest stored, though read second
    assert quarantined[x["id"]] == [(sha(x), [CONFLICT])]
    assert all(len(b) == 1 for b in verified.values())
    # every body read is in exactly one place
    assert len(lines) + 1 == sum(map(len, verified.values())) + sum(map(len, quarantined.values()))
    # re-running the window changes nothing
    before = snapshot(tmp_path)
    assert_balanced(ingest_source(s, "dump").verification)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("order", ["in-order", "later-window-first"])
def test_conflict_across_windows_never_verifies_two_bodies(
    world: World, tmp_path: Path, order: str,
) -> None:
    """Body 1 in window A, body 2 of the same id in window B. Whichever window is verified first
    puts its body in the verified footprint; the other is quarantined as a conflict, stays there
    on re-runs of both windows, and replay does not release it."""
    lines = world.lines
    x = next(x for x in lines[150:290] if x["id"] in world.ok)
    later = other_body(x, world.mid + timedelta(days=3))
    s = setup(tmp_path, world.university, [*lines, later])
    a = {"since": START, "until": world.mid}
    b = {"since": world.mid, "until": END}
    windows = [a, b] if order == "in-order" else [b, a]
    first, second = windows
    assert_balanced(ingest_source(s, "dump", **first).verification)
    v2 = assert_balanced(ingest_source(s, "dump", **second).verification)
    assert v2["quarantined_by_reason"][CONFLICT] == 1
    kept, lost = (x, later) if order == "in-order" else (later, x)
    verified, quarantined = bodies(tmp_path)
    assert verified[x["id"]] == [sha(kept)]
    assert quarantined[x["id"]] == [(sha(lost), [CONFLICT])]
    assert all(len(v) == 1 for v in verified.values())
    # stable: both windows again, in either order, and a replay, change nothing
    before = snapshot(tmp_path)
    for w in (first, second, first):
        assert_balanced(ingest_source(s, "dump", **w).verification)
    assert snapshot(tmp_path) == before
    rep = assert_balanced(replay_quarantine(s, "dump", "replay-1").as_dict())
    assert rep["replayed"] == 0 and rep["conflicts_held"] == 1
    assert rep["quarantined_by_reason"][CONFLICT] == 1
    q_rows = sum(map(len, quarantined.values()))
    assert rep["read"] == rep["quarantined"] == q_rows
    after = snapshot(tmp_path)
    assert after["verified"] == before["verified"]
    assert [(r["statement_id"], r["raw_sha256"], r["reasons"]) for r in after["quarantine"]] == \
        [(r["statement_id"], r["raw_sha256"], r["reasons"]) for r in before["quarantine"]]


def test_replay_releases_the_first_body_and_keeps_the_conflict(
    world: World, tmp_path: Path,
) -> None:
    """The first body waits in quarantine (its learner is missing from the roster) and the
    second is a conflict. Replay after the roster fix releases the first body only; the conflict
    stays, reported among those that stay; replaying again changes nothing; counts balance."""
    lines = world.lines
    roster, n_missing = drop_student(world.university, lines, tmp_path / "short.csv")
    with roster.open(encoding="utf-8", newline="") as fh:
        names = {row["lms_account"] for row in csv.DictReader(fh)}
    x = next(x for x in lines if x["id"] in world.ok and "account" in x["actor"]
             and x["actor"]["account"]["name"] not in names)
    second = other_body(x, stored_of(x) + timedelta(days=1))
    s = setup(tmp_path, world.university, [*lines, second], roster=roster)
    v = assert_balanced(ingest_source(s, "dump").verification)
    assert v["quarantined_by_reason"]["unknown-learner"] == n_missing + 1  # both bodies
    verified, quarantined = bodies(tmp_path)
    assert x["id"] not in verified
    assert sorted(quarantined[x["id"]]) == sorted(
        [(sha(x), ["unknown-learner"]), (sha(second), ["unknown-learner", CONFLICT])])
    n_quarantined = v["quarantined"]

    cfg = str(tmp_path / "footprint.toml")

    def replay() -> dict[str, Any]:
        res = CliRunner().invoke(app, ["quarantine", "replay", "--json", "-c", cfg])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["status"] == "succeeded"
        return assert_balanced(out["sources"][0])

    # before the fix nothing leaves; the conflict is counted among those that stay
    r0 = replay()
    assert (r0["replayed"], r0["conflicts_held"]) == (0, 1)
    assert r0["read"] == r0["quarantined"] == n_quarantined
    assert "conflicting bodies wait for a person" in r0["message"]

    roster.write_bytes((world.university / "roster.csv").read_bytes())  # the fix
    r1 = replay()
    assert r1["replayed"] == r1["published"] == n_missing
    # the conflict keeps the reasons of the verification that quarantined it
    assert r1["conflicts_held"] == 1 and r1["quarantined_by_reason"] == {
        **v["quarantined_by_reason"], "unknown-learner": 1}
    assert r1["read"] == n_quarantined
    verified, quarantined = bodies(tmp_path)
    assert verified[x["id"]] == [sha(x)]  # the first body, and only it
    assert quarantined[x["id"]] == [(sha(second), ["unknown-learner", CONFLICT])]
    assert all(len(b) == 1 for b in verified.values())
    assert len(lines) + 1 == sum(map(len, verified.values())) + sum(map(len, quarantined.values()))

    before = snapshot(tmp_path)
    r2 = replay()
    assert (r2["replayed"], r2["published"], r2["conflicts_held"]) == (0, 0, 1)
    assert r2["read"] == r2["quarantined"] == n_quarantined - n_missing
    assert snapshot(tmp_path) == before


def test_ingest_report_keeps_recovered_bodies_apart(world: World, tmp_path: Path) -> None:
    """An exact copy stays a duplicate of ingestion; only another body is judged again."""
    lines = world.lines[:400]
    x = next(x for x in lines[50:] if x["id"] in world.ok)
    s = setup(tmp_path, world.university, [*lines, copy.deepcopy(x)])
    r: IngestReport = ingest_source(s, "dump")
    v = assert_balanced(r.verification)
    assert r.duplicates == 1 and v["recovered"] == 0 and v["read"] == r.written
    assert CONFLICT not in v["quarantined_by_reason"]
    assert config.load(tmp_path / "footprint.toml").verifies


def test_a_body_waiting_in_quarantine_holds_its_id_across_windows(
    world: World, tmp_path: Path,
) -> None:
    """The first body waits in quarantine (window A, learner missing from the roster); another
    body of the id arrives in window B and would verify (another, known learner). It is a
    conflict: the id belongs to the first body received, which the replay after the roster fix
    releases. One body in the verified footprint, the first."""
    lines = world.lines
    roster, _ = drop_student(world.university, lines, tmp_path / "short.csv")
    with roster.open(encoding="utf-8", newline="") as fh:
        names = {row["lms_account"] for row in csv.DictReader(fh)}
    in_a = [x for x in lines[:290] if x["id"] in world.ok and "account" in x["actor"]]
    x = next(x for x in in_a if x["actor"]["account"]["name"] not in names)
    known = next(y for y in in_a if y["actor"]["account"]["name"] in names
                 and y["object"]["id"] == x["object"]["id"])
    second = other_body(x, world.mid + timedelta(days=2))
    second["actor"] = known["actor"]  # verifiable on its own
    s = setup(tmp_path, world.university, [*lines, second], roster=roster)
    assert_balanced(ingest_source(s, "dump", since=START, until=world.mid).verification)
    _, quarantined = bodies(tmp_path)
    assert quarantined[x["id"]] == [(sha(x), ["unknown-learner"])]
    vb = assert_balanced(ingest_source(s, "dump", since=world.mid, until=END).verification)
    assert vb["quarantined_by_reason"][CONFLICT] == 1
    verified, quarantined = bodies(tmp_path)
    assert x["id"] not in verified
    assert sorted(quarantined[x["id"]]) == sorted(
        [(sha(x), ["unknown-learner"]), (sha(second), [CONFLICT])])

    roster.write_bytes((world.university / "roster.csv").read_bytes())  # the fix
    rep = assert_balanced(replay_quarantine(s, "dump", "replay-fix").as_dict())
    assert rep["replayed"] > 0 and rep["conflicts_held"] == 1
    verified, quarantined = bodies(tmp_path)
    assert verified[x["id"]] == [sha(x)]
    assert quarantined[x["id"]] == [(sha(second), [CONFLICT])]
    assert all(len(b) == 1 for b in verified.values())
    # window B again: the first body is verified now and still holds the id
    assert_balanced(ingest_source(s, "dump", since=world.mid, until=END).verification)
    assert bodies(tmp_path) == (verified, quarantined)
