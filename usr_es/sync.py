"""Sync by log shipping (docs/adr/0021): compare two copies of a dataset by seq and chain hash, and send
the side that lacks them only the missing lines and the payload files those lines name.

- status: one request (the other side's head, whether it holds this side's head line, and the lines
  after it); a second one only when the copies forked, to find the fork.
- pull / push: when one log is a prefix of the other, the files go first (into a staging folder), then
  the lines go through the receiving side's write path (`Writer.receive`: its lock, chain check,
  projections, Notify-visible lines). A dataset one side lacks is copied whole (its log last, so the
  copy's projections never run ahead of its log) and installed by `agent.install`.
- A fork is refused, naming the fork seq and both sides' events since.

Every step can be interrupted and run again: staging folders are named by what they hold, copies resume,
and the receiving write path skips the lines it already holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agent import (
    STAGING_DIR,
    Head,
    HeadReply,
    Install,
    Installed,
    LineInfo,
    Lines,
    LinesReply,
    Receive,
    clear_staging,
    install,
)
from .errors import Diverged, NotFound
from .fileio import fileops
from .log import LogLine, read_lines
from .names import LOG_FILE, SNAPSHOT_DIR
from .remotes import Transport
from .results import Received, SideHead, SyncEvent, SyncResult, SyncStatus
from .shipping import artifacts_of

#: How many lines before the shorter head the first fork search asks for (a fork is usually recent).
_FORK_WINDOW = 4096


@dataclass(frozen=True)
class Copying:
    """What a copy of a whole dataset (a bootstrap) leaves out: `primary_only` sends only the log and the
    files it names (the other side folds its projections from the log); `skip_snapshots` leaves out
    the checkpoints."""

    primary_only: bool = False
    skip_snapshots: bool = False

    @property
    def excluded(self) -> tuple[str, ...]:
        return (SNAPSHOT_DIR,) if self.skip_snapshots else ()


@dataclass
class _Compared:
    status: SyncStatus
    local_lines: list[LogLine]
    reply: HeadReply


def _event(info: LineInfo) -> SyncEvent:
    return SyncEvent(
        seq=info.seq, action=info.action, timestamp_utc=info.timestamp_utc, actor=info.actor, command_id=info.command_id
    )


def _local_event(line: LogLine) -> SyncEvent:
    from .agent import line_info

    return _event(line_info(line.record))


def _folder_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and STAGING_DIR not in p.parts)


def _compare(directory: Path, dataset: str, remote: Transport) -> _Compared:
    lines: list[LogLine] = []
    local = SideHead(exists=False)
    if (directory / LOG_FILE).is_file():
        lines, scan = read_lines(directory / LOG_FILE)
        local = SideHead(exists=True, seq=scan.seq, hash=scan.hash, timestamp_utc=scan.last_timestamp or "")
    reply = remote.call(Head(dataset=dataset, known_seq=local.seq, known_hash=local.hash, with_lines=True), HeadReply)
    there = SideHead(exists=reply.exists, seq=reply.seq, hash=reply.hash, timestamp_utc=reply.timestamp_utc)
    name = remote.remote.name
    if not local.exists and not reply.exists:
        raise NotFound(f"Dataset not found on either side: {dataset} (here or on remote '{name}')")

    def status(verdict: str, **fields: Any) -> _Compared:
        found = SyncStatus(
            dataset=dataset,
            remote=name,
            verdict=verdict,
            local=local,
            remote_head=there,
            round_trips=remote.round_trips,
            **fields,
        )
        return _Compared(found, lines, reply)

    if not reply.exists:
        return status(
            "remote-missing", local_only=[_local_event(x) for x in lines], bytes_to_push=_folder_bytes(directory)
        )
    if not local.exists:
        return status(
            "local-missing",
            remote_only=[_event(e) for e in reply.events],
            bytes_to_pull=len(reply.lines) + sum(a.size for a in reply.artifacts),
        )
    if reply.holds_known:
        if reply.seq == local.seq:
            return status("up-to-date")
        wanted = [a for a in reply.artifacts if not (directory / a.file).is_file()]
        return status(
            "remote-ahead",
            remote_only=[_event(e) for e in reply.events],
            bytes_to_pull=len(reply.lines) + sum(a.size for a in wanted),
        )
    if reply.seq <= local.seq and reply.seq and lines[reply.seq - 1].record.hash == reply.hash:
        ahead = lines[reply.seq :]
        sizes = {rel: (directory / rel).stat().st_size for rel in artifacts_of([x.record for x in ahead])}
        return status(
            "local-ahead",
            local_only=[_local_event(x) for x in ahead],
            bytes_to_push=sum(len(x.raw) + 1 for x in ahead) + sum(sizes.values()),
        )
    fork, theirs = _fork(lines, dataset, remote, min(local.seq, reply.seq))
    return status(
        "diverged",
        fork_seq=fork,
        local_only=[_local_event(x) for x in lines[fork:]],
        remote_only=[_event(e) for e in theirs if e.seq > fork],
    )


def _fork(lines: list[LogLine], dataset: str, remote: Transport, shorter: int) -> tuple[int, list[LineInfo]]:
    """The last seq both logs hold the same line at (0: none), and the remote's lines from the window
    searched on. Hash-chained: the same line at seq K means the same lines up to K."""
    start = max(1, shorter - _FORK_WINDOW + 1)
    while True:
        theirs = remote.call(Lines(dataset=dataset, from_seq=start), LinesReply).lines
        same = [i.seq for i in theirs if i.seq <= shorter and lines[i.seq - 1].record.hash == i.hash]
        if same or start == 1:
            return (max(same) if same else 0), theirs
        start = 1


def status(directory: Path, dataset: str, remote: Transport) -> SyncStatus:
    """How the copy in `directory` and the remote's copy of `dataset` compare (read-only on both sides)."""
    return _compare(directory, dataset, remote).status


