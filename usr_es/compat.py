"""The original USR's Python `Dataset`, over usr_es: pipelines written against `dnadesign.usr` run with
their import line changed to `from usr_es.compat import Dataset` (README, "Coming from USR").

Reads return pandas DataFrames, as the original's do (install the `pandas` extra); writes return the
original's counts and results. Every call goes through the native, Arrow-first `usr_es.Dataset` (one write
path, the log is the truth); `.native` is that object. What the original did that usr_es does differently
is said where it happens: a maintenance-only operation outside `maintenance(...)` is refused as the
original refused it; `created_at` for imported rows is the import's own time (the event's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from . import dataset as _native
from .errors import InvalidInput, SchemaError
from .names import ESSENTIAL_COLUMNS
from .results import DatasetInfo, ValidateReport

if TYPE_CHECKING:
    import pandas as pd


class AddSequencesResult(NamedTuple):
    """What `add_sequences` did: rows added, rows skipped as already present, and the ids added."""

    added: int
    skipped: int
    ids: list[str]


def _frame(table: pa.Table) -> pd.DataFrame:
    try:
        import pandas  # noqa: F401  (pyarrow converts through it)
    except ImportError as exc:
        raise InvalidInput(
            "usr_es.compat returns pandas DataFrames, and pandas is not installed.",
            hint="pip install 'usr_es[pandas]' (or use usr_es.Dataset, which returns Arrow tables).",
        ) from exc
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _acting(native: _native.Dataset, actor: dict[str, Any] | None) -> contextlib.AbstractContextManager[Any]:
    """The original's `actor=` ({tool, run_id, ...}) as the event's actor, for one call."""
    if actor is None:
        return contextlib.nullcontext()
    tool, run_id = str(actor.get("tool") or "").strip(), str(actor.get("run_id") or "").strip()
    if not tool or not run_id:
        raise SchemaError("actor must carry a non-empty 'tool' and 'run_id'.")
    return native.acting_as(tool, run_id)


class Dataset:
    """`dnadesign.usr.Dataset`, backed by a usr_es dataset."""

    def __init__(self, root: Path | str, name: str) -> None:
        self.native = _native.Dataset.open(root, name)
        self.root = self.native.root
        self.name = self.native.name
        self._maintenance: str | None = None  # the reason given to the open `maintenance(...)` block

    @classmethod
    def open(cls, root: Path | str, name_or_path: str | Path) -> Dataset:
        native = _native.Dataset.open(root, name_or_path)
        out = cls.__new__(cls)
        out.native, out.root, out.name, out._maintenance = native, native.root, native.name, None
        return out

    # -- paths, as the original names them ------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.native.dir

    @property
    def records_path(self) -> Path:
        return self.native.records_path

    @property
    def events_path(self) -> Path:
        return self.native.log_path

    @property
    def meta_path(self) -> Path:
        return self.native.dir / "meta.md"

    @property
    def snapshot_dir(self) -> Path:
        return self.native.dir / "_snapshots"

    # -- writes ---------------------------------------------------------------------------------------
    def init(self, source: str = "", notes: str = "", actor: dict[str, Any] | None = None) -> None:
        with _acting(self.native, actor):
            self.native.init(source=source, notes=notes)

    def add_sequences(
        self,
        rows_or_sequences: Any,
        *,
        bio_type: str = "dna",
        alphabet: str = "dna_4",
        source: str = "",
        created_at: Any = None,
        on_conflict: str = "error",
        actor: dict[str, Any] | None = None,
    ) -> AddSequencesResult:
        """Add sequences (strings, dicts or a frame); `on_conflict="ignore"` skips ids already present."""
        from .alphabet import compute_id
        from .inputs import rows_to_table

        if created_at is not None:
            raise InvalidInput(
                "created_at cannot be set: usr_es stamps imported rows with the import's own time (its event's).",
            )
        if on_conflict not in ("error", "ignore"):
            raise InvalidInput(f"on_conflict must be 'error' or 'ignore', not {on_conflict!r}.")
        table = (
            _native.as_table(rows_or_sequences)
            if hasattr(rows_or_sequences, "columns")
            else rows_to_table(rows_or_sequences)
        )
        wanted = list(
            dict.fromkeys(
                compute_id(
                    str(row.get("bio_type") or bio_type),
                    str(row["sequence"] or "").strip(),
                )
                for row in table.select([c for c in ("sequence", "bio_type") if c in table.column_names]).to_pylist()
            )
        )
        present = set()
        if on_conflict == "ignore" and self.native.exists and wanted:
            found = self.native.get(wanted, columns=["id"], include_deleted=True, allow_missing=True)
            present = set(found.column("id").to_pylist())
        with _acting(self.native, actor):
            receipt = self.native.add_sequences(
                table,
                bio_type=bio_type,
                alphabet=alphabet,
                source=source,
                on_conflict="skip" if on_conflict == "ignore" else "error",
            )
        added = [i for i in wanted if i not in present]
        return AddSequencesResult(added=receipt.rows_written, skipped=table.num_rows - receipt.rows_written, ids=added)

    def import_rows(
        self,
        rows: Any,
        default_bio_type: str = "dna",
        default_alphabet: str = "dna_4",
        source: str | None = None,
        strict_id_check: bool = True,
        actor: dict[str, Any] | None = None,
    ) -> int:
        """Strict append of rows (a frame or dicts); returns how many were written. An `id` column must hold
        every row's computed id (the import's own check, a SchemaError); `strict_id_check=False` ignores it."""
        from .inputs import rows_to_table

        table = _native.as_table(rows) if hasattr(rows, "columns") else rows_to_table(rows)
        if not strict_id_check and "id" in table.column_names:
            table = table.drop_columns(["id"])
        with _acting(self.native, actor):
            receipt = self.native.add_sequences(
                table, bio_type=default_bio_type, alphabet=default_alphabet, source=source or ""
            )
        return receipt.rows_written

    def attach(
        self,
        path: Path | str,
        namespace: str,
        *,
        key: str,
        key_col: str | None = None,
        columns: list[str] | None = None,
        allow_overwrite: bool = False,
        allow_missing: bool = False,
        parse_json: bool = True,
        backend: str = "pyarrow",
        note: str = "",
        actor: dict[str, Any] | None = None,
    ) -> int:
        """Attach namespaced columns from a file; returns the rows matched."""
        if backend not in ("pyarrow", "duckdb"):
            raise InvalidInput(f"backend must be 'pyarrow' or 'duckdb', not {backend!r}.")
        with _acting(self.native, actor):
            receipt = self.native.attach(
                path,
                namespace=namespace,
                key=key,  # type: ignore[arg-type]  # checked by the command
                key_col=key_col,
                columns=columns,
                allow_overwrite=allow_overwrite,
                allow_missing=allow_missing,
                parse_json=parse_json,
                note=note,
            )
        return int(receipt.metrics.get("rows_written", receipt.metrics.get("rows_matched", 0)))

    attach_columns = attach

    def write_overlay(
        self,
        namespace: str,
        table_or_batches: Any,
        *,
        key: str = "id",
        key_col: str | None = None,
        overwrite: bool = False,
        allow_missing: bool = False,
        actor: dict[str, Any] | None = None,
    ) -> int:
        """Write namespaced columns held in memory (a frame, an Arrow table or batches); returns the rows written."""
        with _acting(self.native, actor):
            receipt = self.native.write_overlay(
                namespace,
                _native.as_table(table_or_batches),
                key=key,  # type: ignore[arg-type]  # checked by the command
                key_col=key_col,
                allow_overwrite=overwrite,
                allow_missing=allow_missing,
            )
        return int(receipt.metrics.get("rows_written", 0))

    def write_overlay_part(
        self,
        namespace: str,
        table_or_batches: Any,
        *,
        key: str = "id",
        key_col: str | None = None,
        allow_missing: bool = False,
        actor: dict[str, Any] | None = None,
    ) -> int:
        """usr_es has one overlay form (an immutable part per event), so this is `write_overlay`."""
        return self.write_overlay(
            namespace, table_or_batches, key=key, key_col=key_col, allow_missing=allow_missing, actor=actor
        )

    def tombstone(
        self,
        ids: Iterable[str],
        *,
        reason: str | None = None,
        deleted_at: Any = None,
        allow_missing: bool = False,
    ) -> int:
        if deleted_at is not None:
            raise InvalidInput("deleted_at cannot be set: a tombstone carries its event's time.")
        return self.native.delete(list(ids), reason=reason or "", allow_missing=allow_missing).rows_written

    def restore(self, ids: Iterable[str], *, allow_missing: bool = False) -> int:
        return self.native.restore(list(ids), allow_missing=allow_missing).rows_written

    def set_state(self, ids: Iterable[str], **fields: Any) -> int:
        return self.native.set_state(list(ids), **fields).rows_written

    def clear_state(self, ids: Iterable[str], *, allow_missing: bool = False) -> int:
        return self.native.clear_state(list(ids), allow_missing=allow_missing).rows_written

    # -- maintenance ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def maintenance(self, reason: str | None = None, actor: dict[str, Any] | None = None) -> Iterator[Dataset]:
        """The block in which maintenance-only operations (materialize, registry freeze) may run."""
        self._maintenance = reason or ""
        try:
            with _acting(self.native, actor):
                yield self
        finally:
            self._maintenance = None

    def _maintenance_only(self, operation: str) -> None:
        if self._maintenance is None:
            raise SchemaError(f"{operation} is a maintenance-only operation. Use Dataset.maintenance(...).")

    def materialize(
        self,
        *,
        namespaces: list[str] | None = None,
        keep_overlays: bool = True,
        archive_overlays: bool = False,
        drop_deleted: bool = False,
    ) -> None:
        self._maintenance_only("materialize")
        self.native.maintenance.materialize(
            namespaces=namespaces,
            drop_overlays=not keep_overlays and not archive_overlays,
            archive_overlays=archive_overlays,
            drop_deleted=drop_deleted,
        )

    def freeze_registry(self) -> Path:
        self._maintenance_only("freeze_registry")
        self.native.maintenance.freeze_registry()
        digest = self.native.info().registry_hash
        return self.native.dir / "_registry" / f"registry.{digest}.yaml"

    def snapshot(self) -> None:
        self.native.maintenance.snapshot()

    def validate(self, strict: bool = False, *, registry_mode: str = "current") -> ValidateReport:
        return self.native.maintenance.validate(strict=strict, registry_mode=registry_mode)

    # -- reads ----------------------------------------------------------------------------------------
    def info(self) -> DatasetInfo:
        return self.native.info()

    def schema(self) -> pa.Schema:
        return self.native.view_schema()

    def head(
        self,
        n: int = 10,
        columns: list[str] | None = None,
        *,
        include_derived: bool = True,
        include_deleted: bool = False,
    ) -> pd.DataFrame:
        if columns is None and not include_derived:
            columns = list(ESSENTIAL_COLUMNS)
        return _frame(self.native.head(n, columns=columns, include_deleted=include_deleted))

    def get(self, record_id: str, columns: list[str] | None = None, *, include_deleted: bool = False) -> pd.DataFrame:
        """The record's row (0 rows when there is none)."""
        table = self.native.get([record_id], columns=columns, include_deleted=include_deleted, allow_missing=True)
        return _frame(table)

    def get_state(self, ids: Iterable[str], *, allow_missing: bool = False) -> pd.DataFrame:
        return _frame(self.native.get_state(list(ids), allow_missing=allow_missing))

    def grep(
        self, pattern: str, limit: int = 20, batch_size: int = 65536, *, include_deleted: bool = False
    ) -> pd.DataFrame:
        return _frame(self.native.grep(pattern, limit=limit, include_deleted=include_deleted))

    def scan(
        self,
        columns: list[str] | None = None,
        include_overlays: bool | list[str] = True,
        include_deleted: bool = False,
        batch_size: int = 65536,
    ) -> Iterator[pa.RecordBatch]:
        """The live view as Arrow record batches (as the original's scan)."""
        if include_overlays is not True and columns is None:
            keep = [] if include_overlays is False else [f"{ns}__" for ns in include_overlays]
            names = [f.name for f in self.native.view_schema(include_deleted=include_deleted)]
            columns = [c for c in names if "__" not in c or any(c.startswith(p) for p in keep)]
        return self.native.scan(columns=columns, include_deleted=include_deleted, batch_size=batch_size)

    def export(
        self, fmt: str, out_path: Path | str, columns: list[str] | None = None, *, include_deleted: bool = False
    ) -> None:
        self.native.export(fmt, out_path, columns=columns, include_deleted=include_deleted)
