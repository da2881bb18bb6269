"""Replay, rebuild and verify: the projections folded from the log itself, never from the live files.

- `replay` writes the dataset as it was right after one event into a new folder.
- `rebuild` regenerates every projection of the dataset from the log.
- `verify` checks the hash chain and every payload digest, and compares the bytes the fold encodes to
  with the stored files. It only reports unless asked to fix (then it rebuilds what differs).
All three fold from the newest usable checkpoint at or before their target (else from the start).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from . import history
from .checkpoints import list_checkpoints, load_checkpoint
from .codec import foreign_writer, read_watermark
from .errors import DatasetExists, UsrError
from .events import BASE_EVENTS
from .fileio import Part, Spill, fileops, is_temp, locked, pieces_of, write_atomic
from .idindex import read_manifest, stamp_at
from .log import LogLine, Scan, iter_lines, open_log, seq_of
from .meta import write_meta
from .names import (
    DERIVED_DIR,
    HISTORY_DIR,
    HISTORY_MANIFEST,
    INDEX_DIR,
    INDEX_MANIFEST,
    LAYOUT_FILE,
    LOCK_FILE,
    LOG_FILE,
    META_FILE,
    PAYLOAD_DIR,
    RECORDS_FILE,
    REGISTRY_DIR,
    SNAPSHOT_DIR,
    TOMBSTONE_NS,
)
from .original import not_adopted, original_names, require_adopted, unadopted
from .overlays import tombstoned_ids
from .projections import BaseFile, DerivedFiles, Fold, Output
from .projectors import Watermark
from .recovery import (
    LocalSource,
    anchor,
    committed_base,
    copy_file,
    fold_lines,
    release_memory,
    remove_temps,
    stale_checkpoint_staging,
    sync,
)
from .results import RebuildResult, ReplayResult, VerifyReport
from .storage import frozen_registry, read_layout


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
    if until_seq is None:
        require_adopted(directory, scan.seq, lines[0].record if lines else None)
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
    # A projection an older checkpoint does not hold (the history index) folds the lines before it too.
    first = 0 if any(m.anchored and m.mark() is None for m in fold.members) else start
    fold_lines(fold, lines[first:], directory)
    return Replayed(fold, start, used, scan, lines, notes)


def resolve_until(directory: Path, name: str, until: str | int) -> int:
    """Turn `SEQ`, `EVENT_ID` or an RFC 3339 timestamp into a seq of this log."""
    lines = list(iter_lines(directory / LOG_FILE))
    require_adopted(directory, len(lines), lines[0].record if lines else None)
    return seq_of(lines, name, until)


def replay(directory: Path, seq: int, out: Path) -> ReplayResult:
    """Write the dataset as it was right after event `seq` into the new (or empty) folder `out`."""
    from .inputs import require_directory

    require_directory(out, "Output directory")
    if out.exists() and any(out.iterdir()):
        raise DatasetExists(f"Output directory is not empty: {out}")
    done = replayed(directory, until_seq=seq)
    fold, lines = done.fold, done.lines
    fileops().mkdir(out)
    with open_log(directory / LOG_FILE) as fh:
        prefix = fh.read(done.scan.size - done.scan.unterminated)
    if done.scan.unterminated:  # the replayed log holds the line whole, with its newline
        prefix += b"\n"
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
    derived = fold.get(DerivedFiles)
    deleted = (
        len(tombstoned_ids(derived.merged(TOMBSTONE_NS))) if TOMBSTONE_NS in derived.layout.live else 0
    )  # counted as `usr info` counts them: the live view's rows
    return ReplayResult(
        out=str(out),
        seq=seq,
        event_id=last.event_id,
        timestamp_utc=last.timestamp_utc,
        rows=(base.rows if base is not None else 0) - deleted,
        deleted=deleted,
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
    fold of the whole log encodes to equal the stored ones byte for byte; report files nobody expects.

    The check runs without the lock (writers go on). When it finds a file that differs, it runs again
    under the dataset lock, so a write in flight is never reported as corruption; that pass also tells a
    projection that is only behind the log (it equals the replay of the prefix it names: the next command
    catches it up) and a stale cache (written by another pyarrow or projector version) from a file that
    differs. Reports only, unless `fix`: then, when the log itself checks out, the projection files are
    rebuilt from the log (and unexpected files removed), checked again, and the report lists what was
    rewritten or removed. A damaged log is never "fixed": it is reported, as without `fix`."""
    if unadopted(directory):
        raise not_adopted(name)
    if not fix:
        found = _verify(directory, name, pinned=False)
        if found.ok or not found.log_ok:
            return found
    try:
        with locked(directory / LOCK_FILE):
            found = _verify(directory, name, pinned=True)
            if not fix or found.ok or not found.log_ok:
                return found
            remove_temps(directory)
            for rel in found.unexpected:
                if (directory / rel).is_file():
                    fileops().unlink(directory / rel)
            _rebuild(directory, name)
            again = _verify(directory, name, pinned=True)
    except PermissionError:  # a read-only dataset: what the lock-free pass saw, said as such
        if fix:
            raise
        unsure = _verify(directory, name, pinned=False)
        note = "the dataset lock could not be taken (read-only?): a write in flight may show as a difference"
        return msgspec.structs.replace(unsure, notes=[*unsure.notes, note])
    return msgspec.structs.replace(again, repaired=found.differing)


