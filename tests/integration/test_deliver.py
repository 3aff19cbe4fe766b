"""Delivery end to end (issue 4): footprint -> the reference receiver, over real HTTP and SQLite.

A generated university is ingested and verified twice: round 1 with one student missing from the
roster and some statements not yet arrived; round 2 adds the late statements (old timestamps,
new stored), voids (one takes a record's only evidence, one changes a record) and the roster fix
(the quarantined student is replayed). After each delivery the receiver must hold exactly the
records an independent plain-Python derivation (tests/support/oracle.py) gives, field by field,
and the record that lost its evidence must be deleted logically.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from pipelines import config, contracts
from pipelines.deliver.authority import AuthorityClient
from pipelines.deliver.ledger import Ledger
from pipelines.deliver.reconcile import reconcile
from pipelines.deliver.stage import DeliveryError, deliver
from pipelines.generate import TroubleShares, run_generate
from pipelines.ingest import ingest_source
from pipelines.local.receiver import LocalReceiver
from pipelines.store.footprint import FootprintZones
from pipelines.store.state import StateStore
from pipelines.verify.stage import replay_quarantine
from tests.support import oracle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START, END = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
BIN = "980140000005"
AUTH = {"FOOTPRINT_AUTHORITY_USERNAME": BIN, "FOOTPRINT_AUTHORITY_PASSWORD": "not-a-secret"}
VOIDED = "http://adlnet.gov/expapi/verbs/voided"


@dataclass(frozen=True)
class Scenario:
    gen: Path  # roster.csv (full), roster-1.csv (without one student), catalogue.csv
    round1: Path  # footprint after round 1: <round1>/data
    round2: Path  # footprint after round 2
    lines1: list[dict[str, Any]]
    lines2: list[dict[str, Any]]  # what round 2 adds: late statements and voids
    dropped: str  # lms account of the student added back by the roster fix
    deleted_record_key: tuple[str, str]  # (iin, discipline) whose only evidence is voided


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _void(target: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "actor": target["actor"],
            "verb": {"id": VOIDED, "display": {"en-US": "voided"}},
            "object": {"objectType": "StatementRef", "id": target["id"]},
            "timestamp": _iso(at), "stored": _iso(at)}


def _config(folder: Path, root: Path, roster: Path, catalogue: Path, endpoint: str,
            **authority: Any) -> config.Settings:
    extra = "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in authority.items())
    body = (f'[storage]\nroot = "{root}"\nworkers = 1\n'
            f'[state]\nurl = "sqlite:///{folder / "state.db"}"\n'
            f'[reference]\nroster = "{roster}"\ncatalogue = "{catalogue}"\n'
            f'[institution]\ncode = "{BIN}"\n'
            f'[authority]\nendpoint = "{endpoint}"\nbackoff_base = 0.01\nbackoff_cap = 0.3\n'
            + extra +
            f'[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "{root.parent}/dump.ndjson"\n')
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "footprint.toml").write_text(body, encoding="utf-8")
    return config.load(folder / "footprint.toml")


def _ingest(folder: Path, lines: list[dict[str, Any]], roster: Path, catalogue: Path) -> None:
    (folder / "dump.ndjson").write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    s = _config(folder, folder / "data", roster, catalogue, "http://127.0.0.1:9/")
    r = ingest_source(s, "dump")
    assert r.verification and r.verification["status"] == "succeeded", r.verification


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    gen = tmp_path_factory.mktemp("gen")
    run_generate(gen, seed=23, students=40, disciplines=4, statements=900,
                 trouble=TroubleShares.none(), start=START, end=END)
    with gzip.open(gen / "statements.ndjson.gz") as fh:
        lines = [orjson.loads(x) for x in fh if x.strip()]
    rng = random.Random(187)
    late = set(rng.sample(range(len(lines)), 25))
    first = [x for i, x in enumerate(lines) if i not in late]
    # round 1 roster: without the least active student (their statements go to quarantine)
    with (gen / "roster.csv").open(encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    col, st = rows[0].index("lms_account"), rows[0].index("status")
    counts = Counter(x["actor"].get("account", {}).get("name") for x in first)
    dropped = min((r[col] for r in rows[1:] if counts.get(r[col]) and r[st] == "active"),
                  key=lambda a: (counts[a], a))
    with (gen / "roster-1.csv").open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([r for r in rows if r[col] != dropped])
    cat = gen / "catalogue.csv"

    r1 = tmp_path_factory.mktemp("round1")
    _ingest(r1, first, gen / "roster-1.csv", cat)
    verified = FootprintZones(r1 / "data").read_verified().to_pylist()
    per_key = Counter((v["iin"], v["discipline_code"]) for v in verified)
    by_id = {x["id"]: x for x in first}
    single = next(v for v in sorted(verified, key=lambda v: v["statement_id"])
                  if per_key[(v["iin"], v["discipline_code"])] == 1)
    multi = next(v for v in sorted(verified, key=lambda v: v["statement_id"])
                 if per_key[(v["iin"], v["discipline_code"])] >= 3)
    at = END + timedelta(days=1)
    lines2 = [dict(x, stored=_iso(at + timedelta(seconds=i)))
              for i, x in enumerate(x for i, x in enumerate(lines) if i in late)]
    lines2 += [_void(by_id[single["statement_id"]], at + timedelta(minutes=5)),
               _void(by_id[multi["statement_id"]], at + timedelta(minutes=6))]

    r2 = tmp_path_factory.mktemp("round2")
    shutil.rmtree(r2)
    shutil.copytree(r1, r2)
    _ingest(r2, first + lines2, gen / "roster.csv", cat)
    s2 = config.load(r2 / "footprint.toml")
    replay_quarantine(s2, "dump", "replay-roster-fix")
    back = FootprintZones(r2 / "data").read_quarantine().to_pylist()
    assert not any("unknown-learner" in q["reasons"] for q in back), \
        "the roster fix must bring the dropped student's statements out of quarantine"
    return Scenario(gen, r1, r2, first, lines2, dropped,
                    (single["iin"], single["discipline_code"]))


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalReceiver]:
    for k, v in AUTH.items():
        monkeypatch.setenv(k, v)
    with LocalReceiver(tmp_path / "receiver", username=AUTH["FOOTPRINT_AUTHORITY_USERNAME"],
                       password=AUTH["FOOTPRINT_AUTHORITY_PASSWORD"]) as r:
        yield r


def expected(scn: Scenario, round_: int) -> dict[str, dict[str, Any]]:
    root = (scn.round1 if round_ == 1 else scn.round2) / "data"
    return oracle.expected_records(root, scn.gen / "catalogue.csv", BIN)


def held(rcv: LocalReceiver) -> dict[str, dict[str, Any]]:
    return oracle.receiver_records(rcv.endpoint, (BIN, AUTH["FOOTPRINT_AUTHORITY_PASSWORD"]))


def settings_for(scn: Scenario, round_: int, folder: Path, rcv: LocalReceiver,
                 **authority: Any) -> config.Settings:
    root = (scn.round1 if round_ == 1 else scn.round2) / "data"
    roster = scn.gen / ("roster-1.csv" if round_ == 1 else "roster.csv")
    return _config(folder, root, roster, scn.gen / "catalogue.csv", rcv.endpoint, **authority)


def assert_receiver_equals(scn: Scenario, round_: int, rcv: LocalReceiver) -> None:
    want, got = expected(scn, round_), oracle.live(held(rcv))
    problems = oracle.field_differences(want, got)
    assert not problems, f"{len(problems)} differences, e.g.:\n" + "\n".join(problems[:20])


# -- the main flow ---------------------------------------------------------------------------------
def test_two_rounds_receiver_holds_exactly_the_footprint(
        scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    s1 = settings_for(scenario, 1, tmp_path / "cfg", receiver, batch_size=100, readback="all")
    r1 = deliver(s1)
    want1 = expected(scenario, 1)
    assert (r1.new, r1.changed, r1.deleted, r1.unchanged, r1.failed) == (len(want1), 0, 0, 0, 0)
    assert r1.read_back == len(want1) and r1.status == "succeeded"
    assert_receiver_equals(scenario, 1, receiver)
    assert reconcile(s1).drifted == 0

    again = deliver(s1)  # nothing changed: nothing is sent
    assert (again.new, again.changed, again.unchanged, again.sent) == (0, 0, len(want1), 0)

    s2 = settings_for(scenario, 2, tmp_path / "cfg", receiver, batch_size=100)
    drift = reconcile(s2, mark=False)
    assert drift.drifted > 0 and drift.missing > 0 and drift.unexpected == 1  # before delivery
    assert drift.marked == 0
    r2 = deliver(s2)  # readback = "sample": a few records of each batch
    want2 = expected(scenario, 2)
    assert r2.failed == 0 and r2.deleted == 1 and r2.new > 0 and r2.changed > 0
    assert 0 < r2.read_back <= 3 * r2.batches
    assert r2.new + r2.changed + r2.unchanged == len(want2)
    assert_receiver_equals(scenario, 2, receiver)
    everything = held(receiver)
    gone = [v for v in everything.values() if v.get("deleted")]
    assert [(g["iin"], g["discipline_code"]) for g in gone] == [scenario.deleted_record_key]
    assert reconcile(s2).drifted == 0
    state = StateStore(s2.state_url)
    try:
        counts = Ledger(state).status_counts()
    finally:
        state.close()
    assert counts == {"delivered": len(want2), "deleted": 1}


def test_reconcile_marks_drift_and_deliver_repairs_it(
        scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    """Someone changes the authority's copy behind our back: reconcile finds every change,
    marks it in the ledger, and the next delivery repairs it although the ledger said
    'delivered'."""
    s1 = settings_for(scenario, 1, tmp_path / "cfg", receiver)
    assert deliver(s1).failed == 0
    copy = oracle.live(held(receiver))
    changed, removed = sorted(copy)[:2]
    intruder = dict(copy[sorted(copy)[2]], discipline_code="XXX999",
                    record_id=str(uuid.uuid4()))
    tampered = dict(copy[changed], current_score=0.0, letter_grade="F", gpa_points=0.0)
    for k in ("deleted", "createdAt", "updatedAt", "deletedAt", "version"):
        tampered.pop(k, None)
        intruder.pop(k, None)
    with httpx.Client(base_url=receiver.endpoint, auth=(BIN, AUTH[
            "FOOTPRINT_AUTHORITY_PASSWORD"])) as c:
        ans = c.post("org-data/list/save", params={"entity": "ONLINE_LEARNING"},
                     json=[tampered, intruder]).json()
        assert not ans["failedRecords"], ans
        c.post(f"org-data/{removed}/delete", params={"entity": "ONLINE_LEARNING"}
               ).raise_for_status()
    found = reconcile(s1)
    assert (found.missing, found.different, found.unexpected) == (1, 1, 1)
    assert found.marked == 3
    assert {d.kind: d.record_id for d in found.drift}["different"] == changed
    assert "current_score" in next(d.fields for d in found.drift if d.kind == "different")
    repair = deliver(s1)
    assert (repair.changed, repair.deleted, repair.failed) == (2, 1, 0)
    assert reconcile(s1).drifted == 0
    assert_receiver_equals(scenario, 1, receiver)


def test_lrs_to_receiver(lrs: Any, scenario: Scenario, receiver: LocalReceiver,
                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same two rounds with the real LRS as the source (stored set by the LRS itself)."""
    monkeypatch.setenv("FOOTPRINT_SOURCE_MAIN_LRS_USERNAME", "footprint")
    monkeypatch.setenv("FOOTPRINT_SOURCE_MAIN_LRS_PASSWORD", "not-a-secret")

    def post(lines: list[dict[str, Any]]) -> None:
        with httpx.Client(auth=("footprint", "x"), timeout=60,
                          headers={"X-Experience-API-Version": "1.0.3"}) as c:
            for i in range(0, len(lines), 500):
                body = [{k: v for k, v in x.items() if k != "stored"} for x in lines[i:i + 500]]
                c.post(lrs.endpoint + "statements", json=body).raise_for_status()

    def write(roster: str) -> config.Settings:
        (tmp_path / "footprint.toml").write_text(
            '[storage]\nroot = "data"\nworkers = 1\n[state]\nurl = "sqlite:///data/state.db"\n'
            f'[reference]\nroster = "{scenario.gen / roster}"\n'
            f'catalogue = "{scenario.gen / "catalogue.csv"}"\n'
            f'[institution]\ncode = "{BIN}"\n[authority]\nendpoint = "{receiver.endpoint}"\n'
            f'[[sources]]\nname = "main-lrs"\nkind = "xapi-lrs"\nendpoint = "{lrs.endpoint}"\n'
            'lookback = "PT0S"\n', encoding="utf-8")
        return config.load(tmp_path / "footprint.toml")

    post(scenario.lines1)
    s1 = write("roster-1.csv")
    ingest_source(s1, "main-lrs")
    assert deliver(s1).failed == 0
    got1 = oracle.live(held(receiver))
    assert not oracle.field_differences(
        oracle.expected_records(tmp_path / "data", scenario.gen / "catalogue.csv", BIN), got1)
    # the LRS route gives the same records as the file route (same statements, same rules)
    assert set(got1) == set(expected(scenario, 1))

    post(scenario.lines2)
    s2 = write("roster.csv")
    ingest_source(s2, "main-lrs")
    replay_quarantine(s2, "main-lrs", "replay-roster-fix")
    r2 = deliver(s2)
    assert r2.failed == 0 and r2.deleted == 1
    got2 = oracle.live(held(receiver))
    problems = oracle.field_differences(
        oracle.expected_records(tmp_path / "data", scenario.gen / "catalogue.csv", BIN), got2)
    assert not problems, problems[:10]
    assert set(got2) == set(expected(scenario, 2))
    assert reconcile(s2).drifted == 0


