"""Golden replay fixtures: `python -m usr_es.fixtures DIR` (`make fixtures`) rebuilds every case from scratch.

Format. `DIR/<nnn>-<case>/` holds `case.json` ({name, description, generator, expect}), `dataset/` (the
committed truth only: `.events.log`, `_payloads/`, `_registry/`; never the `records.parquet`/`meta.md`
caches) and `expected/seq-<N>/` for every seq worth replaying to (always the head), each with
`records.schema.json` (fields as name, registry type string and nullability, plus the deterministic Parquet
key/value metadata: the `usr:*` keys and `usr_es:seq|offset|hash|projector`), `records.rows.jsonl` (one
canonical JSON object per row in log order: sorted keys, RFC 3339 timestamps with microseconds and `Z`)
and `state.json` ({seq, head_hash, rows}). All JSON has sorted keys and no clock except log timestamps.
Expected files come from `Dataset.replay` of the committed `dataset/` and must equal the live projection
captured after each accepted command. `expect` holds head_seq, head_hash, rows, the expected seqs,
torn_tail_bytes and `reissue`: API calls the test repeats on a copy, which must be rejected with the named
error (or answered as a retry of `seq`) without changing the log. Fixtures are never edited by hand.
"""

from __future__ import annotations

import base64
import contextlib
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

from . import __version__
from .commands import InputFormat
from .dataset import Dataset
from .errors import UsrError
from .log import LOG_FILE
from .projectors import PROJECTOR_VERSION
from .registry import format_type, register_namespace, split_columns_spec
from .results import Receipt
from .storage import PAYLOAD_DIR, RECORDS_FILE, REGISTRY_DIR

GENERATOR = f"usr_es.fixtures {__version__} (projector {PROJECTOR_VERSION})"
CASE_NAME = re.compile(r"^[0-9]{3}-[a-z0-9]+(?:-[a-z0-9]+)*$")
SCHEMA_FILE = "records.schema.json"
ROWS_FILE = "records.rows.jsonl"
STATE_FILE = "state.json"
CASE_FILE = "case.json"
#: What `dataset/` may hold: the log and the immutable artifacts it references.
COMMITTED = (LOG_FILE, PAYLOAD_DIR, REGISTRY_DIR)

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
    """The text of `records.rows.jsonl`: one canonical row per line (empty for no rows)."""
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
    """(canonical schema, canonical rows) of a `records.parquet` file."""
    return canonical_schema(path), canonical_rows(pq.read_table(path))


# -- building a case through the public API --------------------------------------------------
@dataclass(frozen=True)
class _Snapshot:
    schema: dict[str, Any]
    rows: list[str]
    hash: str


