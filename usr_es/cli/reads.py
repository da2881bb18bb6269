"""`usr` read commands: ls, info, head, cols, cell, get, grep, describe, export, schema."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InvalidInput, UsrError
from .common import (
    ColumnsOpt,
    DatasetArg,
    Format,
    FormatOpt,
    column_list,
    datasets_root,
    emit_json,
    emit_object,
    emit_rows,
    existing_dataset,
    options,
    output_format,
    plain_value,
    progress,
    split_list,
)


def ls(fmt: FormatOpt = Format.auto) -> None:
    """List datasets under the root.

    Example: usr ls --format json
    """
    import msgspec

    from ..dataset import Dataset

    root = datasets_root()
    rows = [msgspec.to_builtins(s) for s in Dataset.list_all(root)]
    if not rows and output_format(fmt) is not Format.json:
        typer.echo(f"(no datasets under {root})")
        return
    emit_rows(
        rows, ["dataset", "status", "rows", "cols", "size_bytes", "updated", "head_seq", "error"], fmt, title=str(root)
    )


def info(dataset: DatasetArg = None, fmt: FormatOpt = Format.auto) -> None:
    """Summary: path, rows, columns, namespaces, head seq, projection lag, checkpoints.

    Example: usr info densegen/demo --format json
    """
    emit_object(existing_dataset(dataset).info(), fmt, title=dataset)


TargetArg = Annotated[
    str | None,
    typer.Argument(
        help="Dataset id or directory, or any Parquet file or directory of Parquet files (default: the current "
        "directory).",
        show_default=False,
    ),
]


IncludeDeletedOpt = Annotated[
    bool, typer.Option("--include-deleted", help="Include tombstoned rows (and allow the usr__ columns).")
]


def _picker() -> Callable[[list[Path]], Path] | None:
    """A numbered picker on a terminal (stdin and stdout), else None: several files are then an error."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None

    def pick(files: list[Path]) -> Path:
        for k, file in enumerate(files, start=1):
            typer.echo(f"  {k}) {file.name}")
        while True:
            chosen = int(typer.prompt(f"Which file (1-{len(files)})", type=int))
            if 1 <= chosen <= len(files):
                return files[chosen - 1]

    return pick


def _plain_target(ident: str | None) -> Path | None:
    """The Parquet path `ident` names when it is not a dataset (None: treat it as a dataset)."""
    from ..names import LOG_FILE
    from ..roots import enclosing_dataset, find_root, looks_like_path

    if ident is None:
        try:
            enclosing_dataset(Path.cwd())
            return None
        except UsrError:
            return Path.cwd()
    path = Path(ident)
    if not path.exists() and (looks_like_path(ident) or path.suffix.lower() == ".parquet"):
        from ..errors import NotFound

        raise NotFound(f"Path not found: {ident}")  # named as a file: never read as a dataset id
    if path.is_file():  # a dataset's own records.parquet / .events.log stands for the dataset
        return None if path.name in ("records.parquet", LOG_FILE) and (path.parent / LOG_FILE).is_file() else path
    if not path.is_dir() or (path / LOG_FILE).is_file() or not (looks_like_path(ident) or options.root is None):
        return None
    try:  # `ns/name` may be both a folder here and a dataset under the root: the dataset wins
        return None if (find_root(options.root) / ident / LOG_FILE).is_file() else path
    except UsrError:
        return path


def _emit_table(table: Any, fmt: Format, *, title: str | None = None) -> None:
    if output_format(fmt) is Format.json:  # the JSONL export's rules, so both agree for every type
        from ..jsontext import json_rows

        emit_json(json_rows(table))
        return
    emit_rows(table.to_pylist(), table.column_names, fmt, title=title)


