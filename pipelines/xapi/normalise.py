"""xAPI statements (bytes, as received) -> rows of the normalised-statement contract (Arrow).

This is the hot path of ingestion, so statements are decoded by msgspec straight into typed
structs (no intermediate dicts) and the rows are gathered column by column. Decoding is strict
about JSON types (``"success": "false"`` is an error, not True) but ignores properties it does not
need: judging a statement against the xAPI specification is the validator's job, not this one's.

A statement that cannot be normalised never fails its page: ``add`` returns a Rejection with a
stable reason code and the detail (with the JSON path where msgspec knows it), and the caller keeps
the raw bytes with that reason in the raw zone.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import contracts

# Changing this namespace changes every record_id ever written: never do it.
FOOTPRINT_NS = uuid.UUID("0b8c6d0e-5f3a-5e8e-9a41-7f1d0c2b6a90")
VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"
DISPLAY_LANGS = ("en-US", "en", "kk-KZ", "ru-RU")


class Account(msgspec.Struct):
    homePage: str | None = None
    name: str | None = None


class Actor(msgspec.Struct):
    objectType: str | None = None
    name: str | None = None
    mbox: str | None = None
    mbox_sha1sum: str | None = None
    openid: str | None = None
    account: Account | None = None


class Verb(msgspec.Struct):
    id: str | None = None
    display: dict[str, str] | None = None


class Definition(msgspec.Struct):
    type: str | None = None
    name: dict[str, str] | None = None


class StatementObject(msgspec.Struct):
    objectType: str | None = None
    id: str | None = None
    definition: Definition | None = None
    name: str | None = None
    mbox: str | None = None
    mbox_sha1sum: str | None = None
    openid: str | None = None
    account: Account | None = None


class Score(msgspec.Struct):
    scaled: float | None = None
    raw: float | None = None
    min: float | None = None
    max: float | None = None


class Result(msgspec.Struct):
    score: Score | None = None
    success: bool | None = None
    completion: bool | None = None
    duration: str | None = None
    extensions: dict[str, Any] | None = None


class ActivityRef(msgspec.Struct):
    id: str | None = None


ActivityRefs = list[ActivityRef] | ActivityRef | None


class ContextActivities(msgspec.Struct):
    parent: ActivityRefs = None
    grouping: ActivityRefs = None
    category: ActivityRefs = None
    other: ActivityRefs = None


class StatementRef(msgspec.Struct):
    id: str | None = None


class Context(msgspec.Struct):
    registration: str | None = None
    instructor: Actor | None = None
    contextActivities: ContextActivities | None = None
    platform: str | None = None
    language: str | None = None
    statement: StatementRef | None = None
    extensions: dict[str, Any] | None = None


class Statement(msgspec.Struct):
    id: str | None = None
    actor: Actor | None = None
    verb: Verb | None = None
    object: StatementObject | None = None
    result: Result | None = None
    context: Context | None = None
    timestamp: str | None = None
    stored: str | None = None
    version: str | None = None


_decoder = msgspec.json.Decoder(Statement)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A statement that could not be normalised: kept raw, with a stable reason code."""

    reason: str
    detail: str
    statement_id: str | None = None


# Stable reason codes (documented in the README; never renamed).
MALFORMED_JSON = "malformed-json"
NOT_AN_OBJECT = "not-an-object"
WRONG_TYPE = "wrong-type"
BAD_ID = "bad-statement-id"
BAD_TIMESTAMP = "bad-timestamp"
BAD_STORED = "bad-stored"
NO_TIME = "no-time"
REASONS = (MALFORMED_JSON, NOT_AN_OBJECT, WRONG_TYPE, BAD_ID, BAD_TIMESTAMP, BAD_STORED, NO_TIME)

_DUR = re.compile(
    r"^P(?:(\d+(?:[.,]\d+)?)W)?(?:(\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?:(\d+(?:[.,]\d+)?)H)?(?:(\d+(?:[.,]\d+)?)M)?(?:(\d+(?:[.,]\d+)?)S)?)?$"
)
_DUR_FACTORS = (604800.0, 86400.0, 3600.0, 60.0, 1.0)


def duration_seconds(value: str | None) -> float | None:
    """Seconds in an ISO 8601 duration of weeks..seconds; None if absent, ambiguous or malformed."""
    if not value:
        return None
    m = _DUR.match(value)
    if m is None or value.endswith("T") or value == "P":
        return None
    total = 0.0
    for part, factor in zip(m.groups(), _DUR_FACTORS, strict=True):
        if part:
            total += float(part.replace(",", ".")) * factor
    return total


