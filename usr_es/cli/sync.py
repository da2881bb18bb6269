"""`usr status`, `usr pull`, `usr push`, `usr diff DATASET REMOTE` and `usr remotes ...` (docs/adr/0021),
plus the hidden `usr _agent` the other side of an ssh sync runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    Format,
    FormatOpt,
    datasets_root,
    emit_json,
    emit_struct,
    existing_dataset,
    output_format,
)

if TYPE_CHECKING:
    from ..dataset import Dataset
    from ..remotes import Transport
    from ..results import FileSyncStatus, SyncResult, SyncStatus


class Verify(StrEnum):
    hash = "hash"
    auto = "auto"
    size = "size"
    parquet = "parquet"


RemoteArg = Annotated[str, typer.Argument(help="A remote named in the remotes config (`usr remotes list`).")]
RemotesConfigOpt = Annotated[
    Path | None,
    typer.Option("--remotes-config", help="The remotes config YAML (default: $USR_REMOTES_PATH).", show_default=False),
]
VerifyOpt = Annotated[
    Verify,
    typer.Option(
        "--verify",
        help="hash|auto|size|parquet: every mode checks the transfer the one way a log allows, by comparing "
        "both heads' seq and chain hash (a hash of every byte of every event) after it.",
    ),
]
AuditOpt = Annotated[
    Path | None,
    typer.Option("--audit-json-out", help="Also write the outcome as JSON (the original's audit shape) to PATH."),
]
PrimaryOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--primary-only",
        help="When a whole dataset is copied (the other side lacks it): only the log and the files it names; "
        "the receiving side folds its projections from the log.",
    ),
]
SkipSnapshotsOpt = Annotated[
    bool, typer.Option("--skip-snapshots", help="When a whole dataset is copied: leave out its checkpoints.")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would travel; change nothing.")]
YesOpt = Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")]
SidecarsOpt = Annotated[
    bool | None,
    typer.Option(
        "--verify-sidecars/--no-verify-sidecars",
        help="After the transfer, run `usr verify` on the receiving side (every payload digest, and replay "
        "equals the stored files).",
        show_default=False,
    ),
]


def _dataset_for_sync(ident: str) -> Dataset:
    """The local dataset (a dataset that exists only on the remote is a bootstrap target: opened by id)."""
    from ..dataset import Dataset
    from ..roots import looks_like_path

    if looks_like_path(ident) or Path(ident).is_dir():
        return existing_dataset(ident)
    return Dataset.open(datasets_root(), ident)


# -- status and diff --------------------------------------------------------------------------------
RemotePathOpt = Annotated[
    str | None,
    typer.Option("--remote-path", help="File mode: the file's path on the remote (relative: under its base_dir)."),
]
RepoRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--repo-root",
        help="File mode: the local repo root the file's path is taken relative to (default: the remote's "
        "local_repo_root, else $DNADESIGN_REPO_ROOT), joined to the remote's repo_root.",
    ),
]


def status(
    dataset: Annotated[str, typer.Argument(help="Dataset id, dataset directory, or a file (file mode).")],
    remote: RemoteArg,
    remotes_config: RemotesConfigOpt = None,
    verify: VerifyOpt = Verify.hash,
    primary_only: PrimaryOnlyOpt = False,
    skip_snapshots: SkipSnapshotsOpt = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    remote_path: RemotePathOpt = None,
    repo_root: RepoRootOpt = None,
    audit_json_out: AuditOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Read-only: how this copy and the remote's compare -- both heads, the events each side lacks, the
    bytes that would travel, and the verdict (up to date, ahead, behind, diverged at seq K, missing). A
    file path compares one file by sha256 (file mode). The transfer flags are accepted, as the original
    accepted them, and change nothing here.

    Example: usr status densegen/demo cluster
    """
    sync_diff(dataset, remote, remotes_config, audit_json_out, fmt, remote_path=remote_path, repo_root=repo_root)


