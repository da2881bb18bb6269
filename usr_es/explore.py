"""What the explorer shows (docs/adr/0022): a dataset's live view at the head or as of an earlier seq,
filtered, paged, summarized; a record with its history and blame; the diff between two points.

Read-only. A view is read whole once per (dataset, seq) and kept in memory (tombstoned rows included, so
"include deleted" is a filter, not another read); an earlier seq is replayed into a scratch folder once
(`replay` starts from the nearest checkpoint). Filters and summaries are Arrow compute over that table,
kept per query, so paging and the record panel re-read nothing. `explore_http` puts this behind HTTP.
"""

from __future__ import annotations

import bisect
import math
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from .dataset import Dataset
from .errors import InvalidInput, NotFound
from .names import DELETED, HIDDEN_PREFIX, ID, QC_STATUSES, SPLITS, STATE_NS
from .results import DatasetSummary, DiffResult, LogEntry, RecordBlame, RecordHistory
from .roots import validate_id

#: Comparison operators a column predicate may use, by what they need of the column.
Op = Literal["eq", "ne", "lt", "le", "gt", "ge", "contains", "startswith", "regex", "null", "notnull"]
_ORDERED = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal"}
_TEXT = ("contains", "startswith", "regex")
BINS = 20
PAGE_LIMIT = 500
#: A diff whose events mention more records than this lists its events, not its cells (`Explorer.diff`).
DIFF_MENTIONS = 20_000
#: The GC fraction of at most this many rows (evenly spaced) when a selection holds more.
GC_SAMPLE = 50_000
#: Views (dataset, seq) and filtered selections kept in memory.
VIEWS_KEPT = 3
SELECTIONS_KEPT = 16


class Predicate(msgspec.Struct, frozen=True, kw_only=True):
    """`column op value`: numbers and times compare by value, strings by text (`contains`, `startswith`
    and `regex` ignore case), `null` / `notnull` take no value."""

    column: str
    op: Op
    value: str | float | int | bool | None = None


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """A filtered view of `dataset` at seq `as_of` (None: the head): every predicate holds, the sequence
    matches the regex `motif` (case-insensitive), each namespace in `with_ns` has a value and each in
    `without_ns` none; tombstoned rows only with `include_deleted`."""

    dataset: str
    as_of: int | None = None
    where: tuple[Predicate, ...] = ()
    motif: str = ""
    include_deleted: bool = False
    with_ns: tuple[str, ...] = ()
    without_ns: tuple[str, ...] = ()


