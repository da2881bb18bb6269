"""What the sync tests share: two roots with the same registry, generated sequences, and the check that two
copies of a dataset hold the same log and both verify."""

from __future__ import annotations

import random
from pathlib import Path

from usr_es import Dataset
from usr_es.registry import register_namespace, split_columns_spec
from usr_es.remotes import Remote

NAME = "demo/ds"


def make_root(path: Path) -> Path:
    """A datasets root whose registry registers `mock` (`mock__score:float64`)."""
    register_namespace(path, "mock", split_columns_spec("mock__score:float64"))
    return path


def dna(tag: str, n: int) -> list[str]:
    rng = random.Random(tag)
    return ["".join(rng.choice("ACGT") for _ in range(24)) for _ in range(n)]


def laptop(path: Path) -> Dataset:
    """Dataset `demo/ds` in a new root at `path`, initialised, with 30 sequences (seq 2)."""
    ds = Dataset.open(make_root(path), NAME)
    ds.init(source="laptop")
    ds.add_sequences(dna("first", 30))
    return ds


def remote_copy(remote: Remote) -> Dataset:
    return Dataset.open(Path(remote.spec.base_dir), NAME)


def same(a: Dataset, b: Dataset) -> None:
    """Both copies hold the same log, byte for byte, and `usr verify` passes on each."""
    assert a.log_path.read_bytes() == b.log_path.read_bytes()
    for ds in (a, b):
        report = ds.verify()
        assert report.ok, report.problems
