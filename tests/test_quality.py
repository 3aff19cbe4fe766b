"""Quality checks of the verified footprint (pipelines/verify/quality.py).

Great Expectations takes 12-15 s to import: the module-scoped ``gx`` fixture imports it once and
every test that runs the suite uses it. The data is real generator output: statements of the
synthetic university, turned into verified-footprint rows with the contract's Arrow schema.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pyarrow as pa
import pytest

from pipelines import contracts
from pipelines.generate import TroubleShares, build_university, generate_statements
from pipelines.verify import quality
from pipelines.verify.quality import QualityOutcome, SuiteSpec, check_batch, load_suite
from pipelines.xapi.normalise import duration_seconds

ROOT = Path(__file__).resolve().parents[1]
NS = uuid.UUID("0d7f6a52-8f4e-5c1b-9a0e-3c6f1d2b7e45")
SYNC_VERBS = {"http://adlnet.gov/expapi/verbs/attended"}
TYPE_MEETING = "http://adlnet.gov/expapi/activities/meeting"


def verified_rows(count: int, seed: int = 7, source: str = "lrs") -> list[dict[str, Any]]:
    """Verified-footprint rows built from generated statements, as the verification would.

    Only what the contract needs: the learner from the roster (active ones only), the discipline
    from the catalogue (the object or a context parent), format/mode from the verb and activity.
    """
    univ = build_university(seed, students=150, disciplines=10)
    by_login = {s.lms_account: s for s in univ.students}
    by_mail = {f"mailto:{s.email}": s for s in univ.students}
    by_activity = {a: d for d in univ.disciplines for a in d.activity_ids}
    run_id = f"test-{seed}"
    now = datetime(2027, 1, 2, 3, 4, 5).astimezone()
    rows = []
    day = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday: one daily batch, as the pipeline has
    lines = generate_statements(univ, count, seed, TroubleShares.none(), day, day + timedelta(1))
    for g in lines:
        s = orjson.loads(g.line)
        actor = s["actor"]
        student = by_login.get(actor.get("account", {}).get("name")) or by_mail.get(
            actor.get("mbox")
        )
        if student is None or student.status != "active":
            continue
        obj = s["object"]
        ctx = s.get("context", {})
        parents = [p["id"] for p in ctx.get("contextActivities", {}).get("parent", [])]
        matched = next((a for a in [obj["id"], *parents] if a in by_activity), None)
        if matched is None:
            continue
        disc = by_activity[matched]
        res = s.get("result", {})
        score = res.get("score", {})
        if "scaled" in score:
            pct = score["scaled"] * 100
        elif {"raw", "min", "max"} <= score.keys() and score["max"] > score["min"]:
            pct = (score["raw"] - score["min"]) / (score["max"] - score["min"]) * 100
        else:
            pct = None
        otype = obj.get("definition", {}).get("type")
        sync = s["verb"]["id"] in SYNC_VERBS or otype == TYPE_MEETING
        ts = datetime.fromisoformat(s["timestamp"])
        rows.append(
            {
                "record_id": str(uuid.uuid5(NS, f"{source}/{s['id']}")),
                "statement_id": s["id"],
                "source": source,
                "date": ts.date().isoformat(),
                "iin": student.iin,
                "student_id": student.student_id,
                "programme_code": student.programme_code,
                "group": student.group,
                "discipline_code": disc.code,
                "credits": disc.credits,
                "period_start": disc.period_start.isoformat(),
                "period_end": disc.period_end.isoformat(),
                "activity_id": obj["id"],
                "matched_activity_id": matched,
                "verb_id": s["verb"]["id"],
                "object_definition_type": otype,
                "learning_format": "synchronous" if sync else "asynchronous",
                "learning_mode": "online" if sync else "distance",
                "score_scaled": score.get("scaled"),
                "score_raw": score.get("raw"),
                "score_min": score.get("min"),
                "score_max": score.get("max"),
                "score_percent": pct,
                "success": res.get("success"),
                "completion": res.get("completion"),
                "duration_seconds": duration_seconds(res.get("duration")),
                "registration": ctx.get("registration"),
                "timestamp": ts,
                "stored": datetime.fromisoformat(s["stored"]) if "stored" in s else None,
                "warnings": [],
                "raw_sha256": "0" * 64,
                "run_id": run_id,
                "verified_at": now,
            }
        )
    return rows


IINS: set[str] = set()  # every IIN of the generated rows, to prove none leaves


def as_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=contracts.load("verified-footprint", 1).arrow_schema())


@pytest.fixture(scope="module")
def gx() -> Iterator[ModuleType]:
    """Great Expectations, imported once for the module."""
    import great_expectations

    yield great_expectations


@pytest.fixture(scope="module")
def suite() -> SuiteSpec:
    return load_suite()


@pytest.fixture(scope="module")
def good_rows() -> list[dict[str, Any]]:
    rows = verified_rows(4000)
    IINS.update(r["iin"] for r in rows)
    return rows


@pytest.fixture(scope="module")
def good(gx: ModuleType, good_rows: list[dict[str, Any]], suite: SuiteSpec) -> QualityOutcome:
    return check_batch(
        as_table(good_rows),
        quarantined=10,
        read=len(good_rows) + 10,
        previous_counts=[len(good_rows)] * 7,
        suite=suite,
    )


@pytest.fixture(scope="module")
def bad(gx: ModuleType, good_rows: list[dict[str, Any]], suite: SuiteSpec) -> QualityOutcome:
    rows = [dict(r) for r in good_rows[:500]]
    rows[1]["record_id"] = rows[0]["record_id"]  # a duplicate
    rows[2]["iin"] = "95011230012A"  # 12 characters, one a letter
    rows[3]["score_percent"] = 140.0
    rows[4]["verb_id"] = "http://example.com/verbs/teleported"
    rows[5]["duration_seconds"] = 90_000.0  # a warning only
    return check_batch(
        as_table(rows), quarantined=0, read=500, previous_counts=[500] * 7, suite=suite
    )


# ------------------------------------------------------------------------------------------------
# the suite file


def test_suite_file_is_complete(suite: SuiteSpec) -> None:
    labels = [e.label for e in suite.expectations]
    assert "expect_column_values_to_be_unique(record_id)" in labels
    required = [
        "record_id",
        "statement_id",
        "iin",
        "student_id",
        "discipline_code",
        "verb_id",
        "timestamp",
        "learning_format",
        "learning_mode",
    ]
    for col in required:
        assert f"expect_column_values_to_not_be_null({col})" in labels
    assert suite.expectation("expect_column_values_to_match_regex(iin)").kwargs["regex"] == (
        "^[0-9]{12}$"
    )
    assert (
        suite.expectation("expect_column_values_to_match_regex(programme_code)").kwargs["regex"]
        == "^[678][BMD][0-9]{5}$"
    )
    for e in suite.expectations:
        assert e.severity in ("critical", "warning")
        kk, ru = e.meta["description_kk"], e.meta["description_ru"]
        assert re.search("[әғқңөұүһі]", kk.lower()), f"{e.label}: Kazakh text expected"
        assert re.search("[а-я]", ru.lower()) and not re.search("[әғқңөұүһі]", ru.lower())
    assert suite.max_quarantined_share == 0.05
    assert (suite.volume.min_ratio, suite.volume.max_ratio) == (0.5, 2.0)
    assert suite.volume.previous_days == 7
    # the verbs are exactly the ones the generator sends, less "voided" (never verified)
    src = (ROOT / "pipelines" / "generate" / "statements.py").read_text(encoding="utf-8")
    adl = "http://adlnet.gov/expapi/verbs/"
    generated = {adl + v for v in re.findall(r'_verb\(ADL \+ "(\w+)"\)', src)}
    generated |= set(re.findall(r'_verb\("(https?://[^"]+)"\)', src))
    generated.add(re.search(r'VIEWED_IRI = "([^"]+)"', src).group(1))  # type: ignore[union-attr]
    allowed = set(
        suite.expectation("expect_column_values_to_be_in_set(verb_id)").kwargs["value_set"]
    )
    assert allowed == generated - {adl + "voided"}


def test_suite_file_errors_are_clear(tmp_path: Path) -> None:
    doc = json.loads((ROOT / "expectations" / "verified_footprint.json").read_text("utf-8"))
    doc["expectations"][0]["meta"]["severity"] = "fatal"
    p = tmp_path / "s.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(quality.SuiteError, match=r"expectations\[0\]: meta.severity"):
        load_suite(p)
    doc["expectations"][0]["meta"]["severity"] = "critical"
    doc["expectations"][0]["kwargs"]["column"] = "no_such_column"
    p.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(quality.SuiteError, match="not in the verified-footprint v1 contract"):
        load_suite(p)


def test_import_does_not_load_great_expectations_or_pandas() -> None:
    code = (
        "import sys, pipelines.verify.quality as q; q.load_suite(); "
        "bad = [m for m in ('great_expectations', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# ------------------------------------------------------------------------------------------------
# verdicts


def test_good_batch_passes(good: QualityOutcome, good_rows: list[dict[str, Any]]) -> None:
    assert len(good_rows) > 3000
    assert good.passed, good.message()
    assert good.failed_critical == [] and good.failed_warning == []
    assert good.message() == "quality check passed"
    checks = {c["id"]: c for c in good.results["checks"]}
    assert len(checks) == 19 + 2
    unique = checks["expect_column_values_to_be_unique(record_id)"]
    assert unique["success"] and unique["element_count"] == len(good_rows)
    assert unique["unexpected_count"] == 0 and unique["severity"] == "critical"
    assert checks["volume"]["observed"]["ratio"] == 1.0
    json.dumps(good.results, allow_nan=False)  # JSON-able as it is


def test_bad_batch_fails_and_names_each_critical_failure(bad: QualityOutcome) -> None:
    assert not bad.passed
    assert bad.failed_critical == [
        "expect_column_values_to_be_unique(record_id)",
        "expect_column_values_to_match_regex(iin)",
        "expect_column_values_to_be_between(score_percent)",
        "expect_column_values_to_be_in_set(verb_id)",
    ]
    assert bad.failed_warning == ["expect_column_values_to_be_between(duration_seconds)"]
    msg = bad.message()
    assert msg.startswith("quality check failed: ")
    assert msg.endswith(
        "(warnings: expect_column_values_to_be_between(duration_seconds): "
        "1 value is outside [0, 86400] (e.g. 90000))"
    )
    assert "; the batch is kept unpublished" in msg
    for label in bad.failed_critical:
        assert label + ": " in msg
    assert "2 rows carry a duplicate value" in msg
    assert '1 value does not match ^[0-9]{12}$ (e.g. "###########*")' in msg
    assert "1 value is outside [0, 100] (e.g. 140)" in msg
    assert '(e.g. "http://example.com/verbs/teleported")' in msg
    # the IIN never leaves: neither the bad one nor any real one is in the results
    text = json.dumps(bad.results, ensure_ascii=False)
    assert "95011230012A" not in text
    assert not set(re.findall(r"\d{12}", text)) & IINS
    checks = {c["id"]: c for c in bad.results["checks"]}
    iin = checks["expect_column_values_to_match_regex(iin)"]
    assert iin["unexpected_values"] == ["###########*"]
    assert len(iin["unexpected_record_ids"]) == 1
    assert iin["description_kk"] and iin["description_ru"] and iin["description"]
    score = checks["expect_column_values_to_be_between(score_percent)"]
    assert score["unexpected_count"] == 1 and score["unexpected_values"] == [140.0]


def test_quarantined_share_above_threshold_fails(
    gx: ModuleType, good_rows: list[dict[str, Any]], suite: SuiteSpec
) -> None:
    table = as_table(good_rows[:300])
    at_limit = check_batch(table, quarantined=5, read=100, previous_counts=[], suite=suite)
    assert at_limit.passed
    over = check_batch(table, quarantined=6, read=100, previous_counts=[], suite=suite)
    assert not over.passed
    assert over.failed_critical == ["max_quarantined_share"]
    assert over.message() == (
        "quality check failed: max_quarantined_share: 6 of 100 statements read were "
        "quarantined (6.0%), above the limit of 5.0%; the batch is kept unpublished"
    )
    with pytest.raises(ValueError, match="cannot exceed read"):
        check_batch(table, quarantined=7, read=6, previous_counts=[], suite=suite)


def test_volume_far_below_median_is_a_warning_only(
    gx: ModuleType, good_rows: list[dict[str, Any]], suite: SuiteSpec
) -> None:
    table = as_table(good_rows[:100])
    history = [900, 1000, 1100, 1000, 950, 20_000, 1050, 1000]  # oldest first; last 7 count
    out = check_batch(table, quarantined=0, read=100, previous_counts=history, suite=suite)
    assert out.passed
    assert out.failed_critical == [] and out.failed_warning == ["volume"]
    vol = {c["id"]: c for c in out.results["checks"]}["volume"]
    assert vol["observed"]["median"] == 1000 and vol["observed"]["previous_counts"] == history[1:]
    assert out.message() == (
        "quality check passed with warnings: volume: 100 rows is 0.10 x the median 1000 of the "
        "previous 7 counts, outside [0.5, 2]"
    )
    few = check_batch(table, quarantined=0, read=100, previous_counts=[5000, 5000], suite=suite)
    assert few.failed_warning == []
    assert {c["id"]: c for c in few.results["checks"]}["volume"]["skipped"] is True


def test_arrow_types_reach_great_expectations_as_pandas_3_types(
    gx: ModuleType, good_rows: list[dict[str, Any]], suite: SuiteSpec
) -> None:
    table = as_table(good_rows[:50])
    df = quality._to_pandas(table, [*suite.columns, "warnings", "timestamp"])
    assert str(df["iin"].dtype) == "str" and str(df["verb_id"].dtype) == "str"
    assert str(df["timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(df["warnings"].dtype) == "str"  # list<string> flattened to a|b
    # a dictionary-encoded column (as some Parquet readers give) and a missing column
    enc = table.set_column(
        table.schema.get_field_index("verb_id"), "verb_id", table["verb_id"].dictionary_encode()
    ).drop_columns(["learning_mode"])
    out = check_batch(enc, quarantined=0, read=50, previous_counts=[], suite=suite)
    assert out.failed_critical == [
        "expect_column_values_to_not_be_null(learning_mode)",
        "expect_column_values_to_be_in_set(learning_mode)",
    ]
    assert "column 'learning_mode' is missing from the batch" in out.message()
    # a null in a required column: the message names the row by its record_id
    schema = table.schema
    i = schema.get_field_index("verb_id")
    rows = table.to_pylist()
    rows[7]["verb_id"] = None
    nulls = pa.Table.from_pylist(rows, schema.set(i, schema.field(i).with_nullable(True)))
    out = check_batch(nulls, quarantined=0, read=50, previous_counts=[], suite=suite)
    assert out.failed_critical == ["expect_column_values_to_not_be_null(verb_id)"]
    assert f'1 value is missing (null) (e.g. record_id "{rows[7]["record_id"]}")' in out.message()


# ------------------------------------------------------------------------------------------------
# results and Data Docs


def test_results_json_is_written_atomically_and_readable(
    bad: QualityOutcome, tmp_path: Path
) -> None:
    path = quality.save_results(bad, tmp_path, "manual__2026-09-02")
    assert path == tmp_path / "reports" / "quality" / "manual__2026-09-02.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["run_id"] == "manual__2026-09-02"
    assert doc["passed"] is False and doc["failed_critical"] == bad.failed_critical
    assert doc["message"] == bad.message()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    with pytest.raises(ValueError, match="cannot name a file"):
        quality.save_results(bad, tmp_path, "../escape")


URL = re.compile(r"""https?://[^\s"'<>()\\&]+""", re.IGNORECASE)
ATTR_URL = re.compile(
    r"""(?:\b(?:src|href|action|srcset|poster|data)\s*=\s*["']?\s*|url\(\s*["']?|@import\s+["'])"""
    r"""(https?://[^\s"'<>()]+)""",
    re.IGNORECASE,
)


