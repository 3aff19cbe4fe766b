"""The authorised body's API client (ЕПВО, paragraph 29), per ``pipelines/receiver/API.md``.

What it honours (ANCHORS.md section 4):

- HTTP Basic (``FOOTPRINT_AUTHORITY_USERNAME`` / ``_PASSWORD``) or a bearer token
  (``FOOTPRINT_AUTHORITY_TOKEN``); TLS certificates verified (``[authority] verify_tls``, on by
  default; ``SSL_CERT_FILE`` names a private CA);
- ``list/save`` of whole records (the save is a full replace), gzip-compressed where the server
  takes it: a 415 answer turns gzip off for the rest of the client's life;
- a 200 answer may still list ``failedRecords``: :meth:`save` returns them for the caller to retry
  one by one or keep as failed — never to drop;
- connect and read timeouts; 408, 429, 5xx (but 501), timeouts and dropped connections are
  retried with exponential backoff and full jitter, a ``Retry-After`` wins (up to
  ``backoff_cap``); 401/403 and other 4xx are fatal and name the URL and what to check; an
  untrusted TLS certificate is fatal at once; a 404 counts as "no such record" only with the
  API's ``{"error": "not found"}`` body.

A save that was applied but whose answer was lost is retried: safe, because a save of whole
records keyed on the composite key is idempotent.
"""

from __future__ import annotations

import gzip
import random
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from pipelines.config import AuthoritySettings, Credentials
from pipelines.sources.base import Backoff
from pipelines.sources.lrs import parse_retry_after

#: besides every 5xx but 501 (Not Implemented, which no retry changes)
RETRIABLE_STATUS = frozenset({408, 429})


class AuthorityError(Exception):
    def __init__(self, url: str, cause: str, attempts: int = 1) -> None:
        super().__init__(f"authority {url}: {cause}")
        self.url = url
        self.cause = cause
        self.attempts = attempts  # requests made before giving up


class RetriableAuthorityError(AuthorityError):
    def __init__(self, url: str, cause: str, retry_after: float | None = None) -> None:
        super().__init__(url, cause)
        self.retry_after = retry_after


class FatalAuthorityError(AuthorityError):
    pass


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0
    waits: list[float] = field(default_factory=list)
    gzip: bool = True


@dataclass(frozen=True)
class FailedRecord:
    index: int
    record_id: str | None
    reason: str


@dataclass(frozen=True)
class SaveAnswer:
    saved: int | None  # the authority's savedRecords (None when it gave no number)
    failed: tuple[FailedRecord, ...]  # index -1: an entry that names no record of the batch
    attempts: int
    answer: dict[str, Any]

    def accounted(self, sent: int) -> bool:
        """Whether the answer says exactly what happened to every record of the batch."""
        placed = {f.index for f in self.failed}
        return -1 not in placed and (self.saved is None or self.saved + len(placed) == sent)


