"""The ``footprint`` command: every stage of the pipeline, outside Airflow, with the same code.

Heavy libraries (pyarrow, httpx, SQLAlchemy) are imported inside the commands, so ``--help`` is
instant. Every command that does work accepts ``--json`` and then prints exactly one JSON object
on standard output (progress and messages go to standard error).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(
    name="footprint",
    help=(
        "The verified digital footprint of a university's learners (Order No. 187): read xAPI "
        "statements from Learning Record Stores and LMS exports into a durable, replayable data "
        "set, verify it, and deliver it to the authorised body (paragraph 29).\n\n"
        "Configuration comes from footprint.toml in this folder, --config PATH, or "
        "$FOOTPRINT_CONFIG; credentials only from the environment."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain click help: paragraphs are re-wrapped to the terminal and [sections] stay visible
    rich_markup_mode=None,
)
lrs_app = typer.Typer(help="The local Learning Record Store (for demos and tests).",
                      no_args_is_help=True)
app.add_typer(lrs_app, name="lrs")
receiver_app = typer.Typer(help="The authority's API, locally (for tests).", no_args_is_help=True)
app.add_typer(receiver_app, name="receiver")
quarantine_app = typer.Typer(
    help="What did not verify, and why; replay it after a fix (e.g. a roster update).",
    no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Path of footprint.toml (default: ./footprint.toml or "
                 "$FOOTPRINT_CONFIG).", envvar="FOOTPRINT_CONFIG", show_envvar=True),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]


def _err(msg: str, as_json: bool, extra: dict[str, Any] | None = None) -> NoReturn:
    if as_json:
        print(json.dumps({"status": "failed", "error": msg, **(extra or {})},
                         ensure_ascii=False, default=str))
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(1)


def _time(value: str | None, opt: str) -> datetime | None:
    if value is None:
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2026-11-01 or "
            f"2026-11-01T08:00:00Z)", param_hint=opt) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _settings(config: Path | None, as_json: bool) -> Any:
    from pipelines import config as cfg

    try:
        return cfg.load(config)
    except cfg.ConfigError as exc:
        _err(str(exc), as_json)


@app.command()
def ingest(
    config: ConfigOpt = None,
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="Only this source (repeat for several). Default: every enabled "
        "source.")] = None,
    since: Annotated[str | None, typer.Option(
        help="Backfill from this stored time (exclusive). With --since/--until the run is "
        "stateless: it rewrites exactly that window and leaves the watermark alone.")] = None,
    until: Annotated[str | None, typer.Option(
        help="Backfill up to this stored time (inclusive; default now).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Read new statements from each source into the raw and normalised zones, then verify them.

    With [reference] roster and catalogue in the configuration each ingested window is verified:
    the verified footprint (verified/) and quarantine (quarantine/) are replaced for that window
    after the Great Expectations check passes.

    Without a window an LRS is read incrementally from its watermark (minus the lookback) to now,
    and the watermark moves only after the output is durably written. Re-running is always safe:
    a window's output is replaced, never appended twice.
    """
    from pipelines.ingest import IngestError, IngestReport

    settings = _settings(config, as_json)
    t_since, t_until = _time(since, "--since"), _time(until, "--until")
    names = source or [s.name for s in settings.sources if s.enabled]
    if not names:
        _err(f"{settings.path}: no sources configured; add a [[sources]] table", as_json)
    reports: list[IngestReport] = []
    failed: IngestError | None = None
    from pipelines.ingest import ingest_source

    with _progress(as_json) as bar:
        for name in names:
            task = bar.add_task(name, total=None, read=0, rejected=0) if bar else None

            def show(r: IngestReport, task: Any = task) -> None:
                if bar is not None:
                    bar.update(task, completed=r.read, read=r.read, rejected=r.rejected)

            try:
                reports.append(ingest_source(settings, name, since=t_since, until=t_until,
                                             progress=show))
            except IngestError as exc:
                failed = exc
                if exc.report:
                    reports.append(exc.report)
                break
            except Exception as exc:
                from pipelines.config import ConfigError

                if isinstance(exc, ConfigError):
                    failed = IngestError(str(exc))
                    break
                raise
    summary = _sum(reports)
    if as_json:
        out = {"status": "failed" if failed else "succeeded", **summary,
               "sources": [r.as_dict() for r in reports]}
        if failed:
            out["error"] = str(failed)
        print(json.dumps(out, ensure_ascii=False, default=str))
    else:
        _print_reports(reports)
    if failed:
        if not as_json:
            _err(str(failed), False)
        raise typer.Exit(1)


