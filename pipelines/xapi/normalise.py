"""xAPI statements (bytes, as received) -> rows of the normalised-statement contract (Arrow).

This is the hot path of ingestion, so statements are decoded by msgspec straight into typed
structs (no intermediate dicts) and the rows are gathered column by column. Decoding is strict
about JSON types (``"success": "false"`` is an error, not True) but ignores properties it does not
need: judging a statement against the xAPI specification is the validator's job, not this one's.

The structs are ``gc=False`` (a decoded JSON tree has no cycles): hundreds of thousands of live
statements would otherwise make every garbage collection walk them all.

A statement that cannot be normalised never fails its page: ``add`` returns a Rejection with a
stable reason code and the detail (with the JSON path where msgspec knows it), and the caller keeps
the raw bytes with that reason in the raw zone.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from msgspec.structs import astuple

from pipelines import contracts

# Changing this namespace changes every derived statement id ever written: never do it.
FOOTPRINT_NS = uuid.UUID("0b8c6d0e-5f3a-5e8e-9a41-7f1d0c2b6a90")
VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"


_NO_RAW = msgspec.Raw()


class Account(msgspec.Struct, gc=False):
    homePage: str | None = None
    name: str | None = None


class Actor(msgspec.Struct, gc=False):
    objectType: str | None = None
    name: str | None = None
    mbox: str | None = None
    mbox_sha1sum: str | None = None
    openid: str | None = None
    account: Account | None = None


class Display(msgspec.Struct, gc=False, rename={
        "en_us": "en-US", "en": "en", "kk_kz": "kk-KZ", "ru_ru": "ru-RU", "kk": "kk", "ru": "ru"}):
    """The languages a display text is taken from, in order of preference (others ignored)."""

    en_us: str | None = None
    en: str | None = None
    kk_kz: str | None = None
    ru_ru: str | None = None
    kk: str | None = None
    ru: str | None = None


class Verb(msgspec.Struct, gc=False):
    id: str | None = None
    display: Display | None = None


class Definition(msgspec.Struct, gc=False):
    type: str | None = None
    name: msgspec.Raw = _NO_RAW  # kept as the JSON text sent


class StatementObject(msgspec.Struct, gc=False):
    objectType: str | None = None
    id: str | None = None
    definition: Definition | None = None
    name: str | None = None
    mbox: str | None = None
    mbox_sha1sum: str | None = None
    openid: str | None = None
    account: Account | None = None


class Score(msgspec.Struct, gc=False):
    scaled: float | None = None
    raw: float | None = None
    min: float | None = None
    max: float | None = None


class Result(msgspec.Struct, gc=False):
    score: Score | None = None
    success: bool | None = None
    completion: bool | None = None
    duration: str | None = None


class ActivityRef(msgspec.Struct, gc=False):
    id: str | None = None


ActivityRefs = list[ActivityRef] | ActivityRef | None


class ContextActivities(msgspec.Struct, gc=False):
    parent: ActivityRefs = None
    grouping: ActivityRefs = None
    category: ActivityRefs = None
    other: ActivityRefs = None


class StatementRef(msgspec.Struct, gc=False):
    id: str | None = None


class Context(msgspec.Struct, gc=False):
    registration: str | None = None
    instructor: Actor | None = None
    contextActivities: ContextActivities | None = None
    platform: str | None = None
    language: str | None = None
    statement: StatementRef | None = None
    extensions: msgspec.Raw = _NO_RAW


class Statement(msgspec.Struct, gc=False):
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
_DUR_ARROW = (
    r"^P(?:(?P<w>\d+(?:[.,]\d+)?)W)?(?:(?P<d>\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:[.,]\d+)?)H)?(?:(?P<m>\d+(?:[.,]\d+)?)M)?"
    r"(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?$"
)


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


def durations_seconds(values: pa.Array) -> pa.Array:
    """The vectorised ``duration_seconds`` over a string array."""
    if values.null_count == len(values):
        return pa.nulls(len(values), pa.float64())
    m = pc.extract_regex(values, _DUR_ARROW)
    total = None
    for name, factor in zip("wdhms", _DUR_FACTORS, strict=True):
        part = pc.struct_field(m, name)
        num = pc.cast(pc.replace_substring(pc.if_else(pc.equal(part, ""), "0", part), ",", "."),
                      pa.float64())
        term = pc.multiply(num, factor)
        total = term if total is None else pc.add(total, term)
    assert total is not None
    usable = pc.and_(pc.and_(pc.is_valid(m), pc.not_equal(values, "P")),
                     pc.invert(pc.ends_with(values, "T")))
    return pc.if_else(pc.fill_null(usable, False), total, pa.scalar(None, pa.float64()))


def parse_time(value: str) -> datetime:
    """ISO 8601 -> aware UTC datetime (microseconds); a value without offset is read as UTC."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def actor_ifi(a: Actor | StatementObject | None) -> str | None:
    """The canonical inverse functional identifier of one agent (see the contract)."""
    if a is None:
        return None
    if a.mbox is not None:
        return "mbox:" + a.mbox
    if a.mbox_sha1sum is not None:
        return "mbox_sha1sum:" + a.mbox_sha1sum
    if a.openid is not None:
        return "openid:" + a.openid
    acc = a.account
    if acc is not None and acc.homePage is not None and acc.name is not None:
        return f"account:{acc.homePage}|{acc.name}"
    return None


