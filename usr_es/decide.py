"""The decider: `decide(state, command, ...)` validates a command and returns the event to append.

Pure: no file, clock or randomness (the caller passes `now` and any input rows). A rejected
command raises a `UsrError` and produces nothing, so the log stays byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from .alphabet import ALPHABETS, BIO_TYPES, SortedKeys, alphabet_regex, alphabets_for, keys_of, sorted_keys
from .commands import (
    INLINE_IDS,
    AdoptDataset,
    AttachColumns,
    ClearState,
    Command,
    CompactOverlay,
    Deduplicate,
    FreezeRegistry,
    ImportSequences,
    InitDataset,
    Materialize,
    MergeDatasets,
    RecordRebase,
    RemoveOverlay,
    RestoreRecords,
    SetState,
    TakeSnapshot,
    TombstoneRecords,
)
from .errors import (
    AlphabetError,
    DatasetExists,
    DuplicateIDError,
    InvalidInput,
    NamespaceError,
    NotFound,
    SchemaError,
)
from .events import (
    ACTIONS,
    CommandsRebased,
    DatasetAdopted,
    DatasetInitialized,
    Event,
    Materialized,
    OverlayAdopted,
    OverlayArchived,
    OverlayCompacted,
    OverlayRemoved,
    OverlayWritten,
    RecordsAdopted,
    RecordsDeduplicated,
    RecordsMerged,
    RecordsReplaced,
    RecordsRestored,
    RecordsTombstoned,
    RegistryFrozen,
    SequencesImported,
    SnapshotTaken,
    StateCleared,
    StateSet,
)
from .names import QC_STATUSES, RESERVED_NAMESPACES, SPLITS, STATE_FIELDS, TOMBSTONE_NS
from .projectors import BASE_SCHEMA, PAYLOAD_SCHEMA, Payload
from .redaction import redact
from .registry import NAMESPACE_RE, Registry, format_type

if TYPE_CHECKING:
    from .attach_inputs import Selection
    from .merge import MergeSource
    from .original import OriginalDataset

_SAMPLE = 5


class NoChange(Exception):
    """The command is valid but would change nothing; its message says why, and `metrics` holds the counts
    the command's event would have recorded (the no-op receipt reports them)."""

    def __init__(self, message: str, *, metrics: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.metrics = metrics or {}


class Rows:
    """Input rows handed over to `decide`: the decision that uses them `take`s them, so it holds the only
    reference and the raw columns are freed as soon as they are parsed (bulk inputs run to hundreds of MB)."""

    def __init__(self, table: pa.Table) -> None:
        self._table: pa.Table | None = table

    def take(self) -> pa.Table:
        table, self._table = self._table, None
        if table is None:
            raise RuntimeError("input rows were already taken")
        return table


class KnownIds(Protocol):
    """The ids of the base, asked about a few at a time (the writer answers from the id index, ADR 0013)."""

    def __len__(self) -> int: ...

    def isin(self, wanted: pa.Array) -> pa.Array:
        """For each of `wanted`, whether the base holds it (a boolean array aligned with `wanted`)."""
        ...


@dataclass(frozen=True)
class ArrayIds:
    """`KnownIds` over the base's id column in hand."""

    ids: pa.ChunkedArray | pa.Array

    def __len__(self) -> int:
        return len(self.ids)

    def isin(self, wanted: pa.Array) -> pa.Array:
        return _present(wanted, self.ids)


def known_ids(ids: KnownIds | pa.ChunkedArray | pa.Array) -> KnownIds:
    return ArrayIds(ids) if isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids


@dataclass(frozen=True)
class DatasetState:
    """What decisions need to know about a dataset at the tail of its log.

    `overlays` holds the merged overlay tables of the namespaces the command touches (the caller
    reads them); `live_parts` counts the overlay parts per namespace.
    """

    name: str
    initialized: bool = False
    seq: int = 0
    ids: KnownIds | pa.ChunkedArray | pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    #: The base's distinct bio_types when known without reading the column (None: read `base`).
    bio_types: tuple[str, ...] | None = None
    base: pa.Table | None = None
    #: The base's column names when `base` holds only some of its columns (None: `base` has them all).
    base_names: tuple[str, ...] | None = None
    #: The base file's schema, where a decision compares columns (a merge); None: not read.
    base_schema: pa.Schema | None = None
    live_parts: dict[str, int] = field(default_factory=dict)
    overlays: dict[str, pa.Table] = field(default_factory=dict)
    #: The column names of namespaces' merged overlays, where the rows are not needed (a materialize decides
    #: on the names alone); a namespace not here has its names read from `overlays`.
    overlay_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The value columns' types of the namespaces a materialize folds (checked against the registry).
    overlay_types: dict[str, dict[str, pa.DataType]] = field(default_factory=dict)
    #: The base's rows of some ids (`id` and the given columns), for columns `base` does not hold: read where
    #: they are (the writer reads only the row groups holding a few ids). None: `base` holds what is needed.
    base_values: Callable[[pa.Array, list[str]], pa.Table] | None = None
    registry: Registry | None = None


@dataclass(frozen=True)
class Emit:
    """One event an accepted command appends: the event, its payload rows and Notify-facing fields."""

    event: Event
    payload: Payload | None
    args: dict[str, Any]
    metrics: dict[str, Any]
    maintenance: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return ACTIONS[type(self.event)]

    @property
    def redacted_args(self) -> dict[str, Any]:
        """`args` as written to the log: secrets redacted (`redaction.redact`)."""
        redacted: dict[str, Any] = redact(self.args)
        return redacted


@dataclass(frozen=True)
class Decision:
    """The outcome of an accepted command: the events to append, in order, as consecutive log lines
    written at once (docs/adr/0011). Every command so far emits exactly one."""

    emits: tuple[Emit, ...]

    @classmethod
    def of(
        cls,
        event: Event,
        payload: Payload | None,
        args: dict[str, Any],
        metrics: dict[str, Any],
        *,
        maintenance: dict[str, Any] | None = None,
    ) -> Decision:
        """A decision appending one event."""
        return cls((Emit(event, payload, args, metrics, maintenance or {}),))

    @property
    def only(self) -> Emit:
        """The single event of a one-event decision."""
        if len(self.emits) != 1:
            raise ValueError(f"the decision emits {len(self.emits)} events")
        return self.emits[0]


def decide(
    state: DatasetState,
    command: Command,
    *,
    now: str,
    rows: pa.Table | Rows | None = None,
) -> Decision:
    """Validate `command` against `state` and return the resulting event (or raise).

    Pass bulk input `rows` as `Rows(table)` without keeping another reference, so the decision can
    free the raw columns once it has parsed them."""
    inputs = rows if isinstance(rows, Rows) or rows is None else Rows(rows)
    del rows  # `inputs` holds the only reference the decision keeps
    match command:
        case InitDataset():
            if state.initialized:
                raise DatasetExists(f"Dataset already initialized: {state.name}")
            event: Event = DatasetInitialized(
                name=state.name, created_at=now, source=command.source, notes=command.notes
            )
            return Decision.of(event, None, {"source": command.source, "notes": command.notes}, {})
    if not state.initialized:
        raise NotFound(f"Dataset not initialized: {state.name}", hint=f"Run `usr init {state.name}` first.")
    match command:
        case ImportSequences():
            if inputs is None:
                raise InvalidInput("import needs input rows")
            return decide_import(state, command, inputs.take(), now)
        case AttachColumns():
            if inputs is None:
                raise InvalidInput("attach needs input rows")
            return _decide_attach(state, command, inputs, now)
        case TombstoneRecords() | RestoreRecords() | SetState() | ClearState():
            return _decide_ids(state, command, inputs.take() if inputs is not None else None, now)
        case CompactOverlay():
            return _decide_compact(state, command, now)
        case Materialize():
            return _decide_materialize(state, command)
        case Deduplicate():
            return _decide_dedupe(state, command)
        case RemoveOverlay():
            return _decide_remove_overlay(state, command)
        case TakeSnapshot():
            name = "records-" + now.replace("-", "").replace(":", "").replace(".", "").rstrip("Z")
            return Decision.of(SnapshotTaken(name=name, created_at=now), None, {}, {})
        case FreezeRegistry():
            digest = state.registry.hash if state.registry is not None else ""
            return Decision.of(RegistryFrozen(registry_hash=digest), None, {"registry_hash": digest}, {})
        case RecordRebase():
            return _decide_rebase(state, command, now)
    raise InvalidInput(f"unsupported command {type(command).__name__}")


def _decide_rebase(state: DatasetState, command: RecordRebase, now: str) -> Decision:
    """The line that records a rebase: it names lines before it (the fork, the other copy's head) and
    the commands decided again after them, so those must be in this log."""
    if not 1 <= command.fork_seq <= command.onto_seq <= state.seq:
        raise InvalidInput(f"a rebase onto seq {command.onto_seq} from fork {command.fork_seq} at seq {state.seq}")
    landed = [c.new_seq for c in command.commands if c.new_seq is not None]
    if any(not command.onto_seq < seq <= state.seq for seq in landed):
        raise InvalidInput("a rebased command landed outside the lines after the other copy's head")
    event = CommandsRebased(
        fork_seq=command.fork_seq,
        onto_seq=command.onto_seq,
        onto_hash=command.onto_hash,
        commands=command.commands,
        created_at=now,
    )
    args = {"fork_seq": command.fork_seq, "onto_seq": command.onto_seq, "onto_hash": command.onto_hash}
    metrics = {"reapplied": len(landed), "left_out": len(command.commands) - len(landed)}
    return Decision.of(event, None, args, metrics)


def _rows(mask: pa.Array | pa.ChunkedArray, start: int = 0) -> list[int]:
    """1-based row numbers where `mask` is true (counted from input row `start`)."""
    return [int(i) + 1 + start for i in pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()]


def _listing(rows: list[int], total: int | None = None) -> str:
    """The first ten of `rows` (1-based), and how many there are in all (`total`: when `rows` is only the
    first of them)."""
    count = len(rows) if total is None else total
    shown = ", ".join(str(r) for r in rows[:10])
    return shown + (f", ... ({count} in all)" if count > 10 else "")


def _label_column(rows: pa.Table, name: str, default: str, start: int = 0) -> pa.ChunkedArray:
    n = rows.num_rows
    if name not in rows.column_names:
        return pa.chunked_array([pa.repeat(pa.scalar(default, pa.string()), n)])
    column = pc.cast(rows.column(name), pa.string())
    blank = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0))
    bad = _rows(blank, start)
    if bad:
        raise SchemaError(
            f"{len(bad)} row(s) have missing/empty '{name}' (rows: {_listing(bad)}).",
            hint=f"Fill '{name}' on every row, or drop the column to use --{name.replace('_', '-')}.",
        )
    return column


