"""Export record batches to csv/jsonl/parquet files (the JSON rules for Arrow data are in `jsontext`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .errors import InvalidInput
from .fileio import SeamFile, atomic_file, fileops
from .inputs import require_directory
from .jsontext import TEXT, hex_cells, is_binary, json_text, jsonl_buffer, rfc3339, str_cells
from .prefetch import prefetched
from .reads import scan_with_schema
from .results import ExportResult

if TYPE_CHECKING:
    from .recovery import ReadHead

EXPORT_FORMATS = ("csv", "jsonl", "parquet")

#: Output row groups hold at least this many rows (small input batches are buffered) ...
ROW_GROUP_ROWS = 1 << 17
#: ... unless the buffered batches already hold this many bytes.
ROW_GROUP_BYTES = 64 << 20


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
    path is the file itself, and its missing parent folders are created when the file is written
    (as the original `usr export` did; nothing is created here). A path ending in a separator names
    a directory, created likewise if missing. A file in the way of those folders is InvalidInput.
    An existing file is replaced, as the original `usr export` did: the new file is written next to it
    and renamed over it at the end, so a failed export leaves the old file untouched. With
    `dataset_dir`, a target that is one of the dataset's own files (`records.parquet`, `meta.md`,
    hidden files, anything in its subfolders) is refused; other files beside them are allowed
    (`usr export --fmt csv --out records.csv` inside a dataset folder).
    """
    fmt = check_format(fmt)
    wants_dir = isinstance(out, str) and out.endswith((os.sep, "/"))
    out = Path(out)
    into_folder = wants_dir or out.is_dir()
    target = out / f"{dataset_name.replace('/', '_')}.{fmt}" if into_folder else out
    require_directory(target.parent, "Output directory")
    if into_folder:
        limit = _name_max(out)
        if len(os.fsencode(target.name)) + len(b".export-tmp-") + 20 > limit:  # with the temp file's prefix
            raise InvalidInput(
                f"the default export file name for {dataset_name} is too long for {out} ({limit} bytes at most)",
                hint="pass a file path to --out (e.g. --out export.csv)",
            )
        if target.is_dir():
            raise InvalidInput(f"export target {target} is a directory", hint="pass a file path to --out")
    _refuse_dataset_file(target, dataset_dir)
    return target


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
    per row group). The file is written to a temp file in `path`'s directory (created with any missing
    parents), fsync'd (unless `durable=False`) and renamed over `path`; on any error the temp file is
    removed and `path` is left as it was. `progress(rows_so_far)` is called after each batch.

    parquet: Arrow types kept, schema metadata = `metadata` when given (the dataset's `usr:*`
    keys), else the schema's own; snappy compression (the pyarrow default and the fastest).
    csv: header row; list/struct/map cells as JSON text, timestamps RFC 3339, binary as hex,
    NaN/inf as `nan`/`inf`, nulls empty. jsonl: one JSON object per row (see `json_text`).
    """
    fmt = check_format(fmt)
    path = Path(path)
    fileops().mkdir(path.parent)  # the original's export created missing folders too
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
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or is_binary(t)):
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
        return str_cells(arr) if t.extension_name == "arrow.uuid" else _csv_column(arr.storage)
    if pa.types.is_timestamp(t):
        return rfc3339(arr)
    if is_binary(t):
        return hex_cells(arr)
    if pa.types.is_float16(t):
        return arr.cast(pa.float32())
    if pa.types.is_string_view(t):
        return arr.cast(TEXT)
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
    return pc.if_else(pc.is_valid(arr), json_text(arr), pa.scalar(None, TEXT))  # nested: JSON text, null empty


def _csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([_csv_column(c) for c in batch.columns], names=batch.schema.names)


def _write_csv(batches: Iterable[pa.RecordBatch], schema: pa.Schema, sink: SeamFile) -> None:
    empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    csv_schema = _csv_batch(empty).schema
    with pcsv.CSVWriter(sink, csv_schema) as writer:
        for batch in batches:  # conformed to `schema` by `_counted`, so each converts to `csv_schema`
            writer.write_batch(_csv_batch(batch))


def export_dataset(
    ds: ReadHead,
    fmt: str,
    out: Path | str,
    *,
    columns: list[str] | None = None,
    include_deleted: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export the live view of `ds` (see `Dataset.export`): the format and the target are checked
    before anything is created; the view is streamed batch by batch (bounded memory)."""

    target = export_target(out, ds.name, fmt, dataset_dir=ds.dir)  # checks the format first
    schema, batches, metadata = scan_with_schema(ds, columns=columns, include_deleted=include_deleted)
    metadata["usr:dataset"] = ds.name
    return write_export(prefetched(batches), schema, fmt, target, metadata=metadata, progress=progress, dataset=ds.name)


def _name_max(folder: Path) -> int:
    """The longest file name the file system holding `folder` accepts (255 where it cannot be asked)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255
