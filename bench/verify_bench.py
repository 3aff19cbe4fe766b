"""Verification benchmark: validation + verification + Parquet write, against floors in one run.

    .venv/bin/python bench/verify_bench.py                        # 1,000,000 statements
    .venv/bin/python bench/verify_bench.py --statements 20000     # a quick look

Rows (every rate is statements per second, every ratio is taken within this one run):

  generate N             N synthetic statements (``pipelines.generate``, default trouble shares:
                         malformed JSON, invalid statements, unknown learners, duplicates, voids)
                         written as gzip NDJSON, plus the roster and catalogue CSVs.
  orjson.loads alone     gunzip + ``orjson.loads`` over the same N lines and nothing else: the
                         floor for any JSON-based reader (ratio 1.00). Measured before and
                         after the end-to-end rows; the mean of the two is the floor (a shared
                         machine's speed drifts over the minutes between them).
  end to end, 1 process  ``pipelines.ingest.ingest_source`` on an ``xapi-file`` source with
                         ``[reference] roster/catalogue`` and ``[storage] workers = 1``: extraction,
                         xAPI validation, normalisation, raw + normalised Parquet, verification
                         against the roster and catalogue, voids, the Great Expectations gate and
                         the verified/quarantine Parquet, all in ONE process. Ratio to orjson
                         alone: target >= 0.8.
  end to end, N workers  the same with the default ``workers`` (one process per CPU, up to 8);
                         shown for comparison, no target of its own.
  stale roster           the 1-process run with a roster that lost every learner but one:
                         nearly every statement is quarantined (and the quality gate holds the
                         batch back); its peak memory must stay under 1 GiB too.
  tincan from_json       tincan's ``Statement.from_json`` over the first --sample lines.
  Ralph strict model     Ralph's strict pydantic model (``ralph-malph`` 5.1.0,
                         ``ralph.models.xapi.base.statements.BaseXapiStatement``: extra fields
                         forbidden, no empty values) validating the first --sample lines the way
                         Ralph's own ``Validator`` does (``json.loads`` then the model). It does not
                         co-install with the project's pins, so it runs in its own virtual
                         environment, created once at bench/.ralph-venv (uv venv + uv pip install)
                         and reused; when it cannot be created the row says why.
  end to end / tincan,   the 1-process end-to-end rate divided by tincan's and Ralph's rates:
  end to end / Ralph     target >= 100 for each.

Peak RSS (notes column) is that of the measured step's process and all its children, sampled from
/proc every 0.2 s; target < 1 GiB for the end-to-end rows. Each measured step runs in a fresh
child process.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import print_table, run_measured  # noqa: E402  (one way for all)

RALPH_VERSION = "5.1.0"
RALPH_VENV = ROOT / "bench" / ".ralph-venv"
GIB = 2**30

# Runs inside bench/.ralph-venv: validates the first K lines with Ralph's strict model.
RALPH_SCRIPT = r'''
import gzip, json, sys, time
from ralph import __version__
from ralph.models.xapi.base.statements import BaseXapiStatement
from pydantic import ValidationError

path, k = sys.argv[1], int(sys.argv[2])
lines = []
with gzip.open(path, "rb") as fh:
    for line in fh:
        lines.append(line.decode(errors="replace"))
        if len(lines) >= k:
            break
ok = bad = 0
t = time.perf_counter()
for s in lines:
    try:
        BaseXapiStatement.model_validate(json.loads(s))
        ok += 1
    except (ValueError, TypeError, ValidationError):
        bad += 1
dt = time.perf_counter() - t
print(json.dumps({"read": len(lines), "valid": ok, "invalid": bad, "seconds": dt,
                  "version": __version__}))
'''


# -- the steps (in child processes) ------------------------------------------------------------
def generate(n: int, folder: Path) -> tuple[Path, float]:
    """``run_generate`` over a 120-day teaching period that ended a week ago (verification
    quarantines statements from the future, so the period must lie in the past)."""
    from pipelines.generate import TroubleShares, run_generate

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=7)
    t = time.perf_counter()
    run_generate(folder, 187, 2000, 40, n, TroubleShares(), end - timedelta(days=120), end)
    return folder / "statements.ndjson.gz", time.perf_counter() - t


def _orjson_main(path: Path) -> dict[str, Any]:
    import orjson

    n = bad = 0
    t = time.perf_counter()
    with gzip.open(path, "rb") as fh:
        for line in fh:
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
            n += 1
    return {"read": n, "malformed": bad, "seconds": time.perf_counter() - t}


def _sample(path: Path, k: int) -> list[str]:
    lines: list[str] = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            lines.append(line.decode(errors="replace"))
            if len(lines) >= k:
                break
    return lines


def _tincan_main(path: Path, k: int) -> dict[str, Any]:
    from tincan import Statement

    lines = _sample(path, k)
    ok = 0
    t = time.perf_counter()
    for s in lines:
        with contextlib.suppress(Exception):
            Statement.from_json(s)
            ok += 1
    return {"read": len(lines), "valid": ok, "seconds": time.perf_counter() - t}


def _e2e_main(folder: Path) -> dict[str, Any]:
    from pipelines import config
    from pipelines.ingest import IngestError, ingest_source

    s = config.load(folder / "footprint.toml")
    t = time.perf_counter()
    error = None
    try:
        r = ingest_source(s, s.sources[0].name)
    except IngestError as exc:  # reported in the table, not hidden
        if exc.report is None:
            raise
        r, error = exc.report, str(exc)
    dt = time.perf_counter() - t
    v = r.verification or {}
    return {"read": r.read, "written": r.written, "rejected": r.rejected,
            "duplicates": r.duplicates, "seconds": dt, "status": r.status, "error": error,
            "workers": s.workers_for(s.sources[0]),
            "verification": v.get("status", v.get("verification")),
            "published": v.get("published"), "quarantined": v.get("quarantined"),
            "verify_seconds": v.get("seconds") or 0.0,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _child_main(args: list[str]) -> None:
    kind, path = args[0], Path(args[1])
    if kind == "orjson":
        doc = _orjson_main(path)
    elif kind == "tincan":
        doc = _tincan_main(path, int(args[2]))
    elif kind == "e2e":
        doc = _e2e_main(path)
    else:
        raise SystemExit(f"unknown step {kind}")
    print(json.dumps(doc, default=str))


# -- measuring ---------------------------------------------------------------------------------
def child(*argv: str) -> dict[str, Any]:
    return run_measured([sys.executable, __file__, "--child", *argv])


def ralph_python(venv: Path) -> tuple[Path | None, str]:
    """The Python of a venv holding ralph-malph (created once with uv), or None and why not."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import ralph, sys; sys.stdout.write(ralph.__version__)"]
    if py.exists():
        r = subprocess.run(check, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout == RALPH_VERSION:
            shown = venv.relative_to(ROOT) if venv.is_relative_to(ROOT) else venv
            return py, f"cached venv {shown}"
    uv = shutil.which("uv")
    if uv is None:
        return None, "uv not found on PATH: cannot create the Ralph venv"
    base = Path(getattr(sys, "_base_executable", sys.executable))
    steps = [[uv, "venv", "--python", str(base), str(venv)],
             [uv, "pip", "install", "--python", str(py), f"ralph-malph=={RALPH_VERSION}"]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
            return None, f"`{' '.join(cmd[1:3])}` failed: {why[:150]}"
    r = subprocess.run(check, capture_output=True, text=True)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        return None, f"ralph installed but does not import: {why[:150]}"
    return py, f"created venv {venv}"


def write_config(folder: Path, statements: Path, gen: Path, workers: int,
                 roster: Path | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "footprint.toml").write_text(
        f'[storage]\nroot = "data"\nworkers = {workers}\n'
        f'[state]\nurl = "sqlite:///data/state.db"\n'
        f'[reference]\nroster = "{roster or gen / "roster.csv"}"\n'
        f'catalogue = "{gen / "catalogue.csv"}"\n'
        f'[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "{statements}"\n',
        encoding="utf-8")


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--statements", type=int, default=1_000_000,
                    help="statements generated and run end to end (default 1,000,000)")
    ap.add_argument("--sample", type=int, default=10_000,
                    help="lines given to tincan and to Ralph's model (default 10,000)")
    ap.add_argument("--work", type=Path, default=None,
                    help="work folder (default: a new temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--ralph-venv", type=Path, default=RALPH_VENV,
                    help="where Ralph's own venv is created once and reused "
                    "(default bench/.ralph-venv)")
    ap.add_argument("--no-ralph", action="store_true", help="skip the Ralph row")
    ap.add_argument("--no-parallel", action="store_true",
                    help="skip the end-to-end row with the default workers")
    ap.add_argument("--no-stale", action="store_true",
                    help="skip the end-to-end row with a stale roster (nearly all quarantined)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child_main(a.child)
        return

    work = a.work or Path(tempfile.mkdtemp(prefix="fp-verify-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", file=sys.stderr)
    n = a.statements
    rows: list[tuple[str, str, str, str]] = []
    try:
        gen = work / "gen"
        gen.mkdir(exist_ok=True)
        path, t_gen = generate(n, gen)
        rows.append((f"generate {n:,}", f"{n / t_gen:,.0f} st/s", "",
                     f"{path.stat().st_size / 2**20:,.0f} MiB gzip + roster, catalogue"))

        # the floor is measured before and after the end-to-end runs and the mean taken: a
        # shared machine's speed drifts over minutes, and a ratio should not depend on that
        before = child("orjson", str(path))
        e2e_docs: list[tuple[str, int, dict[str, Any]]] = []
        for label, workers in (("1 process", 1), ("default workers", 0)):
            if workers == 0 and a.no_parallel:
                continue
            folder = work / f"e2e-{workers}"
            write_config(folder, path, gen, workers)
            print(f"end to end, {label} ...", file=sys.stderr)
            e2e_docs.append((label, workers, child("e2e", str(folder))))
        stale_doc = None
        if not a.no_stale:
            # a roster export that lost every learner but one: nearly the whole window is
            # quarantined, and the quarantine must not cost more memory than the footprint
            stale = work / "roster-stale.csv"
            with (gen / "roster.csv").open(encoding="utf-8") as fh:
                stale.write_text(fh.readline() + fh.readline(), encoding="utf-8")
            folder = work / "e2e-stale"
            write_config(folder, path, gen, 1, roster=stale)
            print("end to end, stale roster ...", file=sys.stderr)
            stale_doc = child("e2e", str(folder))
        after = child("orjson", str(path))
        rates = [d["read"] / d["seconds"] for d in (before, after)]
        rate_or = sum(rates) / 2
        rows.append((f"orjson.loads alone, {before['read']:,}", f"{rate_or:,.0f} st/s",
                     "1.00 (floor)", f"mean of {rates[0]:,.0f} before and {rates[1]:,.0f} "
                     f"after the end-to-end runs; {before['malformed']:,} malformed lines"))

        e2e_rate = 0.0
        for label, workers, doc in e2e_docs:
            rate = doc["read"] / doc["seconds"]
            if workers == 1:
                e2e_rate = rate
                label = "1 process, workers = 1"
            else:
                label = f"default workers = {doc['workers']}"
            target = " (target >= 0.8)" if workers == 1 else ""
            rss = doc["tree_rss"]
            if doc["error"]:
                rows.append((f"end to end, {label}", "FAILED", "", doc["error"][:160]))
                continue
            rows.append((f"end to end, {label}, {doc['read']:,}", f"{rate:,.0f} st/s",
                         f"{rate / rate_or:.3f} of orjson{target}",
                         f"peak memory (PSS) {_mib(rss)} ({'<' if rss < GIB else 'NOT <'} 1 GiB), "
                         f"{doc['seconds']:.1f} s (verification {doc['verify_seconds']:.1f} s, "
                         f"{doc['verification']}), "
                         f"published {doc['published']}, quarantined {doc['quarantined']}"))

        if stale_doc is not None:
            d, rss = stale_doc, stale_doc["tree_rss"]
            rows.append((f"end to end, 1 process, stale roster, {d['read']:,}",
                         f"{d['read'] / d['seconds']:,.0f} st/s", "",
                         f"peak memory (PSS) {_mib(rss)} ({'<' if rss < GIB else 'NOT <'} 1 GiB), "
                         f"{d['seconds']:.1f} s, quarantined {d['quarantined']}; "
                         + (f"gate: {d['error'].split(': ', 2)[-1][:70]}" if d["error"]
                            else f"published {d['published']}")))

        doc = child("tincan", str(path), str(a.sample))
        rate_tc = doc["read"] / doc["seconds"]
        rows.append((f"tincan from_json, {doc['read']:,} sample", f"{rate_tc:,.0f} st/s",
                     f"{rate_tc / rate_or:.3f} of orjson", f"{doc['valid']:,} accepted"))

        rate_ralph: float | None = None
        ralph_note = "skipped (--no-ralph)"
        if not a.no_ralph:
            py, how = ralph_python(a.ralph_venv.resolve())
            if py is None:
                ralph_note = how
            else:
                script = work / "ralph_validate.py"
                script.write_text(RALPH_SCRIPT, encoding="utf-8")
                try:
                    doc = run_measured([str(py), str(script), str(path), str(a.sample)])
                except RuntimeError as exc:
                    ralph_note = f"failed: {str(exc).strip().splitlines()[-1][:150]}"
                else:
                    rate_ralph = doc["read"] / doc["seconds"]
                    rows.append((f"Ralph {doc['version']} strict model, {doc['read']:,} sample",
                                 f"{rate_ralph:,.0f} st/s", f"{rate_ralph / rate_or:.3f} of orjson",
                                 f"{doc['valid']:,} valid, {doc['invalid']:,} refused; {how}"))
        if rate_ralph is None:
            rows.append(("Ralph strict model", "n/a", "", ralph_note))

        if e2e_rate:
            rows.append(("end to end (1 process) / tincan", f"{e2e_rate / rate_tc:,.1f} x",
                         "(target >= 100)", ""))
            rows.append(("end to end (1 process) / Ralph",
                         f"{e2e_rate / rate_ralph:,.1f} x" if rate_ralph else "n/a",
                         "(target >= 100)", "" if rate_ralph else ralph_note))
    finally:
        if not a.keep and a.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print_table(rows)


if __name__ == "__main__":
    main()
