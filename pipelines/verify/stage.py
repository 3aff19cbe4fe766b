"""The verification stage: one window of one source -> the verified footprint and quarantine.

``verify_window(settings, source, window, run_id)`` runs after ingestion has committed the window
(``pipelines.ingest.ingest_source`` calls it under the same lock, for the same window):

1. the window's normalised rows (time key ``stored``, else ``timestamp``, in the window) and
   their raw bytes from the window's raw-zone folder are verified against the roster and the
   catalogue (:func:`pipelines.verify.rules.verify`);
2. voids are applied across runs (:func:`pipelines.verify.voiding.apply_voids`): the pending
   voids from the state database and this window's voids against the window's records, then the
   voids still waiting against the records published by earlier runs;
3. the batch is checked with the Great Expectations suite
   (:func:`pipelines.verify.quality.check_batch`); results go to
   ``<root>/reports/quality/<run_id>.json`` (Data Docs when ``[quality] data_docs``).
   A failed critical check raises :class:`VerifyError` and nothing is published;
4. otherwise the voids and the void log are recorded in the state database, the window's rows of
   the verified zone are replaced (voided records removed wherever they are), and the window's
   quarantine file is replaced; the records judged now leave the other windows' quarantine files
   (windows overlap: an LRS's lookback, or a killed run re-run over a window ending later), so
   a record is quarantined once, keeping the time it first entered quarantine.

A kill at any point of step 4 is repaired by running again (``tests/test_verify_crash.py``).

``replay_quarantine`` re-verifies what is in quarantine (after a roster or catalogue fix): what
verifies now is published and leaves quarantine once; the rest stays with its updated reasons.

One statement id with two bodies (``conflicting-duplicate``): the id belongs to the first body
received, the earliest ``stored`` among the bodies judged together, else the body an earlier run
verified or quarantined for another reason (:func:`_held`); every other body is quarantined and
replay never releases it (:func:`replay_quarantine`), so the verified footprint never holds two
bodies of one id. The normalised zone keeps one row per id and day, so a second body stored the
same day is taken back from the window's raw zone to be judged (``VerifyReport.recovered``;
ingestion counted it among its duplicates).

Both judge xAPI validity with the source's ``tolerate`` profiles (``SourceSettings.tolerate``), so
adding ``tolerate = ["openedx"]`` to a source and replaying releases the Open edX statements that
were quarantined as ``xapi-invalid`` only for a tolerated deviation (they then carry the warning
``tolerated-deviation``; ``VerifyReport.tolerated_deviations`` counts them by validator code).

Every verification reports **read = verified + quarantined + duplicates + voiding** and fails
loudly when that does not hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.config import Settings
from pipelines.faults import crashpoint
from pipelines.sources.base import Window
from pipelines.store.footprint import FootprintZones
from pipelines.store.state import StateStore
from pipelines.store.zones import RAW_SCHEMA, Zones, in_window
from pipelines.verify.reference import Catalogue, Roster, load_catalogue, load_roster
from pipelines.verify.rules import (
    CONFLICTING_DUPLICATE,
    NORMALISED_COLUMNS,
    RawStatements,
    Verification,
    _binary_views,
    verify,
)
from pipelines.verify.voiding import Void, VoidChange, apply_voids
from pipelines.xapi.normalise import PageData, normalise_batch
from pipelines.xapi.validate import Problem, validate_detailed_bytes

SKIPPED_MESSAGE = (
    "verification skipped: set [reference] roster and catalogue in the configuration to verify"
)


class VerifyError(Exception):
    """Verification failed (quality check, reference data, balance); nothing was published."""

    def __init__(self, message: str, report: VerifyReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class VerifyReport:
    source: str
    run_id: str
    kind: str  # "window" (after ingestion) or "replay"
    window: str | None
    status: str = "running"  # then "succeeded", "failed" or "skipped"
    read: int = 0
    verified: int = 0  # passed every rule (before voids)
    quarantined: int = 0
    duplicates: int = 0
    voiding: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    # "validator-code at $.path" -> verified rows valid only under the source's tolerate profiles
    tolerated_deviations: dict[str, int] = field(default_factory=dict)
    published: int = 0  # verified rows written (verified minus those voided in the batch)
    voided: int = 0  # verified records removed by voids in this run (batch and earlier runs)
    voided_earlier: int = 0  # of those, records published by earlier runs
    pending_voids: int = 0  # voids of the source still waiting for their target
    void_warnings: list[str] = field(default_factory=list)
    replayed: int = 0  # replay: records that left quarantine
    # bodies the normalised zone did not keep (another body of an id it keeps in the same date
    # partition, counted there among the duplicates) but judged here: part of read
    recovered: int = 0
    conflicts_held: int = 0  # replay: conflicting bodies not replayed (part of quarantined)
    quality: dict[str, Any] | None = None
    quality_results: str | None = None
    data_docs: str | None = None
    message: str | None = None
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_balance(self) -> None:
        total = self.verified + self.quarantined + self.duplicates + self.voiding
        if total != self.read:
            raise VerifyError(
                f"source {self.source!r}: verification does not balance: read {self.read} != "
                f"verified {self.verified} + quarantined {self.quarantined} + duplicates "
                f"{self.duplicates} + voiding {self.voiding}; nothing was published", self)


def _reference(settings: Settings) -> tuple[Roster, Catalogue]:
    if settings.roster is None or settings.catalogue is None:
        raise VerifyError(SKIPPED_MESSAGE)
    from pipelines.verify.reference import ReferenceError

    try:
        return load_roster(settings.roster), load_catalogue(settings.catalogue)
    except (ReferenceError, OSError) as exc:
        raise VerifyError(f"reference data: {exc}") from exc


def storage_date(table: pa.Table) -> pa.Table:
    """Set ``date`` to the normalised zone's key: the UTC date of ``stored``, else ``timestamp``."""
    key = pc.coalesce(table["stored"], table["timestamp"])
    day = pc.cast(pc.cast(key, pa.date32()), pa.string())
    i = table.column_names.index("date")
    return table.set_column(i, table.schema.field(i), day)


