"""The one write path: a command emitting several events, and the automatic checkpoint policy."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import usr_es.decide as decide_module
from usr_es import CommitError, Dataset
from usr_es.decide import Decision, Emit
from usr_es.errors import AlphabetError, DuplicateIDError
from usr_es.events import RecordsTombstoned, StateSet
from usr_es.fileio import FileOps, use_fileops
from usr_es.names import LOG_FILE


def _with_tombstone(real: Any) -> Any:
    """A `decide` whose SetState decisions also tombstone the same ids, in a second event."""

    def decide(state: Any, command: Any, **kwargs: Any) -> Decision:
        decision: Decision = real(state, command, **kwargs)
        first = decision.only
        if not isinstance(first.event, StateSet):
            return decision
        event = RecordsTombstoned(
            ids=first.event.ids, rows=first.event.rows, created_at=first.event.created_at, reason="bundled"
        )
        second = Emit(event, None, {"reason": "bundled"}, {"rows_written": first.event.rows})
        return Decision((first, second))

    return decide


@pytest.fixture
def three(dataset: Dataset) -> tuple[Dataset, list[str]]:
    dataset.add_sequences(["ACGTACGT", "TTGACCAA", "GGGCCCAT"])
    ids = dataset.head(3, columns=["id"]).column("id").to_pylist()
    return dataset, ids


def test_a_command_with_two_events_appends_two_chained_lines_at_once(three: tuple[Dataset, list[str]]) -> None:
    ds, ids = three
    before = ds.log.events()
    with mock.patch.object(decide_module, "decide", _with_tombstone(decide_module.decide)):
        receipt = ds.set_state([ids[0]], qc_status="pass", command_id="bundle-1")
    events = ds.log.events()
    added = events[len(before) :]
    assert [e.action for e in added] == ["state_set", "tombstone"]
    assert [e.seq for e in added] == [before[-1].seq + 1, before[-1].seq + 2]
    assert {e.command_id for e in added} == {"bundle-1"}
    assert added[0].prev == before[-1].hash and added[1].prev == added[0].hash
    assert receipt.seq == added[-1].seq and receipt.hash == added[-1].hash
    # Both events reached the projections: the record is hidden, and its state is set.
    assert ids[0] not in ds.view(columns=["id"]).column("id").to_pylist()
    state = ds.get([ids[0]], columns=["usr_state__qc_status", "usr__deleted"], include_deleted=True)
    assert state.to_pylist() == [{"usr_state__qc_status": "pass", "usr__deleted": True}]
    report = ds.verify()
    assert report.ok, report.problems


def test_each_line_of_a_group_carries_the_fields_the_notify_watcher_reads(three: tuple[Dataset, list[str]]) -> None:
    ds, ids = three
    with mock.patch.object(decide_module, "decide", _with_tombstone(decide_module.decide)):
        ds.set_state([ids[1]], split="train")
    lines = (ds.dir / LOG_FILE).read_bytes().splitlines()[-2:]
    for raw in lines:
        doc = json.loads(raw)
        assert doc["event_version"] == 1
        assert doc["dataset"]["name"] == ds.name
        assert doc["actor"]["tool"]
        assert doc["action"] in ("state_set", "tombstone")


def test_a_retried_group_returns_the_receipt_of_its_last_line(three: tuple[Dataset, list[str]]) -> None:
    ds, ids = three
    with mock.patch.object(decide_module, "decide", _with_tombstone(decide_module.decide)):
        first = ds.set_state([ids[2]], masked=True, command_id="bundle-2")
        again = ds.set_state([ids[2]], masked=True, command_id="bundle-2")
    assert again.replayed and (again.seq, again.hash) == (first.seq, first.hash)
    assert len(ds.log.events()) == first.seq


def test_rebuild_after_a_group_gives_the_files_the_live_write_published(three: tuple[Dataset, list[str]]) -> None:
    ds, ids = three
    with mock.patch.object(decide_module, "decide", _with_tombstone(decide_module.decide)):
        ds.set_state(ids[:2], qc_status="warn")
    live = {p: p.read_bytes() for p in ds.dir.rglob("*.parquet") if "_snapshots" not in p.parts}
    ds.maintenance.rebuild()
    rebuilt = {p: p.read_bytes() for p in ds.dir.rglob("*.parquet") if "_snapshots" not in p.parts}
    assert rebuilt == live


def _checkpoint_seqs(ds: Dataset) -> list[int]:
    return ds.info().checkpoints


def _payload_sizes(ds: Dataset) -> list[int]:
    return [e.payload.size_bytes for e in ds.log.events() if e.payload is not None]


def test_payload_bytes_since_the_last_checkpoint_trigger_the_next_one(root: Path) -> None:
    batches = [[f"ACGT{'A' * i}{'C' * j}" for j in range(40)] for i in range(1, 5)]
    learn = Dataset.open(root, "demo/learn")
    learn.init()
    with mock.patch.dict(os.environ, {"USR_CHECKPOINT_EVERY": "0", "USR_CHECKPOINT_BYTES": "0"}):
        for batch in batches:
            learn.add_sequences(batch)
    sizes = _payload_sizes(learn)
    assert _checkpoint_seqs(learn) == []
    limit = sizes[0] + sizes[1]  # reached by the second import, not again by the third alone
    assert sizes[2] < limit
    ds = Dataset.open(root, "demo/ds")
    ds.init()
    with mock.patch.dict(os.environ, {"USR_CHECKPOINT_EVERY": "0", "USR_CHECKPOINT_BYTES": str(limit)}):
        ds.add_sequences(batches[0])
        assert _checkpoint_seqs(ds) == []
        second = ds.add_sequences(batches[1])
        assert _checkpoint_seqs(ds) == [second.seq]
        ds.delete([ds.head(1, columns=["id"]).column("id")[0].as_py()])  # no payload: no checkpoint
        ds.add_sequences(batches[2])
        assert _checkpoint_seqs(ds) == [second.seq]
        fourth = ds.add_sequences(batches[3])
    expected = [second.seq, fourth.seq] if sizes[2] + sizes[3] >= limit else [second.seq]
    assert _checkpoint_seqs(ds) == expected
    manifest = msgspec.json.decode(
        (ds.dir / "_snapshots" / f"checkpoint-{second.seq:010d}" / "manifest.json").read_bytes()
    )
    assert manifest["seq"] == second.seq and manifest["hash"] == second.hash


class _FailingUnlink(FileOps):
    """Fails the first unlink of an overlay part file."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: list[Path] = []

    def unlink(self, path: Path) -> None:
        if not self.failed and path.suffix == ".parquet" and "_derived" in path.parts:
            self.failed.append(path)
            raise OSError(errno.EIO, "injected unlink failure")
        super().unlink(path)


