"""The voiding ledger: xAPI voids applied to the verified footprint, whichever arrives first.

A statement with verb ``http://adlnet.gov/expapi/verbs/voided`` and a ``StatementRef`` object
voids the statement with that id (xAPI 1.0.3, 2.3.2). Both may arrive in any order and in
different runs (ANCHORS section 1), so the ledger keeps the voids whose target has not been seen
yet (*pending*) and applies them when the target turns up:

- target already verified (an earlier run, or earlier in this batch): its record is removed now,
  change ``voided``;
- target not verified yet: the void waits in ``pending``; when a later batch brings the target, its
  record is removed on arrival (change ``pending-resolved``) and the pending entry is resolved;
- target is itself a voiding statement: "a voiding statement cannot itself be voided", so the void
  is ignored with the warning ``void-of-void`` (also when a pending void's target turns out, later,
  to be a voiding statement);
- several voids of one target: the earliest (by ``at``, then id) takes effect, the others change
  nothing.

A void whose target was quarantined stays pending: if the target verifies after a replay (e.g.
a roster fix), it is dropped then, which is what the LRS would show.

Everything here is pure: tables and collections in, a :class:`VoidOutcome` out; the caller keeps
the pending ledger and the changes (delivery sends a correction for every ``voided`` change whose
record had been delivered). No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "VOID_OF_VOID",
    "Void",
    "VoidChange",
    "VoidOutcome",
    "VoidWarning",
    "apply_voids",
    "voids_from_table",
]

VOID_OF_VOID = "void-of-void"


class Void(NamedTuple):
    """One voiding statement: it voids ``target_id``."""

    voiding_statement_id: str | None  # None only for pending entries given as bare target ids
    target_id: str
    at: datetime | None = None  # when the void was stored (else its timestamp), UTC


@dataclass(frozen=True, slots=True)
class VoidChange:
    """One verified record taken out of the footprint by a void (delivery sends the correction)."""

    statement_id: str  # the voided statement
    voiding_statement_id: str | None  # the statement that voided it
    voided_at: datetime | None  # when the voiding statement was stored (else its timestamp)
    record_id: str | None  # the verified record removed
    source: str | None  # the source of that record
    kind: Literal["voided", "pending-resolved"]  # target was there / arrived after its void


@dataclass(frozen=True, slots=True)
class VoidWarning:
    """A void that was ignored, with its reason code (``void-of-void``)."""

    code: str
    voiding_statement_id: str | None
    target_id: str
    detail: str


@dataclass(frozen=True)
class VoidOutcome:
    verified: pa.Table  # the input rows without the voided records
    voided: list[str]  # statement ids removed now, in table order, each once
    pending: dict[str, Void]  # target id -> the void waiting for it
    changes: list[VoidChange]
    warnings: list[VoidWarning] = field(default_factory=list)

    @property
    def resolved(self) -> list[str]:
        """Target ids of pending voids applied in this call."""
        return [c.statement_id for c in self.changes if c.kind == "pending-resolved"]


def voids_from_table(table: pa.Table) -> list[Void]:
    """Voids from a table with ``statement_id`` and ``voided_statement_id`` (``stored`` and
    ``timestamp`` optional), e.g. :attr:`pipelines.verify.rules.Verification.voiding`."""
    if table.num_rows == 0:
        return []
    ids = table["statement_id"].to_pylist()
    targets = table["voided_statement_id"].to_pylist()
    names = table.column_names
    at: list[datetime | None] = [None] * table.num_rows
    for col in ("timestamp", "stored"):  # stored wins where both are given
        if col in names:
            at = [
                v if v is not None else a for v, a in zip(table[col].to_pylist(), at, strict=True)
            ]
    return [Void(i, t, a) for i, t, a in zip(ids, targets, at, strict=True) if t is not None]


def _as_voids(items: Iterable[Void | str] | pa.Table) -> list[Void]:
    if isinstance(items, pa.Table):
        return voids_from_table(items)
    return [Void(None, v.lower()) if isinstance(v, str) else v for v in items]


def _when(v: Void) -> tuple[bool, datetime | str, str]:
    return (v.at is None, v.at if v.at is not None else "", v.voiding_statement_id or "")


def apply_voids(
    verified: pa.Table,
    voiding_targets: Iterable[Void | str] | pa.Table,
    pending: Mapping[str, Void] | Set[str],
    *,
    known_voiding_ids: Collection[str] = (),
) -> VoidOutcome:
    """Apply this batch's voids and the pending ones to ``verified``.

    ``verified``: rows with at least ``statement_id`` (``record_id`` and ``source`` are copied
    into the changes when present): the footprint so far, this batch's rows, or both.
    ``voiding_targets``: this batch's voids (:class:`Void`, a voiding table, or bare target ids).
    ``pending``: the ledger from earlier calls, target id -> :class:`Void` (a set of bare target
    ids is accepted; their changes then name no voiding statement). ``known_voiding_ids``: ids of
    voiding statements from earlier runs, so that a void of one of them is recognised as a
    void-of-void (this batch's voiding statements are recognised without it).
    """
    voids = _as_voids(voiding_targets)
    ledger: dict[str, Void] = (
        {t: Void(None, t) for t in pending} if isinstance(pending, Set) else dict(pending)
    )
    voiding_ids = set(known_voiding_ids)
    voiding_ids.update(v.voiding_statement_id for v in voids if v.voiding_statement_id)
    warnings: list[VoidWarning] = []

    def void_of_void(v: Void, when: str) -> None:
        warnings.append(
            VoidWarning(
                VOID_OF_VOID,
                v.voiding_statement_id,
                v.target_id,
                f"{VOID_OF_VOID}: statement {v.target_id} is a voiding statement and cannot be "
                f"voided; the void {v.voiding_statement_id or '(unnamed)'} is ignored{when}",
            )
        )

    # pending voids whose target has meanwhile turned out to be a voiding statement
    for target in [t for t in ledger if t in voiding_ids]:
        void_of_void(ledger.pop(target), " (it was pending)")
    fresh: dict[str, Void] = {}
    for v in sorted(voids, key=_when):
        if v.target_id in voiding_ids:
            void_of_void(v, "")
        elif v.target_id not in fresh and v.target_id not in ledger:
            fresh[v.target_id] = v  # a later void of the same target changes nothing

    wanted = {**ledger, **fresh}
    if not wanted or verified.num_rows == 0:
        return VoidOutcome(verified, [], wanted, [], warnings)
    ids = verified["statement_id"]
    hit = pc.fill_null(pc.is_in(ids, value_set=pa.array(list(wanted), pa.string())), False)
    if not pc.any(hit).as_py():
        return VoidOutcome(verified, [], wanted, [], warnings)
    gone = verified.filter(hit)
    names = gone.column_names
    gone_ids = gone["statement_id"].to_pylist()
    records = gone["record_id"].to_pylist() if "record_id" in names else [None] * len(gone_ids)
    sources = gone["source"].to_pylist() if "source" in names else [None] * len(gone_ids)
    changes: list[VoidChange] = []
    voided: list[str] = []
    seen: set[str] = set()
    for sid, rec, src in zip(gone_ids, records, sources, strict=True):
        v = wanted[sid]
        kind: Literal["voided", "pending-resolved"] = (
            "voided" if sid in fresh else "pending-resolved"
        )
        changes.append(VoidChange(sid, v.voiding_statement_id, v.at, rec, src, kind))
        if sid not in seen:
            seen.add(sid)
            voided.append(sid)
    still = {t: v for t, v in wanted.items() if t not in seen}
    return VoidOutcome(verified.filter(pc.invert(hit)), voided, still, changes, warnings)
