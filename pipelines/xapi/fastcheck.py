"""A fast, conservative acceptance test for xAPI statements (bytes): the validator's fast path.

``accepts(raw)`` decodes the bytes with msgspec straight into strict typed structs that describe
the statements LMSs send every day (an Agent actor, a verb, an Activity object with its
definition, result, context and timestamps) and answers True only when the statement is
certainly valid: every check the full validator (:mod:`pipelines.xapi.validate`) would make is
made here too, most of them inside msgspec's C decoder (unknown properties and nulls are decode
errors; statement ids and timestamps are regex constraints on the string types), the rest in a
few lines of Python on the decoded structs: the formats that repeat from statement to statement
(IRIs, language tags, mboxes, registrations, durations, the version) against the strings already
found good, one identifier per Agent, the score's order, the interaction component rules.

False means only "not certainly valid": the caller then runs the full validator, which gives the
verdict with its reason codes and JSON paths. Everything outside the common shape answers False
and takes the full path: Groups, SubStatements, StatementRef objects (so every voiding
statement), Agents as objects, attachments, ``context.team``, the 2.0 context agents and groups,
basic-format timestamps, 29 February, an offset without a colon.

Soundness (``accepts(raw)`` implies the full validator finds no problem, under either version's
rules and with or without tolerance profiles) is tested on generated and mutated statements and
on every corpus statement and ADL conformance case (``tests/test_fastcheck.py``). The shape
modelled here is the same under xAPI 1.0.3 and 2.0.0 (the versions differ only in context
agents and groups, which are not modelled), so the verdict does not depend on the version.

Two decoding details make it exact rather than approximate: extension values are decoded in
full (``Any``), so invalid UTF-8 or an out-of-range number inside them fails here as it fails in
orjson; and score numbers stay ``int`` or ``float`` as sent, so the order checks compare the
same values the validator compares.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from pipelines.xapi import validate as _v

__all__ = ["accepts"]


def _anchored(pattern: str, flags: str = "") -> str:
    """A fullmatch as msgspec's pattern (which is searched): anchored, end included.

    ``\\Z`` rather than ``$``: ``$`` would also match before a final newline."""
    return f"(?{flags})^(?:{pattern})\\Z" if flags else f"^(?:{pattern})\\Z"


# Strings that repeat from statement to statement (IRIs and language tags of verbs, activities
# and extension keys; the learners' mboxes, registrations, durations, the version) are plain
# strings in the structs and checked after decoding against a set of those already found good,
# with the validator's own compiled pattern: a regex per occurrence would cost more than the
# whole decode.
_IRI = str
_LANGTAG = str
_MBOX = str
_SHA1 = str
_DURATION = str
_VERSION = str
_REGISTRATION = str
# Statement ids are unique per statement: the validator's own pattern (same regex), anchored,
# checked by msgspec while decoding.
_UUID = Annotated[str, Meta(pattern=_anchored(_v._UUID_RE.pattern))]

# A narrower timestamp than the validator's: extended format, a valid calendar date other than
# 29 February (every month's days spelled out), hours 00-23, minutes 00-59, seconds 00-60, and
# no offset, Z, or +hh:mm / -hh:mm (never -00:00). Each one the validator accepts too.
_DATE = (
    r"[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::(?:[0-5][0-9]|60)(?:[.,][0-9]+)?)?"
_OFFSET = r"(?:Z|\+(?:[01][0-9]|2[0-3]):[0-5][0-9]|-(?!00:00)(?:[01][0-9]|2[0-3]):[0-5][0-9])?"
_TIMESTAMP = Annotated[str, Meta(pattern=_anchored(f"{_DATE}T{_TIME}{_OFFSET}", "a"))]

_LangMap = dict[_LANGTAG, str]
_Extensions = dict[_IRI, Any]  # values are free (null included) but decoded in full
_Number = int | float

_STRICT: dict[str, Any] = {"forbid_unknown_fields": True, "gc": False}


class _Account(Struct, **_STRICT):
    homePage: _IRI
    name: str


class _Agent(Struct, **_STRICT):
    objectType: Literal["Agent"] | UnsetType = UNSET
    name: str | UnsetType = UNSET
    mbox: _MBOX | UnsetType = UNSET
    mbox_sha1sum: _SHA1 | UnsetType = UNSET
    openid: _IRI | UnsetType = UNSET
    account: _Account | UnsetType = UNSET


class _Verb(Struct, **_STRICT):
    id: _IRI
    display: _LangMap | UnsetType = UNSET


class _Component(Struct, **_STRICT):
    id: str
    description: _LangMap | UnsetType = UNSET


_InteractionType = Literal["true-false", "choice", "fill-in", "long-fill-in", "matching",
                           "performance", "sequencing", "likert", "numeric", "other"]
_Components = list[_Component] | UnsetType


class _Definition(Struct, **_STRICT):
    name: _LangMap | UnsetType = UNSET
    description: _LangMap | UnsetType = UNSET
    type: _IRI | UnsetType = UNSET
    moreInfo: _IRI | UnsetType = UNSET
    extensions: _Extensions | UnsetType = UNSET
    interactionType: _InteractionType | UnsetType = UNSET
    correctResponsesPattern: list[str] | UnsetType = UNSET
    choices: _Components = UNSET
    scale: _Components = UNSET
    source: _Components = UNSET
    target: _Components = UNSET
    steps: _Components = UNSET


class _Activity(Struct, **_STRICT):
    id: _IRI
    objectType: Literal["Activity"] | UnsetType = UNSET
    definition: _Definition | UnsetType = UNSET


class _Score(Struct, **_STRICT):
    scaled: _Number | UnsetType = UNSET
    raw: _Number | UnsetType = UNSET
    min: _Number | UnsetType = UNSET
    max: _Number | UnsetType = UNSET


class _Result(Struct, **_STRICT):
    score: _Score | UnsetType = UNSET
    success: bool | UnsetType = UNSET
    completion: bool | UnsetType = UNSET
    response: str | UnsetType = UNSET
    duration: _DURATION | UnsetType = UNSET
    extensions: _Extensions | UnsetType = UNSET


_Activities = list[_Activity] | _Activity | UnsetType


class _ContextActivities(Struct, **_STRICT):
    parent: _Activities = UNSET
    grouping: _Activities = UNSET
    category: _Activities = UNSET
    other: _Activities = UNSET


class _StatementRef(Struct, **_STRICT):
    objectType: Literal["StatementRef"]
    id: _UUID


class _Context(Struct, **_STRICT):
    registration: _REGISTRATION | UnsetType = UNSET
    instructor: _Agent | UnsetType = UNSET
    contextActivities: _ContextActivities | UnsetType = UNSET
    revision: str | UnsetType = UNSET  # the object is always an Activity here
    platform: str | UnsetType = UNSET
    language: _LANGTAG | UnsetType = UNSET
    statement: _StatementRef | UnsetType = UNSET
    extensions: _Extensions | UnsetType = UNSET


class _Statement(Struct, **_STRICT):
    actor: _Agent
    verb: _Verb
    object: _Activity
    id: _UUID | UnsetType = UNSET
    result: _Result | UnsetType = UNSET
    context: _Context | UnsetType = UNSET
    timestamp: _TIMESTAMP | UnsetType = UNSET
    stored: _TIMESTAMP | UnsetType = UNSET
    authority: _Agent | UnsetType = UNSET
    version: _VERSION | UnsetType = UNSET


_decode = msgspec.json.Decoder(_Statement).decode
_ALLOWED = _v._INTERACTION_COMPONENTS
_VOIDED = _v._VOIDED


def _score_ok(s: _Score) -> bool:
    scaled, raw, lo, hi = s.scaled, s.raw, s.min, s.max
    if scaled is not UNSET and not -1 <= scaled <= 1:
        return False
    if lo is not UNSET and hi is not UNSET and not lo < hi:
        return False
    if raw is not UNSET:
        if lo is not UNSET and raw < lo:
            return False
        if hi is not UNSET and raw > hi:
            return False
    return True


def _interaction_ok(d: _Definition) -> bool:
    itype = d.interactionType
    if d.correctResponsesPattern is not UNSET and itype is UNSET:
        return False
    allowed = _ALLOWED[itype] if itype is not UNSET else frozenset()
    for key in _v._COMPONENT_LISTS:
        comps = getattr(d, key)
        if comps is UNSET:
            continue
        if key not in allowed:
            return False
        ids = [c.id for c in comps]
        if len(set(ids)) != len(ids):
            return False
    return True


_MAX_KNOWN = 100_000
_good_iris: set[str] = set()
_good_tags: set[str] = set()


def _fullmatch(pattern: re.Pattern[str], length: int = 0) -> Callable[[str], bool]:
    """The validator's check of a format: ``pattern`` matches the whole string (and the string
    has ``length`` characters, when given)."""
    full = pattern.fullmatch
    if length:
        return lambda value: len(value) == length and full(value) is not None
    return lambda value: full(value) is not None


_is_mbox = _fullmatch(_v._MBOX_RE)
_is_sha1 = _fullmatch(_v._SHA1_RE)
_is_duration = _fullmatch(_v._DURATION_RE)
_is_version = _fullmatch(_v._VERSION_RE)
_is_uuid = _fullmatch(_v._UUID_RE, 36)
_good_mboxes: set[str] = set()
_good_sha1s: set[str] = set()
_good_durations: set[str] = set()
_good_versions: set[str] = set()
_good_registrations: set[str] = set()


def _known(value: str, good: set[str], check: Callable[[str], bool]) -> bool:
    """``value`` passes ``check`` (remembered in ``good``, up to a bound)."""
    if value in good:
        return True
    if not check(value):
        return False
    if len(good) < _MAX_KNOWN:
        good.add(value)
    return True


def _all_good(found: list[str], good: set[str], check: Callable[[str], bool]) -> bool:
    """Every string of ``found`` passes ``check`` (each remembered as :func:`_known` does)."""
    return good.issuperset(found) or all(_known(value, good, check) for value in found)


def _definition(d: _Definition, iris: list[str], tags: list[str]) -> bool:
    """Collect the definition's IRIs and tags; False when its interaction rules fail."""
    if d.type is not UNSET:
        iris.append(d.type)
    if d.moreInfo is not UNSET:
        iris.append(d.moreInfo)
    if d.extensions is not UNSET:
        iris.extend(d.extensions)
    if d.name is not UNSET:
        tags.extend(d.name)
    if d.description is not UNSET:
        tags.extend(d.description)
    if d.interactionType is UNSET and d.correctResponsesPattern is UNSET and d.choices is UNSET \
            and d.scale is UNSET and d.source is UNSET and d.target is UNSET \
            and d.steps is UNSET:
        return True
    for key in _v._COMPONENT_LISTS:
        comps = getattr(d, key)
        if comps is not UNSET:
            for c in comps:
                if c.description is not UNSET:
                    tags.extend(c.description)
    return _interaction_ok(d)


