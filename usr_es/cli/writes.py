"""`usr` commands that write a dataset: init, import, attach, delete, restore, the `state` group, and demo."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .common import (
    CommandIdOpt,
    DatasetArg,
    ExpectedSeqOpt,
    Format,
    FormatOpt,
    column_list,
    datasets_root,
    emit_receipt,
    emit_rows,
    existing_dataset,
    options,
    progress,
    split_list,
)


class InputFmt(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"
    fasta = "fasta"


class Conflict(StrEnum):
    error = "error"
    skip = "skip"


class Backend(StrEnum):
    pyarrow = "pyarrow"
    duckdb = "duckdb"


class Key(StrEnum):
    id = "id"
    sequence = "sequence"
    sequence_norm = "sequence_norm"
    sequence_ci = "sequence_ci"


IdsOpt = Annotated[list[str] | None, typer.Option("--id", help="Record id(s); repeat or comma-separate.")]

IdFileOpt = Annotated[Path | None, typer.Option("--id-file", help="File with one id per line.")]

AllowMissingOpt = Annotated[bool, typer.Option("--allow-missing", help="Skip ids/keys not in the dataset.")]


def _read_ids(ids: list[str] | None, id_file: Path | None) -> list[str]:
    out = split_list(ids)
    if id_file is not None:
        from ..inputs import require_file

        require_file(id_file, "Id file")
        out.extend(line.strip() for line in id_file.read_text().splitlines() if line.strip())
    return out


def init(
    dataset: Annotated[str, typer.Argument(help="New dataset id: `name` or `ns/name`.")],
    source: Annotated[str, typer.Option("--source", help="Provenance label.")] = "",
    notes: Annotated[str, typer.Option("--notes", help="Free text for meta.md.")] = "",
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Create an empty dataset. Requires registry.yaml under --root.

    Example: usr --root /data/usr init densegen/demo --source "readme quickstart"
    """
    from ..dataset import Dataset
    from ..roots import validate_id

    ds = Dataset.open(datasets_root(), validate_id(dataset))
    receipt = ds.init(source=source, notes=notes, command_id=command_id)
    emit_receipt(receipt, f"Initialized dataset at {ds.dir}", fmt)


