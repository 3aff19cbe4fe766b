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

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

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
)
from pipelines.store.state import LockHeld, StateStore
from pipelines.store.zones import RAW_SCHEMA, WindowWrite, Zones
from pipelines.xapi.normalise import Normaliser, Rejection


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
    """Statements read since the last flush, in order, with their fate so far."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.refs: list[str] = []
        self.fetched: list[datetime] = []
        self.norm_pos: list[int] = []  # position in the normaliser, or -1 if rejected on add
        self.rejections: dict[int, Rejection] = {}

    def __len__(self) -> int:
        return len(self.raw)


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
            state.run_started(run_id, s.name, mode, window.since, window.until)
            src = source or make_source(s)
            try:
                ct = _run(src, s, zones, window, report, progress, lease.refresh,
                          settings.batch_statements)
                report.check_balance()
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
    return {k: getattr(r, k) for k in keys}


def _run(
    src: Source, s: SourceSettings, zones: Zones, window: Window, report: IngestReport,
    progress: Progress | None, heartbeat: Callable[[], None], batch_statements: int,
) -> datetime | None:
    """Read every page of the window, stage it, commit it; returns the lowest Consistent-Through."""
    write = zones.begin(s.name, report.run_id, window)
    norm = Normaliser(s.name, report.run_id)
    batch = _Batch()
    ct: datetime | None = None
    try:
        for page in prefetch(src.pages(window)):
            _add_page(page, norm, batch, report)
            if page.consistent_through is not None:
                ct = page.consistent_through if ct is None else min(ct, page.consistent_through)
            report.pages = src.stats.pages
            report.requests = src.stats.requests
            report.retries = src.stats.retries
            if len(batch) >= batch_statements:
                _flush(norm, batch, write, window, report)
                batch = _Batch()
                heartbeat()
            crashpoint("page")
            if progress:
                progress(report)
        _flush(norm, batch, write, window, report)
        crashpoint("staged")
        committed = write.commit(crashpoint)
    except BaseException:
        write.discard()
        raise
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


def _add_page(page: Page, norm: Normaliser, batch: _Batch, report: IngestReport) -> None:
    fetched = page.fetched_at
    for raw, ref in zip(page.statements, page.refs, strict=True):
        rej = norm.add(raw, ref, fetched)
        i = len(batch.raw)
        batch.raw.append(raw)
        batch.refs.append(ref)
        batch.fetched.append(fetched)
        if rej is None:
            batch.norm_pos.append(norm.rows - 1)
        else:
            batch.norm_pos.append(-1)
            batch.rejections[i] = rej
    report.read += len(page.statements)


def _flush(norm: Normaliser, batch: _Batch, write: WindowWrite, window: Window,
           report: IngestReport) -> None:
    if not len(batch):
        return
    table, late = norm.take()
    keep = [True] * table.num_rows
    for pos in late:
        keep[pos] = False
    if window.since is not None or window.until is not None:
        inside = write.in_window(table).to_pylist()
    else:
        inside = [True] * table.num_rows
    sids = table["statement_id"].to_pylist()
    status: list[str] = []
    reason: list[str | None] = []
    detail: list[str | None] = []
    ids: list[str | None] = []
    outside = 0
    for i, pos in enumerate(batch.norm_pos):
        rej = batch.rejections.get(i) if pos < 0 else late.get(pos)
        if rej is not None:
            status.append("rejected")
            reason.append(rej.reason)
            detail.append(rej.detail)
            ids.append(rej.statement_id)
            report.rejected += 1
            report.rejected_by_reason[rej.reason] = report.rejected_by_reason.get(rej.reason, 0) + 1
            continue
        ids.append(sids[pos])
        reason.append(None)
        detail.append(None)
        if not inside[pos]:
            keep[pos] = False
            status.append("outside-window")
            outside += 1
        else:
            status.append("normalised")
    report.outside_window += outside
    write.add_raw(pa.table({
        "statement_id": pa.array(ids, pa.string()),
        "raw": pa.array(batch.raw, pa.binary()),
        "status": pa.array(status, pa.string()),
        "reason": pa.array(reason, pa.string()),
        "detail": pa.array(detail, pa.string()),
        "fetch_ref": pa.array(batch.refs, pa.string()),
        "fetched_at": pa.array(batch.fetched, pa.timestamp("us", tz="UTC")),
        "run_id": pa.array([report.run_id] * len(batch), pa.string()),
    }, schema=RAW_SCHEMA))
    if not all(keep):
        table = table.filter(pa.array(keep))
    write.stage(table)
    report.written += table.num_rows
    crashpoint("flush")


def ingest_all(settings: Settings, names: list[str] | None = None, **kw: Any) -> list[IngestReport]:
    """Every enabled source (or those named), one after the other."""
    chosen = [s for s in settings.sources if (names and s.name in names) or
              (not names and s.enabled)]
    return [ingest_source(settings, s.name, **kw) for s in chosen]