class WindowRaw(RawStatements):
    """The window's raw statements (those that were normalised), streamed from the raw zone a
    part file at a time: each body is judged by the xAPI validator as it streams by, and only
    its digest, where it lies and the problems found are kept. Bytes are read again later only
    for the bodies asked for (quarantined rows, bodies the normalised zone did not keep).

    So verification never holds the window's raw bytes at once (1.7 GB for 1,000,000 typical
    statements) and never copies them.
    """

    def __init__(self, files: list[Path], version: str, tolerate: Collection[str]) -> None:
        self._dict = None
        self._views: dict[str, memoryview] = {}
        self.files = files
        self.version, self.tolerate = version, frozenset(tolerate)
        self._problems: dict[str, list[Problem]] = {}
        self._tolerated: dict[str, list[Problem]] = {}
        self._held: list[pa.Table] = []  # keeps the Arrow buffers of fetched views alive
        shas: list[pa.Array] = []
        parts: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        for k, f in enumerate(files):
            t = pq.read_table(f, columns=["raw", "status"])
            at = pc.indices_nonzero(pc.equal(t["status"], "normalised"))
            raw = t["raw"].take(at) if len(at) < t.num_rows else t["raw"]
            digests = []
            for chunk in raw.chunks:
                for v in _binary_views(chunk):
                    sha = hashlib.sha256(v).hexdigest()
                    digests.append(sha)
                    verdict = validate_detailed_bytes(v, version, self.tolerate)  # type: ignore[arg-type]
                    if verdict.problems:
                        self._problems[sha] = verdict.problems
                    if verdict.tolerated:
                        self._tolerated[sha] = verdict.tolerated
            shas.append(pa.array(digests, pa.string()))
            parts.append(np.full(len(digests), k, np.int32))
            rows.append(at.to_numpy())
            del t, raw
        self._digests = pa.concat_arrays(shas) if shas else pa.array([], pa.string())
        self._part = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        self._row = np.concatenate(rows) if rows else np.zeros(0, np.int64)

    @property
    def order(self) -> list[str | None]:
        return self._digests.to_pylist()

    def order_array(self) -> pa.Array:
        return self._digests

    def verdicts(
        self, shas: list[str], version: str, tolerate: Collection[str]
    ) -> tuple[dict[str, list[Problem]], dict[str, list[Problem]]]:
        if (version, frozenset(tolerate)) != (self.version, self.tolerate):
            raise ValueError(f"the window's statements were judged as xAPI {self.version} "
                             f"with {sorted(self.tolerate)}, not {version} with {sorted(tolerate)}")
        wanted = pa.array(shas, pa.string())
        missing = pc.invert(pc.is_in(wanted, value_set=self._digests))
        if pc.any(missing).as_py():
            lost = wanted.filter(missing).to_pylist()
            raise ValueError(
                f"no raw bytes for {len(lost)} statement bodies (raw is looked up by raw_sha256), "
                f"e.g. {', '.join(lost[:3])}")
        want = set(shas)
        return ({s: p for s, p in self._problems.items() if s in want},
                {s: p for s, p in self._tolerated.items() if s in want})

    def prefetch(self, shas: list[str]) -> None:
        need = [s for s in dict.fromkeys(shas) if s not in self._views]
        if not need:
            return
        at = pc.index_in(pa.array(need, pa.string()), value_set=self._digests).to_numpy(
            zero_copy_only=False)
        found = [(s, int(i)) for s, i in zip(need, at, strict=True) if i == i and i >= 0]
        by_part: dict[int, list[tuple[str, int]]] = {}
        for s, i in found:
            by_part.setdefault(int(self._part[i]), []).append((s, int(self._row[i])))
        for k, items in sorted(by_part.items()):
            t = pq.read_table(self.files[k], columns=["raw"]).take(
                pa.array([r for _, r in items], pa.int64()))
            self._held.append(t)
            views = [v for chunk in t["raw"].chunks for v in _binary_views(chunk)]
            for (s, _), v in zip(items, views, strict=True):
                self._views[s] = v

    def get(self, sha: str) -> bytes | memoryview | None:
        if sha not in self._views:
            self.prefetch([sha])
        return self._views.get(sha)


