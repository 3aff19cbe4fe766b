"""The partition merge of a commit: the streaming merge writes exactly what the in-memory merge
writes (same rows, same order), a row group of ``STREAM_ROWS`` at a time, and staged rows out
of time order still end sorted (they take the in-memory path)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import contracts
from pipelines.sources.base import Window
from pipelines.store import zones as Z

SCHEMA = contracts.normalised_statement().arrow_schema(with_partitions=False)
DAY = datetime(2026, 10, 5, tzinfo=UTC)


def rows(ids: list[str], minutes: list[int | None], tag: str) -> pa.Table:
    """Rows of the contract with the given ids and time keys (``stored``; None: no stored
    and no timestamp), every other column null except a marker in ``run_id``."""
    n = len(ids)
    stored = [DAY + timedelta(minutes=m) if m is not None else None for m in minutes]
    cols = {}
    for f in SCHEMA:
        if f.name == "statement_id":
            cols[f.name] = pa.array(ids, f.type)
        elif f.name == "stored":
            cols[f.name] = pa.array(stored, f.type)
        elif f.name == "run_id":
            cols[f.name] = pa.array([f"{tag}{i}" for i in range(n)], f.type)
        elif not f.nullable and pa.types.is_string(f.type):
            cols[f.name] = pa.array(["x"] * n, f.type)
        elif not f.nullable and pa.types.is_boolean(f.type):
            cols[f.name] = pa.array([False] * n, f.type)
        elif not f.nullable and pa.types.is_integer(f.type):
            cols[f.name] = pa.array([0] * n, f.type)
        elif not f.nullable and pa.types.is_timestamp(f.type):
            cols[f.name] = pa.array([DAY] * n, f.type)
        else:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def stage(tmp: Path, name: str, t: pa.Table) -> tuple[Path, Z.Batches]:
    path = tmp / f"{name}.arrow"
    day = pa.array([DAY.date().isoformat()] * t.num_rows, pa.string())
    groups = Z.write_stage_file(path, t.append_column("date", day), SCHEMA)
    return path, groups[DAY.date().isoformat()]


def merged(dest: Path) -> list[tuple[str, str]]:
    t = pq.read_table(dest)
    return list(zip(t["statement_id"].to_pylist(), t["run_id"].to_pylist(), strict=True))


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Z, "STREAM_ROWS", 7)


@pytest.mark.parametrize("with_old", [False, True])
@pytest.mark.parametrize("since_min,until_min", [(100, 400), (None, 400), (100, None)])
def test_streaming_merge_equals_the_in_memory_merge(
    tmp_path: Path, small_groups: None, with_old: bool, since_min: int | None,
    until_min: int | None,
) -> None:
    rnd = random.Random(7)
    lo = since_min if since_min is not None else 0
    hi = until_min if until_min is not None else 600
    # staged pieces in time order, with ids repeated across and within pieces
    minutes = sorted(rnd.randint(lo + 1, hi) for _ in range(60))
    ids = [f"id-{rnd.randint(0, 40):03d}" for _ in minutes]
    pieces = [stage(tmp_path, f"p{k}", rows(ids[k * 15:(k + 1) * 15],
                                            list(minutes[k * 15:(k + 1) * 15]), f"new{k}-"))
              for k in range(4)]
    window = Window(DAY + timedelta(minutes=since_min) if since_min is not None else None,
                    DAY + timedelta(minutes=until_min) if until_min is not None else None)
    dests = [tmp_path / "stream" / "part.parquet", tmp_path / "whole" / "part.parquet"]
    if with_old:  # a previous file: rows before, inside and after the window, and untimed ones
        old_min: list[int | None] = [*sorted(rnd.randint(0, 700) for _ in range(30))]
        old_min += [None, None]
        old = rows([f"id-{rnd.randint(20, 60):03d}" for _ in old_min], old_min, "old-")
        old = Z._first_by_id(old)
        for d in dests:
            Z.write_parquet_atomic(old, d, "prev")
    stream = Z.merge_partition(dests[0], "d", pieces, window, SCHEMA, "r1")
    whole = Z._merge_whole(dests[1], Z.PartitionResult("d", stream.written, stream.duplicates),
                           pieces, window, SCHEMA, "r1")
    assert merged(dests[0]) == merged(dests[1])
    assert (stream.written, stream.action) == (len(set(ids)), "written") == (
        whole.written, whole.action)
    assert stream.duplicates == len(ids) - len(set(ids))
    md = pq.ParquetFile(dests[0]).metadata
    assert md.num_row_groups > 1 and max(
        md.row_group(i).num_rows for i in range(md.num_row_groups)) <= 7 + 15


def test_staged_rows_out_of_order_end_sorted(tmp_path: Path, small_groups: None) -> None:
    pieces = [stage(tmp_path, "a", rows(["a", "b", "c"], [50, 60, 70], "x")),
              stage(tmp_path, "b", rows(["d", "a", "e"], [10, 55, 80], "y"))]
    dest = tmp_path / "out" / "part.parquet"
    r = Z.merge_partition(dest, "d", pieces, Window(None, None), SCHEMA, "r1")
    assert (r.written, r.duplicates) == (5, 1)
    assert merged(dest) == [("d", "y0"), ("a", "x0"), ("b", "x1"), ("c", "x2"), ("e", "y2")]


def test_a_partition_left_empty_is_removed(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "part.parquet"
    Z.write_parquet_atomic(rows(["a"], [30], "old"), dest, "prev")
    window = Window(DAY, DAY + timedelta(hours=1))
    r = Z.merge_partition(dest, "d", [], window, SCHEMA, "r1")
    assert (r.action, dest.exists(), list(dest.parent.iterdir())) == ("removed", False, [])
    r = Z.merge_partition(dest, "d", [], window, SCHEMA, "r1")
    assert r.action == "none"


def test_an_old_file_without_a_newer_column_is_read_with_todays_schema(
    tmp_path: Path, small_groups: None,
) -> None:
    dest = tmp_path / "out" / "part.parquet"
    old = rows(["a", "b"], [10, 500], "old")
    dest.parent.mkdir(parents=True)
    pq.write_table(old.drop_columns(["actor_name"]), dest)  # as an earlier version wrote it
    pieces = [stage(tmp_path, "p", rows(["c"], [200], "new"))]
    window = Window(DAY + timedelta(minutes=100), DAY + timedelta(minutes=300))
    r = Z.merge_partition(dest, "d", pieces, window, SCHEMA, "r1")
    assert r.action == "written"
    assert merged(dest) == [("a", "old0"), ("c", "new0"), ("b", "old1")]
    assert pq.read_table(dest)["actor_name"].null_count == 3
