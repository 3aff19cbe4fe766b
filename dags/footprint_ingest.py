"""
### footprint_ingest: xAPI statements -> the verified footprint, one data interval per run

One run per **data interval** (a cron *data-interval* timetable in UTC, so every task gets a real
`[data_interval_start, data_interval_end)`; a plain cron schedule would give a zero-length one).
The interval is **hourly** by default; set `FOOTPRINT_INGEST_INTERVAL` (an ISO 8601 duration that
tiles a day: `PT15M`, `PT1H`, `PT6H`, `P1D`...) in the environment of the scheduler and the
DAG processor to change it. `footprint backfill --interval` reads the same variable.

Per enabled source in `footprint.toml` (`$FOOTPRINT_CONFIG`), by dynamic task mapping:

1. **extract**: `pipelines.orchestrate.extract` - the source is read over the stored-time window
   `(start, end]` into the raw and normalised zones; the window's previous output is replaced
   and the incremental watermark is left alone (a stateless backfill of exactly that window).
2. **verify**: `pipelines.orchestrate.verify` - under the source's lock, the window is verified
   against the roster and the catalogue, voids are applied, the Great Expectations gate runs,
   and, if it passes, the window's rows of the **verified** and **quarantine** zones are
   replaced (this is where the zones are written). A failed critical check fails the task and
   publishes nothing.
3. **publish**: records what the interval changed (read, verified, published, quarantined) and
   emits the Asset event `footprint_verified` (`x-footprint://verified-footprint`), which
   schedules `footprint_deliver`. Skipped (no event) when `[reference]` is not configured.

Every step replaces, never appends: clearing a run (or an `airflow backfill create` with
`--reprocess-behavior completed`) gives the same footprint. Consecutive intervals tile the time
line: `(start, end]` at millisecond precision.

Credentials: a source's `connection = "<conn_id>"` is looked up with `Connection.get` (env,
metadata database or secrets backend); `FOOTPRINT_SOURCE_<NAME>_*` variables win when set.
Retries: 3, exponential backoff from 1 minute; a final failure logs and notifies (`[alerts]`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import (
    Asset,
    Connection,
    CronDataIntervalTimetable,
    dag,
    get_current_context,
    task,
)

from pipelines import orchestrate as fp  # stdlib only at import; stages load inside the tasks

SCHEDULE = fp.ingest_schedule()  # $FOOTPRINT_INGEST_INTERVAL or PT1H: an env read, no I/O
VERIFIED_FOOTPRINT = Asset(*fp.VERIFIED_ASSET, group="footprint")


@dag(
    dag_id="footprint_ingest",
    schedule=CronDataIntervalTimetable(SCHEDULE.cron, timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=fp.task_defaults(),
    tags=["footprint", "ingest", "xapi"],
    doc_md=__doc__,
    description=f"xAPI -> verified footprint, every {SCHEDULE.interval} (data intervals, UTC)",
)
def footprint_ingest() -> None:
    @task(multiple_outputs=False)
    def sources() -> list[str]:
        return fp.list_sources(None)

    @task(multiple_outputs=False, map_index_template="{{ footprint_source }}")
    def extract(source: str) -> dict[str, Any]:
        ctx: Any = get_current_context()
        ctx["footprint_source"] = source
        start, end = ctx["data_interval_start"], ctx["data_interval_end"]
        if start is None or end is None or start >= end:
            raise ValueError(f"footprint_ingest needs a data interval, got [{start}, {end})")
        return fp.extract(None, source, start, end,
                          fp.fetch_connections(None, "sources", Connection.get))

    @task(multiple_outputs=False, map_index_template="{{ footprint_source }}")
    def verify(extracted: dict[str, Any]) -> dict[str, Any]:
        ctx: Any = get_current_context()
        ctx["footprint_source"] = extracted["source"]
        verified = fp.verify(None, extracted["source"], extracted["start"], extracted["end"],
                             extracted["run_id"])
        return {"extract": extracted, "verify": verified}

    @task(multiple_outputs=False, outlets=[VERIFIED_FOOTPRINT],
          map_index_template="{{ footprint_source }}")
    def publish(result: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        ctx: Any = get_current_context()
        ctx["footprint_source"] = result["extract"]["source"]
        summary = fp.publish(result["extract"], result["verify"])
        if summary["status"] != "published":
            raise AirflowSkipException(summary.get("message") or summary["status"])
        ctx["outlet_events"][VERIFIED_FOOTPRINT].extra = summary
        return summary

    publish.expand(result=verify.expand(extracted=extract.expand(source=sources())))


footprint_ingest()
