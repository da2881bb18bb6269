"""The one write path. Every mutation (and every later sync or adoption) goes through `Writer.execute`:

    lock -> recover the tail -> decide -> stage -> append -> seal + publish -> checkpoint -> unlock

- recover: `recovery.catch_up` folds what the stored projections lack and quarantines a torn tail.
- decide: the pure `decide` validates the command against the state at the tail; a rejected command
  raises before anything is written, so the log stays byte-for-byte unchanged.
- stage: payloads are written and fsync'd, the frozen registry stored, and each event is folded into
  the projections with its line's hash pending (the base is encoded then: the line's fingerprint
  records the file's exact size).
- append: the event lines, one write + fsync. From here on the command is committed.
- seal + publish: the pending hashes become the lines' hashes and the files that changed are
  published atomically (temp, fsync, rename).
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .alphabet import SortedKeys, keys_of, sorted_keys
from .checkpoints import checkpoint_due, write_checkpoint
from .commands import (
    AdoptDataset,
    AttachColumns,
    ClearState,
    Command,
    CompactOverlay,
    Deduplicate,
    ImportSequences,
    InitDataset,
    Materialize,
    MergeDatasets,
    RemoveOverlay,
    RestoreRecords,
    SetState,
    TakeSnapshot,
    TombstoneRecords,
)
from .errors import CommitError, ConcurrencyError, DatasetExists, Interrupted, InvalidInput, NotFound
from .events import (
    Actor,
    DatasetRef,
    Fingerprint,
    LogRecord,
    Materialized,
    OverlayCompacted,
    PayloadRef,
    SequencesImported,
    SnapshotTaken,
)
from .fileio import append_record, fileops, locked
from .log import encode_line, find_command, read_line_at
from .meta import append_meta
from .mounts import check_locks
from .names import LOCK_FILE, LOG_FILE, RECORDS_FILE, RESERVED_NAMESPACES, TOMBSTONE_NS
from .original import OriginalDataset, keep_originals, not_adopted, read_original, retire_originals, unadopted
from .projections import (
    PENDING,
    BaseBytes,
    BaseFile,
    DerivedFiles,
    Fold,
    IdIndex,
    IndexedIds,
    Output,
    PreparedAppend,
    Step,
)
from .projectors import PAYLOAD_SCHEMA, Payload, Watermark
from .recovery import BaseCache, Tail, catch_up, fold_lines, publish_changes, release_memory, remove_temps
from .redaction import clean_command, escaped
from .registry import Registry, load_registry, parse_registry, registry_path
from .results import Receipt, Received
from .storage import (
    PayloadSpool,
    SortedRuns,
    StoredRows,
    encode_payload,
    freeze_registry,
    payload_ref,
    write_payload,
)

if TYPE_CHECKING:
    from .merge import MergeSource

#: A table payload of at least this many rows is compressed on a thread while its event is folded.
_ENCODE_AHEAD_ROWS = 100_000
_COMMAND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}\Z")  # \Z: a trailing newline is no match
#: Commands whose decision needs at most these base columns (and that do not change the base):
#: their writes read only these columns of records.parquet. Every other command reads it whole.
_BASE_COLUMNS_NEEDED: dict[type[Command], list[str]] = {
    ImportSequences: [],  # ids are checked through the id index (`IdIndex.known`)
    TombstoneRecords: [],
    RestoreRecords: [],
    SetState: [],
    ClearState: [],
    TakeSnapshot: [],
    CompactOverlay: ["id"],
    RemoveOverlay: [],
}
#: The input rows of a command, read when the command is decided (under the lock): a table, or (an import)
#: tables a batch at a time, or (a merge) the source dataset as read before the lock.
RowsLoader = Callable[[], "pa.Table | Iterable[pa.Table] | MergeSource | None"]


def utc_now_text(after: str | None = None) -> str:
    """RFC 3339 UTC with microseconds; strictly after `after` so log time never goes backwards."""
    now = datetime.now(UTC)
    if after is not None:
        floor = datetime.fromisoformat(after) + timedelta(microseconds=1)
        now = max(now, floor)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: The last event this process committed (dataset, seq): what a Ctrl-C after a write returned (while its result
#: is shown) has left in the log.
_LAST_COMMIT: list[tuple[str, int]] = []


def last_commit() -> tuple[str, int] | None:
    """The dataset and seq of the last event this process committed (None: none yet)."""
    return _LAST_COMMIT[0] if _LAST_COMMIT else None


@dataclass
class _Progress:
    """How far a write got: whether its lines were being appended, and the seq it committed."""

    appending: bool = False
    committed: int = 0

    def interrupted(self) -> Interrupted:
        """What a Ctrl-C at this point means for the log: committed (seq), maybe, or not at all."""
        if self.committed:
            return Interrupted(
                f"interrupted after event seq {self.committed} was committed; its projections were not all written",
                state="COMMITTED",
                hint="The next command (or `usr rebuild`) catches them up from the log.",
            )
        if self.appending:
            return Interrupted(
                "interrupted while the event was being appended",
                state="INDETERMINATE",
                hint="Run `usr verify` or `usr events`; a retry with the same --command-id is safe.",
            )
        return Interrupted("interrupted before anything was written to the log", state="NOT_COMMITTED")


def default_actor(named: tuple[str, str] | None = None) -> Actor:
    """Who writes: `named` (tool, run_id) when a caller gave them (`Dataset.acting_as`), else
    `USR_ACTOR_TOOL` / `USR_ACTOR_RUN_ID`, else `usr` and this process."""
    pid = os.getpid()
    tool, run_id = named or (os.environ.get("USR_ACTOR_TOOL") or "usr", os.environ.get("USR_ACTOR_RUN_ID") or "")
    return Actor(tool=escaped(tool), run_id=escaped(run_id or f"usr-pid-{pid}"), host=socket.gethostname(), pid=pid)


@dataclass
class Writer:
    """Writes commands to the dataset in `directory` (named `name`, under the datasets root `root`).

    Kept by a `Dataset` between writes: it remembers the base columns and parsed registry it read last,
    reused while the files they came from are unchanged."""

    root: Path
    name: str
    directory: Path

    def __post_init__(self) -> None:
        self._bases = BaseCache()
        self._registry: tuple[bytes, Registry] | None = None
        self._spool: PayloadSpool | None = None  # an import's payload, from its decision to its stage
        self._prepared: PreparedAppend | None = None  # its base rows' encoding, from its decision to its fold
        self._sorted_keys: SortedKeys | None = None  # its accepted rows' keys in key order, as long as they are
        self._original: OriginalDataset | None = None  # an adoption's input, from its decision to its append
        self.adopted: OriginalDataset | None = None  # what the last adoption through this writer read
        self.actor: tuple[str, str] | None = None  # (tool, run_id) the events are written as, when set

    def execute(
        self,
        command: Command,
        *,
        rows: RowsLoader | None = None,
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Validate and apply `command`; returns its receipt (a no-op or a replayed retry included)."""
        if command_id is not None and not _COMMAND_ID.match(command_id):
            raise InvalidInput(f"Invalid command id '{command_id}'.", hint="Use 1-128 of [A-Za-z0-9._:@/+-].")
        command = clean_command(command)  # free text checked and redacted before anything is written
        check_locks(self.directory)
        self._prepare_folder(command, command_id)
        progress = _Progress()  # where a Ctrl-C would leave the log
        try:
            with locked(self.directory / LOCK_FILE):
                try:
                    return self._execute_locked(command, rows, command_id, expected_seq, progress)
                finally:
                    try:
                        self._drop_prepared()
                    finally:
                        if self._spool is not None:  # decided but not staged (a no-op or an error)
                            self._spool.discard()
                            self._spool = None
        except KeyboardInterrupt:
            raise progress.interrupted() from None

    def _execute_locked(
        self,
        command: Command,
        rows: RowsLoader | None,
        command_id: str | None,
        expected_seq: int | None,
        progress: _Progress,
    ) -> Receipt:
        """The steps under the dataset lock (see the module docstring)."""
        from .decide import NoChange  # write-only: kept off the read path's start-up

        tail = self._recover(
            base_columns=self._base_columns(command), cache=self._bases, adopting=isinstance(command, AdoptDataset)
        )
        release_memory()  # the Parquet reader's scratch buffers
        if command_id is not None:
            prior = find_command(self.directory / LOG_FILE, command_id)
            if prior is not None:
                return receipt(prior.record, replayed=True)
        if expected_seq is not None and expected_seq != tail.scan.seq:
            raise ConcurrencyError(
                f"Stale write: expected seq {expected_seq} but the log is at seq {tail.scan.seq}.",
                hint="Re-read the dataset and retry with the current seq.",
            )
        registry = self._registry_for_write()
        now = utc_now_text(tail.scan.last_timestamp)
        try:
            decision = self._decide(tail, command, registry, rows, now)
        except NoChange as nothing:
            return Receipt(
                dataset=self.name,
                action="noop",
                seq=tail.scan.seq,
                event_id="",
                command_id=command_id or "",
                hash=tail.scan.hash,
                timestamp_utc=now,
                metrics=nothing.metrics,
                noop=True,
                message=str(nothing),
                warnings=list(tail.warnings),
            )
        # An adoption's catch-up published nothing (the folder holds the original's files): publish it all.
        before = {} if isinstance(command, AdoptDataset) else tail.fold.outputs()
        try:
            records, marks, data = self._stage(tail, registry, command, decision, command_id, now)
            if isinstance(command, AdoptDataset) and self._original is not None:
                keep_originals(self.directory, self._original)  # linked into _legacy/ before the append
        except OSError as exc:  # payload or frozen registry: the log is untouched
            raise CommitError(f"writing the event's files failed: {exc.strerror}", state="NOT_COMMITTED") from exc
        retire = isinstance(command, AdoptDataset) and not command.keep_originals
        self._commit(tail, before, records, marks, data, progress, finish=retire_originals if retire else None)
        return receipt(records[-1], warnings=list(tail.warnings))

    def receive(self, data: bytes, staged: Path) -> Received:
        """Append lines another copy of this dataset's log holds (docs/adr/0021), through the same steps as
        a command: lock, recover the tail, check (the lines continue this log's chain: a line this log
        already holds is skipped, one that differs is refused), move their payloads and frozen registries
        in from `staged` (digests checked), fold, append them in one write, publish."""
        check_locks(self.directory)
        progress = _Progress()
        try:
            with locked(self.directory / LOCK_FILE):
                return self._receive_locked(data, staged, progress)
        except KeyboardInterrupt:
            raise progress.interrupted() from None

    def _receive_locked(self, data: bytes, staged: Path, progress: _Progress) -> Received:
        from .shipping import accept_lines, place_artifacts

        tail = self._recover()
        lines = accept_lines(tail.scan, data)
        if not lines:
            return Received(dataset=self.name, appended=0, seq=tail.scan.seq, hash=tail.scan.hash)
        try:
            place_artifacts([line.record for line in lines], staged, self.directory)
        except OSError as exc:
            raise CommitError(f"moving the sent files in failed: {exc.strerror}", state="NOT_COMMITTED") from exc
        before = tail.fold.outputs()
        fold_lines(tail.fold, lines, self.directory)
        records = [line.record for line in lines]
        marks = [Watermark(line.seq, line.offset, line.record.hash) for line in lines]
        self._commit(tail, before, records, marks, b"".join(line.raw + b"\n" for line in lines), progress)
        last = records[-1]
        return Received(dataset=self.name, appended=len(lines), seq=last.seq, hash=last.hash)

    def _recover(self, **catch_up_options: Any) -> Tail:
        """Under the lock: remove a crashed writer's temp files, then verify the log and catch the stored
        projections up (`recovery.catch_up`, a torn tail quarantined)."""
        remove_temps(self.directory)
        try:
            return catch_up(self.directory, quarantine=True, **catch_up_options)
        except OSError as exc:
            raise CommitError(f"recovering the log tail failed: {exc.strerror}", state="NOT_COMMITTED") from exc

    def _commit(
        self,
        tail: Tail,
        before: dict[str, Output],
        records: list[LogRecord],
        marks: list[Watermark],
        data: bytes,
        progress: _Progress,
        *,
        finish: Callable[[Path], object] | None = None,
    ) -> None:
        """Append the lines (one write + fsync: committed from here on), then seal and publish the folded
        projections, checkpoint and note the events in meta.md; `finish` runs last, on the folder."""
        progress.appending = True
        append_record(self.directory / LOG_FILE, data, expected_size=tail.scan.size)
        progress.appending, progress.committed = False, records[-1].seq
        _LAST_COMMIT[:] = [(self.name, records[-1].seq)]
        fileops().point("after_append")
        try:
            tail.fold.seal({record.seq: record.hash for record in records})
            publish_changes(before, tail.fold.outputs(), self.directory)
            fileops().point("after_publish")
            self._checkpoint(tail.fold, records, marks[-1])
            for record in records:
                append_meta(self.directory, record)
            if finish is not None:
                finish(self.directory)
        except OSError as exc:
            raise CommitError(
                f"event seq {records[-1].seq} is committed, but a projection could not be written: {exc.strerror}",
                state="COMMITTED",
                hint="The next command (or `usr rebuild`) catches the projection up from the log.",
            ) from exc

    # -- the steps -------------------------------------------------------------------------------
    def _prepare_folder(self, command: Command, command_id: str | None) -> None:
        log = self.directory / LOG_FILE
        if isinstance(command, AdoptDataset):
            if not log.is_file() and not (self.directory / RECORDS_FILE).is_file():
                raise NotFound(f"Dataset not found: {self.name}", hint="Name a folder the original USR wrote.")
            load_registry(self.root)  # adopting requires a registry, like every mutation
            return
        if not log.is_file() and unadopted(self.directory):
            raise not_adopted(self.name)
        if not isinstance(command, InitDataset):
            if not log.is_file():
                raise NotFound(f"Dataset not found: {self.name}", hint=f"Create it with `usr init {self.name}`.")
            return
        load_registry(self.root)  # init requires a registry, like every mutation
        self._refuse_nesting()
        # A retried init (same command_id) returns its original receipt, like any command. A log without
        # one complete line (a crash tore the first append) is not initialized yet.
        if unadopted(self.directory):  # also an original whose log holds only a torn fragment
            raise not_adopted(self.name)
        started = log.is_file() and read_line_at(log, 0) is not None
        if started and (command_id is None or find_command(log, command_id) is None):
            raise DatasetExists(f"Dataset already initialized: {self.name}")
        fileops().mkdir(self.directory)

    def _refuse_nesting(self) -> None:
        """A dataset folder holds no dataset, and none is inside another: `ls` and id resolution would see
        one and not the other (`init t` over `t/a`, or `init a/b` inside dataset `a`)."""
        from .roots import holds_dataset

        if self.directory.is_dir():
            shown = [p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
            below = [q for p in shown for q in p.iterdir() if q.is_dir() and not q.name.startswith((".", "_"))]
            inner = sorted(str(p.relative_to(self.root)) for p in [*shown, *below] if holds_dataset(p))
            if inner:
                raise InvalidInput(
                    f"Cannot init {self.name}: the folder holds dataset(s) {', '.join(inner[:5])}.",
                    hint="A dataset folder cannot hold other datasets; pick another id.",
                )
        for outer in self.directory.parents:
            if outer == self.root or self.root not in outer.parents:
                break
            if holds_dataset(outer):
                raise InvalidInput(
                    f"Cannot init {self.name}: it would be inside dataset {outer.relative_to(self.root)}.",
                    hint="A dataset cannot hold other datasets; pick an id outside it.",
                )

    def _decide(self, tail: Tail, command: Command, registry: Registry, rows: RowsLoader | None, now: str) -> Any:
        """The decision on `command` at the tail (NoChange and rejections propagate)."""
        from .decide import ATTACH_BATCH_ROWS, AttachDecider, DatasetState, Rows, decide, table_batches

        # Handed over: `decide` holds the only reference to the input table and frees what it has parsed.
        if isinstance(command, AdoptDataset):
            return self._decide_adopt(tail, command, now)
        given = rows() if rows is not None else None
        if isinstance(command, MergeDatasets):
            return self._decide_merge(tail, command, registry, given, now)
        loaded = cast("pa.Table | Iterable[pa.Table] | None", given)  # a MergeSource only for a merge
        del given
        if isinstance(command, ImportSequences):  # read and decided a batch at a time (docs/adr/0014)
            batches = table_batches(loaded) if isinstance(loaded, pa.Table) else loaded
            del loaded
            return self._decide_import(tail, command, batches or (), now)
        fold = tail.fold
        derived = fold.get(DerivedFiles)
        state = DatasetState(
            name=self.name,
            initialized=tail.scan.seq > 0,
            seq=tail.scan.seq,
            ids=_known_ids(fold),
            bio_types=fold.get(BaseFile).bio_types() if isinstance(command, AttachColumns) else None,
            base=_decision_base(fold, command),
            base_names=fold.get(BaseFile).column_names() if isinstance(command, (Materialize, AttachColumns)) else None,
            base_values=_base_values(fold) if isinstance(command, AttachColumns) else None,
            live_parts={ns: len(parts) for ns, parts in derived.layout.live.items()},
            overlays={ns: derived.merged(ns) for ns in _overlays_needed(command) if ns in derived.layout.live},
            overlay_columns={ns: derived.columns(ns) for ns in derived.layout.live if ns != TOMBSTONE_NS}
            if isinstance(command, Materialize)
            else {},
            overlay_types={ns: derived.column_types(ns) for ns in _folded(command, derived.layout.live)}
            if isinstance(command, Materialize)
            else {},
            registry=registry,
        )
        release_memory()  # the Parquet readers' and the merges' scratch buffers
        if isinstance(command, AttachColumns) and loaded is not None:  # read a batch at a time (docs/adr/0014)
            batches = table_batches(loaded, ATTACH_BATCH_ROWS) if isinstance(loaded, pa.Table) else loaded
            del loaded
            if not AttachDecider.streams(state, command):
                batches = [pa.concat_tables(list(batches))]
            decision = self._decide_attach(state, command, batches, now)
            _keep_for_fold(fold, decision)
            return decision
        inputs = Rows(loaded) if loaded is not None else None
        del loaded
        release_memory()  # the input reader's scratch buffers
        decision = decide(state, command, now=now, rows=inputs)
        del state, inputs
        _keep_for_fold(fold, decision)
        return decision

    def _decide_attach(self, state: Any, command: AttachColumns, batches: Iterable[pa.Table], now: str) -> Any:
        """The decision on an attach, its input read a batch at a time: each batch's matched rows are kept
        as a run sorted by id, and the runs merged into the payload spool in one id order, so memory holds
        about one batch whatever the input's size (docs/adr/0014). A rejection removes both."""
        from .decide import ATTACH_BATCH_ROWS, AttachDecider

        decider = AttachDecider(state, command, now)
        runs = SortedRuns(self.directory)
        spool: PayloadSpool | None = None
        try:
            with _unwritten(lambda: spool.discard() if spool is not None else None):
                for batch in batches:
                    runs.write(decider.accept(batch))
                    del batch
                    release_memory()  # the batch's scratch space, before the next batch is read
                decider.finish()
                if isinstance(state.ids, IndexedIds):
                    state.ids.forget()  # no key is asked of the base after the last batch
                spool = PayloadSpool(self.directory)
                for piece in runs.merged(ATTACH_BATCH_ROWS):
                    spool.write(decider.ordered(piece))
                    del piece
                decision = decider.decision(spool.stored())
        finally:
            runs.discard()
            closing = getattr(batches, "close", None)  # the input reader, also after an error or a Ctrl-C
            if closing is not None:
                closing()
        self._spool = spool
        release_memory()
        return decision

    def _decide_adopt(self, tail: Tail, command: AdoptDataset, now: str) -> Any:
        """The decision on an adoption: the original's files read as its views read them (from `_legacy/`
        when an interrupted adoption already put them there)."""
        from .decide import DatasetState, NoChange, decide_adopt

        self.adopted = None
        if tail.scan.seq and tail.adoption is None:
            removed = [] if command.keep_originals else retire_originals(self.directory)
            tidied = (
                f" (removed {len(removed)} original file(s) an interrupted adoption left in place)" if removed else ""
            )
            raise NoChange(
                f"{self.name} is a usr_es dataset already (adopted, or made by usr_es): nothing to adopt{tidied}"
            )
        # Resuming an adoption the log already holds: the originals are in _legacy/ (the folder may hold
        # projections); otherwise the folder itself, whatever an uncommitted attempt left in _legacy/.
        self._original = self.adopted = read_original(self.directory, from_legacy=tail.adoption is not None)
        state = DatasetState(name=self.name, initialized=tail.scan.seq > 0, seq=tail.scan.seq)
        return decide_adopt(
            state, command, self._original, now, logged=tail.adoption[0] if tail.adoption is not None else 0
        )

    def _decide_merge(self, tail: Tail, command: MergeDatasets, registry: Registry, source: object, now: str) -> Any:
        """The decision on a merge: the source as read by the caller (`MergeSource`), against the id index
        and, for the case-insensitive check, the base's bio_types and sequences."""
        from .decide import DatasetState, decide_merge
        from .merge import MergeSource

        if not isinstance(source, MergeSource):
            raise InvalidInput("merge needs the source dataset's rows")
        fold = tail.fold
        state = DatasetState(
            name=self.name,
            initialized=tail.scan.seq > 0,
            seq=tail.scan.seq,
            ids=_known_ids(fold),
            base=fold.base.table if fold.base is not None else None,
            base_schema=fold.get(BaseFile).schema(),
            registry=registry,
        )
        decision = decide_merge(state, command, source, now)
        for emit in decision.emits:  # the merged rows' keys, sorted once for the id index and the history index
            if isinstance(emit.event, SequencesImported) and isinstance(emit.payload, pa.Table):
                found = keys_of(emit.payload.column("id"))
                self._sorted_keys = sorted_keys(found) if found is not None else None
        _keep_for_fold(fold, decision)
        return decision

    def _decide_import(self, tail: Tail, command: ImportSequences, batches: Iterable[pa.Table], now: str) -> Any:
        """The decision on an import, its input read a batch at a time: each batch's accepted rows go to a
        payload spool as they are decided (`_stage` publishes it), so memory holds about one batch whatever
        the input's size (docs/adr/0014). A rejection removes the spool: nothing is left behind."""
        from .decide import DatasetState, ImportDecider

        state = DatasetState(
            name=self.name, initialized=tail.scan.seq > 0, seq=tail.scan.seq, ids=_known_ids(tail.fold)
        )
        decider = ImportDecider(state, command, now)
        spool: PayloadSpool | None = None
        # The base rows the fold will append, encoded on the second core while ids are hashed on this one.
        self._prepared = tail.fold.get(BaseFile).prepare(decider.template())
        with _unwritten(lambda: spool.discard() if spool is not None else None):
            spool = PayloadSpool(self.directory, PAYLOAD_SCHEMA)
            for batch in batches:
                accepted = decider.accept(batch)
                del batch
                spool.write(accepted)
                if self._prepared is not None:
                    self._prepared.feed(accepted)
                del accepted
                release_memory()  # the batch's scratch space, before the next batch is read
            decider.finish()
            repeated = decider.repeated_keys()
            self._sorted_keys = decider.sorted
            if repeated is not None:
                later = decider.confirm(_spooled(spool), repeated)
                if later is not None:
                    spool = _without(spool, later)
                    self._drop_prepared()  # not the payload's rows any more
            decision = decider.decision(spool.stored())
        self._spool = spool
        release_memory()
        return decision

    def _stage(
        self, tail: Tail, registry: Registry, command: Command, decision: Any, command_id: str | None, now: str
    ) -> tuple[list[LogRecord], list[Watermark], bytes]:
        """Write the payloads, fold every event with its hash pending, and build the lines (chained)."""
        registry_hash = freeze_registry(self.directory, registry)
        fileops().point("after_registry_freeze")
        fold = tail.fold
        seq, offset, prev = tail.scan.seq, tail.scan.size, tail.scan.hash
        records: list[LogRecord] = []
        marks: list[Watermark] = []
        lines: list[bytes] = []
        stamp = now
        generated = uuid.uuid4().hex  # the command's lines share one command id
        for k, emit in enumerate(decision.emits):
            if k:  # a command's later lines: log time stays strictly increasing (docs/event-log.md)
                stamp = (datetime.fromisoformat(stamp) + timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            ahead = isinstance(emit.payload, pa.Table) and emit.payload.num_rows >= _ENCODE_AHEAD_ROWS
            with ThreadPoolExecutor(1, thread_name_prefix="usr-payload") as encoder:
                # A large table payload (a merge's rows) is compressed on a thread while the fold encodes them.
                encoding = encoder.submit(encode_payload, emit.payload) if ahead else None
                ref, payload = (None, emit.payload) if ahead else self._write_payload(emit.payload)
                seq += 1
                # An import's (or a merge's) rows: their keys sorted by the decision, the import's encoded ahead.
                appends = isinstance(emit.event, SequencesImported)
                keys = self._sorted_keys if appends else None
                prepared = self._prepared if appends and isinstance(emit.payload, StoredRows) else None
                fold.apply(Step(Watermark(seq, offset, PENDING), emit.event, registry_hash, payload, prepared, keys))
                if appends:
                    self._drop_prepared()
                del payload
                _before_encoding(fold)
                fold.stage()
                if encoding is not None:
                    ref = self._store_payload(encoding.result(), emit.payload.num_rows)
            record = LogRecord(
                timestamp_utc=stamp,
                action=emit.action,
                dataset=DatasetRef(name=self.name, root=str(self.root)),
                args=emit.redacted_args,
                metrics=emit.metrics,
                artifacts={"payload": ref.file} if ref is not None else {},
                maintenance=emit.maintenance,
                fingerprint=self._fingerprint(fold, {r.seq: r.hash for r in records}),
                registry_hash=registry_hash,
                actor=default_actor(self.actor),
                version=__version__,
                seq=seq,
                event_id=uuid.uuid4().hex,
                command_id=command_id or generated,
                command=command,
                event=emit.event,
                payload=ref,
                prev=prev,
            )
            line, prev = encode_line(record)
            records.append(LogRecord(**{**_fields(record), "hash": prev}))
            marks.append(Watermark(seq, offset, prev))
            lines.append(line)
            offset += len(line)
        return records, marks, b"".join(lines)

    def _drop_prepared(self) -> None:
        self._sorted_keys = None
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.discard()

    def _write_payload(self, rows: Payload | None) -> tuple[PayloadRef | None, Payload | None]:
        """Write an event's payload durably: the spool an import was decided into, else its table."""
        if rows is None:
            return None, None
        if isinstance(rows, StoredRows):
            spool = self._spool  # discarded by `execute` unless published here
            published = spool.publish() if spool is not None and spool.path == rows.path else None
            if published is None:
                raise RuntimeError("an import's payload spool is gone")
            return published
        return self._store_payload(encode_payload(rows), rows.num_rows), rows

    def _store_payload(self, data: memoryview, rows: int) -> PayloadRef:
        """Write an encoded payload durably under its digest."""
        ref = payload_ref(data, rows)
        write_payload(self.directory, ref, data)
        return ref

    def _fingerprint(self, fold: Fold, digests: dict[int, str]) -> Fingerprint:
        """The base's rows, columns and file size after the event (the encoded size when this write
        changed the base, else the stored file's); with `USR_EVENT_SHA256=1` also its sha256
        (`BaseBytes.sha256`; `digests`: the hashes of this write's earlier lines)."""
        holder = fold.get(BaseFile)
        base = holder.base
        if base is None:
            return Fingerprint(rows=0, cols=0, size_bytes=0)
        path = self.directory / RECORDS_FILE
        changed = base.watermark.hash == PENDING
        if changed:
            size = holder.size()
        else:
            size = path.stat().st_size if path.exists() else 0
        sha256 = None
        if os.environ.get("USR_EVENT_SHA256") == "1" and (changed or size):
            stored = BaseBytes(path, size)
            sha256 = (holder.encoded() if changed else stored).sha256(digests)
        return Fingerprint(rows=base.rows, cols=holder.column_count(), size_bytes=size, sha256=sha256)

    def _checkpoint(self, fold: Fold, records: list[LogRecord], mark: Watermark) -> None:
        """A checkpoint for a snapshot event, else when the automatic policy says one is due."""
        snapshot = next((r.event for r in records if isinstance(r.event, SnapshotTaken)), None)
        if snapshot is not None:
            write_checkpoint(fold, mark, self.directory, base_copy=snapshot.name)
        elif checkpoint_due(
            self.directory, self.directory / LOG_FILE, mark, has_payload=any(r.payload is not None for r in records)
        ):
            write_checkpoint(fold, mark, self.directory)

    def _base_columns(self, command: Command) -> list[str] | None:
        """The base columns `command`'s decision needs (None: all of them)."""
        if isinstance(command, Materialize):  # the fold reads the base a row group at a time (docs/adr/0014)
            return ["id"] if command.drop_deleted else []
        if isinstance(command, Deduplicate):
            from .dedupe import columns_for

            return columns_for(command.key)
        if isinstance(command, MergeDatasets):  # ids through the id index; sequences for the case-insensitive check
            return ["bio_type", "sequence"] if command.avoid_casefold_dups else []
        needed = _BASE_COLUMNS_NEEDED.get(type(command))
        if needed is not None or not isinstance(command, AttachColumns):
            return needed
        try:  # a missing or unreadable base is loaded whole, and reported, by the catch-up
            pq.read_schema(self.directory / RECORDS_FILE)
        except (OSError, pa.ArrowInvalid):
            return None
        # Keys resolve through the id index (sequence_ci through upper-cased sequences); the overwrite check
        # reads the values of materialized columns where they are (`_base_values`).
        return ["id", "bio_type", "alphabet", "sequence"] if command.key == "sequence_ci" else []

    def _registry_for_write(self) -> Registry:
        """The live registry of the dataset's root: every mutation requires one, as in the original (a
        dataset folder copied out of its root, say a replayed copy, is read-only until it is in one)."""
        path = registry_path(self.root)
        try:
            data = path.read_bytes()
        except OSError:
            return load_registry(self.root)  # raises the usual "registry required" error
        if self._registry is None or self._registry[0] != data:
            self._registry = (data, parse_registry(data, source=str(path)))
        return self._registry[1]


def _folded(command: Materialize, live: Iterable[str]) -> list[str]:
    """The registered namespaces a materialize folds (whose types it checks against the registry)."""
    return [
        ns for ns in live if ns not in RESERVED_NAMESPACES and (command.namespaces is None or ns in command.namespaces)
    ]


@contextmanager
def _unwritten(discard: Callable[[], object]) -> Iterator[None]:
    """A decision that writes a payload spool or scratch files: any error removes them (`discard`), and an
    OSError (the files; input read errors are InvalidInput) is NOT_COMMITTED: the log is untouched."""
    try:
        yield
    except OSError as exc:
        discard()
        raise CommitError(f"writing the event's files failed: {exc.strerror}", state="NOT_COMMITTED") from exc
    except BaseException:
        discard()
        raise


def _base_values(fold: Fold) -> Callable[[pa.Array, list[str]], pa.Table]:
    """`DatasetState.base_values`: through the id index, only the row groups holding a few ids' candidates
    are read; else (many ids, or no index) the columns whole, once per write."""
    whole: dict[tuple[str, ...], pa.Table] = {}
    known = fold.get(IdIndex).known()

    def values(ids: pa.Array, columns: list[str]) -> pa.Table:
        import pyarrow.compute as pc

        found = known.rows_of(ids, columns) if known is not None else None
        if found is not None:
            return found
        key = tuple(columns)
        if key not in whole:
            base = fold.get(BaseFile)
            whole[key] = pa.table({name: base.column(name) for name in ["id", *columns]})
        table = whole[key]
        return table.filter(pc.is_in(table.column("id"), value_set=ids))

    return values


def _decision_base(fold: Fold, command: Command) -> pa.Table | None:
    """The base table a decision reads (None: no base): the columns catch-up loaded, or for a dedupe the
    columns it compares, each read where the loaded base lacks it."""
    from .dedupe import columns_for

    if not isinstance(command, Deduplicate):
        return fold.base.table if fold.base is not None else None
    holder = fold.get(BaseFile)
    columns = {name: holder.column(name) for name in columns_for(command.key)}
    if any(column is None for column in columns.values()):
        return None
    return pa.table(columns)


def _known_ids(fold: Fold) -> Any:
    """The base's ids for `decide`: through the id index, else the id column (read when not in hand)."""
    known = fold.get(IdIndex).known()
    if known is not None:
        return known
    ids = fold.get(BaseFile).column("id")
    return ids if ids is not None else pa.array([], pa.string())


def _spooled(spool: PayloadSpool) -> Iterator[pa.Table]:
    """The rows written to `spool` so far, a batch at a time."""
    stored = spool.stored()
    return stored.batches() if stored is not None else iter(())


def _without(spool: PayloadSpool, rows: pa.Array) -> PayloadSpool:
    """A new spool holding `spool`'s rows but `rows` (payload row numbers); `spool` is removed."""
    from .decide import without_rows

    out = PayloadSpool(spool.path.parent.parent, PAYLOAD_SCHEMA)
    try:
        for batch in without_rows(_spooled(spool), rows):
            out.write(batch)
    except BaseException:
        out.discard()
        raise
    finally:
        spool.discard()
    return out


def _overlays_needed(command: Command) -> list[str]:
    """The namespaces whose merged overlay `decide` reads for this command."""
    if isinstance(command, (AttachColumns, CompactOverlay)):
        return [command.namespace]
    if isinstance(command, Materialize):  # the tombstones, for --drop-deleted; the others' names are enough
        return [TOMBSTONE_NS]
    return []


def _keep_for_fold(fold: Fold, decision: Any) -> None:
    """Free the overlay tables read for the decision unless folding its events reads them again
    (compaction and materialize merge the parts the decision merged)."""
    if not any(isinstance(e.event, (OverlayCompacted, Materialized)) for e in decision.emits):
        fold.get(DerivedFiles).release()
    release_memory()


def _before_encoding(fold: Fold) -> None:
    """Free what the fold no longer needs before the base is encoded: the merged overlays and the part
    tables read for it (the tables of parts this write adds stay, for their publish)."""
    fold.get(DerivedFiles).release(keep_pending=True)
    release_memory()


def _fields(record: LogRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in record.__struct_fields__}


def receipt(record: LogRecord, *, replayed: bool = False, warnings: list[str] | None = None) -> Receipt:
    return Receipt(
        dataset=record.dataset.name,
        action=record.action,
        seq=record.seq,
        event_id=record.event_id,
        command_id=record.command_id,
        hash=record.hash,
        timestamp_utc=record.timestamp_utc,
        metrics=dict(record.metrics),
        replayed=replayed,
        warnings=warnings or [],
    )
