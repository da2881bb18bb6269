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
    Head,
    HeadReply,
    Lines,
    LinesReply,
    Receive,
    Stat,
    Verify,
    clear_staging,
    file_stat,
    line_info,
)
from .bootstrap import Copying, bootstrap_pull, bootstrap_push, holds, token, verified, verify_here
from .errors import Diverged, IntegrityError, InvalidInput, NotFound
from .fileio import fileops
from .log import LogLine, read_lines
from .names import LOG_FILE, STAGING_DIR
from .remotes import Transport
from .results import (
    FileSide,
    FileSyncResult,
    FileSyncStatus,
    Received,
    SideHead,
    SyncEvent,
    SyncResult,
    SyncStatus,
    VerifyReport,
)
from .shipping import artifacts_of, safe_artifact, stage_files

#: How many lines before the shorter head the first fork search asks for (a fork is usually recent).
_FORK_WINDOW = 4096


@dataclass
class _Compared:
    status: SyncStatus
    local_lines: list[LogLine]
    reply: HeadReply


def _folder_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and STAGING_DIR not in p.parts)


#: A pull or push whose files total at most this many bytes sends them in its request or reply: no copy of
#: its own (one ssh session fewer: a small pull is one session).
INLINE_BYTES = 8 << 20


def _compare(directory: Path, dataset: str, remote: Transport, *, inline: bool = False) -> _Compared:
    """Both heads and the verdict (one request; a second to find a fork). `inline`: a pull asks for the
    files the new lines name within the reply when they are small."""
    lines: list[LogLine] = []
    local = SideHead(exists=False)
    if (directory / LOG_FILE).is_file():
        lines, scan = read_lines(directory / LOG_FILE)
        local = SideHead(exists=True, seq=scan.seq, hash=scan.hash, timestamp_utc=scan.last_timestamp or "")
    asked = Head(
        dataset=dataset,
        known_seq=local.seq,
        known_hash=local.hash,
        with_lines=True,
        inline_limit=INLINE_BYTES if inline else 0,
    )
    reply = remote.call(asked, HeadReply)
    for artifact in reply.artifacts:
        safe_artifact(artifact.file)
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
            "remote-missing", local_only=[line_info(x.record) for x in lines], bytes_to_push=_folder_bytes(directory)
        )
    if not local.exists:
        return status(
            "local-missing",
            remote_only=list(reply.events),
            bytes_to_pull=len(reply.lines) + sum(a.size for a in reply.artifacts),
        )
    if reply.holds_known:
        if reply.seq == local.seq:
            return status("up-to-date")
        wanted = [a for a in reply.artifacts if not (directory / a.file).is_file()]
        return status(
            "remote-ahead",
            remote_only=list(reply.events),
            bytes_to_pull=len(reply.lines) + sum(a.size for a in wanted),
        )
    if reply.seq <= local.seq and reply.seq and lines[reply.seq - 1].record.hash == reply.hash:
        ahead = lines[reply.seq :]
        sizes = {rel: (directory / rel).stat().st_size for rel in artifacts_of([x.record for x in ahead])}
        return status(
            "local-ahead",
            local_only=[line_info(x.record) for x in ahead],
            bytes_to_push=sum(len(x.raw) + 1 for x in ahead) + sum(sizes.values()),
        )
    fork, theirs = _fork(lines, dataset, remote, min(local.seq, reply.seq))
    return status(
        "diverged",
        fork_seq=fork,
        local_only=[line_info(x.record) for x in lines[fork:]],
        remote_only=[e for e in theirs if e.seq > fork],
    )


def _fork(lines: list[LogLine], dataset: str, remote: Transport, shorter: int) -> tuple[int, list[SyncEvent]]:
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
        hint="`usr status DATASET REMOTE` lists both sides' events since the fork; `usr pull --rebase` puts this "
        "side's commands after the remote's.",
    )


def _result(found: SyncStatus, action: str, state: str, **fields: Any) -> SyncResult:
    return SyncResult(
        dataset=found.dataset, remote=found.remote, action=action, transfer_state=state, verdict=found.verdict, **fields
    )


