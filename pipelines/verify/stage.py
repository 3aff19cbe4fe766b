"""The verification stage: one window of one source -> the verified footprint and quarantine.

``verify_window(settings, source, window, run_id)`` runs after ingestion has committed the window
(``pipelines.ingest.ingest_source`` calls it under the same lock, for the same window):

1. the window's normalised rows (time key ``stored``, else ``timestamp``, in the window) and
   their raw bytes from the window's raw-zone folder are verified against the roster and the
   catalogue (:func:`pipelines.verify.rules.verify`), :data:`PIECE_ROWS` rows at a time, the
   verified rows staged to disk as they come (:func:`_judge_window`: what spans pieces,
   duplicates, conflicts and the cmi5 order rules, is judged over the whole window), so memory
   is bounded by a piece, not by the window;
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

import bisect
import contextlib
import ctypes
import hashlib
import itertools
import shutil
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import contracts
from pipelines.config import Settings
from pipelines.faults import crashpoint
from pipelines.sources.base import Window
from pipelines.store.footprint import QUARANTINE, VERIFIED, DayRows, FootprintZones, TableDays
from pipelines.store.state import StateStore
from pipelines.store.zones import (
    RAW_SCHEMA,
    Batches,
    RowGroups,
    Zones,
    in_window,
    read_staged,
    write_stage_file,
)
from pipelines.verify.reference import Catalogue, Roster, load_catalogue, load_roster
from pipelines.verify.rules import (
    BLOCKING,
    CMI5_COMPLETED_TWICE,
    CMI5_FAILED_AFTER_PASSED,
    CMI5_PASSED_TWICE,
    CONFLICTING_DUPLICATE,
    NORMALISED_COLUMNS,
    RawStatements,
    Verification,
    _arr,
    _binary_views,
    cmi5_flags,
    duplicate_flags,
    hex_strings,
    verify,
)
from pipelines.verify.voiding import Void, VoidChange, apply_voids, voids_from_table
from pipelines.xapi.normalise import PageData, normalise_batch
from pipelines.xapi.validate import Problem, validate_detailed_bytes

_VERIFIED_SCHEMA = VERIFIED.arrow_schema()
_QUARANTINE_SCHEMA = QUARANTINE.arrow_schema()
_NORM_SCHEMA = contracts.normalised_statement().arrow_schema()

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


#: raw parts (compressed bytes) from which a window's bodies are judged in worker processes:
#: 12 MiB hold about 100,000 typical statements, some two seconds of judging a core
PARALLEL_JUDGE_BYTES = 12 * 2**20

_Judged = tuple[bytes | bytearray, np.ndarray, dict[str, list[Problem]], dict[str, list[Problem]]]


def _judge_part(path: Path, version: str, tolerate: frozenset[str]) -> _Judged:
    """One raw part's normalised bodies: their SHA-256 digests (32 bytes each, in one buffer),
    their rows in the part, and the problems (and tolerated ones) the xAPI validator finds, by
    hex digest. A pure function of the file, so parts can be judged in worker processes."""
    t = pq.read_table(path, columns=["raw", "status"])
    at = pc.indices_nonzero(pc.equal(t["status"], "normalised")).to_numpy()
    # views of the bodies where they lie (taking the normalised rows would copy them)
    views = [v for chunk in t["raw"].chunks for v in _binary_views(chunk)]
    if len(at) < len(views):
        views = [views[j] for j in at.tolist()]
    # digests go straight into one buffer (no str a body: a million of those fragment the
    # heap for the rest of the run); hex text only where there are problems
    digests = bytearray(32 * len(views))
    problems: dict[str, list[Problem]] = {}
    tolerated: dict[str, list[Problem]] = {}
    i = 0
    for v in views:
        h = hashlib.sha256(v)
        digests[i:i + 32] = h.digest()
        i += 32
        verdict = validate_detailed_bytes(v, version, tolerate)  # type: ignore[arg-type]
        if verdict.problems:
            problems[h.hexdigest()] = verdict.problems
        if verdict.tolerated:
            tolerated[h.hexdigest()] = verdict.tolerated
    return digests, at, problems, tolerated


def _judged_parts(files: list[Path], version: str, tolerate: frozenset[str],
                  workers: int) -> Iterator[_Judged]:
    """:func:`_judge_part` of every file, in order: in ``workers`` processes when there are
    several parts holding at least :data:`PARALLEL_JUDGE_BYTES` (judging is pure-Python CPU
    work; below that, starting the processes costs more than they save), else here."""
    if workers <= 1 or len(files) < 2 or sum(
            f.stat().st_size for f in files) < PARALLEL_JUDGE_BYTES:
        for f in files:
            yield _judge_part(f, version, tolerate)
        return
    from pipelines.ingest import worker_pool

    with worker_pool(min(workers, len(files)), "pipelines.verify.stage") as pool:
        n = len(files)
        yield from pool.map(_judge_part, files, [version] * n, [tolerate] * n)


class WindowRaw(RawStatements):
    """The window's raw statements (those that were normalised), streamed from the raw zone a
    part file at a time: each body is judged by the xAPI validator as it streams by, and only
    its digest, where it lies and the problems found are kept. Bytes are read again later only
    for the bodies asked for (quarantined rows, bodies the normalised zone did not keep).

    So verification never holds the window's raw bytes at once (1.7 GB for 1,000,000 typical
    statements) and never copies them. With ``workers`` > 1 the parts are judged in that many
    processes.
    """

    def __init__(self, files: list[Path], version: str, tolerate: Collection[str],
                 workers: int = 1) -> None:
        self._dict = None
        self._views: dict[str, memoryview] = {}
        self.files = files
        self.version, self.tolerate = version, frozenset(tolerate)
        self._problems: dict[str, list[Problem]] = {}
        self._tolerated: dict[str, list[Problem]] = {}
        self._held: list[pa.Table] = []  # keeps the Arrow buffers of fetched views alive
        self.checked = False  # set once require() has seen every body verify will ask for
        shas: list[pa.Array] = []
        parts: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        for k, (digests, at, problems, tolerated) in enumerate(
                _judged_parts(files, version, self.tolerate, workers)):
            self._problems.update(problems)
            self._tolerated.update(tolerated)
            shas.append(hex_strings(digests))
            parts.append(np.full(len(at), k, np.int32))
            rows.append(at)
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
        if not self.checked:
            self.require(pa.array(shas, pa.string()))
        problems, tolerated = self._problems, self._tolerated
        return ({s: problems[s] for s in shas if s in problems},
                {s: tolerated[s] for s in shas if s in tolerated})

    def require(self, shas: pa.Array) -> None:
        """Raise ``ValueError`` unless every body of ``shas`` is in the window's raw zone."""
        self.where(shas)

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

    def where(self, shas: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """The raw part and the row in it of each body of ``shas`` (``ValueError`` when one is
        not in the window's raw zone)."""
        at = pc.index_in(shas, value_set=self._digests)
        if at.null_count:
            lost = shas.filter(pc.is_null(at)).to_pylist()
            raise ValueError(
                f"no raw bytes for {len(lost)} statement bodies (raw is looked up by raw_sha256), "
                f"e.g. {', '.join(lost[:3])}")
        i = at.to_numpy()
        return self._part[i], self._row[i]

    def columns_at(self, at: np.ndarray, columns: list[str]) -> pa.Table:
        """Raw-zone ``columns`` of the bodies at positions ``at`` of :attr:`order`, in that
        order (only the part files holding them are read)."""
        if len(at) == 0:
            return RAW_SCHEMA.empty_table().select(columns)
        return _gather(self._part[at], self._row[at],
                       lambda k: pq.read_table(self.files[k], columns=columns))

    def get(self, sha: str) -> bytes | memoryview | None:
        if sha not in self._views:
            self.prefetch([sha])
        return self._views.get(sha)


def _raw_files(root: Zones, source: str, window: Window) -> list[Path]:
    folder = root.source_dir(root.raw, source) / f"window={window.label()}"
    return sorted(folder.glob("part-*.parquet"))


def _normalise(source: str, norm_schema: pa.Schema, pages: list[PageData],
               run_id: str) -> pa.Table:
    """Normalised rows (``norm_schema``, with ``source`` and ``date``) for raw statements."""
    if not pages:
        return norm_schema.empty_table()
    rows = normalise_batch(source, run_id, pages).rows
    rows = rows.append_column("source", pa.repeat(pa.scalar(source, pa.string()), rows.num_rows))
    return storage_date(rows.select(norm_schema.names).cast(norm_schema))


def _dropped_bodies(source: str, norm_shas: pa.Array, raws: WindowRaw,
                    schema: pa.Schema) -> pa.Table:
    """The window's statements whose body the normalised zone did not keep, normalised again.

    The normalised zone keeps one row per statement id and date partition: of two bodies of one
    id stored the same day it keeps the first read and counts the other as a duplicate. An
    exact copy is one, another body is a conflict and must be judged (and quarantined), so the
    bodies missing from the normalised rows (``norm_shas``, their ``raw_sha256``) are taken back
    from the window's raw zone, as rows of ``schema`` (which holds ``date``).
    """
    order = raws.order_array()
    if len(order) <= len(norm_shas):
        return schema.empty_table()  # nothing was dropped (the usual case)
    missing = pc.invert(pc.is_in(order, value_set=norm_shas))
    if not pc.any(missing).as_py():
        return schema.empty_table()  # exact copies only
    rows = pc.indices_nonzero(missing)
    raws.prefetch(order.take(rows).to_pylist())
    meta = raws.columns_at(rows.to_numpy(), ["fetch_ref", "fetch_index", "fetched_at", "run_id"])
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
    return _normalise(source, schema, pages, meta["run_id"][0].as_py())


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


def _give_back_memory() -> None:
    """Return freed memory to the system: Arrow's pool, and the C heap where the platform's
    C library can trim it (glibc: judging a window leaves ~50-70 MB of freed small blocks)."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def _lean_memory_pool() -> Iterator[None]:
    """Arrow's jemalloc pool while verifying, where the platform has it.

    With Arrow's default pool (mimalloc) a verification holding a whole window kept about 1.9
    times the bytes its tables hold (1,317 MiB of RSS for a 705 MiB table of 1,000,000 rows);
    jemalloc kept 1.26 times at the same speed. Judged a piece at a time, a 1,000,000-statement
    window still peaks ~180 MiB lower on jemalloc (1,035 against 1,219 MiB RSS). Ingestion keeps
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
        fz = FootprintZones(settings.storage_root)
        fz.clean_leftovers(s.name)
        before = fz.read_quarantine(s.name, _QUARANTINE_KEYS)
        for old in (zones.staging / s.name).glob("verify-*"):  # a killed run's (we hold the lock)
            shutil.rmtree(old, ignore_errors=True)
        stage = StagedRows(zones.staging / s.name / f"verify-{run_id}")
        try:
            batch, quarantined, judged = _judge_window(
                settings, s.name, window, run_id, roster, catalogue, before, stage, report)
            _give_back_memory()
        except ValueError as exc:
            stage.discard()
            raise VerifyError(f"source {s.name!r}: cannot verify window {window.label()}: "
                              f"{exc}", report) from exc
        except BaseException:
            stage.discard()
            raise

        def publish_quarantine() -> None:
            fz.put_quarantine(s.name, window.label(), quarantined.written)
            _drop_judged_elsewhere(fz, s.name, window.label(), before, judged, run_id)

        try:
            _publish(settings, state, fz, report, batch, window=window,
                     quarantine_read=batch.counts["read"], publish_quarantine=publish_quarantine)
        finally:
            stage.discard()
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


# -- a window judged a piece at a time ----------------------------------------------------------

PIECE_ROWS = 65_536
"""Normalised rows verified at a time: memory stays bounded by a piece, not by the window
(at 1,000,000 statements: 131,072 peaked 165 MiB higher, 65,536 costs ~1 s more)."""

_KEY_COLUMNS = ["statement_id", "raw_sha256", "stored", "timestamp"]


@dataclass
class _Batch:
    """What a verification publishes: the verified rows (a table or staged), the counts, the
    row warnings by code and this batch's voids."""

    rows: VerifiedRows
    counts: dict[str, Any]
    warnings: dict[str, int]
    voids: list[Void]


class _Tally:
    """What the pieces of one verification add up to: the counts, the warnings and the voids,
    each piece's verified rows staged in ``stage``; the cmi5 order rules are judged over the
    verified rows of all the pieces at the end (:meth:`finish`), as warnings patched onto the
    staged rows."""

    def __init__(self, stage: StagedRows) -> None:
        self.stage = stage
        self.counts: dict[str, Any] = {"read": 0, "verified": 0, "quarantined": 0,
                                       "duplicates": 0, "voiding": 0, "quarantined_by_reason": {}}
        self.deviations: dict[str, int] = {}
        self.warnings: dict[str, int] = {}
        self.voiding: list[pa.Table] = []
        self.candidates: list[pa.Table] = []

    def add(self, v: Verification) -> None:
        """One piece's verification (``verify(..., cmi5=False)``)."""
        counts = self.counts
        if v.cmi5 is not None and v.cmi5.num_rows:
            c = v.cmi5
            self.candidates.append(c.set_column(0, "row", pc.add(c["row"], counts["verified"])))
        self.stage.add(storage_date(v.verified))
        self.voiding.append(v.voiding)
        for k in ("read", "verified", "quarantined", "duplicates", "voiding"):
            counts[k] += v.counts[k]
        for name, into in (("quarantined_by_reason", counts["quarantined_by_reason"]),
                           ("tolerated_deviations", self.deviations)):
            for code, m in v.counts.get(name, {}).items():
                into[code] = into.get(code, 0) + m
        for code, m in v.warnings.items():
            self.warnings[code] = self.warnings.get(code, 0) + m

    def finish(self) -> _Batch:
        counts, warnings = self.counts, self.warnings
        if self.deviations:
            counts["tolerated_deviations"] = dict(sorted(self.deviations.items()))
        counts["quarantined_by_reason"] = {c: counts["quarantined_by_reason"][c]
                                           for c in BLOCKING
                                           if counts["quarantined_by_reason"].get(c)}
        if self.candidates:  # the cmi5 order rules, over every piece's verified rows
            cand = pa.concat_tables(self.candidates)
            flags3 = cmi5_flags(cand, counts["verified"])
            codes = (CMI5_COMPLETED_TWICE, CMI5_PASSED_TWICE, CMI5_FAILED_AFTER_PASSED)
            for code, mask in zip(codes, flags3, strict=True):
                warnings[code] = warnings.get(code, 0) + int(mask.sum())
            for r, rid in zip(cand["row"].to_pylist(), cand["record_id"].to_pylist(),
                              strict=True):
                got = [code for code, mask in zip(codes, flags3, strict=True) if mask[r]]
                if got:
                    self.stage.patch[rid] = got
        voiding = [t for t in self.voiding if t.num_rows]
        voids = voids_from_table(pa.concat_tables(voiding)) if voiding else []
        return _Batch(self.stage, counts, warnings, voids)


class VerifiedRows(DayRows, Protocol):
    """A batch's verified rows (with ``date``): by day for the merge, some columns of all of
    them for the quality check, and the rows of some statement ids for the voids."""

    num_rows: int

    def columns(self, names: list[str]) -> pa.Table:
        """Some columns of every row."""
        ...

    def with_ids(self, ids: pa.Array, names: list[str]) -> pa.Table: ...


class TableRows(TableDays):
    """Verified rows held as one table."""

    def __init__(self, rows: pa.Table) -> None:
        super().__init__(rows)
        self.num_rows = rows.num_rows

    def columns(self, names: list[str]) -> pa.Table:
        return self.rows.select(names)

    def with_ids(self, ids: pa.Array, names: list[str]) -> pa.Table:
        hit = pc.fill_null(pc.is_in(self.rows["statement_id"], value_set=ids), False)
        return self.rows.select(names).filter(hit)


class StagedRows:
    """Verified rows staged as they are judged (Arrow IPC files under the run's staging folder,
    one a piece, each date's rows in a run of record batches; see
    :func:`pipelines.store.zones.write_stage_file`) and read back a day at a time, or a few
    columns at a time, memory-mapped.

    ``patch`` (record id -> warning codes) adds the warnings judged over the whole window (the
    cmi5 order rules) to the rows as they are read back: they come before a row's own warnings,
    as :data:`pipelines.verify.rules.WARNINGS` orders them.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pieces: list[tuple[Path, dict[str, Batches]]] = []
        self.num_rows = 0
        self.patch: dict[str, list[str]] = {}

    def add(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        if not self.pieces:
            self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"piece-{len(self.pieces):05d}.arrow"
        schema = rows.drop_columns(["date"]).schema
        self.pieces.append((path, write_stage_file(path, rows, schema)))
        self.num_rows += rows.num_rows

    def days(self) -> list[str]:
        return sorted({d for _, groups in self.pieces for d in groups})

    def day(self, day: str) -> pa.Table:
        t = pa.concat_tables([read_staged(path, groups[day])
                              for path, groups in self.pieces if day in groups])
        t = t.append_column("date", pa.repeat(pa.scalar(day, pa.string()), t.num_rows))
        return self._patched(t)

    def _all(self, path: Path, groups: dict[str, Batches], names: list[str]) -> pa.Table:
        """``names`` of a piece's rows, in staged order (``date`` rebuilt from the runs)."""
        stored = [c for c in names if c != "date"]
        if "warnings" in names and self.patch:
            stored = list(dict.fromkeys([*stored, "record_id"]))  # to patch them
        out = []
        for day, span in sorted(groups.items(), key=lambda g: g[1]):
            t = read_staged(path, span, stored)
            if "date" in names:
                t = t.append_column("date", pa.repeat(pa.scalar(day, pa.string()), t.num_rows))
            out.append(t)
        return self._patched(pa.concat_tables(out)).select(names)

    def columns(self, names: list[str]) -> pa.Table:
        if not self.pieces:
            return _VERIFIED_SCHEMA.empty_table().select(names)
        # one chunk a piece, not one a date (pandas and Great Expectations are slow on columns
        # of many chunks)
        return pa.concat_tables([self._all(path, groups, names).combine_chunks()
                                 for path, groups in self.pieces])

    def with_ids(self, ids: pa.Array, names: list[str]) -> pa.Table:
        out = []
        for path, groups in self.pieces:
            t = self._all(path, groups, list(dict.fromkeys(["statement_id", *names])))
            hit = pc.fill_null(pc.is_in(t["statement_id"], value_set=ids), False)
            if pc.any(hit).as_py():
                out.append(t.filter(hit).select(names))
        if not out:
            return _VERIFIED_SCHEMA.empty_table().select(names)
        return pa.concat_tables(out)

    def _patched(self, t: pa.Table) -> pa.Table:
        if not self.patch or "warnings" not in t.column_names or t.num_rows == 0:
            return t
        hit = pc.is_in(t["record_id"], value_set=pa.array(list(self.patch), pa.string()))
        at = np.nonzero(_np_mask(hit))[0]
        if len(at) == 0:
            return t
        i = t.column_names.index("warnings")
        field_ = t.schema.field(i)
        rows = pa.array(at, pa.int64())
        # only the hit rows go through Python; the others are taken as they are
        patched = [self.patch[rid] + (w or []) for rid, w in zip(
            t["record_id"].take(rows).to_pylist(), t["warnings"].take(rows).to_pylist(),
            strict=True)]
        where = np.arange(t.num_rows, dtype=np.int64)
        where[at] = t.num_rows + np.arange(len(at), dtype=np.int64)
        column = pa.concat_arrays([*t["warnings"].chunks, pa.array(patched, field_.type)])
        return t.set_column(i, field_, column.take(pa.array(where)))

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.pieces = []


class StagedQuarantine:
    """A window's quarantined rows, staged as they are judged (an Arrow IPC file a piece, their
    ``raw`` still empty), then written as the window's quarantine file (:meth:`write`) with
    each body read back from the raw zone, one raw part at a time.

    So memory holds a piece's rows or a raw part's bodies, never the window's quarantine: a
    stale roster that quarantines a whole 1,000,000-statement window would otherwise hold its
    1.7 GB of bodies at once (and peaked at 9.5 GiB). The file is written in the staging folder
    and moved into place only when the batch is published
    (:meth:`pipelines.store.footprint.FootprintZones.put_quarantine`); rows come in the order
    their statements were read (raw part, then row).
    """

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder = folder
        self.schema = schema  # the quarantine file's (no ``source``)
        self.files: list[Path] = []
        self.num_rows = 0
        self.written: Path | None = None

    def add(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"quarantine-{len(self.files):05d}.arrow"
        rows = rows.select(self.schema.names).cast(self.schema)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.schema) as w:
            w.write_table(rows)
        self.files.append(path)
        self.num_rows += rows.num_rows

    def _staged(self, k: int, columns: list[str] | None = None) -> pa.Table:
        with pa.memory_map(str(self.files[k])) as src:
            t = pa.ipc.open_file(src).read_all()
            return t if columns is None else t.select(columns)

    def write(self, raws: WindowRaw) -> None:
        """Write the quarantine file (``written``) with the bodies, and drop the staged rows."""
        if not self.num_rows:
            return
        staged_shas = [self._staged(k, ["raw_sha256"])["raw_sha256"].combine_chunks()
                       for k in range(len(self.files))]
        sizes = [len(a) for a in staged_shas]
        shas = pa.concat_arrays(staged_shas)
        del staged_shas
        part, row = raws.where(shas)
        staged_file = np.repeat(np.arange(len(self.files), dtype=np.int64), sizes)
        staged_row = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
        order = np.lexsort((row, part))
        bounds = np.flatnonzero(np.diff(part[order])) + 1
        raw_at = self.schema.get_field_index("raw")
        raw_field = self.schema.field(raw_at)
        path = self.folder / "quarantine.parquet"
        with RowGroups(path, self.schema) as out:
            for sel in np.split(order, bounds):
                k = int(part[sel[0]])
                bodies = pq.read_table(raws.files[k], columns=["raw"])["raw"].take(
                    pa.array(row[sel], pa.int64()))
                # each staged file is mapped only while its rows are taken (so its pages do
                # not stay in the process's memory)
                out.add(_gather(staged_file[sel], staged_row[sel], self._staged).set_column(
                    raw_at, raw_field, _texts(bodies, raw_field.type)))
        for f in self.files:
            f.unlink(missing_ok=True)
        self.files, self.written = [], path



def _gather(files: np.ndarray, rows: np.ndarray, read: Callable[[int], pa.Table]) -> pa.Table:
    """The rows at (``files``, ``rows``), in that order, each file read once (``read(k)``) and
    let go once its rows are taken."""
    pieces: list[pa.Table] = []
    where: list[np.ndarray] = []
    for k in np.unique(files):
        sel = np.flatnonzero(files == k)
        pieces.append(read(int(k)).take(pa.array(rows[sel], pa.int64())))
        where.append(sel)
    back = np.argsort(np.concatenate(where), kind="stable")
    return pa.concat_tables(pieces).take(pa.array(back, pa.int64()))


def _texts(bodies: pa.ChunkedArray, typ: pa.DataType) -> pa.Array:
    """Raw bodies (binary) as the quarantine's text: UTF-8 as received, and where a body is not
    valid UTF-8, its bytes decoded with replacement characters (as
    :func:`pipelines.verify.rules.raw_texts` does)."""
    try:
        return bodies.cast(typ)
    except pa.ArrowInvalid:
        return pa.array([None if b is None else b.decode("utf-8", "replace")
                         for b in bodies.to_pylist()], typ)


class _Published:
    """The rows a batch publishes (its verified rows but those voided now), a few columns at a
    time, for the quality check (:class:`pipelines.verify.quality.ColumnSource`)."""

    def __init__(self, rows: VerifiedRows, voided: pa.Array | None, num_rows: int) -> None:
        self.rows, self.num_rows = rows, num_rows
        self.column_names = list(_VERIFIED_SCHEMA.names)
        self.keep: pa.Array | None = None  # which rows are published, when some are not
        if voided is not None:
            ids = rows.columns(["statement_id"])["statement_id"]
            self.keep = pc.invert(pc.fill_null(pc.is_in(ids, value_set=voided), False))

    def load(self, columns: list[str]) -> pa.Table:
        t = self.rows.columns(columns)
        return t if self.keep is None else t.filter(self.keep)


def _np_mask(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), bool)