def test_a_part_left_behind_by_a_failed_unlink_is_removed_by_the_next_write(three: tuple[Dataset, list[str]]) -> None:
    ds, ids = three
    ds.set_state([ids[0]], split="train")
    ds.set_state([ids[1]], split="test")
    faulty = _FailingUnlink()
    with use_fileops(faulty), pytest.raises(CommitError) as failure:
        ds.maintenance.compact_overlay("usr_state")
    assert failure.value.state == "COMMITTED" and faulty.failed
    assert faulty.failed[0].exists()
    receipt = ds.set_state([ids[2]], split="val")
    assert any("caught up _derived/" in w for w in receipt.warnings)
    assert not faulty.failed[0].exists()
    report = ds.verify()
    assert report.ok, report.problems


# -- records.parquet grows in place (docs/adr/0013) ------------------------------------------------
def _dna(tag: str, n: int) -> list[str]:
    import random

    rng = random.Random(tag)
    return ["".join(rng.choice("ACGT") for _ in range(30)) for _ in range(n)]


def test_an_import_leaves_a_reader_of_the_earlier_file_reading_the_earlier_rows(dataset: Dataset) -> None:
    import pyarrow.parquet as pq

    dataset.add_sequences(_dna("first", 50))
    before = pq.ParquetFile(dataset.dir / "records.parquet")  # opened (footer read) before the next import
    dataset.add_sequences(_dna("second", 20))
    assert before.read().num_rows == 50
    assert pq.read_table(dataset.dir / "records.parquet").num_rows == 70
    assert dataset.verify().ok


