"""The fast read layer: the overlay-merged live view streamed, sliced, looked up by id, grepped and profiled,
reading only the row groups, columns and overlay parts a read needs; plus reads of plain Parquet targets.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .codec import watermark_of
from .errors import IntegrityError, InvalidInput, NotFound
from .fileio import locked
from .names import (
    DELETED,
    FLAGS,
    HIDDEN_PREFIX,
    ID,
    LAYOUT_FILE,
    LOCK_FILE,
    PURGED,
    RECORDS_FILE,
    TOMBSTONE_NS,
    WRITTEN,
)
from .projectors import EMPTY_LAYOUT, Watermark
from .results import ColumnInfo, ColumnProfile
from .storage import read_layout

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .idindex import Locate
    from .projectors import PartInfo, Payload
    from .recovery import ReadHead

#: Files with at most this many rows are read whole (and filtered) instead of searched row group by row group.
_SMALL_ROWS = 1 << 16
_ATTEMPTS = 3  # re-plans when a writer publishes while a read opens its files


@dataclass
class _Source:
    """One Parquet input of the view (records.parquet or an overlay part), opened once.

    The file is memory-mapped when planned, so a writer replacing (renaming over) or unlinking it
    afterwards does not change what this read sees. A part whose file is missing or stale is
    regenerated from the log instead and held in `table`.
    """

    mark: Watermark | None  # the event it reflects (None: an unchecked base read as a last resort)
    schema: pa.Schema  # Arrow schema without metadata
    num_rows: int
    file: pa.NativeFile | None = None
    metadata: Any = None  # pq.FileMetaData of `file`
    table: pa.Table | None = None
    _whole: dict[tuple[str, ...], pa.Table] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return self.mark.seq if self.mark is not None else 0

    def reader(self, *, streaming: bool = True) -> pq.ParquetFile:
        """A new reader over the mapped file (one per thread; `streaming` decodes only the pages read)."""
        if streaming:  # (no buffered stream: on a memory map it serializes threads)
            return pq.ParquetFile(self.file, metadata=self.metadata, pre_buffer=False)
        return pq.ParquetFile(self.file, metadata=self.metadata)

    def columns(self, wanted: Callable[[str], bool]) -> list[str]:
        """`id` plus this source's columns that `wanted` accepts (in file order)."""
        return [ID, *(c for c in self.schema.names if c != ID and wanted(c))]

    def whole(self, columns: list[str]) -> pa.Table:
        """Every row of `columns` (cached per column list)."""
        key = tuple(columns)
        if key not in self._whole:
            if self.table is not None:
                self._whole[key] = self.table.select(columns)
            else:
                self._whole[key] = _strip(self.reader(streaming=False).read(columns=columns))
        return self._whole[key]

    def groups(self, ids: Sequence[str] | None = None) -> list[int]:
        """Non-empty row groups; with `ids` (sorted), only those whose `id` min/max statistics admit
        one of them (overlay parts are written sorted by id, so a lookup reads one group per id)."""
        meta = self.metadata
        found = [k for k in range(meta.num_row_groups) if meta.row_group(k).num_rows]
        leaf = next((i for i in range(meta.num_columns) if meta.schema.column(i).path == ID), None)
        if ids is None or leaf is None:
            return found
        kept = []
        for k in found:
            stats = meta.row_group(k).column(leaf).statistics
            if stats is None or not stats.has_min_max:
                kept.append(k)
                continue
            low, high = stats.min, stats.max
            at = bisect_left(ids, low)
            if at < len(ids) and ids[at] <= high:
                kept.append(k)
        return kept

    def searchable(self) -> bool:
        """Whether lookups by id search row group by row group (else the whole file is read and filtered)."""
        return self.table is None and self.num_rows > _SMALL_ROWS


@dataclass
class _Plan:
    """A caught-up prefix of the dataset, opened: the base, the live overlay parts, and the full view schema."""

    base: _Source | None  # None: nothing projected yet (no rows, no columns)
    parts: dict[str, list[_Source]]  # live namespace -> its parts, in seq order
    full: pa.Schema  # the view's every column (tombstone columns included)
    source: dict[str, str]  # overlay column -> namespace
    base_names: frozenset[str]

    @property
    def simple(self) -> bool:
        """No overlays and no flag columns: the view is the base itself (no overlay algebra needed)."""
        return not self.parts and not any(f in self.base_names for f in FLAGS)

    @property
    def rows(self) -> int:
        return self.base.num_rows if self.base is not None else 0


