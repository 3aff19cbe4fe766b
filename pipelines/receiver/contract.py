"""The record contract as the receiver enforces it: fast checks, built once from the schema.

``schemas/delivered-record.v1.json`` is the source of truth. Each property's validation keywords
(``type``, ``const``, ``enum``, ``pattern``, ``minLength``/``maxLength``, ``minimum``/``maximum``
and the exclusive forms, ``minItems``/``maxItems``/``items``, ``format`` uuid/date/date-time) are
turned into small Python closures when the receiver starts (the exact checks, which also give
the reason a value fails), and into one generated function per record shape whose inline tests
accept a valid record in a few microseconds, calling the exact check only for a value they do not
accept at once. A keyword this module does not know falls back to :mod:`jsonschema` for that one
property (correct, only slower); annotations (``description``, ``x-*``...) are ignored.

The authority side adds one rule the schema can only describe: the IIN and the BIN
(``institution_code``) carry the IIN check digit (ANCHORS.md section 5).

What :meth:`RecordContract.prepare` implements (API.md, "Save"):

- the key fields (``x-key``) and ``record_id`` must be present and valid;
- each known field present must satisfy its property; a known field left out is stored as null
  (full replace);
- unknown fields, and the fields the server is told to ignore, are dropped silently.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from pipelines.iin import has_valid_checksum

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "delivered-record.v1.json"
ID_FIELD = "record_id"
# The authority checks the IIN check digit of these (the BIN uses the same algorithm).
CHECKSUM_FIELDS = ("institution_code", "iin")
REJECTED_REASON = "temporarily rejected (fault injection)"

Check = Callable[[Any], str | None]
"""Returns None when the value is valid, else a short reason."""

_ANNOTATIONS = frozenset({"description", "title", "$comment", "default", "examples",
                          "deprecated", "readOnly", "writeOnly", "$id", "$schema"})
_HANDLED = frozenset({"type", "const", "enum", "pattern", "minLength", "maxLength", "minimum",
                      "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
                      "items", "format"})

# [0-9], not \d: Python's \d also matches other scripts' digits.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_YMD = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_DATE = re.compile(_YMD + r"\Z")
_DATE_TIME = re.compile(
    _YMD + r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z")


class ContractError(ValueError):
    """The schema file cannot be turned into checks (e.g. no key fields)."""


# -- single checks ------------------------------------------------------------------------------


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "boolean"
    if type(v) is int:
        return "integer"
    if type(v) is float:
        return "number"
    if type(v) is str:
        return "string"
    if type(v) is list:
        return "array"
    if type(v) is dict:
        return "object"
    return type(v).__name__


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "null": (type(None),), "array": (list,), "object": (dict,),
}


def _type_check(types: Collection[str]) -> Check:
    allowed = set(types)
    py: set[type] = set()
    for t in allowed:
        py.update(_PY_TYPES.get(t, ()))
    integral_floats = "integer" in allowed and "number" not in allowed
    label = " or ".join(sorted(allowed))

    def check(v: Any) -> str | None:
        tv = type(v)
        if tv in py:
            return None
        # JSON Schema: 2.0 is an integer (a number with a zero fractional part).
        if integral_floats and tv is float and v.is_integer():
            return None
        return f"expected {label}, got {_json_type(v)}"

    return check


def _value_key(v: Any) -> tuple[str, Any]:
    t = _json_type(v)
    if t in ("integer", "number"):
        return ("number", v)
    if t in ("array", "object"):
        return (t, json.dumps(v, sort_keys=True))
    return (t, v)


def _enum_check(values: list[Any]) -> Check:
    allowed = {_value_key(e) for e in values}
    shown = ", ".join(json.dumps(e) for e in values)

    def check(v: Any) -> str | None:
        return None if _value_key(v) in allowed else f"{json.dumps(v)} is not one of {shown}"

    return check


def _const_check(value: Any) -> Check:
    want = _value_key(value)

    def check(v: Any) -> str | None:
        return None if _value_key(v) == want else f"must be {json.dumps(value)}"

    return check


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A JSON Schema (ECMA-262) pattern as a Python regex, used with ``search`` (unanchored)."""
    # ECMA-262 '$' (no multiline) matches only at the very end; Python's also before a final '\n'.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern_check(pattern: str) -> Check:
    rx = compile_pattern(pattern)

    def check(v: Any) -> str | None:
        if type(v) is not str or rx.search(v):
            return None
        return f"{json.dumps(v, ensure_ascii=False)} does not match {pattern}"

    return check


