"""Durable consumer cursors over `.events.log`: resume exactly after the last consumed line.

A cursor names the last line a consumer was handed (seq, byte offset just after it, its hash);
resuming re-checks that line, so a truncated or rewritten log is an error, never a silent re-read.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec

from .errors import IntegrityError, InvalidInput, NotFound
from .events import GENESIS_HASH
from .fileio import write_atomic
from .log import LogLine, Scan, iter_lines, legacy_raw_lines, line_problem, raw_lines, read_line_before

CURSOR_VERSION = 1
_HEX32 = re.compile(r"[0-9a-f]{32}")


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
    """Position after the last consumed line of one dataset's log (seq 0, offset 0, hash "" = the start)."""

    version: int = CURSOR_VERSION
    dataset: str
    seq: int
    offset: int
    hash: str

    def __post_init__(self) -> None:
        if self.version != CURSOR_VERSION:
            raise ValueError(f"cursor version {self.version} is not supported (expected {CURSOR_VERSION})")
        if not self.dataset:
            raise ValueError("cursor dataset is empty")
        if self.seq < 0 or self.offset < 0:
            raise ValueError("cursor seq and offset must not be negative")
        if self.seq == 0:
            if self.offset != 0 or self.hash != "":
                raise ValueError("a start cursor (seq 0) has offset 0 and an empty hash")
        elif self.offset < self.seq or not _HEX32.fullmatch(self.hash):
            raise ValueError("cursor hash must be 32 lowercase hex digits and offset past seq lines")

    @classmethod
    def start(cls, dataset: str) -> Cursor:
        """The cursor before the first event of `dataset`."""
        return cls(dataset=dataset, seq=0, offset=0, hash="")

    @classmethod
    def after(cls, line: LogLine, *, dataset: str) -> Cursor:
        """The cursor just after `line` (save it once the line has been handled)."""
        return cls(dataset=dataset, seq=line.seq, offset=line.end, hash=line.hash)


_decoder = msgspec.json.Decoder(Cursor)
_encoder = msgspec.json.Encoder()


def _reset_hint(cursor_path: Path | None) -> str:
    where = f"delete {cursor_path}" if cursor_path is not None else "delete the cursor file"
    return f"`usr verify DATASET` checks the log; {where} to consume again from seq 1 (events are re-delivered)."


