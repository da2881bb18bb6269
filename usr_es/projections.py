"""The projections: every file derived from the log, kept by one fold.

A `Projection` owns some files of a dataset folder. It holds its state as of the events folded so far
(stamped with the watermark of the last event it took), folds one more event into that state
(`fold(step)`, from its previous state, never from scratch), and names the files its state encodes to
(`outputs()`: path -> the watermark the file carries and a lazy encoder). `Fold` gathers one instance
of every registered projection (`PROJECTIONS`) and is the only thing that folds events: the live write,
catch-up, replay, rebuild, checkpoints and verify all run it, and publish or compare its `outputs()`.

Adding a projection is one class here (or in its own module) plus one entry in `PROJECTIONS`
(docs/adr/0012). Folding reads no clock, randomness or live registry; the rows it needs that are not
in hand (an overlay part's table, a stored base's other columns) come through `PartSource`.
"""

from __future__ import annotations

import itertools
import queue
import tempfile
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from . import history, idindex
from .alphabet import SortedKeys
from .codec import (
    HASH_PLACEHOLDER,
    ROW_GROUP_ROWS,
    Groups,
    append_parquet,
    appended_footer,
    base_metadata,
    encode_base,
    encode_batches,
    encode_groups,
    encode_part,
    encode_part_batches,
    footer_of,
    footer_start,
    patch_watermark_hash,
    read_parquet,
    read_watermark,
    watermark_of,
    zeroed_watermark,
)
from .errors import IntegrityError
from .events import (
    BASE_EVENTS,
    LAYOUT_EVENTS,
    DatasetInitialized,
    Event,
    Materialized,
    OverlayCompacted,
    OverlayWritten,
    RecordsAdopted,
    RegistryFrozen,
    SequencesImported,
)
from .fileio import Part, Spill
from .names import HISTORY_DIR, HISTORY_MANIFEST, ID, INDEX_MANIFEST, LAYOUT_FILE, PURGED, RECORDS_FILE, WRITTEN
from .original import original_names
from .prefetch import prefetched
from .projectors import (
    EMPTY_LAYOUT,
    BaseProjection,
    DerivedLayout,
    PartInfo,
    Payload,
    Watermark,
    apply_event,
    apply_layout,
    ids_of,
    imported_rows,
    materialize_table,
    part_table,
    payload_batches,
    payload_table,
    sorted_part,
)
from .storage import ParquetRows, SortedRuns, StoredRows, encode_layout, read_layout

#: A file's bytes (None: the projection writes no such file now; a stored one is removed).
Encoded = bytes | memoryview | list[Part] | None
#: The hash of a watermark whose log line is not written yet (the live write folds before it appends).
PENDING = HASH_PLACEHOLDER


@dataclass(frozen=True)
class Step:
    """One event as the fold sees it: its position in the log, the event and its payload rows."""

    mark: Watermark
    event: Event
    registry_hash: str | None
    payload: Payload | None
    #: The payload's base rows encoded while the import was decided (the live write only; `PreparedAppend`).
    prepared: PreparedAppend | None = None
    #: The payload's id keys in key order, sorted while the import was decided (the live write only): the
    #: index run `IdIndex` would sort them into.
    sorted_keys: SortedKeys | None = None


@dataclass(frozen=True)
class Growth:
    """How a file grows in place instead of being replaced: the stored file at `path`, stamped `after` and
    `size` bytes long, gets `body` and then the new `footer` (with its length and the magic) appended
    (docs/adr/0013). Only that very file grows: a fold loaded from elsewhere (a checkpoint) writes its output
    whole."""

    path: Path
    size: int
    after: Watermark
    body: list[Part]
    footer: bytes


@dataclass(frozen=True)
class Output:
    """One file a projection publishes: the watermark it carries and how to make its bytes."""

    mark: Watermark
    encode: Callable[[], Encoded]
    #: Reads the watermark a stored copy of the file carries (None: absent or unreadable).
    stamp: Callable[[Path], Watermark | None]
    #: The same bytes already stored at another path (an archived overlay part): moved, not re-encoded.
    moved_from: str | None = None
    #: The file readers anchor on (layout.json): published after the projection's other files and removals,
    #: so a crash before it leaves the projection lagging, and the next catch-up redoes the whole step.
    last: bool = False
    #: Found only through the projection's anchor file (an index run its manifest names): a copy left over
    #: is harmless, so a file no longer produced is removed after the anchor, not before it, and a crash in
    #: between leaves the old anchor naming files that are all still there.
    named: bool = False
    #: Set when the new file is the stored one with bytes appended (records.parquet after an import).
    grow: Growth | None = None


class Restart(Exception):
    """The stored projections disagree with each other: fold again from the start of the log."""


class PartSource(Protocol):
    """Where the fold gets rows it does not hold: an overlay part's table, a stored base's columns."""

    def part(self, info: PartInfo, resolve: Callable[[PartInfo], pa.Table]) -> pa.Table:
        """The rows of part `info` (`resolve` gives the rows of the parts a compacted part merged)."""
        ...

    def rows(self, info: PartInfo, resolve: Callable[[PartInfo], pa.Table]) -> Payload:
        """`part`'s rows, read a batch at a time where they are stored (to encode without holding them)."""
        ...

    def base(self, directory: Path, mark: Watermark, columns: list[str] | None) -> BaseProjection:
        """The stored base in `directory` (stamped `mark`), with only `columns` when given."""
        ...


class Projection(Protocol):
    """One projection: its state, how an event changes it, and the files it encodes to."""

    #: How warnings and notes name it ("records.parquet", "_derived/").
    label: str
    #: Whether it carries a watermark of its own (False: it follows another projection's).
    anchored: bool

    def watches(self, event: Event) -> bool:
        """Whether events of this kind change it."""
        ...

    def mark(self) -> Watermark | None:
        """The watermark of the last event folded into it (None: nothing yet)."""
        ...

    def stored_mark(self, directory: Path) -> Watermark | None:
        """The watermark its stored files in `directory` carry (None: none stored)."""
        ...

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        """Take the state its files in `directory` hold (trusted: their watermark was checked)."""
        ...

    def fold(self, step: Step) -> None:
        """Fold one event into the state (called only for events it watches, after its mark)."""
        ...

    def stage(self) -> None:
        """Prepare what `outputs()` will encode ahead of the append (runs beside the other projections)."""
        ...

    def seal(self, digests: dict[int, str]) -> None:
        """Replace `PENDING` hashes by the hashes the appended lines got (seq -> hash)."""
        ...

    def outputs(self) -> dict[str, Output]:
        """Path (relative to the dataset folder) -> the file its state encodes to."""
        ...

    def stray(self, directory: Path) -> Iterator[str]:
        """Files in `directory` it owns by name that no `outputs()` entry produces (to remove or report)."""
        ...

    def release(self, directory: Path | None = None) -> None:
        """Drop what it holds that can be read again (after its files were written or compared);
        `directory`: where its files were just written, to read them from from now on."""
        ...


P = TypeVar("P")


def _sealed(mark: Watermark, digests: dict[int, str]) -> Watermark:
    return replace(mark, hash=digests[mark.seq]) if mark.hash == PENDING and mark.seq in digests else mark


