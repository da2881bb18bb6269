"""Golden replay fixtures: `python -m tools.replay_fixtures DIR` (`make fixtures`) rebuilds every case from scratch.

Format. `DIR/<nnn>-<case>/` holds `case.json` ({name, description, generator, expect}), `dataset/` (the
committed truth only: `.events.log`, `_payloads/`, `_registry/`, plus `_snapshots/` where a case takes
checkpoints; never the `records.parquet`/`_derived/`/`meta.md` caches) and `expected/seq-<N>/` for every
seq worth replaying to (always the head), each with `records.schema.json` (fields as name, registry type
string and nullability, plus the deterministic Parquet key/value metadata: the `usr:*` keys and
`usr_es:seq|offset|hash|projector`), `records.rows.jsonl` (one canonical JSON object per row in log order:
sorted keys, RFC 3339 timestamps with microseconds and `Z`), `view.rows.jsonl` (the overlay-merged live
view users read, same row form), `state.json` ({seq, head_hash, rows}) and the overlay projection: for every
live and archived part `_derived/<path>.parquet` a `derived/<path>.schema.json` + `derived/<path>.rows.jsonl`
pair in the records style (the part's `usr:overlay_*`, `usr:registry_hash`, `usr:namespace_contract_hash`
and `usr_es:*` metadata; `__written__:<col>` mask columns included) and `derived/layout.json` (the layout
projection, re-dumped canonically). Exactly these files exist, no more. All JSON has sorted keys and no
clock except log timestamps. Expected files come from `Dataset.replay` of the committed `dataset/` and must
equal the live projection captured after each accepted command. `expect` holds head_seq, head_hash, rows,
the expected seqs, torn_tail_bytes, `replays` ({seq: {from_checkpoint, ignored_checkpoints}}),
`same_view` (pairs of expected seqs whose live views are equal: compaction, materialize, snapshot) and
`reissue`: API calls ({op, args, kwargs, input?}: a Dataset method from REISSUE_OPS; `input` is an attach
file's name and text) the test repeats on a copy at the head, which must be rejected with the named error,
answered as a retry of `seq`, or be a no-op, without changing the log (the generator checks that at the
head too). The generator runs with automatic checkpoints off. Fixtures are never edited by hand.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from usr_es import Dataset, __version__
from usr_es.commands import InputFormat
from usr_es.errors import UsrError
from usr_es.names import (
    DERIVED_DIR,
    LAYOUT_FILE,
    LOG_FILE,
    PAYLOAD_DIR,
    RECORDS_FILE,
    REGISTRY_DIR,
    REGISTRY_FILE,
    SNAPSHOT_DIR,
)
from usr_es.projectors import PROJECTOR_VERSION
from usr_es.registry import format_type, register_namespace, split_columns_spec
from usr_es.remotes import Remote, RemoteSpec
from usr_es.results import Receipt
from usr_es.storage import read_layout

#: Recorded in every case.json. It and the actor/source/owner `usr_es.fixtures` written into the logs and
#: registries keep this module's former name: renaming them would rewrite every fixture.
GENERATOR = f"usr_es.fixtures {__version__} (projector {PROJECTOR_VERSION})"
CASE_NAME = re.compile(r"^[0-9]{3}-[a-z0-9]+(?:-[a-z0-9]+)*$")
SCHEMA_FILE = "records.schema.json"
ROWS_FILE = "records.rows.jsonl"
VIEW_FILE = "view.rows.jsonl"
STATE_FILE = "state.json"
CASE_FILE = "case.json"
#: Folder of `expected/seq-<N>/` holding the canonical `_derived/` projection.
DERIVED_OUT = "derived"
#: What `dataset/` may hold: the log, the immutable artifacts it references, and checkpoints.
COMMITTED = (LOG_FILE, PAYLOAD_DIR, REGISTRY_DIR, SNAPSHOT_DIR)
#: The reissue ops that are methods of `Dataset.maintenance` (the others are methods of `Dataset`).
MAINTENANCE_OPS = frozenset(
    {"compact_overlay", "materialize", "snapshot", "freeze_registry", "dedupe", "remove_overlay", "merge"}
)
#: The Dataset methods a `reissue` item may name.
REISSUE_OPS = frozenset(
    {
        "add_sequences",
        "attach",
        "delete",
        "restore",
        "set_state",
        "clear_state",
        "compact_overlay",
        "materialize",
        "snapshot",
        "freeze_registry",
        "dedupe",
        "remove_overlay",
    }
)

_USR_ES_KEYS = frozenset({"usr_es:seq", "usr_es:offset", "usr_es:hash", "usr_es:projector"})
_UNIT_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FixtureError(RuntimeError):
    """A fixture could not be generated: a step did not behave as the case says it must."""


# -- canonical, pyarrow-version-independent form --------------------------------------------
def canonical_schema(path: Path) -> dict[str, Any]:
    """Fields (name, registry type string, nullable) and deterministic key/value metadata of a Parquet file."""
    schema = pq.read_schema(path)
    kv = pq.read_metadata(path).metadata or {}
    metadata: dict[str, str] = {}
    for raw_key, raw_value in kv.items():
        key = raw_key.decode()
        if key.startswith("usr:") or key in _USR_ES_KEYS:
            metadata[key] = raw_value.decode()
    fields = [{"name": f.name, "type": _type_text(f.type), "nullable": bool(f.nullable)} for f in schema]
    return {"fields": fields, "metadata": dict(sorted(metadata.items()))}


def canonical_rows(table: pa.Table) -> list[str]:
    """One compact JSON object per row, in table order, with sorted keys (timestamps as RFC 3339 text)."""
    names = list(table.column_names)
    columns = [_column_values(table.column(i)) for i in range(table.num_columns)]
    rows = []
    for i in range(table.num_rows):
        row = {name: values[i] for name, values in zip(names, columns, strict=True)}
        rows.append(json.dumps(row, sort_keys=True, separators=(",", ":"), allow_nan=False))
    return rows


def dump_json(value: Any) -> str:
    """The text of every fixture JSON file: sorted keys, two-space indent, trailing newline."""
    return json.dumps(value, sort_keys=True, indent=2, allow_nan=False) + "\n"


def dump_rows(rows: list[str]) -> str:
    """The text of a `*.rows.jsonl` file: one canonical row per line (empty for no rows)."""
    return "".join(f"{row}\n" for row in rows)


def _type_text(dtype: pa.DataType) -> str:
    try:
        return format_type(dtype)
    except UsrError:
        return f"arrow:{dtype}"


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    dtype = column.type
    if pa.types.is_timestamp(dtype):
        ticks = column.cast(pa.int64()).to_pylist()
        return [None if v is None else _timestamp_text(int(v), dtype.unit, dtype.tz is not None) for v in ticks]
    return [_jsonable(v) for v in column.to_pylist()]


def _timestamp_text(value: int, unit: str, utc: bool) -> str:
    digits = _UNIT_DIGITS[unit]
    seconds, fraction = divmod(value, 10**digits)
    width = max(digits, 6)
    m = _EPOCH + timedelta(seconds=seconds)
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    return f"{text}.{fraction * 10 ** (width - digits):0{width}d}{'Z' if utc else ''}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat(timespec="microseconds")
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def projection_of(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(canonical schema, canonical rows) of a `records.parquet` (or overlay part) file."""
    return canonical_schema(path), canonical_rows(pq.read_table(path))


