"""Pure projectors: events + payloads -> the base table and deterministic Parquet bytes."""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es.codec import encode_base, patch_watermark_hash
from usr_es.events import DatasetInitialized, Materialized, OverlayWritten, SequencesImported
from usr_es.fileio import Spill
from usr_es.projectors import (
    BASE_SCHEMA,
    PAYLOAD_SCHEMA,
    BaseProjection,
    DerivedLayout,
    PartInfo,
    Watermark,
    apply_event,
    apply_layout,
)

CREATED = "2024-05-01T12:00:00.000000Z"
INIT = DatasetInitialized(name="demo/ds", created_at=CREATED, source="test")
REGISTRY_HASH = "ab" * 32


def raw(data: bytes | memoryview | Sequence[bytes | memoryview]) -> bytes:
    """File bytes from whatever the encoders hand back (bytes, a view, or parts in order)."""
    if isinstance(data, (bytes, memoryview)):
        return bytes(data)
    return b"".join(bytes(part) for part in data)


def payload(sequences: list[str], *, bio_type: str = "dna", alphabet: str = "dna_4") -> pa.Table:
    ids = [hashlib.sha1(f"{bio_type}|{s}".encode()).hexdigest() for s in sequences]
    n = len(sequences)
    return pa.table([ids, [bio_type] * n, sequences, [alphabet] * n], schema=PAYLOAD_SCHEMA)


def imported(at: str, source: str = "batch") -> SequencesImported:
    return SequencesImported(rows=0, skipped=0, source=source, created_at=at)


def mark(seq: int) -> Watermark:
    return Watermark(seq=seq, offset=100 * seq, hash=f"{seq:032x}")


def initialised() -> BaseProjection:
    base = apply_event(None, INIT, None, registry_hash=REGISTRY_HASH, mark=mark(1))
    assert base is not None
    return base


def fold(base: BaseProjection | None, event: SequencesImported, rows: pa.Table | None, seq: int) -> BaseProjection:
    result = apply_event(base, event, rows, registry_hash=REGISTRY_HASH, mark=mark(seq))
    assert result is not None
    return result


def test_apply_init_gives_empty_base_schema_table() -> None:
    base = initialised()
    assert base.table.schema == BASE_SCHEMA
    assert base.rows == 0
    assert base.created_at == CREATED
    assert base.watermark == mark(1)
    assert base.registry_hash == REGISTRY_HASH


def test_apply_import_before_init_is_rejected() -> None:
    with pytest.raises(ValueError):
        apply_event(None, imported(CREATED), payload(["ACGT"]), registry_hash=None, mark=mark(2))


def test_apply_import_appends_rows_in_log_order() -> None:
    first_at, second_at = "2024-05-01T12:00:01.000001Z", "2024-05-02T00:00:00.250000Z"
    base = fold(initialised(), imported(first_at, "one"), payload(["ACGT", "gg"]), 2)
    base = fold(base, imported(second_at, "two"), payload(["TTTTT"]), 3)
    table = base.table
    assert table.schema == BASE_SCHEMA
    assert table.column("sequence").to_pylist() == ["ACGT", "gg", "TTTTT"]
    assert table.column("source").to_pylist() == ["one", "one", "two"]
    assert table.schema.field("length").type == pa.int32()
    assert table.column("length").to_pylist() == [4, 2, 5]
    assert table.column("created_at").to_pylist() == [
        datetime(2024, 5, 1, 12, 0, 1, 1, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 0, 1, 1, tzinfo=UTC),
        datetime(2024, 5, 2, 0, 0, 0, 250000, tzinfo=UTC),
    ]
    assert base.watermark == mark(3)
    assert base.created_at == CREATED


def test_apply_import_without_payload_keeps_rows() -> None:
    base = fold(initialised(), imported(CREATED), payload(["ACGT"]), 2)
    after = fold(base, imported(CREATED), None, 3)
    assert after.table.equals(base.table)
    assert after.watermark == mark(3)


def test_encode_base_is_deterministic() -> None:
    base = fold(initialised(), imported(CREATED), payload(["ACGT", "GGCC", "a"]), 2)
    assert raw(encode_base(base)) == raw(encode_base(base))
    assert raw(encode_base(initialised())) == raw(encode_base(initialised()))


def test_encode_base_changes_with_content_and_watermark() -> None:
    base = fold(initialised(), imported(CREATED), payload(["ACGT"]), 2)
    other = fold(initialised(), imported(CREATED), payload(["ACGA"]), 2)
    moved = fold(initialised(), imported(CREATED), payload(["ACGT"]), 3)
    assert raw(encode_base(base)) != raw(encode_base(other))
    assert raw(encode_base(base)) != raw(encode_base(moved))


def test_incremental_fold_equals_single_fold_of_concatenated_payloads() -> None:
    parts = [payload(["ACGT", "GG"]), payload(["TTT"]), payload(["CCCCA", "aaa", "g"])]
    event = imported(CREATED)
    step = initialised()
    for part in parts:
        step = fold(step, event, part, 2)
    once = fold(initialised(), event, pa.concat_tables(parts), 2)
    assert step.table.equals(once.table)
    assert raw(encode_base(step)) == raw(encode_base(once))


def test_patched_watermark_equals_direct_encoding() -> None:
    base = fold(initialised(), imported(CREATED), payload(["ACGT", "TTGA"]), 2)
    pending = raw(encode_base(base, pending_hash=True))
    final = raw(encode_base(base))
    assert len(pending) == len(final)
    patched = raw(patch_watermark_hash(memoryview(pending), base.watermark.hash))
    assert patched == final
    meta = pq.read_metadata(io.BytesIO(patched)).metadata
    assert meta[b"usr_es:hash"] == base.watermark.hash.encode()
    assert meta[b"usr_es:seq"] == b"2"
    assert meta[b"usr_es:offset"] == b"200"
    assert meta[b"usr:registry_hash"] == REGISTRY_HASH.encode()
    assert meta[b"usr:dataset_created_at"] == CREATED.encode()


