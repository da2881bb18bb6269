"""Which base rows a dedupe drops (docs/adr/0018): the rows sharing a key, all but the first (or the last)
in file order. Pure: the dry run asks it of the stored columns, the decision of the state under the lock."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .errors import IntegrityError, InvalidInput, SchemaError

KEYS = ("id", "sequence", "sequence_norm", "sequence_ci")
KEEPS = ("keep-first", "keep-last")


@dataclass(frozen=True)
class DedupePlan:
    """`groups` keys held by more than one of `rows_total` base rows; `rows_dropped` rows go (`dropped`: their
    ids, in file order, when asked for)."""

    rows_total: int
    groups: int
    rows_dropped: int
    dropped: pa.Array | None


def columns_for(key: str, *, with_ids: bool = True) -> list[str]:
    """The base columns a plan for `key` reads (`id` names the rows it drops: a count needs it only as the key)."""
    check_choice(key, "")
    if key == "id":
        return ["id"]
    ids = ["id"] if with_ids else []
    return [*ids, "sequence", "alphabet"] if key == "sequence_ci" else [*ids, "sequence"]


def check_choice(key: str, keep: str) -> None:
    if key not in KEYS:
        raise InvalidInput(f"Unknown dedupe key '{key}'.", hint=f"Use one of: {', '.join(KEYS)}.")
    if keep and keep not in KEEPS:
        raise InvalidInput(f"Unknown --keep '{keep}'.", hint=f"Use one of: {', '.join(KEEPS)}.")


def plan_dedupe(base: pa.Table, key: str, keep: str, *, with_ids: bool = True) -> DedupePlan:
    """The plan for `base` (at least `columns_for(key)`, rows in file order). `sequence` and `sequence_norm`
    are the stored sequence (already trimmed); `sequence_ci` compares it upper-cased, only in a dataset
    whose every row is dna_4, as in the original."""
    check_choice(key, keep)
    n = base.num_rows
    if key == "sequence_ci":
        alphabets = pc.unique(base.column("alphabet")).to_pylist()
        if n and alphabets != ["dna_4"]:
            raise SchemaError("sequence_ci is only valid for dna_4 datasets.", hint="Use --key sequence.")
        keys = pc.utf8_upper(base.column("sequence"))
    else:
        keys = base.column("id" if key == "id" else "sequence")
    counted = pa.table({"k": keys}).group_by("k", use_threads=False).aggregate([("k", "count")])
    repeated = counted.filter(pc.greater(counted.column("k_count"), 1))
    groups = repeated.num_rows
    rows_dropped = int(pc.sum(repeated.column("k_count")).as_py() or 0) - groups
    if not groups or not with_ids:
        return DedupePlan(n, groups, rows_dropped, None if groups else pa.array([], pa.string()))
    if key == "id":  # rows are dropped by id: two rows of one id cannot be told apart
        raise IntegrityError(
            f"{groups} id(s) occur in more than one base row; rows are dropped by id, so none can be kept.",
            hint="Run `usr verify`; `usr rebuild` rewrites the base from the log.",
        )
    held = pc.is_in(keys, value_set=repeated.column("k"))
    rows = pc.indices_nonzero(held)  # the rows of repeated keys, in file order
    candidates = pa.table({"k": pc.filter(keys, held), "row": rows})
    pick = "min" if keep == "keep-first" else "max"
    kept = candidates.group_by("k", use_threads=False).aggregate([("row", pick)]).column(f"row_{pick}")
    gone = pc.filter(rows, pc.invert(pc.is_in(rows, value_set=kept)))
    dropped = pc.take(base.column("id"), gone)
    return DedupePlan(
        n, groups, rows_dropped, dropped.combine_chunks() if isinstance(dropped, pa.ChunkedArray) else dropped
    )
