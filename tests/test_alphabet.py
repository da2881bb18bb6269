"""The USR content id: sha1 of `bio_type|trimmed sequence`, case-sensitive."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es.alphabet import ALPHABETS, BIO_TYPES, alphabets_for, compute_id, normalize_sequence


def test_compute_id_matches_documented_value() -> None:
    assert compute_id("dna", "ACGT") == "ee93db6725ec05c3d18249d7fdba5d36a6a695cd"


def test_compute_id_is_case_sensitive() -> None:
    assert compute_id("dna", "acgt") != compute_id("dna", "ACGT")
    assert compute_id("dna", "acgt") == hashlib.sha1(b"dna|acgt").hexdigest()


def test_compute_id_trims_surrounding_whitespace() -> None:
    expected = "ee93db6725ec05c3d18249d7fdba5d36a6a695cd"
    assert compute_id("dna", "  ACGT\t\n") == expected
    assert normalize_sequence(" AcGt \n") == "AcGt"


def test_compute_id_depends_on_bio_type() -> None:
    assert compute_id("dna", "ACG") != compute_id("rna", "ACG")


def test_alphabets_belong_to_known_bio_types() -> None:
    for name, (bio_type, letters) in ALPHABETS.items():
        assert bio_type in BIO_TYPES
        assert letters == letters.upper()
        assert name in alphabets_for(bio_type)


@settings(max_examples=200, deadline=None)
@given(bio_type=st.sampled_from(BIO_TYPES), sequence=st.text())
def test_compute_id_equals_sha1_of_bio_type_pipe_trimmed_sequence(bio_type: str, sequence: str) -> None:
    expected = hashlib.sha1(f"{bio_type}|{sequence.strip()}".encode()).hexdigest()
    assert compute_id(bio_type, sequence) == expected
    assert compute_id(bio_type, sequence) == compute_id(bio_type, sequence)
    assert compute_id(bio_type, f"  {sequence}\n") == expected
