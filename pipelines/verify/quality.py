"""Quality checks of the verified footprint: a Great Expectations suite plus two dataset checks.

The suite lives in ``expectations/verified_footprint.json`` as Great Expectations 1.x expectation
configurations (``type``, ``kwargs``, ``meta``). Every expectation says in ``meta.severity``
whether it is ``critical`` (a failure keeps the batch unpublished) or a ``warning`` (shown on the
dashboard), and in ``meta.description`` / ``description_kk`` / ``description_ru`` what it means
to a person, in English, Kazakh and Russian. Two checks that Great Expectations cannot express
for one batch are computed here and configured in the same file under ``footprint_checks``:

- ``max_quarantined_share`` (critical): the share of the statements read for the batch that were
  quarantined must not exceed ``max_share``;
- ``volume`` (warning): the batch's row count should be between ``min_ratio`` and ``max_ratio``
  times the median count of the previous ``previous_days`` batches (skipped with fewer than
  ``min_days`` of history).

Personal data stays home: values of restricted or direct personal-data columns (the contract's
``x-pii``, e.g. the IIN) are never copied into results, messages or Data Docs; they are shown by
their shape only (``#`` per digit, ``*`` per letter), and offending rows are named by their
``record_id``. Data Docs are post-processed so that no page loads anything from another host
(Great Expectations pulls Bootstrap, jQuery and its logo from public CDNs and a cloud bucket).

``great_expectations`` (12-15 s to import) and ``pandas`` are imported inside the functions that
need them, never at module import, so the CLI stays fast.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import statistics
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from pipelines import contracts

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_SUITE_PATH",
    "SEVERITIES",
    "ExpectationSpec",
    "QualityOutcome",
    "SuiteError",
    "SuiteSpec",
    "VolumeCheck",
    "build_data_docs",
    "check_batch",
    "is_foreign",
    "load_suite",
    "localise_site",
    "mask_value",
    "save_results",
]

DEFAULT_SUITE_PATH = (
    Path(__file__).resolve().parents[2] / "expectations" / "verified_footprint.json"
)
SEVERITIES = ("critical", "warning")
LANGUAGES = ("", "_kk", "_ru")  # meta.description, meta.description_kk, meta.description_ru
CONTRACT = ("verified-footprint", 1)
MASKED_PII = ("restricted", "direct")  # x-pii classes whose values are shown by shape only
EXAMPLES_IN_RESULTS = 5
EXAMPLES_IN_MESSAGE = 3
PARTIAL_UNEXPECTED_COUNT = 20
DATASOURCE, ASSET, BATCH_DEF = "footprint", "verified", "whole_batch"
BATCH_ID = f"{DATASOURCE}-{ASSET}"  # what Great Expectations calls the batch in Data Docs
SITE_NAME = "footprint"


class SuiteError(ValueError):
    """The suite file is not what this module can run."""


# ------------------------------------------------------------------------------------------------
# the suite


@dataclass(frozen=True)
class ExpectationSpec:
    type: str
    kwargs: dict[str, Any]
    meta: dict[str, Any]

    @property
    def column(self) -> str | None:
        col = self.kwargs.get("column")
        return col if isinstance(col, str) else None

    @property
    def label(self) -> str:
        """``expect_column_values_to_match_regex(iin)``: how results and messages name it."""
        return f"{self.type}({self.column})" if self.column else self.type

    @property
    def severity(self) -> str:
        return str(self.meta["severity"])

    def descriptions(self) -> dict[str, str]:
        return {f"description{s}": str(self.meta[f"description{s}"]) for s in LANGUAGES}


@dataclass(frozen=True)
class VolumeCheck:
    min_ratio: float = 0.5
    max_ratio: float = 2.0
    previous_days: int = 7
    min_days: int = 3
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    path: Path
    expectations: tuple[ExpectationSpec, ...]
    max_quarantined_share: float
    quarantine_meta: dict[str, Any]
    volume: VolumeCheck
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Columns the expectations look at, in suite order, without repeats."""
        return list(dict.fromkeys(e.column for e in self.expectations if e.column))

    def expectation(self, label: str) -> ExpectationSpec:
        for e in self.expectations:
            if e.label == label:
                return e
        raise KeyError(label)


