"""A real ``airflow backfill create`` of footprint_ingest (issue 5, item 6).

Three hourly intervals backfilled by Airflow itself: ``airflow backfill create --dag-id
footprint_ingest --from-date A --to-date B --max-active-runs 1``, run by a real ``airflow
scheduler --skip-serve-logs`` (LocalExecutor, SQLite) with ``airflow dag-processor`` and
``airflow api-server --host 127.0.0.1`` (the tasks' execution API), in a temporary AIRFLOW_HOME.
The verified footprint and the quarantine it produces equal, row by row, what ``footprint
backfill`` over the same three hours produces in a separate storage root.

The scheduler runs with ``[scheduler] use_job_schedule = False``: it runs the backfill's runs and
creates no scheduled (or Asset-triggered) run of its own, so nothing else writes into the storage
root while the backfill runs. Every process is started in its own process group and the group is
stopped at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from pipelines.generate import TroubleShares, run_generate
from pipelines.local.lrs import free_port
from pipelines.store.footprint import FootprintZones
from tests.integration.test_airflow import DAGS, HOUR, _dump, _rows, floor_hour, iso

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DEADLINE_S = 300  # from the first Airflow process to three successful backfill runs (~170 s)


def _config(folder: Path, dump: Path, gen: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "footprint.toml"
    p.write_text(f'[storage]\nroot = "data"\nworkers = 1\n'
                 f'[state]\nurl = "sqlite:///data/state.db"\n'
                 f'[reference]\nroster = "{gen / "roster.csv"}"\n'
                 f'catalogue = "{gen / "catalogue.csv"}"\n'
                 f'[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "{dump}"\n',
                 encoding="utf-8")
    return p


class Processes:
    """Processes started each in its own session (process group = its pid), stopped as groups."""

    def __init__(self, logs: Path, env: dict[str, str], cwd: Path) -> None:
        self.logs, self.env, self.cwd = logs, env, cwd
        self.api = 0  # the API server's port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[IO[bytes]] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> None:
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_all)
        self.files.append(out)
        self.procs[name] = subprocess.Popen(args, env=self.env, cwd=self.cwd, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def check(self) -> None:
        for name, p in self.procs.items():
            assert p.poll() is None, f"{name} exited ({p.returncode}):\n{self.tail(name)}"

    def tail(self, name: str, n: int = 30) -> str:
        lines = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop_all(self) -> None:
        for p in reversed(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs.values():  # the group, also children the leader left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for f in self.files:
            f.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    home = tmp_path / "airflow-home"
    home.mkdir()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"admin": "backfill-test"}))
    api = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FOOTPRINT_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",  # a backfill needs it unpaused
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": "backfill-test-" + os.urandom(16).hex(),
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(64).hex(),
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # only the backfill's runs: no scheduled or Asset-triggered run writes meanwhile
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
    })
    procs = Processes(home / "logs" / "processes", env, tmp_path)
    procs.api = api
    try:
        yield procs
    finally:
        procs.stop_all()


def _wait(what: str, procs: Processes, deadline: float, probe: Any) -> Any:
    while True:
        procs.check()
        with contextlib.suppress(httpx.HTTPError):
            got = probe()
            if got:
                return got
        assert time.monotonic() < deadline, f"{what}: not within the deadline"
        time.sleep(1)


def _task_logs(home: Path, n: int = 40) -> str:
    logs = sorted((home / "logs").glob("dag_id=*/**/*.log"), key=lambda p: p.stat().st_mtime)
    return "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-n:])
                     for p in logs[-2:])


def test_airflow_backfill_create_gives_the_footprint_of_footprint_backfill(
        processes: Processes, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    t0 = floor_hour(now - timedelta(days=1))
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    gen = tmp_path / "gen"
    trouble = TroubleShares(malformed_json=0.0, invalid=0.005, unknown_learner=0.01,
                            exact_duplicate=0.02, conflicting_duplicate=0.005, voiding=0.03,
                            late_arrival=0.0)
    run_generate(gen, seed=47, students=40, disciplines=4, statements=900, trouble=trouble,
                 start=today - timedelta(days=60), end=today - timedelta(days=2))
    dump = tmp_path / "dump.ndjson"
    _dump(gen, t0, dump)
    by_airflow = _config(tmp_path / "airflow-cfg", dump, gen)
    by_cli = _config(tmp_path / "cli-cfg", dump, gen)
    intervals = [(t0 + k * HOUR, t0 + (k + 1) * HOUR) for k in range(3)]
    home = Path(processes.env["AIRFLOW_HOME"])
    api = processes.api
    timings: dict[str, float] = {}
    started = time.monotonic()

    # Airflow: migrate, then the API server, the scheduler and the DAG processor
    env = processes.env
    env["FOOTPRINT_CONFIG"] = str(by_airflow)  # the task processes inherit the scheduler's env
    out = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    timings["airflow db migrate"] = round(time.monotonic() - started, 1)
    processes.start("api-server", AIRFLOW, "api-server", "--host", "127.0.0.1", "--port",
                    str(api))
    processes.start("scheduler", AIRFLOW, "scheduler", "--skip-serve-logs")
    processes.start("dag-processor", AIRFLOW, "dag-processor")
    deadline = time.monotonic() + DEADLINE_S

    # meanwhile, footprint backfill over the same three hours into its own storage root
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FOOTPRINT_"))}
    cli_env["FOOTPRINT_CONFIG"] = str(by_cli)
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "backfill", "--from", iso(t0),
                          "--to", iso(t0 + 3 * HOUR), "--json"], env=cli_env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    timings["footprint backfill"] = round(time.monotonic() - t, 1)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["status"] == "succeeded"
    assert [(w["start"], w["end"], w["status"]) for w in doc["windows"]] == [
        (iso(s), iso(e), "succeeded") for s, e in intervals]

    with httpx.Client(base_url=f"http://127.0.0.1:{api}", timeout=30) as c:
        def login() -> bool:
            r = c.post("/auth/token", json={"username": "admin", "password": "backfill-test"})
            if r.status_code != 201:
                return False
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            return True

        def ready() -> bool:
            health = c.get("/api/v2/monitor/health").json()
            parts = [health[k]["status"] for k in ("metadatabase", "scheduler", "dag_processor")]
            return (all(s == "healthy" for s in parts)
                    and c.get("/api/v2/dags/footprint_ingest").status_code == 200)

        _wait("the API server", processes, deadline, login)
        _wait("the scheduler, the DAG processor and footprint_ingest", processes, deadline,
              ready)
        timings["airflow ready"] = round(time.monotonic() - started, 1)
        dag = c.get("/api/v2/dags/footprint_ingest").json()
        assert dag["is_paused"] is False

        # Airflow's backfill: logical dates are interval starts, both ends included
        out = subprocess.run([AIRFLOW, "backfill", "create", "--dag-id", "footprint_ingest",
                              "--from-date", t0.isoformat(),
                              "--to-date", (t0 + 2 * HOUR).isoformat(),
                              "--max-active-runs", "1"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        timings["airflow backfill create"] = round(time.monotonic() - started, 1)

        def finished() -> list[dict[str, Any]] | None:
            runs = c.get("/api/v2/dags/footprint_ingest/dagRuns",
                         params={"order_by": "logical_date"}).json()["dag_runs"]
            for r in runs:
                tis = c.get(f"/api/v2/dags/footprint_ingest/dagRuns/{r['dag_run_id']}"
                            "/taskInstances").json()["task_instances"]
                bad = [(ti["task_id"], ti["map_index"], ti["state"]) for ti in tis
                       if ti["state"] in ("failed", "up_for_retry", "upstream_failed")]
                assert r["state"] != "failed" and not bad, (
                    f"{r['dag_run_id']}: {r['state']} {bad}\n{_task_logs(home)}")
            done = len(runs) == 3 and all(r["state"] == "success" for r in runs)
            return runs if done else None

        runs = _wait("three successful backfill runs", processes, deadline, finished)
        timings["backfill runs succeeded"] = round(time.monotonic() - started, 1)
        assert {r["run_type"] for r in runs} == {"backfill"}
        got = [(datetime.fromisoformat(r["data_interval_start"]),
                datetime.fromisoformat(r["data_interval_end"])) for r in runs]
        assert got == intervals
        backfills = c.get("/api/v2/backfills", params={"dag_id": "footprint_ingest"}).json()
        assert [b["max_active_runs"] for b in backfills["backfills"]] == [1]
    print("timings (s from db migrate):", timings)

    a, b = FootprintZones(by_airflow.parent / "data"), FootprintZones(by_cli.parent / "data")
    va = _rows(a.read_verified(), {"run_id", "verified_at"},
               ("statement_id", "record_id", "raw_sha256"))
    vb = _rows(b.read_verified(), {"run_id", "verified_at"},
               ("statement_id", "record_id", "raw_sha256"))
    assert va and va == vb
    qa = _rows(a.read_quarantine(), {"run_id", "first_quarantined_at"},
               ("statement_id", "raw_sha256", "window"))
    qb = _rows(b.read_quarantine(), {"run_id", "first_quarantined_at"},
               ("statement_id", "raw_sha256", "window"))
    assert qa and qa == qb
