"""Reading user input (CSV, JSONL, Parquet, FASTA files; Python rows) into Arrow tables.

Only the columns import uses are read (`sequence`, and `bio_type`/`alphabet`/`id` when present: the
decider checks a supplied id against the computed one); extra columns are ignored. CSV/JSONL/Parquet
are parsed by pyarrow. FASTA has no parser among our dependencies and its grammar is a header line plus
sequence lines, so it is read here; the header text is not part of the USR base schema and is not
stored (see README).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from .codec import regrouped
from .errors import InvalidInput, NotFound, SchemaError

IMPORT_COLUMNS = ("sequence", "bio_type", "alphabet", "id")
FORMATS = ("csv", "jsonl", "parquet", "fasta")


#: The widest input file accepted (columns): more is a mistake (a transposed table), and pyarrow's CSV
#: reader spends about 12 KB per column even on one short row.
MAX_INPUT_COLUMNS = 10_000
#: pyarrow's readers parse in blocks, and a line must fit in one: the block grows (x8) up to this bound
#: when a line (a long sequence, a wide header) does not fit the default 1 MiB.
MAX_BLOCK = 1 << 30
#: The block a streaming reader starts with (rows are parsed a block at a time).
STREAM_BLOCK = 1 << 20
_LONG_LINE = ("straddling object straddles two block boundaries", "Empty CSV file or block")
T = TypeVar("T")


def with_block_size(path: Path, read: Callable[[int | None], T]) -> T:
    """`read(block_size)` with pyarrow's default block first (None), then larger blocks while a line does
    not fit; a line longer than `MAX_BLOCK` is a clean InvalidInput."""
    block: int | None = None
    while True:
        try:
            return read(block)
        except pa.ArrowInvalid as exc:
            if not any(text in str(exc) for text in _LONG_LINE):
                raise
            block = (1 << 20 if block is None else block) * 8
            if block > MAX_BLOCK:
                raise _too_long(path) from None


def precheck(path: Path, fmt: str) -> None:
    """The bounds checked before pyarrow reads a text file: JSON nesting, then width."""
    if fmt == "jsonl":
        check_json_depth(path)
    if fmt in ("csv", "jsonl"):
        check_width(path, fmt)


def check_width(path: Path, fmt: str) -> None:
    """Refuse a CSV whose header (or a JSON-lines file whose first object) has more than
    `MAX_INPUT_COLUMNS` columns, before pyarrow builds a column for each."""
    with path.open("rb") as fh:
        first = fh.readline(MAX_BLOCK)
    if fmt == "csv":
        text = first.decode("utf-8", "replace")
        try:
            width = len(next(csv.reader([text]), []))
        except csv.Error:
            return  # pyarrow's reader names the error
    else:
        try:
            decoded = msgspec.json.decode(first) if first.strip() else {}
        except msgspec.DecodeError:
            return  # pyarrow's reader names the error
        width = len(decoded) if isinstance(decoded, dict) else 0
    if width > MAX_INPUT_COLUMNS:
        raise InvalidInput(
            f"{path} has {width:,} columns; the limit is {MAX_INPUT_COLUMNS:,}.",
            hint="Is the table transposed? Keep the columns you attach or import, one record per row.",
        )


def require_file(path: Path, what: str) -> None:
    """A file the user named must be one: a directory is InvalidInput (exit 2), a missing path NotFound (4)."""
    if path.is_dir():
        raise InvalidInput(f"{what} is a directory, not a file: {path}", hint="Name the file inside it.")
    if not path.is_file():
        raise NotFound(f"{what} not found: {path}")


def require_directory(path: Path, what: str) -> None:
    """A directory the user named (created if missing) must not be a file: a file there, or in place of a
    folder above it, is InvalidInput (exit 2), the counterpart of `require_file`."""
    for folder in (path, *path.parents):
        if folder.is_dir():
            return
        if folder.exists() or folder.is_symlink():
            raise InvalidInput(
                f"{what} is a file, not a directory: {folder}",
                hint="Name a folder (a missing one is created), not a file.",
            )


def import_batches(path: Path, fmt: str, *, batch_rows: int) -> Iterator[pa.Table]:
    """The import columns of `path` in format `fmt` (csv|jsonl|parquet|fasta), `batch_rows` rows at a time
    (the last batch may be shorter): an input of any size is read with about one batch in memory
    (docs/adr/0014). The file is checked (exists, format, width, nesting) before the first batch; a parse
    error at any batch is an InvalidInput."""
    if fmt not in FORMATS:
        raise InvalidInput(f"Unsupported input format '{fmt}'.", hint=f"Use one of: {', '.join(FORMATS)}.")
    require_file(path, "Input file")
    with _read_errors(path, fmt):
        precheck(path, fmt)
        if fmt == "csv":
            source = _csv_batches(path)
        elif fmt == "jsonl":
            source = _json_batches(path)
        elif fmt == "parquet":
            source = _parquet_batches(path, batch_rows)
        else:
            source = _fasta_batches(path, batch_rows)
    return guarded(path, fmt, regrouped(source, batch_rows))


@contextmanager
def _read_errors(path: Path, fmt: str) -> Iterator[None]:
    """pyarrow's read errors as InvalidInput naming the file."""
    try:
        yield
    except UnicodeDecodeError as exc:  # a CSV header: pyarrow decodes column names as UTF-8
        raise not_utf8(path, "its header", exc) from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InvalidInput(f"Cannot read {path} as {fmt}: {exc}") from exc