@dataclass(frozen=True)
class _Selection:
    """Which view columns a read returns, and what it must read to compute them."""

    names: list[str]
    filtering: bool  # tombstoned rows must be dropped
    schema: pa.Schema
    base_columns: list[str]
    part_columns: dict[str, set[str]]  # namespace -> view columns needed from it

    def part_reads(self, plan: _Plan) -> list[tuple[str, _Source, list[str]]]:
        """(namespace, part, columns to read) for every part of every namespace needed."""
        out = []
        for ns, wanted in self.part_columns.items():
            for src in plan.parts.get(ns, []):
                out.append((ns, src, src.columns(_needed(wanted))))
        return out


def _needed(wanted: set[str]) -> Callable[[str], bool]:
    """Whether a part column must be read to merge the view columns `wanted` (values, masks, purges)."""
    return lambda name: (
        name in wanted or name == PURGED or (name.startswith(WRITTEN) and name[len(WRITTEN) :] in wanted)
    )


def _plan(ds: ReadHead) -> _Plan:
    """Catch the projections up and open them (retrying when a writer publishes meanwhile)."""
    plan: _Plan | None = None
    for _ in range(_ATTEMPTS):
        mark, _, _ = ds.fresh()
        doc = read_layout(ds.dir / LAYOUT_FILE)
        base = _open_file(ds.records_path, mark) if mark is not None else None
        if mark is not None and base is None:
            continue  # records.parquet was replaced after the catch-up: look again
        plan = _open_parts(ds, doc, base)
        again = read_layout(ds.dir / LAYOUT_FILE)
        if (again[1] if again else None) == (doc[1] if doc else None):
            return plan
    if plan is None:  # records.parquet kept changing: read it with no writer at work (a shared lock)
        with locked(ds.dir / LOCK_FILE, shared=True):
            base = _open_file(ds.records_path, None)
            if base is None and ds.records_path.exists():  # never read a file that does not open as empty
                raise OSError(f"{RECORDS_FILE} does not open as a Parquet file")
            plan = _open_parts(ds, read_layout(ds.dir / LAYOUT_FILE), base)
    return plan


def _open_file(path: Path, mark: Watermark | None) -> _Source | None:
    """Map a projection file; None when it is missing, unreadable or (with `mark`) stamped otherwise."""
    try:
        mapped = pa.memory_map(str(path))
        meta = pq.ParquetFile(mapped).metadata
    except (OSError, pa.ArrowInvalid):
        return None
    if mark is not None and watermark_of(meta.metadata) != mark:
        return None
    schema = meta.schema.to_arrow_schema().remove_metadata()
    return _Source(mark=mark, schema=schema, num_rows=meta.num_rows, file=mapped, metadata=meta)


def _open_parts(ds: ReadHead, doc: tuple[Any, Watermark] | None, base: _Source | None) -> _Plan:
    layout = doc[0] if doc is not None else EMPTY_LAYOUT
    parts: dict[str, list[_Source]] = {}
    base_seq = base.seq if base is not None else 0
    for ns in sorted(layout.live):
        # Parts a materialize already folded into this base are skipped: the view is the same without them.
        infos = layout.unfolded(ns, base_seq)
        if infos:
            parts[ns] = [_open_part(ds, info) for info in infos]
    base_schema = base.schema if base is not None else pa.schema([])
    names = frozenset(base_schema.names)
    if not parts:
        full = pa.schema([pa.field(f.name, f.type) for f in base_schema])
        if any(f in names for f in FLAGS):
            full = _overlay_schema(base_schema, {})[0]
        return _Plan(base=base, parts={}, full=full, source={}, base_names=names)
    full, source = _overlay_schema(base_schema, parts)
    return _Plan(base=base, parts=parts, full=full, source=source, base_names=names)


def _open_part(ds: ReadHead, info: PartInfo) -> _Source:
    src = _open_file(ds.dir / info.file, info.mark)
    if src is not None:
        return src
    table = ds.part_table(info).replace_schema_metadata(None)
    return _Source(mark=info.mark, schema=table.schema, num_rows=table.num_rows, table=table)


def _overlay_schema(base: pa.Schema, parts: dict[str, list[_Source]]) -> tuple[pa.Schema, dict[str, str]]:
    """The full view schema, computed by the view algebra itself on empty tables (exact by construction)."""
    from .overlays import Part, live_view, merge_parts

    try:
        merged = {ns: merge_parts([Part(s.seq, s.schema.empty_table()) for s in srcs]) for ns, srcs in parts.items()}
        full = live_view(base.empty_table(), merged, include_deleted=True).schema
    except (ValueError, KeyError) as exc:
        raise IntegrityError(f"the overlay parts do not form a view: {exc}") from None
    source = {
        name: ns
        for ns, table in merged.items()
        for name in table.column_names
        if name != ID and not name.startswith(WRITTEN)
    }
    return full, source


