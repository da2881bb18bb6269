"""Rows that attack through the I/O seam (`usr_es.fileio.FileOps`): injected I/O errors, and a model of
power loss in which writes and renames not yet made durable are dropped, torn or reordered."""

from __future__ import annotations

import errno
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from usr_es import CommitError, Dataset, UsrError
from usr_es.fileio import FileOps, use_fileops
from usr_es.names import LOG_FILE

from . import Row, Scale, rng_for, timed, workdir
from .processes import logged, make_dataset
from .worker import NAMESPACE

Command = Callable[[Dataset, str, int], object]


def _some_ids(ds: Dataset, n: int = 2) -> list[str]:
    return [str(x) for x in ds.head(n, include_deleted=True).column("id").to_pylist()]


def _seqs(tag: str) -> list[str]:
    rng = random.Random(tag)
    return ["".join(rng.choice("ACGT") for _ in range(32)) for _ in range(2)]


#: One command of each type, as a function of (dataset, command id, attempt).
COMMANDS: dict[str, Command] = {
    "import": lambda ds, cid, k: ds.add_sequences(_seqs(cid), command_id=cid),
    "attach": lambda ds, cid, k: ds.write_overlay(
        NAMESPACE,
        {"id": _some_ids(ds), "score": [float(k), 1.0], "tag": [cid, cid]},
        allow_overwrite=True,
        command_id=cid,
    ),
    "delete": lambda ds, cid, k: ds.delete(_some_ids(ds, 1), command_id=cid),
    "state": lambda ds, cid, k: ds.set_state(_some_ids(ds), qc_status="pass" if k % 2 else "fail", command_id=cid),
    "compact": lambda ds, cid, k: ds.maintenance.compact_overlay(NAMESPACE, command_id=cid),
    "materialize": lambda ds, cid, k: ds.maintenance.materialize(namespaces=[NAMESPACE], command_id=cid),
    "snapshot": lambda ds, cid, k: ds.maintenance.snapshot(command_id=cid),
}


def _prepared(tmp: Path) -> Dataset:
    _, ds = make_dataset(tmp)
    ds.add_sequences(_seqs("base-1") + _seqs("base-2"))
    ds.write_overlay(NAMESPACE, {"id": _some_ids(ds), "score": [1.0, 2.0], "tag": ["a", "b"]})
    ds.write_overlay(NAMESPACE, {"id": _some_ids(ds), "score": [3.0, 4.0], "tag": ["c", "d"]}, allow_overwrite=True)
    return ds


# -- injected I/O errors ---------------------------------------------------------------------------
class FaultyOps(FileOps):
    """Fail the k-th `op` (write or fsync) with `err`, and every later one when `persistent`."""

    def __init__(self, op: str, fail_at: int, err: int, *, persistent: bool) -> None:
        super().__init__()
        self.op, self.fail_at, self.err, self.persistent = op, fail_at, err, persistent
        self.calls = self.fired = 0
        self.log_fds: set[int] = set()
        self.log_faulted = False

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        if path.name == LOG_FILE:
            self.log_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self.log_fds.discard(fd)
        super().close(fd)

    def _tick(self, op: str, fd: int) -> None:
        if op != self.op:
            return
        self.calls += 1
        if self.calls == self.fail_at or (self.persistent and self.calls > self.fail_at):
            self.fired += 1
            self.log_faulted |= fd in self.log_fds
            raise OSError(self.err, os.strerror(self.err))

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._tick("write", fd)
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._tick("fsync", fd)
        super().fsync(fd)


