"""footprint.toml -> typed settings.

The file names where things live and which sources to read; it never holds a secret. Credentials
come from the environment only (``FOOTPRINT_SOURCE_<NAME>_USERNAME`` / ``_PASSWORD`` or ``_TOKEN``,
where ``<NAME>`` is the source name upper-cased with every other character turned into ``_``), or
from an Airflow connection a source or ``[authority]`` names (``connection = "<conn_id>"``, read
from ``AIRFLOW_CONN_<CONN_ID>``, see :mod:`pipelines.connections`). When both are there the
``FOOTPRINT_*`` variables win: they are the more specific, per-process setting.

Relative paths in the file (storage root, SQLite database, file-source globs) are relative to the
folder that holds the file, so a configuration means the same thing whatever the working directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import msgspec

from pipelines.iin import has_valid_checksum
from pipelines.xapi.validate import PROFILES

DEFAULT_CONFIG_NAME = "footprint.toml"
CONFIG_ENV = "FOOTPRINT_CONFIG"
SOURCE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
XAPI_VERSIONS = ("1.0.3", "2.0.0")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the key and what is wrong."""


class _Storage(msgspec.Struct, forbid_unknown_fields=True):
    root: str = "data"
    batch_statements: int = 10_000
    workers: int = 0


class _State(msgspec.Struct, forbid_unknown_fields=True):
    url: str = "sqlite:///data/state.db"


