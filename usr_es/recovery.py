"""Recovery: trust stored projections from where the log agrees with them, fold what they lack, publish.

- `anchor` checks that the line a stored projection claims (its watermark) is in the log.
- `catch_up` (under the dataset lock) loads the stored projections, folds the events after the oldest
  anchor through the one `Fold`, publishes what changed and quarantines a torn tail.
- `fresh` is the read-only head readers use: it takes the lock only when a projection lags.
- `LocalSource` gives the fold the rows it does not hold, from the dataset's files (or the log).
- `publish_changes` / `sync` write a fold's outputs: incrementally after one write, or all of them.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec
import pyarrow as pa

from .codec import read_parquet, read_watermark
from .errors import IntegrityError, NotFound, ReadError
from .events import (
    BASE_EVENTS,
    GENESIS_HASH,
    LogRecord,
    OverlayWritten,
    SequencesImported,
    record_decoder,
)
from .fileio import append_at, fileops, locked, remove_stale_temps
from .log import (
    LogLine,
    Scan,
    check_prefix,
    iter_lines,
    legacy_line,
    line_problem,
    quarantine_tail,
    read_line_at,
    terminate_last_line,
)
from .names import (
    DERIVED_DIR,
    HISTORY_DIR,
    INDEX_DIR,
    LAYOUT_FILE,
    LOCK_FILE,
    LOG_FILE,
    PAYLOAD_DIR,
    RECORDS_FILE,
    REGISTRY_DIR,
    SNAPSHOT_DIR,
)
from .original import interrupted_adoption, not_adopted, original_name, unadopted, unfinished_adoption
from .projections import (
    BaseFile,
    DerivedFiles,
    Encoded,
    Fold,
    Growth,
    Output,
    PartSource,
    Projection,
    Restart,
    Step,
    table_key,
)
from .projectors import BaseProjection, DerivedLayout, PartInfo, Payload, Watermark, part_table, sorted_part
from .storage import ParquetRows, open_payload, publish, read_base, read_payload


def decode_record(raw: bytes) -> LogRecord:
    """The record of one raw log line (its hash chain is the caller's to check)."""
    try:
        return record_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"cannot decode log line: {exc}") from exc


def release_memory() -> None:
    """Hand memory Arrow's allocator has freed back to the OS (it keeps it otherwise): without this,
    the scratch space of one phase of a large write stays in the process's peak RSS on top of the next."""
    pa.default_memory_pool().release_unused()


@dataclass
class LocalSource(PartSource):
    """The rows of overlay parts and stored bases, read from a dataset folder.

    `trust_files`: a part file whose watermark matches is read (catch-up, reads); else every part is
    regenerated from its event (replay, rebuild, verify). `trusted`: part files of a verified checkpoint,
    by `table_key`. `cache`: the writer's `BaseCache` for partially loaded bases.
    """

    directory: Path
    trust_files: bool = True
    trusted: dict[str, Path] = field(default_factory=dict)
    cache: BaseCache | None = None

    def part(self, info: PartInfo, resolve: Callable[[PartInfo], pa.Table]) -> pa.Table:
        stored = self._stored(info, keep=False)
        if stored is not None:
            return read_parquet(stored).replace_schema_metadata(None)
        return self._regenerated(info, resolve)

    def rows(self, info: PartInfo, resolve: Callable[[PartInfo], pa.Table]) -> Payload:
        stored = self._stored(info, keep=True)
        if stored is not None:
            return ParquetRows(stored)
        record = None
        if not info.sources:
            record = self._record_of(info)
            if isinstance(record.event, OverlayWritten) and record.payload is not None:
                return open_payload(self.directory, record.payload)  # an attach's part is its payload
        return self._regenerated(info, resolve, record)

    def _stored(self, info: PartInfo, *, keep: bool) -> Path | None:
        """The file holding part `info` that may be read as it is: a verified checkpoint's (given up once
        read unless `keep`), or the part file when files are trusted and its watermark matches."""
        key = table_key(info)
        trusted = self.trusted.get(key) if keep else self.trusted.pop(key, None)
        if trusted is not None:
            return trusted
        path = self.directory / info.file
        return path if self.trust_files and read_watermark(path) == info.mark else None

    def _regenerated(
        self, info: PartInfo, resolve: Callable[[PartInfo], pa.Table], record: LogRecord | None = None
    ) -> pa.Table:
        """Part `info` made again from the log: the merge of the parts it compacted, or its event's rows
        (`record`: its log record, when already read)."""
        from .overlays import Part, merge_parts

        if info.sources:
            return sorted_part(merge_parts([Part(s.mark.seq, resolve(s)) for s in info.sources]))
        record = record if record is not None else self._record_of(info)
        payload = read_payload(self.directory, record.payload) if record.payload is not None else None
        table = part_table(record.event, payload)
        if table is None:
            raise IntegrityError(f"event seq {record.seq} does not produce overlay part {info.file}")
        return table

    def _record_of(self, info: PartInfo) -> LogRecord:
        """The record of the event that wrote part `info`."""
        raw = read_line_at(self.directory / LOG_FILE, info.mark.offset)
        if raw is None:
            raise IntegrityError(f"log line for overlay part {info.file} is missing")
        return decode_record(raw)

    def base(self, directory: Path, mark: Watermark, columns: list[str] | None) -> BaseProjection:
        if columns is not None and self.cache is not None and directory == self.directory:
            return self.cache.load(directory, mark, columns)
        return read_base(directory, mark, columns=columns)


