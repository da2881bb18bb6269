"""Forensics: a record's history and blame, what changed between two points, and the log as a timeline
(docs/adr/0020).

Read-only. The history index (`_history/`) names the events that touched each record and the record's row
in each event's payload; those rows alone are folded, for just the records asked about, by the projectors
the fold itself uses (`imported_rows`, `part_table`, `merge_parts`, `materialize_table`, `live_view`), so
a record's values after any event are exactly what `usr replay --until` shows. Without a usable index
(missing or damaged) the events are found by reading every payload instead: slower, same answers.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from . import history
from .errors import InvalidInput, NotFound
from .events import (
    DatasetAdopted,
    DatasetInitialized,
    Event,
    Materialized,
    OverlayArchived,
    OverlayRemoved,
    OverlayWritten,
    RecordsDeduplicated,
    RecordsMerged,
    RecordsReplaced,
    RecordsRestored,
    RecordsTombstoned,
    SequencesImported,
    StateCleared,
    StateSet,
)
from .log import LogLine, iter_lines, moment_of, seq_of
from .names import FLAGS, ID, LOG_FILE, PURGED, STATE_NS, TOMBSTONE_NS
from .original import require_adopted
from .overlays import Part, live_view, merge_parts
from .projectors import BASE_SCHEMA, imported_rows, materialize_table, part_table
from .recovery import ReadHead
from .results import (
    BlameCell,
    CellChange,
    CellDiff,
    Credit,
    DiffResult,
    HistoryEntry,
    LogEntry,
    RecordBlame,
    RecordHistory,
    RowDiff,
)

#: A record's values: column -> value, unset ones (null, and a false flag) left out.
Values = dict[str, Any]


# -- the log and the events' rows --------------------------------------------------------------------
@dataclass
class _Log:
    """The verified lines of a dataset's log up to its head, by seq."""

    directory: Path
    name: str
    lines: list[LogLine] = field(default_factory=list)

    @classmethod
    def read(cls, head: ReadHead) -> _Log:
        head.fresh()
        lines = list(iter_lines(head.dir / LOG_FILE))
        require_adopted(head.dir, len(lines), lines[0].record if lines else None)
        return cls(head.dir, head.name, lines)

    @property
    def head(self) -> int:
        return len(self.lines)

    def line(self, seq: int) -> LogLine:
        return self.lines[seq - 1]

    def seq(self, point: str | int | None, default: int) -> int:
        """A point of the log (seq, event id or time, as `replay --until`), or `default`."""
        if point is None:
            return default
        return seq_of(self.lines, self.name, point) if str(point).strip() != "0" else 0


def _credit(line: LogLine) -> Credit:
    record = line.record
    return Credit(
        seq=line.seq,
        timestamp_utc=record.timestamp_utc,
        action=record.action,
        tool=record.actor.tool,
        run_id=record.actor.run_id,
        host=record.actor.host,
        command_id=record.command_id,
        event_id=record.event_id,
    )


def _note(event: Event) -> str:
    """What a history line says beside the changes (the source of a merge, a reason, a note)."""
    match event:
        case RecordsMerged():
            return f"merged from {event.src} at seq {event.src_seq} (hash {event.src_hash})"
        case RecordsReplaced():
            return f"replaced by the merge from {event.src}"
        case RecordsDeduplicated():
            return f"dedupe --key {event.key} --keep {event.keep}"
        case Materialized() if event.drop_deleted and event.rows_dropped:
            return "dropped by materialize --drop-deleted"
        case RecordsTombstoned():
            return event.reason
        case OverlayWritten():
            return event.note
        case OverlayArchived():
            return f"overlay {event.namespace} archived"
        case OverlayRemoved():
            return f"overlay {event.namespace} removed"
        case DatasetAdopted():
            return "adopted from the original USR"
    return ""