class _Source(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    kind: Literal["xapi-lrs", "xapi-file"]
    endpoint: str | None = None
    path: str | None = None
    xapi_version: str = "1.0.3"
    page_size: int = 500
    lookback: str | int = "PT15M"
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    enabled: bool = True
    tolerate: list[str] = msgspec.field(default_factory=list)
    connection: str | None = None  # an Airflow connection id (credentials)


class _Reference(msgspec.Struct, forbid_unknown_fields=True):
    roster: str | None = None
    catalogue: str | None = None


class _Quality(msgspec.Struct, forbid_unknown_fields=True):
    data_docs: bool = False


class _Institution(msgspec.Struct, forbid_unknown_fields=True):
    code: str | None = None
    name: str | None = None


class _Authority(msgspec.Struct, forbid_unknown_fields=True):
    endpoint: str | None = None
    entity: str = "ONLINE_LEARNING"
    save_path: str = "org-data/list/save?entity={entity}"
    find_all_path: str = "org-data/find-all-pageable?entity={entity}&page={page}&size={size}"
    find_by_id_path: str = "org-data/find-by-id?entity={entity}&id={id}"
    delete_path: str = "org-data/{id}/delete?entity={entity}"
    batch_size: int = 500
    in_flight: int = 3
    page_size: int = 1000
    gzip: bool = True
    readback: Literal["sample", "all", "none"] = "sample"
    readback_sample: int = 1
    record_attempts: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    verify_tls: bool = True
    connection: str | None = None  # an Airflow connection id (credentials)


class _Alerts(msgspec.Struct, forbid_unknown_fields=True):
    webhook: str | None = None
    email: list[str] = msgspec.field(default_factory=list)
    smtp_host: str = "localhost"
    smtp_port: int = 25
    email_from: str = "footprint@localhost"
    timeout: float = 10.0


class _File(msgspec.Struct, forbid_unknown_fields=True):
    storage: _Storage = msgspec.field(default_factory=_Storage)
    state: _State = msgspec.field(default_factory=_State)
    reference: _Reference = msgspec.field(default_factory=_Reference)
    quality: _Quality = msgspec.field(default_factory=_Quality)
    institution: _Institution = msgspec.field(default_factory=_Institution)
    authority: _Authority = msgspec.field(default_factory=_Authority)
    alerts: _Alerts = msgspec.field(default_factory=_Alerts)
    sources: list[_Source] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to a source: HTTP Basic or a bearer token (never both)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    def header(self) -> dict[str, str]:
        import base64

        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username is not None:
            raw = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        return {}


@dataclass(frozen=True)
class SourceSettings:
    name: str
    kind: str
    endpoint: str | None
    path: str | None
    xapi_version: str
    page_size: int
    lookback: timedelta
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    enabled: bool
    # tolerance profiles (pipelines.xapi.validate.PROFILES) for this source's known deviations
    tolerate: tuple[str, ...] = ()
    connection: str | None = None  # Airflow connection id: AIRFLOW_CONN_<ID> (after the env)

    @property
    def env_prefix(self) -> str:
        return "FOOTPRINT_SOURCE_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper()) + "_"

    def credentials(self, environ: Mapping[str, str] | None = None) -> Credentials:
        """Credentials from the environment; a ConfigError naming the variables if none are set."""
        return resolve_credentials(self.env_prefix, f"source {self.name!r}", self.connection,
                                   environ)


def env_credentials(prefix: str, who: str, environ: Mapping[str, str] | None = None
                    ) -> Credentials:
    """``<prefix>TOKEN`` (bearer) or ``<prefix>USERNAME`` + ``<prefix>PASSWORD`` (Basic)."""
    env = os.environ if environ is None else environ
    p = prefix
    token = env.get(p + "TOKEN")
    user = env.get(p + "USERNAME")
    password = env.get(p + "PASSWORD")
    if token:
        return Credentials(token=token)
    if user is not None:
        if password is None:
            raise ConfigError(f"{who}: {p}USERNAME is set but {p}PASSWORD is not")
        return Credentials(username=user, password=password)
    raise ConfigError(
        f"{who}: no credentials in the environment; set {p}USERNAME and "
        f"{p}PASSWORD (HTTP Basic) or {p}TOKEN (bearer)"
    )


def resolve_credentials(prefix: str, who: str, connection: str | None,
                        environ: Mapping[str, str] | None = None) -> Credentials:
    """``<prefix>TOKEN`` / ``USERNAME`` when set, else the Airflow connection ``connection``."""
    env = os.environ if environ is None else environ
    if connection is None or env.get(prefix + "TOKEN") or env.get(prefix + "USERNAME") is not None:
        return env_credentials(prefix, who, env)
    from pipelines import connections

    try:
        conn = connections.from_env(connection, env)
    except connections.ConnectionValueError as exc:
        raise ConfigError(f"{who}: connection {connection!r}: {exc}") from None
    if conn is None:
        raise ConfigError(
            f"{who}: no credentials: the connection {connection!r} is configured but "
            f"{connections.env_name(connection)} is not set (nor {prefix}USERNAME and "
            f"{prefix}PASSWORD, or {prefix}TOKEN); inside Airflow, define the connection "
            f"{connection!r}")
    if conn.token:
        return Credentials(token=conn.token)
    if conn.login is not None:
        return Credentials(username=conn.login, password=conn.password or "")
    raise ConfigError(f"{who}: the connection {connection!r} has neither a login (HTTP Basic) "
                      f"nor a password or extra 'token' (bearer)")


AUTHORITY_ENV_PREFIX = "FOOTPRINT_AUTHORITY_"


@dataclass(frozen=True)
class AuthoritySettings:
    """``[authority]``: where and how to deliver (paragraph 29). Paths are relative to endpoint."""

    endpoint: str
    entity: str = "ONLINE_LEARNING"
    save_path: str = "org-data/list/save?entity={entity}"
    find_all_path: str = "org-data/find-all-pageable?entity={entity}&page={page}&size={size}"
    find_by_id_path: str = "org-data/find-by-id?entity={entity}&id={id}"
    delete_path: str = "org-data/{id}/delete?entity={entity}"
    batch_size: int = 500
    # saves (with their sample reads) in flight at once while the next batch is made
    in_flight: int = 3
    page_size: int = 1000
    gzip: bool = True
    # sample: per batch, readback_sample records (and the first holding each field not yet
    # confirmed in the run) are read back by id, and the whole batch when one differs;
    # all: every record sent; none: the 200 is trusted (reconcile still proves)
    readback: str = "sample"
    readback_sample: int = 1
    record_attempts: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    verify_tls: bool = True
    connection: str | None = None  # Airflow connection id: AIRFLOW_CONN_<ID> (after the env)

    def credentials(self, environ: Mapping[str, str] | None = None) -> Credentials:
        return resolve_credentials(AUTHORITY_ENV_PREFIX, "authority", self.connection, environ)


@dataclass(frozen=True)
class AlertSettings:
    """``[alerts]``: where a failed task is reported besides the log (webhook and/or email)."""

    webhook: str | None = None
    email: tuple[str, ...] = ()
    smtp_host: str = "localhost"
    smtp_port: int = 25
    email_from: str = "footprint@localhost"
    timeout: float = 10.0


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or a task's limit), not
    every CPU of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    path: Path | None
    storage_root: Path
    state_url: str
    batch_statements: int
    workers: int  # [storage] workers: 0 = chosen (workers_for, verify_workers)
    sources: tuple[SourceSettings, ...]
    roster: Path | None = None  # [reference] roster: verification runs when both are set
    catalogue: Path | None = None
    data_docs: bool = False  # [quality] data_docs: build Great Expectations Data Docs per run
    institution_code: str | None = None  # [institution] code: the university's BIN
    institution_name: str | None = None
    authority: AuthoritySettings | None = None  # [authority]: delivery runs when set
    alerts: AlertSettings | None = None  # [alerts]: failure notifications besides the log

    def delivery(self) -> tuple[str, AuthoritySettings]:
        """(institution code, authority settings), or a ConfigError saying what to add."""
        missing = [k for k, v in (("institution.code", self.institution_code),
                                  ("authority.endpoint", self.authority)) if v is None]
        if not self.verifies:
            missing[:0] = ["reference.roster", "reference.catalogue"]
        if missing:
            raise ConfigError(
                f"{self.path}: delivery needs {', '.join(missing)} (see the README's "
                f"configuration reference)")
        assert self.institution_code is not None and self.authority is not None
        return self.institution_code, self.authority

    @property
    def verifies(self) -> bool:
        """Whether ingestion goes on to verification (both reference files are configured)."""
        return self.roster is not None and self.catalogue is not None

    def workers_for(self, source: SourceSettings) -> int:
        """Processes that normalise a source's batches. ``workers = 0`` (the default) chooses:
        a file source is read faster than one process normalises it, so one per CPU (at most
        8); an LRS serves pages slower than one process normalises them, so none besides the
        reading process (workers would only take CPU from an LRS on the same machine)."""
        if self.workers:
            return self.workers
        return 1 if source.kind == "xapi-lrs" else min(usable_cpus(), 8)

    def verify_workers(self) -> int:
        """Processes that judge a window's raw bodies in verification: ``workers`` when set,
        else one per CPU (at most 8), whatever the source (no source is read then)."""
        return self.workers or min(usable_cpus(), 8)

    def source(self, name: str) -> SourceSettings:
        for s in self.sources:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} in {self.path}; configured: {known}")


