"""Reading import files: UTF-8 only, JSON nesting bounded, every refusal an InvalidInput naming where."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from usr_es import inputs
from usr_es.errors import InvalidInput
from usr_es.inputs import (
    MAX_INPUT_COLUMNS,
    MAX_JSON_DEPTH,
    check_json_depth,
    import_batches,
    json_depth,
    too_deep,
)


def read_import_file(path: Path, fmt: str) -> pa.Table:
    return pa.concat_tables(import_batches(path, fmt, batch_rows=1_000))


nested = st.recursive(
    st.integers() | st.text(alphabet='[]{}",:ab\\', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(nested)
def test_json_depth_counts_nesting_and_ignores_brackets_inside_strings(value: object) -> None:
    assert json_depth(json.dumps(value).encode()) == _depth(value)


def _deep_line(depth: int) -> str:
    return '{"sequence":"ACGT","x":' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1_000, 20_000])
def test_a_jsonl_line_nested_too_deep_is_refused_before_parsing(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"sequence":"ACGT"}\n' * 3 + _deep_line(depth - 1) + "\n")  # the object adds a level
    if depth <= MAX_JSON_DEPTH:
        assert too_deep(path.read_bytes()) is None
        return
    with pytest.raises(InvalidInput, match=f"line 4 nests JSON deeper than {MAX_JSON_DEPTH} levels"):
        read_import_file(path, "jsonl")


def test_the_depth_check_finds_a_deep_line_across_read_chunks(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"sequence":"ACGT"}\n' * 50 + _deep_line(200) + "\n")
    with pytest.raises(InvalidInput, match="line 51 "):
        check_json_depth(path, chunk=64)


@pytest.mark.parametrize(
    ("fmt", "data", "where"),
    [
        ("fasta", b">seq\xff\xfe1\nACGT\n", "line 1 holds byte 0xff"),
        ("fasta", b">s1\nACGT\n>s2\nAC\xe9GT\n", "line 4 holds byte 0xe9"),
        ("csv", b"seq\xff\xfeuence\nACGT\n", "its header holds byte 0xff"),
        ("jsonl", b'{"sequence":"AC\xffGT"}\n', "Invalid UTF8"),
    ],
)
def test_input_that_is_not_utf8_is_refused_naming_where(tmp_path: Path, fmt: str, data: bytes, where: str) -> None:
    path = tmp_path / f"in.{fmt}"
    path.write_bytes(data)
    with pytest.raises(InvalidInput, match="is not UTF-8 text") as caught:
        read_import_file(path, fmt)
    assert where in str(caught.value)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_sequence_longer_than_a_reader_block_is_read_whole(tmp_path: Path, fmt: str) -> None:
    sequence = "ACGT" * 750_000  # 3 MB: three times pyarrow's default block
    path = tmp_path / f"long.{fmt}"
    path.write_text(f"sequence\nACGT\n{sequence}\n" if fmt == "csv" else f'{{"sequence":"{sequence}"}}\n')
    assert read_import_file(path, fmt).column("sequence").to_pylist()[-1] == sequence


def test_a_line_longer_than_the_largest_block_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "MAX_BLOCK", 4 << 20)
    path = tmp_path / "long.csv"
    path.write_text("sequence\n" + "ACGT" * 2_000_000 + "\n")
    with pytest.raises(InvalidInput, match="holds a line longer than 4 MiB"):
        read_import_file(path, "csv")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_file_wider_than_the_column_bound_is_refused_before_parsing(tmp_path: Path, fmt: str) -> None:
    names = ["sequence", *(f"c{i}" for i in range(MAX_INPUT_COLUMNS))]
    path = tmp_path / f"wide.{fmt}"
    if fmt == "csv":
        path.write_text(",".join(names) + "\n" + ",".join(["ACGT"] + ["1"] * MAX_INPUT_COLUMNS) + "\n")
    else:
        path.write_text(json.dumps({name: 1 for name in names}) + "\n")
    with pytest.raises(InvalidInput, match=f"has {MAX_INPUT_COLUMNS + 1:,} columns; the limit is"):
        read_import_file(path, fmt)


def _write(path: Path, fmt: str, sequences: list[str]) -> None:
    if fmt == "csv":
        path.write_text("sequence,other\n" + "".join(f"{s},x\n" for s in sequences))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"sequence": s, "other": 1}) + "\n" for s in sequences))
    elif fmt == "fasta":
        path.write_text("".join(f">r{i}\n{s[:3]}\n{s[3:]}\n" for i, s in enumerate(sequences)))
    else:
        pq.write_table(pa.table({"sequence": sequences, "other": [1] * len(sequences)}), path, row_group_size=7)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "fasta"])
def test_an_input_is_read_in_batches_of_the_asked_rows_in_order(tmp_path: Path, fmt: str) -> None:
    sequences = [f"ACGT{'A' * (i % 5)}{i:04d}".replace("0", "C").replace("1", "G") for i in range(25)]
    path = tmp_path / f"in.{fmt}"
    _write(path, fmt, sequences)
    batches = list(import_batches(path, fmt, batch_rows=10))
    assert [b.num_rows for b in batches] == [10, 10, 5]
    assert [s for b in batches for s in b.column("sequence").to_pylist()] == sequences
    assert {tuple(b.column_names) for b in batches} == {("sequence",)}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_long_line_late_in_a_file_rereads_with_larger_blocks_losing_and_repeating_no_row(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs, "STREAM_BLOCK", 1 << 12)
    sequences = ["ACGT" * 8] * 400 + ["ACGT" * 5_000] + ["GGCC" * 8] * 50
    path = tmp_path / f"in.{fmt}"
    _write(path, fmt, sequences)
    got = [s for b in import_batches(path, fmt, batch_rows=64) for s in b.column("sequence").to_pylist()]
    assert got == sequences
