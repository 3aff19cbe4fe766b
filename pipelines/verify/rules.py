"""Verification rules: normalised statements -> the verified footprint, quarantine and voids.

``verify`` is a pure function over Arrow tables (no files, no database, no clock: ``now`` and
``verified_at`` are arguments). Every row read ends up in exactly one of four places, and the
function raises if they do not add up (**read = verified + quarantined + duplicates + voiding**):

- ``duplicates``: an exact copy (same source, statement id and ``raw_sha256``) of a row kept
  earlier in the input; counted, not kept.
- ``voiding``: a voiding statement (verb ``voided``, object ``StatementRef``; the normalised column
  ``voided_statement_id``) that is valid xAPI; never verified, listed in ``Verification.voiding``
  for :mod:`pipelines.verify.voiding`. Learner, activity and period rules do not apply to it (the
  LRS accepts a void from anyone it authorised); an invalid or conflicting one is quarantined.
- ``quarantined``: one row per statement with *every* blocking reason found (codes below).
- ``verified``: the rest, as rows of the verified-footprint contract, with warnings attached.

Reason codes (stable, kebab-case; ``RULES`` holds them with their meaning):

- ``xapi-invalid``: the raw bytes fail :func:`pipelines.xapi.validate.validate_bytes`; the detail
  names each validator code and JSON path (not the values: the detail is not personal data). The
  validator's score codes (``score-scaled-range``, ``score-raw-out-of-range``,
  ``score-min-max``) are reported as ``implausible-score`` instead, so that each defect has one
  reason.
- ``unknown-learner``: the actor resolves to no roster student by account name, then mbox (case
  and ``mailto:`` ignored), then mbox_sha1sum, as :meth:`Roster.resolve` does.
- ``inactive-learner``: the student's roster status is not ``active``.
- ``unknown-activity``: neither the object id nor any ``contextActivities.parent`` id is in the
  catalogue (the object wins, then the first parent listed, as :meth:`Catalogue.resolve` does).
- ``future-timestamp``: timestamp later than ``now`` + 5 minutes of clock skew.
- ``outside-period``: the timestamp's *local* date (UTC+5, Kazakhstan's single time zone since
  1 March 2024; ``local_offset`` changes it) is outside the discipline's period_start..period_end.
  Local, because academic periods are calendar days in Almaty: 00:30 on 1 September local time is
  19:30 on 31 August UTC, and it is in the period.
- ``implausible-score``: scaled outside [-1, 1], max <= min, or raw below min / above max.
- ``implausible-duration``: a duration longer than 24 hours, negative, or one that cannot be
  measured in seconds (years or months, e.g. ``P1M``) on an otherwise valid statement.
- ``conflicting-duplicate``: the statement id was seen in the input with another body
  (``raw_sha256``). The first one (earliest ``stored``, then input order) is the statement, as an
  LRS keeps the first and answers 409 to the rest; every other body is quarantined. With
  ``held`` (the bodies that already hold an id outside the input: an earlier run verified it, or
  quarantined it for another reason) the held body is the statement and every other body of that
  id in the input is quarantined, so two bodies of one id never both reach the verified set.

Timestamps: a row without ``timestamp`` uses ``stored`` (xAPI: the LRS sets a missing timestamp
to stored). Warning codes never block, they are attached to the verified row:

- ``no-registration``: no ``context.registration`` (the attempt cannot be told apart).
- ``cmi5-completed-twice`` / ``cmi5-passed-twice``: a second ``completed`` / ``passed``;
  ``cmi5-failed-after-passed``: a ``failed`` after a ``passed``. Checked over the cmi5 statements
  (``contextActivities.category`` holds ``https://w3id.org/xapi/cmi5/context/categories/cmi5``:
  cmi5 requires that category on every cmi5-defined statement, while the same ADL verbs on other
  statements, e.g. a Moodle quiz ``completed``, are not subject to cmi5's rules) of this batch's
  verified rows, per registration and AU (object id: cmi5's "at most once" is per AU within a
  registration, and an LMS uses one registration for all AUs of a course), in timestamp order.
- ``tolerated-deviation``: the statement is valid only thanks to a tolerance profile the source
  opts in to (``tolerate=``, the source's ``tolerate`` setting; see
  :data:`pipelines.xapi.validate.PROFILES`), e.g. Open edX's objectType "GroupActivity". The
  validator's code and JSON path of each tolerated problem are in
  ``Verification.counts["tolerated_deviations"]`` (``"bad-object-type at $.object.objectType"``
  -> verified rows; the key is present only when some row carries the warning). A tolerated
  ``score-min-max`` (min == max) is not ``implausible-score`` either: such a score has no
  percentage from raw (only from scaled).
- ``void-of-void``: a void whose target is a voiding statement (:mod:`.voiding`).

Learning format (Order No. 187: *synchronous* = live, everyone at one time, streaming;
*asynchronous* = no fixed place or time). A verified statement is **synchronous** when one holds:

1. its verb says the learner was at a live event: ``http://adlnet.gov/expapi/verbs/attended`` or
   the Virtual Classroom profile's ``joined`` / ``left``;
2. its activity type is a live session: ``http://adlnet.gov/expapi/activities/meeting``,
   ``https://w3id.org/xapi/acrossx/activities/webinar``,
   ``http://id.tincanapi.com/activitytype/webinar``,
   ``https://w3id.org/xapi/virtual-classroom/activity-types/virtual-classroom``;
3. its activity id is a conferencing tool's (``LIVE_ACTIVITY_RE``: Moodle's
   ``mod/bigbluebuttonbn``, ``mod/zoom``, ``mod/jitsi``, ``mod/googlemeet``, ``mod/msteams``,
   ``mod/webex``, any ``bigbluebutton`` id, Zoom/Teams/Meet/Webex meeting links), since a
   plugin's statements often carry no type;
4. ``context.platform`` is a conferencing tool (``LIVE_PLATFORM_RE``: BigBlueButton, Zoom,
   Microsoft Teams, Webex, Jitsi, Google Meet): the statement was emitted by the live session;
5. the catalogue says the discipline is ``synchronous`` *and* the context extensions carry a
   live-session key (``LIVE_EXTENSION_RE``, e.g. a BigBlueButton meeting id): an extension alone is
   weak evidence (context is often copied), so it needs the discipline's format to agree.

Otherwise it is **asynchronous**: a quiz, a page, a video or a cmi5 AU is done when the learner
chooses, even in a synchronous discipline (the catalogue format alone never makes a statement
synchronous).

Learning mode (distance or online, Order No. 187). The data say how a discipline is delivered
(catalogue ``format``) and whether this statement was live (the format above); the rules:

1. a synchronous statement is **online**: the learner and the teacher met over the internet in
   real time (an online class), whatever the discipline's format;
2. any statement of a discipline the catalogue calls ``synchronous`` is **online**: the discipline
   is taught in live online classes, and its LMS materials and quizzes are part of that course;
3. otherwise (an asynchronous statement of an ``asynchronous`` or ``blended`` discipline) it is
   **distance**: self-paced study with distance educational technologies, the teacher's
   interaction mediated by the LMS rather than live. A ``blended`` discipline is thus online for
   its live sessions and distance for its self-study, statement by statement.

``context.platform`` of an LMS (e.g. "Moodle 4.3") says nothing about the mode; only a
conferencing platform counts (format rule 4, and through it mode rule 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import contracts
from pipelines.verify.reference import Catalogue, Roster
from pipelines.verify.voiding import VOID_OF_VOID, Void, voids_from_table
from pipelines.xapi.normalise import FOOTPRINT_NS
from pipelines.xapi.validate import Problem, validate_detailed_bytes

__all__ = [
    "BLOCKING",
    "CLOCK_SKEW",
    "CMI5_CATEGORY",
    "LOCAL_OFFSET",
    "MAX_DURATION_SECONDS",
    "RULES",
    "WARNINGS",
    "RawStatements",
    "Verification",
    "classify",
    "record_ids",
    "verify",
]

# -- reason codes --------------------------------------------------------------------------------
XAPI_INVALID = "xapi-invalid"
UNKNOWN_LEARNER = "unknown-learner"
INACTIVE_LEARNER = "inactive-learner"
UNKNOWN_ACTIVITY = "unknown-activity"
FUTURE_TIMESTAMP = "future-timestamp"
OUTSIDE_PERIOD = "outside-period"
IMPLAUSIBLE_SCORE = "implausible-score"
IMPLAUSIBLE_DURATION = "implausible-duration"
CONFLICTING_DUPLICATE = "conflicting-duplicate"
CMI5_COMPLETED_TWICE = "cmi5-completed-twice"
CMI5_PASSED_TWICE = "cmi5-passed-twice"
CMI5_FAILED_AFTER_PASSED = "cmi5-failed-after-passed"
NO_REGISTRATION = "no-registration"
TOLERATED_DEVIATION = "tolerated-deviation"

RULES: dict[str, str] = {
    XAPI_INVALID: "the statement as received fails xAPI validation (the validator's code and "
    "JSON path are in the detail)",
    UNKNOWN_LEARNER: "the actor is no roster student (by account name, mbox or mbox_sha1sum)",
    INACTIVE_LEARNER: "the student's roster status is not active (academic leave, expelled)",
    UNKNOWN_ACTIVITY: "neither the object id nor any context parent id is in the catalogue",
    FUTURE_TIMESTAMP: "the timestamp is more than 5 minutes (clock skew) after the run's now",
    OUTSIDE_PERIOD: "the timestamp's local date (UTC+5) is outside the discipline's academic "
    "period",
    IMPLAUSIBLE_SCORE: "score.raw outside [min, max], score.scaled outside [-1, 1], or max <= min",
    IMPLAUSIBLE_DURATION: "result.duration negative, over 24 hours, or not measurable in seconds",
    CONFLICTING_DUPLICATE: "the statement id was seen with another body (raw_sha256); the first "
    "one (earliest stored, or the one an earlier run verified or quarantined) is the statement",
    CMI5_COMPLETED_TWICE: "warning: a second cmi5 completed in one registration for one AU",
    CMI5_PASSED_TWICE: "warning: a second cmi5 passed in one registration for one AU",
    CMI5_FAILED_AFTER_PASSED: "warning: a cmi5 failed after a passed in one registration for one "
    "AU",
    NO_REGISTRATION: "warning: the statement has no context.registration",
    TOLERATED_DEVIATION: "warning: valid only under the source's tolerance profile (the validator "
    "codes are in the counts)",
    VOID_OF_VOID: "warning: a void whose target is a voiding statement is ignored",
}
BLOCKING: tuple[str, ...] = (
    XAPI_INVALID,
    UNKNOWN_LEARNER,
    INACTIVE_LEARNER,
    UNKNOWN_ACTIVITY,
    FUTURE_TIMESTAMP,
    OUTSIDE_PERIOD,
    IMPLAUSIBLE_SCORE,
    IMPLAUSIBLE_DURATION,
    CONFLICTING_DUPLICATE,
)
WARNINGS: tuple[str, ...] = (
    CMI5_COMPLETED_TWICE,
    CMI5_PASSED_TWICE,
    CMI5_FAILED_AFTER_PASSED,
    NO_REGISTRATION,
    TOLERATED_DEVIATION,
    VOID_OF_VOID,
)
_ROW_WARNINGS = WARNINGS[:5]  # those verify attaches to rows

CLOCK_SKEW = timedelta(minutes=5)
MAX_DURATION_SECONDS = 24 * 3600.0
LOCAL_OFFSET = timedelta(hours=5)  # Asia/Almaty (all of Kazakhstan: UTC+5 since 2024-03-01)
_SCORE_CODES = frozenset({"score-scaled-range", "score-raw-out-of-range", "score-min-max"})

# -- classification vocabularies -----------------------------------------------------------------
ADL_VERBS = "http://adlnet.gov/expapi/verbs/"
VERB_ATTENDED = ADL_VERBS + "attended"
VERB_COMPLETED = ADL_VERBS + "completed"
VERB_PASSED = ADL_VERBS + "passed"
VERB_FAILED = ADL_VERBS + "failed"
CMI5_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/cmi5"
SYNCHRONOUS_VERBS = (
    VERB_ATTENDED,
    "https://w3id.org/xapi/virtual-classroom/verbs/joined",
    "https://w3id.org/xapi/virtual-classroom/verbs/left",
)
SYNCHRONOUS_TYPES = (
    "http://adlnet.gov/expapi/activities/meeting",
    "https://w3id.org/xapi/acrossx/activities/webinar",
    "http://id.tincanapi.com/activitytype/webinar",
    "https://w3id.org/xapi/virtual-classroom/activity-types/virtual-classroom",
)
LIVE_ACTIVITY_RE = (
    r"(?i)(?:/mod/(?:bigbluebuttonbn|zoom|jitsi|googlemeet|msteams|webex)/|bigbluebutton"
    r"|zoom\.us/[jw]/|teams\.microsoft\.com/l/meetup-join|meet\.google\.com/|webex\.com/meet)"
)
LIVE_PLATFORM_RE = r"(?i)(?:bigbluebutton|\bzoom\b|microsoft teams|\bwebex\b|\bjitsi\b|google meet)"
# a key (a quoted string followed by a colon) of the context extensions naming a live session
LIVE_EXTENSION_RE = (
    r'(?i)"[^"]*(?:bigbluebutton|meeting|webinar|live-?session|virtual-?classroom)[^"]*"\s*:'
)

SYNCHRONOUS = "synchronous"
ASYNCHRONOUS = "asynchronous"
ONLINE = "online"
DISTANCE = "distance"

_VERIFIED = contracts.load("verified-footprint", 1)
_QUARANTINE = contracts.load("quarantine", 1)
_STR = pa.string()
_TS = pa.timestamp("us", tz="UTC")
_EMPTY_LIST: pa.Array = pa.array([], pa.string())
VOIDING_SCHEMA = pa.schema(
    [
        pa.field("statement_id", _STR, nullable=False),
        pa.field("source", _STR, nullable=False),
        pa.field("voided_statement_id", _STR, nullable=False),
        pa.field("timestamp", _TS),
        pa.field("stored", _TS),
        pa.field("raw_sha256", _STR, nullable=False),
    ]
)


# --------------------------------------------------------------------------------------------
# Raw bytes


class RawStatements:
    """The statements' bytes by ``raw_sha256``, from a dict or a raw-zone table, zero-copy.

    A table needs a binary ``raw`` column; its ``raw_sha256`` column is used when present, else the
    SHA-256 of each value is computed (over memoryviews of the Arrow buffer, without copies).
    """

    def __init__(self, raw: Mapping[str, bytes] | pa.Table) -> None:
        self._dict: Mapping[str, bytes] | None = None
        self._views: dict[str, memoryview] = {}
        self._order: list[str | None] = []  # a table's raw_sha256 per row, in table order
        if not isinstance(raw, pa.Table):
            self._dict = raw
            return
        views: list[memoryview] = []
        for chunk in raw["raw"].chunks:
            views.extend(_binary_views(chunk))
        if "raw_sha256" in raw.column_names:
            shas = raw["raw_sha256"].to_pylist()
        else:
            shas = [hashlib.sha256(v).hexdigest() for v in views]
        self._order = shas
        self._views = {s: v for s, v in zip(shas, views, strict=True) if s is not None}

    def get(self, sha: str) -> bytes | memoryview | None:
        if self._dict is not None:
            return self._dict.get(sha)
        return self._views.get(sha)

    @property
    def order(self) -> list[str | None]:
        """A table's raw_sha256 per row, in table order (empty for a dict)."""
        return self._order

    def order_array(self) -> pa.Array:
        """``order`` as an Arrow string array."""
        return pa.array(self._order, pa.string())

    def verdicts(
        self, shas: list[str], version: str, tolerate: Collection[str]
    ) -> tuple[dict[str, list[Problem]], dict[str, list[Problem]]] | None:
        """Verdicts judged beforehand (see ``pipelines.verify.stage``), or None: judge here."""
        return None

    def prefetch(self, shas: list[str]) -> None:
        """Make ``get`` fast for these bodies (a no-op when every body is held already)."""