def sync_diff(
    dataset: str,
    remote: str,
    remotes_config: Path | None,
    audit: Path | None,
    fmt: Format,
    *,
    remote_path: str | None = None,
    repo_root: Path | None = None,
) -> None:
    """`usr status` / `usr diff DATASET REMOTE`: a dataset's two copies, or one file (file mode)."""
    target = _file_target(dataset, remote_path)
    if target is not None:
        from ..sync import file_status

        where = _transport(remote, remotes_config)
        found_file = file_status(target, _remote_file(target, where, remote_path, repo_root), where)
        if audit is not None:
            _audit(audit, {"action": "diff", "transfer_state": "DIFF-ONLY", **_builtins(found_file)})
        if output_format(fmt) is Format.json:
            emit_struct(found_file)
            return
        _show_file(found_file)
        return
    ds = _dataset_for_sync(dataset)
    found = ds.sync.status(remote, remotes_config=remotes_config)
    if audit is not None:
        _audit(audit, _status_audit(found, "diff", "DIFF-ONLY"))
    if output_format(fmt) is Format.json:
        emit_struct(found)
        return
    _show_status(found)


def _file_target(ident: str, remote_path: str | None) -> Path | None:
    """The local file of file mode: an existing file, or any path when --remote-path names the remote one
    (None: a dataset)."""
    path = Path(ident).expanduser()
    if path.is_file() or (remote_path is not None and not path.is_dir()):
        return path.resolve()
    return None


def _transport(remote: str, config: Path | None) -> Transport:
    from ..remotes import reach

    return reach(remote, config)


def _remote_file(local: Path, where: Transport, remote_path: str | None, repo_root: Path | None) -> str:
    from ..sync import remote_file_path

    return remote_file_path(local, where, remote_path=remote_path, repo_root=repo_root)


_FILE_VERDICTS = {
    "up-to-date": "up to date",
    "differ": "DIFFER (pull or push replaces the other side's copy whole)",
    "remote-missing": "remote missing (push copies it there)",
    "local-missing": "local missing (pull copies it here)",
    "both-missing": "missing on both sides",
}


def _show_file(found: FileSyncStatus) -> None:
    def side(f: Any) -> str:
        return f"{f.size:,} bytes  {f.mtime_utc}  sha256 {f.sha256[:16]}  {f.path}" if f.exists else f"(none) {f.path}"

    typer.echo(f"file <-> {found.remote}: {_FILE_VERDICTS[found.verdict]}")
    typer.echo(f"  local : {side(found.local)}")
    typer.echo(f"  remote: {side(found.remote_file)}")


_VERDICTS = {
    "up-to-date": "up to date",
    "local-ahead": "local ahead (push sends {local} event(s))",
    "remote-ahead": "remote ahead (pull brings {remote} event(s))",
    "diverged": "DIVERGED at seq {fork}: both sides appended since",
    "remote-missing": "remote missing (push copies the dataset there)",
    "local-missing": "local missing (pull copies the dataset here)",
}


def _show_status(found: SyncStatus) -> None:
    def head(side: Any) -> str:
        return f"seq {side.seq}  {side.hash[:12]}  {side.timestamp_utc}" if side.exists else "(none)"

    verdict = _VERDICTS[found.verdict].format(
        local=len(found.local_only), remote=len(found.remote_only), fork=found.fork_seq
    )
    typer.echo(f"{found.dataset} <-> {found.remote}: {verdict}")
    typer.echo(f"  local : {head(found.local)}")
    typer.echo(f"  remote: {head(found.remote_head)}")
    for label, events in (("only here", found.local_only), ("only there", found.remote_only)):
        for event in events[:20]:
            typer.echo(f"  {label}: seq {event.seq} {event.action} {event.timestamp_utc} {event.actor}")
        if len(events) > 20:
            typer.echo(f"  {label}: ... {len(events) - 20} more")
    if found.bytes_to_pull or found.bytes_to_push:
        typer.echo(f"  would travel: pull {found.bytes_to_pull:,} bytes, push {found.bytes_to_push:,} bytes")
    typer.echo(f"  round trips: {found.round_trips}")


