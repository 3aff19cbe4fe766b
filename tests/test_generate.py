"""The synthetic university generator: IINs, roster and catalogue, the statement stream, writers."""

from __future__ import annotations

import base64
import csv
import gzip
import json
import math
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from pipelines.generate import (
    KINDS,
    GeneratedLine,
    TroubleShares,
    build_university,
    generate_statements,
    has_valid_checksum,
    iin_check_digit,
    is_valid_iin,
    make_iin,
    post_to_lrs,
    run_generate,
    write_catalogue_csv,
    write_ndjson,
    write_roster_csv,
)
from pipelines.generate.statements import _uuid4, iso_duration
from pipelines.iin import iin_birth_date, iin_is_male

START = datetime(2026, 9, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DURATION_RE = re.compile(r"^PT(\d+H)?(\d+M)?(\d+(\.\d+)?S)?$")
N = 20_000


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


@pytest.fixture(scope="module")
def univ() -> Any:
    return build_university(11)


@pytest.fixture(scope="module")
def stream(univ: Any) -> list[GeneratedLine]:
    return list(generate_statements(univ, N, 11, TroubleShares(), START, END))


# --- IIN -----------------------------------------------------------------------------------------


def test_iin_check_digit_known_cases() -> None:
    # 9 5 0 1 0 2 3 0 0 0 1 x 1..11 = 9+10+0+4+0+12+21+0+0+0+11 = 67; 67 mod 11 = 1
    assert iin_check_digit("95010230001") == 1
    assert is_valid_iin("950102300011")
    assert not is_valid_iin("950102300012")
    # first pass: 9+10+0+4+0+12+21+0+0+1*10... for serial 0021:
    #   9+10+0+4+0+12+21+0+0+20+11 = 87; 87 mod 11 = 10 -> second pass with 3,4,..,11,1,2:
    #   27+20+0+6+0+16+27+0+0+2+2 = 100; 100 mod 11 = 1
    assert iin_check_digit("95010230021") == 1
    # serial 0020: first pass 76 mod 11 = 10, second pass 98 mod 11 = 10 -> no valid IIN
    assert iin_check_digit("95010230020") is None
    # a woman born 2004-03-15 (century digit 6), serial 1234:
    #   0+8+0+12+5+30+42+8+18+30+44 = 197; 197 mod 11 = 10 -> 0+16+0+18+7+40+54+10+22+3+8 = 178;
    #   178 mod 11 = 2
    assert iin_check_digit("04031561234") == 2
    assert is_valid_iin("040315612342")
    # born 1887 (century digit 1 = 1800s, male): 8+14+0+24+5+30+7+0+0+0+77 = 165; 165 mod 11 = 0
    assert iin_check_digit("87061510007") == 0
    assert iin_birth_date("870615100070") == date(1887, 6, 15)


def test_make_iin_skips_serials_without_check_digit() -> None:
    assert make_iin(date(1995, 1, 2), True, 1) == "950102300011"
    assert make_iin(date(1995, 1, 2), True, 20) == "950102300211"  # 0020 has no check digit
    assert make_iin(date(2004, 3, 15), False, 1234) == "040315612342"
    assert make_iin(date(1999, 12, 31), False, 10_007)[7:11] == "0007"  # serial mod 10,000
    with pytest.raises(ValueError):
        make_iin(date(1799, 1, 1), True, 1)


def test_is_valid_iin_rejects_bad_shapes_dates_and_centuries() -> None:
    assert has_valid_checksum("951302300011") and not is_valid_iin("951302300011")  # month 13
    assert has_valid_checksum("950102000012") and not is_valid_iin("950102000012")  # century 0
    for bad in ("", "95010230001", "9501023000111", "95010230001a", "９５０１０２３０００１１"):
        assert not is_valid_iin(bad)
    with pytest.raises(ValueError):
        iin_check_digit("1234")


def test_random_iins_round_trip() -> None:
    rng = random.Random(5)
    for _ in range(2_000):
        birth = date(1850, 1, 1) + timedelta(days=rng.randrange(250 * 365))
        male = rng.random() < 0.5
        iin = make_iin(birth, male, rng.randrange(10_000))
        assert is_valid_iin(iin)
        assert iin_birth_date(iin) == birth and iin_is_male(iin) is male
        # a single changed digit changes the first-pass sum (11 is prime), so it is caught when
        # neither number needs the second pass, except in the 11th digit, whose first-pass weight
        # 11 is 0 mod 11: the checksum's blind spot
        pos = rng.randrange(12)
        other = str((int(iin[pos]) + rng.randrange(1, 10)) % 10)
        changed = iin[:pos] + other + iin[pos + 1 :]

        def first_pass(s: str) -> int:
            return sum(int(c) * w for c, w in zip(s[:11], range(1, 12), strict=True)) % 11

        if 10 not in (first_pass(iin), first_pass(changed)) and pos != 10:
            assert not has_valid_checksum(changed)


# --- university ----------------------------------------------------------------------------------


def test_students_have_consistent_valid_iins_and_unique_ids(univ: Any) -> None:
    students = univ.students
    assert len(students) == 300 and len(univ.disciplines) == 24
    for s in students:
        assert is_valid_iin(s.iin), s
        assert iin_birth_date(s.iin) == s.birth_date
        assert iin_is_male(s.iin) is s.male
        century_digit = int(s.iin[6])
        assert century_digit == (s.birth_date.year - 1800) // 100 * 2 + (1 if s.male else 2)
        assert s.email == f"{s.lms_account}@stud.university.kz"
        assert re.fullmatch(r"(6B|7M|8D)\d{5}", s.programme_code)
        assert re.fullmatch(r"[А-Я]{2,3}-\d\d-\d", s.group)
        assert re.search(r"[А-Яа-яӘәҒғҚқҢңӨөҰұҮүІі]", s.full_name)
        assert s.lms_account.isascii()
    for attr in ("iin", "student_id", "lms_account", "email"):
        assert len({getattr(s, attr) for s in students}) == len(students), attr
    statuses = Counter(s.status for s in students)
    assert statuses["active"] > 250 and statuses["academic_leave"] + statuses["expelled"] > 0
    assert {s.programme_code[:2] for s in students} == {"6B", "7M", "8D"}
    assert {s.birth_date.year // 100 for s in students} == {19, 20}  # century digits 3-6
    assert {s.language for s in students} == {"kk-KZ", "ru-RU"}


def test_disciplines_and_activities(univ: Any) -> None:
    all_ids = [a for d in univ.disciplines for a in d.activity_ids]
    assert len(all_ids) == len(set(all_ids))
    assert len({d.code for d in univ.disciplines}) == len(univ.disciplines)
    formats = Counter(d.format for d in univ.disciplines)
    assert set(formats) <= {"synchronous", "asynchronous", "blended"} and len(formats) >= 2
    for d in univ.disciplines:
        assert re.fullmatch(r"https://lms\.university\.kz/course/view\.php\?id=\d+", d.course_iri)
        assert all(a.startswith("https://lms.university.kz/") for a in d.activity_ids)
        assert univ.period_start <= d.period_start <= d.period_end <= univ.period_end
        assert d.title_kk and d.title_ru and d.title_en and d.credits in (3, 4, 5, 6)
        kinds = {a.kind for a in d.activities}
        assert ("live" in kinds) == (d.format != "asynchronous")
        assert ("cmi5" in kinds) == (d.format != "synchronous")
        assert "quiz" in kinds
    assert set(univ.curriculum) == set(univ.groups) == {s.group for s in univ.students}


def test_roster_and_catalogue_csv(univ: Any, tmp_path: Path) -> None:
    roster = write_roster_csv(univ, tmp_path / "roster.csv")
    catalogue = write_catalogue_csv(univ, tmp_path / "catalogue.csv")
    text = roster.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "iin,student_id,lms_account,email,programme_code,group,status"
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == len(univ.students)
    assert rows[0]["iin"] == univ.students[0].iin and rows[0]["group"] == univ.students[0].group
    assert all(len(r["iin"]) == 12 for r in rows)  # kept as text, leading zeros included
    text = catalogue.read_text(encoding="utf-8")
    header = "activity_id,discipline_code,credits,period_start,period_end,format"
    assert text.splitlines()[0] == header
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == sum(len(d.activity_ids) for d in univ.disciplines)
    assert len({r["activity_id"] for r in rows}) == len(rows)
    assert {r["format"] for r in rows} <= {"synchronous", "asynchronous", "blended"}
    date.fromisoformat(rows[0]["period_start"])


def test_university_is_deterministic() -> None:
    a, b = build_university(5, students=50, disciplines=40), build_university(5, 50, 40)
    assert a == b
    assert build_university(6, 50, 40).students != a.students
    assert len(a.disciplines) == 40  # more than the title list: titles get a number


# --- statements ----------------------------------------------------------------------------------


def test_uuid4_helper_matches_uuid_module() -> None:
    r1, r2 = random.Random(3), random.Random(3)
    for _ in range(200):
        assert _uuid4(r1) == str(uuid.UUID(int=r2.getrandbits(128), version=4))


def test_iso_duration() -> None:
    assert iso_duration(25 * 60 + 13) == "PT25M13S"
    assert iso_duration(3723) == "PT1H2M3S"
    assert iso_duration(45) == "PT45S"
    assert iso_duration(3600) == "PT1H"
    assert iso_duration(0.2) == "PT1S"
    assert iso_duration(61.5, centis=True) == "PT1M1.50S"


def test_exact_count_and_shares_roughly_honoured(stream: list[GeneratedLine]) -> None:
    assert len(stream) == N
    kinds = Counter(gl.kind for gl in stream)
    assert set(kinds) <= set(KINDS)
    shares = TroubleShares().as_dict()
    for kind, share in shares.items():
        expected = N * share
        assert abs(kinds[kind] - expected) <= 5 * math.sqrt(expected) + 3, (kind, kinds[kind])


def test_large_shares_are_honoured(univ: Any) -> None:
    shares = TroubleShares(0.05, 0.05, 0.1, 0.05, 0.05, 0.05, 0.1)
    kinds = Counter(gl.kind for gl in generate_statements(univ, N, 2, shares, START, END))
    for kind, share in shares.as_dict().items():
        assert abs(kinds[kind] / N - share) < 0.01, (kind, kinds[kind])
    assert abs(kinds["valid"] / N - 0.55) < 0.02


def test_every_line_parses_unless_malformed(stream: list[GeneratedLine]) -> None:
    details = Counter()
    for gl in stream:
        assert isinstance(gl.line, bytes) and b"\n" not in gl.line
        if gl.kind == "malformed_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(gl.line)
            details[gl.detail] += 1
            assert gl.statement_id is None
        else:
            doc = orjson.loads(gl.line)
            assert isinstance(doc, dict)
            if gl.kind != "invalid":
                assert doc["id"] == gl.statement_id
    assert len(details) >= 3


def test_valid_statements_look_like_moodle_and_cmi5(univ: Any, stream: list[GeneratedLine]) -> None:
    accounts = {s.lms_account for s in univ.students}
    mboxes = {"mailto:" + s.email for s in univ.students}
    activities = {a for d in univ.disciplines for a in d.activity_ids}
    disc_of = {a: d.code for d in univ.disciplines for a in d.activity_ids}
    curriculum = {g: {univ.disciplines[i].code for i in ds} for g, ds in univ.curriculum.items()}
    by_ifi = {s.lms_account: s for s in univ.students} | {
        "mailto:" + s.email: s for s in univ.students
    }
    verbs: Counter[str] = Counter()
    mbox_count = 0
    last_stored = ""
    valid = [gl for gl in stream if gl.kind in ("valid", "late_arrival", "unknown_learner")]
    for gl in valid:
        d = orjson.loads(gl.line)
        assert UUID_RE.match(d["id"]) and d["version"] == "1.0.3"
        assert TS_RE.match(d["timestamp"]) and TS_RE.match(d["stored"])
        assert START <= _ts(d["timestamp"]) <= _ts(d["stored"]) < END
        if gl.kind != "late_arrival":
            assert _ts(d["stored"]) - _ts(d["timestamp"]) < timedelta(minutes=10)
        assert d["stored"] >= last_stored  # LRS order
        last_stored = d["stored"]
        actor = d["actor"]
        assert actor["objectType"] == "Agent" and actor["name"]
        assert len([k for k in ("mbox", "account", "openid", "mbox_sha1sum") if k in actor]) == 1
        known = actor.get("account", {}).get("name") in accounts or actor.get("mbox") in mboxes
        assert known is (gl.kind != "unknown_learner")
        if "account" in actor:
            assert actor["account"]["homePage"] == "https://lms.university.kz"
        else:
            mbox_count += gl.kind == "valid"
        verbs[d["verb"]["id"]] += 1
        assert d["object"]["id"] in activities
        names = d["object"]["definition"]["name"]
        assert set(names) == {"kk-KZ", "ru-RU", "en-US"}
        ctx = d["context"]
        assert uuid.UUID(ctx["registration"]).version == 5  # one per learner and course
        assert ctx["platform"] == "Moodle 4.3" and ctx["language"] in ("kk-KZ", "ru-RU")
        course = "https://lms.university.kz/course/view.php?id="
        if d["object"]["id"].startswith(course):  # a course view: no parent, as in Moodle
            assert "parent" not in ctx["contextActivities"]
        else:
            parent = ctx["contextActivities"]["parent"]
            assert len(parent) == 1 and parent[0]["id"].startswith(course)
            assert disc_of[parent[0]["id"]] == disc_of[d["object"]["id"]]
        if gl.kind != "unknown_learner":  # learners work in the courses of their group
            student = by_ifi[actor.get("mbox") or actor["account"]["name"]]
            assert disc_of[d["object"]["id"]] in curriculum[student.group]
        cmi5 = any(
            c["id"] == "https://w3id.org/xapi/cmi5/context/categories/cmi5"
            for c in ctx["contextActivities"].get("category", [])
        )
        if cmi5:
            assert "https://w3id.org/xapi/cmi5/context/extensions/sessionid" in ctx["extensions"]
        result = d.get("result", {})
        if "score" in result:
            sc = result["score"]
            assert 0 <= sc["scaled"] <= 1
            assert sc["min"] <= sc["raw"] <= sc["max"]
            assert abs((sc["raw"] - sc["min"]) / (sc["max"] - sc["min"]) - sc["scaled"]) < 0.006
        if "duration" in result:
            assert DURATION_RE.match(result["duration"])
        for flag in ("success", "completion"):
            assert isinstance(result.get(flag, True), bool)
        if d["verb"]["id"] == "http://adlnet.gov/expapi/verbs/attended":
            assert (
                d["object"]["definition"]["type"] == "http://adlnet.gov/expapi/activities/meeting"
            )
    adl = "http://adlnet.gov/expapi/verbs/"
    for v in ("launched", "initialized", "completed", "passed", "failed", "terminated"):
        assert verbs[adl + v] > 0, v
    for v in ("attended", "answered", "experienced", "attempted"):
        assert verbs[adl + v] > 0, v
    assert verbs["http://id.tincanapi.com/verb/viewed"] > 0
    n_valid = sum(gl.kind == "valid" for gl in stream)
    assert 0.15 < mbox_count / n_valid < 0.25  # about a fifth of the statements use mbox


def test_voids_reference_statements_before_and_after(stream: list[GeneratedLine]) -> None:
    first_pos: dict[str, int] = {}
    for i, gl in enumerate(stream):
        if gl.kind in ("valid", "late_arrival") and gl.statement_id:
            first_pos.setdefault(gl.statement_id, i)
    before = after = 0
    for i, gl in enumerate(stream):
        if gl.kind != "voiding":
            continue
        d = orjson.loads(gl.line)
        assert d["verb"]["id"] == "http://adlnet.gov/expapi/verbs/voided"
        assert d["object"]["objectType"] == "StatementRef"
        target = d["object"]["id"]
        assert target in first_pos, "void of a statement that never comes"
        before += first_pos[target] < i
        after += first_pos[target] > i
    assert before > 0 and after > 0  # some voids arrive before their target


def test_duplicates_really_duplicate(stream: list[GeneratedLine]) -> None:
    seen: dict[str, bytes] = {}
    n_exact = n_conflict = 0
    for gl in stream:
        if gl.kind == "exact_duplicate":
            assert seen[gl.statement_id or ""] == gl.line
            n_exact += 1
        elif gl.kind == "conflicting_duplicate":
            original = orjson.loads(seen[gl.statement_id or ""])
            copy = orjson.loads(gl.line)
            assert copy["id"] == original["id"]
            original.pop("stored")
            copy.pop("stored")
            assert copy != original
            n_conflict += 1
        elif gl.kind in ("valid", "late_arrival", "unknown_learner", "voiding"):
            assert gl.statement_id not in seen, "a fresh statement reuses an id"
            seen[gl.statement_id or ""] = gl.line
    assert n_exact > 0 and n_conflict > 0


def test_late_arrivals_are_more_than_a_day_late(stream: list[GeneratedLine]) -> None:
    late = [orjson.loads(gl.line) for gl in stream if gl.kind == "late_arrival"]
    assert late
    gaps = [_ts(d["stored"]) - _ts(d["timestamp"]) for d in late]
    assert all(g > timedelta(days=1) for g in gaps)
    assert max(gaps) > timedelta(days=7)


def test_invalid_lines_break_xapi(stream: list[GeneratedLine]) -> None:
    invalid = [gl for gl in stream if gl.kind == "invalid"]
    assert len({gl.detail for gl in invalid}) >= 10
    for gl in invalid:
        d = orjson.loads(gl.line)
        if gl.detail == "missing_verb":
            assert "verb" not in d
        elif gl.detail == "actor_two_ifis":
            assert "mbox" in d["actor"] and "account" in d["actor"]
        elif gl.detail == "scaled_out_of_range":
            assert d["result"]["score"]["scaled"] > 1
        elif gl.detail == "mbox_without_mailto":
            assert not d["actor"]["mbox"].startswith("mailto:")
        elif gl.detail == "non_uuid_id":
            assert not UUID_RE.match(d["id"])


def test_same_seed_same_bytes_other_seed_other_bytes(univ: Any) -> None:
    def blob(seed: int) -> bytes:
        return b"\n".join(
            gl.line for gl in generate_statements(univ, 3_000, seed, None, START, END)
        )

    assert blob(4) == blob(4)
    assert blob(4) != blob(5)


def test_clean_stream_without_stored() -> None:
    u = build_university(2, students=20, disciplines=3)
    lines = list(generate_statements(u, 2_000, 2, TroubleShares.none(), START, END, False))
    assert len(lines) == 2_000 and {gl.kind for gl in lines} == {"valid"}
    ids = [gl.statement_id for gl in lines]
    assert len(set(ids)) == len(ids)
    for gl in lines:
        d = orjson.loads(gl.line)
        assert "stored" not in d and START <= _ts(d["timestamp"]) < END
    assert list(generate_statements(u, 0, 2, None, START, END)) == []


def test_short_span_keeps_count_and_bounds() -> None:
    # 12 hours leave no room for a late arrival (> 1 day): those lines become valid ones
    u = build_university(3, students=10, disciplines=2)
    end = START + timedelta(hours=12)
    lines = list(generate_statements(u, 3_000, 3, TroubleShares(late_arrival=0.2), START, end))
    assert len(lines) == 3_000 and not any(gl.kind == "late_arrival" for gl in lines)
    for gl in lines:
        if gl.kind in ("valid", "voiding", "unknown_learner"):
            d = orjson.loads(gl.line)
            assert START <= _ts(d["timestamp"]) <= _ts(d["stored"]) < end


def test_trouble_shares_validation() -> None:
    assert sum(TroubleShares.none().as_dict().values()) == 0
    with pytest.raises(ValueError):
        TroubleShares(invalid=1.5)
    with pytest.raises(ValueError):
        TroubleShares(0.5, 0.5, 0.5)


# --- writers -------------------------------------------------------------------------------------


def test_write_ndjson_plain_and_gzip(stream: list[GeneratedLine], tmp_path: Path) -> None:
    lines = stream[:2_500]
    assert write_ndjson(lines, tmp_path / "a.ndjson") == 2_500
    raw = (tmp_path / "a.ndjson").read_bytes()
    assert raw == b"".join(gl.line + b"\n" for gl in lines)
    write_ndjson(iter(lines), tmp_path / "a.ndjson.gz")
    write_ndjson([gl.line for gl in lines], tmp_path / "b.ndjson.gz")
    assert gzip.decompress((tmp_path / "a.ndjson.gz").read_bytes()) == raw
    assert (tmp_path / "a.ndjson.gz").read_bytes() == (tmp_path / "b.ndjson.gz").read_bytes()


def test_run_generate_is_deterministic(tmp_path: Path) -> None:
    ticks: list[int] = []
    args: dict[str, Any] = {
        "seed": 9,
        "students": 40,
        "disciplines": 5,
        "statements": 2_500,
        "trouble": TroubleShares(),
        "start": START,
        "end": END,
    }
    s1 = run_generate(tmp_path / "one", progress=ticks.append, progress_every=1_000, **args)
    s2 = run_generate(tmp_path / "two", **args)
    assert ticks == [1_000, 2_000, 2_500]
    json.dumps(s1)
    assert s1["statements"] == 2_500 == sum(s1["by_kind"].values())
    assert s1["lrs"] is None and s1["by_kind"] == s2["by_kind"]
    for name in ("roster.csv", "catalogue.csv", "statements.ndjson.gz"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert [Path(f).name for f in s1["files"]] == [
        "roster.csv",
        "catalogue.csv",
        "statements.ndjson.gz",
    ]


class _TinyLRS(BaseHTTPRequestHandler):
    """Just enough of an LRS: stores statements by id, 409 on a different body, 400 on a batch
    with any statement that is not JSON, has no verb or carries ``stored``."""

    store: ClassVar[dict[str, Any]] = {}
    requests: ClassVar[list[int]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"[]") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        auth = "Basic " + base64.b64encode(b"user:pass").decode()
        if self.path != "/xAPI/statements" or self.headers.get("Authorization") != auth:
            return self._answer(401)
        if self.headers.get("X-Experience-API-Version") != "1.0.3":
            return self._answer(400)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._answer(400)
        batch = doc if isinstance(doc, list) else [doc]
        self.requests.append(len(batch))
        if any("verb" not in s or "stored" in s for s in batch):
            return self._answer(400)
        if any(s["id"] in self.store and self.store[s["id"]] != s for s in batch):
            return self._answer(409)
        for s in batch:
            self.store[s["id"]] = s
        return self._answer(200, orjson.dumps([s["id"] for s in batch]))


@pytest.fixture()
def tiny_lrs() -> Iterator[str]:
    _TinyLRS.store = {}
    _TinyLRS.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TinyLRS)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/xAPI/"
    finally:
        server.shutdown()
        server.server_close()


def test_post_to_lrs_batches_singles_and_split(univ: Any, tiny_lrs: str) -> None:
    shares = TroubleShares(
        malformed_json=0.01,
        invalid=0.0,
        unknown_learner=0.01,
        exact_duplicate=0.02,
        conflicting_duplicate=0.02,
        voiding=0.01,
        late_arrival=0.01,
    )
    lines = list(generate_statements(univ, 1_200, 21, shares, START, END))
    # a statement without verb that does not say so: its batch is refused, then re-sent 1 by 1
    bad = orjson.loads(lines[100].line)
    del bad["verb"]
    bad["id"] = str(uuid.UUID(int=1, version=4))
    lines.insert(101, GeneratedLine(orjson.dumps(bad), "valid", bad["id"]))
    kinds = Counter(gl.kind for gl in lines)

    report = post_to_lrs(lines, tiny_lrs, ("user", "pass"), batch_size=100)
    assert report.posted == len(lines) == report.accepted + report.refused
    assert report.by_kind == {k: kinds[k] for k in KINDS}
    assert report.refused_by_kind == {
        "malformed_json": kinds["malformed_json"],
        "conflicting_duplicate": kinds["conflicting_duplicate"],
        "valid": 1,
    }
    assert report.batches_split == 1
    assert 50 < max(_TinyLRS.requests) <= 100
    fresh = {gl.statement_id for gl in lines if gl.kind not in ("malformed_json",)}
    assert set(_TinyLRS.store) == fresh - {bad["id"]}
    assert report.statuses[409] == kinds["conflicting_duplicate"]
