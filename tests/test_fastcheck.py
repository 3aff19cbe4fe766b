"""The validator's fast path (``pipelines.xapi.fastcheck.accepts``) is sound: whatever it accepts,
the full validator finds valid under both versions' rules. Checked on generated statements and
random mutations of them, on byte-level JSON traps, on every ADL conformance case and on every
statement of the real corpora. And it is used: it accepts the everyday statements our generator
and Moodle send, so the speed it brings is real.

The full validator is called on parsed statements here (``validate``), which never takes the
fast path, so the two are compared, not one with itself.
"""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.xapi.fastcheck import accepts
from pipelines.xapi.validate import validate, validate_bytes, validate_detailed_bytes
from tests.conftest import corpus
from tests.test_validate_properties import statements

SETTINGS = settings(max_examples=400, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

Json = dict[str, Any]


def dumps(s: Any) -> bytes:
    """JSON bytes of ``s`` (the standard library's: it writes integers of any size)."""
    return json.dumps(s).encode()


def full_verdicts(raw: bytes) -> list[list[tuple[str, str]]]:
    """The full validator's problems under 1.0.3 and 2.0.0 rules ([] twice: valid)."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [[("malformed-json", "$")]] * 2
    return [[(p.code, p.path) for p in validate(parsed, v)] for v in ("1.0.3", "2.0.0")]


def assert_sound(raw: bytes) -> bool:
    """When the fast path accepts ``raw``, the full validator must too; returns the verdict."""
    ok = accepts(raw)
    if ok:
        assert full_verdicts(raw) == [[], []], raw[:300]
    return ok


# -- generated statements and their mutations -------------------------------------------------

# Values that break one rule or another wherever they land.
NASTY: list[Any] = [
    None, "", " ", "x", "en_US", "urn:x", "http://a b", "mailto:nobody", "mailto:a@b",
    "P1Y", "PT", "2023-02-29T10:00:00Z", "2024-02-29T10:00:00Z", "2008-09-15T15:53:00-00:00",
    "2008-09-15T15:53:00+24:00", "20080915T155300Z", "2008-09-15T15:53:00.601+02:00",
    "2008-09-15", "c090bca4-a666-4efd-8eea-e7af16ae319c", "C090BCA4A6664EFD8EEAE7AF16AE319C",
    "0" * 40, "g" * 40, 0, -1, 1, 2, -2, 1.5, 2**63, 10**30, True, False, [], {}, [{}],
    {"id": "urn:x"}, {"en-US": 1}, {"xx-": "a"}, "Agent", "Group", "Activity", "StatementRef",
    "SubStatement", "http://adlnet.gov/expapi/verbs/voided", "choice", "likert", "bogus",
]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    for p in path[:-1]:
        root = root[p]
    return root


@st.composite
def mutated(draw: st.DrawFn) -> Json:
    """A generated statement with one to three random edits: a value replaced, a property
    removed, an unknown one added, or a value's JSON type changed."""
    s = copy.deepcopy(draw(statements(v2=draw(st.booleans()))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(s) if p]))
        parent = _parent(s, path)
        action = draw(st.sampled_from(["replace", "remove", "add", "retype"]))
        key = path[-1]
        if action == "replace":
            parent[key] = draw(st.sampled_from(NASTY))
        elif action == "remove":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["bogus", "objectType", "member", "team", "id",
                                         "attachments", "contextAgents", "en_US"]))] = (
                draw(st.sampled_from(NASTY)))
        elif action == "retype":
            value = parent[key]
            parent[key] = [value] if not isinstance(value, list) else (value[0] if value else {})
    return s


@SETTINGS
@given(statements(v2=False))
def test_generated_valid_statements_accepted_only_when_valid(s: Json) -> None:
    assert_sound(dumps(s))


@SETTINGS
@given(mutated())
def test_mutated_statements_never_accepted_when_invalid(s: Json) -> None:
    assert_sound(dumps(s))


# -- JSON traps: the fast path decodes with msgspec, the validator with orjson -------------------

BASE = (b'{"actor":{"mbox":"mailto:a@b.kz"},"verb":{"id":"http://x.kz/v"},'
        b'"object":{"id":"http://x.kz/a"%s}}')


@pytest.mark.parametrize("tail", [
    b',"definition":{"extensions":{"http://x.kz/e":"\xff"}}',  # invalid UTF-8 in a free value
    b',"definition":{"extensions":{"http://x.kz/e":1e999}}',  # infinity
    b',"definition":{"extensions":{"http://x.kz/e":"\\ud800"}}',  # a lone surrogate
    b',"definition":{"extensions":{"http://x.kz/e":[1,]}}',
    b',"definition":{"extensions":{"http://x.kz/e":NaN}}',
    b',"definition":{"name":{"en":"a\nb"}}',  # a raw control character in a string
    b',"definition":{"name":{"en":"a"},"name":null}',  # the last of duplicate keys is null
    b',"definition":{"name":null,"name":{"en":"a"}}',
    b',"definition":{"type":"http://x.kz/t\\n"}',  # an escaped newline ends the IRI
    b'} , "x": 1',  # an unknown property at the top
    b'}}',  # trailing garbage
    b'',
])
def test_json_traps(tail: bytes) -> None:
    raw = BASE % tail
    assert_sound(raw)
    assert assert_sound(b"\xef\xbb\xbf" + raw) is False  # a byte-order mark is malformed JSON


def test_the_base_statement_is_accepted() -> None:
    assert accepts(BASE % b"")
    assert validate_bytes(BASE % b"") == []


