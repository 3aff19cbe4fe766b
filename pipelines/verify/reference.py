"""Reference data of the footprint verification: the student roster and the discipline catalogue.

Both come from the university information system (AIS) as exports that people make by hand, so
the loader accepts what such exports look like in Kazakhstan:

- CSV in UTF-8, UTF-8 with a BOM (Excel's "CSV UTF-8"), UTF-16 with a BOM or Windows-1251 (Excel's
  plain "CSV" on a Russian-locale Windows); the encoding is detected, never guessed from the
  locale: a BOM first, then strict UTF-8, else Windows-1251. The delimiter (comma, semicolon or
  tab) is sniffed from the header line.
- XLSX (the first sheet of the workbook), read with the standard library only. Numbers that
  Excel stored as numbers are taken back exactly: an IIN cell that lost its leading zero (everyone
  born 2000-2009) gets it back, a date cell (a serial day number) becomes a date.
- Kazakh, Russian and English header names (see ``ROSTER_HEADERS`` and ``CATALOGUE_HEADERS``),
  matched case-insensitively with whitespace trimmed; an explicit ``mapping`` {header in the file
  -> our column} wins over them.

Loading is all or nothing: every bad row is reported with its row number as a person counts lines
in the file (the header is row 1; in an XLSX sheet, Excel's row number), the column and the
reason, and a file with any bad row raises :class:`ReferenceError` instead of loading the rest.
A roster or catalogue that silently dropped a row would make the verification reject every
statement of that student or activity as "unknown", which is far worse than a loud failure.

Values are normalised on the way in (whitespace trimmed, e-mails lower-cased, status and format
synonyms mapped to their codes, Cyrillic look-alikes В/М in programme codes read as Latin B/M),
so the same data in any of the accepted shapes gives the same :attr:`Roster.content_hash`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import posixpath
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal, NamedTuple, cast
from xml.etree import ElementTree as ET

import orjson
import pyarrow as pa

from pipelines.iin import has_valid_checksum, iin_birth_date, iin_check_digit

__all__ = [
    "CATALOGUE_COLUMNS",
    "CATALOGUE_HEADERS",
    "FORMATS",
    "ROSTER_COLUMNS",
    "ROSTER_HEADERS",
    "STATUSES",
    "Catalogue",
    "CatalogueEntry",
    "Format",
    "MissingColumnsError",
    "ReferenceDataError",
    "ReferenceError",
    "Roster",
    "RowProblem",
    "Status",
    "Student",
    "bin_problems",
    "iin_problems",
    "load_catalogue",
    "load_roster",
]

Status = Literal["active", "academic_leave", "expelled"]
Format = Literal["synchronous", "asynchronous", "blended"]
STATUSES: tuple[Status, ...] = ("active", "academic_leave", "expelled")
FORMATS: tuple[Format, ...] = ("synchronous", "asynchronous", "blended")

ROSTER_COLUMNS = ("iin", "student_id", "lms_account", "email", "programme_code", "group", "status")
CATALOGUE_COLUMNS = (
    "activity_id",
    "discipline_code",
    "credits",
    "period_start",
    "period_end",
    "format",
)

# Header names of Kazakh, Russian and English AIS exports (matched after _header_key).
ROSTER_HEADERS: dict[str, tuple[str, ...]] = {
    "iin": ("iin", "ЖСН", "ИИН", "ЖСН (ИИН)", "ИИН (ЖСН)"),
    "student_id": (
        "student_id",
        "student id",
        "Студент ID",
        "Білім алушы ID",
        "ID білім алушы",
        "ID студента",
        "ID обучающегося",
    ),
    "lms_account": ("lms_account", "lms account", "LMS логин", "Логин LMS", "LMS login"),
    "email": ("email", "e-mail", "Электрондық пошта", "Эл. почта", "Электронная почта"),
    "programme_code": (
        "programme_code",
        "programme code",
        "program_code",
        "Білім беру бағдарламасы",
        "ББ коды",
        "Образовательная программа",
        "Код ОП",
    ),
    "group": ("group", "Топ", "Группа"),
    "status": ("status", "Мәртебе", "Статус"),
}
CATALOGUE_HEADERS: dict[str, tuple[str, ...]] = {
    "activity_id": ("activity_id", "activity id", "activity", "Белсенділік ID", "ID активности"),
    "discipline_code": (
        "discipline_code",
        "discipline code",
        "Пән коды",
        "Код дисциплины",
    ),
    "credits": ("credits", "Кредит", "Кредиттер", "Кредиты", "Кредитов"),
    "period_start": ("period_start", "period start", "Кезең басы", "Начало периода"),
    "period_end": ("period_end", "period end", "Кезең соңы", "Конец периода"),
    "format": ("format", "Формат", "Оқыту форматы", "Формат обучения"),
}

_STATUS_WORDS: dict[str, Status] = {
    "active": "active",
    "белсенді": "active",
    "активный": "active",
    "обучается": "active",
    "academic_leave": "academic_leave",
    "academic leave": "academic_leave",
    "академиялық демалыс": "academic_leave",
    "академический отпуск": "academic_leave",
    "expelled": "expelled",
    "шығарылған": "expelled",
    "отчислен": "expelled",
    "отчислена": "expelled",
}
_FORMAT_WORDS: dict[str, Format] = {
    "synchronous": "synchronous",
    "синхронды": "synchronous",
    "синхронный": "synchronous",
    "asynchronous": "asynchronous",
    "асинхронды": "asynchronous",
    "асинхронный": "asynchronous",
    "blended": "blended",
    "аралас": "blended",
    "смешанный": "blended",
}

MAX_LISTED = 20  # problems spelled out in a ReferenceError's message
_MAX_PART_BYTES = 512 * 1024 * 1024  # an XLSX part larger than this is refused (zip bomb guard)
_STRIP = " \t\r\n\v\f\xa0\u2007\u202f\u200b\ufeff"
_DIGITS = frozenset("0123456789")
_PROGRAMME_RE = re.compile(r"(?:6B|7M|8D)\d{5}")
# Cyrillic letters that look like the Latin ones of a programme code (6В06102 typed in Cyrillic)
_LOOKALIKES = str.maketrans({"В": "B", "М": "M"})
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
_IRI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_ISO_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ]00:00(?::00(?:\.0+)?)?)?")
_DMY_DATE_RE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})")
_NUMBER_RE = re.compile(r"[+-]?\d+(?:[.,]\d+)?")

# A cell as read: text, or a number when an XLSX cell holds one.
Cell = str | int | float


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class Student:
    """One row of the roster. ``lms_account`` or ``email`` may be None, never both."""

    iin: str
    student_id: str
    lms_account: str | None
    email: str | None  # lower-case
    programme_code: str
    group: str | None
    status: Status


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One LMS activity (an xAPI activity id) of a discipline."""

    activity_id: str
    discipline_code: str
    credits: int
    period_start: date
    period_end: date
    format: Format


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one value of one row was refused. ``row`` counts lines of the file, header = 1."""

    row: int | None  # None: the file as a whole
    column: str | None  # our column name; None: the row as a whole
    reason: str
    header: str | None = None  # the file's own header for the column, when it differs

    def describe(self, name: str) -> str:
        where = name if self.row is None else f"{name} row {self.row}"
        if self.column is not None:
            where += f", column {self.column}"
            if self.header is not None:
                where += f" ({self.header})"
        return f"{where}: {self.reason}"


class ReferenceError(ValueError):
    """A reference file that was not loaded, with every problem found in it.

    (It shadows the builtin ``ReferenceError`` where imported by name; ``ReferenceDataError`` is
    the same class under a name that does not.)
    """

    def __init__(self, path: str | Path, problems: Sequence[RowProblem], summary: str = "") -> None:
        # summary: a message to use instead of the list of problems
        self.path = Path(path)
        self.problems = list(problems)
        self.summary = summary
        super().__init__(self._message())

    def _message(self) -> str:
        if self.summary:
            return self.summary
        name = self.path.name
        n = len(self.problems)
        lines = [f"{name}: {n} problem{'s' if n != 1 else ''}, nothing was loaded from the file"]
        lines += [f"  {p.describe(name)}" for p in self.problems[:MAX_LISTED]]
        if n > MAX_LISTED:
            more = n - MAX_LISTED
            lines.append(f"  ... and {more} more problem{'s' if more != 1 else ''}")
        return "\n".join(lines)

    def __reduce__(self) -> tuple[object, ...]:
        return (self.__class__, (self.path, self.problems, self.summary))


ReferenceDataError = ReferenceError


class MissingColumnsError(ReferenceError):
    """Required columns are absent from the header row (names them and the columns found)."""

    def __init__(
        self,
        path: str | Path,
        missing: Sequence[str],
        found: Sequence[str],
        known: Mapping[str, Sequence[str]],
        unused_mapping: Sequence[str] = (),
    ) -> None:
        self.missing = list(missing)
        self.found = list(found)
        self.known = {k: list(v) for k, v in known.items()}
        self.unused_mapping = list(unused_mapping)
        name = Path(path).name
        parts = [
            f"{name}: required column{'s' if len(missing) != 1 else ''} missing: "
            f"{', '.join(missing)}",
            f"columns found: {', '.join(repr(f) for f in found) or '(none)'}",
        ]
        parts += [f"names understood for {c}: {', '.join(self.known[c])}" for c in missing]
        if unused_mapping:
            parts.append(
                "mapping headers not in the file: " + ", ".join(repr(u) for u in unused_mapping)
            )
        parts.append("pass mapping={'header in the file': 'column'} for other header names")
        problems = [RowProblem(1, c, "required column missing") for c in missing]
        super().__init__(path, problems, summary="\n  ".join(parts))

    def __reduce__(self) -> tuple[object, ...]:
        return (
            self.__class__,
            (self.path, self.missing, self.found, self.known, self.unused_mapping),
        )


# --------------------------------------------------------------------------------------------
# IIN and BIN


def _is_digits(s: str, n: int) -> bool:
    return len(s) == n and all(c in _DIGITS for c in s)


def _length_hint(s: str) -> str:
    if _is_digits(s, 11):
        return "; 11 digits: a spreadsheet may have dropped a leading zero"
    if "e+" in s.lower():
        return "; a spreadsheet turned it into a rounded number"
    return ""


def iin_problems(s: str) -> list[str]:
    """Why ``s`` is not a valid IIN (ANCHORS section 5); an empty list when it is valid."""
    if not _is_digits(s, 12):
        return [f"an IIN has 12 digits 0-9 (got {s!r}{_length_hint(s)})"]
    out = []
    if s[6] not in "123456":
        out.append(f"IIN birth date impossible: century digit {s[6]} is not 1-6 (got {s})")
    elif iin_birth_date(s) is None:
        out.append(
            f"IIN birth date impossible: {s[0:2]}-{s[2:4]}-{s[4:6]} (YY-MM-DD) is not a date "
            f"(got {s})"
        )
    if not has_valid_checksum(s):
        check = iin_check_digit(s[:11])
        if check is None:
            out.append(
                "checksum does not match: both passes give 10, so no valid IIN starts with "
                f"these 11 digits (got {s})"
            )
        else:
            out.append(f"checksum does not match: the check digit should be {check} (got {s})")
    return out


def bin_problems(s: str) -> list[str]:
    """Why ``s`` is not a plausible BIN (business identification number); empty when it is.

    Checked: 12 digits, a registration month 01-12 in digits 3-4, the legal-entity type digit 5
    (4 resident, 5 non-resident, 6 individual entrepreneur in a joint venture) and the IIN
    checksum, which BINs share.
    """
    if not _is_digits(s, 12):
        return [f"a BIN has 12 digits 0-9 (got {s!r}{_length_hint(s)})"]
    out = []
    if not 1 <= int(s[2:4]) <= 12:
        out.append(f"BIN registration month {s[2:4]} is not 01-12 (got {s})")
    if s[4] not in "456":
        out.append(f"BIN type digit {s[4]} is not 4, 5 or 6 (got {s})")
    if not has_valid_checksum(s):
        out.append(f"checksum does not match (got {s})")
    return out


# --------------------------------------------------------------------------------------------
# Roster and catalogue


def _content_hash(kind: str, rows: Iterable[Sequence[object]]) -> str:
    h = hashlib.sha256(f"footprint-reference-{kind}-v1\n".encode())
    for r in rows:
        h.update(orjson.dumps(list(r)))
        h.update(b"\n")
    return h.hexdigest()


def _strip_mailto(mbox: str) -> str:
    s = mbox.strip(_STRIP)
    if s[:7].lower() == "mailto:":
        s = s[7:]
    return s.strip(_STRIP).lower()


class Roster:
    """The students, in file order, with dict lookups by LMS account, e-mail and identifiers."""

    __slots__ = (
        "_by_account",
        "_by_email",
        "_by_iin",
        "_by_sha1",
        "_by_student_id",
        "_students",
        "content_hash",
        "source",
    )

    def __init__(self, students: Iterable[Student], source: str | Path | None = None) -> None:
        self._students = tuple(students)
        self.source = None if source is None else Path(source)
        self._by_iin: dict[str, Student] = {}
        self._by_student_id: dict[str, Student] = {}
        self._by_account: dict[str, Student] = {}
        self._by_email: dict[str, Student] = {}
        self._by_sha1: dict[str, Student] = {}
        for s in self._students:
            keys: list[tuple[dict[str, Student], str | None, str]] = [
                (self._by_iin, s.iin, "iin"),
                (self._by_student_id, s.student_id, "student_id"),
                (self._by_account, s.lms_account, "lms_account"),
                (self._by_email, s.email.lower() if s.email else None, "email"),
            ]
            for index, key, what in keys:
                if key is None:
                    continue
                if key in index:
                    raise ValueError(f"two students with {what} {key!r}")
                index[key] = s
            if s.email:
                self._by_sha1[hashlib.sha1(f"mailto:{s.email.lower()}".encode()).hexdigest()] = s
        #: sha256 of the normalised content, independent of row order and of the file's shape
        self.content_hash = _content_hash(
            "roster",
            (
                (s.iin, s.student_id, s.lms_account, s.email, s.programme_code, s.group, s.status)
                for s in sorted(self._students, key=lambda s: s.iin)
            ),
        )

    def __len__(self) -> int:
        return len(self._students)

    def __iter__(self) -> Iterator[Student]:
        return iter(self._students)

    def __repr__(self) -> str:
        src = f" from {self.source.name}" if self.source else ""
        return f"Roster({len(self)} students{src}, sha256 {self.content_hash[:12]})"

    @property
    def students(self) -> tuple[Student, ...]:
        return self._students

    def by_account(self, name: str | None) -> Student | None:
        """The student whose ``lms_account`` is exactly ``name`` (xAPI ``actor.account.name``)."""
        return None if name is None else self._by_account.get(name)

    def by_mbox(self, mbox: str | None) -> Student | None:
        """The student with this e-mail (``mailto:`` optional, case-insensitive)."""
        return None if not mbox else self._by_email.get(_strip_mailto(mbox))

    def by_mbox_sha1sum(self, sha1: str | None) -> Student | None:
        """The student whose ``sha1("mailto:" + lower-case e-mail)`` is ``sha1`` (hex)."""
        return None if not sha1 else self._by_sha1.get(sha1.strip().lower())

    def by_iin(self, iin: str) -> Student | None:
        return self._by_iin.get(iin)

    def by_student_id(self, student_id: str) -> Student | None:
        return self._by_student_id.get(student_id)

    def resolve(
        self,
        actor_account_name: str | None,
        actor_mbox: str | None,
        actor_mbox_sha1sum: str | None = None,
    ) -> Student | None:
        """The student behind an xAPI actor: the LMS account first, then the mailbox."""
        return (
            self.by_account(actor_account_name)
            or self.by_mbox(actor_mbox)
            or self.by_mbox_sha1sum(actor_mbox_sha1sum)
        )

    def to_arrow(self) -> pa.Table:
        schema = pa.schema(
            [
                pa.field("iin", pa.string(), nullable=False),
                pa.field("student_id", pa.string(), nullable=False),
                pa.field("lms_account", pa.string()),
                pa.field("email", pa.string()),
                pa.field("programme_code", pa.string(), nullable=False),
                pa.field("group", pa.string()),
                pa.field("status", pa.string(), nullable=False),
            ],
            metadata={b"reference": b"roster", b"content_hash": self.content_hash.encode()},
        )
        cols = {c: [getattr(s, c) for s in self._students] for c in ROSTER_COLUMNS}
        return pa.table(cols, schema=schema)


class Catalogue:
    """The LMS activities of the disciplines, in file order, looked up by xAPI activity id."""

    __slots__ = ("_by_activity", "_entries", "content_hash", "source")

    def __init__(self, entries: Iterable[CatalogueEntry], source: str | Path | None = None) -> None:
        self._entries = tuple(entries)
        self.source = None if source is None else Path(source)
        self._by_activity: dict[str, CatalogueEntry] = {}
        for e in self._entries:
            if e.activity_id in self._by_activity:
                raise ValueError(f"two catalogue entries for activity {e.activity_id!r}")
            self._by_activity[e.activity_id] = e
        #: sha256 of the normalised content, independent of row order and of the file's shape
        self.content_hash = _content_hash(
            "catalogue",
            (
                (
                    e.activity_id,
                    e.discipline_code,
                    e.credits,
                    e.period_start.isoformat(),
                    e.period_end.isoformat(),
                    e.format,
                )
                for e in sorted(self._entries, key=lambda e: e.activity_id)
            ),
        )

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[CatalogueEntry]:
        return iter(self._entries)

    def __repr__(self) -> str:
        src = f" from {self.source.name}" if self.source else ""
        return f"Catalogue({len(self)} activities{src}, sha256 {self.content_hash[:12]})"

    @property
    def entries(self) -> tuple[CatalogueEntry, ...]:
        return self._entries

    def by_activity(self, activity_id: str | None) -> CatalogueEntry | None:
        return None if activity_id is None else self._by_activity.get(activity_id)

    def resolve(
        self, object_id: str | None, parent_ids: Sequence[str] | None = None
    ) -> CatalogueEntry | None:
        """The entry of the statement's object, else of its first parent found in the catalogue."""
        hit = self.by_activity(object_id)
        if hit is not None:
            return hit
        for p in parent_ids or ():
            hit = self._by_activity.get(p)
            if hit is not None:
                return hit
        return None

    def to_arrow(self) -> pa.Table:
        schema = pa.schema(
            [
                pa.field("activity_id", pa.string(), nullable=False),
                pa.field("discipline_code", pa.string(), nullable=False),
                pa.field("credits", pa.int16(), nullable=False),
                pa.field("period_start", pa.date32(), nullable=False),
                pa.field("period_end", pa.date32(), nullable=False),
                pa.field("format", pa.string(), nullable=False),
            ],
            metadata={b"reference": b"catalogue", b"content_hash": self.content_hash.encode()},
        )
        cols = {c: [getattr(e, c) for e in self._entries] for c in CATALOGUE_COLUMNS}
        return pa.table(cols, schema=schema)