def _sum(reports: list[Any]) -> dict[str, Any]:
    keys = ("read", "written", "rejected", "duplicates", "outside_window")
    out: dict[str, Any] = {k: sum(getattr(r, k) for r in reports) for k in keys}
    by: dict[str, int] = {}
    for r in reports:
        for k, v in r.rejected_by_reason.items():
            by[k] = by.get(k, 0) + v
    out["rejected_by_reason"] = by
    ver = [r.verification for r in reports if r.verification is not None]
    done = [v for v in ver if v.get("status") != "skipped"]
    if not done:
        out["verification"] = "skipped"
        if ver:
            out["verification_message"] = ver[0].get("message")
    else:
        out["verification"] = "failed" if any(v["status"] == "failed" for v in done) \
            else "succeeded"
        for k in ("verified", "published", "quarantined", "voided"):
            out[k] = sum(int(v.get(k) or 0) for v in done)
        qby: dict[str, int] = {}
        for v in done:
            for k, n in (v.get("quarantined_by_reason") or {}).items():
                qby[k] = qby.get(k, 0) + n
        out["quarantined_by_reason"] = qby
        qs = [v["quality"] for v in done if v.get("quality")]
        out["quality"] = None if not qs else {
            "passed": all(q["passed"] for q in qs),
            "failed_critical": [x for q in qs for x in q["failed_critical"]],
            "failed_warning": [x for q in qs for x in q["failed_warning"]],
        }
    windows = [r.window for r in reports]
    out["window"] = windows[0] if len(windows) == 1 else {r.source: r.window for r in reports}
    return out


def _print_reports(reports: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    for r in reports:
        t = Table(title=f"footprint ingest: {r.source} ({r.mode}, {r.status})",
                  title_justify="left", show_header=False, box=None, padding=(0, 2))
        t.add_column(style="bold")
        t.add_column()
        since, until = r.window["since"] or "the beginning", r.window["until"] or "the end"
        t.add_row("window (stored)", f"{since} .. {until}")
        t.add_row("read", f"{r.read:,} in {r.pages:,} pages, {r.retries} retries, "
                  f"{r.seconds:.1f} s")
        t.add_row("written", f"{r.written:,} into {r.partitions} date partitions")
        t.add_row("rejected", f"{r.rejected:,}" + (" (kept in raw/ with the reason: " + ", ".join(
            f"{k} {v}" for k, v in sorted(r.rejected_by_reason.items())) + ")"
            if r.rejected_by_reason else ""))
        t.add_row("duplicates", f"{r.duplicates:,}")
        if r.outside_window:
            t.add_row("outside window", f"{r.outside_window:,}")
        t.add_row("watermark", f"{r.watermark_before or '-'} -> {r.watermark_after or '-'}")
        if r.consistent_through:
            t.add_row("consistent through", r.consistent_through)
        v = r.verification
        if v is None or v.get("status") == "skipped":
            t.add_row("verification", (v or {}).get("message") or "skipped")
        else:
            t.add_row("verified", f"{v['verified']:,} ({v['published']:,} published, "
                      f"{v['voided']:,} voided)")
            t.add_row("quarantined", f"{v['quarantined']:,}" + (" (" + ", ".join(
                f"{k} {n}" for k, n in sorted(v["quarantined_by_reason"].items())) + ")"
                if v["quarantined_by_reason"] else ""))
            if v.get("quality"):
                t.add_row("quality", v["quality"]["message"])
        c.print(t)
        c.print()


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def _progress(as_json: bool) -> Any:
    """A progress display on standard error when it is a terminal and --json is off."""
    if as_json or not sys.stderr.isatty():
        return _NoBar()
    from rich.console import Console
    from rich.progress import (
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class _RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:,.0f}/s" if task.speed else "-/s")

    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[read]:,} read"), TextColumn("{task.fields[rejected]:,} rejected"),
        _RateColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=False,
    )