def _normalised_pieces(zones: Zones, source: str, window: Window,
                       columns: list[str]) -> Iterator[pa.Table]:
    """The window's normalised rows (``columns``), in date-partition order, about
    :data:`PIECE_ROWS` at a time. The same call gives the same pieces (files and row groups
    are read in order); a column an older partition file lacks comes as nulls, as the
    contract's schema reads it."""
    schema = contracts.normalised_statement().arrow_schema(with_partitions=False)
    lo = window.since.date().isoformat() if window.since else ""
    hi = window.until.date().isoformat() if window.until else "9999"
    want = list(dict.fromkeys([*columns, "stored", "timestamp"]))
    rows = PIECE_ROWS
    held: list[pa.Table] = []
    n = 0
    for day in zones.partition_dates(source):
        if not lo <= day <= hi:
            continue
        # ParquetFile rather than a dataset with the contract's schema (as the partition merge
        # reads an older file): the dataset scanner peaked ~60 MiB higher at 1,000,000 rows
        f = pq.ParquetFile(zones.partition_file(source, day))
        present = [c for c in want if c in f.schema_arrow.names]
        for b in f.iter_batches(batch_size=min(rows, 16_384), columns=present):
            t = pa.Table.from_batches([b])
            for c in want:
                if c not in present:
                    t = t.append_column(schema.field(c), pa.nulls(t.num_rows, schema.field(c).type))
            t = t.select(want).cast(pa.schema([schema.field(c) for c in want]))
            t = t.filter(in_window(t, window))
            held.append(t)
            n += t.num_rows
            while n >= rows:
                whole = pa.concat_tables(held)
                yield whole.slice(0, rows).select(columns).combine_chunks()
                rest = whole.slice(rows)
                held, n = [rest], rest.num_rows
        f.close()
    if n:
        yield pa.concat_tables(held).select(columns).combine_chunks()