def derived_files(directory: Path) -> dict[str, str]:
    """The canonical form of a dataset directory's `_derived/`, keyed by path under `expected/seq-<N>/`.

    Every part file gives `derived/<path>.schema.json` and `derived/<path>.rows.jsonl` (`<path>` is its
    path under `_derived/` without `.parquet`); `layout.json` is re-dumped canonically. Raises
    FixtureError on any other file, or when the part files on disk differ from the ones the layout lists.
    """
    derived = directory / DERIVED_DIR
    out: dict[str, str] = {}
    if not derived.is_dir():
        return out
    found: set[str] = set()
    for path in sorted(p for p in derived.rglob("*") if p.is_file()):
        rel = path.relative_to(derived).as_posix()
        if path == directory / LAYOUT_FILE:
            out[f"{DERIVED_OUT}/{rel}"] = dump_json(json.loads(path.read_bytes()))
        elif rel.endswith(".parquet"):
            found.add(path.relative_to(directory).as_posix())
            schema, rows = projection_of(path)
            stem = f"{DERIVED_OUT}/{rel.removesuffix('.parquet')}"
            out[f"{stem}.schema.json"] = dump_json(schema)
            out[f"{stem}.rows.jsonl"] = dump_rows(rows)
        else:
            raise FixtureError(f"unexpected file {path.relative_to(directory)} in {DERIVED_DIR}/")
    doc = read_layout(directory / LAYOUT_FILE)
    listed = set(doc[0].files()) if doc is not None else set()
    if found != listed:
        raise FixtureError(f"{directory}: part files {sorted(found)} differ from the layout's {sorted(listed)}")
    return out


def projection_files(directory: Path) -> dict[str, str]:
    """Every expected file of a seq except `state.json` (records, live view, `_derived/`), by relative path."""
    schema, rows = projection_of(directory / RECORDS_FILE)
    view = canonical_rows(Dataset.at(directory).view())
    files = {SCHEMA_FILE: dump_json(schema), ROWS_FILE: dump_rows(rows), VIEW_FILE: dump_rows(view)}
    files.update(derived_files(directory))
    return files


def sequence_id(sequence: str, bio_type: str = "dna") -> str:
    """The USR id of a (trimmed) sequence: sha1 of `bio_type|sequence`."""
    return hashlib.sha1(f"{bio_type}|{sequence.strip()}".encode()).hexdigest()


def _call(ds: Dataset, op: str, args: list[Any], kwargs: dict[str, Any], input_path: Path | None) -> Receipt:
    if op not in REISSUE_OPS:
        raise FixtureError(f"unknown reissue op {op!r}")
    if op == "attach":
        if input_path is None:
            raise FixtureError("an attach needs an input file")
        return ds.attach(input_path, *args, **kwargs)
    holder: Any = ds.maintenance if op in MAINTENANCE_OPS else ds
    method: Callable[..., Any] = getattr(holder, op)
    return _receipt_of(method(*args, **kwargs))


def _receipt_of(result: Any) -> Receipt:
    """The receipt of a command's result (a `Receipt`, or a typed result carrying one, as a dedupe's)."""
    receipt = result.receipt if not isinstance(result, Receipt) else result
    if not isinstance(receipt, Receipt):
        raise FixtureError(f"no receipt in {result!r}")
    return receipt


def outcome_of(ds: Dataset, item: dict[str, Any], inputs: Path) -> tuple[str, Receipt | None]:
    """Run one `reissue` item: (the error class name | "replayed" | "noop" | "appended", receipt)."""
    path = None
    if "input" in item:
        inputs.mkdir(parents=True, exist_ok=True)
        path = inputs / item["input"]["name"]
        path.write_text(item["input"]["text"], encoding="utf-8")
    try:
        receipt = _call(ds, item["op"], item["args"], item["kwargs"], path)
    except UsrError as exc:
        return type(exc).__name__, None
    return ("replayed" if receipt.replayed else "noop" if receipt.noop else "appended"), receipt


# -- building a case through the public API --------------------------------------------------
@dataclass(frozen=True)
class _Snapshot:
    files: dict[str, str]
    rows: int
    hash: str


def _hashes(ds: Dataset) -> set[str]:
    return {line.record.hash for line in ds.log.iter_events()}


