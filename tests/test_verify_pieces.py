"""Verification a piece at a time gives what verifying the whole window at once gives.

``pipelines.verify.stage`` judges a window ``PIECE_ROWS`` normalised rows at a time (memory stays
bounded by a piece), with what spans pieces judged over the whole window: exact and conflicting
duplicates, voids, the cmi5 order warnings. The same generated university (every kind of
trouble) plus statements made to span pieces (a cmi5 ``completed`` twice weeks apart, a second
body of an id stored another day, a void weeks after its target) is ingested twice, with one
piece and with pieces of 7 rows (the raw bodies judged in worker processes too); the reports,
the verified zone and the quarantine must agree.
"""

from __future__ import annotations

import copy
import gzip
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines import config
from pipelines.generate import TroubleShares, run_generate
from pipelines.ingest import ingest_source
from pipelines.sources.base import Window
from pipelines.store.footprint import FootprintZones
from pipelines.verify import stage
from pipelines.verify.rules import CMI5_COMPLETED_TWICE, VERB_COMPLETED
from tests.conftest import write_config

START, END = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
CMI5 = "https://w3id.org/xapi/cmi5/context/categories/cmi5"


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _stored(x: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(x["stored"].replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    gen = tmp_path_factory.mktemp("gen")
    run_generate(gen, seed=5, students=40, disciplines=4, statements=1500,
                 trouble=TroubleShares(), start=START, end=END)
    with gzip.open(gen / "statements.ndjson.gz") as fh:
        raw = [line.rstrip(b"\n") for line in fh if line.strip()]
    docs = []
    for line in raw:
        try:
            x = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(x, dict) and isinstance(x.get("stored"), str):
            docs.append(x)
    extra: list[dict[str, Any]] = []
    # a cmi5 "completed" of the same registration and AU again, three weeks later
    done = next(x for x in docs if x["verb"]["id"] == VERB_COMPLETED
                and any(c.get("id") == CMI5
                        for c in x.get("context", {}).get("contextActivities", {})
                        .get("category", []))
                and _stored(x) < END - timedelta(days=25))
    again = copy.deepcopy(done)
    later = _stored(done) + timedelta(days=21)
    again.update(id=str(uuid.uuid4()), timestamp=_iso(later), stored=_iso(later))
    extra.append(again)
    # a second body of an id, stored another day (a conflict across date partitions)
    first = docs[100]
    other = copy.deepcopy(first)
    other["stored"] = _iso(_stored(first) + timedelta(days=9))
    other["timestamp"] = other["stored"]
    extra.append(other)
    # a void three weeks after its target
    target = docs[200]
    when = _iso(_stored(target) + timedelta(days=21))
    extra.append({"id": str(uuid.uuid4()), "actor": target["actor"],
                  "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
                  "object": {"objectType": "StatementRef", "id": target["id"]},
                  "timestamp": when, "stored": when})
    return gen, raw + [orjson.dumps(x) for x in extra]


def _run(tmp: Path, gen: Path, lines: list[bytes], storage: str = "workers = 1") -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "dump.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    write_config(tmp, f'[storage]\n{storage}\n[reference]\nroster = "{gen / "roster.csv"}"\n'
                      f'catalogue = "{gen / "catalogue.csv"}"\n'
                      '[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "dump.ndjson"\n')
    r = ingest_source(config.load(tmp / "footprint.toml"), "dump")
    assert r.verification is not None and r.verification["status"] == "succeeded", r.verification
    return r.verification


def _sorted(t: pa.Table, drop: list[str], keys: list[str]) -> pa.Table:
    t = t.drop_columns([c for c in drop if c in t.column_names])
    return t.take(pc.sort_indices(t, [(k, "ascending") for k in keys]))


def _zones_agree(tmp_path: Path, body: list[bytes], one: dict[str, Any],
                 published: int) -> pa.Table:
    """The verified zones and the quarantines of the runs under ``one`` and ``many`` are equal
    (but for run ids and times), and the second cmi5 "completed" carries its warning in the
    zone, not only in the counts; the verified zone holds ``published`` records. Returns the
    ``many`` quarantine."""
    volatile = ["run_id", "verified_at", "first_quarantined_at"]
    a = FootprintZones(tmp_path / "one" / "data")
    b = FootprintZones(tmp_path / "many" / "data")
    va = _sorted(a.read_verified("dump"), volatile, ["record_id"])
    vb = _sorted(b.read_verified("dump"), volatile, ["record_id"])
    assert va.num_rows == published and va.equals(vb)
    again = orjson.loads(body[-3])["id"]
    row = va.filter(pc.equal(va["statement_id"], again))
    assert CMI5_COMPLETED_TWICE in row["warnings"][0].as_py()
    qa = _sorted(a.read_quarantine("dump"), volatile, ["statement_id", "raw_sha256"])
    qb = _sorted(b.read_quarantine("dump"), volatile, ["statement_id", "raw_sha256"])
    assert qa.num_rows == one["quarantined"] and qa.equals(qb)
    return qb


def test_pieces_agree_with_one_piece(tmp_path: Path, lines: tuple[Path, list[bytes]],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    gen, body = lines
    one = _run(tmp_path / "one", gen, body)
    pieces: list[int] = []
    real = stage._normalised_pieces

    def counted(*a: Any, **k: Any) -> Any:
        for t in real(*a, **k):
            pieces.append(t.num_rows)
            yield t

    # and the raw bodies judged in two worker processes (a raw part a file block, ~1 MiB)
    judged: list[tuple[int, int]] = []
    real_parts = stage._judged_parts

    def parts(files: list[Path], *a: Any) -> Any:
        judged.append((len(files), a[-1]))
        yield from real_parts(files, *a)

    monkeypatch.setattr(stage, "PIECE_ROWS", 7)
    monkeypatch.setattr(stage, "_normalised_pieces", counted)
    monkeypatch.setattr(stage, "PARALLEL_JUDGE_BYTES", 0)
    monkeypatch.setattr(stage, "_judged_parts", parts)
    many = _run(tmp_path / "many", gen, body, "workers = 2\nbatch_statements = 100")
    assert max(pieces) <= 7 and len(pieces) > 300  # two passes (keys, rules) of many pieces
    assert len(judged) == 1 and judged[0][0] >= 2 and judged[0][1] == 2  # a pool, 2 parts+

    for k in ("read", "verified", "quarantined", "duplicates", "voiding", "published", "voided",
              "quarantined_by_reason", "warnings", "recovered", "pending_voids",
              "tolerated_deviations"):
        assert many[k] == one[k], k
    # what the added statements are there for did happen, across pieces
    assert one["warnings"].get(CMI5_COMPLETED_TWICE, 0) >= 1
    assert one["quarantined_by_reason"].get("conflicting-duplicate", 0) >= 1
    assert one["voided"] >= 1

    qb = _zones_agree(tmp_path, body, one, one["published"])
    # the raw text of a quarantined row is its body, fetched once all pieces were judged
    assert all(r.strip().startswith("{") for r in qb["raw"].to_pylist()[:50])
    # and the staging folder is gone
    assert not list((tmp_path / "many" / "data" / "_staging").rglob("verify-*"))
    # what a killed verification left staged goes with the next verification, also one run
    # on its own (as the Airflow verify task does, without an extraction before it)
    killed = tmp_path / "many" / "data" / "_staging" / "dump" / "verify-killed"
    killed.mkdir(parents=True)
    (killed / "piece-00000.arrow").write_bytes(b"partial")
    again = stage.verify_window(config.load(tmp_path / "many" / "footprint.toml"), "dump",
                                Window(None, None), "rerun")
    assert again.status == "succeeded" and again.published == many["published"]
    assert not killed.exists()


def test_staged_rows_give_back_what_was_staged(tmp_path: Path) -> None:
    """By day, by column (``date`` rebuilt, cmi5 warnings patched in front), by statement id."""
    def rows(ids: list[str], days: list[str]) -> pa.Table:
        return pa.table({
            "record_id": [f"r-{i}" for i in ids], "statement_id": ids,
            "warnings": pa.array([["no-registration"] if i == "b" else [] for i in ids],
                                 pa.list_(pa.string())),
            "date": days})

    staged = stage.StagedRows(tmp_path / "verify-x")
    first = rows(["a", "b", "c"], ["2026-09-02", "2026-09-01", "2026-09-02"])
    second = rows(["d", "e"], ["2026-09-01", "2026-09-03"])
    staged.add(first)
    staged.add(rows([], []))
    staged.add(second)
    staged.patch = {"r-b": ["cmi5-completed-twice"], "r-e": ["cmi5-passed-twice"]}
    assert staged.num_rows == 5 and staged.days() == ["2026-09-01", "2026-09-02", "2026-09-03"]
    assert staged.day("2026-09-01").to_pylist() == [
        {"record_id": "r-b", "statement_id": "b",
         "warnings": ["cmi5-completed-twice", "no-registration"], "date": "2026-09-01"},
        {"record_id": "r-d", "statement_id": "d", "warnings": [], "date": "2026-09-01"}]
    cols = staged.columns(["statement_id", "date", "warnings"])
    # staged order: a piece's rows by day (the first piece was sorted), then the next piece
    assert cols.to_pylist() == [
        {"statement_id": "b", "date": "2026-09-01",
         "warnings": ["cmi5-completed-twice", "no-registration"]},
        {"statement_id": "a", "date": "2026-09-02", "warnings": []},
        {"statement_id": "c", "date": "2026-09-02", "warnings": []},
        {"statement_id": "d", "date": "2026-09-01", "warnings": []},
        {"statement_id": "e", "date": "2026-09-03", "warnings": ["cmi5-passed-twice"]}]
    got = staged.with_ids(pa.array(["e", "a", "zz"]), ["record_id", "warnings"])
    assert got.to_pylist() == [{"record_id": "r-a", "warnings": []},
                               {"record_id": "r-e", "warnings": ["cmi5-passed-twice"]}]
    staged.discard()
    assert not (tmp_path / "verify-x").exists() and staged.columns(["date"]).num_rows == 0


def test_replay_in_pieces_agrees_with_one_piece(tmp_path: Path, lines: tuple[Path, list[bytes]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale roster quarantines half the learners (the cmi5 pair's among them); after the fix,
    a replay a few records at a time (bodies read back a row group at a time, normalised rows
    looked up by id) gives what one piece gives: the report, the verified zone and what stays in
    quarantine, the cmi5 warning judged across pieces included."""
    import csv
    import json

    from pipelines.verify import quality

    gen, body = lines
    doc = json.loads(quality.DEFAULT_SUITE_PATH.read_text(encoding="utf-8"))
    doc["footprint_checks"]["max_quarantined_share"]["max_share"] = 1.0  # let it publish
    (tmp_path / "suite.json").write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(quality, "_default_suite", lambda: quality.load_suite(
        tmp_path / "suite.json"))
    done = orjson.loads(body[-3])["actor"]  # the learner of the cmi5 "completed" twice
    with (gen / "roster.csv").open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    acc, mail = rows[0].index("lms_account"), rows[0].index("email")

    def theirs(r: list[str]) -> bool:
        return (done.get("account", {}).get("name") == r[acc]
                or done.get("mbox") == f"mailto:{r[mail]}")

    stale = [rows[0]] + [r for i, r in enumerate(rows[1:]) if i % 2 and not theirs(r)]
    reports = {}
    pieces: list[int] = []
    real = stage._replay_pieces

    def counted(t: pa.Table) -> Any:
        for p in real(t):
            pieces.append(p.num_rows)
            yield p

    for name, size in (("one", stage.PIECE_ROWS), ("many", 7)):
        tmp = tmp_path / name
        tmp.mkdir()
        roster = tmp / "roster.csv"
        with roster.open("w", encoding="utf-8", newline="") as fh:
            csv.writer(fh).writerows(stale)
        (tmp / "dump.ndjson").write_bytes(b"\n".join(body) + b"\n")
        write_config(tmp, f'[storage]\nworkers = 1\n[reference]\nroster = "{roster}"\n'
                          f'catalogue = "{gen / "catalogue.csv"}"\n'
                          '[[sources]]\nname = "dump"\nkind = "xapi-file"\n'
                          'path = "dump.ndjson"\n')
        s = config.load(tmp / "footprint.toml")
        first = ingest_source(s, "dump").verification
        assert first is not None and first["quarantined_by_reason"]["unknown-learner"] > 300
        roster.write_bytes((gen / "roster.csv").read_bytes())  # the fix
        with monkeypatch.context() as m:
            m.setattr(stage, "PIECE_ROWS", size)
            m.setattr(stage, "_replay_pieces", counted)
            pieces.clear()
            reports[name] = stage.replay_quarantine(s, "dump", f"replay-{name}").as_dict()
        assert reports[name]["status"] == "succeeded"
        assert (len(pieces) == 1) if name == "one" else (max(pieces) <= 7 and len(pieces) > 40)

    one, many = reports["one"], reports["many"]
    for k in ("read", "verified", "quarantined", "duplicates", "voiding", "published", "voided",
              "replayed", "conflicts_held", "quarantined_by_reason", "warnings",
              "tolerated_deviations"):
        assert many[k] == one[k], k
    assert one["replayed"] > 300 and one["warnings"].get(CMI5_COMPLETED_TWICE, 0) >= 1
    assert one["conflicts_held"] >= 1 and one["quarantined"] > one["conflicts_held"]
    _zones_agree(tmp_path, body, one, first["published"] + one["published"])
    assert not list((tmp_path / "many" / "data" / "_staging").rglob("replay-*"))