# -- faults ----------------------------------------------------------------------------------------
def test_faulty_receiver_same_end_state(scenario: Scenario, receiver: LocalReceiver,
                                        tmp_path: Path) -> None:
    receiver.set_faults(error_rate=0.2, rate_limit_rate=0.1, retry_after=0, drop_rate=0.1,
                        reject_rate=0.1, seed=7)
    kw = {"batch_size": 20, "max_attempts": 30, "record_attempts": 30, "page_size": 200}
    first = deliver(settings_for(scenario, 1, tmp_path / "cfg", receiver, **kw))
    report = deliver(settings_for(scenario, 2, tmp_path / "cfg", receiver, **kw))
    assert first.failed == report.failed == 0
    stats = receiver.stats()
    receiver.set_faults(error_rate=0, rate_limit_rate=0, drop_rate=0, reject_rate=0)
    assert_receiver_equals(scenario, 2, receiver)
    assert first.retries + report.retries > 0
    assert first.record_retries + report.record_retries > 0
    injected = stats["injected"]
    assert all(injected.get(k) for k in ("errors", "rateLimited", "rejectedRecords")), injected
    assert injected.get("droppedBefore", 0) + injected.get("droppedAfter", 0) > 0, injected


def test_rejected_records_are_kept_failed_with_the_reason(
        scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    receiver.set_faults(reject_rate=1.0, seed=1)
    s = settings_for(scenario, 1, tmp_path / "cfg", receiver, record_attempts=2)
    report = deliver(s)
    assert report.failed == report.records > 0 and report.status == "partial"
    assert "fault injection" in report.failures[0]["reason"]
    state = StateStore(s.state_url)
    try:
        book = Ledger(state)
        assert book.status_counts() == {"failed": report.records}
        assert {b["status"] for b in book.batches(1000)} == {"failed"}
    finally:
        state.close()
    receiver.set_faults(reject_rate=0)
    again = deliver(s)  # failed records are never lost: the next run sends them
    assert again.failed == 0 and again.new + again.changed == report.records
    assert_receiver_equals(scenario, 1, receiver)


def test_ignored_field_is_caught_by_read_back(scenario: Scenario, receiver: LocalReceiver,
                                               tmp_path: Path) -> None:
    receiver.set_faults(ignore_fields=["gpa_points"])
    s = settings_for(scenario, 1, tmp_path / "cfg", receiver)
    report = deliver(s)
    scored = [r for r in expected(scenario, 1).values() if r["gpa_points"] is not None]
    assert scored and report.read_back_mismatches == report.failed == len(scored)
    assert all("gpa_points" in f["reason"] for f in report.failures)
    assert reconcile(s).different == len(scored)


def test_authority_down_fails_clearly_and_changes_nothing_acknowledged(
        scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    s = settings_for(scenario, 1, tmp_path / "cfg", receiver, max_attempts=2)
    receiver.stop()
    with pytest.raises(DeliveryError) as err:
        deliver(s)
    assert receiver.endpoint.split("/isvuz")[0] in str(err.value)
    assert "connection" in str(err.value)
    state = StateStore(s.state_url)
    try:
        assert "delivered" not in Ledger(state).status_counts()
        assert Ledger(state).runs(1)[0]["status"] == "failed"
    finally:
        state.close()


def test_wrong_credentials_are_fatal_and_named(scenario: Scenario, receiver: LocalReceiver,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOOTPRINT_AUTHORITY_PASSWORD", "wrong")
    with pytest.raises(DeliveryError, match="FOOTPRINT_AUTHORITY_USERNAME"):
        deliver(settings_for(scenario, 1, tmp_path / "cfg", receiver))


# -- the payload contract --------------------------------------------------------------------------
class _Tap(httpx.HTTPTransport):
    """A real transport that keeps a copy of every request body it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if request.method == "POST" and body:
            self.bodies.append(body)
        return super().handle_request(request)


def test_everything_sent_validates_against_the_contract(
        scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    s2 = settings_for(scenario, 2, tmp_path / "cfg", receiver, batch_size=64)
    tap = _Tap()
    assert s2.authority is not None
    with AuthorityClient(s2.authority, s2.authority.credentials(), transport=tap) as client:
        deliver(settings_for(scenario, 1, tmp_path / "cfg", receiver, batch_size=64),
                client=client)
        deliver(s2, client=client)
    schema = contracts.load("delivered-record", 1).json_schema
    v = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    sent = [rec for body in tap.bodies for rec in orjson.loads(body)]
    assert len(sent) >= len(expected(scenario, 2))
    for rec in sent:
        v.validate(rec)
    assert client.stats.gzip  # the receiver takes gzip: every save went compressed


def test_no_gzip_server_gets_plain_json(scenario: Scenario, receiver: LocalReceiver,
                                        tmp_path: Path) -> None:
    receiver.set_faults(accept_gzip=False)
    report = deliver(settings_for(scenario, 1, tmp_path / "cfg", receiver))
    assert report.failed == 0 and report.gzip is False
    assert_receiver_equals(scenario, 1, receiver)


# -- kill -9 at many points ------------------------------------------------------------------------
CRASH_POINTS = ["deliver-start", "deliver-built", "deliver-before-send", "deliver-saved",
                "deliver-after-send", "deliver-after-ledger", "deliver-before-delete",
                "deliver-after-delete", "deliver-before-readback", "deliver-after-readback"]


def _crash_cases() -> list[str]:
    """Each point once, plus later batches of the per-batch points (seeded)."""
    rng = random.Random(29)
    cases = list(CRASH_POINTS)
    for p in ("deliver-before-send", "deliver-saved", "deliver-after-send",
              "deliver-after-ledger"):
        cases.append(f"{p}:{rng.randint(2, 5)}")
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("point", _crash_cases())
def test_kill_during_delivery_then_rerun_same_end_state(
        point: str, scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    s1 = settings_for(scenario, 1, tmp_path / "cfg", receiver, batch_size=40)
    assert deliver(s1).failed == 0
    s2 = settings_for(scenario, 2, tmp_path / "cfg", receiver, batch_size=4)
    env = {**os.environ, **AUTH, "FOOTPRINT_CRASH_AT": point,
           "FOOTPRINT_CONFIG": str(s2.path)}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "deliver", "--json"],
                          env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    report = deliver(s2)
    assert report.failed == 0
    assert_receiver_equals(scenario, 2, receiver)
    gone = [v for v in held(receiver).values() if v.get("deleted")]
    assert [(g["iin"], g["discipline_code"]) for g in gone] == [scenario.deleted_record_key]
    state = StateStore(s2.state_url)
    try:
        book = Ledger(state)
        runs = book.runs(5)
        assert runs[0]["status"] == "succeeded" and runs[1]["status"] == "interrupted"
        if point.split(":")[0] in ("deliver-before-send", "deliver-saved", "deliver-after-send"):
            # the request in flight is in the ledger, marked as interrupted
            assert any(b["status"] == "interrupted" for b in book.batches(1000))
        assert report.interrupted_batches == sum(
            b["status"] == "interrupted" for b in book.batches(1000))
        assert book.status_counts() == {"delivered": len(expected(scenario, 2)), "deleted": 1}
    finally:
        state.close()
    assert reconcile(s2).drifted == 0


def test_payload_hash_in_ledger_matches_what_was_sent(
        scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    tap = _Tap()
    s = settings_for(scenario, 1, tmp_path / "cfg", receiver, batch_size=100)
    assert s.authority is not None
    with AuthorityClient(s.authority, s.authority.credentials(), transport=tap) as client:
        deliver(s, client=client)
    state = StateStore(s.state_url)
    try:
        batches = Ledger(state).batches(1000)
    finally:
        state.close()
    sent = {hashlib.sha256(b).hexdigest() for b in tap.bodies}
    assert {b["payload_sha256"] for b in batches if b["kind"] == "save"} == sent
    assert all(b["status"] == "acknowledged" and b["attempts"] == 1 for b in batches)


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_deliver_dry_run_deliver_reconcile_ledger(
        scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    s = settings_for(scenario, 1, tmp_path / "cfg", receiver)
    cfg = ["--config", str(s.path), "--json"]
    run = CliRunner().invoke
    want = len(expected(scenario, 1))

    dry = run(app, ["deliver", "--dry-run", *cfg])
    assert dry.exit_code == 0, dry.output
    doc = orjson.loads(dry.stdout)
    assert {k: doc[k] for k in ("new", "changed", "deleted", "unchanged", "failed")} == {
        "new": want, "changed": 0, "deleted": 0, "unchanged": 0, "failed": 0}
    assert oracle.receiver_records(receiver.endpoint, (BIN, AUTH[
        "FOOTPRINT_AUTHORITY_PASSWORD"])) == {}  # a dry run sends nothing

    drift = run(app, ["reconcile", "--no-mark", *cfg])
    assert drift.exit_code == 1 and orjson.loads(drift.stdout)["missing"] == want

    done = run(app, ["deliver", *cfg])
    assert done.exit_code == 0, done.output
    assert orjson.loads(done.stdout)["new"] == want

    ok = run(app, ["reconcile", *cfg])
    assert ok.exit_code == 0 and orjson.loads(ok.stdout)["drifted"] == 0

    book = orjson.loads(run(app, ["ledger", "--failed", *cfg]).stdout)
    assert book["records"] == {"delivered": want} and book["failed"] == []
    assert book["runs"][0]["status"] == "succeeded"
    assert {b["status"] for b in book["batches"]} == {"acknowledged"}

    human = run(app, ["ledger", "--config", str(s.path)])
    assert human.exit_code == 0 and "acknowledged" in human.output

    status = orjson.loads(run(app, ["status", *cfg]).stdout)["delivery"]
    assert status["records"] == {"delivered": want}
    assert status["last_run"]["counts"]["new"] == want


@pytest.mark.slow
@pytest.mark.parametrize("point", ["deliver-saved:2", "deliver-after-ledger:2",
                                   "deliver-after-delete"])
def test_kill_then_the_footprint_changes_back_before_the_rerun(
        point: str, scenario: Scenario, receiver: LocalReceiver, tmp_path: Path) -> None:
    """Round 2 is being delivered when the process dies; before the re-run the footprint goes
    back to round 1 (say a void of the late statements). Records round 2 had already sent (or
    deleted) must not pass for 'unchanged': the authority ends equal to round 1."""
    s1 = settings_for(scenario, 1, tmp_path / "cfg", receiver, batch_size=4)
    assert deliver(s1).failed == 0
    settings_for(scenario, 2, tmp_path / "cfg2", receiver, batch_size=4)
    (tmp_path / "cfg2" / "state.db").unlink(missing_ok=True)
    s2_text = (tmp_path / "cfg2" / "footprint.toml").read_text()
    (tmp_path / "cfg2" / "footprint.toml").write_text(  # round 2 with round 1's ledger
        s2_text.replace(str(tmp_path / "cfg2" / "state.db"), str(tmp_path / "cfg" / "state.db")))
    env = {**os.environ, **AUTH, "FOOTPRINT_CRASH_AT": point,
           "FOOTPRINT_CONFIG": str(tmp_path / "cfg2" / "footprint.toml")}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "deliver", "--json"],
                          env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert oracle.field_differences(expected(scenario, 1), oracle.live(held(receiver))), \
        "the killed run changed nothing at the authority: the test shows nothing"
    again = deliver(s1)
    assert again.failed == 0
    assert_receiver_equals(scenario, 1, receiver)
    assert reconcile(s1).drifted == 0


def test_mass_delete_is_refused_unless_allowed(scenario: Scenario, receiver: LocalReceiver,
                                                tmp_path: Path) -> None:
    s1 = settings_for(scenario, 1, tmp_path / "cfg", receiver)
    assert deliver(s1).failed == 0
    empty = tmp_path / "empty-root"
    empty.mkdir()
    wrong = _config(tmp_path / "cfg", empty, scenario.gen / "roster-1.csv",
                    scenario.gen / "catalogue.csv", receiver.endpoint)
    with pytest.raises(DeliveryError, match=r"refusing to delete .* --allow-mass-delete"):
        deliver(wrong)
    assert_receiver_equals(scenario, 1, receiver)  # nothing was deleted
    gone = deliver(wrong, allow_mass_delete=True)
    assert gone.deleted == len(expected(scenario, 1)) and gone.failed == 0
    assert oracle.live(held(receiver)) == {}
