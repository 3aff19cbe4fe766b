"""WindowRaw: the verification stage's streamed view of a window's raw zone gives the same
verdicts and the same bytes as holding the whole raw table (RawStatements), part file by part
file, with real ingested files (several parts, invalid and duplicate statements among them)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines import config
from pipelines.generate import TroubleShares, run_generate
from pipelines.ingest import ingest_source
from pipelines.sources.base import Window
from pipelines.store.zones import Zones
from pipelines.verify.rules import RawStatements, _validate
from pipelines.verify.stage import WindowRaw, _raw_files
from tests.conftest import write_config


def _raw_of_window(zones: Zones, source: str, window: Window,
                   columns: tuple[str, ...] = ("raw",)) -> pa.Table:
    """The reference: the window's normalised raw statements, every part file read whole."""
    files = _raw_files(zones, source, window)
    t = pa.concat_tables(pq.read_table(f, columns=[*columns, "status"]) for f in files)
    return t.filter(pc.equal(t["status"], "normalised")).select(list(columns))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> config.Settings:
    gen = tmp_path_factory.mktemp("gen")
    run_generate(gen, seed=5, students=40, disciplines=3, statements=3000,
                 trouble=TroubleShares(), start=datetime(2026, 9, 1, tzinfo=UTC),
                 end=datetime(2026, 10, 1, tzinfo=UTC))
    tmp = tmp_path_factory.mktemp("run")
    path = write_config(tmp, f"""
[storage]
root = "data"
batch_statements = 500
workers = 1
[state]
url = "sqlite:///data/state.db"
[[sources]]
name = "dump"
kind = "xapi-file"
path = "{gen / "statements.ndjson.gz"}"
""")
    s = config.load(path)
    r = ingest_source(s, "dump")  # no [reference]: the raw zone alone
    assert r.read == 3000 and r.rejected > 0
    return s


def test_window_raw_equals_the_whole_raw_table(ingested: config.Settings) -> None:
    zones = Zones(ingested.storage_root)
    window = Window(None, None)
    files = _raw_files(zones, "dump", window)
    assert len(files) >= 5
    whole = RawStatements(_raw_of_window(zones, "dump", window))
    streamed = WindowRaw(files, "1.0.3", ())
    assert streamed.order == whole.order
    assert streamed.order_array().to_pylist() == whole.order
    shas = sorted({s for s in whole.order if s is not None})
    expected = _validate(shas, whole, "1.0.3", ())
    assert expected[0], "the generated trouble includes invalid statements"
    assert streamed.verdicts(shas, "1.0.3", ()) == expected
    assert _validate(shas[:50], streamed, "1.0.3", ()) == _validate(shas[:50], whole, "1.0.3", ())
    # bytes, fetched on demand (one part read per part needed), and one at a time
    pick = shas[::97]
    streamed.prefetch(pick)
    assert all(bytes(streamed.get(s) or b"") == bytes(whole.get(s) or b"-") for s in pick)
    fresh = WindowRaw(files, "1.0.3", ())
    assert bytes(fresh.get(shas[-1]) or b"") == bytes(whole.get(shas[-1]) or b"-")
    assert fresh.get("0" * 64) is None
    # raw-zone columns of some bodies, in the order asked, reading only their part files
    cols = ["fetch_ref", "fetch_index", "fetched_at", "run_id"]
    meta = _raw_of_window(zones, "dump", window, tuple(cols))
    at = np.array([len(whole.order) - 1, 3, 0, 1500, 3], np.int64)
    assert streamed.columns_at(at, cols).equals(meta.take(pa.array(at)))
    assert streamed.columns_at(np.zeros(0, np.int64), cols).num_rows == 0


def test_parts_judged_in_worker_processes_give_the_same(
        ingested: config.Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above PARALLEL_JUDGE_BYTES the parts are judged in worker processes: same digests,
    places, problems and tolerated problems as judging them here, in the same order."""
    import pipelines.verify.stage as stage

    files = _raw_files(Zones(ingested.storage_root), "dump", Window(None, None))
    here = WindowRaw(files, "2.0.0", {"openedx"}, workers=1)
    monkeypatch.setattr(stage, "PARALLEL_JUDGE_BYTES", 0)

    def not_here(*_: object) -> None:
        raise AssertionError("a part was judged in the test's own process")

    monkeypatch.setattr(stage, "validate_detailed_bytes", not_here)  # the workers import theirs
    pooled = WindowRaw(files, "2.0.0", {"openedx"}, workers=2)
    assert pooled.order_array().equals(here.order_array())
    assert (pooled._part == here._part).all() and (pooled._row == here._row).all()
    assert pooled._problems == here._problems and pooled._problems
    assert pooled._tolerated == here._tolerated
    assert pooled.verdicts(here.order[:200], "2.0.0", {"openedx"}) == here.verdicts(
        here.order[:200], "2.0.0", {"openedx"})


def test_window_raw_refuses_unknown_bodies_and_other_rules(ingested: config.Settings) -> None:
    zones = Zones(ingested.storage_root)
    streamed = WindowRaw(_raw_files(zones, "dump", Window(None, None)), "1.0.3", ())
    with pytest.raises(ValueError, match="no raw bytes for 1 statement bodies"):
        streamed.verdicts([streamed.order[0] or "", "f" * 64], "1.0.3", ())
    with pytest.raises(ValueError, match=r"judged as xAPI 1\.0\.3"):
        streamed.verdicts([], "2.0.0", ())
    with pytest.raises(ValueError, match=r"judged as xAPI 1\.0\.3"):
        streamed.verdicts([], "1.0.3", {"openedx"})


def test_an_empty_window() -> None:
    w = WindowRaw([], "1.0.3", ())
    assert (w.order, w.verdicts([], "1.0.3", ()), w.get("a")) == ([], ({}, {}), None)


def test_verification_uses_the_lean_pool_and_gives_the_default_back() -> None:
    import pyarrow as pa

    from pipelines.verify.stage import _lean_memory_pool

    before = pa.default_memory_pool().backend_name
    with _lean_memory_pool():
        assert pa.default_memory_pool().backend_name == "jemalloc"
        kept = pa.array(list(range(1000)))  # made by jemalloc, freed later under the default
    assert pa.default_memory_pool().backend_name == before
    assert kept.sum().as_py() == 499500
    with pytest.raises(RuntimeError), _lean_memory_pool():
        raise RuntimeError("a failed verification")
    assert pa.default_memory_pool().backend_name == before
