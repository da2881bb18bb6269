"""`usr` maintenance commands: the `namespace` group (registry.yaml), materialize, snapshot and the
`maintenance` group (registry freeze, overlay compaction)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import InvalidInput
from .common import (
    CommandIdOpt,
    DatasetArg,
    Format,
    FormatOpt,
    datasets_root,
    emit_json,
    emit_object,
    emit_receipt,
    emit_rows,
    existing_dataset,
    options,
    output_format,
    progress,
)

namespace_app = typer.Typer(
    help="Register and inspect overlay namespaces in registry.yaml.\n\n"
    "Example: usr --root /data/usr namespace register mock --columns 'mock__score:float64'",
    no_args_is_help=True,
)


@namespace_app.command("register")
def namespace_register(
    namespace: Annotated[str, typer.Argument(help="Namespace name, ^[a-z][a-z0-9_]*$.")],
    columns: Annotated[
        str,
        typer.Option("--columns", help="Comma-separated ns__field:type; commas inside <> and [] belong to the type."),
    ],
    owner: Annotated[str, typer.Option("--owner", help="Owner recorded in registry.yaml.")] = "",
    description: Annotated[str, typer.Option("--description", help="One-line description for registry.yaml.")] = "",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing namespace.")] = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Register a namespace and its columns (creates registry.yaml with usr_state on first use).

    Example: usr --root /data/usr namespace register mock --columns 'mock__score:float64,mock__vec:list<float64>'
    """
    from ..registry import register_namespace, split_columns_spec

    root = datasets_root(create=True) if options.root else datasets_root()
    spec = register_namespace(
        root,
        namespace,
        split_columns_spec(columns),
        owner=owner,
        description=description,
        overwrite=overwrite,
    )
    if output_format(fmt) is Format.json:
        import msgspec

        emit_json({"registry": str(root / "registry.yaml"), **msgspec.to_builtins(spec)})
        return
    typer.echo(f"Registered namespace '{spec.name}' ({len(spec.columns)} column(s)) in {root / 'registry.yaml'}")


@namespace_app.command("list")
def namespace_list(fmt: FormatOpt = Format.auto) -> None:
    """List registered namespaces and their columns.

    Example: usr namespace list --format json
    """
    from ..registry import load_registry

    registry = load_registry(datasets_root())
    rows = [
        {"namespace": name, "columns": [c.name for c in spec.columns], "owner": spec.owner}
        for name, spec in sorted(registry.namespaces.items())
    ]
    if output_format(fmt) is Format.plain:
        for name, spec in sorted(registry.namespaces.items()):
            typer.echo(f"{name}: {', '.join(c.name for c in spec.columns)}")
        return
    emit_rows(rows, ["namespace", "columns", "owner"], fmt, title="namespaces")


@namespace_app.command("show")
def namespace_show(name: Annotated[str, typer.Argument(help="Namespace name.")], fmt: FormatOpt = Format.auto) -> None:
    """Show one namespace: owner, description, columns and types.

    Example: usr namespace show quickstart
    """
    import msgspec

    from ..registry import show_namespace

    spec = show_namespace(datasets_root(), name)
    emit_object(msgspec.to_builtins(spec), fmt, title=f"namespace {name}")


