"""Export record batches to csv/jsonl/parquet files, and the JSON rules for Arrow data.

JSON text is built column by column with Arrow kernels (no per-cell Python on the common
types), so JSONL export, `--format json` and list/struct cells in CSV share one set of rules.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import math
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .errors import InvalidInput, NotFound
from .fileio import SeamFile, atomic_file
from .results import ExportResult

if TYPE_CHECKING:
    from .dataset import Dataset

EXPORT_FORMATS = ("csv", "jsonl", "parquet")

#: Output row groups hold at least this many rows (small input batches are buffered) ...
ROW_GROUP_ROWS = 1 << 17
#: ... unless the buffered batches already hold this many bytes.
ROW_GROUP_BYTES = 64 << 20

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
_TEXT = pa.large_string()
_NEEDS_ESCAPE = r'[\x00-\x1f"\\\x{85}\x{2028}\x{2029}]'
# Line breaks JSON leaves raw but str.splitlines() and JavaScript treat as newlines: escaped too.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


# -- JSON rules -------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """Return a JSON-safe Python value for one cell (as `to_pylist`/`as_py` gives it).

    NaN and ±inf become None; aware datetimes become RFC 3339 in UTC with `Z`
    (`2026-11-24T12:00:00.123456Z`), naive ones the same without `Z`; dates and times ISO 8601;
    timedeltas an integer count of microseconds; decimals and UUIDs strings; bytes lowercase hex;
    dicts (string keys), lists and tuples recursively. Other objects become `str(value)`.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat(timespec="microseconds")
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value // dt.timedelta(microseconds=1)
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(json_value(k)): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, pa.Scalar):
        return json_value(value.as_py())
    return str(value)


