"""Typed results returned by `Dataset` methods (and rendered by the CLI, `--format json` too)."""

from __future__ import annotations

from typing import Any

import msgspec


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
