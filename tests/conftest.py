from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
PG_URL = os.environ.get("FOOTPRINT_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


def corpus(*parts: str) -> Path:
    """A path in ../shared/corpus, or skip the test saying it is absent."""
    p = CORPUS.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"the shared corpus is absent here ({p} not found); it lives beside the repo")
    return p


def _pg_available() -> str | None:
    try:
        import sqlalchemy as sa

        eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(sa.text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # no server, no database, no driver
        return f"no PostgreSQL at {PG_URL}: {type(exc).__name__}: {str(exc).splitlines()[0]}"


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh state database: SQLite in tmp_path, or a fresh schema on the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    why = _pg_available()
    if why:
        pytest.skip(why)
    import sqlalchemy as sa

    schema = "fp_" + uuid.uuid4().hex[:10]
    eng = sa.create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(sa.text(f"create schema {schema}"))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with eng.begin() as c:
        c.execute(sa.text(f"drop schema {schema} cascade"))
    eng.dispose()


def write_config(folder: Path, body: str) -> Path:
    p = folder / "footprint.toml"
    p.write_text(body, encoding="utf-8")
    return p
