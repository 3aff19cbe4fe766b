"""xAPI statement conformance validator (xAPI 1.0.3 and 2.0.0 / IEEE 9274.1.1-2023).

``validate(statement, version)`` judges one already-parsed statement (a dict) against the data
requirements of the xAPI specification (Part Two, "Statements" and "Special Data Types") and
returns the problems found, ``[]`` meaning valid. Each problem carries a stable kebab-case reason
code (see ``REASONS``), the JSON path at fault (``$.context.contextActivities.parent[0].id``) and a
human-readable detail. ``validate_bytes`` parses raw bytes first.

It is judged against the ADL LRS conformance suite (every v1_0_3 and v2_0 statement case gets the
suite's verdict) and against statements real systems emit (Moodle, Open edX, Ralph, xapi-schema).

Decisions worth knowing:

* Version. The ``version`` argument ("1.0.3" or "2.0.0", any 1.0.x / 2.0.x accepted) says which
  rules apply, unless the statement carries its own ``version`` property: a 1.0 / 1.0.x value
  selects the 1.0.3 rules and a 2.0 / 2.0.x value the 2.0.0 rules; any other value is itself a
  problem (``bad-version``) and the argument's rules are used for the rest. The 2.0.0 rules add
  ``context.contextAgents`` and ``context.contextGroups`` (1.0.3 rejects them as unknown).
* Strict JSON. ``validate_bytes`` parses with orjson, which follows RFC 8259: a raw control
  character (such as a newline) inside a string is malformed JSON, reported as
  ``malformed-json`` at ``$``. xapi-schema's ``statements/simple.json`` holds raw newlines in
  one string (its description): it is rejected as bytes, and the same statement with those
  newlines escaped (``\\n``) is valid. Accepting it would take a lenient parser, and an LRS
  that parses strictly (as conformant JSON parsers do) would refuse the very same bytes.
  orjson keeps the last of duplicate keys, so "each property no more than one time" is not
  checked.
* Unknown properties are rejected (the spec's "SHOULD* reject"; the ADL suite and Learning
  Locker reject them), nulls are rejected except inside extensions.
* MUSTs are enforced even where a real producer breaks them. Open edX's event-routing-backends
  (corpus openedx-erb) emits 27 of its 90 sample statements with objectType "GroupActivity",
  a bare UUID as an Activity id, an Activity without id, or score min == max (Data 2.4.5.1:
  max is "greater than min"); strictly they are rejected with those codes, and the tests pin
  exactly which. A caller that must ingest them opts in to a tolerance profile (below).
* Tolerance profiles (opt-in, ``tolerate={"openedx"}``). A profile (``PROFILES``) is a named set
  of rules, each a reason code, a JSON-path pattern and a condition on the value at that path;
  a problem matching a rule of a requested profile is *tolerated*: ``validate_detailed`` returns
  it in ``Verdict.tolerated`` instead of ``Verdict.problems``, and ``validate`` (the problems
  only) then accepts the statement. Nothing else is relaxed: the strict verdict (no profile) is
  unchanged, and a tolerated "GroupActivity" object is still checked as an Activity in full.
  The ``openedx`` profile (event-routing-backends, the transformer-version extension says
  ``event-routing-backends@1.1.1`` in the corpus) has four rules, one per deviation:

  1. ``bad-object-type`` at ``$.object.objectType`` or
     ``$.context.contextActivities.<parent|grouping|category|other>[n].objectType`` when the
     value is exactly "GroupActivity". Departs from Data 2.4.4.s2 "If not specified, the
     objectType is assumed to be Activity. Other valid values are: Agent, Group, SubStatement
     or StatementRef". ERB's problem_check transformer emits a multi-question problem as a
     "GroupActivity" object, its sub-question statements naming it as a "GroupActivity"
     parent. It is otherwise a well-formed Activity (an IRI id, a definition) and is checked as
     one: only the type name is wrong, and the activity it names is unambiguous. Not
     tolerated inside a SubStatement (ERB emits none).
  2. ``bad-iri`` at ``$.context.contextActivities.<key>[n].id`` when the value is a UUID
     (8-4-4-4-12 hex digits, either case) with no scheme. Departs from Data 2.4.4.1 "id | IRI |
     Required" and 2.2.s4.b1.b8 "The LRS MUST reject Statements ... containing IRL or IRI
     values without a scheme". ERB's edx.special_exam.*.attempt.* transformers put the
     proctoring ``attempt_code`` (an upper-case UUID) as the id of the ``grouping`` attempt
     Activity. A UUID is still a globally unique identifier (it reads as ``urn:uuid:...``
     without the prefix), so nothing is ambiguous; the statement object keeps the strict rule.
  3. ``score-min-max`` at ``$.result.score.min`` when min == max (both numbers). Departs from
     Data 2.4.5.1 min "Decimal number less than max (if present)" / max "Decimal number
     greater than min (if present)". ERB copies the problem's ``max_grade`` /
     ``weighted_possible`` as max with min 0, so an ungraded (0-point) problem gives
     min == max == 0. The score is degenerate but not contradictory; min > max stays a
     problem, and raw must still lie within [min, max] (so raw == min == max).
  4. ``missing-property`` at ``$.object.id`` when the object is an Activity (objectType absent
     or "Activity"). Departs from Data 2.4.4.1 "id | IRI | Required". ERB's browser-side
     problem_check transformer builds the object id from event fields the browser event may
     lack (corpus ``problem_check(browser).required.only.data``: no problem id, no referer
     usage key), and the serialiser then drops the null id. The statement still says who did
     what when; it just cannot name the problem, so verification can match it to the
     catalogue only through a context parent (else it is quarantined as unknown-activity).
     A StatementRef without id is never tolerated, and neither is an id-less context Activity.
     Being the gravest deviation (the object cannot be identified), it is tolerated only in a
     statement that names ERB as its producer (context extension
     ``https://w3id.org/xapi/openedx/extension/transformer-version`` starting
     ``event-routing-backends@``, as all 90 corpus statements do): without that condition the
     ADL suite's invalid case 'statement activity "id" not provided' would pass.

  With the profile, no ADL conformance case the suite calls invalid becomes valid (the tests
  check it), and every tolerated problem is reported, so a deviation is never silent.
* Timestamps: ISO 8601 date-time, extended or basic format, with optional fraction and offset;
  the offset ``-00``/``-0000``/``-00:00`` (RFC 3339's "unknown local offset") is rejected, as the
  suite requires. A missing offset is accepted (1.0.3: "SHOULD include the time zone").
* IRIs/IRLs are checked best-effort (the spec allows it): a scheme, then no whitespace, quotes
  or angle brackets. Language tags are checked for RFC 5646 well-formedness (the ABNF of
  section 2.1, grandfathered tags included), not against the IANA registry.

Speed: pure Python over dicts and lists, every regex compiled once at import, results of the
costlier string checks (language tags, IRIs) memoised in bounded dicts, and no exceptions on the
hot path: about 20,000-35,000 statements/s on one core of this 2-core machine. From bytes,
``validate_bytes`` and ``validate_detailed_bytes`` first try the fast path
(:mod:`pipelines.xapi.fastcheck`: msgspec decodes into strict typed structs, about 10 us a
statement), which answers only "certainly valid"; anything else, and every invalid statement, is
judged here, so the reasons and paths are always this module's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

__all__ = [
    "PROFILES",
    "REASONS",
    "Problem",
    "Profile",
    "Tolerance",
    "Verdict",
    "validate",
    "validate_bytes",
    "validate_detailed",
    "validate_detailed_bytes",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a statement is not conformant."""

    code: str  # stable kebab-case reason code, a key of REASONS
    path: str  # JSON path at fault, e.g. "$.actor.mbox"
    detail: str  # human-readable


