"""The footprint command as a person and a script use it: help, errors, --json."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from tests.conftest import write_config

runner = CliRunner()
LRS_CONFIG = '[[sources]]\nname = "main-lrs"\nkind = "xapi-lrs"\nendpoint = "http://127.0.0.1:9/xAPI/"\n'


def test_cli_help_is_fast_and_lists_commands() -> None:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], capture_output=True,
                         text=True, check=True)
    assert time.perf_counter() - t < 5  # no pyarrow/airflow/GX import for --help
    for cmd in ("ingest", "status", "generate", "lrs"):
        assert cmd in out.stdout
    sub = runner.invoke(app, ["ingest", "--help"])
    assert "--since" in sub.output and "watermark" in sub.output


def test_cli_missing_credentials_names_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_config(tmp_path, LRS_CONFIG)
    monkeypatch.chdir(tmp_path)
    for k in ("USERNAME", "PASSWORD", "TOKEN"):
        monkeypatch.delenv(f"FOOTPRINT_SOURCE_MAIN_LRS_{k}", raising=False)
    res = runner.invoke(app, ["ingest", "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout.splitlines()[0])
    assert doc["status"] == "failed"
    assert "FOOTPRINT_SOURCE_MAIN_LRS_USERNAME" in doc["error"]


def test_cli_bad_config_and_bad_time_are_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_config(tmp_path, LRS_CONFIG + "page_size = -1\n")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 1 and "sources[0].page_size" in res.output
    write_config(tmp_path, LRS_CONFIG)
    res = runner.invoke(app, ["ingest", "--since", "last tuesday"])
    assert res.exit_code == 2 and "not an ISO 8601 date or time" in res.output


def test_cli_ingest_file_source_json_summary(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [orjson.dumps({"id": f"00000000-0000-4000-8000-00000000000{i}",
                           "actor": {"mbox": "mailto:a@b.kz"},
                           "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
                           "object": {"id": "https://lms/x"},
                           "timestamp": f"2026-10-0{i + 1}T10:00:00Z"}) for i in range(3)]
    (tmp_path / "d.ndjson").write_bytes(b"\n".join([*lines, b"{oops"]))
    write_config(tmp_path, '[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "d.ndjson"\n')
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["ingest", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {k: doc[k] for k in ("read", "written", "rejected", "duplicates")} == {
        "read": 4, "written": 3, "rejected": 1, "duplicates": 0}
    assert doc["rejected_by_reason"] == {"malformed-json": 1}
    st = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert st["sources"][0]["normalised_rows"] == 3
    assert st["sources"][0]["partitions"] == 3


def test_cli_validate_verdicts_in_input_order(tmp_path: Path) -> None:
    good = {"actor": {"mbox": "mailto:a@b.kz"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
            "object": {"id": "https://lms.university.kz/mod/bigbluebuttonbn/view.php?id=1"}}
    bad = {**good, "actor": {"mbox": "a@b.kz"}}
    v2 = {**good, "version": "2.0.0", "context": {"contextAgents": [
        {"objectType": "contextAgent", "agent": {"mbox": "mailto:t@b.kz"}}]}}
    f = tmp_path / "s.ndjson"
    f.write_bytes(b"\n".join([orjson.dumps(good), orjson.dumps(bad), b"{nope", orjson.dumps(v2)]))
    res = runner.invoke(app, ["validate", str(f), "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert [(d["index"], d["valid"]) for d in doc] == [(0, True), (1, False), (2, False), (3, True)]
    assert doc[1]["reasons"][0]["code"] == "bad-mbox"
    assert doc[1]["reasons"][0]["path"] == "$.actor.mbox"
    assert doc[2]["reasons"][0]["code"] == "malformed-json"
    arr = tmp_path / "ok.json"
    arr.write_text(json.dumps([good, good]))
    res = runner.invoke(app, ["validate", str(arr)])
    assert res.exit_code == 0 and "2 valid, 0 invalid" in res.output
    # 1.0.3 rules for a statement without a version reject 2.0 properties
    one = tmp_path / "one.json"
    one.write_text(json.dumps({k: v for k, v in v2.items() if k != "version"}))
    assert runner.invoke(app, ["validate", str(one)]).exit_code == 1
    assert runner.invoke(app, ["validate", str(one), "--xapi-version", "2.0.0"]).exit_code == 0
