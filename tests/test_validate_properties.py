"""Property-based tests of the xAPI validator: generated valid statements are accepted, and a
single mutation that breaks one rule is rejected with the expected code and path."""

from __future__ import annotations

import copy
import string
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.xapi.validate import REASONS, validate, validate_bytes

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,  # nothing written into the project
    suppress_health_check=[HealthCheck.too_slow],
)

Json = dict[str, Any]

# -- building blocks ----------------------------------------------------------------------------

_lower = st.text(string.ascii_lowercase, min_size=1, max_size=8)
_word = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
_text = st.text(max_size=30).filter(lambda s: "\x00" not in s)

iris = st.builds(
    lambda scheme, host, parts: f"{scheme}://{host}.example.kz/" + "/".join(parts),
    st.sampled_from(["http", "https"]),
    _lower,
    st.lists(_word, max_size=3),
) | st.builds(lambda nid, nss: f"urn:{nid}:{nss}", _lower, _word)

uuids = st.uuids().map(str)

_region = st.sampled_from(["", "-US", "-KZ", "-GB", "-419", "-RU"])
lang_tags = st.one_of(
    st.sampled_from(
        [
            "en",
            "en-US",
            "kk-KZ",
            "ru-RU",
            "zh-Hant-TW",
            "sl-rozaj-biske",
            "de-CH-1901",
            "x-private",
            "i-klingon",
            "tlh",
            "es-419",
            "sr-Latn-RS",
            "en-a-bbb-x-a-ccc",
        ]
    ),
    st.builds(
        lambda lang, region: lang + region,
        st.text("abcdefghijklmnop", min_size=2, max_size=3),
        _region,
    ),
)
lang_maps = st.dictionaries(lang_tags, _text, min_size=1, max_size=3)
extensions = st.dictionaries(
    iris,
    st.one_of(
        st.none(),
        st.integers(-(2**53), 2**53),  # orjson stops at 64 bits
        st.floats(allow_nan=False, allow_infinity=False),
        _text,
        st.dictionaries(_word, _text, max_size=2),
    ),
    max_size=3,
)
timestamps = st.builds(
    lambda dt, frac, tz: dt.isoformat(timespec="seconds") + frac + tz,
    st.datetimes(),
    st.sampled_from(["", ".1", ".123", ".123456"]),
    st.sampled_from(["Z", "+00:00", "+05:00", "-03:30", "+0600", "+06", ""]),
)
durations = st.builds(
    lambda h, m, s: f"PT{h}H{m}M{s}S", st.integers(0, 99), st.integers(0, 59), st.integers(0, 59)
) | st.sampled_from(["P3Y1M29DT4H35M59.14S", "P4W", "PT0S", "P1D", "PT16559.14S"])

mboxes = st.builds(lambda local, host: f"mailto:{local}@{host}.kz", _word, _lower)
sha1s = st.text("0123456789abcdef", min_size=40, max_size=40)
accounts = st.fixed_dictionaries({"homePage": iris, "name": st.text(min_size=1, max_size=20)})
IFI_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "mbox": mboxes,
    "mbox_sha1sum": sha1s,
    "openid": iris,
    "account": accounts,
}


@st.composite
def agents(draw: st.DrawFn, object_type: bool | None = None) -> Json:
    ifi = draw(st.sampled_from(sorted(IFI_STRATEGIES)))
    agent: Json = {ifi: draw(IFI_STRATEGIES[ifi])}
    if object_type if object_type is not None else draw(st.booleans()):
        agent["objectType"] = "Agent"
    if draw(st.booleans()):
        agent["name"] = draw(_text)
    return agent


@st.composite
def groups(draw: st.DrawFn) -> Json:
    group: Json = {"objectType": "Group"}
    members = st.lists(agents(), min_size=1, max_size=3)
    if draw(st.booleans()):  # identified
        ifi = draw(st.sampled_from(sorted(IFI_STRATEGIES)))
        group[ifi] = draw(IFI_STRATEGIES[ifi])
        if draw(st.booleans()):
            group["member"] = draw(members)
    else:
        group["member"] = draw(members)
    if draw(st.booleans()):
        group["name"] = draw(_text)
    return group


