"""How a cell of any Arrow type becomes JSON: one rule set shared by the read commands'
--format json, JSONL and CSV export.

JSON text is built column by column with Arrow kernels (no per-cell Python on the common types).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
TEXT = pa.large_string()
_NEEDS_ESCAPE = r'[\x00-\x1f"\\\x{85}\x{2028}\x{2029}]'
# Line breaks JSON leaves raw but str.splitlines() and JavaScript treat as newlines: escaped too.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


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
        return pa.array([], TEXT)
    return pc.fill_null(_text(array), pa.scalar("null", TEXT))


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
    return pa.scalar(text, TEXT)


def _quote(text: pa.Array) -> pa.Array:
    """Wrap strings known to need no escaping in double quotes (nulls stay null)."""
    return pc.binary_join_element_wise(_lit('"'), text.cast(TEXT), _lit('"'), _lit(""))


def _data_buffer(strings: pa.Array) -> pa.Buffer:
    """The concatenated bytes of a large_string array (a view, no copy)."""
    offsets = pa.Array.from_buffers(pa.int64(), len(strings) + 1, [None, strings.buffers()[1]], offset=strings.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return strings.buffers()[2].slice(start, end - start)


def _text(arr: pa.Array) -> pa.Array:
    """JSON text of each cell (large_string); null cells may stay null (`json_text` fills them)."""
    t = arr.type
    if len(arr) == 0:
        return pa.array([], TEXT)
    if pa.types.is_dictionary(t):
        return _text(arr.dictionary_decode())
    if isinstance(t, pa.BaseExtensionType):
        return _quote(str_cells(arr)) if t.extension_name == "arrow.uuid" else _text(arr.storage)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), TEXT)
    if pa.types.is_boolean(t) or pa.types.is_integer(t):
        return arr.cast(TEXT)
    if pa.types.is_floating(t):
        return _float_text(arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _string_text(arr.cast(TEXT))
    if is_binary(t):
        return _quote(hex_cells(arr))
    if pa.types.is_timestamp(t):
        return _quote(rfc3339(arr))
    if pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_decimal(t):
        return _quote(arr.cast(TEXT))
    if pa.types.is_duration(t):
        return arr.cast(pa.int64()).cast(TEXT)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _list_text(arr)
    if pa.types.is_struct(t):
        return _struct_text(arr)
    if pa.types.is_map(t):
        return _map_text(arr)
    return _fallback_text(arr)


def is_binary(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _fallback_text(arr: pa.Array) -> pa.Array:
    return pa.array([_dumps(json_value(v)) for v in arr.to_pylist()], TEXT)


def _float_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_float16(arr.type):
        arr = arr.cast(pa.float32())
    text = arr.cast(TEXT)  # shortest round-trip form; "1" for 1.0
    plain = pc.and_(pc.equal(pc.find_substring(text, "."), -1), pc.equal(pc.find_substring(text, "e"), -1))
    text = pc.if_else(plain, pc.binary_join_element_wise(text, _lit(".0"), _lit("")), text)
    return pc.if_else(pc.is_finite(arr), text, pa.scalar(None, TEXT))


def _string_text(text: pa.Array) -> pa.Array:
    quoted = _quote(text)
    escape = pc.fill_null(pc.match_substring_regex(text, _NEEDS_ESCAPE), False)
    if not pc.any(escape).as_py():
        return quoted
    encoded = [_dumps(v) for v in pc.filter(text, escape).to_pylist()]
    return pc.replace_with_mask(quoted, escape, pa.array(encoded, TEXT))


def str_cells(arr: pa.Array) -> pa.Array:
    """`str()` of each cell's Python value (large_string, nulls kept): UUIDs."""
    return pa.array([None if v is None else str(v) for v in arr.to_pylist()], TEXT)


def hex_cells(arr: pa.Array) -> pa.Array:
    """Lowercase hex of each binary cell (large_string, nulls kept)."""
    return pa.array([None if v is None else v.hex() for v in arr.to_pylist()], TEXT)


def rfc3339(arr: pa.Array) -> pa.Array:
    """Timestamps as RFC 3339 text (large_string, nulls kept), digits per the unit.

    A time-zone-aware column is shown in UTC with `Z`; a naive one without an offset.
    """
    t = arr.type
    naive = arr.cast(pa.timestamp(t.unit)) if t.tz is not None else arr  # keeps the UTC instant
    text = pc.replace_substring(naive.cast(TEXT), " ", "T", max_replacements=1)
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
    return pc.if_else(pc.is_valid(arr), text, pa.scalar(None, TEXT))


def _list_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.large_list(arr.type.value_field))
    offsets, start, end = _children_range(arr)
    items = json_text(arr.values.slice(start, end - start))
    return _join_lists(arr, offsets, start, items, "[", "]")


def _struct_text(arr: pa.Array) -> pa.Array:
    t = arr.type
    if t.num_fields == 0:
        return pc.if_else(pc.is_valid(arr), _lit("{}"), pa.scalar(None, TEXT))
    parts: list[pa.Array | pa.Scalar] = []
    for i, child in enumerate(arr.flatten()):  # flatten applies the slice and the parent's nulls
        parts.append(_lit(("{" if i == 0 else ",") + _dumps(t.field(i).name) + ":"))
        parts.append(json_text(child))
    parts.append(_lit("}"))
    text = pc.binary_join_element_wise(*parts, _lit(""))
    return pc.if_else(pc.is_valid(arr), text, pa.scalar(None, TEXT))


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