def test_data_docs_are_built_and_reference_no_foreign_host(
    good: QualityOutcome, bad: QualityOutcome, suite: SuiteSpec, tmp_path: Path
) -> None:
    quality.save_results(good, tmp_path, "good-run")
    quality.save_results(bad, tmp_path, "bad-run")
    quality.build_data_docs(tmp_path, good, run_id="good-run", suite=suite)
    index = quality.build_data_docs(tmp_path, bad, run_id="bad-run", suite=suite)
    site = tmp_path / "reports" / "data_docs"
    assert index == site / "index.html"
    assert (tmp_path / "reports" / "gx" / "great_expectations.yml").is_file()
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert "expectations/verified_footprint.html" in pages
    assert sum(p.startswith("validations/verified_footprint/bad-run/") for p in pages) == 1
    assert sum(p.startswith("validations/verified_footprint/good-run/") for p in pages) == 1

    home = index.read_text(encoding="utf-8")
    assert "validations/verified_footprint/bad-run/" in home
    assert "failed / өтпеді / не пройдена" in home and "passed / өтті / пройдена" in home
    assert (
        suite.expectation("expect_column_values_to_match_regex(iin)").meta["description_kk"] in home
    )

    # data values that are IRIs (the allowed verbs, the unknown one) may show as text, nothing
    # may be loaded or linked from another host
    verbs = set(suite.expectation("expect_column_values_to_be_in_set(verb_id)").kwargs["value_set"])
    data_values = verbs | {"http://example.com/verbs/teleported"}
    checked = 0
    for f in site.rglob("*"):
        if f.suffix not in (".html", ".css", ".js"):
            continue
        checked += 1
        text = f.read_text(encoding="utf-8")
        for m in ATTR_URL.finditer(text):
            assert not quality.is_foreign(m.group(1)), f"{f}: loads or links {m.group(1)}"
        for url in URL.findall(text):
            assert not quality.is_foreign(url) or url in data_values, f"{f}: {url}"
        assert "<script" not in text.lower(), f"{f}: a script is left"
        assert "dataContextId" not in text
        assert not set(re.findall(r"\d{12}", text)) & IINS, f"{f}: an IIN"
    assert checked >= 4
    # the logo is the local copy
    page = next(site.glob("validations/verified_footprint/bad-run/*/*.html"))
    assert re.search(r'src="(\.\./)+static/images/logo-long\.png"', page.read_text("utf-8"))
    # what Great Expectations stored keeps no IIN either
    for f in (tmp_path / "reports" / "gx").rglob("*.json"):
        assert not set(re.findall(r"\d{12}", f.read_text(encoding="utf-8"))) & IINS, f