actors = st.one_of(agents(), groups())
verbs = st.builds(
    lambda vid, display: {"id": vid, **({"display": display} if display else {})},
    iris,
    st.none() | lang_maps,
)

_COMPONENT_KEYS = {
    "choice": ("choices",),
    "sequencing": ("choices",),
    "likert": ("scale",),
    "matching": ("source", "target"),
    "performance": ("steps",),
    "true-false": (),
    "fill-in": (),
    "long-fill-in": (),
    "numeric": (),
    "other": (),
}


@st.composite
def components(draw: st.DrawFn) -> list[Json]:
    ids = draw(st.lists(_word, min_size=1, max_size=4, unique=True))
    return [
        {"id": i, **({"description": draw(lang_maps)} if draw(st.booleans()) else {})} for i in ids
    ]


@st.composite
def definitions(draw: st.DrawFn) -> Json:
    d: Json = {}
    for key, strategy in (
        ("name", lang_maps),
        ("description", lang_maps),
        ("type", iris),
        ("moreInfo", iris),
        ("extensions", extensions),
    ):
        if draw(st.booleans()):
            d[key] = draw(strategy)
    if draw(st.booleans()):
        itype = draw(st.sampled_from(sorted(_COMPONENT_KEYS)))
        d["interactionType"] = itype
        if draw(st.booleans()):
            d["correctResponsesPattern"] = draw(st.lists(_text, max_size=3))
        for key in _COMPONENT_KEYS[itype]:
            d[key] = draw(components())
    return d


@st.composite
def activities(draw: st.DrawFn, object_type: bool | None = None) -> Json:
    a: Json = {"id": draw(iris)}
    if object_type if object_type is not None else draw(st.booleans()):
        a["objectType"] = "Activity"
    if draw(st.booleans()):
        a["definition"] = draw(definitions())
    return a


@st.composite
def scores(draw: st.DrawFn) -> Json:
    score: Json = {}
    if draw(st.booleans()):
        score["scaled"] = draw(st.floats(-1, 1))
    if draw(st.booleans()):
        lo = draw(st.integers(-1000, 1000))
        hi = lo + draw(st.integers(1, 1000))
        score["min"], score["max"] = lo, hi
        if draw(st.booleans()):
            score["raw"] = draw(st.integers(lo, hi))
    elif draw(st.booleans()):
        score["raw"] = draw(st.floats(allow_nan=False, allow_infinity=False))
    return score


@st.composite
def results(draw: st.DrawFn) -> Json:
    r: Json = {}
    for key, strategy in (
        ("score", scores()),
        ("success", st.booleans()),
        ("completion", st.booleans()),
        ("response", _text),
        ("duration", durations),
        ("extensions", extensions),
    ):
        if draw(st.booleans()):
            r[key] = draw(strategy)
    return r


@st.composite
def contexts(draw: st.DrawFn, activity_object: bool, v2: bool) -> Json:
    c: Json = {}
    if draw(st.booleans()):
        c["registration"] = draw(uuids)
    if draw(st.booleans()):
        c["instructor"] = draw(actors)
    if draw(st.booleans()):
        c["team"] = draw(groups())
    if draw(st.booleans()):
        c["contextActivities"] = {
            key: draw(st.one_of(activities(), st.lists(activities(), max_size=2)))
            for key in draw(st.sets(st.sampled_from(["parent", "grouping", "category", "other"])))
        }
    if activity_object and draw(st.booleans()):
        c["revision"] = draw(_text)
    if activity_object and draw(st.booleans()):
        c["platform"] = draw(_text)
    if draw(st.booleans()):
        c["language"] = draw(lang_tags)
    if draw(st.booleans()):
        c["statement"] = {"objectType": "StatementRef", "id": draw(uuids)}
    if draw(st.booleans()):
        c["extensions"] = draw(extensions)
    if v2 and draw(st.booleans()):
        c["contextAgents"] = [
            {
                "objectType": "contextAgent",
                "agent": draw(agents()),
                **(
                    {"relevantTypes": draw(st.lists(iris, min_size=1, max_size=2))}
                    if draw(st.booleans())
                    else {}
                ),
            }
        ]
    if v2 and draw(st.booleans()):
        c["contextGroups"] = [
            {
                "objectType": "contextGroup",
                "group": draw(groups()),
                **(
                    {"relevantTypes": draw(st.lists(iris, min_size=1, max_size=2))}
                    if draw(st.booleans())
                    else {}
                ),
            }
        ]
    return c


