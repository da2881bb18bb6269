"""Docs are executed or generated: the README's marked quickstarts run as written, and docs/cli.md and the
README's exit-code table agree with the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tools.clidoc import commands, help_texts, render
from usr_es import errors

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CLI_DOC = REPO / "docs" / "cli.md"
MARKER = "<!-- test: run -->"
_MARKED_BLOCK = re.compile(re.escape(MARKER) + r"[ \t]*\n```(\w+)[ \t]*\n(.*?)\n```", re.S)
_EXIT_ROW = re.compile(r"^\|\s*(\d+)\s*\|", re.M)


def marked_blocks(language: str) -> list[str]:
    """Bodies of the README's fenced blocks in `language` that follow the run marker."""
    text = README.read_text(encoding="utf-8")
    return [body for lang, body in _MARKED_BLOCK.findall(text) if lang == language]


def _env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: `usr` from this interpreter's bin dir, temp files under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USR_", "COLUMNS"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["TMPDIR"] = str(tmp_path)
    env["HOME"] = str(tmp_path)
    return env


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)


def _failure(kind: str, index: int, proc: subprocess.CompletedProcess[str]) -> str:
    head = f"README {kind} block #{index} exited {proc.returncode}"
    return f"{head}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def test_readme_marks_a_cli_and_a_python_quickstart() -> None:
    assert len(marked_blocks("bash")) >= 1
    assert len(marked_blocks("python")) >= 1


@pytest.mark.parametrize("index", range(len(marked_blocks("bash"))))
def test_readme_bash_quickstart_runs_as_written(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"readme_{index}.sh"
    script.write_text(marked_blocks("bash")[index], encoding="utf-8")
    proc = _run(["bash", "-euo", "pipefail", str(script)], tmp_path)
    assert proc.returncode == 0, _failure("bash", index, proc)
    assert "error: internal error" not in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("index", range(len(marked_blocks("python"))))
def test_readme_python_quickstart_runs_as_written(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"readme_{index}.py"
    script.write_text(marked_blocks("python")[index], encoding="utf-8")
    proc = _run([sys.executable, str(script)], tmp_path)
    assert proc.returncode == 0, _failure("python", index, proc)


def test_cli_doc_matches_the_help_texts() -> None:
    current = CLI_DOC.read_text(encoding="utf-8") if CLI_DOC.exists() else ""
    hint = f"docs/cli.md is stale (help rendered by typer {typer.__version__}): run `make docs` and commit the result"
    assert current == render(), hint


def test_cli_doc_has_a_section_for_every_command() -> None:
    text = CLI_DOC.read_text(encoding="utf-8") if CLI_DOC.exists() else ""
    commands = help_texts()
    assert {"usr", "usr init", "usr import", "usr verify", "usr events tail"} <= set(commands)
    missing = [name for name in commands if f"\n## {name}\n" not in text]
    assert not missing, f"not in docs/cli.md: {missing} (run `make docs`)"


def test_cli_help_every_command_has_a_description_and_an_example() -> None:
    lacking = []
    for name, text in help_texts().items():
        description = text.split("\n\n", 2)[1].strip() if text.count("\n\n") >= 1 else ""
        example = re.search(r"^\s*Example: usr\b", text, re.M)
        if not description or description.startswith(("Options:", "Arguments:")) or example is None:
            lacking.append(name)
    assert not lacking, f"commands without a description or an `Example: usr ...` paragraph: {lacking}"


def test_cli_help_every_parameter_has_help_text() -> None:
    bare = [
        f"{name} {param.name}"
        for name, command in commands().items()
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert not bare, f"parameters without help text: {bare}"


def test_readme_exit_code_table_lists_every_exit_code() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0] if "## Exit codes" in text else ""
    documented = {int(code) for code in _EXIT_ROW.findall(section)}
    defined = {value for key, value in vars(errors).items() if key.startswith("EXIT_")}
    assert documented == defined
