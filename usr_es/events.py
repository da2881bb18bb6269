"""What happened: event Structs (past tense, stable tags) and the log line envelope.

One `.events.log` line is a `LogRecord`: the fields Notify and USR users read today
(`event_version` 1, `timestamp_utc`, `action`, `dataset`, `args`, `metrics`, `artifacts`,
`maintenance`, `fingerprint`, `registry_hash`, `actor`, `version`) followed by our additive
fields (`seq`, `event_id`, `command_id`, `command`, `event`, `payload`, `prev`, `hash`).
Imports only `commands`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .commands import Command, RebasedCommand

EVENT_VERSION = 1
GENESIS_HASH = "0" * 32


class DatasetInitialized(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="dataset_initialized"):
    """An empty dataset was created; `created_at` becomes `usr:dataset_created_at`."""

    name: str
    created_at: str
    source: str = ""
    notes: str = ""


class DatasetAdopted(DatasetInitialized, frozen=True, kw_only=True, tag="dataset_adopted"):
    """A dataset folder written by the original USR became a usr_es dataset (ADR 0015). It starts the chain
    like an init; the original's log lines stay before it, untouched (`legacy_lines` lines, `legacy_bytes`
    bytes, xxh3-128 `legacy_digest`; 0/0/"" when the folder had no log). The records and overlays follow
    as `RecordsAdopted` and `OverlayAdopted` events of the same command."""

    legacy_lines: int
    legacy_bytes: int
    legacy_digest: str
    #: How many events (this one first) the adoption appends: fewer in the log is an interrupted adoption,
    #: which no command but `usr adopt` (finishing it) reads past.
    events: int = 1
    #: What the folder held, as `usr adopt` reported it (for the record; nothing is projected from it).
    found: dict[str, Any] = {}


class SequencesImported(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="sequences_imported"):
    """Rows (in the payload: id, bio_type, sequence, alphabet) were appended to the base table.

    Every appended row gets `source` and `created_at` from here.
    """

    rows: int
    skipped: int
    source: str
    created_at: str


class RecordsAdopted(SequencesImported, frozen=True, kw_only=True, tag="records_adopted"):
    """The original's base rows, exactly as stored: the payload holds every column of its records.parquet
    (`source`, `created_at` and `length` per row, materialized `<ns>__<field>` columns), ids not recomputed.
    `id_mismatches` rows carry an id other than sha1(bio_type|sequence)."""

    id_mismatches: int = 0


class RecordsMerged(RecordsAdopted, frozen=True, kw_only=True, tag="records_merged"):
    """Another dataset's records joined this one (docs/adr/0019): the payload holds `rows` rows with every
    column of this dataset's base after the merge, values as the source showed them at `src_seq`
    (chain hash `src_hash`). `columns_added` new columns grew the base (read null for earlier rows)."""

    src: str
    src_seq: int
    src_hash: str
    columns_added: tuple[str, ...] = ()


class OverlayWritten(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="overlay_written"):
    """Namespaced values were written for `rows` records; the payload holds `id` + `columns`
    (name -> registry type), already matched to ids and cast. It projects to one overlay part."""

    namespace: str
    key: str
    columns: dict[str, str]
    rows: int
    rows_missing: int
    created_at: str
    contract_hash: str
    note: str = ""


class OverlayAdopted(OverlayWritten, frozen=True, kw_only=True, tag="overlay_adopted"):
    """One namespace of the original (its compact file or its parts, merged by the original's rule; `usr`
    tombstones and `usr_state` included), keyed by id: a part like any attach's. `files` are the original
    files it was read from, relative to the dataset."""

    files: tuple[str, ...] = ()


class _IdsEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Ids inline (`ids`) or, when there are more than INLINE_IDS, in the payload (`ids` is None)."""

    ids: tuple[str, ...] | None
    rows: int
    rows_missing: int = 0
    created_at: str


class RecordsTombstoned(_IdsEvent, frozen=True, kw_only=True, tag="records_tombstoned"):
    reason: str = ""


class RecordsRestored(_IdsEvent, frozen=True, kw_only=True, tag="records_restored"):
    pass


class StateSet(_IdsEvent, frozen=True, kw_only=True, tag="state_set"):
    """Only the listed `fields` were written (unlisted ones keep their values)."""

    fields: tuple[str, ...]
    masked: bool | None = None
    qc_status: str | None = None
    split: str | None = None
    supersedes: str | None = None
    lineage: tuple[str, ...] | None = None


class StateCleared(_IdsEvent, frozen=True, kw_only=True, tag="state_cleared"):
    pass


class OverlayCompacted(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="overlay_compacted"):
    namespace: str
    parts: int
    rows: int
    created_at: str


class OverlayRemoved(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="overlay_removed"):
    """A namespace's `parts` overlay parts left the live view (docs/adr/0018). Its values stay in every
    earlier state; columns a materialize wrote into the base stay there."""

    namespace: str
    parts: int


class OverlayArchived(OverlayRemoved, frozen=True, kw_only=True, tag="overlay_archived"):
    """As `OverlayRemoved`, the parts moved to `_derived/_archived/<namespace>/`."""


class SnapshotTaken(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="snapshot_taken"):
    """A checkpoint of the projected state right after this event, under `_snapshots/<name>/`."""

    name: str
    created_at: str


