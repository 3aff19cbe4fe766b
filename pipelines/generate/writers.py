"""Write generated statements to NDJSON files or POST them to an LRS; the whole generate run."""

from __future__ import annotations

import gzip
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from .statements import KINDS, GeneratedLine, TroubleShares, generate_statements
from .university import build_university, write_catalogue_csv, write_roster_csv

__all__ = ["PostReport", "post_to_lrs", "run_generate", "write_ndjson"]

# Lines an LRS is expected to refuse: sent one at a time so that they cannot take a batch down.
ONE_BY_ONE = frozenset({"malformed_json", "invalid", "conflicting_duplicate"})
_CHUNK = 1000  # lines per write() call


def _as_bytes(item: GeneratedLine | bytes) -> bytes:
    return item if isinstance(item, bytes | bytearray) else item.line


def write_ndjson(
    lines: Iterable[GeneratedLine | bytes], path: str | Path, compresslevel: int = 3
) -> int:
    """Write one line per item (``\\n``-terminated); gzip when ``path`` ends with ``.gz``.

    The gzip header carries no file name and mtime 0, so equal lines give equal bytes. Writing
    (and compressing: zlib lets go of the GIL) happens on a second thread, in order, while the
    caller's iterator keeps producing lines. Returns the number of lines written.
    """
    p = Path(path)
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            with p.open("wb") as raw:
                out: IO[bytes] | gzip.GzipFile = raw
                gz: gzip.GzipFile | None = None
                if p.name.endswith(".gz"):
                    gz = gzip.GzipFile(
                        filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=compresslevel
                    )
                    out = gz
                try:
                    while (chunk := chunks.get()) is not None:
                        out.write(chunk)
                finally:
                    if gz is not None:
                        gz.close()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
            while chunks.get() is not None:  # unblock the producer
                pass

    thread = threading.Thread(target=writer, name="write_ndjson", daemon=True)
    thread.start()
    n = 0
    try:
        buf: list[bytes] = []
        for item in lines:
            buf.append(_as_bytes(item))
            if len(buf) >= _CHUNK:
                n += len(buf)
                buf.append(b"")
                chunks.put(b"\n".join(buf))
                buf = []
                if failure:
                    break
        if buf and not failure:
            n += len(buf)
            buf.append(b"")
            chunks.put(b"\n".join(buf))
    finally:
        chunks.put(None)
        thread.join()
    if failure:
        raise failure[0]
    return n


@dataclass(slots=True)
class PostReport:
    posted: int = 0  # lines sent (each line counted once, even when its batch was retried)
    accepted: int = 0  # answered 2xx
    refused: int = 0  # answered 4xx
    by_kind: dict[str, int] = field(default_factory=dict)  # lines sent, per kind
    refused_by_kind: dict[str, int] = field(default_factory=dict)
    batches: int = 0  # batch POSTs (arrays)
    batches_split: int = 0  # batches refused as a whole and re-sent one statement at a time
    singles: int = 0  # single-statement POSTs
    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status -> how many answers

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        return d


def _strip_stored(line: bytes) -> bytes | None:
    """The statement without ``stored`` (the LRS sets it), or None when the line is not JSON."""
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(d, dict) and "stored" in d:
        del d["stored"]
        return orjson.dumps(d)
    return line


class _Poster:
    def __init__(
        self,
        client: httpx.Client,
        url: str,
        headers: dict[str, str],
        auth: httpx.BasicAuth,
        report: PostReport,
        retries: int = 3,
    ) -> None:
        self.client = client
        self.url = url
        self.headers = headers
        self.auth = auth
        self.report = report
        self.retries = retries

    def _post(self, body: bytes) -> httpx.Response:
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                resp = self.client.post(
                    self.url, content=body, headers=self.headers, auth=self.auth
                )
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if resp.status_code < 500 or attempt == self.retries:
                    self.report.statuses[resp.status_code] = (
                        self.report.statuses.get(resp.status_code, 0) + 1
                    )
                    if resp.status_code >= 500:
                        resp.raise_for_status()
                    return resp
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def single(self, body: bytes, kind: str) -> None:
        rep = self.report
        rep.singles += 1
        resp = self._post(body)
        if resp.is_success:
            rep.accepted += 1
        else:
            rep.refused += 1
            rep.refused_by_kind[kind] = rep.refused_by_kind.get(kind, 0) + 1

    def batch(self, items: list[tuple[bytes, str]]) -> None:
        if not items:
            return
        rep = self.report
        if len(items) == 1:
            self.single(*items[0])
            return
        rep.batches += 1
        resp = self._post(b"[" + b",".join(body for body, _ in items) + b"]")
        if resp.is_success:
            rep.accepted += len(items)
            return
        if resp.status_code in (400, 409):
            # one bad statement refuses the whole batch: send them one by one
            rep.batches_split += 1
            for body, kind in items:
                self.single(body, kind)
            return
        rep.refused += len(items)
        for _, kind in items:
            rep.refused_by_kind[kind] = rep.refused_by_kind.get(kind, 0) + 1


