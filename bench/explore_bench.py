"""Issue 15 in `make bench`: `usr explore` at 1M rows, timed as the page asks (the same HTTP requests, the
ones it sends together sent together) against a `usr explore` process, as a person would click:

open the dataset (overview, first page, summaries: the view read once), a motif filter, the next page, a
numeric predicate, a record's panel, "as of" an earlier seq (the first time: a replay; again: kept) and
the diff of two seqs. Each figure is the median of 3 (the first open and the first as-of are single,
cold, runs: what they cost is reading or replaying the view once).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

INTERACTION_SECONDS = 0.5
RUNS = 3


class _Client:
    def __init__(self, url: str) -> None:
        self.url = url.split("#")[0].rstrip("/")

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=600) as answer:
            return json.loads(answer.read())

    def together(self, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
        """The requests the page sends at once (`Promise.all`), all answered."""
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(lambda call: self.get(call[0], **call[1]), calls))


def _timed(step: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    found = step()
    return time.perf_counter() - start, found


def explore_surface(
    usr: list[str], *, env: dict[str, str], root: Path, dataset: str
) -> tuple[list[tuple[str, str, str, bool | None]], dict[str, Any]]:
    """The explorer's figures as (label, figure, target, ok) rows, and the raw numbers."""
    argv = [*usr, "--root", str(root), "explore", "--port", "0", "--no-browser", "--format", "json"]
    server = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert server.stdout is not None
        client = _Client(json.loads(server.stdout.readline())["data"]["url"])
        return _interactions(client, dataset)
    finally:
        server.terminate()
        server.wait(timeout=60)


def _interactions(client: _Client, dataset: str) -> tuple[list[tuple[str, str, str, bool | None]], dict[str, Any]]:
    def q(**fields: Any) -> str:
        return json.dumps({"dataset": dataset, **fields})

    def open_at(as_of: int | None, **fields: Any) -> list[Any]:
        return client.together(
            ("/api/overview", {"dataset": dataset, "as_of": as_of}),
            ("/api/rows", {"q": q(as_of=as_of, **fields), "offset": 0, "limit": 50}),
            ("/api/summary", {"q": q(as_of=as_of, **fields)}),
        )

    def apply(**fields: Any) -> list[Any]:
        return client.together(
            ("/api/rows", {"q": q(**fields), "offset": 0, "limit": 50}),
            ("/api/summary", {"q": q(**fields)}),
        )

    landing, _ = _timed(lambda: client.get("/api/datasets"))
    cold, (overview, first, _) = _timed(lambda: open_at(None))
    head = overview["head_seq"]
    earlier = max(1, head // 2)
    motif = {"motif": "GAATTC"}
    numeric = {"where": [{"column": "length", "op": "ge", "value": "100"}]}

    def median(step: Callable[[], Any], fresh: Callable[[int], Callable[[], Any]] | None = None) -> float:
        """Median of RUNS; `fresh(i)` makes run i a request not answered before (a new filter each time)."""
        return statistics.median(_timed(fresh(i) if fresh else step)[0] for i in range(RUNS))

    figures = {
        "landing page (the root's datasets)": median(lambda: client.get("/api/datasets")),
        "open the dataset again (overview, first page, summaries; view kept)": median(lambda: open_at(None)),
        "motif filter GAATTC (rows + summaries)": median(
            lambda: None, lambda i: lambda: apply(motif=["GAATTC", "GGATCC", "AAGCTT"][i])
        ),
        "next page of the motif filter": median(lambda: client.get("/api/rows", q=q(**motif), offset=50, limit=50)),
        "numeric predicate length >= N (rows + summaries)": median(
            lambda: None,
            lambda i: lambda: apply(where=[{"column": "length", "op": "ge", "value": str(100 + i)}]),
        ),
        "record panel (values, history, blame)": median(
            lambda: client.get("/api/record", dataset=dataset, id=first["rows"][0]["id"])
        ),
        f"diff seq {earlier} -> {head}": median(
            lambda: client.get("/api/diff", dataset=dataset, **{"from": earlier, "to": head})
        ),
    }
    as_of_cold, _ = _timed(lambda: open_at(earlier))
    figures[f"as of seq {earlier}, again (view kept)"] = median(lambda: open_at(earlier, **numeric))
    rows = [
        (
            f"`usr explore` at {overview['rows']:,} rows: {label}",
            f"{seconds:.3f} s (median of {RUNS})",
            f"≤ {INTERACTION_SECONDS} s",
            seconds <= INTERACTION_SECONDS,
        )
        for label, seconds in figures.items()
    ]
    rows.append(
        (
            f"`usr explore`: first open of the dataset (reads the view once), as of seq {earlier} the first time "
            "(replays it once)",
            f"{cold:.2f} s; {as_of_cold:.2f} s; landing {landing:.3f} s",
            "reported",
            None,
        )
    )
    return rows, {"cold_open": cold, "as_of_cold": as_of_cold, **figures}


if __name__ == "__main__":  # a quick run against a running explorer: explore_bench.py URL DATASET
    for row in _interactions(_Client(sys.argv[1]), sys.argv[2])[0]:
        print(" | ".join(str(x) for x in row))
