"""`meta.md`: the dataset's notes for people, a projection too: a header from the init event and one bullet
per event. The live write appends a bullet (no fsync); rebuild and replay render it whole. It carries no
watermark, so catch-up and verify leave it alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .events import DatasetInitialized, LogRecord
from .fileio import fileops, write_atomic
from .names import META_FILE


def render_meta(records: list[LogRecord]) -> str:
    """The whole of `meta.md` for these events (the first being the init event)."""
    if not records:
        return ""
    first = records[0].event
    header = ""
    if isinstance(first, DatasetInitialized):
        header = (
            f"name: {first.name}\ncreated_at: {first.created_at}\nsource: {_scalar(first.source)}\n"
            f"notes: {_scalar(first.notes)}\nschema: USR v1\n\n### Updates\n"
        )
    return header + "".join(_bullet(r) for r in records)


def _scalar(text: str) -> str:
    """`text` as one header line: as written when it is a plain one-line value, else a JSON string (which
    YAML reads back as the same text), so a newline or a leading `#` cannot break the header."""
    if (
        text == text.strip()
        and "\n" not in text
        and "\r" not in text
        and not text.startswith(("#", '"', "'", "[", "{"))
        and ": " not in text
    ):
        return text
    return json.dumps(text, ensure_ascii=False)


def _bullet(record: LogRecord) -> str:
    metrics = " ".join(f"{k}={v}" for k, v in record.metrics.items())
    return f"- {record.timestamp_utc}: {record.action} (seq {record.seq}){' ' + metrics if metrics else ''}\n"


def write_meta(directory: Path, records: list[LogRecord]) -> None:
    """Write `meta.md` whole (rebuild, replay)."""
    write_atomic(directory / META_FILE, render_meta(records).encode(), point="meta")


def append_meta(directory: Path, record: LogRecord) -> None:
    """Add the bullet of one new event (the init event writes the file)."""
    if isinstance(record.event, DatasetInitialized):
        write_meta(directory, [record])
        return
    ops = fileops()
    fd = ops.open(directory / META_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
    try:
        ops.write(fd, _bullet(record).encode())
    finally:
        ops.close(fd)
