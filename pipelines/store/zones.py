"""The storage root and its zones, and the one way data gets into them: a window commit.

Layout under the storage root (folders a person can find)::

    raw/source=<s>/window=<since>--<until>/part-*.parquet       every statement as received
    normalised/source=<s>/date=<YYYY-MM-DD>/part-0.parquet      one row per statement
    _staging/<s>/<run_id>/...                                   a run's work in progress

A run reads one stored-time window (since, until] of one source. Its output replaces exactly that
window: in each date partition the window touches, rows whose time key (``stored``, else
``timestamp``) falls in the window are replaced by the run's rows, rows outside it stay, and rows
are unique by ``statement_id`` (the source's id, or a uuid5 of the bytes), so re-running a
window, or two windows that overlap, never leaves a second copy. Every file is written to a
temporary name, flushed to disk and renamed over the old one, so a reader (or a crash) sees a
partition before or after, never half way. A crash between partitions leaves the watermark where
it was, and the next run of the window rewrites those partitions again from the source: the end
state is the same.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines import contracts
from pipelines.sources.base import Window

PART_FILE = "part-0.parquet"

RAW_SCHEMA = pa.schema([
    pa.field("statement_id", pa.string(), metadata={
        b"description": b"Statement id (for a rejected statement: found by pattern, or null)"}),
    pa.field("raw", pa.binary(), nullable=False, metadata={
        b"description": b"The statement's bytes exactly as received", b"pii": b"direct"}),
    pa.field("status", pa.string(), nullable=False, metadata={
        b"description": b"normalised or rejected"}),
    pa.field("reason", pa.string(), metadata={b"description": b"Reason code when rejected"}),
    pa.field("detail", pa.string(), metadata={b"description": b"What was wrong, with the path"}),
    pa.field("fetch_ref", pa.string(), nullable=False, metadata={
        b"description": b"The page URL or the file path"}),
    pa.field("fetch_index", pa.int64(), nullable=False, metadata={
        b"description": b"Position in the page, or line number in an NDJSON file"}),
    pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
], metadata={b"zone": b"raw"})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_atomic(table: pa.Table, dest: Path, tmp_tag: str) -> None:
    """Write ``table`` to ``dest`` through a temporary file, fsync'd, then renamed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{tmp_tag}-{dest.name}"
    with tmp.open("wb") as fh:
        pq.write_table(table, fh, compression="zstd", compression_level=1,
                       row_group_size=128 * 1024)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)


@dataclass
class CommitReport:
    written: int = 0
    duplicates: int = 0
    partitions: int = 0
    removed_partitions: int = 0