class ColumnMeta(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str
    #: "number", "time", "text", "bool", "list" or "other": which predicates and summary it takes.
    kind: str
    namespace: str = ""
    #: The values a record-state column allows (`usr state set`), for a picker.
    allowed: list[str] = []


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    """A dataset at a seq: its rows (live and tombstoned), columns, overlay namespaces and head."""

    dataset: str
    seq: int
    head_seq: int
    rows: int
    deleted: int
    columns: list[ColumnMeta]
    namespaces: list[str]
    #: Each event's seq, time and action, oldest first (the "as of" control's stops).
    events: list[tuple[int, str, str]]


class RowsPage(msgspec.Struct, frozen=True, kw_only=True):
    dataset: str
    seq: int
    total: int
    offset: int
    columns: list[str]
    rows: list[dict[str, Any]]


class Histogram(msgspec.Struct, frozen=True, kw_only=True):
    """`counts[i]` values fall in [edges[i], edges[i + 1]) (the last bin includes its right edge)."""

    edges: list[float]
    counts: list[int]


class ColumnSummary(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: str
    nulls: int
    null_pct: float
    min: float | str | None = None
    max: float | str | None = None
    mean: float | None = None
    histogram: Histogram | None = None
    #: Text and bool columns: the most frequent values and their counts.
    top: list[tuple[str, int]] = []
    distinct: int | None = None
    #: List columns: the lengths' min, mean and max.
    list_lengths: tuple[int, float, int] | None = None


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """What the filtered rows look like: sequence lengths, alphabets and bio types, GC fraction of DNA/RNA
    rows, each column's nulls and distribution, and the share of rows each overlay namespace covers."""

    dataset: str
    seq: int
    rows: int
    lengths: Histogram | None
    alphabets: dict[str, int]
    bio_types: dict[str, int]
    gc: Histogram | None
    gc_mean: float | None
    #: How many DNA/RNA rows the GC figures read: all of them, or an evenly spaced GC_SAMPLE of them.
    gc_rows: int
    columns: list[ColumnSummary]
    coverage: dict[str, float]


class ExploreDiff(msgspec.Struct, frozen=True, kw_only=True):
    """What changed between two seqs: the events between them (oldest first) and how many record mentions
    they carry; `diff` cell by cell (`usr diff`) when they mention at most DIFF_MENTIONS records, else None
    (`usr diff --from --to` computes it, in time that grows with the mentions)."""

    dataset: str
    from_seq: int
    to_seq: int
    events: list[LogEntry]
    mentions: int
    diff: DiffResult | None


class RecordPanel(msgspec.Struct, frozen=True, kw_only=True):
    dataset: str
    seq: int
    id: str
    deleted: bool
    values: dict[str, Any]
    history: RecordHistory
    blame: RecordBlame


T = TypeVar("T")


class _Moved(Exception):
    """The head moved while its view was read."""


class _Once:
    """A small least-recently-used map whose values are made once: a second caller asking for a key being
    made waits for it (other keys go on meanwhile); `dropped` hears of each value evicted."""

    def __init__(self, size: int, dropped: Callable[[Any], None] = lambda key: None) -> None:
        self.size = size
        self._dropped = dropped
        self._values: OrderedDict[Any, Any] = OrderedDict()
        self._making: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]  # type: ignore[no-any-return]
            making = self._making.setdefault(key, threading.Lock())
        with making:
            with self._lock:
                if key in self._values:
                    return self._values[key]  # type: ignore[no-any-return]
            try:
                value = make()
            finally:
                with self._lock:
                    self._making.pop(key, None)
            with self._lock:
                self._values[key] = value
                evicted = []
                while len(self._values) > self.size:
                    evicted.append(self._values.popitem(last=False)[0])
            for gone in evicted:
                self._dropped(gone)
            return value

    def drop_where(self, test: Callable[[Any], bool]) -> None:
        with self._lock:
            for key in [k for k in self._values if test(k)]:
                del self._values[key]


class Explorer:
    """The explorer's state for one datasets root: views and selections kept in memory, replays of earlier
    seqs in a scratch folder (removed by `close`). Safe to call from several threads."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self._scratch = Path(tempfile.mkdtemp(prefix="usr-explore-"))
        # A selection holds its view: when a view goes, so do its selections and summaries.
        self._selections = _Once(SELECTIONS_KEPT)
        self._summaries = _Once(SELECTIONS_KEPT)
        self._views = _Once(VIEWS_KEPT, dropped=self._forget)

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _forget(self, mark: str) -> None:
        for kept in (self._selections, self._summaries):
            kept.drop_where(lambda key: key[0] == mark)

    # -- what there is ----------------------------------------------------------------------------------
    def datasets(self) -> list[DatasetSummary]:
        """The root's datasets with their row counts (`usr ls`)."""
        return Dataset.list_all(self.root)

    def overview(self, dataset: str, as_of: int | None = None) -> Overview:
        ds = self._dataset(dataset)
        records = ds.log.events()
        events = [(r.seq, r.timestamp_utc, r.action) for r in records]
        seq, _, table = self._view(ds, as_of, [r.hash for r in records])
        deleted = int(pc.sum(table[DELETED]).as_py() or 0) if DELETED in table.column_names else 0
        columns = [_meta(f) for f in table.schema if not f.name.startswith(HIDDEN_PREFIX)]
        namespaces = sorted({c.namespace for c in columns if c.namespace})
        head = events[-1][0] if events else 0
        return Overview(
            dataset=dataset,
            seq=seq,
            head_seq=head,
            rows=table.num_rows - deleted,
            deleted=deleted,
            columns=columns,
            namespaces=namespaces,
            events=events,
        )

    # -- rows and summaries -----------------------------------------------------------------------------
    def rows(self, query: Query, *, offset: int = 0, limit: int = 50) -> RowsPage:
        """One page of the filtered rows, in the view's order."""
        if offset < 0 or not 0 < limit <= PAGE_LIMIT:
            raise InvalidInput(f"a page is 1..{PAGE_LIMIT} rows from offset 0 or more")
        seq, _, selected = self._select(query)
        shown = [n for n in selected.table.column_names if not n.startswith(HIDDEN_PREFIX) or n == DELETED]
        return RowsPage(
            dataset=query.dataset,
            seq=seq,
            total=selected.num_rows,
            offset=offset,
            columns=shown,
            rows=_jsonable(selected.page(offset, limit, shown).to_pylist()),
        )

    def summary(self, query: Query) -> Summary:
        seq, key, selected = self._select(query)
        return self._summaries.get(key, lambda: _summarize(query.dataset, seq, selected))

    # -- one record, two points -------------------------------------------------------------------------
    def record(self, dataset: str, record_id: str, as_of: int | None = None) -> RecordPanel:
        ds = self._dataset(dataset)
        seq, _, table = self._view(ds, as_of)
        found = table.filter(pc.equal(table[ID], record_id))
        if found.num_rows == 0:
            raise NotFound(f"no record {record_id} in {dataset} at seq {seq}")
        row = _jsonable(found.slice(0, 1).to_pylist())[0]
        deleted = bool(row.pop(DELETED, False))
        values = {k: v for k, v in row.items() if not k.startswith(HIDDEN_PREFIX)}
        return RecordPanel(
            dataset=dataset,
            seq=seq,
            id=record_id,
            deleted=deleted,
            values=values,
            history=ds.history.of(record_id, until=seq),
            blame=ds.history.blame(record_id, until=seq),
        )

    def diff(self, dataset: str, start: int, end: int | None = None) -> ExploreDiff:
        """What changed between two seqs: their events, and the cell-by-cell diff when it is small enough to
        answer at once (DIFF_MENTIONS)."""
        ds = self._dataset(dataset)
        last = len(ds.log.events())
        end = last if end is None else end
        if not 0 <= start <= end <= last:
            raise InvalidInput(f"a diff runs from a seq to a later one, within 0..{last}; not {start} -> {end}")
        events = ds.history.timeline(since=start + 1, until=end) if end > start else []
        mentions = ds.history.diff_extent(start, end)
        found = ds.history.diff(start, end) if mentions <= DIFF_MENTIONS else None
        return ExploreDiff(dataset=dataset, from_seq=start, to_seq=end, events=events, mentions=mentions, diff=found)

    def resolve(self, dataset: str, point: str) -> int:
        """A seq, event id or RFC 3339 time as a seq of `dataset`'s log."""
        return self._dataset(dataset).log.resolve_until(point)

    # -- internals --------------------------------------------------------------------------------------
    def _dataset(self, name: str) -> Dataset:
        ds = Dataset.open(self.root, validate_id(name))  # an id under this root, never a path
        if not ds.exists:
            raise NotFound(f"Dataset not found: {name}", hint="The landing page lists this root's datasets.")
        return ds

    def _view(self, ds: Dataset, as_of: int | None, hashes: list[str] | None = None) -> tuple[int, str, pa.Table]:
        """The view at `as_of` (None: the head), tombstoned rows included, and the chain hash of its line
        (what it is kept by: a rebased log's seq K is another state); read once. `hashes`: the log's chain
        hashes, when the caller has read them."""
        for _ in range(3):
            hashes = hashes if hashes is not None else [r.hash for r in ds.log.events()]
            seq = len(hashes) if as_of is None else as_of
            if not 0 <= seq <= len(hashes):
                raise InvalidInput(f"{ds.name} has events 1..{len(hashes)}: there is no seq {seq}")
            mark = f"{ds.name}@{seq}:{hashes[seq - 1] if seq else ''}"
            try:
                return seq, mark, self._views.get(mark, partial(self._read_view, ds, seq, len(hashes), mark))
            except _Moved:  # a writer appended while the head was read: ask the log again
                hashes = None
        raise InvalidInput(f"{ds.name} is being written to faster than it can be read; try again")

    def _read_view(self, ds: Dataset, seq: int, head: int, mark: str) -> pa.Table:
        """The view at `seq` (`_Moved` when it was the head and a writer appended meanwhile)."""
        if seq == head:
            table = ds.view(include_deleted=True)
            last = ds.log.events(n=1)
            if not last or not mark.endswith(":" + last[-1].hash):
                raise _Moved
            return table
        if seq == 0:
            return pa.table({ID: pa.array([], pa.string())})
        with self._replayed(ds, seq) as past:
            return past.view(include_deleted=True)

    @contextmanager
    def _replayed(self, ds: Dataset, seq: int) -> Iterator[Dataset]:
        out = self._scratch / f"{ds.name.replace('/', '--')}-{seq}"
        shutil.rmtree(out, ignore_errors=True)
        ds.log.replay(seq, out)
        try:
            yield Dataset.at(out)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def _select(self, query: Query) -> tuple[int, tuple[str, bytes], Selection]:
        """The rows `query` keeps, and what they are kept by (the view's mark and the query)."""
        seq, mark, table = self._view(self._dataset(query.dataset), query.as_of)
        key = (mark, _key(query))
        return seq, key, self._selections.get(key, lambda: Selection(table, query))


def _key(query: Query) -> bytes:
    return msgspec.json.encode(msgspec.structs.replace(query, as_of=None))


# -- filtering ----------------------------------------------------------------------------------------------
class Selection:
    """The rows of a view (with its tombstone column) that a query keeps, in order: the view and a mask,
    its columns filtered when asked for (a summary reads the small ones, a page takes a few rows)."""

    def __init__(self, table: pa.Table, query: Query) -> None:
        self.table = table
        self.mask = _mask(table, query)
        self.num_rows = table.num_rows if self.mask is None else int(pc.sum(self.mask).as_py() or 0)
        self._positions: pa.Array | None = None

    def column(self, name: str) -> pa.ChunkedArray:
        column = self.table[name]
        return column if self.mask is None else pc.filter(column, self.mask)

    def within(self, mask: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        """`mask` (one value per view row) and the selection's."""
        return mask if self.mask is None else pc.and_(mask, self.mask)

    def page(self, offset: int, limit: int, columns: list[str]) -> pa.Table:
        shown = self.table.select(columns)
        if self.mask is None:
            return shown.slice(offset, limit)
        if self._positions is None:
            self._positions = pc.indices_nonzero(self.mask)
        # Row by row: a take over the view's chunks would first join each column's chunks into one.
        rows = [shown.slice(p, 1) for p in self._positions[offset : offset + limit].to_pylist()]
        return pa.concat_tables(rows) if rows else shown.slice(0, 0)

    def rows(self) -> pa.Table:
        return self.table if self.mask is None else self.table.filter(self.mask)


def _mask(table: pa.Table, query: Query) -> pa.ChunkedArray | pa.Array | None:
    """Which rows `query` keeps (None: all of them), without nulls."""
    masks: list[pa.ChunkedArray | pa.Array] = []
    if not query.include_deleted and DELETED in table.column_names:
        masks.append(pc.invert(pc.fill_null(table[DELETED], False)))
    if query.motif:
        masks.append(_motif(table, query.motif))
    for ns in query.with_ns:
        masks.append(_covered(table, ns))
    for ns in query.without_ns:
        masks.append(pc.invert(_covered(table, ns)))
    for predicate in query.where:
        masks.append(_holds(table, predicate))
    if not masks:
        return None
    mask = masks[0]
    for more in masks[1:]:
        mask = pc.and_kleene(mask, more)
    return pc.fill_null(mask, False)


def _motif(table: pa.Table, motif: str) -> pa.ChunkedArray:
    if "sequence" not in table.column_names:
        raise InvalidInput("this dataset has no sequence column to search")
    try:
        return pc.match_substring_regex(table["sequence"], motif, ignore_case=True)
    except pa.ArrowInvalid as exc:
        raise InvalidInput(f"not a regular expression: {motif!r} ({_reason(exc)})") from None


def _covered(table: pa.Table, namespace: str) -> pa.ChunkedArray | pa.Array:
    """Whether each row has a value in any of `namespace`'s columns."""
    names = [n for n in table.column_names if n.startswith(f"{namespace}__")]
    if not names:
        raise InvalidInput(f"no column of namespace {namespace!r} in this view")
    covered = pc.is_valid(table[names[0]])
    for name in names[1:]:
        covered = pc.or_(covered, pc.is_valid(table[name]))
    return covered


def _holds(table: pa.Table, p: Predicate) -> pa.ChunkedArray:
    if p.column not in table.column_names:
        raise InvalidInput(f"no column {p.column!r} in this view")
    column = table[p.column]
    if p.op == "null":
        return pc.is_null(column)
    if p.op == "notnull":
        return pc.is_valid(column)
    if p.value is None or p.value == "":
        raise InvalidInput(f"{p.column} {p.op} needs a value")
    kind = _kind(column.type)
    if p.op in _TEXT:
        if kind != "text":
            raise InvalidInput(f"{p.op} compares text; {p.column} is {column.type}")
        value = str(p.value)
        if p.op == "contains":
            return pc.match_substring(column, value, ignore_case=True)
        if p.op == "startswith":
            return pc.starts_with(column, value, ignore_case=True)
        try:
            return pc.match_substring_regex(column, value, ignore_case=True)
        except pa.ArrowInvalid as exc:
            raise InvalidInput(f"not a regular expression: {value!r} ({_reason(exc)})") from None
    if kind in ("list", "other"):
        raise InvalidInput(f"{p.column} ({column.type}) takes only null / notnull")
    if kind in ("bool", "text") and p.op not in ("eq", "ne"):
        raise InvalidInput(f"{p.column} ({column.type}) compares by eq / ne, not {p.op}")
    scalar = _scalar(p.value, column.type, p.column)
    compare: Callable[..., pa.ChunkedArray] = getattr(pc, _ORDERED[p.op])
    return compare(_comparable(column) if kind == "number" else column, scalar)


def _scalar(value: object, type_: pa.DataType, column: str) -> pa.Scalar:
    """`value` (as typed in a form: text) as a value of `column`'s type."""
    text = str(value).strip()
    try:
        if pa.types.is_boolean(type_):
            words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            return pa.scalar(words[text.lower()])
        if pa.types.is_timestamp(type_):
            moment = datetime.fromisoformat(text)
            return pa.scalar(moment if moment.tzinfo else moment.replace(tzinfo=UTC), type_)
        if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_):
            return pa.scalar(float(text))
        return pa.scalar(text)
    except (KeyError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError):
        raise InvalidInput(f"{value!r} is not a value of {column} ({type_})") from None


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0].removeprefix("Invalid regular expression: ")


