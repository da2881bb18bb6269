"""Dataset folders written by the original USR: telling one apart, and reading all it holds for `usr adopt`.

Reads only (docs/adr/0015): the adoption itself is a command on the one write path. The original's
layout and metadata are those of its README and inventory: `records.parquet` (the truth there, with
materialized `<ns>__<field>` and `usr__*` columns), compact overlays `_derived/<ns>.parquet` or part
folders `_derived/<ns>/part-*.parquet` (merged per key and column: the newest part by
(`usr:overlay_created_at`, file name) whose value is not null wins; a value materialized into the base
stands where the overlay's is null), `_registry/registry.<sha256>.yaml`, `_snapshots/records-*.parquet`,
`meta.md` and an `.events.log` without a hash chain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .codec import watermark_of
from .errors import IntegrityError, UsrError
from .log import LegacyPrefix, legacy_prefix, read_line_at
from .names import (
    ARCHIVE_DIR,
    DERIVED_DIR,
    ESSENTIAL_COLUMNS,
    ID,
    LOG_FILE,
    META_FILE,
    RECORDS_FILE,
    REGISTRY_DIR,
    SNAPSHOT_DIR,
    STATE_NS,
    TOMBSTONE_NS,
)
from .results import AdoptReport, Receipt

#: Where an adoption keeps the original's files (never deleted), inside the dataset folder.
LEGACY_DIR = "_legacy"
#: Written last into a complete `_legacy/` folder: what it is (`_MANIFEST_HEAD`), then the files it holds.
LEGACY_MANIFEST = "ADOPTED-FROM-USR.txt"
_MANIFEST_HEAD = (
    "These files are the original USR dataset this folder was adopted from (usr adopt, docs/adr/0015).\n"
    "usr_es never reads or changes them again. Files:\n"
)
_SEQUENCE_KEYS = ("sequence", "sequence_norm", "sequence_ci")


class NotAdopted(UsrError):
    """The dataset folder was written by the original USR and not adopted yet (nothing was written)."""


def original_name(directory: Path) -> str:
    """The dataset id the original recorded in meta.md (`name:`), else the folder's name."""
    found = _meta_header(directory / META_FILE).get("name")
    return str(found) if found else directory.name


def not_adopted(name: str) -> NotAdopted:
    return NotAdopted(
        f"{name} was written by the original USR; run `usr adopt {name}` to see what adopting it finds, "
        f"then `usr adopt {name} --yes`",
        hint="Adopting keeps every value and the original's log lines; the original files move to _legacy/.",
    )


def interrupted_adoption(name: str, logged: int, total: int) -> NotAdopted:
    return NotAdopted(
        f"the adoption of {name} was interrupted after {logged} of its {total} events",
        hint=f"Run `usr adopt {name} --yes` to finish it; the original files are kept in {LEGACY_DIR}/.",
    )


def unfinished_adoption(first: Any, seq: int) -> tuple[int, int] | None:
    """(events logged, events in all) when a log of `seq` events whose line 1 is the record `first` is an
    adoption that stopped before its last event (a torn append); None otherwise."""
    from .events import DatasetAdopted

    event = getattr(first, "event", None)
    if isinstance(event, DatasetAdopted) and seq < event.events:
        return seq, event.events
    return None


def require_adopted(directory: Path, seq: int, first: Any) -> None:
    """Raise NotAdopted when a log read from its start (`seq` events, line 1's record `first`) is the
    original's alone, or an adoption interrupted mid-append: replaying it would replace the original's
    files with a projection of nothing (or of part of what the folder holds)."""
    unfinished = unfinished_adoption(first, seq)
    if unfinished is not None:
        raise interrupted_adoption(original_name(directory), *unfinished)
    if seq == 0 and unadopted(directory):
        raise not_adopted(original_name(directory))


def unadopted(directory: Path) -> bool:
    """Whether `directory` is a dataset folder the original USR wrote that was not adopted: its log holds
    only the original's lines (no chain after them), or there is no log and records.parquet is the
    original's (its metadata names the USR schema and no usr_es event)."""
    log = directory / LOG_FILE
    try:
        prefix = legacy_prefix(log)
    except IntegrityError:  # a linked log: the caller's own read reports it
        return False
    if prefix is not None:
        return read_line_at(log, prefix.size) is None
    if log.is_file() and read_line_at(log, 0) is not None:  # a torn fragment alone is no log
        return False
    return _original_base(directory / RECORDS_FILE)


