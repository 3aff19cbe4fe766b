"""The voiding ledger: voids before and after their targets, across calls, and void-of-void."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from pipelines.generate import TroubleShares
from pipelines.verify.voiding import VOID_OF_VOID, Void, apply_voids
from tests.test_rules import (
    SOURCE,
    World,
    generate_batch,
    make_world,
    run,
    statement,
    verify_rows,
    void_of,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("reference"))


def ids(t: pa.Table) -> list[str]:
    return t["statement_id"].to_pylist()


def test_voiding_void_after_target_across_two_runs(world: World) -> None:
    a, b = statement(world), statement(world)
    first = run(world, [a, b])
    assert first.counts["verified"] == 2
    out1 = apply_voids(first.verified, first.voids, {})
    assert out1.voided == [] and out1.pending == {} and out1.changes == []

    void = void_of(world, a["id"])
    second = run(world, [void])
    assert second.counts["voiding"] == 1
    footprint = pa.concat_tables([out1.verified, second.verified])
    out2 = apply_voids(footprint, second.voids, out1.pending)
    assert ids(out2.verified) == [b["id"]]
    assert out2.voided == [a["id"]]
    assert out2.pending == {}
    (change,) = out2.changes
    assert change.statement_id == a["id"]
    assert change.voiding_statement_id == void["id"]
    assert change.voided_at == datetime(2026, 10, 1, 10, 0, 1, tzinfo=UTC)
    assert change.record_id == first.verified["record_id"][0].as_py()
    assert change.source == SOURCE
    assert change.kind == "voided"


def test_voiding_void_before_target_across_two_runs(world: World) -> None:
    target = statement(world)
    void = void_of(world, target["id"])
    first = run(world, [void, statement(world)])
    out1 = apply_voids(first.verified, first.voids, {})
    assert out1.voided == []
    assert set(out1.pending) == {target["id"]}
    assert out1.pending[target["id"]].voiding_statement_id == void["id"]

    second = run(world, [target])  # the target arrives later
    assert second.counts["verified"] == 1  # verify alone does not know about the void
    out2 = apply_voids(second.verified, second.voids, out1.pending)
    assert out2.verified.num_rows == 0
    assert out2.voided == [target["id"]]
    assert out2.pending == {}  # the pending entry is resolved
    (change,) = out2.changes
    assert (change.kind, change.voiding_statement_id) == ("pending-resolved", void["id"])
    assert out2.resolved == [target["id"]]
    # and it stays resolved: a third batch changes nothing
    out3 = apply_voids(run(world, [statement(world)]).verified, [], out2.pending)
    assert out3.changes == [] and out3.pending == {}


def test_voiding_target_in_the_same_batch(world: World) -> None:
    target = statement(world)
    void = void_of(world, target["id"])
    v = run(world, [void, target])
    out = apply_voids(v.verified, v.voids, {})
    assert out.verified.num_rows == 0 and out.pending == {}
    assert [c.kind for c in out.changes] == ["voided"]


def test_voiding_void_of_void_is_ignored_with_a_warning(world: World) -> None:
    target = statement(world)
    void = void_of(world, target["id"])
    void_of_that = void_of(world, void["id"])
    v = run(world, [target, void, void_of_that])
    assert v.counts["voiding"] == 2
    out = apply_voids(v.verified, v.voids, {})
    assert out.voided == [target["id"]]  # the first void still holds
    assert out.pending == {}
    (w,) = out.warnings
    assert w.code == VOID_OF_VOID == "void-of-void"
    assert (w.voiding_statement_id, w.target_id) == (void_of_that["id"], void["id"])


def test_voiding_void_of_void_across_runs(world: World) -> None:
    target = statement(world)
    void = void_of(world, target["id"])
    void_of_that = void_of(world, void["id"])
    # the void of the void arrives first: its target is unknown, so it waits...
    first = run(world, [void_of_that])
    out1 = apply_voids(first.verified, first.voids, {})
    assert set(out1.pending) == {void["id"]}
    # ...and when its target turns out to be a voiding statement, it is dropped with a warning
    second = run(world, [target, void])
    out2 = apply_voids(second.verified, second.voids, out1.pending)
    assert out2.voided == [target["id"]]
    assert out2.pending == {}
    assert [w.code for w in out2.warnings] == [VOID_OF_VOID]
    # a later void of a voiding statement of an earlier run, told by the ledger
    out3 = apply_voids(
        pa.table({"statement_id": pa.array([], pa.string())}),
        [Void(str(uuid.uuid4()), void["id"])],
        {},
        known_voiding_ids={void["id"]},
    )
    assert out3.pending == {} and [w.code for w in out3.warnings] == [VOID_OF_VOID]


def test_voiding_earliest_void_of_a_target_takes_effect() -> None:
    t = str(uuid.uuid4())
    at = datetime(2026, 10, 1, tzinfo=UTC)
    late, early = Void("v-late", t, at + timedelta(hours=1)), Void("v-early", t, at)
    table = pa.table({"statement_id": [t, "other"], "record_id": ["r1", "r2"]})
    out = apply_voids(table, [late, early], {})
    assert [c.voiding_statement_id for c in out.changes] == ["v-early"]
    assert ids(out.verified) == ["other"]


def test_voiding_pending_as_a_set_of_target_ids() -> None:
    t = str(uuid.uuid4())
    table = pa.table({"statement_id": [t.upper().lower()], "source": ["s"]})
    out = apply_voids(table, [], {t})
    assert out.voided == [t] and out.pending == {}
    (c,) = out.changes
    assert c.voiding_statement_id is None and c.kind == "pending-resolved" and c.source == "s"


def test_voiding_bare_target_ids_and_a_voiding_table(world: World) -> None:
    a = statement(world)
    v = run(world, [a])
    out = apply_voids(v.verified, [a["id"].upper()], {})
    assert out.voided == [a["id"]]
    void = void_of(world, a["id"])
    vv = run(world, [void])
    out = apply_voids(v.verified, vv.voiding, {})
    assert out.voided == [a["id"]] and out.changes[0].voiding_statement_id == void["id"]


def test_voiding_generated_stream_split_into_runs(world: World) -> None:
    """Generated voids (about a third emitted before their targets) in three runs: whichever
    comes first, no voided statement is left in the footprint and nothing verified stays
    pending."""
    trouble = TroubleShares(
        malformed_json=0.0,
        invalid=0.0,
        unknown_learner=0.0,
        exact_duplicate=0.0,
        conflicting_duplicate=0.0,
        voiding=0.08,
        late_arrival=0.0,
    )
    _lines, batch, raw = generate_batch(world, 600, 11, trouble)
    whole = verify_rows(world, batch.rows, raw)
    targets = set(whole.voiding["voided_statement_id"].to_pylist())
    assert len(targets) > 20
    rows = batch.rows
    cut = [0, rows.num_rows // 3, 2 * rows.num_rows // 3, rows.num_rows]
    footprint = whole.verified.slice(0, 0)
    pending: dict[str, Void] = {}
    early = 0
    for lo, hi in itertools.pairwise(cut):
        part = verify_rows(world, rows.slice(lo, hi - lo), raw)
        seen = set(ids(footprint)) | set(ids(part.verified))
        early += sum(1 for v in part.voids if v.target_id not in seen)
        outcome = apply_voids(pa.concat_tables([footprint, part.verified]), part.voids, pending)
        footprint, pending = outcome.verified, outcome.pending
        assert all(c.record_id and c.source == SOURCE for c in outcome.changes)
    assert early > 0  # some voids did come before their targets
    assert not targets & set(ids(footprint))
    assert not set(pending) & set(ids(whole.verified))  # only targets that never verified
    # the same as applying every void to the whole batch at once
    at_once = apply_voids(whole.verified, whole.voids, {})
    assert sorted(ids(at_once.verified)) == sorted(ids(footprint))
    assert set(at_once.pending) == set(pending)
