"""`usr` forensics: history, blame, diff and log (docs/adr/0020). Read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import InvalidInput
from .common import (
    ColumnsOpt,
    DatasetArg,
    Format,
    FormatOpt,
    column_list,
    emit_rows,
    emit_struct,
    existing_dataset,
    output_format,
    plain_value,
    split_list,
)
from .sync import AuditOpt, RemotePathOpt, RemotesConfigOpt, RepoRootOpt, Verify, VerifyOpt, sync_diff

if TYPE_CHECKING:
    from ..results import Credit, RecordBlame

IdOpt = Annotated[str, typer.Option("--id", help="Record id.")]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Up to this point: a seq, an event id or an RFC 3339 time.")
]


def _shown(value: Any) -> str:
    return "(unset)" if value is None else plain_value(value)


def _by(credit: Credit) -> str:
    return f"{credit.tool} (run {credit.run_id} on {credit.host})"


def history(
    dataset: DatasetArg = None,
    record: IdOpt = "",
    columns: ColumnsOpt = "",
    until: UntilOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Every event that touched a record, oldest first: seq, time, action, actor, command, and each changed
    column before -> after (merges name their source version; dropped records keep their history).

    Example: usr history densegen/demo --id e153ebc4... --columns mock__score
    """
    if not record:
        raise InvalidInput("No record id given.", hint="usr history DATASET --id ID")
    ds = existing_dataset(dataset)
    found = ds.history.of(record, until=until, columns=column_list(columns))
    if output_format(fmt) is Format.json:
        emit_struct(found)
        return
    state = "live" if found.live else "deleted" if found.deleted else "not in the live view"
    typer.echo(f"{found.dataset} record {found.id} ({state}), {len(found.entries)} event(s) up to seq {found.seq}")
    for entry in found.entries:
        c = entry.credit
        note = f"  ({entry.note})" if entry.note else ""
        typer.echo(f"seq {c.seq}  {c.timestamp_utc}  {c.action}  by {_by(c)}  command {c.command_id}{note}")
        for change in entry.changes:
            typer.echo(f"    {change.column}: {_shown(change.before)} -> {_shown(change.after)}")
        if not entry.changes:
            typer.echo("    (no value changed)")


def _blame_rows(found: RecordBlame) -> list[dict[str, Any]]:
    return [
        {
            "column": cell.column,
            "value": cell.value,
            "seq": cell.credit.seq,
            "time": cell.credit.timestamp_utc,
            "action": cell.credit.action,
            "actor": _by(cell.credit),
        }
        for cell in found.cells
    ]


def emit_blame(found: RecordBlame, fmt: Format) -> None:
    """A blame as a table (column, value, seq, time, action, actor), or its JSON."""
    if output_format(fmt) is Format.json:
        emit_struct(found)
        return
    emit_rows(
        _blame_rows(found),
        ["column", "value", "seq", "time", "action", "actor"],
        fmt,
        title=f"{found.dataset} {found.id} at seq {found.seq}",
    )


def blame(
    dataset: DatasetArg = None,
    record: IdOpt = "",
    until: UntilOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """For each cell of a record, the event, time and actor that last wrote its value.

    Example: usr blame densegen/demo --id e153ebc4...
    """
    if not record:
        raise InvalidInput("No record id given.", hint="usr blame DATASET --id ID")
    ds = existing_dataset(dataset)
    emit_blame(ds.history.blame(record, until=until), fmt)


def diff(
    dataset: DatasetArg = None,
    remote: Annotated[
        str | None,
        typer.Argument(
            help="A remote: compare this copy with the remote's instead (`usr status`).", show_default=False
        ),
    ] = None,
    start: Annotated[
        str, typer.Option("--from", help="From this point: a seq (0: before the first event), event id or time.")
    ] = "",
    end: Annotated[str | None, typer.Option("--to", help="To this point (default: the head).")] = None,
    columns: ColumnsOpt = "",
    summary: Annotated[bool, typer.Option("--summary", help="Only the counts.")] = False,
    remotes_config: RemotesConfigOpt = None,
    verify: VerifyOpt = Verify.hash,
    remote_path: RemotePathOpt = None,
    repo_root: RepoRootOpt = None,
    audit_json_out: AuditOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """What changed between two points of the log: rows added, removed, deleted and restored, and every
    changed cell with before -> after and the event and actor that made the change. With a REMOTE: how
    this copy and the remote's compare (the same as `usr status`).

    Example: usr diff densegen/demo --from 12 --to 2026-12-01T00:00:00Z --summary
    """
    if remote is not None:
        if dataset is None or start or end is not None:
            raise InvalidInput(
                "Compare with a remote as `usr diff DATASET REMOTE` (no --from/--to).",
                hint="usr diff DATASET --from A --to B compares two points of one log.",
            )
        sync_diff(dataset, remote, remotes_config, audit_json_out, fmt, remote_path=remote_path, repo_root=repo_root)
        return
    if not start:
        raise InvalidInput(
            "No --from point given.", hint="usr diff DATASET --from SEQ [--to SEQ], or usr diff DATASET REMOTE"
        )
    ds = existing_dataset(dataset)
    found = ds.history.diff(start, end, columns=column_list(columns), summary=summary)
    if output_format(fmt) is Format.json:
        emit_struct(found)
        return
    typer.echo(
        f"{found.dataset} seq {found.from_seq} -> {found.to_seq} ({found.events} event(s)): {found.added} added, "
        f"{found.removed} removed, {found.deleted} deleted, {found.restored} restored, {found.changed} changed; "
        f"{found.cells} cell(s)"
    )
    if found.by_column:
        typer.echo("by column: " + ", ".join(f"{c} {n}" for c, n in found.by_column.items()))
    if found.by_action:
        typer.echo("by action: " + ", ".join(f"{a} {n}" for a, n in found.by_action.items()))
    for row in found.rows:
        typer.echo(f"{row.kind} {row.id}")
        for cell in row.cells:
            who = cell.credit
            typer.echo(
                f"    {cell.column}: {_shown(cell.before)} -> {_shown(cell.after)}  "
                f"(seq {who.seq} {who.action} by {_by(who)})"
            )


def log(
    dataset: DatasetArg = None,
    action: Annotated[
        list[str] | None, typer.Option("--action", help="Only these actions (repeat or comma-separate).")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only events by this tool, run id or host.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="From this point: a seq, event id or time.")] = None,
    until: UntilOpt = None,
    record: Annotated[str | None, typer.Option("--id", help="Only events that touched this record.")] = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """The log as a readable timeline: seq, time, action, actor and what each event did.

    Example: usr log densegen/demo --action attach --since 2026-12-01T00:00:00Z
    """
    ds = existing_dataset(dataset)
    entries = ds.history.timeline(action=split_list(action), actor=actor, since=since, until=until, record_id=record)
    if output_format(fmt) is Format.json:
        emit_struct(entries)
        return
    rows = [
        {
            "seq": e.credit.seq,
            "time": e.credit.timestamp_utc,
            "action": e.credit.action,
            "actor": _by(e.credit),
            "what": e.summary,
        }
        for e in entries
    ]
    emit_rows(rows, ["seq", "time", "action", "actor", "what"], fmt, title=ds.name)
