"""Pure projectors: events (+ payload tables) -> the `records.parquet` table and its bytes.

Nothing here reads the clock, randomness, the environment, the live registry or any file:
the same events and payloads always give the same table and the same Parquet bytes (for one
pyarrow version; see docs/adr/0004). Row order is log order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from .alphabet import ID_HASH_SPEC, SCHEMA_VERSION
from .events import GENESIS_HASH, DatasetInitialized, Event, SequencesImported

PROJECTOR_VERSION = "1"
HASH_PLACEHOLDER = "~usr_es~watermark~hash~pending~~"  # same length as an xxh3-128 hex digest
assert len(HASH_PLACEHOLDER) == 32

BASE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("bio_type", pa.string()),
        pa.field("sequence", pa.string()),
        pa.field("alphabet", pa.string()),
        pa.field("length", pa.int32()),
        pa.field("source", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
#: The columns a payload of imported rows carries; the rest come from the event.
PAYLOAD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("bio_type", pa.string()),
        pa.field("sequence", pa.string()),
        pa.field("alphabet", pa.string()),
    ]
)

# Fixed writer options: part of the determinism contract (changing them bumps PROJECTOR_VERSION).
_ROW_GROUP_ROWS = 1 << 17
_DICTIONARY_COLUMNS = ["bio_type", "alphabet", "source"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_micros(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 UTC timestamp string."""
    moment = datetime.fromisoformat(text)
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Watermark:
    """The log position a projection reflects: the seq, byte offset and hash of that line."""

    seq: int = 0
    offset: int = 0
    hash: str = GENESIS_HASH


@dataclass(frozen=True)
class BaseProjection:
    """The state of `records.parquet`: the table plus the metadata stamped into the file."""

    table: pa.Table
    created_at: str
    registry_hash: str | None
    watermark: Watermark

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


def initial_projection(event: DatasetInitialized, registry_hash: str | None, mark: Watermark) -> BaseProjection:
    return BaseProjection(BASE_SCHEMA.empty_table(), event.created_at, registry_hash, mark)


def imported_rows(payload: pa.Table, event: SequencesImported) -> pa.Table:
    """Base rows for a `SequencesImported` payload: length from the sequence, source/created_at."""
    import pyarrow.compute as pc  # not needed by readers; keeps their start-up short

    n = payload.num_rows
    sequence = payload.column("sequence")
    return pa.table(
        [
            payload.column("id"),
            payload.column("bio_type"),
            sequence,
            payload.column("alphabet"),
            pc.cast(pc.utf8_length(sequence), pa.int32()),
            pa.repeat(pa.scalar(event.source, pa.string()), n),
            pa.repeat(pa.scalar(timestamp_micros(event.created_at), pa.timestamp("us", tz="UTC")), n),
        ],
        schema=BASE_SCHEMA,
    )


def apply_event(
    base: BaseProjection | None,
    event: Event,
    payload: pa.Table | None,
    *,
    registry_hash: str | None,
    mark: Watermark,
) -> BaseProjection | None:
    """Fold one event into the base projection. Events that do not touch the base return it as is."""
    match event:
        case DatasetInitialized():
            return initial_projection(event, registry_hash, mark)
        case SequencesImported():
            if base is None:
                raise ValueError("sequences imported before the dataset was initialized")
            table = base.table
            if payload is not None and payload.num_rows:
                table = pa.concat_tables([table, imported_rows(payload, event)])
            return replace(base, table=table, registry_hash=registry_hash, watermark=mark)
    return base


def base_metadata(base: BaseProjection) -> dict[str, str]:
    """Schema-level key/value metadata of `records.parquet` (the USR keys plus our watermark)."""
    meta = {
        "usr:schema_version": SCHEMA_VERSION,
        "usr:id_hash": ID_HASH_SPEC,
        "usr:dataset_created_at": base.created_at,
        "usr_es:seq": str(base.watermark.seq),
        "usr_es:offset": str(base.watermark.offset),
        "usr_es:projector": PROJECTOR_VERSION,
    }
    if base.registry_hash is not None:
        meta["usr:registry_hash"] = base.registry_hash
    return meta


def encode_parquet(table: pa.Table, metadata: dict[str, str], watermark_hash: str) -> memoryview:
    """Serialize `table` with the fixed writer options; returns a view of the file bytes.

    Row groups are written one slice at a time, each slice made contiguous first, so the
    bytes do not depend on how the input happens to be chunked (an incremental fold and a full
    replay give the same file) and only one row group is ever copied.

    `usr_es:hash` goes only into the file-level key/value metadata (not the embedded Arrow
    schema), so a file written with `HASH_PLACEHOLDER` differs from the final one only in
    those 32 bytes: `patch_watermark_hash` swaps them once the log line's hash is known.
    """
    schema = table.schema.with_metadata(metadata)
    sink = pa.BufferOutputStream()
    writer = pq.ParquetWriter(
        sink,
        schema,
        compression="zstd",
        compression_level=1,
        use_dictionary=[c for c in _DICTIONARY_COLUMNS if c in table.column_names],
        write_statistics=True,
        version="2.6",
        data_page_version="1.0",
    )
    try:
        for start in range(0, table.num_rows, _ROW_GROUP_ROWS):
            piece = table.slice(start, _ROW_GROUP_ROWS).combine_chunks().replace_schema_metadata(metadata)
            writer.write_table(piece, row_group_size=_ROW_GROUP_ROWS)
        writer.add_key_value_metadata({"usr_es:hash": watermark_hash})
    finally:
        writer.close()
    return memoryview(sink.getvalue()).cast("B")  # Arrow buffers export signed bytes ('b')


def encode_base(base: BaseProjection, *, pending_hash: bool = False) -> memoryview:
    """Bytes of `records.parquet` for `base` (with the placeholder hash when `pending_hash`)."""
    mark_hash = HASH_PLACEHOLDER if pending_hash else base.watermark.hash
    return encode_parquet(base.table, base_metadata(base), mark_hash)


def patch_watermark_hash(data: memoryview, real_hash: str) -> list[bytes | memoryview]:
    """Swap the placeholder hash in the Parquet footer for `real_hash` (same length).

    Returns the file as parts (the untouched body as a view, then the patched footer) so the
    body is not copied. Parquet has no footer checksum, so the result is byte-identical to
    `encode_parquet(..., real_hash)`; a test proves it.
    """
    footer_len = int.from_bytes(bytes(data[-8:-4]), "little")
    start = len(data) - 8 - footer_len
    footer = bytes(data[start:])
    token = HASH_PLACEHOLDER.encode()
    if footer.count(token) != 1 or len(real_hash) != len(HASH_PLACEHOLDER):
        raise ValueError("watermark placeholder not found exactly once in the Parquet footer")
    return [data[:start], footer.replace(token, real_hash.encode())]