def _refuse_fork(found: SyncStatus) -> Diverged:
    fork = found.fork_seq or 0
    mine = ", ".join(f"{e.seq} {e.action}" for e in found.local_only[:5])
    theirs = ", ".join(f"{e.seq} {e.action}" for e in found.remote_only[:5])
    if fork == 0:
        return Diverged(
            f"{found.dataset} here and on remote '{found.remote}' share no event: they are different datasets",
            fork_seq=0,
            hint="Pick another dataset id for one of them.",
        )
    return Diverged(
        f"{found.dataset} diverged at seq {fork}: this side has {len(found.local_only)} event(s) since ({mine}), "
        f"remote '{found.remote}' has {len(found.remote_only)} ({theirs}); nothing was transferred",
        fork_seq=fork,
        hint="`usr status DATASET REMOTE` lists both sides' events since the fork.",
    )


def _token(kind: str, seq: int, digest: str) -> str:
    return f"{kind}-{seq}-{digest[:16]}"


def _result(found: SyncStatus, action: str, state: str, **fields: Any) -> SyncResult:
    return SyncResult(
        dataset=found.dataset, remote=found.remote, action=action, transfer_state=state, verdict=found.verdict, **fields
    )


def pull(
    root: Path, directory: Path, dataset: str, remote: Transport, *, dry_run: bool = False, copy: Copying | None = None
) -> SyncResult:
    """Bring the remote's events this copy lacks (or, when it has no copy, the whole dataset) here."""
    compared = _compare(directory, dataset, remote)
    found, reply = compared.status, compared.reply
    if found.verdict == "diverged":
        raise _refuse_fork(found)
    if found.verdict in ("up-to-date", "local-ahead", "remote-missing"):
        message = {
            "up-to-date": "already up to date",
            "local-ahead": f"nothing to pull: this side is {len(found.local_only)} event(s) ahead (push instead)",
            "remote-missing": f"remote '{found.remote}' has no {dataset} (push bootstraps it)",
        }[found.verdict]
        clear_staging(directory)  # what an interrupted pull staged, if its lines made it in
        return _result(
            found,
            "pull",
            "NO-OP",
            appended=0,
            bytes=0,
            files=0,
            head=found.local,
            message=message,
            round_trips=remote.round_trips,
        )
    if dry_run:
        return _result(
            found,
            "pull",
            "DRY-RUN",
            appended=len(found.remote_only),
            bytes=found.bytes_to_pull,
            files=len(reply.artifacts),
            head=found.local,
            bootstrap=found.verdict == "local-missing",
            round_trips=remote.round_trips,
        )
    if found.verdict == "local-missing":
        return _bootstrap_pull(root, dataset, remote, found, copy or Copying())
    staged = directory / STAGING_DIR / _token("pull", reply.seq, reply.hash)
    wanted = [a.file for a in reply.artifacts if not (directory / a.file).is_file()]
    sent = remote.fetch(remote.path(dataset), staged, wanted) if wanted else 0
    fileops().point("after_transfer")
    from .writer import Writer

    received = Writer(root, dataset, directory).receive(reply.lines, staged)
    clear_staging(directory)
    head = SideHead(exists=True, seq=received.seq, hash=received.hash, timestamp_utc=reply.timestamp_utc)
    return _result(
        found,
        "pull",
        "TRANSFERRED",
        appended=received.appended,
        bytes=len(reply.lines) + sent,
        files=len(wanted),
        head=head,
        round_trips=remote.round_trips,
    )


