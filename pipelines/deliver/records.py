"""Verified footprint -> delivered records (paragraph 29): one per learner x discipline x period.

Every figure is derived from verified footprint records only (``verified/``), plus one piece of
reference data: the number of catalogue activities of the discipline (the denominator of
``activities_completed``). The rules, each pinned by a test in ``tests/test_deliver_records.py``:

- **key**: (institution BIN, IIN, discipline code, academic period ``start/end``);
  ``record_id`` is uuid5 of that key, so a re-build upserts the same record;
- **synchronous / asynchronous activity**: statements and the sum of their ``result.duration``
  by the verified ``learning_format``; **online / distance** by ``learning_mode``; the record's
  ``learning_mode`` is the one every statement has, else ``mixed``;
- **live sessions attended**: distinct activities with the verb ``attended`` in synchronous format;
- **activities completed**: distinct matched catalogue activities with the verb ``completed`` or
  ``passed``, or ``result.completion`` true; ``completion_status`` is ``completed`` once they are
  all the discipline's catalogue activities;
- **assessments**: per activity with a ``result.success``, the latest outcome by timestamp
  decides passed or failed (a retake that passes turns a failure into a pass);
- **current score** (0-100): the mean over scored activities of each one's latest
  ``score_percent``, rounded to 2 decimals; **letter grade** and **GPA points** from it on the
  credit-technology scale (a score is graded by the highest band whose lower bound it reaches:
  94.5 is A-, 95 is A);
- **last activity**: the latest statement timestamp; **programme code** and **student id**: as the
  latest statement recorded them; **source systems**: the sources of the evidence, sorted.

``content_hash`` is the SHA-256 of the canonical JSON (sorted keys, compact) of every field but
``content_hash`` and ``updated_at``: what the ledger compares to decide new, changed, unchanged.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import contracts
from pipelines.store.footprint import FootprintZones

CONTRACT = contracts.load("delivered-record", 1)
CONTRACT_VERSION = 1
# uuid5 namespace of delivered records; changing it re-keys every record at the authority
RECORD_NAMESPACE = uuid.UUID("5b0f3c1e-7a4d-5e1b-9c2f-187029000001")
KEY_FIELDS = ("institution_code", "iin", "discipline_code", "academic_period")
#: fields outside the content hash
UNHASHED = ("content_hash", "updated_at")
FIELDS: tuple[str, ...] = tuple(CONTRACT.fields)
HASHED: tuple[str, ...] = tuple(f for f in FIELDS if f not in UNHASHED)

ADL = "http://adlnet.gov/expapi/verbs/"
ATTENDED = ADL + "attended"
COMPLETED = ADL + "completed"
PASSED = ADL + "passed"

#: credit-technology scale (ANCHORS.md section 5): lower bound, letter, GPA points
GRADE_SCALE: tuple[tuple[float, str, float], ...] = (
    (95, "A", 4.0), (90, "A-", 3.67), (85, "B+", 3.33), (80, "B", 3.0), (75, "B-", 2.67),
    (70, "C+", 2.33), (65, "C", 2.0), (60, "C-", 1.67), (55, "D+", 1.33), (50, "D", 1.0),
    (25, "FX", 0.0), (0, "F", 0.0),
)

_COLUMNS = ["source", "iin", "student_id", "programme_code", "discipline_code", "credits",
            "period_start", "period_end", "matched_activity_id", "verb_id", "learning_format",
            "learning_mode", "score_percent", "success", "completion", "duration_seconds",
            "timestamp"]
_KEYS = ["iin", "discipline_code", "period_start", "period_end"]


def grade(score: float | None) -> tuple[str | None, float | None]:
    """(letter, GPA points) of a 0-100 score; (None, None) without a score."""
    if score is None:
        return None, None
    for low, letter, points in GRADE_SCALE:
        if score >= low:
            return letter, points
    return "F", 0.0


_NS = RECORD_NAMESPACE.bytes


def record_id(institution: str, iin: str, discipline: str, period: str) -> str:
    """uuid5(RECORD_NAMESPACE, key), computed as RFC 4122 says, without uuid.UUID's overhead."""
    b = bytearray(hashlib.sha1(_NS + f"{institution}/{iin}/{discipline}/{period}".encode(),
                               usedforsecurity=False).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _types(prop: dict[str, Any]) -> set[str]:
    t = prop["type"]
    return set(t) if isinstance(t, list) else {t}


_NUMBERS = frozenset(n for n, p in CONTRACT.fields.items() if "number" in _types(p))


_SORTED = tuple(sorted(HASHED))


def canonical(record: dict[str, Any]) -> dict[str, Any]:
    """The hashed fields of a record in sorted order, numbers as floats (a server may answer
    ``3`` for ``3.0``)."""
    get = record.get
    body = {k: get(k) for k in _SORTED}
    for k in _NUMBERS:
        v = body[k]
        if v.__class__ is int:
            body[k] = float(v)
    return body


def content_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(canonical(record))).hexdigest()


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Field names whose canonical values differ (hashed fields only)."""
    a, b = canonical(expected), canonical(actual)
    return [k for k in HASHED if a.get(k) != b.get(k)]


def iso_utc(dt: datetime) -> str:
    """``2026-11-20T10:15:30.123Z``: the one spelling of a time in delivered records."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Built:
    """The records the verified footprint says the authority should hold, by record_id."""

    records: dict[str, dict[str, Any]]  # without updated_at (the ledger stamps it)
    statements: int  # verified statements read

    def __len__(self) -> int:
        return len(self.records)


