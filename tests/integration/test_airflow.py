"""Airflow end to end (issue 5): the DAGs against the real LRS and the reference receiver.

- footprint_ingest then footprint_deliver with ``dag.test()`` (credentials from Airflow
  connections): the receiver holds exactly the records the footprint gives and reconcile finds
  no drift; a storage root gone empty is refused as a mass delete until a run is triggered with
  the param ``allow_mass_delete``;
- three hourly runs (the intervals Airflow's timetable computes) and one ``footprint backfill``
  over the same three hours give the same verified footprint, row by row, and the same authority
  state; ``airflow backfill create --dry-run`` lists the same intervals;
- scripts/airflow as a person would start it: everything it opens listens on 127.0.0.1 only, the
  API lists the three DAGs, a triggered footprint_ingest run succeeds, and Ctrl-C leaves no
  process behind.

Airflow runs in this process for ``dag.test()``: a module fixture points AIRFLOW_HOME at a
temporary folder and migrates its SQLite database once, before Airflow is first imported.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pipelines import config, orchestrate
from pipelines.deliver.reconcile import reconcile
from pipelines.generate import TroubleShares, run_generate
from pipelines.local.lrs import LocalLRS, free_port
from pipelines.local.receiver import LocalReceiver
from pipelines.store.footprint import FootprintZones
from tests.support import oracle

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
BIN = "980140000005"
RX_PASSWORD = "rx-pass/with:odd@chars"
HOUR = timedelta(hours=1)
# the authority's credentials as an Airflow connection in URI form (login and password encoded)
AUTHORITY_CONN = "http://980140000005:rx-pass%2Fwith%3Aodd%40chars@authority.example.kz"
FOOTPRINT_VARS = ("FOOTPRINT_SOURCE_", "FOOTPRINT_AUTHORITY_", "FOOTPRINT_CONFIG",
                  "FOOTPRINT_INGEST_INTERVAL")


def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass
class AirflowHere:
    home: Path
    dags: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, dag_id: str, label: str, **kw: Any) -> Any:
        t = time.perf_counter()
        dr = self.dags[dag_id].test(**kw)
        self.timings[label] = round(time.perf_counter() - t, 1)
        print(f"dag.test {label}: {self.timings[label]} s")
        return dr


@pytest.fixture(scope="module")
def airflow_here(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowHere]:
    """AIRFLOW_HOME in a temporary folder, SQLite migrated once, the DAGs from dags/."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("airflow-home")
    for k in list(os.environ):
        if k.startswith(("AIRFLOW", *FOOTPRINT_VARS)):
            mp.delenv(k)
    mp.setenv("AIRFLOW_HOME", str(home))
    mp.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
    if "airflow" in sys.modules:
        pytest.fail("airflow was imported before this module set AIRFLOW_HOME")
    t = time.perf_counter()
    from airflow.utils.db import upgradedb  # the same as `airflow db migrate`

    upgradedb()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        for task in dag.tasks:
            task.retries = 0  # a failure fails at once here (retries wait for minutes)
    here = AirflowHere(home, bag.dags, {"import+migrate+parse": round(time.perf_counter() - t,
                                                                        1)})
    yield here
    print("Airflow timings (s):", here.timings)
    mp.undo()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[LocalReceiver]:
    with LocalReceiver(tmp_path / "receiver", username=BIN, password=RX_PASSWORD) as rx:
        yield rx


