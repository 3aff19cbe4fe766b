"""The ingestion stage: one source, one window -> raw and normalised zones, and a report.

``ingest_source(settings, name)`` is what the CLI and the Airflow DAG both call.

- Incremental (no window given): an LRS is read over (watermark - lookback, now]; afterwards the
  watermark moves to min(now, the lowest Consistent-Through the LRS sent), and only once the
  output is durably written. A file source is mirrored whole: (start, end].
- Backfill (``since``/``until`` given): exactly that window; the stored watermark is not touched,
  so a backfill can run beside the incremental schedule.

Every run reports ``read = written + rejected + duplicates + outside_window`` and fails loudly if
that does not hold. A run that fails changes no state: the watermark stays, and the partially
staged output is thrown away (or, after a crash, cleaned up by the next run of the source).
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import Settings, SourceSettings
from pipelines.faults import crashpoint
from pipelines.sources.base import (
    FatalSourceError,
    Page,
    Source,
    SourceError,
    Window,
    iso_ms,
    prefetch,
    split_block,
)
from pipelines.store.state import LockHeld, StateStore, pid_alive
from pipelines.store.zones import (
    RAW_SCHEMA,
    Batches,
    Zones,
    in_window,
    write_raw_part,
    write_stage_file,
)
from pipelines.xapi.normalise import NormalisedBatch, PageData, normalise_batch

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


class IngestError(Exception):
    """A run failed; the message names the source, the URL and the cause. No state changed."""

    def __init__(self, message: str, report: IngestReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class IngestReport:
    source: str
    run_id: str
    mode: str
    window: dict[str, str | None]
    status: str = "running"
    read: int = 0
    written: int = 0
    rejected: int = 0
    duplicates: int = 0
    outside_window: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    requests: int = 0
    retries: int = 0
    partitions: int = 0
    consistent_through: str | None = None
    watermark_before: str | None = None
    watermark_after: str | None = None
    seconds: float = 0.0
    error: str | None = None
    verification: dict[str, Any] | None = None  # the verification stage's report (as_dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_balance(self) -> None:
        total = self.written + self.rejected + self.duplicates + self.outside_window
        if total != self.read:
            raise IngestError(
                f"source {self.source!r}: counts do not add up: read {self.read} != written "
                f"{self.written} + rejected {self.rejected} + duplicates {self.duplicates} + "
                f"outside window {self.outside_window}; nothing was published", self,
            )


Progress = Callable[[IngestReport], None]


def make_source(s: SourceSettings) -> Source:
    if s.kind == "xapi-lrs":
        from pipelines.sources.lrs import XapiLrsSource

        return XapiLrsSource(s, s.credentials())
    if s.kind == "xapi-file":
        from pipelines.sources.xapi_file import XapiFileSource

        return XapiFileSource(s)
    raise FatalSourceError(s.name, "", f"unknown source kind {s.kind!r}")


class _Batch:
    """Pages read since the last hand-over, in order."""

    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.statements = 0

    def add(self, page: Page) -> None:
        self.pages.append(page)
        self.statements += page.size


@dataclass
class BatchJob:
    """Everything a worker needs to process one batch: plain data, so it pickles."""

    source: str
    run_id: str
    window: Window
    schema: pa.Schema
    rows_path: Path
    raw_path: Path
    pages: list[Page]

    def page_data(self) -> list[PageData]:
        """The pages as statements, NDJSON blocks split into lines here (in the worker)."""
        out: list[PageData] = []
        for p in self.pages:
            if p.block is not None:
                statements, numbers = split_block(p.block, p.first_line)
                out.append((statements, p.ref, p.fetched_at, numbers))
            else:
                out.append((p.statements, p.ref, p.fetched_at, p.positions))
        return out


@dataclass
class BatchResult:
    statements: int
    written: int
    rejected: int
    outside_window: int
    rejected_by_reason: dict[str, int]
    staged: tuple[Path, dict[str, Batches]] | None
    raw_part: Path


def process_batch(job: BatchJob) -> BatchResult:
    """Normalise a batch, write its raw part and its staged rows: the CPU-heavy step.

    A pure function of the job (it writes only its own two files), so batches can be processed
    in worker processes while the next pages are read.
    """
    was = gc.isenabled()
    gc.disable()  # decoded statements are many and acyclic: collecting them is wasted time
    try:
        pages = job.page_data()
        result = normalise_batch(job.source, job.run_id, pages, drop_late=False)
        return _write_batch(job, pages, result)
    finally:
        if was:
            gc.enable()
        pa.default_memory_pool().release_unused()


def _write_batch(job: BatchJob, pages: list[PageData], result: NormalisedBatch) -> BatchResult:
    n = sum(len(p[0]) for p in pages)
    table = result.rows  # with the rows ``result.keep`` rejects, if any
    rows = table.num_rows
    if job.window.since is not None or job.window.until is not None:
        inside = in_window(table, job.window)
        if isinstance(inside, pa.ChunkedArray):
            inside = inside.combine_chunks()
    else:
        inside = pa.repeat(pa.scalar(True), rows)
    row_index = np.asarray(result.row_index, np.int64)
    ids = table["statement_id"].combine_chunks()
    keep = inside
    if result.keep is not None:  # one filter of the table below for both reasons
        row_index = row_index[result.keep.to_numpy(zero_copy_only=False)]
        ids, inside = ids.filter(result.keep), inside.filter(result.keep)
        keep = pc.and_(keep, result.keep)
    by_reason: dict[str, int] = {}
    is_row = np.zeros(n, bool)
    is_row[row_index] = True
    row_mask = pa.array(is_row)
    if result.rejections:
        rejs = list(result.rejections.values())
        for rej in rejs:
            by_reason[rej.reason] = by_reason.get(rej.reason, 0) + 1
        slot = np.full(n, -1, np.int64)  # position -> its rejection's index, -1: none
        slot[np.fromiter(result.rejections, np.int64, len(rejs))] = np.arange(len(rejs))
        where = pa.array(slot, mask=slot < 0)

        def scatter(values: list[str | None]) -> pa.Array:
            return pc.take(pa.array(values, pa.string()), where)

        reason = scatter([r.reason for r in rejs])
        detail = scatter([r.detail for r in rejs])
        rej_id = scatter([r.statement_id for r in rejs])
    else:
        reason = detail = rej_id = pa.nulls(n, pa.string())
    # Rows are in reading order, so the positions of the rows, in order, take their values.
    status = pc.replace_with_mask(pa.repeat(pa.scalar("rejected", pa.string()), n), row_mask,
                                  pc.if_else(inside, "normalised", "outside-window"))
    sid = pc.replace_with_mask(rej_id, row_mask, ids)
    raw: list[bytes] = []
    sizes: list[int] = []
    refs: list[str] = []
    index: list[Any] = []
    fetched: list[int] = []
    for statements, ref, fetched_at, positions in pages:
        m = len(statements)
        raw.extend(statements)
        sizes.append(m)
        refs.append(ref)
        index.append(np.asarray(positions, np.int64) if positions is not None
                     else np.arange(m, dtype=np.int64))
        fetched.append((fetched_at - _EPOCH) // _MICRO)
    page_of = pa.array(np.repeat(np.arange(len(pages), dtype=np.int32), sizes))
    write_raw_part(job.raw_path, pa.table({
        "statement_id": sid,
        "raw": pa.array(raw, pa.binary()),
        "status": status,
        "reason": reason,
        "detail": detail,
        "fetch_ref": pc.take(pa.array(refs, pa.string()), page_of),
        "fetch_index": pa.array(np.concatenate(index) if index else np.zeros(0, np.int64)),
        "fetched_at": pc.take(pa.array(fetched, pa.int64()), page_of).cast(
            pa.timestamp("us", tz="UTC")),
        "run_id": pa.repeat(pa.scalar(job.run_id, pa.string()), n),
    }, schema=RAW_SCHEMA))
    kept = table if keep.true_count == rows else table.filter(keep)
    staged = None
    if kept.num_rows:
        staged = (job.rows_path, write_stage_file(job.rows_path, kept, job.schema))
    return BatchResult(
        statements=n, written=kept.num_rows, rejected=len(result.rejections),
        outside_window=len(row_index) - kept.num_rows, rejected_by_reason=by_reason,
        staged=staged, raw_part=job.raw_path,
    )


class _Inline:
    """Runs jobs here and now (small runs, or workers = 1)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        f: Future[Any] = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as exc:
            f.set_exception(exc)
        return f