def test_patch_watermark_hash_rejects_file_without_placeholder() -> None:
    final = raw(encode_base(initialised()))
    with pytest.raises(ValueError):
        patch_watermark_hash(memoryview(final), "f" * 32)


def test_encoded_base_reads_back_as_the_table() -> None:
    base = fold(initialised(), imported(CREATED), payload(["ACGT", "TTGA"]), 2)
    table = pq.read_table(io.BytesIO(raw(encode_base(base))))
    assert table.replace_schema_metadata(None).equals(base.table)


def _part(ns: str, seq: int) -> PartInfo:
    return PartInfo(namespace=ns, mark=mark(seq), created_at=CREATED, registry_hash=None, contract_hash=None)


def _materialized(namespaces: tuple[str, ...], *, drop: bool = False) -> Materialized:
    return Materialized(
        namespaces=namespaces,
        columns=(),
        drop_overlays=drop,
        archive_overlays=False,
        drop_deleted=False,
        rows_dropped=0,
    )


def test_materialize_keeping_overlays_marks_their_parts_folded_for_bases_from_then_on() -> None:
    layout = DerivedLayout(live={"mock": (_part("mock", 3), _part("mock", 4)), "usr": (_part("usr", 5),)})
    folded = apply_layout(layout, _materialized(("mock",)), registry_hash=None, mark=mark(6), has_rows=False)
    later = apply_layout(
        folded,
        OverlayWritten(
            namespace="mock",
            key="id",
            columns={"mock__x": "float64"},
            rows=1,
            rows_missing=0,
            created_at=CREATED,
            contract_hash="c" * 64,
        ),
        registry_hash=None,
        mark=mark(7),
        has_rows=True,
    )
    assert [p.mark.seq for p in later.unfolded("mock", 7)] == [7]  # 3 and 4 are in the base of seq 6 on
    assert [p.mark.seq for p in later.unfolded("mock", 5)] == [3, 4, 7]  # an older base still needs them
    assert [p.mark.seq for p in later.unfolded("usr", 7)] == [5]  # tombstones are never folded
    dropped = apply_layout(later, _materialized(("mock",), drop=True), registry_hash=None, mark=mark(8), has_rows=False)
    assert "mock" not in dropped.live and dropped.folded == {}


# -- appending row groups (docs/adr/0013) -----------------------------------------------------------
_NUMBERED = pa.schema([("id", pa.string()), ("source", pa.string()), ("n", pa.int64())])


def _numbered(n: int, start: int = 0) -> pa.Table:
    numbers = range(start, start + n)
    return pa.table([[f"{i:040x}" for i in numbers], ["s"] * n, list(numbers)], schema=_NUMBERED)


def _append(
    footer: pq.FileMetaData, at: int, tables: list[pa.Table], meta: dict[str, str], digest: str
) -> bytes | None:
    """`codec.append_parquet`'s bytes (row groups and footer) in one piece."""
    from usr_es import codec

    schema = tables[0].schema if tables else _NUMBERED
    appended = codec.append_parquet(footer, at, iter(tables), schema, meta, digest, scratch=Path(tempfile.gettempdir()))
    if appended is None:
        return None
    body, tail = appended
    return b"".join(part.read() if isinstance(part, Spill) else bytes(part) for part in body) + tail


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=70), min_size=1, max_size=5),
    st.integers(1, 3),
    st.lists(st.integers(min_value=1, max_value=40), max_size=4),
    st.booleans(),
)
def test_appended_row_groups_read_back_as_the_whole_table_and_keep_every_earlier_file(
    batches: list[int], group_rows: int, cuts: list[int], spill: bool
) -> None:
    """Whether the appended rows arrive in one table or several, and whether their row groups stay in memory
    or spill to a scratch file, the bytes are the same."""
    from usr_es import codec

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "ROW_GROUP_ROWS", 16 * group_rows)
        first = _numbered(batches[0])
        data = raw(codec.encode_parquet(first, {"v": "0"}, "0" * 32))
        versions = [(data, first, "0")]
        table = first
        for k, n in enumerate(batches[1:], start=1):
            added = _numbered(n, table.num_rows)
            footer = pq.read_metadata(pa.BufferReader(data))
            chunk = _append(footer, len(data), [added], {"v": str(k)}, f"{k:032d}")
            assert chunk is not None
            pieces, at = [], 0
            for cut in cuts:
                pieces.append(added.slice(at, cut))
                at += cut
            pieces.append(added.slice(at))
            if spill:
                patch.setattr(codec, "SPILL_BYTES", 0)
            assert chunk == _append(footer, len(data), pieces, {"v": str(k)}, f"{k:032d}")  # deterministic
            patch.setattr(codec, "SPILL_BYTES", 32 << 20)
            data, table = data + chunk, pa.concat_tables([table, added])
            versions.append((data, table, str(k)))
    for then, expected, version in versions:  # every earlier size of the file is still that version
        assert data.startswith(then)
        back = pq.read_table(pa.BufferReader(data[: len(then)]))
        assert back.replace_schema_metadata(None).equals(expected)
        assert pq.read_metadata(pa.BufferReader(data[: len(then)])).metadata[b"v"] == version.encode()


def test_an_append_of_rows_with_other_columns_is_refused() -> None:
    from usr_es import codec

    data = raw(codec.encode_parquet(_numbered(3), {}, "0" * 32))
    footer = pq.read_metadata(pa.BufferReader(data))
    assert _append(footer, len(data), [pa.table({"other": [1]})], {}, "0" * 32) is None
