"""A small screening dataset with a history worth exploring (the explorer's tests and `make screenshots`).

`lab/screen` in a root whose registry has namespace `assay`:
seq 1 init; seq 2 240 DNA sequences, every third carrying the EcoRI site GAATTC (any case); seq 3 an assay
attach (score, a list of hit positions, a label) for the first 150; seq 4 40 protein sequences; seq 5 two
records deleted; seq 6 a QC state set on ten.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa

from usr_es import Dataset, compute_id
from usr_es.registry import register_namespace, split_columns_spec

NAME = "lab/screen"
MOTIF = "GAATTC"


def dna(n: int, seed: str = "screen") -> list[str]:
    """`n` DNA sequences of 30-90 bases; every third has the motif, in lower case for every sixth."""
    rng = random.Random(seed)
    made = []
    for i in range(n):
        body = "".join(rng.choice("ACGT") for _ in range(rng.randint(30, 90)))
        if i % 3 == 0:
            at = rng.randint(0, len(body))
            body = body[:at] + (MOTIF.lower() if i % 6 == 0 else MOTIF) + body[at:]
        made.append(body.replace(MOTIF, "GAATTA") if i % 3 else body)  # no accidental motif elsewhere
    return made


def proteins(n: int) -> list[str]:
    rng = random.Random("proteins")
    return ["".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(40, 120))) for _ in range(n)]


def screen(root: Path) -> Dataset:
    register_namespace(
        root, "assay", split_columns_spec("assay__score:float64,assay__hits:list<int64>,assay__label:string")
    )
    ds = Dataset.open(root, NAME)
    ds.init(source="explorer tests")
    sequences = dna(240)
    ds.add_sequences(sequences, source="plate 1")
    ids = [compute_id("dna", s) for s in sequences]
    ds.write_overlay(
        "assay",
        pa.table(
            {
                "id": ids[:150],
                "assay__score": [i / 10 for i in range(150)],
                "assay__hits": [list(range(i % 4)) for i in range(150)],
                "assay__label": ["hit" if i % 5 == 0 else "miss" for i in range(150)],
            }
        ),
        key="id",
    )
    ds.add_sequences(proteins(40), bio_type="protein", alphabet="protein_20", source="plate 2")
    ds.delete([ids[0], ids[1]], reason="contaminated well")
    ds.set_state(ids[10:20], qc_status="pass")
    return ds


def ids_of(sequences: list[str]) -> list[str]:
    return [compute_id("dna", s) for s in sequences]