def test_rebuild_after_imports_gives_the_bytes_they_published(dataset: Dataset) -> None:
    for k in range(4):
        dataset.add_sequences(_dna(f"batch-{k}", 40))
    published = (dataset.dir / "records.parquet").read_bytes()
    (dataset.dir / "records.parquet").unlink()
    dataset.maintenance.rebuild()
    assert (dataset.dir / "records.parquet").read_bytes() == published


def test_an_append_cut_short_is_cut_back_and_caught_up_by_the_next_command(dataset: Dataset) -> None:
    dataset.add_sequences(_dna("first", 60))
    committed = (dataset.dir / "records.parquet").stat().st_size
    dataset.add_sequences(_dna("second", 60))
    path = dataset.dir / "records.parquet"
    whole = path.stat().st_size
    with path.open("r+b") as fh:  # a crash while the second import's rows were being appended
        fh.truncate(committed + (whole - committed) // 2)
    receipt = dataset.add_sequences(_dna("third", 10))
    assert any("interrupted append" in w for w in receipt.warnings), receipt.warnings
    assert dataset.info().rows == 130
    assert dataset.verify().ok


def test_a_snapshot_keeps_its_rows_while_the_dataset_grows(dataset: Dataset) -> None:
    import pyarrow.parquet as pq

    dataset.add_sequences(_dna("first", 30))
    dataset.maintenance.snapshot()
    dataset.add_sequences(_dna("second", 30))
    copies = sorted((dataset.dir / "_snapshots").glob("*.parquet"))
    assert [pq.read_table(p).num_rows for p in copies] == [30]
    assert dataset.info().rows == 60 and dataset.verify().ok


def test_many_small_imports_keep_records_parquet_within_twice_what_its_rows_need(dataset: Dataset) -> None:
    import pyarrow.parquet as pq

    for k in range(40):
        dataset.add_sequences(_dna(f"small-{k}", 5))
    path = dataset.dir / "records.parquet"
    whole = pq.read_table(path)
    compact = Path(dataset.dir / "compact.parquet")
    pq.write_table(whole, compact, compression="zstd")
    assert whole.num_rows == 200
    assert path.stat().st_size <= 2 * compact.stat().st_size + 64 * 1024
    compact.unlink()
    assert dataset.verify().ok


class _Truncations(FileOps):
    """Records every size records.parquet is cut to (a cut below its size would rewrite its bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: dict[int, Path] = {}
        self.cuts: list[tuple[int, int]] = []  # (size before, size after)

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        self.paths[fd] = path
        return fd

    def truncate(self, fd: int, size: int) -> None:
        if self.paths.get(fd, Path()).name == "records.parquet":
            self.cuts.append((os.fstat(fd).st_size, size))
        super().truncate(fd, size)


class _InterruptAfterAppend(FileOps):
    def point(self, name: str) -> None:
        if name == "after_append":
            raise KeyboardInterrupt


def test_a_write_after_a_catch_up_never_cuts_back_the_file_the_catch_up_grew(dataset: Dataset) -> None:
    from usr_es.errors import Interrupted

    dataset.add_sequences(_dna("first", 40))
    with use_fileops(_InterruptAfterAppend()), pytest.raises(Interrupted):
        dataset.add_sequences(_dna("lagging", 40))  # committed; records.parquet lags it
    recorder = _Truncations()
    with use_fileops(recorder):
        dataset.add_sequences(_dna("next", 40))  # catches the lagging import up, then appends its own rows
    assert recorder.cuts == []
    assert dataset.info().rows == 120 and dataset.verify().ok


def test_an_import_of_many_rows_into_a_dataset_checks_them_all_against_the_index(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usr_es import projections
    from usr_es.errors import DuplicateIDError

    monkeypatch.setattr(projections, "_SEARCHED_IDS", 0)  # the hashed pass that large imports take
    first = _dna("first", 30)
    dataset.add_sequences(first)
    assert dataset.add_sequences(_dna("second", 30)).metrics["rows_written"] == 30
    with pytest.raises(DuplicateIDError):
        dataset.add_sequences([*_dna("third", 5), first[7]])
    assert dataset.add_sequences([*_dna("third", 5), first[7]], on_conflict="skip").metrics["rows_written"] == 5


# -- imports larger than memory: decided a batch at a time, spooled, appended from a scratch file -----------
def _small_batches(patch: pytest.MonkeyPatch, rows: int = 4) -> None:
    """Batches of `rows` input rows, and every appended row group spilled to a scratch file."""
    patch.setattr(decide_module, "IMPORT_BATCH_ROWS", rows)
    patch.setattr(decide_module, "ATTACH_BATCH_ROWS", rows)
    patch.setattr("usr_es.codec.SPILL_BYTES", 0)


def _temps(ds: Dataset) -> list[str]:
    return sorted(str(p.relative_to(ds.dir)) for p in ds.dir.rglob(".tmp-*"))


def test_an_import_of_many_batches_keeps_the_first_of_each_sequence_and_rebuilds_byte_identical(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _small_batches(monkeypatch)
    dataset.add_sequences(["ACGTAC", "GGGGCC"])
    sequences = ["TTTTAA", "ACGTAC", "CCCCAA", "TTTTAA", "GATTACA", "CCCCAA", "AAAAAC", "GATTACA", "TGCATG"]
    path = tmp_path / "in.csv"
    path.write_text("sequence\n" + "\n".join(sequences) + "\n")
    receipt = dataset.import_file(path, on_conflict="skip")
    assert receipt.metrics == {"rows_written": 5, "rows_skipped": 4}
    stored = dataset.view(columns=["sequence"]).column("sequence").to_pylist()
    assert stored == ["ACGTAC", "GGGGCC", "TTTTAA", "CCCCAA", "GATTACA", "AAAAAC", "TGCATG"]
    assert _temps(dataset) == []
    files = {p: p.read_bytes() for p in dataset.dir.rglob("*") if p.is_file() and p.suffix in (".parquet", ".arrow")}
    report = dataset.verify()
    assert report.ok and not report.behind, report.problems
    dataset.maintenance.rebuild()
    assert {p: p.read_bytes() for p in files} == files


def test_an_import_repeating_a_sequence_across_batches_is_refused_and_leaves_nothing(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_batches(monkeypatch, rows=2)
    dataset.add_sequences(["ACGTAC"])
    log = (dataset.dir / LOG_FILE).read_bytes()
    with pytest.raises(DuplicateIDError, match=r"rows 2,5 'CCCCAA'"):
        dataset.add_sequences(["TTTTAA", "CCCCAA", "GATTACA", "AAAAAC", "CCCCAA"])
    with pytest.raises(AlphabetError, match=r"rows: 5\)"):
        dataset.add_sequences(["TTTTAA", "CCCCAA", "GATTACA", "AAAAAC", "CCXCAA"])
    assert (dataset.dir / LOG_FILE).read_bytes() == log
    assert _temps(dataset) == []
    assert dataset.verify().ok


def _prepared_outcomes(patch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each import's fold took the base row groups encoded while it was decided."""
    from usr_es.projections import PreparedAppend

    taken: list[bool] = []
    take = PreparedAppend.take

    def spy(self: PreparedAppend, *args: Any) -> Any:
        groups = take(self, *args)
        taken.append(groups is not None)
        return groups

    patch.setattr(PreparedAppend, "take", spy)
    return taken


def test_the_base_rows_an_import_encodes_while_it_is_decided_are_the_bytes_replay_makes(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _small_batches(monkeypatch, rows=5)
    taken = _prepared_outcomes(monkeypatch)
    dataset.add_sequences(_dna("first", 7))
    path = tmp_path / "in.csv"
    path.write_text("sequence,bio_type\n" + "".join(f"{s},dna\n" for s in _dna("second", 23)))
    dataset.import_file(path, source="lab run 2")
    assert taken == [True, True]
    files = {p: p.read_bytes() for p in dataset.dir.rglob("*") if p.is_file() and p.suffix in (".parquet", ".arrow")}
    assert dataset.verify().ok
    dataset.maintenance.rebuild()
    assert {p: p.read_bytes() for p in files} == files
    assert dataset.view(columns=["source"]).column("source").to_pylist() == [""] * 7 + ["lab run 2"] * 23


def test_the_index_run_an_import_sorts_while_it_is_decided_is_the_run_replay_sorts(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from usr_es import idindex

    _small_batches(monkeypatch, rows=3)
    sorted_by_fold: list[int] = []
    run_rows = idindex.run_rows

    def counting(id_chunks: Any, start: int) -> Any:
        rows, count = run_rows(id_chunks, start)
        sorted_by_fold.append(count)
        return rows, count

    monkeypatch.setattr(idindex, "run_rows", counting)
    dataset.add_sequences(_dna("first", 8))
    path = tmp_path / "in.csv"
    path.write_text("sequence\n" + "".join(f"{s}\n" for s in [*_dna("second", 10), _dna("first", 8)[2]]))
    dataset.import_file(path, on_conflict="skip")  # a repeat of a known sequence: skipped in its batch
    assert sorted_by_fold == []  # both runs came sorted from the decisions
    files = {p: p.read_bytes() for p in dataset.dir.rglob("*") if p.is_file() and "_index" in p.parts}
    assert len(files) >= 2 and dataset.verify().ok
    dataset.maintenance.rebuild()
    assert sorted_by_fold  # replay sorted the keys itself ...
    assert {p: p.read_bytes() for p in files} == files  # ... into the same runs
    # Rows left out as repeats across batches: the keys sorted while deciding are not the payload's.
    again = [*_dna("third", 4), _dna("third", 4)[0]]
    dataset.add_sequences(again, on_conflict="skip")
    assert sorted_by_fold[-1] == 4 and dataset.verify().ok


def test_an_import_whose_early_encode_fails_is_encoded_by_the_fold(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usr_es import projections

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "no space for the scratch file")

    _small_batches(monkeypatch, rows=4)
    taken = _prepared_outcomes(monkeypatch)
    dataset.add_sequences(_dna("first", 5))
    monkeypatch.setattr(projections, "encode_groups", broken)
    assert dataset.add_sequences(_dna("second", 11)).metrics["rows_written"] == 11
    assert taken == [True, False]
    assert dataset.info().rows == 16 and dataset.verify().ok


def test_a_rejected_or_trimmed_import_stops_its_early_encode(dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    def encoders() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "usr-base-encode"}

    before = encoders()
    _small_batches(monkeypatch, rows=2)
    taken = _prepared_outcomes(monkeypatch)
    dataset.add_sequences(["ACGTAC"])
    with pytest.raises(DuplicateIDError):
        dataset.add_sequences(["TTTTAA", "CCCCAA", "GATTACA", "ACGTAC"])
    # A sequence repeated across batches: the payload is written again without it, and the early encode
    # of the rows as first decided is not what the fold appends.
    receipt = dataset.add_sequences(["TTTTAA", "CCCCAA", "GATTACA", "TTTTAA"], on_conflict="skip")
    assert receipt.metrics == {"rows_written": 3, "rows_skipped": 1}
    assert taken == [True]  # only the first import's; the trimmed one never offered its encode
    assert encoders() <= before

    def fails(*args: object) -> None:
        raise RuntimeError("cut short")

    # Decided, then stopped before its fold, and the spool's clean-up fails too: the encoder still stops.
    monkeypatch.setattr("usr_es.writer.freeze_registry", fails)
    monkeypatch.setattr("usr_es.storage.PayloadSpool.discard", fails)
    with pytest.raises(RuntimeError, match="cut short"):
        dataset.add_sequences(["GGGGAA", "CATCAT", "TATATA"])
    assert encoders() <= before
    monkeypatch.undo()
    assert dataset.add_sequences(["GGGGAA"]).metrics["rows_written"] == 1  # and its spool is cleared
    assert _temps(dataset) == [] and dataset.verify().ok


def test_a_failed_write_while_a_spilled_append_is_published_is_repaired_by_the_next_command(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_batches(monkeypatch)
    dataset.add_sequences(["ACGTAC", "GGGGCC"])

    class FailingRecordsWrite(FileOps):
        def __init__(self) -> None:
            super().__init__()
            self.records_fds: set[int] = set()

        def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
            fd = super().open(path, flags, mode)
            if path.name == "records.parquet":
                self.records_fds.add(fd)
            return fd

        def write(self, fd: int, data: bytes | memoryview) -> int:
            if fd in self.records_fds:
                raise OSError(errno.EIO, "Input/output error")
            return super().write(fd, data)

    with use_fileops(FailingRecordsWrite()), pytest.raises(CommitError) as caught:
        dataset.add_sequences(["TTTTAA", "CCCCAA", "GATTACA", "AAAAAC", "TGCATG"])
    assert caught.value.state == "COMMITTED"
    dataset.add_sequences(["CAGTCA"])
    assert dataset.info().rows == 8
    report = dataset.verify()
    assert report.ok and not report.behind, report.problems


# -- attaches larger than memory: decided a batch at a time, sorted in runs, merged into the payload -----------
BASE = ["ACGTAC", "GGGGCC", "TTTTAA", "CCCCAA", "GATTACA", "AAAAAC"]
ABSENT = ["CATCAT", "GGGAAA"]


def _attach_outcome(rows: list[tuple[str, str]], batch: int, allow_missing: bool) -> tuple[str, Any]:
    """Attach `rows` (sequence, score text) by sequence to a fresh dataset of BASE in batches of `batch`."""
    import tempfile

    from usr_es.errors import UsrError
    from usr_es.registry import register_namespace, split_columns_spec

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        root = Path(tmp) / "root"
        register_namespace(root, "mock", split_columns_spec("mock__score:float64"))
        ds = Dataset.open(root, "demo/ds")
        ds.init(source="test")
        ds.add_sequences(BASE)
        _small_batches(patch, rows=batch)
        path = Path(tmp) / "in.csv"
        path.write_text("sequence,score\n" + "".join(f"{s},{v}\n" for s, v in rows))
        log = (ds.dir / LOG_FILE).read_bytes()
        try:
            receipt = ds.attach(path, namespace="mock", key="sequence", allow_missing=allow_missing)
        except UsrError as exc:
            assert (ds.dir / LOG_FILE).read_bytes() == log and _temps(ds) == []
            return type(exc).__name__, str(exc)
        assert _temps(ds) == [] and ds.verify().ok
        view = ds.view()
        scores = view.column("mock__score").to_pylist() if "mock__score" in view.column_names else []
        return "ok", (receipt.metrics, dict(zip(view.column("sequence").to_pylist(), scores, strict=False)))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(BASE + ABSENT), st.sampled_from(["1.5", "2", "-3e2", "x"])), min_size=0, max_size=9
    ),
    batch=st.integers(1, 4),
    allow_missing=st.booleans(),
)
def test_an_attach_decided_in_batches_matches_the_whole_input_at_once(
    rows: list[tuple[str, str]], batch: int, allow_missing: bool
) -> None:
    """Whatever the batch size, an attach writes what one batch would, or refuses it for the same reason
    (with several problems, a batch may meet another of them first), leaving the log and no scratch file."""
    whole = _attach_outcome(rows, 1_000, allow_missing)
    batched = _attach_outcome(rows, batch, allow_missing)
    keys = [s for s, _ in rows]
    repeated = len(set(keys)) < len(keys)
    missing = any(s in ABSENT for s in keys) and not allow_missing
    bad = any(v == "x" for s, v in rows if s not in ABSENT)
    if sum([repeated, missing, bad]) > 1:
        assert batched[0] == whole[0] or {batched[0], whole[0]} <= {"SchemaError", "InvalidInput"}
    else:
        assert batched[0] == whole[0], (batched, whole)
        if whole[0] == "ok":
            assert batched == whole
        elif bad:
            assert batched == whole  # the same cell, numbered over the whole input


def test_an_attach_repeating_a_record_across_batches_names_both_rows(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from usr_es.errors import InvalidInput, SchemaError

    dataset.add_sequences(BASE)
    _small_batches(monkeypatch, rows=2)
    path = tmp_path / "in.csv"
    path.write_text("sequence,score\nACGTAC,1\nGGGGCC,2\nTTTTAA,3\nACGTAC,4\n")
    with pytest.raises(SchemaError, match=r"1 key\(s\) repeated.*rows 1,4"):
        dataset.attach(path, namespace="mock", key="sequence")
    path.write_text("sequence,score\nACGTAC,1\nCATCAT,2\nTTTTAA,3\nGGGAAA,4\nCATCAT,5\n")
    with pytest.raises(SchemaError, match=r"CATCAT \(rows 2,5\)"):  # a key naming no record, repeated
        dataset.attach(path, namespace="mock", key="sequence", allow_missing=True)
    path.write_text("sequence,score\nACGTAC,1\nCATCAT,2\nTTTTAA,3\nGGGAAA,4\n")
    with pytest.raises(
        InvalidInput, match=r"2 row\(s\) reference keys not present.*rows: 2, 4; sample: CATCAT, GGGAAA"
    ):
        dataset.attach(path, namespace="mock", key="sequence")
    receipt = dataset.attach(path, namespace="mock", key="sequence", allow_missing=True)
    assert receipt.metrics == {"rows_incoming": 4, "rows_written": 2, "rows_missing": 2}
    assert _temps(dataset) == []


def test_an_attach_of_many_batches_rebuilds_byte_identical_and_reads_back(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sequences = _dna("attach", 40)
    dataset.add_sequences(sequences)
    _small_batches(monkeypatch, rows=3)
    monkeypatch.setattr("usr_es.codec.PART_ROW_GROUP_ROWS", 4)
    path = tmp_path / "in.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sequence": sequences[::-1], "score": [float(i) for i in range(40)]}), path)
    dataset.attach(path, namespace="mock", key="sequence")
    view = dataset.view(columns=["sequence", "mock__score"])
    assert dict(zip(view.column("sequence").to_pylist(), view.column("mock__score").to_pylist(), strict=True)) == {
        s: float(39 - i) for i, s in enumerate(sequences)
    }
    files = {p: p.read_bytes() for p in dataset.dir.rglob("*") if p.is_file() and p.suffix in (".parquet", ".arrow")}
    assert dataset.verify().ok
    dataset.maintenance.rebuild()
    assert {p: p.read_bytes() for p in files} == files


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")])
def test_an_attach_stopped_while_its_runs_are_merged_leaves_the_log_and_no_scratch_file(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failure: BaseException
) -> None:
    from usr_es.errors import Interrupted
    from usr_es.storage import SortedRuns

    dataset.add_sequences(BASE)
    _small_batches(monkeypatch, rows=2)
    path = tmp_path / "in.csv"
    path.write_text("sequence,score\nACGTAC,1\nGGGGCC,2\nTTTTAA,3\nCCCCAA,4\nGATTACA,5\n")
    log = (dataset.dir / LOG_FILE).read_bytes()
    open_files = len(os.listdir("/proc/self/fd"))

    def stopped(self: SortedRuns, rows: int) -> Any:
        assert len(os.listdir("/proc/self/fd")) > open_files  # the runs are open (unlinked) when the merge stops
        raise failure

    monkeypatch.setattr(SortedRuns, "merged", stopped)
    expected = Interrupted if isinstance(failure, KeyboardInterrupt) else CommitError
    with pytest.raises(expected) as caught:
        dataset.attach(path, namespace="mock", key="sequence")
    if isinstance(caught.value, CommitError):
        assert caught.value.state == "NOT_COMMITTED"
    assert (dataset.dir / LOG_FILE).read_bytes() == log
    assert _temps(dataset) == []
    assert len(os.listdir("/proc/self/fd")) == open_files  # and closed after it
    monkeypatch.undo()
    assert dataset.attach(path, namespace="mock", key="sequence").metrics["rows_written"] == 5