@dataclass
class _Builder:
    """Runs one case's commands on a live dataset and records what the fixture must expect."""

    work: Path
    slug: str
    ds: Dataset = field(init=False)
    live: dict[int, _Snapshot] = field(default_factory=dict)
    reissue: list[dict[str, Any]] = field(default_factory=list)
    same_view: list[list[int]] = field(default_factory=list)
    tampered: list[int] = field(default_factory=list)
    torn_tail_bytes: int = 0
    #: States observed on another copy of the dataset (`seen_on`), by seq.
    elsewhere: dict[int, _Snapshot] = field(default_factory=dict)

    def __post_init__(self) -> None:
        root = self.work / "root"
        register_namespace(
            root,
            "mock",
            split_columns_spec("mock__score:float64,mock__tags:list<string>"),
            owner="usr_es.fixtures",
            description="replay fixtures",
        )
        self.ds = Dataset.open(root, f"fixtures/{self.slug}")

    @property
    def head(self) -> int:
        return max(self.live, default=0)

    def init(self, **kwargs: Any) -> Receipt:
        return self._accept(self.ds.init(**kwargs))

    def import_text(self, name: str, text: str, *, fmt: InputFormat, **kwargs: Any) -> Receipt:
        """Import an input file written from `text`; the rows' default source is its relative path (the
        log records the absolute one), so projections do not depend on the scratch directory."""
        path = self._input(name, text)
        kwargs.setdefault("source", str(path))
        return self._accept(self.ds.import_file(path, fmt=fmt, **kwargs))

    def import_parquet(self, name: str, table: pa.Table, **kwargs: Any) -> Receipt:
        path = self._input(name, None)
        pq.write_table(table, self.work / path)
        kwargs.setdefault("source", str(path))
        return self._accept(self.ds.import_file(path, fmt="parquet", **kwargs))

    def add(self, rows: list[Any], **kwargs: Any) -> Receipt:
        return self._accept(self.ds.add_sequences(rows, **kwargs))

    def register(self, namespace: str, columns: str) -> None:
        register_namespace(self.ds.root, namespace, split_columns_spec(columns))

    def attach(
        self, name: str, text: str, *, metrics: dict[str, int] | None = None, same_view: bool = False, **kwargs: Any
    ) -> Receipt:
        """Attach columns from an input file written from `text` (csv or jsonl, by suffix)."""
        receipt = self.ds.attach(self._input(name, text), **kwargs)
        return self._accept(receipt, metrics=metrics, same_view=same_view)

    def run(
        self, op: str, *args: Any, metrics: dict[str, int] | None = None, same_view: bool = False, **kwargs: Any
    ) -> Receipt:
        """Any other accepted command, by Dataset method name (`same_view`: the live view must not change)."""
        holder: Any = self.ds.maintenance if op in MAINTENANCE_OPS else self.ds
        method: Callable[..., Any] = getattr(holder, op)
        return self._accept(_receipt_of(method(*args, **kwargs)), metrics=metrics, same_view=same_view)

    def retry(self, seq: int, op: str, *args: Any, input: tuple[str, str] | None = None, **kwargs: Any) -> None:
        """Send a command again with a command id already in the log: the receipt of `seq`, nothing appended."""
        receipt = self._reissue("replayed", op, list(args), kwargs, input, record=op != "init")
        if receipt is None or receipt.seq != seq or receipt.hash != self.live[seq].hash:
            raise FixtureError(f"{self.slug}: retry {op} {kwargs} did not return the receipt of seq {seq}: {receipt}")
        if op != "init":
            self.reissue[-1]["seq"] = seq

    def reject(self, error: str, op: str, *args: Any, input: tuple[str, str] | None = None, **kwargs: Any) -> None:
        """A command that must fail with `error` and leave the log byte-for-byte unchanged.

        All but `init` rejections are repeated by the test on its copy of the dataset at the head
        (a copy has no registry root, so a second `init` could not be judged there).
        """
        self._reissue(error, op, list(args), kwargs, input, record=op != "init")

    def noop(self, op: str, *args: Any, **kwargs: Any) -> None:
        """A command with nothing to do: a no-op receipt and no line appended."""
        self._reissue("noop", op, list(args), kwargs, None, record=True)

    def tear(self, rows: list[Any], **kwargs: Any) -> None:
        """Append one more event, then cut its line in half: a writer that died mid-append."""
        self._check_live()
        offset = self.ds.log_path.stat().st_size
        self.ds.add_sequences(rows, **kwargs)
        end = self.ds.log_path.stat().st_size
        keep = offset + (end - offset) // 2
        os.truncate(self.ds.log_path, keep)
        self.torn_tail_bytes = keep - offset

    def tamper_checkpoint(self, seq: int, rel: str) -> None:
        """Rewrite file `rel` of checkpoint `seq` with its last row dropped (a new inode: the hard-linked
        live file stays intact). Replay and rebuild must notice and ignore the checkpoint."""
        path = self.ds.dir / SNAPSHOT_DIR / f"checkpoint-{seq:010d}" / rel
        table = pq.read_table(path)
        if table.num_rows == 0:
            raise FixtureError(f"{self.slug}: nothing to tamper with in {path}")
        path.unlink()
        pq.write_table(table.slice(0, table.num_rows - 1), path)
        self.tampered.append(seq)

    def cluster(self) -> tuple[Remote, Dataset]:
        """A second machine: a `type: local` remote holding a copy of this dataset (a bootstrap push)."""
        root = self.work / "cluster"
        root.mkdir(exist_ok=True)
        shutil.copy(self.ds.root / REGISTRY_FILE, root / REGISTRY_FILE)
        remote = Remote(name="cluster", spec=RemoteSpec(type="local", base_dir=str(root)))
        self.ds.sync.push(remote)
        return remote, Dataset.open(root, self.ds.name)

    def seen_on(self, other: Dataset) -> None:
        """The state at the other copy's head, observed live there (a rebase makes its log a prefix of this
        one's: `pull_rebase` takes the state in then)."""
        head = other.log.events()[-1]
        self.elsewhere[head.seq] = _Snapshot(
            projection_files(other.dir), pq.read_metadata(other.records_path).num_rows, head.hash
        )

    def pull_rebase(self, remote: Remote, *, reapplied: int, left_out: int) -> None:
        """`pull --rebase`: this copy's lines since the fork are replaced (the remote's lines, then this side's
        commands decided again, then the `rebase` line), so the states observed past the fork go."""
        fork = self.ds.sync.status(remote).fork_seq or 0
        done = self.ds.sync.pull(remote, rebase=True)
        if sum(c.new_seq is None for c in done.rebased) != left_out or done.head.seq <= fork:
            raise FixtureError(f"{self.slug}: pull --rebase: {done}")
        metrics = self.ds.log.events()[-1].metrics
        if metrics != {"reapplied": reapplied, "left_out": left_out}:
            raise FixtureError(f"{self.slug}: rebase metrics {metrics}")
        held = _hashes(self.ds)
        theirs = {seq: snap for seq, snap in self.elsewhere.items() if snap.hash in held}
        self.live = {seq: snap for seq, snap in self.live.items() if seq <= fork} | theirs
        self.same_view = [pair for pair in self.same_view if max(pair) <= fork]
        files = projection_files(self.ds.dir)
        self.live[done.head.seq] = _Snapshot(files, pq.read_metadata(self.ds.records_path).num_rows, done.head.hash)
        self._check_live()

    def finish(self) -> None:
        if not self.torn_tail_bytes:
            self._check_live()

    def _input(self, name: str, text: str | None) -> Path:
        path = Path("inputs") / name
        (self.work / "inputs").mkdir(exist_ok=True)
        if text is not None:
            (self.work / path).write_text(text, encoding="utf-8")
        return path

    def _reissue(
        self,
        outcome: str,
        op: str,
        args: list[Any],
        kwargs: dict[str, Any],
        input: tuple[str, str] | None,
        *,
        record: bool,
    ) -> Receipt | None:
        before = self.ds.log_path.read_bytes()
        item: dict[str, Any] = {"op": op, "args": args, "kwargs": kwargs, "outcome": outcome}
        if input is not None:
            item["input"] = {"name": input[0], "text": input[1]}
        if op == "init":
            try:
                receipt: Receipt | None = self.ds.init(**kwargs)
                got = "replayed" if receipt is not None and receipt.replayed else "appended"
            except UsrError as exc:
                got, receipt = type(exc).__name__, None
        else:
            got, receipt = outcome_of(self.ds, item, self.work / "inputs")
        if got != outcome:
            raise FixtureError(f"{self.slug}: {op} {args} {kwargs}: expected {outcome}, got {got} ({receipt})")
        if self.ds.log_path.read_bytes() != before:
            raise FixtureError(f"{self.slug}: {outcome} {op} {kwargs} changed the log")
        if record:
            self.reissue.append(item)
        return receipt

    def _accept(self, receipt: Receipt, *, metrics: dict[str, int] | None = None, same_view: bool = False) -> Receipt:
        if receipt.replayed or receipt.noop or receipt.seq <= self.head:
            raise FixtureError(f"{self.slug}: expected a new event after seq {self.head}, got {receipt}")
        if metrics is not None and {k: receipt.metrics.get(k) for k in metrics} != metrics:
            raise FixtureError(f"{self.slug}: seq {receipt.seq}: metrics {receipt.metrics}, expected {metrics}")
        previous = self.head
        records = {line.seq: line.record for line in self.ds.log.iter_events() if line.seq > previous}
        for seq in range(previous + 1, receipt.seq):  # e.g. the snapshot `materialize(snapshot_before=True)` takes
            if records[seq].command_id == receipt.command_id:
                continue  # an earlier line of the same command (a merge's): its state is not seen live
            if records[seq].action != "snapshot" or not previous:
                raise FixtureError(f"{self.slug}: seq {seq} ({records[seq].action}) was appended unobserved")
            self.live[seq] = _Snapshot(self.live[previous].files, self.live[previous].rows, records[seq].hash)
        files = projection_files(self.ds.dir)
        rows = pq.read_metadata(self.ds.records_path).num_rows
        self.live[receipt.seq] = _Snapshot(files, rows, receipt.hash)
        if same_view:
            if files[VIEW_FILE] != self.live[previous].files[VIEW_FILE]:
                raise FixtureError(f"{self.slug}: seq {receipt.seq} changed the live view of seq {previous}")
            self.same_view.append([previous, receipt.seq])
        self._check_live()
        return receipt

    def _check_live(self) -> None:
        report = self.ds.verify()
        if not report.ok or report.seq != self.head:
            raise FixtureError(f"{self.slug}: live dataset does not verify: {report.problems}")


