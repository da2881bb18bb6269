"""Payload storage: the sorted runs an attach's input is merged from."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es.storage import SortedRuns

_IDS = st.text(alphabet="0123456789abcdef", min_size=1, max_size=3)


@settings(max_examples=80, deadline=None)
@given(runs=st.lists(st.lists(_IDS, max_size=40), max_size=8), rows=st.integers(1, 30))
def test_merged_runs_give_every_row_in_id_order_in_bounded_pieces_that_keep_equal_ids_together(
    runs: list[list[str]], rows: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SortedRuns(Path(tmp))
        for number, ids in enumerate(runs):
            ordered = sorted(ids)
            store.write(pa.table({"id": pa.array(ordered, pa.string()), "run": pa.array([number] * len(ordered))}))
        pieces = list(store.merged(rows))
        store.discard()
        assert not list(Path(tmp).rglob(".tmp-*"))
    got = [
        (i, r)
        for piece in pieces
        for i, r in zip(piece.column("id").to_pylist(), piece.column("run").to_pylist(), strict=True)
    ]
    assert [i for i, _ in got] == sorted(i for ids in runs for i in ids)
    assert sorted(got) == sorted((i, n) for n, ids in enumerate(runs) for i in ids)
    kept = sum(1 for ids in runs if ids)
    # Fewer than `rows` before a piece's last range, which adds at most `step` rows per run.
    bound = rows + kept * max(1, rows // max(kept, 1))
    firsts: dict[str, int] = {}
    for number, piece in enumerate(pieces):
        values = piece.column("id").to_pylist()
        assert 0 < len(values) < bound or len(set(values)) < len(values)  # repeated ids stay together
        for value in values:
            assert firsts.setdefault(value, number) == number  # an id never spans two pieces


@settings(max_examples=80, deadline=None)
@given(
    runs=st.lists(st.lists(st.integers(0, 60), max_size=50), max_size=6),
    cuts=st.lists(st.integers(0, 70), max_size=8),
    batch=st.integers(1, 7),
)
def test_ranges_of_integer_keyed_runs_give_each_row_once_in_key_order(
    runs: list[list[int]], cuts: list[int], batch: int
) -> None:
    import pytest

    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as tmp:
        patch.setattr("usr_es.storage.RUN_BATCH_ROWS", batch)  # ranges that start and end inside record batches
        store = SortedRuns(Path(tmp), key="row")
        for number, keys in enumerate(runs):
            ordered = sorted(keys)
            store.write(pa.table({"row": pa.array(ordered, pa.int64()), "run": pa.array([number] * len(ordered))}))
        bounds = [0, *sorted(set(cuts)), 71]
        pieces = [store.between(a, b) for a, b in itertools.pairwise(bounds)]
        store.discard()
        assert not list(Path(tmp).rglob(".tmp-*"))
    got = []
    for (a, b), piece in zip(itertools.pairwise(bounds), pieces, strict=True):
        keys = piece.column("row").to_pylist() if piece is not None else []
        assert all(a <= k < b for k in keys) and keys == sorted(keys)
        got += list(zip(keys, piece.column("run").to_pylist(), strict=True)) if piece is not None else []
    assert sorted(got) == sorted((k, n) for n, keys in enumerate(runs) for k in keys)