@dataclass
class _Payloads:
    """The rows of events' payloads at given positions: only the record batches holding them are read (the
    index records each payload's batch row counts)."""

    directory: Path
    batches: dict[int, tuple[int, ...]] | None  # None: no index; payloads are read whole
    #: Only these columns (and `id`) are read (None: all): the ones a diff can see change.
    columns: set[str] | None = None
    _open: dict[str, pa.ipc.RecordBatchFileReader] = field(default_factory=dict)
    _read: dict[tuple[str, int], pa.Table] = field(default_factory=dict)

    def rows(self, line: LogLine, positions: Sequence[int]) -> pa.Table:
        """The payload rows of `line` at `positions`, in that order."""
        ref = line.record.payload
        if ref is None:
            raise NotFound(f"event seq {line.seq} has no payload")
        reader = self._open.get(ref.file)
        if reader is None:
            reader = self._open[ref.file] = self._reader(self.directory / ref.file)
        sizes = self.batches.get(line.seq, ()) if self.batches is not None else None
        if sizes is None or len(sizes) < 2:  # one batch (or no index: the payload read whole, once)
            return self._batch(reader, ref.file, -1 if sizes is None else 0).take(pa.array(positions, pa.int64()))
        starts = list(itertools.accumulate(sizes, initial=0))
        groups: dict[int, list[tuple[int, int]]] = {}
        for k, position in enumerate(positions):
            at = bisect_right(starts, position) - 1
            groups.setdefault(at, []).append((k, position - starts[at]))
        pieces: list[pa.Table] = []
        order: list[int] = []
        for at, items in groups.items():
            pieces.append(self._batch(reader, ref.file, at).take(pa.array([w for _, w in items], pa.int64())))
            order.extend(k for k, _ in items)
        table = pa.concat_tables(pieces) if pieces else reader.schema.empty_table()
        return table.take(pc.sort_indices(pa.array(order, pa.int64())))

    def _reader(self, path: Path) -> pa.ipc.RecordBatchFileReader:
        source = pa.memory_map(str(path))
        reader = pa.ipc.open_file(source)
        if self.columns is None:
            return reader
        wanted = [k for k, name in enumerate(reader.schema.names) if name == ID or name in self.columns]
        return pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=wanted))

    def _batch(self, reader: pa.ipc.RecordBatchFileReader, file: str, at: int) -> pa.Table:
        """Record batch `at` of a payload (-1: all of it), read once."""
        key = (file, at)
        found = self._read.get(key)
        if found is None:
            found = self._read[key] = reader.read_all() if at < 0 else pa.Table.from_batches([reader.get_batch(at)])
        return found


# -- which events touched which records ------------------------------------------------------------
@dataclass
class _Touched:
    """For some records (by position in the ids asked), the events that named them and their rows there,
    and the wide events (which may change them without naming them)."""

    named: dict[int, list[tuple[int, int]]]  # seq -> [(position in ids, row in the event's payload or ids)]
    wide: list[int]
    payloads: _Payloads
    #: seq -> the payload rows of `named[seq]`, in its order (read once, when the ids were confirmed)
    tables: dict[int, pa.Table] = field(default_factory=dict)

    def rows(self, log: _Log, seq: int) -> pa.Table:
        found = self.tables.get(seq)
        if found is None:
            found = self.tables[seq] = self.payloads.rows(log.line(seq), [r for _, r in self.named[seq]])
        return found

    def only(self, positions: set[int]) -> _Touched:
        """The same events, for the records at `positions` of the ids only (positions kept)."""
        named: dict[int, list[tuple[int, int]]] = {}
        tables: dict[int, pa.Table] = {}
        for seq, hits in self.named.items():
            keep = [k for k, (p, _) in enumerate(hits) if p in positions]
            if keep:
                named[seq] = [hits[k] for k in keep]
                if seq in self.tables:
                    tables[seq] = self.tables[seq].take(pa.array(keep, pa.int64()))
        return _Touched(named, self.wide, self.payloads, tables)