REASONS: dict[str, str] = {
    "malformed-json": "the bytes are not one strict JSON document",
    "wrong-type": "a value has the wrong JSON type (e.g. a string where a boolean is required)",
    "null-value": "a property is null (allowed only inside extensions)",
    "unknown-property": "a property not defined for this object (or this xAPI version)",
    "missing-actor": "the statement (or sub-statement) has no actor",
    "missing-verb": "the statement (or sub-statement) has no verb",
    "missing-object": "the statement (or sub-statement) has no object",
    "missing-property": "a required property is absent",
    "empty-value": "a string, array or object that must not be empty is empty",
    "bad-version": "version is not 1.0, 1.0.x, 2.0 or 2.0.x",
    "bad-uuid": "not a UUID in standard string form (8-4-4-4-12 hex digits)",
    "bad-iri": "not an IRI/IRL (a scheme, then no whitespace, quotes or angle brackets)",
    "bad-mbox": 'mbox is not a "mailto:" IRI with an e-mail address',
    "bad-mbox-sha1sum": "mbox_sha1sum is not 40 hexadecimal digits",
    "agent-ifi-count": "an Agent does not have exactly one inverse functional identifier",
    "group-ifi-count": "a Group has more than one inverse functional identifier",
    "anonymous-group-no-member": "a Group without an identifier has no member list",
    "group-member-not-agent": "a Group member is not an Agent (Groups cannot nest)",
    "bad-object-type": "objectType is not one allowed here (values are case-sensitive)",
    "authority-group-shape": "a Group authority is not an anonymous Group of exactly two Agents",
    "bad-timestamp": "not an ISO 8601 date-time (or a -00:00 offset)",
    "bad-duration": "not an ISO 8601 duration",
    "score-scaled-range": "score.scaled is outside [-1, 1]",
    "score-raw-out-of-range": "score.raw is below score.min or above score.max",
    "score-min-max": "score.min is not less than score.max",
    "bad-language-tag": "a language map key or context.language is not an RFC 5646 tag",
    "bad-interaction-type": "interactionType is not one of the ten xAPI interaction types",
    "interaction-component-not-allowed": "an interaction component list this type does not use",
    "interaction-component-duplicate-id": "two interaction components share an id",
    "substatement-nested": "a SubStatement's object is another SubStatement",
    "substatement-forbidden-property": "a SubStatement uses id, stored, version or authority",
    "context-revision-not-activity": "context.revision used while the object is not an Activity",
    "context-platform-not-activity": "context.platform used while the object is not an Activity",
    "voiding-needs-statementref": "a voiding statement's object is not a StatementRef",
    "bad-content-type": "attachment contentType is not an Internet media type",
    "bad-attachment-length": "attachment length is negative",
    "bad-sha2": "attachment sha2 is not a hex SHA-2 digest (56, 64, 96 or 128 digits)",
}

# --------------------------------------------------------------------------------------------
# What each kind of object may contain, per version. A table maps every allowed property to how
# its value is checked; a property missing from the table is unknown. SPECIAL values are checked
# by the object's own method (they need more than a format check).

SPECIAL = "special"
STR = "string"
BOOL = "boolean"
IRI = "an IRI"
IRL = "an IRL"
URI = "a URI"
UUID = "UUID"
TIMESTAMP = "timestamp"
DURATION = "duration"
LANGMAP = "language map"
LANGTAG = "language tag"
EXTENSIONS = "extensions"

_Table = dict[str, str]

_STATEMENT: _Table = {
    "id": UUID,
    "actor": SPECIAL,
    "verb": SPECIAL,
    "object": SPECIAL,
    "result": SPECIAL,
    "context": SPECIAL,
    "timestamp": TIMESTAMP,
    "stored": TIMESTAMP,
    "authority": SPECIAL,
    "version": SPECIAL,
    "attachments": SPECIAL,
}
# id, stored, version and authority are reported with their own code, not as unknown.
_SUBSTATEMENT: _Table = {
    "objectType": SPECIAL,
    "actor": SPECIAL,
    "verb": SPECIAL,
    "object": SPECIAL,
    "result": SPECIAL,
    "context": SPECIAL,
    "timestamp": TIMESTAMP,
    "attachments": SPECIAL,
    "id": SPECIAL,
    "stored": SPECIAL,
    "version": SPECIAL,
    "authority": SPECIAL,
}
_SUBSTATEMENT_FORBIDDEN = ("id", "stored", "version", "authority")
_AGENT: _Table = {
    "objectType": SPECIAL,
    "name": STR,
    "mbox": SPECIAL,
    "mbox_sha1sum": SPECIAL,
    "openid": URI,
    "account": SPECIAL,
}
_GROUP: _Table = {**_AGENT, "member": SPECIAL}
_ACCOUNT: _Table = {"homePage": IRL, "name": SPECIAL}
_VERB: _Table = {"id": IRI, "display": LANGMAP}
_ACTIVITY: _Table = {"objectType": SPECIAL, "id": IRI, "definition": SPECIAL}
_DEFINITION: _Table = {
    "name": LANGMAP,
    "description": LANGMAP,
    "type": IRI,
    "moreInfo": IRL,
    "extensions": EXTENSIONS,
    "interactionType": SPECIAL,
    "correctResponsesPattern": SPECIAL,
    "choices": SPECIAL,
    "scale": SPECIAL,
    "source": SPECIAL,
    "target": SPECIAL,
    "steps": SPECIAL,
}
_COMPONENT: _Table = {"id": SPECIAL, "description": LANGMAP}
_STATEMENT_REF: _Table = {"objectType": SPECIAL, "id": UUID}
_RESULT: _Table = {
    "score": SPECIAL,
    "success": BOOL,
    "completion": BOOL,
    "response": STR,
    "duration": DURATION,
    "extensions": EXTENSIONS,
}
_SCORE: _Table = {"scaled": SPECIAL, "raw": SPECIAL, "min": SPECIAL, "max": SPECIAL}
_CONTEXT_103: _Table = {
    "registration": UUID,
    "instructor": SPECIAL,
    "team": SPECIAL,
    "contextActivities": SPECIAL,
    "revision": SPECIAL,
    "platform": SPECIAL,
    "language": LANGTAG,
    "statement": SPECIAL,
    "extensions": EXTENSIONS,
}
_CONTEXT_200: _Table = {**_CONTEXT_103, "contextAgents": SPECIAL, "contextGroups": SPECIAL}
_CONTEXT_ACTIVITIES: _Table = {
    "parent": SPECIAL,
    "grouping": SPECIAL,
    "category": SPECIAL,
    "other": SPECIAL,
}
_CONTEXT_AGENT: _Table = {"objectType": SPECIAL, "agent": SPECIAL, "relevantTypes": SPECIAL}
_CONTEXT_GROUP: _Table = {"objectType": SPECIAL, "group": SPECIAL, "relevantTypes": SPECIAL}
_ATTACHMENT: _Table = {
    "usageType": IRI,
    "display": LANGMAP,
    "description": LANGMAP,
    "contentType": SPECIAL,
    "length": SPECIAL,
    "sha2": SPECIAL,
    "fileUrl": IRL,
}
_ATTACHMENT_REQUIRED = ("usageType", "display", "contentType", "length", "sha2")

