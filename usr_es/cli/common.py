"""What the `usr` command modules share: the global options, common option types, dataset resolution
and output rendering (rich, plain, json), progress bars and receipts.

Imports only typer at module level; everything heavier is imported inside the functions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..dataset import Dataset


class Format(StrEnum):
    auto = "auto"
    rich = "rich"
    plain = "plain"
    json = "json"


@dataclass
class GlobalOptions:
    """The global options of `usr` (set by the app callback before any command runs)."""

    root: Path | None = None
    rich: bool = True  # `--no-rich`: `--format auto` prints plain text on a terminal too


options = GlobalOptions()


ColumnsOpt = Annotated[str, typer.Option("--columns", help="Comma-separated column names (default: all).")]

FormatOpt = Annotated[Format, typer.Option("--format", help="auto (rich on a terminal), rich, plain or json.")]

CommandIdOpt = Annotated[
    str | None,
    typer.Option(
        "--command-id",
        envvar="USR_COMMAND_ID",
        help="Idempotency key: a retry with an id already in the log appends nothing and returns the original.",
    ),
]

ExpectedSeqOpt = Annotated[
    int | None,
    typer.Option("--expected-seq", help="Fail with a concurrency error unless the log is at this seq."),
]

DatasetArg = Annotated[
    str | None,
    typer.Argument(
        help="Dataset id (`ns/name`, or a unique `name`) or dataset directory; default: the dataset folder you are in.",
        show_default=False,
    ),
]


# -- dataset resolution ------------------------------------------------------------------------
def datasets_root(*, create: bool = False) -> Path:
    from ..fileio import fileops
    from ..roots import find_root

    explicit = options.root
    if create and explicit is not None:
        wanted = explicit.expanduser().resolve()
        if not wanted.exists():  # the first `namespace register` starts a root: one new folder, said so
            if not wanted.parent.is_dir():
                from ..errors import NotFound

                raise NotFound(
                    f"Datasets root does not exist, nor its parent folder: {wanted}",
                    hint=f"Check the path; to start a root there: mkdir -p {wanted}",
                )
            fileops().mkdir(wanted)
            typer.echo(f"Created datasets root {wanted}", err=True)
    return find_root(explicit)


def _dataset(ident: str) -> Dataset:
    from ..dataset import Dataset
    from ..roots import looks_like_path

    if (
        looks_like_path(ident)
        or Path(ident).is_file()
        or (os.sep in ident and Path(ident).is_dir() and not options.root)
    ):
        return Dataset.at(Path(ident))  # a dataset directory, or its records.parquet / .events.log
    return Dataset.open(datasets_root(), ident)


def existing_dataset(ident: str | None) -> Dataset:
    from ..dataset import Dataset
    from ..roots import enclosing_dataset, given_root, resolve_existing

    if ident is None:
        return Dataset.at(enclosing_dataset(Path.cwd(), within=given_root(options.root)))
    ds = _dataset(ident)
    if ds.exists:
        return ds
    return Dataset.open(ds.root, resolve_existing(ds.root, ident))


def column_list(text: str) -> list[str] | None:
    """`--columns a,b` as a list (None: all columns)."""
    return [c.strip() for c in text.split(",") if c.strip()] or None


def split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


# -- output ------------------------------------------------------------------------------------
def output_format(fmt: Format) -> Format:
    if fmt is Format.auto:
        return Format.rich if options.rich and sys.stdout.isatty() else Format.plain
    return fmt


def _json_default(obj: Any) -> Any:
    import datetime

    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def emit_json(data: Any) -> None:
    import msgspec

    sys.stdout.write(
        msgspec.json.encode({"usr_output_version": 1, "data": data}, enc_hook=_json_default).decode() + "\n"
    )


def emit_struct(obj: Any) -> None:
    """A typed result (msgspec Structs, lists of them) as the JSON envelope."""
    import msgspec

    emit_json(msgspec.to_builtins(obj, enc_hook=_json_default))


def plain_value(value: Any) -> str:
    import msgspec

    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return msgspec.json.encode(value, enc_hook=_json_default).decode()
    if hasattr(value, "isoformat"):
        return str(_json_default(value))
    return str(value)


def emit_object(obj: Any, fmt: Format, *, title: str | None = None) -> None:
    import msgspec

    data = msgspec.to_builtins(obj, enc_hook=_json_default)
    fmt = output_format(fmt)
    if fmt is Format.json:
        emit_json(data)
        return
    if fmt is Format.rich:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(title) if title else None, show_header=False)
        for key, value in data.items():  # Text: a stored value is never read as markup ("[blue]", "[us, UTC]")
            table.add_row(Text(str(key)), Text(plain_value(value)))
        Console().print(table)
        return
    for key, value in data.items():
        typer.echo(f"{key}: {plain_value(value)}")


def emit_rows(rows: list[dict[str, Any]], columns: list[str], fmt: Format, *, title: str | None = None) -> None:
    fmt = output_format(fmt)
    if fmt is Format.json:
        emit_json(rows)
        return
    if fmt is Format.rich:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(title) if title else None)
        for col in columns:
            table.add_column(Text(col), overflow="fold")
        for row in rows:  # Text: a stored value is never read as markup ("[blue]", "[us, UTC]")
            table.add_row(*(Text(plain_value(row.get(c))) for c in columns))
        Console().print(table)
        return
    typer.echo("\t".join(columns))
    for row in rows:
        typer.echo("\t".join(plain_value(row.get(c)) for c in columns))


@contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr while the body runs, only when stderr is a terminal (silent otherwise).

    Yields `update(done)`; with `total` None the bar pulses (the work does not report steps).
    """
    if not sys.stderr.isatty() or os.environ.get("USR_NO_PROGRESS"):
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    if total is not None:
        columns.insert(3, MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def emit_receipt(receipt: Any, message: str, fmt: Format) -> None:
    for warning in receipt.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if output_format(fmt) is Format.json:
        import msgspec

        emit_json(msgspec.to_builtins(receipt))
        return
    suffix = " (retry: already in the log, nothing appended)" if receipt.replayed else ""
    typer.echo(f"{message} [seq {receipt.seq}]{suffix}")