def _touched(log: _Log, ids: list[str], until: int, columns: set[str] | None = None) -> _Touched:
    """The events up to `until` that named `ids` (candidates from the index confirmed against the ids
    their rows hold), and the wide ones."""
    lookup = history.Lookup.open(log.directory)
    if lookup is None or lookup.mark.seq > log.head:
        return _scanned(log, ids, until, columns)
    payloads = _Payloads(log.directory, lookup.batches, columns)
    named: dict[int, list[tuple[int, int]]] = {}
    tables: dict[int, pa.Table] = {}
    if len(ids) == 1:
        pairs = [(0, t.seq, t.row) for t in lookup.touches(ids[0])]
    else:
        found = lookup.touches_of(pa.array(ids, pa.string()))
        pairs = list(zip(*(found.column(c).to_pylist() for c in ("position", "seq", "row")), strict=True))
    for position, seq, row in pairs:
        if seq <= until:
            named.setdefault(seq, []).append((position, row))
    for seq, hits in list(named.items()):  # keys collide: keep the rows whose id is the one asked for
        line = log.line(seq)
        inline = getattr(line.record.event, "ids", None)
        if inline is not None:
            kept = [(p, r) for p, r in hits if r < len(inline) and inline[r] == ids[p]]
        else:
            table = payloads.rows(line, [r for _, r in hits])
            mask = [found_id == ids[p] for (p, _), found_id in zip(hits, table.column(ID).to_pylist(), strict=True)]
            kept = [hit for hit, ok in zip(hits, mask, strict=True) if ok]
            if kept:
                tables[seq] = table if all(mask) else table.filter(pa.array(mask))
        if kept:
            named[seq] = kept
        else:
            del named[seq]
    wide = [seq for seq in lookup.wide() if seq <= until]
    return _Touched(named, wide, payloads, tables)


def _scanned(log: _Log, ids: list[str], until: int, columns: set[str] | None) -> _Touched:
    """`_touched` without the index: every event's named ids read (payloads whole)."""
    payloads = _Payloads(log.directory, None, columns)
    wanted = pa.array(ids, pa.string())
    named: dict[int, list[tuple[int, int]]] = {}
    wide = []
    for line in log.lines[:until]:
        event = line.record.event
        if history.is_wide(event):
            wide.append(line.seq)
        if not history.names_records(event):
            continue
        inline = getattr(event, "ids", None)
        if inline is not None:
            named_ids = pa.array(list(inline), pa.string())
        elif line.record.payload is not None:
            named_ids = payloads.rows(line, range(line.record.payload.rows)).column(ID).combine_chunks()
        else:
            continue
        at = pc.index_in(named_ids, value_set=wanted)
        hits = [(p, r) for r, p in enumerate(at.to_pylist()) if p is not None]
        if hits:
            named[line.seq] = hits
    return _Touched(named, wide, payloads)


# -- the fold, for a few records ---------------------------------------------------------------------
@dataclass
class _Records:
    """Some records' base rows and overlay parts, folded event by event as the projections fold them."""

    base: pa.Table = field(default_factory=BASE_SCHEMA.empty_table)
    parts: dict[str, list[Part]] = field(default_factory=dict)

    def apply(self, seq: int, event: Event, rows: pa.Table | None, named: list[str]) -> None:
        """Fold one event: `rows` are its payload rows of these records, `named` the ids it names inline."""
        if isinstance(event, DatasetInitialized):
            self.base, self.parts = BASE_SCHEMA.empty_table(), {}
        elif isinstance(event, SequencesImported):
            if rows is not None and rows.num_rows:  # (only some columns read: the rows as they are)
                added = imported_rows(rows, event) if "sequence" in rows.column_names else rows
                self.base = pa.concat_tables([self.base, added], promote_options="default")
        elif isinstance(event, OverlayWritten):
            if rows is not None and rows.num_rows:
                self.parts.setdefault(event.namespace, []).append(Part(seq, rows))
        elif isinstance(event, (RecordsTombstoned, RecordsRestored, StateSet, StateCleared)):
            ns = TOMBSTONE_NS if isinstance(event, (RecordsTombstoned, RecordsRestored)) else STATE_NS
            table = part_table(_only(event, named), rows)
            if table is not None and table.num_rows:
                self.parts.setdefault(ns, []).append(Part(seq, table))
        elif isinstance(event, Materialized):
            self._materialize(seq, event, rows, named)
        elif isinstance(event, OverlayRemoved):
            self.parts.pop(event.namespace, None)

    def _materialize(self, seq: int, event: Materialized, rows: pa.Table | None, named: list[str]) -> None:
        dropped = named if event.ids is not None else (rows.column(ID).to_pylist() if rows is not None else [])
        merged = {ns: merge_parts(self.parts[ns]) for ns in event.namespaces if self.parts.get(ns)}
        gone = pa.table({ID: pa.array(dropped, pa.string())}) if dropped else None
        if merged or gone is not None:
            self.base = materialize_table(self.base, merged, gone)
        if event.drop_overlays or event.archive_overlays:
            for ns in event.namespaces:
                self.parts.pop(ns, None)
        if dropped:  # their rows in every namespace are forgotten (a purge part, ADR 0008)
            purge = pa.table({ID: pa.array(dropped, pa.string()), PURGED: pa.array([True] * len(dropped))})
            for parts in self.parts.values():
                parts.append(Part(seq, purge))

    def view(self, only: list[str] | None = None) -> pa.Table:
        """The records' live view rows (tombstoned ones included), or only those of the ids `only`."""
        if only is None:
            base, parts = self.base, self.parts
        else:
            wanted = pa.array(only, pa.string())
            base = self.base.filter(pc.is_in(self.base.column(ID), value_set=wanted))
            parts = {
                ns: [Part(p.seq, p.table.filter(pc.is_in(p.table.column(ID), value_set=wanted))) for p in ps]
                for ns, ps in self.parts.items()
            }
        merged = {ns: merge_parts(ps) for ns, ps in parts.items() if ps}
        return live_view(base, merged, include_deleted=True)


