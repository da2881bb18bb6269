"""Adopting dataset folders the original USR wrote (`usr adopt`, docs/adr/0015)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from original_usr import ORIGINAL_ACTIONS, TOMB_TYPES, OriginalFolder, Overlay, sha1_id, stamp
from test_overlay_commands import usr_process as usr

from usr_es import Dataset
from usr_es.errors import IntegrityError, UsrError
from usr_es.fileio import FileOps
from usr_es.original import NotAdopted
from usr_es.registry import register_namespace, split_columns_spec

SEQUENCES = [
    "ACGTACGTAC",
    "GGGTTTAAAC",
    "acgtTTGGCA",
    "TTTTGGGGCC",
    "CAGTCAGTCA",
    "GATTACAGAT",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    register_namespace(path, "lab", split_columns_spec("lab__score:float64,lab__tags:list<string>,lab__note:string"))
    return path


def rich_original() -> OriginalFolder:
    """Parts merged newest-non-null-wins, a compact overlay keyed by sequence, materialized values that an
    overlay null must not hide, tombstones materialized and in `_derived/usr.parquet`, state, an overlay row
    for a record no longer in the base, and one id that is not the sha1 of its row."""
    ids = [sha1_id("dna", s) for s in SEQUENCES]
    ids[5] = "f" * 40  # kept as stored, reported
    return OriginalFolder(
        name="proj/ds",
        sequences=SEQUENCES,
        bad_ids={5: "f" * 40},
        extra={
            "lab__score": (pa.float64(), [1.0, None, 3.0, None, None, None]),
            "usr__deleted": (pa.bool_(), [None, None, None, True, None, None]),
            "usr__deleted_at": (pa.timestamp("us", tz="UTC"), [None, None, None, stamp(9), None, None]),
            "usr__deleted_reason": (pa.string(), [None, None, None, "old", None, None]),
        },
        overlays={
            "lab": [
                Overlay(
                    rows=[
                        {"id": ids[0], "lab__score": None, "lab__tags": ["a"]},
                        {"id": ids[1], "lab__score": 2.0, "lab__tags": None},
                        {"id": "0" * 40, "lab__score": 9.0, "lab__tags": ["gone"]},
                    ],
                    types={"lab__score": pa.float64(), "lab__tags": pa.list_(pa.string())},
                    created=10,
                    name="part-20260102T030410-aaaa.parquet",
                ),
                Overlay(
                    rows=[
                        {"id": ids[1], "lab__score": None, "lab__tags": ["b", "c"]},
                        {"id": ids[2], "lab__score": 30.0, "lab__tags": []},
                    ],
                    types={"lab__score": pa.float64(), "lab__tags": pa.list_(pa.string())},
                    created=20,
                    name="part-20260102T030420-bbbb.parquet",
                ),
                Overlay(  # same created_at as the first: the file name breaks the tie
                    rows=[{"id": ids[0], "lab__score": None, "lab__tags": ["z"]}],
                    types={"lab__score": pa.float64(), "lab__tags": pa.list_(pa.string())},
                    created=10,
                    name="part-20260102T030410-cccc.parquet",
                ),
            ],
            "tagged": [
                Overlay(
                    rows=[
                        {"sequence": "  acgtTTGGCA ", "tagged__label": "x"},
                        {"sequence": "ACGTACGTAC", "tagged__label": "y"},
                    ],
                    types={"tagged__label": pa.string()},
                    key="sequence",
                )
            ],
            "usr": [
                Overlay(
                    rows=[
                        {"id": ids[4], "usr__deleted": True, "usr__deleted_at": stamp(30), "usr__deleted_reason": "qc"},
                        {"id": ids[3], "usr__deleted": None, "usr__deleted_at": None, "usr__deleted_reason": None},
                    ],
                    types=dict(TOMB_TYPES),
                )
            ],
            "usr_state": [
                Overlay(
                    rows=[{"id": ids[0], "usr_state__qc_status": "pass", "usr_state__masked": True}],
                    types={"usr_state__qc_status": pa.string(), "usr_state__masked": pa.bool_()},
                )
            ],
        },
    )


def folder_bytes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".usr.lock"
    }


def shown(
    table: pa.Table, drop: tuple[str, ...] = ("usr_state__qc_status", "usr_state__masked")
) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in drop} for row in table.to_pylist()]


def expected(original: OriginalFolder) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.startswith("usr_state__")} for row in original.view()]


# -- un-adopted datasets are named as such ----------------------------------------------------------
def test_every_command_on_an_unadopted_dataset_says_to_adopt_it_and_changes_nothing(root: Path) -> None:
    folder = rich_original().write(root)
    before = folder_bytes(folder)
    for args in (
        ["info", "proj/ds"],
        ["head", "proj/ds"],
        ["get", "proj/ds", "--id", sha1_id("dna", SEQUENCES[0])],
        ["export", "proj/ds", "--fmt", "parquet", "--out", str(root.parent / "x.parquet")],
        ["verify", "proj/ds"],
        ["delete", "proj/ds", "--id", sha1_id("dna", SEQUENCES[0])],
        ["init", "proj/ds"],
    ):
        done = usr(root, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "was written by the original USR; run `usr adopt proj/ds`" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert folder_bytes(folder) == before
    listed = json.loads(usr(root, "ls", "--format", "json").stdout)["data"]
    assert [(d["dataset"], d["status"], d["rows"]) for d in listed] == [("proj/ds", "original", len(SEQUENCES))]


def test_a_mixed_root_lists_both_kinds_and_adopt_all_adopts_only_the_originals(root: Path, tmp_path: Path) -> None:
    OriginalFolder(name="old/a", sequences=SEQUENCES[:2]).write(root)
    OriginalFolder(name="old/b", sequences=SEQUENCES[2:], log=False).write(root)
    native = Dataset.open(root, "new/c")
    native.init()
    native.add_sequences(["ACGTTT"])
    statuses = {s.dataset: s.status for s in Dataset.list_all(root)}
    assert statuses == {"old/a": "original", "old/b": "original", "new/c": "ok"}
    native_log = native.log_path.read_bytes()
    reports = Dataset.adopt_all(root, dry_run=False)
    assert sorted(r.dataset for r in reports) == ["old/a", "old/b"]
    assert {s.dataset: (s.status, s.rows) for s in Dataset.list_all(root)} == {
        "old/a": ("ok", 2),
        "old/b": ("ok", 4),
        "new/c": ("ok", 1),
    }
    assert native.log_path.read_bytes() == native_log
    assert Dataset.adopt_all(root, dry_run=False) == []


# -- the dry run ------------------------------------------------------------------------------------
def test_the_dry_run_reports_what_it_found_and_writes_nothing(root: Path) -> None:
    original = rich_original()
    folder = original.write(root)
    before = folder_bytes(folder)
    report = Dataset.open(root, "proj/ds").adopt()
    assert report.dry_run and not report.adopted
    assert report.rows == len(SEQUENCES)
    assert report.overlays == {"lab": 3, "tagged": 2, "usr": 2, "usr_state": 1}
    assert report.tombstoned == 1 + 1  # one materialized (row 3: the overlay's null does not undo it), one in usr
    assert report.snapshots == 2
    assert report.registry_hashes == ["ab" * 32]
    assert report.legacy_log_lines == len(ORIGINAL_ACTIONS)
    assert (report.id_mismatches, report.id_mismatch_sample) == (1, ["f" * 40])
    assert any("1 row(s) for records not in the base" in f for f in report.findings)
    assert "records.parquet" in report.files and "_derived/lab/part-20260102T030420-bbbb.parquet" in report.files
    assert folder_bytes(folder) == before
    cli = usr(root, "adopt", "proj/ds")
    assert cli.returncode == 0, cli.stderr
    assert "dry run" in cli.stdout and "usr adopt proj/ds --yes" in cli.stdout
    assert folder_bytes(folder) == before


# -- adopting -----------------------------------------------------------------------------------------
def test_adopting_keeps_every_value_the_original_showed(root: Path) -> None:
    original = rich_original()
    original.write(root)
    report = Dataset.open(root, "proj/ds").adopt(dry_run=False)
    assert report.adopted and report.receipt is not None
    ds = Dataset.open(root, "proj/ds")
    view = ds.view()
    assert shown(view) == expected(original)
    assert view.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert view.schema.field("length").type == pa.int32()
    assert view.schema.field("lab__tags").type == pa.list_(pa.string())
    # get: by id, state included (set values as the original stored them)
    first = ds.get([sha1_id("dna", SEQUENCES[0])]).to_pylist()[0]
    assert (first["lab__score"], first["lab__tags"], first["usr_state__qc_status"]) == (1.0, ["z"], "pass")
    assert first["usr_state__masked"] is True
    # the tombstoned rows are there with include_deleted, their reasons and times as stored
    dead = {r["id"]: r for r in ds.view(include_deleted=True).to_pylist() if r["usr__deleted"]}
    assert {r["usr__deleted_reason"] for r in dead.values()} == {"old", "qc"}
    assert dead[sha1_id("dna", SEQUENCES[4])]["usr__deleted_at"] == stamp(30)
    # export: the same rows
    out = root.parent / "export.parquet"
    ds.export("parquet", out)
    assert shown(pq.read_table(out)) == expected(original)
    verified = ds.verify()
    assert verified.ok, verified


def test_the_original_log_lines_stay_the_logs_byte_prefix_and_readable(root: Path) -> None:
    folder = rich_original().write(root)
    original_log = (folder / ".events.log").read_bytes()
    Dataset.open(root, "proj/ds").adopt(dry_run=False)
    log = (folder / ".events.log").read_bytes()
    assert log.startswith(original_log) and len(log) > len(original_log)  # a Notify byte cursor stays valid
    tail = usr(root, "events", "tail", "proj/ds", "--format", "raw")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.encode().splitlines(keepends=True)
    assert b"".join(lines[: len(ORIGINAL_ACTIONS)]) == original_log
    actions = [json.loads(line)["action"] for line in lines]
    assert actions[: len(ORIGINAL_ACTIONS)] == list(ORIGINAL_ACTIONS)
    assert actions[len(ORIGINAL_ACTIONS)] == "adopt"
    stamps = []
    for line in lines[len(ORIGINAL_ACTIONS) :]:  # every new line keeps what a Notify watcher reads
        record = json.loads(line)
        assert record["event_version"] == 1 and record["actor"]["tool"] and record["dataset"]["name"] == "proj/ds"
        stamps.append(record["timestamp_utc"])
    assert stamps == sorted(set(stamps))  # log time strictly increases, within one command too


def test_an_edited_original_line_is_reported_as_corruption(root: Path) -> None:
    folder = rich_original().write(root)
    Dataset.open(root, "proj/ds").adopt(dry_run=False)
    log = folder / ".events.log"
    log.write_bytes(log.read_bytes().replace(b'"action":"snapshot"', b'"action":"snapshop"', 1))
    for path in (folder / "_index" / "id.json", folder / "_derived" / "layout.json"):
        path.unlink()  # make the next read fold from the start
    with pytest.raises(IntegrityError, match="original USR line"):
        Dataset.open(root, "proj/ds").info()


def test_adopting_twice_changes_nothing(root: Path) -> None:
    folder = rich_original().write(root)
    ds = Dataset.open(root, "proj/ds")
    ds.adopt(dry_run=False)
    before = folder_bytes(folder)
    again = Dataset.open(root, "proj/ds").adopt(dry_run=False)
    assert again.receipt is not None and again.receipt.noop
    assert folder_bytes(folder) == before
    assert Dataset.open(root, "proj/ds").adopt().adopted  # the dry run says so too


def test_the_originals_move_to_legacy_or_stay_with_keep_originals(root: Path) -> None:
    moved = rich_original().write(root)
    originals = folder_bytes(moved)
    Dataset.open(root, "proj/ds").adopt(dry_run=False)
    legacy = moved / "_legacy"
    for rel, digest in originals.items():
        if rel.startswith(("_derived", "_snapshots", "records.parquet", "meta.md")):
            assert folder_bytes(legacy)[rel] == digest, rel
    assert not list((moved / "_snapshots").glob("records-*.parquet"))
    assert not (moved / "_derived" / "tagged.parquet").exists()
    assert (moved / ".events.log").read_bytes().startswith(b'{"event_version":1')

    other = OriginalFolder(name="proj/kept", sequences=SEQUENCES[:3], overlays=rich_original().overlays).write(root)
    Dataset.open(root, "proj/kept").adopt(dry_run=False, keep_originals=True)
    assert (other / "_derived" / "tagged.parquet").is_file()
    assert (other / "_legacy" / "_derived" / "tagged.parquet").is_file()
    assert len(list((other / "_snapshots").glob("records-*.parquet"))) == 2
    kept = Dataset.open(root, "proj/kept")
    assert kept.verify().ok  # the original's files beside usr_es's are not strays
    assert kept.view().num_rows == 3


def test_an_empty_original_and_one_without_a_log_adopt(root: Path) -> None:
    OriginalFolder(name="e/empty", sequences=[]).write(root)
    OriginalFolder(name="e/nolog", sequences=SEQUENCES[:2], log=False).write(root)
    empty = Dataset.open(root, "e/empty")
    assert empty.adopt(dry_run=False).rows == 0
    assert empty.view().num_rows == 0 and empty.info().head_seq == 1
    nolog = Dataset.open(root, "e/nolog")
    assert nolog.adopt(dry_run=False).legacy_log_lines == 0
    assert [r["sequence"] for r in nolog.view().to_pylist()] == SEQUENCES[:2]
    receipt = nolog.add_sequences(["TTTTTTTTTT"])  # an adopted dataset takes writes
    assert receipt.seq == 3 and nolog.info().rows == 3


def test_an_overlay_whose_type_differs_from_the_registry_keeps_its_stored_type(root: Path) -> None:
    ids = [sha1_id("dna", s) for s in SEQUENCES[:2]]
    OriginalFolder(
        name="t/ds",
        sequences=SEQUENCES[:2],
        overlays={"lab": [Overlay(rows=[{"id": ids[0], "lab__score": 5}], types={"lab__score": pa.int64()})]},
    ).write(root)
    ds = Dataset.open(root, "t/ds")
    ds.adopt(dry_run=False)
    view = ds.view()
    assert view.schema.field("lab__score").type == pa.int64()
    assert view.column("lab__score").to_pylist() == [5, None]


def test_an_overlay_with_both_a_file_and_parts_is_refused_as_the_original_refuses_it(root: Path) -> None:
    ids = [sha1_id("dna", s) for s in SEQUENCES[:2]]
    part = Overlay(rows=[{"id": ids[0], "lab__note": "p"}], types={"lab__note": pa.string()}, name="part-1-a.parquet")
    compact = Overlay(rows=[{"id": ids[1], "lab__note": "c"}], types={"lab__note": pa.string()})
    folder = OriginalFolder(name="t/both", sequences=SEQUENCES[:2], overlays={"lab": [part, compact]}).write(root)
    before = folder_bytes(folder)
    with pytest.raises(UsrError, match="both file and directory sources"):
        Dataset.open(root, "t/both").adopt(dry_run=False)
    assert folder_bytes(folder) == before


# -- crashes ------------------------------------------------------------------------------------------
class FailingAppend(FileOps):
    """The log append fails (a full disk): everything before it happened, nothing after."""

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        if path.name == ".events.log" and flags & os.O_APPEND:
            raise OSError(28, "No space left on device")
        return super().open(path, flags, mode)


def test_a_failure_before_the_append_leaves_the_original_usable(root: Path) -> None:
    from usr_es.errors import CommitError
    from usr_es.fileio import use_fileops

    original = rich_original()
    folder = original.write(root)
    before = folder_bytes(folder)
    with use_fileops(FailingAppend()), pytest.raises(CommitError):
        Dataset.open(root, "proj/ds").adopt(dry_run=False)
    after = folder_bytes(folder)
    assert {rel: after.get(rel) for rel in before} == before  # every original file in place, unchanged
    with pytest.raises(NotAdopted):
        Dataset.open(root, "proj/ds").info()
    Dataset.open(root, "proj/ds").adopt(dry_run=False)
    assert shown(Dataset.open(root, "proj/ds").view()) == expected(original)


def torn_adoption(root: Path, tmp_path: Path, whole: int, torn: bytes = b"") -> tuple[Path, bytes]:
    """The state a crash leaves after the adoption of `rich_original()` wrote `whole` of its lines (and the
    bytes `torn` of the next): the originals in place (nothing was published), `_legacy/`, the payloads and
    frozen registry made before the append. Returns the dataset folder and the log bytes it holds."""
    pristine = rich_original().write(tmp_path / "pristine")
    done = rich_original().write(root)
    Dataset.open(root, "proj/ds").adopt(dry_run=False)
    prefix = (pristine / ".events.log").read_bytes()
    chained = (done / ".events.log").read_bytes()[len(prefix) :].splitlines(keepends=True)
    assert len(chained) == 6  # adopt, records, four namespaces
    folder = tmp_path / "torn" / "proj" / "ds"
    shutil.copytree(pristine, folder)
    for kept in ("_legacy", "_payloads", "_registry"):
        shutil.copytree(done / kept, folder / kept, dirs_exist_ok=True)
    shutil.copy(root / "registry.yaml", folder.parent.parent / "registry.yaml")
    log = prefix + b"".join(chained[:whole]) + torn
    (folder / ".events.log").write_bytes(log)
    return folder, log


def test_an_adoption_torn_mid_append_is_refused_until_adopt_finishes_it(root: Path, tmp_path: Path) -> None:
    folder, log = torn_adoption(root, tmp_path, 2, torn=b'{"event_version":1,"timestamp_utc":"20')
    troot = folder.parent.parent
    with pytest.raises(NotAdopted, match="interrupted after 2 of its 6 events"):
        Dataset.open(troot, "proj/ds").head(2)
    finished = Dataset.open(troot, "proj/ds").adopt(dry_run=False)
    assert finished.receipt is not None and finished.receipt.seq == 6
    ds = Dataset.open(troot, "proj/ds")
    assert shown(ds.view()) == expected(rich_original())
    assert ds.verify().ok
    assert (folder / ".events.log").read_bytes().startswith(log[: log.rindex(b"\n") + 1])


# -- the original's merge rule, at random -------------------------------------------------------------
values = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(
        st.tuples(st.integers(0, 3), st.lists(st.tuples(st.integers(0, 5), values), max_size=6)), min_size=1, max_size=4
    ),
    materialized=st.lists(values, min_size=6, max_size=6),
)
def test_adopted_overlays_show_what_the_originals_merge_shows(
    tmp_path_factory: pytest.TempPathFactory,
    parts: list[tuple[int, list[tuple[int, float | None]]]],
    materialized: list[float | None],
) -> None:
    base = tmp_path_factory.mktemp("prop")
    register_namespace(base, "lab", split_columns_spec("lab__score:float64"))
    ids = [sha1_id("dna", s) for s in SEQUENCES]
    overlays = []
    for k, (created, rows) in enumerate(parts):
        distinct = {row: value for row, value in rows}  # one row per key within a part
        overlays.append(
            Overlay(
                rows=[{"id": ids[row], "lab__score": value} for row, value in distinct.items()],
                types={"lab__score": pa.float64()},
                created=created,
                name=f"part-{created}-{k:04d}.parquet",
            )
        )
    original = OriginalFolder(
        name="p/ds", sequences=SEQUENCES, extra={"lab__score": (pa.float64(), materialized)}, overlays={"lab": overlays}
    )
    original.write(base)
    ds = Dataset.open(base, "p/ds")
    ds.adopt(dry_run=False)
    assert shown(ds.view()) == expected(original)


def test_an_uncommitted_attempt_does_not_freeze_what_a_later_adoption_reads(root: Path) -> None:
    from usr_es.errors import CommitError
    from usr_es.fileio import use_fileops

    folder = OriginalFolder(name="s/ds", sequences=SEQUENCES[:2]).write(root)
    with use_fileops(FailingAppend()), pytest.raises(CommitError):
        Dataset.open(root, "s/ds").adopt(dry_run=False)
    grown = OriginalFolder(name="s/ds", sequences=SEQUENCES[:3])  # the original USR went on writing,
    pq.write_table(grown.base(), folder / "records.tmp.parquet")  # as it writes: a temp file, then a rename
    os.replace(folder / "records.tmp.parquet", folder / "records.parquet")
    assert Dataset.open(root, "s/ds").adopt().rows == 3
    Dataset.open(root, "s/ds").adopt(dry_run=False)
    assert Dataset.open(root, "s/ds").view().num_rows == 3
    assert pq.read_metadata(folder / "_legacy" / "records.parquet").num_rows == 3


def test_an_original_whose_log_holds_only_a_torn_fragment_is_still_the_originals(root: Path) -> None:
    folder = OriginalFolder(name="t/ds", sequences=SEQUENCES[:2], log=False).write(root)
    (folder / ".events.log").write_bytes(b'{"event_version":1,"timestamp_utc":"2026-')  # a crash mid-line
    before = folder_bytes(folder)
    with pytest.raises(NotAdopted):
        Dataset.open(root, "t/ds").head(1)
    with pytest.raises(NotAdopted):
        Dataset.open(root, "t/ds").init()
    assert folder_bytes(folder) == before
    assert Dataset.open(root, "t/ds").adopt().rows == 2


def test_verify_fix_reports_an_interrupted_adoption_and_removes_nothing(root: Path, tmp_path: Path) -> None:
    folder, _ = torn_adoption(root, tmp_path, 2)
    before = folder_bytes(folder)
    report = Dataset.at(folder).verify(fix=True)
    assert not report.ok and any("interrupted after 2 of its 6 events" in p for p in report.problems)
    assert folder_bytes(folder) == before


def test_a_path_or_the_current_folder_names_an_original_without_a_log(root: Path) -> None:
    folder = OriginalFolder(name="p/ds", sequences=SEQUENCES[:2], log=False).write(root)
    info = usr(root, "info", str(folder))
    assert info.returncode == 2 and "was written by the original USR" in info.stderr, info.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("USR_")}
    inside = subprocess.run(
        [sys.executable, "-m", "usr_es", "--root", str(root), "adopt", "--yes"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    assert inside.returncode == 0, inside.stderr
    assert Dataset.open(root, "p/ds").view().num_rows == 2
    in_legacy = subprocess.run(  # _legacy/ holds the original's files, but is no dataset of its own
        [sys.executable, "-m", "usr_es", "--root", str(root), "info"],
        cwd=folder / "_legacy",
        env=env,
        capture_output=True,
        text=True,
    )
    assert in_legacy.returncode == 0, in_legacy.stderr
    assert "p/ds" in in_legacy.stdout
