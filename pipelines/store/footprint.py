"""The verified and quarantine zones: where verification publishes.

Layout under the storage root::

    verified/source=<s>/date=<YYYY-MM-DD>/part-0.parquet        the verified footprint
    quarantine/source=<s>/window=<since>--<until>/part-0.parquet what did not verify, and why

The verified zone is partitioned like the normalised zone (``date`` is the UTC date of
``stored``, else of ``timestamp``), so the same window replacement applies: re-verifying a window
replaces exactly that window's rows, and rows are unique by ``statement_id`` within a source.
A quarantine file belongs to the window whose verification wrote it and is replaced when that
window is verified again (a replay rewrites it without the records that left; a window
overlapping it takes out the records it judged again). Every file is written through a temporary
name, fsync'd and renamed (:func:`write_parquet_atomic`); what a killed writer leaves is removed
by :meth:`FootprintZones.clean_leftovers` on the next verification of the source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from datetime import date
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines import contracts
from pipelines.faults import crashpoint
from pipelines.sources.base import Window
from pipelines.store.zones import (
    PART_FILE,
    RowGroups,
    _first_by_id,
    _fsync_dir,
    _in_time_order,
    in_window,
    write_parquet_atomic,
)

VERIFIED = contracts.load("verified-footprint", 1)
QUARANTINE = contracts.load("quarantine", 1)


class DayRows(Protocol):
    """Verified rows handed over one ``date`` partition at a time."""

    def days(self) -> list[str]: ...

    def day(self, day: str) -> pa.Table: ...


class TableDays:
    """A table's rows by ``date`` (sorted by day once, then sliced: no copy a day)."""

    def __init__(self, rows: pa.Table) -> None:
        self.spans: dict[str, tuple[int, int]] = {}  # day -> (first row, rows) once sorted
        if rows.num_rows:
            dates = rows["date"]
            n = len(dates)
            in_order = pc.all(pc.greater_equal(dates.slice(1), dates.slice(0, n - 1))).as_py()
            if n > 1 and not in_order:
                rows = rows.take(pc.sort_indices(dates))
            start = 0
            for item in pc.value_counts(rows["date"]):
                count = item["counts"].as_py()
                self.spans[item["values"].as_py()] = (start, count)
                start += count
        self.rows = rows

    def days(self) -> list[str]:
        return list(self.spans)

    def day(self, day: str) -> pa.Table:
        return self.rows.slice(*self.spans[day])