def _only(event: Event, named: list[str]) -> Event:
    """An ids event restricted to the records asked about (its payload rows are restricted already)."""
    if getattr(event, "ids", None) is None:
        return event
    return msgspec.structs.replace(event, ids=tuple(named))


def _values_by_id(view: pa.Table, columns: Sequence[str] | None = None) -> dict[str, Values]:
    """Each record's set values (`columns` only, when given)."""
    out: dict[str, Values] = {}
    for row in view.to_pylist():
        out[row[ID]] = {
            c: v
            for c, v in row.items()
            if v is not None and not (c in FLAGS and v is False) and (columns is None or c in columns)
        }
    return out


def _shown(column: str, value: Any) -> Any:
    """A value as reported: an unset flag reads false, as in the view."""
    return False if value is None and column in FLAGS else value


def _changes(before: Values, after: Values) -> list[CellChange]:
    names = list(dict.fromkeys([*before, *after]))
    return [
        CellChange(column=c, before=_shown(c, before.get(c)), after=_shown(c, after.get(c)))
        for c in names
        if before.get(c) != after.get(c)
    ]


def _replay(log: _Log, touched: _Touched, ids: list[str], seqs: Iterable[int], records: _Records) -> None:
    """Fold the events `seqs` (in order) into `records`, each with its rows of `ids`."""
    for seq in seqs:
        line = log.line(seq)
        hits = touched.named.get(seq, [])
        rows = None
        named: list[str] = []
        if hits:
            if getattr(line.record.event, "ids", None) is not None:
                named = [ids[p] for p, _ in hits]
            else:
                rows = touched.rows(log, seq)
        records.apply(seq, line.record.event, rows, named)


# -- history, blame ----------------------------------------------------------------------------------
def record_history(
    head: ReadHead, record_id: str, *, until: str | int | None = None, columns: Sequence[str] | None = None
) -> RecordHistory:
    """Every event that touched `record_id` up to `until` (default: the head), oldest first, with the
    columns each changed (`columns` only, when given)."""
    log = _Log.read(head)
    return _history_of(log, record_id, log.seq(until, log.head), columns)


def _history_of(log: _Log, record_id: str, until: int, columns: Sequence[str] | None) -> RecordHistory:
    record_id = record_id.strip()
    if not record_id:
        raise InvalidInput("Give a record id (--id).")
    touched = _touched(log, [record_id], until)
    records = _Records()
    entries: list[HistoryEntry] = []
    before: Values = {}
    for seq in sorted(set(touched.named) | set(touched.wide)):
        _replay(log, touched, [record_id], [seq], records)
        after = _values_by_id(records.view(), columns).get(record_id, {})
        changes = _changes(before, after)
        if seq in touched.named or changes:
            line = log.line(seq)
            entries.append(HistoryEntry(credit=_credit(line), changes=changes, note=_note(line.record.event)))
        before = after
    if not entries:
        raise NotFound(f"No record with id {record_id} in {log.name} (up to seq {until}).")
    live = record_id in records.base.column(ID).to_pylist()
    deleted = bool(before.get(FLAGS[0], False))
    return RecordHistory(
        dataset=log.name, id=record_id, seq=until, live=live and not deleted, deleted=deleted, entries=entries
    )