@dataclass
class _Builder:
    """Runs one case's commands on a live dataset and records what the fixture must expect."""

    work: Path
    slug: str
    ds: Dataset = field(init=False)
    live: dict[int, _Snapshot] = field(default_factory=dict)
    reissue: list[dict[str, Any]] = field(default_factory=list)
    torn_tail_bytes: int = 0

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
        """Import an input file written from `text` (its relative path is what the log records)."""
        path = Path("inputs") / name
        (self.work / "inputs").mkdir(exist_ok=True)
        (self.work / path).write_text(text, encoding="utf-8")
        return self._accept(self.ds.import_file(path, fmt=fmt, **kwargs))

    def import_parquet(self, name: str, table: pa.Table, **kwargs: Any) -> Receipt:
        path = Path("inputs") / name
        (self.work / "inputs").mkdir(exist_ok=True)
        pq.write_table(table, self.work / path)
        return self._accept(self.ds.import_file(path, fmt="parquet", **kwargs))

    def add(self, rows: list[Any], **kwargs: Any) -> Receipt:
        return self._accept(self.ds.add_sequences(rows, **kwargs))

    def register(self, namespace: str, columns: str) -> None:
        register_namespace(self.ds.root, namespace, split_columns_spec(columns))

    def retry(self, seq: int, rows: list[Any], **kwargs: Any) -> None:
        """Send `add_sequences` again with a command id already in the log: the receipt of `seq`, nothing appended."""
        before = self.ds.log_path.read_bytes()
        receipt = self.ds.add_sequences(rows, **kwargs)
        if not receipt.replayed or receipt.seq != seq or receipt.hash != self.live[seq].hash:
            raise FixtureError(f"{self.slug}: retry {kwargs} did not return the receipt of seq {seq}: {receipt}")
        self._unchanged(before, f"retry {kwargs}")
        self.reissue.append({"op": "add_sequences", "rows": rows, "kwargs": kwargs, "outcome": "replayed", "seq": seq})

    def retry_init(self, seq: int, **kwargs: Any) -> None:
        before = self.ds.log_path.read_bytes()
        receipt = self.ds.init(**kwargs)
        if not receipt.replayed or receipt.seq != seq:
            raise FixtureError(f"{self.slug}: init retry did not return the receipt of seq {seq}: {receipt}")
        self._unchanged(before, "init retry")

    def reject(self, error: str, rows: list[Any] | None, **kwargs: Any) -> None:
        """A command that must fail with `error` and leave the log byte-for-byte unchanged.

        `rows=None` means a second `init`; other rejections are `add_sequences` calls, which the
        test repeats on its copy of the dataset.
        """
        before = self.ds.log_path.read_bytes()
        try:
            if rows is None:
                self.ds.init(**kwargs)
            else:
                self.ds.add_sequences(rows, **kwargs)
        except UsrError as exc:
            if type(exc).__name__ != error:
                raise FixtureError(f"{self.slug}: expected {error}, got {type(exc).__name__}: {exc}") from exc
        else:
            raise FixtureError(f"{self.slug}: expected {error}, but the command was accepted")
        self._unchanged(before, f"rejected {error}")
        if rows is not None:
            self.reissue.append({"op": "add_sequences", "rows": rows, "kwargs": kwargs, "outcome": error})

    def tear(self, rows: list[Any], **kwargs: Any) -> None:
        """Append one more event, then cut its line in half: a writer that died mid-append."""
        self._check_live()
        offset = self.ds.log_path.stat().st_size
        self.ds.add_sequences(rows, **kwargs)
        end = self.ds.log_path.stat().st_size
        keep = offset + (end - offset) // 2
        os.truncate(self.ds.log_path, keep)
        self.torn_tail_bytes = keep - offset

    def finish(self) -> None:
        if not self.torn_tail_bytes:
            self._check_live()

    def _accept(self, receipt: Receipt) -> Receipt:
        if receipt.replayed or receipt.seq != self.head + 1:
            raise FixtureError(f"{self.slug}: expected a new event at seq {self.head + 1}, got {receipt}")
        schema, rows = projection_of(self.ds.records_path)
        self.live[receipt.seq] = _Snapshot(schema, rows, receipt.hash)
        return receipt

    def _unchanged(self, before: bytes, what: str) -> None:
        if self.ds.log_path.read_bytes() != before:
            raise FixtureError(f"{self.slug}: {what} changed the log")

    def _check_live(self) -> None:
        report = self.ds.verify()
        if not report.ok or report.seq != self.head:
            raise FixtureError(f"{self.slug}: live dataset does not verify: {report.problems}")


@dataclass(frozen=True)
class Case:
    slug: str
    description: str
    build: Callable[[_Builder], None]
    seqs: tuple[int, ...] = ()  # replay targets besides the head


def _init_import(b: _Builder) -> None:
    b.init(source="usr_es.fixtures", notes="init, then one CSV import")
    b.import_text(
        "sequences.csv",
        "id,sequence,notes\nx1,ACGTACGT,first\nx2,TTGACCA,second\nx3,GGGCCCAAATTT,third\n",
        fmt="csv",
    )


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
    b.reject("AlphabetError", ["TTTT", "ACXT"])
    b.reject("AlphabetError", ["ACGU"], bio_type="dna", alphabet="rna_4")
    b.reject("SchemaError", [{"sequence": "ACGT", "bio_type": "virus", "alphabet": "dna_4"}])
    b.reject("SchemaError", ["CATG", "   "])
    b.reject("DuplicateIDError", ["GGCC", "CCCC"])
    b.reject("DuplicateIDError", ["AAAA", "aaaa", "AAAA "])
    b.reject("ConcurrencyError", ["CATCAT"], expected_seq=1)
    b.reject("DatasetExists", None, source="again")
    b.add(["CATCAT"], expected_seq=2)


def _idempotent_retry(b: _Builder) -> None:
    b.init(source="usr_es.fixtures", command_id="fixture-init")
    b.retry_init(1, source="usr_es.fixtures", command_id="fixture-init")
    rows = ["ACGTACGT", "TTTT"]
    b.add(rows, command_id="fixture-retry-1")
    b.retry(2, rows, command_id="fixture-retry-1")
    b.retry(2, ["GGGG"], command_id="fixture-retry-1")
    b.retry(2, rows, command_id="fixture-retry-1", expected_seq=1)
    b.add(["GGGG"], command_id="fixture-retry-2")
    b.retry(2, rows, command_id="fixture-retry-1")
    b.retry(3, ["GGGG"], command_id="fixture-retry-2")


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


