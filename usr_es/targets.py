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


#: Chooses one of several Parquet files in a folder (the CLI's numbered picker on a terminal); None: refuse.
Picker = Callable[[list[Path]], Path]


def choose_file(directory: Path, glob: str | None = None, pick: Picker | None = None) -> Path:
    """The one Parquet file a folder target names, as the original picks it: the files matching `glob`,
    else `records.parquet`, else `events*.parquet`, else any `*.parquet` in the folder. Several: `pick`
    chooses (a terminal's picker), else InvalidInput listing them -- never several files read as one."""
    if glob is not None:
        found = sorted(p for p in directory.glob(glob) if p.is_file() and p.suffix == ".parquet")
    else:
        found = []
        for pattern in ("records.parquet", "events*.parquet", "*.parquet"):
            found = sorted(p for p in directory.glob(pattern) if p.is_file())
            if found:
                break
    if not found:
        raise NotFound(f"No .parquet file{f' matching {glob!r}' if glob else ''} in {directory}")
    if len(found) == 1:
        return found[0]
    if pick is not None:
        return pick(found)
    names = ", ".join(p.name for p in found[:10]) + (", ..." if len(found) > 10 else "")
    raise InvalidInput(
        f"{directory} holds {len(found)} Parquet files: {names}",
        hint="Name one: pass its path, or --glob NAME (usr cols/cell) to select it.",
    )


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


def target_head(
    path: Path | str, n: int = 10, columns: Sequence[str] | None = None, *, pick: Picker | None = None
) -> pa.Table:
    """The first `n` rows of a dataset directory, a Parquet file, or the one Parquet file a folder names
    (`choose_file`)."""
    if n < 0:
        raise InvalidInput("head row count must be >= 0.")
    kind, target = _target(path)
    if kind == "dataset":
        return head(ReadHead.at(target), n, columns=list(columns) if columns else None)
    if kind == "dir":
        kind, target = "file", choose_file(target, pick=pick)
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
    raise AssertionError(f"unexpected target kind {kind}")


def target_columns(path: Path | str, glob: str | None = None, *, pick: Picker | None = None) -> list[ColumnInfo]:
    """Columns (name, registry type, nullable) of a dataset view or a Parquet target. `glob`: for a folder,
    which of its files (`choose_file`), as in the original; for a dataset, which column names."""
    from .registry import format_type

    kind, target = _target(path)
    if kind == "dataset":
        return [c for c in columns(ReadHead.at(target)) if glob is None or fnmatchcase(c.name, glob)]
    if kind == "dir":
        target = choose_file(target, glob, pick)
    schema = _open_parquet(target).schema_arrow
    return [ColumnInfo(f.name, _format(format_type, f.type), f.nullable) for f in schema]


def _format(format_type: Callable[[pa.DataType], str], dtype: pa.DataType) -> str:
    from .errors import NamespaceError

    try:
        return format_type(dtype)
    except NamespaceError:  # a type outside the registry grammar (plain Parquet files may hold any)
        return str(dtype)


def cell(
    target: Path | str | ReadHead,
    row: int,
    column: str,
    *,
    include_deleted: bool = False,
    glob: str | None = None,
    pick: Picker | None = None,
) -> Any:
    """The Python value at 0-based `row`, `column` of a dataset's live view (its head or a dataset
    directory: base order, tombstoned rows not counted unless `include_deleted`) or of a Parquet
    file, or the one a folder names (`choose_file`, `glob`)."""
    if isinstance(target, ReadHead):
        return dataset_cell(target, row, column, include_deleted=include_deleted)
    if row < 0:
        raise InvalidInput(f"Row {row} is negative; rows count from 0.")
    kind, path = _target(target)
    if kind == "dataset":
        return dataset_cell(ReadHead.at(path), row, column, include_deleted=include_deleted)
    files = [path] if kind == "file" else [choose_file(path, glob, pick)]
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
