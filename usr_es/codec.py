"""The Parquet codec of projection files: fixed writer options, the metadata they carry, the watermark stamp.

Part of the determinism contract (docs/adr/0004): the same table and watermark always encode to the same
bytes for one pyarrow version; changing an option here bumps `PROJECTOR_VERSION`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .alphabet import ID_HASH_SPEC, SCHEMA_VERSION
from .fileio import Part, Spill, scratch_file
from .projectors import PROJECTOR_VERSION, BaseProjection, PartInfo, Watermark

HASH_PLACEHOLDER = "~usr_es~watermark~hash~pending~~"  # same length as an xxh3-128 hex digest


# Fixed writer options: part of the determinism contract (changing them bumps PROJECTOR_VERSION).
ROW_GROUP_ROWS = 1 << 15


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


def _open_writer(sink: pa.NativeFile, table: pa.Table, metadata: dict[str, str]) -> pq.ParquetWriter:
    """A Parquet writer with the fixed options (the determinism contract) for `table`'s columns."""
    return pq.ParquetWriter(
        sink,
        table.schema.with_metadata(metadata),
        compression="zstd",
        compression_level=1,
        use_dictionary=[c for c in _DICTIONARY_COLUMNS if c in table.column_names],
        write_statistics=True,
        version="2.6",
        data_page_version="1.0",
    )


def _write_rows(
    writer: pq.ParquetWriter, tables: Iterable[pa.Table], metadata: dict[str, str], watermark_hash: str, rows: int
) -> int:
    """The rows of `tables` as row groups of `rows` rows, however they arrive in batches, then the hash;
    returns how many rows were written."""
    written = 0
    for group in regrouped(tables, rows):
        piece = canonical_table(group.replace_schema_metadata(None)).replace_schema_metadata(metadata)
        writer.write_table(piece, row_group_size=rows)
        written += piece.num_rows
    writer.add_key_value_metadata({"usr_es:hash": watermark_hash})
    return written


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

    `row_group_rows` (default `ROW_GROUP_ROWS`): overlay parts use small groups, which their id
    statistics let a lookup skip.
    """
    table = canonical_table(table.replace_schema_metadata(None))
    sink = pa.BufferOutputStream()
    writer = _open_writer(sink, table, metadata)
    try:
        _write_rows(writer, [table], metadata, watermark_hash, row_group_rows or ROW_GROUP_ROWS)
    finally:
        writer.close()
    return memoryview(sink.getvalue()).cast("B")  # Arrow buffers export signed bytes ('b')


#: Parquet files up to this size are read through their own reader; larger ones through `pq.read_table`.
_OWN_READER_BYTES = 64 << 20


#: Parsed footers by their bytes, newest last (`footer_of`).
_FOOTERS: dict[bytes, pq.FileMetaData] = {}
_FOOTERS_KEPT = 4
_FOOTERS_LOCK = threading.Lock()
_MAGIC = b"PAR1"


def footer_of(source: Path | str | pa.NativeFile | pa.Buffer | memoryview | bytes) -> pq.FileMetaData:
    """The footer of a Parquet file (a path, an open file, or the file's last bytes at least as far as its
    footer), parsed once per process for the same footer bytes: a write reads records.parquet's footer
    from several steps, and at 10M rows (315 row groups) each parse took 2.5-4.5 ms. Keyed by the bytes
    themselves, so a file grown or patched in place is parsed again. Read-only: never `append_row_groups`
    to it. A file whose trailer is not Parquet's is left to `pq.read_metadata`, which names the problem."""
    if isinstance(source, (Path, str)):
        with pa.OSFile(str(source)) as opened:
            return footer_of(opened)
    if not isinstance(source, pa.NativeFile):
        source = pa.BufferReader(source if isinstance(source, pa.Buffer) else pa.py_buffer(source))
    size = source.size()
    trailer = source.read_at(8, size - 8) if size >= 8 else b""  # (a chunk's footer has no leading magic)
    length = int.from_bytes(trailer[:4], "little")
    if len(trailer) != 8 or trailer[4:] != _MAGIC or length + 8 > size:
        return pq.read_metadata(source)
    footer = source.read_at(length + 8, size - 8 - length)
    with _FOOTERS_LOCK:
        found = _FOOTERS.pop(footer, None)
    if found is None:
        found = pq.read_metadata(pa.BufferReader(pa.py_buffer(_MAGIC + footer)))
    with _FOOTERS_LOCK:
        _FOOTERS.pop(footer, None)  # another thread may have parsed it meanwhile: newest last either way
        _FOOTERS[footer] = found
        while len(_FOOTERS) > _FOOTERS_KEPT:
            del _FOOTERS[next(iter(_FOOTERS))]
    return found