def _binary_views(arr: pa.Array) -> list[memoryview]:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
    large = pa.types.is_large_binary(arr.type)
    if not (large or pa.types.is_binary(arr.type)):
        raise TypeError(f"raw column must be binary, got {arr.type}")
    _validity, offsets_buf, data_buf = arr.buffers()
    n = len(arr)
    offsets = np.frombuffer(offsets_buf, np.int64 if large else np.int32)[
        arr.offset : arr.offset + n + 1
    ].tolist()
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    return [data[offsets[i] : offsets[i + 1]] for i in range(n)]


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Verification:
    verified: pa.Table  # the verified-footprint contract (partition columns included)
    quarantined: pa.Table  # the quarantine contract (source included)
    voiding: pa.Table  # valid voiding statements: VOIDING_SCHEMA
    warnings: dict[str, int]  # warning code -> verified rows carrying it
    counts: dict[str, Any] = field(default_factory=dict)
    # with verify(cmi5=False): the verified rows a cmi5 order rule can concern (row = index
    # into verified, record_id), for the caller's cmi5_flags over all its pieces
    cmi5: pa.Table | None = None

    @property
    def voids(self) -> list[Void]:
        """The voids for :func:`pipelines.verify.voiding.apply_voids`."""
        return voids_from_table(self.voiding)


