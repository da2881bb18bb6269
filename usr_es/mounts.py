"""Whether the filesystem under a dataset makes `flock` locks coherent across machines (docs/adr/0021).

Every write holds an `flock` on the dataset's lock file. On a cluster the same folder is often reached
from several machines over a network filesystem; there the lock excludes writers on other machines only
if the filesystem passes locks to its server. It does not on NFS mounted `nolock` or with
`local_lock=all|flock`, on Lustre mounted without `flock` (`localflock`, or neither), or on CIFS mounted
`nobrl`: two machines could then append to one log at once. Writes refuse such a folder, naming the
mount, unless `USR_ALLOW_UNSAFE_LOCKS=1` says only one machine writes to it.

The mount table is `/proc/self/mounts` (or the file `USR_MOUNT_TABLE` names, for tests): one mount per
line, fields separated by spaces, spaces inside a field written as octal escapes (`\\040`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UnsafeLocks

ALLOW_ENV = "USR_ALLOW_UNSAFE_LOCKS"
TABLE_ENV = "USR_MOUNT_TABLE"
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    device: str
    point: str
    fstype: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_table(path: Path | None = None) -> list[Mount]:
    """The mounts of the table at `path` (default: `$USR_MOUNT_TABLE`, else `/proc/self/mounts`; none
    when it cannot be read, as on a system without /proc)."""
    table = path or Path(os.environ.get(TABLE_ENV) or "/proc/self/mounts")
    try:
        text = table.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            device, point, fstype, options = fields[:4]
            mounts.append(Mount(_unescape(device), _unescape(point), fstype, frozenset(options.split(","))))
    return mounts


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount `path` is on: the one with the longest mount point above it (the last mounted wins)."""
    resolved = str(path.resolve())
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        if (resolved == point or resolved.startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) >= len(best.point.rstrip("/") or "/")
        ):
            best = mount
    return best


def lock_problem(mount: Mount) -> str | None:
    """Why `flock` on this mount does not exclude writers on other machines (None: it does)."""
    fstype, options = mount.fstype, mount.options
    if fstype.startswith("nfs"):
        if "nolock" in options:
            return "NFS mounted with `nolock`: locks stay on this machine"
        for value in ("all", "flock"):
            if f"local_lock={value}" in options:
                return f"NFS mounted with `local_lock={value}`: flock locks stay on this machine"
        return None
    if fstype == "lustre":
        if "flock" in options:
            return None
        if "localflock" in options:
            return "Lustre mounted with `localflock`: locks stay on this machine"
        return "Lustre mounted without `flock`: locks are not shared between machines"
    if fstype in ("cifs", "smb3") and "nobrl" in options:
        return "CIFS mounted with `nobrl`: locks stay on this machine"
    return None


def check_locks(directory: Path) -> None:
    """Refuse to write in `directory` when its filesystem's locks are not coherent across machines."""
    if os.environ.get(ALLOW_ENV) == "1":
        return
    target = directory if directory.exists() else directory.parent
    mount = mount_of(target, mount_table())
    problem = lock_problem(mount) if mount is not None else None
    if problem is not None and mount is not None:
        raise UnsafeLocks(
            f"Refusing to write in {directory}: it is on {mount.point} ({mount.device}), {problem}; two machines "
            "could append to one log at once.",
            hint=f"Mount it with coherent locks (NFS: without nolock/local_lock; Lustre: -o flock), or, if only "
            f"this machine ever writes there, set {ALLOW_ENV}=1.",
        )
