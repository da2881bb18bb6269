"""Pure overlay algebra: last-writer-wins merge of overlay parts, and the overlay-merged live view.

No file I/O and no clock: the same parts and base table always give the same result table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .names import DELETED, FLAGS, HIDDEN_PREFIX, ID, PURGED, WRITTEN

TOMBSTONE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("usr__deleted", pa.bool_()),
        pa.field("usr__deleted_at", pa.timestamp("us", tz="UTC")),
        pa.field("usr__deleted_reason", pa.string()),
    ]
)
STATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("usr_state__masked", pa.bool_()),
        pa.field("usr_state__qc_status", pa.string()),
        pa.field("usr_state__split", pa.string()),
        pa.field("usr_state__supersedes", pa.string()),
        pa.field("usr_state__lineage", pa.list_(pa.string())),
    ]
)

# `WRITTEN + c` (bool) marks the rows of a table that actually wrote column c. Merged tables (and so
# compacted parts) carry it where some ids never had c written, so "never written" stays distinct
# from "explicitly null" -- which matters where a materialized base value must show through.
# A part holding the column PURGED (bool, all true) is a purge: every earlier write for its ids is
# forgotten, as if those ids had never been written in this namespace (`materialize --drop-deleted`, ADR 0008).


@dataclass(frozen=True)
class Part:
    """One overlay part: an event's rows for one namespace. `table` has an `id` (string, unique within
    the part) column plus the namespaced columns this part writes (a column absent from a part is not
    written by it; a null cell in a present column IS a write that clears the value)."""

    seq: int
    table: pa.Table


def merge_parts(parts: Sequence[Part]) -> pa.Table:
    """Last-writer-wins per (id, column) in log order (ascending `seq`).

    For column c, an id's value comes from the greatest-seq part that has column c and a row for the id
    (an explicit null included); cells never written are null. A purge part (one with a `PURGED`
    column) first removes its ids' rows from every earlier part and contributes nothing itself.
    Rows: every id in order of first appearance (parts by seq, then row order); columns: `id`, then
    each column in order of first appearance. A column whose type changes takes the latest part's
    type; earlier values are cast to it (ValueError if they cannot be). Raises ValueError on equal
    seqs, a missing/non-string/null `id`, duplicate ids within a part, or a repeated column name
    within a part.
    """
    ordered = sorted(parts, key=lambda part: part.seq)
    if len({part.seq for part in ordered}) != len(ordered):
        raise ValueError("two overlay parts have the same seq")
    ordered = _apply_purges(ordered)
    if not ordered:
        return pa.table({ID: pa.array([], pa.string())})
    if len(ordered) == 1 and merges_to_itself(ordered[0].table.column_names):
        return _merge_one(ordered[0])

    ids = [_part_ids(part) for part in ordered]
    union, codes = _encode(ids)
    part_codes: list[pa.Array] = []
    for k, part in enumerate(ordered):
        these = codes.slice(sum(len(earlier) for earlier in ids[:k]), len(ids[k]))
        if _distinct_count(these, first=k == 0) != len(these):
            raise ValueError(f"overlay part seq {part.seq} has duplicate ids")
        part_codes.append(these)

    writers: dict[str, list[int]] = {}  # column -> indexes (into `ordered`) of the parts that write it
    for k, part in enumerate(ordered):
        names = part.table.column_names
        if len(set(names)) != len(names):
            raise ValueError(f"overlay part seq {part.seq} repeats a column name")
        for name in names:
            if name != ID and not name.startswith(WRITTEN):
                writers.setdefault(name, []).append(k)

    every_code = arange(len(union), codes.type)
    plans: dict[tuple[int, ...], tuple[pa.Array, bool]] = {}  # newest-first writers -> (take indices, in order)
    out: dict[str, pa.Array | pa.ChunkedArray] = {ID: union}
    for name, ks in writers.items():
        newest_first = tuple(reversed(ks))
        newest = ordered[newest_first[0]].table
        if any(WRITTEN + name in ordered[k].table.column_names for k in ks):
            out.update(_merge_masked(ordered, part_codes, every_code, name, newest_first))
            continue
        if newest_first not in plans:
            # index_in gives the first match; in newest-first order that is each id's latest write.
            take = pc.index_in(every_code, value_set=pa.concat_arrays([part_codes[k] for k in newest_first]))
            plans[newest_first] = take, newest.num_rows == len(union) and _is_arange(take)
        take, newest_is_answer = plans[newest_first]
        if newest_is_answer:  # the newest writer holds every id, in union order: no copy needed
            out[name] = newest.column(name)
            continue
        target = newest.schema.field(name).type
        chunks = [
            chunk
            for k in newest_first
            for chunk in _cast(ordered[k].table.column(name), target, f"{name!r} of part seq {ordered[k].seq}").chunks
        ]
        out[name] = pa.chunked_array(chunks, type=target).take(take)
        if take.null_count:
            out[WRITTEN + name] = pc.is_valid(take)
    return pa.table(out).combine_chunks()


def merges_to_itself(names: Sequence[str]) -> bool:
    """Whether a namespace's only part, with these columns, is its own merge (rows and columns as stored,
    `id` first): no part of it is a purge or carries written-cell masks."""
    return not any(name == PURGED or name.startswith(WRITTEN) for name in names)


def _apply_purges(ordered: list[Part]) -> list[Part]:
    """The parts with each purge part applied: its ids' rows removed from every earlier part."""
    if not any(PURGED in part.table.column_names for part in ordered):
        return ordered
    kept: list[Part] = []
    for part in ordered:
        if PURGED not in part.table.column_names:
            kept.append(part)
            continue
        gone = _part_ids(part)
        kept = [Part(p.seq, p.table.filter(pc.invert(pc.is_in(p.table.column(ID), value_set=gone)))) for p in kept]
    return kept