def _original_base(path: Path) -> bool:
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    return b"usr:schema_version" in meta and watermark_of(meta) is None


@dataclass(frozen=True)
class OriginalOverlay:
    """One namespace as the original's reads show it: `table` is `id` + its columns, one row per id,
    sorted by id; `rows_missing` rows named records the base does not hold (the original's views never
    show them)."""

    namespace: str
    key: str
    table: pa.Table
    files: tuple[str, ...]
    created_at: str
    contract_hash: str
    rows_missing: int


@dataclass(frozen=True)
class OriginalDataset:
    """Everything an original dataset folder holds that its views show, read without changing a file."""

    source_dir: Path  # where the files were read: the dataset folder, or its `_legacy/` copy
    base: pa.Table  # records.parquet's rows and columns as stored, less the usr__ tombstone columns
    overlays: tuple[OriginalOverlay, ...]
    created_at: str | None
    source: str
    notes: str
    legacy: LegacyPrefix | None
    id_mismatches: tuple[str, ...]
    registries: tuple[str, ...]
    snapshots: tuple[str, ...]
    files: tuple[str, ...]  # every original file an adoption keeps in _legacy/ (relative paths)
    findings: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        """What was found, as `usr adopt` reports it and the adoption event records it."""
        return {
            "rows": self.base.num_rows,
            "columns": self.base.column_names,
            "overlays": {o.namespace: {"rows": o.table.num_rows, "files": len(o.files)} for o in self.overlays},
            "tombstoned": _tombstoned(self.overlays),
            "snapshots": len(self.snapshots),
            "registry_hashes": list(self.registries),
            "legacy_log_lines": self.legacy.lines if self.legacy is not None else 0,
            "id_mismatches": len(self.id_mismatches),
            "findings": list(self.findings),
        }


def _tombstoned(overlays: tuple[OriginalOverlay, ...]) -> int:
    import pyarrow.compute as pc

    for o in overlays:
        if o.namespace == TOMBSTONE_NS and f"{TOMBSTONE_NS}__deleted" in o.table.column_names:
            return int(pc.sum(pc.fill_null(o.table.column(f"{TOMBSTONE_NS}__deleted"), False)).as_py() or 0)
    return 0


def adopt_report(
    name: str,
    found: OriginalDataset,
    *,
    dry_run: bool,
    adopted: bool,
    kept_in: str,
    message: str,
    receipt: Receipt | None = None,
) -> AdoptReport:
    summary = found.summary()
    return AdoptReport(
        dataset=name,
        dry_run=dry_run,
        adopted=adopted,
        rows=summary["rows"],
        columns=summary["columns"],
        overlays={o.namespace: o.table.num_rows for o in found.overlays},
        tombstoned=summary["tombstoned"],
        snapshots=summary["snapshots"],
        registry_hashes=summary["registry_hashes"],
        legacy_log_lines=summary["legacy_log_lines"],
        id_mismatches=len(found.id_mismatches),
        id_mismatch_sample=list(found.id_mismatches[:5]),
        findings=list(found.findings),
        files=list(found.files),
        kept_in=kept_in,
        receipt=receipt,
        message=message,
    )


def kept_originals(directory: Path) -> bool:
    """Whether `_legacy/` holds a complete copy of the original's files (its manifest is written last)."""
    return (directory / LEGACY_DIR / LEGACY_MANIFEST).is_file()


