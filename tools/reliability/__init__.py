"""The reliability harness behind `make reliability`: each row attacks real datasets and prints what it
measured against the contract (docs/reliability.md). `tests/test_reliability_harness.py` runs every row
at a reduced scale in `make test`; `python -m tools.reliability` runs them at full scale.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Scale:
    """How hard each row pushes."""

    kills: int = 200
    power_commands: int = 6  # commands whose every seam op is a crash point
    power_states: int = 3  # random loss states per crash point
    writers: int = 8
    writes_per_writer: int = 1_000
    flips: int = 2_000
    fuzz_cases: int = 2_000
    seed: int = 0


FULL = Scale()
REDUCED = Scale(kills=6, power_commands=2, power_states=1, writers=3, writes_per_writer=12, flips=120, fuzz_cases=60)


@dataclass
class Row:
    """One line of the table: what was attacked, the figures, and whether each is at its goal."""

    name: str
    contract: str
    figures: dict[str, float | int | str] = field(default_factory=dict)
    goals: dict[str, bool] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def require(self, figure: str, value: float | int, ok: bool) -> None:
        """Record `figure` and whether it meets its goal."""
        self.figures[figure] = value
        self.goals[figure] = ok

    def note(self, figure: str, value: float | int | str) -> None:
        """Record a figure that has no goal (a count, a rate)."""
        self.figures[figure] = value

    def fail(self, text: str) -> None:
        """Keep the first few failure descriptions (for the report; the goals carry the verdict)."""
        if len(self.failures) < 5:
            self.failures.append(text)

    @property
    def ok(self) -> bool:
        return all(self.goals.values()) and bool(self.goals)


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"usr-rel-{prefix}-") as tmp:
        yield Path(tmp)


def timed(run: Callable[[Scale], Row]) -> Callable[[Scale], Row]:
    def wrapper(scale: Scale) -> Row:
        started = time.monotonic()
        row = run(scale)
        row.seconds = time.monotonic() - started
        return row

    wrapper.__name__ = run.__name__
    wrapper.__doc__ = run.__doc__
    return wrapper


def rng_for(scale: Scale, name: str) -> random.Random:
    return random.Random(f"{scale.seed}/{name}")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for worker processes: no crash or split switches of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USR_ES_")}
    env.update(extra)
    return env


def render(rows: list[Row]) -> str:
    """The table, Markdown."""
    lines = [
        "| row | contract | figures | at goal | seconds |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        figures = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.figures.items())
        missed = [k for k, ok in row.goals.items() if not ok]
        verdict = "yes" if row.ok else f"NO ({', '.join(missed)})"
        lines.append(f"| {row.name} | {row.contract} | {figures} | {verdict} | {row.seconds:.0f} |")
    for row in rows:
        for failure in row.failures:
            lines.append(f"\n{row.name}: {failure}")
    return "\n".join(lines)
