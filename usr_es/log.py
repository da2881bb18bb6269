"""`.events.log`: hash-chained NDJSON lines; framing, chain checks, torn tails, appends.

Each line is a `LogRecord` whose last field is `hash`: the xxh3-128 hex digest of the line's
own bytes with `"hash":""` in place of the digest. The line also carries `prev` (the previous
line's hash), so the hashes form a chain from `GENESIS_HASH`. Bytes after the last newline are
a torn tail: readers never interpret them, the next writer quarantines them -- with one exception.
A final line whose own hash verifies and that continues the chain was written whole: only its newline
was lost (or damaged in place). It is committed and read as such (`Scan.unterminated`); the next
writer restores the newline (quarantining the damaged byte, if any) instead of discarding the line.

A log adopted from the original USR (ADR 0015) starts with the original's own lines, kept byte for byte:
JSON events without `seq` or `hash` (`LegacyPrefix`). The chain starts after them, and its first line is
the `dataset_adopted` event, which records their count, size and digest; a log of such lines alone is a
dataset the original wrote and nobody adopted yet.
"""

from __future__ import annotations

import base64
import errno
import json
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import msgspec
import xxhash

from .errors import CorruptLog, IntegrityError, InvalidInput, NotFound, UnsupportedEvent
from .events import EVENT_VERSION, GENESIS_HASH, DatasetAdopted, LogRecord, record_decoder, record_encoder
from .fileio import FILE_MODE, fileops
from .names import QUARANTINE_FILE

MAX_LINE_BYTES = 1 << 20  # 1 MiB including the newline
_HASH_KEY = b'"hash":"'
_SUFFIX = len(_HASH_KEY) + 32 + 2  # "hash":"<32 hex>"}
_PREV = len(b'"prev":"') + 32 + 2  # "prev":"<32 hex>",
_CHUNK = 8 << 20


def open_log(path: Path) -> BinaryIO:
    """Open the log for reading -- never through a symlink, and only when it is a regular file with one
    link (ADR 0006): a linked log could be a file outside the dataset, or change under another name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"{path} is a symlink; refusing to read through it") from exc
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise IntegrityError(
            f"{path} is not a regular file with one link; refusing to read it",
            hint="Copy the dataset folder instead of linking its log (`cp -a`, not `ln` or `cp -l`).",
        )
    return os.fdopen(fd, "rb")


def encode_line(record: LogRecord) -> tuple[bytes, str]:
    """Return the newline-terminated line for `record` (whose `hash` is empty) and its hash."""
    if record.hash:
        raise ValueError("encode_line expects a record without hash")
    body = record_encoder.encode(record)  # ... ,"hash":""}
    digest = xxhash.xxh3_128_hexdigest(body)
    line = body[:-2] + digest.encode() + b'"}\n'
    if len(line) > MAX_LINE_BYTES:
        raise InvalidInput(
            f"Event line would be {len(line)} bytes; the limit is {MAX_LINE_BYTES}.",
            hint="Bulk data belongs in a payload artifact; shorten the arguments.",
        )
    return line, digest


def line_digest(raw: bytes) -> tuple[str, str] | None:
    """Return (claimed hash, computed hash) of a line without newline, or None if unframed."""
    if len(raw) < _SUFFIX or raw[-_SUFFIX : -_SUFFIX + len(_HASH_KEY)] != _HASH_KEY or raw[-2:] != b'"}':
        return None
    claimed = raw[-34:-2].decode("ascii", "replace")
    computed = xxhash.xxh3_128_hexdigest(raw[:-34] + b'"}')
    return claimed, computed


class _Seq(msgspec.Struct):
    seq: int


_seq_decoder = msgspec.json.Decoder(_Seq)


def line_problem(raw: bytes, *, hash: str, seq: int) -> str | None:
    """Why the complete line `raw` (no newline) is not the line of `seq` with `hash`, or None when it is:
    the hash it carries matches its bytes and is `hash`, and its seq is `seq`."""
    framed = line_digest(raw)
    if framed is None or framed[0] != framed[1]:
        return "the line there fails its hash check"
    if framed[0] != hash:
        return f"the line there has hash {framed[0]}, not {hash}"
    try:
        found = _seq_decoder.decode(raw).seq
    except msgspec.DecodeError:
        return "the line there has no seq"
    return None if found == seq else f"the line there is seq {found}"


@dataclass(frozen=True)
class LogLine:
    """One verified line: its seq, byte range, raw bytes (no newline) and decoded record."""

    seq: int
    offset: int
    end: int
    raw: bytes
    record: LogRecord

    @property
    def hash(self) -> str:
        return self.record.hash


@dataclass(frozen=True)
class LegacyPrefix:
    """The original USR's lines at the start of a log: how many, their bytes (newlines included) and the
    xxh3-128 of those bytes. `size` is where the chain starts."""

    lines: int
    size: int
    digest: str


def legacy_line(raw: bytes) -> bool:
    """Whether `raw` (no newline) is a line the original USR wrote: a JSON object with an integer
    `event_version` and an `action`, and none of the chain's fields."""
    if line_digest(raw) is not None:
        return False
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return False
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("event_version"), int)
        and isinstance(doc.get("action"), str)
        and "seq" not in doc
        and "hash" not in doc
    )


