"""Payload storage: the sorted runs an attach's input is merged from."""

from __future__ import annotations

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
