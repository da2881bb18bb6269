"""Rows that attack a dataset's files and inputs: byte flips, truncations and deletions; a fuzzer over
every input; containment (paths, links, YAML, secrets, permissions)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usr_es import Dataset, UsrError
from usr_es.log import read_lines
from usr_es.names import LOG_FILE, RECORDS_FILE
from usr_es.registry import register_namespace, split_columns_spec

from . import Row, Scale, rng_for, timed, workdir
from .processes import make_dataset
from .worker import NAMESPACE


def _rich_dataset(tmp: Path) -> Dataset:
    """A dataset holding every kind of file: log, payloads, frozen registry, base, parts, layout, index."""
    _, ds = make_dataset(tmp)
    ds.add_sequences(["ACGTACGTAC", "TTTTGGGGCC", "GGGGCCCCAA", "CATCATCATC"])
    ids = [str(x) for x in ds.head(4).column("id").to_pylist()]
    ds.write_overlay(NAMESPACE, {"id": ids[:2], "score": [1.0, 2.0], "tag": ["a", "b"]})
    ds.delete(ids[3:])
    ds.set_state(ids[:1], qc_status="pass")
    return ds


def _kind(rel: str) -> str:
    if rel == LOG_FILE:
        return "log"
    for prefix, kind in (("_payloads/", "payload"), ("_registry/", "frozen registry"), ("_index/", "id index")):
        if rel.startswith(prefix):
            return kind
    if rel.endswith("layout.json"):
        return "layout"
    return "overlay part" if rel.startswith("_derived/") else "base" if rel == "records.parquet" else ""


@timed
def corruption(scale: Scale) -> Row:
    """Single-byte flips over every file kind, plus truncations and deletions: verify must notice each,
    and no write may build on a damaged log."""
    row = Row("byte flips, truncations, deletions", "§2.5 fail-closed integrity")
    rng = rng_for(scale, "flips")
    injected = detected = writes_on_bad_log = log_damage = repaired_newlines = reported_behind = 0
    per_kind: Counter[str] = Counter()
    with workdir("flips") as tmp:
        ds = _rich_dataset(tmp)
        files = sorted(
            str(p.relative_to(ds.dir)) for p in ds.dir.rglob("*") if p.is_file() and _kind(str(p.relative_to(ds.dir)))
        )
        pristine = {rel: (ds.dir / rel).read_bytes() for rel in files}
        rows = ds.info().rows
        kinds = sorted({_kind(rel) for rel in files})
        damages = (
            [("flip", rel) for rel in files] + [("truncate", rel) for rel in files] + [("delete", rel) for rel in files]
        )
        plan = [
            ("flip", rng.choice([r for r in files if _kind(r) == kinds[i % len(kinds)]])) for i in range(scale.flips)
        ]
        for how, rel in damages + plan:
            path = ds.dir / rel
            data = bytearray(pristine[rel])
            if how == "flip":
                at = rng.randrange(len(data))
                data[at] ^= 1 << rng.randrange(8)
                path.write_bytes(bytes(data))
                final_newline = rel == LOG_FILE and at == len(data) - 1
            elif how == "truncate":
                path.write_bytes(bytes(data[: rng.randrange(len(data))]))
                final_newline = False
            else:
                path.unlink()
                final_newline = False
            injected += 1
            per_kind[_kind(rel)] += 1
            try:
                report = ds.verify()
                ok, notes, behind = report.ok, report.notes, report.behind
            except UsrError:  # the dataset itself is refused (its log is gone): noticed too
                ok, notes, behind = False, [], []
            if final_newline:
                # The last line lost its newline: committed (its hash verifies); verify notes it and the
                # next write restores the newline (a lost newline must not lose the event).
                repaired_newlines += 1
                detected += int(ok and any("newline" in n for n in notes))
            elif not ok:
                detected += 1
            elif rel == RECORDS_FILE and how == "truncate" and rel in behind:
                # Every earlier size of records.parquet that the log recorded is that earlier version (it
                # grows in place, ADR 0013): cut there or inside a later append, it reads as a crash
                # between append and publish would leave it. Verify reports it behind, and the next
                # command or read cuts it back and catches it up from the log.
                detected += 1
                reported_behind += 1
                if ds.info().rows != rows or not ds.verify().ok:  # a read repairs it from the log
                    row.fail(f"a truncated {rel} reported behind was not repaired by the next read")
                    detected -= 1
            else:
                row.fail(f"undetected {how} of {rel}")
            if rel == LOG_FILE and not final_newline and how != "delete":
                log_damage += 1
                before = path.read_bytes()
                try:
                    ds.add_sequences(["ACGTACGTACGTAAAA"], command_id=f"on-bad-log-{injected}")
                    writes_on_bad_log += 1
                    row.fail(f"a write built on a log with a {how} ({len(before)} bytes)")
                except UsrError:
                    pass
            for name, content in pristine.items():  # undo everything (a write may have moved files)
                (ds.dir / name).parent.mkdir(parents=True, exist_ok=True)
                (ds.dir / name).write_bytes(content)
            shutil.rmtree(ds.dir / "_snapshots", ignore_errors=True)
        row.require("file_kinds", len(kinds), len(kinds) >= 7)
        row.require("damages_injected", injected, injected >= scale.flips)
        row.require("undetected", injected - detected, injected == detected)
        row.note("lost_newlines_restored", repaired_newlines)
        row.note("base_truncations_reported_behind", reported_behind)
        row.require("log_damages", log_damage, log_damage > 0)
        row.require("writes_building_on_a_damaged_log", writes_on_bad_log, writes_on_bad_log == 0)
        final = ds.verify()
        row.require("pristine_verify_ok", int(final.ok), final.ok)
    return row


# -- fuzzing ---------------------------------------------------------------------------------------
_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(list(",\n\"'>[]{}:;\\\t-/.")),
    max_size=40,
)
_FILE = (
    st.binary(max_size=300) | _TEXT.map(str.encode) | st.lists(_TEXT, max_size=6).map(lambda r: "\n".join(r).encode())
)


@timed
def fuzz(scale: Scale) -> Row:
    """Hypothesis over input files (CSV, JSONL, FASTA, attach), ids, namespaces, registry YAML and CLI
    arguments: every refusal is a typed error, and a refused command leaves the log unchanged."""
    row = Row("fuzzed inputs", "§2.5 validation, §2.7 honest failure")
    cases: Counter[str] = Counter()
    untyped: list[str] = []
    changed: list[str] = []
    with workdir("fuzz") as tmp:
        root, ds = make_dataset(tmp)
        ds.add_sequences(["ACGTACGTAC"])
        target = tmp / "input"

        def attempt(label: str, call: object) -> None:
            before = ds.log_path.read_bytes()
            cases[label] += 1
            try:
                assert callable(call)
                call()
            except UsrError:
                if ds.log_path.read_bytes() != before:
                    changed.append(label)
            except Exception as exc:
                untyped.append(f"{label}: {type(exc).__name__}: {str(exc)[:120]}")

        per = max(scale.fuzz_cases // 6, 1)
        config = settings(max_examples=per, deadline=None, database=None, suppress_health_check=list(HealthCheck))

        @config
        @given(st.sampled_from(["csv", "jsonl", "fasta", "parquet"]), _FILE)
        def import_files(fmt: str, data: bytes) -> None:
            target.write_bytes(data)
            attempt(f"import {fmt}", lambda: ds.import_file(target, fmt=fmt))  # type: ignore[arg-type]

        @config
        @given(st.sampled_from([".csv", ".jsonl", ".parquet"]), _FILE, st.sampled_from(["id", "sequence"]))
        def attach_files(suffix: str, data: bytes, key: str) -> None:
            path = target.with_suffix(suffix)
            path.write_bytes(data)
            attempt(f"attach {suffix}", lambda: ds.attach(path, namespace=NAMESPACE, key=key))  # type: ignore[arg-type]

        @config
        @given(_TEXT)
        def dataset_ids(name: str) -> None:
            attempt("dataset id", lambda: Dataset.open(root, name).init())

        @config
        @given(_TEXT, _TEXT)
        def namespaces(ns: str, columns: str) -> None:
            attempt("namespace", lambda: register_namespace(root, ns, split_columns_spec(columns)))

        @config
        @given(_FILE)
        def registries(data: bytes) -> None:
            other = tmp / "yaml-root"
            other.mkdir(exist_ok=True)
            (other / "registry.yaml").write_bytes(data)
            attempt("registry yaml", lambda: Dataset.open(other, "y/ds").init())
            shutil.rmtree(other / "y", ignore_errors=True)

        @config
        @given(st.lists(_TEXT, max_size=5))
        def cli_args(args: list[str]) -> None:
            from usr_es.cli import main

            def run() -> None:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    try:
                        main(["--root", str(root), *args])
                    except SystemExit as exc:
                        if exc.code == 1:  # the CLI's "internal error" (a bug)
                            raise RuntimeError(f"internal error for {args!r}") from None

            attempt("cli args", run)

        for prop in (import_files, attach_files, dataset_ids, namespaces, registries, cli_args):
            prop()
    for text in untyped[:5]:
        row.fail(text)
    total = sum(cases.values())
    row.require("cases", total, total >= scale.fuzz_cases * 0.9)
    row.require("untyped_exceptions", len(untyped), not untyped)
    row.require("log_changes_after_rejection", len(changed), not changed)
    return row


# -- containment -----------------------------------------------------------------------------------
@timed
def containment(scale: Scale) -> Row:
    """Traversal ids, symlinks and hard links on every control file, YAML payloads, secrets in every
    free-text argument, file modes under umask 000."""
    row = Row("containment", "§2.9 contained")
    escaped = followed = yaml_ran = secrets_kept = loose_modes = 0
    with workdir("contain") as tmp:
        root, ds = make_dataset(tmp)
        ds.add_sequences(["ACGTACGTAC"])
        ids = ["../escape", "/abs", "a/../../b", "..", "a/b/c", "~/x", "a\x00b", "-x", "a" * 300, ".hidden/.."]
        for bad in ids:
            try:
                Dataset.open(root, bad).init()
                escaped += 1
                row.fail(f"id {bad!r} accepted")
            except UsrError:
                pass
        canary = tmp / "outside"
        for control in (LOG_FILE, ".usr.lock", ".events.log.quarantine", "meta.md"):
            for link in ("symlink", "hardlink"):
                canary.write_bytes(b"canary")
                path = ds.dir / control
                saved = path.read_bytes() if path.exists() else None
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                if link == "symlink":
                    path.symlink_to(canary)
                else:
                    os.link(canary, path)
                with contextlib.suppress(UsrError, OSError):
                    ds.add_sequences(["TTTTACGTAC"], command_id=f"via-{control}-{link}")
                with contextlib.suppress(UsrError, OSError):
                    ds.info()
                if canary.read_bytes() != b"canary":
                    followed += 1
                    row.fail(f"{link} at {control} was written through")
                path.unlink()
                if saved is not None:
                    path.write_bytes(saved)
        marker = tmp / "yaml-ran"
        payload = f"!!python/object/apply:os.system ['touch {marker}']\n"
        evil = tmp / "evil"
        evil.mkdir()
        (evil / "registry.yaml").write_text(payload)
        with contextlib.suppress(UsrError):
            Dataset.open(evil, "e/ds").init()
        yaml_ran += marker.exists()
        secret = "hunter2PASS"
        sneaky = Dataset.open(root, "rel/secret")
        sneaky.init(source=f"token={secret}", notes=f"https://bob:{secret}@example.org")
        sneaky.add_sequences(["GATTACAGAT"], source=f"password={secret}")
        sneaky.delete([str(sneaky.head(1).column("id")[0].as_py())], reason=f"api_key={secret}")
        found = [p for p in sneaky.dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        secrets_kept = len(found)
        old = os.umask(0)
        try:
            loose = Dataset.open(root, "rel/umask")
            loose.init()
            loose.add_sequences(["CCCCAAAATT"])
            for path in loose.dir.rglob("*"):
                if path.stat().st_mode & stat.S_IWOTH:
                    loose_modes += 1
                    row.fail(f"world-writable: {path}")
        finally:
            os.umask(old)
        intact = True
        try:
            read_lines(ds.log_path)  # the log itself is intact after all of it
        except UsrError:
            intact = False
    row.require("traversal_ids_accepted", escaped, escaped == 0)
    row.require("links_written_through", followed, followed == 0)
    row.require("yaml_payloads_run", yaml_ran, yaml_ran == 0)
    row.require("files_holding_a_secret", secrets_kept, secrets_kept == 0)
    row.require("world_writable_files", loose_modes, loose_modes == 0)
    row.require("log_intact", int(intact), intact)
    return row
