"""
### footprint_quality: Great Expectations over the last days of the verified footprint

Daily, at 04:00 UTC (a cron *data-interval* timetable: each run checks the days up to its
`data_interval_end`, never "now", so a re-run or a backfill checks the same rows).

**check**: `pipelines.orchestrate.quality` - the suite `expectations/verified_footprint.json`
runs inside the task (Great Expectations is never imported while the DAG is parsed) over the
rows of the verified footprint stored in the `days` before the interval's end (the DAG param
`days`, 7 by default), together with the quarantined share of the same period. The results are
saved under `<storage root>/reports/quality/quality-<end>-<days>d.json` (what the dashboard
reads), and Data Docs are built under `<storage root>/reports/data_docs/` when `[quality]
data_docs = true`. A failed critical check fails the task (after the results are saved).

The dashboard build joins this DAG as a task once the dashboard exists.
Retries: 3, exponential backoff from 1 minute; a final failure logs and notifies (`[alerts]`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from pipelines import orchestrate as fp  # stdlib only at import; GX loads inside the task


@dag(
    dag_id="footprint_quality",
    schedule=CronDataIntervalTimetable("0 4 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=fp.task_defaults(),
    params={"days": Param(7, type="integer", minimum=1, maximum=366,
                          description="Days of the verified footprint to check")},
    tags=["footprint", "quality", "great-expectations"],
    doc_md=__doc__,
    description="Great Expectations over the last days of the verified footprint, daily",
)
def footprint_quality() -> None:
    @task(multiple_outputs=False)
    def check() -> dict[str, Any]:
        ctx: Any = get_current_context()
        return fp.quality(None, ctx["data_interval_end"], int(ctx["params"]["days"]))

    check()


footprint_quality()
