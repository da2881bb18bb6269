"""Sync over a real OpenSSH server on 127.0.0.1 with the real ssh and rsync binaries (tests/sshd.py):
nothing is mocked at the transport; the remote side runs this usr_es as `usr --root BASE _agent`."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshd import Sshd, start_sshd
from tests.syncing import NAME, dna, laptop, make_root, remote_copy, same
from usr_es import Dataset
from usr_es.errors import Diverged, RemoteError
from usr_es.remotes import Remote, doctor, save_remote


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def remote(sshd: Sshd, tmp_path: Path) -> Remote:
    return sshd.remote("cluster", make_root(tmp_path / "cluster"))


@pytest.fixture
def here(tmp_path: Path) -> Dataset:
    return laptop(tmp_path / "laptop")


def test_bootstrap_push_then_prefix_push_and_pull_over_ssh(here: Dataset, remote: Remote) -> None:
    first = here.sync.push(remote)
    assert first.bootstrap and first.transfer_state == "TRANSFERRED"
    there = remote_copy(remote)
    same(here, there)
    here.add_sequences(dna("second", 20))
    pushed = here.sync.push(remote)
    assert (pushed.appended, pushed.files) == (1, 2)  # the import's payload and its frozen registry
    there.add_sequences(dna("on-the-cluster", 10))
    found = here.sync.status(remote)
    assert found.verdict == "remote-ahead" and found.round_trips == 1
    pulled = here.sync.pull(remote)
    assert pulled.appended == 1
    same(here, there)
    assert here.info().rows == 60


def test_bootstrap_pull_over_ssh(tmp_path: Path, here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    elsewhere = Dataset.open(make_root(tmp_path / "desktop"), NAME)
    done = elsewhere.sync.pull(remote)
    assert done.bootstrap and done.head.seq == 2
    same(elsewhere, remote_copy(remote))


def test_a_fork_over_ssh_is_refused_with_the_fork_seq(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    here.add_sequences(dna("mine", 3))
    remote_copy(remote).add_sequences(dna("theirs", 3))
    with pytest.raises(Diverged) as refused:
        here.sync.push(remote)
    assert refused.value.fork_seq == 2


def test_doctor_passes_every_step_against_the_loopback_server(remote: Remote) -> None:
    checks = doctor(remote)
    assert [c.step for c in checks] == [
        "ssh here",
        "rsync here",
        "ssh to the host",
        "usr_es there",
        "rsync there",
        "base_dir there",
    ]
    assert all(c.ok for c in checks), checks


def test_doctor_names_the_failing_step(sshd: Sshd, tmp_path: Path) -> None:
    missing = sshd.remote("nowhere", tmp_path / "no-such-root")
    checks = doctor(missing)
    assert checks[-1].step == "base_dir there" and not checks[-1].ok and "mkdir -p" in checks[-1].fix
    wrong_usr = sshd.remote("no-usr", tmp_path, usr_command="/nonexistent/usr")
    failed = [c for c in doctor(wrong_usr) if not c.ok]
    assert failed[0].step == "usr_es there" and "usr_command" in failed[0].fix
    with pytest.raises(RemoteError, match=r"ssh to \S*127.0.0.1 failed \(exit 127\)") as failed_call:
        Dataset.open(tmp_path, "x/y").sync.status(wrong_usr)
    assert failed_call.value.hint is not None and "usr_command" in failed_call.value.hint


@pytest.mark.crash
def test_pushes_and_pulls_killed_at_random_moments_complete_when_run_again(
    tmp_path: Path, here: Dataset, remote: Remote
) -> None:
    seed = int(os.environ.get("USR_ES_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"seed={seed} (replay with USR_ES_TEST_SEED={seed})")
    rng = random.Random(seed)
    config = tmp_path / "remotes.yaml"
    save_remote(config, "cluster", remote.spec)
    env = {**os.environ, "USR_REMOTES_PATH": str(config)}
    env.pop("USR_ES_CRASH_AT", None)
    here.sync.push(remote)
    there = remote_copy(remote)
    killed = 0
    for round_ in range(4):
        action = "push" if round_ % 2 == 0 else "pull"
        source = here if action == "push" else there
        for k in range(2):
            source.add_sequences(dna(f"round-{round_}-{k}", 2000))
        argv = [sys.executable, "-m", "usr_es", "--root", str(here.root), action, NAME, "cluster", "-y"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        killed += proc.returncode == -signal.SIGKILL
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"seed={seed} round {round_}: {done.stderr}"
        same(here, there)
    print(f"ssh transfers killed mid-way: {killed} of 4")


def test_a_remote_lock_held_by_a_killed_process_does_not_block_the_next_push(here: Dataset, remote: Remote) -> None:
    here.sync.push(remote)
    there = remote_copy(remote)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from usr_es.fileio import locked\n"
         "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)",
         str(there.dir / ".usr.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)  # a pusher that died holding the remote lock
    holder.wait(timeout=30)
    holder.stdout.close()
    here.add_sequences(dna("after-the-crash", 4))
    assert here.sync.push(remote).appended == 1
    same(here, there)


def test_file_mode_over_ssh_replaces_one_file_and_compares_sha256(tmp_path: Path, remote: Remote) -> None:
    from usr_es.remotes import transport
    from usr_es.sync import file_status, file_transfer

    local = tmp_path / "models" / "scores.parquet"
    local.parent.mkdir()
    local.write_bytes(b"PAR1" + bytes(range(256)) * 40 + b"PAR1")
    where = transport(remote)
    assert file_status(local, "files/scores.parquet", where).verdict == "remote-missing"
    pushed = file_transfer("push", local, "files/scores.parquet", where)
    assert (pushed.transfer_state, pushed.bytes) == ("TRANSFERRED", local.stat().st_size)
    (Path(remote.spec.base_dir) / "files" / "scores.parquet").write_bytes(b"PAR1 newer PAR1")
    pulled = file_transfer("pull", local, "files/scores.parquet", where)
    assert pulled.transfer_state == "TRANSFERRED" and local.read_bytes() == b"PAR1 newer PAR1"
    assert file_status(local, "files/scores.parquet", where).verdict == "up-to-date"
