"""The reference receiver (``footprint receiver serve``) over real HTTP and SQLite.

Every test starts its own receiver through :class:`LocalReceiver` (a child process on 127.0.0.1)
and talks to it with httpx, as the delivery client does: the contract of
``pipelines/receiver/API.md``, its traps (full replace, unknown fields ignored, 200 with
failedRecords, logical delete) and each injected fault.
"""

from __future__ import annotations

import gzip
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from pipelines.local.receiver import LocalReceiver, LocalReceiverError
from pipelines.receiver.contract import load_contract

pytestmark = pytest.mark.integration

ENTITY = "ONLINE_LEARNING"
SAVE = "org-data/list/save"
PAGE = "org-data/find-all-pageable"
FIND = "org-data/find-by-id"
BIN = "040140001236"  # a BIN with a valid check digit
IIN = "060416591306"
NS = uuid.UUID("6f0c3f6e-4a55-4c3e-9d4e-1f2d3c4b5a69")
REJECTED = "temporarily rejected (fault injection)"
SERVER_FIELDS = {"deleted", "deletedAt", "createdAt", "updatedAt", "version"}


def record(n: int = 0, **changes: Any) -> dict[str, Any]:
    """A valid delivered record (every contract field filled), one key per ``n``."""
    key = (BIN, IIN, f"CS{n:04d}", "2026-09-01/2026-12-31")
    rec: dict[str, Any] = {
        "record_id": str(uuid.uuid5(NS, "/".join(key))),
        "contract_version": 1,
        "institution_code": key[0],
        "iin": key[1],
        "discipline_code": key[2],
        "academic_period": key[3],
        "period_start": "2026-09-01",
        "period_end": "2026-12-31",
        "student_id": f"st-{n}",
        "programme_code": "6B06102",
        "credits": 5,
        "sync_activity_count": 4,
        "sync_activity_seconds": 5400.0,
        "async_activity_count": 12,
        "async_activity_seconds": 7320.5,
        "online_activity_count": 4,
        "distance_activity_count": 12,
        "learning_mode": "mixed",
        "live_sessions_attended": 3,
        "activities_completed": 10,
        "activities_total": 14,
        "assessments_passed": 2,
        "assessments_failed": 1,
        "current_score": 86.5,
        "letter_grade": "B+",
        "gpa_points": 3.33,
        "completion_status": "in_progress",
        "last_activity_at": "2026-11-20T09:15:00Z",
        "statement_count": 16,
        "source_systems": ["main-lrs", "moodle"],
        "content_hash": f"{n:064x}",
        "updated_at": "2026-11-21T02:00:00Z",
    }
    rec.update(changes)
    return rec


def content(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in SERVER_FIELDS}


@pytest.fixture
def rx(tmp_path: Path) -> Iterator[LocalReceiver]:
    with LocalReceiver(tmp_path / "receiver") as server:
        yield server


def client(rx: LocalReceiver, auth: Any = ("980140000005", "secret"), **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=rx.endpoint, auth=auth, trust_env=False, timeout=10, **kw)


def save(c: httpx.Client, records: list[Any], **kw: Any) -> httpx.Response:
    return c.post(SAVE, params={"entity": ENTITY}, content=orjson.dumps(records),
                  headers={"Content-Type": "application/json", **kw.pop("headers", {})}, **kw)


def find(c: httpx.Client, record_id: str) -> httpx.Response:
    return c.get(FIND, params={"entity": ENTITY, "id": record_id})