def record_blame(head: ReadHead, record_id: str, *, until: str | int | None = None) -> RecordBlame:
    """For each set cell of `record_id` (at `until`, default the head), the event that last wrote it."""
    log = _Log.read(head)
    found = _history_of(log, record_id, log.seq(until, log.head), None)
    last: dict[str, tuple[Any, Credit]] = {}
    for entry in found.entries:
        for change in entry.changes:
            last[change.column] = (change.after, entry.credit)
    cells = [
        BlameCell(column=c, value=v, credit=credit)
        for c, (v, credit) in last.items()
        if v is not None and not (c in FLAGS and v is False)
    ]
    return RecordBlame(
        dataset=found.dataset, id=found.id, seq=found.seq, live=found.live, deleted=found.deleted, cells=cells
    )


# -- diff ----------------------------------------------------------------------------------------------
def diff(
    head: ReadHead,
    start: str | int,
    end: str | int | None = None,
    *,
    columns: Sequence[str] | None = None,
    summary: bool = False,
) -> DiffResult:
    """What changed between two points of the log (seq, event id or time; `end` default the head): rows
    added, removed, deleted and restored, and every differing cell with the last event between them that
    changed it (`summary`: the counts only)."""
    log = _Log.read(head)
    a, b = log.seq(start, 0), log.seq(end, log.head)
    if a > b:
        raise InvalidInput(f"--from (seq {a}) is after --to (seq {b}).", hint="Swap them.")
    ids = _named_between(log, a, b)
    seen = _window_columns(log, a, b)  # only these can differ (None: any)
    if columns is not None:
        seen = set(columns) if seen is None else seen & set(columns)
    touched = _touched(log, ids, b, seen)
    records = _Records()
    seqs = sorted(set(touched.named) | set(touched.wide))
    _replay(log, touched, ids, [s for s in seqs if s <= a], records)
    columns = sorted(seen) if seen is not None else None
    at_a = _values_by_id(records.view(), columns)
    later = [s for s in seqs if s > a]
    _replay(log, touched, ids, later, records)
    at_b = _values_by_id(records.view(), columns)
    credit = {} if summary else _credits(log, touched, ids, a, later, at_a, at_b, columns)
    return _compared(log.name, a, b, at_a, at_b, credit, summary, events=b - a)


def _credits(
    log: _Log,
    touched: _Touched,
    ids: list[str],
    a: int,
    later: list[int],
    at_a: dict[str, Values],
    at_b: dict[str, Values],
    columns: Sequence[str] | None,
) -> dict[tuple[str, str], Credit]:
    """For each cell that differs between A and B, the last event in (A, B] that changed it. A record only
    one event of the window names (and no wide event) owes every change to it; the others are folded
    again, alone, event by event."""
    counts: dict[int, int] = {}
    for seq in later:
        for p, _ in touched.named.get(seq, []):
            counts[p] = counts.get(p, 0) + 1
    wide = any(seq in touched.wide for seq in later)
    changed = [p for p, rid in enumerate(ids) if at_a.get(rid) != at_b.get(rid)]
    credit: dict[tuple[str, str], Credit] = {}
    again: set[int] = set()
    last = {p: seq for seq in later for p, _ in touched.named.get(seq, [])}
    for p in changed:
        if wide or counts.get(p, 0) != 1:
            again.add(p)
            continue
        who = _credit(log.line(last[p]))
        was, now = at_a.get(ids[p], {}), at_b.get(ids[p], {})
        for c in {*was, *now}:
            if was.get(c) != now.get(c):
                credit[(ids[p], c)] = who
    if not again:
        return credit
    sub = touched.only(again)
    records = _Records()
    _replay(log, sub, ids, sorted(s for s in {*sub.named, *sub.wide} if s <= a), records)
    current = _values_by_id(records.view(), columns)
    for seq in sorted(s for s in {*sub.named, *sub.wide} if s > a):
        _replay(log, sub, ids, [seq], records)
        now = _values_by_id(records.view(), columns)
        who = _credit(log.line(seq))
        for rid in {*current, *now}:
            was, new = current.get(rid, {}), now.get(rid, {})
            for c in {*was, *new}:
                if was.get(c) != new.get(c):
                    credit[(rid, c)] = who
        current = now
    return credit


