"""Credentials from Airflow Connections, read from ``AIRFLOW_CONN_<CONN_ID>`` without Airflow.

A source or the authority may name a connection in ``footprint.toml`` (``connection =
"footprint_lrs"``). Airflow exposes a connection defined in the environment as the variable
``AIRFLOW_CONN_<CONN_ID upper-cased>``, in one of two forms, and this module reads both the way
Airflow does (``airflow.sdk.Connection.from_uri`` / ``from_json``), so one configuration serves
the ``footprint`` CLI and the DAGs:

- URI: ``http://LOGIN:PASSWORD@host:port/schema?token=...`` (login and password URL-encoded;
  query parameters are the connection's extra, or ``__extra__=<JSON>`` holds it whole);
- JSON (a value starting with ``{``): ``{"conn_type": "http", "login": "...", "password": "...",
  "extra": {"token": "..."}}`` (``extra`` may also be a JSON string).

Inside Airflow the DAG tasks fetch the named connections with ``airflow.sdk.Connection.get`` (so
connections kept in Airflow's metadata database or a secrets backend work too) and hand them to
:mod:`pipelines.orchestrate` in this same serialised form; nothing here imports Airflow.

What a connection gives:

- ``extra.token`` -> a bearer token;
- else ``login`` -> HTTP Basic with ``login`` and ``password`` (empty when absent);
- else ``password`` alone -> a bearer token.

The connection's host, port and schema are not used: endpoints stay in ``footprint.toml``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

CONN_ENV_PREFIX = "AIRFLOW_CONN_"
#: what Airflow accepts as a connection id and a shell can carry in a variable name
CONN_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$")
EXTRA_KEY = "__extra__"


class ConnectionValueError(ValueError):
    """A connection value cannot be read; the message names the variable, never the secret."""


@dataclass(frozen=True)
class ConnectionValue:
    """The parts of an Airflow connection footprint uses."""

    conn_id: str
    conn_type: str | None
    login: str | None
    password: str | None
    extra: dict[str, Any]

    @property
    def token(self) -> str | None:
        t = self.extra.get("token")
        if t:
            return str(t)
        if self.login is None and self.password:
            return self.password
        return None


def env_name(conn_id: str) -> str:
    """``AIRFLOW_CONN_<CONN_ID>``: the variable Airflow reads a connection from."""
    return CONN_ENV_PREFIX + conn_id.upper()


def _extra(value: Any, where: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise ConnectionValueError(f"{where}: extra is not JSON") from None
        if isinstance(parsed, dict):
            return parsed
    raise ConnectionValueError(f"{where}: extra must be a JSON object")


def parse(conn_id: str, value: str, where: str | None = None) -> ConnectionValue:
    """Read a serialised connection (URI or JSON form) as Airflow does."""
    where = where or env_name(conn_id)
    text = value.strip()
    if not text:
        raise ConnectionValueError(f"{where} is empty")
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise ConnectionValueError(f"{where}: starts with '{{' but is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ConnectionValueError(f"{where}: a JSON connection must be an object")
        login, password = doc.get("login"), doc.get("password")
        return ConnectionValue(
            conn_id=conn_id, conn_type=doc.get("conn_type"),
            login=None if login is None else str(login),
            password=None if password is None else str(password),
            extra=_extra(doc.get("extra"), where))
    if "://" not in text:
        raise ConnectionValueError(f"{where}: neither a URI (type://login:password@host) nor JSON")
    # Airflow's form: conn-type://[login[:password]@]host[:port][/schema][?extra]; a host with
    # its own protocol (http://https://host) is allowed, as Airflow allows it.
    scheme, rest = text.split("://", 1)
    if "://" in rest:
        inner, _, _ = rest.partition("://")
        if "@" in inner or ":" in inner:
            raise ConnectionValueError(f"{where}: not a valid connection URI")
        rest = rest.split("://", 1)[1]
    parts = urlsplit("//" + rest)
    login = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    extra: dict[str, Any] = {}
    if parts.query:
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        extra = _extra(query[EXTRA_KEY], where) if EXTRA_KEY in query else query
    return ConnectionValue(conn_id=conn_id, conn_type=scheme.replace("-", "_") or None,
                           login=login, password=password, extra=extra)


def from_env(conn_id: str, environ: Mapping[str, str] | None = None) -> ConnectionValue | None:
    """The connection ``conn_id`` from ``AIRFLOW_CONN_<CONN_ID>``, or None when it is not set."""
    env = os.environ if environ is None else environ
    value = env.get(env_name(conn_id))
    if value is None:
        return None
    return parse(conn_id, value)


@contextmanager
def exported(connections: Mapping[str, str] | None) -> Iterator[None]:
    """Make ``{conn_id: serialised connection}`` visible as ``AIRFLOW_CONN_*`` for a while.

    What Airflow's own task runner does for a connection it fetched: the variables are set for
    the duration of the block and restored afterwards (this process only).
    """
    if not connections:
        yield
        return
    saved: dict[str, str | None] = {}
    try:
        for conn_id, value in connections.items():
            key = env_name(conn_id)
            saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
