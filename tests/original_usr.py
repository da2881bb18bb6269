"""Build dataset folders the way the original USR writes them (its README and inventory §3-§4), and compute
what the original's views show for them, independently of usr_es: the tests of `usr adopt` compare the two.

Only what the original's reads depend on is modelled: the base table and its metadata, compact overlays and
part folders with their metadata, materialized `<ns>__` and `usr__` columns, `meta.md`, frozen registries,
snapshots and an `.events.log` of the original's lines (one per action it emits).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

BASE_TYPES = {
    "id": pa.string(),
    "bio_type": pa.string(),
    "sequence": pa.string(),
    "alphabet": pa.string(),
    "length": pa.int32(),
    "source": pa.string(),
    "created_at": pa.timestamp("us", tz="UTC"),
}
TOMB_TYPES = {
    "usr__deleted": pa.bool_(),
    "usr__deleted_at": pa.timestamp("us", tz="UTC"),
    "usr__deleted_reason": pa.string(),
}
#: Every action the original USR library writes to `.events.log` (inventory §4.2).
ORIGINAL_ACTIONS = (
    "init",
    "import_rows",
    "attach",
    "write_overlay_part",
    "registry_freeze",
    "snapshot",
    "materialize",
    "dedupe",
    "merge_datasets",
    "tombstone",
    "restore",
    "state_set",
    "state_clear",
    "compact_overlay",
    "archive_overlay",
    "remove_overlay",
    "refresh_overlay_metadata",
    "write_overlay_digest_ledger",
    "event_log_garden",
    "implicit_file_pick",
    "genbank_import",
    "write_sequence_views",
    "write_view_semantics",
    "repair_sequence_view_alias_conflicts",
    "make_mock",
    "add_demo_cols",
    "convert_legacy",
    "repair_densegen",
)
REGISTRY_HASH = "ab" * 32


def sha1_id(bio_type: str, sequence: str) -> str:
    return hashlib.sha1(f"{bio_type}|{sequence.strip()}".encode()).hexdigest()


def stamp(second: int) -> datetime:
    return datetime(2026, 1, 2, 3, 4, second, 123456, tzinfo=UTC)


def iso(second: int) -> str:
    return stamp(second).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Overlay:
    """One original overlay file: `rows` keyed by `key` (id or sequence) with namespaced values."""

    rows: list[dict[str, Any]]
    types: dict[str, pa.DataType]
    key: str = "id"
    created: int = 10  # second of usr:overlay_created_at
    name: str = ""  # part file name; "" for a compact file


@dataclass
class OriginalFolder:
    """An original dataset: base rows (with optional materialized columns), overlays per namespace."""

    name: str
    sequences: list[str]
    bio_type: str = "dna"
    alphabet: str = "dna_4"
    extra: dict[str, tuple[pa.DataType, list[Any]]] = field(default_factory=dict)  # materialized columns
    overlays: dict[str, list[Overlay]] = field(default_factory=dict)
    bad_ids: dict[int, str] = field(default_factory=dict)  # row -> stored id that is not the sha1
    snapshots: int = 2
    log: bool = True

    def ids(self) -> list[str]:
        return [self.bad_ids.get(i, sha1_id(self.bio_type, s)) for i, s in enumerate(self.sequences)]

    def base(self) -> pa.Table:
        n = len(self.sequences)
        columns: dict[str, pa.Array] = {
            "id": pa.array(self.ids(), pa.string()),
            "bio_type": pa.array([self.bio_type] * n, pa.string()),
            "sequence": pa.array(self.sequences, pa.string()),
            "alphabet": pa.array([self.alphabet] * n, pa.string()),
            "length": pa.array([len(s) for s in self.sequences], pa.int32()),
            "source": pa.array([f"batch-{i % 3}" for i in range(n)], pa.string()),
            "created_at": pa.array([stamp(i % 50) for i in range(n)], pa.timestamp("us", tz="UTC")),
        }
        for name, (dtype, values) in self.extra.items():
            columns[name] = pa.array(values, dtype)
        meta = {
            "usr:schema_version": "1",
            "usr:id_hash": "sha1_utf8_pipe",
            "usr:dataset_created_at": iso(1),
            "usr:registry_hash": REGISTRY_HASH,
        }
        return pa.table(columns).replace_schema_metadata(meta)

    def write(self, root: Path) -> Path:
        folder = root / self.name
        folder.mkdir(parents=True)
        pq.write_table(self.base(), folder / "records.parquet", compression="zstd")
        (folder / "_registry").mkdir()
        (folder / "_registry" / f"registry.{REGISTRY_HASH}.yaml").write_text("namespaces: {}\n")
        (folder / "_snapshots").mkdir()
        for k in range(self.snapshots):
            pq.write_table(self.base(), folder / "_snapshots" / f"records-20260102T0304{k:02d}000000.parquet")
        for ns, files in self.overlays.items():
            for overlay in files:
                _write_overlay(folder, ns, overlay)
        (folder / "meta.md").write_text(
            f"name: {self.name}\ncreated_at: {iso(1)}\nsource: original test\nnotes: made by tests\n"
            f"schema: USR v1\n\n### Updates (2026-01-02)\n- {iso(2)}: initialized dataset.\n",
            encoding="utf-8",
        )
        if self.log:
            (folder / ".events.log").write_bytes(original_log(self.name, "/data/usr_datasets"))
        return folder

    def view(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """The rows the original's `head`/`export` show, in base order, as Python values."""
        rows = self.base().replace_schema_metadata(None).to_pylist()
        by_id = {row["id"]: row for row in rows}
        by_sequence = {row["sequence"].strip(): row["id"] for row in rows}
        for ns, files in self.overlays.items():
            ordered = sorted(files, key=lambda o: (o.created, o.name or f"{ns}.parquet"))
            columns = sorted({c for o in ordered for c in o.types})
            for row in rows:
                for column in columns:
                    row.setdefault(column, None)
            for overlay in ordered:  # newer non-null values win, per column
                for values in overlay.rows:
                    key = values[overlay.key]
                    rid = key if overlay.key == "id" else by_sequence.get(key.strip())
                    if rid not in by_id:
                        continue
                    for column in overlay.types:
                        if values.get(column) is not None:
                            by_id[rid][column] = values[column]
        if not include_deleted:
            rows = [row for row in rows if not row.get("usr__deleted")]
            for row in rows:
                for column in TOMB_TYPES:
                    row.pop(column, None)
        return rows


