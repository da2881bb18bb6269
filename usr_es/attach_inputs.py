"""Attachment inputs for `usr attach`: read the file, select and name value columns, check keys, cast values.

Pure functions over Arrow data; resolving keys against a dataset is the caller's job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from .codec import regrouped
from .errors import InvalidInput, NamespaceError, SchemaError
from .inputs import (
    MAX_JSON_DEPTH,
    csv_names,
    csv_options,
    json_depth,
    not_utf8,
    precheck,
    read_json_lines,
    require_file,
    restarting,
    valid_text,
)
from .names import ESSENTIAL_COLUMNS, STATE_FIELDS, STATE_NS, TOMBSTONE_NS
from .registry import format_type

KEY_KINDS = ("id", "sequence", "sequence_norm", "sequence_ci")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}

_PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")
_MAX_LISTED = 30
_MAX_SAMPLES = 5
_MAX_ROWS_SHOWN = 10
# Errors raised by Arrow kernels and by pa.array() when a value does not fit the target type.
_VALUE_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)
#: The input row number of the first row of the table being checked (a batch of a larger input): the row
#: numbers in messages count over the whole input.
_FIRST_ROW: ContextVar[int] = ContextVar("first_row", default=0)


@contextmanager
def rows_from(start: int) -> Iterator[None]:
    """Within the block, rows named in messages are numbered from `start` (0-based) on."""
    token = _FIRST_ROW.set(start)
    try:
        yield
    finally:
        _FIRST_ROW.reset(token)


def _row_number(row: int) -> int:
    """The 1-based input row number of 0-based row `row` of the table being checked."""
    return row + 1 + _FIRST_ROW.get()


@dataclass(frozen=True)
class Selection:
    """The key column and the value columns chosen from an attachment table."""

    keys: pa.ChunkedArray
    columns: dict[str, pa.ChunkedArray]


# -- reading --------------------------------------------------------------------------------
def attachment_batches(path: Path, *, batch_rows: int) -> Iterator[pa.Table]:
    """The rows of a .csv, .parquet, .jsonl or .json (JSON lines) file, `batch_rows` at a time (the last batch
    may be shorter; CSV cells are read as text, empty cells as null). CSV and Parquet are read a block at a
    time, so memory holds about one batch whatever the file's size (docs/adr/0014); JSON lines, whose column
    types are inferred over the whole file, are read whole and handed out in batches. The file is checked
    before the first batch; a read error at any batch is an InvalidInput."""
    fmt = _format_of(path)
    with _read_errors(path, fmt):
        precheck(path, fmt)
    return _batches_of(path, fmt, batch_rows)


def _batches_of(path: Path, fmt: str, batch_rows: int) -> Iterator[pa.Table]:
    with _read_errors(path, fmt):
        if fmt == "csv":
            options = _csv_options(path)
            schema = pa.schema([(name, pa.string()) for name in options.column_types])
            source: Iterator[pa.Table] = _csv_batches(path, options)
        elif fmt == "parquet":
            reader = pq.ParquetFile(path)
            schema = reader.schema_arrow
            source = (pa.Table.from_batches([b], schema) for b in reader.iter_batches(batch_rows))
        else:
            whole = _read_jsonl(path)
            schema, source = whole.schema, iter([whole])
            del whole
    batches = regrouped((_without_index(t) for t in source), batch_rows)
    given = False
    while True:
        with _read_errors(path, fmt):
            batch = next(batches, None)
        if batch is None:
            break
        given = True
        yield batch
    if not given:  # no rows: one empty batch, so the columns are still checked
        yield _without_index(schema.empty_table())


def _format_of(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"Unsupported attachment file type '{path.suffix or path.name}'.",
            hint="Accepted: .csv, .parquet, .jsonl, .json (JSON lines).",
        )
    require_file(path, "Attachment file")
    return fmt


@contextmanager
def _read_errors(path: Path, fmt: str) -> Iterator[None]:
    """pyarrow's read errors as InvalidInput naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:  # a CSV header: pyarrow decodes column names as UTF-8
        raise not_utf8(path, "its header", exc) from None
    except (pa.ArrowException, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(
            f"Cannot read {path} as {fmt}: {detail}",
            hint="A .json/.jsonl file holds JSON lines: one object per line."
            if fmt == "jsonl"
            else "Check that the file is complete and in the format its suffix says.",
        ) from exc


def _without_index(table: pa.Table) -> pa.Table:
    """`table` without the index columns pandas writes into Parquet."""
    index_columns = [n for n in table.column_names if _PANDAS_INDEX.match(n)]
    return table.drop_columns(index_columns) if index_columns else table


def _csv_options(path: Path) -> pcsv.ConvertOptions:
    names = csv_names(path)
    return pcsv.ConvertOptions(
        column_types={name: pa.string() for name in names},
        strings_can_be_null=True,
        null_values=[""],
    )


def _csv_batches(path: Path, options: pcsv.ConvertOptions) -> Iterator[pa.Table]:
    def stream(block: int) -> Iterator[pa.RecordBatch]:
        with pcsv.open_csv(path, read_options=csv_options(block), convert_options=options) as reader:
            yield from reader

    return (pa.Table.from_batches([batch]) for batch in restarting(path, stream))


def _read_jsonl(path: Path) -> pa.Table:
    table = valid_text(read_json_lines(path), path)
    # pyarrow.json turns ISO-8601-looking strings into timestamp[s]; keep them as the text they are.
    schema = pa.schema([field.with_type(_timestamps_as_text(field.type)) for field in table.schema])
    if not schema.equals(table.schema):
        table = read_json_lines(path, pjson.ParseOptions(explicit_schema=schema))
    return pa.table([_nan_as_null(c) for c in table.columns], schema=table.schema)


def _nan_as_null(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A `NaN` token (not JSON, but written by many tools) is a missing value, as the original read it:
    null in float columns and in lists of floats."""
    dtype = column.type
    if pa.types.is_floating(dtype):
        return pc.if_else(pc.is_nan(column), pa.scalar(None, dtype), column)
    if pa.types.is_list(dtype) and pa.types.is_floating(dtype.value_type):
        chunks = []
        for chunk in column.chunks:
            values = chunk.values
            fixed = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
            chunks.append(pa.ListArray.from_arrays(chunk.offsets, fixed, type=dtype, mask=chunk.is_null()))
        return pa.chunked_array(chunks, type=dtype)
    return column


def _timestamps_as_text(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(dtype):
        return pa.string()
    if pa.types.is_list(dtype):
        return pa.list_(_timestamps_as_text(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([f.with_type(_timestamps_as_text(f.type)) for f in dtype])
    return dtype


# -- column selection -----------------------------------------------------------------------
def select_columns(
    table: pa.Table, *, namespace: str, key: str, key_col: str | None, columns: Sequence[str] | None
) -> Selection:
    """Pick the key column and the value columns, naming value columns `<namespace>__<field>`."""
    _check_key_kind(key)
    key_col = key_col or ("id" if key == "id" else "sequence")
    names = list(table.column_names)
    if key_col not in names:
        raise SchemaError(
            f"Key column '{key_col}' is not in the input file (columns: {_listing(names)}).",
            hint="Name the key column with --key-col.",
        )
    _require_single(table, key_col)
    requested = [n for n in names if n != key_col] if columns is None else [c.strip() for c in columns]
    selected: dict[str, pa.ChunkedArray] = {}
    sources: dict[str, str] = {}
    for name in requested:
        source, out = _resolve_column(name, names, namespace)
        if out in selected:
            raise SchemaError(
                f"Column '{out}' is selected twice (from '{sources[out]}' and '{source}').",
                hint="Give each value column once.",
            )
        _require_single(table, source)
        selected[out] = table.column(source)
        sources[out] = source
    if not selected:
        raise SchemaError(
            "No value columns to attach.",
            hint=f"The input needs at least one column besides the key column '{key_col}'; choose them with --columns.",
        )
    return Selection(keys=_as_text(table.column(key_col), key_col), columns=selected)


def _owner_hint(owner: str, name: str) -> str:
    """How a column of namespace `owner` is written (the reserved ones are not attached)."""
    if owner == STATE_NS:
        field = name.split("__", 1)[1]
        if field not in STATE_FIELDS:
            return f"usr_state holds only {', '.join(STATE_FIELDS)}, set with `usr state set` (attach refuses them)"
        flag = "--masked/--unmasked" if field == "masked" else f"--{field.replace('_', '-')} VALUE"
        return f"Set it with `usr state set DATASET --id ID {flag}` (attach refuses usr_state)"
    if owner == TOMBSTONE_NS:
        return "Tombstones are set with `usr delete` and cleared with `usr restore` (attach refuses them)"
    return f"Attach it with --namespace {owner}"


def _resolve_column(name: str, names: list[str], namespace: str) -> tuple[str, str]:
    """Return (input column, output name) for one requested column name."""
    prefix = f"{namespace}__"
    if "__" in name:
        owner = name.split("__", 1)[0]
        if owner != namespace:
            raise NamespaceError(
                f"Column '{name}' does not belong to namespace '{namespace}'.",
                hint=f"{_owner_hint(owner, name)}, or rename it to '{prefix}<field>'."
                if owner
                else f"Rename it to '{prefix}<field>'.",
            )
        field = name[len(prefix) :]
        candidates = [name, field]
    else:
        if name in ESSENTIAL_COLUMNS:
            raise NamespaceError(
                f"Refusing to write essential column: {name}",
                hint="Essential USR columns are written by import only; choose the value columns with --columns.",
            )
        field = name
        candidates = [name, prefix + name]
    if not field:
        raise SchemaError(f"Column '{name}' has no field name.", hint=f"Name value columns '{prefix}<field>'.")
    for candidate in candidates:
        if candidate in names:
            return candidate, prefix + field
    raise SchemaError(
        f"Column '{name}' is not in the input file (columns: {_listing(names)}).",
        hint="Check the names given to --columns against the file's header.",
    )


def _require_single(table: pa.Table, name: str) -> None:
    if len(table.schema.get_all_field_indices(name)) > 1:
        raise SchemaError(f"Column '{name}' appears more than once in the input file.", hint="Rename or drop one.")


def _as_text(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if pa.types.is_string(column.type):
        return column
    try:
        return pc.cast(column, pa.string())
    except _VALUE_ERRORS as exc:
        raise SchemaError(
            f"Key column '{name}' has type {_type_name(column.type)}; keys must be text.",
            hint="Use a column of ids or sequences as the key.",
        ) from exc


# -- keys -----------------------------------------------------------------------------------
def normalize_keys(keys: pa.ChunkedArray | pa.Array, key: str, *, check_duplicates: bool = True) -> pa.ChunkedArray:
    """Trim keys (and upper-case them for `sequence_ci`); reject blank keys, and duplicate keys unless
    `check_duplicates` is false (the caller then runs `require_unique_keys` itself)."""
    _check_key_kind(key)
    normalized = _trimmed(_as_text(_chunked(keys), "key"))
    if key == "sequence_ci":
        normalized = pc.utf8_upper(normalized)
    missing = pc.fill_null(pc.equal(normalized, ""), True)
    if pc.any(missing).as_py():
        rows = pc.indices_nonzero(_combined(missing)).to_pylist()
        raise SchemaError(
            f"{len(rows)} row(s) have missing key values (rows: {rows_text(rows, ', ')}).",
            hint="Every row needs a key; fill in or drop the rows without one.",
        )
    if check_duplicates:
        require_unique_keys(normalized, key)
    return normalized


def require_unique_keys(keys: pa.ChunkedArray, key: str, *, known_distinct: bool = False) -> None:
    """Reject repeated (normalized) keys; `known_distinct`: the caller has shown they are distinct."""
    if known_distinct:
        return
    if pc.count_distinct(keys, mode="all").as_py() != len(keys):  # counts without building a unique array
        raise _duplicate_keys(keys, key)


def _trimmed(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """`utf8_trim_whitespace`, a chunk at a time, keeping each chunk that had nothing to trim as it is
    (most inputs have none: no copy of the column is kept, and only one chunk is copied at a time)."""
    chunks = []
    for chunk in text.chunks:
        trimmed = pc.utf8_trim_whitespace(chunk)
        same = pc.all(pc.equal(pc.binary_length(trimmed), pc.binary_length(chunk))).as_py() is not False
        chunks.append(chunk if same else trimmed)
    return pa.chunked_array(chunks, type=text.type)


def _duplicate_keys(keys: pa.ChunkedArray, key: str) -> SchemaError:
    return duplicate_keys_error(keys, pa.array(range(len(keys)), pa.int64()), key)


def duplicate_keys_error(keys: pa.ChunkedArray | pa.Array, rows: pa.Array, key: str) -> SchemaError:
    """The error for repeated keys: `keys` and their 0-based rows in the table being checked (`rows_from`)."""
    table = pa.table({"k": keys, "i": rows})
    groups = table.group_by("k").aggregate([("i", "min"), ("i", "count")])
    repeated = groups.filter(pc.greater(groups.column("i_count"), 1)).sort_by("i_min")
    samples = []
    for value in repeated.column("k").to_pylist()[:_MAX_SAMPLES]:
        at = sorted(pc.filter(rows, pc.equal(table.column("k"), value)).to_pylist())
        samples.append(f"{_short(value)} (rows {rows_text(at, ',')})")
    return repeated_keys_error(repeated.num_rows, samples, key)


def repeated_keys_error(count: int, samples: Sequence[str], key: str) -> SchemaError:
    how = "trimming and upper-casing" if key == "sequence_ci" else "trimming"
    return SchemaError(
        f"Duplicate keys in attachment input: {count} key(s) repeated. Sample: {'; '.join(samples)}.",
        hint=f"Each key may appear once per attach (compared after {how}); de-duplicate the input, "
        "keeping one row per key.",
    )


def _check_key_kind(key: str) -> None:
    if key not in KEY_KINDS:
        raise InvalidInput(f"Unsupported join key '{key}'.", hint=f"Use one of: {', '.join(KEY_KINDS)}.")


# -- casting --------------------------------------------------------------------------------
def cast_column(
    values: pa.ChunkedArray | pa.Array, name: str, dtype: pa.DataType, *, parse_json: bool
) -> pa.ChunkedArray:
    """Cast a raw input column to its registry type; nested types are read from JSON text when `parse_json`."""
    column = _chunked(values)
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if column.type == dtype:
        return column
    if not _is_text(column.type):
        return _cast_typed(column, name, dtype)
    if _is_text(dtype):
        return pc.cast(column, pa.string())
    if _is_nested(dtype):
        if not parse_json:
            raise SchemaError(
                f"Column '{name}' holds text but its registry type is {format_type(dtype)}; "
                "nested values are read from JSON text only with JSON parsing on.",
                hint="Drop --no-parse-json (JSON parsing is the default), or supply the column typed in parquet/jsonl.",
            )
        fast = _numeric_lists_fast(column, dtype) if _fast_eligible(dtype) else None
        return fast if fast is not None else _json_cells(column, name, dtype)

    def convert(part: pa.ChunkedArray) -> pa.ChunkedArray:
        text = pc.utf8_trim_whitespace(part)
        if pa.types.is_timestamp(dtype):
            text = pc.utf8_upper(text)  # RFC 3339 allows a lower-case 't' and 'z'
        return pc.cast(text, dtype)

    return _convert(column, name, dtype, convert)


def _cast_typed(column: pa.ChunkedArray, name: str, dtype: pa.DataType) -> pa.ChunkedArray:
    extra = _extra_struct_field(column.type, dtype)
    if extra is not None:
        raise SchemaError(
            f"Column '{name}' has type {_type_name(column.type)} in the input; "
            f"it cannot be converted to {format_type(dtype)}.",
            hint=f"Struct field '{extra}' is not part of the registered type.",
        )
    return _convert(column, name, dtype, lambda part: pc.cast(part, dtype))


def _convert(
    column: pa.ChunkedArray,
    name: str,
    dtype: pa.DataType,
    convert: Callable[[pa.ChunkedArray], pa.ChunkedArray],
) -> pa.ChunkedArray:
    try:
        return _chunked(convert(column))
    except pa.ArrowNotImplementedError as exc:
        raise SchemaError(
            f"Column '{name}' has type {_type_name(column.type)} in the input; "
            f"it cannot be converted to {format_type(dtype)}.",
            hint="Supply values of the registered type, or as text.",
        ) from exc
    except _VALUE_ERRORS:
        row = _first_failure(len(column), lambda lo, hi: convert(column.slice(lo, hi - lo)))
        raise _cannot_convert(name, row, column[row].as_py(), dtype) from None


def _first_failure(length: int, attempt: Callable[[int, int], object]) -> int:
    """0-based index of the first row whose conversion fails (bisection; only used on the error path)."""
    lo, hi = 0, length
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            attempt(lo, mid)
        except _VALUE_ERRORS:
            hi = mid
        else:
            lo = mid
    return lo


def _cannot_convert(name: str, row: int, value: Any, dtype: pa.DataType, hint: str | None = None) -> SchemaError:
    if hint is None:
        if pa.types.is_timestamp(dtype):
            hint = "Timestamps are RFC 3339 text with a zone offset, e.g. 2024-01-31T12:00:00Z."
        elif pa.types.is_boolean(dtype):
            hint = "Booleans are true/false or 1/0 (any case)."
        else:
            hint = f"Fix the value, or check the registered type of '{name}'."
    return SchemaError(
        f"Column '{name}' row {_row_number(row)}: cannot convert {repr(value)[:40]} to {format_type(dtype)}.", hint=hint
    )


def _fast_eligible(dtype: pa.DataType) -> bool:
    if not (pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype)):
        return False
    inner = dtype.value_type
    return bool(pa.types.is_integer(inner) or pa.types.is_floating(inner))


def _numeric_lists_fast(column: pa.ChunkedArray, dtype: pa.DataType) -> pa.ChunkedArray | None:
    """Parse JSON number lists with Arrow's multi-threaded JSON reader; None when any cell needs the slow path.

    Each cell becomes the line `{"v":<cell>}`. Arrow rejects unknown and repeated fields, and every line
    opens an object, so exactly one row per line proves each cell was one JSON value on its own.
    """
    if len(column) == 0:
        return pa.chunked_array([], type=dtype)
    inner = dtype.value_type
    read_type = pa.list_(pa.float64() if pa.types.is_floating(inner) else inner)
    parse_options = pjson.ParseOptions(explicit_schema=pa.schema([("v", read_type)]), unexpected_field_behavior="error")
    try:
        chunks: list[pa.Array] = []
        for batch in _line_batches(column):
            data = _value_bytes(batch)
            if not _plain_json_numbers(data) or _most_opening(batch) > MAX_JSON_DEPTH:
                return None  # the slow path names the cell
            longest = pc.max(pc.binary_length(batch)).as_py() or 0
            read_options = pjson.ReadOptions(block_size=max(1 << 20, 2 * longest))
            table = pjson.read_json(pa.BufferReader(data), read_options=read_options, parse_options=parse_options)
            if table.num_rows != len(batch):
                return None
            chunks.extend(table.column(0).chunks)
        parsed = pa.chunked_array(chunks, type=read_type)
        return parsed if parsed.type == dtype else pc.cast(parsed, dtype)
    except _VALUE_ERRORS:
        return None


def _line_batches(column: pa.ChunkedArray, limit: int = 1 << 25) -> Iterator[pa.Array]:
    """The cells as lines `{"v":<cell>}`, in contiguous arrays of about `limit` bytes of text, made one
    at a time (so only a slice of the text is ever copied)."""

    def joined(group: list[pa.Array]) -> pa.Array:
        lines = pc.binary_join_element_wise(
            '{"v":', pa.chunked_array(group, type=column.type), "}\n", "", null_handling="replace",
            null_replacement="null",
        )  # fmt: skip
        return lines.chunk(0) if lines.num_chunks == 1 else pa.concat_arrays(lines.chunks)

    pending: list[pa.Array] = []
    size = 0
    for chunk in column.chunks:
        step = max(1, -(-len(chunk) * limit // max(chunk.nbytes, 1)))  # rows per ~limit bytes
        for start in range(0, len(chunk), step):
            piece = chunk.slice(start, step)
            nbytes = piece.nbytes if step < len(chunk) else chunk.nbytes
            if pending and size + nbytes > limit:
                yield joined(pending)
                pending, size = [], 0
            pending.append(piece)
            size += nbytes
    if pending:
        yield joined(pending)


def _value_bytes(array: pa.Array) -> pa.Buffer:
    """The contiguous text bytes of a string array's rows."""
    offset_type = pa.int64() if pa.types.is_large_string(array.type) else pa.int32()
    offsets = pa.Array.from_buffers(offset_type, len(array) + 1, [None, array.buffers()[1]], offset=array.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    data = array.buffers()[2]
    return pa.py_buffer(b"") if data is None else data.slice(start, end - start)


def _most_opening(cells: pa.Array) -> int:
    """The most opening brackets in one cell (a bound on its JSON nesting)."""
    opening = pc.add(pc.count_substring(cells, "["), pc.count_substring(cells, "{"))
    return int(pc.max(opening).as_py() or 0)


def _plain_json_numbers(data: pa.Buffer) -> bool:
    """False when the text holds a non-finite spelling Arrow reads but JSON (even Python's) does not."""
    view = pa.StringArray.from_buffers(1, pa.array([0, data.size], pa.int32()).buffers()[1], data)
    if pc.match_substring_regex(view, "-NaN")[0].as_py():
        return False
    inf = pc.count_substring_regex(view, "Inf")[0].as_py()
    return bool(inf == pc.count_substring_regex(view, "Infinity")[0].as_py())


def _json_cells(column: pa.ChunkedArray, name: str, dtype: pa.DataType) -> pa.ChunkedArray:
    """Decode every cell as JSON (msgspec; Python's json for NaN/Infinity) and build the typed array."""
    texts = column.to_pylist()
    decoder = msgspec.json.Decoder()
    values: list[Any] = []
    for row, text in enumerate(texts):
        if text is None:
            values.append(None)
            continue
        if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(text.encode()) > MAX_JSON_DEPTH:
            raise SchemaError(
                f"Column '{name}' row {_row_number(row)}: JSON nested deeper than {MAX_JSON_DEPTH} levels."
            )
        try:
            value = decoder.decode(text)
        except msgspec.DecodeError:
            try:
                value = json.loads(text)
            except ValueError:
                raise SchemaError(
                    f"Column '{name}' row {_row_number(row)}: invalid JSON value {text[:40]!r}.",
                    hint=f"Column '{name}' is {format_type(dtype)}: write each cell as JSON text, e.g. "
                    '[1.5, 2] or {"a": 1}, or supply the column typed in parquet/jsonl.',
                ) from None
        try:
            values.append(_conform(value, dtype))
        except _Mismatch as exc:
            raise _cannot_convert(name, row, text, dtype, hint=str(exc)) from None
    try:
        return pa.chunked_array([pa.array(values, type=dtype)], type=dtype)
    except _VALUE_ERRORS:
        row = _first_failure(len(values), lambda lo, hi: pa.array(values[lo:hi], type=dtype))
        raise _cannot_convert(name, row, texts[row], dtype) from None


class _Mismatch(Exception):
    """A decoded JSON value that pa.array() would accept but the registry type should not."""


def _conform(value: Any, dtype: pa.DataType) -> Any:
    """Check what pa.array() lets through (unknown struct fields, booleans as numbers) and read integers
    as floats for float targets, so that the per-cell path matches the fast path (JSON numbers are numbers)."""
    if value is None:
        return None
    if pa.types.is_struct(dtype) and isinstance(value, dict):
        fields = [f.name for f in dtype]
        for field_name in value:
            if field_name not in fields:
                raise _Mismatch(f"Field '{field_name}' is not part of {format_type(dtype)}.")
        return {f.name: _conform(value.get(f.name), f.type) for f in dtype}
    if (pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype)) and isinstance(value, list):
        return [_conform(item, dtype.value_type) for item in value]
    numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
    if isinstance(value, bool) and numeric:
        raise _Mismatch(f"A boolean is not a {format_type(dtype)} value.")
    if isinstance(value, int) and not isinstance(value, bool) and pa.types.is_floating(dtype):
        try:
            return float(value)
        except OverflowError:
            raise _Mismatch(f"{value} is out of range for {format_type(dtype)}.") from None
    return value


def _extra_struct_field(source: pa.DataType, target: pa.DataType) -> str | None:
    """A struct field of `source` that `target` lacks (a cast would drop it silently)."""
    if pa.types.is_struct(source) and pa.types.is_struct(target):
        names = {f.name for f in target}
        for f in source:
            if f.name not in names:
                return str(f.name)
            extra = _extra_struct_field(f.type, target.field(f.name).type)
            if extra is not None:
                return extra
    elif _is_list_like(source) and _is_list_like(target):
        return _extra_struct_field(source.value_type, target.value_type)
    return None


# -- helpers --------------------------------------------------------------------------------
def _chunked(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values], type=values.type)


def _combined(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _is_text(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


def _is_list_like(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype))


def _is_nested(dtype: pa.DataType) -> bool:
    return _is_list_like(dtype) or bool(pa.types.is_struct(dtype))


def _type_name(dtype: pa.DataType) -> str:
    try:
        return format_type(dtype)
    except NamespaceError:
        return str(dtype)


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", … ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def rows_text(indices: Sequence[int], separator: str) -> str:
    shown = separator.join(str(_row_number(i)) for i in indices[:_MAX_ROWS_SHOWN])
    return shown + (f"{separator}…" if len(indices) > _MAX_ROWS_SHOWN else "")


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