def _raw_files(root: Zones, source: str, window: Window) -> list[Path]:
    folder = root.source_dir(root.raw, source) / f"window={window.label()}"
    return sorted(folder.glob("part-*.parquet"))


def _raw_of_window(root: Zones, source: str, window: Window,
                   columns: tuple[str, ...] = ("raw",)) -> pa.Table:
    """The raw zone's statements of the window that were normalised (``columns`` of them)."""
    folder = root.source_dir(root.raw, source) / f"window={window.label()}"
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        return RAW_SCHEMA.empty_table().select(list(columns))
    t = pa.concat_tables(pq.read_table(f, columns=[*columns, "status"]) for f in files)
    return t.filter(pc.equal(t["status"], "normalised")).select(list(columns))


def _normalise(source: str, norm_schema: pa.Schema, pages: list[PageData],
               run_id: str) -> pa.Table:
    """Normalised rows (``norm_schema``, with ``source`` and ``date``) for raw statements."""
    if not pages:
        return norm_schema.empty_table()
    rows = normalise_batch(source, run_id, pages).rows
    rows = rows.append_column("source", pa.repeat(pa.scalar(source, pa.string()), rows.num_rows))
    return storage_date(rows.select(norm_schema.names).cast(norm_schema))


def _dropped_bodies(zones: Zones, source: str, window: Window, norm: pa.Table,
                    raws: RawStatements) -> pa.Table:
    """The window's statements whose body the normalised zone did not keep, normalised again.

    The normalised zone keeps one row per statement id and date partition: of two bodies of one
    id stored the same day it keeps the first read and counts the other as a duplicate. An
    exact copy is one, another body is a conflict and must be judged (and quarantined), so the
    bodies missing from ``norm`` are taken back from the window's raw zone.
    """
    order = raws.order_array()
    if len(order) <= norm.num_rows:
        return norm.schema.empty_table()  # nothing was dropped (the usual case)
    missing = pc.invert(pc.is_in(order, value_set=norm["raw_sha256"]))
    if not pc.any(missing).as_py():
        return norm.schema.empty_table()  # exact copies only
    rows = pc.indices_nonzero(missing)
    raws.prefetch(order.take(rows).to_pylist())
    meta = _raw_of_window(zones, source, window,
                          ("fetch_ref", "fetch_index", "fetched_at", "run_id")).take(rows)
    seen: set[str] = set()
    pages: list[PageData] = []
    for i, ref, index, at in zip(rows.to_pylist(), meta["fetch_ref"].to_pylist(),
                                 meta["fetch_index"].to_pylist(),
                                 meta["fetched_at"].to_pylist(), strict=True):
        sha = order[i].as_py()
        body = raws.get(sha) if sha is not None else None
        if sha is None or body is None or sha in seen:
            continue
        seen.add(sha)
        pages.append(([bytes(body)], ref, at, [index]))
    return _normalise(source, norm.schema, pages, meta["run_id"][0].as_py())