def _judge_window(settings: Settings, source: str, window: Window, run_id: str,
                  roster: Roster, catalogue: Catalogue, before: pa.Table, stage: StagedRows,
                  report: VerifyReport) -> tuple[_Batch, StagedQuarantine, pa.Table]:
    """Judge the window a piece of rows at a time, staging the verified rows.

    First over the whole window, with only the ids, digests and time keys (and the raw zone
    streamed once, every body judged by the xAPI validator; bytes are read again only for the
    bodies named later): the bodies the normalised zone did not keep (one more piece, at the
    end, of any size: they are rare), which rows are exact duplicates and which conflicting
    bodies; then the rules a piece at a time (:func:`pipelines.verify.rules.verify`, given those
    flags), each piece's verified and quarantined rows staged; then what spans pieces: the cmi5
    order warnings and the quarantine file with the bodies (:class:`StagedQuarantine`). Returns
    the batch, the staged quarantine and the judged keys that other windows' quarantine files
    hold (for :func:`_drop_judged_elsewhere`). ``before`` is every window's quarantine of the
    source (:data:`_QUARANTINE_KEYS`).
    """
    s = settings.source(source)
    zones = Zones(settings.storage_root)
    fz = FootprintZones(settings.storage_root)
    keys = pa.concat_tables(list(_normalised_pieces(zones, source, window, _KEY_COLUMNS)) or
                            [_NORM_SCHEMA.empty_table().select(_KEY_COLUMNS)]).combine_chunks()
    raws = WindowRaw(_raw_files(zones, source, window), s.xapi_version, s.tolerate,
                     settings.verify_workers())
    piece_schema = pa.schema([_NORM_SCHEMA.field(c) for c in (*NORMALISED_COLUMNS, "date")])
    dropped = _dropped_bodies(source, keys["raw_sha256"], raws, piece_schema)
    report.recovered = dropped.num_rows
    if dropped.num_rows:
        keys = pa.concat_tables([keys, dropped.select(_KEY_COLUMNS)]).combine_chunks()
    sid, sha = _arr(keys["statement_id"]), _arr(keys["raw_sha256"])
    held = _held(fz, source, keys.select(["statement_id", "raw_sha256"]), window, before,
                 window.label())
    key = pc.binary_join_element_wise(pa.scalar(source), sid, "/")
    dup, conflict = duplicate_flags(key, sid, sha, _arr(keys["stored"]), held)
    del key, held
    raws.require(pc.unique(sha))
    raws.checked = True
    judged = keys.select(["statement_id", "raw_sha256"])
    del keys

    now = datetime.now(UTC)
    conflict_rows = sorted(conflict)
    tally = _Tally(stage)
    quarantined = StagedQuarantine(stage.folder, fz.quarantine_schema)
    first = _first_quarantined(before)
    cols = [c for c in NORMALISED_COLUMNS if c != "source"]
    pieces: Iterator[pa.Table] = _normalised_pieces(zones, source, window, cols)
    if dropped.num_rows:
        pieces = itertools.chain(pieces, [dropped.select(cols)])
    start = 0
    for piece in pieces:
        n = piece.num_rows
        if not pc.all(pc.equal(piece["statement_id"], judged["statement_id"].slice(start, n))
                      ).as_py():
            raise ValueError("the normalised zone changed while the window was verified")
        lo, hi = bisect.bisect_left(conflict_rows, start), bisect.bisect_left(conflict_rows,
                                                                             start + n)
        flags = (dup[start:start + n], {r - start: conflict[r] for r in conflict_rows[lo:hi]})
        v = verify(piece, raws, roster, catalogue, now=now, run_id=run_id, verified_at=now,
                   source=source, xapi_version=s.xapi_version, tolerate=s.tolerate,
                   duplicates=flags, cmi5=False, quarantine_raw=False)
        del piece
        tally.add(v)
        quarantined.add(_keep_first_quarantined(v.quarantined, first))
        start += n
        del v
    if start != judged.num_rows:
        raise ValueError(f"the normalised zone changed while the window was verified "
                         f"({start} rows judged of {judged.num_rows})")
    batch = tally.finish()
    quarantined.write(raws)
    # of the judged keys, only those other windows' quarantine files hold are needed later
    # (_drop_judged_elsewhere): a handful, not the window's million
    others = before.filter(pc.not_equal(before["window"], window.label()))
    judged = judged.filter(pc.is_in(_key(judged), value_set=_key(others)))
    return batch, quarantined, judged


