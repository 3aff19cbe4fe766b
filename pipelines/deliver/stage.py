"""``footprint deliver``: keep the authority's copy equal to the verified footprint (paragraph 29).

One run, under the ``deliver`` lock:

1. key the verified footprint per learner x discipline x period (Arrow,
   :class:`pipelines.deliver.records.RecordStream`: the figures are summed a range of record
   ids at a time, the next range while this one's records go out) and load the ledger
   (:mod:`pipelines.deliver.ledger`); close what a dead run left open (``pending`` batches
   become ``interrupted``);
2. make the records a slice at a time and compare each with the ledger as it comes: **new**
   (never acknowledged), **changed** (acknowledged with another content, or not confirmed
   since), **unchanged** (the authority acknowledged exactly this content);
3. save new and changed records in batches while the rest are still being made, up to
   ``in_flight`` requests out at once: each batch's content and its first-built time (the
   records' ``updated_at``) are stamped in the ledger and its ``pending`` batch row written
   *before* it is sent, in one transaction, then the row is closed with the answer;
   ``failedRecords`` are retried one record at a time up to ``record_attempts`` and otherwise
   kept ``failed`` with the authority's reason;
4. delete logically what the ledger knows and the footprint no longer gives (voided, or its
   learner or discipline left): **deleted**;
5. read back (``[authority] readback``): by default a sample of each batch right after its
   save, covering every field once per run (a batch whose sample reads back equal is marked
   delivered in the same transaction that closes its batch row), and the whole batch at the
   end when the sample differs; a record counts as delivered only when the authority holds
   exactly its content, because unknown fields are ignored silently; a difference leaves it
   ``failed`` with the fields that differ.

Crash points (``FOOTPRINT_CRASH_AT``, see :mod:`pipelines.faults`) sit between every pair of
steps that talk to the ledger or the authority, and the crash tests kill the run at each: the
next run ends in the same authority state.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
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
#: deleting more than half of the records the authority holds needs allow_mass_delete, unless
#: it is this many or fewer
MASS_DELETE_MIN = 20


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
            progress: Callable[[str, int, int], None] | None = None,
            allow_mass_delete: bool = False) -> DeliveryReport:
    """One delivery run; raises DeliveryError (with the report so far) when it cannot finish."""
    institution, authority = settings.delivery()
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    run_id = f"deliver-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    report = DeliveryReport(run_id=run_id, dry_run=dry_run)
    state = StateStore(settings.state_url)
    try:
        with state.lock("deliver"):
            ledger = Ledger(state)
            t = time.perf_counter()
            table = FootprintZones(settings.storage_root).read_verified()
            totals = activity_totals(settings)
            known = ledger.records()
            canonical_json: dict[str, bytes] = {}
            # keys and ids now; the figures range by range while the records go out
            stream = R.RecordStream(table, institution, totals,
                                    json_out=None if dry_run else canonical_json)
            report.records, report.statements = stream.records, table.num_rows
            del table
            report.phases["build"] = round(time.perf_counter() - t, 3)
            if dry_run:
                seen: set[str] = set()
                for rec in stream:
                    seen.add(rec["record_id"])
                    kind = _classify(rec, known.get(rec["record_id"]))
                    setattr(report, kind, getattr(report, kind) + 1)
                report.deleted = len(_gone(known, seen))
                report.status = "dry-run"
                return report
            own = client is None
            if client is None:
                client = AuthorityClient(authority, authority.credentials())
            ledger.run_started(run_id, False, now)
            # the records are acyclic dicts, hundreds of thousands of them alive at once:
            # collecting them over and over is wasted time
            gc_was = gc.isenabled()
            gc.disable()
            try:
                _Run(settings, ledger, client, report, known, now, progress,
                     allow_mass_delete, canonical_json).run(stream)
            except DeliveryError as exc:
                report.status, report.error = "failed", str(exc)
                ledger.run_finished(run_id, "failed", report.counts(), str(exc))
                raise
            except AuthorityError as exc:
                report.status, report.error = "failed", str(exc)
                ledger.run_finished(run_id, "failed", report.counts(), str(exc))
                raise DeliveryError(f"delivery stopped: {exc}; the ledger keeps what was sent "
                                    f"and the next run resumes", report) from exc
            finally:
                if gc_was:
                    gc.enable()
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


def _classify(rec: dict[str, Any], led: LedgerRecord | None) -> str:
    """new (never acknowledged), unchanged (acknowledged with this content) or changed."""
    if led is None or led.status == "deleted" or (led.acked_hash is None
                                                   and led.status == "new"):
        return "new"
    if led.status == "delivered" and led.acked_hash == rec["content_hash"]:
        return "unchanged"
    return "changed"


def _gone(known: dict[str, LedgerRecord], seen: set[str]) -> list[str]:
    """Records the ledger knows (not deleted) that the footprint no longer gives."""
    return sorted(rid for rid, led in known.items()
                  if rid not in seen and led.status != "deleted")


@dataclass(frozen=True)
class _Prepared:
    batch_id: str
    rids: list[str]
    body: bytes
    sample: list[str]  # the records read back right after the save (readback = "sample")


_UNREAD: dict[str, Any] = {"deleted": True}  # a sample read that failed: never matches


def _sample(batch: list[str], records: dict[str, dict[str, Any]], k: int,
            unconfirmed: Iterable[str] = R.HASHED) -> list[str]:
    """The records of a batch to read back right after its save: ``k`` evenly spaced ones,
    the last record first, then, for every field in ``unconfirmed`` (no read-back has yet
    shown the authority keeping it in this run), the first record holding a value in it: an
    authority that ignores a field can only be caught where the field holds something."""
    if len(batch) <= k:
        return list(batch)
    n = len(batch)
    picks = [batch[n - 1 - int(i * n / k)] for i in range(k)]
    for f in unconfirmed:
        if any(records[r].get(f) not in (None, []) for r in picks):
            continue
        hit = next((r for r in batch if records[r].get(f) not in (None, [])), None)
        if hit is not None:
            picks.append(hit)
    return list(dict.fromkeys(picks))


_Sent = tuple[SaveAnswer, dict[str, dict[str, Any] | None]]


def _done(call: Callable[..., _Sent], *args: Any) -> Future[_Sent]:
    """Run ``call`` now and hand its outcome over as a finished future."""
    fut: Future[_Sent] = Future()
    try:
        fut.set_result(call(*args))
    except Exception as exc:
        fut.set_exception(exc)
    return fut


class _Run:
    def __init__(self, settings: Settings, ledger: Ledger, client: AuthorityClient,
                 report: DeliveryReport, known: dict[str, LedgerRecord],
                 now: datetime, progress: Callable[[str, int, int], None] | None,
                 allow_mass_delete: bool = False,
                 canonical_json: dict[str, bytes] | None = None) -> None:
        self.a = settings.delivery()[1]
        # each record's hashed JSON as the stream made it, until its first save uses it
        self.canonical_json = canonical_json if canonical_json is not None else {}
        self.allow_mass_delete = allow_mass_delete
        self.ledger, self.client, self.report = ledger, client, report
        self.known, self.now = known, now
        self.progress = progress or (lambda _s, _d, _t: None)
        self.seq = 0
        self.records: dict[str, dict[str, Any]] = {}  # the records to send, by id
        self.updated_at: dict[str, datetime] = {}
        self.sent: dict[str, str] = {}  # record id -> hash sent, not failed, not yet confirmed
        # the records of each batch saved and not confirmed at once, with its sample as read
        # back right after the save
        self.sent_batches: list[tuple[list[str], dict[str, dict[str, Any] | None]]] = []
        self.final_failed: dict[str, str] = {}
        # contract fields no read-back has shown the authority keeping yet in this run
        self.unconfirmed: set[str] = set(R.HASHED)
        self._stamps: dict[datetime, str] = {}
        self._built_once = False

    def run(self, stream: Iterable[dict[str, Any]]) -> None:
        self.report.interrupted_batches = self.ledger.interrupt_stale(self.report.run_id)
        crashpoint("deliver-start")
        seen: set[str] = set()
        t = time.perf_counter()
        self._save_all(stream, seen)
        self.report.phases["send"] = round(time.perf_counter() - t, 3)
        gone = _gone(self.known, seen)
        self._guard_mass_delete(gone, len(seen))
        for name, step in (("delete", lambda: self._delete_all(gone)),
                           ("read_back", self._read_back)):
            t = time.perf_counter()
            step()
            self.report.phases[name] = round(time.perf_counter() - t, 3)
        self.report.failed = len(self.final_failed)
        self.report.failures = [{"record_id": r, "reason": why}
                                for r, why in sorted(self.final_failed.items())[:20]]

    def _guard_mass_delete(self, gone: list[str], built: int) -> None:
        """Refuse to delete most of the authority's copy at once: that is what an empty or
        misplaced verified zone (a wrong storage root, a failed mount) would look like."""
        live = sum(1 for led in self.known.values() if led.status != "deleted")
        if self.allow_mass_delete or len(gone) <= max(MASS_DELETE_MIN, live // 2):
            return
        raise DeliveryError(
            f"refusing to delete {len(gone):,} of the {live:,} records the authority holds "
            f"(the verified footprint gives {built:,} records now): is the storage root right? "
            f"New and changed records were sent; if the deletions are meant, run footprint "
            f"deliver --allow-mass-delete (in Airflow: trigger footprint_deliver with the "
            f"param allow_mass_delete = true)", self.report)

    # -- saving -----------------------------------------------------------------------------------
    def _updated_at(self, rid: str) -> str:
        at = self.updated_at.get(rid) or self.now
        stamp = self._stamps.get(at)
        if stamp is None:
            stamp = self._stamps[at] = R.iso_utc(at)
        return stamp

    def _payload(self, rid: str) -> dict[str, Any]:
        return R.with_updated_at(self.records[rid], self._updated_at(rid))

    def _payload_json(self, rid: str) -> bytes:
        """The record as sent, from the JSON its hash was taken of when there is one."""
        canonical = self.canonical_json.pop(rid, None)
        if canonical is None:
            return orjson.dumps(self._payload(rid))
        return R.payload_json(canonical, self.records[rid]["content_hash"],
                              self._updated_at(rid))

    def _new_content(self, rids: list[str]) -> list[tuple[str, str, datetime]]:
        """The content about to be sent that the ledger has not seen, with when it first
        appeared (now: the records' ``updated_at``); records built before with this content and
        not acknowledged keep their first-built time. Written with the batch's pending row."""
        stamps, same = [], []
        for rid in rids:
            led = self.known.get(rid)
            h = self.records[rid]["content_hash"]
            if led is None or led.built_hash != h:
                stamps.append((rid, h, self.now))
            else:
                same.append(rid)  # built before with this content, not yet acknowledged
        self.updated_at.update((rid, at) for rid, _, at in stamps)
        if same:
            self.updated_at.update(self.ledger.built_at(same))
        return stamps

    def _save_all(self, stream: Iterable[dict[str, Any]], seen: set[str]) -> None:
        """Classify the records as they are made and save the new and changed ones in batches,
        up to ``in_flight`` requests out while the next batch is made and prepared.

        Each batch's content is stamped in the ledger and its ``pending`` row written before its
        request leaves; answers are recorded in the order the batches were made (a run sends a
        record in one batch only, so batches in flight together never overlap). Refused
        records are then retried one by one.
        """
        size = self.a.batch_size
        depth = self.a.in_flight
        retry: list[tuple[str, str]] = []
        inflight: deque[tuple[_Prepared, Future[_Sent]]] = deque()
        chunk: list[str] = []
        done = 0
        total = self.report.records

        def dispatch(pool: ThreadPoolExecutor) -> None:
            nonlocal chunk
            if not self._built_once:
                self._built_once = True
                crashpoint("deliver-built")  # records made, none stamped in the ledger yet
            prep = self._prepare(chunk, "save", self._new_content(chunk))
            chunk = []
            crashpoint("deliver-before-send")
            inflight.append((prep, pool.submit(self._save_and_sample, prep)))
            while len(inflight) > depth:
                retry.extend(self._finish(*inflight.popleft()))
            self.progress("records", done, total)

        with ThreadPoolExecutor(depth, thread_name_prefix="deliver-send") as pool:
            try:
                for rec in stream:
                    rid = rec["record_id"]
                    seen.add(rid)
                    done += 1
                    kind = _classify(rec, self.known.get(rid))
                    setattr(self.report, kind, getattr(self.report, kind) + 1)
                    if kind == "unchanged":
                        self.canonical_json.pop(rid, None)
                        continue
                    self.records[rid] = rec
                    chunk.append(rid)
                    if len(chunk) >= size:
                        dispatch(pool)
                if chunk:
                    dispatch(pool)
                while inflight:
                    retry.extend(self._finish(*inflight.popleft()))
                self.progress("records", done, total)
            except BaseException:
                # record the fate of every request still in flight
                while inflight:
                    with contextlib.suppress(Exception):
                        self._finish(*inflight.popleft())
                raise
        for rid, reason in retry:
            for _ in range(1, self.a.record_attempts):
                self.report.record_retries += 1
                prep = self._prepare([rid], "retry")
                crashpoint("deliver-before-retry")
                again = self._finish(prep, _done(self._save_and_sample, prep))
                if not again:
                    break
                reason = again[0][1]
            else:
                self.final_failed[rid] = reason
                self.ledger.mark("failed", [(rid, reason)])

    def _prepare(self, rids: list[str], kind: str,
                 built: list[tuple[str, str, datetime]] | None = None) -> _Prepared:
        sample = (_sample(rids, self.records, self.a.readback_sample, sorted(self.unconfirmed))
                  if self.a.readback == "sample" else [])
        body = b"[" + b",".join([self._payload_json(r) for r in rids]) + b"]"
        batch_id = str(uuid.uuid4())
        self.seq += 1
        self.ledger.batch_pending(batch_id, self.report.run_id, self.seq, kind, rids,
                                  hashlib.sha256(body).hexdigest(), built or (), self.known)
        self.report.batches += 1
        return _Prepared(batch_id, rids, body, sample)

    def _save_and_sample(self, prep: _Prepared) -> _Sent:
        """In the sending thread: save a batch, then (``readback = "sample"``) read back its
        sample of saved records at once, while the main thread prepares the next batch."""
        # the answer's indices refer to these records (their updated_at is in the body only)
        answer = self.client.save([self.records[r] for r in prep.rids], prep.body)
        crashpoint("deliver-saved")
        held: dict[str, dict[str, Any] | None] = {}
        if self.a.readback == "sample" and answer.accounted(len(prep.rids)):
            refused = {prep.rids[f.index] for f in answer.failed if f.index >= 0}
            for rid in prep.sample:
                if rid in refused:
                    continue
                try:
                    held[rid] = self.client.find_by_id(rid)
                except AuthorityError:
                    held[rid] = _UNREAD  # the save stands; the batch is read back later
        return answer, held

    def _finish(self, prep: _Prepared, fut: Future[_Sent]) -> list[tuple[str, str]]:
        """Record one batch's answer; returns (record id, reason) of the refused records."""
        try:
            answer, held = fut.result()
        except AuthorityError as exc:
            self.ledger.batch_done(prep.batch_id, "failed", exc.attempts, str(exc))
            raise
        crashpoint("deliver-after-send")
        rids = prep.rids
        refused = {f.index: f.reason for f in answer.failed if f.index >= 0}
        ok = [(r, self.records[r]["content_hash"]) for i, r in enumerate(rids)
              if i not in refused]
        # per record, the ledger learns the fate at read-back (delivered or failed); until then
        # the batch row says what was sent, so a crash here costs a re-send, nothing else
        for r, h in ok:
            self.sent[r] = h
            self.final_failed.pop(r, None)
        self.report.sent += len(ok)
        accounted = answer.accounted(len(rids))
        saved = [r for r, _ in ok]
        confirmed: list[str] = []
        if saved and accounted and self.a.readback != "all":
            if self.a.readback == "none":
                confirmed = saved  # the 200 counts (reconcile still proves)
            elif held and all(self._matches(rid, got) for rid, got in held.items()):
                confirmed = saved  # the batch's sample reads back equal: delivered now
                self.report.read_back += len(held)
                for rid in held:  # the fields these records hold are kept by the authority
                    rec = self.records[rid]
                    self.unconfirmed.difference_update(
                        [f for f in self.unconfirmed if rec.get(f) not in (None, [])])
        if confirmed:
            for r in confirmed:
                del self.sent[r]
        elif saved:
            # read back after the last save: in full when the answer does not account for
            # every record or the sample differs, else (readback = all) with everything sent
            self.sent_batches.append((saved, held))
        status = ("acknowledged" if not refused and accounted
                  else "partial" if ok else "failed")
        self.ledger.batch_done(prep.batch_id, status, answer.attempts,
                               {"savedRecords": answer.saved,
                                "failedRecords": [asdict(f) for f in answer.failed][:50],
                                **({} if accounted else {"note": "the answer does not account "
                                   "for every record: all of them are read back"})},
                               delivered=confirmed, whole_batch=len(confirmed) == len(rids))
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
                self.report.deleted += len(done)
                self.ledger.batch_done(batch_id, "failed", self.client.stats.requests
                                       - requests_before, f"{len(done)} deleted, then: {exc}")
                raise
            self.ledger.mark("deleted", done, batch_id)
            self.report.deleted += len(done)
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

        ``sample``: per batch, right after its save, ``readback_sample`` records by id and the
        first holding each field no read-back has confirmed yet in this run (see
        :func:`_sample`); a batch whose sample reads back equal was marked delivered then
        (:meth:`_finish`); for the others every record is read back by id here and judged on
        its own. ``all``: every record sent (by id for a few, else one
        paged read of the whole copy). ``none``: the 200 counts. A record differing from what
        was sent is kept ``failed`` with the fields that differ (the authority ignored or
        changed them). ``footprint reconcile`` compares everything, whatever the mode.
        """
        if not self.report.sent:
            return
        crashpoint("deliver-before-readback")
        held: dict[str, dict[str, Any] | None] = {}
        if self.a.readback in ("sample", "none"):
            # the batches whose sample read back equal (with "none": whose 200 accounted for
            # every record) were marked delivered as their answers came; the others are read
            # back record by record here
            for batch, sample_held in self.sent_batches:
                held.update(sample_held)
                for rid in batch:
                    if held.get(rid, _UNREAD) is _UNREAD:
                        held[rid] = self.client.find_by_id(rid)
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
