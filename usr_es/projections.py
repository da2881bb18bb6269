"""The projections: every file derived from the log, kept by one fold.

A `Projection` owns some files of a dataset folder. It holds its state as of the events folded so far
(stamped with the watermark of the last event it took), folds one more event into that state
(`fold(step)`, from its previous state, never from scratch), and names the files its state encodes to
(`outputs()`: path -> the watermark the file carries and a lazy encoder). `Fold` gathers one instance
of every registered projection (`PROJECTIONS`) and is the only thing that folds events: the live write,
catch-up, replay, rebuild, checkpoints and verify all run it, and publish or compare its `outputs()`.

Adding a projection is one class here (or in its own module) plus one entry in `PROJECTIONS`
(docs/adr/0012). Folding reads no clock, randomness or live registry; the rows it needs that are not
in hand (an overlay part's table, a stored base's other columns) come through `PartSource`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

import pyarrow as pa

from . import idindex
from .codec import HASH_PLACEHOLDER, encode_base, encode_part, patch_watermark_hash, read_watermark
from .errors import IntegrityError
from .events import BASE_EVENTS, LAYOUT_EVENTS, Event, Materialized, OverlayCompacted
from .names import INDEX_FILE, LAYOUT_FILE, RECORDS_FILE, TOMBSTONE_NS
from .projectors import (
    EMPTY_LAYOUT,
    BaseProjection,
    DerivedLayout,
    PartInfo,
    Watermark,
    apply_event,
    apply_layout,
    materialize_table,
    part_table,
    sorted_part,
)
from .storage import encode_layout, read_layout

#: A file's bytes (None: the projection writes no such file now; a stored one is removed).
Encoded = bytes | memoryview | list[bytes | memoryview] | None
#: The hash of a watermark whose log line is not written yet (the live write folds before it appends).
PENDING = HASH_PLACEHOLDER


@dataclass(frozen=True)
class Step:
    """One event as the fold sees it: its position in the log, the event and its payload rows."""

    mark: Watermark
    event: Event
    registry_hash: str | None
    payload: pa.Table | None


@dataclass(frozen=True)
class Output:
    """One file a projection publishes: the watermark it carries and how to make its bytes."""

    mark: Watermark
    encode: Callable[[], Encoded]
    #: Reads the watermark a stored copy of the file carries (None: absent or unreadable).
    stamp: Callable[[Path], Watermark | None]
    #: The same bytes already stored at another path (an archived overlay part): moved, not re-encoded.
    moved_from: str | None = None
    #: The file readers anchor on (layout.json): published after the projection's other files and removals,
    #: so a crash before it leaves the projection lagging, and the next catch-up redoes the whole step.
    last: bool = False


class Restart(Exception):
    """The stored projections disagree with each other: fold again from the start of the log."""


class PartSource(Protocol):
    """Where the fold gets rows it does not hold: an overlay part's table, a stored base's columns."""

    def part(self, info: PartInfo, resolve: Callable[[PartInfo], pa.Table]) -> pa.Table:
        """The rows of part `info` (`resolve` gives the rows of the parts a compacted part merged)."""
        ...

    def base(self, directory: Path, mark: Watermark, columns: list[str] | None) -> BaseProjection:
        """The stored base in `directory` (stamped `mark`), with only `columns` when given."""
        ...

    def full_base(self, directory: Path, base: BaseProjection, columns: list[str] | None = None) -> BaseProjection:
        """`base`, loaded from `directory` with only some columns, with every column (or with `columns`)."""
        ...


class Projection(Protocol):
    """One projection: its state, how an event changes it, and the files it encodes to."""

    #: How warnings and notes name it ("records.parquet", "_derived/").
    label: str
    #: Whether it carries a watermark of its own (False: it follows another projection's).
    anchored: bool

    def watches(self, event: Event) -> bool:
        """Whether events of this kind change it."""
        ...

    def mark(self) -> Watermark | None:
        """The watermark of the last event folded into it (None: nothing yet)."""
        ...

    def stored_mark(self, directory: Path) -> Watermark | None:
        """The watermark its stored files in `directory` carry (None: none stored)."""
        ...

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        """Take the state its files in `directory` hold (trusted: their watermark was checked)."""
        ...

    def fold(self, step: Step) -> None:
        """Fold one event into the state (called only for events it watches, after its mark)."""
        ...

    def stage(self) -> None:
        """Prepare what `outputs()` will encode ahead of the append (runs beside the other projections)."""
        ...

    def seal(self, digests: dict[int, str]) -> None:
        """Replace `PENDING` hashes by the hashes the appended lines got (seq -> hash)."""
        ...

    def outputs(self) -> dict[str, Output]:
        """Path (relative to the dataset folder) -> the file its state encodes to."""
        ...

    def stray(self, directory: Path) -> Iterator[str]:
        """Files in `directory` it owns by name that no `outputs()` entry produces (to remove or report)."""
        ...

    def release(self) -> None:
        """Drop what it holds that can be read again (after its files were written or compared)."""
        ...


P = TypeVar("P")


def _sealed(mark: Watermark, digests: dict[int, str]) -> Watermark:
    return replace(mark, hash=digests[mark.seq]) if mark.hash == PENDING and mark.seq in digests else mark


# -- records.parquet -------------------------------------------------------------------------------
class BaseFile:
    """`records.parquet`: the base table (imports, materialize, registry freezes)."""

    label = "records.parquet"
    anchored = True

    def __init__(self, fold: Fold) -> None:
        self._fold = fold
        self.base: BaseProjection | None = None
        #: Set while `base` holds only some columns of the stored file (same watermark): they are all read
        #: before an event is folded into it or it is encoded.
        self.partial = False
        self._loaded_from: Path | None = None
        self._staged: tuple[Watermark, memoryview] | None = None
        self._read: tuple[Path, Watermark | None] | None = None  # what `stored_mark` read, for `load`

    def watches(self, event: Event) -> bool:
        return isinstance(event, BASE_EVENTS)

    def mark(self) -> Watermark | None:
        return self.base.watermark if self.base is not None else None

    def stored_mark(self, directory: Path) -> Watermark | None:
        mark = read_watermark(directory / RECORDS_FILE)
        self._read = (directory, mark)
        return mark

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        read, self._read = self._read, None  # the anchor just checked (under the same lock), else read now
        mark = read[1] if read is not None and read[0] == directory else read_watermark(directory / RECORDS_FILE)
        self.base = self._fold.source.base(directory, mark, columns) if mark is not None else None
        self.partial = columns is not None and self.base is not None
        self._loaded_from = directory

    def full(self) -> BaseProjection | None:
        """The base with every column."""
        if self.base is not None and self.partial:
            assert self._loaded_from is not None
            self.base = self._fold.source.full_base(self._loaded_from, self.base)
        self.partial = False
        return self.base

    def column(self, name: str) -> pa.ChunkedArray | None:
        """One column of the base (read alone when the loaded base lacks it)."""
        base = self.base
        if base is None:
            return None
        if name in base.table.column_names:
            return base.table.column(name)
        assert self._loaded_from is not None
        return self._fold.source.full_base(self._loaded_from, base, [name]).table.column(name)

    def fold(self, step: Step) -> None:
        base = self.full()
        materialized = None
        event = step.event
        if isinstance(event, Materialized):
            derived = self._fold.get(DerivedFiles)
            if derived.layout_mark.seq >= step.mark.seq:  # the stored layout is past this base: start over
                raise Restart
            if base is None:
                raise IntegrityError(f"event seq {step.mark.seq} materializes before the dataset was initialized")
            merged = {ns: derived.merged(ns) for ns in event.namespaces if ns in derived.layout.live}
            tombs = derived.merged(TOMBSTONE_NS) if TOMBSTONE_NS in derived.layout.live else None
            materialized = materialize_table(base.table, merged, tombs, drop_deleted=event.drop_deleted)
            if base.rows - materialized.num_rows != event.rows_dropped:
                raise IntegrityError(f"event seq {step.mark.seq}: materialize drops a different number of rows")
        self.base = apply_event(
            base, event, step.payload, registry_hash=step.registry_hash, mark=step.mark, materialized=materialized
        )
        self._staged = None

    def stage(self) -> None:
        """Encode the base with the pending hash now, when this write changed it: the line's fingerprint
        needs the file's size (a base this write did not change is left as loaded, maybe partial)."""
        base = self.base
        if base is None or base.watermark.hash != PENDING:
            return
        if self._staged is not None and self._staged[0] == base.watermark:
            return  # encoded already (a later event of the same write did not change it)
        full = self.full()
        assert full is not None
        self._staged = (full.watermark, encode_base(full, pending_hash=True))

    def staged_size(self) -> int | None:
        return len(self._staged[1]) if self._staged is not None else None

    def seal(self, digests: dict[int, str]) -> None:
        if self.base is not None:
            self.base = replace(self.base, watermark=_sealed(self.base.watermark, digests))

    def _encode(self) -> Encoded:
        base = self.full()
        assert base is not None
        staged = self._staged
        if staged is not None and staged[0].seq == base.watermark.seq:
            return patch_watermark_hash(staged[1], base.watermark.hash)
        return encode_base(base)

    def outputs(self) -> dict[str, Output]:
        if self.base is None:
            return {}
        return {RECORDS_FILE: Output(self.base.watermark, self._encode, read_watermark)}

    def stray(self, directory: Path) -> Iterator[str]:
        return iter(())

    def release(self) -> None:
        self._staged = None


