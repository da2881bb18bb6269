"""The side of a sync that holds the other copy (docs/adr/0021): it answers what its copy of a dataset
holds and takes lines and folders through its own write path.

Over ssh the other machine runs `usr --root BASE_DIR _agent` (the same usr_es), reads one request from
stdin (a JSON line, then the bytes it carries) and writes one JSON reply. A `type: local` remote calls
`serve` in this process instead: the same code, no ssh. A failure travels as a reply naming the error's
class, so the asking side raises the same error (a fork there is a `Diverged` here).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

import msgspec

from . import __version__
from .errors import DatasetExists, IntegrityError, InvalidInput, NotFound, UsrError
from .events import LogRecord
from .log import iter_lines, read_lines
from .names import LOCK_FILE, LOG_FILE, QUARANTINE_FILE, STAGING_DIR
from .results import FileSide, Received, SyncEvent, VerifyReport
from .roots import validate_id


# -- requests --------------------------------------------------------------------------------------------
class Probe(msgspec.Struct, frozen=True, tag="probe"):
    """What `usr remotes doctor` checks: the usr_es version, the root, rsync."""


class Head(msgspec.Struct, frozen=True, kw_only=True, tag="head"):
    """A dataset's head, whether its line at `known_seq` has `known_hash`, and (`with_lines`) the lines
    after it, with the files they name."""

    dataset: str
    known_seq: int = 0
    known_hash: str = ""
    with_lines: bool = False
    #: Send the files the new lines name in the reply itself when they total at most this many bytes
    #: (saves the copy's own ssh session for a small pull).
    inline_limit: int = 0


class Lines(msgspec.Struct, frozen=True, kw_only=True, tag="lines"):
    """A summary of each line from `from_seq` on (to find where two copies forked)."""

    dataset: str
    from_seq: int = 1


class Receive(msgspec.Struct, frozen=True, kw_only=True, tag="receive"):
    """Append the lines sent after the request through the write path, taking the files they name from
    the staging folder `staging` (then removed)."""

    dataset: str
    staging: str
    #: Files sent in the request itself (a small push), else already copied into `staging`.
    files: dict[str, bytes] = {}


class Install(msgspec.Struct, frozen=True, kw_only=True, tag="install"):
    """Make the dataset folder sent into `staging` (a copy of another side's folder) a dataset of this
    root: its log and files checked, its projections caught up, then renamed into place."""

    dataset: str
    staging: str


class Verify(msgspec.Struct, frozen=True, kw_only=True, tag="verify"):
    """`usr verify` of the dataset there (after a push with `--verify-sidecars`)."""

    dataset: str


class Stat(msgspec.Struct, frozen=True, kw_only=True, tag="stat"):
    """Size, time and sha256 of one file there (file mode: `usr diff|pull|push PATH REMOTE`); a relative
    `path` is under the root."""

    path: str


Request = Probe | Head | Lines | Receive | Install | Verify | Stat


# -- replies -----------------------------------------------------------------------------------------------
class ProbeReply(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    python: str
    root: str
    root_exists: bool
    root_writable: bool
    rsync: str


class Artifact(msgspec.Struct, frozen=True):
    file: str
    size: int


class HeadReply(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool
    seq: int = 0
    hash: str = ""
    size: int = 0
    timestamp_utc: str = ""
    #: Whether the line at `known_seq` has `known_hash` (None: the log ends before `known_seq`).
    holds_known: bool | None = None
    lines: bytes = b""
    artifacts: list[Artifact] = []
    #: The new lines, summarized (with `with_lines`).
    events: list[SyncEvent] = []
    #: The files the new lines name, when `inline_limit` allowed them.
    files: dict[str, bytes] = {}


class LinesReply(msgspec.Struct, frozen=True):
    lines: list[SyncEvent]


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    error: str
    kind: str
    hint: str | None = None
    fork_seq: int | None = None


Reply = ProbeReply | HeadReply | LinesReply | Received | VerifyReport | FileSide


_request_decoder = msgspec.json.Decoder(Request)


def encode_request(request: Request, data: bytes = b"") -> bytes:
    """The bytes a request travels as: its JSON line, then the bytes it carries."""
    return msgspec.json.encode(request) + b"\n" + data


def serve_bytes(root: Path, sent: bytes) -> bytes:
    """Answer one request (`encode_request`'s bytes) about datasets under `root`: the reply's JSON, a
    `Failure` when a `UsrError` stopped it."""
    newline = sent.find(b"\n")
    head, data = (sent, b"") if newline < 0 else (sent[:newline], sent[newline + 1 :])
    try:
        try:
            request = _request_decoder.decode(head)
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"not a sync request this usr_es {__version__} knows: {exc}") from None
        reply: Reply = serve(root, request, data)
    except UsrError as exc:
        failure = Failure(
            error=exc.message, kind=type(exc).__name__, hint=exc.hint, fork_seq=getattr(exc, "fork_seq", None)
        )
        return msgspec.json.encode({"failure": failure})
    return msgspec.json.encode({"reply": reply})


def serve(root: Path, request: Request, data: bytes = b"") -> Reply:
    """Answer one request about datasets under `root`."""
    if isinstance(request, Probe):
        return _probe(root)
    if isinstance(request, Stat):
        return file_stat(root / Path(request.path).expanduser())  # an absolute path (or ~/...) stays itself
    directory = root / validate_id(request.dataset)
    if isinstance(request, Head):
        return head_of(directory, request)
    if isinstance(request, Lines):
        return LinesReply(line_infos(directory, request.from_seq))
    if isinstance(request, Receive):
        return _receive(root, request, data)
    if isinstance(request, Verify):
        from .replay import verify

        if not (directory / LOG_FILE).is_file():
            raise NotFound(f"Dataset not found: {request.dataset}")
        return verify(directory, request.dataset)
    return install(root, request.dataset, _staging(root, request.dataset, request.staging, fresh=True))


def _probe(root: Path) -> ProbeReply:
    return ProbeReply(
        version=__version__,
        python=f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        root=str(root),
        root_exists=root.is_dir(),
        root_writable=root.is_dir() and os.access(root, os.W_OK | os.X_OK),
        rsync=shutil.which("rsync") or "",
    )


def file_stat(path: Path) -> FileSide:
    """A file's size, modification time (UTC) and sha256, read a block at a time."""
    import hashlib
    from datetime import UTC, datetime

    if not path.is_file():
        return FileSide(path=str(path), exists=False)
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    info = path.stat()
    when = datetime.fromtimestamp(info.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return FileSide(path=str(path), exists=True, size=info.st_size, mtime_utc=when, sha256=digest)


def head_of(directory: Path, request: Head) -> HeadReply:
    """The head of the dataset in `directory` (verified: every line's hash and the chain)."""
    log = directory / LOG_FILE
    if not log.is_file():
        return HeadReply(exists=False)
    lines, scan = read_lines(log)
    holds: bool | None = None
    if request.known_seq == 0:
        holds = True
    elif request.known_seq <= scan.seq:
        holds = lines[request.known_seq - 1].record.hash == request.known_hash
    later = lines[request.known_seq :] if request.with_lines and holds else []
    records = [line.record for line in later]
    artifacts = artifacts_with_sizes(directory, records)
    inline = bool(artifacts) and sum(a.size for a in artifacts) <= request.inline_limit
    return HeadReply(
        exists=True,
        seq=scan.seq,
        hash=scan.hash,
        size=scan.size,
        timestamp_utc=scan.last_timestamp or "",
        holds_known=holds,
        lines=b"".join(line.raw + b"\n" for line in later),
        artifacts=artifacts,
        events=[line_info(record) for record in records],
        files={a.file: (directory / a.file).read_bytes() for a in artifacts} if inline else {},
    )


def artifacts_with_sizes(directory: Path, records: list[LogRecord]) -> list[Artifact]:
    """The files the events name (payloads and frozen registries) with their sizes here."""
    from .shipping import artifacts_of

    found = []
    for rel in artifacts_of(records):
        try:
            found.append(Artifact(rel, (directory / rel).stat().st_size))
        except FileNotFoundError:
            raise IntegrityError(f"{rel}, named by the log of {directory.name}, is missing") from None
    return found


def line_infos(directory: Path, from_seq: int) -> list[SyncEvent]:
    log = directory / LOG_FILE
    if not log.is_file():
        raise NotFound(f"Dataset not found: {directory.name}")
    return [line_info(line.record) for line in iter_lines(log) if line.seq >= from_seq]


def line_info(record: LogRecord) -> SyncEvent:
    actor = record.actor
    who = f"{actor.tool}@{actor.host}" if actor is not None else ""
    return SyncEvent(
        seq=record.seq,
        hash=record.hash,
        action=record.action,
        timestamp_utc=record.timestamp_utc,
        actor=who,
        command_id=record.command_id,
    )


def _staging(root: Path, dataset: str, token: str, *, fresh: bool) -> Path:
    """Where a transfer stages files: in the dataset folder, or (`fresh`: a dataset this side lacks) in
    the root, under a name for that dataset."""
    if not token or not all(c.isalnum() or c in "-_" for c in token):
        raise InvalidInput(f"bad staging name {token!r}")
    return root / STAGING_DIR / token if fresh else root / validate_id(dataset) / STAGING_DIR / token


def _receive(root: Path, request: Receive, data: bytes) -> Received:
    from .shipping import stage_files
    from .writer import Writer

    directory = root / validate_id(request.dataset)
    if not (directory / LOG_FILE).is_file():
        raise NotFound(f"Dataset not found: {request.dataset}")
    staged = _staging(root, request.dataset, request.staging, fresh=False)
    stage_files(staged, request.files)
    received = Writer(root, request.dataset, directory).receive(data, staged)
    clear_staging(directory)
    return received


def clear_staging(directory: Path) -> None:
    """Remove a dataset's staging folders once its log holds what they carried (a transfer into the same
    dataset at this very moment loses its files and says so: run it again)."""
    shutil.rmtree(directory / STAGING_DIR, ignore_errors=True)


def install(root: Path, dataset: str, staged: Path) -> Received:
    """Make the folder `staged` (a copy of a dataset folder) the dataset `dataset` of `root`: its chain and
    payloads are checked, a torn tail the copy caught is dropped, the projections are caught up from its
    log, and the folder is renamed into place (a dataset already there is refused)."""
    from .fileio import fileops
    from .mounts import check_locks
    from .recovery import catch_up
    from .shipping import check_artifacts

    target = root / validate_id(dataset)
    check_locks(root)
    if (target / LOG_FILE).exists():
        raise DatasetExists(f"Dataset already exists: {dataset}", hint="Pull or push into it instead.")
    if not (staged / LOG_FILE).is_file():
        raise NotFound(f"nothing was sent for {dataset} (no log in {staged})", hint="Run the transfer again.")
    (staged / LOCK_FILE).unlink(missing_ok=True)
    # Checks the chain and folds what the copied projections lack; a current base is not read.
    tail = catch_up(staged, quarantine=True, base_columns=[])
    (staged / QUARANTINE_FILE).unlink(missing_ok=True)  # a line the copy caught mid-append: no record here
    if tail.scan.seq == 0:
        raise IntegrityError(f"the copy of {dataset} holds no event", hint="Run the transfer again.")
    lines, _ = read_lines(staged / LOG_FILE)
    problems = check_artifacts(staged, [line.record for line in lines])
    if problems:
        raise IntegrityError(f"the copy of {dataset} is damaged: {problems[0]}", hint="Run the transfer again.")
    ops = fileops()
    ops.mkdir(target.parent)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    ops.replace(staged, target)
    ops.fsync_dir(target.parent)
    if staged.parent.name == STAGING_DIR and not any(staged.parent.iterdir()):
        staged.parent.rmdir()
    return Received(dataset=dataset, appended=tail.scan.seq, seq=tail.scan.seq, hash=tail.scan.hash)
