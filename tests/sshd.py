"""A real OpenSSH server on 127.0.0.1 for the sync tests: a throwaway host key and client key, a generated
`sshd_config` on a free port, run as the current user (no root needed beyond what starting sshd asks).

`.ci/run` installs openssh-server, openssh-client and rsync from the distribution's packages when they
are missing and sets `USR_REQUIRE_SSH=1`, so there a missing binary fails the tests instead of skipping
them.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from usr_es.remotes import Remote, RemoteSpec

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


def sshd_binary() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    return next((p for p in SSHD_CANDIDATES if Path(p).is_file()), None)


def require_tools() -> str:
    """The sshd path; skips (fails, with `USR_REQUIRE_SSH=1`) when sshd, ssh or rsync is missing."""
    sshd = sshd_binary()
    missing = [
        name
        for name, path in (("sshd", sshd), ("ssh", shutil.which("ssh")), ("rsync", shutil.which("rsync")))
        if not path
    ]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install openssh-server openssh-client rsync)"
        if os.environ.get("USR_REQUIRE_SSH") == "1":
            pytest.fail(message)
        pytest.skip(message)
    assert sshd is not None
    return sshd


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sshd:
    process: subprocess.Popen[bytes]
    port: int
    client_key: Path
    log: Path

    def remote(self, name: str, base_dir: Path, **extra: object) -> Remote:
        usr = Path(sys.executable).parent / "usr"
        fields: dict[str, object] = {
            "type": "ssh",
            "host": "127.0.0.1",
            "user": getpass.getuser(),
            "base_dir": str(base_dir),
            "port": self.port,
            "usr_command": str(usr),
            "ssh_options": [
                f"IdentityFile={self.client_key}",
                "IdentitiesOnly=yes",
                "StrictHostKeyChecking=no",
                "UserKnownHostsFile=/dev/null",
                "LogLevel=ERROR",
            ],
        }
        spec = msgspec.convert({**fields, **extra}, RemoteSpec)
        return Remote(name=name, spec=spec)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_sshd(folder: Path) -> Sshd:
    sshd = require_tools()
    folder.mkdir(parents=True, exist_ok=True)
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (folder / "authorized_keys").write_bytes(client_key.with_suffix(".pub").read_bytes())
    (folder / "authorized_keys").chmod(0o600)
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AllowUsers {getpass.getuser()}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "X11Forwarding no",
                "PrintMotd no",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = folder / "sshd.log"
    with log.open("wb") as sink:  # the server keeps its own copy of the descriptor
        process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=sink)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return Sshd(process, port, client_key, log)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"sshd did not listen on port {port}: {log.read_text()}")
