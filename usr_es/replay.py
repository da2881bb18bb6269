"""Replay, rebuild and verify: the projections folded from the log itself, never from the live files.

- `replay` writes the dataset as it was right after one event into a new folder.
- `rebuild` regenerates every projection of the dataset from the log.
- `verify` checks the hash chain and every payload digest, and compares the bytes the fold encodes to
  with the stored files. It only reports unless asked to fix (then it rebuilds what differs).
All three fold from the newest usable checkpoint at or before their target (else from the start).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from .checkpoints import list_checkpoints, load_checkpoint
from .codec import read_watermark
from .errors import DatasetExists, InvalidInput, NotFound, UsrError
from .events import BASE_EVENTS
from .fileio import fileops, locked, write_atomic
from .log import LogLine, Scan, iter_lines
from .meta import write_meta
from .names import LOCK_FILE, LOG_FILE, META_FILE, PAYLOAD_DIR, REGISTRY_DIR
from .projections import Fold
from .recovery import LocalSource, copy_file, fold_lines, release_memory, remove_temps, sync
from .results import RebuildResult, ReplayResult, VerifyReport


@dataclass
class Replayed:
    """The log (or a prefix) folded: from the checkpoint at `start` (0: none) stored in `checkpoint`."""

    fold: Fold
    start: int
    checkpoint: Path | None
    scan: Scan
    lines: list[LogLine]
    notes: list[str]


def replayed(directory: Path, *, until_seq: int | None = None) -> Replayed:
    """Fold the log (or a prefix) from the newest checkpoint at or before the target whose manifest
    matches the log (a mismatching one is skipped with a note), else from the start."""
    scan = Scan()
    lines = list(iter_lines(directory / LOG_FILE, until_seq=until_seq, scan=scan))
    notes: list[str] = []
    fold, start, used = Fold(LocalSource(directory, trust_files=False)), 0, None
    for seq, path in reversed(list_checkpoints(directory)):
        if seq > scan.seq:
            continue
        loaded = load_checkpoint(path, lines, directory)
        if isinstance(loaded, str):
            notes.append(f"{loaded}; ignored")
            continue
        (fold, start), used = loaded, path
        break
    fold_lines(fold, lines[start:], directory)
    return Replayed(fold, start, used, scan, lines, notes)


def resolve_until(directory: Path, name: str, until: str | int) -> int:
    """Turn `SEQ`, `EVENT_ID` or an RFC 3339 timestamp into a seq of this log."""
    lines = list(iter_lines(directory / LOG_FILE))
    if not lines:
        raise NotFound(f"{name} has no events")
    text = str(until).strip()
    if text.isdigit():
        seq = int(text)
        if not 1 <= seq <= len(lines):
            raise NotFound(f"No event with seq {seq}; the log holds seq 1..{len(lines)}.")
        return seq
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
        for line in lines:
            if line.record.event_id == text:
                return line.seq
        raise NotFound(f"No event with id {text}.")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"Cannot read --until '{text}'.",
            hint="Give a seq (42), an event id, or an RFC 3339 timestamp.",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    chosen = [line.seq for line in lines if datetime.fromisoformat(line.record.timestamp_utc) <= moment]
    if not chosen:
        raise NotFound(f"No event at or before {text}; the first is at {lines[0].record.timestamp_utc}.")
    return chosen[-1]


def replay(directory: Path, seq: int, out: Path) -> ReplayResult:
    """Write the dataset as it was right after event `seq` into the new (or empty) folder `out`."""
    if out.exists() and any(out.iterdir()):
        raise DatasetExists(f"Output directory is not empty: {out}")
    done = replayed(directory, until_seq=seq)
    fold, lines = done.fold, done.lines
    fileops().mkdir(out)
    with (directory / LOG_FILE).open("rb") as fh:
        prefix = fh.read(done.scan.size)
    write_atomic(out / LOG_FILE, prefix, point="replay_log")
    for line in lines:
        if line.record.payload is not None:
            fileops().mkdir(out / PAYLOAD_DIR)
            copy_file(directory / line.record.payload.file, out / line.record.payload.file)
        if line.record.registry_hash:
            name = f"registry.{line.record.registry_hash}.yaml"
            if (directory / REGISTRY_DIR / name).exists():
                fileops().mkdir(out / REGISTRY_DIR)
                copy_file(directory / REGISTRY_DIR / name, out / REGISTRY_DIR / name)
    release_memory()  # what folding the log freed, before encoding
    sync(fold, out, trust_stored=False, reuse=done.checkpoint)
    write_meta(out, [line.record for line in lines])
    last = lines[-1].record
    base = fold.base
    return ReplayResult(
        out=str(out),
        seq=seq,
        event_id=last.event_id,
        timestamp_utc=last.timestamp_utc,
        rows=base.rows if base is not None else 0,
        from_checkpoint=done.start or None,
        notes=done.notes,
    )


def rebuild(directory: Path, name: str) -> RebuildResult:
    """Regenerate every projection (and meta.md) from the log."""
    with locked(directory / LOCK_FILE):
        return _rebuild(directory, name)


def _rebuild(directory: Path, name: str) -> RebuildResult:
    remove_temps(directory)
    done = replayed(directory)
    release_memory()
    files = sync(done.fold, directory, trust_stored=False)
    write_meta(directory, [line.record for line in done.lines])
    files.append(META_FILE)
    rows = done.fold.base.rows if done.fold.base is not None else 0
    return RebuildResult(dataset=name, seq=done.scan.seq, rows=rows, files=files, notes=done.notes)


def verify(directory: Path, name: str, *, fix: bool = False) -> VerifyReport:
    """Check the hash chain, every payload digest, each base event's fingerprint, and that the files the
    fold of the whole log encodes to equal the stored ones byte for byte.

    Reports only, unless `fix`: then, when the log itself checks out and only projection files differ, the
    files are rebuilt from the log under the dataset lock, checked again, and the report lists what was
    rewritten or removed. A damaged log is never "fixed": it is reported, as without `fix`."""
    if not fix:
        return _verify(directory, name)
    with locked(directory / LOCK_FILE):
        found = _verify(directory, name)
        if found.ok or not found.log_ok:
            return found
        _rebuild(directory, name)
        again = _verify(directory, name)
    return msgspec.structs.replace(again, repaired=found.differing)


def _verify(directory: Path, name: str) -> VerifyReport:
    problems: list[str] = []
    notes: list[str] = []
    scan = Scan()
    fold = Fold(LocalSource(directory, trust_files=False))
    payloads = 0
    try:
        for line in iter_lines(directory / LOG_FILE, scan=scan):
            record = line.record
            if record.payload is not None:
                payloads += 1  # read and digest-checked by the fold below (every payload event is folded)
            fold_lines(fold, [line], directory)
            base = fold.base
            if (
                isinstance(record.event, BASE_EVENTS)
                and base is not None
                and (record.fingerprint.rows != base.rows or record.fingerprint.cols != base.table.num_columns)
            ):
                problems.append(
                    f"line {line.seq} (byte offset {line.offset}): fingerprint rows/cols differ from replay"
                )
                break
    except UsrError as exc:
        problems.append(str(exc))
    files: list[str] = []
    differing: list[str] = []
    log_ok = not problems
    if log_ok:
        if scan.torn_bytes:
            notes.append(f"torn tail of {scan.torn_bytes} byte(s) after seq {scan.seq} (quarantined by the next write)")
        found: dict[str, str] = {}
        for member in fold.by_size():  # one expected file's bytes in memory at a time
            for rel, out in member.outputs().items():
                release_memory()
                expected = out.encode()
                if expected is None:  # the projection writes no such file
                    continue
                files.append(rel)
                problem = _compare(directory / rel, rel, expected, scan.seq)
                if problem is not None:
                    found[rel] = problem
            member.release()
        files.sort(key=list(fold.outputs()).index)
        strays = list(fold.stray(directory))
        differing = [rel for rel in files if rel in found] + strays
        problems.extend(found[rel] for rel in files if rel in found)
        problems.extend(f"{rel} is not produced by the log (stray overlay file)" for rel in strays)
    return VerifyReport(
        dataset=name,
        ok=not problems,
        seq=scan.seq,
        head_hash=scan.hash,
        lines=scan.seq,
        payloads_checked=payloads,
        files_checked=files,
        problems=problems,
        notes=notes,
        log_ok=log_ok,
        differing=differing,
    )


def _compare(path: Path, rel: str, expected: bytes | memoryview | list[bytes | memoryview], seq: int) -> str | None:
    if not path.exists():
        return f"{rel} is missing (run `usr rebuild`)"
    if not same_bytes(path, expected):
        stored = read_watermark(path) if rel.endswith(".parquet") else None
        where = f"stored watermark seq {stored.seq}" if stored else "content differs"
        return f"{rel} differs from replay of seq 1..{seq} ({where})"
    return None


def same_bytes(path: Path, data: bytes | memoryview | list[bytes | memoryview]) -> bool:
    """Whether the file holds exactly `data` (compared a block at a time)."""
    view = memoryview(b"".join(data)) if isinstance(data, list) else memoryview(data)
    if path.stat().st_size != view.nbytes:
        return False
    block = bytearray(1 << 20)
    offset = 0
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(block):
            if block[:size] != view[offset : offset + size].tobytes():
                return False
            offset += size
    return offset == view.nbytes