# -- _index/id.arrow -------------------------------------------------------------------------------
class IdIndex:
    """`_index/id.arrow`: the base's ids sorted by key, so a lookup reads only the row groups holding them.

    It follows the base (its stamp is the base's watermark); no index is written when the ids cannot be
    keyed (see `idindex.sorted_rows`), and a stored one is then removed.
    """

    label = "_index/"
    anchored = False

    def __init__(self, fold: Fold) -> None:
        self._fold = fold
        self._rows: tuple[Watermark, pa.RecordBatch | None] | None = None

    def watches(self, event: Event) -> bool:
        return False  # it has no state of its own to fold: it is re-derived when the base's watermark moves

    def mark(self) -> Watermark | None:
        return self._fold.get(BaseFile).mark()

    def stored_mark(self, directory: Path) -> Watermark | None:
        return idindex.stamp_of(directory)

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        self._rows = None

    def fold(self, step: Step) -> None:
        self._rows = None

    def rows(self) -> pa.RecordBatch | None:
        """The index rows of the base (computed once per base watermark)."""
        holder = self._fold.get(BaseFile)
        base = holder.base
        if base is None:
            return None
        if self._rows is None or self._rows[0].seq != base.watermark.seq:
            ids = holder.column("id")
            self._rows = (base.watermark, idindex.sorted_rows(ids) if ids is not None else None)
        return self._rows[1]

    def stage(self) -> None:
        mark = self.mark()
        if mark is not None and mark.hash == PENDING:  # the base changes in this write: sort its keys now
            self.rows()

    def seal(self, digests: dict[int, str]) -> None:
        return None

    def outputs(self) -> dict[str, Output]:
        mark = self.mark()
        if mark is None or not idindex.usable():
            return {}

        def encode() -> bytes | None:
            rows, current = self.rows(), self.mark()
            return idindex.encode(rows, current) if rows is not None and current is not None else None

        return {INDEX_FILE: Output(mark, encode, idindex.stamp_at)}

    def stray(self, directory: Path) -> Iterator[str]:
        return iter(())

    def release(self) -> None:
        self._rows = None