class _Lazy:
    """A :class:`quality.ColumnSource` over a table that records what each load asked for."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.column_names = table.column_names
        self.num_rows = table.num_rows
        self.loads: list[list[str]] = []

    def load(self, columns: list[str]) -> pa.Table:
        self.loads.append(list(columns))
        return self.table.select(columns)


def test_a_column_source_is_read_a_column_at_a_time_with_the_same_verdicts(
    gx: ModuleType, good_rows: list[dict[str, Any]], suite: SuiteSpec, tmp_path: Path
) -> None:
    """The suite runs a column at a time (uniqueness first), table-level expectations too, and
    the verdicts and the record ids named are those of the whole table at once."""
    doc = json.loads(suite.path.read_text(encoding="utf-8"))
    doc["expectations"].append({
        "type": "expect_table_row_count_to_be_between",
        "kwargs": {"min_value": 1, "max_value": 10},
        "meta": {"severity": "warning", "description": "d", "description_kk": "d",
                 "description_ru": "d"},
    })
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    wider = load_suite(path)
    rows = [dict(r) for r in good_rows[:300]]
    rows[7]["iin"] = "95011230012A"
    table = as_table(rows)
    lazy = _Lazy(table)
    args: dict[str, Any] = {"quarantined": 0, "read": 300, "previous_counts": [300] * 7,
                            "suite": wider}
    a, b = check_batch(table, **args), check_batch(lazy, **args)
    assert a.results["checks"] == b.results["checks"]
    checks = {c["id"]: c for c in b.results["checks"]}
    rows_check = checks["expect_table_row_count_to_be_between"]
    assert rows_check["exception"] is None and rows_check["success"] is False  # 300 > 10: ran
    iin = checks["expect_column_values_to_match_regex(iin)"]
    assert iin["unexpected_record_ids"] == [rows[7]["record_id"]]
    assert lazy.loads[0] == ["record_id"]  # the uniqueness check first, alone
    assert all(len(cols) <= 2 for cols in lazy.loads)
    assert b.gx_result is not None and len(b.gx_result.results) == len(wider.expectations)
    assert b.gx_result.statistics["evaluated_expectations"] == len(wider.expectations)


def test_a_big_batch_checked_in_buckets_gives_what_one_run_gives(
    gx: ModuleType, good_rows: list[dict[str, Any]], suite: SuiteSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over BUCKET_ROWS rows the uniqueness check runs on hash buckets of the ids and the
    row-by-row checks on slices of rows; repeated ids (some three times, some far apart), nulls
    and values out of range in several slices are found, counted and named as one run over the
    whole batch finds, counts and names them (more than the 20 examples kept)."""
    rows = [dict(r) for r in good_rows[:900]]
    for src, dst in ((0, 1), (0, 850), (10, 11), (300, 899), (500, 501), (500, 502)):
        rows[dst]["record_id"] = rows[src]["record_id"]
    for i in range(5, 900, 37):
        rows[i]["iin"] = None if i % 2 else "95011230012A"
        rows[i + 1]["score_percent"] = 100.0 + i
    table = as_table(rows)
    args: dict[str, Any] = {"quarantined": 0, "read": 900, "previous_counts": [900] * 7,
                            "suite": suite}
    whole = check_batch(table, **args)
    monkeypatch.setattr(quality, "BUCKET_ROWS", 100)  # 9 buckets
    runs: list[int] = []
    real = quality._run_gx

    def counted(*a: Any, **k: Any) -> Any:
        runs.append(len(a[1]))
        return real(*a, **k)

    monkeypatch.setattr(quality, "_run_gx", counted)
    buckets = check_batch(table, **args)
    assert max(runs) < 200 and len(runs) > 9 * 10  # every column's checks ran a bucket apart
    checks = {c["id"]: c for c in whole.results["checks"]}
    assert checks["expect_column_values_to_be_unique(record_id)"]["unexpected_count"] == 10
    assert checks["expect_column_values_to_not_be_null(iin)"]["unexpected_count"] == 13
    assert checks["expect_column_values_to_be_between(score_percent)"]["unexpected_count"] == 25
    assert whole.results["checks"] == buckets.results["checks"]
    for ra, rb in zip(whole.gx_result.results, buckets.gx_result.results, strict=True):
        ca, cb = ra.expectation_config, rb.expectation_config
        assert (ca.type, ca.kwargs) == (cb.type, cb.kwargs)
        assert (ra.success, ra.result) == (rb.success, rb.result), ra.expectation_config.type
    assert whole.gx_result.statistics == buckets.gx_result.statistics