def legacy_prefix(path: Path) -> LegacyPrefix | None:
    """The original USR's lines at the start of the log at `path` (None: it starts with the chain, is empty
    or missing). Reads only as far as the first line that is not one of them. The first line is checked as
    JSON (`legacy_line`); the ones after it by their framing alone (a JSON object without the chain's
    `seq` and trailing hash): the adoption's digest of the prefix covers every byte of them."""
    if not path.exists():
        return None
    digest = xxhash.xxh3_128()
    lines = size = 0
    with open_log(path) as fh:
        for data in iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""):
            raw = data[:-1]
            if not data.endswith(b"\n") or not (
                legacy_line(raw)
                if not lines
                else raw.startswith(b"{") and b'"seq":' not in raw and line_digest(raw) is None
            ):
                break
            digest.update(data)
            lines += 1
            size += len(data)
    return LegacyPrefix(lines, size, digest.hexdigest()) if lines else None


def legacy_raw_lines(path: Path) -> Iterator[bytes]:
    """The original USR's lines at the start of the log, as stored (no newline)."""
    prefix = legacy_prefix(path)
    if prefix is None:
        return
    for offset, raw in raw_lines(path):
        if offset >= prefix.size:
            return
        yield raw


def _adoption_problem(record: LogRecord, prefix: LegacyPrefix | None) -> str | None:
    """Why line 1 (`record`) does not start the chain after `prefix` (None: it does)."""
    event = record.event
    recorded = (
        LegacyPrefix(event.legacy_lines, event.legacy_bytes, event.legacy_digest)
        if isinstance(event, DatasetAdopted) and event.legacy_lines
        else None
    )
    if recorded == prefix:
        return None
    if prefix is None:
        lost = recorded.lines if recorded else 0
        return f"the adoption records {lost} line(s) of the original USR the log no longer starts with"
    if recorded is None:
        return f"the log starts with {prefix.lines} line(s) of the original USR that no adoption records"
    return f"the log's {prefix.lines} original USR line(s) differ from the {recorded.lines} the adoption recorded"


@dataclass
class Scan:
    """Where a scan ended: the head of the verified prefix and any torn tail after it."""

    seq: int = 0
    hash: str = GENESIS_HASH
    size: int = 0
    last_timestamp: str | None = None
    registry_hash: str | None = None
    torn_offset: int | None = None
    torn_bytes: int = 0
    #: The last line lost its newline (or it was damaged: that byte is then the torn tail). `size`
    #: counts the newline as if it were there; `terminate_last_line` writes it.
    unterminated: bool = False
    lines: list[LogLine] = field(default_factory=list)
    #: The original USR's lines before the chain (a scan from the start only; ADR 0015).
    legacy: LegacyPrefix | None = None


def _decode(raw: bytes, number: int, offset: int, expect_prev: str) -> LogRecord:
    framed = line_digest(raw)
    if framed is None:
        try:
            json.loads(raw)
        except ValueError:
            raise CorruptLog("log line is not valid JSON", line=number, offset=offset) from None
        raise CorruptLog("log line has no trailing hash", line=number, offset=offset)
    claimed, computed = framed
    if claimed != computed:
        raise CorruptLog(
            f"log line hash mismatch (stored {claimed}, computed {computed})",
            line=number,
            offset=offset,
            hint="The line was edited or damaged; `usr verify` reports every problem.",
        )
    try:
        record = record_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise UnsupportedEvent(
            f"log line {number} (byte offset {offset}) cannot be read by this usr_es: {exc}",
            hint="It may have been written by a newer usr_es; upgrade to replay it.",
        ) from exc
    if record.event_version != EVENT_VERSION:
        raise UnsupportedEvent(f"log line {number} has event_version {record.event_version}; expected 1")
    if record.seq != number:
        raise CorruptLog(f"seq {record.seq} where {number} was expected", line=number, offset=offset)
    if record.prev != expect_prev:
        raise CorruptLog("hash chain broken: prev does not match the previous line", line=number, offset=offset)
    return record