class BaseCache:
    """The base columns a writer read last, kept while records.parquet is the same file (its inode, size
    and mtime: an import grows it in place, anything else replaces it): a loop of small writes reads them
    once."""

    def __init__(self) -> None:
        self._held: tuple[tuple[int, ...], tuple[str, ...], BaseProjection] | None = None

    def load(self, directory: Path, mark: Watermark, columns: list[str]) -> BaseProjection:
        st = os.stat(directory / RECORDS_FILE)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        held = self._held
        if held is not None and held[0] == key and held[1] == tuple(columns) and held[2].watermark == mark:
            return held[2]
        base = read_base(directory, mark, columns=columns)
        self._held = (key, tuple(columns), base)
        return base


def remove_temps(directory: Path) -> None:
    """Remove temp files a crashed writer left (under the lock): in the dataset folder and in every
    folder usr_es writes below it (overlay parts, the id index, payloads, frozen registries, checkpoints)."""
    remove_stale_temps(directory)
    for folder in (PAYLOAD_DIR, REGISTRY_DIR, INDEX_DIR, HISTORY_DIR, DERIVED_DIR, SNAPSHOT_DIR):
        remove_stale_temps(directory / folder, recursive=True)
    for staging in stale_checkpoint_staging(directory):
        shutil.rmtree(staging, ignore_errors=True)


def stale_checkpoint_staging(directory: Path) -> list[Path]:
    """Checkpoint folders a crashed writer was still staging (`checkpoints.write_checkpoint`)."""
    folder = directory / SNAPSHOT_DIR
    return sorted(p for p in folder.glob(".tmp-checkpoint-*") if p.is_dir()) if folder.is_dir() else []


def anchor(log_path: Path, stored: Watermark | None) -> tuple[int, int, str] | None:
    """(offset, seq, prev hash) of the line a stored projection claims, if the log agrees."""
    if stored is None or stored.seq < 1:
        return None
    raw = read_line_at(log_path, stored.offset)
    if raw is None or line_problem(raw, hash=stored.hash, seq=stored.seq) is not None:
        return None
    return stored.offset, stored.seq, decode_record(raw).prev


#: The anchor of a projection with no stored file: it folds the log from its first line.
_FROM_START = (0, 1, GENESIS_HASH)


def _anchors(log_path: Path, stored: dict[str, Watermark | None]) -> tuple[int, int, str] | None:
    """The oldest anchor of the stored anchored projections: the first line when one of them has no file
    (it folds the log from the start; the others load theirs), None when none is stored or a stored one
    disagrees with the log (every projection folds the log from the start)."""
    found = []
    for mark in stored.values():
        if mark is None:
            found.append(_FROM_START)
            continue
        point = anchor(log_path, mark)
        if point is None:
            return None
        found.append(point)
    if all(mark is None for mark in stored.values()):
        return None  # nothing stored: every projection folds the log from the start
    return min(found) if found else None


def step_of(line: LogLine, directory: Path) -> Step:
    """The step of one log line, its payload read (an import's a batch at a time, when the fold takes it)."""
    record = line.record
    payload: Payload | None = None
    if record.payload is not None:
        streamed = isinstance(record.event, (SequencesImported, OverlayWritten))  # read a batch at a time
        payload = open_payload(directory, record.payload) if streamed else read_payload(directory, record.payload)
    return Step(Watermark(line.seq, line.offset, record.hash), record.event, record.registry_hash, payload)


