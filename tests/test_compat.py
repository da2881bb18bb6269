"""`usr_es.compat`: the original USR's Python `Dataset` (pandas results) over usr_es."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from usr_es.errors import InvalidInput, SchemaError
from usr_es.registry import register_namespace, split_columns_spec

pd = pytest.importorskip("pandas")

from usr_es.compat import Dataset  # noqa: E402  (needs pandas for its results)

#: The seed README's Python snippet, as printed there, but for its import line.
SEED_SNIPPET = """\
from pathlib import Path
from usr_es.compat import Dataset

# Run from repo root.
root = Path("src/dnadesign/usr/datasets").resolve()

ds = Dataset.open(root, "densegen/demo_py")
ds.init(source="python quickstart")

result = ds.add_sequences(
    [{"sequence": "ACGTACGTAC"}],
    bio_type="dna",
    alphabet="dna_4",
    source="unit-test",
)
print(result.added)

overlay_df = ds.head(1, include_deleted=True)[["id"]].assign(mock__score=1.0)
ds.write_overlay("mock", overlay_df, key="id")

print(ds.head(3))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("USR_")}


def test_the_seed_readme_python_snippet_runs_with_only_its_import_changed(tmp_path: Path) -> None:
    root = tmp_path / "src" / "dnadesign" / "usr" / "datasets"
    register_namespace(root, "mock", split_columns_spec("mock__score:float64"))
    script = tmp_path / "snippet.py"
    script.write_text(SEED_SNIPPET)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "1"
    assert "mock__score" in done.stdout  # the printed frame (pandas may elide the middle columns)
    from usr_es import Dataset as Native

    view = Native.open(root, "densegen/demo_py").view(columns=["sequence", "mock__score"]).to_pylist()
    assert view == [{"sequence": "ACGTACGTAC", "mock__score": 1.0}]


@pytest.fixture
def ds(tmp_path: Path) -> Dataset:
    root = tmp_path / "root"
    register_namespace(root, "mock", split_columns_spec("mock__score:float64"))
    out = Dataset(root, "demo/ds")
    out.init(source="compat")
    return out


def test_reads_are_pandas_frames_and_a_missing_record_is_an_empty_one(ds: Dataset) -> None:
    ds.add_sequences(["ACGT", "GGCC"])
    head = ds.head(5)
    assert isinstance(head, pd.DataFrame)
    assert list(head["sequence"]) == ["ACGT", "GGCC"]
    assert ds.get("0" * 40).empty
    only_base = ds.head(1, include_derived=False)
    assert list(only_base.columns) == ["id", "bio_type", "sequence", "alphabet", "length", "source", "created_at"]


def test_add_sequences_with_ignore_reports_added_and_skipped(ds: Dataset) -> None:
    first = ds.add_sequences(["ACGT"])
    again = ds.add_sequences(["ACGT", "TTTT"], on_conflict="ignore")
    assert (first.added, first.skipped) == (1, 0)
    assert (again.added, again.skipped) == (1, 1)
    assert again.ids == [ds.head(5)["id"].iloc[1]]
    with pytest.raises(InvalidInput, match="created_at"):
        ds.add_sequences(["CCCC"], created_at="2026-01-01T00:00:00Z")


def test_materialize_is_maintenance_only_as_in_the_original(ds: Dataset) -> None:
    ds.add_sequences(["ACGT", "GGCC"])
    frame = ds.head(2)[["id"]].assign(mock__score=[0.5, 1.5])
    assert ds.write_overlay("mock", frame) == 2
    with pytest.raises(SchemaError, match="maintenance-only"):
        ds.materialize()
    with ds.maintenance(reason="fold scores"):
        ds.materialize()
    stored = pq.read_table(ds.records_path, columns=["mock__score"]).column(0).to_pylist()
    assert stored == [0.5, 1.5]


def test_the_actor_given_names_the_event(ds: Dataset) -> None:
    ds.add_sequences(["ACGT"], actor={"tool": "densegen", "run_id": "job-7"})
    last = ds.native.log.events()[-1]
    assert (last.actor.tool, last.actor.run_id) == ("densegen", "job-7")
    assert "USR_ACTOR_TOOL" not in os.environ  # this object's writes only, not the process's
    ds.add_sequences(["CCCC"])
    assert ds.native.log.events()[-1].actor.tool == "usr"
    with pytest.raises(SchemaError, match="tool"):
        ds.add_sequences(["GGGG"], actor={"tool": "", "run_id": "x"})


def test_without_pandas_a_read_says_how_to_get_it(tmp_path: Path, ds: Dataset) -> None:
    ds.add_sequences(["ACGT"])
    probe = (
        "import sys\n"
        "sys.modules['pandas'] = None  # as if it were not installed\n"
        "from usr_es.compat import Dataset\n"
        "from usr_es.errors import InvalidInput\n"
        f"ds = Dataset({str(ds.root)!r}, 'demo/ds')\n"
        "try:\n"
        "    ds.head(1)\n"
        "except InvalidInput as exc:\n"
        "    print(exc.hint)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr
    assert "usr_es[pandas]" in done.stdout


def test_write_overlay_part_reads_the_key_from_key_col(ds: Dataset) -> None:
    ds.add_sequences(["ACGT", "GGCC"])
    frame = pd.DataFrame({"seq": ["GGCC"], "mock__score": [2.0]})
    assert ds.write_overlay_part("mock", frame, key="sequence", key_col="seq") == 1
    assert ds.head(2)["mock__score"].tolist()[1] == 2.0


def test_import_rows_refuses_ids_that_are_not_the_computed_ones_as_the_original(ds: Dataset) -> None:
    from usr_es.alphabet import compute_id

    log = ds.events_path.read_bytes()
    wrong = [{"sequence": "ACGTAC", "id": compute_id("dna", "ACGTAC")}, {"sequence": "TTTTAAAACC", "id": "x1"}]
    for rows in (wrong, pd.DataFrame(wrong)):
        with pytest.raises(SchemaError, match=r"^'id' mismatch for 1 row\(s\); ids must equal sha1\(bio_type\|"):
            ds.import_rows(rows)
    with pytest.raises(SchemaError, match=r"missing/empty 'id' \(rows: 2\)"):
        ds.import_rows(pd.DataFrame({"sequence": ["ACGTAC", "GGCC"], "id": [compute_id("dna", "ACGTAC"), ""]}))
    with pytest.raises(SchemaError, match="'id' mismatch"):
        ds.add_sequences(wrong)
    assert ds.events_path.read_bytes() == log
    assert ds.import_rows(pd.DataFrame(wrong), strict_id_check=False) == 2  # the original ignores them then
    assert ds.head(5)["id"].tolist() == [compute_id("dna", "ACGTAC"), compute_id("dna", "TTTTAAAACC")]
    right = [{"sequence": "GGCCAA", "id": compute_id("dna", "GGCCAA")}]
    assert ds.import_rows(right) == 1
