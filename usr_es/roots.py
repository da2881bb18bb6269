"""Datasets roots and dataset ids: validation, listing and resolution (no dataset content)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import InvalidInput, NotFound
from .names import LOG_FILE, META_FILE, RECORDS_FILE, REGISTRY_FILE

_SEGMENT_MAX = 128
_SEGMENT = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{_SEGMENT_MAX - 1}}}")  # whole segments: `fullmatch`
_SKIP = {"archived", "_archive"}


def validate_id(dataset_id: str) -> str:
    """Return a valid dataset id (`name` or `ns/name`) or raise; ids can never leave the root."""
    if not dataset_id or "\x00" in dataset_id:
        raise InvalidInput("Dataset id must be a non-empty string without NUL bytes.")
    if dataset_id.startswith("/") or dataset_id.startswith("~"):
        raise InvalidInput(f"Dataset id '{dataset_id}' must be relative (use `name` or `ns/name`).")
    parts = dataset_id.split("/")
    longest = max(parts, key=len)
    if len(longest) > _SEGMENT_MAX:
        raise InvalidInput(
            f"Dataset id segment '{longest[:24]}...' is {len(longest)} characters; the limit is {_SEGMENT_MAX}.",
            hint="Use a shorter name (ids become folder names).",
        )
    if len(parts) > 2 or any(not _SEGMENT.fullmatch(p) for p in parts):
        raise InvalidInput(
            f"Invalid dataset id '{dataset_id}'.",
            hint="Ids are `name` or `ns/name`; segments start with a letter or digit and use "
            "letters, digits, '.', '_' or '-' (no '..', empty segments or absolute paths).",
        )
    if parts[0] in _SKIP:
        raise InvalidInput(f"Dataset ids under '{parts[0]}/' are reserved for archived storage.")
    return dataset_id


def given_root(explicit: Path | None = None) -> Path | None:
    """The datasets root the user gave: `--root`, else `$USR_ROOT` (None: neither; `find_root` then looks
    above the cwd)."""
    if explicit is None:
        env = os.environ.get("USR_ROOT")
        if not env:
            return None
        explicit = Path(env)
    root = explicit.expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise InvalidInput(
            f"Datasets root is a file, not a directory: {root}", hint="Pass the folder holding registry.yaml."
        )
    if not root.is_dir():
        raise NotFound(f"Datasets root does not exist: {root}", hint=f"Create it: mkdir -p {root}")
    return root


def find_root(explicit: Path | None = None, *, cwd: Path | None = None) -> Path:
    """`--root`, else `$USR_ROOT`, else the nearest ancestor of the cwd holding registry.yaml."""
    given = given_root(explicit)
    if given is not None:
        return given
    found = nearest_holding(cwd or Path.cwd(), REGISTRY_FILE)
    if found is not None:
        return found
    raise InvalidInput(
        "No datasets root: no --root, USR_ROOT is unset, and no registry.yaml above the current directory.",
        hint="Pass --root DIR (or export USR_ROOT=DIR); `usr --root DIR namespace register ...` starts one.",
    )


def enclosing_dataset(cwd: Path, *, within: Path | None = None) -> Path:
    """The dataset folder `cwd` is in (it or its nearest ancestor that `holds_dataset`). With `within` (a
    datasets root the user gave), that folder must be under it: a command never falls through to a dataset
    of another root."""
    for folder in (cwd, *cwd.parents):
        if holds_dataset(folder):
            if within is not None and not folder.resolve().is_relative_to(within.resolve()):
                raise InvalidInput(
                    f"The current directory is inside dataset folder {folder}, which is not under the "
                    f"datasets root {within}.",
                    hint="Name the dataset: by its id under that root, or by path (`.`) for the folder you are in.",
                )
            return folder
    raise InvalidInput(
        "No dataset given, and the current directory is not inside a dataset folder.",
        hint="Pass a dataset id (`ns/name`) or path, or run the command inside the dataset's folder.",
    )


def nearest_holding(start: Path, name: str) -> Path | None:
    """`start` or its nearest ancestor holding a file `name` (None: none does)."""
    here = start.resolve()
    return next((d for d in (here, *here.parents) if (d / name).is_file()), None)


def list_datasets(root: Path) -> list[str]:
    """Dataset ids under `root`: `<ds>` or `<ns>/<ds>` dataset folders (`holds_dataset`)."""
    found: list[str] = []
    if not root.is_dir():
        return found
    for first in sorted(root.iterdir()):
        if not first.is_dir() or first.name.startswith((".", "_")) or first.name in _SKIP:
            continue
        if holds_dataset(first):
            found.append(first.name)
            continue
        for second in sorted(first.iterdir()):
            if second.is_dir() and not second.name.startswith((".", "_")) and holds_dataset(second):
                found.append(f"{first.name}/{second.name}")
    return found


def holds_dataset(directory: Path) -> bool:
    """Whether `directory` is a dataset folder: it holds `.events.log`, or records.parquet and meta.md (a
    dataset the original USR wrote before it kept a log). A folder no dataset id can name (`_legacy/`,
    `_snapshots/...`: ids start with a letter or digit) is none."""
    if directory.name.startswith(("_", ".")):
        return False
    return (directory / LOG_FILE).is_file() or (
        (directory / RECORDS_FILE).is_file() and (directory / META_FILE).is_file()
    )


def looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..")


def resolve_existing(root: Path, ident: str) -> str:
    """Resolve an existing dataset id: exact `ns/name`, or a unique unqualified `name`."""
    validate_id(ident)
    if holds_dataset(root / ident):
        return ident
    if "/" in ident:
        raise NotFound(f"Dataset not found: {ident}", hint=f"`usr --root {root} ls` lists the datasets.")
    matches = [d for d in list_datasets(root) if d.split("/")[-1] == ident]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFound(f"Dataset not found: {ident}", hint=f"`usr --root {root} ls` lists the datasets.")
    raise InvalidInput(
        f"Ambiguous dataset name '{ident}'. Matches: {', '.join(matches)}",
        hint="Use a namespace-qualified id.",
    )