def _label_pairs(bio_type: pa.ChunkedArray, alphabet: pa.ChunkedArray) -> list[tuple[str, str]]:
    """The distinct (bio_type, alphabet) pairs of a batch, in the order they first appear. Counted on the
    columns' dictionary codes: a group-by would load pyarrow's query engine (~15 ms of a small import)."""
    b = pc.dictionary_encode(bio_type.combine_chunks())
    a = pc.dictionary_encode(alphabet.combine_chunks())
    width = len(a.dictionary)
    codes = pc.add(pc.multiply(pc.cast(b.indices, pa.int64()), width), pc.cast(a.indices, pa.int64()))
    names_b, names_a = b.dictionary.to_pylist(), a.dictionary.to_pylist()
    return [(names_b[code // width], names_a[code % width]) for code in pc.unique(codes).to_pylist()]


#: Input rows an import decides at a time (a multiple of the base's row groups): its memory is about one
#: batch's, whatever the size of the input, and a batch is spooled while the next is read and decided
#: (docs/adr/0014; a 1M-row import measured 3.53-3.59 s / 361 MB with 262,144, 4.42-4.67 s / 494-510 MB with
#: 1,048,576: one batch, nothing overlapped).
IMPORT_BATCH_ROWS = 1 << 18
#: Input rows an attach decides at a time, as an import's (docs/adr/0014; an attach of many rows also holds
#: the base's ids to confirm its keys against: at 10M rows 262,144 measured 64.2 s / 1,416 MB, 524,288
#: 73.3 s / 1,477 MB).
ATTACH_BATCH_ROWS = 1 << 18


def table_batches(table: pa.Table, rows: int | None = None) -> Iterator[pa.Table]:
    """`table` in slices of `rows` rows (default `IMPORT_BATCH_ROWS`; no copy); an empty table once."""
    step = rows or IMPORT_BATCH_ROWS
    yield from (table.slice(at, step) for at in range(0, max(table.num_rows, 1), step))


@dataclass(frozen=True)
class _Accepted:
    """Where one batch's accepted rows sit: the first payload row, the first input row, and the input
    offsets of the accepted rows within the batch when some rows were left out (None: all were kept)."""

    payload_start: int
    input_start: int
    offsets: pa.Array | None


class _SuppliedIds:
    """An input's own `id` column, checked a batch at a time against the ids computed for its rows: as in
    USR, every row's id must be present and equal to the computed one (compared as given). Counted over the
    whole input; `error()` after the last batch names what was found. An input without an id column costs
    nothing. A batch without the column while others have it (JSON lines whose rows lack the key) counts
    its rows as missing."""

    def __init__(self) -> None:
        self.seen = False  # some batch had an id column
        self.missing = 0
        self.missing_rows: list[int] = []  # the first ten, 1-based
        self.absent = 0  # rows of batches without the column
        self.absent_rows: list[int] = []
        self.wrong = 0
        self.wrong_rows: list[int] = []
        self.samples: list[tuple[int, str | None, str]] = []  # (row, given, computed)

    @property
    def refused(self) -> bool:
        return bool(self.missing or self.wrong or (self.seen and self.absent))

    def check(self, given: pa.ChunkedArray | None, ids: pa.ChunkedArray, start: int) -> None:
        """Note the rows of one batch (input rows from `start`) whose `given` id is missing or not `ids`."""
        if given is None:
            self.absent += len(ids)
            _note_first(self.absent_rows, pa.array(range(min(len(ids), 10)), pa.int64()), start)
            return
        self.seen = True
        given = pc.cast(given, pa.string())
        blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(given)), 0), True)
        at = pc.indices_nonzero(blank)
        self.missing += len(at)
        _note_first(self.missing_rows, at, start)
        at = pc.indices_nonzero(pc.fill_null(pc.not_equal(given, ids), True))
        self.wrong += len(at)
        _note_first(self.wrong_rows, at, start)
        if len(self.samples) < 3:
            first = at.slice(0, 3 - len(self.samples))
            rows = [int(i) + 1 + start for i in first.to_pylist()]
            pairs = zip(rows, pc.take(given, first).to_pylist(), pc.take(ids, first).to_pylist(), strict=True)
            self.samples += [(row, value, computed) for row, value, computed in pairs]

    def error(self) -> SchemaError | None:
        """The input's refusal (missing ids first, as in USR), or None: every row's id is its computed one."""
        missing = self.missing + (self.absent if self.seen else 0)
        if missing:
            rows = sorted(self.missing_rows + (self.absent_rows if self.seen else []))
            return SchemaError(
                f"{missing} row(s) have missing/empty 'id' (rows: {_listing(rows, missing)}).",
                hint="Drop the id column (usr computes each id from bio_type|sequence), or give every row its id.",
            )
        if not self.wrong:
            return None
        shown = "; ".join(
            f"row {row} has {_shorter(given)}, computed {computed}" for row, given, computed in self.samples
        )
        return SchemaError(
            f"'id' mismatch for {self.wrong} row(s); ids must equal sha1(bio_type|sequence_norm).",
            hint=f"Rows: {_listing(self.wrong_rows, self.wrong)} ({shown}). "
            "Drop the id column (usr computes the ids) or fix the ids.",
        )


def _note_first(rows: list[int], at: pa.Array, start: int) -> None:
    """Add to `rows` (the first ten, 1-based) the batch offsets `at` of a batch starting at input row `start`."""
    if len(rows) < 10:
        rows += [int(i) + 1 + start for i in at.slice(0, 10 - len(rows)).to_pylist()]


def _shorter(value: str | None) -> str:
    """A supplied value as shown in a message: quoted, at most 44 characters of it."""
    text = value if value is None or len(value) <= 44 else value[:41] + "..."
    return repr(text)


