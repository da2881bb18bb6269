"""Pure projectors: events (+ payload tables) -> the `records.parquet` table and the overlay layout.

Nothing here reads the clock, randomness, the environment, the live registry or any file:
the same events and payloads always give the same table and the same Parquet bytes (for one
pyarrow version; see docs/adr/0004). Row order is log order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeAlias

import pyarrow as pa

from .events import (
    GENESIS_HASH,
    DatasetInitialized,
    Event,
    Materialized,
    OverlayArchived,
    OverlayCompacted,
    OverlayRemoved,
    OverlayWritten,
    RecordsAdopted,
    RecordsRestored,
    RecordsTombstoned,
    RegistryFrozen,
    SequencesImported,
    StateCleared,
    StateSet,
)
from .names import ARCHIVE_DIR, DERIVED_DIR, PURGED, STATE_NS, TOMBSTONE_NS

PROJECTOR_VERSION = "4"  # 2: parts sorted by id, 16k-row groups; 3: folded namespaces, 32k-row base groups, id index;
# 4: imports append row groups to records.parquet (docs/adr/0013)

BASE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("bio_type", pa.string()),
        pa.field("sequence", pa.string()),
        pa.field("alphabet", pa.string()),
        pa.field("length", pa.int32()),
        pa.field("source", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
#: The columns a payload of imported rows carries; the rest come from the event.
PAYLOAD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("bio_type", pa.string()),
        pa.field("sequence", pa.string()),
        pa.field("alphabet", pa.string()),
    ]
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_micros(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 UTC timestamp string."""
    moment = datetime.fromisoformat(text)
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Watermark:
    """The log position a projection reflects: the seq, byte offset and hash of that line."""

    seq: int = 0
    offset: int = 0
    hash: str = GENESIS_HASH


@dataclass(frozen=True)
class BaseProjection:
    """The state of `records.parquet`: the table plus the metadata stamped into the file."""

    table: pa.Table
    created_at: str
    registry_hash: str | None
    watermark: Watermark

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


def initial_projection(event: DatasetInitialized, registry_hash: str | None, mark: Watermark) -> BaseProjection:
    return BaseProjection(BASE_SCHEMA.empty_table(), event.created_at, registry_hash, mark)


class RowBatches(Protocol):
    """Payload rows read a batch at a time (`storage.StoredRows`: an import's payload may outgrow memory)."""

    @property
    def num_rows(self) -> int: ...

    @property
    def schema(self) -> pa.Schema: ...

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]: ...


#: The rows of an event's payload as the fold and `decide` hand them on: a table, or batches read on demand.
Payload: TypeAlias = pa.Table | RowBatches


