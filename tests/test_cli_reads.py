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

    from usr_es.cli.common import progress

    with progress("quiet work") as update:
        update(1)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with progress("loud work", total=10) as update:
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


TYPED = (
    "typed__f:float64,typed__i:int64,typed__b:bool,typed__s:string,typed__t:timestamp[us, UTC],"
    "typed__v:list<float64>,typed__tags:list<string>,typed__st:struct<a:int64,b:string>"
)


@pytest.fixture
def typed_root(cli_root: Path) -> tuple[Path, list[str]]:
    """cli_root plus an overlay with a column of every kind (NaN, nulls, lists, structs, timestamps) and a
    tombstone."""
    import datetime as dt

    import pyarrow as pa

    usr(cli_root, "namespace", "register", "typed", "--columns", TYPED)
    ds = Dataset.open(cli_root, "demo/ds")
    ids = ds.head(3, columns=["id"]).column("id").to_pylist()
    when = dt.datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=dt.UTC)
    table = pa.table(
        {
            "id": ids,
            "f": [float("nan"), 1.5, None],
            "i": [1, None, 2**40],
            "b": [True, False, None],
            "s": ["x", None, "ü"],
            "t": pa.array([when, None, when], pa.timestamp("us", tz="UTC")),
            "v": [[1.0, float("nan")], [], None],
            "tags": [["a"], None, []],
            "st": pa.array(
                [{"a": 1, "b": "q"}, None, {"a": None, "b": None}], pa.struct([("a", pa.int64()), ("b", pa.string())])
            ),
        }
    )
    ds.write_overlay("typed", table)
    ds.delete([ids[2]], reason="gone")
    return cli_root, ids


