"""Dataset files other than the log: payload artifacts, frozen registries, projection files.

Payloads are immutable Arrow IPC files (zstd-compressed buffers) named by the xxh3-128 digest
of their bytes, fsync'd before the log line that references them, and verified on every read.
Projection files are published atomically through the I/O seam and carry their watermark.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import secrets
import tempfile
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from .codec import read_parquet
from .errors import IntegrityError, NotFound
from .events import PayloadRef
from .fileio import FileOps, Part, SeamFile, fileops, scratch_file, write_atomic, write_once
from .names import PAYLOAD_DIR, RECORDS_FILE, REGISTRY_DIR
from .projectors import BaseProjection, DerivedLayout, PartInfo, Watermark
from .registry import Registry, parse_registry

_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1))


def encode_payload(table: pa.Table) -> memoryview:
    """Arrow IPC file bytes of `table` (zstd-compressed buffers, one record batch per chunk)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=_IPC_OPTIONS) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue()).cast("B")  # Arrow buffers export signed bytes ('b')


def payload_ref(data: bytes | memoryview, rows: int) -> PayloadRef:
    digest = xxhash.xxh3_128_hexdigest(data)
    return PayloadRef(file=f"{PAYLOAD_DIR}/{digest}.arrow", digest=digest, rows=rows, size_bytes=len(data))


def write_payload(dataset_dir: Path, ref: PayloadRef, data: bytes | memoryview) -> None:
    """Write the artifact durably (temp, fsync, rename, fsync dir) unless it already exists."""
    fileops().mkdir(dataset_dir / PAYLOAD_DIR)
    write_once(dataset_dir / ref.file, data, point="payload")
    fileops().point("after_payload")


def read_payload(dataset_dir: Path, ref: PayloadRef) -> pa.Table:
    """Read a payload artifact, checking its size and digest first."""
    path = dataset_dir / ref.file
    try:
        data = fileops().read_bytes(path)
    except FileNotFoundError:
        raise IntegrityError(f"payload artifact missing: {ref.file}") from None
    if len(data) != ref.size_bytes or xxhash.xxh3_128_hexdigest(data) != ref.digest:
        raise IntegrityError(f"payload artifact {ref.file} does not match its digest")
    table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    if table.num_rows != ref.rows:
        raise IntegrityError(f"payload artifact {ref.file} holds {table.num_rows} rows, expected {ref.rows}")
    return table