def import_(
    from_: Annotated[InputFmt, typer.Option("--from", help="Input format.", case_sensitive=False)],
    path: Annotated[Path, typer.Option("--path", help="Input file.")],
    dataset: DatasetArg = None,
    bio_type: Annotated[str, typer.Option("--bio-type", help="dna, rna or protein (unless a column has it).")] = "dna",
    alphabet: Annotated[
        str, typer.Option("--alphabet", help="dna_4, dna_5, rna_4, rna_5, protein_20 or protein_21.")
    ] = "dna_4",
    source: Annotated[str | None, typer.Option("--source", help="Provenance (default: the input path).")] = None,
    on_conflict: Annotated[
        Conflict,
        typer.Option("--on-conflict", help="error: reject duplicates; skip: keep the first, skip known ids."),
    ] = Conflict.error,
    command_id: CommandIdOpt = None,
    expected_seq: ExpectedSeqOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Import sequences (extra columns ignored; optional bio_type/alphabet columns must be filled, an id column
    must hold the computed ids).

    Example: usr import densegen/demo --from csv --path seqs.csv --bio-type dna --alphabet dna_4
    """
    ds = existing_dataset(dataset)
    with progress(f"Importing {path.name}"):
        receipt = ds.import_file(
            path,
            fmt=from_.value,
            bio_type=bio_type,
            alphabet=alphabet,
            source=source,
            on_conflict=on_conflict.value,
            command_id=command_id,
            expected_seq=expected_seq,
        )
    skipped = receipt.metrics.get("rows_skipped", 0)
    extra = f" ({skipped} skipped)" if skipped else ""
    emit_receipt(receipt, f"Imported {receipt.rows_written} record(s) into {ds.name}{extra}", fmt)


def attach(
    path: Annotated[Path, typer.Option("--path", help="Input file: .csv, .parquet, .jsonl/.json.")],
    namespace: Annotated[str, typer.Option("--namespace", help="Registered namespace for the columns.")],
    dataset: DatasetArg = None,
    key: Annotated[Key, typer.Option("--key", help="How input rows match records.")] = Key.id,
    key_col: Annotated[str | None, typer.Option("--key-col", help="Input column holding the key.")] = None,
    columns: Annotated[str, typer.Option("--columns", help="Comma-separated input columns (default: all).")] = "",
    allow_overwrite: Annotated[bool, typer.Option("--allow-overwrite", help="Replace values already set.")] = False,
    allow_missing: AllowMissingOpt = False,
    parse_json: Annotated[
        bool, typer.Option("--parse-json/--no-parse-json", help="Parse JSON text into list/struct columns.")
    ] = True,
    backend: Annotated[
        Backend,
        typer.Option(
            "--backend",
            help="Accepted for the original's scripts; every input is read in batches with pyarrow either way.",
        ),
    ] = Backend.pyarrow,
    note: Annotated[str, typer.Option("--note", help="Free text recorded in the event.")] = "",
    command_id: CommandIdOpt = None,
    expected_seq: ExpectedSeqOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Attach namespaced columns (<ns>__<col>) to existing records.

    Example: usr attach densegen/demo --path scores.csv --namespace mock --key sequence --columns score
    """
    ds = existing_dataset(dataset)
    with progress(f"Attaching {path.name}"):
        receipt = ds.attach(
            path,
            namespace=namespace,
            key=key.value,
            key_col=key_col,
            columns=column_list(columns),
            allow_overwrite=allow_overwrite,
            allow_missing=allow_missing,
            parse_json=parse_json,
            note=note,
            command_id=command_id,
            expected_seq=expected_seq,
        )
    missing = receipt.metrics.get("rows_missing", 0)
    extra = f" ({missing} unmatched row(s) skipped)" if missing else ""
    emit_receipt(receipt, f"Attached {receipt.rows_written} row(s) of {namespace} columns to {ds.name}{extra}", fmt)


def delete(
    dataset: DatasetArg = None,
    ids: IdsOpt = None,
    id_file: IdFileOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (stored as usr__deleted_reason).")] = "",
    allow_missing: AllowMissingOpt = False,
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Tombstone records (hidden from reads unless --include-deleted).

    Example: usr delete densegen/demo --id e153ebc4... --reason "bad input"
    """
    ds = existing_dataset(dataset)
    receipt = ds.delete(_read_ids(ids, id_file), reason=reason, allow_missing=allow_missing, command_id=command_id)
    emit_receipt(receipt, receipt.message or f"Tombstoned {receipt.rows_written} record(s) in {ds.name}", fmt)


def restore(
    dataset: DatasetArg = None,
    ids: IdsOpt = None,
    id_file: IdFileOpt = None,
    allow_missing: AllowMissingOpt = False,
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Restore tombstoned records.

    Example: usr restore densegen/demo --id e153ebc4...
    """
    ds = existing_dataset(dataset)
    receipt = ds.restore(_read_ids(ids, id_file), allow_missing=allow_missing, command_id=command_id)
    emit_receipt(receipt, receipt.message or f"Restored {receipt.rows_written} record(s) in {ds.name}", fmt)


def demo(
    root: Annotated[
        Path | None, typer.Option("--root", help="Where to build the demo root (default: a new temp dir).")
    ] = None,
) -> None:
    """Run an end-to-end story on generated data and show where the files are.

    Example: usr demo --root /tmp/usr_demo
    """
    from ..demo import run_demo

    run_demo(root or options.root, echo=typer.echo)


# -- usr state ---------------------------------------------------------------------------------
state_app = typer.Typer(
    help="Reserved record state (usr_state): masked, qc_status, split, supersedes, lineage.\n\n"
    "Example: usr state set densegen/demo --id e153ebc4... --qc-status pass --split train",
    no_args_is_help=True,
)


@state_app.command("set")
def state_set(
    dataset: DatasetArg = None,
    ids: IdsOpt = None,
    id_file: IdFileOpt = None,
    masked: Annotated[bool | None, typer.Option("--masked/--unmasked", help="Mask or unmask.")] = None,
    qc_status: Annotated[str | None, typer.Option("--qc-status", help="pass, fail, warn or unknown.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="train, val, test or holdout.")] = None,
    supersedes: Annotated[str | None, typer.Option("--supersedes", help="Id this record supersedes.")] = None,
    lineage: Annotated[
        list[str] | None, typer.Option("--lineage", help="Parent ids; repeat or comma-separate.")
    ] = None,
    allow_missing: AllowMissingOpt = False,
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Set usr_state fields (only the ones given) for records.

    Example: usr state set densegen/demo --id e153ebc4... --masked --qc-status fail
    """
    ds = existing_dataset(dataset)
    receipt = ds.set_state(
        _read_ids(ids, id_file),
        masked=masked,
        qc_status=qc_status,
        split=split,
        supersedes=supersedes,
        lineage=split_list(lineage) if lineage is not None else None,
        allow_missing=allow_missing,
        command_id=command_id,
    )
    emit_receipt(receipt, receipt.message or f"Updated usr_state for {receipt.rows_written} record(s)", fmt)


@state_app.command("clear")
def state_clear(
    dataset: DatasetArg = None,
    ids: IdsOpt = None,
    id_file: IdFileOpt = None,
    allow_missing: AllowMissingOpt = False,
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Reset all usr_state fields of records (masked reads false, the rest null).

    Example: usr state clear densegen/demo --id e153ebc4...
    """
    ds = existing_dataset(dataset)
    receipt = ds.clear_state(_read_ids(ids, id_file), allow_missing=allow_missing, command_id=command_id)
    emit_receipt(receipt, receipt.message or f"Cleared usr_state for {receipt.rows_written} record(s)", fmt)


@state_app.command("get")
def state_get(
    dataset: DatasetArg = None,
    ids: IdsOpt = None,
    id_file: IdFileOpt = None,
    allow_missing: AllowMissingOpt = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Show usr_state for records, one row per id in request order.

    Example: usr state get densegen/demo --id e153ebc4... --format json
    """
    table = existing_dataset(dataset).get_state(_read_ids(ids, id_file), allow_missing=allow_missing)
    emit_rows(table.to_pylist(), table.column_names, fmt, title="usr_state")
