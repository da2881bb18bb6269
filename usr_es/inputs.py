"""Reading user input (CSV, JSONL, Parquet, FASTA files; Python rows) into Arrow tables.

Only the columns import uses are read (`sequence`, and `bio_type`/`alphabet` when present);
extra columns are ignored. CSV/JSONL/Parquet are parsed by pyarrow. FASTA has no parser among
our dependencies and its grammar is a header line plus sequence lines, so it is read here;
the header text is not part of the USR base schema and is not stored (see README).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from .errors import InvalidInput, NotFound, SchemaError

IMPORT_COLUMNS = ("sequence", "bio_type", "alphabet")
FORMATS = ("csv", "jsonl", "parquet", "fasta")


def read_import_file(path: Path, fmt: str) -> pa.Table:
    """Read the import columns of `path` in format `fmt` (csv|jsonl|parquet|fasta)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"Unsupported input format '{fmt}'.", hint=f"Use one of: {', '.join(FORMATS)}.")
    if not path.is_file():
        raise NotFound(f"Input file not found: {path}")
    try:
        if fmt == "csv":
            return _read_csv(path)
        if fmt == "jsonl":
            table = pjson.read_json(path)
            return _select(table)
        if fmt == "parquet":
            names = pq.read_schema(path).names
            return _select(pq.read_table(path, columns=[c for c in IMPORT_COLUMNS if c in names]))
        return read_fasta(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InvalidInput(f"Cannot read {path} as {fmt}: {exc}") from exc


def _read_csv(path: Path) -> pa.Table:
    with pcsv.open_csv(path) as reader:
        names = reader.schema.names
    wanted = [c for c in IMPORT_COLUMNS if c in names]
    if "sequence" not in wanted:
        raise SchemaError("Missing required column: 'sequence'.", hint=f"Columns found: {', '.join(names)}")
    options = pcsv.ConvertOptions(
        include_columns=wanted,
        column_types={c: pa.string() for c in wanted},
        strings_can_be_null=False,
    )
    return pcsv.read_csv(path, convert_options=options)


def _select(table: pa.Table) -> pa.Table:
    wanted = [c for c in IMPORT_COLUMNS if c in table.column_names]
    if "sequence" not in wanted:
        raise SchemaError(
            "Missing required column: 'sequence'.", hint=f"Columns found: {', '.join(table.column_names)}"
        )
    return pa.table({c: table.column(c).cast(pa.string()) for c in wanted})


def read_fasta(path: Path) -> pa.Table:
    """Read a FASTA file: one row per `>` record, sequence lines joined, header dropped."""
    sequences: list[str] = []
    current: list[str] | None = None
    with path.open("r", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.strip()
            if text.startswith(">"):
                if current is not None:
                    sequences.append("".join(current))
                current = []
            elif text.startswith(";") or not text:
                continue
            elif current is None:
                raise InvalidInput(f"{path}: line {number} holds sequence data before the first '>' header.")
            else:
                current.append(text)
    if current is not None:
        sequences.append("".join(current))
    return pa.table({"sequence": pa.array(sequences, pa.string())})


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
