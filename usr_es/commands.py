"""Every mutation a user can ask for, as a frozen msgspec Struct with a stable snake_case tag.

Commands are intent: what was asked, validated by `decide` against the dataset state. Tags
are a stored contract (they appear in `.events.log`); never rename one. Imports nothing
internal.
"""

from __future__ import annotations

from typing import Literal

import msgspec

InputFormat = Literal["csv", "jsonl", "parquet", "fasta", "rows"]
OnConflict = Literal["error", "skip"]


class InitDataset(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    tag="init_dataset",
    forbid_unknown_fields=True,
):
    """Create an empty dataset."""

    source: str = ""
    notes: str = ""


class ImportSequences(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    tag="import_sequences",
    forbid_unknown_fields=True,
):
    """Append sequences read from a file (or handed over by the API, `fmt="rows"`).

    The rows themselves are not part of the command: they travel as the event's payload.
    """

    fmt: InputFormat
    path: str | None = None
    bio_type: str = "dna"
    alphabet: str = "dna_4"
    source: str | None = None
    on_conflict: OnConflict = "error"


KeyKind = Literal["id", "sequence", "sequence_norm", "sequence_ci"]
QcStatus = Literal["pass", "fail", "warn", "unknown"]
Split = Literal["train", "val", "test", "holdout"]


class AttachColumns(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="attach_columns", forbid_unknown_fields=True
):
    """Write namespaced columns for existing records, matched by `key` (rows travel as the payload).

    `path` is the input file (None when an Arrow table came through `Dataset.write_overlay`).
    """

    namespace: str
    key: KeyKind = "id"
    key_col: str | None = None
    columns: tuple[str, ...] | None = None
    allow_overwrite: bool = False
    allow_missing: bool = False
    parse_json: bool = True
    note: str = ""
    path: str | None = None


class _IdsCommand(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    """Base of commands addressed to record ids. Up to `INLINE_IDS` ids are kept inline; longer
    lists travel as the payload and only their count is kept here."""

    ids: tuple[str, ...] | None = None
    id_count: int = 0
    allow_missing: bool = False


class TombstoneRecords(_IdsCommand, frozen=True, kw_only=True, tag="tombstone_records"):
    """Logically delete records (the reserved `usr` namespace)."""

    reason: str = ""


class RestoreRecords(_IdsCommand, frozen=True, kw_only=True, tag="restore_records"):
    """Undo tombstones."""


class SetState(_IdsCommand, frozen=True, kw_only=True, tag="set_state"):
    """Set the given `usr_state` fields (None = leave unchanged)."""

    masked: bool | None = None
    qc_status: QcStatus | None = None
    split: Split | None = None
    supersedes: str | None = None
    lineage: tuple[str, ...] | None = None


class ClearState(_IdsCommand, frozen=True, kw_only=True, tag="clear_state"):
    """Reset every `usr_state` field of the records to unset."""


class CompactOverlay(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="compact_overlay", forbid_unknown_fields=True
):
    """Merge a namespace's overlay parts into one part with exactly the read semantics."""

    namespace: str


class TakeSnapshot(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="take_snapshot", forbid_unknown_fields=True
):
    """Write a projection checkpoint of the whole dataset state at this point of the log."""


class Materialize(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="materialize", forbid_unknown_fields=True
):
    """Fold overlay namespaces into the base table."""

    namespaces: tuple[str, ...] | None = None
    drop_overlays: bool = False
    archive_overlays: bool = False
    drop_deleted: bool = False


class RemoveOverlay(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="remove_overlay", forbid_unknown_fields=True
):
    """Take a namespace's overlay out of the live view: `delete` it, or `archive` it under `_derived/_archived/`;
    `error` deletes it but fails when there is none (delete and archive are then no-ops)."""

    namespace: str
    mode: Literal["error", "delete", "archive"] = "error"


DedupeKey = Literal["id", "sequence", "sequence_norm", "sequence_ci"]
DedupeKeep = Literal["keep-first", "keep-last"]


class Deduplicate(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="deduplicate", forbid_unknown_fields=True
):
    """Drop base rows whose key another row holds, keeping the first (or last) in file order (docs/adr/0018)."""

    key: DedupeKey = "sequence"
    keep: DedupeKeep = "keep-first"


MergeColumns = Literal["require-same", "union"]
DuplicatePolicy = Literal["error", "skip", "prefer-src", "prefer-dest"]
CoerceOverlap = Literal["none", "to-dest"]


class MergeDatasets(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="merge_datasets", forbid_unknown_fields=True
):
    """Add another dataset's live records (`src`, read at one version: the event names its head seq and
    hash) to this one, by the original's rules (docs/adr/0019). The rows travel as the payload."""

    src: str
    columns: MergeColumns
    if_duplicate: DuplicatePolicy = "error"
    coerce_overlap: CoerceOverlap = "none"
    carry_namespaces: tuple[str, ...] = ()
    avoid_casefold_dups: bool = True
    note: str = ""


class FreezeRegistry(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="freeze_registry", forbid_unknown_fields=True
):
    """Freeze the current registry into the dataset and record it."""


class AdoptDataset(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="adopt_dataset", forbid_unknown_fields=True
):
    """Make a dataset folder the original USR wrote a usr_es dataset, every value kept (docs/adr/0015).
    The original files go to `_legacy/`; with `keep_originals` those usr_es does not rewrite stay put."""

    keep_originals: bool = False


class RebasedCommand(msgspec.Struct, frozen=True, kw_only=True):
    """One command a rebase decided again (docs/adr/0021): the line it had (`old_seq`, `old_hash`: its
    last line), and where it landed (`new_seq`, `new_hash`) or why it was left out (`reason`)."""

    old_seq: int
    old_hash: str
    command_id: str
    action: str
    new_seq: int | None = None
    new_hash: str | None = None
    reason: str = ""


class RecordRebase(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="record_rebase", forbid_unknown_fields=True
):
    """Record that this copy's commands after `fork_seq` were decided again after another copy's events up
    to `onto_seq` / `onto_hash` (`usr pull --rebase`, docs/adr/0021)."""

    fork_seq: int
    onto_seq: int
    onto_hash: str
    commands: tuple[RebasedCommand, ...] = ()


INLINE_IDS = 256

Command = (
    InitDataset
    | ImportSequences
    | AttachColumns
    | TombstoneRecords
    | RestoreRecords
    | SetState
    | ClearState
    | CompactOverlay
    | TakeSnapshot
    | Materialize
    | Deduplicate
    | MergeDatasets
    | RemoveOverlay
    | FreezeRegistry
    | AdoptDataset
    | RecordRebase
)

command_decoder = msgspec.json.Decoder(Command)