# --------------------------------------------------------------------------------------------
# Helpers


def _arr(x: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (a single chunk is taken as it is: ``combine_chunks`` copies it)."""
    if isinstance(x, pa.ChunkedArray):
        return x.chunk(0) if x.num_chunks == 1 else x.combine_chunks()
    return x


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array (nulls = False) as a numpy bool array."""
    return np.asarray(_arr(pc.fill_null(mask, False)).to_numpy(zero_copy_only=False), dtype=bool)


def _utc(dt: datetime, name: str) -> datetime:
    if dt.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {dt}")
    return dt.astimezone(UTC)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)


def _hexed(raw: np.ndarray) -> np.ndarray:
    """(n, k) uint8 -> (n, 2k) uint8: each byte's two lowercase hex digits."""
    out = np.empty((raw.shape[0], 2 * raw.shape[1]), np.uint8)
    out[:, 0::2] = _HEX_DIGITS[raw >> 4]
    out[:, 1::2] = _HEX_DIGITS[raw & 0x0F]
    return out


def _fixed_width_strings(chars: np.ndarray) -> pa.Array:
    """(n, w) uint8 of ASCII -> n strings of w characters, without a Python string each."""
    n, w = chars.shape
    offsets = np.arange(0, w * n + 1, w, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets),
                                       pa.py_buffer(np.ascontiguousarray(chars).tobytes()))


def hex_strings(digests: bytes | bytearray) -> pa.Array:
    """32-byte digests, back to back, as an Arrow string array of their hex texts."""
    return _fixed_width_strings(_hexed(np.frombuffer(digests, np.uint8).reshape(-1, 32)))


def _hex_uuid_strings(digests: np.ndarray) -> pa.Array:
    """(n, 16) uint8 UUID bytes -> their canonical 36-character strings, vectorised."""
    hexed = _hexed(digests)
    out = np.full((digests.shape[0], 36), ord("-"), np.uint8)
    out[:, 0:8] = hexed[:, 0:8]
    out[:, 9:13] = hexed[:, 8:12]
    out[:, 14:18] = hexed[:, 12:16]
    out[:, 19:23] = hexed[:, 16:20]
    out[:, 24:36] = hexed[:, 20:32]
    return _fixed_width_strings(out)


def record_ids(sources: pa.Array | str, statement_ids: pa.Array) -> pa.Array:
    """uuid5(FOOTPRINT_NS, '<source>/<statement_id>') for each row, as text (vectorised)."""
    names = _arr(pc.binary_join_element_wise(sources, statement_ids, "/")).cast(pa.binary())
    prefix = FOOTPRINT_NS.bytes
    sha1 = hashlib.sha1
    blob = b"".join([sha1(prefix + b).digest()[:16] for b in names.to_pylist()])
    d = np.frombuffer(blob, np.uint8).reshape(-1, 16).copy()
    d[:, 6] = (d[:, 6] & 0x0F) | 0x50
    d[:, 8] = (d[:, 8] & 0x3F) | 0x80
    return _hex_uuid_strings(d)