@dataclass(frozen=True)
class Case:
    slug: str
    description: str
    build: Callable[[_Builder], None]
    seqs: tuple[int, ...] = ()  # replay targets besides the head and the seqs of `same_view` pairs
    checkpoint: bool = False  # some replay must start from a checkpoint in `_snapshots/`


def _init_import(b: _Builder) -> None:
    b.init(source="usr_es.fixtures", notes="init, then one CSV import")
    rows = [
        (sequence_id(s), s, note)
        for s, note in [("ACGTACGT", "first"), ("TTGACCA", "second"), ("GGGCCCAAATTT", "third")]
    ]
    b.import_text("sequences.csv", "id,sequence,notes\n" + "".join(f"{i},{s},{n}\n" for i, s, n in rows), fmt="csv")
    b.reject("SchemaError", "add_sequences", [{"sequence": "TTTTAAAACC", "id": "x1"}])  # an id not its sha1


def _mixed_case(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.import_text(
        "mixed.csv",
        'sequence\nacgtacgt\nACGTACGT\nAcGtAcGt\n"  gattaca  "\nGATTACA\n',
        fmt="csv",
        source="mixed-case",
    )
    b.add(["mkvLAa", "MKVLAA"], bio_type="protein", alphabet="protein_20", source="api")


def _every_alphabet(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.import_text("dna4.csv", "sequence\nACGT\nacgtt\n", fmt="csv", bio_type="dna", alphabet="dna_4")
    b.import_text("dna5.fasta", ">r1 first\nACGTN\nNNAC\n>r2\nnnacgt\n", fmt="fasta", bio_type="dna", alphabet="dna_5")
    b.import_text(
        "rna4.jsonl", '{"sequence": "ACGU"}\n{"sequence": "uuggcc"}\n', fmt="jsonl", bio_type="rna", alphabet="rna_4"
    )
    b.import_parquet("rna5.parquet", pa.table({"sequence": ["ACGUN", "nnnu"]}), bio_type="rna", alphabet="rna_5")
    b.add(["MKTAYIAKQR", "acdefghiklmnpqrstvwy"], bio_type="protein", alphabet="protein_20", source="api")
    b.add(
        [
            {"sequence": "MKX", "bio_type": "protein", "alphabet": "protein_21"},
            {"sequence": "xxmk", "bio_type": "protein", "alphabet": "protein_21"},
            {"sequence": "ACGTN", "bio_type": "dna", "alphabet": "dna_5"},
        ],
        source="per-row-labels",
    )


def _rejected(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.add(["ACGT", "GGCC"], command_id="fixture-first")
    b.reject("AlphabetError", "add_sequences", ["TTTT", "ACXT"])
    b.reject("AlphabetError", "add_sequences", ["ACGU"], bio_type="dna", alphabet="rna_4")
    b.reject("SchemaError", "add_sequences", [{"sequence": "ACGT", "bio_type": "virus", "alphabet": "dna_4"}])
    b.reject("SchemaError", "add_sequences", ["CATG", "   "])
    b.reject("DuplicateIDError", "add_sequences", ["GGCC", "CCCC"])
    b.reject("DuplicateIDError", "add_sequences", ["AAAA", "aaaa", "AAAA "])
    b.reject("ConcurrencyError", "add_sequences", ["CATCAT"], expected_seq=1)
    b.reject("DatasetExists", "init", source="again")
    b.add(["CATCAT"], expected_seq=2)


def _idempotent_retry(b: _Builder) -> None:
    b.init(source="usr_es.fixtures", command_id="fixture-init")
    b.retry(1, "init", source="usr_es.fixtures", command_id="fixture-init")
    rows = ["ACGTACGT", "TTTT"]
    b.add(rows, command_id="fixture-retry-1")
    b.retry(2, "add_sequences", rows, command_id="fixture-retry-1")
    b.retry(2, "add_sequences", ["GGGG"], command_id="fixture-retry-1")
    b.retry(2, "add_sequences", rows, command_id="fixture-retry-1", expected_seq=1)
    b.add(["GGGG"], command_id="fixture-retry-2")
    b.retry(2, "add_sequences", rows, command_id="fixture-retry-1")
    b.retry(3, "add_sequences", ["GGGG"], command_id="fixture-retry-2")


def _torn_tail(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.add(["ACGTAC", "GGTTAA"])
    b.tear(["CCCCGGGG"])


def _replay_until(b: _Builder) -> None:
    b.init(source="usr_es.fixtures", notes="five events; replay to each")
    b.import_text("batch1.csv", "sequence\nAAAACCCC\nCCCCGGGG\n", fmt="csv")
    b.add(["GGGGTTTT"], source="batch-2")
    b.import_text("batch3.fasta", ">a\nTTTTAAAA\n>b\nACACACAC\n", fmt="fasta")
    b.add(["ACACACAC", "GTGTGTGT"], source="batch-4", on_conflict="skip")


def _on_conflict_skip(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.add(["AAAA", "CCCC", "GGGG"])
    b.add([" CCCC", "TTTT", "tttt", "TTTT ", "GGGG", "ACGT"], on_conflict="skip", source="skip")


def _skip_all(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.add(["AAAA", "CCCC"])
    b.add(["CCCC", "AAAA", "AAAA"], on_conflict="skip", source="all-known")
    b.add(["GGGG"])


def _registry_change(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.add(["ACGT"])
    b.register("extra", "extra__label:string,extra__when:timestamp[us, UTC]")
    b.add(["TTGA"], source="after-register")


# -- overlays, tombstones, state, maintenance (issue 3) -----------------------------------------
FEAT = "feat__score:float64,feat__vec:list<float64>,feat__label:string,feat__n:int64"
A, B, C, D, E = "ACGTAC", "GGTTAA", "CCCCGG", "TTTTAA", "GATTACA"
IA, IB, IC, ID, IE = (sequence_id(s) for s in (A, B, C, D, E))


def _feat_dataset(b: _Builder, sequences: tuple[str, ...] = (A, B, C, D)) -> None:
    """Namespace `feat` registered, dataset initialized (seq 1), `sequences` added (seq 2)."""
    b.register("feat", FEAT)
    b.init(source="usr_es.fixtures")
    b.add(list(sequences), source="seed")


def _attach_by_id(b: _Builder) -> None:
    _feat_dataset(b)
    b.attach(
        "vec.csv",
        f'id,score,vec\n{IA},0.5,"[1.0, 2.5]"\n{IB},1.25,[]\n{IC},,"[-3e2, 0]"\n',
        namespace="feat",
        note="list<float64> from JSON text",
        metrics={"rows_incoming": 3, "rows_written": 3, "rows_missing": 0},
    )
    b.attach(
        "labels.jsonl",
        f'{{"id": "{IA}", "feat__label": "alpha", "n": 3}}\n{{"id": "{ID}", "feat__label": "delta", "n": -1}}\n',
        namespace="feat",
    )
    b.attach("pick.csv", f"id,score,vec,label\n{ID},7.5,[0.125],ignored\n", namespace="feat", columns=["vec", "score"])
    table = pa.table({"id": [IB], "feat__vec": pa.array([[4.0, 5.0, 6.0]], pa.list_(pa.float64()))})
    b.run("write_overlay", "feat", table, allow_overwrite=True, note="API table")


def _attach_by_sequence_keys(b: _Builder) -> None:
    b.register("feat", FEAT)
    b.init(source="usr_es.fixtures")
    b.add(["ACGTACGT", "ggccaatt", "TTAACCGG"], source="seed")
    b.attach("by-seq.csv", "sequence,score\nACGTACGT,1.5\nggccaatt,2.5\n", namespace="feat", key="sequence")
    b.attach(
        "by-norm.csv",
        'seq,label\n"  TTAACCGG ",padded\nACGTACGT,exact\n',
        namespace="feat",
        key="sequence_norm",
        key_col="seq",
    )
    b.attach(
        "by-ci.csv",
        'sequence,vec\nGGCCAATT,"[0.25]"\nacgtacgt,"[1, 2]"\nttaaccgg,[]\n',
        namespace="feat",
        key="sequence_ci",
    )
    b.reject("InvalidInput", "attach", input=("case.csv", "sequence,n\nggccaatt,1\nGGCCAATT,2\n"), namespace="feat",
             key="sequence")  # fmt: skip


def _attach_overwrite(b: _Builder) -> None:
    _feat_dataset(b)
    b.attach("s1.csv", f"id,score\n{IA},1.0\n{IB},2.0\n", namespace="feat")
    busy = ("busy.csv", f"id,score\n{IA},5.0\n{IC},3.0\n")
    b.reject("NamespaceError", "attach", input=busy, namespace="feat")
    b.attach("s2.csv", f"id,score\n{IB},9.0\n{IC},3.0\n", namespace="feat", allow_overwrite=True)
    b.attach("clear.csv", f"id,score,label\n{IB},,cleared\n", namespace="feat", allow_overwrite=True)
    b.attach("label.csv", f"id,label\n{IA},kept-score\n{ID},new\n", namespace="feat")
    b.attach("refill.csv", f"id,score\n{IB},4.0\n", namespace="feat", note="a cleared cell is free again")
    b.reject("NamespaceError", "attach", input=busy, namespace="feat")


def _attach_allow_missing(b: _Builder) -> None:
    b.register("feat", FEAT)
    b.init(source="usr_es.fixtures")
    b.add([A, B, C], source="seed")
    partly = ("partly.csv", f"sequence,score\n{A},1.0\nAAAAAAAA,2.0\n{C},3.0\nCCCCCCCC,4.0\n")
    b.reject("InvalidInput", "attach", input=partly, namespace="feat", key="sequence")
    b.attach(partly[0], partly[1], namespace="feat", key="sequence", allow_missing=True,
             metrics={"rows_incoming": 4, "rows_written": 2, "rows_missing": 2})  # fmt: skip
    unknown = sequence_id("TTTTTTTT")
    b.attach("none.csv", f"id,label\n{unknown},x\n", namespace="feat", allow_missing=True,
             metrics={"rows_incoming": 1, "rows_written": 0, "rows_missing": 1})  # fmt: skip
    b.run("delete", [IB, unknown], allow_missing=True, reason="gone", metrics={"rows_written": 1, "rows_missing": 1})
    b.run("set_state", [IA, unknown], qc_status="fail", allow_missing=True, metrics={"rows_missing": 1})
    b.noop("delete", [unknown], allow_missing=True)
    b.reject("NotFound", "restore", [IB, unknown])


def _overlay_compaction(b: _Builder) -> None:
    _feat_dataset(b)
    b.attach("p1.csv", f"id,score,label\n{IA},1.0,a\n{IB},2.0,b\n", namespace="feat")
    b.attach("p2.csv", f"id,score\n{IB},20.0\n{IC},3.0\n", namespace="feat", allow_overwrite=True)
    b.attach("p3.csv", f"id,label\n{IA},\n{IC},c\n{ID},d\n", namespace="feat", allow_overwrite=True)
    b.attach("p4.csv", f'id,vec\n{IA},"[1, 2]"\n', namespace="feat")
    b.run("compact_overlay", "feat", same_view=True)
    b.attach("p5.csv", f"id,score,n\n{ID},4.0,4\n{IA},,1\n", namespace="feat", allow_overwrite=True)
    b.run("compact_overlay", "feat", same_view=True)
    b.noop("compact_overlay", "feat")
    b.reject("NotFound", "compact_overlay", "mock")


def _delete_restore_cycles(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.add([A, B, C, D, E], source="seed")
    b.run("delete", [IA], reason="bad read")
    b.run("delete", [IB])
    b.run("restore", [IA])
    b.run("delete", [IC, IA], reason="again")
    b.run("restore", [IB, IC])
    b.run("delete", [ID], reason="new id, sixth event")
    b.reject("NotFound", "delete", [sequence_id("AAAA")])
    b.reject("InvalidInput", "delete", [IE, IE])


def _state_set_clear(b: _Builder) -> None:
    b.init(source="usr_es.fixtures")
    b.add([A, B, C, D], source="seed")
    b.run("set_state", [IA, IB], masked=True)
    b.run("set_state", [IA], qc_status="pass")
    b.run("set_state", [IB, IC], split="train", lineage=["parent-1", "parent-2"])
    b.run("set_state", [IC], supersedes=IA, qc_status="warn")
    b.run("clear_state", [IA])
    b.run("set_state", [IA, ID], masked=False, split="holdout")
    b.run("compact_overlay", "usr_state", same_view=True)
    b.run("set_state", [IB], masked=False)
    b.reject("InvalidInput", "set_state", [IA], qc_status="great")
    b.reject("InvalidInput", "set_state", [IA], split="dev")
    b.reject("InvalidInput", "set_state", [IA])


def _materialize_keep(b: _Builder) -> None:
    _feat_dataset(b)
    b.attach("s.csv", f"id,score\n{IA},1.0\n{IB},2.0\n", namespace="feat")
    b.attach("l.csv", f"id,label\n{IB},b\n{IC},c\n", namespace="feat")
    b.run("delete", [ID], reason="hidden, kept in the base")
    b.run("materialize", same_view=True, metrics={"overlays": 1, "columns_added": 2, "rows_dropped": 0})
    b.attach("later.csv", f"id,score\n{IC},3.0\n", namespace="feat")
    b.run("compact_overlay", "feat", same_view=True)
    b.attach("null.csv", f"id,score\n{IA},\n", namespace="feat", allow_overwrite=True, note="null over a base value")
    b.reject("NamespaceError", "attach", input=("again.csv", f"id,score\n{IB},5.0\n"), namespace="feat")


def _materialize_drop_overlays(b: _Builder) -> None:
    _feat_dataset(b)
    b.attach("s.csv", f'id,score,vec\n{IA},1.0,"[1, 2]"\n{IB},2.0,\n', namespace="feat")
    b.run("set_state", [IA], masked=True)
    b.run("materialize", namespaces=["feat"], drop_overlays=True, same_view=True)
    b.attach("after.csv", f"id,score\n{IC},3.0\n{IB},20.0\n", namespace="feat", allow_overwrite=True)
    b.attach("fresh.csv", f"id,label\n{ID},d\n", namespace="feat")
    b.reject("NamespaceError", "attach", input=("busy.csv", f"id,score\n{IA},5.0\n"), namespace="feat")
    b.run("materialize", drop_overlays=True, same_view=True)
    b.noop("materialize")


def _materialize_archive_overlays(b: _Builder) -> None:
    _feat_dataset(b)
    b.attach("s.csv", f"id,score\n{IA},1.0\n{IB},2.0\n", namespace="feat")
    b.attach("v.csv", f'id,vec\n{IC},"[0.5]"\n', namespace="feat")
    b.run("set_state", [IB], qc_status="fail", split="test")
    b.run("materialize", archive_overlays=True, snapshot_before=True, same_view=True)
    b.attach("again.csv", f"id,score\n{IC},3.0\n", namespace="feat")
    b.reject("InvalidInput", "materialize", drop_overlays=True, archive_overlays=True)


def _materialize_drop_deleted(b: _Builder) -> None:
    _feat_dataset(b, (A, B, C, D, E))
    b.attach("s.csv", f"id,score\n{IA},1.0\n{IB},2.0\n{IC},3.0\n", namespace="feat")
    b.run("delete", [IB, ID], reason="drop me")
    b.run("materialize", drop_deleted=True, same_view=True, metrics={"rows": 3, "rows_dropped": 2})
    b.reject("NotFound", "restore", [IB])
    b.run("delete", [IE])
    b.run("materialize", drop_deleted=True, drop_overlays=True, same_view=True, metrics={"rows_dropped": 1})
    b.noop("materialize", drop_deleted=True)


def _reimport_after_drop(b: _Builder) -> None:
    _feat_dataset(b, (A, B, C))
    b.attach("s.csv", f"id,score\n{IA},1.0\n{IB},2.0\n", namespace="feat")
    b.run("set_state", [IB], qc_status="fail")
    b.run("delete", [IB], reason="retired")
    b.run("materialize", namespaces=[], drop_deleted=True, same_view=True, metrics={"rows_dropped": 1})
    b.add([B], source="re-imported: a new record, no tombstone, no old score or state")
    b.attach("t.csv", f"id,score\n{IB},9.0\n", namespace="feat")
    b.run("compact_overlay", "feat", same_view=True)


def _snapshot_replay(b: _Builder) -> None:
    _feat_dataset(b, (A, B, C))
    b.attach("s.csv", f"id,score\n{IA},1.0\n{IB},2.0\n", namespace="feat")
    b.run("delete", [IC], reason="before the snapshot")
    b.run("snapshot", same_view=True)
    b.attach("l.csv", f"id,label\n{IA},after\n", namespace="feat")
    b.run("set_state", [IB], masked=True)
    b.run("materialize", same_view=True)
    b.run("snapshot", same_view=True)
    b.add([D], source="after two snapshots")


def _snapshot_tampered(b: _Builder) -> None:
    _feat_dataset(b, (A, B, C))
    b.attach("s.csv", f"id,score\n{IA},1.0\n{IB},2.0\n", namespace="feat")
    b.run("snapshot")
    b.run("delete", [IC])
    b.attach("l.csv", f"id,label\n{IB},b\n{IC},c\n", namespace="feat")
    b.run("snapshot")
    b.run("set_state", [IA], split="val")
    b.tamper_checkpoint(7, "_derived/feat/part-0000000006.parquet")


def _attach_rejected_retry(b: _Builder) -> None:
    _feat_dataset(b, (A, B, C))
    first = ("first.csv", f"id,score\n{IA},1.0\n")
    b.attach(*first, namespace="feat", command_id="fixture-attach-1")
    b.retry(3, "attach", input=first, namespace="feat", command_id="fixture-attach-1")
    b.retry(3, "attach", input=("other.csv", f"id,label\n{IB},x\n"), namespace="feat", command_id="fixture-attach-1")
    ok = f"id,score\n{IB},2.0\n"
    b.reject("NamespaceError", "attach", input=("ns.csv", ok), namespace="nope")
    b.reject("NamespaceError", "attach", input=("reserved.csv", f"id,masked\n{IB},true\n"), namespace="usr_state")
    b.reject("NamespaceError", "attach", input=("col.csv", f"id,bogus\n{IB},1\n"), namespace="feat")
    b.reject("NamespaceError", "attach", input=("other-ns.csv", f"id,mock__score\n{IB},1\n"), namespace="feat")
    b.reject("NamespaceError", "attach", input=("essential.csv", f"id,sequence\n{IB},ACGT\n"), namespace="feat")
    b.reject("SchemaError", "attach", input=("type.csv", f"id,score\n{IB},high\n"), namespace="feat")
    b.reject("SchemaError", "attach", input=("dup.csv", f"id,score\n{IB},1\n{IB},2\n"), namespace="feat")
    b.reject("InvalidInput", "attach", input=("missing.csv", f"id,score\n{sequence_id('AAAA')},1\n"), namespace="feat")
    b.reject("NamespaceError", "attach", input=("busy.csv", f"id,score\n{IA},5.0\n"), namespace="feat")
    b.reject("ConcurrencyError", "attach", input=("stale.csv", ok), namespace="feat", expected_seq=2)
    b.attach("second.csv", ok, namespace="feat", command_id="fixture-attach-2", expected_seq=3)
    b.retry(3, "attach", input=first, namespace="feat", command_id="fixture-attach-1")
    b.retry(4, "attach", input=("second.csv", ok), namespace="feat", command_id="fixture-attach-2")


def _dedupe(b: _Builder) -> None:
    lower, mixed = A.lower(), "AcGtAc"
    _feat_dataset(b, (A, B, lower, C, mixed))
    il, im = sequence_id(lower), sequence_id(mixed)
    b.attach("s.csv", f"id,score\n{IA},1.0\n{il},2.0\n{im},3.0\n{IB},4.0\n", namespace="feat")
    b.run("set_state", [IA, im], qc_status="pass")
    b.run("delete", [IC], reason="hidden, not a duplicate")
    b.noop("dedupe", key="sequence")  # every sequence differs in case: no duplicate
    b.reject("InvalidInput", "dedupe", key="name")
    b.run("dedupe", key="sequence_ci", keep="keep-last", metrics={"groups": 1, "rows_dropped": 2})
    b.noop("dedupe", key="sequence_norm")
    b.add([A], source="re-imported after the dedupe: a new record, no old score or state")
    b.attach("t.csv", f"id,score\n{IA},9.0\n", namespace="feat")
    b.add(["UUUUUU"], bio_type="rna", alphabet="rna_4")
    b.reject("SchemaError", "dedupe", key="sequence_ci")


def _overlay_remove(b: _Builder) -> None:
    _feat_dataset(b, (A, B, C))
    b.register("extra", "extra__label:string")
    b.attach("s.csv", f"id,score\n{IA},1.0\n{IB},2.0\n", namespace="feat")
    b.attach("l.csv", f"id,label\n{IB},b\n", namespace="feat")
    b.attach("x.csv", f"id,label\n{IC},c\n", namespace="extra")
    b.run("materialize", namespaces=["extra"], same_view=True)
    b.run("remove_overlay", "feat", mode="archive")
    b.attach("again.csv", f"id,score\n{IA},5.0\n", namespace="feat")
    b.run("remove_overlay", "extra", mode="delete", same_view=True)  # its values are in the base already
    b.run("remove_overlay", "feat")
    b.noop("remove_overlay", "feat", mode="delete")
    b.noop("remove_overlay", "feat", mode="archive")
    b.reject("NotFound", "remove_overlay", "feat")
    b.reject("NamespaceError", "remove_overlay", "usr_state", mode="delete")
    b.reject("InvalidInput", "remove_overlay", "feat", mode="shred")


def _registry_freeze(b: _Builder) -> None:
    _feat_dataset(b, (A, B))
    b.attach("s.csv", f"id,score\n{IA},1.0\n", namespace="feat")
    b.register("extra", "extra__label:string")
    b.run("freeze_registry", same_view=True)
    b.attach("x.csv", f"id,label\n{IB},registered later\n", namespace="extra")
    b.run("materialize", namespaces=["extra"], same_view=True)


def _merge(b: _Builder) -> None:
    """A source dataset in the same root, merged three ways; the source changes after the first merge, and
    the destination's log alone still replays every state."""
    _feat_dataset(b, (A, B))
    src = Dataset.open(b.ds.root, "fixtures/merge-src")
    src.init(source="usr_es.fixtures")
    src.add_sequences([B, C, A.lower()], source="src seed")  # B: same id; A.lower(): same up to case
    src.attach(b._input("src.csv", f"id,score\n{IB},8.0\n{IC},3.0\n"), namespace="feat")
    b.run("merge", src, columns="require-same", metrics={"rows_src": 3, "casefold_skipped": 2, "rows_added": 1})
    b.attach("s.csv", f"id,score\n{IA},1.0\n{IB},2.0\n", namespace="feat")
    src.delete([IC])  # the source changes: the destination keeps what it merged
    src.add_sequences([D], source="src later")
    src.write_overlay("feat", pa.table({"id": [ID], "feat__score": [4.0]}))
    src.maintenance.materialize()  # its base grows feat__ columns
    b.run(
        "merge",
        src,
        columns="union",
        if_duplicate="prefer-src",
        avoid_casefold_dups=False,
        carry_namespaces=["feat"],
        metrics={"rows_incoming": 2, "rows_written": 2},  # the command's last line: the carried values
    )
    b.noop("dedupe", key="id")


def _rebase(b: _Builder) -> None:
    """Two machines append after a common seq; `pull --rebase` puts this copy's commands after the other's
    events: an attach and an import land again, an import of a sequence the other side added meanwhile is
    left out, and a `rebase` line records where each went."""
    _feat_dataset(b, (A, B))
    remote, cluster = b.cluster()
    cluster.add_sequences([C, E], source="made on the cluster")
    cluster.attach(b.work / b._input("c.csv", f"id,score\n{IC},7.0\n{IA},0.5\n"), namespace="feat")
    b.seen_on(cluster)  # seq 4: the cluster's head, which this copy's log holds after the rebase
    b.attach("s.csv", f"id,score\n{IB},2.0\n", namespace="feat")
    b.add([C], source="the laptop's import of C: the cluster added it first")
    b.add([D], source="laptop")
    b.pull_rebase(remote, reapplied=2, left_out=1)
    b.attach("after.csv", f"id,score\n{ID},4.0\n", namespace="feat", allow_overwrite=True)


CASES: tuple[Case, ...] = (
    Case("init-import", "init, a CSV import with its ids and an extra column; wrong ids refused", _init_import, (1,)),
    Case("mixed-case", "lower/upper/mixed case kept, ids case-sensitive, whitespace trimmed", _mixed_case, (2,)),
    Case(
        "every-alphabet",
        "dna_4, dna_5, rna_4, rna_5, protein_20, protein_21 over five input forms",
        _every_alphabet,
        (4,),
    ),
    Case(
        "rejected-command",
        "rejected commands (alphabet, schema, duplicates, stale seq, re-init) append nothing",
        _rejected,
        (2,),
    ),
    Case(
        "idempotent-retry",
        "the same command_id sent again returns the original receipt: one event",
        _idempotent_retry,
        (2,),
    ),
    Case("torn-tail", "the log ends with half a line: replay ignores it and equals the prefix", _torn_tail, (1,)),
    Case("replay-until-mid-log", "five events; replay --until each seq", _replay_until, (1, 2, 3, 4)),
    Case("on-conflict-skip", "known and repeated sequences skipped, the first of each kept", _on_conflict_skip, (2,)),
    Case("skip-all-duplicates", "an import that skips every row: an event without payload", _skip_all, (2, 3)),
    Case("registry-change", "a namespace registered between imports: a second frozen registry", _registry_change, (2,)),
    Case(
        "attach-by-id",
        "attach by id from csv (list<float64> as JSON text, empty cell = null), jsonl, --columns, write_overlay",
        _attach_by_id,
        (2, 3, 4, 5),
    ),
    Case(
        "attach-by-sequence-keys",
        "attach by sequence, sequence_norm (padded keys, --key-col) and sequence_ci (case folded)",
        _attach_by_sequence_keys,
        (3, 4),
    ),
    Case(
        "attach-overwrite",
        "--allow-overwrite replaces values, an explicit null clears one, a cleared cell needs no overwrite",
        _attach_overwrite,
        (3, 4, 5, 6),
    ),
    Case(
        "attach-allow-missing",
        "--allow-missing skips unknown keys and counts them (rows_missing); an all-missing attach writes no part",
        _attach_allow_missing,
        (3, 4, 5),
    ),
    Case(
        "overlay-compaction",
        "overlapping parts (overwrites, explicit nulls) compacted twice: the live view is unchanged",
        _overlay_compaction,
        (5, 6, 7, 8),
    ),
    Case(
        "delete-restore-cycles",
        "delete/restore repeated with new ids each time; deleted rows hidden from the view",
        _delete_restore_cycles,
        (3, 4, 5, 6, 7),
    ),
    Case(
        "state-set-clear",
        "usr_state partial updates, clear, set again, compaction (masked reads false when unset)",
        _state_set_clear,
        (3, 4, 5, 6, 7, 8, 9),
    ),
    Case(
        "materialize-keep",
        "materialize keeping overlays, then attach/compact/null-clear over materialized columns",
        _materialize_keep,
        (5, 6, 7, 8),
    ),
    Case(
        "materialize-drop-overlays",
        "materialize --drop-overlays, attach again after it, materialize again, then a no-op",
        _materialize_drop_overlays,
        (4, 5, 6),
    ),
    Case(
        "materialize-archive-overlays",
        "materialize --archive-overlays --snapshot-before (checkpoint), then a new overlay",
        _materialize_archive_overlays,
        (5, 6, 7),
        checkpoint=True,
    ),
    Case(
        "materialize-drop-deleted",
        "materialize --drop-deleted removes tombstoned rows (twice, once with --drop-overlays)",
        _materialize_drop_deleted,
        (4, 5, 6),
    ),
    Case(
        "reimport-after-drop-deleted",
        "materialize --drop-deleted purges the dropped id's overlay history; re-importing it starts clean",
        _reimport_after_drop,
        (5, 6, 7),
    ),
    Case(
        "snapshot-replay",
        "two snapshots (checkpoints in _snapshots/); replay before, at and across them",
        _snapshot_replay,
        (4, 5, 6, 7, 8, 9),
        checkpoint=True,
    ),
    Case(
        "snapshot-tampered",
        "the newer checkpoint has a tampered part file: ignored (noted), the older one is used",
        _snapshot_tampered,
        (4, 6, 7),
        checkpoint=True,
    ),
    Case(
        "attach-rejected-retry",
        "rejected attaches (namespace, column, type, duplicate, missing, overwrite, stale) and attach retries",
        _attach_rejected_retry,
        (3,),
    ),
    Case(
        "registry-freeze",
        "registry-freeze after a namespace is registered, then an overlay of it materialized",
        _registry_freeze,
        (3, 4, 5),
    ),
    Case(
        "overlay-remove",
        "overlay-remove archive, delete and error modes, a no-op and refusals; a later attach starts a new part",
        _overlay_remove,
        (6, 7, 8),
    ),
    Case(
        "dedupe",
        "dedupe by sequence_ci keeps the last of each group, purges the others' overlay rows; a re-import starts clean",
        _dedupe,
        (5, 6),
    ),
    Case(
        "merge",
        "merge by the original's rules from a source that changes afterwards: case-insensitive skip, then "
        "union columns with prefer-src and a carried namespace (three lines of one command)",
        _merge,
        (3, 4),
    ),
    Case(
        "pull-rebase",
        "pull --rebase: this copy's attach and import decided again after the other copy's events, an import "
        "the other side made first left out, and the `rebase` line",
        _rebase,
        (2, 4, 7),
    ),
)


@contextlib.contextmanager
def _environment(name: str) -> Iterator[None]:
    """A fixed actor, and no automatic checkpoints (only the ones a case takes are committed)."""
    settings = {
        "USR_ACTOR_TOOL": "usr_es.fixtures",
        "USR_ACTOR_RUN_ID": name,
        "USR_CHECKPOINT_EVERY": "0",
        "USR_CHECKPOINT_BYTES": "0",
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _copy_committed(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for name in COMMITTED:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dst / name)  # copies: checkpoint hard links become independent files
        elif path.is_file():
            shutil.copy2(path, dst / name)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _differing(actual: dict[str, str], expected: dict[str, str]) -> list[str]:
    return sorted(k for k in actual.keys() | expected.keys() if actual.get(k) != expected.get(k))


def build_case(number: int, case: Case, staged: Path, scratch: Path) -> str:
    """Build one case under `staged/<nnn>-<slug>/`; return its directory name."""
    name = f"{number:03d}-{case.slug}"
    if not CASE_NAME.match(name):
        raise FixtureError(f"bad case name {name!r}")
    work = scratch / name
    work.mkdir()
    with contextlib.chdir(work), _environment(f"fixtures-{name}"):
        builder = _Builder(work, case.slug)
        case.build(builder)
        builder.finish()
        target = staged / name
        dataset = target / "dataset"
        _copy_committed(builder.ds.dir, dataset)
        head = builder.head
        seqs = sorted(set(case.seqs) | {head} | {seq for pair in builder.same_view for seq in pair})
        committed = Dataset.at(dataset)
        replays: dict[str, dict[str, int | None]] = {}
        for seq in seqs:
            live = builder.live.get(seq)
            if live is None:
                raise FixtureError(f"{name}: seq {seq} was not observed live")
            out = work / f"replay-{seq}"
            result = committed.log.replay(seq, out)
            files = projection_files(out)
            if files != live.files:
                raise FixtureError(f"{name}: replay of seq {seq} differs from live in {_differing(files, live.files)}")
            report = Dataset.at(out).verify()
            if not report.ok or report.head_hash != live.hash or result.rows + result.deleted != live.rows:
                raise FixtureError(f"{name}: replay of seq {seq} does not verify: {report.problems}")
            if result.from_checkpoint in builder.tampered or (
                any(t <= seq for t in builder.tampered) and not result.notes
            ):
                raise FixtureError(f"{name}: replay of seq {seq} did not ignore the tampered checkpoint")
            replays[str(seq)] = {"from_checkpoint": result.from_checkpoint, "ignored_checkpoints": len(result.notes)}
            expected = target / "expected" / f"seq-{seq}"
            for rel, text in files.items():
                _write(expected / rel, text)
            _write(
                expected / STATE_FILE,
                dump_json({"seq": seq, "head_hash": report.head_hash, "rows": result.rows + result.deleted}),
            )
        if case.checkpoint != any(r["from_checkpoint"] for r in replays.values()):
            raise FixtureError(f"{name}: replays {replays} do not match checkpoint={case.checkpoint}")
        rebuilt = work / "rebuilt"
        shutil.copytree(dataset, rebuilt)
        rebuild = Dataset.at(rebuilt).maintenance.rebuild()
        if projection_files(rebuilt) != builder.live[head].files:
            raise FixtureError(f"{name}: rebuild differs from the live projection at seq {head}")
        if len(rebuild.notes) != replays[str(head)]["ignored_checkpoints"]:
            raise FixtureError(f"{name}: rebuild notes {rebuild.notes} differ from the head replay's")
        if sorted(p.name for p in dataset.iterdir()) != sorted(p for p in COMMITTED if (dataset / p).exists()):
            raise FixtureError(f"{name}: replay wrote into the committed dataset")
        again = work / "reissue"
        shutil.copytree(dataset, again)
        log = (again / LOG_FILE).read_bytes()
        # Every mutation needs its root's registry (as the test gives its copy): the dataset's own, frozen.
        frozen = Dataset.at(again).log.events()[-1].registry_hash
        shutil.copy(again / REGISTRY_DIR / f"registry.{frozen}.yaml", work / "registry.yaml")
        for item in builder.reissue:  # what the test repeats must hold at the head, not only when it was sent
            got, receipt = outcome_of(Dataset.at(again), item, work / "reissue-inputs")
            if got != item["outcome"] or (receipt is not None and receipt.replayed and receipt.seq != item["seq"]):
                raise FixtureError(f"{name}: at the head, {item} gives {got} ({receipt})")
        if (again / LOG_FILE).read_bytes() != log:
            raise FixtureError(f"{name}: a reissued command changed the log at the head")
    info = {
        "name": name,
        "description": case.description,
        "generator": GENERATOR,
        "expect": {
            "head_seq": head,
            "head_hash": builder.live[head].hash,
            "rows": builder.live[head].rows,
            "seqs": seqs,
            "torn_tail_bytes": builder.torn_tail_bytes,
            "replays": replays,
            "same_view": builder.same_view,
            "reissue": builder.reissue,
        },
    }
    _write(target / CASE_FILE, dump_json(info))
    return name


def generate(out_dir: Path, cases: tuple[Case, ...] = CASES, *, only: set[int] | None = None) -> list[str]:
    """Regenerate every case into `out_dir`, replacing all `<nnn>-<case>` directories there; with `only`,
    just the cases of those numbers (the others keep their committed logs: a case changes only when its
    expected behaviour does)."""
    out_dir = out_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="usr_es-fixtures-") as tmp:
        scratch = Path(tmp)
        staged = scratch / "staged"
        staged.mkdir()
        chosen = [(i, case) for i, case in enumerate(cases, start=1) if only is None or i in only]
        names = [build_case(i, case, staged, scratch) for i, case in chosen]
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in sorted(out_dir.iterdir()):
            if old.is_dir() and CASE_NAME.match(old.name) and (only is None or int(old.name[:3]) in only):
                shutil.rmtree(old)
        for name in names:
            shutil.copytree(staged / name, out_dir / name)
    return names


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    only: set[int] | None = None
    if len(args) == 3 and args[1] == "--only":
        only = {int(n) for n in args[2].split(",")}
        args = args[:1]
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m tools.replay_fixtures OUT_DIR [--only N,N,...]", file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    names = generate(out_dir, only=only)
    pairs = sum(len(list((out_dir / n / "expected").glob("seq-*"))) for n in names)
    size = sum(p.stat().st_size for n in names for p in (out_dir / n).rglob("*") if p.is_file())
    print(f"wrote {len(names)} replay fixture case(s), {pairs} (case, seq) pair(s), {size} bytes into {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
