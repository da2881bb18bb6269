"""Attachment inputs: reading files, choosing and naming value columns, key checks, casts to registry types."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es.attach_inputs import KEY_KINDS, attachment_batches, cast_column, normalize_keys, select_columns
from usr_es.errors import InvalidInput, NamespaceError, NotFound, SchemaError
from usr_es.registry import parse_type

SEQS = ["ACGTACGT", "GGGTTTAA", "TTTTCCCC"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _text(values: Sequence[str | None]) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(values, pa.string())])


def _cast(values: Sequence[str | None], type_text: str, *, parse_json: bool = True) -> list[Any]:
    result: list[Any] = cast_column(_text(values), "mock__c", parse_type(type_text), parse_json=parse_json).to_pylist()
    return result


def _table(**columns: Sequence[Any]) -> pa.Table:
    return pa.table({name: pa.array(values) for name, values in columns.items()})


# -- reading ----------------------------------------------------------------------------------
def read_attachment(path: Path) -> pa.Table:
    """The whole file, read in small batches (so the batches are joined as an attach sees them)."""
    return pa.concat_tables(attachment_batches(path, batch_rows=2))


def test_read_attachment_csv_reads_every_column_as_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", 'sequence,score,flag,vec\nACGT,1.5,TRUE,"[1, 2]"\n')
    table = read_attachment(path)
    assert table.column_names == ["sequence", "score", "flag", "vec"]
    assert all(pa.types.is_string(t) for t in table.schema.types)
    assert table.to_pylist() == [{"sequence": "ACGT", "score": "1.5", "flag": "TRUE", "vec": "[1, 2]"}]


def test_read_attachment_csv_empty_cell_is_null_but_na_text_stays_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", "sequence,score,tag\nACGT,,NA\nGGGG,2,\n")
    table = read_attachment(path)
    assert table.column("score").to_pylist() == [None, "2"]
    assert table.column("tag").to_pylist() == ["NA", None]


def test_read_attachment_parquet_keeps_column_types(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(_table(sequence=["ACGT"], score=[1.5], n=[3], vec=[[1.0, 2.0]]), path)
    schema = read_attachment(path).schema
    assert schema.field("score").type == pa.float64()
    assert schema.field("n").type == pa.int64()
    assert schema.field("vec").type == pa.list_(pa.float64())


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".JSONL"])
def test_read_attachment_json_lines_keep_their_types(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"a{suffix}", '{"id": "x1", "score": 1.5, "vec": [1, 2]}\n{"id": "x2", "score": 2}\n')
    table = read_attachment(path)
    assert table.schema.field("score").type == pa.float64()
    assert table.column("vec").to_pylist() == [[1, 2], None]


def test_read_attachment_json_lines_keep_timestamp_like_text_as_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", '{"id": "x1", "when": "2024-01-02T03:04:05Z", "note": "2024-01-02"}\n')
    table = read_attachment(path)
    assert table.column("when").to_pylist() == ["2024-01-02T03:04:05Z"]
    assert table.column("note").to_pylist() == ["2024-01-02"]


def test_read_attachment_suffix_is_case_insensitive(tmp_path: Path) -> None:
    table = read_attachment(_write(tmp_path / "A.CSV", "sequence,x\nACGT,1\n"))
    assert table.num_rows == 1


def test_read_attachment_unknown_suffix_lists_accepted_suffixes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.tsv", "sequence\tx\n")
    with pytest.raises(InvalidInput) as info:
        read_attachment(path)
    assert "'.tsv'" in info.value.message
    assert info.value.hint is not None
    for suffix in (".csv", ".parquet", ".jsonl", ".json"):
        assert suffix in info.value.hint


def test_read_attachment_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"missing\.csv"):
        read_attachment(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("name", "content"),
    [("bad.parquet", "not parquet at all"), ("bad.csv", "a,b\n1,2,3\n"), ("bad.jsonl", '{"a": 1\n'), ("e.csv", "")],
)
def test_read_attachment_unreadable_file_is_invalid_input_naming_it(tmp_path: Path, name: str, content: str) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(InvalidInput) as info:
        read_attachment(path)
    assert name in info.value.message
    assert "\n" not in info.value.message


def test_read_attachment_drops_pandas_index_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(_table(sequence=["ACGT"], score=[1.5], __index_level_0__=[7]), path)
    assert read_attachment(path).column_names == ["sequence", "score"]


# -- select_columns -------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "key_col"), [("id", "id"), *((k, "sequence") for k in KEY_KINDS if k != "id")])
def test_select_columns_key_column_defaults_by_key_kind(key: str, key_col: str) -> None:
    table = _table(**{key_col: ["k1"], "score": ["1"]})
    selection = select_columns(table, namespace="mock", key=key, key_col=None, columns=None)
    assert selection.keys.to_pylist() == ["k1"]
    assert list(selection.columns) == ["mock__score"]


def test_select_columns_missing_key_column_names_it_and_lists_columns() -> None:
    table = _table(seq=["ACGT"], score=["1"])
    with pytest.raises(SchemaError) as info:
        select_columns(table, namespace="mock", key="sequence", key_col=None, columns=None)
    assert "'sequence'" in info.value.message
    assert "seq, score" in info.value.message


def test_select_columns_explicit_key_col_is_used() -> None:
    table = _table(genotype=["g1"], seq=["ACGT"], score=["1"])
    selection = select_columns(table, namespace="mock", key="sequence", key_col="seq", columns=["score"])
    assert selection.keys.to_pylist() == ["ACGT"]
    assert list(selection.columns) == ["mock__score"]


def test_select_columns_default_is_every_input_column_but_the_key_in_order() -> None:
    table = _table(b=["1"], sequence=["ACGT"], mock__a=["2"], c=["3"])
    selection = select_columns(table, namespace="mock", key="sequence", key_col=None, columns=None)
    assert list(selection.columns) == ["mock__b", "mock__a", "mock__c"]
    assert selection.columns["mock__a"].to_pylist() == ["2"]


@pytest.mark.parametrize("requested", ["X_value", "mock__X_value"])
@pytest.mark.parametrize("input_name", ["X_value", "mock__X_value"])
def test_select_columns_accepts_bare_and_prefixed_names(requested: str, input_name: str) -> None:
    table = _table(**{"sequence": ["ACGT"], input_name: ["[1]"], "some_other_value": ["1.0"]})
    selection = select_columns(table, namespace="mock", key="sequence", key_col=None, columns=[requested])
    assert list(selection.columns) == ["mock__X_value"]
    assert selection.columns["mock__X_value"].to_pylist() == ["[1]"]


def test_select_columns_keeps_requested_order() -> None:
    table = _table(sequence=["ACGT"], a=["1"], b=["2"], c=["3"])
    selection = select_columns(table, namespace="mock", key="sequence", key_col=None, columns=["c", "mock__a"])
    assert list(selection.columns) == ["mock__c", "mock__a"]


def test_select_columns_returns_raw_input_values() -> None:
    table = pa.table({"id": ["x"], "score": pa.array([3], pa.int32())})
    selection = select_columns(table, namespace="mock", key="id", key_col=None, columns=None)
    assert selection.columns["mock__score"].type == pa.int32()


@pytest.mark.parametrize("columns", [None, ["other__y"]])
def test_select_columns_rejects_column_of_another_namespace(columns: list[str] | None) -> None:
    table = _table(sequence=["ACGT"], other__y=["1"])
    with pytest.raises(NamespaceError) as info:
        select_columns(table, namespace="mock", key="sequence", key_col=None, columns=columns)
    assert info.value.message == "Column 'other__y' does not belong to namespace 'mock'."
    assert info.value.hint


@pytest.mark.parametrize(
    ("column", "fragment"),
    [
        ("usr_state__masked", "`usr state set DATASET --id ID --masked/--unmasked`"),
        ("usr_state__qc_status", "`usr state set DATASET --id ID --qc-status VALUE`"),
        ("usr_state__lineage", "`usr state set DATASET --id ID --lineage VALUE`"),
        ("usr_state__other", "`usr state set`"),
        ("usr__deleted", "`usr delete`"),
    ],
)
def test_a_reserved_namespaces_column_is_pointed_to_the_command_that_writes_it(column: str, fragment: str) -> None:
    table = _table(id=["x"], **{column: ["true"]})
    with pytest.raises(NamespaceError) as info:
        select_columns(table, namespace="mock", key="id", key_col=None, columns=None)
    assert info.value.hint is not None and fragment in info.value.hint
    assert "--namespace" not in info.value.hint  # attach refuses the reserved namespaces


@pytest.mark.parametrize("essential", ["id", "bio_type", "alphabet", "length", "source", "created_at"])
def test_select_columns_refuses_essential_columns_by_default(essential: str) -> None:
    table = _table(**{"sequence": ["ACGT"], essential: ["v"], "score": ["1"]})
    with pytest.raises(NamespaceError) as info:
        select_columns(table, namespace="mock", key="sequence", key_col=None, columns=None)
    assert info.value.message == f"Refusing to write essential column: {essential}"
    assert info.value.hint is not None and "--columns" in info.value.hint


def test_select_columns_refuses_essential_column_requested_explicitly() -> None:
    table = _table(id=["x1"], sequence=["ACGT"], score=["1"])
    with pytest.raises(NamespaceError, match="Refusing to write essential column: sequence"):
        select_columns(table, namespace="mock", key="id", key_col=None, columns=["score", "sequence"])


def test_select_columns_essential_columns_are_fine_when_not_selected() -> None:
    table = _table(id=["x1"], sequence=["ACGT"], score=["1"])
    selection = select_columns(table, namespace="mock", key="id", key_col=None, columns=["score"])
    assert list(selection.columns) == ["mock__score"]


def test_select_columns_requested_column_missing_from_input_is_schema_error() -> None:
    table = _table(sequence=["ACGT"], X_value=["[1]"], some_other_value=["1"])
    with pytest.raises(SchemaError) as info:
        select_columns(table, namespace="mock", key="sequence", key_col=None, columns=["X_value", "nope"])
    assert (
        info.value.message == "Column 'nope' is not in the input file (columns: sequence, X_value, some_other_value)."
    )


@pytest.mark.parametrize("columns", [None, []])
def test_select_columns_without_value_columns_is_schema_error(columns: list[str] | None) -> None:
    table = _table(sequence=["ACGT"])
    with pytest.raises(SchemaError, match="No value columns"):
        select_columns(table, namespace="mock", key="sequence", key_col=None, columns=columns)


def test_select_columns_unknown_key_kind_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as info:
        select_columns(_table(seq=["A"], x=["1"]), namespace="mock", key="seq", key_col=None, columns=None)
    assert info.value.message == "Unsupported join key 'seq'."
    assert info.value.hint is not None and "sequence_ci" in info.value.hint


def test_select_columns_same_output_column_twice_is_rejected() -> None:
    table = _table(sequence=["ACGT"], score=["1"])
    with pytest.raises(SchemaError, match="mock__score"):
        select_columns(table, namespace="mock", key="sequence", key_col=None, columns=["score", "mock__score"])


def test_select_columns_keys_are_text(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": pa.array([10, 20], pa.int64()), "score": [1.0, 2.0]}), path)
    selection = select_columns(read_attachment(path), namespace="mock", key="id", key_col=None, columns=None)
    assert selection.keys.type == pa.string()
    assert selection.keys.to_pylist() == ["10", "20"]


# -- normalize_keys -------------------------------------------------------------------------
def test_normalize_keys_trims_whitespace() -> None:
    assert normalize_keys(_text(["  ACGT", "GGGG \t"]), "sequence").to_pylist() == ["ACGT", "GGGG"]


@pytest.mark.parametrize(("key", "expected"), [("sequence_ci", "ACGTAC"), ("sequence", "acgTAC"), ("id", "acgTAC")])
def test_normalize_keys_upper_cases_only_for_sequence_ci(key: str, expected: str) -> None:
    assert normalize_keys(pa.array([" acgTAC "]), key).to_pylist() == [expected]


def test_normalize_keys_blank_and_null_keys_name_their_rows() -> None:
    with pytest.raises(SchemaError) as info:
        normalize_keys(_text([" ", "ACGT", "GG", None, "", "TT"]), "sequence")
    assert info.value.message == "3 row(s) have missing key values (rows: 1, 4, 5)."


def test_normalize_keys_duplicate_keys_show_key_and_rows() -> None:
    keys = _text([SEQS[0], SEQS[0], SEQS[1], SEQS[2], "cGTGACGT"])
    with pytest.raises(SchemaError) as info:
        normalize_keys(keys, "sequence")
    assert info.value.message == (
        f"Duplicate keys in attachment input: 1 key(s) repeated. Sample: {SEQS[0]} (rows 1,2)."
    )
    assert info.value.hint is not None and "de-duplicate" in info.value.hint


def test_normalize_keys_duplicates_after_trim_and_case_folding_for_sequence_ci() -> None:
    keys = _text(["acgt", "GGGG", " ACGT "])
    assert normalize_keys(keys, "sequence").to_pylist() == ["acgt", "GGGG", "ACGT"]
    with pytest.raises(SchemaError, match=r"Sample: ACGT \(rows 1,3\)"):
        normalize_keys(keys, "sequence_ci")


def test_normalize_keys_duplicate_samples_are_capped_at_five() -> None:
    keys = [f"k{i}" for i in range(8) for _ in range(2)]
    with pytest.raises(SchemaError) as info:
        normalize_keys(_text(keys), "id")
    message = info.value.message
    assert message.startswith("Duplicate keys in attachment input: 8 key(s) repeated.")
    assert "k0 (rows 1,2)" in message and "k4 (rows 9,10)" in message
    assert "k5" not in message


def test_normalize_keys_unknown_key_kind_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="Unsupported join key 'name'"):
        normalize_keys(_text(["a"]), "name")


# -- cast_column: values that convert ------------------------------------------------------
def test_cast_column_parses_primitive_text() -> None:
    assert _cast(["1.5", " -2e3 ", None], "float64") == [1.5, -2000.0, None]
    assert _cast(["7", "-3"], "int64") == [7, -3]
    assert _cast(["true", "FALSE", "True", "1", "0", "false"], "bool") == [True, False, True, True, False, False]
    stamps = _cast(
        ["2024-01-02T03:04:05Z", "2024-01-02T05:04:05+02:00", "2024-01-02t03:04:05.5z"], "timestamp[us, UTC]"
    )
    assert [s.isoformat() for s in stamps] == [
        "2024-01-02T03:04:05+00:00",
        "2024-01-02T03:04:05+00:00",
        "2024-01-02T03:04:05.500000+00:00",
    ]


def test_cast_column_result_has_the_registry_type() -> None:
    for type_text in ("float64", "list<float64>", "fixed_size_list<float32>[3]", "struct<a:int64,b:string>"):
        result = cast_column(_text([None]), "mock__c", parse_type(type_text), parse_json=True)
        assert result.type == parse_type(type_text)


def test_cast_column_text_to_string_keeps_json_like_text() -> None:
    assert _cast(["[1, 2]", "{}", " x "], "string") == ["[1, 2]", "{}", " x "]


def test_cast_column_json_lists_keep_nulls_and_empty_lists() -> None:
    assert _cast(["[1, 2.5]", None, "[]", "[ ]", " [ -3e2 ] "], "list<float64>") == [[1, 2.5], None, [], [], [-300.0]]


def test_cast_column_json_structs_and_nested_types() -> None:
    assert _cast(['{"a": 1, "b": "x"}', '{"a": 2}', None], "struct<a:int64,b:string>") == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": None},
        None,
    ]
    assert _cast(['[{"s": 1}, {"s": 2}]'], "list<struct<s:int64>>") == [[{"s": 1}, {"s": 2}]]
    assert _cast(['["a", "b"]'], "list<string>") == [["a", "b"]]


def test_cast_column_fixed_size_lists_from_json() -> None:
    assert _cast(["[1, 2, 3]", None, "[0.5, -1, 2e-1]"], "fixed_size_list<float32>[3]") == [
        [1.0, 2.0, 3.0],
        None,
        [0.5, -1.0, pytest.approx(0.2)],
    ]


def test_cast_column_nan_and_infinity_follow_python_json() -> None:
    values = _cast(["[NaN, Infinity, -Infinity]"], "list<float64>")
    assert [str(v) for v in values[0]] == ["nan", "inf", "-inf"]
    for not_json in ("[Inf]", "[-NaN]", "[nan]"):
        with pytest.raises(SchemaError, match="invalid JSON value"):
            _cast(["[1]", not_json], "list<float64>")


def test_cast_column_demo_style_vectors_of_512_floats(tmp_path: Path) -> None:
    rng = random.Random(7)
    vectors = [[rng.choice([-22.75, -18.25, -8.5, rng.uniform(-30, 5)]) for _ in range(512)] for _ in SEQS]
    lines = ["sequence,X_value,some_other_value"]
    lines += [f'{seq},"{json.dumps(vec)}",1.05' for seq, vec in zip(SEQS, vectors, strict=True)]
    path = _write(tmp_path / "demo_attachment.csv", "\n".join(lines) + "\n")
    selection = select_columns(
        read_attachment(path), namespace="mock", key="sequence", key_col=None, columns=["X_value"]
    )
    result = cast_column(selection.columns["mock__X_value"], "mock__X_value", pa.list_(pa.float64()), parse_json=True)
    assert result.to_pylist() == vectors
    assert normalize_keys(selection.keys, "sequence").to_pylist() == SEQS


def test_cast_column_empty_csv_cell_becomes_null(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", 'sequence,score,vec,flag\nACGT,,"[1]",\nGGGG,2.5,,true\n')
    selection = select_columns(read_attachment(path), namespace="mock", key="sequence", key_col=None, columns=None)
    cols = selection.columns
    assert cast_column(cols["mock__score"], "s", pa.float64(), parse_json=True).to_pylist() == [None, 2.5]
    assert cast_column(cols["mock__vec"], "v", pa.list_(pa.float64()), parse_json=True).to_pylist() == [[1.0], None]
    assert cast_column(cols["mock__flag"], "f", pa.bool_(), parse_json=True).to_pylist() == [None, True]


def test_cast_column_typed_inputs_are_cast_safely(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    _write(path, '{"id": "x1", "n": 1, "vec": [1, 2.5], "s": {"a": 1}}\n{"id": "x2", "n": 2, "vec": null, "s": null}\n')
    table = read_attachment(path)
    assert cast_column(table.column("n"), "n", pa.float64(), parse_json=True).to_pylist() == [1.0, 2.0]
    assert cast_column(table.column("n"), "n", pa.string(), parse_json=False).to_pylist() == ["1", "2"]
    vec = cast_column(table.column("vec"), "vec", pa.list_(pa.float32()), parse_json=False)
    assert vec.type == pa.list_(pa.float32()) and vec.to_pylist() == [[1.0, 2.5], None]
    struct = cast_column(table.column("s"), "s", parse_type("struct<a:int64,b:string>"), parse_json=False)
    assert struct.to_pylist() == [{"a": 1, "b": None}, None]


def test_cast_column_accepts_plain_arrays_and_dictionary_text() -> None:
    assert cast_column(pa.array(["1", "2"]), "c", pa.int64(), parse_json=True).to_pylist() == [1, 2]
    dictionary = pa.array(["[1]", "[2]", "[1]"]).dictionary_encode()
    assert cast_column(dictionary, "c", pa.list_(pa.int64()), parse_json=True).to_pylist() == [[1], [2], [1]]


# -- cast_column: values that do not --------------------------------------------------------
@pytest.mark.parametrize(
    ("type_text", "values", "row", "shown"),
    [
        ("float64", ["1.5", "2", "abc", "x"], 3, "'abc'"),
        ("int64", ["1", "2.5"], 2, "'2.5'"),
        ("bool", ["true", "maybe"], 2, "'maybe'"),
        ("list<float64>", ["[1]", None, '["a"]'], 3, "'[\"a\"]'"),
        ("struct<a:int64,b:string>", ['{"a": 1, "b": "x"}', '{"a": "no", "b": "x"}'], 2, '\'{"a": "no", "b": "x"}\''),
        ("fixed_size_list<float32>[3]", ["[1, 2, 3]", "[1, 2]"], 2, "'[1, 2]'"),
        ("timestamp[us, UTC]", ["2024-01-01T00:00:00Z", "2024-01-01 00:00:00"], 2, "'2024-01-01 00:00:00'"),
    ],
)
def test_cast_column_error_names_column_row_and_value(
    type_text: str, values: list[str | None], row: int, shown: str
) -> None:
    with pytest.raises(SchemaError) as info:
        _cast(values, type_text)
    assert info.value.message == f"Column 'mock__c' row {row}: cannot convert {shown} to {type_text}."
    assert info.value.hint


def test_cast_column_error_shows_at_most_40_characters_of_the_value() -> None:
    long_value = "not-a-number-" * 10
    with pytest.raises(SchemaError) as info:
        _cast([long_value], "float64")
    assert f"cannot convert {repr(long_value)[:40]} to float64." in info.value.message


def test_cast_column_error_reports_first_bad_row_of_a_large_column() -> None:
    values: list[str | None] = [str(i * 0.5) for i in range(100_000)]
    values[70_000] = "oops"
    values[90_000] = "later"
    with pytest.raises(SchemaError, match=r"row 70001: cannot convert 'oops' to float64"):
        _cast(values, "float64")
    vectors: list[str | None] = [f"[{i}, {i + 1}]" for i in range(50_000)]
    vectors[31_337] = "[1, oops]"
    with pytest.raises(SchemaError, match=r"row 31338: invalid JSON value"):
        _cast(vectors, "list<float64>")


def test_cast_column_typed_value_that_does_not_fit_names_row() -> None:
    with pytest.raises(SchemaError) as info:
        cast_column(pa.array([1.0, 2.0, 2.5]), "mock__n", pa.int64(), parse_json=True)
    assert info.value.message == "Column 'mock__n' row 3: cannot convert 2.5 to int64."


def test_cast_column_typed_column_of_an_incompatible_type_is_schema_error() -> None:
    with pytest.raises(SchemaError, match="has type list<int64> in the input; it cannot be converted to string"):
        cast_column(pa.array([[1, 2]]), "mock__s", pa.string(), parse_json=True)


def test_cast_column_typed_struct_with_unregistered_field_is_rejected() -> None:
    values = pa.array([{"a": 1, "z": 2}])
    with pytest.raises(SchemaError) as info:
        cast_column(values, "mock__s", parse_type("struct<a:int64>"), parse_json=True)
    assert info.value.hint is not None and "'z'" in info.value.hint


def test_cast_column_json_struct_with_unknown_field_is_rejected() -> None:
    with pytest.raises(SchemaError, match="row 2: cannot convert") as info:
        _cast(['{"a": 1}', '{"a": 1, "c": 2}'], "struct<a:int64,b:string>")
    assert info.value.hint is not None and "'c'" in info.value.hint


def test_cast_column_json_integers_in_float_lists_are_numbers_on_every_path() -> None:
    big = 2**24 + 1  # not exactly representable as float32
    assert _cast([f"[{big}]"], "list<float32>") == [[float(2**24)]]
    assert _cast([f"[{big}]", "[1e400]"], "list<float32>") == [[float(2**24)], [float("inf")]]


def test_cast_column_json_booleans_are_not_numbers() -> None:
    with pytest.raises(SchemaError, match="row 2: cannot convert '\\[true\\]' to list<float64>"):
        _cast(["[1]", "[true]"], "list<float64>")


@pytest.mark.parametrize("bad", ["[1, 2", "[1,]", "", "{'a': 1}", "[1] [2]"])
def test_cast_column_invalid_json_like_value_names_row(bad: str) -> None:
    with pytest.raises(SchemaError) as info:
        _cast(["[0.5]", None, bad], "list<float64>")
    assert info.value.message == f"Column 'mock__c' row 3: invalid JSON value {bad!r}."
    assert (
        info.value.hint is not None and "list<float64>" in info.value.hint and "--no-parse-json" not in info.value.hint
    )


@pytest.mark.parametrize("smuggled", ['[1]} {"v":[2]', '[1], "v": [2]', '[1]}\n{"v":[2]', '[1], "w": 2'])
def test_cast_column_cells_cannot_smuggle_extra_rows_or_fields(smuggled: str) -> None:
    with pytest.raises(SchemaError, match="row 2: invalid JSON value"):
        _cast(["[1]", smuggled, "[3]"], "list<float64>")


@pytest.mark.parametrize("type_text", ["list<float64>", "fixed_size_list<float32>[3]", "struct<a:int64,b:string>"])
def test_cast_column_without_parse_json_refuses_nested_targets_from_text(type_text: str) -> None:
    with pytest.raises(SchemaError) as info:
        _cast(["[1, 2, 3]"], type_text, parse_json=False)
    assert "'mock__c'" in info.value.message and type_text in info.value.message
    assert info.value.hint is not None and "--no-parse-json" in info.value.hint


def test_cast_column_without_parse_json_still_casts_primitives_and_keeps_text() -> None:
    assert _cast(["1.5"], "float64", parse_json=False) == [1.5]
    assert _cast(["[1, 2]"], "string", parse_json=False) == ["[1, 2]"]


# -- the fast JSON path and the per-cell path agree -----------------------------------------
def _render(value: int | float, style: str) -> str:
    if isinstance(value, int) or style == "json":
        return json.dumps(value)
    return format(value, ".6e") if style == "exp" else repr(value)


_NUMBER = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53))
_ROW = st.one_of(
    st.none(),
    st.tuples(
        st.lists(_NUMBER, max_size=10),
        st.sampled_from(["json", "exp", "repr"]),
        st.sampled_from([",", ", ", " , "]),
        st.sampled_from(["", " ", "\t"]),
    ),
)


def _rows_text(rows: list[tuple[list[int | float], str, str, str] | None]) -> list[str | None]:
    out: list[str | None] = []
    for row in rows:
        if row is None:
            out.append(None)
            continue
        numbers, style, sep, pad = row
        out.append(f"{pad}[{pad}{sep.join(_render(v, style) for v in numbers)}{pad}]{pad}")
    return out


def _parsed_floats(texts: list[str | None]) -> list[list[float] | None]:
    """JSON number lists as Python floats (a JSON integer in a float list is a number like any other)."""
    return [None if t is None else [float(v) for v in json.loads(t)] for t in texts]


@settings(max_examples=120, deadline=None)
@given(rows=st.lists(_ROW, max_size=30), type_text=st.sampled_from(["list<float64>", "list<float32>"]))
def test_cast_column_float_lists_equal_parsed_json(
    rows: list[tuple[list[int | float], str, str, str] | None], type_text: str
) -> None:
    dtype = parse_type(type_text)
    texts = _rows_text(rows)
    expected = pa.array(_parsed_floats(texts), type=dtype)
    fast = cast_column(_text(texts), "mock__c", dtype, parse_json=True).combine_chunks()
    assert fast.equals(expected)
    # "[1e400]" is Python-JSON only (infinity), so the whole column takes the per-cell path.
    slow = cast_column(_text([*texts, "[1e400]"]), "mock__c", dtype, parse_json=True).combine_chunks()
    assert slow.slice(0, len(texts)).equals(expected)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.one_of(st.none(), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8)), max_size=30))
def test_cast_column_int_lists_equal_parsed_json(rows: list[list[int] | None]) -> None:
    texts: list[str | None] = [None if r is None else json.dumps(r) for r in rows]
    dtype = pa.list_(pa.int64())
    expected = pa.array(rows, type=dtype)
    assert cast_column(_text(texts), "mock__c", dtype, parse_json=True).combine_chunks().equals(expected)
    # "[1.0]" is not an int64 literal for Arrow, so the whole column takes the per-cell path.
    slow = cast_column(_text([*texts, "[1.0]"]), "mock__c", dtype, parse_json=True).combine_chunks()
    assert slow.slice(0, len(texts)).equals(expected)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.one_of(st.none(), st.lists(st.floats(width=32, allow_nan=False), min_size=3, max_size=3))))
def test_cast_column_fixed_size_lists_equal_parsed_json(rows: list[list[float] | None]) -> None:
    texts: list[str | None] = [None if r is None else json.dumps(r) for r in rows]
    dtype = parse_type("fixed_size_list<float32>[3]")
    expected = pa.array(_parsed_floats(texts), type=dtype)
    assert cast_column(_text(texts), "mock__c", dtype, parse_json=True).combine_chunks().equals(expected)


def test_cast_column_many_chunks_keep_row_order() -> None:
    chunks = [pa.array([f"[{c}, {i}]" for i in range(50)]) for c in range(20)]
    result = cast_column(pa.chunked_array(chunks), "mock__c", pa.list_(pa.int64()), parse_json=True)
    assert result.to_pylist() == [[c, i] for c in range(20) for i in range(50)]


def test_read_attachment_refuses_deep_json_lines_and_text_that_is_not_utf8(tmp_path: Path) -> None:
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"id":"x","c":' + "[" * 20_000 + "]" * 20_000 + "}\n")
    with pytest.raises(InvalidInput, match="line 1 nests JSON deeper than"):
        read_attachment(deep)
    header = tmp_path / "bad.csv"
    header.write_bytes(b"id,sc\xffore\nx,1\n")
    with pytest.raises(InvalidInput, match="its header holds byte 0xff"):
        read_attachment(header)


def test_a_json_cell_nested_too_deep_is_a_schema_error_naming_the_row() -> None:
    with pytest.raises(SchemaError, match="row 2: JSON nested deeper than"):
        _cast(["[1]", "[" * 5_000 + "]" * 5_000], "list<float64>")


def test_a_nan_token_in_json_lines_is_a_missing_value_as_the_original_read_it(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "nan.jsonl",
        '{"id": "a", "score": NaN, "vec": [1.0, NaN]}\n{"id": "b", "score": 2.5, "vec": null}\n',
    )
    table = read_attachment(path)
    assert table.column("score").to_pylist() == [None, 2.5]
    assert table.column("vec").to_pylist() == [[1.0, None], None]