def _held(fz: FootprintZones, source: str, judged: pa.Table, window: Window | None,
          quarantine: pa.Table | None = None, label: str | None = None) -> dict[str, str]:
    """Statement id -> the body (raw_sha256) that holds it outside what is judged now.

    The first body received holds an id: the body in the verified zone outside the window (any
    window for a replay), else a body quarantined for another reason than a conflict in another
    window's file (it may verify after a replay). Another body of such an id is a
    ``conflicting-duplicate`` (:func:`pipelines.verify.rules.verify`).
    """
    if judged.num_rows == 0:
        return {}
    ids = pc.unique(judged["statement_id"])
    held: dict[str, str] = {}
    if quarantine is not None and quarantine.num_rows:
        q = quarantine.filter(pc.fill_null(pc.is_in(quarantine["statement_id"], value_set=ids),
                                           False))
        if q.num_rows:
            q = q.filter(pc.and_(
                pc.invert(_has_reason(q, CONFLICTING_DUPLICATE)),
                pc.invert(pc.is_in(_key(q), value_set=_key(judged)))))
            if label is not None:
                q = q.filter(pc.not_equal(q["window"], label))
            held.update(zip(q["statement_id"].to_pylist(), q["raw_sha256"].to_pylist(),
                            strict=True))
    v = fz.verified_bodies(source, ids)
    if window is not None and v.num_rows:
        v = v.filter(pc.invert(in_window(v, window)))
    held.update(zip(v["statement_id"].to_pylist(), v["raw_sha256"].to_pylist(), strict=True))
    return held


@contextlib.contextmanager
def _lean_memory_pool() -> Iterator[None]:
    """Arrow's jemalloc pool while verifying, where the platform has it.

    Verification holds a whole window's rows at once, and with Arrow's default pool (mimalloc)
    the process kept about 1.9 times the bytes its tables hold (1,317 MiB of RSS for a 705 MiB
    table of 1,000,000 rows); jemalloc keeps 1.26 times at the same speed. Ingestion keeps
    the default, which is about 5 % faster there and whose memory is bounded anyway. Buffers
    remember the pool that made them, so switching between stages is safe."""
    before = pa.default_memory_pool()
    try:
        lean = pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        lean = None  # not built in here: stay on the default
    if lean is None:
        yield
        return
    pa.set_memory_pool(lean)
    try:
        yield
    finally:
        pa.set_memory_pool(before)
        lean.release_unused()


def verify_window(settings: Settings, source_name: str, window: Window,
                  run_id: str) -> VerifyReport:
    """Verify one ingested window of a source and publish it (see the module docstring).

    Call it holding the source's ingestion lock. Without ``[reference]`` in the configuration it
    returns a report with status ``skipped``.
    """
    with _lean_memory_pool():
        return _verify_window(settings, source_name, window, run_id)