def _check_meta(meta: Any, where: str) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise SuiteError(f"{where}: meta must be an object")
    if meta.get("severity") not in SEVERITIES:
        raise SuiteError(
            f"{where}: meta.severity must be one of {SEVERITIES}, got {meta.get('severity')!r}"
        )
    for s in LANGUAGES:
        text = meta.get(f"description{s}")
        if not isinstance(text, str) or not text.strip():
            raise SuiteError(f"{where}: meta.description{s} must be a non-empty text")
    return meta


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SuiteError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def load_suite(path: str | Path | None = None) -> SuiteSpec:
    """Read and check the suite file (default ``expectations/verified_footprint.json``).

    Checks what can be checked without Great Expectations: every expectation has a type, kwargs,
    a severity and the three descriptions; its column is a field of the verified-footprint
    contract; labels are unique; the footprint checks' numbers make sense. Whether Great
    Expectations knows the type and accepts the kwargs shows at the first :func:`check_batch`.
    """
    p = Path(path) if path is not None else DEFAULT_SUITE_PATH
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"cannot read the quality suite {p}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("expectations"), list):
        raise SuiteError(f"{p}: expected an object with an 'expectations' list")
    name = doc.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SuiteError(f"{p}: 'name' must be a simple name (letters, digits, _ . -)")
    fields_ = contracts.load(*CONTRACT).fields
    specs: list[ExpectationSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc["expectations"]):
        where = f"{p.name}: expectations[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise SuiteError(f"{where}: needs a 'type'")
        if not re.fullmatch(r"expect_[a-z0-9_]+", raw["type"]):
            raise SuiteError(f"{where}: {raw['type']!r} is not an expectation type name")
        kwargs = raw.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise SuiteError(f"{where}: kwargs must be an object")
        spec = ExpectationSpec(raw["type"], dict(kwargs), _check_meta(raw.get("meta"), where))
        if spec.column is not None and spec.column not in fields_:
            raise SuiteError(
                f"{where}: column {spec.column!r} is not in the "
                f"{CONTRACT[0]} v{CONTRACT[1]} contract"
            )
        if spec.label in seen:
            raise SuiteError(f"{where}: {spec.label} appears twice")
        seen.add(spec.label)
        specs.append(spec)

    checks = doc.get("footprint_checks", {})
    if not isinstance(checks, dict):
        raise SuiteError(f"{p.name}: footprint_checks must be an object")
    q = checks.get("max_quarantined_share", {})
    v = checks.get("volume", {})
    if not isinstance(q, dict) or not isinstance(v, dict):
        raise SuiteError(f"{p.name}: footprint_checks entries must be objects")
    q_meta = _check_meta(q.get("meta"), f"{p.name}: footprint_checks.max_quarantined_share")
    v_meta = _check_meta(v.get("meta"), f"{p.name}: footprint_checks.volume")
    max_share = _number(q.get("max_share", 0.05), "max_quarantined_share.max_share")
    if not 0.0 <= max_share <= 1.0:
        raise SuiteError(f"max_quarantined_share.max_share must be in [0, 1], got {max_share}")
    volume = VolumeCheck(
        min_ratio=_number(v.get("min_ratio", 0.5), "volume.min_ratio"),
        max_ratio=_number(v.get("max_ratio", 2.0), "volume.max_ratio"),
        previous_days=int(_number(v.get("previous_days", 7), "volume.previous_days")),
        min_days=int(_number(v.get("min_days", 3), "volume.min_days")),
        meta=v_meta,
    )
    if not 0 <= volume.min_ratio <= 1 <= volume.max_ratio:
        raise SuiteError("volume: need 0 <= min_ratio <= 1 <= max_ratio")
    if not 1 <= volume.min_days <= volume.previous_days:
        raise SuiteError("volume: need 1 <= min_days <= previous_days")
    return SuiteSpec(
        name=name,
        path=p,
        expectations=tuple(specs),
        max_quarantined_share=max_share,
        quarantine_meta=q_meta,
        volume=volume,
        meta=dict(doc.get("meta") or {}),
    )


@cache
def _default_suite() -> SuiteSpec:
    return load_suite()


def _gx_suite(gx: Any, suite: SuiteSpec, skip: set[str] | frozenset[str] = frozenset()) -> Any:
    """The Great Expectations suite object (unregistered) for the expectations not in ``skip``."""
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )
    from great_expectations.expectations.metadata_types import FailureSeverity

    exps = []
    for e in suite.expectations:
        if e.label in skip:
            continue
        conf = ExpectationConfiguration(
            type=e.type,
            kwargs=dict(e.kwargs),
            meta=dict(e.meta),
            severity=FailureSeverity(e.severity),
        )
        try:
            exps.append(conf.to_domain_obj())
        except Exception as exc:  # unknown type, bad kwargs: say which one
            raise SuiteError(f"{suite.path.name}: {e.label}: {exc}") from exc
    return gx.ExpectationSuite(name=suite.name, expectations=exps, meta=dict(suite.meta))


# ------------------------------------------------------------------------------------------------
# values shown to people


def mask_value(value: Any) -> Any:
    """A personal-data value by its shape: ``#`` per digit, ``*`` per letter, the rest as is.

    ``"95011230012A"`` -> ``"###########*"``: a reader sees why it failed (length, a letter, a
    space) without seeing the number. None stays None.
    """
    if value is None:
        return None
    text = str(value)
    return "".join("#" if c.isdigit() else "*" if c.isalpha() else c for c in text)


def _plain(value: Any) -> Any:
    """A JSON-able Python value (numpy scalars, NaN, timestamps, bytes)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and not isinstance(value, Sequence | Mapping):
        try:
            return _plain(item())
        except (TypeError, ValueError):
            pass
    iso = getattr(value, "isoformat", None)
    if callable(iso):
        try:
            if value != value:  # NaT
                return None
        except (TypeError, ValueError):
            pass
        return str(iso())
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


def _show(value: Any) -> str:
    """One value in a message: strings quoted, numbers without a needless ``.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return json.dumps(value, ensure_ascii=False)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _summary(
    spec: ExpectationSpec, unexpected: int, examples: list[Any], record_ids: list[str]
) -> str:
    """What failed, in words: ``2 values do not match ^[0-9]{12}$ (e.g. "#####")``."""
    t, kw = spec.type, spec.kwargs
    if t == "expect_column_values_to_be_unique":
        text = f"{_count(unexpected, 'row carries', 'rows carry')} a duplicate value"
    elif t == "expect_column_values_to_not_be_null":
        text = _count(unexpected, "value is", "values are") + " missing (null)"
        shown = [f"record_id {_show(r)}" for r in record_ids[:EXAMPLES_IN_MESSAGE]]
        return text + (f" (e.g. {', '.join(shown)})" if shown else "")
    elif t == "expect_column_values_to_match_regex":
        text = f"{_count(unexpected, 'value does', 'values do')} not match {kw.get('regex')}"
    elif t == "expect_column_values_to_be_between":
        text = (
            f"{_count(unexpected, 'value is', 'values are')} outside "
            f"[{_show(kw.get('min_value'))}, {_show(kw.get('max_value'))}]"
        )
    elif t == "expect_column_values_to_be_in_set":
        text = f"{_count(unexpected, 'value is', 'values are')} not in the allowed set"
    else:
        text = _count(unexpected, "unexpected value", "unexpected values")
    shown = [_show(v) for v in examples[:EXAMPLES_IN_MESSAGE]]
    if shown:
        text += f" (e.g. {', '.join(shown)})"
    return text


# ------------------------------------------------------------------------------------------------
# Arrow -> pandas