@dataclass(frozen=True)
class StoredRows:
    """A payload's rows as stored, read one record batch at a time (an import's payload may be larger than
    memory, docs/adr/0014). Opened by `open_payload`, which checked the file's size and digest."""

    path: Path
    num_rows: int
    #: The row counts of its record batches, when the writer kept them (a spool): else read from the file.
    batch_rows: tuple[int, ...] | None = None

    @property
    def folder(self) -> Path:
        """Where scratch files made from these rows go: beside the payload."""
        return self.path.parent

    @property
    def schema(self) -> pa.Schema:
        with pa.OSFile(str(self.path)) as source:
            return pa.ipc.open_file(source).schema

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The rows a record batch at a time (only `columns`, when given: the others are not read), the next
        batch read and decompressed on a thread of its own while the caller uses this one."""
        seen = 0
        with pa.OSFile(str(self.path)) as source, ThreadPoolExecutor(1, thread_name_prefix="usr-read") as ahead:
            reader = pa.ipc.open_file(source)
            if columns is not None:
                names = reader.schema.names
                fields = [names.index(c) for c in columns]
                reader = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=fields))
            count = reader.num_record_batches
            coming = ahead.submit(reader.get_batch, 0) if count else None
            for i in range(count):
                assert coming is not None
                batch = coming.result()
                coming = ahead.submit(reader.get_batch, i + 1) if i + 1 < count else None
                seen += batch.num_rows
                yield pa.Table.from_batches([batch])
                del batch
        if seen != self.num_rows:
            raise IntegrityError(f"payload artifact {self.path.name} holds {seen} rows, expected {self.num_rows}")


@dataclass(frozen=True)
class ParquetRows:
    """A Parquet file's rows (only `columns`, when given), read a row group at a time: a stored overlay part
    (docs/adr/0014), by path or as a read plan opened it."""

    source: Path | pa.NativeFile
    columns: list[str] | None = None

    def _reader(self) -> pq.ParquetFile:
        return pq.ParquetFile(self.source if isinstance(self.source, pa.NativeFile) else str(self.source))

    @property
    def num_rows(self) -> int:
        return int(self._reader().metadata.num_rows)

    @property
    def schema(self) -> pa.Schema:
        schema = self._reader().schema_arrow.remove_metadata()
        return schema if self.columns is None else pa.schema([schema.field(name) for name in self.columns])

    @property
    def folder(self) -> Path:
        """Where scratch files made from these rows go: beside the file, else the temp folder."""
        return self.source.parent if isinstance(self.source, Path) else Path(tempfile.gettempdir())

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        reader = self._reader()
        for group in range(reader.metadata.num_row_groups):
            yield reader.read_row_group(group, columns=columns or self.columns).replace_schema_metadata(None)


def digest_of(path: Path) -> tuple[int, str]:
    """A file's size and xxh3-128 digest, read a block at a time."""
    hasher = xxhash.xxh3_128()
    size = 0
    with path.open("rb", buffering=0) as fh:
        while block := fh.read(8 << 20):
            hasher.update(block)
            size += len(block)
    return size, hasher.hexdigest()


def open_payload(dataset_dir: Path, ref: PayloadRef) -> StoredRows:
    """A payload artifact to read a batch at a time, its size and digest checked first."""
    path = dataset_dir / ref.file
    try:
        size, digest = digest_of(path)
    except FileNotFoundError:
        raise IntegrityError(f"payload artifact missing: {ref.file}") from None
    if size != ref.size_bytes or digest != ref.digest:
        raise IntegrityError(f"payload artifact {ref.file} does not match its digest")
    return StoredRows(path, ref.rows)


class _HashingFile(SeamFile):
    """A seam file that hashes (xxh3-128) what is written through it."""

    def __init__(self, ops: FileOps, fd: int) -> None:
        super().__init__(ops, fd)
        self.hasher = xxhash.xxh3_128()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hasher.update(view)
        return super().write(view)