def everything(c: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    page = 0
    while True:
        body = c.get(PAGE, params={"entity": ENTITY, "page": page, "size": 1000}).json()
        out += body["content"]
        if body["last"]:
            return out
        page += 1


# -- the contract ----------------------------------------------------------------------------------


def test_save_then_paged_read_and_find_by_id_round_trip(rx: LocalReceiver) -> None:
    sent = [record(n) for n in range(5)]
    with client(rx) as c:
        r = save(c, sent)
        assert r.status_code == 200
        assert r.json() == {"savedRecords": 5, "failedRecords": []}
        assert r.headers["content-type"].startswith("application/json")

        pages = [c.get(PAGE, params={"entity": ENTITY, "page": p, "size": 2}).json()
                 for p in range(3)]
        assert [(p["page"], p["size"], p["totalElements"], p["totalPages"], p["last"])
                for p in pages] == [(0, 2, 5, 3, False), (1, 2, 5, 3, False), (2, 2, 5, 3, True)]
        got = [rec for p in pages for rec in p["content"]]
        by_id = sorted(sent, key=lambda x: x["record_id"])
        assert [content(g) for g in got] == by_id  # ordered by record_id, exactly what was sent
        first = got[0]
        assert first["deleted"] is False and first["deletedAt"] is None
        assert first["version"] == 1 and first["createdAt"] == first["updatedAt"]
        assert first["createdAt"].endswith("Z")
        beyond = c.get(PAGE, params={"entity": ENTITY, "page": 3, "size": 2}).json()
        assert beyond["content"] == [] and beyond["last"] is True

        one = find(c, sent[3]["record_id"])
        assert one.status_code == 200 and content(one.json()) == sent[3]
        missing = find(c, str(uuid.uuid4()))
        assert missing.status_code == 404 and missing.json() == {"error": "not found"}

        # The upsert key is the composite key: a second save replaces and bumps the version.
        assert save(c, [record(3, credits=6)]).json()["savedRecords"] == 1
        again = find(c, sent[3]["record_id"]).json()
        assert again["credits"] == 6 and again["version"] == 2
        assert again["createdAt"] == one.json()["createdAt"]
        assert len(everything(c)) == 5


def test_bad_requests(rx: LocalReceiver) -> None:
    with client(rx) as c:
        r = c.post(SAVE, params={"entity": ENTITY}, content=b"[{not json")
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
        r = c.post(SAVE, params={"entity": ENTITY}, content=orjson.dumps(record(1)))
        assert r.status_code == 400 and "array" in r.json()["error"]
        r = c.post(SAVE, params={"entity": "GRADES"}, content=b"[]")
        assert r.status_code == 404
        assert c.get(PAGE, params={"entity": "GRADES", "page": 0, "size": 5}).status_code == 404
        for size in (0, 1001, "x"):
            r = c.get(PAGE, params={"entity": ENTITY, "page": 0, "size": size})
            assert r.status_code == 400, size
        assert c.get(PAGE, params={"entity": ENTITY, "page": -1, "size": 5}).status_code == 400
        assert c.get("org-data/nothing-here", params={"entity": ENTITY}).status_code == 404
        assert c.get(SAVE, params={"entity": ENTITY}).status_code == 405


def test_full_replace_a_field_left_out_reads_back_null(rx: LocalReceiver) -> None:
    rec = record(1)
    with client(rx) as c:
        save(c, [rec])
        partial = {k: v for k, v in rec.items() if k not in ("current_score", "student_id")}
        assert save(c, [partial]).json() == {"savedRecords": 1, "failedRecords": []}
        got = find(c, rec["record_id"]).json()
    assert "current_score" in got and got["current_score"] is None
    assert "student_id" in got and got["student_id"] is None
    assert got["letter_grade"] == "B+" and got["version"] == 2


def test_unknown_field_is_ignored_silently(rx: LocalReceiver) -> None:
    rec = record(1, nickname="Aru", totalMark=86.5)
    with client(rx) as c:
        r = save(c, [rec])
        assert r.status_code == 200 and r.json() == {"savedRecords": 1, "failedRecords": []}
        got = find(c, rec["record_id"]).json()
    assert "nickname" not in got and "totalMark" not in got
    assert content(got) == record(1)


def test_invalid_records_fail_alone_in_a_200(rx: LocalReceiver) -> None:
    good1, good2 = record(1), record(2)
    batch: list[Any] = [
        good1,
        record(3, iin="060416591307"),  # wrong check digit
        {k: v for k, v in record(4).items() if k != "discipline_code"},  # key field missing
        record(5, credits="5"),  # wrong type
        good2,
        record(6, letter_grade="Z"),  # not in the enum
        record(7, gpa_points=-1),  # below minimum
        record(8, programme_code="6X06102"),  # pattern
        record(9, period_start="2026-02-30"),  # not a date
        record(10, record_id=None),
        "not an object",
    ]
    with client(rx) as c:
        r = save(c, batch)
        assert r.status_code == 200
        body = r.json()
        assert body["savedRecords"] == 2
        failed = {f["index"]: f for f in body["failedRecords"]}
        assert sorted(failed) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
        assert failed[1]["recordId"] == batch[1]["record_id"]
        assert failed[10]["recordId"] is None and failed[9]["recordId"] is None
        for index, field in ((1, "iin"), (2, "discipline_code"), (3, "credits"),
                             (5, "letter_grade"), (6, "gpa_points"), (7, "programme_code"),
                             (8, "period_start"), (9, "record_id")):
            assert failed[index]["reason"].startswith(field + ":"), failed[index]
        assert sorted(x["record_id"] for x in everything(c)) == sorted(
            [good1["record_id"], good2["record_id"]])

        # An explicit null is checked like any value present (credits is not nullable) ...
        assert save(c, [record(11, credits=None)]).json()["failedRecords"][0]["index"] == 0
        # ... and a record id already held by another key fails that record only.
        taken = record(12, record_id=good1["record_id"])
        body = save(c, [record(13), taken]).json()
        assert body["savedRecords"] == 1
        assert [f["index"] for f in body["failedRecords"]] == [1]
        assert "record_id" in body["failedRecords"][0]["reason"]
        assert find(c, good1["record_id"]).json()["discipline_code"] == "CS0001"


def test_a_key_saved_with_another_record_id_moves_to_it(rx: LocalReceiver) -> None:
    old = record(1)
    new_id = str(uuid.uuid4())
    with client(rx) as c:
        save(c, [old, record(2)])
        body = save(c, [record(2), record(1, record_id=new_id)]).json()
        assert body == {"savedRecords": 2, "failedRecords": []}
        assert find(c, old["record_id"]).status_code == 404
        moved = find(c, new_id).json()
    assert moved["discipline_code"] == old["discipline_code"] and moved["version"] == 2


def test_logical_delete_then_save_restores(rx: LocalReceiver) -> None:
    rec = record(1)
    with client(rx) as c:
        save(c, [rec, record(2)])
        path = f"org-data/{rec['record_id']}/delete"
        r = c.post(path, params={"entity": ENTITY})
        assert r.status_code == 200 and r.json() == {"id": rec["record_id"], "deleted": True}
        gone = find(c, rec["record_id"]).json()
        assert gone["deleted"] is True and gone["deletedAt"] is not None
        assert content(gone) == rec  # kept, only marked
        listed = {x["record_id"]: x for x in everything(c)}
        assert listed[rec["record_id"]]["deleted"] is True and len(listed) == 2
        again = c.post(path, params={"entity": ENTITY})
        assert again.status_code == 200
        assert find(c, rec["record_id"]).json()["deletedAt"] == gone["deletedAt"]
        unknown = c.post(f"org-data/{uuid.uuid4()}/delete", params={"entity": ENTITY})
        assert unknown.status_code == 404
        assert rx.stats()["records"] == {"stored": 2, "active": 1, "deleted": 1}

        assert save(c, [rec]).json()["savedRecords"] == 1
        back = find(c, rec["record_id"]).json()
    assert back["deleted"] is False and back["deletedAt"] is None and back["version"] == 2


def test_dictionaries(rx: LocalReceiver) -> None:
    with client(rx) as c:
        grades = c.get("common-dictionary/find-all", params={"type": "letter-grade"}).json()
        formats = c.get("common-dictionary/find-all", params={"type": "learning-format"}).json()
        unknown = c.get("common-dictionary/find-all", params={"type": "colour"})
    assert [g["code"] for g in grades] == ["A", "A-", "B+", "B", "B-", "C+", "C", "C-", "D+",
                                           "D", "FX", "F"]
    assert [f["code"] for f in formats] == ["synchronous", "asynchronous", "online", "distance"]
    for item in grades + formats:
        assert set(item) == {"code", "nameKk", "nameRu", "nameEn"} and all(item.values())
    assert unknown.status_code == 404


# -- HTTP, auth, gzip ------------------------------------------------------------------------------


def test_auth_basic_or_bearer(tmp_path: Path) -> None:
    with LocalReceiver(tmp_path / "open") as rx:
        with client(rx, auth=None) as c:
            r = save(c, [record(1)])
            assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
            assert c.get(PAGE, params={"entity": ENTITY},
                         headers={"Authorization": "Bearer anything"}).status_code == 200
        with client(rx, auth=("any", "thing")) as c:  # no credentials configured: any passes
            assert save(c, [record(1)]).status_code == 200
        assert httpx.get(rx.base_url + "/health", trust_env=False).json() == {"status": "ok"}

    with LocalReceiver(tmp_path / "closed", username="980140000005", password="s3cret",
                       token="tok-1") as rx:
        cases = [(("980140000005", "s3cret"), 200), (("980140000005", "wrong"), 401),
                 (("someone", "s3cret"), 401), ({"Authorization": "Bearer tok-1"}, 200),
                 ({"Authorization": "Bearer tok-2"}, 401), ({}, 401),
                 ({"Authorization": "Digest x"}, 401)]
        for cred, status in cases:
            auth, headers = (cred, {}) if isinstance(cred, tuple) else (None, cred)
            with client(rx, auth=auth, headers=headers) as c:
                r = c.get(PAGE, params={"entity": ENTITY, "page": 0, "size": 10})
                assert r.status_code == status, cred
        assert rx.stats()["requests"]["find-all-pageable"] == {"200": 2, "401": 5}


def test_gzip_bodies_and_415_when_gzip_is_off(rx: LocalReceiver) -> None:
    with client(rx) as c:
        r = c.post(SAVE, params={"entity": ENTITY},
                   content=gzip.compress(orjson.dumps([record(1), record(2)])),
                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.json() == {"savedRecords": 2, "failedRecords": []}
        rx.set_faults(accept_gzip=False)
        r = c.post(SAVE, params={"entity": ENTITY},
                   content=gzip.compress(orjson.dumps([record(3)])),
                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 415
        assert save(c, [record(3)]).json()["savedRecords"] == 1  # plain JSON still goes
        assert len(everything(c)) == 3
        broken = c.post(SAVE, params={"entity": ENTITY}, content=b"\x1f\x8bnot gzip",
                        headers={"Content-Encoding": "br"})
        assert broken.status_code == 415


def test_chunked_body_and_keep_alive(rx: LocalReceiver) -> None:
    def chunks() -> Iterator[bytes]:
        body = orjson.dumps([record(n) for n in range(3)])
        for i in range(0, len(body), 700):
            yield body[i:i + 700]

    with client(rx) as c:
        r = c.post(SAVE, params={"entity": ENTITY}, content=chunks())
        assert r.json() == {"savedRecords": 3, "failedRecords": []}

    # Two requests on one connection: HTTP/1.1 keep-alive with exact Content-Length.
    with socket.create_connection(("127.0.0.1", rx.port), timeout=5) as s:
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(request + request)
        data = b""
        while data.count(b'{"status":"ok"}') < 2:
            more = s.recv(4096)
            assert more, f"the connection closed after {data!r}"
            data += more
    assert data.count(b"HTTP/1.1 200 OK") == 2 and b"Content-Length: 15\r\n" in data


def _listening(port: int) -> set[str]:
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def test_listens_on_loopback_only(rx: LocalReceiver) -> None:
    assert rx.endpoint == f"http://127.0.0.1:{rx.port}/isvuz/api/"
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp here")
    assert _listening(rx.port) == {"0100007F"}  # 127.0.0.1, little-endian hex


# -- faults ----------------------------------------------------------------------------------------


def test_error_rate_one_answers_5xx_and_applies_nothing(tmp_path: Path) -> None:
    with LocalReceiver(tmp_path / "rx", error_rate=1.0, seed=1) as rx, client(rx) as c:
        statuses = {save(c, [record(n)]).status_code for n in range(12)}
        assert statuses == {500, 503}
        assert c.get(PAGE, params={"entity": ENTITY}).status_code in (500, 503)
        health = httpx.get(rx.base_url + "/health", trust_env=False)
        assert health.status_code == 200  # never faulted, nor is /_admin
        stats = rx.stats()
        assert stats["records"]["stored"] == 0 and stats["injected"]["errors"] == 13
        rx.set_faults(error_rate=0)
        assert save(c, [record(1)]).status_code == 200


def test_rate_limit_answers_429_with_retry_after(rx: LocalReceiver) -> None:
    rx.set_faults(rate_limit_rate=1.0, retry_after=3)
    with client(rx) as c:
        r = save(c, [record(1)])
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
        rx.set_faults(rate_limit_rate=0)
        assert everything(c) == []


def test_dropped_connections_half_after_the_save_was_applied(rx: LocalReceiver) -> None:
    rx.set_faults(drop_rate=1.0, seed=11)
    sent = [record(n) for n in range(16)]
    for rec in sent:
        # A fresh connection each time, so nothing could be retried on a pooled one.
        with client(rx) as c, pytest.raises(httpx.TransportError):
            save(c, [rec])
    rx.set_faults(drop_rate=0)
    injected = rx.stats()["injected"]
    before, after = injected.get("droppedBefore", 0), injected.get("droppedAfter", 0)
    assert before + after == 16 and before > 0 and after > 0, injected
    with client(rx) as c:
        stored = {x["record_id"] for x in everything(c)}
    # Exactly the saves dropped after they were applied are stored: the client never heard.
    assert len(stored) == after and stored <= {r["record_id"] for r in sent}

    # The same seed gives the same drops (repeatable runs).
    rx.set_faults(drop_rate=1.0, seed=11)
    for rec in sent:
        with client(rx) as c, pytest.raises(httpx.TransportError):
            save(c, [rec])
    again = rx.stats()["injected"]
    assert (again["droppedBefore"], again["droppedAfter"]) == (2 * before, 2 * after)


def test_reject_rate_answers_failed_records(rx: LocalReceiver) -> None:
    rx.set_faults(reject_rate=1.0)
    with client(rx) as c:
        body = save(c, [record(n) for n in range(3)]).json()
        assert body["savedRecords"] == 0
        assert [(f["index"], f["reason"]) for f in body["failedRecords"]] == [
            (i, REJECTED) for i in range(3)]
        assert everything(c) == []

        rx.set_faults(reject_rate=0.5, seed=3)
        body = save(c, [record(n) for n in range(40)]).json()
        rejected = {f["index"] for f in body["failedRecords"]}
        assert 0 < len(rejected) < 40 and body["savedRecords"] == 40 - len(rejected)
        stored = {x["record_id"] for x in everything(c)}
        assert stored == {record(n)["record_id"] for n in range(40) if n not in rejected}
    assert rx.stats()["injected"]["rejectedRecords"] == 3 + len(rejected)


def test_ignore_fields_drops_a_field_silently(tmp_path: Path) -> None:
    with LocalReceiver(tmp_path / "rx", ignore_fields=["gpa_points"]) as rx, client(rx) as c:
        rec = record(1)
        assert save(c, [rec]).json() == {"savedRecords": 1, "failedRecords": []}
        got = find(c, rec["record_id"]).json()
        assert "gpa_points" not in got  # a server on an older contract: not stored at all
        assert content(got) == {k: v for k, v in rec.items() if k != "gpa_points"}
        # an ignored field is not checked either
        assert save(c, [record(2, gpa_points="n/a")]).json()["savedRecords"] == 1
        rx.set_faults(ignore_fields=[])
        save(c, [rec])
        assert find(c, rec["record_id"]).json()["gpa_points"] == 3.33


def test_fault_settings_are_checked(rx: LocalReceiver) -> None:
    for bad in ({"error_rate": 2}, {"bogus": 1}, {"ignore_fields": ["no_such_field"]},
                {"accept_gzip": "yes"}, {"retry_after": -1}):
        with pytest.raises(LocalReceiverError):
            rx.set_faults(**bad)
    r = httpx.post(rx.base_url + "/_admin/faults", content=b"[1]", trust_env=False)
    assert r.status_code == 400
    assert rx.set_faults(latency_ms=5)["latency_ms"] == 5
    with pytest.raises(LocalReceiverError):
        LocalReceiver(rx.data_dir, drop_rate=3)


def test_latency_slows_api_answers_only(rx: LocalReceiver) -> None:
    rx.set_faults(latency_ms=300)
    with client(rx) as c:
        r = c.get(PAGE, params={"entity": ENTITY})
        health = httpx.get(rx.base_url + "/health", trust_env=False)
    assert r.elapsed.total_seconds() >= 0.3
    assert health.elapsed.total_seconds() < 0.3


# -- state -----------------------------------------------------------------------------------------


def test_state_survives_a_restart(rx: LocalReceiver) -> None:
    with client(rx) as c:
        save(c, [record(n) for n in range(3)])
        c.post(f"org-data/{record(0)['record_id']}/delete", params={"entity": ENTITY})
    endpoint, pid = rx.endpoint, rx.pid
    rx.stop()
    assert not rx.running
    rx.start()
    assert rx.pid != pid and rx.endpoint == endpoint  # same port again
    with client(rx) as c:
        held = {x["record_id"]: x for x in everything(c)}
        assert set(held) == {record(n)["record_id"] for n in range(3)}
        assert held[record(0)["record_id"]]["deleted"] is True
        save(c, [record(1)])
        assert find(c, record(1)["record_id"]).json()["version"] == 2
    assert rx.db_path.is_file()


# -- the fast checks are the schema's checks -------------------------------------------------------

ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2.0, 2.5, 101, 1e300, -0.0, "", "x", "A", "Z", "mixed",
    "060416591306", "060416591307", "0604165913", "٠٦٠٤١٦٥٩١٣٠٦", "060416591306\n",
    "2026-09-01", "2026-02-30", "2026-9-1", "2026-11-20T09:15:00Z", "2026-11-20T09:15:00",
    "2026-11-20T25:15:00Z", "2026-11-20t09:15:00.5+05:00", "2026-09-01/2026-12-31",
    "6B06102", "6X06102", "f" * 64, "F" * 64, str(uuid.uuid4()), "not-a-uuid", [], ["a"], [1],
    {}, {"a": 1},
]


def test_fast_checks_agree_with_the_exact_ones_and_with_jsonschema() -> None:
    contract = load_contract()
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for name in contract.fields:
        prop = contract.properties[name]
        fmt = prop.get("format")
        schema_check = jsonschema.Draft202012Validator(dict(prop), format_checker=checker)
        for value in ODD_VALUES:
            rec = record(1, **{name: value})
            fast, slow = contract.check_record(rec), contract.check_record_slowly(rec)
            assert fast == slow, (name, value)
            if value is None and name in (*contract.key_fields, "record_id"):
                continue  # a null key is "missing", whatever its schema says
            if fmt is not None and fmt not in checker.checkers:
                continue  # jsonschema cannot check this format here
            if isinstance(value, str) and value.endswith("\n"):
                continue  # ECMA-262 '$' does not match before a final newline; Python's re does
            exact_ok = contract.checks[name](value) is None
            if name in contract.checksum_fields:  # stricter than the schema: the check digit
                assert not exact_ok or schema_check.is_valid(value), (name, value)
            else:
                assert exact_ok == schema_check.is_valid(value), (name, value)
