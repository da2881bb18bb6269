"""`usr maintenance overlay-project`: one dataset's namespace values copied onto another's records by a join
column, as an attach of the destination that names the source version the values came from."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from usr_es import Dataset, InvalidInput, NamespaceError, NotFound, SchemaError
from usr_es.cli import app
from usr_es.overlay_copy import project

runner = CliRunner()
SHARED = ["ACGTACGTAC", "GGGCCCAATT", "TTTTAAAACC"]


@pytest.fixture
def pair(root: Path) -> tuple[Dataset, Dataset]:
    """`lab/src` with mock scores on its three records; `lab/dest` holding two of them and one of its own."""
    src = Dataset.open(root, "lab/src")
    src.init()
    src.add_sequences(SHARED)
    ids = src.view(columns=["id"]).column("id").to_pylist()
    src.write_overlay("mock", {"id": ids, "mock__score": [1.0, 2.0, 3.0]})
    dest = Dataset.open(root, "lab/dest")
    dest.init()
    dest.add_sequences([SHARED[0], SHARED[2], "CCCCGGGGAA"])
    return src, dest


def _scores(ds: Dataset) -> dict[str, float | None]:
    table = ds.view(columns=["sequence", "mock__score"])
    return dict(zip(table.column("sequence").to_pylist(), table.column("mock__score").to_pylist(), strict=True))


def test_values_follow_the_join_and_a_record_without_a_match_is_refused_unless_allowed(
    pair: tuple[Dataset, Dataset],
) -> None:
    src, dest = pair
    log = dest.log_path.read_bytes()
    with pytest.raises(InvalidInput, match="1 record"):
        dest.maintenance.project_overlay(src, "mock", src_join="sequence", dest_join="sequence")
    assert dest.log_path.read_bytes() == log
    result = dest.maintenance.project_overlay(
        src, "mock", src_join="sequence", dest_join="sequence", allow_missing=True
    )
    assert (result.matched, result.missing, result.dest_rows, result.columns) == (2, 1, 3, ["mock__score"])
    assert _scores(dest) == {SHARED[0]: 1.0, SHARED[2]: 3.0, "CCCCGGGGAA": None}
    assert result.receipt is not None and result.receipt.action == "attach"
    note = dest.log.events(n=1)[0].args["note"]
    assert f"from {src.name} at seq {result.source_seq} (hash {result.source_hash})" in note
    assert dest.verify().ok


def test_the_note_names_the_source_version_the_values_came_from(pair: tuple[Dataset, Dataset], tmp_path: Path) -> None:
    src, dest = pair
    result = dest.maintenance.project_overlay(src, "mock", allow_missing=True)  # joined on id
    ids = src.view(columns=["id"]).column("id").to_pylist()
    src.write_overlay("mock", {"id": ids[:1], "mock__score": [100.0]}, allow_overwrite=True)  # the source moves on
    src.log.replay(result.source_seq, tmp_path / "then")
    then = Dataset.at(tmp_path / "then")
    assert _scores(then)[SHARED[0]] == _scores(dest)[SHARED[0]] == 1.0
    assert src.log.events(n=1)[0].hash != result.source_hash


def test_overwrite_and_the_refusals(pair: tuple[Dataset, Dataset]) -> None:
    src, dest = pair
    dest.maintenance.project_overlay(src, "mock", allow_missing=True)
    with pytest.raises(NamespaceError):  # a value is there already
        dest.maintenance.project_overlay(src, "mock", allow_missing=True, overwrite=False)
    with pytest.raises(NamespaceError, match="reserved"):
        dest.maintenance.project_overlay(src, "usr_state", allow_missing=True)
    with pytest.raises(NotFound, match="mock__nope"):
        dest.maintenance.project_overlay(src, "mock", columns=["nope"], allow_missing=True)
    with pytest.raises(NotFound, match="no 'other' columns"):
        dest.maintenance.project_overlay(src, "other", allow_missing=True)


def test_no_record_to_project_onto_writes_nothing(pair: tuple[Dataset, Dataset]) -> None:
    src, dest = pair
    dest.delete(dest.view(columns=["id"]).column("id").to_pylist())
    log = dest.log_path.read_bytes()
    result = dest.maintenance.project_overlay(src, "mock")
    assert result.receipt is None and result.matched == 0 and dest.log_path.read_bytes() == log
    assert result.message.startswith("[NOTHING TO PROJECT]")


def test_source_join_values_must_be_unique() -> None:
    src = pa.table({"k": ["a", "a", "b"], "ns__x": [1, 2, 3]})
    dest = pa.table({"id": ["i1"], "k": ["a"]})
    with pytest.raises(SchemaError, match="must be unique: 1 'k' value"):
        project(src, "k", dest, "k", ["ns__x"])


def test_the_cli_reports_like_the_original_and_a_dry_run_writes_nothing(
    root: Path, pair: tuple[Dataset, Dataset]
) -> None:
    src, dest = pair
    args = ["--root", str(root), "maintenance", "overlay-project", "--src", src.name, "--dest", dest.name]
    args += ["--namespace", "mock", "--src-join", "sequence", "--dest-join", "sequence", "--allow-missing"]
    log = dest.log_path.read_bytes()
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.strip() == (
        f"[DRY-RUN] src={src.name} dest={dest.name} namespace=mock columns=mock__score matched=2 missing=1 dest_rows=3"
    )
    assert dest.log_path.read_bytes() == log
    done = runner.invoke(app, [*args, "--format", "json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)["data"]
    assert (data["matched"], data["dry_run"], data["receipt"]["action"]) == (2, False, "attach")