CASES: tuple[Case, ...] = (
    Case("init-import", "init, then one CSV import (an extra column is ignored)", _init_import, (1,)),
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
)


@contextlib.contextmanager
def _actor(name: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("USR_ACTOR_TOOL", "USR_ACTOR_RUN_ID")}
    os.environ["USR_ACTOR_TOOL"] = "usr_es.fixtures"
    os.environ["USR_ACTOR_RUN_ID"] = name
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
            shutil.copytree(path, dst / name)
        elif path.is_file():
            shutil.copy2(path, dst / name)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def build_case(number: int, case: Case, staged: Path, scratch: Path) -> str:
    """Build one case under `staged/<nnn>-<slug>/`; return its directory name."""
    name = f"{number:03d}-{case.slug}"
    if not CASE_NAME.match(name):
        raise FixtureError(f"bad case name {name!r}")
    work = scratch / name
    work.mkdir()
    with contextlib.chdir(work), _actor(f"fixtures-{name}"):
        builder = _Builder(work, case.slug)
        case.build(builder)
        builder.finish()
    target = staged / name
    dataset = target / "dataset"
    _copy_committed(builder.ds.dir, dataset)
    head = builder.head
    seqs = sorted(set(case.seqs) | {head})
    committed = Dataset.at(dataset)
    for seq in seqs:
        out = work / f"replay-{seq}"
        result = committed.replay(seq, out)
        schema, rows = projection_of(out / RECORDS_FILE)
        live = builder.live[seq]
        if schema != live.schema or rows != live.rows:
            raise FixtureError(f"{name}: replay of seq {seq} differs from the live projection at seq {seq}")
        report = Dataset.at(out).verify()
        if not report.ok or report.head_hash != live.hash or result.rows != len(rows):
            raise FixtureError(f"{name}: replay of seq {seq} does not verify: {report.problems}")
        expected = target / "expected" / f"seq-{seq}"
        _write(expected / SCHEMA_FILE, dump_json(schema))
        _write(expected / ROWS_FILE, dump_rows(rows))
        _write(expected / STATE_FILE, dump_json({"seq": seq, "head_hash": report.head_hash, "rows": result.rows}))
    rebuilt = work / "rebuilt"
    shutil.copytree(dataset, rebuilt)
    Dataset.at(rebuilt).rebuild()
    if projection_of(rebuilt / RECORDS_FILE) != (builder.live[head].schema, builder.live[head].rows):
        raise FixtureError(f"{name}: rebuild differs from the live projection at seq {head}")
    if sorted(p.name for p in dataset.iterdir()) != sorted(p for p in COMMITTED if (dataset / p).exists()):
        raise FixtureError(f"{name}: replay wrote into the committed dataset")
    info = {
        "name": name,
        "description": case.description,
        "generator": GENERATOR,
        "expect": {
            "head_seq": head,
            "head_hash": builder.live[head].hash,
            "rows": len(builder.live[head].rows),
            "seqs": seqs,
            "torn_tail_bytes": builder.torn_tail_bytes,
            "reissue": builder.reissue,
        },
    }
    _write(target / CASE_FILE, dump_json(info))
    return name


def generate(out_dir: Path, cases: tuple[Case, ...] = CASES) -> list[str]:
    """Regenerate every case into `out_dir`, replacing all `<nnn>-<case>` directories there."""
    out_dir = out_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="usr_es-fixtures-") as tmp:
        scratch = Path(tmp)
        staged = scratch / "staged"
        staged.mkdir()
        names = [build_case(i, case, staged, scratch) for i, case in enumerate(cases, start=1)]
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in sorted(out_dir.iterdir()):
            if old.is_dir() and CASE_NAME.match(old.name):
                shutil.rmtree(old)
        for name in names:
            shutil.copytree(staged / name, out_dir / name)
    return names


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m usr_es.fixtures OUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    names = generate(out_dir)
    pairs = sum(len(list((out_dir / n / "expected").glob("seq-*"))) for n in names)
    print(f"wrote {len(names)} replay fixture case(s), {pairs} (case, seq) pair(s) into {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
