"""Rows that run real writer processes: random SIGKILLs, and concurrent writers with a reader."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from usr_es import CorruptLog, Dataset, UsrError
from usr_es.log import LogLine, read_lines, whole_line
from usr_es.names import QUARANTINE_FILE
from usr_es.registry import register_namespace, split_columns_spec

from . import Row, Scale, clean_env, rng_for, timed, workdir
from .worker import NAMESPACE, REGISTER

DATASET = "rel/ds"
REPO = Path(__file__).resolve().parents[2]


def make_dataset(tmp: Path) -> tuple[Path, Dataset]:
    root = tmp / "root"
    register_namespace(root, NAMESPACE, split_columns_spec(REGISTER))
    ds = Dataset.open(root, DATASET)
    ds.init(source="reliability")
    return root, ds


def spawn(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tools.reliability.worker", str(root), DATASET, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env if env is not None else clean_env(),
    )


def acks(stdout: str) -> dict[str, int]:
    found = {}
    for line in stdout.splitlines():
        if line.startswith("ACK "):
            _, seq, cid = line.split()
            found[cid] = int(seq)
    return found


def logged(ds: Dataset) -> tuple[dict[str, int], int, tuple[int, bytes] | None]:
    """command_id -> seq of every line (the chain verified on the way), the head seq, and the torn tail
    as (offset, its bytes) (None: the log ends with a whole line)."""
    lines, scan = read_lines(ds.log_path)
    torn = None
    if scan.torn_offset is not None and scan.torn_bytes:
        with ds.log_path.open("rb") as fh:
            fh.seek(scan.torn_offset)
            torn = (scan.torn_offset, fh.read(scan.torn_bytes))
    return {line.record.command_id: line.seq for line in lines}, scan.seq, torn


def quarantined(ds: Dataset) -> list[bytes]:
    path = ds.dir / QUARANTINE_FILE
    if not path.exists():
        return []
    return [base64.b64decode(json.loads(line)["bytes_b64"]) for line in path.read_text().splitlines()]


def order_figures(ds: Dataset) -> tuple[list[LogLine], int, int, int, dict[str, int]]:
    """The log's lines (every hash and prev link verified on the way), duplicate seqs, seq gaps,
    commands logged more than once, and command id -> seq."""
    lines, scan = read_lines(ds.log_path)
    seqs = [line.seq for line in lines]
    cids = Counter(line.record.command_id for line in lines)
    duplicate_seq = len(seqs) - len(set(seqs))
    gaps = len(set(range(1, scan.seq + 1)) - set(seqs))
    duplicates = sum(n - 1 for n in cids.values())
    return lines, duplicate_seq, gaps, duplicates, {line.record.command_id: line.seq for line in lines}


@timed
def sigkill(scale: Scale) -> Row:
    """Random SIGKILLs of writer processes (API and CLI, every command type); a quarter are torn appends."""
    row = Row("SIGKILL of real writers", "§2.1 durable acknowledgement, §2.2 atomic commands, §2.5 torn tails")
    rng = rng_for(scale, "sigkill")
    with workdir("kill") as tmp:
        root, ds = make_dataset(tmp)
        acked: dict[str, int] = {}
        kinds: Counter[str] = Counter()
        lost = verify_failures = 0
        torn_tails: set[tuple[int, bytes]] = set()  # a tail no write came to quarantine is seen after two kills
        for kill in range(scale.kills):
            via = rng.choice(["api", "cli"])
            torn = kill % 4 == 3
            env = clean_env(USR_ES_TEST_SPLIT_APPEND="1", USR_ES_CRASH_AT=f"between_halves:log:{rng.randint(1, 3)}")
            args = ["--writer", "0", "--count", "40", "--seed", str(kill), "--via", via]
            proc = spawn(root, *args, env=env if torn else None)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                row.fail(f"worker did not start: {proc.communicate()[1][-300:]}")
                continue
            if not torn:
                time.sleep(rng.uniform(0.0, 0.6))
                proc.send_signal(signal.SIGKILL)
            stdout, _ = proc.communicate(timeout=120)
            kinds.update(line.split()[2] for line in stdout.splitlines() if line.startswith("REFUSED"))
            acked.update(acks(stdout))
            in_log, _, torn_tail = logged(ds)
            if torn_tail is not None:
                torn_tails.add(torn_tail)
            missing = [cid for cid, seq in acked.items() if in_log.get(cid) != seq]
            lost += len(missing)
            if missing:
                row.fail(f"kill {kill}: acknowledged but not in the log at their seq: {missing[:3]}")
                acked = {cid: seq for cid, seq in acked.items() if cid not in missing}
            report = ds.verify()
            if not report.ok:
                verify_failures += 1
                row.fail(f"kill {kill}: verify: {report.problems[0]}")
        try:
            ds.add_sequences(["ACGTTGCAACGT"], command_id="final")  # recovers the last torn tail, if any
        except UsrError as exc:
            row.fail(f"the write after the last kill failed: {exc}")
        fragments = quarantined(ds)
        wrongly = sum(whole_line(f.rstrip(b"\n")) is not None for f in fragments)  # a whole, hash-valid line
        row.note("kills", scale.kills)
        row.require("acked_events", len(acked), len(acked) > 0)
        row.require("acked_events_lost", lost, lost == 0)
        torn_seen = len(torn_tails)
        row.require("torn_tails_seen", torn_seen, torn_seen > 0 or scale.kills < 4)  # every 4th kill tears
        row.require("torn_tails_quarantined", len(fragments), len(fragments) == torn_seen)
        row.require("valid_lines_wrongly_quarantined", wrongly, wrongly == 0)
        row.require("verify_failures", verify_failures, verify_failures == 0)
        final = ds.verify()
        row.require("final_verify_ok", int(final.ok), final.ok)
    return row


#: The reader of the concurrency row verifies every this many loops of its reads.
VERIFY_EVERY = 10


@timed
def concurrency(scale: Scale) -> Row:
    """Writer processes run a mixed workload at once while a reader loops over every read and verify."""
    row = Row("concurrent writers + reader", "§2.3 serializable writes, prefix-consistent reads")
    with workdir("conc") as tmp:
        root, ds = make_dataset(tmp)
        stop = threading.Event()
        reads: Counter[str] = Counter()
        errors: list[str] = []
        false_failures = 0

        def reader() -> None:
            nonlocal false_failures
            view = Dataset.open(root, DATASET)
            loops = 0
            while not stop.is_set():
                loops += 1
                # verify replays the whole growing log (and confirms a difference under the lock, which
                # stalls every writer meanwhile): every VERIFY_EVERY-th loop, or the writers mostly wait
                calls: list[tuple[str, Callable[[], object]]] = [
                    ("head", lambda: view.head(3)),
                    ("info", view.info),
                    ("view", view.view),
                    ("get", lambda: view.get(view.head(1).column("id").to_pylist(), include_deleted=True)),
                ]
                if loops % VERIFY_EVERY == 1:
                    calls.append(("verify", view.verify))
                for name, call in calls:
                    try:
                        result = call()
                    except UsrError as exc:
                        errors.append(f"{name}: {type(exc).__name__}: {exc}")
                        continue
                    except Exception as exc:
                        errors.append(f"{name}: untyped {type(exc).__name__}: {exc}")
                        continue
                    reads[name] += 1
                    if name == "verify" and not getattr(result, "ok", True):
                        false_failures += 1
                        errors.append(f"verify: {getattr(result, 'problems', [''])[0]}")

        started = time.monotonic()
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        procs = []
        for w in range(scale.writers):
            via = "cli" if w % 2 else "api"
            args = ["--writer", str(w), "--count", str(scale.writes_per_writer), "--seed", "1", "--via", via]
            procs.append(spawn(root, *args))
        outputs = [p.communicate(timeout=3600) for p in procs]
        elapsed = time.monotonic() - started
        stop.set()
        thread.join(timeout=120)
        acked: dict[str, int] = {}
        for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
            if proc.returncode != 0:
                row.fail(f"writer exited {proc.returncode}: {stderr[-300:]}")
            acked.update(acks(stdout))
        try:
            lines, duplicate_seq, gaps, duplicates, by_cid = order_figures(ds)
            chain_breaks = 0
        except CorruptLog as exc:  # the chain itself broke: nothing else can be counted
            row.fail(str(exc))
            row.require("chain_breaks", 1, False)
            return row
        lost = sum(1 for cid, seq in acked.items() if by_cid.get(cid) != seq)
        for error in errors[:5]:
            row.fail(error)
        row.note("writers_x_writes", scale.writers * scale.writes_per_writer)
        row.require("events_appended", len(lines) - 1, len(lines) - 1 == len(acked))
        row.require("lost_writes", lost, lost == 0)
        row.require("duplicate_seq", duplicate_seq, duplicate_seq == 0)
        row.require("duplicate_commands", duplicates, duplicates == 0)
        row.require("gaps", gaps, gaps == 0)
        row.require("chain_breaks", chain_breaks, chain_breaks == 0)
        row.require("reader_errors", len(errors) - false_failures, len(errors) == false_failures)
        row.require("false_verify_failures", false_failures, false_failures == 0)
        row.note("reads", sum(reads.values()))
        row.require("verifies", reads["verify"], reads["verify"] > 0)
        row.note("writes_per_s", round(len(acked) / elapsed, 1))
        final = ds.verify()
        row.require("final_verify_ok", int(final.ok), final.ok)
    return row