def _bound_check(keyword: str, limit: float) -> Check:
    fail = {"minimum": operator.lt, "maximum": operator.gt,
            "exclusiveMinimum": operator.le, "exclusiveMaximum": operator.ge}[keyword]
    words = {"minimum": "less than", "maximum": "greater than",
             "exclusiveMinimum": "not greater than", "exclusiveMaximum": "not less than"}[keyword]
    def check(v: Any) -> str | None:
        tv = type(v)
        if (tv is int or tv is float) and fail(v, limit):
            return f"{v} is {words} {limit}"
        return None

    return check


def _length_check(keyword: str, limit: int) -> Check:
    is_items = keyword in ("minItems", "maxItems")
    wanted: type = list if is_items else str
    at_least = keyword.startswith("min")
    unit = "item" if is_items else "character"

    def check(v: Any) -> str | None:
        if type(v) is not wanted:
            return None
        n = len(v) if isinstance(v, list | str) else 0
        if (n < limit) if at_least else (n > limit):
            side = "at least" if at_least else "at most"
            return f"needs {side} {limit} {unit}{'s' if limit != 1 else ''}, has {n}"
        return None

    return check


def _items_check(item: Check) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not list:
            return None
        for i, x in enumerate(v):
            reason = item(x)
            if reason is not None:
                return f"item {i}: {reason}"
        return None

    return check


def _real_day(v: str) -> bool:
    """Days 29-31 exist in this month of this year (the regexes checked the ranges already)."""
    if v[8:10] <= "28":
        return True
    try:
        date(int(v[0:4]), int(v[5:7]), int(v[8:10]))
    except ValueError:
        return False
    return True


def is_uuid(v: str) -> bool:
    return _UUID.match(v) is not None


def is_date(v: str) -> bool:
    return _DATE.match(v) is not None and _real_day(v)


def is_date_time(v: str) -> bool:
    return _DATE_TIME.match(v) is not None and _real_day(v)


# format -> (predicate on strings, what a valid value looks like); other formats are annotations
# only (the JSON Schema 2020-12 default).
FORMATS: dict[str, tuple[Callable[[str], bool], str]] = {
    "uuid": (is_uuid, "a UUID"),
    "date": (is_date, "a date (YYYY-MM-DD)"),
    "date-time": (is_date_time, "an RFC 3339 date-time (e.g. 2026-11-01T08:00:00Z)"),
}


def _format_check(fmt: str) -> Check | None:
    known = FORMATS.get(fmt)
    if known is None:
        return None
    valid, wanted = known

    def check(v: Any) -> str | None:
        if type(v) is not str or valid(v):
            return None
        return f"{json.dumps(v, ensure_ascii=False)} is not {wanted}"

    return check


def _jsonschema_check(prop: Mapping[str, Any]) -> Check:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(dict(prop))

    def check(v: Any) -> str | None:
        err = next(iter(validator.iter_errors(v)), None)
        return None if err is None else err.message

    return check