def _ifis(mbox: pa.Array, sha1: pa.Array, openid: pa.Array, home: pa.Array,
          name: pa.Array) -> pa.Array:
    """``actor_ifi`` over columns, in Arrow."""
    def cat(*parts: Any) -> pa.Array:
        return pc.binary_join_element_wise(*parts, "")

    return pc.coalesce(
        cat("mbox:", mbox), cat("mbox_sha1sum:", sha1), cat("openid:", openid),
        cat("account:", home, "|", name),
    )


def derived_statement_id(raw_sha256: str) -> str:
    return _uuid5("sha256:" + raw_sha256)


def _uuid5(name: str) -> str:
    """uuid.uuid5(FOOTPRINT_NS, name) as text, without building UUID objects."""
    h = bytearray(hashlib.sha1(_NS_BYTES + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_NS_BYTES = FOOTPRINT_NS.bytes
_UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_EMPTY_ACTOR = Actor()
_EMPTY_ACCOUNT = Account()
_EMPTY_VERB = Verb()
_EMPTY_DISPLAY = Display()
_EMPTY_OBJECT = StatementObject()
_EMPTY_DEFINITION = Definition()
_EMPTY_RESULT = Result()
_EMPTY_SCORE = Score()
_EMPTY_CONTEXT = Context()
_EMPTY_CA = ContextActivities()
_TS_NS = pa.timestamp("ns", tz="UTC")
_TS_US = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_ARROW_ISO = (r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?"
              r"(Z|[+-]\d{2}:\d{2})$")
_STR = pa.string()
TAKE_SLICE = 1000
_NONE: list[None] = [None]


def _arrow_cast(arr: pa.Array) -> pa.Array:
    return pc.cast(pc.cast(arr, _TS_NS), _TS_US, safe=False)


def _times(values: Sequence[str | None]) -> tuple[pa.Array, dict[int, str]]:
    """ISO 8601 texts -> UTC microsecond timestamps, vectorised; bad ones by index.

    Arrow parses the common shapes (``...T..Z``, ``+05:00``, up to nanoseconds) in bulk; only the
    few others (no offset, basic format, out of range, garbage) go through Python one by one.
    """
    arr = pa.array(values, type=_STR)
    try:
        return _arrow_cast(arr), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    fits = pc.fill_null(pc.match_substring_regex(arr, _ARROW_ISO), False)
    try:
        bulk = _arrow_cast(pc.if_else(fits, arr, pa.scalar(None, _STR)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. month 13: all by hand
        fits = pa.array([False] * len(values))
        bulk = pa.nulls(len(values), _TS_US)
    others = pc.and_(pc.invert(fits), pc.is_valid(arr))
    bad: dict[int, str] = {}
    idx = pc.indices_nonzero(others).to_pylist()
    if not idx:
        return bulk, bad
    micros: list[int | None] = []
    for i in idx:
        v = values[i]
        assert v is not None
        try:
            micros.append((parse_time(v) - _EPOCH) // _MICRO)
        except (ValueError, OverflowError):
            bad[i] = v
            micros.append(None)
    fixed = pc.replace_with_mask(bulk, others, pa.array(micros, pa.int64()).cast(_TS_US))
    return fixed, bad


def _fields(objs: list[Any]) -> list[tuple[Any, ...]]:
    """Struct instances -> one tuple per field (a transpose done in C)."""
    return list(zip(*map(astuple, objs), strict=True))


def _or(values: Sequence[Any], empty: Any) -> list[Any]:
    return [v if v is not None else empty for v in values]


def _arr(values: Sequence[Any], typ: pa.DataType = _STR) -> pa.Array:
    if values.count(None) == len(values):  # columns a source never fills cost nothing
        return pa.nulls(len(values), typ)
    return pa.array(values, type=typ)


def _raw_text(values: Sequence[msgspec.Raw]) -> pa.Array:
    """Raw JSON slices (empty = absent) -> a string column of the JSON text as sent."""
    if not any(values):
        return pa.nulls(len(values), _STR)
    return pa.array([bytes(v) if v else None for v in values], pa.binary()).cast(_STR)


def _ids(refs: Sequence[Any]) -> pa.Array:
    """contextActivities lists (or the single object 1.0.x also allows) -> list<string>."""
    if refs.count(None) == len(refs):
        return pa.nulls(len(refs), pa.list_(_STR))
    return pa.array(
        [None if r is None else [a.id for a in r] if r.__class__ is list else [r.id]
         for r in refs],
        pa.list_(_STR),
    )


class Normaliser:
    """Statements of one source -> rows of the normalised-statement contract, in batches.

    ``add_page`` decodes each statement of a page (the only work done per statement in Python)
    and rejects what does not decode; the columns are built, mostly in Arrow, a slice of
    ``TAKE_SLICE`` statements at a time as soon as a slice is full (``take`` builds the rest and
    returns everything added since the last take). The table has every contract column except
    the ``source`` partition key (constant for a normaliser); ``date`` is kept so that the writer
    can split rows into partitions.
    """

    def __init__(self, source: str, run_id: str) -> None:
        self.source = source
        self.run_id = run_id
        self._schema = pa.schema(
            [f for f in contracts.normalised_statement().arrow_schema() if f.name != "source"]
        )
        self._reset()

    def _reset(self) -> None:
        self._st: list[Statement | None] = []
        self._raw: list[bytes] = []
        self._ref: list[str] = []
        self._pos: list[int] = []
        self._fetched: list[int] = []
        self._tables: list[pa.Table] = []
        self._bad: dict[int, Rejection] = {}
        self._built = 0  # statements already turned into columns (their structs released)

    def _build(self, upto: int) -> None:
        """Columns for the statements added but not built yet, up to ``upto``, a slice at a
        time; each slice's structs are released as soon as its columns are drawn from them,
        while they are still in the CPU's caches."""
        for start in range(self._built, upto, TAKE_SLICE):
            end = min(upto, start + TAKE_SLICE)
            t, b = self._columns(start, end)
            self._tables.append(t)
            self._bad.update({start + i: r for i, r in b.items()})
            self._st[start:end] = _NONE * (end - start)
        self._built = upto

    def add_page(self, statements: Sequence[bytes], ref: str, fetched_at: datetime,
                 positions: Sequence[int] | None = None) -> dict[int, Rejection]:
        """Decode a page's statements; returns the rejected ones by their index in the page."""
        rejected: dict[int, Rejection] = {}
        decode = _decoder.decode
        sts, raws, pos = self._st, self._raw, self._pos
        kept = 0
        for i, raw in enumerate(statements):
            try:
                st = decode(raw)
            except msgspec.ValidationError as exc:
                msg = str(exc)
                rejected[i] = Rejection(WRONG_TYPE if "$." in msg else NOT_AN_OBJECT, msg,
                                        _sniff_id(raw))
                continue
            except msgspec.DecodeError as exc:
                rejected[i] = Rejection(MALFORMED_JSON, str(exc))
                continue
            sts.append(st)
            raws.append(raw)
            pos.append(positions[i] if positions is not None else i)
            kept += 1
        micros = (fetched_at - _EPOCH) // _MICRO
        self._ref.extend([ref] * kept)
        self._fetched.extend([micros] * kept)
        ready = len(sts) - (len(sts) - self._built) % TAKE_SLICE
        if ready > self._built:
            self._build(ready)
        return rejected

    def take(self) -> tuple[pa.Table, dict[int, Rejection]]:
        """All rows added since the last take, in order, and those that cannot be kept.

        Rows with a bad id or times that do not parse (or no time at all) are in the table too,
        so that positions line up with the order of ``add_page``; the dict names them by position
        and the caller drops them. The buffers start empty again.

        Columns are built a slice at a time: a slice's statements stay in the CPU's caches while
        its ~50 columns are drawn from them, which is about twice as fast as one pass over all,
        and its structs are released right after, still cached (about 15 % faster again than
        releasing a whole batch of them at the end).
        """
        self._build(len(self._st))
        tables, bad = self._tables, self._bad
        table = pa.concat_tables(tables) if tables else self._schema.empty_table()
        self._reset()
        return table, bad

    def _columns(self, lo: int, hi: int) -> tuple[pa.Table, dict[int, Rejection]]:
        sts, raws = self._st[lo:hi], self._raw[lo:hi]
        n = len(sts)
        cols: dict[str, Any] = {}
        digests = [hashlib.sha256(r).hexdigest() for r in raws]
        (id_, actor, verb, obj, result, context, timestamp, stored, version) = _fields(sts) or (
            [()] * 9)
        # -- ids: lower-case UUIDs; a uuid5 of the bytes where the source gave none
        ids = pc.utf8_lower(pa.array(id_, _STR))
        bad: dict[int, Rejection] = {}
        not_uuid = pc.and_(pc.is_valid(ids), pc.invert(pc.match_substring_regex(ids, _UUID_RE)))
        for i in pc.indices_nonzero(not_uuid).to_pylist():
            bad[i] = Rejection(BAD_ID, f"id {id_[i]!r} is not a UUID")
        missing = pc.is_null(ids)
        if missing.true_count:
            at = pc.indices_nonzero(missing).to_pylist()
            ids = pc.replace_with_mask(ids, missing, pa.array(
                [derived_statement_id(digests[i]) for i in at], _STR))
        cols["statement_id"] = ids
        cols["statement_id_derived"] = missing
        cols["version"] = _arr(version)
        # -- actor
        (a_type, a_name, a_mbox, a_sha1, a_openid, a_acc) = _fields(_or(actor, _EMPTY_ACTOR)) or (
            [()] * 6)
        (a_home, a_accname) = _fields(_or(a_acc, _EMPTY_ACCOUNT)) or ([()] * 2)
        cols["actor_object_type"] = _arr(a_type)
        cols["actor_name"] = _arr(a_name)
        cols["actor_mbox"] = m = _arr(a_mbox)
        cols["actor_mbox_sha1sum"] = s1 = _arr(a_sha1)
        cols["actor_openid"] = oi = _arr(a_openid)
        cols["actor_account_homepage"] = h = _arr(a_home)
        cols["actor_account_name"] = an = _arr(a_accname)
        cols["actor_ifi"] = _ifis(m, s1, oi, h, an)
        # -- verb
        (v_id, v_display) = _fields(_or(verb, _EMPTY_VERB)) or ([()] * 2)
        cols["verb_id"] = verb_id = _arr(v_id)
        cols["verb_display"] = pc.coalesce(*[_arr(c) for c in _fields(
            _or(v_display, _EMPTY_DISPLAY))]) if n else pa.nulls(0, _STR)
        # -- object
        (o_type, o_id, o_def, _o_name, o_mbox, o_sha1, o_openid, o_acc) = _fields(
            _or(obj, _EMPTY_OBJECT)) or ([()] * 8)
        (d_type, d_name) = _fields(_or(o_def, _EMPTY_DEFINITION)) or ([()] * 2)
        cols["object_type"] = otype = _arr(o_type)
        object_id = _arr(o_id)
        if any(t in ("Agent", "Group") for t in o_type):
            (oh, on) = _fields(_or(o_acc, _EMPTY_ACCOUNT)) or ([()] * 2)
            agent_ifi = _ifis(_arr(o_mbox), _arr(o_sha1), _arr(o_openid), _arr(oh), _arr(on))
            is_agent = pc.fill_null(pc.is_in(otype, pa.array(["Agent", "Group"])), False)
            object_id = pc.if_else(is_agent, agent_ifi, object_id)
        cols["object_id"] = object_id
        cols["object_definition_type"] = _arr(d_type)
        cols["object_name"] = _raw_text(d_name)
        voiding = pc.fill_null(pc.and_(pc.equal(verb_id, VOIDED_VERB),
                                       pc.equal(otype, "StatementRef")), False)
        cols["voided_statement_id"] = pc.if_else(voiding, object_id, pa.scalar(None, _STR))
        # -- result
        (r_score, r_success, r_completion, r_duration) = _fields(
            _or(result, _EMPTY_RESULT)) or ([()] * 4)
        (sc_scaled, sc_raw, sc_min, sc_max) = _fields(_or(r_score, _EMPTY_SCORE)) or ([()] * 4)
        f64 = pa.float64()
        cols["result_score_scaled"] = _arr(sc_scaled, f64)
        cols["result_score_raw"] = _arr(sc_raw, f64)
        cols["result_score_min"] = _arr(sc_min, f64)
        cols["result_score_max"] = _arr(sc_max, f64)
        cols["result_success"] = _arr(r_success, pa.bool_())
        cols["result_completion"] = _arr(r_completion, pa.bool_())
        cols["result_duration"] = dur = _arr(r_duration)
        cols["result_duration_seconds"] = durations_seconds(dur)
        # -- context
        (c_reg, c_instr, c_ca, c_platform, c_lang, c_stmt, c_ext) = _fields(
            _or(context, _EMPTY_CONTEXT)) or ([()] * 7)
        cols["context_registration"] = _arr(c_reg)
        cols["context_platform"] = _arr(c_platform)
        cols["context_language"] = _arr(c_lang)
        cols["context_instructor_ifi"] = _arr([actor_ifi(a) for a in c_instr]) if any(
            a is not None for a in c_instr) else pa.nulls(n, _STR)
        cols["context_statement_id"] = _arr([r.id if r is not None else None for r in c_stmt])
        (ca_parent, ca_grouping, ca_category, ca_other) = _fields(
            _or(c_ca, _EMPTY_CA)) or ([()] * 4)
        cols["context_parent_ids"] = _ids(ca_parent)
        cols["context_grouping_ids"] = _ids(ca_grouping)
        cols["context_category_ids"] = _ids(ca_category)
        cols["context_other_ids"] = _ids(ca_other)
        cols["context_extensions"] = _raw_text(c_ext)
        # -- times and lineage
        ts, bad_ts = _times(timestamp)
        st, bad_st = _times(stored)
        cols["timestamp"] = ts
        cols["stored"] = st
        key = pc.coalesce(st, ts)
        cols["date"] = pc.cast(pc.cast(key, pa.date32()), _STR)
        cols["raw_sha256"] = pa.array(digests, _STR)
        cols["run_id"] = pa.repeat(pa.scalar(self.run_id, _STR), n)
        cols["fetched_at"] = pa.array(self._fetched[lo:hi], pa.int64()).cast(_TS_US)
        cols["fetch_ref"] = pa.array(self._ref[lo:hi], _STR)
        cols["fetch_index"] = pa.array(self._pos[lo:hi], pa.int64())
        table = pa.Table.from_arrays([cols[f.name] for f in self._schema], schema=self._schema)

        sids = None
        if bad_st or bad_ts or cols["date"].null_count:
            sids = ids.to_pylist()
        for i, v in bad_st.items():
            assert sids is not None
            bad.setdefault(i, Rejection(BAD_STORED, f"stored {v!r} is not ISO 8601", sids[i]))
        for i, v in bad_ts.items():
            assert sids is not None
            bad.setdefault(i, Rejection(BAD_TIMESTAMP, f"timestamp {v!r} is not ISO 8601",
                                        sids[i]))
        if cols["date"].null_count:
            assert sids is not None
            for i in pc.indices_nonzero(pc.is_null(cols["date"])).to_pylist():
                bad.setdefault(i, Rejection(
                    NO_TIME, "neither stored nor timestamp: the row has no date", sids[i]))
        return table, bad


@dataclass
class NormalisedBatch:
    """What normalising a batch of pages gives: the rows that can be kept and the rejections.

    ``rows`` are in reading order; ``row_index[k]`` is the position of row k in the batch (the
    pages' statements one after the other), and ``rejections`` names every other position.

    ``keep`` is None unless ``normalise_batch(..., drop_late=False)`` was asked: then ``rows``
    (and ``row_index``) still hold the rows rejected once their columns were built (bad id,
    unparseable times), ``keep`` is False for them, and the caller filters once for all.
    """

    rows: pa.Table
    row_index: list[int]
    rejections: dict[int, Rejection]
    keep: pa.Array | None = None


PageData = tuple[Sequence[bytes], str, datetime, Sequence[int] | None]
"""A page's statements, its ref (URL or file), when it was read, and the statements' positions."""


def normalise_batch(source: str, run_id: str, pages: Sequence[PageData],
                    drop_late: bool = True) -> NormalisedBatch:
    """Normalise whole pages at once: a pure function, so it can run in a worker process.

    ``drop_late=False``: leave the rows rejected after their columns were built in the table,
    marked in ``NormalisedBatch.keep`` (saves copying the table when the caller filters it
    again anyway)."""
    norm = Normaliser(source, run_id)
    rejections: dict[int, Rejection] = {}
    row_index: list[int] = []
    offset = 0
    for statements, ref, fetched_at, positions in pages:
        rejected = norm.add_page(statements, ref, fetched_at, positions)
        n = len(statements)
        if rejected:
            for i in range(n):
                if i in rejected:
                    rejections[offset + i] = rejected[i]
                else:
                    row_index.append(offset + i)
        else:
            row_index.extend(range(offset, offset + n))
        offset += n
    table, late = norm.take()
    if late:
        for p, rej in late.items():
            rejections[row_index[p]] = rej
        keep = np.ones(table.num_rows, bool)
        keep[np.fromiter(late, np.int64, len(late))] = False
        if not drop_late:
            return NormalisedBatch(table, row_index, rejections, pa.array(keep))
        table = table.filter(pa.array(keep))
        row_index = [ix for p, ix in enumerate(row_index) if p not in late]
    return NormalisedBatch(table, row_index, rejections)


_ID_RE = re.compile(rb'"id"\s*:\s*"([0-9a-fA-F-]{36})"')


def _sniff_id(raw: bytes) -> str | None:
    """Best-effort statement id of a statement that failed to decode, for the raw zone's index."""
    m = _ID_RE.search(raw)
    return m.group(1).decode().lower() if m else None