def build(zones: FootprintZones, institution: str,
          activities_per_discipline: dict[tuple[str, str, str], int]) -> Built:
    """Derive every delivered record from the verified zone (all sources)."""
    table = zones.read_verified()
    return build_from_table(table, institution, activities_per_discipline)


def catalogue_totals(entries: Iterable[Any]) -> dict[tuple[str, str, str], int]:
    """Catalogue activities per (discipline code, period start, period end)."""
    out: dict[tuple[str, str, str], int] = {}
    for e in entries:
        k = (e.discipline_code, e.period_start.isoformat(), e.period_end.isoformat())
        out[k] = out.get(k, 0) + 1
    return out


_AGG_COLUMNS = ["iin", "discipline_code", "period_start", "period_end", "student_id_last",
                "programme_code_last", "credits_max", "_sync_sum", "_sync_s_sum", "_async_sum",
                "_async_s_sum", "_online_sum", "_distance_sum", "_live", "_done", "_passed_sum",
                "_passed_count", "score_percent_last_mean", "_last_at", "verb_id_count",
                "source_distinct"]


def build_from_table(table: pa.Table, institution: str,
                     activities_per_discipline: dict[tuple[str, str, str], int]) -> Built:
    recs = RecordStream(table, institution, activities_per_discipline)
    return Built({r["record_id"]: r for r in recs}, table.num_rows)


def aggregate(table: pa.Table) -> pa.Table:
    """The Arrow part of the build: one row per record key with every figure it needs."""
    if table.num_rows == 0:
        return pa.table({n: pa.array([], pa.null()) for n in _AGG_COLUMNS})
    t = table.select(_COLUMNS)
    t = t.take(pc.sort_indices(t, [("timestamp", "ascending"), ("source", "ascending")]))
    t = t.append_column("_k", _key_index(t).indices)
    return _aggregate(t)


def _key_index(t: pa.Table) -> pa.DictionaryArray:
    """One integer per record key (a dictionary of ``iin US discipline US start US end``)."""
    joined = pc.binary_join_element_wise(*[t[k] for k in _KEYS], _US)
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    out: pa.DictionaryArray = pc.dictionary_encode(joined)
    return out


_US = "\x1f"  # joins the key's parts (none of them holds it: digits, codes, ISO dates)


