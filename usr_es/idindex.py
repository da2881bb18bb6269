"""The id index: where each id sits in records.parquet, so `get` reads one row group instead of every id.

A cache of the base projection, like records.parquet itself: `_index/id.arrow` is an Arrow IPC file
holding one `(key, row)` pair per base row, sorted by key (then row). `key` is the id's first 8 UTF-8
bytes read as a little-endian uint64 (ids are sha1 hex, so keys are spread evenly); `row` is the
row's position in records.parquet. Keys may collide, so a lookup reads the candidate rows and keeps
those whose id is the one asked for. The file is stamped with the base watermark it was built from;
a missing, unreadable or differently stamped index is ignored (lookups then scan the ids), and the
next write or `usr rebuild` writes it again. Built from ids alone: no clock, no randomness.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
import pyarrow as pa

from .alphabet import KEY_BYTES, SortedKeys, key_of, keys_of, sorted_keys
from .codec import watermark_metadata, watermark_of
from .errors import IntegrityError
from .names import ID, INDEX_DIR, INDEX_MANIFEST
from .projectors import Payload, Watermark
from .storage import SortedRuns

_MAX_ROWS = (1 << 32) - 1  # rows are uint32
#: Ids `IdIndex.pairs` hashes at once (bounds the copies a join makes).
_ASKED_AT_ONCE = 1 << 20
_SCHEMA = pa.schema([pa.field("key", pa.uint64(), nullable=False), pa.field("row", pa.uint32(), nullable=False)])


def usable() -> bool:
    """Keys are little-endian byte readings; a big-endian host neither writes nor reads the index."""
    return sys.byteorder == "little"


def run_rows(id_chunks: Iterable[pa.Array | pa.ChunkedArray], start: int) -> tuple[pa.RecordBatch | None, int]:
    """The index rows of ids (given a chunk at a time) that sit at base rows `start`, `start + 1`, ..., and
    how many ids there were (rows None: they cannot be keyed). Only the 8-byte keys of each chunk are kept."""
    keys: list[pa.Array] = []
    count = 0
    keyed = usable()
    for ids in id_chunks:
        count += len(ids)
        found = keys_of(ids) if keyed else None
        if found is None:  # an id that cannot be keyed: no run (the rest are only counted)
            keyed, keys = False, []
        else:
            keys.append(found)
    if not keyed or not fits(start, count):
        return None, count
    ordered = sorted_keys(pa.chunked_array(keys, pa.uint64()))  # stable: equal keys keep row order
    del keys
    return sorted_run(ordered, start), count


def sorted_run(ordered: SortedKeys, start: int) -> pa.RecordBatch:
    """The index rows of keys sorted by `alphabet.sorted_keys` whose ids sit at base rows `start`, `start + 1`,
    ... (the positions, shifted; they fit in uint32: the caller checked `fits`)."""
    import pyarrow.compute as pc

    offsets = ordered.positions
    rows = pc.add(offsets, pa.scalar(start, pa.uint32())) if start else offsets
    return pa.record_batch([ordered.keys, rows], schema=_SCHEMA)


def fits(start: int, count: int) -> bool:
    """Whether base rows `start` .. `start + count` can be index rows (uint32), on a host that keys ids."""
    return usable() and start + count <= _MAX_ROWS


def merged_rows(first: pa.RecordBatch, second: pa.RecordBatch) -> pa.RecordBatch:
    """One run of two: `second`'s rows all follow `first`'s, so a stable sort by key keeps (key, row) order."""
    import pyarrow.compute as pc

    both = pa.Table.from_batches([first, second], schema=_SCHEMA).combine_chunks()
    order = pc.sort_indices(both.column("key"))
    return both.take(order).to_batches()[0] if both.num_rows else _SCHEMA.empty_table().to_batches()[0]


@dataclass(frozen=True)
class Run:
    """One sorted run of the index: the keys of base rows `start`..`end` (exclusive), written by the base
    event at `mark` (docs/adr/0013)."""

    start: int
    end: int
    mark: Watermark

    @property
    def file(self) -> str:
        return f"{INDEX_DIR}/id-{self.start:010d}-{self.end:010d}.arrow"

    @property
    def rows(self) -> int:
        return self.end - self.start


def merge_due(runs: list[Run]) -> bool:
    """Whether the last two runs merge (after a run was added, while this holds): the one before the
    last holds at most twice the last's rows, so there are O(log n) runs and each key is merged O(log n)
    times."""
    return len(runs) >= 2 and runs[-2].rows <= 2 * runs[-1].rows


class _ManifestDoc(msgspec.Struct, frozen=True):
    seq: int
    offset: int
    hash: str
    rows: int
    keyed: bool
    runs: list[tuple[int, int, int, int, str]]  # start, end, and the watermark of the event that wrote it


_manifest_decoder = msgspec.json.Decoder(_ManifestDoc)


def encode_manifest(mark: Watermark, rows: int, keyed: bool, runs: list[Run]) -> bytes:
    """`_index/id.json`: the runs that make the index of the base at `mark` (`rows` rows)."""
    doc = _ManifestDoc(
        seq=mark.seq,
        offset=mark.offset,
        hash=mark.hash,
        rows=rows,
        keyed=keyed,
        runs=[(r.start, r.end, r.mark.seq, r.mark.offset, r.mark.hash) for r in runs],
    )
    return msgspec.json.encode(doc) + b"\n"


@dataclass(frozen=True)
class Manifest:
    mark: Watermark
    rows: int
    keyed: bool
    runs: list[Run]


def read_manifest(path: Path) -> Manifest | None:
    """The stored manifest (None: absent or unreadable)."""
    try:
        doc = _manifest_decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    runs = [Run(start, end, Watermark(seq, offset, digest)) for start, end, seq, offset, digest in doc.runs]
    return Manifest(Watermark(doc.seq, doc.offset, doc.hash), doc.rows, doc.keyed, runs)


def manifest_stamp(path: Path) -> Watermark | None:
    found = read_manifest(path)
    return found.mark if found is not None else None


def read_run(dataset_dir: Path, run: Run) -> pa.RecordBatch | None:
    """A stored run's rows, memory-mapped (None: missing, unreadable or not the run the manifest names)."""
    return read_stamped(dataset_dir / run.file, run.mark, _SCHEMA, run.rows)


