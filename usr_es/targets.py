"""Reads of any Parquet target: a dataset folder (its live view), a Parquet file, or a folder of Parquet files
(`usr head`, `usr cols`, `usr cell` take a path as well as a dataset id)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InvalidInput, NotFound
from .names import LOG_FILE
from .reads import columns, dataset_cell, head
from .recovery import ReadHead
from .results import ColumnInfo


def _target(path: Path | str) -> tuple[str, Path]:
    """('dataset' | 'file' | 'dir', resolved path)."""
    target = Path(path).expanduser()
    if target.is_dir():
        return ("dataset" if (target / LOG_FILE).is_file() else "dir"), target
    if target.is_file():
        return "file", target
    raise NotFound(f"No such file or directory: {target}")


def _parquet_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.rglob("*.parquet") if p.is_file())
    if not files:
        raise NotFound(f"No .parquet files under {directory}")
    return files


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidInput(f"Not a readable Parquet file: {path} ({exc})") from None


def _check_columns(names: list[str], columns: Sequence[str] | None) -> list[str] | None:
    if not columns:
        return None
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise InvalidInput(f"Unknown column(s): {', '.join(unknown)}.", hint=f"Columns: {', '.join(names)}")
    return list(columns)


def target_head(path: Path | str, n: int = 10, columns: Sequence[str] | None = None) -> pa.Table:
    """The first `n` rows of a dataset directory, a Parquet file, or the Parquet files under a directory."""
    if n < 0:
        raise InvalidInput("head row count must be >= 0.")
    kind, target = _target(path)
    if kind == "dataset":
        return head(ReadHead.at(target), n, columns=list(columns) if columns else None)
    if kind == "file":
        parquet = _open_parquet(target)
        names = parquet.schema_arrow.names
        wanted = _check_columns(names, columns)
        schema = parquet.schema_arrow if wanted is None else pa.schema([parquet.schema_arrow.field(c) for c in wanted])
        batches, got = [], 0
        if n:
            for batch in parquet.iter_batches(batch_size=n, columns=wanted):
                batches.append(batch.slice(0, n - got))
                got += batches[-1].num_rows
                if got >= n:
                    break
        return pa.Table.from_batches(batches, schema=schema)
    import pyarrow.dataset as pads

    try:
        data = pads.dataset([str(p) for p in _parquet_files(target)], format="parquet")
        wanted = _check_columns(data.schema.names, columns)
        return data.head(n, columns=wanted)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidInput(f"Cannot read the Parquet files under {target} as one table: {exc}") from None


def target_columns(path: Path | str, glob: str | None = None) -> list[ColumnInfo]:
    """Columns (name, registry type, nullable) of a dataset view or Parquet target; `glob` filters names."""
    from .registry import format_type

    kind, target = _target(path)
    if kind == "dataset":
        infos = columns(ReadHead.at(target))
    else:
        if kind == "file":
            schema = _open_parquet(target).schema_arrow
        else:
            schema = _open_parquet(_parquet_files(target)[0]).schema_arrow
        infos = [ColumnInfo(f.name, _format(format_type, f.type), f.nullable) for f in schema]
    return [c for c in infos if glob is None or fnmatchcase(c.name, glob)]


def _format(format_type: Callable[[pa.DataType], str], dtype: pa.DataType) -> str:
    from .errors import NamespaceError

    try:
        return format_type(dtype)
    except NamespaceError:  # a type outside the registry grammar (plain Parquet files may hold any)
        return str(dtype)


def cell(target: Path | str | ReadHead, row: int, column: str, *, include_deleted: bool = False) -> Any:
    """The Python value at 0-based `row`, `column` of a dataset's live view (its head or a dataset
    directory: base order, tombstoned rows not counted unless `include_deleted`) or of a Parquet
    file or directory of Parquet files (file order; files in sorted path order)."""
    if isinstance(target, ReadHead):
        return dataset_cell(target, row, column, include_deleted=include_deleted)
    if row < 0:
        raise InvalidInput(f"Row {row} is negative; rows count from 0.")
    kind, path = _target(target)
    if kind == "dataset":
        return dataset_cell(ReadHead.at(path), row, column, include_deleted=include_deleted)
    files = [path] if kind == "file" else _parquet_files(path)
    start = 0
    for file in files:
        parquet = _open_parquet(file)
        _check_columns(parquet.schema_arrow.names, [column])
        meta = parquet.metadata
        for group in range(meta.num_row_groups):
            size = meta.row_group(group).num_rows
            if row < start + size:
                offset = row - start
                for batch in parquet.iter_batches(batch_size=offset + 1, row_groups=[group], columns=[column]):
                    return batch.column(0)[offset].as_py()
            start += size
    raise InvalidInput(f"Row {row} is out of range: the target has {start} row(s).")
