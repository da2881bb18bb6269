"""Overlays, tombstones, record state, compaction, materialize, snapshots, validate and rebuild (API + CLI)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from usr_es import Dataset
from usr_es.cli import app
from usr_es.errors import CommitError, InvalidInput, NamespaceError, NotFound, SchemaError, UsrError
from usr_es.registry import format_type, register_namespace, split_columns_spec

runner = CliRunner()

QUICKSTART_COLUMNS = "quickstart__X_value:list<float64>,quickstart__intensity_log2_offset_delta:float64"
MOCK_COLUMNS = "mock__score:float64,mock__label:string,mock__vec:list<float64>"
ESSENTIAL = ["id", "bio_type", "sequence", "alphabet", "length", "source", "created_at"]
# Six dna_4 sequences, mixed case, distinct even when upper-cased.
SEQUENCES = [
    "GTTGACAACTGGTTTTATATACAGTATAATAGAAAACC",
    "gttgacaaCTGGTTTTATATACAGTATAACCATGAG",
    "ggtgctacaTTTACGTCTTTTTACTTTTGGTTACCGC",
    "ATTAAGGGGGTTTGCGTTGATGCCAGCaaa",
    "AGGAaaTGTGTGTGAAAAAAAAGTG",
    "cgatcTTTACCTTACTTTACTAAACTTAATAAACC",
]


# -- helpers -------------------------------------------------------------------------------------
def make_root(path: Path) -> Path:
    register_namespace(path, "quickstart", split_columns_spec(QUICKSTART_COLUMNS))
    register_namespace(path, "mock", split_columns_spec(MOCK_COLUMNS))
    return path


def make_dataset(root: Path, name: str = "demo/ds", *, alphabet: str = "dna_4") -> tuple[Dataset, list[str]]:
    """A dataset holding SEQUENCES; returns it and the ids in SEQUENCES order."""
    ds = Dataset.open(root, name)
    ds.init(source="test")
    ds.add_sequences(SEQUENCES, alphabet=alphabet)
    ids = ds.view(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(SEQUENCES)
    return ds, ids


@pytest.fixture
def oroot(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


@pytest.fixture
def ds_ids(oroot: Path) -> tuple[Dataset, list[str]]:
    return make_dataset(oroot)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def rows_by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in table.to_pylist()}


def usr(root: Path, *args: str) -> Any:
    result = runner.invoke(app, ["--root", str(root), *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def usr_json(root: Path, *args: str) -> Any:
    doc = json.loads(usr(root, *args, "--format", "json").stdout)
    assert doc["usr_output_version"] == 1
    return doc["data"]


def usr_process(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m usr_es --root ROOT ARGS` as a child process (errors go through main(); stdin not a TTY)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USR_")}
    return subprocess.run(
        [sys.executable, "-m", "usr_es", "--root", str(root), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def assert_cli_rejects(root: Path, ds: Dataset, args: list[str], *fragments: str, hint: bool = False) -> str:
    """Run the CLI; expect one `error:` line (+ a hint, required when `hint`), a non-zero exit and an unchanged log."""
    log = ds.log_path.read_bytes()
    registry = (root / "registry.yaml").read_bytes()
    proc = usr_process(root, *args)
    assert proc.returncode not in (0, 1), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) in (1, 2), proc.stderr
    assert lines[0].startswith("error: ")
    assert len(lines) == 1 or lines[1].startswith("hint: ")
    assert not hint or len(lines) == 2, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)
    assert ds.log_path.read_bytes() == log
    assert (root / "registry.yaml").read_bytes() == registry
    return proc.stderr


def assert_api_rejects(ds: Dataset, exc: type[UsrError], call: Any, *fragments: str) -> None:
    log = ds.log_path.read_bytes()
    with pytest.raises(exc) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert ds.log_path.read_bytes() == log


def projection_files(directory: Path) -> dict[str, bytes]:
    """records.parquet and every file under _derived/, by relative path."""
    out = {"records.parquet": (directory / "records.parquet").read_bytes()}
    derived = directory / "_derived"
    if derived.is_dir():
        for path in sorted(derived.rglob("*")):
            if path.is_file():
                out[str(path.relative_to(directory))] = path.read_bytes()
    return out


def canonical_rows(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of every projection parquet file (metadata ignored) plus the layout document."""
    out: dict[str, Any] = {}
    for rel in projection_files(directory):
        if rel.endswith(".parquet"):
            out[rel] = pq.read_table(directory / rel).replace_schema_metadata(None).to_pylist()
        else:
            out[rel] = json.loads((directory / rel).read_bytes())
    return out


def part_files(ds: Dataset, ns: str) -> list[str]:
    return sorted(p.name for p in (ds.dir / "_derived" / ns).glob("*.parquet"))


@pytest.fixture
def records_unchanged(ds_ids: tuple[Dataset, list[str]]) -> Iterator[None]:
    ds = ds_ids[0]
    before = (ds.records_path.read_bytes(), ds.records_path.stat().st_mtime_ns)
    yield
    assert (ds.records_path.read_bytes(), ds.records_path.stat().st_mtime_ns) == before


# -- 1. the seed README quickstart ----------------------------------------------------------------
def quickstart_inputs(folder: Path) -> tuple[Path, Path, Path, dict[str, list[float]], dict[str, float]]:
    """The project's own small copies of the demo files: sequences, X_value attachment, sfxi table."""
    folder.mkdir()
    seqs = write_csv(
        folder / "demo_sequences.csv",
        "sequence,some_other_value\n" + "".join(f"{s},{1 + i / 8}\n" for i, s in enumerate(SEQUENCES)),
    )
    x_values = {s: [-22.75 + 0.125 * (i + j) for j in range(16)] for i, s in enumerate(SEQUENCES)}
    attachment = write_csv(
        folder / "demo_attachment_one.csv",
        "sequence,X_value,some_other_value\n"
        + "".join(f'{s},"{json.dumps(x_values[s])}",{i}.5\n' for i, s in enumerate(SEQUENCES)),
    )
    intensity = {SEQUENCES[0]: 0.0, SEQUENCES[2]: 1.5, SEQUENCES[3]: -2.25, SEQUENCES[5]: 3.0}
    unknown = ["ACGTACGTACGTACGTAAAACCCC", "ttttggggccccaaaaACGTACGT"]
    sfxi_rows = [
        (f"ES{i}p", s, v) for i, (s, v) in enumerate([*intensity.items(), *((u, 9.0) for u in unknown)], start=1)
    ]
    sfxi = write_csv(
        folder / "demo_y_sfxi.csv",
        "genotype,sequence,r_logic,v00,v10,v01,v11,y00_star,intensity_log2_offset_delta,flat_logic\n"
        + "".join(f"{g},{s},7.87,0,0.2,1,0.89,0.57,{v},FALSE\n" for g, s, v in sfxi_rows),
    )
    return seqs, attachment, sfxi, x_values, intensity


def test_quickstart_runs_as_in_the_seed_readme(tmp_path: Path) -> None:
    root = tmp_path / "qs_root"
    seqs, attachment, sfxi, x_values, intensity = quickstart_inputs(tmp_path / "material")
    name = "densegen/quickstart_demo"
    usr(root, "namespace", "register", "quickstart", "--columns", QUICKSTART_COLUMNS)
    usr(root, "init", name, "--source", "readme quickstart")
    usr(root, "import", name, "--from", "csv", "--path", str(seqs), "--bio-type", "dna", "--alphabet", "dna_4")
    first = usr_json(
        root, "attach", name, "--path", str(attachment), "--namespace", "quickstart",
        "--key", "sequence", "--key-col", "sequence", "--columns", "X_value",
    )  # fmt: skip
    assert first["metrics"]["rows_written"] == 6
    second = usr_json(
        root, "attach", name, "--path", str(sfxi), "--namespace", "quickstart", "--key", "sequence",
        "--key-col", "sequence", "--columns", "intensity_log2_offset_delta", "--allow-missing",
    )  # fmt: skip
    assert second["metrics"]["rows_written"] == 4
    assert second["metrics"]["rows_missing"] == 2
    usr(root, "materialize", name, "--yes", "--snapshot-before")

    info = usr_json(root, "info", name)
    assert info["rows"] == 6
    assert info["columns"][:7] == ESSENTIAL
    assert info["columns"][7:] == ["quickstart__X_value", "quickstart__intensity_log2_offset_delta"]
    assert info["namespaces"] == ["quickstart"]
    head = usr_json(root, "head", name, "-n", "10")
    assert len(head) == 6
    by_sequence = {row["sequence"]: row for row in head}
    assert set(by_sequence) == set(SEQUENCES)
    for sequence, row in by_sequence.items():
        assert row["quickstart__X_value"] == x_values[sequence]
        assert row["quickstart__intensity_log2_offset_delta"] == intensity.get(sequence)
    # The values are in records.parquet itself, and a base copy was kept.
    stored = pq.read_table(root / name / "records.parquet").to_pylist()
    assert {r["sequence"]: r["quickstart__X_value"] for r in stored} == x_values
    assert sum(r["quickstart__intensity_log2_offset_delta"] is not None for r in stored) == 4
    assert list((root / name / "_snapshots").glob("records-*.parquet"))
    assert usr_json(root, "verify", name)["ok"] is True


