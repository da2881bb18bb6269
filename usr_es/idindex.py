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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
import pyarrow as pa

from .alphabet import KEY_BYTES, key_of, keys_of
from .codec import watermark_metadata, watermark_of
from .names import INDEX_DIR, INDEX_MANIFEST
from .projectors import Watermark

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
    import pyarrow.compute as pc

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
    if not keyed or start + count > _MAX_ROWS:
        return None, count
    joined = pa.chunked_array(keys, pa.uint64()).combine_chunks()
    del keys
    order = pc.sort_indices(joined)  # stable: equal keys keep row order
    ordered = joined.take(order)
    del joined
    offsets = order.cast(pa.uint32())  # rows fit in uint32 (checked above); the uint64 order is let go
    del order
    rows = pc.add(offsets, pa.scalar(start, pa.uint32())) if start else offsets
    return pa.record_batch([ordered, rows], schema=_SCHEMA), count


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
    opened = _read_file(dataset_dir / run.file)
    if opened is None or opened[0] != run.mark:
        return None
    reader = opened[1]
    try:
        if reader.num_record_batches != 1 or not reader.schema.remove_metadata().equals(_SCHEMA):
            return None
        batch = reader.get_batch(0)
    except (OSError, pa.ArrowInvalid):
        return None
    return batch if batch.num_rows == run.rows else None


def encode(rows: pa.RecordBatch, mark: Watermark) -> memoryview:
    """The bytes of one run file for `rows` (from `run_rows`/`merged_rows`), stamped with the event that wrote it."""
    schema = _SCHEMA.with_metadata(watermark_metadata(mark))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.record_batch(rows.columns, schema=schema))
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
        runs = [(_values(b.column(0), "Q"), _values(b.column(1), "I")) for b in batches if b is not None]
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


def _values(array: pa.Array, fmt: Literal["Q", "I"]) -> memoryview:
    """The values of a null-free fixed-width array as a typed memoryview (no copy)."""
    width = array.type.bit_width // 8
    data = memoryview(array.buffers()[1]).cast("B")
    return data[array.offset * width : (array.offset + len(array)) * width].cast(fmt)


@dataclass
class Aligned:
    """Which rows of a table keyed by `id` (a merged overlay namespace) belong to each run of base rows,
    found once for the whole base, so a pass over the base in order takes each batch's rows cheaply.

    `pairs`: the candidate (base row, table row) pairs from the id index, sorted by base row (a batch's are
    confirmed against its own ids: keys may collide), or `at`: each base row's row in `table` (null:
    none), or neither: the table's rows are the base rows in base order."""

    table: pa.Table
    pairs: tuple[pa.Array, pa.Array] | None = None
    at: pa.Array | None = None
    _next: int = 0  # the first pair not yet given (batches come in base order)

    def rows(self, offset: int, n: int, ids: pa.Array | pa.ChunkedArray) -> pa.Table:
        """The rows of `table` for base rows `offset` .. `offset + n` (`ids`: theirs), in base order."""
        import pyarrow.compute as pc

        if self.pairs is not None:
            base_rows, table_rows = self.pairs
            end = bisect_left(_Values(base_rows), offset + n, lo=self._next)
            here, mine = base_rows.slice(self._next, end - self._next), table_rows.slice(self._next, end - self._next)
            self._next = end
            local = pc.subtract(here, pa.scalar(offset, pa.int64()))
            same = pc.equal(pc.take(ids, local), pc.take(self.table.column("id"), mine))
            return self.table.take(pc.filter(mine, same))
        if self.at is not None:
            return self.table.take(self.at.slice(offset, n).drop_null())
        return self.table.slice(offset, n)


class _Values:
    """An int64 array as the sequence `bisect` searches."""

    def __init__(self, values: pa.Array) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, at: int) -> int:
        return int(self._values[at].as_py())


def aligned(
    tables: dict[str, pa.Table], index: IdIndex | None, base_ids: Callable[[], pa.ChunkedArray]
) -> dict[str, Aligned]:
    """How each table's rows line up with the base's (see `Aligned`): through `index` when the base has
    one (its keys joined with the table's ids: no hash table of every id), else one hash lookup of every
    base id (`base_ids()`, read once) per table. A table holding the base's ids in base order needs neither."""
    import pyarrow.compute as pc

    out: dict[str, Aligned] = {}
    ids: pa.ChunkedArray | None = None
    for name, chunked in tables.items():
        table = chunked.combine_chunks()  # taken from batch by batch: a chunked take would join it per take
        del chunked
        if index is not None:
            table_rows, base_rows = index.pairs(table.column("id"))
            order = pc.sort_indices(base_rows)
            out[name] = Aligned(table, pairs=(pc.take(base_rows, order), pc.take(table_rows, order)))
            continue
        if ids is None:
            ids = base_ids()
        own = table.column("id")
        same = len(own) == len(ids) and own.equals(ids)
        out[name] = Aligned(table) if same else Aligned(table, at=pc.index_in(ids, value_set=own))
    return out
