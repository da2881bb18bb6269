"""`usr maintenance merge`: which of a source dataset's records join the destination, and in which
columns, by the original's rules (docs/adr/0019). Pure: the caller reads both datasets."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .errors import DuplicateIDError, InvalidInput, SchemaError
from .overlays import arange

MODES = ("require-same", "union")
POLICIES = ("error", "skip", "prefer-src", "prefer-dest")
COERCIONS = ("none", "to-dest")


@dataclass(frozen=True)
class MergeSource:
    """A source dataset read at one version: its live records (tombstoned ones left out, `deleted` of
    them) with every base column, and the live values of each namespace carried along (`id` first)."""

    name: str
    seq: int
    hash: str
    rows: pa.Table
    deleted: int = 0
    carried: dict[str, pa.Table] = field(default_factory=dict)


@dataclass(frozen=True)
class MergePlan:
    """What joins the destination: `added` rows in the destination's columns after the merge (its own
    first, then `columns_added`), the destination ids they replace (prefer-src), and the counts reported."""

    added: pa.Table
    replaced: pa.Array
    columns_added: tuple[str, ...]
    overlap: int
    coercions: tuple[str, ...]
    rows_src: int
    casefold_skipped: int
    duplicates_total: int
    duplicates_skipped: int
    carried: dict[str, pa.Table]
    columns_total: int

    def metrics(self, deleted: int) -> dict[str, Any]:
        """The counts the merge event records (and `MergeResult` reports); `deleted`: the source's
        tombstoned records, left out."""
        return {
            "rows_src": self.rows_src,
            "rows_src_deleted": deleted,
            "casefold_skipped": self.casefold_skipped,
            "duplicates_total": self.duplicates_total,
            "duplicates_skipped": self.duplicates_skipped,
            "duplicates_replaced": len(self.replaced),
            "rows_added": self.added.num_rows,
            "columns_total": self.columns_total,
            "overlapping_columns": self.overlap,
            "columns_added": list(self.columns_added),
            "overlap_coercions": list(self.coercions),
            "carried": {ns: table.num_rows for ns, table in self.carried.items() if table.num_rows},
        }


def check_choice(columns: str, if_duplicate: str, coerce_overlap: str) -> None:
    """The option values, checked before anything is read."""
    if columns not in MODES:
        raise InvalidInput("Choose exactly one of --require-same-columns or --union-columns.")
    if if_duplicate not in POLICIES:
        raise InvalidInput(
            f"Unsupported duplicate policy '{if_duplicate}'.", hint=f"Use one of: {', '.join(POLICIES)}."
        )
    if coerce_overlap not in COERCIONS:
        raise InvalidInput(f"Unsupported --coerce-overlap '{coerce_overlap}'.", hint="Use none or to-dest.")


def casefold_keys(rows: pa.Table) -> pa.Array:
    """`lower(bio_type)|upper(sequence)` per row: the key two records share when they differ only in case
    (sequences are ASCII: every alphabet is)."""
    bio = pc.ascii_lower(rows.column("bio_type").combine_chunks())
    seq = pc.ascii_upper(rows.column("sequence").combine_chunks())
    return pc.binary_join_element_wise(bio, seq, "|")


#: Clears the bit that tells an ASCII lowercase letter from its uppercase one, in each of 8 bytes.
_FOLD = pa.scalar(0xDFDFDFDFDFDFDFDF, pa.uint64())
_MIX = (pa.scalar(0x9E3779B97F4A7C15, pa.uint64()), pa.scalar(0xC2B2AE3D27D4EB4F, pa.uint64()))


def _proxy(rows: pa.Table) -> pa.Array:
    """A 64-bit digest of each row's sequence from its length and its first and last 8 bytes with the case
    bit cleared: equal for sequences equal up to case, rarely equal otherwise (shared primers, say; every
    sequence shorter than 8 of one length), so hashing 64-bit values finds the few candidates whose whole
    keys are then compared."""
    zero = pa.scalar(b"\0" * 8, pa.binary())

    def digest(chunk: pa.Array) -> pa.Array:
        raw = chunk.cast(pa.binary())
        length = pc.binary_length(raw)
        long = pc.greater_equal(length, 8)

        def eight(piece: pa.Array) -> pa.Array:
            return pc.bit_wise_and(pc.if_else(long, piece, zero).cast(pa.binary(8)).view(pa.uint64()), _FOLD)

        head, tail = eight(pc.binary_slice(raw, 0, 8)), eight(pc.binary_slice(raw, -8))
        mixed = pc.bit_wise_xor(head, pc.multiply(tail, _MIX[0]))
        return pc.bit_wise_xor(mixed, pc.multiply(length.cast(pa.uint64()), _MIX[1]))

    column = rows.column("sequence")
    return pa.chunked_array([digest(c) for c in column.chunks], pa.uint64()).combine_chunks()


def held_up_to_case(rows: pa.Table, dest: pa.Table) -> pa.Array:
    """For each of `rows` (`bio_type`, `sequence`), whether `dest` holds a record equal to it up to case:
    the rows whose `_proxy` the other side holds too are compared whole (`casefold_keys`)."""
    if not rows.num_rows or not dest.num_rows:
        return pa.array([False] * rows.num_rows, pa.bool_())
    mine, theirs = _proxy(rows), _proxy(dest)
    maybe = pc.is_in(mine, value_set=theirs)
    picked = pc.indices_nonzero(maybe)
    if not len(picked):
        return maybe
    near = pc.is_in(theirs, value_set=pc.filter(mine, maybe))
    found = pc.is_in(casefold_keys(rows.take(picked)), value_set=casefold_keys(dest.filter(near)))
    return pc.is_in(arange(rows.num_rows, pa.uint64()), value_set=pc.filter(picked, found))


def merged_schema(dest: pa.Schema, src: pa.Schema, columns: str, coerce_overlap: str) -> tuple[pa.Schema, list[str]]:
    """The destination's columns after the merge (its own in order, then the source's new ones) and the
    overlapping columns whose source values are cast to the destination's type."""
    dest_types = {f.name: f.type for f in dest}
    src_types = {f.name: f.type for f in src}
    if columns == "require-same":
        only_dest = [n for n in dest.names if n not in src_types]
        only_src = [n for n in src.names if n not in dest_types]
        differ = [n for n in dest.names if n in src_types and src_types[n] != dest_types[n]]
        if only_dest or only_src or differ:
            said = [
                f"only in dest: {', '.join(only_dest)}" if only_dest else "",
                f"only in src: {', '.join(only_src)}" if only_src else "",
                "types differ: " + ", ".join(f"{n} ({src_types[n]} vs {dest_types[n]})" for n in differ)
                if differ
                else "",
            ]
            raise SchemaError(
                f"--require-same-columns: the columns differ ({'; '.join(s for s in said if s)}).",
                hint="Pass --union-columns to merge the union of both column sets.",
            )
        return dest, []
    coerced = []
    for name in dest.names:
        if name in src_types and src_types[name] != dest_types[name]:
            wanted, found = dest_types[name], src_types[name]
            primitive = not any(pa.types.is_nested(t) or pa.types.is_dictionary(t) for t in (wanted, found))
            if coerce_overlap != "to-dest" or not primitive:
                raise SchemaError(
                    f"Column '{name}' is {found} in src but {wanted} in dest.",
                    hint="Pass --coerce-overlap to-dest to cast src values to the dest type (primitive types only)."
                    if primitive
                    else "Only primitive types can be coerced; re-type one side first.",
                )
            coerced.append(name)
    grown = [pa.field(f.name, f.type) for f in dest] + [
        pa.field(f.name, f.type) for f in src if f.name not in dest_types
    ]
    return pa.schema(grown), coerced


