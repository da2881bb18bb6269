"""The id index: `get` reads only the row groups holding the asked ids. Answers equal a scan's, ids whose
keys collide are told apart, a missing, stale or corrupt index is never trusted, and writes, rebuild and
verify keep it equal to replay."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from usr_es import Dataset, reads
from usr_es.errors import NotFound
from usr_es.idindex import encode, key_of, sorted_rows, stamp_of
from usr_es.names import INDEX_FILE
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
    index = ds.dir / INDEX_FILE
    older = index.read_bytes()  # the index of a base that is about to change
    ds.add_sequences([*OTHERS[3:], *COLLIDING], alphabet="dna_4")
    ids = ds.view(columns=["id"]).column("id").to_pylist()
    request = [*reversed(ids), ids[2]]
    expected = ds.get(request)
    assert expected.column("id").to_pylist() == request
    current = index.read_bytes()
    for damaged in (older, b"not an arrow file", current[: len(current) // 2], None):
        if damaged is None:
            index.unlink()
        else:
            index.write_bytes(damaged)
        assert ds.get(request).equals(expected)
        with pytest.raises(NotFound):
            ds.get([ids[0], "0" * 40])


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
    (ds.dir / INDEX_FILE).unlink()
    assert sequences_of(ds, [ids[5]]) == [COLLIDING[0]]
    assert searched  # without it, the ids are searched row group by row group


def test_the_next_write_catches_a_lagging_index_up_and_rebuild_restores_it(tmp_path: Path) -> None:
    ds, ids = make(tmp_path / "root", [*OTHERS, *COLLIDING])
    index = ds.dir / INDEX_FILE
    good = index.read_bytes()
    assert ds.verify().ok
    index.unlink()  # as if a crash came between publishing records.parquet and the index
    report = ds.verify()
    assert not report.ok and any(INDEX_FILE in problem for problem in report.problems)
    ds.set_state([ids[0]], split="train")  # any write catches the projections up first
    assert index.read_bytes() == good
    index.write_bytes(good[:-7])
    assert not ds.verify().ok
    ds.maintenance.rebuild()
    assert index.read_bytes() == good
    assert ds.verify().ok


def test_index_rows_are_sorted_by_key_then_row() -> None:
    ids = pa.array(["b" * 8 + "x", "a" * 8 + "y", "b" * 8 + "z", "a" * 8 + "w"])
    rows = sorted_rows(ids)
    assert rows is not None
    assert rows.column(1).to_pylist() == [1, 3, 0, 2]
    assert rows.column(0).to_pylist() == [key_of("aaaaaaaa")] * 2 + [key_of("bbbbbbbb")] * 2
    assert sorted_rows(pa.array(["short", "a" * 9])) is None  # an id too short to key: no index


def test_a_damaged_index_with_a_valid_stamp_never_returns_another_record(tmp_path: Path) -> None:
    ds, ids = make(tmp_path / "root", [*OTHERS, *COLLIDING])
    path = ds.dir / INDEX_FILE
    mark = stamp_of(ds.dir)
    rows = sorted_rows(pa.array(ids))
    assert mark is not None and rows is not None
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
