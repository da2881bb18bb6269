"""The namespace registry: `<root>/registry.yaml`, its Arrow type grammar, and its hashes.

Owns parsing/formatting of registry type strings (`list<struct<a:int64,b:string>>`, ...),
loading (only `yaml.safe_load`), validation, the registry and per-namespace contract hashes,
and registration. It never touches a dataset.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa

from .errors import NamespaceError, NotFound, RegistryError
from .fileio import fileops, locked, write_atomic
from .names import ESSENTIAL_COLUMNS, REGISTRY_FILE, RESERVED_NAMESPACES

NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")  # \Z: a trailing newline is no match

_PRIMITIVES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}
_ALIASES = {"large_string": "string", "utf8": "string", "boolean": "bool", "double": "float64"}
_UNITS = ("s", "ms", "us", "ns")
_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*|\d+|[<>\[\],:/+\-])")


class ColumnSpec(msgspec.Struct, frozen=True):
    """One registered column: full name `<ns>__<field>` and its canonical type string."""

    name: str
    type: str


class NamespaceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A registered namespace and its columns."""

    name: str
    owner: str | None = None
    description: str | None = None
    columns: tuple[ColumnSpec, ...] = ()

    def column_types(self) -> dict[str, pa.DataType]:
        return {c.name: parse_type(c.type) for c in self.columns}


USR_STATE = NamespaceSpec(
    name="usr_state",
    owner="usr",
    description="Reserved record state (masked, qc_status, split, supersedes, lineage).",
    columns=(
        ColumnSpec("usr_state__masked", "bool"),
        ColumnSpec("usr_state__qc_status", "string"),
        ColumnSpec("usr_state__split", "string"),
        ColumnSpec("usr_state__supersedes", "string"),
        ColumnSpec("usr_state__lineage", "list<string>"),
    ),
)