class Materialized(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="materialized"):
    namespaces: tuple[str, ...]
    columns: tuple[str, ...]
    drop_overlays: bool
    archive_overlays: bool
    drop_deleted: bool
    rows_dropped: int
    #: The ids `drop_deleted` removed from the base, inline when at most INLINE_IDS (else in the payload).
    #: Their overlay rows in every live namespace are purged (ADR 0008): a later re-import starts clean.
    ids: tuple[str, ...] | None = None


class RecordsDeduplicated(Materialized, frozen=True, kw_only=True, tag="records_deduplicated"):
    """Base rows whose `key` another row held were dropped, the first (`keep-first`) or last row of each of
    `groups` groups kept (docs/adr/0018). A materialize of no namespace that drops the rows it names (`ids`,
    or the payload), their overlay rows purged as for `--drop-deleted`; every earlier state keeps them."""

    key: str
    keep: str
    groups: int


class RecordsReplaced(Materialized, frozen=True, kw_only=True, tag="records_replaced"):
    """A merge with `--if-duplicate prefer-src` dropped the rows the source's rows replace (their overlay
    values purged, as for any dropped row), right before the `RecordsMerged` that brings the source's rows."""

    src: str


class RegistryFrozen(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="registry_frozen"):
    registry_hash: str


class CommandsRebased(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="commands_rebased"):
    """This copy's commands after `fork_seq` were decided again after another copy's events up to
    `onto_seq` (`usr pull --rebase`): each old line, and where its command landed or why it was left out.
    The replaced lines are kept in `.events.log.rebased`. No projection changes."""

    fork_seq: int
    onto_seq: int
    onto_hash: str
    commands: tuple[RebasedCommand, ...]
    created_at: str


Event = (
    DatasetInitialized
    | DatasetAdopted
    | SequencesImported
    | RecordsAdopted
    | RecordsMerged
    | OverlayWritten
    | OverlayAdopted
    | RecordsTombstoned
    | RecordsRestored
    | StateSet
    | StateCleared
    | OverlayCompacted
    | OverlayRemoved
    | OverlayArchived
    | SnapshotTaken
    | Materialized
    | RecordsDeduplicated
    | RecordsReplaced
    | RegistryFrozen
    | CommandsRebased
)

#: `action` names, reusing the original USR names where the operation is the same.
ACTIONS: dict[type, str] = {
    DatasetInitialized: "init",
    DatasetAdopted: "adopt",
    SequencesImported: "import_rows",
    RecordsAdopted: "adopt_records",
    RecordsMerged: "merge_datasets",
    OverlayWritten: "attach",
    OverlayAdopted: "adopt_overlay",
    RecordsTombstoned: "tombstone",
    RecordsRestored: "restore",
    StateSet: "state_set",
    StateCleared: "state_clear",
    OverlayCompacted: "compact_overlay",
    OverlayRemoved: "remove_overlay",
    OverlayArchived: "archive_overlay",
    SnapshotTaken: "snapshot",
    Materialized: "materialize",
    RecordsDeduplicated: "dedupe",
    RecordsReplaced: "merge_replace",
    RegistryFrozen: "registry_freeze",
    CommandsRebased: "rebase",
}

#: Events that change `records.parquet`; any other event leaves the base file untouched.
BASE_EVENTS: tuple[type, ...] = (DatasetInitialized, SequencesImported, Materialized, RegistryFrozen)
#: Events that change `_derived/` (overlay parts).
DERIVED_EVENTS: tuple[type, ...] = (
    OverlayWritten,
    RecordsTombstoned,
    RecordsRestored,
    StateSet,
    StateCleared,
    OverlayCompacted,
    OverlayRemoved,
    Materialized,
)
#: Events the overlay layout projection (`_derived/layout.json`) records (init starts it).
LAYOUT_EVENTS: tuple[type, ...] = (DatasetInitialized, *DERIVED_EVENTS)


class DatasetRef(msgspec.Struct, frozen=True):
    name: str
    root: str | None


class Fingerprint(msgspec.Struct, frozen=True, omit_defaults=True):
    """Shape of `records.parquet` after the event: rows, columns and file size in bytes; with
    `USR_EVENT_SHA256=1`, the sha256 of its bytes with the watermark hash of its last footer read as 32
    zeros (the line's own hash, for an event that rewrote the base, is not known before the line is)."""

    rows: int
    cols: int
    size_bytes: int
    sha256: str | None = None


class Actor(msgspec.Struct, frozen=True):
    tool: str
    run_id: str
    host: str
    pid: int


class PayloadRef(msgspec.Struct, frozen=True):
    """A content-addressed payload artifact: `file` under the dataset, xxh3-128 `digest`."""

    file: str
    digest: str
    rows: int
    size_bytes: int


class LogRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One line of `.events.log`. Field order is the on-disk key order; `hash` stays last."""

    event_version: int = EVENT_VERSION
    timestamp_utc: str
    action: str
    dataset: DatasetRef
    args: dict[str, Any]
    metrics: dict[str, Any]
    artifacts: dict[str, Any]
    maintenance: dict[str, Any]
    fingerprint: Fingerprint
    registry_hash: str | None
    actor: Actor
    version: str
    seq: int
    event_id: str
    command_id: str
    command: Command
    event: Event
    payload: PayloadRef | None
    prev: str
    hash: str = ""


record_encoder = msgspec.json.Encoder()
record_decoder = msgspec.json.Decoder(LogRecord)
