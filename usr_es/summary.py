"""Dataset summaries from metadata, without reading rows: `usr info`, `usr ls` and `usr schema`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .checkpoints import list_checkpoints
from .errors import UsrError
from .names import ID, LAYOUT_FILE, RECORDS_FILE, TOMBSTONE_NS, WRITTEN
from .recovery import ReadHead, merged_overlay, read_consistently
from .results import ColumnInfo, DatasetInfo, DatasetSummary
from .roots import list_datasets
from .storage import read_layout


def base_schema(ds: ReadHead) -> pa.Schema:
    """The columns and types of records.parquet (caught up first)."""
    ds.fresh()
    return pq.read_schema(ds.records_path).remove_metadata()


def schema(ds: ReadHead) -> list[ColumnInfo]:
    """Name, registry type string and nullability of every column: the base file's, then each overlay
    namespace's (sorted, `usr` left out) as its part files declare them."""
    from .registry import format_type

    stored = base_schema(ds)
    fields = list(stored)
    doc = read_layout(ds.dir / LAYOUT_FILE)
    if doc is not None:
        seen = set(stored.names)
        for ns in sorted(n for n in doc[0].live if n != TOMBSTONE_NS):
            found: dict[str, pa.Field] = {}  # in order of first appearance, typed as the newest part types it
            for part in sorted(doc[0].live[ns], key=lambda p: p.mark.seq):
                if part.purge:
                    continue
                for f in pq.read_schema(ds.dir / part.file):
                    if f.name not in seen and f.name != ID and not f.name.startswith(WRITTEN):
                        found[f.name] = f  # the merge reads every part's values as the newest one's type
            fields.extend(found.values())
    return [ColumnInfo(f.name, format_type(f.type), f.nullable) for f in fields]


def info(ds: ReadHead) -> DatasetInfo:
    """Rows, columns, head seq, projection lag and sizes of a dataset (caught up first)."""
    mark, scan, lag = ds.fresh()
    rows, columns, meta, deleted = 0, [], {}, 0
    if mark is not None:
        metadata = pq.read_metadata(ds.records_path)
        rows = metadata.num_rows
        columns = [c.name for c in schema(ds)]
        deleted = _tombstoned_count(ds.dir)
        rows -= deleted
        meta = {k.decode(): v.decode() for k, v in (metadata.metadata or {}).items()}
    return DatasetInfo(
        name=ds.name,
        path=str(ds.dir),
        rows=rows,
        columns=columns,
        namespaces=sorted({c.split("__", 1)[0] for c in columns if "__" in c}),
        head_seq=scan.seq,
        projection_seq=scan.seq,
        projection_lag=lag,
        base_seq=mark.seq if mark is not None else 0,
        size_bytes=ds.records_path.stat().st_size if ds.records_path.exists() else 0,
        created_at=meta.get("usr:dataset_created_at"),
        updated=scan.last_timestamp,
        registry_hash=meta.get("usr:registry_hash"),
        torn_tail_bytes=scan.torn_bytes,
        deleted=deleted,
        checkpoints=[seq for seq, _ in list_checkpoints(ds.dir)],
    )


def _tombstoned_count(directory: Path) -> int:
    """How many base rows are tombstoned (0 without a `usr` overlay). Every tombstoned id is a base row:
    tombstones are written only for ids in the base, and rows leaving the base (`materialize
    --drop-deleted`) take their tombstones with them (ADR 0008)."""
    merged = merged_overlay(directory, TOMBSTONE_NS)
    if merged is None:
        return 0
    from .overlays import tombstoned_ids

    return len(tombstoned_ids(merged))


def list_all(root: Path) -> list[DatasetSummary]:
    """Summaries of every dataset under `root` (a broken one is listed with its error)."""
    from .original import unadopted

    out = []
    for ident in list_datasets(root):
        if unadopted(root / ident):
            out.append(_original_summary(ident, root / ident))
            continue
        head = ReadHead(ident, root / ident)
        try:  # an I/O error (a lagging dataset on read-only storage, say) is that dataset's `ReadError`
            found = read_consistently(head.dir, partial(info, head), what=f"info of {ident}")
        except UsrError as exc:  # one broken dataset must not hide the others
            out.append(
                DatasetSummary(
                    dataset=ident,
                    rows=0,
                    cols=0,
                    size_bytes=0,
                    updated=None,
                    head_seq=0,
                    error=str(exc),
                    status="error",
                )
            )
            continue
        out.append(
            DatasetSummary(
                dataset=ident,
                rows=found.rows,
                cols=len(found.columns),
                size_bytes=found.size_bytes,
                updated=found.updated,
                head_seq=found.head_seq,
            )
        )
    return out


def _original_summary(ident: str, directory: Path) -> DatasetSummary:
    """A dataset the original USR wrote, as its records.parquet footer describes it (no row is read)."""
    path = directory / RECORDS_FILE
    try:
        metadata = pq.read_metadata(path)
        rows, cols, size = metadata.num_rows, metadata.num_columns, path.stat().st_size
    except (OSError, pa.ArrowInvalid):
        rows = cols = size = 0
    return DatasetSummary(
        dataset=ident,
        rows=rows,
        cols=cols,
        size_bytes=size,
        updated=None,
        head_seq=0,
        error=f"written by the original USR; run `usr adopt {ident}`",
        status="original",
    )
