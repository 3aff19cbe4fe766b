"""One-line entry points for an orchestrator: what the Airflow tasks (``dags/``) call.

Every function takes the configuration path (None: ``$FOOTPRINT_CONFIG`` or ./footprint.toml, as
for the CLI) and plain strings and datetimes, and returns a JSON-able dict (an XCom). Nothing
here imports Airflow, and nothing heavy is imported at module import: the DAG files import this
module while Airflow parses them, and only :func:`ingest_schedule` runs then (no I/O: it reads
one environment variable).

The ingestion of one data interval is three steps, each a function of (source, interval):

1. :func:`extract` reads the source over the interval into the raw and normalised zones
   (``pipelines.ingest.ingest_source`` with an explicit window and verification turned off): a
   stateless backfill of exactly that window, so a re-run replaces the window's output and the
   incremental watermark is never moved;
2. :func:`verify` verifies that window under the source's lock (``verify_window``): the
   reference checks, the voids, the Great Expectations gate, and, when the gate passes, the
   replacement of the window's rows in the verified and quarantine zones;
3. :func:`publish` says what the interval changed in the verified footprint (the DAG's publish
   task turns it into an Asset event; nothing is written here).

:func:`ingest_window` runs the three in a row: it is what ``footprint backfill`` runs per window,
so the CLI and the DAG share one path.

Windows: Airflow's data interval [start, end) becomes the stored-time window (start, end] at
millisecond precision, so consecutive intervals tile the time line with no gap and no overlap.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pipelines.config import AlertSettings, Settings

log = logging.getLogger("footprint.orchestrate")

ConfigPath = str | os.PathLike[str] | None
INTERVAL_ENV = "FOOTPRINT_INGEST_INTERVAL"
DEFAULT_INTERVAL = "PT1H"
_ISO_RE = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?)?$")


OWNER = "footprint"
#: (name, URI) of the Airflow Assets: the verified footprint (produced by footprint_ingest's
#: publish task) and the authority's reconciled copy (produced by footprint_deliver)
VERIFIED_ASSET = ("footprint_verified", "x-footprint://verified-footprint")
AUTHORITY_ASSET = ("footprint_authority_copy", "x-footprint://authority/online-learning")


class OrchestrationError(Exception):
    """A step finished but its outcome must fail the task (drift, failed quality, failures)."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


# ------------------------------------------------------------------------------------------------
# schedule and windows


@dataclass(frozen=True)
class Schedule:
    """The ingestion interval: an ISO 8601 duration, its length and the equivalent UTC cron."""

    interval: str
    step: timedelta
    cron: str