class Zones:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.raw = self.root / "raw"
        self.normalised = self.root / "normalised"
        self.staging = self.root / "_staging"
        self.file_schema = contracts.normalised_statement().arrow_schema(with_partitions=False)

    def ensure(self) -> None:
        for d in (self.raw, self.normalised):
            d.mkdir(parents=True, exist_ok=True)

    def source_dir(self, zone: Path, source: str) -> Path:
        return zone / f"source={source}"

    def partition_file(self, source: str, day: str) -> Path:
        return self.source_dir(self.normalised, source) / f"date={day}" / PART_FILE

    def partition_dates(self, source: str) -> list[str]:
        base = self.source_dir(self.normalised, source)
        if not base.is_dir():
            return []
        return sorted(
            p.name[5:] for p in base.iterdir()
            if p.name.startswith("date=") and (p / PART_FILE).exists()
        )

    def clean_leftovers(self, source: str) -> int:
        """Remove what a crashed run of this source left: staging and temporary files.

        Only safe while holding the source's lock (no other run of it is writing).
        """
        n = 0
        st = self.staging / source
        if st.exists():
            shutil.rmtree(st)
            n += 1
        for zone in (self.raw, self.normalised):
            base = self.source_dir(zone, source)
            if base.is_dir():
                for tmp in base.rglob(".tmp-*"):
                    tmp.unlink(missing_ok=True)
                    n += 1
        # A raw folder swap cut short: finish it (the new folder was complete before it began).
        base = self.source_dir(self.raw, source)
        if base.is_dir():
            for d in sorted(base.glob("window=*.new-*")):
                final = d.with_name(d.name.split(".new-")[0])
                if final.exists():
                    shutil.rmtree(d)
                else:
                    os.replace(d, final)
                n += 1
            for d in sorted(base.glob("window=*.old-*")):
                final = d.with_name(d.name.split(".old-")[0])
                if final.exists():
                    shutil.rmtree(d)
                else:
                    os.replace(d, final)
                n += 1
        return n

    def begin(self, source: str, run_id: str, window: Window) -> WindowWrite:
        return WindowWrite(self, source, run_id, window)

    def read_normalised(self, source: str | None = None,
                        window: Window | None = None) -> pa.Table:
        """The normalised zone as one table (with the partition columns).

        Optionally one source, and only the rows of one window (reading only the date
        partitions the window can touch).
        """
        schema = contracts.normalised_statement().arrow_schema()
        if not self.normalised.is_dir():
            return schema.empty_table()
        part = ds.partitioning(
            pa.schema([("source", pa.string()), ("date", pa.string())]), flavor="hive"
        )
        dataset = ds.dataset(self.normalised, format="parquet", partitioning=part,
                             schema=schema)
        flt = (ds.field("source") == source) if source else None
        if window is not None:
            if window.since is not None:
                after = ds.field("date") >= window.since.date().isoformat()
                flt = after if flt is None else flt & after
            if window.until is not None:
                before = ds.field("date") <= window.until.date().isoformat()
                flt = before if flt is None else flt & before
        table = dataset.to_table(filter=flt)
        return table.filter(in_window(table, window)) if window is not None else table

    def normalised_with_ids(self, source: str, ids: pa.Array) -> pa.Table:
        """The source's normalised rows whose ``statement_id`` is one of ``ids``, from every
        date partition, as :meth:`read_normalised` gives them (partition columns included).

        The partitions are scanned and filtered as they are read, so memory holds the rows
        found, not the zone (which grows by every statement ever ingested)."""
        schema = contracts.normalised_statement().arrow_schema()
        base = self.normalised / f"source={source}"
        if len(ids) == 0 or not base.is_dir():
            return schema.empty_table()
        part = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
        dataset = ds.dataset(base, format="parquet", partitioning=part,
                             schema=pa.schema([f for f in schema if f.name != "source"]))
        t = dataset.to_table(filter=ds.field("statement_id").isin(ids))
        t = t.append_column("source", pa.repeat(pa.scalar(source, pa.string()), t.num_rows))
        return t.select(schema.names).cast(schema)

    def count_normalised(self, source: str) -> int:
        total = 0
        for day in self.partition_dates(source):
            total += pq.ParquetFile(self.partition_file(source, day)).metadata.num_rows
        return total

    def read_raw(self, source: str | None = None) -> pa.Table:
        files = sorted(f for f in self.raw.glob(f"source={source or '*'}/window=*/*.parquet")
                       if ".new-" not in f.parent.name and ".old-" not in f.parent.name)
        if not files:
            return RAW_SCHEMA.empty_table()
        return pa.concat_tables(pq.read_table(f) for f in files)


def in_window(table: pa.Table, window: Window) -> pa.Array | pa.ChunkedArray:
    """Which rows' time key (``stored``, else ``timestamp``) falls in the window (since, until]."""
    key = pc.coalesce(table["stored"], table["timestamp"])
    mask = pc.is_valid(key)
    if window.since is not None:
        mask = pc.and_(mask, pc.greater(key, pa.scalar(window.since, key.type)))
    if window.until is not None:
        mask = pc.and_(mask, pc.less_equal(key, pa.scalar(window.until, key.type)))
    return pc.fill_null(mask, False)


Batches = tuple[int, int]
"""The record batches [start, stop) of a staged file that hold one date's rows."""


