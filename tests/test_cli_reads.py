"""The read commands of the `usr` CLI: dataset resolution, path-first targets, JSON for every type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cli import usr, usr_json, usr_process

from usr_es import Dataset


def test_dataset_argument_defaults_to_the_dataset_folder_you_are_in(cli_root: Path) -> None:
    inside = cli_root / "demo" / "ds" / "_derived"
    inside.mkdir(exist_ok=True)
    result = usr_process(inside, "info", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"]["name"] == "demo/ds"


def test_missing_dataset_argument_outside_a_dataset_is_a_usage_error(cli_root: Path) -> None:
    result = usr_process(cli_root, "info")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "hint: " in result.stderr
    assert "Traceback" not in result.stderr


def test_unqualified_name_resolves_only_when_unique(cli_root: Path) -> None:
    assert usr_json(cli_root, "info", "ds")["name"] == "demo/ds"
    usr(cli_root, "init", "other/ds")
    result = usr_process(cli_root, "--root", str(cli_root), "info", "ds")
    assert result.returncode == 2
    assert "demo/ds" in result.stderr and "other/ds" in result.stderr


def test_qualified_id_must_exist_exactly(cli_root: Path) -> None:
    result = usr_process(cli_root, "--root", str(cli_root), "info", "demo/nope")
    assert result.returncode == 4
    assert result.stderr.startswith("error: Dataset not found")


def test_schema_tree_groups_base_and_namespaces(cli_root: Path) -> None:
    ds = Dataset.open(cli_root, "demo/ds")
    ids = ds.head(2, columns=["id"]).column("id").to_pylist()
    ds.write_overlay("mock", {"id": ids, "score": [1.0, 2.0]})
    ds.set_state(ids[:1], qc_status="pass")
    data = usr_json(cli_root, "schema", "demo/ds", "--tree")
    groups: dict[str, list[dict[str, Any]]] = data["groups"]
    assert list(groups) == ["base", "mock", "usr_state"]
    assert [c["name"] for c in groups["mock"]] == ["mock__score"]
    assert groups["mock"][0]["type"] == "float64"
    plain = usr(cli_root, "schema", "demo/ds", "--tree", "--format", "plain").stdout.splitlines()
    assert plain[0] == "demo/ds" and "  mock" in plain and "    mock__score: float64" in plain


def test_progress_bar_goes_to_a_terminal_stderr_only(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import sys

    from usr_es import cli

    with cli._progress("quiet work") as update:
        update(1)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with cli._progress("loud work", total=10) as update:
        update(10)
    # rich renders to a terminal it detected; the transient bar is cleared, but it was drawn.
    assert "loud work" in capsys.readouterr().err


def test_events_tail_into_a_closed_pipe_stops_quietly(cli_root: Path) -> None:
    import subprocess
    import sys

    ds = Dataset.open(cli_root, "demo/ds")
    for k in range(80):  # ~80 KB of log: more than a pipe buffer, so the writer sees the reader leave
        ds.add_sequences(["".join("ACGT"[(k >> (2 * b)) & 3] for b in range(8)) + "TTTT"], source="x" * 500)
    proc = subprocess.Popen(
        [sys.executable, "-m", "usr_es", "--root", str(cli_root), "events", "tail", "demo/ds"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert json.loads(first)["action"] == "init"
    assert err == b""