# -- 2. attach rules ------------------------------------------------------------------------------
def test_attach_by_id_sets_values_for_those_records(ds_ids: tuple[Dataset, list[str]], tmp_path: Path) -> None:
    ds, ids = ds_ids
    path = write_csv(tmp_path / "a.csv", f"id,score,label\n{ids[0]},1.5,x\n{ids[3]},-2,y\n")
    receipt = ds.attach(path, namespace="mock")
    assert receipt.metrics == {"rows_incoming": 2, "rows_written": 2, "rows_missing": 0}
    view = rows_by_id(ds.view())
    assert (view[ids[0]]["mock__score"], view[ids[0]]["mock__label"]) == (1.5, "x")
    assert (view[ids[3]]["mock__score"], view[ids[3]]["mock__label"]) == (-2.0, "y")
    assert all(view[i]["mock__score"] is None for i in ids if i not in (ids[0], ids[3]))
    assert ds.verify().ok


@pytest.mark.parametrize("key", ["sequence", "sequence_norm"])
def test_attach_by_sequence_matches_exact_sequence_after_trimming(
    ds_ids: tuple[Dataset, list[str]], tmp_path: Path, key: str
) -> None:
    ds, ids = ds_ids
    path = write_csv(tmp_path / "a.csv", f"sequence,score\n  {SEQUENCES[1]} ,2.5\n{SEQUENCES[4]},4\n")
    ds.attach(path, namespace="mock", key=key)  # type: ignore[arg-type]
    view = rows_by_id(ds.view())
    assert view[ids[1]]["mock__score"] == 2.5
    assert view[ids[4]]["mock__score"] == 4.0
    # Sequence keys are case-sensitive: another case is an unknown key.
    other_case = write_csv(tmp_path / "b.csv", f"sequence,score\n{SEQUENCES[2].upper()},1\n")
    assert_api_rejects(
        ds,
        InvalidInput,
        lambda: ds.attach(other_case, namespace="mock", key=key),
        "not present",  # type: ignore[arg-type]
    )


def test_attach_by_sequence_ci_ignores_case(ds_ids: tuple[Dataset, list[str]], tmp_path: Path) -> None:
    ds, ids = ds_ids
    path = write_csv(tmp_path / "a.csv", f"seq_text,score\n{SEQUENCES[2].upper()},1\n{SEQUENCES[0].lower()},2\n")
    ds.attach(path, namespace="mock", key="sequence_ci", key_col="seq_text")
    view = rows_by_id(ds.view())
    assert (view[ids[2]]["mock__score"], view[ids[0]]["mock__score"]) == (1.0, 2.0)


def test_attach_sequence_ci_rejected_for_non_dna4_dataset(oroot: Path, tmp_path: Path) -> None:
    ds, _ = make_dataset(oroot, "demo/dna5", alphabet="dna_5")
    path = write_csv(tmp_path / "a.csv", f"sequence,score\n{SEQUENCES[0]},1\n")
    assert_api_rejects(
        ds, SchemaError, lambda: ds.attach(path, namespace="mock", key="sequence_ci"), "only valid for dna_4"
    )
    assert_cli_rejects(
        oroot,
        ds,
        ["attach", "demo/dna5", "--path", str(path), "--namespace", "mock", "--key", "sequence_ci"],
        "sequence_ci is only valid for dna_4 datasets",
    )


def test_attach_by_sequence_needs_unambiguous_base_keys(oroot: Path, tmp_path: Path) -> None:
    ds = Dataset.open(oroot, "demo/cases")
    ds.init()
    ds.add_sequences(["ACGTACGTAA", "acgtacgtaa"])
    path = write_csv(tmp_path / "a.csv", "sequence,score\nACGTACGTAA,1\n")
    ds.attach(path, namespace="mock", key="sequence")  # exact case: unambiguous
    assert_api_rejects(
        ds, SchemaError, lambda: ds.attach(path, namespace="mock", key="sequence_ci"), "duplicate base keys"
    )
    ds.add_sequences(["MKVLA"], bio_type="protein", alphabet="protein_20")
    assert_api_rejects(
        ds,
        SchemaError,
        lambda: ds.attach(path, namespace="mock", key="sequence", allow_overwrite=True),
        "single bio_type",
    )


def test_attach_reads_typed_parquet_input(ds_ids: tuple[Dataset, list[str]], tmp_path: Path) -> None:
    ds, ids = ds_ids
    path = tmp_path / "a.parquet"
    pq.write_table(
        pa.table({"sequence": [SEQUENCES[3]], "mock__vec": pa.array([[0.25, 4.0]], pa.list_(pa.float64()))}), path
    )
    ds.attach(path, namespace="mock", key="sequence")
    assert rows_by_id(ds.view())[ids[3]]["mock__vec"] == [0.25, 4.0]


def test_attach_columns_bare_and_prefixed_names(ds_ids: tuple[Dataset, list[str]], tmp_path: Path) -> None:
    ds, ids = ds_ids
    path = write_csv(tmp_path / "a.csv", f"id,score,mock__label,unregistered_extra\n{ids[0]},3,lab,zz\n")
    ds.attach(path, namespace="mock", columns=["score", "mock__label"])
    row = rows_by_id(ds.view())[ids[0]]
    assert (row["mock__score"], row["mock__label"]) == (3.0, "lab")
    assert "mock__unregistered_extra" not in ds.view().column_names
    # A prefixed request also finds a bare input column.
    other = write_csv(tmp_path / "b.csv", f"id,score\n{ids[1]},7\n")
    ds.attach(other, namespace="mock", columns=["mock__score"])
    assert rows_by_id(ds.view())[ids[1]]["mock__score"] == 7.0


def test_attach_list_column_given_as_json_text_is_parsed(ds_ids: tuple[Dataset, list[str]], tmp_path: Path) -> None:
    ds, ids = ds_ids
    path = write_csv(tmp_path / "a.csv", f'id,vec\n{ids[0]},"[1.5, -2, 3e2]"\n{ids[1]},[]\n{ids[2]},\n')
    ds.attach(path, namespace="mock")
    view = rows_by_id(ds.view())
    assert view[ids[0]]["mock__vec"] == [1.5, -2.0, 300.0]
    assert view[ids[1]]["mock__vec"] == []
    assert view[ids[2]]["mock__vec"] is None
    assert ds.schema()[-1].type == "list<float64>"
    no_json = write_csv(tmp_path / "b.csv", f'id,vec\n{ids[3]},"[1.0]"\n')
    assert_api_rejects(
        ds, SchemaError, lambda: ds.attach(no_json, namespace="mock", parse_json=False), "mock__vec", "JSON"
    )


def test_attach_allow_missing_counts_unknown_keys_in_the_event(
    ds_ids: tuple[Dataset, list[str]], tmp_path: Path
) -> None:
    ds, ids = ds_ids
    path = write_csv(tmp_path / "a.csv", f"id,score\n{ids[0]},1\nnot-an-id,2\nalso-missing,3\n")
    assert_api_rejects(ds, InvalidInput, lambda: ds.attach(path, namespace="mock"), "2 row(s)", "not-an-id")
    receipt = ds.attach(path, namespace="mock", allow_missing=True)
    assert receipt.metrics["rows_missing"] == 2
    assert receipt.rows_written == 1
    event = ds.log.events(n=1)[0]
    assert event.action == "attach"
    assert event.metrics["rows_missing"] == 2
    assert rows_by_id(ds.view())[ids[0]]["mock__score"] == 1.0