def _bootstrap_pull(root: Path, dataset: str, remote: Transport, found: SyncStatus, copy: Copying) -> SyncResult:
    """Copy the remote's folder whole (its log again last: the copy's projections never run ahead of the
    copy's log, and the files its newer lines name come after it), then install it here."""
    staged = root / STAGING_DIR / _token(dataset.replace("/", "--"), found.remote_head.seq, found.remote_head.hash)
    where = remote.path(dataset)
    sent = 0 if copy.primary_only else remote.fetch(where, staged, exclude=copy.excluded)
    sent += remote.fetch(where, staged, [LOG_FILE])
    lines, _ = read_lines(staged / LOG_FILE)
    missing = [rel for rel in artifacts_of([x.record for x in lines]) if not (staged / rel).is_file()]
    if missing:
        sent += remote.fetch(where, staged, missing)
    fileops().point("after_transfer")
    done = install(root, dataset, staged)
    head = SideHead(exists=True, seq=done.seq, hash=done.hash, timestamp_utc=lines[-1].record.timestamp_utc)
    return _result(
        found,
        "pull",
        "TRANSFERRED",
        appended=done.seq,
        bytes=sent,
        files=len(missing),
        head=head,
        bootstrap=True,
        round_trips=remote.round_trips,
    )


def push(
    directory: Path, dataset: str, remote: Transport, *, dry_run: bool = False, copy: Copying | None = None
) -> SyncResult:
    """Send this copy's events the remote lacks (or, when it has no copy, the whole dataset) there."""
    compared = _compare(directory, dataset, remote)
    found, lines = compared.status, compared.local_lines
    if found.verdict == "diverged":
        raise _refuse_fork(found)
    if found.verdict in ("up-to-date", "remote-ahead", "local-missing"):
        message = {
            "up-to-date": "already up to date",
            "remote-ahead": f"nothing to push: remote '{found.remote}' is {len(found.remote_only)} event(s) ahead "
            "(pull instead)",
            "local-missing": f"no {dataset} here to push",
        }[found.verdict]
        if found.verdict == "local-missing":
            raise NotFound(message, hint="`usr ls` lists this root's datasets.")
        return _result(
            found,
            "push",
            "NO-OP",
            appended=0,
            bytes=0,
            files=0,
            head=found.remote_head,
            message=message,
            round_trips=remote.round_trips,
        )
    if dry_run:
        return _result(
            found,
            "push",
            "DRY-RUN",
            appended=len(found.local_only),
            bytes=found.bytes_to_push,
            files=0,
            head=found.remote_head,
            bootstrap=found.verdict == "remote-missing",
            round_trips=remote.round_trips,
        )
    if found.verdict == "remote-missing":
        token = _token(dataset.replace("/", "--"), found.local.seq, found.local.hash)
        staging = remote.path(STAGING_DIR, token)
        copy = copy or Copying()
        sent = 0 if copy.primary_only else remote.send(directory, staging, exclude=copy.excluded)
        sent += remote.send(directory, staging, [LOG_FILE])
        files = artifacts_of([x.record for x in lines])
        sent += remote.send(directory, staging, files)
        fileops().point("after_transfer")
        done = remote.call(Install(dataset=dataset, staging=token), Installed)
        head = SideHead(exists=True, seq=done.seq, hash=done.hash, timestamp_utc=found.local.timestamp_utc)
        return _result(
            found,
            "push",
            "TRANSFERRED",
            appended=done.seq,
            bytes=sent,
            files=len(files),
            head=head,
            bootstrap=True,
            round_trips=remote.round_trips,
        )
    ahead = lines[found.remote_head.seq :]
    token = _token("push", found.local.seq, found.local.hash)
    files = artifacts_of([x.record for x in ahead])
    sent = remote.send(directory, remote.path(dataset, STAGING_DIR, token), files) if files else 0
    data = b"".join(x.raw + b"\n" for x in ahead)
    fileops().point("after_transfer")
    received = remote.call(Receive(dataset=dataset, staging=token), Received, data)
    head = SideHead(exists=True, seq=received.seq, hash=received.hash, timestamp_utc=found.local.timestamp_utc)
    return _result(
        found,
        "push",
        "TRANSFERRED",
        appended=received.appended,
        bytes=len(data) + sent,
        files=len(files),
        head=head,
        round_trips=remote.round_trips,
    )
