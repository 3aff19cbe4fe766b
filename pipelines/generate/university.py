"""A synthetic Kazakh university: students, programmes, groups and disciplines with LMS activities.

Everything is drawn from ``random.Random`` instances seeded from the ``seed`` argument, so the
same arguments always give the same university (no global random state, no wall clock, no
iteration over sets).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipelines.iin import make_iin

__all__ = [
    "HOMEPAGE",
    "Activity",
    "Discipline",
    "Programme",
    "Student",
    "University",
    "build_university",
    "transliterate",
    "write_catalogue_csv",
    "write_roster_csv",
]

HOMEPAGE = "https://lms.university.kz"
EMAIL_DOMAIN = "stud.university.kz"
UNIVERSITY_NAME = {
    "kk-KZ": "Алатау университеті",
    "ru-RU": "Университет Алатау",
    "en-US": "Alatau University",
}

ROSTER_COLUMNS = ("iin", "student_id", "lms_account", "email", "programme_code", "group", "status")
CATALOGUE_COLUMNS = (
    "activity_id",
    "discipline_code",
    "credits",
    "period_start",
    "period_end",
    "format",
)

# Activity types (xAPI activity definition "type")
TYPE_COURSE = "https://w3id.org/xapi/cmi5/activitytype/course"
TYPE_SECTION = "http://id.tincanapi.com/activitytype/section"
TYPE_RESOURCE = "http://id.tincanapi.com/activitytype/resource"
TYPE_PAGE = "https://w3id.org/xapi/acrossx/activities/page"
TYPE_VIDEO = "https://w3id.org/xapi/video/activity-type/video"
TYPE_ASSESSMENT = "http://adlnet.gov/expapi/activities/assessment"
TYPE_INTERACTION = "http://adlnet.gov/expapi/activities/cmi.interaction"
TYPE_LESSON = "http://adlnet.gov/expapi/activities/lesson"
TYPE_MEETING = "http://adlnet.gov/expapi/activities/meeting"


@dataclass(frozen=True, slots=True)
class Student:
    iin: str
    student_id: str
    lms_account: str
    email: str
    full_name: str
    programme_code: str
    group: str
    status: str  # "active" | "academic_leave" | "expelled"
    birth_date: date
    male: bool
    language: str  # language of instruction: "kk-KZ" | "ru-RU"


@dataclass(frozen=True, slots=True)
class Programme:
    code: str  # 6B... bachelor, 7M... master, 8D... doctoral
    level: str  # "bachelor" | "master" | "doctoral"
    title_kk: str
    title_ru: str
    title_en: str
    group_prefix: str


@dataclass(frozen=True, slots=True)
class Activity:
    """One LMS activity (an xAPI Activity id) of a discipline."""

    id: str
    kind: str  # "course" | "page" | "resource" | "video" | "quiz" | "question" | "cmi5" | "live"
    type: str
    name: dict[str, str]  # language map: kk-KZ, ru-RU, en-US
    section: int  # Moodle course section id (0 for the course itself)
    parent: str | None = None  # the quiz of a question
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Discipline:
    code: str
    title_kk: str
    title_ru: str
    title_en: str
    credits: int  # ECTS
    activity_ids: list[str]
    format: str  # "synchronous" | "asynchronous" | "blended"
    period_start: date
    period_end: date
    course_id: int = 0
    activities: list[Activity] = field(default_factory=list)
    instructor_name: str = ""
    instructor_account: str = ""

    @property
    def course_iri(self) -> str:
        return self.activity_ids[0]


@dataclass(slots=True)
class University:
    seed: int
    homepage: str
    period_start: date
    period_end: date
    programmes: list[Programme]
    students: list[Student]
    disciplines: list[Discipline]
    groups: list[str]
    curriculum: dict[str, list[int]]  # group -> indexes into disciplines

    def student_accounts(self) -> frozenset[str]:
        return frozenset(s.lms_account for s in self.students)


# --------------------------------------------------------------------------------------------
# Reference data

_PROGRAMMES = (
    Programme(
        "6B06102",
        "bachelor",
        "Ақпараттық жүйелер",
        "Информационные системы",
        "Information Systems",
        "ИС",
    ),
    Programme(
        "6B06101",
        "bachelor",
        "Есептеу техникасы және бағдарламалық қамтамасыз ету",
        "Вычислительная техника и программное обеспечение",
        "Computer Engineering and Software",
        "ВТ",
    ),
    Programme(
        "6B06103",
        "bachelor",
        "Бағдарламалық инженерия",
        "Программная инженерия",
        "Software Engineering",
        "ПИ",
    ),
    Programme("6B04101", "bachelor", "Экономика", "Экономика", "Economics", "ЭК"),
    Programme("6B01501", "bachelor", "Математика", "Математика", "Mathematics", "МТ"),
    Programme(
        "6B07101",
        "bachelor",
        "Электр энергетикасы",
        "Электроэнергетика",
        "Electric Power Engineering",
        "ЭЭ",
    ),
    Programme("6B11301", "bachelor", "Логистика", "Логистика", "Logistics", "ЛГ"),
    Programme(
        "7M06101",
        "master",
        "Ақпараттық жүйелер",
        "Информационные системы",
        "Information Systems",
        "ИСМ",
    ),
    Programme("7M04101", "master", "Экономика", "Экономика", "Economics", "ЭКМ"),
    Programme(
        "8D06101",
        "doctoral",
        "Ақпараттық жүйелер",
        "Информационные системы",
        "Information Systems",
        "ИСД",
    ),
)
_PROGRAMME_WEIGHTS = (16, 16, 12, 12, 8, 8, 8, 8, 6, 6)
_ADMISSION_YEARS = {
    "bachelor": (2023, 2024, 2025, 2026),
    "master": (2025, 2026),
    "doctoral": (2024, 2025, 2026),
}

# (code prefix, kk, ru, en, general?) general = taken by most groups
_DISCIPLINES = (
    (
        "ICT",
        "Ақпараттық-коммуникациялық технологиялар",
        "Информационно-коммуникационные технологии",
        "Information and Communication Technologies",
        True,
    ),
    (
        "HKZ",
        "Қазақстанның қазіргі заманғы тарихы",
        "Современная история Казахстана",
        "Modern History of Kazakhstan",
        True,
    ),
    ("PHL", "Философия", "Философия", "Philosophy", True),
    ("FLG", "Шетел тілі", "Иностранный язык", "Foreign Language", True),
    ("KRL", "Қазақ (орыс) тілі", "Казахский (русский) язык", "Kazakh (Russian) Language", True),
    ("PHE", "Дене шынықтыру", "Физическая культура", "Physical Education", True),
    ("CAL", "Математикалық талдау", "Математический анализ", "Calculus", False),
    ("LAL", "Сызықтық алгебра", "Линейная алгебра", "Linear Algebra", False),
    ("DSM", "Дискретті математика", "Дискретная математика", "Discrete Mathematics", False),
    (
        "ADS",
        "Алгоритмдер және деректер құрылымдары",
        "Алгоритмы и структуры данных",
        "Algorithms and Data Structures",
        False,
    ),
    ("DBS", "Дерекқорлар", "Базы данных", "Databases", False),
    (
        "PYP",
        "Python тілінде бағдарламалау",
        "Программирование на Python",
        "Programming in Python",
        False,
    ),
    ("CNW", "Компьютерлік желілер", "Компьютерные сети", "Computer Networks", False),
    ("OSY", "Операциялық жүйелер", "Операционные системы", "Operating Systems", False),
    ("WEB", "Веб-бағдарламалау", "Веб-программирование", "Web Programming", False),
    ("MLR", "Машиналық оқыту", "Машинное обучение", "Machine Learning", False),
    ("ISE", "Ақпараттық қауіпсіздік", "Информационная безопасность", "Information Security", False),
    (
        "PST",
        "Ықтималдықтар теориясы және математикалық статистика",
        "Теория вероятностей и математическая статистика",
        "Probability and Statistics",
        False,
    ),
    ("MIC", "Микроэкономика", "Микроэкономика", "Microeconomics", False),
    ("MAC", "Макроэкономика", "Макроэкономика", "Macroeconomics", False),
    ("MNG", "Менеджмент", "Менеджмент", "Management", False),
    ("ACC", "Бухгалтерлік есеп", "Бухгалтерский учёт", "Accounting", False),
    ("PHY", "Физика", "Физика", "Physics", False),
    (
        "ECT",
        "Электр тізбектерінің теориясы",
        "Теория электрических цепей",
        "Electric Circuit Theory",
        False,
    ),
    ("LOG", "Логистика негіздері", "Основы логистики", "Fundamentals of Logistics", False),
    (
        "RMT",
        "Ғылыми зерттеу әдістемесі",
        "Методология научных исследований",
        "Research Methodology",
        False,
    ),
    ("PED", "Педагогика", "Педагогика", "Pedagogy", False),
    ("PSY", "Психология", "Психология", "Psychology", False),
    (
        "HSP",
        "Жоғары мектеп педагогикасы",
        "Педагогика высшей школы",
        "Higher School Pedagogy",
        False,
    ),
    ("CLC", "Бұлтты есептеулер", "Облачные вычисления", "Cloud Computing", False),
)

_KZ_MALE = (
    "Нұрлан",
    "Айбек",
    "Дәурен",
    "Ерлан",
    "Асқар",
    "Бауыржан",
    "Дамир",
    "Ерасыл",
    "Жандос",
    "Мұхтар",
    "Нұрсұлтан",
    "Санжар",
    "Темірлан",
    "Әлихан",
    "Арман",
    "Ақжол",
    "Ерболат",
    "Димаш",
    "Алмас",
    "Ғалымжан",
)
_KZ_FEMALE = (
    "Айгерім",
    "Аружан",
    "Әйгерім",
    "Гүлнұр",
    "Дана",
    "Жансая",
    "Мадина",
    "Назерке",
    "Перизат",
    "Сәуле",
    "Томирис",
    "Ұлжан",
    "Інжу",
    "Балжан",
    "Динара",
    "Жұлдыз",
    "Аяулым",
    "Камила",
    "Меруерт",
    "Ақбота",
)
# gendered stems take -а for women (Жақсыбеков / Жақсыбекова)
_KZ_SURNAMES_GENDERED = (
    "Жақсыбеков",
    "Нұрланов",
    "Серікбаев",
    "Әбдірахманов",
    "Қасымов",
    "Оспанов",
    "Бекмұхамбетов",
    "Жұмабаев",
    "Ахметов",
    "Мұсабеков",
    "Есенов",
    "Исабаев",
    "Қалиев",
    "Тұрсынов",
    "Омаров",
    "Байжанов",
    "Сәрсенбаев",
    "Ермеков",
    "Әлиев",
    "Төлегенов",
)
_KZ_SURNAMES_PLAIN = ("Сейітқали", "Төлеген", "Әбілқайыр", "Серік", "Мұрат", "Нұрлыбек", "Ілияс")
_RU_MALE = (
    "Иван",
    "Дмитрий",
    "Алексей",
    "Сергей",
    "Андрей",
    "Максим",
    "Артём",
    "Никита",
    "Владимир",
    "Евгений",
)
_RU_FEMALE = (
    "Ольга",
    "Анна",
    "Екатерина",
    "Мария",
    "Наталья",
    "Елена",
    "Дарья",
    "Ксения",
    "Виктория",
    "Анастасия",
)
_RU_SURNAMES_GENDERED = (
    "Иванов",
    "Петров",
    "Смирнов",
    "Кузнецов",
    "Попов",
    "Соколов",
    "Морозов",
    "Волков",
    "Новиков",
    "Павлов",
)
_RU_SURNAMES_PLAIN = ("Ким", "Пак", "Цой", "Ли", "Шевченко", "Бондаренко")

_TRANSLIT = {
    "а": "a",
    "ә": "a",
    "б": "b",
    "в": "v",
    "г": "g",
    "ғ": "g",
    "д": "d",
    "е": "e",
    "ё": "e",
    "ж": "zh",
    "з": "z",
    "и": "i",
    "й": "i",
    "к": "k",
    "қ": "q",
    "л": "l",
    "м": "m",
    "н": "n",
    "ң": "n",
    "о": "o",
    "ө": "o",
    "п": "p",
    "р": "r",
    "с": "s",
    "т": "t",
    "у": "u",
    "ұ": "u",
    "ү": "u",
    "ф": "f",
    "х": "kh",
    "һ": "h",
    "ц": "ts",
    "ч": "ch",
    "ш": "sh",
    "щ": "sch",
    "ъ": "",
    "ы": "y",
    "і": "i",
    "ь": "",
    "э": "e",
    "ю": "yu",
    "я": "ya",
}


def transliterate(text: str) -> str:
    """Lower-case ASCII transliteration of Kazakh/Russian Cyrillic (for logins and e-mails)."""
    out = []
    for ch in text.lower():
        if ch in _TRANSLIT:
            out.append(_TRANSLIT[ch])
        elif ch.isascii() and ch.isalnum():
            out.append(ch)
    return "".join(out)


def _feminine(surname: str) -> str:
    return surname + "а"


def random_person(rng: random.Random) -> tuple[str, str, bool, bool]:
    """(first name, surname, male, kazakh?) drawn from the name pools."""
    male = rng.random() < 0.48
    r = rng.random()
    if r < 0.72:
        first = rng.choice(_KZ_MALE if male else _KZ_FEMALE)
        if rng.random() < 0.8:
            last = rng.choice(_KZ_SURNAMES_GENDERED)
            last = last if male else _feminine(last)
        else:
            last = rng.choice(_KZ_SURNAMES_PLAIN)
        return first, last, male, True
    first = rng.choice(_RU_MALE if male else _RU_FEMALE)
    if r < 0.92:
        last = rng.choice(_RU_SURNAMES_GENDERED)
        last = last if male else _feminine(last)
    else:
        last = rng.choice(_RU_SURNAMES_PLAIN)
    return first, last, male, False


def _birth_date(rng: random.Random, level: str, admission: int) -> date:
    if level == "bachelor":
        year = admission - rng.choice((17, 18, 18, 18, 19, 20))
    elif level == "master":
        year = admission - rng.randint(21, 30)
    else:
        year = admission - rng.randint(24, 42)
    return date(year, 1, 1) + timedelta(days=rng.randrange(365))


def _split_period(start: date, end: date, rng: random.Random) -> tuple[date, date]:
    """Most disciplines last the whole period; some only its first or second half."""
    r = rng.random()
    if r < 0.7 or (end - start).days < 14:
        return start, end
    mid = start + (end - start) // 2
    if r < 0.85:
        return start, mid
    return mid + timedelta(days=1), end


def _activities(
    rng: random.Random,
    disc_idx: int,
    course_id: int,
    cmid: int,
    section: int,
    fmt: str,
    titles: tuple[str, str, str],
) -> tuple[list[Activity], int, int]:
    """Activities of one course; returns (activities, next cmid, next section id)."""
    kk, ru, en = titles
    acts = [
        Activity(
            f"{HOMEPAGE}/course/view.php?id={course_id}",
            "course",
            TYPE_COURSE,
            {"kk-KZ": kk, "ru-RU": ru, "en-US": en},
            0,
        )
    ]
    n_sections = rng.randint(4, 8)
    sections = list(range(section, section + n_sections))
    section += n_sections

    def sec(i: int) -> int:
        return sections[min(i * n_sections // max(1, n_lect), n_sections - 1)]

    n_lect = rng.randint(3, 6)
    for i in range(n_lect):
        kind, typ, path = rng.choice(
            (("page", TYPE_PAGE, "page"), ("resource", TYPE_RESOURCE, "resource"))
        )
        acts.append(
            Activity(
                f"{HOMEPAGE}/mod/{path}/view.php?id={cmid}",
                kind,
                typ,
                {
                    "kk-KZ": f"{i + 1}-дәріс. {kk}",
                    "ru-RU": f"Лекция {i + 1}. {ru}",
                    "en-US": f"Lecture {i + 1}. {en}",
                },
                sec(i),
            )
        )
        cmid += 1
    for i in range(rng.randint(0, 2)):
        acts.append(
            Activity(
                f"{HOMEPAGE}/mod/page/view.php?id={cmid}",
                "video",
                TYPE_VIDEO,
                {
                    "kk-KZ": f"{i + 1}-бейнедәріс. {kk}",
                    "ru-RU": f"Видеолекция {i + 1}. {ru}",
                    "en-US": f"Video lecture {i + 1}. {en}",
                },
                sec(i),
                extra={"length_s": rng.randint(8, 45) * 60},
            )
        )
        cmid += 1
    for i in range(rng.randint(1, 3)):
        quiz_iri = f"{HOMEPAGE}/mod/quiz/view.php?id={cmid}"
        acts.append(
            Activity(
                quiz_iri,
                "quiz",
                TYPE_ASSESSMENT,
                {
                    "kk-KZ": f"{i + 1}-тест. {kk}",
                    "ru-RU": f"Тест {i + 1}. {ru}",
                    "en-US": f"Quiz {i + 1}. {en}",
                },
                sec(i * 2),
                extra={"points": rng.choice((1, 1, 2, 5))},
            )
        )
        quiz_cmid = cmid
        cmid += 1
        for q in range(rng.randint(4, 8)):
            qid = disc_idx * 1000 + quiz_cmid % 1000 * 10 + q + 1
            acts.append(
                Activity(
                    f"{HOMEPAGE}/question/question.php?cmid={quiz_cmid}&id={qid}",
                    "question",
                    TYPE_INTERACTION,
                    {
                        "kk-KZ": f"{q + 1}-сұрақ",
                        "ru-RU": f"Вопрос {q + 1}",
                        "en-US": f"Question {q + 1}",
                    },
                    sec(i * 2),
                    parent=quiz_iri,
                    extra={"correct": rng.choice("abcd"), "difficulty": rng.uniform(-0.2, 0.2)},
                )
            )
    if fmt != "synchronous":
        for i in range(rng.randint(1, 4 if fmt == "asynchronous" else 2)):
            acts.append(
                Activity(
                    f"{HOMEPAGE}/mod/cmi5launch/view.php?id={cmid}",
                    "cmi5",
                    TYPE_LESSON,
                    {
                        "kk-KZ": f"{i + 1}-интерактивті модуль. {kk}",
                        "ru-RU": f"Интерактивный модуль {i + 1}. {ru}",
                        "en-US": f"Interactive module {i + 1}. {en}",
                    },
                    sec(i + 1),
                    extra={
                        "mastery": rng.choice((0.6, 0.7, 0.75, 0.8)),
                        "move_on": rng.choice(
                            ("CompletedOrPassed", "CompletedAndPassed", "Passed", "Completed")
                        ),
                    },
                )
            )
            cmid += 1
    if fmt != "asynchronous":
        for i in range(rng.randint(1, 2)):
            acts.append(
                Activity(
                    f"{HOMEPAGE}/mod/bigbluebuttonbn/view.php?id={cmid}",
                    "live",
                    TYPE_MEETING,
                    {
                        "kk-KZ": f"Онлайн сабақ{' (практика)' if i else ''}. {kk}",
                        "ru-RU": f"Онлайн-занятие{' (практика)' if i else ''}. {ru}",
                        "en-US": f"Live session{' (practice)' if i else ''}. {en}",
                    },
                    sections[0],
                    extra={"minutes": 80 if i == 0 else 50},
                )
            )
            cmid += 1
    return acts, cmid, section


def build_university(
    seed: int,
    students: int = 300,
    disciplines: int = 24,
    period_start: date = date(2026, 9, 1),
    period_end: date = date(2026, 12, 31),
) -> University:
    """A deterministic synthetic university (same arguments -> same university)."""
    if students < 1 or disciplines < 1:
        raise ValueError("a university needs at least one student and one discipline")
    if period_end < period_start:
        raise ValueError("period_end is before period_start")
    rng = random.Random(f"footprint-university-{seed}")

    # --- disciplines -------------------------------------------------------------------------
    discs: list[Discipline] = []
    course_id = 100 + rng.randrange(200)
    cmid = 1000 + rng.randrange(5000)
    section = 10 + rng.randrange(500)
    used_codes: set[str] = set()
    for i in range(disciplines):
        prefix, kk, ru, en, _general = _DISCIPLINES[i % len(_DISCIPLINES)]
        rnd = i // len(_DISCIPLINES)
        if rnd:
            kk, ru, en = f"{kk} {rnd + 1}", f"{ru} {rnd + 1}", f"{en} {rnd + 1}"
        while True:
            code = f"{prefix}{rng.randint(1, 4)}{rng.randint(1, 99):02d}{rnd or ''}"
            if code not in used_codes:
                used_codes.add(code)
                break
        fmt = rng.choices(("synchronous", "asynchronous", "blended"), (3, 3, 4))[0]
        p_start, p_end = _split_period(period_start, period_end, rng)
        acts, cmid, section = _activities(rng, i, course_id, cmid, section, fmt, (kk, ru, en))
        t_first, t_last, _male, _kz = random_person(rng)
        t_login = f"t.{transliterate(t_last)}{rng.randint(1, 99)}"
        discs.append(
            Discipline(
                code=code,
                title_kk=kk,
                title_ru=ru,
                title_en=en,
                credits=rng.choices((3, 4, 5, 6), (1, 2, 6, 2))[0],
                activity_ids=[a.id for a in acts],
                format=fmt,
                period_start=p_start,
                period_end=p_end,
                course_id=course_id,
                activities=acts,
                instructor_name=f"{t_first} {t_last}",
                instructor_account=t_login,
            )
        )
        course_id += 1 + rng.randrange(3)

    general = [i for i in range(disciplines) if _DISCIPLINES[i % len(_DISCIPLINES)][4]]
    special = [i for i in range(disciplines) if i not in general]

    # --- groups and curriculum -----------------------------------------------------------------
    group_names: list[str] = []
    group_programme: dict[str, Programme] = {}
    group_admission: dict[str, int] = {}
    curriculum: dict[str, list[int]] = {}
    programmes = list(_PROGRAMMES)
    per_group = 20
    n_groups = max(1, (students + per_group - 1) // per_group)
    for g in range(n_groups):
        prog = (
            programmes[g] if g < len(programmes) else rng.choices(programmes, _PROGRAMME_WEIGHTS)[0]
        )
        years = _ADMISSION_YEARS[prog.level]
        year = years[g % len(years)] if g < len(programmes) else rng.choice(years)
        n = 1
        while f"{prog.group_prefix}-{year % 100:02d}-{n}" in group_programme:
            n += 1
        name = f"{prog.group_prefix}-{year % 100:02d}-{n}"
        group_names.append(name)
        group_programme[name] = prog
        group_admission[name] = year
        picks: list[int] = []
        if prog.level == "bachelor" and general:
            picks += rng.sample(general, min(len(general), rng.randint(2, 3)))
        if special:
            picks += rng.sample(special, min(len(special), rng.randint(3, 5)))
        if not picks:
            picks = rng.sample(range(disciplines), min(disciplines, 3))
        curriculum[name] = sorted(picks)

    # --- students ------------------------------------------------------------------------------
    studs: list[Student] = []
    logins: set[str] = set()
    iins: set[str] = set()
    seq = rng.randrange(100, 900)
    for k in range(students):
        group = group_names[k % n_groups] if k < n_groups else rng.choice(group_names)
        prog = group_programme[group]
        admission = group_admission[group]
        first, last, male, kazakh = random_person(rng)
        birth = _birth_date(rng, prog.level, admission)
        while True:
            iin = make_iin(birth, male, rng.randrange(10_000))
            if iin not in iins:
                iins.add(iin)
                break
        seq += 1 + rng.randrange(7)
        student_id = f"{admission % 100:02d}{seq:06d}"
        base = f"{transliterate(first)[:1]}.{transliterate(last)}"
        login = base
        n = 1
        while login in logins:
            n += 1
            login = f"{base}{n}"
        logins.add(login)
        status = rng.choices(("active", "academic_leave", "expelled"), (93, 4, 3))[0]
        language = ("kk-KZ" if rng.random() < 0.75 else "ru-RU") if kazakh else "ru-RU"
        studs.append(
            Student(
                iin=iin,
                student_id=student_id,
                lms_account=login,
                email=f"{login}@{EMAIL_DOMAIN}",
                full_name=f"{first} {last}",
                programme_code=prog.code,
                group=group,
                status=status,
                birth_date=birth,
                male=male,
                language=language,
            )
        )
    used_programmes = {s.programme_code for s in studs}
    return University(
        seed=seed,
        homepage=HOMEPAGE,
        period_start=period_start,
        period_end=period_end,
        programmes=[p for p in programmes if p.code in used_programmes],
        students=studs,
        disciplines=discs,
        groups=group_names,
        curriculum=curriculum,
    )


def write_roster_csv(univ: University, path: str | Path) -> Path:
    """The roster the registrar would export: one row per student, UTF-8, comma-separated."""
    p = Path(path)
    with p.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(ROSTER_COLUMNS)
        for s in univ.students:
            w.writerow(
                (s.iin, s.student_id, s.lms_account, s.email, s.programme_code, s.group, s.status)
            )
    return p


def write_catalogue_csv(univ: University, path: str | Path) -> Path:
    """The discipline catalogue: one row per LMS activity id, UTF-8, comma-separated."""
    p = Path(path)
    with p.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CATALOGUE_COLUMNS)
        for d in univ.disciplines:
            for activity_id in d.activity_ids:
                w.writerow(
                    (
                        activity_id,
                        d.code,
                        d.credits,
                        d.period_start.isoformat(),
                        d.period_end.isoformat(),
                        d.format,
                    )
                )
    return p
