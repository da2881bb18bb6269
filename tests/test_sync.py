"""Sync by log shipping through a `type: local` remote (the same requests and write paths as over ssh,
in this process): status verdicts, prefix pull and push, bootstrap both ways, forks refused with the
fork seq, and what a damaged copy or a damaged transfer does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.syncing import NAME, dna, laptop, make_root, remote_copy, same
from usr_es import Dataset, IntegrityError
from usr_es.errors import Diverged, NotFound
from usr_es.remotes import Remote, RemoteSpec


@pytest.fixture
def here(tmp_path: Path) -> Dataset:
    return laptop(tmp_path / "laptop")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(name="cluster", spec=RemoteSpec(type="local", base_dir=str(make_root(tmp_path / "cluster"))))


def test_push_bootstraps_a_dataset_the_remote_lacks_then_both_are_up_to_date(here: Dataset, remote: Remote) -> None:
    assert here.sync.status(remote).verdict == "remote-missing"
    done = here.sync.push(remote)
    assert (done.transfer_state, done.bootstrap, done.head.seq) == ("TRANSFERRED", True, 2)
    there = remote_copy(remote)
    same(here, there)
    assert there.head(50).num_rows == 30
    found = here.sync.status(remote)
    assert (found.verdict, found.remote_head.hash) == ("up-to-date", _head_hash(there))


def test_push_sends_only_the_missing_lines_and_their_payloads(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    here.add_sequences(dna("second", 40))
    here.delete(here.head(3, columns=["id"]).column("id").to_pylist())
    found = here.sync.status(remote)
    assert found.verdict == "local-ahead"
    assert [e.seq for e in found.local_only] == [3, 4] and found.bytes_to_push > 0
    done = here.sync.push(remote)
    assert (done.appended, done.head.seq, done.head.hash) == (2, 4, _head_hash(here))
    assert done.bytes == found.bytes_to_push
    there = remote_copy(remote)
    same(here, there)
    assert there.info().rows == 67 and there.info().deleted == 3


def test_pull_appends_the_remote_events_through_the_local_write_path(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    there = remote_copy(remote)
    there.add_sequences(dna("made-on-the-cluster", 25))
    assert here.sync.status(remote).verdict == "remote-ahead"
    done = here.sync.pull(remote)
    assert (done.appended, done.head.seq) == (1, 3)
    same(here, there)
    assert here.info().rows == 55
    again = here.sync.pull(remote)
    assert (again.transfer_state, again.appended) == ("NO-OP", 0)


def test_pull_bootstraps_a_dataset_this_side_lacks(tmp_path: Path, here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    elsewhere = Dataset.open(make_root(tmp_path / "desktop"), NAME)
    assert elsewhere.sync.status(remote).verdict == "local-missing"
    done = elsewhere.sync.pull(remote, skip_snapshots=True)
    assert (done.bootstrap, done.head.seq) == (True, 2)
    same(elsewhere, remote_copy(remote))
    assert elsewhere.head(50).num_rows == 30


def test_a_primary_only_bootstrap_folds_the_projections_from_the_log(
    tmp_path: Path, here: Dataset, remote: Remote
) -> None:
    here.sync.push(remote, primary_only=True)
    there = remote_copy(remote)
    same(here, there)
    assert (
        there.head(50, columns=["sequence"]).column("sequence").to_pylist()
        == here.head(50, columns=["sequence"]).column("sequence").to_pylist()
    )


def test_a_fork_is_refused_naming_the_fork_seq_and_both_sides_events(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    there = remote_copy(remote)
    here.add_sequences(dna("laptop-only", 5))
    there.add_sequences(dna("cluster-only", 7))
    there.add_sequences(dna("cluster-again", 7))
    before = (here.log_path.read_bytes(), there.log_path.read_bytes())
    found = here.sync.status(remote)
    assert (found.verdict, found.fork_seq) == ("diverged", 2)
    assert [e.seq for e in found.local_only] == [3] and [e.seq for e in found.remote_only] == [3, 4]
    for move in (here.sync.pull, here.sync.push):
        with pytest.raises(Diverged) as refused:
            move(remote)
        assert refused.value.fork_seq == 2 and "diverged at seq 2" in str(refused.value)
    assert (here.log_path.read_bytes(), there.log_path.read_bytes()) == before


def test_copies_that_share_no_event_are_different_datasets(tmp_path: Path, here: Dataset, remote: Remote) -> None:
    other = remote_copy(remote)
    other.init(source="another dataset of the same name")
    found = here.sync.status(remote)
    assert (found.verdict, found.fork_seq) == ("diverged", 0)
    with pytest.raises(Diverged, match="different datasets"):
        here.sync.pull(remote)
    before = here.log_path.read_bytes()
    with pytest.raises(Diverged, match="different datasets"):  # nothing to put this side's commands after
        here.sync.pull(remote, rebase=True)
    assert here.log_path.read_bytes() == before


def test_a_dry_run_says_what_would_travel_and_moves_nothing(here: Dataset, remote: Remote) -> None:
    done = here.sync.push(remote, dry_run=True)
    assert (done.transfer_state, done.bootstrap) == ("DRY-RUN", True) and done.bytes > 0
    assert not remote_copy(remote).exists


def test_verify_sidecars_runs_usr_verify_on_the_receiving_side_after_a_transfer(
    tmp_path: Path, here: Dataset, remote: Remote
) -> None:
    pushed = here.sync.push(remote, verify_sidecars=True)
    assert pushed.verified is not None and pushed.verified.ok and pushed.verified.files_checked
    there = remote_copy(remote)
    there.add_sequences(dna("cluster", 5))
    pulled = here.sync.pull(remote, verify_sidecars=True)
    assert pulled.appended == 1 and pulled.verified is not None and pulled.verified.ok
    elsewhere = Dataset.open(make_root(tmp_path / "desktop"), NAME)
    booted = elsewhere.sync.pull(remote, verify_sidecars=True)
    assert booted.bootstrap and booted.verified is not None and booted.verified.ok
    assert here.sync.pull(remote, verify_sidecars=True).verified is None  # nothing moved: nothing to verify
    assert here.sync.push(remote).verified is None  # not asked


def test_a_receiving_side_that_fails_verify_after_a_transfer_is_an_error(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    there = remote_copy(remote)
    (damaged,) = (there.dir / "_history").glob("h-*.arrow")  # a projection the next append leaves as it is
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    here.add_sequences(dna("second", 5))
    with pytest.raises(IntegrityError, match="`usr verify` of the receiving side after the push failed"):
        here.sync.push(remote, verify_sidecars=True)
    assert there.log.events()[-1].hash == here.log.events()[-1].hash  # the lines landed: they passed the chain checks


def test_a_payload_damaged_in_transit_is_refused_and_nothing_is_appended(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    receipt = here.add_sequences(dna("damaged", 10))
    line = here.log.events()[-1]
    assert line.seq == receipt.seq and line.payload is not None
    staged = here.dir.parent / "staged"
    (staged / line.payload.file).parent.mkdir(parents=True)
    data = bytearray((here.dir / line.payload.file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (staged / line.payload.file).write_bytes(bytes(data))
    there = remote_copy(remote)
    before = there.log_path.read_bytes()
    with pytest.raises(IntegrityError, match="other bytes than the event records"):
        there.receive_lines(_raw_lines(here)[-1], staged)
    assert there.log_path.read_bytes() == before
    assert here.sync.push(remote).appended == 1  # a clean transfer goes through
    same(here, there)


def test_lines_that_do_not_continue_the_chain_are_refused(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    here.add_sequences(dna("a", 3))
    here.add_sequences(dna("b", 3))
    there = remote_copy(remote)
    with pytest.raises(Exception, match="lines are missing"):
        there.receive_lines(_raw_lines(here)[-1], here.dir)  # seq 4 without seq 3
    tampered = _raw_lines(here)[-2].replace(b'"rows_written":3', b'"rows_written":4')
    with pytest.raises(IntegrityError, match="hash mismatch"):
        there.receive_lines(tampered, here.dir)
    assert there.info().head_seq == 2


def test_a_remote_with_a_corrupt_line_is_reported_not_copied(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    there = remote_copy(remote)
    raw = there.log_path.read_bytes()
    there.log_path.write_bytes(raw.replace(b'"source":"laptop"', b'"source":"lapt0p"', 1))
    with pytest.raises(IntegrityError, match=r"remote 'cluster'.*hash mismatch"):
        here.sync.status(remote)


def test_an_unknown_dataset_on_both_sides_is_not_found(tmp_path: Path, remote: Remote) -> None:
    ghost = Dataset.open(make_root(tmp_path / "empty"), "nobody/here")
    with pytest.raises(NotFound):
        ghost.sync.status(remote)


def _raw_lines(ds: Dataset) -> list[bytes]:
    return [line + b"\n" for line in ds.log_path.read_bytes().splitlines()]


def _head_hash(ds: Dataset) -> str:
    return ds.log.events(n=1)[0].hash


# -- pull --rebase -------------------------------------------------------------------------------------
def _scores(ds: Dataset, ns: str = "mock") -> dict[str, float | None]:
    table = ds.head(1000, columns=["id", f"{ns}__score"])
    return dict(zip(table.column("id").to_pylist(), table.column(f"{ns}__score").to_pylist(), strict=True))


def test_rebase_combines_two_machines_imports_and_attaches(here: Dataset, remote: Remote) -> None:
    import pyarrow as pa

    here.sync.push(remote)
    there = remote_copy(remote)
    ids = here.head(30, columns=["id"]).column("id").to_pylist()
    there.write_overlay("mock", pa.table({"id": ids[:10], "mock__score": [1.0] * 10}), key="id")
    there.add_sequences(dna("cluster-batch", 12))
    mine = here.write_overlay("mock", pa.table({"id": ids[10:20], "mock__score": [2.0] * 10}), key="id")
    here.add_sequences(dna("laptop-batch", 8))
    here.delete(ids[25:27], reason="bad well")
    assert here.sync.status(remote).fork_seq == 2

    preview = here.sync.pull(remote, rebase=True, dry_run=True)
    assert preview.transfer_state == "DRY-RUN" and [c.new_seq for c in preview.rebased] == [5, 6, 7]
    assert here.info().head_seq == 5  # nothing replaced

    done = here.sync.pull(remote, rebase=True)
    assert [(c.old_seq, c.new_seq) for c in done.rebased] == [(3, 5), (4, 6), (5, 7)]
    assert done.rebased[0].command_id == mine.command_id
    events = here.log.events()
    assert [e.action for e in events[2:]] == ["attach", "import_rows", "attach", "import_rows", "tombstone", "rebase"]
    assert events[-1].metrics == {"reapplied": 3, "left_out": 0}
    scores = _scores(here)
    assert [scores[i] for i in ids[:20]] == [1.0] * 10 + [2.0] * 10
    assert here.info().rows == 30 + 12 + 8 - 2
    assert here.verify().ok
    kept = (here.dir / ".events.log.rebased").read_bytes().splitlines()
    assert len(kept) == 3  # the replaced lines, byte for byte
    meta = (here.dir / "meta.md").read_text()
    assert "name: demo/ds" in meta and "import_rows (seq 2)" in meta and "rebase (seq 8)" in meta
    pushed = here.sync.push(remote)  # the other machine takes the combined history as a plain prefix
    assert pushed.appended == 4
    same(here, there)


def test_a_rebased_command_that_no_longer_validates_is_left_out_and_reported(here: Dataset, remote: Remote) -> None:
    import pyarrow as pa

    here.sync.push(remote)
    there = remote_copy(remote)
    ids = here.head(30, columns=["id"]).column("id").to_pylist()
    there.delete(ids[:5])
    there.maintenance.materialize(drop_deleted=True)  # those records are gone on the cluster
    here.write_overlay("mock", pa.table({"id": ids[:5], "mock__score": [3.0] * 5}), key="id")
    here.set_state(ids[20:22], split="train")
    done = here.sync.pull(remote, rebase=True)
    attach, state = done.rebased
    assert attach.new_seq is None and "not present" in attach.reason
    assert state.new_seq is not None
    assert here.log.events()[-1].metrics == {"reapplied": 1, "left_out": 1}
    assert "mock__score" not in here.head(1).column_names or set(_scores(here).values()) <= {None}
    assert here.verify().ok


def test_a_rebase_refuses_when_this_side_changed_meanwhile(
    here: Dataset, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usr_es import ConcurrencyError, rebase

    here.sync.push(remote)
    remote_copy(remote).add_sequences(dna("theirs", 3))
    here.add_sequences(dna("mine", 3))
    real = rebase._swap

    def racing(*args: object, **kwargs: object) -> None:
        here.add_sequences(dna("meanwhile", 2))
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rebase, "_swap", racing)
    with pytest.raises(ConcurrencyError, match="changed here while rebasing"):
        here.sync.pull(remote, rebase=True)
    assert [e.action for e in here.log.events()[2:]] == ["import_rows", "import_rows"]  # mine, then meanwhile
    assert not (here.dir / ".events.log.rebased").exists()
    assert here.verify().ok


def test_a_bootstrap_copy_that_caught_a_write_mid_way_fetches_the_log_again(
    tmp_path: Path, here: Dataset, remote: Remote
) -> None:
    from usr_es.remotes import LocalTransport

    here.sync.push(remote)
    there = remote_copy(remote)
    there.add_sequences(dna("during-the-copy", 6))
    full = there.log_path.read_bytes()

    class WriteDuringCopy(LocalTransport):
        """The whole-folder copy read the log before the last write, its projections after it."""

        def fetch(self, remote_dir: str, local_dir: Path, files: Any = None, *, exclude: Any = ()) -> int:
            sent = super().fetch(remote_dir, local_dir, files, exclude=exclude)
            if files is None:
                (local_dir / ".events.log").write_bytes(full[: full.rstrip(b"\n").rfind(b"\n") + 1])
            return sent

    elsewhere = Dataset.open(make_root(tmp_path / "desktop"), NAME)
    from usr_es import sync

    done = sync.pull(elsewhere.root, elsewhere.dir, NAME, WriteDuringCopy(remote))
    assert done.head.seq == 3
    same(elsewhere, there)


def test_an_ssh_base_dir_under_home_is_given_to_rsync_relative_to_it() -> None:
    from usr_es.remotes import SshTransport

    def at(base_dir: str) -> SshTransport:
        return SshTransport(Remote(name="c", spec=RemoteSpec(host="h", base_dir=base_dir)))

    assert at("~/usr_datasets/").path("demo/ds", ".usr-sync") == "usr_datasets/demo/ds/.usr-sync"
    assert at("~").path("demo/ds") == "demo/ds"
    assert at("/project/me/usr").path("demo/ds") == "/project/me/usr/demo/ds"
    assert at("/project/me/usr")._absolute("~/runs/t.parquet") == "runs/t.parquet"  # file mode, --remote-path
    assert at("/project/me/usr")._absolute("runs/t.parquet") == "/project/me/usr/runs/t.parquet"
