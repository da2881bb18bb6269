"""Remotes (docs/adr/0021): where the other copies of datasets live, and how to reach them.

The config is the original USR's YAML (`remotes: {NAME: {type: ssh, host, user, base_dir, batch_mode,
ssh_key_env, repo_root, local_repo_root}}`) at `--remotes-config` or `$USR_REMOTES_PATH`, plus a
`type: local` remote (`base_dir` on a mounted filesystem) and three optional ssh fields: `port`,
`usr_command` (how to run usr_es there; default `usr`) and `ssh_options` (extra `-o` options).

A `Transport` carries the sync's requests to the other side's agent (`agent.serve`) and copies files:
over ssh and rsync for `type: ssh`, in this process for `type: local` -- the same requests and replies.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import msgspec
import yaml

from . import errors
from .errors import InvalidInput, NotFound, RemoteError, UsrError
from .fileio import write_atomic
from .names import LOCK_FILE

if TYPE_CHECKING:  # the agent's messages (msgspec structs of events) load on the first request
    from .agent import Request

REMOTES_ENV = "USR_REMOTES_PATH"
#: Never copied: locks belong to one machine's processes, staging folders to one transfer.
NEVER_COPIED = (LOCK_FILE, ".usr-sync", ".tmp-*")


class RemoteSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """One remote as the config file holds it."""

    type: Literal["ssh", "local"] = "ssh"
    base_dir: str
    host: str = ""
    user: str = ""
    batch_mode: bool = True
    ssh_key_env: str | None = None
    repo_root: str | None = None
    local_repo_root: str | None = None
    port: int | None = None
    usr_command: str = "usr"
    ssh_options: list[str] = []
    #: Keep one ssh connection open this many seconds after a command, for the next request and copy to
    #: reuse (ssh ControlMaster); 0: a connection per request.
    control_persist: int = 60


class _RemotesDoc(msgspec.Struct, frozen=True, kw_only=True):
    remotes: dict[str, RemoteSpec] = {}


class Remote(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    spec: RemoteSpec

    @property
    def auth(self) -> str:
        return "batch" if self.spec.batch_mode else "interactive-auth"

    @property
    def address(self) -> str:
        if self.spec.type == "local":
            return self.spec.base_dir
        where = f"{self.spec.user}@{self.spec.host}" if self.spec.user else self.spec.host
        return f"{where}:{self.spec.base_dir}"


def config_path(explicit: Path | None) -> Path:
    """The remotes config: `explicit`, else `$USR_REMOTES_PATH` (required, as in the original)."""
    if explicit is not None:
        return explicit.expanduser()
    found = os.environ.get(REMOTES_ENV)
    if not found:
        raise InvalidInput(
            f"{REMOTES_ENV} is required (the remotes config file).",
            hint=f"export {REMOTES_ENV}=~/.config/usr/remotes.yaml, or pass --remotes-config PATH.",
        )
    return Path(found).expanduser()


def load_remotes(path: Path) -> dict[str, RemoteSpec]:
    """The remotes the config at `path` names (a missing file: none when `missing_ok`)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(
            f"Remote config not found: {path}",
            hint="Create it with `usr remotes add NAME --host HOST --base-dir DIR` or `usr remotes wizard`.",
        ) from None
    try:
        loaded = yaml.safe_load(raw) or {}
        return msgspec.convert(loaded, _RemotesDoc).remotes
    except (yaml.YAMLError, msgspec.ValidationError) as exc:
        raise InvalidInput(f"Remote config {path} is not valid: {exc}".replace("\n", " ")) from None


