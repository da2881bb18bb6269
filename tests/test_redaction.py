"""Redaction: secrets in keys, argv and free text never reach the log; non-UTF-8 text is refused."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from usr_es import Dataset
from usr_es.errors import InvalidInput
from usr_es.redaction import REDACTED, checked_text, escaped, redact, redact_text


def test_redact_hides_secret_keys_recursively() -> None:
    value = {
        "token": "t0p",
        "path": "/data/in.csv",
        "nested": {"client_secret": "s3cr3t", "keep": 1, "deeper": [{"Password": "p"}]},
        "API-KEY": "k",
    }
    assert redact(value) == {
        "token": REDACTED,
        "path": "/data/in.csv",
        "nested": {"client_secret": REDACTED, "keep": 1, "deeper": [{"Password": REDACTED}]},
        "API-KEY": REDACTED,
    }


def test_redact_hides_secret_argv_values() -> None:
    argv = ["usr", "import", "--token", "abc123", "--api-key=xyz", "--path", "in.csv", "--webhook-url", "http://h"]
    assert redact(argv) == [
        "usr",
        "import",
        "--token",
        REDACTED,
        f"--api-key={REDACTED}",
        "--path",
        "in.csv",
        "--webhook-url",
        REDACTED,
    ]


def test_redact_leaves_plain_values_alone() -> None:
    value = {"source": "lab", "n": 3, "items": ["a", "--verbose", "b"], "none": None}
    assert redact(value) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=abc123SECRET", f"token={REDACTED}"),
        ("https://bob:hunter2PASS@example.org/x", f"https://bob:{REDACTED}@example.org/x"),
        ("run 7, password=hunter2 on node3", f"run 7, password={REDACTED} on node3"),
        ("api_key=AbC-123 and API-KEY: 'x y'", f"api_key={REDACTED} and API-KEY: {REDACTED}"),
        ('client_secret="quoted value"', f"client_secret={REDACTED}"),
        ("clone ghp_" + "a1B2" * 9 + " done", f"clone {REDACTED} done"),
        ("aws AKIAIOSFODNN7EXAMPLE", f"aws {REDACTED}"),
        ("Authorization: Bearer abcdefgh12345678", f"Authorization: {REDACTED}"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", REDACTED),
    ],
)
def test_secret_looking_values_in_free_text_are_redacted(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact({"source": text}) == {"source": expected}


@pytest.mark.parametrize(
    "text",
    ["lab run 7", "/data/in.csv", "https://example.org/x", "qc=pass split=train", "token count 12", "author: me"],
)
def test_plain_text_is_kept(text: str) -> None:
    assert redact_text(text) == text


@given(st.text(max_size=60))
def test_redaction_is_idempotent_and_never_grows_a_secret_back(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


def test_undecodable_text_is_refused_by_name_and_a_path_is_escaped() -> None:
    bad = b"lab\xffrun".decode("utf-8", "surrogateescape")
    with pytest.raises(InvalidInput, match=r"--source is not UTF-8 text \(byte 0xff at character 4\)"):
        checked_text("--source", bad)
    assert escaped(b"/in/f\xfe.csv".decode("utf-8", "surrogateescape")) == "/in/f\\xfe.csv"


def test_secrets_in_every_free_text_argument_reach_no_file(root: Path, tmp_path: Path) -> None:
    ds = Dataset.open(root, "demo/secret")
    ds.init(source="token=abc123SECRET", notes="password=hunter2PASS")
    seqs = tmp_path / "in.csv"
    seqs.write_text("sequence\nACGTACGT\n")
    ds.import_file(seqs, source="https://bob:hunter2PASS@example.org/x")
    ds.delete([ds.head(1).column("id")[0].as_py()], reason="api_key=k3yV4LUE")
    stored = b"".join(p.read_bytes() for p in ds.dir.rglob("*") if p.is_file())
    for secret in (b"abc123SECRET", b"hunter2PASS", b"k3yV4LUE"):
        assert secret not in stored
    assert REDACTED.encode() in ds.log_path.read_bytes()
    assert pq.read_table(ds.records_path).column("source").to_pylist() == [f"https://bob:{REDACTED}@example.org/x"]


def test_a_write_with_non_utf8_free_text_is_refused_and_the_log_unchanged(root: Path) -> None:
    ds = Dataset.open(root, "demo/bytes")
    ds.init()
    before = ds.log_path.read_bytes()
    with pytest.raises(InvalidInput, match="--source is not UTF-8"):
        ds.add_sequences(["ACGT"], source=b"lab\xffrun".decode("utf-8", "surrogateescape"))
    assert ds.log_path.read_bytes() == before