def decode_line(raw: bytes, offset: int) -> LogRecord:
    """The record of a line whose hash was checked (a line this usr_es cannot read raises UnsupportedEvent)."""
    try:
        return record_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise UnsupportedEvent(
            f"log line at byte offset {offset} cannot be read by this usr_es: {exc}",
            hint="It may have been written by a newer usr_es; upgrade to replay it.",
        ) from exc


def iter_lines(
    path: Path,
    *,
    start_offset: int = 0,
    start_seq: int = 0,
    start_hash: str = GENESIS_HASH,
    until_seq: int | None = None,
    scan: Scan | None = None,
) -> Iterator[LogLine]:
    """Yield verified lines from `start_offset` (which must begin line `start_seq + 1`).

    Raises `CorruptLog`/`UnsupportedEvent` at the first bad complete line. A final fragment
    without a newline is not yielded; its offset and size are recorded in `scan`.
    """
    state = scan if scan is not None else Scan()
    state.seq, state.hash, state.size = start_seq, start_hash, start_offset
    if not path.exists():
        return
    prefix = legacy_prefix(path) if start_seq == 0 else None  # line 1 is checked against it
    if prefix is not None:
        state.legacy = prefix
        if start_offset == 0:
            state.size = start_offset = prefix.size
    with open_log(path) as fh:
        fh.seek(start_offset)
        offset = start_offset
        pending = b""
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            pending += chunk
            start = 0
            while True:
                nl = pending.find(b"\n", start)
                if nl < 0:
                    break
                raw = pending[start:nl]
                number = state.seq + 1
                if nl + 1 - start > MAX_LINE_BYTES:
                    raise CorruptLog("log line exceeds 1 MiB", line=number, offset=offset)
                record = _decode(raw, number, offset, state.hash)
                if number == 1 and (problem := _adoption_problem(record, prefix)) is not None:
                    raise CorruptLog(problem, line=1, offset=offset)
                line = LogLine(seq=number, offset=offset, end=offset + len(raw) + 1, raw=raw, record=record)
                state.seq, state.hash, state.size = number, record.hash, line.end
                state.last_timestamp = record.timestamp_utc
                state.registry_hash = record.registry_hash or state.registry_hash
                offset = line.end
                start = nl + 1
                yield line
                if until_seq is not None and number >= until_seq:
                    return
            pending = pending[start:]
            if len(pending) > MAX_LINE_BYTES:
                raise CorruptLog("log line exceeds 1 MiB", line=state.seq + 1, offset=offset)
        if not pending:
            return
        whole = whole_line(pending)
        if whole is None:
            state.torn_offset, state.torn_bytes = offset, len(pending)
            return
        number = state.seq + 1
        record = _decode(whole, number, offset, state.hash)  # a whole line that breaks the chain is corruption
        if number == 1 and (problem := _adoption_problem(record, prefix)) is not None:
            raise CorruptLog(problem, line=1, offset=offset)
        line = LogLine(seq=number, offset=offset, end=offset + len(whole) + 1, raw=whole, record=record)
        state.seq, state.hash, state.size = number, record.hash, line.end
        state.last_timestamp = record.timestamp_utc
        state.registry_hash = record.registry_hash or state.registry_hash
        state.unterminated = True
        if len(pending) > len(whole):  # the damaged newline
            state.torn_offset, state.torn_bytes = offset + len(whole), len(pending) - len(whole)
        yield line


def whole_line(fragment: bytes) -> bytes | None:
    """The line in a final fragment that lost its newline (`fragment`) or had it damaged (all but the last
    byte), when the line's own hash verifies; None for a torn write (never hash-valid)."""
    for raw in (fragment, fragment[:-1]):
        framed = line_digest(raw)
        if framed is not None and framed[0] == framed[1]:
            return raw
    return None


