"""`usr maintenance overlay-project`: a namespace's live values in one dataset, lined up with another
dataset's records by a join column (pure: the caller reads both views and attaches the result)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .errors import InvalidInput, NotFound, SchemaError


@dataclass(frozen=True)
class Projected:
    """The overlay rows for the destination (`id` and the namespace's columns) and the counts reported."""

    table: pa.Table
    matched: int
    missing: int
    dest_rows: int
    missing_sample: list[str]


def namespace_columns(namespace: str, available: list[str], wanted: list[str] | None) -> list[str]:
    """The `<namespace>__*` columns to copy: `wanted` (bare field names are prefixed), else every one the
    source shows."""
    prefix = f"{namespace}__"
    if not wanted:
        found = [c for c in available if c.startswith(prefix)]
        if not found:
            raise NotFound(f"The source has no '{namespace}' columns.", hint="`usr cols SRC` lists its columns.")
        return found
    columns = [c if c.startswith(prefix) else prefix + c for c in wanted]
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise NotFound(f"Not in the source: {', '.join(unknown)}.", hint="`usr cols SRC` lists its columns.")
    return columns


def project(src: pa.Table, src_join: str, dest: pa.Table, dest_join: str, columns: list[str]) -> Projected:
    """Line `src` (its `src_join` column and `columns`) up with `dest` (`id` and `dest_join`): each
    destination record takes the values of the source row whose join value equals its own. Source join
    values must be unique; a destination record without a match is reported (the caller decides)."""
    keys = src.column(src_join)
    if keys.null_count:
        raise SchemaError(f"{keys.null_count} source row(s) have no '{src_join}' value to join on.")
    if pc.count_distinct(keys).as_py() != len(keys):
        counted = pa.table({"k": keys}).group_by("k").aggregate([("k", "count")])
        repeated = counted.filter(pc.greater(counted.column("k_count"), 1))
        shown = ", ".join(str(v)[:24] for v in repeated.column("k").slice(0, 3).to_pylist())
        raise SchemaError(
            f"Source join values must be unique: {repeated.num_rows} '{src_join}' value(s) repeat ({shown}).",
            hint="Join on a column whose values name one source record each (id, sequence).",
        )
    wanted = dest.column(dest_join)
    if wanted.type != keys.type:
        try:
            wanted = wanted.cast(keys.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InvalidInput(
                f"Cannot join dest '{dest_join}' ({wanted.type}) with src '{src_join}' ({keys.type})."
            ) from None
    at = pc.index_in(wanted, value_set=keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys)
    found = pc.is_valid(at)
    matched = int(pc.sum(found).as_py() or 0)
    missing_ids = pc.filter(dest.column("id"), pc.invert(found))
    rows = pc.filter(at, found)
    table = pa.table({"id": pc.filter(dest.column("id"), found), **{c: pc.take(src.column(c), rows) for c in columns}})
    sample = [str(v) for v in missing_ids.slice(0, 5).to_pylist()]
    return Projected(table, matched, dest.num_rows - matched, dest.num_rows, sample)