@app.command()
def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Per source: watermark, Consistent-Through, last run and its counts, rows stored; with
    [authority] configured, the delivery ledger too (records per status, the last delivery)."""
    from pipelines.store.state import StateStore
    from pipelines.store.zones import Zones

    settings = _settings(config, as_json)
    state = StateStore(settings.state_url)
    zones = Zones(settings.storage_root)
    rows = []
    try:
        for s in settings.sources:
            st = state.get(s.name)
            runs = state.runs(s.name, limit=1)
            last = runs[0] if runs else None
            rows.append({
                "source": s.name, "kind": s.kind, "enabled": s.enabled,
                "watermark": st.watermark.isoformat() if st.watermark else None,
                "consistent_through": st.consistent_through.isoformat()
                if st.consistent_through else None,
                "normalised_rows": zones.count_normalised(s.name),
                "partitions": len(zones.partition_dates(s.name)),
                "last_run": None if last is None else {
                    "run_id": last["run_id"], "mode": last["mode"], "status": last["status"],
                    "started_at": last["started_at"].isoformat(),
                    "finished_at": last["finished_at"].isoformat()
                    if last["finished_at"] else None,
                    "counts": last["counts"], "error": last["error"],
                },
            })
        delivery = None
        if settings.authority is not None:
            from pipelines.deliver.ledger import Ledger

            book = Ledger(state)
            last_runs = book.runs(1)
            delivery = {"endpoint": settings.authority.endpoint,
                        "records": book.status_counts(),
                        "last_run": last_runs[0] if last_runs else None}
    finally:
        state.close()
    if as_json:
        print(json.dumps({"storage_root": str(settings.storage_root), "sources": rows,
                          "delivery": delivery}, ensure_ascii=False, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    c = Console()
    c.print(f"[bold]footprint status[/] ({settings.storage_root})")
    for r in rows:
        t = Table(title=f"{r['source']} ({r['kind']}{'' if r['enabled'] else ', disabled'})",
                  title_justify="left", show_header=False, box=None, padding=(0, 2))
        t.add_column(style="bold")
        t.add_column()
        t.add_row("watermark", r["watermark"] or "- (never read incrementally)")
        t.add_row("consistent through", r["consistent_through"] or "-")
        t.add_row("rows stored", f"{r['normalised_rows']:,} in {r['partitions']} partitions")
        lr = r["last_run"]
        if lr:
            cnt = lr.get("counts") or {}
            t.add_row("last run", f"{lr['status']} ({lr['mode']}), started {lr['started_at']}")
            t.add_row("last run counts", ", ".join(
                f"{k} {cnt[k]:,}" for k in ("read", "written", "rejected", "duplicates")
                if k in cnt) or "-")
            if lr.get("error"):
                t.add_row("last error", lr["error"])
        else:
            t.add_row("last run", "never")
        c.print(t)
    if delivery is not None:
        t = Table(title=f"delivery to {delivery['endpoint']}", title_justify="left",
                  show_header=False, box=None, padding=(0, 2))
        t.add_column(style="bold")
        t.add_column()
        t.add_row("records", ", ".join(f"{v:,} {k}" for k, v in
                                        sorted(delivery["records"].items())) or "none yet")
        lr = delivery["last_run"]
        if lr:
            cnt = lr.get("counts") or {}
            when = f"{lr['started_at']:%Y-%m-%d %H:%M:%S}"
            t.add_row("last delivery", f"{lr['status']}, started {when} UTC")
            t.add_row("last counts", ", ".join(f"{k} {cnt[k]:,}" for k in (
                "new", "changed", "deleted", "unchanged", "failed") if k in cnt) or "-")
            if lr.get("error"):
                t.add_row("last error", lr["error"])
        else:
            t.add_row("last delivery", "never")
        c.print(t)



@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder for roster.csv, catalogue.csv and "
                                      "statements.ndjson.gz.")] = Path("data/generated"),
    seed: Annotated[int, typer.Option(help="Same seed, same university, same bytes.")] = 187,
    students: Annotated[int, typer.Option(min=1)] = 300,
    disciplines: Annotated[int, typer.Option(min=1)] = 24,
    statements: Annotated[int, typer.Option(min=0)] = 20_000,
    start: Annotated[str, typer.Option(help="First timestamp (ISO date).")] = "2026-09-01",
    end: Annotated[str, typer.Option(help="End of the timestamps (exclusive).")] = "2026-12-31",
    clean: Annotated[bool, typer.Option(
        "--clean", help="No trouble at all (every statement valid, unique, known).")] = False,
    trouble: Annotated[list[str] | None, typer.Option(
        help="Share of one kind of trouble, KIND=FRACTION (repeatable). Kinds: malformed_json, "
        "invalid, unknown_learner, exact_duplicate, conflicting_duplicate, voiding, "
        "late_arrival.")] = None,
    lrs: Annotated[str | None, typer.Option(
        help="POST the statements to this LRS (xAPI base URL) instead of writing a file.",
    )] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a synthetic university: roster, catalogue and xAPI statements with tunable trouble.

    Statements look like what Moodle (logstore_xapi) and cmi5 players send, with Kazakh and
    Russian names and titles. LRS credentials (any, for the local LRS) come from
    FOOTPRINT_GENERATE_LRS_USERNAME / _PASSWORD.
    """
    import dataclasses
    import os

    from pipelines.generate import TroubleShares, run_generate

    shares = TroubleShares.none() if clean else TroubleShares()
    for item in trouble or []:
        k, _, v = item.partition("=")
        if not hasattr(shares, k):
            raise typer.BadParameter(f"unknown kind {k!r}", param_hint="--trouble")
        try:
            shares = dataclasses.replace(shares, **{k: float(v)})
        except ValueError:
            raise typer.BadParameter(f"{v!r} is not a number", param_hint="--trouble") from None
    t0, t1 = _time(start, "--start"), _time(end, "--end")
    assert t0 and t1
    auth = (os.environ.get("FOOTPRINT_GENERATE_LRS_USERNAME", "footprint"),
            os.environ.get("FOOTPRINT_GENERATE_LRS_PASSWORD", "footprint"))
    with _progress(as_json) as bar:
        task = bar.add_task("generate", total=statements, read=0, rejected=0) if bar else None

        def tick(n: int) -> None:
            if bar is not None:
                bar.update(task, completed=n, read=n)

        try:
            summary = run_generate(
                out, seed=seed, students=students, disciplines=disciplines,
                statements=statements, trouble=shares, start=t0, end=t1,
                lrs_endpoint=lrs, lrs_auth=auth if lrs else None, progress=tick,
            )
        except Exception as exc:  # an LRS that is down, a folder we cannot write
            _err(f"generate failed: {exc}", as_json)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        from rich.console import Console

        Console().print_json(json.dumps(summary, ensure_ascii=False, default=str))


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A file of statements: a JSON array, a single "
                                         "statement, an LRS result or NDJSON; gzip or not.")],
    xapi_version: Annotated[str, typer.Option(
        "--xapi-version", help="Rules for statements without a 'version' property: 1.0.3 or "
        "2.0.0. A statement's own 'version' decides for it.")] = "1.0.3",
    as_json: JsonOpt = False,
) -> None:
    """Check statements against the xAPI specification before sending them anywhere.

    Prints a verdict per statement, in input order, with each problem's reason code and JSON
    path; with --json, a JSON array of {"index", "valid", "reasons"}. Exits 1 when any statement
    is invalid.
    """
    from pipelines.config import SourceSettings, parse_duration
    from pipelines.sources.base import FatalSourceError, Window, split_block
    from pipelines.sources.xapi_file import XapiFileSource
    from pipelines.xapi.validate import validate_bytes

    if xapi_version not in ("1.0.3", "2.0.0"):
        raise typer.BadParameter(f"{xapi_version!r} is not 1.0.3 or 2.0.0",
                                 param_hint="--xapi-version")
    src = XapiFileSource(SourceSettings(
        name="validate", kind="xapi-file", endpoint=None, path=str(path),
        xapi_version=xapi_version, page_size=1, lookback=parse_duration(0),
        connect_timeout=1, read_timeout=1, max_attempts=1, backoff_base=1, backoff_cap=1,
        enabled=True))
    verdicts: list[dict[str, Any]] = []
    try:
        for page in src.pages(Window(None, None)):
            statements = (split_block(page.block, page.first_line)[0]
                          if page.block is not None else page.statements)
            for raw in statements:
                problems = validate_bytes(raw, xapi_version)
                verdicts.append({
                    "index": len(verdicts), "valid": not problems,
                    "reasons": [{"code": p.code, "path": p.path, "detail": p.detail}
                                for p in problems],
                })
    except FatalSourceError as exc:
        _err(f"cannot read {path}: {exc.cause}", as_json)
    invalid = sum(not v["valid"] for v in verdicts)
    if as_json:
        print(json.dumps(verdicts, ensure_ascii=False))
    else:
        from rich.console import Console

        c = Console(highlight=False)
        for v in verdicts:
            if v["valid"]:
                c.print(f"#{v['index']}: [green]valid[/]")
                continue
            c.print(f"#{v['index']}: [red]invalid[/]")
            for r in v["reasons"]:
                c.print(f"    {r['code']} at {r['path']}: {r['detail']}")
        c.print(f"{len(verdicts) - invalid} valid, {invalid} invalid, of {len(verdicts)} "
                f"statements in {path}")
    if invalid:
        raise typer.Exit(1)


