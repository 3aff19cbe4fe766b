"""An xAPI Learning Record Store, read through ``GET statements`` (xAPI 1.0.3 / 2.0.0).

The rules it keeps (ANCHORS.md section 1):
- the window is on ``stored``: ``since`` (exclusive) and ``until`` (inclusive), ``ascending=true``;
- ``more`` is followed until empty; it is resolved against the LRS's own URL and refused when it
  leads to another origin (scheme, host or port): no request, so no credentials, go there;
- ``X-Experience-API-Version`` and ``Authorization`` go with every request;
- ``X-Experience-API-Consistent-Through`` is read from every page and the lowest one seen is
  reported, so the caller never moves its watermark past it;
- timeouts on connect and read; 429, 5xx, timeouts, dropped connections and bodies cut short are
  retried with exponential backoff and full jitter, honouring ``Retry-After``;
- a page is decoded only as far as its envelope (``statements`` as raw byte slices, ``more``), so
  one odd statement never fails its page: statements are judged one by one later.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import urljoin, urlsplit

import httpx
import msgspec

from pipelines.config import Credentials, SourceSettings
from pipelines.sources.base import (
    Backoff,
    FatalSourceError,
    Page,
    RetriableSourceError,
    SourceStats,
    Window,
    iso_ms,
    retrying,
)

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class _Envelope(msgspec.Struct):
    statements: list[msgspec.Raw]
    more: str | None = None


_envelope = msgspec.json.Decoder(_Envelope)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _parse_header_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), f"{(parts.hostname or '').lower()}:{port}"


class XapiLrsSource:
    """Statements of one LRS, one window at a time, as pages."""

    kind: ClassVar[str] = "xapi-lrs"
    primary_key: ClassVar[str] = "id"
    replication_key: ClassVar[str] = "stored"

    def __init__(
        self,
        settings: SourceSettings,
        credentials: Credentials,
        *,
        transport: httpx.BaseTransport | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        assert settings.endpoint, "an xapi-lrs source needs an endpoint"
        self.name = settings.name
        self.settings = settings
        self.endpoint = settings.endpoint
        self.statements_url = urljoin(self.endpoint, "statements")
        self._origin = _origin(self.endpoint)
        self._auth = credentials.header()
        self.stats = SourceStats()
        self.backoff = backoff or Backoff(
            base=settings.backoff_base, cap=settings.backoff_cap,
            max_attempts=settings.max_attempts,
        )
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
            headers={"X-Experience-API-Version": settings.xapi_version,
                     "Accept": "application/json"},
            follow_redirects=False,
            transport=transport,
            verify=True,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> XapiLrsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paging -------------------------------------------------------------------------------
    def first_request(self, window: Window) -> tuple[str, dict[str, str]]:
        params = {"ascending": "true", "limit": str(self.settings.page_size)}
        if window.since is not None:
            params["since"] = iso_ms(window.since)
        if window.until is not None:
            params["until"] = iso_ms(window.until)
        return self.statements_url, params

    def next_url(self, more: str | None) -> str | None:
        """Where ``more`` leads, resolved against the LRS; None at the end; Fatal off-origin."""
        if not more:
            return None
        target = urljoin(self.endpoint, more)
        if _origin(target) != self._origin:
            raise FatalSourceError(
                self.name, target,
                "the LRS's 'more' link leads to another host; refused, no request sent there "
                "(and so no credentials). Check the LRS's configured public URL",
            )
        return target

    def pages(self, window: Window) -> Iterator[Page]:
        url, params = self.first_request(window)
        next_url: str | None = url
        query: dict[str, str] | None = params
        while next_url is not None:
            page, more = retrying(
                lambda u=next_url, q=query: self._fetch(u, q),  # type: ignore[misc]
                self.backoff, self.stats)
            self.stats.pages += 1
            yield page
            next_url = self.next_url(more)
            query = None

    def _fetch(self, url: str, params: dict[str, str] | None) -> tuple[Page, str | None]:
        self.stats.requests += 1
        try:
            resp = self._client.get(url, params=params, headers=self._auth)
            body = resp.read()
        except httpx.TimeoutException as exc:
            raise RetriableSourceError(self.name, url, f"timed out ({type(exc).__name__})") from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise RetriableSourceError(
                self.name, url, f"connection failed: {exc or type(exc).__name__}"
            ) from exc
        shown = str(resp.request.url)
        status = resp.status_code
        if status in RETRIABLE_STATUS:
            raise RetriableSourceError(
                self.name, shown, f"HTTP {status} from the LRS",
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            )
        if status in (401, 403):
            raise FatalSourceError(
                self.name, shown,
                f"HTTP {status}: the LRS refused the credentials; check "
                f"{self.settings.env_prefix}USERNAME/PASSWORD or TOKEN",
            )
        if status != 200:
            raise FatalSourceError(
                self.name, shown, f"HTTP {status} from the LRS: {body[:300]!r}"
            )
        try:
            env = _envelope.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A body cut short or garbled in transit looks like this; try again, then give up.
            raise RetriableSourceError(
                self.name, shown, f"the page is not a valid statements result: {exc}"
            ) from exc
        fetched = datetime.now(UTC)
        self.stats.bytes += len(body)
        page = Page(
            statements=[bytes(r) for r in env.statements], ref=shown, fetched_at=fetched,
            consistent_through=_parse_header_time(
                resp.headers.get("X-Experience-API-Consistent-Through")
            ),
        )
        return page, env.more