# -- records.parquet -------------------------------------------------------------------------------
#: An append that would leave more row groups than a whole encode has by this many, or more unreferenced
#: bytes than referenced ones, re-encodes the whole base instead (docs/adr/0013).
MAX_EXTRA_GROUPS = 256


def _mapped(path: Path, size: int) -> pa.Buffer:
    """The first `size` bytes of the file at `path`, memory-mapped (no copy)."""
    with pa.memory_map(str(path)) as source:
        return source.read_buffer(size)


@dataclass(frozen=True)
class Chunk:
    """Bytes appended to records.parquet by one event (seq): row groups (maybe spilled to a scratch file),
    then the footer that makes them part of the file, with its length and the magic. `pending`: the footer
    carries the placeholder hash, patched when the event's line is written."""

    seq: int
    body: tuple[Part, ...]
    footer: bytes
    pending: bool

    @classmethod
    def whole(cls, seq: int, data: memoryview, *, pending: bool) -> Chunk:
        """A whole file's bytes as a chunk (body and footer apart, so the footer can be patched alone)."""
        start = footer_start(data)
        return cls(seq, (data[:start],), bytes(data[start:]), pending)

    def __len__(self) -> int:
        return sum(len(part) for part in self.body) + len(self.footer)

    def sealed(self, digest: str) -> Chunk:
        return replace(self, footer=bytes(patch_watermark_hash(memoryview(self.footer), digest)[1]), pending=False)


@dataclass(frozen=True)
class BaseBytes:
    """The bytes of records.parquet after the events folded so far (docs/adr/0013): the first `size` bytes
    of the file at `path` (None: no such file) and then the chunks appended since (each footer carries its
    event's hash: pending until its line is written)."""

    path: Path | None = None
    size: int = 0
    chunks: tuple[Chunk, ...] = ()

    @property
    def total(self) -> int:
        return self.size + sum(len(chunk) for chunk in self.chunks)

    def parts(self) -> list[Part]:
        """The file's bytes, in order (the stored prefix is mapped, not read)."""
        prefix = [memoryview(_mapped(self.path, self.size)).cast("B")] if self.path is not None and self.size else []
        return [*prefix, *self.tail()]

    def tail(self) -> list[Part]:
        """The bytes appended after the stored prefix (the last part is the last footer)."""
        return [part for chunk in self.chunks for part in (*chunk.body, chunk.footer)]

    def footer(self) -> pq.FileMetaData:
        """The file's footer (the last chunk's, else the stored file's)."""
        if self.chunks:
            return footer_of(self.chunks[-1].footer)
        assert self.path is not None
        return footer_of(_mapped(self.path, self.size))

    def read(self, columns: list[str] | None) -> pa.Table:
        """The base table these bytes hold (only `columns`, when given)."""
        table = read_parquet(pa.BufferReader(self._buffer()), columns)
        return table.replace_schema_metadata(None) if table.num_columns else table

    def reader(self) -> pq.ParquetFile:
        """A reader of the file these bytes make: the stored file read as a file when it is all of them (its
        pages are not mapped into this process, so reading it whole does not grow the resident set)."""
        if self.path is not None and not self.chunks:
            opened = pa.OSFile(str(self.path))  # its footer and its rows from this one open file
            if opened.size() == self.size:
                return pq.ParquetFile(opened, metadata=footer_of(opened), pre_buffer=False)
            opened.close()
        return pq.ParquetFile(pa.BufferReader(self._buffer()), metadata=self.footer())

    def ids_at(self, rows: list[int]) -> pa.Array:
        """The ids at base rows `rows` (sorted), reading only the row groups that hold them."""
        return self.rows_at(rows, ["id"]).column("id").combine_chunks()

    def rows_at(self, rows: list[int], columns: list[str]) -> pa.Table:
        """`columns` at base rows `rows` (sorted), reading only the row groups that hold them."""
        import pyarrow.compute as pc

        reader = self.reader()
        starts = [0]
        for g in range(reader.metadata.num_row_groups):
            starts.append(starts[-1] + reader.metadata.row_group(g).num_rows)
        by_group: dict[int, list[int]] = {}
        for row in rows:
            group = bisect_right(starts, row) - 1
            by_group.setdefault(group, []).append(row - starts[group])
        schema = reader.schema_arrow
        pieces = [
            pc.take(reader.read_row_group(g, columns=columns), pa.array(at, pa.int64())).replace_schema_metadata(None)
            for g, at in sorted(by_group.items())
        ]
        return pa.concat_tables(pieces) if pieces else pa.schema([schema.field(c) for c in columns]).empty_table()

    def _buffer(self) -> pa.Buffer:
        """The whole file as one buffer (the stored prefix mapped; copied only when chunks follow it)."""
        parts = self.parts()
        if len(parts) == 1 and not isinstance(parts[0], Spill):
            return pa.py_buffer(parts[0])
        return pa.py_buffer(b"".join(part.read() if isinstance(part, Spill) else part for part in parts))

    def sha256(self, digests: dict[int, str]) -> str:
        """sha256 of the file these bytes make, its last footer's watermark hash read as 32 zeros
        (`codec.zeroed_watermark`); earlier footers still pending take their event's hash from `digests`."""
        import hashlib

        from .fileio import pieces_of

        h = hashlib.sha256()
        if not self.chunks:
            assert self.path is not None
            data = memoryview(_mapped(self.path, self.size)).cast("B")
            start = footer_start(data)
            h.update(data[:start])
            footer = bytes(data[start:])
            mark = watermark_of(pq.read_metadata(pa.BufferReader(pa.py_buffer(footer))).metadata)
            h.update(zeroed_watermark(footer, mark.hash if mark is not None else HASH_PLACEHOLDER))
            return h.hexdigest()
        if self.path is not None and self.size:
            h.update(memoryview(_mapped(self.path, self.size)).cast("B"))
        for k, chunk in enumerate(self.chunks):
            for piece in pieces_of(list(chunk.body)):
                h.update(piece)
            footer = chunk.footer
            if k == len(self.chunks) - 1:
                mark = None if chunk.pending else watermark_of(pq.read_metadata(pa.BufferReader(footer)).metadata)
                footer = zeroed_watermark(footer, mark.hash if mark is not None else HASH_PLACEHOLDER)
            elif chunk.pending:
                footer = chunk.sealed(digests[chunk.seq]).footer
            h.update(footer)
        return h.hexdigest()

    def appended(self, chunk: Chunk) -> BaseBytes:
        return replace(self, chunks=(*self.chunks, chunk))

    def sealed(self, digests: dict[int, str]) -> BaseBytes:
        """Each pending chunk's footer patched with the hash its event's line got."""
        chunks = tuple(c.sealed(digests[c.seq]) if c.pending and c.seq in digests else c for c in self.chunks)
        return replace(self, chunks=chunks)


