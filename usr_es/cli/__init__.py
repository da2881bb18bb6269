"""The `usr` command line: parse, call one `Dataset` (or registry) function, render.

The commands live by group in `reads`, `writes`, `log` and `maintenance`, sharing `common`; this module
holds the app, registers them (in `usr --help` order) and is the entry point. Heavy modules (pyarrow, the
dataset) are imported inside commands so `usr --help` stays fast. Every `UsrError` is turned into
`error: ...` (+ `hint: ...`) on stderr and its exit code by `main`; no user error prints a traceback.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from ..errors import EXIT_ABORT, EXIT_INTERNAL, EXIT_USAGE, CommitError, Interrupted, UsrError
from . import forensics, log, maintenance, reads, sync, writes
from .common import options

#: The top-level commands, in the order `usr --help` (and docs/cli.md) lists them; the groups follow.
_COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("init", writes.init),
    ("import", writes.import_),
    ("ls", reads.ls),
    ("info", reads.info),
    ("head", reads.head),
    ("cols", reads.cols),
    ("cell", reads.cell),
    ("get", reads.get),
    ("grep", reads.grep),
    ("describe", reads.describe),
    ("export", reads.export),
    ("schema", reads.schema),
    ("explore", reads.explore),
    ("replay", log.replay),
    ("rebuild", log.rebuild),
    ("verify", log.verify),
    ("validate", log.validate),
    ("history", forensics.history),
    ("blame", forensics.blame),
    ("diff", forensics.diff),
    ("log", forensics.log),
    ("status", sync.status),
    ("pull", sync.pull),
    ("push", sync.push),
    ("demo", writes.demo),
    ("attach", writes.attach),
    ("delete", writes.delete),
    ("restore", writes.restore),
    ("materialize", maintenance.materialize),
    ("snapshot", maintenance.snapshot),
    ("adopt", maintenance.adopt),
)
_GROUPS: tuple[tuple[str, typer.Typer], ...] = (
    ("namespace", maintenance.namespace_app),
    ("events", log.events_app),
    ("state", writes.state_app),
    ("maintenance", maintenance.maintenance_app),
    ("remotes", sync.remotes_app),
)


def _version(asked: bool) -> None:
    if asked:
        from .. import __version__

        typer.echo(f"usr_es {__version__}")
        raise typer.Exit()


def _global(
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Datasets root (default: $USR_ROOT, else nearest ancestor with registry.yaml)."),
    ] = None,
    rich: Annotated[
        bool,
        typer.Option("--rich/--no-rich", help="With --no-rich, `--format auto` prints plain text on a terminal too."),
    ] = True,
    remotes_config: Annotated[
        Path | None,
        typer.Option("--remotes-config", help="The remotes file for this run (sets $USR_REMOTES_PATH)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the usr_es version and exit.", callback=_version, is_eager=True),
    ] = False,
) -> None:
    options.root, options.rich = root, rich
    if remotes_config is not None:
        os.environ["USR_REMOTES_PATH"] = str(remotes_config)


def _build(names: frozenset[str] | None = None) -> typer.Typer:
    """The app with every command, or only those `names` (a command's parser is built from its signature
    on every start-up: all of them cost ~20 ms of each `usr` run, one of them well under 1 ms)."""
    built = typer.Typer(
        name="usr",
        help="Universal Sequence Record, event-sourced: every change is an event in .events.log; "
        "records.parquet is a projection rebuilt from it.\n\n"
        "Example: usr --root /data/usr init densegen/demo --source 'lab run 7'",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for name, command in _COMMANDS:
        if names is None or name in names:
            built.command(name)(command)
    for name, group in _GROUPS:
        if names is None or name in names:
            built.add_typer(group, name=name)
    if names is None or "_agent" in names:
        built.command("_agent", hidden=True)(sync.agent)
    built.callback()(_global)
    return built


app = _build()
_NAMES = frozenset([*(name for name, _ in (*_COMMANDS, *_GROUPS)), "_agent"])


def _app_for(args: list[str]) -> typer.Typer:
    """The app that parses `args`: just the command they name (after the global `--root`), else the whole
    app (`usr --help`, an unknown command and its suggestions)."""
    at = 0
    while at < len(args) and args[at].startswith("-"):
        at += 2 if args[at] in ("--root", "--remotes-config") else 1
    return _build(frozenset([args[at]])) if at < len(args) and args[at] in _NAMES else app


def _fail(exc: UsrError) -> NoReturn:
    typer.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


def _prefer_jemalloc() -> None:
    """Allocate Arrow memory with jemalloc in the `usr` process, unless ARROW_DEFAULT_MEMORY_POOL
    already names a pool: on 1M-row imports and attaches it peaked 170-240 MB lower than pyarrow's
    default (mimalloc), on materializes 60-95 MB, with less time in the kernel (ADR 0010). Set before
    pyarrow is imported (so `usr --help` stays free of it); Linux wheels are built with jemalloc."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")


#: Modules pyarrow imports when they are installed and the `usr` process never uses (`_without_unneeded`).
_UNNEEDED = ("pandas", "numpy", "dateutil")