# kind of object -> (1.0.3 table, 2.0.0 table)
_TABLES: dict[str, tuple[_Table, _Table]] = {
    "statement": (_STATEMENT, _STATEMENT),
    "substatement": (_SUBSTATEMENT, _SUBSTATEMENT),
    "agent": (_AGENT, _AGENT),
    "group": (_GROUP, _GROUP),
    "account": (_ACCOUNT, _ACCOUNT),
    "verb": (_VERB, _VERB),
    "activity": (_ACTIVITY, _ACTIVITY),
    "definition": (_DEFINITION, _DEFINITION),
    "component": (_COMPONENT, _COMPONENT),
    "statementref": (_STATEMENT_REF, _STATEMENT_REF),
    "result": (_RESULT, _RESULT),
    "score": (_SCORE, _SCORE),
    "context": (_CONTEXT_103, _CONTEXT_200),
    "contextActivities": (_CONTEXT_ACTIVITIES, _CONTEXT_ACTIVITIES),
    "contextAgent": ({}, _CONTEXT_AGENT),  # 2.0 only; 1.0.3 never reaches them
    "contextGroup": ({}, _CONTEXT_GROUP),
    "attachment": (_ATTACHMENT, _ATTACHMENT),
}
_V103 = {kind: tables[0] for kind, tables in _TABLES.items()}
_V200 = {kind: tables[1] for kind, tables in _TABLES.items()}

_INTERACTION_COMPONENTS: dict[str, frozenset[str]] = {
    "true-false": frozenset(),
    "choice": frozenset({"choices"}),
    "fill-in": frozenset(),
    "long-fill-in": frozenset(),
    "matching": frozenset({"source", "target"}),
    "performance": frozenset({"steps"}),
    "sequencing": frozenset({"choices"}),
    "likert": frozenset({"scale"}),
    "numeric": frozenset(),
    "other": frozenset(),
}
_COMPONENT_LISTS = ("choices", "scale", "source", "target", "steps")
_CONTEXT_ACTIVITY_KEYS = ("parent", "grouping", "category", "other")
_VOIDED = "http://adlnet.gov/expapi/verbs/voided"
_IFIS = ("mbox", "mbox_sha1sum", "openid", "account")
_GROUP_ROLES = frozenset({"team", "group", "object-group"})  # must be a Group
_AGENT_ROLES = frozenset({"member", "agent", "object-agent"})  # must be an Agent

# --------------------------------------------------------------------------------------------
# String formats. Every pattern is compiled once, here.

