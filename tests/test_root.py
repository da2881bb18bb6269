"""`Root`: registering namespaces and opening datasets without importing anything internal."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from usr_es import NamespaceError, Root


def test_a_namespace_registered_from_a_columns_spec_accepts_its_overlay(tmp_path: Path) -> None:
    root = Root(tmp_path / "root")
    spec = root.register_namespace("model", "model__score:float64,model__emb:list<float64>", owner="lab")
    assert [c.name for c in spec.columns] == ["model__score", "model__emb"]
    ds = root.dataset("demo/ds")
    ds.init()
    ds.add_sequences(["ACGTACGT"])
    record = ds.head(1, columns=["id"]).column("id")[0].as_py()
    ds.write_overlay("model", pa.table({"id": [record], "score": [0.5], "emb": [[1.0, 2.0]]}))
    assert ds.get(record, columns=["model__score", "model__emb"]).to_pylist() == [
        {"model__score": 0.5, "model__emb": [1.0, 2.0]}
    ]


def test_a_namespace_registered_from_pairs_equals_one_from_a_spec(tmp_path: Path) -> None:
    by_spec = Root(tmp_path / "a").register_namespace("m", "m__x:int64,m__y:string")
    by_pairs = Root(tmp_path / "b").register_namespace("m", [("m__x", "int64"), ("m__y", "string")])
    assert by_spec == by_pairs


def test_registering_a_namespace_twice_needs_overwrite(tmp_path: Path) -> None:
    root = Root(tmp_path)
    root.register_namespace("m", "m__x:int64")
    with pytest.raises(NamespaceError):
        root.register_namespace("m", "m__x:float64")
    assert [c.type for c in root.register_namespace("m", "m__x:float64", overwrite=True).columns] == ["float64"]


def test_datasets_lists_what_the_root_holds(tmp_path: Path) -> None:
    root = Root(tmp_path)
    root.register_namespace("m", "m__x:int64")
    for name in ("lab/one", "lab/two"):
        root.dataset(name).init()
    root.dataset("lab/two").add_sequences(["ACGT", "TTGA"])
    assert [(s.dataset, s.rows) for s in root.datasets()] == [("lab/one", 0), ("lab/two", 2)]
