"""`usr remotes`, `usr status`, `usr diff DATASET REMOTE`, `usr pull`, `usr push` as a user runs them
(a `type: local` remote; tests/test_sync_ssh.py runs the same over a real sshd), and transfers killed at
each step of both sides, then run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from usr_es import Dataset
from usr_es.registry import register_namespace, split_columns_spec

NAME = "demo/ds"
CSV = "sequence\nACGTACGTAAGG\nACGTTTTTAACC\nGGGTTTAAACCC\n"


def _usr(*args: str, env: dict[str, str], check: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "usr_es", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if check is not None:
        assert done.returncode == check, done.stderr
    return done


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    here, there = tmp_path / "laptop", tmp_path / "cluster"
    for root in (here, there):
        register_namespace(root, "mock", split_columns_spec("mock__score:float64"))
    env = {**os.environ, "USR_REMOTES_PATH": str(tmp_path / "remotes.yaml"), "PYTHONPATH": str(Path.cwd())}
    env.pop("USR_ES_CRASH_AT", None)
    (tmp_path / "rows.csv").write_text(CSV)
    _usr("--root", str(here), "init", NAME, "--source", "laptop", env=env)
    _usr("--root", str(here), "import", NAME, "--from", "csv", "--path", str(tmp_path / "rows.csv"), env=env)
    _usr("remotes", "add", "cluster", "--type", "local", "--base-dir", str(there), env=env)
    return {"here": here, "there": there, "env": env, "tmp": tmp_path}


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)["data"]


def test_remotes_add_list_show_and_wizard_edit_one_config(world: dict[str, Any]) -> None:
    env = world["env"]
    _usr("remotes", "wizard", "--user", "me", "--base-dir", "/project/me/usr", env=env)
    listed = _usr("remotes", "list", env=env).stdout.splitlines()
    assert listed == [
        "bu-scc\tssh\tme@scc1.bu.edu:/project/me/usr\tauth=batch",
        f"cluster\tlocal\t{world['there']}\tauth=batch",
    ]
    shown = _json(_usr("remotes", "show", "bu-scc", "--format", "json", env=env))
    assert shown["spec"]["host"] == "scc1.bu.edu" and shown["spec"]["user"] == "me"
    again = _usr("remotes", "add", "cluster", "--type", "local", "--base-dir", "/x", env=env, check=3)
    assert "exists already" in again.stderr and "--replace" in again.stderr
    unset = {k: v for k, v in env.items() if k != "USR_REMOTES_PATH"}
    missing = _usr("remotes", "list", env=unset, check=2)
    assert missing.stderr.startswith("error: USR_REMOTES_PATH is required")


def test_status_push_pull_and_the_audit_file(world: dict[str, Any]) -> None:
    here, there, env, tmp = world["here"], world["there"], world["env"], world["tmp"]
    before = _json(_usr("--root", str(here), "status", NAME, "cluster", "--format", "json", env=env))
    assert before["verdict"] == "remote-missing"
    pushed = _usr("--root", str(here), "push", NAME, "cluster", "-y", "--verify-sidecars", env=env)
    assert "Push complete." in pushed.stdout and "usr verify on the receiving side: OK" in pushed.stdout
    Dataset.open(there, NAME).add_sequences(["TTTTGGGGCCCCAAAA"])
    audit = tmp / "audit.json"
    found = _usr("--root", str(here), "diff", NAME, "cluster", "--audit-json-out", str(audit), env=env)
    assert "remote ahead (pull brings 1 event(s))" in found.stdout
    written = json.loads(audit.read_text())["data"]
    assert (written["transfer_state"], written[".events.log"]["remote_only"]) == ("DIFF-ONLY", 1)
    pulled = _json(_usr("--root", str(here), "pull", NAME, "cluster", "-y", "--format", "json", env=env))
    assert pulled["result"]["appended"] == 1 and pulled["verify"]["primary"] == "seq+chain-hash"
    assert (here / NAME / ".events.log").read_bytes() == (there / NAME / ".events.log").read_bytes()


def test_a_fork_exits_5_naming_the_seq_and_changes_nothing(world: dict[str, Any]) -> None:
    here, there, env = world["here"], world["there"], world["env"]
    _usr("--root", str(here), "push", NAME, "cluster", "-y", env=env)
    Dataset.open(here, NAME).add_sequences(["ACACACACACAC"])
    Dataset.open(there, NAME).add_sequences(["GTGTGTGTGTGT"])
    refused = _usr("--root", str(here), "pull", NAME, "cluster", "-y", env=env, check=5)
    assert refused.stderr.startswith("error: demo/ds diverged at seq 2") and "hint:" in refused.stderr
    shown = _usr("--root", str(here), "status", NAME, "cluster", env=env)
    assert "DIVERGED at seq 2" in shown.stdout and "only here: seq 3" in shown.stdout
    assert "only there: seq 3" in shown.stdout


def test_diff_with_a_remote_refuses_points(world: dict[str, Any]) -> None:
    refused = _usr("--root", str(world["here"]), "diff", NAME, "cluster", "--from", "1", env=world["env"], check=2)
    assert "no --from/--to" in refused.stderr


PULL_POINTS = ["after_transfer", "after_place", "after_write:log", "after_append", "after_publish"]


@pytest.mark.crash
@pytest.mark.parametrize("point", PULL_POINTS)
@pytest.mark.parametrize("action", ["pull", "push"])
def test_a_transfer_killed_at_any_step_completes_when_run_again(world: dict[str, Any], action: str, point: str) -> None:
    here, there, env = world["here"], world["there"], world["env"]
    _usr("--root", str(here), "push", NAME, "cluster", "-y", env=env)
    source = Dataset.open(there if action == "pull" else here, NAME)
    for k in range(3):
        source.add_sequences([f"ACGT{'ACGT' * k}TTGGCCAA"])
    killed = _usr("--root", str(here), action, NAME, "cluster", "-y", env={**env, "USR_ES_CRASH_AT": point}, check=None)
    assert killed.returncode == 137, killed.stderr
    again = _json(_usr("--root", str(here), action, NAME, "cluster", "-y", "--format", "json", env=env))
    logs = [(root / NAME / ".events.log").read_bytes() for root in (here, there)]
    assert logs[0] == logs[1]  # every line once, in order
    assert again["result"]["head"]["seq"] == 5
    for root in (here, there):
        report = Dataset.open(root, NAME).verify()
        assert report.ok, report.problems
    source.add_sequences(["CCCCAAAAGGGGTTTT"])  # the next transfer clears what the killed one staged
    _usr("--root", str(here), action, NAME, "cluster", "-y", env=env)
    assert not list(here.glob("**/.usr-sync")) + list(there.glob("**/.usr-sync"))


def test_file_mode_compares_pulls_and_pushes_one_file_by_path(world: dict[str, Any]) -> None:
    there, env, tmp = world["there"], world["env"], world["tmp"]
    local = tmp / "repo" / "runs" / "42" / "table.parquet"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"PAR1 first version PAR1")
    remote_file = "shared/table.parquet"
    args = ["--remote-path", remote_file]
    found = _json(_usr("status", str(local), "cluster", *args, "--format", "json", env=env))
    assert found["verdict"] == "remote-missing" and found["local"]["sha256"]
    pushed = _usr("push", str(local), "cluster", *args, "-y", env=env)
    assert "Push complete." in pushed.stdout and (there / remote_file).read_bytes() == local.read_bytes()
    (there / remote_file).write_bytes(b"PAR1 made on the cluster PAR1")
    assert "DIFFER" in _usr("diff", str(local), "cluster", *args, env=env).stdout
    pulled = _json(_usr("pull", str(local), "cluster", *args, "-y", "--format", "json", env=env))
    assert pulled["transfer_state"] == "TRANSFERRED" and local.read_bytes() == b"PAR1 made on the cluster PAR1"
    again = _json(_usr("pull", str(local), "cluster", *args, "-y", "--format", "json", env=env))
    assert again["transfer_state"] == "NO-OP"
    refused = _usr("pull", str(local), "cluster", *args, "-y", "--verify-sidecars", env=env, check=2)
    assert "dataset-only flags" in refused.stderr
    unmapped = _usr("status", str(local), "cluster", env=env, check=2)
    assert "--remote-path" in unmapped.stderr
    _usr("remotes", "add", "mapped", "--type", "local", "--base-dir", str(there), env=env)
    config = Path(env["USR_REMOTES_PATH"])
    config.write_text(config.read_text().replace("  mapped:\n", f"  mapped:\n    repo_root: {there}/mirror\n"))
    mapped = _usr("push", str(local), "mapped", "--repo-root", str(tmp / "repo"), "-y", env=env)
    assert "Push complete." in mapped.stdout
    assert (there / "mirror" / "runs" / "42" / "table.parquet").read_bytes() == local.read_bytes()


def test_dataset_directory_mode_names_the_dataset_by_its_folder(world: dict[str, Any]) -> None:
    here, there, env, tmp = world["here"], world["there"], world["env"], world["tmp"]
    outside = tmp / "scratch" / "copy-of-ds"
    outside.parent.mkdir()
    import shutil

    shutil.copytree(here / NAME, outside)  # a dataset folder outside any --root
    pushed = _usr("push", str(outside), "cluster", "-y", env=env)
    assert "Push complete." in pushed.stdout
    assert (there / NAME / ".events.log").read_bytes() == (outside / ".events.log").read_bytes()
    found = _json(_usr("diff", str(outside), "cluster", "--format", "json", env=env))
    assert (found["dataset"], found["verdict"]) == (NAME, "up-to-date")
