"""Reliability: SIGKILLed and crashing writers, concurrent writers, injected I/O faults, corruption, file safety.

Writers are real processes running tests/writer.py, which prints `ACK <seq> <command_id>` only after
each import returns. Randomized tests log their seed; set USR_ES_TEST_SEED to replay one.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.reliability.processes import order_figures
from usr_es import CommitError, CorruptLog, Dataset, IntegrityError, UsrError
from usr_es.cli import main
from usr_es.errors import Interrupted, ReadError
from usr_es.fileio import FileOps, use_fileops
from usr_es.log import read_lines
from usr_es.names import LOG_FILE, QUARANTINE_FILE
from usr_es.registry import register_namespace, split_columns_spec
from usr_es.results import VerifyReport

WRITER = Path(__file__).with_name("writer.py")
DATASET = "demo/rel"
ROWS_PER_IMPORT = 2


# -- helpers ------------------------------------------------------------------------------
def _seed() -> int:
    seed = int(os.environ.get("USR_ES_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"seed={seed} (replay with USR_ES_TEST_SEED={seed})")
    return seed


def _make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    register_namespace(root, "mock", split_columns_spec("mock__score:float64"))
    return root


def _make_dataset(tmp_path: Path) -> tuple[Path, Dataset]:
    root = _make_root(tmp_path)
    ds = Dataset.open(root, DATASET)
    ds.init(source="test_reliability")
    return root, ds


def _seqs(tag: str, rows: int = ROWS_PER_IMPORT) -> list[str]:
    rng = random.Random(tag)
    return ["".join(rng.choice("ACGT") for _ in range(40)) for _ in range(rows)]


def _writer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USR_ES_")}
    env.update(extra)
    return env


def _spawn(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(root), DATASET, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else _writer_env(),
    )


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", f"writer did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"


def _acks(stdout: str) -> list[tuple[int, str]]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("ACK "):
            _, seq, cid = line.split()
            out.append((int(seq), cid))
    return out


def _logged(ds: Dataset) -> tuple[dict[str, int], int, int]:
    """command_id -> seq for every complete line (the chain is verified), head seq, torn tail bytes."""
    lines, scan = read_lines(ds.log_path)
    by_cid: dict[str, int] = {}
    for line in lines:
        assert line.record.command_id not in by_cid, f"command {line.record.command_id} logged twice"
        by_cid[line.record.command_id] = line.seq
    return by_cid, scan.seq, scan.torn_bytes


def _temp_leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".tmp-*")]


def _quarantined(ds: Dataset) -> list[dict[str, object]]:
    path = ds.dir / QUARANTINE_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _is_quarantine_warning(text: str) -> bool:
    return "quarantined a torn tail" in text


# == reliability.md §5 A.1 ★ test_kill9_during_appends_loses_nothing (and A.3 ★ for real torn tails) ====
@pytest.mark.crash
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "split-write"])
def test_kill9_random_during_imports_loses_no_acked_event(tmp_path: Path, split: bool) -> None:
    seed = _seed()
    rng = random.Random(seed)
    root, ds = _make_dataset(tmp_path)
    env = _writer_env(USR_ES_TEST_SPLIT_APPEND="1") if split else _writer_env()
    rounds: list[list[str]] = [[] for _ in range(8)]
    if split:
        rounds.append(["--tear-at", str(rng.randint(1, 4))])  # one kill that certainly tears a line
    kills = acked = lost = torn_seen = quarantined = wrongly_quarantined = 0
    acked_all: dict[str, int] = {}
    for number, extra in enumerate(rounds):
        before, head_before, _ = _logged(ds)
        proc = _spawn(root, "--writer", "0", "--count", "1000", "--tag", f"r{number}", *extra, env=env)
        _wait_ready(proc)
        first = ""
        if not extra:
            # The kill lands among the writes, not in the first one's start-up (imports, first catch-up),
            # which on a loaded machine can outlast the whole random delay in every round.
            assert proc.stdout is not None
            first = proc.stdout.readline()
            time.sleep(rng.uniform(0.02, 0.35))
            proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
        stdout = first + stdout
        assert proc.returncode == -signal.SIGKILL, f"seed={seed} round {number}: {stderr}"
        kills += 1
        acks = _acks(stdout)
        acked += len(acks)
        acked_all.update({cid: seq for seq, cid in acks})

        # The log is a chain of whole valid records (read_lines verifies it) plus at most a torn tail.
        logged, head, torn = _logged(ds)
        lost += sum(1 for cid, seq in acked_all.items() if logged.get(cid) != seq)
        assert all(before[cid] == logged[cid] for cid in before), f"seed={seed}: earlier records changed"
        assert head >= head_before + len(acks)
        torn_seen += bool(torn)
        if rng.random() < 0.5:  # half the time a read comes first: it catches up but leaves a torn tail alone
            size = ds.log_path.stat().st_size
            info = ds.info()
            assert (info.head_seq, info.torn_tail_bytes) == (head, torn)
            assert info.projection_lag <= 1  # a kill between append and publish leaves one event to catch up
            assert ds.info().projection_lag == 0
            assert ds.log_path.stat().st_size == size
        torn_bytes = ds.log_path.read_bytes()[-torn:] if torn else b""

        # The next command recovers: it quarantines the torn tail and says so, then verify passes.
        notes_before = len(_quarantined(ds))
        receipt = ds.add_sequences(_seqs(f"recover-{number}"), command_id=f"recover-{number}")
        assert receipt.seq == head + 1
        warned = any(_is_quarantine_warning(w) for w in receipt.warnings)
        assert warned is bool(torn), f"seed={seed} round {number}: torn={torn} warnings={receipt.warnings}"
        if warned:
            quarantined += 1
            notes = _quarantined(ds)
            assert len(notes) == notes_before + 1
            assert base64.b64decode(str(notes[-1]["bytes_b64"])) == torn_bytes
        logged_after, _, torn_after = _logged(ds)
        assert torn_after == 0
        wrongly_quarantined += sum(1 for cid in logged if cid not in logged_after)
        report = ds.verify()
        assert report.ok, f"seed={seed} round {number}: {report.problems}"
        assert _temp_leftovers(ds.dir) == [], f"seed={seed}: temp files left after recovery"

    print(
        f"kill9 split={split}: kills={kills} acked={acked} acked_events_lost={lost} torn_tails_seen={torn_seen} "
        f"quarantined={quarantined} valid_records_wrongly_quarantined={wrongly_quarantined}"
    )
    assert kills == len(rounds)
    assert lost == 0, f"seed={seed}"
    assert torn_seen == quarantined
    assert wrongly_quarantined == 0
    assert acked > 0
    if split:
        assert torn_seen >= 1


# == reliability.md §5 A.5 ★ test_atomic_replace_crash_points and A.7 test_crash_between_append_and_projection ==
# (event present iff the crash came after the log write; process crashes keep written bytes in the page cache)
CRASH_POINTS = {
    "after_registry_freeze": False,
    "after_payload": False,
    "before_rename:payload": False,
    "after_write:log": True,
    "after_fsync:log": True,
    "after_append": True,
    "before_append:records.parquet": True,
    "before_footer:records.parquet": True,
    "before_fsync:records.parquet": True,
    "before_rename:history.json": True,  # the history runs this import merged are already published
    "after_publish": True,
}


@pytest.mark.crash
@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_crash_at_named_point_recovers_on_next_command(tmp_path: Path, point: str) -> None:
    root, ds = _make_dataset(tmp_path)
    ds.add_sequences(_seqs("seed-import"), command_id="seed-import")
    rows_before = ds.info().rows
    proc = _spawn(root, "--count", "2", "--tag", "crash", env=_writer_env(USR_ES_CRASH_AT=point))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 137, stderr
    assert _acks(stdout) == []

    cid = "crash-w0-i0"
    logged, head, torn = _logged(ds)
    assert torn == 0
    present = cid in logged
    assert present is CRASH_POINTS[point]
    assert head == 2 + present

    # Verify tells a projection that lags the log (the crash hit between append and publish) from one that
    # differs, and a crash's temp file from a file nobody expects: none of them is a failure.
    lagging = present and point != "after_publish"
    report = ds.verify()
    assert report.ok, report.problems
    assert bool(report.behind) is lagging and all(
        "behind the log" in n or "not written yet" in n for n in report.notes if "seq" in n
    ), report.notes
    leftovers = sorted(str(p.relative_to(ds.dir)) for p in _temp_leftovers(ds.dir))
    assert sorted(rel for rel in report.unexpected if ".tmp-" in rel) == leftovers

    # A read catches a lagging records.parquet up from the log (only crashes before the publish lag).
    info = ds.info()
    assert info.head_seq == head
    assert info.rows == rows_before + ROWS_PER_IMPORT * present
    assert info.projection_lag == int(lagging)
    assert ds.info().projection_lag == 0

    # The next command succeeds (a retry of the crashed command is applied exactly once) and verify passes.
    retry = ds.add_sequences(_seqs("crash/0/0"), command_id=cid)
    assert retry.replayed is present
    again = ds.add_sequences(_seqs("after-crash"), command_id="after-crash")
    assert again.seq == 4
    assert ds.verify().ok, ds.verify().problems
    assert _temp_leftovers(ds.dir) == []
    assert ds.info().rows == rows_before + 2 * ROWS_PER_IMPORT


@pytest.mark.crash
def test_a_read_that_cannot_catch_up_a_lagging_projection_reports_no_commit_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ds = _make_dataset(tmp_path)
    ds.add_sequences(_seqs("seed-import"), command_id="seed-import")
    proc = _spawn(root, "--count", "1", "--tag", "lag", env=_writer_env(USR_ES_CRASH_AT="after_append"))
    assert proc.communicate(timeout=60)[0] == "READY\n" and proc.returncode == 137
    log = ds.log_path.read_bytes()
    with use_fileops(FaultyFileOps("write", 1, errno.ENOSPC, persistent=True)):
        with pytest.raises(ReadError) as caught:
            ds.head(3)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["--root", str(root), "head", DATASET, "-n", "3"])
    assert "No space left on device" in str(caught.value)
    stderr = capsys.readouterr().err
    assert exited.value.code == 7 and stderr.startswith("error:")
    assert not any(state in stderr for state in ("COMMITTED", "INDETERMINATE"))
    assert ds.log_path.read_bytes() == log
    assert ds.head(3).num_rows == 3 and ds.verify().ok  # with space again, the read catches up


@pytest.mark.crash
def test_crash_at_the_kth_pass_of_a_point_keeps_earlier_acks(tmp_path: Path) -> None:
    root, ds = _make_dataset(tmp_path)
    proc = _spawn(root, "--count", "3", "--tag", "kth", env=_writer_env(USR_ES_CRASH_AT="after_fsync:log:2"))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 137, stderr
    assert _acks(stdout) == [(2, "kth-w0-i0")]
    logged, head, _ = _logged(ds)
    assert (head, logged.get("kth-w0-i1"), "kth-w0-i2" in logged) == (3, 3, False)
    assert ds.add_sequences(_seqs("after-kth")).seq == 4
    assert ds.verify().ok


INIT_CRASH_POINTS = {
    "after_registry_freeze": False,
    "after_write:log": True,
    "after_append": True,
    "before_rename:records.parquet": True,
    "after_publish": True,
    "tear": False,
}


@pytest.mark.crash
@pytest.mark.parametrize("point", list(INIT_CRASH_POINTS))
def test_crash_during_init_leaves_a_dataset_init_can_finish(tmp_path: Path, point: str) -> None:
    root = _make_root(tmp_path)
    ds = Dataset.open(root, DATASET)
    if point == "tear":
        proc = _spawn(root, "--init", "--count", "0", "--tear-at", "1", "--tag", "init", env=_writer_env())
        expected_rc = -signal.SIGKILL
    else:
        proc = _spawn(root, "--init", "--count", "0", "--tag", "init", env=_writer_env(USR_ES_CRASH_AT=point))
        expected_rc = 137
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == expected_rc, stderr
    assert _acks(stdout) == []
    present = INIT_CRASH_POINTS[point]
    if ds.log_path.exists():
        assert ("init-w0-init" in _logged(ds)[0]) is present

    receipt = ds.init(source="retry", command_id="init-w0-init")  # the client retries its init
    assert receipt.seq == 1
    assert receipt.replayed is present
    if point == "tear":
        assert any(_is_quarantine_warning(w) for w in receipt.warnings)
    ds.add_sequences(_seqs("after-init"))
    assert ds.verify().ok, ds.verify().problems
    assert _temp_leftovers(ds.dir) == []


# == reliability.md §5 B.14 ★ test_n_process_writers_no_loss_no_dup (4 writers x 15 imports on 2 cores) ==
@pytest.mark.concurrency
def test_four_concurrent_writers_log_every_event_exactly_once(tmp_path: Path) -> None:
    root, ds = _make_dataset(tmp_path)
    writers, count = 4, 15
    procs = [_spawn(root, "--writer", str(w), "--count", str(count), "--tag", "conc") for w in range(writers)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
    acks = [_acks(stdout) for stdout, _ in outputs]

    lines, duplicate_seq, gaps, duplicates, by_cid = order_figures(ds)  # every hash and prev link verified
    seqs = [line.seq for line in lines]
    lost = sum(1 for writer in acks for seq, cid in writer if by_cid.get(cid) != seq)
    print(
        f"writers x events={writers}x{count} records={len(lines)} duplicate_seq={duplicate_seq} gaps={gaps} "
        f"duplicate_commands={duplicates} lost_writes={lost}"
    )
    assert [len(a) for a in acks] == [count] * writers
    assert seqs == list(range(1, writers * count + 2))
    assert _logged(ds)[2] == 0  # no torn tail
    assert duplicate_seq == gaps == duplicates == lost == 0
    for w, writer_acks in enumerate(acks):  # each writer's own order is preserved in the log
        assert [cid for _, cid in writer_acks] == [f"conc-w{w}-i{i}" for i in range(count)]
        assert [seq for seq, _ in writer_acks] == sorted(seq for seq, _ in writer_acks)
    written = sum(int(line.record.metrics.get("rows_written", 0)) for line in lines)
    assert written == writers * count * ROWS_PER_IMPORT
    assert ds.info().rows == written
    report = ds.verify()
    assert report.ok, report.problems
    assert report.lines == writers * count + 1


@pytest.mark.concurrency
def test_reads_and_verify_while_a_writer_replaces_the_files_never_fail(tmp_path: Path) -> None:
    root, ds = _make_dataset(tmp_path)
    ds.add_sequences(_seqs("seed", 500))
    writer = _spawn(root, "--count", "40", "--rows", "400", "--tag", "busy")
    _wait_ready(writer)
    reader = Dataset.open(root, DATASET)
    calls = false_failures = 0
    untyped: list[str] = []
    while writer.poll() is None:
        for call in (reader.view, reader.verify, reader.maintenance.validate, reader.info, lambda: reader.head(3)):
            try:
                result = call()
            except UsrError:
                continue  # a typed, clean error is allowed (none is expected)
            except Exception as exc:
                untyped.append(f"{type(exc).__name__}: {exc}")
                continue
            finally:
                calls += 1
            if isinstance(result, VerifyReport) and not result.ok:
                false_failures += 1
                untyped.append(f"verify: {result.problems}")
    _, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr
    print(f"reader calls={calls} untyped={len(untyped)} false verify failures={false_failures}")
    assert calls > 10
    assert untyped == [] and false_failures == 0
    assert reader.verify().ok


class InterruptAt(FileOps):
    """Raise KeyboardInterrupt (what Ctrl-C raises) at a named point of a write."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def point(self, name: str) -> None:
        if name == self.name:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("point", "state"),
    [
        ("after_payload", "NOT_COMMITTED"),
        ("after_write:log", "INDETERMINATE"),
        ("after_append", "COMMITTED"),
        ("before_append:records.parquet", "COMMITTED"),
    ],
)
def test_ctrl_c_during_a_write_says_whether_it_was_committed(tmp_path: Path, point: str, state: str) -> None:
    _, ds = _make_dataset(tmp_path)
    ds.add_sequences(_seqs("seed"))
    with use_fileops(InterruptAt(point)), pytest.raises(Interrupted) as caught:
        ds.add_sequences(_seqs("interrupted"), command_id="interrupted")
    assert caught.value.state == state and caught.value.exit_code == 130
    logged, head, _ = _logged(ds)
    assert ("interrupted" in logged) is (state != "NOT_COMMITTED")
    if state == "COMMITTED":
        assert f"event seq {head} was committed" in str(caught.value)
    report = ds.verify()  # a lagging projection is behind, not corrupt
    assert report.ok, report.problems
    assert ds.info().rows == ROWS_PER_IMPORT * (1 + ("interrupted" in logged))
    assert ds.verify().behind == []  # the read caught the projections up