def test_attach_existing_columns_for_keys_without_values_is_not_an_overwrite(
    ds_ids: tuple[Dataset, list[str]], tmp_path: Path
) -> None:
    ds, ids = ds_ids
    ds.attach(write_csv(tmp_path / "a.csv", f"id,score,label\n{ids[0]},1,a\n"), namespace="mock")
    # Same columns, new ids: no flag needed.
    ds.attach(write_csv(tmp_path / "b.csv", f"id,score,label\n{ids[1]},2,b\n{ids[2]},3,\n"), namespace="mock")
    # ids[2] holds an explicit null label: writing it is not an overwrite either.
    ds.attach(write_csv(tmp_path / "c.csv", f"id,label\n{ids[2]},c\n"), namespace="mock")
    again = write_csv(tmp_path / "d.csv", f"id,score\n{ids[3]},4\n{ids[0]},10\n")
    assert_api_rejects(ds, NamespaceError, lambda: ds.attach(again, namespace="mock"), "mock__score", ids[0])
    ds.attach(again, namespace="mock", allow_overwrite=True)
    view = rows_by_id(ds.view())
    assert [view[i]["mock__score"] for i in ids[:4]] == [10.0, 2.0, 3.0, 4.0]
    # The partial overwrite left the other column alone.
    assert [view[i]["mock__label"] for i in ids[:4]] == ["a", "b", "c", None]


ATTACH_ERRORS: list[tuple[str, str, list[str], list[str]]] = [
    ("unregistered_namespace", "id,score\n{id0},1\n", ["--namespace", "nope"], ["'nope' is not registered"]),
    ("unregistered_column", "id,score,extra\n{id0},1,x\n", [], ["mock__extra", "not registered"]),
    ("non_namespaced_column", "id,__score\n{id0},1\n", [], ["__score", "does not belong"]),
    ("foreign_prefix", "id,other__score\n{id0},1\n", [], ["other__score", "does not belong to namespace 'mock'"]),
    ("essential_column", "id,sequence,score\n{id0},ACGT,1\n", [], ["essential column: sequence"]),
    ("essential_column_requested", "id,length\n{id0},3\n", ["--columns", "length"], ["essential column: length"]),
    ("duplicate_keys", "id,score\n{id0},1\n{id1},2\n{id0},3\n", [], ["Duplicate keys", "rows 1,3"]),
    ("unknown_keys", "id,score\n{id0},1\nno-such-id,2\n", [], ["not present", "no-such-id", "rows: 2"]),
    ("state_column", "id,usr_state__masked\n{id0},true\n", [], ["usr_state__masked", "`usr state set", "--masked"]),
    ("tombstone_column", "id,usr__deleted\n{id0},true\n", [], ["usr__deleted", "`usr delete`"]),
    ("reserved_usr", "id,deleted\n{id0},true\n", ["--namespace", "usr"], ["'usr' is reserved"]),
    ("reserved_usr_state", "id,split\n{id0},train\n", ["--namespace", "usr_state"], ["'usr_state' is reserved"]),
    ("overwrite", "id,label\n{id5},new\n", [], ["mock__label", "already hold values", "--allow-overwrite"]),
    ("bad_value", "id,score\n{id0},1.0\n{id1},abc\n", [], ["mock__score", "row 2", "abc", "float64"]),
    ("bad_json_list", 'id,vec\n{id0},"[1,2"\n', [], ["mock__vec", "row 1"]),
    ("missing_selected_column", "id,score\n{id0},1\n", ["--columns", "nothere"], ["'nothere' is not in the input"]),
    ("missing_key_column", "seq,score\nACGT,1\n", ["--key", "sequence"], ["Key column 'sequence'"]),
]


@pytest.mark.parametrize(("name", "text", "extra", "fragments"), ATTACH_ERRORS, ids=[c[0] for c in ATTACH_ERRORS])
def test_attach_rejections_print_one_error_and_append_nothing(
    oroot: Path, ds_ids: tuple[Dataset, list[str]], tmp_path: Path,
    name: str, text: str, extra: list[str], fragments: list[str],
) -> None:  # fmt: skip
    ds, ids = ds_ids
    ds.attach(write_csv(tmp_path / "pre.csv", f"id,label\n{ids[5]},old\n"), namespace="mock")
    path = write_csv(tmp_path / f"{name}.csv", text.format(**{f"id{i}": v for i, v in enumerate(ids)}))
    args = ["attach", ds.name, "--path", str(path)]
    if "--namespace" not in extra:
        args += ["--namespace", "mock"]
    assert_cli_rejects(oroot, ds, [*args, *extra], *fragments, hint=True)


def test_attach_accepts_the_originals_backend_option_for_a_parquet_file(
    oroot: Path, ds_ids: tuple[Dataset, list[str]], tmp_path: Path
) -> None:
    """The seed README's advice for large Parquet attachments (`--backend duckdb --no-parse-json`) runs as
    written and attaches what the default backend does; a backend the original never had is a usage error."""
    import pyarrow.parquet as pq

    ds, ids = ds_ids
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": ids[:2], "score": [0.25, 0.75], "vec": [[1.0], [2.0, 3.0]]}), path)
    args = ["attach", ds.name, "--path", str(path), "--namespace", "mock", "--key", "id", "--no-parse-json"]
    data = usr_json(oroot, *args, "--backend", "duckdb")
    assert (data["action"], data["metrics"]["rows_written"]) == ("attach", 2)
    view = rows_by_id(ds.view())
    assert [(view[i]["mock__score"], view[i]["mock__vec"]) for i in ids[:2]] == [(0.25, [1.0]), (0.75, [2.0, 3.0])]
    assert_cli_rejects(oroot, ds, [*args, "--backend", "spark"], "spark")


def test_attach_rejects_unsupported_file_type(oroot: Path, ds_ids: tuple[Dataset, list[str]], tmp_path: Path) -> None:
    ds, ids = ds_ids
    path = write_csv(tmp_path / "a.txt", f"id,score\n{ids[0]},1\n")
    assert_cli_rejects(
        oroot, ds, ["attach", ds.name, "--path", str(path), "--namespace", "mock"], "Unsupported", hint=True
    )


# -- 3. write_overlay ----------------------------------------------------------------------------
def test_write_overlay_accepts_an_arrow_table(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    table = pa.table(
        {
            "id": pa.array(ids[:2], pa.string()),
            "mock__score": pa.array([0.5, None], pa.float64()),
            "mock__vec": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float64())),
        }
    )
    receipt = ds.write_overlay("mock", table)
    assert receipt.rows_written == 2
    view = rows_by_id(ds.view())
    assert (view[ids[0]]["mock__score"], view[ids[0]]["mock__vec"]) == (0.5, [1.0, 2.0])
    assert (view[ids[1]]["mock__score"], view[ids[1]]["mock__vec"]) == (None, [3.0])
    assert ds.verify().ok