def parse_time(value: str) -> datetime:
    """ISO 8601 -> aware UTC datetime (microseconds); a value without offset is read as UTC."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def actor_ifi(a: Actor | StatementObject | None) -> str | None:
    if a is None:
        return None
    if a.mbox is not None:
        return "mbox:" + a.mbox
    if a.mbox_sha1sum is not None:
        return "mbox_sha1sum:" + a.mbox_sha1sum
    if a.openid is not None:
        return "openid:" + a.openid
    acc = a.account
    if acc is not None:
        return f"account:{acc.homePage}|{acc.name}"
    return None


def _ids(refs: ActivityRefs) -> list[str] | None:
    if refs is None:
        return None
    if isinstance(refs, ActivityRef):
        return [refs.id] if refs.id is not None else []
    return [r.id for r in refs if r.id is not None]


def _display(m: dict[str, str] | None) -> str | None:
    if not m:
        return None
    for lang in DISPLAY_LANGS:
        v = m.get(lang)
        if v is not None:
            return v
    return next(iter(m.values()))


def _canonical(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def derived_statement_id(raw_sha256: str) -> str:
    return _uuid5("sha256:" + raw_sha256)


def record_id(source: str, statement_id: str) -> str:
    return _uuid5(f"{source}/{statement_id}")


_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_EMPTY_ACTOR = Actor()
_EMPTY_ACCOUNT = Account()
_EMPTY_VERB = Verb()
_EMPTY_OBJECT = StatementObject()
_EMPTY_DEFINITION = Definition()
_EMPTY_RESULT = Result()
_EMPTY_SCORE = Score()
_EMPTY_CONTEXT = Context()
_EMPTY_CA = ContextActivities()
_EMPTY_REF = StatementRef()
_TS_NS = pa.timestamp("ns", tz="UTC")
_TS_US = pa.timestamp("us", tz="UTC")


def _uuid5(name: str) -> str:
    """uuid.uuid5(FOOTPRINT_NS, name) as text, without building UUID objects (hot path)."""
    h = bytearray(hashlib.sha1(_NS_BYTES + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_NS_BYTES = FOOTPRINT_NS.bytes


def _times(values: list[str | None]) -> tuple[pa.Array, dict[int, str]]:
    """ISO 8601 texts -> UTC microsecond timestamps, vectorised; bad ones by index."""
    arr = pa.array(values, type=pa.string())
    try:
        return pc.cast(pc.cast(arr, _TS_NS), _TS_US, safe=False), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out: list[datetime | None] = []
    bad: dict[int, str] = {}
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(parse_time(v))
        except ValueError:
            bad[i] = v
            out.append(None)
    return pa.array(out, type=_TS_US), bad


class Normaliser:
    """Accumulates statements for one source and run; ``take()`` hands them over as a table.

    ``add`` only decodes (and rejects what does not decode); the columns are built in bulk by
    ``take``, which is where the time goes, so it works column by column. The table has every
    contract column except the ``source`` partition key (constant for a normaliser); ``date`` is
    kept so the writer can split rows into partitions.
    """

    def __init__(self, source: str, run_id: str) -> None:
        self.source = source
        self.run_id = run_id
        self._schema = pa.schema(
            [f for f in contracts.normalised_statement().arrow_schema() if f.name != "source"]
        )
        self._st: list[Statement] = []
        self._raw: list[bytes] = []
        self._ref: list[str] = []
        self._fetched: list[datetime] = []

    @property
    def rows(self) -> int:
        return len(self._st)

    def add(self, raw: bytes, fetch_ref: str, fetched_at: datetime) -> Rejection | None:
        """Decode one statement; returns a Rejection instead of raising for bad input."""
        try:
            st = _decoder.decode(raw)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            code = WRONG_TYPE if "$." in msg else NOT_AN_OBJECT
            return Rejection(code, msg, _sniff_id(raw))
        except msgspec.DecodeError as exc:
            return Rejection(MALFORMED_JSON, str(exc))
        sid = st.id
        if sid is not None and _UUID_RE.match(sid) is None:
            low = sid.lower()
            if _UUID_RE.match(low) is None:
                return Rejection(BAD_ID, f"id {sid!r} is not a UUID", None)
            st.id = low
        self._st.append(st)
        self._raw.append(raw)
        self._ref.append(fetch_ref)
        self._fetched.append(fetched_at)
        return None

    def take(self) -> tuple[pa.Table, dict[int, Rejection]]:
        """All rows added since the last take, in order, and those that cannot be kept.

        Rows whose times do not parse (or that have no time at all) are in the table too, so
        positions line up with the order of ``add``; the dict names them by position and the
        caller drops them. The buffers start empty again.
        """
        sts, raws, refs, fetched = self._st, self._raw, self._ref, self._fetched
        self._st, self._raw, self._ref, self._fetched = [], [], [], []
        digests = [hashlib.sha256(r).hexdigest() for r in raws]
        sids = [
            s.id if s.id is not None else derived_statement_id(d)
            for s, d in zip(sts, digests, strict=True)
        ]
        prefix = self.source + "/"
        actors = [s.actor or _EMPTY_ACTOR for s in sts]
        accounts = [a.account or _EMPTY_ACCOUNT for a in actors]
        verbs = [s.verb or _EMPTY_VERB for s in sts]
        objs = [s.object or _EMPTY_OBJECT for s in sts]
        defs = [o.definition or _EMPTY_DEFINITION for o in objs]
        results = [s.result or _EMPTY_RESULT for s in sts]
        scores = [r.score or _EMPTY_SCORE for r in results]
        ctxs = [s.context or _EMPTY_CONTEXT for s in sts]
        cas = [x.contextActivities or _EMPTY_CA for x in ctxs]
        verb_ids = [v.id for v in verbs]
        ts, bad_ts = _times([s.timestamp for s in sts])
        stored, bad_st = _times([s.stored for s in sts])
        cols: dict[str, Any] = {
            "record_id": [_uuid5(prefix + i) for i in sids],
            "statement_id": sids,
            "statement_id_derived": [s.id is None for s in sts],
            "version": [s.version for s in sts],
            "actor_object_type": [a.objectType for a in actors],
            "actor_name": [a.name for a in actors],
            "actor_mbox": [a.mbox for a in actors],
            "actor_mbox_sha1sum": [a.mbox_sha1sum for a in actors],
            "actor_openid": [a.openid for a in actors],
            "actor_account_homepage": [a.homePage for a in accounts],
            "actor_account_name": [a.name for a in accounts],
            "actor_ifi": [actor_ifi(a) for a in actors],
            "verb_id": verb_ids,
            "verb_display": [_display(v.display) for v in verbs],
            "object_type": [o.objectType for o in objs],
            "object_id": [
                actor_ifi(o) if o.objectType in ("Agent", "Group") else o.id for o in objs
            ],
            "object_definition_type": [d.type for d in defs],
            "object_name": [d.name for d in defs],
            "voided_statement_id": [
                o.id if v == VOIDED_VERB and o.objectType == "StatementRef" else None
                for v, o in zip(verb_ids, objs, strict=True)
            ],
            "result_score_scaled": [s.scaled for s in scores],
            "result_score_raw": [s.raw for s in scores],
            "result_score_min": [s.min for s in scores],
            "result_score_max": [s.max for s in scores],
            "result_success": [r.success for r in results],
            "result_completion": [r.completion for r in results],
            "result_duration": [r.duration for r in results],
            "result_duration_seconds": [duration_seconds(r.duration) for r in results],
            "result_extensions": [_canonical(r.extensions) for r in results],
            "context_registration": [x.registration for x in ctxs],
            "context_platform": [x.platform for x in ctxs],
            "context_language": [x.language for x in ctxs],
            "context_instructor_ifi": [actor_ifi(x.instructor) for x in ctxs],
            "context_statement_id": [(x.statement or _EMPTY_REF).id for x in ctxs],
            "context_parent_ids": [_ids(c.parent) for c in cas],
            "context_grouping_ids": [_ids(c.grouping) for c in cas],
            "context_category_ids": [_ids(c.category) for c in cas],
            "context_other_ids": [_ids(c.other) for c in cas],
            "context_extensions": [_canonical(x.extensions) for x in ctxs],
            "timestamp": ts,
            "stored": stored,
            "raw_sha256": digests,
            "run_id": pa.repeat(self.run_id, len(sts)) if sts else [],
            "fetched_at": fetched,
            "fetch_ref": refs,
        }
        cols["date"] = pc.strftime(pc.coalesce(stored, ts), format="%Y-%m-%d")
        arrays = [
            c if isinstance(c, pa.Array | pa.ChunkedArray) else pa.array(c, type=f.type)
            for f, c in ((f, cols[f.name]) for f in self._schema)
        ]
        arrays = [a.cast(f.type) if a.type != f.type else a for a, f in zip(arrays, self._schema,
                                                                             strict=True)]
        table = pa.Table.from_arrays(arrays, schema=self._schema)

        bad: dict[int, Rejection] = {}
        for i, v in bad_st.items():
            bad[i] = Rejection(BAD_STORED, f"stored {v!r} is not ISO 8601", sids[i])
        for i, v in bad_ts.items():
            bad.setdefault(i, Rejection(BAD_TIMESTAMP, f"timestamp {v!r} is not ISO 8601",
                                        sids[i]))
        if cols["date"].null_count:
            for i, missing in enumerate(pc.is_null(cols["date"]).to_pylist()):
                if missing and i not in bad:
                    bad[i] = Rejection(NO_TIME, "neither stored nor timestamp: the row has no date",
                                       sids[i])
        return table, bad


_ID_RE = re.compile(rb'"id"\s*:\s*"([0-9a-fA-F-]{36})"')


def _sniff_id(raw: bytes) -> str | None:
    """Best-effort statement id of a statement that failed to decode, for the raw zone's index."""
    m = _ID_RE.search(raw)
    return m.group(1).decode().lower() if m else None
