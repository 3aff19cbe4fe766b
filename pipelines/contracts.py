"""The data contracts in ``schemas/``: one JSON Schema per record kind is the source of truth.

The Arrow schema each dataset is written with is derived from that JSON Schema here, so the two
cannot drift: a field's JSON type (plus ``format`` and ``x-arrow-type``) gives its Arrow type, and
its ``description`` and ``x-pii`` class travel into the Arrow field metadata, so a person reading a
Parquet file sees what each column means and how sensitive it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
PII_CLASSES = ("none", "pseudonymous", "direct", "restricted")


@dataclass(frozen=True)
class Contract:
    name: str
    version: int
    json_schema: dict[str, Any]

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        props: dict[str, dict[str, Any]] = self.json_schema["properties"]
        return props

    @property
    def partition_fields(self) -> tuple[str, ...]:
        return tuple(n for n, p in self.fields.items() if p.get("x-partition"))

    def arrow_schema(self, *, with_partitions: bool = True) -> pa.Schema:
        """The Arrow schema; without partition fields it is what each Parquet file holds."""
        out = []
        for name, prop in self.fields.items():
            if not with_partitions and prop.get("x-partition"):
                continue
            out.append(_arrow_field(name, prop))
        meta = {b"contract": self.name.encode(), b"contract_version": str(self.version).encode()}
        return pa.schema(out, metadata=meta)

    def pii(self, cls: str) -> list[str]:
        return [n for n, p in self.fields.items() if p.get("x-pii") == cls]


def _arrow_type(prop: dict[str, Any]) -> pa.DataType:
    override = prop.get("x-arrow-type")
    if override == "map<string,string>":
        return pa.map_(pa.string(), pa.string())
    if override:
        raise ValueError(f"unknown x-arrow-type {override!r}")
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    base = next(t for t in types if t != "null")
    if base == "string":
        return pa.timestamp("us", tz="UTC") if prop.get("format") == "date-time" else pa.string()
    if base == "boolean":
        return pa.bool_()
    if base == "number":
        return pa.float64()
    if base == "integer":
        return pa.int64()
    if base == "array":
        return pa.list_(_arrow_type(prop["items"]))
    raise ValueError(f"no Arrow type for JSON type {base!r}")


def _arrow_field(name: str, prop: dict[str, Any]) -> pa.Field:
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    meta = {b"description": prop.get("description", "").encode(), b"pii": prop["x-pii"].encode()}
    return pa.field(name, _arrow_type(prop), nullable="null" in types, metadata=meta)


@cache
def load(name: str, version: int) -> Contract:
    path = SCHEMAS_DIR / f"{name}.v{version}.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    return Contract(name=name, version=version, json_schema=schema)


def normalised_statement() -> Contract:
    return load("normalised-statement", 1)