def _unmoved(
    found: SyncStatus, action: str, state: str, remote: Transport, *, message: str = "", files: int = 0
) -> SyncResult:
    """A pull or push that moved nothing: `NO-OP`, or `DRY-RUN` with what would travel to the receiving
    side (whose head it reports)."""
    pulling, dry = action == "pull", state == "DRY-RUN"
    return _result(
        found,
        action,
        state,
        appended=len(found.remote_only if pulling else found.local_only) if dry else 0,
        bytes=(found.bytes_to_pull if pulling else found.bytes_to_push) if dry else 0,
        files=files,
        head=found.local if pulling else found.remote_head,
        bootstrap=dry and found.verdict == ("local-missing" if pulling else "remote-missing"),
        message=message,
        round_trips=remote.round_trips,
    )


def pull(
    root: Path,
    directory: Path,
    dataset: str,
    remote: Transport,
    *,
    dry_run: bool = False,
    copy: Copying | None = None,
    rebase: bool = False,
    verify_sidecars: bool = False,
) -> SyncResult:
    """Bring the remote's events this copy lacks (or, when it has no copy, the whole dataset) here; with
    `rebase`, a fork puts this side's commands after the remote's events (`rebase.rebase_pull`); with
    `verify_sidecars`, `usr verify` of this copy afterwards (`SyncResult.verified`)."""
    if not (directory / LOG_FILE).is_file() and not dry_run:  # a bootstrap: no head to compare first
        return bootstrap_pull(root, dataset, remote, copy or Copying(), verify_sidecars=verify_sidecars)
    done = _pull(root, directory, dataset, remote, dry_run=dry_run, rebase=rebase)
    return verified(done, verify_sidecars, lambda: verify_here(directory, dataset))


def _pull(root: Path, directory: Path, dataset: str, remote: Transport, *, dry_run: bool, rebase: bool) -> SyncResult:
    compared = _compare(directory, dataset, remote, inline=True)
    found, reply = compared.status, compared.reply
    if found.verdict == "diverged" and rebase and found.fork_seq:  # no common event: nothing to rebase onto
        from .rebase import rebase_pull

        return rebase_pull(root, directory, dataset, remote, found, compared.local_lines, dry_run=dry_run)
    if found.verdict == "diverged":
        raise _refuse_fork(found)
    if found.verdict in ("up-to-date", "local-ahead", "remote-missing"):
        message = {
            "up-to-date": "already up to date",
            "local-ahead": f"nothing to pull: this side is {len(found.local_only)} event(s) ahead (push instead)",
            "remote-missing": f"remote '{found.remote}' has no {dataset} (push bootstraps it)",
        }[found.verdict]
        clear_staging(directory)  # what an interrupted pull staged, if its lines made it in
        return _unmoved(found, "pull", "NO-OP", remote, message=message)
    if dry_run:
        return _unmoved(found, "pull", "DRY-RUN", remote, files=len(reply.artifacts))
    staged = directory / STAGING_DIR / token("pull", reply.seq, reply.hash)
    wanted = [a for a in reply.artifacts if not (directory / a.file).is_file()]
    if reply.files:
        stage_files(staged, {a.file: reply.files[a.file] for a in wanted if a.file in reply.files})
        sent = sum(a.size for a in wanted)
    else:
        sent = remote.fetch(remote.path(dataset), staged, [a.file for a in wanted]) if wanted else 0
    fileops().point("after_transfer")
    from .writer import Writer

    received = Writer(root, dataset, directory).receive(reply.lines, staged)
    clear_staging(directory)
    holds(received.seq, received.hash, found.remote_head, "this copy")
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


def push(
    directory: Path,
    dataset: str,
    remote: Transport,
    *,
    dry_run: bool = False,
    copy: Copying | None = None,
    verify_sidecars: bool = False,
) -> SyncResult:
    """Send this copy's events the remote lacks (or, when it has no copy, the whole dataset) there; with
    `verify_sidecars`, `usr verify` of the remote's copy afterwards, run there (`SyncResult.verified`)."""
    done = _push(directory, dataset, remote, dry_run=dry_run, copy=copy)
    return verified(done, verify_sidecars, lambda: remote.call(Verify(dataset=dataset), VerifyReport))