def _chain(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks

        def check2(v: Any) -> str | None:
            r = a(v)
            return r if r is not None else b(v)

        return check2

    def check_all(v: Any) -> str | None:
        for c in checks:
            r = c(v)
            if r is not None:
                return r
        return None

    return check_all


def _accept(v: Any) -> str | None:
    return None


def compile_property(prop: Mapping[str, Any]) -> Check:
    """One check for one property schema (see the module docstring for the keywords handled)."""
    unknown = {k for k in prop if k not in _HANDLED and k not in _ANNOTATIONS
               and not k.startswith("x-")}
    if unknown:
        return _jsonschema_check(prop)
    checks: list[Check] = []
    if "type" in prop:
        t = prop["type"]
        checks.append(_type_check([t] if isinstance(t, str) else t))
    if "const" in prop:
        checks.append(_const_check(prop["const"]))
    if "enum" in prop:
        checks.append(_enum_check(list(prop["enum"])))
    if "pattern" in prop:
        checks.append(_pattern_check(prop["pattern"]))
    if "format" in prop:
        fc = _format_check(prop["format"])
        if fc is not None:
            checks.append(fc)
    for kw in ("minLength", "maxLength", "minItems", "maxItems"):
        if kw in prop:
            checks.append(_length_check(kw, int(prop[kw])))
    for kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if kw in prop:
            checks.append(_bound_check(kw, prop[kw]))
    if "items" in prop:
        checks.append(_items_check(compile_property(prop["items"])))
    return _chain(checks) if checks else _accept


_CHECKSUM_CACHE: dict[str, bool] = {}
_CHECKSUM_CACHE_MAX = 200_000


def valid_checksum(v: str) -> bool:
    """IIN/BIN check digit, remembered (the same institution and learners recur in every save)."""
    ok = _CHECKSUM_CACHE.get(v)
    if ok is None:
        if len(_CHECKSUM_CACHE) >= _CHECKSUM_CACHE_MAX:
            _CHECKSUM_CACHE.clear()
        ok = _CHECKSUM_CACHE[v] = has_valid_checksum(v)
    return ok


def _checksum_check(v: Any) -> str | None:
    if type(v) is str and not valid_checksum(v):
        return f"{json.dumps(v)} has a wrong check digit"
    return None


# -- the fast path: one generated function per record shape --------------------------------------

_FAST_TYPES = {
    "string": "type(v) is str",
    "integer": "type(v) is int",
    "number": "(type(v) is int or type(v) is float)",
    "boolean": "(v is True or v is False)",
    "array": "type(v) is list",
    "object": "type(v) is dict",
}


def fast_predicate(prop: Mapping[str, Any], ns: dict[str, Any], checksum: bool = False
                   ) -> str | None:
    """A Python expression on ``v`` that is True only for values :func:`compile_property` accepts.

    It may be stricter than the exact check (then the exact check decides), never more lenient.
    None when there is no simple expression (the exact check runs for every value).
    """
    if any(k not in _HANDLED and k not in _ANNOTATIONS and not k.startswith("x-") for k in prop):
        return None
    raw = prop.get("type")
    if raw is None:
        return None
    types = {raw} if isinstance(raw, str) else set(raw)
    nullable = "null" in types
    types.discard("null")
    if len(types) != 1 or next(iter(types)) not in _FAST_TYPES:
        return "v is None" if nullable and not types and set(prop) <= {"type"} else None
    kind = next(iter(types))
    conds = [_FAST_TYPES[kind]]

    def name(prefix: str, value: Any) -> str:
        key = f"{prefix}{len(ns)}"
        ns[key] = value
        return key

    if "enum" in prop:
        values = list(prop["enum"])
        if not all(isinstance(e, str) or e is None for e in values) or kind != "string":
            return None
        nullable = nullable and None in values
        conds.append(f"v in {name('E', frozenset(e for e in values if e is not None))}")
    if "const" in prop:
        c = prop["const"]
        if not (kind in ("string", "integer") and type(c) in (str, int)):
            return None
        nullable = nullable and c is None
        conds.append(f"v == {c!r}")
    if kind == "string":
        if "pattern" in prop:
            conds.append(f"{name('R', compile_pattern(prop['pattern']))}.search(v) is not None")
        if prop.get("format") in FORMATS:
            conds.append(f"{name('F', FORMATS[prop['format']][0])}(v)")
        if "minLength" in prop:
            conds.append(f"len(v) >= {int(prop['minLength'])}")
        if "maxLength" in prop:
            conds.append(f"len(v) <= {int(prop['maxLength'])}")
        if checksum:
            conds.append(f"{name('K', valid_checksum)}(v)")
    if kind in ("integer", "number"):
        for kw, op in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"),
                       ("exclusiveMaximum", "<")):
            if kw in prop:
                limit = prop[kw]
                if type(limit) not in (int, float):
                    return None
                conds.append(f"v {op} {limit!r}")
    if kind == "array":
        if "minItems" in prop:
            conds.append(f"len(v) >= {int(prop['minItems'])}")
        if "maxItems" in prop:
            conds.append(f"len(v) <= {int(prop['maxItems'])}")
        if "items" in prop:
            items = _items_check(compile_property(prop["items"]))
            conds.append(f"{name('I', items)}(v) is None")
    expr = " and ".join(conds)
    return f"v is None or ({expr})" if nullable else expr