class FootprintZones:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.verified = self.root / "verified"
        self.quarantine = self.root / "quarantine"
        self.verified_schema = VERIFIED.arrow_schema(with_partitions=False)
        self.quarantine_schema = QUARANTINE.arrow_schema(with_partitions=False)

    def clean_leftovers(self, source: str) -> int:
        """Remove the temporary files a killed writer left in the source's folders (a file is
        written as ``.tmp-*`` and renamed). Only safe holding the source's lock."""
        n = 0
        for zone in (self.verified, self.quarantine):
            base = zone / f"source={source}"
            if base.is_dir():
                for tmp in base.rglob(".tmp-*"):
                    tmp.unlink(missing_ok=True)
                    n += 1
        return n

    # -- verified -------------------------------------------------------------------------------
    def verified_file(self, source: str, day: str) -> Path:
        return self.verified / f"source={source}" / f"date={day}" / PART_FILE

    def verified_dates(self, source: str) -> list[str]:
        base = self.verified / f"source={source}"
        if not base.is_dir():
            return []
        return sorted(p.name[5:] for p in base.iterdir()
                      if p.name.startswith("date=") and (p / PART_FILE).exists())

    def read_verified(self, source: str | None = None) -> pa.Table:
        """The verified zone as one table (partition columns included), optionally one source."""
        schema = VERIFIED.arrow_schema()
        if not self.verified.is_dir() or not any(self.verified.glob("source=*/date=*/*.parquet")):
            return schema.empty_table()
        part = ds.partitioning(
            pa.schema([("source", pa.string()), ("date", pa.string())]), flavor="hive")
        dataset = ds.dataset(self.verified, format="parquet", partitioning=part, schema=schema)
        flt = (ds.field("source") == source) if source else None
        return dataset.to_table(filter=flt).select(schema.names)

    def verified_bodies(self, source: str, ids: pa.Array) -> pa.Table:
        """``statement_id``, ``raw_sha256``, ``stored`` and ``timestamp`` of the source's
        verified rows with one of ``ids`` (only these columns are read, filtered as they are)."""
        cols = ["statement_id", "raw_sha256", "stored", "timestamp"]
        schema = VERIFIED.arrow_schema()
        base = self.verified / f"source={source}"
        if len(ids) == 0 or not any(base.glob("date=*/*.parquet")):
            return pa.schema([schema.field(c) for c in cols]).empty_table()
        part = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
        dataset = ds.dataset(base, format="parquet", partitioning=part,
                             schema=pa.schema([f for f in schema if f.name != "source"]))
        return dataset.to_table(columns=cols, filter=ds.field("statement_id").isin(ids))

    def merge_verified(self, source: str, rows: pa.Table | DayRows, window: Window | None,
                       remove_ids: Collection[str], run_id: str) -> int:
        """Publish ``rows`` (verified-footprint rows of ``source``, with ``date``; a table, or
        :class:`DayRows` that hand them over a date at a time).

        With a ``window`` the window's rows are replaced (rows of the touched partitions whose
        time key falls in it go, the new ones come); without, rows are upserted by statement id
        (a replay). ``remove_ids`` (voided statements) are removed from every partition of the
        source. Returns the number of partitions written or removed.
        """
        by_day = TableDays(rows) if isinstance(rows, pa.Table) else rows
        new_days = set(by_day.days())
        days = set(new_days)
        existing = self.verified_dates(source)
        if window is not None:
            lo = window.since.date() if window.since else date.min
            hi = window.until.date() if window.until else date.max
            days |= {d for d in existing if lo <= date.fromisoformat(d) <= hi}
        gone = pa.array(sorted(set(remove_ids)), pa.string())
        if len(gone):
            for d in existing:
                ids = pq.read_table(self.verified_file(source, d), columns=["statement_id"])
                if pc.any(pc.is_in(ids["statement_id"], value_set=gone)).as_py():
                    days.add(d)
        touched = 0
        for day in sorted(days):
            dest = self.verified_file(source, day)
            new = by_day.day(day) if day in new_days else self.verified_schema.empty_table()
            new = new.select(self.verified_schema.names).cast(self.verified_schema)
            if dest.exists():
                old = pq.read_table(dest, schema=self.verified_schema)
                if window is not None:
                    old = old.filter(pc.invert(in_window(old, window)))
                combined = _first_by_id(pa.concat_tables([new, old]))
            else:
                combined = new
            if len(gone) and combined.num_rows:
                combined = combined.filter(
                    pc.invert(pc.is_in(combined["statement_id"], value_set=gone)))
            if combined.num_rows == 0:
                if dest.exists():
                    dest.unlink()
                    _fsync_dir(dest.parent)
                    touched += 1
                    crashpoint("verify-partition")
                continue
            write_parquet_atomic(_in_time_order(combined), dest, run_id)
            touched += 1
            crashpoint("verify-partition")
        return touched

    # -- quarantine -----------------------------------------------------------------------------
    def quarantine_file(self, source: str, label: str) -> Path:
        return self.quarantine / f"source={source}" / f"window={label}" / PART_FILE

    def quarantine_windows(self, source: str) -> list[str]:
        base = self.quarantine / f"source={source}"
        if not base.is_dir():
            return []
        return sorted(p.name[7:] for p in base.iterdir()
                      if p.name.startswith("window=") and (p / PART_FILE).exists())

    def quarantine_sources(self) -> list[str]:
        if not self.quarantine.is_dir():
            return []
        return sorted(p.name[7:] for p in self.quarantine.iterdir()
                      if p.name.startswith("source=") and p.is_dir())

    def read_quarantine_window(self, source: str, label: str,
                               columns: list[str] | None = None) -> pa.Table:
        """One window's quarantine file, with the ``source`` column (the contract's order), or
        only ``columns`` of it (``raw``, most of a file's bytes, is then not read unless asked)."""
        f = self.quarantine_file(source, label)
        schema = QUARANTINE.arrow_schema()
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if not f.exists():
            return schema.empty_table()
        stored = [c for c in schema.names if c != "source"]
        t = pq.read_table(f, schema=self.quarantine_schema, columns=stored)
        if "source" in schema.names:
            t = t.append_column("source", pa.repeat(pa.scalar(source, pa.string()), t.num_rows))
        return t.select(schema.names).cast(schema)

    def read_quarantine(self, source: str | None = None,
                        columns: list[str] | None = None) -> pa.Table:
        """Every quarantined record (of a source), with ``source`` and ``window`` columns (or
        only ``columns``, and ``window``)."""
        tables = []
        for s in [source] if source else self.quarantine_sources():
            for label in self.quarantine_windows(s):
                t = self.read_quarantine_window(s, label, columns)
                tables.append(t.append_column(
                    "window", pa.repeat(pa.scalar(label, pa.string()), t.num_rows)))
        if not tables:
            schema = QUARANTINE.arrow_schema()
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            return schema.append(pa.field("window", pa.string())).empty_table()
        return pa.concat_tables(tables)

    def write_quarantine(self, source: str, label: str, table: pa.Table, run_id: str) -> None:
        """Replace one window's quarantine file (removed when nothing is quarantined)."""
        dest = self.quarantine_file(source, label)
        if table.num_rows == 0:
            _remove_quarantine_file(dest)
            return
        t = table.select(self.quarantine_schema.names).cast(self.quarantine_schema)
        write_parquet_atomic(t, dest, run_id)
        crashpoint("verify-quarantine-file")

    def rewrite_quarantine(self, source: str, label: str,
                           change: Callable[[pa.Table], pa.Table], run_id: str) -> None:
        """Replace one window's quarantine file with ``change`` applied to its rows, a row group
        at a time (the file is never read whole: it may hold a million bodies), through a
        temporary file renamed into place; removed when no row is left."""
        src = self.quarantine_file(source, label)
        if not src.exists():
            return
        schema = self.quarantine_schema
        tmp = src.parent / f".tmp-{run_id}-{src.name}"
        f = pq.ParquetFile(src)
        try:
            with RowGroups(tmp, schema) as out:
                for i in range(f.num_row_groups):
                    t = f.read_row_group(i).select(schema.names).cast(schema)
                    out.add(change(t))
        finally:
            f.close()
        if out.rows == 0:
            tmp.unlink()
            src.unlink()
        else:
            os.replace(tmp, src)
        _fsync_dir(src.parent)
        crashpoint("verify-quarantine-file")

    def put_quarantine(self, source: str, label: str, written: Path | None) -> None:
        """Replace one window's quarantine file with ``written``, a complete file of the
        quarantine schema written and fsync'd in the verification's staging folder (under the
        storage root, so on the same file system, as ingestion's raw parts), moved into place in
        one rename; ``None`` when nothing is quarantined (the file is removed)."""
        dest = self.quarantine_file(source, label)
        if written is None:
            _remove_quarantine_file(dest)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(written, dest)
        _fsync_dir(dest.parent)
        crashpoint("verify-quarantine-file")


def _remove_quarantine_file(dest: Path) -> None:
    if dest.exists():
        dest.unlink()
        _fsync_dir(dest.parent)
        crashpoint("verify-quarantine-file")