class PayloadSpool:
    """An import's payload written a batch at a time as the decision accepts them (docs/adr/0014): a `.tmp-`
    file in `_payloads/` (cleared after a crash like every temp) until `publish` names it by its digest,
    which is taken as the bytes are written. Writes go through the I/O seam; `discard` removes a spool
    that is not published."""

    def __init__(self, dataset_dir: Path, schema: pa.Schema | None = None) -> None:
        self._dir = dataset_dir
        self._schema = schema
        folder = dataset_dir / PAYLOAD_DIR
        fileops().mkdir(folder)
        self.path = folder / f".tmp-spool-{os.getpid()}-{secrets.token_hex(4)}"
        self._file: _HashingFile | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self.rows = 0
        self.batch_rows: list[int] = []  # as `write_table` writes them: a record batch per chunk

    def write(self, table: pa.Table) -> None:
        """Append `table`'s rows (a record batch per chunk). The rows are compressed and written on a thread
        of their own while the caller decides the next batch; an error in writing them is raised here (by
        the next write) or by `stored`/`publish`."""
        if not table.num_rows:
            return
        self._wait()
        if self._writer is None:
            ops = fileops()
            fd = ops.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            self._file = _HashingFile(ops, fd)
            schema = self._schema if self._schema is not None else table.schema  # else: the first rows'
            self._writer = pa.ipc.new_file(pa.PythonFile(self._file, mode="w"), schema, options=_IPC_OPTIONS)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="usr-spool")
        assert self._thread is not None
        self._pending = self._thread.submit(self._writer.write_table, table)
        self.rows += table.num_rows
        self.batch_rows.extend(batch.num_rows for batch in table.to_batches())

    def _wait(self) -> None:
        """Wait for the rows being written (raising what writing them raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _close(self) -> None:
        try:
            self._wait()
        finally:
            if self._thread is not None:
                self._thread.shutdown()
                self._thread = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def stored(self) -> StoredRows | None:
        """The rows written so far, to read back (None: no rows)."""
        self._close()
        return StoredRows(self.path, self.rows, tuple(self.batch_rows)) if self.rows else None

    def publish(self) -> tuple[PayloadRef, StoredRows] | None:
        """Make the payload durable under its digest (fsync, rename, fsync of the folder); None: no rows."""
        self._close()
        spooled, self._file = self._file, None
        if spooled is None:
            return None
        ops = fileops()
        ops.fsync(spooled.fileno())
        ops.close(spooled.fileno())
        digest = spooled.hasher.hexdigest()
        ref = PayloadRef(file=f"{PAYLOAD_DIR}/{digest}.arrow", digest=digest, rows=self.rows, size_bytes=spooled.tell())
        final = self._dir / ref.file
        if final.exists():  # the same rows were written before: content-addressed, so the same bytes
            ops.unlink(self.path)
        else:
            ops.point("before_rename:payload")
            ops.replace(self.path, final)
            ops.fsync_dir(final.parent)
        ops.point("after_payload")
        return ref, StoredRows(final, self.rows, tuple(self.batch_rows))

    def discard(self) -> None:
        """Remove the spool (after a rejection, an error or a Ctrl-C; a published spool is gone already). The
        file is unlinked first, so an interrupt while the writer closes leaves nothing behind."""
        with contextlib.suppress(OSError):
            if self.path.exists():
                fileops().unlink(self.path)
        with contextlib.suppress(Exception):
            self._close()
        spooled, self._file = self._file, None
        if spooled is not None:
            with contextlib.suppress(OSError):
                fileops().close(spooled.fileno())


#: Rows per record batch of a run: what `SortedRuns.between` reads at a time from each run.
RUN_BATCH_ROWS = 16_384


class SortedRuns:
    """Tables sorted by a key column (`id`, or a base row number), each kept as a run in a scratch file,
    merged into one key order a piece at a time (docs/adr/0014): an attach's input sorted, or overlay rows
    put in base order, without holding them all. Scratch only, not part of the log's truth: each run is
    unlinked as soon as it is created (in `_payloads/`; in the temp folder where the dataset cannot be
    written, as a verify of a read-only dataset) and read through its descriptor, so neither a crash nor
    another process's sweep of temp files leaves or takes anything."""

    def __init__(self, dataset_dir: Path, key: str = "id") -> None:
        self._folder = dataset_dir / PAYLOAD_DIR
        self._fds: list[int] = []
        self.key = key
        # `between`'s place in each run: its reader, the next record batch and the rows of the last one read
        # that later ranges hold.
        self._readers: list[pa.ipc.RecordBatchFileReader] = []
        self._cursors: list[int] = []
        self._held: list[pa.Table | None] = []

    def write(self, table: pa.Table) -> None:
        """Keep one run (its rows sorted by the key)."""
        if not table.num_rows:
            return
        fd = self._scratch()
        with pa.PythonFile(io.FileIO(fd, "w", closefd=False)) as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=RUN_BATCH_ROWS)

    def _scratch(self) -> int:
        fd, path = scratch_file(self._folder)
        self._fds.append(fd)
        with contextlib.suppress(FileNotFoundError):  # swept already: the descriptor still holds it
            os.unlink(path)
        return fd

    def between(self, start: int, end: int) -> pa.Table | None:
        """The rows of every run whose (integer) key is in `start` .. `end` - 1, in key order (None: none).
        Asked for ranges in increasing order: each run is read once, a record batch at a time, and only the
        batch each run is in holds rows of later ranges."""
        import pyarrow.compute as pc

        if not self._readers:
            self._readers = [pa.ipc.open_file(pa.PythonFile(io.FileIO(fd, "r", closefd=False))) for fd in self._fds]
            self._held = [None] * len(self._fds)
            self._cursors = [0] * len(self._fds)
        pieces = []
        for k, reader in enumerate(self._readers):
            while True:
                held = self._held[k]
                if held is None:
                    if self._cursors[k] == reader.num_record_batches:
                        break
                    held = pa.Table.from_batches([reader.get_batch(self._cursors[k])])
                    self._cursors[k] += 1
                keys = held.column(self.key).chunk(0)
                values = memoryview(keys.buffers()[1]).cast("B")[keys.offset * 8 : (keys.offset + len(keys)) * 8]
                lo = bisect_left(values.cast("q"), start)
                hi = bisect_left(values.cast("q"), end, lo=lo)
                del values, keys
                if hi > lo:
                    pieces.append(held.slice(lo, hi - lo))
                self._held[k] = held.slice(hi) if hi < held.num_rows else None
                if hi < held.num_rows:
                    break  # the rest of this batch is past the range
        if not pieces:
            return None
        piece = pa.concat_tables(pieces).combine_chunks()
        del pieces
        return piece.take(pc.sort_indices(piece.column(self.key))) if len(self._fds) > 1 else piece

    def merged(self, rows: int) -> Iterator[pa.Table]:
        """Every run's rows in id order, in pieces of about `rows` rows (at most twice that): equal ids are
        always in the same piece. Each piece maps the runs afresh, copies its slices and lets the mappings
        go, so the pages read stay resident for one piece only."""
        import pyarrow.compute as pc

        if not self._fds:
            return
        # Cut the id space at every `step`-th id of each run: between two cuts each run holds fewer than
        # `step` rows, so a piece closed once it reaches `rows` holds fewer than `rows + len(runs) * step`.
        step = max(1, rows // len(self._fds))
        runs = self._mapped()
        samples = [pc.take(run.column("id"), pa.array(range(step, run.num_rows, step), pa.int64())) for run in runs]
        cuts = pc.unique(pa.chunked_array(samples, pa.string()).combine_chunks()).sort()
        del samples
        # Where each cut falls in each run (its first id not below the cut), and the rows before it in all.
        ends = [_positions(run.column("id"), cuts) for run in runs]
        del runs
        total = ends[0]
        for more in ends[1:]:
            total = pc.add(total, more)
        before = total.to_pylist()
        del total
        starts = [0] * len(self._fds)
        taken = 0
        for at in [*range(len(cuts)), None]:
            if at is not None and before[at] - taken < rows:
                continue
            stops = [e[at].as_py() if at is not None else None for e in ends]
            pieces = [
                run.slice(a, (b if b is not None else run.num_rows) - a)
                for run, a, b in zip(self._mapped(), starts, stops, strict=True)
            ]
            pieces = [piece for piece in pieces if piece.num_rows]
            starts = [b if b is not None else 0 for b in stops]
            taken = before[at] if at is not None else taken
            if not pieces:
                continue
            piece = pa.concat_tables(pieces).combine_chunks()
            del pieces
            yield piece.take(pc.sort_indices(piece.column("id")))
            del piece

    def _mapped(self) -> list[pa.Table]:
        """Every run, read where it is mapped (the pages stay resident only while the tables are held)."""
        return [
            pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mmap.mmap(fd, 0, access=mmap.ACCESS_READ)))).read_all()
            for fd in self._fds
        ]

    def discard(self) -> None:
        self._readers, self._cursors, self._held = [], [], []
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _positions(ids: pa.ChunkedArray, cuts: pa.Array) -> pa.Array:
    """For each of `cuts` (sorted, distinct), how many of `ids` (sorted) are below it (`bisect_left`),
    vectorized: both sorted together, each cut before the ids equal to it."""
    import pyarrow.compute as pc

    values = pa.concat_arrays([cuts.cast(pa.string()), ids.combine_chunks().cast(pa.string())])
    is_id = pa.concat_arrays(
        [pa.repeat(pa.scalar(0, pa.int8()), len(cuts)), pa.repeat(pa.scalar(1, pa.int8()), len(ids))]
    )
    order = pc.sort_indices(pa.table({"v": values, "t": is_id}), sort_keys=[("v", "ascending"), ("t", "ascending")])
    at = pc.indices_nonzero(pc.less(order, pa.scalar(len(cuts), order.type))).cast(pa.int64())
    ranks = pa.array(range(len(cuts)), pa.int64())
    return pc.subtract(at, ranks)