class ImportDecider:
    """An import decided a batch of input rows at a time (docs/adr/0014), so the input need not fit in memory.

    `accept(rows)` validates one batch (row numbers in errors count from the first input row), computes its
    ids and returns its payload rows: every row (on_conflict=error: a duplicate, in the batch or already in
    the dataset, raises), or the first row of each sequence the dataset lacks (skip). Of each accepted row
    only its 8-byte id key is kept. An input's own `id` column must hold the computed ids: `finish()`, after
    the last batch, raises for the rows where it does not. A sequence repeated in two batches is found then:
    `repeated_keys()` names the keys accepted more than once, the caller hands back the accepted rows that
    hold them (`confirm`, which raises or names the later rows to leave out), and `decision()` gives the
    event. Pure: no file, clock or randomness; the caller keeps the payload rows."""

    def __init__(self, state: DatasetState, command: ImportSequences, now: str) -> None:
        if not state.initialized:
            raise NotFound(f"Dataset not initialized: {state.name}", hint=f"Run `usr init {state.name}` first.")
        self._command, self._now = command, now
        self._known = known_ids(state.ids) if len(state.ids) else None
        self.inputs = 0  # input rows seen
        self.accepted = 0  # payload rows returned
        self._keys: list[pa.Array] = []
        #: The accepted rows' keys in key order, once `repeated_keys` sorted them (None: not yet, or no rows).
        self.sorted: SortedKeys | None = None
        self._batches: list[_Accepted] = []
        self._left_out = 0  # later copies of a sequence repeated across batches (skip)
        self._supplied = _SuppliedIds()

    def accept(self, rows: pa.Table) -> pa.Table:
        """Validate one batch of input rows and return its payload rows (PAYLOAD_SCHEMA). Once a supplied id
        is found wrong the import is refused (`finish`), so later batches are only validated: no rows."""
        start = self.inputs
        self.inputs += rows.num_rows
        payload, kept = _import_batch(self._command, rows, start, self._known, self._supplied)
        del rows
        keys = keys_of(payload.column("id"))
        assert keys is not None  # sha1 hex ids are 40 bytes long
        self._keys.append(keys)
        self._batches.append(_Accepted(self.accepted, start, kept))
        self.accepted += payload.num_rows
        return payload

    def finish(self) -> None:
        """After the last batch, before `repeated_keys`: an input whose own id column does not hold the
        computed ids raises (as in USR, before any duplicate is looked for)."""
        error = self._supplied.error()
        if error is not None:
            raise error

    def template(self) -> SequencesImported:
        """The event `decision` gives, but for its counts: what the base rows of a payload row carry."""
        return SequencesImported(rows=0, skipped=0, source=self._source(), created_at=self._now)

    def _source(self) -> str:
        command = self._command
        return command.source if command.source is not None else (command.path or "")

    def repeated_keys(self) -> pa.Array | None:
        """The id keys accepted in more than one row (None: none; two rows of one batch never share an id,
        so only an input of several batches can have any). The keys are sorted once for it, and that order
        is kept (`sorted`): it is the id index run of the rows accepted (docs/adr/0014)."""
        if not self._keys:
            return None
        self.sorted = sorted_keys(pa.chunked_array(self._keys, pa.uint64()))
        self._keys = []
        if len(self._batches) < 2:
            return None
        ordered = self.sorted.keys
        n = len(ordered)
        repeated = pc.unique(pc.filter(ordered.slice(1), pc.equal(ordered.slice(1), ordered.slice(0, n - 1))))
        return repeated if len(repeated) else None

    def confirm(self, accepted: Iterable[pa.Table], repeated: pa.Array) -> pa.Array | None:
        """Given the accepted rows (the payload rows `accept` returned, in order) and the keys `repeated_keys`
        named, find the sequences accepted more than once: raise (error), or return the payload rows to leave
        out, every copy after the first (skip; None: keys collided, no sequence repeats)."""
        candidates = _rows_keyed(accepted, repeated)
        grouped = candidates.group_by("id", use_threads=False).aggregate([("row", "list"), ("row", "count")])
        repeated = grouped.filter(pc.greater(grouped.column("row_count"), 1))
        if not repeated.num_rows:
            return None
        rows = repeated.column("row_list").to_pylist()
        if self._command.on_conflict == "error":
            sequences = dict(
                zip(candidates.column("row").to_pylist(), candidates.column("sequence").to_pylist(), strict=True)
            )
            found = sorted(
                (sorted(self._input_row(r) for r in group), rid, sequences[min(group)])
                for rid, group in zip(repeated.column("id").to_pylist(), rows, strict=True)
            )
            groups = [_group_text(rid, at, seq) for at, rid, seq in found]
            raise _duplicates_error(groups)
        later = sorted(r for group in rows for r in sorted(group)[1:])
        self._left_out = len(later)
        return pa.array(later, pa.int64())

    def _input_row(self, payload_row: int) -> int:
        """The 1-based input row of an accepted row."""
        at = bisect_right([b.payload_start for b in self._batches], payload_row) - 1
        batch = self._batches[at]
        offset = payload_row - batch.payload_start
        return batch.input_start + 1 + (offset if batch.offsets is None else int(batch.offsets[offset].as_py()))

    def decision(self, payload: Payload | None) -> Decision:
        """The event for the rows accepted (`payload`: them, less the rows `confirm` left out)."""
        command, n_input = self._command, self.inputs
        if n_input == 0:
            raise SchemaError("The input has no rows.")
        written = self.accepted - self._left_out
        source = self._source()
        event = SequencesImported(rows=written, skipped=n_input - written, source=source, created_at=self._now)
        args = {
            "fmt": command.fmt,
            "path": command.path,
            "bio_type": command.bio_type,
            "alphabet": command.alphabet,
            "source": source,
            "on_conflict": command.on_conflict,
            "n": n_input,
        }
        metrics = {"rows_written": written, "rows_skipped": n_input - written}
        return Decision.of(event, payload if written else None, args, metrics)


def _import_batch(
    command: ImportSequences, rows: pa.Table, start: int, known: KnownIds | None, supplied: _SuppliedIds
) -> tuple[pa.Table, pa.Array | None]:
    """One batch of an import validated (input rows counted from `start`): its payload rows, and the offsets
    in the batch of the rows they are (None: every row). The input's own ids are checked into `supplied`;
    once one is wrong, no rows (the import is refused after the last batch)."""
    n_input = rows.num_rows
    if "sequence" not in rows.column_names:
        raise SchemaError("Missing required column: 'sequence'.", hint=f"Columns found: {rows.column_names}")
    if n_input == 0:
        return PAYLOAD_SCHEMA.empty_table(), None
    raw = pc.cast(rows.column("sequence"), pa.string())
    bio_type = _label_column(rows, "bio_type", command.bio_type, start)
    alphabet = _label_column(rows, "alphabet", command.alphabet, start)
    given = rows.column("id") if "id" in rows.column_names else None
    del rows
    plain = _plainly_valid(raw, bio_type, alphabet)
    if plain is not None:
        sequence = raw  # every row non-empty and in its alphabet: nothing to trim, nothing to report
        pairs = [plain]
    else:
        padded = pc.match_substring_regex(raw, r"^\s|\s$")
        # Trimming copies the column; most inputs have nothing to trim, so skip the copy then.
        sequence = pc.utf8_trim_whitespace(raw) if pc.any(padded).as_py() else raw
        empty = _rows(pc.or_kleene(pc.is_null(raw), pc.equal(pc.utf8_length(sequence), 0)), start)
        if empty:
            raise SchemaError(f"{len(empty)} row(s) have missing/empty 'sequence' (rows: {_listing(empty)}).")
        pairs = _checked_labels(sequence, bio_type, alphabet, start)
    del raw
    ids, distinct = _distinct_ids(sequence, bio_type, single=pairs[0][0] if len(pairs) == 1 else None)
    supplied.check(given, ids, start)
    del given
    if supplied.refused:
        return PAYLOAD_SCHEMA.empty_table(), None
    keep = None
    if not distinct:
        if command.on_conflict == "error":
            raise _duplicates_error(_duplicate_groups(ids, sequence, start))
        first_rows = (
            pa.table({"id": ids, "i": pa.array(range(n_input), pa.int64())}).group_by("id").aggregate([("i", "min")])
        )
        keep = pc.is_in(pa.array(range(n_input), pa.int64()), value_set=first_rows.column("i_min"))
    existing = known.isin(ids.combine_chunks()) if known is not None else None
    if existing is not None and pc.any(existing).as_py():
        if command.on_conflict == "error":
            clash = _rows(existing)
            clash_ids = pc.take(ids, pa.array([r - 1 for r in clash], pa.int64())).to_pylist()
            raise DuplicateIDError(
                f"{len(clash)} row(s) are already in the dataset (rows: {_listing([r + start for r in clash])}; "
                f"ids: {', '.join(clash_ids[:_SAMPLE])}).",
                groups=clash_ids,
                hint="Pass --on-conflict skip to import only the new sequences.",
            )
        fresh = pc.invert(existing)
        keep = fresh if keep is None else pc.and_(keep, fresh)

    payload = pa.table([ids, bio_type, sequence, alphabet], schema=PAYLOAD_SCHEMA)
    if keep is None:
        return payload, None
    return payload.filter(keep), pc.indices_nonzero(keep)