@pytest.mark.parametrize("drop_deleted", [False, True])
def test_a_materialize_streamed_row_group_by_row_group_keeps_the_view_and_rebuilds_byte_identical(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch, drop_deleted: bool
) -> None:
    """Many row groups, spilled to a scratch file, overlay rows in another order than the base's, a record
    whose id shares its index key with another's (test_idindex's pair), and tombstones."""
    monkeypatch.setattr("usr_es.codec.ROW_GROUP_ROWS", 3)
    monkeypatch.setattr("usr_es.codec.SPILL_BYTES", 0)
    monkeypatch.setattr("usr_es.idindex._ASKED_AT_ONCE", 2)  # overlay rows spilled in several runs ...
    monkeypatch.setattr("usr_es.storage.RUN_BATCH_ROWS", 2)  # ... each read back across record batches
    colliding = ["ACGTACGTTGTGAAGCAAAA", "ACGTACGTTAGATTGTCAAA"]
    dataset.add_sequences([*_dna("materialize", 8), colliding[0]])
    dataset.add_sequences([colliding[1], *_dna("more", 3)])
    ids = dataset.view(columns=["id"]).column("id").to_pylist()
    dataset.write_overlay("mock", {"id": ids[::-2], "score": [float(i) for i in range(len(ids[::-2]))]})
    dataset.delete([ids[1], ids[8]])
    before = dataset.view(include_deleted=not drop_deleted)
    dataset.maintenance.materialize(drop_deleted=drop_deleted)
    assert dataset.view(include_deleted=True).num_rows == len(ids) - (2 if drop_deleted else 0)
    after = dataset.view(include_deleted=not drop_deleted)
    assert after.select(before.column_names).to_pylist() == before.to_pylist()
    files = {p: p.read_bytes() for p in dataset.dir.rglob("*") if p.is_file() and p.suffix in (".parquet", ".arrow")}
    assert dataset.verify().ok
    dataset.maintenance.rebuild()
    assert {p: p.read_bytes() for p in files} == files