def _to_pandas(table: pa.Table, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` (plus ``record_id`` when the table has it) as one pandas frame.

    Strings become pandas ``str`` (the only string dtype Great Expectations' type checks accept
    on pandas 3), timestamps become tz-aware UTC (a naive one is taken as UTC), dictionary
    columns are decoded, list-of-string columns are flattened to ``a|b|c`` and other nested
    columns (lists of other types, structs, maps) are left out: Great Expectations cannot check
    them and the suite does not look at them.
    """
    import pandas as pd
    import pyarrow.compute as pc

    wanted = [c for c in dict.fromkeys([*columns, "record_id"]) if c in table.column_names]
    arrays: dict[str, pa.ChunkedArray] = {}
    for name in wanted:
        col = table.column(name)
        typ = col.type
        if pa.types.is_dictionary(typ):
            col = col.cast(typ.value_type)
            typ = col.type
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            if pa.types.is_string(typ.value_type) or pa.types.is_large_string(typ.value_type):
                col = pc.binary_join(col, "|")
            else:
                continue
        elif pa.types.is_nested(typ):
            continue
        elif pa.types.is_timestamp(typ) and typ.tz is None:
            col = col.cast(pa.timestamp(typ.unit, tz="UTC"))
        elif pa.types.is_string_view(typ) or pa.types.is_large_string(typ):
            col = col.cast(pa.string())
        arrays[name] = col
    if not arrays:
        return pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    df = pa.table(arrays).to_pandas(split_blocks=True)
    for name in df.columns:
        if df[name].dtype == object and pa.types.is_string(arrays[name].type):
            df[name] = df[name].astype("str")
    return df


# ------------------------------------------------------------------------------------------------
# the check


@dataclass
class QualityOutcome:
    """The verdict on one batch.

    ``passed`` is False when any critical expectation or critical footprint check failed.
    ``results`` is JSON-able (what :func:`save_results` writes for the dashboard).
    ``gx_result`` is Great Expectations' own validation result (personal data already masked),
    kept for :func:`build_data_docs`; it is not part of the JSON.
    """

    passed: bool
    failed_critical: list[str]
    failed_warning: list[str]
    results: dict[str, Any]
    gx_result: Any = field(default=None, repr=False, compare=False)

    def message(self) -> str:
        return str(self.results["message"])


def _message(passed: bool, entries: list[dict[str, Any]]) -> str:
    crit = [e for e in entries if not e["success"] and e["severity"] == "critical"]
    warn = [e for e in entries if not e["success"] and e["severity"] == "warning"]
    warn_text = "; ".join(f"{e['id']}: {e['summary']}" for e in warn)
    if not passed:
        text = "quality check failed: " + "; ".join(f"{e['id']}: {e['summary']}" for e in crit)
        text += "; the batch is kept unpublished"
        if warn:
            text += f" (warnings: {warn_text})"
        return text
    if warn:
        return f"quality check passed with warnings: {warn_text}"
    return "quality check passed"


def _quarantine_entry(suite: SuiteSpec, quarantined: int, read: int) -> dict[str, Any]:
    share = quarantined / read if read else 0.0
    limit = suite.max_quarantined_share
    ok = share <= limit
    summary = (
        f"{quarantined} of {read} statements read were quarantined ({share:.1%}), "
        f"{'within' if ok else 'above'} the limit of {limit:.1%}"
    )
    return {
        "id": "max_quarantined_share",
        "kind": "footprint_check",
        "severity": suite.quarantine_meta["severity"],
        "success": ok,
        "observed": {"quarantined": quarantined, "read": read, "share": share},
        "config": {"max_share": limit},
        "summary": summary,
        **{f"description{s}": suite.quarantine_meta[f"description{s}"] for s in LANGUAGES},
    }


def _volume_entry(suite: SuiteSpec, rows: int, previous_counts: Sequence[int]) -> dict[str, Any]:
    v = suite.volume
    window = [int(c) for c in list(previous_counts)[-v.previous_days :]]
    median = float(statistics.median(window)) if window else None
    entry: dict[str, Any] = {
        "id": "volume",
        "kind": "footprint_check",
        "severity": v.meta["severity"],
        "config": {
            "min_ratio": v.min_ratio,
            "max_ratio": v.max_ratio,
            "previous_days": v.previous_days,
            "min_days": v.min_days,
        },
        **{f"description{s}": v.meta[f"description{s}"] for s in LANGUAGES},
    }
    observed: dict[str, Any] = {"rows": rows, "previous_counts": window, "median": median}
    if len(window) < v.min_days or not median:
        why = (
            f"only {len(window)} previous counts (needs {v.min_days})"
            if len(window) < v.min_days
            else "the median of the previous counts is 0"
        )
        entry.update(success=True, skipped=True, observed=observed, summary=f"skipped: {why}")
        return entry
    ratio = rows / median
    ok = v.min_ratio <= ratio <= v.max_ratio
    observed["ratio"] = ratio
    entry.update(
        success=ok,
        skipped=False,
        observed=observed,
        summary=(
            f"{rows} rows is {ratio:.2f} x the median {median:g} of the previous "
            f"{len(window)} counts, {'within' if ok else 'outside'} "
            f"[{v.min_ratio:g}, {v.max_ratio:g}]"
        ),
    )
    return entry


def _masked_columns() -> frozenset[str]:
    c = contracts.load(*CONTRACT)
    return frozenset(n for cls in MASKED_PII for n in c.pii(cls))


def _mask_gx_result(res: Any, masked: frozenset[str]) -> None:
    """Replace personal-data values in Great Expectations' result in place (shape only)."""
    for r in res.results:
        col = r.expectation_config.kwargs.get("column")
        if col not in masked or not r.result:
            continue
        for key in ("partial_unexpected_list", "unexpected_list"):
            if key in r.result:
                r.result[key] = [mask_value(_plain(v)) for v in r.result[key]]
        for key in ("partial_unexpected_counts", "unexpected_counts"):
            if key in r.result:
                r.result[key] = [
                    {**d, "value": mask_value(_plain(d.get("value")))} for d in r.result[key]
                ]
        if "observed_value" in r.result:
            r.result["observed_value"] = mask_value(_plain(r.result["observed_value"]))
        for key in ("unexpected_index_query", "unexpected_index_list"):
            r.result.pop(key, None)


def _record_ids(df: pd.DataFrame | None, index_list: Any) -> list[str]:
    if df is None or "record_id" not in df.columns or not isinstance(index_list, list):
        return []
    out: list[str] = []
    for i in index_list:
        if isinstance(i, dict):  # a list of {column: value} for some result formats
            i = i.get("index")
        try:
            rid = df["record_id"].iloc[int(i)]
        except (TypeError, ValueError, IndexError):
            continue
        if isinstance(rid, str) and rid not in out:
            out.append(rid)
        if len(out) >= EXAMPLES_IN_RESULTS:
            break
    return out


class ColumnSource(Protocol):
    """A batch whose columns are read when asked for (so that a big batch is never held in
    memory whole while a check that needs one column runs)."""

    column_names: list[str]
    num_rows: int

    def load(self, columns: list[str]) -> pa.Table: ...


class TableSource:
    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.column_names = table.column_names
        self.num_rows = table.num_rows

    def load(self, columns: list[str]) -> pa.Table:
        return self.table.select(columns)


# Great Expectations' pandas metrics take several times the memory of the columns they look at,
# so the suite runs a column at a time on a frame of that column, the uniqueness checks first
# and apart, and over a big batch a bucket of rows at a time (_buckets).
_HEAVY_TYPES = frozenset({"expect_column_values_to_be_unique"})


def _groups(suite: SuiteSpec, labels: set[str]) -> list[tuple[set[str], list[str]]]:
    """(expectation labels, their column) to run together: a column at a time, a column's
    heavy ones first and apart, then those without a ``column`` (table-level ones) on a frame
    of ``record_id``."""
    groups: dict[tuple[bool, bool, str], set[str]] = {}
    for e in suite.expectations:
        if e.label not in labels:
            continue
        key = (e.type not in _HEAVY_TYPES, e.column is None, e.column or "")
        groups.setdefault(key, set()).add(e.label)
    return [(groups[k], [k[2]] if k[2] else []) for k in sorted(groups, key=lambda k: k[:2])]


BUCKET_ROWS = 250_000
"""Rows of a big batch one Great Expectations run looks at (see :func:`_buckets`)."""


# Expectations judged row by row (a row is unexpected or not on its own): over a big batch they
# run on slices of rows, merged exactly (without ``mostly``, which weighs the whole batch).
_ROW_TYPES = frozenset({
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
})


def _buckets(suite: SuiteSpec, labels: set[str], batch: pa.Table) -> list[Any] | None:
    """Row positions (ascending numpy arrays) to run a group's expectations on apart, or None
    to run them on the whole batch at once.

    Great Expectations' pandas metrics on a column of many distinct strings take several times
    the column (on 962,546 rows: ~350 MB for the uniqueness of ``record_id``, ~330 MB for its
    not-null check, ~250 MB for ``statement_id``'s), so over :data:`BUCKET_ROWS` rows a group
    runs a bucket at a time: a uniqueness check on hash buckets of the values (equal values share
    a bucket: a value's dictionary code modulo the number of buckets), row-by-row expectations
    on consecutive slices of rows. :func:`_merge_buckets` makes one result of the buckets'.
    """
    import numpy as np
    import pyarrow.compute as pc

    n = batch.num_rows
    exps = [suite.expectation(label) for label in labels]
    if n <= BUCKET_ROWS or not exps or any("mostly" in e.kwargs for e in exps):
        return None
    k = -(-n // BUCKET_ROWS)
    if all(e.type in _HEAVY_TYPES for e in exps) and len({e.column for e in exps}) == 1:
        codes = pc.dictionary_encode(batch[exps[0].column].combine_chunks()).indices
        bucket = np.asarray(pc.fill_null(codes, 0).to_numpy(zero_copy_only=False)) % k
        del codes
        return [np.nonzero(bucket == b)[0] for b in range(k)]
    if all(e.type in _ROW_TYPES for e in exps):
        return [np.arange(i, min(i + BUCKET_ROWS, n)) for i in range(0, n, BUCKET_ROWS)]
    return None


def _run_gx_in_buckets(suite: SuiteSpec, batch: pa.Table, columns: list[str], skip: set[str],
                       buckets: list[Any]) -> Any:
    """The suite (but ``skip``) on each bucket's rows of ``batch`` apart, as one result."""
    parts: list[tuple[Any, Any]] = []
    for rows in buckets:
        contiguous = len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows)
        piece = (batch.slice(int(rows[0]), len(rows)) if contiguous
                 else batch.take(pa.array(rows, pa.int64())))
        df = _to_pandas(piece.select([c for c in columns if c in piece.column_names]), columns)
        parts.append((rows, _run_gx(suite, df, skip=skip)))
        del df, piece
    return _merge_buckets(parts)


def _value_counts(values: list[Any]) -> list[dict[str, Any]]:
    """``partial_unexpected_counts`` as Great Expectations gives them for ``values`` (the partial
    unexpected list): count descending, then value."""
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    try:
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    except TypeError:  # values of mixed types
        order = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return [{"value": v, "count": c} for v, c in order]


def _merge_buckets(parts: list[tuple[Any, Any]]) -> Any:
    """Great Expectations results of the same expectations over disjoint row sets (``rows``:
    each set's positions in the batch, ascending) as one over the batch: counts summed,
    percentages recomputed, the first unexpected rows (values, positions) in batch order and
    their value counts (Great Expectations counts the partial list's values)."""
    first = parts[0][1]
    merged = []
    for i in range(len(first.results)):
        results = [(rows, res.results[i]) for rows, res in parts]
        raised = [r for _, r in results if _exception(r.exception_info).get("raised_exception")]
        out = results[0][1]
        if raised:
            merged.append(raised[0])
            continue
        got = [r.result or {} for _, r in results]
        ec = sum(int(g.get("element_count") or 0) for g in got)
        mc = sum(int(g.get("missing_count") or 0) for g in got)
        uc = sum(int(g.get("unexpected_count") or 0) for g in got)
        pairs = sorted(
            ((int(rows[int(j)]), v) for (rows, _), g in zip(results, got, strict=True)
             for j, v in zip(g.get("partial_unexpected_index_list") or [],
                             g.get("partial_unexpected_list") or [], strict=False)),
            key=lambda p: p[0])[:PARTIAL_UNEXPECTED_COUNT]
        present = ec - mc
        fields = {
            "element_count": ec,
            "missing_count": mc,
            "unexpected_count": uc,
            # as Great Expectations computes them (count / total * 100, to the last bit)
            "missing_percent": mc / ec * 100 if ec else None,
            "unexpected_percent": uc / present * 100 if present else None,
            "unexpected_percent_nonmissing": uc / present * 100 if present else None,
            "unexpected_percent_total": uc / ec * 100 if ec else None,
            "partial_unexpected_list": [v for _, v in pairs],
            "partial_unexpected_index_list": [j for j, _ in pairs],
            "partial_unexpected_counts": _value_counts([v for _, v in pairs]),
        }
        base = out.result or {}
        # only the fields this expectation reports (a not-null check has no missing_count)
        out.result = {**base, **{k: v for k, v in fields.items() if k in base}}
        out.success = all(r.success for _, r in results)
        merged.append(out)
    first.results = merged
    first.success = all(r.success for r in merged)
    return first


def _merge_gx(results: list[Any], suite: SuiteSpec) -> Any:
    """Several Great Expectations validation results of one suite as one, in suite order."""
    first = results[0]
    if len(results) == 1:
        return first
    order = {e.label: i for i, e in enumerate(suite.expectations)}

    def at(r: Any) -> int:
        conf = r.expectation_config
        col = conf.kwargs.get("column")
        return order.get(f"{conf.type}({col})" if col else conf.type, len(order))

    merged = sorted((r for res in results for r in res.results), key=at)
    ok = sum(1 for r in merged if r.success)
    first.results = merged
    first.success = all(res.success for res in results)
    first.statistics = {
        **first.statistics,
        "evaluated_expectations": len(merged),
        "successful_expectations": ok,
        "unsuccessful_expectations": len(merged) - ok,
        "success_percent": 100.0 * ok / len(merged) if merged else None,
    }
    return first


def check_batch(
    table: pa.Table | ColumnSource,
    *,
    quarantined: int,
    read: int,
    previous_counts: list[int],
    suite: SuiteSpec | None = None,
) -> QualityOutcome:
    """Run the suite on a verified-footprint batch and the two footprint checks.

    ``table``: the batch, or a :class:`ColumnSource` that reads its columns when asked (the
    expectations run in groups, :func:`_groups`, each on a frame of its own columns only).
    ``quarantined`` and ``read`` are the batch's statement counts (quarantined ones are among
    those read); ``previous_counts`` are the row counts of the previous batches of the same kind,
    oldest first (the last ``volume.previous_days`` are used).
    """
    if quarantined < 0 or read < 0:
        raise ValueError("quarantined and read must be >= 0")
    if quarantined > read:
        raise ValueError(f"quarantined ({quarantined}) cannot exceed read ({read})")
    if any(c < 0 for c in previous_counts):
        raise ValueError("previous_counts must be >= 0")
    suite = suite or _default_suite()
    masked = _masked_columns()
    checked_at = datetime.now(UTC)

    source = table if not isinstance(table, pa.Table) else TableSource(table)
    n_rows = source.num_rows
    missing = {
        e.label
        for e in suite.expectations
        if e.column is not None and e.column not in source.column_names
    }
    every = {e.label for e in suite.expectations}
    unusable: set[str] = set()
    runs: list[Any] = []
    ids: pd.DataFrame | None = None  # record_id by row, for the unexpected rows' record ids
    try:
        for labels, cols in _groups(suite, every - missing):
            # record_id (to name the unexpected rows) is loaded once, with the first group, and
            # for table-level expectations (a frame needs a column to have rows)
            extra = ["record_id"] if ids is None or not cols else []
            wanted = [c for c in dict.fromkeys([*cols, *extra]) if c in source.column_names]
            batch = source.load(wanted)
            buckets = _buckets(suite, labels, batch)
            df = _to_pandas(batch if buckets is None else batch.slice(0, 0), cols)
            unusable |= {e.label for e in suite.expectations if e.label in labels
                         and e.column is not None and e.column not in df.columns}
            if labels - unusable:
                run = labels - unusable
                runs.append(_run_gx(suite, df, skip=every - run) if buckets is None else
                            _run_gx_in_buckets(suite, batch, cols, every - run, buckets))
            if ids is None and "record_id" in batch.column_names:
                ids = df[["record_id"]] if len(df) == batch.num_rows else _to_pandas(
                    batch.select(["record_id"]), [])
            del df, batch
    finally:  # the kept GX context (its stored results, its cached frame) goes with the check
        _drop_gx_runner()

    by_label: dict[str, Any] = {}
    gx_res = _merge_gx(runs, suite) if runs else None
    if gx_res is not None:
        for r in gx_res.results:
            conf = r.expectation_config
            col = conf.kwargs.get("column")
            by_label[f"{conf.type}({col})" if col else conf.type] = r
        _mask_gx_result(gx_res, masked)

    entries: list[dict[str, Any]] = []
    for e in suite.expectations:
        entry: dict[str, Any] = {
            "id": e.label,
            "kind": "expectation",
            "type": e.type,
            "column": e.column,
            "kwargs": _plain(e.kwargs),
            "severity": e.severity,
            **e.descriptions(),
        }
        if e.label in missing or e.label in unusable:
            why = (
                "is missing from the batch"
                if e.label in missing
                else "has a nested type the checks cannot read"
            )
            entry.update(
                success=False,
                element_count=n_rows,
                unexpected_count=None,
                unexpected_values=[],
                unexpected_record_ids=[],
                exception=f"column {e.column!r} {why}",
                summary=f"could not be evaluated: column {e.column!r} {why}",
            )
            entries.append(entry)
            continue
        r = by_label.get(e.label)
        if r is None:  # cannot happen unless Great Expectations drops a result
            entry.update(
                success=False,
                summary="no result from Great Expectations",
                unexpected_values=[],
                unexpected_record_ids=[],
                exception="no result",
            )
            entries.append(entry)
            continue
        res = r.result or {}
        exc = _exception(r.exception_info)
        raised = bool(exc.get("raised_exception"))
        counts = res.get("partial_unexpected_counts") or []
        examples = [_plain(d.get("value")) for d in counts][:EXAMPLES_IN_RESULTS]
        if not counts:
            examples = list(
                dict.fromkeys(_plain(v) for v in res.get("partial_unexpected_list") or [])
            )[:EXAMPLES_IN_RESULTS]
        if e.column in masked:
            examples = [mask_value(v) for v in examples]
        if e.type == "expect_column_values_to_not_be_null":
            examples = []  # all null: the record ids say which rows
        record_ids = (
            []
            if e.column == "record_id"
            else _record_ids(ids, res.get("partial_unexpected_index_list"))
        )
        unexpected = int(res.get("unexpected_count") or 0)
        entry.update(
            success=bool(r.success),
            element_count=res.get("element_count"),
            unexpected_count=res.get("unexpected_count"),
            unexpected_percent=_plain(res.get("unexpected_percent")),
            missing_count=res.get("missing_count"),
            unexpected_values=examples,
            unexpected_record_ids=record_ids,
            exception=exc.get("exception_message") if raised else None,
        )
        if raised:
            entry["summary"] = f"could not be evaluated: {exc.get('exception_message')}"
        elif not r.success:
            entry["summary"] = _summary(e, unexpected, examples, record_ids)
        else:
            entry["summary"] = "ok"
        entries.append(entry)

    entries.append(_quarantine_entry(suite, quarantined, read))
    entries.append(_volume_entry(suite, n_rows, previous_counts))

    failed_critical = [e["id"] for e in entries if not e["success"] and e["severity"] == "critical"]
    failed_warning = [e["id"] for e in entries if not e["success"] and e["severity"] == "warning"]
    passed = not failed_critical
    results: dict[str, Any] = {
        "suite": suite.name,
        "suite_path": str(suite.path),
        "contract": {"name": CONTRACT[0], "version": CONTRACT[1]},
        "checked_at": checked_at.isoformat(),
        "rows": n_rows,
        "passed": passed,
        "failed_critical": failed_critical,
        "failed_warning": failed_warning,
        "message": _message(passed, entries),
        "checks": entries,
        "great_expectations_version": _gx_version(gx_res),
    }
    return QualityOutcome(passed, failed_critical, failed_warning, results, gx_res)


def _exception(info: Any) -> dict[str, Any]:
    """The exception info of a result: flat, or keyed by metric when a metric failed."""
    if not isinstance(info, dict):
        return {}
    if "raised_exception" in info:
        return info
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return v
    return {}


def _gx_version(res: Any) -> str | None:
    if res is None:
        return None
    v = res.meta.get("great_expectations_version")
    return str(v) if v else None


def _quiet_context(gx: Any, **kwargs: Any) -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(**kwargs)
    # no tqdm bars in task logs; GX 1.24 has no usage statistics module left to switch off
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def _no_fingerprint() -> None:
    """Stop GX hashing every frame it is given (``pandas_data_fingerprint``, a batch marker
    shown nowhere we use): about 2 % of a 1,000,000-statement run. GX hashes frames under
    ``HASH_THRESHOLD`` bytes; a threshold of 0 hashes none."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    engine.HASH_THRESHOLD = 0


_GX_LOCK = threading.Lock()  # one GX run at a time in the kept context


@cache
def _gx_runner() -> tuple[Any, Any, Any]:
    """(gx, an ephemeral context, its pandas batch definition), made on first use and kept for
    the rest of a check (:func:`check_batch` drops it at its end, failed or not): a check runs
    GX once per column and bucket (about 60 times for 1,000,000 rows), and making a context,
    its data source and asset costs more than most columns' checks."""
    import great_expectations as gx

    _no_fingerprint()
    ctx = _quiet_context(gx, mode="ephemeral")
    batch_def = (
        ctx.data_sources.add_pandas(DATASOURCE)
        .add_dataframe_asset(ASSET)
        .add_batch_definition_whole_dataframe(BATCH_DEF)
    )
    return gx, ctx, batch_def


def _drop_gx_runner() -> None:
    with _GX_LOCK:
        _gx_runner.cache_clear()


def _run_gx(suite: SuiteSpec, df: pd.DataFrame, skip: set[str]) -> Any:
    name = f"{suite.name}-check"
    with _GX_LOCK:
        gx, ctx, batch_def = _gx_runner()
        gx_suite = ctx.suites.add(_gx_suite(gx, suite, skip))
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch_def, suite=gx_suite)
        )
        res = vd.run(
            batch_parameters={"dataframe": df},
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": PARTIAL_UNEXPECTED_COUNT,
            },
        )
        # the next run adds the suite (another subset of it) again under its name; a run that
        # fails leaves them, and check_batch drops the whole context
        ctx.validation_definitions.delete(name=name)
        ctx.suites.delete(name=suite.name)
        return res


# ------------------------------------------------------------------------------------------------
# results for the dashboard


def _safe_run_id(run_id: str) -> str:
    if not run_id or run_id.startswith(".") or any(c in run_id for c in "/\\\0"):
        raise ValueError(f"run_id {run_id!r} cannot name a file")
    return run_id


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_results(outcome: QualityOutcome, root: Path, run_id: str) -> Path:
    """Write ``<root>/reports/quality/<run_id>.json`` atomically (temp file, then rename)."""
    path = Path(root) / "reports" / "quality" / f"{_safe_run_id(run_id)}.json"
    doc = {"run_id": run_id, **outcome.results}
    data = json.dumps(doc, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    _write_atomic(path, data.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------------------
# Data Docs without foreign hosts

# Great Expectations includes this file into every page (plugins/custom_data_docs/styles); with
# the CDN Bootstrap gone it keeps the pages readable: layout, tables, badges, all tabs visible.
_FALLBACK_CSS = """\
/* footprint: local stand-in for the Bootstrap that Data Docs load from CDNs (removed). */
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;margin:0;
 color:#212529;background:#fff;line-height:1.45}
a{color:#0b5cad}
.container-fluid{padding:0 16px}.row{display:flex;flex-wrap:wrap}
.col-12,.col-sm-12,.col-xs-12{flex:0 0 100%;max-width:100%}
@media (min-width:768px){.col-md-2{flex:0 0 16.6%;max-width:16.6%}
 .col-md-10{flex:0 0 83.3%;max-width:83.3%}.col-md-6{flex:0 0 50%;max-width:50%}
 .col-md-4{flex:0 0 33.3%;max-width:33.3%}.col-md-8{flex:0 0 66.6%;max-width:66.6%}}
.d-none{display:none}.d-flex{display:flex}.float-left{float:left}
.navbar{display:flex;align-items:center;padding:8px 16px;border-bottom:1px solid #dee2e6}
.navbar-brand img{height:40px!important}
.breadcrumb{display:flex;list-style:none;margin:0 0 0 12px;padding:4px 8px;gap:8px}
.table{width:100%;border-collapse:collapse;margin-bottom:12px}
.table td,.table th{border-top:1px solid #dee2e6;padding:4px 8px;vertical-align:top;
 text-align:left}
.table-bordered td,.table-bordered th{border:1px solid #dee2e6}
.card{border:1px solid #dee2e6;border-radius:4px;margin-bottom:12px}
.card-header{padding:6px 12px;background:#f7f7f9;border-bottom:1px solid #dee2e6}
.card-body{padding:12px}
.alert{padding:8px 12px;border-radius:4px;margin-bottom:12px}
.alert-secondary{background:#e2e3e5}.alert-success{background:#d4edda}
.alert-danger{background:#f8d7da}.alert-warning{background:#fff3cd}
.badge{display:inline-block;padding:1px 6px;border-radius:4px;font-size:85%;margin:1px;
 background:#e9ecef;word-break:break-all}
.badge-secondary{background:#6c757d;color:#fff}.badge-info{background:#17a2b8;color:#fff}
.text-danger{color:#c82333}.text-success{color:#1e7e34}.text-warning{color:#b8860b}
.collapse,.tab-pane,.fade{display:block!important;opacity:1!important}
.nav-tabs,.nav-pills{display:none}
button[onclick]{display:none}
.fas.fa-check-circle::before{content:"\\2714";color:#1e7e34}
.fas.fa-times::before{content:"\\2716";color:#c82333}
.fas.fa-times-circle::before{content:"\\2716";color:#c82333}
footer{display:none}
.fp-pass{color:#1e7e34;font-weight:600}.fp-fail{color:#c82333;font-weight:600}
.fp-warn{color:#8a6d00;font-weight:600}
"""

_URL = re.compile(r"""https?://[^\s"'<>()\\&]+""", re.IGNORECASE)
_SCRIPT_RE = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL)
_LINK_RE = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_ANCHOR_RE = re.compile(r"<a\b([^>]*)>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_FOOTER_RE = re.compile(r"<footer\b[^>]*>.*?</footer\s*>", re.IGNORECASE | re.DOTALL)
_GX_ASSETS = re.compile(
    r"https?://great-expectations-web-assets\.s3[^\"')\s]*?/([A-Za-z0-9_.-]+\.(?:png|svg|gif))"
    r"(?:\?[^\"')\s]*)?",
    re.IGNORECASE,
)
_CSS_URL_RE = re.compile(r"""url\(\s*['"]?https?://[^)'"]*['"]?\s*\)""", re.IGNORECASE)
_CSS_IMPORT_RE = re.compile(r"""@import\s+(?:url\()?\s*['"]?https?://[^;]*;""", re.IGNORECASE)


def is_foreign(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host not in ("localhost", "127.0.0.1", "::1")


def _localise_text(text: str, page: Path, site: Path, *, is_html: bool) -> str:
    images = site / "static" / "images"

    def local_asset(m: re.Match[str]) -> str:
        name = m.group(1) if (images / m.group(1)).exists() else "logo-long.png"
        return Path(os.path.relpath(images / name, page.parent)).as_posix()

    text = _GX_ASSETS.sub(local_asset, text)
    text = _CSS_IMPORT_RE.sub("", text)
    text = _CSS_URL_RE.sub("none", text)
    if not is_html:
        return text

    # every script of a Data Docs page needs jQuery/Bootstrap from a CDN: none is kept
    text = _SCRIPT_RE.sub("", text)
    text = _LINK_RE.sub(
        lambda m: "" if any(is_foreign(u) for u in _URL.findall(m.group(0))) else m.group(0), text
    )
    text = _FOOTER_RE.sub("", text)  # the newsletter footer

    def anchor(m: re.Match[str]) -> str:
        href = re.search(r"""href\s*=\s*["']([^"']*)["']""", m.group(1), re.IGNORECASE)
        if href and _URL.match(href.group(1)) and is_foreign(href.group(1)):
            return f"<span>{m.group(2)}</span>"
        return m.group(0)

    return _ANCHOR_RE.sub(anchor, text)


def localise_site(site: Path) -> list[Path]:
    """Make every page and stylesheet under ``site`` load nothing from another host.

    Removes CDN ``<script>``/``<link>`` tags and all scripts (each needs jQuery), points the cloud
    logo at the local copy in ``static/images``, drops remote CSS ``url()``/``@import`` and turns
    links to foreign hosts into plain text. Idempotent; returns the files it changed.
    """
    changed = []
    for p in sorted(site.rglob("*")):
        if p.suffix.lower() not in (".html", ".htm", ".css", ".js") or not p.is_file():
            continue
        old = p.read_text(encoding="utf-8")
        new = _localise_text(old, p, site, is_html=p.suffix.lower() in (".html", ".htm"))
        if new != old:
            _write_atomic(p, new.encode("utf-8"))
            changed.append(p)
    return changed


def _site_config(gx_root: Path, site: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": Path(os.path.relpath(site, gx_root)).as_posix() + "/",
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def build_data_docs(
    root: Path,
    outcome: QualityOutcome | None = None,
    *,
    run_id: str | None = None,
    suite: SuiteSpec | None = None,
) -> Path:
    """Build Data Docs into ``<root>/reports/data_docs/``; returns its ``index.html``.

    A file-backed Great Expectations context lives in ``<root>/reports/gx/``. The suite's page
    is (re)built; with an ``outcome`` its validation result (personal data already masked) is
    stored under ``run_id`` and its page built too. The pages are then localised (see
    :func:`localise_site`) and the index is replaced by a static page of ours listing the suite
    (with the Kazakh, Russian and English descriptions) and every run, with its verdict from
    ``reports/quality/<run_id>.json`` when there is one.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    suite = suite or _default_suite()
    reports = Path(root) / "reports"
    site = reports / "data_docs"
    gx_root = reports / "gx"
    reports.mkdir(parents=True, exist_ok=True)
    ctx = _quiet_context(gx, mode="file", project_root_dir=str(reports))

    styles = gx_root / "plugins" / "custom_data_docs" / "styles" / "data_docs_custom_styles.css"
    styles.parent.mkdir(parents=True, exist_ok=True)
    if not styles.exists() or styles.read_text(encoding="utf-8") != _FALLBACK_CSS:
        _write_atomic(styles, _FALLBACK_CSS.encode("utf-8"))

    wanted = _site_config(gx_root, site)
    sites = dict(ctx.variables.data_docs_sites or {})
    if sites != {SITE_NAME: wanted}:
        for name in sites:
            ctx.delete_data_docs_site(name)
        ctx.add_data_docs_site(SITE_NAME, wanted)

    gx_suite = ctx.suites.add_or_update(_gx_suite(gx, suite))
    suite_id = ExpectationSuiteIdentifier(name=gx_suite.name)
    resources: list[Any] = [suite_id]
    if outcome is not None and outcome.gx_result is not None:
        res = outcome.gx_result
        checked = datetime.fromisoformat(str(outcome.results["checked_at"]))
        rid = RunIdentifier(run_name=_safe_run_id(run_id or "adhoc"), run_time=checked)
        res.meta["run_id"] = rid
        vr_id = ValidationResultIdentifier(
            expectation_suite_identifier=suite_id, run_id=rid, batch_identifier=BATCH_ID
        )
        ctx.validation_results_store.store_validation_results(
            suite_validation_result=res,
            suite_validation_result_identifier=vr_id,
            expectation_suite_identifier=suite_id,
        )
        resources.append(vr_id)
    ctx.build_data_docs(site_names=[SITE_NAME], resource_identifiers=resources, build_index=False)
    localise_site(site)
    index = site / "index.html"
    _write_atomic(index, _index_page(site, reports / "quality", suite).encode("utf-8"))
    return index


# ------------------------------------------------------------------------------------------------
# our index page


def _runs(site: Path, quality: Path) -> list[dict[str, Any]]:
    """Validation pages ``validations/<suite>/<run>/<time>/<batch>.html`` with their verdicts."""
    out: list[dict[str, Any]] = []
    base = site / "validations"
    for page in sorted(base.rglob("*.html")) if base.exists() else []:
        parts = page.relative_to(base).parts
        if len(parts) != 4:
            continue
        _suite, run, when, _batch = parts
        verdict: dict[str, Any] = {}
        qfile = quality / f"{run}.json"
        if qfile.is_file():
            try:
                verdict = json.loads(qfile.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                verdict = {}
        out.append(
            {
                "run": run,
                "when": when,
                "href": page.relative_to(site).as_posix(),
                "verdict": verdict,
            }
        )
    out.sort(key=lambda r: r["when"], reverse=True)
    return out


_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'"


def _index_page(site: Path, quality: Path, suite: SuiteSpec) -> str:
    e = html.escape
    rows = []
    for r in _runs(site, quality):
        v = r["verdict"]
        if not v:
            status = '<span class="fp-warn">—</span>'
        elif not v.get("passed"):
            status = '<span class="fp-fail">failed / өтпеді / не пройдена</span>'
        elif v.get("failed_warning"):
            status = '<span class="fp-warn">passed with warnings / ескертулер бар / есть предупреждения</span>'  # noqa: E501
        else:
            status = '<span class="fp-pass">passed / өтті / пройдена</span>'
        when = r["when"]
        m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2}).*Z", when)
        if m:
            when = "{}-{}-{} {}:{}:{} UTC".format(*m.groups())
        href = urllib.parse.quote(r["href"])
        rows.append(
            f'<tr><td>{e(when)}</td><td><a href="{e(href)}">{e(r["run"])}</a></td>'
            f"<td>{status}</td><td>{e(v.get('message', ''))}</td></tr>"
        )
    exp_rows = []
    for x in suite.expectations:
        sev = "fp-fail" if x.severity == "critical" else "fp-warn"
        exp_rows.append(
            f'<tr><td><code>{e(x.label)}</code></td><td class="{sev}">{e(x.severity)}</td>'
            f'<td lang="kk">{e(x.meta["description_kk"])}</td>'
            f'<td lang="ru">{e(x.meta["description_ru"])}</td>'
            f'<td lang="en">{e(x.meta["description"])}</td></tr>'
        )
    for cid, meta in (
        ("max_quarantined_share", suite.quarantine_meta),
        ("volume", suite.volume.meta),
    ):
        sev = "fp-fail" if meta["severity"] == "critical" else "fp-warn"
        exp_rows.append(
            f'<tr><td><code>{cid}</code></td><td class="{sev}">{e(meta["severity"])}</td>'
            f'<td lang="kk">{e(meta["description_kk"])}</td>'
            f'<td lang="ru">{e(meta["description_ru"])}</td>'
            f'<td lang="en">{e(meta["description"])}</td></tr>'
        )
    suite_page = f"expectations/{urllib.parse.quote(suite.name)}.html"
    no_runs = '<tr><td colspan="4">—</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="kk">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>Цифрлық із сапасы / Качество цифрового следа / Footprint quality</title>
<style>{_FALLBACK_CSS}
body{{padding:16px 24px}} td,th{{font-size:14px}}
</style>
</head>
<body>
<h1>Цифрлық із сапасы · Качество цифрового следа · Footprint quality</h1>
<p>{e(suite.meta.get("description_kk", ""))}<br>{e(suite.meta.get("description_ru", ""))}<br>
{e(suite.meta.get("description", ""))}</p>
<h2>Тексерулер · Запуски · Runs</h2>
<table class="table table-bordered">
<tr><th>Уақыты · Время · Time</th><th>Run</th><th>Нәтиже · Результат · Result</th><th></th></tr>
{"".join(rows) or no_runs}
</table>
<h2>Күтулер · Ожидания · Expectations</h2>
<p><a href="{e(suite_page)}">{e(suite.name)}</a> (Great Expectations) ·
built {e(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))}</p>
<table class="table table-bordered">
<tr><th>Check</th><th>Severity</th><th>Қазақша</th><th>Русский</th><th>English</th></tr>
{"".join(exp_rows)}
</table>
</body>
</html>
"""
