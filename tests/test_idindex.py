"""The id index: `get` reads only the row groups holding the asked ids. Answers equal a scan's, ids whose
keys collide are told apart, a missing, stale or corrupt index is never trusted, and writes, rebuild and
verify keep it equal to replay."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es import Dataset, reads
from usr_es.errors import InvalidInput, NotFound
from usr_es.idindex import encode, key_of, merge_due, read_manifest, run_rows
from usr_es.names import INDEX_MANIFEST
from usr_es.registry import register_namespace, split_columns_spec

# Two sequences whose ids (sha1 of "dna|sequence") share their first 8 characters: the same index key.
COLLIDING = ["ACGTACGTTGTGAAGCAAAA", "ACGTACGTTAGATTGTCAAA"]
OTHERS = ["GGGGCCCCAAAT", "TTTTAAAACCCG", "CATCATCATGGA", "GACGTACGATTA", "AAAAAAAAAAAC"]


@pytest.fixture(autouse=True)
def searched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups of two rows, and every file searched (as at scale, where the index is used)."""
    monkeypatch.setattr("usr_es.codec.ROW_GROUP_ROWS", 2)
    monkeypatch.setattr("usr_es.codec.PART_ROW_GROUP_ROWS", 2)
    monkeypatch.setattr("usr_es.reads._SMALL_ROWS", 0)


def make(root: Path, sequences: list[str]) -> tuple[Dataset, list[str]]:
    register_namespace(root, "mock", split_columns_spec("mock__score:float64"))
    ds = Dataset.open(root, "demo/indexed")
    ds.init(source="test")
    ds.add_sequences(sequences, alphabet="dna_4")
    return ds, ds.view(columns=["id"]).column("id").to_pylist()


def only_run(ds: Dataset) -> Path:
    """The index's one run file (a dataset made by one import)."""
    manifest = read_manifest(ds.dir / INDEX_MANIFEST)
    assert manifest is not None and len(manifest.runs) == 1
    return ds.dir / manifest.runs[0].file


def sequences_of(ds: Dataset, ids: list[str]) -> list[str]:
    return ds.get(ids, columns=["sequence"]).column("sequence").to_pylist()


def test_ids_sharing_an_index_key_are_told_apart(tmp_path: Path) -> None:
    ds, ids = make(tmp_path / "root", [OTHERS[0], COLLIDING[0], OTHERS[1], OTHERS[2], COLLIDING[1]])
    first, second = ids[1], ids[4]
    assert first != second and key_of(first) == key_of(second)
    assert sequences_of(ds, [second]) == [COLLIDING[1]]
    assert sequences_of(ds, [first]) == [COLLIDING[0]]
    assert sequences_of(ds, [second, ids[0], first]) == [COLLIDING[1], OTHERS[0], COLLIDING[0]]