def _verify_window(settings: Settings, source_name: str, window: Window,
                   run_id: str) -> VerifyReport:
    s = settings.source(source_name)
    report = VerifyReport(source=s.name, run_id=run_id, kind="window", window=window.label())
    if not settings.verifies:
        report.status = "skipped"
        report.message = SKIPPED_MESSAGE
        return report
    started = time.perf_counter()
    state = StateStore(settings.state_url)
    try:
        roster, catalogue = _reference(settings)
        zones = Zones(settings.storage_root)
        norm = zones.read_normalised(s.name, window, columns=[*NORMALISED_COLUMNS, "date"])
        pa.default_memory_pool().release_unused()  # the scan's buffers
        raws = WindowRaw(_raw_files(zones, s.name, window), s.xapi_version, s.tolerate)
        dropped = _dropped_bodies(zones, s.name, window, norm, raws)
        if dropped.num_rows:
            norm = pa.concat_tables([norm, dropped])
        # one chunk a column, once, here: the rules work on contiguous arrays and would
        # otherwise copy every column they read while the chunked table is still held
        norm = norm.combine_chunks()
        pa.default_memory_pool().release_unused()
        report.recovered = dropped.num_rows
        fz = FootprintZones(settings.storage_root)
        fz.clean_leftovers(s.name)
        before = fz.read_quarantine(s.name)
        held = _held(fz, s.name, norm, window, before, window.label())
        now = datetime.now(UTC)
        try:
            v = verify(norm, raws, roster, catalogue, now=now, run_id=run_id, verified_at=now,
                       source=s.name, xapi_version=s.xapi_version, tolerate=s.tolerate,
                       held=held)
        except ValueError as exc:
            raise VerifyError(f"source {s.name!r}: cannot verify window {window.label()}: "
                              f"{exc}", report) from exc
        quarantined = _keep_first_quarantined(v.quarantined, before)
        # what is left to do needs only the judged rows' keys: the rows and the raw zone's
        # index go before the quality check and the writes (the peak of memory otherwise)
        judged = norm.select(["statement_id", "raw_sha256"])
        del norm, raws, dropped, held
        pa.default_memory_pool().release_unused()

        def publish_quarantine() -> None:
            fz.write_quarantine(s.name, window.label(), quarantined, run_id)
            _drop_judged_elsewhere(fz, s.name, window.label(), before, judged, run_id)

        _publish(settings, state, fz, report, v, window=window, quarantine_read=v.counts["read"],
                 publish_quarantine=publish_quarantine)
        report.message = f"verified {report.published} records, quarantined {report.quarantined}"
        return report
    except BaseException as exc:
        report.status = "failed"
        report.error = str(exc)
        report.seconds = round(time.perf_counter() - started, 3)
        state.verify_finished(run_id, s.name, "window", window.label(), "failed",
                              _counts(report), str(exc))
        if isinstance(exc, VerifyError):
            exc.report = report
        raise
    finally:
        if report.status != "failed":
            report.seconds = round(time.perf_counter() - started, 3)
        state.close()


def _counts(r: VerifyReport) -> dict[str, Any]:
    keys = ("read", "verified", "quarantined", "duplicates", "voiding", "published", "voided",
            "replayed", "recovered", "conflicts_held", "quarantined_by_reason")
    return {k: getattr(r, k) for k in keys}


def _keep_first_quarantined(new: pa.Table, old: pa.Table) -> pa.Table:
    """``first_quarantined_at`` stays what it was for a record quarantined before (in any
    window's file: the earliest)."""
    if new.num_rows == 0 or old.num_rows == 0:
        return new
    first: dict[str, datetime] = {}
    for k, t in zip(_key(old).to_pylist(), old["first_quarantined_at"].to_pylist(), strict=True):
        if k not in first or t < first[k]:
            first[k] = t
    at = [first.get(k, t) for k, t in zip(_key(new).to_pylist(),
                                          new["first_quarantined_at"].to_pylist(), strict=True)]
    i = new.column_names.index("first_quarantined_at")
    field_ = new.schema.field(i)
    return new.set_column(i, field_, pa.array(at, field_.type))