def json_text(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """JSON text of every cell of `array` as a `large_string` array (`null` for nulls, never null).

    Rules (`json_value` applies them to Python values): booleans and integers as JSON numbers (exact);
    floats in shortest round-trip form with NaN/±inf as `null`; timestamps as RFC 3339 strings
    with the unit's precision (`Z` when the type has a time zone, the instant shown in UTC;
    naive timestamps without `Z`); dates, times and decimals as strings; durations as an integer
    count of the type's unit (as the CSV writer prints them); binary as lowercase hex strings;
    lists as arrays; structs as objects in field order; maps as objects when the keys are
    strings, else as `[{"key":..,"value":..}]`; dictionary-encoded and extension arrays as their
    values (UUIDs as canonical strings). Anything else goes through `json_value` cell by cell.
    Strings escape U+0085/U+2028/U+2029 too, so every JSONL line survives `str.splitlines()`.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if len(array) == 0:
        return pa.array([], _TEXT)
    return pc.fill_null(_text(array), pa.scalar("null", _TEXT))


def jsonl_buffer(batch: pa.RecordBatch) -> pa.Buffer:
    """One JSON object per row, `\\n`-terminated, keys in schema order (see `json_text`)."""
    rows = batch.num_rows
    if rows == 0:
        return pa.py_buffer(b"")
    if batch.num_columns == 0:
        return pa.py_buffer(b"{}\n" * rows)
    parts: list[pa.Array | pa.Scalar] = []
    for i, name in enumerate(batch.schema.names):
        parts.append(_lit(("{" if i == 0 else ",") + _dumps(name) + ":"))
        parts.append(json_text(batch.column(i)))
    parts.append(_lit("}\n"))
    lines = pc.binary_join_element_wise(*parts, _lit(""))
    return _data_buffer(lines)


def json_rows(data: pa.RecordBatch | pa.Table) -> list[dict[str, Any]]:
    """Rows of `data` as JSON-safe dicts (keys in schema order), for `--format json` output.

    Exactly what parsing the JSONL export of `data` gives: see `json_text` for the rules.
    """
    batches = data.to_batches() if isinstance(data, pa.Table) else [data]
    rows: list[dict[str, Any]] = []
    for batch in batches:
        if batch.num_rows:
            rows.extend(_DECODER.decode_lines(jsonl_buffer(batch)))
    return rows


def _dumps(value: Any) -> str:
    """JSON text of a JSON-safe Python value, with U+0085/U+2028/U+2029 escaped."""
    text = _ENCODER.encode(value).decode()
    if any(ch in text for ch in _LINE_BREAKS):
        for ch, escaped in _LINE_BREAKS.items():
            text = text.replace(ch, escaped)
    return text


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, _TEXT)


def _quote(text: pa.Array) -> pa.Array:
    """Wrap strings known to need no escaping in double quotes (nulls stay null)."""
    return pc.binary_join_element_wise(_lit('"'), text.cast(_TEXT), _lit('"'), _lit(""))


def _data_buffer(strings: pa.Array) -> pa.Buffer:
    """The concatenated bytes of a large_string array (a view, no copy)."""
    offsets = pa.Array.from_buffers(pa.int64(), len(strings) + 1, [None, strings.buffers()[1]], offset=strings.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return strings.buffers()[2].slice(start, end - start)


def _text(arr: pa.Array) -> pa.Array:
    """JSON text of each cell (large_string); null cells may stay null (`json_text` fills them)."""
    t = arr.type
    if len(arr) == 0:
        return pa.array([], _TEXT)
    if pa.types.is_dictionary(t):
        return _text(arr.dictionary_decode())
    if isinstance(t, pa.BaseExtensionType):
        return _quote(_str_cells(arr)) if t.extension_name == "arrow.uuid" else _text(arr.storage)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), _TEXT)
    if pa.types.is_boolean(t) or pa.types.is_integer(t):
        return arr.cast(_TEXT)
    if pa.types.is_floating(t):
        return _float_text(arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _string_text(arr.cast(_TEXT))
    if _is_binary(t):
        return _quote(_hex(arr))
    if pa.types.is_timestamp(t):
        return _quote(rfc3339(arr))
    if pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_decimal(t):
        return _quote(arr.cast(_TEXT))
    if pa.types.is_duration(t):
        return arr.cast(pa.int64()).cast(_TEXT)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _list_text(arr)
    if pa.types.is_struct(t):
        return _struct_text(arr)
    if pa.types.is_map(t):
        return _map_text(arr)
    return _fallback_text(arr)


def _is_binary(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _fallback_text(arr: pa.Array) -> pa.Array:
    return pa.array([_dumps(json_value(v)) for v in arr.to_pylist()], _TEXT)


def _float_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_float16(arr.type):
        arr = arr.cast(pa.float32())
    text = arr.cast(_TEXT)  # shortest round-trip form; "1" for 1.0
    plain = pc.and_(pc.equal(pc.find_substring(text, "."), -1), pc.equal(pc.find_substring(text, "e"), -1))
    text = pc.if_else(plain, pc.binary_join_element_wise(text, _lit(".0"), _lit("")), text)
    return pc.if_else(pc.is_finite(arr), text, pa.scalar(None, _TEXT))


def _string_text(text: pa.Array) -> pa.Array:
    quoted = _quote(text)
    escape = pc.fill_null(pc.match_substring_regex(text, _NEEDS_ESCAPE), False)
    if not pc.any(escape).as_py():
        return quoted
    encoded = [_dumps(v) for v in pc.filter(text, escape).to_pylist()]
    return pc.replace_with_mask(quoted, escape, pa.array(encoded, _TEXT))


def _str_cells(arr: pa.Array) -> pa.Array:
    """`str()` of each cell's Python value (large_string, nulls kept): UUIDs."""
    return pa.array([None if v is None else str(v) for v in arr.to_pylist()], _TEXT)


def _hex(arr: pa.Array) -> pa.Array:
    """Lowercase hex of each binary cell (large_string, nulls kept)."""
    return pa.array([None if v is None else v.hex() for v in arr.to_pylist()], _TEXT)


def rfc3339(arr: pa.Array) -> pa.Array:
    """Timestamps as RFC 3339 text (large_string, nulls kept), digits per the unit.

    A time-zone-aware column is shown in UTC with `Z`; a naive one without an offset.
    """
    t = arr.type
    naive = arr.cast(pa.timestamp(t.unit)) if t.tz is not None else arr  # keeps the UTC instant
    text = pc.replace_substring(naive.cast(_TEXT), " ", "T", max_replacements=1)
    if t.tz is not None:
        text = pc.binary_join_element_wise(text, _lit("Z"), _lit(""))
    return text


def _children_range(arr: pa.Array) -> tuple[pa.Array, int, int]:
    offsets = arr.offsets
    return offsets, offsets[0].as_py(), offsets[-1].as_py()


def _join_lists(arr: pa.Array, offsets: pa.Array, start: int, items: pa.Array, open_: str, close: str) -> pa.Array:
    relative = pc.subtract(offsets.cast(pa.int64()), pa.scalar(start, pa.int64()))
    joined = pc.binary_join(pa.LargeListArray.from_arrays(relative, items), _lit(","))
    text = pc.binary_join_element_wise(_lit(open_), joined, _lit(close), _lit(""))
    return pc.if_else(pc.is_valid(arr), text, pa.scalar(None, _TEXT))


def _list_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.large_list(arr.type.value_field))
    offsets, start, end = _children_range(arr)
    items = json_text(arr.values.slice(start, end - start))
    return _join_lists(arr, offsets, start, items, "[", "]")