def _select(plan: _Plan, columns: Sequence[str] | None, include_deleted: bool) -> _Selection:
    """Validate `columns` against the view (None or empty: every visible column)."""
    every = plan.full.names
    visible = [c for c in every if include_deleted or not c.startswith(HIDDEN_PREFIX)]
    if columns is None or len(columns) == 0:
        names = visible
    else:
        names = [str(c) for c in columns]
        hidden = [c for c in names if c.startswith(HIDDEN_PREFIX)]
        if hidden and not include_deleted:
            raise InvalidInput(
                f"Tombstone column(s) {', '.join(hidden)} require --include-deleted.",
                hint="Pass --include-deleted (include_deleted=True) to see tombstoned rows and the usr__ columns.",
            )
        unknown = [c for c in names if c not in every]
        if unknown:
            raise InvalidInput(
                f"Unknown column(s): {', '.join(unknown)}.", hint=f"Columns: {', '.join(visible) or '(none)'}"
            )
        twice = sorted({c for c in names if names.count(c) > 1})
        if twice:
            raise InvalidInput(f"Column(s) listed twice: {', '.join(twice)}.")
    filtering = not include_deleted and DELETED in every
    computed = [*names, *([DELETED] if filtering else [])]
    base_columns = list(dict.fromkeys([ID, *(c for c in computed if c in plan.base_names)]))
    part_columns: dict[str, set[str]] = {}
    for c in computed:
        if c in plan.source:
            part_columns.setdefault(plan.source[c], set()).add(c)
    schema = pa.schema([plan.full.field(c) for c in names])
    return _Selection(names, filtering, schema, base_columns, part_columns)