#: The key of `fold_lines`' counts under which it counts the events folded (into any projection).
EVENTS = ""


def fold_lines(fold: Fold, lines: Iterable[LogLine], directory: Path) -> dict[str, int]:
    """Fold log lines into `fold` (only the events some projection lacks; their payloads are read then).
    Returns how many events each projection took, by label, and under `EVENTS` how many events were
    folded in all. Raises `Restart`."""
    counts: dict[str, int] = {EVENTS: 0}
    for line in lines:
        probe = Step(Watermark(line.seq, line.offset, line.record.hash), line.record.event, None, None)
        if not fold.due(probe):
            continue
        release_memory()  # what folding the previous event freed
        counts[EVENTS] += 1
        for member in fold.apply(step_of(line, directory)):
            counts[member.label] = counts.get(member.label, 0) + 1
    return counts


@dataclass
class Tail:
    """The verified log head plus every projection caught up to it."""

    scan: Scan
    fold: Fold
    caught_up: int
    warnings: list[str]
    #: (events logged, events in all) of an adoption interrupted mid-append, which only `usr adopt` reads
    #: (to finish it); its projections were not published.
    adoption: tuple[int, int] | None = None


def catch_up(
    directory: Path,
    *,
    quarantine: bool,
    base_columns: list[str] | None = None,
    cache: BaseCache | None = None,
    adopting: bool = False,
) -> Tail:
    """Verify the log, fold the events the stored projections lack, publish them, quarantine a torn tail.

    Stored projections are trusted from their anchors on: the lines before are checked from raw bytes,
    the lines after are decoded and folded. Called under the dataset lock. With `base_columns`, a base
    that needs no catching up is loaded with only those columns.

    A folder the original USR wrote and nobody adopted, or whose adoption was interrupted mid-append,
    raises `NotAdopted` before anything is published (its files are the original's); with `adopting`
    (`usr adopt`) it is returned unpublished instead (`Tail.adoption`: the interrupted one).
    """
    log_path = directory / LOG_FILE
    fold = Fold(LocalSource(directory, cache=cache))
    stored = {m.label: m.stored_mark(directory) for m in fold.members if m.anchored}  # read once each
    cut = cut_torn_base(directory) if stored[BaseFile.label] is None else None
    if cut is not None:  # records.parquet was cut back to a committed size: read its stamp again
        stored[BaseFile.label] = fold.get(BaseFile).stored_mark(directory)
    start = _anchors(log_path, stored)
    if start is not None:
        if start != _FROM_START:
            check_prefix(log_path, end_offset=start[0], lines=start[1] - 1, last_hash=start[2])
        for member in fold.members:
            member.load(directory, columns=base_columns)
    # From the start, iter_lines finds line 1 itself (an adopted log's follows the original's lines).
    offset, seq, prev = (
        (0, 0, GENESIS_HASH) if start is None or start == _FROM_START else (start[0], start[1] - 1, start[2])
    )
    scan = Scan()
    first: list[LogRecord] = []  # line 1, when the fold starts there
    try:
        counts = fold_lines(
            fold,
            _first_kept(iter_lines(log_path, scan=scan, start_offset=offset, start_seq=seq, start_hash=prev), first),
            directory,
        )
    except Restart:  # the stored projections disagree with each other: fold the whole log
        fold, scan, first = Fold(LocalSource(directory)), Scan(), []
        counts = fold_lines(fold, _first_kept(iter_lines(log_path, scan=scan), first), directory)
    adoption = unfinished_adoption(first[0] if first else None, scan.seq)
    held = adoption is not None or (scan.seq == 0 and unadopted(directory))
    if held and not adopting:
        name = original_name(directory)
        raise interrupted_adoption(name, *adoption) if adoption is not None else not_adopted(name)
    ahead = next(((label, mark.seq) for label, mark in stored.items() if mark and mark.seq > scan.seq), None)
    if ahead is not None:  # never fold (or quarantine) over lines a projection proves were committed
        raise IntegrityError(
            f"the log ends at seq {scan.seq} but {ahead[0]} reflects seq {ahead[1]}: the log lost committed "
            "lines (truncated, or restored from an older copy); nothing was written",
            hint="Restore the full .events.log. To accept the shorter log as the truth instead, run `usr rebuild`.",
        )
    warnings = [cut] if cut else []
    # The projections that took events (all of them after a fold from the start), and any that follows
    # another projection instead of carrying a watermark of its own.
    due = [m for m in fold.members if start is None or counts.get(m.label) or not m.anchored]
    if not held:  # an original's files (or an unfinished adoption's) are not this fold's to replace
        sync(fold, directory, trust_stored=True, members=due)
    for member in fold.members:
        n = counts.get(member.label, 0)
        mark = member.mark()
        if n and mark is not None:
            warnings.append(f"caught up {member.label} by {n} event(s) to seq {mark.seq}")
    if quarantine and scan.torn_offset is not None:
        size = quarantine_tail(log_path, scan)
        what = "the damaged newline" if scan.unterminated else "a torn tail"
        warnings.append(f"quarantined {what} of {size} byte(s) after seq {scan.seq} into .events.log.quarantine")
    if quarantine and terminate_last_line(log_path, scan):
        warnings.append(
            f"restored the newline the last line (seq {scan.seq}) had lost: its hash verifies, so it is committed"
        )
    return Tail(scan=scan, fold=fold, caught_up=counts[EVENTS], warnings=warnings, adoption=adoption)


