"""`make bench`: `usr` against the physical baseline in the same run, plus CLI latency and overlay figures.

Runs every CLI step as its own child process, the way a user runs it, and reads the child's wall time and
peak RSS (`os.wait4`). `usr state set` is timed in-process through the Python API (in a child, so its
memory is measured apart from this script). Writes a markdown table to stdout and to
bench/results/latest.md. Needs ../shared/bench (the workload generator and the baseline); the test suite
never does.
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
from typing import Any

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
NAMESPACE = "bench"
OVERLAY_COLUMNS = "bench__score:float64,bench__vec:list<float64>"
REPEATS = 5
STATE_CALLS = 7
STATE_PROBE = "--state-set-probe"  # internal: run the in-process `set_state` timing (child mode)
# Distinct fields/values per call, so every call appends an event.
STATE_SETS: list[dict[str, Any]] = [
    {"qc_status": "pass"},
    {"split": "train"},
    {"qc_status": "fail"},
    {"masked": True},
    {"split": "val"},
    {"qc_status": "warn"},
    {"masked": False},
]
COLD_STATE_SET: dict[str, Any] = {"split": "test"}  # one more call, on a fresh Dataset object

# Targets from the issues.
IMPORT_RATIO = 1.3
HELP_SECONDS = 0.2
READ_SECONDS = 0.25
RSS_BYTES = 1_000_000_000
ATTACH_RATIO = 1.3
MATERIALIZE_RATIO = 1.3
STATE_SECONDS = 0.030
REPLAY_SECONDS = 0.5
REBUILD_RATIO = 1.2
GREP_SECONDS = 1.0
EXPORT_RATIO = 1.3
TOMBSTONES = 1000  # ids deleted before the read-surface figures (every 997th row)
GREP_PATTERN = "ACGTAC"
GREP_NO_MATCH = "ACGTZ"  # no DNA sequence holds a Z: grep scans every sequence
EXPORT_PROBE = "--export-baseline-probe"  # internal: a plain pyarrow read + write of the exported columns
DEDUPE_PROBE = "--dedupe-probe"  # internal: `dedupe --dry-run` in-process against a plain pyarrow group-by
DEDUPE_RATIO = 1.3
DEDUPE_RUNS = 3
EVENTS_PROBE = "--events-probe"  # internal: append the forensics events (attaches and state sets of 100 ids)
UPKEEP_PROBE = "--history-upkeep-probe"  # internal: time the history index's fold of the import and the attach
FORENSIC_EVENTS = 200  # events appended before the forensics figures: attaches and state sets of ...
FORENSIC_IDS = 100  # ... this many ids each
HISTORY_SECONDS = 0.3
DIFF_SECONDS = 2.0
SUMMARY_SECONDS = 0.5
UPKEEP_FRACTION = 0.10
MERGE_RATIO = 1.3
MERGE_SEED = 7  # the merge source: a second workload of N sequences (another seed: no record in common)


@dataclass(frozen=True)
class Run:
    """One finished child process: wall seconds, peak RSS in bytes, exit code and output."""

    seconds: float
    peak_rss: int
    code: int
    stdout: str
    stderr: str

    def data(self) -> Any:
        """The `data` of a `--format json` output."""
        return json.loads(self.stdout)["data"]


#: Runs argv[2:] as a child of this small process and writes its wall seconds and peak RSS (KB) to argv[1]. A
#: child forked straight from the benchmark would count the benchmark's own memory in its peak: Linux starts a
#: forked child's `ru_maxrss` at its parent's resident size (and keeps it across exec).
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{time.perf_counter() - start} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run `argv` to completion; measure its wall time and its own peak RSS (`ru_maxrss` from wait4, taken by
    a small launcher process, see `_LAUNCHER`).

    Dirty pages of earlier steps are flushed first (`os.sync`), so a step does not pay for the writeback
    of the previous one (the baseline writes its files without fsync right before `usr import`)."""
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures"
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(figures)]
        code = subprocess.run([*launcher, *argv], stdout=out, stderr=err, env=env, cwd=cwd, check=False).returncode
        seconds_text, rss_kb = figures.read_text().split()
        out.seek(0)
        err.seek(0)
        return Run(float(seconds_text), int(rss_kb) * 1024, code, out.read().decode(), err.read().decode())


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
    # Installed packages run from cached bytecode; a sandbox's PYTHONDONTWRITEBYTECODE would recompile
    # every usr_es module on every call (~40 ms), which no user pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
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


BASELINE_RUNS = 3  # the baseline's own figures vary by up to 40% from run to run on a shared VM


def baseline(work: Path, out: Path, *, env: dict[str, str]) -> tuple[dict[str, float], Run]:
    """The physical baseline's seconds per step, each the median of BASELINE_RUNS runs (and the last run)."""
    runs: dict[str, list[float]] = {}
    for _ in range(BASELINE_RUNS):
        steps, result = baseline_once(work, out, env=env)
        for name, seconds in steps.items():
            runs.setdefault(name, []).append(seconds)
    return {name: statistics.median(times) for name, times in runs.items()}, result