# -- projections -------------------------------------------------------------------------------
def materialize(
    dataset: DatasetArg = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    snapshot_before: Annotated[bool, typer.Option("--snapshot-before", help="Write a checkpoint first.")] = False,
    namespaces: Annotated[str, typer.Option("--namespaces", help="Comma-separated (default: all overlays).")] = "",
    drop_overlays: Annotated[bool, typer.Option("--drop-overlays", help="Remove the folded overlays.")] = False,
    archive_overlays: Annotated[
        bool, typer.Option("--archive-overlays", help="Move the folded overlays to _derived/_archived/.")
    ] = False,
    drop_deleted: Annotated[
        bool, typer.Option("--drop-deleted", help="Remove tombstoned rows from the base, with their overlay history.")
    ] = False,
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Fold overlay columns into records.parquet (an event; overlays are kept unless told otherwise).

    Example: usr materialize densegen/demo --yes --snapshot-before
    """
    from ..errors import UserAbort

    ds = existing_dataset(dataset)
    chosen = [n.strip() for n in namespaces.split(",") if n.strip()] or None
    if not yes and sys.stdin.isatty() and sys.stdout.isatty():  # a script proceeds, as the original did
        info = ds.info()
        typer.echo(f"Materialize {', '.join(chosen or info.namespaces) or '(no overlays)'} into {ds.records_path}")
        if not typer.confirm("Proceed?", default=False):
            raise UserAbort("Materialize cancelled.")
    with progress("Materializing"):
        receipt = ds.maintenance.materialize(
            namespaces=chosen,
            drop_overlays=drop_overlays,
            archive_overlays=archive_overlays,
            drop_deleted=drop_deleted,
            snapshot_before=snapshot_before,
            command_id=command_id,
        )
    count = receipt.metrics.get("overlays", 0)
    back = (
        f"; the state before it stays in the log: usr replay {ds.name} --until {receipt.seq - 1} --out DIR"
        if not receipt.noop and receipt.seq > 1
        else ""
    )
    emit_receipt(receipt, receipt.message or f"Materialized {count} overlay(s) into {ds.records_path}{back}", fmt)


def adopt(
    dataset: DatasetArg = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Adopt (without it: a dry run that writes nothing).")
    ] = False,
    keep_originals: Annotated[
        bool,
        typer.Option(
            "--keep-originals",
            help="Leave the original overlay and snapshot files where they are (a copy is in _legacy/ anyway).",
        ),
    ] = False,
    every: Annotated[bool, typer.Option("--all", help="Every dataset under the root the original USR wrote.")] = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Make a dataset the original USR wrote a usr_es dataset, keeping every value and its log lines.

    Without --yes it only reports what it found (rows, overlays, tombstones, snapshots, registry hashes,
    id mismatches); the original files move to _legacy/ inside the dataset.

    Example: usr adopt densegen/demo --yes
    """
    from ..dataset import Dataset

    if every:
        if dataset is not None:
            raise InvalidInput("Name a dataset or pass --all, not both.")
        reports = Dataset.adopt_all(datasets_root(), dry_run=not yes, keep_originals=keep_originals)
    else:
        ds = existing_dataset(dataset)
        with progress("Adopting" if yes else "Reading the original"):
            reports = [ds.adopt(dry_run=not yes, keep_originals=keep_originals)]
    if output_format(fmt) is Format.json:
        import msgspec

        emit_json(msgspec.to_builtins(reports if every else reports[0]))
        return
    if not reports:
        typer.echo("(no dataset under the root was written by the original USR)")
    for report in reports:
        for warning in report.receipt.warnings if report.receipt is not None else []:
            typer.echo(f"warning: {warning}", err=True)
        overlays = ", ".join(f"{ns} ({n})" for ns, n in report.overlays.items()) or "none"
        typer.echo(f"{report.dataset}: {report.message}")
        typer.echo(f"  rows: {report.rows}; columns: {len(report.columns)}; overlays: {overlays}")
        kept = f"log lines kept: {report.legacy_log_lines}"
        typer.echo(f"  tombstoned: {report.tombstoned}; snapshots: {report.snapshots}; {kept}")
        typer.echo(f"  registry hashes: {', '.join(h[:12] for h in report.registry_hashes) or 'none'}")
        sample = f" (e.g. {', '.join(report.id_mismatch_sample)})" if report.id_mismatch_sample else ""
        typer.echo(f"  ids not sha1(bio_type|sequence): {report.id_mismatches}{sample}")
        for finding in report.findings:
            typer.echo(f"  note: {finding}")
        where = "kept in" if report.adopted else "would be kept in"
        typer.echo(f"  original files {where} {report.kept_in}: {len(report.files)}")
        if report.dry_run and not report.adopted:
            typer.echo(f"  run `usr adopt {report.dataset} --yes` to adopt it")


def snapshot(dataset: DatasetArg = None, command_id: CommandIdOpt = None, fmt: FormatOpt = Format.auto) -> None:
    """Record a checkpoint of the dataset state (base copy under _snapshots/).

    Example: usr snapshot densegen/demo
    """
    ds = existing_dataset(dataset)
    receipt = ds.maintenance.snapshot(command_id=command_id)
    emit_receipt(receipt, f"Snapshot saved under {ds.dir / '_snapshots'}", fmt)


maintenance_app = typer.Typer(
    help="Maintenance: registry freeze, overlay compaction.\n\n"
    "Example: usr maintenance overlay-compact densegen/demo --namespace mock",
    no_args_is_help=True,
)


@maintenance_app.command("registry-freeze")
def registry_freeze(dataset: DatasetArg = None, command_id: CommandIdOpt = None, fmt: FormatOpt = Format.auto) -> None:
    """Freeze the current registry into _registry/ and record it.

    Example: usr maintenance registry-freeze densegen/demo
    """
    ds = existing_dataset(dataset)
    receipt = ds.maintenance.freeze_registry(command_id=command_id)
    emit_receipt(receipt, f"Froze registry into {ds.dir / '_registry'}", fmt)


@maintenance_app.command("overlay-compact")
def overlay_compact(
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace whose parts to merge.")],
    dataset: DatasetArg = None,
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Merge a namespace's overlay parts into one (reads are unchanged).

    Example: usr maintenance overlay-compact densegen/demo --namespace mock
    """
    ds = existing_dataset(dataset)
    receipt = ds.maintenance.compact_overlay(namespace, command_id=command_id)
    parts = receipt.metrics.get("rows", 0)
    emit_receipt(receipt, receipt.message or f"Compacted {namespace} overlay ({parts} row(s))", fmt)


@maintenance_app.command("dedupe")
def dedupe(
    dataset: DatasetArg = None,
    key: Annotated[
        str,
        typer.Option("--key", help="What makes two rows duplicates: id, sequence, sequence_norm, sequence_ci (dna_4)."),
    ] = "sequence",
    keep: Annotated[str, typer.Option("--keep", help="Which row of a group stays: keep-first or keep-last.")] = (
        "keep-first"
    ),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report the groups and rows; write nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Drop base rows whose key another row holds, keeping the first (or last) of each group in file order.

    Always reports first; the dropped rows leave the live view with their overlay values, and every earlier
    state keeps them (usr replay DATASET --until SEQ).

    Example: usr maintenance dedupe densegen/demo --key sequence_ci --keep keep-first --dry-run
    """
    from ..errors import UserAbort

    ds = existing_dataset(dataset)
    preview = ds.maintenance.dedupe(key, keep, dry_run=True)
    if dry_run or not preview.groups:
        if output_format(fmt) is Format.json:
            import msgspec

            emit_json(msgspec.to_builtins(preview))
        else:
            typer.echo(preview.message)
        return
    if not yes:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UserAbort(
                f"{preview.message} Not dropped: dedupe asks for confirmation.", hint="Pass --yes to drop them."
            )
        typer.echo(preview.message)
        if not typer.confirm("Proceed with destructive de-duplication?", default=False):
            raise UserAbort("De-duplication cancelled.")
    with progress("Deduplicating"):
        result = ds.maintenance.dedupe(key, keep, command_id=command_id)
    receipt = result.receipt
    assert receipt is not None
    if output_format(fmt) is Format.json:
        import msgspec

        emit_json(msgspec.to_builtins(result))
        return
    back = f"; they stay in every earlier state: usr replay {ds.name} --until {receipt.seq - 1} --out DIR"
    emit_receipt(receipt, receipt.message or f"{result.message[:-1]}{back}", fmt)


@maintenance_app.command("overlay-remove")
def overlay_remove(
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace whose overlay to take out.")],
    dataset: DatasetArg = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode", help="error: delete, failing when there is none; delete; archive (to _derived/_archived/)."
        ),
    ] = "error",
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Take a namespace's overlay out of the live view (its values stay in every earlier state).

    Example: usr maintenance overlay-remove densegen/demo --namespace mock --mode archive
    """
    ds = existing_dataset(dataset)
    receipt = ds.maintenance.remove_overlay(namespace, mode, command_id=command_id)
    where = f" to {ds.dir / '_derived' / '_archived' / namespace}" if mode == "archive" else ""
    verb = "Archived" if mode == "archive" else "Removed"
    parts = receipt.metrics.get("parts", 0)
    emit_receipt(receipt, receipt.message or f"{verb} overlay {namespace} ({parts} part(s)){where}", fmt)


@maintenance_app.command("overlay-project")
def overlay_project(
    src: Annotated[str, typer.Option("--src", help="Dataset whose namespace values to copy.")],
    dest: Annotated[str, typer.Option("--dest", help="Dataset that takes them (as an attach).")],
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace to copy.")],
    src_join: Annotated[str, typer.Option("--src-join", help="Source column to join on (values unique).")] = "id",
    dest_join: Annotated[str, typer.Option("--dest-join", help="Destination column to join on.")] = "id",
    columns: Annotated[
        str, typer.Option("--columns", help="Comma-separated (default: every <ns>__ column the source shows).")
    ] = "",
    overwrite: Annotated[
        bool, typer.Option("--overwrite/--no-overwrite", help="Replace values the destination holds.")
    ] = True,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Destination records without a match are left out.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count; write nothing.")] = False,
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Copy a namespace's live values from one dataset onto another's records, joined on a column.

    The destination gets one attach event whose note names the source's version (head seq and hash).

    Example: usr maintenance overlay-project --src densegen/demo --dest infer/run1 --namespace densegen
    --src-join sequence --dest-join sequence
    """
    source, target = existing_dataset(src), existing_dataset(dest)
    chosen = [c.strip() for c in columns.split(",") if c.strip()] or None
    result = target.maintenance.project_overlay(
        source,
        namespace,
        src_join=src_join,
        dest_join=dest_join,
        columns=chosen,
        overwrite=overwrite,
        allow_missing=allow_missing,
        dry_run=dry_run,
        command_id=command_id,
    )
    if output_format(fmt) is Format.json:
        import msgspec

        emit_json(msgspec.to_builtins(result))
        return
    if result.receipt is None:
        typer.echo(result.message)
        return
    emit_receipt(result.receipt, result.message, fmt)


@maintenance_app.command("merge")
def merge(
    dest: Annotated[str, typer.Option("--dest", help="Dataset that takes the records.")],
    src: Annotated[str, typer.Option("--src", help="Dataset whose live records to add.")],
    require_same_columns: Annotated[
        bool, typer.Option("--require-same-columns", help="Refuse unless both have the same columns and types.")
    ] = False,
    union_columns: Annotated[
        bool, typer.Option("--union-columns", help="Merge the union of both column sets (new columns read null).")
    ] = False,
    if_duplicate: Annotated[
        str,
        typer.Option(
            "--if-duplicate", help="A source id the destination holds: error, skip, prefer-src or prefer-dest."
        ),
    ] = "error",
    coerce_overlap: Annotated[
        str,
        typer.Option("--coerce-overlap", help="Shared columns of different types: none, or to-dest (primitive types)."),
    ] = "none",
    carry_namespace: Annotated[
        list[str] | None,
        typer.Option("--carry-namespace", help="Copy this namespace's live values of the records that join (repeat)."),
    ] = None,
    no_avoid_casefold_dups: Annotated[
        bool,
        typer.Option(
            "--no-avoid-casefold-dups", help="Keep source records the destination holds up to case (then ids decide)."
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report; write nothing.")] = False,
    note: Annotated[str, typer.Option("--note", help="Free text recorded with the merge event.")] = "",
    command_id: CommandIdOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Add another dataset's live records to DEST by the original's rules, in one command on DEST's log.

    The merge event names the source's version (head seq and chain hash), so every merged row can be traced
    to the version of SRC it came from, whatever happens to SRC later.

    Example: usr maintenance merge --dest densegen/all --src densegen/run7 --require-same-columns
    --if-duplicate skip
    """
    if require_same_columns == union_columns:
        raise InvalidInput("Choose exactly one of --require-same-columns or --union-columns.")
    source, target = existing_dataset(src), existing_dataset(dest)
    with progress("Merging"):
        result = target.maintenance.merge(
            source,
            columns="require-same" if require_same_columns else "union",
            if_duplicate=if_duplicate,
            coerce_overlap=coerce_overlap,
            carry_namespaces=carry_namespace or [],
            avoid_casefold_dups=not no_avoid_casefold_dups,
            dry_run=dry_run,
            note=note,
            command_id=command_id,
        )
    if output_format(fmt) is Format.json:
        import msgspec

        emit_json(msgspec.to_builtins(result))
        return
    if result.receipt is None or result.receipt.noop:
        typer.echo(result.message)
        return
    emit_receipt(result.receipt, result.message, fmt)