def _first_kept(lines: Iterator[LogLine], first: list[LogRecord]) -> Iterator[LogLine]:
    """`lines`, keeping line 1's record in `first` when they start there."""
    for line in lines:
        if line.seq == 1:
            first.append(line.record)
        yield line


def committed_base(directory: Path) -> tuple[int, Watermark] | None:
    """When records.parquet's end is no footer because an append was cut short (a crash in the middle of
    growing it in place, docs/adr/0013): its committed size and watermark. The log records the file's
    size after every event that changed it; the newest of those sizes at which the file holds a footer
    stamped with that very line is the committed file (the bytes after it are unreferenced). None when
    the file reads as it is, or no committed size is found (the fold then rebuilds it from the log)."""
    path = directory / RECORDS_FILE
    try:
        size = os.stat(path, follow_symlinks=False).st_size
    except OSError:
        return None
    if read_watermark(path) is not None:
        return None
    sizes: list[tuple[int, Watermark]] = []
    try:
        for line in iter_lines(directory / LOG_FILE):
            if isinstance(line.record.event, BASE_EVENTS) and line.record.fingerprint.size_bytes > 0:
                sizes.append((line.record.fingerprint.size_bytes, Watermark(line.seq, line.offset, line.record.hash)))
    except IntegrityError:
        return None  # catch-up or verify reports the log
    if not sizes or size >= sizes[-1][0]:
        # An append cut short leaves the file shorter than the log's last base event says; a longer one
        # holds more than the log (restored from an older copy?): not cut, catch-up or verify reports it.
        return None
    sizes = [(committed, mark) for committed, mark in sizes if committed <= size]
    with pa.memory_map(str(path)) as source:
        for committed, mark in reversed(sizes):
            if read_watermark(pa.BufferReader(source.read_buffer(committed))) == mark:
                return committed, mark
    return None


def cut_torn_base(directory: Path) -> str | None:
    """Cut records.parquet back to its committed size (`committed_base`), under the lock; a note when it cut."""
    found = committed_base(directory)
    if found is None:
        return None
    committed, mark = found
    path = directory / RECORDS_FILE
    size = path.stat().st_size
    ops = fileops()
    fd = ops.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        ops.truncate(fd, committed)
        ops.fsync(fd)
    finally:
        ops.close(fd)
    return f"cut {size - committed} byte(s) an interrupted append left after records.parquet's seq {mark.seq}"


def fresh(directory: Path) -> tuple[Watermark | None, Scan, int]:
    """Make the projections reflect every event; return the base watermark, the log scan and how many
    events had to be caught up. Takes the lock only when some projection lags."""
    log_path = directory / LOG_FILE
    fold = Fold(LocalSource(directory))
    marks = [(m, m.stored_mark(directory)) for m in fold.members if m.anchored]
    points = [anchor(log_path, mark) for _, mark in marks]
    if marks and all(p is not None for p in points):
        start = min(p for p in points if p is not None)
        check_prefix(log_path, end_offset=start[0], lines=start[1] - 1, last_hash=start[2])
        scan = Scan()
        lagging = False
        for line in iter_lines(log_path, start_offset=start[0], start_seq=start[1] - 1, start_hash=start[2], scan=scan):
            event = line.record.event
            if any(m.watches(event) and mark is not None and line.seq > mark.seq for m, mark in marks):
                lagging = True
                break
        base_mark = next((mark for m, mark in marks if isinstance(m, BaseFile)), None)
        # A projection that follows others (the id index) lags when its stored stamp is another watermark
        # (an interrupted publish); a missing one may be legitimately absent and is left to the writers.
        following = [m.stored_mark(directory) for m in fold.members if not m.anchored]
        if not lagging and all(stamp is None or stamp == base_mark for stamp in following):
            return base_mark, scan, 0
    with locked(directory / LOCK_FILE):
        tail = catch_up(directory, quarantine=False)
    base = tail.fold.base
    return (base.watermark if base is not None else None), tail.scan, tail.caught_up


