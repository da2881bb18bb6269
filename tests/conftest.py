"""Shared fixtures: a datasets root with a registry, an initialised dataset, the demo CSV, a file guard."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from usr_es import Dataset
from usr_es.registry import register_namespace, split_columns_spec

if TYPE_CHECKING:
    from usr_es.explore_http import ExploreServer

DEMO_CSV = """\
sequence,some_other_value
GTTGACAACTGGTTTTATATACAGTATAATAGAAAACCATGAGTAAAGTTATCACCATTT,1.066666667
GTTGACAACTGGTTTTATATACAGTATAACCATGAGTAAAGTTATCACCATTT,1.083333333
ggtgctacaTTTACGTCTTTTTACTTTTGGTTACCGCGCTGGATAAAAAAACAGTATAAT,1.083333333
GTTGACAACTGGTTTTATAatcgggCCATGAGTAAAGTTATCACCATTT,1.066666667
AGGAaaTGTGTGTGAAAAAAAAGTG,1.05
ATTAAGGGGGTTTGCGTTGATGCCAGC,1.083333333
"""
DEMO_SEQUENCES: list[str] = [line.split(",")[0] for line in DEMO_CSV.splitlines()[1:]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A datasets root whose registry.yaml registers namespace `mock` (`mock__score:float64`)."""
    path = tmp_path / "root"
    register_namespace(path, "mock", split_columns_spec("mock__score:float64"))
    return path


@pytest.fixture
def dataset(root: Path) -> Dataset:
    """An initialised, empty dataset `demo/ds` under `root`."""
    ds = Dataset.open(root, "demo/ds")
    ds.init(source="conftest")
    return ds


@pytest.fixture
def demo_csv(tmp_path: Path) -> Path:
    """The project's six-row demo CSV written into tmp_path."""
    path = tmp_path / "demo.csv"
    path.write_text(DEMO_CSV)
    return path


def _problems_under(base: Path) -> list[str]:
    problems: list[str] = []
    for directory, dirnames, filenames in os.walk(base):
        for name in [*dirnames, *filenames]:
            path = Path(directory) / name
            if name.startswith(".tmp-"):
                problems.append(f"temp file left behind: {path}")
            info = path.lstat()
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & stat.S_IWOTH:
                problems.append(f"world-writable: {path} ({stat.filemode(info.st_mode)})")
    return problems


@pytest.fixture(autouse=True)
def _file_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used tmp_path: no `.tmp-*` leftovers and nothing world-writable."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    base: Path = request.getfixturevalue("tmp_path")  # requested here so it outlives this teardown
    yield
    problems = _problems_under(base)
    assert not problems, "\n".join(problems)


@pytest.fixture
def cli_root(tmp_path: Path, demo_csv: Path) -> Path:
    """A root with namespace `mock` and dataset `demo/ds` holding the demo CSV, built through the CLI."""
    from typer.testing import CliRunner

    from usr_es.cli import app

    root = tmp_path / "cliroot"
    columns = "mock__score:float64,mock__pos:struct<a:int64,b:string>"
    for args in (
        ["namespace", "register", "mock", "--columns", columns],
        ["init", "demo/ds", "--source", "cli test"],
        ["import", "demo/ds", "--from", "csv", "--path", str(demo_csv)],
    ):
        result = CliRunner().invoke(app, ["--root", str(root), *args])
        assert result.exit_code == 0, (result.output, result.exception)
    return root


@pytest.fixture(scope="module")
def screen_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExploreServer]:
    """`usr explore`'s server on 127.0.0.1 over a root holding the sample screening dataset."""
    from tools.screen_sample import screen
    from usr_es.explore_http import ExploreServer

    root = tmp_path_factory.mktemp("screen")
    screen(root)
    with ExploreServer(root) as running:
        yield running
