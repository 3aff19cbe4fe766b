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
from collections.abc import Iterable
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


def build_from_table(table: pa.Table, institution: str,
                     activities_per_discipline: dict[tuple[str, str, str], int]) -> Built:
    if table.num_rows == 0:
        return Built({}, 0)
    t = table.select(_COLUMNS)
    t = t.take(pc.sort_indices(t, [("timestamp", "ascending"), ("source", "ascending")]))
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
    base = t.group_by(_KEYS, use_threads=False).aggregate([
        ("verb_id", "count"), ("_sync", "sum"), ("_async", "sum"), ("_sync_s", "sum"),
        ("_async_s", "sum"), ("_online", "sum"), ("_distance", "sum"), ("timestamp", "max"),
        ("credits", "max"), ("programme_code", "last"), ("student_id", "last"),
        ("source", "distinct"),
    ])
    parts = {
        "live": _distinct_activities(t, pc.and_(pc.equal(t["verb_id"], ATTENDED), sync)),
        "completed": _distinct_activities(t, pc.or_kleene(
            pc.is_in(t["verb_id"], pa.array([COMPLETED, PASSED])),
            pc.fill_null(t["completion"], False))),
    }
    outcome = _latest_per_activity(t, "success")
    score = _latest_per_activity(t, "score_percent")
    passed = {k: sum(1 for v in vs if v) for k, vs in outcome.items()}
    failed = {k: sum(1 for v in vs if not v) for k, vs in outcome.items()}
    scores = {k: round(sum(vs) / len(vs), 2) for k, vs in score.items() if vs}

    records: dict[str, dict[str, Any]] = {}
    last_at = pc.strftime(base["timestamp_max"].cast(pa.timestamp("ms", tz="UTC"), safe=False),
                          format="%Y-%m-%dT%H:%M:%SZ")
    base = base.append_column("_last_at", last_at)
    cols = base.to_pydict()
    for i in range(base.num_rows):
        iin, disc = cols["iin"][i], cols["discipline_code"][i]
        start, end = cols["period_start"][i], cols["period_end"][i]
        key = (iin, disc, start, end)
        period = f"{start}/{end}"
        total = activities_per_discipline.get((disc, start, end), 0)
        done = parts["completed"].get(key, 0)
        current = scores.get(key)
        letter, points = grade(current)
        n_online, n_distance = cols["_online_sum"][i], cols["_distance_sum"][i]
        rid = record_id(institution, iin, disc, period)
        rec: dict[str, Any] = {
            "record_id": rid,
            "contract_version": CONTRACT_VERSION,
            "institution_code": institution,
            "iin": iin,
            "discipline_code": disc,
            "academic_period": period,
            "period_start": start,
            "period_end": end,
            "student_id": cols["student_id_last"][i],
            "programme_code": cols["programme_code_last"][i],
            "credits": cols["credits_max"][i],
            "sync_activity_count": cols["_sync_sum"][i],
            "sync_activity_seconds": round(cols["_sync_s_sum"][i], 2),
            "async_activity_count": cols["_async_sum"][i],
            "async_activity_seconds": round(cols["_async_s_sum"][i], 2),
            "online_activity_count": n_online,
            "distance_activity_count": n_distance,
            "learning_mode": ("online" if not n_distance else
                              "distance" if not n_online else "mixed"),
            "live_sessions_attended": parts["live"].get(key, 0),
            "activities_completed": done,
            "activities_total": total,
            "assessments_passed": passed.get(key, 0),
            "assessments_failed": failed.get(key, 0),
            "current_score": current,
            "letter_grade": letter,
            "gpa_points": points,
            "completion_status": "completed" if total and done >= total else "in_progress",
            "last_activity_at": cols["_last_at"][i],
            "statement_count": cols["verb_id_count"][i],
            "source_systems": sorted(cols["source_distinct"][i]),
        }
        rec["content_hash"] = content_hash(rec)
        records[rid] = rec
    return Built(records, table.num_rows)


def _distinct_activities(t: pa.Table, mask: pa.Array) -> dict[tuple[str, ...], int]:
    rows = t.filter(mask)
    if rows.num_rows == 0:
        return {}
    g = rows.group_by(_KEYS, use_threads=False).aggregate(
        [("matched_activity_id", "count_distinct")]).to_pydict()
    return {tuple(g[k][i] for k in _KEYS): g["matched_activity_id_count_distinct"][i]
            for i in range(len(g["iin"]))}


def _latest_per_activity(t: pa.Table, column: str) -> dict[tuple[str, ...], list[Any]]:
    """Per record key, the latest non-null ``column`` of each activity (``t`` is time-ordered)."""
    rows = t.filter(pc.is_valid(t[column]))
    if rows.num_rows == 0:
        return {}
    g = rows.group_by([*_KEYS, "matched_activity_id"], use_threads=False).aggregate(
        [(column, "last")]).to_pydict()
    out: dict[tuple[str, ...], list[Any]] = {}
    for i in range(len(g["iin"])):
        out.setdefault(tuple(g[k][i] for k in _KEYS), []).append(g[f"{column}_last"][i])
    return out


def with_updated_at(record: dict[str, Any], updated_at: datetime | str) -> dict[str, Any]:
    """The whole record as sent: every contract field, in contract order (``record`` is built
    in contract order, ``updated_at`` is the contract's last field)."""
    stamp = updated_at if isinstance(updated_at, str) else iso_utc(updated_at)
    return {**record, "updated_at": stamp}