def guarded(path: Path, fmt: str, batches: Iterator[pa.Table]) -> Iterator[pa.Table]:
    while True:
        with _read_errors(path, fmt):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def restarting(path: Path, open_stream: Callable[[int], Iterator[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """The batches of `open_stream(block_size)`, blocks of `STREAM_BLOCK` bytes first; when a line does not
    fit in a block (found at any point of the file), blocks 8x larger from the start of the file, the rows
    already given skipped (up to `MAX_BLOCK`, like `with_block_size`)."""
    block = min(STREAM_BLOCK, MAX_BLOCK)
    given = 0
    while True:
        seen = 0
        try:
            for batch in open_stream(block):
                if seen + batch.num_rows > given:
                    fresh = batch.slice(max(given - seen, 0))
                    given += fresh.num_rows
                    yield fresh
                seen += batch.num_rows
            return
        except pa.ArrowInvalid as exc:
            if not any(text in str(exc) for text in _LONG_LINE):
                raise
            block *= 8
            if block > MAX_BLOCK:
                raise _too_long(path) from None


def _too_long(path: Path) -> InvalidInput:
    return InvalidInput(
        f"{path} holds a line longer than {MAX_BLOCK >> 20} MiB, the longest line this reader takes.",
        hint="Split the record (FASTA wraps long sequences over many lines) or supply Parquet.",
    )


def _csv_batches(path: Path) -> Iterator[pa.Table]:
    names = csv_names(path)
    wanted = [c for c in IMPORT_COLUMNS if c in names]
    if "sequence" not in wanted:
        raise SchemaError("Missing required column: 'sequence'.", hint=f"Columns found: {', '.join(names)}")
    options = pcsv.ConvertOptions(
        include_columns=wanted,
        column_types={c: pa.string() for c in wanted},
        strings_can_be_null=False,
    )

    def stream(block: int) -> Iterator[pa.RecordBatch]:
        with pcsv.open_csv(path, read_options=csv_options(block), convert_options=options) as reader:
            yield from reader

    return (pa.Table.from_batches([batch]) for batch in restarting(path, stream))


def _json_batches(path: Path) -> Iterator[pa.Table]:
    """JSON lines a block at a time: the import columns read as strings (`_select` names what is missing)."""
    schema = pa.schema([(c, pa.string()) for c in IMPORT_COLUMNS])
    parse = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")

    def stream(block: int) -> Iterator[pa.RecordBatch]:
        with pjson.open_json(path, read_options=json_options(block), parse_options=parse) as reader:
            yield from reader

    for batch in restarting(path, stream):
        table = valid_text(pa.Table.from_batches([batch]), path)
        present = [c for c in IMPORT_COLUMNS if table.column(c).null_count < table.num_rows]
        yield _select(table.select(present if "sequence" in present else [*present, "sequence"]))


def _parquet_batches(path: Path, rows: int) -> Iterator[pa.Table]:
    reader = pq.ParquetFile(path)
    names = reader.schema_arrow.names
    wanted = [c for c in IMPORT_COLUMNS if c in names]
    if "sequence" not in wanted:
        raise SchemaError("Missing required column: 'sequence'.", hint=f"Columns found: {', '.join(names)}")
    return (_select(pa.Table.from_batches([b])) for b in reader.iter_batches(batch_size=rows, columns=wanted))


#: The deepest JSON nesting accepted in input files and cells (pyarrow's JSON reader recurses per level:
#: some 20,000 levels overflow the stack). Real records nest a handful of levels.
MAX_JSON_DEPTH = 64
_NOT_OPENING = bytes(b for b in range(256) if b not in b"[{\n")
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]')


def json_depth(line: bytes) -> int:
    """The deepest nesting of brackets in one JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    for token in _JSON_TOKEN.finditer(line):
        first = token.group()[:1]
        if first in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif first in (b"]", b"}"):
            depth -= 1
    return deepest


def too_deep(data: bytes) -> int | None:
    """The 0-based index of the first line of `data` nested deeper than `MAX_JSON_DEPTH`, else None.
    Only lines holding more opening brackets than that are looked at closely (a C-speed filter first)."""
    counts = data.translate(None, _NOT_OPENING).split(b"\n")
    if max(map(len, counts), default=0) <= MAX_JSON_DEPTH:
        return None
    lines = data.split(b"\n")
    for index, opening in enumerate(counts):
        if len(opening) > MAX_JSON_DEPTH and json_depth(lines[index]) > MAX_JSON_DEPTH:
            return index
    return None


def check_json_depth(path: Path, *, chunk: int = 16 << 20) -> None:
    """Refuse a JSON-lines file with a line nested deeper than `MAX_JSON_DEPTH`, before pyarrow parses it."""
    lines_before = 0
    carry = b""
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            data = carry + block
            cut = data.rfind(b"\n") + 1
            whole, carry = (data[:cut], data[cut:]) if cut else (b"", data)
            _refuse_deep(path, whole, lines_before)
            lines_before += whole.count(b"\n")
    _refuse_deep(path, carry, lines_before)


def _refuse_deep(path: Path, data: bytes, lines_before: int) -> None:
    line = too_deep(data)
    if line is not None:
        raise InvalidInput(
            f"{path}: line {lines_before + line + 1} nests JSON deeper than {MAX_JSON_DEPTH} levels.",
            hint="Flatten the value; records nest a few levels at most.",
        )


def not_utf8(path: Path, where: str, exc: UnicodeDecodeError) -> InvalidInput:
    """The error for input that is not UTF-8 text, naming the file, where, and the first bad byte."""
    return InvalidInput(
        f"{path} is not UTF-8 text: {where} holds byte 0x{exc.object[exc.start]:02x}.",
        hint="Convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`).",
    )


def valid_text(table: pa.Table, path: Path) -> pa.Table:
    """`table` as read by pyarrow's JSON reader, which passes invalid UTF-8 through into string columns:
    refused here, before it reaches a payload."""
    try:
        table.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise InvalidInput(
            f"{path} is not UTF-8 text: {str(exc).strip().splitlines()[0]}.",
            hint="Convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`).",
        ) from None
    return table


def csv_options(block: int | None) -> pcsv.ReadOptions:
    return pcsv.ReadOptions(block_size=block) if block is not None else pcsv.ReadOptions()


def json_options(block: int | None) -> pjson.ReadOptions:
    return pjson.ReadOptions(block_size=block) if block is not None else pjson.ReadOptions()


def read_json_lines(path: Path, parse_options: pjson.ParseOptions | None = None) -> pa.Table:
    """A JSON-lines file read by pyarrow (the block grows for a long line)."""
    return with_block_size(
        path, lambda block: pjson.read_json(path, read_options=json_options(block), parse_options=parse_options)
    )


def csv_names(path: Path) -> list[str]:
    """The header of a CSV file (the block grows for a long header)."""

    def read(block: int | None) -> list[str]:
        with pcsv.open_csv(path, read_options=csv_options(block)) as reader:
            return list(reader.schema.names)

    return with_block_size(path, read)


def _select(table: pa.Table) -> pa.Table:
    wanted = [c for c in IMPORT_COLUMNS if c in table.column_names]
    if "sequence" not in wanted:
        raise SchemaError(
            "Missing required column: 'sequence'.", hint=f"Columns found: {', '.join(table.column_names)}"
        )
    return pa.table({c: table.column(c).cast(pa.string()) for c in wanted})


def _fasta_batches(path: Path, rows: int) -> Iterator[pa.Table]:
    """A FASTA file `rows` records at a time: one row per `>` record, sequence lines joined, header dropped."""
    sequences: list[str] = []
    current: list[str] | None = None
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise not_utf8(path, f"line {number}", exc) from None
            if text.startswith(">"):
                if current is not None:
                    sequences.append("".join(current))
                    if len(sequences) == rows:
                        yield pa.table({"sequence": pa.array(sequences, pa.string())})
                        sequences = []
                current = []
            elif text.startswith(";") or not text:
                continue
            elif current is None:
                raise InvalidInput(f"{path}: line {number} holds sequence data before the first '>' header.")
            else:
                current.append(text)
    if current is not None:
        sequences.append("".join(current))
    yield pa.table({"sequence": pa.array(sequences, pa.string())})


def rows_to_table(rows: Any) -> pa.Table:
    """Turn API input (list of str, list of dicts, Arrow table/batches, pandas frame) into a table."""
    if isinstance(rows, pa.Table):
        return _select(rows)
    if isinstance(rows, pa.RecordBatch):
        return _select(pa.Table.from_batches([rows]))
    if isinstance(rows, Iterable) and not isinstance(rows, (str, bytes, Mapping)) and not hasattr(rows, "columns"):
        items = list(rows)
        if all(isinstance(r, str) for r in items):
            return pa.table({"sequence": pa.array(items, pa.string())})
        if all(isinstance(r, Mapping) for r in items):
            return _select(pa.Table.from_pylist([dict(r) for r in items]))
        if all(isinstance(r, pa.RecordBatch) for r in items):
            return _select(pa.Table.from_batches(items))
        raise InvalidInput("rows must be strings, mappings or record batches, not a mix")
    try:
        return _select(pa.table(rows))
    except (TypeError, pa.ArrowInvalid) as exc:
        raise InvalidInput(f"cannot read rows of type {type(rows).__name__}: {exc}") from exc
