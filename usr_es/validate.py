"""`validate`: the registry contract of a dataset's live view -- essential base columns, namespacing,
registered overlay types per namespace contract, reserved-namespace values -- against the current and/or
the frozen registry."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InvalidInput, NotFound
from .names import RESERVED_NAMESPACES, STATE_NS, TOMBSTONE_NS, WRITTEN
from .projectors import BASE_SCHEMA
from .recovery import fresh, live_parts
from .registry import Registry, load_registry, registry_path
from .results import ValidateReport
from .storage import frozen_registry

#: The registry modes `validate` accepts (the original's names).
REGISTRY_MODES = ("current", "frozen", "either", "namespace-current", "namespace-frozen", "namespace-either")


def validate(
    directory: Path, root: Path, dataset: str, *, strict: bool = False, registry_mode: str = "current"
) -> ValidateReport:
    """Check the base schema, namespacing, registry types of every overlay and materialized
    column, and reserved-namespace values. Overlays are checked against per-namespace contract
    hashes, so editing one namespace in registry.yaml never invalidates another's overlays.

    `registry_mode`: `current` (root registry.yaml), `frozen` (the registry the last event was
    validated against) or `either` (passes if one of them does; the frozen one alone when the root has no
    registry.yaml). The original's `namespace-current`, `namespace-frozen` and `namespace-either` are the
    same three: usr_es checks overlays per namespace contract in every mode, so an edit to one namespace
    never invalidates another's overlays (the original's whole-registry check did). `strict` also
    recomputes every id and length and checks materialized columns' types.
    """
    import pyarrow.compute as pc

    from .alphabet import ALPHABETS
    from .names import ESSENTIAL_COLUMNS
    from .overlays import STATE_SCHEMA, TOMBSTONE_SCHEMA
    from .registry import parse_type

    if registry_mode not in REGISTRY_MODES:
        raise InvalidInput(f"Unknown registry mode '{registry_mode}'.", hint=f"Use {', '.join(REGISTRY_MODES)}.")
    mode = registry_mode.removeprefix("namespace-")  # overlays are checked per namespace contract in every mode
    _, scan, _ = fresh(directory)
    base, merged, layout = live_parts(directory)
    candidates: list[tuple[str, Registry]] = []
    if mode == "current" or (mode == "either" and registry_path(root).is_file()):
        candidates.append(("current", load_registry(root)))  # `either` without registry.yaml: the frozen one
    if mode in ("frozen", "either") and scan.registry_hash:
        candidates.append(("frozen", frozen_registry(directory, scan.registry_hash)))
    if not candidates:
        raise NotFound("No frozen registry recorded for this dataset.", hint="Run `usr maintenance registry-freeze`.")

    common: list[str] = []
    for name, field_ in zip(ESSENTIAL_COLUMNS, BASE_SCHEMA, strict=True):
        if name not in base.column_names:
            common.append(f"records.parquet lacks essential column '{name}'")
        elif not base.schema.field(name).type.equals(field_.type):
            common.append(f"records.parquet column '{name}' is {base.schema.field(name).type}, not {field_.type}")
    if not common:
        ids = base.column("id")
        if len(pc.unique(ids)) != len(ids):
            common.append("records.parquet holds duplicate ids")
        for alphabet in pc.unique(base.column("alphabet")).to_pylist():
            if alphabet not in ALPHABETS:
                common.append(f"records.parquet holds unknown alphabet '{alphabet}'")
        if strict:
            from .decide import compute_ids

            recomputed = compute_ids(base.column("sequence"), base.column("bio_type"), single=None)
            bad = pc.sum(pc.not_equal(recomputed, ids).cast(pa.int64())).as_py()
            if bad:
                common.append(f"{bad} row(s): id does not match sha1(bio_type|sequence)")
            lengths = pc.cast(pc.utf8_length(base.column("sequence")), pa.int32())
            if not pc.all(pc.equal(lengths, base.column("length")), min_count=0).as_py():  # empty: ok
                common.append("some rows: length does not match the sequence")
    extra = [c for c in base.column_names if c not in ESSENTIAL_COLUMNS]
    for column in extra:
        if "__" not in column or not column.split("__", 1)[0]:
            common.append(f"Derived columns must be namespaced as '<ns>__<field>'; offending: {column}")
    tomb = merged.get(TOMBSTONE_NS)
    if tomb is not None:
        for f in tomb.schema:
            if f.name != "id" and not f.name.startswith(WRITTEN) and TOMBSTONE_SCHEMA.get_field_index(f.name) < 0:
                common.append(f"tombstone overlay has unexpected column '{f.name}'")
    state = merged.get(STATE_NS)
    if state is not None:
        for column, allowed in (("usr_state__qc_status", ("fail", "pass", "unknown", "warn")),
                                ("usr_state__split", ("holdout", "test", "train", "val"))):  # fmt: skip
            if column in state.column_names:
                values = [v for v in pc.unique(state.column(column)).to_pylist() if v is not None]
                bad_values = sorted(set(values) - set(allowed))
                if bad_values:
                    common.append(f"{column} holds values outside {', '.join(allowed)}: {bad_values}")
        for f in state.schema:
            if f.name != "id" and not f.name.startswith(WRITTEN) and STATE_SCHEMA.get_field_index(f.name) < 0:
                common.append(f"usr_state overlay has unexpected column '{f.name}'")

    verdicts: dict[str, list[str]] = {}
    for label, registry in candidates:
        problems: list[str] = []
        for ns, parts in sorted(layout.live.items()):
            if ns in RESERVED_NAMESPACES:
                continue
            if ns not in registry.namespaces:
                problems.append(f"overlay namespace '{ns}' is not registered ({label} registry)")
                continue
            contract = registry.contract_hash(ns)
            types = registry.namespaces[ns].column_types()
            for part in parts:
                if part.purge:  # ids only: no values, no contract
                    continue
                if part.contract_hash != contract:
                    problems.append(
                        f"{part.file}: namespace_contract_hash {str(part.contract_hash)[:12]} does not match "
                        f"the {label} registry's '{ns}' contract {contract[:12]}"
                    )
                for f in pq.read_schema(directory / part.file):
                    if f.name == "id" or f.name.startswith(WRITTEN):
                        continue
                    want = types.get(f.name)
                    if want is None:
                        problems.append(f"{part.file}: column '{f.name}' is not registered under '{ns}'")
                    elif not want.equals(f.type):
                        problems.append(f"{part.file}: column '{f.name}' is {f.type}, registry says {want}")
        for column in extra:
            ns = column.split("__", 1)[0]
            spec = registry.namespaces.get(ns)
            if ns == "usr":
                continue
            if spec is None:
                problems.append(f"materialized column '{column}': namespace '{ns}' is not registered")
            elif strict:
                want_text = next((c.type for c in spec.columns if c.name == column), None)
                if want_text is None:
                    problems.append(f"materialized column '{column}' is not registered under '{ns}'")
                elif not parse_type(want_text).equals(base.schema.field(column).type):
                    problems.append(f"materialized column '{column}' type differs from the registry")
        verdicts[label] = problems
    passing = [label for label, problems in verdicts.items() if not problems]
    problems = common + ([] if passing else [p for ps in verdicts.values() for p in ps])
    return ValidateReport(
        dataset=dataset,
        ok=not problems,
        registry_mode=registry_mode,
        registries=[label for label, _ in candidates],
        passed_with=passing,
        problems=problems,
    )