def test_write_overlay_accepts_a_dict_table_with_bare_names(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": [ids[4], ids[5]], "score": [4.0, 5.0], "label": ["d", "e"]})
    view = rows_by_id(ds.view())
    assert [(view[i]["mock__score"], view[i]["mock__label"]) for i in ids[4:]] == [(4.0, "d"), (5.0, "e")]
    # An explicit null (with --allow-overwrite) clears a value.
    ds.write_overlay("mock", {"id": [ids[4]], "score": pa.array([None], pa.float64())}, allow_overwrite=True)
    assert rows_by_id(ds.view())[ids[4]]["mock__score"] is None
    assert rows_by_id(ds.view())[ids[4]]["mock__label"] == "d"


def test_write_overlay_rejects_what_attach_rejects(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    assert_api_rejects(ds, NamespaceError, lambda: ds.write_overlay("usr", {"id": [ids[0]], "deleted": [True]}))
    assert_api_rejects(ds, NamespaceError, lambda: ds.write_overlay("nope", {"id": [ids[0]], "x": [1]}))
    assert_api_rejects(
        ds, SchemaError, lambda: ds.write_overlay("mock", {"id": [ids[0], ids[0]], "score": [1.0, 2.0]}), "Duplicate"
    )


# -- 4. tombstones and record state ---------------------------------------------------------------
@pytest.mark.usefixtures("records_unchanged")
def test_delete_restore_state_repeated_with_new_ids_all_work(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    seq = ds.info().head_seq
    for round_ in range(3):
        for i, rid in enumerate(ids):
            assert ds.delete([rid], reason=f"r{round_}").seq == seq + 1
            assert ds.set_state([rid], qc_status=("pass", "fail", "warn")[i % 3], split="train").seq == seq + 2
            assert ds.set_state([rid], masked=True).seq == seq + 3
            seq += 3
            assert rid not in ds.view().column("id").to_pylist()
        assert ds.view().num_rows == 0
        for rid in ids:
            assert ds.restore([rid]).seq == seq + 1
            assert ds.clear_state([rid]).seq == seq + 2
            seq += 2
        assert ds.view(columns=["id"]).column("id").to_pylist() == ids
    state = ds.get_state(ids)
    assert state.column("usr_state__masked").to_pylist() == [False] * 6
    assert state.column("usr_state__qc_status").to_pylist() == [None] * 6
    assert ds.verify().ok


@pytest.mark.usefixtures("records_unchanged")
def test_cli_delete_and_state_set_repeated_with_new_ids(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    for rid in ids[:4]:
        assert usr_json(oroot, "delete", ds.name, "--id", rid, "--reason", "bad")["metrics"]["rows_written"] == 1
        usr(oroot, "state", "set", ds.name, "--id", rid, "--qc-status", "fail", "--lineage", "a,b")
    id_file = oroot / "restore-ids.txt"
    id_file.write_text(f"{ids[0]}\n\n{ids[1]}\n")
    usr(oroot, "restore", ds.name, "--id-file", str(id_file))
    usr(oroot, "state", "clear", ds.name, "--id", ids[2])
    assert [r["id"] for r in usr_json(oroot, "head", ds.name, "-n", "10")] == [ids[0], ids[1], ids[4], ids[5]]
    got = usr_json(oroot, "state", "get", ds.name, "--id", f"{ids[3]},{ids[2]}")
    assert [r["id"] for r in got] == [ids[3], ids[2]]
    assert got[0]["usr_state__lineage"] == ["a", "b"] and got[0]["usr_state__qc_status"] == "fail"
    assert got[1]["usr_state__lineage"] is None and got[1]["usr_state__masked"] is False
    assert usr_json(oroot, "verify", ds.name)["ok"] is True


def test_deleted_rows_hidden_from_reads_unless_include_deleted(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.delete([ids[1], ids[3]], reason="contaminated")
    shown = ds.view().column("id").to_pylist()
    assert shown == [ids[0], ids[2], ids[4], ids[5]]
    assert ds.head(10).column("id").to_pylist() == shown
    assert not any(c.startswith("usr__") for c in ds.view().column_names)
    assert ds.info().rows == 4 and ds.info().deleted == 2
    everything = rows_by_id(ds.view(include_deleted=True))
    assert list(everything) == ids
    assert everything[ids[1]]["usr__deleted"] is True
    assert everything[ids[1]]["usr__deleted_reason"] == "contaminated"
    assert isinstance(everything[ids[1]]["usr__deleted_at"], datetime)
    assert everything[ids[0]]["usr__deleted"] is False and everything[ids[0]]["usr__deleted_at"] is None
    cli_rows = usr_json(oroot, "head", ds.name, "--include-deleted", "-n", "10")
    assert [r["id"] for r in cli_rows] == ids
    assert [r["usr__deleted"] for r in cli_rows] == [False, True, False, True, False, False]


def test_tombstone_columns_without_include_deleted_are_an_error(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    with pytest.raises(InvalidInput):
        ds.head(5, columns=["id", "usr__deleted"])  # no tombstones yet: still an error
    ds.delete([ids[0]])
    with pytest.raises(InvalidInput):
        ds.view(columns=["usr__deleted"])
    with pytest.raises(InvalidInput):
        ds.head(5, columns=["id", "usr__deleted_reason"])
    assert ds.head(5, columns=["id", "usr__deleted"], include_deleted=True).num_rows == 5
    assert_cli_rejects(oroot, ds, ["head", ds.name, "--columns", "id,usr__deleted"], "include-deleted")


def test_get_state_defaults_in_request_order(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    assert ds.get_state([ids[2], ids[0]]).to_pylist() == [
        {"id": i, "usr_state__masked": False, "usr_state__qc_status": None, "usr_state__split": None,
         "usr_state__supersedes": None, "usr_state__lineage": None}
        for i in (ids[2], ids[0])
    ]  # fmt: skip
    ds.set_state([ids[1]], masked=True, split="val", supersedes=ids[0], lineage=[ids[2], ids[3]])
    ds.set_state([ids[1]], qc_status="warn")
    ds.set_state([ids[4]], qc_status="pass")
    got = ds.get_state([ids[4], ids[5], ids[1]]).to_pylist()
    assert [r["id"] for r in got] == [ids[4], ids[5], ids[1]]
    assert got[0] == {
        "id": ids[4], "usr_state__masked": False, "usr_state__qc_status": "pass", "usr_state__split": None,
        "usr_state__supersedes": None, "usr_state__lineage": None,
    }  # fmt: skip
    assert got[1]["usr_state__masked"] is False and got[1]["usr_state__qc_status"] is None
    assert got[2] == {
        "id": ids[1], "usr_state__masked": True, "usr_state__qc_status": "warn", "usr_state__split": "val",
        "usr_state__supersedes": ids[0], "usr_state__lineage": [ids[2], ids[3]],
    }  # fmt: skip
    with pytest.raises(NotFound):
        ds.get_state(["nope"])


def test_get_state_allow_missing_skips_unknown_ids(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.set_state([ids[1]], qc_status="warn")
    got = ds.get_state(["nope", ids[1], "deadbeef", ids[0]], allow_missing=True)
    assert got.column("id").to_pylist() == [ids[1], ids[0]]
    assert got.column("usr_state__qc_status").to_pylist() == ["warn", None]
    assert ds.get_state(["nope"], allow_missing=True).num_rows == 0
    assert [r["id"] for r in usr_json(oroot, "state", "get", ds.name, "--id", f"nope,{ids[0]}", "--allow-missing")] == [
        ids[0]
    ]
    out = usr(oroot, "state", "get", ds.name, "--id", f"deadbeef,{ids[0]}", "--allow-missing", "--format", "plain")
    assert ids[0] in out.stdout and "deadbeef" not in out.stdout


@pytest.mark.parametrize(
    ("args", "fragment", "hint"),
    [
        (["state", "set", "{ds}", "--id", "{id0}", "--qc-status", "great"], "qc_status must be one of", True),
        (["state", "set", "{ds}", "--id", "{id0}", "--split", "dev"], "split must be one of", True),
        (["state", "set", "{ds}", "--id", "{id0}"], "at least one usr_state field", False),
        (["state", "set", "{ds}", "--id", "nope", "--masked"], "not found", True),
        (["delete", "{ds}", "--id", "{id0},nope"], "not found", True),
        (["delete", "{ds}", "--id", "{id0},{id0}"], "Duplicate ids", False),
        (["restore", "{ds}"], "at least one id", False),
    ],
    ids=["qc_status", "split", "no_field", "unknown_id_state", "unknown_id_delete", "duplicate_ids", "no_ids"],
)
def test_invalid_state_and_tombstone_requests_are_rejected(
    oroot: Path, ds_ids: tuple[Dataset, list[str]], args: list[str], fragment: str, hint: bool
) -> None:
    ds, ids = ds_ids
    values = {"ds": ds.name, "id0": ids[0]}
    assert_cli_rejects(oroot, ds, [a.format(**values) for a in args], fragment, hint=hint)


def test_delete_allow_missing_skips_unknown_ids_and_all_unknown_is_a_noop(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    receipt = ds.delete([ids[0], "ghost"], allow_missing=True)
    assert receipt.metrics == {"rows_written": 1, "rows_missing": 1}
    log = ds.log_path.read_bytes()
    nothing = ds.delete(["ghost"], allow_missing=True)
    assert nothing.noop and nothing.message
    assert ds.log_path.read_bytes() == log


# -- 5. overlay-compact ---------------------------------------------------------------------------
def test_overlay_compact_leaves_the_live_view_unchanged(
    oroot: Path, ds_ids: tuple[Dataset, list[str]], tmp_path: Path
) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:4], "score": [1.0, 2.0, 3.0, 4.0], "label": ["a", "b", "c", "d"]})
    ds.write_overlay("mock", {"id": ids[2:], "vec": [[1.0], None, [], [2.0, 3.0]]})
    null_score = pa.array([None, 9.0], pa.float64())
    ds.write_overlay("mock", {"id": [ids[1], ids[5]], "score": null_score}, allow_overwrite=True)
    ds.delete([ids[0], ids[3]], reason="x")
    ds.restore([ids[0]])
    ds.delete([ids[5]])
    ds.set_state([ids[1]], qc_status="pass")
    ds.set_state([ids[1], ids[2]], split="test")
    before_all = ds.view(include_deleted=True)
    before_live = ds.view()
    for ns in ("mock", "usr", "usr_state"):
        receipt = usr_json(oroot, "maintenance", "overlay-compact", ds.name, "--namespace", ns)
        assert receipt["action"] == "compact_overlay"
        assert len(part_files(ds, ns)) == 1
        assert ds.view(include_deleted=True).equals(before_all)
        assert ds.view().equals(before_live)
    assert rows_by_id(before_all)[ids[1]]["mock__score"] is None  # the explicit null survived compaction
    assert ds.verify().ok
    assert ds.get_state([ids[1]]).to_pylist()[0]["usr_state__split"] == "test"


def test_overlay_compact_of_a_single_part_is_a_noop(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:2], "score": [1.0, 2.0]})
    log = ds.log_path.read_bytes()
    receipt = ds.maintenance.compact_overlay("mock")
    assert receipt.noop is True
    assert "single overlay part" in receipt.message
    assert ds.log_path.read_bytes() == log
    result = usr(oroot, "maintenance", "overlay-compact", ds.name, "--namespace", "mock")
    assert "single overlay part" in result.stdout
    assert ds.log_path.read_bytes() == log


def test_overlay_compact_of_unknown_namespace_is_an_error(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:2], "score": [1.0, 2.0]})
    assert_api_rejects(ds, NotFound, lambda: ds.maintenance.compact_overlay("quickstart"), "quickstart")
    assert_cli_rejects(oroot, ds, ["maintenance", "overlay-compact", ds.name, "--namespace", "nope"], "'nope'")


# -- 6. materialize -------------------------------------------------------------------------------
def overlays_for_materialize(ds: Dataset, ids: list[str]) -> None:
    ds.write_overlay("mock", {"id": ids[:3], "score": [1.0, 2.0, 3.0]})
    ds.write_overlay("mock", {"id": ids[2:4], "label": ["c", "d"]})
    ds.write_overlay("quickstart", {"id": ids[4:], "intensity_log2_offset_delta": [0.5, -0.5]})


def test_materialize_appends_columns_after_base_and_keeps_overlays(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    overlays_for_materialize(ds, ids)
    view = ds.view()
    parts = {ns: part_files(ds, ns) for ns in ("mock", "quickstart")}
    receipt = ds.maintenance.materialize()
    assert receipt.action == "materialize"
    base = pq.read_table(ds.records_path)
    assert base.column_names == [*ESSENTIAL, "mock__score", "mock__label", "quickstart__intensity_log2_offset_delta"]
    assert rows_by_id(base)[ids[2]]["mock__label"] == "c"
    assert rows_by_id(base)[ids[5]]["quickstart__intensity_log2_offset_delta"] == -0.5
    assert {ns: part_files(ds, ns) for ns in parts} == parts
    assert ds.view().equals(view)
    assert ds.verify().ok


def test_materialize_orders_columns_by_first_write_across_parts_and_after_a_purge(
    ds_ids: tuple[Dataset, list[str]],
) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:2], "label": ["a", "b"]})
    ds.delete([ids[0]])
    ds.maintenance.materialize(drop_deleted=True)  # leaves a purge part among mock's parts
    ds.write_overlay(
        "mock", {"id": ids[1:4], "score": [1.0, 2.0, 3.0], "label": ["x", None, "z"]}, allow_overwrite=True
    )
    view = ds.view()
    ds.maintenance.materialize()
    base = pq.read_table(ds.records_path)
    assert base.column_names == [*ESSENTIAL, "mock__label", "mock__score"]
    assert ds.view().equals(view)
    assert rows_by_id(base)[ids[2]]["mock__label"] is None  # the explicit null was written
    assert ds.verify().ok


