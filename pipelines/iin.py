"""Kazakh individual identification numbers (IIN, ЖСН/ИИН).

An IIN has 12 digits::

    YY MM DD C NNNN K
    |  |  |  | |    +- check digit
    |  |  |  | +------ serial (digits 8-11)
    |  |  |  +-------- century and sex: 1/2 = 1800s, 3/4 = 1900s, 5/6 = 2000s; odd = male
    +--+--+----------- date of birth

Check digit: ``s = sum(d_i * i for i in 1..11) mod 11``; when ``s == 10`` it is computed again
with the weights 3,4,5,6,7,8,9,10,11,1,2; when that is 10 as well, no valid number exists for
these 11 digits (the issuer then takes another serial). A business identification number (BIN)
uses the same checksum, so :func:`has_valid_checksum` is usable for BINs too.
"""

from __future__ import annotations

from datetime import date

__all__ = [
    "has_valid_checksum",
    "iin_birth_date",
    "iin_check_digit",
    "iin_is_male",
    "is_valid_iin",
    "make_iin",
]

_W1 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
_W2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)
_DIGITS = frozenset("0123456789")
# century digit -> (first year of the century, male?)
_CENTURY = {1: (1800, True), 2: (1800, False), 3: (1900, True), 4: (1900, False)}
_CENTURY |= {5: (2000, True), 6: (2000, False)}


def _is_digits(s: str, n: int) -> bool:
    # str.isdigit() accepts e.g. Arabic-Indic and superscript digits: only ASCII 0-9 count here.
    return len(s) == n and all(c in _DIGITS for c in s)


def iin_check_digit(first11: str) -> int | None:
    """The check digit (0-9) for the first 11 digits, or None when both passes give 10.

    Raises ValueError when ``first11`` is not exactly 11 ASCII digits.
    """
    if not _is_digits(first11, 11):
        raise ValueError(f"expected 11 ASCII digits, got {first11!r}")
    d = [ord(c) - 48 for c in first11]
    s = sum(x * w for x, w in zip(d, _W1, strict=True)) % 11
    if s == 10:
        s = sum(x * w for x, w in zip(d, _W2, strict=True)) % 11
        if s == 10:
            return None
    return s


def has_valid_checksum(s: str) -> bool:
    """True when ``s`` is 12 ASCII digits whose last digit is the check digit (IIN or BIN)."""
    if not _is_digits(s, 12):
        return False
    k = iin_check_digit(s[:11])
    return k is not None and k == ord(s[11]) - 48


def iin_birth_date(s: str) -> date | None:
    """The birth date encoded in an IIN (digits 1-6 with the century of digit 7), or None."""
    if not _is_digits(s, 12):
        return None
    century = _CENTURY.get(ord(s[6]) - 48)
    if century is None:
        return None
    try:
        return date(century[0] + int(s[0:2]), int(s[2:4]), int(s[4:6]))
    except ValueError:
        return None


def iin_is_male(s: str) -> bool | None:
    """True/False from digit 7 (odd = male), None when digit 7 is not 1-6."""
    if not _is_digits(s, 12):
        return None
    century = _CENTURY.get(ord(s[6]) - 48)
    return None if century is None else century[1]


def is_valid_iin(s: str) -> bool:
    """12 ASCII digits, a real calendar date, century/sex digit 1-6 and a matching check digit."""
    return has_valid_checksum(s) and iin_birth_date(s) is not None


def make_iin(birth: date, male: bool, serial: int) -> str:
    """Build a valid IIN; when ``serial`` admits no check digit, the next serials are tried.

    ``serial`` is taken modulo 10,000 (4 digits). Raises ValueError for births outside 1800-2099.
    """
    if not 1800 <= birth.year <= 2099:
        raise ValueError(f"no IIN century digit for birth year {birth.year}")
    c = (birth.year - 1800) // 100 * 2 + (1 if male else 2)
    head = f"{birth.year % 100:02d}{birth.month:02d}{birth.day:02d}{c}"
    for k in range(10_000):
        first11 = f"{head}{(serial + k) % 10_000:04d}"
        check = iin_check_digit(first11)
        if check is not None:
            return f"{first11}{check}"
    raise AssertionError("unreachable: some serial always has a check digit")  # pragma: no cover