# --------------------------------------------------------------------------------------------
# Reading files: rows of cells with their row numbers


class _Table(NamedTuple):
    rows: list[tuple[int, list[Cell]]]  # (row number, cells); blank rows left out
    excel_epoch: date | None  # day 0 of XLSX date serials; None for CSV


def _text(v: Cell) -> str:
    if isinstance(v, str):
        return v.strip(_STRIP)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _file_problem(path: Path, reason: str, row: int | None = None) -> ReferenceError:
    return ReferenceError(path, [RowProblem(row, None, reason)])


def _read_table(path: Path) -> _Table:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _file_problem(path, f"cannot read the file: {exc.strerror or exc}") from exc
    if data.startswith(b"PK\x03\x04"):
        return _read_xlsx(path, data)
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise _file_problem(path, "a legacy Excel .xls workbook: save it as .xlsx or as CSV")
    return _read_csv(path, data)


def _decode(path: Path, data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[3:], "utf-8"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "cp1251"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        what = (
            "neither UTF-8 nor Windows-1251"
            if encoding == "cp1251"
            else f"not valid {encoding.upper()} after its byte order mark"
        )
        raise _file_problem(
            path, f"the text is {what} (byte {data[exc.start]:#04x}); save it as CSV UTF-8", line
        ) from exc


def _sniff_delimiter(line: str) -> str:
    counts = {",": 0, ";": 0, "\t": 0}
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


def _read_csv(path: Path, data: bytes) -> _Table:
    text = _decode(path, data)
    first = next((ln for ln in io.StringIO(text, newline="") if ln.strip(_STRIP)), "")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(first))
    rows: list[tuple[int, list[Cell]]] = []
    last = 0
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if any(c.strip(_STRIP) for c in record):
                rows.append((start, list(record)))
    except csv.Error as exc:
        raise _file_problem(path, f"not readable as CSV: {exc}", reader.line_num) from exc
    return _Table(rows, None)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _rich_text(elem: ET.Element) -> str:
    """The text of a shared string or inline string (<t>, or runs <r><t>), without phonetics."""
    parts = []
    for child in elem:
        name = _local(child.tag)
        if name == "t":
            parts.append(child.text or "")
        elif name == "r":
            parts += [t.text or "" for t in child if _local(t.tag) == "t"]
    return "".join(parts)