def _write_overlay(folder: Path, ns: str, overlay: Overlay) -> None:
    key_type = pa.string()
    arrays = {overlay.key: pa.array([r[overlay.key] for r in overlay.rows], key_type)}
    for column, dtype in overlay.types.items():
        arrays[column] = pa.array([r.get(column) for r in overlay.rows], dtype)
    meta = {
        "usr:overlay_namespace": ns,
        "usr:overlay_key": overlay.key,
        "usr:overlay_created_at": iso(overlay.created),
        "usr:registry_hash": REGISTRY_HASH,
    }
    if ns != "usr":
        meta["usr:namespace_contract_hash"] = "cd" * 32
    table = pa.table(arrays).replace_schema_metadata(meta)
    if overlay.name:
        (folder / "_derived" / ns).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "_derived" / ns / overlay.name)
    else:
        (folder / "_derived").mkdir(exist_ok=True)
        pq.write_table(table, folder / "_derived" / f"{ns}.parquet")


def original_log(name: str, root: str) -> bytes:
    """One original line per action, key order as the original writes them (inventory §4.1)."""
    lines = []
    for k, action in enumerate(ORIGINAL_ACTIONS):
        record = {
            "event_version": 1,
            "timestamp_utc": iso(k % 60),
            "action": action,
            "dataset": {"name": name, "root": root},
            "args": {"n": k, "token": "***REDACTED***"},
            "metrics": {"rows_written": k},
            "artifacts": {},
            "maintenance": {},
            "fingerprint": {"rows": k, "cols": 7, "size_bytes": 1000 + k},
            "registry_hash": REGISTRY_HASH,
            "actor": {"tool": "usr", "run_id": "usr-pid-1", "host": "vm", "pid": 1},
            "version": "0.1.0",
        }
        lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    return b"".join(lines)
