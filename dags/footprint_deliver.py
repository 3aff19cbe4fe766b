"""
### footprint_deliver: the verified footprint -> the authority (paragraph 29)

Scheduled on the Asset `footprint_verified` (emitted by `footprint_ingest.publish` whenever an
interval changed the verified footprint; events that arrive together make one run) **or** daily
at 05:00 UTC as a safety run (an `AssetOrTimeSchedule`), so a missed event or a failed run is
repaired within a day.

1. **plan**: `pipelines.orchestrate.plan_delivery` - builds the delivered records from the
   verified footprint and compares them with the ledger: how many are new, changed, deleted,
   unchanged. Sends nothing.
2. **deliver**: `pipelines.orchestrate.deliver` - sends the new and changed records in batches
   (each written to the ledger before it is sent), deletes logically what lost its evidence,
   then **reads back** what was sent: a record counts as delivered only when the authority holds
   exactly its content. Records left failed fail the task; a retry resumes from the ledger.
3. **reconcile**: `pipelines.orchestrate.reconcile` - reads the authority's whole copy and
   compares it with the footprint; any drift (missing, unexpected, different) fails the task.
   On success it emits the Asset `footprint_authority_copy`.

Needs `[institution] code`, `[authority] endpoint` and `[reference]` in `footprint.toml`.
A run that would delete more than half of the records the authority holds is refused, as in
the CLI: check the footprint, then trigger this DAG once with the param `allow_mass_delete`
set to true (or run `footprint deliver --allow-mass-delete`). Scheduled runs never set it.
Credentials: `[authority] connection = "<conn_id>"` (looked up with `Connection.get`), or
`FOOTPRINT_AUTHORITY_USERNAME`/`_PASSWORD` (or `_TOKEN`), which win when set.
Retries: 3, exponential backoff from 1 minute; a final failure logs and notifies (`[alerts]`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    Connection,
    CronTriggerTimetable,
    Param,
    dag,
    get_current_context,
    task,
)

from pipelines import orchestrate as fp  # stdlib only at import; stages load inside the tasks

VERIFIED_FOOTPRINT = Asset(*fp.VERIFIED_ASSET, group="footprint")
AUTHORITY_COPY = Asset(*fp.AUTHORITY_ASSET, group="footprint")


@dag(
    dag_id="footprint_deliver",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 5 * * *", timezone="UTC"),
        assets=[VERIFIED_FOOTPRINT],
    ),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=fp.task_defaults(),
    params={"allow_mass_delete": Param(
        False, type="boolean",
        description="Deliver even when that deletes more than half of the records the "
                    "authority holds (after checking the footprint; a manual run only)")},
    tags=["footprint", "deliver", "authority"],
    doc_md=__doc__,
    description="verified footprint -> the authority: on every footprint update, and daily",
)
def footprint_deliver() -> None:
    @task(multiple_outputs=False)
    def plan() -> dict[str, Any]:
        return fp.plan_delivery(None)

    @task(multiple_outputs=False)
    def deliver(planned: dict[str, Any]) -> dict[str, Any]:
        ctx: Any = get_current_context()
        return fp.deliver(None, fp.fetch_connections(None, "authority", Connection.get),
                          allow_mass_delete=bool(ctx["params"]["allow_mass_delete"]))

    @task(multiple_outputs=False, outlets=[AUTHORITY_COPY])
    def reconcile(delivered: dict[str, Any]) -> dict[str, Any]:
        return fp.reconcile(None, fp.fetch_connections(None, "authority", Connection.get))

    reconcile(deliver(plan()))


footprint_deliver()
