"""Every row of the table, in the order it prints."""

from __future__ import annotations

from collections.abc import Callable

from . import Row, Scale
from .attacks import containment, corruption, fuzz
from .processes import concurrency, sigkill
from .seam import io_faults, power_loss

ROWS: dict[str, Callable[[Scale], Row]] = {
    "sigkill": sigkill,
    "power-loss": power_loss,
    "io-faults": io_faults,
    "concurrency": concurrency,
    "corruption": corruption,
    "fuzz": fuzz,
    "containment": containment,
}