def test_get_answers_the_same_with_the_index_missing_stale_or_corrupt(tmp_path: Path) -> None:
    ds, ids = make(tmp_path / "root", OTHERS[:3])
    manifest = ds.dir / INDEX_MANIFEST
    older = manifest.read_bytes()  # the index of a base that is about to change
    ds.add_sequences([*OTHERS[3:], *COLLIDING], alphabet="dna_4")
    ids = ds.view(columns=["id"]).column("id").to_pylist()
    request = [*reversed(ids), ids[2]]
    expected = ds.get(request)
    assert expected.column("id").to_pylist() == request
    run = only_run(ds)
    current, current_run = manifest.read_bytes(), run.read_bytes()
    damages = [(manifest, older), (manifest, b"not json"), (manifest, current[: len(current) // 2]), (manifest, None)]
    damages += [(run, b"not an arrow file"), (run, current_run[: len(current_run) // 2]), (run, None)]
    for path, damaged in damages:
        if damaged is None:
            path.unlink()
        else:
            path.write_bytes(damaged)
        assert ds.get(request).equals(expected)
        with pytest.raises(NotFound):
            ds.get([ids[0], "0" * 40])
        manifest.write_bytes(current)
        run.write_bytes(current_run)


def test_a_current_index_spares_the_search_of_every_base_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds, ids = make(tmp_path / "root", [*OTHERS, *COLLIDING])
    searched: list[int] = []
    original = reads._group_ids

    def counting(src: reads._Source, group: int, wanted: pa.Array) -> tuple[pa.Array, pa.Array] | None:
        searched.append(group)
        return original(src, group, wanted)

    monkeypatch.setattr(reads, "_group_ids", counting)
    assert sequences_of(ds, [ids[5]]) == [COLLIDING[0]]
    assert searched == []  # no overlay parts, and the base was read through the index
    only_run(ds).write_bytes(b"damaged")
    assert sequences_of(ds, [ids[5]]) == [COLLIDING[0]]
    assert searched  # without it, the ids are searched row group by row group


def test_the_next_write_catches_a_lagging_index_up_and_rebuild_restores_it(tmp_path: Path) -> None:
    ds, ids = make(tmp_path / "root", [*OTHERS, *COLLIDING])
    index, run = ds.dir / INDEX_MANIFEST, only_run(ds)
    good, good_run = index.read_bytes(), run.read_bytes()
    assert ds.verify().ok
    index.unlink()  # as if a crash came between publishing records.parquet and the index
    report = ds.verify()
    assert not report.ok and any(INDEX_MANIFEST in problem for problem in report.problems)
    ds.set_state([ids[0]], split="train")  # any write catches the projections up first
    assert index.read_bytes() == good
    run.write_bytes(good_run[:-7])
    assert not ds.verify().ok
    ds.maintenance.rebuild()
    assert (index.read_bytes(), run.read_bytes()) == (good, good_run)
    assert ds.verify().ok


def test_index_rows_are_sorted_by_key_then_row() -> None:
    ids = pa.array(["b" * 8 + "x", "a" * 8 + "y", "b" * 8 + "z", "a" * 8 + "w"])
    rows, _ = run_rows([ids], 10)
    assert rows is not None
    assert rows.column(1).to_pylist() == [11, 13, 10, 12]
    assert rows.column(0).to_pylist() == [key_of("aaaaaaaa")] * 2 + [key_of("bbbbbbbb")] * 2
    assert run_rows([pa.array(["short", "a" * 9])], 0) == (None, 2)  # an id too short to key: no index


def test_a_damaged_index_with_a_valid_stamp_never_returns_another_record(tmp_path: Path) -> None:
    ds, ids = make(tmp_path / "root", [*OTHERS, *COLLIDING])
    path = only_run(ds)
    manifest = read_manifest(ds.dir / INDEX_MANIFEST)
    rows, _ = run_rows([pa.array(ids)], 0)
    assert manifest is not None and rows is not None
    mark = manifest.runs[0].mark
    keys, positions = rows.column(0), rows.column(1).to_pylist()
    by_row = dict(zip(positions, range(len(positions)), strict=True))  # base row -> index entry
    a, b = 0, 2  # two records with different keys: their entries are swapped
    assert key_of(ids[a]) != key_of(ids[b])
    swapped = list(positions)
    swapped[by_row[a]], swapped[by_row[b]] = b, a
    past_end = [len(ids) + 5] * len(ids)
    for damaged, hidden in ((swapped, {ids[a], ids[b]}), (past_end, set(ids))):
        bad = pa.record_batch([keys, pa.array(damaged, pa.uint32())], schema=rows.schema)
        path.write_bytes(encode(bad, mark))
        for wanted in ids:
            if wanted in hidden:  # its entry points at another record's row: not that record, not found
                with pytest.raises(NotFound):
                    ds.get([wanted])
            else:
                assert ds.get([wanted]).column("id").to_pylist() == [wanted]
        assert not ds.verify().ok


def _dna(tag: str, n: int) -> list[str]:
    import random

    rng = random.Random(tag)
    return ["".join(rng.choice("ACGT") for _ in range(24)) for _ in range(n)]


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=8))
def test_imports_keep_a_few_runs_that_answer_like_a_scan(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int]
) -> None:
    ds, _ = make(tmp_path_factory.mktemp("runs") / "root", _dna("start", 3))
    for k, n in enumerate(sizes):
        ds.add_sequences(_dna(f"batch-{k}", n), alphabet="dna_4")
    ids = ds.view(columns=["id"]).column("id").to_pylist()
    manifest = read_manifest(ds.dir / INDEX_MANIFEST)
    assert manifest is not None and manifest.rows == len(ids)
    assert [r.start for r in manifest.runs] == [0, *[r.end for r in manifest.runs[:-1]]]  # they tile the base
    assert manifest.runs[-1].end == len(ids)
    assert len(manifest.runs) <= 2 + len(ids).bit_length()
    assert (
        sequences_of(ds, [ids[-1], ids[0]])
        == ds.get([ids[-1], ids[0]], columns=["sequence"]).column("sequence").to_pylist()
    )
    assert ds.get(list(reversed(ids))).column("id").to_pylist() == list(reversed(ids))
    assert ds.verify().ok


def test_the_merge_policy_keeps_each_run_more_than_twice_the_next() -> None:
    from usr_es.idindex import Run
    from usr_es.projectors import Watermark

    runs = [Run(0, 100, Watermark()), Run(100, 140, Watermark()), Run(140, 160, Watermark())]
    assert merge_due(runs)  # 40 <= 2*20
    assert merge_due([runs[0], Run(100, 160, Watermark())])  # then 100 <= 2*60
    assert not merge_due(runs[:2])  # 100 > 2*40
    assert not merge_due(runs[:1])


def test_a_write_checks_its_ids_without_reading_the_base_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from usr_es.errors import DuplicateIDError, NotFound
    from usr_es.projections import BaseBytes

    ds, ids = make(tmp_path / "root", [*OTHERS, *COLLIDING])

    def whole_read(self: BaseBytes, columns: list[str] | None) -> pa.Table:
        raise AssertionError("the base was read whole")

    monkeypatch.setattr(BaseBytes, "read", whole_read)
    assert ds.add_sequences(_dna("new", 4), alphabet="dna_4").metrics["rows_written"] == 4
    with pytest.raises(DuplicateIDError):
        ds.add_sequences([COLLIDING[1]], alphabet="dna_4")
    assert ds.add_sequences([COLLIDING[1], "ACGTTTTTGGGGCCCCA"], on_conflict="skip").metrics["rows_written"] == 1
    assert ds.delete([ids[4]]).metrics["rows_written"] == 1
    with pytest.raises(NotFound):
        ds.delete(["0" * 40])
    by_id = ds.write_overlay("mock", {"id": [ids[0], ids[1]], "score": [1.0, 2.0]})
    by_sequence = ds.write_overlay("mock", {"sequence": [OTHERS[2]], "score": [3.0]}, key="sequence")
    assert (by_id.metrics["rows_written"], by_sequence.metrics["rows_written"]) == (2, 1)
    with pytest.raises(InvalidInput):  # a key that names no record
        ds.write_overlay("mock", {"sequence": ["ACGTACGTACGTACGTACGT"], "score": [4.0]}, key="sequence")
    monkeypatch.undo()
    assert ds.get([ids[0], ids[2]], columns=["mock__score"]).column("mock__score").to_pylist() == [1.0, 3.0]


@settings(max_examples=60, deadline=None)
@given(
    stored=st.lists(st.sampled_from(["aaaaaaaa", "aaaaaaab", "bbbbbbbb", "cccccccc"]), min_size=1, max_size=30),
    asked=st.lists(st.sampled_from(["aaaaaaaa", "aaaaaaab", "bbbbbbbb", "dddddddd", "short"]), max_size=20),
    split=st.integers(min_value=0, max_value=30),
)
def test_pairs_of_many_ids_are_the_candidates_of_each(stored: list[str], asked: list[str], split: int) -> None:
    from usr_es.idindex import IdIndex

    # Ids of a few shared prefixes (colliding keys), stored in two runs; some asked ids cannot be keyed.
    ids = [f"{prefix}{n:04d}" for n, prefix in enumerate(stored)]
    cut = min(split, len(ids))
    runs = [run_rows([pa.array(part, pa.string())], start)[0] for part, start in ((ids[:cut], 0), (ids[cut:], cut))]
    index = IdIndex.of([r for r in runs if r is not None and r.num_rows], len(ids) - 1)  # the last row is past the base
    assert index is not None
    wanted = [f"{prefix}9999" if prefix != "short" else prefix for prefix in asked]
    positions, rows = index.pairs(pa.array(wanted, pa.string()))
    expected = sorted((at, row) for at, value in enumerate(wanted) for row in index.candidates(value))
    assert sorted(zip(positions.to_pylist(), rows.to_pylist(), strict=True)) == expected


@pytest.mark.parametrize("candidate_rows", [0, 1_000_000])
def test_many_ids_at_once_are_checked_like_a_few(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, candidate_rows: int
) -> None:
    from usr_es.errors import DuplicateIDError

    monkeypatch.setattr("usr_es.projections._SEARCHED_IDS", 0)  # the vectorized lookup, even for a few ids
    monkeypatch.setattr("usr_es.projections._CANDIDATE_ROWS", candidate_rows)  # compared pair by pair, or by set
    ds, ids = make(tmp_path / "root", [*OTHERS, *COLLIDING])
    with pytest.raises(DuplicateIDError):
        ds.add_sequences([COLLIDING[1]], alphabet="dna_4")
    added = ds.add_sequences([COLLIDING[1], "ACGTTTTTGGGGCCCCA", OTHERS[3]], on_conflict="skip")
    assert added.metrics["rows_written"] == 1
    ds.write_overlay("mock", {"id": [ids[6], ids[5]], "score": [1.0, 2.0]})
    with pytest.raises(InvalidInput):  # a key that names no record, sharing a key with one that does
        ds.write_overlay("mock", {"id": [ids[5][:8] + "0" * 32], "score": [4.0]})
    assert ds.get([ids[5], ids[6]], columns=["mock__score"]).column("mock__score").to_pylist() == [2.0, 1.0]


def test_a_scan_lines_overlay_rows_up_through_the_index_and_tells_colliding_ids_apart(tmp_path: Path) -> None:
    ds, ids = make(tmp_path / "root", [OTHERS[0], COLLIDING[0], OTHERS[1], OTHERS[2], COLLIDING[1], OTHERS[3]])
    ds.write_overlay("mock", {"id": [ids[4], ids[0], ids[5]], "score": [4.0, 0.0, 5.0]})
    view = ds.view(columns=["id", "mock__score"])
    assert view.column("id").to_pylist() == ids
    assert view.column("mock__score").to_pylist() == [0.0, None, None, None, 4.0, 5.0]
    batches = list(reads.scan(ds._head, columns=["mock__score"], batch_size=2))  # batches cut between pairs
    assert [v for b in batches for v in b.column(0).to_pylist()] == [0.0, None, None, None, 4.0, 5.0]


@settings(max_examples=40, deadline=None)
@given(
    prefixes=st.lists(st.sampled_from(["aaaaaaaa", "aaaaaaab", "bbbbbbbb"]), min_size=1, max_size=25),
    picked=st.sets(st.integers(0, 30), max_size=30),
    group=st.integers(1, 9),
    through_index=st.booleans(),
    data=st.data(),
)
def test_overlay_rows_spilled_in_base_order_come_back_per_run_of_base_rows(
    tmp_path_factory: pytest.TempPathFactory,
    prefixes: list[str],
    picked: set[int],
    group: int,
    through_index: bool,
    data: st.DataObject,
) -> None:
    from usr_es.idindex import IdIndex, InBaseOrder, looked_up
    from usr_es.storage import SortedRuns

    base = [f"{prefix}{n:04d}" for n, prefix in enumerate(prefixes)]  # shared prefixes: colliding keys
    rows = sorted(picked)
    overlay_ids = [base[r] if r < len(base) else f"aaaaaaaa{r:04d}x" for r in rows]  # some ids not in the base
    order = data.draw(st.permutations(range(len(rows))))
    table = pa.table({"score": [float(rows[k]) for k in order], "id": [overlay_ids[k] for k in order]})
    built = run_rows([pa.array(base, pa.string())], 0)[0]
    index = IdIndex.of([built] if built is not None else [], len(base))
    assert index is not None
    locate = index.pairs if through_index else looked_up(pa.array(base, pa.string()))
    runs = SortedRuns(tmp_path_factory.mktemp("runs"), key="__base_row")
    lined = InBaseOrder.spill(table, locate, runs)
    try:
        got = []
        for offset in range(0, len(base), group):
            ids = pa.chunked_array([pa.array(base[offset : offset + group], pa.string())])
            piece = lined.rows(offset, len(ids), ids)
            assert piece.column_names == ["id", "score"]
            got += piece.to_pylist()
    finally:
        runs.discard()
    assert got == [{"id": base[r], "score": float(r)} for r in rows if r < len(base)]


def test_overlay_rows_naming_one_id_twice_are_refused(tmp_path: Path) -> None:
    from usr_es.errors import IntegrityError
    from usr_es.idindex import InBaseOrder, looked_up
    from usr_es.storage import SortedRuns

    base = pa.array(["a1", "b2", "c3"], pa.string())
    table = pa.table({"id": ["b2", "c3", "b2"], "score": [1.0, 2.0, 3.0]})
    runs = SortedRuns(tmp_path, key="__base_row")
    lined = InBaseOrder.spill(table, looked_up(base), runs)
    with pytest.raises(IntegrityError):
        lined.rows(0, 3, base)
    runs.discard()