def _drop_judged_elsewhere(fz: FootprintZones, source: str, label: str, before: pa.Table,
                           judged: pa.Table, run_id: str) -> None:
    """Take the records this verification judged out of the other windows' quarantine files.

    Windows overlap (an LRS is read from its watermark minus the lookback, and a run killed
    before the watermark moved is re-run over a window that ends later, hence has another
    label): a record judged again now is verified, quarantined in this window's file, a
    duplicate or a void, and must not also stay in the file of the window that judged it first.
    """
    if before.num_rows == 0 or judged.num_rows == 0:
        return
    others = before.filter(pc.not_equal(before["window"], label))
    if others.num_rows == 0:
        return
    keys = _key(judged)
    hit = pc.is_in(_key(others), value_set=keys)
    if not pc.any(hit).as_py():
        return
    for other in sorted(set(others.filter(hit)["window"].to_pylist())):
        t = fz.read_quarantine_window(source, other)
        fz.write_quarantine(source, other, t.filter(pc.invert(pc.is_in(_key(t), value_set=keys))),
                            run_id)


def _publish(
    settings: Settings, state: StateStore, fz: FootprintZones, report: VerifyReport,
    v: Verification, *, window: Window | None, quarantine_read: int,
    publish_quarantine: Any, held_back: pa.Table | None = None,
) -> None:
    """Voids, the quality check, then (if it passed) the state database and the zones.

    ``held_back``: quarantined records read but not judged (a replay's conflicting bodies); they
    count as read and quarantined.
    """
    source, run_id = report.source, report.run_id
    c = v.counts
    report.read, report.verified, report.quarantined = c["read"], c["verified"], c["quarantined"]
    report.duplicates, report.voiding = c["duplicates"], c["voiding"]
    report.quarantined_by_reason = dict(c["quarantined_by_reason"])
    if held_back is not None and held_back.num_rows:
        report.read += held_back.num_rows
        report.quarantined += held_back.num_rows
        for reasons in held_back["reasons"].to_pylist():
            for r in reasons or ():
                report.quarantined_by_reason[r] = report.quarantined_by_reason.get(r, 0) + 1
    report.warnings = {k: n for k, n in v.warnings.items() if n}
    report.tolerated_deviations = dict(c.get("tolerated_deviations", {}))
    report.check_balance()
    verified = storage_date(v.verified)

    # -- voids: this batch's and the pending ones, on this batch, then on earlier runs' records
    batch_voids = v.voids
    batch_void_ids = {x.voiding_statement_id for x in batch_voids if x.voiding_statement_id}
    stored = state.voids(source)
    known = {x.voiding_statement_id for x in stored}
    ledger: dict[str, Void] = {}
    for x in stored:  # earliest first: the earliest void of a target takes effect
        if x.status != "ignored" and x.voiding_statement_id not in batch_void_ids:
            ledger.setdefault(x.target_id, Void(x.voiding_statement_id, x.target_id, x.at))
    first = apply_voids(verified, batch_voids, ledger, known_voiding_ids=known)
    changes: list[VoidChange] = list(first.changes)
    warnings = list(first.warnings)
    removed = list(first.voided)
    earlier_ids: list[str] = []
    if first.pending:
        earlier = fz.read_verified(source)
        if window is not None and earlier.num_rows:
            earlier = earlier.filter(pc.invert(in_window(earlier, window)))
        wanted = pa.array(list(first.pending), pa.string())
        earlier = earlier.filter(pc.is_in(earlier["statement_id"], value_set=wanted))
        if earlier.num_rows:
            fresh = [x for x in first.pending.values() if x.voiding_statement_id in batch_void_ids]
            old = {t: x for t, x in first.pending.items()
                   if x.voiding_statement_id not in batch_void_ids}
            second = apply_voids(earlier, fresh, old, known_voiding_ids=known | batch_void_ids)
            changes.extend(second.changes)
            earlier_ids = list(second.voided)
            removed.extend(earlier_ids)
    published = first.verified
    report.published = published.num_rows
    report.voided = len(set(removed))
    report.voided_earlier = len(set(earlier_ids))
    report.void_warnings = [w.detail for w in warnings]

    # -- the quality gate
    from pipelines.verify import quality

    outcome = quality.check_batch(
        published, quarantined=report.quarantined if window is not None else 0,
        read=quarantine_read, previous_counts=state.published_counts(source))
    report.quality = {"passed": outcome.passed, "failed_critical": outcome.failed_critical,
                      "failed_warning": outcome.failed_warning, "message": outcome.message()}
    report.quality_results = str(quality.save_results(outcome, settings.storage_root, run_id))
    if settings.data_docs:
        report.data_docs = str(quality.build_data_docs(settings.storage_root, outcome,
                                                       run_id=run_id))
    if not outcome.passed:
        raise VerifyError(f"source {source!r}: {outcome.message()}; nothing was published",
                          report)

    # -- publish: state first, then the verified zone, then quarantine. Nothing here is needed by
    # the next run: it re-verifies the window (or the quarantine) from the normalised zone, the
    # applied voids stay in the ledger, the void log takes each pair once and every file is
    # replaced, so a crash at any point (crash points verify-*) is repaired by re-running.
    ignored = [w.voiding_statement_id for w in warnings if w.voiding_statement_id]
    state.record_voids(
        source, run_id,
        seen=[(x.voiding_statement_id, x.target_id, x.at) for x in batch_voids
              if x.voiding_statement_id],
        changes=[(ch.statement_id, ch.voiding_statement_id, ch.record_id, ch.kind, ch.voided_at)
                 for ch in changes if ch.voiding_statement_id],
        ignored=ignored)
    crashpoint("verify-voids-recorded")
    fz.merge_verified(source, published, window, removed, run_id)  # "verify-partition" each
    crashpoint("verify-verified-written")
    publish_quarantine()  # "verify-quarantine-file" after each file
    crashpoint("verify-quarantine-written")
    report.pending_voids = len(state.voids(source, status="pending"))
    report.status = "succeeded"
    crashpoint("verify-before-finished")
    state.verify_finished(run_id, source, report.kind, report.window, "succeeded",
                          _counts(report))