class _Unneeded:
    """A meta path finder that refuses the modules it is given (see `_without_unneeded`)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (kept out of the usr process)", name=name)


def _without_unneeded() -> None:
    """Keep pandas, numpy and dateutil out of the `usr` process. Where they are installed (the `pandas`
    extra brings all three), pyarrow imports numpy when it is imported (~70 ms), pandas the first time it
    turns a Python value into Arrow (`pa.scalar`, `pc.fill_null(..., False)`: 0.2-0.3 s and 60 MB) and
    dateutil then too (~3 ms; it would convert a `relativedelta`), for every command, though usr_es uses
    none of them (pyarrow needs none). Refused, each import fails once and pyarrow carries on as it does
    where they are not installed."""
    absent = tuple(name for name in _UNNEEDED if name not in sys.modules)  # one already loaded stays usable
    if absent:
        sys.meta_path.insert(0, _Unneeded(absent))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning every UsrError into `error:`/`hint:` + exit code.

    Called with `argv` (tests, embedding), it returns or raises SystemExit. As the process's entry point
    (no `argv`), it ends the process itself once the output is flushed (`_leave`)."""
    if argv is not None:
        _main(argv)
        return
    _without_unneeded()
    try:
        _main(None)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    _leave(code)


def _main(argv: list[str] | None) -> None:
    _prefer_jemalloc()
    before = _last_commit()
    try:
        code = _run(argv, before)
    finally:
        if argv is None:  # the process is done: a late Ctrl-C must not turn a reported outcome into a signal death
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == EXIT_ABORT:  # the parser turned a Ctrl-C the command did not report into this exit code
        _interrupted(before)
    if isinstance(code, int) and code:
        sys.exit(code)


def _leave(code: int) -> NoReturn:
    """End the process with `code` once stdout and stderr are flushed, skipping the interpreter's
    tear-down (freeing every module, pyarrow's and the allocator's): it cost 15-25 ms of every small
    command at 10M rows and does nothing a finished command needs. Every write is durable and every
    scratch file closed before a command returns; the threads it started are joined (mypy ends the
    same way, `mypy.util.hard_exit`)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left before the last lines: as `_run` reports it
        code = code or 1
    except OSError:
        code = code or 1
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def _run(argv: list[str] | None, before: tuple[str, int] | None) -> object:
    args = sys.argv[1:] if argv is None else argv
    try:
        return _app_for(args)(args=args, prog_name="usr", standalone_mode=False)
    except UsrError as exc:
        _fail(exc)
    except typer.TyperException as exc:  # the parser's own errors (bad option, missing argument, ...)
        _usage_failed(exc, args)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted(before)
    except BrokenPipeError:  # `usr head ... | head -1`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as exc:  # an I/O failure the write path did not classify: nothing was reported as done
        what = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
        _fail(CommitError(f"I/O error: {what}", state="NOT_COMMITTED" if exc.filename else "INDETERMINATE"))
    except Exception as exc:  # a bug: say so plainly, still no traceback unless asked for
        if os.environ.get("USR_DEBUG"):
            raise
        typer.echo(f"error: internal error ({type(exc).__name__}): {exc}", err=True)
        typer.echo("hint: this is a bug in usr_es; rerun with USR_DEBUG=1 for the traceback", err=True)
        sys.exit(EXIT_INTERNAL)


def _last_commit() -> tuple[str, int] | None:
    """The last event this process committed (`writer.last_commit`; None: no write ran yet)."""
    writer = sys.modules.get("usr_es.writer")  # not imported: no write ran in this process
    return writer.last_commit() if writer is not None else None


def _interrupted(before: tuple[str, int] | None) -> NoReturn:
    """A Ctrl-C outside a write's own reporting (before it began, or while its result was shown): say what
    the log holds, as a write does (`before`: the last commit when the command started)."""
    last = _last_commit()
    if last is not None and last != before:
        name, seq = last
        _fail(Interrupted(f"interrupted after event seq {seq} of {name} was committed", state="COMMITTED"))
    _fail(Interrupted("interrupted before anything was written to the log", state="NOT_COMMITTED"))


def _usage_failed(exc: typer.TyperException, args: list[str]) -> NoReturn:
    """A usage error as one `error:` line and a `hint:` (a group named without a command shows its help)."""
    show = getattr(exc, "show", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and callable(show):
        show()
        sys.exit(EXIT_USAGE)
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "usr"
    typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
    hint = f"Run `{command} --help` for its usage."
    option = getattr(exc, "option_name", None) or ""
    lookalike = next((a for a in args if option and a.startswith(option) and _LOOKS_LIKE_ID.match(a)), None)
    if lookalike is not None:
        hint += f" '{lookalike}' is not an option; if it is meant as a dataset id: ids start with a letter or digit."
    typer.echo(f"hint: {hint}", err=True)
    sys.exit(EXIT_USAGE)


_LOOKS_LIKE_ID = re.compile(r"^-[A-Za-z0-9][A-Za-z0-9._/-]+$")