def _counts(r: VerifyReport) -> dict[str, Any]:
    keys = ("read", "verified", "quarantined", "duplicates", "voiding", "published", "voided",
            "replayed", "recovered", "conflicts_held", "quarantined_by_reason")
    return {k: getattr(r, k) for k in keys}


#: the columns of the quarantine already there that verification and replay read first
_QUARANTINE_KEYS = ["statement_id", "raw_sha256", "reasons", "first_quarantined_at"]


def _first_quarantined(old: pa.Table) -> pa.Table | None:
    """Record key -> the earliest ``first_quarantined_at`` of the quarantine ``old`` (any
    window's file), or None when it is empty."""
    if old.num_rows == 0:
        return None
    t = pa.table({"key": _key(old), "at": old["first_quarantined_at"]})
    return t.group_by("key").aggregate([("at", "min")])


def _keep_first_quarantined(new: pa.Table, first: pa.Table | None) -> pa.Table:
    """``first_quarantined_at`` stays what it was for a record quarantined before (``first``,
    from :func:`_first_quarantined`)."""
    if new.num_rows == 0 or first is None:
        return new
    at = pc.index_in(_key(new), value_set=first["key"])
    i = new.column_names.index("first_quarantined_at")
    field_ = new.schema.field(i)
    kept = pc.coalesce(first["at_min"].take(at), new["first_quarantined_at"])
    return new.set_column(i, field_, kept.cast(field_.type))


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
    v: _Batch, *, window: Window | None, quarantine_read: int,
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
    rows = v.rows

    # -- voids: this batch's and the pending ones, on this batch, then on earlier runs' records
    batch_voids = v.voids
    batch_void_ids = {x.voiding_statement_id for x in batch_voids if x.voiding_statement_id}
    stored = state.voids(source)
    known = {x.voiding_statement_id for x in stored}
    ledger: dict[str, Void] = {}
    for x in stored:  # earliest first: the earliest void of a target takes effect
        if x.status != "ignored" and x.voiding_statement_id not in batch_void_ids:
            ledger.setdefault(x.target_id, Void(x.voiding_statement_id, x.target_id, x.at))
    # only the rows a void can reach take part (the rest stay where they are staged)
    targets = pa.array(sorted({x.target_id for x in batch_voids} | set(ledger)), pa.string())
    reachable = rows.with_ids(targets, ["statement_id", "record_id", "source"])
    first = apply_voids(reachable, batch_voids, ledger, known_voiding_ids=known)
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
    report.published = rows.num_rows - (reachable.num_rows - first.verified.num_rows)
    report.voided = len(set(removed))
    report.voided_earlier = len(set(earlier_ids))
    report.void_warnings = [w.detail for w in warnings]

    # -- the quality gate
    from pipelines.verify import quality

    published = _Published(rows, pa.array(first.voided, pa.string()) if first.voided else None,
                           report.published)
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
    del published
    fz.merge_verified(source, rows, window, removed, run_id)  # "verify-partition" each
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
    """Which rows' ``reasons`` hold ``reason`` (in Arrow: a quarantine may hold a million)."""
    reasons = _arr(t["reasons"])
    hit = np.zeros(len(reasons), bool)
    flat = _np_mask(pc.equal(pc.list_flatten(reasons), reason))
    hit[pc.list_parent_indices(reasons).to_numpy()[flat]] = True
    return pa.array(hit)


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
        with state.lock(f"ingest:{s.name}"), _lean_memory_pool():
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
    """Replay a piece of the quarantine at a time (:func:`_replay_pieces`): memory holds a
    piece's rows and bodies, not the quarantine (which a stale roster can fill with a million
    statements) nor the normalised zone (every statement ever ingested), whose rows are looked
    up by statement id."""
    s = settings.source(report.source)
    roster, catalogue = _reference(settings)
    fz = FootprintZones(settings.storage_root)
    zones = Zones(settings.storage_root)
    fz.clean_leftovers(s.name)
    q = fz.read_quarantine(s.name, _QUARANTINE_KEYS)
    if q.num_rows == 0:
        report.status = "succeeded"
        report.message = "nothing in quarantine"
        return
    blocks = pc.run_end_encode(_arr(q["window"]))  # a run of rows a window's file
    labels = blocks.values.to_pylist()
    ends = blocks.run_ends.to_numpy()
    q = q.append_column("row", pa.array(np.arange(len(q), dtype=np.int64) - np.repeat(
        np.concatenate([[0], ends[:-1]]), np.diff(ends, prepend=0))))
    is_conflict = _has_reason(q, CONFLICTING_DUPLICATE)
    conflicts = q.filter(is_conflict)
    replayable = q.filter(pc.invert(is_conflict))
    del q, is_conflict
    stage = StagedRows(zones.staging / s.name / f"replay-{report.run_id}")
    try:
        tally = _Tally(stage)
        left: list[pa.Array] = []
        still: list[pa.Table] = []
        now = datetime.now(UTC)
        for piece in _replay_pieces(replayable):
            bodies = _quarantined_bodies(fz, s.name, piece)
            norm = zones.normalised_with_ids(s.name, pc.unique(piece["statement_id"].drop_null()))
            if norm.num_rows:
                norm = norm.filter(pc.is_in(_key(norm), value_set=_key(piece)))
            # a body the normalised zone does not hold (see _dropped_bodies) is normalised again
            missing = piece.filter(pc.invert(pc.is_in(_key(piece), value_set=_key(norm))))
            if missing.num_rows:
                pages: list[PageData] = [
                    ([bytes(bodies[sha])], f"quarantine/window={label}", at, [0])
                    for sha, label, at in zip(missing["raw_sha256"].to_pylist(),
                                              missing["window"].to_pylist(),
                                              missing["first_quarantined_at"].to_pylist(),
                                              strict=True)]
                norm = pa.concat_tables(
                    [norm, _normalise(s.name, norm.schema, pages, report.run_id)])
            v = verify(norm, bodies, roster, catalogue, now=now, run_id=report.run_id,
                       verified_at=now, source=s.name, xapi_version=s.xapi_version,
                       tolerate=s.tolerate, held=_held(fz, s.name, norm, None), cmi5=False,
                       quarantine_raw=False)
            del norm, bodies
            _give_back_memory()
            tally.add(v)
            left.extend([_key(v.verified), _key(v.voiding)])
            still.append(pa.table({"key": _key(v.quarantined),
                                   "reasons": v.quarantined["reasons"],
                                   "detail": v.quarantined["detail"]}))
        del replayable
        batch = tally.finish()
        gone = pc.unique(pa.chunked_array(left, pa.string()).combine_chunks())
        stay = pa.concat_tables(still).combine_chunks() if still else None

        def publish_quarantine() -> None:
            for label in labels:
                fz.rewrite_quarantine(s.name, label, lambda t: _replayed(
                    t, gone, stay, report.run_id), report.run_id)

        report.conflicts_held = conflicts.num_rows
        _publish(settings, state, fz, report, batch, window=None,
                 quarantine_read=batch.counts["verified"],
                 publish_quarantine=publish_quarantine, held_back=conflicts)
    finally:
        stage.discard()
    report.replayed = len(gone)
    report.message = (f"{report.replayed} records left quarantine ({report.published} published), "
                      f"{report.quarantined} stay")
    if report.conflicts_held:
        report.message += (f", of which {report.conflicts_held} conflicting bodies wait for a "
                           "person to decide which body is right")