def _appendable(footer: pq.FileMetaData, total: int, new_rows: int) -> bool:
    """Whether an append of `new_rows` keeps the file within the bounds of docs/adr/0013: at most
    `MAX_EXTRA_GROUPS` more row groups than a whole encode, and no more unreferenced bytes (earlier
    footers) than referenced ones (row groups and the current footer)."""
    groups = footer.num_row_groups + -(-new_rows // ROW_GROUP_ROWS)
    whole = -(-(footer.num_rows + new_rows) // ROW_GROUP_ROWS)
    if groups > whole + MAX_EXTRA_GROUPS:
        return False
    referenced = (
        footer.serialized_size
        + 12
        + sum(
            footer.row_group(g).column(c).total_compressed_size
            for g in range(footer.num_row_groups)
            for c in range(footer.num_columns)
        )
    )
    return bool(total - referenced <= referenced)


class PreparedAppend:
    """The row groups an import appends to records.parquet, encoded on a thread of their own while the
    import is decided (the decision hashes ids on one core; the encode would otherwise wait for the fold).

    Made by `BaseFile.prepare` for the file as it stands: `feed` it the payload rows in order, exactly
    as the payload holds them. The fold's append `take`s the row groups only when they are what it would
    encode itself -- the same function (`codec.encode_groups`) of the same rows at the same offset, with
    the event's source and time -- and otherwise encodes them as usual, so the bytes never depend on
    whether they were prepared. Nothing it writes is visible: its scratch file is unlinked."""

    def __init__(self, at: int, schema: pa.Schema, template: SequencesImported, scratch: Path) -> None:
        self.at, self.schema, self.template = at, schema, template
        self.rows = 0
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=2)  # None: no more rows
        self._stopped = False
        self._result: Groups | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(scratch,), name="usr-base-encode", daemon=True)
        self._thread.start()

    def _run(self, scratch: Path) -> None:
        ended = False

        def rows() -> Iterator[pa.Table]:
            nonlocal ended
            while (batch := self._queue.get()) is not None:
                if not self._stopped:  # stopped: only drained, so no `feed` waits on a full queue
                    yield _file_rows(imported_rows(batch, self.template), self.schema)
            ended = True

        try:
            self._result = encode_groups(self.at, rows(), self.schema, scratch=scratch)
        except BaseException as exc:  # the fold encodes the rows itself (and meets the error there)
            self._error = exc
        finally:
            while not ended:
                ended = self._queue.get() is None

    def feed(self, payload: pa.Table) -> None:
        """Encode `payload`'s rows (the next rows of the import's payload) after those fed before."""
        if payload.num_rows and not self._stopped and self._error is None:
            self.rows += payload.num_rows
            self._queue.put(payload)

    def _finish(self) -> Groups | None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._result if self._error is None and not self._stopped else None

    def take(self, at: int, schema: pa.Schema, rows: int, event: SequencesImported) -> Groups | None:
        """The row groups, when they are the ones `rows` payload rows of `event` appended at offset `at` of a
        file with `schema` make; else None (they are dropped)."""
        groups = self._finish()
        self._stopped = True
        fits = (
            self.at == at
            and self.rows == rows
            and self.schema.equals(schema)
            and type(event) is SequencesImported
            and (event.source, event.created_at) == (self.template.source, self.template.created_at)
        )
        return groups if fits and groups is not None and groups.rows == rows else None

    def discard(self) -> None:
        """Stop encoding and drop what was encoded (a rejected or already folded import)."""
        self._stopped = True
        self._finish()
        self._result = None


def _file_rows(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Imported rows with the stored file's columns (those a materialize added read null)."""
    return pa.table(
        [rows.column(f.name) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type) for f in schema],
        schema=pa.schema([pa.field(f.name, f.type) for f in schema]),
    )


#: The key of the ids a materialize drops among the namespaces' rows lined up in base order (no namespace's name).
_DROPPED = " dropped"


