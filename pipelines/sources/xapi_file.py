"""Statement dumps: NDJSON, a JSON array, a single statement or an LRS result (gzip or not).

Some LMSs export statements to files instead of running an LRS. ``path`` is a file or a glob;
files are read in name order. The format is sniffed per file:

- a first line that is a whole JSON object -> NDJSON, read line by line (bounded memory); a line
  that is not JSON is kept raw and rejected later as ``malformed-json``;
- otherwise the whole file is one JSON value: an array of statements, a single statement, or an
  LRS ``{"statements": [...]}`` result. A file that is not valid JSON at all becomes one rejected
  raw record (the file's bytes) so that nothing read disappears.

The window applies to each statement's ``stored`` (or ``timestamp`` when a dump has no stored);
statements outside it are counted as ``outside_window``, never silently dropped.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import msgspec
import pyarrow as pa

from pipelines.config import SourceSettings
from pipelines.sources.base import FatalSourceError, Page, SourceStats, Window

_any = msgspec.json.Decoder()


class _Envelope(msgspec.Struct):
    statements: list[msgspec.Raw]


_list = msgspec.json.Decoder(list[msgspec.Raw])
_env = msgspec.json.Decoder(_Envelope)
CHUNK = 1 << 20
LINES_PER_PAGE = 5000  # for whole-file formats


def _blocks(path: Path) -> Iterator[bytes]:
    """The file's content, gzip or not, in large blocks that each end with a whole line.

    Arrow decompresses in C++ without holding the GIL, so reading overlaps the processing of the
    previous page instead of competing with it.
    """
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with pa.input_stream(str(path), compression="gzip" if gz else None) as stream:
        rest = b""
        while chunk := stream.read(CHUNK):
            cut = chunk.rfind(b"\n")
            if cut < 0:
                rest += chunk
                continue
            yield b"".join((rest, memoryview(chunk)[:cut + 1]))  # one copy, not two
            rest = chunk[cut + 1:]
        if rest:
            yield rest + b"\n"


class XapiFileSource:
    """Statements from files matched by one path or glob."""

    kind: ClassVar[str] = "xapi-file"

    def __init__(self, settings: SourceSettings, *, lines_per_page: int = LINES_PER_PAGE):
        assert settings.path, "an xapi-file source needs a path"
        self.name = settings.name
        self.pattern = settings.path
        self.lines_per_page = lines_per_page
        self.stats = SourceStats()

    def close(self) -> None:
        pass

    def files(self) -> list[Path]:
        matches = sorted(glob.glob(self.pattern, recursive=True))
        files = [Path(m) for m in matches if os.path.isfile(m)]
        if not files:
            raise FatalSourceError(
                self.name, self.pattern, "no file matches this path; check the source's 'path'"
            )
        return files

    def pages(self, window: Window) -> Iterator[Page]:
        # The window is applied by the caller after normalisation (it needs the parsed times).
        for path in self.files():
            yield from self._file_pages(path)

    def _file_pages(self, path: Path) -> Iterator[Page]:
        try:
            blocks = _blocks(path)
            head = next(blocks, b"")
        except (OSError, pa.ArrowException) as exc:
            raise FatalSourceError(self.name, str(path), f"cannot read: {exc}") from exc
        self.stats.requests += 1
        stripped = head[:head.find(b"\n")].strip()
        # One object per line starts and ends a line with braces; a pretty-printed object's
        # first line is a lone "{". A one-line LRS result is a whole document, not NDJSON.
        ndjson = stripped.startswith(b"{") and stripped.endswith(b"}")
        if ndjson:
            try:
                value = _any.decode(stripped)
                ndjson = not (isinstance(value, dict) and isinstance(
                    value.get("statements"), list))
            except msgspec.DecodeError:
                pass
        try:
            if ndjson:
                yield from self._ndjson(path, itertools.chain((head,), blocks))
            else:
                yield from self._whole(path, b"".join(itertools.chain((head,), blocks)))
        except (OSError, pa.ArrowException) as exc:
            raise FatalSourceError(self.name, str(path), f"cannot read: {exc}") from exc

    def _ndjson(self, path: Path, blocks: Iterator[bytes]) -> Iterator[Page]:
        ref = str(path)
        line = 1
        for block in blocks:
            n = block.count(b"\n")
            self.stats.bytes += len(block)
            self.stats.pages += 1
            yield Page([], ref, datetime.now(UTC), block=block, first_line=line, lines=n)
            line += n

    def _whole(self, path: Path, data: bytes) -> Iterator[Page]:
        self.stats.bytes += len(data)
        fetched = datetime.now(UTC)
        body = data.strip()
        items: list[bytes] | None = None
        if body.startswith(b"["):
            try:
                items = [bytes(r) for r in _list.decode(body)]
            except msgspec.DecodeError:
                items = None
        elif body.startswith(b"{"):
            try:
                items = [bytes(r) for r in _env.decode(body).statements]
            except (msgspec.DecodeError, msgspec.ValidationError):
                items = [body]  # a single statement (judged, and rejected if bad, later)
        if items is None:
            # Not JSON as a whole: keep the file's bytes as one record, rejected downstream.
            items = [body]
        for start in range(0, len(items), self.lines_per_page):
            chunk = items[start:start + self.lines_per_page]
            self.stats.pages += 1
            yield Page(chunk, str(path), fetched,
                       positions=list(range(start, start + len(chunk))))