def read_original(directory: Path, *, from_legacy: bool = False) -> OriginalDataset:
    """Read the original dataset in `directory` the way the original's views read it; with `from_legacy`,
    its copy in `_legacy/` (once the log holds the adoption, the folder holds usr_es projections). A
    `_legacy/` that no logged adoption names is not read: the original may have written since.
    Raises IntegrityError for what the original itself would refuse to read."""
    from .registry import format_type, parse_type

    if from_legacy and not kept_originals(directory):
        raise IntegrityError(f"{directory / LEGACY_DIR} is not a complete copy of the original's files")
    source_dir = directory / LEGACY_DIR if from_legacy else directory
    findings: list[str] = []
    base_path = source_dir / RECORDS_FILE
    try:
        stored = pq.read_table(base_path)
    except FileNotFoundError:
        raise IntegrityError(f"{directory} has no {RECORDS_FILE}: there is nothing to adopt") from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise IntegrityError(f"{base_path} cannot be read: {exc}") from None
    metadata = {k.decode(): v.decode() for k, v in (stored.schema.metadata or {}).items()}
    base = _conform_base(stored.replace_schema_metadata(None), base_path)
    tomb_columns = [c for c in base.column_names if c.startswith(f"{TOMBSTONE_NS}__")]
    base_tombs = base.select([ID, *tomb_columns]) if tomb_columns else None
    base = base.drop_columns(tomb_columns)
    extras = [c for c in base.column_names if c not in ESSENTIAL_COLUMNS]
    for name in extras:  # materialized columns, in their registry spelling (list item names, large types)
        try:
            wanted = parse_type(format_type(base.schema.field(name).type))
        except UsrError as exc:
            raise IntegrityError(f"{RECORDS_FILE} column {name}: {exc}") from None
        base = base.set_column(base.column_names.index(name), pa.field(name, wanted), base.column(name).cast(wanted))
    mismatches = _id_mismatches(base)
    if mismatches:
        findings.append(f"{len(mismatches)} row(s) carry an id other than sha1(bio_type|sequence); kept as stored")
    overlays, files = _overlays(source_dir, base, base_tombs, findings)
    meta_doc = _meta_header(source_dir / META_FILE)
    snapshots = sorted(
        f"{SNAPSHOT_DIR}/{p.name}" for p in (source_dir / SNAPSHOT_DIR).glob("records-*.parquet") if p.is_file()
    )
    registries = sorted(
        p.name[len("registry.") : -len(".yaml")]
        for p in (directory / REGISTRY_DIR).glob("registry.*.yaml")
        if p.is_file()
    )
    kept = [RECORDS_FILE, *files, *snapshots]
    if (source_dir / META_FILE).is_file():
        kept.append(META_FILE)
    created = metadata.get("usr:dataset_created_at") or _text(meta_doc.get("created_at")) or None
    return OriginalDataset(
        source_dir=source_dir,
        base=base,
        overlays=overlays,
        created_at=created,
        source=_text(meta_doc.get("source")),
        notes=_text(meta_doc.get("notes")),
        legacy=legacy_prefix(directory / LOG_FILE),
        id_mismatches=tuple(mismatches),
        registries=tuple(registries),
        snapshots=tuple(snapshots),
        files=tuple(sorted(set(kept))),
        findings=tuple(findings),
    )


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _conform_base(table: pa.Table, path: Path) -> pa.Table:
    """The base with its essential columns in the USR schema's types (casts that keep every value)."""
    from .projectors import BASE_SCHEMA

    missing = [c for c in ESSENTIAL_COLUMNS if c not in table.column_names]
    if missing:
        raise IntegrityError(f"{path} lacks the USR column(s) {', '.join(missing)}: it is not a USR dataset")
    loose = [c for c in table.column_names if c not in ESSENTIAL_COLUMNS and "__" not in c.strip("_")]
    if loose:
        raise IntegrityError(f"{path} has column(s) outside any namespace: {', '.join(loose)}")
    ordered = [*ESSENTIAL_COLUMNS, *(c for c in table.column_names if c not in ESSENTIAL_COLUMNS)]
    out = table.select(ordered)
    for field in BASE_SCHEMA:
        column = out.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise IntegrityError(f"{path} column {field.name} is {column.type}, not {field.type}: {exc}") from None
        if column.null_count:
            raise IntegrityError(f"{path} column {field.name} has {column.null_count} null value(s)")
        out = out.set_column(out.column_names.index(field.name), field, column)
    ids = out.column(ID)
    import pyarrow.compute as pc

    if len(pc.unique(ids)) != len(ids):
        raise IntegrityError(f"{path} holds the same id more than once; the original refuses such a base too")
    return out


def _id_mismatches(base: pa.Table) -> list[str]:
    """The ids that are not sha1(bio_type|trimmed sequence) of their row."""
    import pyarrow.compute as pc

    from .decide import compute_ids

    if not base.num_rows:
        return []
    sequence = pc.utf8_trim_whitespace(base.column("sequence"))
    bio_type = base.column("bio_type")
    kinds = pc.unique(bio_type).to_pylist()
    expected = compute_ids(sequence, bio_type, single=kinds[0] if len(kinds) == 1 else None)
    differ = pc.not_equal(expected, base.column(ID))
    return [str(i) for i in base.column(ID).filter(differ).to_pylist()]


