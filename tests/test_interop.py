"""The projections are plain Parquet: other readers (here pyarrow.dataset) need nothing from usr_es."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads

from usr_es import Dataset


def test_pyarrow_dataset_reads_the_base_and_overlay_parts(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv, fmt="csv")
    ids = dataset.head(6, columns=["id"]).column("id").to_pylist()
    dataset.write_overlay("mock", {"id": ids[:4], "score": [1.0, 2.0, 3.0, 4.0]})
    dataset.write_overlay("mock", {"id": ids[3:5], "score": [40.0, 50.0]}, allow_overwrite=True)

    base = pads.dataset(dataset.dir / "records.parquet").to_table()
    assert base.column("id").to_pylist() == ids
    assert base.schema.metadata is not None and b"usr:schema_version" in base.schema.metadata

    parts = pads.dataset(dataset.dir / "_derived" / "mock", format="parquet")
    scores = parts.to_table(columns=["id", "mock__score"])
    assert scores.num_rows == 6  # two parts, read together: the last writer per id is usr_es's merge
    latest = {row["id"]: row["mock__score"] for row in dataset.view(columns=["id", "mock__score"]).to_pylist()}
    assert latest[ids[3]] == 40.0
    from_parts = scores.filter(pc.equal(scores.column("id"), ids[3])).column("mock__score").to_pylist()
    assert sorted(from_parts) == [4.0, 40.0]
