"""Forensics: a record's history and blame, diffs between points and the log timeline agree with replays, are
answered from the history index (the same answers without it), and render on the CLI (docs/adr/0020)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_overlay_properties import FIRST, POOL, SETTINGS, Model, new_dataset, run_step
from typer.testing import CliRunner

from usr_es import Dataset, InvalidInput, NotFound, history
from usr_es.alphabet import compute_id
from usr_es.cli import app
from usr_es.names import FLAGS, HISTORY_MANIFEST

runner = CliRunner()
Values = dict[str, Any]


def _set(row: dict[str, Any]) -> Values:
    return {c: v for c, v in row.items() if v is not None and not (c in FLAGS and v is False)}


def _replayed(ds: Dataset, tmp: Path) -> dict[int, dict[str, Values]]:
    """Every record's set values after each seq, from `replay --until` (seq 0: nothing)."""
    head = ds.log.events(n=1)[0].seq
    views: dict[int, dict[str, Values]] = {0: {}}
    for seq in range(1, head + 1):
        out = tmp / f"replay-{seq}"
        ds.log.replay(seq, out)
        views[seq] = {r["id"]: _set(r) for r in Dataset.at(out).view(include_deleted=True).to_pylist()}
    return views


def _unset_flags(values: Values) -> Values:
    return {c: v for c, v in values.items() if v is not None and not (c in FLAGS and v is False)}


def forensic_step(ds: Dataset, model: Model, data: st.DataObject, imported: list[str]) -> None:
    """`run_step`, or (now and then) an overlay removal or a merge from another dataset, the model kept."""
    kind = data.draw(st.sampled_from(["step"] * 6 + ["remove", "merge"]))
    live = sorted(ns for ns in model.parts if ns not in ("usr", "usr_state"))
    if kind == "remove" and live:
        ns = data.draw(st.sampled_from(live))
        ds.maintenance.remove_overlay(ns, data.draw(st.sampled_from(["delete", "archive"])))
        del model.overlays[ns], model.col_order[ns], model.parts[ns]
        return
    absent = [s for s in POOL if compute_id("dna", s) not in model.order]
    if kind == "merge" and absent:
        src = Dataset.open(ds.root, f"prop/src-{len(model.order)}-{len(absent)}")
        if not src.exists:
            src.init()
        chosen = data.draw(st.lists(st.sampled_from(absent), min_size=1, max_size=2, unique=True))
        src.add_sequences(chosen)
        order = src.view(columns=["id"]).column("id").to_pylist()
        result = ds.maintenance.merge(src, columns="union")  # dest may have materialized columns
        assert result.rows_added == len(order)
        model.order.extend(order)
        imported.extend(s for s in chosen if s not in imported)
        return
    run_step(ds, model, data, imported)


@SETTINGS
@given(data=st.data(), steps=st.integers(1, 8))
def test_history_of_every_record_agrees_with_diffing_replays_at_every_seq(data: st.DataObject, steps: int) -> None:
    with new_dataset() as (ds, model, tmp):
        imported = list(POOL[:FIRST])
        for _ in range(steps):
            forensic_step(ds, model, data, imported)
        views = _replayed(ds, tmp)
        head = max(views)
        for rid in sorted({rid for view in views.values() for rid in view}):
            entries = {e.credit.seq: e for e in ds.history.of(rid).entries}
            for seq in range(1, head + 1):
                before, after = views[seq - 1].get(rid, {}), views[seq].get(rid, {})
                expected = {
                    c: (before.get(c), after.get(c)) for c in {*before, *after} if before.get(c) != after.get(c)
                }
                entry = entries.get(seq)
                got = {c.column: (c.before, c.after) for c in entry.changes} if entry is not None else {}
                normal = {c: tuple(None if v is False and c in FLAGS else v for v in pair) for c, pair in got.items()}
                assert normal == expected, (rid, seq)
            blame = ds.history.blame(rid)
            assert {c.column: c.value for c in blame.cells} == views[head].get(rid, {})
            for cell in blame.cells:
                assert views[cell.credit.seq].get(rid, {}).get(cell.column) == cell.value
        a = data.draw(st.integers(0, head))
        b = data.draw(st.integers(a, head))
        found = ds.history.diff(a, b)
        expected_rows = {rid for rid in {*views[a], *views[b]} if views[a].get(rid) != views[b].get(rid)}
        assert {row.id for row in found.rows} == expected_rows
        for row in found.rows:
            was, now = views[a].get(row.id, {}), views[b].get(row.id, {})
            cells = {c.column: (c.before, c.after) for c in row.cells}
            assert set(cells) == {c for c in {*was, *now} if was.get(c) != now.get(c)}
            for column, (before, after) in cells.items():
                assert _unset_flags({column: before}).get(column) == was.get(column)
                assert _unset_flags({column: after}).get(column) == now.get(column)
            kind = "added" if not was else "removed" if not now else None
            assert kind is None or row.kind == kind
        summary = ds.history.diff(a, b, summary=True)
        assert (summary.changed, summary.added, summary.cells, summary.rows) == (
            found.changed,
            found.added,
            found.cells,
            [],
        )


