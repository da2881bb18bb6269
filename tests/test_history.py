"""The history index: keys for every id, entries per event, runs that merge, and lookups that find them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from usr_es import Dataset, history
from usr_es.events import RecordsTombstoned
from usr_es.names import HISTORY_MANIFEST


def test_every_id_is_keyed_alike_one_at_a_time_and_vectorized() -> None:
    ids = ["0123456789abcdef", "ab", "", "x" * 8, "üü", "12345678"]
    assert history.keys_for(pa.array(ids)).to_pylist() == [history.key_for(i) for i in ids]
    assert history.key_for("12345678") == history.key_for("12345678-longer")  # keys collide; readers confirm


def test_entries_are_sorted_by_key_with_inline_ids_at_their_positions() -> None:
    ids = ("zzzzzzzz1", "aaaaaaaa2", "mmmmmmmm3")
    event = RecordsTombstoned(ids=ids, rows=3, created_at="2026-01-01T00:00:00Z")
    found = history.entries_of(7, event, None)
    rows = found.rows.to_pydict()
    assert rows["seq"] == [7, 7, 7]
    assert [ids[r] for r in rows["row"]] == sorted(ids, key=history.key_for)
    assert rows["key"] == sorted(rows["key"])


def test_a_lookup_finds_every_event_that_named_a_record(root: Path) -> None:
    ds = Dataset.open(root, "lab/hx")
    ds.init()
    ds.add_sequences(["ACGTACGTAC", "GGGCCCAATT"])
    rid = ds.view(columns=["id"]).column("id")[0].as_py()
    for k in range(5):  # small runs, merged as they come
        ds.write_overlay("mock", {"id": [rid], "mock__score": [float(k)]}, allow_overwrite=True)
    ds.delete([rid])
    lookup = history.Lookup.open(ds.dir)
    assert lookup is not None
    assert [t.seq for t in lookup.touches(rid)] == [2, 3, 4, 5, 6, 7, 8]
    manifest = history.read_manifest(ds.dir / HISTORY_MANIFEST)
    assert manifest is not None and len(manifest.runs) < 7 and manifest.entries == 2 + 5 + 1
    assert lookup.touches("f" * 40) == []