def _merge_one(part: Part) -> pa.Table:
    """`merge_parts` of a single part without WRITTEN masks: the part itself, `id` first (validated the
    same way, without encoding the ids; the columns are the part's, not copied)."""
    ids = _part_ids(part)  # one contiguous array, no nulls
    if not _strictly_increasing(ids) and len(pc.unique(ids)) != len(ids):
        raise ValueError(f"overlay part seq {part.seq} has duplicate ids")
    names = part.table.column_names
    if len(set(names)) != len(names):
        raise ValueError(f"overlay part seq {part.seq} repeats a column name")
    out = {ID: ids, **{name: part.table.column(name) for name in names if name != ID}}
    return pa.table(out)


def _strictly_increasing(ids: pa.Array) -> bool:
    """Whether `ids` is sorted without repeats, so distinct: every projected part is (one comparison
    of neighbours, no hash table); other tables are checked by hashing."""
    if len(ids) < 2:
        return True
    return bool(pc.all(pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py())


def _merge_masked(
    ordered: list[Part], part_codes: list[pa.Array], every_code: pa.Array, name: str, newest_first: tuple[int, ...]
) -> dict[str, pa.Array | pa.ChunkedArray]:
    """Merge column `name` when some writer only wrote it for the rows its WRITTEN mask marks."""
    target = ordered[newest_first[0]].table.schema.field(name).type
    codes: list[pa.Array] = []
    values: list[pa.Array] = []
    for k in newest_first:
        table = ordered[k].table
        column = _cast(table.column(name), target, f"{name!r} of part seq {ordered[k].seq}").combine_chunks()
        these = part_codes[k]
        if WRITTEN + name in table.column_names:
            mask = pc.fill_null(table.column(WRITTEN + name).combine_chunks(), False)
            column, these = column.filter(mask), these.filter(mask)
        codes.append(these)
        values.append(column)
    take = pc.index_in(every_code, value_set=pa.concat_arrays(codes) if codes else pa.array([], every_code.type))
    out: dict[str, pa.Array | pa.ChunkedArray] = {name: pa.chunked_array(values, type=target).take(take)}
    if take.null_count:
        out[WRITTEN + name] = pc.is_valid(take)
    return out


def _column_sources(names: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Overlay column -> its namespace, namespaces in sorted order (ValueError: a column in two of them,
    or a namespace without `id`)."""
    source: dict[str, str] = {}
    for ns in sorted(names):
        if ID not in names[ns]:
            raise ValueError(f"the merged overlay of namespace {ns!r} has no `id` column")
        for name in names[ns]:
            if name == ID or name.startswith(WRITTEN):
                continue
            if name in source:
                raise ValueError(f"column {name!r} appears in namespaces {source[name]!r} and {ns!r}")
            source[name] = ns
    return source


def appended_columns(base_names: Sequence[str], names: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The overlay columns the live view (and so materialize) appends after the base columns, in order:
    namespaces sorted, each in its merged table's column order, skipping columns the base holds."""
    present = set(base_names)
    return tuple(name for name in _column_sources(names) if name not in present)


def live_view(
    base: pa.Table,
    merged: Mapping[str, pa.Table],
    *,
    include_deleted: bool = False,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The overlay-merged view users read (rows in base order; overlay ids not in `base` are ignored).

    Overlay columns are appended after the base columns, namespaces in sorted order, each in its merged
    table's column order; a column already in `base` (materialized) keeps its base position and, per
    row, takes the overlay value wherever the overlay has a row for that id (an explicit null clears),
    else the base value. Rows whose effective `usr__deleted` is true are dropped and `usr__*` columns
    hidden unless `include_deleted`; `usr__deleted` and `usr_state__masked` read unset as False.
    `columns` selects and orders the output: a `usr__*` name without `include_deleted` raises
    ValueError, an unknown name KeyError(name).
    """
    if ID not in base.column_names:
        raise ValueError("the base table has no `id` column")
    base_names = base.column_names
    source = _column_sources({ns: table.column_names for ns, table in merged.items()})
    every = [*base_names, *appended_columns(base_names, {ns: t.column_names for ns, t in merged.items()})]
    known = set(every)

    if columns is None:
        selected = [name for name in every if include_deleted or not name.startswith(HIDDEN_PREFIX)]
    else:
        selected = list(columns)
        for name in selected:
            if name.startswith(HIDDEN_PREFIX) and not include_deleted:
                raise ValueError(f"column {name!r}: tombstone columns require include_deleted=True")
            if name not in known:
                raise KeyError(name)
        if len(set(selected)) != len(selected):
            raise ValueError("columns lists a name twice")

    base_ids = base.column(ID)
    lookups: dict[str, pa.ChunkedArray] = {}

    def lookup(ns: str) -> pa.ChunkedArray:
        """For each base row, the row index of its id in namespace `ns`'s merged table (null: none)."""
        if ns not in lookups:
            overlay_ids = _cast(merged[ns].column(ID), base_ids.type, f"`id` of namespace {ns!r}")
            lookups[ns] = pc.index_in(base_ids, value_set=overlay_ids.combine_chunks())
        return lookups[ns]

    def effective(name: str) -> pa.ChunkedArray:
        ns = source.get(name)
        if ns is None:
            values = base.column(name)
        else:
            rows = lookup(ns)
            values = merged[ns].column(name).take(rows)
            if name in base_names:
                # The overlay wins where it wrote this column for the id (an explicit null clears);
                # elsewhere the materialized base value shows through.
                materialized = _cast(base.column(name), values.type, f"{name!r} of the base table")
                table = merged[ns]
                if WRITTEN + name in table.column_names:
                    written = pc.fill_null(table.column(WRITTEN + name).take(rows), False)
                else:
                    written = pc.is_valid(rows)
                values = pc.if_else(written, values, materialized)
        if name in FLAGS:
            if values.type != pa.bool_():
                raise ValueError(f"column {name!r} must be bool, not {values.type}")
            values = pc.fill_null(values, False)
        return values

    keep = None if include_deleted or DELETED not in known else pc.invert(effective(DELETED))
    if not selected:
        return pa.table({})
    view = pa.table({name: effective(name) for name in selected})
    return view if keep is None else view.filter(keep)


def tombstoned_ids(merged_usr: pa.Table | None) -> pa.Array:
    """Ids whose `usr__deleted` is true in the merged `usr` overlay (an empty string array when None)."""
    if merged_usr is None or DELETED not in merged_usr.column_names:
        return pa.array([], pa.string())
    deleted = pc.fill_null(merged_usr.column(DELETED), False)
    return merged_usr.column(ID).filter(deleted).combine_chunks()


def _part_ids(part: Part) -> pa.Array:
    if ID not in part.table.column_names:
        raise ValueError(f"overlay part seq {part.seq} has no `id` column")
    column = part.table.column(ID)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ValueError(f"overlay part seq {part.seq}: `id` must be a string column, not {column.type}")
    if column.null_count:
        raise ValueError(f"overlay part seq {part.seq} has a null id")
    ids = column.cast(pa.string())
    only: pa.Array = ids.chunk(0) if ids.num_chunks == 1 else ids.combine_chunks()  # no copy if one chunk
    return only


def _encode(ids: list[pa.Array]) -> tuple[pa.Array, pa.Array]:
    """The distinct ids in order of first appearance, and each input row's code (index into them)."""
    encoded = pc.dictionary_encode(pa.chunked_array(ids, type=pa.string()))
    chunks = encoded.chunks
    if not chunks:
        return pa.array([], pa.string()), pa.array([], pa.int32())
    union: pa.Array = chunks[-1].dictionary
    # pyarrow gives every chunk the final dictionary; the memo only grows, so equal lengths mean equal dictionaries.
    if any(len(chunk.dictionary) != len(union) for chunk in chunks):
        whole = pc.dictionary_encode(pa.concat_arrays(ids))
        return whole.dictionary, whole.indices
    return union, pa.concat_arrays([chunk.indices for chunk in chunks])


def _distinct_count(codes: pa.Array, *, first: bool) -> int:
    """How many distinct codes; for the first part, whose codes are 0, 1, ... when distinct, without hashing."""
    if first:
        top = pc.max(codes).as_py()
        return 0 if top is None else int(top) + 1
    return int(pc.count_distinct(codes).as_py())


def arange(n: int, type: pa.DataType) -> pa.Array:
    """0, 1, ..., n-1 as `type` (an integer type)."""
    if n == 0:
        return pa.array([], type)
    result: pa.Array = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, type), n)), pa.scalar(1, type))
    return result


def _is_arange(positions: pa.Array) -> bool:
    """Whether `positions` is exactly 0, 1, ..., len-1 (no nulls)."""
    if positions.null_count:
        return False
    return bool(pc.all(pc.equal(positions, arange(len(positions), positions.type))).as_py() is not False)


def _cast(values: pa.ChunkedArray, target: pa.DataType, what: str) -> pa.ChunkedArray:
    if values.type == target:
        return values
    try:
        cast: pa.ChunkedArray = values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ValueError(f"cannot cast {what} from {values.type} to {target}: {exc}") from exc
    return cast
