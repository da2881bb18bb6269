"""The one error hierarchy of usr_es; the CLI maps each class to an exit code.

Every error a user can cause is a `UsrError` subclass carrying a one-line message and an
optional hint. The public API never raises bare `ValueError`/`RuntimeError` for user input.
"""

from __future__ import annotations

from typing import ClassVar

#: Exit codes, documented in the README (one table, used by every command).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_EXISTS = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_INTEGRITY = 6
EXIT_IO = 7
EXIT_STALE = 8  # `usr verify`: only stale caches (another pyarrow/projector version wrote them)
EXIT_ABORT = 130


class UsrError(Exception):
    """Base class of every error usr_es raises on purpose."""

    exit_code: ClassVar[int] = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidInput(UsrError):
    """A command, option or input file is not acceptable (nothing was written)."""


class SchemaError(InvalidInput):
    """Rows or columns break the USR schema (missing/empty sequence, bad bio_type, ...)."""


class AlphabetError(InvalidInput):
    """A sequence holds characters outside its alphabet."""


class NamespaceError(InvalidInput):
    """A namespace or derived column breaks the registry contract."""


class RegistryError(InvalidInput):
    """`registry.yaml` is missing, malformed, or lacks the reserved namespaces."""


class DuplicateIDError(InvalidInput):
    """Rows share an id, inside the input or against the dataset."""

    def __init__(self, message: str, *, groups: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.groups = groups or []


class DatasetExists(UsrError):
    """The dataset (or output directory) already exists."""

    exit_code = EXIT_EXISTS


class NotFound(UsrError):
    """A dataset, file, namespace or event does not exist."""

    exit_code = EXIT_NOT_FOUND


class ConcurrencyError(UsrError):
    """`expected_seq` is stale: another writer appended first. Nothing was written."""

    exit_code = EXIT_CONFLICT


class Diverged(UsrError):
    """Two copies of a dataset's log both appended since their last common line (`fork_seq`): nothing was
    transferred (docs/adr/0021)."""

    exit_code = EXIT_CONFLICT

    def __init__(self, message: str, *, fork_seq: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.fork_seq = fork_seq


class IntegrityError(UsrError):
    """The log, a payload or a projection does not match what it claims to be."""

    exit_code = EXIT_INTEGRITY


class CorruptLog(IntegrityError):
    """A complete log line is bad (JSON, hash, seq). Writes are blocked until repaired."""

    def __init__(self, message: str, *, line: int, offset: int, hint: str | None = None) -> None:
        super().__init__(f"{message} (line {line}, byte offset {offset})", hint=hint)
        self.line = line
        self.offset = offset


class UnsupportedEvent(IntegrityError):
    """The log holds an event version or type this usr_es cannot replay."""


class CommitError(UsrError):
    """An I/O error interrupted a write; `state` says whether the event is in the log.

    `NOT_COMMITTED`: the log is unchanged. `COMMITTED`: the event is durable but a projection
    may lag (the next command catches it up). `INDETERMINATE`: the outcome is unknown; run
    `usr verify`.
    """

    exit_code = EXIT_IO

    def __init__(self, message: str, *, state: str, hint: str | None = None) -> None:
        super().__init__(f"{message} [{state}]", hint=hint)
        self.state = state


class ReadError(UsrError):
    """An I/O error while reading (or while catching up a lagging projection for a read). Nothing was
    appended to the log, so it carries no commit state."""

    exit_code = EXIT_IO


class Interrupted(UsrError):
    """Ctrl-C during a write; `state` says whether the event is in the log (like `CommitError`)."""

    exit_code = EXIT_ABORT

    def __init__(self, message: str, *, state: str, hint: str | None = None) -> None:
        super().__init__(f"{message} [{state}]", hint=hint)
        self.state = state


class RemoteError(UsrError):
    """ssh or rsync failed, or the other side's usr_es could not answer (docs/adr/0021). Nothing was
    appended on the side that reports it."""

    exit_code = EXIT_IO


class NotRebasable(InvalidInput):
    """A command `usr pull --rebase` cannot decide again from its line alone (a merge reads another
    dataset): it is left out and reported."""


class UnsafeLocks(InvalidInput):
    """The dataset's filesystem does not make `flock` locks coherent across machines (NFS `nolock`,
    Lustre without `flock`, ...): writes are refused unless `USR_ALLOW_UNSAFE_LOCKS=1` (docs/adr/0021)."""


class UserAbort(UsrError):
    """The user declined a confirmation prompt."""

    exit_code = EXIT_ABORT