class BaseFile:
    """`records.parquet`: the base table (imports, materialize, registry freezes).

    Its state is the table (or some of its columns, `partial`) and the file's bytes (`BaseBytes`): an
    import appends row groups and a new footer after the stored bytes, which never change; a materialize
    (or an append past the bounds of docs/adr/0013) re-encodes the whole table.
    """

    label = "records.parquet"
    anchored = True

    def __init__(self, fold: Fold) -> None:
        self._fold = fold
        self.base: BaseProjection | None = None
        #: Set while `base` holds only some columns (the file has them all).
        self.partial = False
        #: The file's bytes; None while a whole encode of `base` is pending (made by `stage` or on demand).
        self.bytes: BaseBytes | None = None
        #: The watermark of the stored file the bytes start with (an append extends only that file).
        self._stored: Watermark | None = None
        self._read: tuple[Path, Watermark | None] | None = None  # what `stored_mark` read, for `load`

    def watches(self, event: Event) -> bool:
        return isinstance(event, BASE_EVENTS)

    def mark(self) -> Watermark | None:
        return self.base.watermark if self.base is not None else None

    def stored_mark(self, directory: Path) -> Watermark | None:
        mark = read_watermark(directory / RECORDS_FILE)
        self._read = (directory, mark)
        return mark

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        read, self._read = self._read, None  # the anchor just checked (under the same lock), else read now
        path = directory / RECORDS_FILE
        mark = read[1] if read is not None and read[0] == directory else read_watermark(path)
        self.base = self._fold.source.base(directory, mark, columns) if mark is not None else None
        self.partial = columns is not None and self.base is not None
        self.bytes = BaseBytes(path, path.stat().st_size) if mark is not None else None
        self._stored = mark

    def encoded(self) -> BaseBytes:
        """The file's bytes (a pending whole encode made now)."""
        if self.bytes is None:
            base = self.full()
            assert base is not None
            pending = base.watermark.hash == PENDING
            data = encode_base(base, pending_hash=pending)
            self.bytes = BaseBytes(chunks=(Chunk.whole(base.watermark.seq, data, pending=pending),))
        return self.bytes

    def full(self) -> BaseProjection | None:
        """The base with every column."""
        if self.base is not None and self.partial:
            assert self.bytes is not None  # a partial base is always a loaded (or appended) file
            self.base = replace(self.base, table=self.bytes.read(None))
        self.partial = False
        return self.base

    def column(self, name: str) -> pa.ChunkedArray | None:
        """One column of the base (read alone when the loaded base lacks it)."""
        base = self.base
        if base is None:
            return None
        if name in base.table.column_names:
            return base.table.column(name)
        assert self.bytes is not None
        return self.bytes.read([name]).column(name)

    def bio_types(self) -> tuple[str, ...] | None:
        """The base's distinct bio_types, or at least two of them when there are several: from its row
        groups' statistics (min and max), else from the column (None: no base)."""
        import pyarrow.compute as pc

        if self.bytes is None:
            return None
        footer = self.bytes.footer()
        column = footer.schema.to_arrow_schema().names.index("bio_type")
        found: set[str] = set()
        for g in range(footer.num_row_groups):
            stats = footer.row_group(g).column(column).statistics
            if stats is None or not stats.has_min_max:
                values = self.column("bio_type")
                return tuple(sorted(str(v) for v in pc.unique(values).to_pylist())) if values is not None else None
            found.update({str(stats.min), str(stats.max)})
        return tuple(sorted(found))

    def column_names(self) -> tuple[str, ...] | None:
        """The base's column names (from the footer while only some columns are loaded; None: no base)."""
        if self.base is None:
            return None
        if self.partial and self.bytes is not None:
            return tuple(self.bytes.footer().schema.to_arrow_schema().names)
        return tuple(self.base.table.column_names)

    def schema(self) -> pa.Schema | None:
        """The base's columns and types (None: no base yet)."""
        if self.base is None:
            return None
        if self.bytes is not None:
            return self.bytes.footer().schema.to_arrow_schema().remove_metadata()
        return self.base.table.schema.remove_metadata()

    def column_count(self) -> int:
        """How many columns the base has."""
        if self.partial and self.bytes is not None:
            return int(self.bytes.footer().num_columns)
        return int(self.base.table.num_columns) if self.base is not None else 0

    def fold(self, step: Step) -> None:
        event = step.event
        if isinstance(event, (SequencesImported, RegistryFrozen)) and self._append(step):
            return
        base = self.base if isinstance(event, Materialized) else self.full()
        materialized = None
        if isinstance(event, Materialized):
            derived = self._fold.get(DerivedFiles)
            if derived.layout_mark.seq >= step.mark.seq:  # the stored layout is past this base: start over
                raise Restart
            if base is None:
                raise IntegrityError(f"event seq {step.mark.seq} materializes before the dataset was initialized")
            # The rows it drops are the ids it names (the tombstoned rows `--drop-deleted` found, a dedupe's
            # later copies): the event says which, so the fold reads no tombstone.
            payload = payload_table(step.payload) if step.payload is not None else None
            dropped = pa.table({"id": ids_of(event, payload)}) if event.rows_dropped else None
            if self._materialize(step, event, derived, dropped):
                return
            merged = {ns: derived.merged(ns) for ns in event.namespaces if ns in derived.layout.live}
            base = self.full()
            assert base is not None
            materialized = materialize_table(base.table, merged, dropped)
            if base.rows - materialized.num_rows != event.rows_dropped:
                raise IntegrityError(f"event seq {step.mark.seq}: materialize drops a different number of rows")
        payload = payload_table(step.payload) if step.payload is not None else None
        self.base = apply_event(
            base, event, payload, registry_hash=step.registry_hash, mark=step.mark, materialized=materialized
        )
        self.bytes = None  # a whole encode

    def _materialize(self, step: Step, event: Materialized, derived: DerivedFiles, dropped: pa.Table | None) -> bool:
        """Fold a materialize a row group at a time (docs/adr/0014): each row group of the file with the
        overlay rows of its ids folded by `materialize_table` and written to a scratch file, so neither the
        base nor an overlay is held whole: each namespace's rows are first spilled in base order
        (`idindex.InBaseOrder`, the base rows found through the id index). False when there is no file to
        stream from (the caller folds the table)."""
        base, current = self.base, self.bytes
        if base is None or current is None or not base.rows:
            return False
        known = self._fold.get(IdIndex).known()
        locate = known.index.pairs if known is not None else idindex.looked_up(current.read(["id"]).column("id"))
        scratch = current.path.parent if current.path is not None else Path(tempfile.gettempdir())
        sources: dict[str, Payload] = {ns: derived.rows_of(ns) for ns in event.namespaces if ns in derived.layout.live}
        if dropped is not None:
            sources[_DROPPED] = dropped
        runs = {ns: SortedRuns(scratch, key=idindex.BASE_ROW) for ns in sources}
        try:
            lined = {ns: idindex.InBaseOrder.spill(rows, locate, runs[ns]) for ns, rows in sources.items()}
            del sources, locate, known
            return self._materialize_groups(step, event, lined, scratch)
        finally:
            for spilled in runs.values():
                spilled.discard()

    def _materialize_groups(
        self, step: Step, event: Materialized, lined: dict[str, idindex.InBaseOrder], scratch: Path
    ) -> bool:
        base, current = self.base, self.bytes
        assert base is not None and current is not None
        reader = current.reader()
        kept = 0

        def groups() -> Iterator[pa.Table]:
            nonlocal kept
            offset = 0
            for group in range(reader.metadata.num_row_groups):
                rows = reader.read_row_group(group).replace_schema_metadata(None)
                n, ids = rows.num_rows, rows.column("id")
                here = {ns: lined[ns].rows(offset, n, ids) for ns in event.namespaces if ns in lined}
                dead = lined[_DROPPED].rows(offset, n, ids) if _DROPPED in lined else None
                offset += n
                out = materialize_table(rows, here, dead)
                kept += out.num_rows
                yield out

        every = prefetched(groups())  # the next row group read and joined while this one is encoded
        after = replace(base, registry_hash=step.registry_hash, watermark=step.mark)
        pending = step.mark.hash == PENDING
        try:
            first = next(every)
            body, footer = encode_batches(
                itertools.chain([first], every),
                first.schema,
                base_metadata(after),
                HASH_PLACEHOLDER if pending else step.mark.hash,
                rows=ROW_GROUP_ROWS,
                scratch=scratch,
            )
        finally:
            every.close()  # stops the reading thread when the encode stopped early
        if base.rows - kept != event.rows_dropped:
            raise IntegrityError(f"event seq {step.mark.seq}: materialize drops a different number of rows")
        self.base = replace(after, table=pa.table({"_": pa.nulls(kept)}).select([]))
        self.partial = True  # the rows are in the bytes, read again when an event needs them
        self.bytes = BaseBytes(chunks=(Chunk(step.mark.seq, (body,), footer, pending),))
        return True

    def _append(self, step: Step) -> bool:
        """Fold an import or a registry freeze as an append to the file's bytes; False when it must be a
        whole encode instead (no file yet, or the append would pass the bounds)."""
        base = self.base
        if base is None:
            return False
        current = self.encoded()
        footer = current.footer()
        event = step.event
        imported = event if isinstance(event, SequencesImported) else None
        payload = step.payload if imported is not None else None
        new_rows = payload.num_rows if payload is not None else 0
        if not _appendable(footer, current.total, new_rows):
            return False
        if isinstance(event, RecordsAdopted) and payload is not None and payload.schema.names != footer.schema.names:
            return False  # the original's own columns: a whole encode (the file's schema grows)
        after = replace(base, registry_hash=step.registry_hash, watermark=step.mark)
        schema = footer.schema.to_arrow_schema()
        keep = base.table.column_names if self.partial and base.table.num_columns else []
        kept: list[pa.Table] = []  # the columns a write's decision reads, of the rows appended

        def added() -> Iterator[pa.Table]:
            if payload is None or imported is None:
                return
            for batch in payload_batches(payload):
                rows = _file_rows(imported_rows(batch, imported), schema)
                if keep:
                    kept.append(rows.select(keep))
                yield rows

        pending = step.mark.hash == PENDING
        watermark_hash = HASH_PLACEHOLDER if pending else step.mark.hash
        groups = (
            step.prepared.take(current.total, schema, new_rows, imported)
            if step.prepared is not None and imported is not None and not keep
            else None
        )
        if groups is not None:  # the same row groups, encoded on a thread while the import was decided
            appended = appended_footer(footer, groups, schema, base_metadata(after), watermark_hash)
        else:
            appended = append_parquet(
                footer,
                current.total,
                added(),
                schema,
                base_metadata(after),
                watermark_hash,
                scratch=current.path.parent if current.path is not None else Path(tempfile.gettempdir()),
            )
        if appended is None:
            return False
        if new_rows:
            if keep:
                table = pa.concat_tables([base.table, *kept])
            else:  # the row count alone: the rows are in the bytes, read again when an event needs them
                table = pa.table({"_": pa.nulls(base.rows + new_rows)}).select([])
                self.partial = True
            after = replace(after, table=table)
        self.base = after
        self.bytes = current.appended(Chunk(step.mark.seq, tuple(appended[0]), appended[1], pending))
        return True

    def prepare(self, template: SequencesImported) -> PreparedAppend | None:
        """An encoder of the base row groups an import (`template`: its source and time) will append to the
        file as it stands, to be fed the import's payload rows while it is decided (None: no file to
        append to; the fold encodes the whole base)."""
        current = self.bytes
        if self.base is None or current is None or isinstance(template, RecordsAdopted):
            return None
        scratch = current.path.parent if current.path is not None else Path(tempfile.gettempdir())
        return PreparedAppend(current.total, current.footer().schema.to_arrow_schema(), template, scratch)

    def stage(self) -> None:
        """Encode the base now (with the pending hash) when this write re-encodes it: the line's fingerprint
        needs the file's size."""
        base = self.base
        if base is not None and base.watermark.hash == PENDING:
            self.encoded()

    def size(self) -> int:
        return self.encoded().total

    def seal(self, digests: dict[int, str]) -> None:
        if self.base is not None:
            self.base = replace(self.base, watermark=_sealed(self.base.watermark, digests))
        if self.bytes is not None:
            self.bytes = self.bytes.sealed(digests)

    def outputs(self) -> dict[str, Output]:
        if self.base is None:
            return {}
        grow = None
        current = self.bytes
        if current is not None and current.path is not None and current.chunks and self._stored is not None:
            grow = Growth(current.path, current.size, self._stored, current.tail()[:-1], current.chunks[-1].footer)
        return {RECORDS_FILE: Output(self.base.watermark, lambda: self.encoded().parts(), read_watermark, grow=grow)}

    def stray(self, directory: Path) -> Iterator[str]:
        return iter(())

    def release(self, directory: Path | None = None) -> None:
        """After its file was written: when that grew the stored file in place, the file now holds every
        chunk, so it becomes the prefix the next append extends (never cut back and written again)."""
        current, base = self.bytes, self.base
        if current is None or current.path is None or not current.chunks or base is None:
            return
        try:
            grown = current.path.stat().st_size == current.total and read_watermark(current.path) == base.watermark
        except OSError:
            return
        if grown:
            self.bytes, self._stored = BaseBytes(current.path, current.total), base.watermark


