"""pipelines.deliver.records: each derivation rule of a delivered record, on hand-made rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pyarrow as pa
import pytest

from pipelines import contracts
from pipelines.deliver import records as R

BIN = "980140000005"
IIN = "060416591306"
ADL = "http://adlnet.gov/expapi/verbs/"
T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
TOTALS = {("ICT101", "2026-09-01", "2026-12-31"): 4}


def row(n: int, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "record_id": f"r{n}", "statement_id": f"s{n}", "source": "main-lrs", "date": "2026-10-01",
        "iin": IIN, "student_id": "23000491", "programme_code": "6B06102", "group": "ИС-23-1",
        "discipline_code": "ICT101", "credits": 5, "period_start": "2026-09-01",
        "period_end": "2026-12-31", "activity_id": f"https://lms/act/{n}",
        "matched_activity_id": f"https://lms/act/{n}", "verb_id": ADL + "experienced",
        "object_definition_type": None, "learning_format": "asynchronous",
        "learning_mode": "distance", "score_scaled": None, "score_raw": None, "score_min": None,
        "score_max": None, "score_percent": None, "success": None, "completion": None,
        "duration_seconds": None, "registration": None, "timestamp": T0 + timedelta(minutes=n),
        "stored": T0 + timedelta(minutes=n), "warnings": [], "raw_sha256": "0" * 64,
        "run_id": "run", "verified_at": T0,
    }
    base.update(kw)
    return base


def build(*rows: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schema = contracts.load("verified-footprint", 1).arrow_schema()
    table = pa.Table.from_pylist(list(rows), schema=schema)
    return R.build_from_table(table, BIN, TOTALS).records


def only(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert len(records) == 1
    return next(iter(records.values()))


def test_record_key_and_id_are_deterministic() -> None:
    rec = only(build(row(1), row(2)))
    assert rec["academic_period"] == "2026-09-01/2026-12-31"
    assert rec["record_id"] == R.record_id(BIN, IIN, "ICT101", "2026-09-01/2026-12-31")
    assert rec["institution_code"] == BIN and rec["statement_count"] == 2
    other = build(row(1, iin="050819678641"), row(2))
    assert len(other) == 2 and rec["record_id"] in other


def test_sync_async_online_distance_counts_and_seconds() -> None:
    rec = only(build(
        row(1, learning_format="synchronous", learning_mode="online", duration_seconds=3600.0,
            verb_id=ADL + "attended"),
        row(2, learning_format="synchronous", learning_mode="online", duration_seconds=1800.0,
            verb_id=ADL + "attended", matched_activity_id="https://lms/act/1"),
        row(3, duration_seconds=600.5),
        row(4),
    ))
    assert (rec["sync_activity_count"], rec["sync_activity_seconds"]) == (2, 5400.0)
    assert (rec["async_activity_count"], rec["async_activity_seconds"]) == (2, 600.5)
    assert (rec["online_activity_count"], rec["distance_activity_count"]) == (2, 2)
    assert rec["learning_mode"] == "mixed"
    assert rec["live_sessions_attended"] == 1  # the same live session attended twice


def test_learning_mode_single() -> None:
    assert only(build(row(1), row(2)))["learning_mode"] == "distance"
    assert only(build(row(1, learning_mode="online")))["learning_mode"] == "online"


def test_completion_counts_distinct_catalogue_activities() -> None:
    acts = [f"https://lms/act/{i}" for i in range(4)]
    rows = [row(i, verb_id=ADL + "completed", matched_activity_id=a)
            for i, a in enumerate(acts[:3])]
    rows.append(row(9, verb_id=ADL + "completed", matched_activity_id=acts[0]))  # again
    rec = only(build(*rows))
    assert (rec["activities_completed"], rec["activities_total"]) == (3, 4)
    assert rec["completion_status"] == "in_progress"
    rows.append(row(10, completion=True, matched_activity_id=acts[3]))
    rec = only(build(*rows))
    assert rec["activities_completed"] == 4 and rec["completion_status"] == "completed"


def test_latest_outcome_per_assessment_decides() -> None:
    quiz, exam = "https://lms/quiz/1", "https://lms/quiz/2"
    rec = only(build(
        row(1, matched_activity_id=quiz, verb_id=ADL + "failed", success=False, score_percent=40.0),
        row(2, matched_activity_id=quiz, verb_id=ADL + "passed", success=True, score_percent=80.0),
        row(3, matched_activity_id=exam, verb_id=ADL + "failed", success=False, score_percent=30.0),
    ))
    assert (rec["assessments_passed"], rec["assessments_failed"]) == (1, 1)
    assert rec["current_score"] == 55.0  # mean of the latest scores 80 and 30
    assert (rec["letter_grade"], rec["gpa_points"]) == ("D+", 1.33)
    assert rec["activities_completed"] == 1  # passed counts as completed


def test_no_score_gives_null_grade() -> None:
    rec = only(build(row(1)))
    assert rec["current_score"] is None and rec["letter_grade"] is None
    assert rec["gpa_points"] is None


@pytest.mark.parametrize(("score", "letter", "points"), [
    (100, "A", 4.0), (95, "A", 4.0), (94.99, "A-", 3.67), (90, "A-", 3.67), (89, "B+", 3.33),
    (80, "B", 3.0), (75, "B-", 2.67), (70, "C+", 2.33), (65, "C", 2.0), (60, "C-", 1.67),
    (55, "D+", 1.33), (50, "D", 1.0), (49.99, "FX", 0.0), (25, "FX", 0.0), (24.9, "F", 0.0),
    (0, "F", 0.0),
])
def test_grade_scale_bands(score: float, letter: str, points: float) -> None:
    assert R.grade(score) == (letter, points)


def test_latest_programme_and_sources_sorted() -> None:
    rec = only(build(row(1, programme_code="6B06101", source="moodle"),
                     row(2, programme_code="6B06102", source="main-lrs"),
                     row(3, source="moodle")))
    assert rec["programme_code"] == "6B06102"
    assert rec["source_systems"] == ["main-lrs", "moodle"]
    assert rec["last_activity_at"] == "2026-10-01T09:03:00.000Z"


def test_content_hash_ignores_updated_at_and_number_spelling() -> None:
    rec = only(build(row(1, duration_seconds=60.0)))
    sent = R.with_updated_at(rec, T0)
    again = dict(sent, updated_at="2030-01-01T00:00:00.000Z", sync_activity_seconds=0)
    assert R.content_hash(again) == rec["content_hash"]
    assert R.differences(sent, again) == []
    changed = dict(sent, async_activity_seconds=61.0, unknown_field=1)
    assert R.content_hash(changed) != rec["content_hash"]
    assert R.differences(sent, changed) == ["async_activity_seconds"]


def test_built_records_validate_against_the_contract() -> None:
    schema = contracts.load("delivered-record", 1).json_schema
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    recs = build(row(1, success=True, score_percent=97.5, learning_format="synchronous",
                     learning_mode="online", verb_id=ADL + "attended"),
                 row(2, iin="050819678641"))
    for rec in recs.values():
        validator.validate(R.with_updated_at(rec, T0))
    for rec in recs.values():
        assert set(R.with_updated_at(rec, T0)) == set(R.FIELDS)
        # the hash made while building equals the canonical hash of what is sent
        assert R.content_hash(R.with_updated_at(rec, T0)) == rec["content_hash"]


def test_empty_footprint_gives_no_records() -> None:
    schema = contracts.load("verified-footprint", 1).arrow_schema()
    assert R.build_from_table(schema.empty_table(), BIN, TOTALS).records == {}


def test_record_id_is_rfc4122_uuid5_of_the_key() -> None:
    import uuid

    for key in [(BIN, IIN, "ICT101", "2026-09-01/2026-12-31"), (BIN, "050819678641", "Қаз", "x")]:
        want = uuid.uuid5(R.RECORD_NAMESPACE, "/".join(key))
        assert R.record_id(*key) == str(want) and want.version == 5


def test_stream_in_parts_gives_the_whole_table_records_in_id_order() -> None:
    """RecordStream sums a range of ids at a time: any number of parts gives the records the
    whole-table aggregation gives (latest outcome per activity included), in record_id order."""
    import random
    from datetime import date

    import orjson

    from pipelines.iin import make_iin

    rng = random.Random(187)
    iins = [make_iin(date(2005, 1, 1) + timedelta(days=i), i % 2 == 0, 100 + i)
            for i in range(40)]
    rows = []
    for n in range(600):
        rows.append(row(
            n, iin=rng.choice(iins), discipline_code=rng.choice(["ICT101", "MAT102", "PHY103"]),
            matched_activity_id=f"https://lms/act/{rng.randint(1, 6)}",
            verb_id=ADL + rng.choice(["passed", "failed", "completed", "attended"]),
            learning_format=rng.choice(["synchronous", "asynchronous"]),
            success=rng.choice([True, False, None]),
            score_percent=rng.choice([None, float(rng.randint(0, 100))]),
            timestamp=T0 + timedelta(minutes=rng.randint(0, 10_000)),
            source=rng.choice(["main-lrs", "moodle"])))
    schema = contracts.load("verified-footprint", 1).arrow_schema()
    table = pa.Table.from_pylist(rows, schema=schema)
    agg = R.aggregate(table)
    assert agg.num_rows > 60
    whole = {r["record_id"]: r for r in R._records(
        agg, BIN, TOTALS, [R.record_id(BIN, a, d, f"{s}/{e}") for a, d, s, e in zip(
            *[agg[k].to_pylist() for k in ("iin", "discipline_code", "period_start",
                                            "period_end")], strict=True)])}
    for parts in (1, 3, 16, 1000):
        json_out: dict[str, bytes] = {}
        stream = R.RecordStream(table, BIN, TOTALS, parts=parts, json_out=json_out)
        got = list(stream)
        assert stream.records == len(got) == len(whole)
        assert [r["record_id"] for r in got] == sorted(whole)
        assert {r["record_id"]: r for r in got} == whole
        rec, stamp = got[0], "2026-11-01T00:00:00.000Z"
        sent = R.payload_json(json_out[rec["record_id"]], rec["content_hash"], stamp)
        assert orjson.loads(sent) == R.with_updated_at(rec, stamp)