def _verify(directory: Path, name: str, *, pinned: bool) -> VerifyReport:
    """One verification pass; `pinned`: no writer runs (the lock is held), so a difference is real and
    a projection behind the log is told apart from one that differs."""
    problems: list[str] = []
    notes: list[str] = []
    scan = Scan()
    fold = Fold(LocalSource(directory, trust_files=False))
    payloads = 0
    named: set[str] = set()  # the payload files the log names
    registries: set[str] = set()  # the frozen registries it names, checked once each
    first = None  # line 1's record: an adoption interrupted mid-append is reported, never "fixed"
    try:
        for line in iter_lines(directory / LOG_FILE, scan=scan):
            record = line.record
            first = first or record
            if record.payload is not None:
                payloads += 1  # read and digest-checked by the fold below (every payload event is folded)
                named.add(record.payload.file)
            if record.registry_hash and record.registry_hash not in registries:
                registries.add(record.registry_hash)
                frozen_registry(directory, record.registry_hash)  # present and matching its hash
            fold_lines(fold, [line], directory)
            base = fold.base
            if (
                isinstance(record.event, BASE_EVENTS)
                and base is not None
                and (
                    record.fingerprint.rows != base.rows or record.fingerprint.cols != fold.get(BaseFile).column_count()
                )
            ):
                problems.append(
                    f"line {line.seq} (byte offset {line.offset}): fingerprint rows/cols differ from replay"
                )
                break
        require_adopted(directory, scan.seq, first)
    except UsrError as exc:
        problems.append(str(exc))
    files: list[str] = []
    differing: list[str] = []
    behind: list[str] = []
    stale: list[str] = []
    unexpected: list[str] = []
    log_ok = not problems
    if log_ok:
        if scan.unterminated:
            notes.append(f"the last line (seq {scan.seq}) lost its newline (the next write restores it)")
        elif scan.torn_bytes:
            notes.append(f"torn tail of {scan.torn_bytes} byte(s) after seq {scan.seq} (quarantined by the next write)")
        found: dict[str, tuple[Output, Watermark | None]] = {}
        for member in fold.by_size():  # one expected file's bytes in memory at a time
            reflects = member.stored_mark(directory) if member.anchored else None
            for rel, out in member.outputs().items():
                release_memory()
                expected = out.encode()
                if expected is None:  # the projection writes no such file
                    continue
                files.append(rel)
                if not _same(directory / rel, expected):
                    found[rel] = (out, reflects)
            member.release()
        files.sort(key=list(fold.outputs()).index)
        for rel in [rel for rel in files if rel in found]:
            differing.append(rel)
            out, reflects = found[rel]
            kind, text = _difference(directory, rel, out, scan, pinned=pinned, reflects=reflects)
            (notes if kind == "behind" else problems).append(text)
            log_ok &= not (pinned and kind == "ahead")  # a fix must not rebuild over lost lines (once confirmed)
            {"behind": behind, "stale": stale}.get(kind, []).append(rel)
        unexpected, leftovers = _unexpected(directory, set(fold.outputs()), named)
        differing.extend(unexpected)
        lagging = _named_by_stored_anchors(directory) if pinned else set()
        for rel in unexpected:  # crash leftovers and parts a lagging layout names are noted; others fail
            harmless = _is_leftover(rel) or rel in lagging or _removed_part(directory, rel)
            (notes if harmless else problems).append(_unexpected_problem(rel, lagging, directory))
        notes.extend(leftovers)
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
        behind=behind,
        stale=stale,
        unexpected=unexpected,
    )