def payload_batches(payload: Payload, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of `payload` (only `columns`, when given), a batch at a time."""
    if isinstance(payload, pa.Table):
        yield payload if columns is None else payload.select(columns)
    else:
        yield from payload.batches(columns)


def payload_table(payload: Payload) -> pa.Table:
    """The rows of `payload` in memory."""
    return payload if isinstance(payload, pa.Table) else pa.concat_tables(payload.batches())


def imported_rows(payload: pa.Table, event: SequencesImported) -> pa.Table:
    """Base rows for a `SequencesImported` payload: length from the sequence, source/created_at. An
    adoption's payload holds the original's rows with every column as stored (docs/adr/0015)."""
    import pyarrow.compute as pc  # not needed by readers; keeps their start-up short

    if isinstance(event, RecordsAdopted):
        return payload.replace_schema_metadata(None)
    n = payload.num_rows
    sequence = payload.column("sequence")
    return pa.table(
        [
            payload.column("id"),
            payload.column("bio_type"),
            sequence,
            payload.column("alphabet"),
            pc.cast(pc.utf8_length(sequence), pa.int32()),
            pa.repeat(pa.scalar(event.source, pa.string()), n),
            pa.repeat(pa.scalar(timestamp_micros(event.created_at), pa.timestamp("us", tz="UTC")), n),
        ],
        schema=BASE_SCHEMA,
    )


def apply_event(
    base: BaseProjection | None,
    event: Event,
    payload: pa.Table | None,
    *,
    registry_hash: str | None,
    mark: Watermark,
    materialized: pa.Table | None = None,
) -> BaseProjection | None:
    """Fold one event into the base projection. Events that do not touch the base return it as is.

    For `Materialized`, the caller passes the folded table (`materialize_table`), which needs the
    overlay parts as they were before the event.
    """
    match event:
        case Materialized() | RegistryFrozen():
            if base is None:
                raise ValueError("materialize/registry freeze before the dataset was initialized")
            table = materialized if materialized is not None else base.table
            return replace(base, table=table, registry_hash=registry_hash, watermark=mark)
        case DatasetInitialized():
            return initial_projection(event, registry_hash, mark)
        case SequencesImported():
            if base is None:
                raise ValueError("sequences imported before the dataset was initialized")
            table = base.table
            if payload is not None and payload.num_rows:
                # After a materialize the base has more columns than imported rows: those read null.
                table = pa.concat_tables([table, imported_rows(payload, event)], promote_options="default")
            return replace(base, table=table, registry_hash=registry_hash, watermark=mark)
    return base


# -- overlays (_derived/) -------------------------------------------------------------------------


@dataclass(frozen=True)
class PartInfo:
    """One overlay part file: which event made it (its watermark) and the metadata it carries.

    `sources` is empty for a part written by its own event; for a compacted part it lists the
    parts merged into it (their content is needed to regenerate it).
    """

    namespace: str
    mark: Watermark
    created_at: str
    registry_hash: str | None
    contract_hash: str | None
    sources: tuple[PartInfo, ...] = ()
    archived: bool = False
    #: A purge part (`materialize --drop-deleted`): its ids' rows in the earlier parts are forgotten.
    purge: bool = False

    @property
    def file(self) -> str:
        folder = f"{DERIVED_DIR}/{ARCHIVE_DIR}/{self.namespace}" if self.archived else f"{DERIVED_DIR}/{self.namespace}"
        return f"{folder}/part-{self.mark.seq:010d}.parquet"


@dataclass(frozen=True)
class DerivedLayout:
    """Which overlay parts exist after a prefix of the log (live per namespace, and archived)."""

    live: dict[str, tuple[PartInfo, ...]]
    archived: tuple[PartInfo, ...] = ()
    #: Namespace -> seq of the last `materialize` that folded it into records.parquet while keeping its
    #: parts live. Its live parts with seq <= that hold no value the base lacks (the base took each
    #: cell from them by the view's own rule), so a read of a base at or after that seq may skip them.
    folded: dict[str, int] = field(default_factory=dict)

    def unfolded(self, ns: str, base_seq: int) -> tuple[PartInfo, ...]:
        """The live parts of `ns` a read of a base stamped `base_seq` must merge (see `folded`)."""
        parts = self.live.get(ns, ())
        at = self.folded.get(ns)
        if at is None or base_seq < at:
            return parts
        return tuple(p for p in parts if p.mark.seq > at)

    def files(self) -> dict[str, PartInfo]:
        out = {p.file: p for parts in self.live.values() for p in parts}
        out.update({p.file: p for p in self.archived})
        return out


EMPTY_LAYOUT = DerivedLayout(live={})


def ids_of(event: Event, payload: pa.Table | None) -> pa.Array:
    ids = getattr(event, "ids", None)
    if ids is not None:
        return pa.array(list(ids), pa.string())
    if payload is None:
        return pa.array([], pa.string())
    return payload.column("id").combine_chunks()


def sorted_part(table: pa.Table) -> pa.Table:
    """A part's rows in `id` order: every part file is sorted by id, so its row-group statistics let a
    lookup by id read only the row group that can hold it (the merge rule does not depend on row order)."""
    import pyarrow.compute as pc

    if table.num_rows < 2:
        return table
    order = pc.sort_indices(table.column("id"))
    return table.take(order)


def part_table(event: Event, payload: pa.Table | None) -> pa.Table | None:
    """The rows an overlay-writing event contributes as its own part (None: it writes no part), in the
    event's order: `decide` writes ids and payload rows sorted by id, so no copy is made here."""
    from .overlays import STATE_SCHEMA, TOMBSTONE_SCHEMA

    match event:
        case OverlayWritten():
            return payload
        case RecordsTombstoned() | RecordsRestored():
            ids = ids_of(event, payload)
            n = len(ids)
            deleted = isinstance(event, RecordsTombstoned)
            when = timestamp_micros(event.created_at) if deleted else None
            reason = event.reason or None if isinstance(event, RecordsTombstoned) else None
            return pa.table(
                [
                    ids,
                    pa.repeat(pa.scalar(deleted, pa.bool_()), n),
                    pa.repeat(pa.scalar(when, pa.timestamp("us", tz="UTC")), n),
                    pa.repeat(pa.scalar(reason, pa.string()), n),
                ],
                schema=TOMBSTONE_SCHEMA,
            )
        case Materialized():
            if not event.rows_dropped:
                return None
            ids = ids_of(event, payload)
            return pa.table({"id": ids, PURGED: pa.repeat(pa.scalar(True, pa.bool_()), len(ids))})
        case StateSet() | StateCleared():
            ids = ids_of(event, payload)
            n = len(ids)
            names = (
                event.fields
                if isinstance(event, StateSet)
                else tuple(f.name[len("usr_state__") :] for f in STATE_SCHEMA if f.name != "id")
            )
            arrays = [ids]
            fields = [STATE_SCHEMA.field("id")]
            for name in names:
                field = STATE_SCHEMA.field(f"usr_state__{name}")
                value = getattr(event, name) if isinstance(event, StateSet) else None
                if isinstance(value, tuple):
                    value = list(value)
                arrays.append(pa.repeat(pa.scalar(value, field.type), n))
                fields.append(field)
            return pa.table(arrays, schema=pa.schema(fields))
    return None


def part_namespace(event: Event) -> str | None:
    match event:
        case OverlayWritten():
            return event.namespace
        case RecordsTombstoned() | RecordsRestored():
            return TOMBSTONE_NS
        case StateSet() | StateCleared():
            return STATE_NS
    return None


def apply_layout(
    layout: DerivedLayout,
    event: Event,
    *,
    registry_hash: str | None,
    mark: Watermark,
    has_rows: bool,
) -> DerivedLayout:
    """Fold one event into the overlay layout (no tables: which parts exist and where from)."""
    live = dict(layout.live)
    match event:
        case OverlayCompacted():
            merged = live.get(event.namespace, ())
            live[event.namespace] = (
                PartInfo(
                    namespace=event.namespace,
                    mark=mark,
                    created_at=event.created_at,
                    registry_hash=registry_hash,
                    contract_hash=merged[-1].contract_hash if merged else None,
                    sources=merged,
                ),
            )
            return replace(layout, live=live)
        case OverlayRemoved():
            gone = live.pop(event.namespace, ())
            folded = {ns: seq for ns, seq in layout.folded.items() if ns != event.namespace}
            kept = layout.archived
            if isinstance(event, OverlayArchived):
                kept = (*kept, *(replace(p, archived=True) for p in gone))
            return DerivedLayout(live=live, archived=kept, folded=folded)
        case Materialized():
            archived = list(layout.archived)
            folded = dict(layout.folded)
            for chosen in event.namespaces:
                if event.drop_overlays or event.archive_overlays:
                    gone = live.pop(chosen, ())
                    folded.pop(chosen, None)
                    if event.archive_overlays:
                        archived.extend(replace(p, archived=True) for p in gone)
                elif chosen in live:
                    folded[chosen] = mark.seq
            if has_rows:  # rows were dropped: purge their ids from every namespace still live
                for space, parts in live.items():
                    purge = PartInfo(
                        namespace=space,
                        mark=mark,
                        created_at="",
                        registry_hash=registry_hash,
                        contract_hash=parts[-1].contract_hash if parts else None,
                        purge=True,
                    )
                    live[space] = (*parts, purge)
            return DerivedLayout(live=live, archived=tuple(archived), folded=folded)
    ns = part_namespace(event)
    if ns is None or not has_rows:
        return layout
    contract = event.contract_hash if isinstance(event, OverlayWritten) else None
    created = getattr(event, "created_at", "")
    info = PartInfo(namespace=ns, mark=mark, created_at=created, registry_hash=registry_hash, contract_hash=contract)
    live[ns] = (*live.get(ns, ()), info)
    return replace(layout, live=live)


def materialize_table(base: pa.Table, merged: dict[str, pa.Table], dropped: pa.Table | None) -> pa.Table:
    """Fold merged overlay namespaces into the base table (new columns after the base columns), without the
    rows whose ids `dropped` (a table with an `id` column) names."""
    import pyarrow.compute as pc

    from .overlays import live_view

    table = live_view(base, merged, include_deleted=True) if merged else base
    if dropped is not None and dropped.num_rows:
        table = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=dropped.column("id"))))
    return table