def _column_index(ref: str) -> int:
    n = 0
    for ch in ref:
        if "A" <= ch <= "Z":
            n = n * 26 + ord(ch) - 64
        elif "a" <= ch <= "z":
            n = n * 26 + ord(ch) - 96
        else:
            break
    return n - 1


def _number(v: str) -> int | float:
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    x = float(v)
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def _read_xlsx(path: Path, data: bytes) -> _Table:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise _file_problem(path, f"not a readable XLSX workbook: {exc}") from exc
    with zf:
        names = set(zf.namelist())

        def part(name: str) -> bytes | None:
            if name not in names:
                return None
            if zf.getinfo(name).file_size > _MAX_PART_BYTES:
                raise _file_problem(path, f"XLSX part {name} is too large to read")
            return zf.read(name)

        try:
            workbook = part("xl/workbook.xml")
            if workbook is None:
                raise _file_problem(
                    path, "a ZIP file but not an XLSX workbook (no xl/workbook.xml)"
                )
            wb = ET.fromstring(workbook)
            sheet_path = _first_sheet_path(wb, part("xl/_rels/workbook.xml.rels"))
            date1904 = any(
                _local(e.tag) == "workbookPr" and e.get("date1904") in ("1", "true")
                for e in wb.iter()
            )
            strings_xml = part("xl/sharedStrings.xml")
            shared = (
                []
                if strings_xml is None
                else [_rich_text(si) for si in ET.fromstring(strings_xml) if _local(si.tag) == "si"]
            )
            sheet = part(sheet_path)
            if sheet is None:
                raise _file_problem(path, f"the first sheet ({sheet_path}) is missing")
            rows = _sheet_rows(sheet, shared)
        except (ET.ParseError, KeyError, ValueError, IndexError, zipfile.BadZipFile) as exc:
            if isinstance(exc, ReferenceError):
                raise
            raise _file_problem(path, f"not a readable XLSX workbook: {exc}") from exc
    epoch = date(1904, 1, 1) if date1904 else date(1899, 12, 30)
    return _Table(rows, epoch)