# -- _index/ ---------------------------------------------------------------------------------------
class IdIndex:
    """`_index/`: the base's ids as sorted runs of (key, row), so a lookup reads only the row groups
    holding them and a write checks its ids without reading the base's (ADR 0009, ADR 0013).

    An import adds a run of its own ids (the rows it appended), merged with the runs before it by
    `idindex.merge_due`; a materialize that drops rows re-derives one run from the base. The manifest
    `_index/id.json` names the runs and carries the watermark of the last base event folded.
    """

    label = "_index/"
    anchored = True

    def __init__(self, fold: Fold) -> None:
        self._fold = fold
        self._mark: Watermark | None = None
        self.rows = 0
        self.keyed = True
        self.runs: list[idindex.Run] = []
        self._batches: dict[str, pa.RecordBatch] = {}
        self._dir: Path | None = None

    def watches(self, event: Event) -> bool:
        return isinstance(event, BASE_EVENTS)

    def mark(self) -> Watermark | None:
        return self._mark

    def stored_mark(self, directory: Path) -> Watermark | None:
        return idindex.manifest_stamp(directory / INDEX_MANIFEST)

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        found = idindex.read_manifest(directory / INDEX_MANIFEST)
        self._batches.clear()
        self._dir = directory
        if found is None:
            self._mark, self.rows, self.keyed, self.runs = None, 0, True, []
            return
        self._mark, self.rows, self.keyed, self.runs = found.mark, found.rows, found.keyed, list(found.runs)

    def batch(self, run: idindex.Run) -> pa.RecordBatch:
        """A run's rows (in hand, else from its stored file, else from the base's ids: a damaged run file)."""
        found = self._batches.get(run.file)
        if found is None:
            found = idindex.read_run(self._dir, run) if self._dir is not None else None
        if found is None:
            ids = self._fold.get(BaseFile).column("id")
            found = idindex.run_rows([ids.slice(run.start, run.rows)], run.start)[0] if ids is not None else None
            if found is None:
                raise IntegrityError(f"the id index names rows {run.start}..{run.end} the base cannot key")
        self._batches[run.file] = found
        return found

    def fold(self, step: Step) -> None:
        event = step.event
        if isinstance(event, DatasetInitialized):
            self.rows, self.keyed, self.runs = 0, True, []
            self._batches.clear()
        elif isinstance(event, SequencesImported) and step.payload is not None and step.payload.num_rows:
            ordered = step.sorted_keys
            n = step.payload.num_rows
            if ordered is not None and len(ordered.keys) == n and self.keyed and idindex.fits(self.rows, n):
                self._add_run(idindex.sorted_run(ordered, self.rows), n, step.mark)  # as `run_rows` sorts them
            else:
                self._add((batch.column("id") for batch in payload_batches(step.payload, ["id"])), step.mark)
        elif isinstance(event, Materialized) and event.rows_dropped:
            base = self._fold.get(BaseFile)
            if (base.mark() or Watermark()).seq != step.mark.seq:  # the stored base is past this event
                raise Restart
            ids = base.column("id")
            self.rows, self.keyed, self.runs = 0, True, []
            self._batches.clear()
            if ids is not None and len(ids):
                self._add([ids], step.mark)
        self._mark = step.mark

    def _add(self, id_chunks: Iterable[pa.Array | pa.ChunkedArray], mark: Watermark) -> None:
        """A run of the ids appended at the base's end (given a chunk at a time), merged as `merge_due` says."""
        start = self.rows
        if self.keyed:
            rows, count = idindex.run_rows(id_chunks, start)
        else:
            rows, count = None, sum(len(ids) for ids in id_chunks)
        if rows is None:
            self.rows = start + count
            self.keyed, self.runs = False, []
            self._batches.clear()
            return
        self._add_run(rows, count, mark)

    def _add_run(self, rows: pa.RecordBatch, count: int, mark: Watermark) -> None:
        """The run `rows` of the `count` ids appended at the base's end, merged as `merge_due` says."""
        start = self.rows
        self.rows = start + count
        run = idindex.Run(start, self.rows, mark)
        self.runs.append(run)
        self._batches[run.file] = rows
        while idindex.merge_due(self.runs):
            a, b = self.runs[-2:]
            merged = idindex.Run(a.start, b.end, mark)
            self._batches[merged.file] = idindex.merged_rows(self.batch(a), self.batch(b))
            self.runs[-2:] = [merged]

    def known(self) -> IndexedIds | None:
        """The base's ids, answered from the runs (None: the ids cannot be keyed, or no base yet)."""
        base = self._fold.get(BaseFile)
        if not self.keyed or base.base is None or base.bytes is None or self.rows != base.base.rows:
            return None
        index = idindex.IdIndex.of([self.batch(run) for run in self.runs], self.rows)
        return IndexedIds(index, base.bytes) if index is not None else None

    def stage(self) -> None:
        return None

    def seal(self, digests: dict[int, str]) -> None:
        if self._mark is not None:
            self._mark = _sealed(self._mark, digests)
        self.runs = [replace(run, mark=_sealed(run.mark, digests)) for run in self.runs]  # same files: named by rows

    def outputs(self) -> dict[str, Output]:
        mark = self._mark
        if mark is None:
            return {}
        out: dict[str, Output] = {}
        for run in self.runs if self.keyed else []:
            out[run.file] = Output(run.mark, _run_encoder(self, run), idindex.stamp_at, named=True)
        rows, keyed, runs = self.rows, self.keyed, list(self.runs)
        out[INDEX_MANIFEST] = Output(
            mark, lambda: idindex.encode_manifest(mark, rows, keyed, runs), idindex.manifest_stamp, last=True
        )
        return out

    def stray(self, directory: Path) -> Iterator[str]:
        return _strays(directory, (directory / INDEX_MANIFEST).parent, self.outputs())

    def release(self, directory: Path | None = None) -> None:
        if directory is not None:
            self._dir = directory
        self._batches.clear()