def read_stamped(path: Path, mark: Watermark, schema: pa.Schema, rows: int) -> pa.RecordBatch | None:
    """The one record batch of an Arrow file stamped `mark` with `schema` and `rows` rows, memory-mapped
    (None: missing, unreadable, or another file)."""
    opened = _read_file(path)
    if opened is None or opened[0] != mark:
        return None
    reader = opened[1]
    try:
        if reader.num_record_batches != 1 or not reader.schema.remove_metadata().equals(schema):
            return None
        batch = reader.get_batch(0)
    except (OSError, pa.ArrowInvalid):
        return None
    return batch if batch.num_rows == rows else None


def encode(rows: pa.RecordBatch, mark: Watermark, schema: pa.Schema = _SCHEMA) -> memoryview:
    """The bytes of one run file for `rows` (an id index run by default), stamped with the event that wrote it."""
    stamped = schema.with_metadata(watermark_metadata(mark))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, stamped) as writer:
        writer.write_batch(pa.record_batch(rows.columns, schema=stamped))
    return memoryview(sink.getvalue()).cast("B")  # Arrow buffers export signed bytes ('b')


def _read_file(path: Path) -> tuple[Watermark, pa.ipc.RecordBatchFileReader] | None:
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
    except (OSError, pa.ArrowInvalid):
        return None
    stamp = watermark_of(reader.schema.metadata)
    return (stamp, reader) if stamp is not None else None


