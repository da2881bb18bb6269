"""The I/O seam: every log, payload and projection byte goes through one `FileOps` object.

Production binds it to `os` and `fcntl`. Tests swap it (`use_fileops`) to fail the k-th
operation, or set `USR_ES_CRASH_AT=<point>[:k]` to `os._exit(137)` at a named point in a real
writer process. `USR_ES_TEST_SPLIT_APPEND=1` (tests only) splits each log append into two
writes with a pause between, so a SIGKILL can tear a line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import secrets
import stat
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from .errors import CommitError, IntegrityError

FILE_MODE = 0o644
PRIVATE_MODE = 0o600
DIR_MODE = 0o755


class FileOps:
    """Thin wrapper over the OS calls usr_es makes; subclass to inject faults."""

    def __init__(self) -> None:
        spec = os.environ.get("USR_ES_CRASH_AT", "")
        point, _, count = spec.rpartition(":")  # point names contain ":" too (after_write:log[:k])
        if not count.isdigit():
            point, count = spec, ""
        self._crash_point = point or None
        self._crash_after = int(count) if count else 1
        self._seen: dict[str, int] = {}
        self.split_appends = os.environ.get("USR_ES_TEST_SPLIT_APPEND") == "1"

    # -- named crash points -------------------------------------------------------------
    def point(self, name: str) -> None:
        """Mark a named point of a write; a configured crash fires here."""
        if self._crash_point != name:
            return
        self._seen[name] = self._seen.get(name, 0) + 1
        if self._seen[name] >= self._crash_after:
            os._exit(137)

    # -- primitive operations -----------------------------------------------------------
    def open(self, path: Path, flags: int, mode: int = FILE_MODE) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def mkdir(self, path: Path) -> None:
        if not path.parent.is_dir():  # parents get DIR_MODE too (`parents=True` would use 0o777 & ~umask)
            self.mkdir(path.parent)
        path.mkdir(mode=DIR_MODE, exist_ok=True)

    def lock(self, fd: int, *, shared: bool = False) -> None:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)

    def unlock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)


_current = FileOps()


def fileops() -> FileOps:
    """Return the FileOps in use."""
    return _current


@contextlib.contextmanager
def use_fileops(ops: FileOps) -> Iterator[FileOps]:
    """Temporarily route all I/O through `ops` (tests)."""
    global _current
    previous, _current = _current, ops
    try:
        yield ops
    finally:
        _current = previous


def reset_fileops() -> None:
    """Re-read the environment (crash/split switches); used by test writer processes."""
    global _current
    _current = FileOps()


def _write_all(ops: FileOps, fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += ops.write(fd, view[offset:] if offset else view)


#: How much of a spilled part is read into memory at a time when it is written or compared.
SPILL_PIECE = 8 << 20


class Spill:
    """Bytes kept in an unnamed scratch file instead of memory (the row groups of a large append, docs/adr/0014):
    `length` bytes at `offset` of the open descriptor `fd`, which closes when the last `Spill` of it goes."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self.fd, self.offset, self.length = fd, offset, length
        weakref.finalize(self, os.close, fd)

    def __len__(self) -> int:
        return self.length

    def pieces(self, size: int = SPILL_PIECE) -> Iterator[bytes]:
        """The bytes in order, `size` at a time."""
        done = 0
        while done < self.length:
            piece = os.pread(self.fd, min(size, self.length - done), self.offset + done)
            if not piece:
                raise OSError(errno.EIO, "a scratch file ended early")
            done += len(piece)
            yield piece

    def read(self) -> bytes:
        return b"".join(self.pieces())


#: One part of a file's bytes: in memory, or spilled to a scratch file.
Part: TypeAlias = bytes | memoryview | Spill


def pieces_of(parts: Sequence[Part]) -> Iterator[bytes | memoryview]:
    """The bytes of `parts` in order, spilled parts read a piece at a time."""
    for part in parts:
        if isinstance(part, Spill):
            yield from part.pieces()
        else:
            yield part


def spill_file(directory: Path) -> tuple[int, Path]:
    """A scratch file in `directory` (its descriptor and its name, to be unlinked once opened by whoever
    fills it): a `.tmp-` name, so a crash leaves nothing `remove_stale_temps` does not clear."""
    path = directory / f".tmp-spill-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_MODE)
    return fd, path


def scratch_file(folder: Path) -> tuple[int, Path]:
    """`spill_file` in `folder` (made if missing), or in the temp folder where `folder` cannot be written (a
    verify of a read-only dataset)."""
    import tempfile

    try:
        folder.mkdir(exist_ok=True)
        return spill_file(folder)
    except OSError as exc:
        elsewhere = Path(tempfile.gettempdir())
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or folder == elsewhere:
            raise
        return spill_file(elsewhere)


class SeamFile(io.RawIOBase):
    """A write-only file object over a descriptor whose writes go through the seam (whole writes)."""

    def __init__(self, ops: FileOps, fd: int) -> None:
        super().__init__()
        self._ops = ops
        self._fd = fd
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        _write_all(self._ops, self._fd, view)
        self._written += len(view)
        return len(view)

    def tell(self) -> int:
        return self._written

    def fileno(self) -> int:
        return self._fd


