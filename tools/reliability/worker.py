"""A writer process for the harness: a seeded mix of every command type, through the Python API or the
CLI entry point, printing `ACK <seq> <command_id>` only after a command returned success.

Run as `python -m tools.reliability.worker ROOT DATASET --writer W --count N --seed S [--via api|cli]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
from pathlib import Path
from typing import Any

NAMESPACE = "rel"
REGISTER = "rel__score:float64,rel__tag:string"
#: Command kinds and their weights in the mix (imports dominate so the dataset grows).
MIX = {
    "import": 5,
    "attach": 3,
    "delete": 2,
    "restore": 1,
    "state": 2,
    "clear": 1,
    "compact": 1,
    "snapshot": 1,
    "materialize": 1,
}


def sequences(writer: int, iteration: int, rows: int = 2) -> list[str]:
    rng = random.Random(f"seqs/{writer}/{iteration}")
    return ["".join(rng.choice("ACGT") for _ in range(36)) for _ in range(rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("dataset")
    parser.add_argument("--writer", type=int, default=0)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--via", choices=("api", "cli"), default="api")
    args = parser.parse_args(argv)

    from usr_es import Dataset
    from usr_es.alphabet import compute_id
    from usr_es.errors import UsrError

    ds = Dataset.open(args.root, args.dataset)
    rng = random.Random(f"{args.seed}/{args.writer}")
    kinds = [kind for kind, weight in MIX.items() for _ in range(weight)]
    known: list[str] = []  # ids this writer imported
    print("READY", flush=True)
    for i in range(args.count):
        cid = f"w{args.writer}-s{args.seed}-i{i}"
        kind = rng.choice(kinds) if known else "import"
        try:
            seq = run(ds, args.root, args.dataset, kind, cid, rng, known, args.writer, i, via=args.via)
        except UsrError as exc:
            print(f"REFUSED {cid} {kind} {type(exc).__name__}", flush=True)
            continue
        if kind == "import":
            known.extend(compute_id("dna", s) for s in sequences(args.writer, i))
        print(f"ACK {seq} {cid}" if seq else f"NOOP {cid}", flush=True)
    return 0


def run(
    ds: Any,
    root: str,
    name: str,
    kind: str,
    cid: str,
    rng: random.Random,
    known: list[str],
    w: int,
    i: int,
    *,
    via: str,
) -> int:
    """Run one command of `kind`; returns the seq its receipt names."""
    some = rng.sample(known, min(len(known), 2))
    if via == "cli":
        return _cli(root, name, kind, cid, some, w, i, rng)
    if kind == "import":
        receipt = ds.add_sequences(sequences(w, i), source=f"worker {w}", command_id=cid)
    elif kind == "attach":
        values = {"id": some, "score": [rng.random() for _ in some], "tag": [f"t{i}" for _ in some]}
        receipt = ds.write_overlay(NAMESPACE, values, allow_overwrite=True, command_id=cid)
    elif kind == "delete":
        receipt = ds.delete(some, allow_missing=True, command_id=cid)
    elif kind == "restore":
        receipt = ds.restore(some, allow_missing=True, command_id=cid)
    elif kind == "state":
        receipt = ds.set_state(some, qc_status=rng.choice(["pass", "fail"]), allow_missing=True, command_id=cid)
    elif kind == "clear":
        receipt = ds.clear_state(some, allow_missing=True, command_id=cid)
    elif kind == "compact":
        receipt = ds.maintenance.compact_overlay(NAMESPACE, command_id=cid)
    elif kind == "snapshot":
        receipt = ds.maintenance.snapshot(command_id=cid)
    else:
        receipt = ds.maintenance.materialize(namespaces=[NAMESPACE], command_id=cid)
    return 0 if receipt.noop else int(receipt.seq)


def _cli(root: str, name: str, kind: str, cid: str, ids: list[str], w: int, i: int, rng: random.Random) -> int:
    from usr_es.cli import main as usr

    tmp = Path(root) / ".." / f"worker-{w}-in.csv"
    id_args = [a for x in ids for a in ("--id", x)]
    if kind == "import":
        tmp.write_text("sequence\n" + "\n".join(sequences(w, i)) + "\n")
        args = ["import", name, "--from", "csv", "--path", str(tmp), "--source", f"worker {w}"]
    elif kind == "attach":
        tmp.write_text("id,score,tag\n" + "".join(f"{x},{rng.random()},t{i}\n" for x in ids))
        args = ["attach", name, "--path", str(tmp), "--namespace", NAMESPACE, "--key", "id", "--allow-overwrite"]
    elif kind == "delete":
        args = ["delete", name, *id_args, "--allow-missing"]
    elif kind == "restore":
        args = ["restore", name, *id_args, "--allow-missing"]
    elif kind == "state":
        args = ["state", "set", name, *id_args, "--qc-status", "pass", "--allow-missing"]
    elif kind == "clear":
        args = ["state", "clear", name, *id_args, "--allow-missing"]
    elif kind == "compact":
        args = ["maintenance", "overlay-compact", name, "--namespace", NAMESPACE]
    elif kind == "snapshot":
        args = ["snapshot", name]
    else:
        args = ["materialize", name, "--namespaces", NAMESPACE, "--yes"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        usr(["--root", root, *args, "--command-id", cid, "--format", "json"])
    text = out.getvalue().strip()
    if not text:
        from usr_es.errors import UsrError

        raise UsrError(f"{kind} refused")
    data = json.loads(text)["data"]
    return 0 if data.get("noop") else int(data["seq"])


if __name__ == "__main__":
    sys.exit(main())
