"""`make bench-scale`: does a write cost what it writes? Issue 11's table, measured at two sizes in one run.

For each N (default 1,000,000 and 10,000,000 generated sequences, `../shared/bench/gen_workload.py`), `usr`
runs every step as a child process, the way a user runs it; each figure is the child's wall time and peak
RSS (`os.wait4`). The bulk steps run in BULK_ROUNDS rounds, each a run of the physical baseline
(`../shared/bench/physical_baseline.py`) followed by `usr` import, attach and materialize in a dataset of
its own; both sides' figures are the medians over the rounds. The small writes and reads run on a copy of
the last round's dataset taken before it materialized. The table gives both sizes, the growth ratio
(largest N over smallest) and the ratio to the baseline where one applies; the rounds' own figures follow
it. A streaming import of a generated `--stream-rows` CSV (default 30,000,000) comes last. Writes
bench/results/scale.md. Needs ../shared/bench (the test suite never does).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (bench/run.py: the child runner, workload and baseline of `make bench`)

RESULTS = HERE / "results" / "scale.md"
SMALL = 1_000
SMALL_RUNS = 3  # each small write is measured on this many distinct inputs; reads repeat bench.REPEATS times
#: Rounds of the bulk steps: each round runs the physical baseline once, then `usr` imports, attaches and
#: materializes N rows in a dataset of its own, so the medians on both sides are taken over the same stretch
#: of this VM's noise (one `usr` run against a median of three baseline runs moved the 1M attach's ratio from
#: 1.18× to 1.37× between two runs of the same code).
BULK_ROUNDS = 3
BULK = ("import", "attach", "materialize")
NAMESPACE = "bench"
LATE = "late"  # a second namespace, written by the small attaches
SMALL_SECONDS = 0.3
SMALL_RSS = 300_000_000
SMALL_GROWTH = 1.5
BULK_RATIO = 1.3
BULK_RSS_10M = 1_500_000_000
MATERIALIZE_RSS_10M = 2_000_000_000
READ_SECONDS = 0.25
GREP_SECONDS = 1.0
EXPORT_RATIO = 1.3
REBUILD_RSS = 2_000_000_000
STREAM_RSS = 2_000_000_000
LARGE = 10_000_000  # the size the absolute 10M targets apply at


@dataclass
class Step:
    """One measured step: wall seconds and peak RSS per size, plus the baseline's seconds where one applies."""

    label: str
    kind: str  # small | bulk | read | rss
    seconds: dict[int, float] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)
    baseline: dict[int, float] = field(default_factory=dict)
    runs: int = 1  # the figures are the median wall time (and the largest peak RSS) of this many runs
    rounds: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # bulk: (usr, baseline) per round