@quarantine_app.command("list")
def quarantine_list(
    config: ConfigOpt = None,
    reason: Annotated[str | None, typer.Option(
        help="Only records with this reason code (e.g. unknown-learner).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the quarantined records: source, window, statement id, reasons and detail."""
    from pipelines.verify.stage import list_quarantine

    settings = _settings(config, as_json)
    t = list_quarantine(settings, reason)
    rows = [{k: r[k] for k in ("source", "window", "statement_id", "reasons", "detail",
                               "first_quarantined_at", "run_id")} for r in t.to_pylist()]
    by: dict[str, int] = {}
    for r in rows:
        for k in r["reasons"]:
            by[k] = by.get(k, 0) + 1
    if as_json:
        print(json.dumps({"count": len(rows), "by_reason": by, "records": rows},
                         ensure_ascii=False, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"footprint quarantine: {len(rows):,} records", title_justify="left")
    for col in ("source", "statement id", "reasons", "detail"):
        tab.add_column(col)
    for r in rows:
        tab.add_row(r["source"], r["statement_id"] or "-", ", ".join(r["reasons"]), r["detail"])
    Console().print(tab)


@quarantine_app.command("replay")
def quarantine_replay(
    config: ConfigOpt = None,
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="Only this source (repeat for several). Default: every source.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-verify quarantined records (after a roster or catalogue fix).

    Records that verify now are published to the verified footprint and leave quarantine once;
    the others stay, with their reasons as they are now. Conflicting duplicates (another body
    of a statement id that already has one) are never released by a replay: the first body
    received owns the id, and the conflict waits until a person corrects the source and the
    window is ingested again; the report counts them as conflicts_held.
    """
    import uuid

    from pipelines.config import ConfigError
    from pipelines.verify.stage import VerifyError, replay_quarantine

    settings = _settings(config, as_json)
    if not settings.verifies:
        _err(f"{settings.path}: set [reference] roster and catalogue to replay quarantine",
             as_json)
    names = source or [s.name for s in settings.sources]
    reports: list[dict[str, Any]] = []
    failed: str | None = None
    for name in names:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        try:
            reports.append(replay_quarantine(settings, name, run_id).as_dict())
        except (VerifyError, ConfigError) as exc:
            failed = str(exc)
            rep = getattr(exc, "report", None)
            if rep is not None:
                reports.append(rep.as_dict())
            break
        except Exception as exc:
            from pipelines.store.state import LockHeld

            if not isinstance(exc, LockHeld):
                raise
            failed = f"source {name!r}: an ingestion is running: {exc}"
            break
    summary = {k: sum(int(r.get(k) or 0) for r in reports)
               for k in ("read", "replayed", "published", "quarantined", "voided")}
    if as_json:
        out = {"status": "failed" if failed else "succeeded", **summary, "sources": reports}
        if failed:
            out["error"] = failed
        print(json.dumps(out, ensure_ascii=False, default=str))
    else:
        from rich.console import Console

        for r in reports:
            Console().print(f"[bold]{r['source']}[/]: {r.get('message') or r.get('error')}",
                            highlight=False)
    if failed:
        if not as_json:
            _err(failed, False)
        raise typer.Exit(1)


def _delivery_progress(as_json: bool) -> tuple[Any, Any]:
    """(context manager, callback(stage, done, total)) showing a bar on a terminal."""
    if as_json or not sys.stderr.isatty():
        return _NoBar(), None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(stderr=True))
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done)

    return bar, update


@app.command()
def deliver(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Build and compare only: say what "
                                          "would be sent; send nothing, change nothing.")] = False,
    allow_mass_delete: Annotated[bool, typer.Option(
        "--allow-mass-delete", help="Delete even when that takes more than half of the "
        "authority's copy (refused by default: it is what a wrong storage root looks like).")
    ] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send the updated online-learning data to the authorised body (paragraph 29).

    Builds one record per learner x discipline x academic period from the verified footprint,
    compares each with what the authority last acknowledged (the ledger in the state database)
    and sends only what is new or changed, in batches of whole records; records with no verified
    evidence left are deleted logically; what was sent is read back ([authority] readback:
    a sample of every batch by default, the whole batch when it differs). Needs [institution]
    code, [authority] endpoint and FOOTPRINT_AUTHORITY_USERNAME/PASSWORD (or _TOKEN).

    Prints the counts new, changed, deleted, unchanged and failed. Exit code 1 when the run
    stops (authority unreachable, credentials refused) or leaves records failed; run it again:
    it resumes from the ledger.

    \b
    Example:
      export FOOTPRINT_AUTHORITY_USERNAME=980140000005 FOOTPRINT_AUTHORITY_PASSWORD=...
      footprint deliver --dry-run     # what would go
      footprint deliver               # send it
      footprint reconcile             # prove the authority's copy equals the footprint
    """
    settings = _settings(config, as_json)
    from pipelines.config import ConfigError
    from pipelines.deliver.stage import DeliveryError
    from pipelines.deliver.stage import deliver as run_delivery
    from pipelines.store.state import LockHeld

    bar, update = _delivery_progress(as_json)
    try:
        with bar:
            report = run_delivery(settings, dry_run=dry_run, progress=update,
                                  allow_mass_delete=allow_mass_delete)
    except (ConfigError, LockHeld) as exc:
        _err(str(exc), as_json)
    except DeliveryError as exc:
        _err(str(exc), as_json, exc.report.as_dict() if exc.report else None)
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, default=str))
    else:
        from rich.console import Console

        out = Console()
        verb = "would send" if dry_run else "delivered"
        out.print(f"[bold]{verb}[/]: {report.new:,} new, {report.changed:,} changed, "
                  f"{report.deleted:,} deleted, {report.unchanged:,} unchanged, "
                  f"{report.failed:,} failed  ({report.records:,} records from "
                  f"{report.statements:,} verified statements)", highlight=False)
        if not dry_run:
            out.print(f"{report.batches} batches, {report.requests} requests, {report.retries} "
                      f"retries, {report.read_back:,} read back "
                      f"({report.read_back_mismatches} differed), {report.seconds:.1f} s; "
                      f"run {report.run_id}", highlight=False)
        for f in report.failures[:10]:
            out.print(f"  [red]failed[/] {f['record_id']}: {f['reason']}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def reconcile(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="Differences to list (all are counted).")] = 100,
    no_mark: Annotated[bool, typer.Option("--no-mark", help="Only report: do not mark drifted "
                                          "records in the ledger.")] = False,
) -> None:
    """Read the authority's copy back and report every difference from the verified footprint.

    Missing (the footprint gives it, the authority does not hold it), unexpected (the authority
    holds a live record the footprint no longer gives) and different (the fields that differ are
    named). Never writes to the authority; marks drifted records in the ledger so that the next
    footprint deliver re-sends or deletes them (--no-mark: report only). Exit code 1 on drift.
    """
    settings = _settings(config, as_json)
    from pipelines.config import ConfigError
    from pipelines.deliver.authority import AuthorityError
    from pipelines.deliver.reconcile import reconcile as run_reconcile
    from pipelines.store.state import LockHeld

    try:
        report = run_reconcile(settings, limit=limit, mark=not no_mark)
    except (ConfigError, AuthorityError, LockHeld) as exc:
        _err(str(exc), as_json)
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, default=str))
    else:
        from rich.console import Console

        out = Console()
        colour = "green" if not report.drifted else "red"
        out.print(f"[bold {colour}]drift: {report.drifted:,}[/] ({report.missing:,} missing, "
                  f"{report.unexpected:,} unexpected, {report.different:,} different); "
                  f"{report.matching:,} of {report.expected:,} records match; the authority "
                  f"holds {report.held:,} live and {report.deleted_at_authority:,} deleted",
                  highlight=False)
        for d in report.drift[:limit]:
            extra = f": {', '.join(d.fields)}" if d.fields else ""
            out.print(f"  {d.kind:<10} {d.record_id}{extra}", highlight=False)
        if report.marked:
            out.print(f"{report.marked:,} records marked in the ledger: footprint deliver "
                      f"repairs them", highlight=False)
    if report.drifted:
        raise typer.Exit(1)


@app.command()
def ledger(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="Batches to show, newest first.")] = 20,
    failed: Annotated[bool, typer.Option("--failed", help="List the records kept as failed, "
                                         "with the authority's reason.")] = False,
) -> None:
    """Recent delivery runs and batches and their fate; records per status.

    Every request that changes the authority is written to the ledger before it is sent, then
    closed with the answer: acknowledged, partial (some records refused), failed, or interrupted
    (the run died; the next run re-sent current content).
    """
    settings = _settings(config, as_json)
    from pipelines.deliver.ledger import Ledger
    from pipelines.store.state import StateStore

    state = StateStore(settings.state_url)
    try:
        book = Ledger(state)
        data: dict[str, Any] = {"records": book.status_counts(), "runs": book.runs(5),
                                "batches": book.batches(limit)}
        if failed:
            data["failed"] = [{"record_id": r, "reason": why} for r, why in book.failed(200)]
    finally:
        state.close()
    if as_json:
        print(json.dumps(data, ensure_ascii=False, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    out = Console()
    out.print("records: " + (", ".join(f"{v:,} {k}" for k, v in sorted(data["records"].items()))
                             or "none yet"), highlight=False)
    runs = Table("run", "started (UTC)", "status", "new", "changed", "deleted", "unchanged",
                 "failed", title="delivery runs")
    for r in data["runs"]:
        c = r["counts"] or {}
        runs.add_row(r["run_id"], f"{r['started_at']:%Y-%m-%d %H:%M:%S}", r["status"],
                     *(str(c.get(k, "")) for k in ("new", "changed", "deleted", "unchanged",
                                                   "failed")))
    out.print(runs)
    batches = Table("batch", "run", "kind", "records", "attempts", "status", "answer",
                    title="batches (newest first)")
    for b in data["batches"]:
        batches.add_row(b["batch_id"][:8], b["run_id"][-8:], b["kind"], str(b["records"]),
                        str(b["attempts"]), b["status"], (b["answer"] or "")[:60])
    out.print(batches)
    for f in data.get("failed", []):
        out.print(f"  [red]failed[/] {f['record_id']}: {f['reason']}", highlight=False)


@lrs_app.command("serve")
def lrs_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8200,
    data: Annotated[Path, typer.Option(help="Folder for the LRS's files and log.")] = Path(
        "data/lrs"),
) -> None:
    """Run the local LRS (Learning Locker xapi-statements) on 127.0.0.1 until Ctrl-C."""
    import signal
    import time

    from pipelines.local.lrs import LocalLRS, LocalLRSError

    lrs = LocalLRS(data, port=port)
    try:
        lrs.start()
    except LocalLRSError as exc:
        _err(str(exc), False)
    print(f"LRS ready at {lrs.endpoint} (pid {lrs.pid}); Ctrl-C stops it", file=sys.stderr)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        lrs.stop()


@receiver_app.command("serve")
def receiver_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free one).")] = 8300,
    db: Annotated[Path, typer.Option(help="SQLite file of everything received (kept across "
                                     "restarts).")] = Path("data/receiver/receiver.db"),
    entity: Annotated[str, typer.Option(help="The entity code it serves (?entity=...).")] = (
        "ONLINE_LEARNING"),
    username: Annotated[str | None, typer.Option(
        help="Basic user it accepts.", envvar="FOOTPRINT_RECEIVER_USERNAME",
        show_envvar=True)] = None,
    password: Annotated[str | None, typer.Option(
        help="Basic password it accepts (prefer the environment variable).",
        envvar="FOOTPRINT_RECEIVER_PASSWORD", show_envvar=True)] = None,
    token: Annotated[str | None, typer.Option(
        help="Bearer token it accepts.", envvar="FOOTPRINT_RECEIVER_TOKEN",
        show_envvar=True)] = None,
    error_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Fraction of API requests answered 500 or 503.")] = 0.0,
    rate_limit_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Fraction answered 429 with Retry-After.")] = 0.0,
    retry_after: Annotated[int, typer.Option(
        min=0, help="Seconds in the Retry-After of a 429.")] = 1,
    latency_ms: Annotated[float, typer.Option(
        min=0.0, help="Delay before every API answer.")] = 0.0,
    drop_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Fraction of connections closed without an answer (half of "
        "them after the request was applied).")] = 0.0,
    reject_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Fraction of the records of a save answered in failedRecords "
        "and not stored.")] = 0.0,
    ignore_field: Annotated[list[str] | None, typer.Option(
        help="A contract field it treats as unknown, i.e. drops silently (repeatable).")] = None,
    no_gzip: Annotated[bool, typer.Option(
        "--no-gzip", help="Answer gzip bodies with 415.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the fault draws (repeatable "
                                             "runs).")] = None,
    verbose: Annotated[bool, typer.Option(help="One line per request on stderr.")] = False,
) -> None:
    """Run the reference receiver, a local stand-in for the authority's API, until Ctrl-C.

    The Unified Higher Education Platform (ЕПВО) publishes no test system, so this serves the
    API footprint speaks (pipelines/receiver/API.md) on 127.0.0.1 only, with everything it
    receives kept in --db (SQLite), so deliver and reconcile can run end to end here.

    It keeps the real API's traps: a save is a full replace (a field left out is stored as
    null); unknown fields are dropped silently with 200 (read back what you wrote); records
    that fail come back in failedRecords of a 200; deletes are logical.

    Faults make it a bad day at the authority: 500/503, 429 with Retry-After, slow answers,
    dropped connections (half of them after the save was applied: the client never hears it
    succeeded), rejected records, ignored fields (a server on an older contract), no gzip.
    --seed makes them repeatable; POST /_admin/faults changes them while it runs; GET
    /_admin/stats counts requests, records and injected faults; GET /health says it is up.

    Credentials: --username/--password or --token; with none, any Basic or Bearer credential
    passes, but a request without one is 401.

    \b
    Example:
      export FOOTPRINT_RECEIVER_USERNAME=980140000005 FOOTPRINT_RECEIVER_PASSWORD=secret
      footprint receiver serve --drop-rate 0.1 --reject-rate 0.05 --seed 7
    and in footprint.toml:
      [authority]
      endpoint = "http://127.0.0.1:8300/isvuz/api/"
    """
    import sqlite3

    from pipelines.receiver import Credentials, FaultSettings, FaultSettingsError, ReceiverConfig
    from pipelines.receiver import serve as run_receiver

    try:
        faults = FaultSettings().updated({
            "error_rate": error_rate, "rate_limit_rate": rate_limit_rate,
            "retry_after": retry_after, "latency_ms": latency_ms, "drop_rate": drop_rate,
            "reject_rate": reject_rate, "ignore_fields": list(ignore_field or []),
            "accept_gzip": not no_gzip, "seed": seed})
        run_receiver(ReceiverConfig(
            db=db, port=port, entity=entity, faults=faults, verbose=verbose,
            credentials=Credentials.from_env(username, password, token)))
    except FaultSettingsError as exc:
        _err(str(exc), False)
    except (OSError, sqlite3.Error) as exc:
        _err(f"the receiver cannot start on 127.0.0.1:{port} with {db}: {exc}", False)