# -- publishing a fold's outputs -------------------------------------------------------------------
def _write_output(path: Path, out: Output) -> bool:
    """Write one output's file: grown in place when it extends the stored file (docs/adr/0013), else
    published whole. Returns whether the projection holds a file there."""
    grow = out.grow
    if grow is not None and _extends(path, grow):
        append_at(path, grow.size, grow.body, grow.footer, point=path.name)
        return True
    data = out.encode()
    _write(path, data)
    return data is not None


def _extends(path: Path, grow: Growth) -> bool:
    """Whether the file at `path` is the one `grow` extends (one link only: a checkpoint or a replay copy
    linked to it must not change), maybe with a torn tail of an interrupted append after it."""
    if path != grow.path:
        return False
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size < grow.size:
        return False
    if st.st_size == grow.size:  # the file the fold loaded under this lock (its stamp was read then)
        return True
    if read_watermark(path) is not None:  # a whole file, not a torn tail: never cut a readable file back
        return False
    with pa.memory_map(str(path)) as source:
        return read_watermark(pa.BufferReader(source.read_buffer(grow.size))) == grow.after


def _write(path: Path, data: Encoded) -> None:
    if data is None:
        if path.exists():
            fileops().unlink(path)
        return
    fileops().mkdir(path.parent)
    publish(path, data)


def publish_changes(before: dict[str, Output], after: dict[str, Output], target: Path) -> list[str]:
    """Publish what one write changed: files that are new or carry a new watermark (an archived part is
    moved from where it was), then remove the files no projection produces any more, then the anchor
    files (`Output.last`): a crash in between leaves a projection lagging, never ahead of its files.
    Files an anchor names (`Output.named`) are removed after the anchors, so the old anchor never names a
    file that is gone."""
    written = []
    for rel, out in sorted(after.items(), key=lambda item: item[1].last):
        if out.last:
            for gone in [r for r, o in before.items() if r not in after and not o.named]:
                if (target / gone).exists():
                    fileops().unlink(target / gone)
            before = {r: o for r, o in before.items() if r in after or o.named}
        old = before.get(rel)
        if old is not None and old.mark == out.mark:
            continue
        source = before.get(out.moved_from) if out.moved_from is not None else None
        if source is not None and source.mark == out.mark and (target / str(out.moved_from)).exists():
            fileops().mkdir((target / rel).parent)
            fileops().replace(target / str(out.moved_from), target / rel)
        else:
            _write_output(target / rel, out)
        written.append(rel)
    for gone in [r for r in before if r not in after]:
        if (target / gone).exists():
            fileops().unlink(target / gone)
    return written


def sync(
    fold: Fold,
    target: Path,
    *,
    trust_stored: bool,
    reuse: Path | None = None,
    members: list[Projection] | None = None,
) -> list[str]:
    """Make `target` hold exactly the outputs of the fold (or of `members` of it).

    With `trust_stored`, a stored file carrying the right watermark is kept and an archived part is moved
    from its live path; else every file is written anew. A file unchanged since the checkpoint `reuse` is
    linked from it. Strays a projection owns are removed before its anchor files (`Output.last`) are
    written. Returns the paths of the files the synced projections hold, in fold order."""
    chosen = members if members is not None else fold.members
    placed: set[str] = set()
    for member in reversed(chosen):  # overlay parts before the base
        outputs = member.outputs()
        ordered = sorted(outputs.items(), key=lambda item: item[1].last)
        for rel, out in ordered:
            if out.last:
                for stray in list(member.stray(target)):
                    fileops().unlink(target / stray)
            if _place(target, rel, out, trust_stored=trust_stored, reuse=reuse):
                placed.add(rel)
        if not any(out.last for out in outputs.values()):
            for stray in list(member.stray(target)):
                fileops().unlink(target / stray)
        member.release(target)
        release_memory()
    return [rel for member in chosen for rel in member.outputs() if rel in placed]


