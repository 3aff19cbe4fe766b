"""Fixtures that start real servers: the LRS (Learning Locker xapi-statements) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from pipelines import config
from pipelines.local.lrs import LocalLRS, lrs_dir

pytestmark = pytest.mark.integration

CREDS = {"FOOTPRINT_SOURCE_MAIN_LRS_USERNAME": "footprint",
         "FOOTPRINT_SOURCE_MAIN_LRS_PASSWORD": "not-a-secret"}


def _need_lrs() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed; scripts/bootstrap.sh needs Node.js for the LRS")
    if not (lrs_dir() / "node_modules" / "xapi-statements").is_dir():
        pytest.fail("lrs/node_modules is missing: run scripts/bootstrap.sh (npm ci in lrs/)")


@pytest.fixture
def lrs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLRS]:
    """A fresh, empty LRS for one test, stopped (by its own pid) afterwards."""
    _need_lrs()
    server = LocalLRS(tmp_path_factory.mktemp("lrs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    return CREDS


def lrs_settings(folder: Path, endpoint: str, batch: int = 2000, **source: object
                 ) -> config.Settings:
    keys: dict[str, object] = {"backoff_base": 0.05, "backoff_cap": 2.0, **source}
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    (folder / "footprint.toml").write_text(
        f'[storage]\nroot = "data"\nbatch_statements = {batch}\n'
        '[state]\nurl = "sqlite:///data/state.db"\n'
        f'[[sources]]\nname = "main-lrs"\nkind = "xapi-lrs"\nendpoint = "{endpoint}"\n' + extra
    )
    return config.load(folder / "footprint.toml")


def lrs_ids(endpoint: str) -> list[str]:
    """Every statement id the LRS lists now, by plain paging (independent of our source)."""
    ids: list[str] = []
    base = endpoint.split("/xAPI/")[0]
    url: str | None = endpoint + "statements?limit=1000&ascending=true"
    with httpx.Client(headers={"X-Experience-API-Version": "1.0.3"},
                      auth=("a", "b"), timeout=60) as c:
        while url:
            r = c.get(url)
            r.raise_for_status()
            doc = r.json()
            ids.extend(s["id"] for s in doc["statements"])
            url = base + doc["more"] if doc.get("more") else None
    return ids


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


def env_with(extra: dict[str, str]) -> dict[str, str]:
    e = dict(os.environ)
    e.update(extra)
    return e