def write_config(folder: Path, source: str, receiver: LocalReceiver, gen: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "footprint.toml"
    p.write_text(f'[storage]\nroot = "data"\nworkers = 1\n'
                 f'[state]\nurl = "sqlite:///data/state.db"\n'
                 f'[reference]\nroster = "{gen / "roster.csv"}"\n'
                 f'catalogue = "{gen / "catalogue.csv"}"\n'
                 f'[institution]\ncode = "{BIN}"\n'
                 f'[authority]\nendpoint = "{receiver.endpoint}"\nconnection = "fp_authority"\n'
                 f'backoff_base = 0.05\nbackoff_cap = 0.5\n' + source, encoding="utf-8")
    return p


def states(dr: Any) -> dict[str, str]:
    return {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
            for ti in dr.get_task_instances()}


def authority_copy(rx: LocalReceiver) -> dict[str, dict[str, Any]]:
    held = oracle.live(oracle.receiver_records(rx.endpoint, (BIN, RX_PASSWORD)))
    return {rid: {k: v for k, v in r.items() if k not in oracle.NOT_CONTENT}
            for rid, r in held.items()}


def asset_events(uri: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as s:
        rows = s.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                         .where(AssetModel.uri == uri).order_by(AssetEvent.id)).all()
        return [dict(r.extra or {}) for r in rows]


# -- 1. ingest then deliver with dag.test(), against the real LRS ----------------------------------
def test_ingest_then_deliver_with_dag_test_against_the_lrs_and_the_receiver(
        airflow_here: AirflowHere, lrs: LocalLRS, receiver: LocalReceiver, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the LRS stamps `stored` now: run the hour that is under way (its end is the logical date)
    now = datetime.now(UTC)
    if floor_hour(now) + HOUR - now < timedelta(seconds=90):
        time.sleep((floor_hour(now) + HOUR - now).total_seconds() + 1)
    before = datetime.now(UTC)
    gen = tmp_path / "gen"
    today = before.replace(hour=0, minute=0, second=0, microsecond=0)
    made = run_generate(gen, seed=31, students=30, disciplines=4, statements=400,
                        trouble=TroubleShares.none(), start=today - timedelta(days=60),
                        end=today - timedelta(days=1), lrs_endpoint=lrs.endpoint,
                        lrs_auth=("airflow", "lrs-secret"))
    accepted = made["lrs"]["accepted"]
    assert accepted == 400 and floor_hour(datetime.now(UTC)) == floor_hour(before)

    cfg = write_config(tmp_path / "cfg", f'[[sources]]\nname = "main-lrs"\nkind = "xapi-lrs"\n'
                       f'endpoint = "{lrs.endpoint}"\nconnection = "fp_lrs"\n', receiver, gen)
    monkeypatch.setenv("FOOTPRINT_CONFIG", str(cfg))
    # credentials only as Airflow connections: the LRS's in JSON form, the authority's as a URI
    monkeypatch.setenv("AIRFLOW_CONN_FP_LRS", json.dumps(
        {"conn_type": "http", "login": "airflow", "password": "lrs-secret"}))
    monkeypatch.setenv("AIRFLOW_CONN_FP_AUTHORITY", AUTHORITY_CONN)

    start, end = floor_hour(before), floor_hour(before) + HOUR
    dr = airflow_here.run("footprint_ingest", "ingest (LRS, first)", logical_date=end)
    assert (dr.data_interval_start, dr.data_interval_end) == (start, end)
    assert str(dr.state) == "success", states(dr)
    assert states(dr) == {"sources": "success", "extract[0]": "success",
                          "verify[0]": "success", "publish[0]": "success"}
    root = tmp_path / "cfg" / "data"
    zones = FootprintZones(root)
    verified, quarantined = zones.read_verified().num_rows, zones.read_quarantine().num_rows
    assert verified > 0.9 * accepted and verified + quarantined == accepted
    (event,) = [e for e in asset_events(orchestrate.VERIFIED_ASSET[1])
                if (e.get("start"), e.get("end")) == (iso(start), iso(end))]
    assert event["source"] == "main-lrs" and event["read"] == accepted
    assert (event["published"], event["quarantined"]) == (verified, quarantined)

    dr = airflow_here.run("footprint_deliver", "deliver (first)")
    assert str(dr.state) == "success", states(dr)
    want = oracle.expected_records(root, gen / "catalogue.csv", BIN)
    held = oracle.live(oracle.receiver_records(receiver.endpoint, (BIN, RX_PASSWORD)))
    assert want and not oracle.field_differences(want, held)
    # the CLI's path resolves the same connection from AIRFLOW_CONN_FP_AUTHORITY
    assert reconcile(config.load(cfg)).drifted == 0
    assert asset_events(orchestrate.AUTHORITY_ASSET[1])

    # a storage root gone empty (a failed mount, say) would delete every record: refused,
    # until a run is triggered with the param allow_mass_delete
    assert len(held) > 20  # more than the guard's floor
    wrong = tmp_path / "cfg" / "footprint-empty-root.toml"
    wrong.write_text(cfg.read_text(encoding="utf-8").replace(
        'root = "data"', 'root = "empty-root"'), encoding="utf-8")
    (tmp_path / "cfg" / "empty-root").mkdir()
    monkeypatch.setenv("FOOTPRINT_CONFIG", str(wrong))
    dr = airflow_here.run("footprint_deliver", "deliver (mass delete refused)")
    assert str(dr.state) == "failed" and states(dr)["deliver"] == "failed", states(dr)
    assert oracle.live(oracle.receiver_records(receiver.endpoint, (BIN, RX_PASSWORD))) == held
    dr = airflow_here.run("footprint_deliver", "deliver (mass delete allowed)",
                          run_conf={"allow_mass_delete": True})
    assert str(dr.state) == "success", states(dr)
    assert oracle.live(oracle.receiver_records(receiver.endpoint, (BIN, RX_PASSWORD))) == {}


# -- 2. three scheduled hours == one backfill ------------------------------------------------------
def _dump(gen: Path, t0: datetime, out: Path) -> int:
    """The generated statements with `stored` spread over [t0, t0 + 3h], some on the edges."""
    with gzip.open(gen / "statements.ndjson.gz") as fh:
        lines = [orjson.loads(x) for x in fh if x.strip()]
    n = len(lines)
    step_ms = 3 * 3_600_000 // (n + 1)
    for i, x in enumerate(lines):
        x["stored"] = iso(t0 + timedelta(milliseconds=(i + 1) * step_ms))
    # on the edges: (t0-1h, t0] holds the first (in no window here); each hour's end is its own
    for i, at in ((0, t0), (n // 3, t0 + HOUR), (2 * n // 3, t0 + 2 * HOUR),
                  (n - 1, t0 + 3 * HOUR)):
        lines[i]["stored"] = iso(at)
    out.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    return n


def _rows(table: Any, drop: set[str], key: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = [{k: v for k, v in r.items() if k not in drop} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: tuple(str(r.get(k)) for k in key))


def test_three_hourly_runs_and_one_backfill_give_the_same_footprint_and_authority_state(
        airflow_here: AirflowHere, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    t0 = floor_hour(now - timedelta(days=1))
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    gen = tmp_path / "gen"
    # some of each trouble, below the quality gate's 5% quarantined share per hour
    trouble = TroubleShares(malformed_json=0.0, invalid=0.005, unknown_learner=0.01,
                            exact_duplicate=0.02, conflicting_duplicate=0.005, voiding=0.03,
                            late_arrival=0.0)
    run_generate(gen, seed=47, students=40, disciplines=4, statements=900, trouble=trouble,
                 start=today - timedelta(days=60), end=today - timedelta(days=2))
    n = _dump(gen, t0, tmp_path / "dump.ndjson")
    dump = tmp_path / "dump.ndjson"
    source = f'[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "{dump}"\n'
    monkeypatch.setenv("AIRFLOW_CONN_FP_AUTHORITY", AUTHORITY_CONN)

    # the intervals Airflow's timetable gives footprint_ingest over those hours (what the
    # scheduler and `airflow backfill create` run), and footprint backfill's windows
    from airflow.serialization.serialized_objects import DagSerialization

    ingest = airflow_here.dags["footprint_ingest"]
    serdag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(ingest))
    infos = list(serdag.iter_dagrun_infos_between(t0, t0 + 2 * HOUR))
    intervals = [(i.data_interval.start, i.data_interval.end) for i in infos]
    assert intervals == orchestrate.windows(t0, t0 + 3 * HOUR, HOUR)
    assert [i.logical_date for i in infos] == [s for s, _ in intervals]

    with LocalReceiver(tmp_path / "rx-scheduled", username=BIN, password=RX_PASSWORD) as rx_a, \
            LocalReceiver(tmp_path / "rx-backfill", username=BIN, password=RX_PASSWORD) as rx_b:
        # scheduled: one ingest run per interval, each followed by the delivery its Asset starts
        sched = write_config(tmp_path / "scheduled", source, rx_a, gen)
        monkeypatch.setenv("FOOTPRINT_CONFIG", str(sched))
        for k, (start, end) in enumerate(intervals, 1):
            dr = airflow_here.run("footprint_ingest", f"ingest hour {k}", logical_date=end)
            assert (dr.data_interval_start, dr.data_interval_end) == (start, end)
            assert str(dr.state) == "success", states(dr)
            dr = airflow_here.run("footprint_deliver", f"deliver after hour {k}")
            assert str(dr.state) == "success", states(dr)

        # the daily quality run over those hours (its interval ends after them)
        dr = airflow_here.run("footprint_quality", "quality (7 days)",
                              logical_date=t0 + 3 * HOUR + timedelta(days=1))
        assert str(dr.state) == "success", states(dr)
        assert t0 + 3 * HOUR < dr.data_interval_end <= t0 + 3 * HOUR + timedelta(days=1)
        (report,) = (sched.parent / "data" / "reports" / "quality").glob("quality-*-7d.json")
        checked = json.loads(report.read_text())
        assert checked["passed"] and checked["rows"] == FootprintZones(
            sched.parent / "data").read_verified().num_rows

        # backfill: the CLI, no scheduler, then one delivery
        back = write_config(tmp_path / "backfill", source, rx_b, gen)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_")}
        env.update(FOOTPRINT_CONFIG=str(back), AIRFLOW_CONN_FP_AUTHORITY=AUTHORITY_CONN)
        cli = [sys.executable, "-m", "pipelines.cli"]
        t = time.perf_counter()
        out = subprocess.run([*cli, "backfill", "--from", iso(t0), "--to", iso(t0 + 3 * HOUR),
                              "--json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
        airflow_here.timings["footprint backfill (3 windows)"] = round(time.perf_counter() - t, 1)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        doc = json.loads(out.stdout)
        assert doc["status"] == "succeeded" and doc["interval"] == "PT1H"
        assert [(w["start"], w["end"], w["status"]) for w in doc["windows"]] == [
            (iso(s), iso(e), "succeeded") for s, e in intervals]
        # each window reads the whole dump; n - 1 statements are inside (the first is at t0)
        assert doc["read"] == 3 * n
        assert doc["written"] + doc["rejected"] + doc["duplicates"] == n - 1
        assert doc["published"] > 0 and doc["quarantined"] > 0
        out = subprocess.run([*cli, "deliver", "--json"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

        a, b = FootprintZones(sched.parent / "data"), FootprintZones(back.parent / "data")
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
        copy_a, copy_b = authority_copy(rx_a), authority_copy(rx_b)
        assert copy_a and copy_a == copy_b
        want = oracle.expected_records(sched.parent / "data", gen / "catalogue.csv", BIN)
        assert not oracle.field_differences(want, oracle.live(
            oracle.receiver_records(rx_a.endpoint, (BIN, RX_PASSWORD))))

    # and Airflow's own backfill would run the same intervals
    t = time.perf_counter()
    out = subprocess.run([shutil.which("airflow") or str(Path(sys.executable).parent / "airflow"),
                          "backfill", "create", "--dag-id", "footprint_ingest",
                          "--from-date", t0.isoformat(), "--to-date", (t0 + 2 * HOUR).isoformat(),
                          "--dry-run"], env=dict(os.environ), capture_output=True, text=True,
                         timeout=300)
    airflow_here.timings["airflow backfill create --dry-run"] = round(time.perf_counter() - t, 1)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    listed = re.findall(r"^\|\s*(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00)\s*\|", out.stdout, re.M)
    assert [datetime.fromisoformat(x) for x in listed] == [s for s, _ in intervals], out.stdout


# -- 3. scripts/airflow, as a person starts it -----------------------------------------------------
def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (by parent id, whatever session it moved to)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out.add(child)
                todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket the processes hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            addr, port = local.split(":")
            if v6:
                host = "v6:" + addr
            else:
                host = ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
            out.append((inodes[inode], host, int(port, 16)))
    return out


def test_embedded_airflow_listens_on_loopback_only_runs_a_dag_and_stops_on_ctrl_c(
        tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    api, lrs_port, rx_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FOOTPRINT_"))}
    local_bin = Path.home() / ".local" / "bin"
    env.update(FOOTPRINT_AIRFLOW_HOME=str(home), FOOTPRINT_AIRFLOW_PORT=str(api),
               FOOTPRINT_AIRFLOW_LRS_PORT=str(lrs_port),
               FOOTPRINT_AIRFLOW_RECEIVER_PORT=str(rx_port), FOOTPRINT_AIRFLOW_STATEMENTS="200",
               PATH=f"{local_bin}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "airflow")], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own group: Ctrl-C goes to the group
    output: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("AIRFLOW_READY"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    seen: set[int] = set()
    sockets: list[tuple[int, str, int]] = []

    def snapshot() -> None:
        tree = _children(proc.pid) | {proc.pid}
        seen.update(tree)
        sockets.extend(_listening(tree))

    started = time.monotonic()
    try:
        deadline = time.monotonic() + 420
        while not ready.is_set():
            assert proc.poll() is None, "scripts/airflow exited:\n" + "".join(output[-40:])
            assert time.monotonic() < deadline, "not ready in 7 minutes:\n" + "".join(output)
            time.sleep(1)
        print(f"scripts/airflow ready after {time.monotonic() - started:.0f} s")
        snapshot()
        base = f"http://127.0.0.1:{api}"
        password = json.loads((home / "passwords.json").read_text())["admin"]
        assert "".join(output).count(password) == 1  # printed once, at the first start
        assert oct((home / "passwords.json").stat().st_mode & 0o777) == "0o600"
        assert oct((home / "jwt_secret").stat().st_mode & 0o777) == "0o600"
        assert len((home / "jwt_secret").read_text().strip()) >= 86  # 64 bytes, base64url
        with httpx.Client(base_url=base, timeout=30) as c:
            r = c.post("/auth/token", json={"username": "admin", "password": password})
            assert r.status_code == 201, r.text
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            dags: set[str] = set()
            for _ in range(120):  # the DAG processor parses the folder once it is up
                dags = {d["dag_id"] for d in c.get("/api/v2/dags").json()["dags"]}
                if len(dags) == 3:
                    break
                time.sleep(1)
            assert dags == {"footprint_ingest", "footprint_deliver", "footprint_quality"}
            for _ in range(3):
                r = c.post("/api/v2/dags/footprint_ingest/dagRuns",
                           json={"logical_date": iso(datetime.now(UTC))})
                if r.status_code < 500:
                    break
                # Airflow's embedded SQLite metadata database can answer a write with an error
                # while the scheduler holds it; what the API server logged goes in the message
                time.sleep(2)
            api_log = home / "logs" / "processes" / "api-server.log"
            assert r.status_code == 200, r.text + "\n" + "".join(
                api_log.read_text(errors="replace").splitlines(keepends=True)[-40:])
            run_id = r.json()["dag_run_id"]
            state = None
            for _ in range(300):
                snapshot()
                state = c.get(f"/api/v2/dags/footprint_ingest/dagRuns/{run_id}").json()["state"]
                if state in ("success", "failed"):
                    break
                time.sleep(1)
            assert state == "success", "".join(output[-40:])
        snapshot()
        ports = {port for _, _, port in sockets}
        assert {api, lrs_port, rx_port} <= ports, sockets
        wide = [s for s in sockets if s[1] != "127.0.0.1"]
        assert not wide, f"listening beyond 127.0.0.1: {wide}"

        print("listening:", sorted({(host, port) for _, host, port in sockets}),
              f"processes seen: {len(seen)}")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        t = time.monotonic()
        assert proc.wait(timeout=120) == 130, "".join(output[-20:])
        print(f"stopped {time.monotonic() - t:.1f} s after Ctrl-C")
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in seen) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = sorted(p for p in seen if _alive(p))
        assert not left, f"processes left after Ctrl-C: {left}"
        assert "stopped" in "".join(output[-3:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for p in seen:  # only the processes this test started
            if p != proc.pid and _alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
