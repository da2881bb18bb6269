"""Registry type grammar, column specs, namespace registration and registry hashes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es.errors import NamespaceError, RegistryError
from usr_es.registry import (
    USR_STATE,
    format_type,
    load_registry,
    parse_type,
    register_namespace,
    split_columns_spec,
)

DOCUMENTED_TYPES: list[tuple[str, pa.DataType]] = [
    ("string", pa.string()),
    ("int8", pa.int8()),
    ("int16", pa.int16()),
    ("int32", pa.int32()),
    ("int64", pa.int64()),
    ("uint8", pa.uint8()),
    ("uint16", pa.uint16()),
    ("uint32", pa.uint32()),
    ("uint64", pa.uint64()),
    ("float16", pa.float16()),
    ("float32", pa.float32()),
    ("float64", pa.float64()),
    ("bool", pa.bool_()),
    ("timestamp[s]", pa.timestamp("s")),
    ("timestamp[ms]", pa.timestamp("ms")),
    ("timestamp[us]", pa.timestamp("us")),
    ("timestamp[ns]", pa.timestamp("ns")),
    ("timestamp[us, UTC]", pa.timestamp("us", tz="UTC")),
    ("timestamp[ms, Europe/Berlin]", pa.timestamp("ms", tz="Europe/Berlin")),
    ("list<string>", pa.list_(pa.string())),
    ("list<float64>", pa.list_(pa.float64())),
    ("fixed_size_list<float32>[8]", pa.list_(pa.float32(), 8)),
    ("struct<x:int64,y:string>", pa.struct([("x", pa.int64()), ("y", pa.string())])),
    (
        "list<struct<start:int64,end:int64,strand:int64,partial:bool>>",
        pa.list_(
            pa.struct([("start", pa.int64()), ("end", pa.int64()), ("strand", pa.int64()), ("partial", pa.bool_())])
        ),
    ),
]


@pytest.mark.parametrize(("text", "dtype"), DOCUMENTED_TYPES, ids=[t for t, _ in DOCUMENTED_TYPES])
def test_type_grammar_round_trips_documented_types(text: str, dtype: pa.DataType) -> None:
    assert parse_type(text) == dtype
    assert format_type(dtype) == text
    assert parse_type(format_type(dtype)) == dtype


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("utf8", "string"), ("large_string", "string"), ("boolean", "bool"), ("double", "float64")],
)
def test_type_grammar_accepts_aliases(alias: str, canonical: str) -> None:
    assert format_type(parse_type(alias)) == canonical


@pytest.mark.parametrize(
    "text",
    ["", "int", "list<>", "list<int64", "struct<>", "fixed_size_list<int8>[0]", "timestamp[h]", "int64 extra", "a$b"],
)
def test_type_grammar_rejects_malformed_types(text: str) -> None:
    with pytest.raises(NamespaceError):
        parse_type(text)


_PRIMITIVE_TYPES = [dtype for text, dtype in DOCUMENTED_TYPES if "<" not in text]
_FIELD_NAMES = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z")


def _extend(children: st.SearchStrategy[pa.DataType]) -> st.SearchStrategy[pa.DataType]:
    structs = st.lists(st.tuples(_FIELD_NAMES, children), min_size=1, max_size=4, unique_by=lambda f: f[0]).map(
        pa.struct
    )
    lists = children.map(pa.list_)
    fixed = st.tuples(children, st.integers(1, 64)).map(lambda pair: pa.list_(pair[0], pair[1]))
    return lists | fixed | structs


ARROW_TYPES = st.recursive(st.sampled_from(_PRIMITIVE_TYPES), _extend, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(dtype=ARROW_TYPES)
def test_type_grammar_round_trips_random_nested_types(dtype: pa.DataType) -> None:
    text = format_type(dtype)
    assert parse_type(text) == dtype
    assert format_type(parse_type(text)) == text


def test_split_columns_spec_keeps_commas_inside_brackets() -> None:
    spec = (
        "a__pos:struct<start:int64,end:int64>, a__when:timestamp[us, UTC],"
        "a__vec:fixed_size_list<float32>[8],a__tags:list<string>"
    )
    assert split_columns_spec(spec) == [
        ("a__pos", "struct<start:int64,end:int64>"),
        ("a__when", "timestamp[us, UTC]"),
        ("a__vec", "fixed_size_list<float32>[8]"),
        ("a__tags", "list<string>"),
    ]


@pytest.mark.parametrize("spec", ["", " , ", "a__x", "a__x:", ":int64", "a__x:notatype"])
def test_split_columns_spec_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(NamespaceError):
        split_columns_spec(spec)


def test_register_namespace_creates_registry_with_usr_state(tmp_path: Path) -> None:
    root = tmp_path / "root"
    register_namespace(root, "mock", split_columns_spec("mock__score:float64"))
    registry = load_registry(root)
    assert set(registry.namespaces) == {"mock", "usr_state"}
    assert registry.namespaces["usr_state"].columns == USR_STATE.columns
    assert registry.namespaces["mock"].column_types() == {"mock__score": pa.float64()}


@pytest.mark.parametrize("name", ["Bad", "1x", "usr", "usr_state", "with-dash", "", "_x"])
def test_register_namespace_rejects_invalid_or_reserved_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(NamespaceError):
        register_namespace(tmp_path, name, [(f"{name}__a", "int64")])
    assert not (tmp_path / "registry.yaml").exists()


@pytest.mark.parametrize("column", ["score", "other__score", "mock_score", "mock__"])
def test_register_namespace_rejects_unprefixed_columns(tmp_path: Path, column: str) -> None:
    with pytest.raises(NamespaceError):
        register_namespace(tmp_path, "mock", [(column, "float64")])


def test_register_namespace_rejects_duplicate_columns(tmp_path: Path) -> None:
    with pytest.raises(NamespaceError):
        register_namespace(tmp_path, "mock", [("mock__a", "int64"), ("mock__a", "string")])


def test_register_namespace_twice_requires_overwrite(root: Path) -> None:
    before = (root / "registry.yaml").read_bytes()
    with pytest.raises(NamespaceError):
        register_namespace(root, "mock", [("mock__other", "string")])
    assert (root / "registry.yaml").read_bytes() == before

    register_namespace(root, "mock", [("mock__other", "string")], overwrite=True)
    spec = load_registry(root).namespaces["mock"]
    assert [(c.name, c.type) for c in spec.columns] == [("mock__other", "string")]


def test_load_registry_rejects_registry_without_usr_state(tmp_path: Path) -> None:
    doc = {"namespaces": {"mock": {"columns": [{"name": "mock__score", "type": "float64"}]}}}
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(RegistryError, match="usr_state"):
        load_registry(tmp_path)


def test_load_registry_rejects_tampered_usr_state(root: Path) -> None:
    doc = yaml.safe_load((root / "registry.yaml").read_text())
    doc["namespaces"]["usr_state"]["columns"].pop()
    (root / "registry.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(RegistryError):
        load_registry(root)


@pytest.mark.parametrize(
    "text",
    [
        "namespaces: [unclosed\n",
        "namespaces:\n  mock: {columns: [{name: mock__a, type: int64}]\n",
        "- just\n- a list\n",
        "namespaces: 3\n",
        "namespaces:\n  mock: {owner: me}\n",
    ],
)
def test_load_registry_rejects_malformed_yaml(tmp_path: Path, text: str) -> None:
    (tmp_path / "registry.yaml").write_text(text)
    with pytest.raises(RegistryError):
        load_registry(tmp_path)


def test_load_registry_requires_the_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError):
        load_registry(tmp_path)


def test_contract_hash_ignores_owner_and_description(tmp_path: Path) -> None:
    columns = [("mock__a", "int64"), ("mock__b", "string")]
    register_namespace(tmp_path / "one", "mock", columns, owner="alice", description="first")
    register_namespace(tmp_path / "two", "mock", columns, owner="bob", description="second")
    one, two = load_registry(tmp_path / "one"), load_registry(tmp_path / "two")
    assert one.contract_hash("mock") == two.contract_hash("mock")
    assert one.hash != two.hash


def test_contract_hash_depends_on_column_order(tmp_path: Path) -> None:
    register_namespace(tmp_path / "one", "mock", [("mock__a", "int64"), ("mock__b", "string")])
    register_namespace(tmp_path / "two", "mock", [("mock__b", "string"), ("mock__a", "int64")])
    one, two = load_registry(tmp_path / "one"), load_registry(tmp_path / "two")
    assert one.contract_hash("mock") != two.contract_hash("mock")


def test_contract_hash_depends_on_column_types(tmp_path: Path) -> None:
    register_namespace(tmp_path / "one", "mock", [("mock__a", "int64")])
    register_namespace(tmp_path / "two", "mock", [("mock__a", "int32")])
    assert load_registry(tmp_path / "one").contract_hash("mock") != load_registry(tmp_path / "two").contract_hash(
        "mock"
    )


def test_contract_hash_of_unknown_namespace_is_rejected(root: Path) -> None:
    with pytest.raises(NamespaceError):
        load_registry(root).contract_hash("nope")