def _difference(
    directory: Path, rel: str, out: Output, scan: Scan, *, pinned: bool, reflects: Watermark | None
) -> tuple[str, str]:
    """Why the stored file at `rel` is not what the fold of the whole log encodes to: (kind, message),
    kind one of missing, stale, ahead (of the log), behind, differs. `reflects`: the watermark the
    stored projection owning the file carries (its anchor)."""
    path = directory / rel
    if not path.exists():
        if pinned and reflects is not None and out.mark.seq > reflects.seq:
            return "behind", (
                f"{rel} is not written yet: it belongs to seq {out.mark.seq}, after the seq {reflects.seq} its "
                "projection reflects (the next command writes it)"
            )
        return "missing", f"{rel} is missing (run `usr rebuild`)"
    other = foreign_writer(path)
    if other is not None:
        return "stale", (
            f"{rel} is a stale cache written by {other}, not by this usr_es and pyarrow: not corruption; "
            "the next write (or `usr rebuild`) re-encodes it"
        )
    stored = out.stamp(path)
    torn = committed_base(directory) if stored is None and rel == RECORDS_FILE and pinned else None
    if torn is not None:
        size, mark = torn
        then = replayed(directory, until_seq=mark.seq).fold.outputs().get(rel)
        encoded = then.encode() if then is not None and then.mark == mark else None
        if encoded is not None and same_bytes(path, encoded, prefix=size):
            return "behind", (
                f"{rel} is behind the log: an append after seq {mark.seq} was cut short (a crash); its first {size} "
                f"bytes equal the replay of seq 1..{mark.seq} (the next command cuts the rest and catches it up)"
            )
    if stored is not None and stored.seq > scan.seq:
        return "ahead", (
            f"{rel} reflects seq {stored.seq} but the log ends at seq {scan.seq}: the log lost committed lines "
            "(truncated, or restored from an older copy)"
        )
    if pinned and stored is not None and stored.seq < scan.seq and anchor(directory / LOG_FILE, stored) is not None:
        done = replayed(directory, until_seq=stored.seq)
        then = done.fold.outputs().get(rel)
        encoded = then.encode() if then is not None and then.mark == stored else None
        if encoded is not None and _same(path, encoded):
            return "behind", (
                f"{rel} is behind the log: it reflects seq {stored.seq} of {scan.seq} and equals the replay of "
                f"seq 1..{stored.seq} (the next command catches it up)"
            )
    where = f"stored watermark seq {stored.seq}" if stored is not None else "content differs"
    return "differs", f"{rel} differs from replay of seq 1..{scan.seq} ({where})"


#: Folders only usr_es writes into: every file there is a projection, a payload, a frozen registry or a
#: checkpoint (the dataset folder itself may hold the user's own files; only temp files count there).
_OWNED = (DERIVED_DIR, INDEX_DIR, HISTORY_DIR)


def _unexpected(directory: Path, outputs: set[str], named: set[str]) -> tuple[list[str], list[str]]:
    """Files in the dataset no projection produces and no event names, and notes on harmless leftovers."""
    found: list[str] = []
    for folder in (directory, directory / PAYLOAD_DIR, directory / REGISTRY_DIR, directory / SNAPSHOT_DIR):
        if folder.is_dir():
            found.extend(str(p.relative_to(directory)) for p in sorted(folder.iterdir()) if is_temp(p))
    found.extend(str(p.relative_to(directory)) for p in stale_checkpoint_staging(directory))
    for name in _OWNED:
        if (directory / name).is_dir():
            for path in sorted((directory / name).rglob("*")):
                rel = str(path.relative_to(directory))
                if path.is_file() and rel not in outputs and not original_names(rel):
                    found.append(rel)
    notes: list[str] = []
    if (directory / PAYLOAD_DIR).is_dir():
        orphans = [p for p in (directory / PAYLOAD_DIR).iterdir() if p.is_file() and not is_temp(p)]
        orphans = [p for p in orphans if f"{PAYLOAD_DIR}/{p.name}" not in named]
        if orphans:
            notes.append(f"{len(orphans)} payload file(s) no event names (left by writes that did not commit)")
    return found, notes