def _watch_parent(parent: int) -> None:
    """In a worker: leave as soon as the ingesting process is gone (e.g. after kill -9)."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if not pid_alive(parent):  # gone, or a zombie nobody has reaped yet
                os._exit(1)

    threading.Thread(target=watch, name="footprint-parent-watch", daemon=True).start()


def worker_pool(workers: int, preload: str) -> Any:
    """A ``ProcessPoolExecutor`` of ``workers`` processes from a fork server (never a fork of
    this threaded process) that has imported ``preload``; each worker leaves as soon as this
    process is gone."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([preload])  # taken only by a fork server not yet started
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_watch_parent,
                               initargs=(os.getpid(),))


class _Workers:
    """Worker processes for batches and partition merges, started with the first full batch.

    Normalising is pure-Python CPU work: with workers it spreads over the cores, and the main
    process only reads pages and hands them over. The workers come from a fork server, never
    from a fork of this (threaded) process. A run smaller than a batch never pays for them.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: Any = None
        self.inline = _Inline()

    @property
    def depth(self) -> int:
        return self.workers if self.pool is not None else 0

    def start(self) -> None:
        """Start the pool (when there will be more than one batch)."""
        if self.pool is None and self.workers > 1:
            self.pool = worker_pool(self.workers, "pipelines.ingest")

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        if self.pool is None:
            return self.inline.submit(fn, *args)
        fut: Future[Any] = self.pool.submit(fn, *args)
        return fut

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def ingest_source(
    settings: Settings,
    name: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
    source: Source | None = None,
) -> IngestReport:
    s = settings.source(name)
    state = StateStore(settings.state_url)
    zones = Zones(settings.storage_root)
    zones.ensure()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    started = time.perf_counter()
    try:
        with state.lock(f"ingest:{s.name}") as lease:
            zones.clean_leftovers(s.name)
            before = state.get(s.name).watermark
            backfill = since is not None or until is not None
            if backfill:
                window = Window(since, until or datetime.now(UTC))
                mode = "backfill"
            elif s.kind == "xapi-lrs":
                window = Window(before - s.lookback if before else None, datetime.now(UTC))
                mode = "incremental"
            else:
                window = Window(None, None)
                mode = "mirror"
            report = IngestReport(
                source=s.name, run_id=run_id, mode=mode, window=window.as_dict(),
                watermark_before=iso_ms(before) if before else None,
            )
            src = source or make_source(s)  # a missing credential fails here, before the run
            state.run_started(run_id, s.name, mode, window.since, window.until)
            try:
                ct = _run(src, s, zones, window, report, progress, lease.refresh, settings)
                report.check_balance()
                report.verification = _verify(settings, s.name, window, run_id, lease.refresh)
                crashpoint("before-watermark")
                if mode == "incremental":
                    assert window.until is not None
                    new = min(window.until, ct) if ct else window.until
                    state.advance(s.name, new, ct, run_id)
                    report.watermark_after = iso_ms(new)
                else:
                    report.watermark_after = report.watermark_before
                crashpoint("after-watermark")
                report.status = "succeeded"
                report.seconds = round(time.perf_counter() - started, 3)
                state.run_finished(run_id, "succeeded", _counts(report))
                return report
            except BaseException as exc:
                report.status = "failed"
                report.error = str(exc)
                report.seconds = round(time.perf_counter() - started, 3)
                state.run_finished(run_id, "failed", _counts(report), str(exc))
                zones.clean_leftovers(s.name)
                if isinstance(exc, SourceError):
                    raise IngestError(str(exc), report) from exc
                from pipelines.verify.stage import VerifyError

                if isinstance(exc, VerifyError):
                    if exc.report is not None:
                        report.verification = exc.report.as_dict()
                    raise IngestError(str(exc), report) from exc
                raise
            finally:
                src.close()
    except LockHeld as exc:
        raise IngestError(f"source {s.name!r}: another ingestion is running: {exc}") from exc
    finally:
        state.close()


def _counts(r: IngestReport) -> dict[str, Any]:
    keys = ("read", "written", "rejected", "duplicates", "outside_window", "rejected_by_reason",
            "pages", "requests", "retries", "partitions")
    out = {k: getattr(r, k) for k in keys}
    v = r.verification
    if v is not None:
        out["verification"] = {k: v.get(k) for k in (
            "status", "read", "verified", "published", "quarantined", "duplicates", "voiding",
            "voided", "quarantined_by_reason")}
    return out


def _verify(settings: Settings, source: str, window: Window, run_id: str,
            heartbeat: Callable[[], None]) -> dict[str, Any]:
    """The verification stage on the window just committed (same lock, same window)."""
    from pipelines.verify.stage import verify_window

    heartbeat()
    crashpoint("before-verify")
    return verify_window(settings, source, window, run_id).as_dict()


def _run(
    src: Source, s: SourceSettings, zones: Zones, window: Window, report: IngestReport,
    progress: Progress | None, heartbeat: Callable[[], None], settings: Settings,
) -> datetime | None:
    """Read every page of the window, stage it, commit it; returns the lowest Consistent-Through."""
    write = zones.begin(s.name, report.run_id, window)
    workers = _Workers(settings.workers_for(s))
    pending: deque[Future[BatchResult]] = deque()
    batch = _Batch()
    seq = 0
    ct: datetime | None = None

    def hand_over(b: _Batch) -> None:
        nonlocal seq
        seq += 1
        rows_path, raw_path = write.paths(seq)
        pending.append(workers.submit(process_batch, BatchJob(
            s.name, report.run_id, window, zones.file_schema, rows_path, raw_path, b.pages)))

    def collect(keep: int) -> None:
        while len(pending) > keep:
            res = pending.popleft().result()
            write.record(res.staged, res.raw_part)
            report.read += res.statements
            report.written += res.written
            report.rejected += res.rejected
            report.outside_window += res.outside_window
            for k, v in res.rejected_by_reason.items():
                report.rejected_by_reason[k] = report.rejected_by_reason.get(k, 0) + v
            heartbeat()
            crashpoint("flush")

    try:
        for page in prefetch(src.pages(window), depth=8):
            batch.add(page)
            if page.consistent_through is not None:
                ct = page.consistent_through if ct is None else min(ct, page.consistent_through)
            report.pages = src.stats.pages
            report.requests = src.stats.requests
            report.retries = src.stats.retries
            if batch.statements >= settings.batch_statements:
                workers.start()  # a full batch: more are likely to follow
                hand_over(batch)
                batch = _Batch()
                collect(keep=workers.depth)
            crashpoint("page")
            if progress:
                progress(report)
        if batch.statements:
            hand_over(batch)
        collect(keep=0)
        crashpoint("staged")
        committed = write.commit(workers, crashpoint)
    except BaseException:
        write.discard()
        raise
    finally:
        workers.close()
    write.discard()  # the staging folder; committed files are in place
    if committed.duplicates + committed.written != report.written:
        raise IngestError(f"source {s.name!r}: staged {report.written} rows but committed "
                          f"{committed.written} + {committed.duplicates} duplicates", report)
    report.written = committed.written
    report.duplicates = committed.duplicates
    report.partitions = committed.partitions
    report.consistent_through = iso_ms(ct) if ct else None
    if progress:
        progress(report)
    return ct
