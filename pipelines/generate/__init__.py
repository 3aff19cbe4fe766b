"""Synthetic university and xAPI statement generator (deterministic by seed)."""

from pipelines.iin import has_valid_checksum, iin_check_digit, is_valid_iin, make_iin

from .statements import KINDS, GeneratedLine, TroubleShares, generate_statements
from .university import (
    Discipline,
    Student,
    University,
    build_university,
    write_catalogue_csv,
    write_roster_csv,
)
from .writers import PostReport, post_to_lrs, run_generate, write_ndjson

__all__ = [
    "KINDS",
    "Discipline",
    "GeneratedLine",
    "PostReport",
    "Student",
    "TroubleShares",
    "University",
    "build_university",
    "generate_statements",
    "has_valid_checksum",
    "iin_check_digit",
    "is_valid_iin",
    "make_iin",
    "post_to_lrs",
    "run_generate",
    "write_catalogue_csv",
    "write_ndjson",
    "write_roster_csv",
]