@pytest.mark.parametrize("value", [
    "2026-07-27T01:11:39Z", "2026-07-27T01:11:39.576+05:00", "2026-12-31T23:59:60,5-03:30",
    "2026-04-30T00:00", "2026-07-27T01:11:39",
])
def test_timestamps_accepted(value: str) -> None:
    raw = orjson.dumps({**orjson.loads(BASE % b""), "timestamp": value})
    assert assert_sound(raw)


@pytest.mark.parametrize("value", [
    "2024-02-29T10:00:00Z",  # valid, but 29 February is left to the full validator
    "2026-04-31T00:00:00Z", "2026-02-30T00:00:00Z", "2026-07-27T24:00:00Z",
    "2026-07-27T01:11:39-00:00", "2026-07-27T01:11:39+0500", "2026-07-27 01:11:39Z",
    "2026-07-27t01:11:39z", "2026-07-27T01:11:39Z\n", "٢٠٢٦-07-27T01:11:39Z",
])
def test_timestamps_left_to_the_full_validator(value: str) -> None:
    raw = orjson.dumps({**orjson.loads(BASE % b""), "timestamp": value})
    assert assert_sound(raw) is False


def _with(path: str, value: Any) -> bytes:
    """The base statement with ``value`` set at ``path`` (dotted)."""
    s = orjson.loads(BASE % b"")
    *parents, key = path.split(".")
    node = s
    for p in parents:
        node = node.setdefault(p, {})
    if path == "actor.mbox_sha1sum":
        del s["actor"]["mbox"]
    node[key] = value
    return orjson.dumps(s)


@pytest.mark.parametrize(("path", "good", "bad"), [
    ("actor.mbox", "mailto:learner@kaznu.kz", "mailto:learner at kaznu.kz"),
    ("actor.mbox_sha1sum", "a" * 40, "g" * 40),
    ("context.registration", "6f1c2b1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b",
     "6f1c2b1e-2c3d-4e5f-8a9b-0c1d2e3f4a5"),
    ("result.duration", "PT1H30M", "PT1H30"),
    ("version", "1.0.3", "1.0.03"),
])
def test_remembered_formats_are_checked_per_kind(path: str, good: str, bad: str) -> None:
    """Mboxes, registrations, durations and the version repeat, so the fast path remembers
    the ones found good: a good one is accepted again and again, a bad one never, and a string
    found good as one kind (an IRI) is not taken as good for another (an mbox)."""
    for _ in range(2):
        assert assert_sound(_with(path, good))
        assert assert_sound(_with(path, bad)) is False
    iri = "urn:kaznu:learner"
    assert assert_sound(_with("object.id", iri))
    assert assert_sound(_with(path, iri)) is False


def test_tolerance_profiles_and_version_errors_still_apply() -> None:
    raw = BASE % b""
    with pytest.raises(ValueError, match="unknown tolerance profile"):
        validate_detailed_bytes(raw, tolerate={"nope"})
    with pytest.raises(ValueError, match="unknown xAPI version"):
        validate_bytes(raw, "3.0")
    v = validate_detailed_bytes(raw, "2.0.0", tolerate={"openedx"})
    assert v.valid and v.tolerated == []


# -- the ADL suite and the real corpora -----------------------------------------------------------

def test_adl_conformance_cases() -> None:
    cases = json.loads(corpus("adl-conformance", "cases.json").read_bytes())
    accepted = 0
    for case in cases:
        if case["suite_version"] not in ("v1_0_3", "v2_0"):
            continue  # the earlier suites' verdicts are not the validator's target
        raw = orjson.dumps(case["statement"])
        if assert_sound(raw):
            accepted += 1
            assert case["expect"][0] == 200, case["name"]
    assert accepted > 50  # the everyday shapes among the valid cases


def test_real_corpora() -> None:
    moodle = [orjson.dumps(s)
              for p in sorted(corpus("moodle-logstore_xapi", "tests").rglob("statements.json"))
              for s in json.loads(p.read_bytes())]
    openedx = [orjson.dumps(s) for p in sorted(corpus("openedx-erb", "expected").glob("*.json"))
               for s in (lambda d: d if isinstance(d, list) else [d])(json.loads(p.read_bytes()))]
    ralph = [line for line in gzip.decompress(
        corpus("ralph-video", "statements.json.gz").read_bytes()).splitlines() if line.strip()]
    schema = [p.read_bytes() for p in sorted(
        corpus("xapi-schema", "dev-resources", "data", "statements").glob("*.json"))]
    counts = {name: sum(assert_sound(raw) for raw in items)
              for name, items in (("moodle", moodle), ("openedx", openedx), ("ralph", ralph),
                                  ("xapi-schema", schema))}
    # every statement Moodle and Ralph emit takes the fast path (and each one is sound, above)
    assert (counts["moodle"], counts["ralph"]) == (len(moodle), len(ralph)), counts


def test_generated_university_statements_take_the_fast_path() -> None:
    from datetime import UTC, datetime

    from pipelines.generate import TroubleShares, build_university, generate_statements

    univ = build_university(187, students=50, disciplines=5)
    raws = [g.line for g in generate_statements(
        univ, 3000, 187, TroubleShares.none(), datetime(2026, 9, 1, tzinfo=UTC),
        datetime(2026, 12, 31, tzinfo=UTC))]
    accepted = sum(assert_sound(raw) for raw in raws)
    assert accepted >= 0.95 * len(raws)
