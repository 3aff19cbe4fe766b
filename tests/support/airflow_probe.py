"""Look at the DAG files through Airflow, in a process of its own; print one JSON line.

Run by tests/test_dags.py as ``python tests/support/airflow_probe.py`` with ``AIRFLOW_HOME`` set
to a temporary folder, so the test process itself never imports Airflow. Reports:

- ``import_errors`` and per-file parse times of a cold and a warm ``DagBag`` over dags/;
- per DAG: tags, owner, doc_md, timetable, assets, cycles, and per task retries, backoff,
  failure callback, outlets, mapping;
- ``io``: what each DAG file touched when it was executed again with file, directory,
  process and network access replaced by functions that raise (there must be nothing);
- ``connections``: Airflow's own reading of sample connection values beside
  ``pipelines.connections``'s.
"""

from __future__ import annotations

import builtins
import importlib.util
import io
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

CONNECTION_SAMPLES = {
    "uri_basic": "http://us%40er:p%3Ass%2Fw%20rd@lrs.example.kz:8443/xAPI?timeout=5",
    "uri_token": "http://lrs.example.kz/?token=abc",
    "uri_extra": "http://u:p@h/?__extra__=%7B%22token%22%3A+%22t%22%7D",
    "json": '{"conn_type": "http", "login": "a", "password": "b", "extra": {"token": "t"}}',
    "json_extra_string": '{"conn_type": "http", "login": "a", "password": "b c", '
                         '"extra": "{\\"k\\": \\"v\\"}"}',
    "json_password_only": '{"conn_type": "http", "password": "secret"}',
}


def _assets(cond: Any) -> list[str]:
    if cond is None:
        return []
    if hasattr(cond, "objects"):
        return [u for o in cond.objects for u in _assets(o)]
    return [cond.uri] if hasattr(cond, "uri") else []


def describe(bag: Any) -> dict[str, Any]:
    out = {}
    for dag_id, d in sorted(bag.dags.items()):
        try:
            d.check_cycle()
            cycle = None
        except Exception as exc:
            cycle = f"{type(exc).__name__}: {exc}"
        tt = d.timetable
        inner = getattr(tt, "timetable", None)
        out[dag_id] = {
            "fileloc": d.fileloc, "tags": sorted(d.tags), "owner": d.owner,
            "doc_md": d.doc_md or "", "catchup": d.catchup,
            "max_active_runs": d.max_active_runs,
            "timetable": type(tt).__name__,
            "cron": getattr(tt, "expression", None) or getattr(inner, "expression", None),
            "timezone": str(getattr(tt, "timezone", None) or getattr(inner, "timezone", "")),
            "inner_timetable": type(inner).__name__ if inner is not None else None,
            "schedule_assets": _assets(getattr(tt, "asset_condition", None)),
            "cycle": cycle,
            "tasks": {
                t.task_id: {
                    "retries": t.retries,
                    "retry_exponential_backoff": float(t.retry_exponential_backoff or 0),
                    "retry_delay": t.retry_delay.total_seconds(),
                    "max_retry_delay": t.max_retry_delay.total_seconds()
                    if t.max_retry_delay else None,
                    "owner": t.owner,
                    "on_failure_callback": [getattr(c, "__qualname__", str(c)) for c in (
                        t.on_failure_callback if isinstance(t.on_failure_callback, list)
                        else [t.on_failure_callback] if t.on_failure_callback else [])],
                    "outlets": [a.uri for a in t.outlets],
                    "mapped": any(c.__name__ == "MappedOperator" for c in type(t).__mro__),
                    "upstream": sorted(t.upstream_task_ids),
                } for t in d.tasks
            },
        }
    return out


def io_probe(paths: list[Path]) -> dict[str, list[str]]:
    """Execute each file again with I/O replaced by raising functions; what it touched."""
    touched: list[str] = []

    def deny(name: str) -> Any:
        def f(*args: Any, **kwargs: Any) -> Any:
            touched.append(f"{name}{args[:1]!r}")
            raise PermissionError(f"{name} while a DAG file is parsed")
        return f

    targets: list[tuple[Any, str]] = [
        (builtins, "open"), (io, "open"), (os, "open"), (os, "listdir"), (os, "scandir"),
        (os, "walk"), (os, "system"), (os, "popen"), (subprocess.Popen, "__init__"),
        (socket.socket, "connect"), (socket.socket, "connect_ex"),
        (socket, "create_connection"), (socket, "getaddrinfo"),
        (Path, "open"), (Path, "read_text"), (Path, "read_bytes"), (Path, "write_text"),
        (Path, "write_bytes"), (Path, "iterdir"), (Path, "glob"), (Path, "rglob"),
        (Path, "exists"), (Path, "is_file"), (Path, "is_dir"), (Path, "stat"), (Path, "mkdir"),
    ]
    out: dict[str, list[str]] = {}
    for path in paths:
        spec = importlib.util.spec_from_file_location(f"footprint_io_probe_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        code = spec.loader.get_code(module.__name__)  # read the source before I/O is denied
        saved = [(obj, name, getattr(obj, name)) for obj, name in targets]
        touched.clear()
        error = None
        try:
            for obj, name, _ in saved:
                setattr(obj, name, deny(f"{getattr(obj, '__name__', obj)}.{name}"))
            exec(code, module.__dict__)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            for obj, name, original in saved:
                setattr(obj, name, original)
        out[path.name] = list(touched) + ([error] if error else [])
    return out


def connection_parity() -> dict[str, Any]:
    from airflow.sdk import Connection

    from pipelines import connections

    out = {}
    for key, value in CONNECTION_SAMPLES.items():
        theirs = (Connection.from_json(value, conn_id="x") if value.startswith("{")
                  else Connection.from_uri(value, conn_id="x"))
        ours = connections.parse("x", value)
        out[key] = {
            "airflow": [theirs.login, theirs.password, theirs.extra_dejson],
            "ours": [ours.login, ours.password, ours.extra],
        }
    return out


def main() -> None:
    t = time.perf_counter()
    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    result: dict[str, Any] = {"airflow_import_s": round(time.perf_counter() - t, 3)}
    cold = DagBag(dag_folder=str(DAGS))
    warm = DagBag(dag_folder=str(DAGS))
    result["import_errors"] = dict(cold.import_errors)
    result["parse_cold_s"] = {s.file: s.duration.total_seconds() for s in cold.dagbag_stats}
    result["parse_warm_s"] = {s.file: s.duration.total_seconds() for s in warm.dagbag_stats}
    result["dags"] = describe(cold)
    result["io"] = io_probe(sorted(DAGS.glob("*.py")))
    # the probe itself must see top-level I/O: a file that reads another at import
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        canary = Path(tmp) / "canary_dag.py"
        canary.write_text("from pathlib import Path\nDOC = Path(__file__).read_text()\n"
                          "with open(__file__) as f:\n    f.read()\n")
        result["io_canary"] = io_probe([canary])
    result["connections"] = connection_parity()
    print("PROBE_JSON " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
