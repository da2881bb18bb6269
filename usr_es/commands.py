"""Every mutation a user can ask for, as a frozen msgspec Struct with a stable snake_case tag.

Commands are intent: what was asked, validated by `decide` against the dataset state. Tags
are a stored contract (they appear in `.events.log`); never rename one. Imports nothing
internal.
"""

from __future__ import annotations

from typing import Literal

import msgspec

InputFormat = Literal["csv", "jsonl", "parquet", "fasta", "rows"]
OnConflict = Literal["error", "skip"]


class InitDataset(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    tag="init_dataset",
    forbid_unknown_fields=True,
):
    """Create an empty dataset."""

    source: str = ""
    notes: str = ""


class ImportSequences(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    tag="import_sequences",
    forbid_unknown_fields=True,
):
    """Append sequences read from a file (or handed over by the API, `fmt="rows"`).

    The rows themselves are not part of the command: they travel as the event's payload.
    """

    fmt: InputFormat
    path: str | None = None
    bio_type: str = "dna"
    alphabet: str = "dna_4"
    source: str | None = None
    on_conflict: OnConflict = "error"


Command = InitDataset | ImportSequences

command_decoder = msgspec.json.Decoder(Command)
