"""Test writer process: performs N small imports and prints `ACK <seq> <command_id>` after each returns.

Run as `python tests/writer.py ROOT DATASET --writer W --count N [--tag T] [--rows R] [--init]`.
Crash/split switches come from the environment (`USR_ES_CRASH_AT`, `USR_ES_TEST_SPLIT_APPEND`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
from pathlib import Path

from usr_es.fileio import FileOps, reset_fileops, use_fileops


def batch(tag: str, writer: int, iteration: int, rows: int) -> list[str]:
    """Sequences unique to (tag, writer, iteration): a 40-mer body from a seeded generator."""
    rng = random.Random(f"{tag}/{writer}/{iteration}")
    return ["".join(rng.choice("ACGT") for _ in range(40)) for _ in range(rows)]


def command_id(tag: str, writer: int, iteration: int) -> str:
    return f"{tag}-w{writer}-i{iteration}"


class TearingFileOps(FileOps):
    """SIGKILLs this process right after the first half of the k-th split log append (a sure torn tail)."""

    def __init__(self, kill_at: int) -> None:
        super().__init__()
        self.split_appends = True
        self._kill_at = kill_at
        self._appends = 0
        self._log_fds: set[int] = set()

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        if path.name == ".events.log" and flags & os.O_APPEND:
            self._log_fds.add(fd)
        return fd

    def close(self, fd: int) -> None:
        self._log_fds.discard(fd)
        super().close(fd)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        written = super().write(fd, data)
        if fd in self._log_fds:
            self._appends += 1
            if self._appends == 2 * self._kill_at - 1:  # first half of append number kill_at
                os.kill(os.getpid(), signal.SIGKILL)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("dataset")
    parser.add_argument("--writer", type=int, default=0)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--tag", default="t")
    parser.add_argument("--init", action="store_true", help="init the dataset first (ACKed like an import)")
    parser.add_argument("--tear-at", type=int, default=0, help="SIGKILL inside the k-th log append")
    args = parser.parse_args(argv)

    reset_fileops()
    from usr_es import Dataset  # loads pyarrow

    ops = TearingFileOps(args.tear_at) if args.tear_at else None
    ds = Dataset.open(args.root, args.dataset)
    print("READY", flush=True)
    with use_fileops(ops) if ops is not None else contextlib.nullcontext():
        if args.init:
            cid = f"{args.tag}-w{args.writer}-init"
            receipt = ds.init(source="writer", command_id=cid)
            sys.stdout.write(f"ACK {receipt.seq} {receipt.command_id}\n")
            sys.stdout.flush()
        for i in range(args.count):
            cid = command_id(args.tag, args.writer, i)
            receipt = ds.add_sequences(batch(args.tag, args.writer, i, args.rows), source="writer", command_id=cid)
            sys.stdout.write(f"ACK {receipt.seq} {receipt.command_id}\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