def write_stage_file(path: Path, table: pa.Table, schema: pa.Schema) -> dict[str, Batches]:
    """Staged rows (with a ``date`` column): one Arrow IPC file, each date's rows in a run of
    record batches (the table's chunks, never copied).

    The commit then reads back exactly one date's rows at a time, so memory stays bounded by a
    partition, not by the run. Arrow IPC rather than Parquet: staged rows are written once and
    read once, and IPC does neither encoding nor decoding (a batch is read straight from the
    memory-mapped file, its columns one by one). Rows already grouped by date (the usual case:
    a source read in ``stored`` order) are not sorted again. Returns date -> batches.
    """
    dates = table["date"]
    n = len(dates)
    if n > 1 and not pc.all(pc.greater_equal(dates.slice(1), dates.slice(0, n - 1))).as_py():
        table = table.take(pc.sort_indices(dates))
    groups: dict[str, Batches] = {}
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        start = batch = 0
        for item in pc.value_counts(table["date"]):
            day, count = item["values"].as_py(), item["counts"].as_py()
            rows = table.slice(start, count).drop_columns(["date"])
            chunks = rows.to_batches()
            for b in chunks:
                w.write_batch(b)
            groups[day] = (batch, batch + len(chunks))
            batch += len(chunks)
            start += count
    return groups


def read_staged(path: Path, batches: Batches, columns: list[str] | None = None) -> pa.Table:
    """One date's staged rows (``batches`` of a staged file), optionally some columns only
    (the file is memory-mapped: the other columns are never read)."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    out = []
    for i in range(*batches):
        b = reader.get_batch(i)
        out.append(b.select(columns) if columns is not None else b)
    if not out:
        schema = reader.schema
        return (schema if columns is None else pa.schema([schema.field(c) for c in columns])
                ).empty_table()
    return pa.Table.from_batches(out)


def write_raw_part(path: Path, table: pa.Table) -> None:
    """One batch of the raw zone: every statement as received, with its fate; fsync'd."""
    with path.open("wb") as fh:
        pq.write_table(table, fh, compression="zstd", compression_level=1,
                       use_dictionary=["status", "reason", "fetch_ref", "run_id"])
        fh.flush()
        os.fsync(fh.fileno())


@dataclass
class PartitionResult:
    day: str
    written: int = 0
    duplicates: int = 0
    action: str = "none"  # "written", "removed" or "none"


# Rows per row group of a partition written by a streaming merge: what a merge holds at once.
STREAM_ROWS = 16_384


def merge_partition(dest: Path, day: str, pieces: list[tuple[Path, Batches]], window: Window,
                    schema: pa.Schema, run_id: str) -> PartitionResult:
    """One date partition after the run: rows outside the window kept, the window's replaced.

    A pure function of its arguments and the files, so that partitions can merge in parallel.

    Streaming, so that memory does not grow with the partition: a first pass reads only the
    staged rows' ids and time keys and keeps each id's first row; when those rows are in time
    order (the usual case: an LRS pages by ``stored``), the partition is written a row group at
    a time: the old rows before the window, the staged rows piece by piece, the old rows after
    the window. Otherwise the partition is merged and sorted in memory (:func:`_merge_whole`).
    Both give the same file content.
    """
    out = PartitionResult(day)
    firsts, ordered, new_ids = _first_rows(pieces)
    out.written = sum(m.true_count for m in firsts)
    out.duplicates = sum(len(m) for m in firsts) - out.written
    if not ordered:
        return _merge_whole(dest, out, pieces, window, schema, run_id)
    # read with today's schema, as the in-memory merge does (a column added since is null)
    old = ds.dataset(dest, format="parquet", schema=schema) if dest.exists() else None
    tmp = dest.parent / f".tmp-{run_id}-{dest.name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with RowGroups(tmp, schema) as w:
        if old is not None and window.since is not None:
            for t in _old_rows(old, window, new_ids, before=True):
                w.add(t)
        for (f, i), first in zip(pieces, firsts, strict=True):
            if first.true_count:
                w.add(read_staged(f, i).filter(first))
        if old is not None:
            for t in _old_rows(old, window, new_ids, before=False):
                w.add(t)
        rows = w.rows
    return _finish(dest, tmp, rows, out)