def test_a_run_that_fails_midway_leaves_nothing_behind_for_the_next_check(
    gx: ModuleType, good_rows: list[dict[str, Any]], bad: QualityOutcome, suite: SuiteSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GX's context is kept for the runs of one check (one per column and bucket) and dropped
    at its end; a run that fails between adding its suite and running it (here the validation
    definition cannot be made) does not leave the suite behind to break the next check."""
    rows = [dict(r) for r in good_rows[:500]]
    rows[1]["record_id"] = rows[0]["record_id"]
    rows[2]["iin"] = "95011230012A"
    rows[3]["score_percent"] = 140.0
    rows[4]["verb_id"] = "http://example.com/verbs/teleported"
    rows[5]["duration_seconds"] = 90_000.0
    table = as_table(rows)
    assert quality._gx_runner.cache_info().currsize == 0  # earlier checks dropped theirs
    real, calls = gx.ValidationDefinition, []

    def fails_on_the_third(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("made to fail")
        return real(*args, **kwargs)

    monkeypatch.setattr(gx, "ValidationDefinition", fails_on_the_third)
    with pytest.raises(RuntimeError, match="made to fail"):
        check_batch(table, quarantined=0, read=500, previous_counts=[500] * 7, suite=suite)
    assert quality._gx_runner.cache_info().currsize == 0
    again = check_batch(table, quarantined=0, read=500, previous_counts=[500] * 7, suite=suite)
    assert len(calls) > 3 and quality._gx_runner.cache_info().currsize == 0
    assert (again.failed_critical, again.failed_warning) == (bad.failed_critical,
                                                             bad.failed_warning)
    assert again.results["checks"] == bad.results["checks"]