@contextlib.contextmanager
def atomic_file(
    path: Path, *, point: str = "publish", mode: int = FILE_MODE, temp_prefix: str = ".tmp-", durable: bool = True
) -> Iterator[SeamFile]:
    """Write `path` atomically through the yielded file: a temp file in the same directory, fsync, rename,
    fsync of the directory (no fsyncs unless `durable`). On any error the temp file is removed and `path`
    is left as it was. `remove_stale_temps` clears `.tmp-` files after a crash; a writer outside the
    dataset lock must pick another `temp_prefix`, or a concurrent writer may take its file for a stale one.
    """
    ops = fileops()
    tmp = path.with_name(f"{temp_prefix}{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    fd = ops.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        yield SeamFile(ops, fd)
        if durable:
            ops.fsync(fd)
    except BaseException:
        ops.close(fd)
        with contextlib.suppress(OSError):
            ops.unlink(tmp)
        raise
    ops.close(fd)
    try:
        ops.point(f"before_rename:{point}")
        ops.replace(tmp, path)
    except BaseException:  # an error or Ctrl-C (a crash point's os._exit leaves the temp for clean-up)
        with contextlib.suppress(OSError):
            ops.unlink(tmp)
        raise
    if durable:
        ops.fsync_dir(path.parent)


def write_atomic(
    path: Path, data: bytes | memoryview | Sequence[Part], *, point: str = "publish", mode: int = FILE_MODE
) -> None:
    """Publish `data` (bytes, or parts written in order) at `path` atomically (see `atomic_file`)."""
    with atomic_file(path, point=point, mode=mode) as sink:
        for piece in pieces_of([data] if isinstance(data, (bytes, memoryview)) else data):
            sink.write(piece)


def write_once(path: Path, data: bytes | memoryview, *, point: str = "payload") -> None:
    """Write an immutable, content-addressed file durably; an existing file is left as is."""
    if path.exists():
        return
    write_atomic(path, data, point=point, mode=FILE_MODE)


def is_temp(path: Path) -> bool:
    """Whether `path` is a temp file of `atomic_file` (published by rename, or left by a crash)."""
    return path.name.startswith(".tmp-") and path.is_file()


def remove_stale_temps(directory: Path, *, recursive: bool = False) -> int:
    """Remove temp files left by a crashed writer in `directory` (and the folders below it, if
    `recursive`). Call only under the dataset lock."""
    removed = 0
    if not directory.is_dir():
        return 0
    for entry in directory.rglob(".tmp-*") if recursive else directory.iterdir():
        if is_temp(entry):
            with contextlib.suppress(OSError):
                fileops().unlink(entry)
                removed += 1
    return removed


def append_record(path: Path, data: bytes, *, expected_size: int) -> None:
    """Append one complete record to the log with a single write and fsync.

    Raises `CommitError` with the commit state when the write fails: the log is truncated
    back to `expected_size` when possible (NOT_COMMITTED), else INDETERMINATE. A failed
    fsync after a full write is INDETERMINATE: the bytes may or may not be durable.
    """
    ops = fileops()
    created = not path.exists()
    try:
        fd = ops.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"{path} is a symlink; refusing to append through it") from exc
        raise CommitError(f"cannot open {path.name}: {exc.strerror}", state="NOT_COMMITTED") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise IntegrityError(f"{path.name} is not a regular file with one link; refusing to append")
        if info.st_size != expected_size:
            raise CommitError(
                f"{path.name} changed size under the lock ({info.st_size} != {expected_size})",
                state="NOT_COMMITTED",
            )
        try:
            if ops.split_appends and len(data) > 1:
                half = len(data) // 2
                _write_all(ops, fd, data[:half])
                ops.point("between_halves:log")  # a crash here leaves a sure torn tail
                time.sleep(0.002)
                _write_all(ops, fd, data[half:])
            else:
                _write_all(ops, fd, data)
        except OSError as exc:
            state = "NOT_COMMITTED"
            try:
                ops.truncate(fd, expected_size)
                ops.fsync(fd)
            except OSError:
                state = "INDETERMINATE"
            raise CommitError(f"appending to {path.name} failed: {exc.strerror}", state=state) from exc
        ops.point("after_write:log")
        try:
            ops.fsync(fd)
            if created or expected_size == 0:  # first record: a crashed writer may have created the file
                ops.fsync_dir(path.parent)
        except OSError as exc:
            raise CommitError(f"fsync of {path.name} failed: {exc.strerror}", state="INDETERMINATE") from exc
        ops.point("after_fsync:log")
    finally:
        ops.close(fd)


def append_at(path: Path, size: int, body: Sequence[Part], footer: bytes, *, point: str) -> None:
    """Grow the file at `path` in place: cut it back to `size` bytes (a torn tail an interrupted append
    left), append `body` and fsync, then append `footer` and fsync (docs/adr/0013). The first `size`
    bytes are never written, and the footer that makes the new bytes part of the file is written only
    once they are durable: a power loss leaves either no new footer (the next command cuts the tail) or
    a durable body under it."""
    ops = fileops()
    fd = ops.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size < size:
            raise IntegrityError(f"{path.name} changed under the lock; refusing to append to it")
        if info.st_size != size:
            ops.truncate(fd, size)
        ops.point(f"before_append:{point}")
        for piece in pieces_of(body):
            _write_all(ops, fd, piece)
        ops.fsync(fd)
        ops.point(f"before_footer:{point}")
        _write_all(ops, fd, footer)
        ops.point(f"before_fsync:{point}")
        ops.fsync(fd)
    finally:
        ops.close(fd)


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an `flock` on the lock file `path` (created 0600, never followed through a symlink)."""
    ops = fileops()
    try:
        fd = ops.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"lock file {path} is a symlink; refusing to use it") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise IntegrityError(f"lock file {path} is not a regular file with one link")
        ops.lock(fd, shared=shared)
        try:
            yield
        finally:
            ops.unlock(fd)
    finally:
        ops.close(fd)
