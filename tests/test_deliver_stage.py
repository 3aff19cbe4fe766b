"""pipelines.deliver.stage helpers that need no server: the read-back sample."""

from __future__ import annotations

from typing import Any

from pipelines.deliver import records as R
from pipelines.deliver.stage import _sample


def _records(n: int) -> dict[str, dict[str, Any]]:
    out = {}
    for i in range(n):
        rec: dict[str, Any] = dict.fromkeys(R.FIELDS, None)
        rec.update(record_id=f"r{i}", iin="060416591306", statement_count=1)
        out[f"r{i}"] = rec
    if n > 52:
        out["r37"]["current_score"] = 81.0  # the only record with a score
        out["r52"]["gpa_points"] = 3.0
    return out


def test_sample_covers_every_field_that_holds_a_value_in_the_batch() -> None:
    recs = _records(100)
    batch = list(recs)
    picked = _sample(batch, recs, 3)
    assert picked[0] == "r99"  # the last record, then evenly spaced ones
    assert {"r37", "r52"} <= set(picked)  # else an ignored current_score could go unseen
    assert len(picked) == len(set(picked)) >= 3
    filled = {f for r in batch for f, v in recs[r].items() if v is not None}
    assert filled <= {f for r in picked for f, v in recs[r].items() if v is not None}


def test_sample_skips_fields_already_confirmed_in_the_run() -> None:
    recs = _records(100)
    batch = list(recs)
    # current_score was already seen kept by the authority: only gpa_points needs its record
    picked = _sample(batch, recs, 1, unconfirmed=["gpa_points", "iin"])
    assert picked == ["r99", "r52"]
    assert _sample(batch, recs, 1, unconfirmed=[]) == ["r99"]
    assert len(_sample(batch, recs, 4, unconfirmed=[])) == 4


def test_sample_of_a_small_batch_is_the_batch() -> None:
    recs = _records(2)
    assert _sample(list(recs), recs, 3) == ["r0", "r1"]
