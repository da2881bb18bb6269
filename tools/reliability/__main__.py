"""`python -m tools.reliability [--reduced] [--seed N] [--only ROW ...]`: run the rows, print the table,
write it to bench/results/reliability.md, exit 1 when any figure misses its goal."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import FULL, REDUCED, render
from .rows import ROWS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reduced", action="store_true", help="the scale `make test` runs")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--only", nargs="*", choices=sorted(ROWS), help="run only these rows")
    args = parser.parse_args(argv)
    scale = replace(REDUCED if args.reduced else FULL, seed=args.seed)
    rows = []
    for name in args.only or list(ROWS):
        print(f"reliability: {name} ...", file=sys.stderr, flush=True)
        rows.append(ROWS[name](scale))
    table = render(rows)
    header = f"# usr_es reliability ({'reduced' if args.reduced else 'full'} scale, seed {scale.seed})\n\n"
    print(header + table)
    out = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + table + "\n")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