def _replay_pieces(replayable: pa.Table) -> Iterator[pa.Table]:
    """The records to replay, :data:`PIECE_ROWS` at a time, in quarantine order; the records of
    a statement id held more than once (their bodies must be judged together: rare) come last,
    all in one piece."""
    ids = replayable["statement_id"]
    twice = pa.array([], pa.string())
    if ids.null_count < len(ids):
        counts = pc.value_counts(ids.drop_null())
        twice = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    together = pc.fill_null(pc.is_in(ids, value_set=twice), False)
    single = replayable.filter(pc.invert(together))
    for start in range(0, single.num_rows, PIECE_ROWS):
        yield single.slice(start, PIECE_ROWS)
    if len(twice):
        yield replayable.filter(together)


def _quarantined_bodies(fz: FootprintZones, source: str,
                        piece: pa.Table) -> dict[str, memoryview]:
    """raw_sha256 -> the body (UTF-8) of each of the piece's records, read from its window's
    quarantine file (``row``: its position there; only the row groups holding them are read),
    as views of the bytes read (no Python string a body)."""
    out: dict[str, memoryview] = {}
    windows = piece["window"]
    for label in pc.unique(windows).to_pylist():
        want = piece["row"].filter(pc.equal(windows, label)).to_numpy()
        # a row group at a time, the wanted rows taken from each (reading the groups together
        # peaked at about twice the memory)
        f = pq.ParquetFile(fz.quarantine_file(source, label), pre_buffer=False)
        try:
            start = 0
            for g in range(f.num_row_groups):
                end = start + f.metadata.row_group(g).num_rows
                here = want[(want >= start) & (want < end)]
                if len(here):
                    t = f.read_row_group(g, columns=["raw_sha256", "raw"]).take(
                        pa.array(here - start, pa.int64()))
                    views = [v for chunk in t["raw"].chunks for v in _binary_views(chunk)]
                    out.update(zip(t["raw_sha256"].to_pylist(), views, strict=True))
                start = end
        finally:
            f.close()
    return out


def _replayed(t: pa.Table, gone: pa.Array, stay: pa.Table | None, run_id: str) -> pa.Table:
    """A window's quarantined rows after a replay: those that left (``gone``, their keys)
    removed, those judged again (``stay``: key, reasons, detail) with their reasons now and the
    replay's run id; conflicts, never replayed, as they were."""
    t = t.filter(pc.invert(pc.is_in(_key(t), value_set=gone)))
    if t.num_rows == 0 or stay is None or stay.num_rows == 0:
        return t
    at = pc.index_in(_key(t), value_set=stay["key"])
    judged = pc.is_valid(at)
    for name in ("reasons", "detail"):
        i = t.column_names.index(name)
        t = t.set_column(i, t.schema.field(i), pc.if_else(
            judged, stay[name].take(at), t[name]).cast(t.schema.field(i).type))
    i = t.column_names.index("run_id")
    return t.set_column(i, t.schema.field(i), pc.if_else(
        judged, pa.scalar(run_id, pa.string()), t["run_id"]))