# -- describing -----------------------------------------------------------------------------------------
def _comparable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A number column as Arrow compute compares it (half floats have no kernels of their own)."""
    return pc.cast(column, pa.float32()) if pa.types.is_float16(column.type) else column


def _kind(type_: pa.DataType) -> str:
    if pa.types.is_boolean(type_):
        return "bool"
    if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        return "number"
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        return "time"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_dictionary(type_):
        return "text"
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return "list"
    return "other"


_ALLOWED = {f"{STATE_NS}__qc_status": list(QC_STATUSES), f"{STATE_NS}__split": list(SPLITS)}


def _meta(field: pa.Field) -> ColumnMeta:
    ns, sep, _ = field.name.partition("__")
    kind = _kind(field.type)
    allowed = _ALLOWED.get(field.name, ["true", "false"] if kind == "bool" else [])
    return ColumnMeta(name=field.name, type=str(field.type), kind=kind, namespace=ns if sep else "", allowed=allowed)


def _summarize(dataset: str, seq: int, selected: Selection) -> Summary:
    names = selected.table.column_names
    lengths = None
    if "length" in names and _kind(selected.table["length"].type) == "number":
        lengths = _histogram(selected.column("length"))
    elif "sequence" in names:
        lengths = _histogram(pc.utf8_length(selected.column("sequence")))
    gc, gc_mean, gc_rows = _gc(selected) if {"sequence", "bio_type"} <= set(names) else (None, None, 0)
    namespaces = sorted({n.partition("__")[0] for n in names if "__" in n and not n.startswith(HIDDEN_PREFIX)})
    rows = selected.num_rows
    return Summary(
        dataset=dataset,
        seq=seq,
        rows=rows,
        lengths=lengths,
        alphabets=_counts(selected.column("alphabet")) if "alphabet" in names else {},
        bio_types=_counts(selected.column("bio_type")) if "bio_type" in names else {},
        gc=gc,
        gc_mean=gc_mean,
        gc_rows=gc_rows,
        columns=[_column(name, selected) for name in names if not name.startswith(HIDDEN_PREFIX)],
        coverage={ns: _share(selected.within(_covered(selected.table, ns)), rows) for ns in namespaces},
    )


def _share(mask: pa.ChunkedArray | pa.Array, rows: int) -> float:
    return round(100.0 * (pc.sum(mask).as_py() or 0) / rows, 2) if rows else 0.0


def _counted(column: pa.ChunkedArray) -> pa.RecordBatch:
    """Each value of `column` but null and how often it occurs (columns `values`, `counts`)."""
    counted = pc.value_counts(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
    return pa.RecordBatch.from_struct_array(counted.filter(pc.is_valid(counted.field("values"))))


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    return {str(v["values"]): int(v["counts"]) for v in _counted(column).to_pylist()}


def _gc(selected: Selection) -> tuple[Histogram | None, float | None, int]:
    """The GC fraction of DNA/RNA rows' sequences (G, C and S of the IUPAC codes, any case), of every such
    row or of GC_SAMPLE evenly spaced ones; and how many rows that read."""
    table = selected.table
    nucleic = pc.is_in(pc.ascii_lower(table["bio_type"]), pa.array(["dna", "rna"]))
    nucleic = pc.indices_nonzero(selected.within(nucleic))
    if len(nucleic) == 0:
        return None, None, 0
    if len(nucleic) > GC_SAMPLE:
        step = len(nucleic) / GC_SAMPLE
        nucleic = pc.take(nucleic, pa.array([int(i * step) for i in range(GC_SAMPLE)], pa.int64()))
    seq = pc.ascii_upper(_take(table["sequence"], nucleic.to_pylist()))
    total = pc.binary_length(seq)
    gc = pc.add(pc.add(pc.count_substring(seq, "G"), pc.count_substring(seq, "C")), pc.count_substring(seq, "S"))
    fraction = pc.divide(pc.cast(gc, pa.float64()), pc.cast(pc.if_else(pc.equal(total, 0), 1, total), pa.float64()))
    mean = pc.mean(fraction).as_py()
    return _histogram(fraction, lo=0.0, hi=1.0), None if mean is None else round(mean, 4), len(nucleic)


def _take(column: pa.ChunkedArray, positions: list[int]) -> pa.ChunkedArray:
    """`column`'s values at ascending `positions`, taken chunk by chunk (a take over the whole chunked array
    would first join its chunks into one)."""
    parts, start, at = [], 0, 0
    for chunk in column.chunks:
        end = start + len(chunk)
        upto = bisect.bisect_left(positions, end, at)
        if upto > at:
            parts.append(chunk.take(pa.array([p - start for p in positions[at:upto]], pa.int64())))
        at, start = upto, end
    return pa.chunked_array(parts, column.type)


def _histogram(
    values: pa.ChunkedArray | pa.Array, *, lo: float | None = None, hi: float | None = None
) -> Histogram | None:
    """BINS equal bins from the least to the greatest value (or `lo`..`hi`); None when there is no value."""
    numbers = pc.cast(values, pa.float64())
    numbers = pc.drop_null(pc.if_else(pc.is_finite(numbers), numbers, None))
    if len(numbers) == 0:
        return None
    found = pc.min_max(numbers).as_py()
    low = found["min"] if lo is None else lo
    high = found["max"] if hi is None else hi
    if high <= low:
        return Histogram(edges=[low, low], counts=[len(numbers)])
    width = (high - low) / BINS
    index = pc.cast(pc.floor(pc.divide(pc.subtract(numbers, low), width)), pa.int64())
    index = pc.min_element_wise(pc.max_element_wise(index, 0), BINS - 1)
    counts = [0] * BINS
    for item in pc.value_counts(index).to_pylist():
        counts[item["values"]] = int(item["counts"])
    return Histogram(edges=[low + i * width for i in range(BINS)] + [high], counts=counts)


def _column(name: str, selected: Selection) -> ColumnSummary:
    rows = selected.num_rows
    kind = _kind(selected.table[name].type)
    if name in (ID, "sequence"):  # one per record, never empty: counting their values says nothing more
        nulls = selected.table[name].null_count and selected.column(name).null_count
        return ColumnSummary(
            name=name, kind=kind, nulls=nulls, null_pct=round(100.0 * nulls / rows, 2) if rows else 0.0
        )
    column = selected.column(name)
    nulls = column.null_count
    base = {"name": name, "kind": kind, "nulls": nulls, "null_pct": round(100.0 * nulls / rows, 2) if rows else 0.0}
    if rows == nulls:
        return ColumnSummary(**base)
    if kind in ("number", "time"):
        numbers = pc.cast(column, pa.int64()) if kind == "time" else _comparable(column)
        found = pc.min_max(numbers if kind == "number" else column).as_py()
        mean = pc.mean(pc.cast(numbers, pa.float64())).as_py()
        shown = {k: _plain(v) for k, v in found.items()}
        return ColumnSummary(
            **base,
            min=shown["min"],
            max=shown["max"],
            mean=None if kind == "time" or mean is None or not math.isfinite(mean) else round(mean, 6),
            histogram=_histogram(numbers),
        )
    if kind in ("text", "bool"):
        counted = _counted(column)
        distinct = counted.num_rows
        if distinct > rows // 2 + 1:  # most values once: no frequent values to show
            return ColumnSummary(**base, distinct=distinct)
        order = pc.select_k_unstable(counted, 10, [("counts", "descending"), ("values", "ascending")])
        top = [(str(v["values"]), int(v["counts"])) for v in counted.take(order).to_pylist()]
        return ColumnSummary(**base, distinct=distinct, top=top)
    if kind == "list":
        lengths = pc.drop_null(pc.list_value_length(column))
        stats = pc.min_max(lengths).as_py()
        mean = pc.mean(lengths).as_py() or 0.0
        return ColumnSummary(**base, list_lengths=(int(stats["min"]), round(mean, 3), int(stats["max"])))
    return ColumnSummary(**base)


def _plain(value: object) -> float | str | None:
    if value is None or isinstance(value, int | float):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON can carry them: times as RFC 3339 text, bytes as hex, non-finite floats as None."""

    def one(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, list):
            return [one(v) for v in value]
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        if isinstance(value, bytes):
            return value.hex()
        if hasattr(value, "isoformat"):
            return value.isoformat().replace("+00:00", "Z")
        return value

    return [{k: one(v) for k, v in row.items()} for row in rows]
