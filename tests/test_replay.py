"""Golden replay fixtures: replaying each committed log to each expected seq gives exactly the expected projection."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tools.replay_fixtures import (
    CASE_NAME,
    canonical_rows,
    canonical_schema,
    dump_json,
    dump_rows,
    projection_files,
)
from usr_es import Dataset
from usr_es.errors import UsrError

FIXTURES = Path(__file__).resolve().parent.parent / "replay_fixtures"
MIN_CASES = 29
#: Dataset methods a `reissue` item may name (never an arbitrary attribute).
REISSUE_OPS = frozenset(
    {"add_sequences", "attach", "delete", "restore", "set_state", "clear_state", "compact_overlay", "materialize",
     "snapshot", "freeze_registry", "dedupe", "remove_overlay"}
)  # fmt: skip


#: Of those, the ones `Dataset.maintenance` holds.
MAINTENANCE_OPS = frozenset(
    {"compact_overlay", "materialize", "snapshot", "freeze_registry", "dedupe", "remove_overlay"}
)


def _case_dirs() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(p for p in FIXTURES.iterdir() if p.is_dir() and CASE_NAME.match(p.name))


def _expected_seqs(case: Path) -> list[int]:
    expected = case / "expected"
    if not expected.is_dir():
        return []
    return sorted(int(p.name.removeprefix("seq-")) for p in expected.iterdir() if p.name.startswith("seq-"))


CASES = _case_dirs()
#: (case, seq) pairs replayed and compared in this session, filled by the per-case tests.
RAN: dict[str, list[int]] = {}


def _assert_projection(parquet: Path, expected: Path) -> None:
    """The canonical schema/metadata and rows of `parquet` equal the expected files, text for text."""
    schema_text = (expected / "records.schema.json").read_text(encoding="utf-8")
    rows_text = (expected / "records.rows.jsonl").read_text(encoding="utf-8")
    assert dump_json(canonical_schema(parquet)) == schema_text, f"schema/metadata differ from {expected}"
    actual_rows = canonical_rows(pq.read_table(parquet))
    assert actual_rows == rows_text.splitlines(), f"rows differ from {expected}"
    assert dump_rows(actual_rows) == rows_text


def _expected_files(expected: Path) -> dict[str, str]:
    """Every file of `expected/seq-<N>/` but state.json, by path relative to it."""
    return {
        p.relative_to(expected).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(expected.rglob("*"))
        if p.is_file() and p.relative_to(expected).as_posix() != "state.json"
    }


def _assert_files(directory: Path, expected: Path) -> dict[str, str]:
    """records, live view and `_derived/` of `directory` in canonical form equal the expected files, both ways."""
    actual = projection_files(directory)
    wanted = _expected_files(expected)
    missing = sorted(set(wanted) - set(actual))
    extra = sorted(set(actual) - set(wanted))
    assert not missing, f"{directory} lacks {missing} (expected in {expected})"
    assert not extra, f"{directory} has {extra}, not in {expected}"
    for name, text in wanted.items():
        assert actual[name] == text, f"{name} differs from {expected}"
    return actual


def _assert_rows_obey_identity(parquet: Path) -> None:
    """Independent oracle: id = sha1(bio_type|sequence), length = len(sequence)."""
    for row in pq.read_table(parquet, columns=["id", "bio_type", "sequence", "length"]).to_pylist():
        assert row["id"] == hashlib.sha1(f"{row['bio_type']}|{row['sequence']}".encode()).hexdigest()
        assert row["length"] == len(row["sequence"])


def _reissue(ds: Dataset, item: dict[str, Any], inputs: Path) -> None:
    assert item["op"] in REISSUE_OPS, item
    args = list(item["args"])
    if "input" in item:
        inputs.mkdir(exist_ok=True)
        path = inputs / item["input"]["name"]
        path.write_text(item["input"]["text"], encoding="utf-8")
        args.insert(0, path)
    try:
        holder: Any = ds.maintenance if item["op"] in MAINTENANCE_OPS else ds
        result = getattr(holder, item["op"])(*args, **item["kwargs"])
        receipt = result.receipt if hasattr(result, "receipt") else result  # a dedupe's result carries it
    except UsrError as exc:
        outcome = type(exc).__name__
    else:
        outcome = "replayed" if receipt.replayed else "noop" if receipt.noop else f"appended seq {receipt.seq}"
        if receipt.replayed:
            assert receipt.seq == item["seq"]
    assert outcome == item["outcome"], item


def check_case(case: Path, work: Path) -> list[int]:
    """Replay `case` to each expected seq, rebuild and verify a copy; return the seqs compared."""
    info = json.loads((case / "case.json").read_text(encoding="utf-8"))
    expect = info["expect"]
    assert info["name"] == case.name
    seqs = _expected_seqs(case)
    assert seqs, f"{case.name} has no expected/seq-<N> directories"
    assert seqs == expect["seqs"]
    head = expect["head_seq"]
    assert seqs[-1] == head, "the head seq must have an expected projection"

    copy = work / "dataset"
    shutil.copytree(case / "dataset", copy)
    log = (copy / ".events.log").read_bytes()
    ds = Dataset.at(copy)
    ran: list[int] = []
    views: dict[int, str] = {}
    for seq in seqs:
        expected = case / "expected" / f"seq-{seq}"
        out = work / f"replay-{seq}"
        result = ds.log.replay(seq, out)
        assert result.seq == seq
        assert {"from_checkpoint": result.from_checkpoint, "ignored_checkpoints": len(result.notes)} == expect[
            "replays"
        ][str(seq)], result.notes
        _assert_projection(out / "records.parquet", expected)
        views[seq] = _assert_files(out, expected)["view.rows.jsonl"]
        _assert_rows_obey_identity(out / "records.parquet")
        report = Dataset.at(out).verify()
        assert report.ok, report.problems
        state = json.loads((expected / "state.json").read_text(encoding="utf-8"))
        rows = result.rows + result.deleted  # the base rows: the view's and the tombstoned ones
        assert {"seq": report.seq, "head_hash": report.head_hash, "rows": rows} == state
        assert log.startswith((out / ".events.log").read_bytes())
        assert ds.log.resolve_until(result.event_id) == seq
        moment = datetime.fromisoformat(result.timestamp_utc).astimezone(UTC).isoformat()
        assert ds.log.resolve_until(moment) == seq
        ran.append(seq)

    for before, after in expect["same_view"]:
        assert before in views and after in views, f"same_view {before}->{after} needs both seqs expected"
        assert views[before] == views[after], f"the live view changed from seq {before} to {after}"

    rebuilt = ds.maintenance.rebuild()
    assert (rebuilt.seq, rebuilt.rows) == (head, expect["rows"])
    assert len(rebuilt.notes) == expect["replays"][str(head)]["ignored_checkpoints"], rebuilt.notes
    _assert_projection(copy / "records.parquet", case / "expected" / f"seq-{head}")
    _assert_files(copy, case / "expected" / f"seq-{head}")
    replayed_head = work / f"replay-{head}"
    for path in [replayed_head / "records.parquet", *sorted((replayed_head / "_derived").rglob("*.parquet"))]:
        rel = path.relative_to(replayed_head)
        assert (copy / rel).read_bytes() == path.read_bytes(), f"rebuild and replay wrote different {rel}"
    report = ds.verify()
    assert report.ok, report.problems
    assert (report.seq, report.head_hash) == (head, expect["head_hash"])
    torn = [note for note in report.notes if note.startswith("torn tail")]
    assert len(torn) == (1 if expect["torn_tail_bytes"] else 0), report.notes
    assert ds.info().torn_tail_bytes == expect["torn_tail_bytes"]
    assert (copy / ".events.log").read_bytes() == log, "replay/rebuild/verify must not touch the log"

    # Every mutation needs its root's registry (as in the original): the copy's root gets the dataset's own.
    frozen = ds.log.events()[-1].registry_hash
    shutil.copy(copy / "_registry" / f"registry.{frozen}.yaml", ds.root / "registry.yaml")
    for item in expect["reissue"]:
        _reissue(ds, item, work / "inputs")
    assert (copy / ".events.log").read_bytes() == log, "rejected commands and retries must append nothing"
    return ran


@pytest.mark.parametrize("case", CASES or [None], ids=[c.name for c in CASES] or ["missing"])
def test_replay_fixture_equals_expected(case: Path | None, tmp_path: Path) -> None:
    assert case is not None, f"no replay fixtures under {FIXTURES}; run `make fixtures`"
    ran = check_case(case, tmp_path)
    assert ran == _expected_seqs(case)
    RAN[case.name] = ran


def test_replay_fixtures_every_case_and_seq_ran(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert FIXTURES.is_dir(), f"{FIXTURES} is missing; run `make fixtures`"
    strays = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and not CASE_NAME.match(p.name))
    assert not strays, f"directories that are not <nnn>-<case>: {strays}"
    assert len(CASES) >= MIN_CASES, f"expected at least {MIN_CASES} fixture cases, found {len(CASES)}"
    for case in CASES:  # cases deselected in this session (e.g. -k) are run here
        if case.name not in RAN:
            RAN[case.name] = check_case(case, tmp_path_factory.mktemp(case.name))
    ran = sorted((name, seq) for name, seqs in RAN.items() for seq in seqs)
    on_disk = sorted((case.name, seq) for case in CASES for seq in _expected_seqs(case))
    declared = sum(len(json.loads((c / "case.json").read_text(encoding="utf-8"))["expect"]["seqs"]) for c in CASES)
    assert ran == on_disk
    assert len(ran) == len(on_disk) == declared


def test_canonical_rows_formats_timestamps_nulls_and_nested_values() -> None:
    table = pa.table(
        {
            "t": pa.array([0, 1_700_000_000_123_456, None], pa.timestamp("us", tz="UTC")),
            "n": pa.array([1_500_000_000, None, -1], pa.timestamp("ns", tz="UTC")),
            "x": pa.array([1.5, float("nan"), None], pa.float64()),
            "l": pa.array([["a"], [], None], pa.list_(pa.string())),
        }
    )
    assert canonical_rows(table) == [
        '{"l":["a"],"n":"1970-01-01T00:00:01.500000000Z","t":"1970-01-01T00:00:00.000000Z","x":1.5}',
        '{"l":[],"n":null,"t":"2023-11-14T22:13:20.123456Z","x":"nan"}',
        '{"l":null,"n":"1969-12-31T23:59:59.999999999Z","t":null,"x":null}',
    ]


def test_canonical_schema_keeps_only_deterministic_metadata(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.table({"a": pa.array([1], pa.int64())}).replace_schema_metadata(
        {"usr:schema_version": "1", "usr_es:seq": "3", "usr_es:written_at": "now", "other": "x"}
    )
    pq.write_table(table, path)
    assert canonical_schema(path) == {
        "fields": [{"name": "a", "type": "int64", "nullable": True}],
        "metadata": {"usr:schema_version": "1", "usr_es:seq": "3"},
    }
