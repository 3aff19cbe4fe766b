"""Data Docs end to end: ``[quality] data_docs = true``, then ``footprint ingest`` and
``footprint quarantine replay`` build Great Expectations Data Docs under the storage root's
``reports/`` folder, name them in the run report, and the site loads or links nothing from another
host (the checks of tests/test_quality.py, on the pages a real run builds).

Real files: a generated university, an xapi-file source, the Parquet zones, SQLite state.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from pipelines import config
from pipelines.cli import app
from pipelines.generate import TroubleShares, run_generate
from pipelines.verify import quality
from tests.conftest import write_config
from tests.test_quality import ATTR_URL, URL
from tests.test_verify_stage import drop_student, statements

START, END = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def university(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    run_generate(out, seed=11, students=60, disciplines=4, statements=600,
                 trouble=TroubleShares.none(), start=START, end=END)
    return out


def iris(value: Any) -> set[str]:
    """Every http(s) string in a statement: data values a page may show as text."""
    if isinstance(value, dict):
        return set().union(*(iris(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(iris(v) for v in value)) if value else set()
    if isinstance(value, str) and re.match(r"https?://", value):
        return {value}
    return set()


def run(args: list[str], cfg: Path) -> dict[str, Any]:
    res = CliRunner().invoke(app, [*args, "--json", "-c", str(cfg)])
    assert res.exit_code == 0, res.output
    out: dict[str, Any] = json.loads(res.stdout)
    assert out["status"] == "succeeded", out
    return out


def test_ingest_and_replay_build_data_docs_under_the_storage_root(
    university: Path, tmp_path: Path,
) -> None:
    lines = statements(university)
    roster, n_missing = drop_student(university, lines, tmp_path / "roster.csv")
    assert n_missing > 0
    (tmp_path / "dump.ndjson").write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    cfg = write_config(tmp_path, (
        '[storage]\nroot = "store"\nworkers = 1\n'
        '[quality]\ndata_docs = true\n'
        f'[reference]\nroster = "roster.csv"\ncatalogue = "{university / "catalogue.csv"}"\n'
        '[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "dump.ndjson"\n'))
    settings = config.load(cfg)
    assert settings.data_docs and settings.storage_root == tmp_path / "store"
    reports = tmp_path / "store" / "reports"
    site = reports / "data_docs"
    index = site / "index.html"

    # ingestion + verification: the run report names the index, which exists
    out = run(["ingest"], cfg)
    assert out["verification"] == "succeeded" and out["quality"]["passed"] is True
    v = out["sources"][0]["verification"]
    assert v["data_docs"] == str(index) and index.is_file()
    assert v["quality_results"] == str(reports / "quality" / f"{v['run_id']}.json")
    run_page = f"validations/verified_footprint/{v['run_id']}/"
    assert run_page in index.read_text(encoding="utf-8")
    assert sum(1 for _ in site.glob(run_page + "*/*.html")) == 1
    assert (site / "expectations" / "verified_footprint.html").is_file()

    # a replay after the roster fix is a verification too: its run gets its page
    roster.write_bytes((university / "roster.csv").read_bytes())
    rep = run(["quarantine", "replay"], cfg)["sources"][0]
    assert rep["replayed"] > 0 and rep["data_docs"] == str(index)
    home = index.read_text(encoding="utf-8")
    assert run_page in home and f"validations/verified_footprint/{rep['run_id']}/" in home
    assert "passed / өтті / пройдена" in home

    # nothing under the site loads or links another host; IRIs of the data may show as text
    suite = quality.load_suite()
    data_values = set(
        suite.expectation("expect_column_values_to_be_in_set(verb_id)").kwargs["value_set"])
    for x in lines:
        data_values |= iris(x)
    with (university / "roster.csv").open(encoding="utf-8-sig", newline="") as fh:
        iins = {row["iin"] for row in csv.DictReader(fh)}
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
        assert not set(re.findall(r"\d{12}", text)) & iins, f"{f}: an IIN"
    assert checked >= 4
    for f in (reports / "gx").rglob("*.json"):
        assert not set(re.findall(r"\d{12}", f.read_text(encoding="utf-8"))) & iins, f
    # and no report is written outside the storage root (the state database's default place,
    # data/state.db, is its own setting)
    assert list(tmp_path.glob("**/reports")) == [reports]
    assert {p.name for p in (tmp_path / "data").iterdir()} <= {
        "state.db", "state.db-wal", "state.db-shm"}