def head(
    target: TargetArg = None,
    n: Annotated[int, typer.Option("-n", "--n", help="Number of rows.")] = 10,
    columns: ColumnsOpt = "",
    include_deleted: IncludeDeletedOpt = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Show the first rows: of a dataset's live view (overlay columns merged in), or of any Parquet target.

    Example: usr head densegen/demo -n 5 --columns id,sequence   (or `usr head .`, `usr head run42/records.parquet`)
    """
    path = _plain_target(target)
    if path is not None:
        from ..targets import target_head

        table = target_head(path, n, column_list(columns), pick=_picker())
        _emit_table(table, fmt, title=str(path))
        return
    ds = existing_dataset(target)
    _emit_table(ds.head(n, columns=column_list(columns), include_deleted=include_deleted), fmt, title=ds.name)


def cols(
    target: TargetArg = None,
    glob: Annotated[
        str | None,
        typer.Option("--glob", help="A folder target: which Parquet file (as the original); a dataset: which columns."),
    ] = None,
    include_deleted: IncludeDeletedOpt = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """List the columns (name, registry type, nullable) of a dataset's live view or of a Parquet target.

    A folder names one file: --glob, else records.parquet, events*.parquet or the only *.parquet (a picker on
    a terminal when several match).

    Example: usr cols densegen/demo --glob 'densegen__*'   (or `usr cols ./runs --glob 'events*.parquet'`)
    """
    from fnmatch import fnmatchcase

    import msgspec

    path = _plain_target(target)
    if path is not None:
        from ..targets import target_columns

        infos = target_columns(path, glob, pick=_picker())
        title = str(path)
    else:
        ds = existing_dataset(target)
        infos = [c for c in ds.columns(include_deleted=include_deleted) if glob is None or fnmatchcase(c.name, glob)]
        title = ds.name
    emit_rows([msgspec.to_builtins(c) for c in infos], ["name", "type", "nullable"], fmt, title=title)


def cell(
    target: TargetArg = None,
    row: Annotated[int, typer.Option("--row", help="0-based row (tombstoned rows are skipped).")] = 0,
    col: Annotated[str, typer.Option("--col", help="Column name.")] = "sequence",
    glob: Annotated[str | None, typer.Option("--glob", help="A folder target: which Parquet file.")] = None,
    include_deleted: IncludeDeletedOpt = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Print one cell of a dataset's live view or of a Parquet target.

    Example: usr cell densegen/demo --row 0 --col sequence
    """
    from ..targets import cell as cell_of

    path = _plain_target(target)
    value = (
        cell_of(path, row, col, glob=glob, pick=_picker())
        if path is not None
        else existing_dataset(target).cell(row, col, include_deleted=include_deleted)
    )
    if output_format(fmt) is Format.json:
        emit_json({"row": row, "column": col, "value": value})
        return
    typer.echo(plain_value(value))


def get(
    dataset: DatasetArg = None,
    record: Annotated[str | None, typer.Argument(help="Record id (or use --id).", show_default=False)] = None,
    ids: Annotated[list[str] | None, typer.Option("--id", help="Record id(s); repeat or comma-separate.")] = None,
    columns: ColumnsOpt = "",
    include_deleted: IncludeDeletedOpt = False,
    blame: Annotated[
        bool, typer.Option("--blame", help="For each cell, the event, time and actor that last wrote it.")
    ] = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Fetch records by id from the live view (request order); with --blame, who wrote each cell.

    Example: usr get densegen/demo --id e153ebc4... --columns id,sequence   (or `usr get densegen/demo e153ebc4...`)
    """
    wanted = split_list(ids) + ([record] if record else [])
    if not wanted and dataset is not None and not ids:
        # `usr get ID` inside a dataset folder: the one positional is the record id.
        from ..roots import enclosing_dataset

        try:
            enclosing_dataset(Path.cwd())
            wanted = [dataset]
            dataset = None
        except UsrError:
            pass
    if not wanted:
        raise InvalidInput("No record id given.", hint="usr get DATASET --id ID (or usr get DATASET ID)")
    ds = existing_dataset(dataset)
    if blame:
        from .forensics import emit_blame

        for record_id in wanted:
            emit_blame(ds.history.blame(record_id), fmt)
        return
    _emit_table(ds.get(wanted, columns=column_list(columns), include_deleted=include_deleted), fmt, title=ds.name)


def grep(
    dataset: DatasetArg = None,
    pattern: Annotated[str, typer.Option("--pattern", help="Regular expression (RE2), case-insensitive.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="At most this many records (0 = all).")] = 20,
    include_deleted: IncludeDeletedOpt = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Find records whose sequence matches a pattern; prints id, sequence, length.

    Example: usr grep densegen/demo --pattern 'TATA[AT]A' --limit 10
    """
    if not pattern:
        raise InvalidInput("No --pattern given.", hint="e.g. usr grep densegen/demo --pattern ATG")
    ds = existing_dataset(dataset)
    table = ds.grep(pattern, limit=limit or None, include_deleted=include_deleted)
    _emit_table(table, fmt, title=f"{ds.name}: /{pattern}/i")


def describe(
    dataset: DatasetArg = None,
    columns: ColumnsOpt = "",
    sample: Annotated[int | None, typer.Option("--sample", help="Profile only the first N visible rows.")] = None,
    include_deleted: IncludeDeletedOpt = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Profile each column: type, non-null count, null %, an example, list lengths.

    Example: usr describe densegen/demo --sample 2048
    """
    import msgspec

    ds = existing_dataset(dataset)
    profiles = [
        msgspec.to_builtins(p)
        for p in ds.describe(columns=column_list(columns), sample=sample, include_deleted=include_deleted)
    ]
    names = ["name", "type", "rows", "non_null", "null_pct", "example", "list_len_min", "list_len_max", "list_len_mean"]
    emit_rows(profiles, names, fmt, title=ds.name)


def export(
    dataset: DatasetArg = None,
    to: Annotated[str, typer.Option("--fmt", help="csv, jsonl or parquet.")] = "parquet",
    out: Annotated[
        Path | None, typer.Option("--out", help="Output file (missing folders are created), or an existing directory.")
    ] = None,
    columns: ColumnsOpt = "",
    include_deleted: IncludeDeletedOpt = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Write the live view to a csv, jsonl or parquet file (streamed; parquet keeps types and usr: metadata).

    Example: usr export densegen/demo --fmt csv --out /tmp/exports
    """
    from ..export import check_format

    kind = check_format(to)  # a bad format is rejected before anything is resolved or created
    if out is None:
        raise InvalidInput(
            "No --out given.", hint="--out FILE, or an existing directory (file named after the dataset)"
        )
    ds = existing_dataset(dataset)
    total = ds.info().rows if sys.stderr.isatty() else None
    with progress(f"Exporting {ds.name} as {kind}", total=total) as update:
        result = ds.export(kind, out, columns=column_list(columns), include_deleted=include_deleted, progress=update)
    if output_format(fmt) is Format.json:
        import msgspec

        emit_json(msgspec.to_builtins(result))
        return
    typer.echo(f"Wrote {result.rows} row(s), {len(result.columns)} column(s) to {result.path}")


def schema(
    dataset: DatasetArg = None,
    tree: Annotated[
        bool, typer.Option("--tree", help="Group the columns: base, then one branch per namespace.")
    ] = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Show the merged schema: base columns, then overlay columns (name, registry type, nullable).

    Example: usr schema densegen/demo --tree
    """
    import msgspec

    ds = existing_dataset(dataset)
    rows = [msgspec.to_builtins(c) for c in ds.schema()]
    if not tree:
        emit_rows(rows, ["name", "type", "nullable"], fmt, title=ds.name)
        return
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        ns, sep, _ = row["name"].partition("__")
        groups.setdefault(ns if sep else "base", []).append(row)
    fmt = output_format(fmt)
    if fmt is Format.json:
        emit_json({"dataset": ds.name, "groups": groups})
        return
    if fmt is Format.rich:
        from rich.console import Console
        from rich.text import Text
        from rich.tree import Tree

        root = Tree(Text(ds.name))
        for group, members in groups.items():
            branch = root.add(Text(group))
            for row in members:  # Text: "timestamp[us, UTC]" is a type, not markup
                branch.add(Text(f"{row['name']}: {row['type']}{'' if row['nullable'] else ' (not null)'}"))
        Console().print(root)
        return
    typer.echo(ds.name)
    for group, members in groups.items():
        typer.echo(f"  {group}")
        for row in members:
            typer.echo(f"    {row['name']}: {row['type']}{'' if row['nullable'] else ' (not null)'}")


def explore(
    dataset: Annotated[
        str | None, typer.Argument(help="Dataset to open first (default: the landing page, which lists the root's).")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; the default serves this machine only.")
    ] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the address; do not open a browser.")] = False,
    notebook: Annotated[
        bool, typer.Option("--notebook", help="Print where the marimo notebook is installed (`marimo edit` it).")
    ] = False,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Browse the root's datasets in a web page: filter, page, summaries, a record's history and blame, any
    earlier state ("as of") and the diff between two. Read-only; runs until Ctrl-C.

    Example: usr explore densegen/demo --port 8765
    """
    from ..explore_http import ExploreServer, notebook_path

    if notebook:
        path = notebook_path()
        if output_format(fmt) is Format.json:
            emit_json({"notebook": str(path)})
        else:
            typer.echo(f"{path}\n(needs the explore extra: pip install 'usr_es[explore]'; then: marimo edit {path})")
        return
    name = existing_dataset(dataset).name if dataset is not None else None
    server = ExploreServer(datasets_root(), host=host, port=port)
    link = server.link(name)
    if output_format(fmt) is Format.json:
        emit_json({"url": link, "root": str(server.explorer.root)})
    else:
        typer.echo(f"usr explore: {server.explorer.root} at {link} (read-only; Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host}: anyone who can reach it can read these datasets", err=True)
    sys.stdout.flush()
    try:
        server.serve_forever(open_browser=not no_browser, dataset=name)
    except KeyboardInterrupt:
        typer.echo("usr explore: stopped", err=True)