def post_to_lrs(
    lines: Iterable[GeneratedLine],
    endpoint: str,
    auth: tuple[str, str],
    batch_size: int = 500,
    xapi_version: str = "1.0.3",
    *,
    timeout: float = 60.0,
    client: httpx.Client | None = None,
) -> PostReport:
    """POST lines to ``<endpoint>/statements`` and count what the LRS accepts and refuses.

    Valid-looking lines go in batches (a JSON array of up to ``batch_size`` statements) without
    ``stored``; a batch refused as a whole (400, or 409 from LRSs that answer a batch that way)
    is re-sent one statement at a time. Lines an LRS should refuse (malformed JSON, invalid xAPI,
    conflicting duplicates) go one by one, after the pending batch, so a conflicting duplicate
    always reaches the LRS after its original. A statement id already in the pending batch
    (an exact duplicate) flushes that batch first: an LRS refuses a batch with a repeated id.
    4xx answers are counted, not raised; 5xx and network errors are retried, then raised.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    url = endpoint.rstrip("/") + "/statements"
    report = PostReport(by_kind=dict.fromkeys(KINDS, 0))
    own = client is None
    http = client or httpx.Client(timeout=timeout)
    headers = {"X-Experience-API-Version": xapi_version, "Content-Type": "application/json"}
    poster = _Poster(http, url, headers, httpx.BasicAuth(*auth), report)
    pending: list[tuple[bytes, str]] = []
    pending_ids: set[str | None] = set()
    try:
        for gl in lines:
            report.posted += 1
            report.by_kind[gl.kind] = report.by_kind.get(gl.kind, 0) + 1
            body = _strip_stored(gl.line)
            if gl.kind in ONE_BY_ONE or body is None:
                poster.batch(pending)
                pending, pending_ids = [], set()
                poster.single(gl.line if body is None else body, gl.kind)
                continue
            if gl.statement_id is not None and gl.statement_id in pending_ids:
                poster.batch(pending)
                pending, pending_ids = [], set()
            pending.append((body, gl.kind))
            pending_ids.add(gl.statement_id)
            if len(pending) >= batch_size:
                poster.batch(pending)
                pending, pending_ids = [], set()
        poster.batch(pending)
    finally:
        if own:
            http.close()
    return report


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def run_generate(
    out_dir: Path,
    seed: int,
    students: int,
    disciplines: int,
    statements: int,
    trouble: TroubleShares,
    start: datetime,
    end: datetime,
    lrs_endpoint: str | None = None,
    lrs_auth: tuple[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    batch_size: int = 500,
    progress_every: int = 10_000,
) -> dict[str, Any]:
    """Write ``roster.csv`` and ``catalogue.csv``; write ``statements.ndjson.gz`` or POST to an LRS.

    The university's teaching period is the calendar days of [start, end). ``progress`` is called
    with the number of lines produced so far every ``progress_every`` lines and at the end.
    Returns a JSON-able summary.
    """
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise ValueError("end must be after start")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    univ = build_university(
        seed,
        students=students,
        disciplines=disciplines,
        period_start=start.date(),
        period_end=(end - timedelta(milliseconds=1)).date(),
    )
    files = [
        str(write_roster_csv(univ, out / "roster.csv")),
        str(write_catalogue_csv(univ, out / "catalogue.csv")),
    ]
    by_kind = dict.fromkeys(KINDS, 0)

    def counted(it: Iterator[GeneratedLine]) -> Iterator[GeneratedLine]:
        n = 0
        for gl in it:
            by_kind[gl.kind] += 1
            n += 1
            if progress is not None and n % progress_every == 0:
                progress(n)
            yield gl
        if progress is not None and n % progress_every != 0:
            progress(n)

    lines = counted(generate_statements(univ, statements, seed, trouble, start, end))
    lrs: dict[str, Any] | None = None
    if lrs_endpoint is None:
        path = out / "statements.ndjson.gz"
        write_ndjson(lines, path)
        files.append(str(path))
    else:
        if lrs_auth is None:
            raise ValueError("lrs_auth is required with lrs_endpoint")
        report = post_to_lrs(lines, lrs_endpoint, lrs_auth, batch_size=batch_size)
        lrs = {"endpoint": lrs_endpoint, **report.as_dict()}
    return {
        "seed": seed,
        "students": len(univ.students),
        "disciplines": len(univ.disciplines),
        "activities": sum(len(d.activity_ids) for d in univ.disciplines),
        "statements": sum(by_kind.values()),
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": end.isoformat().replace("+00:00", "Z"),
        "trouble": trouble.as_dict(),
        "by_kind": by_kind,
        "files": files,
        "lrs": lrs,
    }