@pytest.fixture
def lab(root: Path) -> tuple[Dataset, list[str]]:
    """A dataset whose first record was imported, scored twice, deleted, restored and given state."""
    ds = Dataset.open(root, "lab/h")
    ds.init()
    ds.add_sequences(["ACGTACGTAC", "GGGCCCAATT", "TTTTAAAACC"], source="run-1")
    ids = ds.view(columns=["id"]).column("id").to_pylist()
    with ds.acting_as("infer", "job-7"):
        ds.write_overlay("mock", {"id": ids[:2], "mock__score": [1.0, 2.0]}, note="first model")
    ds.delete([ids[0]], reason="bad well")
    ds.restore([ids[0]])
    ds.write_overlay("mock", {"id": ids[:1], "mock__score": [1.5]}, allow_overwrite=True)
    ds.set_state([ids[0]], qc_status="pass")
    return ds, ids


def test_history_lists_each_event_with_its_actor_and_changes(lab: tuple[Dataset, list[str]]) -> None:
    ds, ids = lab
    found = ds.history.of(ids[0])
    assert [e.credit.action for e in found.entries] == [
        "import_rows", "attach", "tombstone", "restore", "attach", "state_set",
    ]  # fmt: skip
    attach = found.entries[1]
    assert (attach.credit.tool, attach.credit.run_id, attach.note) == ("infer", "job-7", "first model")
    assert [(c.column, c.before, c.after) for c in attach.changes] == [("mock__score", None, 1.0)]
    assert found.entries[2].note == "bad well"
    assert found.live and not found.deleted
    only = ds.history.of(ids[0], columns=["mock__score"])
    assert [e.credit.seq for e in only.entries] == [e.credit.seq for e in found.entries]
    assert {c.column for e in only.entries for c in e.changes} == {"mock__score"}
    early = ds.history.of(ids[0], until=3)
    assert [e.credit.action for e in early.entries] == ["import_rows", "attach"]


def test_blame_credits_each_cell_to_the_event_that_last_wrote_it(lab: tuple[Dataset, list[str]]) -> None:
    ds, ids = lab
    cells = {c.column: c for c in ds.history.blame(ids[0]).cells}
    assert cells["mock__score"].value == 1.5 and cells["mock__score"].credit.seq == 6
    assert cells["sequence"].credit.action == "import_rows"
    assert cells["usr_state__qc_status"].value == "pass"
    assert "usr__deleted" not in cells  # restored: the flag is unset again


def test_an_unknown_record_is_not_found(lab: tuple[Dataset, list[str]]) -> None:
    ds, _ = lab
    with pytest.raises(NotFound, match="No record with id"):
        ds.history.of("0" * 40)


