"""Export writers (csv/jsonl/parquet) and the JSON rules for Arrow data, on batches built here."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usr_es.errors import InvalidInput
from usr_es.export import EXPORT_FORMATS, check_format, export_target, write_export
from usr_es.fileio import FileOps, remove_stale_temps, use_fileops
from usr_es.jsontext import json_rows, json_text, json_value

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
META = {"usr:schema_version": "1", "usr:id_hash": "sha1_utf8_pipe"}


def strict_loads(text: str | bytes) -> Any:
    """json.loads that refuses NaN/Infinity (not JSON)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def sample_table() -> pa.Table:
    """Three rows of every column type a dataset view carries, with nulls and NaN/inf."""
    return pa.table(
        {
            "id": pa.array(["a" * 40, "b" * 40, "c" * 40]),
            "sequence": pa.array(["ACGT", 'quote " and \\ slash', "tab\tnew\nline"]),
            "length": pa.array([4, None, 2**31 - 1], pa.int32()),
            "big": pa.array([2**63 - 1, -(2**63), None], pa.int64()),
            "ubig": pa.array([2**64 - 1, 0, None], pa.uint64()),
            "score": pa.array([1.0, float("nan"), float("inf")]),
            "f32": pa.array([0.5, None, -2.0], pa.float32()),
            "flag": pa.array([True, None, False]),
            "created_at": pa.array([T0, None, dt.datetime(1970, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
            "naive": pa.array([T0.replace(tzinfo=None), None, dt.datetime(2000, 2, 29)], pa.timestamp("us")),
            "day": pa.array([dt.date(2026, 1, 2), None, dt.date(1, 1, 1)]),
            "price": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("-3.25")]),
            "blob": pa.array([b"\x00\xff", None, b""]),
            "vec": pa.array([[1.0, float("nan"), -0.5], None, []], pa.list_(pa.float64())),
            "fixed": pa.array([[1, 2], None, [3, None]], pa.list_(pa.int64(), 2)),
            "tags": pa.array([["x", 'y"'], [None], None], pa.list_(pa.string())),
            "info": pa.array(
                [{"k": 1, "v": [0.5]}, None, {"k": None, "v": None}],
                pa.struct([("k", pa.int64()), ("v", pa.list_(pa.float64()))]),
            ),
            "attrs": pa.array([[("a", 1)], None, [("b", 2), ("c", None)]], pa.map_(pa.string(), pa.int64())),
            "codes": pa.array([[(7, "seven")], [], None], pa.map_(pa.int32(), pa.string())),
            "label": pa.array(["p", None, "p"]).dictionary_encode(),
            "nothing": pa.nulls(3),
        }
    )


EXPECTED_ROWS: list[dict[str, Any]] = [
    {
        "id": "a" * 40,
        "sequence": "ACGT",
        "length": 4,
        "big": 2**63 - 1,
        "ubig": 2**64 - 1,
        "score": 1.0,
        "f32": 0.5,
        "flag": True,
        "created_at": "2026-11-24T12:00:00.123456Z",
        "naive": "2026-11-24T12:00:00.123456",
        "day": "2026-01-02",
        "price": "1.50",
        "blob": "00ff",
        "vec": [1.0, None, -0.5],
        "fixed": [1, 2],
        "tags": ["x", 'y"'],
        "info": {"k": 1, "v": [0.5]},
        "attrs": {"a": 1},
        "codes": [{"key": 7, "value": "seven"}],
        "label": "p",
        "nothing": None,
    },
    {
        "id": "b" * 40,
        "sequence": 'quote " and \\ slash',
        "length": None,
        "big": -(2**63),
        "ubig": 0,
        "score": None,
        "f32": None,
        "flag": None,
        "created_at": None,
        "naive": None,
        "day": None,
        "price": None,
        "blob": None,
        "vec": None,
        "fixed": None,
        "tags": [None],
        "info": None,
        "attrs": None,
        "codes": [],
        "label": None,
        "nothing": None,
    },
    {
        "id": "c" * 40,
        "sequence": "tab\tnew\nline",
        "length": 2**31 - 1,
        "big": None,
        "ubig": None,
        "score": None,
        "f32": -2.0,
        "flag": False,
        "created_at": "1970-01-01T00:00:00.000000Z",
        "naive": "2000-02-29T00:00:00.000000",
        "day": "0001-01-01",
        "price": "-3.25",
        "blob": "",
        "vec": [],
        "fixed": [3, None],
        "tags": None,
        "info": {"k": None, "v": None},
        "attrs": {"b": 2, "c": None},
        "codes": None,
        "label": "p",
        "nothing": None,
    },
]


def batches_of(table: pa.Table, size: int) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches(max_chunksize=size)


def temp_files(directory: Path) -> list[str]:
    """Hidden files left in `directory` (an export's temp file is hidden, whatever its prefix)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# -- JSON rules ---------------------------------------------------------------------------------


def test_json_rows_converts_every_column_type() -> None:
    table = sample_table()
    rows = json_rows(table)
    assert strict_loads(msgspec.json.encode(rows)) == EXPECTED_ROWS
    assert [list(r) for r in rows] == [table.column_names] * 3  # keys in schema order


def test_json_rows_of_sliced_and_chunked_data_match_the_whole() -> None:
    table = sample_table()
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 2)])
    assert json_rows(chunked) == EXPECTED_ROWS
    batch = table.to_batches()[0]
    assert json_rows(batch.slice(1, 2)) == EXPECTED_ROWS[1:]
    assert json_rows(batch.slice(2)) == EXPECTED_ROWS[2:]
    assert json_rows(table.slice(0, 0)) == []


def test_json_text_gives_null_text_for_nulls_and_is_never_null() -> None:
    text = json_text(pa.array([None, 1.5, float("-inf")]))
    assert text.null_count == 0
    assert text.to_pylist() == ["null", "1.5", "null"]


def test_json_text_escapes_control_characters_and_unicode_line_breaks() -> None:
    values = ["\x00\x1f", "é ü 漢字 \u2028", "\\", '"', "nel\x85 ps\u2029"]
    texts = json_text(pa.array(values)).to_pylist()
    assert [json.loads(t) for t in texts] == values
    assert all(len(t.splitlines()) == 1 for t in texts)  # one JSONL line per row, even for str.splitlines
    nested = json_text(pa.array([{"k\u2028": ["\x85"]}])).to_pylist()
    assert len(nested[0].splitlines()) == 1 and json.loads(nested[0]) == {"k\u2028": ["\x85"]}


def test_json_rows_other_timezones_are_shown_in_utc() -> None:
    paris = pa.array([T0], pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz="Europe/Paris"))
    seconds = pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("s"))
    rows = json_rows(pa.table({"paris": paris, "seconds": seconds}))
    assert rows == [{"paris": "2026-11-24T12:00:00.123456Z", "seconds": "2026-01-01T00:00:00"}]


def test_json_value_converts_python_cells() -> None:
    naive = dt.datetime(2026, 1, 2, 3, 4, 5)
    eastern = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    value = {
        "nan": float("nan"),
        "inf": [float("inf"), 1.5],
        "when": eastern,
        "naive": naive,
        "day": dt.date(2026, 1, 2),
        "dec": decimal.Decimal("0.10"),
        "raw": b"\x01\xab",
        "gap": dt.timedelta(seconds=2),
        "big": 2**70,
        "nested": ({"x": float("-inf")},),
        3: "int key",
    }
    assert strict_loads(msgspec.json.encode(json_value(value))) == {
        "nan": None,
        "inf": [None, 1.5],
        "when": "2026-01-02T08:04:05.000000Z",
        "naive": "2026-01-02T03:04:05.000000",
        "day": "2026-01-02",
        "dec": "0.10",
        "raw": "01ab",
        "gap": 2_000_000,
        "big": 2**70,
        "nested": [{"x": None}],
        "3": "int key",
    }


# Random tables of the column types datasets carry, nulls anywhere.
_finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
_moments = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
_COLUMN_KINDS: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float64": (pa.float64(), _finite_or_not),
    "string": (pa.string(), st.text(max_size=12)),
    "bool": (pa.bool_(), st.booleans()),
    "ts_utc": (pa.timestamp("us", tz="UTC"), _moments.map(lambda d: d.replace(tzinfo=UTC))),
    "ts_naive": (pa.timestamp("us"), _moments),
    "vector": (pa.list_(pa.float64()), st.lists(st.one_of(st.none(), _finite_or_not), max_size=5)),
    "pair": (
        pa.struct([("n", pa.int64()), ("s", pa.string())]),
        st.fixed_dictionaries({"n": st.one_of(st.none(), st.integers(-5, 5)), "s": st.one_of(st.none(), st.text())}),
    ),
}


def _expected(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "float64":
        return value if math.isfinite(value) else None
    if kind == "ts_utc":
        return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    if kind == "ts_naive":
        return value.isoformat(timespec="microseconds")
    if kind == "vector":
        return [v if v is not None and math.isfinite(v) else None for v in value]
    return value


@st.composite
def random_tables(draw: st.DrawFn) -> tuple[pa.Table, list[dict[str, Any]]]:
    kinds = draw(st.lists(st.sampled_from(sorted(_COLUMN_KINDS)), min_size=1, max_size=6))
    nrows = draw(st.integers(0, 8))
    columns: dict[str, pa.Array] = {}
    expected_columns: dict[str, list[Any]] = {}
    for i, kind in enumerate(kinds):
        dtype, values = _COLUMN_KINDS[kind]
        cells = draw(st.lists(st.one_of(st.none(), values), min_size=nrows, max_size=nrows))
        name = f"{kind}_{i}"
        columns[name] = pa.array(cells, dtype)
        expected_columns[name] = [_expected(kind, v) for v in cells]
    table = pa.table(columns)
    start = draw(st.integers(0, nrows))  # a slice exercises non-zero array offsets
    expected = [{name: expected_columns[name][r] for name in columns} for r in range(start, nrows)]
    return table.slice(start), expected


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_tables())
def test_json_rows_of_random_tables_parse_and_round_trip(case: tuple[pa.Table, list[dict[str, Any]]]) -> None:
    table, expected = case
    rows = json_rows(table)
    assert strict_loads(msgspec.json.encode(rows)) == expected
    assert rows == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(random_tables())
def test_jsonl_export_of_random_tables_equals_json_rows(
    tmp_path: Path, case: tuple[pa.Table, list[dict[str, Any]]]
) -> None:
    table, expected = case
    out = tmp_path / "random.jsonl"
    write_export(batches_of(table, 3), table.schema, "jsonl", out, durable=False)
    assert [strict_loads(line) for line in out.read_text().splitlines()] == expected


# -- formats and targets ------------------------------------------------------------------------


def test_check_format_accepts_the_three_formats_in_any_case() -> None:
    assert [check_format(f.upper()) for f in EXPORT_FORMATS] == list(EXPORT_FORMATS)


def test_check_format_rejects_others_with_a_hint_listing_formats() -> None:
    with pytest.raises(InvalidInput) as info:
        check_format("xlsx")
    assert info.value.hint is not None
    assert all(f in info.value.hint for f in EXPORT_FORMATS)


def test_export_target_in_existing_directory_is_named_from_dataset_id(tmp_path: Path) -> None:
    assert export_target(tmp_path, "densegen/demo", "parquet") == tmp_path / "densegen_demo.parquet"
    assert export_target(tmp_path, "flat", "CSV") == tmp_path / "flat.csv"


def test_export_target_file_path_is_used_as_is(tmp_path: Path) -> None:
    assert export_target(tmp_path / "out.csv", "ns/name", "csv") == tmp_path / "out.csv"
    (tmp_path / "old.jsonl").write_text("old\n")
    assert export_target(tmp_path / "old.jsonl", "ns/name", "jsonl") == tmp_path / "old.jsonl"


def test_export_target_in_missing_folders_is_accepted_without_creating_them(tmp_path: Path) -> None:
    assert export_target(tmp_path / "a" / "b" / "out.csv", "ns/name", "csv") == tmp_path / "a" / "b" / "out.csv"
    assert export_target(f"{tmp_path / 'newdir'}/", "ns/name", "csv") == tmp_path / "newdir" / "ns_name.csv"
    assert list(tmp_path.iterdir()) == []


def test_export_target_refuses_a_file_where_a_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "out.csv", tmp_path / "afile" / "sub" / "out.csv", f"{tmp_path / 'afile'}/"):
        with pytest.raises(InvalidInput, match="is a file, not a directory"):
            export_target(out, "ns/name", "csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_write_export_creates_missing_parent_folders(tmp_path: Path) -> None:
    table = sample_table()
    out = tmp_path / "exports" / "run1" / "out.csv"
    result = write_export(batches_of(table, 2), table.schema, "csv", out, durable=False)
    assert result.rows == 3 and pcsv.read_csv(out).num_rows == 3


def test_export_target_bad_format_is_rejected_before_anything_is_created(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        export_target(tmp_path / "sub" / "out.xlsx", "ns/name", "xlsx")
    with pytest.raises(InvalidInput):
        write_export(batches_of(sample_table(), 2), sample_table().schema, "xlsx", tmp_path / "out.xlsx")
    assert list(tmp_path.iterdir()) == []


def test_export_target_refuses_a_directory_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "ns_name.csv").mkdir()
    with pytest.raises(InvalidInput):
        export_target(tmp_path, "ns/name", "csv")


def test_export_target_refuses_the_datasets_own_files(tmp_path: Path) -> None:
    ds_dir = tmp_path / "ns" / "name"
    (ds_dir / "_derived").mkdir(parents=True)
    (ds_dir / "records.parquet").write_bytes(b"projection")
    for out in (ds_dir / "records.parquet", ds_dir / "_derived" / "x.parquet", ds_dir / ".events.log"):
        with pytest.raises(InvalidInput):
            export_target(out, "ns/name", "parquet", dataset_dir=ds_dir)
    assert export_target(ds_dir / "records.csv", "ns/name", "csv", dataset_dir=ds_dir) == ds_dir / "records.csv"
    assert export_target(ds_dir, "ns/name", "csv", dataset_dir=ds_dir) == ds_dir / "ns_name.csv"
    assert export_target(tmp_path / "records.parquet", "ns/name", "parquet", dataset_dir=ds_dir).parent == tmp_path


# -- writing ------------------------------------------------------------------------------------


def test_write_export_parquet_keeps_types_values_and_metadata(tmp_path: Path) -> None:
    table = sample_table()
    out = tmp_path / "out.parquet"
    result = write_export(batches_of(table, 2), table.schema, "parquet", out, metadata=META, dataset="ns/name")
    back = pq.read_table(out)
    assert back.schema.equals(table.schema, check_metadata=False)
    assert [back.schema.field(n).type.value_field.name for n in ("vec", "tags")] == ["item", "item"]
    assert back.schema.metadata == {k.encode(): v.encode() for k, v in META.items()}
    assert json_rows(back) == EXPECTED_ROWS  # values equal (NaN-aware via the JSON rules)
    assert back.column("score").to_pylist()[2] == math.inf and math.isnan(back.column("score").to_pylist()[1])
    assert back.drop_columns(["score", "vec"]).equals(table.drop_columns(["score", "vec"]))
    assert (result.dataset, result.format, result.rows) == ("ns/name", "parquet", 3)
    assert result.columns == table.column_names
    assert result.size_bytes == out.stat().st_size and result.path == str(out)


def test_write_export_parquet_without_metadata_keeps_the_schema_metadata(tmp_path: Path) -> None:
    table = pa.table({"x": [1, 2]}).replace_schema_metadata({"usr:schema_version": "1"})
    out = tmp_path / "out.parquet"
    write_export(batches_of(table, 1), table.schema, "parquet", out)
    assert pq.read_schema(out).metadata == {b"usr:schema_version": b"1"}


def test_write_export_parquet_groups_small_batches_into_row_groups(tmp_path: Path) -> None:
    table = pa.table({"x": list(range(5000))})
    out = tmp_path / "out.parquet"
    write_export(batches_of(table, 100), table.schema, "parquet", out)
    assert pq.ParquetFile(out).metadata.num_row_groups == 1
    assert pq.read_table(out).column("x").to_pylist() == list(range(5000))


def test_write_export_csv_round_trips_with_json_cells(tmp_path: Path) -> None:
    table = sample_table()
    out = tmp_path / "out.csv"
    write_export(batches_of(table, 2), table.schema, "csv", out)
    as_text = {"created_at": pa.string(), "naive": pa.string(), "blob": pa.string()}
    back = pcsv.read_csv(out, convert_options=pcsv.ConvertOptions(strings_can_be_null=True, column_types=as_text))
    assert back.column_names == table.column_names
    assert back.num_rows == 3
    rows = back.to_pylist()
    assert [r["id"] for r in rows] == table.column("id").to_pylist()
    assert [r["sequence"] for r in rows] == table.column("sequence").to_pylist()
    assert [r["length"] for r in rows] == [4, None, 2**31 - 1]
    assert [r["flag"] for r in rows] == [True, None, False]
    for name in ("vec", "fixed", "tags", "info", "attrs", "codes"):
        parsed = [None if cell is None else strict_loads(cell) for cell in back.column(name).to_pylist()]
        assert parsed == [row[name] for row in EXPECTED_ROWS], name
    assert [r["created_at"] for r in rows] == [row["created_at"] for row in EXPECTED_ROWS]  # RFC 3339
    assert [r["naive"] for r in rows] == [row["naive"] for row in EXPECTED_ROWS]
    assert [r["blob"] for r in rows] == ["00ff", None, None]  # bytes as hex; empty cells read as null
    assert back.column("score").to_pylist()[2] == math.inf


def test_write_export_jsonl_lines_parse_with_rfc3339_timestamps(tmp_path: Path) -> None:
    table = sample_table()
    out = tmp_path / "out.jsonl"
    result = write_export(batches_of(table, 1), table.schema, "jsonl", out)
    lines = out.read_text().splitlines()
    assert [strict_loads(line) for line in lines] == EXPECTED_ROWS
    assert strict_loads(lines[0])["created_at"] == "2026-11-24T12:00:00.123456Z"
    assert dt.datetime.fromisoformat(strict_loads(lines[0])["created_at"]) == T0
    assert list(strict_loads(lines[2])) == table.column_names
    assert result.rows == 3


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_write_export_empty_input_writes_a_valid_file(tmp_path: Path, fmt: str) -> None:
    table = sample_table()
    out = tmp_path / f"empty.{fmt}"
    result = write_export(iter([]), table.schema, fmt, out, metadata=META)
    assert result.rows == 0 and out.exists()
    if fmt == "parquet":
        back = pq.read_table(out)
        assert back.num_rows == 0
        assert back.schema.equals(table.schema, check_metadata=False)
        assert back.schema.metadata == {k.encode(): v.encode() for k, v in META.items()}
    elif fmt == "csv":
        assert out.read_text().splitlines() == [",".join(f'"{n}"' for n in table.column_names)]
    else:
        assert out.read_bytes() == b""


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_write_export_failure_mid_stream_leaves_no_target_and_no_temp(tmp_path: Path, fmt: str) -> None:
    table = sample_table()

    def failing() -> Iterator[pa.RecordBatch]:
        yield table.to_batches()[0].slice(0, 1)
        raise RuntimeError("scan broke")

    out = tmp_path / f"out.{fmt}"
    with pytest.raises(RuntimeError, match="scan broke"):
        write_export(failing(), table.schema, fmt, out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_write_export_failure_keeps_the_previous_file(tmp_path: Path, fmt: str) -> None:
    table = sample_table()
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(b"previous export")

    def interrupted() -> Iterator[pa.RecordBatch]:
        yield table.to_batches()[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_export(interrupted(), table.schema, fmt, out)
    assert out.read_bytes() == b"previous export"
    assert temp_files(tmp_path) == []


def test_write_export_failed_rename_leaves_no_temp(tmp_path: Path) -> None:
    class FailingReplace(FileOps):
        def replace(self, src: Path, dst: Path) -> None:
            raise OSError(28, "No space left on device")

    table = sample_table()
    with use_fileops(FailingReplace()), pytest.raises(OSError):
        write_export(batches_of(table, 2), table.schema, "jsonl", tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_an_export_survives_a_writers_crash_clean_up_in_the_same_folder(tmp_path: Path, fmt: str) -> None:
    table = sample_table()

    def with_a_writer_meanwhile() -> Iterator[pa.RecordBatch]:
        yield from batches_of(table, 1)
        remove_stale_temps(tmp_path)  # what a writer does under the dataset lock; exports hold no lock
        yield from batches_of(table, 2)

    out = tmp_path / f"out.{fmt}"
    result = write_export(with_a_writer_meanwhile(), table.schema, fmt, out)
    assert result.rows == 2 * table.num_rows and out.stat().st_size == result.size_bytes


def test_write_export_replaces_an_existing_file(tmp_path: Path) -> None:
    table = sample_table()
    out = tmp_path / "out.jsonl"
    out.write_text("stale\n" * 10)
    write_export(batches_of(table, 2), table.schema, "jsonl", out)
    assert len(out.read_text().splitlines()) == 3
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_write_export_reports_progress_after_each_batch(tmp_path: Path, fmt: str) -> None:
    table = pa.table({"x": list(range(10)), "v": [[float(i)] for i in range(10)]})
    seen: list[int] = []
    write_export(batches_of(table, 4), table.schema, fmt, tmp_path / f"out.{fmt}", progress=seen.append)
    assert seen == [4, 8, 10]


def test_write_export_conforms_batches_to_the_schema(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("x", pa.int64(), nullable=False)]).with_metadata({"usr:k": "v"})
    batch = pa.record_batch({"x": pa.array([1, 2])})  # nullable field, no metadata
    out = tmp_path / "out.parquet"
    write_export(iter([batch]), schema, "parquet", out)
    assert pq.read_schema(out).field("x").nullable is False
    assert pq.read_table(out).column("x").to_pylist() == [1, 2]
