"""The LRS source under faults the real LRS cannot produce by itself, made by a proxy in front of
it: 500s, 429 with Retry-After, garbled and truncated pages, dropped connections, a `more` link to
another host, and an LRS that is down."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipelines.generate import TroubleShares, build_university, generate_statements
from pipelines.generate.writers import post_to_lrs
from pipelines.ingest import IngestError, ingest_source
from pipelines.local.lrs import LocalLRS, free_port
from pipelines.store.state import StateStore
from pipelines.store.zones import Zones
from tests.integration.conftest import lrs_ids, lrs_settings
from tests.support.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.integration
N = 1_200


@pytest.fixture
def seeded(lrs: LocalLRS) -> LocalLRS:
    univ = build_university(11, students=30, disciplines=4)
    post_to_lrs(generate_statements(univ, N, 11, TroubleShares.none(),
                                    datetime(2026, 9, 1, tzinfo=UTC),
                                    datetime(2026, 10, 1, tzinfo=UTC)),
                lrs.endpoint, ("a", "b"))
    return lrs


@pytest.fixture
def proxy(seeded: LocalLRS) -> FaultProxy:
    p = FaultProxy(seeded.endpoint)
    yield p  # type: ignore[misc]
    p.close()


def is_page(n: int):  # the n-th statements request (1-based)
    count = {"n": 0}

    def match(path: str) -> bool:
        if "/statements" not in path:
            return False
        count["n"] += 1
        return count["n"] == n
    return match


def stored_ids(tmp: Path) -> list[str]:
    return sorted(Zones(tmp / "data").read_normalised("main-lrs")["statement_id"].to_pylist())


@pytest.mark.parametrize("fault", [
    Fault("status", status=500), Fault("status", status=503), Fault("garble"),
    Fault("truncate"), Fault("drop"),
], ids=["500", "503", "garbled-json", "truncated", "dropped"])
def test_lrs_transient_fault_is_retried_and_nothing_lost(
    proxy: FaultProxy, seeded: LocalLRS, creds: dict[str, str], tmp_path: Path, fault: Fault,
) -> None:
    fault.match = is_page(3)
    proxy.faults.append(fault)
    s = lrs_settings(tmp_path, proxy.url, page_size=100)
    r = ingest_source(s, "main-lrs")
    assert r.retries == 1 and r.status == "succeeded"
    assert stored_ids(tmp_path) == sorted(lrs_ids(seeded.endpoint))
    assert r.read == N and r.written == N


def test_lrs_429_retry_after_is_honoured(
    proxy: FaultProxy, creds: dict[str, str], tmp_path: Path,
) -> None:
    proxy.faults.append(Fault("retry-after", match=is_page(2), retry_after="1"))
    s = lrs_settings(tmp_path, proxy.url, page_size=300, backoff_cap=30)
    from pipelines.sources.lrs import XapiLrsSource

    src = XapiLrsSource(s.source("main-lrs"), s.source("main-lrs").credentials())
    r = ingest_source(s, "main-lrs", source=src)
    assert r.retries == 1 and src.stats.waits == [1.0]
    assert r.written == N


def test_lrs_persistent_garbage_fails_clearly_and_changes_no_state(
    proxy: FaultProxy, creds: dict[str, str], tmp_path: Path,
) -> None:
    proxy.faults.append(Fault("garble", match=lambda p: "/statements" in p and "more" not in p
                              and "since" not in p and "limit=100" in p, times=99))
    s = lrs_settings(tmp_path, proxy.url, page_size=100, max_attempts=3)
    with pytest.raises(IngestError) as err:
        ingest_source(s, "main-lrs")
    msg = str(err.value)
    assert "source 'main-lrs'" in msg and "gave up after 3 attempts" in msg
    assert "not a valid statements result" in msg and f"127.0.0.1:{proxy.port}" in msg
    assert StateStore(s.state_url).get("main-lrs").watermark is None
    assert stored_ids(tmp_path) == []
    assert not list((tmp_path / "data").rglob("*.parquet"))


def test_lrs_down_fails_with_source_url_and_cause(creds: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    lrs_settings(tmp_path, f"http://127.0.0.1:{port}/xAPI/", max_attempts=2)
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", "--json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["status"] == "failed"
    assert "source 'main-lrs'" in doc["error"] and "connection failed" in doc["error"]
    assert f"127.0.0.1:{port}/xAPI/statements" in doc["error"]
    assert "error:" in out.stderr or doc["error"]


class _Catcher(ThreadingHTTPServer):
    seen: list[dict[str, str]]


def test_lrs_more_link_to_other_host_is_refused_without_credentials(
    proxy: FaultProxy, creds: dict[str, str], tmp_path: Path,
) -> None:
    seen: list[dict[str, str]] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers.items()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.2", 0), H)  # another host on the loopback range
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        elsewhere = f"http://127.0.0.2:{other.server_address[1]}"
        proxy.faults.append(Fault("more-elsewhere", match=is_page(2), elsewhere=elsewhere))
        s = lrs_settings(tmp_path, proxy.url, page_size=100)
        with pytest.raises(IngestError, match="leads to another host; refused") as err:
            ingest_source(s, "main-lrs")
        assert elsewhere in str(err.value)
        assert seen == [], "a request went to the other host"
        assert all(r.headers.get("Authorization", "").startswith("Basic ")
                   for r in proxy.requests)
        assert StateStore(s.state_url).get("main-lrs").watermark is None
    finally:
        other.shutdown()
        other.server_close()


def test_lrs_every_request_carries_version_and_auth(
    proxy: FaultProxy, creds: dict[str, str], tmp_path: Path,
) -> None:
    s = lrs_settings(tmp_path, proxy.url, page_size=250)
    ingest_source(s, "main-lrs")
    gets = [r for r in proxy.requests if r.method == "GET"]
    assert len(gets) == 5
    assert all(r.headers["X-Experience-API-Version"] == "1.0.3" for r in gets)
    assert all(r.headers["Authorization"] == "Basic Zm9vdHByaW50Om5vdC1hLXNlY3JldA=="
               for r in gets)
    assert "ascending=true" in gets[0].path and "until=" in gets[0].path