def _first_sheet_path(wb: ET.Element, rels_xml: bytes | None) -> str:
    sheets = [e for e in wb.iter() if _local(e.tag) == "sheet"]
    if not sheets:
        raise ValueError("the workbook lists no sheets")
    rid = next((v for k, v in sheets[0].attrib.items() if _local(k) == "id"), None)
    if rels_xml is not None and rid is not None:
        for rel in ET.fromstring(rels_xml):
            if rel.get("Id") == rid and rel.get("Target"):
                target = rel.get("Target", "")
                if target.startswith("/"):
                    return target.lstrip("/")
                return posixpath.normpath(posixpath.join("xl", target))
    return "xl/worksheets/sheet1.xml"


def _sheet_rows(sheet: bytes, shared: list[str]) -> list[tuple[int, list[Cell]]]:
    rows: list[tuple[int, list[Cell]]] = []
    row_no = 0
    for _event, elem in ET.iterparse(io.BytesIO(sheet), events=("end",)):
        if _local(elem.tag) != "row":
            continue
        row_no = int(elem.get("r") or row_no + 1)
        cells: dict[int, Cell] = {}
        col = -1
        for c in elem:
            if _local(c.tag) != "c":
                continue
            ref = c.get("r")
            col = _column_index(ref) if ref else col + 1
            kind = c.get("t", "n")
            raw: str | None = None
            inline = ""
            for ch in c:
                name = _local(ch.tag)
                if name == "v":
                    raw = ch.text or ""
                elif name == "is":
                    inline = _rich_text(ch)
            value: Cell
            if kind == "s":
                value = shared[int(raw)] if raw else ""
            elif kind == "inlineStr":
                value = inline
            elif kind == "b":
                value = "TRUE" if raw == "1" else "FALSE"
            elif kind in ("str", "e", "d"):
                value = raw or ""
            else:
                value = _number(raw.strip()) if raw and raw.strip() else ""
            cells[col] = value
        elem.clear()
        if any(_text(v) for v in cells.values()):
            width = max(cells) + 1
            rows.append((row_no, [cells.get(i, "") for i in range(width)]))
    return rows