# -- _derived/ -------------------------------------------------------------------------------------
class DerivedFiles:
    """`_derived/`: one overlay part per overlay-writing event, compacted and archived parts, and
    `layout.json` naming them all (ADR 0008)."""

    label = "_derived/"
    anchored = True

    def __init__(self, fold: Fold) -> None:
        self._fold = fold
        self.layout: DerivedLayout = EMPTY_LAYOUT
        self.layout_mark = Watermark()
        #: Part tables in hand, by `table_key`.
        self.tables: dict[str, pa.Table] = {}
        self._merged: dict[str, tuple[tuple[int, ...], pa.Table]] = {}
        self._read: tuple[Path, tuple[DerivedLayout, Watermark] | None] | None = None  # for `load`

    def watches(self, event: Event) -> bool:
        return isinstance(event, LAYOUT_EVENTS)

    def mark(self) -> Watermark | None:
        return self.layout_mark if self.layout_mark.seq else None

    def stored_mark(self, directory: Path) -> Watermark | None:
        doc = read_layout(directory / LAYOUT_FILE)
        self._read = (directory, doc)
        return doc[1] if doc is not None else None

    def load(self, directory: Path, *, columns: list[str] | None = None) -> None:
        read, self._read = self._read, None  # the anchor just checked (under the same lock), else read now
        doc = read[1] if read is not None and read[0] == directory else read_layout(directory / LAYOUT_FILE)
        self.layout, self.layout_mark = doc if doc is not None else (EMPTY_LAYOUT, Watermark())
        self.tables.clear()
        self._merged.clear()

    def table(self, info: PartInfo) -> pa.Table:
        """A part's rows (from the tables in hand, else through the fold's `PartSource`)."""
        key = table_key(info)
        found = self.tables.get(key)
        if found is None:
            found = self._fold.source.part(info, self.table)
            self.tables[key] = found
        return found

    def merged(self, namespace: str) -> pa.Table:
        """The last-writer-wins merge of a namespace's live parts (kept until its parts change)."""
        from .overlays import Part, merge_parts

        parts = self.layout.live.get(namespace, ())
        seqs = tuple(p.mark.seq for p in parts)
        cached = self._merged.get(namespace)
        if cached is not None and cached[0] == seqs:
            return cached[1]
        merged = merge_parts([Part(p.mark.seq, self.table(p)) for p in parts])
        self._merged[namespace] = (seqs, merged)
        return merged

    def fold(self, step: Step) -> None:
        event = step.event
        table = part_table(event, step.payload)
        if isinstance(event, OverlayCompacted):
            table = sorted_part(self.merged(event.namespace))
        layout = apply_layout(
            self.layout,
            event,
            registry_hash=step.registry_hash,
            mark=step.mark,
            has_rows=table is not None and table.num_rows > 0,
        )
        if table is not None:
            for info in layout.files().values():
                if info.mark == step.mark:
                    self.tables[table_key(info)] = table
        self.layout, self.layout_mark = layout, step.mark

    def release(self, *, keep_pending: bool = False) -> None:
        """Drop the tables in hand (they are read again when needed); with `keep_pending`, keep those of
        the parts this write adds (their files are published after the append)."""
        self._merged.clear()
        if not keep_pending:
            self.tables.clear()
            return
        pending = {table_key(info) for info in self.layout.files().values() if info.mark.hash == PENDING}
        for key in [k for k in self.tables if k not in pending]:
            del self.tables[key]

    def stage(self) -> None:
        return None

    def seal(self, digests: dict[int, str]) -> None:
        def fix(info: PartInfo) -> PartInfo:
            if info.mark.hash != PENDING and not info.sources:  # most parts: sealed by an earlier write
                return info
            return replace(info, mark=_sealed(info.mark, digests), sources=tuple(fix(s) for s in info.sources))

        layout = self.layout
        self.layout = replace(
            layout,
            live={ns: tuple(fix(p) for p in parts) for ns, parts in layout.live.items()},
            archived=tuple(fix(p) for p in layout.archived),
        )
        self.layout_mark = _sealed(self.layout_mark, digests)

    def outputs(self) -> dict[str, Output]:
        if not self.layout_mark.seq:
            return {}
        out: dict[str, Output] = {}
        for file, info in self.layout.files().items():
            moved = replace(info, archived=False).file if info.archived else None
            out[file] = Output(info.mark, _part_encoder(self, info), read_watermark, moved_from=moved)
        layout, mark = self.layout, self.layout_mark
        out[LAYOUT_FILE] = Output(mark, lambda: encode_layout(layout, mark), self.stored_mark_of, last=True)
        return out

    def stored_mark_of(self, path: Path) -> Watermark | None:
        doc = read_layout(path)
        return doc[1] if doc is not None else None

    def stray(self, directory: Path) -> Iterator[str]:
        derived = directory / LAYOUT_FILE
        if not derived.parent.is_dir():
            return
        expected = self.outputs()
        for path in sorted(derived.parent.rglob("*.parquet")):
            rel = str(path.relative_to(directory))
            if rel not in expected:
                yield rel