# -- backfill: the ingest DAG's windows without a scheduler (issue 5) ------------------------------
@app.command()
def backfill(
    from_: Annotated[str, typer.Option(
        "--from", help="Start of the period (ISO date or time, UTC), rounded down to the "
        "interval grid.")],
    to: Annotated[str, typer.Option(
        "--to", help="End of the period (exclusive), rounded up to the interval grid.")],
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="Only this source (repeat for several). Default: every enabled "
        "source.")] = None,
    interval: Annotated[str | None, typer.Option(
        help="The data interval (ISO 8601: PT15M, PT1H, P1D...). Default: "
        "$FOOTPRINT_INGEST_INTERVAL or PT1H, as the footprint_ingest DAG.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run footprint_ingest's data intervals over [--from, --to) here, without a scheduler.

    Per window and source the same steps as the DAG run for that interval: extract (the
    stored-time window (start, end] into the raw and normalised zones, replacing that window's
    output; the watermark does not move), verify (verified and quarantine zones, after the Great
    Expectations check) and publish; then one line per window says what it did. Windows that
    have not ended yet are skipped, as Airflow does. The first failure stops the run (exit 1);
    run it again: every window is replaced, never appended.

    \b
    The same windows under Airflow (logical dates: the interval starts, ends included):
      airflow backfill create --dag-id footprint_ingest
        --from-date <FROM rounded down> --to-date <TO rounded up, minus one interval>
    """
    from pipelines import orchestrate

    settings = _settings(config, as_json)
    try:
        schedule = orchestrate.ingest_schedule(interval)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--interval") from None
    t_from, t_to = _time(from_, "--from"), _time(to, "--to")
    assert t_from is not None and t_to is not None
    if t_from >= t_to:
        raise typer.BadParameter(f"{from_} is not before --to {to}", param_hint="--from")
    names = source or [s.name for s in settings.sources if s.enabled]
    if not names:
        _err(f"{settings.path}: no sources configured; add a [[sources]] table", as_json)
    from pipelines.config import ConfigError

    try:
        for name in names:
            settings.source(name)
    except ConfigError as exc:
        _err(str(exc), as_json)
    from pipelines.deliver.stage import DeliveryError
    from pipelines.ingest import IngestError
    from pipelines.store.state import LockHeld
    from pipelines.verify.stage import VerifyError

    expected = (IngestError, VerifyError, ConfigError, LockHeld, DeliveryError,
                orchestrate.OrchestrationError)
    now = datetime.now(UTC)
    done: list[dict[str, Any]] = []
    failed: str | None = None
    keys = ("read", "written", "rejected", "duplicates", "verified", "published", "quarantined",
            "voided")
    totals = dict.fromkeys(keys, 0)
    for start, end in orchestrate.windows(t_from, t_to, schedule.step):
        w: dict[str, Any] = {"start": start.isoformat().replace("+00:00", "Z"),
                             "end": end.isoformat().replace("+00:00", "Z"), "sources": []}
        if end > now:
            w["status"] = "skipped"
            w["reason"] = "not over yet: the DAG runs an interval once it has ended"
        else:
            for name in names:
                try:
                    r = orchestrate.ingest_window(settings.path, name, start, end)
                except expected as exc:
                    failed = f"window {w['start']} .. {w['end']}, source {name!r}: {exc}"
                    w["sources"].append({"source": name, "status": "failed", "error": str(exc)})
                    break
                w["sources"].append({k: v for k, v in r.items() if k not in ("extract",
                                                                              "verify")})
                for k in keys:
                    totals[k] += int(r.get(k) or 0)
            w["status"] = "failed" if failed else "succeeded"
        done.append(w)
        if not as_json:
            _print_backfill_window(w)
        if failed:
            break
    if as_json:
        out = {"status": "failed" if failed else "succeeded", "interval": schedule.interval,
               "from": done[0]["start"] if done else None, "to": done[-1]["end"] if done
               else None, "sources": names, **totals, "windows": done}
        if failed:
            out["error"] = failed
        print(json.dumps(out, ensure_ascii=False, default=str))
    elif not failed:
        ran = sum(1 for w in done if w["status"] == "succeeded")
        print(f"{ran} windows of {schedule.interval}: read {totals['read']:,}, written "
              f"{totals['written']:,}, verified {totals['verified']:,}, published "
              f"{totals['published']:,}, quarantined {totals['quarantined']:,}",
              file=sys.stderr)
    if failed:
        if not as_json:
            _err(failed, False)
        raise typer.Exit(1)


def _print_backfill_window(w: dict[str, Any]) -> None:
    head = f"{w['start']} .. {w['end']}"
    if w["status"] == "skipped":
        print(f"{head}  skipped: {w['reason']}")
        return
    for r in w["sources"]:
        if r["status"] == "failed":
            print(f"{head}  {r['source']}: failed: {r['error']}")
        elif r["status"] == "published":
            print(f"{head}  {r['source']}: read {r['read']:,}, written {r['written']:,}, "
                  f"rejected {r['rejected']:,}, duplicates {r['duplicates']:,}; verified "
                  f"{r['verified']:,}, published {r['published']:,}, quarantined "
                  f"{r['quarantined']:,}, voided {r['voided']:,}")
        else:
            print(f"{head}  {r['source']}: read {r['read']:,}, written {r['written']:,}, "
                  f"rejected {r['rejected']:,}; verification {r['status']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