def load_cursor(path: Path) -> Cursor | None:
    """Read the cursor file at `path`; None when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInput(
            f"Cannot read cursor file {path}: {exc.strerror or exc}",
            hint="Check the path and its permissions.",
        ) from None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f"Cursor file {path} is not a valid usr_es cursor: {exc}",
            hint=f"Delete {path} to start over from seq 1 (events are delivered again).",
        ) from None


def save_cursor(path: Path, cursor: Cursor) -> None:
    """Replace the cursor file at `path` atomically and durably (temp file, fsync, rename)."""
    write_atomic(path, _encoder.encode(cursor) + b"\n", point="cursor")


def check_cursor(log_path: Path, cursor: Cursor, *, cursor_path: Path | None = None) -> None:
    """Raise `IntegrityError` unless the complete line ending at `cursor.offset` is the one it names.

    Reads only that line: the log must be at least `offset` bytes, byte `offset - 1` must end a
    line, and that line must carry `cursor.hash` (checked against its bytes) and `cursor.seq`.
    """
    if cursor.seq == 0:
        return
    try:
        size = log_path.stat().st_size
    except FileNotFoundError:
        size = 0
    where = f"seq {cursor.seq}, byte offset {cursor.offset}"
    if size < cursor.offset:
        raise IntegrityError(
            f"{log_path} was truncated: it holds {size} bytes but the cursor is at {where}",
            hint=_reset_hint(cursor_path),
        )
    found = read_line_before(log_path, cursor.offset)
    problem = "no line ends there" if found is None else line_problem(found[1], hash=cursor.hash, seq=cursor.seq)
    if problem is not None:
        raise IntegrityError(
            f"{log_path} was rewritten under the cursor at {where}: {problem}",
            hint=_reset_hint(cursor_path),
        )


def read_since(log_path: Path, cursor: Cursor, *, verify: bool = True) -> Iterator[LogLine]:
    """Complete, chain-verified lines after `cursor` (a torn tail is never yielded).

    With `verify` the cursor's own line is checked first (`check_cursor`), before anything is read.
    """
    if verify:
        check_cursor(log_path, cursor)
    return iter_lines(
        log_path, start_offset=cursor.offset, start_seq=cursor.seq, start_hash=cursor.hash or GENESIS_HASH
    )


def tail(
    log_path: Path,
    dataset: str,
    *,
    n: int | None = None,
    cursor_path: Path | None = None,
    follow: bool = False,
    raw: bool = False,
    poll: float = 0.2,
    stop: Callable[[], bool] | None = None,
) -> Iterator[bytes]:
    """Lines of `log_path` to print, each as its stored bytes plus `\\n`.

    Without `cursor_path`: the last `n` complete lines (all when None or 0), verified unless `raw`.
    With `cursor_path`: every line after the saved cursor, oldest first, at most `n` of them when
    `n` is set; the cursor is saved (atomically) after each line has been handed out, i.e. when the
    consumer asks for the next one or ends the iteration normally. Delivery is at-least-once: a
    consumer that dies after printing a line but before pulling the next gets that line again.
    With `follow`, keep polling every `poll` seconds until `stop()` is true; a log that shrinks
    under the reader or is replaced raises `IntegrityError`. Argument and cursor errors are raised
    here, before the first line.
    """
    if n is not None and n < 0:
        raise InvalidInput(f"--n must be 0 or more, not {n}")
    if not log_path.is_file():
        raise NotFound(f"No event log at {log_path}")
    if cursor_path is None:
        return _tail_plain(log_path, dataset, n=n or None, follow=follow, raw=raw, poll=poll, stop=stop)
    if raw:
        raise InvalidInput(
            "--cursor needs verified lines; it cannot be combined with --format raw.",
            hint="Use --format json: it prints the same stored bytes, after checking them.",
        )
    if not cursor_path.parent.is_dir():
        raise InvalidInput(f"The cursor file's directory does not exist: {cursor_path.parent}")
    cursor = load_cursor(cursor_path)
    if cursor is None:
        cursor = Cursor.start(dataset)
    elif cursor.dataset != dataset:
        raise InvalidInput(
            f"Cursor file {cursor_path} belongs to dataset {cursor.dataset}, not {dataset}.",
            hint="Use one cursor file per dataset.",
        )
    check_cursor(log_path, cursor, cursor_path=cursor_path)
    return _stream(log_path, cursor, limit=n or None, cursor_path=cursor_path, follow=follow, poll=poll, stop=stop)


def _tail_plain(
    log_path: Path,
    dataset: str,
    *,
    n: int | None,
    follow: bool,
    raw: bool,
    poll: float,
    stop: Callable[[], bool] | None,
) -> Iterator[bytes]:
    """The history (`_history`), then with `follow` the lines written from then on. An adopted log's
    original USR lines belong to the history, as stored."""
    if raw:
        end = 0

        def lines() -> Iterator[bytes]:
            nonlocal end
            for start, data in raw_lines(log_path):
                end = start + len(data) + 1
                yield data

        for data in _history(lines(), n=n, follow=follow):
            yield data + b"\n"
        offset = end
        # A final line that lost its newline ends a byte short of `offset` until a writer restores the newline.
        lost = 1 if follow and os.stat(log_path).st_size == offset - 1 else 0
        while follow and _wait(log_path, offset - lost, None, None, poll=poll, stop=stop):
            lost = 0
            for start, data in raw_lines(log_path, start_offset=offset):
                offset = start + len(data) + 1
                yield data + b"\n"
        return
    scan = Scan()
    chained = (line.raw for line in iter_lines(log_path, scan=scan))
    for data in _history(itertools.chain(legacy_raw_lines(log_path), chained), n=n, follow=follow):
        yield data + b"\n"
    begin = Cursor(dataset=dataset, seq=scan.seq, offset=scan.size, hash=scan.hash) if scan.seq else None
    yield from _stream(
        log_path,
        begin or Cursor.start(dataset),
        limit=None,
        cursor_path=None,
        follow=follow,
        poll=poll,
        stop=stop,
        fresh=False,
    )


def _history(lines: Iterator[bytes], *, n: int | None, follow: bool) -> Iterable[bytes]:
    """The lines to print before following: the last `n` when `n` is set, else all of them, or none when
    following (the original's `--follow` starts at the end; `--n` asks for history). All are read either way."""
    if n:
        return deque(lines, maxlen=n)
    if follow:
        deque(lines, maxlen=0)
        return ()
    return lines


def _stream(
    log_path: Path,
    cursor: Cursor,
    *,
    limit: int | None,
    cursor_path: Path | None,
    follow: bool,
    poll: float,
    stop: Callable[[], bool] | None,
    fresh: bool = True,
) -> Iterator[bytes]:
    """Verified lines after `cursor`, then (with `follow`) new ones as they complete."""
    delivered = 0
    inode = _inode(log_path)
    while True:
        if fresh:
            for line in read_since(log_path, cursor, verify=False):
                yield line.raw + b"\n"
                # Reached only when the consumer asks for more: the line has been handed out.
                cursor = Cursor.after(line, dataset=cursor.dataset)
                if cursor_path is not None:
                    save_cursor(cursor_path, cursor)
                delivered += 1
                if limit is not None and delivered >= limit:
                    return
        fresh = True
        if not follow or not _wait(log_path, cursor.offset, inode, cursor_path, poll=poll, stop=stop):
            return
        check_cursor(log_path, cursor, cursor_path=cursor_path)
        inode = _inode(log_path)


def _wait(
    log_path: Path,
    offset: int,
    inode: int | None,
    cursor_path: Path | None,
    *,
    poll: float,
    stop: Callable[[], bool] | None,
) -> bool:
    """Sleep until there are bytes after `offset` or the file was replaced (True), or `stop()` (False).

    A log shorter than `offset` raises `IntegrityError`. Bytes after `offset` may still be a torn
    line (an append in progress): the caller re-reads and yields nothing until it is complete.
    """
    while stop is None or not stop():
        time.sleep(poll)
        try:
            info = os.stat(log_path)
        except FileNotFoundError:
            info = None
        size = info.st_size if info is not None else 0
        if size < offset:
            raise IntegrityError(
                f"{log_path} was truncated to {size} bytes while being followed at byte offset {offset}",
                hint=_reset_hint(cursor_path),
            )
        if size > offset or (inode is not None and info is not None and info.st_ino != inode):
            return True
    return False


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
