"""Issue 14 in `make bench`: sync of a 1M-row dataset over a real OpenSSH server on 127.0.0.1 (the tests'
server, tests/sshd.py), against a plain `rsync -a` of the same folder over the same server.

- bootstrap: `usr pull` of a dataset this side lacks vs `rsync -a` of its folder (median of 5 each,
  alternating, the page cache's dirty pages written out before each);
- one 1,000-row import on the remote side, then `usr pull`: its wall time, the bytes it reports (lines
  and files) and the bytes the loopback interface carried both ways (ssh and rsync framing included),
  against the size of that event's line and payload;
- `usr diff` of up-to-date copies (median of 5) and the ssh sessions it opens.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PULL_SECONDS = 1.5
PULL_BYTES_RATIO = 2.0
DIFF_SECONDS = 0.5
BOOTSTRAP_RATIO = 1.3
RUNS = 5


def loopback_bytes() -> int:
    """Bytes the loopback interface has received so far (each byte sent over it is received once)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[0])
    return 0


def sync_surface(
    run: Callable[..., Any], *, env: dict[str, str], root: Path, dataset: str, scratch: Path, registry: Path
) -> tuple[list[tuple[str, str, str, bool | None]], dict[str, Any]]:
    """The sync figures as (label, figure, target, ok) rows, and the raw numbers."""
    from tests.sshd import start_sshd
    from usr_es.remotes import save_remote

    server = start_sshd(scratch / "sshd")
    try:
        remote_root, here, plain = scratch / "remote", scratch / "here", scratch / "plain"
        for folder in (remote_root, here):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(registry, folder / "registry.yaml")
        remote = server.remote("loopback", remote_root)
        config = scratch / "remotes.yaml"
        save_remote(config, "loopback", remote.spec)
        envs = {**env, "USR_REMOTES_PATH": str(config)}
        ssh = shlex.join(_ssh_argv(remote))
        source = root / dataset
        seed = [
            "rsync", "-a", "--exclude", ".usr.lock", "-e", ssh, f"{source}/",
            f"{remote.spec.user}@127.0.0.1:{remote_root / dataset}/",
        ]  # fmt: skip
        (remote_root / dataset).parent.mkdir(parents=True, exist_ok=True)
        run(seed, env=env, what="rsync (seed the remote)")

        plain_runs, pull_runs = [], []
        for _ in range(RUNS):
            shutil.rmtree(plain, ignore_errors=True)
            plain.mkdir()
            os.sync()  # the last copy's writeback is not charged to the next one
            fetched = run(
                ["rsync", "-a", "-e", ssh, f"{remote.spec.user}@127.0.0.1:{remote_root / dataset}/", f"{plain}/"],
                env=env,
                what="rsync -a (bootstrap baseline)",
            )
            plain_runs.append(fetched.seconds)
            shutil.rmtree(here / dataset, ignore_errors=True)
            os.sync()
            pulled = run(
                [str(Path(sys.executable).parent / "usr"), "--root", str(here), "pull", dataset, "loopback", "-y",
                 "--format", "json"],
                env=envs,
                what="usr pull (bootstrap)",
            )  # fmt: skip
            pull_runs.append(pulled.seconds)
        boot_plain, boot_pull = statistics.median(plain_runs), statistics.median(pull_runs)

        small = scratch / "small.csv"
        small.write_text("sequence\n" + "\n".join(_dna(i) for i in range(1000)) + "\n")
        usr = [str(Path(sys.executable).parent / "usr")]
        run([*usr, "--root", str(remote_root), "import", dataset, "--from", "csv", "--path", str(small)], env=env,
            what="usr import (remote side)")  # fmt: skip
        event = _last_event(remote_root / dataset)
        event_bytes = event["line"] + event["payload"]
        before = loopback_bytes()
        pulled = run([*usr, "--root", str(here), "pull", dataset, "loopback", "-y", "--format", "json"], env=envs,
                     what="usr pull (1,000-row import)")  # fmt: skip
        wire = loopback_bytes() - before
        reported = pulled.data()["result"]["bytes"]

        diffs, trips = [], 0
        for _ in range(5):
            diffed = run([*usr, "--root", str(here), "diff", dataset, "loopback", "--format", "json"], env=envs,
                         what="usr diff (up to date)")  # fmt: skip
            diffs.append(diffed.seconds)
            data = diffed.data()
            trips = data["round_trips"]
            assert data["verdict"] == "up-to-date", data
        diff_s = statistics.median(diffs)
    finally:
        server.stop()
    rows = [
        (
            f"`usr pull` bootstrap of {dataset} (1M rows; median of {RUNS}) over ssh on 127.0.0.1",
            f"{boot_pull:.2f} s = {boot_pull / boot_plain:.2f}× `rsync -a` of the folder ({boot_plain:.2f} s)",
            f"≤ {BOOTSTRAP_RATIO}×",
            boot_pull / boot_plain <= BOOTSTRAP_RATIO,
        ),
        (
            "`usr pull` of one 1,000-row import made on the remote",
            f"{pulled.seconds:.2f} s; moved {reported:,} bytes of lines and files = "
            f"{reported / event_bytes:.2f}× the event's line + payload ({event_bytes:,} bytes); the loopback carried "
            f"{wire:,} bytes both ways, ssh and rsync framing included ({wire / event_bytes:.2f}×)",
            f"≤ {PULL_SECONDS} s, ≤ {PULL_BYTES_RATIO}×",
            pulled.seconds <= PULL_SECONDS and reported <= PULL_BYTES_RATIO * event_bytes,
        ),
        (
            "`usr diff DATASET REMOTE` of up-to-date 1M-row copies (median of 5)",
            f"{diff_s:.3f} s, {trips} ssh session(s)",
            f"≤ {DIFF_SECONDS} s, constant sessions",
            diff_s <= DIFF_SECONDS and trips == 1,
        ),
    ]
    raw = {
        "bootstrap": (boot_pull, boot_plain),
        "bootstrap_runs": (pull_runs, plain_runs),
        "pull": pulled.seconds,
        "bytes": (reported, wire, event_bytes),
    }
    return rows, raw


def _ssh_argv(remote: Any) -> list[str]:
    from usr_es.remotes import SshTransport

    return SshTransport(remote).ssh_command()


def _dna(i: int) -> str:
    import random

    rng = random.Random(i)
    return "".join(rng.choice("ACGT") for _ in range(60))


def _last_event(directory: Path) -> dict[str, int]:
    """The size of the log's last line and of its payload file."""
    lines = (directory / ".events.log").read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    payload = record.get("payload") or {}
    size = (directory / payload["file"]).stat().st_size if payload else 0
    return {"line": len(lines[-1]), "payload": size}