def _plainly_valid(
    raw: pa.Array | pa.ChunkedArray, bio_type: pa.ChunkedArray, alphabet: pa.ChunkedArray
) -> tuple[str, str] | None:
    """The (bio_type, alphabet) of a batch of one known pair whose every sequence is present and wholly in
    the alphabet, as stored: one scan instead of looking for padding first, and no other check (the usual
    input). None: the batch needs the full checks (`_checked_labels`)."""
    if raw.null_count or len(raw) == 0:
        return None
    bt, ab = bio_type[0].as_py(), alphabet[0].as_py()
    if ab not in ALPHABETS or ALPHABETS[ab][0] != bt or bt not in BIO_TYPES:
        return None
    if not (pc.all(pc.equal(bio_type, bt)).as_py() and pc.all(pc.equal(alphabet, ab)).as_py()):
        return None
    return (bt, ab) if pc.all(pc.match_substring_regex(raw, alphabet_regex(ab))).as_py() else None


def _checked_labels(
    sequence: pa.Array | pa.ChunkedArray, bio_type: pa.ChunkedArray, alphabet: pa.ChunkedArray, start: int
) -> list[tuple[str, str]]:
    """The batch's (bio_type, alphabet) pairs once every row's are supported and its sequence is in its
    alphabet; else an error naming a row that is not (rows counted from input row `start`): an unsupported
    bio_type first, then pair by pair in the order they appear, the first failing pair's first row."""
    for bt in pc.unique(bio_type).to_pylist():
        if bt not in BIO_TYPES:
            first = _rows(pc.equal(bio_type, bt), start)[0]
            raise SchemaError(f"Row {first}: Unsupported bio_type '{bt}'. Allowed: {', '.join(BIO_TYPES)}.")
    pairs = _label_pairs(bio_type, alphabet)
    for bt, ab in pairs:
        if ab not in ALPHABETS or ALPHABETS[ab][0] != bt:
            first = _rows(pc.and_(pc.equal(bio_type, bt), pc.equal(alphabet, ab)), start)[0]
            raise AlphabetError(
                f"Row {first}: Unsupported alphabet '{ab}' for bio_type '{bt}'. "
                f"Allowed: {', '.join(alphabets_for(bt))}."
            )
        in_group = pc.and_(pc.equal(bio_type, bt), pc.equal(alphabet, ab))
        bad = _rows(pc.and_(in_group, pc.invert(pc.match_substring_regex(sequence, alphabet_regex(ab)))), start)
        if bad:
            raise AlphabetError(
                f"{len(bad)} row(s) contain characters outside {ab} (rows: {_listing(bad)}).",
                hint=f"{ab} allows {ALPHABETS[ab][1]} in either case; no gaps, spaces or ambiguity codes.",
            )
    return pairs


def _duplicates_error(groups: list[str]) -> DuplicateIDError:
    return DuplicateIDError(
        f"{len(groups)} duplicate sequence group(s) in the input (showing up to {_SAMPLE}): "
        + "; ".join(groups[:_SAMPLE]),
        groups=groups,
        hint="Remove the duplicates, or pass --on-conflict skip to keep the first of each.",
    )


def _group_text(record_id: str, rows: list[int], sequence: str) -> str:
    """`<id prefix> rows a,b 'SEQ'`: one group of rows holding the same sequence (1-based rows)."""
    shown = sequence if len(sequence) <= 24 else sequence[:21] + "..."
    return f"{record_id[:12]} rows {','.join(map(str, rows))} '{shown}'"


def _duplicate_groups(ids: pa.ChunkedArray, sequences: pa.ChunkedArray | pa.Array, start: int = 0) -> list[str]:
    """`<id prefix> rows a,b 'SEQ'` for every id that occurs more than once (1-based rows from `start`)."""
    n = len(ids)
    grouped = (
        pa.table({"id": ids, "row": pa.array(range(1, n + 1), pa.int64())})
        .group_by("id", use_threads=False)
        .aggregate([("row", "list"), ("row", "count")])
    )
    dups = grouped.filter(pc.greater(grouped.column("row_count"), 1))
    found = sorted(
        (sorted(rows), rid)
        for rid, rows in zip(dups.column("id").to_pylist(), dups.column("row_list").to_pylist(), strict=True)
    )
    return [
        _group_text(rid, [r + start for r in rows], pc.take(sequences, pa.array([rows[0] - 1], pa.int64()))[0].as_py())
        for rows, rid in found
    ]


def decide_adopt(
    state: DatasetState, command: AdoptDataset, original: OriginalDataset, now: str, *, logged: int = 0
) -> Decision:
    """An adoption's events (docs/adr/0015): the dataset, with the digest of the original's log lines it
    follows; its records as stored; each overlay namespace as the original's reads resolve it. `logged`:
    how many of them an interrupted adoption already appended (the rest are decided again, the same). The
    caller answers a dataset that is adopted, or native, before (it may tidy what an adoption left)."""
    legacy = original.legacy
    overlays = original.overlays
    total = 1 + (1 if original.base.num_rows else 0) + len(overlays)
    found = original.summary()
    head = DatasetAdopted(
        name=state.name,
        created_at=original.created_at or now,
        source=original.source,
        notes=original.notes,
        legacy_lines=legacy.lines if legacy is not None else 0,
        legacy_bytes=legacy.size if legacy is not None else 0,
        legacy_digest=legacy.digest if legacy is not None else "",
        events=total,
        found=found,
    )
    args: dict[str, Any] = {"keep_originals": command.keep_originals, "files": len(original.files)}
    emits = [Emit(head, None, args, {"rows": original.base.num_rows, "overlays": len(overlays)})]
    if original.base.num_rows:
        rows = original.base.num_rows
        records = RecordsAdopted(
            rows=rows, skipped=0, source="", created_at=now, id_mismatches=len(original.id_mismatches)
        )
        emits.append(Emit(records, original.base, {"n": rows}, {"rows_written": rows, "rows_skipped": 0}))
    for overlay in overlays:
        table = overlay.table
        columns = {f.name: format_type(f.type) for f in table.schema if f.name != "id"}
        event = OverlayAdopted(
            namespace=overlay.namespace,
            key=overlay.key,
            columns=columns,
            rows=table.num_rows,
            rows_missing=overlay.rows_missing,
            created_at=overlay.created_at or now,
            contract_hash=overlay.contract_hash,
            files=overlay.files,
        )
        named: dict[str, Any] = {"namespace": overlay.namespace, "key": overlay.key, "files": list(overlay.files)}
        emits.append(Emit(event, table, named, {"rows_written": table.num_rows, "rows_missing": overlay.rows_missing}))
    return Decision(tuple(emits[logged:]))


def decide_import(state: DatasetState, command: ImportSequences, rows: pa.Table, now: str) -> Decision:
    """An import of rows in memory, decided a batch at a time like any import (its payload in memory)."""
    decider = ImportDecider(state, command, now)
    accepted = [decider.accept(batch) for batch in table_batches(rows)]
    del rows
    decider.finish()
    repeated = decider.repeated_keys()
    later = decider.confirm(accepted, repeated) if repeated is not None else None
    kept = list(without_rows(accepted, later)) if later is not None else accepted
    return decider.decision(pa.concat_tables(kept) if kept else PAYLOAD_SCHEMA.empty_table())


def _rows_keyed(batches: Iterable[pa.Table], keys: pa.Array) -> pa.Table:
    """The payload rows in `batches` whose id keys are among `keys`: their `id`, `sequence` and payload `row`."""
    found: list[pa.Table] = []
    start = 0
    for batch in batches:
        ids = batch.column("id")
        held = pc.indices_nonzero(pc.is_in(keys_of(ids), value_set=keys)).cast(pa.int64())
        sequences = batch.column("sequence").take(held)
        found.append(pa.table({"id": ids.take(held), "sequence": sequences, "row": pc.add(held, start)}))
        start += batch.num_rows
    return pa.concat_tables(found)


