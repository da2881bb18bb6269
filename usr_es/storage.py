"""Dataset files other than the log: payload artifacts, frozen registries, projection files.

Payloads are immutable Arrow IPC files (zstd-compressed buffers) named by the xxh3-128 digest
of their bytes, fsync'd before the log line that references them, and verified on every read.
Projection files are published atomically through the I/O seam and carry their watermark.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from .errors import IntegrityError, NotFound
from .events import PayloadRef
from .fileio import fileops, write_atomic, write_once
from .names import PAYLOAD_DIR, RECORDS_FILE, REGISTRY_DIR
from .projectors import BaseProjection, DerivedLayout, PartInfo, Watermark
from .registry import Registry, parse_registry

_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1))


def encode_payload(table: pa.Table) -> memoryview:
    """Arrow IPC file bytes of `table` (zstd-compressed buffers, one record batch per chunk)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=_IPC_OPTIONS) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue()).cast("B")  # Arrow buffers export signed bytes ('b')


def payload_ref(data: bytes | memoryview, rows: int) -> PayloadRef:
    digest = xxhash.xxh3_128_hexdigest(data)
    return PayloadRef(file=f"{PAYLOAD_DIR}/{digest}.arrow", digest=digest, rows=rows, size_bytes=len(data))


def write_payload(dataset_dir: Path, ref: PayloadRef, data: bytes | memoryview) -> None:
    """Write the artifact durably (temp, fsync, rename, fsync dir) unless it already exists."""
    fileops().mkdir(dataset_dir / PAYLOAD_DIR)
    write_once(dataset_dir / ref.file, data, point="payload")
    fileops().point("after_payload")


def read_payload(dataset_dir: Path, ref: PayloadRef) -> pa.Table:
    """Read a payload artifact, checking its size and digest first."""
    path = dataset_dir / ref.file
    try:
        data = fileops().read_bytes(path)
    except FileNotFoundError:
        raise IntegrityError(f"payload artifact missing: {ref.file}") from None
    if len(data) != ref.size_bytes or xxhash.xxh3_128_hexdigest(data) != ref.digest:
        raise IntegrityError(f"payload artifact {ref.file} does not match its digest")
    table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    if table.num_rows != ref.rows:
        raise IntegrityError(f"payload artifact {ref.file} holds {table.num_rows} rows, expected {ref.rows}")
    return table


def freeze_registry(dataset_dir: Path, registry: Registry) -> str:
    """Keep a frozen copy `_registry/registry.<hash>.yaml`; return the registry hash."""
    digest = registry.hash
    path = dataset_dir / REGISTRY_DIR / f"registry.{digest}.yaml"
    if not path.exists():  # frozen copies are immutable: render the YAML only when it is missing
        fileops().mkdir(dataset_dir / REGISTRY_DIR)
        write_once(path, registry.to_yaml(), point="registry")
    return digest


def frozen_registry(dataset_dir: Path, digest: str) -> Registry:
    path = dataset_dir / REGISTRY_DIR / f"registry.{digest}.yaml"
    if not path.is_file():
        raise NotFound(f"frozen registry {path.name} is missing from {dataset_dir}")
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != digest:  # written as the canonical YAML its hash is taken of
        raise IntegrityError(f"frozen registry {path.name} does not match its hash")
    return parse_registry(raw, source=str(path))


def read_base(dataset_dir: Path, mark: Watermark, *, columns: list[str] | None = None) -> BaseProjection:
    """Load `records.parquet` as a projection (its watermark already checked by the caller).

    With `columns`, only those columns are read (the row count is kept): a partial projection for
    commands that need no more, which the caller must not encode or fold events into.
    """
    table = pq.read_table(dataset_dir / RECORDS_FILE, columns=columns)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if table.num_columns:  # on a table without columns, replace_schema_metadata would lose the row count
        table = table.replace_schema_metadata(None)
    return BaseProjection(
        table=table,
        created_at=meta.get("usr:dataset_created_at", ""),
        registry_hash=meta.get("usr:registry_hash"),
        watermark=mark,
    )


class _LayoutDoc(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int
    offset: int
    hash: str
    live: dict[str, list[PartInfo]]
    archived: list[PartInfo]
    folded: dict[str, int] = {}


_layout_encoder = msgspec.json.Encoder(order="sorted")
_layout_decoder = msgspec.json.Decoder(_LayoutDoc)


def encode_layout(layout: DerivedLayout, mark: Watermark) -> bytes:
    """`_derived/layout.json`: which overlay parts exist, stamped with the event it reflects."""
    doc = _LayoutDoc(
        seq=mark.seq,
        offset=mark.offset,
        hash=mark.hash,
        live={ns: list(parts) for ns, parts in layout.live.items()},
        archived=list(layout.archived),
        folded=dict(layout.folded),
    )
    return _layout_encoder.encode(doc) + b"\n"


def read_layout(path: Path) -> tuple[DerivedLayout, Watermark] | None:
    """The stored overlay layout and its watermark, or None when absent or unreadable."""
    try:
        doc = _layout_decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    layout = DerivedLayout(
        live={ns: tuple(parts) for ns, parts in doc.live.items()}, archived=tuple(doc.archived), folded=doc.folded
    )
    return layout, Watermark(seq=doc.seq, offset=doc.offset, hash=doc.hash)


def publish(path: Path, data: bytes | memoryview | list[bytes | memoryview]) -> None:
    write_atomic(path, data, point=path.name)