def check_prefix(path: Path, *, end_offset: int, lines: int, last_hash: str) -> None:
    """Check the chain of the first `lines` lines (ending at `end_offset`) from raw bytes only.

    Each line's own hash and its `prev` link (the field just before `hash`) are compared
    without decoding JSON, so a writer can afford to check the whole prefix before its anchor.
    """
    prev = GENESIS_HASH
    number = 0
    prefix = legacy_prefix(path)
    offset = prefix.size if prefix is not None else 0
    with open_log(path) as fh:
        fh.seek(offset)
        pending = b""
        while offset + len(pending) < end_offset:
            chunk = fh.read(min(_CHUNK, end_offset - offset - len(pending)))
            if not chunk:
                break
            pending += chunk
            start = 0
            while (nl := pending.find(b"\n", start)) >= 0:
                raw = pending[start:nl]
                number += 1
                framed = line_digest(raw)
                if framed is None or framed[0] != framed[1]:
                    raise CorruptLog("log line fails its hash check", line=number, offset=offset)
                link = raw[-_SUFFIX - _PREV : -_SUFFIX]
                if link != b'"prev":"' + prev.encode() + b'",':
                    raise CorruptLog(
                        "hash chain broken: prev does not match the previous line", line=number, offset=offset
                    )
                if number == 1 and (problem := _adoption_problem(decode_line(raw, offset), prefix)) is not None:
                    raise CorruptLog(problem, line=1, offset=offset)
                prev = framed[0]
                offset += len(raw) + 1
                start = nl + 1
            pending = pending[start:]
    if number != lines or prev != last_hash or offset != end_offset:
        raise CorruptLog("log prefix does not lead to the recorded projection anchor", line=number + 1, offset=offset)


def shipped_lines(data: bytes, *, start_offset: int, start_seq: int, start_hash: str) -> list[LogLine]:
    """Verify lines another copy of the log sent (docs/adr/0021): whole lines continuing the chain at
    (`start_seq`, `start_hash`), placed from byte `start_offset` on. A missing final newline, a damaged
    line or a broken chain raises `CorruptLog`."""
    lines: list[LogLine] = []
    seq, prev, offset, start = start_seq, start_hash, start_offset, 0
    while start < len(data):
        nl = data.find(b"\n", start)
        if nl < 0:
            raise CorruptLog("the lines sent end in a partial line", line=seq + 1, offset=offset)
        raw = data[start:nl]
        if nl + 1 - start > MAX_LINE_BYTES:
            raise CorruptLog("log line exceeds 1 MiB", line=seq + 1, offset=offset)
        record = _decode(raw, seq + 1, offset, prev)
        seq, prev = seq + 1, record.hash
        lines.append(LogLine(seq=seq, offset=offset, end=offset + len(raw) + 1, raw=raw, record=record))
        offset, start = offset + len(raw) + 1, nl + 1
    return lines


def read_lines(path: Path, *, until_seq: int | None = None) -> tuple[list[LogLine], Scan]:
    """Read and verify the whole log (or up to `until_seq`)."""
    scan = Scan()
    lines = list(iter_lines(path, until_seq=until_seq, scan=scan))
    return lines, scan