def without_rows(batches: Iterable[pa.Table], rows: pa.Array) -> Iterator[pa.Table]:
    """The payload rows in `batches` but those numbered `rows` (0-based over all batches), a batch at a time."""
    start = 0
    for batch in batches:
        numbers = pa.array(range(start, start + batch.num_rows), pa.int64())
        yield batch.filter(pc.invert(pc.is_in(numbers, value_set=rows)))
        start += batch.num_rows


_HASH_CHUNK = 1 << 16


def compute_ids(
    sequence: pa.ChunkedArray | pa.Array, bio_type: pa.ChunkedArray | pa.Array, *, single: str | None
) -> pa.ChunkedArray:
    """sha1 ids for (bio_type, trimmed sequence) rows, hashed in slices to bound memory."""
    return _ids_of(sequence, bio_type, single, None)


def _distinct_ids(
    sequence: pa.ChunkedArray | pa.Array, bio_type: pa.ChunkedArray | pa.Array, *, single: str | None
) -> tuple[pa.ChunkedArray, bool]:
    """`compute_ids`, and whether the ids are all distinct: told by a set of the digests as they are made
    (31 ms per 262,144 rows; `pc.unique` of the id column took 91 ms)."""
    seen: set[str] = set()
    ids = _ids_of(sequence, bio_type, single, seen)
    return ids, len(seen) == len(ids)


def _ids_of(
    sequence: pa.ChunkedArray | pa.Array,
    bio_type: pa.ChunkedArray | pa.Array,
    single: str | None,
    seen: set[str] | None,
) -> pa.ChunkedArray:
    sha1 = hashlib.sha1
    chunks = []
    for start in range(0, len(sequence), _HASH_CHUNK):
        if single is not None:  # the prefix hashed once, its state copied per row (~15% faster than hashing it)
            prefixed = sha1(f"{single}|".encode()).copy
            hexes = []
            for data in sequence.slice(start, _HASH_CHUNK).cast(pa.binary()).to_pylist():
                state = prefixed()
                state.update(data)
                hexes.append(state.hexdigest())
        else:
            seqs = sequence.slice(start, _HASH_CHUNK).to_pylist()
            bts = bio_type.slice(start, _HASH_CHUNK).to_pylist()
            hexes = [sha1(f"{b}|{s}".encode()).hexdigest() for b, s in zip(bts, seqs, strict=True)]
        if seen is not None:
            seen.update(hexes)
        chunks.append(pa.array(hexes, pa.string()))
    return pa.chunked_array(chunks, pa.string())


# -- overlays, tombstones, state, maintenance ---------------------------------------------------


def _bio_types(state: DatasetState) -> list[str]:
    """The base's distinct bio_types (from `state.bio_types`, else from its column)."""
    if state.bio_types is not None:
        return list(state.bio_types)
    base = state.base
    if base is None or base.num_rows == 0:
        return []
    return [str(v) for v in pc.unique(base.column("bio_type")).to_pylist()]


def _match_ids(state: DatasetState, keys: pa.ChunkedArray, key: str) -> pa.Array | None:
    """The id of the record each key names (null: no such record), where matching cannot raise: an id
    key, or an exact-sequence key in a dataset of one bio_type (ids are sha1(bio_type|sequence), so a key
    equals a record's sequence exactly when its id is the record's id). Asked of the base's known ids
    (the id index on the write path, ADR 0013): no base column is read. Else None."""
    if not len(state.ids):
        return pa.nulls(len(keys), pa.string())
    if key == "id":
        ids = keys.combine_chunks()
    elif key in ("sequence", "sequence_norm"):
        bio_types = _bio_types(state)
        if len(bio_types) != 1:
            return None
        ids = compute_ids(keys, keys, single=bio_types[0]).combine_chunks()
    else:
        return None
    present = known_ids(state.ids).isin(ids)
    return pc.if_else(present, ids, pa.scalar(None, pa.string()))


def _id_order(index: pa.Array) -> pa.Array:
    """The positions of `index` in id order, the unmatched (null) ones last."""
    return pc.array_sort_indices(index, null_placement="at_end")


def _distinct_by_match(keys: pa.ChunkedArray, index: pa.Array, order: pa.Array) -> bool:
    """True when the keys are certainly distinct: no two matched the same record (equal keys match the
    same one; in id order such a pair is adjacent, so no hash table is built), and the unmatched keys are
    distinct."""
    found = pc.is_valid(index)
    matched = pc.take(index, order.slice(0, len(index) - index.null_count))
    if len(matched) > 1 and pc.any(pc.equal(matched.slice(1), matched.slice(0, len(matched) - 1))).as_py():
        return False
    del matched
    unmatched = pc.filter(keys, pc.invert(found))
    return bool(pc.count_distinct(unmatched, mode="all").as_py() == len(unmatched))


def _resolve_keys(state: DatasetState, keys: pa.ChunkedArray, key: str) -> pa.Array:
    """The id of the record each normalized key names (null: not in the dataset), reading the base:
    the keys `_match_ids` leaves (case-insensitive sequences; a dataset of several bio_types refused)."""
    base = state.base
    if base is None or base.num_rows == 0:
        return pa.nulls(len(keys), pa.string())
    if len(_bio_types(state)) > 1:
        raise SchemaError(
            "Attach by sequence requires a dataset with a single bio_type.", hint="Attach by --key id instead."
        )
    if pc.any(pc.not_equal(base.column("alphabet"), "dna_4")).as_py():
        raise SchemaError("sequence_ci is only valid for dna_4 datasets.", hint="Use --key sequence.")
    sequences = pc.utf8_upper(base.column("sequence").combine_chunks())
    if len(pc.unique(sequences)) != len(sequences):
        raise SchemaError(
            "sequence_ci: duplicate base keys detected (sequences equal up to case).",
            hint="Use --key sequence or --key id.",
        )
    return pc.take(base.column("id"), pc.index_in(keys, value_set=sequences)).combine_chunks()


def _attach_target(state: DatasetState, command: AttachColumns) -> dict[str, pa.DataType]:
    """The registered columns of the namespace an attach writes (its name checked)."""
    ns = command.namespace
    if not NAMESPACE_RE.match(ns):
        raise NamespaceError(f"Invalid namespace '{ns}': must match {NAMESPACE_RE.pattern}.")
    if ns in RESERVED_NAMESPACES:
        hint = "Use `usr delete/restore`." if ns == "usr" else "Use `usr state set/clear`."
        raise NamespaceError(f"Namespace '{ns}' is reserved.", hint=hint)
    if state.registry is None:
        raise NamespaceError("A registry is required to attach.")
    return state.registry.require(ns).column_types()


def _selected(rows: pa.Table, command: AttachColumns, registered: dict[str, pa.DataType]) -> Selection:
    from .attach_inputs import select_columns

    selection = select_columns(
        rows, namespace=command.namespace, key=command.key, key_col=command.key_col, columns=command.columns
    )
    for name in selection.columns:
        if name not in registered:
            raise NamespaceError(
                f"Overlay column '{name}' not registered under namespace '{command.namespace}'.",
                hint=f"Registered: {', '.join(registered)}. Pick columns with --columns, or re-register the namespace.",
            )
    return selection


def _missing_error(missing: int, absent: list[int], sample: list[str]) -> InvalidInput:
    """`absent`: the 1-based rows of the first (up to 10) keys naming no record; `sample`: the first keys."""
    return InvalidInput(
        f"{missing} row(s) reference keys not present in the dataset (rows: {_listing(absent, missing)}; "
        f"sample: {', '.join(sample)}).",
        hint="Pass --allow-missing to skip them (they are counted in the event).",
    )


def _attach_decision(
    state: DatasetState,
    command: AttachColumns,
    types: dict[str, str],
    payload: Payload | None,
    counts: tuple[int, int, int],
    now: str,
) -> Decision:
    """The event of an attach: `counts` are (input rows, rows written, rows missing)."""
    assert state.registry is not None  # checked by `_attach_target`
    n_in, written, missing = counts
    ns = command.namespace
    event = OverlayWritten(
        namespace=ns,
        key=command.key,
        columns=types,
        rows=written,
        rows_missing=missing,
        created_at=now,
        contract_hash=state.registry.contract_hash(ns),
        note=command.note,
    )
    args = {
        "namespace": ns,
        "key": command.key,
        "key_col": command.key_col,
        "columns": list(types),
        "path": command.path,
        "allow_overwrite": command.allow_overwrite,
        "allow_missing": command.allow_missing,
        "note": command.note,
        "rows_incoming": n_in,
        "rows_matched": written,
        "rows_missing": missing,
    }
    metrics = {"rows_incoming": n_in, "rows_written": written, "rows_missing": missing}
    return Decision.of(event, payload if written else None, args, metrics)