# --------------------------------------------------------------------------------------------
# Headers


def _header_key(h: str) -> str:
    return " ".join(h.replace("\ufeff", "").split()).casefold()


class _Columns(NamedTuple):
    positions: dict[str, int]  # our column -> cell index
    header: dict[str, str | None]  # our column -> the file's header, when it is not our name
    width: int  # cells in the header row


def _locate_columns(
    path: Path,
    header_row: list[Cell],
    columns: Sequence[str],
    aliases: Mapping[str, Sequence[str]],
    mapping: Mapping[str, str] | None,
) -> _Columns:
    explicit: dict[str, str] = {}
    for given, target in (mapping or {}).items():
        if target not in columns:
            raise ValueError(
                f"mapping sends {given!r} to {target!r}, which is not one of {', '.join(columns)}"
            )
        explicit[_header_key(given)] = target
    builtin = {_header_key(a): c for c, names in aliases.items() for a in names}
    claimed = set(explicit.values())
    index: dict[str, int] = {}
    header: dict[str, str | None] = {}
    problems: list[RowProblem] = []
    found = [_text(h) for h in header_row]
    for i, raw in enumerate(found):
        key = _header_key(raw)
        if not key:
            continue
        col: str | None = explicit.get(key)
        if col is None:
            col = builtin.get(key)
            if col in claimed:  # the explicit mapping chose another header for this column
                col = None
        if col is None:
            continue
        if col in index:
            problems.append(
                RowProblem(1, col, f"two headers name it: {found[index[col]]!r} and {raw!r}")
            )
            continue
        index[col] = i
        header[col] = None if key == col else raw
    if problems:
        raise ReferenceError(path, problems)
    missing = [c for c in columns if c not in index]
    if missing:
        present = {_header_key(h) for h in found}
        unused = [g for g in (mapping or {}) if _header_key(g) not in present]
        raise MissingColumnsError(path, missing, [h for h in found if h], aliases, unused)
    return _Columns(index, header, len(header_row))