# ------------------------------------------------------------------------------------------------
# quarantine: list and replay


def _has_reason(t: pa.Table, reason: str) -> pa.Array:
    return pa.array([reason in (r or ()) for r in t["reasons"].to_pylist()], pa.bool_())


def list_quarantine(settings: Settings, reason: str | None = None) -> pa.Table:
    """Every quarantined record of the configured sources (optionally with reason ``reason``)."""
    fz = FootprintZones(settings.storage_root)
    t = fz.read_quarantine()
    if reason and t.num_rows:
        t = t.filter(_has_reason(t, reason))
    return t


def replay_quarantine(settings: Settings, source_name: str, run_id: str) -> VerifyReport:
    """Re-verify a source's quarantined records; see the module docstring.

    **Conflicting duplicates are never replayed.** A body quarantined as
    ``conflicting-duplicate`` (its statement id was first received with another body) stays in
    quarantine, whatever else changed, until a person decides which body is right: the id
    belongs to the first body received (earliest ``stored``; across runs, the body an earlier
    run verified or quarantined for another reason), as an LRS keeps the first and answers 409
    Conflict to the rest. Replay counts such bodies among those that stay (``read`` and
    ``quarantined``, ``quarantined_by_reason["conflicting-duplicate"]``, ``conflicts_held``),
    so that read = verified + quarantined + duplicates + voiding still holds. A replayed body
    whose id the verified footprint already holds with another body becomes such a conflict
    itself: two bodies of one id never both reach the verified set. The way out of quarantine
    for a conflict is to correct the source (remove or fix the wrong body) and ingest its window
    again, which replaces that window's quarantine.

    Takes the source's ingestion lock.
    """
    s = settings.source(source_name)
    report = VerifyReport(source=s.name, run_id=run_id, kind="replay", window=None)
    started = time.perf_counter()
    state = StateStore(settings.state_url)
    try:
        with state.lock(f"ingest:{s.name}"):
            _replay(settings, state, report)
        report.seconds = round(time.perf_counter() - started, 3)
        return report
    except BaseException as exc:
        report.status = "failed"
        report.error = str(exc)
        report.seconds = round(time.perf_counter() - started, 3)
        state.verify_finished(run_id, s.name, "replay", None, "failed", _counts(report), str(exc))
        if isinstance(exc, VerifyError):
            exc.report = report
        raise
    finally:
        state.close()


