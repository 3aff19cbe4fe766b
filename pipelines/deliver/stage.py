"""``footprint deliver``: keep the authority's copy equal to the verified footprint (paragraph 29).

One run, under the ``deliver`` lock:

1. build every delivered record from the verified footprint (:mod:`pipelines.deliver.records`);
2. compare with the ledger (:mod:`pipelines.deliver.ledger`): **new** (never acknowledged),
   **changed** (acknowledged with another content, or sent/failed and not confirmed since),
   **unchanged** (the authority acknowledged exactly this content), **deleted** (the ledger knows
   it, the footprint no longer gives it: voided, or its learner or discipline left);
3. close what a dead run left open (``pending`` batches become ``interrupted``);
4. stamp ``updated_at`` (when the content first appeared) in the ledger, then save new and
   changed records in batches: each batch is written to the ledger as ``pending`` *before* it is
   sent, then closed with the answer; ``failedRecords`` are retried one record at a time up to
   ``record_attempts`` and otherwise kept as ``failed`` with the authority's reason;
5. delete logically what has no evidence left;
6. read back what was sent (paged reads, or one by one for a few records): a record counts as
   delivered only when the authority holds exactly its content, because unknown fields are
   ignored silently; a difference leaves it ``failed`` with the fields that differ.

Crash points (``FOOTPRINT_CRASH_AT``, see :mod:`pipelines.faults`) sit between every pair of
steps that talk to the ledger or the authority, and the crash tests kill the run at each: the
next run ends in the same authority state.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from pipelines.config import Settings
from pipelines.deliver import records as R
from pipelines.deliver.authority import AuthorityClient, AuthorityError, SaveAnswer
from pipelines.deliver.ledger import Ledger, LedgerRecord
from pipelines.faults import crashpoint
from pipelines.sources.base import prefetch
from pipelines.store.footprint import FootprintZones
from pipelines.store.state import StateStore

#: up to this many records are read back one by one; more are read back by paging everything
READBACK_BY_ID_MAX = 50


class DeliveryError(Exception):
    def __init__(self, message: str, report: DeliveryReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class DeliveryReport:
    run_id: str
    dry_run: bool
    status: str = "running"
    records: int = 0  # records the footprint gives now
    statements: int = 0  # verified statements behind them
    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    sent: int = 0
    batches: int = 0
    requests: int = 0
    retries: int = 0
    record_retries: int = 0
    read_back: int = 0
    read_back_mismatches: int = 0
    interrupted_batches: int = 0
    gzip: bool = True
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step
    failures: list[dict[str, str]] = field(default_factory=list)  # first 20
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("new", "changed", "deleted", "unchanged", "failed")}


def activity_totals(settings: Settings) -> dict[tuple[str, str, str], int]:
    from pipelines.verify.reference import load_catalogue

    assert settings.catalogue is not None
    return R.catalogue_totals(load_catalogue(settings.catalogue).entries)


def build_records(settings: Settings) -> R.Built:
    institution, _ = settings.delivery()
    return R.build(FootprintZones(settings.storage_root), institution, activity_totals(settings))


def deliver(settings: Settings, dry_run: bool = False, now: datetime | None = None,
            client: AuthorityClient | None = None,
            progress: Callable[[str, int, int], None] | None = None) -> DeliveryReport:
    """One delivery run; raises DeliveryError (with the report so far) when it cannot finish."""
    _, authority = settings.delivery()
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    run_id = f"deliver-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    report = DeliveryReport(run_id=run_id, dry_run=dry_run)
    state = StateStore(settings.state_url)
    try:
        with state.lock("deliver"):
            ledger = Ledger(state)
            t = time.perf_counter()
            built = build_records(settings)
            report.phases["build"] = round(time.perf_counter() - t, 3)
            report.records, report.statements = len(built), built.statements
            t = time.perf_counter()
            known = ledger.records()
            new, changed, unchanged, gone = _classify(built, known)
            report.phases["compare"] = round(time.perf_counter() - t, 3)
            report.new, report.changed, report.deleted = len(new), len(changed), len(gone)
            report.unchanged = len(unchanged)
            if dry_run:
                report.status = "dry-run"
                return report
            own = client is None
            if client is None:
                client = AuthorityClient(authority, authority.credentials())
            ledger.run_started(run_id, False, now)
            try:
                _Run(settings, ledger, client, report, built, known, now, progress).run(
                    new + changed, gone)
            except AuthorityError as exc:
                report.status, report.error = "failed", str(exc)
                ledger.run_finished(run_id, "failed", report.counts(), str(exc))
                raise DeliveryError(f"delivery stopped: {exc}; the ledger keeps what was sent "
                                    f"and the next run resumes", report) from exc
            finally:
                report.requests, report.retries = client.stats.requests, client.stats.retries
                report.gzip = client.stats.gzip
                if own:
                    client.close()
            report.status = "succeeded" if report.failed == 0 else "partial"
            ledger.run_finished(run_id, report.status, report.counts())
            return report
    finally:
        report.seconds = round(time.perf_counter() - started, 3)
        state.close()


def _classify(built: R.Built, known: dict[str, LedgerRecord]
              ) -> tuple[list[str], list[str], list[str], list[str]]:
    new, changed, unchanged = [], [], []
    for rid, rec in built.records.items():
        led = known.get(rid)
        if led is None or led.status == "deleted" or (led.acked_hash is None
                                                       and led.status == "new"):
            new.append(rid)
        elif led.status == "delivered" and led.acked_hash == rec["content_hash"]:
            unchanged.append(rid)
        else:
            changed.append(rid)
    gone = sorted(rid for rid, led in known.items()
                  if rid not in built.records and led.status != "deleted")
    return new, changed, unchanged, gone


@dataclass(frozen=True)
class _Prepared:
    batch_id: str
    rids: list[str]
    payload: list[dict[str, Any]]
    body: bytes


_SAMPLED_OK: dict[str, Any] = {}  # marks a record whose batch's sample read back equal


def _sample(batch: list[str], records: dict[str, dict[str, Any]], k: int) -> list[str]:
    """The records of a batch to read back: first and last, then for every field the first
    record holding a value in it (an authority that ignores a field can only be caught where
    the field holds something), then evenly spaced ones up to ``k``."""
    if len(batch) <= k:
        return list(batch)
    picks = [batch[0], batch[-1]]
    for f in R.FIELDS:
        if any(records[r].get(f) not in (None, []) for r in picks):
            continue
        hit = next((r for r in batch if records[r].get(f) not in (None, [])), None)
        if hit is not None:
            picks.append(hit)
    step = len(batch) / max(k - 1, 1)
    i = 1
    while len(set(picks)) < k and i < k:
        picks.append(batch[min(int(i * step), len(batch) - 1)])
        i += 1
    return list(dict.fromkeys(picks))


def _done(call: Callable[..., SaveAnswer], *args: Any) -> Future[SaveAnswer]:
    """Run ``call`` now and hand its outcome over as a finished future."""
    fut: Future[SaveAnswer] = Future()
    try:
        fut.set_result(call(*args))
    except Exception as exc:
        fut.set_exception(exc)
    return fut


class _Run:
    def __init__(self, settings: Settings, ledger: Ledger, client: AuthorityClient,
                 report: DeliveryReport, built: R.Built, known: dict[str, LedgerRecord],
                 now: datetime, progress: Callable[[str, int, int], None] | None) -> None:
        self.a = settings.delivery()[1]
        self.ledger, self.client, self.report = ledger, client, report
        self.built, self.known, self.now = built, known, now
        self.progress = progress or (lambda _s, _d, _t: None)
        self.seq = 0
        self.sent: dict[str, str] = {}  # record id -> hash sent and not failed
        self.sent_batches: list[list[str]] = []  # the records each batch saved
        self.final_failed: dict[str, str] = {}
        self._stamps: dict[datetime, str] = {}

    def run(self, to_send: list[str], gone: list[str]) -> None:
        self.report.interrupted_batches = self.ledger.interrupt_stale(self.report.run_id)
        crashpoint("deliver-start")
        stamps, same = [], []
        for rid in to_send:
            led = self.known.get(rid)
            h = self.built.records[rid]["content_hash"]
            if led is None or led.built_hash != h:
                stamps.append((rid, h, self.now))
            else:
                same.append(rid)  # built before with this content, not yet acknowledged
        self.ledger.mark_built(stamps, self.known)
        self.updated_at = {rid: at for rid, _, at in stamps}
        self.updated_at.update(self.ledger.built_at(same))
        crashpoint("deliver-built")
        for name, step in (("send", lambda: self._save_all(sorted(to_send))),
                           ("delete", lambda: self._delete_all(gone)),
                           ("read_back", self._read_back)):
            t = time.perf_counter()
            step()
            self.report.phases[name] = round(time.perf_counter() - t, 3)
        self.report.failed = len(self.final_failed)
        self.report.failures = [{"record_id": r, "reason": why}
                                for r, why in sorted(self.final_failed.items())[:20]]

    # -- saving -----------------------------------------------------------------------------------
    def _payload(self, rid: str) -> dict[str, Any]:
        at = self.updated_at.get(rid) or self.now
        stamp = self._stamps.get(at)
        if stamp is None:
            stamp = self._stamps[at] = R.iso_utc(at)
        return R.with_updated_at(self.built.records[rid], stamp)

    def _save_all(self, rids: list[str]) -> None:
        """Save in batches, one request in flight while the next batch is prepared.

        The next batch's payload, its hash and its ``pending`` ledger row are made while the
        authority answers the previous one (the ledger row is still written before its request
        leaves); answers are recorded in order. Refused records are then retried one by one.
        """
        size = self.a.batch_size
        retry: list[tuple[str, str]] = []
        inflight: tuple[_Prepared, Future[SaveAnswer]] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="deliver-send") as pool:
            try:
                for i in range(0, len(rids), size):
                    prep = self._prepare(rids[i:i + size], "save")
                    crashpoint("deliver-before-send")
                    fut = pool.submit(self.client.save, prep.payload, prep.body)
                    if inflight is not None:
                        retry.extend(self._finish(*inflight))
                        self.progress("save", i, len(rids))
                    inflight = (prep, fut)
                if inflight is not None:
                    done, inflight = inflight, None
                    retry.extend(self._finish(*done))
                    self.progress("save", len(rids), len(rids))
            except BaseException:
                if inflight is not None:  # record the fate of the request still in flight
                    with contextlib.suppress(Exception):
                        self._finish(*inflight)
                raise
        for rid, reason in retry:
            for _ in range(1, self.a.record_attempts):
                self.report.record_retries += 1
                prep = self._prepare([rid], "retry")
                crashpoint("deliver-before-send")
                again = self._finish(prep, _done(self.client.save, prep.payload, prep.body))
                if not again:
                    break
                reason = again[0][1]
            else:
                self.final_failed[rid] = reason
                self.ledger.mark("failed", [(rid, reason)])

    def _prepare(self, rids: list[str], kind: str) -> _Prepared:
        payload = [self._payload(r) for r in rids]
        body = orjson.dumps(payload)
        batch_id = str(uuid.uuid4())
        self.seq += 1
        self.ledger.batch_pending(batch_id, self.report.run_id, self.seq, kind, rids,
                                  hashlib.sha256(body).hexdigest())
        self.report.batches += 1
        return _Prepared(batch_id, rids, payload, body)

    def _finish(self, prep: _Prepared, fut: Future[SaveAnswer]) -> list[tuple[str, str]]:
        """Record one batch's answer; returns (record id, reason) of the refused records."""
        try:
            answer = fut.result()
        except AuthorityError as exc:
            self.ledger.batch_done(prep.batch_id, "failed", self.a.max_attempts, str(exc))
            raise
        crashpoint("deliver-after-send")
        rids, payload = prep.rids, prep.payload
        refused = {f.index: f.reason for f in answer.failed if f.index >= 0}
        ok = [(r, p["content_hash"]) for i, (r, p) in enumerate(zip(rids, payload, strict=True))
              if i not in refused]
        # per record, the ledger learns the fate at read-back (delivered or failed); until then
        # the batch row says what was sent, so a crash here costs a re-send, nothing else
        for r, h in ok:
            self.sent[r] = h
            self.final_failed.pop(r, None)
        if ok:
            self.sent_batches.append([r for r, _ in ok])
        self.report.sent += len(ok)
        status = "acknowledged" if not refused else ("partial" if ok else "failed")
        self.ledger.batch_done(prep.batch_id, status, answer.attempts,
                               {"savedRecords": answer.saved,
                                "failedRecords": [asdict(f) for f in answer.failed][:50]})
        crashpoint("deliver-after-ledger")
        return [(rids[i], why) for i, why in sorted(refused.items())]

    # -- deleting ---------------------------------------------------------------------------------
    def _delete_all(self, gone: list[str]) -> None:
        for i in range(0, len(gone), 100):
            chunk = gone[i:i + 100]
            batch_id = str(uuid.uuid4())
            self.seq += 1
            self.ledger.batch_pending(batch_id, self.report.run_id, self.seq, "delete", chunk,
                                      None)
            self.report.batches += 1
            found = missing = 0
            requests_before = self.client.stats.requests
            done: list[tuple[str, str | None]] = []
            try:
                for rid in chunk:
                    crashpoint("deliver-before-delete")
                    if self.client.delete(rid):
                        found += 1
                    else:
                        missing += 1
                    done.append((rid, None))
            except AuthorityError as exc:
                self.ledger.mark("deleted", done, batch_id)
                self.ledger.batch_done(batch_id, "failed", self.client.stats.requests
                                       - requests_before, f"{len(done)} deleted, then: {exc}")
                raise
            self.ledger.mark("deleted", done, batch_id)
            self.ledger.batch_done(batch_id, "acknowledged",
                                   self.client.stats.requests - requests_before,
                                   {"deleted": found, "notFound": missing})
            crashpoint("deliver-after-delete")

    def _matches(self, rid: str, got: dict[str, Any] | None) -> bool:
        return (got is not None and not got.get("deleted")
                and R.content_hash(got) == self.sent[rid])

    # -- reading back -----------------------------------------------------------------------------
    def _read_back(self) -> None:
        """Confirm what was sent by reading it back (``[authority] readback``).

        ``sample``: per batch, ``readback_sample`` records by id, chosen so that every field
        holding a value anywhere in the batch holds one in a sampled record (see
        :func:`_sample`); when one differs or is missing, every record of that batch is read
        back by id and judged on its own. ``all``: every record sent (by id for a few, else one
        paged read of the whole copy). ``none``: the 200 counts. A record differing from what
        was sent is kept ``failed`` with the fields that differ (the authority ignored or
        changed them). ``footprint reconcile`` compares everything, whatever the mode.
        """
        if not self.sent:
            return
        if self.a.readback == "none":
            self.ledger.mark_delivered_as_built(list(self.sent))
            return
        crashpoint("deliver-before-readback")
        held: dict[str, dict[str, Any] | None] = {}
        if self.a.readback == "sample":
            for batch in self.sent_batches:
                sample = _sample(batch, self.built.records, self.a.readback_sample)
                for rid in sample:
                    held[rid] = self.client.find_by_id(rid)
                if any(not self._matches(rid, held[rid]) for rid in sample):
                    for rid in batch:
                        if rid not in held:
                            held[rid] = self.client.find_by_id(rid)
                else:
                    for rid in batch:
                        held.setdefault(rid, _SAMPLED_OK)
        elif len(self.sent) <= READBACK_BY_ID_MAX:
            for rid in self.sent:
                held[rid] = self.client.find_by_id(rid)
        else:
            wanted = self.sent
            # the next pages are fetched in a thread while this one is compared
            for page in prefetch(self.client.pages(), depth=2):
                for item in page:
                    key = item.get("record_id")
                    if isinstance(key, str) and key in wanted:
                        held[key] = item
        delivered, failed = [], []
        for rid in self.sent:
            got = held.get(rid)
            if got is _SAMPLED_OK:
                delivered.append(rid)
                continue
            self.report.read_back += 1
            if self._matches(rid, got):
                delivered.append(rid)
                continue
            if got is None or got.get("deleted"):
                why = "read back: the authority does not hold the record after a 200"
            else:
                fields = R.differences(self._payload(rid), got)
                why = (f"read back differs in {', '.join(fields)}: the authority ignored or "
                       f"changed what was sent (unknown field or older contract?)")
            self.report.read_back_mismatches += 1
            failed.append((rid, why))
            self.final_failed[rid] = why
        self.ledger.mark_delivered_as_built(delivered)
        self.ledger.mark("failed", failed)
        crashpoint("deliver-after-readback")
