"""`Dataset`: the one orchestration path. Every mutation goes lock -> recover -> decide ->
payload -> append -> project -> publish -> unlock; every read works from projections that are
checked against (and, when lagging, caught up from) the log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from . import __version__, idindex
from .commands import (
    INLINE_IDS,
    AttachColumns,
    ClearState,
    Command,
    CompactOverlay,
    FreezeRegistry,
    ImportSequences,
    InitDataset,
    InputFormat,
    KeyKind,
    Materialize,
    OnConflict,
    RestoreRecords,
    SetState,
    TakeSnapshot,
    TombstoneRecords,
)

if TYPE_CHECKING:
    from .decide import Decision
from .errors import (
    CommitError,
    ConcurrencyError,
    DatasetExists,
    IntegrityError,
    InvalidInput,
    NotFound,
    UsrError,
)
from .events import (
    BASE_EVENTS,
    GENESIS_HASH,
    LAYOUT_EVENTS,
    Actor,
    DatasetInitialized,
    DatasetRef,
    Fingerprint,
    LogRecord,
    Materialized,
    OverlayCompacted,
    PayloadRef,
    SnapshotTaken,
    record_decoder,
)
from .fileio import append_record, fileops, locked, remove_stale_temps, write_atomic
from .log import (
    LOG_FILE,
    LogLine,
    Scan,
    check_prefix,
    encode_line,
    find_command,
    iter_lines,
    line_problem,
    quarantine_tail,
    read_line_at,
)
from .projectors import (
    BASE_SCHEMA,
    DERIVED_DIR,
    EMPTY_LAYOUT,
    PROJECTOR_VERSION,
    BaseProjection,
    DerivedLayout,
    PartInfo,
    Watermark,
    apply_event,
    apply_layout,
    encode_base,
    encode_part,
    materialize_table,
    part_table,
    patch_watermark_hash,
    sorted_part,
)
from .registry import Registry, load_registry, parse_registry, registry_path
from .results import (
    ColumnInfo,
    ColumnProfile,
    DatasetInfo,
    DatasetSummary,
    ExportResult,
    RebuildResult,
    Receipt,
    ReplayResult,
    ValidateReport,
    VerifyReport,
)
from .roots import list_datasets, resolve_existing, validate_id
from .storage import (
    LAYOUT_FILE,
    PAYLOAD_DIR,
    RECORDS_FILE,
    REGISTRY_DIR,
    encode_layout,
    encode_payload,
    freeze_registry,
    frozen_registry,
    payload_ref,
    publish,
    read_base,
    read_layout,
    read_payload,
    read_watermark,
    write_payload,
)

_IdsCommandType = TombstoneRecords | RestoreRecords | SetState | ClearState
# overlays.TOMBSTONE_NS and overlays.WRITTEN: usr_es.overlays (which loads pyarrow.compute, ~35 ms) is
# imported only where overlays are merged, keeping it off the start-up of reads without overlays.
TOMBSTONE_NS = "usr"
WRITTEN = "__written__:"
#: Commands whose decision needs at most these base columns (and that do not change the base):
#: their writes read only these columns of records.parquet. Every other command reads it whole.
_BASE_COLUMNS_NEEDED: dict[type[Command], list[str]] = {
    TombstoneRecords: ["id"],
    RestoreRecords: ["id"],
    SetState: ["id"],
    ClearState: ["id"],
    TakeSnapshot: ["id"],
    CompactOverlay: ["id"],
}
LOCK_FILE = ".usr.lock"
SNAPSHOT_DIR = "_snapshots"
CHECKPOINT_MANIFEST = "manifest.json"
CHECKPOINT_EVERY = 1000  # events between automatic checkpoints
CHECKPOINT_BYTES = 256 << 20  # or this many payload bytes
META_FILE = "meta.md"
_COMMAND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def utc_now_text(after: str | None = None) -> str:
    """RFC 3339 UTC with microseconds; strictly after `after` so log time never goes backwards."""
    now = datetime.now(UTC)
    if after is not None:
        floor = datetime.fromisoformat(after) + timedelta(microseconds=1)
        now = max(now, floor)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_actor() -> Actor:
    pid = os.getpid()
    return Actor(
        tool=os.environ.get("USR_ACTOR_TOOL") or "usr",
        run_id=os.environ.get("USR_ACTOR_RUN_ID") or f"usr-pid-{pid}",
        host=socket.gethostname(),
        pid=pid,
    )


@dataclass
class _Proj:
    """Projected state while folding: the base table, the overlay layout, and part tables in hand."""

    base: BaseProjection | None
    layout: DerivedLayout
    layout_mark: Watermark
    tables: dict[str, pa.Table] = field(default_factory=dict)
    reuse: Path | None = None  # a checkpoint whose files may be linked instead of re-encoded
    reuse_seq: int = 0
    #: Set while `base` is partial: its table holds only some columns of `<base_dir>/records.parquet`
    #: (same watermark); `Dataset._full_base` loads the rest before anything folds or encodes it.
    base_dir: Path | None = None
    #: Part tables not read yet: `tables` key -> a trusted file holding them (a verified checkpoint's).
    lazy: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Tail:
    """The verified log head plus the projections caught up to it."""

    scan: Scan
    proj: _Proj
    caught_up: int
    warnings: list[str]


class Dataset:
    """A USR dataset: a folder whose `.events.log` is the truth and whose Parquet files are caches.

    Open one with `Dataset.open(root, "ns/name")` (or a dataset directory path). Mutations
    return a `Receipt`; reads return Arrow tables or typed results.
    """

    def __init__(self, root: Path, name: str, directory: Path) -> None:
        self.root = root
        self.name = name
        self.dir = directory
        # Kept between writes through this object (a loop of `set_state` calls, say) while the files
        # they came from are unchanged: a partial base keyed by records.parquet's identity, and the
        # parsed registry keyed by its bytes.
        self._base_cache: tuple[tuple[int, ...], tuple[str, ...], BaseProjection] | None = None
        self._registry_cache: tuple[bytes, Registry] | None = None

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str, name_or_path: str | Path) -> Dataset:
        """Open a dataset by id (`name` or `ns/name`, relative to `root`) or by directory path.

        The dataset need not exist yet (for `init`). An unqualified name that matches exactly
        one existing `ns/name` resolves to it.
        """
        root = Path(root).expanduser().resolve()
        text = str(name_or_path)
        candidate = Path(text).expanduser()
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
        path = Path(directory).expanduser().resolve()
        if path.is_file() and path.name in (RECORDS_FILE, LOG_FILE):
            path = path.parent
        if not (path / LOG_FILE).is_file():
            raise NotFound(f"Not a dataset directory (no {LOG_FILE}): {path}")
        first = read_line_at(path / LOG_FILE, 0)
        name = path.name
        if first is not None:
            try:
                record = _first_record(first)
                if isinstance(record.event, DatasetInitialized):
                    name = record.event.name
            except UsrError:
                pass
        root = next((p for p in path.parents if registry_path(p).is_file()), path.parent)
        return cls(root, name, path)

    @classmethod
    def list_all(cls, root: Path | str) -> list[DatasetSummary]:
        """Summaries of every dataset under `root`."""
        root = Path(root)
        out = []
        for ident in list_datasets(root):
            try:
                info = cls(root, ident, root / ident).info()
            except UsrError as exc:  # one broken dataset must not hide the others
                out.append(
                    DatasetSummary(
                        dataset=ident, rows=0, cols=0, size_bytes=0, updated=None, head_seq=0, error=str(exc)
                    )
                )
                continue
            out.append(
                DatasetSummary(
                    dataset=ident,
                    rows=info.rows,
                    cols=len(info.columns),
                    size_bytes=info.size_bytes,
                    updated=info.updated,
                    head_seq=info.head_seq,
                )
            )
        return out

    # -- paths --------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def records_path(self) -> Path:
        return self.dir / RECORDS_FILE

    @property
    def exists(self) -> bool:
        return self.log_path.is_file()

    def _require(self) -> None:
        if not self.exists:
            raise NotFound(f"Dataset not found: {self.name}", hint=f"Create it with `usr init {self.name}`.")

    # -- mutations ----------------------------------------------------------------------
    def init(
        self,
        *,
        source: str = "",
        notes: str = "",
        command_id: str | None = None,
        expected_seq: int | None = None,
    ) -> Receipt:
        """Create the dataset (empty base table, `meta.md`, first log line `init`)."""
        return self._execute(InitDataset(source=source, notes=notes), command_id=command_id, expected_seq=expected_seq)

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
        """Import sequences from a csv/jsonl/parquet/fasta file (extra columns are ignored)."""
        from .inputs import read_import_file

        path = Path(path).expanduser().resolve()
        command = ImportSequences(
            fmt=fmt,
            path=str(path),
            bio_type=bio_type,
            alphabet=alphabet,
            source=source,
            on_conflict=on_conflict,
        )
        self._require()
        return self._execute(
            command,
            rows_loader=lambda: read_import_file(path, fmt),
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
        self._require()
        return self._execute(command, rows_loader=lambda: table, command_id=command_id, expected_seq=expected_seq)

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
        from .attach_inputs import read_attachment

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
        self._require()
        return self._execute(
            command, rows_loader=lambda: read_attachment(source), command_id=command_id, expected_seq=expected_seq
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
        rows = _as_table(table)
        command = AttachColumns(
            namespace=namespace,
            key=key,
            key_col=key_col,
            allow_overwrite=allow_overwrite,
            allow_missing=allow_missing,
            parse_json=False,
            note=note,
        )
        self._require()
        return self._execute(command, rows_loader=lambda: rows, command_id=command_id, expected_seq=expected_seq)

    def _ids_call(self, command: _IdsCommandType, ids: Iterable[str], **kwargs: Any) -> Receipt:
        listed = [str(i) for i in ids]
        if len(listed) <= INLINE_IDS:
            cmd = msgspec.structs.replace(command, ids=tuple(listed), id_count=len(listed))
            rows = None
        else:
            cmd = msgspec.structs.replace(command, ids=None, id_count=len(listed))
            rows = pa.table({"id": pa.array(listed, pa.string())})
        self._require()
        return self._execute(cmd, rows_loader=(lambda: rows) if rows is not None else None, **kwargs)

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

    def get_state(self, ids: Iterable[str], *, allow_missing: bool = False) -> pa.Table:
        """One row per requested id (request order): id + the five usr_state fields (masked defaults False);
        with `allow_missing`, an id not in the dataset gets the defaults instead of raising NotFound."""
        import pyarrow.compute as pc

        from . import reads
        from .overlays import STATE_SCHEMA

        wanted = pa.array([str(i).strip() for i in ids], pa.string())
        # The live view's state (overlay over materialized columns, ADR 0008), read for these ids only.
        names = [c.name for c in reads.columns(self, include_deleted=True) if c.name.startswith("usr_state__")]
        found = reads.get(
            self, wanted.to_pylist(), columns=["id", *names], include_deleted=True, allow_missing=allow_missing
        )
        at = pc.index_in(wanted, value_set=found.column("id"))
        columns: list[pa.Array | pa.ChunkedArray] = [wanted]
        for field_ in STATE_SCHEMA:
            if field_.name == "id":
                continue
            values = found.column(field_.name).take(at).cast(field_.type) if field_.name in names else None
            if field_.name == "usr_state__masked":
                columns.append(
                    pc.fill_null(values, False) if values is not None else pa.repeat(pa.scalar(False), len(wanted))
                )
            else:
                columns.append(values if values is not None else pa.nulls(len(wanted), field_.type))
        return pa.table(columns, schema=STATE_SCHEMA)

    def compact_overlay(
        self, namespace: str, *, command_id: str | None = None, expected_seq: int | None = None
    ) -> Receipt:
        """Merge a namespace's overlay parts into one part (reads are unchanged)."""
        self._require()
        return self._execute(CompactOverlay(namespace=namespace), command_id=command_id, expected_seq=expected_seq)

    def snapshot(self, *, command_id: str | None = None, expected_seq: int | None = None) -> Receipt:
        """Record a checkpoint of the projected state (base copy `_snapshots/records-<stamp>.parquet`)."""
        self._require()
        return self._execute(TakeSnapshot(), command_id=command_id, expected_seq=expected_seq)

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
        self._require()
        if snapshot_before:
            self.snapshot(command_id=f"{command_id}:snapshot" if command_id else None)
        return self._execute(command, command_id=command_id, expected_seq=expected_seq)

    def freeze_registry(self, *, command_id: str | None = None, expected_seq: int | None = None) -> Receipt:
        """Freeze the current registry into `_registry/` and stamp its hash into records.parquet."""
        self._require()
        return self._execute(FreezeRegistry(), command_id=command_id, expected_seq=expected_seq)

    def _live_parts(self) -> tuple[pa.Table, dict[str, pa.Table]]:
        """The base table and every namespace's merged overlay, from caught-up projection files."""
        self._fresh()
        doc = read_layout(self.dir / LAYOUT_FILE)
        layout = doc[0] if doc is not None else EMPTY_LAYOUT
        proj = _Proj(base=None, layout=layout, layout_mark=doc[1] if doc else Watermark())
        merged = {ns: self._merged(proj, ns, from_files=True) for ns in layout.live}
        base = pq.read_table(self.records_path).replace_schema_metadata(None)
        return base, merged

    def view(self, *, columns: list[str] | None = None, include_deleted: bool = False) -> pa.Table:
        """The overlay-merged live table, read whole (tombstoned rows hidden unless `include_deleted`; `columns`
        None or empty: every visible column). `scan` streams the same rows in bounded memory."""
        from . import reads
        from .overlays import live_view

        reads.view_schema(self, columns, include_deleted)  # the read layer's column errors (named, with hints)
        base, merged = self._live_parts()
        try:
            return live_view(base, merged, include_deleted=include_deleted, columns=columns or None)
        except KeyError as exc:
            raise InvalidInput(f"Unknown column: {exc.args[0]}.") from None
        except ValueError as exc:
            raise InvalidInput(str(exc), hint="Pass --include-deleted to see tombstone columns.") from None

    def _execute(
        self,
        command: Command,
        *,
        rows_loader: Any = None,
        command_id: str | None,
        expected_seq: int | None,
    ) -> Receipt:
        from .decide import DatasetState, NoChange, Rows, decide  # write-only: kept off the read path's start-up

        if command_id is not None and not _COMMAND_ID.match(command_id):
            raise InvalidInput(f"Invalid command id '{command_id}'.", hint="Use 1-128 of [A-Za-z0-9._:@/+-].")
        is_init = isinstance(command, InitDataset)
        if is_init:
            load_registry(self.root)  # init requires a registry, like every mutation
            # A retried init (same command_id) returns its original receipt below, like any command.
            # A log without one complete line (a crash tore the first append) is not initialized yet.
            started = self.exists and read_line_at(self.log_path, 0) is not None
            if started and (command_id is None or find_command(self.log_path, command_id) is None):
                raise DatasetExists(f"Dataset already initialized: {self.name}")
            fileops().mkdir(self.dir)
        else:
            self._require()
        with locked(self.dir / LOCK_FILE):
            self._remove_stale_temps()
            try:
                tail = self._tail(quarantine=True, base_columns=self._base_columns_for(command))
            except OSError as exc:
                raise CommitError(f"recovering the log tail failed: {exc.strerror}", state="NOT_COMMITTED") from exc
            _release_memory()  # the Parquet reader's scratch buffers
            warnings = list(tail.warnings)
            if command_id is not None:
                prior = find_command(self.log_path, command_id)
                if prior is not None:
                    return _receipt(prior.record, replayed=True)
            if expected_seq is not None and expected_seq != tail.scan.seq:
                raise ConcurrencyError(
                    f"Stale write: expected seq {expected_seq} but the log is at seq {tail.scan.seq}.",
                    hint="Re-read the dataset and retry with the current seq.",
                )
            registry = self._registry_for_write(tail.scan.registry_hash)
            # Handed over: `decide` holds the only reference to the input table and frees what it has parsed.
            rows = Rows(rows_loader()) if rows_loader is not None else None
            if rows is not None:
                _release_memory()  # the reader's scratch buffers
            proj = tail.proj
            state = DatasetState(
                name=self.name,
                initialized=tail.scan.seq > 0,
                seq=tail.scan.seq,
                ids=proj.base.table.column("id") if proj.base is not None else pa.array([], pa.string()),
                base=proj.base.table if proj.base is not None else None,
                live_parts={ns: len(parts) for ns, parts in proj.layout.live.items()},
                overlays=self._overlays_for(command, proj),
                registry=registry,
            )
            _release_memory()  # the Parquet readers' scratch buffers
            now = utc_now_text(tail.scan.last_timestamp)
            try:
                decision = decide(state, command, now=now, rows=rows)
            except NoChange as nothing:
                return Receipt(
                    dataset=self.name,
                    action="noop",
                    seq=tail.scan.seq,
                    event_id="",
                    command_id=command_id or "",
                    hash=tail.scan.hash,
                    timestamp_utc=now,
                    metrics={},
                    noop=True,
                    message=str(nothing),
                    warnings=warnings,
                )
            # The input table and the overlay tables read for the decision are no longer needed: free
            # them before projecting (the event's own tables travel in `decision`).
            rows = None
            del state
            proj.tables.clear()
            _release_memory()
            try:
                record, line, digest, parquet, index = self._prepare(tail, registry, command, decision, command_id, now)
            except OSError as exc:  # payload or frozen registry: the log is untouched
                raise CommitError(f"writing the event's files failed: {exc.strerror}", state="NOT_COMMITTED") from exc
            append_record(self.log_path, line, expected_size=tail.scan.size)
            fileops().point("after_append")
            try:
                if parquet is not None:
                    publish(self.records_path, patch_watermark_hash(parquet, digest))
                    idindex.write(self.dir, index)
                mark = Watermark(seq=record.seq, offset=tail.scan.size, hash=digest)
                self._publish_derived_event(proj, decision, record, mark)
                fileops().point("after_publish")
                if isinstance(decision.event, SnapshotTaken):
                    self._write_checkpoint(proj, mark, base_copy=decision.event.name)
                else:
                    self._maybe_auto_checkpoint(proj, mark)
                self._append_meta(record)
            except OSError as exc:
                raise CommitError(
                    f"event seq {record.seq} is committed, but a projection could not be written: {exc.strerror}",
                    state="COMMITTED",
                    hint="The next command (or `usr rebuild`) catches the projection up from the log.",
                ) from exc
            final = LogRecord(**{**_fields(record), "hash": digest})
            return _receipt(final, warnings=warnings)

    def _remove_stale_temps(self) -> None:
        """Remove temp files a crashed writer left (under the lock)."""
        for directory in (self.dir, self.dir / PAYLOAD_DIR, self.dir / REGISTRY_DIR, self.dir / idindex.INDEX_DIR):
            remove_stale_temps(directory)

    def _base_columns_for(self, command: Command) -> list[str] | None:
        """The base columns `command`'s decision needs (None: all of them)."""
        needed = _BASE_COLUMNS_NEEDED.get(type(command))
        if needed is not None or not isinstance(command, AttachColumns):
            return needed
        try:
            names = pq.read_schema(self.records_path).names
        except (OSError, pa.ArrowInvalid):
            return None
        # Keys resolve through ids (sequence_ci through upper-cased sequences); materialized columns of
        # the namespace are needed for the overwrite check.
        keyed = {"id", "bio_type", "alphabet", *(["sequence"] if command.key == "sequence_ci" else [])}
        return [n for n in names if n in keyed or n.startswith(f"{command.namespace}__")]

    def _overlays_for(self, command: Command, proj: _Proj) -> dict[str, pa.Table]:
        """The merged overlay tables `decide` needs for this command (read here, not in decide)."""
        live = proj.layout.live
        wanted: list[str] = []
        if isinstance(command, (AttachColumns, CompactOverlay)):
            wanted = [command.namespace]
        elif isinstance(command, Materialize):
            wanted = list(live)
        return {ns: self._merged(proj, ns, from_files=True) for ns in wanted if ns in live}

    def _publish_derived_event(self, proj: _Proj, decision: Decision, record: LogRecord, mark: Watermark) -> None:
        """Write the overlay part an event adds, move/remove parts it retires, publish the layout."""
        event = decision.event
        if not isinstance(event, LAYOUT_EVENTS):
            return
        payload = decision.payload
        table = decision.part if decision.part is not None else part_table(event, payload)
        before = proj.layout.files()
        layout = apply_layout(
            proj.layout,
            event,
            registry_hash=record.registry_hash,
            mark=mark,
            has_rows=table is not None and table.num_rows > 0,
        )
        after = layout.files()
        derived = self.dir / DERIVED_DIR
        for file, info in after.items():
            if file in before:
                continue
            fileops().mkdir((self.dir / file).parent)
            # Archived: the same part (namespace + event; one event may write parts in several namespaces).
            old = next(
                (
                    f
                    for f, i in before.items()
                    if (i.mark, i.namespace) == (info.mark, info.namespace) and f not in after
                ),
                None,
            )
            if old is not None and (self.dir / old).exists():  # archived: same bytes, new place
                fileops().replace(self.dir / old, self.dir / file)
                continue
            assert table is not None
            publish(self.dir / file, encode_part(info, table))
        for file in before:
            if file not in after and (self.dir / file).exists():
                fileops().unlink(self.dir / file)
        fileops().mkdir(derived)
        publish(self.dir / LAYOUT_FILE, encode_layout(layout, mark))
        proj.layout, proj.layout_mark = layout, mark

    def _registry_for_write(self, last_hash: str | None) -> Registry:
        """The live registry; for a dataset outside any root (e.g. a replayed copy), the frozen
        registry the last event was validated against."""
        path = registry_path(self.root)
        if path.is_file() or last_hash is None:
            try:
                data = path.read_bytes()
            except OSError:
                return load_registry(self.root)  # raises the usual "registry required" error
            if self._registry_cache is None or self._registry_cache[0] != data:
                self._registry_cache = (data, parse_registry(data, source=str(path)))
            return self._registry_cache[1]
        return frozen_registry(self.dir, last_hash)

    def _prepare(
        self,
        tail: _Tail,
        registry: Registry,
        command: Command,
        decision: Decision,
        command_id: str | None,
        now: str,
    ) -> tuple[LogRecord, bytes, str, memoryview | None, bytes | None]:
        """The event's log line and digest; for a base event also the new records.parquet (hash pending)
        and id index bytes (None: no index, or the base is unchanged)."""
        registry_hash = freeze_registry(self.dir, registry)
        fileops().point("after_registry_freeze")
        ref: PayloadRef | None = None
        payload = decision.payload
        if payload is not None:
            data = encode_payload(payload)
            ref = payload_ref(data, payload.num_rows)
            write_payload(self.dir, ref, data)
        seq = tail.scan.seq + 1
        parquet: memoryview | None = None
        index_rows: pa.RecordBatch | None = None
        base = tail.proj.base
        if isinstance(decision.event, BASE_EVENTS):
            from concurrent.futures import ThreadPoolExecutor

            mark = Watermark(seq=seq, offset=tail.scan.size, hash="")
            base = apply_event(
                base, decision.event, payload, registry_hash=registry_hash, mark=mark, materialized=decision.base_table
            )
            assert base is not None
            with ThreadPoolExecutor(1) as pool:  # sorting the index keys overlaps encoding the base (no GIL held)
                indexing = pool.submit(_index_rows, base.table)
                parquet = encode_base(base, pending_hash=True)
                index_rows = indexing.result()
            fingerprint = Fingerprint(rows=base.rows, cols=base.table.num_columns, size_bytes=len(parquet))
        else:
            fingerprint = self._fingerprint(tail.proj)
        record = LogRecord(
            timestamp_utc=now,
            action=decision.action,
            dataset=DatasetRef(name=self.name, root=str(self.root)),
            args=decision.redacted_args,
            metrics=decision.metrics,
            artifacts={"payload": ref.file} if ref is not None else {},
            maintenance=decision.maintenance,
            fingerprint=fingerprint,
            registry_hash=registry_hash,
            actor=default_actor(),
            version=__version__,
            seq=seq,
            event_id=uuid.uuid4().hex,
            command_id=command_id or uuid.uuid4().hex,
            command=command,
            event=decision.event,
            payload=ref,
            prev=tail.scan.hash,
        )
        line, digest = encode_line(record)
        index = None
        if index_rows is not None:
            index = idindex.encode(index_rows, Watermark(seq=seq, offset=tail.scan.size, hash=digest))
        return record, line, digest, parquet, index

    def _write_index(self, base: BaseProjection, target: Path) -> bool:
        """Publish the id index of `base` (whose records.parquet is under `target`); False: no index."""
        table = base.table
        if "id" not in table.column_names:  # a partial base (read for a decision without ids): read them
            try:
                table = pq.read_table(target / RECORDS_FILE, columns=["id"])
            except (OSError, pa.ArrowInvalid, KeyError):
                table = pa.table({})
        rows = _index_rows(table)
        idindex.write(target, idindex.encode(rows, base.watermark) if rows is not None else None)
        return rows is not None

    def _fingerprint(self, proj: _Proj) -> Fingerprint:
        base = proj.base
        if base is None:
            return Fingerprint(rows=0, cols=0, size_bytes=0)
        size = self.records_path.stat().st_size if self.records_path.exists() else 0
        cols = base.table.num_columns
        if proj.base_dir is not None:  # a partial base: count the stored columns
            cols = len(pq.read_schema(proj.base_dir / RECORDS_FILE).names)
        return Fingerprint(rows=base.rows, cols=cols, size_bytes=size)

    # -- validate -------------------------------------------------------------------------
    def validate(self, *, strict: bool = False, registry_mode: str = "current") -> ValidateReport:
        """Check the base schema, namespacing, registry types of every overlay and materialized
        column, and reserved-namespace values. Overlays are checked against per-namespace contract
        hashes, so editing one namespace in registry.yaml never invalidates another's overlays.

        `registry_mode`: `current` (root registry.yaml), `frozen` (the registry the last event was
        validated against) or `either` (passes if one of them does). `strict` also recomputes every
        id and length and checks materialized columns' types.
        """
        import pyarrow.compute as pc

        from .alphabet import ALPHABETS
        from .overlays import STATE_SCHEMA, TOMBSTONE_SCHEMA
        from .registry import ESSENTIAL_COLUMNS, parse_type

        if registry_mode not in ("current", "frozen", "either"):
            raise InvalidInput(f"Unknown registry mode '{registry_mode}'.", hint="Use current, frozen or either.")
        _, scan, _ = self._fresh()
        base, merged = self._live_parts()
        doc = read_layout(self.dir / LAYOUT_FILE)
        layout = doc[0] if doc is not None else EMPTY_LAYOUT
        candidates: list[tuple[str, Registry]] = []
        if registry_mode in ("current", "either"):
            candidates.append(("current", load_registry(self.root)))
        if registry_mode in ("frozen", "either") and scan.registry_hash:
            candidates.append(("frozen", frozen_registry(self.dir, scan.registry_hash)))
        if not candidates:
            raise NotFound(
                "No frozen registry recorded for this dataset.", hint="Run `usr maintenance registry-freeze`."
            )

        common: list[str] = []
        for name, field_ in zip(ESSENTIAL_COLUMNS, BASE_SCHEMA, strict=True):
            if name not in base.column_names:
                common.append(f"records.parquet lacks essential column '{name}'")
            elif not base.schema.field(name).type.equals(field_.type):
                common.append(f"records.parquet column '{name}' is {base.schema.field(name).type}, not {field_.type}")
        if not common:
            ids = base.column("id")
            if len(pc.unique(ids)) != len(ids):
                common.append("records.parquet holds duplicate ids")
            for alphabet in pc.unique(base.column("alphabet")).to_pylist():
                if alphabet not in ALPHABETS:
                    common.append(f"records.parquet holds unknown alphabet '{alphabet}'")
            if strict:
                from .decide import compute_ids

                recomputed = compute_ids(base.column("sequence"), base.column("bio_type"), single=None)
                bad = pc.sum(pc.not_equal(recomputed, ids).cast(pa.int64())).as_py()
                if bad:
                    common.append(f"{bad} row(s): id does not match sha1(bio_type|sequence)")
                lengths = pc.cast(pc.utf8_length(base.column("sequence")), pa.int32())
                if not pc.all(pc.equal(lengths, base.column("length")), min_count=0).as_py():  # empty: ok
                    common.append("some rows: length does not match the sequence")
        extra = [c for c in base.column_names if c not in ESSENTIAL_COLUMNS]
        for column in extra:
            if "__" not in column or not column.split("__", 1)[0]:
                common.append(f"Derived columns must be namespaced as '<ns>__<field>'; offending: {column}")
        tomb = merged.get("usr")
        if tomb is not None:
            for f in tomb.schema:
                if f.name != "id" and not f.name.startswith(WRITTEN) and TOMBSTONE_SCHEMA.get_field_index(f.name) < 0:
                    common.append(f"tombstone overlay has unexpected column '{f.name}'")
        state = merged.get("usr_state")
        if state is not None:
            for column, allowed in (("usr_state__qc_status", ("fail", "pass", "unknown", "warn")),
                                    ("usr_state__split", ("holdout", "test", "train", "val"))):  # fmt: skip
                if column in state.column_names:
                    values = [v for v in pc.unique(state.column(column)).to_pylist() if v is not None]
                    bad_values = sorted(set(values) - set(allowed))
                    if bad_values:
                        common.append(f"{column} holds values outside {', '.join(allowed)}: {bad_values}")
            for f in state.schema:
                if f.name != "id" and not f.name.startswith(WRITTEN) and STATE_SCHEMA.get_field_index(f.name) < 0:
                    common.append(f"usr_state overlay has unexpected column '{f.name}'")

        verdicts: dict[str, list[str]] = {}
        for label, registry in candidates:
            problems: list[str] = []
            for ns, parts in sorted(layout.live.items()):
                if ns in ("usr", "usr_state"):
                    continue
                if ns not in registry.namespaces:
                    problems.append(f"overlay namespace '{ns}' is not registered ({label} registry)")
                    continue
                contract = registry.contract_hash(ns)
                types = registry.namespaces[ns].column_types()
                for part in parts:
                    if part.purge:  # ids only: no values, no contract
                        continue
                    if part.contract_hash != contract:
                        problems.append(
                            f"{part.file}: namespace_contract_hash {str(part.contract_hash)[:12]} does not match "
                            f"the {label} registry's '{ns}' contract {contract[:12]}"
                        )
                    for f in pq.read_schema(self.dir / part.file):
                        if f.name == "id" or f.name.startswith(WRITTEN):
                            continue
                        want = types.get(f.name)
                        if want is None:
                            problems.append(f"{part.file}: column '{f.name}' is not registered under '{ns}'")
                        elif not want.equals(f.type):
                            problems.append(f"{part.file}: column '{f.name}' is {f.type}, registry says {want}")
            for column in extra:
                ns = column.split("__", 1)[0]
                spec = registry.namespaces.get(ns)
                if ns == "usr":
                    continue
                if spec is None:
                    problems.append(f"materialized column '{column}': namespace '{ns}' is not registered")
                elif strict:
                    want_text = next((c.type for c in spec.columns if c.name == column), None)
                    if want_text is None:
                        problems.append(f"materialized column '{column}' is not registered under '{ns}'")
                    elif not parse_type(want_text).equals(base.schema.field(column).type):
                        problems.append(f"materialized column '{column}' type differs from the registry")
            verdicts[label] = problems
        passing = [label for label, problems in verdicts.items() if not problems]
        problems = common + ([] if passing else [p for ps in verdicts.values() for p in ps])
        return ValidateReport(
            dataset=self.name,
            ok=not problems,
            registry_mode=registry_mode,
            registries=[label for label, _ in candidates],
            passed_with=passing,
            problems=problems,
        )

    # -- checkpoints ----------------------------------------------------------------------
    def _write_checkpoint(self, proj: _Proj, mark: Watermark, *, base_copy: str | None = None) -> Path:
        """Checkpoint the projections as of `mark` under `_snapshots/checkpoint-<seq>/`.

        Projection files are never modified in place (a new version is a new file renamed over the
        old), so the checkpoint hard-links them (copying only where links are impossible).
        """
        target = self.dir / SNAPSHOT_DIR / f"checkpoint-{mark.seq:010d}"
        staging = target.with_name(f".tmp-{target.name}-{os.getpid()}")
        if target.exists():
            return target
        shutil.rmtree(staging, ignore_errors=True)
        fileops().mkdir(staging)
        files: dict[str, str] = {}
        sources = [RECORDS_FILE, idindex.INDEX_FILE, *(proj.layout.files() if proj.layout_mark.seq else {})]
        if proj.layout_mark.seq:
            sources.append(LAYOUT_FILE)
        for rel in sources:
            src = self.dir / rel
            if not src.exists():
                continue
            fileops().mkdir((staging / rel).parent)
            _copy(src, staging / rel)
            files[rel] = _file_digest(src)
        manifest = {
            "seq": mark.seq,
            "offset": mark.offset,
            "hash": mark.hash,
            "projector": PROJECTOR_VERSION,
            "files": files,
            "content_digest": xxhash.xxh3_128_hexdigest(json.dumps(files, sort_keys=True).encode()),
        }
        write_atomic(staging / CHECKPOINT_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        fileops().replace(staging, target)
        fileops().fsync_dir(target.parent)
        if base_copy is not None and (self.dir / RECORDS_FILE).exists():
            _copy(self.dir / RECORDS_FILE, self.dir / SNAPSHOT_DIR / f"{base_copy}.parquet")
        return target

    def _checkpoints(self) -> list[tuple[int, Path]]:
        folder = self.dir / SNAPSHOT_DIR
        if not folder.is_dir():
            return []
        found = []
        for path in folder.glob("checkpoint-*"):
            suffix = path.name.split("-", 1)[1]
            if path.is_dir() and suffix.isdigit():
                found.append((int(suffix), path))
        return sorted(found)

    def _load_checkpoint(self, path: Path, lines: list[LogLine]) -> _Proj | str:
        """The projections stored in a checkpoint, or the reason it cannot be used."""
        try:
            manifest = json.loads((path / CHECKPOINT_MANIFEST).read_bytes())
            seq = int(manifest["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"checkpoint {path.name} has no readable manifest"
        if manifest.get("projector") != PROJECTOR_VERSION:
            return f"checkpoint {path.name} was written by projector {manifest.get('projector')}"
        if not 1 <= seq <= len(lines) or lines[seq - 1].hash != manifest.get("hash"):
            return f"checkpoint {path.name} does not match the log at seq {seq}"
        for rel, digest in dict(manifest.get("files", {})).items():
            file = path / rel
            if not file.is_file() or _file_digest(file) != digest:
                return f"checkpoint {path.name}: {rel} does not match its digest"
        base_mark = read_watermark(path / RECORDS_FILE)
        # Only the row count for now: the rows are read if an event is folded into the base or it is re-encoded.
        base = read_base(path, base_mark, columns=[]) if base_mark is not None else None
        doc = read_layout(path / LAYOUT_FILE)
        layout, layout_mark = doc if doc is not None else (EMPTY_LAYOUT, Watermark())
        proj = _Proj(base=base, layout=layout, layout_mark=layout_mark, reuse=path, reuse_seq=seq)
        proj.base_dir = path if base is not None else None
        proj.lazy = {_table_key(info): path / info.file for info in layout.files().values()}
        return proj

    def _maybe_auto_checkpoint(self, proj: _Proj, mark: Watermark) -> None:
        """The automatic checkpoint policy: every CHECKPOINT_EVERY events or CHECKPOINT_BYTES of payload
        since the newest checkpoint (env USR_CHECKPOINT_EVERY / USR_CHECKPOINT_BYTES; 0 disables)."""
        every = int(os.environ.get("USR_CHECKPOINT_EVERY", CHECKPOINT_EVERY))
        limit = int(os.environ.get("USR_CHECKPOINT_BYTES", CHECKPOINT_BYTES))
        if every <= 0 and limit <= 0:
            return
        existing = self._checkpoints()
        last = existing[-1][0] if existing else 0
        if every > 0 and mark.seq - last >= every:
            self._write_checkpoint(proj, mark)
            return
        if limit > 0:
            total = 0
            for line in iter_lines(self.log_path):
                if line.seq > last and line.record.payload is not None:
                    total += line.record.payload.size_bytes
            if total >= limit:
                self._write_checkpoint(proj, mark)

    # -- recovery and catch-up ----------------------------------------------------------
    def _tail(self, *, quarantine: bool, base_columns: list[str] | None = None) -> _Tail:
        """Verify the log, fold events the projections lack, publish them, quarantine a torn tail.

        Projections (records.parquet, _derived/layout.json) are trusted from their anchors on: the
        lines before are checked from raw bytes, the lines after are decoded and folded.
        Called under the dataset lock by writers (and by readers that found a lag). With
        `base_columns`, a base that needs no catching up is read with only those columns.
        """
        warnings: list[str] = []
        base_mark = read_watermark(self.records_path)
        base_anchor = self._anchor(base_mark)
        layout_doc = read_layout(self.dir / LAYOUT_FILE)
        layout_anchor = self._anchor(layout_doc[1]) if layout_doc is not None else None
        proj = _Proj(base=None, layout=EMPTY_LAYOUT, layout_mark=Watermark())
        start_offset, start_seq, start_hash = 0, 0, GENESIS_HASH  # where to decode from; the seq before it
        if base_anchor is not None and base_mark is not None and layout_anchor is not None and layout_doc:
            first = min(base_anchor, layout_anchor)
            check_prefix(self.log_path, end_offset=first[0], lines=first[1] - 1, last_hash=first[2])
            if base_columns is None:
                base = read_base(self.dir, base_mark)
            else:
                base = self._partial_base(base_mark, base_columns)
            proj = _Proj(base=base, layout=layout_doc[0], layout_mark=layout_doc[1])
            if base_columns is not None:
                proj.base_dir = self.dir
            start_offset, start_seq, start_hash = first[0], first[1] - 1, first[2]
        scan = Scan()
        lines = iter_lines(
            self.log_path, scan=scan, start_offset=start_offset, start_seq=start_seq, start_hash=start_hash
        )
        folded = self._fold_lines(proj, lines)
        if folded is None:  # the projections disagree with each other: rebuild them from the log
            proj = _Proj(base=None, layout=EMPTY_LAYOUT, layout_mark=Watermark())
            scan = Scan()
            folded = self._fold_lines(proj, iter_lines(self.log_path, scan=scan)) or (0, 0)
        base_n, layout_n = folded
        if base_n and proj.base is not None:
            publish(self.records_path, encode_base(proj.base))
            warnings.append(f"caught up records.parquet by {base_n} event(s) to seq {proj.base.watermark.seq}")
        if proj.base is not None and idindex.stamp_of(self.dir) != proj.base.watermark:
            self._write_index(proj.base, self.dir)  # lagging (or never written): catch it up too
        if layout_n or (scan.seq and layout_doc is None):
            self._sync_derived(proj)
            if layout_n:
                warnings.append(f"caught up _derived/ by {layout_n} event(s) to seq {proj.layout_mark.seq}")
        if quarantine and scan.torn_offset is not None:
            size = quarantine_tail(self.log_path, scan)
            warnings.append(
                f"quarantined a torn tail of {size} byte(s) after seq {scan.seq} into .events.log.quarantine"
            )
        return _Tail(scan=scan, proj=proj, caught_up=base_n + layout_n, warnings=warnings)

    def _fold_lines(self, proj: _Proj, lines: Iterator[LogLine], *, from_files: bool = True) -> tuple[int, int] | None:
        """Fold lines into `proj`; returns (#base events, #layout events) folded, or None when a
        materialize must be folded into a base that lags behind the stored layout (restart from 0)."""
        base_n = layout_n = 0
        for line in lines:
            record, event = line.record, line.record.event
            mark = Watermark(seq=line.seq, offset=line.offset, hash=record.hash)
            base_due = isinstance(event, BASE_EVENTS) and (proj.base is None or line.seq > proj.base.watermark.seq)
            layout_due = isinstance(event, LAYOUT_EVENTS) and line.seq > proj.layout_mark.seq
            if not (base_due or layout_due):
                continue
            table: pa.Table | None = None  # the previous event's part: not kept alive while this one folds
            _release_memory()  # what folding the previous event freed
            payload = read_payload(self.dir, record.payload) if record.payload is not None else None
            if base_due:
                self._full_base(proj)
                materialized = None
                if isinstance(event, Materialized):
                    if proj.layout_mark.seq >= line.seq:
                        return None
                    live = proj.layout.live
                    chosen = [ns for ns in event.namespaces if ns in live]
                    merged = {ns: self._merged(proj, ns, from_files=from_files) for ns in chosen}
                    tombs = self._merged(proj, TOMBSTONE_NS, from_files=from_files) if TOMBSTONE_NS in live else None
                    assert proj.base is not None
                    materialized = materialize_table(proj.base.table, merged, tombs, drop_deleted=event.drop_deleted)
                proj.base = apply_event(
                    proj.base, event, payload, registry_hash=record.registry_hash, mark=mark, materialized=materialized
                )
                base_n += 1
            if layout_due:
                table = part_table(event, payload)
                if isinstance(event, OverlayCompacted):
                    table = sorted_part(self._merged(proj, event.namespace, from_files=from_files))
                layout = apply_layout(
                    proj.layout,
                    event,
                    registry_hash=record.registry_hash,
                    mark=mark,
                    has_rows=table is not None and table.num_rows > 0,
                )
                if table is not None:
                    for info in layout.files().values():
                        if info.mark == mark:
                            proj.tables[_table_key(info)] = table
                proj.layout, proj.layout_mark = layout, mark
                layout_n += 1
        return base_n, layout_n

    def _partial_base(self, mark: Watermark, columns: list[str]) -> BaseProjection:
        """`columns` of records.parquet (stamped `mark`); reused from the previous call while the file
        is the same one (projection files are replaced by rename, never changed in place)."""
        st = os.stat(self.records_path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._base_cache
        if cached is not None and cached[0] == key and cached[1] == tuple(columns) and cached[2].watermark == mark:
            return cached[2]
        base = read_base(self.dir, mark, columns=columns)
        self._base_cache = (key, tuple(columns), base)
        return base

    def _merged(self, proj: _Proj, namespace: str, *, from_files: bool) -> pa.Table:
        from .overlays import Part, merge_parts

        parts = proj.layout.live.get(namespace, ())
        merged = merge_parts([Part(p.mark.seq, self._part_table(p, proj, from_files=from_files)) for p in parts])
        _release_memory()  # the merge's hash tables
        return merged

    def _encoded_part(self, info: PartInfo, proj: _Proj) -> memoryview:
        return encode_part(info, self._part_table(info, proj, from_files=False))

    def _full_base(self, proj: _Proj) -> BaseProjection | None:
        """`proj.base` with every column: a partial base (see `_Proj.base_dir`) is read in full now."""
        if proj.base is not None and proj.base_dir is not None:
            proj.base = read_base(proj.base_dir, proj.base.watermark)
        proj.base_dir = None
        return proj.base

    def _part_table(self, info: PartInfo, proj: _Proj, *, from_files: bool) -> pa.Table:
        """A part's rows: from its file when trusted and current, else regenerated from the log."""
        from .overlays import Part, merge_parts

        key = _table_key(info)
        cache = proj.tables
        if key in cache:
            return cache[key]
        path = self.dir / info.file
        table: pa.Table | None = None
        trusted = proj.lazy.pop(key, None)
        if trusted is not None:
            table = pq.read_table(trusted).replace_schema_metadata(None)
        elif from_files and read_watermark(path) == info.mark:
            table = pq.read_table(path).replace_schema_metadata(None)
        elif info.sources:
            table = sorted_part(
                merge_parts([Part(s.mark.seq, self._part_table(s, proj, from_files=from_files)) for s in info.sources])
            )
        else:
            raw = read_line_at(self.log_path, info.mark.offset)
            if raw is None:
                raise IntegrityError(f"log line for overlay part {info.file} is missing")
            record = _first_record(raw)
            payload = read_payload(self.dir, record.payload) if record.payload is not None else None
            table = part_table(record.event, payload)
            if table is None:
                raise IntegrityError(f"event seq {record.seq} does not produce overlay part {info.file}")
        cache[key] = table
        return table

    def _sync_derived(self, proj: _Proj, directory: Path | None = None, *, from_files: bool = True) -> list[str]:
        """Make `_derived/` hold exactly the layout's part files (regenerating missing/stale ones)."""
        target = directory or self.dir
        expected = proj.layout.files()
        written = []
        for file, info in expected.items():
            path = target / file
            if from_files and read_watermark(path) == info.mark:
                continue
            fileops().mkdir(path.parent)
            reused = proj.reuse / file if proj.reuse is not None else None
            if reused is not None and target != self.dir and read_watermark(reused) == info.mark:
                _copy(reused, path)  # unchanged since the checkpoint: same bytes
                continue
            publish(path, encode_part(info, self._part_table(info, proj, from_files=from_files)))
            written.append(file)
        derived = target / DERIVED_DIR
        if derived.is_dir():
            for path in sorted(derived.rglob("*.parquet")):
                if str(path.relative_to(target)) not in expected:
                    fileops().unlink(path)
        fileops().mkdir(derived)
        publish(target / LAYOUT_FILE, encode_layout(proj.layout, proj.layout_mark))
        return written

    def _anchor(self, stored: Watermark | None) -> tuple[int, int, str] | None:
        """(offset, seq, prev hash) of the line the stored projection claims, if the log agrees."""
        if stored is None or stored.seq < 1:
            return None
        raw = read_line_at(self.log_path, stored.offset)
        if raw is None or line_problem(raw, hash=stored.hash, seq=stored.seq) is not None:
            return None
        return stored.offset, stored.seq, _first_record(raw).prev

    def _replay(
        self, *, until_seq: int | None = None, checkpoints: bool = True
    ) -> tuple[_Proj, Scan, list[LogLine], list[str]]:
        """Fold the log (or a prefix): from the newest checkpoint at or before the target whose
        manifest matches the log (a mismatching one is skipped with a note), else from scratch.
        Live projection files are never trusted here."""
        scan = Scan()
        lines = list(iter_lines(self.log_path, until_seq=until_seq, scan=scan))
        notes: list[str] = []
        proj = _Proj(base=None, layout=EMPTY_LAYOUT, layout_mark=Watermark())
        if checkpoints:
            for seq, path in reversed(self._checkpoints()):
                if seq > scan.seq:
                    continue
                loaded = self._load_checkpoint(path, lines)
                if isinstance(loaded, str):
                    notes.append(f"{loaded}; ignored")
                    continue
                proj = loaded
                break
        self._fold_lines(proj, iter(lines[proj.reuse_seq :]), from_files=False)
        return proj, scan, lines, notes

    def _fresh(self) -> tuple[Watermark | None, Scan, int]:
        """Make the projections reflect every event; return the base watermark, the log scan and how
        many events had to be caught up. Takes the lock only when it must catch up.
        """
        self._require()
        stored = read_watermark(self.records_path)
        anchor = self._anchor(stored)
        layout_doc = read_layout(self.dir / LAYOUT_FILE)
        layout_anchor = self._anchor(layout_doc[1]) if layout_doc is not None else None
        if anchor is not None and stored is not None and layout_anchor is not None and layout_doc is not None:
            first = min(anchor, layout_anchor)
            check_prefix(self.log_path, end_offset=first[0], lines=first[1] - 1, last_hash=first[2])
            scan = Scan()
            lagging = False
            for line in iter_lines(
                self.log_path, start_offset=first[0], start_seq=first[1] - 1, start_hash=first[2], scan=scan
            ):
                event = line.record.event
                if (line.seq > stored.seq and isinstance(event, BASE_EVENTS)) or (
                    line.seq > layout_doc[1].seq and isinstance(event, LAYOUT_EVENTS)
                ):
                    lagging = True
                    break
            if not lagging:
                return stored, scan, 0
        with locked(self.dir / LOCK_FILE):
            tail = self._tail(quarantine=False)
        base = tail.proj.base
        return (base.watermark if base is not None else None), tail.scan, tail.caught_up

    # -- reads --------------------------------------------------------------------------
    # Every read works on a caught-up prefix of the log (see `_fresh`); tombstoned rows are hidden and
    # `usr__*` columns refused unless `include_deleted`; an unknown column is an InvalidInput naming it.
    def head(self, n: int = 10, *, columns: list[str] | None = None, include_deleted: bool = False) -> pa.Table:
        """The first `n` rows of the live view (base order). Reads only the first rows of records.parquet
        and, in each overlay part, only the rows of their ids."""
        from . import reads

        return reads.head(self, n, columns=columns, include_deleted=include_deleted)

    def scan(
        self, *, columns: list[str] | None = None, include_deleted: bool = False, batch_size: int = 65536
    ) -> Iterator[pa.RecordBatch]:
        """The live view as record batches (base order, bounded memory), each with `view_schema(...)`.

        `pa.Table.from_batches(list(ds.scan(...)), ds.view_schema(...))` equals `ds.view(...)`.
        """
        from . import reads

        return reads.scan(self, columns=columns, include_deleted=include_deleted, batch_size=batch_size)

    def view_schema(self, columns: list[str] | None = None, include_deleted: bool = False) -> pa.Schema:
        """The Arrow schema of the live view for these arguments (also when it has no rows)."""
        from . import reads

        return reads.view_schema(self, columns, include_deleted)

    def get(
        self, ids: str | Iterable[str], *, columns: list[str] | None = None, include_deleted: bool = False
    ) -> pa.Table:
        """The live-view rows of `ids` in request order. NotFound for an id not in the dataset, or (unless
        `include_deleted`) a tombstoned one."""
        from . import reads

        return reads.get(self, ids, columns=columns, include_deleted=include_deleted)

    def grep(self, pattern: str, *, limit: int | None = 20, include_deleted: bool = False) -> pa.Table:
        """id, sequence, length of the records whose sequence matches the case-insensitive RE2 regex
        `pattern`, in base order, at most `limit` (None: all)."""
        from . import reads

        return reads.grep(self, pattern, limit=limit, include_deleted=include_deleted)

    def describe(self, *, columns: list[str] | None = None, sample: int | None = None) -> list[ColumnProfile]:
        """Per live-view column: type, non-null count, null %, an example, list lengths (`sample`: first N rows)."""
        from . import reads

        return reads.describe(self, columns=columns, sample=sample)

    def columns(self, *, include_deleted: bool = False) -> list[ColumnInfo]:
        """The live view's columns in view order (name, registry type, nullable)."""
        from . import reads

        return reads.columns(self, include_deleted=include_deleted)

    def cell(self, row: int, column: str, *, include_deleted: bool = False) -> Any:
        """The Python value in `column` at 0-based `row` of the live view (base order; tombstoned rows are
        skipped, so not counted, unless `include_deleted`)."""
        from . import reads

        return reads.cell(self, row, column, include_deleted=include_deleted)

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
        the file appears atomically (an existing one is replaced)."""
        from .export import export_dataset

        return export_dataset(self, fmt, out, columns=columns, include_deleted=include_deleted, progress=progress)

    def schema(self) -> list[ColumnInfo]:
        """Name, registry type string and nullability of every column."""
        from .registry import format_type

        self._fresh()
        schema = pq.read_schema(self.records_path).remove_metadata()
        fields = list(schema)
        doc = read_layout(self.dir / LAYOUT_FILE)
        if doc is not None:
            seen = set(schema.names)
            for ns in sorted(n for n in doc[0].live if n != "usr"):
                for part in doc[0].live[ns]:
                    if part.purge:
                        continue
                    for f in pq.read_schema(self.dir / part.file):
                        if f.name not in seen and f.name != "id" and not f.name.startswith(WRITTEN):
                            seen.add(f.name)
                            fields.append(f)
        return [ColumnInfo(f.name, format_type(f.type), f.nullable) for f in fields]

    def info(self) -> DatasetInfo:
        """Rows, columns, head seq, projection lag and sizes (from metadata; rows are not read)."""
        mark, scan, lag = self._fresh()
        rows, columns, meta, deleted = 0, [], {}, 0
        if mark is not None:
            metadata = pq.read_metadata(self.records_path)
            rows = metadata.num_rows
            columns = [c.name for c in self.schema()]
            deleted = self._tombstoned_count()
            rows -= deleted
            meta = {k.decode(): v.decode() for k, v in (metadata.metadata or {}).items()}
        return DatasetInfo(
            name=self.name,
            path=str(self.dir),
            rows=rows,
            columns=columns,
            namespaces=sorted({c.split("__", 1)[0] for c in columns if "__" in c}),
            head_seq=scan.seq,
            projection_seq=mark.seq if mark is not None else 0,
            projection_lag=lag,
            size_bytes=self.records_path.stat().st_size if self.records_path.exists() else 0,
            created_at=meta.get("usr:dataset_created_at"),
            updated=scan.last_timestamp,
            registry_hash=meta.get("usr:registry_hash"),
            torn_tail_bytes=scan.torn_bytes,
            deleted=deleted,
            checkpoints=[seq for seq, _ in self._checkpoints()],
        )

    def _tombstoned_count(self) -> int:
        """How many base rows are tombstoned (0 without a `usr` overlay)."""
        doc = read_layout(self.dir / LAYOUT_FILE)
        if doc is None or TOMBSTONE_NS not in doc[0].live:
            return 0
        from .overlays import tombstoned_ids

        proj = _Proj(base=None, layout=doc[0], layout_mark=doc[1])
        # Every tombstoned id is a base row: tombstones are written only for ids in the base, and rows
        # leaving the base (`materialize --drop-deleted`) take their tombstones with them (ADR 0008).
        return len(tombstoned_ids(self._merged(proj, TOMBSTONE_NS, from_files=True)))

    def events(self, *, n: int | None = None) -> list[LogRecord]:
        """The last `n` events (all when None), verified."""
        self._require()
        records = [line.record for line in iter_lines(self.log_path)]
        return records[-n:] if n else records

    def iter_events(self) -> Iterator[LogLine]:
        self._require()
        return iter_lines(self.log_path)

    # -- replay / rebuild / verify ------------------------------------------------------
    def resolve_until(self, until: str | int) -> int:
        """Turn `SEQ`, `EVENT_ID` or an RFC 3339 timestamp into a seq of this log."""
        self._require()
        lines = [line for line in iter_lines(self.log_path)]
        if not lines:
            raise NotFound(f"{self.name} has no events")
        text = str(until).strip()
        if text.isdigit():
            seq = int(text)
            if not 1 <= seq <= len(lines):
                raise NotFound(f"No event with seq {seq}; the log holds seq 1..{len(lines)}.")
            return seq
        if _HEX32.match(text):
            for line in lines:
                if line.record.event_id == text:
                    return line.seq
            raise NotFound(f"No event with id {text}.")
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"Cannot read --until '{text}'.",
                hint="Give a seq (42), an event id, or an RFC 3339 timestamp.",
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        chosen = [line.seq for line in lines if datetime.fromisoformat(line.record.timestamp_utc) <= moment]
        if not chosen:
            raise NotFound(f"No event at or before {text}; the first is at {lines[0].record.timestamp_utc}.")
        return chosen[-1]

    def replay(self, until: str | int, out: Path | str) -> ReplayResult:
        """Write the dataset as it was right after event `until` into the new directory `out`."""
        seq = self.resolve_until(until)
        out = Path(out).expanduser().resolve()
        if out.exists() and any(out.iterdir()):
            raise DatasetExists(f"Output directory is not empty: {out}")
        proj, scan, lines, notes = self._replay(until_seq=seq)
        fileops().mkdir(out)
        with self.log_path.open("rb") as fh:
            prefix = fh.read(scan.size)
        write_atomic(out / LOG_FILE, prefix, point="replay_log")
        for line in lines:
            if line.record.payload is not None:
                fileops().mkdir(out / PAYLOAD_DIR)
                _copy(self.dir / line.record.payload.file, out / line.record.payload.file)
            if line.record.registry_hash:
                name = f"registry.{line.record.registry_hash}.yaml"
                if (self.dir / REGISTRY_DIR / name).exists():
                    fileops().mkdir(out / REGISTRY_DIR)
                    _copy(self.dir / REGISTRY_DIR / name, out / REGISTRY_DIR / name)
        self._write_projections(proj, out)
        write_atomic(out / META_FILE, render_meta([line.record for line in lines]).encode(), point="meta")
        last = lines[-1].record
        return ReplayResult(
            out=str(out),
            seq=seq,
            event_id=last.event_id,
            timestamp_utc=last.timestamp_utc,
            rows=proj.base.rows if proj.base is not None else 0,
            from_checkpoint=proj.reuse_seq or None,
            notes=notes,
        )

    def _write_projections(self, proj: _Proj, target: Path) -> list[str]:
        """Publish every projection of `proj` under `target` (records.parquet, _derived/)."""
        files = []
        _release_memory()  # what folding the log freed, before encoding
        if proj.layout_mark.seq:
            # Overlay parts first: their tables are then dropped before the (larger) base is encoded.
            self._sync_derived(proj, target, from_files=False)
            proj.tables.clear()
            _release_memory()
        if proj.base is not None:
            reused = proj.reuse / RECORDS_FILE if proj.reuse is not None else None
            indexed = False
            if reused is not None and read_watermark(reused) == proj.base.watermark and target != self.dir:
                _copy(reused, target / RECORDS_FILE)  # unchanged since the checkpoint: same bytes
                if idindex.stamp_of(reused.parent) == proj.base.watermark:  # and so is its index
                    fileops().mkdir((target / idindex.INDEX_FILE).parent)
                    _copy(reused.parent / idindex.INDEX_FILE, target / idindex.INDEX_FILE)
                    indexed = True
            else:
                base = self._full_base(proj)
                assert base is not None
                publish(target / RECORDS_FILE, encode_base(base))
            files.append(RECORDS_FILE)
            if indexed or self._write_index(proj.base, target):
                files.append(idindex.INDEX_FILE)
        if proj.layout_mark.seq:
            files.extend([*proj.layout.files(), LAYOUT_FILE])
        return files

    def rebuild(self) -> RebuildResult:
        """Regenerate every projection (records.parquet, _derived/, meta.md) from the log."""
        self._require()
        with locked(self.dir / LOCK_FILE):
            self._remove_stale_temps()
            proj, scan, lines, notes = self._replay()
            files = self._write_projections(proj, self.dir)
            write_atomic(self.dir / META_FILE, render_meta([line.record for line in lines]).encode(), point="meta")
            files.append(META_FILE)
        rows = proj.base.rows if proj.base is not None else 0
        return RebuildResult(dataset=self.name, seq=scan.seq, rows=rows, files=files, notes=notes)

    def verify(self) -> VerifyReport:
        """Check the hash chain, every payload digest, and that replay equals the stored files."""
        self._require()
        problems: list[str] = []
        notes: list[str] = []
        scan = Scan()
        proj = _Proj(base=None, layout=EMPTY_LAYOUT, layout_mark=Watermark())
        payloads = 0
        try:
            lines = list(iter_lines(self.log_path, scan=scan))
            for line in lines:
                record = line.record
                if record.payload is not None:
                    payloads += 1  # read and digest-checked by the fold below (every payload event is folded)
                self._fold_lines(proj, iter([line]), from_files=False)
                base = proj.base
                if (
                    isinstance(record.event, BASE_EVENTS)
                    and base is not None
                    and (record.fingerprint.rows != base.rows or record.fingerprint.cols != base.table.num_columns)
                ):
                    problems.append(
                        f"line {line.seq} (byte offset {line.offset}): fingerprint rows/cols differ from replay"
                    )
                    break
        except UsrError as exc:
            problems.append(str(exc))
        files: list[str] = []
        if not problems:
            if scan.torn_bytes:
                notes.append(
                    f"torn tail of {scan.torn_bytes} byte(s) after seq {scan.seq} (quarantined by the next write)"
                )
            # Each expected file is encoded when it is compared (one file's bytes in memory at a time).
            expected: dict[str, Callable[[], bytes | memoryview]] = {}
            base = proj.base
            if base is not None:
                expected[RECORDS_FILE] = lambda: encode_base(base)
                index_rows = _index_rows(base.table)
                if index_rows is not None:
                    expected[idindex.INDEX_FILE] = partial(idindex.encode, index_rows, base.watermark)
            if proj.layout_mark.seq:
                for file, info in proj.layout.files().items():
                    expected[file] = partial(self._encoded_part, info, proj)
                expected[LAYOUT_FILE] = partial(encode_layout, proj.layout, proj.layout_mark)
            # Overlay parts are checked first, so their tables are freed before the base is encoded;
            # findings are reported in the order above.
            found: dict[str, str] = {}
            for file in sorted(expected, key=lambda name: name == RECORDS_FILE):
                if file == RECORDS_FILE:
                    proj.tables.clear()
                _release_memory()
                path = self.dir / file
                if not path.exists():
                    found[file] = f"{file} is missing (run `usr rebuild`)"
                elif not _same_bytes(path, expected[file]()):
                    stored = read_watermark(path) if file.endswith(".parquet") else None
                    where = f"stored watermark seq {stored.seq}" if stored else "content differs"
                    found[file] = f"{file} differs from replay of seq 1..{scan.seq} ({where})"
            files.extend(expected)
            problems.extend(found[file] for file in expected if file in found)
            derived = self.dir / DERIVED_DIR
            if derived.is_dir():
                for path in sorted(derived.rglob("*.parquet")):
                    rel = str(path.relative_to(self.dir))
                    if rel not in expected:
                        problems.append(f"{rel} is not produced by the log (stray overlay file)")
        return VerifyReport(
            dataset=self.name,
            ok=not problems,
            seq=scan.seq,
            head_hash=scan.hash,
            lines=scan.seq,
            payloads_checked=payloads,
            files_checked=files,
            problems=problems,
            notes=notes,
        )

    # -- meta.md ------------------------------------------------------------------------
    def _append_meta(self, record: LogRecord) -> None:
        path = self.dir / META_FILE
        if isinstance(record.event, DatasetInitialized):
            write_atomic(path, render_meta([record]).encode(), point="meta")
            return
        ops = fileops()
        fd = ops.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
        try:
            ops.write(fd, _meta_bullet(record).encode())
        finally:
            ops.close(fd)


def _index_rows(table: pa.Table) -> pa.RecordBatch | None:
    """The id index rows of a base table (None: it has no `id` column or cannot be indexed)."""
    return idindex.sorted_rows(table.column("id")) if "id" in table.column_names else None


def render_meta(records: list[LogRecord]) -> str:
    """`meta.md`: a header from the init event and one bullet per event (a projection too)."""
    if not records:
        return ""
    first = records[0].event
    header = ""
    if isinstance(first, DatasetInitialized):
        header = (
            f"name: {first.name}\ncreated_at: {first.created_at}\nsource: {first.source}\n"
            f"notes: {first.notes}\nschema: USR v1\n\n### Updates\n"
        )
    return header + "".join(_meta_bullet(r) for r in records)


def _meta_bullet(record: LogRecord) -> str:
    metrics = " ".join(f"{k}={v}" for k, v in record.metrics.items())
    return f"- {record.timestamp_utc}: {record.action} (seq {record.seq}){' ' + metrics if metrics else ''}\n"


def _first_record(raw: bytes) -> LogRecord:
    try:
        return record_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"cannot decode log line: {exc}") from exc


def _same_bytes(path: Path, data: bytes | memoryview) -> bool:
    """Whether the file holds exactly `data` (compared a block at a time)."""
    view = memoryview(data)
    if path.stat().st_size != view.nbytes:
        return False
    block = bytearray(1 << 20)
    offset = 0
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(block):
            if block[:size] != view[offset : offset + size].tobytes():
                return False
            offset += size
    return offset == view.nbytes


def _file_digest(path: Path) -> str:
    """xxh3-128 hex digest of a file's bytes, read a block at a time (no copy of the whole file)."""
    digest = xxhash.xxh3_128()
    block = memoryview(bytearray(1 << 20))
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(block):
            digest.update(block[:size])
    return str(digest.hexdigest())


def _release_memory() -> None:
    """Hand memory Arrow's allocator has freed back to the OS (it keeps it otherwise): without this,
    the scratch space of one phase of a large write stays in the process's peak RSS on top of the next."""
    pa.default_memory_pool().release_unused()


def _table_key(info: PartInfo) -> str:
    """`_Proj.tables` key of a part (archiving moves the file, not the content)."""
    return f"{info.namespace}@{info.mark.seq}"


def _fields(record: LogRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in record.__struct_fields__}


def _receipt(record: LogRecord, *, replayed: bool = False, warnings: list[str] | None = None) -> Receipt:
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


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, list) and data and all(isinstance(b, pa.RecordBatch) for b in data):
        return pa.Table.from_batches(data)
    try:
        return pa.table(data)
    except (TypeError, pa.ArrowInvalid) as exc:
        raise InvalidInput(f"cannot read an overlay table from {type(data).__name__}: {exc}") from exc


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