def read_parquet(source: Path | pa.NativeFile, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file's rows (only `columns`, in that order, when given; the row count kept without any).
    A small file, or no column, is read through its own reader: `pq.read_table` goes through pyarrow's
    dataset layer, whose first use in a process costs ~60 ms, most of a small command's budget. A large one
    is read through it: it streams, and peaked ~200 MB lower on 10M ids (the file reader holds the column
    whole while it decodes it)."""
    size = source.size() if isinstance(source, pa.NativeFile) else Path(source).stat().st_size
    if size > _OWN_READER_BYTES and columns != []:
        return pq.read_table(source if isinstance(source, pa.NativeFile) else str(source), columns=columns)
    if isinstance(source, pa.NativeFile):
        with pq.ParquetFile(source) as reader:
            return reader.read(columns=columns)
    with pa.OSFile(str(source)) as opened, pq.ParquetFile(opened, metadata=footer_of(opened)) as reader:
        return reader.read(columns=columns)  # footer and rows from one open file (it may be replaced)


def _chunk_start(group: pq.RowGroupMetaData) -> int:
    """The file offset of a row group's first byte."""
    first = group.column(0)
    offsets = [first.data_page_offset]
    if first.has_dictionary_page and first.dictionary_page_offset is not None:
        offsets.append(first.dictionary_page_offset)
    return int(min(offsets))


#: Appended row groups up to this size are kept in memory; larger ones stay in a scratch file until published.
SPILL_BYTES = 32 << 20


def regrouped(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The rows of `tables` in order, as contiguous tables of `rows` rows (the last may be shorter): how the
    rows arrive in batches does not change the row groups they are written in."""
    held: list[pa.Table] = []
    count = 0
    for table in tables:
        at = 0
        while at < table.num_rows:
            take = min(rows - count, table.num_rows - at)
            held.append(table.slice(at, take))
            count, at = count + take, at + take
            if count == rows:
                whole, held, count = pa.concat_tables(held).combine_chunks(), [], 0
                yield whole  # the pieces are let go first: only the whole is held while it is used
                del whole
    if count:
        whole, held = pa.concat_tables(held).combine_chunks(), []
        yield whole


def _scratch(folder: Path) -> tuple[int, pa.NativeFile]:
    """An unlinked scratch file in `folder` (in the temp folder when `folder` cannot be written, as a
    verify of a read-only dataset): a descriptor to read it and a sink appending to it; a crash leaves
    nothing behind. A name removed by a writer's temp sweep before the sink opened it is tried again."""
    import errno
    import os

    for _ in range(3):
        fd, path = scratch_file(folder)
        try:
            sink = pa.OSFile(str(path), "a")
        except BaseException:
            os.close(fd)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if os.fstat(sink.fileno()).st_ino == os.fstat(fd).st_ino:
            return fd, sink
        sink.close()
        os.close(fd)
    raise OSError(errno.EAGAIN, f"scratch files in {path.parent} were removed as they were opened")


def append_parquet(
    old: pq.FileMetaData,
    at: int,
    tables: Iterable[pa.Table],
    schema: pa.Schema,
    metadata: dict[str, str],
    watermark_hash: str,
    *,
    scratch: Path,
) -> tuple[list[Part], bytes] | None:
    """The bytes that, written after a Parquet file of ours (`at` bytes long, with footer `old`), make a
    Parquet file holding its row groups and then the rows of `tables` (with `schema`) in new row groups,
    with `metadata` and `watermark_hash` (docs/adr/0013): the new row groups (`encode_groups`), then the
    new footer (`appended_footer`). Nothing of the file changes: its footer stays behind, unreferenced, so
    every earlier size of the file is still a valid file. None when this pyarrow cannot write row groups at
    an offset, or `schema` is not the file's (the caller re-encodes the whole table instead)."""
    if appended_footer(old, Groups(at, 0, [], None), schema, metadata, watermark_hash) is None:
        return None  # another schema: checked before the rows are encoded
    groups = encode_groups(at, tables, schema, scratch=scratch)
    return appended_footer(old, groups, schema, metadata, watermark_hash) if groups is not None else None


@dataclass(frozen=True)
class Groups:
    """Row groups encoded to follow the first `at` bytes of a Parquet file: their bytes (up to
    `SPILL_BYTES` in memory, else a `Spill`) and their metadata (None: no rows)."""

    at: int
    rows: int
    body: list[Part]
    added: pq.FileMetaData | None


def encode_groups(at: int, tables: Iterable[pa.Table], schema: pa.Schema, *, scratch: Path) -> Groups | None:
    """The rows of `tables` (with `schema`) as row groups of `ROW_GROUP_ROWS` rows, with the offsets they
    have after the first `at` bytes of a file (docs/adr/0013); None when this pyarrow cannot write at an offset.

    pyarrow's writer only starts a file at offset 0 and records each column chunk at its stream's
    position. It writes its magic on opening; a scratch file in `scratch` is then extended (sparsely) to `at`
    bytes, so the row groups it writes next carry the offsets they will have. Row groups larger than
    `SPILL_BYTES` stay in that (unlinked) file, as a `Spill`, so rows of any number hold one row group in
    memory. The writer's own footer is left out: the file-level metadata is `appended_footer`'s. A pure
    function of its arguments, wherever it runs (the fold, or a thread while an import is decided).
    """
    import os

    schema = canonical_table(schema.remove_metadata().empty_table()).schema
    body: list[Part] = []
    fd, sink = _scratch(scratch)
    try:
        writer = _open_writer(sink, schema.empty_table(), {})
        try:
            if os.fstat(fd).st_size != 4:
                return None  # the writer did not write its magic on opening
            os.ftruncate(sink.fileno(), at)
            os.lseek(sink.fileno(), 0, os.SEEK_END)
            rows = _write_rows(writer, tables, {}, HASH_PLACEHOLDER, ROW_GROUP_ROWS)
        finally:
            writer.close()
            sink.close()
        size = os.fstat(fd).st_size
        trailer = os.pread(fd, 8, size - 8)
        end = size - 8 - int.from_bytes(trailer[:4], "little")
        added = pq.read_metadata(pa.BufferReader(pa.py_buffer(os.pread(fd, size - end, end))))
        if not added.num_row_groups:
            return Groups(at, 0, [], None)
        if _chunk_start(added.row_group(0)) != at:
            return None
        if end - at > SPILL_BYTES:
            body, fd = [Spill(fd, at, end - at)], -1  # the Spill closes it
        else:
            body = [os.pread(fd, end - at, at)]
        return Groups(at, rows, body, added)
    finally:
        if fd >= 0:
            os.close(fd)


def appended_footer(
    old: pq.FileMetaData, groups: Groups, schema: pa.Schema, metadata: dict[str, str], watermark_hash: str
) -> tuple[list[Part], bytes] | None:
    """`groups` and the footer (with its length and the magic) that lists `old`'s row groups and then
    theirs, with `metadata` and `watermark_hash`, by pyarrow's own serializer (None: another schema)."""
    schema = canonical_table(schema.remove_metadata().empty_table()).schema
    empty = encode_parquet(schema.empty_table(), metadata, watermark_hash)
    combined = pq.read_metadata(pa.BufferReader(pa.py_buffer(empty)))
    try:
        combined.append_row_groups(old)
        if groups.added is not None:
            combined.append_row_groups(groups.added)
    except RuntimeError:  # another schema: not an append
        return None
    sink = pa.BufferOutputStream()
    combined.write_metadata_file(sink)
    return list(groups.body), sink.getvalue().to_pybytes()[4:]


def encode_base(base: BaseProjection, *, pending_hash: bool = False) -> memoryview:
    """Bytes of `records.parquet` for `base` (with the placeholder hash when `pending_hash`)."""
    mark_hash = HASH_PLACEHOLDER if pending_hash else base.watermark.hash
    return encode_parquet(base.table, base_metadata(base), mark_hash)


def footer_start(data: memoryview) -> int:
    """Where the Parquet footer that ends `data` starts (its length and the magic follow it)."""
    return len(data) - 8 - int.from_bytes(bytes(data[-8:-4]), "little")


def zeroed_watermark(footer: bytes, current: str) -> bytes:
    """A Parquet footer with its watermark hash (`current`: a digest, or the placeholder) as 32 zeros: what
    an event's `fingerprint.sha256` covers (`USR_EVENT_SHA256=1`)."""
    token = current.encode()
    if footer.count(token) != 1 or len(current) != len(HASH_PLACEHOLDER):
        raise ValueError("watermark hash not found exactly once in the Parquet footer")
    return footer.replace(token, b"0" * len(HASH_PLACEHOLDER))


def patch_watermark_hash(data: memoryview, real_hash: str) -> list[bytes | memoryview]:
    """Swap the placeholder hash in the Parquet footer for `real_hash` (same length).

    Returns the file as parts (the untouched body as a view, then the patched footer) so the
    body is not copied. Parquet has no footer checksum, so the result is byte-identical to
    `encode_parquet(..., real_hash)`; a test proves it.
    """
    start = footer_start(data)
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


def encode_part_batches(info: PartInfo, tables: Iterable[pa.Table], schema: pa.Schema, *, scratch: Path) -> list[Part]:
    """`encode_part` of the rows of `tables` (with `schema`), read a batch at a time (docs/adr/0014): the
    same bytes, as `encode_batches` gives them."""
    body, footer = encode_batches(
        tables, schema, part_metadata(info), info.mark.hash, rows=PART_ROW_GROUP_ROWS, scratch=scratch
    )
    return [body, footer]


def encode_batches(
    tables: Iterable[pa.Table],
    schema: pa.Schema,
    metadata: dict[str, str],
    watermark_hash: str,
    *,
    rows: int,
    scratch: Path,
) -> tuple[Part, bytes]:
    """`encode_parquet` of the rows of `tables` (with `schema`), written a row group at a time to an unlinked
    scratch file in `scratch`: the same bytes with one row group in memory. Returns the file's body (bytes
    up to `SPILL_BYTES`, else a `Spill` of the scratch file) and its footer (with its length and the magic)."""
    import os

    schema = canonical_table(schema.remove_metadata().empty_table()).schema
    fd, sink = _scratch(scratch)
    try:
        writer = _open_writer(sink, schema.empty_table(), metadata)
        try:
            _write_rows(writer, tables, metadata, watermark_hash, rows)
        finally:
            writer.close()
            sink.close()
        size = os.fstat(fd).st_size
        start = size - 8 - int.from_bytes(os.pread(fd, 4, size - 8), "little")
        footer = os.pread(fd, size - start, start)
        if start > SPILL_BYTES:
            spilled, fd = Spill(fd, 0, start), -1  # the Spill closes it
            return spilled, footer
        return os.pread(fd, start, 0), footer
    finally:
        if fd >= 0:
            os.close(fd)


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
        meta = footer_of(path) if isinstance(path, (Path, str)) else pq.read_metadata(path)
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