#: The input row of each payload row, kept beside an attach's sorted runs for messages (docs/adr/0014).
INPUT_ROW = "__input_row"


class AttachDecider:
    """An attach decided a batch of input rows at a time (docs/adr/0014); a table held whole is one batch.

    `accept(rows)` checks one batch (keys and casts; row numbers in errors count over the whole input) and
    returns its matched rows in id order with their input rows (`INPUT_ROW`); the caller keeps them as
    sorted runs. After the last batch, `finish()` checks the keys that named no record (repeats, and missing
    keys unless allowed); the caller merges the runs into one id order and hands each merged piece to
    `ordered`, which refuses a record named by two rows or a value written over (unless allowed) and returns
    the payload rows. `decision()` gives the event. Pure: no file, clock or randomness. With several
    problems in one input, a batch may meet a later one first (one batch reports as a single table does)."""

    def __init__(self, state: DatasetState, command: AttachColumns, now: str) -> None:
        self._registered = _attach_target(state, command)
        self._state, self._command, self._now = state, command, now
        self.inputs = 0
        self.written = 0
        self.types: dict[str, str] = {}
        self._unmatched: list[pa.Table] = []  # the keys naming no record, with their input rows

    @staticmethod
    def streams(state: DatasetState, command: AttachColumns) -> bool:
        """Whether batches are decided apart at the cost of one batch: each key's record is found without
        reading the base (ids, or exact sequences in a dataset of one bio_type). Else each batch reads the
        base's sequences, and the caller hands the input over as one batch."""
        if command.key == "id":
            return True
        return command.key in ("sequence", "sequence_norm") and (not len(state.ids) or len(_bio_types(state)) == 1)

    def accept(self, rows: pa.Table) -> pa.Table:
        from .attach_inputs import cast_column, normalize_keys, require_unique_keys, rows_from

        start = self.inputs
        self.inputs += rows.num_rows
        command = self._command
        with rows_from(start):
            selection = _selected(rows, command, self._registered)
            del rows  # the selection holds the columns it needs; the rest of the input is freed
            keys = normalize_keys(selection.keys, command.key, check_duplicates=False)
            matched = _match_ids(self._state, keys, command.key)  # None: matching can fail, done after the casts
            order = _id_order(matched) if matched is not None else None
            distinct = matched is not None and order is not None and _distinct_by_match(keys, matched, order)
            require_unique_keys(keys, command.key, known_distinct=distinct)
            raw = selection.columns
            del selection  # from here each raw column is freed once it is cast
            cast = {name: cast_column(raw.pop(name), name, self._registered[name], parse_json=command.parse_json)
                    for name in list(raw)}  # fmt: skip
        if matched is None or order is None:
            matched = _resolve_keys(self._state, keys, command.key)
            order = _id_order(matched)
        if matched.null_count:
            absent = pc.indices_nonzero(pc.is_null(matched))
            self._unmatched.append(
                pa.table({"key": pc.take(keys, absent), "row": pc.add(absent.cast(pa.int64()), start)})
            )
        del keys
        # The rows in id order (as part files are): each column is taken once in that order, one at a time.
        picked = order.slice(0, len(matched) - matched.null_count)
        columns = {"id": matched.take(picked)}
        del matched, order
        self.types = {name: format_type(self._registered[name]) for name in cast}
        for name in list(cast):
            columns[name] = pc.take(cast.pop(name), picked)
        columns[INPUT_ROW] = pc.add(picked.cast(pa.int64()), start)
        return pa.table(columns)

    @property
    def missing(self) -> int:
        return sum(t.num_rows for t in self._unmatched)

    def finish(self) -> None:
        """After the last batch: a key naming no record repeated anywhere in the input, or missing keys
        without allow_missing, raise."""
        from .attach_inputs import duplicate_keys_error

        unmatched = pa.concat_tables(self._unmatched) if self._unmatched else None
        if unmatched is None:
            return
        if len(self._unmatched) > 1 and pc.count_distinct(unmatched.column("key"), mode="all").as_py() != len(
            unmatched
        ):
            raise duplicate_keys_error(
                unmatched.column("key"), unmatched.column("row").combine_chunks(), self._command.key
            )
        if not self._command.allow_missing:
            rows = unmatched.column("row").slice(0, 10).to_pylist()
            sample = [str(k) for k in unmatched.column("key").slice(0, _SAMPLE).to_pylist()]
            raise _missing_error(unmatched.num_rows, [r + 1 for r in rows], sample)

    def ordered(self, rows: pa.Table) -> pa.Table:
        """Payload rows from a piece of the merged runs (in id order): two rows naming one record, or a value
        written over without allow_overwrite, raise."""
        from .attach_inputs import repeated_keys_error, rows_text

        found = _repeated_records(rows.column("id").combine_chunks(), rows.column(INPUT_ROW).combine_chunks())
        if found:
            samples = [f"record {rid} (rows {rows_text(at, ',')})" for at, rid in found[:_SAMPLE]]
            raise repeated_keys_error(len(found), samples, self._command.key)
        payload = rows.drop_columns([INPUT_ROW])
        _check_overwrite(self._state, self._command.namespace, payload, self._command.allow_overwrite)
        self.written += payload.num_rows
        return payload

    def decision(self, payload: Payload | None) -> Decision:
        counts = (self.inputs, self.written, self.missing)
        return _attach_decision(self._state, self._command, self.types, payload, counts, self._now)


def _repeated_records(ids: pa.Array, rows: pa.Array) -> list[tuple[list[int], str]]:
    """In rows sorted by id, each id held by more than one row: (its 0-based input rows, the id), in the
    order of their first rows."""
    n = len(ids)
    if n < 2:
        return []
    same = pc.indices_nonzero(pc.equal(ids.slice(1), ids.slice(0, n - 1)))
    if not len(same):
        return []
    after = pc.add(same, 1)
    pairs = pa.table(
        {
            "id": pa.concat_arrays([pc.take(ids, same), pc.take(ids, after)]),
            "row": pa.concat_arrays([pc.take(rows, same), pc.take(rows, after)]),
        }
    )
    groups = pairs.group_by("id", use_threads=False).aggregate([("row", "distinct")])
    held = zip(groups.column("row_distinct").to_pylist(), groups.column("id").to_pylist(), strict=True)
    return sorted((sorted(at), rid) for at, rid in held)


def _decide_attach(state: DatasetState, command: AttachColumns, inputs: Rows, now: str) -> Decision:
    """An attach of a table held whole: one batch of `AttachDecider` (the writer decides files a batch at a
    time through the same decider)."""
    decider = AttachDecider(state, command, now)
    run = decider.accept(inputs.take())
    decider.finish()
    return decider.decision(decider.ordered(run))


def _check_overwrite(state: DatasetState, ns: str, incoming: pa.Table, allow: bool) -> None:
    """Writing a cell that already holds a value needs allow_overwrite (empty cells never do)."""
    from .overlays import live_view

    if allow or incoming.num_rows == 0 or state.base is None:
        return
    names = [c for c in incoming.column_names if c != "id"]
    merged = state.overlays.get(ns)
    held = state.base.column_names
    in_base = [c for c in names if c in (state.base_names if state.base_names is not None else held)]
    if merged is None and not in_base:
        return
    if in_base and state.base_values is not None and not set(in_base) <= set(held):
        subset = state.base_values(incoming.column("id").combine_chunks(), in_base)  # read where they are
    elif in_base:  # materialized columns of the namespace: the base's values of these records count too
        subset = state.base.filter(pc.is_in(state.base.column("id"), value_set=incoming.column("id")))
    else:
        subset = incoming.select(["id"])
    view = live_view(subset, {ns: merged} if merged is not None else {}, include_deleted=True)
    taken = [c for c in names if c in view.column_names and view.column(c).null_count < view.num_rows]
    if taken:
        busy = [c for c in taken if pc.any(pc.is_valid(view.column(c))).as_py()]
        sample = view.filter(pc.is_valid(view.column(taken[0]))).column("id").slice(0, _SAMPLE).to_pylist()
        raise NamespaceError(
            f"Column(s) {', '.join(busy)} already hold values for some of these records (sample ids: "
            f"{', '.join(sample)}).",
            hint="Pass --allow-overwrite to replace them (records without a value are never an overwrite).",
        )