def test_materialize_drop_overlays_removes_the_parts(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    overlays_for_materialize(ds, ids)
    view = ds.view()
    ds.maintenance.materialize(namespaces=["mock"], drop_overlays=True)
    assert part_files(ds, "mock") == []
    assert len(part_files(ds, "quickstart")) == 1
    assert ds.view().equals(view)
    assert "quickstart__intensity_log2_offset_delta" not in pq.read_schema(ds.records_path).names
    assert ds.verify().ok


def test_materialize_archive_overlays_moves_the_parts(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    overlays_for_materialize(ds, ids)
    mock_parts = {name: (ds.dir / "_derived" / "mock" / name).read_bytes() for name in part_files(ds, "mock")}
    view = ds.view()
    ds.maintenance.materialize(archive_overlays=True)
    assert part_files(ds, "mock") == [] and part_files(ds, "quickstart") == []
    archived = ds.dir / "_derived" / "_archived" / "mock"
    assert {name: (archived / name).read_bytes() for name in mock_parts} == mock_parts
    assert (ds.dir / "_derived" / "_archived" / "quickstart").is_dir()
    assert ds.view().equals(view)
    assert ds.verify().ok


def test_materialize_drop_deleted_removes_tombstoned_rows(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.delete([ids[1], ids[4]])
    ds.delete([ids[2]])
    ds.restore([ids[2]])
    receipt = ds.maintenance.materialize(drop_deleted=True)
    assert receipt.metrics["rows_dropped"] == 2
    assert pq.read_table(ds.records_path).column("id").to_pylist() == [ids[0], ids[2], ids[3], ids[5]]
    assert ds.view(include_deleted=True).column("id").to_pylist() == [ids[0], ids[2], ids[3], ids[5]]
    assert ds.info().deleted == 0
    assert ds.verify().ok
    # The tombstoned rows are gone: dropping them again is nothing to do, not a rewrite of records.parquet.
    log = ds.log_path.read_bytes()
    again = ds.maintenance.materialize(drop_deleted=True)
    assert again.noop and again.message == "No overlays to materialize."
    assert ds.log_path.read_bytes() == log


def test_materialize_refusals_append_nothing(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    log = ds.log_path.read_bytes()
    nothing = ds.maintenance.materialize()
    assert nothing.noop and nothing.message == "No overlays to materialize."
    assert "No overlays to materialize." in usr(oroot, "materialize", ds.name, "--yes").stdout
    assert ds.log_path.read_bytes() == log
    overlays_for_materialize(ds, ids)
    assert_cli_rejects(
        oroot,
        ds,
        ["materialize", ds.name, "--yes", "--drop-overlays", "--archive-overlays"],
        "at most one of",
        hint=True,
    )
    assert_cli_rejects(oroot, ds, ["materialize", ds.name, "--yes", "--namespaces", "nope"], "nope")
    assert_cli_rejects(oroot, ds, ["materialize", ds.name, "--yes", "--namespaces", "usr"], "Tombstones")


def test_a_materialize_whose_encode_fails_appends_nothing_and_stops_reading(
    monkeypatch: pytest.MonkeyPatch, ds_ids: tuple[Dataset, list[str]]
) -> None:
    import threading

    from usr_es import codec, projections

    ds, ids = ds_ids
    monkeypatch.setattr(codec, "ROW_GROUP_ROWS", 2)  # several row groups: the reader runs ahead of the encode
    ds.add_sequences(["ACGTAA", "ACGTCC", "ACGTGG", "ACGTTT", "ACGTAC", "ACGTCA"])
    overlays_for_materialize(ds, ids)
    encode = projections.encode_batches

    def full_disk(tables: Any, *args: Any, **kwargs: Any) -> Any:
        def two_then_fail() -> Any:
            for k, table in enumerate(tables):
                if k == 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
                yield table

        return encode(two_then_fail(), *args, **kwargs)

    monkeypatch.setattr(projections, "encode_batches", full_disk)
    log, view = ds.log_path.read_bytes(), ds.view()
    with pytest.raises(CommitError, match="No space left"):
        ds.maintenance.materialize()
    assert not [t for t in threading.enumerate() if t.name == "usr-es-prefetch"]
    assert ds.log_path.read_bytes() == log and ds.view().equals(view)
    monkeypatch.undo()
    assert ds.maintenance.materialize().action == "materialize" and ds.verify().ok


def test_attach_after_materialize_and_drop_keeps_other_materialized_values(
    ds_ids: tuple[Dataset, list[str]],
) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids, "score": [float(i) for i in range(6)], "label": list("abcdef")})
    ds.maintenance.materialize(drop_overlays=True)
    assert part_files(ds, "mock") == []
    # Another column for some ids: the materialized score/label stay for every record.
    ds.write_overlay("mock", {"id": ids[:2], "vec": [[1.0], [2.0]]})
    view = rows_by_id(ds.view())
    assert [view[i]["mock__score"] for i in ids] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [view[i]["mock__label"] for i in ids] == list("abcdef")
    assert [view[i]["mock__vec"] for i in ids] == [[1.0], [2.0], None, None, None, None]
    # Materialized values count as values: replacing one needs --allow-overwrite, and only that id changes.
    assert_api_rejects(ds, NamespaceError, lambda: ds.write_overlay("mock", {"id": [ids[3]], "score": [30.0]}))
    ds.write_overlay("mock", {"id": [ids[3]], "score": [30.0]}, allow_overwrite=True)
    view = rows_by_id(ds.view())
    assert [view[i]["mock__score"] for i in ids] == [0.0, 1.0, 2.0, 30.0, 4.0, 5.0]
    assert ds.verify().ok
    ds.maintenance.rebuild()
    assert rows_by_id(ds.view()) == view


def test_a_small_attach_to_a_materialized_namespace_never_reads_its_columns_whole(
    ds_ids: tuple[Dataset, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overwrite check reads the materialized values of the attached ids only (through the id index),
    and an attach with --allow-overwrite reads none."""
    from usr_es import recovery
    from usr_es.projections import BaseBytes

    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:3], "score": [1.0, 2.0, 3.0]})
    ds.maintenance.materialize(drop_overlays=True)
    whole: list[list[str]] = []
    read_base, read = recovery.read_base, BaseBytes.read

    def base_read(directory: Path, mark: Any, *, columns: list[str] | None = None) -> Any:
        whole.append(list(columns) if columns is not None else ["<all>"])
        return read_base(directory, mark, columns=columns)

    def bytes_read(self: BaseBytes, columns: list[str] | None) -> pa.Table:
        whole.append(list(columns) if columns is not None else ["<all>"])
        return read(self, columns)

    monkeypatch.setattr(recovery, "read_base", base_read)
    monkeypatch.setattr(BaseBytes, "read", bytes_read)
    ds.write_overlay("mock", {"id": ids[1:3], "score": [20.0, 30.0]}, allow_overwrite=True)
    with pytest.raises(NamespaceError, match="mock__score"):  # ids[0] holds a materialized value
        ds.write_overlay("mock", {"id": ids[:1], "score": [10.0]})
    ds.write_overlay("mock", {"id": ids[3:5], "score": [4.0, 5.0]})  # no value yet: not an overwrite
    assert not any(name.startswith("mock__") or name == "<all>" for columns in whole for name in columns)
    monkeypatch.undo()
    got = ds.get(ids[:5], columns=["mock__score"]).column("mock__score").to_pylist()
    assert got == [1.0, 20.0, 30.0, 4.0, 5.0]
    assert ds.verify().ok


def test_state_folded_by_materialize_still_reads_after_dropping_overlays(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.set_state([ids[0]], qc_status="pass", masked=True)
    ds.set_state([ids[1]], split="val")
    ds.maintenance.materialize(drop_overlays=True)
    assert part_files(ds, "usr_state") == []
    got = ds.get_state([ids[1], ids[0], ids[2]]).to_pylist()
    assert [(r["usr_state__masked"], r["usr_state__qc_status"], r["usr_state__split"]) for r in got] == [
        (False, None, "val"),
        (True, "pass", None),
        (False, None, None),
    ]
    ds.clear_state([ids[0]])
    assert ds.get_state([ids[0]]).to_pylist()[0]["usr_state__qc_status"] is None
    assert ds.maintenance.validate(strict=True).ok
    assert ds.verify().ok


def test_reimport_after_drop_deleted_shows_the_record(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.delete([ids[1]])
    ds.maintenance.materialize(drop_deleted=True)
    ds.add_sequences([SEQUENCES[1]])
    assert ids[1] in ds.view().column("id").to_pylist()
    assert ds.verify().ok


def test_drop_deleted_purges_the_dropped_ids_overlay_history(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:2], "score": [1.0, 2.0]})
    ds.set_state([ids[1]], qc_status="fail")
    ds.delete([ids[1]])
    ds.maintenance.materialize(namespaces=[], drop_deleted=True)
    ds.add_sequences([SEQUENCES[1]])
    row = ds.view(columns=["id", "mock__score"]).to_pylist()
    assert {"id": ids[1], "mock__score": None} in row
    assert {"id": ids[0], "mock__score": 1.0} in row
    assert ds.get_state([ids[1]]).column("usr_state__qc_status").to_pylist() == [None]
    # A fresh write for the revived record is not an overwrite.
    ds.write_overlay("mock", {"id": [ids[1]], "score": [5.0]})
    assert ds.verify().ok
    assert ds.maintenance.validate(strict=True).ok
    ds.maintenance.compact_overlay("mock")
    before = ds.view(include_deleted=True)
    assert {"id": ids[1], "mock__score": 5.0} in ds.view(columns=["id", "mock__score"]).to_pylist()
    ds.maintenance.rebuild()
    assert ds.view(include_deleted=True).equals(before)
    assert ds.verify().ok


# -- 7. snapshots and checkpoints -----------------------------------------------------------------
def history_with_snapshot(ds: Dataset, ids: list[str]) -> int:
    """Overlay/tombstone/state history with a snapshot in the middle; returns the snapshot's seq."""
    ds.write_overlay("mock", {"id": ids[:3], "score": [1.0, 2.0, 3.0]})
    ds.delete([ids[0]])
    ds.set_state([ids[1]], qc_status="pass")
    snap = ds.maintenance.snapshot().seq
    ds.write_overlay("mock", {"id": ids[2:], "label": ["c", "d", "e", "f"]})
    ds.maintenance.compact_overlay("mock")
    ds.restore([ids[0]])
    ds.maintenance.materialize(namespaces=["mock"], archive_overlays=True)
    ds.write_overlay("quickstart", {"id": ids[:1], "intensity_log2_offset_delta": [1.0]})
    return snap


def test_snapshot_writes_checkpoint_and_base_copy(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:3], "score": [1.0, 2.0, 3.0]})
    receipt = usr_json(oroot, "snapshot", ds.name)
    assert receipt["action"] == "snapshot"
    snapshots = ds.dir / "_snapshots"
    copies = list(snapshots.glob("records-*.parquet"))
    assert len(copies) == 1
    assert copies[0].read_bytes() == ds.records_path.read_bytes()
    checkpoints = [p for p in snapshots.iterdir() if p.is_dir()]
    assert len(checkpoints) == 1 and str(receipt["seq"]) in checkpoints[0].name
    assert ds.verify().ok


def test_replay_after_checkpoint_starts_from_it_and_equals_full_replay(
    ds_ids: tuple[Dataset, list[str]], tmp_path: Path
) -> None:
    ds, ids = ds_ids
    snap = history_with_snapshot(ds, ids)
    head = ds.info().head_seq
    for until in (snap, snap + 2, head):
        with_cp = ds.log.replay(until, tmp_path / f"with-{until}")
        assert with_cp.from_checkpoint == snap and not with_cp.notes
    before = ds.log.replay(snap - 1, tmp_path / "before")
    assert before.from_checkpoint is None
    shutil.move(ds.dir / "_snapshots", tmp_path / "kept_snapshots")
    for until in (snap, snap + 2, head):
        without = ds.log.replay(until, tmp_path / f"without-{until}")
        assert without.from_checkpoint is None
        assert canonical_rows(tmp_path / f"with-{until}") == canonical_rows(tmp_path / f"without-{until}")
        assert projection_files(tmp_path / f"with-{until}") == projection_files(tmp_path / f"without-{until}")
        assert Dataset.at(tmp_path / f"with-{until}").verify().ok


def test_tampered_checkpoint_is_ignored_with_a_note(ds_ids: tuple[Dataset, list[str]], tmp_path: Path) -> None:
    ds, ids = ds_ids
    snap = history_with_snapshot(ds, ids)
    head = ds.info().head_seq
    clean = ds.log.replay(head, tmp_path / "clean")
    assert clean.from_checkpoint == snap
    (checkpoint,) = [p for p in (ds.dir / "_snapshots").iterdir() if p.is_dir()]
    stored = checkpoint / "records.parquet"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.unlink()  # the checkpoint hard-links the live file: replace it rather than edit it in place
    stored.write_bytes(bytes(data))
    tampered = ds.log.replay(head, tmp_path / "tampered")
    assert tampered.from_checkpoint is None
    assert any(checkpoint.name in note and "ignored" in note for note in tampered.notes), tampered.notes
    assert projection_files(tmp_path / "tampered") == projection_files(tmp_path / "clean")
    rebuilt = ds.maintenance.rebuild()
    assert any("ignored" in note for note in rebuilt.notes)
    assert ds.verify().ok


# -- 8. validate ----------------------------------------------------------------------------------
def test_validate_passes_and_survives_unrelated_registry_edits(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:3], "score": [1.0, 2.0, 3.0], "vec": [[1.0], None, []]})
    ds.set_state([ids[0]], qc_status="pass", split="train")
    ds.set_state([ids[1]], masked=True)
    ds.clear_state([ids[0]])  # state parts now merge with columns some ids never wrote
    ds.delete([ids[5]])
    ds.delete([ids[4]], reason="x")
    for mode in ("current", "frozen", "either"):
        assert ds.maintenance.validate(registry_mode=mode).ok, ds.maintenance.validate(registry_mode=mode).problems
    assert ds.maintenance.validate(strict=True).ok
    usr(oroot, "namespace", "register", "quickstart", "--columns", "quickstart__other:int64", "--overwrite")
    report = usr_json(oroot, "validate", ds.name)
    assert report["ok"] is True and report["problems"] == []


