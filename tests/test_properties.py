"""Property tests: log records round-trip, the API matches an in-memory model, replay is deterministic."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from usr_es import Dataset
from usr_es.alphabet import ALPHABETS
from usr_es.commands import OnConflict
from usr_es.errors import UsrError
from usr_es.events import LogRecord, record_decoder, record_encoder
from usr_es.log import encode_line
from usr_es.results import Receipt

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_names = itertools.count()

Row = tuple[str, str, str, str]  # id, bio_type, sequence, alphabet
CONFLICTS: list[OnConflict] = ["error", "skip", "skip"]


@dataclass(frozen=True)
class ImportStep:
    alphabet: str
    sequences: tuple[str, ...]
    on_conflict: OnConflict

    @property
    def bio_type(self) -> str:
        return ALPHABETS[self.alphabet][0]


@st.composite
def import_steps(draw: st.DrawFn) -> ImportStep:
    """An import of a few short sequences; sometimes padded, blank or holding a foreign character."""
    alphabet = draw(st.sampled_from(sorted(ALPHABETS)))
    letters = ALPHABETS[alphabet][1]
    sequences = draw(
        st.lists(st.text(alphabet=letters + letters.lower(), min_size=1, max_size=4), min_size=1, max_size=5)
    )
    flaw = draw(st.sampled_from(["none"] * 6 + ["padded", "blank", "foreign"]))
    where = draw(st.integers(0, len(sequences) - 1))
    if flaw == "padded":
        sequences[where] = f"  {sequences[where]}\t"
    elif flaw == "blank":
        sequences[where] = " "
    elif flaw == "foreign":
        sequences[where] += draw(st.sampled_from(["-", "*", "1", "B" if alphabet.startswith(("dna", "rna")) else "Z"]))
    return ImportStep(alphabet, tuple(sequences), draw(st.sampled_from(CONFLICTS)))


def model_apply(model: dict[str, Row], step: ImportStep) -> dict[str, Row] | None:
    """The documented import semantics on a plain dict (insertion order = log order); None if rejected."""
    letters = ALPHABETS[step.alphabet][1]
    allowed = set(letters + letters.lower())
    trimmed = [s.strip() for s in step.sequences]
    if any(not s or set(s) - allowed for s in trimmed):
        return None
    ids = [hashlib.sha1(f"{step.bio_type}|{s}".encode()).hexdigest() for s in trimmed]
    if step.on_conflict == "error" and (len(set(ids)) != len(ids) or any(i in model for i in ids)):
        return None
    updated = dict(model)
    for rid, seq in zip(ids, trimmed, strict=True):
        if rid not in updated:
            updated[rid] = (rid, step.bio_type, seq, step.alphabet)
    return updated


def table_rows(ds: Dataset) -> list[Row]:
    table = ds.head(1_000_000, columns=["id", "bio_type", "sequence", "alphabet"])
    return list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def new_dataset(root: Path) -> Dataset:
    ds = Dataset.open(root, f"prop/ex{next(_names)}")
    ds.init(source="property")
    return ds


def add(ds: Dataset, step: ImportStep) -> Receipt:
    return ds.add_sequences(
        list(step.sequences), bio_type=step.bio_type, alphabet=step.alphabet, on_conflict=step.on_conflict
    )


def run_steps(ds: Dataset, steps: list[ImportStep | None]) -> dict[int, list[Row]]:
    """Apply `steps` (None: a second init) through the API, checking each against the model.

    Returns the model's rows after every seq.
    """
    model: dict[str, Row] = {}
    by_seq: dict[int, list[Row]] = {1: []}
    seq = 1
    for step in steps:
        if step is None:
            log_before = ds.log_path.read_bytes()
            with pytest.raises(UsrError):
                ds.init(source="again")
            assert ds.log_path.read_bytes() == log_before
            continue
        expected = model_apply(model, step)
        log_before = ds.log_path.read_bytes()
        event("rejected" if expected is None else "accepted")
        if expected is None:
            with pytest.raises(UsrError):
                add(ds, step)
            assert ds.log_path.read_bytes() == log_before
        else:
            receipt = add(ds, step)
            seq += 1
            assert receipt.seq == seq
            assert receipt.rows_written == len(expected) - len(model)
            model = expected
            by_seq[seq] = list(model.values())
        assert table_rows(ds) == list(model.values())
        report = ds.verify()
        assert report.ok, report.problems
    return by_seq


def assert_round_trips(ds: Dataset) -> None:
    for line in ds.log.iter_events():
        record = record_decoder.decode(line.raw)
        assert isinstance(record, LogRecord)
        assert record_encoder.encode(record) == line.raw
        assert encode_line(msgspec.structs.replace(record, hash="")) == (line.raw + b"\n", record.hash)


@SETTINGS
@given(
    source=st.text(max_size=30),
    notes=st.text(max_size=30),
    import_sources=st.lists(st.text(max_size=20), max_size=3),
    command_ids=st.lists(
        st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,20}\Z"), min_size=4, max_size=4, unique=True
    ),
)
def test_api_log_records_round_trip(
    root: Path, source: str, notes: str, import_sources: list[str], command_ids: list[str]
) -> None:
    ds = Dataset.open(root, f"prop/ex{next(_names)}")
    ds.init(source=source, notes=notes, command_id=command_ids[0])
    for i, text in enumerate(import_sources):
        ds.add_sequences([f"ACGT{'A' * i}"], source=text, command_id=command_ids[i + 1])
    assert [r.command_id for r in ds.log.events()] == command_ids[: len(import_sources) + 1]
    assert ds.log.events()[0].args == {"source": source, "notes": notes}
    assert_round_trips(ds)


@SETTINGS
@given(steps=st.lists(import_steps() | st.none(), max_size=6))
def test_api_matches_in_memory_model(root: Path, steps: list[ImportStep | None]) -> None:
    ds = new_dataset(root)
    run_steps(ds, steps)
    assert_round_trips(ds)


@SETTINGS
@given(steps=st.lists(import_steps(), min_size=1, max_size=5), data=st.data())
def test_replay_and_rebuild_are_deterministic(
    root: Path, tmp_path: Path, steps: list[ImportStep | None], data: st.DataObject
) -> None:
    ds = new_dataset(root)
    by_seq = run_steps(ds, steps)
    head = max(by_seq)
    k = data.draw(st.integers(1, head), label="until")
    name = next(_names)
    first, second = tmp_path / f"replay{name}a", tmp_path / f"replay{name}b"
    past, again = Dataset.at(ds.log.replay(k, first).out), Dataset.at(ds.log.replay(k, second).out)
    assert past.log_path.read_bytes() == again.log_path.read_bytes()
    assert past.records_path.read_bytes() == again.records_path.read_bytes()
    assert past.log_path.read_bytes() == ds.log_path.read_bytes()[: len(past.log_path.read_bytes())]
    assert table_rows(past) == by_seq[k]
    assert past.verify().ok

    live = ds.records_path.read_bytes()
    ds.maintenance.rebuild()
    assert ds.records_path.read_bytes() == live
    latest = Dataset.at(ds.log.replay(head, tmp_path / f"replay{name}c").out)
    assert latest.records_path.read_bytes() == live