def _first_parent_index(parents: pa.Array, catalogue_ids: pa.Array, n: int) -> pa.Array:
    """Per row, the catalogue index of the first context parent id in the catalogue (or null)."""
    if parents.null_count == len(parents):
        return pa.nulls(n, pa.int32())
    flat = pc.list_flatten(parents)
    rows = pc.list_parent_indices(parents).to_numpy()
    found = pc.index_in(flat, value_set=catalogue_ids)
    ok = _np(pc.is_valid(found))
    rows_ok = rows[ok]
    idx_ok = pc.filter(found, pa.array(ok)).to_numpy()
    first_row, first_at = np.unique(rows_ok, return_index=True)  # flatten keeps list order
    values = np.zeros(n, np.int32)
    values[first_row] = idx_ok[first_at]
    valid = np.zeros(n, bool)
    valid[first_row] = True
    return pa.array(values, pa.int32(), mask=~valid)


def _contains(lists: pa.Array, value: str, n: int) -> np.ndarray:
    out = np.zeros(n, bool)
    if lists.null_count == len(lists):
        return out
    flat = pc.list_flatten(lists)
    rows = pc.list_parent_indices(lists).to_numpy()
    out[rows[_np(pc.equal(flat, value))]] = True
    return out


def _matches(values: pa.Array, pattern: str) -> np.ndarray:
    return _np(pc.match_substring_regex(values, pattern))


def _text(x: pa.Array) -> pa.Array:
    return pc.cast(x, _STR)


def _piece(mask: np.ndarray, text: pa.Array | str) -> pa.Array:
    """``text + '; '`` where ``mask``, else ''."""
    if isinstance(text, str):
        text = pa.repeat(pa.scalar(text), len(mask))
    joined = pc.binary_join_element_wise(text, pa.scalar("; "), "")
    return pc.if_else(pa.array(mask), pc.fill_null(joined, "?; "), pa.scalar(""))


def _join_pieces(pieces: list[pa.Array], n: int) -> pa.Array:
    # (binary_join_element_wise with null_handling="skip" drops all-null rows in pyarrow 26,
    # so pieces are never null: '' where absent)
    if not pieces:
        return pa.repeat(pa.scalar(""), n)
    out = pieces[0] if len(pieces) == 1 else pc.binary_join_element_wise(*pieces, "")
    return pc.replace_substring_regex(out, r"; $", "")


def _lists(masks: np.ndarray, codes: tuple[str, ...]) -> pa.Array:
    """Rows x codes boolean matrix -> list<string> per row (codes in column order)."""
    n = masks.shape[0]
    counts = masks.sum(axis=1, dtype=np.int32)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    _rows, cols = np.nonzero(masks)
    dictionary = pa.array(codes, _STR)
    values = pc.take(dictionary, pa.array(cols.astype(np.int32)))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _rows(mask: np.ndarray) -> pa.Array:
    """The positions where ``mask`` is true (``take`` with them beats ``filter``)."""
    return pa.array(np.flatnonzero(mask))


def _sub(arr: pa.Array | pa.ChunkedArray, rows: pa.Array) -> pa.Array:
    return _arr(arr.take(rows))


# --------------------------------------------------------------------------------------------
# Classification


def classify(
    verb_id: pa.Array,
    object_definition_type: pa.Array,
    object_id: pa.Array,
    context_platform: pa.Array,
    context_extensions: pa.Array | pa.ChunkedArray,
    catalogue_format: pa.Array,
) -> tuple[pa.Array, pa.Array]:
    """(learning_format, learning_mode) per row, by the rules in the module docstring."""
    sync, online = _classify(
        verb_id,
        object_definition_type,
        object_id,
        context_platform,
        catalogue_format,
        lambda rows: _matches(_arr(context_extensions.take(rows)), LIVE_EXTENSION_RE),
    )
    return _labels(sync, online)


