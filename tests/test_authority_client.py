"""pipelines.deliver.authority: the client's rules, each on a scripted server.

The end-to-end tests run the client against the reference receiver; these pin the behaviours
that receiver cannot be made to show on demand (an exact Retry-After, a 415 in the middle of a
run, an answer whose failedRecords name no record, a 404 from a wrong path), with httpx's
MockTransport standing in for the network.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

import httpx
import orjson
import pytest

from pipelines.config import AuthoritySettings, Credentials
from pipelines.deliver.authority import AuthorityClient, FatalAuthorityError

URL = "https://authority.example.kz/isvuz/api/"
RECORDS = [{"record_id": f"r{i}", "iin": "060416591306"} for i in range(3)]


def client(handler: Callable[[httpx.Request], httpx.Response], sleeps: list[float],
           creds: Credentials | None = None, **settings: object) -> AuthorityClient:
    s = AuthoritySettings(endpoint=URL, **settings)  # type: ignore[arg-type]
    return AuthorityClient(s, creds or Credentials("980140000005", "secret"),
                           transport=httpx.MockTransport(handler), sleep=sleeps.append)


def ok(saved: int = 3, failed: list[object] | None = None) -> httpx.Response:
    return httpx.Response(200, json={"savedRecords": saved, "failedRecords": failed or []})


def test_retry_after_is_honoured_then_success() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}),
                    httpx.Response(503), ok()])
    sleeps: list[float] = []
    c = client(lambda _r: next(answers), sleeps, backoff_base=0.01)
    ans = c.save(RECORDS)
    assert ans.saved == 3 and ans.attempts == 3 and ans.accounted(3)
    assert sleeps[0] == 7.0 and sleeps[1] <= 0.02  # Retry-After wins, then base x 2, jittered
    assert c.stats.retries == 2


def test_any_5xx_but_501_is_retried_and_giving_up_is_fatal_with_attempts() -> None:
    sleeps: list[float] = []
    c = client(lambda _r: httpx.Response(599), sleeps, max_attempts=4)
    with pytest.raises(FatalAuthorityError, match="gave up after 4 attempts") as err:
        c.save(RECORDS)
    assert err.value.attempts == 4 and len(sleeps) == 3
    c = client(lambda _r: httpx.Response(501), sleeps)
    with pytest.raises(FatalAuthorityError, match="HTTP 501") as err:
        c.save(RECORDS)
    assert err.value.attempts == 1


def test_415_turns_gzip_off_for_the_rest_of_the_run() -> None:
    seen: list[str | None] = []

    def handler(r: httpx.Request) -> httpx.Response:
        enc = r.headers.get("Content-Encoding")
        seen.append(enc)
        if enc == "gzip":
            return httpx.Response(415, json={"error": "no gzip here"})
        assert orjson.loads(r.content) == RECORDS
        return ok()

    c = client(handler, [])
    assert c.save(RECORDS).saved == 3 and c.save(RECORDS).saved == 3
    assert seen == ["gzip", None, None] and c.stats.gzip is False


def test_gzip_body_is_the_json_of_the_records() -> None:
    bodies: list[bytes] = []

    def handler(r: httpx.Request) -> httpx.Response:
        bodies.append(gzip.decompress(r.content))
        return ok()

    client(handler, []).save(RECORDS)
    assert orjson.loads(bodies[0]) == RECORDS


def test_failed_records_placed_by_index_or_id_else_unaccounted() -> None:
    c = client(lambda _r: ok(1, [{"index": 0, "reason": "bad iin"},
                                 {"recordId": "r2", "reason": "bad period"}]), [])
    ans = c.save(RECORDS)
    assert [(f.index, f.reason) for f in ans.failed] == [(0, "bad iin"), (2, "bad period")]
    assert ans.accounted(3)
    c = client(lambda _r: ok(2, [{"reason": "something, somewhere"}]), [])
    ans = c.save(RECORDS)
    assert ans.failed[0].index == -1 and not ans.accounted(3)
    c = client(lambda _r: ok(1, []), [])  # says 1 saved, lists no failure: 2 unaccounted for
    assert not c.save(RECORDS).accounted(3)
    c = client(lambda _r: httpx.Response(200, json={"failedRecords": None}), [])
    ans = c.save(RECORDS)  # no number, no failures: taken as all saved
    assert ans.saved is None and ans.failed == () and ans.accounted(3)


def test_unauthorised_is_fatal_and_names_the_variables() -> None:
    c = client(lambda _r: httpx.Response(401, json={"error": "unauthorized"}), [])
    with pytest.raises(FatalAuthorityError, match="FOOTPRINT_AUTHORITY_USERNAME"):
        c.save(RECORDS)


def test_bearer_and_basic_headers() -> None:
    auth: list[str] = []

    def handler(r: httpx.Request) -> httpx.Response:
        auth.append(r.headers["Authorization"])
        return ok()

    client(handler, [], Credentials(token="t0k3n")).save(RECORDS)
    client(handler, []).save(RECORDS)
    assert auth[0] == "Bearer t0k3n" and auth[1].startswith("Basic ")


def test_404_is_no_such_record_only_with_the_api_body() -> None:
    c = client(lambda _r: httpx.Response(404, json={"error": "not found"}), [])
    assert c.find_by_id("r9") is None and c.delete("r9") is False
    c = client(lambda _r: httpx.Response(404, text="<html>no such path</html>"), [])
    with pytest.raises(FatalAuthorityError, match="check \\[authority\\] entity"):
        c.delete("r9")


def test_paths_carry_the_entity_code_and_pages_until_last() -> None:
    urls: list[str] = []

    def handler(r: httpx.Request) -> httpx.Response:
        urls.append(str(r.url))
        page = int(r.url.params["page"])
        return httpx.Response(200, json={"content": [{"record_id": f"p{page}"}],
                                         "last": page == 2, "totalPages": 3})

    c = client(handler, [], entity="ONLINE_LEARNING_2026", page_size=1)
    assert [r["record_id"] for r in c.find_all()] == ["p0", "p1", "p2"]
    assert all("entity=ONLINE_LEARNING_2026" in u and "size=1" in u for u in urls)


def test_dropped_connection_is_retried() -> None:
    calls = {"n": 0}

    def handler(r: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return ok()

    sleeps: list[float] = []
    assert client(handler, sleeps).save(RECORDS).attempts == 2 and len(sleeps) == 1