def _struct_text(arr: pa.Array) -> pa.Array:
    t = arr.type
    if t.num_fields == 0:
        return pc.if_else(pc.is_valid(arr), _lit("{}"), pa.scalar(None, _TEXT))
    parts: list[pa.Array | pa.Scalar] = []
    for i, child in enumerate(arr.flatten()):  # flatten applies the slice and the parent's nulls
        parts.append(_lit(("{" if i == 0 else ",") + _dumps(t.field(i).name) + ":"))
        parts.append(json_text(child))
    parts.append(_lit("}"))
    text = pc.binary_join_element_wise(*parts, _lit(""))
    return pc.if_else(pc.is_valid(arr), text, pa.scalar(None, _TEXT))


def _map_text(arr: pa.Array) -> pa.Array:
    offsets, start, end = _children_range(arr)
    keys = arr.keys.slice(start, end - start)
    values = json_text(arr.items.slice(start, end - start))
    kt = keys.type
    if pa.types.is_string(kt) or pa.types.is_large_string(kt) or pa.types.is_string_view(kt):
        entries = pc.binary_join_element_wise(json_text(keys), _lit(":"), values, _lit(""))
        return _join_lists(arr, offsets, start, entries, "{", "}")
    entries = pc.binary_join_element_wise(
        _lit('{"key":'), json_text(keys), _lit(',"value":'), values, _lit("}"), _lit("")
    )
    return _join_lists(arr, offsets, start, entries, "[", "]")


# -- formats and targets ------------------------------------------------------------------------


def check_format(fmt: str) -> str:
    """Return the export format in lower case; anything but csv/jsonl/parquet is InvalidInput.

    Call it before creating any file or directory.
    """
    normalized = fmt.strip().lower()
    if normalized not in EXPORT_FORMATS:
        raise InvalidInput(
            f"Unsupported export format {fmt!r}.",
            hint=f"Use one of: {', '.join(EXPORT_FORMATS)}.",
        )
    return normalized


def export_target(out: Path | str, dataset_name: str, fmt: str, *, dataset_dir: Path | None = None) -> Path:
    """The file an export of `dataset_name` to `out` writes.

    An existing directory gets `<out>/<dataset id with '/' replaced by '_'>.<fmt>`; any other
    path is the file itself, and its directory must exist (NotFound otherwise; nothing is
    created). A path ending in a separator names a directory, which must exist. An existing
    file is replaced, as the original `usr export` did: the new file is written next to it
    and renamed over it at the end, so a failed export leaves the old file untouched. With
    `dataset_dir`, a target that is one of the dataset's own files (`records.parquet`, `meta.md`,
    hidden files, anything in its subfolders) is refused; other files beside them are allowed
    (`usr export --fmt csv --out records.csv` inside a dataset folder).
    """
    fmt = check_format(fmt)
    wants_dir = isinstance(out, str) and out.endswith((os.sep, "/"))
    out = Path(out)
    if out.is_dir():
        target = out / f"{dataset_name.replace('/', '_')}.{fmt}"
        if target.is_dir():
            raise InvalidInput(f"export target {target} is a directory", hint="pass a file path to --out")
        _refuse_dataset_file(target, dataset_dir)
        return target
    if wants_dir:
        raise NotFound(f"output directory {out} does not exist", hint=f"create it first: mkdir -p {out}")
    parent = out.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise NotFound(
            f"output directory {parent} {what}",
            hint=f"create it first (mkdir -p {parent}) or pass an existing directory to --out",
        )
    _refuse_dataset_file(out, dataset_dir)
    return out


