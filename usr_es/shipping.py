"""Log shipping (docs/adr/0021): the checks and file moves that let one copy of a dataset take the lines
and files another copy holds. Used by the receiving side's write path (`Writer.receive`) and by sync.

A copy trusts nothing it is sent: the lines must continue its own chain (a line it already holds is
skipped, a different one is refused as a fork), and every payload and frozen registry they name must be
present, here or among the sent files, with the digest the line records, before a single byte is
appended.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import replace
from pathlib import Path

import msgspec

from .errors import ConcurrencyError, Diverged, IntegrityError, NotFound
from .events import LogRecord
from .fileio import fileops
from .log import LogLine, Scan, shipped_lines
from .names import PAYLOAD_DIR, REGISTRY_DIR


class _Head(msgspec.Struct):
    seq: int
    prev: str


_head_decoder = msgspec.json.Decoder(_Head)


def accept_lines(scan: Scan, data: bytes) -> list[LogLine]:
    """The lines of `data` this log lacks, verified and placed after its head (`scan`). Lines it already
    holds are dropped (a resumed transfer); a first line past its head, or a line that differs from its
    own at the same seq, is refused with nothing written."""
    if not data:
        return []
    first_end = data.find(b"\n")
    try:
        first = _head_decoder.decode(data[: first_end if first_end >= 0 else len(data)])
    except msgspec.DecodeError:
        raise IntegrityError("the lines sent do not start with a log line") from None
    if first.seq > scan.seq + 1:
        raise ConcurrencyError(
            f"the lines sent start at seq {first.seq}, but this copy ends at seq {scan.seq}: lines are missing",
            hint="Run the transfer again: it sends every line this copy lacks.",
        )
    sent = shipped_lines(data, start_offset=0, start_seq=first.seq - 1, start_hash=first.prev)
    held = [line for line in sent if line.seq <= scan.seq]
    if held and held[-1].record.hash != scan.hash:
        raise Diverged(
            f"the two copies differ at or before seq {scan.seq}: this copy's line there is not the sender's "
            "(the logs have forked)",
            hint="`usr status DATASET REMOTE` names the fork; `usr pull --rebase` puts this side's commands "
            "after the other side's.",
        )
    if not held and first.prev != scan.hash:
        raise Diverged(
            f"the lines sent do not continue this copy's head (seq {scan.seq}): the logs have forked",
            hint="`usr status DATASET REMOTE` names the fork.",
        )
    shift = scan.size - sum(len(line.raw) + 1 for line in held)  # where the first kept line lands here
    return [replace(line, offset=line.offset + shift, end=line.end + shift) for line in sent if line.seq > scan.seq]


def artifacts_of(records: list[LogRecord]) -> list[str]:
    """The files the events name, relative to the dataset folder: payloads and frozen registries."""
    return list(dict.fromkeys(rel for record in records for rel, _, _ in _named(record)))


def _named(record: LogRecord) -> list[tuple[str, str, int | None]]:
    """The files an event names: (path, digest, size; None for a registry, named by its sha256)."""
    found: list[tuple[str, str, int | None]] = []
    if record.payload is not None:
        found.append((record.payload.file, record.payload.digest, record.payload.size_bytes))
    if record.registry_hash:
        found.append((registry_file(record.registry_hash), record.registry_hash, None))
    return found


def registry_file(digest: str) -> str:
    return f"{REGISTRY_DIR}/registry.{digest}.yaml"


#: The only paths a transfer writes a sent file to: a payload or a frozen registry, named by its digest.
_ARTIFACT = re.compile(rf"^({PAYLOAD_DIR}/[0-9a-f]{{32}}\.arrow|{REGISTRY_DIR}/registry\.[0-9a-f]{{64}}\.yaml)\Z")


def safe_artifact(rel: str) -> str:
    """`rel` if it names a payload or frozen registry inside a dataset folder; a path the other side sent
    that could land elsewhere (`../`, absolute, another folder) is refused."""
    if not _ARTIFACT.match(rel):
        raise IntegrityError(f"the other side named a file {rel!r} that is no payload or frozen registry; refused")
    return rel


def stage_files(staged: Path, files: dict[str, bytes]) -> None:
    """Write files sent inline into the staging folder (their digests are checked when they are moved in)."""
    for rel, data in files.items():
        path = staged / safe_artifact(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def place_artifacts(records: list[LogRecord], staged: Path, directory: Path) -> list[str]:
    """Make every file the events name present in `directory`: kept if there (content-addressed), else
    moved in from `staged` once its digest is checked (fsync'd into place). Returns what was moved.
    A file missing from both places, or sent with another digest, raises before anything moves."""
    moves: dict[Path, Path] = {}  # target -> source
    for record in records:
        for rel, digest, size in _named(record):
            if (directory / rel).is_file() or directory / rel in moves:
                continue
            source = staged / rel
            if not source.is_file():
                raise NotFound(
                    f"{rel}, named by event seq {record.seq}, was not sent",
                    hint="Run the transfer again: it sends every file the new lines name.",
                )
            if not _matches(source, digest, size):
                raise IntegrityError(
                    f"{rel}, named by event seq {record.seq}, arrived with other bytes than the event records "
                    "(damaged in transit?); nothing was appended",
                    hint="Run the transfer again.",
                )
            moves[directory / rel] = source
    ops = fileops()
    for target, source in moves.items():
        ops.mkdir(target.parent)
        fd = ops.open(source, os.O_RDONLY)  # the transfer wrote it without fsync
        try:
            ops.fsync(fd)
        finally:
            ops.close(fd)
        ops.replace(source, target)
    for folder in {target.parent for target in moves}:
        ops.fsync_dir(folder)
    ops.point("after_place")
    return [str(target.relative_to(directory)) for target in moves]


def _matches(path: Path, digest: str, size: int | None) -> bool:
    if size is None:  # a frozen registry: named by the sha256 of its bytes
        return hashlib.sha256(path.read_bytes()).hexdigest() == digest
    from .storage import digest_of  # pyarrow: kept off the start-up of a sync that copies whole folders

    found_size, found = digest_of(path)
    return found_size == size and found == digest


def check_artifacts(directory: Path, records: list[LogRecord]) -> list[str]:
    """What is wrong with the files the events name in `directory` (missing, or other bytes)."""
    problems = []
    for record in records:
        for rel, digest, size in _named(record):
            path = directory / rel
            if not path.is_file():
                problems.append(f"{rel} (named by event seq {record.seq}) is missing")
            elif not _matches(path, digest, size):
                problems.append(f"{rel} (named by event seq {record.seq}) does not match its digest")
    return problems