def _conformed(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """`rows` in `schema`'s columns and types (a column the source lacks reads null)."""
    arrays = []
    for f in schema:
        if f.name not in rows.column_names:
            arrays.append(pa.nulls(rows.num_rows, f.type))
            continue
        column = rows.column(f.name)
        if column.type != f.type:
            try:
                column = pc.cast(column, f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"Cannot cast src column '{f.name}' to {f.type}: {exc}") from None
        arrays.append(column)
    return pa.table(arrays, schema=schema)


def plan_merge(
    dest_schema: pa.Schema,
    dest_has: Callable[[pa.Array], pa.Array],
    dest_casefold: pa.Table | None,
    source: MergeSource,
    *,
    columns: str,
    if_duplicate: str,
    coerce_overlap: str,
) -> MergePlan:
    """The merge of `source` into a destination with `dest_schema`, whose ids `dest_has` tests (a boolean
    per id). With `dest_casefold` (the destination's `bio_type` and `sequence`), a source record the destination
    holds up to case is left out before ids are compared, as the original does; then a source id the
    destination holds is an error, left out (`skip`, `prefer-dest`) or replaces it (`prefer-src`)."""
    check_choice(columns, if_duplicate, coerce_overlap)
    schema, coerced = merged_schema(dest_schema, source.rows.schema.remove_metadata(), columns, coerce_overlap)
    rows = source.rows
    casefold_skipped = 0
    # The ids are tested on a second core while the case-insensitive check runs (each source id's answer
    # is its own, so the rows the check leaves out just drop theirs).
    with ThreadPoolExecutor(1, thread_name_prefix="usr-merge") as pool:
        every = rows.column("id").combine_chunks()
        asked = pool.submit(dest_has, every) if len(every) else None
        held = None
        if dest_casefold is not None and rows.num_rows and dest_casefold.num_rows:
            held = held_up_to_case(rows, dest_casefold)
            casefold_skipped = int(pc.sum(held).as_py() or 0)
        repeated = asked.result() if asked is not None else pa.array([], pa.bool_())
    if held is not None and casefold_skipped:
        kept_rows = pc.invert(held)
        rows, repeated = rows.filter(kept_rows), repeated.filter(kept_rows)
    ids = rows.column("id").combine_chunks()
    duplicates = int(pc.sum(repeated).as_py() or 0)
    replaced = pa.array([], pa.string())
    if duplicates and if_duplicate == "error":
        sample = pc.filter(ids, repeated).slice(0, 5).to_pylist()
        raise DuplicateIDError(
            f"{duplicates} duplicate id(s) present in src (e.g. {', '.join(sample)}).",
            hint="Pass --if-duplicate skip|prefer-dest to keep the dest rows, or prefer-src to replace them.",
        )
    if duplicates and if_duplicate == "prefer-src":
        replaced = pc.filter(ids, repeated)
        replaced = replaced.take(pc.sort_indices(replaced))
    elif duplicates:
        rows = rows.filter(pc.invert(repeated))
    added = _conformed(rows, schema)
    kept = added.column("id")
    carried = {}
    for ns, table in source.carried.items():
        values = [c for c in table.column_names if c != "id"]
        on = pc.is_in(table.column("id"), value_set=kept)
        if values:  # a record with no value in the namespace carries nothing
            some = pc.is_valid(table.column(values[0]))
            for name in values[1:]:
                some = pc.or_(some, pc.is_valid(table.column(name)))
            on = pc.and_(on, some)
        chosen = table.filter(on)
        carried[ns] = chosen.take(pc.sort_indices(chosen.column("id")))
    dest_names = set(dest_schema.names)
    return MergePlan(
        added=added,
        replaced=replaced,
        columns_added=tuple(n for n in schema.names if n not in dest_names),
        overlap=sum(1 for n in source.rows.column_names if n in dest_names),
        coercions=tuple(coerced),
        rows_src=source.rows.num_rows,
        casefold_skipped=casefold_skipped,
        duplicates_total=duplicates,
        duplicates_skipped=0 if if_duplicate == "prefer-src" else duplicates,
        carried=carried,
        columns_total=len(schema),
    )