def baseline_once(work: Path, out: Path, *, env: dict[str, str]) -> tuple[dict[str, float], Run]:
    """One run of the physical baseline into a fresh `out`: its seconds per step (and the run)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result = checked([sys.executable, str(BASELINE), str(work), str(out)], env=env, what="physical baseline")
    steps: dict[str, float] = {}
    for line in result.stdout.splitlines():
        name, _, value = line.strip().partition(" ")
        try:
            steps[name] = float(value)
        except ValueError:
            continue
    for step in ("import", "attach", "materialize"):
        if step not in steps:
            sys.stderr.write(f"bench: no `{step} <seconds>` line in the baseline output:\n{result.stdout}")
            raise SystemExit(1)
    return steps, result


def state_set_probe(root: str, dataset: str, record_id: str) -> int:
    """Child mode: time `Dataset.set_state([id], ...)` in-process, once per entry of STATE_SETS on one
    Dataset object, then once more on a fresh object (nothing cached yet; modules already imported).
    Prints JSON: the timed calls, the fresh-object call last."""
    from usr_es import Dataset

    ds = Dataset.open(root, dataset)
    calls = []
    for fields in [*STATE_SETS[:STATE_CALLS], COLD_STATE_SET]:
        if fields is COLD_STATE_SET:
            ds = Dataset.open(root, dataset)
        start = time.perf_counter()
        receipt = ds.set_state([record_id], **fields)
        seconds = time.perf_counter() - start
        calls.append({"seconds": seconds, "seq": receipt.seq, "noop": receipt.noop, "fields": fields})
    print(json.dumps(calls))
    return 0


def memory_pool(env: dict[str, str], *, usr_process: bool) -> str:
    """The Arrow memory pool a child with `env` ends up with: a `usr` process (its entry point runs
    first, which may choose the pool) or a plain pyarrow script like the baseline."""
    entry = "from usr_es.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    probe = (entry if usr_process else "") + "import sys, pyarrow\n"
    probe += "print(pyarrow.default_memory_pool().backend_name, file=sys.stderr)\n"
    return checked([sys.executable, "-c", probe], env=env, what="memory pool").stderr.strip().splitlines()[-1]


def export_baseline_probe(source: str, out: str, columns: str) -> int:
    """Child mode: read `columns` of the Parquet file `source` (records.parquet, or the export itself) with
    pyarrow and write them to `out` (timed in-script, imports excluded), the least work `usr export --fmt
    parquet` must do. Prints the seconds."""
    import pyarrow.parquet as pq

    start = time.perf_counter()
    table = pq.read_table(source, columns=columns.split(","))
    pq.write_table(table, out)  # pyarrow defaults (snappy), as `usr export` writes
    print(f"{time.perf_counter() - start:.6f}")
    return 0


def dedupe_probe(root: str, dataset: str, records: str) -> int:
    """Child mode: `ds.maintenance.dedupe("sequence_ci", dry_run=True)` in-process against a plain pyarrow
    group-by of the same key (the sequence column upper-cased, read from records.parquet), interleaved
    DEDUPE_RUNS times, imports excluded. Prints JSON: both lists of seconds and the groups each found."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from usr_es import Dataset

    ds = Dataset.open(root, dataset)
    runs: dict[str, list[float]] = {"usr": [], "plain": []}
    groups = {"usr": -1, "plain": -1}
    for _ in range(DEDUPE_RUNS):
        start = time.perf_counter()
        keys = pc.utf8_upper(pq.read_table(records, columns=["sequence"]).column("sequence"))
        counted = pa.table({"k": keys}).group_by("k").aggregate([("k", "count")])
        groups["plain"] = counted.filter(pc.greater(counted.column("k_count"), 1)).num_rows
        runs["plain"].append(time.perf_counter() - start)
        start = time.perf_counter()
        groups["usr"] = ds.maintenance.dedupe("sequence_ci", dry_run=True).groups
        runs["usr"].append(time.perf_counter() - start)
    print(json.dumps({"runs": runs, "groups": groups}))
    return 0


