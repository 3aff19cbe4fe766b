"""A deterministic stream of xAPI statements, shaped like Moodle logstore_xapi and cmi5 players.

The stream is what an LRS would hand out in ``stored`` order: line ``i`` is stored at a clock that
only moves forward (more activity in the Almaty daytime, less on weekends), its ``timestamp`` is a
little earlier. Learners work in interleaved sessions (a quiz attempt: attempted, answered...,
completed; a cmi5 AU: launched, initialized, completed, passed/failed, terminated; a live session:
attended; page and course views), and a configurable share of lines is trouble: malformed JSON,
invalid xAPI, unknown learners, exact and conflicting duplicates, voiding statements (some of
which arrive before the statement they void) and late arrivals.

Memory stays bounded whatever ``count`` is: only a fixed-size reservoir of earlier lines is kept.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import orjson

from .university import (
    HOMEPAGE,
    TYPE_ASSESSMENT,
    TYPE_COURSE,
    TYPE_SECTION,
    Activity,
    Discipline,
    University,
    random_person,
    transliterate,
)

__all__ = [
    "KINDS",
    "GeneratedLine",
    "TroubleShares",
    "generate_statements",
]

KINDS = (
    "valid",
    "malformed_json",
    "invalid",
    "unknown_learner",
    "exact_duplicate",
    "conflicting_duplicate",
    "voiding",
    "late_arrival",
)
TROUBLE_KINDS = KINDS[1:]

XAPI_VERSION = "1.0.3"
PLATFORM = "Moodle 4.3"
CMI5_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/cmi5"
MOVEON_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/moveon"
EXT_SESSION = "https://w3id.org/xapi/cmi5/context/extensions/sessionid"
EXT_LAUNCHMODE = "https://w3id.org/xapi/cmi5/context/extensions/launchmode"
EXT_LAUNCHURL = "https://w3id.org/xapi/cmi5/context/extensions/launchurl"
EXT_MOVEON = "https://w3id.org/xapi/cmi5/context/extensions/moveon"
EXT_MASTERY = "https://w3id.org/xapi/cmi5/context/extensions/masteryscore"
EXT_BBB_MEETING = f"{HOMEPAGE}/xapi/extensions/bigbluebutton-meeting-id"
EXT_MOODLE_INFO = "http://lrs.learninglocker.net/define/extensions/info"
TYPE_LMS = "http://id.tincanapi.com/activitytype/lms"
_NS = uuid.UUID("6f1c8f4e-2d7a-5b1e-9a53-6b8e1f0c4a21")

_MS_DAY = 86_400_000
_MS_HOUR = 3_600_000
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_LOCAL_OFFSET_H = 5  # Asia/Almaty, UTC+5 all year since 2024
# relative activity by local hour and by weekday (Monday = 0)
_HOUR_W = (
    *(0.06, 0.03, 0.02, 0.02, 0.02, 0.04, 0.1, 0.3, 0.7, 1.0, 1.0, 1.0),  # 00:00-11:59
    *(0.85, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.7, 0.8, 0.7, 0.4, 0.15),  # 12:00-23:59
)
_DAY_W = (1.0, 1.0, 1.0, 1.0, 0.95, 0.7, 0.45)
_LATE_MIN_MS = 26 * _MS_HOUR  # late arrivals are stored more than a day after their timestamp
_LATE_MAX_MS = 21 * _MS_DAY


def _dumps(value: Any) -> bytes:
    """``orjson.dumps`` trimmed to size: orjson's own bytes object keeps its whole write buffer
    (about 8 KiB of memory for a 1.7 KB statement), which adds up in anything holding lines."""
    return bytes(memoryview(orjson.dumps(value)))


def _frag(value: Any) -> orjson.Fragment:
    """Serialised once, embedded as is by every ``orjson.dumps`` (shared statement parts)."""
    return orjson.Fragment(_dumps(value))


def _verb_dict(iri: str) -> dict[str, Any]:
    return {"id": iri, "display": {"en-US": iri.rsplit("/", 1)[1]}}


def _verb(iri: str) -> orjson.Fragment:
    return _frag(_verb_dict(iri))


ADL = "http://adlnet.gov/expapi/verbs/"
VIEWED_IRI = "http://id.tincanapi.com/verb/viewed"
V_VIEWED = _verb(VIEWED_IRI)
V_EXPERIENCED = _verb(ADL + "experienced")
V_ATTEMPTED = _verb(ADL + "attempted")
V_ANSWERED = _verb(ADL + "answered")
V_COMPLETED = _verb(ADL + "completed")
V_LAUNCHED = _verb(ADL + "launched")
V_INITIALIZED = _verb(ADL + "initialized")
V_PASSED = _verb(ADL + "passed")
V_FAILED = _verb(ADL + "failed")
V_TERMINATED = _verb(ADL + "terminated")
V_ABANDONED = _verb("https://w3id.org/xapi/adl/verbs/abandoned")
V_ATTENDED = _verb(ADL + "attended")
V_VOIDED = _verb(ADL + "voided")


def _moodle_ext_dict(event: str) -> dict[str, Any]:
    return {
        EXT_MOODLE_INFO: {
            "event_name": event,
            "http://moodle.org": "4.3.4 (Build: 20240422)",
            "https://github.com/xAPI-vle/moodle-logstore_xapi": "v4.7.0",
        }
    }


def _moodle_ext(event: str) -> orjson.Fragment:
    return _frag(_moodle_ext_dict(event))


EXT_COURSE_VIEWED = _moodle_ext("\\core\\event\\course_viewed")
EXT_PAGE_VIEWED = _moodle_ext("\\mod_page\\event\\course_module_viewed")
EXT_RESOURCE_VIEWED = _moodle_ext("\\mod_resource\\event\\course_module_viewed")
EXT_QUIZ_STARTED = _moodle_ext("\\mod_quiz\\event\\attempt_started")
EXT_QUIZ_SUBMITTED = _moodle_ext("\\mod_quiz\\event\\attempt_submitted")
EXT_BBB = _moodle_ext_dict("\\mod_bigbluebuttonbn\\event\\meeting_left")


@dataclass(slots=True)
class TroubleShares:
    """Share of the output lines that are of each trouble kind (the rest is valid)."""

    malformed_json: float = 0.002
    invalid: float = 0.005
    unknown_learner: float = 0.01
    exact_duplicate: float = 0.005
    conflicting_duplicate: float = 0.002
    voiding: float = 0.003
    late_arrival: float = 0.01

    def __post_init__(self) -> None:
        total = 0.0
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise ValueError(f"TroubleShares.{f.name} must be in [0, 1], got {v!r}")
            total += v
        if total > 1.0 + 1e-9:
            raise ValueError(f"trouble shares add up to {total:.4f} > 1")

    @classmethod
    def none(cls) -> TroubleShares:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class GeneratedLine(NamedTuple):
    line: bytes  # one NDJSON line, without the trailing newline
    kind: str  # one of KINDS
    statement_id: str | None  # the statement's id (None for malformed JSON)
    detail: str | None = None  # which violation or breakage, for invalid / malformed lines


# ------------------------------------------------------------------------------------------------
# small helpers


_UUID4_BITS = 0x00000000_0000_4000_8000_000000000000


def _uuid4(rng: random.Random) -> str:
    """Same string as ``str(uuid.UUID(int=rng.getrandbits(128), version=4))``, 3x faster."""
    n = (rng.getrandbits(128) & 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF) | _UUID4_BITS
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def iso_duration(seconds: float, centis: bool = False) -> str:
    """ISO 8601 duration: PT25M13S, PT1H2M3S, PT45S (PT25M13.52S with ``centis``)."""
    if centis:
        total_c = max(1, round(seconds * 100))
        whole, c = divmod(total_c, 100)
    else:
        whole, c = max(1, round(seconds)), 0
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    out = "PT"
    if h:
        out += f"{h}H"
    if m:
        out += f"{m}M"
    if s or c or out == "PT":
        out += f"{s}.{c:02d}S" if c else f"{s}S"
    return out


_MIN_SUFFIX: list[str] = []  # minute of the hour -> "MM:"
_REM_SUFFIX: list[str] = []  # ms within a minute -> "SS.mmmZ"


class _TimeFormatter:
    """``2026-10-03T09:15:27.123Z`` from epoch milliseconds, with a per-hour prefix cache."""

    __slots__ = ("_hours",)

    def __init__(self) -> None:
        self._hours: dict[int, str] = {}
        if not _REM_SUFFIX:
            _MIN_SUFFIX.extend(f"{m:02d}:" for m in range(60))
            _REM_SUFFIX.extend(f"{s:02d}.{r:03d}Z" for s in range(60) for r in range(1000))

    def __call__(self, ms: int) -> str:
        hour, rem = divmod(ms, _MS_HOUR)
        prefix = self._hours.get(hour)
        if prefix is None:
            prefix = self._prefix(hour)
        minute, rem = divmod(rem, 60_000)
        return prefix + _MIN_SUFFIX[minute] + _REM_SUFFIX[rem]

    def _prefix(self, hour: int) -> str:
        day, h = divmod(hour, 24)
        prefix = f"{date.fromordinal(_EPOCH_ORD + day).isoformat()}T{h:02d}:"
        if len(self._hours) > 20_000:
            self._hours.clear()
        self._hours[hour] = prefix
        return prefix


class _Clock:
    """Stored times for the lines, non-decreasing over [start, end), with a daily rhythm.

    The span is cut at every hour; an hour's weight is its length times the activity of that
    local hour and weekday. Line ``i`` gets the time at cumulative weight ``(i + u) / count``
    (``u`` uniform in [0, 1)), found with a pointer that only moves forward; that lookup is
    inlined in ``_Generator.run`` for speed.
    """

    __slots__ = ("_cum", "_edges", "_scale", "_w")

    def __init__(self, start_ms: int, end_ms: int, count: int) -> None:
        edges = [start_ms]
        t = (start_ms // _MS_HOUR + 1) * _MS_HOUR
        while t < end_ms:
            edges.append(t)
            t += _MS_HOUR
        edges.append(end_ms)
        w: list[float] = []
        cum = [0.0]
        for a, b in itertools.pairwise(edges):
            local_h = a // _MS_HOUR + _LOCAL_OFFSET_H
            weekday = (local_h // 24 + 3) % 7  # 1970-01-01 was a Thursday
            wt = _HOUR_W[local_h % 24] * _DAY_W[weekday] * (b - a)
            w.append(wt)
            cum.append(cum[-1] + wt)
        self._edges = edges
        self._w = w
        self._cum = cum
        self._scale = cum[-1] / max(1, count)


# ------------------------------------------------------------------------------------------------
# the generator


_SESSION_WEIGHTS = (
    ("course", 10.0),
    ("page", 30.0),
    ("video", 8.0),
    ("quiz", 10.0),
    ("cmi5", 14.0),
    ("live", 16.0),
)

_WRONG = {c: [x for x in "abcd" if x != c] for c in "abcd"}

_INVALID_VARIANTS = (
    "missing_verb",
    "actor_two_ifis",
    "actor_no_ifi",
    "scaled_out_of_range",
    "raw_above_max",
    "mbox_without_mailto",
    "non_uuid_id",
    "bad_timestamp",
    "verb_id_not_iri",
    "object_without_id",
    "bad_language_tag",
    "bad_registration",
    "success_as_string",
    "bad_duration",
    "unsupported_version",
    "unknown_property",
)
_MALFORMED_VARIANTS = ("truncated", "truncated", "trailing_comma", "single_quotes", "concatenated")


class _Generator:
    def __init__(
        self,
        univ: University,
        count: int,
        seed: int,
        trouble: TroubleShares,
        start: datetime,
        end: datetime,
        with_stored: bool,
    ) -> None:
        self.univ = univ
        self.count = count
        self.rng = random.Random(f"footprint-statements-{seed}")
        self.with_stored = with_stored
        self.start_ms = _to_ms(start)
        self.end_ms = _to_ms(end)
        if self.end_ms <= self.start_ms:
            raise ValueError("end must be after start")
        self.clock = _Clock(self.start_ms, self.end_ms, count)
        self.fmt = _TimeFormatter()
        gap_ms = (self.end_ms - self.start_ms) / max(1, count)
        # concurrent sessions: enough that a session's steps are a few minutes apart
        self.max_sessions = max(1, min(400, round(300_000 / max(gap_ms, 1.0))))
        self.now = self.start_ms

        acc = 0.0
        self.thresholds: list[tuple[float, str]] = []
        for name in TROUBLE_KINDS:
            acc += getattr(trouble, name)
            self.thresholds.append((acc, name))
        self.trouble_total = acc

        rng = self.rng
        # --- per-activity fragments ------------------------------------------------------------
        site = {
            "objectType": "Activity",
            "id": HOMEPAGE,
            "definition": {"type": TYPE_LMS, "name": {"en-US": "Alatau University LMS"}},
        }
        cat_moodle = [site]
        cat_cmi5 = [{"id": CMI5_CATEGORY}]
        cat_moveon = [{"id": CMI5_CATEGORY}, {"id": MOVEON_CATEGORY}]
        self.obj: dict[str, orjson.Fragment] = {}
        self.ca: dict[str, orjson.Fragment] = {}
        self.ca_cmi5: dict[str, orjson.Fragment] = {}
        self.ca_moveon: dict[str, orjson.Fragment] = {}
        self.by_kind: list[dict[str, list[Activity]]] = []
        self.session_tables: list[tuple[tuple[str, ...], list[float]]] = []
        self.instructor: list[orjson.Fragment] = []
        self.quiz_questions: dict[str, list[Activity]] = {}
        for d in univ.disciplines:
            course_ref = {
                "objectType": "Activity",
                "id": d.course_iri,
                "definition": {"type": TYPE_COURSE},
            }
            kinds: dict[str, list[Activity]] = {}
            ca_cache: dict[tuple[int, str | None], tuple[orjson.Fragment, ...]] = {}
            for a in d.activities:
                kinds.setdefault(a.kind, []).append(a)
                definition: dict[str, Any] = {"name": a.name, "type": a.type}
                if a.kind == "question":
                    correct = str(a.extra["correct"])
                    definition["interactionType"] = "choice"
                    definition["correctResponsesPattern"] = [correct]
                    definition["choices"] = [
                        {"id": c, "description": {"en-US": c.upper()}} for c in "abcd"
                    ]
                    self.quiz_questions.setdefault(a.parent or "", []).append(a)
                self.obj[a.id] = _frag(
                    {"objectType": "Activity", "id": a.id, "definition": definition}
                )
                key = (a.section, a.parent)
                shared = ca_cache.get(key)
                if shared is None:
                    grouping: list[dict[str, Any]] = [
                        {
                            "objectType": "Activity",
                            "id": f"{HOMEPAGE}/course/section.php?id={a.section}",
                            "definition": {"type": TYPE_SECTION},
                        }
                    ]
                    if a.parent:
                        grouping.append(
                            {
                                "objectType": "Activity",
                                "id": a.parent,
                                "definition": {"type": TYPE_ASSESSMENT},
                            }
                        )
                    parent = [course_ref]
                    shared = (
                        _frag({"parent": parent, "grouping": grouping, "category": cat_moodle}),
                        _frag({"parent": parent, "grouping": grouping, "category": cat_cmi5}),
                        _frag({"parent": parent, "grouping": grouping, "category": cat_moveon}),
                    )
                    ca_cache[key] = shared
                self.ca[a.id], self.ca_cmi5[a.id], self.ca_moveon[a.id] = shared
            # a course view: the object is the course itself, so (as Moodle does) no parent
            self.ca[d.course_iri] = _frag({"category": cat_moodle})
            kinds.setdefault("page", []).extend(kinds.get("resource", []))
            self.by_kind.append(kinds)
            names = tuple(k for k, _ in _SESSION_WEIGHTS if kinds.get(k))
            cum: list[float] = []
            tot = 0.0
            for k, wt in _SESSION_WEIGHTS:
                if kinds.get(k):
                    tot += wt
                    cum.append(tot)
            self.session_tables.append((names, cum))
            self.instructor.append(
                _frag(
                    {
                        "objectType": "Agent",
                        "name": d.instructor_name,
                        "account": {"homePage": HOMEPAGE, "name": d.instructor_account},
                    }
                )
            )

        # --- per-student fragments -------------------------------------------------------------
        students = univ.students
        self.actor_acc: list[orjson.Fragment] = []
        self.actor_mbox: list[orjson.Fragment] = []
        self.lang: list[str] = []
        self.ability: list[float] = []
        group_idx = {g: i for i, g in enumerate(univ.groups)}
        self.st_group: list[int] = []
        picks: list[int] = []
        status_w = {"active": 1.0, "academic_leave": 0.04, "expelled": 0.2}
        for i, s in enumerate(students):
            self.actor_acc.append(
                _frag(
                    {
                        "objectType": "Agent",
                        "name": s.full_name,
                        "account": {"homePage": HOMEPAGE, "name": s.lms_account},
                    }
                )
            )
            self.actor_mbox.append(
                _frag({"objectType": "Agent", "name": s.full_name, "mbox": "mailto:" + s.email})
            )
            self.lang.append(s.language)
            self.ability.append(rng.betavariate(5, 2.2))
            self.st_group.append(group_idx[s.group])
            w = rng.lognormvariate(0.0, 0.6) * status_w.get(s.status, 1.0)
            picks.extend([i] * int(w * 8 + rng.random()))
        if not picks:
            picks = list(range(len(students)))
        self.picks = picks
        self.group_discs = [univ.curriculum[g] for g in univ.groups]
        self.disc_days = [
            (d.period_start.toordinal(), d.period_end.toordinal()) for d in univ.disciplines
        ]
        self._active_cache: dict[tuple[int, int], list[int]] = {}
        self._reg: dict[tuple[int, int], str] = {}
        self._meeting: dict[tuple[str, int], tuple[str, str]] = {}

        # --- people who are not on the roster --------------------------------------------------
        roster = univ.student_accounts()
        unknown: list[dict[str, Any]] = [
            {
                "objectType": "Agent",
                "name": "Guest user",
                "account": {"homePage": HOMEPAGE, "name": "guest"},
            }
        ]
        seen = set(roster) | {"guest"}
        for d in univ.disciplines[:5]:
            if d.instructor_account not in seen:
                seen.add(d.instructor_account)
                unknown.append(
                    {
                        "objectType": "Agent",
                        "name": d.instructor_name,
                        "account": {"homePage": HOMEPAGE, "name": d.instructor_account},
                    }
                )
        target = len(unknown) + max(12, len(students) // 15)
        tries = 0
        while len(unknown) < target and tries < 10_000:
            tries += 1
            first, last, _male, _kz = random_person(rng)
            login = f"{transliterate(first)[:1]}.{transliterate(last)}{rng.randint(2, 40)}"
            if login in seen:
                continue
            seen.add(login)
            actor: dict[str, Any]
            if rng.random() < 0.3:
                actor = {
                    "objectType": "Agent",
                    "name": f"{first} {last}",
                    "mbox": f"mailto:{login}@university.kz",
                }
            else:
                actor = {
                    "objectType": "Agent",
                    "name": f"{first} {last}",
                    "account": {"homePage": HOMEPAGE, "name": login},
                }
            unknown.append(actor)
        self.unknown = unknown
        self.unknown_f = [_frag(a) for a in unknown]

        # --- bounded memory of earlier lines ---------------------------------------------------
        self.ring: list[tuple[bytes, str, int]] = []
        self.ring_size = 1024
        self.ring_pos = 0
        self.sample: list[tuple[bytes, str, int]] = []
        self.sample_size = 1024
        self.seen_valid = 0
        self.voided: set[str] = set()
        self.pending: list[tuple[int, int, str, int]] = []  # (due line, seq, id, student)
        self.pool: list[tuple[int, Iterator[tuple[Any, ...]]]] = []

    # --- lookups --------------------------------------------------------------------------------

    def active_disciplines(self, s_idx: int, ms: int) -> list[int]:
        g = self.st_group[s_idx]
        day = _EPOCH_ORD + (ms + _LOCAL_OFFSET_H * _MS_HOUR) // _MS_DAY
        key = (g, day)
        found = self._active_cache.get(key)
        if found is None:
            allowed = self.group_discs[g]
            found = [i for i in allowed if self.disc_days[i][0] <= day <= self.disc_days[i][1]]
            if not found:
                found = list(allowed)
            if len(self._active_cache) > 200_000:
                self._active_cache.clear()
            self._active_cache[key] = found
        return found

    def registration(self, s_idx: int, d_idx: int) -> str:
        key = (s_idx, d_idx)
        reg = self._reg.get(key)
        if reg is None:
            s = self.univ.students[s_idx]
            d = self.univ.disciplines[d_idx]
            reg = str(uuid.uuid5(_NS, f"{s.student_id}/{d.code}"))
            self._reg[key] = reg
        return reg

    def meeting(self, activity_id: str, ms: int) -> tuple[str, str]:
        week = (ms - self.start_ms) // (7 * _MS_DAY)
        key = (activity_id, week)
        m = self._meeting.get(key)
        if m is None:
            digest = hashlib.sha1(f"{activity_id}#{week}".encode()).hexdigest()
            cmid = activity_id.rsplit("=", 1)[1]
            m = (f"{digest}-{cmid}-{week + 1}", str(uuid.uuid5(_NS, f"{digest}-{week}")))
            if len(self._meeting) > 100_000:
                self._meeting.clear()
            self._meeting[key] = m
        return m

    def pick_student(self) -> int:
        picks = self.picks
        return picks[int(self.rng.random() * len(picks))]

    def pick_discipline(self, s_idx: int, ms: int) -> int:
        ds = self.active_disciplines(s_idx, ms)
        return ds[int(self.rng.random() * len(ds))]

    # --- sessions (generators of (actor, verb, object, result, context)) ------------------------

    def open_session(self) -> tuple[int, tuple[Any, ...], Iterator[tuple[Any, ...]] | None]:
        """A new learner session: (student, its first statement, the rest or None)."""
        rng = self.rng
        rand = rng.random
        picks = self.picks
        s = picks[int(rand() * len(picks))]
        ds = self.active_disciplines(s, self.now)
        d = ds[int(rand() * len(ds))]
        names, cum = self.session_tables[d]
        kind = names[bisect.bisect_right(cum, rand() * cum[-1])] if names else "course"
        actor = self.actor_mbox[s] if rand() < 0.2 else self.actor_acc[s]
        reg = self._reg.get((s, d)) or self.registration(s, d)
        lang = self.lang[s]
        acts = self.by_kind[d]
        g: Iterator[tuple[Any, ...]]
        if kind == "quiz":
            g = self.quiz_session(s, acts["quiz"], actor, reg, lang)
            return s, next(g), g
        if kind == "cmi5":
            g = self.cmi5_session(s, acts["cmi5"], actor, reg, lang)
            return s, next(g), g
        if kind == "live":
            return s, self.attended(d, acts["live"], actor, reg, lang), None
        if kind == "video":
            return s, self.video(acts["video"], actor, reg, lang), None
        if kind == "page":
            return s, self.page_view(acts["page"], actor, reg, lang), None
        return s, self.course_view(self.univ.disciplines[d], actor, reg, lang), None

    def course_view(self, disc: Discipline, actor: Any, reg: str, lang: str) -> tuple[Any, ...]:
        iri = disc.course_iri
        ctx = {
            "registration": reg,
            "contextActivities": self.ca[iri],
            "platform": PLATFORM,
            "language": lang,
            "extensions": EXT_COURSE_VIEWED,
        }
        return actor, V_VIEWED, self.obj[iri], None, ctx

    def page_view(self, pages: list[Activity], actor: Any, reg: str, lang: str) -> tuple[Any, ...]:
        a = pages[int(self.rng.random() * len(pages))]
        ctx = {
            "registration": reg,
            "contextActivities": self.ca[a.id],
            "platform": PLATFORM,
            "language": lang,
            "extensions": EXT_PAGE_VIEWED if a.kind == "page" else EXT_RESOURCE_VIEWED,
        }
        return actor, V_VIEWED, self.obj[a.id], None, ctx

    def video(self, videos: list[Activity], actor: Any, reg: str, lang: str) -> tuple[Any, ...]:
        rng = self.rng
        a = videos[int(rng.random() * len(videos))]
        length = int(a.extra["length_s"])
        watched = length * min(1.0, rng.uniform(0.1, 1.15))
        result = {"duration": iso_duration(watched, centis=True), "completion": watched >= length}
        ctx = {
            "registration": reg,
            "contextActivities": self.ca[a.id],
            "platform": PLATFORM,
            "language": lang,
            "extensions": EXT_PAGE_VIEWED,
        }
        return actor, V_EXPERIENCED, self.obj[a.id], result, ctx

    def attended(
        self, d: int, lives: list[Activity], actor: Any, reg: str, lang: str
    ) -> tuple[Any, ...]:
        rng = self.rng
        a = lives[int(rng.random() * len(lives))]
        meeting_id, session_id = self.meeting(a.id, self.now)
        minutes = int(a.extra["minutes"])
        stayed = minutes * 60 * min(1.0, rng.uniform(0.35, 1.2))
        ctx = {
            "registration": reg,
            "instructor": self.instructor[d],
            "contextActivities": self.ca[a.id],
            "platform": PLATFORM,
            "language": lang,
            "extensions": {EXT_SESSION: session_id, EXT_BBB_MEETING: meeting_id} | EXT_BBB,
        }
        result = {"duration": iso_duration(stayed), "completion": stayed >= minutes * 45}
        return actor, V_ATTENDED, self.obj[a.id], result, ctx

    def quiz_completed(
        self, s: int, quiz: Activity, n_correct: int, n: int, seconds: float
    ) -> dict[str, Any]:
        pts = int(quiz.extra["points"])
        raw, top = n_correct * pts, n * pts
        scaled = round(raw / top, 4) if top else 0.0
        return {
            "score": {"scaled": scaled, "raw": raw, "min": 0, "max": top},
            "success": scaled >= 0.5,
            "completion": True,
            "duration": iso_duration(seconds),
        }

    def quiz_session(
        self, s: int, quizzes: list[Activity], actor: Any, reg: str, lang: str
    ) -> Iterator[tuple[Any, ...]]:
        rng = self.rng
        quiz = quizzes[int(rng.random() * len(quizzes))]
        ca = self.ca[quiz.id]
        obj = self.obj[quiz.id]
        started = self.now
        yield (
            actor,
            V_ATTEMPTED,
            obj,
            None,
            {
                "registration": reg,
                "contextActivities": ca,
                "platform": PLATFORM,
                "language": lang,
                "extensions": EXT_QUIZ_STARTED,
            },
        )
        questions = self.quiz_questions.get(quiz.id, [])
        ability = self.ability[s]
        correct = 0
        ctx_answer = (
            {
                "registration": reg,
                "contextActivities": self.ca[questions[0].id],
                "platform": PLATFORM,
                "language": lang,
                "extensions": EXT_QUIZ_SUBMITTED,
            }
            if questions
            else None
        )
        for q in questions:
            ok = rng.random() < ability - float(q.extra["difficulty"])
            right = str(q.extra["correct"])
            response = right if ok else _WRONG[right][int(rng.random() * 3)]
            correct += ok
            yield (
                actor,
                V_ANSWERED,
                self.obj[q.id],
                {"response": response, "success": ok},
                ctx_answer,
            )
        seconds = (self.now - started) / 1000 + rng.uniform(20, 120)
        yield (
            actor,
            V_COMPLETED,
            obj,
            self.quiz_completed(s, quiz, correct, len(questions), seconds),
            {
                "registration": reg,
                "contextActivities": ca,
                "platform": PLATFORM,
                "language": lang,
                "extensions": EXT_QUIZ_SUBMITTED,
            },
        )

    def cmi5_session(
        self, s: int, aus: list[Activity], actor: Any, reg: str, lang: str
    ) -> Iterator[tuple[Any, ...]]:
        rng = self.rng
        au = aus[int(rng.random() * len(aus))]
        obj = self.obj[au.id]
        mastery = float(au.extra["mastery"])
        move_on = str(au.extra["move_on"])
        session = _uuid4(rng)
        ext = {EXT_SESSION: session}
        base = {"registration": reg, "platform": PLATFORM, "language": lang}
        ctx = base | {"contextActivities": self.ca_cmi5[au.id], "extensions": ext}
        ctx_moveon = base | {"contextActivities": self.ca_moveon[au.id], "extensions": ext}
        launch_ext = {
            EXT_SESSION: session,
            EXT_LAUNCHMODE: "Normal",
            EXT_LAUNCHURL: f"{HOMEPAGE}/mod/cmi5launch/au/index.html",
            EXT_MOVEON: move_on,
            EXT_MASTERY: mastery,
        }
        started = self.now
        yield actor, V_LAUNCHED, obj, None, ctx | {"extensions": launch_ext}
        yield actor, V_INITIALIZED, obj, None, ctx
        if rng.random() < 0.85:
            secs = (self.now - started) / 1000 + rng.uniform(30, 300)
            result = {"completion": True, "duration": iso_duration(secs, centis=True)}
            yield actor, V_COMPLETED, obj, result, ctx_moveon
        if move_on != "Completed" or rng.random() < 0.3:
            scaled = round(min(1.0, max(0.0, rng.gauss(self.ability[s], 0.15))), 2)
            passed = scaled >= mastery
            secs = (self.now - started) / 1000 + rng.uniform(30, 300)
            result = {
                "score": {"scaled": scaled, "raw": round(scaled * 100), "min": 0, "max": 100},
                "success": passed,
                "duration": iso_duration(secs, centis=True),
            }
            ctx_pf = ctx_moveon | {"extensions": {EXT_SESSION: session, EXT_MASTERY: mastery}}
            yield actor, (V_PASSED if passed else V_FAILED), obj, result, ctx_pf
        secs = (self.now - started) / 1000 + rng.uniform(5, 60)
        end_verb = V_TERMINATED if rng.random() < 0.94 else V_ABANDONED
        yield actor, end_verb, obj, {"duration": iso_duration(secs, centis=True)}, ctx

    # --- one-off statements ---------------------------------------------------------------------

    def oneoff(
        self,
        s: int,
        actor: Any,
        at_ms: int,
        scored: bool = False,
        who: dict[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        """A single self-contained statement for learner ``s`` (or ``who``, s = -1) at ``at_ms``."""
        rng = self.rng
        d = self.pick_discipline(s, at_ms) if s >= 0 else rng.randrange(len(self.by_kind))
        acts = self.by_kind[d]
        if s >= 0:
            reg = self.registration(s, d)
        else:  # someone off the roster: still one registration per person and course
            assert who is not None
            ifi = who.get("mbox") or who["account"]["name"]
            reg = str(uuid.uuid5(_NS, f"{ifi}/{self.univ.disciplines[d].code}"))
        lang = self.lang[s] if s >= 0 else "ru-RU"
        r = rng.random()
        if (scored or r < 0.3) and acts.get("quiz"):
            quiz = acts["quiz"][int(rng.random() * len(acts["quiz"]))]
            n = len(self.quiz_questions.get(quiz.id, ())) or 5
            result = self.quiz_completed(s, quiz, rng.randint(0, n), n, rng.uniform(300, 2400))
            ctx = {
                "registration": reg,
                "contextActivities": self.ca[quiz.id],
                "platform": PLATFORM,
                "language": lang,
                "extensions": EXT_QUIZ_SUBMITTED,
            }
            return actor, V_COMPLETED, self.obj[quiz.id], result, ctx
        if r < 0.4 and acts.get("video"):
            return self.video(acts["video"], actor, reg, lang)
        if r < 0.85 and acts.get("page"):
            return self.page_view(acts["page"], actor, reg, lang)
        return self.course_view(self.univ.disciplines[d], actor, reg, lang)

    # --- assembling ----------------------------------------------------------------------------

    def assemble(self, sid: Any, item: tuple[Any, ...], ts_ms: int, stored_ms: int) -> dict:
        actor, verb, obj, result, ctx = item
        stmt: dict[str, Any] = {"id": sid, "actor": actor, "verb": verb, "object": obj}
        if result is not None:
            stmt["result"] = result
        stmt["context"] = ctx
        stmt["timestamp"] = self.fmt(ts_ms)
        if self.with_stored:
            stmt["stored"] = self.fmt(stored_ms)
        stmt["version"] = XAPI_VERSION
        return stmt

    def delay_ms(self) -> int:
        """Milliseconds between timestamp and stored: 80% sent at once (~1.5 s on average),
        20% by Moodle's background task (20 s to 8 min)."""
        r = self.rng.random()
        if r < 0.8:
            return int(-1500.0 * math.log(1.0 - r / 0.8))
        return 20_000 + int((r - 0.8) * 2_300_000)

    def remember(self, line: bytes, sid: str, s: int) -> None:
        """Keep a line for later duplicates and voids: a ring of the most recent ones and a
        uniform sample of every 16th (reservoir sampling), both of fixed size."""
        entry = (line, sid, s)
        ring = self.ring
        if len(ring) < self.ring_size:
            ring.append(entry)
        else:
            ring[self.ring_pos] = entry
            self.ring_pos = (self.ring_pos + 1) % self.ring_size
        self.seen_valid += 1
        if self.seen_valid & 15:
            return
        n = self.seen_valid >> 4
        if len(self.sample) < self.sample_size:
            self.sample.append(entry)
        else:
            j = int(self.rng.random() * n)
            if j < self.sample_size:
                self.sample[j] = entry

    def earlier(self) -> tuple[bytes, str, int] | None:
        rng = self.rng
        src = self.ring if (rng.random() < 0.75 or not self.sample) else self.sample
        if not src:
            return None
        return src[int(rng.random() * len(src))]

    # --- the main loop -------------------------------------------------------------------------

    def run(self) -> Iterator[GeneratedLine]:
        rng = self.rng
        rand = rng.random
        getrandbits = rng.getrandbits
        dumps = orjson.dumps
        log = math.log
        count = self.count
        start_ms = self.start_ms
        with_stored = self.with_stored
        thresholds = self.thresholds
        trouble_total = self.trouble_total
        pool = self.pool
        max_sessions = self.max_sessions
        pending = self.pending
        remember = self.remember
        open_session = self.open_session
        ring = self.ring
        ring_size = self.ring_size
        hours_get = self.fmt._hours.get
        hour_prefix = self.fmt._prefix
        min_suffix = _MIN_SUFFIX
        rem_suffix = _REM_SUFFIX
        clock = self.clock
        c_cum, c_w, c_edges, c_scale = clock._cum, clock._w, clock._edges, clock._scale
        c_last = len(c_w) - 1
        c_end = self.end_ms - 1
        b = 0
        new_line = tuple.__new__
        for i in range(count):
            # stored time of line i (see _Clock)
            x = (i + rand()) * c_scale
            while b < c_last and c_cum[b + 1] <= x:
                b += 1
            a = c_edges[b]
            now = a + int((x - c_cum[b]) / c_w[b] * (c_edges[b + 1] - a))
            if now > c_end:
                now = c_end
            self.now = now
            kind = "valid"
            r = rand()
            if r < trouble_total:
                for limit, name in thresholds:
                    if r < limit:
                        kind = name
                        break
            if pending and (len(pending) >= count - i or (kind == "valid" and pending[0][0] <= i)):
                # the statement that a voiding statement emitted earlier referred to
                _due, _seq, sid, s = heapq.heappop(pending)
                item = self.oneoff(s, self.actor_acc[s], now)
                stmt = self.assemble(sid, item, max(start_ms, now - self.delay_ms()), now)
                line = _dumps(stmt)
                remember(line, sid, s)
                yield GeneratedLine(line, "valid", sid)
                continue
            if kind != "valid":
                out = self.trouble(kind, i, now)
                if out is not None:
                    yield out
                    continue
            # a valid statement: the next step of some learner's session
            while True:
                if pool and (len(pool) >= max_sessions or rand() >= 0.3):
                    j = int(rand() * len(pool))
                    s_idx, g = pool[j]
                    step = next(g, None)
                    if step is None:
                        pool[j] = pool[-1]
                        pool.pop()
                        continue
                    item = step
                    break
                s_idx, item, g2 = open_session()
                if g2 is not None:
                    pool.append((s_idx, g2))
                break
            # uuid4 (as _uuid4, inlined)
            n = (getrandbits(128) & 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF) | _UUID4_BITS
            h = f"{n:032x}"
            sid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            # delay between timestamp and stored (as delay_ms, inlined)
            r = rand()
            if r < 0.8:
                ts = now - int(-1500.0 * log(1.0 - r / 0.8))
            else:
                ts = now - 20_000 - int((r - 0.8) * 2_300_000)
            actor, verb, obj, result, ctx = item
            if result is None:
                stmt = {"id": sid, "actor": actor, "verb": verb, "object": obj, "context": ctx}
            else:
                stmt = {
                    "id": sid,
                    "actor": actor,
                    "verb": verb,
                    "object": obj,
                    "result": result,
                    "context": ctx,
                }
            # timestamp and stored (as _TimeFormatter.__call__, inlined)
            if ts < start_ms:
                ts = start_ms
            hour, rem = divmod(ts, _MS_HOUR)
            prefix = hours_get(hour) or hour_prefix(hour)
            minute, rem = divmod(rem, 60_000)
            stmt["timestamp"] = prefix + min_suffix[minute] + rem_suffix[rem]
            if with_stored:
                hour, rem = divmod(now, _MS_HOUR)
                prefix = hours_get(hour) or hour_prefix(hour)
                minute, rem = divmod(rem, 60_000)
                stmt["stored"] = prefix + min_suffix[minute] + rem_suffix[rem]
            stmt["version"] = XAPI_VERSION
            line = bytes(memoryview(dumps(stmt)))  # trimmed, as _dumps()
            if len(ring) == ring_size and (self.seen_valid + 1) & 15:
                # fast path of remember(): overwrite the oldest ring entry
                ring[self.ring_pos] = (line, sid, s_idx)
                self.ring_pos = (self.ring_pos + 1) % ring_size
                self.seen_valid += 1
            else:
                remember(line, sid, s_idx)
            yield new_line(GeneratedLine, (line, "valid", sid, None))

    # --- trouble --------------------------------------------------------------------------------

    def trouble(self, kind: str, i: int, now: int) -> GeneratedLine | None:
        """A trouble line of ``kind``, or None when it cannot be made here (then: a valid one)."""
        rng = self.rng
        if kind == "exact_duplicate":
            prev = self.earlier()
            if prev is None:
                return None
            return GeneratedLine(prev[0], kind, prev[1])
        if kind == "conflicting_duplicate":
            prev = self.earlier()
            if prev is None:
                return None
            return GeneratedLine(self.conflicting(prev[0], now), kind, prev[1])
        if kind == "voiding":
            return self.voiding(i, now)
        if kind == "late_arrival":
            room = now - self.start_ms
            if room <= _LATE_MIN_MS:
                return None
            hi = min(_LATE_MAX_MS, room)
            late = int(math.exp(rng.uniform(math.log(_LATE_MIN_MS), math.log(hi))))
            late = max(_LATE_MIN_MS + 1, min(late, room))
            s = self.pick_student()
            at = now - late
            item = self.oneoff(s, self.actor_acc[s], at, scored=rng.random() < 0.4)
            sid = _uuid4(rng)
            line = _dumps(self.assemble(sid, item, at, now))
            self.remember(line, sid, s)
            return GeneratedLine(line, kind, sid)
        if kind == "unknown_learner":
            k = int(rng.random() * len(self.unknown))
            item = self.oneoff(-1, self.unknown_f[k], now, who=self.unknown[k])
            sid = _uuid4(rng)
            stmt = self.assemble(sid, item, max(self.start_ms, now - self.delay_ms()), now)
            return GeneratedLine(_dumps(stmt), kind, sid)
        if kind == "invalid":
            return self.invalid(now)
        if kind == "malformed_json":
            return self.malformed(now)
        raise ValueError(kind)  # pragma: no cover

    def conflicting(self, line: bytes, now: int) -> bytes:
        """Same id as ``line``, different body (an LRS answers 409 Conflict)."""
        rng = self.rng
        d = orjson.loads(line)
        result = d.get("result")
        score = result.get("score") if isinstance(result, dict) else None
        if isinstance(score, dict) and "raw" in score and score.get("max"):
            lo, hi = int(score.get("min", 0)), int(score["max"])
            raw = int(score["raw"])
            choices = [v for v in range(lo, hi + 1) if v != raw] or [raw]
            new_raw = rng.choice(choices)
            score["raw"] = new_raw
            score["scaled"] = round((new_raw - lo) / (hi - lo), 4) if hi > lo else 0.0
            if "success" in result:
                result["success"] = score["scaled"] >= 0.5
        elif isinstance(result, dict) and "duration" in result:
            result["duration"] = iso_duration(rng.uniform(60, 3600))
        elif d.get("verb", {}).get("id") == VIEWED_IRI:
            d["verb"] = _verb_dict(ADL + "experienced")
            d["result"] = {"duration": iso_duration(rng.uniform(30, 1800))}
        else:
            d["result"] = {"completion": True, "duration": iso_duration(rng.uniform(30, 1800))}
        if self.with_stored:
            d["stored"] = self.fmt(now)
        return _dumps(d)

    def voiding(self, i: int, now: int) -> GeneratedLine | None:
        rng = self.rng
        target: tuple[str, int] | None = None
        remaining_after = self.count - i - 1
        forward_ok = remaining_after - len(self.pending) >= 2 and self.univ.students
        if forward_ok and rng.random() < 0.3:
            sid_t = _uuid4(rng)
            s = self.pick_student()
            due = i + 1 + rng.randrange(min(2000, remaining_after - len(self.pending) - 1))
            heapq.heappush(self.pending, (due, i, sid_t, s))
            target = (sid_t, s)
        else:
            for _ in range(8):
                prev = self.earlier()
                if prev is None:
                    break
                if prev[1] not in self.voided and prev[2] >= 0:
                    target = (prev[1], prev[2])
                    break
        if target is None:
            return None
        sid_t, s = target
        self.voided.add(sid_t)
        sid = _uuid4(rng)
        stmt: dict[str, Any] = {
            "id": sid,
            "actor": self.actor_acc[s],
            "verb": V_VOIDED,
            "object": {"objectType": "StatementRef", "id": sid_t},
            "timestamp": self.fmt(max(self.start_ms, now - self.delay_ms())),
        }
        if self.with_stored:
            stmt["stored"] = self.fmt(now)
        stmt["version"] = XAPI_VERSION
        return GeneratedLine(_dumps(stmt), "voiding", sid)

    def _fresh(self, now: int, scored: bool = False) -> tuple[dict[str, Any], int]:
        s = self.pick_student()
        item = self.oneoff(s, self.actor_acc[s], now, scored=scored)
        sid = _uuid4(self.rng)
        stmt = self.assemble(sid, item, max(self.start_ms, now - self.delay_ms()), now)
        # a private deep copy: the fragments inside are shared with other statements
        return orjson.loads(orjson.dumps(stmt)), s

    def invalid(self, now: int) -> GeneratedLine:
        rng = self.rng
        variant = rng.choice(_INVALID_VARIANTS)
        needs_score = variant in ("scaled_out_of_range", "raw_above_max", "success_as_string")
        d, s = self._fresh(now, scored=needs_score or variant == "bad_duration")
        student = self.univ.students[s]
        result = d.setdefault("result", {})
        if variant == "missing_verb":
            del d["verb"]
        elif variant == "actor_two_ifis":
            d["actor"] = {
                "objectType": "Agent",
                "name": student.full_name,
                "mbox": "mailto:" + student.email,
                "account": {"homePage": HOMEPAGE, "name": student.lms_account},
            }
        elif variant == "actor_no_ifi":
            d["actor"] = {"objectType": "Agent", "name": student.full_name}
        elif variant == "scaled_out_of_range":
            result["score"] = {"scaled": 1.5, "raw": 15, "min": 0, "max": 10}
        elif variant == "raw_above_max":
            result["score"] = {"raw": 12, "min": 0, "max": 10}
        elif variant == "mbox_without_mailto":
            d["actor"] = {"objectType": "Agent", "name": student.full_name, "mbox": student.email}
        elif variant == "non_uuid_id":
            d["id"] = f"moodle-{rng.randrange(10**6, 10**7)}"
        elif variant == "bad_timestamp":
            ts = d["timestamp"]  # 2026-10-03T09:15:27.123Z -> 03.10.2026 09:15:27
            d["timestamp"] = f"{ts[8:10]}.{ts[5:7]}.{ts[0:4]} {ts[11:19]}"
        elif variant == "verb_id_not_iri":
            d["verb"]["id"] = d["verb"]["display"]["en-US"]
        elif variant == "object_without_id":
            del d["object"]["id"]
        elif variant == "bad_language_tag":
            # POSIX locale names, not RFC 5646 tags (a bare "kazakh" would be well-formed)
            names = d["object"]["definition"]["name"]
            d["object"]["definition"]["name"] = {k.replace("-", "_"): v for k, v in names.items()}
        elif variant == "bad_registration":
            d["context"]["registration"] = f"reg-{student.student_id}"
        elif variant == "success_as_string":
            result["success"] = "true"
        elif variant == "bad_duration":
            result["duration"] = f"{rng.randint(2, 90)} minutes"
        elif variant == "unsupported_version":
            d["version"] = "3.0.0"
        else:  # unknown_property
            d["grade"] = rng.randint(50, 100)
        if not result:
            del d["result"]
        sid = d.get("id")
        return GeneratedLine(_dumps(d), "invalid", sid if isinstance(sid, str) else None, variant)

    def malformed(self, now: int) -> GeneratedLine:
        rng = self.rng
        d, _s = self._fresh(now)
        line = _dumps(d)
        variant = rng.choice(_MALFORMED_VARIANTS)
        if variant == "truncated":
            broken = line[: rng.randrange(1, len(line) - 1)]
        elif variant == "trailing_comma":
            broken = line[:-1] + b",}"
        elif variant == "single_quotes":
            broken = line.replace(b'"id":', b"'id':", 1)
        else:  # concatenated: two objects on one line
            broken = line + line
        return GeneratedLine(broken, "malformed_json", None, variant)


def generate_statements(
    univ: University,
    count: int,
    seed: int,
    trouble: TroubleShares | None = None,
    start: datetime = datetime(2026, 9, 1, tzinfo=UTC),
    end: datetime = datetime(2027, 1, 1, tzinfo=UTC),
    with_stored: bool = True,
) -> Iterator[GeneratedLine]:
    """Exactly ``count`` NDJSON lines (deterministic for the same arguments).

    Naive datetimes are taken as UTC. ``stored`` (when ``with_stored``) never decreases over the
    stream except on exact duplicates (byte-identical copies of earlier lines); every ``stored``
    and every ``timestamp`` is in ``[start, end)``.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if not univ.students or not univ.disciplines:
        raise ValueError("the university has no students or no disciplines")
    gen = _Generator(univ, count, seed, trouble or TroubleShares(), start, end, with_stored)
    return gen.run()
