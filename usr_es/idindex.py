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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa

from .codec import watermark_metadata, watermark_of
from .names import INDEX_FILE
from .projectors import Watermark

KEY_BYTES = 8
_MAX_ROWS = (1 << 32) - 1  # rows are uint32
_SCHEMA = pa.schema([pa.field("key", pa.uint64(), nullable=False), pa.field("row", pa.uint32(), nullable=False)])


def key_of(record_id: str) -> int | None:
    """The index key of one id (None: shorter than KEY_BYTES bytes, so never indexed)."""
    raw = record_id.encode()
    return int.from_bytes(raw[:KEY_BYTES], "little") if len(raw) >= KEY_BYTES else None


def _keys(ids: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """`key_of` of every id, vectorized (None: some id is null or too short to key)."""
    import pyarrow.compute as pc

    raw = ids.cast(pa.binary())
    raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    if raw.null_count or (len(raw) and pc.min(pc.binary_length(raw)).as_py() < KEY_BYTES):
        return None
    fixed = pc.binary_slice(raw, 0, KEY_BYTES).cast(pa.binary(KEY_BYTES))
    return fixed.view(pa.uint64())  # the bytes as stored: little-endian (see `usable`)


def usable() -> bool:
    """Keys are little-endian byte readings; a big-endian host neither writes nor reads the index."""
    return sys.byteorder == "little"


def sorted_rows(ids: pa.Array | pa.ChunkedArray) -> pa.RecordBatch | None:
    """The index rows for a base `id` column (None: it cannot be indexed)."""
    import pyarrow.compute as pc

    if not usable() or len(ids) > _MAX_ROWS:
        return None
    keys = _keys(ids)
    if keys is None:
        return None
    order = pc.sort_indices(keys)  # stable: equal keys keep row order
    return pa.record_batch([keys.take(order), order.cast(pa.uint32())], schema=_SCHEMA)


def encode(rows: pa.RecordBatch, mark: Watermark) -> bytes:
    """The bytes of `_index/id.arrow` for `rows` (from `sorted_rows`), stamped with the base watermark."""
    schema = _SCHEMA.with_metadata(watermark_metadata(mark))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.record_batch(rows.columns, schema=schema))
    return bytes(sink.getvalue())


def _read(dataset_dir: Path) -> tuple[Watermark, pa.ipc.RecordBatchFileReader] | None:
    """The stored index's stamp and a reader over its memory map (None: missing or unreadable)."""
    return _read_file(dataset_dir / INDEX_FILE)


def _read_file(path: Path) -> tuple[Watermark, pa.ipc.RecordBatchFileReader] | None:
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
    except (OSError, pa.ArrowInvalid):
        return None
    stamp = watermark_of(reader.schema.metadata)
    return (stamp, reader) if stamp is not None else None


def stamp_at(path: Path) -> Watermark | None:
    """The base watermark an index file was built for (None: missing or unreadable)."""
    opened = _read_file(path)
    return opened[0] if opened is not None else None


def stamp_of(dataset_dir: Path) -> Watermark | None:
    """The base watermark the stored index was built for (None: missing or unreadable)."""
    opened = _read(dataset_dir)
    return opened[0] if opened is not None else None


@dataclass
class IdIndex:
    """An opened index: candidate base rows per id (memory-mapped; one binary search per id)."""

    keys: memoryview  # uint64, sorted
    rows: memoryview  # uint32, aligned with keys
    num_rows: int  # of the base

    @classmethod
    def open(cls, dataset_dir: Path, mark: Watermark, num_rows: int) -> IdIndex | None:
        """The index of the base stamped `mark` with `num_rows` rows (None: absent, unreadable or another base's)."""
        opened = _read(dataset_dir) if usable() else None
        if opened is None or opened[0] != mark:
            return None
        reader = opened[1]
        try:
            if reader.num_record_batches != 1 or not reader.schema.remove_metadata().equals(_SCHEMA):
                return None
            batch = reader.get_batch(0)
        except (OSError, pa.ArrowInvalid):
            return None
        if batch.num_rows != num_rows:
            return None
        return cls(keys=_values(batch.column(0), "Q"), rows=_values(batch.column(1), "I"), num_rows=num_rows)

    def candidates(self, record_id: str) -> list[int]:
        """Base rows whose id may be `record_id` (every row that holds it is among them; a row number past
        the base, possible only in a damaged file that `verify` reports, is left out)."""
        key = key_of(record_id)
        if key is None:
            return []
        out = []
        at = bisect_left(self.keys, key)
        while at < len(self.keys) and self.keys[at] == key:
            if self.rows[at] < self.num_rows:
                out.append(self.rows[at])
            at += 1
        return out


def _values(array: pa.Array, fmt: Literal["Q", "I"]) -> memoryview:
    """The values of a null-free fixed-width array as a typed memoryview (no copy)."""
    width = array.type.bit_width // 8
    data = memoryview(array.buffers()[1]).cast("B")
    return data[array.offset * width : (array.offset + len(array)) * width].cast(fmt)