def stamp_at(path: Path) -> Watermark | None:
    """The watermark a run file was written at (None: missing or unreadable)."""
    opened = _read_file(path)
    return opened[0] if opened is not None else None


@dataclass
class IdIndex:
    """An opened index: candidate base rows per id (memory-mapped runs; one binary search per id and run)."""

    runs: list[tuple[memoryview, memoryview]]  # (uint64 keys sorted, uint32 rows aligned), one per run
    num_rows: int  # of the base

    @classmethod
    def open(cls, dataset_dir: Path, mark: Watermark, num_rows: int) -> IdIndex | None:
        """The index of the base stamped `mark` with `num_rows` rows (None: absent, unreadable or another base's)."""
        if not usable():
            return None
        manifest = read_manifest(dataset_dir / INDEX_MANIFEST)
        if manifest is None or manifest.mark != mark or manifest.rows != num_rows or not manifest.keyed:
            return None
        return cls.of([read_run(dataset_dir, run) for run in manifest.runs], num_rows)

    @classmethod
    def of(cls, batches: list[pa.RecordBatch | None], num_rows: int) -> IdIndex | None:
        if any(b is None for b in batches):
            return None
        runs = [(typed_values(b.column(0), "Q"), typed_values(b.column(1), "I")) for b in batches if b is not None]
        return cls(runs=runs, num_rows=num_rows)

    def candidates(self, record_id: str) -> list[int]:
        """Base rows whose id may be `record_id` (every row that holds it is among them; a row number past
        the base, possible only in a damaged file that `verify` reports, is left out)."""
        key = key_of(record_id)
        if key is None:
            return []
        out = []
        for keys, rows in self.runs:
            at = bisect_left(keys, key)
            while at < len(keys) and keys[at] == key:
                if rows[at] < self.num_rows:
                    out.append(rows[at])
                at += 1
        return sorted(out)

    def pairs(self, ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
        """Every (position in `ids`, base row) whose keys are equal, vectorized: each run's keys joined with
        the asked ones (the asked keys hashed, `_ASKED_AT_ONCE` at a time; the run read where it is mapped)
        instead of a binary search per id (what `candidates` gives, for many ids at once). Both int64, in
        no set order."""
        import pyarrow.compute as pc

        runs = [
            pa.table(
                {
                    "key": pa.Array.from_buffers(pa.uint64(), len(stored), [None, pa.py_buffer(stored)]),
                    "row": pa.Array.from_buffers(pa.uint32(), len(stored_rows), [None, pa.py_buffer(stored_rows)]),
                }
            )
            for stored, stored_rows in self.runs
        ]
        positions: list[pa.Array] = []
        rows: list[pa.Array] = []
        for start in range(0, len(ids), _ASKED_AT_ONCE):
            raw = ids.slice(start, _ASKED_AT_ONCE)
            raw = (raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw).cast(pa.binary())
            keyed = pc.indices_nonzero(pc.greater_equal(pc.binary_length(raw), KEY_BYTES)).cast(pa.int64())
            keys = pc.binary_slice(pc.take(raw, keyed), 0, KEY_BYTES).cast(pa.binary(KEY_BYTES)).view(pa.uint64())
            del raw
            wanted = pa.table({"key": keys, "position": pc.add(keyed, pa.scalar(start, pa.int64()))})
            for run in runs:
                joined = run.join(wanted, "key", join_type="inner")
                positions.append(joined.column("position").combine_chunks())
                rows.append(joined.column("row").combine_chunks().cast(pa.int64()))
        position = pa.chunked_array(positions, pa.int64()).combine_chunks()
        row = pa.chunked_array(rows, pa.int64()).combine_chunks()
        inside = pc.less(row, pa.scalar(self.num_rows, pa.int64()))  # a damaged run's rows past the base
        return pc.filter(position, inside), pc.filter(row, inside)


def typed_values(array: pa.Array, fmt: Literal["Q", "I"]) -> memoryview:
    """The values of a null-free fixed-width array as a typed memoryview (no copy)."""
    width = array.type.bit_width // 8
    data = memoryview(array.buffers()[1]).cast("B")
    return data[array.offset * width : (array.offset + len(array)) * width].cast(fmt)


#: The base row a spilled overlay row belongs to (a scratch column of `InBaseOrder`'s runs).
BASE_ROW = "__base_row"

#: Given ids, every candidate (position in the ids, base row) pair: int64 arrays, in no set order.
Locate = Callable[[pa.Array | pa.ChunkedArray], tuple[pa.Array, pa.Array]]


class InBaseOrder:
    """The rows of a table keyed by `id` (a namespace's overlay rows), given for runs of base rows in base
    order without holding them (docs/adr/0014): each batch of rows is paired with the base rows of its ids
    (`locate`), sorted by base row and spilled to `SortedRuns`; a pass over the base then takes each run of
    base rows' own rows back, confirmed against their ids (index keys may collide)."""

    def __init__(self, runs: SortedRuns, schema: pa.Schema) -> None:
        self._runs = runs
        self._schema = schema

    @classmethod
    def spill(cls, rows: Payload, locate: Locate, runs: SortedRuns) -> InBaseOrder:
        """Spill `rows` (`id` first, then its other columns) in base order, `_ASKED_AT_ONCE` rows at a time."""
        import pyarrow.compute as pc

        from .codec import regrouped
        from .prefetch import prefetched
        from .projectors import payload_batches

        names = [ID, *(name for name in rows.schema.names if name != ID)]

        def placed(batch: pa.RecordBatch) -> pa.Table:
            positions, base_rows = locate(batch.column(ID))
            order = pc.sort_indices(base_rows)
            return batch.take(pc.take(positions, order)).append_column(BASE_ROW, pc.take(base_rows, order))

        # The rows are read (decoded) on a second core, and two batches are located and sorted at once (Arrow
        # releases the GIL); runs are written here, in any order (a run is read by key, not by position).
        with ThreadPoolExecutor(2, thread_name_prefix="usr-spill") as pool:
            pending: deque[Future[pa.Table]] = deque()
            for batch in regrouped(prefetched(payload_batches(rows, names)), _ASKED_AT_ONCE):
                pending.append(pool.submit(placed, batch))
                del batch
                if len(pending) > 1:
                    runs.write(pending.popleft().result())
            while pending:
                runs.write(pending.popleft().result())
        return cls(runs, pa.schema([rows.schema.field(name) for name in names]))

    def rows(self, offset: int, n: int, ids: pa.Array | pa.ChunkedArray) -> pa.Table:
        """The rows for base rows `offset` .. `offset + n` (`ids`: theirs), in base order; asked in order."""
        import pyarrow.compute as pc

        piece = self._runs.between(offset, offset + n)
        if piece is None:
            return self._schema.empty_table()
        local = pc.subtract(piece.column(BASE_ROW), pa.scalar(offset, pa.int64()))
        piece = piece.filter(pc.equal(pc.take(ids, local), piece.column(ID)))
        at = piece.column(BASE_ROW)
        if len(at) > 1 and pc.any(pc.equal(at.slice(1), at.slice(0, len(at) - 1))).as_py():
            raise IntegrityError("overlay rows name one id twice")
        return piece.drop_columns([BASE_ROW])


def looked_up(base_ids: pa.Array | pa.ChunkedArray) -> Locate:
    """`Locate` by one hash lookup in every base id (the base's ids held: a base without an id index)."""

    def locate(ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
        import pyarrow.compute as pc

        at = pc.index_in(ids, value_set=base_ids)
        found = pc.is_valid(at)
        positions = pc.indices_nonzero(found).cast(pa.int64())
        rows = pc.filter(at, found).cast(pa.int64())
        return positions, rows.combine_chunks() if isinstance(rows, pa.ChunkedArray) else rows

    return locate