_DURATION_RE = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: str | int | float) -> timedelta:
    """An ISO 8601 duration of days/hours/minutes/seconds (``PT15M``) or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return timedelta(seconds=value)
    m = _DURATION_RE.match(str(value))
    if not m or value in ("P", "PT"):
        raise ValueError(f"{value!r} is not an ISO 8601 duration such as 'PT15M' or 'P1D'")
    parts = {k: float(v) for k, v in m.groupdict().items() if v}
    return timedelta(
        days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )


def _resolve_sqlite(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        rel = url[len(prefix):]
        return prefix + str((base / rel).resolve())
    return url


def locate(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use: ``--config``, else ``$FOOTPRINT_CONFIG``, else ./footprint.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    default = Path.cwd() / DEFAULT_CONFIG_NAME
    return default if default.exists() else None


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and check the configuration; raises ConfigError with one clear message."""
    file = locate(path)
    if file is None:
        raise ConfigError(
            f"no configuration: create {DEFAULT_CONFIG_NAME} in this folder, pass --config PATH, "
            f"or set {CONFIG_ENV} (see the README's configuration reference)"
        )
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from exc
    return loads(text, file)


def loads(text: bytes | str, file: Path | None = None) -> Settings:
    where = str(file) if file else "<config>"
    try:
        raw = msgspec.toml.decode(text, type=_File)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {_explain(str(exc))}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    base = file.resolve().parent if file else Path.cwd()
    sources: list[SourceSettings] = []
    seen: set[str] = set()
    for i, s in enumerate(raw.sources):
        key = f"sources[{i}]"

        def bad(field: str, why: str, key: str = key) -> ConfigError:
            return ConfigError(f"{where}: {key}.{field}: {why}")

        if not SOURCE_NAME_RE.match(s.name):
            raise bad("name", f"{s.name!r} must be lower-case letters, digits, '-' or '_'")
        if s.name in seen:
            raise bad("name", f"{s.name!r} is used by another source")
        seen.add(s.name)
        if s.kind == "xapi-lrs":
            if not s.endpoint:
                raise bad("endpoint", "required for kind = 'xapi-lrs' (the LRS's xAPI base URL)")
            if not s.endpoint.startswith(("http://", "https://")):
                raise bad("endpoint", f"{s.endpoint!r} must be an http:// or https:// URL")
        if s.kind == "xapi-file" and not s.path:
            raise bad("path", "required for kind = 'xapi-file' (a file path or glob)")
        if s.xapi_version not in XAPI_VERSIONS:
            known = ", ".join(XAPI_VERSIONS)
            raise bad("xapi_version", f"{s.xapi_version!r} is not one of {known}")
        if not 1 <= s.page_size <= 10_000:
            raise bad("page_size", f"{s.page_size} must be between 1 and 10000")
        if s.max_attempts < 1:
            raise bad("max_attempts", "must be at least 1")
        for f in ("connect_timeout", "read_timeout", "backoff_base", "backoff_cap"):
            if getattr(s, f) <= 0:
                raise bad(f, "must be a positive number of seconds")
        for name in s.tolerate:
            if name not in PROFILES:
                known = ", ".join(sorted(PROFILES))
                raise bad("tolerate", f"{name!r} is not a tolerance profile; known: {known}")
        if len(set(s.tolerate)) != len(s.tolerate):
            raise bad("tolerate", "a profile is listed twice")
        if s.connection is not None and not _CONN_ID_RE.match(s.connection):
            raise bad("connection", _CONN_ID_WHY.format(s.connection))
        try:
            lookback = parse_duration(s.lookback)
        except ValueError as exc:
            raise bad("lookback", str(exc)) from exc
        endpoint = s.endpoint if not s.endpoint or s.endpoint.endswith("/") else s.endpoint + "/"
        path = s.path
        if path and not os.path.isabs(path):
            path = str(base / path)
        sources.append(
            SourceSettings(
                name=s.name, kind=s.kind, endpoint=endpoint, path=path,
                xapi_version=s.xapi_version, page_size=s.page_size, lookback=lookback,
                connect_timeout=s.connect_timeout, read_timeout=s.read_timeout,
                max_attempts=s.max_attempts, backoff_base=s.backoff_base,
                backoff_cap=s.backoff_cap, enabled=s.enabled, tolerate=tuple(s.tolerate),
                connection=s.connection,
            )
        )
    root = Path(raw.storage.root)
    if not root.is_absolute():
        root = (base / root).resolve()
    if raw.storage.workers < 0:
        raise ConfigError(f"{where}: storage.workers: must be 0 (chosen: per source for "
                          f"ingestion, per CPU for verification) or a count")
    if not 100 <= raw.storage.batch_statements <= 1_000_000:
        raise ConfigError(f"{where}: storage.batch_statements: must be between 100 and 1000000")
    ref = raw.reference
    if (ref.roster is None) != (ref.catalogue is None):
        missing = "catalogue" if ref.catalogue is None else "roster"
        raise ConfigError(f"{where}: reference.{missing}: required when the other reference "
                          f"file is set (verification needs both the roster and the catalogue)")

    def ref_path(value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else (base / p).resolve()

    inst = raw.institution
    if inst.code is not None and not (len(inst.code) == 12 and inst.code.isdigit()
                                      and has_valid_checksum(inst.code)):
        raise ConfigError(f"{where}: institution.code: {inst.code!r} is not a BIN (12 digits "
                          f"whose last is the IIN/BIN check digit)")
    authority = _authority(raw.authority, where)
    alerts = _alerts(raw.alerts, where)
    return Settings(
        path=file, storage_root=root, state_url=_resolve_sqlite(raw.state.url, base),
        batch_statements=raw.storage.batch_statements,
        workers=raw.storage.workers,
        sources=tuple(sources), roster=ref_path(ref.roster),
        catalogue=ref_path(ref.catalogue), data_docs=raw.quality.data_docs,
        institution_code=inst.code, institution_name=inst.name, authority=authority,
        alerts=alerts,
    )


def _authority(a: _Authority, where: str) -> AuthoritySettings | None:
    def bad(field: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: authority.{field}: {why}")

    if a.endpoint is None:
        return None
    if a.connection is not None and not _CONN_ID_RE.match(a.connection):
        raise bad("connection", _CONN_ID_WHY.format(a.connection))
    if not a.endpoint.startswith(("http://", "https://")):
        raise bad("endpoint", f"{a.endpoint!r} must be an http:// or https:// URL")
    if not 1 <= a.batch_size <= 10_000:
        raise bad("batch_size", f"{a.batch_size} must be between 1 and 10000")
    if not 1 <= a.in_flight <= 8:
        raise bad("in_flight", f"{a.in_flight} must be between 1 and 8 (saves sent at once)")
    if not 1 <= a.page_size <= 10_000:
        raise bad("page_size", f"{a.page_size} must be between 1 and 10000")
    if a.readback_sample < 1:
        raise bad("readback_sample", "must be at least 1")
    if a.max_attempts < 1 or a.record_attempts < 1:
        raise bad("max_attempts" if a.max_attempts < 1 else "record_attempts",
                  "must be at least 1")
    for f in ("connect_timeout", "read_timeout", "backoff_base", "backoff_cap"):
        if getattr(a, f) <= 0:
            raise bad(f, "must be a positive number of seconds")
    placeholders = {"save_path": set(), "find_all_path": {"page", "size"},
                    "find_by_id_path": {"id"}, "delete_path": {"id"}}
    for f, needed in placeholders.items():
        names = set(re.findall(r"{(\w+)}", getattr(a, f)))
        unknown = names - needed - {"entity"}
        if unknown or needed - names:
            must = "".join(f" {{{n}}}" for n in sorted(needed)) or " no placeholder"
            raise bad(f, f"{getattr(a, f)!r}: needs{must} and may use {{entity}}; "
                         f"nothing else")
    endpoint = a.endpoint if a.endpoint.endswith("/") else a.endpoint + "/"
    fields = {f: getattr(a, f) for f in a.__struct_fields__ if f != "endpoint"}
    return AuthoritySettings(endpoint=endpoint, **fields)


_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$")  # = connections.CONN_ID_RE
_CONN_ID_WHY = ("{!r} is not an Airflow connection id (letters, digits, '_', '.', '-'); its "
                "credentials are read from AIRFLOW_CONN_<ID upper-cased>")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")


def _alerts(a: _Alerts, where: str) -> AlertSettings | None:
    def bad(field: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: alerts.{field}: {why}")

    if a.webhook is not None and not a.webhook.startswith(("http://", "https://")):
        raise bad("webhook", f"{a.webhook!r} must be an http:// or https:// URL (it receives "
                             f"a JSON POST per failed task)")
    for addr in a.email:
        if not _EMAIL_RE.match(addr):
            raise bad("email", f"{addr!r} is not an email address")
    if not _EMAIL_RE.match(a.email_from):
        raise bad("email_from", f"{a.email_from!r} is not an email address")
    if not 1 <= a.smtp_port <= 65535:
        raise bad("smtp_port", f"{a.smtp_port} is not a TCP port")
    if not a.smtp_host:
        raise bad("smtp_host", "must not be empty")
    if a.timeout <= 0:
        raise bad("timeout", "must be a positive number of seconds")
    if a.webhook is None and not a.email:
        return None
    return AlertSettings(webhook=a.webhook, email=tuple(a.email), smtp_host=a.smtp_host,
                         smtp_port=a.smtp_port, email_from=a.email_from, timeout=a.timeout)


def _explain(msg: str) -> str:
    """msgspec says 'Expected `int`, got `str` - at `$.sources[0].page_size`'; lead with the key."""
    m = re.match(r"^(.*) - at `\$\.?(.*)`$", msg)
    if m:
        what, key = m.groups()
        what = what.replace("Object contains unknown field", "unknown key")
        return f"{key or '(top level)'}: {what}"
    return msg.replace("Object missing required field", "missing required key")
