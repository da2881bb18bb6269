"""A dataset one side lacks, copied whole (ADR 0021): `bootstrap_pull` and `bootstrap_push`.

A bootstrap pull is a process that is mostly one folder copy, so the copy starts first: this module loads
nothing heavier than the remotes config before it, and the modules that check and install the copy (the
agent's messages, the fold and pyarrow) load while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import IntegrityError, NotFound, UsrError
from .names import LOG_FILE, SNAPSHOT_DIR, STAGING_DIR

if TYPE_CHECKING:
    from .log import LogLine
    from .remotes import Transport
    from .results import Received, SideHead, SyncResult, SyncStatus, VerifyReport


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


def token(kind: str, seq: int, digest: str) -> str:
    """A staging folder's name: what it holds (a transfer run again finds what the first run sent)."""
    return f"{kind}-{seq}-{digest[:16]}"


def holds(seq: int, digest: str, sent: SideHead, receiver: str) -> None:
    """After a transfer: the receiving side's line at the sender's head seq is the sender's head line (the
    chain makes every line before it equal too). One check, no extra round trip."""
    if (seq, digest) != (sent.seq, sent.hash):
        raise IntegrityError(
            f"after the transfer {receiver} holds seq {seq} {digest[:12]}, not the sender's head seq {sent.seq} "
            f"{sent.hash[:12]}",
            hint="Run `usr status DATASET REMOTE` and `usr verify` on both sides.",
        )


def verified(done: SyncResult, wanted: bool, check: Callable[[], VerifyReport]) -> SyncResult:
    """With `wanted` (`--verify-sidecars`), after a transfer: `usr verify` of the receiving side, kept on the
    result; a failure is an error (the lines stay: they passed the chain and digest checks)."""
    if not wanted or done.transfer_state != "TRANSFERRED":
        return done
    import msgspec

    report = check()
    if not report.ok:
        raise IntegrityError(
            f"`usr verify` of the receiving side after the {done.action} failed: {report.problems[0]}",
            hint="`usr verify --fix` there rebuilds what its log disagrees with.",
        )
    return msgspec.structs.replace(done, verified=report)


def verify_here(directory: Path, dataset: str) -> VerifyReport:
    """`usr verify` of the copy in `directory` (the receiving side of a pull)."""
    from .replay import verify

    return verify(directory, dataset)


def bootstrap_pull(
    root: Path, dataset: str, remote: Transport, copy: Copying, *, verify_sidecars: bool = False
) -> SyncResult:
    """Copy the remote's folder whole, then install it here (`verify_sidecars`: and `usr verify` it). rsync
    reads the log first, so a write there during the copy can leave a copied projection ahead of the copied
    log: then the log is fetched again, and any file its newer lines name. No head is asked first: the copy
    is the answer (a remote without the dataset is asked why the copy failed)."""
    staged = root / STAGING_DIR / f"{dataset.replace('/', '--')}-incoming"
    where = remote.path(dataset)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="usr-copy") as pool:
            # The log is read first: a projection copied after a newer line may be ahead of it (below).
            files = [LOG_FILE] if copy.primary_only else None
            copying = pool.submit(lambda: remote.fetch(where, staged, files, exclude=copy.excluded))
            # What checks and installs the copy (the agent's messages, the fold, pyarrow) loads meanwhile.
            from . import agent, recovery, shipping  # noqa: F401

            sent = copying.result()
    except UsrError:
        if not remote.call(agent.Head(dataset=dataset), agent.HeadReply).exists:
            raise NotFound(
                f"Dataset not found on either side: {dataset} (here or on remote '{remote.remote.name}')",
                hint="`usr ls` lists this root's datasets; check the id on the remote.",
            ) from None
        raise
    from .fileio import fileops
    from .log import read_lines

    if _ahead_of_log(staged):  # a write there during the copy: its log again, now the newest file copied
        sent += remote.fetch(where, staged, [LOG_FILE])
    lines, _ = read_lines(staged / LOG_FILE)
    missing = [rel for rel in shipping.artifacts_of([x.record for x in lines]) if not (staged / rel).is_file()]
    if missing:
        sent += remote.fetch(where, staged, missing)
    fileops().point("after_transfer")
    installed = agent.install(root, dataset, staged)
    done = _copied("pull", "local-missing", installed, remote, sent, len(missing), lines[-1].record.timestamp_utc)
    return verified(done, verify_sidecars, lambda: verify_here(root / dataset, dataset))


def _ahead_of_log(staged: Path) -> bool:
    """Whether a copied projection reflects a line the copied log lacks (the copy read the log first)."""
    from .projections import Fold
    from .recovery import LocalSource, anchor

    log = staged / LOG_FILE
    for member in Fold(LocalSource(staged)).members:
        mark = member.stored_mark(staged) if member.anchored else None
        if mark is not None and anchor(log, mark) is None:
            return True
    return False


def bootstrap_push(
    directory: Path, found: SyncStatus, lines: list[LogLine], remote: Transport, copy: Copying
) -> SyncResult:
    """Copy this folder whole into a staging folder there (the log last: a line appended here during the
    copy names files sent after it), then have the remote install it."""
    from .agent import Install
    from .fileio import fileops
    from .log import read_lines
    from .results import Received
    from .shipping import artifacts_of

    dataset = found.dataset
    name = token(dataset.replace("/", "--"), found.local.seq, found.local.hash)
    staging = remote.path(STAGING_DIR, name)
    sent = 0 if copy.primary_only else remote.send(directory, staging, exclude=copy.excluded)
    sent += remote.send(directory, staging, [LOG_FILE])
    now, _ = read_lines(directory / LOG_FILE)  # lines appended here during the copy name newer files
    files = artifacts_of([x.record for x in now[len(lines) :]])
    if files or copy.primary_only:
        files = artifacts_of([x.record for x in now]) if copy.primary_only else files
        sent += remote.send(directory, staging, files)
    fileops().point("after_transfer")
    done = remote.call(Install(dataset=dataset, staging=name), Received)
    if done.seq < found.local.seq:
        holds(done.seq, done.hash, found.local, f"remote '{found.remote}'")
    return _copied("push", found.verdict, done, remote, sent, len(files), found.local.timestamp_utc)


def _copied(
    action: str, verdict: str, installed: Received, remote: Transport, sent: int, files: int, stamp: str
) -> SyncResult:
    """A bootstrap's result: the copy installed on the receiving side, its head that of the whole log."""
    from .results import SideHead, SyncResult

    return SyncResult(
        dataset=installed.dataset,
        remote=remote.remote.name,
        action=action,
        transfer_state="TRANSFERRED",
        verdict=verdict,
        appended=installed.seq,
        bytes=sent,
        files=files,
        head=SideHead(exists=True, seq=installed.seq, hash=installed.hash, timestamp_utc=stamp),
        bootstrap=True,
        round_trips=remote.round_trips,
    )