def _aggregate(t: pa.Table) -> pa.Table:
    """:func:`aggregate` of time-ordered rows that carry their key's integer as ``_k``."""
    sync = pc.equal(t["learning_format"], "synchronous")
    online = pc.equal(t["learning_mode"], "online")
    dur = pc.fill_null(t["duration_seconds"], 0.0)
    zero = pa.scalar(0.0)
    t = t.append_column("_sync", pc.cast(sync, pa.int64()))
    t = t.append_column("_async", pc.cast(pc.invert(sync), pa.int64()))
    t = t.append_column("_sync_s", pc.if_else(sync, dur, zero))
    t = t.append_column("_async_s", pc.if_else(sync, zero, dur))
    t = t.append_column("_online", pc.cast(online, pa.int64()))
    t = t.append_column("_distance", pc.cast(pc.invert(online), pa.int64()))
    g = t.group_by("_k", use_threads=False).aggregate([
        *[(k, "first") for k in _KEYS],
        ("verb_id", "count"), ("_sync", "sum"), ("_async", "sum"), ("_sync_s", "sum"),
        ("_async_s", "sum"), ("_online", "sum"), ("_distance", "sum"), ("timestamp", "max"),
        ("credits", "max"), ("programme_code", "last"), ("student_id", "last"),
        ("source", "distinct"),
    ])
    g = g.rename_columns({f"{k}_first": k for k in _KEYS})
    live = _distinct_activities(t, pc.and_(pc.equal(t["verb_id"], ATTENDED), sync), "_live")
    done = _distinct_activities(t, pc.or_kleene(
        pc.is_in(t["verb_id"], pa.array([COMPLETED, PASSED])),
        pc.fill_null(t["completion"], False)), "_done")
    # per activity the latest outcome and the latest score, then per record key
    outcome = _latest_per_activity(t, "success")
    outcome = outcome.append_column("_passed", pc.cast(outcome["success_last"], pa.int64()))
    assessed = outcome.group_by("_k", use_threads=False).aggregate(
        [("_passed", "sum"), ("_passed", "count")])
    scored = _latest_per_activity(t, "score_percent").group_by("_k", use_threads=False) \
        .aggregate([("score_percent_last", "mean")])
    # joins take no list columns: carry the sources by row number
    sources = g["source_distinct"]
    g = g.drop_columns(["source_distinct"]).append_column(
        "_row", pa.array(range(g.num_rows), pa.int64()))
    for part in (live, done, assessed, scored):
        g = g.join(part, "_k", join_type="left outer", use_threads=False)
    g = g.append_column("source_distinct", sources.take(g["_row"]))
    last_at = pc.strftime(g["timestamp_max"].cast(pa.timestamp("ms", tz="UTC"), safe=False),
                          format="%Y-%m-%dT%H:%M:%SZ")
    g = g.append_column("_last_at", last_at)
    return g.select([*_AGG_COLUMNS, "_k"])


