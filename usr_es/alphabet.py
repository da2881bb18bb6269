"""Bio types, alphabets and the content id: the USR identity contract. Imports nothing internal."""

from __future__ import annotations

import hashlib

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
