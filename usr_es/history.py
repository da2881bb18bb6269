"""The history index: which events touched each record, so `usr history`, `blame` and `diff` read only those
events' rows instead of replaying the log (docs/adr/0020).

A cache of the log, like every projection: `_history/h-<start>-<end>.arrow` are Arrow IPC runs of
`(key, seq, row)` entries sorted by key (then seq, row), one entry per record an event names: `key` is the
record id's 8-byte key (as in the id index; keys may collide, so a reader confirms the id), `seq` the event,
`row` the record's row in the event's payload (or, for ids inline in the event, its position among them).
Events that change the view of many records without naming them (a materialize of namespaces, an overlay
removal) get one entry under `WIDE_KEY`. `_history/history.json` names the runs, the row counts of each
multi-batch payload's record batches (so a reader decompresses only the batch holding a row) and the
watermark of the last event folded. Built from the log alone: no clock, no randomness.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pyarrow as pa

from .alphabet import KEY_BYTES, SortedKeys, keys_of
from .events import (
    Event,
    Materialized,
    OverlayRemoved,
    OverlayWritten,
    RecordsRestored,
    RecordsTombstoned,
    SequencesImported,
    StateCleared,
    StateSet,
)
from .idindex import encode, read_stamped, typed_values
from .names import HISTORY_DIR, HISTORY_MANIFEST
from .projectors import Payload, Watermark
from .storage import StoredRows

SCHEMA = pa.schema(
    [
        pa.field("key", pa.uint64(), nullable=False),
        pa.field("seq", pa.uint32(), nullable=False),
        pa.field("row", pa.uint32(), nullable=False),
    ]
)
#: The key of an event that changes many records' view without naming them (no id keys to 0).
WIDE_KEY = 0
#: Runs merge while the earlier holds at most twice the later's entries, up to this many entries: a run of
#: a large import or attach stays on its own, so keeping the index adds no sort of the whole history.
MERGE_LIMIT = 1 << 20
_MAX = (1 << 32) - 1


def key_for(record_id: str) -> int:
    """The history key of one id: its first 8 UTF-8 bytes as a little-endian uint64 (the id index's key),
    zero-padded when the id is shorter (an adopted dataset's own ids may be)."""
    return int.from_bytes(record_id.encode()[:KEY_BYTES].ljust(KEY_BYTES, b"\0"), "little")


def keys_for(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`key_for` of every id, vectorized."""
    import pyarrow.compute as pc

    found = keys_of(ids)
    if found is not None:
        return found
    raw = ids.cast(pa.binary())
    padded = pc.binary_slice(
        pc.binary_join_element_wise(raw, pa.scalar(b"\0" * KEY_BYTES, pa.binary()), b""), 0, KEY_BYTES
    )
    joined = padded.combine_chunks() if isinstance(padded, pa.ChunkedArray) else padded
    return joined.cast(pa.binary(KEY_BYTES)).view(pa.uint64())


def names_records(event: Event) -> bool:
    """Whether the event names records (its payload's ids, or ids inline) or changes many records' view."""
    return isinstance(
        event,
        (
            SequencesImported,
            OverlayWritten,
            RecordsTombstoned,
            RecordsRestored,
            StateSet,
            StateCleared,
            Materialized,
            OverlayRemoved,
        ),
    )


def is_wide(event: Event) -> bool:
    """An event that may change records it does not name: a materialize of namespaces, an overlay removal."""
    return isinstance(event, OverlayRemoved) or (isinstance(event, Materialized) and bool(event.namespaces))


@dataclass(frozen=True)
class EventEntries:
    """An event's entries, sorted by key, and its payload's batch row counts when it has more than one batch."""

    rows: pa.RecordBatch
    batches: tuple[int, ...] = ()


def entries_of(seq: int, event: Event, payload: Payload | None, ordered: SortedKeys | None = None) -> EventEntries:
    """The entries of one event (an empty batch when it names no record). `ordered`: the payload's id keys
    already sorted (an import's decision sorted them), used when they are all of its rows."""
    import pyarrow.compute as pc

    keys: list[pa.Array] = []
    sizes: list[int] = []
    inline = getattr(event, "ids", None)
    known = (
        payload.batch_rows
        if isinstance(payload, StoredRows)
        else tuple(b.num_rows for b in payload.to_batches())
        if isinstance(payload, pa.Table)
        else None
    )
    if (
        inline is None
        and payload is not None
        and ordered is not None
        and known is not None
        and len(ordered.keys) == payload.num_rows
        and not is_wide(event)
    ):  # the entries `sort_indices` would give (stable, like `sorted_keys`), without reading the ids again
        n = len(ordered.keys)
        rows = pa.record_batch(
            [ordered.keys, pa.repeat(pa.scalar(seq, pa.uint32()), n), ordered.positions], schema=SCHEMA
        )
        return EventEntries(rows, known if len(known) > 1 else ())
    if inline is not None:
        keys.append(keys_for(pa.array(list(inline), pa.string())))
    elif payload is not None and names_records(event):
        for ids in payload_ids(payload):
            keys.append(keys_for(ids))
            sizes.append(len(ids))
    named = pa.chunked_array(keys, pa.uint64()).combine_chunks()
    rows = pa.array(range(len(named)), pa.uint32())
    if is_wide(event):
        named = pa.concat_arrays([pa.array([WIDE_KEY], pa.uint64()), named])
        rows = pa.concat_arrays([pa.array([0], pa.uint32()), rows])
    order = pc.sort_indices(named)
    n = len(named)
    batch = pa.record_batch(
        [named.take(order), pa.repeat(pa.scalar(seq, pa.uint32()), n), rows.take(order)], schema=SCHEMA
    )
    return EventEntries(batch, tuple(sizes) if len(sizes) > 1 else ())


def deferrable(event: Event, payload: Payload | None, ordered: SortedKeys | None) -> tuple[int, tuple[int, ...]] | None:
    """(entries, payload batch sizes) of an event whose entries can be computed later, on another thread,
    because both are known without reading its ids: a payload whose batch sizes the writer kept (a spool,
    or a table in hand) and no keys sorted already. None: compute them now."""
    if getattr(event, "ids", None) is not None or ordered is not None or not names_records(event):
        return None
    if isinstance(payload, StoredRows) and payload.batch_rows is not None:
        sizes = payload.batch_rows
    elif isinstance(payload, pa.Table):
        sizes = tuple(b.num_rows for b in payload.to_batches())
    else:
        return None
    return payload.num_rows + (1 if is_wide(event) else 0), sizes if len(sizes) > 1 else ()


def payload_ids(payload: Payload) -> Iterator[pa.Array]:
    """The `id` column of each record batch of a payload as stored (a table is stored a batch per chunk)."""
    if isinstance(payload, pa.Table):
        for batch in payload.to_batches():
            yield batch.column("id")
        return
    for table in payload.batches(["id"]):
        yield table.column("id").combine_chunks()


@dataclass(frozen=True)
class Run:
    """One sorted run of entries `start`..`end` (exclusive, counted over the whole index), written by the
    event at `mark`."""

    start: int
    end: int
    mark: Watermark

    @property
    def file(self) -> str:
        return f"{HISTORY_DIR}/h-{self.start:012d}-{self.end:012d}.arrow"

    @property
    def entries(self) -> int:
        return self.end - self.start


def merge_due(runs: list[Run]) -> bool:
    """Whether the last two runs merge (see `MERGE_LIMIT`)."""
    if len(runs) < 2:
        return False
    a, b = runs[-2], runs[-1]
    return a.entries <= 2 * b.entries and a.entries + b.entries <= MERGE_LIMIT


def merged(first: pa.RecordBatch, second: pa.RecordBatch) -> pa.RecordBatch:
    """One run of two (`second`'s entries are of later events): a stable sort by key keeps seq order."""
    import pyarrow.compute as pc

    both = pa.Table.from_batches([first, second], schema=SCHEMA).combine_chunks()
    order = pc.sort_indices(both.column("key"))
    return both.take(order).to_batches()[0] if both.num_rows else SCHEMA.empty_table().to_batches()[0]


class _ManifestDoc(msgspec.Struct, frozen=True):
    seq: int
    offset: int
    hash: str
    entries: int
    runs: list[tuple[int, int, int, int, str]]  # start, end, and the watermark of the event that wrote it
    batches: dict[str, list[int]]  # seq -> its payload's batch row counts (payloads of several batches)


_decoder = msgspec.json.Decoder(_ManifestDoc)


@dataclass(frozen=True)
class Manifest:
    mark: Watermark
    entries: int
    runs: list[Run]
    batches: dict[int, tuple[int, ...]]


def encode_manifest(manifest: Manifest) -> bytes:
    doc = _ManifestDoc(
        seq=manifest.mark.seq,
        offset=manifest.mark.offset,
        hash=manifest.mark.hash,
        entries=manifest.entries,
        runs=[(r.start, r.end, r.mark.seq, r.mark.offset, r.mark.hash) for r in manifest.runs],
        batches={str(seq): list(sizes) for seq, sizes in sorted(manifest.batches.items())},
    )
    return msgspec.json.encode(doc) + b"\n"


def read_manifest(path: Path) -> Manifest | None:
    """The stored manifest (None: absent or unreadable)."""
    try:
        doc = _decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    runs = [Run(start, end, Watermark(seq, offset, digest)) for start, end, seq, offset, digest in doc.runs]
    batches = {int(seq): tuple(sizes) for seq, sizes in doc.batches.items()}
    return Manifest(Watermark(doc.seq, doc.offset, doc.hash), doc.entries, runs, batches)


def manifest_stamp(path: Path) -> Watermark | None:
    found = read_manifest(path)
    return found.mark if found is not None else None


def encode_run(rows: pa.RecordBatch, mark: Watermark) -> memoryview:
    """The bytes of one run file, stamped with the event that wrote it."""
    return encode(rows, mark, SCHEMA)


def read_run(dataset_dir: Path, run: Run) -> pa.RecordBatch | None:
    """A stored run's entries, memory-mapped (None: missing, unreadable or not the run the manifest names)."""
    return read_stamped(dataset_dir / run.file, run.mark, SCHEMA, run.entries)


@dataclass(frozen=True)
class Touch:
    """An event that named a record: its seq and the record's row in the event's payload (or among its
    inline ids). `wide` entries name no record (see `is_wide`)."""

    seq: int
    row: int


@dataclass(frozen=True)
class Lookup:
    """An opened index: the events that touched given records (memory-mapped runs)."""

    runs: list[pa.RecordBatch]
    batches: dict[int, tuple[int, ...]]
    mark: Watermark

    @classmethod
    def open(cls, dataset_dir: Path) -> Lookup | None:
        """The stored index (None: absent or damaged: the caller scans the log instead)."""
        manifest = read_manifest(dataset_dir / HISTORY_MANIFEST)
        if manifest is None:
            return None
        runs = [read_run(dataset_dir, run) for run in manifest.runs]
        if any(r is None for r in runs):
            return None
        return cls([r for r in runs if r is not None], manifest.batches, manifest.mark)

    def touches(self, record_id: str) -> list[Touch]:
        """Every entry whose key is the id's (the caller confirms the id), in seq order."""
        return self._of_key(key_for(record_id))

    def wide(self) -> list[int]:
        """The seqs of the wide events."""
        return [t.seq for t in self._of_key(WIDE_KEY)]

    def _of_key(self, key: int) -> list[Touch]:
        out = []
        for run in self.runs:
            keys = typed_values(run.column(0), "Q")
            seqs, rows = typed_values(run.column(1), "I"), typed_values(run.column(2), "I")
            at = bisect_left(keys, key)
            while at < len(keys) and keys[at] == key:
                out.append(Touch(seqs[at], rows[at]))
                at += 1
        return sorted(out, key=lambda t: (t.seq, t.row))

    def touches_of(self, ids: pa.Array) -> pa.Table:
        """(position in `ids`, seq, row) for every entry whose key is one of the ids', vectorized."""
        import pyarrow.compute as pc

        keys = keys_for(ids)
        wanted = pa.table({"key": keys, "position": pa.array(range(len(ids)), pa.int64())})
        found = [pa.Table.from_batches([run]).join(wanted, "key", join_type="inner") for run in self.runs]
        if not found:
            return pa.table(
                {
                    "position": pa.array([], pa.int64()),
                    "seq": pa.array([], pa.uint32()),
                    "row": pa.array([], pa.uint32()),
                }
            )
        joined = pa.concat_tables([t.select(["position", "seq", "row"]) for t in found])
        return joined.take(pc.sort_indices(joined, [("seq", "ascending"), ("row", "ascending")]))


def locate(batches: tuple[int, ...], row: int) -> tuple[int, int]:
    """(batch, row within it) of payload row `row`, given the payload's batch row counts (none: one batch)."""
    at = 0
    for i, size in enumerate(batches):
        if row < at + size:
            return i, row - at
        at += size
    return 0, row
