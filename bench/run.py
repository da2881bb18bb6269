"""`make bench`: `usr import` against the physical baseline in the same run, plus CLI latency.

Runs every step as its own child process, the way a user runs it, and reads the child's wall time and
peak RSS (`os.wait4`). Writes a markdown table to stdout and to bench/results/latest.md. Needs
../shared/bench (the workload generator and the baseline); the test suite never does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "bench"
GENERATOR = SHARED / "gen_workload.py"
BASELINE = SHARED / "physical_baseline.py"
OUT = HERE / "out"
RESULTS = HERE / "results" / "latest.md"
BIN = Path(sys.executable).parent  # the interpreter the Makefile uses (.venv/bin); `usr` lives beside it
USR = BIN / "usr"
DATASET = "bench/sequences"
REPEATS = 5

# Targets from the issue.
IMPORT_RATIO = 1.3
HELP_SECONDS = 0.2
READ_SECONDS = 0.25
IMPORT_RSS_BYTES = 1_000_000_000


@dataclass(frozen=True)
class Run:
    """One finished child process: wall seconds, peak RSS in bytes, exit code and output."""

    seconds: float
    peak_rss: int
    code: int
    stdout: str
    stderr: str


def run(argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run `argv` to completion; measure its wall time and its own peak RSS (`ru_maxrss` from wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        return Run(seconds, usage.ru_maxrss * 1024, proc.returncode, out.read().decode(), err.read().decode())


def checked(argv: list[str], *, env: dict[str, str], what: str) -> Run:
    result = run(argv, env=env)
    if result.code != 0:
        sys.stderr.write(f"bench: {what} failed (exit {result.code}): {' '.join(argv)}\n{result.stderr}")
        raise SystemExit(1)
    return result


def median_of(argv: list[str], *, env: dict[str, str], what: str) -> tuple[float, list[float]]:
    times = [checked(argv, env=env, what=what).seconds for _ in range(REPEATS)]
    return statistics.median(times), times


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USR_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env


def workload(n: int, *, env: dict[str, str], regenerate: bool) -> tuple[Path, float | None]:
    """The generated workload for `n` (cached under bench/out: it is a pure function of n and the seed)."""
    work = OUT / f"workload-{n}"
    manifest = work / "manifest.json"
    if not regenerate and manifest.is_file() and json.loads(manifest.read_text()).get("n") == n:
        return work, None
    shutil.rmtree(work, ignore_errors=True)
    print(f"generating {n:,} sequences with {GENERATOR} ...", flush=True)
    made = checked([sys.executable, str(GENERATOR), str(n), "--out", str(work)], env=env, what="gen_workload")
    return work, made.seconds


def baseline(work: Path, out: Path, *, env: dict[str, str]) -> tuple[dict[str, float], Run]:
    out.mkdir(parents=True)
    result = checked([sys.executable, str(BASELINE), str(work), str(out)], env=env, what="physical baseline")
    steps = {}
    for line in result.stdout.splitlines():
        name, _, value = line.strip().partition(" ")
        try:
            steps[name] = float(value)
        except ValueError:
            continue
    if "import" not in steps:
        sys.stderr.write(f"bench: no `import <seconds>` line in the baseline output:\n{result.stdout}")
        raise SystemExit(1)
    return steps, result


def mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="number of generated sequences")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the cached workload")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark root under bench/out")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if not GENERATOR.is_file() or not BASELINE.is_file():
        sys.stderr.write(
            f"bench: the shared benchmark scripts are missing: expected {GENERATOR} and {BASELINE}.\n"
            "bench: `make bench` needs the ../shared checkout next to this repository (tests do not).\n"
        )
        return 2
    if not USR.is_file():
        sys.stderr.write(f"bench: no `usr` next to {sys.executable}; run `make venv` (or pip install -e .) first.\n")
        return 2

    env = child_env()
    work, generated = workload(args.n, env=env, regenerate=args.regenerate)
    scratch = OUT / f"run-{args.n}"
    shutil.rmtree(scratch, ignore_errors=True)
    root = scratch / "root"
    root.mkdir(parents=True)

    print("physical baseline ...", flush=True)
    base_steps, base_run = baseline(work, scratch / "baseline", env=env)

    usr = [str(USR), "--root", str(root)]
    checked([*usr, "namespace", "register", "bench", "--columns", "bench__score:float64"], env=env, what="register")
    checked([*usr, "init", DATASET, "--source", "bench"], env=env, what="init")
    print("usr import ...", flush=True)
    imported = checked(
        [*usr, "import", DATASET, "--from", "csv", "--path", str(work / "sequences.csv"), "--format", "json"],
        env=env,
        what="usr import",
    )
    rows = json.loads(imported.stdout)["data"]["metrics"]["rows_written"]

    print("usr --help / info / head ...", flush=True)
    help_s, help_all = median_of([str(USR), "--help"], env=env, what="usr --help")
    info_s, info_all = median_of([*usr, "info", DATASET, "--format", "json"], env=env, what="usr info")
    head_s, head_all = median_of([*usr, "head", DATASET, "-n", "5", "--format", "json"], env=env, what="usr head")
    print("usr verify / rebuild ...", flush=True)
    verified = checked([*usr, "verify", DATASET], env=env, what="usr verify")
    rebuilt = checked([*usr, "rebuild", DATASET], env=env, what="usr rebuild")

    dataset_dir = root / DATASET
    records = (dataset_dir / "records.parquet").stat().st_size
    log_size = (dataset_dir / ".events.log").stat().st_size
    payloads = sum(p.stat().st_size for p in (dataset_dir / "_payloads").iterdir())
    ratio = imported.seconds / base_steps["import"]
    checks = [
        ratio <= IMPORT_RATIO,
        imported.peak_rss <= IMPORT_RSS_BYTES,
        help_s <= HELP_SECONDS,
        info_s <= READ_SECONDS,
        head_s <= READ_SECONDS,
    ]

    def spread(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    import pyarrow

    lines = [
        f"# usr_es benchmark, N = {args.n:,}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} · {platform.node()} · {os.cpu_count()} CPU · "
        f"{platform.system()} {platform.release()} · Python {platform.python_version()} · "
        f"pyarrow {pyarrow.__version__}",
        "",
        "| step | figure | target | result |",
        "|------|--------|--------|--------|",
        f"| physical baseline import | {base_steps['import']:.2f} s (peak RSS of the whole script "
        f"{mb(base_run.peak_rss)}) | | |",
        f"| `usr import` ({rows:,} rows, wall time of the process) | {imported.seconds:.2f} s = "
        f"{ratio:.2f}× baseline | ≤ {IMPORT_RATIO}× baseline | {verdict(checks[0])} |",
        f"| `usr import` peak RSS | {mb(imported.peak_rss)} | ≤ {mb(IMPORT_RSS_BYTES)} | {verdict(checks[1])} |",
        f"| `usr --help` (median of {REPEATS}) | {help_s:.3f} s | ≤ {HELP_SECONDS} s | {verdict(checks[2])} |",
        f"| `usr info` (median of {REPEATS}) | {info_s:.3f} s | ≤ {READ_SECONDS} s | {verdict(checks[3])} |",
        f"| `usr head -n 5` (median of {REPEATS}) | {head_s:.3f} s | ≤ {READ_SECONDS} s | {verdict(checks[4])} |",
        f"| `usr verify` | {verified.seconds:.2f} s, peak RSS {mb(verified.peak_rss)} | none | |",
        f"| `usr rebuild` | {rebuilt.seconds:.2f} s, peak RSS {mb(rebuilt.peak_rss)} | none | |",
        f"| physical baseline attach (later issue) | {base_steps.get('attach', float('nan')):.2f} s | | |",
        f"| physical baseline materialize (later issue) | {base_steps.get('materialize', float('nan')):.2f} s | | |",
        "",
        "`usr` figures are whole-process wall times (interpreter start-up and imports included); the baseline's "
        "import figure is its own in-script timer (its imports excluded).",
        f"Runs (s): `--help` {spread(help_all)}; `info` {spread(info_all)}; `head` {spread(head_all)}.",
        f"Files: records.parquet {mb(records)}, .events.log {log_size:,} bytes, _payloads {mb(payloads)}; "
        f"sequences.csv {mb((work / 'sequences.csv').stat().st_size)}"
        + (f" (generated in {generated:.1f} s)." if generated is not None else " (cached workload)."),
        f"Verify: {verified.stdout.strip()}",
        "",
        f"**{sum(checks)}/{len(checks)} targets met.**",
    ]
    text = "\n".join(lines) + "\n"
    print()
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if args.strict and not all(checks) else 0


if __name__ == "__main__":
    sys.exit(main())