def test_validate_current_fails_when_the_attached_namespace_changes_type(
    oroot: Path, ds_ids: tuple[Dataset, list[str]]
) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:3], "score": [1.0, 2.0, 3.0]})
    usr(oroot, "namespace", "register", "mock", "--columns", MOCK_COLUMNS.replace("score:float64", "score:int64"),
        "--overwrite")  # fmt: skip
    current = ds.maintenance.validate()
    assert not current.ok
    assert any("mock" in problem for problem in current.problems)
    assert ds.maintenance.validate(registry_mode="frozen").ok
    either = ds.maintenance.validate(registry_mode="either")
    assert either.ok and either.passed_with == ["frozen"]
    proc = usr_process(oroot, "validate", ds.name)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert usr_process(oroot, "validate", ds.name, "--registry-mode", "either").returncode == 0


# -- 9. rebuild and verify ------------------------------------------------------------------------
def test_rebuild_after_deleting_projections_is_byte_identical(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    history_with_snapshot(ds, ids)
    ds.write_overlay("mock", {"id": ids[:2], "vec": [[1.0, 2.0], None]})
    ds.set_state([ids[3]], masked=True, lineage=["p"])
    ds.delete([ids[4]], reason="bye")
    before = projection_files(ds.dir)
    assert any(rel.startswith("_derived/_archived/") for rel in before)
    for checkpoints in (True, False):
        if not checkpoints:
            shutil.rmtree(ds.dir / "_snapshots")
        ds.records_path.unlink()
        shutil.rmtree(ds.dir / "_derived")
        ds.maintenance.rebuild()
        assert projection_files(ds.dir) == before
        assert ds.verify().ok


def test_verify_names_a_stray_file_in_derived(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:2], "score": [1.0, 2.0]})
    (part,) = (ds.dir / "_derived" / "mock").glob("*.parquet")
    stray = ds.dir / "_derived" / "mock" / "part-0000000099.parquet"
    shutil.copyfile(part, stray)
    report = ds.verify()
    assert not report.ok
    assert any("_derived/mock/part-0000000099.parquet" in problem for problem in report.problems)
    stray.unlink()
    assert ds.verify().ok