#: Beyond this many ids asked at once, one hashed pass over each run's keys beats a binary search per id.
_SEARCHED_IDS = 20_000
#: Beyond this many candidate rows, the base's ids are read whole instead of row group by row group.
_CANDIDATE_ROWS = 100_000
#: Candidate pairs compared at once against the base's ids (bounds the copies the comparison takes).
_COMPARED_AT_ONCE = 1 << 20


@dataclass(frozen=True)
class IndexedIds:
    """`decide.KnownIds` answered from the id index: the keys find candidate rows, and only the row groups
    holding them are read to compare full ids (no id of the base is read when no key matches)."""

    index: idindex.IdIndex
    bytes: BaseBytes
    #: The base's ids once read whole: a write asking of many batches reads them once (docs/adr/0014).
    _read: list[pa.Array] = field(default_factory=list)

    def __len__(self) -> int:
        return self.index.num_rows

    def forget(self) -> None:
        """Let the base's ids read for `isin` go (read again if asked)."""
        self._read.clear()

    def _ids(self) -> pa.Array:
        """The base's ids, one array (taken from row by row: a chunked array would be joined per take)."""
        if not self._read:
            self._read.append(self.bytes.read(["id"]).column("id").combine_chunks())
        return self._read[0]

    def _candidates(self, wanted: pa.Array) -> list[int]:
        """The base rows that may hold one of `wanted` (a binary search per id: for a few of them)."""
        return sorted({row for value in wanted.to_pylist() for row in self.index.candidates(value)})

    def rows_of(self, wanted: pa.Array, columns: list[str]) -> pa.Table | None:
        """The base's rows of `wanted` ids (`id` and `columns`), reading only the row groups that hold their
        candidates (None: too many ids for that to beat reading the columns whole)."""
        import pyarrow.compute as pc

        if len(wanted) > _SEARCHED_IDS:
            return None
        found = self.bytes.rows_at(self._candidates(wanted), ["id", *columns])
        return found.filter(pc.is_in(found.column("id"), value_set=wanted))

    def isin(self, wanted: pa.Array) -> pa.Array:
        import pyarrow.compute as pc

        from .overlays import arange

        nothing = pa.repeat(pa.scalar(False, pa.bool_()), len(wanted))
        if len(wanted) <= _SEARCHED_IDS:
            rows = self._candidates(wanted)
        else:
            positions, pairs = self.index.pairs(wanted)
            if len(pairs) > _CANDIDATE_ROWS:  # compared pair by pair against the base's ids, read once
                ids = self._ids()
                hits = []
                for start in range(0, len(pairs), _COMPARED_AT_ONCE):
                    at, row = positions.slice(start, _COMPARED_AT_ONCE), pairs.slice(start, _COMPARED_AT_ONCE)
                    hits.append(pc.filter(at, pc.equal(pc.take(wanted, at), pc.take(ids, row))))
                found = pa.chunked_array(hits, pa.int64()).combine_chunks()
                return pc.is_in(arange(len(wanted), pa.int64()), value_set=found)
            rows = pc.unique(pairs).sort().to_pylist()
        if not rows:
            return nothing
        return pc.is_in(wanted, value_set=self.bytes.ids_at(rows))


