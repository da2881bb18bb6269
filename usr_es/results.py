"""Typed results returned by `Dataset` methods (and rendered by the CLI, `--format json` too)."""

from __future__ import annotations

from typing import Any

import msgspec

from .commands import RebasedCommand


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """The durable outcome of a mutation: the event's position in the log.

    `replayed` is true when `command_id` was already in the log: nothing was appended and
    this is the original receipt. `warnings` reports recoveries done on the way (a torn tail
    quarantined, a lagging projection caught up).
    """

    dataset: str
    action: str
    seq: int
    event_id: str
    command_id: str
    hash: str
    timestamp_utc: str
    metrics: dict[str, Any]
    replayed: bool = False
    noop: bool = False  # nothing to do: no event was appended (`message` says why)
    message: str = ""
    warnings: list[str] = []

    @property
    def rows_written(self) -> int:
        return int(self.metrics.get("rows_written", 0))

    @property
    def added(self) -> int:
        """Rows added by an import (the original `AddSequencesResult.added`)."""
        return self.rows_written


class DatasetInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    path: str
    rows: int
    columns: list[str]
    namespaces: list[str]
    head_seq: int
    #: The seq the projection files reflect once this read caught them up: every event, so `head_seq`.
    projection_seq: int
    #: How many events the projection files lacked before this read folded them in (0: they were current).
    projection_lag: int
    #: The last event that changed records.parquet (events that touch only overlays leave it as it is).
    base_seq: int = 0
    size_bytes: int
    created_at: str | None
    updated: str | None
    registry_hash: str | None
    torn_tail_bytes: int = 0
    deleted: int = 0  # tombstoned rows (not counted in `rows`; see them with --include-deleted)
    checkpoints: list[int] = []  # seqs of the checkpoints under _snapshots/ (replay and rebuild start there)


class DatasetSummary(msgspec.Struct, frozen=True, kw_only=True):
    dataset: str
    rows: int
    cols: int
    size_bytes: int
    updated: str | None
    head_seq: int
    error: str | None = None  # set when the dataset cannot be read (e.g. a corrupt log)
    #: "ok"; "original" (written by the original USR, not adopted: `usr adopt`); "error" (see `error`).
    status: str = "ok"


class ColumnInfo(msgspec.Struct, frozen=True):
    name: str
    type: str
    nullable: bool


class ReplayResult(msgspec.Struct, frozen=True, kw_only=True):
    out: str
    seq: int
    event_id: str
    timestamp_utc: str
    rows: int  # the live view's rows at `seq` (tombstoned ones not counted, as `usr info` counts)
    deleted: int = 0  # tombstoned rows at `seq`
    from_checkpoint: int | None = None  # the checkpoint seq replay started from
    notes: list[str] = []


class ExportResult(msgspec.Struct, frozen=True, kw_only=True):
    """A finished export: the file written (`path`), its format, row count, columns and size."""

    dataset: str
    format: str
    path: str
    rows: int
    columns: list[str]
    size_bytes: int


class RebuildResult(msgspec.Struct, frozen=True, kw_only=True):
    dataset: str
    seq: int
    rows: int
    files: list[str]
    notes: list[str] = []


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """`ok` is false on any mismatch; `problems` names the first bad line or differing file. `log_ok` is
    true when the chain, every payload digest and every fingerprint check out (only projection files
    differ, if anything: `usr verify --fix` / `verify(fix=True)` can then rewrite them). `differing` names the
    files that differ from replay, are missing or are not expected; of them, `behind` names projections
    that only lag the log (equal to the replay of the prefix they name: the next command catches them up,
    and they are not problems), `stale` caches written by another pyarrow or projector version (problems
    of their own kind: `usr verify` exits 8 when they are all there is), and `unexpected` files nothing
    produces (stray parts, crash leftovers). `repaired` lists the files a fix rewrote or removed."""

    dataset: str
    ok: bool
    seq: int
    head_hash: str
    lines: int
    payloads_checked: int
    files_checked: list[str]
    problems: list[str]
    notes: list[str] = []
    log_ok: bool = True
    differing: list[str] = []
    behind: list[str] = []
    stale: list[str] = []
    unexpected: list[str] = []
    repaired: list[str] = []

    @property
    def only_stale(self) -> bool:
        """Every problem is a stale cache (another pyarrow or projector version wrote it)."""
        return bool(self.stale) and len(self.problems) == len(self.stale)

    @property
    def verdict(self) -> str:
        if self.ok:
            extra = f"; {'; '.join(self.notes)}" if self.notes else ""
            fixed = f"; repaired {', '.join(self.repaired)}" if self.repaired else ""
            return (
                f"OK: {self.dataset} verified: {self.lines} event(s), chain head {self.head_hash[:12]}, "
                f"{self.payloads_checked} payload(s), {len(self.files_checked)} projection file(s) equal replay"
                f"{fixed}{extra}"
            )
        return f"FAILED: {self.dataset}: {self.problems[0]}"