def ingest_schedule(value: str | None = None) -> Schedule:
    """The ingestion interval: ``value``, else ``$FOOTPRINT_INGEST_INTERVAL``, else ``PT1H``.

    Allowed: whole minutes that divide an hour (``PT5M``, ``PT15M``...), whole hours that divide a
    day (``PT1H``, ``PT6H``...) or ``P1D``: intervals that tile each day from 00:00 UTC, so the
    Airflow timetable (a cron data-interval timetable in UTC), a manual run (the last complete
    interval) and ``footprint backfill`` all cut the same windows.
    """
    text = (value if value is not None else os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL)
    text = text.strip().upper()
    m = _ISO_RE.match(text)
    if not m or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{INTERVAL_ENV}={text!r} is not an ISO 8601 duration such as PT1H")
    d, h, mi = (int(m.group(k) or 0) for k in ("d", "h", "m"))
    seconds = d * 86400 + h * 3600 + mi * 60
    if seconds == 86400:
        return Schedule(text, timedelta(days=1), "0 0 * * *")
    if seconds and seconds % 3600 == 0 and 24 % (seconds // 3600) == 0:
        hours = seconds // 3600
        return Schedule(text, timedelta(hours=hours), "0 * * * *" if hours == 1
                        else f"0 */{hours} * * *")
    if seconds and seconds % 60 == 0 and 60 % (seconds // 60) == 0:
        minutes = seconds // 60
        return Schedule(text, timedelta(minutes=minutes), "* * * * *" if minutes == 1
                        else f"*/{minutes} * * * *")
    raise ValueError(f"{INTERVAL_ENV}={text!r}: the interval must tile a day from 00:00 UTC: "
                     f"minutes dividing 60 (PT5M, PT15M, PT30M), hours dividing 24 (PT1H, PT2H, "
                     f"PT6H, PT12H) or P1D")


def _floor(t: datetime, step: timedelta) -> datetime:
    s = int(step.total_seconds())
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % s, UTC)


def windows(start: datetime | str, end: datetime | str, step: timedelta
            ) -> list[tuple[datetime, datetime]]:
    """The data intervals the ingest DAG runs to cover [start, end): [s, s + step) with s on the
    interval grid (start rounded down, end rounded up)."""
    lo, hi = utc(start), utc(end)
    if lo >= hi:
        raise ValueError(f"--from {lo.isoformat()} is not before --to {hi.isoformat()}")
    out = []
    s = _floor(lo, step)
    while s < hi:
        out.append((s, s + step))
        s += step
    return out


def utc(value: datetime | str) -> datetime:
    """A plain ``datetime`` in UTC (from an ISO string, a naive UTC time or a pendulum time)."""
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        value = datetime.fromisoformat(text)
    dt = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond,
                    tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------
# configuration


def _load(config: ConfigPath) -> Settings:
    from pipelines.config import load

    return load(config)


def list_sources(config: ConfigPath = None) -> list[str]:
    """The enabled sources, in configuration order (what the ingest DAG maps over)."""
    return [s.name for s in _load(config).sources if s.enabled]


def connection_ids(config: ConfigPath = None,
                   scope: Literal["sources", "authority", "all"] = "all") -> list[str]:
    """The Airflow connection ids the configuration names (sources, the authority or both)."""
    settings = _load(config)
    out: list[str] = []
    if scope in ("sources", "all"):
        out += [s.connection for s in settings.sources if s.enabled and s.connection]
    if scope in ("authority", "all") and settings.authority and settings.authority.connection:
        out.append(settings.authority.connection)
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------------
# ingestion: extract -> verify -> publish


def extract(config: ConfigPath, source: str, start: datetime | str, end: datetime | str,
            connections: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read ``source`` over the stored-time window (start, end] into the raw and normalised
    zones, replacing that window's output; the watermark does not move. ``connections`` are
    Airflow connections fetched by the caller (``{conn_id: URI or JSON}``)."""
    from pipelines import connections as conns
    from pipelines.ingest import ingest_source

    settings = _load(config)
    lo, hi = utc(start), utc(end)
    unverified = dataclasses.replace(settings, roster=None, catalogue=None)
    with conns.exported(connections):
        report = ingest_source(unverified, source, since=lo, until=hi)
    out: dict[str, Any] = {
        "source": source, "run_id": report.run_id, "start": _iso(lo), "end": _iso(hi),
        "window": report.window, "status": report.status,
        **{k: getattr(report, k) for k in ("read", "written", "rejected", "duplicates",
                                           "outside_window", "pages", "retries", "partitions",
                                           "seconds")},
        "rejected_by_reason": dict(report.rejected_by_reason),
        "consistent_through": report.consistent_through,
    }
    if report.consistent_through and utc(report.consistent_through) < hi:
        # an LRS may list statements stored before `end` only later: say so, do not fail
        out["warning"] = (f"the source was consistent only through {report.consistent_through}: "
                          f"statements stored after that may arrive late; re-run this interval "
                          f"to pick them up")
        log.warning("source %s: %s", source, out["warning"])
    return out


def verify(config: ConfigPath, source: str, start: datetime | str, end: datetime | str,
           run_id: str) -> dict[str, Any]:
    """Verify the window (start, end] of ``source`` and publish it into the verified and
    quarantine zones (under the source's ingestion lock; a failed quality gate raises and
    publishes nothing). Without ``[reference]`` the result has status ``skipped``."""
    from pipelines.sources.base import Window
    from pipelines.store.state import StateStore
    from pipelines.verify.stage import SKIPPED_MESSAGE, verify_window

    settings = _load(config)
    lo, hi = utc(start), utc(end)
    if not settings.verifies:
        settings.source(source)  # an unknown source still fails
        return {"source": source, "run_id": run_id, "status": "skipped",
                "message": SKIPPED_MESSAGE}
    state = StateStore(settings.state_url)
    try:
        with state.lock(f"ingest:{source}"):
            report = verify_window(settings, source, Window(lo, hi), run_id)
    finally:
        state.close()
    d = report.as_dict()
    keys = ("source", "run_id", "window", "status", "read", "verified", "published",
            "quarantined", "duplicates", "voiding", "voided", "voided_earlier", "pending_voids",
            "quarantined_by_reason", "warnings", "quality", "quality_results", "data_docs",
            "message", "seconds")
    return {k: d[k] for k in keys}


def publish(extracted: Mapping[str, Any], verified: Mapping[str, Any]) -> dict[str, Any]:
    """What the interval changed in the verified footprint: the Asset event's extra (no I/O)."""
    status = "published" if verified.get("status") == "succeeded" else str(
        verified.get("status"))
    out: dict[str, Any] = {
        "source": extracted["source"], "run_id": extracted["run_id"],
        "start": extracted["start"], "end": extracted["end"], "status": status,
        "read": extracted["read"], "written": extracted["written"],
        "rejected": extracted["rejected"], "duplicates": extracted["duplicates"],
    }
    if status == "published":
        for k in ("verified", "published", "quarantined", "voided"):
            out[k] = int(verified.get(k) or 0)
        quality = verified.get("quality") or {}
        out["quality_passed"] = bool(quality.get("passed", True))
        out["quality_warnings"] = list(quality.get("failed_warning") or [])
    else:
        out["message"] = verified.get("message")
    if extracted.get("warning"):
        out["warning"] = extracted["warning"]
    return out


def ingest_window(config: ConfigPath, source: str, start: datetime | str, end: datetime | str,
                  connections: Mapping[str, str] | None = None) -> dict[str, Any]:
    """extract -> verify -> publish for one window: what one mapped DAG branch does."""
    e = extract(config, source, start, end, connections)
    v = verify(config, source, start, end, e["run_id"])
    return {**publish(e, v), "extract": e, "verify": v}


# ------------------------------------------------------------------------------------------------
# delivery


def plan_delivery(config: ConfigPath = None) -> dict[str, Any]:
    """Build the records from the verified footprint and compare them with the ledger: what a
    delivery would send (new, changed, deleted, unchanged). Sends nothing."""
    from pipelines.deliver.stage import deliver as run_delivery

    report = run_delivery(_load(config), dry_run=True)
    return {"records": report.records, "statements": report.statements, **report.counts(),
            "seconds": report.seconds}


def deliver(config: ConfigPath = None,
            connections: Mapping[str, str] | None = None,
            allow_mass_delete: bool = False) -> dict[str, Any]:
    """Send what changed to the authority and read it back (``pipelines.deliver.stage``).

    Raises when the run stops (the authority unreachable, or a mass delete not allowed:
    DeliveryError) or leaves records failed (OrchestrationError): a retry resumes from the
    ledger. ``allow_mass_delete`` is the CLI's ``--allow-mass-delete``.
    """
    from pipelines import connections as conns
    from pipelines.deliver.stage import deliver as run_delivery

    settings = _load(config)
    with conns.exported(connections):
        report = run_delivery(settings, allow_mass_delete=allow_mass_delete)
    out = {k: v for k, v in report.as_dict().items() if k != "phases"}
    if report.failed:
        raise OrchestrationError(
            f"delivery left {report.failed} records failed (e.g. "
            + "; ".join(f"{f['record_id']}: {f['reason']}" for f in report.failures[:3])
            + "); the ledger keeps them and the next run re-sends them", out)
    return out


def reconcile(config: ConfigPath = None,
              connections: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read the authority's copy back and compare it with the footprint; raises on any drift."""
    from pipelines import connections as conns
    from pipelines.deliver.reconcile import reconcile as run_reconcile

    settings = _load(config)
    with conns.exported(connections):
        report = run_reconcile(settings, limit=20)
    out = report.as_dict()
    if report.drifted:
        sample = ", ".join(f"{d.kind} {d.record_id}" for d in report.drift[:5])
        raise OrchestrationError(
            f"the authority's copy drifted from the footprint: {report.drifted} records "
            f"({report.missing} missing, {report.unexpected} unexpected, {report.different} "
            f"different), e.g. {sample}; footprint deliver repairs it", out)
    return out


# ------------------------------------------------------------------------------------------------
# quality


def quality(config: ConfigPath, end: datetime | str, days: int = 7) -> dict[str, Any]:
    """The Great Expectations suite over the verified footprint stored in the ``days`` before
    ``end`` (and the quarantined share of the same period); results are saved under
    ``<root>/reports/quality/``, Data Docs built when ``[quality] data_docs`` is on. Raises
    OrchestrationError when a critical check fails (after saving the results)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.sources.base import Window
    from pipelines.store.footprint import FootprintZones
    from pipelines.store.zones import in_window
    from pipelines.verify import quality as q

    if days < 1:
        raise ValueError("days must be at least 1")
    settings = _load(config)
    hi = utc(end)
    lo = hi - timedelta(days=days)
    fz = FootprintZones(settings.storage_root)
    table = fz.read_verified()
    if table.num_rows:
        table = table.filter(in_window(table, Window(lo, hi)))
    quarantine = fz.read_quarantine()
    quarantined = 0
    if quarantine.num_rows:
        at = quarantine["first_quarantined_at"]
        inside = pc.and_(pc.greater(at, pa.scalar(lo, at.type)),
                         pc.less_equal(at, pa.scalar(hi, at.type)))
        quarantined = int(pc.sum(inside).as_py() or 0)
    outcome = q.check_batch(table, quarantined=quarantined, read=table.num_rows + quarantined,
                            previous_counts=[])
    run_id = f"quality-{hi:%Y%m%dT%H%M%SZ}-{days}d"
    results = q.save_results(outcome, settings.storage_root, run_id)
    docs = (q.build_data_docs(settings.storage_root, outcome, run_id=run_id)
            if settings.data_docs else None)
    out = {"run_id": run_id, "start": _iso(lo), "end": _iso(hi), "days": days,
           "rows": table.num_rows, "quarantined": quarantined, "passed": outcome.passed,
           "failed_critical": outcome.failed_critical, "failed_warning": outcome.failed_warning,
           "message": outcome.message(), "results": str(results),
           "data_docs": str(docs) if docs else None}
    if not outcome.passed:
        raise OrchestrationError(f"quality of the verified footprint {out['start']} .. "
                                 f"{out['end']}: {outcome.message()}", out)
    return out


# ------------------------------------------------------------------------------------------------
# what every DAG task shares: retries, the failure callback, connections


def task_defaults() -> dict[str, Any]:
    """``default_args`` of the footprint DAGs: owner, 3 retries with exponential backoff (1, 2,
    4 minutes, at most 30) and the failure callback."""
    return {
        "owner": OWNER,
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": on_task_failure,
    }


def on_task_failure(context: Mapping[str, Any]) -> None:
    """Airflow's ``on_failure_callback`` (a task failed with no retry left): notify."""
    ti = context.get("ti")
    exc = context.get("exception")
    event = {
        "dag_id": getattr(ti, "dag_id", None), "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None), "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
        "logical_date": context.get("logical_date"),
        "data_interval_start": context.get("data_interval_start"),
        "data_interval_end": context.get("data_interval_end"),
        "exception": f"{type(exc).__name__}: {exc}" if exc is not None else None,
    }
    notify_failure(None, event)


def fetch_connections(config: ConfigPath, scope: Literal["sources", "authority", "all"],
                      get: Callable[[str], Any]) -> dict[str, str]:
    """The connections the configuration names, fetched with ``get`` (in a DAG task:
    ``airflow.sdk.Connection.get``, which sees ``AIRFLOW_CONN_*``, the metadata database and
    secrets backends), as ``{conn_id: JSON}`` for the ``connections`` argument of the steps.

    A connection ``get`` cannot find is left out: the configuration then falls back to the
    ``FOOTPRINT_*`` variables, or fails naming both.
    """
    out: dict[str, str] = {}
    for conn_id in connection_ids(config, scope):
        try:
            conn = get(conn_id)
        except Exception as exc:  # AirflowNotFoundException and the like
            log.warning("connection %r: not found by the orchestrator (%s); using the "
                        "environment", conn_id, type(exc).__name__)
            continue
        out[conn_id] = conn.as_json() if hasattr(conn, "as_json") else str(conn)
    return out


# ------------------------------------------------------------------------------------------------
# failure notification


def notify_failure(config: ConfigPath, event: Mapping[str, Any]) -> dict[str, Any]:
    """Report a failed task: always to the log; to ``[alerts] webhook`` (a JSON POST) and
    ``[alerts] email`` when configured. Never raises: an alert that cannot be sent is logged."""
    doc = {"kind": "footprint.task_failed", **{k: _plain(v) for k, v in event.items()}}
    log.error("footprint task failed: %s", json.dumps(doc, ensure_ascii=False, default=str))
    out: dict[str, Any] = {"logged": True, "webhook": None, "email": None}
    try:
        alerts = _load(config).alerts
    except Exception as exc:
        log.warning("alerts: cannot read the configuration: %s", exc)
        out["error"] = str(exc)
        return out
    if alerts is None:
        return out
    if alerts.webhook:
        out["webhook"] = _post_webhook(alerts.webhook, doc, alerts.timeout)
    if alerts.email:
        out["email"] = _send_email(alerts, doc)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _post_webhook(url: str, doc: Mapping[str, Any], timeout: float) -> str:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url, data=json.dumps(doc, ensure_ascii=False).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "footprint-alerts"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return f"sent ({resp.status})"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("alerts: the webhook %s did not take the alert: %s", url, exc)
        return f"failed: {exc}"


def _send_email(alerts: AlertSettings, doc: Mapping[str, Any]) -> str:
    import smtplib
    from email.message import EmailMessage

    msg = EmailMessage()
    what = ".".join(str(doc.get(k)) for k in ("dag_id", "task_id") if doc.get(k))
    msg["Subject"] = f"[footprint] task failed: {what or 'unknown task'}"
    msg["From"] = alerts.email_from
    msg["To"] = ", ".join(alerts.email)
    msg.set_content(json.dumps(doc, ensure_ascii=False, indent=2))
    try:
        with smtplib.SMTP(alerts.smtp_host, alerts.smtp_port, timeout=alerts.timeout) as smtp:
            smtp.send_message(msg)
        return f"sent to {len(alerts.email)}"
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("alerts: cannot send email via %s:%s: %s", alerts.smtp_host,
                    alerts.smtp_port, exc)
        return f"failed: {exc}"