_A = re.ASCII
_VERSION_RE = re.compile(r"([12])\.0(?:\.(?:0|[1-9][0-9]*))?", _A)
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_IRI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>\\^`{|}]+")
_MBOX_RE = re.compile(r"mailto:[^\s@:/?<>\"]+@[^\s@/?<>\"]+", _A)
_SHA1_RE = re.compile(r"[0-9a-fA-F]{40}")
_SHA2_RE = re.compile(r"[0-9a-fA-F]+")
_SHA2_LENGTHS = frozenset({56, 64, 96, 128})  # SHA-224, SHA-256, SHA-384, SHA-512 in hex
_MIME_RE = re.compile(
    r"[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+"
    r"(?:\s*;\s*[A-Za-z0-9!#$&^_.+\-]+=(?:[A-Za-z0-9!#$&^_.+\-]+|\"[^\"]*\"))*\s*",
    _A,
)
# ISO 8601 complete date-time, extended (2008-09-15T15:53:00.601+02:00) or basic
# (20080915T155300.601+0200) format; seconds may be left out (reduced precision).
_TS_EXT_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,][0-9]+)?)?"
    r"(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?",
    _A,
)
_TS_BASIC_RE = re.compile(
    r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})(?:([0-9]{2})(?:[.,][0-9]+)?)?"
    r"(Z|[+-][0-9]{2}(?:[0-9]{2})?)?",
    _A,
)
_NUM = r"[0-9]+(?:[.,][0-9]+)?"
_DURATION_RE = re.compile(
    rf"P(?:{_NUM}W|(?=[0-9T])(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}D)?"
    rf"(?:T(?=[0-9])(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?)",
    _A,
)
# RFC 5646 section 2.1 (well-formedness), case-insensitive.
_LANGTAG_RE = re.compile(
    r"(?:"
    r"(?:[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4}|[a-z]{5,8})"  # language (+ extlang)
    r"(?:-[a-z]{4})?"  # script
    r"(?:-(?:[a-z]{2}|[0-9]{3}))?"  # region
    r"(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*"  # variants
    r"(?:-[0-9a-wyz](?:-[a-z0-9]{2,8})+)*"  # extensions
    r"(?:-x(?:-[a-z0-9]{1,8})+)?"  # private use
    r"|x(?:-[a-z0-9]{1,8})+"  # private use only
    r"|en-gb-oed|i-ami|i-bnn|i-default|i-enochian|i-hak|i-klingon|i-lux|i-mingo|i-navajo"
    r"|i-pwn|i-tao|i-tay|i-tsu|sgn-be-fr|sgn-be-nl|sgn-ch-de"  # irregular grandfathered
    r"|art-lojban|cel-gaulish|no-bok|no-nyn|zh-guoyu|zh-hakka|zh-min|zh-min-nan|zh-xiang"
    r")",
    re.ASCII | re.IGNORECASE,
)
_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_MEMO_MAX = 50_000
_lang_memo: dict[str, bool] = {}
_iri_memo: dict[str, bool] = {}


def _is_langtag(tag: str) -> bool:
    ok = _lang_memo.get(tag)
    if ok is None:
        ok = _LANGTAG_RE.fullmatch(tag) is not None
        if len(_lang_memo) < _MEMO_MAX:
            _lang_memo[tag] = ok
    return ok


def _is_iri(value: str) -> bool:
    ok = _iri_memo.get(value)
    if ok is None:
        ok = _IRI_RE.fullmatch(value) is not None
        if len(_iri_memo) < _MEMO_MAX:
            _iri_memo[value] = ok
    return ok


def _is_timestamp(value: str) -> bool:
    m = _TS_EXT_RE.fullmatch(value) or _TS_BASIC_RE.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second, tz = m.groups()
    mo = int(month)
    d = int(day)
    if not (1 <= mo <= 12 and 1 <= d <= _DAYS[mo]) or int(hour) > 23 or int(minute) > 59:
        return False
    if mo == 2 and d == 29:
        y = int(year)
        if y % 4 or (y % 100 == 0 and y % 400):
            return False
    if second is not None and int(second) > 60:
        return False
    if tz is not None and tz != "Z":
        if tz[0] == "-" and tz[1:].replace(":", "").strip("0") == "":
            return False  # -00, -0000, -00:00: "unknown local offset" (RFC 3339 4.3)
        if int(tz[1:3]) > 23 or (len(tz) > 3 and int(tz[-2:]) > 59):
            return False
    return True


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _child(path: str, key: str) -> str:
    """JSON path of property ``key`` under ``path``: dot notation, or brackets when needed."""
    if key.isidentifier():
        return f"{path}.{key}"
    quoted = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{quoted}']"


# --------------------------------------------------------------------------------------------
# The checker. One instance per call: it holds the problem list and the version's tables.
# Paths are built only when descending into an object or when reporting a problem.


class _Checker:
    __slots__ = ("activity_aliases", "out", "tables", "v2")

    def __init__(self, v2: bool, activity_aliases: frozenset[str] = frozenset()) -> None:
        self.v2 = v2
        self.tables = _V200 if v2 else _V103
        self.out: list[Problem] = []
        # objectTypes a tolerance profile lets stand for "Activity": still reported as
        # bad-object-type, then checked as an Activity so nothing inside them goes unchecked
        self.activity_aliases = activity_aliases

    # -- reporting ----------------------------------------------------------------------------

    def add(self, code: str, path: str, detail: str) -> None:
        self.out.append(Problem(code, path, detail))

    def wrong_type(self, path: str, want: str, value: object) -> None:
        code = "null-value" if value is None else "wrong-type"  # null in an array, say
        self.add(code, path, f"must be {want}, got {_describe(value)}")

    def missing(self, d: dict[str, Any], path: str, key: str, what: str) -> None:
        """Report ``key`` absent from ``d`` (a null value was already reported as null)."""
        if key not in d:
            self.add("missing-property", _child(path, key), f"{what} needs {key!r}")

    # -- one pass over an object's properties -------------------------------------------------

    def fields(self, d: dict[str, Any], kind: str, path: str) -> int:
        """Check every property of ``d`` against its kind's table: unknown properties, nulls and
        the plain formats. Returns how many SPECIAL properties are present (0: nothing left)."""
        table = self.tables[kind]
        special = 0
        for k, v in d.items():
            how = table.get(k)
            if how is None:
                self.add("unknown-property", _child(path, k), f"{k!r} is not a property of {kind}")
            elif v is None:
                self.add("null-value", _child(path, k), f"{k!r} is null")
            elif how is SPECIAL:
                special += 1
            elif how is IRI or how is IRL or how is URI:
                if type(v) is not str:
                    self.wrong_type(_child(path, k), f"{how} (a string)", v)
                elif not (_iri_memo.get(v) or _is_iri(v)):
                    self.add("bad-iri", _child(path, k), f"{v!r} is not {how}")
            elif how is LANGMAP:
                self.langmap(v, path, k)
            elif how is EXTENSIONS:
                self.extensions(v, path, k)
            elif how is STR:
                if type(v) is not str:
                    self.wrong_type(_child(path, k), "a string", v)
            elif how is UUID:
                if type(v) is not str:
                    self.wrong_type(_child(path, k), "a UUID (a string)", v)
                elif len(v) != 36 or _UUID_RE.fullmatch(v) is None:
                    self.add("bad-uuid", _child(path, k), f"{v!r} is not a UUID")
            elif how is TIMESTAMP:
                if type(v) is not str:
                    self.wrong_type(_child(path, k), "an ISO 8601 timestamp (a string)", v)
                elif not _is_timestamp(v):
                    self.add(
                        "bad-timestamp", _child(path, k), f"{v!r} is not an ISO 8601 date-time"
                    )
            elif how is BOOL:
                if type(v) is not bool:
                    self.wrong_type(_child(path, k), "a boolean", v)
            elif how is DURATION:
                if type(v) is not str:
                    self.wrong_type(_child(path, k), "an ISO 8601 duration (a string)", v)
                elif _DURATION_RE.fullmatch(v) is None:
                    self.add("bad-duration", _child(path, k), f"{v!r} is not an ISO 8601 duration")
            elif how is LANGTAG:
                if type(v) is not str:
                    self.wrong_type(_child(path, k), "a language tag (a string)", v)
                elif not _is_langtag(v):
                    self.add("bad-language-tag", _child(path, k), f"{v!r} is not an RFC 5646 tag")
        return special

    def langmap(self, value: object, path: str, key: str) -> None:
        if type(value) is not dict:
            self.wrong_type(_child(path, key), "a language map (a JSON object)", value)
            return
        for tag, text in value.items():
            if not (_lang_memo.get(tag) or _is_langtag(tag)):
                p = _child(_child(path, key), tag)
                self.add("bad-language-tag", p, f"{tag!r} is not an RFC 5646 tag")
            if type(text) is not str:
                self.wrong_type(_child(_child(path, key), tag), "a string", text)

    def extensions(self, value: object, path: str, key: str) -> None:
        if type(value) is not dict:
            self.wrong_type(_child(path, key), "an extensions map (a JSON object)", value)
            return
        for k in value:  # values are free, null included
            if not (_iri_memo.get(k) or _is_iri(k)):
                p = _child(_child(path, key), k)
                self.add("bad-iri", p, f"extension key {k!r} is not an IRI")

    def dict_at(self, value: object, path: str, what: str) -> bool:
        if type(value) is dict:
            return True
        self.wrong_type(path, f"{what} (a JSON object)", value)
        return False

    def list_at(self, value: object, path: str, what: str) -> bool:
        if type(value) is list:
            return True
        self.wrong_type(path, f"{what} (an array)", value)
        return False

    # -- statements -----------------------------------------------------------------------------

    def statement(self, st: dict[str, Any], path: str, sub: bool) -> None:
        if sub:
            self.fields(st, "substatement", path)
            for k in _SUBSTATEMENT_FORBIDDEN:
                if k in st:
                    self.add(
                        "substatement-forbidden-property",
                        _child(path, k),
                        f"a SubStatement must not have {k!r}",
                    )
        else:
            self.fields(st, "statement", path)
            authority = st.get("authority")
            if authority is not None:
                self.authority(authority, f"{path}.authority")
        get = st.get

        actor = get("actor")
        if actor is None:
            if "actor" not in st:
                self.add("missing-actor", f"{path}.actor", "a statement needs an actor")
        elif type(actor) is dict:
            self.actor(actor, f"{path}.actor", "actor")
        else:
            self.wrong_type(f"{path}.actor", "an Agent or Group (a JSON object)", actor)

        verb = get("verb")
        verb_id: object = None
        if verb is None:
            if "verb" not in st:
                self.add("missing-verb", f"{path}.verb", "a statement needs a verb")
        elif type(verb) is dict:
            p = f"{path}.verb"
            self.fields(verb, "verb", p)
            verb_id = verb.get("id")
            if verb_id is None:
                self.missing(verb, p, "id", "a Verb")
        else:
            self.wrong_type(f"{path}.verb", "a Verb (a JSON object)", verb)

        obj = get("object")
        object_type: object = None
        if obj is None:
            if "object" not in st:
                self.add("missing-object", f"{path}.object", "a statement needs an object")
        elif type(obj) is dict:
            p = f"{path}.object"
            object_type = self.statement_object(obj, p, sub)
            if verb_id == _VOIDED and not sub and object_type != "StatementRef":
                self.add(
                    "voiding-needs-statementref",
                    p,
                    "a voiding statement's object is a StatementRef",
                )
        else:
            self.wrong_type(f"{path}.object", "an Activity, Agent, Group or statement", obj)

        result = get("result")
        if result is not None:
            p = f"{path}.result"
            if self.dict_at(result, p, "a Result"):
                self.result(result, p)

        context = get("context")
        if context is not None:
            p = f"{path}.context"
            if self.dict_at(context, p, "a Context"):
                # revision/platform are judged only when the object is known not to be an Activity
                not_activity = type(obj) is dict and object_type not in (None, "Activity")
                self.context(context, p, not not_activity)

        attachments = get("attachments")
        if attachments is not None and self.list_at(
            attachments, f"{path}.attachments", "Attachments"
        ):
            for i, att in enumerate(attachments):
                p = f"{path}.attachments[{i}]"
                if self.dict_at(att, p, "an Attachment"):
                    self.attachment(att, p)

    def authority(self, value: object, path: str) -> None:
        if not self.dict_at(value, path, "an Agent or Group"):
            return
        assert isinstance(value, dict)
        if self.actor(value, path, "authority") == "Group":
            member = value.get("member")
            identified = any(k in value for k in _IFIS)
            if identified or type(member) is not list or len(member) != 2:
                self.add(
                    "authority-group-shape",
                    path,
                    "a Group authority must be an anonymous Group of exactly two Agents",
                )

    # -- actors -------------------------------------------------------------------------------

    def actor(self, d: dict[str, Any], path: str, role: str) -> str | None:
        """Check an Agent or Group; ``role`` says which objectType is allowed. Returns the kind
        checked ("Agent" or "Group"), None when objectType rules it out."""
        ot = d.get("objectType")
        if ot is None:
            if role in _GROUP_ROLES:
                self.add("bad-object-type", f"{path}.objectType", 'must be "Group"')
                return None
            kind = "Agent"
        elif type(ot) is not str:
            self.wrong_type(f"{path}.objectType", "a string", ot)
            return None
        elif ot == "Agent" and role not in _GROUP_ROLES:
            kind = "Agent"
        elif ot == "Group" and role not in _AGENT_ROLES:
            kind = "Group"
        elif ot == "Group" and role == "member":
            self.add("group-member-not-agent", f"{path}.objectType", "a Group member is an Agent")
            return None
        else:
            self.add("bad-object-type", f"{path}.objectType", f"{ot!r} is not allowed here")
            return None

        group = kind == "Group"
        n = 0
        if self.fields(d, "group" if group else "agent", path):
            get = d.get
            mbox = get("mbox")
            if mbox is not None:
                n += 1
                if type(mbox) is not str:
                    self.wrong_type(f"{path}.mbox", "a mailto IRI (a string)", mbox)
                elif _MBOX_RE.fullmatch(mbox) is None:
                    self.add("bad-mbox", f"{path}.mbox", f"{mbox!r} is not a mailto: e-mail IRI")
            sha1 = get("mbox_sha1sum")
            if sha1 is not None:
                n += 1
                if type(sha1) is not str:
                    self.wrong_type(f"{path}.mbox_sha1sum", "a string", sha1)
                elif _SHA1_RE.fullmatch(sha1) is None:
                    self.add(
                        "bad-mbox-sha1sum", f"{path}.mbox_sha1sum", "must be 40 hexadecimal digits"
                    )
            account = get("account")
            if account is not None:
                n += 1
                p = f"{path}.account"
                if self.dict_at(account, p, "an Account"):
                    self.account(account, p)
        if d.get("openid") is not None:
            n += 1

        if group:
            member = d.get("member")
            if n > 1:
                self.add("group-ifi-count", path, f"a Group has at most one identifier, got {n}")
            elif n == 0 and member is None and "member" not in d:
                self.add(
                    "anonymous-group-no-member", f"{path}.member", "an anonymous Group needs member"
                )
            if member is not None and self.list_at(member, f"{path}.member", "Agents"):
                if n == 0 and not member:
                    self.add("empty-value", f"{path}.member", "an anonymous Group needs members")
                for i, m in enumerate(member):
                    p = f"{path}.member[{i}]"
                    if self.dict_at(m, p, "an Agent"):
                        self.actor(m, p, "member")
        elif n != 1:
            self.add("agent-ifi-count", path, f"an Agent needs exactly one identifier, got {n}")
        return kind

    def account(self, d: dict[str, Any], path: str) -> None:
        self.fields(d, "account", path)
        if "homePage" not in d:
            self.missing(d, path, "homePage", "an Account")
        name = d.get("name")
        if name is None:
            self.missing(d, path, "name", "an Account")
        elif type(name) is not str:
            self.wrong_type(f"{path}.name", "a string", name)

    # -- objects ------------------------------------------------------------------------------

    def statement_object(self, d: dict[str, Any], path: str, sub: bool) -> object:
        """Check a statement's object; returns its objectType (None when absent)."""
        ot = d.get("objectType")
        if ot is None or ot == "Activity":
            self.activity(d, path)
        elif ot == "StatementRef":
            self.statement_ref(d, path)
        elif ot == "Agent":
            self.actor(d, path, "object-agent")
        elif ot == "Group":
            self.actor(d, path, "object-group")
        elif ot == "SubStatement":
            if sub:
                self.add(
                    "substatement-nested",
                    f"{path}.objectType",
                    "a SubStatement cannot have a SubStatement as its object",
                )
            else:
                self.statement(d, path, True)
        elif type(ot) is not str:
            self.wrong_type(f"{path}.objectType", "a string", ot)
        else:
            self.add("bad-object-type", f"{path}.objectType", f"{ot!r} is not an object type")
            if ot in self.activity_aliases:
                self.activity(d, path)
                return "Activity"
        return ot

    def statement_ref(self, d: dict[str, Any], path: str) -> None:
        self.fields(d, "statementref", path)
        if "id" not in d:
            self.missing(d, path, "id", "a StatementRef")

    def activity(self, d: dict[str, Any], path: str) -> None:
        if self.fields(d, "activity", path):
            definition = d.get("definition")
            if definition is not None:
                p = f"{path}.definition"
                if self.dict_at(definition, p, "an Activity Definition") and self.fields(
                    definition, "definition", p
                ):
                    self.interaction(definition, p)
        if "id" not in d:
            self.missing(d, path, "id", "an Activity")

    def interaction(self, d: dict[str, Any], path: str) -> None:
        """The interaction properties of an Activity Definition."""
        get = d.get
        itype = get("interactionType")
        allowed: frozenset[str] | None = frozenset()
        if itype is not None:
            if type(itype) is not str:
                self.wrong_type(f"{path}.interactionType", "a string", itype)
                allowed = None
            else:
                allowed = _INTERACTION_COMPONENTS.get(itype)
                if allowed is None:
                    self.add(
                        "bad-interaction-type",
                        f"{path}.interactionType",
                        f"{itype!r} is not an interaction type",
                    )
        crp = get("correctResponsesPattern")
        if crp is not None:
            p = f"{path}.correctResponsesPattern"
            if "interactionType" not in d:
                self.add(
                    "missing-property",
                    f"{path}.interactionType",
                    "correctResponsesPattern needs an interactionType",
                )
            if self.list_at(crp, p, "strings"):
                for i, s in enumerate(crp):
                    if type(s) is not str:
                        self.wrong_type(f"{p}[{i}]", "a string", s)
        for key in _COMPONENT_LISTS:
            comps = get(key)
            if comps is None:
                continue
            p = f"{path}.{key}"
            if allowed is not None and key not in allowed:
                why = f"interactionType {itype!r}" if itype is not None else "no interactionType"
                self.add("interaction-component-not-allowed", p, f"{key!r} is not used with {why}")
            if not self.list_at(comps, p, "interaction components"):
                continue
            seen: set[str] = set()
            for i, c in enumerate(comps):
                cp = f"{p}[{i}]"
                if not self.dict_at(c, cp, "an interaction component"):
                    continue
                self.fields(c, "component", cp)
                cid = c.get("id")
                if cid is None:
                    self.missing(c, cp, "id", "an interaction component")
                elif type(cid) is not str:
                    self.wrong_type(f"{cp}.id", "a string", cid)
                elif cid in seen:
                    self.add(
                        "interaction-component-duplicate-id",
                        f"{cp}.id",
                        f"component id {cid!r} is repeated",
                    )
                else:
                    seen.add(cid)

    # -- result -------------------------------------------------------------------------------

    def result(self, d: dict[str, Any], path: str) -> None:
        if self.fields(d, "result", path):
            score = d.get("score")
            if score is not None and self.dict_at(score, f"{path}.score", "a Score"):
                self.score(score, f"{path}.score")

    def number(self, d: dict[str, Any], key: str, path: str) -> float | int | None:
        v = d.get(key)
        if v is None:
            return None
        t = type(v)
        if t is int or t is float:
            return v
        self.wrong_type(f"{path}.{key}", "a number", v)
        return None

    def score(self, d: dict[str, Any], path: str) -> None:
        self.fields(d, "score", path)
        scaled = self.number(d, "scaled", path)
        if scaled is not None and not -1 <= scaled <= 1:
            self.add("score-scaled-range", f"{path}.scaled", f"{scaled} is outside [-1, 1]")
        lo = self.number(d, "min", path)
        hi = self.number(d, "max", path)
        if lo is not None and hi is not None and not lo < hi:
            self.add("score-min-max", f"{path}.min", f"min {lo} is not less than max {hi}")
        raw = self.number(d, "raw", path)
        if raw is not None:
            if lo is not None and raw < lo:
                self.add("score-raw-out-of-range", f"{path}.raw", f"raw {raw} is below min {lo}")
            if hi is not None and raw > hi:
                self.add("score-raw-out-of-range", f"{path}.raw", f"raw {raw} is above max {hi}")

    # -- context ------------------------------------------------------------------------------

    def context(self, d: dict[str, Any], path: str, object_is_activity: bool) -> None:
        if not self.fields(d, "context", path):
            return
        get = d.get
        v = get("contextActivities")
        if v is not None:
            p = f"{path}.contextActivities"
            if self.dict_at(v, p, "a contextActivities map"):
                self.context_activities(v, p)
        v = get("instructor")
        if v is not None and self.dict_at(v, f"{path}.instructor", "an Agent or Group"):
            self.actor(v, f"{path}.instructor", "instructor")
        v = get("team")
        if v is not None and self.dict_at(v, f"{path}.team", "a Group"):
            self.actor(v, f"{path}.team", "team")
        for key, code in (
            ("revision", "context-revision-not-activity"),
            ("platform", "context-platform-not-activity"),
        ):
            v = get(key)
            if v is None:
                continue
            if type(v) is not str:
                self.wrong_type(f"{path}.{key}", "a string", v)
            if not object_is_activity:
                self.add(
                    code, f"{path}.{key}", f"{key} is only allowed when the object is an Activity"
                )
        v = get("statement")
        if v is not None and self.dict_at(v, f"{path}.statement", "a StatementRef"):
            p = f"{path}.statement"
            ot = v.get("objectType")
            if ot is None:
                self.missing(v, p, "objectType", 'a context statement ("StatementRef")')
            elif ot != "StatementRef":
                self.add("bad-object-type", f"{p}.objectType", 'must be "StatementRef"')
            self.statement_ref(v, p)
        if self.v2:
            v = get("contextAgents")
            if v is not None:
                self.context_relations(v, f"{path}.contextAgents", "contextAgent", "agent")
            v = get("contextGroups")
            if v is not None:
                self.context_relations(v, f"{path}.contextGroups", "contextGroup", "group")

    def context_activities(self, d: dict[str, Any], path: str) -> None:
        if not self.fields(d, "contextActivities", path):
            return
        for key in _CONTEXT_ACTIVITY_KEYS:
            v = d.get(key)
            if v is None:
                continue
            p = f"{path}.{key}"
            if type(v) is list:
                for i, a in enumerate(v):
                    ap = f"{p}[{i}]"
                    if self.dict_at(a, ap, "an Activity"):
                        self.context_activity(a, ap)
            elif type(v) is dict:
                self.context_activity(v, p)
            else:
                self.wrong_type(p, "an Activity or an array of Activities", v)

    def context_activity(self, d: dict[str, Any], path: str) -> None:
        ot = d.get("objectType")
        if ot is not None and ot != "Activity":
            self.add("bad-object-type", f"{path}.objectType", 'a context activity is an "Activity"')
        self.activity(d, path)

    def context_relations(self, value: object, path: str, kind: str, member: str) -> None:
        """xAPI 2.0 contextAgents / contextGroups: arrays of {objectType, agent|group, types}."""
        if not self.list_at(value, path, f"{kind} objects"):
            return
        assert isinstance(value, list)
        for i, item in enumerate(value):
            p = f"{path}[{i}]"
            if not self.dict_at(item, p, f"a {kind} object"):
                continue
            self.fields(item, kind, p)
            ot = item.get("objectType")
            if ot is None:
                self.missing(item, p, "objectType", f"a {kind}")
            elif ot != kind:
                self.add("bad-object-type", f"{p}.objectType", f"must be {kind!r}")
            who = item.get(member)
            if who is None:
                self.missing(item, p, member, f"a {kind}")
            elif self.dict_at(who, f"{p}.{member}", "an Agent" if member == "agent" else "a Group"):
                self.actor(who, f"{p}.{member}", member)
            types = item.get("relevantTypes")
            if types is not None and self.list_at(types, f"{p}.relevantTypes", "IRIs"):
                if not types:
                    self.add("empty-value", f"{p}.relevantTypes", "relevantTypes must not be empty")
                for j, t in enumerate(types):
                    tp = f"{p}.relevantTypes[{j}]"
                    if type(t) is not str:
                        self.wrong_type(tp, "an IRI (a string)", t)
                    elif not _is_iri(t):
                        self.add("bad-iri", tp, f"{t!r} is not an IRI")

    # -- attachments --------------------------------------------------------------------------

    def attachment(self, d: dict[str, Any], path: str) -> None:
        self.fields(d, "attachment", path)
        for key in _ATTACHMENT_REQUIRED:
            if key not in d:
                self.missing(d, path, key, "an Attachment")
        get = d.get
        v = get("contentType")
        if v is not None:
            if type(v) is not str:
                self.wrong_type(f"{path}.contentType", "a media type (a string)", v)
            elif _MIME_RE.fullmatch(v) is None:
                self.add("bad-content-type", f"{path}.contentType", f"{v!r} is not a media type")
        v = get("length")
        if v is not None:
            if type(v) is not int:
                self.wrong_type(f"{path}.length", "an integer", v)
            elif v < 0:
                self.add("bad-attachment-length", f"{path}.length", "length must not be negative")
        v = get("sha2")
        if v is not None:
            if type(v) is not str:
                self.wrong_type(f"{path}.sha2", "a string", v)
            elif len(v) not in _SHA2_LENGTHS or _SHA2_RE.fullmatch(v) is None:
                self.add("bad-sha2", f"{path}.sha2", "sha2 must be a hexadecimal SHA-2 digest")


# --------------------------------------------------------------------------------------------
# Public API


@lru_cache(maxsize=256)
def _rules_for(version: str) -> bool | None:
    """True for 2.0.x rules, False for 1.0.x rules, None when the string is not a version."""
    m = _VERSION_RE.fullmatch(version)
    if m is None:
        return None
    return m.group(1) == "2"


# --------------------------------------------------------------------------------------------
# Tolerance profiles (see the module docstring for each rule's justification)

_MISSING = object()  # the value at a path that is absent


@dataclass(frozen=True, slots=True)
class Tolerance:
    """One rule: a problem with ``code`` whose path fully matches ``path`` is tolerated when
    ``condition(value, parent, statement)`` holds (``value``: the JSON value at the path,
    ``_MISSING`` when absent; ``parent``: the object holding it; ``statement``: the whole)."""

    code: str
    path: re.Pattern[str]
    condition: Callable[[object, object, dict[str, Any]], bool]
    summary: str

    def matches(self, problem: Problem, statement: object) -> bool:
        if problem.code != self.code or self.path.fullmatch(problem.path) is None:
            return False
        if type(statement) is not dict:
            return False
        parent, value = _lookup(statement, problem.path)
        return parent is not _MISSING and self.condition(value, parent, statement)


@dataclass(frozen=True, slots=True)
class Profile:
    """A named set of tolerated producer deviations. ``activity_object_types``: objectTypes
    (besides "Activity") whose object is checked as an Activity once its bad-object-type is
    reported, so that tolerating the type name tolerates nothing else."""

    name: str
    rules: tuple[Tolerance, ...]
    activity_object_types: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Verdict:
    """``problems``: what makes the statement non-conformant (``[]``: valid); ``tolerated``:
    deviations a requested profile accepts (reported, not errors)."""

    problems: list[Problem]
    tolerated: list[Problem]

    @property
    def valid(self) -> bool:
        return not self.problems


_CA = r"\$\.context\.contextActivities\.(?:parent|grouping|category|other)(?:\[[0-9]+\])?"


def _is_group_activity(value: object, parent: object, statement: dict[str, Any]) -> bool:
    return value == "GroupActivity"


def _is_bare_uuid(value: object, parent: object, statement: dict[str, Any]) -> bool:
    return type(value) is str and len(value) == 36 and _UUID_RE.fullmatch(value) is not None


def _min_equals_max(value: object, parent: object, statement: dict[str, Any]) -> bool:
    if type(parent) is not dict:
        return False
    lo, hi = parent.get("min"), parent.get("max")
    return type(lo) in (int, float) and type(hi) in (int, float) and lo == hi


ERB_TRANSFORMER = "https://w3id.org/xapi/openedx/extension/transformer-version"


def _from_erb(statement: dict[str, Any]) -> bool:
    """The statement says event-routing-backends made it (its transformer-version extension)."""
    context = statement.get("context")
    ext = context.get("extensions") if type(context) is dict else None
    v = ext.get(ERB_TRANSFORMER) if type(ext) is dict else None
    return type(v) is str and v.startswith("event-routing-backends@")


def _activity_without_id(value: object, parent: object, statement: dict[str, Any]) -> bool:
    return (
        value is _MISSING
        and type(parent) is dict
        and parent.get("objectType", "Activity") == "Activity"
        and _from_erb(statement)
    )


PROFILES: dict[str, Profile] = {
    "openedx": Profile(
        "openedx",
        (
            Tolerance(
                "bad-object-type",
                re.compile(rf"\$\.object\.objectType|{_CA}\.objectType"),
                _is_group_activity,
                'objectType "GroupActivity" where an Activity is expected',
            ),
            Tolerance(
                "bad-iri",
                re.compile(rf"{_CA}\.id"),
                _is_bare_uuid,
                "a context Activity id that is a bare UUID (no scheme)",
            ),
            Tolerance(
                "score-min-max",
                re.compile(r"\$\.result\.score\.min"),
                _min_equals_max,
                "score min == max (a 0-point problem: min == max == 0)",
            ),
            Tolerance(
                "missing-property",
                re.compile(r"\$\.object\.id"),
                _activity_without_id,
                "the statement's Activity object has no id",
            ),
        ),
        frozenset({"GroupActivity"}),
    ),
}

_PATH_TOKEN_RE = re.compile(r"\.([^.\['\]]+)|\[([0-9]+)\]|\['((?:[^'\\]|\\.)*)'\]")


def _lookup(root: object, path: str) -> tuple[object, object]:
    """(parent, value) at a problem's JSON ``path`` (as ``_child`` writes them); value is
    ``_MISSING`` when absent, parent too when the path does not lead into ``root``."""
    node: object = root
    parent: object = _MISSING
    pos = 1  # after "$"
    while pos < len(path):
        m = _PATH_TOKEN_RE.match(path, pos)
        if m is None or node is _MISSING:
            return _MISSING, _MISSING
        pos = m.end()
        name, index, quoted = m.groups()
        parent = node
        if index is not None:
            i = int(index)
            node = node[i] if type(node) is list and i < len(node) else _MISSING
        else:
            key = name if name is not None else re.sub(r"\\(.)", r"\1", quoted)
            node = node.get(key, _MISSING) if type(node) is dict else _MISSING
    return parent, node


@lru_cache(maxsize=64)
def _profiles(names: frozenset[str]) -> tuple[tuple[Tolerance, ...], frozenset[str]]:
    unknown = sorted(names - PROFILES.keys())
    if unknown:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown tolerance profile(s) {', '.join(map(repr, unknown))}: "
                         f"known: {known}")
    chosen = [PROFILES[n] for n in sorted(names)]
    rules = tuple(r for p in chosen for r in p.rules)
    aliases = frozenset(t for p in chosen for t in p.activity_object_types)
    return rules, aliases


def _profile_names(tolerate: Collection[str]) -> frozenset[str]:
    if isinstance(tolerate, str):
        raise ValueError(f"tolerate must be a set of profile names, not the string {tolerate!r}")
    return tolerate if type(tolerate) is frozenset else frozenset(tolerate)


# --------------------------------------------------------------------------------------------
# Public API


def _check(statement: object, version: str, aliases: frozenset[str]) -> list[Problem]:
    v2 = _rules_for(version) if type(version) is str else None
    if v2 is None:
        raise ValueError(f"unknown xAPI version {version!r}: use '1.0.3' or '2.0.0'")
    if type(statement) is not dict:
        c = _Checker(v2)
        c.wrong_type("$", "a statement (a JSON object)", statement)
        return c.out
    own = statement.get("version")
    problem: Problem | None = None
    if own is not None:
        own_v2 = _rules_for(own) if type(own) is str else None
        if own_v2 is not None:
            v2 = own_v2
        elif type(own) is str:
            problem = Problem(
                "bad-version", "$.version", f"{own!r} is not 1.0, 1.0.x, 2.0 or 2.0.x"
            )
        else:
            problem = Problem("wrong-type", "$.version", f"must be a string, got {_describe(own)}")
    c = _Checker(v2, aliases)
    if problem is not None:
        c.out.append(problem)
    c.statement(statement, "$", False)
    return c.out


def validate_detailed(
    statement: object, version: str = "1.0.3", tolerate: Collection[str] = frozenset()
) -> Verdict:
    """Judge ``statement`` like ``validate``, splitting out the problems that a tolerance
    profile named in ``tolerate`` (keys of ``PROFILES``) accepts. Raises ValueError for an
    unknown version or profile name."""
    names = _profile_names(tolerate)
    if not names:
        return Verdict(_check(statement, version, frozenset()), [])
    rules, aliases = _profiles(names)
    found = _check(statement, version, aliases)
    problems: list[Problem] = []
    tolerated: list[Problem] = []
    for p in found:
        (tolerated if any(r.matches(p, statement) for r in rules) else problems).append(p)
    return Verdict(problems, tolerated)


def validate(
    statement: object, version: str = "1.0.3", tolerate: Collection[str] = frozenset()
) -> list[Problem]:
    """Problems that make ``statement`` (parsed JSON) non-conformant; ``[]`` means valid.

    ``version`` ("1.0.3" or "2.0.0") picks the rules unless the statement's own "version"
    property names a 1.0, 1.0.x, 2.0 or 2.0.x version, which then decides. ``tolerate``: names
    of tolerance profiles (``PROFILES``) whose deviations are not counted as problems (see
    ``validate_detailed`` to get them). Raises ValueError only for a ``version`` argument that is
    not such a version or an unknown profile name (a caller's error).
    """
    if not tolerate:
        return _check(statement, version, frozenset())
    return validate_detailed(statement, version, tolerate).problems


_fast_accepts: Callable[[bytes], bool] | None = None


def _fast_valid(raw: bytes, version: str) -> bool:
    """The fast path's verdict (True: certainly valid) for a known ``version`` argument."""
    global _fast_accepts
    if type(version) is not str or _rules_for(version) is None:
        return False  # the full path raises the caller's error
    if _fast_accepts is None:
        from pipelines.xapi.fastcheck import accepts

        _fast_accepts = accepts
    return _fast_accepts(raw)


def _parse(raw: bytes) -> tuple[object, Problem | None]:
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, Problem("malformed-json", "$", f"not strict JSON: {exc}")


def validate_detailed_bytes(
    raw: bytes, version: str = "1.0.3", tolerate: Collection[str] = frozenset()
) -> Verdict:
    """Parse ``raw`` as strict JSON (orjson), then ``validate_detailed`` it.

    A statement of the everyday shape is first tried by the fast path
    (:func:`pipelines.xapi.fastcheck.accepts`): when it is certainly valid, the answer comes
    from there, else from the full validator."""
    if _fast_valid(raw, version):
        if tolerate:
            _profiles(_profile_names(tolerate))  # an unknown profile is an error all the same
        return Verdict([], [])
    statement, problem = _parse(raw)
    if problem is not None:
        _profiles(_profile_names(tolerate))  # an unknown profile is an error all the same
        return Verdict([problem], [])
    return validate_detailed(statement, version, tolerate)


def validate_bytes(
    raw: bytes, version: str = "1.0.3", tolerate: Collection[str] = frozenset()
) -> list[Problem]:
    """Parse ``raw`` as strict JSON (orjson), then ``validate`` it (the fast path first, as in
    ``validate_detailed_bytes``)."""
    if _fast_valid(raw, version):
        if tolerate:
            _profiles(_profile_names(tolerate))
        return []
    statement, problem = _parse(raw)
    if problem is not None:
        if tolerate:
            _profiles(_profile_names(tolerate))
        return [problem]
    return validate(statement, version, tolerate)