class ValidateReport(msgspec.Struct, frozen=True, kw_only=True):
    """`ok` is false when any contract check fails; `passed_with` names the registries that passed."""

    dataset: str
    ok: bool
    registry_mode: str
    registries: list[str]
    passed_with: list[str]
    problems: list[str]


class ColumnProfile(msgspec.Struct, frozen=True, kw_only=True):
    """`describe` of one view column. `null_pct` is 0..100 (2 decimals); `example` is the first non-null
    value as JSON-able data (timestamps as RFC 3339 text); the list_len_* fields are set for list columns."""

    name: str
    type: str  # registry type string
    rows: int
    non_null: int
    null_pct: float
    example: Any = None
    list_len_min: int | None = None
    list_len_max: int | None = None
    list_len_mean: float | None = None


class AdoptReport(msgspec.Struct, frozen=True, kw_only=True):
    """What `usr adopt` found in an original USR dataset folder, and (unless a dry run) the adoption's receipt."""

    dataset: str
    dry_run: bool
    adopted: bool  # the log now holds the adoption (written by this call, or already)
    rows: int
    columns: list[str]
    overlays: dict[str, int]  # namespace -> records with values (tombstones in `usr`, state in `usr_state`)
    tombstoned: int
    snapshots: int
    registry_hashes: list[str]
    legacy_log_lines: int
    id_mismatches: int
    id_mismatch_sample: list[str]
    findings: list[str]
    files: list[str]  # the original files, kept in `kept_in`
    kept_in: str
    receipt: Receipt | None = None
    message: str = ""


class DedupeResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `usr maintenance dedupe` found (and, unless a dry run, did): `groups` keys held by more than one
    of `rows_total` base rows, `rows_dropped` rows that go (docs/adr/0018)."""

    dataset: str
    key: str
    keep: str
    dry_run: bool
    rows_total: int
    groups: int
    rows_dropped: int
    receipt: Receipt | None = None

    @property
    def message(self) -> str:
        """The original's report line."""
        if not self.groups:
            return "OK: no duplicate keys found."
        verb = "would drop" if self.dry_run or self.receipt is None else "dropped"
        return f"Found {self.groups} duplicate group(s); {verb} {self.rows_dropped} row(s)."


class MergeResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `usr maintenance merge` did (or, a dry run, would do), in the original's counts: of `rows_src`
    live source records, `casefold_skipped` the destination holds up to case, `duplicates_total` share an
    id with it (`duplicates_skipped` left out, `duplicates_replaced` replacing), `rows_added` joined.
    `src_seq`/`src_hash` name the version of the source read (also in the merge event)."""

    dest: str
    src: str
    src_seq: int
    src_hash: str
    dry_run: bool
    columns_mode: str
    duplicate_policy: str
    rows_src: int
    rows_src_deleted: int
    casefold_skipped: int
    duplicates_total: int
    duplicates_skipped: int
    duplicates_replaced: int
    rows_added: int
    dest_rows_before: int
    dest_rows_after: int
    columns_total: int
    overlapping_columns: int
    columns_added: list[str]
    overlap_coercions: list[str]
    carried: dict[str, int]
    receipt: Receipt | None = None

    @property
    def message(self) -> str:
        """The original's summary line."""
        tag = "DRY-RUN" if self.dry_run else "MERGED"
        line = (
            f"[{tag}] dest={self.dest} src={self.src} rows_src={self.rows_src} "
            f"duplicates_total={self.duplicates_total} duplicates_skipped={self.duplicates_skipped} "
            f"duplicates_replaced={self.duplicates_replaced} rows_added={self.rows_added} "
            f"dest_rows: {self.dest_rows_before} -> {self.dest_rows_after} "
            f"columns(total={self.columns_total}, overlap={self.overlapping_columns}) "
            f"dup_policy={self.duplicate_policy}"
        )
        if self.carried:
            line += " carried(" + ", ".join(f"{ns}:{n}" for ns, n in self.carried.items()) + ")"
        return line


class ProjectResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `usr maintenance overlay-project` copied (or, a dry run, would copy): `matched` of the
    destination's `dest_rows` live records took the source's values; `source_seq`/`source_hash` name the
    version of the source they came from (also in the attach event's note)."""

    src: str
    dest: str
    namespace: str
    columns: list[str]
    matched: int
    missing: int
    dest_rows: int
    dry_run: bool
    source_seq: int
    source_hash: str
    receipt: Receipt | None = None

    @property
    def message(self) -> str:
        """The original's report line."""
        tag = "DRY-RUN" if self.dry_run else "PROJECTED" if self.receipt is not None else "NOTHING TO PROJECT"
        return (
            f"[{tag}] src={self.src} dest={self.dest} namespace={self.namespace} columns={','.join(self.columns)} "
            f"matched={self.matched} missing={self.missing} dest_rows={self.dest_rows}"
        )


# -- forensics (docs/adr/0020) ---------------------------------------------------------------------
class Credit(msgspec.Struct, frozen=True, kw_only=True):
    """The event that made a change, and who ran it: its seq, log time, action, the actor's tool, run id
    and host, and the command id its lines share."""

    seq: int
    timestamp_utc: str
    action: str
    tool: str
    run_id: str
    host: str
    command_id: str
    event_id: str


class CellChange(msgspec.Struct, frozen=True, kw_only=True):
    """One column of a record, before -> after an event (None: unset)."""

    column: str
    before: Any
    after: Any


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An event that touched a record, with the columns it changed (none: it named the record and left its
    values as they were, say an import skipped as a duplicate or a state set to what it was) and a note
    (a merge's source version, a tombstone's reason, an attach's note)."""

    credit: Credit
    changes: list[CellChange]
    note: str = ""


class RecordHistory(msgspec.Struct, frozen=True, kw_only=True):
    """Every event that touched record `id` of `dataset` up to `seq`, oldest first. `live`: the record is
    in the live view at `seq`; `deleted`: it is tombstoned; neither: it was dropped, or never existed."""

    dataset: str
    id: str
    seq: int
    live: bool
    deleted: bool
    entries: list[HistoryEntry]


class BlameCell(msgspec.Struct, frozen=True, kw_only=True):
    """A cell of a record and the event that last wrote its value."""

    column: str
    value: Any
    credit: Credit


class RecordBlame(msgspec.Struct, frozen=True, kw_only=True):
    dataset: str
    id: str
    seq: int
    live: bool
    deleted: bool
    cells: list[BlameCell]


class CellDiff(msgspec.Struct, frozen=True, kw_only=True):
    """A cell whose value differs between the two points, and the last event between them that changed it."""

    column: str
    before: Any
    after: Any
    credit: Credit


class RowDiff(msgspec.Struct, frozen=True, kw_only=True):
    """A record that differs: `added` (not in the dataset at `from`), `removed` (dropped from the base),
    `deleted` (tombstoned), `restored` (tombstone lifted) or `changed`; `cells` its differing cells."""

    id: str
    kind: str
    cells: list[CellDiff]


class DiffResult(msgspec.Struct, frozen=True, kw_only=True):
    """What changed between `from_seq` and `to_seq` (`--summary`: the counts only, `rows` empty)."""

    dataset: str
    from_seq: int
    to_seq: int
    events: int
    added: int
    removed: int
    deleted: int
    restored: int
    changed: int
    cells: int
    by_column: dict[str, int]
    by_action: dict[str, int]
    rows: list[RowDiff] = []


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the log as `usr log` shows it."""

    credit: Credit
    summary: str


# -- sync (docs/adr/0021) ----------------------------------------------------------------------------
class Received(msgspec.Struct, frozen=True, kw_only=True):
    """Lines another copy of the log sent, appended through the write path: how many, and the new head."""

    dataset: str
    appended: int
    seq: int
    hash: str


class SideHead(msgspec.Struct, frozen=True, kw_only=True):
    """One copy's head: whether it exists, its last seq, chain hash and time."""

    exists: bool
    seq: int = 0
    hash: str = ""
    timestamp_utc: str = ""


class SyncEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A line of one copy's log, summarized (the events one copy has and the other lacks)."""

    seq: int
    hash: str
    action: str
    timestamp_utc: str
    actor: str
    command_id: str


class SyncStatus(msgspec.Struct, frozen=True, kw_only=True):
    """How two copies of a dataset compare (`usr status` / `usr diff DATASET REMOTE`).

    `verdict`: `up-to-date`, `local-ahead`, `remote-ahead`, `diverged` (both appended since `fork_seq`),
    `remote-missing` or `local-missing`. `local_only` / `remote_only`: the events each side has that the
    other lacks. `bytes_to_pull` / `bytes_to_push`: the lines and payload files that would travel (a
    whole folder for a dataset the other side lacks). `round_trips`: ssh sessions (or local calls) used."""

    dataset: str
    remote: str
    verdict: str
    local: SideHead
    remote_head: SideHead
    fork_seq: int | None = None
    local_only: list[SyncEvent] = []
    remote_only: list[SyncEvent] = []
    bytes_to_pull: int = 0
    bytes_to_push: int = 0
    round_trips: int = 0


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a pull or push did: `transfer_state` is `TRANSFERRED`, `NO-OP` or `DRY-RUN` (as the original's
    audit); `appended`: the lines the receiving side's write path appended (a bootstrap: the copy's
    lines); `bytes`: the lines and files that travelled; `head`: both sides' head afterwards."""

    dataset: str
    remote: str
    action: str
    transfer_state: str
    verdict: str
    appended: int
    bytes: int
    files: int
    head: SideHead
    bootstrap: bool = False
    round_trips: int = 0
    message: str = ""
    #: With `--rebase`: each of this side's commands since the fork, where it landed or why it was left out.
    rebased: list[RebasedCommand] = []
    #: With `--verify-sidecars`: `usr verify` of the receiving side after the transfer.
    verified: VerifyReport | None = None


class FileSide(msgspec.Struct, frozen=True, kw_only=True):
    """One file on one side (file mode): `exists`, size, modification time and sha256."""

    path: str
    exists: bool
    size: int = 0
    mtime_utc: str = ""
    sha256: str = ""


class FileSyncStatus(msgspec.Struct, frozen=True, kw_only=True):
    """File mode (`usr diff|status|pull|push PATH REMOTE`): the file here and there, compared by sha256.
    `verdict`: `up-to-date`, `differ`, `remote-missing`, `local-missing` (or `both-missing`)."""

    remote: str
    verdict: str
    local: FileSide
    remote_file: FileSide
    round_trips: int = 0


class FileSyncResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a file-mode pull or push did: `transfer_state` `TRANSFERRED`, `NO-OP` or `DRY-RUN`; `bytes`
    copied; the sha256 both sides hold afterwards."""

    remote: str
    action: str
    transfer_state: str
    verdict: str
    bytes: int
    sha256: str
    local_path: str
    remote_path: str
    round_trips: int = 0