def events_probe(root: str, dataset: str, probe_id: str) -> int:
    """Child mode: append FORENSIC_EVENTS events to the bench dataset through the API, alternately an attach
    of `bench__score` and a state set, each of FORENSIC_IDS ids spread over the base (the probe record in
    every tenth). Prints JSON: the seq before them, and the distinct ids the middle FORENSIC_EVENTS // 2 of
    them touch (the diff window)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from usr_es import Dataset

    ds = Dataset.open(root, dataset)
    ids = pq.read_table(ds.records_path, columns=["id"]).column("id").to_pylist()
    start = ds.log.events(n=1)[0].seq
    window: set[str] = set()
    step = max(1, len(ids) // (FORENSIC_EVENTS * FORENSIC_IDS))
    for k in range(FORENSIC_EVENTS):
        chosen = ids[k * FORENSIC_IDS * step : (k + 1) * FORENSIC_IDS * step : step][:FORENSIC_IDS]
        if k % 10 == 0:
            chosen = [probe_id, *(rid for rid in chosen if rid != probe_id)][:FORENSIC_IDS]
        if k % 2 == 0:
            scores = pa.array([float(k)] * len(chosen))
            ds.write_overlay(NAMESPACE, pa.table({"id": chosen, f"{NAMESPACE}__score": scores}), allow_overwrite=True)
        else:
            ds.set_state(chosen, qc_status=("pass", "fail", "warn")[k % 3])
        if FORENSIC_EVENTS // 4 <= k < FORENSIC_EVENTS // 4 + FORENSIC_EVENTS // 2:
            window.update(chosen)
    print(json.dumps({"start": start, "rows": len(window)}))
    return 0


def upkeep_probe(dataset_dir: str) -> int:
    """Child mode: fold the bench dataset's import and then its attach into a fresh history index as the
    write path does, and encode, write and sync its files; each timed. The write path hands the fold what it
    has already: the payload's record batch sizes (the spool counts them), and for an import its keys sorted
    (its decision sorts them for the id index); those are prepared before the timer starts. Prints JSON: seconds
    for the import and for the attach."""
    from dataclasses import replace

    import pyarrow as pa

    from usr_es.alphabet import keys_of, sorted_keys
    from usr_es.log import iter_lines
    from usr_es.projections import HistoryIndex
    from usr_es.recovery import step_of
    from usr_es.storage import StoredRows

    directory = Path(dataset_dir)
    pa.scalar(0)  # pyarrow imports pandas at its first Python-to-Arrow conversion: not in the timer (`usr` refuses it)
    index = HistoryIndex(fold=None)  # type: ignore[arg-type]  # the history index reads nothing else
    seconds: dict[str, float] = {}
    for line in iter_lines(directory / ".events.log"):
        action = line.record.action
        if action not in ("init", "import_rows", "attach") or (action == "attach" and "attach" in seconds):
            continue
        step = step_of(line, directory)
        if isinstance(step.payload, StoredRows):
            with pa.ipc.open_file(pa.memory_map(str(step.payload.path))) as reader:
                sizes = tuple(reader.get_batch(k).num_rows for k in range(reader.num_record_batches))
            payload = replace(step.payload, batch_rows=sizes)
            ordered = None
            if action == "import_rows":
                ids = pa.concat_tables(payload.batches(["id"])).column("id")
                found = keys_of(ids)
                ordered = sorted_keys(found) if found is not None else None
            step = replace(step, payload=payload, sorted_keys=ordered)
        start = time.perf_counter()
        index.fold(step)
        with tempfile.TemporaryDirectory(dir=directory.parent) as out:
            for k, output in enumerate(index.outputs().values()):  # written and synced, as a publish does
                data = output.encode()
                assert isinstance(data, (bytes, memoryview))
                with open(Path(out) / str(k), "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
        seconds[{"import_rows": "import", "attach": "attach"}.get(action, action)] = time.perf_counter() - start
        if "attach" in seconds:
            break
    print(json.dumps(seconds))
    return 0


@dataclass(frozen=True)
class Figure:
    label: str
    figure: str
    target: str
    ok: bool | None  # None: no target


def read_surface(
    usr: list[str], *, env: dict[str, str], dataset_dir: Path, probe_id: str, scratch: Path
) -> list[Figure]:
    """Issue 4: reads on the 1M-row dataset with a live overlay and TOMBSTONES tombstones."""
    import pyarrow.parquet as pq

    ids = pq.read_table(dataset_dir / "records.parquet", columns=["id"]).column("id").to_pylist()
    doomed = [rid for k, rid in enumerate(ids) if k % 997 == 1 and rid != probe_id][:TOMBSTONES]
    id_file = scratch / "tombstones.txt"
    id_file.write_text("\n".join(doomed) + "\n")
    checked([*usr, "delete", DATASET, "--id-file", str(id_file), "--reason", "bench"], env=env, what="usr delete")
    checked(
        [*usr, "attach", DATASET, "--path", str(scratch / "late.csv"), "--namespace", NAMESPACE, "--key", "id",
         "--columns", "score", "--allow-overwrite"],
        env=env,
        what="usr attach (late overlay)",
    )  # fmt: skip
    figures: list[Figure] = []
    where = f"on the view with a live overlay and {len(doomed):,} tombstones"
    for label, argv in (
        ("`usr head -n 5`", ["head", DATASET, "-n", "5"]),
        ("`usr get --id`", ["get", DATASET, "--id", probe_id]),
        ("`usr info`", ["info", DATASET]),
        ("`usr schema`", ["schema", DATASET]),
    ):
        median, times = median_of([*usr, *argv, "--format", "json"], env=env, what=label)
        runs = ", ".join(f"{t:.3f}" for t in times)
        figures.append(Figure(f"{label} {where} (median of {REPEATS})", f"{median:.3f} s ({runs})",
                              f"≤ {READ_SECONDS} s", median <= READ_SECONDS))  # fmt: skip
    for pattern in (GREP_PATTERN, GREP_NO_MATCH):
        argv = [*usr, "grep", DATASET, "--pattern", pattern, "--limit", "20", "--format", "json"]
        grep_s, grep_all = median_of(argv, env=env, what="grep")
        hits = len(checked(argv, env=env, what="grep").data())
        figures.append(Figure(f"`usr grep --pattern {pattern} --limit 20` ({hits} hit(s)) (median of {REPEATS})",
                              f"{grep_s:.3f} s ({', '.join(f'{t:.3f}' for t in grep_all)})", f"≤ {GREP_SECONDS} s",
                              grep_s <= GREP_SECONDS))  # fmt: skip
    out = scratch / "export.parquet"
    exported = checked(
        [*usr, "export", DATASET, "--fmt", "parquet", "--out", str(out), "--format", "json"], env=env, what="export"
    )
    columns = pq.read_schema(out).names
    base_columns = [c for c in columns if c in pq.read_schema(dataset_dir / "records.parquet").names]
    probe = checked(
        [sys.executable, str(Path(__file__).resolve()), EXPORT_PROBE, str(dataset_dir / "records.parquet"),
         str(scratch / "baseline-export.parquet"), ",".join(base_columns)],
        env=env,
        what="export baseline",
    )  # fmt: skip
    plain = float(probe.stdout.strip())
    ratio = exported.seconds / plain
    rows = exported.data()["rows"]
    figures.append(Figure(f"`usr export --fmt parquet` ({rows:,} rows, {len(columns)} columns, process wall time)",
                          f"{exported.seconds:.2f} s = {ratio:.2f}× pyarrow read + write of the {len(base_columns)} "
                          f"exported columns records.parquet holds ({plain:.2f} s)", f"≤ {EXPORT_RATIO}×",
                          ratio <= EXPORT_RATIO))  # fmt: skip
    figures.append(Figure("`usr export` peak RSS", mb(exported.peak_rss), f"≤ {mb(RSS_BYTES)}",
                          exported.peak_rss <= RSS_BYTES))  # fmt: skip
    return figures


def forensics_surface(
    usr: list[str], *, env: dict[str, str], root: Path, dataset_dir: Path, probe_id: str
) -> list[Figure]:
    """Issue 13: history, blame and diff on the 1M-row dataset after FORENSIC_EVENTS more events."""
    appended = checked(
        [sys.executable, str(Path(__file__).resolve()), EVENTS_PROBE, str(root), DATASET, probe_id],
        env=env,
        what="forensics events",
    )
    window = json.loads(appended.stdout)
    a = window["start"] + FORENSIC_EVENTS // 4
    b = a + FORENSIC_EVENTS // 2
    head = json.loads(checked([*usr, "info", DATASET, "--format", "json"], env=env, what="info").stdout)["data"]
    figures: list[Figure] = []
    for label, argv, limit in (
        (f"`usr history --id` (probe record, after {FORENSIC_EVENTS} more events; head seq {head['head_seq']})",
         ["history", DATASET, "--id", probe_id], HISTORY_SECONDS),
        ("`usr blame --id` (probe record)", ["blame", DATASET, "--id", probe_id], HISTORY_SECONDS),
        (f"`usr diff --from {a} --to {b}` ({b - a} events, {window['rows']:,} rows touched)",
         ["diff", DATASET, "--from", str(a), "--to", str(b)], DIFF_SECONDS),
        (f"`usr diff --from {a} --to {b} --summary`", ["diff", DATASET, "--from", str(a), "--to", str(b), "--summary"],
         SUMMARY_SECONDS),
    ):  # fmt: skip
        median, times = median_of([*usr, *argv, "--format", "json"], env=env, what=label)
        runs = ", ".join(f"{t:.3f}" for t in times)
        figures.append(
            Figure(f"{label} (median of {REPEATS})", f"{median:.3f} s ({runs})", f"≤ {limit} s", median <= limit)
        )
    shown = checked([*usr, "diff", DATASET, "--from", str(a), "--to", str(b), "--format", "json"], env=env, what="diff")
    found = shown.data()
    figures.append(Figure("… the diff found", f"{found['changed']:,} changed rows, {found['cells']:,} cells", "", None))
    return figures


def merge_surface(
    usr: list[str], *, env: dict[str, str], n: int, work: Path, import_baseline: float
) -> tuple[Figure, ...]:
    """Issue 13: merge a 1M-row source into a 1M-row destination (no record in common), against the physical
    import of the same number of rows."""
    other = OUT / f"workload-{n}-seed-{MERGE_SEED}"
    if not (other / "sequences.csv").is_file():
        print(f"generating the merge source ({n:,} sequences, seed {MERGE_SEED}) ...", flush=True)
        checked(
            [sys.executable, str(GENERATOR), str(n), "--out", str(other), "--seed", str(MERGE_SEED)],
            env=env,
            what="gen_workload (merge source)",
        )
    for name, source in (("bench/merge-src", other), ("bench/merge-dest", work)):
        checked([*usr, "init", name], env=env, what="init")
        checked(
            [*usr, "import", name, "--from", "csv", "--path", str(source / "sequences.csv")], env=env, what="import"
        )
    merged = checked(
        [*usr, "maintenance", "merge", "--dest", "bench/merge-dest", "--src", "bench/merge-src",
         "--require-same-columns", "--format", "json"],
        env=env,
        what="usr maintenance merge",
    )  # fmt: skip
    data = merged.data()
    ratio = merged.seconds / import_baseline
    return (
        Figure(
            f"`usr maintenance merge` of {data['rows_src']:,} rows into {data['dest_rows_before']:,} "
            f"({data['rows_added']:,} added, {data['casefold_skipped']:,} skipped up to case)",
            f"{merged.seconds:.2f} s = {ratio:.2f}× the physical import of {n:,} rows ({import_baseline:.2f} s); "
            f"peak RSS {mb(merged.peak_rss)}",
            f"≤ {MERGE_RATIO}×",
            ratio <= MERGE_RATIO,
        ),
    )


def file_identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def checkpoints(dataset_dir: Path) -> list[Path]:
    folder = dataset_dir / "_snapshots"
    return sorted(folder.glob("checkpoint-*")) if folder.is_dir() else []


def mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [STATE_PROBE]:
        return state_set_probe(*argv[1:4])
    if argv[:1] == [EXPORT_PROBE]:
        return export_baseline_probe(*argv[1:4])
    if argv[:1] == [DEDUPE_PROBE]:
        return dedupe_probe(*argv[1:4])
    if argv[:1] == [EVENTS_PROBE]:
        return events_probe(*argv[1:4])
    if argv[:1] == [UPKEEP_PROBE]:
        return upkeep_probe(argv[1])
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
    probe_id = (work / "probe_id.txt").read_text().strip()
    scratch = OUT / f"run-{args.n}"
    shutil.rmtree(scratch, ignore_errors=True)
    root = scratch / "root"
    root.mkdir(parents=True)
    dataset_dir = root / DATASET
    records_path = dataset_dir / "records.parquet"

    print("physical baseline ...", flush=True)
    base_steps, base_run = baseline(work, scratch / "baseline", env=env)

    usr = [str(USR), "--root", str(root)]
    checked([*usr, "namespace", "register", NAMESPACE, "--columns", OVERLAY_COLUMNS], env=env, what="register")
    init = checked([*usr, "init", DATASET, "--source", "bench"], env=env, what="init")
    print("usr import ...", flush=True)
    imported = checked(
        [*usr, "import", DATASET, "--from", "csv", "--path", str(work / "sequences.csv"), "--format", "json"],
        env=env,
        what="usr import",
    )
    rows = imported.data()["metrics"]["rows_written"]

    print("usr maintenance dedupe --dry-run (in-process) ...", flush=True)
    probe = checked(
        [sys.executable, str(Path(__file__).resolve()), DEDUPE_PROBE, str(root), DATASET, str(records_path)],
        env=env,
        what="dedupe probe",
    )
    dedupe = json.loads(probe.stdout)
    dedupe_s, dedupe_plain = (statistics.median(dedupe["runs"][k]) for k in ("usr", "plain"))
    dedupe_ratio = dedupe_s / dedupe_plain

    print("usr --help / info / head ...", flush=True)
    help_s, help_all = median_of([str(USR), "--help"], env=env, what="usr --help")
    info_s, info_all = median_of([*usr, "info", DATASET, "--format", "json"], env=env, what="usr info")
    head_s, head_all = median_of([*usr, "head", DATASET, "-n", "5", "--format", "json"], env=env, what="usr head")
    print("usr verify / rebuild ...", flush=True)
    verified = checked([*usr, "verify", DATASET], env=env, what="usr verify")
    rebuilt = checked([*usr, "rebuild", DATASET], env=env, what="usr rebuild")
    records_size = records_path.stat().st_size
    log_size = (dataset_dir / ".events.log").stat().st_size
    payloads = sum(p.stat().st_size for p in (dataset_dir / "_payloads").iterdir())

    print("usr attach ...", flush=True)
    attached = checked(
        [*usr, "attach", DATASET, "--path", str(work / "overlay.csv"), "--namespace", NAMESPACE, "--key", "sequence",
         "--columns", "score,vec", "--format", "json"],
        env=env,
        what="usr attach",
    )  # fmt: skip
    attach_rows = attached.data()["metrics"]["rows_written"]
    print("usr materialize ...", flush=True)
    materialized = checked([*usr, "materialize", DATASET, "--yes", "--format", "json"], env=env, what="materialize")
    materialized_size = records_path.stat().st_size

    print(f"usr state set x{STATE_CALLS + 1} (in-process) ...", flush=True)
    before = file_identity(records_path)
    state_run = checked(
        [sys.executable, str(Path(__file__).resolve()), STATE_PROBE, str(root), DATASET, probe_id],
        env=env,
        what="state set probe",
    )
    *state_calls, cold_call = json.loads(state_run.stdout)
    state_times = [c["seconds"] for c in state_calls]
    state_s = statistics.median(state_times)
    seqs = [c["seq"] for c in [*state_calls, cold_call]]
    state_appended = not any(c["noop"] for c in [*state_calls, cold_call]) and seqs == list(
        range(seqs[0], seqs[0] + len(seqs))
    )
    untouched = file_identity(records_path) == before

    print("usr rebuild (full, from the log) ...", flush=True)
    hidden = dataset_dir / "_snapshots.bench-hidden"
    hid = bool(checkpoints(dataset_dir))
    if hid:  # an automatic checkpoint would shorten the replay: keep it out of the way of the full rebuild
        (dataset_dir / "_snapshots").rename(hidden)
    try:
        full = checked([*usr, "rebuild", DATASET, "--format", "json"], env=env, what="usr rebuild (full)")
    finally:
        if hid:
            hidden.rename(dataset_dir / "_snapshots")
    write_steps = {
        "init": init.seconds,
        "import": imported.seconds,
        "attach": attached.seconds,
        "materialize": materialized.seconds,
        f"state set x{STATE_CALLS + 1}": sum(state_times) + cold_call["seconds"],
    }
    write_sum = sum(write_steps.values())

    print("usr snapshot / state set / replay --until ...", flush=True)
    snap = checked([*usr, "snapshot", DATASET, "--format", "json"], env=env, what="usr snapshot")
    after = checked(
        [*usr, "state", "set", DATASET, "--id", probe_id, "--split", "holdout", "--format", "json"],
        env=env,
        what="usr state set",
    )
    until = after.data()["seq"]
    replayed = checked(
        [*usr, "replay", DATASET, "--until", str(until), "--out", str(scratch / "replayed"), "--format", "json"],
        env=env,
        what="usr replay",
    )
    replay_from = replayed.data().get("from_checkpoint")
    print("read surface: delete, late attach, head / get / info / schema / grep / export ...", flush=True)
    (scratch / "late.csv").write_text(f"id,score\n{probe_id},42.0\n")  # a second live part; probe stays visible
    reads = read_surface(usr, env=env, dataset_dir=dataset_dir, probe_id=probe_id, scratch=scratch)
    print(f"forensics: {FORENSIC_EVENTS} more events, history / blame / diff ...", flush=True)
    forensic = forensics_surface(usr, env=env, root=root, dataset_dir=dataset_dir, probe_id=probe_id)
    print("usr verify (final) ...", flush=True)
    final_verify = run([*usr, "verify", DATASET], env=env)
    print("history index upkeep (in-process) ...", flush=True)
    upkeep = json.loads(
        checked(
            [sys.executable, str(Path(__file__).resolve()), UPKEEP_PROBE, str(dataset_dir)], env=env, what="upkeep"
        ).stdout
    )
    upkeep_import, upkeep_attach = upkeep["import"] / imported.seconds, upkeep["attach"] / attached.seconds
    print("usr maintenance merge ...", flush=True)
    merge_figures = merge_surface(usr, env=env, n=args.n, work=work, import_baseline=base_steps["import"])
    print("sync over ssh on 127.0.0.1: bootstrap, a 1,000-row pull, diff ...", flush=True)
    from sync_bench import sync_surface

    sync_rows, _ = sync_surface(
        checked,
        env=env,
        root=root,
        dataset="bench/merge-src",
        scratch=scratch / "sync",
        registry=root / "registry.yaml",
    )
    sync_figures = tuple(Figure(*row) for row in sync_rows)
    print("usr explore: open, filter, page, record, as of, diff ...", flush=True)
    from explore_bench import explore_surface

    explore_rows, _ = explore_surface([str(USR)], env=env, root=root, dataset=DATASET)
    explore_figures = tuple(Figure(*row) for row in explore_rows)

    ratio = imported.seconds / base_steps["import"]
    attach_ratio = attached.seconds / base_steps["attach"]
    materialize_ratio = materialized.seconds / base_steps["materialize"]
    rebuild_ratio = full.seconds / write_sum
    stepped = {
        "import": imported,
        "attach": attached,
        "materialize": materialized,
        f"state set x{STATE_CALLS + 1} (probe process)": state_run,
        "rebuild (full)": full,
        "snapshot": snap,
        "state set (CLI)": after,
        "replay --until": replayed,
        "verify (final)": final_verify,
    }
    worst_name, worst = max(stepped.items(), key=lambda item: item[1].peak_rss)
    checks = {
        "import": ratio <= IMPORT_RATIO,
        "import rss": imported.peak_rss <= RSS_BYTES,
        "help": help_s <= HELP_SECONDS,
        "info": info_s <= READ_SECONDS,
        "head": head_s <= READ_SECONDS,
        "attach": attach_ratio <= ATTACH_RATIO,
        "attach rss": attached.peak_rss <= RSS_BYTES,
        "materialize": materialize_ratio <= MATERIALIZE_RATIO,
        "materialize rss": materialized.peak_rss <= RSS_BYTES,
        "state": state_s <= STATE_SECONDS and state_appended,
        "state untouched": untouched,
        "replay": replayed.seconds <= REPLAY_SECONDS and replay_from == snap.data()["seq"],
        "rebuild": rebuild_ratio <= REBUILD_RATIO,
        "every rss": worst.peak_rss <= RSS_BYTES,
        "dedupe": dedupe_ratio <= DEDUPE_RATIO and dedupe["groups"]["usr"] == dedupe["groups"]["plain"],
        "verify": final_verify.code == 0,
        **{figure.label: bool(figure.ok) for figure in reads if figure.ok is not None},
        **{figure.label: bool(figure.ok) for figure in forensic if figure.ok is not None},
        **{figure.label: bool(figure.ok) for figure in merge_figures if figure.ok is not None},
        **{figure.label: bool(figure.ok) for figure in sync_figures if figure.ok is not None},
        **{figure.label: bool(figure.ok) for figure in explore_figures if figure.ok is not None},
        "history upkeep": upkeep_import <= UPKEEP_FRACTION and upkeep_attach <= UPKEEP_FRACTION,
    }

    def spread(values: list[float], digits: int = 3) -> str:
        return ", ".join(f"{v:.{digits}f}" for v in values)

    import pyarrow

    ms = [1000 * t for t in state_times]
    lines = [
        f"# usr_es benchmark, N = {args.n:,}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} · {platform.node()} · {os.cpu_count()} CPU · "
        f"{platform.system()} {platform.release()} · Python {platform.python_version()} · "
        f"pyarrow {pyarrow.__version__} · Arrow memory pool: `usr` {memory_pool(env, usr_process=True)}, "
        f"baseline {memory_pool(env, usr_process=False)}",
        "",
        "| step | figure | target | result |",
        "|------|--------|--------|--------|",
        f"| physical baseline import / attach / materialize (median of {BASELINE_RUNS} runs) | "
        f"{base_steps['import']:.2f} s / "
        f"{base_steps['attach']:.2f} s / {base_steps['materialize']:.2f} s (peak RSS of the whole script "
        f"{mb(base_run.peak_rss)}) | | |",
        f"| `usr import` ({rows:,} rows, wall time of the process) | {imported.seconds:.2f} s = "
        f"{ratio:.2f}× baseline | ≤ {IMPORT_RATIO}× baseline | {verdict(checks['import'])} |",
        f"| `usr import` peak RSS | {mb(imported.peak_rss)} | ≤ {mb(RSS_BYTES)} | {verdict(checks['import rss'])} |",
        f"| `usr --help` (median of {REPEATS}) | {help_s:.3f} s | ≤ {HELP_SECONDS} s | {verdict(checks['help'])} |",
        f"| `usr info` (median of {REPEATS}) | {info_s:.3f} s | ≤ {READ_SECONDS} s | {verdict(checks['info'])} |",
        f"| `usr head -n 5` (median of {REPEATS}) | {head_s:.3f} s | ≤ {READ_SECONDS} s | {verdict(checks['head'])} |",
        f"| `ds.maintenance.dedupe('sequence_ci', dry_run=True)` in-process (median of {DEDUPE_RUNS}, "
        f"{dedupe['groups']['usr']} group(s)) | {dedupe_s:.3f} s = {dedupe_ratio:.2f}× a pyarrow group-by of the "
        f"upper-cased sequences ({dedupe_plain:.3f} s, {dedupe['groups']['plain']} group(s)) | ≤ {DEDUPE_RATIO}× | "
        f"{verdict(checks['dedupe'])} |",
        f"| `usr verify` (after import) | {verified.seconds:.2f} s, peak RSS {mb(verified.peak_rss)} | none | |",
        f"| `usr rebuild` (after import) | {rebuilt.seconds:.2f} s, peak RSS {mb(rebuilt.peak_rss)} | none | |",
        f"| `usr attach` score + 8-float vec by sequence ({attach_rows:,} rows, process wall time) | "
        f"{attached.seconds:.2f} s = {attach_ratio:.2f}× baseline attach | ≤ {ATTACH_RATIO}× baseline | "
        f"{verdict(checks['attach'])} |",
        f"| `usr attach` peak RSS | {mb(attached.peak_rss)} | ≤ {mb(RSS_BYTES)} | {verdict(checks['attach rss'])} |",
        f"| `usr materialize --yes` (process wall time) | {materialized.seconds:.2f} s = {materialize_ratio:.2f}× "
        f"baseline materialize | ≤ {MATERIALIZE_RATIO}× baseline | {verdict(checks['materialize'])} |",
        f"| `usr materialize` peak RSS | {mb(materialized.peak_rss)} | ≤ {mb(RSS_BYTES)} | "
        f"{verdict(checks['materialize rss'])} |",
        f"| `usr state set` of one id, in-process `Dataset.set_state` (median of {STATE_CALLS}, each appends) | "
        f"{1000 * state_s:.1f} ms (first call on a fresh `Dataset` object, modules imported: "
        f"{1000 * cold_call['seconds']:.1f} ms) | ≤ {1000 * STATE_SECONDS:.0f} ms | {verdict(checks['state'])} |",
        f"| `records.parquet` untouched by the {STATE_CALLS + 1} state sets (inode, mtime_ns, size) | "
        f"{'unchanged' if untouched else 'REWRITTEN'} | unchanged | {verdict(checks['state untouched'])} |",
        f"| `usr replay --until {until}` (one event after the checkpoint at seq {snap.data()['seq']}; process wall "
        f"time) | {replayed.seconds:.3f} s, started from checkpoint {replay_from}, peak RSS "
        f"{mb(replayed.peak_rss)} | ≤ {REPLAY_SECONDS} s | {verdict(checks['replay'])} |",
        f"| `usr rebuild` full, from the log ({full.data()['seq']} events, no checkpoint) | {full.seconds:.2f} s = "
        f"{rebuild_ratio:.2f}× the write steps ({write_sum:.2f} s) | ≤ {REBUILD_RATIO}× | "
        f"{verdict(checks['rebuild'])} |",
        f"| peak RSS of every step (largest: {worst_name}) | {mb(worst.peak_rss)} | ≤ {mb(RSS_BYTES)} | "
        f"{verdict(checks['every rss'])} |",
        *(f"| {f.label} | {f.figure} | {f.target} | {'' if f.ok is None else verdict(f.ok)} |" for f in reads),
        *(f"| {f.label} | {f.figure} | {f.target} | {'' if f.ok is None else verdict(f.ok)} |" for f in forensic),
        f"| keeping the history index current: in-process fold, encode, write and fsync of its files for the import / "
        f"the attach | "
        f"{upkeep['import']:.3f} s = {100 * upkeep_import:.1f}% of `usr import` / {upkeep['attach']:.3f} s = "
        f"{100 * upkeep_attach:.1f}% of `usr attach` | ≤ {100 * UPKEEP_FRACTION:.0f}% | "
        f"{verdict(checks['history upkeep'])} |",
        *(f"| {f.label} | {f.figure} | {f.target} | {'' if f.ok is None else verdict(f.ok)} |" for f in merge_figures),
        *(
            f"| {f.label} | {f.figure} | {f.target} | {'' if f.ok is None else verdict(f.ok)} |"
            for f in (*sync_figures, *explore_figures)
        ),
        f"| `usr verify` (final, after every step) | {final_verify.seconds:.2f} s, "
        f"{'OK' if final_verify.code == 0 else f'exit {final_verify.code}'} | exit 0 | {verdict(checks['verify'])} |",
        "",
        "`usr` figures are whole-process wall times (interpreter start-up and imports included) unless said "
        "otherwise; the baseline's figures are its own in-script timers (its imports excluded).",
        f"Runs (s): `--help` {spread(help_all)}; `info` {spread(info_all)}; `head` {spread(head_all)}. "
        f"`state set` (ms): {spread(ms, 1)}.",
        "Write steps: " + ", ".join(f"{name} {sec:.2f} s" for name, sec in write_steps.items()) + ".",
        "Peak RSS: " + ", ".join(f"{name} {mb(r.peak_rss)}" for name, r in stepped.items()) + ".",
        f"Files: records.parquet {mb(records_size)} after import, {mb(materialized_size)} after materialize; "
        f".events.log {log_size:,} bytes after import, _payloads {mb(payloads)} after import; "
        f"sequences.csv {mb((work / 'sequences.csv').stat().st_size)}, "
        f"overlay.csv {mb((work / 'overlay.csv').stat().st_size)}"
        + (f" (generated in {generated:.1f} s)." if generated is not None else " (cached workload)."),
        f"Verify after import: {verified.stdout.strip()}",
        f"Final verify: {(final_verify.stdout or final_verify.stderr).strip()}",
        "",
        f"**{sum(checks.values())}/{len(checks)} targets met.**",
    ]
    text = "\n".join(lines) + "\n"
    print()
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if args.strict and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
