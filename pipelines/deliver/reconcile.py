"""``footprint reconcile``: read the authority's copy back and report every difference.

The verified footprint is the truth; the authority's copy should equal the records built from it
(:mod:`pipelines.deliver.records`). Reconcile pages through everything the authority holds for
our entity and institution and reports, per record id:

- ``missing``: the footprint gives the record, the authority does not hold it (or holds it
  deleted);
- ``unexpected``: the authority holds a live record the footprint no longer gives;
- ``different``: both hold it, with other content — the fields that differ are named.

It never writes to the authority. Unless told not to (``mark=False``), it marks every drifted
record in the ledger (status ``drift``) so that the next ``footprint deliver`` re-sends or deletes
it even where the ledger believed it delivered: that is how drift gets repaired. ``updated_at``
is not compared (it is when content changed, not content).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.config import Settings
from pipelines.deliver import records as R
from pipelines.deliver.authority import AuthorityClient
from pipelines.deliver.ledger import Ledger
from pipelines.deliver.stage import build_records
from pipelines.store.state import StateStore


@dataclass
class Drift:
    record_id: str
    kind: str  # missing, unexpected, different
    fields: list[str] = field(default_factory=list)


@dataclass
class ReconcileReport:
    expected: int = 0  # records the footprint gives
    held: int = 0  # live records the authority holds for our institution
    deleted_at_authority: int = 0
    matching: int = 0
    missing: int = 0
    unexpected: int = 0
    different: int = 0
    marked: int = 0  # drifted records marked in the ledger for the next delivery
    seconds: float = 0.0
    drift: list[Drift] = field(default_factory=list)  # first 100
    drift_ids: list[str] = field(default_factory=list, repr=False)  # all of them

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("drift_ids")
        d["drifted"] = self.drifted
        return d

    @property
    def drifted(self) -> int:
        return self.missing + self.unexpected + self.different


def reconcile(settings: Settings, client: AuthorityClient | None = None,
              limit: int = 100, mark: bool = True) -> ReconcileReport:
    """Compare; under the ``deliver`` lock, so that no delivery changes either side meanwhile."""
    institution, authority = settings.delivery()
    started = time.perf_counter()
    state = StateStore(settings.state_url)
    own = client is None
    if client is None:
        client = AuthorityClient(authority, authority.credentials())
    try:
        with state.lock("deliver"):
            report = _compare(build_records(settings), institution, client, limit)
            if mark and report.drift_ids:
                report.marked = Ledger(state).mark_drift(
                    report.drift_ids, "reconcile found the authority's copy missing, different or "
                             "unexpected; the next delivery repairs it")
    finally:
        if own:
            client.close()
        state.close()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _compare(built: R.Built, institution: str, client: AuthorityClient,
             limit: int) -> ReconcileReport:
    report = ReconcileReport(expected=len(built))
    seen: set[str] = set()
    for rec in client.find_all():
        if rec.get("institution_code") != institution:
            continue
        rid = str(rec.get("record_id"))
        want = built.records.get(rid)
        if rec.get("deleted"):
            report.deleted_at_authority += 1
            continue
        report.held += 1
        seen.add(rid)
        if want is None:
            report.unexpected += 1
            report.drift_ids.append(rid)
            _note(report, Drift(rid, "unexpected"), limit)
        elif R.content_hash(rec) == want["content_hash"]:
            report.matching += 1
        else:
            report.different += 1
            report.drift_ids.append(rid)
            _note(report, Drift(rid, "different", R.differences(want, rec)), limit)
    for rid in sorted(set(built.records) - seen):
        report.missing += 1
        report.drift_ids.append(rid)
        _note(report, Drift(rid, "missing"), limit)
    return report


def _note(report: ReconcileReport, d: Drift, limit: int) -> None:
    if len(report.drift) < limit:
        report.drift.append(d)