def save_remote(path: Path, name: str, spec: RemoteSpec, *, replace: bool = False) -> None:
    """Add remote `name` to the config at `path` (created when missing); an existing name needs `replace`."""
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidInput(f"Invalid remote name '{name}'.", hint="Use letters, digits, '-', '_' or '.'.")
    _check(spec)
    remotes = load_remotes(path) if path.exists() else {}
    if name in remotes and not replace:
        raise errors.DatasetExists(f"Remote '{name}' exists already in {path}.", hint="Pass --replace to change it.")
    remotes[name] = spec
    document = {"remotes": {key: msgspec.to_builtins(value) for key, value in sorted(remotes.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(document, sort_keys=False).encode(), point="remotes")


def _check(spec: RemoteSpec) -> None:
    if spec.type == "ssh" and not spec.host:
        raise InvalidInput("An ssh remote needs a host.", hint="Pass --host HOST.")
    if not spec.base_dir:
        raise InvalidInput("A remote needs a base_dir: the datasets root there.", hint="Pass --base-dir DIR.")


def get_remote(name: str, path: Path) -> Remote:
    remotes = load_remotes(path)
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise NotFound(f"Unknown remote '{name}' (in {path}: {known}).", hint="`usr remotes list` shows them.")
    _check(remotes[name])
    return Remote(name=name, spec=remotes[name])


# -- transports --------------------------------------------------------------------------------------------
R = TypeVar("R")


class _Envelope(msgspec.Struct, frozen=True):
    reply: msgspec.Raw = msgspec.Raw(b"")
    failure: msgspec.Raw = msgspec.Raw(b"")


class Transport(Protocol):
    remote: Remote
    #: Requests and file copies made so far (each one ssh session over ssh).
    round_trips: int

    def call(self, request: Request, kind: type[R], data: bytes = b"") -> R:
        """Send one request to the other side's agent; its reply, or the error it raised there."""
        ...

    def fetch(
        self, remote_dir: str, local_dir: Path, files: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> int:
        """Copy `files` (relative; None: the whole folder, without locks, staging folders and what `exclude`
        names) from the remote folder into `local_dir`; returns the bytes of the files copied."""
        ...

    def send(
        self, local_dir: Path, remote_dir: str, files: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> int:
        """Copy `files` (None: the whole folder, as `fetch`) from `local_dir` into the remote folder."""
        ...

    def path(self, *parts: str) -> str:
        """A path under the remote's base_dir."""
        ...

    def get(self, remote_file: str, local_file: Path) -> int:
        """Copy one file from there to `local_file` (replaced whole, never half-written); its bytes."""
        ...

    def put(self, local_file: Path, remote_file: str) -> int:
        """Copy one file to `remote_file` there (its folder made when missing); its bytes."""
        ...


def transport(remote: Remote) -> Transport:
    return LocalTransport(remote) if remote.spec.type == "local" else SshTransport(remote)


def reach(remote: str | Remote, config: Path | str | None = None) -> Transport:
    """The transport to `remote`: a `Remote`, or a name in the remotes config (`config`, else
    `$USR_REMOTES_PATH`)."""
    if isinstance(remote, str):
        remote = get_remote(remote, config_path(Path(config) if config is not None else None))
    return transport(remote)


def _decoded(raw: bytes, kind: type[R], where: str) -> R:
    try:
        envelope = msgspec.json.decode(raw, type=_Envelope)
        if envelope.failure:
            from .agent import Failure

            raise _raised(msgspec.json.decode(envelope.failure, type=Failure), where)
        if not envelope.reply:
            raise msgspec.DecodeError("no reply")
        return msgspec.json.decode(envelope.reply, type=kind)
    except msgspec.DecodeError as exc:
        raise RemoteError(
            f"{where} answered something this usr_es cannot read: {exc}",
            hint="Install the same usr_es version on both sides (`usr remotes doctor` shows both).",
        ) from None


def _raised(failure: object, where: str) -> UsrError:
    """The error the other side raised, as the same class here (its subclasses' extra fields aside)."""
    from .agent import Failure

    assert isinstance(failure, Failure)
    message = f"{where}: {failure.error}"
    if failure.kind == "Diverged":
        return errors.Diverged(message, fork_seq=failure.fork_seq, hint=failure.hint)
    cls = getattr(errors, failure.kind, None)
    if isinstance(cls, type) and issubclass(cls, UsrError):
        for simple in cls.__mro__:  # the nearest class built from a message and a hint alone
            if simple in _SIMPLE:
                return simple(message, hint=failure.hint)
    return RemoteError(message, hint=failure.hint)


_SIMPLE: tuple[type[UsrError], ...] = (
    errors.NotFound,
    errors.DatasetExists,
    errors.ConcurrencyError,
    errors.IntegrityError,
    errors.InvalidInput,
    errors.UsrError,
)


class LocalTransport:
    """A remote on a mounted filesystem: the agent runs in this process, files are copied directly."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.root = Path(remote.spec.base_dir).expanduser()
        self.round_trips = 0

    def call(self, request: Request, kind: type[R], data: bytes = b"") -> R:
        self.round_trips += 1
        if not self.root.is_dir():
            raise RemoteError(
                f"remote '{self.remote.name}': base_dir {self.root} is not a folder",
                hint="Mount it, or fix base_dir (`usr remotes show`).",
            )
        from .agent import encode_request, serve_bytes

        return _decoded(serve_bytes(self.root, encode_request(request, data)), kind, f"remote '{self.remote.name}'")

    def fetch(
        self, remote_dir: str, local_dir: Path, files: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> int:
        self.round_trips += 1
        return _copy(Path(remote_dir), local_dir, files, exclude)

    def send(
        self, local_dir: Path, remote_dir: str, files: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> int:
        self.round_trips += 1
        return _copy(local_dir, Path(remote_dir), files, exclude)

    def path(self, *parts: str) -> str:
        return str(self.root.joinpath(*parts))

    def get(self, remote_file: str, local_file: Path) -> int:
        self.round_trips += 1
        return _copy_one(self.root / Path(remote_file).expanduser(), local_file)

    def put(self, local_file: Path, remote_file: str) -> int:
        self.round_trips += 1
        return _copy_one(local_file, self.root / Path(remote_file).expanduser())


def _copy_one(source: Path, target: Path) -> int:
    if not source.is_file():
        raise NotFound(f"{source} is not a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".tmp-copy-{target.name}")
    shutil.copyfile(source, part)
    os.replace(part, target)
    return source.stat().st_size


def _copy(source: Path, target: Path, files: Sequence[str] | None, exclude: Sequence[str]) -> int:
    """Copy `files` (None: every file but those `NEVER_COPIED` or in `exclude`) from `source` into
    `target`; a file whose size already matches is kept (a resumed copy), except the log, which grows.
    Returns the bytes copied."""
    from fnmatch import fnmatch

    if not source.is_dir():
        raise NotFound(f"{source} is not a folder")
    if files is None:
        patterns = (*NEVER_COPIED, *exclude)
        files = [
            str(p.relative_to(source))
            for p in sorted(source.rglob("*"))
            if p.is_file() and not any(fnmatch(part, pat) for part in p.relative_to(source).parts for pat in patterns)
        ]
    copied = 0
    for rel in files:
        src, dst = source / rel, target / rel
        size = src.stat().st_size
        if dst.is_file() and dst.stat().st_size == size and rel != ".events.log":
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(f".tmp-copy-{dst.name}")
        shutil.copyfile(src, part)
        os.replace(part, dst)
        copied += size
    return copied


def _control_dir() -> Path | None:
    """A folder only this user can use for ssh's connection sockets (None: none could be made safely)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    folder = Path(base) / f"usr-ssh-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # someone else's, or open to others: no shared sockets there
    return folder


class SshTransport:
    """A remote over ssh: the agent is `usr --root BASE_DIR _agent` there; files travel by rsync."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.round_trips = 0

    def ssh_command(self) -> list[str]:
        """ssh and its options, without the destination (rsync's `-e` takes the same)."""
        spec = self.remote.spec
        argv = ["ssh", "-o", "ConnectTimeout=10"]
        if spec.batch_mode:
            argv += ["-o", "BatchMode=yes"]
        if spec.ssh_key_env:
            key = os.environ.get(spec.ssh_key_env)
            if not key:
                raise InvalidInput(
                    f"remote '{self.remote.name}' takes its ssh key from ${spec.ssh_key_env}, which is not set.",
                    hint=f"export {spec.ssh_key_env}=/path/to/key",
                )
            argv += ["-i", key]
        if spec.port is not None:
            argv += ["-p", str(spec.port)]
        sockets = _control_dir() if spec.control_persist > 0 else None
        if sockets is not None:
            argv += [
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath={sockets}/%C",
                "-o", f"ControlPersist={spec.control_persist}",
            ]  # fmt: skip
        for option in spec.ssh_options:
            argv += ["-o", option]
        return argv

    @property
    def destination(self) -> str:
        spec = self.remote.spec
        return f"{spec.user}@{spec.host}" if spec.user else spec.host

    def run(self, remote_command: str, data: bytes = b"", *, timeout: float | None = None) -> bytes:
        """Run a shell command there (over one ssh session); its stdout."""
        self.round_trips += 1
        argv = [*self.ssh_command(), self.destination, remote_command]
        try:
            done = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise RemoteError("ssh is not installed here.", hint="Install openssh-client.") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"ssh to {self.destination} timed out.") from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            hint = f"`usr remotes doctor --remote {self.remote.name}` checks each step."
            if done.returncode == 127:  # the remote shell found no such command
                hint = "Install usr_es there, or set usr_command in the remote's config to its full path."
            raise RemoteError(
                f"ssh to {self.destination} failed (exit {done.returncode}): {said[-1] if said else 'no message'}",
                hint=hint,
            )
        return done.stdout

    def call(self, request: Request, kind: type[R], data: bytes = b"") -> R:
        spec = self.remote.spec
        command = f"{spec.usr_command} --root {shlex.quote(spec.base_dir)} _agent"
        from .agent import encode_request

        return _decoded(self.run(command, encode_request(request, data)), kind, f"remote '{self.remote.name}'")

    def fetch(
        self, remote_dir: str, local_dir: Path, files: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> int:
        local_dir.mkdir(parents=True, exist_ok=True)
        return self._rsync(f"{self.destination}:{remote_dir}/", f"{local_dir}/", files, exclude)

    def send(
        self, local_dir: Path, remote_dir: str, files: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
    ) -> int:
        return self._rsync(f"{local_dir}/", f"{self.destination}:{remote_dir}/", files, exclude, make=remote_dir)

    def path(self, *parts: str) -> str:
        """A path under base_dir, as rsync and the remote shell take it: `~/x` becomes `x` (relative to the
        login's home, where both start), since a quoted or protected `~` is not expanded there."""
        base = self.remote.spec.base_dir.rstrip("/")
        if base == "~" or base.startswith("~/"):
            base = base[2:]
        return "/".join(p for p in (base, *parts) if p) or "."

    def _absolute(self, remote_file: str) -> str:
        if remote_file == "~" or remote_file.startswith("~/"):
            return remote_file[2:] or "."  # relative to the login's home, as `path` gives a `~/` base_dir
        return remote_file if remote_file.startswith("/") else self.path(remote_file)

    def get(self, remote_file: str, local_file: Path) -> int:
        local_file.parent.mkdir(parents=True, exist_ok=True)
        return self._rsync(f"{self.destination}:{self._absolute(remote_file)}", str(local_file), None, ())

    def put(self, local_file: Path, remote_file: str) -> int:
        target = self._absolute(remote_file)
        folder = target.rsplit("/", 1)[0] or "/"
        return self._rsync(str(local_file), f"{self.destination}:{target}", None, (), make=folder)

    def _rsync(
        self, source: str, target: str, files: Sequence[str] | None, exclude: Sequence[str], *, make: str | None = None
    ) -> int:
        """One rsync over ssh: `files` (None: the folder, `NEVER_COPIED` left out); partial files are kept
        for a resumed copy. Returns the bytes of the files it copied (rsync skips those already there)."""
        self.round_trips += 1
        argv = [
            "rsync",
            "-a",
            "--partial",
            "--protect-args",
            "--out-format=%l %n",
            "-e",
            shlex.join(self.ssh_command()),
        ]
        if make is not None:
            argv += ["--rsync-path", f"mkdir -p {shlex.quote(make)} && rsync"]
        for pattern in (*NEVER_COPIED, *exclude):
            argv += ["--exclude", pattern]
        data = b""
        if files is None:
            argv.append("--whole-file")  # a folder copied whole: no delta search against what is there
        if files is not None:
            argv += ["--files-from=-", "--from0"]
            data = b"\0".join(f.encode() for f in files)
        try:
            done = subprocess.run([*argv, source, target], input=data, capture_output=True, check=False)
        except FileNotFoundError:
            raise RemoteError("rsync is not installed here.", hint="Install rsync (apt-get install rsync).") from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise RemoteError(
                f"rsync with {self.destination} failed (exit {done.returncode}): {said[-1] if said else 'no message'}",
                hint=f"Run it again: the copy resumes. `usr remotes doctor --remote {self.remote.name}` checks rsync.",
            )
        return _copied_bytes(done.stdout.decode(errors="replace"))


def _copied_bytes(out: str) -> int:
    """The bytes of the files in rsync's `--out-format=%l %n` lines ("<size> <name>"; folders end in /)."""
    total = 0
    for line in out.splitlines():
        size, _, name = line.partition(" ")
        if size.isdigit() and name and not name.endswith("/"):
            total += int(size)
    return total


__all__ = ["Remote", "RemoteSpec", "Transport", "config_path", "get_remote", "load_remotes", "transport"]


# -- doctor ----------------------------------------------------------------------------------------------
class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One step a sync needs, checked: what was found, and the fix when it failed."""

    step: str
    ok: bool
    detail: str
    fix: str = ""


def doctor(remote: Remote, *, check_base_dir: bool = True) -> list[Check]:
    """Check, in order, what a sync with `remote` needs; stops at the first step the later ones rely on."""
    from . import __version__
    from .agent import Probe, ProbeReply

    checks: list[Check] = []
    where = transport(remote)
    if isinstance(where, SshTransport):
        for tool, package in (("ssh", "openssh-client"), ("rsync", "rsync")):
            found = shutil.which(tool)
            checks.append(
                Check(
                    step=f"{tool} here",
                    ok=found is not None,
                    detail=found or "not found",
                    fix=f"Install {package} (apt-get install {package}).",
                )
            )
        if not all(c.ok for c in checks):
            return checks
        try:
            where.run("true", timeout=30)
            checks.append(Check(step="ssh to the host", ok=True, detail=f"{where.destination} answered"))
        except (RemoteError, InvalidInput) as exc:
            interactive = "keyboard-interactive" in str(exc) or "Permission denied" in str(exc)
            fix = (
                "Log in once with `ssh` (two-factor prompts need a terminal) and keep the session with "
                "ControlMaster/ControlPersist in ~/.ssh/config (`usr remotes wizard` prints the lines), or "
                "install a key with ssh-copy-id."
                if interactive
                else f"Check that `ssh {where.destination}` works from this machine (host, port, key)."
            )
            checks.append(Check(step="ssh to the host", ok=False, detail=str(exc), fix=fix))
            return checks
    try:
        probe = where.call(Probe(), ProbeReply)
    except UsrError as exc:
        checks.append(
            Check(
                step="usr_es there",
                ok=False,
                detail=str(exc),
                fix="Install usr_es there (pip install usr_es) and, unless `usr` is on the remote PATH, set "
                "usr_command in the remote's config to its full path.",
            )
        )
        return checks
    same = probe.version == __version__
    checks.append(
        Check(
            step="usr_es there",
            ok=same,
            detail=f"usr_es {probe.version} on {probe.python}",
            fix=f"Install usr_es {__version__} there (this side's version): the log format must match.",
        )
    )
    if isinstance(where, SshTransport):
        checks.append(
            Check(
                step="rsync there",
                ok=bool(probe.rsync),
                detail=probe.rsync or "not found",
                fix="Install rsync on the remote (apt-get install rsync, or your cluster's module).",
            )
        )
    if check_base_dir:
        ok = probe.root_exists and probe.root_writable
        detail = f"{probe.root} " + (
            "exists and is writable" if ok else "exists, not writable" if probe.root_exists else "does not exist"
        )
        checks.append(
            Check(
                step="base_dir there",
                ok=ok,
                detail=detail,
                fix=f"Create it (ssh {remote.address.split(':')[0]} mkdir -p {probe.root}) or fix base_dir.",
            )
        )
    return checks
