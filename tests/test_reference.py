"""Reference data: the roster and the catalogue from AIS exports (CSV in any encoding, XLSX)."""

from __future__ import annotations

import csv
import hashlib
import io
import pickle
import re
import zipfile
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pyarrow as pa
import pytest

from pipelines.generate import build_university, write_catalogue_csv, write_roster_csv
from pipelines.iin import iin_check_digit
from pipelines.verify.reference import (
    CATALOGUE_COLUMNS,
    ROSTER_COLUMNS,
    Catalogue,
    CatalogueEntry,
    MissingColumnsError,
    ReferenceError,
    Roster,
    Student,
    bin_problems,
    iin_problems,
    load_catalogue,
    load_roster,
)

Row = list[Any]
XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'

KK_ROSTER = ["ЖСН", "Білім алушы ID", "LMS логин", "Электрондық пошта", "Білім беру бағдарламасы"]
KK_ROSTER += ["Топ", "Мәртебе"]
RU_ROSTER = ["ИИН", "ID студента", "Логин LMS", "Эл. почта", "Образовательная программа"]
RU_ROSTER += ["Группа", "Статус"]
KK_STATUS = {
    "active": "Белсенді",
    "academic_leave": "Академиялық демалыс",
    "expelled": "Шығарылған",
}
RU_STATUS = {
    "active": "Обучается",
    "academic_leave": "Академический отпуск",
    "expelled": "Отчислен",
}
KK_CATALOGUE = ["Белсенділік ID", "Пән коды", "Кредит", "Кезең басы", "Кезең соңы", "Формат"]
RU_CATALOGUE = ["ID активности", "Код дисциплины", "Кредиты", "Начало периода", "Конец периода"]
RU_CATALOGUE += ["Формат обучения"]
KK_FORMAT = {"synchronous": "синхронды", "asynchronous": "асинхронды", "blended": "аралас"}
RU_FORMAT = {"synchronous": "Синхронный", "asynchronous": "Асинхронный", "blended": "Смешанный"}


@pytest.fixture(scope="module")
def univ() -> Any:
    # 2000s births are most of the bachelors: their IINs start with 0
    return build_university(7, students=120, disciplines=8)


# --- writing the files an AIS would export -------------------------------------------------------


def write_csv(path: Path, rows: Sequence[Row], *, encoding: str = "utf-8", sep: str = ",") -> Path:
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep, lineterminator="\r\n").writerows(rows)
    # Excel writes "?" for what the code page lacks (here: Kazakh letters in names)
    path.write_bytes(buf.getvalue().encode(encoding, errors="replace"))
    return path


def _cell(ref: str, v: Any, shared: dict[str, int], inline: bool) -> str:
    if isinstance(v, int | float):
        return f'<c r="{ref}"><v>{v}</v></c>'
    if inline:
        return f'<c r="{ref}" t="inlineStr"><is><t>{escape(v)}</t></is></c>'
    return f'<c r="{ref}" t="s"><v>{shared.setdefault(v, len(shared))}</v></c>'


