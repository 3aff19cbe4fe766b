"""Ingestion from statement dumps into the zones: formats, windows, replacement, exactly once."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from pipelines import config
from pipelines.ingest import IngestError, ingest_source
from pipelines.store.zones import Zones
from tests.conftest import corpus, write_config

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


def st(i: int, stored: datetime, **over: object) -> dict[str, object]:
    s: dict[str, object] = {
        "id": str(uuid.UUID(int=i, version=4)),
        "actor": {"account": {"homePage": "https://lms.university.kz", "name": f"s{i % 7}"}},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
        "object": {"id": f"https://lms.university.kz/mod/page/view.php?id={i % 5}"},
        "timestamp": (stored - timedelta(seconds=30)).isoformat(),
        "stored": stored.isoformat(),
    }
    s.update(over)
    return s


def settings_for(tmp: Path, path: str) -> config.Settings:
    write_config(tmp, f'[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "{path}"\n')
    return config.load(tmp / "footprint.toml")


def ids_in(tmp: Path) -> list[str]:
    return sorted(Zones(tmp / "data").read_normalised("dump")["statement_id"].to_pylist())


def test_ingest_file_formats_ndjson_gzip_array_envelope_single(tmp_path: Path) -> None:
    d = tmp_path / "dumps"
    d.mkdir()
    rows = [st(i, T0 + timedelta(hours=i)) for i in range(8)]
    (d / "a.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in rows[:2]) + b"\n\n")
    with gzip.open(d / "b.ndjson.gz", "wb") as fh:
        fh.write(b"\n".join(orjson.dumps(r) for r in rows[2:4]))
    (d / "c.json").write_text(json.dumps(rows[4:6], indent=2))
    (d / "d.json").write_text(json.dumps({"statements": [rows[6]], "more": ""}))
    (d / "e.json").write_text(json.dumps(rows[7], indent=2))
    s = settings_for(tmp_path, "dumps/*")
    r = ingest_source(s, "dump")
    assert (r.read, r.written, r.rejected) == (8, 8, 0)
    assert ids_in(tmp_path) == sorted(str(x["id"]) for x in rows)
    refs = Zones(tmp_path / "data").read_normalised("dump")["fetch_ref"].to_pylist()
    assert any(ref.endswith("a.ndjson") for ref in refs)


def test_ingest_file_bad_lines_kept_raw_with_reason_and_balance_holds(tmp_path: Path) -> None:
    lines = [orjson.dumps(st(1, T0)), b'{"id": "broken', orjson.dumps(st(2, T0)),
             orjson.dumps(st(3, T0, result={"success": "false"})), orjson.dumps(st(1, T0))]
    (tmp_path / "x.ndjson").write_bytes(b"\n".join(lines))
    r = ingest_source(settings_for(tmp_path, "x.ndjson"), "dump")
    assert (r.read, r.written, r.rejected, r.duplicates) == (5, 2, 2, 1)
    assert r.rejected_by_reason == {"malformed-json": 1, "wrong-type": 1}
    raw = Zones(tmp_path / "data").read_raw("dump").to_pylist()
    assert [x["raw"] for x in raw] == lines  # every statement exactly as received, in order
    assert [x["status"] for x in raw] == ["normalised", "rejected", "normalised", "rejected",
                                          "normalised"]
    assert "$.result.success" in raw[3]["detail"]


def test_ingest_file_whole_file_not_json_is_one_rejected_record(tmp_path: Path) -> None:
    src = corpus("xapi-schema", "dev-resources", "data", "statements", "simple.json")
    r = ingest_source(settings_for(tmp_path, str(src)), "dump")
    # The file holds a raw newline inside a string: strict JSON rejects it, and we keep it.
    assert (r.read, r.rejected, r.rejected_by_reason) == (1, 1, {"malformed-json": 1})
    assert Zones(tmp_path / "data").read_raw("dump")["raw"][0].as_py() == src.read_bytes().strip()


def test_ingest_rerun_replaces_window_never_appends(tmp_path: Path) -> None:
    f = tmp_path / "x.ndjson"
    rows = [st(i, T0 + timedelta(hours=6 * i)) for i in range(20)]  # 6 days
    f.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    s = settings_for(tmp_path, "x.ndjson")
    ingest_source(s, "dump")
    ingest_source(s, "dump")
    assert ids_in(tmp_path) == sorted(str(r["id"]) for r in rows)
    files = sorted((tmp_path / "data" / "normalised").rglob("*.parquet"))
    assert [p.parent.name for p in files] == [f"date=2026-10-0{d}" for d in range(1, 7)]
    assert not list((tmp_path / "data").rglob(".tmp-*"))
    assert not (tmp_path / "data" / "_staging" / "dump").exists() or not any(
        (tmp_path / "data" / "_staging" / "dump").iterdir())

    # The dump changes: statement 3 is gone, statement 99 arrives. A backfill of day 1 only
    # replaces day 1's window; the mirror run then makes the whole zone equal to the dump.
    new = [r for r in rows if r["id"] != str(uuid.UUID(int=3, version=4))]
    new.append(st(99, T0 + timedelta(hours=30)))
    f.write_bytes(b"\n".join(orjson.dumps(r) for r in new))
    b = ingest_source(s, "dump", since=T0 - timedelta(seconds=1), until=T0 + timedelta(hours=20))
    assert b.mode == "backfill" and b.outside_window == len(new) - 3  # 0h, 6h, 12h are inside
    got = ids_in(tmp_path)
    assert str(uuid.UUID(int=3, version=4)) not in got  # inside the window: replaced
    assert str(uuid.UUID(int=99, version=4)) not in got  # outside the window: untouched
    ingest_source(s, "dump")
    assert ids_in(tmp_path) == sorted(str(r["id"]) for r in new)


def test_ingest_missing_file_fails_clearly_and_records_the_run(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "nothing/*.ndjson")
    with pytest.raises(IngestError, match=r"source 'dump': no file matches this path"):
        ingest_source(s, "dump")
    from pipelines.store.state import StateStore

    runs = StateStore(s.state_url).runs("dump")
    assert runs[0]["status"] == "failed" and "no file matches" in runs[0]["error"]


def test_ingest_partition_files_carry_the_contract(tmp_path: Path) -> None:
    (tmp_path / "x.ndjson").write_bytes(orjson.dumps(st(1, T0)))
    ingest_source(settings_for(tmp_path, "x.ndjson"), "dump")
    f = next((tmp_path / "data" / "normalised").rglob("part-0.parquet"))
    schema = pq.read_schema(f)
    assert schema.metadata[b"contract"] == b"normalised-statement"
    assert schema.field("actor_name").metadata[b"pii"] == b"direct"
    assert b"uuid5" in schema.field("statement_id").metadata[b"description"]


def test_zones_raw_folder_swap_cut_short_is_finished(tmp_path: Path) -> None:
    """A crash between the two renames of the raw folder swap: the next run finishes it."""
    z = Zones(tmp_path)
    base = tmp_path / "raw" / "source=dump"
    (base / "window=a--b.new-r2").mkdir(parents=True)
    (base / "window=a--b.new-r2" / "part-000001.parquet").write_bytes(b"new")
    (base / "window=a--b.old-r2").mkdir()
    (base / "window=a--b.old-r2" / "part-000001.parquet").write_bytes(b"old")
    (base / "window=c--d.old-r3").mkdir()  # crashed before the new folder was moved: keep old
    (base / "window=c--d.old-r3" / "part-000001.parquet").write_bytes(b"old-cd")
    z.clean_leftovers("dump")
    assert sorted(p.name for p in base.iterdir()) == ["window=a--b", "window=c--d"]
    assert (base / "window=a--b" / "part-000001.parquet").read_bytes() == b"new"
    assert (base / "window=c--d" / "part-000001.parquet").read_bytes() == b"old-cd"


def test_ingest_many_batches_through_worker_processes(tmp_path: Path) -> None:
    """Batches go to worker processes from the second one on: same rows as in one process."""
    rows = [st(i, T0 + timedelta(minutes=17 * i)) for i in range(3000)]
    lines = [orjson.dumps(r) for r in rows]
    lines.insert(1500, b"{broken")
    lines.append(lines[10])  # an exact duplicate
    (tmp_path / "x.ndjson").write_bytes(b"\n".join(lines))
    write_config(tmp_path, '[storage]\nbatch_statements = 400\nworkers = 2\n'
                 '[[sources]]\nname = "dump"\nkind = "xapi-file"\npath = "x.ndjson"\n')
    r = ingest_source(config.load(tmp_path / "footprint.toml"), "dump")
    assert (r.read, r.written, r.rejected, r.duplicates) == (3002, 3000, 1, 1)
    assert ids_in(tmp_path) == sorted(str(x["id"]) for x in rows)
    raw = Zones(tmp_path / "data").read_raw("dump")
    assert raw["raw"].to_pylist() == lines  # every statement, in reading order
