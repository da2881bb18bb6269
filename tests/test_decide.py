"""The pure decider: import validation and duplicate handling."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import usr_es.decide as decide_module
from usr_es.alphabet import ALPHABETS
from usr_es.commands import ImportSequences, InitDataset
from usr_es.decide import DatasetState, Decision, Rows, decide
from usr_es.errors import (
    AlphabetError,
    DatasetExists,
    DuplicateIDError,
    InvalidInput,
    NotFound,
    SchemaError,
)
from usr_es.events import DatasetInitialized, SequencesImported

NOW = "2024-05-01T12:00:00.000000Z"
READY = DatasetState(name="demo/ds", initialized=True, seq=1)


def sha1_id(bio_type: str, sequence: str) -> str:
    return hashlib.sha1(f"{bio_type}|{sequence.strip()}".encode()).hexdigest()


def import_rows(
    rows: pa.Table | dict[str, list[Any]] | list[str],
    *,
    state: DatasetState = READY,
    **options: Any,
) -> Decision:
    if isinstance(rows, list):
        rows = {"sequence": rows}
    table = rows if isinstance(rows, pa.Table) else pa.table(rows)
    options.setdefault("fmt", "rows")
    return decide(state, ImportSequences(**options), now=NOW, rows=table)


def payload_column(decision: Decision, name: str) -> list[Any]:
    assert decision.only.payload is not None
    return decision.only.payload.column(name).to_pylist()


def test_decide_init_creates_dataset_initialized() -> None:
    decision = decide(DatasetState(name="demo/ds"), InitDataset(source="lab", notes="n"), now=NOW)
    assert decision.only.event == DatasetInitialized(name="demo/ds", created_at=NOW, source="lab", notes="n")
    assert decision.only.action == "init"
    assert decision.only.payload is None


def test_decide_init_twice_is_rejected() -> None:
    with pytest.raises(DatasetExists):
        decide(READY, InitDataset(), now=NOW)


def test_decide_import_before_init_is_rejected() -> None:
    with pytest.raises(NotFound):
        import_rows(["ACGT"], state=DatasetState(name="demo/ds"))


def test_decide_import_without_rows_is_rejected() -> None:
    with pytest.raises(InvalidInput):
        decide(READY, ImportSequences(fmt="rows"), now=NOW, rows=None)


def test_decide_import_requires_sequence_column() -> None:
    with pytest.raises(SchemaError, match="sequence"):
        import_rows({"seq": ["ACGT"]})


def test_decide_import_rejects_empty_input() -> None:
    with pytest.raises(SchemaError):
        import_rows(pa.table({"sequence": pa.array([], pa.string())}))


def test_decide_import_names_empty_and_blank_rows_one_based() -> None:
    with pytest.raises(SchemaError) as info:
        import_rows(["ACGT", "", "  \t", "GG", None])
    assert "rows: 2, 3, 5" in str(info.value)


@pytest.mark.parametrize("bio_type", ["DNA", "Dna", "peptide", ""])
def test_decide_import_rejects_unknown_bio_type(bio_type: str) -> None:
    with pytest.raises(SchemaError, match="bio_type"):
        import_rows(["ACGT"], bio_type=bio_type)


@pytest.mark.parametrize(
    ("bio_type", "alphabet"),
    [("dna", "protein_20"), ("dna", "rna_4"), ("rna", "dna_4"), ("protein", "dna_5"), ("dna", "DNA_4"), ("dna", "x")],
)
def test_decide_import_rejects_alphabet_not_valid_for_bio_type(bio_type: str, alphabet: str) -> None:
    with pytest.raises(AlphabetError, match="alphabet"):
        import_rows(["ACGT"], bio_type=bio_type, alphabet=alphabet)


def test_decide_import_rejects_characters_outside_alphabet() -> None:
    with pytest.raises(AlphabetError) as info:
        import_rows(["ACGT", "NNNN", "AC GT", "AC-GT"], alphabet="dna_4")
    assert "rows: 2, 3, 4" in str(info.value)


def test_decide_import_accepts_n_in_dna_5() -> None:
    decision = import_rows(["NNNN", "acgtn"], alphabet="dna_5")
    assert payload_column(decision, "sequence") == ["NNNN", "acgtn"]
    assert payload_column(decision, "alphabet") == ["dna_5", "dna_5"]


@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
def test_decide_import_accepts_every_alphabet_in_either_case(alphabet: str) -> None:
    bio_type, letters = ALPHABETS[alphabet]
    sequences = [letters, letters.lower(), letters[::2] + letters.lower()[1::2]]
    decision = import_rows(sequences, bio_type=bio_type, alphabet=alphabet)
    assert payload_column(decision, "sequence") == sequences
    assert payload_column(decision, "id") == [sha1_id(bio_type, s) for s in sequences]
    assert payload_column(decision, "bio_type") == [bio_type] * 3


def test_decide_import_trims_sequences_and_keeps_case() -> None:
    decision = import_rows(["  acGT\n", "\tTTaa "])
    assert payload_column(decision, "sequence") == ["acGT", "TTaa"]
    assert payload_column(decision, "id") == [sha1_id("dna", "acGT"), sha1_id("dna", "TTaa")]


def test_decide_takes_handed_over_rows_and_decides_as_for_a_table() -> None:
    handed = Rows(pa.table({"sequence": ["ACGT", "TTAA"]}))
    decision = decide(READY, ImportSequences(fmt="rows"), now=NOW, rows=handed)
    assert payload_column(decision, "sequence") == ["ACGT", "TTAA"]
    with pytest.raises(RuntimeError, match="already taken"):
        handed.take()  # the decision held the only reference


def test_decide_import_rejects_duplicates_inside_input_listing_groups() -> None:
    with pytest.raises(DuplicateIDError) as info:
        import_rows(["ACGT", "GGGG", "ACGT", " GGGG ", "TTTT", "ACGT"])
    groups = info.value.groups
    assert len(groups) == 2
    assert any("rows 1,3,6" in g and sha1_id("dna", "ACGT")[:12] in g for g in groups)
    assert any("rows 2,4" in g for g in groups)


def test_decide_import_case_variants_are_not_duplicates() -> None:
    decision = import_rows(["ACGT", "acgt"])
    assert decision.only.metrics == {"rows_written": 2, "rows_skipped": 0}


def test_decide_import_skip_keeps_first_of_each_duplicate_group() -> None:
    decision = import_rows(["ACGT", "GGGG", "ACGT", "TTTT", "GGGG"], on_conflict="skip")
    assert payload_column(decision, "sequence") == ["ACGT", "GGGG", "TTTT"]
    assert decision.only.metrics == {"rows_written": 3, "rows_skipped": 2}
    assert isinstance(decision.only.event, SequencesImported)
    assert (decision.only.event.rows, decision.only.event.skipped) == (3, 2)


def test_decide_import_rejects_ids_already_in_dataset() -> None:
    state = DatasetState(name="demo/ds", initialized=True, seq=2, ids=pa.array([sha1_id("dna", "GGGG")]))
    with pytest.raises(DuplicateIDError) as info:
        import_rows(["ACGT", "GGGG"], state=state)
    assert "rows: 2" in str(info.value)
    assert info.value.groups == [sha1_id("dna", "GGGG")]


def test_decide_import_skip_drops_ids_already_in_dataset() -> None:
    known = pa.chunked_array([[sha1_id("dna", "GGGG")], [sha1_id("dna", "TTTT")]])
    state = DatasetState(name="demo/ds", initialized=True, seq=2, ids=known)
    decision = import_rows(["ACGT", "GGGG", "ACGT", "CCCC", "TTTT"], state=state, on_conflict="skip")
    assert payload_column(decision, "sequence") == ["ACGT", "CCCC"]
    assert decision.only.metrics == {"rows_written": 2, "rows_skipped": 3}


def test_decide_import_skip_of_only_known_ids_has_no_payload() -> None:
    state = DatasetState(name="demo/ds", initialized=True, seq=2, ids=pa.array([sha1_id("dna", "ACGT")]))
    decision = import_rows(["ACGT"], state=state, on_conflict="skip")
    assert decision.only.payload is None
    assert decision.only.metrics == {"rows_written": 0, "rows_skipped": 1}


def test_decide_import_uses_bio_type_and_alphabet_columns() -> None:
    decision = import_rows(
        {
            "sequence": ["ACGU", "MKV", "ACGT"],
            "bio_type": ["rna", "protein", "dna"],
            "alphabet": ["rna_4", "protein_20", "dna_4"],
        }
    )
    assert payload_column(decision, "bio_type") == ["rna", "protein", "dna"]
    assert payload_column(decision, "alphabet") == ["rna_4", "protein_20", "dna_4"]
    assert payload_column(decision, "id") == [sha1_id("rna", "ACGU"), sha1_id("protein", "MKV"), sha1_id("dna", "ACGT")]


@pytest.mark.parametrize("column", ["bio_type", "alphabet"])
@pytest.mark.parametrize("blank", [None, "", "  "])
def test_decide_import_label_columns_must_be_filled_on_every_row(column: str, blank: str | None) -> None:
    values: dict[str, list[Any]] = {"bio_type": ["dna", "dna", "dna"], "alphabet": ["dna_4", "dna_4", "dna_4"]}
    values[column][1] = blank
    rows = pa.table({"sequence": ["ACGT", "GGGG", "TTTT"], column: pa.array(values[column], pa.string())})
    with pytest.raises(SchemaError, match=column) as info:
        import_rows(rows)
    assert "rows: 2" in str(info.value)


def test_decide_import_rna_with_rna_4() -> None:
    decision = import_rows(["ACGU", "acgu"], bio_type="rna", alphabet="rna_4")
    assert payload_column(decision, "id") == [sha1_id("rna", "ACGU"), sha1_id("rna", "acgu")]
    with pytest.raises(AlphabetError):
        import_rows(["ACGT"], bio_type="rna", alphabet="rna_4")


def test_decide_import_protein() -> None:
    decision = import_rows(["MKVLAAGIW", "mkvx"], bio_type="protein", alphabet="protein_21")
    assert payload_column(decision, "bio_type") == ["protein", "protein"]
    with pytest.raises(AlphabetError):
        import_rows(["MKVX"], bio_type="protein", alphabet="protein_20")


def test_decide_import_event_carries_source_and_time() -> None:
    decision = import_rows(["ACGT"], path="/in/a.csv", fmt="csv")
    assert decision.only.event == SequencesImported(rows=1, skipped=0, source="/in/a.csv", created_at=NOW)
    decision = import_rows(["ACGT"], path="/in/a.csv", fmt="csv", source="lab")
    assert isinstance(decision.only.event, SequencesImported) and decision.only.event.source == "lab"
    assert decision.only.action == "import_rows"


# -- imports decided a batch at a time (docs/adr/0014) --------------------------------------------
_FEW = st.sampled_from(["ACGT", "acgt", "GGCC", "TTAA", "CAGT", "AAAA", "CCCC"])


@settings(max_examples=60, deadline=None)
@given(st.lists(_FEW, min_size=1, max_size=14), st.integers(1, 5), st.sampled_from(["skip", "error"]))
def test_an_import_decided_in_batches_matches_a_model_of_the_whole_input(
    sequences: list[str], batch: int, on_conflict: str
) -> None:
    """Whatever the batch size, skip keeps the first row of each sequence in input order, and error refuses
    an input that repeats a sequence, naming rows that really hold the same one (counted over the input)."""
    ids = [sha1_id("dna", s) for s in sequences]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decide_module, "IMPORT_BATCH_ROWS", batch)
        if on_conflict == "error" and len(set(ids)) < len(ids):
            with pytest.raises(DuplicateIDError) as caught:
                import_rows(sequences, on_conflict="error")
            assert caught.value.groups
            for group in caught.value.groups:
                rows = [int(r) for r in group.split(" rows ")[1].split(" ")[0].split(",")]
                assert len(rows) > 1 and len({ids[r - 1] for r in rows}) == 1, group
            return
        decision = import_rows(sequences, on_conflict=on_conflict)
    first = list(dict.fromkeys(ids))
    assert payload_column(decision, "id") == first
    assert decision.only.event.rows == len(first)
    assert decision.only.event.skipped == len(sequences) - len(first)


def test_an_invalid_row_in_a_later_batch_is_named_by_its_row_in_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decide_module, "IMPORT_BATCH_ROWS", 3)
    with pytest.raises(AlphabetError, match=r"rows: 8\)"):
        import_rows(["ACGT", "GGCC", "TTAA", "CAGT", "AAAA", "CCCC", "GATC", "ACXT"])
    with pytest.raises(SchemaError, match=r"rows: 5, 6\)"):
        import_rows(["ACGT", "GGCC", "TTAA", "CAGT", " ", ""])


def test_a_sequence_already_in_the_dataset_is_named_by_its_row_in_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decide_module, "IMPORT_BATCH_ROWS", 2)
    state = DatasetState(name="demo/ds", initialized=True, seq=2, ids=pa.array([sha1_id("dna", "TTAA")]))
    with pytest.raises(DuplicateIDError, match=r"rows: 3;"):
        import_rows(["ACGT", "GGCC", "TTAA"], state=state)
    decision = import_rows(["ACGT", "GGCC", "TTAA", "ACGT"], state=state, on_conflict="skip")
    assert payload_column(decision, "sequence") == ["ACGT", "GGCC"]


# -- an input's own id column (as in USR: every row's id must be its computed one) ------------------------
_ID_MISMATCH = r"^'id' mismatch for {n} row\(s\); ids must equal sha1\(bio_type\|sequence_norm\)\.$"


def test_decide_import_accepts_an_id_column_holding_the_computed_ids() -> None:
    sequences = ["ACGT", "  ggcc ", "TTAA"]
    given = import_rows({"sequence": sequences, "id": [sha1_id("dna", s) for s in sequences]})
    plain = import_rows(sequences)
    assert given.only.payload == plain.only.payload and given.only.event == plain.only.event


@pytest.mark.parametrize(
    ("sequence", "supplied"),
    [
        ("ACGT", "not-the-sha1"),
        ("ACGT", sha1_id("dna", "acgt")),  # ids are case-sensitive: another record's id
        ("ACGT", sha1_id("dna", "ACGT").upper()),  # compared as given
        ("ACGT", sha1_id("dna", "ACGT") + " "),
        ("ACGT", sha1_id("rna", "ACGT")),
    ],
)
def test_decide_import_refuses_a_supplied_id_that_is_not_the_computed_one(sequence: str, supplied: str) -> None:
    with pytest.raises(SchemaError, match=_ID_MISMATCH.format(n=1)) as caught:
        import_rows({"sequence": ["GGCC", sequence], "id": [sha1_id("dna", "GGCC"), supplied]})
    assert caught.value.hint is not None and "Rows: 2 (row 2 has" in caught.value.hint


@pytest.mark.parametrize("blank", ["", "   ", None])
def test_decide_import_refuses_a_missing_or_empty_id_before_a_wrong_one(blank: str | None) -> None:
    with pytest.raises(SchemaError, match=r"^2 row\(s\) have missing/empty 'id' \(rows: 1, 3\)\.$"):
        import_rows({"sequence": ["ACGT", "GGCC", "TTAA"], "id": [blank, "wrong", None]})


@pytest.mark.parametrize("on_conflict", ["error", "skip"])
def test_decide_import_refuses_wrong_ids_before_looking_for_duplicates(on_conflict: str) -> None:
    state = DatasetState(name="demo/ds", initialized=True, seq=2, ids=pa.array([sha1_id("dna", "TTAA")]))
    rows = {"sequence": ["ACGT", "ACGT", "TTAA"], "id": ["x", "y", sha1_id("dna", "TTAA")]}
    with pytest.raises(SchemaError, match=_ID_MISMATCH.format(n=2)):
        import_rows(rows, state=state, on_conflict=on_conflict)


def test_decide_import_checks_ids_with_each_rows_own_bio_type() -> None:
    rows = {"sequence": ["ACGU", "ACGT"], "bio_type": ["rna", "dna"], "alphabet": ["rna_4", "dna_4"]}
    decision = import_rows({**rows, "id": [sha1_id("rna", "ACGU"), sha1_id("dna", "ACGT")]})
    assert payload_column(decision, "id") == [sha1_id("rna", "ACGU"), sha1_id("dna", "ACGT")]
    with pytest.raises(SchemaError, match=_ID_MISMATCH.format(n=1)):
        import_rows({**rows, "id": [sha1_id("dna", "ACGU"), sha1_id("dna", "ACGT")]})


def test_wrong_ids_in_several_batches_are_counted_over_the_whole_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decide_module, "IMPORT_BATCH_ROWS", 2)
    sequences = ["ACGT", "GGCC", "TTAA", "CAGT", "AAAA", "CCCC", "GATC"]
    ids = [sha1_id("dna", s) for s in sequences]
    ids[3], ids[4], ids[6] = "x", ids[4].upper(), "y"
    with pytest.raises(SchemaError, match=_ID_MISMATCH.format(n=3)) as caught:
        import_rows({"sequence": sequences, "id": ids}, on_conflict="skip")
    assert caught.value.hint is not None and caught.value.hint.startswith("Rows: 4, 5, 7 (row 4 has 'x', computed")
    ids = [sha1_id("dna", s) for s in sequences]
    ids[5] = None
    with pytest.raises(SchemaError, match=r"1 row\(s\) have missing/empty 'id' \(rows: 6\)"):
        import_rows({"sequence": sequences, "id": ids})


def test_a_batch_without_the_id_column_counts_as_missing_once_another_has_it() -> None:
    decider = decide_module.ImportDecider(READY, ImportSequences(fmt="jsonl"), NOW)
    decider.accept(pa.table({"sequence": ["ACGT", "GGCC"]}))
    decider.accept(pa.table({"sequence": ["TTAA"], "id": [sha1_id("dna", "TTAA")]}))
    with pytest.raises(SchemaError, match=r"2 row\(s\) have missing/empty 'id' \(rows: 1, 2\)"):
        decider.finish()