def _named_by_stored_anchors(directory: Path) -> set[str]:
    """The files the stored anchors (the overlay layout, the id index manifest) name."""
    named: set[str] = set()
    stored = read_layout(directory / LAYOUT_FILE)
    if stored is not None:
        named.update(stored[0].files())
    manifest = read_manifest(directory / INDEX_MANIFEST)
    if manifest is not None:
        named.update(run.file for run in manifest.runs)
    runs = history.read_manifest(directory / HISTORY_MANIFEST)
    if runs is not None:
        named.update(run.file for run in runs.runs)
    return named


def _is_leftover(rel: str) -> bool:
    return Path(rel).name.startswith(".tmp-")


def _removed_part(directory: Path, rel: str) -> bool:
    """An overlay part the log did produce (its name and watermark name a line of the log) that a later
    event removed: left by a clean-up a crash interrupted (an unlink that was not yet durable)."""
    if rel.startswith(INDEX_DIR) and _RUN.match(Path(rel).name):  # an index run a later import merged away
        stamp = stamp_at(directory / rel)
        return stamp is not None and anchor(directory / LOG_FILE, stamp) is not None
    if rel.startswith(HISTORY_DIR) and _HISTORY_RUN.match(Path(rel).name):  # a history run merged away
        stamp = stamp_at(directory / rel)
        return stamp is not None and anchor(directory / LOG_FILE, stamp) is not None
    found = _PART_SEQ.search(Path(rel).name)
    if not rel.startswith(DERIVED_DIR) or found is None:
        return False
    stamp = read_watermark(directory / rel)
    return stamp is not None and stamp.seq == int(found.group(1)) and anchor(directory / LOG_FILE, stamp) is not None


_PART_SEQ = re.compile(r"^part-0*(\d+)\.parquet$")
_RUN = re.compile(r"^id-\d{10}-\d{10}\.arrow$")
_HISTORY_RUN = re.compile(r"^h-\d{12}-\d{12}\.arrow$")


def _unexpected_problem(rel: str, lagging: set[str], directory: Path) -> str:
    if _is_leftover(rel):
        return f"{rel} was left by a crashed writer (the next write removes it)"
    if _removed_part(directory, rel):
        return f"{rel} was removed by a later event; a crash left it behind (`usr verify --fix` removes it)"
    if rel in lagging:
        return (
            f"{rel} is named by a stored layout or index manifest that is behind the log (the next command removes it)"
        )
    if rel.endswith(".parquet") and rel.startswith(DERIVED_DIR):
        return f"{rel} is not produced by the log (stray overlay file)"
    return f"{rel} is not produced by the log (unexpected file)"


def _same(path: Path, expected: bytes | memoryview | Sequence[Part]) -> bool:
    return path.exists() and same_bytes(path, expected)


def same_bytes(path: Path, data: bytes | memoryview | Sequence[Part], *, prefix: int | None = None) -> bool:
    """Whether the file holds exactly `data` (compared a block at a time, spilled parts read a piece at a
    time); with `prefix`, whether its first `prefix` bytes are exactly `data`."""
    parts = [data] if isinstance(data, (bytes, memoryview)) else list(data)
    total = sum(len(p) if isinstance(p, Spill) else memoryview(p).nbytes for p in parts)
    size = path.stat().st_size
    if (size if prefix is None else min(size, prefix)) != total:
        return False
    block = 1 << 20
    with path.open("rb") as fh:
        for piece in pieces_of(parts):
            view = memoryview(piece).cast("B")
            for at in range(0, view.nbytes, block):
                want = view[at : at + block]
                if fh.read(want.nbytes) != want:
                    return False
    return True