def _data_rows(
    path: Path,
    table: _Table,
    columns: Sequence[str],
    aliases: Mapping[str, Sequence[str]],
    mapping: Mapping[str, str] | None,
) -> tuple[_Columns, list[tuple[int, dict[str, Cell]]], list[RowProblem]]:
    if not table.rows:
        raise _file_problem(path, "the file is empty: no header row")
    header_no, header_row = table.rows[0]
    cols = _locate_columns(path, header_row, columns, aliases, mapping)
    problems: list[RowProblem] = []
    out: list[tuple[int, dict[str, Cell]]] = []
    for row_no, cells in table.rows[1:]:
        extra = [c for c in cells[cols.width :] if _text(c)]
        if extra:
            problems.append(
                RowProblem(
                    row_no,
                    None,
                    f"{len(cells)} values but the header has {cols.width} columns (an unquoted "
                    f"delimiter inside a value?): {_text(extra[0])!r} has no header",
                )
            )
        out.append(
            (row_no, {c: cells[i] if i < len(cells) else "" for c, i in cols.positions.items()})
        )
    if not out:
        problems.append(RowProblem(header_no + 1, None, "no data rows after the header"))
    return cols, out, problems


# --------------------------------------------------------------------------------------------
# Values

_MISSING = "missing required value"