def new_sequences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices("ACGT", k=rng.randint(60, 200))) for _ in range(n)]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def measure(n: int, steps: dict[str, Step], scratch: Path, env: dict[str, str]) -> None:
    import pyarrow.parquet as pq

    work, _ = bench.workload(n, env=env, regenerate=False)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    dataset = bench.DATASET
    root = scratch / "root"  # a copy of the last round's dataset before it materializes: the small writes run on it
    bulk_argv = {
        "import": ["import", dataset, "--from", "csv", "--path", str(work / "sequences.csv")],
        "attach": ["attach", dataset, "--path", str(work / "overlay.csv"), "--namespace", NAMESPACE,
                   "--key", "sequence", "--columns", "score,vec"],
        "materialize": ["materialize", dataset, "--yes"],
    }  # fmt: skip
    bulk: dict[str, list[bench.Run]] = {name: [] for name in BULK}
    baselines: list[dict[str, float]] = []
    for k in range(BULK_ROUNDS):
        print(f"[{n:,}] round {k + 1} of {BULK_ROUNDS}: physical baseline, then usr {', '.join(BULK)} ...", flush=True)
        baselines.append(bench.baseline_once(work, scratch / "baseline", env=env)[0])
        here = scratch / f"round-{k}"
        usr = [str(bench.USR), "--root", str(here)]
        overlay = ["namespace", "register", NAMESPACE, "--columns", bench.OVERLAY_COLUMNS]
        bench.checked([*usr, *overlay], env=env, what="ns")
        bench.checked([*usr, "init", dataset, "--source", "bench"], env=env, what="init")
        for name in BULK:
            if name == "materialize" and k == BULK_ROUNDS - 1:
                shutil.copytree(here, root, symlinks=True)  # (bench.run flushes the copy before the next step)
            bulk[name].append(bench.checked([*usr, *bulk_argv[name]], env=env, what=f"usr {name}"))
        shutil.rmtree(here)
    shutil.rmtree(scratch / "baseline", ignore_errors=True)
    usr = [str(bench.USR), "--root", str(root)]
    bench.checked([*usr, "namespace", "register", LATE, "--columns", f"{LATE}__score:float64"], env=env, what="ns")

    def record_bulk(name: str, label: str) -> None:
        runs = bulk[name]
        record = steps.setdefault(name, Step(label, "bulk"))
        record.seconds[n] = statistics.median(run.seconds for run in runs)
        record.rss[n] = max(run.peak_rss for run in runs)
        record.baseline[n] = statistics.median(each[name] for each in baselines)
        record.runs = len(runs)
        record.rounds[n] = [(run.seconds, each[name]) for run, each in zip(runs, baselines, strict=True)]

    record_bulk("import", "import of all N rows (CSV)")
    record_bulk("attach", "attach of N rows by sequence (score + 8-float vector)")
    record_bulk("materialize", "materialize")

    def step(
        key: str,
        label: str,
        kind: str,
        argv: list[str],
        *,
        again: Sequence[list[str]] = (),
    ) -> bench.Run:
        """Run `usr argv` (and each of `again`: the same step on other inputs, or a read repeated); the figure
        is the median wall time of the runs and their largest peak RSS."""
        print(f"[{n:,}] {label} ...", flush=True)
        runs = [bench.checked([*usr, *each], env=env, what=label) for each in (argv, *again)]
        record = steps.setdefault(key, Step(label, kind))
        record.seconds[n] = statistics.median(run.seconds for run in runs)
        record.rss[n] = max(run.peak_rss for run in runs)
        if len(runs) > 1:
            record.runs = len(runs)
        return runs[0]

    # Each small write runs SMALL_RUNS times on distinct inputs (fresh sequences, other ids): the median is
    # its figure. The bulk steps' gigabytes are flushed first, so the small ones do not wait on that writeback.
    known = pq.read_table(scratch / "root" / dataset / "records.parquet", columns=["id", "sequence"]).slice(
        n // 4,
        SMALL * SMALL_RUNS,  # clear of the probe id (row n // 2) that `get --id` reads
    )
    small: dict[str, list[list[str]]] = {}
    for k in range(SMALL_RUNS):
        part = known.slice(k * SMALL, SMALL)
        fresh = write_csv(scratch / f"new-{k}.csv", "sequence", new_sequences(SMALL, seed=n * SMALL_RUNS + k))
        sequences = [f"{s},{j}" for j, s in enumerate(part["sequence"].to_pylist())]
        by_sequence = write_csv(scratch / f"by_sequence-{k}.csv", "sequence,score", sequences)
        ids = part["id"].to_pylist()
        by_id = write_csv(scratch / f"by_id-{k}.csv", "id,score", [f"{i},{j}" for j, i in enumerate(ids)])
        id_file = scratch / f"ids-{k}.txt"
        id_file.write_text("\n".join(ids) + "\n")
        for key, argv in {
            "small_import": ["import", dataset, "--from", "csv", "--path", str(fresh)],
            "small_attach_sequence": ["attach", dataset, "--path", str(by_sequence), "--namespace", LATE,
                                      "--key", "sequence", "--columns", "score"],
            "small_attach_id": ["attach", dataset, "--path", str(by_id), "--namespace", LATE, "--key", "id",
                                "--columns", "score", "--allow-overwrite"],
            "small_state": ["state", "set", dataset, "--id-file", str(id_file), "--qc-status", "pass"],
            "small_delete": ["delete", dataset, "--id-file", str(id_file)],
        }.items():  # fmt: skip
            small.setdefault(key, []).append(argv)
    os.sync()
    labels = {
        "small_import": f"import of {SMALL:,} new sequences",
        "small_attach_sequence": f"attach of {SMALL:,} rows by sequence",
        "small_attach_id": f"attach of {SMALL:,} rows by id",
        "small_state": f"state set of {SMALL:,} ids",
        "small_delete": f"delete of {SMALL:,} ids",
    }
    for key, label in labels.items():
        first, *others = small[key]
        step(key, label, "small", first, again=others)

    probe = (work / "probe_id.txt").read_text().strip()
    for key, label, kind, argv in (
        ("head", "`head -n 5`", "read", ["head", dataset, "-n", "5", "--format", "json"]),
        ("get", "`get --id`", "read", ["get", dataset, "--id", probe, "--format", "json"]),
        ("info", "`info`", "read", ["info", dataset, "--format", "json"]),
        ("grep", f"`grep` for {bench.GREP_PATTERN}", "grep",
         ["grep", dataset, "--pattern", bench.GREP_PATTERN, "--limit", "20", "--format", "json"]),
    ):  # fmt: skip
        step(key, label, kind, argv, again=[argv] * (bench.REPEATS - 1))
    out = scratch / "export.parquet"
    step("export", "`export --fmt parquet`", "export", ["export", dataset, "--fmt", "parquet", "--out", str(out)])
    # The yardstick reads and writes the exported table itself with pyarrow: every column the export wrote,
    # overlay columns included (records.parquet holds only the base's, not yet the 8-float vectors).
    plain = bench.checked(
        [sys.executable, str(HERE / "run.py"), bench.EXPORT_PROBE, str(out), str(scratch / "plain.parquet"),
         ",".join(pq.read_schema(out).names)],
        env=env,
        what="export baseline",
    )  # fmt: skip
    steps["export"].baseline[n] = float(plain.stdout.strip())
    step("verify", "`verify`", "rss", ["verify", dataset])
    step("rebuild", "`rebuild`", "rss", ["rebuild", dataset])