def freeze_registry(dataset_dir: Path, registry: Registry) -> str:
    """Keep a frozen copy `_registry/registry.<hash>.yaml`; return the registry hash."""
    digest = registry.hash
    path = dataset_dir / REGISTRY_DIR / f"registry.{digest}.yaml"
    if not path.exists():  # frozen copies are immutable: render the YAML only when it is missing
        fileops().mkdir(dataset_dir / REGISTRY_DIR)
        write_once(path, registry.to_yaml(), point="registry")
    return digest


def frozen_registry(dataset_dir: Path, digest: str) -> Registry:
    path = dataset_dir / REGISTRY_DIR / f"registry.{digest}.yaml"
    if not path.is_file():
        raise NotFound(f"frozen registry {path.name} is missing from {dataset_dir}")
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != digest:  # written as the canonical YAML its hash is taken of
        raise IntegrityError(f"frozen registry {path.name} does not match its hash")
    return parse_registry(raw, source=str(path))


def read_base(dataset_dir: Path, mark: Watermark, *, columns: list[str] | None = None) -> BaseProjection:
    """Load `records.parquet` as a projection (its watermark already checked by the caller).

    With `columns`, only those columns are read (the row count is kept): a partial projection for
    commands that need no more, which the caller must not encode or fold events into.
    """
    table = read_parquet(dataset_dir / RECORDS_FILE, columns)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if table.num_columns:  # on a table without columns, replace_schema_metadata would lose the row count
        table = table.replace_schema_metadata(None)
    return BaseProjection(
        table=table,
        created_at=meta.get("usr:dataset_created_at", ""),
        registry_hash=meta.get("usr:registry_hash"),
        watermark=mark,
    )


