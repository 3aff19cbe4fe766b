"""What every source is: a small declarative class that reads one time window as pages.

A source yields ``Page`` objects, each a list of statements exactly as received (bytes) with where
they came from. It never parses statements into rows (normalisation does that, the same for every
source) and never writes anything (the zones do that). Errors are of two kinds:

- ``RetriableSourceError``: worth trying again (timeouts, 429, 5xx, dropped connections, a body
  cut short); the source retries these itself with backoff and gives up with a Fatal one;
- ``FatalSourceError``: retrying will not help (bad credentials, a refused query, a ``more`` link
  to another host, retries used up). The run fails, names the source, URL and cause, and changes
  no state.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


class SourceError(Exception):
    def __init__(self, source: str, url: str, cause: str) -> None:
        super().__init__(f"source {source!r}: {cause} ({url})")
        self.source = source
        self.url = url
        self.cause = cause


class RetriableSourceError(SourceError):
    def __init__(self, source: str, url: str, cause: str, retry_after: float | None = None):
        super().__init__(source, url, cause)
        self.retry_after = retry_after


class FatalSourceError(SourceError):
    pass


def utc_ms(dt: datetime) -> datetime:
    """UTC, truncated to milliseconds: the precision LRSs store and compare ``stored`` at."""
    dt = dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def iso_ms(dt: datetime) -> str:
    return utc_ms(dt).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Window:
    """The stored-time window (since, until] of a run; None means unbounded on that side."""

    since: datetime | None
    until: datetime | None

    def __post_init__(self) -> None:
        if self.since is not None:
            object.__setattr__(self, "since", utc_ms(self.since))
        if self.until is not None:
            object.__setattr__(self, "until", utc_ms(self.until))
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"window start {self.since} is not before its end {self.until}")

    def label(self) -> str:
        """A folder-safe name: 20261125T101500.000Z--20261125T111500.000Z ('start'/'end' open)."""

        def f(d: datetime | None, open_: str) -> str:
            return d.strftime("%Y%m%dT%H%M%S.") + f"{d.microsecond // 1000:03d}Z" if d else open_

        return f"{f(self.since, 'start')}--{f(self.until, 'end')}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "since": iso_ms(self.since) if self.since else None,
            "until": iso_ms(self.until) if self.until else None,
        }


@dataclass
class Page:
    """Statements as received, in order, with where they came from.

    ``ref`` is the page URL or the file path; ``positions`` gives each statement's line number in
    an NDJSON file (None: the position in the page, 0-based).

    An NDJSON file is read as blocks of whole lines instead (``block``, its first line's number
    ``first_line``, and ``lines`` newline-ended lines in it): splitting them is left to whoever
    processes the page, so that the reading process only moves large byte strings around.
    """

    statements: list[bytes]
    ref: str
    fetched_at: datetime
    positions: list[int] | None = None
    consistent_through: datetime | None = None
    block: bytes | None = None
    first_line: int = 1
    lines: int = 0

    @property
    def size(self) -> int:
        """Statements in the page (for a block: its lines, blank ones included)."""
        return self.lines if self.block is not None else len(self.statements)


def split_block(block: bytes, first_line: int) -> tuple[list[bytes], list[int]]:
    """A block of NDJSON lines -> its non-blank lines (stripped) and their line numbers."""
    stripped = [line.strip() for line in block.split(b"\n")]
    if stripped and not stripped[-1]:
        stripped.pop()  # the block's final newline
    if b"" not in stripped:  # no blank line: the usual case, no per-line work left
        return stripped, list(range(first_line, first_line + len(stripped)))
    statements: list[bytes] = []
    numbers: list[int] = []
    for i, line in enumerate(stripped):
        if line:
            statements.append(line)
            numbers.append(first_line + i)
    return statements, numbers


@dataclass
class SourceStats:
    requests: int = 0
    retries: int = 0
    pages: int = 0
    bytes: int = 0
    waits: list[float] = field(default_factory=list)


class Source(Protocol):
    name: str
    stats: SourceStats

    def pages(self, window: Window) -> Iterator[Page]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped; a server's Retry-After wins when given."""

    base: float = 0.5
    cap: float = 60.0
    max_attempts: int = 6
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap)
        return self.rng.uniform(0, min(self.cap, self.base * (2 ** (attempt - 1))))


def retrying[T](
    call: Callable[[], T], backoff: Backoff, stats: SourceStats,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``; on RetriableSourceError wait and try again, up to ``max_attempts`` in all."""
    attempt = 1
    while True:
        try:
            return call()
        except RetriableSourceError as exc:
            if attempt >= backoff.max_attempts:
                raise FatalSourceError(
                    exc.source, exc.url, f"gave up after {attempt} attempts: {exc.cause}"
                ) from exc
            wait = backoff.delay(attempt, exc.retry_after)
            stats.retries += 1
            stats.waits.append(wait)
            sleep(wait)
            attempt += 1


_END = object()


def prefetch[T](it: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Run ``it`` in a thread, ``depth`` items ahead, so fetching overlaps processing.

    Exceptions from the producer are raised in the consumer at the point they occurred; when the
    consumer stops early the producer is told to stop too.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    t = threading.Thread(target=produce, name="footprint-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while True:  # make room so a producer blocked on put() can see the stop and leave
            try:
                q.get_nowait()
            except queue.Empty:
                break
        t.join(timeout=5)
