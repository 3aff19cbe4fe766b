"""Ingestion + verification end to end on real files: a generated university, an xapi-file source.

Covers the verification stage (pipelines/verify/stage.py): balance, the verified and quarantine
zones, voids across runs in both orders, replay after a roster fix, the quality gate and the CLI.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines import config, contracts
from pipelines.cli import app
from pipelines.generate import TroubleShares, run_generate
from pipelines.ingest import IngestError, ingest_source
from pipelines.store.footprint import FootprintZones
from pipelines.store.state import StateStore
from tests.conftest import write_config

START, END = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
VOIDED = "http://adlnet.gov/expapi/verbs/voided"


@pytest.fixture(scope="module")
def baseline(university: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Ids of the statements that verify with the full roster (the rest: inactive learners,
    implausible durations... as the generator makes them)."""
    tmp = tmp_path_factory.mktemp("baseline")
    r = ingest_source(setup(tmp, university, statements(university)), "dump")
    assert r.verification and r.verification["status"] == "succeeded"
    return set(verified_ids(tmp))


@pytest.fixture(scope="module")
def university(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """roster.csv, catalogue.csv and 600 clean statements (stored in order, all in the past)."""
    out = tmp_path_factory.mktemp("gen")
    run_generate(out, seed=11, students=60, disciplines=4, statements=600,
                 trouble=TroubleShares.none(), start=START, end=END)
    return out


def statements(university: Path) -> list[dict[str, Any]]:
    with gzip.open(university / "statements.ndjson.gz") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def setup(tmp: Path, university: Path, lines: list[dict[str, Any]], *, roster: Path | None = None,
          reference: bool = True) -> config.Settings:
    (tmp / "dump.ndjson").write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    ref = ""
    if reference:
        ref = (f'[reference]\nroster = "{roster or university / "roster.csv"}"\n'
               f'catalogue = "{university / "catalogue.csv"}"\n')
    write_config(tmp, f'[storage]\nworkers = 1\n{ref}'
                      '[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "dump.ndjson"\n')
    return config.load(tmp / "footprint.toml")


def verified_ids(tmp: Path) -> list[str]:
    return sorted(FootprintZones(tmp / "data").read_verified("dump")["statement_id"].to_pylist())


def void_of(target: dict[str, Any], stored: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "actor": target["actor"],
        "verb": {"id": VOIDED, "display": {"en-US": "voided"}},
        "object": {"objectType": "StatementRef", "id": target["id"]},
        "timestamp": stored.isoformat().replace("+00:00", "Z"),
        "stored": stored.isoformat().replace("+00:00", "Z"),
    }


def stored_of(x: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(x["stored"].replace("Z", "+00:00"))


def drop_student(university: Path, lines: list[dict[str, Any]], dest: Path) -> tuple[Path, int]:
    """The roster without the least active student of ``lines``; their statement count."""
    with (university / "roster.csv").open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    col, st = rows[0].index("lms_account"), rows[0].index("status")
    active = {r[col] for r in rows[1:] if r[st] == "active"}
    counts: dict[str, int] = {}
    for x in lines:
        if "account" in x["actor"]:
            a = x["actor"]["account"]["name"]
            counts[a] = counts.get(a, 0) + 1
    name = min((a for a in counts if a in active), key=lambda a: (counts[a], a))
    kept = [rows[0]] + [r for r in rows[1:] if r[col] != name]
    assert len(kept) == len(rows) - 1
    with dest.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(kept)
    n = sum(1 for x in lines if x["actor"].get("account", {}).get("name") == name)
    return dest, n


def test_ingest_verifies_balances_and_matches_contracts(
    tmp_path: Path, university: Path, baseline: set[str],
) -> None:
    lines = statements(university)
    roster, n_missing = drop_student(university, lines, tmp_path / "roster-short.csv")
    assert 0 < n_missing < 0.05 * len(lines)  # below the suite's quarantine share
    s = setup(tmp_path, university, lines, roster=roster)
    r = ingest_source(s, "dump")
    v = r.verification
    assert v is not None and v["status"] == "succeeded", v
    assert v["read"] == r.written == len(lines)
    assert v["read"] == v["verified"] + v["quarantined"] + v["duplicates"] + v["voiding"]
    assert v["quarantined_by_reason"]["unknown-learner"] == n_missing
    assert v["quality"]["passed"] is True
    fz = FootprintZones(tmp_path / "data")
    table = fz.read_verified("dump")
    assert table.num_rows == v["published"] == v["verified"]
    assert set(table["statement_id"].to_pylist()) <= baseline
    assert len(baseline) - table.num_rows <= n_missing
    # files hold the contract's columns and types (partition columns in the path)
    files = sorted((tmp_path / "data" / "verified" / "source=dump").glob("date=*/part-0.parquet"))
    want = contracts.load("verified-footprint", 1).arrow_schema(with_partitions=False)
    assert files and all(pq.read_schema(f).remove_metadata().equals(want.remove_metadata())
                         for f in files)
    # the date partition is the UTC date of stored, as in the normalised zone
    for row in table.select(["date", "stored"]).to_pylist()[:50]:
        assert row["date"] == row["stored"].date().isoformat()
    q = fz.read_quarantine("dump")
    assert q.num_rows == v["quarantined"] and set(q["window"].to_pylist()) == {"start--end"}
    assert sum("unknown-learner" in x for x in q["reasons"].to_pylist()) == n_missing
    assert (tmp_path / "data" / "reports" / "quality" / f"{r.run_id}.json").exists()
    # re-verifying the window replaces it: same rows, no second copy, first quarantine kept
    first_at = sorted(q["first_quarantined_at"].to_pylist())
    r2 = ingest_source(s, "dump")
    assert r2.verification and r2.verification["published"] == v["published"]
    assert len(verified_ids(tmp_path)) == v["published"]
    q2 = fz.read_quarantine("dump")
    assert q2.num_rows == v["quarantined"]
    assert sorted(q2["first_quarantined_at"].to_pylist()) == first_at


@pytest.mark.parametrize("order", ["void-after-target", "void-before-target"])
def test_void_across_two_runs(
    tmp_path: Path, university: Path, baseline: set[str], order: str,
) -> None:
    lines = statements(university)[:200]
    mid = stored_of(lines[100])
    ok = [i for i, x in enumerate(lines) if x["id"] in baseline]
    if order == "void-after-target":
        target = lines[ok[0]]  # stored in the first window, its void in the second
        void = void_of(target, mid + timedelta(minutes=1))
    else:
        target = lines[ok[-1]]  # stored in the second window, its void in the first
        void = void_of(target, stored_of(lines[10]) + timedelta(milliseconds=1))
    s = setup(tmp_path, university, [*lines, void])
    first = ingest_source(s, "dump", since=START, until=mid)
    assert first.verification and first.verification["voiding"] == (order != "void-after-target")
    state = StateStore(s.state_url)
    try:
        if order == "void-after-target":
            assert target["id"] in verified_ids(tmp_path)
        else:
            assert [x.target_id for x in state.voids("dump", "pending")] == [target["id"]]
        second = ingest_source(s, "dump", since=mid, until=END)
        v2 = second.verification
        assert v2 is not None and v2["voided"] == 1
        assert v2["voided_earlier"] == (order == "void-after-target")
        assert verified_ids(tmp_path) == sorted(set(baseline) & {x["id"] for x in lines}
                                                - {target["id"]})
        log = state.void_log("dump")
        kind = "voided" if order == "void-after-target" else "pending-resolved"
        assert [(x["statement_id"], x["voiding_statement_id"], x["kind"], x["run_id"])
                for x in log] == [(target["id"], void["id"], kind, second.run_id)]
        assert state.voids("dump", "pending") == []
        # re-verifying either window changes nothing and logs nothing twice
        ingest_source(s, "dump", since=START, until=mid)
        ingest_source(s, "dump", since=mid, until=END)
        assert target["id"] not in verified_ids(tmp_path)
        assert len(state.void_log("dump")) == 1
    finally:
        state.close()


def test_replay_after_roster_fix_moves_records_once(
    tmp_path: Path, university: Path, baseline: set[str],
) -> None:
    lines = statements(university)[:300]
    short = tmp_path / "roster.csv"
    _, n_missing = drop_student(university, lines, short)
    assert 0 < n_missing <= 15
    s = setup(tmp_path, university, lines, roster=short)
    r = ingest_source(s, "dump")
    assert r.verification
    assert r.verification["quarantined_by_reason"]["unknown-learner"] == n_missing
    before = len(verified_ids(tmp_path))
    short.write_bytes((university / "roster.csv").read_bytes())  # the fix
    res = CliRunner().invoke(app, ["quarantine", "replay", "--json", "-c",
                                   str(tmp_path / "footprint.toml")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    fixed = len(set(baseline) & {x["id"] for x in lines}) - before
    assert 0 < fixed <= n_missing
    assert (out["status"], out["replayed"], out["published"]) == ("succeeded", fixed, fixed)
    assert verified_ids(tmp_path) == sorted(set(baseline) & {x["id"] for x in lines})
    q = FootprintZones(tmp_path / "data").read_quarantine("dump")
    assert q.num_rows == r.verification["quarantined"] - fixed
    assert not any("unknown-learner" in x for x in q["reasons"].to_pylist())
    again = CliRunner().invoke(app, ["quarantine", "replay", "--json", "-c",
                                     str(tmp_path / "footprint.toml")])
    assert again.exit_code == 0 and json.loads(again.stdout)["replayed"] == 0
    assert len(verified_ids(tmp_path)) == before + fixed


def test_a_mostly_quarantined_window_keeps_every_body_in_reading_order(
    tmp_path: Path, university: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stale roster (one student left) quarantines nearly the whole window. The quarantine is
    staged a piece at a time and its file written a raw part at a time (StagedQuarantine): it
    must hold every quarantined statement once, its body exactly as received, in the order the
    statements were read, whatever the pieces (date order) and the raw parts (reading order)."""
    from pipelines.verify import quality, stage

    lines = statements(university)[:400]
    random.Random(5).shuffle(lines)  # read out of date order: pieces and raw parts differ
    with (university / "roster.csv").open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("lms_account")
    kept = next(r for r in rows[1:] if r[rows[0].index("status")] == "active")
    roster = tmp_path / "roster-stale.csv"
    with roster.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([rows[0], kept])
    doc = json.loads(quality.DEFAULT_SUITE_PATH.read_text(encoding="utf-8"))
    doc["footprint_checks"]["max_quarantined_share"]["max_share"] = 1.0  # let it publish
    (tmp_path / "suite.json").write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(quality, "_default_suite", lambda: quality.load_suite(
        tmp_path / "suite.json"))
    monkeypatch.setattr(stage, "PIECE_ROWS", 37)
    dump = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    (tmp_path / "dump.ndjson").write_bytes(dump)
    write_config(tmp_path, '[storage]\nworkers = 1\nbatch_statements = 100\n'
                           f'[reference]\nroster = "{roster}"\n'
                           f'catalogue = "{university / "catalogue.csv"}"\n'
                           '[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "dump.ndjson"\n')
    r = ingest_source(config.load(tmp_path / "footprint.toml"), "dump")
    v = r.verification
    assert v is not None and v["status"] == "succeeded", v
    mine = {"account": kept[col], "mbox": "mailto:" + kept[rows[0].index("email")]}
    theirs = [x for x in lines if x["actor"].get("account", {}).get("name") != mine["account"]
              and x["actor"].get("mbox") != mine["mbox"]]
    assert 300 < len(theirs) < len(lines)
    assert v["quarantined"] == v["quarantined_by_reason"]["unknown-learner"] == len(theirs)

    files = list((tmp_path / "data" / "quarantine").rglob("*.parquet"))
    assert len(files) == 1
    q = pq.read_table(files[0])
    assert q.num_rows == len(theirs)
    assert q["statement_id"].to_pylist() == [x["id"] for x in theirs]  # reading order
    received = dump.splitlines()
    assert [x.encode() for x in q["raw"].to_pylist()] == [
        received[lines.index(x)] for x in theirs]
    assert not list((tmp_path / "data" / "_staging").rglob("*.*"))  # staged files gone


def test_first_quarantined_at_is_the_earliest_of_any_window() -> None:
    from pipelines.verify import stage

    def at(day: int) -> datetime:
        return datetime(2026, 10, day, tzinfo=UTC)

    typ = stage._QUARANTINE_SCHEMA.field("first_quarantined_at").type
    old = pa.table({"statement_id": ["a", "a", "b", None],
                    "raw_sha256": ["1", "1", "2", "3"],
                    "first_quarantined_at": pa.array([at(5), at(3), at(9), at(1)], typ)})
    new = pa.table({"statement_id": ["a", "b", "c", None, "b"],
                    "raw_sha256": ["1", "9", "3", "3", "2"],
                    "first_quarantined_at": pa.array([at(20)] * 5, typ)})
    kept = stage._keep_first_quarantined(new, stage._first_quarantined(old))
    assert kept["first_quarantined_at"].to_pylist() == [at(3), at(20), at(20), at(1), at(9)]
    assert stage._keep_first_quarantined(new, stage._first_quarantined(old.slice(0, 0))) is new


def test_quarantine_text_of_a_body_that_is_not_utf8() -> None:
    from pipelines.verify import stage

    bodies = pa.chunked_array([pa.array([b'{"a": "\xd0\x90"}', None], pa.binary()),
                               pa.array([b'{"a": "\xff"}'], pa.binary())])
    assert stage._texts(bodies, pa.string()).to_pylist() == [
        '{"a": "\u0410"}', None, '{"a": "\ufffd"}']


def test_bad_batch_fails_quality_and_publishes_nothing(tmp_path: Path, university: Path) -> None:
    # "commented" is a valid xAPI verb the rules accept, but not in the suite's verb set
    lines = statements(university)[:120]
    for x in lines[:5]:
        x["verb"] = {"id": "http://adlnet.gov/expapi/verbs/commented"}
    s = setup(tmp_path, university, lines)
    with pytest.raises(IngestError) as err:
        ingest_source(s, "dump")
    msg = str(err.value)
    assert "expect_column_values_to_be_in_set(verb_id)" in msg and "unpublished" in msg
    assert not any((tmp_path / "data" / "verified").rglob("*.parquet"))
    assert not any((tmp_path / "data" / "quarantine").rglob("*.parquet"))
    assert list((tmp_path / "data" / "reports" / "quality").glob("*.json"))
    report = err.value.report
    assert report is not None and report.status == "failed"
    assert report.verification and report.verification["quality"]["passed"] is False


def test_cli_ingest_json_keys_and_quarantine_list(tmp_path: Path, university: Path) -> None:
    lines = statements(university)[:150]
    roster, n_missing = drop_student(university, lines, tmp_path / "short.csv")
    setup(tmp_path, university, lines, roster=roster)
    cfg = str(tmp_path / "footprint.toml")
    res = CliRunner().invoke(app, ["ingest", "--json", "-c", cfg])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verification"] == "succeeded"
    assert out["voided"] == 0 and out["verified"] + out["quarantined"] == len(lines)
    assert out["quarantined_by_reason"]["unknown-learner"] == n_missing
    assert set(out["quality"]) == {"passed", "failed_critical", "failed_warning"}
    assert out["quality"]["passed"] is True
    for k in ("read", "written", "rejected", "duplicates", "outside_window", "window"):
        assert k in out
    ls = CliRunner().invoke(app, ["quarantine", "list", "--reason", "unknown-learner", "--json",
                                  "-c", cfg])
    assert ls.exit_code == 0, ls.output
    listed = json.loads(ls.stdout)
    assert listed["count"] == n_missing and listed["by_reason"]["unknown-learner"] == n_missing
    none = CliRunner().invoke(app, ["quarantine", "list", "--reason", "future-timestamp",
                                    "--json", "-c", cfg])
    assert json.loads(none.stdout)["count"] == 0


def test_ingest_without_reference_skips_verification(tmp_path: Path, university: Path) -> None:
    s = setup(tmp_path, university, statements(university)[:20], reference=False)
    res = CliRunner().invoke(app, ["ingest", "--json", "-c", str(s.path)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["written"] == 20 and out["verification"] == "skipped"
    assert "verification skipped" in out["verification_message"]
    assert not (tmp_path / "data" / "verified").exists()
