"""`usr maintenance merge`: another dataset's live records added to this one by the original's rules, as
events that name the source version they came from (docs/adr/0019)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from usr_es import Dataset, DuplicateIDError, InvalidInput, NamespaceError, NotFound, SchemaError
from usr_es.cli import app, main
from usr_es.merge import MergeSource, held_up_to_case, plan_merge
from usr_es.projectors import BASE_SCHEMA

runner = CliRunner()
SRC = ["ACGTACGTAC", "GGGCCCAATT", "TTTTAAAACC", "acgtTTTTGG"]
DEST = ["ACGTACGTAC", "CCCCGGGGAA", "ACGTTTTTGG"]


@pytest.fixture
def pair(root: Path) -> tuple[Dataset, Dataset]:
    """`lab/src` (four records, mock scores on three) and `lab/dest` (three records: one the same as a
    source record, one the same up to case)."""
    src = Dataset.open(root, "lab/src")
    src.init()
    src.add_sequences(SRC)
    ids = src.view(columns=["id"]).column("id").to_pylist()
    src.write_overlay("mock", {"id": ids[:3], "mock__score": [1.0, 2.0, 3.0]})
    dest = Dataset.open(root, "lab/dest")
    dest.init()
    dest.add_sequences(DEST)
    return src, dest


def _sequences(ds: Dataset) -> list[str]:
    return sorted(ds.view(columns=["sequence"]).column("sequence").to_pylist())


def test_records_held_up_to_case_are_left_out_and_the_rest_join(pair: tuple[Dataset, Dataset]) -> None:
    src, dest = pair
    result = dest.maintenance.merge(src, columns="require-same")
    assert (result.rows_src, result.casefold_skipped, result.duplicates_total, result.rows_added) == (4, 2, 0, 2)
    assert (result.dest_rows_before, result.dest_rows_after) == (3, 5)
    assert _sequences(dest) == sorted([*DEST, "GGGCCCAATT", "TTTTAAAACC"])
    assert "mock__score" not in [c.name for c in dest.columns()]  # a plain merge carries no overlay
    assert result.message.startswith("[MERGED] dest=lab/dest src=lab/src rows_src=4 ")
    assert "rows_added=2 dest_rows: 3 -> 5" in result.message
    assert dest.verify().ok


def test_the_merge_event_names_the_source_version_and_survives_later_source_changes(
    pair: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    src, dest = pair
    head = src.log.events(n=1)[0]
    result = dest.maintenance.merge(src, columns="require-same")
    event = dest.log.events(n=1)[0]
    assert event.action == "merge_datasets"
    assert (event.args["src"], event.args["src_seq"], event.args["src_hash"]) == (src.name, head.seq, head.hash)
    assert (result.src_seq, result.src_hash) == (head.seq, head.hash)
    before = dest.view()
    src.delete([src.view(columns=["id"]).column("id")[1].as_py()])
    src.add_sequences(["GATTACAGAT"])
    assert dest.view().equals(before)
    assert dest.maintenance.rebuild().seq == event.seq
    assert dest.view().equals(before)
    assert dest.verify().ok


def test_duplicate_ids_are_refused_by_default_and_the_log_is_unchanged(root: Path) -> None:
    src, dest = Dataset.open(root, "a"), Dataset.open(root, "b")
    for ds in (src, dest):
        ds.init()
        ds.add_sequences(["ACGTACGTAC", "GGGGCCCCAA"] if ds is src else ["ACGTACGTAC"])
    log = dest.log_path.read_bytes()
    with pytest.raises(DuplicateIDError, match="1 duplicate id"):
        dest.maintenance.merge(src, columns="require-same", avoid_casefold_dups=False)
    assert dest.log_path.read_bytes() == log
    skipped = dest.maintenance.merge(src, columns="require-same", avoid_casefold_dups=False, if_duplicate="skip")
    assert (skipped.duplicates_total, skipped.duplicates_skipped, skipped.rows_added) == (1, 1, 1)
    assert _sequences(dest) == ["ACGTACGTAC", "GGGGCCCCAA"]


def test_prefer_src_replaces_the_destination_row_with_the_source_one(root: Path) -> None:
    src, dest = Dataset.open(root, "a"), Dataset.open(root, "b")
    src.init()
    src.add_sequences(["ACGTACGTAC"], source="from-src")
    dest.init()
    dest.add_sequences(["ACGTACGTAC", "TTTTGGGGCC"], source="from-dest")
    rid = dest.view(columns=["id"]).column("id")[0].as_py()
    dest.write_overlay("mock", {"id": [rid], "mock__score": [9.0]})
    result = dest.maintenance.merge(src, columns="require-same", avoid_casefold_dups=False, if_duplicate="prefer-src")
    assert (result.duplicates_replaced, result.duplicates_skipped, result.rows_added) == (1, 0, 1)
    assert (result.dest_rows_before, result.dest_rows_after) == (2, 2)
    view = dest.view(columns=["id", "source", "mock__score"])
    by_id = {r["id"]: r for r in view.to_pylist()}
    assert by_id[rid]["source"] == "from-src"
    assert by_id[rid]["mock__score"] is None  # the replaced record's overlay values went with it
    assert [e.action for e in dest.log.events(n=2)] == ["merge_replace", "merge_datasets"]
    assert len({e.command_id for e in dest.log.events(n=2)}) == 1
    assert dest.verify().ok
    assert dest.get(rid) is not None


def test_union_columns_grow_the_base_and_require_same_names_the_difference(root: Path) -> None:
    src, dest = Dataset.open(root, "a"), Dataset.open(root, "b")
    src.init()
    src.add_sequences(["ACGTACGTAC", "GGGGCCCCAA"])
    ids = src.view(columns=["id"]).column("id").to_pylist()
    src.write_overlay("mock", {"id": ids, "mock__score": [1.5, 2.5]})
    src.maintenance.materialize()
    dest.init()
    dest.add_sequences(["TTTTGGGGCC"])
    log = dest.log_path.read_bytes()
    with pytest.raises(SchemaError, match="only in src: mock__score"):
        dest.maintenance.merge(src, columns="require-same")
    assert dest.log_path.read_bytes() == log
    result = dest.maintenance.merge(src, columns="union")
    assert result.columns_added == ["mock__score"]
    scores = dict(zip(*dest.view(columns=["sequence", "mock__score"]).to_pydict().values(), strict=True))
    assert scores == {"TTTTGGGGCC": None, "ACGTACGTAC": 1.5, "GGGGCCCCAA": 2.5}
    assert dest.verify().ok


def test_carried_namespace_values_follow_the_records_that_join(pair: tuple[Dataset, Dataset]) -> None:
    src, dest = pair
    result = dest.maintenance.merge(src, columns="require-same", carry_namespaces=["mock"])
    assert result.carried == {"mock": 2}
    assert result.message.endswith("carried(mock:2)")
    scores = dict(zip(*dest.view(columns=["sequence", "mock__score"]).to_pydict().values(), strict=True))
    assert scores == {**{s: None for s in DEST}, "GGGCCCAATT": 2.0, "TTTTAAAACC": 3.0}
    last = dest.log.events(n=1)[0]
    assert last.action == "attach" and f"at seq {result.src_seq}" in last.args["note"]
    with pytest.raises(NamespaceError, match="reserved"):
        dest.maintenance.merge(src, columns="require-same", carry_namespaces=["usr_state"])
    with pytest.raises(NotFound, match="no 'other' columns"):
        dest.maintenance.merge(src, columns="require-same", carry_namespaces=["other"])


def test_tombstoned_source_records_do_not_join(pair: tuple[Dataset, Dataset]) -> None:
    src, dest = pair
    gone = src.view(columns=["id", "sequence"]).filter(pa.compute.equal(pa.compute.field("sequence"), "GGGCCCAATT"))
    src.delete(gone.column("id").to_pylist())
    result = dest.maintenance.merge(src, columns="require-same")
    assert (result.rows_src, result.rows_src_deleted, result.rows_added) == (3, 1, 1)
    assert "GGGCCCAATT" not in _sequences(dest)


def test_a_dry_run_reports_what_the_merge_would_do_and_writes_nothing(pair: tuple[Dataset, Dataset]) -> None:
    src, dest = pair
    log = dest.log_path.read_bytes()
    dry = dest.maintenance.merge(src, columns="require-same", dry_run=True)
    assert dest.log_path.read_bytes() == log
    assert dry.message.startswith("[DRY-RUN]")
    done = dest.maintenance.merge(src, columns="require-same")
    same = ("rows_src", "casefold_skipped", "duplicates_total", "rows_added", "dest_rows_before", "dest_rows_after")
    assert [getattr(dry, f) for f in same] == [getattr(done, f) for f in same]


def test_a_merge_with_nothing_to_add_appends_nothing(pair: tuple[Dataset, Dataset]) -> None:
    src, dest = pair
    dest.maintenance.merge(src, columns="require-same")
    log = dest.log_path.read_bytes()
    again = dest.maintenance.merge(src, columns="require-same")
    assert again.receipt is not None and again.receipt.noop and again.rows_added == 0
    assert dest.log_path.read_bytes() == log


@pytest.mark.parametrize(
    ("if_duplicate", "avoid_casefold_dups"), [("skip", True), ("skip", False), ("prefer-dest", False)]
)
def test_a_merge_with_nothing_to_add_reports_the_figures_of_its_dry_run(
    pair: tuple[Dataset, Dataset], if_duplicate: str, avoid_casefold_dups: bool
) -> None:
    src, dest = pair
    options: dict[str, Any] = {"columns": "union", "avoid_casefold_dups": avoid_casefold_dups}
    dest.maintenance.merge(src, if_duplicate="skip", **options)
    dry = dest.maintenance.merge(src, if_duplicate=if_duplicate, dry_run=True, **options)
    done = dest.maintenance.merge(src, if_duplicate=if_duplicate, **options)
    assert done.receipt is not None and done.receipt.noop
    assert dry.columns_total > 0 and dry.casefold_skipped + dry.duplicates_total == 4
    assert msgspec.structs.replace(done, dry_run=True, receipt=None) == dry
    assert done.message.replace("[MERGED]", "[DRY-RUN]") == dry.message


def test_a_dataset_is_not_merged_into_itself(pair: tuple[Dataset, Dataset]) -> None:
    _, dest = pair
    with pytest.raises(InvalidInput, match="into itself"):
        dest.maintenance.merge(dest, columns="union")


def test_plan_casts_overlapping_columns_only_when_asked() -> None:
    dest = BASE_SCHEMA.append(pa.field("x__v", pa.float64()))
    rows = BASE_SCHEMA.append(pa.field("x__v", pa.int64())).empty_table()
    source = MergeSource(name="s", seq=1, hash="h", rows=rows)
    with pytest.raises(SchemaError, match="'x__v' is int64 in src but double in dest"):
        plan_merge(
            dest,
            lambda ids: pa.array([False] * len(ids)),
            None,
            source,
            columns="union",
            if_duplicate="error",
            coerce_overlap="none",
        )
    plan = plan_merge(
        dest,
        lambda ids: pa.array([False] * len(ids)),
        None,
        source,
        columns="union",
        if_duplicate="error",
        coerce_overlap="to-dest",
    )
    assert plan.coercions == ("x__v",) and plan.added.schema.field("x__v").type == pa.float64()


def test_cli_merge_prints_the_original_summary_and_json(
    pair: tuple[Dataset, Dataset], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as neither:
        main(["--root", str(root), "maintenance", "merge", "--dest", "lab/dest", "--src", "lab/src"])
    assert neither.value.code == 2
    assert "error: Choose exactly one of --require-same-columns or --union-columns." in capsys.readouterr().err
    dry = runner.invoke(
        app,
        [
            "--root",
            str(root),
            "maintenance",
            "merge",
            "--dest",
            "lab/dest",
            "--src",
            "lab/src",
            "--union-columns",
            "--dry-run",
        ],
    )
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("[DRY-RUN] dest=lab/dest src=lab/src rows_src=4 ")
    done = runner.invoke(
        app,
        [
            "--root", str(root), "maintenance", "merge", "--dest", "lab/dest", "--src", "lab/src",
            "--require-same-columns", "--carry-namespace", "mock", "--format", "json",
        ],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    parsed = json.loads(done.output)["data"]
    assert parsed["rows_added"] == 2 and parsed["carried"] == {"mock": 2} and parsed["receipt"]["seq"] > 0


def test_records_equal_up_to_case_are_found_among_shared_primers() -> None:
    primer = "ACGTACGTAC"
    dest = pa.table(
        {
            "bio_type": ["dna", "dna", "DNA", "rna"],
            "sequence": [f"{primer}AAA{primer}", f"{primer}CCC{primer}", "ggg", "ACGU"],
        }
    )
    rows = pa.table(
        {
            "bio_type": ["dna", "dna", "dna", "dna", "rna", "dna"],
            "sequence": [f"{primer}aaa{primer}", f"{primer}GGG{primer}", "GGG", "acgu", "acgu", f"{primer}CCC{primer}"],
        }
    )
    assert held_up_to_case(rows, dest).to_pylist() == [True, False, True, False, True, True]
    assert held_up_to_case(rows, dest.slice(0, 0)).to_pylist() == [False] * 6