@pytest.mark.crash
def test_sigint_to_a_real_import_reports_the_commit_state_it_left(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    rng = random.Random(_seed())
    rows = "sequence\n" + "\n".join("".join(rng.choice("ACGT") for _ in range(40)) for _ in range(150_000)) + "\n"
    (tmp_path / "in.csv").write_text(rows)

    def start(name: str) -> tuple[Dataset, subprocess.Popen[str]]:
        ds = Dataset.open(root, name)  # a new dataset each time: every import costs the same
        ds.init()
        proc = subprocess.Popen(
            [sys.executable, "-m", "usr_es", "--root", str(root), "import", name, "--from", "csv",
             "--path", str(tmp_path / "in.csv"), "--command-id", "sigint"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_writer_env(),
        )  # fmt: skip
        return ds, proc

    took = 60.0
    for warm in range(2):  # the second run is warm, like the interrupted ones
        began = time.monotonic()
        _, timing = start(f"demo/timing{warm}")
        assert timing.communicate(timeout=60) and timing.returncode == 0
        took = min(took, time.monotonic() - began)  # late fractions land in decide, stage, append, publish
    outcomes: Counter[str] = Counter()
    for attempt, fraction in enumerate((0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1)):
        ds, proc = start(f"demo/sig{attempt}")
        before = ds.log_path.read_bytes()
        time.sleep(took * fraction)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        logged, head, _ = _logged(ds)
        if proc.returncode == 0:
            outcomes["finished"] += 1
            assert logged.get("sigint") == 2
            continue
        assert proc.returncode == 130 and stderr.startswith("error: "), (proc.returncode, stdout, stderr, logged)
        state = next((s for s in ("NOT_COMMITTED", "INDETERMINATE", "COMMITTED") if f"[{s}]" in stderr), "?")
        outcomes[state] += 1
        assert state != "?", stderr
        if state == "NOT_COMMITTED":
            assert ds.log_path.read_bytes() == before
        if state == "COMMITTED":
            assert logged["sigint"] == head == 2 and "seq 2 was committed" in stderr
        report = ds.verify()
        assert report.ok, report.problems
        assert ds.info().rows == (150_000 if "sigint" in logged else 0)
        assert ds.verify().ok and ds.verify().behind == []
    print(f"sigint outcomes: {dict(outcomes)} (an import took {took:.2f} s)")


# == reliability.md §5 A.9 ★ test_fsync_error_is_fatal_and_never_reported_as_success and
#    A.10 ★ test_io_error_injection_loop (fail the k-th write/fsync through the FileOps seam) ==
class FaultyFileOps(FileOps):
    """Raise OSError(err) on the k-th call of `op` (and on every later one when `persistent`)."""

    def __init__(self, op: str, fail_at: int, err: int, *, persistent: bool = False) -> None:
        super().__init__()
        self.op, self.fail_at, self.err, self.persistent = op, fail_at, err, persistent
        self.calls = 0
        self.fired = 0

    def _tick(self, op: str) -> None:
        if op != self.op:
            return
        self.calls += 1
        if self.calls == self.fail_at or (self.persistent and self.calls > self.fail_at):
            self.fired += 1
            raise OSError(self.err, os.strerror(self.err))

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._tick("write")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._tick("fsync")
        super().fsync(fd)


FAULTS = [
    ("write", errno.EIO, False, False),
    ("write", errno.ENOSPC, True, False),
    ("fsync", errno.EIO, False, False),
    ("fsync", errno.EIO, True, False),
    ("write", errno.EIO, False, True),
    ("fsync", errno.EIO, True, True),
]


@pytest.mark.parametrize(
    ("op", "err", "persistent", "torn"),
    FAULTS,
    ids=[f"{o}-{errno.errorcode[e]}-{'every' if p else 'once'}{'-torn' if t else ''}" for o, e, p, t in FAULTS],
)
def test_io_fault_at_each_op_reports_the_true_commit_state(
    tmp_path: Path, op: str, err: int, persistent: bool, torn: bool
) -> None:
    _, ds = _make_dataset(tmp_path)
    ds.add_sequences(_seqs("base"))
    outcomes: Counter[str] = Counter()
    success_not_durable = 0
    for k in range(1, 200):
        if torn:  # a torn tail left by an earlier crash: recovery's own writes are faulted too
            with ds.log_path.open("ab") as fh:
                fh.write(b'{"event_version":1,"timestamp_utc":"2024')
        before = ds.log_path.read_bytes()
        complete_before = before[: before.rfind(b"\n") + 1]
        logged_before, head_before, _ = _logged(ds)
        rows_before = len(logged_before)
        cid = f"fault-{k}"
        faulty = FaultyFileOps(op, k, err, persistent=persistent)
        try:
            with use_fileops(faulty):
                receipt = ds.add_sequences(_seqs(cid), command_id=cid)
        except CommitError as exc:
            outcome = exc.state
        except UsrError as exc:  # any other typed error must still leave the log untouched
            outcome = f"other:{type(exc).__name__}"
        else:
            outcome = "success"
            assert receipt.seq == head_before + 1
        outcomes[outcome] += 1
        after = ds.log_path.read_bytes()
        logged, _, _ = _logged(ds)
        context = f"{op} {errno.errorcode[err]} k={k} -> {outcome}"
        if outcome == "success":
            if cid not in logged:
                success_not_durable += 1
        elif outcome == "NOT_COMMITTED" or outcome.startswith("other:"):
            assert cid not in logged, context
            assert after[: after.rfind(b"\n") + 1] == complete_before, context
            if not torn:
                assert after == before, context
        elif outcome == "COMMITTED":
            assert cid in logged, context
            info = ds.info()  # the next read catches the projection up
            assert info.head_seq == head_before + 1, context
            assert ds.info().projection_lag == 0, context
        else:
            assert outcome == "INDETERMINATE", context
        assert faulty.fired or outcome == "success", context

        # Fault removed: a retry of the same command lands exactly once and the dataset verifies.
        retry = ds.add_sequences(_seqs(cid), command_id=cid)
        assert retry.replayed is (cid in logged), context
        assert len(_logged(ds)[0]) == rows_before + 1, context
        report = ds.verify()
        assert report.ok, f"{context}: {report.problems}"
        assert _temp_leftovers(ds.dir) == [], context
        if faulty.fired == 0:
            break
    else:
        pytest.fail("the import never finished without reaching the fault")
    print(
        f"io faults {op}/{errno.errorcode[err]} persistent={persistent} torn={torn}: ops_faulted={k - 1} "
        f"outcomes={dict(outcomes)} success_reported_but_not_durable={success_not_durable}"
    )
    assert success_not_durable == 0
    assert k > 2  # the loop really walked through several faulted operations
    assert outcomes["success"] >= 1
    assert not [o for o in outcomes if o.startswith("other:")], outcomes


# == reliability.md §5 C.26 ★ test_bitflips_are_always_detected and C.4 ★ test_mid_log_corruption_fails_closed ==
@pytest.fixture
def ten_imports(tmp_path: Path) -> Dataset:
    _, ds = _make_dataset(tmp_path)
    for i in range(9):
        ds.add_sequences(_seqs(f"imp-{i}"), command_id=f"imp-{i}")
    return ds


def test_bitflips_in_an_earlier_line_are_always_detected(ten_imports: Dataset) -> None:
    ds = ten_imports
    seed = _seed()
    rng = random.Random(seed)
    original = ds.log_path.read_bytes()
    lines, _ = read_lines(ds.log_path)
    target = lines[4]  # line 5 of 10
    positions = rng.sample(range(target.offset, target.end), min(250, target.end - target.offset))
    injected = detected = 0
    try:
        for pos in positions:
            damaged = bytearray(original)
            damaged[pos] ^= 1 << rng.randrange(8)
            ds.log_path.write_bytes(bytes(damaged))
            injected += 1
            report = ds.verify()
            if not report.ok and f"line 5, byte offset {target.offset}" in report.problems[0]:
                detected += 1
            else:
                print(f"undetected flip at byte {pos}: {report}")
    finally:
        ds.log_path.write_bytes(original)
    print(f"bitflips_injected={injected} bitflips_detected={detected} undetected={injected - detected} seed={seed}")
    assert detected == injected == len(positions)
    assert ds.verify().ok


@pytest.mark.parametrize("projection", ["anchored", "lagging"])
def test_bad_complete_line_mid_log_blocks_writes_and_appends_nothing(ten_imports: Dataset, projection: str) -> None:
    ds = ten_imports
    lines, _ = read_lines(ds.log_path)
    target = lines[4]
    data = bytearray(ds.log_path.read_bytes())
    at = target.offset + (target.end - target.offset) // 2
    data[at] ^= 0x04
    ds.log_path.write_bytes(bytes(data))
    if projection == "lagging":
        ds.records_path.unlink()  # the writer must scan the whole log itself
    digest = hashlib.sha256(ds.log_path.read_bytes()).hexdigest()
    with pytest.raises(CorruptLog) as caught:
        ds.add_sequences(_seqs("blocked"), command_id="blocked")
    assert (caught.value.line, caught.value.offset) == (5, target.offset)
    assert f"line 5, byte offset {target.offset}" in str(caught.value)
    assert hashlib.sha256(ds.log_path.read_bytes()).hexdigest() == digest
    assert not ds.verify().ok


@pytest.mark.parametrize("damage", ["dropped", "flipped"])
def test_a_lost_final_newline_keeps_the_committed_last_line(ten_imports: Dataset, damage: str) -> None:
    ds = ten_imports
    intact = ds.log_path.read_bytes()
    last = read_lines(ds.log_path)[0][-1]
    ds.log_path.write_bytes(intact[:-1] if damage == "dropped" else intact[:-1] + b"\x0b")
    report = ds.verify()
    assert report.ok and "seq 10" in report.notes[0] and "newline" in report.notes[0]
    assert ds.info().head_seq == 10  # a reader sees the line
    receipt = ds.add_sequences(_seqs("after-damage"), command_id="after-damage")
    assert receipt.seq == 11  # nothing rolled back, no seq reused
    assert any("newline" in warning for warning in receipt.warnings)
    lines, scan = read_lines(ds.log_path)
    assert lines[9].record.event_id == last.record.event_id
    assert ds.log_path.read_bytes()[: len(intact)] == intact
    assert scan.torn_bytes == 0 and ds.verify().ok
    assert [q["size_bytes"] for q in _quarantined(ds)] == ([1] if damage == "flipped" else [])


@pytest.mark.parametrize("cut", ["at a line boundary", "mid-line"])
def test_a_log_shorter_than_its_projections_refuses_writes_instead_of_losing_lines(
    ten_imports: Dataset, cut: str
) -> None:
    ds = ten_imports
    lines, _ = read_lines(ds.log_path)
    end = lines[-2].end if cut == "at a line boundary" else lines[-1].offset + 40
    ds.log_path.write_bytes(ds.log_path.read_bytes()[:end])
    shortened = ds.log_path.read_bytes()
    with pytest.raises(IntegrityError, match="the log lost committed lines"):
        ds.add_sequences(_seqs("on-a-short-log"))
    assert ds.log_path.read_bytes() == shortened  # nothing quarantined, nothing appended
    report = ds.verify(fix=True)
    assert not report.ok and not report.log_ok and report.repaired == []
    assert "the log lost committed lines" in report.problems[0]
    ds.maintenance.rebuild()  # accepting the shorter log is explicit
    assert ds.add_sequences(_seqs("after-rebuild")).seq == 10


@pytest.mark.parametrize("edit", ["delete", "swap", "duplicate"])
def test_deleted_swapped_or_duplicated_line_is_detected(ten_imports: Dataset, edit: str) -> None:
    ds = ten_imports
    raw = ds.log_path.read_bytes().splitlines(keepends=True)
    if edit == "delete":
        del raw[4]
    elif edit == "swap":
        raw[4], raw[5] = raw[5], raw[4]
    else:
        raw.insert(5, raw[4])
    ds.log_path.write_bytes(b"".join(raw))
    report = ds.verify()
    assert not report.ok
    assert "line 5," in report.problems[0] or "line 6," in report.problems[0]
    before = ds.log_path.read_bytes()
    with pytest.raises(CorruptLog):
        ds.add_sequences(_seqs("after-edit"))
    assert ds.log_path.read_bytes() == before


# == reliability.md §5 E.41 test_symlinked_or_hardlinked_control_files_refused and E.45 test_file_modes ==
@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "outside" / "canary"
    path.parent.mkdir()
    path.write_bytes(b"do not touch\n")
    yield path


def test_symlinked_lock_file_is_refused(tmp_path: Path, canary: Path) -> None:
    _, ds = _make_dataset(tmp_path)
    before = ds.log_path.read_bytes()
    lock = ds.dir / ".usr.lock"
    lock.unlink()
    lock.symlink_to(canary)
    with pytest.raises(IntegrityError, match="symlink"):
        ds.add_sequences(_seqs("via-symlink"))
    assert canary.read_bytes() == b"do not touch\n"
    assert ds.log_path.read_bytes() == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_linked_event_log_is_refused(tmp_path: Path, link: str) -> None:
    _, ds = _make_dataset(tmp_path)
    ds.add_sequences(_seqs("first"))
    outside = tmp_path / "outside.log"
    os.replace(ds.log_path, outside)  # a valid log, so only the link itself can cause the refusal
    if link == "symlink":
        ds.log_path.symlink_to(outside)
    else:
        os.link(outside, ds.log_path)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    refusal = "symlink" if link == "symlink" else "one link"
    with pytest.raises(IntegrityError, match=refusal):
        ds.add_sequences(_seqs("via-link"))
    for read in (ds.info, lambda: ds.head(1), ds.log.events):  # readers refuse it too
        with pytest.raises(IntegrityError, match=refusal):
            read()
    report = ds.verify()
    assert not report.ok and refusal in report.problems[0]
    assert hashlib.sha256(outside.read_bytes()).hexdigest() == digest


def test_created_files_are_never_world_writable_even_under_umask_0(tmp_path: Path) -> None:
    root = _make_root(tmp_path)  # the datasets root is the user's directory, made under their umask
    old = os.umask(0)
    try:
        ds = Dataset.open(root, DATASET)
        ds.init(source="umask")
        ds.add_sequences(_seqs("umask"))
        with ds.log_path.open("ab") as fh:  # a torn tail, so the quarantine file is created as well
            fh.write(b'{"torn')
        ds.add_sequences(_seqs("umask-2"))
        ds.maintenance.rebuild()
    finally:
        os.umask(old)
    paths = [ds.dir, *ds.dir.rglob("*")]
    assert (ds.dir / QUARANTINE_FILE).exists()
    bad = [str(p) for p in paths if p.lstat().st_mode & stat.S_IWOTH]
    assert bad == []
    assert stat.S_IMODE((ds.dir / ".usr.lock").stat().st_mode) == 0o600
    assert not stat.S_IMODE((ds.dir / LOG_FILE).stat().st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
