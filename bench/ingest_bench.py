"""Ingestion benchmark: figures and ratios against floors measured in the same run.

    .venv/bin/python bench/ingest_bench.py                 # 1M and 5M file statements, 100k LRS
    .venv/bin/python bench/ingest_bench.py --sizes 200000 --lrs 20000   # a quick look

File part: N generated statements (NDJSON, gzip) -> normalised Parquet through the real
``ingest_source`` in a child process (its peak RSS is the child's own), beside ``orjson.loads``
alone over the same lines (the floor for any JSON-based reader) and tincan's
``Statement.from_json`` over a 10,000 sample.

LRS part: M statements in the local LRS -> normalised Parquet, beside plain paging through the
same statements with raw HTTP and no parsing (the LRS's own floor), with the same query our
first incremental run sends (``ascending``, ``limit`` and ``until`` = now: the window bound costs
the LRS 5-15 % more than an unbounded query, and that is the LRS's work, not ours).

Targets (issue 2): file -> Parquet >= 0.5 x orjson alone; LRS ingestion within 1.1 x raw paging
(time ratio <= 1.1); peak memory < 1 GiB and flat from 1M to 5M statements. Memory is the peak
sum of the proportional set sizes (PSS) of the ingesting process and its workers, sampled every
0.2 s: RSS would count the pages the workers share with their fork server once per worker.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate_file(n: int, path: Path) -> float:
    from pipelines.generate import TroubleShares, build_university, generate_statements
    from pipelines.generate.writers import write_ndjson

    univ = build_university(187, students=2000, disciplines=40)
    t = time.perf_counter()
    write_ndjson(generate_statements(univ, n, 187, TroubleShares(),
                                     datetime(2026, 9, 1, tzinfo=UTC),
                                     datetime(2026, 12, 31, tzinfo=UTC)), path, compresslevel=1)
    return time.perf_counter() - t


def orjson_floor(path: Path) -> tuple[int, float]:
    import orjson

    n = 0
    t = time.perf_counter()
    with gzip.open(path, "rb") as fh:
        for line in fh:
            with contextlib.suppress(orjson.JSONDecodeError):
                orjson.loads(line)
            n += 1
    return n, time.perf_counter() - t


def tincan_sample(path: Path, k: int = 10_000) -> tuple[int, float]:
    from tincan import Statement

    lines = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            lines.append(line.decode(errors="replace"))
            if len(lines) >= k:
                break
    t = time.perf_counter()
    for s in lines:
        with contextlib.suppress(Exception):
            Statement.from_json(s)
    return len(lines), time.perf_counter() - t


def _descendants(root: int) -> list[int]:
    """A process and all its descendants, from the kernel's per-thread child lists (cheap: no
    scan of every process on the machine, so sampling barely disturbs what it measures)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                continue
    return out


def _tree_rss(root: int) -> int:
    """Memory of a process and all its descendants (workers included), in bytes.

    Each process counts its proportional set size (PSS): pages shared between the fork server
    and the workers it forked are counted once in all, not once per process as RSS would.
    """
    total = 0
    for p in _descendants(root):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f
                              if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run a step in a fresh process; its last JSON line, plus the peak memory of its whole tree."""
    import threading

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"bench step {cmd[-3:]} failed: {err[-2000:]}")
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    doc["tree_rss"] = peak
    return doc


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """The benches' one output: measure, rate, ratio, notes, in aligned columns."""
    head = ("measure", "rate", "ratio", "notes")
    w = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    line = "  ".join(h.ljust(w[i]) for i, h in enumerate(head))
    print(line.rstrip())
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())


def child(argv: list[str]) -> dict[str, Any]:
    return run_measured([sys.executable, __file__, "--child", *argv])


def _child_main(args: list[str]) -> None:
    kind, folder = args[0], Path(args[1])
    from pipelines import config
    from pipelines.ingest import ingest_source

    s = config.load(folder / "footprint.toml")
    t = time.perf_counter()
    r = ingest_source(s, s.sources[0].name)
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"kind": kind, "read": r.read, "written": r.written, "seconds": dt,
                      "rss": rss, "pages": r.pages}))


