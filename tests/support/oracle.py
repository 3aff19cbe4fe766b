"""An independent, plain-Python derivation of the delivered records, for end-to-end tests.

It reads the verified zone row by row and follows the rules written in
``pipelines/deliver/records.py``'s docstring with loops and dicts instead of Arrow group-bys, so
a test that compares the receiver's copy with it checks the pipeline against a second reading
of the rules, not against itself.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds

NAMESPACE = uuid.UUID("5b0f3c1e-7a4d-5e1b-9c2f-187029000001")
ADL = "http://adlnet.gov/expapi/verbs/"
SCALE = [(95, "A", 4.0), (90, "A-", 3.67), (85, "B+", 3.33), (80, "B", 3.0), (75, "B-", 2.67),
         (70, "C+", 2.33), (65, "C", 2.0), (60, "C-", 1.67), (55, "D+", 1.33), (50, "D", 1.0),
         (25, "FX", 0.0), (0, "F", 0.0)]
#: fields not compared: the server's own, and updated_at (when content changed, not content)
NOT_CONTENT = {"updated_at", "deleted", "createdAt", "updatedAt", "deletedAt", "version"}
NUMBER_FIELDS = ("sync_activity_seconds", "async_activity_seconds", "current_score",
                 "gpa_points")


def content_hash(record: dict[str, Any]) -> str:
    """The contract's content hash, computed here with the standard library: SHA-256 of the
    compact JSON, keys sorted, of every field but content_hash and updated_at, numbers as
    floats."""
    import hashlib
    import json

    body = {k: v for k, v in record.items() if k not in ("content_hash", "updated_at")}
    for k in NUMBER_FIELDS:
        if body.get(k) is not None:
            body[k] = float(body[k])
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verified_rows(root: Path) -> list[dict[str, Any]]:
    folder = root / "verified"
    if not any(folder.glob("source=*/date=*/*.parquet")):
        return []
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pylist()


def catalogue_totals(path: Path) -> dict[tuple[str, str, str], int]:
    import csv

    out: dict[tuple[str, str, str], int] = defaultdict(int)
    with path.open(encoding="utf-8-sig") as f:
        for r in csv.DictReader(f):
            out[(r["discipline_code"], r["period_start"], r["period_end"])] += 1
    return dict(out)


def expected_records(root: Path, catalogue: Path, institution: str) -> dict[str, dict[str, Any]]:
    totals = catalogue_totals(catalogue)
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in verified_rows(root):
        groups[(r["iin"], r["discipline_code"], r["period_start"], r["period_end"])].append(r)
    out = {}
    for (iin, disc, start, end), rows in groups.items():
        rows.sort(key=lambda r: (r["timestamp"], r["source"]))
        period = f"{start}/{end}"
        sync = [r for r in rows if r["learning_format"] == "synchronous"]
        asyn = [r for r in rows if r["learning_format"] != "synchronous"]
        online = sum(r["learning_mode"] == "online" for r in rows)
        distance = len(rows) - online
        done = {r["matched_activity_id"] for r in rows
                if r["verb_id"] in (ADL + "completed", ADL + "passed") or r["completion"]}
        live = {r["matched_activity_id"] for r in sync if r["verb_id"] == ADL + "attended"}
        outcome: dict[str, bool] = {}
        score: dict[str, float] = {}
        for r in rows:  # time order: the last one wins
            if r["success"] is not None:
                outcome[r["matched_activity_id"]] = r["success"]
            if r["score_percent"] is not None:
                score[r["matched_activity_id"]] = r["score_percent"]
        current = round(sum(score.values()) / len(score), 2) if score else None
        letter, points = next(((x, p) for low, x, p in SCALE if current is not None
                               and current >= low), (None, None))
        total = totals.get((disc, start, end), 0)
        rid = str(uuid.uuid5(NAMESPACE, f"{institution}/{iin}/{disc}/{period}"))
        last = rows[-1]
        out[rid] = {
            "record_id": rid, "contract_version": 1, "institution_code": institution,
            "iin": iin, "discipline_code": disc, "academic_period": period,
            "period_start": start, "period_end": end, "student_id": last["student_id"],
            "programme_code": last["programme_code"], "credits": max(r["credits"] for r in rows),
            "sync_activity_count": len(sync),
            "sync_activity_seconds": round(sum(r["duration_seconds"] or 0 for r in sync), 2),
            "async_activity_count": len(asyn),
            "async_activity_seconds": round(sum(r["duration_seconds"] or 0 for r in asyn), 2),
            "online_activity_count": online, "distance_activity_count": distance,
            "learning_mode": "online" if not distance else "distance" if not online else "mixed",
            "live_sessions_attended": len(live), "activities_completed": len(done),
            "activities_total": total,
            "assessments_passed": sum(outcome.values()),
            "assessments_failed": len(outcome) - sum(outcome.values()),
            "current_score": current, "letter_grade": letter, "gpa_points": points,
            "completion_status": "completed" if total and len(done) >= total else "in_progress",
            "last_activity_at": last["timestamp"].strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{last['timestamp'].microsecond // 1000:03d}Z",
            "statement_count": len(rows),
            "source_systems": sorted({r["source"] for r in rows}),
        }
        out[rid]["content_hash"] = content_hash(out[rid])
    return out


def receiver_records(endpoint: str, auth: tuple[str, str] = ("980140000005", "x"),
                     entity: str = "ONLINE_LEARNING") -> dict[str, dict[str, Any]]:
    """Every record the receiver holds, through its paged read API, by record id."""
    out: dict[str, dict[str, Any]] = {}
    page = 0
    with httpx.Client(base_url=endpoint, auth=auth, timeout=30) as c:
        while True:
            r = c.get("org-data/find-all-pageable",
                      params={"entity": entity, "page": page, "size": 1000})
            r.raise_for_status()
            body = r.json()
            for rec in body["content"]:
                out[rec["record_id"]] = rec
            if body["last"] or not body["content"]:
                return out
            page += 1


def live(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in records.items() if not v.get("deleted")}


def field_differences(expected: dict[str, dict[str, Any]], held: dict[str, dict[str, Any]]
                      ) -> list[str]:
    """Human-readable differences, field by field; empty when the receiver holds exactly these."""
    problems = []
    for rid in sorted(set(expected) - set(held)):
        problems.append(f"{rid}: missing at the receiver")
    for rid in sorted(set(held) - set(expected)):
        problems.append(f"{rid}: at the receiver, not expected")
    for rid in sorted(set(expected) & set(held)):
        want, got = expected[rid], held[rid]
        for k in sorted((set(want) | set(got)) - NOT_CONTENT):
            a, b = want.get(k), got.get(k)
            if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(
                    a, bool):
                same = float(a) == float(b)
            else:
                same = a == b
            if not same:
                problems.append(f"{rid}.{k}: expected {a!r}, receiver holds {b!r}")
    return problems