@st.composite
def statements(draw: st.DrawFn, v2: bool = False, sub: bool = False) -> Json:
    kinds = ["activity", "agent", "group", "statementref"] + ([] if sub else ["substatement"])
    kind = draw(st.sampled_from(kinds))
    obj: Json
    if kind == "activity":
        obj = draw(activities())
    elif kind == "agent":
        obj = draw(agents(object_type=True))
    elif kind == "group":
        obj = draw(groups())
    elif kind == "statementref":
        obj = {"objectType": "StatementRef", "id": draw(uuids)}
    else:
        obj = {"objectType": "SubStatement", **draw(statements(v2=v2, sub=True))}
    s: Json = {"actor": draw(actors), "verb": draw(verbs), "object": obj}
    if draw(st.booleans()):
        s["result"] = draw(results())
    if draw(st.booleans()):
        s["context"] = draw(contexts(kind == "activity", v2))
    if draw(st.booleans()):
        s["timestamp"] = draw(timestamps)
    if not sub:
        if draw(st.booleans()):
            s["id"] = draw(uuids)
        if draw(st.booleans()):
            s["stored"] = draw(timestamps)
        if draw(st.booleans()):
            s["version"] = "2.0.0" if v2 else draw(st.sampled_from(["1.0.0", "1.0.3", "1.0"]))
    return s


def pairs(statement: Json, version: str = "1.0.3") -> list[tuple[str, str]]:
    return [(p.code, p.path) for p in validate(statement, version)]


# -- generated valid statements are accepted ------------------------------------------------


@SETTINGS
@given(statements())
def test_generated_1_0_3_statements_are_valid(s: Json) -> None:
    assert pairs(s) == []
    assert validate_bytes(orjson.dumps(s)) == []


@SETTINGS
@given(statements(v2=True))
def test_generated_2_0_0_statements_are_valid(s: Json) -> None:
    assert pairs(s, "2.0.0") == []


# -- one broken rule, one problem -------------------------------------------------------------


def _with_result(s: Json) -> Json:
    s = copy.deepcopy(s)
    s.setdefault("result", {})
    return s


@SETTINGS
@given(
    statements(), st.floats(1.0, 1e9, exclude_min=True) | st.floats(-1e9, -1.0, exclude_max=True)
)
def test_scaled_outside_range_is_rejected(s: Json, scaled: float) -> None:
    s = _with_result(s)
    s["result"]["score"] = {**s["result"].get("score", {}), "scaled": scaled}
    assert pairs(s) == [("score-scaled-range", "$.result.score.scaled")]


@SETTINGS
@given(statements(), st.integers(1, 1000))
def test_raw_above_max_is_rejected(s: Json, over: int) -> None:
    s = _with_result(s)
    s["result"]["score"] = {"min": 0, "max": 10, "raw": 10 + over}
    assert pairs(s) == [("score-raw-out-of-range", "$.result.score.raw")]


@SETTINGS
@given(statements(), st.sampled_from(["true", "false", 1, 0, "yes", [], {}]))
def test_non_boolean_success_is_rejected(s: Json, value: Any) -> None:
    s = _with_result(s)
    s["result"]["success"] = value
    assert pairs(s) == [("wrong-type", "$.result.success")]


@SETTINGS
@given(statements(), agents(), st.data())
def test_extra_ifi_on_an_agent_is_rejected(s: Json, agent: Json, data: st.DataObject) -> None:
    present = next(k for k in IFI_STRATEGIES if k in agent)
    extra = data.draw(st.sampled_from([k for k in sorted(IFI_STRATEGIES) if k != present]))
    agent[extra] = data.draw(IFI_STRATEGIES[extra])
    s = {**s, "actor": agent}
    assert pairs(s) == [("agent-ifi-count", "$.actor")]