def _parse_iin(v: Cell) -> tuple[str, list[str]]:
    if isinstance(v, int | float) and float(v).is_integer() and 0 <= v < 10**12:
        s = f"{int(v):012d}"  # an XLSX number: Excel drops the leading zero of 2000s births
    else:
        s = _text(v)
    if not s:
        return s, [_MISSING]
    return s, iin_problems(s)


def _parse_status(v: Cell) -> tuple[Status | None, str | None]:
    s = _text(v)
    if not s:
        return None, _MISSING
    status = _STATUS_WORDS.get(_header_key(s).replace("-", " "))
    if status is None:
        status = _STATUS_WORDS.get(_header_key(s))
    if status is None:
        return None, f"unknown status (got {s!r}; expected {', '.join(STATUSES)} or a synonym)"
    return status, None


def _parse_format(v: Cell) -> tuple[Format | None, str | None]:
    s = _text(v)
    if not s:
        return None, _MISSING
    fmt = _FORMAT_WORDS.get(_header_key(s))
    if fmt is None:
        return None, f"unknown format (got {s!r}; expected {', '.join(FORMATS)} or a synonym)"
    return fmt, None


def _parse_credits(v: Cell) -> tuple[int | None, str | None]:
    if isinstance(v, int | float):
        x = float(v)
        shown = _text(v)
    else:
        shown = _text(v)
        if not shown:
            return None, _MISSING
        if not _NUMBER_RE.fullmatch(shown):
            return None, f"credits must be a number (got {shown!r})"
        x = float(shown.replace(",", "."))
    if x <= 0:
        return None, f"credits not positive (got {shown})"
    if not x.is_integer():
        return None, f"credits must be a whole number (got {shown})"
    return int(x), None


def _parse_date(v: Cell, excel_epoch: date | None) -> tuple[date | None, str | None]:
    if isinstance(v, int | float) and excel_epoch is not None:
        if not float(v).is_integer() or not 0 < v < 2_958_466:
            return None, f"not a date (got the number {v})"
        return excel_epoch + timedelta(days=int(v)), None  # an XLSX date cell: a day serial
    s = _text(v)
    if not s:
        return None, _MISSING
    try:
        if m := _ISO_DATE_RE.fullmatch(s):
            return date(int(m[1]), int(m[2]), int(m[3])), None
        if m := _DMY_DATE_RE.fullmatch(s):
            return date(int(m[3]), int(m[2]), int(m[1])), None
    except ValueError:
        return None, f"not a calendar date (got {s!r})"
    return None, f"not a date (got {s!r}; expected YYYY-MM-DD or DD.MM.YYYY)"


def _problem(cols: _Columns, row: int, col: str, reason: str) -> RowProblem:
    return RowProblem(row, col, reason, cols.header.get(col))


# --------------------------------------------------------------------------------------------
# Loading