def test_temp_files_in_projection_folders_are_noted_by_verify_and_removed_by_the_next_write(
    ds_ids: tuple[Dataset, list[str]],
) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:2], "score": [1.0, 2.0]})
    (ds.dir / "_index").mkdir(exist_ok=True)
    temps = [ds.dir / "_derived" / "mock" / ".tmp-part-0000000042.parquet", ds.dir / "_index" / ".tmp-id.arrow"]
    for temp in temps:
        temp.write_bytes(b"half a file")
    report = ds.verify()
    assert report.ok
    assert sorted(report.unexpected) == sorted(str(t.relative_to(ds.dir)) for t in temps)
    assert sum("crashed writer" in note for note in report.notes) == 2
    ds.set_state(ids[:1], qc_status="pass")
    assert not any(t.exists() for t in temps)
    assert ds.verify().unexpected == []


def test_verify_names_an_unexpected_file_in_the_index_folder(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, _ = ds_ids
    (ds.dir / "_index").mkdir(exist_ok=True)
    (ds.dir / "_index" / "other.arrow").write_bytes(b"not ours")
    report = ds.verify()
    assert not report.ok and report.unexpected == ["_index/other.arrow"]
    assert "_index/other.arrow is not produced by the log" in report.problems[0]
    fixed = ds.verify(fix=True)
    assert fixed.ok and fixed.repaired == ["_index/other.arrow"]
    assert not (ds.dir / "_index" / "other.arrow").exists()


def test_archiving_after_a_drop_deleted_moves_each_namespaces_purge_part(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:3], "score": [1.0, 2.0, 3.0]})
    ds.set_state(ids[:2], qc_status="pass")
    ds.delete([ids[0]])
    ds.maintenance.materialize(namespaces=[], drop_deleted=True)  # one purge part in each of mock, usr, usr_state
    ds.maintenance.materialize(archive_overlays=True)  # archives mock's and usr_state's parts, purge parts included
    view = ds.view(columns=["id", "mock__score", "usr_state__qc_status"]).to_pylist()
    assert view[:2] == [
        {"id": ids[1], "mock__score": 2.0, "usr_state__qc_status": "pass"},
        {"id": ids[2], "mock__score": 3.0, "usr_state__qc_status": None},
    ]
    assert ds.verify().ok


def test_materialize_from_a_script_proceeds_without_yes_and_says_how_to_go_back(
    oroot: Path, ds_ids: tuple[Dataset, list[str]]
) -> None:
    ds, ids = ds_ids
    overlays_for_materialize(ds, ids)
    before = ds.info().head_seq
    proc = usr_process(oroot, "materialize", ds.name)  # stdin is not a terminal: no prompt, as in the original
    assert proc.returncode == 0, proc.stderr
    assert ds.info().head_seq == before + 1
    assert f"usr replay {ds.name} --until {before} --out DIR" in proc.stdout