def raw_lines(path: Path, *, start_offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, bytes) of every complete line from `start_offset`, unverified (forensics). A final
    line that lost its newline is complete when its own hash verifies (see `iter_lines`); a torn tail is
    never shown."""
    if not path.exists():
        return
    with open_log(path) as fh:
        fh.seek(start_offset)
        offset = start_offset
        for data in fh:
            if not data.endswith(b"\n"):
                whole = whole_line(data)
                if whole is not None:
                    yield offset, whole
                return
            yield offset, data[:-1]
            offset += len(data)


def read_line_at(path: Path, offset: int) -> bytes | None:
    """Return the raw line starting at `offset` (without newline), or None."""
    if not path.exists():
        return None
    with open_log(path) as fh:
        fh.seek(offset)
        data = fh.readline(MAX_LINE_BYTES + 1)
    if data.endswith(b"\n"):
        return data[:-1]
    return whole_line(data) if data else None  # the final line, its newline lost (see `iter_lines`)


def read_line_before(path: Path, end: int) -> tuple[int, bytes] | None:
    """Return (offset, raw bytes without newline) of the complete line whose newline is byte `end - 1`.

    Reads backwards from `end` only as far as the previous newline (at most one line). None when
    byte `end - 1` is not a newline, the file is shorter than `end`, or the line is over the limit.
    """
    if end <= 0 or not path.exists():
        return None
    lower = max(0, end - MAX_LINE_BYTES - 1)  # one extra byte: the newline ending the line before
    chunks: list[bytes] = []  # read backwards, newest first; each searched once, joined once
    pos = end
    with open_log(path) as fh:
        while pos > lower:
            step = min(64 << 10, pos - lower)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            if len(chunk) != step or (not chunks and not chunk.endswith(b"\n")):
                return None
            chunks.append(chunk)
            nl = chunk.rfind(b"\n", 0, len(chunk) - 1 if len(chunks) == 1 else len(chunk))
            if nl >= 0:
                data = b"".join(reversed(chunks))
                return pos + nl + 1, data[nl + 1 : -1]
    return (0, b"".join(reversed(chunks))[:-1]) if lower == 0 else None


def find_command(path: Path, command_id: str) -> LogLine | None:
    """Find the (verified) line that recorded `command_id` -- the last of them when the command appended
    several (ADR 0011) -- scanning raw bytes first."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    needle = b'"command_id":' + msgspec.json.encode(command_id) + b","
    with open_log(path) as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm.find(needle) < 0:
            return None
    found: LogLine | None = None
    for line in iter_lines(path):
        if line.record.command_id == command_id:
            found = line
        elif found is not None:
            break  # a command's lines are consecutive
    return found


def terminate_last_line(path: Path, scan: Scan) -> bool:
    """Write the newline the last (whole, hash-valid) line lost, after any torn bytes were quarantined.
    Returns whether it wrote one."""
    if not scan.unterminated or scan.torn_offset is not None:
        return False
    ops = fileops()
    fd = ops.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_size != scan.size - 1:
            raise CorruptLog(
                "the log changed while its last line was being terminated", line=scan.seq, offset=scan.size - 1
            )
        ops.write(fd, b"\n")
        ops.fsync(fd)
    finally:
        ops.close(fd)
    scan.unterminated = False
    return True


def quarantine_tail(path: Path, scan: Scan) -> int:
    """Move the torn bytes after the verified prefix into the quarantine file; return their size.

    The fragment is appended (base64, with its offset and digest) as one JSON line to
    `.events.log.quarantine` and fsync'd before the log is truncated back to its last newline.
    """
    if scan.torn_offset is None:
        return 0
    ops = fileops()
    with open_log(path) as fh:
        fh.seek(scan.torn_offset)
        fragment = fh.read()
    note = {
        "offset": scan.torn_offset,
        "size_bytes": len(fragment),
        "xxh3_128": xxhash.xxh3_128_hexdigest(fragment),
        "after_seq": scan.seq,
        "bytes_b64": base64.b64encode(fragment).decode(),
    }
    qpath = path.with_name(QUARANTINE_FILE)
    fd = ops.open(qpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    try:
        ops.write(fd, json.dumps(note, sort_keys=True).encode() + b"\n")
        ops.fsync(fd)
    finally:
        ops.close(fd)
    fd = ops.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        ops.truncate(fd, scan.torn_offset)
        ops.fsync(fd)
    finally:
        ops.close(fd)
    size = len(fragment)
    scan.torn_offset, scan.torn_bytes = None, 0
    return size


def seq_of(lines: list[LogLine], name: str, until: str | int) -> int:
    """Turn `SEQ`, `EVENT_ID` or an RFC 3339 timestamp (the last event at or before it) into a seq of the
    log whose verified `lines` are given."""
    if not lines:
        raise NotFound(f"{name} has no events")
    text = str(until).strip()
    if text.isdigit():
        seq = int(text)
        if not 1 <= seq <= len(lines):
            raise NotFound(f"No event with seq {seq}; the log holds seq 1..{len(lines)}.")
        return seq
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
        for line in lines:
            if line.record.event_id == text:
                return line.seq
        raise NotFound(f"No event with id {text}.")
    moment = moment_of(text, "--until")
    chosen = [line.seq for line in lines if datetime.fromisoformat(line.record.timestamp_utc) <= moment]
    if not chosen:
        raise NotFound(f"No event at or before {text}; the first is at {lines[0].record.timestamp_utc}.")
    return chosen[-1]


def moment_of(text: str, option: str) -> datetime:
    """An RFC 3339 time given to `option` (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"Cannot read {option} '{text}'.",
            hint="Give a seq (42), an event id, or an RFC 3339 timestamp.",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