@SETTINGS
@given(
    statements(),
    st.sampled_from(
        [
            "should fail",
            "2015-01-01",
            "01/011/2015",
            "2008-09-15T15:53:00.601-00:00",
            "2008-13-01T00:00:00Z",
            "2023-02-29T10:00:00Z",
            "2023-01-01T24:00:00Z",
        ]
    ),
)
def test_bad_timestamp_is_rejected(s: Json, value: str) -> None:
    assert pairs({**s, "timestamp": value}) == [("bad-timestamp", "$.timestamp")]


@SETTINGS
@given(statements(), uuids, st.sampled_from(["x", "-", "g", ""]))
def test_bad_uuid_is_rejected(s: Json, good: str, junk: str) -> None:
    assert pairs({**s, "id": good[:-1] + junk}) == [("bad-uuid", "$.id")]


@SETTINGS
@given(statements(), st.text(string.ascii_letters + " ", min_size=1, max_size=10))
def test_verb_id_without_scheme_is_rejected(s: Json, value: str) -> None:
    s = {**s, "verb": {**s["verb"], "id": value}}
    assert pairs(s) == [("bad-iri", "$.verb.id")]


@SETTINGS
@given(
    statements(),
    st.sampled_from(["en_US", "en-", "-en", "a", "en--US", "123", "en-US-x", "abcdefghi", "en US"]),
)
def test_bad_language_tag_is_rejected(s: Json, tag: str) -> None:
    s = {**s, "verb": {"id": s["verb"]["id"], "display": {tag: "did"}}}
    problems = pairs(s)
    assert [code for code, _ in problems] == ["bad-language-tag"]
    assert problems[0][1].startswith("$.verb.display")


@SETTINGS
@given(statements(), st.sampled_from(["actor", "verb", "object"]))
def test_missing_required_property_is_rejected(s: Json, key: str) -> None:
    s = {k: v for k, v in s.items() if k != key}
    assert pairs(s) == [(f"missing-{key}", f"$.{key}")]


@SETTINGS
@given(statements(), st.sampled_from(["Actor", "extra", "contextAgents", "objectType"]))
def test_unknown_top_level_property_is_rejected(s: Json, key: str) -> None:
    assert pairs({**s, key: "x"}) == [("unknown-property", f"$.{key}")]


@SETTINGS
@given(statements())
def test_2_0_context_agents_are_unknown_to_1_0_3(s: Json) -> None:
    s = {k: v for k, v in s.items() if k != "version"}
    context = s.get("context", {})
    s["context"] = {
        **context,
        "contextAgents": [{"objectType": "contextAgent", "agent": {"mbox": "mailto:a@b.kz"}}],
    }
    assert pairs(s, "2.0.0") == []
    assert pairs(s, "1.0.3") == [("unknown-property", "$.context.contextAgents")]


@SETTINGS
@given(statements())
def test_every_reported_code_is_documented(s: Json) -> None:
    broken = {**s, "timestamp": 5, "verb": {"id": "no scheme", "display": {"??": 1}}}
    problems = validate(broken)
    assert problems
    assert {p.code for p in problems} <= set(REASONS)


# -- robustness: any JSON, anywhere, yields problems, never an exception ------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | _text,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "objectType", "mbox", "member", "x"]) | _text,
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _nodes(value: Any, trail: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every (container, key) position inside a parsed JSON value."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found.append((*trail, k))
            found.extend(_nodes(v, (*trail, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.append((*trail, i))
            found.extend(_nodes(v, (*trail, i)))
    return found


@SETTINGS
@given(statements(v2=True), st.data(), json_values)
def test_any_json_anywhere_is_judged_without_raising(
    s: Json, data: st.DataObject, junk: Any
) -> None:
    where = data.draw(st.sampled_from(_nodes(s)))
    s = copy.deepcopy(s)
    node: Any = s
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = junk
    for version in ("1.0.3", "2.0.0"):
        problems = validate(s, version)
        assert {p.code for p in problems} <= set(REASONS)
        assert all(p.path.startswith("$") for p in problems)
    assert validate(junk) != []  # a bare value is never a statement
