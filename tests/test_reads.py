"""The fast read layer (API): scan/head/get agree with the full live view across overlay histories;
grep, describe, columns, cell, parquet targets, and the errors users see."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usr_es import Dataset
from usr_es.errors import InvalidInput, NotFound
from usr_es.registry import register_namespace, split_columns_spec
from usr_es.targets import cell, target_columns, target_head

MOCK_COLUMNS = "mock__score:float64,mock__label:string,mock__vec:list<float64>"
SEQUENCES = [
    "ACGTACGTAAGG",
    "ttgacaACGTAC",
    "GGGGCCCCAAAT",
    "acgtacTTTTTG",
    "CATCATCATGGA",
    "TTTTAAAACCCG",
    "GACGTACGATTA",
    "CCCCCCCCCCAG",
    "AAAAAAAAAAAC",
]


def make_dataset(root: Path, name: str = "demo/reads") -> tuple[Dataset, list[str]]:
    register_namespace(root, "mock", split_columns_spec(MOCK_COLUMNS))
    ds = Dataset.open(root, name)
    ds.init(source="test")
    ds.add_sequences(SEQUENCES, alphabet="dna_4")
    return ds, ds.view(columns=["id"]).column("id").to_pylist()


def overlay(ids: list[str], scores: list[float | None], *, vec: bool = True) -> dict[str, Any]:
    table: dict[str, Any] = {"id": ids, "score": pa.array(scores, pa.float64())}
    if vec:
        table["vec"] = pa.array([None if s is None else [s, s + 1.0] for s in scores], pa.list_(pa.float64()))
        table["label"] = pa.array([None if s is None else f"L{s:g}" for s in scores], pa.string())
    return table


def _overlaid(ds: Dataset, ids: list[str]) -> None:
    ds.write_overlay("mock", overlay(ids[:6], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    # A second part: overwrites some ids (an explicit null clears) and writes only `score`.
    ds.write_overlay("mock", overlay([ids[1], ids[2], ids[7]], [None, 20.0, 70.0], vec=False), allow_overwrite=True)
    ds.delete([ids[0], ids[3], ids[5]], reason="bad")
    ds.restore([ids[5]])
    ds.set_state([ids[1], ids[4]], masked=True, qc_status="pass", lineage=["a", "b"])
    ds.set_state([ids[4]], split="train")


def h_plain(ds: Dataset, ids: list[str]) -> None:
    pass


def h_overlaid(ds: Dataset, ids: list[str]) -> None:
    _overlaid(ds, ids)


def h_every_record(ds: Dataset, ids: list[str]) -> None:
    ds.write_overlay("mock", overlay(ids, [float(k) for k in range(len(ids))]))  # in base order
    ds.delete([ids[2]])


def h_compacted(ds: Dataset, ids: list[str]) -> None:
    _overlaid(ds, ids)
    ds.maintenance.compact_overlay("mock")
    ds.maintenance.compact_overlay("usr_state")


def h_materialized(ds: Dataset, ids: list[str]) -> None:
    _overlaid(ds, ids)
    ds.maintenance.materialize()  # folded into records.parquet; the parts stay live
    ds.write_overlay("mock", overlay([ids[2], ids[8]], [None, 80.0], vec=False), allow_overwrite=True)
    ds.delete([ids[6]])
    ds.clear_state([ids[4]])


def h_dropped(ds: Dataset, ids: list[str]) -> None:
    _overlaid(ds, ids)
    ds.maintenance.materialize(drop_overlays=True)
    ds.write_overlay("mock", overlay([ids[4]], [44.0]), allow_overwrite=True)


def h_compacted_over_materialized(ds: Dataset, ids: list[str]) -> None:
    _overlaid(ds, ids)
    ds.maintenance.materialize(drop_overlays=True)
    ds.write_overlay("mock", overlay([ids[4]], [40.0], vec=False), allow_overwrite=True)
    ds.write_overlay("mock", overlay([ids[7]], [70.0]), allow_overwrite=True)
    ds.maintenance.compact_overlay("mock")
    # ids[4]'s vec is unwritten in the compacted part: its materialized value shows


def h_purged(ds: Dataset, ids: list[str]) -> None:
    _overlaid(ds, ids)
    ds.maintenance.materialize(drop_deleted=True)  # ids 0 and 3 leave the dataset with their overlay history
    ds.add_sequences([SEQUENCES[0]], alphabet="dna_4")  # back as a new record without overlay values
    ds.write_overlay("mock", overlay([ids[8]], [9.0]), allow_overwrite=True)
    ds.delete([ids[8]])


def h_empty(ds: Dataset, ids: list[str]) -> None:
    ds.write_overlay("mock", overlay(ids[:2], [1.0, 2.0]))
    ds.delete(ids)


HISTORIES: dict[str, Callable[[Dataset, list[str]], None]] = {
    "plain": h_plain,
    "overlaid": h_overlaid,
    "every_record": h_every_record,
    "compacted": h_compacted,
    "materialized": h_materialized,
    "dropped": h_dropped,
    "compacted_over_materialized": h_compacted_over_materialized,
    "purged": h_purged,
    "all_deleted": h_empty,
}


@pytest.fixture(params=["whole", "search"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """`search`: files of two-row row groups, every file searched row group by row group (as at scale)."""
    if request.param == "search":
        monkeypatch.setattr("usr_es.codec.ROW_GROUP_ROWS", 2)
        monkeypatch.setattr("usr_es.codec.PART_ROW_GROUP_ROWS", 2)
        monkeypatch.setattr("usr_es.reads._SMALL_ROWS", 0)
    return str(request.param)


def selections(ds: Dataset, include_deleted: bool) -> Iterator[list[str] | None]:
    names = ds.view_schema(include_deleted=include_deleted).names
    yield None
    yield list(reversed(names))
    for name in names:
        if name in ("id", "sequence") or "__" in name:  # overlay, state and tombstone columns one by one
            yield [name]
    yield [names[-1], names[0]]


def assert_reads_agree_with_view(ds: Dataset) -> None:
    for include_deleted in (False, True):
        for columns in selections(ds, include_deleted):
            expected = ds.view(columns=columns, include_deleted=include_deleted)
            schema = ds.view_schema(columns, include_deleted)
            assert schema.equals(expected.schema), (columns, schema, expected.schema)
            batches = list(ds.scan(columns=columns, include_deleted=include_deleted, batch_size=2))
            assert all(b.schema.equals(schema) and b.num_rows for b in batches)
            assert pa.Table.from_batches(batches, schema).equals(expected), columns
            for n in (0, 1, 3, expected.num_rows, expected.num_rows + 2):
                assert ds.head(n, columns=columns, include_deleted=include_deleted).equals(expected.slice(0, n))
            with_id = None if columns is None else list(dict.fromkeys([*columns, "id"]))
            keyed = ds.view(columns=with_id, include_deleted=include_deleted)
            ids = keyed.column("id").to_pylist()
            if ids:
                request = [*reversed(ids), ids[0]]
                rows = [ids.index(i) for i in request]
                got = ds.get(request, columns=columns, include_deleted=include_deleted)
                assert got.equals(keyed.take(rows).select(schema.names)), columns


@pytest.mark.parametrize("history", list(HISTORIES))
def test_scan_head_get_equal_the_view(tmp_path: Path, mode: str, history: str) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    HISTORIES[history](ds, ids)
    assert_reads_agree_with_view(ds)


def test_reads_hide_tombstoned_rows_and_show_overlay_values(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    shown = ds.head(20, columns=["id", "mock__score", "mock__vec", "usr_state__masked"]).to_pylist()
    assert [r["id"] for r in shown] == [i for k, i in enumerate(ids) if k not in (0, 3)]
    by_id = {r["id"]: r for r in shown}
    assert by_id[ids[1]] == {"id": ids[1], "mock__score": None, "mock__vec": [2.0, 3.0], "usr_state__masked": True}
    assert by_id[ids[2]]["mock__score"] == 20.0 and by_id[ids[7]]["mock__vec"] is None
    assert by_id[ids[6]]["usr_state__masked"] is False
    assert ds.get(ids[5], columns=["mock__score"]).to_pylist() == [{"mock__score": 6.0}]


def test_head_reads_past_a_long_run_of_tombstoned_rows(tmp_path: Path, mode: str) -> None:
    ds, _ = make_dataset(tmp_path / "root")
    more = ["".join("ACGT"[(k >> (2 * b)) & 3] for b in range(10)) for k in range(200)]
    ds.add_sequences(more, alphabet="dna_4")
    ids = ds.view(columns=["id"]).column("id").to_pylist()
    ds.write_overlay("mock", overlay(ids[100:160], [float(k) for k in range(60)]))
    ds.delete(ids[:150])
    expected = ds.view()
    assert expected.column("id").to_pylist()[0] == ids[150]
    for n in (1, 5, 70):
        assert ds.head(n).equals(expected.slice(0, n))
    assert ds.cell(0, "mock__score") == 50.0


def test_empty_dataset_has_a_schema_and_no_rows(tmp_path: Path) -> None:
    register_namespace(tmp_path / "root", "mock", split_columns_spec(MOCK_COLUMNS))
    ds = Dataset.open(tmp_path / "root", "demo/empty")
    ds.init()
    schema = ds.view_schema()
    assert "sequence" in schema.names
    assert list(ds.scan()) == []
    assert ds.head(5).num_rows == 0 and ds.head(5).schema.equals(schema)
    assert ds.grep("A").num_rows == 0
    assert [p.rows for p in ds.describe()] == [0] * len(schema)


def test_scan_keeps_reading_the_prefix_it_opened(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    before = ds.view()
    batches = ds.scan(batch_size=3)
    ds.delete([ids[1]])
    ds.maintenance.compact_overlay("mock")  # removes the part files the scan opened
    ds.write_overlay("mock", overlay([ids[2]], [99.0]), allow_overwrite=True)
    assert pa.Table.from_batches(list(batches), before.schema).equals(before)
    assert ds.view().num_rows == before.num_rows - 1


def test_unknown_column_names_it_and_lists_the_columns(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    reads: list[Callable[[], Any]] = [
        lambda: ds.head(3, columns=["id", "nope"]),
        lambda: ds.get(ids[1], columns=["nope"]),
        lambda: ds.scan(columns=["nope"]),  # checked before the first batch is asked for
        lambda: ds.view_schema(["nope"]),
        lambda: ds.describe(columns=["nope"]),
        lambda: ds.cell(0, "nope"),
    ]
    for read in reads:
        with pytest.raises(InvalidInput) as caught:
            read()
        assert "nope" in str(caught.value)
        assert caught.value.hint is not None and "mock__score" in caught.value.hint


def test_tombstone_columns_need_include_deleted(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    for read in (
        lambda: ds.head(3, columns=["usr__deleted"]),
        lambda: ds.scan(columns=["id", "usr__deleted_reason"]),
        lambda: ds.get(ids[1], columns=["usr__deleted"]),
    ):
        with pytest.raises(InvalidInput) as caught:
            read()
        assert "usr__deleted" in str(caught.value) and "--include-deleted" in (caught.value.hint or "")
    rows = ds.head(10, columns=["id", "usr__deleted", "usr__deleted_reason"], include_deleted=True).to_pylist()
    assert rows[0] == {"id": ids[0], "usr__deleted": True, "usr__deleted_reason": "bad"}
    assert rows[5] == {"id": ids[5], "usr__deleted": False, "usr__deleted_reason": None}  # restored


def test_get_unknown_id_is_not_found_with_a_sample(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    with pytest.raises(NotFound) as caught:
        ds.get([ids[1], "nope1", "nope2"])
    assert "2 id(s)" in str(caught.value) and "nope1" in str(caught.value) and ids[1] not in str(caught.value)


def test_get_tombstoned_id_needs_include_deleted(tmp_path: Path, mode: str) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    with pytest.raises(NotFound) as caught:
        ds.get([ids[1], ids[3]])
    assert ids[3] in str(caught.value) and "--include-deleted" in (caught.value.hint or "")
    got = ds.get([ids[3], ids[1]], columns=["id", "usr__deleted"], include_deleted=True)
    assert got.to_pylist() == [{"id": ids[3], "usr__deleted": True}, {"id": ids[1], "usr__deleted": False}]
    assert ds.get(f"  {ids[1]} ", columns=["id"]).column("id").to_pylist() == [ids[1]]
    assert ds.get([], columns=["id"]).num_rows == 0


def test_grep_is_case_insensitive_regex_in_base_order(tmp_path: Path, mode: str) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    ds.delete([ids[6]])  # GACGTACGATTA matches but is tombstoned
    table = ds.grep("acgtac")
    assert table.column_names == ["id", "sequence", "length"]
    expected = [k for k, s in enumerate(SEQUENCES) if "ACGTAC" in s.upper() and k != 6]
    assert table.column("id").to_pylist() == [ids[k] for k in expected]
    assert table.column("length").to_pylist() == [len(SEQUENCES[k]) for k in expected]
    assert ds.grep("acgtac", limit=2).column("id").to_pylist() == [ids[k] for k in expected[:2]]
    assert ds.grep("acgtac", limit=0).num_rows == 0
    assert ds.grep("acgtac", include_deleted=True).num_rows == len(expected) + 1
    everything = ds.grep("^(C|A){4,}[ACGT]*$", limit=None)
    pattern = re.compile("^(C|A){4,}[ACGT]*$", re.IGNORECASE)
    assert everything.column("id").to_pylist() == [ids[k] for k, s in enumerate(SEQUENCES) if pattern.search(s)]


def test_grep_rejects_an_invalid_regex(tmp_path: Path) -> None:
    ds, _ = make_dataset(tmp_path / "root")
    with pytest.raises(InvalidInput) as caught:
        ds.grep("AC(GT")
    assert "AC(GT" in str(caught.value)


def test_describe_profiles_each_column(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    profiles = {p.name: p for p in ds.describe()}
    assert list(profiles) == ds.view_schema().names
    visible = len(SEQUENCES) - 2
    score = profiles["mock__score"]
    # Visible scores: ids 1 (cleared), 2 (20), 4 (5), 5 (6), 7 (70); ids 6, 8 never written.
    assert (score.type, score.rows, score.non_null) == ("float64", visible, 4)
    assert score.null_pct == round(100 * 3 / visible, 2) and score.example == 20.0
    vec = profiles["mock__vec"]
    assert (vec.list_len_min, vec.list_len_max, vec.list_len_mean) == (2, 2, 2.0) and vec.example == [2.0, 3.0]
    assert score.list_len_min is None and score.list_len_mean is None
    created = profiles["created_at"].example
    assert isinstance(created, str) and created.endswith("Z") and datetime.fromisoformat(created)
    assert profiles["usr_state__lineage"].example == ["a", "b"]
    assert profiles["usr_state__lineage"].list_len_mean == 2.0
    json.dumps([p.example for p in profiles.values()])
    sampled = ds.describe(columns=["mock__score", "id"], sample=2)
    assert [(p.name, p.rows, p.non_null) for p in sampled] == [("mock__score", 2, 1), ("id", 2, 2)]


def test_describe_with_include_deleted_profiles_tombstoned_rows_and_the_usr_columns(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)  # two records tombstoned
    every = {p.name: p for p in ds.describe(include_deleted=True)}
    assert list(every) == ds.view_schema(include_deleted=True).names
    assert every["id"].rows == every["id"].non_null == len(SEQUENCES)
    assert every["usr__deleted"].example is not None
    assert {p.name for p in ds.describe()} == {n for n in every if not n.startswith("usr__")}
    with pytest.raises(InvalidInput, match="--include-deleted"):
        ds.describe(columns=["usr__deleted"])


def test_columns_list_the_view_in_order(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    columns = ds.columns()
    assert [c.name for c in columns] == ds.view_schema().names
    types = {c.name: c.type for c in columns}
    assert types["mock__vec"] == "list<float64>" and types["id"] == "string"
    assert not any(c.name.startswith("usr__") for c in columns)
    assert "usr__deleted" in [c.name for c in ds.columns(include_deleted=True)]


def test_cell_reads_one_value_of_the_live_view(tmp_path: Path, mode: str) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    assert ds.cell(0, "id") == ids[1]  # row 0 of the view: ids[0] is tombstoned
    assert ds.cell(0, "id", include_deleted=True) == ids[0]
    assert ds.cell(1, "mock__vec") == [3.0, 4.0]
    for bad in (-1, len(SEQUENCES) - 2):
        with pytest.raises(InvalidInput):
            ds.cell(bad, "id")


def test_parquet_targets_read_files_directories_and_datasets(tmp_path: Path) -> None:
    ds, ids = make_dataset(tmp_path / "root")
    _overlaid(ds, ids)
    folder = tmp_path / "plain"
    (folder / "sub").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), folder / "one.parquet", row_group_size=1)
    pq.write_table(pa.table({"a": [4, 5], "b": ["u", "v"]}), folder / "sub" / "two.parquet")
    file = folder / "one.parquet"
    assert target_head(file, 2).to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert target_head(file, 2, ["b"]).column_names == ["b"]
    assert target_head(folder, 10, ["a"]).column("a").to_pylist() == [1, 2, 3]  # the folder's one file
    assert target_head(ds.dir, 3).equals(ds.head(3))
    assert [(c.name, c.type) for c in target_columns(file)] == [("a", "int64"), ("b", "string")]
    assert [c.name for c in target_columns(ds.dir, "mock__*")] == [
        n for n in ds.view_schema().names if n.startswith("mock__")
    ] and len(target_columns(ds.dir, "mock__*")) == 3
    assert cell(file, 2, "b") == "z"
    assert cell(folder, 2, "a") == 3
    assert cell(ds.dir, 0, "mock__score") is None
    assert ds.cell(1, "mock__score") == cell(ds.dir, 1, "mock__score") == 20.0
    for bad in (lambda: cell(file, 3, "a"), lambda: cell(file, 0, "c"), lambda: target_head(file, 1, ["c"])):
        with pytest.raises(InvalidInput):
            bad()
    with pytest.raises(NotFound):
        target_head(tmp_path / "missing.parquet")


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("overlay"), st.sets(st.integers(0, 8), min_size=1), st.booleans()),
        st.tuples(st.just("delete"), st.sets(st.integers(0, 8), min_size=1), st.just(False)),
        st.tuples(st.just("restore"), st.sets(st.integers(0, 8), min_size=1), st.just(False)),
        st.tuples(st.just("state"), st.sets(st.integers(0, 8), min_size=1), st.booleans()),
        st.tuples(st.just("compact"), st.just(frozenset[int]()), st.just(False)),
        # picks {0}: only the `mock` namespace (its parts fold while usr_state's stay merged); {}: every one.
        st.tuples(st.just("materialize"), st.sets(st.just(0), max_size=1), st.booleans()),
    ),
    max_size=6,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, search=st.booleans())
def test_reads_agree_with_the_view_after_any_history(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, frozenset[int], bool]], search: bool
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        if search:
            patch.setattr("usr_es.codec.ROW_GROUP_ROWS", 2)
            patch.setattr("usr_es.codec.PART_ROW_GROUP_ROWS", 2)
            patch.setattr("usr_es.reads._SMALL_ROWS", 0)
        ds, ids = make_dataset(tmp_path_factory.mktemp("prop") / "root")
        live, deleted, written = list(ids), set[str](), False
        for step, (op, picks, flag) in enumerate(ops):
            chosen = [live[k % len(live)] for k in sorted(picks)] if live else []
            chosen = list(dict.fromkeys(chosen))
            if op == "overlay" and chosen:
                scores = [None if flag and k == 0 else float(step * 10 + k) for k in range(len(chosen))]
                ds.write_overlay("mock", overlay(chosen, scores, vec=not flag), allow_overwrite=True)
                written = True
            elif op == "delete" and [i for i in chosen if i not in deleted]:
                ds.delete([i for i in chosen if i not in deleted])
                deleted.update(chosen)
            elif op == "restore" and [i for i in chosen if i in deleted]:
                ds.restore([i for i in chosen if i in deleted])
                deleted.difference_update(chosen)
            elif op == "state" and chosen:
                ds.set_state(chosen, masked=flag, qc_status="fail" if flag else None)
            elif op == "compact" and written:
                ds.maintenance.compact_overlay("mock")
            elif op == "materialize":
                only = ["mock"] if written and picks else None
                ds.maintenance.materialize(namespaces=only, drop_deleted=flag)
                if flag:
                    live = [i for i in live if i not in deleted]
                    deleted = set()
        assert_reads_agree_with_view(ds)


def test_a_folder_of_several_parquet_files_names_one_by_glob_or_by_the_picker(tmp_path: Path) -> None:
    from usr_es.targets import choose_file

    folder = tmp_path / "runs"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1]}), folder / "events-1.parquet")
    pq.write_table(pa.table({"b": ["x"], "c": [2.0]}), folder / "events-2.parquet")
    pq.write_table(pa.table({"z": [0]}), folder / "other.parquet")
    with pytest.raises(InvalidInput, match=r"holds 2 Parquet files: events-1\.parquet, events-2\.parquet"):
        target_columns(folder)  # never the columns of several files read as one
    assert [c.name for c in target_columns(folder, "events-2*")] == ["b", "c"]
    assert cell(folder, 0, "z", glob="other.parquet") == 0
    assert target_head(folder, pick=lambda files: files[-1]).column_names == ["b", "c"]
    (folder / "records.parquet").write_bytes((folder / "other.parquet").read_bytes())
    assert choose_file(folder).name == "records.parquet"  # as the original picks: records, events*, any
    with pytest.raises(NotFound, match="matching 'nope"):
        target_columns(folder, "nope*")