def stream_csv(path: Path, rows: int) -> float:
    """A CSV of `rows` distinct DNA sequences (a random body and a unique base-4 tail); returns seconds."""
    start = time.perf_counter()
    rng = random.Random(rows)
    bodies = ["".join(rng.choices("ACGT", k=rng.randint(60, 180))) for _ in range(4096)]
    digits = "ACGT"
    with path.open("w") as fh:
        fh.write("sequence\n")
        block: list[str] = []
        for k in range(rows):
            tail, v = [], k
            for _ in range(13):
                tail.append(digits[v & 3])
                v >>= 2
            block.append(bodies[k & 4095] + "".join(tail))
            if len(block) == 100_000:
                fh.write("\n".join(block) + "\n")
                block = []
        if block:
            fh.write("\n".join(block) + "\n")
    return time.perf_counter() - start


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def verdicts(record: Step, sizes: list[int]) -> tuple[str, bool | None]:
    """The targets of issue 11 for one step, and whether they hold."""
    large = [n for n in sizes if n >= LARGE]
    growth = record.seconds[sizes[-1]] / record.seconds[sizes[0]] if len(sizes) > 1 else 1.0
    match record.kind:
        case "small":
            ok = all(record.seconds[n] <= SMALL_SECONDS and record.rss[n] <= SMALL_RSS for n in sizes)
            return f"≤ {SMALL_SECONDS} s, ≤ 300 MB, growth ≤ {SMALL_GROWTH}", ok and growth <= SMALL_GROWTH
        case "bulk":
            cap = MATERIALIZE_RSS_10M if record.label == "materialize" else BULK_RSS_10M
            ok = all(record.seconds[n] <= BULK_RATIO * record.baseline[n] for n in sizes)
            ok = ok and all(record.rss[n] <= cap for n in large)
            return f"≤ {BULK_RATIO}× baseline, ≤ {cap / 1e9:.1f} GB at 10M", ok
        case "read":
            return f"≤ {READ_SECONDS} s at 10M", _at_large(large, lambda n: record.seconds[n] <= READ_SECONDS)
        case "grep":
            return f"≤ {GREP_SECONDS} s at 10M", _at_large(large, lambda n: record.seconds[n] <= GREP_SECONDS)
        case "export":
            return f"≤ {EXPORT_RATIO}× pyarrow read + write of the exported table", all(
                record.seconds[n] <= EXPORT_RATIO * record.baseline[n] for n in sizes
            )
        case _:
            return "≤ 2 GB at 10M", _at_large(large, lambda n: record.rss[n] <= REBUILD_RSS)


