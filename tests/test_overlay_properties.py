"""Random overlay/tombstone/state/maintenance sequences against a dict model; replay and rebuild determinism."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from usr_es import Dataset
from usr_es.alphabet import compute_id
from usr_es.errors import NamespaceError, NotFound
from usr_es.names import INDEX_DIR
from usr_es.registry import register_namespace, split_columns_spec

SETTINGS = settings(
    max_examples=int(os.environ.get("HYP_N", "30")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
ESSENTIAL = ["id", "bio_type", "sequence", "alphabet", "length", "source", "created_at"]
POOL = [
    "ACGTACGTAAcc", "ggttAACCGGTT", "TTTTACGTACGA", "cagtCAGTcagt", "AAAAAAAAAAAG",
    "GATTACAGATTA", "ccccggggAAAA", "TGCATGCATGCA", "AcGtTgCaAcGt", "GGGGGGGGGGGC",
]  # fmt: skip
FIRST = 5  # imported at the start; the rest may be imported by `import` steps
COLUMNS = {
    "mock": {"mock__score": pa.float64(), "mock__label": pa.string(), "mock__vec": pa.list_(pa.float64())},
    "quickstart": {"quickstart__intensity_log2_offset_delta": pa.float64()},
}
SPECS = {
    "mock": "mock__score:float64,mock__label:string,mock__vec:list<float64>",
    "quickstart": "quickstart__intensity_log2_offset_delta:float64",
}
FLAGS = ("usr__deleted", "usr_state__masked")
TOMBSTONE_COLUMNS = ["usr__deleted", "usr__deleted_at", "usr__deleted_reason"]
STATE_FIELDS = ["masked", "qc_status", "split", "supersedes", "lineage"]
KINDS = ["attach", "attach", "attach", "delete", "restore", "set_state", "clear_state", "compact", "materialize",
         "snapshot", "import"]  # fmt: skip

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "mock__score": st.none() | st.integers(-3, 3).map(float),
    "mock__label": st.none() | st.sampled_from(["a", "b", "", "ü"]),
    "mock__vec": st.none() | st.lists(st.sampled_from([0.5, -1.0, 2.0]), max_size=3),
    "quickstart__intensity_log2_offset_delta": st.none() | st.sampled_from([0.0, 1.25, -3.5]),
}


@dataclass
class Model:
    """The expected live table: base rows (with materialized columns) plus merged overlays (ADR 0008)."""

    order: list[str]
    base_cols: list[str] = field(default_factory=list)  # materialized columns, in base order
    base: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> materialized column -> value
    overlays: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # ns -> id -> column -> value
    col_order: dict[str, list[str]] = field(default_factory=dict)  # ns -> columns in first-write order
    parts: dict[str, int] = field(default_factory=dict)  # ns -> live parts

    def write(self, ns: str, rows: dict[str, dict[str, Any]], columns: list[str]) -> None:
        merged = self.overlays.setdefault(ns, {})
        order = self.col_order.setdefault(ns, [])
        order.extend(c for c in columns if c not in order)
        for rid, values in rows.items():
            merged.setdefault(rid, {}).update(values)
        self.parts[ns] = self.parts.get(ns, 0) + 1

    def value(self, rid: str, column: str, namespaces: list[str] | None = None) -> Any:
        ns = column.split("__", 1)[0]
        written = self.overlays.get(ns, {}).get(rid, {}) if namespaces is None or ns in namespaces else {}
        value = written[column] if column in written else self.base.get(rid, {}).get(column)
        return False if column in FLAGS and value is None else value

    def columns(self) -> list[str]:
        out = list(self.base_cols)
        for ns in sorted(self.overlays):
            out.extend(c for c in self.col_order[ns] if c not in out)
        return out

    def rows(self) -> list[dict[str, Any]]:
        columns = self.columns()
        return [{"id": rid, **{c: self.value(rid, c) for c in columns}} for rid in self.order]

    def holds_value(self, ids: list[str], columns: list[str]) -> bool:
        return any(self.value(rid, c) is not None for rid in ids for c in columns)

    def materialize(self, chosen: list[str], *, drop: bool, drop_deleted: bool) -> None:
        added = [c for ns in chosen for c in self.col_order[ns] if c not in self.base_cols]
        columns = [*self.base_cols, *added]
        self.base = {rid: {c: self.value(rid, c, chosen) for c in columns} for rid in self.order}
        self.base_cols = columns
        dropped = [rid for rid in self.order if drop_deleted and self.value(rid, "usr__deleted")]
        if drop:
            for ns in chosen:
                del self.overlays[ns], self.col_order[ns], self.parts[ns]
        if dropped:  # a dropped record is gone for good: its overlay history too (a re-import starts clean)
            self.order = [rid for rid in self.order if rid not in dropped]
            for rid in dropped:
                self.base.pop(rid)
            for ns in self.parts:
                self.parts[ns] += 1  # one purge part per live namespace
                for rid in dropped:
                    self.overlays[ns].pop(rid, None)


@contextmanager
def new_dataset() -> Iterator[tuple[Dataset, Model, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for ns, spec in SPECS.items():
            register_namespace(root, ns, split_columns_spec(spec))
        ds = Dataset.open(root, "prop/ds")
        ds.init(source="property")
        ds.add_sequences(POOL[:FIRST])
        yield ds, Model(order=[compute_id("dna", s) for s in POOL[:FIRST]]), Path(tmp)


def subset(data: st.DataObject, items: list[str]) -> list[str]:
    """A non-empty sub-list of `items`, in a random order."""
    chosen = data.draw(st.lists(st.sampled_from(items), min_size=1, max_size=len(items), unique=True))
    return list(chosen)


def run_step(ds: Dataset, model: Model, data: st.DataObject, imported: list[str]) -> str:
    """Draw one command, run it through the API, and update the model; returns the action run."""
    kind = data.draw(st.sampled_from(KINDS))
    ids = model.order
    if kind in ("attach", "delete", "restore", "set_state", "clear_state") and not ids:
        kind = "import"
    if kind == "import":
        absent = [s for s in POOL if compute_id("dna", s) not in model.order]
        fresh = sorted(absent, key=lambda s: s not in imported)  # dropped ones first: re-imports are the edge
        if not fresh:
            return "skipped"
        new = data.draw(st.lists(st.sampled_from(fresh), min_size=1, max_size=2, unique=True))
        ds.add_sequences(new)
        revived = any(s in imported for s in new)
        imported.extend(s for s in new if s not in imported)
        model.order.extend(compute_id("dna", s) for s in new)
        return "import-revived" if revived else kind
    if kind == "attach":
        ns = data.draw(st.sampled_from(sorted(COLUMNS)))
        columns = subset(data, list(COLUMNS[ns]))
        targets = subset(data, ids)
        rows = {rid: {c: data.draw(VALUES[c]) for c in columns} for rid in targets}
        bare = data.draw(st.booleans())
        table = {"id": pa.array(targets, pa.string())}
        for c in columns:
            name = c.split("__", 1)[1] if bare else c
            table[name] = pa.array([rows[rid][c] for rid in targets], COLUMNS[ns][c])
        overwrite = data.draw(st.booleans())
        if not overwrite and model.holds_value(targets, columns):
            log = ds.log_path.read_bytes()
            with pytest.raises(NamespaceError):
                ds.write_overlay(ns, table, allow_overwrite=False)
            assert ds.log_path.read_bytes() == log
            return "attach-refused"
        ds.write_overlay(ns, table, allow_overwrite=overwrite)
        model.write(ns, rows, columns)
        return kind
    if kind in ("delete", "restore"):
        targets = subset(data, ids)
        if kind == "delete":
            reason = data.draw(st.sampled_from(["", "bad", "dup"]))
            at = datetime.fromisoformat(ds.delete(targets, reason=reason).timestamp_utc)
            row = {"usr__deleted": True, "usr__deleted_at": at, "usr__deleted_reason": reason or None}
        else:
            ds.restore(targets)
            row = {"usr__deleted": False, "usr__deleted_at": None, "usr__deleted_reason": None}
        model.write("usr", {rid: dict(row) for rid in targets}, TOMBSTONE_COLUMNS)
        return kind
    if kind in ("set_state", "clear_state"):
        targets = subset(data, ids)
        if kind == "clear_state":
            ds.clear_state(targets)
            values: dict[str, Any] = dict.fromkeys(STATE_FIELDS)
        else:
            options = {
                "masked": st.booleans(),
                "qc_status": st.sampled_from(["pass", "fail", "warn", "unknown"]),
                "split": st.sampled_from(["train", "val", "test", "holdout"]),
                "supersedes": st.sampled_from(ids),
                "lineage": st.lists(st.sampled_from(["p1", "p2", "p3"]), max_size=2),
            }
            names = set(subset(data, STATE_FIELDS))
            values = {name: data.draw(options[name]) for name in STATE_FIELDS if name in names}
            ds.set_state(targets, **values)
        columns = [f"usr_state__{name}" for name in values]
        model.write("usr_state", {rid: {f"usr_state__{k}": v for k, v in values.items()} for rid in targets}, columns)
        return kind
    if kind == "compact":
        ns = data.draw(st.sampled_from([*sorted(COLUMNS), "usr", "usr_state"]))
        if ns not in model.parts:
            with pytest.raises(NotFound):
                ds.maintenance.compact_overlay(ns)
            return "compact-refused"
        receipt = ds.maintenance.compact_overlay(ns)
        assert receipt.noop == (model.parts[ns] == 1)
        model.parts[ns] = 1
        return kind
    if kind == "materialize":
        live = sorted(ns for ns in model.parts if ns != "usr")
        namespaces = subset(data, live) if live and data.draw(st.booleans()) else None
        mode = data.draw(st.sampled_from(["keep", "drop", "archive"]))
        drop_deleted = data.draw(st.booleans())
        receipt = ds.maintenance.materialize(
            namespaces=namespaces,
            drop_overlays=mode == "drop",
            archive_overlays=mode == "archive",
            drop_deleted=drop_deleted,
            snapshot_before=data.draw(st.booleans()),
        )
        chosen = sorted(namespaces) if namespaces is not None else live
        doomed = drop_deleted and any(model.value(rid, "usr__deleted") for rid in model.order)
        assert receipt.noop == (not chosen and not doomed), receipt
        if not receipt.noop:
            model.materialize(chosen, drop=mode != "keep", drop_deleted=drop_deleted)
        return kind
    assert kind == "snapshot"
    ds.maintenance.snapshot()
    return kind


def assert_matches_model(ds: Dataset, model: Model) -> None:
    view = Dataset.open(ds.root, ds.name).view(include_deleted=True)  # a fresh reader, not the writer's object
    assert view.column_names[: len(ESSENTIAL)] == ESSENTIAL
    assert view.column_names[len(ESSENTIAL) :] == model.columns()
    assert view.select(["id", *model.columns()]).to_pylist() == model.rows()
    shown = [rid for rid in model.order if not model.value(rid, "usr__deleted")]
    assert ds.view().column("id").to_pylist() == shown
    info = ds.info()
    assert (info.rows, info.deleted) == (len(shown), len(model.order) - len(shown))
    assert info.columns == [c.name for c in ds.schema()] == ds.view().column_names
    if model.order:
        wanted = list(reversed(model.order))
        state = ds.get_state(wanted).to_pylist()
        assert state == [{"id": rid, **{f"usr_state__{f}": model.value(rid, f"usr_state__{f}") for f in STATE_FIELDS}}
                         for rid in wanted]  # fmt: skip
    report = ds.maintenance.validate(strict=True)
    assert report.ok, report.problems


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".usr")
    }


def projections(directory: Path) -> dict[str, bytes]:
    files = tree(directory)
    return {k: v for k, v in files.items() if k == "records.parquet" or k.startswith(("_derived/", INDEX_DIR))}


@SETTINGS
@given(data=st.data(), steps=st.integers(1, 15))
def test_random_command_sequence_matches_model_and_verifies_after_every_step(data: st.DataObject, steps: int) -> None:
    with new_dataset() as (ds, model, _), mock.patch.dict(os.environ, {"USR_CHECKPOINT_EVERY": "5"}):
        imported = list(POOL[:FIRST])
        for _ in range(steps):
            event(run_step(ds, model, data, imported))
            assert_matches_model(ds, model)
            report = ds.verify()
            assert report.ok, report.problems


@SETTINGS
@given(data=st.data(), steps=st.integers(2, 12))
def test_replay_until_is_identical_with_and_without_checkpoints(data: st.DataObject, steps: int) -> None:
    with new_dataset() as (ds, model, tmp), mock.patch.dict(os.environ, {"USR_CHECKPOINT_EVERY": "3"}):
        imported = list(POOL[:FIRST])
        for _ in range(steps):
            run_step(ds, model, data, imported)
        snapshots = [record.seq for record in ds.log.events() if record.action == "snapshot"]
        bare = tmp / "copy" / "prop" / "ds"
        shutil.copytree(ds.dir, bare, ignore=shutil.ignore_patterns("_snapshots"))
        head = ds.info().head_seq
        cuts = data.draw(st.lists(st.integers(1, head), min_size=1, max_size=3, unique=True))
        for cut in cuts:
            with_cp = ds.log.replay(cut, tmp / f"with-{cut}")
            without = Dataset.at(bare).log.replay(cut, tmp / f"without-{cut}")
            assert without.from_checkpoint is None
            assert with_cp.notes == []
            if with_cp.from_checkpoint is not None:
                assert with_cp.from_checkpoint <= cut
            if any(s <= cut for s in snapshots):
                assert with_cp.from_checkpoint is not None
                assert with_cp.from_checkpoint >= max(s for s in snapshots if s <= cut)
            assert tree(tmp / f"with-{cut}") == tree(tmp / f"without-{cut}")


@SETTINGS
@given(data=st.data(), steps=st.integers(1, 10))
def test_incremental_projections_equal_a_full_rebuild(data: st.DataObject, steps: int) -> None:
    with new_dataset() as (ds, model, _), mock.patch.dict(os.environ, {"USR_CHECKPOINT_EVERY": "4"}):
        imported = list(POOL[:FIRST])
        for _ in range(steps):
            run_step(ds, model, data, imported)
        incremental = projections(ds.dir)
        for from_checkpoints in (True, False):
            if not from_checkpoints:
                shutil.rmtree(ds.dir / "_snapshots", ignore_errors=True)
            ds.records_path.unlink()
            shutil.rmtree(ds.dir / "_derived", ignore_errors=True)
            ds.maintenance.rebuild()
            assert projections(ds.dir) == incremental