def _part_encoder(derived: DerivedFiles, info: PartInfo) -> Callable[[], Encoded]:
    return lambda: encode_part(info, derived.table(info))


def table_key(info: PartInfo) -> str:
    """The key of a part's table (archiving moves the file, not the content)."""
    return f"{info.namespace}@{info.mark.seq}"


#: Every projection, in fold order: the base folds an event before the overlays do (a materialize reads
#: the overlay parts as they were before it), and the id index follows the base.
PROJECTIONS: tuple[Callable[[Fold], Projection], ...] = (BaseFile, IdIndex, DerivedFiles)


@dataclass
class Fold:
    """Every projection's state as of the events folded so far: the one fold of the log."""

    source: PartSource
    members: list[Projection] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.members:
            self.members = [make(self) for make in PROJECTIONS]

    def get(self, kind: type[P]) -> P:
        for member in self.members:
            if isinstance(member, kind):
                return member
        raise KeyError(kind.__name__)

    def due(self, step: Step) -> list[Projection]:
        """The projections that take this event (they watch its kind and have not folded it yet)."""
        due = []
        for member in self.members:
            mark = member.mark()
            if member.watches(step.event) and (mark is None or step.mark.seq > mark.seq):
                due.append(member)
        return due

    def apply(self, step: Step) -> list[Projection]:
        """Fold one event into every projection due for it; returns them (raises `Restart`)."""
        due = self.due(step)
        for member in due:
            member.fold(step)
        return due

    def stage(self) -> None:
        """Let every projection prepare its outputs ahead of the append, side by side (Arrow work
        releases the GIL: the id index sorts while the base encodes). Threads only when more than one
        projection took this write's events (a small write stages inline)."""
        busy = [m for m in self.members if (mark := m.mark()) is not None and mark.hash == PENDING]
        if len(busy) < 2:
            for member in self.members:
                member.stage()
            return
        with ThreadPoolExecutor(len(self.members)) as pool:
            for done in [pool.submit(member.stage) for member in self.members]:
                done.result()

    def seal(self, digests: dict[int, str]) -> None:
        for member in self.members:
            member.seal(digests)

    def outputs(self) -> dict[str, Output]:
        """Every file the projections encode to, in fold order."""
        out: dict[str, Output] = {}
        for member in self.members:
            out.update(member.outputs())
        return out

    def by_size(self) -> list[Projection]:
        """The projections in reverse fold order (overlay parts before the base): a full publish or verify
        frees each one's tables (`release`) before the larger base is encoded."""
        return list(reversed(self.members))

    def stray(self, directory: Path) -> list[str]:
        return [rel for member in self.members for rel in member.stray(directory)]

    @property
    def base(self) -> BaseProjection | None:
        return self.get(BaseFile).base
