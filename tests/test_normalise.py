from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest

from pipelines import contracts
from pipelines.xapi import normalise as n
from tests.conftest import corpus

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def stmt(**over: object) -> bytes:
    s: dict[str, object] = {
        "id": "9dc99b37-e920-4a68-a066-917faca28949",
        "actor": {"objectType": "Agent", "name": "Айгерім Сейітқали",
                  "account": {"homePage": "https://lms.university.kz", "name": "s1001"}},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/passed", "display": {"kk-KZ": "өтті",
                                                                          "en-US": "passed"}},
        "object": {"id": "https://lms.university.kz/mod/quiz/view.php?id=7",
                   "definition": {"type": "http://adlnet.gov/expapi/activities/assessment",
                                  "name": {"kk-KZ": "Тест 1", "ru-RU": "Тест 1"}}},
        "result": {"score": {"scaled": 0.85, "raw": 85, "min": 0, "max": 100},
                   "success": True, "completion": True, "duration": "PT25M13S",
                   "extensions": {"b": 1, "a": 2}},
        "context": {"registration": "0f4b2a52-5b0c-4e63-9a63-6f1f5c2d1e11",
                    "platform": "Moodle 4.3", "language": "kk-KZ",
                    "contextActivities": {"parent": [{"id": "https://lms.university.kz/course/1"}],
                                          "category": {"id": "https://w3id.org/xapi/cmi5"}}},
        "timestamp": "2026-10-03T14:15:27.123+05:00",
        "stored": "2026-10-03T09:16:00.000Z",
        "version": "1.0.3",
    }
    s.update(over)
    return orjson.dumps(s)


def one(raw: bytes) -> dict[str, object]:
    norm = n.Normaliser("main-lrs", "run-1")
    assert norm.add_page([raw], "http://lrs/xAPI/statements", NOW) == {}
    table, bad = norm.take()
    assert not bad
    return table.to_pylist()[0]


def test_normalise_fields_follow_contract() -> None:
    row = one(stmt())
    schema = contracts.normalised_statement().arrow_schema()
    assert set(row) == {f.name for f in schema} - {"source"}
    assert row["actor_ifi"] == "account:https://lms.university.kz|s1001"
    assert row["actor_name"] == "Айгерім Сейітқали"
    assert row["verb_display"] == "passed"
    assert one(stmt(verb={"id": "http://x/v", "display": {"fr": "x", "ru-RU": "прошёл"}}))[
        "verb_display"] == "прошёл"
    assert json.loads(row["object_name"]) == {"kk-KZ": "Тест 1", "ru-RU": "Тест 1"}
    assert row["result_score_raw"] == 85.0 and row["result_success"] is True
    assert row["result_duration_seconds"] == 25 * 60 + 13
    assert "result_extensions" not in row  # kept in the raw zone only
    assert row["context_parent_ids"] == ["https://lms.university.kz/course/1"]
    assert row["context_category_ids"] == ["https://w3id.org/xapi/cmi5"]  # single object form
    assert row["context_extensions"] is None
    assert row["timestamp"] == datetime(2026, 10, 3, 9, 15, 27, 123000, tzinfo=UTC)
    assert row["date"] == "2026-10-03"
    assert (row["fetch_ref"], row["fetch_index"]) == ("http://lrs/xAPI/statements", 0)
    assert row["fetched_at"] == NOW and row["run_id"] == "run-1"


def test_normalise_string_boolean_is_rejected_with_path() -> None:
    norm = n.Normaliser("s", "r")
    rej = norm.add_page([stmt(), stmt(result={"success": "false"})], "ref", NOW)[1]
    assert rej.reason == n.WRONG_TYPE and norm.take()[0].num_rows == 1
    assert "$.result.success" in rej.detail
    assert rej.statement_id == "9dc99b37-e920-4a68-a066-917faca28949"


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"id": "x", "verb": ', n.MALFORMED_JSON),
    (b"[1, 2]", n.NOT_AN_OBJECT),
    (b'{"id": 7}', n.WRONG_TYPE),
])
def test_normalise_rejects_on_add(raw: bytes, reason: str) -> None:
    rej = n.Normaliser("s", "r").add_page([raw], "ref", NOW)
    assert list(rej) == [0] and rej[0].reason == reason


