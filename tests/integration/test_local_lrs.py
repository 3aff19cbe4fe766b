"""The local LRS (xapi-statements under lrs/) starts, answers, listens locally only, stops."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines.local.lrs import LRS_DIR_ENV, LocalLRS, LocalLRSError

pytestmark = pytest.mark.integration

HEADERS = {"X-Experience-API-Version": "1.0.3"}


@pytest.fixture(scope="module")
def lrs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLRS]:
    with LocalLRS(tmp_path_factory.mktemp("lrs")) as server:
        yield server


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A = TCP_LISTEN
                continue
            if v6:
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
            else:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _ss_listeners(pid: int) -> list[str]:
    """Local address:port of every listening TCP socket of ``pid``, per ``ss -ltnpH``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def test_about_answers_the_xapi_version(lrs: LocalLRS) -> None:
    assert lrs.endpoint == f"http://127.0.0.1:{lrs.port}/xAPI/"
    response = httpx.get(lrs.endpoint + "about", headers=HEADERS, trust_env=False)
    assert response.status_code == 200
    assert "1.0.3" in response.json()["version"]
    assert lrs.log_path.is_file()


def test_statement_round_trip(lrs: LocalLRS) -> None:
    statement_id = str(uuid.uuid4())
    statement = {
        "id": statement_id,
        "actor": {"mbox": "mailto:learner@example.org", "objectType": "Agent"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
        "object": {"id": "http://example.org/activity/1", "objectType": "Activity"},
    }
    with httpx.Client(base_url=lrs.endpoint, headers=HEADERS, trust_env=False) as client:
        posted = client.post("statements", json=[statement])
        assert posted.status_code == 200
        assert posted.json() == [statement_id]
        fetched = client.get("statements", params={"statementId": statement_id})
        assert fetched.status_code == 200
        assert fetched.json()["id"] == statement_id


def test_more_links_page_through_everything(lrs: LocalLRS) -> None:
    marker = f"http://example.org/paging/{uuid.uuid4()}"
    posted: list[str] = []
    with httpx.Client(base_url=lrs.endpoint, headers=HEADERS, trust_env=False) as client:
        for batch in range(3):
            statements = [
                {
                    "actor": {"mbox": f"mailto:learner{i}@example.org"},
                    "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
                    "object": {"id": marker},
                }
                for i in range(batch * 5, batch * 5 + 5)
            ]
            response = client.post("statements", json=statements)
            assert response.status_code == 200
            posted += response.json()
        for ascending in (True, False):
            params: dict[str, str | int] = {"activity": marker, "limit": 4}
            if ascending:
                params["ascending"] = "true"
            page = client.get("statements", params=params).json()
            seen = [s["id"] for s in page["statements"]]
            while page["more"]:
                assert page["more"].startswith("/xAPI/statements?")
                page = client.get(lrs.endpoint.removesuffix("/xAPI/") + page["more"]).json()
                seen += [s["id"] for s in page["statements"]]
            assert seen == (posted if ascending else posted[::-1])


def test_listens_on_loopback_only(lrs: LocalLRS) -> None:
    assert lrs.pid is not None
    assert _listening_addresses(lrs.port) == {"127.0.0.1"}
    if shutil.which("ss") is not None:
        assert _ss_listeners(lrs.pid) == [f"127.0.0.1:{lrs.port}"]


def test_stops_cleanly(tmp_path: Path) -> None:
    server = LocalLRS(tmp_path)
    server.start()
    pid, port = server.pid, server.port
    assert pid is not None
    assert os.getpgid(pid) == pid  # its own process group
    server.stop()
    assert server.pid is None
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _listening_addresses(port) == set()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    server.stop()  # idempotent


def test_missing_install_says_to_bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LRS_DIR_ENV, str(tmp_path / "lrs"))
    with pytest.raises(LocalLRSError, match=r"scripts/bootstrap\.sh"):
        LocalLRS(tmp_path / "data").start()


def test_port_in_use_fails_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = LocalLRS(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(LocalLRSError, match="EADDRINUSE"):
            server.start(timeout=15)
        assert server.pid is None
