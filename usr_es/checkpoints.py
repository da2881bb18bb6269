"""Checkpoints: the projections' files as of one event, kept under `_snapshots/checkpoint-<seq>/` so replay
and rebuild fold only the events after them.

A checkpoint hard-links every output of the fold (a new version of a projection file is a new file renamed
over the old) except records.parquet, which an import grows in place and is therefore copied (ADR 0013),
and records their digests in a manifest. Loading one checks
the manifest against the log and every file against its digest; a checkpoint that fails either is
skipped with a note.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import msgspec
import xxhash

from .fileio import fileops, write_atomic
from .log import LogLine, raw_lines
from .names import CHECKPOINT_MANIFEST, RECORDS_FILE, SNAPSHOT_DIR
from .projections import BaseFile, DerivedFiles, Fold, IdIndex, table_key
from .projectors import PROJECTOR_VERSION, Watermark
from .recovery import LocalSource, copy_file

CHECKPOINT_EVERY = 1000  # events between automatic checkpoints
CHECKPOINT_BYTES = 256 << 20  # or this many payload bytes
SNAPSHOT_KEEP = 5  # `usr snapshot` copies of records.parquet kept (USR_SNAPSHOT_KEEP; the original kept 5)


def write_checkpoint(fold: Fold, mark: Watermark, directory: Path, *, base_copy: str | None = None) -> Path:
    """Checkpoint the fold's outputs as stored in `directory` (they reflect `mark`)."""
    target = directory / SNAPSHOT_DIR / f"checkpoint-{mark.seq:010d}"
    staging = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    if target.exists():
        return target
    shutil.rmtree(staging, ignore_errors=True)
    fileops().mkdir(staging)
    files: dict[str, str] = {}
    for rel in fold.outputs():
        src = directory / rel
        if not src.exists():
            continue
        fileops().mkdir((staging / rel).parent)
        copy_file(src, staging / rel)
        files[rel] = file_digest(src)
    manifest = {
        "seq": mark.seq,
        "offset": mark.offset,
        "hash": mark.hash,
        "projector": PROJECTOR_VERSION,
        "files": files,
        "content_digest": xxhash.xxh3_128_hexdigest(json.dumps(files, sort_keys=True).encode()),
    }
    write_atomic(staging / CHECKPOINT_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    fileops().replace(staging, target)
    fileops().fsync_dir(target.parent)
    if base_copy is not None and (directory / RECORDS_FILE).exists():
        copy_file(directory / RECORDS_FILE, directory / SNAPSHOT_DIR / f"{base_copy}.parquet")
        prune_snapshot_copies(directory)
    return target


def prune_snapshot_copies(directory: Path) -> list[str]:
    """Keep the newest `USR_SNAPSHOT_KEEP` (default 5, as the original; 0 keeps all) `usr snapshot` copies of
    records.parquet, `_snapshots/records-<UTC stamp>.parquet`; remove older ones. Checkpoint folders are
    never touched here: replay and rebuild may start from any of them. Returns the names removed."""
    try:
        keep = int(os.environ.get("USR_SNAPSHOT_KEEP", SNAPSHOT_KEEP))
    except ValueError:
        keep = SNAPSHOT_KEEP
    if keep <= 0:
        return []
    copies = sorted(p for p in (directory / SNAPSHOT_DIR).glob("records-*.parquet") if p.is_file())
    removed = copies[:-keep]
    for path in removed:
        fileops().unlink(path)
    return [p.name for p in removed]


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(seq, folder) of every checkpoint, oldest first."""
    folder = directory / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)


def load_checkpoint(path: Path, lines: list[LogLine], directory: Path) -> tuple[Fold, int] | str:
    """A fold holding the projections stored in a checkpoint and the seq it reflects, or the reason it
    cannot be used. Part tables and the base's rows are read only when an event or an encode needs them."""
    try:
        manifest = json.loads((path / CHECKPOINT_MANIFEST).read_bytes())
        seq = int(manifest["seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"checkpoint {path.name} has no readable manifest"
    if manifest.get("projector") != PROJECTOR_VERSION:
        return f"checkpoint {path.name} was written by projector {manifest.get('projector')}"
    if not 1 <= seq <= len(lines) or lines[seq - 1].hash != manifest.get("hash"):
        return f"checkpoint {path.name} does not match the log at seq {seq}"
    for rel, digest in dict(manifest.get("files", {})).items():
        file = path / rel
        if not file.is_file() or file_digest(file) != digest:
            return f"checkpoint {path.name}: {rel} does not match its digest"
    source = LocalSource(directory, trust_files=False)
    fold = Fold(source)
    for member in fold.members:
        member.load(path, columns=[])  # the base's row count for now; its rows when they are needed
    if fold.get(IdIndex).mark() != fold.get(BaseFile).mark():
        return f"checkpoint {path.name} holds no id index of its base"
    layout = fold.get(DerivedFiles).layout
    source.trusted = {table_key(info): path / info.file for info in layout.files().values()}
    return fold, seq


def file_digest(path: Path) -> str:
    """xxh3-128 hex digest of a file's bytes, read a block at a time (no copy of the whole file)."""
    digest = xxhash.xxh3_128()
    block = memoryview(bytearray(1 << 20))
    with path.open("rb", buffering=0) as fh:
        while size := fh.readinto(block):
            digest.update(block[:size])
    return str(digest.hexdigest())


class _Payload(msgspec.Struct):
    size_bytes: int = 0


class _Sized(msgspec.Struct):
    payload: _Payload | None = None


_sized = msgspec.json.Decoder(_Sized)


def checkpoint_due(directory: Path, log_path: Path, mark: Watermark, *, has_payload: bool) -> bool:
    """The automatic checkpoint policy: every CHECKPOINT_EVERY events or CHECKPOINT_BYTES of payload since
    the newest checkpoint (env USR_CHECKPOINT_EVERY / USR_CHECKPOINT_BYTES; 0 disables either).

    The event count comes from the seq. Payload bytes are added up only after an event that has a payload
    (with a fixed limit, only such an event can cross it), from the lines after the newest checkpoint's
    line (at most CHECKPOINT_EVERY of them when that policy is on), each decoded for its payload size
    alone. A manifest whose offset does not start a line of this log counts as due: a new checkpoint
    then replaces it as the newest."""
    every = int(os.environ.get("USR_CHECKPOINT_EVERY", CHECKPOINT_EVERY))
    limit = int(os.environ.get("USR_CHECKPOINT_BYTES", CHECKPOINT_BYTES))
    existing = list_checkpoints(directory)
    last_seq, last_path = existing[-1] if existing else (0, None)
    if every > 0 and mark.seq - last_seq >= every:
        return True
    if limit <= 0 or not has_payload:
        return False
    start = 0
    if last_path is not None:
        try:
            start = int(json.loads((last_path / CHECKPOINT_MANIFEST).read_bytes())["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            start = 0
    total = 0
    for offset, raw in raw_lines(log_path, start_offset=start):
        try:
            payload = _sized.decode(raw).payload
        except msgspec.DecodeError:
            return True
        if last_path is not None and offset == start:
            continue  # the checkpoint's own line is in it
        total += payload.size_bytes if payload is not None else 0
    return total >= limit