def test_normalise_bad_ids_and_times_are_named_by_position() -> None:
    norm = n.Normaliser("s", "r")
    good = stmt()
    raws = [good, stmt(timestamp="yesterday"), stmt(stored="soon", timestamp=None),
            stmt(stored=None, timestamp=None), stmt(id="not-a-uuid"), good]
    assert norm.add_page(raws, "ref", NOW) == {}
    table, bad = norm.take()
    assert table.num_rows == 6
    assert {i: r.reason for i, r in bad.items()} == {
        1: n.BAD_TIMESTAMP, 2: n.BAD_STORED, 3: n.NO_TIME, 4: n.BAD_ID}


def test_normalise_naive_and_nanosecond_times_become_utc_micros() -> None:
    row = one(stmt(timestamp="2026-10-03T09:15:27.123456789Z", stored="2026-10-03T09:16:00"))
    assert row["timestamp"] == datetime(2026, 10, 3, 9, 15, 27, 123456, tzinfo=UTC)
    assert row["stored"] == datetime(2026, 10, 3, 9, 16, tzinfo=UTC)


def test_normalise_uppercase_id_is_canonical_and_idless_gets_derived_id() -> None:
    row = one(stmt(id="9DC99B37-E920-4A68-A066-917FACA28949"))
    assert row["statement_id"] == "9dc99b37-e920-4a68-a066-917faca28949"
    raw = stmt(id=None)
    a, b = one(raw), one(raw)
    assert a["statement_id_derived"] and a["statement_id"] == b["statement_id"]
    assert a["statement_id"] == str(uuid.uuid5(n.FOOTPRINT_NS, "sha256:" + a["raw_sha256"]))


def test_normalise_voiding_statement_names_its_target() -> None:
    row = one(stmt(verb={"id": n.VOIDED_VERB},
                   object={"objectType": "StatementRef",
                           "id": "11111111-2222-4333-8444-555555555555"}, result=None))
    assert row["voided_statement_id"] == "11111111-2222-4333-8444-555555555555"


DURATIONS = [("PT1H2M3.5S", 3723.5), ("P1DT1S", 86401.0), ("P2W", 1209600.0),
             ("PT0,5S", 0.5), ("PT25M13S", 1513.0), (None, None), ("", None), ("P", None),
             ("PT", None), ("1H", None), ("P1Y", None), ("P1DT", None)]


def test_duration_seconds_scalar_and_vectorised_agree() -> None:
    for text, secs in DURATIONS:
        assert n.duration_seconds(text) == secs, text
    got = n.durations_seconds(pa.array([t for t, _ in DURATIONS], pa.string())).to_pylist()
    assert got == [s for _, s in DURATIONS]


def test_actor_ifi_scalar_and_vectorised_agree() -> None:
    actors = [n.Actor(mbox="mailto:a@b.kz", account=n.Account("h", "x")),
              n.Actor(mbox_sha1sum="abc"), n.Actor(openid="http://o"),
              n.Actor(account=n.Account("https://lms", "s1")),
              n.Actor(account=n.Account(None, "s")),
              n.Actor()]
    cols = [pa.array(c, pa.string()) for c in zip(*[
        (a.mbox, a.mbox_sha1sum, a.openid, a.account and a.account.homePage,
         a.account and a.account.name) for a in actors], strict=True)]
    assert n._ifis(*cols).to_pylist() == [n.actor_ifi(a) for a in actors] == [
        "mbox:mailto:a@b.kz", "mbox_sha1sum:abc", "openid:http://o", "account:https://lms|s1",
        None, None]


def test_normalise_real_corpora_all_rows_kept() -> None:
    """Every statement Moodle, Open edX and a MOOC platform really sent normalises."""
    raws: list[bytes] = []
    for f in corpus("moodle-logstore_xapi", "tests").rglob("statements.json"):
        for s in json.loads(f.read_text()):
            s["timestamp"] = "2026-10-03T09:15:27Z"
            raws.append(orjson.dumps(s))
    for f in sorted(corpus("openedx-erb", "expected").glob("*.json")):
        doc = json.loads(f.read_text())
        raws.extend(orjson.dumps(s) for s in (doc if isinstance(doc, list) else [doc]))
    with gzip.open(corpus("ralph-video", "statements.json.gz")) as fh:
        raws.extend(line.strip() for line in fh)
    norm = n.Normaliser("corpus", "r")
    assert norm.add_page(raws, "x", NOW) == {}
    table, bad = norm.take()
    assert bad == {}
    assert table.num_rows == len(raws) > 22_000
    assert table.schema.equals(pa.schema([f for f in contracts.normalised_statement()
                                          .arrow_schema() if f.name != "source"]))