def _col(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def write_xlsx(
    path: Path, rows: Sequence[Row], *, inline: bool = False, start_row: int = 1
) -> Path:
    """A minimal workbook as Excel lays it out; the data sheet is listed first but stored in
    sheet2.xml, and a second sheet with other content is stored in sheet1.xml."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006/relationships"
    types = "http://schemas.openxmlformats.org/package/2006/content-types"
    rels_type = "application/vnd.openxmlformats-package.relationships+xml"
    shared: dict[str, int] = {}

    def sheet(rows: Sequence[Row], first: int) -> str:
        body = "".join(
            f'<row r="{n}">'
            + "".join(_cell(f"{_col(j)}{n}", v, shared, inline) for j, v in enumerate(r))
            + "</row>"
            for n, r in enumerate(rows, start=first)
        )
        return f'{XML}<worksheet xmlns="{main}"><sheetData>{body}</sheetData></worksheet>'

    data_sheet = sheet(rows, start_row)
    other_sheet = sheet([["not", "the", "data"], [1, 2, 3]], 1)
    sst = "".join(f"<si><t>{escape(s)}</t></si>" for s in shared)
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "[Content_Types].xml",
            f'{XML}<Types xmlns="{types}">'
            f'<Default Extension="rels" ContentType="{rels_type}"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{ct}.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{ct}.worksheet+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet2.xml" ContentType="{ct}.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" ContentType="{ct}.sharedStrings+xml"/>'
            "</Types>",
        )
        z.writestr(
            "_rels/.rels",
            f'{XML}<Relationships xmlns="{pkg}">'
            f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>",
        )
        z.writestr(
            "xl/workbook.xml",
            f'{XML}<workbook xmlns="{main}" xmlns:r="{rel}">'
            '<sheets><sheet name="Студенттер" sheetId="1" r:id="rId7"/>'
            '<sheet name="Басқа" sheetId="2" r:id="rId3"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            f'{XML}<Relationships xmlns="{pkg}">'
            f'<Relationship Id="rId3" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId7" Type="{rel}/worksheet" Target="worksheets/sheet2.xml"/>'
            f'<Relationship Id="rId9" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>",
        )
        z.writestr("xl/worksheets/sheet1.xml", other_sheet)
        z.writestr("xl/worksheets/sheet2.xml", data_sheet)
        z.writestr(
            "xl/sharedStrings.xml",
            f'{XML}<sst xmlns="{main}" count="{len(shared)}" '
            f'uniqueCount="{len(shared)}">{sst}</sst>',
        )
    return path


def roster_rows(univ: Any) -> list[Row]:
    return [[*ROSTER_COLUMNS]] + [
        [s.iin, s.student_id, s.lms_account, s.email, s.programme_code, s.group, s.status]
        for s in univ.students
    ]


def catalogue_rows(univ: Any) -> list[Row]:
    return [[*CATALOGUE_COLUMNS]] + [
        [a, d.code, str(d.credits), d.period_start.isoformat(), d.period_end.isoformat(), d.format]
        for d in univ.disciplines
        for a in d.activity_ids
    ]


def expected_students(univ: Any) -> list[Student]:
    return [
        Student(s.iin, s.student_id, s.lms_account, s.email, s.programme_code, s.group, s.status)
        for s in univ.students
    ]


def iin(student: Student | None) -> str | None:
    return None if student is None else student.iin


def problems_of(exc: pytest.ExceptionInfo[ReferenceError]) -> list[tuple[int | None, str | None]]:
    return [(p.row, p.column) for p in exc.value.problems]


# --- round trip with the generator ---------------------------------------------------------------


def test_generator_roster_and_catalogue_round_trip(univ: Any, tmp_path: Path) -> None:
    roster = load_roster(write_roster_csv(univ, tmp_path / "roster.csv"))
    catalogue = load_catalogue(write_catalogue_csv(univ, tmp_path / "catalogue.csv"))

    assert len(roster) == len(univ.students) == 120
    assert list(roster) == expected_students(univ)
    assert any(s.iin.startswith("0") for s in roster)  # leading zeros kept
    assert {s.status for s in roster} == {"active", "academic_leave", "expelled"}
    for s in univ.students:
        assert iin(roster.by_account(s.lms_account)) == s.iin
        assert iin(roster.by_mbox(f"mailto:{s.email.upper()}")) == s.iin
        assert iin(roster.by_mbox(f"MAILTO: {s.email} ")) == s.iin
        assert iin(roster.by_iin(s.iin)) == iin(roster.by_student_id(s.student_id)) == s.iin
    first, second = univ.students[0], univ.students[1]
    assert iin(roster.resolve(first.lms_account, None)) == first.iin
    assert iin(roster.resolve(None, f"mailto:{first.email}")) == first.iin
    # the account is asked first; an unknown account falls back to the mailbox
    assert iin(roster.resolve(first.lms_account, f"mailto:{second.email}")) == first.iin
    assert iin(roster.resolve("nobody", f"mailto:{second.email}")) == second.iin
    sha1 = hashlib.sha1(f"mailto:{first.email}".encode()).hexdigest()
    assert iin(roster.resolve(None, None, sha1)) == first.iin
    assert roster.resolve("nobody", "mailto:nobody@nowhere.kz") is None
    assert roster.resolve(None, None) is None
    assert roster.by_account(first.lms_account.upper()) is None  # accounts match exactly

    n_activities = sum(len(d.activity_ids) for d in univ.disciplines)
    assert len(catalogue) == n_activities == len(list(catalogue))
    for d in univ.disciplines:
        for a in d.activity_ids:
            e = catalogue.by_activity(a)
            assert e == CatalogueEntry(a, d.code, d.credits, d.period_start, d.period_end, d.format)
    quiz = next(a for a in univ.disciplines[0].activities if a.kind == "quiz")
    unknown = "https://lms.university.kz/mod/quiz/attempt.php?attempt=1"
    hit = catalogue.resolve(unknown, ["https://elsewhere.kz/x", quiz.id])  # via the parent
    assert hit is not None and hit.activity_id == quiz.id
    hit = catalogue.resolve(quiz.id, [univ.disciplines[1].course_iri])  # the object first
    assert hit is not None and hit.activity_id == quiz.id
    assert catalogue.resolve(unknown, None) is None
    assert catalogue.resolve(unknown, ["https://elsewhere.kz/x"]) is None

    rt, ct = roster.to_arrow(), catalogue.to_arrow()
    assert rt.num_rows == 120 and rt.column_names == list(ROSTER_COLUMNS)
    assert rt.column("iin").to_pylist() == [s.iin for s in univ.students]
    assert rt.schema.metadata[b"content_hash"] == roster.content_hash.encode()
    assert ct.num_rows == n_activities and ct.column_names == list(CATALOGUE_COLUMNS)
    assert ct.schema.field("period_start").type == pa.date32()
    assert ct.schema.field("credits").type == pa.int16()
    joined = ct.join(pa.table({"activity_id": [quiz.id]}), "activity_id", join_type="inner")
    assert joined.num_rows == 1

    # the content hash: same content -> same hash, whatever the order; any change -> another hash
    assert load_roster(tmp_path / "roster.csv").content_hash == roster.content_hash
    rows = roster_rows(univ)
    shuffled = write_csv(tmp_path / "shuffled.csv", [rows[0], *reversed(rows[1:])])
    assert load_roster(shuffled).content_hash == roster.content_hash
    rows[5][6] = "expelled" if rows[5][6] != "expelled" else "active"
    assert load_roster(write_csv(tmp_path / "changed.csv", rows)).content_hash != (
        roster.content_hash
    )
    assert len(roster.content_hash) == 64 and roster.content_hash != catalogue.content_hash
    assert Roster(list(roster)).content_hash == roster.content_hash
    assert Catalogue(list(catalogue)).content_hash == catalogue.content_hash


# --- the same data in every shape an export comes in ---------------------------------------------


def _translated(rows: list[Row], header: list[str], status: dict[str, str]) -> list[Row]:
    return [header] + [[*r[:6], status[r[6]]] for r in rows[1:]]


def test_same_roster_in_every_shape_loads_identically(univ: Any, tmp_path: Path) -> None:
    rows = roster_rows(univ)
    base = load_roster(write_csv(tmp_path / "base.csv", rows))
    kk = _translated(rows, KK_ROSTER, KK_STATUS)
    ru = _translated(rows, RU_ROSTER, RU_STATUS)
    # Russian export: extra column with names, header spelled loosely, e-mails in capitals,
    # programme codes typed with the Cyrillic В/М
    ru_loose = [["№", "ФИО", " иин ", "ID СТУДЕНТА", "логин  lms", "Эл.\xa0почта", *RU_ROSTER[4:]]]
    for i, (r, s) in enumerate(zip(ru[1:], univ.students, strict=True)):
        code = r[4].replace("B", "В").replace("M", "М")  # Latin -> Cyrillic look-alikes
        ru_loose.append([str(i + 1), s.full_name, r[0], r[1], r[2], r[3].upper(), code, *r[5:]])
    xlsx_numbers = [kk[0]] + [[int(r[0]), int(r[1]), *r[2:]] for r in kk[1:]]
    shapes = {
        "utf8_bom_semicolon_kazakh.csv": lambda p: write_csv(p, kk, encoding="utf-8-sig", sep=";"),
        "cp1251_semicolon_russian.csv": lambda p: write_csv(
            p, ru_loose, encoding="cp1251", sep=";"
        ),
        "utf8_comma_russian.csv": lambda p: write_csv(p, ru),
        "utf16_tab_kazakh.txt": lambda p: write_csv(p, kk, encoding="utf-16", sep="\t"),
        "kazakh.xlsx": lambda p: write_xlsx(p, kk),
        "russian_inline_strings.xlsx": lambda p: write_xlsx(p, ru, inline=True),
        # Excel keeps typed-in IINs and ids as numbers: the leading zero of 2000s births is lost
        "kazakh_numbers.xlsx": lambda p: write_xlsx(p, xlsx_numbers),
    }
    for name, write in shapes.items():
        roster = load_roster(write(tmp_path / name))
        assert list(roster) == list(base), name
        assert roster.content_hash == base.content_hash, name
    assert (tmp_path / "cp1251_semicolon_russian.csv").read_bytes().decode("cp1251")
    with pytest.raises(UnicodeDecodeError):
        (tmp_path / "cp1251_semicolon_russian.csv").read_bytes().decode("utf-8")
    # Kazakh letters (ә, ғ, қ, ң, ө, ұ, ү, һ) have no place in Windows-1251: a cp1251 export can
    # only carry Russian headers and values, never the Kazakh ones
    with pytest.raises(UnicodeEncodeError):
        "Мәртебе".encode("cp1251")


def test_same_catalogue_in_every_shape_loads_identically(univ: Any, tmp_path: Path) -> None:
    rows = catalogue_rows(univ)
    base = load_catalogue(write_csv(tmp_path / "base.csv", rows))
    ru = [RU_CATALOGUE] + [
        [
            a,
            code,
            f"{credits},0",
            date.fromisoformat(start).strftime("%d.%m.%Y"),
            date.fromisoformat(end).strftime("%d.%m.%Y"),
            RU_FORMAT[fmt],
        ]
        for a, code, credits, start, end, fmt in rows[1:]
    ]

    def serial(iso: str) -> int:  # how Excel stores a date: days since 1899-12-30
        return (date.fromisoformat(iso) - date(1899, 12, 30)).days

    kk_xlsx = [KK_CATALOGUE] + [
        [a, code, int(credits), serial(start), serial(end), KK_FORMAT[fmt]]
        for a, code, credits, start, end, fmt in rows[1:]
    ]
    for path in (
        write_csv(tmp_path / "ru.csv", ru, encoding="cp1251", sep=";"),
        write_xlsx(tmp_path / "kk.xlsx", kk_xlsx, start_row=3),  # two blank rows above the header
        write_csv(tmp_path / "ru_bom.csv", ru, encoding="utf-8-sig"),
    ):
        catalogue = load_catalogue(path)
        assert list(catalogue) == list(base), path.name
        assert catalogue.content_hash == base.content_hash


def test_roster_from_openpyxl_workbook(univ: Any, tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    for r in _translated(roster_rows(univ), KK_ROSTER, KK_STATUS):
        wb.active.append(r)
    wb.save(tmp_path / "r.xlsx")
    assert list(load_roster(tmp_path / "r.xlsx")) == expected_students(univ)


# --- validation: every rule, with its row number -------------------------------------------------


def _iin_with(first11: str) -> str:
    check = iin_check_digit(first11)
    assert check is not None
    return f"{first11}{check}"


def _bump_check_digit(iin: str) -> str:
    return iin[:11] + str((int(iin[11]) + 1) % 10)


def _first11_without_check_digit(prefix: str) -> str:
    return next(
        f"{prefix}{n:04d}" for n in range(10_000) if iin_check_digit(f"{prefix}{n:04d}") is None
    )


Mutation = Callable[[list[Row]], None]


def _set(row: int, col: str, value: Any) -> Mutation:
    def mutate(rows: list[Row]) -> None:
        rows[row - 1][ROSTER_COLUMNS.index(col)] = value

    return mutate


def _copy(row: int, col: str, from_row: int, transform: Callable[[str], str] = str) -> Mutation:
    def mutate(rows: list[Row]) -> None:
        i = ROSTER_COLUMNS.index(col)
        rows[row - 1][i] = transform(rows[from_row - 1][i])

    return mutate


ROSTER_CASES: list[tuple[str, Mutation, int, str, str]] = [
    (
        "checksum",
        lambda rows: rows[6].__setitem__(0, _bump_check_digit(rows[6][0])),
        7,
        "iin",
        "checksum does not match: the check digit should be",
    ),
    ("month 13", _set(4, "iin", _iin_with("951302300011"[:11])), 4, "iin", "birth date impossible"),
    ("february 30", _set(4, "iin", _iin_with("950230400011"[:11])), 4, "iin", "is not a date"),
    ("century 7", _set(3, "iin", _iin_with("95010270001")), 3, "iin", "century digit 7"),
    ("letters", _set(3, "iin", "95010230001O"), 3, "iin", "an IIN has 12 digits"),
    ("11 digits", _set(3, "iin", "50315600123"), 3, "iin", "dropped a leading zero"),
    ("scientific", _set(3, "iin", "9.50102E+11"), 3, "iin", "turned it into a rounded number"),
    ("no iin", _set(5, "iin", "  "), 5, "iin", "missing required value"),
    ("no student id", _set(6, "student_id", ""), 6, "student_id", "missing required value"),
    ("no programme", _set(6, "programme_code", ""), 6, "programme_code", "missing required"),
    ("no status", _set(6, "status", ""), 6, "status", "missing required value"),
    ("duplicate iin", _copy(9, "iin", 2), 9, "iin", "duplicate iin '"),
    ("duplicate student_id", _copy(9, "student_id", 3), 9, "student_id", "also in row 3"),
    ("duplicate account", _copy(8, "lms_account", 2), 8, "lms_account", "also in row 2"),
    ("duplicate email", _copy(8, "email", 2, str.upper), 8, "email", "duplicate email"),
    ("programme 6M", _set(5, "programme_code", "6M06102"), 5, "programme_code", "not like"),
    ("programme 5B", _set(5, "programme_code", "5B06102"), 5, "programme_code", "not like"),
    ("programme short", _set(5, "programme_code", "8D0610"), 5, "programme_code", "not like"),
    ("status", _set(10, "status", "graduated"), 10, "status", "unknown status (got 'graduated'"),
    ("email", _set(11, "email", "a.b@university"), 11, "email", "not an e-mail address"),
    ("email spaces", _set(11, "email", "a b@uni.kz"), 11, "email", "not an e-mail address"),
]


@pytest.mark.parametrize(("name", "mutate", "row", "column", "reason"), ROSTER_CASES)
def test_roster_rule_reported_with_row_number(
    univ: Any,
    tmp_path: Path,
    name: str,
    mutate: Mutation,
    row: int,
    column: str,
    reason: str,
) -> None:
    rows = roster_rows(univ)[:15]
    mutate(rows)
    path = write_csv(tmp_path / "roster.csv", rows)
    with pytest.raises(ReferenceError) as exc:
        load_roster(path)
    [problem] = exc.value.problems
    assert (problem.row, problem.column) == (row, column), name
    assert reason in problem.reason, problem.reason
    assert f"roster.csv row {row}, column {column}: " in str(exc.value)


def test_roster_without_account_and_email_is_refused_but_either_is_enough(
    univ: Any, tmp_path: Path
) -> None:
    rows = roster_rows(univ)[:6]
    rows[2][2] = ""  # no LMS account: matched by e-mail
    rows[3][3] = ""  # no e-mail: matched by account
    rows[4][5] = ""  # no group
    roster = load_roster(write_csv(tmp_path / "ok.csv", rows))
    assert roster.students[1].lms_account is None and roster.students[2].email is None
    assert roster.students[3].group is None
    assert roster.by_mbox(f"mailto:{rows[2][3]}") == roster.students[1]
    assert roster.to_arrow().column("lms_account").null_count == 1
    rows[5][2] = rows[5][3] = ""
    with pytest.raises(ReferenceError) as exc:
        load_roster(write_csv(tmp_path / "bad.csv", rows))
    assert problems_of(exc) == [(6, "lms_account")]
    assert "needs an lms_account or an email" in str(exc.value)


CATALOGUE_CASES: list[tuple[str, int, str, str, str]] = [
    # (what, row, column, value, expected reason)
    ("credits zero", 3, "credits", "0", "credits not positive (got 0)"),
    ("credits negative", 3, "credits", "-5", "credits not positive (got -5)"),
    ("credits fraction", 3, "credits", "5,5", "whole number"),
    ("credits text", 3, "credits", "five", "credits must be a number"),
    ("credits missing", 3, "credits", "", "missing required value"),
    ("bad date", 4, "period_start", "2026-02-30", "not a calendar date"),
    ("slashes", 4, "period_start", "01/09/2026", "expected YYYY-MM-DD or DD.MM.YYYY"),
    ("end before start", 5, "period_end", "2026-08-31", "is before period_start 2026-09-01"),
    ("dmy end before start", 5, "period_end", "31.08.2026", "is before period_start"),
    ("format", 6, "format", "online", "unknown format (got 'online'"),
    ("format missing", 6, "format", " ", "missing required value"),
    ("not an IRI", 7, "activity_id", "quiz 12", "not an absolute IRI"),
    ("no discipline", 7, "discipline_code", "", "missing required value"),
]


@pytest.mark.parametrize(("name", "row", "column", "value", "reason"), CATALOGUE_CASES)
def test_catalogue_rule_reported_with_row_number(
    univ: Any, tmp_path: Path, name: str, row: int, column: str, value: str, reason: str
) -> None:
    rows = catalogue_rows(univ)[:12]
    for r in rows[1:]:
        r[3], r[4] = "2026-09-01", "2026-12-31"
    rows[row - 1][CATALOGUE_COLUMNS.index(column)] = value
    with pytest.raises(ReferenceError) as exc:
        load_catalogue(write_csv(tmp_path / "catalogue.csv", rows))
    assert problems_of(exc) == [(row, column)], name
    assert reason in exc.value.problems[0].reason, exc.value.problems[0].reason


def test_catalogue_duplicate_activities(univ: Any, tmp_path: Path) -> None:
    rows = catalogue_rows(univ)[:8]
    other = next(d.code for d in univ.disciplines if d.code != rows[2][1])
    # an identical repeat is harmless: kept once
    same = load_catalogue(write_csv(tmp_path / "same.csv", [*rows, list(rows[2])]))
    assert len(same) == 7
    # another discipline for the same activity: which one is right is not ours to guess
    clash = [*rows, [rows[2][0], other, *rows[2][2:]]]
    with pytest.raises(ReferenceError) as exc:
        load_catalogue(write_csv(tmp_path / "clash.csv", clash))
    assert problems_of(exc) == [(9, "activity_id")]
    assert "duplicate activity_id with a different discipline: row 3 says" in str(exc.value)
    # same discipline, other credits
    credits = [*rows, [*rows[2][:2], "1", *rows[2][3:]]]
    with pytest.raises(ReferenceError) as exc:
        load_catalogue(write_csv(tmp_path / "credits.csv", credits))
    assert problems_of(exc) == [(9, "activity_id")]
    assert "different credits, period or format than row 3" in str(exc.value)


def test_one_bad_row_loads_nothing_and_the_message_lists_twenty(univ: Any, tmp_path: Path) -> None:
    rows = roster_rows(univ)
    bad_iin = _bump_check_digit(rows[6][0])
    rows[6][0] = bad_iin
    with pytest.raises(ReferenceError) as exc:
        load_roster(write_csv(tmp_path / "roster.csv", rows))
    assert exc.value.path == tmp_path / "roster.csv"
    assert problems_of(exc) == [(7, "iin")]
    message = str(exc.value)
    assert message.splitlines()[0] == "roster.csv: 1 problem, nothing was loaded from the file"
    assert re.search(
        rf"roster\.csv row 7, column iin: checksum does not match.*\(got {bad_iin}\)", message
    )
    assert "more" not in message

    for r in rows[10:35]:  # 25 more bad statuses: 26 problems, 20 listed
        r[6] = "unknown"
    with pytest.raises(ReferenceError) as exc:
        load_roster(write_csv(tmp_path / "roster.csv", rows))
    assert len(exc.value.problems) == 26
    lines = str(exc.value).splitlines()
    assert lines[0].startswith("roster.csv: 26 problems")
    assert len(lines) == 1 + 20 + 1 and lines[-1].strip() == "... and 6 more problems"
    assert [p.row for p in exc.value.problems] == [7, *range(11, 36)]
    # picklable (Airflow and process pools carry exceptions across processes)
    again = pickle.loads(pickle.dumps(exc.value))
    assert str(again) == str(exc.value) and again.problems == exc.value.problems


def test_problem_names_the_files_own_header(univ: Any, tmp_path: Path) -> None:
    rows = _translated(roster_rows(univ)[:5], KK_ROSTER, KK_STATUS)
    rows[3][0] = _bump_check_digit(rows[3][0])
    with pytest.raises(ReferenceError) as exc:
        load_roster(write_csv(tmp_path / "r.csv", rows, encoding="utf-8-sig", sep=";"))
    assert "r.csv row 4, column iin (ЖСН): checksum does not match" in str(exc.value)


def test_row_numbers_count_lines_of_the_file(univ: Any, tmp_path: Path) -> None:
    """Blank lines and a quoted value spanning two lines still give the line a person sees."""
    rows = roster_rows(univ)[:4]
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerows(rows[:2])  # lines 1-2
    text.write("\n,,,,,,\n")  # lines 3-4: blank
    rows[2][5] = "ИС-25-1\n(кешкі)"  # lines 5-6: a group name over two lines
    w.writerow(rows[2])
    rows[3][4] = "6B0"  # line 7
    w.writerow(rows[3])
    path = tmp_path / "r.csv"
    path.write_text(text.getvalue(), encoding="utf-8")
    with pytest.raises(ReferenceError) as exc:
        load_roster(path)
    assert problems_of(exc) == [(7, "programme_code")]
    # in an XLSX sheet the row number is Excel's own
    xlsx = write_xlsx(tmp_path / "r.xlsx", rows, start_row=4)
    with pytest.raises(ReferenceError) as exc:
        load_roster(xlsx)
    assert problems_of(exc) == [(7, "programme_code")]


def test_values_beyond_the_header_are_refused(univ: Any, tmp_path: Path) -> None:
    rows = roster_rows(univ)[:4]
    rows[2] = [*rows[2], "stray"]  # an unquoted comma inside a value shifts the columns
    with pytest.raises(ReferenceError) as exc:
        load_roster(write_csv(tmp_path / "r.csv", rows))
    assert problems_of(exc) == [(3, None)]
    assert "'stray' has no header" in str(exc.value)
    rows[2][-1] = ""
    assert len(load_roster(write_csv(tmp_path / "r.csv", rows))) == 3  # empty extras are fine


# --- headers and the explicit mapping ------------------------------------------------------------


def test_explicit_mapping(univ: Any, tmp_path: Path) -> None:
    rows = roster_rows(univ)[:6]
    header = ["Personal No", "Matrikel", "Login", "Mail", "OP", "Cohort", "State", "ИИН"]
    custom = [header] + [[*r, "000000000000"] for r in rows[1:]]  # a second, wrong "ИИН" column
    mapping = {
        " personal no ": "iin",  # matched like the built-in names: trimmed, any case
        "MATRIKEL": "student_id",
        "Login": "lms_account",
        "Mail": "email",
        "OP": "programme_code",
        "Cohort": "group",
        "State": "status",
    }
    path = write_csv(tmp_path / "custom.csv", custom)
    roster = load_roster(path, mapping)  # the mapping's iin wins over the built-in "ИИН"
    assert list(roster) == expected_students(univ)[:5]
    # the mapping overrides a built-in name, too
    swapped = [["iin", "student_id", "lms_account", "email", "programme_code", "group", "status"]]
    swapped += [[r[0], r[1], r[2], r[3], r[4], r[6], r[5]] for r in rows[1:]]
    path = write_csv(tmp_path / "swapped.csv", swapped)
    roster = load_roster(path, {"group": "status", "status": "group"})
    assert list(roster) == expected_students(univ)[:5]
    with pytest.raises(ValueError, match="not one of"):
        load_roster(path, {"group": "cohort"})
    with pytest.raises(MissingColumnsError) as exc:
        load_roster(tmp_path / "custom.csv", {"Personal No": "iin", "Matrikul": "student_id"})
    assert "mapping headers not in the file: 'Matrikul'" in str(exc.value)

    cat = catalogue_rows(univ)[:4]
    cat[0] = ["Object", *cat[0][1:]]
    catalogue = load_catalogue(write_csv(tmp_path / "c.csv", cat), {"object": "activity_id"})
    assert len(catalogue) == 3


def test_missing_columns_named_with_the_columns_found(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "roster.csv",
        [["ФИО", "ИИН", "Группа", "Статус"], ["x", "950102300011", "ИС-25-1", "Обучается"]],
        encoding="cp1251",
        sep=";",
    )
    with pytest.raises(MissingColumnsError) as exc:
        load_roster(path)
    assert exc.value.missing == ["student_id", "lms_account", "email", "programme_code"]
    assert exc.value.found == ["ФИО", "ИИН", "Группа", "Статус"]
    message = str(exc.value)
    assert message.startswith(
        "roster.csv: required columns missing: student_id, lms_account, email, programme_code"
    )
    assert "columns found: 'ФИО', 'ИИН', 'Группа', 'Статус'" in message
    assert "names understood for student_id: student_id" in message and "mapping=" in message
    assert isinstance(exc.value, ReferenceError)
    again = pickle.loads(pickle.dumps(exc.value))
    assert str(again) == message


def test_two_headers_for_one_column_are_refused(univ: Any, tmp_path: Path) -> None:
    rows = roster_rows(univ)[:3]
    rows = [[*r, r[0]] for r in rows]
    rows[0][-1] = "ЖСН"
    with pytest.raises(ReferenceError) as exc:
        load_roster(write_csv(tmp_path / "r.csv", rows))
    assert problems_of(exc) == [(1, "iin")]
    assert "two headers name it: 'iin' and 'ЖСН'" in str(exc.value)


def test_files_that_are_not_tables(tmp_path: Path) -> None:
    cases = {
        "empty.csv": (b"", "the file is empty"),
        "blank.csv": (b"\r\n \r\n", "the file is empty"),
        "header_only.csv": (",".join(ROSTER_COLUMNS).encode() + b"\n", "no data rows"),
        "old.xls": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "legacy Excel .xls"),
        "broken.xlsx": (b"PK\x03\x04garbage", "not a readable XLSX workbook"),
        "latin1.csv": (b"iin\n\x98\n", "neither UTF-8 nor Windows-1251"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ReferenceError, match=re.escape(reason)):
            load_roster(tmp_path / name)
    with pytest.raises(ReferenceError, match="cannot read the file"):
        load_roster(tmp_path / "absent.csv")
    zipped = tmp_path / "not_a_workbook.xlsx"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ReferenceError, match=r"no xl/workbook\.xml"):
        load_roster(zipped)


# --- IIN and BIN ---------------------------------------------------------------------------------


def test_iin_checksum_cases() -> None:
    # first pass: 9+10+0+4+0+12+21+0+0+0+11 = 67 = 1 mod 11
    assert iin_problems("950102300011") == []
    # serial 0021: first pass 87 = 10 mod 11 -> second pass (3,4,..,11,1,2) 100 = 1 mod 11
    assert iin_problems("950102300211") == []
    assert iin_problems("950102300212") == [
        "checksum does not match: the check digit should be 1 (got 950102300212)"
    ]
    # serial 0020: 10 in both passes -> no valid IIN begins with these 11 digits, whatever digit 12
    for last in "0123456789":
        [reason] = iin_problems(f"9501023002{0}{last}")
        assert reason.startswith("checksum does not match: both passes give 10"), reason
    # born 2004 (century digit 6), first pass 10, second 2
    assert iin_problems("040315612342") == []
    # a valid checksum does not make a date
    [reason] = iin_problems(_iin_with("95130230001"))
    assert reason.startswith("IIN birth date impossible: 95-13-02 (YY-MM-DD) is not a date")
    [reason] = iin_problems(_iin_with("95010200001"))
    assert "century digit 0 is not 1-6" in reason
    assert len(iin_problems(_bump_check_digit(_iin_with("95130230001")))) == 2
    for shape in ("", "95010230001", "9501023000111", "９５０１０２３０００１１"):
        assert iin_problems(shape)[0].startswith("an IIN has 12 digits"), shape
    # the same rules inside a roster, the "no check digit" case included
    no_check = _first11_without_check_digit("0503156") + "7"
    assert "both passes give 10" in iin_problems(no_check)[0]


def test_iin_without_check_digit_in_roster(univ: Any, tmp_path: Path) -> None:
    rows = roster_rows(univ)[:4]
    rows[3][0] = _first11_without_check_digit("0503156") + "0"
    with pytest.raises(ReferenceError) as exc:
        load_roster(write_csv(tmp_path / "r.csv", rows))
    assert problems_of(exc) == [(4, "iin")]
    assert "both passes give 10, so no valid IIN starts with these 11 digits" in str(exc.value)


def test_bin_checks() -> None:
    good = _iin_with("04054000012")  # registered 2004-05, resident legal entity, head office
    assert bin_problems(good) == []
    assert any("registration month 13" in r for r in bin_problems(_iin_with("04134000012")))
    assert any("type digit 7" in r for r in bin_problems(_iin_with("04057000012")))
    assert bin_problems(_bump_check_digit(good)) == [
        f"checksum does not match (got {_bump_check_digit(good)})"
    ]
    assert bin_problems("0405400001")[0].startswith("a BIN has 12 digits")