@timed
def io_faults(scale: Scale) -> Row:
    """Fail the k-th write or fsync of a command, for every k, once and persistently."""
    row = Row("I/O errors at every op", "§2.7 honest failure")
    outcomes: Counter[str] = Counter()
    faulted = not_durable = dishonest = verify_failures = 0
    errors = (errno.EIO, errno.ENOSPC, errno.EDQUOT)
    kinds = list(COMMANDS) if scale.power_commands > 2 else ["import", "attach", "materialize"]
    with workdir("faults") as tmp:
        for kind in kinds:
            for op in ("write", "fsync"):
                for persistent in (False, True):
                    err = errors[(len(outcomes) + faulted) % len(errors)]
                    ds = _prepared(tmp / f"{kind}-{op}-{persistent}")
                    for k in range(1, 400):
                        cid = f"{kind}-{op}-{k}"
                        before = ds.log_path.read_bytes()
                        faulty = FaultyOps(op, k, err, persistent=persistent)
                        try:
                            with use_fileops(faulty):
                                result = COMMANDS[kind](ds, cid, k)
                        except CommitError as exc:
                            outcome = exc.state
                        except UsrError as exc:
                            outcome = f"other:{type(exc).__name__}"
                        else:  # a no-op (nothing to compact) appends nothing, and says so
                            outcome = "noop" if getattr(result, "noop", False) else "success"
                        outcomes[outcome] += 1
                        in_log = cid in logged(ds)[0]
                        if outcome == "success" and faulty.log_faulted:
                            not_durable += 1
                            row.fail(f"{kind} {op} k={k}: success after a failed log write/fsync")
                        honest = {
                            "success": in_log,
                            "noop": not in_log,
                            "COMMITTED": in_log,
                            "INDETERMINATE": True,
                        }.get(outcome, not in_log and ds.log_path.read_bytes()[: len(before)] == before)
                        if not honest:
                            dishonest += 1
                            row.fail(f"{kind} {op} {errno.errorcode[err]} k={k}: {outcome} but in log={in_log}")
                        if not faulty.fired:
                            break
                        faulted += 1
                        try:  # fault removed: the retry lands exactly once and everything verifies
                            COMMANDS[kind](ds, cid, k)
                        except UsrError as exc:
                            row.fail(f"{kind} retry k={k}: {exc}")
                        report = ds.verify()
                        if not report.ok:
                            verify_failures += 1
                            row.fail(f"{kind} {op} k={k}: {report.problems[0]}")
    row.require("ops_faulted", faulted, faulted > 0)
    for state in ("NOT_COMMITTED", "COMMITTED", "INDETERMINATE"):
        row.note(state, outcomes[state])
    row.note("other_typed", sum(n for k, n in outcomes.items() if k.startswith("other:")))
    row.require("success_reported_but_not_durable", not_durable, not_durable == 0)
    row.require("outcomes_labelled_dishonestly", dishonest, dishonest == 0)
    row.require("verify_failures_after_retry", verify_failures, verify_failures == 0)
    return row


# -- power loss --------------------------------------------------------------------------------------
class PowerCut(BaseException):
    """The machine lost power: nothing after this runs (not even clean-up handlers' file operations)."""