# -- pull and push ----------------------------------------------------------------------------------
def pull(
    dataset: Annotated[str, typer.Argument(help="Dataset id (one this root lacks is copied here) or directory.")],
    remote: RemoteArg,
    remotes_config: RemotesConfigOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    rebase: Annotated[
        bool,
        typer.Option(
            "--rebase",
            help="When both copies appended since a common event: decide this copy's commands again after the "
            "remote's events (one that no longer validates is left out and reported; the replaced lines are "
            "kept in .events.log.rebased). With --dry-run: show the outcome, change nothing.",
        ),
    ] = False,
    verify: VerifyOpt = Verify.hash,
    verify_sidecars: SidecarsOpt = None,
    primary_only: PrimaryOnlyOpt = False,
    skip_snapshots: SkipSnapshotsOpt = False,
    remote_path: RemotePathOpt = None,
    repo_root: RepoRootOpt = None,
    audit_json_out: AuditOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Bring the remote's events this copy lacks, appended through this copy's write path (payload files
    first, digests checked). A fork is refused, naming the fork seq, unless --rebase.

    Example: usr pull densegen/demo cluster -y
    """
    _transfer(
        "pull",
        dataset,
        remote,
        _Options(
            remotes_config,
            yes,
            dry_run,
            verify_sidecars,
            primary_only,
            skip_snapshots,
            audit_json_out,
            rebase,
            remote_path,
            repo_root,
        ),
        fmt,
    )


def push(
    dataset: Annotated[str, typer.Argument(help="Dataset id or dataset directory.")],
    remote: RemoteArg,
    remotes_config: RemotesConfigOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    verify: VerifyOpt = Verify.hash,
    verify_sidecars: SidecarsOpt = None,
    primary_only: PrimaryOnlyOpt = False,
    skip_snapshots: SkipSnapshotsOpt = False,
    remote_path: RemotePathOpt = None,
    repo_root: RepoRootOpt = None,
    audit_json_out: AuditOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Send this copy's events the remote lacks, appended through the remote's write path (its lock, chain
    check and projections). A fork is refused, naming the fork seq (pull --rebase combines the two).

    Example: usr push densegen/demo cluster -y
    """
    _transfer(
        "push",
        dataset,
        remote,
        _Options(
            remotes_config,
            yes,
            dry_run,
            verify_sidecars,
            primary_only,
            skip_snapshots,
            audit_json_out,
            False,
            remote_path,
            repo_root,
        ),
        fmt,
    )


@dataclass(frozen=True)
class _Options:
    config: Path | None
    yes: bool
    dry_run: bool
    sidecars: bool | None
    primary_only: bool
    skip_snapshots: bool
    audit: Path | None
    rebase: bool = False
    remote_path: str | None = None
    repo_root: Path | None = None


def _transfer(action: str, dataset: str, remote: str, opts: _Options, fmt: Format) -> None:
    from ..errors import UserAbort

    target = _file_target(dataset, opts.remote_path)
    if target is not None:
        _transfer_file(action, target, remote, opts, fmt)
        return
    if action == "pull" and not opts.dry_run and not opts.rebase and _bootstrap(dataset):
        _bootstrap_pull(dataset, remote, opts, fmt)
        return
    ds = _dataset_for_sync(dataset)
    if not opts.yes and not opts.dry_run and sys.stdin.isatty():
        found = ds.sync.status(remote, remotes_config=opts.config)
        _show_status(found)
        moving = ("remote-ahead", "local-missing") if action == "pull" else ("local-ahead", "remote-missing")
        if (found.verdict in moving or (opts.rebase and found.verdict == "diverged")) and not typer.confirm(
            "Proceed?", default=True
        ):
            raise UserAbort(f"{action.capitalize()} cancelled.")
    copy = {"primary_only": opts.primary_only, "skip_snapshots": opts.skip_snapshots}
    sidecars, config = bool(opts.sidecars), opts.config
    if action == "pull":
        done = ds.sync.pull(
            remote, dry_run=opts.dry_run, rebase=opts.rebase, verify_sidecars=sidecars, remotes_config=config, **copy
        )
    else:
        done = ds.sync.push(remote, dry_run=opts.dry_run, verify_sidecars=sidecars, remotes_config=config, **copy)
    _report(action, done, opts, fmt)


def _report(action: str, done: SyncResult, opts: _Options, fmt: Format) -> None:
    checked = _checked(done)
    if opts.audit is not None:
        _audit(opts.audit, _result_audit(done, checked))
    if output_format(fmt) is Format.json:
        emit_json({"result": _builtins(done), "verify": checked})
        return
    if done.transfer_state == "NO-OP":
        typer.echo(f"{action.upper()} {done.dataset} <-> {done.remote}: nothing to do ({done.message})")
        return
    what = "bootstrap (whole dataset)" if done.bootstrap else f"{done.appended} event(s)"
    typer.echo(
        f"{action.upper()} audit: {done.dataset} <-> {done.remote} [{done.transfer_state}] {what}, "
        f"{done.bytes:,} bytes in {done.files} file(s) + lines, {done.round_trips} round trip(s)"
    )
    for item in done.rebased:
        where = f"now seq {item.new_seq}" if item.new_seq is not None else f"LEFT OUT: {item.reason}"
        typer.echo(f"  rebased: seq {item.old_seq} {item.action} ({item.command_id}) -> {where}")
    typer.echo(f"  head now: seq {done.head.seq} {done.head.hash[:12]}")
    for line in checked.get("notes", []):
        typer.echo(f"  {line}")
    if done.transfer_state == "TRANSFERRED":
        typer.echo(f"{action.capitalize()} complete.")


def _bootstrap(ident: str) -> bool:
    """Whether a pull of `ident` copies a dataset this root lacks (decided without loading pyarrow)."""
    from ..names import LOG_FILE
    from ..roots import looks_like_path, validate_id

    if looks_like_path(ident) or Path(ident).is_dir():
        return False
    validate_id(ident)
    return not (datasets_root() / ident / LOG_FILE).exists()


def _bootstrap_pull(dataset: str, remote: str, opts: _Options, fmt: Format) -> None:
    """A dataset this root lacks, copied whole: its folder's copy starts before the modules that install it
    (pyarrow) are loaded, so the two overlap (`bootstrap.bootstrap_pull`)."""
    from ..bootstrap import Copying, bootstrap_pull

    copy = Copying(primary_only=opts.primary_only, skip_snapshots=opts.skip_snapshots)
    where = _transport(remote, opts.config)
    done = bootstrap_pull(datasets_root(), dataset, where, copy, verify_sidecars=bool(opts.sidecars))
    _report("pull", done, opts, fmt)


def _transfer_file(action: str, target: Path, remote: str, opts: _Options, fmt: Format) -> None:
    """File mode: one file replaced whole on the receiving side, then both sha256s compared."""
    from ..errors import InvalidInput, UserAbort
    from ..sync import file_status, file_transfer

    if opts.sidecars or opts.primary_only or opts.skip_snapshots or opts.rebase:
        raise InvalidInput(
            "--verify-sidecars, --primary-only, --skip-snapshots and --rebase are dataset-only flags.",
            hint="File mode copies one file whole and compares sha256s.",
        )
    where = _transport(remote, opts.config)
    remote_file = _remote_file(target, where, opts.remote_path, opts.repo_root)
    if not opts.yes and not opts.dry_run and sys.stdin.isatty():
        found = file_status(target, remote_file, where)
        _show_file(found)
        if found.verdict != "up-to-date" and not typer.confirm("Replace the other side's copy?", default=True):
            raise UserAbort(f"{action.capitalize()} cancelled.")
    done = file_transfer(action, target, remote_file, where, dry_run=opts.dry_run)
    if opts.audit is not None:
        _audit(opts.audit, _builtins(done))
    if output_format(fmt) is Format.json:
        emit_struct(done)
        return
    if done.transfer_state == "NO-OP":
        typer.echo(f"{action.upper()} {target} <-> {done.remote}: nothing to do (same sha256)")
        return
    typer.echo(
        f"{action.upper()} audit: {target} <-> {done.remote}:{remote_file} [{done.transfer_state}] "
        f"{done.bytes:,} bytes, sha256 {done.sha256[:16]} on both sides"
    )
    if done.transfer_state == "TRANSFERRED":
        typer.echo(f"{action.capitalize()} complete.")


def _checked(done: SyncResult) -> dict[str, Any]:
    """After a transfer: what the library checked (the receiving side holds the sender's head line, by seq
    and chain hash; a bootstrap's copy had its chain checked when installed), and with `--verify-sidecars`
    its `usr verify` of the receiving side."""
    if done.transfer_state != "TRANSFERRED":
        return {"primary": "skipped", "sidecars": "skipped"}
    checked: dict[str, Any] = {
        "primary": "seq+chain-hash",
        "sidecars": "skipped",
        "notes": [
            f"verified: the receiving side holds the sender's head, now seq {done.head.seq} {done.head.hash[:12]}"
        ],
    }
    if done.verified is not None:
        checked["sidecars"] = "usr-verify"
        checked["notes"].append(f"usr verify on the receiving side: OK ({len(done.verified.files_checked)} file(s))")
    return checked


def _builtins(obj: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(obj)


def _status_audit(found: SyncStatus, action: str, state: str) -> dict[str, Any]:
    return {
        "action": action,
        "transfer_state": state,
        "dataset": found.dataset,
        "remote": found.remote,
        "verdict": found.verdict,
        "fork_seq": found.fork_seq,
        "verify": {"primary": "seq+chain-hash", "sidecars": "skipped", "content_hashes": "xxh3-128 chain"},
        ".events.log": {
            "changed": found.verdict != "up-to-date",
            "local": {"seq": found.local.seq, "hash": found.local.hash},
            "remote": {"seq": found.remote_head.seq, "hash": found.remote_head.hash},
            "local_only": len(found.local_only),
            "remote_only": len(found.remote_only),
        },
        "bytes_to_pull": found.bytes_to_pull,
        "bytes_to_push": found.bytes_to_push,
        "round_trips": found.round_trips,
    }


def _result_audit(done: SyncResult, checked: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": done.action,
        "transfer_state": done.transfer_state,
        "dataset": done.dataset,
        "remote": done.remote,
        "verdict": done.verdict,
        "bootstrap": done.bootstrap,
        "verify": {k: v for k, v in checked.items() if k != "notes"},
        ".events.log": {"changed": done.appended > 0, "appended": done.appended, "head": _builtins(done.head)},
        "bytes": done.bytes,
        "files": done.files,
        "round_trips": done.round_trips,
    }


def _audit(path: Path, data: dict[str, Any]) -> None:
    import msgspec

    from ..fileio import write_atomic

    write_atomic(path, msgspec.json.encode({"usr_output_version": 1, "data": data}) + b"\n", point="audit")


# -- remotes ----------------------------------------------------------------------------------------
remotes_app = typer.Typer(
    help="The remotes config: where other copies of datasets live ($USR_REMOTES_PATH).\n\n"
    "Example: usr remotes add cluster --host login.hpc.example.org --user me --base-dir /project/me/usr",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@remotes_app.command("list")
def remotes_list(remotes_config: RemotesConfigOpt = None, fmt: FormatOpt = Format.auto) -> None:
    """One line per remote: name, type, address and how ssh authenticates.

    Example: usr remotes list
    """
    from ..remotes import Remote, config_path, load_remotes

    found = [Remote(name=n, spec=s) for n, s in sorted(load_remotes(config_path(remotes_config)).items())]
    if output_format(fmt) is Format.json:
        emit_struct(found)
        return
    for remote in found:
        typer.echo(f"{remote.name}\t{remote.spec.type}\t{remote.address}\tauth={remote.auth}")


@remotes_app.command("show")
def remotes_show(
    name: Annotated[str, typer.Argument(help="The remote's name.")],
    remotes_config: RemotesConfigOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Every field of one remote.

    Example: usr remotes show cluster
    """
    import msgspec

    from ..remotes import config_path, get_remote

    remote = get_remote(name, config_path(remotes_config))
    if output_format(fmt) is Format.json:
        emit_struct(remote)
        return
    typer.echo(f"name: {remote.name}")
    for key, value in msgspec.to_builtins(remote.spec).items():
        typer.echo(f"{key}: {value}")


@remotes_app.command("add")
def remotes_add(
    name: Annotated[str, typer.Argument(help="The remote's name.")],
    base_dir: Annotated[str, typer.Option("--base-dir", help="The datasets root on the remote.")],
    type_: Annotated[str, typer.Option("--type", help="ssh, or local (a mounted filesystem).")] = "ssh",
    host: Annotated[str, typer.Option("--host", help="ssh host (or an alias from ~/.ssh/config).")] = "",
    user: Annotated[str, typer.Option("--user", help="ssh user.")] = "",
    batch_mode: Annotated[bool, typer.Option("--batch-mode/--no-batch-mode", help="ssh BatchMode.")] = True,
    ssh_key_env: Annotated[str | None, typer.Option("--ssh-key-env", help="Env var holding the key path.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="ssh port.")] = None,
    usr_command: Annotated[str, typer.Option("--usr-command", help="How to run usr there.")] = "usr",
    replace: Annotated[bool, typer.Option("--replace", help="Replace a remote of that name.")] = False,
    remotes_config: RemotesConfigOpt = None,
) -> None:
    """Save a remote into the remotes config (created when missing).

    Example: usr remotes add cluster --host login.hpc.example.org --user me --base-dir /project/me/usr_datasets
    """
    from ..remotes import RemoteSpec, config_path, save_remote

    if type_ not in ("ssh", "local"):
        from ..errors import InvalidInput

        raise InvalidInput(f"Unknown remote type '{type_}'.", hint="Use --type ssh or --type local.")
    spec = RemoteSpec(
        type="ssh" if type_ == "ssh" else "local",
        base_dir=base_dir,
        host=host,
        user=user,
        batch_mode=batch_mode,
        ssh_key_env=ssh_key_env,
        port=port,
        usr_command=usr_command,
    )
    path = config_path(remotes_config)
    save_remote(path, name, spec, replace=replace)
    typer.echo(f"Saved remote '{name}' to {path}")


_PRESETS = {"bu-scc": ("scc1.bu.edu", "scc-globus.bu.edu")}


@remotes_app.command("wizard")
def remotes_wizard(
    user: Annotated[str, typer.Option("--user", help="Your user on the cluster.")],
    base_dir: Annotated[str, typer.Option("--base-dir", help="The datasets root on the cluster.")],
    preset: Annotated[str, typer.Option("--preset", help="bu-scc (Boston University SCC).")] = "bu-scc",
    name: Annotated[str, typer.Option("--name", help="The remote's name.")] = "bu-scc",
    host: Annotated[str, typer.Option("--host", help="Override the preset's login host.")] = "",
    transfer_node: Annotated[bool, typer.Option("--transfer-node", help="Use the data transfer node.")] = False,
    batch_mode: Annotated[bool, typer.Option("--batch-mode/--no-batch-mode", help="ssh BatchMode.")] = True,
    ssh_key_env: Annotated[str | None, typer.Option("--ssh-key-env", help="Env var holding the key path.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a remote of that name.")] = False,
    remotes_config: RemotesConfigOpt = None,
) -> None:
    """Save a remote from a preset and print the ~/.ssh/config lines that keep one login per session.

    Example: usr remotes wizard --preset bu-scc --user me --base-dir /project/me/usr_datasets
    """
    from ..errors import InvalidInput
    from ..remotes import RemoteSpec, config_path, save_remote

    if preset not in _PRESETS:
        raise InvalidInput(f"Unknown preset '{preset}'.", hint=f"Presets: {', '.join(_PRESETS)}.")
    login, transfer = _PRESETS[preset]
    chosen = host or (transfer if transfer_node else login)
    spec = RemoteSpec(base_dir=base_dir, host=chosen, user=user, batch_mode=batch_mode, ssh_key_env=ssh_key_env)
    path = config_path(remotes_config)
    save_remote(path, name, spec, replace=replace)
    typer.echo(f"Saved remote '{name}' ({user}@{chosen}:{base_dir}) to {path}")
    typer.echo("Add to ~/.ssh/config so one login (and one two-factor prompt) serves a whole session:")
    typer.echo(
        f"Host {chosen}\n  User {user}\n  ControlMaster auto\n  ControlPath ~/.ssh/cm-%r@%h:%p\n  ControlPersist 4h"
    )


@remotes_app.command("doctor")
def remotes_doctor(
    remote: Annotated[str, typer.Option("--remote", help="The remote to check.")],
    check_base_dir: Annotated[
        bool, typer.Option("--check-base-dir/--no-check-base-dir", help="Check the remote datasets root.")
    ] = True,
    remotes_config: RemotesConfigOpt = None,
    fmt: FormatOpt = Format.auto,
) -> None:
    """Check each step a sync needs -- local ssh and rsync, reaching the host, usr_es there (same version),
    rsync there, the remote datasets root -- and name the first that fails with its fix.

    Example: usr remotes doctor --remote cluster
    """
    from ..errors import RemoteError
    from ..remotes import config_path, doctor, get_remote

    checks = doctor(get_remote(remote, config_path(remotes_config)), check_base_dir=check_base_dir)
    if output_format(fmt) is Format.json:
        emit_struct(checks)
    else:
        for check in checks:
            typer.echo(f"[{'ok' if check.ok else 'FAIL'}] {check.step}: {check.detail}")
            if not check.ok and check.fix:
                typer.echo(f"       fix: {check.fix}")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise RemoteError(f"remote '{remote}': {failed[0].step} failed", hint=failed[0].fix or None)


# -- the other side of an ssh sync --------------------------------------------------------------------
def agent() -> None:
    """(internal) Answer one sync request read from stdin; the other side of `usr pull`/`push` runs it."""
    from ..agent import serve_bytes
    from .common import options

    root = options.root
    if root is None:
        from ..errors import InvalidInput

        raise InvalidInput("usr _agent needs --root.")
    sys.stdout.buffer.write(serve_bytes(root.expanduser().resolve(), sys.stdin.buffer.read()))
    sys.stdout.buffer.flush()