# -- type grammar ---------------------------------------------------------------------------
class _TypeParser:
    """Recursive-descent parser for the registry type grammar (no library parses it)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            match = _TOKEN.match(stripped, pos)
            if match is None:
                raise NamespaceError(f"Unsupported type '{text}': unexpected character at {pos + 1}.")
            self.tokens.append(match.group(1))
            pos = match.end()
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            want = f"'{expected}'" if expected else "more input"
            raise NamespaceError(f"Unsupported type '{self.text}': expected {want}.")
        self.i += 1
        return tok

    def parse(self) -> pa.DataType:
        result = self.type_()
        if self.peek() is not None:
            raise NamespaceError(f"Unsupported type '{self.text}': trailing '{self.peek()}'.")
        return result

    def type_(self) -> pa.DataType:
        name = self.take()
        name = _ALIASES.get(name, name)
        if name in _PRIMITIVES:
            return _PRIMITIVES[name]
        if name == "timestamp":
            self.take("[")
            unit = self.take()
            if unit not in _UNITS:
                raise NamespaceError(f"Unsupported type '{self.text}': timestamp unit must be s|ms|us|ns.")
            tz: str | None = None
            if self.peek() == ",":
                self.take(",")
                parts = []
                while self.peek() not in ("]", None):
                    parts.append(self.take())
                tz = "".join(parts)
            self.take("]")
            return pa.timestamp(unit, tz=tz)
        if name in ("list", "large_list"):
            self.take("<")
            inner = self.type_()
            self.take(">")
            return pa.list_(inner)
        if name == "fixed_size_list":
            self.take("<")
            inner = self.type_()
            self.take(">")
            self.take("[")
            size = self.take()
            self.take("]")
            if not size.isdigit() or int(size) <= 0:
                raise NamespaceError(f"Unsupported type '{self.text}': fixed_size_list size must be > 0.")
            return pa.list_(inner, int(size))
        if name == "struct":
            self.take("<")
            fields = []
            while True:
                field_name = self.take()
                self.take(":")
                fields.append(pa.field(field_name, self.type_()))
                if self.peek() == ",":
                    self.take(",")
                    continue
                break
            self.take(">")
            return pa.struct(fields)
        raise NamespaceError(
            f"Unsupported type '{self.text}'.",
            hint="Types: string, int8-64, uint8-64, float16/32/64, bool, timestamp[unit(, tz)], "
            "list<T>, fixed_size_list<T>[N], struct<name:T,...>.",
        )


def parse_type(text: str) -> pa.DataType:
    """Parse a registry type string into an Arrow type."""
    return _TypeParser(text).parse()


def format_type(dtype: pa.DataType) -> str:
    """Return the canonical registry string of an Arrow type (inverse of `parse_type`)."""
    if pa.types.is_large_string(dtype) or pa.types.is_string(dtype):
        return "string"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_timestamp(dtype):
        return f"timestamp[{dtype.unit}, {dtype.tz}]" if dtype.tz else f"timestamp[{dtype.unit}]"
    if pa.types.is_fixed_size_list(dtype):
        return f"fixed_size_list<{format_type(dtype.value_type)}>[{dtype.list_size}]"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return f"list<{format_type(dtype.value_type)}>"
    if pa.types.is_struct(dtype):
        inner = ",".join(f"{dtype.field(i).name}:{format_type(dtype.field(i).type)}" for i in range(dtype.num_fields))
        return f"struct<{inner}>"
    for name, prim in _PRIMITIVES.items():
        if dtype == prim:
            return name
    raise NamespaceError(f"Arrow type {dtype} has no registry spelling.")


def canonical_type(text: str) -> str:
    return format_type(parse_type(text))


def split_columns_spec(spec: str) -> list[tuple[str, str]]:
    """Split `'ns__a:float64,ns__b:struct<x:int64,y:string>'` into (name, type) pairs.

    Commas and colons inside `<...>` or `[...]` belong to the type, so nested and
    timezone-carrying types are expressible on the command line.
    """
    items: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in spec:
        if ch in "<[":
            depth += 1
        elif ch in ">]":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    pairs = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, sep, type_text = item.partition(":")
        if not sep or not name.strip() or not type_text.strip():
            raise NamespaceError(f"Bad column spec '{item}'.", hint="Use 'ns__field:type', comma-separated.")
        pairs.append((name.strip(), canonical_type(type_text.strip())))
    if not pairs:
        raise NamespaceError("No columns given.", hint="Use --columns 'ns__field:type,...'.")
    return pairs


# -- the registry document ------------------------------------------------------------------
class Registry(msgspec.Struct, frozen=True):
    """A parsed, validated registry: namespace name -> spec."""

    namespaces: dict[str, NamespaceSpec]

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name in sorted(self.namespaces):
            spec = self.namespaces[name]
            doc[name] = {
                "owner": spec.owner,
                "description": spec.description,
                "columns": [{"name": c.name, "type": c.type} for c in spec.columns],
            }
        return {"namespaces": doc}

    def to_yaml(self) -> bytes:
        return _yaml_dump(self.to_document())

    @property
    def hash(self) -> str:
        """sha256 of the canonical YAML of the parsed entries (not of the raw file bytes)."""
        return hashlib.sha256(self.to_yaml()).hexdigest()

    def contract_hash(self, namespace: str) -> str:
        """sha256 of a namespace's columns (names, types, order); owner/description excluded."""
        spec = self.require(namespace)
        doc = {"namespace": namespace, "columns": [{"name": c.name, "type": c.type} for c in spec.columns]}
        return hashlib.sha256(_yaml_dump(doc)).hexdigest()

    def require(self, namespace: str) -> NamespaceSpec:
        if namespace not in self.namespaces:
            raise NamespaceError(
                f"Namespace '{namespace}' is not registered.",
                hint="Register it with `usr namespace register NS --columns 'NS__field:type'`.",
            )
        return self.namespaces[namespace]


def _validate_namespace(spec: NamespaceSpec) -> NamespaceSpec:
    if not NAMESPACE_RE.match(spec.name):
        raise NamespaceError(f"Invalid namespace '{spec.name}': must match {NAMESPACE_RE.pattern}.")
    seen: set[str] = set()
    columns = []
    for col in spec.columns:
        if not col.name.startswith(f"{spec.name}__") or col.name == f"{spec.name}__":
            raise NamespaceError(
                f"Column '{col.name}' must be named '{spec.name}__<field>'.",
                hint=f"Prefix every column with '{spec.name}__'.",
            )
        if col.name in seen:
            raise NamespaceError(f"Column '{col.name}' is listed twice in namespace '{spec.name}'.")
        seen.add(col.name)
        columns.append(ColumnSpec(col.name, canonical_type(col.type)))
    if not columns:
        raise NamespaceError(f"Namespace '{spec.name}' has no columns.")
    return NamespaceSpec(name=spec.name, owner=spec.owner, description=spec.description, columns=tuple(columns))