def _key(t: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(
        pc.fill_null(t["statement_id"], ""), t["raw_sha256"], "/")


def _replay(settings: Settings, state: StateStore, report: VerifyReport) -> None:
    s = settings.source(report.source)
    roster, catalogue = _reference(settings)
    fz = FootprintZones(settings.storage_root)
    fz.clean_leftovers(s.name)
    labels = fz.quarantine_windows(s.name)
    files = {label: fz.read_quarantine_window(s.name, label) for label in labels}
    if not files or not any(t.num_rows for t in files.values()):
        report.status = "succeeded"
        report.message = "nothing in quarantine"
        return
    q = pa.concat_tables(files.values())
    is_conflict = _has_reason(q, CONFLICTING_DUPLICATE)
    conflicts = q.filter(is_conflict)
    replayable = q.filter(pc.invert(is_conflict))
    norm = Zones(settings.storage_root).read_normalised(s.name)
    if norm.num_rows and replayable.num_rows:
        norm = norm.filter(pc.is_in(_key(norm), value_set=_key(replayable)))
    else:
        norm = norm.slice(0, 0)
    raw = {sha: text.encode("utf-8") for sha, text in zip(
        replayable["raw_sha256"].to_pylist(), replayable["raw"].to_pylist(), strict=True)}
    # a body the normalised zone does not hold (see _dropped_bodies) is normalised again
    missing = replayable.filter(pc.invert(pc.is_in(_key(replayable), value_set=_key(norm))))
    if missing.num_rows:
        pages: list[PageData] = []
        for sha, label, at in zip(missing["raw_sha256"].to_pylist(),
                                  missing["window"].to_pylist(),
                                  missing["first_quarantined_at"].to_pylist(), strict=True):
            pages.append(([raw[sha]], f"quarantine/window={label}", at, [0]))
        norm = pa.concat_tables([norm, _normalise(s.name, norm.schema, pages, report.run_id)])
    held = _held(fz, s.name, norm, None)
    now = datetime.now(UTC)
    v = verify(norm, raw, roster, catalogue, now=now, run_id=report.run_id, verified_at=now,
               source=s.name, xapi_version=s.xapi_version, tolerate=s.tolerate, held=held)
    left = set(_key(v.verified).to_pylist()) | set(
        pc.binary_join_element_wise(v.voiding["statement_id"], v.voiding["raw_sha256"], "/")
        .to_pylist())
    still = {k: (r, d) for k, r, d in zip(
        _key(v.quarantined).to_pylist(), v.quarantined["reasons"].to_pylist(),
        v.quarantined["detail"].to_pylist(), strict=True)}

    def publish_quarantine() -> None:
        for label, t in files.items():
            if t.num_rows == 0:
                continue
            keys = _key(t).to_pylist()
            keep = pa.array([k not in left for k in keys])
            reasons = [still[k][0] if k in still else r
                       for k, r in zip(keys, t["reasons"].to_pylist(), strict=True)]
            detail = [still[k][1] if k in still else d
                      for k, d in zip(keys, t["detail"].to_pylist(), strict=True)]
            run = [report.run_id if k in still else r
                   for k, r in zip(keys, t["run_id"].to_pylist(), strict=True)]
            new = t
            for name, values in (("reasons", reasons), ("detail", detail), ("run_id", run)):
                i = new.column_names.index(name)
                new = new.set_column(i, new.schema.field(i), pa.array(values, new.schema[i].type))
            fz.write_quarantine(s.name, label, new.filter(keep), report.run_id)

    report.conflicts_held = conflicts.num_rows
    _publish(settings, state, fz, report, v, window=None, quarantine_read=v.verified.num_rows,
             publish_quarantine=publish_quarantine, held_back=conflicts)
    report.replayed = len(left)
    report.message = (f"{report.replayed} records left quarantine ({report.published} published), "
                      f"{report.quarantined} stay")
    if report.conflicts_held:
        report.message += (f", of which {report.conflicts_held} conflicting bodies wait for a "
                           "person to decide which body is right")
