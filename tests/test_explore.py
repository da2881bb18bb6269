"""The explorer's answers (usr_es.explore): filters against a plain-Python model, summaries against the rows
they summarize, views as of earlier seqs against replay, a record's panel against its history."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.screen_sample import MOTIF, NAME, dna, ids_of, screen
from usr_es import Dataset
from usr_es.errors import InvalidInput, NotFound
from usr_es.explore import BINS, Explorer, Predicate, Query, Selection, _Once, _take


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return screen(tmp_path_factory.mktemp("explore"))


@pytest.fixture
def explorer(lab: Dataset) -> Iterator[Explorer]:
    found = Explorer(lab.root)
    yield found
    found.close()


def _all(explorer: Explorer, query: Query) -> list[dict[str, object]]:
    page = explorer.rows(query, limit=500)
    assert page.total <= 500
    return page.rows


def test_the_landing_lists_the_roots_datasets_with_row_counts(explorer: Explorer) -> None:
    (found,) = explorer.datasets()
    assert (found.dataset, found.rows, found.head_seq) == (NAME, 278, 6)


def test_the_overview_counts_live_and_deleted_rows_and_names_the_namespaces(explorer: Explorer) -> None:
    seen = explorer.overview(NAME)
    assert (seen.seq, seen.head_seq, seen.rows, seen.deleted) == (6, 6, 278, 2)
    assert seen.namespaces == ["assay", "usr_state"]
    kinds = {c.name: c.kind for c in seen.columns}
    assert kinds["assay__score"] == "number" and kinds["assay__hits"] == "list" and kinds["created_at"] == "time"
    assert [e[2] for e in seen.events] == ["init", "import_rows", "attach", "import_rows", "tombstone", "state_set"]


def test_a_motif_matches_in_any_case_and_deleted_rows_are_left_out_unless_asked(explorer: Explorer) -> None:
    expected = {i for i, s in zip(ids_of(dna(240)), dna(240), strict=True) if MOTIF in s.upper()}
    rows = _all(explorer, Query(dataset=NAME, motif=MOTIF.lower()))
    assert {r["id"] for r in rows} == expected - set(ids_of(dna(240))[:2])
    with_deleted = explorer.rows(Query(dataset=NAME, motif=MOTIF, include_deleted=True), limit=1)
    assert with_deleted.total == len(expected)


def test_pages_cover_the_filtered_rows_once_in_order(explorer: Explorer) -> None:
    query = Query(dataset=NAME, where=(Predicate(column="bio_type", op="eq", value="dna"),))
    pages = [explorer.rows(query, offset=offset, limit=50) for offset in range(0, 300, 50)]
    ids = [r["id"] for page in pages for r in page.rows]
    assert len(ids) == len(set(ids)) == pages[0].total == 238
    assert ids == [r["id"] for r in _all(explorer, query)[:238]]


def test_predicates_and_namespace_coverage_combine(explorer: Explorer) -> None:
    query = Query(
        dataset=NAME,
        where=(
            Predicate(column="assay__score", op="ge", value="5"),
            Predicate(column="assay__label", op="eq", value="hit"),
        ),
        with_ns=("assay",),
    )
    rows = _all(explorer, query)
    assert rows and all(r["assay__score"] >= 5 and r["assay__label"] == "hit" for r in rows)  # type: ignore[operator]
    assert len(rows) == len([i for i in range(50, 150) if i % 5 == 0])
    without = explorer.rows(Query(dataset=NAME, without_ns=("assay",)), limit=1)
    assert without.total == 278 - (150 - 2)  # the attach covered 150 rows, two of them deleted since
    empty = explorer.rows(Query(dataset=NAME, where=(Predicate(column="assay__score", op="null"),)), limit=1)
    assert empty.total == without.total


def test_time_and_state_predicates(explorer: Explorer, lab: Dataset) -> None:
    stamps = {e.seq: e.timestamp_utc for e in lab.log.events()}
    later = explorer.rows(Query(dataset=NAME, where=(Predicate(column="created_at", op="gt", value=stamps[2]),)))
    assert later.total == 40  # the proteins of seq 4
    passed = explorer.rows(
        Query(dataset=NAME, where=(Predicate(column="usr_state__qc_status", op="eq", value="pass"),))
    )
    assert passed.total == 10


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query(dataset=NAME, motif="GA(ATT"), "not a regular expression"),
        (Query(dataset=NAME, where=(Predicate(column="nope", op="eq", value="1"),)), "no column 'nope'"),
        (Query(dataset=NAME, where=(Predicate(column="length", op="gt", value="long"),)), "not a value of length"),
        (Query(dataset=NAME, where=(Predicate(column="assay__hits", op="eq", value="1"),)), "null / notnull"),
        (Query(dataset=NAME, where=(Predicate(column="length", op="contains", value="1"),)), "compares text"),
        (Query(dataset=NAME, where=(Predicate(column="length", op="gt"),)), "needs a value"),
        (Query(dataset=NAME, with_ns=("ghost",)), "no column of namespace 'ghost'"),
        (Query(dataset=NAME, as_of=99), "there is no seq 99"),
    ],
)
def test_a_query_that_cannot_be_answered_says_why(explorer: Explorer, query: Query, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        explorer.rows(query)


def test_an_unknown_dataset_or_record_is_not_found(explorer: Explorer) -> None:
    with pytest.raises(NotFound):
        explorer.overview("lab/ghost")
    with pytest.raises(NotFound):
        explorer.record(NAME, "0" * 40)


def test_the_summary_describes_exactly_the_filtered_rows(explorer: Explorer) -> None:
    query = Query(dataset=NAME, motif=MOTIF)
    rows = _all(explorer, query)
    summary = explorer.summary(query)
    assert summary.rows == len(rows)
    assert summary.bio_types == {"dna": len(rows)} and summary.alphabets == {"dna_4": len(rows)}
    assert summary.lengths is not None and sum(summary.lengths.counts) == len(rows)
    assert summary.lengths.edges[0] == min(r["length"] for r in rows)  # type: ignore[type-var]
    gc = [sum(c in "GCgc" for c in str(r["sequence"])) / len(str(r["sequence"])) for r in rows]
    assert summary.gc is not None and summary.gc_mean == pytest.approx(sum(gc) / len(gc), abs=1e-4)
    assert sum(summary.gc.counts) == len(rows) == summary.gc_rows and len(summary.gc.counts) == BINS
    covered = sum(r["assay__score"] is not None for r in rows)
    assert summary.coverage["assay"] == pytest.approx(100 * covered / len(rows), abs=0.01)
    columns = {c.name: c for c in summary.columns}
    assert columns["assay__score"].nulls == len(rows) - covered
    hits = [len(r["assay__hits"]) for r in rows if r["assay__hits"] is not None]  # type: ignore[arg-type]
    assert columns["assay__hits"].list_lengths == (min(hits), pytest.approx(sum(hits) / len(hits), abs=1e-3), max(hits))
    labels = {label: sum(r["assay__label"] == label for r in rows) for label in ("hit", "miss")}
    assert dict(columns["assay__label"].top) == {k: v for k, v in labels.items() if v}
    assert columns["id"].top == [] and columns["id"].distinct is None  # one per record: not counted


def test_the_gc_fraction_of_a_large_selection_reads_an_evenly_spaced_sample(
    explorer: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import usr_es.explore

    monkeypatch.setattr(usr_es.explore, "GC_SAMPLE", 50)
    query = Query(dataset=NAME, motif="A")  # a query of its own: the summaries of others are kept
    summary = explorer.summary(query)
    assert summary.gc_rows == 50 and summary.gc is not None and sum(summary.gc.counts) == 50
    assert summary.rows > 50 and summary.gc_mean is not None and 0.3 < summary.gc_mean < 0.7


def test_a_protein_only_selection_has_no_gc_histogram(explorer: Explorer) -> None:
    summary = explorer.summary(Query(dataset=NAME, where=(Predicate(column="bio_type", op="eq", value="protein"),)))
    assert summary.rows == 40 and summary.gc is None and summary.gc_mean is None


def test_a_view_as_of_an_earlier_seq_is_the_replay_of_that_seq(
    explorer: Explorer, lab: Dataset, tmp_path: Path
) -> None:
    for seq in (2, 3, 5):
        lab.log.replay(seq, tmp_path / f"at-{seq}")
        replayed = Dataset.at(tmp_path / f"at-{seq}").view()
        page = explorer.rows(Query(dataset=NAME, as_of=seq), limit=500)
        assert page.seq == seq and page.total == replayed.num_rows
        assert [r["id"] for r in page.rows] == replayed.column("id").to_pylist()
    assert explorer.overview(NAME, 2).rows == 240
    assert "assay__score" not in {c.name for c in explorer.overview(NAME, 2).columns}
    assert explorer.overview(NAME, 0).rows == 0


def test_the_record_panel_holds_values_history_and_blame(explorer: Explorer) -> None:
    first, second = ids_of(dna(240))[:2]
    panel = explorer.record(NAME, second)
    assert panel.deleted and panel.values["assay__score"] == 0.1
    assert [e.credit.action for e in panel.history.entries] == ["import_rows", "attach", "tombstone"]
    assert {c.column: c.credit.action for c in panel.blame.cells}["assay__score"] == "attach"
    before = explorer.record(NAME, first, as_of=2)
    assert not before.deleted and before.values["sequence"] == dna(240)[0]
    assert [e.credit.seq for e in before.history.entries] == [2]


def test_the_diff_between_two_points_is_the_forensics_diff_with_its_events(explorer: Explorer, lab: Dataset) -> None:
    found = explorer.diff(NAME, 3, 6)
    assert found.diff is not None and (found.diff.added, found.diff.deleted) == (40, 2) and found.diff.events == 3
    assert found.diff == lab.history.diff(3, 6)
    assert [e.credit.action for e in found.events] == ["import_rows", "tombstone", "state_set"]
    assert found.mentions == 40 + 2 + 10


def test_a_diff_too_large_to_answer_at_once_lists_its_events(
    explorer: Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import usr_es.explore

    monkeypatch.setattr(usr_es.explore, "DIFF_MENTIONS", 100)
    found = explorer.diff(NAME, 1, 3)
    assert found.diff is None and found.mentions == 240 + 150
    assert [e.credit.seq for e in found.events] == [2, 3]
    with pytest.raises(InvalidInput, match="from a seq to a later one"):
        explorer.diff(NAME, 5, 2)


def test_a_new_event_is_seen_on_the_next_request(tmp_path: Path) -> None:
    ds = screen(tmp_path)
    with_explorer = Explorer(tmp_path)
    try:
        assert with_explorer.rows(Query(dataset=NAME)).total == 278
        ds.add_sequences(["ACGTACGTAA"], source="late")
        assert with_explorer.rows(Query(dataset=NAME)).total == 279
    finally:
        with_explorer.close()


# -- the filter against a plain-Python model ----------------------------------------------------------------
_rows = st.lists(
    st.tuples(
        st.text(alphabet="ACGTacgt", min_size=1, max_size=12),
        st.one_of(st.none(), st.floats(min_value=-5, max_value=5, allow_nan=False)),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(
    rows=_rows,
    motif=st.sampled_from(["", "a", "GT", "c.g", "^A", "T$"]),
    bound=st.one_of(st.none(), st.floats(min_value=-5, max_value=5, allow_nan=False)),
    include_deleted=st.booleans(),
)
def test_a_selection_keeps_exactly_the_rows_the_model_keeps(
    rows: list[tuple[str, float | None, bool]], motif: str, bound: float | None, include_deleted: bool
) -> None:
    table = pa.table(
        {
            "id": pa.array([str(i) for i in range(len(rows))], pa.string()),
            "sequence": pa.array([r[0] for r in rows], pa.string()),
            "ns__score": pa.array([r[1] for r in rows], pa.float64()),
            "usr__deleted": pa.array([r[2] for r in rows], pa.bool_()),
        }
    )
    where = () if bound is None else (Predicate(column="ns__score", op="le", value=str(bound)),)
    query = Query(dataset="x", motif=motif, include_deleted=include_deleted, where=where)
    kept = Selection(table, query).rows().column("id").to_pylist()

    def keep(row: tuple[str, float | None, bool]) -> bool:
        seq, score, deleted = row
        if deleted and not include_deleted:
            return False
        if motif and not re.search(motif, seq, re.IGNORECASE):
            return False
        return bound is None or (score is not None and not math.isnan(score) and score <= bound)

    assert kept == [str(i) for i, row in enumerate(rows) if keep(row)]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=6),
    keep=st.lists(st.booleans(), max_size=42),
    offset=st.integers(min_value=0, max_value=45),
    limit=st.integers(min_value=1, max_value=10),
)
def test_a_page_of_a_chunked_view_is_the_models_slice(
    sizes: list[int], keep: list[bool], offset: int, limit: int
) -> None:
    total = sum(sizes)
    flags = (keep + [True] * total)[:total]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    chunks = [
        pa.table(
            {
                "id": pa.array([str(i) for i in range(start, start + n)], pa.string()),
                "usr__deleted": pa.array([not flags[i] for i in range(start, start + n)], pa.bool_()),
            }
        )
        for start, n in zip(starts, sizes, strict=True)
    ]
    table = pa.concat_tables(chunks)  # one chunk per piece: pages cross chunk boundaries
    page = Selection(table, Query(dataset="x")).page(offset, limit, ["id"])
    assert page.column("id").to_pylist() == [str(i) for i in range(total) if flags[i]][offset : offset + limit]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6), data=st.data())
def test_take_by_ascending_positions_crosses_chunks(sizes: list[int], data: st.DataObject) -> None:
    values = [f"v{i}" for i in range(sum(sizes))]
    column = pa.chunked_array([values[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))], pa.string())
    positions = sorted(
        data.draw(st.sets(st.integers(min_value=0, max_value=max(0, len(values) - 1)))) if values else []
    )
    assert _take(column, positions).to_pylist() == [values[p] for p in positions]


def test_a_value_is_made_once_however_many_ask_and_evictions_are_told() -> None:
    import threading
    import time

    made: list[str] = []
    dropped: list[str] = []
    kept = _Once(2, dropped=dropped.append)

    def make(key: str) -> str:
        made.append(key)
        time.sleep(0.05)
        return key.upper()

    threads = [threading.Thread(target=lambda: kept.get("a", lambda: make("a"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == ["a"]
    kept.get("b", lambda: make("b"))
    assert kept.get("c", lambda: make("c")) == "C" and dropped == ["a"]
    assert kept.get("a", lambda: make("a")) == "A" and made == ["a", "b", "c", "a"]


def test_numeric_and_time_columns_are_summarized_by_value(explorer: Explorer) -> None:
    summary = explorer.summary(Query(dataset=NAME, with_ns=("assay",)))
    scores = {c.name: c for c in summary.columns}["assay__score"]
    assert (scores.min, scores.max) == (0.2, 14.9)  # the first two records, 0.0 and 0.1, are deleted
    assert scores.mean == pytest.approx(sum(i / 10 for i in range(2, 150)) / 148)
    assert scores.histogram is not None and sum(scores.histogram.counts) == 148
    assert scores.histogram.edges[0] == 0.2 and scores.histogram.edges[-1] == 14.9
    created = {c.name: c for c in summary.columns}["created_at"]
    assert created.kind == "time" and isinstance(created.min, str) and created.min.startswith("20")


def test_a_half_float_column_is_filtered_and_summarized(tmp_path: Path) -> None:
    import numpy as np

    from usr_es.registry import register_namespace, split_columns_spec

    ds = screen(tmp_path)
    register_namespace(tmp_path, "half", split_columns_spec("half__x:float16"))
    ids = ds.view(columns=["id"]).column("id").to_pylist()[:4]
    ds.write_overlay("half", pa.table({"id": ids, "half__x": pa.array(np.array([0.5, 1.5, 2.5, 3.5], np.float16))}))
    found = Explorer(tmp_path)
    try:
        query = Query(dataset=NAME, where=(Predicate(column="half__x", op="gt", value="1"),))
        assert found.rows(query).total == 3
        column = {c.name: c for c in found.summary(query).columns}["half__x"]
        assert (column.min, column.max) == (1.5, 3.5)
    finally:
        found.close()


def test_a_view_read_while_a_writer_appends_is_kept_under_the_seq_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = screen(tmp_path)
    real_view = Dataset.view
    calls = []

    def view_then_write(self: Dataset, **kwargs: object) -> pa.Table:
        table = real_view(self, **kwargs)  # type: ignore[arg-type]
        if not calls:  # the first read: a writer appends right after it
            calls.append(1)
            Dataset.open(tmp_path, NAME).add_sequences(["ACGTTGCAACGT"], source="meanwhile")
        return table

    monkeypatch.setattr(Dataset, "view", view_then_write)
    found = Explorer(tmp_path)
    try:
        page = found.rows(Query(dataset=NAME), limit=1)
        assert (page.seq, page.total) == (7, 279)  # read again at the new head, not kept as seq 6
        assert found.overview(NAME, 6).rows == 278
    finally:
        found.close()
    assert ds.info().head_seq == 7