_DATASET_FILES = frozenset({"records.parquet", "meta.md"})


def _refuse_dataset_file(target: Path, dataset_dir: Path | None) -> None:
    if dataset_dir is None:
        return
    try:
        inside = target.resolve().relative_to(dataset_dir.resolve())
    except ValueError:
        return
    if len(inside.parts) != 1 or inside.name in _DATASET_FILES or inside.name.startswith("."):
        raise InvalidInput(
            f"refusing to export over {target}: it belongs to the dataset",
            hint="choose another --out path (a file beside records.parquet, or another directory)",
        )


# -- writing ------------------------------------------------------------------------------------


def write_export(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    fmt: str,
    path: Path,
    *,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    dataset: str = "",
    durable: bool = True,
) -> ExportResult:
    """Stream `batches` (each of `schema`) into `path` as csv, jsonl or parquet.

    Memory stays near one batch (parquet buffers up to `ROW_GROUP_ROWS` rows / `ROW_GROUP_BYTES`
    per row group). The file is written to a temp file in `path`'s directory, fsync'd (unless
    `durable=False`) and renamed over `path`; on any error the temp file is removed and `path` is
    left as it was. `progress(rows_so_far)` is called after each batch.

    parquet: Arrow types kept, schema metadata = `metadata` when given (the dataset's `usr:*`
    keys), else the schema's own; snappy compression (the pyarrow default and the fastest).
    csv: header row; list/struct/map cells as JSON text, timestamps RFC 3339, binary as hex,
    NaN/inf as `nan`/`inf`, nulls empty. jsonl: one JSON object per row (see `json_text`).
    """
    fmt = check_format(fmt)
    path = Path(path)
    # Not `.tmp-`: a writer's crash clean-up removes those, and an export into a dataset folder runs unlocked.
    # (The writers below write whole pages or batches: no buffering is needed.)
    with atomic_file(path, point="export", temp_prefix=".export-tmp-", durable=durable) as sink:
        counted = _counted(batches, schema, progress)
        if fmt == "parquet":
            _write_parquet(counted, schema, sink, metadata=metadata)
        elif fmt == "csv":
            _write_csv(counted, schema, sink)
        else:
            for batch in counted:
                sink.write(jsonl_buffer(batch))
        rows, size = counted.rows, sink.tell()
    return ExportResult(
        dataset=dataset, format=fmt, path=str(path), rows=rows, columns=list(schema.names), size_bytes=size
    )


class _counted:
    """Iterate the batches, conformed to `schema`, counting rows and reporting progress."""

    def __init__(
        self, batches: Iterable[pa.RecordBatch], schema: pa.Schema, progress: Callable[[int], None] | None
    ) -> None:
        self._batches = batches
        self._schema = schema
        self._progress = progress
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self._batches:
            if not batch.schema.equals(self._schema, check_metadata=False):
                batch = batch.cast(self._schema)
            yield batch
            self.rows += batch.num_rows
            if self._progress is not None:
                self._progress(self.rows)


def _write_parquet(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    sink: SeamFile,
    *,
    metadata: dict[str, str] | None,
) -> None:
    out_schema = schema.with_metadata(metadata) if metadata is not None else schema
    it = iter(batches)
    first = next(it, None)
    writer = pq.ParquetWriter(
        sink,
        out_schema,
        compression="snappy",
        use_dictionary=_dictionary_columns(first) if first is not None else True,
        write_statistics=True,
        use_compliant_nested_type=False,  # keep list child names ("item"): the Arrow types round-trip exactly
    )
    try:
        pending: list[pa.RecordBatch] = []
        pending_rows = pending_bytes = 0
        for batch in _chain(first, it):
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            pending_rows += batch.num_rows
            pending_bytes += batch.nbytes
            if pending_rows >= ROW_GROUP_ROWS or pending_bytes >= ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_batches(pending, out_schema), row_group_size=pending_rows)
                pending, pending_rows, pending_bytes = [], 0, 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending, out_schema), row_group_size=pending_rows)
    finally:
        writer.close()


