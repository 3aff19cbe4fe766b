"""The dictionaries ``common-dictionary/find-all?type=...`` answers, in Kazakh, Russian and English.

``letter-grade``: the credit-technology scale (ANCHORS.md section 5), A 95-100 ... F 0-24.
``learning-format``: the formats of Order No. 187 (synchronous, asynchronous) and the modes of
learning (online, distance) the record's counts are split by.
"""

from __future__ import annotations

from typing import Final

_EXCELLENT = ("Өте жақсы", "Отлично", "Excellent")
_GOOD = ("Жақсы", "Хорошо", "Good")
_SATISFACTORY = ("Қанағаттанарлық", "Удовлетворительно", "Satisfactory")

_GRADES: Final = (
    ("A", _EXCELLENT, "95-100"),
    ("A-", _EXCELLENT, "90-94"),
    ("B+", _GOOD, "85-89"),
    ("B", _GOOD, "80-84"),
    ("B-", _GOOD, "75-79"),
    ("C+", _SATISFACTORY, "70-74"),
    ("C", _SATISFACTORY, "65-69"),
    ("C-", _SATISFACTORY, "60-64"),
    ("D+", _SATISFACTORY, "55-59"),
    ("D", _SATISFACTORY, "50-54"),
    ("FX", ("Қанағаттанарлықсыз (қайта тапсыру құқығымен)",
            "Неудовлетворительно (с правом пересдачи)", "Fail (retake allowed)"), "25-49"),
    ("F", ("Қанағаттанарлықсыз", "Неудовлетворительно", "Fail"), "0-24"),
)

DICTIONARIES: Final[dict[str, list[dict[str, str]]]] = {
    "letter-grade": [
        {"code": code, "nameKk": f"{kk} ({band})", "nameRu": f"{ru} ({band})",
         "nameEn": f"{en} ({band})"}
        for code, (kk, ru, en), band in _GRADES
    ],
    "learning-format": [
        {"code": "synchronous", "nameKk": "Синхронды формат", "nameRu": "Синхронный формат",
         "nameEn": "Synchronous format"},
        {"code": "asynchronous", "nameKk": "Асинхронды формат", "nameRu": "Асинхронный формат",
         "nameEn": "Asynchronous format"},
        {"code": "online", "nameKk": "Онлайн оқыту", "nameRu": "Онлайн-обучение",
         "nameEn": "Online learning"},
        {"code": "distance", "nameKk": "Қашықтықтан оқыту", "nameRu": "Дистанционное обучение",
         "nameEn": "Distance learning"},
    ],
}