def _first_rows(pieces: list[tuple[Path, Batches]]) -> tuple[list[pa.Array], bool, pa.Array]:
    """Per piece, which rows are their id's first; whether those rows are in time order; and
    their ids. Reads only three columns of each piece."""
    cols = ["statement_id", "stored", "timestamp"]
    keys = [read_staged(f, i, cols) for f, i in pieces]
    if not keys:
        return [], True, pa.array([], pa.string())
    allk = pa.concat_tables(keys)
    ids = allk["statement_id"].combine_chunks()
    n = len(ids)
    if pc.count_distinct(ids).as_py() == n:
        mask = pa.array(np.ones(n, bool))
    else:
        idx = pa.table({"id": ids, "i": pa.array(np.arange(n, dtype=np.int64))})
        first = idx.group_by("id", use_threads=False).aggregate([("i", "min")])["i_min"]
        keep = np.zeros(n, bool)
        keep[first.to_numpy()] = True
        mask = pa.array(keep)
    key = pc.coalesce(allk["stored"], allk["timestamp"]).combine_chunks().filter(mask)
    m = len(key)
    ordered = m < 2 or pc.all(pc.greater_equal(key.slice(1), key.slice(0, m - 1))).as_py()
    firsts, start = [], 0
    for t in keys:
        firsts.append(mask.slice(start, t.num_rows))
        start += t.num_rows
    return firsts, bool(ordered), ids.filter(mask)


def _old_rows(old: ds.Dataset, window: Window, new_ids: pa.Array,
              before: bool) -> Iterator[pa.Table]:
    """The rows of the partition's previous file that stay, a row group at a time: those
    before the window (time key <= since), or those after it (> until, or no time key); an id
    the run wrote again is dropped."""
    for batch in old.to_batches(batch_size=STREAM_ROWS, use_threads=False):
        t = pa.Table.from_batches([batch])
        key = pc.coalesce(t["stored"], t["timestamp"])
        if before:
            assert window.since is not None
            keep = pc.fill_null(pc.less_equal(key, pa.scalar(window.since, key.type)), False)
        elif window.until is not None:
            keep = pc.fill_null(pc.greater(key, pa.scalar(window.until, key.type)), True)
        else:
            keep = pc.is_null(key)
        if len(new_ids):
            keep = pc.and_(keep, pc.invert(pc.is_in(t["statement_id"], value_set=new_ids)))
        t = t.filter(keep)
        if t.num_rows:
            yield t


class RowGroups:
    """A Parquet file written a row group of ``STREAM_ROWS`` at a time, fsync'd on close."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.fh = path.open("wb")
        self.writer = pq.ParquetWriter(self.fh, schema, compression="zstd", compression_level=1)
        self.buf: list[pa.Table] = []
        self.held = 0
        self.rows = 0

    def add(self, t: pa.Table) -> None:
        self.buf.append(t)
        self.held += t.num_rows
        self.rows += t.num_rows
        if self.held >= STREAM_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.held:
            self.writer.write_table(pa.concat_tables(self.buf), row_group_size=STREAM_ROWS)
        self.buf, self.held = [], 0

    def __enter__(self) -> RowGroups:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._flush()
            self.writer.close()
            self.fh.flush()
            os.fsync(self.fh.fileno())
        finally:
            self.fh.close()


def _finish(dest: Path, tmp: Path, rows: int, out: PartitionResult) -> PartitionResult:
    """Put the written file in place (or remove the partition when nothing is left in it)."""
    if rows == 0:
        tmp.unlink(missing_ok=True)
        if dest.exists():
            dest.unlink()
            _fsync_dir(dest.parent)
            out.action = "removed"
        return out
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    out.action = "written"
    pa.default_memory_pool().release_unused()  # hand freed buffers back before the next merge
    return out


def _merge_whole(dest: Path, out: PartitionResult, pieces: list[tuple[Path, Batches]],
                 window: Window, schema: pa.Schema, run_id: str) -> PartitionResult:
    """The in-memory merge: the partition's rows at once, deduplicated and sorted by time."""
    tables = [read_staged(f, i) for f, i in pieces]
    staged = pa.concat_tables(tables) if tables else schema.empty_table()
    unique = _first_by_id(staged)
    if dest.exists():
        old = pq.read_table(dest, schema=schema)
        kept = old.filter(pc.invert(in_window(old, window)))
        combined = _first_by_id(pa.concat_tables([unique, kept]))
    else:
        combined = unique
    if combined.num_rows == 0:
        return _finish(dest, dest.parent / f".tmp-{run_id}-{dest.name}", 0, out)
    write_parquet_atomic(_in_time_order(combined), dest, run_id)
    out.action = "written"
    del tables, staged, unique, combined
    pa.default_memory_pool().release_unused()
    return out