RecordCheck = Callable[[dict[str, Any]], tuple[dict[str, Any] | None, str | None]]


def build_record_check(props: Mapping[str, Mapping[str, Any]], checks: Mapping[str, Check],
                       fields: Iterable[str], required: Collection[str] = (),
                       checksum_fields: Collection[str] = ()) -> RecordCheck:
    """One generated function checking a record's ``fields`` and returning what to store.

    Per field: missing -> null (``required`` ones fail instead, as does a null there); else a
    fast inline test and, only when that fails, the exact check of ``checks`` (which gives the
    reason, or accepts what the fast test was too strict for). A record holding exactly these
    fields is stored as it is; otherwise a new dict with every field (unknown ones dropped).
    """
    names = list(fields)
    ns: dict[str, Any] = {}
    lines = ["def check_record(record):", "    full = True"]
    for i, field_name in enumerate(names):
        ns[f"C{i}"] = checks[field_name]
        # No fast test: "False", so the exact check runs for every value present.
        pred = fast_predicate(props[field_name], ns, field_name in checksum_fields) or "False"
        if field_name in required:
            kind = "the record id" if field_name == ID_FIELD else "a key field"
            missing = f"return None, {f'{field_name}: missing ({kind} is required)'!r}"
            lines += ["    try:",
                      f"        v = record[{field_name!r}]",
                      "    except KeyError:",
                      f"        {missing}",
                      "    if v is None:",
                      f"        {missing}"]
            lines.append(f"    if not ({pred}):")
        else:
            lines += ["    try:",
                      f"        v = record[{field_name!r}]",
                      "    except KeyError:",
                      "        v = None",
                      "        full = False",
                      "    else:",
                      f"        if not ({pred}):"]
        indent = "        " if field_name in required else "            "
        lines += [f"{indent}r = C{i}(v)",
                  f"{indent}if r is not None:",
                  f"{indent}    return None, {field_name + ': '!r} + r",
                  f"    v{i} = v"]
    lines += [f"    if full and len(record) == {len(names)}:",
              "        return record, None",
              "    return {" + ", ".join(f"{n!r}: v{i}" for i, n in enumerate(names)) + "}, None"]
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<receiver record check>", "exec"), ns)
    fn: RecordCheck = ns["check_record"]
    fn.__doc__ = source  # the generated code, for whoever debugs it
    return fn


# -- the record contract -------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A save body after the per-record checks: what to store and what failed."""

    rows: list[tuple[int, str, tuple[str, ...], dict[str, Any]]]
    """(index in the array, record_id, key values, stored fields) of each valid record."""
    failed: list[tuple[int, str | None, str]]
    """(index, record_id or None, reason) of each record that fails."""