def _window_columns(log: _Log, a: int, b: int) -> set[str] | None:
    """The columns the events in (a, b] can change (None: any; they add, drop or remove)."""
    from .overlays import STATE_SCHEMA, TOMBSTONE_SCHEMA

    seen: set[str] = set()
    for line in log.lines[a:b]:
        event = line.record.event
        if isinstance(event, OverlayWritten):
            seen.update(event.columns)
        elif isinstance(event, (RecordsTombstoned, RecordsRestored)):
            seen.update(n for n in TOMBSTONE_SCHEMA.names if n != ID)
        elif isinstance(event, (StateSet, StateCleared)):
            seen.update(n for n in STATE_SCHEMA.names if n != ID)
        elif history.names_records(event):  # imports, drops, materialize, overlay removals
            return None
    return seen


def diff_extent(head: ReadHead, start: str | int, end: str | int | None = None) -> int:
    """How many record mentions a diff of (start, end] looks at (what its cost grows with), counted from the
    log lines alone: a payload's row count, ids inline, and for an overlay removal every write of its
    namespace before it; no payload is read. As `_named_between` names them, with repeats counted."""
    log = _Log.read(head)
    a, b = log.seq(start, 0), log.seq(end, log.head)

    def mentions(line: LogLine) -> int:
        inline = getattr(line.record.event, "ids", None)
        if inline is not None:
            return len(inline)
        return line.record.payload.rows if line.record.payload is not None else 0

    removed = {line.record.event.namespace for line in log.lines[a:b] if isinstance(line.record.event, OverlayRemoved)}
    total = sum(mentions(line) for line in log.lines[a:b] if history.names_records(line.record.event))
    for line in log.lines[:b] if removed else []:
        if isinstance(line.record.event, OverlayWritten) and line.record.event.namespace in removed:
            total += mentions(line)
    return total


def _named_between(log: _Log, a: int, b: int) -> list[str]:
    """The ids the events in (a, b] name, and for an overlay removal the ids its namespace held."""
    payloads = _Payloads(log.directory, None)
    found: dict[str, None] = {}
    removed: set[str] = set()
    for line in log.lines[a:b]:
        event = line.record.event
        if isinstance(event, OverlayRemoved):
            removed.add(event.namespace)
        found.update(dict.fromkeys(_ids_named(line, payloads)))
    if removed:  # every record with a value in a removed namespace: the ids its writes named
        for line in log.lines[:b]:
            event = line.record.event
            if isinstance(event, OverlayWritten) and event.namespace in removed:
                found.update(dict.fromkeys(_ids_named(line, payloads)))
    return list(found)


def _ids_named(line: LogLine, payloads: _Payloads) -> list[str]:
    event = line.record.event
    if not history.names_records(event):
        return []
    inline = getattr(event, "ids", None)
    if inline is not None:
        return list(inline)
    ref = line.record.payload
    if ref is None:
        return []
    ids: list[str] = payloads.rows(line, range(ref.rows)).column(ID).to_pylist()
    return ids


def _compared(
    name: str,
    a: int,
    b: int,
    at_a: dict[str, Values],
    at_b: dict[str, Values],
    credit: dict[tuple[str, str], Credit],
    summary: bool,
    *,
    events: int,
) -> DiffResult:
    rows: list[RowDiff] = []
    counts = {"added": 0, "removed": 0, "deleted": 0, "restored": 0, "changed": 0}
    by_column: dict[str, int] = {}
    by_action: dict[str, int] = {}
    cells = 0
    for rid in sorted(set(at_a) | set(at_b)):
        was, now = at_a.get(rid), at_b.get(rid)
        if was == now:
            continue
        if was is None:
            kind = "added"
        elif now is None:
            kind = "removed"
        elif bool(was.get(FLAGS[0])) != bool(now.get(FLAGS[0])):
            kind = "deleted" if now.get(FLAGS[0]) else "restored"
        else:
            kind = "changed"
        counts[kind] += 1
        before, after = was or {}, now or {}
        differing = [c for c in dict.fromkeys([*before, *after]) if before.get(c) != after.get(c)]
        cells += len(differing)
        found: list[CellDiff] = []
        for c in differing:
            by_column[c] = by_column.get(c, 0) + 1
            who = credit.get((rid, c))
            if who is not None:
                by_action[who.action] = by_action.get(who.action, 0) + 1
                if not summary:
                    found.append(
                        CellDiff(column=c, before=_shown(c, before.get(c)), after=_shown(c, after.get(c)), credit=who)
                    )
        if not summary:
            rows.append(RowDiff(id=rid, kind=kind, cells=found))
    return DiffResult(
        dataset=name,
        from_seq=a,
        to_seq=b,
        events=events,
        cells=cells,
        by_column=dict(sorted(by_column.items())),
        by_action=dict(sorted(by_action.items())),
        rows=rows,
        **counts,
    )