def _classify(
    verb_id: pa.Array,
    object_definition_type: pa.Array,
    object_id: pa.Array,
    context_platform: pa.Array,
    catalogue_format: pa.Array,
    live_extension: Callable[[pa.Array], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(synchronous, online) masks; ``live_extension(rows)`` matches the context extensions of
    those rows only (the JSON text is the largest column: it is read where rule 5 needs it)."""
    sync = (
        _np(pc.is_in(verb_id, value_set=pa.array(SYNCHRONOUS_VERBS)))
        | _np(pc.is_in(object_definition_type, value_set=pa.array(SYNCHRONOUS_TYPES)))
        | _matches(object_id, LIVE_ACTIVITY_RE)
        | _matches(context_platform, LIVE_PLATFORM_RE)
    )
    sync_discipline = _np(pc.equal(catalogue_format, SYNCHRONOUS))
    need = sync_discipline & ~sync
    if need.any():
        sync[need] = live_extension(_rows(need))
    return sync, sync | sync_discipline


def _labels(sync: np.ndarray, online: np.ndarray) -> tuple[pa.Array, pa.Array]:
    fmt = pc.if_else(pa.array(sync), pa.scalar(SYNCHRONOUS), pa.scalar(ASYNCHRONOUS))
    mode = pc.if_else(pa.array(online), pa.scalar(ONLINE), pa.scalar(DISTANCE))
    return fmt, mode


# --------------------------------------------------------------------------------------------
# The parts of verify


def _roster_keys(roster: Roster) -> tuple[pa.Table, pa.Array, pa.Array, pa.Array]:
    t = roster.to_arrow()
    emails = t["email"].to_pylist()
    sha1 = [
        None if e is None else hashlib.sha1(f"mailto:{e.lower()}".encode()).hexdigest()
        for e in emails
    ]
    return (
        t,
        _arr(t["lms_account"]),
        _arr(pc.utf8_lower(t["email"])),
        pa.array(sha1, _STR),
    )


def _resolve_students(cols: Callable[[str], pa.Array], roster: Roster) -> tuple[pa.Table, pa.Array]:
    t, accounts, emails, sha1s = _roster_keys(roster)
    mbox = pc.utf8_trim_whitespace(cols("actor_mbox"))
    mbox = pc.utf8_lower(
        pc.utf8_trim_whitespace(pc.replace_substring_regex(mbox, r"(?i)^mailto:", ""))
    )
    sha = pc.utf8_lower(pc.utf8_trim_whitespace(cols("actor_mbox_sha1sum")))
    idx = pc.coalesce(
        pc.index_in(cols("actor_account_name"), value_set=accounts, skip_nulls=True),
        pc.index_in(mbox, value_set=emails, skip_nulls=True),
        pc.index_in(sha, value_set=sha1s, skip_nulls=True),
    )
    return t, _arr(idx)


def duplicate_flags(
    key: pa.Array, sid: pa.Array, sha: pa.Array, stored: pa.Array,
    held: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """(exact-duplicate mask, {row: kept body's sha} for conflicting bodies) of rows keyed
    ``key`` (``source/statement_id``; ``sid`` the statement ids): the earliest ``stored`` body
    of an id is kept, unless ``held`` (statement id -> sha) names the body that holds it
    outside these rows."""
    dup, conflict = _duplicates(key, sha, stored)
    if held:
        _held_conflicts(sid, sha, dup, conflict, held)
    return dup, conflict


def _duplicates(
    key: pa.Array, sha: pa.Array, stored: pa.Array
) -> tuple[np.ndarray, dict[int, str]]:
    """(exact-duplicate mask, {row: first body's sha} for conflicting bodies)."""
    n = len(key)
    dup = np.zeros(n, bool)
    conflict: dict[int, str] = {}
    vc = pc.value_counts(key)
    repeated = pc.filter(vc.field("values"), pc.greater(vc.field("counts"), 1))
    if len(repeated) == 0:
        return dup, conflict
    rows = pc.indices_nonzero(pc.is_in(key, value_set=repeated)).to_pylist()
    sel = pa.array(rows, pa.int64())
    keys = pc.take(key, sel).to_pylist()
    shas = pc.take(sha, sel).to_pylist()
    times = pc.take(pc.cast(stored, pa.int64()), sel).to_pylist()
    groups: dict[str, list[tuple[bool, int, int, str]]] = {}
    for k, s, t, r in zip(keys, shas, times, rows, strict=True):
        groups.setdefault(k, []).append((t is None, t or 0, r, s))
    for members in groups.values():
        members.sort()
        winner = members[0][3]
        kept: set[str] = set()
        for _no_time, _t, r, s in sorted(members, key=lambda m: m[2]):
            if s in kept:
                dup[r] = True
            else:
                kept.add(s)
                if s != winner:
                    conflict[r] = winner
    return dup, conflict


def _held_conflicts(sid: pa.Array, sha: pa.Array, dup: np.ndarray, conflict: dict[int, str],
                    held: Mapping[str, str]) -> None:
    """Where an id is held by a body outside the input, that body wins: every other body of
    the id (not an exact copy of one already counted) becomes a conflict, the held one none."""
    rows = pc.indices_nonzero(
        pc.fill_null(pc.is_in(sid, value_set=pa.array(list(held), _STR)), False)).to_pylist()
    if not rows:
        return
    sel = pa.array(rows, pa.int64())
    for r, i, s in zip(rows, pc.take(sid, sel).to_pylist(), pc.take(sha, sel).to_pylist(),
                       strict=True):
        if s == held[i]:
            conflict.pop(r, None)
        elif not dup[r]:
            conflict[r] = held[i]


def raw_texts(raws: RawStatements, shas: list[str]) -> list[str]:
    """The bodies of ``shas`` as text (the quarantine's ``raw``), fetched together."""
    raws.prefetch(shas)
    out = []
    for s in shas:
        b = raws.get(s)
        if b is None:
            raise ValueError(f"no raw bytes for the statement body {s}")
        out.append(bytes(b).decode("utf-8", "replace"))
    return out


def _validate(
    shas: list[str], raws: RawStatements, version: str, tolerate: Collection[str]
) -> tuple[dict[str, list[Problem]], dict[str, list[Problem]]]:
    """Problems and tolerated problems by raw_sha256, for the bodies that have any."""
    judged = raws.verdicts(shas, version, tolerate)
    if judged is not None:
        return judged
    out: dict[str, list[Problem]] = {}
    tolerated: dict[str, list[Problem]] = {}
    missing: list[str] = []
    for s in shas:
        b = raws.get(s)
        if b is None:
            missing.append(s)
            continue
        verdict = validate_detailed_bytes(b, version, tolerate)  # type: ignore[arg-type]
        if verdict.problems:
            out[s] = verdict.problems
        if verdict.tolerated:
            tolerated[s] = verdict.tolerated
    if missing:
        raise ValueError(
            f"no raw bytes for {len(missing)} statement bodies (raw is looked up by raw_sha256), "
            f"e.g. {', '.join(missing[:3])}"
        )
    return out, tolerated


_CMI5_VERBS = (VERB_COMPLETED, VERB_PASSED, VERB_FAILED)


def _cmi5_candidates(
    reg: pa.Array,
    obj: pa.Array,
    verb: pa.Array,
    ts: pa.Array,
    stored: pa.Array,
    categories: pa.Array,
) -> pa.Table:
    """The rows a cmi5 order rule can concern (cmi5 category, a registration, verb completed,
    passed or failed): ``row`` (their index), registration, object, verb and time keys."""
    n = len(reg)
    cand = _contains(categories, CMI5_CATEGORY, n)
    cand &= _np(pc.is_in(verb, value_set=pa.array(_CMI5_VERBS)))
    cand &= _np(pc.is_valid(reg))
    sel = pa.array(np.nonzero(cand)[0], pa.int64())
    return pa.table({
        "row": sel,
        "registration": pc.take(reg, sel),
        "object_id": pc.take(obj, sel),
        "verb_id": pc.take(verb, sel),
        "ts": pc.take(pc.cast(ts, pa.int64()), sel),
        "stored": pc.take(pc.cast(pc.coalesce(stored, ts), pa.int64()), sel),
    })


def cmi5_flags(candidates: pa.Table, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(completed twice, passed twice, failed after passed) masks over ``n`` rows, from
    :func:`_cmi5_candidates`' rows (whose ``row`` indexes the ``n``; rows of several pieces may
    be given together, their ``row`` renumbered into one range, kept in input order)."""
    completed2 = np.zeros(n, bool)
    passed2 = np.zeros(n, bool)
    failed_after = np.zeros(n, bool)
    if candidates.num_rows < 2:
        return completed2, passed2, failed_after
    rows = candidates["row"].to_pylist()
    regs = candidates["registration"].to_pylist()
    objs = candidates["object_id"].to_pylist()
    verbs = candidates["verb_id"].to_pylist()
    tss = candidates["ts"].to_pylist()
    sts = candidates["stored"].to_pylist()
    order = sorted(
        range(len(rows)), key=lambda i: (regs[i], objs[i] or "", tss[i], sts[i], rows[i])
    )
    prev: tuple[str, str] | None = None
    done = passed = False
    for i in order:
        k = (regs[i], objs[i] or "")
        if k != prev:
            prev, done, passed = k, False, False
        v, r = verbs[i], rows[i]
        if v == VERB_COMPLETED:
            completed2[r] = done
            done = True
        elif v == VERB_PASSED:
            passed2[r] = passed
            passed = True
        elif passed:  # failed
            failed_after[r] = True
    return completed2, passed2, failed_after


# --------------------------------------------------------------------------------------------
# verify


# The normalised columns ``verify`` reads (a caller may read only these, plus ``date``).
NORMALISED_COLUMNS = (
    "source", "statement_id", "raw_sha256", "stored", "timestamp", "voided_statement_id",
    "actor_account_name", "actor_mbox", "actor_mbox_sha1sum", "verb_id", "object_id",
    "object_type", "object_definition_type", "context_registration", "context_platform",
    "context_parent_ids", "context_category_ids", "context_extensions", "result_success",
    "result_completion", "result_duration", "result_duration_seconds", "result_score_scaled",
    "result_score_raw", "result_score_min", "result_score_max",
)


def verify(
    normalised: pa.Table,
    raw: Mapping[str, bytes] | pa.Table | RawStatements,
    roster: Roster,
    catalogue: Catalogue,
    *,
    now: datetime,
    run_id: str,
    verified_at: datetime,
    source: str | None = None,
    xapi_version: str = "1.0.3",
    local_offset: timedelta = LOCAL_OFFSET,
    tolerate: Collection[str] = (),
    held: Mapping[str, str] | None = None,
    duplicates: tuple[np.ndarray, Mapping[int, str]] | None = None,
    cmi5: bool = True,
    quarantine_raw: bool = True,
) -> Verification:
    """Verify normalised statements against xAPI, the roster and the catalogue.

    ``normalised``: rows of the normalised-statement contract; without a ``source`` column (as
    :class:`~pipelines.xapi.normalise.Normaliser` gives them) pass ``source``. ``raw``: the
    statements' bytes keyed by ``raw_sha256`` (a dict, a raw-zone table with a binary ``raw``
    column, or :class:`RawStatements`); a row whose bytes are missing raises ``ValueError``.
    ``now``: the instant future timestamps are judged against; ``verified_at`` and ``run_id`` are
    written into every output row. ``xapi_version``: the rules for statements without their own
    ``version``. ``tolerate``: the validator's tolerance profiles (``PROFILES``) this source's
    statements are judged with; a row valid only thanks to one carries ``tolerated-deviation``.
    ``held``: statement id -> ``raw_sha256`` of the body that holds that id outside this input
    (of the same source): a row of the id with another body is a ``conflicting-duplicate``.
    Pure: the same arguments give the same tables.

    A caller verifying a big input a piece at a time (``pipelines.verify.stage``) judges what
    spans pieces itself and passes it in: ``duplicates``, the exact-duplicate mask and the
    conflicting rows (row -> the kept body's sha) of these rows, as :func:`duplicate_flags`
    gives them over the whole input (``held`` is then not used); ``cmi5=False`` leaves the cmi5
    order warnings to it (:func:`cmi5_flags` over :attr:`Verification.cmi5`, the verified rows
    that may carry one); ``quarantine_raw=False`` leaves the quarantined rows' ``raw`` empty
    for it to fill (bytes are then never fetched here).
    """
    now = _utc(now, "now")
    verified_at = _utc(verified_at, "verified_at")
    raws = raw if isinstance(raw, RawStatements) else RawStatements(raw)
    n = normalised.num_rows
    cache: dict[str, pa.Array] = {}

    def col(name: str) -> pa.Array:
        a = cache.get(name)
        if a is None:
            a = cache[name] = _arr(normalised[name])
        return a

    if "source" in normalised.column_names:
        src = col("source")
        if src.null_count:
            raise ValueError("the source column has nulls")
    elif source is not None:
        src = cache["source"] = pa.repeat(pa.scalar(source, _STR), n)
    else:
        raise ValueError("the table has no source column: pass source=")

    sid, sha = col("statement_id"), col("raw_sha256")
    key = _arr(pc.binary_join_element_wise(src, sid, "/"))
    stored = col("stored")
    ts = _arr(pc.coalesce(col("timestamp"), stored))

    # -- duplicates, voids, xAPI validity
    if duplicates is None:
        dup, conflict = duplicate_flags(key, sid, sha, stored, held)
    else:
        dup, conflict = duplicates[0], dict(duplicates[1])
        if len(dup) != n:
            raise ValueError(f"duplicates has {len(dup)} rows, the input {n}")
    live = ~dup
    shas_live = pc.unique(sha).to_pylist()  # an exact duplicate has its kept row's sha
    problems, tolerated = _validate(shas_live, raws, xapi_version, tolerate)
    tolerated_rows = live & _np(pc.is_in(sha, value_set=pa.array(list(tolerated), _STR)))
    equal_score_shas = [
        s for s, ps in tolerated.items() if any(p.code == "score-min-max" for p in ps)
    ]
    equal_score_ok = live & _np(pc.is_in(sha, value_set=pa.array(equal_score_shas, _STR)))
    bad_shas = [s for s, ps in problems.items() if any(p.code not in _SCORE_CODES for p in ps)]
    score_shas = [s for s, ps in problems.items() if any(p.code in _SCORE_CODES for p in ps)]
    xapi_bad = live & _np(pc.is_in(sha, value_set=pa.array(bad_shas, _STR)))
    xapi_score = live & _np(pc.is_in(sha, value_set=pa.array(score_shas, _STR)))
    conflicting = np.zeros(n, bool)
    if conflict:
        conflicting[list(conflict)] = True
    is_void = live & _np(pc.is_valid(col("voided_statement_id")))
    void_ok = is_void & ~xapi_bad & ~xapi_score & ~conflicting
    rest = live & ~is_void  # statements judged by every rule

    # -- learner
    roster_table, st_idx = _resolve_students(col, roster)
    roster_t = {c: _arr(roster_table[c]) for c in roster_table.column_names}
    unknown_learner = rest & _np(pc.is_null(st_idx))
    status = _arr(pc.take(roster_t["status"], st_idx))
    inactive = rest & _np(pc.not_equal(status, "active"))

    # -- activity
    cat_table = catalogue.to_arrow()
    cat_t = {c: _arr(cat_table[c]) for c in cat_table.column_names}
    cat_ids = cat_t["activity_id"]
    cat_idx = _arr(
        pc.coalesce(
            pc.index_in(col("object_id"), value_set=cat_ids),
            _first_parent_index(col("context_parent_ids"), cat_ids, n),
        )
    )
    unknown_activity = rest & _np(pc.is_null(cat_idx))

    # -- time
    future = rest & _np(pc.greater(ts, pa.scalar(now + CLOCK_SKEW, _TS)))
    local_day = pc.cast(pc.add(ts, pa.scalar(local_offset, pa.duration("us"))), pa.date32())
    p_start = _arr(pc.take(cat_t["period_start"], cat_idx))
    p_end = _arr(pc.take(cat_t["period_end"], cat_idx))
    outside = rest & (_np(pc.less(local_day, p_start)) | _np(pc.greater(local_day, p_end)))

    # -- plausibility
    scaled, raw_score = col("result_score_scaled"), col("result_score_raw")
    lo, hi = col("result_score_min"), col("result_score_max")
    bad_scaled = _np(pc.or_(pc.less(scaled, -1.0), pc.greater(scaled, 1.0)))
    bad_range = _np(pc.less_equal(hi, lo)) & ~(equal_score_ok & _np(pc.equal(hi, lo)))
    raw_out = _np(pc.less(raw_score, lo)) | _np(pc.greater(raw_score, hi))
    implausible_score = rest & (bad_scaled | bad_range | raw_out | xapi_score)
    secs = col("result_duration_seconds")
    too_long = _np(pc.greater(secs, MAX_DURATION_SECONDS))
    negative = _np(pc.less(secs, 0.0))
    unmeasurable = _np(pc.is_valid(col("result_duration"))) & _np(pc.is_null(secs)) & ~xapi_bad
    implausible_duration = rest & (too_long | negative | unmeasurable)

    reasons = (
        np.column_stack(
            [
                xapi_bad,
                unknown_learner,
                inactive,
                unknown_activity,
                future,
                outside,
                implausible_score | (is_void & xapi_score),
                implausible_duration,
                conflicting,
            ]
        )
        if n
        else np.zeros((0, len(BLOCKING)), bool)
    )
    blocked = reasons.any(axis=1)
    ok = rest & ~blocked
    quarantine_mask = live & blocked

    # -- quarantine
    qn = int(quarantine_mask.sum())
    q_detail: list[pa.Array] = []
    if qn:
        qm = quarantine_mask
        qrows = _rows(qm)
        qsha = _sub(sha, qrows)
        detail_by_sha = {
            s: f"{XAPI_INVALID}: "
            + ", ".join(f"{p.code} at {p.path}" for p in ps if p.code not in _SCORE_CODES)
            for s, ps in problems.items()
        }
        xapi_text = pc.take(
            pa.array([detail_by_sha[s] for s in bad_shas], _STR),
            pc.index_in(qsha, value_set=pa.array(bad_shas, _STR)),
        )
        q_detail.append(_piece(xapi_bad[qm], xapi_text))
        has_acc = _np(pc.is_valid(_sub(col("actor_account_name"), qrows)))
        has_mbox = _np(pc.is_valid(_sub(col("actor_mbox"), qrows)))
        has_sha1 = _np(pc.is_valid(_sub(col("actor_mbox_sha1sum"), qrows)))
        kinds = _join_pieces(
            [
                _piece(has_acc, "account name"),
                _piece(has_mbox, "mbox"),
                _piece(has_sha1, "mbox_sha1sum"),
            ],
            qn,
        )
        learner_text = pc.if_else(
            pc.equal(kinds, ""),
            pa.scalar(f"{UNKNOWN_LEARNER}: the actor has no account name, mbox or mbox_sha1sum"),
            pc.binary_join_element_wise(
                f"{UNKNOWN_LEARNER}: no roster student matches the actor's ", kinds, ""
            ),
        )
        q_detail.append(_piece(unknown_learner[qm], learner_text))
        q_detail.append(
            _piece(
                inactive[qm],
                pc.binary_join_element_wise(
                    f"{INACTIVE_LEARNER}: roster status is ", _sub(status, qrows), ""
                ),
            )
        )
        otype = _sub(col("object_type"), qrows)
        is_activity = _np(pc.or_kleene(pc.is_null(otype), pc.equal(otype, "Activity")))
        what = pc.if_else(
            pa.array(is_activity),
            pc.coalesce(
                pc.binary_join_element_wise("object ", _sub(col("object_id"), qrows), ""),
                pa.scalar("an object without an id"),
            ),
            pc.binary_join_element_wise("a ", otype, " object", ""),
        )
        n_par = _text(pc.fill_null(pc.list_value_length(_sub(col("context_parent_ids"), qrows)), 0))
        q_detail.append(
            _piece(
                unknown_activity[qm],
                pc.binary_join_element_wise(
                    f"{UNKNOWN_ACTIVITY}: ",
                    what,
                    " and its ",
                    n_par,
                    " context parent id(s) are not in the catalogue",
                    "",
                ),
            )
        )
        q_ts = _sub(ts, qrows)
        ts_text = pc.strftime(q_ts, format="%Y-%m-%dT%H:%M:%SZ")
        q_detail.append(
            _piece(
                future[qm],
                pc.binary_join_element_wise(
                    f"{FUTURE_TIMESTAMP}: timestamp ",
                    ts_text,
                    " is more than 5 min after now ",
                    now.isoformat().replace("+00:00", "Z"),
                    "",
                ),
            )
        )
        disc = pc.take(cat_t["discipline_code"], _sub(cat_idx, qrows))
        q_detail.append(
            _piece(
                outside[qm],
                pc.binary_join_element_wise(
                    f"{OUTSIDE_PERIOD}: local date ",
                    _text(_sub(local_day, qrows)),
                    " is outside ",
                    _text(_sub(p_start, qrows)),
                    "..",
                    _text(_sub(p_end, qrows)),
                    " of discipline ",
                    disc,
                    "",
                ),
            )
        )
        q_scaled, q_raw = _text(_sub(scaled, qrows)), _text(_sub(raw_score, qrows))
        q_lo, q_hi = _text(_sub(lo, qrows)), _text(_sub(hi, qrows))
        score_text = _join_pieces(
            [
                _piece(
                    bad_scaled[qm],
                    pc.binary_join_element_wise("scaled ", q_scaled, " outside [-1, 1]", ""),
                ),
                _piece(
                    bad_range[qm], pc.binary_join_element_wise("max ", q_hi, " <= min ", q_lo, "")
                ),
                _piece(
                    raw_out[qm],
                    pc.binary_join_element_wise(
                        "raw ", q_raw, " outside [", q_lo, ", ", q_hi, "]", ""
                    ),
                ),
            ],
            qn,
        )
        q_detail.append(
            _piece(
                (implausible_score | (is_void & xapi_score))[qm],
                pc.binary_join_element_wise(
                    f"{IMPLAUSIBLE_SCORE}: ",
                    pc.if_else(
                        pc.equal(score_text, ""),
                        pa.scalar("score fails xAPI score rules"),
                        score_text,
                    ),
                    "",
                ),
            )
        )
        q_dur = _sub(col("result_duration"), qrows)
        q_secs = _text(_sub(secs, qrows))
        dur_text = pc.if_else(
            pa.array(unmeasurable[qm]),
            pc.binary_join_element_wise(
                q_dur, " cannot be measured in seconds (years or months)", ""
            ),
            pc.binary_join_element_wise(
                q_dur, " is ", q_secs, " s, not within 0..86400 s (24 h)", ""
            ),
        )
        q_detail.append(
            _piece(
                implausible_duration[qm],
                pc.binary_join_element_wise(f"{IMPLAUSIBLE_DURATION}: ", dur_text, ""),
            )
        )
        q_rows = np.nonzero(qm)[0]
        first_body = [conflict.get(int(r)) for r in q_rows]
        q_detail.append(
            _piece(
                conflicting[qm],
                pa.array(
                    [
                        None
                        if s is None
                        else f"{CONFLICTING_DUPLICATE}: this id was first seen with "
                        f"another body (raw_sha256 {s}), which is kept"
                        for s in first_body
                    ],
                    _STR,
                ),
            )
        )
        raw_text = [""] * qn
        if quarantine_raw:
            raw_text = raw_texts(raws, qsha.to_pylist())
        quarantined = pa.Table.from_arrays(
            [
                _sub(sid, qrows),
                _sub(src, qrows),
                pa.array(raw_text, _STR),
                _lists(reasons[qm], BLOCKING),
                _join_pieces(q_detail, qn),
                pa.repeat(pa.scalar(verified_at, _TS), qn),
                pa.repeat(pa.scalar(run_id, _STR), qn),
                qsha,
            ],
            schema=_QUARANTINE.arrow_schema(),
        )
    else:
        quarantined = _QUARANTINE.arrow_schema().empty_table()

    # -- voiding statements
    void_rows = _rows(void_ok)
    voiding = pa.Table.from_arrays(
        [
            _sub(sid, void_rows),
            _sub(src, void_rows),
            pc.utf8_lower(_sub(col("voided_statement_id"), void_rows)),
            _sub(col("timestamp"), void_rows),
            _sub(stored, void_rows),
            _sub(sha, void_rows),
        ],
        schema=VOIDING_SCHEMA,
    )

    # -- verified
    vm = ok
    vrows = _rows(vm)
    vn = int(vm.sum())
    v_idx = _sub(st_idx, vrows)
    c_idx = _sub(cat_idx, vrows)
    v_src, v_sid = _sub(src, vrows), _sub(sid, vrows)
    v_ts, v_stored = _sub(ts, vrows), _sub(stored, vrows)
    v_verb, v_obj = _sub(col("verb_id"), vrows), _sub(col("object_id"), vrows)
    matched = pc.take(cat_ids, c_idx)
    v_type = _sub(col("object_type"), vrows)
    v_is_activity = pc.and_kleene(
        pc.is_valid(v_obj), pc.or_kleene(pc.is_null(v_type), pc.equal(v_type, "Activity"))
    )
    v_reg = _sub(col("context_registration"), vrows)
    cat_format = pc.take(cat_t["format"], c_idx)
    extensions = normalised["context_extensions"]
    learning_format, learning_mode = _labels(
        *_classify(
            v_verb,
            _sub(col("object_definition_type"), vrows),
            v_obj,
            _sub(col("context_platform"), vrows),
            cat_format,
            lambda rows: _matches(_sub(extensions, _arr(vrows.take(rows))), LIVE_EXTENSION_RE),
        )
    )
    v_scaled, v_raw = _sub(scaled, vrows), _sub(raw_score, vrows)
    v_lo, v_hi = _sub(lo, vrows), _sub(hi, vrows)
    from_raw = pc.if_else(
        pc.greater(v_hi, v_lo),
        pc.multiply(pc.divide(pc.subtract(v_raw, v_lo), pc.subtract(v_hi, v_lo)), 100.0),
        pa.scalar(None, pa.float64()),
    )
    percent = pc.coalesce(pc.multiply(v_scaled, 100.0), from_raw)
    cmi5_rows = _cmi5_candidates(
        v_reg, v_obj, v_verb, v_ts, v_stored, _sub(col("context_category_ids"), vrows)
    )
    if cmi5:
        c2, p2, fap = cmi5_flags(cmi5_rows, vn)
    else:
        c2 = p2 = fap = np.zeros(vn, bool)
    no_reg = _np(pc.is_null(v_reg))
    tol = tolerated_rows[vm]
    warn = np.column_stack([c2, p2, fap, no_reg, tol]) if vn else np.zeros((0, 5), bool)
    deviations: dict[str, int] = {}
    for s in _sub(sha, _rows(tol)).to_pylist():
        for what in sorted({f"{p.code} at {p.path}" for p in tolerated[s]}):
            deviations[what] = deviations.get(what, 0) + 1
    warnings = {code: int(warn[:, i].sum()) for i, code in enumerate(_ROW_WARNINGS)}
    columns: dict[str, pa.Array] = {
        "record_id": record_ids(v_src, v_sid) if vn else pa.array([], _STR),
        "statement_id": v_sid,
        "source": v_src,
        "date": _text(pc.cast(v_ts, pa.date32())),  # UTC date
        "iin": pc.take(roster_t["iin"], v_idx),
        "student_id": pc.take(roster_t["student_id"], v_idx),
        "programme_code": pc.take(roster_t["programme_code"], v_idx),
        "group": pc.take(roster_t["group"], v_idx),
        "discipline_code": pc.take(cat_t["discipline_code"], c_idx),
        "credits": pc.cast(pc.take(cat_t["credits"], c_idx), pa.int64()),
        "period_start": _text(_sub(p_start, vrows)),
        "period_end": _text(_sub(p_end, vrows)),
        # the object when it is an Activity; an Agent/Group object id is an IFI (personal
        # data), a StatementRef/SubStatement id no activity: the matched catalogue id then
        "activity_id": pc.if_else(v_is_activity, v_obj, matched),
        "matched_activity_id": matched,
        "verb_id": v_verb,
        "object_definition_type": _sub(col("object_definition_type"), vrows),
        "learning_format": learning_format,
        "learning_mode": learning_mode,
        "score_scaled": v_scaled,
        "score_raw": v_raw,
        "score_min": v_lo,
        "score_max": v_hi,
        "score_percent": percent,
        "success": _sub(col("result_success"), vrows),
        "completion": _sub(col("result_completion"), vrows),
        "duration_seconds": _sub(secs, vrows),
        "registration": v_reg,
        "timestamp": v_ts,
        "stored": v_stored,
        "warnings": _lists(warn, _ROW_WARNINGS),
        "raw_sha256": _sub(sha, vrows),
        "run_id": pa.repeat(pa.scalar(run_id, _STR), vn),
        "verified_at": pa.repeat(pa.scalar(verified_at, _TS), vn),
    }
    schema = _VERIFIED.arrow_schema()
    verified = pa.Table.from_arrays(
        [_arr(columns[f.name]).cast(f.type) for f in schema], schema=schema
    )
    for f in schema:
        if not f.nullable and verified[f.name].null_count:
            raise AssertionError(f"verified column {f.name} has nulls (a rule is missing)")

    n_dup = int(dup.sum())
    voids = int(void_ok.sum())
    by_reason = {code: int(reasons[quarantine_mask, i].sum()) for i, code in enumerate(BLOCKING)}
    counts: dict[str, Any] = {
        "read": n,
        "verified": vn,
        "quarantined": qn,
        "duplicates": n_dup,
        "voiding": voids,
        "quarantined_by_reason": {k: v for k, v in by_reason.items() if v},
    }
    if deviations:  # only when a tolerance profile accepted something
        counts["tolerated_deviations"] = dict(sorted(deviations.items()))
    if n != vn + qn + n_dup + voids:
        raise AssertionError(
            f"verification does not balance: read {n} != verified {vn} + quarantined {qn} + "
            f"duplicates {n_dup} + voiding {voids}"
        )
    candidates = None
    if not cmi5:
        candidates = cmi5_rows.append_column(
            "record_id", _arr(verified["record_id"]).take(cmi5_rows["row"]))
    return Verification(verified, quarantined, voiding, warnings, counts, candidates)