def _activity(a: _Activity, iris: list[str], tags: list[str]) -> bool:
    iris.append(a.id)
    d = a.definition
    return d is UNSET or _definition(d, iris, tags)


def _agent(a: _Agent, iris: list[str]) -> bool:
    """Exactly one identifier; the IRIs collected."""
    n = 0
    if a.mbox is not UNSET:
        if not _known(a.mbox, _good_mboxes, _is_mbox):
            return False
        n += 1
    if a.mbox_sha1sum is not UNSET:
        if not _known(a.mbox_sha1sum, _good_sha1s, _is_sha1):
            return False
        n += 1
    if a.openid is not UNSET:
        n += 1
        iris.append(a.openid)
    if a.account is not UNSET:
        n += 1
        iris.append(a.account.homePage)
    return n == 1


def accepts(raw: bytes | bytearray | memoryview | str) -> bool:
    """True only when the statement is certainly valid (see the module docstring)."""
    try:
        st = _decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    if st.version is not UNSET and not _known(st.version, _good_versions, _is_version):
        return False
    iris: list[str] = []
    tags: list[str] = []
    if not _agent(st.actor, iris):
        return False
    if st.authority is not UNSET and not _agent(st.authority, iris):
        return False
    verb = st.verb
    if verb.id == _VOIDED:
        return False  # its object must be a StatementRef: not modelled here
    iris.append(verb.id)
    if verb.display is not UNSET:
        tags.extend(verb.display)
    if not _activity(st.object, iris, tags):
        return False
    r = st.result
    if r is not UNSET:
        if r.score is not UNSET and not _score_ok(r.score):
            return False
        if r.extensions is not UNSET:
            iris.extend(r.extensions)
        if r.duration is not UNSET and not _known(r.duration, _good_durations, _is_duration):
            return False
    c = st.context
    if c is not UNSET:
        if c.registration is not UNSET and not _known(c.registration, _good_registrations,
                                                      _is_uuid):
            return False
        if c.instructor is not UNSET and not _agent(c.instructor, iris):
            return False
        if c.language is not UNSET:
            tags.append(c.language)
        if c.extensions is not UNSET:
            iris.extend(c.extensions)
        ca = c.contextActivities
        if ca is not UNSET:
            for group in (ca.parent, ca.grouping, ca.category, ca.other):
                if group is UNSET:
                    continue
                if isinstance(group, list):
                    for a in group:
                        if not _activity(a, iris, tags):
                            return False
                elif not _activity(group, iris, tags):
                    return False
    return _all_good(iris, _good_iris, _v._is_iri) and _all_good(tags, _good_tags, _v._is_langtag)
