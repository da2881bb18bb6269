"""`Dataset`: the one orchestration path. Every mutation goes lock -> recover -> decide ->
payload -> append -> project -> publish -> unlock; every read works from projections that are
checked against (and, when lagging, caught up from) the log.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .commands import Command, ImportSequences, InitDataset, InputFormat, OnConflict

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
    Actor,
    DatasetInitialized,
    DatasetRef,
    Fingerprint,
    LogRecord,
    PayloadRef,
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
    line_digest,
    quarantine_tail,
    read_line_at,
)
from .projectors import (
    BaseProjection,
    Watermark,
    apply_event,
    encode_base,
    patch_watermark_hash,
)
from .registry import Registry, load_registry, registry_path
from .results import (
    ColumnInfo,
    DatasetInfo,
    DatasetSummary,
    RebuildResult,
    Receipt,
    ReplayResult,
    VerifyReport,
)
from .roots import list_datasets, resolve_existing, validate_id
from .storage import (
    PAYLOAD_DIR,
    RECORDS_FILE,
    REGISTRY_DIR,
    encode_payload,
    freeze_registry,
    frozen_registry,
    payload_ref,
    publish,
    read_base,
    read_payload,
    read_watermark,
    write_payload,
)

LOCK_FILE = ".usr.lock"
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
class _Tail:
    """The verified log head plus the base projection caught up to it."""

    scan: Scan
    base: BaseProjection | None
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

    def _execute(
        self,
        command: Command,
        *,
        rows_loader: Any = None,
        command_id: str | None,
        expected_seq: int | None,
    ) -> Receipt:
        from .decide import DatasetState, decide  # write-only: kept off the read path's start-up

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
            for directory in (self.dir, self.dir / PAYLOAD_DIR, self.dir / REGISTRY_DIR):
                remove_stale_temps(directory)
            try:
                tail = self._tail(quarantine=True)
            except OSError as exc:
                raise CommitError(f"recovering the log tail failed: {exc.strerror}", state="NOT_COMMITTED") from exc
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
            rows = rows_loader() if rows_loader is not None else None
            state = DatasetState(
                name=self.name,
                initialized=tail.scan.seq > 0,
                seq=tail.scan.seq,
                ids=tail.base.table.column("id") if tail.base is not None else pa.array([], pa.string()),
            )
            now = utc_now_text(tail.scan.last_timestamp)
            decision = decide(state, command, now=now, rows=rows)
            rows = None  # the input table is no longer needed: free it before projecting
            try:
                record, line, digest, parquet = self._prepare(tail, registry, command, decision, command_id, now)
            except OSError as exc:  # payload or frozen registry: the log is untouched
                raise CommitError(f"writing the event's files failed: {exc.strerror}", state="NOT_COMMITTED") from exc
            append_record(self.log_path, line, expected_size=tail.scan.size)
            fileops().point("after_append")
            try:
                if parquet is not None:
                    publish(self.records_path, patch_watermark_hash(parquet, digest))
                fileops().point("after_publish")
                self._append_meta(record)
            except OSError as exc:
                raise CommitError(
                    f"event seq {record.seq} is committed, but a projection could not be written: {exc.strerror}",
                    state="COMMITTED",
                    hint="The next command (or `usr rebuild`) catches the projection up from the log.",
                ) from exc
            final = LogRecord(**{**_fields(record), "hash": digest})
            return _receipt(final, warnings=warnings)

    def _registry_for_write(self, last_hash: str | None) -> Registry:
        """The live registry; for a dataset outside any root (e.g. a replayed copy), the frozen
        registry the last event was validated against."""
        if registry_path(self.root).is_file() or last_hash is None:
            return load_registry(self.root)
        return frozen_registry(self.dir, last_hash)

    def _prepare(
        self,
        tail: _Tail,
        registry: Registry,
        command: Command,
        decision: Decision,
        command_id: str | None,
        now: str,
    ) -> tuple[LogRecord, bytes, str, memoryview | None]:
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
        if isinstance(decision.event, BASE_EVENTS):
            mark = Watermark(seq=seq, offset=tail.scan.size, hash="")
            base = apply_event(tail.base, decision.event, payload, registry_hash=registry_hash, mark=mark)
            assert base is not None
            parquet = encode_base(base, pending_hash=True)
            fingerprint = Fingerprint(rows=base.rows, cols=base.table.num_columns, size_bytes=len(parquet))
        else:
            fingerprint = self._fingerprint(tail.base)
        record = LogRecord(
            timestamp_utc=now,
            action=decision.action,
            dataset=DatasetRef(name=self.name, root=str(self.root)),
            args=decision.redacted_args,
            metrics=decision.metrics,
            artifacts={"payload": ref.file} if ref is not None else {},
            maintenance={},
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
        return record, line, digest, parquet

    def _fingerprint(self, base: BaseProjection | None) -> Fingerprint:
        if base is None:
            return Fingerprint(rows=0, cols=0, size_bytes=0)
        size = self.records_path.stat().st_size if self.records_path.exists() else 0
        return Fingerprint(rows=base.rows, cols=base.table.num_columns, size_bytes=size)

    # -- recovery and catch-up ----------------------------------------------------------
    def _tail(self, *, quarantine: bool) -> _Tail:
        """Verify the log from the projection's anchor, fold lagging events, quarantine a torn tail.

        Called under the dataset lock by writers (and by readers that found a lag).
        """
        warnings: list[str] = []
        stored = read_watermark(self.records_path)
        anchor = self._anchor(stored)
        if anchor is not None:
            # Lines before the anchor are checked from raw bytes (hash + prev link): a bad line
            # anywhere blocks writes, without decoding the whole history every time.
            check_prefix(self.log_path, end_offset=anchor[0], lines=anchor[1] - 1, last_hash=anchor[2])
        base = read_base(self.dir, stored) if anchor is not None and stored is not None else None
        scan = Scan()
        start = dict(start_offset=0, start_seq=0, start_hash=GENESIS_HASH)
        if anchor is not None:
            start = dict(start_offset=anchor[0], start_seq=anchor[1] - 1, start_hash=anchor[2])
        caught_up = 0
        for line in iter_lines(self.log_path, scan=scan, **start):  # type: ignore[arg-type]
            if base is not None and line.seq <= base.watermark.seq:
                continue
            if isinstance(line.record.event, BASE_EVENTS):
                base = self._fold(base, line)
                caught_up += 1
        if caught_up and base is not None:
            publish(self.records_path, encode_base(base))
            warnings.append(f"caught up records.parquet by {caught_up} event(s) to seq {base.watermark.seq}")
        if quarantine and scan.torn_offset is not None:
            size = quarantine_tail(self.log_path, scan)
            warnings.append(
                f"quarantined a torn tail of {size} byte(s) after seq {scan.seq} into .events.log.quarantine"
            )
        return _Tail(scan=scan, base=base, caught_up=caught_up, warnings=warnings)

    def _anchor(self, stored: Watermark | None) -> tuple[int, int, str] | None:
        """(offset, seq, prev hash) of the line the stored projection claims, if the log agrees."""
        if stored is None or stored.seq < 1:
            return None
        raw = read_line_at(self.log_path, stored.offset)
        if raw is None:
            return None
        framed = line_digest(raw)
        if framed is None or framed[0] != framed[1] or framed[0] != stored.hash:
            return None
        record = _first_record(raw)
        if record.seq != stored.seq:
            return None
        return stored.offset, stored.seq, record.prev

    def _fold(self, base: BaseProjection | None, line: LogLine) -> BaseProjection | None:
        record = line.record
        payload = read_payload(self.dir, record.payload) if record.payload is not None else None
        mark = Watermark(seq=line.seq, offset=line.offset, hash=record.hash)
        return apply_event(base, record.event, payload, registry_hash=record.registry_hash, mark=mark)

    def _replay(self, *, until_seq: int | None = None) -> tuple[BaseProjection | None, Scan, list[LogLine]]:
        base: BaseProjection | None = None
        scan = Scan()
        lines = []
        for line in iter_lines(self.log_path, until_seq=until_seq, scan=scan):
            lines.append(line)
            if isinstance(line.record.event, BASE_EVENTS):
                base = self._fold(base, line)
        return base, scan, lines

    def _fresh(self) -> tuple[Watermark | None, Scan, int]:
        """Make `records.parquet` reflect every base-changing event; return its watermark, the log
        scan and how many events had to be caught up. Takes the lock only when it must catch up.
        """
        self._require()
        stored = read_watermark(self.records_path)
        anchor = self._anchor(stored)
        if anchor is not None and stored is not None:
            check_prefix(self.log_path, end_offset=anchor[0], lines=anchor[1] - 1, last_hash=anchor[2])
            scan = Scan()
            lagging = False
            for line in iter_lines(
                self.log_path, start_offset=anchor[0], start_seq=anchor[1] - 1, start_hash=anchor[2], scan=scan
            ):
                if line.seq > stored.seq and isinstance(line.record.event, BASE_EVENTS):
                    lagging = True
                    break
            if not lagging:
                return stored, scan, 0
        with locked(self.dir / LOCK_FILE):
            tail = self._tail(quarantine=False)
        return (tail.base.watermark if tail.base is not None else None), tail.scan, tail.caught_up

    # -- reads --------------------------------------------------------------------------
    def head(self, n: int = 10, *, columns: list[str] | None = None) -> pa.Table:
        """The first `n` rows of the base table (log order), reading only the row groups needed."""
        if n < 0:
            raise InvalidInput("head row count must be >= 0.")
        mark, _, _ = self._fresh()
        if mark is None:
            return pa.table({})
        parquet = pq.ParquetFile(self.records_path)
        names = parquet.schema_arrow.names
        if columns:
            missing = [c for c in columns if c not in names]
            if missing:
                raise InvalidInput(f"Unknown column(s): {', '.join(missing)}.", hint=f"Columns: {', '.join(names)}")
        batches = []
        remaining = n
        for batch in parquet.iter_batches(batch_size=max(n, 1), columns=columns or None):
            if remaining <= 0:
                break
            batches.append(batch.slice(0, remaining))
            remaining -= min(remaining, batch.num_rows)
        schema = parquet.schema_arrow if not columns else pa.schema([parquet.schema_arrow.field(c) for c in columns])
        table = pa.Table.from_batches(batches, schema=schema.remove_metadata())
        return table

    def schema(self) -> list[ColumnInfo]:
        """Name, registry type string and nullability of every column."""
        from .registry import format_type

        self._fresh()
        schema = pq.read_schema(self.records_path)
        return [ColumnInfo(f.name, format_type(f.type), f.nullable) for f in schema]

    def info(self) -> DatasetInfo:
        """Rows, columns, head seq, projection lag and sizes (from metadata; rows are not read)."""
        mark, scan, lag = self._fresh()
        rows, columns, meta = 0, [], {}
        if mark is not None:
            metadata = pq.read_metadata(self.records_path)
            rows = metadata.num_rows
            columns = list(metadata.schema.to_arrow_schema().names)
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
        )

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
        base, scan, lines = self._replay(until_seq=seq)
        fileops().mkdir(out)
        with self.log_path.open("rb") as fh:
            prefix = fh.read(scan.size)
        write_atomic(out / LOG_FILE, prefix, point="replay_log")
        for line in lines:
            if line.record.payload is not None:
                (out / PAYLOAD_DIR).mkdir(exist_ok=True)
                _copy(self.dir / line.record.payload.file, out / line.record.payload.file)
            if line.record.registry_hash:
                name = f"registry.{line.record.registry_hash}.yaml"
                if (self.dir / REGISTRY_DIR / name).exists():
                    (out / REGISTRY_DIR).mkdir(exist_ok=True)
                    _copy(self.dir / REGISTRY_DIR / name, out / REGISTRY_DIR / name)
        if base is not None:
            publish(out / RECORDS_FILE, encode_base(base))
        write_atomic(out / META_FILE, render_meta([line.record for line in lines]).encode(), point="meta")
        last = lines[-1].record
        return ReplayResult(
            out=str(out),
            seq=seq,
            event_id=last.event_id,
            timestamp_utc=last.timestamp_utc,
            rows=base.rows if base is not None else 0,
        )

    def rebuild(self) -> RebuildResult:
        """Regenerate every projection (records.parquet, meta.md) from the log."""
        self._require()
        with locked(self.dir / LOCK_FILE):
            for directory in (self.dir, self.dir / PAYLOAD_DIR, self.dir / REGISTRY_DIR):
                remove_stale_temps(directory)
            base, scan, lines = self._replay()
            files = []
            if base is not None:
                publish(self.records_path, encode_base(base))
                files.append(RECORDS_FILE)
            write_atomic(self.dir / META_FILE, render_meta([line.record for line in lines]).encode(), point="meta")
            files.append(META_FILE)
        return RebuildResult(dataset=self.name, seq=scan.seq, rows=base.rows if base else 0, files=files)

    def verify(self) -> VerifyReport:
        """Check the hash chain, every payload digest, and that replay equals the stored files."""
        self._require()
        problems: list[str] = []
        notes: list[str] = []
        scan = Scan()
        base: BaseProjection | None = None
        payloads = 0
        try:
            for line in iter_lines(self.log_path, scan=scan):
                record = line.record
                if record.payload is not None:
                    payloads += 1
                if isinstance(record.event, BASE_EVENTS):
                    base = self._fold(base, line)
                    if base is not None and (
                        record.fingerprint.rows != base.rows or record.fingerprint.cols != base.table.num_columns
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
            if base is not None:
                files.append(RECORDS_FILE)
                expected = encode_base(base)
                actual = self.records_path.read_bytes() if self.records_path.exists() else None
                if actual is None:
                    problems.append(f"{RECORDS_FILE} is missing (run `usr rebuild`)")
                elif actual != expected:
                    stored = read_watermark(self.records_path)
                    where = f"stored watermark seq {stored.seq}" if stored else "no usr_es watermark"
                    problems.append(
                        f"{RECORDS_FILE} differs from replay of seq 1..{scan.seq} ({where}; "
                        f"{len(actual)} vs {len(expected)} bytes)"
                    )
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


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