def _chain(first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    if first is not None:
        yield first
    yield from rest


def _dictionary_columns(sample: pa.RecordBatch) -> list[str]:
    """Top-level columns worth dictionary encoding: few distinct values in the first batch.

    Unique columns (ids, sequences, scores) skip the dictionary attempt, which costs a third
    of the write time and saves nothing.
    """
    names = []
    limit = max(1, sample.num_rows // 10)
    for field, column in zip(sample.schema, sample.columns, strict=True):
        t = field.type
        if pa.types.is_dictionary(t):
            names.append(field.name)
            continue
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or _is_binary(t)):
            continue
        with contextlib.suppress(pa.ArrowException):
            if pc.count_distinct(column, mode="all").as_py() <= limit:
                names.append(field.name)
    return names


def _csv_column(arr: pa.Array) -> pa.Array:
    """A column the CSV writer renders as intended: see `write_export`."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _csv_column(arr.dictionary_decode())
    if isinstance(t, pa.BaseExtensionType):
        return _str_cells(arr) if t.extension_name == "arrow.uuid" else _csv_column(arr.storage)
    if pa.types.is_timestamp(t):
        return rfc3339(arr)
    if _is_binary(t):
        return _hex(arr)
    if pa.types.is_float16(t):
        return arr.cast(pa.float32())
    if pa.types.is_string_view(t):
        return arr.cast(_TEXT)
    if (
        pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_decimal(t)
        or pa.types.is_duration(t)
    ):
        return arr
    return pc.if_else(pc.is_valid(arr), json_text(arr), pa.scalar(None, _TEXT))  # nested: JSON text, null empty


def _csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([_csv_column(c) for c in batch.columns], names=batch.schema.names)


def _write_csv(batches: Iterable[pa.RecordBatch], schema: pa.Schema, sink: SeamFile) -> None:
    empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    csv_schema = _csv_batch(empty).schema
    with pcsv.CSVWriter(sink, csv_schema) as writer:
        for batch in batches:  # conformed to `schema` by `_counted`, so each converts to `csv_schema`
            writer.write_batch(_csv_batch(batch))


#: Batches `prefetched` produces ahead of the consumer (memory: this many batches more).
PREFETCH = 2
_DONE = object()


def prefetched(items: Iterable[Any], depth: int = PREFETCH) -> Iterator[Any]:
    """Iterate `items` on a worker thread, up to `depth` items ahead of the caller.

    Producing the next batch (Parquet decoding, the overlay merge) and consuming this one (encoding,
    writing) are native code that releases the GIL, so on two cores they overlap. Items arrive in
    order; an exception raised by `items` is re-raised here at its place in the sequence. When the
    caller stops early (an error, `close()`), the worker stops after the item it is on and `items`
    is closed on the worker (generators must be closed by the thread that runs them).
    """
    channel: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                channel.put(entry, timeout=0.05)
                return True
        return False

    def work() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the caller, raised there
            put((_DONE, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="usr-es-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = channel.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def export_dataset(
    ds: Dataset,
    fmt: str,
    out: Path | str,
    *,
    columns: list[str] | None = None,
    include_deleted: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export the live view of `ds` (see `Dataset.export`): the format and the target are checked
    before anything is created; the view is streamed batch by batch (bounded memory)."""
    from .reads import scan_with_schema

    target = export_target(out, ds.name, fmt, dataset_dir=ds.dir)  # checks the format first
    schema, batches, metadata = scan_with_schema(ds, columns=columns, include_deleted=include_deleted)
    metadata["usr:dataset"] = ds.name
    return write_export(prefetched(batches), schema, fmt, target, metadata=metadata, progress=progress, dataset=ds.name)