class Executor(Protocol):
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]: ...


class WindowWrite:
    """The output of one run over one window: staged batch by batch, then committed.

    Batches are written (raw part and staged rows) by whoever processes them, possibly worker
    processes; this object keeps the list and, at commit, merges every touched partition and
    swaps the window's raw folder in.
    """

    def __init__(self, zones: Zones, source: str, run_id: str, window: Window) -> None:
        self.zones = zones
        self.source = source
        self.run_id = run_id
        self.window = window
        self.stage_dir = zones.staging / source / run_id
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        self._staged: list[tuple[Path, dict[str, Batches]]] = []
        self._raw_parts: list[Path] = []
        self.raw_dir = zones.source_dir(zones.raw, source) / f"window={window.label()}"

    def paths(self, seq: int) -> tuple[Path, Path]:
        """Where batch ``seq`` writes its staged rows and its raw part."""
        return self.stage_dir / f"rows-{seq:06d}.arrow", self.stage_dir / f"raw-{seq:06d}.parquet"

    def record(self, staged: tuple[Path, dict[str, Batches]] | None, raw_part: Path | None) -> None:
        if staged is not None:
            self._staged.append(staged)
        if raw_part is not None:
            self._raw_parts.append(raw_part)

    def in_window(self, table: pa.Table) -> pa.Array | pa.ChunkedArray:
        return in_window(table, self.window)

    def _touched_dates(self) -> list[str]:
        w = self.window
        lo = w.since.date() if w.since else date.min
        hi = w.until.date() if w.until else date.max
        existing = {d for d in self.zones.partition_dates(self.source)
                    if lo <= date.fromisoformat(d) <= hi}
        staged = {d for _, groups in self._staged for d in groups}
        return sorted(existing | staged)

    def commit(self, executor: Executor,
               crash_hook: Callable[[str], None] | None = None) -> CommitReport:
        """Replace the window's rows partition by partition, then swap the raw folder in."""
        report = CommitReport()
        jobs = []
        for day in self._touched_dates():
            pieces = [(f, groups[day]) for f, groups in self._staged if day in groups]
            jobs.append(executor.submit(
                merge_partition, self.zones.partition_file(self.source, day), day, pieces,
                self.window, self.zones.file_schema, self.run_id))
        for job in jobs:
            res: PartitionResult = job.result()
            report.written += res.written
            report.duplicates += res.duplicates
            if res.action == "written":
                report.partitions += 1
            elif res.action == "removed":
                report.removed_partitions += 1
            if crash_hook:
                crash_hook("commit-partition")
        self._publish_raw()
        return report

    def _publish_raw(self) -> None:
        """Swap the window's raw folder for this run's parts: new folder, then two renames.

        A crash between the renames is finished by ``Zones.clean_leftovers`` on the next run.
        """
        final = self.raw_dir
        new = final.with_name(f"{final.name}.new-{self.run_id}")
        old = final.with_name(f"{final.name}.old-{self.run_id}")
        new.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(self._raw_parts, 1):
            os.replace(part, new / f"part-{i:06d}.parquet")
        _fsync_dir(new)
        if final.exists():
            os.replace(final, old)
        os.replace(new, final)
        _fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.stage_dir, ignore_errors=True)


def _in_time_order(table: pa.Table) -> pa.Table:
    """Rows by their time key (a stable sort, skipped when they already are: the usual case)."""
    key = pc.coalesce(table["stored"], table["timestamp"])
    if isinstance(key, pa.ChunkedArray):
        key = key.combine_chunks()
    n = len(key)
    if n < 2 or pc.all(pc.greater_equal(key.slice(1), key.slice(0, n - 1))).as_py():
        return table
    return table.take(pc.sort_indices(key))


def _first_by_id(table: pa.Table) -> pa.Table:
    """Rows unique by statement_id, keeping each id's first row."""
    if table.num_rows == 0:
        return table
    ids = table["statement_id"]
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table
    idx = pa.table({"id": ids, "i": pa.array(range(table.num_rows), pa.int64())})
    first = idx.group_by("id", use_threads=False).aggregate([("i", "min")])["i_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))