def load_roster(path: str | Path, mapping: Mapping[str, str] | None = None) -> Roster:
    """Load the student roster (CSV or XLSX), all rows or none.

    Required columns: ``iin, student_id, lms_account, email, programme_code, group, status`` (or
    their Kazakh/Russian names, or ``mapping`` {header in the file -> column}). Every row needs an
    IIN, a student id, a programme code, a status and at least one of LMS account and e-mail;
    ``group`` may be empty. Raises :class:`ReferenceError` listing every bad row.
    """
    p = Path(path)
    table = _read_table(p)
    cols, rows, problems = _data_rows(p, table, ROSTER_COLUMNS, ROSTER_HEADERS, mapping)
    seen: dict[str, dict[str, int]] = {c: {} for c in ("iin", "student_id", "lms_account", "email")}
    students: list[Student] = []
    for row_no, cells in rows:
        bad: list[RowProblem] = []

        def fail(col: str, reason: str, row_no: int = row_no, bad: list[RowProblem] = bad) -> None:
            bad.append(_problem(cols, row_no, col, reason))

        iin, reasons = _parse_iin(cells["iin"])
        for r in reasons:
            fail("iin", r)
        student_id = _text(cells["student_id"])
        if not student_id:
            fail("student_id", _MISSING)
        account = _text(cells["lms_account"]) or None
        email = _strip_mailto(_text(cells["email"])) or None
        if email is not None and not _EMAIL_RE.fullmatch(email):
            fail("email", f"not an e-mail address (got {_text(cells['email'])!r})")
        if account is None and email is None:
            fail(
                "lms_account",
                f"{_MISSING}: a student needs an lms_account or an email to be matched",
            )
        programme = _text(cells["programme_code"]).upper().translate(_LOOKALIKES)
        if not programme:
            fail("programme_code", _MISSING)
        elif not _PROGRAMME_RE.fullmatch(programme):
            fail(
                "programme_code",
                f"programme code not like 6B06102, 7M06101 or 8D06101 "
                f"(got {_text(cells['programme_code'])!r})",
            )
        status, why = _parse_status(cells["status"])
        if why:
            fail("status", why)
        group = _text(cells["group"]) or None
        for col, key in (
            ("iin", iin),
            ("student_id", student_id),
            ("lms_account", account),
            ("email", email),
        ):
            if not key:
                continue
            first = seen[col].setdefault(key, row_no)
            if first != row_no:
                fail(col, f"duplicate {col} {key!r}: also in row {first}")
        if bad:
            problems += bad
        elif not problems:
            students.append(
                Student(
                    iin,
                    student_id,
                    account,
                    email,
                    programme,
                    group,
                    cast(Status, status),
                )
            )
    if problems:
        raise ReferenceError(p, sorted(problems, key=_row_order))
    return Roster(students, source=p)


def load_catalogue(path: str | Path, mapping: Mapping[str, str] | None = None) -> Catalogue:
    """Load the discipline catalogue (CSV or XLSX), all rows or none.

    Required columns: ``activity_id, discipline_code, credits, period_start, period_end, format``
    (or their Kazakh/Russian names, or ``mapping``), all with a value in every row. An activity
    listed twice with identical values is kept once; listed twice with different values it is an
    error. Raises :class:`ReferenceError` listing every bad row.
    """
    p = Path(path)
    table = _read_table(p)
    cols, rows, problems = _data_rows(p, table, CATALOGUE_COLUMNS, CATALOGUE_HEADERS, mapping)
    first_seen: dict[str, tuple[int, str, CatalogueEntry | None]] = {}
    entries: list[CatalogueEntry] = []
    for row_no, cells in rows:
        bad: list[RowProblem] = []

        def fail(col: str, reason: str, row_no: int = row_no, bad: list[RowProblem] = bad) -> None:
            bad.append(_problem(cols, row_no, col, reason))

        activity_id = _text(cells["activity_id"])
        if not activity_id:
            fail("activity_id", _MISSING)
        elif not _IRI_RE.fullmatch(activity_id):
            fail("activity_id", f"not an absolute IRI like https://... (got {activity_id!r})")
        discipline = _text(cells["discipline_code"])
        if not discipline:
            fail("discipline_code", _MISSING)
        credits, why = _parse_credits(cells["credits"])
        if why:
            fail("credits", why)
        start, why = _parse_date(cells["period_start"], table.excel_epoch)
        if why:
            fail("period_start", why)
        end, why = _parse_date(cells["period_end"], table.excel_epoch)
        if why:
            fail("period_end", why)
        if start is not None and end is not None and end < start:
            fail("period_end", f"period_end {end} is before period_start {start}")
        fmt, why = _parse_format(cells["format"])
        if why:
            fail("format", why)
        entry = None
        if not bad:
            entry = CatalogueEntry(
                activity_id,
                discipline,
                cast(int, credits),
                cast(date, start),
                cast(date, end),
                cast(Format, fmt),
            )
        if activity_id:
            if activity_id not in first_seen:
                first_seen[activity_id] = (row_no, discipline, entry)
            else:
                first_row, first_discipline, first_entry = first_seen[activity_id]
                if discipline and first_discipline and discipline != first_discipline:
                    fail(
                        "activity_id",
                        f"duplicate activity_id with a different discipline: row {first_row} "
                        f"says {first_discipline!r}, this row {discipline!r}",
                    )
                elif entry is not None and first_entry is not None and entry != first_entry:
                    fail(
                        "activity_id",
                        f"duplicate activity_id with different credits, period or format "
                        f"than row {first_row}",
                    )
                entry = None  # an identical repeat is kept once
        if bad:
            problems += bad
        elif entry is not None and not problems:
            entries.append(entry)
    if problems:
        raise ReferenceError(p, sorted(problems, key=_row_order))
    return Catalogue(entries, source=p)


def _row_order(p: RowProblem) -> int:
    return -1 if p.row is None else p.row