# -- the registry governs writes (issue 12, seed README gaps 2 and 3) -----------------------------------
def test_materialize_refuses_an_unregistered_namespace_and_a_type_the_registry_no_longer_has(
    oroot: Path, ds_ids: tuple[Dataset, list[str]]
) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:2], "score": [1.0, 2.0]})
    usr(oroot, "namespace", "register", "mock", "--columns", MOCK_COLUMNS.replace("score:float64", "score:int64"),
        "--overwrite")  # fmt: skip
    log = ds.log_path.read_bytes()
    with pytest.raises(NamespaceError, match="holds float64 values but the registry says int64"):
        ds.maintenance.materialize()
    import yaml

    doc = yaml.safe_load((oroot / "registry.yaml").read_text())
    del doc["namespaces"]["mock"]  # the namespace was unregistered since
    (oroot / "registry.yaml").write_text(yaml.safe_dump(doc, sort_keys=True))
    with pytest.raises(NamespaceError, match="'mock' is not registered"):
        ds.maintenance.materialize()
    assert ds.log_path.read_bytes() == log


def test_after_a_type_change_schema_columns_and_head_agree(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:1], "label": ["a"]})
    widened = MOCK_COLUMNS.replace("score:float64", "score:int64")
    usr(oroot, "namespace", "register", "mock", "--columns", widened, "--overwrite")
    ds.write_overlay("mock", {"id": ids[:1], "score": [3]})
    usr(oroot, "namespace", "register", "mock", "--columns", MOCK_COLUMNS, "--overwrite")  # back to float64
    ds.write_overlay("mock", {"id": ids[1:2], "score": [2.5]})
    head = ds.head(6)
    types = {c.name: c.type for c in ds.schema()}
    assert types["mock__score"] == "float64" == format_type(head.schema.field("mock__score").type)
    assert {c.name: c.type for c in ds.columns()}["mock__score"] == "float64"
    assert head.column("mock__score").to_pylist()[:2] == [3.0, 2.5]
    ds.maintenance.materialize()  # the newest type is the registered one
    assert ds.head(2).column("mock__score").to_pylist() == [3.0, 2.5]


def test_a_type_change_the_old_values_cannot_take_is_a_clear_error_on_read(
    oroot: Path, ds_ids: tuple[Dataset, list[str]]
) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:1], "score": [1.5]})
    usr(oroot, "namespace", "register", "mock", "--columns", MOCK_COLUMNS.replace("score:float64", "score:int64"),
        "--overwrite")  # fmt: skip
    ds.write_overlay("mock", {"id": ids[1:2], "score": [7]})
    proc = usr_process(oroot, "head", ds.name)
    assert proc.returncode == 6, proc.stderr
    assert "cannot cast 'mock__score'" in proc.stderr and "register the old type back" in proc.stderr


def test_every_mutation_needs_the_roots_registry(
    oroot: Path, ds_ids: tuple[Dataset, list[str]], tmp_path: Path
) -> None:
    ds, ids = ds_ids
    copy = tmp_path / "outside" / "ds"
    ds.log.replay(ds.info().head_seq, copy)  # a dataset folder with no registry.yaml above it
    moved = Dataset.at(copy)
    log = moved.log_path.read_bytes()
    for write in (
        lambda: moved.add_sequences(["ACGTACGTAAAA"]),
        lambda: moved.write_overlay("mock", {"id": ids[:1], "score": [1.0]}),
        lambda: moved.maintenance.snapshot(),
        lambda: moved.delete(ids[:1]),
    ):
        with pytest.raises(UsrError, match="registry"):
            write()
    assert moved.log_path.read_bytes() == log
    assert moved.head(1).num_rows == 1  # reads need no registry


def test_validate_either_falls_back_to_the_frozen_registry_and_knows_the_namespace_modes(
    oroot: Path, ds_ids: tuple[Dataset, list[str]], tmp_path: Path
) -> None:
    ds, ids = ds_ids
    ds.write_overlay("mock", {"id": ids[:2], "score": [1.0, 2.0]})
    copy = tmp_path / "outside" / "ds"
    ds.log.replay(ds.info().head_seq, copy)
    either = Dataset.at(copy).maintenance.validate(registry_mode="either")
    assert either.ok and either.registries == ["frozen"] and either.passed_with == ["frozen"]
    for mode in ("namespace-current", "namespace-frozen", "namespace-either"):
        assert ds.maintenance.validate(registry_mode=mode).ok
    assert usr_process(oroot, "validate", ds.name, "--registry-mode", "namespace-either").returncode == 0


# -- overlay-remove ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["error", "delete", "archive"])
def test_overlay_remove_takes_a_namespace_out_of_the_live_view_and_keeps_it_in_earlier_states(
    oroot: Path, ds_ids: tuple[Dataset, list[str]], mode: str, tmp_path: Path
) -> None:
    ds, ids = ds_ids
    overlays_for_materialize(ds, ids)
    before = ds.info().head_seq
    receipt = ds.maintenance.remove_overlay("mock", mode)
    assert receipt.action == ("archive_overlay" if mode == "archive" else "remove_overlay")
    assert receipt.metrics == {"parts": 2}
    assert "mock" not in ds.info().namespaces and "quickstart" in ds.info().namespaces
    assert not [c for c in ds.view().column_names if c.startswith("mock__")]
    assert ds.verify().ok
    ds.log.replay(before, tmp_path / "before")
    assert rows_by_id(Dataset.at(tmp_path / "before").view())[ids[2]]["mock__label"] == "c"
    ds.write_overlay("mock", {"id": ids[:1], "mock__score": [7.0]})  # a new overlay starts from nothing
    assert rows_by_id(ds.view())[ids[2]]["mock__score"] is None
    files = projection_files(ds.dir)
    ds.maintenance.rebuild()
    assert projection_files(ds.dir) == files


def test_overlay_remove_keeps_values_a_materialize_wrote_into_the_base(ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    overlays_for_materialize(ds, ids)
    ds.maintenance.materialize(namespaces=["mock"])
    view = ds.view()
    ds.maintenance.remove_overlay("mock", "delete")
    assert ds.view().equals(view)


def test_overlay_remove_modes_on_a_missing_namespace_and_reserved_namespaces(
    oroot: Path, ds_ids: tuple[Dataset, list[str]]
) -> None:
    ds, ids = ds_ids
    log = ds.log_path.read_bytes()
    for mode in ("delete", "archive"):
        receipt = ds.maintenance.remove_overlay("mock", mode)
        assert receipt.noop and "nothing to" in receipt.message
    assert (
        "no-op"
        in usr(oroot, "maintenance", "overlay-remove", ds.name, "--namespace", "mock", "--mode", "delete").stdout
    )
    assert ds.log_path.read_bytes() == log
    assert_api_rejects(ds, NotFound, lambda: ds.maintenance.remove_overlay("mock"), "No overlay for namespace 'mock'")
    assert_cli_rejects(oroot, ds, ["maintenance", "overlay-remove", ds.name, "--namespace", "mock"], "'mock'")
    ds.set_state(ids[:1], masked=True)
    log = ds.log_path.read_bytes()
    for ns in ("usr_state", "usr"):
        args = ["maintenance", "overlay-remove", ds.name, "--namespace", ns, "--mode", "delete"]
        assert_cli_rejects(oroot, ds, args, "reserved", hint=True)
    assert_cli_rejects(
        oroot, ds, ["maintenance", "overlay-remove", ds.name, "--namespace", "x", "--mode", "shred"], "shred"
    )
    assert ds.log_path.read_bytes() == log


def test_overlay_remove_archive_says_where_the_parts_went(oroot: Path, ds_ids: tuple[Dataset, list[str]]) -> None:
    ds, ids = ds_ids
    overlays_for_materialize(ds, ids)
    out = usr(oroot, "maintenance", "overlay-remove", ds.name, "--namespace", "quickstart", "--mode", "archive").stdout
    assert out.startswith(
        f"Archived overlay quickstart (1 part(s)) to {ds.dir / '_derived' / '_archived' / 'quickstart'}"
    )
    data = usr_json(oroot, "maintenance", "overlay-remove", ds.name, "--namespace", "mock", "--mode", "delete")
    assert (data["action"], data["metrics"]) == ("remove_overlay", {"parts": 2})
