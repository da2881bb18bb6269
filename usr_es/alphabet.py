"""Bio types, alphabets, the content id and its 8-byte key: the USR identity contract. Imports nothing internal."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

BIO_TYPES: tuple[str, ...] = ("dna", "protein", "rna")

#: alphabet -> (bio_type, allowed letters, upper case; either case is accepted)
ALPHABETS: dict[str, tuple[str, str]] = {
    "dna_4": ("dna", "ACGT"),
    "dna_5": ("dna", "ACGTN"),
    "rna_4": ("rna", "ACGU"),
    "rna_5": ("rna", "ACGUN"),
    "protein_20": ("protein", "ACDEFGHIKLMNPQRSTVWY"),
    "protein_21": ("protein", "ACDEFGHIKLMNPQRSTVWYX"),
}

ID_HASH_SPEC = "sha1_utf8_pipe"
SCHEMA_VERSION = "1"


def normalize_sequence(sequence: str) -> str:
    """Return `sequence_norm`: the sequence with leading/trailing whitespace trimmed, case kept."""
    return sequence.strip()


def compute_id(bio_type: str, sequence: str) -> str:
    """Return the USR id: sha1 hex of UTF-8 `bio_type|sequence_norm` (case-sensitive)."""
    return hashlib.sha1(f"{bio_type}|{normalize_sequence(sequence)}".encode()).hexdigest()


def alphabet_regex(alphabet: str) -> str:
    """Return an anchored regex matching a non-empty sequence of `alphabet` in either case."""
    letters = ALPHABETS[alphabet][1]
    return f"^[{letters}{letters.lower()}]+$"


def alphabets_for(bio_type: str) -> list[str]:
    """Return the alphabets valid for `bio_type`, sorted."""
    return sorted(name for name, (bt, _) in ALPHABETS.items() if bt == bio_type)


#: An id's key (the id index, duplicate checks): its first KEY_BYTES UTF-8 bytes read as a little-endian
#: uint64. Ids are sha1 hex, so keys spread evenly; keys may collide, so a match is confirmed on the full id.
KEY_BYTES = 8


def key_of(record_id: str) -> int | None:
    """The index key of one id (None: shorter than KEY_BYTES bytes, so never indexed)."""
    raw = record_id.encode()
    return int.from_bytes(raw[:KEY_BYTES], "little") if len(raw) >= KEY_BYTES else None


@dataclass(frozen=True)
class SortedKeys:
    """Index keys sorted (stably: equal keys keep their order), and where each stood (uint32 positions)."""

    keys: pa.Array
    positions: pa.Array


def sorted_keys(keys: pa.Array | pa.ChunkedArray) -> SortedKeys:
    """`keys` (uint64, fewer than 2**32) in key order: what an id index run holds, and what finding the keys
    an import accepted twice looks at (they are adjacent)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    joined = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    order = pc.sort_indices(joined)
    return SortedKeys(joined.take(order), order.cast(pa.uint32()))


def keys_of(ids: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """`key_of` of every id, vectorized (None: some id is null or too short to key)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    raw = ids.cast(pa.binary())
    raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    if raw.null_count or (len(raw) and pc.min(pc.binary_length(raw)).as_py() < KEY_BYTES):
        return None
    fixed = pc.binary_slice(raw, 0, KEY_BYTES).cast(pa.binary(KEY_BYTES))
    return fixed.view(pa.uint64())  # the bytes as stored: little-endian (`idindex.usable`)