class AuthorityClient:
    def __init__(
        self, settings: AuthoritySettings, credentials: Credentials,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.stats = ClientStats(gzip=settings.gzip)
        self._sleep = sleep
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap,
                               settings.max_attempts, rng or random.Random())
        self._http = httpx.Client(
            base_url=settings.endpoint,
            headers={**credentials.header(), "Accept": "application/json",
                     "User-Agent": "footprint (paragraph 29 delivery)"},
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            verify=settings.verify_tls, transport=transport, follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AuthorityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths ----------------------------------------------------------------------------------
    def _path(self, template: str, **kw: Any) -> str:
        return template.format(entity=self.settings.entity, **kw)

    def url(self, path: str) -> str:
        return str(self._http.base_url.join(path))

    # -- the API ----------------------------------------------------------------------------------
    def save(self, records: list[dict[str, Any]], body: bytes | None = None) -> SaveAnswer:
        """``list/save`` the records (whole); returns what was saved and what failed, by index."""
        raw = body if body is not None else orjson.dumps(records)
        path = self._path(self.settings.save_path)
        answer, attempts = self._call("POST", path, raw)
        entries = answer.get("failedRecords") if isinstance(answer, dict) else None
        if not isinstance(answer, dict) or not isinstance(entries or [], list):
            raise FatalAuthorityError(self.url(path), f"unexpected answer to a save: "
                                      f"{_excerpt(orjson.dumps(answer))}", attempts)
        failed = []
        for f in entries or []:
            idx = f.get("index") if isinstance(f, dict) else None
            rid = f.get("recordId") if isinstance(f, dict) else None
            if not isinstance(idx, int) or not 0 <= idx < len(records):
                # an entry we cannot place by index: find it by id; -1 when that fails too
                idx = next((i for i, r in enumerate(records) if r["record_id"] == rid), -1)
            failed.append(FailedRecord(idx, rid, str(f.get("reason", "no reason given")
                                                     if isinstance(f, dict) else f)))
        saved = answer.get("savedRecords")
        return SaveAnswer(saved if isinstance(saved, int) and not isinstance(saved, bool)
                          else None, tuple(failed), attempts, answer)

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """Every record the authority holds for our entity, page by page (deleted included)."""
        page = 0
        while True:
            path = self._path(self.settings.find_all_path, page=page,
                              size=self.settings.page_size)
            answer, _ = self._call("GET", path)
            if not isinstance(answer, dict) or not isinstance(answer.get("content"), list):
                raise FatalAuthorityError(self.url(path), "a paged read answered without a "
                                          "'content' list")
            yield answer["content"]
            total_pages = answer.get("totalPages")
            if answer.get("last") is True or not answer["content"] or (
                    isinstance(total_pages, int) and page + 1 >= total_pages):
                return
            page += 1

    def find_all(self) -> Iterator[dict[str, Any]]:
        for page in self.pages():
            yield from page

    def find_by_id(self, record_id: str) -> dict[str, Any] | None:
        path = self._path(self.settings.find_by_id_path, id=record_id)
        answer, _ = self._call("GET", path, not_found_ok=True)
        return answer if isinstance(answer, dict) else None

    def delete(self, record_id: str) -> bool:
        """Logical delete: True when deleted (or already), False when the id is unknown there."""
        path = self._path(self.settings.delete_path, id=record_id)
        answer, _ = self._call("POST", path, b"", not_found_ok=True)
        return answer is not None

    # -- one request, retried ---------------------------------------------------------------------
    def _call(self, method: str, path: str, body: bytes | None = None,
              not_found_ok: bool = False) -> tuple[Any, int]:
        attempt = 1
        while True:
            try:
                return self._once(method, path, body, not_found_ok), attempt
            except FatalAuthorityError as exc:
                exc.attempts = attempt
                raise
            except RetriableAuthorityError as exc:
                if attempt >= self.backoff.max_attempts:
                    raise FatalAuthorityError(
                        exc.url, f"gave up after {attempt} attempts: {exc.cause}",
                        attempt) from exc
                wait = self.backoff.delay(attempt, exc.retry_after)
                self.stats.retries += 1
                self.stats.waits.append(wait)
                self._sleep(wait)
                attempt += 1

    def _once(self, method: str, path: str, body: bytes | None, not_found_ok: bool) -> Any:
        url = self.url(path)
        headers = {}
        content = body
        if body:
            headers["Content-Type"] = "application/json"
            if self.stats.gzip:
                content = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
        self.stats.requests += 1
        try:
            resp = self._http.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise RetriableAuthorityError(url, f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or isinstance(exc.__context__,
                                                                    ssl.SSLCertVerificationError):
                raise FatalAuthorityError(
                    url, f"the server's TLS certificate is not trusted ({exc}); if the authority "
                         f"uses a private CA, point SSL_CERT_FILE at its certificate") from exc
            raise RetriableAuthorityError(
                url, f"connection failed or dropped ({type(exc).__name__}: {exc})") from exc
        self.stats.bytes_sent += len(content or b"")
        code = resp.status_code
        if code == 415 and headers.get("Content-Encoding") == "gzip":
            self.stats.gzip = False  # the server takes no gzip: plain JSON from now on
            return self._once(method, path, body, not_found_ok)
        if code in RETRIABLE_STATUS or (code >= 500 and code != 501):
            raise RetriableAuthorityError(
                url, f"HTTP {code}: {_excerpt(resp.content)}",
                parse_retry_after(resp.headers.get("Retry-After")))
        if code in (401, 403):
            raise FatalAuthorityError(
                url, f"HTTP {code}: the authority refused our credentials; check "
                     f"FOOTPRINT_AUTHORITY_USERNAME and FOOTPRINT_AUTHORITY_PASSWORD (or _TOKEN)")
        if code == 404 and not_found_ok:
            # only "this record does not exist"; a 404 for a wrong path or entity must not
            # pass for it (a delete would then be taken for done)
            try:
                doc = orjson.loads(resp.content)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict) and doc.get("error") == "not found":
                return None
            raise FatalAuthorityError(
                url, f"HTTP 404 that is not 'record not found' ({_excerpt(resp.content)}): "
                     f"check [authority] entity and the paths")
        if not 200 <= code < 300:
            raise FatalAuthorityError(url, f"HTTP {code}: {_excerpt(resp.content)}")
        if not resp.content:
            return {}
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            # a truncated answer is a dropped connection in disguise: try again
            raise RetriableAuthorityError(url, f"answer is not JSON: {exc}") from exc


def _excerpt(body: bytes, n: int = 300) -> str:
    text = body[:n].decode("utf-8", "replace").strip()
    return text + ("…" if len(body) > n else "") if text else "(empty body)"