def _at_large(large: list[int], holds: Callable[[int], bool]) -> bool | None:
    """Whether a 10M-only target holds (None: no size of 10M or more was measured)."""
    return all(holds(n) for n in large) if large else None


def render(steps: dict[str, Step], sizes: list[int], stream: tuple[int, float, float, int, int] | None) -> str:
    head = " | ".join(f"{n:,}: wall / RSS / × baseline" for n in sizes)
    lines = [f"| step | {head} | growth | target | verdict |", "|---" * (len(sizes) + 4) + "|"]
    for record in steps.values():
        cells = []
        for n in sizes:
            base = record.baseline.get(n)
            seconds = record.seconds[n]  # three decimals below a second: the verdict's precision is shown
            times = (
                f"{seconds:.3f} s / {bench.mb(record.rss[n])}"
                if seconds < 1
                else f"{seconds:.2f} s / {bench.mb(record.rss[n])}"
            )
            cells.append(times + (f" / {ratio(record.seconds[n], base)}×" if base else ""))
        growth = ratio(record.seconds[sizes[-1]], record.seconds[sizes[0]]) if len(sizes) > 1 else "-"
        target, ok = verdicts(record, sizes)
        verdict = "n/a (no 10M run)" if ok is None else bench.verdict(ok)
        label = record.label + (f" (median of {record.runs})" if record.runs > 1 else "")
        lines.append(f"| {label} | {' | '.join(cells)} | {growth} | {target} | {verdict} |")
    rounds = [(record, n) for record in steps.values() for n in sizes if record.rounds.get(n)]
    if rounds:
        lines.append("")
        lines.append("Bulk rounds (usr / baseline, in the order run; the table gives their medians):")
        for record, n in rounds:
            pairs = ", ".join(f"{mine:.2f} / {base:.2f} s ({ratio(mine, base)}×)" for mine, base in record.rounds[n])
            lines.append(f"- {record.label}, {n:,}: {pairs}")
    if stream is not None:
        rows, made, seconds, rss, code = stream
        outcome = bench.verdict(rss <= STREAM_RSS) if code == 0 else f"FAIL (exit {code})"
        lines.append("")
        lines.append(
            f"Streaming import of a {rows:,}-row CSV (generated in {made:.0f} s): {seconds:.1f} s, peak RSS "
            f"{bench.mb(rss)} (target ≤ {bench.mb(STREAM_RSS)}): {outcome}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, LARGE])
    parser.add_argument("--stream-rows", type=int, default=30_000_000, help="0: skip the streaming import")
    args = parser.parse_args(argv)
    if not bench.GENERATOR.is_file() or not bench.BASELINE.is_file():
        sys.stderr.write("bench-scale: needs ../shared/bench next to this repository (tests do not).\n")
        return 2
    env = bench.child_env()
    sizes = sorted(args.sizes)
    steps: dict[str, Step] = {}
    for n in sizes:
        measure(n, steps, bench.OUT / f"scale-{n}", env)
    stream = None
    if args.stream_rows:
        scratch = bench.OUT / "scale-stream"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        print(f"generating a {args.stream_rows:,}-row CSV ...", flush=True)
        made = stream_csv(scratch / "stream.csv", args.stream_rows)
        usr = [str(bench.USR), "--root", str(scratch / "root")]
        bench.checked([*usr, "namespace", "register", LATE, "--columns", f"{LATE}__score:float64"], env=env, what="ns")
        bench.checked([*usr, "init", bench.DATASET, "--source", "bench"], env=env, what="init")
        print("streaming import ...", flush=True)
        done = bench.run(
            [*usr, "import", bench.DATASET, "--from", "csv", "--path", str(scratch / "stream.csv")], env=env
        )
        if done.code != 0:
            sys.stderr.write(f"bench-scale: the streaming import failed (exit {done.code}): {done.stderr[-500:]}\n")
        stream = (args.stream_rows, made, done.seconds, done.peak_rss, done.code)
        shutil.rmtree(scratch, ignore_errors=True)
    table = render(steps, sizes, stream)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
