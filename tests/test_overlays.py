"""Overlay algebra: last-writer-wins merge of parts and the live view, against examples and a dict model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es.names import STATE_NS, TOMBSTONE_NS, WRITTEN
from usr_es.overlays import (
    STATE_SCHEMA,
    TOMBSTONE_SCHEMA,
    Part,
    live_view,
    tombstoned_ids,
)
from usr_es.overlays import (
    merge_parts as merge_with_masks,
)


def merge_parts(parts: Sequence[Part]) -> pa.Table:
    """The merged values without the WRITTEN bookkeeping columns (what users can see)."""
    merged = merge_with_masks(parts)
    return merged.select([name for name in merged.column_names if not name.startswith(WRITTEN)])


F64_LIST = pa.list_(pa.float64())
UTC_US = pa.timestamp("us", tz="UTC")


def part(seq: int, **columns: Any) -> Part:
    """A part from python columns; `id` is required, other values may be lists or pa.Arrays."""
    return Part(seq, pa.table(columns))


def rows(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in table.to_pylist()}


def base_table(ids: Sequence[str], **columns: Any) -> pa.Table:
    return pa.table({"id": pa.array(list(ids), pa.string()), "sequence": [f"seq-{i}" for i in ids], **columns})


def tombstones(seq: int, entries: Mapping[str, bool | None], reason: str = "") -> Part:
    ids = list(entries)
    at = datetime(2024, 5, 1, 12, tzinfo=UTC) + timedelta(seconds=seq)
    return Part(
        seq,
        pa.table(
            {
                "id": ids,
                "usr__deleted": pa.array([entries[i] for i in ids], pa.bool_()),
                "usr__deleted_at": pa.array([at] * len(ids), UTC_US),
                "usr__deleted_reason": [reason] * len(ids),
            },
            schema=TOMBSTONE_SCHEMA,
        ),
    )


# merge_parts: last writer wins


def test_merge_parts_newer_part_wins() -> None:
    merged = merge_parts([part(1, id=["a", "b"], m__score=[7.0, 1.0]), part(2, id=["a"], m__score=[9.0])])
    assert rows(merged)["a"]["m__score"] == 9.0
    assert rows(merged)["b"]["m__score"] == 1.0


def test_merge_parts_follows_seq_not_argument_order() -> None:
    merged = merge_parts([part(5, id=["a"], m__score=[9.0]), part(2, id=["a"], m__score=[7.0])])
    assert merged.column("m__score").to_pylist() == [9.0]


def test_merge_parts_explicit_null_in_later_part_clears() -> None:
    merged = merge_parts(
        [part(1, id=["a", "b"], m__score=[7.0, 1.0]), part(2, id=["a"], m__score=pa.array([None], pa.float64()))]
    )
    assert rows(merged)["a"]["m__score"] is None
    assert rows(merged)["b"]["m__score"] == 1.0


def test_merge_parts_part_without_column_leaves_it_untouched() -> None:
    merged = merge_parts([part(1, id=["a"], m__score=[7.0], m__label=["good"]), part(2, id=["a"], m__score=[9.0])])
    assert rows(merged)["a"] == {"id": "a", "m__score": 9.0, "m__label": "good"}


def test_merge_parts_ids_only_in_early_parts_survive() -> None:
    merged = merge_parts([part(1, id=["a", "b"], m__score=[1.0, 2.0]), part(2, id=["c"], m__score=[3.0])])
    assert rows(merged) == {
        "a": {"id": "a", "m__score": 1.0},
        "b": {"id": "b", "m__score": 2.0},
        "c": {"id": "c", "m__score": 3.0},
    }


def test_merge_parts_orders_rows_and_columns_by_first_appearance() -> None:
    merged = merge_parts(
        [
            part(3, id=["d", "a"], m__z=[1, 2], m__x=[3, 4]),
            part(1, id=["b", "a"], m__y=[5, 6]),
            part(2, id=["c", "b"], m__x=[7, 8]),
        ]
    )
    assert merged.column_names == ["id", "m__y", "m__x", "m__z"]
    assert merged.column("id").to_pylist() == ["b", "a", "c", "d"]


def test_merge_parts_never_written_cells_are_null() -> None:
    merged = merge_parts([part(1, id=["a"], m__x=[1]), part(2, id=["b"], m__y=["y"])])
    assert merged.to_pylist() == [{"id": "a", "m__x": 1, "m__y": None}, {"id": "b", "m__x": None, "m__y": "y"}]


@pytest.mark.parametrize(
    ("kind", "old", "new"),
    [
        (F64_LIST, [1.0, 2.0], [3.0]),
        (pa.list_(pa.string()), ["x"], ["y", "z"]),
        (pa.struct([("n", pa.int64()), ("s", pa.string())]), {"n": 1, "s": "a"}, {"n": 2, "s": None}),
        (pa.list_(pa.float64(), 2), [1.0, 2.0], [3.0, 4.0]),
        (UTC_US, datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 6, 1, 8, 30, tzinfo=UTC)),
        (pa.bool_(), True, False),
    ],
    ids=["list_float64", "list_string", "struct", "fixed_size_list", "timestamp_utc", "bool"],
)
def test_merge_parts_nested_and_temporal_types_keep_type_and_values(kind: pa.DataType, old: Any, new: Any) -> None:
    merged = merge_parts(
        [
            part(1, id=["a", "b"], m__v=pa.array([old, old], kind)),
            part(2, id=["b", "c"], m__v=pa.array([new, None], kind)),
        ]
    )
    assert merged.schema.field("m__v").type == kind
    assert merged.column("m__v").to_pylist() == [old, new, None]


def test_merge_parts_type_change_casts_earlier_values_to_latest_type() -> None:
    merged = merge_parts(
        [part(1, id=["a", "b"], m__x=pa.array([1, 2], pa.int32())), part(2, id=["b"], m__x=pa.array([2.5]))]
    )
    assert merged.schema.field("m__x").type == pa.float64()
    assert merged.column("m__x").to_pylist() == [1.0, 2.5]


def test_merge_parts_impossible_cast_raises_value_error() -> None:
    with pytest.raises(ValueError, match="m__x"):
        merge_parts([part(1, id=["a"], m__x=["not a number"]), part(2, id=["b"], m__x=[1.5])])


def test_merge_parts_accepts_multi_chunk_columns() -> None:
    chunked = pa.Table.from_batches(
        [
            pa.record_batch({"id": ["a", "b"], "m__x": [1, 2]}),
            pa.record_batch({"id": ["c"], "m__x": [3]}),
        ]
    )
    merged = merge_parts([Part(1, chunked), part(2, id=["b"], m__x=[20])])
    assert merged.column("m__x").to_pylist() == [1, 20, 3]
    assert merged.column("m__x").num_chunks == 1


@pytest.mark.parametrize(
    "parts",
    [
        [part(1, id=["a", "a"], m__x=[1, 2])],
        [part(1, id=["a", "b", "b", "c"], m__x=[1, 2, 3, 4])],
        [part(1, id=["a"], m__x=[1]), part(2, id=["b", "c", "b"], m__x=[1, 2, 3])],
        [part(1, id=["a"], m__x=[1]), part(1, id=["b"], m__x=[2])],
        [part(1, key=["a"], m__x=[1])],
        [part(1, id=pa.array(["a", None]), m__x=[1, 2])],
        [part(1, id=[1, 2], m__x=[1, 2])],
    ],
    ids=[
        "duplicate_id_first_part",
        "duplicate_id_in_sorted_part",
        "duplicate_id_later_part",
        "equal_seqs",
        "no_id",
        "null_id",
        "int_id",
    ],
)
def test_merge_parts_rejects_malformed_parts(parts: list[Part]) -> None:
    with pytest.raises(ValueError):
        merge_parts(parts)


def test_merge_parts_of_no_parts_is_an_empty_id_table() -> None:
    merged = merge_parts([])
    assert merged.num_rows == 0
    assert merged.schema == pa.schema([pa.field("id", pa.string())])


# merge_parts: determinism and compaction

P1 = part(1, id=["a", "b", "c"], m__score=[1.0, 2.0, 3.0], m__label=["x", "y", None])
P2 = part(
    2,
    id=["c", "d", "a"],
    m__score=pa.array([None, 4.0, 5.0]),
    m__vec=pa.array([[1.0], None, [2.0, 3.0]], F64_LIST),
)
P3 = part(3, id=["d", "e", "b"], m__label=["dd", "ee", None], m__vec=pa.array([[9.0], [], None], F64_LIST))


def test_merge_parts_is_deterministic() -> None:
    first = merge_parts([P1, P2, P3])
    again = merge_parts([P3, P1, P2])
    assert first.equals(again, check_metadata=True)
    assert first.column("m__score").num_chunks == 1


def test_merge_parts_compaction_is_equivalent_to_merging_all_parts() -> None:
    compacted = Part(2, merge_with_masks([P1, P2]))
    assert merge_parts([compacted, P3]).equals(merge_parts([P1, P2, P3]))
    assert merge_parts([compacted, P3]).to_pylist() == [
        {"id": "a", "m__score": 5.0, "m__label": "x", "m__vec": [2.0, 3.0]},
        {"id": "b", "m__score": 2.0, "m__label": None, "m__vec": None},
        {"id": "c", "m__score": None, "m__label": None, "m__vec": [1.0]},
        {"id": "d", "m__score": 4.0, "m__label": "dd", "m__vec": [9.0]},
        {"id": "e", "m__score": None, "m__label": "ee", "m__vec": []},
    ]


def test_merge_parts_handles_200k_ids_in_three_parts() -> None:
    n = 200_000
    ids = pa.array([f"id{i:07d}" for i in range(n)])
    score = pc.cast(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), pa.float64())
    first = Part(1, pa.table({"id": ids, "m__score": score}))
    second = Part(2, pa.table({"id": ids[::-2], "m__score": pc.negate(score[::-2]), "m__label": ids[::-2]}))
    third = Part(3, pa.table({"id": ids[:1000], "m__score": pa.nulls(1000, pa.float64())}))
    merged = merge_parts([first, second, third])
    assert merged.num_rows == n
    assert merged.column("id").equals(pa.chunked_array([ids]))
    assert merged.slice(999, 3).to_pylist() == [
        {"id": "id0000999", "m__score": None, "m__label": "id0000999"},
        {"id": "id0001000", "m__score": 1001.0, "m__label": None},
        {"id": "id0001001", "m__score": -1002.0, "m__label": "id0001001"},
    ]


# live_view


def test_live_view_appends_overlay_columns_in_sorted_namespace_order() -> None:
    base = base_table(["a", "b"])
    merged = {
        "zeta": merge_parts([part(1, id=["a"], zeta__q=[1], zeta__p=[2])]),
        "alpha": merge_parts([part(2, id=["b"], alpha__r=["r"])]),
    }
    view = live_view(base, merged)
    assert view.column_names == ["id", "sequence", "alpha__r", "zeta__q", "zeta__p"]
    assert view.to_pylist() == [
        {"id": "a", "sequence": "seq-a", "alpha__r": None, "zeta__q": 1, "zeta__p": 2},
        {"id": "b", "sequence": "seq-b", "alpha__r": "r", "zeta__q": None, "zeta__p": None},
    ]


def test_live_view_materialized_column_overridden_only_where_overlay_has_id() -> None:
    base = base_table(["a", "b", "c"], m__score=[1.0, 2.0, 3.0])
    overlay = merge_parts([part(4, id=["b", "c"], m__score=pa.array([20.0, None]))])
    view = live_view(base, {"m": overlay})
    assert view.column_names == ["id", "sequence", "m__score"]
    assert view.column("m__score").to_pylist() == [1.0, 20.0, None]


@pytest.mark.parametrize(
    "kind",
    [pa.list_(pa.float64(), 2), pa.struct([("n", pa.int64())]), F64_LIST],
    ids=["fixed_size_list", "struct", "list_float64"],
)
def test_live_view_overrides_materialized_nested_columns(kind: pa.DataType) -> None:
    old, new = ([1.0, 2.0], [3.0, 4.0]) if kind != pa.struct([("n", pa.int64())]) else ({"n": 1}, {"n": 2})
    base = base_table(["a", "b"], m__v=pa.array([old, old], kind))
    view = live_view(base, {"m": merge_parts([part(1, id=["b"], m__v=pa.array([new], kind))])})
    assert view.column("m__v").to_pylist() == [old, new]
    assert view.schema.field("m__v").type == kind


def test_live_view_ignores_overlay_ids_not_in_base() -> None:
    base = base_table(["a", "b"])
    view = live_view(base, {"m": merge_parts([part(1, id=["zz", "b"], m__x=[1, 2])])})
    assert view.column("id").to_pylist() == ["a", "b"]
    assert view.column("m__x").to_pylist() == [None, 2]


def test_live_view_hides_tombstoned_rows_and_tombstone_columns() -> None:
    base = base_table(["a", "b", "c"])
    merged_usr = merge_parts([tombstones(2, {"b": True})])
    view = live_view(base, {TOMBSTONE_NS: merged_usr})
    assert view.column("id").to_pylist() == ["a", "c"]
    assert not any(name.startswith("usr__") for name in view.column_names)


def test_live_view_include_deleted_shows_rows_and_tombstone_columns() -> None:
    base = base_table(["a", "b"])
    view = live_view(
        base, {TOMBSTONE_NS: merge_parts([tombstones(2, {"b": True}, reason="bad")])}, include_deleted=True
    )
    assert view.column_names == ["id", "sequence", *TOMBSTONE_SCHEMA.names[1:]]
    assert view.column("usr__deleted").to_pylist() == [False, True]
    assert view.column("usr__deleted_reason").to_pylist() == [None, "bad"]
    assert view.schema.field("usr__deleted_at").type == UTC_US


def test_live_view_restore_shows_the_row_again() -> None:
    base = base_table(["a", "b"])
    merged_usr = merge_parts([tombstones(2, {"a": True, "b": True}), tombstones(3, {"a": False})])
    assert live_view(base, {TOMBSTONE_NS: merged_usr}).column("id").to_pylist() == ["a"]
    assert tombstoned_ids(merged_usr).to_pylist() == ["b"]


def test_live_view_tombstone_in_materialized_base_is_honoured_and_overridable() -> None:
    base = base_table(["a", "b", "c"], usr__deleted=pa.array([True, True, None]))
    merged_usr = merge_parts([tombstones(5, {"b": False})])
    assert live_view(base, {}).column("id").to_pylist() == ["c"]
    assert live_view(base, {TOMBSTONE_NS: merged_usr}).column("id").to_pylist() == ["b", "c"]
    assert live_view(base, {TOMBSTONE_NS: merged_usr}).column_names == ["id", "sequence"]


def test_live_view_include_deleted_without_tombstones_adds_no_columns() -> None:
    base = base_table(["a"])
    assert live_view(base, {}, include_deleted=True).column_names == ["id", "sequence"]


def test_live_view_masked_null_reads_false() -> None:
    base = base_table(["a", "b", "c"])
    state = Part(
        2,
        pa.table(
            {
                "id": ["a", "b"],
                "usr_state__masked": pa.array([True, None]),
                "usr_state__qc_status": ["pass", None],
                "usr_state__split": pa.array([None, "train"], pa.string()),
                "usr_state__supersedes": pa.array([None, None], pa.string()),
                "usr_state__lineage": pa.array([["x", "y"], None], pa.list_(pa.string())),
            },
            schema=STATE_SCHEMA,
        ),
    )
    view = live_view(base, {STATE_NS: merge_parts([state])})
    assert view.column("usr_state__masked").to_pylist() == [True, False, False]
    assert view.column("usr_state__qc_status").to_pylist() == ["pass", None, None]
    assert view.column("usr_state__lineage").to_pylist() == [["x", "y"], None, None]


def test_live_view_columns_selects_and_orders_output() -> None:
    base = base_table(["a", "b"])
    merged = {"m": merge_parts([part(1, id=["b"], m__x=[2])]), TOMBSTONE_NS: merge_parts([tombstones(2, {"a": True})])}
    assert live_view(base, merged, columns=["m__x", "id"]).to_pylist() == [{"m__x": 2, "id": "b"}]
    chosen = live_view(base, merged, include_deleted=True, columns=["usr__deleted", "id"])
    assert chosen.to_pylist() == [{"usr__deleted": True, "id": "a"}, {"usr__deleted": False, "id": "b"}]


def test_live_view_tombstone_column_without_include_deleted_raises_value_error() -> None:
    base = base_table(["a"])
    merged = {TOMBSTONE_NS: merge_parts([tombstones(2, {"a": False})])}
    with pytest.raises(ValueError, match="tombstone columns require include_deleted"):
        live_view(base, merged, columns=["id", "usr__deleted"])


def test_live_view_unknown_column_raises_key_error() -> None:
    with pytest.raises(KeyError, match="m__nope"):
        live_view(base_table(["a"]), {"m": merge_parts([part(1, id=["a"], m__x=[1])])}, columns=["m__nope"])


def test_live_view_is_deterministic_across_chunking() -> None:
    base = pa.Table.from_batches(
        [pa.record_batch({"id": ["a", "b"], "m__x": [1, 2]}), pa.record_batch({"id": ["c"], "m__x": [3]})]
    )
    merged = {"m": merge_parts([part(1, id=["c", "a"], m__x=[30, None], m__y=["c", "a"])])}
    expected = [
        {"id": "a", "m__x": None, "m__y": "a"},
        {"id": "b", "m__x": 2, "m__y": None},
        {"id": "c", "m__x": 30, "m__y": "c"},
    ]
    assert live_view(base, merged).to_pylist() == expected
    assert live_view(base.combine_chunks(), merged).to_pylist() == expected


def test_tombstoned_ids_of_none_is_an_empty_string_array() -> None:
    empty = tombstoned_ids(None)
    assert len(empty) == 0
    assert empty.type == pa.string()


# property: merge_parts + live_view against a dict model

POOL = ["a", "b", "c", "d", "e", "f"]
COLUMN_TYPES = {"m__i": pa.int64(), "m__s": pa.string(), "m__v": F64_LIST}
VALUES = {
    "m__i": st.none() | st.integers(-5, 5),
    "m__s": st.none() | st.sampled_from(["", "x", "yy"]),
    "m__v": st.none() | st.lists(st.integers(-3, 3).map(float), max_size=3),
}


@st.composite
def overlay_parts(draw: st.DrawFn) -> list[Part]:
    seqs = draw(st.lists(st.integers(1, 50), min_size=0, max_size=4, unique=True))
    parts = []
    for seq in seqs:
        ids = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL)))
        names = draw(st.lists(st.sampled_from(sorted(COLUMN_TYPES)), unique=True, max_size=3))
        table = pa.table(
            {
                "id": pa.array(ids, pa.string()),
                **{name: pa.array([draw(VALUES[name]) for _ in ids], COLUMN_TYPES[name]) for name in names},
            }
        )
        parts.append(Part(seq, table))
    return parts


@st.composite
def tombstone_parts(draw: st.DrawFn) -> list[Part]:
    seqs = draw(st.lists(st.integers(51, 60), max_size=3, unique=True))
    return [
        tombstones(seq, draw(st.dictionaries(st.sampled_from(POOL), st.none() | st.booleans(), max_size=4)))
        for seq in seqs
    ]


def model_merge(parts: Sequence[Part]) -> tuple[list[str], list[str], dict[tuple[str, str], Any]]:
    """Row ids, column names and written cells, by replaying the parts one cell at a time."""
    ids: list[str] = []
    names: list[str] = []
    cells: dict[tuple[str, str], Any] = {}
    for one in sorted(parts, key=lambda p: p.seq):
        for name in one.table.column_names:
            if name != "id" and name not in names:
                names.append(name)
        for row in one.table.to_pylist():
            if row["id"] not in ids:
                ids.append(row["id"])
            for name, value in row.items():
                if name != "id":
                    cells[row["id"], name] = value
    return ids, names, cells


def model_view(
    base: list[dict[str, Any]], base_names: list[str], namespaces: dict[str, list[Part]], include_deleted: bool
) -> tuple[list[str], list[dict[str, Any]]]:
    """Output column names and rows: written overlay cells override per namespace, then tombstones filter."""
    names = list(base_names)
    overlays: dict[str, tuple[set[str], list[str], dict[tuple[str, str], Any]]] = {}
    for ns in sorted(namespaces):
        ids, ns_names, cells = model_merge(namespaces[ns])
        overlays[ns] = (set(ids), ns_names, cells)
        names += [name for name in ns_names if name not in names]
    out = []
    for base_row in base:
        row = {name: base_row.get(name) for name in names}
        for _present, ns_names, cells in overlays.values():
            # only cells a part wrote override (a materialized base value shows through elsewhere)
            row.update({name: cells[base_row["id"], name] for name in ns_names if (base_row["id"], name) in cells})
        if "usr__deleted" in row:
            row["usr__deleted"] = bool(row["usr__deleted"])
        if include_deleted:
            out.append(row)
        elif not row.get("usr__deleted"):
            out.append({name: value for name, value in row.items() if not name.startswith("usr__")})
    return [name for name in names if include_deleted or not name.startswith("usr__")], out


@settings(max_examples=60, deadline=None)
@given(
    parts=overlay_parts(),
    deleted=tombstone_parts(),
    base_ids=st.permutations(POOL).flatmap(lambda ids: st.integers(0, len(ids)).map(lambda k: ids[:k])),
    materialized=st.lists(st.none() | st.integers(-5, 5), min_size=len(POOL), max_size=len(POOL)),
    with_materialized=st.booleans(),
    include_deleted=st.booleans(),
)
def test_merge_parts_and_live_view_match_dict_model(
    parts: list[Part],
    deleted: list[Part],
    base_ids: list[str],
    materialized: list[int | None],
    with_materialized: bool,
    include_deleted: bool,
) -> None:
    ids, names, cells = model_merge(parts)
    merged = merge_parts(parts)
    assert merged.column_names == ["id", *names]
    assert merged.to_pylist() == [{"id": i, **{name: cells.get((i, name)) for name in names}} for i in ids]
    for name in names:
        assert merged.schema.field(name).type == COLUMN_TYPES[name]

    columns: dict[str, Any] = {"id": pa.array(base_ids, pa.string())}
    if with_materialized:
        columns["m__i"] = pa.array(materialized[: len(base_ids)], pa.int64())
    base = pa.table(columns)
    namespaces = {name: group for name, group in (("m", parts), (TOMBSTONE_NS, deleted)) if group}
    expected_names, expected_rows = model_view(base.to_pylist(), base.column_names, namespaces, include_deleted)
    view = live_view(
        base, {ns: merge_with_masks(group) for ns, group in namespaces.items()}, include_deleted=include_deleted
    )
    assert view.column_names == expected_names
    assert view.to_pylist() == expected_rows


def test_live_view_keeps_materialized_values_a_later_part_did_not_write() -> None:
    # Overlays dropped at materialize; part 10 writes another column for A, part 11 clears B's score.
    base = pa.table({"id": ["A", "B"], "mock__score": [1.0, 2.0]})
    p10 = Part(10, pa.table({"id": ["A"], "mock__label": ["x"]}))
    p11 = Part(11, pa.table({"id": pa.array(["B"]), "mock__score": pa.nulls(1, pa.float64())}))
    merged = merge_with_masks([p10, p11])
    assert live_view(base, {"mock": merged}).to_pylist() == [
        {"id": "A", "mock__score": 1.0, "mock__label": "x"},
        {"id": "B", "mock__score": None, "mock__label": None},
    ]
    # ... and compacting the parts first changes nothing.
    compacted = merge_with_masks([Part(11, merged)])
    assert live_view(base, {"mock": compacted}).equals(live_view(base, {"mock": merged}))
