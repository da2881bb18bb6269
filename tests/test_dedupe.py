"""`usr maintenance dedupe`: which rows a key groups, which one stays, and what dropping them means when the
log is the truth (docs/adr/0018): gone from the live view with their overlay values, kept in every past state."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_overlay_commands import usr_process
from typer.testing import CliRunner

from usr_es import Dataset, IntegrityError, InvalidInput, NotFound, SchemaError, compute_id
from usr_es.cli import app
from usr_es.dedupe import plan_dedupe

runner = CliRunner()


def _base(sequences: list[str], alphabet: str = "dna_4") -> pa.Table:
    return pa.table(
        {
            "id": pa.array([compute_id("dna", s) for s in sequences], pa.string()),
            "sequence": pa.array(sequences, pa.string()),
            "alphabet": pa.array([alphabet] * len(sequences), pa.string()),
        }
    )


# -- the plan ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("keep", "dropped"), [("keep-first", ["ACGT"]), ("keep-last", ["acgt"])])
def test_sequence_ci_groups_sequences_equal_up_to_case_and_keeps_one_in_file_order(
    keep: str, dropped: list[str]
) -> None:
    plan = plan_dedupe(_base(["acgt", "ACGT", "TGCA"]), "sequence_ci", keep)
    assert (plan.rows_total, plan.groups, plan.rows_dropped) == (3, 1, 1)
    assert plan.dropped is not None and plan.dropped.to_pylist() == [compute_id("dna", s) for s in dropped]


def test_a_case_preserving_key_finds_no_duplicates_among_case_variants() -> None:
    plan = plan_dedupe(_base(["acgt", "ACGT"]), "sequence", "keep-first")
    assert plan.groups == 0 and plan.rows_dropped == 0


def test_sequence_ci_is_refused_outside_dna_4_and_unknown_choices_are_named() -> None:
    with pytest.raises(SchemaError, match="only valid for dna_4"):
        plan_dedupe(_base(["MKV", "mkv"], alphabet="protein_20"), "sequence_ci", "keep-first")
    with pytest.raises(InvalidInput, match="Unknown dedupe key 'name'"):
        plan_dedupe(_base(["ACGT"]), "name", "keep-first")
    with pytest.raises(InvalidInput, match="Unknown --keep 'keep-middle'"):
        plan_dedupe(_base(["ACGT"]), "sequence", "keep-middle")


def test_rows_sharing_an_id_cannot_be_deduplicated_by_id() -> None:
    table = _base(["ACGT", "ACGT"])
    assert plan_dedupe(table, "id", "keep-first", with_ids=False).groups == 1  # counted for the dry run
    with pytest.raises(IntegrityError, match="dropped by id"):
        plan_dedupe(table, "id", "keep-first")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text("acgtACGT", min_size=1, max_size=4), min_size=0, max_size=30),
    st.sampled_from(["keep-first", "keep-last"]),
    st.sampled_from(["sequence", "sequence_ci"]),
)
def test_the_plan_drops_what_a_simple_model_drops(sequences: list[str], keep: str, key: str) -> None:
    unique = list(dict.fromkeys(sequences))  # a base holds each (case-sensitive) sequence once
    plan = plan_dedupe(_base(unique), key, keep)
    groups: dict[str, list[str]] = {}
    for s in unique:
        groups.setdefault(s.upper() if key == "sequence_ci" else s, []).append(s)
    kept = {(g[0] if keep == "keep-first" else g[-1]) for g in groups.values()}
    expected = [compute_id("dna", s) for s in unique if s not in kept]
    assert plan.groups == sum(1 for g in groups.values() if len(g) > 1)
    assert plan.rows_dropped == len(expected)
    assert sorted((plan.dropped or pa.array([], pa.string())).to_pylist()) == sorted(expected)


# -- the command -----------------------------------------------------------------------------------
SEQUENCES = ["ACGTAC", "GGTTAA", "acgtac", "CCCCGG", "AcGtAc"]
IDS = [compute_id("dna", s) for s in SEQUENCES]


@pytest.fixture
def five(dataset: Dataset) -> Dataset:
    """Five rows, three of them one sequence up to case, with scores, a state and a tombstone."""
    dataset.add_sequences(SEQUENCES, source="seed")
    dataset.write_overlay("mock", {"id": [IDS[0], IDS[2], IDS[4]], "mock__score": [1.0, 2.0, 3.0]})
    dataset.set_state([IDS[0]], qc_status="pass")
    dataset.delete([IDS[3]], reason="not a duplicate")
    return dataset


def test_a_dry_run_counts_and_writes_nothing(five: Dataset) -> None:
    log = five.log_path.read_bytes()
    result = five.maintenance.dedupe("sequence_ci", dry_run=True)
    assert (result.dry_run, result.rows_total, result.groups, result.rows_dropped) == (True, 5, 1, 2)
    assert result.message == "Found 1 duplicate group(s); would drop 2 row(s)."
    assert result.receipt is None and five.log_path.read_bytes() == log


def test_dropped_rows_leave_the_live_view_with_their_values_and_stay_in_earlier_states(
    five: Dataset, tmp_path: Path
) -> None:
    before = five.info().head_seq
    result = five.maintenance.dedupe("sequence_ci", "keep-last")
    assert result.receipt is not None and result.receipt.action == "dedupe"
    assert (result.groups, result.rows_dropped) == (1, 2)
    view = five.view(include_deleted=True)
    assert view.column("id").to_pylist() == [IDS[1], IDS[3], IDS[4]]
    assert view.column("mock__score").to_pylist() == [None, None, 3.0]
    assert five.view().column("id").to_pylist() == [IDS[1], IDS[4]]  # the tombstone still hides CCCCGG
    five.log.replay(before, tmp_path / "before")
    past = Dataset.at(tmp_path / "before")
    assert past.view(include_deleted=True).column("id").to_pylist() == IDS
    assert five.verify().ok
    with pytest.raises(NotFound):
        five.restore([IDS[0]])
    # A dropped sequence imported again is a new record: no old score, state or tombstone.
    five.add_sequences([SEQUENCES[0]])
    again = five.get(IDS[0]).to_pylist()[0]
    assert again["mock__score"] is None and again.get("usr_state__qc_status") is None
    files = {p: p.read_bytes() for p in five.dir.rglob("*.parquet")}
    five.maintenance.rebuild()
    assert {p: p.read_bytes() for p in files} == files
    assert pq.read_metadata(five.records_path).num_rows == 4


def test_nothing_to_drop_is_a_no_op(five: Dataset) -> None:
    log = five.log_path.read_bytes()
    result = five.maintenance.dedupe("sequence")
    assert result.receipt is not None and result.receipt.noop
    assert (result.rows_total, result.groups, result.rows_dropped) == (5, 0, 0)  # the tombstoned row counts
    assert result.message == "OK: no duplicate keys found." and five.log_path.read_bytes() == log


def test_the_cli_reports_first_and_drops_only_when_told(root: Path, five: Dataset) -> None:
    name = five.name
    log = five.log_path.read_bytes()
    preview = runner.invoke(
        app, ["--root", str(root), "maintenance", "dedupe", name, "--key", "sequence_ci", "--dry-run"]
    )
    assert preview.exit_code == 0 and preview.stdout.strip() == "Found 1 duplicate group(s); would drop 2 row(s)."
    refused = usr_process(root, "maintenance", "dedupe", name, "--key", "sequence_ci")
    assert refused.returncode not in (0, 1) and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: Found 1 duplicate group(s); would drop 2 row(s).")
    assert "hint: Pass --yes" in refused.stderr and five.log_path.read_bytes() == log
    done = runner.invoke(
        app, ["--root", str(root), "maintenance", "dedupe", name, "--key", "sequence_ci", "--yes", "--format", "json"]
    )
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)["data"]
    assert (data["groups"], data["rows_dropped"], data["receipt"]["action"]) == (1, 2, "dedupe")
    again = runner.invoke(app, ["--root", str(root), "maintenance", "dedupe", name, "--key", "sequence_ci"])
    assert again.exit_code == 0 and again.stdout.strip() == "OK: no duplicate keys found."
