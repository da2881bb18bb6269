"""`Dataset`: the public face of one dataset -- writes, reads, verify -- delegating to the layers below.

Writes go through the one write path (`writer.Writer`); reads plan over a caught-up read-only head
(`recovery.ReadHead`, used by `reads` and `export`); maintenance commands live on `ds.maintenance` and
the log's own views on `ds.log`. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property, update_wrapper
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, cast

import msgspec
import pyarrow as pa

from .commands import (
    INLINE_IDS,
    AdoptDataset,
    AttachColumns,
    ClearState,
    CoerceOverlap,
    CompactOverlay,
    DedupeKeep,
    DedupeKey,
    Deduplicate,
    DuplicatePolicy,
    FreezeRegistry,
    ImportSequences,
    InitDataset,
    InputFormat,
    KeyKind,
    Materialize,
    MergeColumns,
    MergeDatasets,
    OnConflict,
    RemoveOverlay,
    RestoreRecords,
    SetState,
    TakeSnapshot,
    TombstoneRecords,
)
from .errors import ConcurrencyError, InvalidInput, NamespaceError, NotFound
from .events import LogRecord
from .log import LogLine, iter_lines
from .names import LOG_FILE, RECORDS_FILE, REGISTRY_FILE, RESERVED_NAMESPACES
from .recovery import ReadHead, read_consistently
from .results import (
    AdoptReport,
    ColumnInfo,
    ColumnProfile,
    DatasetInfo,
    DatasetSummary,
    DedupeResult,
    DiffResult,
    ExportResult,
    LogEntry,
    MergeResult,
    ProjectResult,
    RebuildResult,
    Receipt,
    Received,
    RecordBlame,
    RecordHistory,
    ReplayResult,
    SyncResult,
    SyncStatus,
    ValidateReport,
    VerifyReport,
)
from .roots import holds_dataset, nearest_holding, resolve_existing, validate_id
from .writer import Writer

if TYPE_CHECKING:
    from .remotes import Remote, Transport

_IdsCommandType = TombstoneRecords | RestoreRecords | SetState | ClearState
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def _read(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """A read (or a check) of the dataset: run again when a writer published under it; any other I/O or
    Arrow failure is a `ReadError` (nothing was appended: no commit state)."""

    def run(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        ds: Dataset = getattr(self, "_ds", self)  # also on `ds.maintenance` and `ds.log`
        name = method.__name__.replace("_", " ").strip()
        return read_consistently(ds.dir, lambda: method(self, *args, **kwargs), what=f"{name} of {ds.name}")

    update_wrapper(run, method)
    return run


class Dataset:
    """A USR dataset: a folder whose `.events.log` is the truth and whose Parquet files are caches.

    Open one with `Dataset.open(root, "ns/name")` (or a dataset directory path). Mutations
    return a `Receipt`; reads return Arrow tables or typed results.
    """

    def __init__(self, root: Path, name: str, directory: Path) -> None:
        self.root = root
        self.name = name
        self.dir = directory
        self._head = ReadHead(name, directory)
        # Kept between writes through this object (a loop of `set_state` calls, say).
        self._writer = Writer(root, name, directory)

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str, name_or_path: str | Path) -> Dataset:
        """Open a dataset by id (`name` or `ns/name`, relative to `root`) or by directory path.

        The dataset need not exist yet (for `init`). An unqualified name that matches exactly
        one existing `ns/name` resolves to it.
        """
        root = Path(root).expanduser().resolve()
        text = str(name_or_path)
        if "\x00" in text:
            raise InvalidInput("A dataset id or path must not contain NUL bytes.")
        try:
            candidate = Path(text).expanduser()
        except RuntimeError:  # `~user` naming no user
            raise InvalidInput(f"Cannot resolve '{text}': no such user's home directory.") from None
        if isinstance(name_or_path, Path) or text.startswith(("/", "./", "../", "~")) or text in (".", ".."):
            return cls.at(candidate if candidate.is_absolute() else Path.cwd() / candidate)
        validate_id(text)
        if not (root / text / LOG_FILE).exists() and "/" not in text:
            try:
                text = resolve_existing(root, text)
            except NotFound:
                pass
        return cls(root, text, root / text)

    @classmethod
    def at(cls, directory: Path | str) -> Dataset:
        """Open the dataset stored in `directory` (anywhere, e.g. a `usr replay --out` copy)."""
        if "\x00" in str(directory):
            raise InvalidInput("A dataset path must not contain NUL bytes.")
        path = Path(directory).expanduser().resolve()
        if path.is_file() and path.name in (RECORDS_FILE, LOG_FILE):
            path = path.parent
        if not holds_dataset(path):
            raise NotFound(f"Not a dataset directory (no {LOG_FILE}): {path}")
        root = nearest_holding(path.parent, REGISTRY_FILE) or path.parent
        return cls(root, ReadHead.at(path).name, path)

    @classmethod
    def list_all(cls, root: Path | str) -> list[DatasetSummary]:
        """Summaries of every dataset under `root`."""
        from .summary import list_all

        return list_all(Path(root))

    # -- paths and helpers --------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def records_path(self) -> Path:
        return self.dir / RECORDS_FILE

    @property
    def exists(self) -> bool:
        """Whether the folder is a dataset: a usr_es log, or what the original USR wrote (`holds_dataset`)."""
        return holds_dataset(self.dir)

    def _require(self) -> None:
        if not self.exists:
            raise NotFound(f"Dataset not found: {self.name}", hint=f"Create it with `usr init {self.name}`.")

    @cached_property
    def maintenance(self) -> Maintenance:
        """Compaction, materialize, snapshots, registry freezes, validate and rebuild."""
        return Maintenance(self)

    @cached_property
    def history(self) -> History:
        """Forensics: a record's history and blame, the diff between two points, the log as a timeline."""
        return History(self)

    @cached_property
    def sync(self) -> Sync:
        """Sync with the copy of this dataset on a remote (docs/adr/0021): status, pull, push."""
        return Sync(self)

    def receive_lines(self, data: bytes, staged: Path) -> Received:
        """Append lines another copy of this dataset's log holds after this copy's head (the receiving side
        of a sync), taking the files they name from `staged`; lines already here are skipped, a fork is
        refused (`Diverged`). Through the one write path, like every mutation."""
        self._require()
        return self._writer.receive(data, staged)

    @cached_property
    def log(self) -> EventLog:
        """The event log itself: its events, and the dataset as it was after any of them."""
        return EventLog(self)

    @contextmanager
    def acting_as(self, tool: str, run_id: str) -> Iterator[Dataset]:
        """Within the block, this object's writes name `tool` and `run_id` as their actor (what
        `USR_ACTOR_TOOL` / `USR_ACTOR_RUN_ID` do for a whole process)."""
        tool, run_id = tool.strip(), run_id.strip()
        if not tool or not run_id:
            raise InvalidInput("An actor needs a non-empty tool and run_id.")
        before = self._writer.actor
        self._writer.actor = (tool, run_id)
        try:
            yield self
        finally:
            self._writer.actor = before

    # -- mutations ----------------------------------------------------------------------
    def adopt(
        self, *, dry_run: bool = True, keep_originals: bool = False, command_id: str | None = None
    ) -> AdoptReport:
        """Make this folder, written by the original USR, a usr_es dataset without changing a value
        (docs/adr/0015): a dry run by default, reporting what it found; with `dry_run=False` the log gets
        the adoption's events after the original's own lines, and the original files move to `_legacy/`
        (with `keep_originals`, those usr_es does not rewrite stay where they are too). Adopting an
        adopted dataset changes nothing; an interrupted adoption is finished."""
        from .original import LEGACY_DIR, adopt_report, kept_originals, read_original, unadopted

        kept_in = str(self.dir / LEGACY_DIR)
        if dry_run:
            fresh = unadopted(self.dir)
            if not fresh and not kept_originals(self.dir):
                self._require()
                raise InvalidInput(
                    f"{self.name} is a usr_es dataset, not one the original USR wrote: nothing to adopt."
                )
            found = read_original(self.dir, from_legacy=not fresh)
            message = "dry run: nothing was written" if fresh else "already adopted"
            return adopt_report(self.name, found, dry_run=True, adopted=not fresh, kept_in=kept_in, message=message)
        receipt = self._writer.execute(AdoptDataset(keep_originals=keep_originals), command_id=command_id)
        found = self._writer.adopted or read_original(self.dir, from_legacy=True)
        message = receipt.message or f"adopted: the log's events 1..{receipt.seq} follow the original's lines"
        return adopt_report(
            self.name, found, dry_run=False, adopted=True, kept_in=kept_in, message=message, receipt=receipt
        )

    @classmethod
    def adopt_all(cls, root: Path | str, *, dry_run: bool = True, keep_originals: bool = False) -> list[AdoptReport]:
        """`adopt` every dataset under `root` the original USR wrote (adopted ones are left as they are)."""
        from .original import unadopted
        from .roots import list_datasets

        base = Path(root).expanduser().resolve()
        waiting = [name for name in list_datasets(base) if unadopted(base / name)]
        return [cls.open(base, name).adopt(dry_run=dry_run, keep_originals=keep_originals) for name in waiting]

    def init(
        self,
        *,
        source: str = "",
        notes: str = "",
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Create the dataset (empty base table, `meta.md`, first log line `init`)."""
        return self._writer.execute(
            InitDataset(source=source, notes=notes), command_id=command_id, expected_seq=expected_seq
        )

    def import_file(
        self,
        path: Path | str,
        *,
        fmt: InputFormat = "csv",
        bio_type: str = "dna",
        alphabet: str = "dna_4",
        source: str | None = None,
        on_conflict: OnConflict = "error",
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Import sequences from a csv/jsonl/parquet/fasta file (extra columns are ignored; an `id` column must
        hold the computed ids)."""
        from . import decide
        from .inputs import import_batches

        path = Path(path).expanduser().resolve()
        command = ImportSequences(
            fmt=fmt,
            path=str(path),
            bio_type=bio_type,
            alphabet=alphabet,
            source=source,
            on_conflict=on_conflict,
        )
        return self._writer.execute(
            command,
            rows=lambda: import_batches(path, fmt, batch_rows=decide.IMPORT_BATCH_ROWS),
            command_id=command_id,
            expected_seq=expected_seq,
        )

    def add_sequences(
        self,
        rows: Any,
        *,
        bio_type: str = "dna",
        alphabet: str = "dna_4",
        source: str = "",
        on_conflict: OnConflict = "error",
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Import sequences held in memory: strings, dicts, an Arrow table or a pandas frame."""
        from .inputs import rows_to_table

        table = rows_to_table(rows)
        command = ImportSequences(
            fmt="rows", bio_type=bio_type, alphabet=alphabet, source=source, on_conflict=on_conflict
        )
        return self._writer.execute(command, rows=lambda: table, command_id=command_id, expected_seq=expected_seq)

    # -- overlays, tombstones, record state, maintenance --------------------------------
    def attach(
        self,
        path: Path | str,
        *,
        namespace: str,
        key: KeyKind = "id",
        key_col: str | None = None,
        columns: list[str] | None = None,
        allow_overwrite: bool = False,
        allow_missing: bool = False,
        parse_json: bool = True,
        note: str = "",
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Attach namespaced columns from a csv/parquet/jsonl file, matched to records by `key`."""
        from .attach_inputs import attachment_batches
        from .decide import ATTACH_BATCH_ROWS

        source = Path(path).expanduser().resolve()
        command = AttachColumns(
            namespace=namespace,
            key=key,
            key_col=key_col,
            columns=tuple(columns) if columns else None,
            allow_overwrite=allow_overwrite,
            allow_missing=allow_missing,
            parse_json=parse_json,
            note=note,
            path=str(source),
        )
        return self._writer.execute(
            command,
            rows=lambda: attachment_batches(source, batch_rows=ATTACH_BATCH_ROWS),
            command_id=command_id,
            expected_seq=expected_seq,
        )

    def write_overlay(
        self,
        namespace: str,
        table: Any,
        *,
        key: KeyKind = "id",
        key_col: str | None = None,
        allow_overwrite: bool = False,
        allow_missing: bool = False,
        note: str = "",
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Attach columns held in memory (Arrow table, record batches or pandas frame)."""
        rows = as_table(table)
        command = AttachColumns(
            namespace=namespace,
            key=key,
            key_col=key_col,
            allow_overwrite=allow_overwrite,
            allow_missing=allow_missing,
            parse_json=False,
            note=note,
        )
        return self._writer.execute(command, rows=lambda: rows, command_id=command_id, expected_seq=expected_seq)

    def _ids_call(self, command: _IdsCommandType, ids: Iterable[str], **kwargs: Any) -> Receipt:
        listed = [str(i) for i in ids]
        if len(listed) <= INLINE_IDS:
            cmd = msgspec.structs.replace(command, ids=tuple(listed), id_count=len(listed))
            rows = None
        else:
            cmd = msgspec.structs.replace(command, ids=None, id_count=len(listed))
            rows = pa.table({"id": pa.array(listed, pa.string())})
        return self._writer.execute(cmd, rows=(lambda: rows) if rows is not None else None, **kwargs)

    def delete(
        self,
        ids: Iterable[str],
        *,
        reason: str = "",
        allow_missing: bool = False,
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Tombstone records: hidden from reads unless `include_deleted`; `materialize --drop-deleted` removes them."""
        command = TombstoneRecords(reason=reason, allow_missing=allow_missing)
        return self._ids_call(command, ids, command_id=command_id, expected_seq=expected_seq)

    def restore(
        self,
        ids: Iterable[str],
        *,
        allow_missing: bool = False,
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Undo tombstones."""
        command = RestoreRecords(allow_missing=allow_missing)
        return self._ids_call(command, ids, command_id=command_id, expected_seq=expected_seq)

    def set_state(
        self,
        ids: Iterable[str],
        *,
        masked: bool | None = None,
        qc_status: str | None = None,
        split: str | None = None,
        supersedes: str | None = None,
        lineage: list[str] | None = None,
        allow_missing: bool = False,
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Set `usr_state` fields (only those given) for records."""
        command = SetState(
            masked=masked,
            qc_status=qc_status,  # type: ignore[arg-type]  # validated by decide
            split=split,  # type: ignore[arg-type]
            supersedes=supersedes,
            lineage=tuple(lineage) if lineage is not None else None,
            allow_missing=allow_missing,
        )
        return self._ids_call(command, ids, command_id=command_id, expected_seq=expected_seq)

    def clear_state(
        self,
        ids: Iterable[str],
        *,
        allow_missing: bool = False,
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Reset every `usr_state` field of the records (reads then give masked False, others null)."""
        command = ClearState(allow_missing=allow_missing)
        return self._ids_call(command, ids, command_id=command_id, expected_seq=expected_seq)

    @_read
    def get_state(self, ids: Iterable[str], *, allow_missing: bool = False) -> pa.Table:
        """One row per requested id (request order): id + the five usr_state fields (masked defaults False);
        with `allow_missing`, an id not in the dataset is skipped (no row) instead of raising NotFound."""
        from . import reads

        return reads.state_of(self._head, ids, allow_missing=allow_missing)

    @_read
    def view(self, *, columns: list[str] | None = None, include_deleted: bool = False) -> pa.Table:
        """The overlay-merged live table, read whole (tombstoned rows hidden unless `include_deleted`; `columns`
        None or empty: every visible column). `scan` streams the same rows in bounded memory."""
        from . import reads

        return reads.view(self._head, columns=columns, include_deleted=include_deleted)

    @_read
    def verify(self, *, fix: bool = False) -> VerifyReport:
        """Check the hash chain, every payload digest, and that replay equals the stored files. Reports
        only, unless `fix`: then projection files that differ are rebuilt from the log (never the log)."""
        from .replay import verify

        self._require()
        return verify(self.dir, self.name, fix=fix)

    # -- reads --------------------------------------------------------------------------
    # Every read works on a caught-up prefix of the log (see `recovery.fresh`); tombstoned rows are hidden
    # and `usr__*` columns refused unless `include_deleted`; an unknown column is an InvalidInput naming it.
    @_read
    def head(self, n: int = 10, *, columns: list[str] | None = None, include_deleted: bool = False) -> pa.Table:
        """The first `n` rows of the live view (base order). Reads only the first rows of records.parquet
        and, in each overlay part, only the rows of their ids."""
        from . import reads

        return reads.head(self._head, n, columns=columns, include_deleted=include_deleted)

    def scan(
        self, *, columns: list[str] | None = None, include_deleted: bool = False, batch_size: int = 65536
    ) -> Iterator[pa.RecordBatch]:
        """The live view as record batches (base order, bounded memory), each with `view_schema(...)`.

        `pa.Table.from_batches(list(ds.scan(...)), ds.view_schema(...))` equals `ds.view(...)`.
        """
        from . import reads

        return reads.scan(self._head, columns=columns, include_deleted=include_deleted, batch_size=batch_size)

    @_read
    def view_schema(self, columns: list[str] | None = None, include_deleted: bool = False) -> pa.Schema:
        """The Arrow schema of the live view for these arguments (also when it has no rows)."""
        from . import reads

        return reads.view_schema(self._head, columns, include_deleted)

    @_read
    def get(
        self,
        ids: str | Iterable[str],
        *,
        columns: list[str] | None = None,
        include_deleted: bool = False,
        allow_missing: bool = False,
    ) -> pa.Table:
        """The live-view rows of `ids` in request order. NotFound for an id not in the dataset (unless
        `allow_missing`: it is left out), or (unless `include_deleted`) a tombstoned one."""
        from . import reads

        return reads.get(self._head, ids, columns=columns, include_deleted=include_deleted, allow_missing=allow_missing)

    @_read
    def grep(self, pattern: str, *, limit: int | None = 20, include_deleted: bool = False) -> pa.Table:
        """id, sequence, length of the records whose sequence matches the case-insensitive RE2 regex
        `pattern`, in base order, at most `limit` (None: all)."""
        from . import reads

        return reads.grep(self._head, pattern, limit=limit, include_deleted=include_deleted)

    @_read
    def describe(
        self, *, columns: list[str] | None = None, sample: int | None = None, include_deleted: bool = False
    ) -> list[ColumnProfile]:
        """Per live-view column: type, non-null count, null %, an example, list lengths (`sample`: first N rows;
        `include_deleted`: tombstoned rows and the `usr__` columns too)."""
        from . import reads

        return reads.describe(self._head, columns=columns, sample=sample, include_deleted=include_deleted)

    @_read
    def columns(self, *, include_deleted: bool = False) -> list[ColumnInfo]:
        """The live view's columns in view order (name, registry type, nullable)."""
        from . import reads

        return reads.columns(self._head, include_deleted=include_deleted)

    @_read
    def cell(self, row: int, column: str, *, include_deleted: bool = False) -> Any:
        """The Python value in `column` at 0-based `row` of the live view (base order; tombstoned rows are
        skipped, so not counted, unless `include_deleted`)."""
        from . import reads

        return reads.dataset_cell(self._head, row, column, include_deleted=include_deleted)

    @_read
    def export(
        self,
        fmt: str,
        out: Path | str,
        *,
        columns: list[str] | None = None,
        include_deleted: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ExportResult:
        """Write the live view to `out` as csv, jsonl or parquet, streamed batch by batch.

        `out` may be an existing directory (the file is `<id with / as _>.<fmt>`). Parquet keeps Arrow
        types and the `usr:` metadata; CSV writes list/struct cells as JSON text and timestamps as RFC 3339;
        JSONL writes one object per line. A bad format or target is rejected before anything is created;
        missing parent folders are created, and the file appears atomically (an existing one is replaced)."""
        from .export import export_dataset

        return export_dataset(self._head, fmt, out, columns=columns, include_deleted=include_deleted, progress=progress)

    @_read
    def schema(self) -> list[ColumnInfo]:
        """Name, registry type string and nullability of every stored column (base, then overlay parts)."""
        from .summary import schema

        return schema(self._head)

    @_read
    def info(self) -> DatasetInfo:
        """Rows, columns, head seq, projection lag and sizes (from metadata; rows are not read)."""
        from .summary import info

        return info(self._head)


class Maintenance:
    """`ds.maintenance`: commands that reshape the projections without changing the live view (compaction,
    materialize, snapshots, registry freezes), the registry check, and rebuild."""

    def __init__(self, dataset: Dataset) -> None:
        self._ds = dataset

    def compact_overlay(
        self, namespace: str, *, command_id: str | None = None, expected_seq: int | None = None
    ) -> Receipt:
        """Merge a namespace's overlay parts into one part (reads are unchanged)."""
        return self._ds._writer.execute(
            CompactOverlay(namespace=namespace), command_id=command_id, expected_seq=expected_seq
        )

    def snapshot(self, *, command_id: str | None = None, expected_seq: int | None = None) -> Receipt:
        """Record a checkpoint of the projected state (base copy `_snapshots/records-<stamp>.parquet`)."""
        return self._ds._writer.execute(TakeSnapshot(), command_id=command_id, expected_seq=expected_seq)

    def materialize(
        self,
        *,
        namespaces: list[str] | None = None,
        drop_overlays: bool = False,
        archive_overlays: bool = False,
        drop_deleted: bool = False,
        snapshot_before: bool = False,
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Fold overlays into records.parquet (new columns after the base columns)."""
        command = Materialize(
            namespaces=tuple(namespaces) if namespaces else None,
            drop_overlays=drop_overlays,
            archive_overlays=archive_overlays,
            drop_deleted=drop_deleted,
        )
        if snapshot_before:
            self.snapshot(command_id=f"{command_id}:snapshot" if command_id else None)
        return self._ds._writer.execute(command, command_id=command_id, expected_seq=expected_seq)

    def dedupe(
        self,
        key: str = "sequence",
        keep: str = "keep-first",
        *,
        dry_run: bool = False,
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> DedupeResult:
        """Drop base rows whose `key` (`id`, `sequence`, `sequence_norm`, `sequence_ci`: dna_4 datasets only)
        another row holds, keeping the first (`keep-first`) or last row of each group in file order. The
        dropped rows leave the live view with their overlay values; every earlier state keeps them
        (docs/adr/0018). `dry_run` only counts, and writes nothing."""
        from .dedupe import check_choice, columns_for, plan_dedupe
        from .reads import scan

        check_choice(key, keep)
        ds = self._ds
        if dry_run:
            ds._require()
            batches = list(scan(ds._head, columns=columns_for(key, with_ids=False), include_deleted=True))
            table = pa.Table.from_batches(batches) if batches else None
            plan = plan_dedupe(table, key, keep, with_ids=False) if table is not None else None
            total, groups, dropped = (plan.rows_total, plan.groups, plan.rows_dropped) if plan else (0, 0, 0)
            return DedupeResult(
                dataset=ds.name, key=key, keep=keep, dry_run=True, rows_total=total, groups=groups, rows_dropped=dropped
            )
        command = Deduplicate(key=cast(DedupeKey, key), keep=cast(DedupeKeep, keep))
        receipt = ds._writer.execute(command, command_id=command_id, expected_seq=expected_seq)
        metrics = receipt.metrics
        if "rows_total" not in metrics:  # nothing dropped: the base's rows, tombstoned ones included
            info = ds.info()
            metrics = {"rows_total": info.rows + info.deleted}
        return DedupeResult(
            dataset=ds.name,
            key=key,
            keep=keep,
            dry_run=False,
            rows_total=int(metrics["rows_total"]),
            groups=int(metrics.get("groups", 0)),
            rows_dropped=int(metrics.get("rows_dropped", 0)),
            receipt=receipt,
        )

    def merge(
        self,
        src: Dataset,
        *,
        columns: str,
        if_duplicate: str = "error",
        coerce_overlap: str = "none",
        carry_namespaces: Iterable[str] = (),
        avoid_casefold_dups: bool = True,
        dry_run: bool = False,
        note: str = "",
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> MergeResult:
        """Add `src`'s live records to this dataset by the original's rules (docs/adr/0019). `columns`:
        `require-same` (identical columns and types) or `union` (new source columns grow the base;
        `coerce_overlap="to-dest"` casts differing primitive types to this dataset's). A source record this
        dataset holds up to case is left out (unless `avoid_casefold_dups` is off); one with an id it holds
        is an error, left out (`skip`, `prefer-dest`) or replaces it (`prefer-src`). `carry_namespaces`
        copies the source's live values of those namespaces for the records that join. The merge event
        names the source's version (head seq and hash); `dry_run` reports and writes nothing."""
        from .merge import MergeSource, check_choice, plan_merge

        check_choice(columns, if_duplicate, coerce_overlap)
        ds = self._ds
        ds._require()
        src._require()
        if src.dir.resolve() == ds.dir.resolve():
            raise InvalidInput(f"Cannot merge {ds.name} into itself.", hint="Name two different datasets.")
        carry = tuple(dict.fromkeys(carry_namespaces))
        for ns in carry:
            if ns in RESERVED_NAMESPACES:
                raise NamespaceError(f"Namespace '{ns}' is reserved: it is not carried by a merge.")

        def read() -> MergeSource:
            from .summary import base_schema

            names = base_schema(src._head).names
            shown = [c.name for c in src.columns()]
            carried: dict[str, list[str]] = {}
            for ns in carry:
                carried[ns] = [c for c in shown if c.startswith(f"{ns}__")]
                if not carried[ns]:
                    raise NotFound(
                        f"{src.name} has no '{ns}' columns to carry.", hint=f"`usr cols {src.name}` lists them."
                    )
            wanted = list(dict.fromkeys([*names, *(c for cs in carried.values() for c in cs)]))
            view = src.view(columns=wanted)
            return MergeSource(
                name=src.name,
                seq=0,
                hash="",
                rows=view.select(names),
                deleted=src.info().deleted,
                carried={ns: view.select(["id", *cs]) for ns, cs in carried.items()},
            )

        def command_of() -> MergeDatasets:
            return MergeDatasets(
                src=src.name,
                columns=cast(MergeColumns, columns),
                if_duplicate=cast(DuplicatePolicy, if_duplicate),
                coerce_overlap=cast(CoerceOverlap, coerce_overlap),
                carry_namespaces=carry,
                avoid_casefold_dups=avoid_casefold_dups,
                note=note,
            )

        source, seq, digest = _at_one_version(src, read)
        source = replace(source, seq=seq, hash=digest)
        before = ds.info()
        rows_before = before.rows + before.deleted
        if dry_run:
            import pyarrow.compute as pc

            from .summary import base_schema

            dest = ds.view(columns=["id", "bio_type", "sequence"], include_deleted=True)
            ids = dest.column("id")
            plan = plan_merge(
                base_schema(ds._head),
                lambda wanted: pc.is_in(wanted, value_set=ids),
                dest if avoid_casefold_dups and dest.num_rows else None,
                source,
                columns=columns,
                if_duplicate=if_duplicate,
                coerce_overlap=coerce_overlap,
            )
            planned = plan.metrics(source.deleted)
            after = rows_before + plan.added.num_rows - len(plan.replaced)
            return _merge_result(ds.name, command_of(), seq, digest, planned, rows_before, after, None)
        command = command_of()
        receipt = ds._writer.execute(command, rows=lambda: source, command_id=command_id, expected_seq=expected_seq)
        # A no-op's receipt holds the counts its merge line would have recorded (`decide_merge`).
        metrics: dict[str, Any] = {
            "rows_src": source.rows.num_rows,
            "rows_src_deleted": source.deleted,
            **receipt.metrics,
        }
        if not receipt.noop:  # the merge line's counts (a carried namespace's attach is the command's last line)
            lines = ds.log.events(n=len(carry) + 2)
            metrics = next(
                r.metrics for r in lines if r.command_id == receipt.command_id and r.action == "merge_datasets"
            )
        now = ds.info()
        return _merge_result(ds.name, command, seq, digest, metrics, rows_before, now.rows + now.deleted, receipt)

    def project_overlay(
        self,
        src: Dataset,
        namespace: str,
        *,
        src_join: str = "id",
        dest_join: str = "id",
        columns: list[str] | None = None,
        overwrite: bool = True,
        allow_missing: bool = False,
        dry_run: bool = False,
        command_id: str | None = None,
    ) -> ProjectResult:
        """Copy `namespace`'s live values of `src` onto this dataset's live records, joined on `src_join` =
        `dest_join` (source join values must be unique), as an attach of this dataset: `overwrite` lets it
        replace values this dataset holds; a record without a match is an error unless `allow_missing`.
        The attach's note names the version of `src` the values came from (its head seq and hash)."""
        from .overlay_copy import namespace_columns, project

        ds = self._ds
        src._require()
        ds._require()
        if namespace in RESERVED_NAMESPACES:
            raise NamespaceError(f"Namespace '{namespace}' is reserved: it is not projected.")

        def read() -> tuple[list[str], pa.Table]:
            available = [c.name for c in src.columns()]
            chosen = namespace_columns(namespace, available, columns)
            return chosen, src.view(columns=list(dict.fromkeys([src_join, *chosen])))

        (chosen, rows), seq, digest = _at_one_version(src, read)
        dest_rows = ds.view(columns=list(dict.fromkeys(["id", dest_join])))
        projected = project(rows, src_join, dest_rows, dest_join, chosen)
        if projected.missing and not allow_missing:
            raise InvalidInput(
                f"{projected.missing} record(s) of {ds.name} have no '{src_join}' match in {src.name} "
                f"(e.g. {', '.join(projected.missing_sample[:3])}).",
                hint="Pass --allow-missing to project onto the records that match.",
            )
        result = ProjectResult(
            src=src.name,
            dest=ds.name,
            namespace=namespace,
            columns=chosen,
            matched=projected.matched,
            missing=projected.missing,
            dest_rows=projected.dest_rows,
            dry_run=dry_run,
            source_seq=seq,
            source_hash=digest,
        )
        if dry_run or not projected.matched:
            return result
        note = f"overlay-project from {src.name} at seq {seq} (hash {digest}) on {src_join}={dest_join}"
        receipt = ds.write_overlay(
            namespace, projected.table, allow_overwrite=overwrite, note=note, command_id=command_id
        )
        return msgspec.structs.replace(result, receipt=receipt)

    def remove_overlay(
        self, namespace: str, mode: str = "error", *, command_id: str | None = None, expected_seq: int | None = None
    ) -> Receipt:
        """Take `namespace`'s overlay out of the live view: `delete` it, or `archive` it under
        `_derived/_archived/`; `error` deletes it but fails when there is none (the others are then no-ops).
        Its values stay in every earlier state; columns a materialize wrote into the base stay."""
        # An unknown mode is refused by the decision, with every other check.
        command = RemoveOverlay(namespace=namespace, mode=cast(Literal["error", "delete", "archive"], mode))
        return self._ds._writer.execute(command, command_id=command_id, expected_seq=expected_seq)

    def freeze_registry(self, *, command_id: str | None = None, expected_seq: int | None = None) -> Receipt:
        """Freeze the current registry into `_registry/` and stamp its hash into records.parquet."""
        return self._ds._writer.execute(FreezeRegistry(), command_id=command_id, expected_seq=expected_seq)

    @_read
    def validate(self, *, strict: bool = False, registry_mode: str = "current") -> ValidateReport:
        """Check the base schema, namespacing, registry types of every overlay and materialized
        column, and reserved-namespace values. Overlays are checked against per-namespace contract
        hashes, so editing one namespace in registry.yaml never invalidates another's overlays.

        `registry_mode`: `current` (root registry.yaml), `frozen` (the registry the last event was
        validated against) or `either` (passes if one of them does). `strict` also recomputes every
        id and length and checks materialized columns' types.
        """
        from .validate import validate

        self._ds._require()
        return validate(self._ds.dir, self._ds.root, self._ds.name, strict=strict, registry_mode=registry_mode)

    def rebuild(self) -> RebuildResult:
        """Regenerate every projection (records.parquet, _derived/, the id index, meta.md) from the log."""
        from .replay import rebuild

        self._ds._require()
        return rebuild(self._ds.dir, self._ds.name)


class History:
    """`ds.history`: who changed what, answered from the history index (docs/adr/0020). Points of the log
    are a seq, an event id or an RFC 3339 time, as for `ds.log.replay`."""

    def __init__(self, dataset: Dataset) -> None:
        self._ds = dataset

    @_read
    def of(self, record_id: str, *, until: str | int | None = None, columns: list[str] | None = None) -> RecordHistory:
        """Every event that touched record `record_id` (up to `until`), oldest first: seq, time, action,
        actor and command id, and each column it changed, before -> after (`columns` only, when given)."""
        from .forensics import record_history

        self._ds._require()
        return record_history(self._ds._head, record_id, until=until, columns=columns)

    @_read
    def blame(self, record_id: str, *, until: str | int | None = None) -> RecordBlame:
        """For each set cell of record `record_id` (at `until`), the event, time and actor that last wrote it."""
        from .forensics import record_blame

        self._ds._require()
        return record_blame(self._ds._head, record_id, until=until)

    @_read
    def diff(
        self,
        start: str | int,
        end: str | int | None = None,
        *,
        columns: list[str] | None = None,
        summary: bool = False,
    ) -> DiffResult:
        """What changed between `start` and `end` (default: the head): rows added, removed (dropped),
        deleted and restored, and every differing cell with the event and actor that made the change
        (`summary`: the counts only). `0` is the empty dataset before the first event."""
        from .forensics import diff

        self._ds._require()
        return diff(self._ds._head, start, end, columns=columns, summary=summary)

    @_read
    def diff_extent(self, start: str | int, end: str | int | None = None) -> int:
        """How many record mentions a `diff(start, end)` looks at (what its time grows with), counted from the
        log lines without reading a payload: the explorer asks before it diffs."""
        from .forensics import diff_extent

        self._ds._require()
        return diff_extent(self._ds._head, start, end)

    @_read
    def timeline(
        self,
        *,
        action: list[str] | None = None,
        actor: str | None = None,
        since: str | int | None = None,
        until: str | int | None = None,
        record_id: str | None = None,
    ) -> list[LogEntry]:
        """The log as a readable timeline (`usr log`), filtered by action, actor (tool, run id or host),
        a range of points and a record."""
        from .forensics import timeline

        self._ds._require()
        return timeline(self._ds._head, action=action or [], actor=actor, since=since, until=until, record_id=record_id)


class EventLog:
    """`ds.log`: the dataset's events, and the dataset as it was right after any of them."""

    def __init__(self, dataset: Dataset) -> None:
        self._ds = dataset

    @_read
    def events(self, *, n: int | None = None) -> list[LogRecord]:
        """The last `n` events (all when None), verified."""
        self._ds._require()
        records = [line.record for line in iter_lines(self._ds.log_path)]
        return records[-n:] if n else records

    def iter_events(self) -> Iterator[LogLine]:
        """Every verified line, streamed."""
        self._ds._require()
        return iter_lines(self._ds.log_path)

    def resolve_until(self, until: str | int) -> int:
        """Turn `SEQ`, `EVENT_ID` or an RFC 3339 timestamp into a seq of this log."""
        from .replay import resolve_until

        self._ds._require()
        return resolve_until(self._ds.dir, self._ds.name, until)

    @_read
    def replay(self, until: str | int, out: Path | str) -> ReplayResult:
        """Write the dataset as it was right after event `until` into the new directory `out`."""
        from .replay import replay

        seq = self.resolve_until(until)
        return replay(self._ds.dir, seq, Path(out).expanduser().resolve())


def as_table(data: Any) -> pa.Table:
    """An Arrow table, record batch(es), a pandas DataFrame (its index is not a column) or a dict of columns
    as one Arrow table: the in-memory input of `write_overlay`."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, list) and data and all(isinstance(b, pa.RecordBatch) for b in data):
        return pa.Table.from_batches(data)
    try:
        if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
            return pa.Table.from_pandas(data, preserve_index=False)
        return pa.table(data)
    except (TypeError, pa.ArrowInvalid) as exc:
        raise InvalidInput(f"cannot read an overlay table from {type(data).__name__}: {exc}") from exc


def _at_one_version(src: Dataset, read: Callable[[], T]) -> tuple[T, int, str]:
    """What `read` reads of `src` and the version it was read at (head seq and chain hash): read again
    when a writer appended meanwhile."""
    for _ in range(3):
        head = src.log.events(n=1)
        found = read()
        if src.log.events(n=1) == head:
            return found, (head[-1].seq if head else 0), (head[-1].hash if head else "")
    raise ConcurrencyError(f"{src.name} kept changing while its values were read.", hint="Try again.")


def _merge_result(
    dest: str,
    command: MergeDatasets,
    seq: int,
    digest: str,
    metrics: dict[str, Any],
    rows_before: int,
    rows_after: int,
    receipt: Receipt | None,
) -> MergeResult:
    """A merge's report from the counts its event records (`MergePlan.metrics`; none: nothing joined)."""
    return MergeResult(
        dest=dest,
        src=command.src,
        src_seq=seq,
        src_hash=digest,
        dry_run=receipt is None,
        columns_mode=command.columns,
        duplicate_policy=command.if_duplicate,
        rows_src=int(metrics.get("rows_src", 0)),
        rows_src_deleted=int(metrics.get("rows_src_deleted", 0)),
        casefold_skipped=int(metrics.get("casefold_skipped", 0)),
        duplicates_total=int(metrics.get("duplicates_total", 0)),
        duplicates_skipped=int(metrics.get("duplicates_skipped", 0)),
        duplicates_replaced=int(metrics.get("duplicates_replaced", 0)),
        rows_added=int(metrics.get("rows_added", 0)),
        dest_rows_before=rows_before,
        dest_rows_after=rows_after,
        columns_total=int(metrics.get("columns_total", 0)),
        overlapping_columns=int(metrics.get("overlapping_columns", 0)),
        columns_added=[str(c) for c in metrics.get("columns_added", [])],
        overlap_coercions=[str(c) for c in metrics.get("overlap_coercions", [])],
        carried={str(ns): int(n) for ns, n in metrics.get("carried", {}).items()},
        receipt=receipt,
    )


class Sync:
    """`ds.sync`: compare and exchange events with the copy of this dataset on a remote named in the
    remotes config (`remotes_config`, else `$USR_REMOTES_PATH`), or given as a `Remote`."""

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds

    def _transport(self, remote: str | Remote, remotes_config: Path | str | None) -> Transport:
        from .remotes import reach

        return reach(remote, remotes_config)

    def status(self, remote: str | Remote, *, remotes_config: Path | str | None = None) -> SyncStatus:
        """How this copy and the remote's compare: up to date, which side is ahead and by which events, or
        where they forked (read-only on both sides)."""
        from . import sync

        return sync.status(self._ds.dir, self._ds.name, self._transport(remote, remotes_config))

    def pull(
        self,
        remote: str | Remote,
        *,
        dry_run: bool = False,
        rebase: bool = False,
        primary_only: bool = False,
        skip_snapshots: bool = False,
        verify_sidecars: bool = False,
        remotes_config: Path | str | None = None,
    ) -> SyncResult:
        """Append the remote's events this copy lacks, through this copy's write path. A dataset missing
        here is copied whole (`primary_only`: only its log and the files it names, the projections folded
        here; `skip_snapshots`: without its checkpoints). When both copies appended since a common line,
        `rebase` decides this copy's commands again after the remote's events (a command that no longer
        validates is left out and reported; `SyncResult.rebased`); without it, `Diverged`.
        `verify_sidecars`: `usr verify` of this copy after a transfer (`SyncResult.verified`; a failure
        raises `IntegrityError`)."""
        from . import sync
        from .bootstrap import Copying

        ds, copy = self._ds, Copying(primary_only=primary_only, skip_snapshots=skip_snapshots)
        where = self._transport(remote, remotes_config)
        return sync.pull(
            ds.root, ds.dir, ds.name, where, dry_run=dry_run, copy=copy, rebase=rebase, verify_sidecars=verify_sidecars
        )

    def push(
        self,
        remote: str | Remote,
        *,
        dry_run: bool = False,
        primary_only: bool = False,
        skip_snapshots: bool = False,
        verify_sidecars: bool = False,
        remotes_config: Path | str | None = None,
    ) -> SyncResult:
        """Append this copy's events the remote lacks, through the remote's write path (a dataset missing
        there is copied whole, as `pull` copies one). `verify_sidecars`: `usr verify` of the remote's copy,
        run there, after a transfer."""
        from . import sync
        from .bootstrap import Copying

        ds, copy = self._ds, Copying(primary_only=primary_only, skip_snapshots=skip_snapshots)
        ds._require()
        where = self._transport(remote, remotes_config)
        return sync.push(ds.dir, ds.name, where, dry_run=dry_run, copy=copy, verify_sidecars=verify_sidecars)

    def verify_remote(self, remote: str | Remote, *, remotes_config: Path | str | None = None) -> VerifyReport:
        """`usr verify` of the remote's copy, run there."""
        from .agent import Verify

        return self._transport(remote, remotes_config).call(Verify(dataset=self._ds.name), VerifyReport)