class PowerLossOps(FileOps):
    """Records what is durable. The `cut_at`-th operation raises `PowerCut`; `lose` then rolls the files
    back to a state a real crash could leave: unsynced writes dropped, torn (a prefix kept) or reordered
    (a later write kept, an earlier one lost), and renames or unlinks whose directory was not fsync'd
    undone."""

    def __init__(self, cut_at: int) -> None:
        super().__init__()
        self.cut_at = cut_at
        self.count = 0
        self.dead = False
        self.paths: dict[int, Path] = {}
        self.durable: dict[Path, bytes | None] = {}  # content at the last fsync (None: did not exist)
        self.pending: dict[Path, list[tuple[int, bytes]]] = {}  # unsynced writes (offset, data)
        self.entries: list[tuple[Path, Path | None, bytes | None]] = []  # (dir, dst/unlinked, old content)

    def _step(self) -> None:
        if self.dead:
            raise PowerCut
        self.count += 1
        if self.count == self.cut_at:
            self.dead = True
            raise PowerCut

    def _remember(self, path: Path) -> None:
        if path not in self.durable:
            self.durable[path] = path.read_bytes() if path.exists() else None

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        self._step()
        self._remember(path)
        fd = super().open(path, flags, mode)
        self.paths[fd] = path
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._step()
        path = self.paths[fd]
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        if os.fstat(fd).st_size > offset and (os.O_APPEND & _flags(fd)):
            offset = os.fstat(fd).st_size
        written = super().write(fd, data)
        self.pending.setdefault(path, []).append((offset, bytes(data[:written])))
        return written

    def fsync(self, fd: int) -> None:
        self._step()
        super().fsync(fd)
        path = self.paths.get(fd)
        if path is not None and path.is_file():
            self.durable[path] = path.read_bytes()
            self.pending.pop(path, None)

    def truncate(self, fd: int, size: int) -> None:
        self._step()
        super().truncate(fd, size)

    def close(self, fd: int) -> None:
        if not self.dead:
            super().close(fd)
        else:
            os.close(fd)
        self.paths.pop(fd, None)

    def replace(self, src: Path, dst: Path) -> None:
        self._step()
        self.entries.append((dst.parent, dst, dst.read_bytes() if dst.exists() else None))
        self._remember(dst)
        data = src.read_bytes()
        super().replace(src, dst)
        self.durable[dst] = self.durable.pop(src, data)  # the inode moves with its durable content
        self.pending[dst] = self.pending.pop(src, [])

    def unlink(self, path: Path) -> None:
        self._step()
        self.entries.append((path.parent, path, path.read_bytes() if path.exists() else None))
        super().unlink(path)

    def fsync_dir(self, path: Path) -> None:
        self._step()
        super().fsync_dir(path)
        self.entries = [e for e in self.entries if e[0] != path]

    def lose(self, rng: random.Random) -> str:
        """Roll the files back to one possible post-crash state; returns which."""
        choice = rng.choice(["drop", "tear", "reorder", "keep"])
        for path, writes in self.pending.items():
            if not writes or not path.exists():
                continue
            content = bytearray(self.durable.get(path) or b"")
            kept = {
                "drop": [],
                "tear": writes[: rng.randrange(len(writes) + 1)],
                "reorder": [w for w in writes if rng.random() < 0.5],
                "keep": writes,
            }[choice]
            for offset, data in kept:
                if choice == "tear" and (offset, data) == kept[-1]:
                    data = data[: rng.randrange(len(data) + 1)]
                end = offset + len(data)
                if len(content) < end:
                    content.extend(b"\0" * (end - len(content)))  # a hole where a lost write was
                content[offset:end] = data
            path.write_bytes(bytes(content))
        if choice != "keep":
            for _, target, old in reversed(self.entries):  # directory entries not yet durable
                if target is None or rng.random() < 0.5:
                    continue
                if old is None:
                    target.unlink(missing_ok=True)
                else:
                    target.write_bytes(old)
        return choice


def _flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


@timed
def power_loss(scale: Scale) -> Row:
    """Cut the power at every seam operation of a command, roll back what was not durable, recover."""
    row = Row("power loss at every op", "§2.1 durable acknowledgement, §2.6 deterministic replay")
    rng = rng_for(scale, "power")
    states = points = lost = unrecovered = 0
    models: Counter[str] = Counter()
    kinds = list(COMMANDS)[: max(scale.power_commands, 1)]
    with workdir("power") as tmp:
        for kind in kinds:
            for cut in range(1, 200):
                finished = False
                for state in range(scale.power_states):
                    ds = _prepared(tmp / f"{kind}-{cut}-{state}")
                    acked = logged(ds)[0]
                    ops = PowerLossOps(cut)
                    try:
                        with use_fileops(ops):
                            COMMANDS[kind](ds, "cut", cut)
                        finished = True
                    except PowerCut:
                        models[ops.lose(rng)] += 1
                    except UsrError:
                        finished = True
                    if finished:
                        break
                    states += 1
                    try:
                        after = Dataset.open(ds.root, ds.name)
                        after.add_sequences(_seqs(f"after-{kind}-{cut}-{state}"))  # recovery runs here
                        in_log = logged(after)[0]
                        missing = [cid for cid, seq in acked.items() if in_log.get(cid) != seq]
                        report = after.verify()
                    except UsrError as exc:
                        unrecovered += 1
                        row.fail(f"{kind} cut at op {cut}: recovery failed: {exc}")
                        continue
                    lost += len(missing)
                    if missing or not report.ok:
                        unrecovered += not report.ok
                        row.fail(f"{kind} cut at op {cut}: lost {missing[:2]}, verify {report.problems[:1]}")
                if finished:
                    break
                points += 1
    row.require("crash_points_enumerated", points, points > 0)
    row.require("crash_states_checked", states, states > 0)
    row.note("loss_models", ", ".join(f"{k} {v}" for k, v in sorted(models.items())))
    row.require("acked_events_lost", lost, lost == 0)
    row.require("unrecovered_states", unrecovered, unrecovered == 0)
    return row