# -- log -----------------------------------------------------------------------------------------------
def timeline(
    head: ReadHead,
    *,
    action: Sequence[str] = (),
    actor: str | None = None,
    since: str | int | None = None,
    until: str | int | None = None,
    record_id: str | None = None,
) -> list[LogEntry]:
    """The log as a readable timeline, oldest first: only `action`s, events whose actor's tool, run id or
    host is `actor`, between `since` and `until` (seq, event id or time, both included), that touched
    `record_id`."""
    log = _Log.read(head)
    last = log.seq(until, log.head)
    if since is None:
        first = 1
    elif str(since).strip().isdigit():
        first = log.seq(since, 1)
    else:  # a time: the first event at or after it
        first = _first_at_or_after(log, str(since))
    wanted: set[int] | None = None
    if record_id is not None:
        wanted = {e.credit.seq for e in _history_of(log, record_id, last, None).entries}
    out = []
    for line in log.lines[max(first, 1) - 1 : last]:
        record = line.record
        if action and record.action not in action:
            continue
        if actor is not None and actor not in (record.actor.tool, record.actor.run_id, record.actor.host):
            continue
        if wanted is not None and line.seq not in wanted:
            continue
        out.append(LogEntry(credit=_credit(line), summary=_summary(line)))
    return out


def _first_at_or_after(log: _Log, since: str) -> int:
    """The first event at or after time `since` (an event id names its own seq)."""
    from datetime import datetime

    text = since.strip()
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
        return log.seq(text, 1)
    moment = moment_of(text, "--since")
    for line in log.lines:
        if datetime.fromisoformat(line.record.timestamp_utc) >= moment:
            return line.seq
    return log.head + 1


def _summary(line: LogLine) -> str:
    """One line saying what an event did."""
    record = line.record
    event, metrics = record.event, record.metrics
    match event:
        case RecordsMerged():
            return f"{event.rows} record(s) merged from {event.src} at seq {event.src_seq}"
        case SequencesImported():
            return f"{event.rows} record(s) imported" + (f", {event.skipped} skipped" if event.skipped else "")
        case OverlayWritten():
            columns = ", ".join(event.columns)
            return f"{event.namespace}: {event.rows} row(s) of {columns}" + (f" ({event.note})" if event.note else "")
        case RecordsTombstoned():
            return f"{event.rows} record(s) deleted" + (f": {event.reason}" if event.reason else "")
        case RecordsRestored():
            return f"{event.rows} record(s) restored"
        case StateSet():
            return f"state {', '.join(event.fields)} set on {event.rows} record(s)"
        case StateCleared():
            return f"state cleared on {event.rows} record(s)"
        case Materialized():
            said = f"{event.rows_dropped} row(s) dropped" if event.rows_dropped else ""
            folded = f"{', '.join(event.namespaces)} folded into the base" if event.namespaces else ""
            return "; ".join(s for s in (folded, said) if s) or "nothing changed"
        case OverlayRemoved():
            return f"overlay {event.namespace}: {event.parts} part(s) " + (
                "archived" if isinstance(event, OverlayArchived) else "removed"
            )
        case DatasetInitialized():
            return f"dataset {event.name} created"
    rows = metrics.get("rows_written") or metrics.get("rows")
    return f"{rows} row(s)" if rows else record.action
