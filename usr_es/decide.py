"""The decider: `decide(state, command, ...)` validates a command and returns the event to append.

Pure: no file, clock or randomness (the caller passes `now` and any input rows). A rejected
command raises a `UsrError` and produces nothing, so the log stays byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .alphabet import ALPHABETS, BIO_TYPES, alphabet_regex, alphabets_for
from .commands import Command, ImportSequences, InitDataset
from .errors import AlphabetError, DatasetExists, DuplicateIDError, InvalidInput, NotFound, SchemaError
from .events import ACTIONS, DatasetInitialized, Event, SequencesImported
from .projectors import PAYLOAD_SCHEMA

_SAMPLE = 5
_SECRET_MARKERS = (
    "secret", "token", "password", "passwd", "api_key", "apikey", "webhook", "auth",
    "credential", "bearer", "cookie", "session",
)  # fmt: skip
REDACTED = "***REDACTED***"


@dataclass(frozen=True)
class DatasetState:
    """What decisions need to know about a dataset at the tail of its log."""

    name: str
    initialized: bool = False
    seq: int = 0
    ids: pa.ChunkedArray | pa.Array = field(default_factory=lambda: pa.array([], pa.string()))


@dataclass(frozen=True)
class Decision:
    """The outcome of an accepted command: the event, its payload rows and Notify-facing fields."""

    event: Event
    payload: pa.Table | None
    args: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def action(self) -> str:
        return ACTIONS[type(self.event)]

    @property
    def redacted_args(self) -> dict[str, Any]:
        """`args` as written to the log: secret-looking keys redacted."""
        redacted: dict[str, Any] = redact(self.args)
        return redacted


def _is_secret(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact(value: Any) -> Any:
    """Redact secret-looking keys (and `--secret-flag value` argv tokens) recursively."""
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        out: list[Any] = []
        hide_next = False
        for item in value:
            if hide_next:
                out.append(REDACTED)
                hide_next = False
                continue
            if isinstance(item, str) and item.startswith("--"):
                flag, eq, _ = item.partition("=")
                if _is_secret(flag[2:]):
                    if eq:
                        out.append(f"{flag}={REDACTED}")
                    else:
                        out.append(item)
                        hide_next = True
                    continue
            out.append(redact(item))
        return out
    return value


def decide(
    state: DatasetState,
    command: Command,
    *,
    now: str,
    rows: pa.Table | None = None,
) -> Decision:
    """Validate `command` against `state` and return the resulting event (or raise)."""
    match command:
        case InitDataset():
            if state.initialized:
                raise DatasetExists(f"Dataset already initialized: {state.name}")
            event: Event = DatasetInitialized(
                name=state.name, created_at=now, source=command.source, notes=command.notes
            )
            return Decision(event, None, {"source": command.source, "notes": command.notes}, {})
        case ImportSequences():
            if not state.initialized:
                raise NotFound(f"Dataset not initialized: {state.name}", hint=f"Run `usr init {state.name}` first.")
            if rows is None:
                raise InvalidInput("import needs input rows")
            return _decide_import(state, command, rows, now)
    raise InvalidInput(f"unsupported command {type(command).__name__}")


def _rows(mask: pa.Array | pa.ChunkedArray) -> list[int]:
    """1-based row numbers where `mask` is true."""
    return [int(i) + 1 for i in pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()]


def _listing(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:10])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > 10 else "")


def _label_column(rows: pa.Table, name: str, default: str) -> pa.ChunkedArray:
    n = rows.num_rows
    if name not in rows.column_names:
        return pa.chunked_array([pa.repeat(pa.scalar(default, pa.string()), n)])
    column = pc.cast(rows.column(name), pa.string())
    bad = _rows(pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)))
    if bad:
        raise SchemaError(
            f"{len(bad)} row(s) have missing/empty '{name}' (rows: {_listing(bad)}).",
            hint=f"Fill '{name}' on every row, or drop the column to use --{name.replace('_', '-')}.",
        )
    return column


def _decide_import(state: DatasetState, command: ImportSequences, rows: pa.Table, now: str) -> Decision:
    n_input = rows.num_rows
    if "sequence" not in rows.column_names:
        raise SchemaError("Missing required column: 'sequence'.", hint=f"Columns found: {rows.column_names}")
    if n_input == 0:
        raise SchemaError("The input has no rows.")
    raw = pc.cast(rows.column("sequence"), pa.string())
    padded = pc.match_substring_regex(raw, r"^\s|\s$")
    # Trimming copies the column; most inputs have nothing to trim, so skip the copy then.
    sequence = pc.utf8_trim_whitespace(raw) if pc.any(padded).as_py() else raw
    empty = _rows(pc.or_kleene(pc.is_null(raw), pc.equal(pc.utf8_length(sequence), 0)))
    if empty:
        raise SchemaError(f"{len(empty)} row(s) have missing/empty 'sequence' (rows: {_listing(empty)}).")

    bio_type = _label_column(rows, "bio_type", command.bio_type)
    alphabet = _label_column(rows, "alphabet", command.alphabet)
    for bt in pc.unique(bio_type).to_pylist():
        if bt not in BIO_TYPES:
            first = _rows(pc.equal(bio_type, bt))[0]
            raise SchemaError(f"Row {first}: Unsupported bio_type '{bt}'. Allowed: {', '.join(BIO_TYPES)}.")
    pairs = pa.table({"b": bio_type, "a": alphabet}).group_by(["b", "a"]).aggregate([]).to_pylist()
    for pair in pairs:
        bt, ab = pair["b"], pair["a"]
        if ab not in ALPHABETS or ALPHABETS[ab][0] != bt:
            first = _rows(pc.and_(pc.equal(bio_type, bt), pc.equal(alphabet, ab)))[0]
            raise AlphabetError(
                f"Row {first}: Unsupported alphabet '{ab}' for bio_type '{bt}'. "
                f"Allowed: {', '.join(alphabets_for(bt))}."
            )
        in_group = pc.and_(pc.equal(bio_type, bt), pc.equal(alphabet, ab))
        bad = _rows(pc.and_(in_group, pc.invert(pc.match_substring_regex(sequence, alphabet_regex(ab)))))
        if bad:
            raise AlphabetError(
                f"{len(bad)} row(s) contain characters outside {ab} (rows: {_listing(bad)}).",
                hint=f"{ab} allows {ALPHABETS[ab][1]} in either case; no gaps, spaces or ambiguity codes.",
            )

    ids = compute_ids(sequence, bio_type, single=pairs[0]["b"] if len(pairs) == 1 else None)
    keep = None
    if len(pc.unique(ids)) != n_input:
        groups = _duplicate_groups(ids, sequence)
        if command.on_conflict == "error":
            raise DuplicateIDError(
                f"{len(groups)} duplicate sequence group(s) in the input (showing up to {_SAMPLE}): "
                + "; ".join(groups[:_SAMPLE]),
                groups=groups,
                hint="Remove the duplicates, or pass --on-conflict skip to keep the first of each.",
            )
        first_rows = (
            pa.table({"id": ids, "i": pa.array(range(n_input), pa.int64())}).group_by("id").aggregate([("i", "min")])
        )
        keep = pc.is_in(pa.array(range(n_input), pa.int64()), value_set=first_rows.column("i_min"))
    existing = pc.is_in(ids, value_set=pa.chunked_array(state.ids).combine_chunks()) if len(state.ids) else None
    if existing is not None and pc.any(existing).as_py():
        if command.on_conflict == "error":
            clash = _rows(existing)
            clash_ids = pc.take(ids, pa.array([r - 1 for r in clash], pa.int64())).to_pylist()
            raise DuplicateIDError(
                f"{len(clash)} row(s) are already in the dataset (rows: {_listing(clash)}; "
                f"ids: {', '.join(clash_ids[:_SAMPLE])}).",
                groups=clash_ids,
                hint="Pass --on-conflict skip to import only the new sequences.",
            )
        fresh = pc.invert(existing)
        keep = fresh if keep is None else pc.and_(keep, fresh)

    payload = pa.table([ids, bio_type, sequence, alphabet], schema=PAYLOAD_SCHEMA)
    if keep is not None:
        payload = payload.filter(keep)
    written = payload.num_rows
    source = command.source if command.source is not None else (command.path or "")
    event = SequencesImported(rows=written, skipped=n_input - written, source=source, created_at=now)
    args = {
        "fmt": command.fmt,
        "path": command.path,
        "bio_type": command.bio_type,
        "alphabet": command.alphabet,
        "source": source,
        "on_conflict": command.on_conflict,
        "n": n_input,
    }
    metrics = {"rows_written": written, "rows_skipped": n_input - written}
    return Decision(event, payload if written else None, args, metrics)


def _duplicate_groups(ids: pa.ChunkedArray, sequences: pa.ChunkedArray | pa.Array) -> list[str]:
    """`<id prefix> rows a,b 'SEQ'` for every id that occurs more than once (1-based rows)."""
    n = len(ids)
    grouped = (
        pa.table({"id": ids, "row": pa.array(range(1, n + 1), pa.int64())})
        .group_by("id", use_threads=False)
        .aggregate([("row", "list"), ("row", "count")])
    )
    dups = grouped.filter(pc.greater(grouped.column("row_count"), 1))
    found = sorted(
        (sorted(rows), rid)
        for rid, rows in zip(dups.column("id").to_pylist(), dups.column("row_list").to_pylist(), strict=True)
    )
    groups = []
    for rows, rid in found:
        seq = pc.take(sequences, pa.array([rows[0] - 1], pa.int64()))[0].as_py()
        shown = seq if len(seq) <= 24 else seq[:21] + "..."
        groups.append(f"{rid[:12]} rows {','.join(map(str, rows))} '{shown}'")
    return groups


_HASH_CHUNK = 1 << 16


def compute_ids(
    sequence: pa.ChunkedArray | pa.Array, bio_type: pa.ChunkedArray | pa.Array, *, single: str | None
) -> pa.ChunkedArray:
    """sha1 ids for (bio_type, trimmed sequence) rows, hashed in slices to bound memory."""
    sha1 = hashlib.sha1
    chunks = []
    for start in range(0, len(sequence), _HASH_CHUNK):
        seqs = sequence.slice(start, _HASH_CHUNK).to_pylist()
        if single is not None:
            prefix = f"{single}|"
            hexes = [sha1((prefix + s).encode()).hexdigest() for s in seqs]
        else:
            bts = bio_type.slice(start, _HASH_CHUNK).to_pylist()
            hexes = [sha1(f"{b}|{s}".encode()).hexdigest() for b, s in zip(bts, seqs, strict=True)]
        chunks.append(pa.array(hexes, pa.string()))
    return pa.chunked_array(chunks, pa.string())
