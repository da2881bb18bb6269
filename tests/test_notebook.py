"""The shipped marimo notebook (usr_es/notebooks/usr_explorer.py) runs top to bottom as marimo runs it as a
script, on the sample dataset, and shows what the explorer answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tools.screen_sample import NAME, screen

NOTEBOOK = Path(__file__).resolve().parent.parent / "usr_es" / "notebooks" / "usr_explorer.py"


def test_the_notebook_runs_and_shows_the_first_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    screen(tmp_path)
    monkeypatch.setenv("USR_ROOT", str(tmp_path))
    spec = importlib.util.spec_from_file_location("usr_explorer", NOTEBOOK)
    assert spec is not None and spec.loader is not None
    notebook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(notebook)
    _, defs = notebook.app.run()
    assert defs["dataset"].value == NAME
    assert (defs["page"].total, defs["overview"].rows, defs["overview"].deleted) == (278, 278, 2)
    assert defs["summary"].bio_types == {"dna": 238, "protein": 40}
    defs["explorer"].close()