READ_COMMANDS = [
    ["head", "demo/ds", "-n", "3"],
    ["head", "demo/ds", "--include-deleted"],
    ["get", "demo/ds", "--id", "{0}"],
    ["get", "demo/ds", "{1}"],
    ["grep", "demo/ds", "--pattern", "a"],
    ["describe", "demo/ds"],
    ["cols", "demo/ds"],
    ["cell", "demo/ds", "--row", "0", "--col", "typed__st"],
    ["schema", "demo/ds"],
    ["schema", "demo/ds", "--tree"],
    ["info", "demo/ds"],
    ["ls"],
    ["state", "get", "demo/ds", "--id", "{0}"],
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_json_output_of_every_read_command_parses_for_every_column_type(
    typed_root: tuple[Path, list[str]], command: list[str]
) -> None:
    root, ids = typed_root
    data = usr_json(root, *[part.format(*ids) for part in command])
    assert data  # every one of these commands has something to show for this dataset
    json.dumps(data, allow_nan=False)  # raises if a NaN/inf survived instead of becoming null


def test_json_rows_keep_values_of_every_type(typed_root: tuple[Path, list[str]]) -> None:
    root, ids = typed_root
    (row,) = usr_json(root, "get", "demo/ds", "--id", ids[0], "--columns", "id,typed__f,typed__t,typed__v,typed__st")
    assert row == {
        "id": ids[0],
        "typed__f": None,
        "typed__t": "2026-11-24T12:00:00.123456Z",
        "typed__v": [1.0, None],
        "typed__st": {"a": 1, "b": "q"},
    }


def test_get_of_a_tombstoned_record_needs_include_deleted(typed_root: tuple[Path, list[str]]) -> None:
    root, ids = typed_root
    result = usr_process(root, "--root", str(root), "get", "demo/ds", "--id", ids[2])
    assert result.returncode == 4 and "--include-deleted" in result.stderr
    (row,) = usr_json(root, "get", "demo/ds", "--id", ids[2], "--include-deleted", "--columns", "id,usr__deleted")
    assert row == {"id": ids[2], "usr__deleted": True}


def test_export_every_format_from_the_cli(typed_root: tuple[Path, list[str]], tmp_path: Path) -> None:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    root, ids = typed_root
    out = tmp_path / "exports"
    out.mkdir()
    for kind in ("parquet", "csv", "jsonl"):
        result = usr_json(root, "export", "demo/ds", "--fmt", kind, "--out", str(out))
        assert Path(result["path"]) == out / f"demo_ds.{kind}"
        assert result["rows"] == 5  # six demo rows, one tombstoned
    table = pq.read_table(out / "demo_ds.parquet")
    assert table.schema.field("typed__st").type == Dataset.open(root, "demo/ds").view_schema().field("typed__st").type
    assert table.schema.metadata is not None and b"usr:dataset" in table.schema.metadata
    assert ids[2] not in table.column("id").to_pylist()
    csv = pcsv.read_csv(out / "demo_ds.csv")
    first = csv.to_pylist()[csv.column("id").to_pylist().index(ids[0])]
    assert json.loads(first["typed__v"])[0] == 1.0 and json.loads(first["typed__st"]) == {"a": 1, "b": "q"}
    lines = [json.loads(line) for line in (out / "demo_ds.jsonl").read_text().splitlines()]
    assert {line["id"]: line for line in lines}[ids[0]]["typed__t"] == "2026-11-24T12:00:00.123456Z"


def test_export_rejects_a_bad_format_before_creating_anything(cli_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "nothing-here" / "x.xml"
    result = usr_process(cli_root, "--root", str(cli_root), "export", "demo/ds", "--fmt", "xml", "--out", str(target))
    assert result.returncode == 2 and result.stderr.startswith("error: Unsupported export format")
    assert not target.parent.exists()


def test_export_creates_the_missing_folders_of_its_out_path(cli_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "exports" / "run1" / "out.csv"
    result = usr_process(cli_root, "--root", str(cli_root), "export", "demo/ds", "--fmt", "csv", "--out", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_text().startswith('"id"')


def test_path_first_tools_read_any_parquet_file_or_folder(cli_root: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "run42"
    folder.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3], "events_y": ["a", "b", "c"]}), folder / "events-1.parquet")
    assert usr_json(cli_root, "head", str(folder / "events-1.parquet"), "-n", "2") == [
        {"x": 1, "events_y": "a"},
        {"x": 2, "events_y": "b"},
    ]
    assert [c["name"] for c in usr_json(cli_root, "cols", str(folder), "--glob", "events*")] == ["x", "events_y"]
    assert usr_json(cli_root, "cell", str(folder), "--row", "2", "--col", "x")["value"] == 3
    inside = usr_process(cli_root / "demo" / "ds", "head", ".", "-n", "1", "--format", "json")
    assert inside.returncode == 0, inside.stderr
    assert set(json.loads(inside.stdout)["data"][0]) >= {"id", "sequence"}


def test_info_lists_checkpoints_and_projection_lag(cli_root: Path) -> None:
    before = usr_json(cli_root, "info", "demo/ds")
    assert before["checkpoints"] == [] and before["projection_lag"] == 0
    seq = usr_json(cli_root, "snapshot", "demo/ds")["seq"]
    (cli_root / "demo" / "ds" / "records.parquet").unlink()  # a lagging projection is caught up by the read
    after = usr_json(cli_root, "info", "demo/ds")
    assert after["checkpoints"] == [seq]
    assert after["projection_lag"] >= 1 and after["rows"] == before["rows"]


def test_rich_output_shows_stored_values_and_types_as_they_are(cli_root: Path) -> None:
    ds = Dataset.open(cli_root, "demo/ds")
    ds.add_sequences([{"sequence": "GATTACAGATTACA"}], source="λ-phage [blue]b")
    wide = {"COLUMNS": "240"}
    shown = usr_process(cli_root, "head", "demo/ds", "-n", "10", "--format", "rich", env=wide)
    assert shown.returncode == 0, shown.stderr
    assert "┃" in shown.stdout and "λ-phage [blue]b" in shown.stdout
    types = usr_process(cli_root, "schema", "demo/ds", "--format", "rich", env=wide).stdout
    assert "timestamp[us, UTC]" in types
    tree = usr_process(cli_root, "schema", "demo/ds", "--tree", "--format", "rich", env=wide).stdout
    assert "timestamp[us, UTC]" in tree