class RecordContract:
    """The fields, key and checks of one record contract (one JSON Schema file)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        props: Mapping[str, Mapping[str, Any]] = schema.get("properties") or {}
        if ID_FIELD not in props:
            raise ContractError(f"the schema has no {ID_FIELD!r} property")
        self.schema = schema
        self.properties = props
        self.version: int | None = schema.get("x-contract-version")
        self.fields: tuple[str, ...] = tuple(props)
        self.key_fields: tuple[str, ...] = tuple(n for n, p in props.items() if p.get("x-key"))
        if not self.key_fields:
            raise ContractError("the schema marks no key field (x-key: true)")
        checks = {name: compile_property(p) for name, p in props.items()}
        self.checksum_fields = tuple(n for n in CHECKSUM_FIELDS if n in checks)
        for name in self.checksum_fields:
            checks[name] = _chain([checks[name], _checksum_check])
        self.checks: dict[str, Check] = checks
        self._required = (ID_FIELD, *(k for k in self.key_fields if k != ID_FIELD))
        getter = operator.itemgetter(*self.key_fields)
        self._key_of: Callable[[dict[str, Any]], tuple[str, ...]] = (
            getter if len(self.key_fields) > 1 else lambda r: (getter(r),))
        self._plans: dict[frozenset[str], RecordCheck] = {}

    def _plan(self, ignored: frozenset[str]) -> RecordCheck:
        plan = self._plans.get(ignored)
        if plan is None:
            plan = build_record_check(self.properties, self.checks,
                                      [n for n in self.fields if n not in ignored],
                                      self._required, self.checksum_fields)
            self._plans[ignored] = plan
        return plan

    def check_record(self, record: Any, ignored: frozenset[str] = frozenset()
                     ) -> tuple[dict[str, Any] | None, str | None]:
        """(the fields to store, None) or (None, the reason the record fails)."""
        if type(record) is not dict:
            return None, f"a record must be a JSON object, got {_json_type(record)}"
        if ignored:
            for name in self._required:
                if name in ignored:
                    kind = "the record id" if name == ID_FIELD else "a key field"
                    return None, f"{name}: missing ({kind} is required)"
        return self._plan(ignored)(record)

    def check_record_slowly(self, record: dict[str, Any], ignored: frozenset[str] = frozenset()
                            ) -> tuple[dict[str, Any] | None, str | None]:
        """The same answer as :meth:`check_record` from the exact checks alone (for tests)."""
        stored: dict[str, Any] = {}
        for name in (*[n for n in self._required if n in ignored], *self.fields):
            if name in self._required and (name in ignored or record.get(name) is None):
                kind = "the record id" if name == ID_FIELD else "a key field"
                return None, f"{name}: missing ({kind} is required)"
            if name in ignored:
                continue
            if name not in record:
                stored[name] = None
                continue
            reason = self.checks[name](record[name])
            if reason is not None:
                return None, f"{name}: {reason}"
            stored[name] = record[name]
        return stored, None

    def prepare(self, records: Iterable[Any], ignored: Collection[str] = (),
                reject: Callable[[], bool] | None = None) -> Prepared:
        """Checks every record of a save body.

        ``reject`` (fault injection) is asked once per valid record; True moves it to ``failed``
        with the reason "temporarily rejected (fault injection)".
        """
        ign = frozenset(ignored)
        rows: list[tuple[int, str, tuple[str, ...], dict[str, Any]]] = []
        failed: list[tuple[int, str | None, str]] = []
        key_of = self._key_of
        check = self.check_record
        for i, record in enumerate(records):
            stored, reason = check(record, ign)
            if stored is None:
                rid = record.get(ID_FIELD) if type(record) is dict else None
                failed.append((i, rid if type(rid) is str else None, reason or "invalid"))
                continue
            rid = stored[ID_FIELD]
            if reject is not None and reject():
                failed.append((i, rid, REJECTED_REASON))
                continue
            rows.append((i, rid, key_of(stored), stored))
        return Prepared(rows, failed)


@cache
def load_contract(path: Path = SCHEMA_PATH) -> RecordContract:
    """The contract of ``schemas/delivered-record.v1.json`` (or another schema), compiled once."""
    with Path(path).open("rb") as f:
        return RecordContract(json.load(f))

