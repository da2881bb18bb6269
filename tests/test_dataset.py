"""The Dataset API end to end: init, import, receipts, rejection, retries, rebuild, verify, replay, catch-up."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DEMO_SEQUENCES

import usr_es
from usr_es import Dataset
from usr_es.errors import (
    AlphabetError,
    ConcurrencyError,
    DatasetExists,
    DuplicateIDError,
    IntegrityError,
    InvalidInput,
    NotFound,
    ReadError,
    RegistryError,
    SchemaError,
    UsrError,
)
from usr_es.registry import load_registry
from usr_es.roots import validate_id

BASE_COLUMNS = ["id", "bio_type", "sequence", "alphabet", "length", "source", "created_at"]
NOTIFY_FIELDS = [
    "event_version",
    "timestamp_utc",
    "action",
    "dataset",
    "args",
    "metrics",
    "artifacts",
    "maintenance",
    "fingerprint",
    "registry_hash",
    "actor",
    "version",
]


def sha1_id(bio_type: str, sequence: str) -> str:
    return hashlib.sha1(f"{bio_type}|{sequence.strip()}".encode()).hexdigest()


def events(ds: Dataset) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ds.log_path.read_bytes().splitlines()]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (lock files excluded) and its bytes."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock"):
            out[str(path.relative_to(directory))] = path.read_bytes()
    return out


def all_rows(ds: Dataset) -> pa.Table:
    return ds.head(1_000_000)


def write_csv(path: Path, sequences: list[str]) -> Path:
    path.write_text("sequence\n" + "".join(f"{s}\n" for s in sequences))
    return path


# -- init --------------------------------------------------------------------------------------
def test_init_returns_receipt_for_seq_1(root: Path) -> None:
    receipt = Dataset.open(root, "demo/fresh").init(source="lab", notes="first")
    assert (receipt.seq, receipt.action, receipt.dataset, receipt.replayed) == (1, "init", "demo/fresh", False)
    assert len(receipt.hash) == 32 and len(receipt.event_id) == 32


def test_init_writes_meta_and_notify_fields(root: Path, dataset: Dataset) -> None:
    [event] = events(dataset)
    assert list(event)[: len(NOTIFY_FIELDS)] == NOTIFY_FIELDS
    assert list(event)[-1] == "hash"
    assert type(event["event_version"]) is int and event["event_version"] == 1
    assert event["action"] == "init"
    assert event["dataset"] == {"name": "demo/ds", "root": str(root.resolve())}
    assert isinstance(event["actor"]["tool"], str) and event["actor"]["tool"]
    assert isinstance(event["actor"]["run_id"], str) and event["actor"]["run_id"]
    assert event["fingerprint"] == {"rows": 0, "cols": 7, "size_bytes": dataset.records_path.stat().st_size}
    assert event["registry_hash"] == load_registry(root).hash
    assert event["version"] == usr_es.__version__
    assert event["timestamp_utc"].endswith("Z")
    assert event["seq"] == 1 and event["prev"] == "0" * 32
    meta = (dataset.dir / "meta.md").read_text()
    assert "demo/ds" in meta and "conftest" in meta
    assert dataset.head().num_rows == 0
    assert dataset.head().column_names == BASE_COLUMNS


def test_init_twice_is_rejected(dataset: Dataset) -> None:
    before = snapshot(dataset.dir)
    with pytest.raises(DatasetExists):
        Dataset.open(dataset.root, "demo/ds").init()
    assert snapshot(dataset.dir) == before


def test_init_requires_registry(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(RegistryError):
        Dataset.open(bare, "demo/ds").init()
    assert list(bare.iterdir()) == []


def test_import_before_init_is_not_found(root: Path, demo_csv: Path) -> None:
    with pytest.raises(NotFound):
        Dataset.open(root, "demo/missing").import_file(demo_csv)
    assert not (root / "demo" / "missing").exists()


# -- import ------------------------------------------------------------------------------------
def test_import_demo_csv_ids_case_and_columns(dataset: Dataset, demo_csv: Path) -> None:
    receipt = dataset.import_file(demo_csv, fmt="csv", bio_type="dna", alphabet="dna_4")
    assert receipt.metrics["rows_written"] == 6
    assert receipt.rows_written == 6 and receipt.seq == 2 and receipt.action == "import_rows"
    table = all_rows(dataset)
    assert table.column_names == BASE_COLUMNS
    assert table.column("sequence").to_pylist() == DEMO_SEQUENCES
    assert table.column("id").to_pylist() == [sha1_id("dna", s) for s in DEMO_SEQUENCES]
    assert table.column("length").to_pylist() == [len(s) for s in DEMO_SEQUENCES]
    assert set(table.column("bio_type").to_pylist()) == {"dna"}
    assert set(table.column("alphabet").to_pylist()) == {"dna_4"}
    assert set(table.column("source").to_pylist()) == {str(demo_csv)}
    [last] = events(dataset)[-1:]
    assert last["metrics"]["rows_written"] == 6


def test_import_fingerprint_matches_records_file(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    dataset.add_sequences(["ACGTACGT"], source="api")
    for event in events(dataset)[1:]:
        assert event["fingerprint"]["cols"] == 7
    last = events(dataset)[-1]
    assert last["fingerprint"] == {"rows": 7, "cols": 7, "size_bytes": dataset.records_path.stat().st_size}
    assert dataset.info().size_bytes == dataset.records_path.stat().st_size


def test_import_skip_reimport_writes_zero_rows(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    before = all_rows(dataset)
    receipt = dataset.import_file(demo_csv, on_conflict="skip")
    assert receipt.metrics == {"rows_written": 0, "rows_skipped": 6}
    assert all_rows(dataset).equals(before)
    assert dataset.verify().ok


def test_import_skip_adds_only_new_sequences(dataset: Dataset, tmp_path: Path) -> None:
    dataset.add_sequences(["AAAA", "CCCC"])
    receipt = dataset.import_file(write_csv(tmp_path / "b.csv", ["CCCC", "GGGG", "GGGG", "TTTT"]), on_conflict="skip")
    assert receipt.metrics == {"rows_written": 2, "rows_skipped": 2}
    assert all_rows(dataset).column("sequence").to_pylist() == ["AAAA", "CCCC", "GGGG", "TTTT"]


def _write_format(path: Path, fmt: str, sequences: list[str]) -> None:
    if fmt == "csv":
        path.write_text("name,sequence,score\n" + "".join(f"s{i},{s},{i}\n" for i, s in enumerate(sequences)))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"name": f"s{i}", "sequence": s}) + "\n" for i, s in enumerate(sequences)))
    elif fmt == "parquet":
        pq.write_table(pa.table({"sequence": sequences, "score": list(range(len(sequences)))}), path)
    else:
        chunks = []
        for i, s in enumerate(sequences):
            chunks.append(f">header_{i} some description\n")
            chunks.extend(s[j : j + 20] + "\n" for j in range(0, len(s), 20))  # multi-line records
        path.write_text("; a comment line\n" + "".join(chunks) + "\n")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "fasta"])
def test_import_every_format(dataset: Dataset, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"input.{fmt}"
    _write_format(path, fmt, DEMO_SEQUENCES)
    receipt = dataset.import_file(path, fmt=fmt)  # type: ignore[arg-type]
    assert receipt.rows_written == len(DEMO_SEQUENCES)
    table = all_rows(dataset)
    assert table.column_names == BASE_COLUMNS
    assert table.column("sequence").to_pylist() == DEMO_SEQUENCES
    assert table.column("id").to_pylist() == [sha1_id("dna", s) for s in DEMO_SEQUENCES]
    assert not any("header" in str(v) for col in table.columns for v in col.to_pylist())
    assert dataset.verify().ok


def test_import_fasta_rejects_sequence_before_header(dataset: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "bad.fasta"
    path.write_text("ACGT\n>h\nACGT\n")
    with pytest.raises(InvalidInput):
        dataset.import_file(path, fmt="fasta")


def test_add_sequences_accepts_strings_dicts_and_tables(dataset: Dataset) -> None:
    dataset.add_sequences(["AAAA"])
    dataset.add_sequences([{"sequence": "CCCC", "other": 1}])
    dataset.add_sequences(pa.table({"sequence": ["GGGG"]}))
    dataset.add_sequences(pa.table({"sequence": ["ACGU"], "bio_type": ["rna"], "alphabet": ["rna_4"]}), bio_type="dna")
    table = all_rows(dataset)
    assert table.column("sequence").to_pylist() == ["AAAA", "CCCC", "GGGG", "ACGU"]
    assert table.column("bio_type").to_pylist() == ["dna", "dna", "dna", "rna"]
    assert dataset.verify().ok


def test_unqualified_name_resolves_to_existing_dataset(dataset: Dataset) -> None:
    assert Dataset.open(dataset.root, "ds").name == "demo/ds"


# -- rejection leaves the log alone -------------------------------------------------------------
REJECTIONS: dict[str, tuple[type[UsrError], Callable[[Dataset, Path], object]]] = {
    "duplicate": (DuplicateIDError, lambda ds, csv: ds.import_file(csv)),
    "bad_alphabet": (AlphabetError, lambda ds, csv: ds.import_file(csv, alphabet="protein_20")),
    "bad_bio_type": (SchemaError, lambda ds, csv: ds.import_file(csv, bio_type="DNA")),
    "bad_characters": (AlphabetError, lambda ds, csv: ds.add_sequences(["ACGTN"])),
    "blank_sequence": (SchemaError, lambda ds, csv: ds.add_sequences(["ACGT", "  "])),
    "missing_file": (NotFound, lambda ds, csv: ds.import_file(csv.with_name("nope.csv"))),
    "bad_format": (InvalidInput, lambda ds, csv: ds.import_file(csv, fmt="xml")),  # type: ignore[arg-type]
    "no_sequence_column": (SchemaError, lambda ds, csv: ds.add_sequences([{"seq": "ACGT"}])),
    "init_again": (DatasetExists, lambda ds, csv: ds.init()),
    "stale_expected_seq": (ConcurrencyError, lambda ds, csv: ds.add_sequences(["TTTT"], expected_seq=1)),
    "bad_command_id": (InvalidInput, lambda ds, csv: ds.add_sequences(["TTTT"], command_id="no spaces allowed")),
}


@pytest.mark.parametrize("kind", sorted(REJECTIONS))
def test_rejected_command_leaves_dataset_unchanged(dataset: Dataset, demo_csv: Path, kind: str) -> None:
    dataset.import_file(demo_csv)
    before = snapshot(dataset.dir)
    error, action = REJECTIONS[kind]
    with pytest.raises(error):
        action(dataset, demo_csv)
    assert snapshot(dataset.dir) == before
    assert dataset.verify().ok


# -- retries and concurrency --------------------------------------------------------------------
def test_retry_with_command_id_is_idempotent(dataset: Dataset, demo_csv: Path) -> None:
    first = dataset.import_file(demo_csv, command_id="batch-1")
    log = dataset.log_path.read_bytes()
    again = dataset.import_file(demo_csv, command_id="batch-1")
    assert again.replayed is True and first.replayed is False
    assert (again.seq, again.event_id, again.hash, again.metrics) == (
        first.seq,
        first.event_id,
        first.hash,
        first.metrics,
    )
    assert dataset.log_path.read_bytes() == log
    other = dataset.add_sequences(["GGGGCCCC"], command_id="batch-1")
    assert other.replayed is True and other.seq == first.seq
    assert dataset.log_path.read_bytes() == log
    assert events(dataset)[-1]["command_id"] == "batch-1"


def test_retry_of_init_with_command_id_returns_original(root: Path) -> None:
    ds = Dataset.open(root, "demo/retry")
    first = ds.init(command_id="init-1")
    again = ds.init(command_id="init-1")
    assert again.replayed is True and again.event_id == first.event_id
    assert len(events(ds)) == 1


def test_expected_seq_guards_writes(dataset: Dataset, demo_csv: Path) -> None:
    receipt = dataset.import_file(demo_csv, expected_seq=1)
    assert receipt.seq == 2
    log = dataset.log_path.read_bytes()
    with pytest.raises(ConcurrencyError):
        dataset.add_sequences(["TTTTT"], expected_seq=1)
    assert dataset.log_path.read_bytes() == log
    assert dataset.add_sequences(["TTTTT"], expected_seq=2).seq == 3


# -- rebuild and verify -------------------------------------------------------------------------
def test_rebuild_after_deleting_records_is_byte_identical(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    dataset.add_sequences(["ACGTTT", "ggccaa"], source="api")
    original = dataset.records_path.read_bytes()
    dataset.records_path.unlink()
    result = dataset.maintenance.rebuild()
    assert result.seq == 3 and result.rows == 8
    assert dataset.records_path.read_bytes() == original
    assert dataset.verify().ok
    dataset.maintenance.rebuild()
    assert dataset.records_path.read_bytes() == original


def test_verify_reports_ok_with_counts(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    report = dataset.verify()
    assert report.ok and report.problems == []
    assert report.seq == 2 and report.lines == 2 and report.payloads_checked == 1
    assert report.verdict.startswith("OK")


def test_verify_names_line_with_flipped_byte(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    dataset.add_sequences(["TTTTGGGG"])
    data = bytearray(dataset.log_path.read_bytes())
    lines = bytes(data).split(b"\n")
    start = len(lines[0]) + 1
    position = start + lines[1].index(b'"import_rows"') + 3
    data[position] ^= 0x20  # change the case of one letter: valid JSON, wrong hash
    dataset.log_path.write_bytes(bytes(data))
    report = dataset.verify()
    assert not report.ok
    assert "line 2" in report.problems[0]
    assert report.verdict.startswith("FAILED")
    before = dataset.log_path.read_bytes()
    with pytest.raises(IntegrityError):
        dataset.add_sequences(["CCCCAAAA"])
    assert dataset.log_path.read_bytes() == before


def test_verify_detects_foreign_records_file(root: Path, dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    other = Dataset.open(root, "demo/other")
    other.init()
    other.add_sequences(["ACGT"])
    shutil.copyfile(other.records_path, dataset.records_path)
    report = dataset.verify()
    assert not report.ok
    assert "records.parquet" in report.problems[0]


def test_verify_detects_missing_payload(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    (dataset.dir / events(dataset)[-1]["payload"]["file"]).unlink()
    report = dataset.verify()
    assert not report.ok
    assert "payload" in report.problems[0]


def test_verify_fix_rewrites_differing_and_missing_files_from_the_log(
    root: Path, dataset: Dataset, demo_csv: Path
) -> None:
    dataset.import_file(demo_csv)
    original = dataset.records_path.read_bytes()
    log_before = dataset.log_path.read_bytes()
    other = Dataset.open(root, "demo/other")
    other.init()
    other.add_sequences(["ACGT"])
    shutil.copyfile(other.records_path, dataset.records_path)
    assert dataset.verify().differing == ["records.parquet"]
    assert dataset.records_path.read_bytes() != original  # reporting alone changed nothing
    report = dataset.verify(fix=True)
    assert report.ok and report.repaired == ["records.parquet"] and report.problems == []
    assert dataset.records_path.read_bytes() == original
    assert dataset.log_path.read_bytes() == log_before
    dataset.records_path.unlink()
    assert dataset.verify(fix=True).repaired == ["records.parquet"]
    assert dataset.records_path.read_bytes() == original
    assert dataset.verify(fix=True).repaired == []


def test_verify_fix_leaves_a_damaged_log_alone(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    (dataset.dir / events(dataset)[-1]["payload"]["file"]).unlink()
    records = dataset.records_path.read_bytes()
    report = dataset.verify(fix=True)
    assert not report.ok and not report.log_ok and report.repaired == []
    assert "payload" in report.problems[0]
    assert dataset.records_path.read_bytes() == records


# -- replay -------------------------------------------------------------------------------------
@pytest.mark.parametrize("until_kind", ["seq", "event_id", "timestamp", "timestamp_offset"])
def test_replay_until_writes_past_dataset(dataset: Dataset, tmp_path: Path, until_kind: str) -> None:
    dataset.add_sequences(["AAAA", "CCCC"])
    at_two = dataset.records_path.read_bytes()
    dataset.add_sequences(["GGGG"])
    live = snapshot(dataset.dir)
    second = events(dataset)[1]
    until: str | int = {
        "seq": 2,
        "event_id": second["event_id"],
        "timestamp": second["timestamp_utc"],
        "timestamp_offset": second["timestamp_utc"].replace("Z", "+00:00"),
    }[until_kind]
    out = tmp_path / "past"
    result = dataset.log.replay(until, out)
    assert result.seq == 2 and result.rows == 2 and result.event_id == second["event_id"]
    past = Dataset.at(out)
    assert past.verify().ok
    assert all_rows(past).column("sequence").to_pylist() == ["AAAA", "CCCC"]
    assert past.info().head_seq == 2
    assert (out / "records.parquet").read_bytes() == at_two
    assert snapshot(dataset.dir) == live
    assert all_rows(dataset).num_rows == 3


def test_replay_until_unknown_targets(dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        dataset.log.replay(7, tmp_path / "a")
    with pytest.raises(NotFound):
        dataset.log.replay("f" * 32, tmp_path / "b")
    with pytest.raises(NotFound):
        dataset.log.replay("2000-01-01T00:00:00Z", tmp_path / "c")
    with pytest.raises(InvalidInput):
        dataset.log.replay("yesterday", tmp_path / "d")


def test_replay_into_non_empty_directory_is_rejected(dataset: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetExists):
        dataset.log.replay(1, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_replay_into_a_file_is_invalid_input_and_writes_nothing(dataset: Dataset, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    before = sorted(tmp_path.iterdir())
    for out in (afile, afile / "sub"):
        with pytest.raises(InvalidInput, match="is a file, not a directory"):
            dataset.log.replay(1, out)
    assert afile.read_text() == "mine" and sorted(tmp_path.iterdir()) == before


def test_a_replayed_dataset_takes_writes_once_its_root_has_a_registry(dataset: Dataset, tmp_path: Path) -> None:
    from usr_es.errors import RegistryError

    dataset.add_sequences(["AAAA"])
    past = Dataset.at(dataset.log.replay(1, tmp_path / "past").out)
    assert past.head().num_rows == 0
    with pytest.raises(RegistryError):  # every mutation needs the root's registry.yaml, as in the original
        past.add_sequences(["TTTT"])
    shutil.copy(dataset.root / "registry.yaml", past.root / "registry.yaml")
    past.add_sequences(["TTTT"])
    assert all_rows(past).column("sequence").to_pylist() == ["TTTT"]
    assert past.verify().ok


# -- lagging projections ------------------------------------------------------------------------
def _lagging(dataset: Dataset) -> tuple[bytes, bytes]:
    """Import twice, then put back the records.parquet of the first import. Returns (old, current)."""
    dataset.add_sequences(["AAAA", "CCCC"])
    old = dataset.records_path.read_bytes()
    dataset.add_sequences(["GGGG"])
    current = dataset.records_path.read_bytes()
    dataset.records_path.write_bytes(old)
    return old, current


def test_lagging_projection_caught_up_by_info(dataset: Dataset) -> None:
    _, current = _lagging(dataset)
    info = dataset.info()
    assert info.rows == 3 and info.projection_lag == 1 and info.projection_seq == 3 and info.head_seq == 3
    assert dataset.records_path.read_bytes() == current
    assert dataset.info().projection_lag == 0
    assert dataset.verify().ok


def test_lagging_projection_caught_up_by_head(dataset: Dataset) -> None:
    _, current = _lagging(dataset)
    assert all_rows(dataset).column("sequence").to_pylist() == ["AAAA", "CCCC", "GGGG"]
    assert dataset.records_path.read_bytes() == current


def test_lagging_projection_caught_up_by_next_write(dataset: Dataset) -> None:
    _lagging(dataset)
    receipt = dataset.add_sequences(["TTTT"])
    assert receipt.seq == 4
    assert any("caught up" in w for w in receipt.warnings)
    assert all_rows(dataset).column("sequence").to_pylist() == ["AAAA", "CCCC", "GGGG", "TTTT"]
    assert dataset.verify().ok


def test_lagging_projection_still_rejects_known_ids(dataset: Dataset) -> None:
    _lagging(dataset)
    with pytest.raises(DuplicateIDError):
        dataset.add_sequences(["GGGG"])


def test_missing_projection_rebuilt_by_next_read(dataset: Dataset) -> None:
    dataset.add_sequences(["AAAA"])
    current = dataset.records_path.read_bytes()
    dataset.records_path.unlink()
    assert all_rows(dataset).column("sequence").to_pylist() == ["AAAA"]
    assert dataset.records_path.read_bytes() == current


# -- reads --------------------------------------------------------------------------------------
def test_head_limits_rows_and_columns(dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    table = dataset.head(2, columns=["sequence", "id"])
    assert table.column_names == ["sequence", "id"]
    assert table.column("sequence").to_pylist() == DEMO_SEQUENCES[:2]
    assert dataset.head(0).num_rows == 0
    with pytest.raises(InvalidInput):
        dataset.head(2, columns=["nope"])
    with pytest.raises(InvalidInput):
        dataset.head(-1)


def test_schema_lists_base_columns(dataset: Dataset) -> None:
    columns = {c.name: c.type for c in dataset.schema()}
    assert columns == {
        "id": "string",
        "bio_type": "string",
        "sequence": "string",
        "alphabet": "string",
        "length": "int32",
        "source": "string",
        "created_at": "timestamp[us, UTC]",
    }


def test_events_returns_records_in_log_order(dataset: Dataset) -> None:
    dataset.add_sequences(["AAAA"])
    records = dataset.log.events()
    assert [r.seq for r in records] == [1, 2]
    assert [r.action for r in dataset.log.events(n=1)] == ["import_rows"]


def test_list_all_summarises_datasets(root: Path, dataset: Dataset, demo_csv: Path) -> None:
    dataset.import_file(demo_csv)
    Dataset.open(root, "solo").init()
    summaries = {s.dataset: s for s in Dataset.list_all(root)}
    assert set(summaries) == {"demo/ds", "solo"}
    assert summaries["demo/ds"].rows == 6 and summaries["demo/ds"].head_seq == 2


def test_list_all_lists_a_dataset_it_cannot_read_as_an_error_and_goes_on(
    root: Path, dataset: Dataset, demo_csv: Path
) -> None:
    from usr_es.fileio import FILE_MODE, FileOps, use_fileops

    dataset.import_file(demo_csv)
    Dataset.open(root, "solo").init()
    dataset.records_path.unlink()  # a lagging base: listing it catches up under the lock

    class ReadOnly(FileOps):  # storage mounted read-only: the lock file cannot be opened for writing
        def open(self, path: Path, flags: int, mode: int = FILE_MODE) -> int:
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(30, "Read-only file system", str(path))
            return super().open(path, flags, mode)

    with use_fileops(ReadOnly()):
        summaries = {s.dataset: s for s in Dataset.list_all(root)}
    assert summaries["demo/ds"].status == "error"
    assert summaries["demo/ds"].error == "info of demo/ds failed: Read-only file system"
    assert (summaries["solo"].status, summaries["solo"].head_seq) == ("ok", 1)


def test_missing_dataset_reads_are_not_found(root: Path) -> None:
    ds = Dataset.open(root, "demo/ghost")
    for read in (ds.info, ds.head, ds.verify, ds.maintenance.rebuild, ds.log.events):
        with pytest.raises(NotFound):
            read()


# -- dataset ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a\x00b", "a/b/c", "ns/..", "..", "x/../../y", ""])
def test_dataset_ids_cannot_escape_root(bad: str) -> None:
    with pytest.raises(InvalidInput):
        validate_id(bad)


@pytest.mark.parametrize("bad", ["a//b", "a\x00b", "a/b/c", "ns/..", "x/../../y", "ns/.hidden"])
def test_dataset_open_rejects_invalid_ids(root: Path, bad: str) -> None:
    with pytest.raises(InvalidInput):
        Dataset.open(root, bad)


@pytest.mark.parametrize("bad", ["../x", "/abs"])
def test_path_like_ids_never_create_datasets_outside_root(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.chdir(root)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UsrError):
        Dataset.open(root, bad).init()
    assert sorted(os.listdir(tmp_path)) == before
    assert not Path(bad).is_absolute() or not Path(bad).exists()


# -- reads under a concurrent writer ------------------------------------------------------------
def test_a_read_that_fails_while_a_writer_publishes_is_read_again(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usr_es import reads

    dataset.add_sequences(["ACGTACGT", "TTTTCCCC"])
    real = reads.view
    calls = []

    def torn_read(*args: Any, **kwargs: Any) -> pa.Table:
        calls.append(1)
        if len(calls) == 1:  # a writer replaces the base while this read has half of it
            dataset.add_sequences(["GGGGAAAA"])
            raise OSError("Unexpected end of stream: Page was smaller than expected")
        return real(*args, **kwargs)

    monkeypatch.setattr(reads, "view", torn_read)
    assert dataset.view().num_rows == 3 and len(calls) == 2


def test_a_read_failure_with_no_writer_is_a_read_error_not_an_os_error(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usr_es import reads

    dataset.add_sequences(["ACGTACGT"])

    def broken(*args: Any, **kwargs: Any) -> pa.Table:
        raise pa.ArrowInvalid("Parquet magic bytes not found in footer")

    monkeypatch.setattr(reads, "head", broken)
    with pytest.raises(ReadError) as caught:
        dataset.head(1)
    assert "head of demo/" in str(caught.value) and "magic bytes" in str(caught.value)
    assert caught.value.exit_code == 7


# -- a projection written by another version ------------------------------------------------------
def _stamp_projector(path: Path, version: str) -> None:
    """Rewrite a Parquet projection as another projector version would have (same rows, same watermark)."""
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    meta[b"usr_es:projector"] = version.encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


@pytest.mark.parametrize("refresh", ["read", "write"])
def test_a_projection_from_another_version_is_a_stale_cache_not_corruption(
    dataset: Dataset, capsys: pytest.CaptureFixture[str], refresh: str
) -> None:
    from usr_es.cli import main

    dataset.add_sequences(["ACGTACGT", "TTTTCCCC"])
    expected = dataset.records_path.read_bytes()
    _stamp_projector(dataset.records_path, "2")
    report = dataset.verify()
    assert not report.ok and report.stale == ["records.parquet"] and report.only_stale
    assert "stale cache" in report.problems[0] and "projector version 2" in report.problems[0]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["--root", str(dataset.root), "verify", dataset.name])
    assert exited.value.code == 8 and "FAILED" in capsys.readouterr().out
    if refresh == "read":
        assert dataset.head(5).num_rows == 2  # reads keep working (and re-encode the cache)
    else:
        dataset.add_sequences(["GGGGAAAA"])
        expected = None
    assert dataset.verify().ok
    if expected is not None:
        assert dataset.records_path.read_bytes() == expected


def test_verify_detects_a_frozen_registry_edited_without_changing_what_it_parses_to(
    dataset: Dataset, demo_csv: Path
) -> None:
    dataset.import_file(demo_csv)
    (frozen,) = (dataset.dir / "_registry").glob("registry.*.yaml")
    frozen.write_bytes(frozen.read_bytes() + b"\n# a comment\n")
    report = dataset.verify()
    assert not report.ok and "does not match its hash" in report.problems[0]


def test_verify_reports_a_base_whose_footer_writer_field_no_longer_decodes(dataset: Dataset) -> None:
    dataset.add_sequences(["ACGTACGT"])
    data = bytearray(dataset.records_path.read_bytes())
    at = data.rindex(b"parquet-cpp-arrow version")
    data[at] = 0xF6  # not UTF-8: pyarrow raises UnicodeDecodeError reading `created_by`
    dataset.records_path.write_bytes(bytes(data))
    report = dataset.verify()
    assert not report.ok and "records.parquet" in report.problems[0]


@pytest.mark.parametrize("name", ["/tmp/a\x00b", "./x\x00", "a\x00b"])
def test_a_dataset_id_or_path_with_a_nul_byte_is_refused_as_invalid_input(tmp_path: Path, name: str) -> None:
    from usr_es.errors import InvalidInput

    with pytest.raises(InvalidInput, match="NUL"):
        Dataset.open(tmp_path, name).init()
    with pytest.raises(InvalidInput, match="NUL"):
        Dataset.at(name)


def test_a_dataset_id_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    from usr_es.errors import InvalidInput

    with pytest.raises(InvalidInput, match="Invalid dataset id"):
        Dataset.open(tmp_path, "demo/ds\n").init()
    assert not any(tmp_path.rglob("*"))


def test_a_namespace_or_command_id_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    from usr_es.errors import InvalidInput, NamespaceError
    from usr_es.registry import register_namespace, split_columns_spec

    with pytest.raises(NamespaceError, match="Invalid namespace"):
        register_namespace(tmp_path, "mock\n", split_columns_spec("score:float64"))
    register_namespace(tmp_path, "mock", split_columns_spec("mock__score:float64"))
    ds = Dataset.open(tmp_path, "demo/ds")
    with pytest.raises(InvalidInput, match="Invalid command id"):
        ds.init(command_id="job-1\n")


def test_replay_and_info_count_rows_alike_and_info_says_what_lags(dataset: Dataset, tmp_path: Path) -> None:
    dataset.add_sequences(["ACGT", "GGCC", "TTAA"])
    ids = dataset.head(3).column("id").to_pylist()
    receipt = dataset.delete([ids[0]], reason="bad")  # touches an overlay, not records.parquet
    info = dataset.info()
    replayed = dataset.log.replay(receipt.seq, tmp_path / "then")
    assert (info.rows, info.deleted) == (2, 1)
    assert (replayed.rows, replayed.deleted) == (2, 1)
    assert (info.head_seq, info.projection_seq, info.projection_lag, info.base_seq) == (3, 3, 0, 2)


@pytest.mark.parametrize(("keep", "left"), [(None, 5), ("2", 2), ("0", 7)])
def test_snapshot_copies_are_pruned_to_the_newest_but_checkpoints_are_kept(
    dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: str | None, left: int
) -> None:
    if keep is not None:
        monkeypatch.setenv("USR_SNAPSHOT_KEEP", keep)
    names = []
    for k in range(7):
        dataset.add_sequences([f"ACGT{'A' * (k + 1)}"])
        names.append(dataset.maintenance.snapshot().seq)
    copies = sorted(p.name for p in (dataset.dir / "_snapshots").glob("records-*.parquet"))
    assert len(copies) == left
    from usr_es.checkpoints import list_checkpoints

    checkpoints = [seq for seq, _ in list_checkpoints(dataset.dir)]
    assert checkpoints == names  # every checkpoint stays: replay may start from any of them
    old = dataset.log.replay(names[0], tmp_path / "old")
    assert old.from_checkpoint == names[0] and old.rows == 1