def _strays(directory: Path, folder: Path, expected: dict[str, Output]) -> Iterator[str]:
    """The files of a projection's own folder that its outputs do not name (temp files left to their cleaner)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        rel = str(path.relative_to(directory))
        if rel not in expected and path.is_file() and not path.name.startswith(".tmp-"):
            yield rel


def _run_encoder(index: IdIndex, run: idindex.Run) -> Callable[[], Encoded]:
    return lambda: idindex.encode(index.batch(run), run.mark)


# -- _derived/ -------------------------------------------------------------------------------------
class DerivedFiles:
    """`_derived/`: one overlay part per overlay-writing event, compacted and archived parts, and
    `layout.json` naming them all (ADR 0008)."""

    label = "_derived/"
    anchored = True

    def __init__(self, fold: Fold) -> None:
        self._fold = fold
        self.layout: DerivedLayout = EMPTY_LAYOUT
        self.layout_mark = Watermark()
        #: Part rows in hand, by `table_key`: tables, or an attach's payload read on demand (docs/adr/0014).
        self.tables: dict[str, Payload] = {}
        self._merged: dict[str, tuple[tuple[int, ...], pa.Table]] = {}
        self._read: tuple[Path, tuple[DerivedLayout, Watermark] | None] | None = None  # for `load`

    def watches(self, event: Event) -> bool:
        return isinstance(event, LAYOUT_EVENTS)

    def mark(self) -> Watermark | None:
        return self.layout_mark if self.layout_mark.seq else None

    def stored_mark(self, directory: Path) -> Watermark | None:
        doc = read_layout(directory / LAYOUT_FILE)
        self._read = (directory, doc)
        return doc[1] if doc is not None else None

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        read, self._read = self._read, None  # the anchor just checked (under the same lock), else read now
        doc = read[1] if read is not None and read[0] == directory else read_layout(directory / LAYOUT_FILE)
        self.layout, self.layout_mark = doc if doc is not None else (EMPTY_LAYOUT, Watermark())
        self.tables.clear()
        self._merged.clear()

    def table(self, info: PartInfo) -> pa.Table:
        """A part's rows (from the tables in hand, else through the fold's `PartSource`)."""
        key = table_key(info)
        found = self.tables.get(key)
        if found is None:
            found = self._fold.source.part(info, self.table)
        elif not isinstance(found, pa.Table):  # an attach's payload, read whole only when a merge needs it
            found = payload_table(found)
        self.tables[key] = found
        return found

    def rows(self, info: PartInfo) -> Payload:
        """A part's rows to encode: as held (an attach's payload stays on disk), else read a batch at a time
        where the fold's `PartSource` finds them."""
        found = self.tables.get(table_key(info))
        return found if found is not None else self._fold.source.rows(info, self.table)

    def columns(self, namespace: str) -> tuple[str, ...]:
        """The column names of `merged(namespace)` but its `WRITTEN` masks, from the parts' schemas (no part
        is merged or read whole): `id`, then each column in order of first appearance, parts by seq, purge
        parts contributing none."""
        parts = self.layout.live.get(namespace, ())
        held = self._merged.get(namespace)
        if held is not None and held[0] == tuple(p.mark.seq for p in parts):
            return tuple(name for name in held[1].column_names if not name.startswith(WRITTEN))
        names = [ID]
        for part in sorted(parts, key=lambda p: p.mark.seq):
            if part.purge:
                continue
            schema = self.rows(part).schema
            names.extend(n for n in schema.names if n not in names and not n.startswith((WRITTEN, PURGED)))
        return tuple(names)

    def column_types(self, namespace: str) -> dict[str, pa.DataType]:
        """The type `merged(namespace)` gives each value column: the newest part's that holds it (the merge
        reads older parts' values as that type), from the parts' schemas."""
        types: dict[str, pa.DataType] = {}
        for part in sorted(self.layout.live.get(namespace, ()), key=lambda p: p.mark.seq):
            if not part.purge:
                for f in self.rows(part).schema:
                    if f.name != ID and not f.name.startswith((WRITTEN, PURGED)):
                        types[f.name] = f.type
        return types

    def rows_of(self, namespace: str) -> Payload:
        """`merged(namespace)`'s rows to read a batch at a time: a single part's own rows where they are (an
        attach's payload or a part file stays on disk), else the merge."""
        from .overlays import merges_to_itself

        parts = self.layout.live.get(namespace, ())
        if len(parts) == 1 and not parts[0].purge and namespace not in self._merged:
            rows = self.rows(parts[0])
            if merges_to_itself(rows.schema.names):
                return rows
        return self.merged(namespace)

    def merged(self, namespace: str) -> pa.Table:
        """The last-writer-wins merge of a namespace's live parts (kept until its parts change)."""
        from .overlays import Part, merge_parts

        parts = self.layout.live.get(namespace, ())
        seqs = tuple(p.mark.seq for p in parts)
        cached = self._merged.get(namespace)
        if cached is not None and cached[0] == seqs:
            return cached[1]
        merged = merge_parts([Part(p.mark.seq, self.table(p)) for p in parts])
        own = len(parts) == 1 and not parts[0].purge and merged.schema.equals(self.table(parts[0]).schema)
        if own:  # the part's own rows: held once, as the merge (one chunk per column)
            del self.tables[table_key(parts[0])]
        merged = _one_chunk(merged)
        if own:
            self.tables[table_key(parts[0])] = merged
        self._merged[namespace] = (seqs, merged)
        return merged

    def fold(self, step: Step) -> None:
        event = step.event
        table: Payload | None
        if isinstance(event, OverlayWritten):  # its payload is its part: kept as it comes (maybe on disk)
            table = step.payload
        else:
            table = part_table(event, payload_table(step.payload) if step.payload is not None else None)
        if isinstance(event, OverlayCompacted):
            table = sorted_part(self.merged(event.namespace))
        layout = apply_layout(
            self.layout,
            event,
            registry_hash=step.registry_hash,
            mark=step.mark,
            has_rows=table is not None and table.num_rows > 0,
        )
        if table is not None:
            for info in layout.files().values():
                if info.mark == step.mark:
                    self.tables[table_key(info)] = table
        self.layout, self.layout_mark = layout, step.mark

    def release(self, directory: Path | None = None, *, keep_pending: bool = False) -> None:
        """Drop the tables in hand (they are read again when needed); with `keep_pending`, keep those of
        the parts this write adds (their files are published after the append)."""
        self._merged.clear()
        if not keep_pending:
            self.tables.clear()
            return
        pending = {table_key(info) for info in self.layout.files().values() if info.mark.hash == PENDING}
        for key in [k for k in self.tables if k not in pending]:
            del self.tables[key]

    def stage(self) -> None:
        return None

    def seal(self, digests: dict[int, str]) -> None:
        def fix(info: PartInfo) -> PartInfo:
            if info.mark.hash != PENDING and not info.sources:  # most parts: sealed by an earlier write
                return info
            return replace(info, mark=_sealed(info.mark, digests), sources=tuple(fix(s) for s in info.sources))

        layout = self.layout
        self.layout = replace(
            layout,
            live={ns: tuple(fix(p) for p in parts) for ns, parts in layout.live.items()},
            archived=tuple(fix(p) for p in layout.archived),
        )
        self.layout_mark = _sealed(self.layout_mark, digests)

    def outputs(self) -> dict[str, Output]:
        if not self.layout_mark.seq:
            return {}
        out: dict[str, Output] = {}
        for file, info in self.layout.files().items():
            moved = replace(info, archived=False).file if info.archived else None
            out[file] = Output(info.mark, _part_encoder(self, info), read_watermark, moved_from=moved)
        layout, mark = self.layout, self.layout_mark
        out[LAYOUT_FILE] = Output(mark, lambda: encode_layout(layout, mark), self.stored_mark_of, last=True)
        return out

    def stored_mark_of(self, path: Path) -> Watermark | None:
        doc = read_layout(path)
        return doc[1] if doc is not None else None

    def stray(self, directory: Path) -> Iterator[str]:
        derived = directory / LAYOUT_FILE
        if not derived.parent.is_dir():
            return
        expected = self.outputs()
        for path in sorted(derived.parent.rglob("*.parquet")):
            rel = str(path.relative_to(directory))
            if rel not in expected and not original_names(rel):  # an original's files are not ours to remove
                yield rel


def _one_chunk(table: pa.Table) -> pa.Table:
    """`table` with each column in one chunk (a merged table is taken from batch by batch, and a take from
    many chunks joins them first), joined a column at a time: each chunked column is let go once joined
    (when nothing else holds it), so joining copies one column at most."""
    schema = table.schema
    columns = []
    while table.num_columns:
        columns.append(table.column(0).combine_chunks())
        table = table.remove_column(0)
    return pa.Table.from_arrays(columns, schema=schema)


def _part_encoder(derived: DerivedFiles, info: PartInfo) -> Callable[[], Encoded]:
    def encode() -> Encoded:
        rows = derived.rows(info)
        if isinstance(rows, pa.Table):
            return encode_part(info, rows)
        scratch = rows.folder if isinstance(rows, (StoredRows, ParquetRows)) else Path(tempfile.gettempdir())
        return encode_part_batches(info, rows.batches(), rows.schema, scratch=scratch)

    return encode


def table_key(info: PartInfo) -> str:
    """The key of a part's table (archiving moves the file, not the content)."""
    return f"{info.namespace}@{info.mark.seq}"


