"""pipelines.orchestrate without Airflow: schedules, windows, the publish summary, alerts."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipelines import config, orchestrate
from pipelines.config import ConfigError


@pytest.mark.parametrize(("value", "step", "cron"), [
    ("PT1H", timedelta(hours=1), "0 * * * *"),
    ("pt15m", timedelta(minutes=15), "*/15 * * * *"),
    ("PT1M", timedelta(minutes=1), "* * * * *"),
    ("PT60M", timedelta(hours=1), "0 * * * *"),
    ("PT6H", timedelta(hours=6), "0 */6 * * *"),
    ("P1D", timedelta(days=1), "0 0 * * *"),
    ("PT24H", timedelta(days=1), "0 0 * * *"),
])
def test_ingest_schedule_maps_intervals_that_tile_a_day_to_utc_cron(
        value: str, step: timedelta, cron: str) -> None:
    s = orchestrate.ingest_schedule(value)
    assert (s.step, s.cron) == (step, cron)


@pytest.mark.parametrize("value", ["PT7M", "PT5H", "P2D", "PT90M", "PT0M", "P", "PT", "1h",
                                   "PT1.5H"])
def test_ingest_schedule_refuses_intervals_that_do_not_tile_a_day(value: str) -> None:
    with pytest.raises(ValueError, match="FOOTPRINT_INGEST_INTERVAL"):
        orchestrate.ingest_schedule(value)


def test_ingest_schedule_default_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOOTPRINT_INGEST_INTERVAL", raising=False)
    assert orchestrate.ingest_schedule().interval == "PT1H"
    monkeypatch.setenv("FOOTPRINT_INGEST_INTERVAL", "PT30M")
    assert orchestrate.ingest_schedule().cron == "*/30 * * * *"


def test_windows_tile_the_period_on_the_interval_grid() -> None:
    t = datetime(2026, 11, 2, 8, 30, tzinfo=UTC)
    w = orchestrate.windows(t, t + timedelta(hours=2), timedelta(hours=1))
    assert w == [(datetime(2026, 11, 2, h, tzinfo=UTC), datetime(2026, 11, 2, h + 1, tzinfo=UTC))
                 for h in (8, 9, 10)]
    for (_, end), (start, _) in itertools.pairwise(w):
        assert end == start  # no gap, no overlap
    assert orchestrate.windows("2026-11-02T08:00:00Z", "2026-11-02T09:00:00Z",
                               timedelta(hours=1)) == [(w[0][0], w[0][1])]
    quarter = orchestrate.windows("2026-11-02T08:07:00+05:00", "2026-11-02T03:31:00Z",
                                  timedelta(minutes=15))
    assert quarter[0][0] == datetime(2026, 11, 2, 3, 0, tzinfo=UTC) and len(quarter) == 3
    with pytest.raises(ValueError, match="is not before"):
        orchestrate.windows(t, t, timedelta(hours=1))


def test_utc_accepts_pendulum_like_and_naive_times() -> None:
    aware = datetime(2026, 11, 2, 13, 0, tzinfo=UTC).astimezone()
    assert orchestrate.utc(aware) == datetime(2026, 11, 2, 13, 0, tzinfo=UTC)
    assert orchestrate.utc(datetime(2026, 11, 2, 13)) == datetime(2026, 11, 2, 13, tzinfo=UTC)
    assert type(orchestrate.utc("2026-11-02T13:00:00Z")) is datetime


def test_publish_summarises_extract_and_verify() -> None:
    e = {"source": "s", "run_id": "r", "start": "a", "end": "b", "read": 5, "written": 4,
         "rejected": 1, "duplicates": 0}
    v = {"status": "succeeded", "verified": 4, "published": 3, "quarantined": 0, "voided": 1,
         "quality": {"passed": True, "failed_warning": ["volume"]}}
    p = orchestrate.publish(e, v)
    assert p["status"] == "published" and p["published"] == 3 and p["voided"] == 1
    assert p["quality_warnings"] == ["volume"]
    skipped = orchestrate.publish(e, {"status": "skipped", "message": "no reference"})
    assert skipped["status"] == "skipped" and skipped["message"] == "no reference"
    json.dumps(p)


def test_task_defaults_retry_with_exponential_backoff_and_notify() -> None:
    d = orchestrate.task_defaults()
    assert d["owner"] == "footprint" and d["retries"] > 0
    assert d["retry_exponential_backoff"] > 1 and d["max_retry_delay"] >= d["retry_delay"]
    assert d["on_failure_callback"] is orchestrate.on_task_failure


def test_fetch_connections_uses_the_getter_and_skips_unknown(tmp_path: Path) -> None:
    p = tmp_path / "footprint.toml"
    p.write_text('[[sources]]\nname = "a"\nkind = "xapi-lrs"\nendpoint = "http://h/"\n'
                 'connection = "lrs_a"\n[[sources]]\nname = "b"\nkind = "xapi-lrs"\n'
                 'endpoint = "http://h/"\nconnection = "missing"\n'
                 '[authority]\nendpoint = "http://a/"\nconnection = "auth"\n')

    class Conn:
        def __init__(self, login: str) -> None:
            self.login = login

        def as_json(self) -> str:
            return json.dumps({"login": self.login})

    def get(conn_id: str) -> Conn:
        if conn_id == "missing":
            raise LookupError(conn_id)
        return Conn(conn_id)

    assert orchestrate.connection_ids(p, "all") == ["lrs_a", "missing", "auth"]
    assert orchestrate.fetch_connections(p, "sources", get) == {"lrs_a": '{"login": "lrs_a"}'}
    assert orchestrate.fetch_connections(p, "authority", get) == {"auth": '{"login": "auth"}'}


# -- alerts --------------------------------------------------------------------------------------
class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        type(self).received.append({"type": self.headers["Content-Type"],
                                    "body": json.loads(self.rfile.read(n))})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()
    server.server_close()


def test_notify_failure_logs_and_posts_json_to_the_webhook(
        tmp_path: Path, webhook: str, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "footprint.toml"
    # email to a port nothing listens on: reported as failed, never raised
    p.write_text(f'[alerts]\nwebhook = "{webhook}"\nemail = ["ops@uni.kz"]\n'
                 f'smtp_host = "127.0.0.1"\nsmtp_port = 9\ntimeout = 2\n')
    event = {"dag_id": "footprint_ingest", "task_id": "verify", "map_index": 0,
             "data_interval_start": datetime(2026, 11, 2, 8, tzinfo=UTC),
             "exception": "VerifyError: quality check failed"}
    with caplog.at_level("ERROR", logger="footprint.orchestrate"):
        out = orchestrate.notify_failure(p, event)
    assert out["logged"] and out["webhook"] == "sent (204)"
    assert out["email"].startswith("failed:")
    assert any("footprint_ingest" in r.getMessage() for r in caplog.records)
    (got,) = _Hook.received
    assert got["type"] == "application/json"
    assert got["body"] == {"kind": "footprint.task_failed", "dag_id": "footprint_ingest",
                           "task_id": "verify", "map_index": 0,
                           "data_interval_start": "2026-11-02T08:00:00Z",
                           "exception": "VerifyError: quality check failed"}


def test_notify_failure_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOOTPRINT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert orchestrate.notify_failure(None, {"dag_id": "d"})["logged"]  # no configuration
    p = tmp_path / "footprint.toml"
    p.write_text('[alerts]\nwebhook = "http://127.0.0.1:9/hook"\ntimeout = 1\n')
    assert orchestrate.notify_failure(p, {"dag_id": "d"})["webhook"].startswith("failed:")


def test_on_task_failure_builds_the_event_from_the_context(
        tmp_path: Path, webhook: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "footprint.toml"
    p.write_text(f'[alerts]\nwebhook = "{webhook}"\n')
    monkeypatch.setenv("FOOTPRINT_CONFIG", str(p))

    class TI:
        dag_id, task_id, run_id, map_index, try_number = "d", "t", "r", -1, 4

    orchestrate.on_task_failure({"ti": TI(), "exception": RuntimeError("boom")})
    body = _Hook.received[0]["body"]
    assert (body["dag_id"], body["task_id"], body["try_number"]) == ("d", "t", 4)
    assert body["exception"] == "RuntimeError: boom"


@pytest.mark.parametrize(("body", "message"), [
    ('webhook = "ftp://x"', r"alerts\.webhook: 'ftp://x' must be an http"),
    ('email = ["not-an-address"]', r"alerts\.email: 'not-an-address' is not an email"),
    ('smtp_port = 70000', r"alerts\.smtp_port: 70000 is not a TCP port"),
    ('hook = "http://x"', r"alerts: unknown key `hook`"),
])
def test_config_alerts_errors_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    p = tmp_path / "footprint.toml"
    p.write_text(f"[alerts]\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        config.load(p)


def test_config_alerts_absent_or_empty_is_none(tmp_path: Path) -> None:
    p = tmp_path / "footprint.toml"
    p.write_text('[storage]\nroot = "data"\n')
    assert config.load(p).alerts is None
    p.write_text('[alerts]\nsmtp_host = "mail"\n')
    assert config.load(p).alerts is None
    p.write_text('[alerts]\nemail = ["a@b.kz", "c@d.kz"]\n')
    a = config.load(p).alerts
    assert a is not None and a.email == ("a@b.kz", "c@d.kz") and a.webhook is None