class _LayoutDoc(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int
    offset: int
    hash: str
    live: dict[str, list[PartInfo]]
    archived: list[PartInfo]
    folded: dict[str, int] = {}


_layout_encoder = msgspec.json.Encoder(order="sorted")
_layout_decoder = msgspec.json.Decoder(_LayoutDoc)


def encode_layout(layout: DerivedLayout, mark: Watermark) -> bytes:
    """`_derived/layout.json`: which overlay parts exist, stamped with the event it reflects."""
    doc = _LayoutDoc(
        seq=mark.seq,
        offset=mark.offset,
        hash=mark.hash,
        live={ns: list(parts) for ns, parts in layout.live.items()},
        archived=list(layout.archived),
        folded=dict(layout.folded),
    )
    return _layout_encoder.encode(doc) + b"\n"


def read_layout(path: Path) -> tuple[DerivedLayout, Watermark] | None:
    """The stored overlay layout and its watermark, or None when absent or unreadable."""
    try:
        doc = _layout_decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    layout = DerivedLayout(
        live={ns: tuple(parts) for ns, parts in doc.live.items()}, archived=tuple(doc.archived), folded=doc.folded
    )
    return layout, Watermark(seq=doc.seq, offset=doc.offset, hash=doc.hash)


def publish(path: Path, data: bytes | memoryview | Sequence[Part]) -> None:
    write_atomic(path, data, point=path.name)
