"""`usr` commands on the event log and checks: the `events` group, replay, rebuild, verify, validate."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DatasetArg,
    Format,
    FormatOpt,
    emit_object,
    existing_dataset,
    output_format,
    progress,
)

events_app = typer.Typer(
    help="Read the event log.\n\nExample: usr events tail densegen/demo --n 5 --format json",
    no_args_is_help=True,
)


class EventsFormat(StrEnum):
    json = "json"
    raw = "raw"


@events_app.command("tail")
def events_tail(
    dataset: DatasetArg = None,
    n: Annotated[
        int, typer.Option("-n", "--n", help="Last N events (0 = all); with --cursor, at most N after it.")
    ] = 0,
    fmt: Annotated[
        EventsFormat,
        typer.Option("--format", help="json: hash-chain verified lines; raw: the stored bytes, unverified."),
    ] = EventsFormat.json,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep printing new events as they are appended; starts at the end (add -n N for the last N first).",
        ),
    ] = False,
    cursor: Annotated[
        Path | None,
        typer.Option(
            "--cursor",
            metavar="FILE",
            help="Resume after the event recorded in FILE and save progress there (at-least-once).",
        ),
    ] = None,
) -> None:
    """Print events of .events.log (complete lines only; a torn tail is never shown).

    With --cursor FILE: the events after the one FILE records, FILE saved after each; a truncated or
    rewritten log exits 6. The consumer contract is docs/event-log.md.

    Example: usr events tail densegen/demo --cursor demo.cursor --follow
    """
    from ..cursor import tail

    ds = existing_dataset(dataset)
    out = sys.stdout.buffer
    try:
        for line in tail(
            ds.log_path, ds.name, n=n or None, cursor_path=cursor, follow=follow, raw=fmt is EventsFormat.raw
        ):
            out.write(line)
            if cursor is not None or follow:
                out.flush()  # hand the line out before the cursor moves past it
        out.flush()
    except BrokenPipeError:  # the reader went away (`... | head -1`): stop quietly, like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush must not fail


# -- history -----------------------------------------------------------------------------------
def replay(
    until: Annotated[
        str, typer.Option("--until", help="SEQ, EVENT_ID or RFC 3339 TIMESTAMP (last event at or before).")
    ],
    out: Annotated[Path, typer.Option("--out", help="New (or empty) directory for the past dataset.")],
    dataset: DatasetArg = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Write the dataset as it was right after an event into --out (the live dataset is untouched).

    Example: usr replay densegen/demo --until 2 --out /tmp/demo_at_2
    """
    with progress("Replaying the log"):
        result = existing_dataset(dataset).log.replay(until, out)
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)
    if output_format(fmt) is Format.json:
        emit_object(result, fmt)
        return
    typer.echo(f"Replayed {dataset} to seq {result.seq} ({result.timestamp_utc}, {result.rows} rows) into {result.out}")


def rebuild(dataset: DatasetArg = None, fmt: FormatOpt = Format.auto) -> None:
    """Regenerate every projection (records.parquet, meta.md) from the log.

    Example: usr rebuild densegen/demo
    """
    with progress("Rebuilding projections"):
        result = existing_dataset(dataset).maintenance.rebuild()
    for note in result.notes:
        typer.echo(f"warning: {note}", err=True)
    if output_format(fmt) is Format.json:
        emit_object(result, fmt)
        return
    typer.echo(f"Rebuilt {', '.join(result.files)} of {result.dataset} from {result.seq} event(s) ({result.rows} rows)")


def verify(
    dataset: DatasetArg = None,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="When the log checks out but projection files differ (or are missing, or stray), rebuild "
            "them from the log and check again. The log itself is never changed.",
        ),
    ] = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Check the hash chain, every payload digest, and that replay equals the stored files.

    Exits 6 on any mismatch, naming the first bad line or differing file; 8 when the only differences
    are stale caches (files another pyarrow or usr_es version wrote: the next write re-encodes them).
    A projection that only lags the log is noted, not a failure. Reports only, unless --fix.

    Example: usr verify densegen/demo
    """
    from ..errors import EXIT_INTEGRITY, EXIT_STALE

    report = existing_dataset(dataset).verify(fix=fix)
    if output_format(fmt) is Format.json:
        emit_object(report, fmt)
    else:
        typer.echo(report.verdict)
    if report.only_stale:
        typer.echo("hint: reads keep working; the next write, `usr rebuild` or `usr verify --fix` re-encodes", err=True)
        raise typer.Exit(EXIT_STALE)
    if not report.ok:
        if not report.log_ok:
            typer.echo("hint: the log itself fails its checks; no rebuild can mend that", err=True)
        elif not fix:
            typer.echo(
                "hint: `usr verify --fix` (or `usr rebuild`) rewrites the projection files from the log", err=True
            )
        raise typer.Exit(EXIT_INTEGRITY)


class RegistryMode(StrEnum):
    current = "current"
    frozen = "frozen"
    either = "either"
    namespace_current = "namespace-current"
    namespace_frozen = "namespace-frozen"
    namespace_either = "namespace-either"


def validate(
    dataset: DatasetArg = None,
    strict: Annotated[bool, typer.Option("--strict", help="Also recompute ids/lengths, check base types.")] = False,
    registry_mode: Annotated[
        RegistryMode,
        typer.Option(
            "--registry-mode",
            help="Registry to check against: current, frozen or either (either: frozen alone without registry.yaml); "
            "the namespace-* names are the same (overlays are always checked per namespace contract).",
        ),
    ] = RegistryMode.current,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Check schema, namespacing, registry types and reserved-namespace values (exit 2 on failure).

    Example: usr validate densegen/demo --strict --registry-mode either
    """
    from ..errors import EXIT_USAGE

    report = existing_dataset(dataset).maintenance.validate(strict=strict, registry_mode=registry_mode.value)
    if output_format(fmt) is Format.json:
        emit_object(report, fmt)
    elif report.ok:
        typer.echo("OK: validation passed.")
    else:
        for problem in report.problems:
            typer.echo(f"error: {problem}", err=True)
    if not report.ok:
        raise typer.Exit(EXIT_USAGE)