def _meta_header(path: Path) -> dict[str, Any]:
    """meta.md's header fields (the `key: value` lines before the first blank line), parsed as YAML."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    header = text.split("\n\n", 1)[0]
    try:
        doc = yaml.safe_load(header)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


# -- overlays ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Stored:
    rel: str
    table: pa.Table
    key: str
    created_at: str
    contract_hash: str


def _overlays(
    directory: Path, base: pa.Table, base_tombs: pa.Table | None, findings: list[str]
) -> tuple[tuple[OriginalOverlay, ...], list[str]]:
    """Every live namespace's overlay resolved by the original's rules, and every file under `_derived/`."""
    derived = directory / DERIVED_DIR
    sources: dict[str, list[Path]] = {}
    files: list[str] = []
    if derived.is_dir():
        files = sorted(str(p.relative_to(directory)) for p in derived.rglob("*") if p.is_file())
        entries = [e for e in sorted(derived.iterdir()) if e.name != ARCHIVE_DIR and not e.name.startswith(".")]
        compact = {e.stem for e in entries if e.is_file() and e.suffix == ".parquet"}
        for entry in entries:
            if entry.is_file() and entry.suffix == ".parquet":
                sources.setdefault(entry.stem, []).append(entry)
            elif entry.is_dir():
                parts = sorted(p for p in entry.glob("part-*.parquet") if p.is_file())
                if parts and entry.name in compact:
                    raise IntegrityError(
                        f"overlay namespace {entry.name!r} has both file and directory sources; "
                        "the original refuses to read it too"
                    )
                if parts:
                    sources.setdefault(entry.name, []).extend(parts)
    out: list[OriginalOverlay] = []
    for ns, paths in sorted(sources.items()):
        stored = [_read_overlay(directory, p, ns) for p in paths]
        stored.sort(key=lambda s: (s.created_at, Path(s.rel).name))
        out.append(_resolve(ns, stored, base, base_tombs if ns == TOMBSTONE_NS else None, findings))
    if base_tombs is not None and TOMBSTONE_NS not in sources:
        out.append(_resolve(TOMBSTONE_NS, [], base, base_tombs, findings))
    return tuple(o for o in out if o.table.num_rows), files


def _read_overlay(directory: Path, path: Path, ns: str) -> _Stored:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise IntegrityError(f"overlay {path} cannot be read: {exc}") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    named = meta.get("usr:overlay_namespace", ns)
    if named != ns:
        raise IntegrityError(f"overlay {path} says it belongs to namespace {named!r}, not {ns!r}")
    return _Stored(
        rel=str(path.relative_to(directory)),
        table=table.replace_schema_metadata(None),
        key=meta.get("usr:overlay_key", "id"),
        created_at=meta.get("usr:overlay_created_at", ""),
        contract_hash=meta.get("usr:namespace_contract_hash", ""),
    )


def _resolve(
    ns: str, stored: list[_Stored], base: pa.Table, base_tombs: pa.Table | None, findings: list[str]
) -> OriginalOverlay:
    """One namespace's files merged as the original's reads merge them, keyed by id."""
    import pyarrow.compute as pc

    prefix = f"{ns}__"
    keyed: list[pa.Table] = []
    missing = 0
    for rank, s in enumerate(stored):
        table, n_missing = _keyed_by_id(s, base, prefix)
        missing += n_missing
        keyed.append(table.append_column("__rank__", pa.repeat(pa.scalar(rank, pa.int64()), table.num_rows)))
    if base_tombs is not None:  # tombstones materialized into the base: the oldest source, overlays win
        rows = base_tombs.filter(pc.is_valid(base_tombs.column(f"{TOMBSTONE_NS}__deleted")))
        keyed.insert(0, rows.append_column("__rank__", pa.repeat(pa.scalar(-1, pa.int64()), rows.num_rows)))
    if missing:
        findings.append(f"overlay {ns}: {missing} row(s) for records not in the base (the original never shows them)")
    merged = _newest_non_null(pa.concat_tables(keyed, promote_options="permissive")) if keyed else None
    if merged is None:
        merged = pa.table({ID: pa.array([], pa.string())})
    merged = _with_base_values(merged, base)
    merged = _conformed(ns, merged, findings)
    newest = stored[-1] if stored else None
    return OriginalOverlay(
        namespace=ns,
        key=stored[0].key if stored else "id",
        table=merged,
        files=tuple(s.rel for s in stored),
        created_at=newest.created_at if newest is not None else "",
        contract_hash=newest.contract_hash if newest is not None else "",
        rows_missing=missing,
    )


def _keyed_by_id(s: _Stored, base: pa.Table, prefix: str) -> tuple[pa.Table, int]:
    """A stored overlay's namespaced columns keyed by the base id its key names; rows naming no record
    are left out (and counted)."""
    import pyarrow.compute as pc

    table = s.table
    if s.key not in ("id", *_SEQUENCE_KEYS):
        raise IntegrityError(f"overlay {s.rel} has an unknown key {s.key!r}")
    column = s.key if s.key in table.column_names else ("sequence" if s.key in _SEQUENCE_KEYS else ID)
    if column not in table.column_names:
        raise IntegrityError(f"overlay {s.rel} has no key column {column!r}")
    values = [c for c in table.column_names if c.startswith(prefix)]
    keys = pc.utf8_trim_whitespace(table.column(column).cast(pa.string()))
    if s.key == "id":
        base_keys = base.column(ID)
    else:
        base_keys = pc.utf8_trim_whitespace(base.column("sequence"))
        if s.key == "sequence_ci":
            keys, base_keys = pc.utf8_upper(keys), pc.utf8_upper(base_keys)
        if len(pc.unique(base_keys)) != len(base_keys):
            raise IntegrityError(f"overlay {s.rel} is keyed by {s.key}, but base records share a {s.key}")
    at = pc.index_in(keys, value_set=base_keys)
    found = pc.is_valid(at)
    ids = base.column(ID).take(at.filter(found))
    rows = table.select(values).filter(found)
    if len(pc.unique(ids)) != len(ids):
        raise IntegrityError(f"overlay {s.rel} holds a key more than once; the original refuses to read it too")
    return rows.add_column(0, ID, ids), int(len(keys) - len(ids))


def _newest_non_null(table: pa.Table) -> pa.Table:
    """Per id and column, the value of the highest `__rank__` whose value is not null (the original's
    merge of parts); every id that any row names, sorted."""
    import pyarrow.compute as pc

    ids = pc.unique(table.column(ID))
    ids = ids.take(pc.sort_indices(ids))
    columns: dict[str, pa.Array] = {ID: ids}
    for name in table.column_names:
        if name in (ID, "__rank__"):
            continue
        present = table.select([ID, "__rank__", name]).filter(pc.is_valid(table.column(name)))
        present = present.take(pc.sort_indices(present, sort_keys=[(ID, "ascending"), ("__rank__", "descending")]))
        id_column = present.column(ID).combine_chunks()
        n = len(id_column)
        first = (
            pa.concat_arrays([pa.array([True]), pc.not_equal(id_column.slice(1), id_column.slice(0, n - 1))])
            if n
            else pa.array([], pa.bool_())
        )
        winners = present.filter(first)
        columns[name] = winners.column(name).take(pc.index_in(ids, value_set=winners.column(ID))).combine_chunks()
    return pa.table(columns)


def _with_base_values(overlay: pa.Table, base: pa.Table) -> pa.Table:
    """Columns also materialized in the base read COALESCE(overlay, base) in the original: where the
    overlay is null, the base's value is the one shown (and kept, so an overlay row never hides it)."""
    import pyarrow.compute as pc

    shared = [c for c in overlay.column_names if c != ID and c in base.column_names]
    if not shared or not overlay.num_rows:
        return overlay
    at = pc.index_in(overlay.column(ID), value_set=base.column(ID))
    for name in shared:
        column = overlay.column(name)
        try:
            stored = base.column(name).take(at).cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # kept as the overlay holds it; the type difference is reported with the overlay's
        overlay = overlay.set_column(overlay.column_names.index(name), name, pc.coalesce(column, stored))
    return overlay