def _push(directory: Path, dataset: str, remote: Transport, *, dry_run: bool, copy: Copying | None) -> SyncResult:
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
        return _unmoved(found, "push", "NO-OP", remote, message=message)
    if dry_run:
        return _unmoved(found, "push", "DRY-RUN", remote)
    if found.verdict == "remote-missing":
        return bootstrap_push(directory, found, lines, remote, copy or Copying())
    ahead = lines[found.remote_head.seq :]
    staging = token("push", found.local.seq, found.local.hash)
    files = artifacts_of([x.record for x in ahead])
    sizes = {rel: (directory / rel).stat().st_size for rel in files}
    inline: dict[str, bytes] = {}
    if sum(sizes.values()) <= INLINE_BYTES:
        inline = {rel: (directory / rel).read_bytes() for rel in files}
        sent = sum(sizes.values())
    else:
        sent = remote.send(directory, remote.path(dataset, STAGING_DIR, staging), files)
    data = b"".join(x.raw + b"\n" for x in ahead)
    fileops().point("after_transfer")
    received = remote.call(Receive(dataset=dataset, staging=staging, files=inline), Received, data)
    holds(received.seq, received.hash, found.local, f"remote '{found.remote}'")
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


# -- file mode: one file by path (the original's `usr diff|pull|push PATH REMOTE`) ------------------------
def remote_file_path(local: Path, remote: Transport, *, remote_path: str | None, repo_root: Path | None) -> str:
    """Where `local` lives there: `remote_path`, else the remote's `repo_root` joined with `local`'s path
    under the local repo root (`repo_root`, the remote's `local_repo_root`, or `$DNADESIGN_REPO_ROOT`)."""
    import os

    if remote_path:
        return remote_path
    spec = remote.remote.spec
    local_root = repo_root or (Path(spec.local_repo_root) if spec.local_repo_root else None)
    if local_root is None and os.environ.get("DNADESIGN_REPO_ROOT"):
        local_root = Path(os.environ["DNADESIGN_REPO_ROOT"])
    if not spec.repo_root or local_root is None:
        raise InvalidInput(
            f"File mode needs to know where {local.name} lives on remote '{remote.remote.name}'.",
            hint="Pass --remote-path PATH, or set repo_root in the remote's config and a local repo root "
            "(--repo-root, the remote's local_repo_root, or $DNADESIGN_REPO_ROOT).",
        )
    try:
        relative = local.resolve().relative_to(local_root.expanduser().resolve())
    except ValueError:
        raise InvalidInput(f"{local} is not under the local repo root {local_root}.") from None
    return f"{spec.repo_root.rstrip('/')}/{relative.as_posix()}"


def file_status(local: Path, remote_file: str, remote: Transport) -> FileSyncStatus:
    """The file here and there, compared by sha256 (read-only; one request)."""
    here = file_stat(local)
    there = remote.call(Stat(path=remote_file), FileSide)
    if not here.exists and not there.exists:
        verdict = "both-missing"
    elif not there.exists:
        verdict = "remote-missing"
    elif not here.exists:
        verdict = "local-missing"
    else:
        verdict = "up-to-date" if here.sha256 == there.sha256 else "differ"
    return FileSyncStatus(
        remote=remote.remote.name, verdict=verdict, local=here, remote_file=there, round_trips=remote.round_trips
    )


def file_transfer(
    action: str, local: Path, remote_file: str, remote: Transport, *, dry_run: bool = False
) -> FileSyncResult:
    """Pull (remote -> here) or push one file, replacing the other side's copy whole; then both sha256s are
    compared (a mismatch is an `IntegrityError`)."""
    found = file_status(local, remote_file, remote)
    source = found.remote_file if action == "pull" else found.local
    if not source.exists:
        where = f"remote '{found.remote}'" if action == "pull" else "here"
        raise NotFound(f"{source.path} does not exist {where}; nothing to {action}")

    def result(state: str, moved: int, digest: str) -> FileSyncResult:
        return FileSyncResult(
            remote=found.remote,
            action=action,
            transfer_state=state,
            verdict=found.verdict,
            bytes=moved,
            sha256=digest,
            local_path=str(local),
            remote_path=remote_file,
            round_trips=remote.round_trips,
        )

    if found.verdict == "up-to-date":
        return result("NO-OP", 0, source.sha256)
    if dry_run:
        return result("DRY-RUN", source.size, source.sha256)
    moved = remote.get(remote_file, local) if action == "pull" else remote.put(local, remote_file)
    after = file_status(local, remote_file, remote)
    if after.verdict != "up-to-date":
        raise IntegrityError(
            f"after the {action}, {local} and {remote_file} on remote '{found.remote}' differ "
            f"({after.local.sha256[:12]} vs {after.remote_file.sha256[:12]})",
            hint="Run it again; if it persists, check the file on both sides.",
        )
    return result("TRANSFERRED", moved, after.local.sha256)