#: Every projection, in fold order: the base folds an event before the overlays do (a materialize reads
#: the overlay parts as they were before it), and the id index follows the base.
# -- _history/ -------------------------------------------------------------------------------------
class HistoryIndex:
    """`_history/`: which events named each record (docs/adr/0020), as sorted runs of (key, seq, row)
    entries, one run per event that named records, merged as `history.merge_due` says. Folded from the
    events and their payloads' ids alone. A live write's run (its size known from the payload) is sorted on
    a thread of its own while the write goes on; its file is encoded once it is done."""

    label = "_history/"
    anchored = True

    def __init__(self, fold: Fold) -> None:
        self._fold = fold
        self._mark: Watermark | None = None
        self.entries = 0
        self.runs: list[history.Run] = []
        self.batches: dict[int, tuple[int, ...]] = {}
        self._rows: dict[str, pa.RecordBatch | Future[pa.RecordBatch]] = {}
        self._dir: Path | None = None
        self._worker: ThreadPoolExecutor | None = None

    def watches(self, event: Event) -> bool:
        return isinstance(event, DatasetInitialized) or history.names_records(event)

    def mark(self) -> Watermark | None:
        return self._mark

    def stored_mark(self, directory: Path) -> Watermark | None:
        found = _stored_history(directory)
        return found.mark if found is not None else None

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        found = _stored_history(directory)
        self._rows.clear()
        self._dir = directory
        if found is None:
            self._mark, self.entries, self.runs, self.batches = None, 0, [], {}
            return
        self._mark, self.entries = found.mark, found.entries
        self.runs, self.batches = list(found.runs), dict(found.batches)

    def rows(self, run: history.Run) -> pa.RecordBatch:
        """A run's entries (in hand or being sorted, else from its stored file; a damaged file: the whole
        log is folded)."""
        found = self._rows.get(run.file)
        if isinstance(found, Future):
            found = self._rows[run.file] = found.result()
        if found is None:
            found = history.read_run(self._dir, run) if self._dir is not None else None
            if found is None:
                raise Restart
            self._rows[run.file] = found
        return found

    def fold(self, step: Step) -> None:
        event = step.event
        self._mark = step.mark
        if isinstance(event, DatasetInitialized):
            self.entries, self.runs, self.batches = 0, [], {}
            self._rows.clear()
            return
        seq = step.mark.seq
        ordered = step.sorted_keys if isinstance(event, SequencesImported) else None
        later = history.deferrable(event, step.payload, ordered)
        rows: pa.RecordBatch | Future[pa.RecordBatch]
        if later is not None:
            n, sizes = later
            payload = step.payload
            rows = self._work().submit(_entries, seq, event, payload)
        else:
            found = history.entries_of(seq, event, step.payload, ordered)
            rows, n, sizes = found.rows, found.rows.num_rows, found.batches
        if sizes:
            self.batches[seq] = sizes
        if not n:
            return
        run = history.Run(self.entries, self.entries + n, step.mark)
        self.entries += n
        self.runs.append(run)
        self._rows[run.file] = rows
        while history.merge_due(self.runs):
            a, b = self.runs[-2:]
            joined = history.Run(a.start, b.end, step.mark)
            first, second = (self._rows.get(r.file) or self.rows(r) for r in (a, b))  # a stored run read here
            self._rows[joined.file] = self._work().submit(_merged, first, second)
            self.runs[-2:] = [joined]

    def _work(self) -> ThreadPoolExecutor:
        """The thread that sorts runs, in the order they were asked for (a merge after its runs)."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="usr-history")
        return self._worker

    def stage(self) -> None:
        return None

    def seal(self, digests: dict[int, str]) -> None:
        if self._mark is not None:
            self._mark = _sealed(self._mark, digests)
        self.runs = [replace(run, mark=_sealed(run.mark, digests)) for run in self.runs]

    def outputs(self) -> dict[str, Output]:
        mark = self._mark
        if mark is None:
            return {}
        out: dict[str, Output] = {}
        for run in self.runs:
            out[run.file] = Output(run.mark, _history_encoder(self, run), idindex.stamp_at, named=True)
        manifest = history.Manifest(mark, self.entries, list(self.runs), dict(self.batches))
        out[HISTORY_MANIFEST] = Output(
            mark, lambda: history.encode_manifest(manifest), history.manifest_stamp, last=True
        )
        return out

    def stray(self, directory: Path) -> Iterator[str]:
        return _strays(directory, directory / HISTORY_DIR, self.outputs())

    def release(self, directory: Path | None = None) -> None:
        """Runs are dropped only where they can be read back (a fold from the start has no folder until
        its files are written)."""
        if directory is not None:
            self._dir = directory
        if self._dir is not None:
            self._rows.clear()


def _stored_history(directory: Path) -> history.Manifest | None:
    """The stored manifest (None, and so a fold from the start, if a run it names is gone: a later write
    may have to merge it)."""
    found = history.read_manifest(directory / HISTORY_MANIFEST)
    if found is None or not all((directory / run.file).is_file() for run in found.runs):
        return None
    return found


def _entries(seq: int, event: Event, payload: Payload | None) -> pa.RecordBatch:
    return history.entries_of(seq, event, payload).rows


def _merged(
    first: pa.RecordBatch | Future[pa.RecordBatch], second: pa.RecordBatch | Future[pa.RecordBatch]
) -> pa.RecordBatch:
    """Two runs merged (on the worker, after both were sorted: it takes its jobs in order)."""
    return history.merged(*(r.result() if isinstance(r, Future) else r for r in (first, second)))


def _history_encoder(index: HistoryIndex, run: history.Run) -> Callable[[], Encoded]:
    return lambda: history.encode_run(index.rows(run), run.mark)


PROJECTIONS: tuple[Callable[[Fold], Projection], ...] = (BaseFile, IdIndex, DerivedFiles, HistoryIndex)


@dataclass
class Fold:
    """Every projection's state as of the events folded so far: the one fold of the log."""

    source: PartSource
    members: list[Projection] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.members:
            self.members = [make(self) for make in PROJECTIONS]

    def get(self, kind: type[P]) -> P:
        for member in self.members:
            if isinstance(member, kind):
                return member
        raise KeyError(kind.__name__)

    def due(self, step: Step) -> list[Projection]:
        """The projections that take this event (they watch its kind and have not folded it yet)."""
        due = []
        for member in self.members:
            mark = member.mark()
            if member.watches(step.event) and (mark is None or step.mark.seq > mark.seq):
                due.append(member)
        return due

    def apply(self, step: Step) -> list[Projection]:
        """Fold one event into every projection due for it; returns them (raises `Restart`)."""
        due = self.due(step)
        for member in due:
            member.fold(step)
        return due

    def stage(self) -> None:
        """Let every projection prepare its outputs ahead of the append, side by side (Arrow work
        releases the GIL: the id index sorts while the base encodes). Threads only when more than one
        projection took this write's events (a small write stages inline)."""
        busy = [m for m in self.members if (mark := m.mark()) is not None and mark.hash == PENDING]
        if len(busy) < 2:
            for member in self.members:
                member.stage()
            return
        with ThreadPoolExecutor(len(self.members)) as pool:
            for done in [pool.submit(member.stage) for member in self.members]:
                done.result()

    def seal(self, digests: dict[int, str]) -> None:
        for member in self.members:
            member.seal(digests)

    def outputs(self) -> dict[str, Output]:
        """Every file the projections encode to, in fold order."""
        out: dict[str, Output] = {}
        for member in self.members:
            out.update(member.outputs())
        return out

    def by_size(self) -> list[Projection]:
        """The projections in reverse fold order (overlay parts before the base): a full publish or verify
        frees each one's tables (`release`) before the larger base is encoded."""
        return list(reversed(self.members))

    def stray(self, directory: Path) -> list[str]:
        return [rel for member in self.members for rel in member.stray(directory)]

    @property
    def base(self) -> BaseProjection | None:
        return self.get(BaseFile).base