def _yaml_dump(doc: Any) -> bytes:
    import yaml  # ~16 ms: loaded only where a registry is read or written, not on every start-up

    return yaml.safe_dump(doc, sort_keys=True).encode()


def parse_registry(data: bytes, *, source: str = REGISTRY_FILE) -> Registry:
    """Parse and validate registry YAML bytes."""
    import yaml

    try:  # libyaml's parser where PyYAML was built with it (the same documents, parsed ~10x faster)
        doc = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("namespaces", {}), dict):
        raise RegistryError(f"{source}: 'namespaces' must be a mapping.")
    namespaces: dict[str, NamespaceSpec] = {}
    for name, entry in (doc.get("namespaces") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("columns"), list):
            raise RegistryError(f"{source}: namespace '{name}' needs a 'columns' list.")
        cols = []
        for col in entry["columns"]:
            if not isinstance(col, dict) or not isinstance(col.get("name"), str) or "type" not in col:
                raise RegistryError(f"{source}: every column of '{name}' needs 'name' and 'type'.")
            cols.append(ColumnSpec(col["name"], str(col["type"])))
        try:
            namespaces[str(name)] = _validate_namespace(
                NamespaceSpec(
                    name=str(name),
                    owner=entry.get("owner"),
                    description=entry.get("description"),
                    columns=tuple(cols),
                )
            )
        except NamespaceError as exc:
            raise RegistryError(f"{source}: {exc.message}", hint=exc.hint) from exc
    state = namespaces.get("usr_state")
    if state is None:
        raise RegistryError(f"{source} must include the reserved namespace 'usr_state'.")
    if state.columns != USR_STATE.columns:
        raise RegistryError(f"{source}: namespace 'usr_state' must match the reserved schema.")
    return Registry(namespaces)


def registry_path(root: Path) -> Path:
    return root / REGISTRY_FILE


def load_registry(root: Path) -> Registry:
    """Load `<root>/registry.yaml`; `RegistryError` when it is missing."""
    path = registry_path(root)
    if not path.is_file():
        raise RegistryError(
            f"Registry required but not found: {path}",
            hint="Create it with `usr --root ROOT namespace register NS --columns 'NS__field:type'`.",
        )
    return parse_registry(path.read_bytes(), source=str(path))


def register_namespace(
    root: Path | str,
    namespace: str,
    columns: list[tuple[str, str]],
    *,
    owner: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> NamespaceSpec:
    """Add (or with `overwrite`, replace) a namespace in `<root>/registry.yaml` atomically."""
    root = Path(root)
    if namespace in RESERVED_NAMESPACES:
        raise NamespaceError(f"Namespace '{namespace}' is reserved.")
    spec = _validate_namespace(
        NamespaceSpec(
            name=namespace,
            owner=owner or None,
            description=description or None,
            columns=tuple(ColumnSpec(n, t) for n, t in columns),
        )
    )
    for col in spec.columns:
        if col.name in ESSENTIAL_COLUMNS:
            raise NamespaceError(f"Column '{col.name}' is an essential column.")
    fileops().mkdir(root)
    with locked(root / ".usr-registry.lock"):
        path = registry_path(root)
        current = load_registry(root) if path.exists() else Registry({"usr_state": USR_STATE})
        if namespace in current.namespaces and not overwrite:
            raise NamespaceError(f"Namespace '{namespace}' already registered.", hint="Use --overwrite to replace it.")
        updated = Registry({**current.namespaces, namespace: spec})
        write_atomic(path, updated.to_yaml(), point="registry")
    return spec


def show_namespace(root: Path, namespace: str) -> NamespaceSpec:
    registry = load_registry(root)
    if namespace not in registry.namespaces:
        raise NotFound(f"Namespace '{namespace}' not registered.", hint="See `usr namespace list`.")
    return registry.namespaces[namespace]
