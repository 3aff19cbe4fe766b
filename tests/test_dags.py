"""DAG integrity (issue 5): the DAG files parse, fast, with no I/O, and follow the house rules.

Airflow is imported only in a subprocess (tests/support/airflow_probe.py) with a temporary
AIRFLOW_HOME, so this test process, like the `footprint` CLI, never loads it. The probe's JSON is
shared by the tests below (one Airflow import for all of them).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines import orchestrate

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
DAG_IDS = {"footprint_ingest", "footprint_deliver", "footprint_quality"}
VERIFIED = orchestrate.VERIFIED_ASSET[1]
AUTHORITY = orchestrate.AUTHORITY_ASSET[1]


def airflow_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FOOTPRINT_"))}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    })
    return env


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow-home")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "airflow_probe.py")],
                         env=airflow_env(home), cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    lines = [x for x in out.stdout.splitlines() if x.startswith("PROBE_JSON ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("PROBE_JSON "))
    print("DAG parse times (s), cold:", result["parse_cold_s"], "warm:", result["parse_warm_s"])
    return result


def test_dagbag_has_the_three_dags_and_no_import_errors(probe: dict[str, Any]) -> None:
    assert probe["import_errors"] == {}
    assert set(probe["dags"]) == DAG_IDS
    for dag_id, d in probe["dags"].items():
        assert Path(d["fileloc"]).name == f"{dag_id}.py"


def test_dags_have_no_cycles_tags_owner_doc_and_retries_with_backoff(
        probe: dict[str, Any]) -> None:
    for dag_id, d in probe["dags"].items():
        assert d["cycle"] is None, (dag_id, d["cycle"])
        assert "footprint" in d["tags"] and len(d["tags"]) >= 2, dag_id
        assert d["owner"] == "footprint", dag_id
        assert d["doc_md"].strip().startswith(f"### {dag_id}"), dag_id
        assert d["catchup"] is False and d["max_active_runs"] == 1, dag_id
        for task_id, t in d["tasks"].items():
            where = f"{dag_id}.{task_id}"
            assert t["retries"] > 0, where
            assert t["retry_exponential_backoff"] > 1, where
            assert t["max_retry_delay"] and t["max_retry_delay"] >= t["retry_delay"] > 0, where
            assert t["owner"] == "footprint", where
            assert t["on_failure_callback"] == ["on_task_failure"], where


def test_ingest_is_an_hourly_interval_timetable_mapped_per_source_producing_the_asset(
        probe: dict[str, Any]) -> None:
    d = probe["dags"]["footprint_ingest"]
    assert d["timetable"] == "CronDataIntervalTimetable"  # not a zero-length cron trigger
    assert d["cron"] == "0 * * * *" and d["timezone"] == "UTC"
    tasks = d["tasks"]
    assert [tasks[t]["upstream"] for t in ("extract", "verify", "publish")] == [
        ["sources"], ["extract"], ["verify"]]
    assert all(tasks[t]["mapped"] for t in ("extract", "verify", "publish"))
    assert tasks["publish"]["outlets"] == [VERIFIED]
    assert all(not t["outlets"] for k, t in tasks.items() if k != "publish")


def test_deliver_runs_on_the_asset_or_daily_and_quality_daily(probe: dict[str, Any]) -> None:
    d = probe["dags"]["footprint_deliver"]
    assert d["timetable"] == "AssetOrTimeSchedule"
    assert d["schedule_assets"] == [VERIFIED]
    assert d["inner_timetable"] == "CronTriggerTimetable" and d["cron"] == "0 5 * * *"
    assert [d["tasks"][t]["upstream"] for t in ("plan", "deliver", "reconcile")] == [
        [], ["plan"], ["deliver"]]
    assert d["tasks"]["reconcile"]["outlets"] == [AUTHORITY]
    q = probe["dags"]["footprint_quality"]
    assert q["timetable"] == "CronDataIntervalTimetable" and q["cron"] == "0 4 * * *"


def test_dag_files_parse_well_under_a_second(probe: dict[str, Any]) -> None:
    files = {f"{d}.py" for d in DAG_IDS}
    assert set(probe["parse_cold_s"]) == files == set(probe["parse_warm_s"])
    # cold: the first file also pays for Airflow's lazily imported DAG machinery
    assert max(probe["parse_cold_s"].values()) < 1.0, probe["parse_cold_s"]
    assert sum(probe["parse_cold_s"].values()) < 1.0, probe["parse_cold_s"]
    # warm, as in the DAG processor: each file alone
    assert max(probe["parse_warm_s"].values()) < 0.25, probe["parse_warm_s"]


def test_dag_files_do_no_io_at_parse_time(probe: dict[str, Any]) -> None:
    assert probe["io"] == {f"{d}.py": [] for d in DAG_IDS}
    canary = probe["io_canary"]["canary_dag.py"]
    assert canary and "read_text" in canary[0], canary  # the probe does see I/O


_FORBIDDEN_AT_TOP = {"open", "read_text", "read_bytes", "get", "urlopen", "connect", "run",
                     "Popen", "load", "loads", "listdir", "scandir", "glob", "exists"}
_HEAVY = {"pyarrow", "pandas", "great_expectations", "httpx", "sqlalchemy", "msgspec", "orjson"}


def _top_level_calls(tree: ast.Module) -> list[str]:
    """Names of functions called outside any function body (what runs when the file parses)."""
    calls: list[str] = []

    class Visitor(ast.NodeVisitor):
        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            for d in node.decorator_list:  # decorators run at import; bodies do not
                self.visit(d)

        def visit_Call(self, node: ast.Call) -> None:
            f = node.func
            calls.append(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "?"))
            self.generic_visit(node)

    Visitor().visit(tree)
    return calls


@pytest.mark.parametrize("name", sorted(f"{d}.py" for d in DAG_IDS))
def test_dag_file_top_level_is_definitions_only(name: str) -> None:
    """An AST rule beside the probe: at top level a DAG file imports airflow.sdk and
    pipelines.orchestrate only, and calls nothing that reads, connects or runs."""
    tree = ast.parse((DAGS / name).read_text(encoding="utf-8"))
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= {"__future__", "datetime", "typing", "airflow.sdk", "pipelines"}, imported
    calls = _top_level_calls(tree)
    assert not set(calls) & _FORBIDDEN_AT_TOP, calls
    for node in ast.walk(tree):  # and nothing heavy anywhere, even inside the tasks
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            assert not {m.split(".")[0] for m in mods} & _HEAVY, (name, mods)


def test_importing_pipelines_loads_no_airflow_module() -> None:
    code = (
        "import sys, importlib, pkgutil, pipelines\n"
        "import pipelines.cli, pipelines.orchestrate, pipelines.connections, pipelines.config\n"
        "import pipelines.ingest, pipelines.verify.stage, pipelines.deliver.stage\n"
        "import pipelines.deliver.reconcile, pipelines.verify.quality\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(pipelines.cli.app, ['backfill', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_airflow_import_in_pipelines_source() -> None:
    offenders = []
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "airflow" for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_connection_parsing_matches_airflows_own(probe: dict[str, Any]) -> None:
    for key, both in probe["connections"].items():
        assert both["ours"] == both["airflow"], key