class RecordStream:
    """The delivered records of a verified table in ``record_id`` order, aggregated a range of
    ids at a time, the next range in a thread (Arrow works without the GIL) while the records
    of this one are made and sent: the first batch can leave before the last key is summed.

    In id order, each batch of records is a narrow range of the key space: the ledger's (and
    the authority's) index on the id takes a batch in a few pages instead of one per record.
    ``json_out``: where to put each record's hashed JSON (its canonical form, by id), so that a
    sender can make the payload from it (:func:`payload_json`) instead of encoding it again.
    """

    def __init__(self, table: pa.Table, institution: str,
                 activities_per_discipline: dict[tuple[str, str, str], int],
                 parts: int = 16, json_out: dict[str, bytes] | None = None) -> None:
        self.institution = institution
        self.totals = activities_per_discipline
        self.json_out = json_out
        self.statements = table.num_rows
        self._parts: list[int] = []
        if table.num_rows == 0:
            self.records = 0
            return
        t = table.select(_COLUMNS)
        keys = _key_index(t)
        names = keys.dictionary.to_pylist()
        self.records = n = len(names)
        ids = []
        for name in names:
            iin, disc, start, end = name.split(_US)
            ids.append(record_id(institution, iin, disc, f"{start}/{end}"))
        order = sorted(range(n), key=ids.__getitem__)
        rank = [0] * n
        for r, i in enumerate(order):
            rank[i] = r
        self._ids = ids
        self._rank = pa.array(rank, pa.int64())
        part_of_key = pa.array([r * parts // n for r in rank], pa.int64())
        self._row_part = pc.take(part_of_key, keys.indices)
        self._t = t.append_column("_k", keys.indices)
        self._parts = sorted(set(part_of_key.to_pylist()))

    def _part(self, p: int) -> pa.Table:
        """One range of ids: its rows in time order (what "last" needs), summed, in id order."""
        t = self._t.filter(pc.equal(self._row_part, p))
        t = t.take(pc.sort_indices(t, [("timestamp", "ascending"), ("source", "ascending")]))
        g = _aggregate(t)
        return g.take(pc.sort_indices(pc.take(self._rank, g["_k"])))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from pipelines.sources.base import prefetch

        parts = (self._part(p) for p in self._parts)
        for g in prefetch(parts, depth=1):
            ids = [self._ids[k] for k in g["_k"].to_pylist()]
            for start in range(0, g.num_rows, 2000):
                yield from _records(g.slice(start, 2000), self.institution, self.totals,
                                    ids[start:start + 2000], self.json_out)


def _records(g: pa.Table, institution: str,
             activities_per_discipline: dict[tuple[str, str, str], int], ids: list[str],
             json_out: dict[str, bytes] | None = None) -> Iterator[dict[str, Any]]:
    cols = [g[n].to_pylist() for n in _AGG_COLUMNS]
    dumps, sha256 = orjson.dumps, hashlib.sha256
    totals = activities_per_discipline
    for (iin, disc, start, end, student, programme, credits, n_sync, s_sync, n_async,
         s_async, n_online, n_distance, n_live, n_done, n_passed, n_assessed, mean_score,
         last_at_, n_statements, sources), rid in zip(zip(*cols, strict=True), ids, strict=True):
        period = f"{start}/{end}"
        total = totals.get((disc, start, end), 0)
        n_done = n_done or 0
        n_passed = n_passed or 0
        current = None if mean_score is None else round(mean_score, 2)
        letter, points = grade(current)
        # the hashed fields in sorted order (the canonical form: numbers are floats already)
        rec: dict[str, Any] = {
            "academic_period": period,
            "activities_completed": n_done,
            "activities_total": total,
            "assessments_failed": (n_assessed or 0) - n_passed,
            "assessments_passed": n_passed,
            "async_activity_count": n_async,
            "async_activity_seconds": round(s_async, 2),
            "completion_status": "completed" if total and n_done >= total else "in_progress",
            "contract_version": CONTRACT_VERSION,
            "credits": credits,
            "current_score": current,
            "discipline_code": disc,
            "distance_activity_count": n_distance,
            "gpa_points": points,
            "iin": iin,
            "institution_code": institution,
            "last_activity_at": last_at_,
            "learning_mode": ("online" if not n_distance else
                              "distance" if not n_online else "mixed"),
            "letter_grade": letter,
            "live_sessions_attended": n_live or 0,
            "online_activity_count": n_online,
            "period_end": end,
            "period_start": start,
            "programme_code": programme,
            "record_id": rid,
            "source_systems": sorted(sources),
            "statement_count": n_statements,
            "student_id": student,
            "sync_activity_count": n_sync,
            "sync_activity_seconds": round(s_sync, 2),
        }
        canonical_json = dumps(rec)
        rec["content_hash"] = sha256(canonical_json).hexdigest()
        if json_out is not None:
            json_out[rid] = canonical_json
        yield rec


def _distinct_activities(t: pa.Table, mask: pa.Array, name: str) -> pa.Table:
    """Per record key, the distinct matched activities of the rows in ``mask`` (as ``name``)."""
    rows = t.filter(mask).select(["_k", "matched_activity_id"])
    g = rows.group_by("_k", use_threads=False).aggregate(
        [("matched_activity_id", "count_distinct")])
    return g.rename_columns(["_k", name])


def _latest_per_activity(t: pa.Table, column: str) -> pa.Table:
    """Per record key and activity, the latest non-null ``column`` (``t`` is time-ordered)."""
    rows = t.filter(pc.is_valid(t[column])).select(["_k", "matched_activity_id", column])
    return rows.group_by(["_k", "matched_activity_id"], use_threads=False).aggregate(
        [(column, "last")])


def payload_json(canonical_json: bytes, content_hash: str, updated_at: str) -> bytes:
    """The JSON of a whole record as sent (what ``orjson.dumps(with_updated_at(record, ...))``
    gives, but for the order of the two added keys) from the JSON its hash was taken of."""
    return b"".join((canonical_json[:-1], b',"content_hash":"', content_hash.encode(),
                     b'","updated_at":"', updated_at.encode(), b'"}'))


def with_updated_at(record: dict[str, Any], updated_at: datetime | str) -> dict[str, Any]:
    """The whole record as sent: every contract field (``record`` holds all but updated_at;
    its keys are in the canonical sorted order, which JSON readers do not care about)."""
    stamp = updated_at if isinstance(updated_at, str) else iso_utc(updated_at)
    return {**record, "updated_at": stamp}
