"""The Parquet codec of projection files: fixed writer options, the metadata they carry, the watermark stamp.

Part of the determinism contract (docs/adr/0004): the same table and watermark always encode to the same
bytes for one pyarrow version; changing an option here bumps `PROJECTOR_VERSION`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .alphabet import ID_HASH_SPEC, SCHEMA_VERSION
from .projectors import PROJECTOR_VERSION, BaseProjection, PartInfo, Watermark

HASH_PLACEHOLDER = "~usr_es~watermark~hash~pending~~"  # same length as an xxh3-128 hex digest


# Fixed writer options: part of the determinism contract (changing them bumps PROJECTOR_VERSION).
_ROW_GROUP_ROWS = 1 << 15


_DICTIONARY_COLUMNS = ["bio_type", "alphabet", "source"]


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


def canonical_type(dtype: pa.DataType) -> pa.DataType:
    """`dtype` with default child field names (`item`), so a table read back from Parquet (whose
    lists come back with `element` children) encodes to the same bytes as the original."""
    if pa.types.is_fixed_size_list(dtype):
        return pa.list_(canonical_type(dtype.value_type), dtype.list_size)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pa.list_(canonical_type(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, canonical_type(f.type), f.nullable) for f in dtype])
    return dtype


def canonical_table(table: pa.Table) -> pa.Table:
    schema = pa.schema([pa.field(f.name, canonical_type(f.type), f.nullable) for f in table.schema])
    # Arrow type equality ignores list child names, so compare the spelled-out schema instead.
    return table if str(schema) == str(table.schema) else table.cast(schema)


def encode_parquet(
    table: pa.Table, metadata: dict[str, str], watermark_hash: str, *, row_group_rows: int = 0
) -> memoryview:
    """Serialize `table` with the fixed writer options; returns a view of the file bytes.

    Row groups are written one slice at a time, each slice made contiguous first, so the
    bytes do not depend on how the input happens to be chunked (an incremental fold and a full
    replay give the same file) and only one row group is ever copied.

    `usr_es:hash` goes only into the file-level key/value metadata (not the embedded Arrow
    schema), so a file written with `HASH_PLACEHOLDER` differs from the final one only in
    those 32 bytes: `patch_watermark_hash` swaps them once the log line's hash is known.

    `row_group_rows` (default `_ROW_GROUP_ROWS`): overlay parts use small groups, which their id
    statistics let a lookup skip.
    """
    rows_per_group = row_group_rows or _ROW_GROUP_ROWS
    table = canonical_table(table.replace_schema_metadata(None))
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
        for start in range(0, table.num_rows, rows_per_group):
            piece = table.slice(start, rows_per_group).combine_chunks().replace_schema_metadata(metadata)
            writer.write_table(piece, row_group_size=rows_per_group)
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


def part_metadata(info: PartInfo) -> dict[str, str]:
    meta = {
        "usr:overlay_namespace": info.namespace,
        "usr:overlay_key": "id",
        "usr:overlay_created_at": info.created_at,
        "usr_es:seq": str(info.mark.seq),
        "usr_es:offset": str(info.mark.offset),
        "usr_es:projector": PROJECTOR_VERSION,
    }
    if info.registry_hash is not None:
        meta["usr:registry_hash"] = info.registry_hash
    if info.contract_hash is not None:
        meta["usr:namespace_contract_hash"] = info.contract_hash
    return meta


#: Rows per row group of an overlay part (parts are sorted by id: a lookup reads one small group per id).
PART_ROW_GROUP_ROWS = 16_384


def encode_part(info: PartInfo, table: pa.Table) -> memoryview:
    return encode_parquet(table, part_metadata(info), info.mark.hash, row_group_rows=PART_ROW_GROUP_ROWS)


#: The `created_by` of every Parquet file this pyarrow writes: byte identity holds per pyarrow version.
PARQUET_WRITER = f"parquet-cpp-arrow version {pa.__version__}"


def watermark_of(meta: Mapping[bytes, bytes] | None) -> Watermark | None:
    """The watermark in a projection's key/value metadata (`usr_es:seq/offset/hash`), or None -- also when
    another projector version wrote it: a stale cache is never trusted, so the next write re-encodes it."""
    if meta is None or meta.get(b"usr_es:projector") != PROJECTOR_VERSION.encode():
        return None
    try:
        return Watermark(
            seq=int(meta[b"usr_es:seq"]), offset=int(meta[b"usr_es:offset"]), hash=meta[b"usr_es:hash"].decode()
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def watermark_metadata(mark: Watermark) -> dict[str, str]:
    """The key/value metadata `watermark_of` reads back (non-Parquet projections, e.g. the id index)."""
    return {
        "usr_es:seq": str(mark.seq),
        "usr_es:offset": str(mark.offset),
        "usr_es:hash": mark.hash,
        "usr_es:projector": PROJECTOR_VERSION,
    }


def read_watermark(path: object) -> Watermark | None:
    """The watermark stamped into a Parquet projection file, or None when the file is absent, unreadable
    or written by another pyarrow or projector version (see `foreign_writer`)."""
    try:
        meta = pq.read_metadata(path)
        ours = meta.created_by == PARQUET_WRITER
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError):  # a damaged footer: `created_by` may not decode
        return None
    return watermark_of(meta.metadata) if ours else None


def foreign_writer(path: Path) -> str | None:
    """What wrote the projection file at `path`, when it was another projector version or (Parquet)
    another pyarrow version than this one; None when it is ours, absent or unreadable."""
    try:
        if path.suffix == ".parquet":
            meta = pq.read_metadata(path)
            created_by, kv = meta.created_by, meta.metadata or {}
        else:
            with pa.memory_map(str(path)) as source:
                kv = pa.ipc.open_file(source).schema.metadata or {}
            created_by = PARQUET_WRITER
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError):
        return None
    projector = kv.get(b"usr_es:projector", b"").decode(errors="replace")
    if projector == PROJECTOR_VERSION and created_by == PARQUET_WRITER:
        return None
    return f"projector version {projector or '(none)'}, {created_by or 'an unknown writer'}"