def raw_paging(endpoint: str, page_size: int, until: str | None = None) -> tuple[int, float]:
    """Page through the statements with raw HTTP and no parsing: the LRS's own floor. ``until``:
    the same window bound an incremental run sends (it costs the LRS a filter on ``stored``)."""
    import httpx

    base = endpoint.split("/xAPI/")[0]
    n = 0
    t = time.perf_counter()
    window = f"&until={until}" if until else ""
    url: str | None = f"{endpoint}statements?limit={page_size}&ascending=true{window}"
    with httpx.Client(headers={"X-Experience-API-Version": "1.0.3"}, auth=("a", "b"),
                      timeout=120) as c:
        while url:
            r = c.get(url)
            body = r.content
            # find "more" without parsing the statements: it is the last key LL writes
            i = body.rfind(b'"more":"')
            more = body[i + 8: body.index(b'"', i + 8)].decode() if i >= 0 else ""
            n += body.count(b'"stored":')  # approximate, only for the row count shown
            url = base + more if more else None
    return n, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,5000000",
                    help="statement counts for the file part (comma-separated)")
    ap.add_argument("--lrs", type=int, default=100_000, help="statements for the LRS part "
                    "(0 skips it)")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child_main(a.child)
        return
    rows: list[tuple[str, str, str, str]] = []
    work = Path(tempfile.mkdtemp(prefix="fp-bench-"))
    print(f"work folder: {work}", file=sys.stderr)
    rss_by_size: dict[int, float] = {}
    for n in [int(x) for x in a.sizes.split(",") if x]:
        f = work / f"statements-{n}.ndjson.gz"
        gen = generate_file(n, f)
        rows.append((f"generate {n:,}", f"{n / gen:,.0f} st/s", "", ""))
        cnt, t_or = orjson_floor(f)
        rate_or = cnt / t_or
        rows.append((f"orjson.loads alone, {n:,}", f"{rate_or:,.0f} st/s", "1.00 (floor)", ""))
        if n == int(a.sizes.split(",")[0]):
            k, t_tc = tincan_sample(f)
            rows.append((f"tincan from_json, {k:,} sample", f"{k / t_tc:,.0f} st/s",
                         f"{(k / t_tc) / rate_or:.3f}", ""))
        folder = work / f"file-{n}"
        folder.mkdir()
        (folder / "footprint.toml").write_text(
            f'[storage]\nroot = "data"\n[state]\nurl = "sqlite:///data/state.db"\n'
            f'[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "{f}"\n')
        doc = child(["file", str(folder)])
        rate = doc["read"] / doc["seconds"]
        rss_by_size[n] = doc["tree_rss"]
        rows.append((f"file -> normalised Parquet, {n:,}", f"{rate:,.0f} st/s",
                     f"{rate / rate_or:.3f} (target >= 0.5)",
                     f"peak memory {doc['tree_rss'] / 2**20:,.0f} MiB (PSS, all processes)"))
    if len(rss_by_size) > 1:
        sizes = sorted(rss_by_size)
        ratio = rss_by_size[sizes[-1]] / rss_by_size[sizes[0]]
        rows.append((f"peak memory {sizes[-1]:,} / {sizes[0]:,}", f"{ratio:.2f}",
                     "(flat: about 1)", ""))
    if a.lrs:
        from pipelines.generate import TroubleShares, build_university, generate_statements
        from pipelines.generate.writers import post_to_lrs
        from pipelines.local.lrs import LocalLRS

        with LocalLRS(work / "lrs") as lrs:
            univ = build_university(11, students=500, disciplines=20)
            t = time.perf_counter()
            rep = post_to_lrs(generate_statements(univ, a.lrs, 11, TroubleShares.none(),
                                                  datetime(2026, 9, 1, tzinfo=UTC),
                                                  datetime(2026, 12, 1, tzinfo=UTC)),
                              lrs.endpoint, ("a", "b"), batch_size=1000)
            rows.append((f"seed LRS (POST), {rep.accepted:,}",
                         f"{rep.accepted / (time.perf_counter() - t):,.0f} st/s", "", ""))
            from pipelines.sources.base import iso_ms

            # the window our first incremental run reads: (nothing, now]
            until = iso_ms(datetime.now(UTC))
            raw_paging(lrs.endpoint, a.page_size, until)  # warm the LRS's caches once
            n_raw, t_raw = raw_paging(lrs.endpoint, a.page_size, until)
            rows.append((f"raw HTTP paging, {n_raw:,}", f"{n_raw / t_raw:,.0f} st/s",
                         "1.00 (floor)", f"{t_raw:.2f} s"))
            folder = work / "lrs-ingest"
            folder.mkdir()
            (folder / "footprint.toml").write_text(
                f'[storage]\nroot = "data"\n[state]\nurl = "sqlite:///data/state.db"\n'
                f'[[sources]]\nname = "lrs"\nkind = "xapi-lrs"\nendpoint = "{lrs.endpoint}"\n'
                f'page_size = {a.page_size}\n')
            os.environ["FOOTPRINT_SOURCE_LRS_USERNAME"] = "bench"
            os.environ["FOOTPRINT_SOURCE_LRS_PASSWORD"] = "bench"
            doc = child(["lrs", str(folder)])
            rows.append((f"LRS -> normalised Parquet, {doc['read']:,.0f}",
                         f"{doc['read'] / doc['seconds']:,.0f} st/s",
                         f"time x{doc['seconds'] / t_raw:.3f} of raw (target <= 1.1)",
                         f"{doc['seconds']:.2f} s, {doc['tree_rss'] / 2**20:,.0f} MiB PSS"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("measure", "rate", "ratio", "notes")
    w = [max(w[i], len(head[i])) for i in range(4)]
    line = "  ".join(h.ljust(w[i]) for i, h in enumerate(head))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