def test_answers_are_the_same_without_the_index(
    lab: tuple[Dataset, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, ids = lab
    ds.maintenance.materialize(drop_deleted=True)
    with_index = [ds.history.of(rid) for rid in ids], ds.history.diff(1)
    monkeypatch.setattr(history.Lookup, "open", classmethod(lambda cls, directory: None))
    assert ([ds.history.of(rid) for rid in ids], ds.history.diff(1)) == with_index


def test_the_index_is_rebuilt_byte_for_byte_and_checked_by_verify(lab: tuple[Dataset, list[str]]) -> None:
    ds, _ = lab
    stored = {p.name: p.read_bytes() for p in (ds.dir / "_history").iterdir()}
    ds.maintenance.rebuild()
    assert {p.name: p.read_bytes() for p in (ds.dir / "_history").iterdir()} == stored
    manifest = ds.dir / HISTORY_MANIFEST
    manifest.write_bytes(manifest.read_bytes().replace(b'"entries":', b'"entries":1'))
    report = ds.verify()
    assert not report.ok and any(HISTORY_MANIFEST in p for p in report.problems)


def test_diff_reports_deleted_restored_and_credited_cells(lab: tuple[Dataset, list[str]]) -> None:
    ds, ids = lab
    deleted = ds.history.diff(3, 4)
    assert (deleted.deleted, deleted.changed, [r.kind for r in deleted.rows]) == (1, 0, ["deleted"])
    result = ds.history.diff(2, None)
    by_id = {r.id: r for r in result.rows}
    assert by_id[ids[1]].kind == "changed"
    [cell] = by_id[ids[1]].cells
    assert (cell.column, cell.before, cell.after, cell.credit.run_id) == ("mock__score", None, 2.0, "job-7")
    assert result.by_action == {"attach": 2, "state_set": 1}
    assert ds.history.diff(0).added == 3
    with pytest.raises(InvalidInput, match="after"):
        ds.history.diff(5, 2)


def test_timeline_filters_by_action_actor_range_and_record(lab: tuple[Dataset, list[str]]) -> None:
    ds, ids = lab
    every = ds.history.timeline()
    assert [e.credit.seq for e in every] == list(range(1, 8))
    assert [e.credit.seq for e in ds.history.timeline(action=["attach"])] == [3, 6]
    assert [e.credit.seq for e in ds.history.timeline(actor="job-7")] == [3]
    assert [e.credit.seq for e in ds.history.timeline(since=4, until=5)] == [4, 5]
    assert next(e.credit.seq for e in ds.history.timeline(since=every[3].credit.timestamp_utc)) == 4
    assert [e.credit.seq for e in ds.history.timeline(record_id=ids[1])] == [2, 3]
    assert len(ds.history.timeline(since="2000-01-01T00:00:00Z")) == 7  # before the first event: all of them
    assert every[3].summary == "1 record(s) deleted: bad well"


def test_cli_history_blame_diff_and_log(lab: tuple[Dataset, list[str]], root: Path) -> None:
    _ds, ids = lab
    shown = runner.invoke(app, ["--root", str(root), "history", "lab/h", "--id", ids[0]])
    assert shown.exit_code == 0, shown.output
    assert "tombstone" in shown.output and "mock__score: 1.0 -> 1.5" in shown.output and "infer" in shown.output
    blamed = runner.invoke(app, ["--root", str(root), "blame", "lab/h", "--id", ids[0], "--format", "json"])
    cells = {c["column"]: c for c in json.loads(blamed.output)["data"]["cells"]}
    assert cells["mock__score"]["credit"]["seq"] == 6
    got = runner.invoke(app, ["--root", str(root), "get", "lab/h", "--id", ids[0], "--blame"])
    assert got.exit_code == 0, got.output
    assert "mock__score\t1.5\t6\t" in got.output and "\tattach\t" in got.output
    summary = runner.invoke(app, ["--root", str(root), "diff", "lab/h", "--from", "2", "--to", "7", "--summary"])
    assert summary.exit_code == 0 and "2 changed" in summary.output
    full = runner.invoke(app, ["--root", str(root), "diff", "lab/h", "--from", "2", "--format", "json"])
    assert json.loads(full.output)["data"]["changed"] == 2
    log = runner.invoke(app, ["--root", str(root), "log", "lab/h", "--action", "tombstone"])
    assert log.exit_code == 0 and "bad well" in log.output and "attach" not in log.output


def test_every_column_type_survives_json(root: Path) -> None:
    from usr_es.registry import register_namespace, split_columns_spec

    register_namespace(root, "typed", split_columns_spec("typed__vec:list<float64>,typed__n:int64,typed__tag:string"))
    ds = Dataset.open(root, "lab/types")
    ds.init()
    ds.add_sequences(["ACGTACGTAC"])
    rid = ds.view(columns=["id"]).column("id")[0].as_py()
    table = pa.table({"id": [rid], "typed__vec": pa.array([[0.5, -1.0]]), "typed__n": [3], "typed__tag": ["ü"]})
    ds.write_overlay("typed", table)
    ds.delete([rid])
    result = runner.invoke(app, ["--root", str(root), "history", "lab/types", "--id", rid, "--format", "json"])
    data = json.loads(result.output)["data"]
    changes = {c["column"]: c["after"] for e in data["entries"] for c in e["changes"]}
    assert changes["typed__vec"] == [0.5, -1.0] and changes["typed__n"] == 3 and changes["typed__tag"] == "ü"
    assert changes["usr__deleted"] is True and changes["usr__deleted_at"].endswith("Z")


def test_merged_and_deduplicated_records_say_where_they_came_from_and_went(root: Path) -> None:
    src, dest = Dataset.open(root, "lab/src"), Dataset.open(root, "lab/dest")
    src.init()
    src.add_sequences(["ACGTACGTAC"])
    dest.init()
    dest.add_sequences(["acgtacgtac"])
    head = src.log.events(n=1)[0]
    dest.maintenance.merge(src, columns="require-same", avoid_casefold_dups=False)
    rid = compute_id("dna", "ACGTACGTAC")
    [merged] = dest.history.of(rid).entries
    assert merged.credit.action == "merge_datasets"
    assert merged.note == f"merged from lab/src at seq {head.seq} (hash {head.hash})"
    dest.maintenance.dedupe("sequence_ci", "keep-first")
    gone = dest.history.of(rid)
    assert [e.credit.action for e in gone.entries] == ["merge_datasets", "dedupe"]
    assert gone.entries[-1].note == "dedupe --key sequence_ci --keep keep-first"
    assert all(c.after is None for c in gone.entries[-1].changes) and not gone.live and not gone.deleted