def _conformed(ns: str, table: pa.Table, findings: list[str]) -> pa.Table:
    """Reserved namespaces in usr_es's own schema; others in their registry spelling (same values)."""
    from .overlays import STATE_SCHEMA, TOMBSTONE_SCHEMA
    from .registry import format_type, parse_type

    reserved = {TOMBSTONE_NS: TOMBSTONE_SCHEMA, STATE_NS: STATE_SCHEMA}.get(ns)
    fields = [pa.field(ID, pa.string())]
    arrays = [table.column(ID)]
    for name in table.column_names:
        if name == ID:
            continue
        column = table.column(name)
        if reserved is not None:
            if name not in reserved.names:
                findings.append(f"overlay {ns}: column {name} is not a {ns} column; left out")
                continue
            wanted = reserved.field(name).type
        else:
            try:
                wanted = parse_type(format_type(column.type))
            except UsrError as exc:
                raise IntegrityError(f"overlay {ns} column {name}: {exc}") from None
        try:
            column = column.cast(wanted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise IntegrityError(f"overlay {ns} column {name} is {column.type}, not {wanted}: {exc}") from None
        fields.append(pa.field(name, wanted))
        arrays.append(column)
    return pa.table(arrays, schema=pa.schema(fields))


# -- keeping the originals --------------------------------------------------------------------------
def keep_originals(directory: Path, original: OriginalDataset) -> None:
    """Put every original file in `_legacy/` as a hard link (a copy across file systems) before the
    adoption's lines are appended: the originals stay where they are, so a crash leaves the original
    dataset as it was. The folder is built under a temporary name and renamed whole; a `_legacy/` an
    earlier, uncommitted attempt left is rebuilt."""
    import shutil

    from .fileio import fileops

    if original.source_dir != directory:
        return  # read from `_legacy/` itself: it is complete
    target = directory / LEGACY_DIR
    staging = directory / ".tmp-legacy"
    shutil.rmtree(staging, ignore_errors=True)
    for rel in original.files:
        src, dst = directory / rel, staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    (staging / LEGACY_MANIFEST).write_text(
        _MANIFEST_HEAD + "".join(f"{rel}\n" for rel in original.files), encoding="utf-8"
    )
    ops = fileops()
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            fd = ops.open(path, os.O_RDONLY)
            try:
                ops.fsync(fd)
            finally:
                ops.close(fd)
    if target.exists():
        if not (target / LEGACY_MANIFEST).is_file():
            shutil.rmtree(staging, ignore_errors=True)
            raise IntegrityError(
                f"{target} exists and was not made by usr adopt; move it away and adopt again",
            )
        shutil.rmtree(target)
    os.rename(staging, target)
    ops.fsync_dir(directory)


def retire_originals(directory: Path) -> list[str]:
    """Remove, from where the original had them, the original files `_legacy/` holds (the same file: a
    hard link, or equal bytes), except those a usr_es projection now owns (records.parquet, meta.md). Safe
    to repeat; returns what it removed."""
    import filecmp

    kept = directory / LEGACY_DIR
    manifest = kept / LEGACY_MANIFEST
    if not manifest.is_file():
        return []
    removed: list[str] = []
    text = manifest.read_text(encoding="utf-8")
    for rel in text.removeprefix(_MANIFEST_HEAD).splitlines() if text.startswith(_MANIFEST_HEAD) else []:
        if not rel or rel in (RECORDS_FILE, META_FILE):
            continue
        here, there = directory / rel, kept / rel
        if not here.is_file() or not there.is_file():
            continue
        if os.path.samefile(here, there) or filecmp.cmp(here, there, shallow=False):
            here.unlink()
            removed.append(rel)
    for rel in sorted({str(Path(r).parent) for r in removed}, key=len, reverse=True):
        folder = directory / rel
        while folder != directory and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return removed


def original_names(rel: str) -> bool:
    """Whether `rel` (under `_derived/`) is named as the original names overlay files (a compact
    `<ns>.parquet`, a `part-<stamp>-<uuid>.parquet`, its digest ledger or an archived overlay), never
    as usr_es names its parts: such files are left alone (`usr adopt --keep-originals` keeps them)."""
    parts = Path(rel).parts
    if len(parts) < 2 or parts[0] != DERIVED_DIR:
        return False
    if len(parts) == 2:
        return parts[1].endswith(".parquet")
    name = parts[-1]
    if name == "digest_ledger.json":
        return True
    return (
        name.startswith("part-") and name.endswith(".parquet") and not name[len("part-") : -len(".parquet")].isdigit()
    )