def _sha256_with_zeroed_watermark(path: Path) -> str:
    """Independently of usr_es: sha256 of the file with the `usr_es:hash` value of its last footer as zeros."""
    import hashlib

    import pyarrow.parquet as pq

    data = path.read_bytes()
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    stamp = pq.read_metadata(path).metadata[b"usr_es:hash"]
    footer = data[start:]
    assert footer.count(stamp) == 1
    return hashlib.sha256(data[:start] + footer.replace(stamp, b"0" * len(stamp))).hexdigest()


def test_usr_event_sha256_adds_the_base_files_digest_to_each_fingerprint(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset.add_sequences(["ACGT"])
    assert all(e.fingerprint.sha256 is None for e in dataset.log.events())  # off by default
    assert b'"sha256"' not in dataset.log_path.read_bytes()  # and the lines are as before
    monkeypatch.setenv("USR_EVENT_SHA256", "1")
    for write in (
        lambda: dataset.add_sequences(["GGCC", "TTAA"]),  # appends row groups in place
        lambda: dataset.delete([dataset.head(1).column("id")[0].as_py()]),  # leaves the base as it is
        lambda: dataset.write_overlay("mock", {"id": [dataset.head(1).column("id")[0].as_py()], "score": [1.0]}),
        lambda: dataset.maintenance.materialize(),  # rewrites the base
    ):
        write()
        last = dataset.log.events()[-1]
        assert last.fingerprint.sha256 == _sha256_with_zeroed_watermark(dataset.records_path), last.action


def test_a_write_after_a_catch_up_that_folded_the_whole_log_reads_the_history_runs_it_wrote(
    dataset: Dataset,
) -> None:
    import shutil

    from usr_es.names import DERIVED_DIR, HISTORY_DIR, INDEX_DIR, RECORDS_FILE

    dataset.add_sequences(_dna("first", 40))
    dataset.add_sequences(_dna("second", 40))
    (dataset.dir / RECORDS_FILE).unlink()  # every projection gone: the next write folds the whole log
    for folder in (INDEX_DIR, HISTORY_DIR, DERIVED_DIR):
        shutil.rmtree(dataset.dir / folder, ignore_errors=True)
    third = _dna("third", 80)
    receipt = dataset.add_sequences(third)  # its history run merges with the one the catch-up wrote
    assert receipt.seq == 4
    rows = dataset.head(200, columns=["id", "sequence"]).to_pylist()
    added = [row["id"] for row in rows if row["sequence"] in set(third)]
    assert len(rows) == 160 and len(added) == 80
    assert [entry.credit.seq for entry in dataset.history.of(added[0]).entries] == [4]
    assert dataset.verify().ok