def _ids_from(command: TombstoneRecords | RestoreRecords | SetState | ClearState, rows: pa.Table | None) -> list[str]:
    raw = list(command.ids) if command.ids is not None else []
    if rows is not None and "id" in rows.column_names:
        raw.extend(rows.column("id").to_pylist())
    ids = [str(i).strip() for i in raw if i is not None and str(i).strip()]
    if not ids:
        raise InvalidInput("Provide at least one id (--id or --id-file).")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:_SAMPLE]
        raise InvalidInput(f"Duplicate ids in the request: {', '.join(dup)}.")
    return ids


def _present(wanted: pa.Array, ids: pa.ChunkedArray | pa.Array) -> pa.Array:
    """For each of `wanted` (non-null), whether it is one of `ids` (`is_in`), without hashing
    every id when only a few are wanted: the ids are scanned against the small set instead."""
    if len(ids) == 0:
        return pa.array([False] * len(wanted), pa.bool_())
    if len(wanted) <= 4:  # a linear search per id, stopping at the first match
        return pa.array([pc.index(ids, value).as_py() >= 0 for value in wanted.to_pylist()], pa.bool_())
    if len(wanted) * 16 < len(ids):
        hits = pc.filter(ids, pc.is_in(ids, value_set=wanted))
        return pc.is_in(wanted, value_set=pa.chunked_array(hits).combine_chunks())
    return pc.is_in(wanted, value_set=pa.chunked_array(ids).combine_chunks())


def _decide_ids(
    state: DatasetState,
    command: TombstoneRecords | RestoreRecords | SetState | ClearState,
    rows: pa.Table | None,
    now: str,
) -> Decision:
    requested = _ids_from(command, rows)
    wanted = pa.array(requested, pa.string())
    present = known_ids(state.ids).isin(wanted)
    missing = len(wanted) - pc.sum(present.cast(pa.int64())).as_py()
    if missing and not command.allow_missing:
        absent = pc.filter(wanted, pc.invert(present)).to_pylist()
        raise NotFound(
            f"{missing} id(s) not found in dataset {state.name}: {', '.join(absent[:_SAMPLE])}"
            + (", ..." if missing > _SAMPLE else ""),
            hint="Pass --allow-missing to skip unknown ids.",
        )
    ids = pc.filter(wanted, present)
    ids = ids.take(pc.sort_indices(ids))  # parts hold their rows by id (projectors.sorted_part)
    if len(ids) == 0:
        raise NoChange("None of the ids is in the dataset; nothing to do.")
    inline = tuple(ids.to_pylist()) if len(ids) <= INLINE_IDS else None
    payload = None if inline is not None else pa.table({"id": ids})
    common = {"ids": inline, "rows": len(ids), "rows_missing": missing, "created_at": now}
    args: dict[str, Any] = {"rows": len(ids), "allow_missing": command.allow_missing}
    event: Event
    match command:
        case TombstoneRecords():
            event = RecordsTombstoned(**common, reason=command.reason)
            args["reason"] = command.reason
        case RestoreRecords():
            event = RecordsRestored(**common)
        case SetState():
            fields = {name: getattr(command, name) for name in STATE_FIELDS if getattr(command, name) is not None}
            if not fields:
                raise InvalidInput("Provide at least one usr_state field to update.")
            if "qc_status" in fields and fields["qc_status"] not in QC_STATUSES:
                raise InvalidInput(
                    f"usr_state__qc_status must be one of: {', '.join(QC_STATUSES)}.", hint="e.g. --qc-status pass"
                )
            if "split" in fields and fields["split"] not in SPLITS:
                raise InvalidInput(f"usr_state__split must be one of: {', '.join(SPLITS)}.", hint="e.g. --split train")
            if "supersedes" in fields and not str(fields["supersedes"]).strip():
                raise InvalidInput("usr_state__supersedes must not be empty.")
            if "lineage" in fields:
                fields["lineage"] = tuple(str(x).strip() for x in fields["lineage"] if str(x).strip())
            event = StateSet(**common, fields=tuple(fields), **fields)
            args.update({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})
        case ClearState():
            event = StateCleared(**common)
    metrics = {"rows_written": len(ids), "rows_missing": missing}
    return Decision.of(event, payload, args, metrics)


def _decide_compact(state: DatasetState, command: CompactOverlay, now: str) -> Decision:
    ns = command.namespace
    parts = state.live_parts.get(ns, 0)
    if parts == 0:
        raise NotFound(f"Overlay parts not found for namespace '{ns}'.", hint="`usr info DATASET` lists namespaces.")
    if parts == 1:
        raise NoChange(f"Namespace '{ns}' has a single overlay part; nothing to compact.")
    merged = state.overlays[ns]
    event = OverlayCompacted(namespace=ns, parts=parts, rows=merged.num_rows, created_at=now)
    args, metrics = {"namespace": ns, "parts": parts}, {"rows": merged.num_rows}
    return Decision.of(event, None, args, metrics)


def _check_contracts(state: DatasetState, namespaces: list[str]) -> None:
    """A materialize writes namespaced columns into the base: each namespace must be registered, and each
    column registered with the type its overlay holds (as an attach requires)."""
    registry = state.registry
    if registry is None:
        return
    for ns in namespaces:
        if ns in RESERVED_NAMESPACES:
            continue
        spec = registry.namespaces.get(ns)
        if spec is None:
            raise NamespaceError(
                f"Namespace '{ns}' is not registered: materialize folds only registered namespaces.",
                hint=f"Register it again (`usr namespace register {ns} ...`) or leave it out with --namespaces.",
            )
        wanted = spec.column_types()
        for name, dtype in state.overlay_types.get(ns, {}).items():
            want = wanted.get(name)
            if want is None:
                raise NamespaceError(
                    f"Column '{name}' is not registered under '{ns}': materialize would write an unregistered column.",
                    hint=f"Register it (`usr namespace register {ns} --overwrite ...`) or leave '{ns}' out.",
                )
            if not want.equals(dtype):
                raise NamespaceError(
                    f"Column '{name}' holds {format_type(dtype)} values but the registry says {format_type(want)}.",
                    hint="Attach the values again in the registered type, or register the type they have.",
                )


def _decide_materialize(state: DatasetState, command: Materialize) -> Decision:
    from .overlays import appended_columns, tombstoned_ids

    if command.drop_overlays and command.archive_overlays:
        raise InvalidInput(
            "Choose at most one of --drop-overlays and --archive-overlays.",
            hint="--drop-overlays removes the folded parts; --archive-overlays moves them to _derived/_archived/.",
        )
    live = sorted(ns for ns in state.live_parts if ns != TOMBSTONE_NS)
    if command.namespaces is None:
        chosen = live
    else:
        chosen = sorted(set(command.namespaces))
        if TOMBSTONE_NS in chosen:
            raise NamespaceError("Tombstones are not materialized as columns.", hint="Use --drop-deleted.")
        unknown = [ns for ns in chosen if ns not in live]
        if unknown:
            raise NotFound(f"No overlays for namespace(s): {', '.join(unknown)}.", hint=f"Overlays: {', '.join(live)}")
    _check_contracts(state, chosen)
    tombs = state.overlays.get(TOMBSTONE_NS)
    gone_ids = pa.array([], pa.string())  # the base ids --drop-deleted removes, sorted
    if command.drop_deleted and tombs is not None and state.base is not None:
        # Only tombstoned ids still in the base count: rows an earlier --drop-deleted removed are gone.
        base_ids = state.base.column("id")
        gone = pc.filter(base_ids, pc.is_in(base_ids, value_set=tombstoned_ids(tombs)))
        gone_ids = gone.combine_chunks() if isinstance(gone, pa.ChunkedArray) else gone
        gone_ids = gone_ids.take(pc.sort_indices(gone_ids))
    if not chosen and not len(gone_ids):
        raise NoChange("No overlays to materialize.")
    assert state.base is not None
    try:  # the columns the fold appends to the base (and the same check: no column in two namespaces)
        names = list(state.base_names) if state.base_names is not None else state.base.column_names
        columns = {ns: state.overlay_columns.get(ns) or state.overlays[ns].column_names for ns in chosen}
        added = appended_columns(names, columns)
    except ValueError as exc:
        raise SchemaError(f"Cannot materialize: {exc}.") from None
    dropped = len(gone_ids)  # the fold drops exactly the tombstoned ids still in the base
    rows = state.base.num_rows - dropped
    inline = tuple(gone_ids.to_pylist()) if dropped and len(gone_ids) <= INLINE_IDS else None
    payload = pa.table({"id": gone_ids}) if dropped and inline is None else None
    event = Materialized(
        namespaces=tuple(chosen),
        columns=added,
        drop_overlays=command.drop_overlays,
        archive_overlays=command.archive_overlays,
        drop_deleted=command.drop_deleted,
        rows_dropped=dropped,
        ids=inline,
    )
    args = {
        "namespaces": list(chosen),
        "drop_overlays": command.drop_overlays,
        "archive_overlays": command.archive_overlays,
        "drop_deleted": command.drop_deleted,
    }
    metrics = {"overlays": len(chosen), "columns_added": len(added), "rows": rows, "rows_dropped": dropped}
    return Decision.of(event, payload, args, metrics, maintenance={"reason": "materialize"})


