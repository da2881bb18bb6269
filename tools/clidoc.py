"""`docs/cli.md` from the help text of every `usr` command: `python -m tools.clidoc docs/cli.md` (`make docs`).

Help is rendered at a fixed width, independent of the terminal, so the page is stable and a
test can compare it with a fresh rendering. Reads the CLI; changes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from usr_es.cli import app

#: Help width (columns) of the generated page; changing it changes every block.
WIDTH = 100

_HEADER = """\
# `usr` command reference

Generated from the commands' help texts by `python -m tools.clidoc docs/cli.md` (`make docs`).
Do not edit by hand: `tests/test_docs.py` fails when this page differs from the help.
Exit codes and the quickstart are in the [README](../README.md); design notes in [adr/](adr/).
"""


def _context(command: TyperCommand | TyperGroup, name: str, parent: typer.Context | None) -> typer.Context:
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    return typer.Context(command, info_name=name, parent=parent, **settings)


def _walk(
    command: TyperCommand | TyperGroup, ctx: typer.Context, path: str
) -> Iterator[tuple[str, TyperCommand | TyperGroup, typer.Context]]:
    yield path, command, ctx
    if not isinstance(command, TyperGroup):
        return
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if not isinstance(sub, (TyperCommand, TyperGroup)) or sub.hidden:
            continue
        yield from _walk(sub, _context(sub, name, ctx), f"{path} {name}")


def _tree() -> Iterator[tuple[str, TyperCommand | TyperGroup, typer.Context]]:
    root = typer.main.get_command(app)
    if not isinstance(root, (TyperCommand, TyperGroup)):
        raise TypeError(f"unexpected root command type {type(root).__name__}")
    return _walk(root, _context(root, "usr", None), "usr")


def commands() -> dict[str, TyperCommand | TyperGroup]:
    """`usr` and every visible command and subcommand, keyed by full name (`usr events tail`).

    Returns:
        An insertion-ordered mapping: parents before their subcommands, in the CLI's listing order.
    """
    return {path: command for path, command, _ in _tree()}


def help_texts() -> dict[str, str]:
    """The `--help` text of every entry of `commands()`, rendered at `WIDTH` columns."""
    return {path: command.get_help(ctx) for path, command, ctx in _tree()}


def render() -> str:
    """The full text of `docs/cli.md`: one section per command with its `--help` output."""
    parts = [_HEADER]
    for path, text in help_texts().items():
        parts.append(f"\n## {path}\n\n```text\n{text.rstrip()}\n```\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write the page to the path given (or to stdout without one)."""
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if not args:
        sys.stdout.write(text)
        return 0
    out = Path(args[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(help_texts())} commands)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
