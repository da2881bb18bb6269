"""Projection encodings: an overlay part written from batches is the part written from one table."""

from __future__ import annotations

import errno
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es import codec
from usr_es.fileio import Spill, pieces_of
from usr_es.projectors import PartInfo, Watermark

INFO = PartInfo(namespace="mock", mark=Watermark(7, 1234, "ab" * 16), created_at="2026-12-06T00:00:00Z",
                registry_hash="r" * 64, contract_hash="c" * 64)  # fmt: skip


def _rows(n: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([f"{i:040x}" for i in range(n)], pa.string()),
            "mock__score": pa.array([float(i) if i % 3 else None for i in range(n)], pa.float64()),
            "mock__vec": pa.array([[float(i), -1.0] if i % 4 else None for i in range(n)], pa.list_(pa.float64())),
            "mock__tag": pa.array([{"k": str(i)} for i in range(n)], pa.struct([("k", pa.string())])),
        }
    )


def _bytes(parts: list[codec.Part]) -> bytes:
    return b"".join(bytes(piece) for piece in pieces_of(parts))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), cuts=st.lists(st.integers(0, 40), max_size=5), spill=st.booleans())
def test_a_part_encoded_from_batches_has_the_bytes_of_the_whole_table(
    tmp_path_factory: pytest.TempPathFactory, n: int, cuts: list[int], spill: bool
) -> None:
    table = _rows(n)
    bounds = sorted({0, n, *(min(c, n) for c in cuts)})
    batches = [table.slice(a, b - a) for a, b in pairwise(bounds)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "PART_ROW_GROUP_ROWS", 4)
        patch.setattr(codec, "SPILL_BYTES", 0 if spill else 1 << 30)
        whole = bytes(codec.encode_part(INFO, table))
        part = codec.encode_part_batches(INFO, batches, table.schema, scratch=tmp_path_factory.mktemp("scratch"))
    assert isinstance(part[0], Spill) == spill  # the body holds at least the magic
    assert _bytes(part) == whole


def test_a_scratch_folder_that_cannot_be_written_falls_back_to_the_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usr_es import fileio
    from usr_es.storage import SortedRuns

    real = fileio.spill_file
    locked = tmp_path / "read-only"

    def refuse(folder: Path) -> tuple[int, Path]:
        if folder.is_relative_to(locked):
            raise PermissionError(errno.EACCES, "read-only")
        return real(folder)

    monkeypatch.setattr(fileio, "spill_file", refuse)
    table = _rows(10)
    part = codec.encode_part_batches(INFO, [table], table.schema, scratch=locked)
    assert _bytes(part) == bytes(codec.encode_part(INFO, table))
    runs = SortedRuns(locked, key="row")  # an attach's or a materialize's runs, the same way
    runs.write(pa.table({"row": pa.array([1, 2, 5], pa.int64())}))
    piece = runs.between(0, 3)
    runs.discard()
    assert piece is not None and piece.column("row").to_pylist() == [1, 2]


def _footer_view(meta: object) -> tuple[object, ...]:
    import pyarrow.parquet as pq

    assert isinstance(meta, pq.FileMetaData)
    return (meta.num_rows, meta.num_row_groups, meta.schema.to_arrow_schema(), meta.metadata, meta.created_by)


def test_a_footer_read_from_a_path_or_bytes_is_the_one_pyarrow_reads(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    path.write_bytes(bytes(codec.encode_part(INFO, _rows(70_000))))
    expected = _footer_view(pq.read_metadata(path))
    assert _footer_view(codec.footer_of(path)) == expected
    assert _footer_view(codec.footer_of(path.read_bytes())) == expected
    assert _footer_view(codec.footer_of(pa.py_buffer(path.read_bytes()))) == expected


def test_a_footer_read_again_unchanged_is_not_parsed_again(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    path.write_bytes(bytes(codec.encode_part(INFO, _rows(10))))
    data = path.read_bytes()
    alone = data[codec.footer_start(memoryview(data)) :]  # an appended chunk's footer: no leading magic
    assert codec.footer_of(path) is codec.footer_of(path) is codec.footer_of(data) is codec.footer_of(alone)


def test_a_file_rewritten_in_place_with_the_same_size_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    first = bytes(codec.encode_part(INFO, _rows(10)))
    second = bytes(codec.encode_part(replace(INFO, registry_hash="s" * 64), _rows(10)))
    assert len(first) == len(second) and first != second
    path.write_bytes(first)
    assert codec.footer_of(path).metadata[b"usr:registry_hash"] == b"r" * 64
    with path.open("r+b") as fh:  # same inode, same size: only the bytes tell
        fh.write(second)
    assert codec.footer_of(path).metadata[b"usr:registry_hash"] == b"s" * 64


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"PAR1",
        b"not a parquet file at all",
        b"PAR1" + b"\xff" * 40 + b"PAR1",
        b"PAR1" + b"\x15\x02" * 20 + (40).to_bytes(4, "little") + b"PAR1",  # a plausible trailer, a garbage footer
    ],
)
def test_a_file_that_is_not_parquet_is_refused_as_pyarrow_refuses_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises((OSError, pa.ArrowInvalid)):
        codec.footer_of(path)
    with pytest.raises((OSError, pa.ArrowInvalid)):
        codec.footer_of(content)
    assert codec.read_watermark(path) is None