def _decide_dedupe(state: DatasetState, command: Deduplicate) -> Decision:
    """Drop the base rows whose key an earlier (`keep-first`) or later row holds (docs/adr/0018)."""
    from .dedupe import plan_dedupe

    if state.base is None:
        raise NoChange("OK: no duplicate keys found.")
    plan = plan_dedupe(state.base, command.key, command.keep)
    if not plan.groups or plan.dropped is None:
        raise NoChange("OK: no duplicate keys found.")
    gone = plan.dropped.take(pc.sort_indices(plan.dropped))
    inline = tuple(gone.to_pylist()) if len(gone) <= INLINE_IDS else None
    event = RecordsDeduplicated(
        namespaces=(),
        columns=(),
        drop_overlays=False,
        archive_overlays=False,
        drop_deleted=False,
        rows_dropped=plan.rows_dropped,
        ids=inline,
        key=command.key,
        keep=command.keep,
        groups=plan.groups,
    )
    args = {"key": command.key, "keep": command.keep, "rows_total": plan.rows_total}
    metrics = {"rows_total": plan.rows_total, "rows_dropped": plan.rows_dropped, "groups": plan.groups}
    payload = pa.table({"id": gone}) if inline is None else None
    return Decision.of(event, payload, args, metrics, maintenance={"reason": "dedupe"})


def decide_merge(state: DatasetState, command: MergeDatasets, source: MergeSource, now: str) -> Decision:
    """A merge's events (docs/adr/0019): with `prefer-src`, the rows the source replaces dropped first; the
    source's records that join, naming the source's version; then each carried namespace as an attach."""
    from .merge import check_choice, plan_merge

    check_choice(command.columns, command.if_duplicate, command.coerce_overlap)
    if not state.initialized:
        raise NotFound(f"Dataset not initialized: {state.name}", hint=f"Run `usr init {state.name}` first.")
    carried = _carried_types(state, command, source)
    base = state.base
    dest_casefold = base if command.avoid_casefold_dups and base is not None and base.num_rows else None
    known = known_ids(state.ids)
    schema = state.base_schema if state.base_schema is not None else BASE_SCHEMA
    plan = plan_merge(
        schema,
        known.isin if len(known) else (lambda ids: pa.repeat(pa.scalar(False), len(ids))),
        dest_casefold,
        source,
        columns=command.columns,
        if_duplicate=command.if_duplicate,
        coerce_overlap=command.coerce_overlap,
    )
    del dest_casefold
    added = plan.added.num_rows
    args: dict[str, Any] = {
        "dest": state.name,
        "src": source.name,
        "src_seq": source.seq,
        "src_hash": source.hash,
        "duplicate_policy": command.if_duplicate,
        "columns_mode": command.columns,
        "overlap_coercion": command.coerce_overlap,
        "avoid_casefold_dups": command.avoid_casefold_dups,
        "carried": list(command.carry_namespaces),
        "note": command.note,
    }
    metrics = plan.metrics(source.deleted)
    emits: list[Emit] = []
    if len(plan.replaced):
        gone = plan.replaced
        inline = tuple(gone.to_pylist()) if len(gone) <= INLINE_IDS else None
        replaced = RecordsReplaced(
            namespaces=(),
            columns=(),
            drop_overlays=False,
            archive_overlays=False,
            drop_deleted=False,
            rows_dropped=len(gone),
            ids=inline,
            src=source.name,
        )
        payload = pa.table({"id": gone}) if inline is None else None
        emits.append(
            Emit(replaced, payload, args, {"rows_dropped": len(gone)}, {"reason": "merge --if-duplicate prefer-src"})
        )
    if added:
        merged = RecordsMerged(
            rows=added,
            skipped=plan.rows_src - added,
            source="",
            created_at=now,
            src=source.name,
            src_seq=source.seq,
            src_hash=source.hash,
            columns_added=plan.columns_added,
        )
        emits.append(Emit(merged, plan.added, args, metrics, {"reason": "merge"}))
    note = f"carried by merge from {source.name} at seq {source.seq} (hash {source.hash})"
    assert state.registry is not None or not carried
    for ns, table in plan.carried.items():
        if not table.num_rows:
            continue
        types = carried[ns]
        cast = pa.table({"id": table.column("id"), **{c: pc.cast(table.column(c), types[c]) for c in types}})
        event = OverlayWritten(
            namespace=ns,
            key="id",
            columns={c: format_type(t) for c, t in types.items()},
            rows=cast.num_rows,
            rows_missing=0,
            created_at=now,
            contract_hash=state.registry.contract_hash(ns) if state.registry is not None else "",
            note=note,
        )
        named = {"namespace": ns, "key": "id", "columns": list(types), "allow_overwrite": True, "note": note}
        emits.append(Emit(event, cast, named, {"rows_incoming": cast.num_rows, "rows_written": cast.num_rows}))
    if not emits:
        raise NoChange(
            f"[MERGED] nothing to add: all {plan.rows_src} record(s) of {source.name} are in {state.name} already.",
            metrics=metrics,
        )
    return Decision(tuple(emits))


def _carried_types(
    state: DatasetState, command: MergeDatasets, source: MergeSource
) -> dict[str, dict[str, pa.DataType]]:
    """Each carried namespace's registered column types (the columns the source shows), its name checked."""
    out: dict[str, dict[str, pa.DataType]] = {}
    for ns in command.carry_namespaces:
        if ns in RESERVED_NAMESPACES:
            raise NamespaceError(f"Namespace '{ns}' is reserved: it is not carried by a merge.")
        if ns not in source.carried:
            raise NotFound(
                f"{source.name} has no '{ns}' overlay to carry.", hint=f"`usr info {source.name}` lists its namespaces."
            )
        if state.registry is None:
            raise NamespaceError("A registry is required to carry a namespace.")
        registered = state.registry.require(ns).column_types()
        shown = [c for c in source.carried[ns].column_names if c != "id"]
        unknown = [c for c in shown if c not in registered]
        if unknown:
            raise NamespaceError(
                f"Carried column(s) {', '.join(unknown)} are not registered under namespace '{ns}'.",
                hint="Register them in registry.yaml first.",
            )
        out[ns] = {c: registered[c] for c in shown}
    return out


def _decide_remove_overlay(state: DatasetState, command: RemoveOverlay) -> Decision:
    """Take a namespace's overlay parts out of the live view (docs/adr/0018); the reserved ones are not
    overlays a user removes (`usr restore`, `usr state clear` change them)."""
    ns, mode = command.namespace, command.mode
    if mode not in ("error", "delete", "archive"):
        raise InvalidInput(f"Unknown --mode '{mode}'.", hint="Use one of: error, delete, archive.")
    if ns in RESERVED_NAMESPACES:
        raise NamespaceError(
            f"Namespace '{ns}' is reserved: its overlay cannot be removed.",
            hint="Restore records with `usr restore`; clear state with `usr state clear`.",
        )
    parts = state.live_parts.get(ns, 0)
    if not parts:
        if mode == "error":
            raise NotFound(
                f"No overlay for namespace '{ns}'.", hint="`usr info DATASET` lists the namespaces with overlays."
            )
        raise NoChange(f"No overlay for namespace '{ns}': nothing to {mode} (no-op).")
    event = (
        OverlayArchived(namespace=ns, parts=parts) if mode == "archive" else OverlayRemoved(namespace=ns, parts=parts)
    )
    args = {"namespace": ns, "mode": mode}
    return Decision.of(event, None, args, {"parts": parts}, maintenance={"reason": f"overlay-remove --mode {mode}"})