def _place(target: Path, rel: str, out: Output, *, trust_stored: bool, reuse: Path | None) -> bool:
    """Put the output's file at `rel`; returns whether the projection holds a file there."""
    path = target / rel
    if trust_stored and out.stamp(path) == out.mark:
        return True
    moved = target / out.moved_from if out.moved_from is not None else None
    if trust_stored and moved is not None and moved.exists() and out.stamp(moved) == out.mark:
        fileops().mkdir(path.parent)
        fileops().replace(moved, path)
        return True
    kept = reuse / rel if reuse is not None else None
    if kept is not None and kept.exists() and out.stamp(kept) == out.mark:
        fileops().mkdir(path.parent)
        copy_file(kept, path)
        return True
    return _write_output(path, out)


def copy_file(src: Path, dst: Path) -> None:
    """A hard link where possible (projection files are replaced, not changed, by a write), else a copy;
    always a copy of records.parquet, which an import grows in place (docs/adr/0013)."""
    if dst.exists():
        return
    if src.name != RECORDS_FILE:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def live_parts(directory: Path) -> tuple[pa.Table, dict[str, pa.Table], DerivedLayout]:
    """The stored base table, every namespace's merged overlay and the layout (projections caught up
    first by the caller), read whole."""
    fold = Fold(LocalSource(directory))
    derived = fold.get(DerivedFiles)
    derived.load(directory)
    merged = {ns: derived.merged(ns) for ns in derived.layout.live}
    base = read_parquet(directory / RECORDS_FILE).replace_schema_metadata(None)
    return base, merged, derived.layout


@dataclass(frozen=True)
class ReadHead:
    """What readers need of a dataset: where it is, a caught-up head (`fresh`), and the rows of an
    overlay part whose file is missing or stale (regenerated from the log). Reads take no other path."""

    name: str
    dir: Path

    @classmethod
    def at(cls, directory: Path) -> ReadHead:
        """The dataset stored in `directory`, named by its init event (else by the folder)."""
        from .events import DatasetInitialized

        first = read_line_at(directory / LOG_FILE, 0)
        name = directory.name
        if first is None or legacy_line(first):  # the original USR's dataset: meta.md names it
            return cls(original_name(directory), directory)
        try:
            event = decode_record(first).event
            if isinstance(event, DatasetInitialized):
                name = event.name
        except IntegrityError:
            pass
        return cls(name, directory)

    @property
    def records_path(self) -> Path:
        return self.dir / RECORDS_FILE

    def fresh(self) -> tuple[Watermark | None, Scan, int]:
        if not (self.dir / LOG_FILE).is_file():
            if unadopted(self.dir):
                raise not_adopted(self.name)
            raise NotFound(f"Dataset not found: {self.name}", hint=f"Create it with `usr init {self.name}`.")
        return fresh(self.dir)

    def part_table(self, info: PartInfo) -> pa.Table:
        source = LocalSource(self.dir)
        done: dict[str, pa.Table] = {}

        def resolve(part: PartInfo) -> pa.Table:
            key = table_key(part)
            if key not in done:
                done[key] = source.part(part, resolve)
            return done[key]

        return resolve(info)


def merged_overlay(directory: Path, namespace: str) -> pa.Table | None:
    """One namespace's merged overlay from the stored parts (None: the namespace has no live parts)."""
    fold = Fold(LocalSource(directory))
    derived = fold.get(DerivedFiles)
    derived.load(directory)
    return derived.merged(namespace) if namespace in derived.layout.live else None


# -- reads under concurrent writers ----------------------------------------------------------------
T = TypeVar("T")
_READ_ATTEMPTS = 4


def _published(directory: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """What a writer changes when it commits and publishes: the log, the base, the overlay layout."""
    found: list[tuple[int, int, int] | None] = []
    for rel in (LOG_FILE, RECORDS_FILE, LAYOUT_FILE):
        try:
            st = os.stat(directory / rel)
        except OSError:
            found.append(None)
            continue
        found.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


def read_consistently(directory: Path, attempt: Callable[[], T], *, what: str) -> T:
    """Run the read `attempt`; when it fails with an I/O or Arrow error while a writer published under it,
    run it again (a read never mixes two states of the files); any other such failure is a `ReadError`."""
    tries = 0
    while True:
        before = _published(directory)
        try:
            return attempt()
        except (OSError, pa.ArrowException) as exc:
            tries += 1
            if tries < _READ_ATTEMPTS and _published(directory) != before:
                continue
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ReadError(
                f"{what} failed: {reason}",
                hint="Nothing was written to the log. If a projection lags, reads catch it up first and "
                "need the disk space and permission to do so.",
            ) from exc
