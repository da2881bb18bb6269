"""`usr pull --rebase` (docs/adr/0021): when both copies appended since seq K, put this side's commands
after the other side's events, so work from two machines combines without loss.

Every line records the command that made it (and its rows are its payload), so this side's commands can
be decided again, in order, on the other side's state:

1. the other side's lines after K and the files they name are fetched (into a staging folder);
2. a staging copy of the dataset is built from this log's lines 1..K and those lines, and each of this
   side's commands after K is executed there through the one write path, with its command id and actor
   (a command that no longer validates -- an attach whose records the other side deleted and dropped,
   say -- is reported and left out, never half-applied); then one `commands_rebased` line records what
   was rebased: each old line's seq and hash, and where its command landed or why it was left out;
3. under this dataset's lock, unless its log changed meanwhile, the replaced lines are appended to
   `.events.log.rebased` (nothing is lost), the new log replaces this one, then the projections are
   moved in (a crash in between leaves projections the next command refolds from the new log).

A consumer tailing this log sees it replaced: the lines after K are new.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from .agent import Head, HeadReply, clear_staging
from .commands import (
    AttachColumns,
    Command,
    ImportSequences,
    MergeDatasets,
    RebasedCommand,
    RecordRebase,
    _IdsCommand,
)
from .errors import ConcurrencyError, NotRebasable, UsrError
from .events import LogRecord
from .fileio import fileops, locked, write_atomic
from .log import LogLine, read_lines
from .meta import write_meta
from .names import (
    DERIVED_DIR,
    HISTORY_DIR,
    INDEX_DIR,
    LOCK_FILE,
    LOG_FILE,
    META_FILE,
    PAYLOAD_DIR,
    RECORDS_FILE,
    REGISTRY_DIR,
    SNAPSHOT_DIR,
    STAGING_DIR,
)
from .remotes import Transport
from .results import SideHead, SyncResult, SyncStatus
from .shipping import artifacts_of, safe_artifact
from .storage import read_payload

if TYPE_CHECKING:
    from .writer import RowsLoader, Writer

REBASED_FILE = ".events.log.rebased"


def rebase_pull(
    root: Path,
    directory: Path,
    dataset: str,
    remote: Transport,
    found: SyncStatus,
    lines: list[LogLine],
    *,
    dry_run: bool = False,
) -> SyncResult:
    """Rebase this side's commands since the fork onto the remote's events (see the module docstring);
    `dry_run` decides them all in the staging copy and reports, replacing nothing."""
    from .writer import Writer

    fork = found.fork_seq or 0
    assert fork > 0, "copies sharing no event are refused before a rebase (sync._refuse_fork)"
    ours, base = lines[fork:], lines[fork - 1]
    reply = remote.call(Head(dataset=dataset, known_seq=fork, known_hash=base.record.hash, with_lines=True), HeadReply)
    if not reply.holds_known:
        raise ConcurrencyError(f"remote '{found.remote}' changed its copy of {dataset} while rebasing; run it again")
    for artifact in reply.artifacts:
        safe_artifact(artifact.file)
    token = f"rebase-{reply.seq}-{reply.hash[:16]}-{found.local.seq}-{found.local.hash[:16]}"
    work = directory / STAGING_DIR / token
    copy = work / "dataset"
    if copy.exists():  # an earlier attempt: start over from the logs
        shutil.rmtree(copy)
    wanted = [a.file for a in reply.artifacts if not (directory / a.file).is_file()]
    sent = remote.fetch(remote.path(dataset), work / "files", wanted) if wanted else 0
    _build_copy(directory, copy, work / "files", base, reply.lines, lines[:fork])
    writer = Writer(root, dataset, copy)
    outcomes = [_reapply(writer, group, directory) for group in _commands(ours)]
    writer.actor = None
    writer.execute(
        RecordRebase(fork_seq=fork, onto_seq=reply.seq, onto_hash=reply.hash, commands=tuple(outcomes)),
        command_id=f"rebase-{found.local.hash[:16]}-onto-{reply.hash[:16]}",
    )
    new_lines, scan = read_lines(copy / LOG_FILE)
    if not dry_run:
        _swap(directory, copy, fork, found.local, ours, [line.record for line in new_lines])
    clear_staging(directory)
    left_out = [o for o in outcomes if o.new_seq is None]
    head = SideHead(exists=True, seq=scan.seq, hash=scan.hash, timestamp_utc=scan.last_timestamp or "")
    message = f"rebased {len(outcomes) - len(left_out)} command(s) onto seq {reply.seq}" + (
        "; left out: " + "; ".join(f"seq {o.old_seq} {o.action}: {o.reason}" for o in left_out) if left_out else ""
    )
    return SyncResult(
        dataset=dataset,
        remote=found.remote,
        action="pull",
        transfer_state="DRY-RUN" if dry_run else "TRANSFERRED",
        verdict=found.verdict,
        appended=len(new_lines) - fork,
        bytes=len(reply.lines) + sent,
        files=len(wanted),
        head=head,
        round_trips=remote.round_trips,
        message=message,
        rebased=list(outcomes),
    )


def _build_copy(
    directory: Path, copy: Path, fetched: Path, base: LogLine, theirs: bytes, prefix: list[LogLine]
) -> None:
    """A dataset folder holding this log's lines up to the fork and the remote's after it, with the files
    they name (linked from here, or the fetched ones), and no projection: the first write folds them."""
    fileops().mkdir(copy)
    with (directory / LOG_FILE).open("rb") as fh:
        head_bytes = fh.read(base.end)
    write_atomic(copy / LOG_FILE, head_bytes + theirs, point="rebase_log")
    records = [line.record for line in prefix] + [line.record for line in read_lines(copy / LOG_FILE)[0][len(prefix) :]]
    for rel in artifacts_of(records):
        source = directory / rel if (directory / rel).is_file() else fetched / rel
        fileops().mkdir((copy / rel).parent)
        try:
            os.link(source, copy / rel)
        except OSError:
            shutil.copyfile(source, copy / rel)


def _commands(ours: list[LogLine]) -> list[list[LogLine]]:
    """This side's lines grouped by command (a command's lines are consecutive and share its id)."""
    groups: list[list[LogLine]] = []
    for line in ours:
        if groups and groups[-1][-1].record.command_id == line.record.command_id:
            groups[-1].append(line)
        else:
            groups.append([line])
    return groups


def _reapply(writer: Writer, group: list[LogLine], directory: Path) -> RebasedCommand:
    """Execute the command of `group` again on the copy; what became of it."""
    first = group[0].record
    old = RebasedCommand(
        old_seq=first.seq, old_hash=group[-1].record.hash, command_id=first.command_id, action=first.action
    )
    try:
        command, rows = _replayable(first, directory)
    except UsrError as exc:
        return _left_out(old, str(exc))
    writer.actor = (first.actor.tool, first.actor.run_id)
    try:
        receipt = writer.execute(command, rows=rows, command_id=first.command_id)
    except UsrError as exc:  # it no longer validates on the other side's state: left out, nothing written
        return _left_out(old, exc.message)
    if receipt.noop:
        return _left_out(old, f"nothing to do any more ({receipt.message})")
    return msgspec.structs.replace(old, new_seq=receipt.seq, new_hash=receipt.hash)


def _left_out(old: RebasedCommand, reason: str) -> RebasedCommand:
    return msgspec.structs.replace(old, reason=reason)


def _replayable(record: LogRecord, directory: Path) -> tuple[Command, RowsLoader | None]:
    """The command of a line and a loader of its input rows (its payload, read as that command reads it)."""
    command = record.command
    payload = record.payload
    if isinstance(command, MergeDatasets):
        raise NotRebasable("a merge reads another dataset: run it again after the pull")
    if isinstance(command, ImportSequences):
        assert payload is not None
        table = read_payload(directory, payload)
        return (
            ImportSequences(
                fmt="rows",
                bio_type=command.bio_type,
                alphabet=command.alphabet,
                source=command.source,
                on_conflict=command.on_conflict,
            ),
            lambda: table,
        )
    if isinstance(command, AttachColumns):
        if payload is None:  # an attach that wrote nothing (every key missing)
            raise NotRebasable("it wrote no value")
        part = read_payload(directory, payload)
        values = [n for n in part.column_names if n.startswith(f"{command.namespace}__")]
        table = part.select(["id", *values])
        return (
            AttachColumns(
                namespace=command.namespace,
                key="id",
                columns=tuple(values),
                allow_overwrite=command.allow_overwrite,
                allow_missing=command.allow_missing,
                parse_json=False,
                note=command.note,
                path=command.path,
            ),
            lambda: table,
        )
    if isinstance(command, _IdsCommand) and command.ids is None and payload is not None:
        ids = read_payload(directory, payload).select(["id"])
        return command, lambda: ids
    return command, None  # no input rows (materialize, dedupe, ...), or ids inline; several lines: decided once


def _swap(
    directory: Path, copy: Path, fork: int, local: SideHead, ours: list[LogLine], records: list[LogRecord]
) -> None:
    """Under this dataset's lock: keep the replaced lines, then the new log, then its projections and a
    meta.md of every event (`records`: the new log's)."""
    ops = fileops()
    with locked(directory / LOCK_FILE):
        _, scan = read_lines(directory / LOG_FILE)
        if (scan.seq, scan.hash) != (local.seq, local.hash):
            raise ConcurrencyError(
                f"{directory.name} changed here while rebasing (seq {local.seq} -> {scan.seq}); nothing was replaced",
                hint="Run `usr pull --rebase` again.",
            )
        _keep_replaced(directory, ours)
        for folder in (PAYLOAD_DIR, REGISTRY_DIR):
            if (copy / folder).is_dir():
                ops.mkdir(directory / folder)
                for item in (copy / folder).iterdir():
                    if not (directory / folder / item.name).exists():
                        ops.replace(item, directory / folder / item.name)
        ops.replace(copy / LOG_FILE, directory / LOG_FILE)
        ops.fsync_dir(directory)
        trash = copy.parent / "replaced"
        ops.mkdir(trash)
        for name in (RECORDS_FILE, META_FILE, DERIVED_DIR, INDEX_DIR, HISTORY_DIR):
            if (directory / name).exists():
                ops.replace(directory / name, trash / name)
            if (copy / name).exists():
                ops.replace(copy / name, directory / name)
        for checkpoint in sorted((directory / SNAPSHOT_DIR).glob("checkpoint-*")):
            suffix = checkpoint.name.split("-", 1)[1]
            if suffix.isdigit() and int(suffix) > fork:  # a state of the replaced lines
                ops.replace(checkpoint, trash / checkpoint.name)
        for checkpoint in sorted((copy / SNAPSHOT_DIR).glob("checkpoint-*")):
            ops.mkdir(directory / SNAPSHOT_DIR)
            ops.replace(checkpoint, directory / SNAPSHOT_DIR / checkpoint.name)
        write_meta(directory, records)  # for people: every event, the other side's included
        ops.fsync_dir(directory)


def _keep_replaced(directory: Path, ours: list[LogLine]) -> None:
    """Append the replaced lines to `.events.log.rebased` (fsync'd before the log is replaced)."""
    ops = fileops()
    path = directory / REBASED_FILE
    fd = ops.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
    try:
        data = b"".join(line.raw + b"\n" for line in ours)
        view = memoryview(data)
        while view:
            view = view[ops.write(fd, view) :]
        ops.fsync(fd)
    finally:
        ops.close(fd)