def _view_of(plan: _Plan, sel: _Selection, base: pa.Table, merged: dict[str, pa.Table]) -> pa.Table:
    """The selected view columns of `base`'s rows (every part restricted consistently, or not at all)."""
    if plan.simple:
        return _conform(base.select(sel.names), sel.schema)
    import pyarrow.compute as pc

    from .overlays import live_view

    internal = list(dict.fromkeys([*sel.names, ID, *([DELETED] if sel.filtering else [])]))
    view = live_view(base, merged, include_deleted=True, columns=internal)
    if sel.filtering:
        view = view.filter(pc.invert(view.column(DELETED)))
    return _conform(view.select(sel.names), sel.schema)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema` (same data; a type mismatch is a bug and raises)."""
    return pa.Table.from_arrays(table.columns, schema=schema)


def _merge(reads: list[tuple[str, _Source, list[str]]], tables: Sequence[pa.Table]) -> dict[str, pa.Table]:
    """Per namespace of `reads` (from `_Selection.part_reads`), the merge of its parts' `tables`."""
    from .overlays import Part, merge_parts

    parts: dict[str, list[Part]] = {}
    for (ns, src, _), table in zip(reads, tables, strict=True):
        parts.setdefault(ns, []).append(Part(src.seq, table))
    try:
        return {ns: merge_parts(these) for ns, these in parts.items()}
    except ValueError as exc:  # a column's older values the type a newer part gave it cannot hold
        raise IntegrityError(
            f"the overlay parts do not form a view: {exc}",
            hint="A namespace's column changed type with values the new type cannot hold: register the old "
            "type back, or attach the old values again in the new type.",
        ) from None


def _strip(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None) if table.num_columns else table


def _pool_size() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _lookup(reads: list[tuple[_Source, list[str]]], ids: pa.Array) -> list[pa.Table]:
    """For each (source, columns): its rows whose id is in `ids` (distinct), in file order.

    Small files are read whole and filtered. Large ones are searched row group by row group on a
    thread pool: the id column first, then, where it holds hits, the other columns up to the last
    hit only. A file stops being searched once every id is found in it (ids are unique within a
    projection file). Value reads go before further id searches, and the files are searched
    side by side (round robin), so a lookup ends as soon as each file has given up its ids.
    """
    import pyarrow.compute as pc

    out: list[pa.Table | None] = [None] * len(reads)
    searches: list[int] = []
    for k, (src, columns) in enumerate(reads):
        if src.searchable():
            searches.append(k)
        else:
            whole = src.whole(columns)
            out[k] = whole.filter(pc.is_in(whole.column(ID), value_set=ids))
    if searches:
        hits = _search([reads[k] for k in searches], ids)
        for k, table in zip(searches, hits, strict=True):
            out[k] = table
    assert all(t is not None for t in out)  # every source was filtered whole or searched
    return [t for t in out if t is not None]


def _search(reads: list[tuple[_Source, list[str]]], ids: pa.Array) -> list[pa.Table]:
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    wanted = sorted(ids.to_pylist())
    groups = [src.groups(wanted) for src, _ in reads]
    # Round robin over the files: (file, group) id searches in the order they are started.
    queue = [
        (k, gs[step])
        for step in range(max(map(len, groups), default=0))
        for k, gs in enumerate(groups)
        if step < len(gs)
    ]
    queue.reverse()  # popped from the end
    found = [0] * len(reads)
    ids_of: dict[tuple[int, int], pa.Array] = {}
    values: list[tuple[int, int, pa.Array]] = []  # value reads to start before any further search
    pieces: dict[tuple[int, int], pa.Table] = {}
    running: dict[Future[Any], tuple[str, int, int]] = {}
    workers = _pool_size()
    with ThreadPoolExecutor(workers) as pool:
        while True:
            while len(running) < workers and (values or queue):
                if values:
                    k, g, positions = values.pop(0)
                    src, columns = reads[k]
                    others = [c for c in columns if c != ID]  # the ids are already read
                    running[pool.submit(_group_values, src, g, positions, others)] = ("values", k, g)
                    continue
                k, g = queue.pop()
                if found[k] < len(ids):
                    running[pool.submit(_group_ids, reads[k][0], g, ids)] = ("ids", k, g)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                kind, k, g = running.pop(future)
                result = future.result()
                if kind == "values":
                    pieces[(k, g)] = result
                    continue
                if result is None:
                    continue
                positions, matched = result
                found[k] += len(positions)
                ids_of[(k, g)] = matched
                src, columns = reads[k]
                if any(c != ID for c in columns):
                    values.append((k, g, positions))
                else:
                    pieces[(k, g)] = pa.table({ID: matched}, schema=pa.schema([src.schema.field(ID)]))
    out = []
    for k, (src, columns) in enumerate(reads):
        parts = []
        for g in groups[k]:
            if (k, g) in pieces:
                table = pieces[(k, g)]
                if ID in columns and ID not in table.column_names:
                    table = table.append_column(src.schema.field(ID), ids_of[(k, g)])
                parts.append(table.select(columns))
        out.append(pa.concat_tables(parts) if parts else _empty(src, columns))
    return out


def _empty(src: _Source, columns: list[str]) -> pa.Table:
    return pa.schema([src.schema.field(c) for c in columns]).empty_table()


def _group_ids(src: _Source, group: int, ids: pa.Array) -> tuple[pa.Array, pa.Array] | None:
    """(positions, ids) of the rows of row group `group` whose id is in `ids` (None: no such row)."""
    import pyarrow.compute as pc

    id_column = src.reader().read_row_group(group, columns=[ID]).column(0)
    if len(ids) == 1:  # one id (`get ID`): a plain compare, no hash table
        position = pc.index(id_column, ids[0]).as_py()
        positions = pa.array([] if position < 0 else [position], pa.int64())
    else:
        positions = pc.indices_nonzero(pc.is_in(id_column, value_set=ids))
    if not len(positions):
        return None
    return positions, id_column.take(positions).combine_chunks()


def _group_values(src: _Source, group: int, positions: pa.Array, columns: list[str]) -> pa.Table:
    """`columns` of row group `group` at `positions` (ascending): only the pages up to the last
    position are decoded."""
    last = positions[-1].as_py()
    batches, got = [], 0
    for batch in src.reader().iter_batches(batch_size=last + 1, row_groups=[group], columns=columns):
        batches.append(batch)
        got += batch.num_rows
        if got > last:
            break
    schema = pa.schema([src.schema.field(c) for c in columns])
    return pa.Table.from_batches(batches).select(columns).take(positions).cast(schema)


def _indexed(ds: ReadHead, src: _Source, columns: list[str], ids: pa.Array) -> pa.Table | None:
    """The rows of `src` (records.parquet) whose id is in `ids` (distinct), in file order, found through
    the id index: only the row groups holding them are read, up to their last hit. None: no index
    for this base (missing, stale or unreadable), so the caller searches the ids instead."""
    import pyarrow.compute as pc

    from .idindex import IdIndex

    if src.mark is None or src.metadata is None:
        return None
    index = IdIndex.open(ds.dir, src.mark, src.num_rows)
    if index is None:
        return None
    starts = [0]
    for k in range(src.metadata.num_row_groups):
        starts.append(starts[-1] + src.metadata.row_group(k).num_rows)
    hits: dict[int, set[int]] = {}  # row group -> positions of candidate rows
    for record_id in ids.to_pylist():
        for row in index.candidates(record_id):
            group = bisect_right(starts, row) - 1
            hits.setdefault(group, set()).add(row - starts[group])
    wanted = list(dict.fromkeys([ID, *columns]))

    def read(item: tuple[int, set[int]]) -> pa.Table:
        group, positions = item
        return _group_values(src, group, pa.array(sorted(positions), pa.int64()), wanted)

    groups = sorted(hits.items())
    if len(groups) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(_pool_size()) as pool:
            pieces = list(pool.map(read, groups))
    else:
        pieces = [read(item) for item in groups]
    table = pa.concat_tables(pieces) if pieces else _empty(src, wanted)
    # Keys are id prefixes: a candidate whose full id differs is dropped here.
    return table.filter(pc.is_in(table.column(ID), value_set=ids)).select(columns)


def _restricted(plan: _Plan, sel: _Selection, ids: pa.Array) -> dict[str, pa.Table]:
    """Every needed namespace merged from its parts restricted to `ids` (equal, for those ids, to the full merge)."""
    reads = sel.part_reads(plan)
    if not reads:
        return {}
    return _merge(reads, _lookup([(src, cols) for _, src, cols in reads], ids))


def view_schema(ds: ReadHead, columns: Sequence[str] | None = None, include_deleted: bool = False) -> pa.Schema:
    """The schema of every batch `scan` yields (and of `head`, `get`, `view` results) for these arguments."""
    plan = _plan(ds)
    return _select(plan, columns, include_deleted).schema


def scan_with_schema(
    ds: ReadHead, *, columns: Sequence[str] | None = None, include_deleted: bool = False, batch_size: int = 65536
) -> tuple[pa.Schema, Iterator[pa.RecordBatch], dict[str, str]]:
    """From one plan (one catch-up, one consistent set of files): the schema every batch has, the batches
    (see `scan`), and the base file's `usr:` metadata (empty before the first import)."""
    if batch_size < 1:
        raise InvalidInput("batch_size must be >= 1.")
    plan = _plan(ds)
    sel = _select(plan, columns, include_deleted)
    stored = plan.base.metadata.metadata or {} if plan.base is not None else {}
    metadata = {k.decode(): v.decode() for k, v in stored.items() if k.startswith(b"usr:")}
    return sel.schema, _scan(plan, sel, batch_size, ds.dir), metadata


def scan(
    ds: ReadHead, *, columns: Sequence[str] | None = None, include_deleted: bool = False, batch_size: int = 65536
) -> Iterator[pa.RecordBatch]:
    """The live view as record batches in base order, all with `view_schema(...)`; empty batches are skipped.

    Memory stays bounded by a batch plus the merged overlays of the namespaces the columns need
    (only those columns of their parts) and the base `id` column while the overlays are aligned.
    Arguments are checked (and the files opened) before the first batch is asked for.
    """
    return scan_with_schema(ds, columns=columns, include_deleted=include_deleted, batch_size=batch_size)[1]


def _scan(plan: _Plan, sel: _Selection, batch_size: int, directory: Path) -> Iterator[pa.RecordBatch]:
    if plan.base is None or plan.rows == 0:
        return
    reader = plan.base.reader(streaming=False)
    if plan.simple:
        for batch in reader.iter_batches(batch_size=batch_size, columns=sel.names):
            yield pa.RecordBatch.from_arrays(batch.select(sel.names).columns, schema=sel.schema)
        return
    from .idindex import BASE_ROW, InBaseOrder
    from .storage import SortedRuns

    sources = _overlay_rows(sel.part_reads(plan))
    runs = {ns: SortedRuns(directory, key=BASE_ROW) for ns in sources}
    try:
        lined: dict[str, InBaseOrder] = {}
        if sources:
            locate = _locate(plan, directory)
            lined = {ns: InBaseOrder.spill(rows, locate, runs[ns]) for ns, rows in sources.items()}
            del locate
        del sources
        offset = 0
        for batch in reader.iter_batches(batch_size=batch_size, columns=sel.base_columns):
            n = batch.num_rows
            here = {ns: spilled.rows(offset, n, batch.column(ID)) for ns, spilled in lined.items()}
            offset += n
            view = _view_of(plan, sel, pa.Table.from_batches([batch]), here)
            if view.num_rows:
                yield pa.RecordBatch.from_arrays([c.combine_chunks() for c in view.columns], schema=sel.schema)
    finally:
        for spilled in runs.values():
            spilled.discard()


def _overlay_rows(reads: list[tuple[str, _Source, list[str]]]) -> dict[str, Payload]:
    """Each needed namespace's merged rows: a single part file's own rows, read a row group at a time when
    they are spilled, else the merge of its parts (held)."""
    from .overlays import merges_to_itself
    from .storage import ParquetRows

    by_namespace: dict[str, list[tuple[_Source, list[str]]]] = {}
    for ns, src, columns in reads:
        by_namespace.setdefault(ns, []).append((src, columns))
    out: dict[str, Payload] = {}
    merging = []
    for ns, parts in by_namespace.items():
        src, columns = parts[0]
        if len(parts) == 1 and src.file is not None and src.table is None and merges_to_itself(columns):
            out[ns] = ParquetRows(src.file, columns)
        else:
            merging += [(ns, part, cols) for part, cols in parts]
    if merging:
        out.update(_merge(merging, [src.whole(cols) for _, src, cols in merging]))
        for _, src, _ in merging:
            src._whole.clear()  # the merged tables are all that is kept
    return out


def _locate(plan: _Plan, directory: Path) -> Locate:
    """How ids find their base rows: through the id index where it is current, else one hash lookup in
    the base's ids (read whole)."""
    from .idindex import IdIndex, looked_up

    assert plan.base is not None
    src = plan.base
    index = IdIndex.open(directory, src.mark, src.num_rows) if src.mark is not None else None
    if index is not None:
        return index.pairs
    return looked_up(src.reader(streaming=False).read(columns=[ID]).column(0))


def head(ds: ReadHead, n: int = 10, *, columns: Sequence[str] | None = None, include_deleted: bool = False) -> pa.Table:
    """The first `n` rows of the live view: only the first base rows are read, and every overlay part is
    searched for just their ids."""
    if n < 0:
        raise InvalidInput("head row count must be >= 0.")
    plan = _plan(ds)
    return _head(plan, _select(plan, columns, include_deleted), n)


def _head(plan: _Plan, sel: _Selection, n: int) -> pa.Table:
    if n == 0 or plan.base is None or plan.rows == 0:
        return sel.schema.empty_table()
    reader = plan.base.reader()
    if plan.simple:
        batches, got = [], 0
        for batch in reader.iter_batches(batch_size=n, columns=sel.names):
            batches.append(batch.slice(0, n - got))
            got += batches[-1].num_rows
            if got >= n:
                break
        return _conform(pa.Table.from_batches(batches).select(sel.names), sel.schema)
    base = _first_visible(plan, sel, reader, n)
    merged = _restricted(plan, sel, base.column(ID).combine_chunks())
    return _view_of(plan, sel, base, merged).slice(0, n)


def _first_visible(plan: _Plan, sel: _Selection, reader: pq.ParquetFile, n: int) -> pa.Table:
    """The shortest prefix of the base (its `sel.base_columns`) holding `n` rows visible to `sel`."""
    import pyarrow.compute as pc

    tomb = _select(plan, [DELETED], True) if sel.filtering else None
    pieces: list[pa.Table] = []
    visible = 0
    for batch in reader.iter_batches(batch_size=max(n, 64), columns=sel.base_columns):
        table = pa.Table.from_batches([batch])
        if tomb is None:
            pieces.append(table.slice(0, n - visible))
            visible += pieces[-1].num_rows
        else:
            merged = _restricted(plan, tomb, table.column(ID).combine_chunks())
            dead = _view_of(plan, tomb, table.select(tomb.base_columns), merged)
            alive = pc.invert(dead.column(DELETED))
            counts = pc.cumulative_sum(alive.cast(pa.int64()))
            if visible + counts[-1].as_py() >= n:
                cut = pc.index(counts, n - visible).as_py()  # the position of the n-th visible row
                pieces.append(table.slice(0, cut + 1))
                visible = n
            else:
                pieces.append(table)
                visible += counts[-1].as_py()
        if visible >= n:
            break
    return pa.concat_tables(pieces)


def get(
    ds: ReadHead,
    ids: str | Iterable[str],
    *,
    columns: Sequence[str] | None = None,
    include_deleted: bool = False,
    allow_missing: bool = False,
) -> pa.Table:
    """The view rows of `ids`, in request order (an id asked twice comes twice); with `allow_missing`,
    ids not in the dataset are left out instead of raising NotFound."""
    import pyarrow.compute as pc

    wanted = [ids.strip()] if isinstance(ids, str) else [str(i).strip() for i in ids]
    plan = _plan(ds)
    sel = _select(plan, columns, include_deleted)
    if not wanted or (plan.base is None and allow_missing):
        return sel.schema.empty_table()
    distinct = pa.array(list(dict.fromkeys(wanted)), pa.string())
    if plan.base is None:
        raise NotFound(f"{len(distinct)} id(s) not found in dataset {ds.name} (it has no rows).")
    # Computed with `id` (to put rows in request order) and `usr__deleted` (to tell a tombstoned id apart).
    internal = _select(plan, list(dict.fromkeys([*sel.names, ID, *([DELETED] if sel.filtering else [])])), True)
    reads = internal.part_reads(plan)
    base = _indexed(ds, plan.base, internal.base_columns, distinct) if plan.base.searchable() else None
    if base is None:  # no index: the base and every part are searched together (one pool)
        tables = _lookup([(plan.base, internal.base_columns), *((src, cols) for _, src, cols in reads)], distinct)
        base = tables[0]
    else:
        tables = [base, *(_lookup([(src, cols) for _, src, cols in reads], distinct) if reads else [])]
    if base.num_rows < len(distinct) and not allow_missing:
        absent = pc.filter(distinct, pc.invert(pc.is_in(distinct, value_set=base.column(ID)))).to_pylist()
        sample = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise NotFound(
            f"{len(absent)} id(s) not found in dataset {ds.name}: {sample}",
            hint=f"`usr head {ds.name}` shows some ids; `usr grep` finds records by sequence.",
        )
    merged = _merge(reads, tables[1:]) if reads else {}
    rows = _view_of(plan, internal, base, merged)
    if sel.filtering:
        dead = rows.filter(rows.column(DELETED)).column(ID).to_pylist()
        if dead:
            sample = ", ".join(dead[:5]) + (", ..." if len(dead) > 5 else "")
            raise NotFound(
                f"{len(dead)} id(s) are tombstoned in dataset {ds.name}: {sample}",
                hint="The record is deleted; pass --include-deleted (include_deleted=True) to read it.",
            )
    order = pc.index_in(pa.array(wanted, pa.string()), value_set=rows.column(ID))
    return _conform(rows.take(order.drop_null()).select(sel.names), sel.schema)


def dataset_cell(ds: ReadHead, row: int, column: str, *, include_deleted: bool = False) -> Any:
    """The Python value at 0-based `row` of the live view (base order, tombstoned rows skipped
    unless `include_deleted`) in `column`."""
    if row < 0:
        raise InvalidInput(f"Row {row} is negative; rows count from 0.")
    table = head(ds, row + 1, columns=[column], include_deleted=include_deleted)
    if table.num_rows <= row:
        raise InvalidInput(f"Row {row} is out of range: the view has {table.num_rows} row(s).")
    return table.column(0)[row].as_py()


def grep(ds: ReadHead, pattern: str, *, limit: int | None = 20, include_deleted: bool = False) -> pa.Table:
    """Rows (id, sequence, length) whose sequence matches `pattern` (RE2 syntax, case-insensitive), base order."""
    import pyarrow.compute as pc

    if limit is not None and limit < 0:
        raise InvalidInput("grep --limit must be >= 0.")
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern, ignore_case=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"Invalid regular expression {pattern!r}: {exc}", hint="Patterns use RE2 syntax.") from None
    plan = _plan(ds)
    sel = _select(plan, ["id", "sequence", "length"], include_deleted)
    if limit == 0 or plan.base is None or plan.rows == 0:
        return sel.schema.empty_table()
    dead: pa.Array | None = None
    if sel.filtering:
        if DELETED in plan.base_names:  # never written by usr_es (tombstones are not materialized)
            everything = view(ds, columns=["id", "sequence", "length"], include_deleted=include_deleted)
            hits = everything.filter(pc.match_substring_regex(everything.column("sequence"), pattern, ignore_case=True))
            return hits if limit is None else hits.slice(0, limit)
        from .overlays import tombstoned_ids

        reads = _select(plan, [DELETED], True).part_reads(plan)
        dead = tombstoned_ids(_merge(reads, [src.whole(cols) for _, src, cols in reads]).get(TOMBSTONE_NS))
        if not len(dead):
            dead = None
    stop = threading.Event()
    groups = plan.base.groups()
    base = plan.base

    def search(group: int) -> pa.Table:
        reader = base.reader()
        found: list[pa.Table] = []
        count = 0
        for batch in reader.iter_batches(batch_size=16384, row_groups=[group], columns=sel.names):
            if stop.is_set():
                break
            mask = pc.match_substring_regex(batch.column("sequence"), pattern, ignore_case=True)
            if dead is not None:
                mask = pc.and_(mask, pc.invert(pc.is_in(batch.column(ID), value_set=dead)))
            hits = pa.Table.from_batches([batch]).filter(mask).select(sel.names)
            if hits.num_rows:
                found.append(hits)
                count += hits.num_rows
                if limit is not None and count >= limit:
                    break
        return pa.concat_tables(found) if found else sel.schema.empty_table()

    from concurrent.futures import ThreadPoolExecutor

    results: list[pa.Table] = []
    total = 0
    with ThreadPoolExecutor(_pool_size()) as pool:
        futures = [pool.submit(search, g) for g in groups]
        for future in futures:
            table = future.result()
            results.append(table)
            total += table.num_rows
            if limit is not None and total >= limit:
                stop.set()
                for rest in futures:
                    rest.cancel()
                break
    out = _conform(pa.concat_tables(results) if results else sel.schema.empty_table(), sel.schema)
    return out if limit is None else out.slice(0, limit)


def columns(ds: ReadHead, *, include_deleted: bool = False) -> list[ColumnInfo]:
    """Name, registry type and nullability of every view column (tombstone columns with `include_deleted`)."""
    from .registry import format_type

    plan = _plan(ds)
    sel = _select(plan, None, include_deleted)
    base_fields = {f.name: f for f in plan.base.schema} if plan.base is not None else {}
    out = []
    for f in sel.schema:
        if f.name in FLAGS:
            nullable = False
        elif f.name in base_fields and f.name not in plan.source:
            nullable = base_fields[f.name].nullable
        else:
            nullable = True
        out.append(ColumnInfo(f.name, format_type(f.type), nullable))
    return out


def describe(
    ds: ReadHead, *, columns: Sequence[str] | None = None, sample: int | None = None, include_deleted: bool = False
) -> list[ColumnProfile]:
    """Per view column: type, rows, non-null count, null %, an example and (lists) length min/max/mean.

    Streams the view, holding one batch at a time; `sample` profiles only its first N rows (read as
    `head` reads them); `include_deleted` profiles tombstoned rows and the `usr__` columns too.
    """
    import pyarrow.compute as pc

    from .profile import ColumnStats
    from .registry import format_type

    if sample is not None and sample < 0:
        raise InvalidInput("describe --sample must be >= 0.")
    plan = _plan(ds)
    sel = _select(plan, columns, include_deleted)
    stats = [ColumnStats(f.name, f.type) for f in sel.schema]
    rows = 0
    batches = _scan(plan, sel, 65536, ds.dir) if sample is None else iter(_head(plan, sel, sample).to_batches(65536))
    for batch in batches:
        rows += batch.num_rows
        for stat, column in zip(stats, batch.columns, strict=True):
            stat.add(column, pc)
    return [stat.result(rows, format_type(stat.type)) for stat in stats]


def state_of(ds: ReadHead, ids: Iterable[str], *, allow_missing: bool = False) -> pa.Table:
    """One row per requested id (request order): id + the five usr_state fields (masked defaults False);
    with `allow_missing`, an id not in the dataset is skipped (no row) instead of raising NotFound."""
    import pyarrow.compute as pc

    from .overlays import STATE_SCHEMA

    wanted = pa.array([str(i).strip() for i in ids], pa.string())
    # The live view's state (overlay over materialized columns, ADR 0008), read for these ids only.
    names = [c.name for c in columns(ds, include_deleted=True) if c.name.startswith("usr_state__")]
    found = get(ds, wanted.to_pylist(), columns=["id", *names], include_deleted=True, allow_missing=allow_missing)
    if allow_missing:
        wanted = wanted.filter(pc.is_in(wanted, value_set=found.column("id")))
    at = pc.index_in(wanted, value_set=found.column("id"))
    arrays: list[pa.Array | pa.ChunkedArray] = [wanted]
    for field_ in STATE_SCHEMA:
        if field_.name == "id":
            continue
        values = found.column(field_.name).take(at).cast(field_.type) if field_.name in names else None
        if field_.name == "usr_state__masked":
            arrays.append(
                pc.fill_null(values, False) if values is not None else pa.repeat(pa.scalar(False), len(wanted))
            )
        else:
            arrays.append(values if values is not None else pa.nulls(len(wanted), field_.type))
    return pa.table(arrays, schema=STATE_SCHEMA)


def view(ds: ReadHead, *, columns: Sequence[str] | None = None, include_deleted: bool = False) -> pa.Table:
    """The overlay-merged live table read whole (every stored part merged; `scan` streams the same rows)."""
    from .overlays import live_view
    from .recovery import live_parts

    view_schema(ds, columns, include_deleted)  # the read layer's column errors (named, with hints)
    base, merged, _ = live_parts(ds.dir)
    try:
        return live_view(base, merged, include_deleted=include_deleted, columns=list(columns) if columns else None)
    except KeyError as exc:
        raise InvalidInput(f"Unknown column: {exc.args[0]}.") from None
    except ValueError as exc:
        raise InvalidInput(str(exc), hint="Pass --include-deleted to see tombstone columns.") from None
